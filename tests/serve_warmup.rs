//! Warm pipelines in `wgsd serve`: a model's worker warms up (one step at the warm-up
//! size, every GPU pipeline built) before the model reports ready, so the APIs (and
//! /ping) answer only after it. Warm-up sizes stay tiny so the tests stay fast.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wgsd::serve::ts_config::TsConfig;
use wgsd::serve::{ServeConfig, WarmupSize, start};

mod serve_common;
use serve_common::{agent, root, tiny_config};

#[test]
fn warmup_size_parses() {
    assert_eq!(
        WarmupSize::parse("768x768").unwrap(),
        WarmupSize::Size(768, 768)
    );
    assert_eq!(
        WarmupSize::parse(" 64X48 ").unwrap(),
        WarmupSize::Size(64, 48)
    );
    assert_eq!(WarmupSize::parse("off").unwrap(), WarmupSize::Off);
    assert_eq!(WarmupSize::parse("none").unwrap(), WarmupSize::Off);
    assert_eq!(WarmupSize::parse("default").unwrap(), WarmupSize::Default);
    for bad in ["", "768", "0x64", "64x", "ax b", "64x48x2"] {
        assert!(WarmupSize::parse(bad).is_err(), "{bad:?} accepted");
    }
    assert_eq!(ServeConfig::default().warmup, WarmupSize::Default);
}

#[test]
fn config_key_warmup_size() {
    let mut config = ServeConfig::default();
    TsConfig::parse(b"warmup_size=64x48\n")
        .expect("parses")
        .apply(&mut config);
    assert_eq!(config.warmup, WarmupSize::Size(64, 48));
    TsConfig::parse(b"warmup_size=off\n")
        .expect("parses")
        .apply(&mut config);
    assert_eq!(config.warmup, WarmupSize::Off);
    let e = TsConfig::parse(b"warmup_size=big\n").expect_err("a bad size");
    assert!(e.to_string().contains("warmup_size"), "{e}");
}

#[test]
fn a_failing_warm_up_fails_the_load_and_off_skips_it() {
    // 33 is no multiple of the VAE's 8: only the warm-up pass can notice.
    let e = start(ServeConfig {
        warmup: WarmupSize::Size(33, 32),
        ..tiny_config()
    })
    .expect_err("the model must not report ready when its warm-up fails");
    assert!(e.to_string().contains("multiple"), "{e}");

    let server = start(ServeConfig {
        warmup: WarmupSize::Off,
        ..tiny_config()
    })
    .expect("no warm-up, no failure");
    server.shutdown().expect("clean shutdown");
}

#[test]
fn serve_reports_ready_only_after_warm_up() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wgsd"))
        .arg("serve")
        .arg("--model-store")
        .arg(root().join("weights"))
        .args(["--models", "sd=sd2-tiny.zip"])
        .args(["--inference-address", "127.0.0.1:0"])
        .args(["--management-address", "127.0.0.1:0"])
        .args(["--metrics-address", "127.0.0.1:0"])
        .args(["--default-width", "32", "--default-height", "24"])
        .args(["--warmup-size", "40x32"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wgsd serve");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    let inference = loop {
        assert!(Instant::now() < deadline, "no address: {seen:#?}");
        let Some(Ok(line)) = lines.next() else {
            let _ = child.kill();
            panic!("the server exited: {seen:#?}");
        };
        seen.push(line.clone());
        if line.contains("inference API on") {
            break line.rsplit(' ').next().unwrap_or_default().to_string();
        }
    };
    // The APIs start serving once every model is ready: after its warm-up line.
    let warmed = seen
        .iter()
        .position(|l| l.contains("model sd: loaded in") && l.contains("warmed up at 40x32"));
    let ping = agent().get(format!("{inference}/ping")).call();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        warmed.is_some(),
        "no warm-up line before the API: {seen:#?}"
    );
    let mut reply = ping.expect("ping");
    assert_eq!(reply.status(), 200);
    let body = reply.body_mut().read_to_string().expect("body");
    assert!(body.contains("Healthy"), "{body}");
}
