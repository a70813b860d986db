//! Text to image, mirroring diffusers' `StableDiffusionPipeline.__call__` (0.42) in its
//! order of operations:
//!
//! 1. tokenise the prompts (padded to 77) and the negative prompts (`""` when none), run
//!    CLIP; each prompt's embedding is repeated `num_images_per_prompt` times
//!    (`[p0, p0, p1, p1]`), and with guidance the batch is `[uncond...; cond...]`;
//! 2. `scheduler.set_timesteps(steps)`; the initial latents are ONE
//!    `torch.randn([B * n, 4, h / 8, w / 8])` draw from `torch.Generator("cpu").manual_seed(seed)`,
//!    times `init_noise_sigma`;
//! 3. per timestep: UNet input `cat([latents] * 2)` (guidance > 1 only) times the
//!    scheduler's `scale_model_input` factor, the UNet, then the guidance combine
//!    `u + g (c - u)` fused with the scheduler update on the GPU; ancestral samplers draw
//!    their noise from the same generator at each step;
//! 4. the VAE decodes `latents / scaling_factor`, then `clamp(x / 2 + 0.5, 0, 1) * 255`,
//!    rounded half to even, channels last.
//!
//! [`Pipeline::generate_batch`] runs several requests (the server's dynamic batching)
//! through the same steps as one batch: their rows are laid side by side in each half of
//! the guidance batch, and each request's latents (and ancestral noise) are drawn from its
//! own generator with its own shape, so every request gets the draws its solo run gets.
//!
//! Each step is recorded into one [`Recorder`] and submitted once; the CPU only waits for
//! the step to finish (for progress and cancellation), and reads back the images (and,
//! when a trace is asked for, the intermediate latents).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::conditioning::{self, TextStage};
use crate::error::{Error, Result};
use crate::gpu::{DType, Gpu, Recorder, Tensor, WeightOverrides};
pub use crate::hires::HiresFix;
use crate::loader::{ArchiveOptions, ClipTextConfig, ModelDir, VarBuilder, open_model_with};
pub use crate::lora::LoraSpec;
use crate::lora::{self, LoraCache, ModelTargets};
use crate::models::clip::ClipTextModel;
use crate::models::config::{UNetConfig, VaeConfig};
use crate::models::unet::UNet2DConditionModel;
use crate::models::vae::VaeDecoder;
use crate::models::vae_encoder::VaeEncoder;
pub use crate::models::vae_tiling::VaeTiling;
use crate::ops;
use crate::precision::Precision;
pub use crate::prompt::PromptSyntax;
use crate::rng::TorchGenerator;
use crate::schedulers::{self, Sampler, SchedulerConfig, Spacing};
use crate::tokenizer::Tokenizer;

/// The original deployment's defaults (SD 2 at 768 x 768).
pub const DEFAULT_SIZE: usize = 768;
pub const DEFAULT_STEPS: usize = 50;
pub const DEFAULT_GUIDANCE: f32 = 7.5;

/// How to load a pipeline.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// How weights and activations are stored (`auto`: f16 on GPUs with SHADER_F16, f32
    /// on CPU drivers; see [`Precision`]).
    pub precision: Precision,
    /// Where archives are extracted.
    pub archive: ArchiveOptions,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            precision: Precision::Auto,
            archive: ArchiveOptions::default(),
        }
    }
}

