//! Inpainting, mirroring diffusers' `StableDiffusionInpaintPipeline` (0.42) with both
//! kinds of UNet:
//!
//! - the mask is processed on the CPU ([`mask`]: grayscale, binarised at 0.5, white
//!   repaints); `masked_image = image * (mask < 0.5)` (on the GPU), and the mask is
//!   interpolated to latent size (nearest);
//! - `prepare_latents`: with `strength == 1` the latents are pure noise times
//!   `init_noise_sigma`, else `scheduler.add_noise(image_latents, noise, timesteps[t_start])`
//!   as img2img; the image is encoded only when it is needed (strength < 1, or a
//!   4-channel UNet, which blends with its latents);
//! - `prepare_mask_latents`: the masked image is always encoded;
//! - the random draws, per request from its own generator, in diffusers' order: the image
//!   latents' sample `[1, C, h, w]` (when encoded), the noise `[rows, C, h, w]`, the masked
//!   image latents' sample `[1, C, h, w]`; ancestral samplers go on drawing at each step;
//! - 9-channel UNets (`unet.config.in_channels == 9`): the UNet input is
//!   `cat([scale_model_input(latents), mask, masked_image_latents], dim=1)` (mask and masked
//!   latents repeated for the guidance halves);
//! - 4-channel UNets: after each `scheduler.step`,
//!   `latents = (1 - mask) * add_noise(image_latents, noise, timesteps[i + 1]) + mask * latents`,
//!   with the unnoised image latents after the last step (`ops::mask_blend`).

pub mod mask;

pub use mask::Mask;

use crate::error::{Error, Result};
use crate::gpu::{DType, Recorder, Tensor};
use crate::img2img::to_pixels;
use crate::models::vae_encoder::VaeEncoder;
use crate::ops;
use crate::pipeline::{GenerateRequest, Trace};
use crate::rng::TorchGenerator;
use crate::schedulers::Scheduler;

/// diffusers' default `strength` for inpainting (the whole schedule, from pure noise).
pub const DEFAULT_STRENGTH: f64 = 1.0;

/// What the denoising loop adds for inpainting.
pub(crate) struct Inpaint {
    /// 9-channel UNets: `cat([mask, masked_image_latents], dim=1)` per UNet input row
    /// (`[uncond; cond]` with guidance), `[rows, 1 + C, h, w]`.
    unet_extra: Option<Tensor>,
    /// 4-channel UNets: what each step blends back outside the mask.
    blend: Option<Blend>,
}

struct Blend {
    /// Each request's image latents `[N, C, h, w]`.
    image_latents: Tensor,
    /// The request of each latent row.
    rows: Vec<usize>,
    /// The starting noise `[R, C, h, w]` (before `init_noise_sigma`).
    noise: Tensor,
    /// The latent-size mask of each row `[R, 1, h, w]`.
    mask: Tensor,
}

/// The inputs of [`prepare`] that come from the pipeline.
pub(crate) struct Setup<'a> {
    pub encoder: &'a VaeEncoder,
    pub unet_in_channels: usize,
    pub vae_scale_factor: usize,
    pub scheduler: &'a dyn Scheduler,
    /// The index of the first timestep run (`get_timesteps`' `t_start`).
    pub begin: usize,
    pub cfg: bool,
}

/// Checks an inpainting request against the model: a mask needs an init image of its
/// size, and the UNet must take 4 or 9 input channels (as diffusers checks).
pub fn validate(req: &GenerateRequest, unet_in_channels: usize) -> Result<()> {
    let bad = |m: String| Err(Error::InvalidInput(m));
    let Some(mask) = &req.mask else {
        if unet_in_channels == 9 {
            return bad(
                "this model's UNet takes 9 input channels (an inpainting model): give an init image and a mask".into(),
            );
        }
        return Ok(());
    };
    let Some(img) = &req.init_image else {
        return bad("a mask needs an init image to inpaint".into());
    };
    if (mask.width, mask.height) != (img.width, img.height) {
        return bad(format!(
            "the mask is {} x {} but the init image is {} x {}; they must be the same size",
            mask.width, mask.height, img.width, img.height
        ));
    }
    if mask.data.len() != mask.width * mask.height {
        return bad("the mask's pixel data does not match its size".into());
    }
    if unet_in_channels != 4 && unet_in_channels != 9 {
        return bad(format!(
            "inpainting needs a UNet with 4 or 9 input channels, this one has {unet_in_channels}"
        ));
    }
    Ok(())
}

