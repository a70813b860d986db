//! img2img's starting latents (`shaders/latent_sample.wgsl`), mirroring diffusers'
//! `StableDiffusionImg2ImgPipeline.prepare_latents`:
//!
//! - [`sample`]: `DiagonalGaussianDistribution(moments).sample(generator)` times
//!   `vae.config.scaling_factor` (diffusers `models/autoencoders/vae.py`: mean and
//!   logvar are the two channel halves of the encoder's moments, logvar clamped to
//!   [-30, 20], `std = exp(0.5 * logvar)`);
//! - [`add_noise`]: `scheduler.add_noise(init_latents, noise, t)` as `ca * x + cb * noise`
//!   with the scheduler's coefficients, the image's row repeated for every image that
//!   starts from it (diffusers' `torch.cat([init_latents] * n)`).
//!
//! One dispatch per latent row (image): latent rows are small (4 x 96 x 96 at 768px).

use super::{expect_act, expect_f32, u32_of};
use crate::error::{Error, Result};
use crate::gpu::{DType, KernelSpec, Recorder, Tensor};

const SRC: &str = include_str!("../../shaders/latent_sample.wgsl");
const WG: usize = 256;
const OP: &str = "latent_sample";

crate::shader_params! {
    struct Params {
        n: u32,
        a_shift: u32,
        b_shift: u32,
        o_shift: u32,
        ca: f32,
        cb: f32,
        _pad0: u32,
        _pad1: u32,
    }
}

fn spec(entry: &'static str, dt: DType) -> KernelSpec {
    KernelSpec::new(OP, SRC, entry)
        .params::<Params>()
        .activation(dt)
}

fn dims(what: &str, t: &Tensor) -> Result<[usize; 4]> {
    match t.shape() {
        &[b, c, h, w] => Ok([b, c, h, w]),
        s => Err(Error::shape(
            OP,
            format!("{what} must be [B, C, H, W], got {s:?}"),
        )),
    }
}

/// moments `[N, 2C, h, w]` (f32 or f16), eps `[N, C, h, w]` f32 -> the scaled latent
/// sample `[N, C, h, w]` f32.
pub fn sample(rec: &mut Recorder, moments: &Tensor, eps: &Tensor, scale: f32) -> Result<Tensor> {
    let at = expect_act(OP, moments)?;
    expect_f32(OP, eps)?;
    let [nb, c2, h, w] = dims("moments", moments)?;
    if c2 % 2 != 0 || eps.shape() != [nb, c2 / 2, h, w] {
        return Err(Error::shape(
            OP,
            format!(
                "moments {:?} need an even channel count and eps [{nb}, {}, {h}, {w}], got eps {:?}",
                moments.shape(),
                c2 / 2,
                eps.shape()
            ),
        ));
    }
    let gpu = rec.gpu();
    let n = c2 / 2 * h * w;
    let out = Tensor::empty(gpu, &[nb, c2 / 2, h, w], DType::F32)?;
    let kernel = gpu.kernel(&spec("sample", at))?;
    for r in 0..nb {
        let aw = moments.window(gpu, r * 2 * n, 2 * n)?;
        let bw = eps.window(gpu, r * n, n)?;
        let ow = out.window(gpu, r * n, n)?;
        let p = Params {
            n: u32_of(OP, n)?,
            a_shift: aw.shift,
            b_shift: bw.shift,
            o_shift: ow.shift,
            ca: scale,
            ..Default::default()
        };
        let groups = rec.grid(u32_of(OP, n.div_ceil(WG))?);
        rec.dispatch(&kernel, &p, &[aw, bw, ow], groups)?;
    }
    Ok(out)
}

/// x `[N, C, h, w]` f32, noise `[R, C, h, w]` f32 -> `ca * x[rows[r]] + cb * noise[r]`
/// `[R, C, h, w]` f32 (`rows.len() == R`, each `< N`).
pub fn add_noise(
    rec: &mut Recorder,
    x: &Tensor,
    rows: &[usize],
    noise: &Tensor,
    ca: f32,
    cb: f32,
) -> Result<Tensor> {
    expect_f32(OP, x)?;
    expect_f32(OP, noise)?;
    let [nx, c, h, w] = dims("x", x)?;
    let r_out = rows.len();
    if noise.shape() != [r_out, c, h, w] {
        return Err(Error::shape(
            OP,
            format!(
                "noise must be [{r_out}, {c}, {h}, {w}] for {r_out} rows, got {:?}",
                noise.shape()
            ),
        ));
    }
    if let Some(bad) = rows.iter().find(|&&r| r >= nx) {
        return Err(Error::shape(
            OP,
            format!("row {bad} of x requested, x has {nx}"),
        ));
    }
    let gpu = rec.gpu();
    let n = c * h * w;
    let out = Tensor::empty(gpu, &[r_out, c, h, w], DType::F32)?;
    let kernel = gpu.kernel(&spec("add_noise", DType::F32))?;
    for (r, &src) in rows.iter().enumerate() {
        let aw = x.window(gpu, src * n, n)?;
        let bw = noise.window(gpu, r * n, n)?;
        let ow = out.window(gpu, r * n, n)?;
        let p = Params {
            n: u32_of(OP, n)?,
            a_shift: aw.shift,
            b_shift: bw.shift,
            o_shift: ow.shift,
            ca,
            cb,
            ..Default::default()
        };
        let groups = rec.grid(u32_of(OP, n.div_ceil(WG))?);
        rec.dispatch(&kernel, &p, &[aw, bw, ow], groups)?;
    }
    Ok(out)
}

/// Every kernel variant of this family (validated offline by the tests).
pub fn variants() -> Vec<KernelSpec> {
    vec![
        spec("sample", DType::F32),
        spec("sample", DType::F16),
        spec("add_noise", DType::F32),
    ]
}

/// CPU references (f64 arithmetic, f32 results).
pub mod cpu {
    /// moments `[N, 2n]` per row (mean then logvar), eps `[N, n]`.
    pub fn sample(moments: &[f32], eps: &[f32], n: usize, scale: f32) -> Vec<f32> {
        eps.chunks(n)
            .zip(moments.chunks(2 * n))
            .flat_map(|(e, m)| {
                (0..n).map(move |i| {
                    let logvar = f64::from(m[n + i]).clamp(-30.0, 20.0);
                    let z = f64::from(m[i]) + (0.5 * logvar).exp() * f64::from(e[i]);
                    (z * f64::from(scale)) as f32
                })
            })
            .collect()
    }

    /// `ca * x[rows[r]] + cb * noise[r]`, rows of `n` elements.
    pub fn add_noise(
        x: &[f32],
        rows: &[usize],
        noise: &[f32],
        n: usize,
        ca: f32,
        cb: f32,
    ) -> Vec<f32> {
        rows.iter()
            .zip(noise.chunks(n))
            .flat_map(|(&src, z)| {
                (0..n).map(move |i| {
                    (f64::from(ca) * f64::from(x[src * n + i]) + f64::from(cb) * f64::from(z[i]))
                        as f32
                })
            })
            .collect()
    }
}
