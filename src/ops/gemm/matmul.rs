//! Matrix products: [`linear`] (`nn.Linear`: `x @ w^T + bias`, optionally `+ residual`),
//! [`linear_geglu`] (diffusers `GEGLU`: the projection and the gating in one kernel) and
//! batched [`matmul`]. Activations f32 or f16, weights f32 or f16. Three kernel variants,
//! chosen by the adapter ([`KernelVariant::auto`]): subgroup-broadcast register tiles for CPU drivers
//! (`shaders/matmul.wgsl`), 128x128 shared-memory + 8x8 register tiles for GPUs
//! (`shaders/matmul_tiled128.wgsl`), and the older 64x64 tiles
//! (`shaders/matmul_tiled.wgsl`, kept as a fallback and for benchmarks).
//! Tensors larger than one storage binding are split into bands of rows (and of weight
//! rows for a huge `[N, K]` weight); every output element is still one full-K dot
//! product, so banding changes no result.

pub use super::MatmulVariant;
use super::{
    CoopGeometry, SG_TILE_LARGE, SG_TILE_SMALL, SgTile, codegen, coop_dtypes, coop_geometry,
};
use crate::error::{Error, Result};
use crate::gpu::{DType, KernelSpec, Recorder, Tensor, Window};
use crate::ops::variant::KernelVariant;
use crate::ops::{expect_act, expect_f32, expect_same_act, u32_of};

// Every matmul kernel carries the scalar exact GELU of the GEGLU epilogue.
const SRC: &str = concat!(
    include_str!("../../../shaders/matmul.wgsl"),
    include_str!("../../../shaders/gelu.wgsl")
);
const TILED_SRC: &str = concat!(
    include_str!("../../../shaders/matmul_tiled.wgsl"),
    include_str!("../../../shaders/gelu.wgsl")
);
const TILED128_SRC: &str = concat!(
    include_str!("../../../shaders/matmul_tiled128.wgsl"),
    include_str!("../../../shaders/gelu.wgsl")
);
const COOP_SRC: &str = concat!(
    include_str!("../../../shaders/matmul_coop.wgsl"),
    include_str!("../../../shaders/gelu.wgsl")
);

/// The compile-time choices of one matmul kernel.
#[derive(Debug, Clone, Copy)]
struct Choice {
    /// Subgroup size (the subgroup kernel's lanes).
    sg: u32,
    /// Activation storage (x, residual, output).
    at: DType,
    /// Weight storage.
    wt: DType,
    /// `w` is `[N, K]` (nn.Linear) rather than `[B, K, N]`.
    b_t: bool,
    bias: bool,
    res: bool,
    /// The fused GEGLU epilogue (needs `b_t`).
    geglu: bool,
    /// Bias per output row (the subgroup kernel only; [`Gemm::conv`]).
    bias_rows: bool,
    /// x and w read as aligned vec4s (the subgroup kernel only; see [`vec4_ok`]).
    vec4: bool,
    /// The subgroup kernel's tile.
    tile: SgTile,
    /// The cooperative kernel's geometry (that variant only).
    coop: CoopGeometry,
}

fn spec(variant: MatmulVariant, c: Choice) -> KernelSpec {
    let flags = |s: KernelSpec| {
        s.params::<Params>()
            .activation(c.at)
            .define("WT", c.wt.wgsl())
            .f16(c.wt == DType::F16)
            .constant("B_T", f64::from(u8::from(c.b_t)))
            .constant("HAS_BIAS", f64::from(u8::from(c.bias)))
            .constant("HAS_RES", f64::from(u8::from(c.res)))
            .constant("GEGLU", f64::from(u8::from(c.geglu)))
    };
    match variant {
        MatmulVariant::Subgroup => flags(KernelSpec::new("matmul", SRC, "main"))
            .define("ROWS", c.tile.rows.to_string())
            .define("HV", c.tile.hv.to_string())
            .constant("SG", f64::from(c.sg))
            .constant("VEC4", f64::from(u8::from(c.vec4)))
            .constant("BIAS_ROWS", f64::from(u8::from(c.bias_rows)))
            .generator(codegen::matmul_subgroup),
        MatmulVariant::Tiled => flags(KernelSpec::new("matmul_tiled", TILED_SRC, "main")),
        MatmulVariant::Tiled128 => flags(KernelSpec::new("matmul_tiled128", TILED128_SRC, "main"))
            .generator(codegen::matmul_tiled128),
        MatmulVariant::Coop => c
            .coop
            .apply(
                flags(KernelSpec::new("matmul_coop", COOP_SRC, "main")),
                c.geglu,
            )
            .generator(super::coop::matmul_coop),
    }
}

