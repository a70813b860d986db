//! `wgsd serve`: the TorchServe-compatible inference server (see `wgsd::serve`).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use wgsd::gpu::{AdapterChoice, DType};
use wgsd::pipeline::{DEFAULT_SIZE, DEFAULT_STEPS, PipelineOptions};
use wgsd::serve::{DEFAULT_MAX_REQUEST_SIZE, DEFAULT_QUEUE_SIZE, ServeConfig};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Folder holding the model archives (.mar, .zip or diffusers folders).
    #[arg(long, default_value = ".")]
    model_store: PathBuf,
    /// Models to load, NAME=ARCHIVE (relative to --model-store, or absolute), or `all`.
    #[arg(long, num_args = 1.., required = true)]
    models: Vec<String>,
    /// Where the inference API listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    inference_address: SocketAddr,
    /// Largest accepted request body in bytes (TorchServe's max_request_size).
    #[arg(long, default_value_t = DEFAULT_MAX_REQUEST_SIZE)]
    max_request_size: usize,
    /// Requests waiting per model before new ones get 503 (TorchServe's job_queue_size).
    #[arg(long, default_value_t = DEFAULT_QUEUE_SIZE)]
    job_queue_size: usize,
    /// Denoising steps when a request does not say.
    #[arg(long, default_value_t = DEFAULT_STEPS)]
    default_steps: usize,
    /// Image width when a request does not say.
    #[arg(long, default_value_t = DEFAULT_SIZE)]
    default_width: usize,
    /// Image height when a request does not say.
    #[arg(long, default_value_t = DEFAULT_SIZE)]
    default_height: usize,
    /// Store the weights as f16 on the GPU (needs SHADER_F16).
    #[arg(long)]
    f16: bool,
}

pub fn run(choice: &AdapterChoice, args: &ServeArgs) -> anyhow::Result<()> {
    let models = wgsd::serve::expand_models(&args.model_store, &args.models)?;
    let config = ServeConfig {
        model_store: args.model_store.clone(),
        models,
        inference_address: args.inference_address,
        max_request_size: args.max_request_size,
        queue_size: args.job_queue_size,
        default_steps: args.default_steps,
        default_width: args.default_width,
        default_height: args.default_height,
        adapter: choice.clone(),
        pipeline: PipelineOptions {
            weight_dtype: if args.f16 { DType::F16 } else { DType::F32 },
            ..PipelineOptions::default()
        },
        ..ServeConfig::default()
    };
    let names: Vec<String> = config.models.iter().map(|(n, _)| n.clone()).collect();
    let server = wgsd::serve::start(config).context("starting the server")?;
    eprintln!(
        "wgsd serve: inference API on http://{} (models: {})",
        server.addr(),
        names.join(", ")
    );
    server.wait()?;
    Ok(())
}
