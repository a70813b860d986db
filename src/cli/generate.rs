//! `wgsd generate`: text to image from a model archive, written as PNG, JPEG or `.npy`.
//!
//! Every input is checked before the GPU or the model is touched, so a bad flag costs
//! nothing and leaves no file. Images are written atomically: a temporary file in the
//! output's folder, renamed into place once complete.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;
use wgsd::Precision;
use wgsd::gpu::{AdapterChoice, Gpu};
use wgsd::lora::LoraSpec;
use wgsd::pipeline::{
    DEFAULT_GUIDANCE, DEFAULT_SIZE, DEFAULT_STEPS, GenerateRequest, Image, Pipeline,
    PipelineOptions, Progress, PromptSyntax, VaeTiling,
};
use wgsd::schedulers::{Sampler, Spacing};

#[derive(Args, Debug)]
#[command(
    after_help = "Ctrl-C (SIGINT/SIGTERM) stops between denoising steps, writes nothing and \
exits with 130; a second one exits at once."
)]
pub struct GenerateArgs {
    /// The prompt (or use --prompt).
    #[arg(value_name = "PROMPT")]
    positional_prompt: Option<String>,
    /// Model archive (.zip, TorchServe .mar), diffusers folder, or single-file checkpoint
    /// (.safetensors, .ckpt; SD 1.x / 2.x), e.g. weights/sd2-tiny.zip.
    #[arg(long, env = "WGSD_MODEL")]
    model: Option<PathBuf>,
    #[command(flatten)]
    single_file: super::convert::SingleFileArgs,
    /// The prompt.
    #[arg(long)]
    prompt: Option<String>,
    /// What the image should not show (replaces the empty unconditional prompt).
    #[arg(long)]
    negative_prompt: Option<String>,
    /// Seed of torch.Generator("cpu").manual_seed(N), as diffusers; random when absent.
    #[arg(long)]
    seed: Option<u64>,
    /// Denoising steps.
    #[arg(long, default_value_t = DEFAULT_STEPS)]
    steps: usize,
    /// Classifier-free guidance scale (<= 1 turns guidance off).
    #[arg(long, default_value_t = DEFAULT_GUIDANCE)]
    guidance: f32,
    /// Image width in pixels, a multiple of 8 (default 768, or the init image's).
    #[arg(long)]
    width: Option<usize>,
    /// Image height in pixels, a multiple of 8 (default 768, or the init image's).
    #[arg(long)]
    height: Option<usize>,
    /// img2img: start from this image (PNG or JPEG), as diffusers'
    /// StableDiffusionImg2ImgPipeline. Without --width/--height the size is the image's
    /// (rounded down to a multiple of 8); otherwise it is resized to them.
    #[arg(long, value_name = "IN.png")]
    init_image: Option<PathBuf>,
    /// Inpainting: repaint where this mask (PNG or JPEG, the init image's size) is white,
    /// as diffusers' StableDiffusionInpaintPipeline: grayscale, binarised at 0.5. Works
    /// with inpainting (9-channel) and ordinary UNets.
    #[arg(long, value_name = "MASK.png", requires = "init_image")]
    mask: Option<PathBuf>,
    /// img2img / inpainting: how much of the schedule runs, in (0, 1]; 1 ignores most of
    /// the image. Default 0.8 for img2img, 1.0 with --mask (diffusers' defaults).
    #[arg(long, requires = "init_image")]
    strength: Option<f64>,
    /// Hires fix (AUTOMATIC1111's enable_hr / hr_scale): after the image at --width x
    /// --height, an img2img pass at this factor of it (e.g. 2); the image comes out at
    /// the larger size.
    #[arg(long, value_name = "F", conflicts_with_all = ["hires_width", "hires_height"])]
    hires_scale: Option<f64>,
    /// Hires fix to this width (A1111's hr_resize_x; alone, the height keeps the aspect
    /// ratio; with --hires-height the upscale covers both and is centre-cropped).
    #[arg(long, value_name = "W")]
    hires_width: Option<usize>,
    /// Hires fix to this height (A1111's hr_resize_y).
    #[arg(long, value_name = "H")]
    hires_height: Option<usize>,
    /// Hires upscaler: "Latent" (the default), "Latent (bicubic)", "Latent (nearest)",
    /// "Latent (nearest-exact)", or the image resizes "None", "Lanczos", "Nearest".
    #[arg(long, value_name = "NAME")]
    hires_upscaler: Option<String>,
    /// Hires fix: the second pass's denoising strength in (0, 1] (default 0.7).
    #[arg(long, value_name = "S")]
    hires_strength: Option<f64>,
    /// Hires fix: the second pass's steps (0, the default: --steps); int(N * strength)
    /// of them run.
    #[arg(long, value_name = "N")]
    hires_steps: Option<usize>,
    /// Scheduler (sampler): euler_a, euler, euler_karras, lms, lms_karras, dpm++2m,
    /// dpm++2m_karras, dpm++2m_sde, dpm++2m_sde_karras, unipc, ddim, pndm; or an
    /// AUTOMATIC1111 name ("DPM++ 2M Karras") or a diffusers class name. Default: the
    /// archive's scheduler_config.json.
    #[arg(long)]
    scheduler: Option<String>,
    /// Seamless tiling: every UNet and VAE convolution pads circularly, so the image
    /// repeats without seams (AUTOMATIC1111's "Tiling").
    #[arg(long)]
    tiling: bool,
    /// Override the scheduler config's timestep_spacing: leading, trailing (few-step
    /// models such as SD-Turbo, with --guidance 0) or linspace.
    #[arg(long)]
    timestep_spacing: Option<String>,
    /// How prompts are read: plain (diffusers: the text as is, cut at 77 tokens) or a1111
    /// (AUTOMATIC1111: (emphasis:1.2), [de-emphasis], BREAK, prompts past 75 tokens in
    /// further chunks, [from:to:when] prompt editing, [a|b] alternation).
    #[arg(long, value_name = "plain|a1111", default_value = "plain")]
    prompt_syntax: PromptSyntax,
    /// A LoRA file (kohya-ss or diffusers/PEFT safetensors) and its scale (default 1.0),
    /// as diffusers' load_lora_weights + fuse_lora(lora_scale=SCALE); repeatable.
    #[arg(long = "lora", value_name = "FILE[:SCALE]")]
    loras: Vec<String>,
    /// Images to generate (one seed, drawn as one batch as diffusers does).
    #[arg(long, default_value_t = 1)]
    num_images: usize,
    /// Output file: .png, .jpg / .jpeg or .npy. Several images: out-0.png, out-1.png, ...
    #[arg(long, short, default_value = "out.png")]
    output: PathBuf,
    /// Also write each image's u8 H x W x 3 array as .npy next to it.
    #[arg(long)]
    npy: bool,
    /// Precision of weights and activations on the GPU: auto (f16 on GPUs with
    /// SHADER_F16, f32 on CPU drivers), f32 (matches diffusers float32), f16 (f32
    /// accumulation, f32 softmax and norm statistics).
    #[arg(long, value_name = "auto|f32|f16")]
    precision: Option<Precision>,
    /// Decode the image in tiles as diffusers' vae.enable_tiling() (less GPU memory, soft
    /// seams): --vae-tiling (on), --vae-tiling=off, --vae-tiling=auto (the default: tiles
    /// only when the untiled decode would not fit the GPU's memory or buffer limits).
    #[arg(long, value_name = "auto|on|off", num_args = 0..=1, require_equals = true,
          default_value = "auto", default_missing_value = "on")]
    vae_tiling: String,
    /// Alias of `--precision f16`.
    #[arg(long, conflicts_with = "precision")]
    f16: bool,
    /// Print a JSON summary (outputs, seed, adapter, per-phase timings) on stdout.
    #[arg(long)]
    json: bool,
    /// Skip the warm-up pass (one step at the requested size that builds every GPU
    /// pipeline and saves the pipeline cache for the next run).
    #[arg(long)]
    no_warmup: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Png,
    Jpeg,
    Npy,
}

