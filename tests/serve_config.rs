//! `--ts-config`: TorchServe's config.properties mapped onto `ServeConfig`.

use std::path::PathBuf;

use wgsd::pipeline::VaeTiling;
use wgsd::serve::ts_config::{TsConfig, TsConfigError, parse_address};
use wgsd::serve::{ModelSettings, ServeConfig};

/// A config.properties as a TorchServe Stable Diffusion deployment writes it (the
/// snapshot line is what TorchServe itself saves), with Java syntax's corners: `:`
/// separators, `!` comments, a continued line and escapes.
const TORCHSERVE_CONFIG: &str = r#"# TorchServe config for the diffusers handler
inference_address=http://0.0.0.0:8080
management_address=http://127.0.0.1:8081
metrics_address: http://localhost:8082
! number of netty threads is a TorchServe-only knob
number_of_netty_threads=32
job_queue_size=1000
model_store=/home/model-server/model-store
install_py_dep_per_model=true
max_request_size=65535000
max_response_size = 655350000
default_response_timeout=300
default_workers_per_model=2
allowed_urls=https://s3.amazonaws.com/.*,\
    http://127\\.0\\.0\\.1:\\d+/models/.*
auth_token=s3cr\u0065t
gpu_memory_limit=2048
enable_metrics_api=true
some_unknown_key=1
model_snapshot={"name":"startup.cfg","modelCount":1,"models":{"stable-diffusion":{"1.0":{"defaultVersion":true,"marName":"stable-diffusion.mar","minWorkers":1,"maxWorkers":1,"batchSize":4,"maxBatchDelay":5000,"responseTimeout":600}},"sd-fast":{"1.0":{"marName":"sd-fast.mar","batchSize":2}}}}
"#;

#[test]
fn torchserve_config_properties_applies() {
    let ts = TsConfig::parse(TORCHSERVE_CONFIG.as_bytes()).expect("parses");
    let mut config = ServeConfig::default();
    ts.apply(&mut config);

    assert_eq!(config.inference_address.to_string(), "0.0.0.0:8080");
    assert_eq!(config.management_address.to_string(), "127.0.0.1:8081");
    assert_eq!(config.metrics_address.to_string(), "127.0.0.1:8082");
    assert_eq!(
        config.model_store,
        PathBuf::from("/home/model-server/model-store")
    );
    assert_eq!(config.queue_size, 1000);
    assert_eq!(config.max_request_size, 65_535_000);
    assert_eq!(config.max_response_size, 655_350_000);
    assert_eq!(config.default_settings.response_timeout_s, 300);
    assert_eq!(config.default_settings.min_workers, 2);
    assert_eq!(ts.default_workers_per_model, Some(2));
    // The continued line joins, and `\\` is one backslash in the regex.
    assert_eq!(
        config.allowed_urls,
        vec![
            "https://s3.amazonaws.com/.*".to_string(),
            r"http://127\.0\.0\.1:\d+/models/.*".to_string(),
        ]
    );
    assert_eq!(config.auth_token.as_deref(), Some("s3cret"));
    assert_eq!(config.gpu_memory_limit, Some(2048 << 20));

    // model_snapshot: per-model settings; what it leaves out comes from the defaults
    // (default_response_timeout applies to sd-fast).
    assert_eq!(
        config.model_settings["stable-diffusion"],
        ModelSettings {
            batch_size: 4,
            max_batch_delay_ms: 5000,
            response_timeout_s: 600,
            min_workers: 1,
            max_workers: 1,
            precision: None,
            vae_tiling: VaeTiling::Auto,
        }
    );
    assert_eq!(
        config.model_settings["sd-fast"],
        ModelSettings {
            batch_size: 2,
            max_batch_delay_ms: 100,
            response_timeout_s: 300,
            min_workers: 2,
            max_workers: 2,
            precision: None,
            vae_tiling: VaeTiling::Auto,
        }
    );
    assert_eq!(
        ts.model_specs(),
        Some(vec![
            "sd-fast=sd-fast.mar".to_string(),
            "stable-diffusion=stable-diffusion.mar".to_string(),
        ])
    );

    // Keys wgsd does not read are reported with their line, not fatal.
    let messages = ts.unused_key_messages();
    assert_eq!(messages.len(), 4, "{messages:#?}");
    assert!(messages[0].contains("line 6: number_of_netty_threads"));
    assert!(messages[1].contains("line 9: install_py_dep_per_model"));
    assert!(messages[2].contains("enable_metrics_api") && messages[2].contains("TorchServe key"));
    assert!(messages[3].contains("some_unknown_key") && messages[3].contains("unknown key"));
}

