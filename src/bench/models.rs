//! Whole-model benchmarks: one UNet evaluation (batch 2, as classifier-free guidance
//! runs it) and one VAE decode, for the bundled tiny SD2-style archive and, opt-in, for
//! the full Stable Diffusion 2 architecture built from its diffusers configs with random
//! weights (865 M UNet parameters; no download needed). Reports ms per call, GFLOP/s
//! where the FLOP count is known and its fraction of the FMA peak measured in the same
//! run, dispatches per call, and peak GPU memory during the calls (weights +
//! activations). Weights are stored in the dtype `--precision` resolves to.

use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::time_median;
use crate::Precision;
use crate::error::Result;
use crate::gpu::profile::{DispatchProfile, KernelTime};
use crate::gpu::{DType, Gpu, Recorder};
use crate::loader::{VarBuilder, open_model, read_component_config};
use crate::models::config::{UNetConfig, VaeConfig};
use crate::models::unet::UNet2DConditionModel;
use crate::models::vae::VaeDecoder;

/// `unet/config.json` of stabilityai/stable-diffusion-2 (768-v).
pub const SD2_UNET_CONFIG: &str = r#"{"act_fn":"silu","attention_head_dim":[5,10,20,20],
"block_out_channels":[320,640,1280,1280],"center_input_sample":false,"cross_attention_dim":1024,
"down_block_types":["CrossAttnDownBlock2D","CrossAttnDownBlock2D","CrossAttnDownBlock2D","DownBlock2D"],
"downsample_padding":1,"dual_cross_attention":false,"flip_sin_to_cos":true,"freq_shift":0,"in_channels":4,
"layers_per_block":2,"mid_block_scale_factor":1,"norm_eps":1e-05,"norm_num_groups":32,"out_channels":4,
"sample_size":96,"up_block_types":["UpBlock2D","CrossAttnUpBlock2D","CrossAttnUpBlock2D","CrossAttnUpBlock2D"],
"use_linear_projection":true,"upcast_attention":true}"#;

/// `vae/config.json` of stabilityai/stable-diffusion-2.
pub const SD2_VAE_CONFIG: &str = r#"{"act_fn":"silu","block_out_channels":[128,256,512,512],
"in_channels":3,"latent_channels":4,"layers_per_block":2,"norm_num_groups":32,"out_channels":3,
"sample_size":768,"up_block_types":["UpDecoderBlock2D","UpDecoderBlock2D","UpDecoderBlock2D","UpDecoderBlock2D"],
"scaling_factor":0.18215}"#;

/// One model measurement.
#[derive(Debug, Clone, Serialize)]
pub struct ModelResult {
    pub name: String,
    pub resolution: String,
    pub params_millions: f64,
    pub ms_per_call: f64,
    /// Known FLOP per call (full-size SD2 from torch's flop counter), else None.
    pub gflops: Option<f64>,
    /// `gflops` over the FMA peak measured in the same run.
    pub fraction_of_peak: Option<f64>,
    /// Compute dispatches one call records.
    pub dispatches: u64,
    pub weights_mib: f64,
    /// Peak GPU memory (pool bytes in use + cached) during the calls, weights included.
    pub peak_gpu_bytes: u64,
    pub peak_mib: f64,
    /// With [`Measure::profile`]: one more call, every dispatch timed alone, slowest
    /// kernels first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kernels: Vec<KernelTime>,
}

/// How to measure each model.
#[derive(Debug, Clone, Copy)]
pub struct Measure {
    /// Timed calls (the median is reported).
    pub reps: usize,
    /// Also profile one call kernel by kernel (see [`crate::gpu::profile`]).
    pub profile: bool,
}

/// Everything `wgsd bench --models` measured.
#[derive(Debug, Clone, Serialize)]
pub struct ModelsReport {
    pub adapter: String,
    pub backend: String,
    /// What was asked (`auto`, `f32`, `f16`) and what it resolved to on this adapter.
    pub precision: String,
    pub dtype: String,
    /// The FMA peak of this run (see `bench::probe`), GFLOP/s, and its layout.
    pub fma_peak_gflops: f64,
    pub fma_layout: String,
    /// Whether the cooperative-matrix kernels ran (and their tile edge).
    pub cooperative_matrices: Option<u32>,
    pub results: Vec<ModelResult>,
}

