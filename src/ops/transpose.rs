//! Batched transpose of the last two dimensions (`shaders/transpose.wgsl`), optionally
//! adding a residual in the same pass. Moves feature maps between NCHW (`[B, C, H*W]`)
//! and token rows (`[B, H*W, C]`) around attention blocks.

use super::{expect_act, expect_same_act, for_each_band, u32_of};
use crate::error::{Error, Result};
use crate::gpu::{DType, KernelSpec, Recorder, Tensor};

const SRC: &str = include_str!("../../shaders/transpose.wgsl");
const WG: usize = 256;

crate::shader_params! {
    struct Params {
        n: u32,
        m: u32,
        cols: u32,
        x_shift: u32,
        r_shift: u32,
        o_shift: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

fn spec(entry: &'static str, dt: DType) -> KernelSpec {
    KernelSpec::new("transpose", SRC, entry)
        .params::<Params>()
        .activation(dt)
}

/// `x` `[.., M, N]` -> `[.., N, M]` (+ `residual`, shaped like the output).
pub fn transpose(rec: &mut Recorder, x: &Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
    let op = "transpose";
    let dt = expect_act(op, x)?;
    let shape = x.shape();
    if shape.len() < 2 {
        return Err(Error::shape(
            op,
            format!("x needs two dimensions, got {shape:?}"),
        ));
    }
    let (m, n) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    let batch: usize = shape[..shape.len() - 2].iter().product();
    let mut out_shape = shape.to_vec();
    let last = out_shape.len() - 1;
    out_shape.swap(last - 1, last);
    if let Some(r) = residual {
        expect_same_act(op, dt, &[r])?;
        if r.shape() != out_shape.as_slice() {
            return Err(Error::shape(
                op,
                format!("residual {:?} must be {out_shape:?}", r.shape()),
            ));
        }
    }
    let gpu = rec.gpu();
    let out = Tensor::empty(gpu, &out_shape, dt)?;
    let per = m * n;
    if per == 0 || batch == 0 {
        return Ok(out);
    }
    if per > gpu.max_binding_elems(dt) {
        return Err(Error::OutOfMemory(format!(
            "transpose of one {m}x{n} matrix exceeds one storage binding"
        )));
    }
    let entry = if residual.is_some() {
        "transpose_add"
    } else {
        "transpose"
    };
    let kernel = gpu.kernel(&spec(entry, dt))?;
    // Bands of whole matrices, each window under the binding limit.
    let per_band = (gpu.max_binding_elems(dt) / per).max(1);
    for_each_band(batch, per_band, |b0, nb| {
        let (start, len) = (b0 * per, nb * per);
        let xw = x.window(gpu, start, len)?;
        let ow = out.window(gpu, start, len)?;
        let rw = residual.map(|r| r.window(gpu, start, len)).transpose()?;
        let p = Params {
            n: u32_of(op, len)?,
            m: u32_of(op, m)?,
            cols: u32_of(op, n)?,
            x_shift: xw.shift,
            r_shift: rw.as_ref().map_or(0, |w| w.shift),
            o_shift: ow.shift,
            _pad0: 0,
            _pad1: 0,
        };
        let groups = rec.grid(u32_of(op, len.div_ceil(WG))?);
        let mut bindings = vec![xw, ow];
        bindings.extend(rw);
        rec.dispatch(&kernel, &p, &bindings, groups)
    })?;
    Ok(out)
}

/// CPU reference.
pub mod cpu {
    /// `[batch, m, n]` -> `[batch, n, m]`, plus `residual` when given.
    pub fn transpose(
        x: &[f32],
        batch: usize,
        m: usize,
        n: usize,
        residual: Option<&[f32]>,
    ) -> Vec<f32> {
        let mut out = vec![0.0; batch * m * n];
        for b in 0..batch {
            for i in 0..m {
                for j in 0..n {
                    let o = b * m * n + j * m + i;
                    out[o] = x[b * m * n + i * n + j] + residual.map_or(0.0, |r| r[o]);
                }
            }
        }
        out
    }
}

/// Every kernel variant of this family (validated offline by the tests).
pub fn variants() -> Vec<KernelSpec> {
    let mut v = Vec::new();
    for e in ["transpose", "transpose_add"] {
        for dt in [DType::F32, DType::F16] {
            v.push(spec(e, dt));
        }
    }
    v
}
