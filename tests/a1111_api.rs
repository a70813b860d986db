//! AUTOMATIC1111's `/sdapi/v1` API over real HTTP with the bundled tiny models: every
//! route, batch seeds (image `i` of a call equals a solo run with seed `seed + i`), the
//! model switch through options and override_settings, progress during a run,
//! interrupt and skip (images decoded early), A1111's error shapes for bad input,
//! `--api-auth`, and the metrics.

use std::time::{Duration, Instant};

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

fn get(base: &str, path: &str) -> (u16, Value) {
    let mut r = agent().get(format!("{base}{path}")).call().expect("GET");
    (r.status().as_u16(), json_of(&mut r))
}

fn post(base: &str, path: &str, body: &Value) -> (u16, Value) {
    let mut r = agent()
        .post(format!("{base}{path}"))
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .expect("POST");
    (r.status().as_u16(), json_of(&mut r))
}

/// Both bundled models: `sd` (sd2-tiny, the default) and `shapes` (shapes-tiny).
fn two_models() -> ServeConfig {
    let mut config = tiny_config();
    config
        .models
        .push(("shapes".into(), "shapes-tiny.zip".into()));
    config
}

fn serve(config: ServeConfig) -> (Server, String) {
    let server = start(config).expect("server starts");
    let base = format!("http://{}", server.addr());
    (server, base)
}

/// The `info` string of a txt2img reply, parsed.
fn info_of(v: &Value) -> Value {
    let s = v["info"]
        .as_str()
        .unwrap_or_else(|| panic!("info is a string: {v}"));
    serde_json::from_str(s).expect("info is JSON")
}

/// The reply's images: (width, height, rgb, parameters chunk).
fn images_of(v: &Value) -> Vec<(u32, u32, Vec<u8>, String)> {
    v["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|b64| {
            let png = base64::engine::general_purpose::STANDARD
                .decode(b64.as_str().expect("base64 string"))
                .expect("base64");
            let text = png_info::read_parameters(&png)
                .expect("readable PNG")
                .expect("a parameters chunk");
            let img = image::load_from_memory(&png).expect("PNG").to_rgb8();
            (img.width(), img.height(), img.into_raw(), text)
        })
        .collect()
}

fn txt2img(base: &str, body: Value) -> Value {
    let (code, v) = post(base, "/sdapi/v1/txt2img", &body);
    assert_eq!(code, 200, "{v}");
    v
}

