//! The GEMM family: every product of an activation with a weight matrix. [`matmul`]
//! (`nn.Linear`, the fused GEGLU linear, batched matmul) and [`conv2d`] (implicit GEMM:
//! M = Cout, N = output pixels, K = Cin * kh * kw) share the kernel designs, the
//! generated straight-line code ([`codegen`]) and the variant choice below:
//! subgroup-broadcast register tiles for CPU drivers (lavapipe), 128x128 shared-memory +
//! 8x8 register tiles for GPUs, 64x64 tiles as the fallback.
//!
//! Activations (x, residual, output) are f32 or f16 (`AT`), weights f32 or f16 (`WT`)
//! independently, biases f32; accumulation is always f32.

mod codegen;
pub mod conv2d;
pub mod coop;
pub mod matmul;

use super::variant::KernelVariant;
use crate::gpu::{DType, Gpu, KernelSpec};
pub use coop::CoopGeometry;

/// The subgroup matmul kernel's tile: output rows per workgroup and vec4s of output
/// columns per lane (a workgroup covers `rows x 4 * hv * SG`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SgTile {
    pub rows: usize,
    pub hv: usize,
}

/// Small products (the tiny test models, cross-attention K/V, the time embedding).
pub const SG_TILE_SMALL: SgTile = SgTile { rows: 16, hv: 1 };
/// Large products: 48 x 64 per workgroup. lavapipe reads storage lane by lane, so the
/// reads per multiply-add fall as the tile grows; measured on a 2-core EPYC VM (median
/// of 5 alternating runs, 2304x320x1280 f32): 24x32 34%, 64x32 42%, 32x64 46%,
/// 48x64 49%, 64x64 47%, 40x96 45% of the FMA probe. Bigger tiles also compile
/// longer (48x64: ~9 s per pipeline on lavapipe 22.3, once per Mesa shader cache).
pub const SG_TILE_LARGE: SgTile = SgTile { rows: 48, hv: 2 };
/// Products of at least this many multiply-adds take [`SG_TILE_LARGE`].
pub const SG_LARGE_MACS: usize = 1 << 26;

impl SgTile {
    /// The tile for an `m x n x k` product (per batch item).
    pub fn for_shape(m: usize, n: usize, k: usize) -> Self {
        if m.saturating_mul(n).saturating_mul(k) >= SG_LARGE_MACS {
            SG_TILE_LARGE
        } else {
            SG_TILE_SMALL
        }
    }
}
/// The subgroup conv2d kernel's output-channel tiles (the smallest that covers Cout,
/// else the largest).
pub(crate) const SG_CONV_TM: [usize; 4] = [4, 8, 16, 24];
/// The 3x3 stride-1 subgroup conv kernel's output-channel tiles (the smallest that
/// covers Cout, else the largest). Measured on a 2-core EPYC VM (2x320x48x48 -> 320,
/// median of 5 alternating runs): 32 channels x 8 pixels per lane 52%, x 16 pixels 52%,
/// 64 x 8 53% of the FMA probe (16 x 16: 37%); 32 x 8 compiles fastest and needs only
/// Wo % 8 == 0.
pub(crate) const SG_CONV3_TM: [usize; 4] = [4, 8, 16, 32];
/// That kernel's vec4s of pixels per lane.
pub(crate) const SG_CONV3_PV: usize = 2;
/// Output tile edge of the 64x64 tiled kernels.
pub(crate) const TILED_EDGE: usize = 64;
/// Output tile edge of the 128x128 register-tiled kernels.
pub(crate) const TILED128_EDGE: usize = 128;

/// Whether the subgroup kernels can run: their workgroup is exactly one subgroup, so the
/// subgroup size must be fixed (min == max).
fn subgroup_fixed(gpu: &Gpu) -> bool {
    let sg = gpu.caps.subgroup_size;
    gpu.caps.subgroup
        && gpu.info.subgroup_max_size == sg
        && (4..=64).contains(&sg)
        && sg.is_power_of_two()
}

/// Which kernel computes a matrix product.
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
    /// Cooperative matrices (tensor cores): f16 x f16 -> f32 tiles, 128x128 (16x16
    /// matrices) or 64x64 (8x8) per workgroup. Needs `WGSD_COOPMAT=on` on an adapter
    /// with a usable configuration, f16 activations and weights.
    Coop,
}

/// The cooperative geometry this device runs, if cooperative matrices are enabled.
pub fn coop_geometry(gpu: &Gpu) -> Option<CoopGeometry> {
    CoopGeometry::for_device(gpu.caps.coop.tile?, gpu.caps.subgroup_size)
}

/// Whether a product over these storage types may take the cooperative kernels: they
/// read f16 only (an f32 input would be rounded, breaking f32 mode's contract).
pub fn coop_dtypes(at: DType, wt: DType) -> bool {
    at == DType::F16 && wt == DType::F16
}

impl KernelVariant for MatmulVariant {
    fn is_coop(self) -> bool {
        matches!(self, MatmulVariant::Coop)
    }

    fn all() -> Vec<Self> {
        vec![
            MatmulVariant::Subgroup,
            MatmulVariant::Tiled,
            MatmulVariant::Tiled128,
            MatmulVariant::Coop,
        ]
    }

    fn supported(self, gpu: &Gpu) -> bool {
        match self {
            MatmulVariant::Tiled | MatmulVariant::Tiled128 => true,
            MatmulVariant::Subgroup => subgroup_fixed(gpu),
            MatmulVariant::Coop => coop_geometry(gpu).is_some(),
        }
    }

