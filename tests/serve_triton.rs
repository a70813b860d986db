//! The Open Inference Protocol as NVIDIA's Triton clients speak it (issue 16): the real
//! `tritonclient[http,grpc]` package (`tests/python/triton_client.py`, from `.venv`, see
//! `.ci/setup`) against `wgsd serve` on the tiny model, over REST with and without the
//! binary tensor extension and over gRPC; every image equals, byte for byte, the REST
//! JSON route's for the same seed. Then the extension and the `{"error"}` replies from
//! Rust, and the gRPC errors the client sees (status codes and messages).

use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use wgsd::serve::start;

mod serve_common;
use serve_common::{agent, tiny_config};

const TOKEN: &str = "triton-token";

/// The tiny model with gRPC on a free port, a token, and limits small enough that the
/// clients can hit them (`max_request_size` 200 kB, `max_response_size` 300 kB).
fn server() -> wgsd::serve::Server {
    let mut config = tiny_config();
    config.grpc_address = Some("127.0.0.1:0".parse().expect("address"));
    config.auth_token = Some(TOKEN.into());
    config.max_request_size = 200_000;
    config.max_response_size = 300_000;
    start(config).expect("server starts")
}

fn params() -> Value {
    json!({ "seed": 42, "num_inference_steps": 2, "width": 32, "height": 32 })
}

