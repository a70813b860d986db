//! One module per WGSL kernel family. Each holds the launcher(s), the `#[repr(C)]`
//! parameter struct mirroring the shader's `Params`, and a CPU reference (in `cpu`) that
//! the tests compare against.

pub mod activation;
pub mod attention;
pub mod cast;
pub mod concat;
pub mod elementwise;
pub mod embedding;
pub mod gather;
pub mod gemm;
pub mod image;
pub mod latent_preview;
pub mod latent_resize;
pub mod latent_sample;
pub mod mask_blend;
pub mod norm;
pub mod pad;
pub mod prompt_weight;
pub mod scheduler_step;
pub mod split;
pub mod tile_blend;
pub mod transpose;
pub mod upsample;
pub mod variant;

// The GEMM family's two launchers, at their historical paths.
pub use gemm::{conv2d, matmul};

/// Every kernel variant of every family, whether or not this machine can run it: the
/// tests expand each one and validate its WGSL (and its `Params` layout) with naga.
pub fn kernel_variants() -> Vec<crate::gpu::KernelSpec> {
    [
        activation::variants(),
        attention::variants(),
        cast::variants(),
        concat::variants(),
        elementwise::variants(),
        embedding::variants(),
        gather::variants(),
        gemm::variants(),
        image::variants(),
        latent_preview::variants(),
        latent_resize::variants(),
        latent_sample::variants(),
        mask_blend::variants(),
        norm::variants(),
        pad::variants(),
        prompt_weight::variants(),
        scheduler_step::variants(),
        split::variants(),
        tile_blend::variants(),
        transpose::variants(),
        upsample::variants(),
        crate::bench::probe::variants(),
    ]
    .concat()
}

use crate::error::{Error, Result};
use crate::gpu::{DType, Tensor};

/// Splits `total` items into bands of at most `per_band` and calls `f(start, len)`.
/// Used to keep every binding under the device's storage-binding limit.
pub fn for_each_band(
    total: usize,
    per_band: usize,
    mut f: impl FnMut(usize, usize) -> Result<()>,
) -> Result<()> {
    let per_band = per_band.max(1);
    let mut start = 0;
    while start < total {
        let len = per_band.min(total - start);
        f(start, len)?;
        start += len;
    }
    Ok(())
}

/// The activation dtype of `t` (F32 or F16), or an error naming the op.
pub fn expect_act(op: &'static str, t: &Tensor) -> Result<DType> {
    match t.dtype() {
        d @ (DType::F32 | DType::F16) => Ok(d),
        other => Err(Error::shape(
            op,
            format!("expected an f32 or f16 activation, got {other:?}"),
        )),
    }
}

/// Errors unless every tensor has activation dtype `dt` (one op's activations share one
/// storage type).
pub fn expect_same_act(op: &'static str, dt: DType, ts: &[&Tensor]) -> Result<()> {
    for t in ts {
        if t.dtype() != dt {
            return Err(Error::shape(
                op,
                format!(
                    "activations must share one dtype: {:?} is {:?}, expected {dt:?}",
                    t.shape(),
                    t.dtype()
                ),
            ));
        }
    }
    Ok(())
}

/// Errors unless `t` holds f32.
pub fn expect_f32(op: &'static str, t: &Tensor) -> Result<()> {
    if t.dtype() != DType::F32 {
        return Err(Error::shape(
            op,
            format!("expected an f32 tensor, got {:?}", t.dtype()),
        ));
    }
    Ok(())
}

/// Converts a size to u32 for a shader parameter, or errors naming the op.
pub fn u32_of(op: &'static str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::shape(op, format!("size {v} does not fit in 32 bits")))
}