/// `prepare_latents` and `prepare_mask_latents` for a batch of inpainting requests (each
/// with its init image and mask): returns the starting latents `[sum(rows), C, h, w]`
/// f32 and what the loop needs.
pub(crate) fn prepare(
    rec: &mut Recorder,
    setup: &Setup,
    items: &[&GenerateRequest],
    generators: &mut [TorchGenerator],
    counts: &[usize],
    trace: Option<&mut Trace>,
) -> Result<(Tensor, Inpaint)> {
    let gpu = rec.gpu();
    let Some(&first) = items.first() else {
        return Err(Error::InvalidInput("an empty inpainting batch".into()));
    };
    let (w, h) = (first.width, first.height);
    let f = setup.vae_scale_factor;
    let (lh, lw) = (h / f, w / f);
    let (mut pixels, mut keep, mut latent_masks) = (Vec::new(), Vec::new(), Vec::new());
    for r in items {
        let (Some(img), Some(mask)) = (r.init_image.as_deref(), r.mask.as_deref()) else {
            return Err(Error::InvalidInput(
                "an inpainting batch needs an init image and a mask for every request".into(),
            ));
        };
        if (img.width, img.height) != (w, h) || (mask.width, mask.height) != (w, h) {
            return Err(Error::InvalidInput(
                "an inpainting batch needs images and masks of the request's size".into(),
            ));
        }
        pixels.extend(to_pixels(img));
        // `mask < 0.5`, repeated over the 3 colour channels.
        let k: Vec<f32> = mask.binary().iter().map(|&m| 1.0 - m).collect();
        for _ in 0..3 {
            keep.extend_from_slice(&k);
        }
        latent_masks.push(mask.latent(f));
    }
    let n = items.len();
    let image = Tensor::from_f32(gpu, &[n, 3, h, w], &pixels, DType::F32)?;
    let keep_t = Tensor::from_f32(gpu, &[n, 3, h, w], &keep, DType::F32)?;
    let masked = ops::elementwise::mul(rec, &image, &keep_t)?;

    let strength_max = first.strength == 1.0;
    let need_image = setup.unet_in_channels == 4 || !strength_max;
    let image_moments = if need_image {
        Some(setup.encoder.forward(rec, &image)?)
    } else {
        None
    };
    let masked_moments = setup.encoder.forward(rec, &masked)?;
    let &[_, c2, mh, mw] = masked_moments.shape() else {
        return Err(Error::shape("inpaint", "the encoder's moments must be 4-D"));
    };
    if (mh, mw) != (lh, lw) {
        return Err(Error::shape(
            "inpaint",
            format!("the encoder gave {mh} x {mw} latents, expected {lh} x {lw}"),
        ));
    }
    let c = c2 / 2;
    let one = [1, c, lh, lw];
    let (mut eps_image, mut noise, mut eps_masked) = (Vec::new(), Vec::new(), Vec::new());
    for (g, &rows) in generators.iter_mut().zip(counts) {
        if need_image {
            eps_image.extend(g.randn(&one)?);
        }
        noise.extend(g.randn(&[rows, c, lh, lw])?);
        eps_masked.extend(g.randn(&one)?);
    }
    let total: usize = counts.iter().sum();
    let rows: Vec<usize> = counts
        .iter()
        .enumerate()
        .flat_map(|(k, &m)| std::iter::repeat_n(k, m))
        .collect();
    let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
    let scale = setup.encoder.config.scaling_factor as f32;
    let noise_t = Tensor::from_f32(gpu, &[total, c, lh, lw], &noise, DType::F32)?;
    let image_latents = match &image_moments {
        Some(m) => {
            let eps = Tensor::from_f32(gpu, &[n, c, lh, lw], &eps_image, DType::F32)?;
            Some(ops::latent_sample::sample(rec, m, &eps, scale)?)
        }
        None => None,
    };
    let eps = Tensor::from_f32(gpu, &[n, c, lh, lw], &eps_masked, DType::F32)?;
    let masked_latents = ops::latent_sample::sample(rec, &masked_moments, &eps, scale)?;

    let latents = match (&image_latents, strength_max) {
        (Some(z), false) => {
            let (ca, cb) = setup.scheduler.add_noise_coeffs(setup.begin)?;
            ops::latent_sample::add_noise(rec, z, &rows, &noise_t, ca as f32, cb as f32)?
        }
        _ => {
            // torch multiplies a float32 tensor by a Python float in float32.
            let sigma = setup.scheduler.init_noise_sigma() as f32;
            let init: Vec<f32> = noise.iter().map(|&v| v * sigma).collect();
            Tensor::from_f32(gpu, &[total, c, lh, lw], &init, DType::F32)?
        }
    };
    let mask_rows: Vec<f32> = rows
        .iter()
        .flat_map(|&r| latent_masks[r].iter().copied())
        .collect();
    let mask_t = Tensor::from_f32(gpu, &[total, 1, lh, lw], &mask_rows, DType::F32)?;

    let inpaint = if setup.unet_in_channels == 9 {
        let masked_rows = ops::gather::gather_rows(rec, &masked_latents, &idx)?;
        let extra = ops::concat::concat(rec, &mask_t, &masked_rows, 1)?;
        let extra = if setup.cfg {
            ops::concat::concat(rec, &extra, &extra, 0)?
        } else {
            extra
        };
        Inpaint {
            unet_extra: Some(extra),
            blend: None,
        }
    } else {
        let image_latents = image_latents.ok_or_else(|| {
            Error::InvalidInput("a 4-channel UNet inpaints with the image's latents".into())
        })?;
        Inpaint {
            unet_extra: None,
            blend: Some(Blend {
                image_latents,
                rows,
                noise: noise_t,
                mask: mask_t,
            }),
        }
    };
    if let Some(tr) = trace {
        tr.init_noise = noise;
        tr.latents_init = rec.read_f32(&latents)?;
    }
    Ok((latents, inpaint))
}

