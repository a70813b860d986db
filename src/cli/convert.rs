//! `wgsd convert IN OUT.zip`: a single-file checkpoint (`.safetensors`, `.ckpt`) to a
//! diffusers archive (the `model.zip` a TorchServe-style model store holds), by the same
//! conversion `--model FILE.safetensors` runs into the cache. Nothing is written to
//! `OUT.zip` unless the conversion succeeds (temporary files beside it, then a rename).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use wgsd::loader::single_file::{self, convert_to_zip};
use wgsd::loader::{ArchiveOptions, PredictionType, SingleFileOptions};

/// `--config` and `--prediction-type`, shared by every command that takes `--model`.
#[derive(Args, Debug, Clone, Default)]
pub struct SingleFileArgs {
    /// For single-file checkpoints: a diffusers folder or archive whose configs,
    /// tokenizer and scheduler are used (its weights never are). Needed for
    /// non-standard files; standard SD 1.x / 2.x ones have built-in configs.
    #[arg(long, value_name = "DIR|ARCHIVE")]
    pub config: Option<PathBuf>,
    /// For single-file checkpoints: epsilon or v_prediction. Default: the sidecar
    /// FILE.yaml's `parameterization` (A1111), else the --config scheduler's, else
    /// epsilon for SD 1.x and v_prediction for SD 2.x (diffusers' defaults).
    #[arg(long, value_name = "epsilon|v_prediction")]
    pub prediction_type: Option<PredictionType>,
}

impl SingleFileArgs {
    pub fn options(&self) -> anyhow::Result<SingleFileOptions> {
        if let Some(c) = &self.config
            && !c.exists()
        {
            bail!("--config {}: no such file or folder", c.display());
        }
        Ok(SingleFileOptions {
            config: self.config.clone(),
            prediction_type: self.prediction_type,
        })
    }
}

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// The single-file checkpoint (.safetensors, .ckpt).
    #[arg(value_name = "IN")]
    input: PathBuf,
    /// The diffusers archive to write (.zip).
    #[arg(value_name = "OUT.zip")]
    output: PathBuf,
    #[command(flatten)]
    single_file: SingleFileArgs,
}

pub fn run(args: &ConvertArgs) -> anyhow::Result<()> {
    if !args.input.is_file() {
        bail!("{}: no such file", args.input.display());
    }
    if !single_file::is_single_file(&args.input) {
        bail!(
            "{}: not a single-file checkpoint (expected .{})",
            args.input.display(),
            single_file::EXTENSIONS.join(", .")
        );
    }
    let is_zip = args
        .output
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("zip"));
    if !is_zip {
        bail!("{}: the output must be a .zip", args.output.display());
    }
    if let Some(dir) = args.output.parent()
        && !dir.as_os_str().is_empty()
        && !dir.is_dir()
    {
        bail!("output folder {} does not exist", dir.display());
    }
    let opts = ArchiveOptions {
        single_file: args.single_file.options()?,
        ..ArchiveOptions::default()
    };
    let c = convert_to_zip(&args.input, &opts, &args.output)
        .with_context(|| format!("converting {}", args.input.display()))?;
    eprintln!(
        "{}: {}, prediction type {}; {} tensors not used{}",
        args.input.display(),
        c.architecture.describe(),
        c.prediction_type
            .as_deref()
            .unwrap_or("(scheduler default)"),
        c.unused.len(),
        if c.unused.is_empty() {
            String::new()
        } else {
            format!(
                " ({}{})",
                c.unused
                    .iter()
                    .take(4)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                if c.unused.len() > 4 { ", ..." } else { "" }
            )
        }
    );
    eprintln!("wrote {}", args.output.display());
    Ok(())
}
