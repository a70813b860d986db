//! The studio over real HTTP on loopback with the bundled tiny model: the page, the jobs
//! API with its event stream and previews, the outputs folder and its history (across a
//! restart), cancellation, bad input; `wgsd studio` itself; and the A1111 `parameters`
//! chunk of every PNG wgsd writes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use wgsd::png_info;
use wgsd::serve::{ServeConfig, start};

mod serve_common;
use serve_common::{agent, root, tiny_config};

type Resp = ureq::http::Response<ureq::Body>;

fn json_of(resp: &mut Resp) -> Value {
    let text = resp.body_mut().read_to_string().expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn get(base: &str, path: &str) -> Resp {
    agent().get(format!("{base}{path}")).call().expect("GET")
}

fn get_json(base: &str, path: &str) -> (u16, Value) {
    let mut r = get(base, path);
    (r.status().as_u16(), json_of(&mut r))
}

fn post_job(base: &str, body: Value) -> (u16, Value) {
    let mut r = agent()
        .post(format!("{base}/api/v1/jobs"))
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .expect("POST job");
    (r.status().as_u16(), json_of(&mut r))
}

fn create_job(base: &str, body: Value) -> String {
    let (code, v) = post_job(base, body);
    assert_eq!(code, 202, "{v}");
    v["id"].as_str().expect("id").to_string()
}

/// Polls the job until `done(status)`, at most a minute.
fn wait_for(base: &str, id: &str, done: impl Fn(&str) -> bool) -> Value {
    let t0 = Instant::now();
    loop {
        let (code, v) = get_json(base, &format!("/api/v1/jobs/{id}"));
        assert_eq!(code, 200, "{v}");
        if done(v["status"].as_str().expect("status")) {
            return v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "job {id} stuck: {v}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_error(code: u16, v: &Value, want_code: u16, kind: &str) {
    assert_eq!(code, want_code, "{v}");
    assert_eq!(v["code"], want_code, "{v}");
    assert_eq!(v["type"], kind, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
}

/// `(event, data)` of a whole server-sent event stream (it ends after the final event).
fn read_events(base: &str, id: &str) -> Vec<(String, Value)> {
    let r = get(base, &format!("/api/v1/jobs/{id}/events"));
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let reader = BufReader::new(r.into_body().into_reader());
    let mut events = Vec::new();
    let mut name = String::from("message");
    for line in reader.lines() {
        let line = line.expect("event stream");
        if let Some(n) = line.strip_prefix("event:") {
            name = n.trim().to_string();
        } else if let Some(d) = line.strip_prefix("data:") {
            let data = serde_json::from_str(d.trim()).expect("event data is JSON");
            events.push((std::mem::replace(&mut name, "message".into()), data));
        }
    }
    events
}

/// The PNG behind a `data:image/png;base64,` URL, decoded: (width, height).
fn preview_size(url: &str) -> (u32, u32) {
    let b64 = url
        .strip_prefix("data:image/png;base64,")
        .expect("a PNG data URL");
    let png = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64");
    image::load_from_memory(&png)
        .expect("preview decodes")
        .to_rgb8()
        .dimensions()
}

fn pngs_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn studio_config(outputs: &Path) -> ServeConfig {
    ServeConfig {
        outputs_dir: outputs.to_path_buf(),
        ..tiny_config()
    }
}

#[test]
fn studio_page_jobs_history_and_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let outputs = tmp.path().join("outputs");
    let server = start(studio_config(&outputs)).expect("server starts");
    let base = format!("http://{}", server.addr());

    // The page and its assets.
    for (path, ty, needle) in [
        ("/", "text/html; charset=utf-8", "<title>"),
        ("/studio.js", "text/javascript; charset=utf-8", ""),
        ("/studio.css", "text/css; charset=utf-8", ""),
        (
            "/studio_image.js",
            "text/javascript; charset=utf-8",
            "studioImage",
        ),
    ] {
        let mut r = get(&base, path);
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], ty, "{path}");
        let body = r.body_mut().read_to_string().expect("body");
        assert!(!body.is_empty() && body.contains(needle), "{path}");
    }

    // Options.
    let (code, opts) = get_json(&base, "/api/v1/options");
    assert_eq!(code, 200);
    assert_eq!(opts["default_model"], "sd");
    assert_eq!(opts["models"][0]["name"], "sd");
    assert!(
        opts["loras"].is_array(),
        "the studio lists the loras folder: {opts}"
    );
    assert_eq!(opts["models"][0]["default_width"], 32);
    assert_eq!(opts["models"][0]["default_scheduler"], "ddim");
    assert_eq!(
        opts["limits"],
        json!({"max_steps": 500, "max_size": 2048, "max_images": 16})
    );
    let names: Vec<&str> = opts["schedulers"]
        .as_array()
        .expect("schedulers")
        .iter()
        .map(|s| s["name"].as_str().expect("name"))
        .collect();
    let all: Vec<&str> = wgsd::schedulers::Sampler::all().map(|s| s.name()).collect();
    assert_eq!(names, all);
    assert!(names.contains(&"dpm++2m_karras") && names.contains(&"unipc"));

    // A long job holds the worker; the watched job waits behind it (different steps, so
    // the two never share a batch), then the long one is cancelled while it runs.
    let long = create_job(
        &base,
        json!({"prompt": "a long one", "num_inference_steps": 500, "width": 64, "height": 64, "seed": 1}),
    );
    let watched = create_job(
        &base,
        json!({"prompt": "a red circle\non white", "negative_prompt": "blurry",
               "num_inference_steps": 6, "width": 64, "height": 64, "seed": 42,
               "scheduler": "euler_a", "model": "sd"}),
    );
    let events = {
        let base = base.clone();
        let id = watched.clone();
        std::thread::spawn(move || read_events(&base, &id))
    };
    wait_for(&base, &long, |s| s == "running");
    // A queued job cancelled before it starts never runs.
    let queued = create_job(
        &base,
        json!({"prompt": "never", "num_inference_steps": 7, "width": 64, "height": 64}),
    );
    let mut r = agent()
        .delete(format!("{base}/api/v1/jobs/{queued}"))
        .call()
        .expect("DELETE");
    assert_eq!(r.status(), 200);
    let v = json_of(&mut r);
    assert_eq!(
        (v["status"].as_str(), v["step"].as_u64()),
        (Some("cancelled"), Some(0))
    );
    let mut r = agent()
        .delete(format!("{base}/api/v1/jobs/{long}"))
        .call()
        .expect("DELETE");
    assert_eq!(r.status(), 200);
    let cancelled = json_of(&mut r);
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    let events = events.join().expect("event reader");

    // Progress with previews (8x8: the latents of 64x64), then done.
    let progress: Vec<&Value> = events
        .iter()
        .filter(|(n, _)| n == "progress")
        .map(|(_, d)| d)
        .collect();
    let with_preview: Vec<&&Value> = progress
        .iter()
        .filter(|d| d["preview"].is_string())
        .collect();
    assert!(!with_preview.is_empty(), "no progress preview: {events:?}");
    for d in &with_preview {
        assert_eq!(preview_size(d["preview"].as_str().expect("url")), (8, 8));
        assert_eq!(d["steps"], 6);
        assert!(d["eta_s"].is_number() && d["elapsed_s"].is_number(), "{d}");
    }
    let (last, done) = events.last().expect("events");
    assert_eq!(last, "done", "{events:?}");
    assert_eq!(done["status"], "done");
    assert_eq!(done["params"]["seed"], 42);
    assert_eq!(done["params"]["scheduler"], "euler_a");
    assert_eq!(
        done["params"]["prompt_syntax"], "plain",
        "the jobs API's default"
    );
    let image_url = done["images"][0]["url"]
        .as_str()
        .expect("image url")
        .to_string();
    let image_name = done["images"][0]["name"]
        .as_str()
        .expect("name")
        .to_string();
    assert_eq!(image_name, "00000-42.png");

    let (_, v) = get_json(&base, &format!("/api/v1/jobs/{queued}"));
    assert_eq!(
        (v["status"].as_str(), v["step"].as_u64()),
        (Some("cancelled"), Some(0)),
        "{v}"
    );
    // The cancelled job wrote nothing and stays cancelled.
    let v = wait_for(&base, &long, |s| s != "running");
    assert_eq!(v["status"], "cancelled");
    assert_eq!(v["images"], json!([]));
    assert_eq!(pngs_in(&outputs), std::slice::from_ref(&image_name));
    // A finished job's stream gives its final event at once.
    let again = read_events(&base, &watched);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].0, "done");

    // The image, with its parameters.
    let mut r = get(&base, &image_url);
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    let png = r.body_mut().read_to_vec().expect("png");
    let img = image::load_from_memory(&png).expect("decodes").to_rgb8();
    assert_eq!(img.dimensions(), (64, 64));
    let text = png_info::read_parameters(&png)
        .expect("readable")
        .expect("parameters chunk");
    let p = png_info::parse(&text);
    assert_eq!(p.prompt, "a red circle\non white");
    assert_eq!(p.negative_prompt, "blurry");
    assert_eq!((p.seed, p.steps), (Some(42), Some(6)));
    assert_eq!(p.sampler.as_deref(), Some("Euler a"));
    assert_eq!((p.width, p.height), (Some(64), Some(64)));
    assert_eq!(p.model.as_deref(), Some("sd"));
    assert_eq!(p.model_hash.as_ref().map(String::len), Some(10));
    let r = agent()
        .get(format!("{base}{image_url}?download=1"))
        .call()
        .expect("download");
    assert_eq!(
        r.headers()["content-disposition"],
        "attachment; filename=\"00000-42.png\""
    );

    // A second job: history lists it first.
    let third = create_job(
        &base,
        json!({"prompt": "second", "num_inference_steps": 2, "seed": -1}),
    );
    let v = wait_for(&base, &third, |s| s == "done");
    let seed = v["params"]["seed"]
        .as_u64()
        .expect("the chosen seed is reported");
    let (code, h) = get_json(&base, "/api/v1/history?limit=10");
    assert_eq!(code, 200);
    assert_eq!(h["total"], 2);
    assert_eq!(h["items"][0]["name"], format!("00001-{seed}.png"));
    assert_eq!(h["items"][0]["params"]["width"], 32, "the default size");
    assert_eq!(h["items"][1]["name"], image_name);
    assert_eq!(h["items"][1]["parameters"], text);
    assert_eq!(h["items"][1]["params"]["prompt"], "a red circle\non white");
    assert!(
        h["items"][1]["created"]
            .as_u64()
            .is_some_and(|t| t > 1_600_000_000)
    );
    let (_, page) = get_json(&base, "/api/v1/history?limit=1&offset=1");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["items"][0]["name"], image_name);

    // PNG info of an uploaded PNG.
    let mut r = agent()
        .post(format!("{base}/api/v1/png-info"))
        .header("Content-Type", "image/png")
        .send(&png[..])
        .expect("png-info");
    assert_eq!(r.status(), 200);
    let info = json_of(&mut r);
    assert_eq!(info["parameters"], text);
    assert_eq!(info["params"]["seed"], 42);
    assert_eq!(info["params"]["scheduler"], "euler_a");

    // The PNG reply of /predictions carries the chunk too.
    let mut r = agent()
        .post(format!("{base}/predictions/sd?format=png"))
        .header("Content-Type", "application/json")
        .send(r#"{"prompt": "a png reply", "seed": 9, "num_inference_steps": 2}"#)
        .expect("predict png");
    assert_eq!(r.status(), 200);
    let reply = r.body_mut().read_to_vec().expect("png");
    let p = png_info::parse(
        &png_info::read_parameters(&reply)
            .expect("png")
            .expect("chunk"),
    );
    assert_eq!(
        (p.prompt.as_str(), p.seed, p.steps),
        ("a png reply", Some(9), Some(2))
    );

    // Bad input, in TorchServe's error shape.
    let (code, v) = post_job(&base, json!({"prompt": "x", "model": "nope"}));
    assert_error(code, &v, 404, "ModelNotFoundException");
    let (code, v) = post_job(&base, json!({"prompt": "x", "num_inference_steps": 0}));
    assert_error(code, &v, 400, "BadRequestException");
    let (code, v) = post_job(&base, json!({"prompt": "x", "width": 63}));
    assert_error(code, &v, 400, "BadRequestException");
    let (code, v) = post_job(&base, json!({"prompt": "x", "seed": "soon"}));
    assert_error(code, &v, 400, "BadRequestException");
    let mut r = agent()
        .post(format!("{base}/api/v1/jobs"))
        .header("Content-Type", "application/json")
        .send("{not json")
        .expect("POST");
    assert_error(
        r.status().as_u16(),
        &json_of(&mut r),
        400,
        "BadRequestException",
    );
    let (code, v) = get_json(&base, "/api/v1/jobs/doesnotexist");
    assert_error(code, &v, 404, "ResourceNotFoundException");
    let (code, v) = get_json(&base, "/api/v1/jobs/doesnotexist/events");
    assert_error(code, &v, 404, "ResourceNotFoundException");
    let mut r = agent()
        .delete(format!("{base}/api/v1/jobs/doesnotexist"))
        .call()
        .expect("DELETE");
    assert_error(
        r.status().as_u16(),
        &json_of(&mut r),
        404,
        "ResourceNotFoundException",
    );
    let (code, v) = get_json(&base, "/api/v1/images/..%2F..%2Fsecret.png");
    assert_error(code, &v, 400, "BadRequestException");
    let (code, v) = get_json(&base, "/api/v1/images/..png");
    assert_error(code, &v, 400, "BadRequestException");
    let (code, v) = get_json(&base, "/api/v1/images/99999-1.png");
    assert_error(code, &v, 404, "ResourceNotFoundException");
    let mut r = agent()
        .delete(format!("{base}/api/v1/options"))
        .call()
        .expect("DELETE");
    assert_error(
        r.status().as_u16(),
        &json_of(&mut r),
        405,
        "MethodNotAllowedException",
    );
    let (code, v) = get_json(&base, "/api/v1/nothing-here");
    assert_error(code, &v, 404, "ResourceNotFoundException");
    let (code, v) = get_json(&base, "/api/v1/history?limit=abc");
    assert_error(code, &v, 400, "BadRequestException");
    let mut r = agent()
        .post(format!("{base}/api/v1/png-info"))
        .send("GIF89a, not a PNG")
        .expect("png-info");
    assert_error(
        r.status().as_u16(),
        &json_of(&mut r),
        400,
        "BadRequestException",
    );
    drop(server);

    // A restart on the same folder (with token auth this time): the history is still
    // there; the page stays open without the token, the API does not.
    let config = ServeConfig {
        auth_token: Some("s3cret".into()),
        ..studio_config(&outputs)
    };
    let server = start(config).expect("server restarts");
    let base = format!("http://{}", server.addr());
    assert_eq!(get(&base, "/").status(), 200);
    assert_eq!(get(&base, "/studio.js").status(), 200);
    let (code, v) = get_json(&base, "/api/v1/history");
    assert_error(code, &v, 401, "InvalidKeyException");
    let mut r = agent()
        .get(format!("{base}/api/v1/history"))
        .header("Authorization", "Bearer s3cret")
        .call()
        .expect("history");
    let h = json_of(&mut r);
    assert_eq!(h["total"], 2, "{h}");
    assert_eq!(h["items"][0]["name"], format!("00001-{seed}.png"));
    assert_eq!(h["items"][1]["name"], image_name);
    assert_eq!(h["items"][1]["params"]["seed"], 42);
}