/// Resolves `precision` on `gpu`, measures the FMA peak, then the tiny archive and, with
/// `full_sizes`, full-size SD2.
pub fn run(
    gpu: &Gpu,
    tiny_archive: &Path,
    full_sizes: Option<&[usize]>,
    precision: Precision,
    m: Measure,
) -> Result<ModelsReport> {
    precision.check(gpu)?;
    let dtype = precision.resolve(gpu);
    let (fma_peak_gflops, fma_layout) = super::probe::fma_peak(gpu, 3)?;
    let mut results = tiny(gpu, tiny_archive, dtype, m)?;
    if let Some(sizes) = full_sizes {
        results.extend(full(gpu, sizes, dtype, m)?);
    }
    // Again after the models: the better reading counts (load may change meanwhile).
    let (again, layout) = super::probe::fma_peak(gpu, 3)?;
    let (fma_peak_gflops, fma_layout) = if again > fma_peak_gflops {
        (again, layout)
    } else {
        (fma_peak_gflops, fma_layout)
    };
    for r in &mut results {
        r.fraction_of_peak = r.gflops.map(|g| g / fma_peak_gflops);
    }
    Ok(ModelsReport {
        adapter: gpu.info.name.clone(),
        backend: format!("{:?}", gpu.info.backend),
        precision: precision.name().to_string(),
        dtype: dtype.wgsl().to_string(),
        fma_peak_gflops,
        fma_layout,
        cooperative_matrices: gpu.caps.coop.tile,
        results,
    })
}