/// One text-to-image call.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// One or more prompts (the batch).
    pub prompts: Vec<String>,
    /// None, one for every prompt, or one per prompt. Empty means `""` (diffusers).
    pub negative_prompts: Vec<String>,
    /// `torch.Generator("cpu").manual_seed(seed)`.
    pub seed: u64,
    pub steps: usize,
    /// Classifier-free guidance scale; `<= 1` skips the unconditional pass.
    pub guidance: f32,
    pub width: usize,
    pub height: usize,
    pub num_images_per_prompt: usize,
    /// `None`: the archive's `scheduler_config.json` class.
    pub scheduler: Option<Sampler>,
    /// Overrides the scheduler config's `timestep_spacing` (`Trailing` for few-step models
    /// such as SD-Turbo).
    pub timestep_spacing: Option<Spacing>,
    /// Read back the intermediate tensors into [`Generated::trace`] (slower; for tests).
    pub trace: bool,
    /// Decode in tiles as diffusers' `vae.enable_tiling()`; `Auto` tiles when the untiled
    /// decode would not fit the memory budget (see `models::vae_tiling`).
    pub vae_tiling: VaeTiling,
    /// Seamless tiling (AUTOMATIC1111's `tiling`): every UNet and VAE convolution pads
    /// circularly, so the image repeats without seams. Needs an untiled VAE decode.
    pub tiling: bool,
    /// Hand [`Progress::previews`] to the progress callback after each step: the latents
    /// through the linear latent-to-RGB approximation, on the GPU at latent resolution.
    /// Off, a step costs nothing more.
    pub preview: bool,
    /// How the prompts and negative prompts are read (diffusers' plain text, or
    /// AUTOMATIC1111's syntax on its API).
    pub prompt_syntax: PromptSyntax,
    /// LoRAs applied for this request only (fused copies of the weights they change,
    /// cached for the next request with the same set; the base weights stay loaded).
    pub loras: Vec<LoraSpec>,
    /// When set (AUTOMATIC1111's `interrupt` / `skip`), denoising stops before the next
    /// step and the latents as they are go through the VAE: the request still gets its
    /// (less denoised) images, as A1111 returns them. In a batch, the run finishes early
    /// once every request in it has its flag set.
    pub finish_early: Option<Arc<AtomicBool>>,
    /// img2img (diffusers' `StableDiffusionImg2ImgPipeline`, see `crate::img2img`): the
    /// image the latents start from, `width x height`. `None`: text to image.
    pub init_image: Option<Arc<Image>>,
    /// img2img's `strength` in (0, 1]: the share of the schedule that runs (diffusers'
    /// default 0.8). f64 because diffusers computes `int(steps * strength)` in Python
    /// floats (0.7 * 10 must be 7, which f32's 0.7 is not). Unused without `init_image`.
    pub strength: f64,
    /// AUTOMATIC1111's hires fix (text to image only, see `crate::hires`): a second,
    /// img2img pass at a larger size. The images come out at the hires target size.
    pub hires: Option<HiresFix>,
    /// Inpainting (diffusers' `StableDiffusionInpaintPipeline`, see `crate::inpaint`): the
    /// grayscale mask over `init_image` (white repaints), the init image's size. Set
    /// `strength` too: diffusers' inpainting default is 1.0
    /// ([`crate::inpaint::DEFAULT_STRENGTH`]), not img2img's 0.8.
    pub mask: Option<Arc<crate::inpaint::Mask>>,
}

impl Default for GenerateRequest {
    fn default() -> Self {
        GenerateRequest {
            prompts: Vec::new(),
            negative_prompts: Vec::new(),
            seed: 0,
            steps: DEFAULT_STEPS,
            guidance: DEFAULT_GUIDANCE,
            width: DEFAULT_SIZE,
            height: DEFAULT_SIZE,
            num_images_per_prompt: 1,
            scheduler: None,
            timestep_spacing: None,
            trace: false,
            vae_tiling: VaeTiling::Auto,
            tiling: false,
            preview: false,
            prompt_syntax: PromptSyntax::Plain,
            loras: Vec::new(),
            finish_early: None,
            init_image: None,
            strength: crate::img2img::DEFAULT_STRENGTH,
            hires: None,
            mask: None,
        }
    }
}

impl GenerateRequest {
    /// A request for one prompt with the defaults.
    pub fn new(prompt: impl Into<String>) -> Self {
        GenerateRequest {
            prompts: vec![prompt.into()],
            ..GenerateRequest::default()
        }
    }
}

/// One image: `height * width * 3` bytes, RGB, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// Wall-clock time per phase (each phase waits for its GPU work).
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    pub text_encoder: Duration,
    pub denoise: Duration,
    pub vae: Duration,
}

/// Intermediate tensors (f32, row-major) in the fixture's names.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// `[B * n, 77, D]`.
    pub prompt_embeds: Vec<f32>,
    /// `[B * n, 77, D]`, absent when guidance <= 1.
    pub negative_prompt_embeds: Option<Vec<f32>>,
    /// The raw randn draw `[B * n, 4, h, w]`.
    pub init_noise: Vec<f32>,
    /// `init_noise * init_noise_sigma` (img2img: the noised image latents).
    pub latents_init: Vec<f32>,
    /// img2img: the VAE encoder's moments `[N, 2C, h, w]` of each request's image.
    pub init_image_moments: Vec<f32>,
    /// img2img: the latent sample times `scaling_factor`, before noise, `[N, C, h, w]`.
    pub init_image_latents: Vec<f32>,
    /// The first UNet call's input and output (CFG batch `[uncond; cond]`).
    pub unet0_sample: Vec<f32>,
    pub unet0_out: Vec<f32>,
    /// Latents after each timestep.
    pub steps: Vec<Vec<f32>>,
    pub final_latents: Vec<f32>,
    pub latent_shape: [usize; 4],
    /// Hires fix: the first pass's final latents, and the upscaled latents a latent
    /// upscaler hands the second pass (the rest of the trace is the second pass's).
    pub hires_first_latents: Vec<f32>,
    pub hires_upscaled_latents: Vec<f32>,
}

