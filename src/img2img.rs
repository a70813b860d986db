//! Image to image, mirroring diffusers' `StableDiffusionImg2ImgPipeline` (0.42):
//!
//! - the init image goes through `VaeImageProcessor.preprocess`: u8 RGB to
//!   `x / 255 * 2 - 1` (float32), NCHW. wgsd requires the image to be the request's size
//!   (diffusers takes the size from the image; the CLI does too, and the A1111 API
//!   resizes first, as A1111's resize mode 0, with [`resize`]);
//! - `get_timesteps`: `init_timestep = min(int(steps * strength), steps)`, the run
//!   starts at `t_start = steps - init_timestep` (`scheduler.set_begin_index(t_start)`),
//!   so `strength` = 1 runs every step and 0.5 the second half;
//! - `prepare_latents`: the VAE encoder's moments, a latent sample
//!   `mean + std * randn(generator)` times `scaling_factor`, then ONE more draw from the
//!   same generator, the noise, and `scheduler.add_noise(latents, noise, timesteps[t_start])`.
//!   Ancestral samplers continue drawing from that generator at each step.

use crate::error::{Error, Result};
use crate::gpu::{DType, Recorder, Tensor};
use crate::models::vae_encoder::VaeEncoder;
use crate::ops;
use crate::pipeline::{GenerateRequest, Image, Trace};
use crate::rng::TorchGenerator;

/// diffusers' default `strength`.
pub const DEFAULT_STRENGTH: f64 = 0.8;

/// `get_timesteps`: the index of the first timestep run, or an error when `strength`
/// leaves no step (or is outside (0, 1]).
pub fn t_start(steps: usize, strength: f64) -> Result<usize> {
    check_strength(strength)?;
    // Python's int() truncates toward zero; strength is positive.
    let init = ((steps as f64 * strength).floor() as usize).min(steps);
    if init == 0 {
        return Err(Error::InvalidInput(format!(
            "strength {strength} with {steps} steps leaves no denoising step (int(steps * strength) = 0); raise steps or strength"
        )));
    }
    Ok(steps - init)
}

/// `strength` must be in (0, 1].
pub fn check_strength(strength: f64) -> Result<()> {
    if strength.is_finite() && strength > 0.0 && strength <= 1.0 {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "strength must be in (0, 1], got {strength}"
        )))
    }
}

/// `VaeImageProcessor.preprocess` of one RGB image: `[3, H, W]` in [-1, 1], computed as
/// numpy/torch do in float32 (`x / 255.0`, then `2 * x - 1`).
pub fn to_pixels(img: &Image) -> Vec<f32> {
    let hw = img.width * img.height;
    let mut out = vec![0f32; 3 * hw];
    for (p, rgb) in img.data.chunks_exact(3).enumerate() {
        for (c, &v) in rgb.iter().enumerate() {
            out[c * hw + p] = 2.0 * (f32::from(v) / 255.0) - 1.0;
        }
    }
    out
}

/// Decodes an image file's bytes (PNG or JPEG) to RGB; alpha is dropped.
pub fn decode_image(bytes: &[u8]) -> Result<Image> {
    let img = image::load_from_memory(bytes)
        .map_err(|e| Error::InvalidInput(format!("init image: not a PNG or JPEG image ({e})")))?
        .to_rgb8();
    let (width, height) = (img.width() as usize, img.height() as usize);
    Ok(Image {
        width,
        height,
        data: img.into_raw(),
    })
}