crate::shader_params! {
    struct Params {
        m: u32,
        n: u32,
        k: u32,
        batch: u32,
        ldx: u32,
        ldw: u32,
        ldo: u32,
        n_tiles: u32,
        m_tiles: u32,
        tiles: u32,
        x_shift: u32,
        w_shift: u32,
        out_shift: u32,
        bias_shift: u32,
        res_shift: u32,
        sx: u32,
        sw: u32,
        so: u32,
        gate_w: u32,
        gate_b: u32,
    }
}

/// Placeholder geometry for specs of non-cooperative variants (not part of their key).
const DEFAULT_COOP: CoopGeometry = CoopGeometry {
    s: 16,
    sg: 32,
    sgm: 4,
    sgn: 2,
    fm: 2,
    fn_: 4,
    bk: 32,
};

/// One product to compute: out[b] = x[b] @ W[b] (+ bias) (+ res), W addressed per `b_t`.
struct Gemm<'a> {
    op: &'static str,
    x: &'a Tensor,
    w: &'a Tensor,
    bias: Option<&'a Tensor>,
    res: Option<&'a Tensor>,
    out: &'a Tensor,
    batch: usize,
    m: usize,
    /// Output columns (with GEGLU, half of W's rows).
    n: usize,
    k: usize,
    /// `w` is `[N, K]` (nn.Linear) rather than `[B, K, N]`.
    b_t: bool,
    /// GEGLU epilogue: W is `[2N, K]`, out = (x W[j] + b[j]) * gelu(x W[N+j] + b[N+j]).
    geglu: bool,
    /// x is one `[M, K]` matrix for every batch item, and the bias is per row of M (a
    /// 1x1 convolution: x = its weight, W = the input `[B, Cin, H*W]`; see [`conv1x1`]).
    conv: bool,
}

/// Rounds `v` down to a multiple of `q`, keeping at least `q` when `v >= q`.
fn round_down(v: usize, q: usize) -> usize {
    if v >= q { v / q * q } else { v }
}

/// Whether every row of x and W starts on a multiple of 4 elements, so the subgroup
/// kernel can read them as vec4s: K % 4 == 0, and N % 4 == 0 for a `[B, K, N]` W.
/// Windows then keep that alignment: each band starts on a multiple of 4 elements and
/// [`Tensor::window`]'s shift is the start modulo the binding alignment.
fn vec4_ok(g: &Gemm) -> bool {
    g.k.is_multiple_of(4) && (g.b_t || g.n.is_multiple_of(4))
}