/// What [`Pipeline::generate`] returns.
#[derive(Debug, Clone)]
pub struct Generated {
    /// `B * n` images, in diffusers' order (`[p0 img0, p0 img1, p1 img0, ...]`).
    pub images: Vec<Image>,
    pub seed: u64,
    pub scheduler: Sampler,
    /// The timesteps the UNet saw (PNDM: steps + 1).
    pub timesteps: Vec<f64>,
    pub timings: Timings,
    /// Prompts whose tokens did not all fit (index, tokens dropped), as diffusers warns.
    pub truncated: Vec<(usize, usize)>,
    /// Denoising steps run: fewer than `timesteps.len()` when the request's
    /// [`finish_early`](GenerateRequest::finish_early) flag stopped it.
    pub steps_done: usize,
    pub trace: Option<Trace>,
}

/// Reported after each denoising step.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// Steps done (1-based after the first step).
    pub step: usize,
    pub total: usize,
    pub timestep: f64,
    /// Since the first step started.
    pub elapsed: Duration,
    /// One preview per latent row of the batch (in the order of the images), latent
    /// resolution, when a request asked for them ([`GenerateRequest::preview`]) and the
    /// model has 4 latent channels; empty otherwise.
    pub previews: &'a [Image],
}

/// A loaded Stable Diffusion pipeline on one GPU.
pub struct Pipeline<'g> {
    gpu: &'g Gpu,
    model: ModelDir,
    tokenizer: Tokenizer,
    text_encoder: ClipTextModel,
    unet: UNet2DConditionModel,
    vae: VaeDecoder,
    /// The VAE's encoder half, loaded on the first img2img request.
    vae_encoder: std::sync::OnceLock<VaeEncoder>,
    scheduler_config: SchedulerConfig,
    default_scheduler: Sampler,
    weight_dtype: DType,
    unused_weights: Vec<String>,
    /// The UNet's and text encoder's Linear / Conv2d weights, by module name.
    lora_targets: ModelTargets,
    lora_cache: LoraCache,
}

impl std::fmt::Debug for Pipeline<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("model", &self.model.root)
            .field("scheduler", &self.default_scheduler)
            .field("weight_dtype", &self.weight_dtype)
            .finish_non_exhaustive()
    }
}

fn component_vb<'g>(
    gpu: &'g Gpu,
    model: &ModelDir,
    name: &str,
    dtype: DType,
) -> Result<VarBuilder<'g>> {
    VarBuilder::from_component(gpu, &model.component(name)?, dtype)
}

impl<'g> Pipeline<'g> {
    /// Loads a model archive (`.zip`, `.mar`) or a diffusers folder.
    pub fn load(gpu: &'g Gpu, path: &Path, options: &PipelineOptions) -> Result<Pipeline<'g>> {
        options.precision.check(gpu)?;
        let dtype = options.precision.resolve(gpu);
        let model = open_model_with(path, &options.archive)?;
        let root = model.root.clone();
        let tokenizer = Tokenizer::from_dir(&root.join("tokenizer"))?;

        let mut unused = Vec::new();
        let vb = component_vb(gpu, &model, "text_encoder", dtype)?;
        let text_encoder = ClipTextModel::load(&vb, ClipTextConfig::read(&root)?)?;
        unused.extend(vb.unused_keys());
        let text_encoder_targets = vb.lora_targets().clone();
        let unet_config: UNetConfig = crate::loader::read_component_config(&root, "unet")?;
        if unet_config.time_cond_proj_dim.is_some() {
            return Err(Error::InvalidInput(
                "unet config: time_cond_proj_dim (LCM guidance embedding) is not supported".into(),
            ));
        }
        let vb = component_vb(gpu, &model, "unet", dtype)?.with_activation_dtype(dtype);
        let unet = UNet2DConditionModel::load(&vb, unet_config)?;
        unused.extend(vb.unused_keys());
        let lora_targets = ModelTargets::new(vb.lora_targets(), &text_encoder_targets);
        let vae_config: VaeConfig = crate::loader::read_component_config(&root, "vae")?;
        let vb = component_vb(gpu, &model, "vae", dtype)?.with_activation_dtype(dtype);
        let vae = VaeDecoder::load(&vb, vae_config)?;
        // The encoder half of the VAE is loaded on the first img2img request.
        unused.extend(
            vb.unused_keys()
                .into_iter()
                .filter(|k| !k.starts_with("encoder.") && !k.starts_with("quant_conv.")),
        );

        let sched_dir = model.component("scheduler")?;
        let scheduler_config =
            SchedulerConfig::from_file(&sched_dir.join("scheduler_config.json"))?;
        let default_scheduler = scheduler_config.class()?;
        // Fail now, not at the first request, when the config cannot build its class.
        schedulers::from_config(&scheduler_config, None)?;
        Ok(Pipeline {
            gpu,
            model,
            tokenizer,
            text_encoder,
            unet,
            vae,
            vae_encoder: std::sync::OnceLock::new(),
            scheduler_config,
            default_scheduler,
            weight_dtype: dtype,
            unused_weights: unused,
            lora_targets,
            lora_cache: LoraCache::default(),
        })
    }

    pub fn gpu(&self) -> &'g Gpu {
        self.gpu
    }

