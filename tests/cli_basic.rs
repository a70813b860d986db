//! The `wgsd info` and `wgsd tokenize` commands, run as the built binary.

use std::process::Command;

use serde_json::Value;

fn wgsd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wgsd"));
    c.env_remove("WGSD_ADAPTER").env_remove("WGSD_BACKEND");
    c.env(
        "WGSD_CACHE_DIR",
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-cache"),
    );
    c
}

fn repo(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn info_lists_adapters_and_the_choice() {
    let out = wgsd().args(["info", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "wgsd info failed (no GPU adapter? install mesa-vulkan-drivers): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!list.is_empty());
    assert_eq!(list.iter().filter(|a| a["chosen"] == true).count(), 1);
    for a in &list {
        for key in [
            "name",
            "backend",
            "device_type",
            "driver",
            "shader_f16",
            "subgroup",
            "max_storage_binding_bytes",
            "max_buffer_bytes",
            "workgroup_memory_bytes",
        ] {
            assert!(a.get(key).is_some(), "adapter entry lacks {key}: {a}");
        }
    }
    let text = wgsd().arg("info").output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("wgsd would use"), "{text}");
    assert!(text.contains("SHADER_F16"), "{text}");
}

#[test]
fn adapter_choice_errors_are_clear() {
    // An index past the end and a name nobody has: non-zero exit, a message, no panic.
    for args in [
        ["--adapter", "99", "info"],
        ["--adapter", "no-such-gpu-xyz", "info"],
    ] {
        let out = wgsd().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        if args[1] == "99" {
            // `info` still lists what exists but says nothing matches.
            assert!(out.status.success(), "{err}");
            assert!(String::from_utf8_lossy(&out.stdout).contains("no adapter matches"));
        } else {
            assert!(out.status.success(), "{err}");
        }
        assert!(!err.contains("panicked"), "{err}");
    }
    let out = wgsd()
        .args(["--backend", "directx9", "info"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown backend"));
    // A backend that has no adapter on this machine (metal off macOS, vulkan elsewhere)
    // gives the install hint, not a panic.
    let missing = if cfg!(target_os = "macos") {
        "vulkan"
    } else {
        "metal"
    };
    let out = wgsd()
        .args(["--backend", missing, "info"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("mesa-vulkan-drivers"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn tokenize_matches_transformers() {
    let cases: Value = serde_json::from_slice(
        &std::fs::read(repo("tests/fixtures/tokenizer_cases.json")).unwrap(),
    )
    .unwrap();
    let fx = &cases["fixtures"]["sd2-tiny"];
    for case in fx["cases"].as_array().unwrap().iter().take(4) {
        let prompt = case["prompt"].as_str().unwrap();
        let out = wgsd()
            .args([
                "tokenize",
                "--verbose",
                "--model",
                &repo("weights/sd2-tiny.zip"),
                prompt,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(got["ids"], case["ids"], "prompt {prompt:?}");
        assert!(got["tokens"].as_array().is_some_and(|t| t.len() == 77));
    }
}

#[test]
fn tokenize_warns_when_truncated() {
    let long = "a very long prompt about a red fox ".repeat(20);
    let out = wgsd()
        .args(["tokenize", "--model", &repo("weights/sd2-tiny.zip"), &long])
        .output()
        .unwrap();
    assert!(out.status.success());
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["truncated"], true);
    assert!(got["dropped_tokens"].as_u64().unwrap() > 0);
    assert_eq!(got["ids"].as_array().unwrap().len(), 77);
    assert!(String::from_utf8_lossy(&out.stderr).contains("were cut"));
}

#[test]
fn tokenize_missing_model_is_a_clear_error() {
    let out = wgsd()
        .args(["tokenize", "--model", "/nonexistent/model.zip", "hi"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/model.zip"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
