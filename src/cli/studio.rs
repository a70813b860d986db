//! `wgsd studio`: the desktop web UI. One model, the server's machinery (registry,
//! worker, queue, dynamic batching) with desktop defaults, and the page at
//! `http://127.0.0.1:7860/` (A1111's port). Every API of `wgsd serve` answers too.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use wgsd::Precision;
use wgsd::gpu::AdapterChoice;
use wgsd::serve::{ServeConfig, WarmupSize};

/// The bundled models, in order of preference, when `--model` is not given.
const DEFAULT_MODELS: [&str; 2] = ["weights/shapes-tiny.zip", "weights/sd2-tiny.zip"];

#[derive(Args, Debug)]
pub struct StudioArgs {
    /// Model archive (.zip, .mar), diffusers folder or single-file checkpoint
    /// (.safetensors, .ckpt), registered under its file stem
    /// [default: weights/shapes-tiny.zip if it exists, else weights/sd2-tiny.zip].
    #[arg(long, value_name = "ARCHIVE")]
    model: Option<PathBuf>,
    /// Port on 127.0.0.1.
    #[arg(long, default_value_t = 7860)]
    port: u16,
    /// Where generated images go (NNNNN-<seed>.png, with their parameters).
    #[arg(long, value_name = "DIR", default_value = "outputs")]
    outputs: PathBuf,
    /// Precision of weights and activations: auto (f16 on GPUs with SHADER_F16, f32 on
    /// CPU drivers), f32 or f16.
    #[arg(long, value_name = "auto|f32|f16")]
    precision: Option<Precision>,
    /// HTTP basic auth on the AUTOMATIC1111 routes (/sdapi/v1/*), as A1111's own flag:
    /// user:pass[,user2:pass2].
    #[arg(
        long,
        env = "WGSD_API_AUTH",
        hide_env_values = true,
        value_name = "USER:PASS"
    )]
    api_auth: Option<String>,
    #[command(flatten)]
    single_file: super::convert::SingleFileArgs,
}

/// `--model`, or the first bundled model that exists.
fn model_path(args: &StudioArgs) -> anyhow::Result<PathBuf> {
    if let Some(m) = &args.model {
        if !m.exists() {
            bail!("model {}: no such file or folder", m.display());
        }
        return Ok(m.clone());
    }
    DEFAULT_MODELS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .with_context(|| {
            format!(
                "no model: neither {} nor {} exists here; pass --model ARCHIVE",
                DEFAULT_MODELS[0], DEFAULT_MODELS[1]
            )
        })
}

/// The studio's server settings: one model, desktop defaults.
pub fn config(choice: &AdapterChoice, args: &StudioArgs) -> anyhow::Result<ServeConfig> {
    let model = model_path(args)?;
    let name = model
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .with_context(|| format!("model {}: cannot name it after its file", model.display()))?
        .to_string();
    let loopback = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut config = ServeConfig {
        model_store: PathBuf::from("."),
        models: vec![(name, model)],
        inference_address: loopback(args.port),
        // Not needed by the page; on free loopback ports, as the server has all three.
        management_address: loopback(0),
        metrics_address: loopback(0),
        default_steps: 20,
        native_size_defaults: true,
        warmup: WarmupSize::Native,
        outputs_dir: args.outputs.clone(),
        adapter: choice.clone(),
        ..ServeConfig::default()
    };
    // Up to 4 jobs that arrive together run as one batch; a short wait to gather them.
    config.default_settings.batch_size = 4;
    config.default_settings.max_batch_delay_ms = 50;
    // Jobs are watched and cancelled from the page; `/predictions` waits as long.
    config.default_settings.response_timeout_s = 0;
    config.pipeline.archive.single_file = args.single_file.options()?;
    if let Some(p) = args.precision {
        config.pipeline.precision = p;
    }
    if let Some(spec) = &args.api_auth {
        config.api_auth = wgsd::serve::auth::parse_api_auth(spec).map_err(anyhow::Error::msg)?;
    }
    Ok(config)
}

pub fn run(choice: &AdapterChoice, args: &StudioArgs) -> anyhow::Result<()> {
    let config = config(choice, args)?;
    let model = config.models[0].clone();
    let outputs = config.outputs_dir.clone();
    eprintln!(
        "wgsd studio: loading {} ({})",
        model.0,
        Path::new(&model.1).display()
    );
    let server = wgsd::serve::start(config).context("starting the studio")?;
    let a = server.addrs();
    eprintln!("wgsd studio: images go to {}", outputs.display());
    eprintln!(
        "wgsd studio: management API on http://{}, metrics on http://{}",
        a.management, a.metrics
    );
    let handle = server.shutdown_handle();
    super::signals::on_interrupt(
        move || {
            eprintln!("wgsd studio: shutting down: finishing running jobs");
            handle.trigger();
        },
        "wgsd studio: second signal, exiting now",
    )?;
    // On stdout, alone on its line, for scripts and launchers; only once a signal stops
    // the studio cleanly (a launcher may stop it as soon as it has the URL).
    let mut out = std::io::stdout();
    writeln!(out, "wgsd studio: open http://{}/", a.inference)?;
    out.flush()?;
    server.wait()?;
    eprintln!("wgsd studio: stopped");
    Ok(())
}
