//! Matrix products: [`linear`] (`nn.Linear`: `x @ w^T + bias`, optionally `+ residual`)
//! and batched [`matmul`]. Three kernel variants, chosen by the adapter
//! ([`MatmulVariant::auto`]): subgroup-broadcast register tiles for CPU drivers
//! (`shaders/matmul.wgsl`), 128x128 shared-memory + 8x8 register tiles for GPUs
//! (`shaders/matmul_tiled128.wgsl`), and the older 64x64 tiles
//! (`shaders/matmul_tiled.wgsl`, kept as a fallback and for benchmarks).
//! Tensors larger than one storage binding are split into bands of rows (and of weight
//! rows for a huge `[N, K]` weight); every output element is still one full-K dot
//! product, so banding changes no result.

use super::{expect_f32, u32_of};
use crate::error::{Error, Result};
use crate::gpu::{DType, Gpu, KernelSpec, Recorder, Tensor, Window};

const SRC: &str = include_str!("../../shaders/matmul.wgsl");
const TILED_SRC: &str = include_str!("../../shaders/matmul_tiled.wgsl");
const TILED128_SRC: &str = include_str!("../../shaders/matmul_tiled128.wgsl");
/// Output rows per workgroup of the subgroup kernel.
const SG_ROWS: usize = 16;
/// Output tile edge of the tiled kernel.
const TILED_EDGE: usize = 64;
/// Output tile edge of the 128x128 register-tiled kernel.
const TILED128_EDGE: usize = 128;

/// Which kernel computes the product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatmulVariant {
    /// One subgroup per workgroup, rows shared by `subgroupBroadcast`, no shared memory.
    /// Fast on lavapipe; needs a fixed subgroup size.
    Subgroup,
    /// 16x16 workgroups with 64x64 shared-memory tiles, 4x4 outputs per invocation.
    /// Works everywhere; the fallback.
    Tiled,
    /// 16x16 workgroups with 128x128 tiles, 8x8 outputs per invocation (vec4 reads from
    /// workgroup memory). Works everywhere; the default on GPUs.
    Tiled128,
}

impl MatmulVariant {
    /// The variant this adapter runs fastest.
    pub fn auto(gpu: &Gpu) -> Self {
        if gpu.caps.is_cpu && MatmulVariant::Subgroup.supported(gpu) {
            MatmulVariant::Subgroup
        } else {
            MatmulVariant::Tiled128
        }
    }

    /// Whether this adapter can run the variant. The subgroup kernel needs its workgroup
    /// to be exactly one subgroup, so the subgroup size must be fixed (min == max).
    pub fn supported(self, gpu: &Gpu) -> bool {
        match self {
            MatmulVariant::Tiled | MatmulVariant::Tiled128 => true,
            MatmulVariant::Subgroup => {
                let sg = gpu.caps.subgroup_size;
                gpu.caps.subgroup
                    && gpu.info.subgroup_max_size == sg
                    && (4..=64).contains(&sg)
                    && sg.is_power_of_two()
            }
        }
    }

    /// Every variant this adapter can run (tests run them all).
    pub fn all_supported(gpu: &Gpu) -> Vec<MatmulVariant> {
        [
            MatmulVariant::Subgroup,
            MatmulVariant::Tiled,
            MatmulVariant::Tiled128,
        ]
        .into_iter()
        .filter(|v| v.supported(gpu))
        .collect()
    }

    /// Output tile (rows, columns) of one workgroup.
    fn tile(self, gpu: &Gpu) -> (usize, usize) {
        match self {
            MatmulVariant::Subgroup => (SG_ROWS, 4 * gpu.caps.subgroup_size as usize),
            MatmulVariant::Tiled => (TILED_EDGE, TILED_EDGE),
            MatmulVariant::Tiled128 => (TILED128_EDGE, TILED128_EDGE),
        }
    }

    fn spec(self, sg: u32, wt: DType, b_t: bool, bias: bool, res: bool) -> KernelSpec {
        let flags = |s: KernelSpec| {
            s.define("WT", wt.wgsl())
                .f16(wt == DType::F16)
                .constant("B_T", f64::from(u8::from(b_t)))
                .constant("HAS_BIAS", f64::from(u8::from(bias)))
                .constant("HAS_RES", f64::from(u8::from(res)))
        };
        match self {
            MatmulVariant::Subgroup => {
                flags(KernelSpec::new("matmul", SRC, "main").params::<Params>())
                    .define("ROWS", SG_ROWS.to_string())
                    .constant("SG", f64::from(sg))
                    .generator(subgroup_code)
            }
            MatmulVariant::Tiled => {
                flags(KernelSpec::new("matmul_tiled", TILED_SRC, "main").params::<Params>())
            }
            MatmulVariant::Tiled128 => {
                flags(KernelSpec::new("matmul_tiled128", TILED128_SRC, "main").params::<Params>())
                    .generator(|_| reg_tile_code("store4(obase, "))
            }
        }
    }
}