impl Format {
    fn of(path: &Path) -> anyhow::Result<Format> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("png") => Ok(Format::Png),
            Some("jpg" | "jpeg") => Ok(Format::Jpeg),
            Some("npy") => Ok(Format::Npy),
            _ => bail!(
                "output {}: unsupported extension; use .png, .jpg, .jpeg or .npy",
                path.display()
            ),
        }
    }
}

#[derive(Serialize)]
struct TimingsMs {
    load: f64,
    text_encoder: f64,
    denoise: f64,
    per_step: f64,
    vae: f64,
    write: f64,
    total: f64,
}

#[derive(Serialize)]
struct AdapterSummary {
    name: String,
    backend: String,
    device_type: String,
    driver: String,
}

#[derive(Serialize)]
struct LoraSummary {
    path: PathBuf,
    scale: f32,
}

#[derive(Serialize)]
struct HiresSummary {
    /// The images' size.
    width: usize,
    height: usize,
    scale: Option<f64>,
    upscaler: &'static str,
    strength: f64,
    steps: usize,
    unet_evaluations: usize,
}

/// The hires fix the flags ask for (`None` without --hires-scale/-width/-height).
fn hires_of(args: &GenerateArgs) -> anyhow::Result<Option<wgsd::hires::HiresFix>> {
    use wgsd::hires::{HiresFix, HiresSize, Upscaler};
    let size = match (args.hires_scale, args.hires_width, args.hires_height) {
        (Some(s), _, _) => HiresSize::Scale(s),
        (None, None, None) => {
            let extra = args.hires_upscaler.is_some()
                || args.hires_strength.is_some()
                || args.hires_steps.is_some();
            if extra {
                bail!(
                    "--hires-upscaler/--hires-strength/--hires-steps need --hires-scale, --hires-width or --hires-height"
                );
            }
            return Ok(None);
        }
        (None, w, h) => HiresSize::Resize {
            width: w.unwrap_or(0),
            height: h.unwrap_or(0),
        },
    };
    let upscaler = match &args.hires_upscaler {
        Some(name) => Upscaler::parse(name).context("--hires-upscaler")?,
        None => Upscaler::default(),
    };
    Ok(Some(HiresFix {
        size,
        upscaler,
        strength: args.hires_strength.unwrap_or(wgsd::hires::DEFAULT_STRENGTH),
        steps: args.hires_steps.unwrap_or(0),
    }))
}