    /// The extracted model folder and where it came from.
    pub fn model(&self) -> &ModelDir {
        &self.model
    }

    /// The plain sampler of the archive's scheduler class (`scheduler_config.json`
    /// `_class_name`).
    pub fn default_scheduler(&self) -> Sampler {
        self.default_scheduler
    }

    /// How weights (and activations) are stored: the resolved precision.
    pub fn weight_dtype(&self) -> DType {
        self.weight_dtype
    }

    /// The precision this pipeline runs in (`F32` or `F16`).
    pub fn precision(&self) -> DType {
        self.weight_dtype
    }

    /// Weights in the files that no module read (the VAE encoder excepted).
    pub fn unused_weights(&self) -> &[String] {
        &self.unused_weights
    }

    /// The size the model was trained at: the UNet's `sample_size` (diffusers' default
    /// 64 when absent) times the VAE scale factor, as (width, height).
    pub fn native_size(&self) -> (usize, usize) {
        let side = self.unet.config.sample_size.unwrap_or(64) * self.vae_scale_factor();
        (side, side)
    }

    /// The UNet's input channels: 4, or 9 for an inpainting model.
    pub fn unet_in_channels(&self) -> usize {
        self.unet.config.in_channels
    }

    /// Pixels per latent cell: `2 ** (len(vae.block_out_channels) - 1)`, as diffusers.
    pub fn vae_scale_factor(&self) -> usize {
        1 << self.vae.config.block_out_channels.len().saturating_sub(1)
    }

    /// The VAE encoder (img2img), loaded from the `vae/` weights on first use so that
    /// text to image never holds it.
    pub fn vae_encoder(&self) -> Result<&VaeEncoder> {
        if let Some(e) = self.vae_encoder.get() {
            return Ok(e);
        }
        let vb = component_vb(self.gpu, &self.model, "vae", self.weight_dtype)?
            .with_activation_dtype(self.weight_dtype);
        let encoder = VaeEncoder::load(&vb, self.vae.config.clone())?;
        // Another thread may have won the race; either copy is the same model.
        let _ = self.vae_encoder.set(encoder);
        self.vae_encoder
            .get()
            .ok_or_else(|| Error::Gpu("the VAE encoder did not load".into()))
    }

    /// Whether the VAE encoder is loaded (after the first img2img request).
    pub fn vae_encoder_loaded(&self) -> bool {
        self.vae_encoder.get().is_some()
    }

    /// Runs a request with no progress reporting and no cancellation.
    pub fn generate(&self, req: &GenerateRequest) -> Result<Generated> {
        self.generate_with(req, &mut |_| {}, None)
    }

    /// The fused weights of `loras` (read, checked against this model and fused now
    /// unless the last request had the same set); None for no LoRA. A LoRA for another
    /// model is an [`Error::Lora`].
    pub fn lora_overrides(&self, loras: &[LoraSpec]) -> Result<Option<Arc<WeightOverrides>>> {
        self.lora_cache
            .overrides(self.gpu, &self.lora_targets, loras)
    }

