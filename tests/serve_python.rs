//! A Python client written like TorchServe's Stable Diffusion example
//! (`tests/python/query.py`: requests + numpy + PIL) against `wgsd serve`: the image it
//! rebuilds from the JSON reply equals, pixel for pixel, the `wgsd generate` CLI's PNG
//! for the same prompt, seed, size and steps.

use std::path::Path;
use std::process::Command;

use wgsd::serve::start;

mod serve_common;
use serve_common::{root, tiny_config};

/// The interpreter that runs the client: `$WGSD_PYTHON`, else the first of `python3` on
/// PATH and Debian's `/usr/bin/python3` that has the client's packages (a pyenv or
/// conda `python3` on PATH does not see Debian's `python3-*` packages, which .ci/setup
/// installs). Fails (never skips) when none has them, saying how to get them.
fn python() -> String {
    let has_packages = |py: &str| {
        Command::new(py)
            .args(["-c", "import requests, numpy, PIL"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if let Ok(py) = std::env::var("WGSD_PYTHON") {
        assert!(
            has_packages(&py),
            "WGSD_PYTHON={py} lacks requests, numpy or PIL"
        );
        return py;
    }
    ["python3", "/usr/bin/python3"]
        .into_iter()
        .find(|py| has_packages(py))
        .map(str::to_string)
        .unwrap_or_else(|| {
            panic!(
                "python3 with requests, numpy and PIL is needed for this test; install them with \
                 `apt-get install -y python3 python3-requests python3-numpy python3-pil` \
                 (or `pip install requests numpy pillow`, or point WGSD_PYTHON at an \
                 interpreter that has them); .ci/setup does this"
            )
        })
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
