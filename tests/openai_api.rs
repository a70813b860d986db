//! OpenAI's images API (`POST /v1/images/generations`) and `GET /v1/models` over real
//! HTTP with the bundled tiny model: images and their seeds, OpenAI's error shapes, the
//! bearer token as the API key, the metrics, and the official `openai` Python package.

use base64::Engine;
use serde_json::{Value, json};
use wgsd::png_info;
use wgsd::serve::{ServeConfig, Server, start};

mod serve_common;
use serve_common::{agent, tiny_config};

type Resp = ureq::http::Response<ureq::Body>;

fn json_of(resp: &mut Resp) -> Value {
    let text = resp.body_mut().read_to_string().expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn generate(base: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
    let mut req = agent()
        .post(format!("{base}/v1/images/generations"))
        .header("Content-Type", "application/json");
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let mut r = req.send(body.to_string()).expect("POST");
    (r.status().as_u16(), json_of(&mut r))
}

fn serve(config: ServeConfig) -> (Server, String) {
    let server = start(config).expect("server starts");
    let base = format!("http://{}", server.addr());
    (server, base)
}

/// (width, height, rgb, parameters) of each `b64_json` item.
fn images_of(v: &Value) -> Vec<(u32, u32, Vec<u8>, String)> {
    v["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|d| {
            let png = base64::engine::general_purpose::STANDARD
                .decode(d["b64_json"].as_str().expect("b64_json"))
                .expect("base64");
            let text = png_info::read_parameters(&png)
                .expect("PNG")
                .expect("parameters");
            let img = image::load_from_memory(&png).expect("PNG").to_rgb8();
            (img.width(), img.height(), img.into_raw(), text)
        })
        .collect()
}

/// OpenAI's error shape, with this status, type and param.
fn assert_openai_error(code: u16, v: &Value, status: u16, param: Option<&str>) {
    assert_eq!(code, status, "{v}");
    let e = &v["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(e["type"].is_string(), "{v}");
    assert_eq!(e["param"].as_str(), param, "{v}");
    assert!(e.get("code").is_some(), "{v}");
}

#[test]
fn generations_models_and_errors() {
    let mut config = tiny_config();
    config
        .models
        .push(("shapes".into(), "shapes-tiny.zip".into()));
    let (server, base) = serve(config);

    let mut r = agent()
        .get(format!("{base}/v1/models"))
        .call()
        .expect("GET");
    assert_eq!(r.status(), 200);
    let v = json_of(&mut r);
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| m["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["sd", "shapes"]);
    assert_eq!(v["data"][0]["object"], "model");
    assert_eq!(v["models"], json!(["sd", "shapes"]), "KServe v1's list too");

    let body = json!({"model": "shapes", "prompt": "a red circle on a white background",
                      "n": 2, "size": "32x32", "response_format": "b64_json",
                      "seed": 9, "steps": 3, "negative_prompt": "blue", "guidance_scale": 6});
    let (code, v) = generate(&base, None, &body);
    assert_eq!(code, 200, "{v}");
    assert!(
        v["created"].as_u64().is_some_and(|t| t > 1_600_000_000),
        "{v}"
    );
    let images = images_of(&v);
    assert_eq!(images.len(), 2);
    for (i, (w, h, _, text)) in images.iter().enumerate() {
        assert_eq!((*w, *h), (32, 32));
        let p = png_info::parse(text);
        assert_eq!((p.seed, p.steps), (Some(9 + i as u64), Some(3)));
        assert_eq!(p.model.as_deref(), Some("shapes"));
        assert_eq!(p.negative_prompt, "blue");
    }
    assert_ne!(images[0].2, images[1].2);
    // Image 1 is the solo run with seed 10.
    let mut solo = body.clone();
    solo["n"] = json!(1);
    solo["seed"] = json!(10);
    let (code, v) = generate(&base, None, &solo);
    assert_eq!(code, 200, "{v}");
    assert_eq!(images_of(&v)[0].2, images[1].2);
    // The default model (the first) and size ("auto": the server's 32x24 default).
    let (code, v) = generate(
        &base,
        None,
        &json!({"prompt": "x", "size": "auto", "steps": 1}),
    );
    assert_eq!(code, 200, "{v}");
    let first = &images_of(&v)[0];
    assert_eq!((first.0, first.1), (32, 24));
    assert_eq!(png_info::parse(&first.3).model.as_deref(), Some("sd"));

    for (body, param) in [
        (json!({"prompt": "x", "size": "1024"}), "size"),
        (json!({"prompt": "x", "size": "33x33"}), "size"),
        (json!({"prompt": "x", "n": 99}), "n"),
        (json!({"prompt": ""}), "prompt"),
        (
            json!({"prompt": "x", "response_format": "url"}),
            "response_format",
        ),
        (json!({"prompt": "x", "steps": 0}), "steps"),
        (json!({"prompt": "x", "frobnicate": true}), "frobnicate"),
    ] {
        let (code, v) = generate(&base, None, &body);
        assert_openai_error(code, &v, 400, Some(param));
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
    let (code, v) = generate(&base, None, &json!({"prompt": "x", "model": "dall-e-3"}));
    assert_openai_error(code, &v, 404, Some("model"));
    assert_eq!(v["error"]["code"], "model_not_found");

    let count = |model: &str| {
        let want = format!("wgsd_requests_total{{model_name=\"{model}\",status=\"200\"}}");
        server
            .metrics()
            .render()
            .lines()
            .find(|l| l.starts_with(&want))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert_eq!((count("shapes"), count("sd")), (2, 1));
    server.shutdown().expect("clean shutdown");
}

#[test]
fn the_api_key_is_the_bearer_token() {
    let mut config = tiny_config();
    config.auth_token = Some("sk-wgsd".into());
    let (server, base) = serve(config);
    let body = json!({"prompt": "x", "size": "32x32", "steps": 1});
    let (code, v) = generate(&base, None, &body);
    assert_openai_error(code, &v, 401, None);
    assert_eq!(v["error"]["code"], "invalid_api_key");
    assert_eq!(generate(&base, Some("sk-other"), &body).0, 401);
    let (code, v) = generate(&base, Some("sk-wgsd"), &body);
    assert_eq!(code, 200, "{v}");
    server.shutdown().expect("clean shutdown");
}

/// The official `openai` package (PyPI), unchanged, from `.venv` (see `.ci/setup`):
/// `client.models.list()` and `client.images.generate(...)`, with an API key.
#[test]
fn openai_python_client() {
    let py = serve_common::venv_python("openai, PIL");
    let mut config = tiny_config();
    config.auth_token = Some("sk-wgsd".into());
    let (server, base) = serve(config);
    let out = serve_common::run_python(
        &py,
        "tests/python/openai_client.py",
        &[
            "--base-url",
            &format!("{base}/v1"),
            "--model",
            "sd",
            "--api-key",
            "sk-wgsd",
        ],
    );
    let summary: Value = serde_json::from_str(out.trim().lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("summary ({e}): {out}"));
    assert_eq!(summary["images"], 2, "{summary}");
    assert_eq!(summary["sizes"], json!([[32, 32], [32, 32]]));
    server.shutdown().expect("clean shutdown");
}