#[test]
fn load_models_is_used_without_a_snapshot() {
    let ts = TsConfig::parse(b"load_models=sd=sd2-tiny.zip, other.mar\n").expect("parses");
    assert_eq!(
        ts.model_specs(),
        Some(vec!["sd=sd2-tiny.zip".to_string(), "other.mar".to_string()])
    );
    let ts = TsConfig::parse(b"load_models=all\n").expect("parses");
    assert_eq!(ts.model_specs(), Some(vec!["all".to_string()]));
    let ts = TsConfig::parse(b"# nothing\n").expect("parses");
    assert_eq!(ts.model_specs(), None);
}

#[test]
fn newer_models_key_sets_per_model_parameters() {
    let ts = TsConfig::parse(
        br#"models={"sd": {"1.0": {"batchSize": 8, "maxBatchDelay": 50, "responseTimeout": 30}}}"#,
    )
    .expect("parses");
    let mut config = ServeConfig::default();
    ts.apply(&mut config);
    let s = config.settings_for("sd");
    assert_eq!(
        (s.batch_size, s.max_batch_delay_ms, s.response_timeout_s),
        (8, 50, 30)
    );
    assert_eq!(ts.model_specs(), None, "`models` loads nothing by itself");
}

fn value_error(text: &str) -> (usize, String, String) {
    match TsConfig::parse(text.as_bytes()) {
        Err(TsConfigError::Value { line, key, message }) => (line, key, message),
        other => panic!("expected a value error for {text:?}, got {other:?}"),
    }
}

#[test]
fn bad_values_name_key_and_line() {
    let (line, key, message) = value_error("# c\n\njob_queue_size=lots\n");
    assert_eq!((line, key.as_str()), (3, "job_queue_size"));
    assert!(message.contains("\"lots\""), "{message}");

    // https:// is TorchServe's TLS: it needs both PEM files.
    let https = TsConfig::parse(b"inference_address=https://127.0.0.1:8443\n").expect("https");
    assert!(
        https
            .tls()
            .expect_err("no files")
            .contains("certificate_file")
    );
    let half = TsConfig::parse(b"certificate_file=c.pem\n").expect("half");
    assert!(half.tls().expect_err("no key").contains("go together"));
    let both = TsConfig::parse(
        b"inference_address=https://127.0.0.1:8443\ncertificate_file=c.pem\nprivate_key_file=k.pem\n",
    )
    .expect("both");
    assert_eq!(
        both.tls().expect("tls"),
        Some(("c.pem".into(), "k.pem".into()))
    );
    assert!(both.unused_keys.is_empty(), "{:?}", both.unused_keys);

    let (_, key, _) = value_error("max_request_size=0\n");
    assert_eq!(key, "max_request_size");
    let (_, key, message) = value_error("allowed_urls=http://(unclosed\n");
    assert_eq!(key, "allowed_urls");
    assert!(message.contains("regular expression"), "{message}");
    let (_, key, _) = value_error("model_snapshot={not json\n");
    assert_eq!(key, "model_snapshot");
    let (_, key, _) = value_error("management_address=http://example.com:8081\n");
    assert_eq!(key, "management_address");
    // The error's text says where, for the CLI's message.
    let err = TsConfig::parse(b"a=1\nmetrics_address=nope\n").expect_err("bad address");
    assert!(err.to_string().contains("line 2: metrics_address"), "{err}");
}

#[test]
fn addresses_parse_like_torchserve_writes_them() {
    let ok = |s: &str| parse_address(s).expect(s).to_string();
    assert_eq!(ok("http://127.0.0.1:8080"), "127.0.0.1:8080");
    assert_eq!(ok("http://127.0.0.1:8080/"), "127.0.0.1:8080");
    assert_eq!(ok("HTTP://localhost:9000"), "127.0.0.1:9000");
    assert_eq!(ok("http://[::1]:8081"), "[::1]:8081");
    assert_eq!(ok("127.0.0.1:0"), "127.0.0.1:0");
    assert_eq!(ok("http://127.0.0.1"), "127.0.0.1:80");
    assert_eq!(ok("https://127.0.0.1:8443"), "127.0.0.1:8443");
    assert_eq!(ok("https://127.0.0.1"), "127.0.0.1:443");
    assert!(parse_address("unix:/tmp/ts.sock").is_err());
    assert!(parse_address("http://127.0.0.1:8080/api").is_err());
    assert!(parse_address("127.0.0.1").is_err());
}

#[test]
fn relative_model_store_is_taken_from_the_config_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.properties");
    std::fs::write(&path, "model_store=model-store\n").expect("write");
    let ts = TsConfig::read(&path).expect("reads");
    assert_eq!(ts.model_store, Some(dir.path().join("model-store")));
    let missing = TsConfig::read(&dir.path().join("absent.properties"));
    assert!(matches!(missing, Err(TsConfigError::Read { .. })));
}