fn run(rec: &mut Recorder, variant: MatmulVariant, g: &Gemm) -> Result<()> {
    let gpu = rec.gpu();
    let op = g.op;
    if !variant.supported(gpu) {
        return Err(Error::Gpu(format!(
            "{op}: the {variant:?} kernel cannot run on {}",
            gpu.info.name
        )));
    }
    if variant == MatmulVariant::Coop && !coop_dtypes(g.x.dtype(), g.w.dtype()) {
        return Err(Error::Gpu(format!(
            "{op}: the cooperative-matrix kernel takes f16 activations and weights, got {:?} and {:?}",
            g.x.dtype(),
            g.w.dtype()
        )));
    }
    let sg_tile = SgTile::for_shape(g.m, g.n, g.k);
    let (tr, tc) = variant.tile(gpu, g.geglu, sg_tile);
    let (batch, m, n, k) = (g.batch, g.m, g.n, g.k);
    if batch == 0 || m == 0 || n == 0 {
        return Ok(());
    }
    let at = g.x.dtype();
    let la = gpu.max_binding_elems(at);
    let lw = gpu.max_binding_elems(g.w.dtype());
    let too_big = |what: &str| {
        Error::OutOfMemory(format!(
            "{op}: {what} exceeds one storage binding ({} bytes) and cannot be split further",
            gpu.caps.max_binding
        ))
    };
    // W rows a band of nb output columns spans: nb, or with GEGLU the gate half's
    // offset N plus nb.
    let gate = if g.geglu { n } else { 0 };
    // Band sizes: batch items per dispatch, rows of M, columns of N.
    let x_items = if g.conv { 1 } else { batch };
    let whole = x_items * m * k.max(1) <= la && batch * k * (n + gate) <= lw && batch * m * n <= la;
    let (b_per, n_per) = if whole {
        (batch, n)
    } else if g.b_t {
        // A [N, K] weight bigger than a binding is split over its rows (columns of out).
        let n_per = if (n + gate) * k <= lw {
            n
        } else {
            round_down((lw / k.max(1)).saturating_sub(gate), tc)
        };
        (1, n_per)
    } else {
        if k * n > lw {
            return Err(too_big("one [K, N] matrix of the batch"));
        }
        (1, n)
    };
    let m_per = if whole {
        m
    } else {
        round_down(la / k.max(n).max(1), tr)
    };
    if n_per == 0 || m_per == 0 {
        return Err(too_big("one row"));
    }
    let pipeline = gpu.kernel(&spec(
        variant,
        Choice {
            sg: gpu.caps.subgroup_size,
            at,
            wt: g.w.dtype(),
            b_t: g.b_t,
            bias: g.bias.is_some(),
            res: g.res.is_some(),
            geglu: g.geglu,
            bias_rows: g.conv,
            vec4: variant == MatmulVariant::Subgroup && vec4_ok(g),
            tile: sg_tile,
            coop: coop_geometry(gpu).unwrap_or(DEFAULT_COOP),
        },
    ))?;
    let u = |v: usize| u32_of(op, v);
    for b0 in (0..batch).step_by(b_per) {
        let bn = b_per.min(batch - b0);
        for m0 in (0..m).step_by(m_per) {
            let mb = m_per.min(m - m0);
            for n0 in (0..n).step_by(n_per) {
                let nb = n_per.min(n - n0);
                let xw = if g.conv {
                    g.x.window(gpu, m0 * k, (mb * k).max(1))?
                } else {
                    g.x.window(gpu, (b0 * m + m0) * k, (bn * mb * k).max(1))?
                };
                let ww = if g.b_t {
                    g.w.window(gpu, n0 * k, ((gate + nb) * k).max(1))?
                } else {
                    g.w.window(gpu, b0 * k * n, (bn * k * n).max(1))?
                };
                let o_start = (b0 * m + m0) * n + n0;
                let o_len = ((bn - 1) * m + mb - 1) * n + nb;
                let ow = g.out.window(gpu, o_start, o_len)?;
                let bw: Window = match g.bias {
                    Some(t) if g.conv => t.window(gpu, m0, mb)?,
                    Some(t) => t.window(gpu, n0, gate + nb)?,
                    None => xw.clone(),
                };
                let rw: Window = match g.res {
                    Some(t) => t.window(gpu, o_start, o_len)?,
                    None => xw.clone(),
                };
                let (m_tiles, n_tiles) = (mb.div_ceil(tr), nb.div_ceil(tc));
                let tiles = bn * m_tiles * n_tiles;
                let params = Params {
                    m: u(mb)?,
                    n: u(nb)?,
                    k: u(k)?,
                    batch: u(bn)?,
                    ldx: u(k)?,
                    ldw: u(if g.b_t { k } else { n })?,
                    ldo: u(n)?,
                    n_tiles: u(n_tiles)?,
                    m_tiles: u(m_tiles)?,
                    tiles: u(tiles)?,
                    x_shift: xw.shift,
                    w_shift: ww.shift,
                    out_shift: ow.shift,
                    bias_shift: bw.shift,
                    res_shift: rw.shift,
                    sx: u(if g.conv { 0 } else { m * k })?,
                    sw: u(if g.b_t { 0 } else { k * n })?,
                    so: u(m * n)?,
                    gate_w: u(gate * k)?,
                    gate_b: u(gate)?,
                };
                let groups = rec.grid(u(tiles)?);
                rec.dispatch(&pipeline, &params, &[xw, ww, bw, rw, ow], groups)?;
            }
        }
    }
    Ok(())
}

