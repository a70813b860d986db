//! `wgsd serve` request and reply forms beyond the plain body, over real HTTP on
//! loopback with the bundled tiny model: multipart forms, KServe v1, the Open Inference
//! Protocol (v2), and `max_response_size`. Every image is compared with
//! `Pipeline::generate` for the same settings.

use serde_json::{Value, json};
use wgsd::gpu::{AdapterChoice, Gpu};
use wgsd::pipeline::{GenerateRequest, Pipeline, PipelineOptions};
use wgsd::serve::{ServeConfig, Server, start};

mod serve_common;
use serve_common::{agent, nested_image, root, tiny_config};

const STEPS: usize = 3;
const W: usize = 32;
const H: usize = 24;

/// A server with the tiny model as `sd`, defaults 32x24 and 3 steps, all three APIs on
/// free loopback ports.
fn serve(max_response_size: Option<usize>) -> (Server, String) {
    let defaults = tiny_config();
    let config = ServeConfig {
        max_request_size: 4096,
        max_response_size: max_response_size.unwrap_or(defaults.max_response_size),
        default_steps: STEPS,
        default_width: W,
        default_height: H,
        ..defaults
    };
    let server = start(config).expect("server starts");
    let base = format!("http://{}", server.addr());
    (server, base)
}

/// The library's images for `prompts` with the test's scheduler defaults.
struct Reference {
    gpu: Gpu,
}

impl Reference {
    fn new() -> Self {
        Reference {
            gpu: Gpu::new(&AdapterChoice::default()).expect("gpu"),
        }
    }

    fn images(&self, prompts: &[&str], seed: u64, w: usize, h: usize) -> Vec<Vec<u8>> {
        let pipe = Pipeline::load(
            &self.gpu,
            &root().join("weights/sd2-tiny.zip"),
            &PipelineOptions::default(),
        )
        .expect("pipeline");
        let out = pipe
            .generate(&GenerateRequest {
                prompts: prompts.iter().map(|p| p.to_string()).collect(),
                seed,
                steps: STEPS,
                width: w,
                height: h,
                ..GenerateRequest::default()
            })
            .expect("generate");
        out.images.into_iter().map(|i| i.data).collect()
    }

    fn image(&self, prompt: &str, seed: u64, w: usize, h: usize) -> Vec<u8> {
        self.images(&[prompt], seed, w, h).remove(0)
    }
}

/// Sends `body` and returns (status, parsed JSON reply), checking `Content-Length`
/// when the server sent one.
fn post(url: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
    let mut r = agent()
        .post(url)
        .header("Content-Type", content_type)
        .send(body)
        .expect("request");
    let status = r.status().as_u16();
    let declared = r
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let text = r.body_mut().read_to_string().expect("body");
    if let Some(n) = declared {
        assert_eq!(n, text.len(), "Content-Length is the exact reply size");
    }
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:.200}"));
    (status, v)
}

fn post_json(url: &str, body: &Value) -> (u16, Value) {
    post(url, "application/json", body.to_string().as_bytes())
}

fn get(url: &str) -> (u16, Value) {
    let mut r = agent().get(url).call().expect("request");
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().expect("body");
    (status, serde_json::from_str(&text).expect("json"))
}

