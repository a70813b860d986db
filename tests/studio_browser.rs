//! The studio page in a real browser: starts `wgsd studio` on the bundled tiny model and a
//! fresh outputs folder, then runs `tests/browser/studio.py`, which drives headless Chromium
//! through Selenium (generate with progress and preview, gallery, reload, PNG drop, cancel,
//! the hires fix, img2img and a painted inpainting mask,
//! an error shown in words). Needs Debian's `chromium`, `chromium-driver` and
//! `python3-selenium` (.ci/setup installs them); fails, never skips, when they are missing.
//! `WGSD_STUDIO_SCREENSHOTS=DIR` keeps the screenshots (README's docs/studio*.png).

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

#[path = "common/venv.rs"]
mod venv;

const INSTALL_HINT: &str = "install them with `sudo apt-get install -y chromium chromium-driver \
     python3-selenium` (Debian/Ubuntu; .ci/setup does this)";
/// Start-up includes loading the model and its warm-up on a CPU driver.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(300);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/usr/lib/chromium".into()])
        .collect();
    names
        .iter()
        .flat_map(|n| dirs.iter().map(move |d| d.join(n)))
        .find(|p| p.is_file())
}

/// Panics with an install hint when the browser or its driver is missing (selenium is
/// checked in the project's `.venv`, see tests/common/venv.rs).
fn require_browser_tools() {
    let mut missing = Vec::new();
    if on_path(&["chromium", "chromium-browser", "google-chrome"]).is_none() {
        missing.push("chromium");
    }
    if on_path(&["chromedriver"]).is_none() {
        missing.push("chromedriver (chromium-driver)");
    }
    assert!(
        missing.is_empty(),
        "the studio browser test needs {}; {INSTALL_HINT}",
        missing.join(", ")
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The running `wgsd studio`, killed when the test ends (pass or panic).
struct Studio {
    child: Child,
    log: mpsc::Receiver<String>,
}

impl Drop for Studio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Studio {
    fn start(port: u16, outputs: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wgsd"))
            .current_dir(root())
            .args(["studio", "--port", &port.to_string(), "--outputs"])
            .arg(outputs)
            .args(["--model", "weights/shapes-tiny.zip"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("wgsd studio starts");
        // Both streams feed one channel, so the URL line is found wherever it is printed
        // and the server's log can be shown when something fails.
        let (tx, log) = mpsc::channel();
        forward(child.stdout.take().expect("stdout"), tx.clone());
        forward(child.stderr.take().expect("stderr"), tx);
        Studio { child, log }
    }

    /// Waits for the line with the studio's URL; panics with the log on exit or timeout.
    fn wait_for_url(&self, port: u16) -> String {
        let want = format!(":{port}");
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + SERVER_START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) => {
                    println!("studio: {line}");
                    let url = line
                        .split_whitespace()
                        .map(|w| w.trim_end_matches(['.', ',', ')']))
                        .find(|w| {
                            w.starts_with("http://") && w.trim_end_matches('/').ends_with(&want)
                        });
                    if let Some(url) = url {
                        return url.to_string();
                    }
                    seen.push(line);
                }
                Err(e) => panic!(
                    "no `http://...{want}` line from wgsd studio ({e}); it printed:\n{}",
                    seen.join("\n")
                ),
            }
        }
    }

    fn drain_log(&self) -> Vec<String> {
        self.log.try_iter().collect()
    }
}

fn forward(stream: impl Read + Send + 'static, tx: mpsc::Sender<String>) {
    thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
}

#[test]
fn studio_page_in_headless_chromium() {
    require_browser_tools();
    let outputs = tempfile::tempdir().expect("outputs dir");
    let shots_tmp = tempfile::tempdir().expect("screenshot dir");
    let shots = std::env::var_os("WGSD_STUDIO_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| shots_tmp.path().to_path_buf());

    let port = free_port();
    let studio = Studio::start(port, outputs.path());
    let url = studio.wait_for_url(port);

    let python = venv::venv_python("selenium");
    let out = Command::new(&python)
        .arg(root().join("tests/browser/studio.py"))
        .args(["--url", &url, "--screenshot-dir"])
        .arg(&shots)
        .output()
        .expect(".venv/bin/python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    let server_log = studio.drain_log().join("\n");
    assert!(
        out.status.success(),
        "tests/browser/studio.py failed ({}):\n{stdout}\n{stderr}\nserver log:\n{server_log}",
        out.status
    );
    assert!(
        stdout.contains("all studio browser checks passed"),
        "the script ended without its summary line:\n{stdout}"
    );
    for name in [
        "studio.png",
        "studio-generating.png",
        "studio-error.png",
        "studio-mask.png",
        "studio-hires.png",
    ] {
        let path = shots.join(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{} is not a PNG",
            path.display()
        );
    }
    // The seven generated images (one job of one, one of three, the hires fix, img2img,
    // inpainting) are in the outputs folder; the cancelled job wrote none.
    let pngs = std::fs::read_dir(outputs.path())
        .expect("outputs folder exists")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "png"))
        .count();
    assert_eq!(pngs, 7, "seven images in the outputs folder");
}