#[derive(Serialize)]
struct Summary {
    outputs: Vec<PathBuf>,
    prompt: String,
    negative_prompt: Option<String>,
    seed: u64,
    steps: usize,
    unet_evaluations: usize,
    guidance: f32,
    width: usize,
    height: usize,
    /// img2img: the init image and strength.
    init_image: Option<PathBuf>,
    strength: Option<f64>,
    /// The hires fix, when on.
    hires: Option<HiresSummary>,
    /// Inpainting: the mask.
    mask: Option<PathBuf>,
    num_images: usize,
    scheduler: &'static str,
    /// wgsd's sampler name (`--scheduler`'s short form).
    sampler: &'static str,
    timestep_spacing: Option<&'static str>,
    tiling: bool,
    prompt_syntax: &'static str,
    loras: Vec<LoraSummary>,
    weight_dtype: &'static str,
    /// The precision asked for (`auto`, `f32`, `f16`) and what it resolved to here.
    precision_requested: Precision,
    precision: &'static str,
    model: PathBuf,
    adapter: AdapterSummary,
    /// Seconds to load the model, and to warm up (0 with --no-warmup).
    load_s: f64,
    warmup_s: f64,
    /// `--vae-tiling` as asked (`auto`: tiled only when the untiled decode would not fit).
    vae_tiling: String,
    /// Most GPU memory the generation held: weights + the largest live set of
    /// activations (wgsd's arena; driver overhead not included).
    peak_gpu_bytes: u64,
    timings_ms: TimingsMs,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `out.png` for one image, `out-0.png`, `out-1.png`, ... for several.
fn numbered(path: &Path, i: usize, n: usize) -> PathBuf {
    if n == 1 {
        return path.to_path_buf();
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(e) => format!("{stem}-{i}.{}", e.to_string_lossy()),
        None => format!("{stem}-{i}"),
    };
    path.with_file_name(name)
}

/// The u8 array as a NumPy `.npy` (version 1.0, `|u1`, C order, shape (H, W, 3)).
fn npy_bytes(img: &Image) -> Vec<u8> {
    let dict = format!(
        "{{'descr': '|u1', 'fortran_order': False, 'shape': ({}, {}, 3), }}",
        img.height, img.width
    );
    // magic (6) + version (2) + header length (2) + dict + padding + '\n', to 64 bytes.
    let unpadded = 10 + dict.len() + 1;
    let pad = unpadded.next_multiple_of(64) - unpadded;
    let header = format!("{dict}{}\n", " ".repeat(pad));
    let mut out = Vec::with_capacity(10 + header.len() + img.data.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&img.data);
    out
}

/// The image in `format`; a PNG carries `parameters` (A1111's text chunk).
fn encode(img: &Image, format: Format, parameters: &str) -> anyhow::Result<Vec<u8>> {
    match format {
        Format::Npy => Ok(npy_bytes(img)),
        Format::Png => wgsd::png_info::encode_png(img.width, img.height, &img.data, parameters)
            .context("encoding the PNG"),
        Format::Jpeg => {
            let buf =
                image::RgbImage::from_raw(img.width as u32, img.height as u32, img.data.clone())
                    .context("image buffer has the wrong size")?;
            let mut out = std::io::Cursor::new(Vec::new());
            buf.write_to(&mut out, image::ImageFormat::Jpeg)
                .context("encoding the JPEG")?;
            Ok(out.into_inner())
        }
    }
}

/// Writes `bytes` to a temporary file beside `path`, then renames it into place.
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".wgsd-").suffix(".tmp");
    // tempfile's default 0600 is for secrets; an image gets the usual 0666 minus umask.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut tmp = builder
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// A one-line progress bar on stderr: steps, rate and ETA.
struct Bar {
    enabled: bool,
}

