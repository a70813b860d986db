//! Embeddings (`shaders/embedding.wgsl`): diffusers' sinusoidal `get_timestep_embedding`
//! (UNet `time_proj`) and CLIP's `CLIPTextEmbeddings` (token + position lookup).

use super::{expect_f32, for_each_band, u32_of};
use crate::error::{Error, Result};
use crate::gpu::{DType, KernelSpec, Recorder, Tensor};

const SRC: &str = include_str!("../../shaders/embedding.wgsl");
const WG: usize = 256;

crate::shader_params! {
    struct Params {
        n: u32,
        d: u32,
        half: u32,
        flip: u32,
        t: u32,
        v0: u32,
        v1: u32,
        last: u32,
        ids_shift: u32,
        tok_shift: u32,
        pos_shift: u32,
        o_shift: u32,
    }
}

/// The frequencies `exp(-ln(10000) * k / (half - shift))`, `k < dim / 2`, rounded step by
/// step in f32 exactly as torch evaluates them (exp correctly rounded).
pub fn timestep_freqs(dim: usize, downscale_freq_shift: f32) -> Vec<f32> {
    let half = dim / 2;
    let neg_log = -(10000f64.ln() as f32);
    let denom = half as f32 - downscale_freq_shift;
    (0..half)
        .map(|k| {
            let e = (neg_log * k as f32) / denom;
            f64::from(e).exp() as f32
        })
        .collect()
}

/// diffusers `get_timestep_embedding(timesteps, dim, flip_sin_to_cos,
/// downscale_freq_shift)` (max_period 10000, scale 1): `timesteps` `[B]` f32 ->
/// `[B, dim]` f32, `[sin, cos]` halves (`[cos, sin]` when flipped), a zero column when
/// `dim` is odd.
pub fn timestep_embedding(
    rec: &mut Recorder,
    timesteps: &Tensor,
    dim: usize,
    flip_sin_to_cos: bool,
    downscale_freq_shift: f32,
) -> Result<Tensor> {
    timestep_embedding_as(
        rec,
        timesteps,
        dim,
        flip_sin_to_cos,
        downscale_freq_shift,
        DType::F32,
    )
}

/// [`timestep_embedding`] stored as activation dtype `act` (F32 or F16; computed in f32).
pub fn timestep_embedding_as(
    rec: &mut Recorder,
    timesteps: &Tensor,
    dim: usize,
    flip_sin_to_cos: bool,
    downscale_freq_shift: f32,
    act: DType,
) -> Result<Tensor> {
    let op = "timestep_embedding";
    expect_act_dtype(op, act)?;
    expect_f32(op, timesteps)?;
    if timesteps.shape().len() != 1 {
        return Err(Error::shape(
            op,
            format!("timesteps must be 1-D, got {:?}", timesteps.shape()),
        ));
    }
    let half = dim / 2;
    if half == 0 {
        return Err(Error::shape(
            op,
            format!("dim must be at least 2, got {dim}"),
        ));
    }
    let b = timesteps.numel();
    let gpu = rec.gpu();
    let out = Tensor::empty(gpu, &[b, dim], act)?;
    if b == 0 {
        return Ok(out);
    }
    let freqs = timestep_freqs(dim, downscale_freq_shift);
    let freq = Tensor::from_f32(gpu, &[half], &freqs, DType::F32)?;
    let kernel = gpu.kernel(&timestep_spec(act))?;
    let n = b * dim;
    let p = Params {
        n: u32_of(op, n)?,
        d: u32_of(op, dim)?,
        half: u32_of(op, half)?,
        flip: u32::from(flip_sin_to_cos),
        ..Default::default()
    };
    let groups = [u32_of(op, n.div_ceil(WG))?, 1, 1];
    rec.dispatch(
        &kernel,
        &p,
        &[timesteps.whole(gpu)?, freq.whole(gpu)?, out.whole(gpu)?],
        groups,
    )?;
    Ok(out)
}

/// Errors unless `act` is an activation dtype (F32 or F16).
fn expect_act_dtype(op: &'static str, act: DType) -> Result<()> {
    if act == DType::U32 {
        return Err(Error::shape(op, "the output must be f32 or f16"));
    }
    Ok(())
}

