//! 2-D convolution (`nn.Conv2d` as diffusers' ResnetBlock2D, Downsample2D, Upsample2D and
//! the VAE use it): `out = conv(x, w) + bias (+ residual)`, as an implicit GEMM (M = Cout,
//! N = output pixels, K = Cin * kh * kw) with no im2col buffer. Three kernel variants,
//! chosen by the adapter ([`Conv2dVariant::auto`]): subgroup-broadcast register tiles
//! for CPU drivers (`shaders/conv2d_subgroup.wgsl`), 128x128 shared-memory + 8x8
//! register tiles for GPUs (`shaders/conv2d_tiled128.wgsl`), and 64x64 tiles
//! (`shaders/conv2d.wgsl`: GPUs' choice for Cout <= 64, and the fallback). Activations
//! (x, residual, output) f32 or f16, weights f32 or f16, bias f32, f32 accumulation.
//! On the subgroup adapter two shapes take faster paths: 3x3 stride-1 padding-1
//! convolutions with 4-aligned widths run `shaders/conv3x3_subgroup.wgsl` (vec4 reads;
//! [`fast3x3`]), and 1x1 convolutions run on the matmul kernel
//! ([`super::matmul::conv1x1`]).
//!
//! Tensors larger than one storage binding are split exactly: the output into bands of
//! (batch items, output channels), the reduction into groups of input channels whose
//! `[cin_lo..cin_hi, H, W]` window fits a binding. The first group writes bias +
//! residual + its partial sum; later groups add theirs to the output (for f16
//! activations, to an f32 scratch that the last group reads and rounds once).

pub use super::Conv2dVariant;
use super::{CoopGeometry, codegen, coop_dtypes, coop_geometry};
use crate::error::{Error, Result};
use crate::gpu::{DType, KernelSpec, Recorder, Tensor, Window};
use crate::ops::variant::KernelVariant;
use crate::ops::{expect_act, expect_f32, expect_same_act, u32_of};

const SUBGROUP_SRC: &str = include_str!("../../../shaders/conv2d_subgroup.wgsl");
const SUBGROUP3_SRC: &str = include_str!("../../../shaders/conv3x3_subgroup.wgsl");
const TILED_SRC: &str = include_str!("../../../shaders/conv2d.wgsl");
const TILED128_SRC: &str = include_str!("../../../shaders/conv2d_tiled128.wgsl");
const COOP_SRC: &str = include_str!("../../../shaders/conv2d_coop.wgsl");
/// Geometry of the specs of non-cooperative variants (not part of their key).
const DEFAULT_COOP: CoopGeometry = CoopGeometry {
    s: 16,
    sg: 32,
    sgm: 4,
    sgn: 2,
    fm: 2,
    fn_: 4,
    bk: 32,
};
const OP: &str = "conv2d";

/// Stride and zero padding, the same in both spatial dimensions (as SD uses them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dArgs {
    pub stride: usize,
    pub padding: usize,
    /// Extra zero padding after the bottom and right edges only: diffusers'
    /// `Downsample2D` with `padding=0` (the VAE encoder) pads `(0, 1, 0, 1)` before its
    /// stride-2 convolution. The kernels already read zeros past the input's end, so
    /// only the output size changes.
    pub pad_end: usize,
}

impl Default for Conv2dArgs {
    fn default() -> Self {
        Conv2dArgs {
            stride: 1,
            padding: 0,
            pad_end: 0,
        }
    }
}

impl Conv2dArgs {
    pub fn new(stride: usize, padding: usize) -> Self {
        Conv2dArgs {
            stride,
            padding,
            pad_end: 0,
        }
    }

    /// Output size of one spatial dimension, or `None` when the kernel does not fit.
    pub fn out_size(self, input: usize, kernel: usize) -> Option<usize> {
        let padded = input + 2 * self.padding + self.pad_end;
        (self.stride > 0 && kernel > 0 && padded >= kernel)
            .then(|| (padded - kernel) / self.stride + 1)
    }
}

/// The compile-time choices of one conv2d dispatch.
#[derive(Debug, Clone, Copy)]
struct Choice {
    /// Subgroup size (the subgroup kernel's lanes).
    sg: u32,
    /// Activation storage (x).
    at: DType,
    /// Output storage: `at`, or f32 for the partial sums of a grouped f16 convolution.
    ot: DType,
    /// Residual storage: `at`, or f32 when the "residual" is those partial sums.
    rt: DType,
    /// Weight storage.
    wt: DType,
    /// Output channels per subgroup tile.
    tm: usize,
    /// The subgroup variant's 3x3 stride-1 kernel (see [`fast3x3`]).
    fast3: bool,
    /// That kernel's vec4s of pixels per lane.
    pv: usize,
    pass: Pass,
    /// The cooperative kernel's geometry (that variant only).
    coop: CoopGeometry,
}

