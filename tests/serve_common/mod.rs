//! What the `wgsd serve` tests share: the repository root, an HTTP client that returns
//! error statuses instead of failing, a tiny-model server config on free loopback ports,
//! and the decoding of TorchServe's nested-list image reply.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use wgsd::serve::ServeConfig;

#[path = "../common/psnr.rs"]
mod psnr_impl;
#[allow(unused_imports)]
pub use psnr_impl::psnr;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A client that hands back 4xx/5xx replies (the tests check them).
pub fn agent() -> ureq::Agent {
    agent_with_timeout(None)
}

/// As [`agent`], giving up after `timeout` (a client that disconnects).
pub fn agent_with_timeout(timeout: Option<Duration>) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(timeout)
        .build()
        .into()
}

/// The bundled tiny model as `sd`, all three APIs on free loopback ports, and small
/// request defaults (32x24, 3 steps) so a request takes a fraction of a second.
pub fn tiny_config() -> ServeConfig {
    let any_port = || "127.0.0.1:0".parse().expect("loopback address");
    ServeConfig {
        model_store: root().join("weights"),
        models: vec![("sd".into(), PathBuf::from("sd2-tiny.zip"))],
        inference_address: any_port(),
        management_address: any_port(),
        metrics_address: any_port(),
        default_steps: 3,
        default_width: 32,
        default_height: 24,
        ..ServeConfig::default()
    }
}

/// `[[[r,g,b],...],...]` (already parsed) to (height, width, bytes), checking that it
/// is a rectangular H x W x 3 array of u8.
pub fn nested_image(v: &serde_json::Value) -> (usize, usize, Vec<u8>) {
    let rows = v.as_array().expect("rows");
    let h = rows.len();
    let w = rows[0].as_array().expect("pixels").len();
    let mut out = Vec::with_capacity(h * w * 3);
    for row in rows {
        let px = row.as_array().expect("row");
        assert_eq!(px.len(), w, "ragged rows");
        for p in px {
            let c = p.as_array().expect("pixel");
            assert_eq!(c.len(), 3, "a pixel is [r, g, b]");
            out.extend(
                c.iter()
                    .map(|x| u8::try_from(x.as_u64().expect("integer")).expect("0..=255")),
            );
        }
    }
    (h, w, out)
}

/// The reply text of a nested-list image to (height, width, bytes).
pub fn decode_nested(text: &str) -> (usize, usize, Vec<u8>) {
    nested_image(&serde_json::from_str(text).expect("reply is JSON"))
}

/// `.venv/bin/python` in the repository root, checked to import `modules` (e.g.
/// `"webuiapi"`). Fails (never skips) with how to make it when it is missing or lacks them.
pub fn venv_python(modules: &str) -> PathBuf {
    let py = root().join(".venv/bin/python");
    let hint = "create it with .ci/setup, or by hand: \
                `/usr/bin/python3 -m venv --system-site-packages .venv && \
                .venv/bin/python -m pip install webuiapi openai 'tritonclient[http,grpc]'` \
                (Debian: apt-get install python3-venv first)";
    assert!(
        py.exists(),
        "{} is missing: the API client tests run the real Python clients from it; {hint}",
        py.display()
    );
    let ok = std::process::Command::new(&py)
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "{} cannot import {modules}; {hint}", py.display());
    py
}

/// Runs `python script args...`, failing with its output unless it exits 0; its stdout.
pub fn run_python(py: &std::path::Path, script: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(py)
        .arg(root().join(script))
        .args(args)
        .output()
        .expect("python starts");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