/// CLIP text embeddings: `token_table[ids] + pos_table[0..T]`. `ids` `[B, T]` U32,
/// `token_table` `[V, D]` and `pos_table` `[P >= T, D]` f32 or f16 -> `[B, T, D]` f32.
pub fn token_position_embedding(
    rec: &mut Recorder,
    ids: &Tensor,
    token_table: &Tensor,
    pos_table: &Tensor,
) -> Result<Tensor> {
    token_position_embedding_as(rec, ids, token_table, pos_table, DType::F32)
}

/// [`token_position_embedding`] stored as activation dtype `act` (F32 or F16; the sum is
/// f32 whatever the tables' dtypes).
/// The token table may exceed one binding (SD2: 49408 x 1024 f32 = 202 MB): it is bound
/// in bands of rows, one dispatch each. Ids `>= V` cannot be checked on the GPU; their
/// rows get the position embedding alone (use [`token_position_embedding_ids`] to check).
pub fn token_position_embedding_as(
    rec: &mut Recorder,
    ids: &Tensor,
    token_table: &Tensor,
    pos_table: &Tensor,
    act: DType,
) -> Result<Tensor> {
    let op = "token_position_embedding";
    expect_act_dtype(op, act)?;
    let &[b, t] = ids.shape() else {
        return Err(Error::shape(
            op,
            format!("ids must be [B, T], got {:?}", ids.shape()),
        ));
    };
    if ids.dtype() != DType::U32 {
        return Err(Error::shape(
            op,
            format!("ids must be U32, got {:?}", ids.dtype()),
        ));
    }
    let (&[v, d], &[np, dp]) = (token_table.shape(), pos_table.shape()) else {
        return Err(Error::shape(
            op,
            format!(
                "tables must be [V, D] and [P, D], got {:?} and {:?}",
                token_table.shape(),
                pos_table.shape()
            ),
        ));
    };
    if d != dp || t > np || v == 0 || d == 0 {
        return Err(Error::shape(
            op,
            format!(
                "token table {:?}, position table {:?} and {t} tokens do not fit together",
                token_table.shape(),
                pos_table.shape()
            ),
        ));
    }
    for table in [token_table, pos_table] {
        if table.dtype() == DType::U32 {
            return Err(Error::shape(op, "embedding tables must be f32 or f16"));
        }
        if table.dtype() == DType::F16 && !rec.gpu().caps.f16 {
            return Err(Error::shape(op, "f16 tables need a device with SHADER_F16"));
        }
    }
    let gpu = rec.gpu();
    let out = Tensor::empty(gpu, &[b, t, d], act)?;
    if b * t == 0 {
        return Ok(out);
    }
    let vec4 = d.is_multiple_of(4);
    let w = if vec4 { 4 } else { 1 };
    let spec = token_pos_spec(vec4, token_table.dtype(), pos_table.dtype(), act);
    let kernel = gpu.kernel(&spec)?;
    let (idw, pw, ow) = (
        ids.whole(gpu)?,
        pos_table.window(gpu, 0, t * d)?,
        out.whole(gpu)?,
    );
    let units = b * t * d / w;
    let rows_per_band = (gpu.max_binding_elems(token_table.dtype()) / d).max(1);
    for_each_band(v, rows_per_band, |v0, nv| {
        let tw = token_table.window(gpu, v0 * d, nv * d)?;
        let p = Params {
            n: u32_of(op, units)?,
            d: u32_of(op, d / w)?,
            t: u32_of(op, t)?,
            v0: u32_of(op, v0)?,
            v1: u32_of(op, v0 + nv)?,
            last: u32::from(v0 + nv == v),
            ids_shift: idw.shift,
            tok_shift: tw.shift / w as u32,
            pos_shift: pw.shift / w as u32,
            o_shift: ow.shift / w as u32,
            ..Default::default()
        };
        let groups = rec.grid(u32_of(op, units.div_ceil(WG))?);
        rec.dispatch(
            &kernel,
            &p,
            &[idw.clone(), tw, pw.clone(), ow.clone()],
            groups,
        )
    })?;
    Ok(out)
}