    fn auto(gpu: &Gpu) -> Self {
        if gpu.caps.is_cpu && MatmulVariant::Subgroup.supported(gpu) {
            MatmulVariant::Subgroup
        } else {
            MatmulVariant::Tiled128
        }
    }
}

impl MatmulVariant {
    /// The variant for one product: [`KernelVariant::auto`], or the cooperative kernel
    /// when it is enabled, the storage is f16 and the output has at least half a tile
    /// of work (tiny products, e.g. the time embedding's 2 rows, stay on FMA kernels).
    pub fn choose(gpu: &Gpu, at: DType, wt: DType, m: usize, n: usize) -> Self {
        if let Some(g) = coop_geometry(gpu)
            && coop_dtypes(at, wt)
            && m * n >= (g.bm() * g.bn() / 2) as usize
        {
            return MatmulVariant::Coop;
        }
        MatmulVariant::auto(gpu)
    }

    /// Output tile (rows, columns) of one workgroup (`sg`: the subgroup kernel's); with
    /// the GEGLU epilogue half the columns are the gate half, so it covers half as many
    /// output columns.
    pub(crate) fn tile(self, gpu: &Gpu, geglu: bool, sg: SgTile) -> (usize, usize) {
        let (r, c) = match self {
            MatmulVariant::Subgroup => (sg.rows, 4 * sg.hv * gpu.caps.subgroup_size as usize),
            MatmulVariant::Tiled => (TILED_EDGE, TILED_EDGE),
            MatmulVariant::Tiled128 => (TILED128_EDGE, TILED128_EDGE),
            MatmulVariant::Coop => coop_geometry(gpu)
                .map(|g| (g.bm() as usize, g.bn() as usize))
                .unwrap_or((TILED128_EDGE, TILED128_EDGE)),
        };
        (r, if geglu { c / 2 } else { c })
    }
}

/// Which kernel computes a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Conv2dVariant {
    /// One subgroup per workgroup, weights shared by `subgroupBroadcast`, no shared
    /// memory. Fast on lavapipe; needs a fixed subgroup size.
    Subgroup,
    /// 16x16 workgroups with 64x64 shared-memory tiles, 4x4 outputs per invocation.
    /// Works everywhere.
    Tiled,
    /// 16x16 workgroups with 128x128 tiles, 8x8 outputs per invocation. Works
    /// everywhere; the GPU default for Cout > 64.
    Tiled128,
    /// Cooperative matrices, as [`MatmulVariant::Coop`].
    Coop,
}

impl KernelVariant for Conv2dVariant {
    fn is_coop(self) -> bool {
        matches!(self, Conv2dVariant::Coop)
    }

    fn all() -> Vec<Self> {
        vec![
            Conv2dVariant::Subgroup,
            Conv2dVariant::Tiled,
            Conv2dVariant::Tiled128,
            Conv2dVariant::Coop,
        ]
    }

    fn supported(self, gpu: &Gpu) -> bool {
        match self {
            Conv2dVariant::Tiled | Conv2dVariant::Tiled128 => true,
            Conv2dVariant::Subgroup => subgroup_fixed(gpu),
            Conv2dVariant::Coop => coop_geometry(gpu).is_some(),
        }
    }

    /// The variant this adapter runs fastest at large Cout.
    fn auto(gpu: &Gpu) -> Self {
        if gpu.caps.is_cpu && Conv2dVariant::Subgroup.supported(gpu) {
            Conv2dVariant::Subgroup
        } else {
            Conv2dVariant::Tiled128
        }
    }
}

impl Conv2dVariant {
    /// [`KernelVariant::auto`] for `cout` output channels: on GPUs a 128-channel tile
    /// would mostly idle for Cout <= 64 (conv_in, conv_out), so those take 64x64 tiles.
    pub fn auto_for(gpu: &Gpu, cout: usize) -> Self {
        match Conv2dVariant::auto(gpu) {
            Conv2dVariant::Tiled128 if cout <= TILED_EDGE => Conv2dVariant::Tiled,
            v => v,
        }
    }

    /// The variant for one convolution: the cooperative kernel when enabled, f16, and
    /// Cout fills at least half a tile; else [`Conv2dVariant::auto_for`].
    pub fn choose(gpu: &Gpu, at: DType, wt: DType, cout: usize) -> Self {
        if let Some(g) = coop_geometry(gpu)
            && coop_dtypes(at, wt)
            && 2 * cout >= g.bm() as usize
        {
            return Conv2dVariant::Coop;
        }
        Conv2dVariant::auto_for(gpu, cout)
    }

    /// Output tile (channels, pixels) of one workgroup for `cout` output channels.
    pub(crate) fn tile(self, gpu: &Gpu, cout: usize) -> (usize, usize) {
        match self {
            // Small Cout (conv_in/conv_out) would waste most of a 24-channel tile; 24
            // channels measured fastest on lavapipe (16 and 32 both slower).
            Conv2dVariant::Subgroup => (
                SG_CONV_TM
                    .into_iter()
                    .find(|&t| t >= cout)
                    .unwrap_or(SG_CONV_TM[SG_CONV_TM.len() - 1]),
                4 * gpu.caps.subgroup_size as usize,
            ),
            Conv2dVariant::Tiled => (TILED_EDGE, TILED_EDGE),
            Conv2dVariant::Tiled128 => (TILED128_EDGE, TILED128_EDGE),
            Conv2dVariant::Coop => coop_geometry(gpu)
                .map(|g| (g.bm() as usize, g.bn() as usize))
                .unwrap_or((TILED128_EDGE, TILED128_EDGE)),
        }
    }
}

/// Every kernel variant of the family, validated offline by the tests.
pub fn variants() -> Vec<KernelSpec> {
    [matmul::variants(), conv2d::variants()].concat()
}
