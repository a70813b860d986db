//! Concatenation along one dimension (`torch.cat([a, b], dim)`, `shaders/concat.wgsl`):
//! the UNet up blocks' skip concat on channels. With few outer rows (dim 1, small batch)
//! it is `2 x rows` buffer copies, which no binding limit applies to; otherwise one
//! kernel dispatch per band of rows.

use super::{for_each_band, u32_of};
use crate::error::{Error, Result};
use crate::gpu::{DType, KernelSpec, Recorder, Tensor, Window};

const SRC: &str = include_str!("../../shaders/concat.wgsl");
const WG: usize = 256;
/// Up to this many outer rows, copies beat a dispatch.
const MAX_COPY_ROWS: usize = 16;

crate::shader_params! {
    struct Params {
        n: u32,
        a_shift: u32,
        b_shift: u32,
        o_shift: u32,
        ia: u32,
        ib: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

/// `torch.cat([a, b], dim=1)` for `[B, C1, H, W]` and `[B, C2, H, W]`.
pub fn concat_channels(rec: &mut Recorder, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    concat(rec, a, b, 1)
}

/// A byte range of `t` for a buffer copy (elements `start .. start + len`).
fn span(t: &Tensor, start: usize, len: usize) -> Window {
    let es = t.dtype().size();
    Window {
        buffer: t.buffer().clone(),
        offset: start as u64 * es,
        size: len as u64 * es,
        shift: 0,
    }
}

/// The kernel moving elements of `dt` (4-byte dtypes move as u32 bits).
fn spec(dt: DType) -> KernelSpec {
    KernelSpec::new("concat", SRC, "concat_rows")
        .params::<Params>()
        .f16(dt == DType::F16)
        .define("T", if dt == DType::F16 { "f16" } else { "u32" })
}

/// `torch.cat([a, b], dim)`: equal shapes except along `dim`; one dtype (f32, f16, u32).
pub fn concat(rec: &mut Recorder, a: &Tensor, b: &Tensor, dim: usize) -> Result<Tensor> {
    let op = "concat";
    let (sa, sb) = (a.shape(), b.shape());
    let same_rest =
        sa.len() == sb.len() && dim < sa.len() && (0..sa.len()).all(|d| d == dim || sa[d] == sb[d]);
    if !same_rest {
        return Err(Error::shape(
            op,
            format!("cannot concatenate {sa:?} and {sb:?} along dim {dim}"),
        ));
    }
    if a.dtype() != b.dtype() {
        return Err(Error::shape(
            op,
            format!(
                "needs two tensors of one dtype, got {:?} and {:?}",
                a.dtype(),
                b.dtype()
            ),
        ));
    }
    let mut shape = sa.to_vec();
    shape[dim] += sb[dim];
    let gpu = rec.gpu();
    let out = Tensor::empty(gpu, &shape, a.dtype())?;
    let rows: usize = sa[..dim].iter().product();
    let inner: usize = sa[dim + 1..].iter().product();
    let (ia, ib) = (sa[dim] * inner, sb[dim] * inner);
    let row_len = ia + ib;
    if out.numel() == 0 {
        return Ok(out);
    }
    let es = a.dtype().size() as usize;
    let per_band = gpu.max_binding_elems(a.dtype()) / row_len;
    // Buffer copies need 4-byte aligned offsets and sizes (odd f16 widths use the kernel).
    let copyable = (ia * es).is_multiple_of(4) && (ib * es).is_multiple_of(4);
    if copyable && (rows <= MAX_COPY_ROWS || per_band == 0) {
        for r in 0..rows {
            if ia > 0 {
                rec.copy(span(a, r * ia, ia), span(&out, r * row_len, ia))?;
            }
            if ib > 0 {
                rec.copy(span(b, r * ib, ib), span(&out, r * row_len + ia, ib))?;
            }
        }
        return Ok(out);
    }
    if per_band == 0 {
        return Err(Error::OutOfMemory(format!(
            "{op}: one row of {row_len} elements with an odd f16 width exceeds a storage binding"
        )));
    }
    let kernel = gpu.kernel(&spec(a.dtype()))?;
    for_each_band(rows, per_band, |r0, nr| {
        // Zero-width inputs still need a (dummy) binding: windows are at least 1 element.
        let aw = a.window(gpu, r0 * ia, nr * ia)?;
        let bw = b.window(gpu, r0 * ib, nr * ib)?;
        let ow = out.window(gpu, r0 * row_len, nr * row_len)?;
        let p = Params {
            n: u32_of(op, nr * row_len)?,
            a_shift: aw.shift,
            b_shift: bw.shift,
            o_shift: ow.shift,
            ia: u32_of(op, ia)?,
            ib: u32_of(op, ib)?,
            ..Default::default()
        };
        let groups = rec.grid(u32_of(op, (nr * row_len).div_ceil(WG))?);
        rec.dispatch(&kernel, &p, &[aw, bw, ow], groups)
    })?;
    Ok(out)
}

/// CPU reference.
pub mod cpu {
    /// Rows of `a` (`ia` long) and `b` (`ib` long) interleaved: `out[r] = a[r] ++ b[r]`.
    pub fn concat_rows(a: &[f32], b: &[f32], ia: usize, ib: usize) -> Vec<f32> {
        let rows = a
            .len()
            .checked_div(ia)
            .unwrap_or_else(|| b.len() / ib.max(1));
        let mut out = Vec::with_capacity(a.len() + b.len());
        for r in 0..rows {
            out.extend_from_slice(&a[r * ia..(r + 1) * ia]);
            out.extend_from_slice(&b[r * ib..(r + 1) * ib]);
        }
        out
    }
}

/// Every kernel variant of this family (validated offline by the tests).
pub fn variants() -> Vec<KernelSpec> {
    vec![spec(DType::F32), spec(DType::F16)]
}