#[test]
fn outputs_dir_is_a_server_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.properties");
    std::fs::write(&path, "outputs_dir=images\n").expect("write");
    let ts = TsConfig::read(&path).expect("reads");
    assert_eq!(ts.outputs_dir, Some(dir.path().join("images")));
    let mut config = ServeConfig::default();
    assert_eq!(config.outputs_dir, std::path::PathBuf::from("outputs"));
    ts.apply(&mut config);
    assert_eq!(config.outputs_dir, dir.path().join("images"));
    assert!(
        TsConfig::parse(b"outputs_dir=\n").is_err(),
        "an empty folder"
    );
}

#[test]
fn precision_is_a_server_key_and_a_per_model_setting() {
    use wgsd::Precision;
    let ts = TsConfig::parse(
        br#"precision=f32
models={"fast": {"1.0": {"precision": "f16", "batchSize": 2}}, "exact": {"1.0": {"batchSize": 1}}}
"#,
    )
    .expect("parses");
    let mut config = ServeConfig::default();
    assert_eq!(config.pipeline.precision, Precision::Auto);
    ts.apply(&mut config);
    assert_eq!(config.pipeline.precision, Precision::F32);
    assert_eq!(config.settings_for("fast").precision, Some(Precision::F16));
    // A model that does not say runs at the server's precision.
    assert_eq!(config.settings_for("exact").precision, None);

    let (line, key, msg) = value_error("a=1\nprecision=f8\n");
    assert_eq!((line, key.as_str()), (2, "precision"));
    assert!(msg.contains("auto, f32 or f16"), "{msg}");
    let err = TsConfig::parse(br#"models={"m": {"1.0": {"precision": "double"}}}"#)
        .expect_err("bad per-model precision");
    assert!(err.to_string().contains("double"), "{err}");
}

/// wgsd's `vae_tiling`: a global default in config.properties, and per model in
/// `models` (`vaeTiling`, or `vae_tiling`) over it.
#[test]
fn vae_tiling_key_global_and_per_model() {
    let text = "vae_tiling=on\nmodels={\"a\": {\"1.0\": {\"vaeTiling\": false}}, \"b\": {\"1.0\": {\"vae_tiling\": true}}, \"c\": {\"1.0\": {\"batchSize\": 2}}}\n";
    let ts = TsConfig::parse(text.as_bytes()).expect("parses");
    let mut config = ServeConfig::default();
    ts.apply(&mut config);
    assert_eq!(config.default_settings.vae_tiling, VaeTiling::On);
    assert_eq!(config.model_settings["a"].vae_tiling, VaeTiling::Off);
    assert_eq!(config.model_settings["b"].vae_tiling, VaeTiling::On);
    assert_eq!(config.model_settings["c"].vae_tiling, VaeTiling::On);
    assert_eq!(
        ServeConfig::default().default_settings.vae_tiling,
        VaeTiling::Auto
    );
    assert!(TsConfig::parse(b"vae_tiling=sometimes\n").is_err());
}

#[test]
fn api_auth_is_a_server_key() {
    let ts = TsConfig::parse(b"api_auth=alice:secret,bob:pa:ss\n").expect("parses");
    let mut config = ServeConfig::default();
    ts.apply(&mut config);
    assert_eq!(
        config.api_auth,
        vec![
            ("alice".to_string(), "secret".to_string()),
            ("bob".to_string(), "pa:ss".to_string())
        ]
    );
    let (line, key, message) = value_error("api_auth=alice\n");
    assert_eq!((line, key.as_str()), (1, "api_auth"));
    assert!(message.contains("user:password"), "{message}");
}

#[test]
fn grpc_inference_address_and_port_turn_grpc_on() {
    let ts = TsConfig::parse(b"inference_address=http://0.0.0.0:8080\n").expect("parses");
    assert_eq!(ts.grpc_address(), None);
    let ts = TsConfig::parse(b"grpc_inference_port=9090\n").expect("parses");
    assert_eq!(
        ts.grpc_address(),
        Some("127.0.0.1:9090".parse().expect("addr"))
    );
    let ts = TsConfig::parse(b"grpc_inference_address=0.0.0.0\n").expect("parses");
    assert_eq!(
        ts.grpc_address(),
        Some("0.0.0.0:7070".parse().expect("addr"))
    );
    let mut config = wgsd::serve::ServeConfig::default();
    TsConfig::parse(b"grpc_inference_address=localhost\ngrpc_inference_port=7071\n")
        .expect("parses")
        .apply(&mut config);
    assert_eq!(
        config.grpc_address,
        Some("127.0.0.1:7071".parse().expect("addr"))
    );
    assert!(TsConfig::parse(b"grpc_inference_port=http\n").is_err());
    assert!(TsConfig::parse(b"grpc_inference_address=not an ip\n").is_err());
}
