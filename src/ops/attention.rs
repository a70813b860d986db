//! Fused multi-head attention (`shaders/attention.wgsl`, `shaders/attention_rows.wgsl`):
//! `softmax(q k^T * scale [+ causal mask]) v` per batch item and head, flash style (online
//! softmax, the score matrix is never stored). Mirrors the core of diffusers'
//! `Attention` (`AttnProcessor`) and CLIP's attention after the q/k/v projections.

use super::{expect_f32, u32_of};
use crate::error::{Error, Result};
use crate::gpu::{Caps, DType, KernelSpec, Recorder, Tensor};

const SRC_SUBGROUP: &str = include_str!("../../shaders/attention.wgsl");
const SRC_ROWS: &str = include_str!("../../shaders/attention_rows.wgsl");
const OP: &str = "attention";
/// Invocations per workgroup of the rows variant (mirrors `WG` in the shader).
const ROWS_WG: usize = 64;

/// Which kernel computes the attention. Every variant passes the same tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// One workgroup = one subgroup of `lanes` lanes (at most the adapter's smallest
    /// subgroup size); keys and probabilities shared by subgroup operations. Fast on CPU
    /// drivers (lavapipe).
    Subgroup { lanes: u32 },
    /// One invocation per query row and head; needs no subgroup support.
    Rows,
}

impl Variant {
    /// The variant for this device: subgroup tiles on CPU drivers with subgroups,
    /// otherwise one invocation per row.
    pub fn for_caps(caps: &Caps) -> Variant {
        if caps.subgroup && caps.is_cpu {
            Variant::Subgroup {
                lanes: caps.subgroup_size,
            }
        } else {
            Variant::Rows
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    nq: u32,
    q0: u32,
    nrows: u32,
    nk: u32,
    hd: u32,
    heads: u32,
    nblk: u32,
    items: u32,
    q_shift: u32,
    k_shift: u32,
    v_shift: u32,
    o_shift: u32,
    scale: f32,
    causal: u32,
    _pad0: u32,
    _pad1: u32,
}

/// `softmax(q k^T * scale) v` per batch item and head, with the variant chosen for the
/// device. q `[B, Nq, heads*D]`, k and v `[B, Nk, heads*D]` (head h uses channels
/// `h*D .. (h+1)*D`); out `[B, Nq, heads*D]`. With `causal`, key j is masked for query i
/// when j > i (CLIP's text encoder).
pub fn attention(
    rec: &mut Recorder,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    scale: f32,
    causal: bool,
) -> Result<Tensor> {
    let variant = Variant::for_caps(&rec.gpu().caps);
    attention_with(rec, q, k, v, heads, scale, causal, variant)
}

/// Query rows per workgroup of the subgroup variant: about 128 accumulator floats per lane.
fn rows_per_group(dc: usize) -> usize {
    (32 / dc).clamp(1, 16)
}

/// [`attention`] with an explicit kernel variant (tests run every variant).
#[allow(clippy::too_many_arguments)]
pub fn attention_with(
    rec: &mut Recorder,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    scale: f32,
    causal: bool,
    variant: Variant,
) -> Result<Tensor> {
    for t in [q, k, v] {
        expect_f32(OP, t)?;
    }
    let (&[b, nq, c], &[bk, nk, ck], &[bv, nv, cv]) = (q.shape(), k.shape(), v.shape()) else {
        return Err(Error::shape(
            OP,
            format!(
                "q, k, v must be [B, N, heads*D], got {:?}, {:?}, {:?}",
                q.shape(),
                k.shape(),
                v.shape()
            ),
        ));
    };
    if (bk, ck) != (b, c) || (bv, nv, cv) != (b, nk, c) {
        return Err(Error::shape(
            OP,
            format!(
                "q {:?}, k {:?}, v {:?} disagree (need k and v [B, Nk, C], q [B, Nq, C])",
                q.shape(),
                k.shape(),
                v.shape()
            ),
        ));
    }
    if heads == 0 || c % heads != 0 || nq == 0 || nk == 0 || b == 0 || c == 0 {
        return Err(Error::shape(
            OP,
            format!(
                "{heads} heads do not split {c} channels (q {:?}, k {:?})",
                q.shape(),
                k.shape()
            ),
        ));
    }
    if !scale.is_finite() {
        return Err(Error::shape(OP, format!("scale {scale} is not finite")));
    }
    let d = c / heads;
    let gpu = rec.gpu();
    let out = Tensor::empty(gpu, q.shape(), DType::F32)?;

    // Compile-time choices and how many query rows one work item covers.
    let (pipeline, rows_per_item) = match variant {
        Variant::Subgroup { lanes } => {
            if !gpu.caps.subgroup || lanes == 0 || lanes > gpu.caps.subgroup_size {
                return Err(Error::Gpu(format!(
                    "attention variant {variant:?} needs subgroups of at least {lanes} lanes; \
                     this device has {} (subgroup support: {})",
                    gpu.caps.subgroup_size, gpu.caps.subgroup
                )));
            }
            let sg = lanes as usize;
            let dc = d.div_ceil(4 * sg);
            let r = rows_per_group(dc);
            // subgroupBroadcast needs a constant lane: unroll the walk over the keys.
            let mut steps = String::new();
            for t in 0..sg {
                steps.push_str(&format!(
                    "        if (j0 + {t}u < kend) {{
            let vb = p.v_shift + (kvrow + j0 + {t}u) * p.hd;
            var vv: array<vec4<f32>, DC>;
            for (var c = 0u; c < DC; c++) {{
                let o = col[c] + vb;
                vv[c] = vec4<f32>(v[o.x], v[o.y], v[o.z], v[o.w]);
            }}
            for (var r = 0u; r < R; r++) {{
                let pr = subgroupBroadcast(s[r], {t}u);
                for (var c = 0u; c < DC; c++) {{ acc[r * DC + c] += pr * vv[c]; }}
            }}
        }}
"
                ));
            }
            let spec = KernelSpec::new("attention", SRC_SUBGROUP, "main")
                .define("D", d.to_string())
                .define("R", r.to_string())
                .define("DC", dc.to_string())
                .define("PV_STEPS", steps)
                .constant("SG", f64::from(lanes));
            (gpu.kernel(&spec)?, r)
        }
        Variant::Rows => {
            let spec =
                KernelSpec::new("attention_rows", SRC_ROWS, "main").define("D", d.to_string());
            (gpu.kernel(&spec)?, 1)
        }
    };