    /// Checks a request without running it (sizes, counts, prompts).
    pub fn validate(&self, req: &GenerateRequest) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidInput(m));
        let f = self.vae_scale_factor();
        if req.prompts.is_empty() {
            return bad("at least one prompt is needed".into());
        }
        if req.width == 0
            || req.height == 0
            || !req.width.is_multiple_of(f)
            || !req.height.is_multiple_of(f)
        {
            return bad(format!(
                "width and height must be positive multiples of {f}, got {} x {}",
                req.width, req.height
            ));
        }
        if req.steps == 0 {
            return bad("steps must be at least 1".into());
        }
        if req.num_images_per_prompt == 0 {
            return bad("num_images_per_prompt must be at least 1".into());
        }
        if !req.guidance.is_finite() {
            return bad(format!(
                "guidance must be a finite number, got {}",
                req.guidance
            ));
        }
        if let Some(l) = req.loras.iter().find(|l| !l.scale.is_finite()) {
            return bad(format!(
                "LoRA {}: the scale must be finite",
                l.path.display()
            ));
        }
        if req.tiling && req.vae_tiling == VaeTiling::On {
            return bad(
                "seamless tiling wraps the whole image around: it cannot be combined with a tiled VAE decode".into(),
            );
        }
        if let Some(img) = &req.init_image {
            if (img.width, img.height) != (req.width, req.height) {
                return bad(format!(
                    "the init image is {} x {} but the request asks for {} x {}; resize it or give its size",
                    img.width, img.height, req.width, req.height
                ));
            }
            if img.data.len() != img.width * img.height * 3 {
                return bad("the init image's pixel data does not match its size".into());
            }
            crate::img2img::t_start(req.steps, req.strength)?;
        }
        if let Some(h) = &req.hires {
            if req.init_image.is_some() {
                return bad(
                    "the hires fix is for text to image; it cannot take an init image".into(),
                );
            }
            crate::hires::check(h, req.steps)?;
            crate::hires::target_size(h, req.width, req.height, crate::hires::MAX_TARGET_SIDE)?;
        }
        crate::inpaint::validate(req, self.unet.config.in_channels)?;
        let (nn, np) = (req.negative_prompts.len(), req.prompts.len());
        if nn > 1 && nn != np {
            return bad(format!(
                "{nn} negative prompts for {np} prompts; give none, one, or one per prompt"
            ));
        }
        Ok(())
    }

    /// Runs a request, calling `progress` after each step and stopping between steps
    /// (with [`Error::Cancelled`]) once `cancel` is set.
    pub fn generate_with(
        &self,
        req: &GenerateRequest,
        progress: &mut dyn FnMut(&Progress),
        cancel: Option<&AtomicBool>,
    ) -> Result<Generated> {
        let mut out = self.run(&[req], progress, cancel)?;
        out.pop()
            .ok_or_else(|| Error::Gpu("the pipeline returned no result".into()))
    }

    /// What must be equal for two requests to run as one batch ([`generate_batch`]);
    /// `None` for a request that must run alone (one that asks for a trace).
    ///
    /// [`generate_batch`]: Pipeline::generate_batch
    pub fn batch_key(&self, req: &GenerateRequest) -> Option<BatchKey> {
        if req.trace {
            return None;
        }
        // A1111 contexts are as long as their longest prompt; a batch shares one length.
        // A request whose prompts do not tokenize runs alone (and fails there).
        let prompt_chunks = match req.prompt_syntax {
            PromptSyntax::Plain => 1,
            PromptSyntax::A1111 => conditioning::a1111_chunk_count(&self.tokenizer, req).ok()?,
        };
        Some(BatchKey {
            width: req.width,
            height: req.height,
            steps: req.steps,
            guidance_bits: req.guidance.to_bits(),
            scheduler: req.scheduler.unwrap_or(self.default_scheduler),
            timestep_spacing: req.timestep_spacing,
            vae_tiling: req.vae_tiling,
            tiling: req.tiling,
            prompt_syntax: req.prompt_syntax,
            prompt_chunks,
            loras: lora::set_key(&req.loras),
            strength_bits: req.init_image.as_ref().map(|_| req.strength.to_bits()),
            hires: req.hires.as_ref().map(HiresFix::key),
            inpaint: req.mask.is_some(),
        })
    }

    /// Runs several requests as one batch: one text-encoder pass, one UNet pass per step
    /// and one VAE pass for all of them. Each request keeps its own prompts, negative
    /// prompts, image count and seed (its latents, and an ancestral sampler's per-step
    /// noise, come from its own generator, drawn as [`generate`](Pipeline::generate)
    /// draws them), so each gets the images it would get alone. The requests must share a
    /// [`batch_key`](Pipeline::batch_key). Results are in the requests' order.
    pub fn generate_batch(
        &self,
        reqs: &[GenerateRequest],
        progress: &mut dyn FnMut(&Progress),
        cancel: Option<&AtomicBool>,
    ) -> Result<Vec<Generated>> {
        let items: Vec<&GenerateRequest> = reqs.iter().collect();
        self.run(&items, progress, cancel)
    }

    fn run(
        &self,
        items: &[&GenerateRequest],
        progress: &mut dyn FnMut(&Progress),
        cancel: Option<&AtomicBool>,
    ) -> Result<Vec<Generated>> {
        if items.first().is_some_and(|r| r.hires.is_some()) {
            for r in items {
                self.validate(r)?;
            }
            return crate::hires::run(self, items, progress, cancel);
        }
        let out = self.run_pass(items, progress, cancel, PassStart::Request, true)?;
        Ok(out.generated)
    }

    /// The denoising steps a request's pass runs (`from_image`: an img2img schedule
    /// trimmed by its strength), as the progress reports count them.
    pub(crate) fn pass_steps(&self, req: &GenerateRequest, from_image: bool) -> Result<usize> {
        let class = req.scheduler.unwrap_or(self.default_scheduler);
        let config = self.scheduler_config.with_spacing(req.timestep_spacing);
        let mut sched = schedulers::from_config(&config, Some(class))?;
        sched.set_timesteps(req.steps)?;
        let begin = if from_image {
            crate::img2img::t_start(req.steps, req.strength)?
        } else {
            0
        };
        Ok(sched.timesteps().len().saturating_sub(begin))
    }

    /// Decodes latents to u8 images (the VAE, then `ops::image::to_u8`).
    pub(crate) fn decode_latents(
        &self,
        rec: &mut Recorder,
        latents: &Tensor,
        vae_tiling: VaeTiling,
    ) -> Result<Vec<Image>> {
        let decoded = self.vae.forward_tiling(rec, latents, vae_tiling)?;
        let u8s = ops::image::to_u8(rec, &decoded)?;
        Ok(u8s
            .read(rec)?
            .into_iter()
            .map(|data| Image {
                width: u8s.width,
                height: u8s.height,
                data,
            })
            .collect())
    }

    /// One denoising pass over a batch, starting as `start` says; with `decode` false the
    /// final latents come back instead of images (the hires fix's first pass).
    pub(crate) fn run_pass(
        &self,
        items: &[&GenerateRequest],
        progress: &mut dyn FnMut(&Progress),
        cancel: Option<&AtomicBool>,
        start: PassStart<'_>,
        decode: bool,
    ) -> Result<PassOut> {
        let Some(&req) = items.first() else {
            return Err(Error::InvalidInput("an empty batch".into()));
        };
        for r in items {
            self.validate(r)?;
        }
        if items.len() > 1 {
            let key = self.batch_key(req);
            if key.is_none() || items.iter().any(|r| self.batch_key(r) != key) {
                return Err(Error::InvalidInput(
                    "a batch needs equal sizes, steps, guidance, scheduler, img2img strength and inpainting, and no trace".into(),
                ));
            }
        }
        let gpu = self.gpu;
        let cfg = req.guidance > 1.0;
        // Latent rows per request (its prompts times its images per prompt).
        let counts: Vec<usize> = items
            .iter()
            .map(|r| r.prompts.len() * r.num_images_per_prompt)
            .collect();
        let batch: usize = counts.iter().sum();
        let f = self.vae_scale_factor();
        let lc = self.vae.config.latent_channels;
        let (lh, lw) = (req.height / f, req.width / f);
        let latent_shape = [batch, lc, lh, lw];
        let item_shape = |rows: usize| [rows, lc, lh, lw];
        let mut trace = req.trace.then(|| Trace {
            latent_shape,
            ..Trace::default()
        });
        // Fused (before this run's recorder opens) or cached LoRA weights.
        let lora_weights = self.lora_overrides(&req.loras)?;
        let mut rec = Recorder::new(gpu);
        rec.set_circular_padding(req.tiling);
        rec.set_weight_overrides(lora_weights);
        // A seamless image is decoded whole: tiles would wrap around themselves.
        let vae_tiling = if req.tiling {
            VaeTiling::Off
        } else {
            req.vae_tiling
        };

        // 1. Text encoder: rows [uncond...; cond...], each prompt repeated n times, the
        // requests one after another within each half.
        let t0 = Instant::now();
        let stage = TextStage {
            tokenizer: &self.tokenizer,
            text_encoder: &self.text_encoder,
            act: self.unet.activation_dtype(),
        };
        let conditioning = conditioning::encode(&mut rec, &stage, items, cfg, req.steps)?;
        if let Some(tr) = trace.as_mut() {
            let all = rec.read_f32(conditioning.at_step(0))?;
            if cfg {
                let (u, c) = all.split_at(all.len() / 2);
                tr.negative_prompt_embeds = Some(u.to_vec());
                tr.prompt_embeds = c.to_vec();
            } else {
                tr.prompt_embeds = all;
            }
        } else {
            rec.submit()?;
            gpu.wait()?;
        }
        let text_encoder = t0.elapsed();

        // 2. Timesteps and initial latents, each request's from its own generator.
        let t1 = Instant::now();
        let class = req.scheduler.unwrap_or(self.default_scheduler);
        let config = self.scheduler_config.with_spacing(req.timestep_spacing);
        let mut sched = schedulers::from_config(&config, Some(class))?;
        sched.set_timesteps(req.steps)?;
        // img2img runs the schedule from `begin` (diffusers' get_timesteps; the order of
        // every wgsd scheduler is 1).
        let from_image = req.init_image.is_some() || !matches!(start, PassStart::Request);
        let begin = if from_image {
            crate::img2img::t_start(req.steps, req.strength)?
        } else {
            0
        };
        sched.set_begin_index(begin)?;
        let timesteps = sched.timesteps().get(begin..).unwrap_or_default().to_vec();
        let mut generators: Vec<TorchGenerator> =
            items.iter().map(|r| TorchGenerator::new(r.seed)).collect();
        let draw = |generators: &mut [TorchGenerator]| -> Result<Vec<f32>> {
            let mut all = Vec::with_capacity(latent_shape.iter().product());
            for (g, &rows) in generators.iter_mut().zip(&counts) {
                all.extend(g.randn(&item_shape(rows))?);
            }
            Ok(all)
        };
        let mut inpaint = None;
        let latents = if let PassStart::Latents(z) = start {
            let coeffs = sched.add_noise_coeffs(begin)?;
            crate::hires::noised_latents(
                &mut rec,
                z,
                &mut generators,
                &counts,
                coeffs,
                trace.as_mut(),
            )?
        } else if let PassStart::Images(images) = start {
            let coeffs = sched.add_noise_coeffs(begin)?;
            crate::hires::encoded_latents(
                &mut rec,
                self.vae_encoder()?,
                images,
                &mut generators,
                &counts,
                coeffs,
                trace.as_mut(),
            )?
        } else if req.mask.is_some() {
            let setup = crate::inpaint::Setup {
                encoder: self.vae_encoder()?,
                unet_in_channels: self.unet.config.in_channels,
                vae_scale_factor: f,
                scheduler: sched.as_ref(),
                begin,
                cfg,
            };
            let (latents, extra) = crate::inpaint::prepare(
                &mut rec,
                &setup,
                items,
                &mut generators,
                &counts,
                trace.as_mut(),
            )?;
            inpaint = Some(extra);
            latents
        } else if req.init_image.is_some() {
            crate::img2img::init_latents(
                &mut rec,
                self.vae_encoder()?,
                items,
                &mut generators,
                &counts,
                sched.add_noise_coeffs(begin)?,
                trace.as_mut(),
            )?
        } else {
            let noise = draw(&mut generators)?;
            // torch multiplies a float32 tensor by a Python float in float32.
            let sigma = sched.init_noise_sigma() as f32;
            let init: Vec<f32> = noise.iter().map(|&v| v * sigma).collect();
            let latents = Tensor::from_f32(gpu, &latent_shape, &init, DType::F32)?;
            if let Some(tr) = trace.as_mut() {
                tr.init_noise = noise;
                tr.latents_init = init;
            }
            latents
        };
        let history: Vec<Tensor> = (0..sched.history_slots())
            .map(|_| Tensor::empty(gpu, &latent_shape, DType::F32))
            .collect::<Result<_>>()?;
        let zero = Tensor::from_f32(gpu, &[1], &[0.0], DType::F32)?;

        // 3. Denoising.
        let total = timesteps.len();
        // The preview factors are for 4-channel latents (SD 1.x / 2.x VAEs).
        let want_previews = lc == 4 && items.iter().any(|r| r.preview);
        let finish_early = || {
            items.iter().all(|r| {
                r.finish_early
                    .as_ref()
                    .is_some_and(|f| f.load(Ordering::Relaxed))
            })
        };
        let mut steps_done = 0;
        for (k, &t) in timesteps.iter().enumerate() {
            // `k` counts the steps run, `i` indexes the scheduler's full schedule.
            let i = begin + k;
            if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                return Err(Error::Cancelled {
                    completed: k,
                    total,
                });
            }
            if finish_early() {
                break;
            }
            steps_done = k + 1;
            let factor = sched.scale_model_input_factor(i);
            let scaled = if factor == 1.0 {
                latents.clone()
            } else {
                ops::elementwise::add_scaled(&mut rec, &latents, &zero, factor as f32)?
            };
            let input = if cfg {
                ops::concat::concat(&mut rec, &scaled, &scaled, 0)?
            } else {
                scaled
            };
            let input = match &inpaint {
                Some(ip) => ip.unet_input(&mut rec, input)?,
                None => input,
            };
            let out = self
                .unet
                .forward(&mut rec, &input, t as f32, conditioning.at_step(i))?;
            if k == 0
                && let Some(tr) = trace.as_mut()
            {
                tr.unet0_sample = rec.read_f32(&input)?;
                tr.unet0_out = rec.read_f32(&out)?;
            }
            let plan = sched.step(i)?;
            // Drawn even when unused (the last ancestral step) to keep torch's stream.
            let fresh = if plan.draws_noise {
                Some(draw(&mut generators)?)
            } else {
                None
            };
            let noise_t = match (&fresh, plan.uses_noise()) {
                (Some(z), true) => Some(Tensor::from_f32(gpu, &latent_shape, z, DType::F32)?),
                _ => None,
            };
            ops::scheduler_step::scheduler_step(
                &mut rec,
                &plan,
                &latents,
                &out,
                cfg.then_some(req.guidance),
                &history,
                noise_t.as_ref(),
            )?;
            if let Some(ip) = &inpaint {
                ip.after_step(&mut rec, &latents, sched.as_ref(), i, k + 1 == total)?;
            }
            let previews = if want_previews {
                let p = ops::latent_preview::latent_preview(
                    &mut rec,
                    &latents,
                    &ops::latent_preview::SD_LATENT_RGB,
                )?;
                let (h, w) = (p.height, p.width);
                p.read(&mut rec)?
                    .into_iter()
                    .map(|data| Image {
                        width: w,
                        height: h,
                        data,
                    })
                    .collect()
            } else {
                Vec::new()
            };
            if let Some(tr) = trace.as_mut() {
                tr.steps.push(rec.read_f32(&latents)?);
            } else if !want_previews {
                rec.submit()?;
                gpu.wait()?;
            }
            progress(&Progress {
                step: k + 1,
                total,
                timestep: t,
                elapsed: t1.elapsed(),
                previews: &previews,
            });
        }
        let denoise = t1.elapsed();

        // 4. VAE and u8 conversion.
        let t2 = Instant::now();
        if let Some(tr) = trace.as_mut() {
            tr.final_latents = rec.read_f32(&latents)?;
        }
        let (mut images, latents_out) = if decode {
            let images = self.decode_latents(&mut rec, &latents, vae_tiling)?;
            (images.into_iter(), None)
        } else {
            rec.submit()?;
            (Vec::new().into_iter(), Some(latents))
        };
        let vae = t2.elapsed();
        let timings = Timings {
            text_encoder,
            denoise,
            vae,
        };
        let mut out = Vec::with_capacity(items.len());
        for ((r, rows), truncated) in items.iter().zip(&counts).zip(conditioning.truncated) {
            out.push(Generated {
                images: images.by_ref().take(*rows).collect(),
                seed: r.seed,
                scheduler: class,
                timesteps: timesteps.clone(),
                timings,
                truncated,
                steps_done,
                trace: None,
            });
        }
        if let Some(first) = out.first_mut() {
            first.trace = trace;
        }
        Ok(PassOut {
            generated: out,
            latents: latents_out,
        })
    }
}

