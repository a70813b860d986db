//! f16 activation test support: data rounded to f16 (what an f16 tensor holds) and the
//! tolerance of one f16 rounding of a stored output.

use wgsd::gpu::DType;
use wgsd::ops::cast::cpu::cast;

/// Half a unit in the last place of f16, relative (2^-11): one rounding of an output.
pub const HALF_ULP: f32 = 4.882_812_5e-4;
/// f16's subnormal spacing (2^-24): the absolute error floor of outputs near zero.
pub const SUB: f32 = 6.0e-8;
/// The largest finite f16.
pub const F16_MAX: f32 = 65504.0;

/// `x` as stored in `dt` (f16: rounded, saturated), back as f32.
pub fn stored(x: &[f32], dt: DType) -> Vec<f32> {
    cast(x, dt)
}

/// (atol, rtol) for an output stored as `dt`, from the f32 tolerances of the kernel.
pub fn tol(dt: DType, atol: f32, rtol: f32) -> (f32, f32) {
    match dt {
        DType::F16 => (atol + SUB, rtol + HALF_ULP),
        _ => (atol, rtol),
    }
}

/// Every value finite and within f16's range (saturated, never inf or NaN).
#[track_caller]
pub fn assert_saturated(what: &str, got: &[f32]) {
    for (i, v) in got.iter().enumerate() {
        assert!(
            v.is_finite() && v.abs() <= F16_MAX,
            "{what}: element {i} is {v}, not a finite f16"
        );
    }
}