fn expect_weight(op: &'static str, w: &Tensor) -> Result<()> {
    match w.dtype() {
        DType::F32 | DType::F16 => Ok(()),
        other => Err(Error::shape(
            op,
            format!("weights must be f32 or f16, got {other:?}"),
        )),
    }
}

/// `x @ w^T (+ bias) (+ residual)` with the adapter's preferred kernel.
///
/// x `[.., K]` f32 or f16 (the activation dtype); w `[N, K]` f32 or f16 (PyTorch's
/// `nn.Linear` layout); bias `[N]` f32; residual shaped like the output `[.., N]`, in the
/// activation dtype. Returns `[.., N]` in the activation dtype. Accumulates in f32.
pub fn linear(
    rec: &mut Recorder,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    let variant = choose_linear(rec, x, w, false);
    linear_with(rec, x, w, bias, residual, variant)
}

/// The variant [`linear`] / [`linear_geglu`] take for these operands.
fn choose_linear(rec: &Recorder, x: &Tensor, w: &Tensor, geglu: bool) -> MatmulVariant {
    let m = x
        .shape()
        .split_last()
        .map_or(0, |(_, l)| l.iter().product());
    let n = w.shape().first().copied().unwrap_or(0) / if geglu { 2 } else { 1 };
    MatmulVariant::choose(rec.gpu(), x.dtype(), w.dtype(), m, n)
}

/// [`linear`] with a chosen kernel variant.
pub fn linear_with(
    rec: &mut Recorder,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    variant: MatmulVariant,
) -> Result<Tensor> {
    linear_any(rec, "linear", x, w, bias, residual, variant, false)
}

/// diffusers' `GEGLU` (the feed-forward's first half) in one kernel:
/// `h, g = (x @ w^T + bias).chunk(2, -1); h * gelu(g)` with the exact erf GELU, where
/// w is `GEGLU.proj`'s `[2I, K]` weight and bias its `[2I]` bias. x `[.., K]` f32 or f16;
/// returns `[.., I]` in x's dtype. Both halves of each output are computed by the same
/// workgroup, so the `[.., 2I]` projection is never written.
pub fn linear_geglu(
    rec: &mut Recorder,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    let variant = choose_linear(rec, x, w, true);
    linear_geglu_with(rec, x, w, bias, variant)
}

/// [`linear_geglu`] with a chosen kernel variant.
pub fn linear_geglu_with(
    rec: &mut Recorder,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    variant: MatmulVariant,
) -> Result<Tensor> {
    linear_any(rec, "linear_geglu", x, w, bias, None, variant, true)
}

#[allow(clippy::too_many_arguments)]
fn linear_any(
    rec: &mut Recorder,
    op: &'static str,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    variant: MatmulVariant,
    geglu: bool,
) -> Result<Tensor> {
    let at = expect_act(op, x)?;
    expect_weight(op, w)?;
    let (&k, lead) = x
        .shape()
        .split_last()
        .ok_or_else(|| Error::shape(op, "x must have at least one dimension"))?;
    let &[wn, wk] = w.shape() else {
        return Err(Error::shape(
            op,
            format!("weight must be [N, K], got {:?}", w.shape()),
        ));
    };
    if wk != k {
        return Err(Error::shape(
            op,
            format!("x {:?} does not match weight {:?}", x.shape(), w.shape()),
        ));
    }
    if geglu && wn % 2 != 0 {
        return Err(Error::shape(
            op,
            format!("GEGLU weight {:?} needs an even number of rows", w.shape()),
        ));
    }
    let n = if geglu { wn / 2 } else { wn };
    let mut out_shape = lead.to_vec();
    out_shape.push(n);
    if let Some(b) = bias {
        expect_f32(op, b)?;
        if b.shape() != [wn] {
            return Err(Error::shape(
                op,
                format!("bias {:?} must be [{wn}]", b.shape()),
            ));
        }
    }
    if let Some(r) = residual {
        expect_same_act(op, at, &[r])?;
        if r.shape() != out_shape.as_slice() {
            return Err(Error::shape(
                op,
                format!("residual {:?} must be {out_shape:?}", r.shape()),
            ));
        }
    }
    let out = Tensor::empty(rec.gpu(), &out_shape, at)?;
    let gemm = Gemm {
        op,
        x,
        w,
        bias,
        res: residual,
        out: &out,
        batch: 1,
        m: lead.iter().product(),
        n,
        k,
        b_t: true,
        geglu,
        conv: false,
    };
    run(rec, variant, &gemm)?;
    Ok(out)
}

