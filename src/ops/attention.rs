//! Fused multi-head attention (`shaders/attention.wgsl`, `shaders/attention_rows.wgsl`,
//! `shaders/attention_flash.wgsl`):
//! `softmax(q k^T * scale [+ causal mask]) v` per batch item and head, flash style (online
//! softmax, the score matrix is never stored). Mirrors the core of diffusers'
//! `Attention` (`AttnProcessor`) and CLIP's attention after the q/k/v projections.

use super::variant::KernelVariant;
use super::{expect_act, expect_same_act, u32_of};
use crate::error::{Error, Result};
use crate::gpu::{Caps, DType, Gpu, KernelSpec, Recorder, Tensor};

const SRC_SUBGROUP: &str = include_str!("../../shaders/attention.wgsl");
const SRC_ROWS: &str = include_str!("../../shaders/attention_rows.wgsl");
const SRC_FLASH: &str = include_str!("../../shaders/attention_flash.wgsl");
const SRC_COOP: &str = include_str!("../../shaders/attention_coop.wgsl");
/// Keys per staged block of the cooperative variant; with 128 invocations this keeps
/// its workgroup memory within 32 KiB up to D = 160.
const COOP_BK: usize = 32;
const OP: &str = "attention";
/// Invocations per workgroup of the rows variant (mirrors `WG` in the shader).
const ROWS_WG: usize = 64;
/// Query rows per workgroup of the flash variant (mirrors `WG` in the shader).
const FLASH_WG: usize = 64;
/// Widest head the flash variant keeps in registers; wider heads (the VAE's single head
/// of 512) run the rows variant instead.
pub const FLASH_MAX_D: usize = 160;
/// Most value columns one flash invocation accumulates (wider heads are split into
/// column groups, each recomputing the scores).
const FLASH_GROUP: usize = 96;
/// Staged key/value block of the flash variant: at most this many vec4s (16 KiB) and
/// this many keys.
const FLASH_SMEM_VEC4: usize = 1024;
const FLASH_MAX_BK: usize = 32;

/// Which kernel computes the attention. Every variant passes the same tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// One workgroup = one subgroup of `lanes` lanes (at most the adapter's smallest
    /// subgroup size); keys and probabilities shared by subgroup operations. Fast on CPU
    /// drivers (lavapipe).
    Subgroup { lanes: u32 },
    /// One invocation per query row and head; needs no subgroup support.
    Rows,
    /// A workgroup per block of 64 query rows of one head; key/value blocks staged in
    /// workgroup memory, one query row's online softmax per invocation. Needs no subgroup
    /// support; the GPU default. Heads wider than [`FLASH_MAX_D`] run [`Variant::Rows`].
    Flash,
    /// Flash attention on 16x16 cooperative matrices (QK^T and PV), softmax in f32: f16
    /// activations, no causal mask, D <= [`FLASH_MAX_D`]; `lanes` is the device's fixed
    /// subgroup size. Needs `WGSD_COOPMAT=on` on an adapter with 16x16 f16 -> f32.
    Coop { lanes: u32 },
}

impl Variant {
    /// The variant for this device: subgroup tiles where subgroups have one fixed size
    /// (CPU drivers; NVIDIA, where they measured 1.6x the flash variant for 2x2304-token
    /// self-attention on an H200: 948 vs 577 GFLOP/s), one invocation per row on other
    /// CPU drivers, flash blocks on other GPUs (AMD/Intel report a size range, and the
    /// subgroup kernel needs the exact lane count).
    pub fn for_caps(caps: &Caps) -> Variant {
        if caps.subgroup && (caps.is_cpu || caps.subgroup_fixed) {
            Variant::Subgroup {
                lanes: caps.subgroup_size,
            }
        } else if caps.is_cpu {
            Variant::Rows
        } else {
            Variant::Flash
        }
    }
}

impl KernelVariant for Variant {
    fn is_coop(self) -> bool {
        matches!(self, Variant::Coop { .. })
    }

    /// Subgroup tiles at the lane counts of CPU drivers (8), wider CPUs (16) and NVIDIA
    /// (32), and the portable variants.
    fn all() -> Vec<Variant> {
        vec![
            Variant::Subgroup { lanes: 8 },
            Variant::Subgroup { lanes: 16 },
            Variant::Subgroup { lanes: 32 },
            Variant::Rows,
            Variant::Flash,
            Variant::Coop { lanes: 32 },
            Variant::Coop { lanes: 64 },
        ]
    }