/// The image of the REST JSON route (`data` flat, row-major) and its shape.
fn rest_json_image(base: &str) -> (Vec<u64>, Vec<u8>) {
    let body = json!({
        "inputs": [{ "name": "prompt", "shape": [1], "datatype": "BYTES", "data": ["a red circle on a white background"] }],
        "parameters": params(),
    });
    let mut r = agent()
        .post(format!("{base}/v2/models/sd/infer"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .expect("infer");
    assert_eq!(r.status(), 200);
    let v: Value =
        serde_json::from_str(&r.body_mut().read_to_string().expect("body")).expect("JSON");
    let out = &v["outputs"][0];
    let shape = out["shape"]
        .as_array()
        .expect("shape")
        .iter()
        .map(|d| d.as_u64().expect("dim"))
        .collect();
    let data = out["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|x| u8::try_from(x.as_u64().expect("integer")).expect("u8"))
        .collect();
    (shape, data)
}

fn sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn triton_clients_get_the_rest_json_image() {
    let py = serve_common::venv_python("tritonclient.http, tritonclient.grpc, numpy");
    let server = server();
    let addrs = server.addrs();
    let grpc = addrs.grpc.expect("gRPC listens");
    let (shape, data) = rest_json_image(&format!("http://{}", server.addr()));
    assert_eq!(shape, vec![1, 32, 32, 3]);
    let out = serve_common::run_python(
        &py,
        "tests/python/triton_client.py",
        &[
            "--http",
            &server.addr().to_string(),
            "--grpc",
            &grpc.to_string(),
            "--token",
            TOKEN,
            "--params",
            &params().to_string(),
        ],
    );
    let v: Value = serde_json::from_str(out.trim().lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("summary ({e}): {out}"));
    let want = json!({ "shape": [1, 32, 32, 3], "sha256": sha256(&data) });
    for call in ["http_binary_default", "http_binary", "http_json", "grpc"] {
        assert_eq!(v[call], want, "{call}: {v}");
    }
    for check in [
        "http_live",
        "http_ready",
        "http_model_ready",
        "grpc_live",
        "grpc_ready",
        "grpc_model_ready",
        "grpc_no_token_live",
    ] {
        assert_eq!(v[check], true, "{check}: {v}");
    }
    assert_eq!(v["grpc_id"], "triton-1");
    for meta in ["http_model_metadata", "grpc_model_metadata"] {
        assert_eq!(v[meta]["name"], "sd", "{meta}: {v}");
        assert_eq!(v[meta]["inputs"][0]["datatype"], "BYTES", "{meta}");
        assert_eq!(v[meta]["outputs"][0]["name"], "image", "{meta}");
    }
    assert_eq!(v["http_server_metadata"]["name"], "wgsd");
    assert_eq!(v["grpc_server_metadata"]["name"], "wgsd");
    // The gRPC errors as the client reports them.
    let error = |key: &str, status: &str, says: &str| {
        assert_eq!(v[key]["status"], status, "{key}: {v}");
        let message = v[key]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(says),
            "{key}: {message:?} should say {says:?}"
        );
    };
    error(
        "grpc_unknown_model",
        "NOT_FOUND",
        "Model not found: no-such-model",
    );
    error("grpc_fp32_prompt", "INVALID_ARGUMENT", "prompts are BYTES");
    error(
        "grpc_bad_parameter",
        "INVALID_ARGUMENT",
        "num_inference_steps",
    );
    error(
        "grpc_reply_too_large",
        "RESOURCE_EXHAUSTED",
        "max_response_size",
    );
    error("grpc_request_too_large", "RESOURCE_EXHAUSTED", "");
    error(
        "grpc_no_token",
        "UNAUTHENTICATED",
        "Token Authorization failed",
    );
    assert_eq!(v["http_unknown_model"]["status"], "404", "{v}");
    server.shutdown().expect("clean shutdown");
}

/// A BYTES tensor in its raw form: each element's length (u32 LE), then its bytes.
fn raw_bytes(strings: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in strings {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    out
}

/// POSTs `head` plus `tail` with `Inference-Header-Content-Length`; status, headers'
/// header length, body.
fn post_binary(base: &str, head: &Value, tail: &[u8]) -> (u16, Option<usize>, Vec<u8>) {
    let head = head.to_string();
    let mut body = head.clone().into_bytes();
    body.extend_from_slice(tail);
    let mut r = agent()
        .post(format!("{base}/v2/models/sd/infer"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .header("Content-Type", "application/octet-stream")
        .header("Inference-Header-Content-Length", head.len().to_string())
        .send(&body[..])
        .expect("infer");
    let length = r
        .headers()
        .get("inference-header-content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut r.body_mut().as_reader(), &mut out).expect("body");
    (r.status().as_u16(), length, out)
}

#[test]
fn binary_tensor_extension_and_error_objects() {
    let server = server();
    let base = format!("http://{}", server.addr());
    let (_, want) = rest_json_image(&base);
    let prompt = raw_bytes(&["a red circle on a white background"]);
    let head = json!({
        "inputs": [{ "name": "prompt", "shape": [1], "datatype": "BYTES",
                     "parameters": { "binary_data_size": prompt.len() } }],
        "outputs": [{ "name": "image", "parameters": { "binary_data": true } }],
        "parameters": params(),
    });
    let (status, length, body) = post_binary(&base, &head, &prompt);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let n = length.expect("the reply says its JSON length");
    let reply: Value = serde_json::from_slice(&body[..n]).expect("JSON head");
    let out = &reply["outputs"][0];
    assert_eq!(out["shape"], json!([1, 32, 32, 3]));
    assert_eq!(out["parameters"]["binary_data_size"], want.len());
    assert_eq!(
        &body[n..],
        &want[..],
        "the binary image equals the JSON route's"
    );

    // Binary input, JSON output: the same image in `data`.
    let mut json_out = head.clone();
    json_out["outputs"][0]["parameters"]["binary_data"] = json!(false);
    let (status, length, body) = post_binary(&base, &json_out, &prompt);
    assert_eq!((status, length), (200, None));
    let reply: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(
        reply["outputs"][0]["data"].as_array().map(Vec::len),
        Some(want.len())
    );

    // Sizes that do not add up are 400s in the OIP error shape, never a panic.
    for (head, tail) in [
        (head.clone(), &prompt[..prompt.len() - 1]),
        (head.clone(), &[prompt.clone(), vec![0]].concat()[..]),
    ] {
        let (status, _, body) = post_binary(&base, &head, tail);
        assert_eq!(status, 400);
        let v: Value = serde_json::from_slice(&body).expect("JSON error");
        assert!(v["error"].is_string(), "{v}");
    }

    // 401, 404 and 405 on /v1/models and /v2 routes: `{"error": "..."}`.
    let check = |method: &str, path: &str, token: bool, want: u16| {
        let url = format!("{base}{path}");
        let mut req = ureq::http::Request::builder().method(method).uri(&url);
        if token {
            req = req.header("Authorization", format!("Bearer {TOKEN}"));
        }
        let req = req.body(Vec::<u8>::new()).expect("request");
        let mut r = agent().run(req).expect(path);
        assert_eq!(r.status().as_u16(), want, "{method} {path}");
        let v: Value = serde_json::from_str(&r.body_mut().read_to_string().expect("body"))
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON: {e}"));
        assert!(v["error"].is_string(), "{method} {path}: {v}");
        assert_eq!(
            v.as_object().map(|o| o.len()),
            Some(1),
            "{method} {path}: {v}"
        );
    };
    check("POST", "/v2/models/sd/infer", false, 401);
    check("GET", "/v2/models/sd", false, 401);
    check("POST", "/v1/models/sd:predict", false, 401);
    check("GET", "/v2/models/nope", true, 404);
    check("GET", "/v2/nothing/here", true, 404);
    check("GET", "/v1/models/nope", true, 404);
    check("GET", "/v2/models/sd/infer", true, 405);
    // Health probes stay open.
    let r = agent()
        .get(format!("{base}/v2/health/live"))
        .call()
        .expect("live");
    assert_eq!(r.status(), 200);
    std::thread::sleep(Duration::from_millis(10));
    server.shutdown().expect("clean shutdown");
}

/// gRPC over TLS (`--tls-cert/--tls-key` cover the gRPC listener too): tritonclient.grpc
/// with `ssl=True` and the self-signed certificate as its root gets the same image as the
/// plain REST JSON route of a server without TLS; a plaintext gRPC client gets nothing.
#[test]
fn grpc_over_tls_with_tritonclient() {
    let py = serve_common::venv_python("tritonclient.grpc, numpy");
    let plain = {
        let mut config = tiny_config();
        config.grpc_address = None;
        start(config).expect("plain server starts")
    };
    let (_, data) = rest_json_image(&format!("http://{}", plain.addr()));
    plain.shutdown().expect("clean shutdown");

    let dir = tempfile::tempdir().expect("temp dir");
    let signed = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .expect("a self-signed certificate");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, signed.cert.pem()).expect("write cert");
    std::fs::write(&key, signed.signing_key.serialize_pem()).expect("write key");
    let mut config = tiny_config();
    config.grpc_address = Some("127.0.0.1:0".parse().expect("address"));
    config.tls = Some((cert.clone(), key));
    let server = start(config).expect("TLS server starts");
    let grpc = server.addrs().grpc.expect("gRPC listens");
    let out = serve_common::run_python(
        &py,
        "tests/python/triton_client.py",
        &[
            "--http",
            "unused:0",
            "--grpc",
            &format!("localhost:{}", grpc.port()),
            "--params",
            &params().to_string(),
            "--tls-root",
            cert.to_str().expect("utf-8 path"),
        ],
    );
    let v: Value = serde_json::from_str(out.trim().lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("summary ({e}): {out}"));
    assert_eq!(v["grpc_tls_live"], true, "{v}");
    assert_eq!(
        v["grpc_tls"],
        json!({ "shape": [1, 32, 32, 3], "sha256": sha256(&data) }),
        "{v}"
    );
    assert_eq!(v["grpc_plaintext_refused"], true, "{v}");
    server.shutdown().expect("clean shutdown");
}
