//! The second pass's starting latents, `StableDiffusionImg2ImgPipeline.prepare_latents`
//! for a batch whose rows each have their own image (diffusers' `image` of `rows` items
//! with one generator per request; see the module docs of `crate::hires` for the draws).

use crate::error::{Error, Result};
use crate::gpu::{DType, Recorder, Tensor};
use crate::models::vae_encoder::VaeEncoder;
use crate::ops;
use crate::pipeline::{Image, Trace};
use crate::rng::TorchGenerator;

/// One `randn([rows, C, h, w])` per request, concatenated.
fn draw(
    generators: &mut [TorchGenerator],
    counts: &[usize],
    [c, h, w]: [usize; 3],
) -> Result<Vec<f32>> {
    let mut all = Vec::new();
    for (g, &rows) in generators.iter_mut().zip(counts) {
        all.extend(g.randn(&[rows, c, h, w])?);
    }
    Ok(all)
}

/// Upscaled latents `[R, C, h, w]` (already scaled: diffusers takes 4-channel images as
/// latents as they are) noised to the first timestep run: `ca * z + cb * noise`.
pub(crate) fn noised_latents(
    rec: &mut Recorder,
    z: &Tensor,
    generators: &mut [TorchGenerator],
    counts: &[usize],
    (ca, cb): (f64, f64),
    trace: Option<&mut Trace>,
) -> Result<Tensor> {
    let &[r, c, h, w] = z.shape() else {
        return Err(Error::shape("hires", "the upscaled latents must be 4-D"));
    };
    if counts.iter().sum::<usize>() != r {
        return Err(Error::shape("hires", "one upscaled latent per image"));
    }
    let noise = draw(generators, counts, [c, h, w])?;
    let noise_t = Tensor::from_f32(rec.gpu(), &[r, c, h, w], &noise, DType::F32)?;
    let rows: Vec<usize> = (0..r).collect();
    let latents = ops::latent_sample::add_noise(rec, z, &rows, &noise_t, ca as f32, cb as f32)?;
    if let Some(tr) = trace {
        tr.latents_init = rec.read_f32(&latents)?;
        tr.init_noise = noise;
    }
    Ok(latents)
}

/// Upscaled images (one per row, all one size) through the VAE encoder, the latent sample
/// from each request's generator, then its noise, to the first timestep run.
pub(crate) fn encoded_latents(
    rec: &mut Recorder,
    encoder: &VaeEncoder,
    images: &[Image],
    generators: &mut [TorchGenerator],
    counts: &[usize],
    (ca, cb): (f64, f64),
    trace: Option<&mut Trace>,
) -> Result<Tensor> {
    let Some(first) = images.first() else {
        return Err(Error::InvalidInput("hires: no image to encode".into()));
    };
    let (w, h) = (first.width, first.height);
    if images.iter().any(|i| (i.width, i.height) != (w, h))
        || counts.iter().sum::<usize>() != images.len()
    {
        return Err(Error::shape("hires", "one image of one size per row"));
    }
    let pixels: Vec<f32> = images.iter().flat_map(crate::img2img::to_pixels).collect();
    let gpu = rec.gpu();
    let image = Tensor::from_f32(gpu, &[images.len(), 3, h, w], &pixels, DType::F32)?;
    let moments = encoder.forward(rec, &image)?;
    let &[n, c2, lh, lw] = moments.shape() else {
        return Err(Error::shape("hires", "the encoder's moments must be 4-D"));
    };
    let c = c2 / 2;
    let (mut eps, mut noise) = (Vec::new(), Vec::new());
    for (g, &rows) in generators.iter_mut().zip(counts) {
        eps.extend(g.randn(&[rows, c, lh, lw])?);
        noise.extend(g.randn(&[rows, c, lh, lw])?);
    }
    let eps_t = Tensor::from_f32(gpu, &[n, c, lh, lw], &eps, DType::F32)?;
    let noise_t = Tensor::from_f32(gpu, &[n, c, lh, lw], &noise, DType::F32)?;
    let z =
        ops::latent_sample::sample(rec, &moments, &eps_t, encoder.config.scaling_factor as f32)?;
    let rows: Vec<usize> = (0..n).collect();
    let latents = ops::latent_sample::add_noise(rec, &z, &rows, &noise_t, ca as f32, cb as f32)?;
    if let Some(tr) = trace {
        tr.init_image_moments = rec.read_f32(&moments)?;
        tr.init_image_latents = rec.read_f32(&z)?;
        tr.latents_init = rec.read_f32(&latents)?;
        tr.init_noise = noise;
    }
    Ok(latents)
}
