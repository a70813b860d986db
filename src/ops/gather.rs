//! Row gather (`shaders/gather_rows.wgsl`): `out[r] = src[idx[r]]` for whole rows. The
//! pipeline assembles each step's conditioning from encoded prompt chunks with it.

use super::{expect_act, u32_of};
use crate::error::{Error, Result};
use crate::gpu::{KernelSpec, Recorder, Tensor};

const SRC: &str = include_str!("../../shaders/gather_rows.wgsl");
const WG: usize = 256;
const OP: &str = "gather_rows";

crate::shader_params! {
    struct Params {
        n: u32,
        row: u32,
        src_shift: u32,
        o_shift: u32,
    }
}

fn spec(dt: crate::gpu::DType) -> KernelSpec {
    KernelSpec::new("gather_rows", SRC, OP)
        .params::<Params>()
        .activation(dt)
}

/// `src` `[R, ...]` and row indices `idx` (each `< R`) -> `[idx.len(), ...]`.
pub fn gather_rows(rec: &mut Recorder, src: &Tensor, idx: &[u32]) -> Result<Tensor> {
    let dt = expect_act(OP, src)?;
    let Some((&rows, rest)) = src.shape().split_first() else {
        return Err(Error::shape(OP, "src must have at least one dimension"));
    };
    if let Some(&bad) = idx.iter().find(|&&i| i as usize >= rows) {
        return Err(Error::shape(
            OP,
            format!("row index {bad} is out of range for {rows} rows"),
        ));
    }
    let row: usize = rest.iter().product();
    let mut shape = vec![idx.len()];
    shape.extend_from_slice(rest);
    let gpu = rec.gpu();
    let out = Tensor::empty(gpu, &shape, dt)?;
    if out.numel() == 0 {
        return Ok(out);
    }
    let limit = gpu.max_binding_elems(dt);
    if src.numel() > limit || out.numel() > limit {
        return Err(Error::OutOfMemory(format!(
            "{OP}: {} rows of {row} exceed one storage binding",
            rows.max(idx.len())
        )));
    }
    let kernel = gpu.kernel(&spec(dt))?;
    let idx_t = Tensor::from_u32(gpu, &[idx.len()], idx)?;
    let iw = idx_t.window(gpu, 0, idx.len())?;
    let sw = src.window(gpu, 0, src.numel())?;
    let ow = out.window(gpu, 0, out.numel())?;
    let p = Params {
        n: u32_of(OP, out.numel())?,
        row: u32_of(OP, row)?,
        src_shift: sw.shift,
        o_shift: ow.shift,
    };
    let groups = rec.grid(u32_of(OP, out.numel().div_ceil(WG))?);
    rec.dispatch(&kernel, &p, &[iw, sw, ow], groups)?;
    Ok(out)
}

/// Every kernel variant of this family (validated offline by the tests).
pub fn variants() -> Vec<KernelSpec> {
    vec![spec(crate::gpu::DType::F32), spec(crate::gpu::DType::F16)]
}

/// CPU reference.
pub mod cpu {
    /// `src` rows of `row` values gathered by `idx`.
    pub fn gather_rows(src: &[f32], row: usize, idx: &[u32]) -> Vec<f32> {
        idx.iter()
            .flat_map(|&i| &src[i as usize * row..(i as usize + 1) * row])
            .copied()
            .collect()
    }
}
