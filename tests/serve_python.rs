//! A Python client written like TorchServe's Stable Diffusion example
//! (`tests/python/query.py`: requests + numpy + PIL) against `wgsd serve`: the image it
//! rebuilds from the JSON reply equals, pixel for pixel, the `wgsd generate` CLI's PNG
//! for the same prompt, seed, size and steps.

use std::path::{Path, PathBuf};
use std::process::Command;

use wgsd::serve::start;

mod serve_common;
use serve_common::{root, tiny_config};

/// The interpreter that runs the client: the project's `.venv` (see tests/common/venv.rs).
fn python() -> PathBuf {
    serve_common::venv_python("requests, numpy, PIL")
}

fn rgb(path: &Path) -> (u32, u32, Vec<u8>) {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    (img.width(), img.height(), img.into_raw())
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("starts");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn python_query_client_matches_cli() {
    let server = start(tiny_config()).expect("server starts");
    let url = format!("http://{}/predictions/sd", server.addr());
    let dir = tempfile::tempdir().expect("tmp");
    let (prompt, seed, width, height, steps) = ("a red fox in the snow", "42", "64", "48", "4");

    let served = dir.path().join("served.png");
    run(Command::new(python())
        .arg(root().join("tests/python/query.py"))
        .args(["--url", &url, "--prompt", prompt, "--seed", seed])
        .args(["--width", width, "--height", height, "--steps", steps])
        .arg("--output")
        .arg(&served));

    let cli = dir.path().join("cli.png");
    run(Command::new(env!("CARGO_BIN_EXE_wgsd"))
        .arg("generate")
        .arg("--model")
        .arg(root().join("weights/sd2-tiny.zip"))
        .args(["--seed", seed, "--width", width, "--height", height])
        .args(["--steps", steps])
        .arg("-o")
        .arg(&cli)
        .arg(prompt));

    let (w, h, got) = rgb(&served);
    assert_eq!((w, h), (64, 48));
    assert_eq!(got, rgb(&cli).2, "the client's image equals the CLI's");

    // The example unchanged: the prompt as the raw body, the server's defaults.
    let raw = dir.path().join("raw.png");
    run(Command::new(python())
        .arg(root().join("tests/python/query.py"))
        .args(["--url", &url, "--prompt", prompt, "--output"])
        .arg(&raw));
    let (w, h, _) = rgb(&raw);
    assert_eq!((w, h), (32, 24));

    server.shutdown().expect("clean shutdown");
}