impl Bar {
    fn update(&self, p: &Progress) {
        if !self.enabled {
            return;
        }
        let secs = p.elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            p.step as f64 / secs
        } else {
            0.0
        };
        let eta = if rate > 0.0 {
            (p.total - p.step) as f64 / rate
        } else {
            0.0
        };
        const WIDTH: usize = 30;
        let filled = WIDTH * p.step / p.total.max(1);
        let speed = if rate >= 1.0 || rate == 0.0 {
            format!("{rate:.2} it/s")
        } else {
            format!("{:.2} s/it", 1.0 / rate)
        };
        eprint!(
            "\r[{}{}] {}/{} {speed} ETA {:.0}s   ",
            "#".repeat(filled),
            "-".repeat(WIDTH - filled),
            p.step,
            p.total,
            eta
        );
        if p.step == p.total {
            eprintln!();
        }
    }
}

pub fn run(choice: &AdapterChoice, args: &GenerateArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    // Everything the user typed is checked before any work starts.
    let prompt = match (&args.positional_prompt, &args.prompt) {
        (Some(_), Some(_)) => {
            bail!("give the prompt either as an argument or with --prompt, not both")
        }
        (Some(p), None) | (None, Some(p)) => p.clone(),
        (None, None) => bail!("no prompt: wgsd generate --model MODEL \"a prompt\""),
    };
    let Some(model) = &args.model else {
        bail!(
            "no model: pass --model PATH (a model.zip, .mar, diffusers folder or .safetensors), e.g. \
             --model weights/sd2-tiny.zip for the bundled tiny model"
        );
    };
    if !model.exists() {
        bail!("model {}: no such file or folder", model.display());
    }
    let init_image = args
        .init_image
        .as_deref()
        .map(|p| {
            let bytes =
                std::fs::read(p).with_context(|| format!("--init-image {}", p.display()))?;
            wgsd::img2img::decode_image(&bytes)
                .with_context(|| format!("--init-image {}", p.display()))
        })
        .transpose()?;
    let mask = args
        .mask
        .as_deref()
        .map(|p| {
            let bytes = std::fs::read(p).with_context(|| format!("--mask {}", p.display()))?;
            wgsd::inpaint::Mask::decode(&bytes).with_context(|| format!("--mask {}", p.display()))
        })
        .transpose()?;
    if let (Some(m), Some(img)) = (&mask, &init_image)
        && (m.width, m.height) != (img.width, img.height)
    {
        bail!(
            "--mask is {} x {} but --init-image is {} x {}; they must be the same size",
            m.width,
            m.height,
            img.width,
            img.height
        );
    }
    let strength = args.strength.unwrap_or(if mask.is_some() {
        wgsd::inpaint::DEFAULT_STRENGTH
    } else {
        wgsd::img2img::DEFAULT_STRENGTH
    });
    let (width, height) = match &init_image {
        // VaeImageProcessor: the image's size rounded down to a multiple of 8.
        Some(img) => (
            args.width.unwrap_or(img.width / 8 * 8),
            args.height.unwrap_or(img.height / 8 * 8),
        ),
        None => (
            args.width.unwrap_or(DEFAULT_SIZE),
            args.height.unwrap_or(DEFAULT_SIZE),
        ),
    };
    if width == 0 || height == 0 || !width.is_multiple_of(8) || !height.is_multiple_of(8) {
        bail!("width and height must be positive multiples of 8, got {width} x {height}");
    }
    if init_image.is_some() {
        wgsd::img2img::t_start(args.steps, strength).context("--strength with --steps")?;
    }
    let init_image = init_image
        .map(|img| {
            if (img.width, img.height) != (width, height) {
                eprintln!(
                    "resizing the init image from {} x {} to {width} x {height}",
                    img.width, img.height
                );
            }
            wgsd::img2img::resize(&img, width, height).map(Arc::new)
        })
        .transpose()?;
    // The mask goes with the image: stretched to the same size.
    let mask = mask
        .map(|m| m.resized(width, height).map(Arc::new))
        .transpose()?;
    if args.steps == 0 {
        bail!("--steps must be at least 1");
    }
    if args.num_images == 0 {
        bail!("--num-images must be at least 1");
    }
    if !args.guidance.is_finite() {
        bail!("--guidance must be a finite number");
    }
    let scheduler = args.scheduler.as_deref().map(Sampler::parse).transpose()?;
    let hires = hires_of(args)?;
    if let Some(h) = &hires {
        if init_image.is_some() {
            bail!("the hires fix (--hires-*) is for text to image; it cannot take --init-image");
        }
        wgsd::hires::check(h, args.steps).context("--hires-strength with --hires-steps")?;
        wgsd::hires::target_size(h, width, height, wgsd::hires::MAX_TARGET_SIDE)
            .context("--hires-scale / --hires-width / --hires-height")?;
    }
    let timestep_spacing = args
        .timestep_spacing
        .as_deref()
        .map(Spacing::parse)
        .transpose()?;
    let vae_tiling = VaeTiling::parse(&args.vae_tiling)?;
    let loras = args
        .loras
        .iter()
        .map(|s| LoraSpec::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    let format = Format::of(&args.output)?;
    let out_dir = match args.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !out_dir.is_dir() {
        bail!("output folder {} does not exist", out_dir.display());
    }
    let single_file = args.single_file.options()?;
    let seed = args.seed.unwrap_or_else(random_seed);

    // Ctrl-C stops between denoising steps (a signal during loading or warm-up stops
    // before the first); nothing is written.
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    super::signals::on_interrupt(
        move || {
            eprintln!("\nwgsd generate: interrupted, stopping after this step (again to exit now)");
            flag.store(true, Ordering::SeqCst);
        },
        "wgsd generate: second signal, exiting now",
    )?;
    let gpu = Gpu::new(choice)?;
    let options = PipelineOptions {
        precision: if args.f16 {
            Precision::F16
        } else {
            args.precision.unwrap_or_default()
        },
        archive: wgsd::loader::ArchiveOptions {
            single_file,
            ..wgsd::loader::ArchiveOptions::default()
        },
    };
    let pipe = Pipeline::load(&gpu, model, &options)
        .with_context(|| format!("loading {}", model.display()))?;
    let load = start.elapsed();
    for k in pipe.unused_weights() {
        eprintln!("warning: weight {k} is not used");
    }
    // A LoRA for another model fails here, before the warm-up; the run reuses the fusion.
    pipe.lora_overrides(&loras).context("applying --lora")?;
    let warmup = if args.no_warmup {
        Duration::ZERO
    } else {
        pipe.warm_up(width, height, args.num_images)
            .context("warming up")?
            .elapsed
    };
    eprintln!(
        "loaded in {:.1} s, warmed up in {:.1} s",
        load.as_secs_f64(),
        warmup.as_secs_f64()
    );

    let req = GenerateRequest {
        prompts: vec![prompt.clone()],
        negative_prompts: args.negative_prompt.iter().cloned().collect(),
        seed,
        steps: args.steps,
        guidance: args.guidance,
        width,
        height,
        num_images_per_prompt: args.num_images,
        scheduler,
        timestep_spacing,
        trace: false,
        vae_tiling,
        tiling: args.tiling,
        preview: false,
        prompt_syntax: args.prompt_syntax,
        loras: loras.clone(),
        init_image,
        strength,
        mask,
        hires,
        ..GenerateRequest::default()
    };
    let bar = Bar {
        enabled: std::io::stderr().is_terminal(),
    };
    gpu.reset_peak_memory();
    let out = match pipe.generate_with(&req, &mut |p| bar.update(p), Some(&cancel)) {
        Err(wgsd::Error::Cancelled { completed, total }) => {
            eprintln!("wgsd generate: stopped after {completed} of {total} steps; nothing written");
            std::process::exit(130);
        }
        other => other?,
    };
    for &(_, dropped) in &out.truncated {
        eprintln!(
            "warning: the prompt is longer than the text encoder's 77 tokens; {dropped} tokens were cut"
        );
    }

    let t_write = Instant::now();
    let parameters = wgsd::png_info::format(&wgsd::png_info::GenParams {
        prompt: prompt.clone(),
        negative_prompt: args.negative_prompt.clone().unwrap_or_default(),
        steps: args.steps,
        scheduler: Some(out.scheduler),
        guidance_scale: args.guidance,
        seed,
        width,
        height,
        model_hash: pipe
            .model()
            .sha256
            .as_deref()
            .map(wgsd::png_info::short_hash),
        model: model.file_stem().map(|s| s.to_string_lossy().into_owned()),
        denoising_strength: match (&args.init_image, &hires) {
            (Some(_), _) => Some(strength),
            (None, Some(h)) => Some(h.strength),
            (None, None) => None,
        },
        hires,
        lora_hashes: Vec::new(),
    });
    let n = out.images.len();
    let mut outputs = Vec::new();
    for (i, img) in out.images.iter().enumerate() {
        let path = numbered(&args.output, i, n);
        write_atomic(&path, &encode(img, format, &parameters)?)?;
        outputs.push(path.clone());
        if args.npy && format != Format::Npy {
            let npy = path.with_extension("npy");
            write_atomic(&npy, &npy_bytes(img))?;
            outputs.push(npy);
        }
    }
    let write = t_write.elapsed();

    if args.json {
        let info = &gpu.info;
        let summary = Summary {
            outputs,
            prompt,
            negative_prompt: args.negative_prompt.clone(),
            seed,
            steps: args.steps,
            unet_evaluations: out.timesteps.len(),
            guidance: args.guidance,
            width,
            height,
            init_image: args.init_image.clone(),
            strength: args.init_image.is_some().then_some(strength),
            mask: args.mask.clone(),
            hires: hires.map(|h| HiresSummary {
                width: out.images.first().map_or(0, |i| i.width),
                height: out.images.first().map_or(0, |i| i.height),
                scale: match h.size {
                    wgsd::hires::HiresSize::Scale(s) => Some(s),
                    wgsd::hires::HiresSize::Resize { .. } => None,
                },
                upscaler: h.upscaler.name(),
                strength: h.strength,
                steps: wgsd::hires::second_pass_steps(&h, args.steps),
                unet_evaluations: out.timesteps.len(),
            }),
            num_images: n,
            scheduler: out.scheduler.diffusers_name(),
            sampler: out.scheduler.name(),
            timestep_spacing: timestep_spacing.map(Spacing::as_str),
            tiling: args.tiling,
            prompt_syntax: args.prompt_syntax.as_str(),
            loras: loras
                .iter()
                .map(|l| LoraSummary {
                    path: l.path.clone(),
                    scale: l.scale,
                })
                .collect(),
            weight_dtype: pipe.weight_dtype().wgsl(),
            precision_requested: options.precision,
            precision: pipe.precision().wgsl(),
            model: model.clone(),
            load_s: load.as_secs_f64(),
            warmup_s: warmup.as_secs_f64(),
            vae_tiling: args.vae_tiling.clone(),
            peak_gpu_bytes: gpu.memory_stats().peak,
            adapter: AdapterSummary {
                name: info.name.clone(),
                backend: format!("{:?}", info.backend),
                device_type: format!("{:?}", info.device_type),
                driver: format!("{} {}", info.driver, info.driver_info)
                    .trim()
                    .to_string(),
            },
            timings_ms: TimingsMs {
                load: ms(load),
                text_encoder: ms(out.timings.text_encoder),
                denoise: ms(out.timings.denoise),
                per_step: ms(out.timings.denoise) / out.timesteps.len().max(1) as f64,
                vae: ms(out.timings.vae),
                write: ms(write),
                total: ms(start.elapsed()),
            },
        };
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        for p in &outputs {
            eprintln!("wrote {}", p.display());
        }
        eprintln!(
            "seed {seed}, {} ({}) on {} in {:.1}s",
            out.scheduler.a1111_name(),
            out.scheduler.diffusers_name(),
            gpu.info.name,
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// A seed when none is given (printed, so the image can be reproduced).
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    // Keep it below 2^53 so it survives JSON number round trips.
    h.finish() >> 11
}