/// A `multipart/form-data` body; a field with a file name is sent as an upload
/// (`curl -F data=@prompt.txt`).
fn form(fields: &[(&str, Option<&str>, &str)]) -> (String, Vec<u8>) {
    let boundary = "----wgsdtestboundary7MA4YWxk";
    let mut body = String::new();
    for (name, file, value) in fields {
        body.push_str(&format!("--{boundary}\r\n"));
        match file {
            Some(f) => body.push_str(&format!(
                "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\n\
                 Content-Type: text/plain\r\n\r\n"
            )),
            None => body.push_str(&format!(
                "Content-Disposition: form-data; name=\"{name}\"\r\n\r\n"
            )),
        }
        body.push_str(value);
        body.push_str("\r\n");
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    (
        format!("multipart/form-data; boundary={boundary}"),
        body.into_bytes(),
    )
}

/// A KServe/OIP error: `{"error": "..."}` and nothing else.
fn assert_proto_error(status: u16, v: &Value, want: u16) {
    assert_eq!(status, want, "{v}");
    let obj = v.as_object().expect("object");
    assert_eq!(obj.len(), 1, "{v}");
    assert!(v["error"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
}

/// A TorchServe error: `{"code", "type", "message"}`.
fn assert_ts_error(status: u16, v: &Value, want: u16, kind: &str) {
    assert_eq!(status, want, "{v}");
    assert_eq!(v["code"], want, "{v}");
    assert_eq!(v["type"], kind, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
}

#[test]
fn multipart_form_bodies() {
    let (server, base) = serve(None);
    let reference = Reference::new();
    let url = format!("{base}/predictions/sd");

    // `curl -F data=... -F seed=7 -F width=64 -F height=48`.
    let (ct, body) = form(&[
        ("data", None, "a red apple"),
        ("seed", None, "7"),
        ("width", None, "64"),
        ("height", None, "48"),
    ]);
    let (status, v) = post(&url, &ct, &body);
    assert_eq!(status, 200, "{v}");
    let (h, w, got) = nested_image(&v);
    assert_eq!((h, w), (48, 64));
    assert_eq!(got, reference.image("a red apple", 7, 64, 48));

    // The prompt as an uploaded file (`-F data=@prompt.txt`), server defaults for size.
    let (ct, body) = form(&[
        ("data", Some("prompt.txt"), "a lighthouse at dusk"),
        ("seed", None, "3"),
    ]);
    let (status, v) = post(&format!("{base}/predictions/sd/1.0"), &ct, &body);
    assert_eq!(status, 200, "{v}");
    let (h, w, got) = nested_image(&v);
    assert_eq!((h, w), (H, W));
    assert_eq!(got, reference.image("a lighthouse at dusk", 3, W, H));

    // Bad forms are TorchServe 400s; an oversized one is a 413 before it is read.
    let bad = [
        form(&[("data", None, "x"), ("data", None, "y")]),
        form(&[("data", None, "x"), ("seed", None, "abc")]),
        form(&[("data", None, "x"), ("num_inference_steps", None, "0")]),
        form(&[("seed", None, "1")]),
        (
            "multipart/form-data; boundary=nothere".to_string(),
            b"--other\r\nnonsense".to_vec(),
        ),
    ];
    for (ct, body) in bad {
        let (status, v) = post(&url, &ct, &body);
        assert_ts_error(status, &v, 400, "BadRequestException");
    }
    let (ct, body) = form(&[("data", None, &"a".repeat(5000))]);
    let (status, v) = post(&url, &ct, &body);
    assert_ts_error(status, &v, 413, "RequestEntityTooLargeException");

    server.shutdown().expect("clean shutdown");
}

#[test]
fn kserve_v1() {
    let (server, base) = serve(None);
    let reference = Reference::new();
    let predict = format!("{base}/v1/models/sd:predict");

    // OpenAI's list shares the path (`object`, `data`); KServe clients read `models`.
    let (code, models) = get(&format!("{base}/v1/models"));
    assert_eq!((code, &models["models"]), (200, &json!(["sd"])), "{models}");
    assert_eq!(
        get(&format!("{base}/v1/models/sd")),
        (200, json!({"name": "sd", "ready": true}))
    );
    let (status, v) = get(&format!("{base}/v1/models/nope"));
    assert_proto_error(status, &v, 404);

    // One instance.
    let (status, v) = post_json(
        &predict,
        &json!({"instances": [{"data": "a red apple", "seed": 7}]}),
    );
    assert_eq!(status, 200, "{v}");
    let preds = v["predictions"].as_array().expect("predictions");
    assert_eq!(preds.len(), 1);
    let (h, w, got) = nested_image(&preds[0]);
    assert_eq!((h, w), (H, W));
    assert_eq!(got, reference.image("a red apple", 7, W, H));

    // Two instances, each its own generation with its own settings.
    let (status, v) = post_json(
        &predict,
        &json!({"instances": [
            {"prompt": "a cat", "seed": 1, "width": 64, "height": 48},
            {"data": "a dog", "seed": 2}
        ]}),
    );
    assert_eq!(status, 200, "{v}");
    let preds = v["predictions"].as_array().expect("predictions");
    assert_eq!(preds.len(), 2);
    let (h, w, got) = nested_image(&preds[0]);
    assert_eq!((h, w), (48, 64));
    assert_eq!(got, reference.image("a cat", 1, 64, 48));
    let (h, w, got) = nested_image(&preds[1]);
    assert_eq!((h, w), (H, W));
    assert_eq!(got, reference.image("a dog", 2, W, H));

    // A bare prompt string is an instance too.
    let (status, v) = post_json(&predict, &json!({"instances": ["a boat"]}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(nested_image(&v["predictions"][0]).0, H);

    // Bad bodies and instances: 400 with `{"error"}`; unknown model 404.
    let bad = [
        json!({"instances": []}),
        json!({"instances": [5]}),
        json!({"instances": "a cat"}),
        json!({"prompt": "a cat"}),
        json!({"instances": [{"prompt": "x", "num_inference_steps": 0}]}),
        json!({"instances": [{"prompt": "x", "width": 60}]}),
        json!({"instances": [{"data": ""}]}),
        json!({"instances": [{"data": "x", "num_images": 9}, {"data": "y", "num_images": 8}]}),
    ];
    for body in bad {
        let (status, v) = post_json(&predict, &body);
        assert_proto_error(status, &v, 400);
    }
    let (status, v) = post(&predict, "application/json", b"{not json");
    assert_proto_error(status, &v, 400);
    let (status, v) = post_json(
        &format!("{base}/v1/models/nope:predict"),
        &json!({"instances": ["x"]}),
    );
    assert_proto_error(status, &v, 404);

    server.shutdown().expect("clean shutdown");
}

#[test]
fn open_inference_protocol_v2() {
    let (server, base) = serve(None);
    let reference = Reference::new();

    assert_eq!(
        get(&format!("{base}/v2/health/live")),
        (200, json!({"live": true}))
    );
    assert_eq!(
        get(&format!("{base}/v2/health/ready")),
        (200, json!({"ready": true}))
    );
    for path in ["/v2/models/sd/ready", "/v2/models/sd/versions/1.0/ready"] {
        assert_eq!(
            get(&format!("{base}{path}")),
            (200, json!({"name": "sd", "ready": true}))
        );
    }
    let (status, meta) = get(&format!("{base}/v2/models/sd"));
    assert_eq!(status, 200);
    assert_eq!(meta["name"], "sd");
    assert_eq!(meta["versions"], json!(["1.0"]));
    assert!(meta["platform"].as_str().is_some_and(|p| !p.is_empty()));
    assert_eq!(meta["inputs"][0]["datatype"], "BYTES");
    assert_eq!(meta["outputs"][0]["name"], "image");
    assert_eq!(meta["outputs"][0]["datatype"], "UINT8");
    assert_eq!(get(&format!("{base}/v2/models/sd/versions/1.0")).1, meta);
    for path in [
        "/v2/models/nope",
        "/v2/models/nope/ready",
        "/v2/models/sd/versions/9/ready",
    ] {
        let (status, v) = get(&format!("{base}{path}"));
        assert_proto_error(status, &v, 404);
    }

    // A scalar prompt: one image, shape [H, W, 3], the request's id echoed.
    let (status, v) = post_json(
        &format!("{base}/v2/models/sd/infer"),
        &json!({
            "id": "req-1",
            "inputs": [{"name": "prompt", "shape": [1], "datatype": "BYTES", "data": "a red apple"}],
            "parameters": {"seed": 7, "width": 64, "height": 48}
        }),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model_name"], "sd");
    assert_eq!(v["model_version"], "1.0");
    assert_eq!(v["id"], "req-1");
    let out = &v["outputs"][0];
    assert_eq!(out["name"], "image");
    assert_eq!(out["datatype"], "UINT8");
    assert_eq!(out["shape"], json!([48, 64, 3]));
    let data: Vec<u8> = serde_json::from_value(out["data"].clone()).expect("u8 data");
    assert_eq!(data, reference.image("a red apple", 7, 64, 48));

    // A list of prompts: one batched generation, shape [N, H, W, 3], data row-major.
    let (status, v) = post_json(
        &format!("{base}/v2/models/sd/versions/1.0/infer"),
        &json!({
            "inputs": [{"name": "prompt", "shape": [2], "datatype": "BYTES", "data": ["a cat", "a dog"]}],
            "parameters": {"seed": 3}
        }),
    );
    assert_eq!(status, 200, "{v}");
    let out = &v["outputs"][0];
    assert_eq!(out["shape"], json!([2, H, W, 3]));
    let data: Vec<u8> = serde_json::from_value(out["data"].clone()).expect("u8 data");
    assert_eq!(
        data,
        reference.images(&["a cat", "a dog"], 3, W, H).concat()
    );

    // Bad requests: 400 with `{"error"}`.
    let infer = format!("{base}/v2/models/sd/infer");
    let bad = [
        json!({"inputs": [{"name": "prompt", "shape": [1], "datatype": "FP32", "data": [1.0]}]}),
        json!({"inputs": [{"name": "prompt", "shape": [1], "data": "x"}]}),
        json!({"inputs": [{"name": "prompt", "shape": [3], "datatype": "BYTES", "data": ["a", "b"]}]}),
        json!({"inputs": [{"name": "prompt", "shape": [1], "datatype": "BYTES", "data": [7]}]}),
        json!({"inputs": []}),
        json!({"instances": ["x"]}),
        json!({"inputs": [{"name": "prompt", "shape": [1], "datatype": "BYTES", "data": "x"}],
               "parameters": {"num_inference_steps": 501}}),
    ];
    for body in bad {
        let (status, v) = post_json(&infer, &body);
        assert_proto_error(status, &v, 400);
    }
    let (status, v) = post_json(
        &format!("{base}/v2/models/nope/infer"),
        &json!({"inputs": [{"name": "prompt", "shape": [1], "datatype": "BYTES", "data": "x"}]}),
    );
    assert_proto_error(status, &v, 404);

    server.shutdown().expect("clean shutdown");
}

/// A reply over `max_response_size` is a whole error reply (never a cut image): found
/// before generating when even the smallest reply cannot fit, else from the exact size
/// of the finished image.
#[test]
fn max_response_size_refuses_whole_reply() {
    let reference = Reference::new();
    let want = reference.image("a red apple", 7, W, H);
    let rows: Vec<Vec<[u8; 3]>> = want
        .chunks(W * 3)
        .map(|r| r.chunks(3).map(|p| [p[0], p[1], p[2]]).collect())
        .collect();
    let exact = serde_json::to_string(&rows).expect("json").len();
    let (server, base) = serve(Some(exact - 1));
    let url = format!("{base}/predictions/sd");
    let body = json!({"prompt": "a red apple", "seed": 7});

    // One byte over: refused after generating, in TorchServe's error shape.
    let (status, v) = post_json(&url, &body);
    assert_ts_error(status, &v, 500, "ResponseTooLargeException");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains(&exact.to_string()))
    );

    // Too big whatever the pixels: refused up front.
    let (status, v) = post_json(&url, &json!({"prompt": "x", "width": 64, "height": 48}));
    assert_ts_error(status, &v, 500, "ResponseTooLargeException");

    // The same image as PNG fits; so does a smaller image.
    let mut r = agent()
        .post(format!("{url}?format=png"))
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .expect("png");
    assert_eq!(r.status(), 200);
    let png = r.body_mut().read_to_vec().expect("png body");
    let img = image::load_from_memory(&png).expect("decodes").to_rgb8();
    assert_eq!(img.into_raw(), want);
    let (status, v) = post_json(&url, &json!({"prompt": "x", "width": 16, "height": 8}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(nested_image(&v).0, 8);

    // The other protocols refuse in their own error shape.
    let (status, v) = post_json(
        &format!("{base}/v1/models/sd:predict"),
        &json!({"instances": [body]}),
    );
    assert_proto_error(status, &v, 500);
    let (status, v) = post_json(
        &format!("{base}/v2/models/sd/infer"),
        &json!({"inputs": [{"name": "prompt", "shape": [1], "datatype": "BYTES", "data": "x"}],
                "parameters": {"width": 64, "height": 48}}),
    );
    assert_proto_error(status, &v, 500);

    server.shutdown().expect("clean shutdown");
}
