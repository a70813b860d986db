use wgsd::gpu::{DType, Recorder, Tensor};
use wgsd::ops::transpose::{cpu, transpose};

use crate::common::{Rng, assert_close, gpu};

fn check(batch: usize, m: usize, n: usize, with_residual: bool, seed: u64) {
    let gpu = gpu();
    let mut rng = Rng::new(seed);
    let x = rng.vec(batch * m * n);
    let r = rng.vec(batch * m * n);
    let tx = Tensor::from_f32(gpu, &[batch, m, n], &x, DType::F32).unwrap();
    let tr = Tensor::from_f32(gpu, &[batch, n, m], &r, DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    let out = transpose(&mut rec, &tx, with_residual.then_some(&tr)).unwrap();
    assert_eq!(out.shape(), &[batch, n, m]);
    let want = cpu::transpose(&x, batch, m, n, with_residual.then_some(r.as_slice()));
    // A transpose moves values exactly; the add is one f32 rounding.
    assert_close("transpose", &rec.read_f32(&out).unwrap(), &want, 0.0, 1e-7);
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