/// `OT`/`RT` text: the activation alias, or f32 when it differs from the activation.
fn storage(at: DType, t: DType) -> &'static str {
    if t == at { "AT" } else { "f32" }
}

fn spec(variant: Conv2dVariant, c: Choice) -> KernelSpec {
    let flags = |s: KernelSpec| {
        s.params::<Params>()
            .activation(c.at)
            .define("WT", c.wt.wgsl())
            .define("OT", storage(c.at, c.ot))
            .define("RT", storage(c.at, c.rt))
            .f16(c.wt == DType::F16)
            .constant("HAS_BIAS", f64::from(u8::from(c.pass.bias)))
            .constant("HAS_RES", f64::from(u8::from(c.pass.res)))
            .constant("ACCUM", f64::from(u8::from(c.pass.accum)))
    };
    match variant {
        Conv2dVariant::Subgroup if c.fast3 => {
            flags(KernelSpec::new("conv3x3_subgroup", SUBGROUP3_SRC, "main"))
                .define("TM", c.tm.to_string())
                .define("PV", c.pv.to_string())
                .constant("SG", f64::from(c.sg))
                .generator(codegen::conv3x3_subgroup)
        }
        Conv2dVariant::Subgroup => flags(KernelSpec::new("conv2d_subgroup", SUBGROUP_SRC, "main"))
            .define("TM", c.tm.to_string())
            .constant("SG", f64::from(c.sg))
            .generator(codegen::conv2d_subgroup),
        Conv2dVariant::Tiled => {
            flags(KernelSpec::new("conv2d", TILED_SRC, "main")).generator(codegen::conv2d_tiled)
        }
        Conv2dVariant::Tiled128 => flags(KernelSpec::new("conv2d_tiled128", TILED128_SRC, "main"))
            .generator(codegen::conv2d_tiled128),
        Conv2dVariant::Coop => c
            .coop
            .apply(
                flags(KernelSpec::new("conv2d_coop", COOP_SRC, "main")),
                false,
            )
            .generator(super::coop::conv2d_coop),
    }
}

/// Which epilogue one dispatch runs.
#[derive(Debug, Clone, Copy)]
struct Pass {
    bias: bool,
    res: bool,
    accum: bool,
}

