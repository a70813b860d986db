//! Elementwise add / mul with broadcast and a fused scale (`shaders/elementwise.wgsl`).
//! Used for residual adds, bias adds over NCHW, the time-embedding add, and scaling.
//! `a` and the output are activations (f32 or f16); `b` has `a`'s dtype or is f32 (a bias).

use super::{expect_act, for_each_band, u32_of};
use crate::error::{Error, Result};
use crate::gpu::{DType, KernelSpec, Recorder, Tensor};

const SRC: &str = include_str!("../../shaders/elementwise.wgsl");
const WG: usize = 256;

crate::shader_params! {
    struct Params {
        n: u32,
        base: u32,
        a_shift: u32,
        b_shift: u32,
        out_shift: u32,
        b_inner: u32,
        b_period: u32,
        scale: f32,
    }
}

/// How `b` repeats over `a`: `b[(i / inner) % period]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Broadcast {
    pub inner: usize,
    pub period: usize,
}

/// Works out the broadcast of `b` over `a` (numpy rules, right-aligned), provided the
/// dimensions where `b` is not 1 are contiguous.
pub fn broadcast(op: &'static str, a: &[usize], b: &[usize]) -> Result<Broadcast> {
    let bad = || Error::shape(op, format!("cannot broadcast {b:?} over {a:?}"));
    if b.len() > a.len() {
        return Err(bad());
    }
    let pad = a.len() - b.len();
    let full: Vec<usize> = std::iter::repeat_n(1, pad)
        .chain(b.iter().copied())
        .collect();
    let live: Vec<usize> = (0..a.len()).filter(|&d| full[d] != 1).collect();
    let (Some(&first), Some(&last)) = (live.first(), live.last()) else {
        return Ok(Broadcast {
            inner: 1,
            period: 1,
        });
    };
    for d in first..=last {
        if full[d] != a[d] {
            return Err(bad());
        }
    }
    Ok(Broadcast {
        inner: a[last + 1..].iter().product(),
        period: a[first..=last].iter().product(),
    })
}

/// The kernel for activations `at` and `b` stored as `bt`.
fn spec(entry: &'static str, at: DType, bt: DType) -> KernelSpec {
    KernelSpec::new("elementwise", SRC, entry)
        .params::<Params>()
        .activation(at)
        .define("BT", bt.wgsl())
}

fn binary(
    rec: &mut Recorder,
    entry: &'static str,
    a: &Tensor,
    b: &Tensor,
    scale: f32,
) -> Result<Tensor> {
    let op = entry;
    let at = expect_act(op, a)?;
    let bt = expect_act(op, b)?;
    if bt != at && bt != DType::F32 {
        return Err(Error::shape(
            op,
            format!("b must be {at:?} or f32, got {bt:?}"),
        ));
    }
    let bc = broadcast(op, a.shape(), b.shape())?;
    let gpu = rec.gpu();
    let out = Tensor::empty(gpu, a.shape(), at)?;
    let pipeline = gpu.kernel(&spec(entry, at, bt))?;
    let same_shape = bc.inner == 1 && bc.period == a.numel();
    let b_whole = if same_shape {
        None
    } else {
        Some(b.whole(gpu)?)
    };
    // b may be f32 over an f16 `a`: its windows bound the band.
    let per_band = gpu.max_binding_elems(bt) / WG * WG;
    for_each_band(a.numel(), per_band, |start, len| {
        let aw = a.window(gpu, start, len)?;
        let ow = out.window(gpu, start, len)?;
        let bw = match &b_whole {
            Some(w) => w.clone(),
            None => b.window(gpu, start, len)?,
        };
        let params = Params {
            n: u32_of(op, len)?,
            base: if same_shape { 0 } else { u32_of(op, start)? },
            a_shift: aw.shift,
            b_shift: bw.shift,
            out_shift: ow.shift,
            b_inner: u32_of(op, bc.inner)?,
            b_period: u32_of(op, if same_shape { len } else { bc.period })?,
            scale,
        };
        let groups = rec.grid(u32_of(op, len.div_ceil(WG))?);
        rec.dispatch(&pipeline, &params, &[aw, bw, ow], groups)
    })?;
    Ok(out)
}

/// `(a + b) * scale`, `b` broadcast over `a`.
pub fn add_scaled(rec: &mut Recorder, a: &Tensor, b: &Tensor, scale: f32) -> Result<Tensor> {
    binary(rec, "add", a, b, scale)
}

/// `a + b`, `b` broadcast over `a` (residual add, bias add).
pub fn add(rec: &mut Recorder, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(rec, "add", a, b, 1.0)
}

/// `a * b`, `b` broadcast over `a`.
pub fn mul(rec: &mut Recorder, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(rec, "mul", a, b, 1.0)
}

/// CPU references.
pub mod cpu {
    use super::Broadcast;

    /// `(a + b) * scale` with `b` broadcast as described by `bc`.
    pub fn add(a: &[f32], b: &[f32], bc: Broadcast, scale: f32) -> Vec<f32> {
        a.iter()
            .enumerate()
            .map(|(i, &x)| (x + b[(i / bc.inner) % bc.period]) * scale)
            .collect()
    }

    /// `a * b * scale` with `b` broadcast as described by `bc`.
    pub fn mul(a: &[f32], b: &[f32], bc: Broadcast, scale: f32) -> Vec<f32> {
        a.iter()
            .enumerate()
            .map(|(i, &x)| x * b[(i / bc.inner) % bc.period] * scale)
            .collect()
    }
}

/// Every kernel variant of this family (validated offline by the tests).
pub fn variants() -> Vec<KernelSpec> {
    let mut v = Vec::new();
    for e in ["add", "mul"] {
        for (at, bt) in [
            (DType::F32, DType::F32),
            (DType::F16, DType::F16),
            (DType::F16, DType::F32),
        ] {
            v.push(spec(e, at, bt));
        }
    }
    v
}
