//! Activation storage conversion, f32 <-> f16 (`shaders/cast.wgsl`), torch's
//! `tensor.to(dtype)` at the pipeline's boundaries (latents into an f16 UNet, its output
//! back to the f32 scheduler). Unlike torch, the f16 side saturates at +-65504: a value
//! past f16's range becomes the largest finite half instead of infinity.

use super::{expect_act, for_each_band, u32_of};
use crate::error::{Error, Result};
use crate::gpu::{DType, KernelSpec, Recorder, Tensor};

const SRC: &str = include_str!("../../shaders/cast.wgsl");
const WG: usize = 256;

crate::shader_params! {
    struct Params {
        n: u32,
        x_shift: u32,
        o_shift: u32,
        _pad0: u32,
    }
}

fn spec(from: DType, to: DType) -> KernelSpec {
    KernelSpec::new("cast", SRC, "convert")
        .params::<Params>()
        .activation(to)
        .f16(from == DType::F16)
        .define("XT", from.wgsl())
}

/// `t` stored as `dtype` (F32 or F16). Returns `t` itself (same storage) when it already
/// has that dtype. Banded, so any size under the device's largest buffer works.
pub fn cast(rec: &mut Recorder, t: &Tensor, dtype: DType) -> Result<Tensor> {
    let op = "cast";
    let from = expect_act(op, t)?;
    if dtype == DType::U32 {
        return Err(Error::shape(op, "can only cast to f32 or f16"));
    }
    if from == dtype {
        return Ok(t.clone());
    }
    let gpu = rec.gpu();
    let out = Tensor::empty(gpu, t.shape(), dtype)?;
    if t.numel() == 0 {
        return Ok(out);
    }
    let kernel = gpu.kernel(&spec(from, dtype))?;
    // The f32 side is the one the binding limit bounds.
    let per_band = gpu.max_binding_elems(DType::F32) / WG * WG;
    for_each_band(t.numel(), per_band, |start, len| {
        let xw = t.window(gpu, start, len)?;
        let ow = out.window(gpu, start, len)?;
        let p = Params {
            n: u32_of(op, len)?,
            x_shift: xw.shift,
            o_shift: ow.shift,
            _pad0: 0,
        };
        let groups = rec.grid(u32_of(op, len.div_ceil(WG))?);
        rec.dispatch(&kernel, &p, &[xw, ow], groups)
    })?;
    Ok(out)
}

/// CPU reference.
pub mod cpu {
    use crate::gpu::DType;

    /// The value `v` takes stored as `dtype` (f16: saturated to +-65504, then rounded to
    /// nearest even).
    pub fn round(v: f32, dtype: DType) -> f32 {
        match dtype {
            DType::F16 => half::f16::from_f32(v.clamp(-65504.0, 65504.0)).to_f32(),
            _ => v,
        }
    }

    /// `x` stored as `dtype`, back as f32.
    pub fn cast(x: &[f32], dtype: DType) -> Vec<f32> {
        x.iter().map(|&v| round(v, dtype)).collect()
    }
}

/// Every kernel variant of this family (validated offline by the tests).
pub fn variants() -> Vec<KernelSpec> {
    vec![spec(DType::F32, DType::F16), spec(DType::F16, DType::F32)]
}