/// Where a denoising pass starts ([`Pipeline::run_pass`]; see `crate::hires`).
#[derive(Clone, Copy)]
pub(crate) enum PassStart<'a> {
    /// From the request: noise (text to image) or its init image (img2img).
    Request,
    /// Upscaled latents `[rows, C, h, w]`, noised to the first timestep run.
    Latents(&'a Tensor),
    /// One image per row, VAE-encoded, then noised.
    Images(&'a [Image]),
}

/// What [`Pipeline::run_pass`] returns: one result per request (without images when the
/// pass did not decode) and, when it did not, the final latents `[rows, C, h, w]`.
pub(crate) struct PassOut {
    pub generated: Vec<Generated>,
    pub latents: Option<Tensor>,
}

/// What requests must share to run as one batch (see [`Pipeline::batch_key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchKey {
    pub width: usize,
    pub height: usize,
    pub steps: usize,
    /// The guidance scale's bits: the fused combine takes one scale for the batch.
    pub guidance_bits: u32,
    /// The resolved sampler.
    pub scheduler: Sampler,
    pub timestep_spacing: Option<Spacing>,
    /// Tiled and untiled decodes differ at the seams.
    pub vae_tiling: VaeTiling,
    pub tiling: bool,
    pub prompt_syntax: PromptSyntax,
    /// 77-token chunks per context (1 in the plain syntax).
    pub prompt_chunks: usize,
    /// The LoRA set ([`lora::set_key`]): one set of weights per UNet pass.
    pub loras: u64,
    /// img2img's strength (its bits; `None` for text to image): one schedule per batch.
    pub strength_bits: Option<u64>,
    /// The hires fix's settings: one pair of passes per batch.
    pub hires: Option<crate::hires::HiresKey>,
    /// Inpainting requests batch together (each with its own image and mask), never with
    /// others: the UNet input and the per-step blend differ.
    pub inpaint: bool,
}