/// [`token_position_embedding`] from CPU ids `[batch, ids.len() / batch]`, checked
/// against the vocabulary size first.
pub fn token_position_embedding_ids(
    rec: &mut Recorder,
    ids: &[u32],
    batch: usize,
    token_table: &Tensor,
    pos_table: &Tensor,
) -> Result<Tensor> {
    let op = "token_position_embedding";
    let vocab = token_table.shape().first().copied().unwrap_or(0);
    if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
        return Err(Error::shape(
            op,
            format!("token id {bad} is outside the vocabulary of {vocab}"),
        ));
    }
    if batch == 0 || !ids.len().is_multiple_of(batch) {
        return Err(Error::shape(
            op,
            format!("{} ids do not split into {batch} sequences", ids.len()),
        ));
    }
    let t = Tensor::from_u32(rec.gpu(), &[batch, ids.len() / batch], ids)?;
    token_position_embedding(rec, &t, token_table, pos_table)
}

/// CPU references in f64.
pub mod cpu {
    /// `get_timestep_embedding` with the f32 arguments torch forms, sin/cos in f64.
    pub fn timestep_embedding(t: &[f32], dim: usize, flip: bool, shift: f32) -> Vec<f32> {
        let freqs = super::timestep_freqs(dim, shift);
        let half = dim / 2;
        let mut out = vec![0.0; t.len() * dim];
        for (b, &tb) in t.iter().enumerate() {
            for (k, &f) in freqs.iter().enumerate() {
                let arg = f64::from(tb * f);
                let (s, c) = (arg.sin() as f32, arg.cos() as f32);
                let (first, second) = if flip { (c, s) } else { (s, c) };
                out[b * dim + k] = first;
                out[b * dim + half + k] = second;
            }
        }
        out
    }

    /// `tok[ids] + pos[0..T]`, rows of `d`.
    pub fn token_position_embedding(
        ids: &[u32],
        t: usize,
        tok: &[f32],
        pos: &[f32],
        d: usize,
    ) -> Vec<f32> {
        ids.iter()
            .enumerate()
            .flat_map(|(n, &id)| {
                let tr = &tok[id as usize * d..][..d];
                let pr = &pos[(n % t) * d..][..d];
                tr.iter()
                    .zip(pr)
                    .map(|(&a, &b)| (f64::from(a) + f64::from(b)) as f32)
            })
            .collect()
    }
}

fn timestep_spec(act: DType) -> KernelSpec {
    KernelSpec::new("embedding", SRC, "timestep")
        .params::<Params>()
        .activation(act)
        .define("V", "f32")
        .define("VO", "AT")
        .define("STO", "at")
        .define("TT", "f32")
        .define("TP", "f32")
        .define("VT", "f32")
        .define("VP", "f32")
}

/// The token + position kernel for tables stored as `tt` / `tp` and output activations
/// `act`, loading vec4s when the width allows.
fn token_pos_spec(vec4: bool, tt: DType, tp: DType, act: DType) -> KernelSpec {
    let vt = |dt: DType| {
        if vec4 {
            format!("vec4<{}>", dt.wgsl())
        } else {
            dt.wgsl().to_string()
        }
    };
    KernelSpec::new("embedding", SRC, "token_pos")
        .params::<Params>()
        .activation(act)
        .f16(tt == DType::F16 || tp == DType::F16)
        .define("V", vt(DType::F32))
        .define("VO", if vec4 { "AT4" } else { "AT" })
        .define("STO", if vec4 { "at4" } else { "at" })
        .define("TT", tt.wgsl())
        .define("TP", tp.wgsl())
        .define("VT", vt(tt))
        .define("VP", vt(tp))
}

/// Every kernel variant of this family (validated offline by the tests).
pub fn variants() -> Vec<KernelSpec> {
    let mut v = vec![timestep_spec(DType::F32), timestep_spec(DType::F16)];
    for vec4 in [false, true] {
        for tt in [DType::F32, DType::F16] {
            for tp in [DType::F32, DType::F16] {
                for act in [DType::F32, DType::F16] {
                    v.push(token_pos_spec(vec4, tt, tp, act));
                }
            }
        }
    }
    v
}
