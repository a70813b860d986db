//! The management API, token auth and `wgsd serve` as a process (config file, signals),
//! over real HTTP on loopback with the bundled tiny model.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wgsd::gpu::{AdapterChoice, Gpu};
use wgsd::pipeline::{GenerateRequest, Pipeline, PipelineOptions};
use wgsd::serve::{ServeConfig, start};

mod serve_common;
use serve_common::{agent, nested_image, root};

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

/// A server config on three loopback ports with tiny default images.
fn config(store: &Path) -> ServeConfig {
    ServeConfig {
        model_store: store.to_path_buf(),
        models: vec![("sd".into(), root().join("weights/sd2-tiny.zip"))],
        inference_address: loopback(),
        management_address: loopback(),
        metrics_address: loopback(),
        default_steps: 2,
        default_width: 32,
        default_height: 24,
        ..ServeConfig::default()
    }
}

/// Status and parsed JSON body.
fn json_of(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Value) {
    let mut r = r.expect("request");
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().expect("body");
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, value)
}

/// Asserts TorchServe's error shape and returns the message.
fn assert_error(got: (u16, Value), code: u16, kind: &str) -> String {
    let (status, v) = got;
    assert_eq!(status, code, "{v}");
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v["type"], kind, "{v}");
    v["message"].as_str().expect("message").to_string()
}

/// A one-route HTTP server on loopback serving `bytes` at `/models/{name}` (the remote
/// the allowed-URL download fetches from). Returns its address.
fn file_server(bytes: Vec<u8>) -> SocketAddr {
    let listener = std::net::TcpListener::bind(loopback()).expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let app = axum::Router::new().route(
                "/models/{name}",
                axum::routing::get(move || {
                    let bytes = bytes.clone();
                    async move { bytes }
                }),
            );
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let _ = axum::serve(listener, app).await;
        });
    });
    addr
}