/// The straight-line parts of the subgroup kernel for its `SG` lanes (built on a
/// pipeline-cache miss only).
fn subgroup_code(spec: &KernelSpec) -> Vec<(&'static str, String)> {
    let sg = spec.constant_of("SG").unwrap_or(8.0) as u32;
    let rows = |line: &str| -> String {
        (0..SG_ROWS)
            .map(|r| format!("        {}\n", line.replace('#', &r.to_string())))
            .collect()
    };
    // subgroupBroadcast wants a constant lane, so the walk over one chunk of SG k's is
    // written out once per lane.
    let mut steps = String::new();
    for j in 0..sg {
        steps += &format!("        wv = wvec(wbase, k0 + {j}u, c);\n");
        steps += &rows(&format!("acc[#] += subgroupBroadcast(a[#], {j}u) * wv;"));
    }
    vec![
        ("LOAD_A", rows("a[#] = x[xrow(xbase, m0, #u) + k0 + lane];")),
        ("STEPS", steps),
        ("TAIL", rows("acc[#] += x[xrow(xbase, m0, #u) + k] * wv;")),
        ("BIAS", rows("acc[#] += add;")),
        ("STORE", rows("store_row(obase, m0, #u, n0, acc[#]);")),
    ]
}

/// The straight-line parts (DECL, FMA, STORE) of an 8x8-per-invocation register tile
/// (`matmul_tiled128.wgsl`, `conv2d_tiled128.wgsl`): 16 named vec4 accumulators
/// `c<r>_<h>` (row r of 8, column half h of 2), so no private array is indexed (quick to
/// compile everywhere). FMA expects vec4s a0, a1 (rows 0-3, 4-7) and b0, b1 (column
/// halves); STORE calls `<store_call>row, col, value)` with rows `mr + {0..3, 64..67}`
/// and columns `nc + {0, 64}`.
pub(crate) fn reg_tile_code(store_call: &str) -> Vec<(&'static str, String)> {
    let mut decl = String::new();
    let mut fma = String::new();
    let mut store = String::new();
    for r in 0..8 {
        let comp = ["x", "y", "z", "w"][r % 4];
        let row = (r / 4) * 64 + r % 4;
        for h in 0..2 {
            decl += &format!("    var c{r}_{h} = vec4<f32>();\n");
            fma += &format!("            c{r}_{h} += a{}.{comp} * b{h};\n", r / 4);
            store += &format!(
                "    {store_call}mr + {row}u, nc + {}u, c{r}_{h});\n",
                h * 64
            );
        }
    }
    vec![("DECL", decl), ("FMA", fma), ("STORE", store)]
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
        _pad0: u32,
        _pad1: u32,
    }
}

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
    n: usize,
    k: usize,
    /// `w` is `[N, K]` (nn.Linear) rather than `[B, K, N]`.
    b_t: bool,
}