/// A job of n images runs seeds seed, seed + 1, ... (A1111's numbering): each image is
/// written with its own seed and is the image a one-image job with that seed makes.
#[test]
fn studio_multi_image_jobs_give_each_image_its_seed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let outputs = tmp.path().join("outputs");
    let server = start(studio_config(&outputs)).expect("server starts");
    let base = format!("http://{}", server.addr());
    let pair = create_job(
        &base,
        json!({"prompt": "two of them", "num_images": 2, "seed": 5, "num_inference_steps": 3}),
    );
    let v = wait_for(&base, &pair, |s| s == "done" || s == "failed");
    assert_eq!(v["status"], "done", "{v}");
    let names: Vec<&str> = v["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|i| i["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["00000-5.png", "00001-6.png"]);
    let single = create_job(
        &base,
        json!({"prompt": "two of them", "seed": 6, "num_inference_steps": 3}),
    );
    let w = wait_for(&base, &single, |s| s == "done" || s == "failed");
    assert_eq!(w["images"][0]["name"], "00002-6.png", "{w}");
    let pixels = |name: &str| {
        let png = std::fs::read(outputs.join(name)).expect("png");
        let seed = png_info::parse(
            &png_info::read_parameters(&png)
                .expect("png")
                .expect("chunk"),
        )
        .seed;
        (
            image::load_from_memory(&png)
                .expect("decodes")
                .to_rgb8()
                .into_raw(),
            seed,
        )
    };
    let (second, s2) = pixels("00001-6.png");
    let (alone, s3) = pixels("00002-6.png");
    assert_eq!((s2, s3), (Some(6), Some(6)));
    assert_eq!(
        second, alone,
        "the second image reproduces from its own seed"
    );
    assert_ne!(pixels("00000-5.png").0, second);
}