    fn supported(self, gpu: &Gpu) -> bool {
        match self {
            Variant::Subgroup { lanes } => {
                gpu.caps.subgroup && lanes > 0 && lanes <= gpu.caps.subgroup_size
            }
            Variant::Rows | Variant::Flash => true,
            Variant::Coop { lanes } => {
                gpu.caps.coop.tile == Some(16)
                    && gpu.caps.subgroup_fixed
                    && gpu.caps.subgroup_size == lanes
            }
        }
    }

    fn auto(gpu: &Gpu) -> Variant {
        Variant::for_caps(&gpu.caps)
    }
}

crate::shader_params! {
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
        groups: u32,
        _pad1: u32,
    }
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
    let gpu = rec.gpu();
    let coop = Variant::Coop {
        lanes: gpu.caps.subgroup_size,
    };
    let d = q.shape().last().copied().unwrap_or(0) / heads.max(1);
    let variant = if coop.supported(gpu) && q.dtype() == DType::F16 && !causal && d <= FLASH_MAX_D {
        coop
    } else {
        Variant::for_caps(&gpu.caps)
    };
    attention_with(rec, q, k, v, heads, scale, causal, variant)
}

/// Most vec4 chunks of a head's columns one work item of the subgroup variant
/// accumulates; wider heads are split into column groups (each recomputes the scores).
/// Bounds the straight-line code, hence lavapipe's JIT time.
const SG_GROUP_CHUNKS: usize = 16;
/// Most columns one invocation of the rows variant accumulates (its private array).
const ROWS_GROUP: usize = 64;

/// Query rows per lane of the subgroup variant for `g` chunks per column group and `sg`
/// lanes. More rows per lane amortize each broadcast key/value chunk but lengthen the
/// generated code (JIT time grows linearly with it). GPUs (32 lanes) keep the
/// accumulators in registers: about 32 vec4 per lane. On CPU drivers (narrower
/// subgroups: lavapipe's 8) an invocation is a SIMD lane whose accumulators spill to
/// cache anyway; about 96 vec4 measured fastest there (2x2304-token self-attention,
/// D = 64, share of the FMA probe in the same run: R = 2 55%, 4 72-78%, 6 85%, 8 80%).
fn rows_per_lane(g: usize, sg: usize) -> usize {
    let budget = if sg < 32 { 96 } else { 32 };
    (budget / g).clamp(1, 8)
}

/// WGSL for chunk `c` (elements 4c..4c+3, `c` a WGSL u32 expression) of the row at
/// element offset `off` of `buf`, as vec4<f32>. vec4 bindings index directly; otherwise
/// `ld_<buf>` (see [`loaders`]) clamps the loads and reads elements past D as 0.
fn chunk(buf: &str, off: &str, c: &str, vec4: bool) -> String {
    if vec4 {
        format!("vec4<f32>({buf}[({off} >> 2u) + {c}])")
    } else {
        format!("ld_{buf}({off}, {c})")
    }
}

/// Chunk loaders for scalar bindings (D % 4 != 0).
fn loaders(vec4: bool) -> String {
    if vec4 {
        return String::new();
    }
    ["q", "k", "v"]
        .iter()
        .map(|b| {
            format!(
                "fn ld_{b}(o: u32, c: u32) -> vec4<f32> {{
    let i = vec4<u32>(4u * c) + vec4<u32>(0u, 1u, 2u, 3u);
    let j = min(i, vec4<u32>(D - 1u)) + vec4<u32>(o);
    let x = vec4<f32>(f32({b}[j.x]), f32({b}[j.y]), f32({b}[j.z]), f32({b}[j.w]));
    return select(x, vec4<f32>(0.0), i >= vec4<u32>(D));
}}
"
            )
        })
        .collect()
}

