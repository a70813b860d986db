//! `wgsd`: the command-line entry point.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wgsd::bench::BenchOptions;
use wgsd::gpu::AdapterChoice;

#[derive(Parser)]
#[command(
    name = "wgsd",
    version,
    about = "Stable Diffusion on any GPU through WGSL compute shaders"
)]
struct Cli {
    /// Adapter to use: an index from `wgsd info` or a substring of its name.
    #[arg(long, global = true, env = "WGSD_ADAPTER")]
    adapter: Option<String>,
    /// Restrict to one backend: vulkan, metal, dx12 or gl.
    #[arg(long, global = true, env = "WGSD_BACKEND")]
    backend: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List GPU adapters, the one wgsd would use, their features and limits.
    Info {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the CLIP token ids of a prompt as JSON (warns when it is cut at 77 tokens).
    Tokenize {
        /// Model archive (.zip, .mar), diffusers folder or single-file checkpoint.
        #[arg(long)]
        model: std::path::PathBuf,
        #[command(flatten)]
        single_file: cli::convert::SingleFileArgs,
        /// Also print the token strings.
        #[arg(long, short)]
        verbose: bool,
        /// The prompt.
        prompt: String,
    },
    /// Generate images from a text prompt.
    Generate(Box<cli::generate::GenerateArgs>),
    /// Convert a single-file checkpoint (.safetensors, .ckpt; SD 1.x / 2.x) into a
    /// diffusers archive (.zip) for a model store.
    Convert(cli::convert::ConvertArgs),
    /// Serve models over HTTP as TorchServe does: inference (TorchServe, KServe v1, OIP v2),
    /// management and Prometheus metrics APIs.
    Serve(Box<cli::serve::ServeArgs>),
    /// The desktop web UI on http://127.0.0.1:7860/: one model, live previews, history
    /// of the outputs folder (every API of `serve` answers there too).
    Studio(cli::studio::StudioArgs),
    /// Measure kernel speed against this device's peak.
    Bench {
        /// Smaller shapes, fewer repeats.
        #[arg(long)]
        quick: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Only kernels whose name contains this.
        #[arg(long)]
        filter: Option<String>,
        /// Timed repeats per kernel.
        #[arg(long, default_value_t = 0)]
        repeats: usize,
        /// Benchmark whole models (UNet step, VAE decode) instead of kernels: the tiny
        /// bundled archive, plus full-size SD2 with random weights when --full is given.
        #[arg(long)]
        models: bool,
        /// With --models: also the full SD2 architecture (slow on CPU drivers).
        #[arg(long)]
        full: bool,
        /// With --models --full: image sizes in pixels.
        #[arg(long, value_delimiter = ',', default_value = "512,768")]
        sizes: Vec<usize>,
        /// With --models: the tiny archive to measure.
        #[arg(long, default_value = "weights/sd2-tiny.zip")]
        model: std::path::PathBuf,
        /// With --models: weight (and activation) storage: auto (f16 on GPUs with
        /// SHADER_F16, f32 on CPU drivers), f32 or f16.
        #[arg(long, default_value = "auto")]
        precision: wgsd::Precision,
        /// Cooperative matrices (tensor cores): on, off, both (with --models: the same
        /// models measured with and then without them), or env (WGSD_COOPMAT, default).
        #[arg(long)]
        coopmat: Option<String>,
        /// With --models: also run each model once with every dispatch timed alone and
        /// print where the time goes, kernel by kernel.
        #[arg(long)]
        profile: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let choice = AdapterChoice {
        adapter: cli.adapter,
        backend: cli.backend,
    };
    let result = match cli.command {
        Command::Info { json } => cli::info::run(&choice, json),
        Command::Generate(args) => cli::generate::run(&choice, &args),
        Command::Serve(args) => cli::serve::run(&choice, &args),
        Command::Studio(args) => cli::studio::run(&choice, &args),
        Command::Convert(args) => cli::convert::run(&args),
        Command::Tokenize {
            model,
            single_file,
            verbose,
            prompt,
        } => cli::tokenize::run(&model, &single_file, &prompt, verbose),
        Command::Bench {
            quick,
            json,
            filter,
            repeats,
            models,
            full,
            sizes,
            model,
            precision,
            coopmat,
            profile,
        } => {
            let opts = BenchOptions {
                quick,
                filter,
                repeats,
            };
            if models {
                cli::bench::models(
                    &choice,
                    &model,
                    full.then_some(sizes.as_slice()),
                    precision,
                    wgsd::bench::models::Measure {
                        reps: repeats.max(1),
                        profile,
                    },
                    coopmat.as_deref(),
                    json,
                )
            } else {
                cli::bench::main(&choice, &opts, coopmat.as_deref(), json)
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
