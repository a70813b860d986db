//! `wgsd`: the command-line entry point.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wgsd::bench::BenchOptions;
use wgsd::gpu::AdapterChoice;

#[derive(Parser)]
#[command(name = "wgsd", version, about = "Stable Diffusion on any GPU through WGSL compute shaders")]
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
        Command::Bench {
            quick,
            json,
            filter,
            repeats,
        } => cli::bench::main(
            &choice,
            &BenchOptions {
                quick,
                filter,
                repeats,
            },
            json,
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
