//! `wgsd serve` over real HTTP on loopback with the bundled tiny model.

use std::path::PathBuf;

use wgsd::gpu::{AdapterChoice, Gpu};
use wgsd::pipeline::{GenerateRequest, Pipeline, PipelineOptions};
use wgsd::schedulers::{Sampler, Spacing};
use wgsd::serve::{ServeConfig, start};

mod serve_common;
use serve_common::{agent, decode_nested, psnr, root, tiny_config};

fn error_of(resp: &mut ureq::http::Response<ureq::Body>) -> serde_json::Value {
    let text = resp.body_mut().read_to_string().expect("body");
    serde_json::from_str(&text).expect("error body is JSON")
}

#[test]
fn serve_inference_api() {
    let config = ServeConfig {
        max_request_size: 4096,
        ..tiny_config()
    };
    let server = start(config).expect("server starts");
    let base = format!("http://{}", server.addr());
    let agent = agent();

    // Ping, with a generated request id.
    let mut r = agent.get(format!("{base}/ping")).call().expect("ping");
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    let v: serde_json::Value =
        serde_json::from_str(&r.body_mut().read_to_string().expect("body")).expect("json");
    assert_eq!(v, serde_json::json!({"status": "Healthy"}));

    // JSON parameters: the image equals the library's for the same settings.
    let body = r#"{"prompt": "a red apple", "width": 64, "height": 48,
        "num_inference_steps": 5, "seed": 7, "guidance_scale": 7.5}"#;
    let mut r = agent
        .post(format!("{base}/predictions/sd"))
        .header("Content-Type", "application/json")
        .header("x-request-id", "abc-123")
        .send(body)
        .expect("predict");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    let text = r.body_mut().read_to_string().expect("body");
    assert!(
        text.starts_with("[[[") && !text.contains(' '),
        "compact JSON"
    );
    let (h, w, got) = decode_nested(&text);
    assert_eq!((h, w), (48, 64));

    let gpu = Gpu::new(&AdapterChoice::default()).expect("gpu");
    let pipe = Pipeline::load(
        &gpu,
        &root().join("weights/sd2-tiny.zip"),
        &PipelineOptions::default(),
    )
    .expect("pipeline");
    let want = pipe
        .generate(&GenerateRequest {
            seed: 7,
            steps: 5,
            width: 64,
            height: 48,
            ..GenerateRequest::new("a red apple")
        })
        .expect("generate");
    assert_eq!(
        got, want.images[0].data,
        "served image equals Pipeline::generate"
    );

    // PNG through Accept, same pixels; also through the versioned path.
    let mut r = agent
        .post(format!("{base}/predictions/sd/1.0"))
        .header("Accept", "image/png")
        .header("Content-Type", "application/json")
        .send(body)
        .expect("png");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    let png = r.body_mut().read_to_vec().expect("png body");
    let img = image::load_from_memory(&png).expect("decodes").to_rgb8();
    assert_eq!((img.width(), img.height()), (64, 48));
    assert_eq!(img.into_raw(), want.images[0].data);

    // A sampler by its AUTOMATIC1111 name with an overridden timestep spacing.
    let mut r = agent
        .post(format!("{base}/predictions/sd?format=png"))
        .header("Content-Type", "application/json")
        .send(
            r#"{"prompt": "a red apple", "seed": 7, "num_inference_steps": 3, "width": 64,
                "height": 48, "scheduler": "DPM++ 2M SDE Karras", "timestep_spacing": "trailing"}"#,
        )
        .expect("sampler");
    assert_eq!(r.status(), 200);
    let img = image::load_from_memory(&r.body_mut().read_to_vec().expect("body")).expect("png");
    let want = pipe
        .generate(&GenerateRequest {
            seed: 7,
            steps: 3,
            width: 64,
            height: 48,
            scheduler: Some(Sampler::parse("dpm++2m_sde_karras").expect("sampler")),
            timestep_spacing: Some(Spacing::Trailing),
            ..GenerateRequest::new("a red apple")
        })
        .expect("generate");
    assert_eq!(
        img.to_rgb8().into_raw(),
        want.images[0].data,
        "sampler via serve"
    );

    // Raw text (what `curl -d` sends) with the server's defaults, and `{"data": ...}`
    // with ?format=png.
    let mut r = agent
        .post(format!("{base}/predictions/sd"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send("a lighthouse at dusk")
        .expect("raw");
    assert_eq!(r.status(), 200);
    let (h, w, _) = decode_nested(&r.body_mut().read_to_string().expect("body"));
    assert_eq!((h, w), (24, 32));
    let mut r = agent
        .post(format!("{base}/predictions/sd?format=png"))
        .header("Content-Type", "application/json")
        .send(r#"{"data": "a lighthouse", "seed": 1}"#)
        .expect("data");
    assert_eq!(r.status(), 200);
    let img = image::load_from_memory(&r.body_mut().read_to_vec().expect("body")).expect("png");
    assert_eq!((img.width(), img.height()), (32, 24));

    // Errors in TorchServe's shape.
    let mut r = agent
        .post(format!("{base}/predictions/nope"))
        .send("x")
        .expect("404");
    assert_eq!(r.status(), 404);
    assert!(r.headers().contains_key("x-request-id"));
    let e = error_of(&mut r);
    assert_eq!(e["code"], 404);
    assert_eq!(e["type"], "ModelNotFoundException");

    let bad = [
        ("{not json", true),
        (r#"{"prompt": "x", "num_inference_steps": 0}"#, true),
        (r#"{"prompt": "x", "num_inference_steps": 501}"#, true),
        (r#"{"prompt": "x", "width": 60}"#, true),
        (r#"{"prompt": "x", "height": 4096}"#, true),
        (r#"{"prompt": "x", "seed": -1}"#, true),
        (r#"{"prompt": "x", "scheduler": "nope"}"#, true),
        (r#"{"prompt": "x", "timestep_spacing": "sideways"}"#, true),
        (r#"{"prompt": ""}"#, true),
        ("", false),
    ];
    for (body, json) in bad {
        let mut req = agent.post(format!("{base}/predictions/sd"));
        if json {
            req = req.header("Content-Type", "application/json");
        }
        let mut r = req.send(body).expect("400");
        assert_eq!(r.status(), 400, "{body}");
        let e = error_of(&mut r);
        assert_eq!(e["code"], 400, "{body}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let mut r = agent
        .post(format!("{base}/predictions/sd"))
        .send(&[0xffu8, 0xfe, 0x00][..])
        .expect("non-utf8");
    assert_eq!(r.status(), 400);
    let _ = error_of(&mut r);

    let big = "a".repeat(5000);
    let mut r = agent
        .post(format!("{base}/predictions/sd"))
        .send(big.as_str())
        .expect("413");
    assert_eq!(r.status(), 413);
    // The body was refused unread: the connection closes, and the client is told so
    // (otherwise a pooling client sends its next request on a closing connection).
    assert_eq!(
        r.headers().get("connection").and_then(|v| v.to_str().ok()),
        Some("close"),
        "a 413 says Connection: close"
    );
    assert_eq!(error_of(&mut r)["code"], 413);

    let mut r = agent.get(format!("{base}/nowhere")).call().expect("404");
    assert_eq!(r.status(), 404);
    let _ = error_of(&mut r);

    server.shutdown().expect("clean shutdown");
}

/// A full queue answers 503 at once; the queued and running requests still finish.
#[test]
fn serve_queue_full_is_503() {
    let config = ServeConfig {
        queue_size: 1,
        default_steps: 20,
        ..tiny_config()
    };
    let server = start(config).expect("server starts");
    let url = format!("http://{}/predictions/sd", server.addr());
    let clients: Vec<_> = (0..5)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut r = agent()
                    .post(url)
                    .send(format!("prompt {i}"))
                    .expect("request");
                let retry = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let body = r.body_mut().read_to_string().expect("body");
                (r.status().as_u16(), body, retry)
            })
        })
        .collect();
    let replies: Vec<(u16, String, Option<String>)> = clients
        .into_iter()
        .map(|c| c.join().expect("client thread"))
        .collect();
    let ok = replies.iter().filter(|(s, ..)| *s == 200).count();
    let full: Vec<_> = replies.iter().filter(|(s, ..)| *s == 503).collect();
    assert_eq!(ok + full.len(), 5, "{replies:?}");
    assert!(ok >= 1 && !full.is_empty(), "{ok} ok, {} full", full.len());
    for (_, body, retry) in full {
        let e: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(e["code"], 503);
        assert_eq!(e["type"], "ServiceUnavailableException");
        // Temporary: clients are told when to come back.
        assert_eq!(retry.as_deref(), Some("1"));
    }
    for (_, body, _) in replies.iter().filter(|(s, ..)| *s == 200) {
        let (h, w, _) = decode_nested(body);
        assert_eq!((h, w), (24, 32));
    }
    server.shutdown().expect("clean shutdown");
}

#[test]
fn models_all_and_specs() {
    let store = root().join("weights");
    let all = wgsd::serve::expand_models(&store, &["all".into()]).expect("all");
    assert_eq!(
        all,
        vec![
            ("sd2-tiny".into(), PathBuf::from("sd2-tiny.zip")),
            ("shapes-tiny".into(), PathBuf::from("shapes-tiny.zip"))
        ]
    );
    let named =
        wgsd::serve::expand_models(&store, &["a=/x/y.mar".into(), "z.zip".into()]).expect("specs");
    assert_eq!(
        named,
        vec![
            ("a".into(), PathBuf::from("/x/y.mar")),
            ("z".into(), PathBuf::from("z.zip"))
        ]
    );
    assert!(wgsd::serve::expand_models(&store, &["=x".into()]).is_err());
    let empty = tempfile::tempdir().expect("tmp");
    assert!(wgsd::serve::expand_models(empty.path(), &["all".into()]).is_err());
}

/// `"prompt_syntax": "a1111"` on `/predictions`: the emphasis case of
/// tests/fixtures/prompt-syntax (diffusers fed A1111-built embeddings), >= 60 dB; without
/// it the same text is read as diffusers reads it (a different image).
#[test]
fn predictions_take_the_a1111_prompt_syntax() {
    let server = start(tiny_config()).expect("server starts");
    let base = format!("http://{}", server.addr());
    let bytes = std::fs::read(root().join("tests/fixtures/prompt-syntax/reference.safetensors"))
        .expect("fixture");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let want = st
        .tensor("e2e.00_emphasis.image_u8")
        .expect("case")
        .data()
        .to_vec();
    let mut body = serde_json::json!({
        "prompt": "a (red:1.5) circle on a ((white)) background, [blurry]",
        "negative_prompt": "(ugly:1.2), text",
        "seed": 21, "num_inference_steps": 4, "guidance_scale": 7.5,
        "width": 64, "height": 64, "prompt_syntax": "a1111",
    });
    let post = |body: &serde_json::Value| {
        let mut r = agent()
            .post(format!("{base}/predictions/sd"))
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .expect("predict");
        assert_eq!(r.status(), 200);
        decode_nested(&r.body_mut().read_to_string().expect("body")).2
    };
    let p = psnr(&post(&body), &want);
    assert!(p >= 60.0, "a1111 syntax: {p:.1} dB");
    body["prompt_syntax"] = "plain".into();
    let p = psnr(&post(&body), &want);
    assert!(
        p < 45.0,
        "plain syntax reads the brackets as text: {p:.1} dB"
    );
}
