//! The one Python interpreter every client test runs: `.venv/bin/python` in the repository
//! root, which `.ci/setup` creates from Debian's `/usr/bin/python3` with
//! `--system-site-packages` (so it sees `python3-requests`, `-numpy`, `-pil`, `-selenium`)
//! and fills with the PyPI-only clients (`webuiapi`, `openai`, `tritonclient`). A pyenv or conda `python3`
//! on PATH never sees Debian's packages, so no test looks there.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// How to make the interpreter, for the failure messages.
const HINT: &str = "create it with `.ci/setup` (or by hand: `sudo apt-get install -y python3-venv \
     python3-requests python3-numpy python3-pil python3-selenium && /usr/bin/python3 -m venv \
     --system-site-packages .venv && .venv/bin/python -m pip install webuiapi openai \
     'tritonclient[http,grpc]'`)";

/// `.venv/bin/python`, checked to import `modules` (e.g. `"webuiapi"`). Fails (never
/// skips) with how to make it when it is missing or lacks them.
pub fn venv_python(modules: &str) -> PathBuf {
    let py = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        py.exists(),
        "{} is missing: the client tests run Python clients from it; {HINT}",
        py.display()
    );
    let ok = Command::new(&py)
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "{} cannot import {modules}; {HINT}", py.display());
    py
}

/// Runs `python script args...` (script relative to the repository root), failing with its
/// output unless it exits 0; its stdout.
pub fn run_python(py: &Path, script: &str, args: &[&str]) -> String {
    let out = Command::new(py)
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(script))
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