/// Batched `a @ b`: a `[B, M, K]`, b `[B, K, N]` -> `[B, M, N]` (or 2-D `[M, K] @ [K, N]`),
/// with the adapter's preferred kernel. a is an activation (f32 or f16; the output has its
/// dtype), b f32 or f16.
pub fn matmul(rec: &mut Recorder, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let dim = |t: &Tensor, from_end: usize| {
        let s = t.shape();
        s.len().checked_sub(from_end).map_or(0, |i| s[i])
    };
    let variant = MatmulVariant::choose(rec.gpu(), a.dtype(), b.dtype(), dim(a, 2), dim(b, 1));
    matmul_with(rec, a, b, variant)
}

/// [`matmul`] with a chosen kernel variant.
pub fn matmul_with(
    rec: &mut Recorder,
    a: &Tensor,
    b: &Tensor,
    variant: MatmulVariant,
) -> Result<Tensor> {
    let op = "matmul";
    let at = expect_act(op, a)?;
    expect_weight(op, b)?;
    let bad = || {
        Error::shape(
            op,
            format!(
                "expected [B, M, K] @ [B, K, N] or [M, K] @ [K, N], got {:?} @ {:?}",
                a.shape(),
                b.shape()
            ),
        )
    };
    let (batch, m, k, n, out_shape) = match (a.shape(), b.shape()) {
        (&[m, k], &[k2, n]) if k == k2 => (1, m, k, n, vec![m, n]),
        (&[ba, m, k], &[bb, k2, n]) if ba == bb && k == k2 => (ba, m, k, n, vec![ba, m, n]),
        _ => return Err(bad()),
    };
    let out = Tensor::empty(rec.gpu(), &out_shape, at)?;
    let gemm = Gemm {
        op,
        x: a,
        w: b,
        bias: None,
        res: None,
        out: &out,
        batch,
        m,
        n,
        k,
        b_t: false,
        geglu: false,
        conv: false,
    };
    run(rec, variant, &gemm)?;
    Ok(out)
}

/// Whether [`conv1x1`] takes a 1x1 convolution of `x` (`[B, Cin, H, W]`) by `w` on this
/// adapter: the subgroup kernel, activations and weights of one dtype, Cin and H*W
/// multiples of 4 (vec4 reads), and one input plane set `[Cin, H*W]` within a binding
/// (larger inputs take the convolution kernel, which splits the input channels).
pub fn conv1x1_ok(gpu: &crate::gpu::Gpu, x: &Tensor, w: &Tensor) -> bool {
    let (&[_, cin, h, wd], &[_, wcin, 1, 1]) = (x.shape(), w.shape()) else {
        return false;
    };
    MatmulVariant::auto(gpu) == MatmulVariant::Subgroup
        && x.dtype() == w.dtype()
        && cin == wcin
        && cin.is_multiple_of(4)
        && (h * wd).is_multiple_of(4)
        && cin * h * wd <= gpu.max_binding_elems(x.dtype())
}

/// A 1x1 convolution (stride 1, no padding) as a product on the subgroup matmul kernel:
/// out[b] = w `[Cout, Cin]` @ x[b] `[Cin, H*W]` + bias[co] (+ residual), i.e. the kernel's
/// x operand is the weight, shared by every batch item, and its `[B, K, N]` operand the
/// input. On lavapipe this reads x as vec4s along the pixels and the weight as vec4s
/// along Cin, where the convolution kernel reads both one element at a time. Call only
/// when [`conv1x1_ok`]; shapes as `conv2d`.
pub fn conv1x1(
    rec: &mut Recorder,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    let op = "conv2d";
    let (&[b, cin, h, wd], &[cout, ..]) = (x.shape(), w.shape()) else {
        return Err(Error::shape(op, "1x1 convolution shapes"));
    };
    let out = Tensor::empty(rec.gpu(), &[b, cout, h, wd], x.dtype())?;
    let gemm = Gemm {
        op,
        x: w,
        w: x,
        bias,
        res: residual,
        out: &out,
        batch: b,
        m: cout,
        n: h * wd,
        k: cin,
        b_t: false,
        geglu: false,
        conv: true,
    };
    run(rec, MatmulVariant::Subgroup, &gemm)?;
    Ok(out)
}