/// The straight-line parts of `attention.wgsl` (INIT, SCORES, BLOCK, STORE) for head
/// size `d`, `g` chunks per column group, `r` rows per lane and `sg` lanes: every row
/// and chunk is a named variable (no private arrays).
fn subgroup_code(d: usize, g: usize, r: usize, sg: usize) -> [String; 4] {
    let vec4 = d.is_multiple_of(4);
    let dc = d.div_ceil(4);
    let grouped = g < dc;
    let (rows, lanes) = (0..r, 0..sg);
    let mut init = String::new();
    for ri in rows.clone() {
        init += &format!(
            "    let r{ri} = i_first + {ri}u * SG + lane;
    let ri{ri} = min(r{ri}, i_last);
    let qo{ri} = p.q_shift + (bl * p.nq + ri{ri}) * p.hd + hb;
    let lim{ri} = select(p.nk, min(p.nk, p.q0 + ri{ri} + 1u), p.causal != 0u);
    var m{ri} = -BIG;
    var l{ri} = 0.0;
"
        );
        for c in 0..g {
            if !grouped {
                let ld = chunk("q", &format!("qo{ri}"), &format!("{c}u"), vec4);
                init += &format!("    let q{ri}_{c} = {ld} * qs;\n");
            }
            init += &format!("    var a{ri}_{c} = vec4<f32>();\n");
        }
    }
    // Scores: each lane's key chunk broadcast to all lanes, for every row of every lane.
    let mut scores = String::new();
    for ri in rows.clone() {
        for t in lanes.clone() {
            scores += &format!("        var s{ri}_{t} = 0.0;\n");
        }
    }
    let score_chunk = |c: &str, q: &dyn Fn(usize) -> String| -> String {
        let mut o = format!("            let kc = {};\n", chunk("k", "ko", c, vec4));
        for ri in rows.clone() {
            o += &format!("            let qc{ri} = {};\n", q(ri));
        }
        for t in lanes.clone() {
            o += &format!("            let k{t} = subgroupBroadcast(kc, {t}u);\n");
            for ri in rows.clone() {
                o += &format!("            s{ri}_{t} += dot(qc{ri}, k{t});\n");
            }
        }
        o
    };
    if grouped {
        // A loop over all of D, q reloaded per chunk: the code stays short.
        scores += "        for (var c = 0u; c < DC; c++) {\n";
        scores += &score_chunk("c", &|ri| {
            format!("{} * qs", chunk("q", &format!("qo{ri}"), "c", vec4))
        });
        scores += "        }\n";
    } else {
        for c in 0..dc {
            scores += "        {\n";
            scores += &score_chunk(&format!("{c}u"), &|ri| format!("q{ri}_{c}"));
            scores += "        }\n";
        }
    }
    // Mask, then the online softmax update of each row.
    let mut blk = String::new();
    for ri in rows.clone() {
        let ss: Vec<String> = lanes.clone().map(|t| format!("s{ri}_{t}")).collect();
        for s in &ss {
            let t = &s[s.find('_').map_or(0, |i| i + 1)..];
            blk += &format!("        {s} = select({s}, -BIG, j0 + {t}u >= lim{ri});\n");
        }
        let mut mx = format!("m{ri}");
        for s in &ss {
            mx = format!("max({mx}, {s})");
        }
        blk += &format!(
            "        let mn{ri} = {mx};\n        let al{ri} = exp2(m{ri} - mn{ri});\n        m{ri} = mn{ri};\n"
        );
        for s in &ss {
            blk += &format!("        {s} = exp2({s} - mn{ri});\n");
        }
        blk += &format!("        l{ri} = l{ri} * al{ri} + ({});\n", ss.join(" + "));
        for c in 0..g {
            blk += &format!("        a{ri}_{c} *= al{ri};\n");
        }
    }
    // acc += p @ v over this group's chunks, each lane's value chunk broadcast.
    for c in 0..g {
        let cx = if grouped {
            format!("min(cg + {c}u, DC - 1u)")
        } else {
            format!("{c}u")
        };
        blk += &format!(
            "        {{\n            let vc = {};\n",
            chunk("v", "vo", &cx, vec4)
        );
        for t in lanes.clone() {
            blk += &format!("            let v{t} = subgroupBroadcast(vc, {t}u);\n");
            for ri in rows.clone() {
                blk += &format!("            a{ri}_{c} += s{ri}_{t} * v{t};\n");
            }
        }
        blk += "        }\n";
    }
    let mut store = String::new();
    for ri in rows {
        store += &format!(
            "    if (r{ri} < p.nrows) {{
        let inv = 1.0 / l{ri};
        let oo = p.o_shift + (bl * p.nq + r{ri}) * p.hd + hb;
"
        );
        for c in 0..g {
            let (cx, open, close) = if grouped {
                (
                    format!("(cg + {c}u)"),
                    format!("if (cg + {c}u < DC) {{ "),
                    " }",
                )
            } else {
                (format!("{c}u"), String::new(), "")
            };
            if vec4 {
                store += &format!(
                    "        {open}out[(oo >> 2u) + {cx}] = at4(a{ri}_{c} * inv);{close}\n"
                );
            } else {
                for e in 0..4 {
                    store += &format!(
                        "        if ({cx} * 4u + {e}u < D) {{ out[oo + {cx} * 4u + {e}u] = at(a{ri}_{c}[{e}] * inv); }}\n"
                    );
                }
            }
        }
        store += "    }\n";
    }
    [init, scores, blk, store]
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
    let dt = expect_act(OP, q)?;
    expect_same_act(OP, dt, &[k, v])?;
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
    let out = Tensor::empty(gpu, q.shape(), dt)?;
    let variant = if variant == Variant::Flash && d > FLASH_MAX_D {
        Variant::Rows
    } else {
        variant
    };

    if let Variant::Coop { .. } = variant {
        if !variant.supported(gpu) {
            return Err(Error::Gpu(format!(
                "attention variant {variant:?} needs cooperative matrices (16x16 f16 -> f32) and \
                 that fixed subgroup size; {} has neither enabled",
                gpu.info.name
            )));
        }
        if dt != DType::F16 || causal || d > FLASH_MAX_D {
            return Err(Error::Gpu(format!(
                "attention variant {variant:?} takes f16, non-causal heads of at most \
                 {FLASH_MAX_D} channels (got {dt:?}, causal {causal}, D {d})"
            )));
        }
    }
    if let Variant::Subgroup { lanes } = variant
        && (!gpu.caps.subgroup || lanes == 0 || lanes > gpu.caps.subgroup_size)
    {
        return Err(Error::Gpu(format!(
            "attention variant {variant:?} needs subgroups of at least {lanes} lanes; \
             this device has {} (subgroup support: {})",
            gpu.caps.subgroup_size, gpu.caps.subgroup
        )));
    }
    // Compile-time choices and how many query rows one work item covers.
    let (spec, rows_per_item, groups) = spec(variant, d, dt);
    let pipeline = gpu.kernel(&spec)?;
    // Windows: k/v bind whole batch items; q/out bind groups of batch items, or bands of
    // query rows of one item when one item's q is larger than a binding.
    let per = gpu.max_binding_elems(dt);
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
        let items = nb * heads * groups * nblk;
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
            groups: u32_of(OP, groups)?,
            _pad1: 0,
        };
        let wgs = match variant {
            Variant::Subgroup { .. } => items,
            Variant::Rows => items.div_ceil(ROWS_WG),
            Variant::Flash | Variant::Coop { .. } => items,
        };
        let grid = rec.grid(u32_of(OP, wgs)?);
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

