use wgsd::gpu::{DType, Recorder, Tensor};
use wgsd::ops::transpose::{cpu, transpose};

use crate::common::{Rng, assert_close, gpu};
use crate::f16data::{F16_MAX, assert_saturated, stored, tol};

fn check(batch: usize, m: usize, n: usize, with_residual: bool, seed: u64) {
    check_as(batch, m, n, with_residual, seed, DType::F32);
}

fn check_as(batch: usize, m: usize, n: usize, with_residual: bool, seed: u64, dt: DType) {
    let gpu = gpu();
    let mut rng = Rng::new(seed);
    let x = stored(&rng.vec(batch * m * n), dt);
    let r = stored(&rng.vec(batch * m * n), dt);
    let tx = Tensor::from_f32(gpu, &[batch, m, n], &x, dt).unwrap();
    let tr = Tensor::from_f32(gpu, &[batch, n, m], &r, dt).unwrap();
    let mut rec = Recorder::new(gpu);
    let out = transpose(&mut rec, &tx, with_residual.then_some(&tr)).unwrap();
    assert_eq!(out.shape(), &[batch, n, m]);
    let want = cpu::transpose(&x, batch, m, n, with_residual.then_some(r.as_slice()));
    // A transpose moves values exactly; the add is one f32 rounding (then one f16).
    let (atol, rtol) = tol(dt, 0.0, 1e-7);
    assert_eq!(out.dtype(), dt);
    assert_close("transpose", &rec.read_f32(&out).unwrap(), &want, atol, rtol);
}

#[test]
fn hand_checked() {
    let gpu = gpu();
    let x = Tensor::from_f32(gpu, &[2, 3], &[1., 2., 3., 4., 5., 6.], DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    let out = transpose(&mut rec, &x, None).unwrap();
    assert_eq!(rec.read_f32(&out).unwrap(), vec![1., 4., 2., 5., 3., 6.]);
}

#[test]
fn random_shapes() {
    check(1, 1, 1, false, 1);
    check(2, 320, 77, false, 2);
    check(3, 13, 9, true, 3);
    check(2, 64, 120, true, 4);
}

/// 3 x [4000, 4000] f32 = 192 MB, over one 128 MiB binding: banded by batch item.
#[test]
fn larger_than_one_binding() {
    check(3, 4000, 4000, true, 5);
}

#[test]
fn transpose_f16() {
    check_as(2, 320, 77, false, 11, DType::F16);
    check_as(3, 13, 9, true, 12, DType::F16);
    check_as(5, 4000, 4000, false, 13, DType::F16); // 160 MB: banded by batch item
}

/// x + residual past f16's range stores +-65504.
#[test]
fn transpose_add_f16_saturate() {
    let gpu = gpu();
    let x = Tensor::from_f32(gpu, &[1, 2], &[6e4, -6e4], DType::F16).unwrap();
    let r = Tensor::from_f32(gpu, &[2, 1], &[6e4, -6e4], DType::F16).unwrap();
    let mut rec = Recorder::new(gpu);
    let out = transpose(&mut rec, &x, Some(&r)).unwrap();
    let got = rec.read_f32(&out).unwrap();
    assert_saturated("transpose_add", &got);
    assert_eq!(got, [F16_MAX, -F16_MAX]);
}