impl Inpaint {
    /// The UNet's input: the scaled latents (guidance rows included), with the mask and
    /// the masked image's latents appended on channels for a 9-channel UNet.
    pub(crate) fn unet_input(&self, rec: &mut Recorder, scaled: Tensor) -> Result<Tensor> {
        match &self.unet_extra {
            Some(extra) => ops::concat::concat(rec, &scaled, extra, 1),
            None => Ok(scaled),
        }
    }

    /// After `scheduler.step` at index `i` of the full schedule (4-channel UNets): the
    /// latents outside the mask become the image's latents noised to the next timestep,
    /// or unnoised after the `last` step.
    pub(crate) fn after_step(
        &self,
        rec: &mut Recorder,
        latents: &Tensor,
        scheduler: &dyn Scheduler,
        i: usize,
        last: bool,
    ) -> Result<()> {
        let Some(b) = &self.blend else {
            return Ok(());
        };
        let proper = if last {
            let idx: Vec<u32> = b.rows.iter().map(|&r| r as u32).collect();
            ops::gather::gather_rows(rec, &b.image_latents, &idx)?
        } else {
            let (ca, cb) = scheduler.add_noise_coeffs(i + 1)?;
            ops::latent_sample::add_noise(
                rec,
                &b.image_latents,
                &b.rows,
                &b.noise,
                ca as f32,
                cb as f32,
            )?
        };
        ops::mask_blend::mask_blend(rec, latents, &proper, &b.mask)
    }
}
