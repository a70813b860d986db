//! What a hostile or careless client can send `wgsd serve` (issue 16, hardening): trailing
//! slashes, an unknown model version, an OIP shape whose element count overflows, model names outside
//! TorchServe's rule (refused before any file is looked at). (503's `Retry-After` is
//! checked with the full queue in tests/serve.rs.)

#[path = "serve_common/mod.rs"]
mod serve_common;

use serde_json::Value;
use wgsd::serve::start;

use serve_common::{agent, tiny_config};

fn json_of(r: &mut ureq::http::Response<ureq::Body>) -> Value {
    serde_json::from_str(&r.body_mut().read_to_string().expect("body")).expect("json")
}

#[test]
fn unknown_versions_overflowing_shapes_and_bad_model_names() {
    let server = start(tiny_config()).expect("server starts");
    let base = format!("http://{}", server.addr());
    let mgmt = format!("http://{}", server.addrs().management);
    let agent = agent();

    // Trailing slashes route as TorchServe's do, on every API.
    let r = agent
        .post(format!("{base}/predictions/sd/"))
        .send("a trailing slash")
        .expect("predict");
    assert_eq!(r.status(), 200);
    let mut r = agent.get(format!("{mgmt}/models/")).call().expect("models");
    assert_eq!(r.status(), 200);
    assert_eq!(json_of(&mut r)["models"][0]["modelName"], "sd");
    assert_eq!(
        agent
            .get(format!("{base}/ping/"))
            .call()
            .expect("ping")
            .status(),
        200
    );
    assert_eq!(
        agent.get(format!("{base}/")).call().expect("page").status(),
        200
    );

    // A 5 MB multipart field within max_request_size is no "too large" (axum's extractor
    // would apply its own 2 MB default).
    let boundary = "wgsdboundary";
    let mut form = Vec::new();
    for (name, value) in [
        ("prompt", "a large form".to_string()),
        ("note", "n".repeat(5 << 20)),
    ] {
        form.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    form.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let r = agent
        .post(format!("{base}/predictions/sd"))
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .send(&form[..])
        .expect("multipart");
    assert_eq!(r.status(), 200);

    // A registered version answers; any other is TorchServe's 404.
    let r = agent
        .post(format!("{base}/predictions/sd/1.0"))
        .send("a versioned request")
        .expect("predict");
    assert_eq!(r.status(), 200);
    let mut r = agent
        .post(format!("{base}/predictions/sd/9.9"))
        .send("x")
        .expect("predict");
    assert_eq!(r.status(), 404);
    let e = json_of(&mut r);
    assert_eq!(e["type"], "ModelNotFoundException");
    assert!(e["message"].as_str().unwrap_or("").contains("9.9"), "{e}");

    // An OIP shape whose product wraps around u64 is refused, not taken as 1.
    let huge = u64::MAX;
    let body = format!(
        r#"{{"inputs": [{{"name": "prompt", "datatype": "BYTES", "shape": [{huge}, {huge}], "data": ["x"]}}]}}"#
    );
    let mut r = agent
        .post(format!("{base}/v2/models/sd/infer"))
        .header("Content-Type", "application/json")
        .send(&body)
        .expect("infer");
    assert_eq!(r.status(), 400);
    let e = json_of(&mut r);
    assert!(
        e["error"].as_str().unwrap_or("").contains("too large"),
        "{e}"
    );

    // Model names follow TorchServe's rule; a bad one is refused before the URL is even
    // resolved (a path outside the store would otherwise answer 403 or 404).
    for name in ["../x", "-lead", "a b", "", "é", &"n".repeat(129)] {
        let mut r = agent
            .post(format!("{mgmt}/models"))
            .query("url", "/etc/passwd")
            .query("model_name", name)
            .send_empty()
            .expect("register");
        let status = r.status().as_u16();
        let e = json_of(&mut r);
        if name.is_empty() {
            // No name at all: the URL is resolved (and refused: outside the store).
            assert_eq!(status, 403, "{e}");
        } else {
            assert_eq!(status, 400, "{name:?}: {e}");
            assert!(
                e["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("Invalid model name"),
                "{e}"
            );
        }
    }
}

/// A model that fails to load at start-up is logged and skipped (as TorchServe does); the
/// others serve. Only when none loads does the server refuse to start.
#[test]
fn a_bad_archive_at_start_up_is_skipped() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bad = tmp.path().join("broken.zip");
    std::fs::write(&bad, b"PK\x03\x04 this is no zip archive").expect("write");
    let mut config = tiny_config();
    config.models.push(("broken".into(), bad.clone()));
    let server = start(config).expect("starts with the good model");
    let base = format!("http://{}", server.addr());
    let agent = agent();
    let mut r = agent
        .get(format!("{base}/v1/models"))
        .call()
        .expect("models");
    assert_eq!(r.status(), 200);
    let v = json_of(&mut r);
    assert_eq!(v["models"], serde_json::json!(["sd"]), "{v}");
    let r = agent
        .post(format!("{base}/predictions/broken"))
        .send("x")
        .expect("predict");
    assert_eq!(r.status(), 404);
    assert_eq!(
        agent
            .post(format!("{base}/predictions/sd"))
            .send("still serving")
            .expect("predict")
            .status(),
        200
    );
    server.shutdown().expect("clean shutdown");

    let only_bad = wgsd::serve::ServeConfig {
        models: vec![("broken".into(), bad)],
        ..tiny_config()
    };
    assert!(
        start(only_bad).is_err(),
        "no model loaded: the server must not start"
    );
}

/// A tiny HTTP server answering each connection with `reply(path)`.
fn canned_server(reply: fn(&str) -> Vec<u8>) -> std::net::SocketAddr {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut first = String::new();
            let _ = reader.read_line(&mut first);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
            let mut stream = stream;
            let _ = stream.write_all(&reply(&path));
        }
    });
    addr
}

