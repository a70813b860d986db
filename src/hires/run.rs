//! The hires fix's two passes over a batch (see the module docs of `crate::hires`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::resize::{Filter, resize};
use super::{MAX_TARGET_SIDE, Upscaler, second_pass_steps, target_size};
use crate::error::{Error, Result};
use crate::gpu::{DType, Recorder, Tensor};
use crate::ops;
use crate::pipeline::{
    GenerateRequest, Generated, Image, PassStart, Pipeline, Progress, Timings, VaeTiling,
};

/// Runs a batch of hires-fix requests (equal batch keys, checked by the caller).
pub(crate) fn run(
    pipe: &Pipeline<'_>,
    items: &[&GenerateRequest],
    progress: &mut dyn FnMut(&Progress),
    cancel: Option<&AtomicBool>,
) -> Result<Vec<Generated>> {
    let Some(&req) = items.first() else {
        return Err(Error::InvalidInput("an empty batch".into()));
    };
    let Some(hires) = req.hires else {
        return Err(Error::InvalidInput(
            "a hires batch needs the hires fix".into(),
        ));
    };
    if items.iter().any(|r| r.hires != Some(hires)) {
        return Err(Error::InvalidInput(
            "a hires batch needs the same hires fix for every request".into(),
        ));
    }
    let target = target_size(&hires, req.width, req.height, MAX_TARGET_SIDE)?;
    let first: Vec<GenerateRequest> = items
        .iter()
        .map(|r| GenerateRequest {
            hires: None,
            ..(*r).clone()
        })
        .collect();
    let second: Vec<GenerateRequest> = items
        .iter()
        .map(|r| GenerateRequest {
            hires: None,
            width: target.size.0,
            height: target.size.1,
            steps: second_pass_steps(&hires, r.steps),
            strength: hires.strength,
            ..(*r).clone()
        })
        .collect();
    let (first, second): (Vec<&GenerateRequest>, Vec<&GenerateRequest>) =
        (first.iter().collect(), second.iter().collect());
    let n1 = pipe.pass_steps(first[0], false)?;
    let total = n1 + pipe.pass_steps(second[0], true)?;
    let t0 = Instant::now();
    let latent_mode = hires.upscaler.latent_mode();

    // 1. The first pass: latents for a latent upscaler, images for an image upscaler.
    let mut p1 = |p: &Progress| {
        progress(&Progress {
            total,
            elapsed: t0.elapsed(),
            ..*p
        })
    };
    let pass1 = pipe
        .run_pass(
            &first,
            &mut p1,
            cancel,
            PassStart::Request,
            latent_mode.is_none(),
        )
        .map_err(|e| cancelled_of(e, 0, total))?;
    let done1 = pass1.generated.first().map_or(0, |g| g.steps_done);
    let finished_early = items.iter().all(|r| {
        r.finish_early
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
    });
    if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
        return Err(Error::Cancelled {
            completed: done1,
            total,
        });
    }
    let gpu = pipe.gpu();
    let tiling = if req.tiling {
        VaeTiling::Off
    } else {
        req.vae_tiling
    };
    if finished_early {
        // A1111 returns the first pass's images when interrupted before the second.
        let mut out = pass1.generated;
        if let Some(z) = &pass1.latents {
            let mut rec = Recorder::new(gpu);
            rec.set_circular_padding(req.tiling);
            let mut images = pipe.decode_latents(&mut rec, z, tiling)?.into_iter();
            for (g, r) in out.iter_mut().zip(items) {
                let rows = r.prompts.len() * r.num_images_per_prompt;
                g.images = images.by_ref().take(rows).collect();
            }
        }
        return Ok(out);
    }

    // 2. The upscale.
    let f = pipe.vae_scale_factor();
    let (uw, uh) = target.upscale_to;
    let upscaled: Tensor;
    let resized: Vec<Image>;
    let mut first_latents = Vec::new();
    let mut upscaled_latents = Vec::new();
    let start = if let Some(mode) = latent_mode {
        let z = pass1
            .latents
            .as_ref()
            .ok_or_else(|| Error::Gpu("the first pass returned no latents".into()))?;
        let mut rec = Recorder::new(gpu);
        let up = ops::latent_resize::resize(&mut rec, z, uh / f, uw / f, mode)?;
        upscaled = if target.truncate == (0, 0) {
            up
        } else {
            crop_latents(&mut rec, &up, target.truncate)?
        };
        if req.trace {
            first_latents = rec.read_f32(z)?;
            upscaled_latents = rec.read_f32(&upscaled)?;
        }
        rec.submit()?;
        PassStart::Latents(&upscaled)
    } else {
        let filter = match hires.upscaler {
            Upscaler::Nearest => Filter::Nearest,
            _ => Filter::Lanczos,
        };
        // The crop (A1111 cuts latent cells) is cut from the resized image, f pixels a cell.
        let (rw, rh) = (uw / f * f, uh / f * f);
        resized = pass1
            .generated
            .iter()
            .flat_map(|g| &g.images)
            .map(|img| crop_image(&resize(img, rw, rh, filter), target.truncate, f))
            .collect();
        PassStart::Images(&resized)
    };

    // 3. The second pass (img2img at the target size, fresh generators).
    let mut p2 = |p: &Progress| {
        progress(&Progress {
            step: done1 + p.step,
            total,
            elapsed: t0.elapsed(),
            ..*p
        })
    };
    let pass2 = pipe
        .run_pass(&second, &mut p2, cancel, start, true)
        .map_err(|e| cancelled_of(e, done1, total))?;
    let mut out = Vec::with_capacity(items.len());
    for (g1, mut g2) in pass1.generated.into_iter().zip(pass2.generated) {
        g2.timesteps = g1.timesteps.iter().chain(&g2.timesteps).copied().collect();
        g2.steps_done += g1.steps_done;
        g2.truncated = g1.truncated;
        g2.timings = Timings {
            text_encoder: g1.timings.text_encoder + g2.timings.text_encoder,
            denoise: g1.timings.denoise + g2.timings.denoise,
            vae: g1.timings.vae + g2.timings.vae,
        };
        if let Some(tr) = g2.trace.as_mut() {
            tr.hires_first_latents = std::mem::take(&mut first_latents);
            tr.hires_upscaled_latents = std::mem::take(&mut upscaled_latents);
        }
        out.push(g2);
    }
    Ok(out)
}

