//! LoRA end to end against the diffusers references of tests/fixtures/lora (see
//! tests/lora.rs): `wgsd generate --lora FILE[:SCALE]` (repeatable; a bad LoRA writes
//! nothing), serve's `loras` JSON field on /predictions (both forms, names resolved in
//! `--lora-dir`), A1111's `<lora:name:scale>` prompt tags on /sdapi/v1/txt2img and
//! `GET /sdapi/v1/loras`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine;
use serde_json::{Value, json};
use wgsd::serve::{ServeConfig, start};

mod serve_common;
use serve_common::{agent, psnr, root, tiny_config};

const MIN_PSNR: f64 = 60.0;
const PROMPT: &str = "a red circle on a white background";

fn fixtures() -> PathBuf {
    root().join("tests/fixtures/lora")
}

fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("lora-e2e")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// The reference image of a case in tests/fixtures/lora/reference.safetensors.
fn reference(case: &str) -> Vec<u8> {
    let bytes = std::fs::read(fixtures().join("reference.safetensors")).expect("reference");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    st.tensor(&format!("{case}.image_u8"))
        .expect("image")
        .data()
        .to_vec()
}

fn assert_matches(what: &str, got: &[u8], case: &str) {
    let db = psnr(got, &reference(case));
    eprintln!("{what}: {db:.1} dB against diffusers ({case})");
    assert!(db >= MIN_PSNR, "{what}: {db:.1} dB against {case}");
}