/// A free loopback port (bound, then let go).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn wgsd_command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wgsd"));
    c.env(
        "WGSD_CACHE_DIR",
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("studio-model-cache"),
    );
    c
}

#[test]
fn studio_binary_starts_and_prints_the_url() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut child = wgsd_command()
        .args(["studio", "--port", &port.to_string(), "--model"])
        .arg(root().join("weights/sd2-tiny.zip"))
        .arg("--outputs")
        .arg(tmp.path().join("out"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("running wgsd studio");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("a line on stdout");
    let url = format!("http://127.0.0.1:{port}/");
    let result = std::panic::catch_unwind(|| {
        assert_eq!(line.trim(), format!("wgsd studio: open {url}"));
        let base = url.trim_end_matches('/');
        let r = get(base, "/");
        assert_eq!(r.status(), 200);
        // Desktop defaults: the model's native size (8 x 8 latents x 8), 20 steps.
        let (code, opts) = get_json(base, "/api/v1/options");
        assert_eq!(code, 200);
        assert_eq!(opts["default_model"], "sd2-tiny");
        assert_eq!(opts["defaults"]["width"], 64);
        assert_eq!(opts["defaults"]["steps"], 20);
        assert_eq!(opts["defaults"]["guidance_scale"], 7.5);
    });
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().expect("wait");
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    assert!(
        status.success(),
        "studio exits cleanly on SIGTERM: {status}"
    );

    // No model given and none bundled where it runs: a clear error.
    let out = wgsd_command()
        .args(["studio", "--port", &free_port().to_string()])
        .current_dir(tmp.path())
        .output()
        .expect("running wgsd studio");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--model"), "{stderr}");
}

#[test]
fn cli_generate_png_has_parameters() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let model = root().join("weights/sd2-tiny.zip");
    let png = tmp.path().join("out.png");
    let out = wgsd_command()
        .args(["generate", "--model"])
        .arg(&model)
        .args([
            "--width",
            "32",
            "--height",
            "32",
            "--steps",
            "2",
            "--seed",
            "5",
            "--negative-prompt",
            "dull",
            "-o",
        ])
        .arg(&png)
        .arg("a cli prompt")
        .output()
        .expect("running wgsd");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&png).expect("png written");
    let text = png_info::read_parameters(&bytes)
        .expect("a PNG")
        .expect("parameters chunk");
    let p = png_info::parse(&text);
    assert_eq!(p.prompt, "a cli prompt");
    assert_eq!(p.negative_prompt, "dull");
    assert_eq!((p.steps, p.seed), (Some(2), Some(5)));
    assert_eq!((p.width, p.height), (Some(32), Some(32)));
    assert_eq!(p.sampler.as_deref(), Some("DDIM"));
    assert_eq!(p.model.as_deref(), Some("sd2-tiny"));
    let sha = wgsd::loader::archive::sha256_file(&model).expect("hash");
    assert_eq!(p.model_hash.as_deref(), Some(&sha[..10]));
}
