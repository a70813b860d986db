//! The KServe manifests in `deploy/kserve/` (issue 16): they parse, name each other
//! (runtime, model format), ask for one GPU per replica and autoscale on concurrency at
//! the runtime's batch size; the container's port is the one `--http_port` opens and the
//! probes hit `/v2/health/*` there. Then `wgsd serve` runs with exactly the manifest's
//! args (the model dir, the ports and `{{.Name}}` filled in for this machine) against a
//! temporary model dir holding the tiny model, and answers as KServe expects.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_yaml::Value;

fn load(path: &str) -> Value {
    let path = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect(&path);
    serde_yaml::from_str(&text).expect(&path)
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("expected a string or number, got {other:?}"),
    }
}

/// The value of `--flag=VALUE` in `args`.
fn flag(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .find_map(|a| a.strip_prefix(&format!("{flag}=")).map(str::to_string))
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn manifests_agree_with_the_cli_and_start_wgsd() {
    let rt = load("deploy/kserve/servingruntime.yaml");
    let isvc = load("deploy/kserve/inferenceservice.yaml");
    assert_eq!(text(&rt["apiVersion"]), "serving.kserve.io/v1alpha1");
    assert_eq!(text(&rt["kind"]), "ServingRuntime");
    assert_eq!(text(&isvc["apiVersion"]), "serving.kserve.io/v1beta1");
    assert_eq!(text(&isvc["kind"]), "InferenceService");

    let predictor = &isvc["spec"]["predictor"];
    let model = &predictor["model"];
    assert_eq!(text(&model["runtime"]), text(&rt["metadata"]["name"]));
    let format = text(&model["modelFormat"]["name"]);
    let formats = rt["spec"]["supportedModelFormats"]
        .as_sequence()
        .expect("supportedModelFormats");
    assert!(
        formats.iter().any(|f| text(&f["name"]) == format),
        "the runtime does not list the model format {format}"
    );
    assert!(text(&model["storageUri"]).contains("://"));
    assert_eq!(text(&model["resources"]["limits"]["nvidia.com/gpu"]), "1");
    assert_eq!(text(&predictor["scaleMetric"]), "concurrency");

    let containers = rt["spec"]["containers"].as_sequence().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(text(&c["name"]), "kserve-container");
    let args: Vec<String> = c["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(text)
        .collect();
    let port = text(&c["ports"][0]["containerPort"]);
    assert_eq!(flag(&args, "--http_port").as_deref(), Some(port.as_str()));
    // gRPC on the h2c port (KServe's 8081), the management API out of its way.
    assert_eq!(text(&c["ports"][1]["name"]), "h2c");
    let grpc_port = text(&c["ports"][1]["containerPort"]);
    assert_eq!(grpc_port, "8081");
    assert_eq!(
        flag(&args, "--grpc_port").as_deref(),
        Some(grpc_port.as_str())
    );
    let management = flag(&args, "--management-address").expect("--management-address");
    assert!(
        !management.ends_with(&format!(":{grpc_port}")),
        "{management}"
    );
    assert_eq!(flag(&args, "--model_dir").as_deref(), Some("/mnt/models"));
    assert_eq!(flag(&args, "--model_name").as_deref(), Some("{{.Name}}"));
    assert_eq!(
        flag(&args, "--batch-size"),
        Some(text(&predictor["scaleTarget"])),
        "scaleTarget should be the batch size: a replica is full when its batch is"
    );
    for (probe, path) in [
        ("readinessProbe", "/v2/health/ready"),
        ("livenessProbe", "/v2/health/live"),
    ] {
        assert_eq!(text(&c[probe]["httpGet"]["path"]), path);
        assert_eq!(text(&c[probe]["httpGet"]["port"]), port);
    }

    // Start wgsd as the manifest says, on this machine's free ports.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(
        format!("{}/weights/sd2-tiny.zip", env!("CARGO_MANIFEST_DIR")),
        dir.path().join("sd2-tiny.zip"),
    )
    .expect("copy the tiny model");
    let (http, grpc) = (free_port(), free_port());
    let local: Vec<String> = args
        .iter()
        .map(|a| {
            let (name, _) = a.split_once('=').unwrap_or((a, ""));
            match name {
                "--model_name" => "--model_name=sd".to_string(),
                "--model_dir" => format!("--model_dir={}", dir.path().display()),
                "--http_port" => format!("--http_port={http}"),
                "--grpc_port" => format!("--grpc_port={grpc}"),
                "--management-address" | "--metrics-address" => {
                    format!("{name}=127.0.0.1:{}", free_port())
                }
                _ => a.clone(),
            }
        })
        .collect();
    let _server = Server(
        Command::new(env!("CARGO_BIN_EXE_wgsd"))
            .arg("serve")
            .args(&local)
            // Test-sized requests and warm-up; not in the manifest.
            .args([
                "--default-width=32",
                "--default-height=24",
                "--default-steps=2",
            ])
            .env(
                "WGSD_CACHE_DIR",
                std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("kserve-cache"),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting wgsd serve"),
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let base = format!("http://127.0.0.1:{http}");
    let t = Instant::now();
    loop {
        if let Ok(r) = agent.get(format!("{base}/v2/health/live")).call()
            && r.status() == 200
        {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(120), "wgsd never came up");
        std::thread::sleep(Duration::from_millis(200));
    }
    for path in ["/v2/health/ready", "/v2/models/sd/ready"] {
        let r = agent.get(format!("{base}{path}")).call().expect(path);
        assert_eq!(r.status(), 200, "{path}");
    }
    let r = agent
        .post(format!("{base}/v2/models/sd/infer"))
        .header("Content-Type", "application/json")
        .send(
            r#"{"inputs": [{"name": "prompt", "shape": [1], "datatype": "BYTES", "data": ["a red circle"]}]}"#,
        )
        .expect("infer");
    assert_eq!(r.status(), 200);
    // The gRPC port is open (tests/serve_triton.rs speaks gRPC to it).
    std::net::TcpStream::connect(("127.0.0.1", grpc)).expect("the --grpc_port listens");
}