#[test]
fn management_api_lifecycle_and_refusals() {
    let store = tempfile::tempdir().expect("tempdir");
    let mar = root().join("tests/fixtures/sd2-tiny/sd2-tiny.mar");
    std::fs::copy(&mar, store.path().join("sd2-tiny.mar")).expect("copy .mar");
    // Escapes the store must refuse: a file beside it and a symlink pointing out.
    let outside = tempfile::tempdir().expect("tempdir");
    let outside_mar = outside.path().join("outside.mar");
    std::fs::copy(&mar, &outside_mar).expect("copy");
    #[cfg(unix)]
    std::os::unix::fs::symlink(&outside_mar, store.path().join("link.mar")).expect("symlink");

    let remote = file_server(std::fs::read(&mar).expect("read .mar"));
    let mut cfg = config(store.path());
    cfg.allowed_urls = vec![r"http://127\.0\.0\.1:\d+/models/.*".into()];
    cfg.queue_size = 7;
    let server = start(cfg).expect("server starts");
    let m = format!("http://{}", server.addrs().management);
    let inf = format!("http://{}", server.addrs().inference);
    let a = agent();

    // List and describe the model loaded at start-up.
    let (s, v) = json_of(a.get(format!("{m}/models")).call());
    assert_eq!(s, 200);
    let url = root().join("weights/sd2-tiny.zip").display().to_string();
    assert_eq!(v, json!({"models": [{"modelName": "sd", "modelUrl": url}]}));

    let (s, v) = json_of(a.get(format!("{m}/models/sd")).call());
    assert_eq!(s, 200);
    let d = &v.as_array().expect("describe is a list")[0];
    let keys: Vec<&str> = d
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    let mut want_keys = vec![
        "modelName",
        "modelVersion",
        "modelUrl",
        "runtime",
        "minWorkers",
        "maxWorkers",
        "batchSize",
        "maxBatchDelay",
        "loadedAtStartup",
        "workers",
        "jobQueueStatus",
        "responseTimeout",
    ];
    want_keys.sort();
    assert_eq!(keys, want_keys);
    assert_eq!(d["modelName"], "sd");
    assert_eq!(d["modelVersion"], "1.0");
    assert_eq!(
        (d["minWorkers"].clone(), d["maxWorkers"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(
        (d["batchSize"].clone(), d["maxBatchDelay"].clone()),
        (json!(1), json!(100))
    );
    assert_eq!(d["loadedAtStartup"], true);
    assert_eq!(d["responseTimeout"], 120);
    assert_eq!(
        d["jobQueueStatus"],
        json!({"remainingCapacity": 7, "pendingRequests": 0})
    );
    let w = &d["workers"][0];
    assert_eq!(w["status"], "READY");
    assert_eq!(w["pid"], std::process::id());
    assert_eq!(w["gpu"], true);
    assert!(w["memoryUsage"].as_u64().is_some(), "{w}");
    // The worker reports its GPU memory just after it is ready: it shows up shortly.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = json_of(a.get(format!("{m}/models/sd")).call());
        let bytes = v[0]["workers"][0]["memoryUsage"].as_u64().unwrap_or(0);
        if bytes > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "memoryUsage stays 0: {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let start_time = w["startTime"].as_str().expect("startTime");
    assert!(
        start_time.len() == 24 && start_time.ends_with('Z') && start_time.as_bytes()[10] == b'T',
        "{start_time}"
    );
    for path in ["sd/1.0", "sd/all"] {
        let (s, v2) = json_of(a.get(format!("{m}/models/{path}")).call());
        assert_eq!(s, 200);
        assert_eq!(v2[0]["modelName"], "sd", "{path}");
    }
    assert_error(
        json_of(a.get(format!("{m}/models/sd/2.0")).call()),
        404,
        "ModelVersionNotFoundException",
    );
    assert_error(
        json_of(a.get(format!("{m}/models/nope")).call()),
        404,
        "ModelNotFoundException",
    );

    // Register a second copy from the store (the .mar of the same model), predict on it.
    let (s, v) = json_of(
        a.post(format!(
            "{m}/models?url=sd2-tiny.mar&model_name=copy&initial_workers=1&synchronous=true&batch_size=2&max_batch_delay=20&response_timeout=60"
        ))
        .send_empty(),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v,
        json!({"status": "Model \"copy\" Version: 1.0 registered with 1 initial workers"})
    );
    let (_, v) = json_of(a.get(format!("{m}/models/copy")).call());
    assert_eq!(v[0]["modelUrl"], "sd2-tiny.mar");
    assert_eq!(v[0]["loadedAtStartup"], false);
    assert_eq!(
        (v[0]["batchSize"].clone(), v[0]["maxBatchDelay"].clone()),
        (json!(2), json!(20))
    );
    assert_eq!(v[0]["responseTimeout"], 60);

    let (s, img) = json_of(
        a.post(format!("{inf}/predictions/copy"))
            .header("Content-Type", "application/json")
            .send(r#"{"prompt": "a red apple", "seed": 11, "num_inference_steps": 3, "width": 32, "height": 24}"#),
    );
    assert_eq!(s, 200);
    let gpu = Gpu::new(&AdapterChoice::default()).expect("gpu");
    let pipe = Pipeline::load(&gpu, &mar, &PipelineOptions::default()).expect("pipeline");
    let want = pipe
        .generate(&GenerateRequest {
            seed: 11,
            steps: 3,
            width: 32,
            height: 24,
            ..GenerateRequest::new("a red apple")
        })
        .expect("generate");
    assert_eq!(
        nested_image(&img).2,
        want.images[0].data,
        "registered model's image"
    );

    // Same name again: 409. Pagination over the two models.
    let msg = assert_error(
        json_of(
            a.post(format!("{m}/models?url=sd2-tiny.mar&model_name=copy"))
                .send_empty(),
        ),
        409,
        "ConflictStatusException",
    );
    assert!(msg.contains("copy"), "{msg}");
    let (_, v) = json_of(a.get(format!("{m}/models?limit=1")).call());
    assert_eq!(v["nextPageToken"], "1");
    assert_eq!(v["models"][0]["modelName"], "copy");
    let (_, v) = json_of(
        a.get(format!("{m}/models?limit=1&next_page_token=1"))
            .call(),
    );
    assert_eq!(v, json!({"models": [{"modelName": "sd", "modelUrl": url}]}));

    // Scale: counts recorded and reported; async answers 202 as TorchServe does.
    let (s, v) = json_of(
        a.put(format!("{m}/models/copy?min_worker=3&synchronous=true"))
            .send_empty(),
    );
    assert_eq!(s, 200);
    let status = v["status"].as_str().expect("status");
    assert!(
        status.starts_with("Workers scaled to 3 for model: copy"),
        "{status}"
    );
    let (_, v) = json_of(a.get(format!("{m}/models/copy")).call());
    assert_eq!(
        (v[0]["minWorkers"].clone(), v[0]["maxWorkers"].clone()),
        (json!(3), json!(3))
    );
    let (s, v) = json_of(
        a.put(format!("{m}/models/copy/1.0?min_worker=0&max_worker=2"))
            .send_empty(),
    );
    assert_eq!(
        (s, v),
        (202, json!({"status": "Processing worker updates..."}))
    );
    let (_, v) = json_of(a.get(format!("{m}/models/copy")).call());
    assert_eq!(
        (v[0]["minWorkers"].clone(), v[0]["maxWorkers"].clone()),
        (json!(0), json!(2))
    );
    assert_error(
        json_of(
            a.put(format!("{m}/models/copy?min_worker=3&max_worker=1"))
                .send_empty(),
        ),
        400,
        "BadRequestException",
    );
    assert_error(
        json_of(
            a.put(format!("{m}/models/copy?min_worker=lots"))
                .send_empty(),
        ),
        400,
        "BadRequestException",
    );

    // Unregister: then 404 on both APIs.
    let (s, v) = json_of(a.delete(format!("{m}/models/copy")).call());
    assert_eq!(
        (s, v),
        (200, json!({"status": "Model \"copy\" unregistered"}))
    );
    assert_error(
        json_of(a.get(format!("{m}/models/copy")).call()),
        404,
        "ModelNotFoundException",
    );
    assert_error(
        json_of(a.post(format!("{inf}/predictions/copy")).send("x")),
        404,
        "ModelNotFoundException",
    );
    assert_error(
        json_of(a.delete(format!("{m}/models/copy")).call()),
        404,
        "ModelNotFoundException",
    );

    // Refusals: escapes, outside paths, missing files, disallowed URLs.
    let register = |url: &str| {
        json_of(
            a.post(format!("{m}/models"))
                .query("url", url)
                .query("model_name", "x")
                .send_empty(),
        )
    };
    let msg = assert_error(register("../outside.mar"), 400, "BadRequestException");
    assert!(msg.contains("Relative path is not allowed"), "{msg}");
    assert_error(
        register("sub/../../outside.mar"),
        400,
        "BadRequestException",
    );
    let outside_url = format!("file://{}", outside_mar.display());
    // file:// is not in this server's allowed_urls at all ...
    let msg = assert_error(register(&outside_url), 403, "ForbiddenException");
    assert!(msg.contains("does not match any allowed URL"), "{msg}");
    // ... and a plain absolute path outside the store is refused as outside.
    let msg = assert_error(
        register(&outside_mar.display().to_string()),
        403,
        "ForbiddenException",
    );
    assert!(msg.contains("outside the model store"), "{msg}");
    #[cfg(unix)]
    assert_error(register("link.mar"), 403, "ForbiddenException");
    assert_error(register("missing.mar"), 404, "ModelNotFoundException");
    // A file in the store that is no model: 400 naming it, nothing registered.
    std::fs::write(store.path().join("junk.mar"), b"not a zip").expect("write junk");
    let msg = assert_error(register("junk.mar"), 400, "BadRequestException");
    assert!(msg.contains("junk.mar"), "{msg}");
    assert_error(
        json_of(a.get(format!("{m}/models/x")).call()),
        404,
        "ModelNotFoundException",
    );
    let msg = assert_error(
        register(&format!("http://{remote}/elsewhere/sd.mar")),
        403,
        "ForbiddenException",
    );
    assert!(msg.contains("does not match any allowed URL"), "{msg}");
    assert_error(
        register("https://example.invalid/models/sd.mar"),
        403,
        "ForbiddenException",
    );
    assert!(!store.path().join("sd.mar").exists());
    assert_error(
        json_of(a.post(format!("{m}/models")).send_empty()),
        400,
        "BadRequestException",
    );

    // An allowed URL is downloaded into the store and registered under its file stem.
    let dl = format!("http://{remote}/models/downloaded.mar");
    let (s, v) = json_of(a.post(format!("{m}/models")).query("url", &dl).send_empty());
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["status"],
        "Model \"downloaded\" Version: 1.0 registered with 1 initial workers"
    );
    assert_eq!(
        std::fs::read(store.path().join("downloaded.mar")).expect("downloaded"),
        std::fs::read(&mar).expect("original")
    );
    let (_, v) = json_of(a.get(format!("{m}/models/downloaded")).call());
    assert_eq!(v[0]["workers"][0]["status"], "READY");
    // The file is there now: a second download is refused rather than overwriting.
    let (s, _) = json_of(
        a.post(format!("{m}/models"))
            .query("url", &dl)
            .query("model_name", "again")
            .send_empty(),
    );
    assert_eq!(s, 409);
    // The download cap: nothing is left behind when the archive is too large.
    let small = tempfile::tempdir().expect("tempdir");
    let err = wgsd::serve::download::fetch_limited(&dl, small.path(), 1000).expect_err("cap");
    assert_eq!(err.status().as_u16(), 400);
    assert_eq!(std::fs::read_dir(small.path()).expect("dir").count(), 0);

    let (s, v) = json_of(a.options(format!("{m}/")).call());
    assert_eq!((s, v["openapi"].clone()), (200, json!("3.0.1")));
    assert!(v["paths"]["/models/{model_name}"]["put"].is_object(), "{v}");

    let mut r = a.get(format!("{m}/nowhere")).call().expect("404");
    assert_eq!(r.status(), 404);
    let _ = r.body_mut().read_to_string();
    server.shutdown().expect("clean shutdown");
}

#[test]
fn auth_token_guards_management_and_inference() {
    let store = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(store.path());
    cfg.auth_token = Some("s3cret-token".into());
    let server = start(cfg).expect("server starts");
    let addrs = server.addrs();
    let (m, inf, met) = (
        format!("http://{}", addrs.management),
        format!("http://{}", addrs.inference),
        format!("http://{}", addrs.metrics),
    );
    let a = agent();
    let body = r#"{"prompt": "x", "seed": 1}"#;

    for header in [
        None,
        Some("Bearer wrong-token"),
        Some("s3cret-token"),
        Some("Basic s3cret-token"),
    ] {
        let mut req = a.get(format!("{m}/models"));
        let mut pred = a.post(format!("{inf}/predictions/sd"));
        if let Some(h) = header {
            req = req.header("Authorization", h);
            pred = pred.header("Authorization", h);
        }
        let r = req.call().expect("request");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let msg = assert_error(json_of(Ok(r)), 401, "InvalidKeyException");
        assert!(msg.contains("Token Authorization failed"), "{msg}");
        let r = pred.send(body).expect("request");
        assert!(r.headers().contains_key("x-request-id"));
        assert_error(json_of(Ok(r)), 401, "InvalidKeyException");
    }

    let (s, v) = json_of(
        a.get(format!("{m}/models"))
            .header("Authorization", "Bearer s3cret-token")
            .call(),
    );
    assert_eq!((s, v["models"][0]["modelName"].clone()), (200, json!("sd")));
    let (s, img) = json_of(
        a.post(format!("{inf}/predictions/sd"))
            .header("Authorization", "bearer s3cret-token")
            .send(body),
    );
    assert_eq!(s, 200);
    assert_eq!(nested_image(&img).2.len(), 32 * 24 * 3);

    // Health checks and metrics stay open.
    let (s, v) = json_of(a.get(format!("{inf}/ping")).call());
    assert_eq!((s, v), (200, json!({"status": "Healthy"})));
    let mut r = a.get(format!("{met}/metrics")).call().expect("metrics");
    assert_eq!(r.status(), 200);
    let _ = r.body_mut().read_to_string();
    server.shutdown().expect("clean shutdown");
}

/// Reads the server's stderr until it prints its three addresses; also returns the
/// lines before them.
fn wait_for_addresses(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
) -> (String, String, String, Vec<String>) {
    let (mut inf, mut mgmt, mut met) = (None, None, None);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while inf.is_none() || mgmt.is_none() || met.is_none() {
        assert!(Instant::now() < deadline, "the server did not start");
        let line = lines
            .next()
            .expect("the server exited before printing its addresses")
            .expect("stderr");
        let url = line.rsplit(' ').next().unwrap_or_default().to_string();
        seen.push(line.clone());
        if line.contains("inference API on") {
            inf = Some(url);
        } else if line.contains("management API on") {
            mgmt = Some(url);
        } else if line.contains("metrics API on") {
            met = Some(url);
        }
    }
    (
        inf.unwrap_or_default(),
        mgmt.unwrap_or_default(),
        met.unwrap_or_default(),
        seen,
    )
}

#[test]
fn cli_config_file_and_graceful_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let props = dir.path().join("config.properties");
    std::fs::write(
        &props,
        format!(
            "# as TorchServe writes it\n\
             inference_address=http://127.0.0.1:0\n\
             management_address=http://127.0.0.1:0\n\
             metrics_address=http://127.0.0.1:0\n\
             model_store={}\n\
             load_models=sd=sd2-tiny.zip\n\
             number_of_netty_threads=4\n\
             job_queue_size=10\n\
             default_response_timeout=77\n",
            root().join("weights").display()
        ),
    )
    .expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_wgsd"))
        .args(["serve", "--ts-config"])
        .arg(&props)
        .args([
            "--default-width",
            "32",
            "--default-height",
            "24",
            "--job-queue-size",
            "3",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wgsd serve");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let (inf, mgmt, _met, seen) = wait_for_addresses(&mut lines);
    assert!(
        seen.iter()
            .any(|l| l.contains("line 7: number_of_netty_threads") && l.contains("ignored")),
        "the unused key is reported: {seen:#?}"
    );
    // The rest of stderr, kept for the assertions below.
    let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());

    let a = agent();
    let (s, v) = json_of(a.get(format!("{mgmt}/models")).call());
    assert_eq!((s, v["models"][0]["modelName"].clone()), (200, json!("sd")));
    // The command line wins over the file (queue size), the file over the defaults.
    let (_, v) = json_of(a.get(format!("{mgmt}/models/sd")).call());
    assert_eq!(v[0]["jobQueueStatus"]["remainingCapacity"], 3);
    assert_eq!(v[0]["responseTimeout"], 77);

    // A long request, in flight when the signal comes (long enough on a fast adapter too).
    let body = r#"{"prompt": "a slow lighthouse", "seed": 5, "num_inference_steps": 250, "width": 32, "height": 32}"#;
    let url = format!("{inf}/predictions/sd");
    let in_flight = std::thread::spawn(move || json_of(agent().post(url).send(body)));
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        !in_flight.is_finished(),
        "the request should still be running"
    );
    let pid = child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    std::thread::sleep(Duration::from_millis(300));

    // New work is refused (the listener is closed, or 503 on a live connection).
    match agent()
        .post(format!("{inf}/predictions/sd"))
        .send(r#"{"prompt": "late"}"#)
    {
        Err(_) => {}
        Ok(r) => {
            assert_error(json_of(Ok(r)), 503, "ServiceUnavailableException");
        }
    }
    assert!(
        !in_flight.is_finished(),
        "shutdown must wait for the in-flight request"
    );

    let (s, img) = in_flight.join().expect("client thread");
    assert_eq!(s, 200, "the in-flight request gets its image: {img}");
    let gpu = Gpu::new(&AdapterChoice::default()).expect("gpu");
    let pipe = Pipeline::load(
        &gpu,
        &root().join("weights/sd2-tiny.zip"),
        &PipelineOptions::default(),
    )
    .expect("pipeline");
    let want = pipe
        .generate(&GenerateRequest {
            seed: 5,
            steps: 250,
            width: 32,
            height: 32,
            ..GenerateRequest::new("a slow lighthouse")
        })
        .expect("generate");
    assert_eq!(nested_image(&img).2, want.images[0].data);

    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let rest = rest.join().expect("stderr reader");
    assert!(
        status.success(),
        "exit status {status:?}; stderr: {rest:#?}"
    );
    assert!(
        rest.iter().any(|l| l.contains("shutting down")),
        "{rest:#?}"
    );
}
