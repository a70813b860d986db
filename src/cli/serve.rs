//! `wgsd serve`: the TorchServe-compatible inference server (see `wgsd::serve`).
//!
//! Settings come from the command line, then `--ts-config` (TorchServe's
//! config.properties), then the defaults, in that order of precedence.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use wgsd::Precision;
use wgsd::gpu::AdapterChoice;
use wgsd::serve::ts_config::{TsConfig, parse_address};
use wgsd::serve::{ServeConfig, ShutdownHandle, WarmupSize};

#[derive(Args, Debug)]
#[command(after_help = "\
Precedence: command line, then --ts-config, then the defaults.

Auth: with --auth-token (or WGSD_AUTH_TOKEN, or auth_token= in the config file) the
management API and the inference API need `Authorization: Bearer TOKEN` (401 otherwise);
/ping, /v2/health/* and the metrics API stay open. With --api-auth the AUTOMATIC1111
routes (/sdapi/v1/*) take HTTP basic auth instead, as A1111's --api-auth.

SIGINT/SIGTERM: new predictions get 503, in-flight ones finish, then the server exits 0
(a second signal exits at once).")]
pub struct ServeArgs {
    /// TorchServe's config.properties (inference_address, management_address,
    /// metrics_address, model_store, load_models, max_request_size, max_response_size,
    /// job_queue_size, default_response_timeout, allowed_urls, model_snapshot, ...).
    #[arg(long, value_name = "FILE")]
    ts_config: Option<PathBuf>,
    /// Folder holding the model archives (.mar, .zip or diffusers folders) [default: .].
    #[arg(long)]
    model_store: Option<PathBuf>,
    /// Folder of LoRA files that requests name (the `loras` field, A1111's
    /// `<lora:name:scale>`) [default: loras/ in the model store].
    #[arg(long, value_name = "DIR")]
    lora_dir: Option<PathBuf>,
    /// Models to load, NAME=ARCHIVE (relative to --model-store, or absolute), or `all`;
    /// optional when the config file has load_models or model_snapshot.
    #[arg(long, num_args = 1..)]
    models: Option<Vec<String>>,
    /// KServe's custom-predictor flag: the model's name (the InferenceService's); the
    /// model is the one found in --model_dir.
    #[arg(long = "model_name", value_name = "NAME", conflicts_with = "models")]
    kserve_model_name: Option<String>,
    /// KServe's flag: the folder its storage initializer filled (a diffusers folder, or
    /// a folder of .zip/.mar/.safetensors archives) [default with --model_name:
    /// /mnt/models].
    #[arg(long = "model_dir", value_name = "DIR", conflicts_with = "models")]
    kserve_model_dir: Option<PathBuf>,
    /// KServe's flag (or the PORT variable, as Knative sets it): the inference API
    /// listens on 0.0.0.0:PORT; --inference-address wins over both.
    #[arg(long = "http_port", value_name = "PORT", env = "PORT")]
    http_port: Option<u16>,
    /// KServe's flag: the Open Inference Protocol's gRPC service listens on
    /// 0.0.0.0:PORT [default with --model_name/--model_dir: 8081 (the management API
    /// then moves to 127.0.0.1:8085 unless given); else off unless the config file sets
    /// grpc_inference_address/grpc_inference_port].
    #[arg(
        long = "grpc_port",
        value_name = "PORT",
        conflicts_with = "grpc_address"
    )]
    grpc_port: Option<u16>,
    /// Where the gRPC service listens (HOST:PORT).
    #[arg(long, value_parser = address)]
    grpc_address: Option<SocketAddr>,
    /// Where the inference API listens (HOST:PORT or http://HOST:PORT) [default: 127.0.0.1:8080].
    #[arg(long, value_parser = address)]
    inference_address: Option<SocketAddr>,
    /// Where the management API listens [default: 127.0.0.1:8081].
    #[arg(long, value_parser = address)]
    management_address: Option<SocketAddr>,
    /// Where the metrics API listens [default: 127.0.0.1:8082].
    #[arg(long, value_parser = address)]
    metrics_address: Option<SocketAddr>,
    /// Largest accepted request body in bytes (max_request_size) [default: 6553500].
    #[arg(long)]
    max_request_size: Option<usize>,
    /// Largest reply in bytes; a larger one is a clear error, never cut short
    /// (max_response_size) [default: 67108864].
    #[arg(long)]
    max_response_size: Option<usize>,
    /// Requests waiting per model before new ones get 503 (job_queue_size) [default: 100].
    #[arg(long)]
    job_queue_size: Option<usize>,
    /// Seconds a request head may take from its first byte (config key
    /// header_read_timeout) [default: 30].
    #[arg(long, value_name = "S")]
    header_read_timeout: Option<u64>,
    /// Seconds a connection may sit idle, no request in flight, before it is closed
    /// (config key idle_timeout) [default: 60].
    #[arg(long, value_name = "S")]
    idle_timeout: Option<u64>,
    /// Seconds a request body may take after its head; then 408 (config key
    /// body_read_timeout) [default: 120].
    #[arg(long, value_name = "S")]
    body_read_timeout: Option<u64>,
    /// Open connections per listener; more wait unaccepted until one closes (config key
    /// max_connections) [default: 512].
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// PEM certificate (chain) for TLS on all three listeners, with --tls-key
    /// (TorchServe's certificate_file).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert (TorchServe's private_key_file).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// MiB of GPU memory each model's worker may hold (weights, activations, cache); a
    /// request past it gets 507 and the worker goes on (config key gpu_memory_limit).
    #[arg(long, value_name = "MIB")]
    gpu_memory_limit: Option<u64>,
    /// Require `Authorization: Bearer TOKEN` on the management and inference APIs.
    #[arg(long, env = "WGSD_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
    /// HTTP basic auth on the AUTOMATIC1111 routes (/sdapi/v1/*), as A1111's own flag:
    /// user:pass[,user2:pass2] (config key api_auth); those routes then skip the token.
    #[arg(
        long,
        env = "WGSD_API_AUTH",
        hide_env_values = true,
        value_name = "USER:PASS"
    )]
    api_auth: Option<String>,
    /// Up to this many compatible requests run as one batched UNet pass, for every
    /// model (batchSize) [default: 1].
    #[arg(long)]
    batch_size: Option<usize>,
    /// How long a batch waits to fill, in ms (maxBatchDelay) [default: 100].
    #[arg(long, value_name = "MS")]
    max_batch_delay: Option<u64>,
    /// Seconds before an unanswered request gets 504 (responseTimeout) [default: 120].
    #[arg(long, value_name = "S")]
    response_timeout: Option<u64>,
    /// Denoising steps when a request does not say [default: 50].
    #[arg(long)]
    default_steps: Option<usize>,
    /// Image width when a request does not say [default: 768].
    #[arg(long)]
    default_width: Option<usize>,
    /// Image height when a request does not say [default: 768].
    #[arg(long)]
    default_height: Option<usize>,
    /// Precision of weights and activations on the GPU for every model without a per-model `precision`
    /// (config.properties `precision`, or per model in `models`/`model_snapshot`): auto (f16 on GPUs with
    /// SHADER_F16, f32 on CPU drivers), f32 (matches diffusers float32), f16 (f32
    /// accumulation, f32 softmax and norm statistics).
    #[arg(long, value_name = "auto|f32|f16")]
    precision: Option<Precision>,
    /// Alias of `--precision f16`.
    #[arg(long, conflicts_with = "precision")]
    f16: bool,
    /// Before a model reports ready (on /ping and the management API), run one step at
    /// this size so every GPU pipeline is built: WxH, `default` (the default request
    /// size) or `off` (config key warmup_size) [default: default].
    #[arg(long, value_name = "WxH", value_parser = warmup_size)]
    warmup_size: Option<WarmupSize>,
    /// Report ready as soon as the weights are loaded (same as --warmup-size off).
    #[arg(long, conflicts_with = "warmup_size")]
    no_warmup: bool,
    /// Where jobs of the studio API (/api/v1/jobs) write their images (config key
    /// outputs_dir) [default: ./outputs, created on first write].
    #[arg(long, value_name = "DIR")]
    outputs: Option<PathBuf>,
    /// For single-file checkpoints (.safetensors, .ckpt) in the model store: a diffusers
    /// folder or archive whose configs, tokenizer and scheduler they use (needed for
    /// non-standard files; standard SD 1.x / 2.x files have built-in configs).
    #[arg(long, value_name = "DIR|ARCHIVE")]
    single_file_config: Option<PathBuf>,
    /// For single-file checkpoints: epsilon or v_prediction (default: each file's
    /// sidecar FILE.yaml, else diffusers' default for its version).
    #[arg(long, value_name = "epsilon|v_prediction")]
    prediction_type: Option<wgsd::loader::PredictionType>,
}

/// The `--models` specs for KServe's `--model_dir` (and `--model_name`): the folder
/// itself when it is a diffusers model, else the one archive or folder in it (every one,
/// each under its own name, without `--model_name`).
fn kserve_models(dir: &std::path::Path, name: Option<&str>) -> anyhow::Result<Vec<String>> {
    if dir.join("model_index.json").is_file() {
        let name = name.unwrap_or("model");
        return Ok(vec![format!("{name}={}", dir.display())]);
    }
    let found = wgsd::serve::expand_models(dir, &["all".to_string()])?;
    match (name, found.as_slice()) {
        (Some(n), [(_, archive)]) => Ok(vec![format!("{n}={}", archive.display())]),
        (Some(n), _) => anyhow::bail!(
            "--model_name {n}: {} holds {} models; name one with --models NAME=ARCHIVE",
            dir.display(),
            found.len()
        ),
        (None, _) => Ok(vec!["all".to_string()]),
    }
}

/// KServe's default gRPC port (`kserve.model_server`'s `--grpc_port`).
const KSERVE_GRPC_PORT: u16 = 8081;
/// Where the management API goes when KServe's gRPC port takes its default one
/// (TorchServe's own port in KServe's TorchServe image).
const KSERVE_MANAGEMENT_PORT: u16 = 8085;

/// The gRPC address: the flags, else the config file's, else KServe's default when
/// running as a KServe predictor. KServe's default gRPC port is TorchServe's
/// management port, so a management API left at its default moves aside.
fn grpc_address(config: &mut ServeConfig, args: &ServeArgs, management_in_file: bool) {
    if let Some(port) = args.grpc_port {
        config.grpc_address = Some(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    if let Some(a) = args.grpc_address {
        config.grpc_address = Some(a);
    }
    let kserve = args.kserve_model_name.is_some() || args.kserve_model_dir.is_some();
    if kserve && config.grpc_address.is_none() {
        config.grpc_address = Some(SocketAddr::from(([0, 0, 0, 0], KSERVE_GRPC_PORT)));
    }
    let management_given = args.management_address.is_some() || management_in_file;
    if let Some(grpc) = config.grpc_address
        && !management_given
        && grpc.port() == config.management_address.port()
    {
        config.management_address.set_port(KSERVE_MANAGEMENT_PORT);
    }
}

fn warmup_size(s: &str) -> Result<WarmupSize, String> {
    WarmupSize::parse(s).map_err(|e| e.to_string())
}

fn address(s: &str) -> Result<SocketAddr, String> {
    parse_address(s)
}

/// The server's configuration: defaults, then the config file, then the flags.
pub fn config(choice: &AdapterChoice, args: &ServeArgs) -> anyhow::Result<ServeConfig> {
    let mut config = ServeConfig::default();
    let mut file_models = None;
    let mut management_in_file = false;
    if let Some(path) = &args.ts_config {
        let ts = TsConfig::read(path)?;
        for line in ts.unused_key_messages() {
            eprintln!("wgsd serve: {line}");
        }
        if let (Some(_), false) = (&ts.load_models, ts.snapshot_models.is_empty()) {
            eprintln!(
                "wgsd serve: config.properties: load_models ignored: model_snapshot lists the models (as in TorchServe)"
            );
        }
        if let Some(n) = ts.default_workers_per_model {
            eprintln!(
                "wgsd serve: default_workers_per_model={n}: reported; wgsd runs one GPU worker per model"
            );
        }
        ts.apply(&mut config);
        management_in_file = ts.management_address.is_some();
        if args.tls_cert.is_none() {
            config.tls = ts
                .tls()
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        }
        file_models = ts.model_specs();
    }
    if let Some(store) = &args.model_store {
        config.model_store = store.clone();
    }
    if let Some(dir) = &args.lora_dir {
        config.lora_dir = Some(dir.clone());
    }
    if args.kserve_model_name.is_some() || args.kserve_model_dir.is_some() {
        let dir = args
            .kserve_model_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/mnt/models"));
        let dir =
            std::path::absolute(&dir).with_context(|| format!("--model_dir {}", dir.display()))?;
        file_models = Some(kserve_models(&dir, args.kserve_model_name.as_deref())?);
        config.model_store = dir;
    }
    let specs = args.models.clone().or(file_models).ok_or_else(|| {
        anyhow::anyhow!("no models to serve: use --models NAME=ARCHIVE (or `all`), or load_models in --ts-config")
    })?;
    config.models = wgsd::serve::expand_models(&config.model_store, &specs)?;
    let set = |dst: &mut SocketAddr, src: Option<SocketAddr>| {
        if let Some(a) = src {
            *dst = a;
        }
    };
    if let Some(port) = args.http_port {
        config.inference_address = SocketAddr::from(([0, 0, 0, 0], port));
    }
    set(&mut config.inference_address, args.inference_address);
    set(&mut config.management_address, args.management_address);
    grpc_address(&mut config, args, management_in_file);
    set(&mut config.metrics_address, args.metrics_address);
    for (dst, src) in [
        (&mut config.max_request_size, args.max_request_size),
        (&mut config.max_response_size, args.max_response_size),
        (&mut config.queue_size, args.job_queue_size),
        (&mut config.default_steps, args.default_steps),
        (&mut config.default_width, args.default_width),
        (&mut config.default_height, args.default_height),
    ] {
        if let Some(v) = src {
            *dst = v;
        }
    }
    let c = &mut config.connections;
    for (flag, dst, src) in [
        (
            "--header-read-timeout",
            &mut c.header_read_timeout,
            args.header_read_timeout,
        ),
        ("--idle-timeout", &mut c.idle_timeout, args.idle_timeout),
        (
            "--body-read-timeout",
            &mut c.body_read_timeout,
            args.body_read_timeout,
        ),
    ] {
        if let Some(s) = src {
            anyhow::ensure!(s > 0, "{flag} must be at least 1 second");
            *dst = std::time::Duration::from_secs(s);
        }
    }
    if let Some(n) = args.max_connections {
        anyhow::ensure!(n > 0, "--max-connections must be at least 1");
        c.max_connections = n;
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls = Some((cert.clone(), key.clone()));
    }
    if let Some(w) = args.warmup_size {
        config.warmup = w;
    }
    if let Some(dir) = &args.outputs {
        config.outputs_dir = dir.clone();
    }
    if args.no_warmup {
        config.warmup = WarmupSize::Off;
    }
    if let Some(mib) = args.gpu_memory_limit {
        anyhow::ensure!(mib > 0, "--gpu-memory-limit must be at least 1 MiB");
        config.gpu_memory_limit = Some(mib.saturating_mul(1024 * 1024));
    }
    if let Some(t) = &args.auth_token {
        anyhow::ensure!(!t.is_empty(), "--auth-token: the token is empty");
        config.auth_token = Some(t.clone());
    }
    if let Some(spec) = &args.api_auth {
        config.api_auth = wgsd::serve::auth::parse_api_auth(spec).map_err(anyhow::Error::msg)?;
    }
    anyhow::ensure!(
        args.batch_size != Some(0),
        "--batch-size must be at least 1"
    );
    anyhow::ensure!(
        args.response_timeout != Some(0),
        "--response-timeout must be at least 1"
    );
    // The flags win over the config file for every model, not only the default.
    let all =
        std::iter::once(&mut config.default_settings).chain(config.model_settings.values_mut());
    for s in all {
        if let Some(n) = args.batch_size {
            s.batch_size = n;
        }
        if let Some(ms) = args.max_batch_delay {
            s.max_batch_delay_ms = ms;
        }
        if let Some(t) = args.response_timeout {
            s.response_timeout_s = t;
        }
    }
    config.adapter = choice.clone();
    if args.f16 {
        config.pipeline.precision = Precision::F16;
    } else if let Some(p) = args.precision {
        config.pipeline.precision = p;
    }
    if let Some(c) = &args.single_file_config {
        anyhow::ensure!(
            c.exists(),
            "--single-file-config {}: no such file or folder",
            c.display()
        );
        config.pipeline.archive.single_file.config = Some(c.clone());
    }
    if let Some(p) = args.prediction_type {
        config.pipeline.archive.single_file.prediction_type = Some(p);
    }
    Ok(config)
}

pub fn run(choice: &AdapterChoice, args: &ServeArgs) -> anyhow::Result<()> {
    let config = config(choice, args)?;
    let names: Vec<String> = config.models.iter().map(|(n, _)| n.clone()).collect();
    let auth = config.auth_token.is_some();
    let tls = config.tls.is_some();
    let server = wgsd::serve::start(config).context("starting the server")?;
    // Before anything reports the server up, so a SIGTERM right after is a clean stop.
    watch_signals(server.shutdown_handle())?;
    let a = server.addrs();
    eprintln!("wgsd serve: models: {}", names.join(", "));
    let scheme = if tls { "https" } else { "http" };
    eprintln!("wgsd serve: inference API on {scheme}://{}", a.inference);
    eprintln!("wgsd serve: studio page on {scheme}://{}/", a.inference);
    eprintln!("wgsd serve: management API on {scheme}://{}", a.management);
    eprintln!("wgsd serve: metrics API on {scheme}://{}", a.metrics);
    if let Some(g) = a.grpc {
        let tls = if tls { " (TLS)" } else { "" };
        eprintln!("wgsd serve: gRPC inference (inference.GRPCInferenceService) on {g}{tls}");
    }
    if auth {
        eprintln!("wgsd serve: token auth on (Authorization: Bearer TOKEN)");
    }
    server.wait()?;
    eprintln!("wgsd serve: stopped");
    Ok(())
}

/// On SIGINT/SIGTERM, starts the graceful shutdown; a second signal exits at once.
fn watch_signals(handle: ShutdownHandle) -> anyhow::Result<()> {
    super::signals::on_interrupt(
        move || {
            eprintln!("wgsd serve: shutting down: finishing in-flight requests, refusing new ones");
            handle.trigger();
        },
        "wgsd serve: second signal, exiting now",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn grpc_for(args: &[&str]) -> ServeConfig {
        let cli = Cli::try_parse_from(std::iter::once("wgsd").chain(args.iter().copied()))
            .expect("valid flags");
        let mut config = ServeConfig::default();
        if let Some(a) = cli.serve.management_address {
            config.management_address = a;
        }
        grpc_address(&mut config, &cli.serve, false);
        config
    }

    #[test]
    fn grpc_defaults_follow_kserve_and_move_the_management_api() {
        let c = grpc_for(&[]);
        assert_eq!(c.grpc_address, None, "off outside KServe unless asked");
        let c = grpc_for(&["--model_name", "sd"]);
        assert_eq!(c.grpc_address, Some("0.0.0.0:8081".parse().expect("addr")));
        assert_eq!(c.management_address.port(), KSERVE_MANAGEMENT_PORT);
        let c = grpc_for(&["--grpc_port", "9000"]);
        assert_eq!(c.grpc_address, Some("0.0.0.0:9000".parse().expect("addr")));
        assert_eq!(c.management_address.port(), 8081);
        // A management address the user gave stays (a clash is then a bind error).
        let c = grpc_for(&[
            "--model_dir",
            "/m",
            "--management-address",
            "127.0.0.1:8081",
        ]);
        assert_eq!(c.management_address.port(), 8081);
        let c = grpc_for(&["--grpc-address", "127.0.0.1:7070"]);
        assert_eq!(
            c.grpc_address,
            Some("127.0.0.1:7070".parse().expect("addr"))
        );
        assert!(
            Cli::try_parse_from(["wgsd", "--grpc_port", "1", "--grpc-address", "127.0.0.1:2"])
                .is_err()
        );
    }
}