fn wgsd(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_wgsd"))
        .args(args)
        .env_remove("WGSD_MODEL")
        .output()
        .expect("running wgsd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "wgsd panicked:\n{stderr}");
    out
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn cli_lora_flags() {
    let dir = scratch("cli");
    let model = root().join("weights/sd2-tiny.zip");
    let kohya = fixtures().join("kohya.safetensors");
    let peft = fixtures().join("peft.safetensors");
    let generate = |out: &Path, loras: &[String]| {
        let mut args: Vec<String> = [
            "generate",
            PROMPT,
            "--model",
            s(&model),
            "--seed",
            "42",
            "--steps",
            "4",
            "--guidance",
            "7.5",
            "--width",
            "64",
            "--height",
            "48",
            "--precision",
            "f32",
            "--no-warmup",
            "--json",
            "-o",
            s(out),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        for l in loras {
            args.push("--lora".into());
            args.push(l.clone());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        wgsd(&args)
    };
    let pixels = |p: &Path| image::open(p).expect("png").to_rgb8().into_raw();

    let png = dir.join("kohya.png");
    let out = generate(&png, &[format!("{}:0.5", s(&kohya))]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).expect("--json");
    assert_eq!(summary["loras"][0]["scale"], 0.5);
    assert_matches("--lora kohya:0.5", &pixels(&png), "kohya_s05");

    let png = dir.join("both.png");
    let out = generate(
        &png,
        &[format!("{}:0.8", s(&kohya)), format!("{}:-0.6", s(&peft))],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_matches("--lora kohya:0.8 --lora peft:-0.6", &pixels(&png), "both");

    // Scale 1.0 by default.
    let png = dir.join("peft.png");
    let out = generate(&png, &[s(&peft).to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_matches("--lora peft", &pixels(&png), "peft_s1");

    // A LoRA for another model, or no file: a named error and nothing written.
    let bad = dir.join("bad.png");
    let other = dir.join("other.safetensors");
    let t = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4, 8], &[0u8; 128])
        .expect("view");
    let u = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![8, 4], &[0u8; 128])
        .expect("view");
    safetensors::serialize_to_file(
        [
            ("lora_unet_input_blocks_1_1_proj_in.lora_down.weight", t),
            ("lora_unet_input_blocks_1_1_proj_in.lora_up.weight", u),
        ],
        None,
        &other,
    )
    .expect("write");
    for (lora, says) in [
        (s(&other).to_string(), "another architecture"),
        (
            format!("{}:0.5", s(&dir.join("missing.safetensors"))),
            "missing.safetensors",
        ),
        (format!("{}:x1", s(&kohya)), "kohya.safetensors:x1"),
    ] {
        let out = generate(&bad, std::slice::from_ref(&lora));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{lora}: should fail");
        assert!(stderr.contains(says), "{lora}: {stderr}");
        assert!(!bad.exists(), "{lora}: wrote an image");
    }
}

fn lora_dir() -> PathBuf {
    let dir = scratch("loras");
    std::fs::create_dir_all(dir.join("styles")).expect("dir");
    std::fs::copy(
        fixtures().join("kohya.safetensors"),
        dir.join("ink.safetensors"),
    )
    .expect("copy");
    std::fs::copy(
        fixtures().join("peft.safetensors"),
        dir.join("styles/pe.safetensors"),
    )
    .expect("copy");
    std::fs::write(dir.join("notes.txt"), "not a LoRA").expect("write");
    dir
}

fn config(dir: &Path) -> ServeConfig {
    ServeConfig {
        lora_dir: Some(dir.to_path_buf()),
        ..tiny_config()
    }
}

fn post(url: &str, body: &Value) -> (u16, String) {
    let mut r = agent()
        .post(url)
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .expect("POST");
    (
        r.status().as_u16(),
        r.body_mut().read_to_string().expect("body"),
    )
}

#[test]
fn serve_loras_field_and_a1111_tags() {
    let dir = lora_dir();
    let server = start(config(&dir)).expect("server starts");
    let base = format!("http://{}", server.addr());
    let params = |loras: Value| {
        json!({"prompt": PROMPT, "seed": 42, "num_inference_steps": 4, "guidance_scale": 7.5,
               "width": 64, "height": 48, "loras": loras})
    };
    let predict = |body: Value| post(&format!("{base}/predictions/sd"), &body);

    let (code, text) = predict(params(json!([{"name": "ink", "scale": 1.0}])));
    assert_eq!(code, 200, "{text}");
    let (_, _, img) = serve_common::decode_nested(&text);
    assert_matches("loras [{name: ink}]", &img, "kohya_s1");

    let (code, text) = predict(params(json!({"pe": 0.7})));
    assert_eq!(code, 200, "{text}");
    let (_, _, img) = serve_common::decode_nested(&text);
    assert_matches("loras {pe: 0.7}", &img, "peft_s07");

    for bad in [
        json!([{"name": "nope"}]),
        json!("ink"),
        json!({"ink": "much"}),
    ] {
        let (code, text) = predict(params(bad.clone()));
        assert_eq!(code, 400, "{bad}: {text}");
    }

    // A1111: the tag leaves the prompt and applies the LoRA.
    let (code, text) = post(
        &format!("{base}/sdapi/v1/txt2img"),
        &json!({"prompt": format!("{PROMPT} <lora:ink:0.5>"), "seed": 42, "steps": 4,
                "cfg_scale": 7.5, "width": 64, "height": 48, "sampler_name": "DDIM"}),
    );
    assert_eq!(code, 200, "{text}");
    let v: Value = serde_json::from_str(&text).expect("json");
    let b64 = v["images"][0].as_str().expect("image");
    let png = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64");
    let img = image::load_from_memory(&png)
        .expect("png")
        .to_rgb8()
        .into_raw();
    assert_matches("<lora:ink:0.5>", &img, "kohya_s05");
    let (code, text) = post(
        &format!("{base}/sdapi/v1/txt2img"),
        &json!({"prompt": "x <lora:nope:1>", "steps": 1, "width": 32, "height": 32}),
    );
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("nope"), "{text}");

    // The folder as A1111 lists it.
    let mut r = agent()
        .get(format!("{base}/sdapi/v1/loras"))
        .call()
        .expect("GET");
    let list: Value =
        serde_json::from_str(&r.body_mut().read_to_string().expect("body")).expect("json");
    let names: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .map(|e| e["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["ink", "pe"]);
    assert_eq!(list[1]["alias"], "pe");
    assert_eq!(list[1]["metadata"], json!({}));
    assert!(
        list[1]["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("styles/pe.safetensors")),
        "{list}"
    );
    server.shutdown().expect("shutdown");
}

/// Concurrent requests with different LoRA sets never share a batch (each gets its own
/// reference image); equal sets may.
#[test]
fn serve_batches_only_equal_lora_sets() {
    let dir = lora_dir();
    let server = start(ServeConfig {
        default_settings: wgsd::serve::registry::ModelSettings {
            batch_size: 4,
            max_batch_delay_ms: 400,
            ..Default::default()
        },
        ..config(&dir)
    })
    .expect("server starts");
    let url = format!("http://{}/predictions/sd", server.addr());
    let asks = [
        (json!({"ink": 1.0}), "kohya_s1"),
        (json!({"pe": 1.0}), "peft_s1"),
        (json!([{"name": "ink"}]), "kohya_s1"),
    ];
    let before = server.metrics().unet_passes("sd");
    std::thread::scope(|s| {
        let handles: Vec<_> = asks
            .iter()
            .map(|(loras, case)| {
                let url = url.clone();
                s.spawn(move || {
                    let body = json!({"prompt": PROMPT, "seed": 42, "num_inference_steps": 4,
                        "guidance_scale": 7.5, "width": 64, "height": 48, "loras": loras});
                    let (code, text) = post(&url, &body);
                    assert_eq!(code, 200, "{text}");
                    let (_, _, img) = serve_common::decode_nested(&text);
                    assert_matches(&format!("batched {loras}"), &img, case);
                })
            })
            .collect();
        for h in handles {
            h.join().expect("client thread");
        }
    });
    // At least two groups of 4 steps: the PEFT request never joined the kohya ones.
    let passes = server.metrics().unet_passes("sd") - before;
    assert!(passes >= 8, "{passes} UNet passes for two LoRA sets");
    server.shutdown().expect("shutdown");
}
