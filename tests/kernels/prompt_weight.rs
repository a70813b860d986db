use wgsd::gpu::{DType, Recorder, Tensor};
use wgsd::ops::prompt_weight::{cpu, prompt_weight};

use crate::common::{Rng, assert_close, gpu};
use crate::f16data::stored;

fn check(chunks: usize, tokens: usize, dim: usize, seed: u64, dt: DType) {
    let gpu = gpu();
    let mut rng = Rng::new(seed);
    let z = stored(&rng.vec(chunks * tokens * dim), dt);
    // A1111 weights: mostly 1, some emphasis (1.1^k, 1.3, 0.5 ...).
    let w: Vec<f32> = (0..chunks * tokens)
        .map(|i| [1.0, 1.1, 1.21, 0.9090909, 1.3, 0.5][i % 6])
        .collect();
    let tz = Tensor::from_f32(gpu, &[chunks, tokens, dim], &z, dt).unwrap();
    let tw = Tensor::from_f32(gpu, &[chunks, tokens], &w, DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    let y = prompt_weight(&mut rec, &tz, &tw).unwrap();
    assert_eq!((y.shape(), y.dtype()), (tz.shape(), dt));
    let want = cpu::prompt_weight(&z, &w, tokens, dim);
    let (atol, rtol) = if dt == DType::F16 {
        (2e-3, 2e-3)
    } else {
        (1e-5, 1e-4)
    };
    assert_close(
        &format!("prompt_weight {chunks}x{tokens}x{dim} {dt:?}"),
        &rec.read_f32(&y).unwrap(),
        &want,
        atol,
        rtol,
    );
}

#[test]
fn prompt_weight_matches_cpu() {
    check(1, 77, 32, 1, DType::F32);
    check(3, 77, 1024, 2, DType::F32);
    check(2, 5, 3, 3, DType::F32);
    check(2, 77, 64, 4, DType::F16);
}

/// All weights 1: the output is the input bit for bit (A1111's plain prompt is the plain
/// image), and hand-checked means: z = [1, 3] with weights [2, 1] -> zw = [2, 3], mean
/// 2.5 vs 2, so out = zw * 0.8.
#[test]
fn prompt_weight_identity_and_hand_checked() {
    let gpu = gpu();
    let mut rng = Rng::new(9);
    let z = rng.vec(2 * 77 * 16);
    let tz = Tensor::from_f32(gpu, &[2, 77, 16], &z, DType::F32).unwrap();
    let ones = Tensor::from_f32(gpu, &[2, 77], &[1.0; 154], DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    let y = prompt_weight(&mut rec, &tz, &ones).unwrap();
    assert_eq!(rec.read_f32(&y).unwrap(), z);

    let tz = Tensor::from_f32(gpu, &[1, 2, 1], &[1.0, 3.0], DType::F32).unwrap();
    let tw = Tensor::from_f32(gpu, &[1, 2], &[2.0, 1.0], DType::F32).unwrap();
    let y = prompt_weight(&mut rec, &tz, &tw).unwrap();
    assert_close("hand", &rec.read_f32(&y).unwrap(), &[1.6, 2.4], 1e-6, 0.0);
    // Mismatched weights are refused.
    let bad = Tensor::from_f32(gpu, &[1, 3], &[1.0; 3], DType::F32).unwrap();
    assert!(prompt_weight(&mut rec, &tz, &bad).is_err());
}