/// Decodes a base64 image (`/predictions`' `init_image`, A1111's `init_images`), with or
/// without a `data:image/...;base64,` prefix.
pub fn decode_base64_image(text: &str) -> Result<Image> {
    use base64::Engine as _;
    let body = match text.split_once(";base64,") {
        Some((head, rest)) if head.starts_with("data:") => rest,
        _ => text,
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .map_err(|e| Error::InvalidInput(format!("init image: not base64 ({e})")))?;
    decode_image(&bytes)
}

/// The init image at the size a request asks for: `width`/`height` when given, else the
/// image's own rounded down to a multiple of 8 (diffusers' `VaeImageProcessor`), resized
/// with [`resize`] when that differs from the image.
pub fn fit(img: Image, width: Option<usize>, height: Option<usize>) -> Result<Image> {
    let w = width.unwrap_or(img.width / 8 * 8);
    let h = height.unwrap_or(img.height / 8 * 8);
    if w == 0 || h == 0 {
        return Err(Error::InvalidInput(format!(
            "init image: {} x {} is smaller than 8 x 8",
            img.width, img.height
        )));
    }
    if (w, h) == (img.width, img.height) {
        Ok(img)
    } else {
        resize(&img, w, h)
    }
}

/// AUTOMATIC1111's resize mode 0 ("Just resize", `images.resize_image(0, ...)`): stretch
/// to `width x height` with a Lanczos filter, ignoring the aspect ratio. The `image`
/// crate's Lanczos3 is close to, not bit-identical with, PIL's LANCZOS.
pub fn resize(img: &Image, width: usize, height: usize) -> Result<Image> {
    if img.width == width && img.height == height {
        return Ok(img.clone());
    }
    let dims = |v: usize| {
        u32::try_from(v).map_err(|_| Error::InvalidInput(format!("image size {v} is too large")))
    };
    let src = image::RgbImage::from_raw(dims(img.width)?, dims(img.height)?, img.data.clone())
        .ok_or_else(|| {
            Error::InvalidInput("init image: pixel data does not match its size".into())
        })?;
    let out = image::imageops::resize(
        &src,
        dims(width)?,
        dims(height)?,
        image::imageops::FilterType::Lanczos3,
    );
    Ok(Image {
        width,
        height,
        data: out.into_raw(),
    })
}

/// `prepare_latents` for a batch of img2img requests: every request's image through the
/// encoder (one pass), then per request, from its own generator, the latent sample's
/// draw `[1, C, h, w]` and the noise draw `[rows, C, h, w]`; the request's rows all start
/// from its image. `coeffs` is the scheduler's `add_noise` at the first timestep run.
/// Returns the starting latents `[sum(rows), C, h, w]` f32.
pub(crate) fn init_latents(
    rec: &mut Recorder,
    encoder: &VaeEncoder,
    items: &[&GenerateRequest],
    generators: &mut [TorchGenerator],
    counts: &[usize],
    coeffs: (f64, f64),
    trace: Option<&mut Trace>,
) -> Result<Tensor> {
    let gpu = rec.gpu();
    let mut pixels = Vec::new();
    let mut size = None;
    for r in items {
        let img = r.init_image.as_deref().ok_or_else(|| {
            Error::InvalidInput("an img2img batch needs an init image for every request".into())
        })?;
        if size.is_some_and(|s| s != (img.width, img.height)) {
            return Err(Error::InvalidInput(
                "an img2img batch needs init images of one size".into(),
            ));
        }
        size = Some((img.width, img.height));
        pixels.extend(to_pixels(img));
    }
    let (w, h) = size.unwrap_or_default();
    let image = Tensor::from_f32(gpu, &[items.len(), 3, h, w], &pixels, DType::F32)?;
    let moments = encoder.forward(rec, &image)?;
    let &[_, c2, lh, lw] = moments.shape() else {
        return Err(Error::shape("img2img", "the encoder's moments must be 4-D"));
    };
    let c = c2 / 2;
    let (mut eps, mut noise) = (Vec::new(), Vec::new());
    for (g, &rows) in generators.iter_mut().zip(counts) {
        eps.extend(g.randn(&[1, c, lh, lw])?);
        noise.extend(g.randn(&[rows, c, lh, lw])?);
    }
    let total: usize = counts.iter().sum();
    let eps_t = Tensor::from_f32(gpu, &[items.len(), c, lh, lw], &eps, DType::F32)?;
    let noise_t = Tensor::from_f32(gpu, &[total, c, lh, lw], &noise, DType::F32)?;
    let scale = encoder.config.scaling_factor as f32;
    let z = ops::latent_sample::sample(rec, &moments, &eps_t, scale)?;
    let rows: Vec<usize> = counts
        .iter()
        .enumerate()
        .flat_map(|(k, &n)| std::iter::repeat_n(k, n))
        .collect();
    let (ca, cb) = coeffs;
    let latents = ops::latent_sample::add_noise(rec, &z, &rows, &noise_t, ca as f32, cb as f32)?;
    if let Some(tr) = trace {
        tr.init_image_moments = rec.read_f32(&moments)?;
        tr.init_image_latents = rec.read_f32(&z)?;
        tr.latents_init = rec.read_f32(&latents)?;
        tr.init_noise = noise;
    }
    Ok(latents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_timesteps_as_diffusers() {
        // init_timestep = min(int(steps * strength), steps); t_start = steps - init.
        assert_eq!(t_start(10, 1.0).unwrap(), 0);
        assert_eq!(t_start(10, 0.75).unwrap(), 3);
        assert_eq!(t_start(10, 0.7).unwrap(), 3, "0.7 * 10 = 7.0 in f64");
        assert_eq!(t_start(4, 0.6).unwrap(), 2);
        assert_eq!(t_start(50, 0.8).unwrap(), 10);
        assert!(t_start(10, 0.05).is_err(), "no step left");
        for bad in [0.0, -0.5, 1.5, f64::NAN] {
            assert!(check_strength(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pixels_are_nchw_in_minus_one_to_one() {
        let img = Image {
            width: 2,
            height: 1,
            data: vec![0, 255, 51, 255, 0, 102],
        };
        let p = to_pixels(&img);
        assert_eq!(
            p,
            vec![-1.0, 1.0, 1.0, -1.0, 2.0 * 0.2 - 1.0, 2.0 * 0.4 - 1.0]
        );
    }

    #[test]
    fn bad_bytes_and_resize() {
        assert!(decode_image(b"not an image").is_err());
        let img = Image {
            width: 4,
            height: 2,
            data: vec![200; 24],
        };
        let r = resize(&img, 8, 8).unwrap();
        assert_eq!((r.width, r.height, r.data.len()), (8, 8, 192));
        assert!(
            r.data.iter().all(|&v| v.abs_diff(200) <= 1),
            "a flat image stays flat"
        );
    }
}