/// The 422 body's fields (`loc[1]` of each error), checking FastAPI's shape.
fn invalid_fields(code: u16, v: &Value) -> Vec<String> {
    assert_eq!(code, 422, "{v}");
    v["detail"]
        .as_array()
        .unwrap_or_else(|| panic!("detail is a list: {v}"))
        .iter()
        .map(|e| {
            assert_eq!(e["loc"][0], "body", "{v}");
            assert!(e["msg"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
            assert!(e["type"].is_string(), "{v}");
            e["loc"][1].as_str().expect("field").to_string()
        })
        .collect()
}

fn requests_counted(server: &Server, model: &str, status: u16) -> u64 {
    let want = format!("wgsd_requests_total{{model_name=\"{model}\",status=\"{status}\"}}");
    server
        .metrics()
        .render()
        .lines()
        .find(|l| l.starts_with(&want))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn lists_options_and_models() {
    let (server, base) = serve(two_models());

    let (code, samplers) = get(&base, "/sdapi/v1/samplers");
    assert_eq!(code, 200);
    let names: Vec<&str> = samplers
        .as_array()
        .expect("list")
        .iter()
        .map(|s| s["name"].as_str().expect("name"))
        .collect();
    for want in [
        "Euler a",
        "Euler",
        "LMS",
        "DDIM",
        "PLMS",
        "DPM++ 2M",
        "DPM++ 2M Karras",
        "UniPC",
    ] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    assert!(samplers[0]["aliases"].is_array() && samplers[0]["options"].is_object());
    let (_, schedulers) = get(&base, "/sdapi/v1/schedulers");
    let labels: Vec<&str> = schedulers
        .as_array()
        .expect("list")
        .iter()
        .map(|s| s["label"].as_str().expect("label"))
        .collect();
    assert_eq!(labels, ["Automatic", "Uniform", "Karras"]);

    let (_, models) = get(&base, "/sdapi/v1/sd-models");
    let titles: Vec<&str> = models
        .as_array()
        .expect("list")
        .iter()
        .map(|m| m["title"].as_str().expect("title"))
        .collect();
    assert_eq!(titles, ["sd", "shapes"]);
    let sha = models[0]["sha256"].as_str().expect("sha256 of the archive");
    assert_eq!(models[0]["hash"].as_str(), Some(&sha[..10]));
    assert!(
        models[0]["filename"]
            .as_str()
            .is_some_and(|f| f.ends_with("sd2-tiny.zip"))
    );

    // Options: the default model, stored unknown keys, the checkpoint switch.
    let (_, opts) = get(&base, "/sdapi/v1/options");
    assert_eq!(opts["sd_model_checkpoint"], "sd");
    assert_eq!(opts["samples_format"], "png");
    let (code, v) = post(
        &base,
        "/sdapi/v1/options",
        &json!({"sd_model_checkpoint": "shapes [abc]", "my_extension_key": {"x": [1, 2]}}),
    );
    assert_eq!((code, v), (200, Value::Null));
    let (_, opts) = get(&base, "/sdapi/v1/options");
    assert_eq!(opts["sd_model_checkpoint"], "shapes");
    assert_eq!(opts["my_extension_key"], json!({"x": [1, 2]}));
    let (code, v) = post(
        &base,
        "/sdapi/v1/options",
        &json!({"sd_model_checkpoint": "nope"}),
    );
    assert_eq!(code, 404, "{v}");
    assert_eq!(v["error"], "HTTPException");
    assert!(
        v["detail"]
            .as_str()
            .is_some_and(|d| d.contains("not found")),
        "{v}"
    );
    assert_eq!(
        v["errors"].as_str().map(|e| e.starts_with("404: ")),
        Some(true)
    );
    let (code, v) = post(
        &base,
        "/sdapi/v1/options",
        &json!({"CLIP_stop_at_last_layers": 2}),
    );
    assert_eq!(invalid_fields(code, &v), ["CLIP_stop_at_last_layers"]);
    let (code, v) = post(&base, "/sdapi/v1/options", &json!([1]));
    assert_eq!(code, 422, "{v}");

    for empty in [
        "upscalers",
        "loras",
        "hypernetworks",
        "face-restorers",
        "realesrgan-models",
        "prompt-styles",
        "sd-vae",
        "latent-upscale-modes",
        "script-info",
    ] {
        assert_eq!(
            get(&base, &format!("/sdapi/v1/{empty}")),
            (200, json!([])),
            "{empty}"
        );
    }
    assert_eq!(
        get(&base, "/sdapi/v1/scripts"),
        (200, json!({"txt2img": [], "img2img": []}))
    );
    assert_eq!(
        get(&base, "/sdapi/v1/embeddings"),
        (200, json!({"loaded": {}, "skipped": {}}))
    );
    let (code, flags) = get(&base, "/sdapi/v1/cmd-flags");
    assert_eq!((code, &flags["api"]), (200, &json!(true)), "{flags}");
    let (code, mem) = get(&base, "/sdapi/v1/memory");
    assert_eq!(code, 200);
    assert!(
        mem["ram"]["total"].as_f64().is_some_and(|t| t > 0.0),
        "{mem}"
    );
    assert!(mem["cuda"].is_object(), "{mem}");
    assert_eq!(
        post(&base, "/sdapi/v1/refresh-checkpoints", &json!({})).0,
        200
    );

    // Idle progress, and interrupt / skip with nothing running.
    let (code, p) = get(&base, "/sdapi/v1/progress");
    assert_eq!(code, 200);
    assert_eq!(p["progress"], 0.0);
    assert_eq!(p["state"]["job_count"], 0);
    assert!(p["current_image"].is_null());
    assert_eq!(
        post(&base, "/sdapi/v1/interrupt", &json!({})),
        (200, json!({}))
    );
    assert_eq!(post(&base, "/sdapi/v1/skip", &json!({})).0, 200);
    server.shutdown().expect("clean shutdown");
}

#[test]
fn txt2img_batches_seeds_and_models() {
    let (server, base) = serve(two_models());
    let v = txt2img(
        &base,
        json!({
            "prompt": "a red circle on a white background", "negative_prompt": "blurry",
            "seed": 100, "steps": 3, "width": 32, "height": 32, "cfg_scale": 6,
            "batch_size": 2, "n_iter": 2, "sampler_name": "Euler a",
            "restore_faces": true, "enable_hr": false, "hr_scale": 2,
        }),
    );
    let info = info_of(&v);
    assert_eq!(info["seed"], 100);
    assert_eq!(info["all_seeds"], json!([100, 101, 102, 103]));
    assert_eq!(info["all_prompts"].as_array().map(Vec::len), Some(4));
    assert_eq!(info["sampler_name"], "Euler a");
    assert_eq!(
        (&info["width"], &info["steps"], &info["cfg_scale"]),
        (&json!(32), &json!(3), &json!(6.0))
    );
    assert_eq!(info["sd_model_name"], "sd");
    assert_eq!(info["ignored"], json!(["restore_faces"]));
    assert_eq!(info["interrupted"], false);
    assert!(
        info["job_timestamp"]
            .as_str()
            .is_some_and(|t| t.len() == 14),
        "{info}"
    );
    assert_eq!(v["parameters"]["n_iter"], 2);
    assert_eq!(
        v["parameters"]["sampler_index"], "Euler",
        "A1111's default echoed"
    );
    let images = images_of(&v);
    assert_eq!(images.len(), 4);
    let infotexts = info["infotexts"].as_array().expect("infotexts");
    for (i, (w, h, _, text)) in images.iter().enumerate() {
        assert_eq!((*w, *h), (32, 32));
        assert_eq!(text, &infotexts[i], "the PNG carries its infotext");
        let parsed = png_info::parse(text);
        assert_eq!(parsed.seed, Some(100 + i as u64));
        assert_eq!(parsed.negative_prompt, "blurry");
    }
    assert_ne!(images[0].2, images[1].2, "each image has its own seed");
    // Image 2 of the call is the solo run with seed 102.
    let solo = txt2img(
        &base,
        json!({"prompt": "a red circle on a white background", "negative_prompt": "blurry",
               "seed": 102, "steps": 3, "width": 32, "height": 32, "cfg_scale": 6,
               "sampler_index": "Euler a"}),
    );
    assert_eq!(
        images_of(&solo)[0].2,
        images[2].2,
        "seed + i reproduces alone"
    );

    // The model: override_settings, then options; samplers with A1111 >= 1.9 schedules.
    let v = txt2img(
        &base,
        json!({"prompt": "a blue square", "seed": -1, "steps": 2, "width": 32, "height": 32,
               "sampler_name": "DPM++ 2M", "scheduler": "Karras",
               "override_settings": {"sd_model_checkpoint": "shapes"}}),
    );
    let info = info_of(&v);
    assert_eq!(info["sd_model_name"], "shapes");
    assert_eq!(info["sampler_name"], "DPM++ 2M Karras");
    assert!(info["seed"].as_u64().is_some_and(|s| s < 1 << 32), "{info}");
    assert_eq!(
        post(
            &base,
            "/sdapi/v1/options",
            &json!({"sd_model_checkpoint": "shapes"})
        )
        .0,
        200
    );
    let v = txt2img(
        &base,
        json!({"prompt": "a", "steps": 1, "width": 32, "height": 32, "send_images": false}),
    );
    assert_eq!(info_of(&v)["sd_model_name"], "shapes");
    assert_eq!(v["images"], json!([]), "send_images: false");
    assert_eq!(requests_counted(&server, "sd", 200), 2);
    assert_eq!(requests_counted(&server, "shapes", 200), 2);
    server.shutdown().expect("clean shutdown");
}

#[test]
fn bad_input_is_refused_as_a1111_does() {
    let (server, base) = serve(tiny_config());
    let bad = |body: Value| {
        let (code, v) = post(&base, "/sdapi/v1/txt2img", &body);
        invalid_fields(code, &v)
    };
    assert_eq!(
        bad(json!({"prompt": "a", "sampler_name": "Heun"})),
        ["sampler_name"]
    );
    assert_eq!(
        bad(json!({"prompt": "a", "sampler_index": "nope"})),
        ["sampler_index"]
    );
    assert_eq!(
        bad(json!({"prompt": "a", "scheduler": "Exponential"})),
        ["scheduler"]
    );
    assert_eq!(
        bad(json!({"prompt": "a", "sampler_name": "DDIM", "scheduler": "Karras"})),
        ["scheduler"]
    );
    assert_eq!(
        bad(json!({"prompt": "a", "enable_hr": true, "hr_upscaler": "ESRGAN_4x"})),
        ["hr_upscaler"]
    );
    assert_eq!(
        bad(json!({"prompt": "a", "init_images": ["aGk="]})),
        ["init_images"]
    );
    assert_eq!(
        bad(json!({"prompt": "a", "subseed_strength": 0.3})),
        ["subseed_strength"]
    );
    assert_eq!(
        bad(json!({"prompt": "a", "alwayson_scripts": {"ADetailer": {"args": [true]}}})),
        ["alwayson_scripts"]
    );
    assert_eq!(
        bad(json!({"prompt": "a", "script_name": "x/y/z plot"})),
        ["script_name"]
    );
    assert_eq!(
        bad(json!({"prompt": "a", "width": 30, "steps": "x"})),
        ["steps", "width"]
    );
    assert_eq!(bad(json!({"prompt": "a", "batch_size": 0})), ["batch_size"]);
    assert_eq!(
        bad(json!({"prompt": "a", "override_settings": {"CLIP_stop_at_last_layers": 2}})),
        ["override_settings.CLIP_stop_at_last_layers"]
    );
    let mut r = agent()
        .post(format!("{base}/sdapi/v1/txt2img"))
        .header("Content-Type", "application/json")
        .send("{not json")
        .expect("POST");
    assert_eq!(r.status(), 422);
    assert_eq!(
        json_of(&mut r)["detail"][0]["type"],
        "value_error.jsondecode"
    );
    let (code, v) = post(
        &base,
        "/sdapi/v1/txt2img",
        &json!({"prompt": "a", "override_settings": {"sd_model_checkpoint": "nope"}}),
    );
    assert_eq!(code, 404, "{v}");
    assert_eq!(
        v,
        json!({"error": "HTTPException", "detail": "Model not found", "body": "", "errors": "404: Model not found"})
    );
    server.shutdown().expect("clean shutdown");
}

/// Polls progress until the running job has done a step; returns that progress reply.
fn wait_for_step(base: &str) -> Value {
    let t0 = Instant::now();
    loop {
        let (code, p) = get(base, "/sdapi/v1/progress");
        assert_eq!(code, 200);
        if p["state"]["sampling_step"].as_u64().is_some_and(|s| s > 0)
            && p["state"]["job_count"] != 0
        {
            return p;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no step in time: {p}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn spawn_txt2img(base: &str, body: Value) -> std::thread::JoinHandle<(u16, Value)> {
    let base = base.to_string();
    std::thread::spawn(move || post(&base, "/sdapi/v1/txt2img", &body))
}

#[test]
fn progress_interrupt_and_skip() {
    let (server, base) = serve(tiny_config());
    let steps = 400;
    // Two iterations: an interrupt ends the running one early and drops the second.
    let run = spawn_txt2img(
        &base,
        json!({"prompt": "a cat", "seed": 5, "steps": steps, "width": 32, "height": 32, "n_iter": 2}),
    );
    let p = wait_for_step(&base);
    let s = &p["state"];
    assert_eq!(
        (&s["job_count"], &s["job_no"], &s["sampling_steps"]),
        (&json!(2), &json!(0), &json!(steps)),
        "{p}"
    );
    assert_eq!(s["interrupted"], false);
    let progress = p["progress"].as_f64().expect("progress");
    assert!(progress > 0.0 && progress <= 1.0, "{p}");
    assert!(p["eta_relative"].as_f64().is_some(), "{p}");
    let preview = p["current_image"]
        .as_str()
        .expect("a preview while running");
    let png = base64::engine::general_purpose::STANDARD
        .decode(preview)
        .expect("base64");
    image::load_from_memory(&png).expect("the preview is an image");
    let (_, p) = get(&base, "/sdapi/v1/progress?skip_current_image=true");
    assert!(p["current_image"].is_null(), "{p}");
    assert_eq!(
        post(&base, "/sdapi/v1/interrupt", &json!({})),
        (200, json!({}))
    );
    let (code, v) = run.join().expect("client thread");
    assert_eq!(code, 200, "{v}");
    let info = info_of(&v);
    assert_eq!(info["interrupted"], true);
    assert_eq!(images_of(&v).len(), 1, "the second iteration never ran");
    let done = info["steps_done"][0].as_u64().expect("steps done");
    assert!(
        done > 0 && done < steps,
        "interrupted after {done} of {steps} steps"
    );
    assert_eq!(info["all_seeds"], json!([5, 6]));
    let (_, p) = get(&base, "/sdapi/v1/progress");
    assert_eq!(p["state"]["job_count"], 0, "idle again: {p}");
    assert_eq!(
        p["state"]["interrupted"], true,
        "A1111 keeps the last flags: {p}"
    );

    // Skip ends the running iteration only; the next runs in full.
    let short = 3;
    let run = spawn_txt2img(
        &base,
        json!({"prompt": "a cat", "seed": 5, "steps": steps, "width": 32, "height": 32, "n_iter": 2,
               "override_settings": {}, "cfg_scale": 1}),
    );
    wait_for_step(&base);
    assert_eq!(post(&base, "/sdapi/v1/skip", &json!({})).0, 200);
    // Interrupting the second iteration as soon as it runs keeps the test short.
    let t0 = Instant::now();
    loop {
        let (_, p) = get(&base, "/sdapi/v1/progress");
        if p["state"]["job_no"] == 1
            && p["state"]["sampling_step"]
                .as_u64()
                .is_some_and(|s| s >= short)
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "second iteration never ran: {p}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    post(&base, "/sdapi/v1/interrupt", &json!({}));
    let (code, v) = run.join().expect("client thread");
    assert_eq!(code, 200, "{v}");
    let info = info_of(&v);
    assert_eq!(
        images_of(&v).len(),
        2,
        "a skip goes on with the next iteration"
    );
    let done: Vec<u64> = info["steps_done"]
        .as_array()
        .expect("steps_done")
        .iter()
        .map(|d| d.as_u64().expect("count"))
        .collect();
    assert!(
        done[0] < steps && done[1] >= short && done[1] < steps,
        "{done:?}"
    );
    server.shutdown().expect("clean shutdown");
}

#[test]
fn api_auth_is_basic_auth_on_sdapi_only() {
    let mut config = tiny_config();
    config.api_auth = vec![("alice".into(), "secret".into())];
    config.auth_token = Some("tok".into());
    let (server, base) = serve(config);
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let call = |auth: Option<String>| {
        let mut req = agent().get(format!("{base}/sdapi/v1/samplers"));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let mut r = req.call().expect("GET");
        let www = r
            .headers()
            .get("www-authenticate")
            .and_then(|h| h.to_str().ok())
            .map(str::to_string);
        (r.status().as_u16(), www, json_of(&mut r))
    };
    let (code, www, v) = call(None);
    assert_eq!((code, www.as_deref()), (401, Some("Basic")), "{v}");
    assert_eq!(v["detail"], "Not authenticated");
    let (code, _, v) = call(Some(format!("Basic {}", b64("alice:wrong"))));
    assert_eq!(code, 401);
    assert_eq!(v["detail"], "Incorrect username or password");
    assert_eq!(
        call(Some("Bearer tok".into())).0,
        401,
        "basic auth, not the token"
    );
    assert_eq!(call(Some(format!("Basic {}", b64("alice:secret")))).0, 200);
    // The other routes keep the token.
    let r = agent()
        .get(format!("{base}/v1/models"))
        .call()
        .expect("GET");
    assert_eq!(r.status(), 401);
    let r = agent()
        .get(format!("{base}/v1/models"))
        .header("Authorization", "Bearer tok")
        .call()
        .expect("GET");
    assert_eq!(r.status(), 200);
    server.shutdown().expect("clean shutdown");
}

/// The `webuiapi` package (PyPI), unchanged, from `.venv` (see `.ci/setup`), with basic
/// auth on: txt2img, options, samplers, progress during a job, interrupt.
#[test]
fn webuiapi_client() {
    let py = serve_common::venv_python("webuiapi");
    let mut config = tiny_config();
    config.api_auth = vec![("alice".into(), "secret".into())];
    let (server, _) = serve(config);
    let port = server.addr().port().to_string();
    let out = serve_common::run_python(
        &py,
        "tests/python/a1111_client.py",
        &[
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--user",
            "alice",
            "--password",
            "secret",
        ],
    );
    let summary: Value = serde_json::from_str(out.trim().lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("summary ({e}): {out}"));
    assert_eq!(summary["seeds"], json!([1234, 1235]), "{summary}");
    assert_eq!(summary["model"], "sd");
    assert!(
        summary["interrupted_after"]
            .as_u64()
            .is_some_and(|n| n < 400),
        "{summary}"
    );
    server.shutdown().expect("clean shutdown");
}

/// A client that goes away cancels its run: the worker stops between steps, progress is
/// idle again, and the metrics count the cancellation.
#[test]
fn a_client_that_goes_away_cancels_its_run() {
    let (server, base) = serve(tiny_config());
    let gone = serve_common::agent_with_timeout(Some(Duration::from_millis(1500)))
        .post(format!("{base}/sdapi/v1/txt2img"))
        .header("Content-Type", "application/json")
        .send(json!({"prompt": "a cat", "steps": 500, "width": 32, "height": 32}).to_string());
    assert!(gone.is_err(), "the client gave up before the answer");
    let t0 = Instant::now();
    loop {
        let (_, p) = get(&base, "/sdapi/v1/progress");
        if p["state"]["job_count"] == 0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the run goes on: {p}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let cancelled = server
        .metrics()
        .render()
        .lines()
        .find(|l| l.starts_with("wgsd_requests_cancelled_total{model_name=\"sd\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok());
    assert_eq!(cancelled, Some(1));
    // The worker is free again: the next call answers.
    let v = txt2img(
        &base,
        json!({"prompt": "a", "steps": 1, "width": 32, "height": 32}),
    );
    assert_eq!(images_of(&v).len(), 1);
    server.shutdown().expect("clean shutdown");
}

/// With the model's `batchSize` at 2, a `batch_size: 2` iteration is one batched UNet
/// pass per step (the worker's dynamic batching), its images still seeded `seed + i`.
#[test]
fn a_batch_is_one_unet_pass_per_step() {
    let mut config = tiny_config();
    config.default_settings.batch_size = 2;
    config.default_settings.max_batch_delay_ms = 2000;
    let outputs = tempfile::tempdir().expect("tmp");
    config.outputs_dir = outputs.path().to_path_buf();
    let (server, base) = serve(config);
    let before = server.metrics().unet_passes("sd");
    let v = txt2img(
        &base,
        json!({"prompt": "a", "seed": 40, "steps": 3, "width": 32, "height": 32, "batch_size": 2,
               "save_images": true}),
    );
    let images = images_of(&v);
    assert_eq!(images.len(), 2);
    let info = info_of(&v);
    assert_eq!(info["all_seeds"], json!([40, 41]));
    // save_images: both written to the outputs folder, as sent.
    let saved: Vec<&str> = info["saved"]
        .as_array()
        .expect("saved")
        .iter()
        .map(|n| n.as_str().expect("name"))
        .collect();
    assert_eq!(saved.len(), 2, "{info}");
    for (name, sent) in saved.iter().zip(&images) {
        let img = image::open(outputs.path().join(name))
            .expect("saved PNG")
            .to_rgb8();
        assert_eq!(img.into_raw(), sent.2, "{name}");
    }
    assert_eq!(
        server.metrics().unet_passes("sd") - before,
        3,
        "one pass per step for both"
    );
    server.shutdown().expect("clean shutdown");
}
