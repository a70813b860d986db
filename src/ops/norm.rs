//! GroupNorm (torch `nn.GroupNorm`, with SiLU optionally fused on the output, as in
//! diffusers' ResnetBlock2D and the VAE) and LayerNorm over the last dimension
//! (`nn.LayerNorm`, CLIP and the transformer blocks). `shaders/norm.wgsl`.
//!
//! GroupNorm runs three dispatches (chunk partial sums, per-group merge, apply) so that a
//! group of millions of elements (the VAE: 4 channels x 768 x 768) is spread over many
//! workgroups and its statistics stay accurate; LayerNorm runs one (a workgroup per row).

use super::{expect_act, expect_f32, for_each_band, u32_of};
use crate::error::{Error, Result};
use crate::gpu::{DType, Gpu, KernelSpec, Recorder, Tensor};

const SRC: &str = include_str!("../../shaders/norm.wgsl");
/// Elements per `gn_partial` workgroup (the shader's `CHUNK`).
const CHUNK: usize = 16384;
const WG: usize = 256;

crate::shader_params! {
    struct Params {
        n: u32,
        x_shift: u32,
        o_shift: u32,
        gs: u32,
        chunks: u32,
        band_chunks: u32,
        g0: u32,
        c0: u32,
        s: u32,
        c: u32,
        cpg: u32,
        silu: u32,
        eps: f32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

/// The kernel for activations stored as `dt`, loading one element (`vec4 == false`) or
/// one vec4 at a time.
fn spec(entry: &'static str, vec4: bool, dt: DType) -> KernelSpec {
    let s = KernelSpec::new("norm", SRC, entry)
        .params::<Params>()
        .activation(dt)
        .define("S", if vec4 { "AT4" } else { "AT" })
        .define("ST", if vec4 { "at4" } else { "at" });
    if vec4 {
        s.define("V", "vec4<f32>")
            .define("W", "4")
            .define("HSUM", "dot(v, vec4<f32>(1.0))")
            .define("FIRST", "v.x")
    } else {
        s.define("V", "f32")
            .define("W", "1")
            .define("HSUM", "v")
            .define("FIRST", "v")
    }
}

fn expect_vec(op: &'static str, t: &Tensor, len: usize, what: &str) -> Result<()> {
    expect_f32(op, t)?;
    if t.numel() != len {
        return Err(Error::shape(
            op,
            format!("{what} has shape {:?}, expected {len} elements", t.shape()),
        ));
    }
    Ok(())
}

/// Elements of `dt` per band: a multiple of `unit` that fits one binding.
fn band_elems(gpu: &Gpu, unit: usize, dt: DType) -> usize {
    (gpu.max_binding_elems(dt) / unit * unit).max(unit)
}

/// `nn.GroupNorm(groups, C, eps)` on `x` `[B, C, *spatial]` with affine `gamma`, `beta`
/// (`[C]`), then `x * sigmoid(x)` when `silu`.
pub fn group_norm(
    rec: &mut Recorder,
    x: &Tensor,
    groups: usize,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
    silu: bool,
) -> Result<Tensor> {
    let op = "group_norm";
    let dt = expect_act(op, x)?;
    let shape = x.shape();
    if shape.len() < 2 {
        return Err(Error::shape(
            op,
            format!("x must be [B, C, ...], got {shape:?}"),
        ));
    }
    let (b, c) = (shape[0], shape[1]);
    let s: usize = shape[2..].iter().product();
    if groups == 0 || !c.is_multiple_of(groups) {
        return Err(Error::shape(
            op,
            format!("{c} channels do not split into {groups} groups"),
        ));
    }
    expect_vec(op, gamma, c, "gamma")?;
    expect_vec(op, beta, c, "beta")?;
    let gpu = rec.gpu();
    let out = Tensor::empty(gpu, shape, dt)?;
    let numel = x.numel();
    if numel == 0 {
        return Ok(out);
    }
    u32_of(op, numel)?;
    let vec4 = s.is_multiple_of(4);
    let w = if vec4 { 4 } else { 1 };
    let cpg = c / groups;
    let ngroups = b * groups;
    let gsize = cpg * s;
    let chunks = gsize.div_ceil(CHUNK);

    // Pass 1: partial sums per chunk; bands hold whole groups, or whole chunks of one
    // group when a group alone exceeds a binding.
    let part = Tensor::empty(gpu, &[ngroups * chunks, 4], DType::F32)?;
    let part_w = part.whole(gpu)?;
    let partial = gpu.kernel(&spec("gn_partial", vec4, dt))?;
    let per_band = band_elems(gpu, CHUNK, dt);
    let mut bands: Vec<(usize, usize, usize, usize)> = Vec::new(); // (g0, ng, c0, nc)
    if gsize <= per_band {
        let per = per_band / gsize;
        for_each_band(ngroups, per, |g0, ng| {
            bands.push((g0, ng, 0, chunks));
            Ok(())
        })?;
    } else {
        for g in 0..ngroups {
            for_each_band(chunks, per_band / CHUNK, |c0, nc| {
                bands.push((g, 1, c0, nc));
                Ok(())
            })?;
        }
    }
    for (g0, ng, c0, nc) in bands {
        let start = g0 * gsize + c0 * CHUNK;
        let len = if ng == 1 {
            (gsize - c0 * CHUNK).min(nc * CHUNK)
        } else {
            ng * gsize
        };
        let xw = x.window(gpu, start, len)?;
        let p = Params {
            n: u32_of(op, ng * nc)?,
            x_shift: xw.shift / w as u32,
            gs: u32_of(op, gsize / w)?,
            chunks: u32_of(op, chunks)?,
            band_chunks: u32_of(op, nc)?,
            g0: u32_of(op, g0)?,
            c0: u32_of(op, c0)?,
            ..Default::default()
        };
        let groups = rec.grid(p.n);
        rec.dispatch(&partial, &p, &[xw, part_w.clone()], groups)?;
    }

    // Pass 2: merge each group's chunks into (mean, rstd).
    let stats = Tensor::empty(gpu, &[ngroups, 2], DType::F32)?;
    let stats_w = stats.whole(gpu)?;
    let fin = gpu.kernel(&spec("gn_finalize", false, DType::F32))?;
    let p = Params {
        n: u32_of(op, ngroups)?,
        chunks: u32_of(op, chunks)?,
        eps,
        ..Default::default()
    };
    let g = rec.grid(u32_of(op, ngroups.div_ceil(64))?);
    rec.dispatch(&fin, &p, &[part_w, stats_w.clone()], g)?;

    // Pass 3: normalise, affine, optional SiLU; flat bands of elements.
    let apply = gpu.kernel(&spec("gn_apply", vec4, dt))?;
    let (gw, bw) = (gamma.whole(gpu)?, beta.whole(gpu)?);
    for_each_band(numel, band_elems(gpu, WG * w, dt), |start, len| {
        let xw = x.window(gpu, start, len)?;
        let ow = out.window(gpu, start, len)?;
        let units = len / w;
        let p = Params {
            n: u32_of(op, units)?,
            x_shift: xw.shift / w as u32,
            o_shift: ow.shift / w as u32,
            g0: u32_of(op, start / w)?,
            s: u32_of(op, s / w)?,
            c: u32_of(op, c)?,
            cpg: u32_of(op, cpg)?,
            silu: u32::from(silu),
            ..Default::default()
        };
        let groups = rec.grid(u32_of(op, units.div_ceil(WG))?);
        rec.dispatch(
            &apply,
            &p,
            &[xw, stats_w.clone(), gw.clone(), bw.clone(), ow],
            groups,
        )
    })?;
    Ok(out)
}

/// `nn.LayerNorm(C, eps)` over the last dimension of `x` `[.., C]`, affine `gamma`,
/// `beta` (`[C]`).
pub fn layer_norm(
    rec: &mut Recorder,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
) -> Result<Tensor> {
    let op = "layer_norm";
    let dt = expect_act(op, x)?;
    let Some(&c) = x.shape().last() else {
        return Err(Error::shape(op, "x must have at least one dimension"));
    };
    expect_vec(op, gamma, c, "gamma")?;
    expect_vec(op, beta, c, "beta")?;
    let gpu = rec.gpu();
    let out = Tensor::empty(gpu, x.shape(), dt)?;
    if x.numel() == 0 {
        return Ok(out);
    }
    let rows = x.numel() / c;
    let vec4 = c.is_multiple_of(4);
    let w = if vec4 { 4 } else { 1 };
    let kernel = gpu.kernel(&spec("layer_norm", vec4, dt))?;
    let (gw, bw) = (gamma.whole(gpu)?, beta.whole(gpu)?);
    let per_band = (gpu.max_binding_elems(dt) / c).max(1);
    for_each_band(rows, per_band, |r0, nr| {
        let xw = x.window(gpu, r0 * c, nr * c)?;
        let ow = out.window(gpu, r0 * c, nr * c)?;
        let p = Params {
            n: u32_of(op, nr)?,
            x_shift: xw.shift / w as u32,
            o_shift: ow.shift / w as u32,
            gs: u32_of(op, c / w)?,
            eps,
            ..Default::default()
        };
        let groups = rec.grid(p.n);
        rec.dispatch(&kernel, &p, &[xw, gw.clone(), bw.clone(), ow], groups)
    })?;
    Ok(out)
}

/// CPU references (two-pass statistics in f64).
pub mod cpu {
    fn mean_rstd(v: &[f32], eps: f32) -> (f64, f64) {
        let n = v.len() as f64;
        let mean = v.iter().map(|&a| f64::from(a)).sum::<f64>() / n;
        let var = v
            .iter()
            .map(|&a| (f64::from(a) - mean).powi(2))
            .sum::<f64>()
            / n;
        (mean, 1.0 / (var + f64::from(eps)).sqrt())
    }

    /// GroupNorm of `x` `[b, c, s]` (flattened spatial `s`), then SiLU when `silu`.
    #[allow(clippy::too_many_arguments)]
    pub fn group_norm(
        x: &[f32],
        b: usize,
        c: usize,
        s: usize,
        groups: usize,
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
        silu: bool,
    ) -> Vec<f32> {
        let gsize = c / groups * s;
        let mut out = vec![0.0; b * c * s];
        for gi in 0..b * groups {
            let run = &x[gi * gsize..(gi + 1) * gsize];
            let (mean, rstd) = mean_rstd(run, eps);
            for (j, &v) in run.iter().enumerate() {
                let i = gi * gsize + j;
                let ch = (i / s) % c;
                let y = (f64::from(v) - mean) * rstd * f64::from(gamma[ch]) + f64::from(beta[ch]);
                out[i] = if silu { y / (1.0 + (-y).exp()) } else { y } as f32;
            }
        }
        out
    }

    /// LayerNorm over rows of length `c`.
    pub fn layer_norm(x: &[f32], c: usize, gamma: &[f32], beta: &[f32], eps: f32) -> Vec<f32> {
        x.chunks(c)
            .flat_map(|row| {
                let (mean, rstd) = mean_rstd(row, eps);
                row.iter()
                    .zip(gamma.iter().zip(beta))
                    .map(move |(&v, (&g, &bb))| {
                        ((f64::from(v) - mean) * rstd * f64::from(g) + f64::from(bb)) as f32
                    })
            })
            .collect()
    }
}

/// Every kernel variant of this family (validated offline by the tests).
pub fn variants() -> Vec<KernelSpec> {
    let mut v = vec![spec("gn_finalize", false, DType::F32)];
    for entry in ["gn_partial", "gn_apply", "layer_norm"] {
        for vec4 in [false, true] {
            for dt in [DType::F32, DType::F16] {
                v.push(spec(entry, vec4, dt));
            }
        }
    }
    v
}