    // Windows: k/v bind whole batch items; q/out bind groups of batch items, or bands of
    // query rows of one item when one item's q is larger than a binding.
    let per = gpu.max_binding_elems(DType::F32);
    let kv_item = nk * c;
    let q_item = nq * c;
    if kv_item > per {
        return Err(Error::OutOfMemory(format!(
            "attention: one batch item of k/v ({nk} x {c} floats) exceeds one storage binding \
             ({} bytes)",
            gpu.caps.max_binding
        )));
    }
    let mut bands: Vec<(usize, usize, usize, usize)> = Vec::new(); // (b0, nb, q0, nrows)
    if q_item <= per {
        let nb = (per / q_item).min(per / kv_item).clamp(1, b);
        let mut b0 = 0;
        while b0 < b {
            let n = nb.min(b - b0);
            bands.push((b0, n, 0, nq));
            b0 += n;
        }
    } else {
        let rows = (per / c / rows_per_item * rows_per_item).max(rows_per_item);
        for bi in 0..b {
            let mut q0 = 0;
            while q0 < nq {
                let n = rows.min(nq - q0);
                bands.push((bi, 1, q0, n));
                q0 += n;
            }
        }
    }

    for (b0, nb, q0, nrows) in bands {
        let qstart = (b0 * nq + q0) * c;
        let qlen = ((nb - 1) * nq + nrows) * c;
        let qw = q.window(gpu, qstart, qlen)?;
        let ow = out.window(gpu, qstart, qlen)?;
        let kw = k.window(gpu, b0 * kv_item, nb * kv_item)?;
        let vw = v.window(gpu, b0 * kv_item, nb * kv_item)?;
        let nblk = nrows.div_ceil(rows_per_item);
        let items = nb * heads * nblk;
        let params = Params {
            nq: u32_of(OP, nq)?,
            q0: u32_of(OP, q0)?,
            nrows: u32_of(OP, nrows)?,
            nk: u32_of(OP, nk)?,
            hd: u32_of(OP, c)?,
            heads: u32_of(OP, heads)?,
            nblk: u32_of(OP, nblk)?,
            items: u32_of(OP, items)?,
            q_shift: qw.shift,
            k_shift: kw.shift,
            v_shift: vw.shift,
            o_shift: ow.shift,
            scale,
            causal: u32::from(causal),
            _pad0: 0,
            _pad1: 0,
        };
        let groups = match variant {
            Variant::Subgroup { .. } => items,
            Variant::Rows => items.div_ceil(ROWS_WG),
        };
        let grid = rec.grid(u32_of(OP, groups)?);
        rec.dispatch(&pipeline, &params, &[qw, kw, vw, ow], grid)?;
    }
    Ok(out)
}

/// CPU reference.
pub mod cpu {
    /// Naive attention in f64 (full score row, plain softmax), same layouts and mask as
    /// [`super::attention`]: q `[b, nq, heads*d]`, k and v `[b, nk, heads*d]`.
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        b: usize,
        nq: usize,
        nk: usize,
        heads: usize,
        d: usize,
        scale: f32,
        causal: bool,
    ) -> Vec<f32> {
        let c = heads * d;
        let mut out = vec![0f32; b * nq * c];
        let mut s = vec![0f64; nk];
        for bi in 0..b {
            for h in 0..heads {
                for i in 0..nq {
                    let qr = &q[(bi * nq + i) * c + h * d..][..d];
                    let kend = if causal { nk.min(i + 1) } else { nk };
                    for (j, sj) in s.iter_mut().enumerate().take(kend) {
                        let kr = &k[(bi * nk + j) * c + h * d..][..d];
                        let dot: f64 = qr.iter().zip(kr).map(|(&a, &b)| a as f64 * b as f64).sum();
                        *sj = dot * scale as f64;
                    }
                    let mx = s[..kend].iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let mut sum = 0.0;
                    for sj in &mut s[..kend] {
                        *sj = (*sj - mx).exp();
                        sum += *sj;
                    }
                    let o = &mut out[(bi * nq + i) * c + h * d..][..d];
                    for (e, od) in o.iter_mut().enumerate() {
                        let acc: f64 = (0..kend)
                            .map(|j| s[j] * v[(bi * nk + j) * c + h * d + e] as f64)
                            .sum();
                        *od = (acc / sum) as f32;
                    }
                }
            }
        }
        out
    }
}
