//! `x.chunk(3, dim=-1)` made contiguous (`shaders/split.wgsl`): turns the fused Q/K/V
//! projection's `[.., 3C]` output into the three `[.., C]` tensors attention reads, in one
//! dispatch per band of rows. Moves u32 words, so any dtype whose part is whole words
//! (f32; f16 with C even).

use super::{for_each_band, u32_of};
use crate::error::{Error, Result};
use crate::gpu::{KernelSpec, Recorder, Tensor};

const SRC: &str = include_str!("../../shaders/split.wgsl");
const WG: usize = 256;

crate::shader_params! {
    struct Params {
        n: u32,
        w: u32,
        x_shift: u32,
        o0_shift: u32,
        o1_shift: u32,
        o2_shift: u32,
    }
}

fn spec() -> KernelSpec {
    KernelSpec::new("split", SRC, "split3").params::<Params>()
}

/// x `[.., 3C]` -> three `[.., C]` tensors of x's dtype.
pub fn split_last3(rec: &mut Recorder, x: &Tensor) -> Result<[Tensor; 3]> {
    let op = "split_last3";
    let (&last, lead) = x
        .shape()
        .split_last()
        .ok_or_else(|| Error::shape(op, "x must have at least one dimension"))?;
    let es = x.dtype().size() as usize;
    if !last.is_multiple_of(3) || !(last / 3 * es).is_multiple_of(4) {
        return Err(Error::shape(
            op,
            format!(
                "the last dimension of {:?} {:?} must be three parts of whole 32-bit words",
                x.shape(),
                x.dtype()
            ),
        ));
    }
    let c = last / 3;
    let mut shape = lead.to_vec();
    shape.push(c);
    let gpu = rec.gpu();
    let outs = [
        Tensor::empty(gpu, &shape, x.dtype())?,
        Tensor::empty(gpu, &shape, x.dtype())?,
        Tensor::empty(gpu, &shape, x.dtype())?,
    ];
    let rows: usize = lead.iter().product();
    if rows == 0 || c == 0 {
        return Ok(outs);
    }
    // Windows are bound in elements of x's dtype; the shader indexes u32 words.
    let words = |elems: usize| elems * es / 4;
    let per_band = (gpu.max_binding_elems(x.dtype()) / last).max(1);
    let kernel = gpu.kernel(&spec())?;
    for_each_band(rows, per_band, |r0, nr| {
        let xw = x.window(gpu, r0 * last, nr * last)?;
        let ow: Vec<_> = outs
            .iter()
            .map(|o| o.window(gpu, r0 * c, nr * c))
            .collect::<Result<_>>()?;
        let shift = |s: u32| u32_of(op, words(s as usize));
        let p = Params {
            n: u32_of(op, words(nr * c))?,
            w: u32_of(op, words(c))?,
            x_shift: shift(xw.shift)?,
            o0_shift: shift(ow[0].shift)?,
            o1_shift: shift(ow[1].shift)?,
            o2_shift: shift(ow[2].shift)?,
        };
        let groups = rec.grid(u32_of(op, words(nr * c).div_ceil(WG))?);
        let mut bindings = vec![xw];
        bindings.extend(ow);
        rec.dispatch(&kernel, &p, &bindings, groups)
    })?;
    Ok(outs)
}

/// CPU reference.
pub mod cpu {
    /// `x [R, 3C]` -> the three `[R, C]` parts.
    pub fn split_last3(x: &[f32], c: usize) -> [Vec<f32>; 3] {
        let mut parts: [Vec<f32>; 3] = Default::default();
        for row in x.chunks(3 * c) {
            for (k, part) in parts.iter_mut().enumerate() {
                part.extend_from_slice(&row[k * c..(k + 1) * c]);
            }
        }
        parts
    }
}

/// Every kernel variant of this family (validated offline by the tests).
pub fn variants() -> Vec<KernelSpec> {
    vec![spec()]
}