/// The kernel for `variant`, head size `d` and activations stored as `dt`, how many query
/// rows one work item covers, and how many channel groups split a head.
fn spec(variant: Variant, d: usize, dt: DType) -> (KernelSpec, usize, usize) {
    match variant {
        Variant::Subgroup { lanes } => {
            let sg = lanes as usize;
            let dc = d.div_ceil(4);
            let groups = dc.div_ceil(SG_GROUP_CHUNKS);
            let g = dc.div_ceil(groups);
            let r = rows_per_lane(g, sg);
            let vec4 = d.is_multiple_of(4);
            let spec = KernelSpec::new("attention", SRC_SUBGROUP, "main")
                .params::<Params>()
                .activation(dt)
                .define("T", if vec4 { "AT4" } else { "AT" })
                .define("D", d.to_string())
                .define("G", g.to_string())
                .define("R", r.to_string())
                .constant("SG", f64::from(lanes))
                .generator(subgroup_generated);
            (spec, r * sg, groups)
        }
        Variant::Rows => {
            let g = d.min(ROWS_GROUP);
            let spec = KernelSpec::new("attention_rows", SRC_ROWS, "main")
                .params::<Params>()
                .activation(dt)
                .define("D", d.to_string())
                .define("G", g.to_string());
            (spec, 1, d.div_ceil(g))
        }
        Variant::Flash => {
            let groups = d.div_ceil(FLASH_GROUP);
            let g = d.div_ceil(groups);
            let (dc, gc) = (d.div_ceil(4), g.div_ceil(4));
            let bk = (FLASH_SMEM_VEC4 / (dc + gc)).clamp(1, FLASH_MAX_BK);
            let spec = KernelSpec::new("attention_flash", SRC_FLASH, "main")
                .params::<Params>()
                .activation(dt)
                .define("D", d.to_string())
                .define("G", g.to_string())
                .define("DC", dc.to_string())
                .define("GC", gc.to_string())
                .define("BK", bk.to_string())
                .define("KS", (bk * dc).to_string())
                .define("VS", (bk * gc).to_string());
            (spec, FLASH_WG, groups)
        }
        Variant::Coop { lanes } => {
            let sg = lanes as usize;
            let nsg = (128 / sg.max(16)).max(1);
            let dt_tiles = d.div_ceil(16);
            let dp = 16 * dt_tiles;
            let lpr = (sg / 16).max(1);
            let spec = KernelSpec::new("attention_coop", SRC_COOP, "main")
                .params::<Params>()
                .activation(dt)
                .coop()
                .define("D", d.to_string())
                .define("DT", dt_tiles.to_string())
                .define("SG", sg.to_string())
                .define("NSG", nsg.to_string())
                .define("BK", COOP_BK.to_string())
                .define("KV", ((16 * nsg).max(2 * COOP_BK) * dp).to_string())
                .define("ON", (dt_tiles * 16 / lpr).to_string())
                .generator(coop_generated);
            (spec, 16 * nsg, 1)
        }
    }
}