/// FLOP of full-size SD2 parts (torch flop counter; see shared notes).
fn sd2_flop(unet: bool, px: usize) -> Option<f64> {
    match (unet, px) {
        (true, 256) => Some(0.36e12),
        (true, 512) => Some(1.61e12),
        (true, 768) => Some(4.30e12),
        (false, 256) => Some(0.62e12),
        (false, 512) => Some(2.51e12),
        (false, 768) => Some(5.75e12),
        _ => None,
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

/// What to measure: a name, the resolution in words, the known FLOP per call.
struct Measured<'a> {
    name: &'a str,
    resolution: String,
    flop: Option<f64>,
}

/// Loads a model through `vb` (counting its weights and parameters), then times `run`
/// and reports the peak memory of the whole measurement.
fn measure<M>(
    gpu: &Gpu,
    what: Measured,
    vb: &VarBuilder,
    m: Measure,
    load: impl FnOnce() -> Result<M>,
    mut run: impl FnMut(&mut Recorder, &M) -> Result<()>,
) -> Result<ModelResult> {
    gpu.trim();
    let before = gpu.memory_stats().in_use;
    let p0 = vb.loaded_parameters();
    let model = load()?;
    let weights = gpu.memory_stats().in_use - before;
    // The peak covers the calls only (weights, live inputs and activations).
    gpu.trim();
    gpu.reset_peak_memory();
    let mut dispatches = 0;
    let t = time_median(gpu, m.reps, |rec| {
        run(rec, &model)?;
        dispatches = rec.dispatch_count();
        Ok(())
    })?;
    let peak = gpu.memory_stats().peak;
    let kernels = if m.profile {
        let profile = Arc::new(Mutex::new(DispatchProfile::default()));
        let mut rec = Recorder::new(gpu);
        rec.set_profile(Some(profile.clone()));
        run(&mut rec, &model)?;
        rec.submit()?;
        gpu.wait()?;
        profile.lock().unwrap_or_else(|e| e.into_inner()).kernels()
    } else {
        Vec::new()
    };
    Ok(ModelResult {
        name: what.name.to_string(),
        resolution: what.resolution,
        params_millions: (vb.loaded_parameters() - p0) as f64 / 1e6,
        ms_per_call: t.as_secs_f64() * 1e3,
        gflops: what.flop.map(|f| f / t.as_secs_f64() / 1e9),
        fraction_of_peak: None,
        dispatches,
        weights_mib: mib(weights),
        peak_gpu_bytes: peak,
        peak_mib: mib(peak),
        kernels,
    })
}

fn measure_unet(
    gpu: &Gpu,
    name: &str,
    vb: &VarBuilder,
    cfg: UNetConfig,
    px: (usize, usize),
    full: bool,
    m: Measure,
) -> Result<ModelResult> {
    let (h, w) = (px.0 / 8, px.1 / 8);
    let sample = super::cases::filled(gpu, &[2, 4, h, w], DType::F32)?;
    // The text context in the UNet's storage type, as the pipeline hands it over (cast
    // once per generation; the cross-attention K/V cache then holds across calls).
    let ctx = super::cases::filled(
        gpu,
        &[2, 77, cfg.cross_attention_dim],
        vb.activation_dtype(),
    )?;
    let what = Measured {
        name,
        resolution: format!("{}x{} (latent 2x4x{h}x{w})", px.1, px.0),
        flop: if full && px.0 == px.1 {
            sd2_flop(true, px.0)
        } else {
            None
        },
    };
    measure(
        gpu,
        what,
        vb,
        m,
        || UNet2DConditionModel::load(vb, cfg),
        |rec, unet| unet.forward(rec, &sample, 501.0, &ctx).map(drop),
    )
}

fn measure_vae(
    gpu: &Gpu,
    name: &str,
    vb: &VarBuilder,
    cfg: VaeConfig,
    px: (usize, usize),
    full: bool,
    m: Measure,
) -> Result<ModelResult> {
    let latents = super::cases::filled(gpu, &[1, 4, px.0 / 8, px.1 / 8], DType::F32)?;
    let what = Measured {
        name,
        resolution: format!("{}x{}", px.1, px.0),
        flop: if full && px.0 == px.1 {
            sd2_flop(false, px.0)
        } else {
            None
        },
    };
    measure(
        gpu,
        what,
        vb,
        m,
        || VaeDecoder::load(vb, cfg),
        |rec, vae| vae.forward(rec, &latents).map(drop),
    )
}

/// The tiny bundled archive at its fixture size and at 512 px, weights in `dtype`.
pub fn tiny(gpu: &Gpu, archive: &Path, dtype: DType, m: Measure) -> Result<Vec<ModelResult>> {
    let model = open_model(archive)?;
    let unet_vb = VarBuilder::from_component(gpu, &model.component("unet")?, dtype)?
        .with_activation_dtype(dtype);
    let vae_vb = VarBuilder::from_component(gpu, &model.component("vae")?, dtype)?
        .with_activation_dtype(dtype);
    let mut out = Vec::new();
    for px in [(48, 64), (512, 512)] {
        let ucfg: UNetConfig = read_component_config(&model.root, "unet")?;
        out.push(measure_unet(
            gpu,
            "tiny unet (sd2-tiny)",
            &unet_vb,
            ucfg,
            px,
            false,
            m,
        )?);
        let vcfg: VaeConfig = read_component_config(&model.root, "vae")?;
        out.push(measure_vae(
            gpu,
            "tiny vae decode (sd2-tiny)",
            &vae_vb,
            vcfg,
            px,
            false,
            m,
        )?);
    }
    Ok(out)
}

/// Full-size SD2 (random weights in `dtype`) at `sizes` px.
pub fn full(gpu: &Gpu, sizes: &[usize], dtype: DType, m: Measure) -> Result<Vec<ModelResult>> {
    // One builder per model: a builder keeps the weights it loaded (as LoRA targets),
    // so a shared one kept the UNet's weights alive through the VAE decode's peak.
    let random = || VarBuilder::random(gpu, dtype).with_activation_dtype(dtype);
    let mut out = Vec::new();
    for &px in sizes {
        let ucfg: UNetConfig = serde_json::from_str(SD2_UNET_CONFIG)
            .map_err(|e| crate::Error::InvalidInput(e.to_string()))?;
        out.push(measure_unet(
            gpu,
            "SD2 unet (random weights)",
            &random(),
            ucfg,
            (px, px),
            true,
            m,
        )?);
        let vcfg: VaeConfig = serde_json::from_str(SD2_VAE_CONFIG)
            .map_err(|e| crate::Error::InvalidInput(e.to_string()))?;
        out.push(measure_vae(
            gpu,
            "SD2 vae decode (random weights)",
            &random(),
            vcfg,
            (px, px),
            true,
            m,
        )?);
    }
    Ok(out)
}

/// Kernels listed per profiled model in the table (the JSON has all).
const PROFILE_ROWS: usize = 12;

/// A plain-text table of model results.
pub fn table(report: &ModelsReport) -> String {
    let coop = match report.cooperative_matrices {
        Some(t) => format!("on ({t}x{t} tiles; % peak is still of the FMA probe)"),
        None => "off".to_string(),
    };
    let mut s = format!(
        "adapter: {} ({})\nprecision: {} (weights {}); FMA peak {:.1} GFLOP/s ({}); cooperative matrices {}\n\n",
        report.adapter,
        report.backend,
        report.precision,
        report.dtype,
        report.fma_peak_gflops,
        report.fma_layout,
        coop
    );
    s.push_str(&format!(
        "{:<34} {:<28} {:>9} {:>12} {:>9} {:>7} {:>10} {:>11} {:>10}\n",
        "model",
        "resolution",
        "params M",
        "ms per call",
        "GFLOP/s",
        "% peak",
        "dispatches",
        "weights MiB",
        "peak MiB"
    ));
    for r in &report.results {
        s.push_str(&format!(
            "{:<34} {:<28} {:>9.3} {:>12.1} {:>9} {:>7} {:>10} {:>11.1} {:>10.1}\n",
            r.name,
            r.resolution,
            r.params_millions,
            r.ms_per_call,
            r.gflops.map_or("-".to_string(), |g| format!("{g:.1}")),
            r.fraction_of_peak
                .map_or("-".to_string(), |f| format!("{:.1}%", 100.0 * f)),
            r.dispatches,
            r.weights_mib,
            r.peak_mib
        ));
        for k in r.kernels.iter().take(PROFILE_ROWS) {
            s.push_str(&format!(
                "    {:<30} {:>6} dispatches {:>10.1} ms {:>6.1}%\n",
                k.kernel,
                k.dispatches,
                k.ms,
                100.0 * k.fraction
            ));
        }
    }
    s
}
