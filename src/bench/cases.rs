//! The benchmarked cases: each kernel family at Stable Diffusion 2 shapes (768x768:
//! 96x96 latent, 9216 tokens) or, with `--quick`, at a quarter of the tokens.

use std::time::Duration;

use super::{Work, time_median};
use crate::error::Result;
use crate::gpu::{DType, Gpu, Tensor};
use crate::ops;

/// One case: a name, its shape in words, its work, and how to time it.
pub struct Case {
    pub name: &'static str,
    pub shape: String,
    pub work: Work,
    pub run: Box<dyn Fn(&Gpu, usize) -> Result<Duration>>,
}

/// Deterministic filler data (values in [-1, 1)); speed does not depend on it.
fn filled(gpu: &Gpu, shape: &[usize], dtype: DType) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|i| ((i * 7919 % 2003) as f32 / 1001.5) - 1.0).collect();
    Tensor::from_f32(gpu, shape, &data, dtype)
}

pub fn all(quick: bool) -> Vec<Case> {
    // Latent side and token count: 96x96 (768 px) or 48x48 (384 px) when quick.
    let side = if quick { 48 } else { 96 };
    let tokens = side * side;
    let mut cases = Vec::new();

    let n = 2 * 320 * tokens;
    cases.push(Case {
        name: "add (residual)",
        shape: format!("2x320x{side}x{side}"),
        work: Work::Bytes((3 * n * 4) as f64),
        run: Box::new(move |gpu, reps| {
            let a = filled(gpu, &[2, 320, side, side], DType::F32)?;
            let b = filled(gpu, &[2, 320, side, side], DType::F32)?;
            time_median(gpu, reps, |rec| ops::elementwise::add(rec, &a, &b).map(drop))
        }),
    });
    cases
}