/// The cooperative variant's unrolled parts (Q_LOAD, SCORES, PV) from D and BK: the
/// query tiles are named values held across the key loop.
fn coop_generated(spec: &KernelSpec) -> Vec<(&'static str, String)> {
    let num = |k: &str| {
        spec.get(k)
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(1)
    };
    let (dt, bk) = (num("DT"), num("BK"));
    let mut qload = String::new();
    for t in 0..dt {
        qload +=
            &format!("    let qa_{t} = coopLoadT<MA>(&kv[sg_id * 16u * DP + {t}u * 16u], DP);\n");
    }
    let mut scores = String::new();
    for jt in 0..bk / 16 {
        scores += "        {\n            var s = zc;\n";
        for t in 0..dt {
            scores += &format!(
                "            s = coopMultiplyAdd(qa_{t}, coopLoad<MB>(&kv[{jt}u * 16u * DP + {t}u * 16u], DP), s);\n"
            );
        }
        scores += &format!("            coopStoreT(s, &sc[st + {jt}u * 16u], BK);\n        }}\n");
    }
    let mut pv = String::new();
    for t in 0..dt {
        pv += "        {\n            var acc = zc;\n";
        for jt in 0..bk / 16 {
            pv += &format!(
                "            acc = coopMultiplyAdd(coopLoadT<MA>(&pm[st + {jt}u * 16u], BK), \
                 coopLoadT<MB>(&kv[BK * DP + {jt}u * 16u * DP + {t}u * 16u], DP), acc);\n"
            );
        }
        pv += &format!(
            "            coopStoreT(acc, &sc[st], 16u);
            workgroupBarrier();
            for (var e = 0u; e < OE; e++) {{ o[{t}u * OE + e] += sc[st + r * 16u + part * OE + e]; }}
            workgroupBarrier();
        }}\n"
        );
    }
    vec![("Q_LOAD", qload), ("SCORES", scores), ("PV", pv)]
}

/// The subgroup kernel's straight-line code from its choices (D, G, R, SG); built on a
/// pipeline-cache miss only.
fn subgroup_generated(spec: &KernelSpec) -> Vec<(&'static str, String)> {
    let num = |k: &str| {
        spec.get(k)
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(1)
    };
    let (d, g, r) = (num("D"), num("G"), num("R"));
    let sg = spec.constant_of("SG").unwrap_or(8.0) as usize;
    let [init, scores, block, store] = subgroup_code(d, g, r, sg);
    vec![
        ("LOADERS", loaders(d.is_multiple_of(4))),
        ("INIT", init),
        ("SCORES", scores),
        ("BLOCK", block),
        ("STORE", store),
    ]
}

/// Every kernel variant of this family at the head sizes SD models and the test
/// fixtures use, for f32 and f16 activations (validated offline by the tests).
pub fn variants() -> Vec<KernelSpec> {
    let mut v = Vec::new();
    for d in [1, 3, 4, 8, 16, 40, 64, 80, 96, 160, 512] {
        for variant in Variant::all() {
            let coop = matches!(variant, Variant::Coop { .. });
            if (variant == Variant::Flash || coop) && d > FLASH_MAX_D {
                continue;
            }
            for dt in [DType::F32, DType::F16] {
                if coop && dt != DType::F16 {
                    continue;
                }
                v.push(spec(variant, d, dt).0);
            }
        }
    }
    v
}
