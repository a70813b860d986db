//! What the `wgsd serve` tests share: the repository root, an HTTP client that returns
//! error statuses instead of failing, a tiny-model server config on free loopback ports,
//! and the decoding of TorchServe's nested-list image reply.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use wgsd::serve::ServeConfig;

#[path = "../common/psnr.rs"]
mod psnr_impl;
#[path = "../common/venv.rs"]
mod venv_impl;
#[allow(unused_imports)]
pub use psnr_impl::psnr;
#[allow(unused_imports)]
pub use venv_impl::{run_python, venv_python};

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

/// An end-to-end fixture case of `tests/fixtures/<dir>/reference.{json,safetensors}` (as
/// written by the make_*_fixtures.py scripts): the case's JSON and its `e2e.<case>.image_u8`
/// images (`[n, H, W, 3]` u8).
pub fn e2e_reference(dir: &str, case: &str) -> (serde_json::Value, Vec<u8>) {
    let dir = root().join("tests/fixtures").join(dir);
    let text = std::fs::read_to_string(dir.join("reference.json")).expect("reference.json");
    let json: serde_json::Value = serde_json::from_str(&text).expect("reference.json is JSON");
    let c = json["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["case"] == case)
        .unwrap_or_else(|| panic!("no case {case} in {}", dir.display()))
        .clone();
    let bytes = std::fs::read(dir.join("reference.safetensors")).expect("reference.safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let img = st
        .tensor(&format!("e2e.{case}.image_u8"))
        .expect("image")
        .data()
        .to_vec();
    (c, img)
}

/// Fails unless `got` is within `min_db` PSNR of `want` (u8 images), printing the PSNR.
#[track_caller]
pub fn assert_psnr(what: &str, got: &[u8], want: &[u8], min_db: f64) {
    assert_eq!(got.len(), want.len(), "{what}: image sizes differ");
    let p = psnr(got, want);
    eprintln!("{what}: PSNR {p:.1} dB");
    assert!(p >= min_db, "{what}: PSNR {p:.2} dB < {min_db}");
}

/// Runs the `wgsd` binary with a test model cache, failing if it panicked; its output.
pub fn wgsd_cli(args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wgsd"))
        .args(args)
        .env(
            "WGSD_CACHE_DIR",
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-model-cache"),
        )
        .env_remove("WGSD_MODEL")
        .output()
        .expect("running wgsd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "wgsd panicked:\n{stderr}");
    out
}

/// POSTs `body` as JSON to `base` + `path`; the status and the reply text.
pub fn post_json(base: &str, path: &str, body: &serde_json::Value) -> (u16, String) {
    let mut r = agent()
        .post(format!("{base}{path}"))
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .expect("POST");
    (
        r.status().as_u16(),
        r.body_mut().read_to_string().expect("body"),
    )
}