/// Rounds `v` down to a multiple of `q`, keeping at least `q` when `v >= q`.
fn round_down(v: usize, q: usize) -> usize {
    if v >= q { v / q * q } else { v }
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
    let (tr, tc) = variant.tile(gpu);
    let (batch, m, n, k) = (g.batch, g.m, g.n, g.k);
    if batch == 0 || m == 0 || n == 0 {
        return Ok(());
    }
    let l32 = gpu.max_binding_elems(DType::F32);
    let lw = gpu.max_binding_elems(g.w.dtype());
    let too_big = |what: &str| {
        Error::OutOfMemory(format!(
            "{op}: {what} exceeds one storage binding ({} bytes) and cannot be split further",
            gpu.caps.max_binding
        ))
    };
    // Band sizes: batch items per dispatch, rows of M, columns of N.
    let whole = batch * m * k.max(1) <= l32 && batch * k * n <= lw && batch * m * n <= l32;
    let (b_per, n_per) = if whole {
        (batch, n)
    } else if g.b_t {
        // A [N, K] weight bigger than a binding is split over its rows (columns of out).
        let n_per = if n * k <= lw {
            n
        } else {
            round_down(lw / k, tc)
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
        round_down(l32 / k.max(n).max(1), tr)
    };
    if n_per == 0 || m_per == 0 {
        return Err(too_big("one row"));
    }
    let pipeline = gpu.kernel(&variant.spec(
        gpu.caps.subgroup_size,
        g.w.dtype(),
        g.b_t,
        g.bias.is_some(),
        g.res.is_some(),
    ))?;
    let u = |v: usize| u32_of(op, v);
    for b0 in (0..batch).step_by(b_per) {
        let bn = b_per.min(batch - b0);
        for m0 in (0..m).step_by(m_per) {
            let mb = m_per.min(m - m0);
            for n0 in (0..n).step_by(n_per) {
                let nb = n_per.min(n - n0);
                let xw = g.x.window(gpu, (b0 * m + m0) * k, (bn * mb * k).max(1))?;
                let ww = if g.b_t {
                    g.w.window(gpu, n0 * k, (nb * k).max(1))?
                } else {
                    g.w.window(gpu, b0 * k * n, (bn * k * n).max(1))?
                };
                let o_start = (b0 * m + m0) * n + n0;
                let o_len = ((bn - 1) * m + mb - 1) * n + nb;
                let ow = g.out.window(gpu, o_start, o_len)?;
                let bw: Window = match g.bias {
                    Some(t) => t.window(gpu, n0, nb)?,
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
                    sx: u(m * k)?,
                    sw: u(if g.b_t { 0 } else { k * n })?,
                    so: u(m * n)?,
                    ..Params::default()
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
/// x `[.., K]` f32; w `[N, K]` f32 or f16 (PyTorch's `nn.Linear` layout); bias `[N]` f32;
/// residual f32 shaped like the output `[.., N]`. Accumulates in f32.
pub fn linear(
    rec: &mut Recorder,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    let variant = MatmulVariant::auto(rec.gpu());
    linear_with(rec, x, w, bias, residual, variant)
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
    let op = "linear";
    expect_f32(op, x)?;
    expect_weight(op, w)?;
    let (&k, lead) = x
        .shape()
        .split_last()
        .ok_or_else(|| Error::shape(op, "x must have at least one dimension"))?;
    let &[n, wk] = w.shape() else {
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
    let mut out_shape = lead.to_vec();
    out_shape.push(n);
    if let Some(b) = bias {
        expect_f32(op, b)?;
        if b.shape() != [n] {
            return Err(Error::shape(
                op,
                format!("bias {:?} must be [{n}]", b.shape()),
            ));
        }
    }
    if let Some(r) = residual {
        expect_f32(op, r)?;
        if r.shape() != out_shape.as_slice() {
            return Err(Error::shape(
                op,
                format!("residual {:?} must be {out_shape:?}", r.shape()),
            ));
        }
    }
    let out = Tensor::empty(rec.gpu(), &out_shape, DType::F32)?;
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
    };
    run(rec, variant, &gemm)?;
    Ok(out)
}

/// Batched `a @ b`: a `[B, M, K]`, b `[B, K, N]` -> `[B, M, N]` (or 2-D `[M, K] @ [K, N]`),
/// with the adapter's preferred kernel.
pub fn matmul(rec: &mut Recorder, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let variant = MatmulVariant::auto(rec.gpu());
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
    expect_f32(op, a)?;
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
    let out = Tensor::empty(rec.gpu(), &out_shape, DType::F32)?;
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
    };
    run(rec, variant, &gemm)?;
    Ok(out)
}

/// Every kernel variant (subgroup sizes 8 and 32; weights f32/f16; every epilogue),
/// validated offline by the tests.
pub fn variants() -> Vec<KernelSpec> {
    let mut v = Vec::new();
    for variant in [
        MatmulVariant::Subgroup,
        MatmulVariant::Tiled,
        MatmulVariant::Tiled128,
    ] {
        for sg in [8, 32] {
            if sg != 8 && variant != MatmulVariant::Subgroup {
                continue;
            }
            for wt in [DType::F32, DType::F16] {
                for flags in 0..8u8 {
                    let (b_t, bias, res) = (flags & 1 != 0, flags & 2 != 0, flags & 4 != 0);
                    v.push(variant.spec(sg, wt, b_t, bias, res));
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