/// Every kernel variant (subgroup sizes 8 and 32; activations and weights f32/f16; every
/// epilogue, GEGLU with `[N, K]` weights only), validated offline by the tests.
pub fn variants() -> Vec<KernelSpec> {
    let mut v = Vec::new();
    for variant in MatmulVariant::all() {
        for sg in [8, 32] {
            if sg != 8 && variant != MatmulVariant::Subgroup {
                continue;
            }
            for at in [DType::F32, DType::F16] {
                for wt in [DType::F32, DType::F16] {
                    for flags in 0..32u8 {
                        let vec4 = flags & 16 != 0;
                        if vec4 && variant != MatmulVariant::Subgroup {
                            continue;
                        }
                        let c = Choice {
                            sg,
                            at,
                            wt,
                            b_t: flags & 1 != 0,
                            bias: flags & 2 != 0,
                            res: flags & 4 != 0,
                            geglu: flags & 8 != 0,
                            bias_rows: false,
                            vec4,
                            tile: SG_TILE_SMALL,
                            coop: DEFAULT_COOP,
                        };
                        if c.geglu && !c.b_t {
                            continue;
                        }
                        if variant == MatmulVariant::Subgroup {
                            v.push(spec(
                                variant,
                                Choice {
                                    tile: SG_TILE_LARGE,
                                    ..c
                                },
                            ));
                        }
                        if variant == MatmulVariant::Coop {
                            if !coop_dtypes(at, wt) {
                                continue;
                            }
                            for g in super::coop::geometries() {
                                v.push(spec(variant, Choice { coop: g, ..c }));
                            }
                            continue;
                        }
                        v.push(spec(variant, c));
                    }
                }
            }
        }
    }
    v
}

/// CPU references (f64 accumulation).
pub mod cpu {
    /// `x [M, K] @ w[N, K]^T (+ bias [N]) (+ res [M, N])`.
    pub fn linear(
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        res: Option<&[f32]>,
        m: usize,
        n: usize,
        k: usize,
    ) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            let xr = &x[i * k..(i + 1) * k];
            for j in 0..n {
                let wr = &w[j * k..(j + 1) * k];
                let mut s: f64 = xr.iter().zip(wr).map(|(&a, &b)| a as f64 * b as f64).sum();
                if let Some(b) = bias {
                    s += b[j] as f64;
                }
                if let Some(r) = res {
                    s += r[i * n + j] as f64;
                }
                out[i * n + j] = s as f32;
            }
        }
        out
    }

    /// diffusers `GEGLU`: `x [M, K]`, `w [2I, K]`, `bias [2I]` -> `[M, I]`,
    /// `(x w[j] + b[j]) * gelu(x w[I+j] + b[I+j])` with the exact erf GELU.
    pub fn linear_geglu(
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        m: usize,
        i: usize,
        k: usize,
    ) -> Vec<f32> {
        let dot = |r: usize, j: usize| -> f64 {
            let s: f64 = x[r * k..(r + 1) * k]
                .iter()
                .zip(&w[j * k..(j + 1) * k])
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum();
            s + bias.map_or(0.0, |b| b[j] as f64)
        };
        let mut out = vec![0.0; m * i];
        for r in 0..m {
            for j in 0..i {
                let g = dot(r, i + j);
                out[r * i + j] = (dot(r, j) * crate::ops::activation::cpu::gelu1(g)) as f32;
            }
        }
        out
    }

    /// `a [B, M, K] @ b [B, K, N]`.
    pub fn matmul(a: &[f32], b: &[f32], batch: usize, m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0.0; batch * m * n];
        for bi in 0..batch {
            let (a, b) = (&a[bi * m * k..], &b[bi * k * n..]);
            for i in 0..m {
                let mut row = vec![0f64; n];
                for p in 0..k {
                    let av = a[i * k + p] as f64;
                    for (j, r) in row.iter_mut().enumerate() {
                        *r += av * b[p * n + j] as f64;
                    }
                }
                for (j, r) in row.into_iter().enumerate() {
                    out[(bi * m + i) * n + j] = r as f32;
                }
            }
        }
        out
    }
}
