//! Activations (`shaders/activation.wgsl`): SiLU (`nn.SiLU`), exact GELU (`nn.GELU()`,
//! the erf form), QuickGELU (CLIP's `quick_gelu`), and diffusers' `GEGLU` gating
//! (the projection is a matmul elsewhere; this is `hidden * gelu(gate)`).

use super::{expect_act, for_each_band, u32_of};
use crate::error::{Error, Result};
use crate::gpu::{DType, KernelSpec, Recorder, Tensor};

const SRC: &str = include_str!("../../shaders/activation.wgsl");
const WG: usize = 256;

crate::shader_params! {
    struct Params {
        n: u32,
        x_shift: u32,
        o_shift: u32,
        f: u32,
    }
}

/// The kernel for activations stored as `dt`, one element or one vec4 per unit.
fn spec(entry: &'static str, vec4: bool, dt: DType) -> KernelSpec {
    KernelSpec::new("activation", SRC, entry)
        .params::<Params>()
        .activation(dt)
        .define("V", if vec4 { "vec4<f32>" } else { "f32" })
        .define("S", if vec4 { "AT4" } else { "AT" })
        .define("ST", if vec4 { "at4" } else { "at" })
}

/// Unary ops always load vec4: a band's length is rounded up to a whole vec4, which
/// stays inside the buffers (their sizes are rounded to 256 bytes); the extra lanes
/// write only the padding.
fn unary(rec: &mut Recorder, entry: &'static str, x: &Tensor) -> Result<Tensor> {
    let op = entry;
    let dt = expect_act(op, x)?;
    let gpu = rec.gpu();
    let out = Tensor::empty(gpu, x.shape(), dt)?;
    let kernel = gpu.kernel(&spec(entry, true, dt))?;
    let per_band = gpu.max_binding_elems(dt) / (WG * 4) * (WG * 4);
    for_each_band(x.numel(), per_band, |start, len| {
        let len4 = len.div_ceil(4) * 4;
        let xw = x.window(gpu, start, len4)?;
        let ow = out.window(gpu, start, len4)?;
        let p = Params {
            n: u32_of(op, len4 / 4)?,
            x_shift: xw.shift / 4,
            o_shift: ow.shift / 4,
            f: 0,
        };
        let groups = rec.grid(u32_of(op, (len4 / 4).div_ceil(WG))?);
        rec.dispatch(&kernel, &p, &[xw, ow], groups)
    })?;
    Ok(out)
}

/// `x * sigmoid(x)`.
pub fn silu(rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
    unary(rec, "silu", x)
}

/// Exact GELU: `x/2 * (1 + erf(x / sqrt 2))` (torch's default `approximate="none"`).
pub fn gelu(rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
    unary(rec, "gelu", x)
}

/// `x * sigmoid(1.702 x)` (CLIP `quick_gelu`, SD1 text encoders).
pub fn quick_gelu(rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
    unary(rec, "quick_gelu", x)
}

/// diffusers GEGLU gating: `x` `[.., 2F]` -> `[.., F]`, `x[.., :F] * gelu(x[.., F:])`.
pub fn geglu(rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
    let op = "geglu";
    let dt = expect_act(op, x)?;
    let shape = x.shape();
    let two_f = shape.last().copied().unwrap_or(0);
    if two_f == 0 || !two_f.is_multiple_of(2) {
        return Err(Error::shape(
            op,
            format!("last dimension must be even and non-zero, got {shape:?}"),
        ));
    }
    let f = two_f / 2;
    let mut out_shape = shape.to_vec();
    if let Some(last) = out_shape.last_mut() {
        *last = f;
    }
    let gpu = rec.gpu();
    let out = Tensor::empty(gpu, &out_shape, dt)?;
    let rows = x.numel() / two_f;
    let vec4 = f.is_multiple_of(4);
    let w = if vec4 { 4 } else { 1 };
    let kernel = gpu.kernel(&spec("geglu", vec4, dt))?;
    let per_band = (gpu.max_binding_elems(dt) / two_f).max(1);
    for_each_band(rows, per_band, |r0, nr| {
        let xw = x.window(gpu, r0 * two_f, nr * two_f)?;
        let ow = out.window(gpu, r0 * f, nr * f)?;
        let units = nr * f / w;
        let p = Params {
            n: u32_of(op, units)?,
            x_shift: xw.shift / w as u32,
            o_shift: ow.shift / w as u32,
            f: u32_of(op, f / w)?,
        };
        let groups = rec.grid(u32_of(op, units.div_ceil(WG))?);
        rec.dispatch(&kernel, &p, &[xw, ow], groups)
    })?;
    Ok(out)
}

/// CPU references in f64.
pub mod cpu {
    /// erf(x) to ~1e-15: Taylor series below 2.5, else 1 - erfc by continued fraction.
    pub fn erf(x: f64) -> f64 {
        if x.abs() >= 2.5 {
            return x.signum() * (1.0 - erfc_cf(x.abs()));
        }
        let (mut term, mut sum) = (x, x);
        for n in 1..200 {
            term *= -x * x / n as f64;
            let add = term / (2 * n + 1) as f64;
            sum += add;
            if add.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    /// erfc(x) with relative accuracy, also in the far tail.
    pub fn erfc(x: f64) -> f64 {
        if x >= 2.5 {
            erfc_cf(x)
        } else if x <= -2.5 {
            2.0 - erfc_cf(-x)
        } else {
            1.0 - erf(x)
        }
    }

    /// erfc(x) for x >= 2.5 by its continued fraction, evaluated bottom-up.
    fn erfc_cf(x: f64) -> f64 {
        let mut f = 0.0;
        for k in (1..120).rev() {
            f = (k as f64 / 2.0) / (x + f);
        }
        (-x * x).exp() / std::f64::consts::PI.sqrt() / (x + f)
    }

    pub fn silu(x: &[f32]) -> Vec<f32> {
        x.iter()
            .map(|&v| {
                let v = f64::from(v);
                (v / (1.0 + (-v).exp())) as f32
            })
            .collect()
    }

    pub fn quick_gelu(x: &[f32]) -> Vec<f32> {
        x.iter()
            .map(|&v| {
                let v = f64::from(v);
                (v / (1.0 + (-1.702 * v).exp())) as f32
            })
            .collect()
    }

    pub fn gelu1(v: f64) -> f64 {
        0.5 * v * erfc(-v / std::f64::consts::SQRT_2)
    }

    pub fn gelu(x: &[f32]) -> Vec<f32> {
        x.iter().map(|&v| gelu1(f64::from(v)) as f32).collect()
    }

    /// Rows of `2f` -> rows of `f`.
    pub fn geglu(x: &[f32], f: usize) -> Vec<f32> {
        x.chunks(2 * f)
            .flat_map(|row| {
                (0..f).map(move |j| (f64::from(row[j]) * gelu1(f64::from(row[f + j]))) as f32)
            })
            .collect()
    }
}

/// Every kernel variant of this family (validated offline by the tests).
pub fn variants() -> Vec<KernelSpec> {
    let mut v = Vec::new();
    for entry in ["silu", "quick_gelu", "gelu", "geglu"] {
        for vec4 in [false, true] {
            for dt in [DType::F32, DType::F16] {
                v.push(spec(entry, vec4, dt));
            }
        }
    }
    v
}