crate::shader_params! {
    struct Params {
        cin: u32,
        h: u32,
        w: u32,
        x_shift: u32,
        x_bstride: u32,
        cout: u32,
        ho: u32,
        wo: u32,
        o_shift: u32,
        o_bstride: u32,
        r_shift: u32,
        b_shift: u32,
        w_shift: u32,
        w_row: u32,
        w_k0: u32,
        kh: u32,
        kw: u32,
        stride: u32,
        pad: u32,
        nb: u32,
        m_tiles: u32,
        tiles: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

/// Whether the subgroup variant runs `conv3x3_subgroup.wgsl`: a 3x3 kernel, stride 1,
/// padding 1 (so Wo = W), an output width that is a multiple of 4 (a lane's pixels,
/// [`conv3x3_pv`] vec4s of them, share one row and start 16-byte aligned), and
/// Cin % 4 == 0 (every weight row, and so every band of them, starts on a multiple of 4
/// elements).
pub fn fast3x3(cin: usize, wo: usize, kh: usize, kw: usize, args: Conv2dArgs) -> bool {
    kh == 3
        && kw == 3
        && args.stride == 1
        && args.padding == 1
        && args.pad_end == 0
        && wo.is_multiple_of(4)
        && cin.is_multiple_of(4)
}

/// vec4s of pixels per lane of the 3x3 kernel for output width `wo`:
/// [`super::SG_CONV3_PV`], or 1 where the width is not a multiple of its pixels (the
/// 4-wide bottom of the UNet at 256 px).
pub fn conv3x3_pv(wo: usize) -> usize {
    if wo.is_multiple_of(4 * super::SG_CONV3_PV) {
        super::SG_CONV3_PV
    } else {
        1
    }
}

/// `conv2d(x, w) + bias (+ residual)` with the adapter's preferred variant.
/// x `[B, Cin, H, W]` f32 or f16 (the activation dtype), w `[Cout, Cin, kh, kw]` f32 or
/// f16, bias `[Cout]` f32, residual `[B, Cout, Ho, Wo]` in the activation dtype; returns
/// `[B, Cout, Ho, Wo]` in the activation dtype.
pub fn conv2d(
    rec: &mut Recorder,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    args: Conv2dArgs,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    let cout = w.shape().first().copied().unwrap_or(0);
    let variant = Conv2dVariant::choose(rec.gpu(), x.dtype(), w.dtype(), cout);
    conv2d_with(rec, x, w, bias, args, residual, variant)
}

/// [`conv2d`] with an explicit kernel variant (tests and benchmarks run each).
pub fn conv2d_with(
    rec: &mut Recorder,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    args: Conv2dArgs,
    residual: Option<&Tensor>,
    variant: Conv2dVariant,
) -> Result<Tensor> {
    let gpu = rec.gpu();
    if !variant.supported(gpu) {
        return Err(Error::InvalidInput(format!(
            "conv2d variant {variant:?} is not supported on {}",
            gpu.info.name
        )));
    }
    let at = expect_act(OP, x)?;
    let &[nbatch, cin, h, wd] = x.shape() else {
        return Err(Error::shape(
            OP,
            format!("x must be [B, Cin, H, W], got {:?}", x.shape()),
        ));
    };
    let &[cout, wcin, kh, kw] = w.shape() else {
        return Err(Error::shape(
            OP,
            format!("w must be [Cout, Cin, kh, kw], got {:?}", w.shape()),
        ));
    };
    if !matches!(w.dtype(), DType::F32 | DType::F16) {
        return Err(Error::shape(
            OP,
            format!("w must be f32 or f16, got {:?}", w.dtype()),
        ));
    }
    if variant == Conv2dVariant::Coop && !coop_dtypes(at, w.dtype()) {
        return Err(Error::Gpu(format!(
            "conv2d: the cooperative-matrix kernel takes f16 activations and weights, got {at:?} and {:?}",
            w.dtype()
        )));
    }
    if wcin != cin {
        return Err(Error::shape(
            OP,
            format!("x has {cin} channels but w {:?} expects {wcin}", w.shape()),
        ));
    }
    let (Some(ho), Some(wo)) = (args.out_size(h, kh), args.out_size(wd, kw)) else {
        return Err(Error::shape(
            OP,
            format!(
                "a {kh}x{kw} kernel with {args:?} does not fit a {h}x{wd} input (stride must be >= 1)"
            ),
        ));
    };
    if let Some(b) = bias {
        expect_f32(OP, b)?;
        if b.shape() != [cout] {
            return Err(Error::shape(
                OP,
                format!("bias must be [{cout}], got {:?}", b.shape()),
            ));
        }
    }
    let out_shape = [nbatch, cout, ho, wo];
    if let Some(r) = residual {
        expect_same_act(OP, at, &[r])?;
        if r.shape() != out_shape {
            return Err(Error::shape(
                OP,
                format!("residual must be {out_shape:?}, got {:?}", r.shape()),
            ));
        }
    }
    if variant == Conv2dVariant::Subgroup
        && args == Conv2dArgs::default()
        && super::matmul::conv1x1_ok(gpu, x, w)
        && nbatch > 0
        && cout > 0
    {
        return super::matmul::conv1x1(rec, x, w, bias, residual);
    }
    let out = Tensor::empty(gpu, &out_shape, at)?;
    if out.numel() == 0 {
        return Ok(out);
    }
    if cin == 0 {
        return Err(Error::shape(OP, "x has no input channels"));
    }

    // Bands: every window must fit one binding. Output windows are sized for f32 (the
    // partial sums of a grouped f16 convolution are f32).
    let fast3 = variant == Conv2dVariant::Subgroup && fast3x3(cin, wo, kh, kw, args);
    let pv = conv3x3_pv(wo);
    let (tm, tn) = if fast3 {
        (
            super::SG_CONV3_TM
                .into_iter()
                .find(|&t| t >= cout)
                .unwrap_or(super::SG_CONV3_TM[super::SG_CONV3_TM.len() - 1]),
            4 * pv * gpu.caps.subgroup_size as usize,
        )
    } else {
        variant.tile(gpu, cout)
    };
    let max_x = gpu.max_binding_elems(at);
    let max_o = gpu.max_binding_elems(DType::F32);
    let max_w = gpu.max_binding_elems(w.dtype());
    let (hw, howo, khw) = (h * wd, ho * wo, kh * kw);
    let krow = cin * khw;
    let too_big = |what: &str| {
        Error::OutOfMemory(format!(
            "conv2d: one {what} does not fit a {}-byte storage binding",
            gpu.caps.max_binding
        ))
    };
    let cgroup = if cin * hw <= max_x { cin } else { max_x / hw };
    if cgroup == 0 {
        return Err(too_big("input channel plane"));
    }
    let mut coband = if cout * howo <= max_o {
        cout
    } else {
        max_o / howo
    };
    coband = coband.min(max_w / krow.max(1));
    if coband == 0 {
        return Err(too_big("output channel plane or weight row"));
    }
    if coband < cout && coband >= tm {
        coband = coband / tm * tm;
    }
    let per_batch = if cgroup == cin && coband == cout {
        (max_x / (cin * hw))
            .min(max_o / (cout * howo))
            .clamp(1, nbatch)
    } else {
        1
    };
    // Input-channel groups of an f16 convolution sum into an f32 scratch, so rounding
    // to f16 happens once, at the last group (exact like the f32 path).
    let scratch = if cgroup < cin && at != DType::F32 {
        Some(Tensor::empty(gpu, &out_shape, DType::F32)?)
    } else {
        None
    };

    let mut b0 = 0;
    while b0 < nbatch {
        let nb = per_batch.min(nbatch - b0);
        let mut co0 = 0;
        while co0 < cout {
            let con = coband.min(cout - co0);
            let o_len = (nb - 1) * cout * howo + con * howo;
            let o_start = b0 * cout * howo + co0 * howo;
            let ow = out.window(gpu, o_start, o_len)?;
            let sw = scratch
                .as_ref()
                .map(|t| t.window(gpu, o_start, o_len))
                .transpose()?;
            let rw = residual
                .map(|r| r.window(gpu, o_start, o_len))
                .transpose()?;
            let bw = bias.map(|b| b.window(gpu, co0, con)).transpose()?;
            let ww = w.window(gpu, co0 * krow, con * krow)?;
            let m_tiles = con.div_ceil(tm);
            let tiles = m_tiles * (nb * howo).div_ceil(tn);
            let mut ci0 = 0;
            while ci0 < cin {
                let cn = cgroup.min(cin - ci0);
                let last = ci0 + cn == cin;
                let xw = x.window(gpu, b0 * cin * hw + ci0 * hw, (nb - 1) * cin * hw + cn * hw)?;
                let mut pass = Pass {
                    bias: ci0 == 0 && bias.is_some(),
                    res: ci0 == 0 && residual.is_some(),
                    accum: ci0 > 0,
                };
                // Unused bias/residual bindings get a read-only dummy (x's window).
                let bwin = match (&bw, pass.bias) {
                    (Some(b), true) => b.clone(),
                    _ => xw.clone(),
                };
                let mut rwin = match (&rw, pass.res) {
                    (Some(r), true) => r.clone(),
                    _ => xw.clone(),
                };
                let (mut ot, mut rt, mut target) = (at, at, ow.clone());
                if let Some(sw) = &sw {
                    if last {
                        // The last group reads the f32 partial sums as its "residual".
                        pass = Pass {
                            bias: false,
                            res: true,
                            accum: false,
                        };
                        (rt, rwin) = (DType::F32, sw.clone());
                    } else {
                        (ot, target) = (DType::F32, sw.clone());
                    }
                }
                let choice = Choice {
                    sg: gpu.caps.subgroup_size,
                    at,
                    ot,
                    rt,
                    wt: w.dtype(),
                    tm,
                    fast3,
                    pv,
                    pass,
                    coop: coop_geometry(gpu).unwrap_or(DEFAULT_COOP),
                };
                let pipeline = gpu.kernel(&spec(variant, choice))?;
                let params = Params {
                    cin: u32_of(OP, cn)?,
                    h: u32_of(OP, h)?,
                    w: u32_of(OP, wd)?,
                    x_shift: xw.shift,
                    x_bstride: u32_of(OP, cin * hw)?,
                    cout: u32_of(OP, con)?,
                    ho: u32_of(OP, ho)?,
                    wo: u32_of(OP, wo)?,
                    o_shift: target.shift,
                    o_bstride: u32_of(OP, cout * howo)?,
                    r_shift: rwin.shift,
                    b_shift: bwin.shift,
                    w_shift: ww.shift,
                    w_row: u32_of(OP, krow)?,
                    w_k0: u32_of(OP, ci0 * khw)?,
                    kh: u32_of(OP, kh)?,
                    kw: u32_of(OP, kw)?,
                    stride: u32_of(OP, args.stride)?,
                    pad: u32_of(OP, args.padding)?,
                    nb: u32_of(OP, nb)?,
                    m_tiles: u32_of(OP, m_tiles)?,
                    tiles: u32_of(OP, tiles)?,
                    ..Params::default()
                };
                let groups = rec.grid(params.tiles);
                let windows: [Window; 5] = [xw, ww.clone(), bwin, rwin, target];
                rec.dispatch(&pipeline, &params, &windows, groups)?;
                ci0 += cn;
            }
            co0 += con;
        }
        b0 += nb;
    }
    Ok(out)
}

/// Every kernel variant (subgroup sizes 8 and 32, the subgroup kernel's channel tiles;
/// activations and weights f32/f16; every epilogue; f16's f32 partial-sum passes),
/// validated offline by the tests.
pub fn variants() -> Vec<KernelSpec> {
    let mut v = Vec::new();
    for variant in Conv2dVariant::all() {
        let subgroup = variant == Conv2dVariant::Subgroup;
        for (sg, tm) in [
            (8, 4),
            (8, 8),
            (8, 16),
            (8, 24),
            (8, 32),
            (32, 24),
            (32, 32),
        ] {
            if !subgroup && (sg, tm) != (8, 24) {
                continue;
            }
            for (at, ot, rt) in [
                (DType::F32, DType::F32, DType::F32),
                (DType::F16, DType::F16, DType::F16),
                (DType::F16, DType::F32, DType::F16),
                (DType::F16, DType::F16, DType::F32),
            ] {
                for wt in [DType::F32, DType::F16] {
                    for flags in 0..8u8 {
                        let pass = Pass {
                            bias: flags & 1 != 0,
                            res: flags & 2 != 0,
                            accum: flags & 4 != 0,
                        };
                        let c = Choice {
                            sg,
                            at,
                            ot,
                            rt,
                            wt,
                            tm,
                            fast3: false,
                            pv: super::SG_CONV3_PV,
                            pass,
                            coop: DEFAULT_COOP,
                        };
                        if subgroup && super::SG_CONV3_TM.contains(&tm) {
                            for pv in [1, super::SG_CONV3_PV] {
                                v.push(spec(
                                    variant,
                                    Choice {
                                        fast3: true,
                                        pv,
                                        ..c
                                    },
                                ));
                            }
                        }
                        if subgroup && !super::SG_CONV_TM.contains(&tm) {
                            continue;
                        }
                        if variant == Conv2dVariant::Coop {
                            if coop_dtypes(at, wt) {
                                for g in super::coop::geometries() {
                                    v.push(spec(variant, Choice { coop: g, ..c }));
                                }
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

/// CPU reference.
pub mod cpu {
    use super::Conv2dArgs;

    /// `conv2d(x, w) + bias (+ residual)`, accumulated in f64. x `[B, Cin, H, W]`,
    /// w `[Cout, Cin, kh, kw]`; returns `[B, Cout, Ho, Wo]`. Panics on inconsistent
    /// shapes (test helper).
    pub fn conv2d(
        x: &[f32],
        x_shape: [usize; 4],
        w: &[f32],
        w_shape: [usize; 4],
        bias: Option<&[f32]>,
        args: Conv2dArgs,
        residual: Option<&[f32]>,
    ) -> Vec<f32> {
        let [nb, cin, h, wd] = x_shape;
        let [cout, _, kh, kw] = w_shape;
        let ho = args.out_size(h, kh).expect("kernel fits");
        let wo = args.out_size(wd, kw).expect("kernel fits");
        let (s, pad) = (args.stride as isize, args.padding as isize);
        let mut out = vec![0f32; nb * cout * ho * wo];
        for b in 0..nb {
            for co in 0..cout {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let mut acc = bias.map_or(0.0, |bv| f64::from(bv[co]));
                        for ci in 0..cin {
                            for ky in 0..kh {
                                let iy = oy as isize * s + ky as isize - pad;
                                if iy < 0 || iy >= h as isize {
                                    continue;
                                }
                                for kx in 0..kw {
                                    let ix = ox as isize * s + kx as isize - pad;
                                    if ix < 0 || ix >= wd as isize {
                                        continue;
                                    }
                                    let xv =
                                        x[((b * cin + ci) * h + iy as usize) * wd + ix as usize];
                                    let wv = w[((co * cin + ci) * kh + ky) * kw + kx];
                                    acc += f64::from(xv) * f64::from(wv);
                                }
                            }
                        }
                        let o = ((b * cout + co) * ho + oy) * wo + ox;
                        if let Some(r) = residual {
                            acc += f64::from(r[o]);
                        }
                        out[o] = acc as f32;
                    }
                }
            }
        }
        out
    }
}