/// A cancellation inside a pass, counted over both passes.
fn cancelled_of(e: Error, offset: usize, total: usize) -> Error {
    match e {
        Error::Cancelled { completed, .. } => Error::Cancelled {
            completed: offset + completed,
            total,
        },
        other => other,
    }
}

/// A1111's latent crop: `tx / 2` columns off the left, `(tx + 1) / 2` off the right, and
/// the same for rows (read back and cut on the CPU; the latents are small).
fn crop_latents(rec: &mut Recorder, z: &Tensor, (tx, ty): (usize, usize)) -> Result<Tensor> {
    let &[n, c, h, w] = z.shape() else {
        return Err(Error::shape("hires", "latents must be 4-D"));
    };
    let (x0, y0) = (tx / 2, ty / 2);
    let (nw, nh) = (w - tx, h - ty);
    let data = rec.read_f32(z)?;
    let mut out = Vec::with_capacity(n * c * nh * nw);
    for plane in data.chunks_exact(h * w) {
        for y in y0..y0 + nh {
            out.extend_from_slice(&plane[y * w + x0..][..nw]);
        }
    }
    Tensor::from_f32(rec.gpu(), &[n, c, nh, nw], &out, DType::F32)
}

/// [`crop_latents`] on an image, `f` pixels per latent cell.
fn crop_image(img: &Image, (tx, ty): (usize, usize), f: usize) -> Image {
    if (tx, ty) == (0, 0) {
        return img.clone();
    }
    let (x0, y0) = (tx / 2 * f, ty / 2 * f);
    let (width, height) = (img.width - tx * f, img.height - ty * f);
    let mut data = Vec::with_capacity(width * height * 3);
    for y in y0..y0 + height {
        data.extend_from_slice(&img.data[(y * img.width + x0) * 3..][..width * 3]);
    }
    Image {
        width,
        height,
        data,
    }
}
