//! One way to choose a kernel variant, shared by every family that has several
//! (GEMM/matmul, conv2d, attention): the adapter decides the default, tests run every
//! variant the adapter supports, and `WGSD_NO_*`-style overrides go through here.

use crate::gpu::Gpu;

/// A family's kernel variants.
pub trait KernelVariant: Copy + std::fmt::Debug + PartialEq + Sized + 'static {
    /// Every variant of the family, supported here or not.
    fn all() -> Vec<Self>;
    /// Whether this adapter can run the variant.
    fn supported(self, gpu: &Gpu) -> bool;
    /// The variant this adapter runs fastest.
    fn auto(gpu: &Gpu) -> Self;
    /// A cooperative-matrix variant: f16 operands only, enabled on request, tested by
    /// tests/device_coopmat.rs on a GPU.
    fn is_coop(self) -> bool {
        false
    }
    /// Every variant this adapter can run on any operand type (the kernel tests run
    /// them all): the cooperative ones are left out.
    fn all_supported(gpu: &Gpu) -> Vec<Self> {
        Self::all()
            .into_iter()
            .filter(|v| v.supported(gpu) && !v.is_coop())
            .collect()
    }
}
