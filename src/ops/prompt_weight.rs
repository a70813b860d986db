//! AUTOMATIC1111's prompt emphasis on the text encoder's output
//! (`shaders/prompt_weight.wgsl`): each 77-token chunk scaled per token by its weight,
//! then rescaled to its unweighted mean (`sd_hijack_clip.py`, `process_tokens`, the
//! "Original" emphasis mode).

use super::{expect_act, u32_of};
use crate::error::{Error, Result};
use crate::gpu::{DType, KernelSpec, Recorder, Tensor};

const SRC: &str = include_str!("../../shaders/prompt_weight.wgsl");
const OP: &str = "prompt_weight";

crate::shader_params! {
    struct Params {
        chunks: u32,
        tokens: u32,
        dim: u32,
        z_shift: u32,
        w_shift: u32,
        o_shift: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

fn spec(dt: DType) -> KernelSpec {
    KernelSpec::new("prompt_weight", SRC, OP)
        .params::<Params>()
        .activation(dt)
}

/// `z` `[chunks, tokens, dim]` (the text encoder's output), `weights` `[chunks, tokens]`
/// f32 -> `z` weighted per token with each chunk's mean restored. All weights 1 gives
/// `z` back bit for bit (the ratio of two equal sums is 1).
pub fn prompt_weight(rec: &mut Recorder, z: &Tensor, weights: &Tensor) -> Result<Tensor> {
    let dt = expect_act(OP, z)?;
    let &[chunks, tokens, dim] = z.shape() else {
        return Err(Error::shape(
            OP,
            format!("z must be [chunks, tokens, dim], got {:?}", z.shape()),
        ));
    };
    if weights.dtype() != DType::F32 || weights.shape() != [chunks, tokens] {
        return Err(Error::shape(
            OP,
            format!(
                "weights must be f32 [{chunks}, {tokens}], got {:?} {:?}",
                weights.dtype(),
                weights.shape()
            ),
        ));
    }
    let gpu = rec.gpu();
    let out = Tensor::empty(gpu, z.shape(), dt)?;
    if out.numel() == 0 {
        return Ok(out);
    }
    if z.numel() > gpu.max_binding_elems(dt) {
        return Err(Error::OutOfMemory(format!(
            "{OP}: {chunks} prompt chunks exceed one storage binding"
        )));
    }
    let kernel = gpu.kernel(&spec(dt))?;
    let zw = z.window(gpu, 0, z.numel())?;
    let ww = weights.window(gpu, 0, weights.numel())?;
    let ow = out.window(gpu, 0, out.numel())?;
    let p = Params {
        chunks: u32_of(OP, chunks)?,
        tokens: u32_of(OP, tokens)?,
        dim: u32_of(OP, dim)?,
        z_shift: zw.shift,
        w_shift: ww.shift,
        o_shift: ow.shift,
        ..Default::default()
    };
    let groups = rec.grid(u32_of(OP, chunks)?);
    rec.dispatch(&kernel, &p, &[zw, ww, ow], groups)?;
    Ok(out)
}

/// Every kernel variant of this family (validated offline by the tests).
pub fn variants() -> Vec<KernelSpec> {
    vec![spec(DType::F32), spec(DType::F16)]
}

/// CPU reference.
pub mod cpu {
    /// [`super::prompt_weight`] on `[chunks, tokens, dim]` values (f64 sums).
    pub fn prompt_weight(z: &[f32], w: &[f32], tokens: usize, dim: usize) -> Vec<f32> {
        let n = tokens * dim;
        let mut out = Vec::with_capacity(z.len());
        for (zc, wc) in z.chunks(n).zip(w.chunks(tokens)) {
            let weighted: Vec<f32> = zc
                .iter()
                .enumerate()
                .map(|(i, &v)| v * wc[i / dim])
                .collect();
            let sum_z: f64 = zc.iter().map(|&v| f64::from(v)).sum();
            let sum_zw: f64 = weighted.iter().map(|&v| f64::from(v)).sum();
            let ratio = (sum_z / sum_zw) as f32;
            out.extend(weighted.iter().map(|&v| v * ratio));
        }
        out
    }
}