/// A registration download must be a 200 whose body is an archive: a redirect (never
/// followed) or a body that is not a zip is refused and leaves no file in the store.
#[test]
fn downloads_must_be_200_with_an_archive() {
    let addr = canned_server(|path| {
        let (status, extra, body): (&str, &str, &[u8]) = match path {
            "/moved.mar" => (
                "302 Found",
                "Location: http://example.invalid/x.mar\r\n",
                b"",
            ),
            "/page.mar" => ("200 OK", "", b"<html>not an archive</html>"),
            "/empty.mar" => ("200 OK", "", b""),
            _ => ("404 Not Found", "", b"no"),
        };
        let mut out = format!(
            "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(body);
        out
    });
    let store = tempfile::tempdir().expect("tempdir");
    for (name, want) in [
        ("moved.mar", "302"),
        ("page.mar", "not a .mar or .zip"),
        ("empty.mar", "not a .mar or .zip"),
        ("missing.mar", "404"),
    ] {
        let url = format!("http://{addr}/{name}");
        let err = wgsd::serve::download::fetch_into(&url, store.path()).expect_err(name);
        assert!(err.message.contains(want), "{name}: {}", err.message);
        assert_eq!(
            std::fs::read_dir(store.path()).expect("dir").count(),
            0,
            "{name}: nothing is left in the store"
        );
    }
}

/// A client that goes away before its answer: the job is cancelled, counted in
/// `wgsd_requests_cancelled_total` and logged with its request id.
#[test]
fn a_disconnected_client_is_counted_as_cancelled() {
    let server = start(tiny_config()).expect("server starts");
    let base = format!("http://{}", server.addr());
    let metrics = format!("http://{}/metrics", server.addrs().metrics);
    let impatient = serve_common::agent_with_timeout(Some(std::time::Duration::from_millis(700)));
    let r = impatient
        .post(format!("{base}/predictions/sd"))
        .header("Content-Type", "application/json")
        .header("x-request-id", "gone-early")
        .send(r#"{"prompt": "a long one", "num_inference_steps": 400, "width": 64, "height": 64}"#);
    assert!(r.is_err(), "the client was meant to time out");
    let line = r#"wgsd_requests_cancelled_total{model_name="sd"} 1"#;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let text = agent()
            .get(&metrics)
            .call()
            .expect("metrics")
            .body_mut()
            .read_to_string()
            .expect("body");
        if text.contains(line) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {line} in:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    server.shutdown().expect("clean shutdown");
}
