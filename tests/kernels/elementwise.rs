use wgsd::gpu::{DType, Recorder, Tensor};
use wgsd::ops::elementwise::{self, Broadcast, broadcast, cpu};

use crate::common::{Rng, assert_close, gpu};
use crate::f16data::{F16_MAX, assert_saturated, stored, tol};

fn check(a_shape: &[usize], b_shape: &[usize], seed: u64) {
    let gpu = gpu();
    let mut rng = Rng::new(seed);
    let a: Vec<f32> = rng.vec(a_shape.iter().product());
    let b: Vec<f32> = rng.vec(b_shape.iter().product());
    let ta = Tensor::from_f32(gpu, a_shape, &a, DType::F32).unwrap();
    let tb = Tensor::from_f32(gpu, b_shape, &b, DType::F32).unwrap();
    let bc = broadcast("test", a_shape, b_shape).unwrap();
    let mut rec = Recorder::new(gpu);
    let sum = elementwise::add_scaled(&mut rec, &ta, &tb, 0.5).unwrap();
    let prod = elementwise::mul(&mut rec, &ta, &tb).unwrap();
    assert_close(
        "add",
        &rec.read_f32(&sum).unwrap(),
        &cpu::add(&a, &b, bc, 0.5),
        0.0,
        1e-6,
    );
    assert_close(
        "mul",
        &rec.read_f32(&prod).unwrap(),
        &cpu::mul(&a, &b, bc, 1.0),
        0.0,
        1e-6,
    );
}

#[test]
fn broadcast_rules() {
    assert_eq!(
        broadcast("t", &[2, 3, 4, 5], &[3, 1, 1]).unwrap(),
        Broadcast {
            inner: 20,
            period: 3
        }
    );
    assert_eq!(
        broadcast("t", &[2, 3, 4, 5], &[2, 3, 1, 1]).unwrap(),
        Broadcast {
            inner: 20,
            period: 6
        }
    );
    assert_eq!(
        broadcast("t", &[7, 5], &[5]).unwrap(),
        Broadcast {
            inner: 1,
            period: 5
        }
    );
    assert_eq!(
        broadcast("t", &[7, 5], &[1]).unwrap(),
        Broadcast {
            inner: 1,
            period: 1
        }
    );
    assert!(broadcast("t", &[2, 3, 4], &[2, 1, 4]).is_err());
    assert!(broadcast("t", &[3, 4], &[5]).is_err());
}

#[test]
fn add_mul_shapes() {
    check(&[1], &[1], 1);
    check(&[2, 3, 5, 7], &[2, 3, 5, 7], 2);
    check(&[2, 3, 5, 7], &[3, 1, 1], 3);
    check(&[2, 3, 5, 7], &[2, 3, 1, 1], 4);
    check(&[77, 33], &[33], 5);
    check(&[1000, 257], &[1000, 257], 6);
}

/// 40 M floats (160 MB) exceed one 128 MiB binding: the launcher must band.
#[test]
fn add_larger_than_one_binding() {
    check(&[2, 5, 2000, 2000], &[5, 1, 1], 7);
    check(&[40_000_000], &[40_000_000], 8);
}

/// f16 activations `a` (and `b`, or an f32 `b` as for a bias): computed in f32, one f16
/// rounding on the store.
fn check16(a_shape: &[usize], b_shape: &[usize], b_dt: DType, seed: u64) {
    let gpu = gpu();
    let mut rng = Rng::new(seed);
    let a = stored(&rng.vec(a_shape.iter().product()), DType::F16);
    let b = stored(&rng.vec(b_shape.iter().product()), b_dt);
    let ta = Tensor::from_f32(gpu, a_shape, &a, DType::F16).unwrap();
    let tb = Tensor::from_f32(gpu, b_shape, &b, b_dt).unwrap();
    let bc = broadcast("test", a_shape, b_shape).unwrap();
    let mut rec = Recorder::new(gpu);
    let sum = elementwise::add_scaled(&mut rec, &ta, &tb, 0.5).unwrap();
    let prod = elementwise::mul(&mut rec, &ta, &tb).unwrap();
    assert_eq!((sum.dtype(), prod.dtype()), (DType::F16, DType::F16));
    let (atol, rtol) = tol(DType::F16, 0.0, 1e-7);
    let what = |op: &str| format!("{op} f16 {a_shape:?} b {b_shape:?} {b_dt:?}");
    assert_close(
        &what("add"),
        &rec.read_f32(&sum).unwrap(),
        &cpu::add(&a, &b, bc, 0.5),
        atol,
        rtol,
    );
    assert_close(
        &what("mul"),
        &rec.read_f32(&prod).unwrap(),
        &cpu::mul(&a, &b, bc, 1.0),
        atol,
        rtol,
    );
}

#[test]
fn add_mul_f16() {
    check16(&[1], &[1], DType::F16, 11);
    check16(&[2, 3, 5, 7], &[2, 3, 5, 7], DType::F16, 12);
    check16(&[2, 3, 5, 7], &[3, 1, 1], DType::F32, 13); // f32 bias over f16
    check16(&[77, 33], &[33], DType::F16, 14);
    check16(&[1000, 257], &[1000, 257], DType::F32, 15);
    // Mixed activations are an error.
    let gpu = gpu();
    let a = Tensor::from_f32(gpu, &[4], &[1.0; 4], DType::F32).unwrap();
    let b = Tensor::from_f32(gpu, &[4], &[1.0; 4], DType::F16).unwrap();
    let mut rec = Recorder::new(gpu);
    assert!(elementwise::add(&mut rec, &a, &b).is_err());
}

/// Sums and products past f16's range store +-65504, never inf; the scale applies before
/// the store, so (6e4 + 6e4) * 0.5 is exact.
#[test]
fn add_mul_f16_saturate() {
    let gpu = gpu();
    let a = [6e4f32, -6e4, 6e4, 300.0, -300.0];
    let b = [6e4f32, -6e4, -6e4, 300.0, 300.0];
    let ta = Tensor::from_f32(gpu, &[5], &a, DType::F16).unwrap();
    let tb = Tensor::from_f32(gpu, &[5], &b, DType::F16).unwrap();
    let mut rec = Recorder::new(gpu);
    let sum = elementwise::add(&mut rec, &ta, &tb).unwrap();
    let half = elementwise::add_scaled(&mut rec, &ta, &tb, 0.5).unwrap();
    let prod = elementwise::mul(&mut rec, &ta, &tb).unwrap();
    let (sum, half, prod) = (
        rec.read_f32(&sum).unwrap(),
        rec.read_f32(&half).unwrap(),
        rec.read_f32(&prod).unwrap(),
    );
    assert_saturated("add", &sum);
    assert_saturated("mul", &prod);
    let m = F16_MAX;
    assert_eq!(sum, [m, -m, 0.0, 600.0, 0.0]);
    assert_eq!(half, [6e4, -6e4, 0.0, 300.0, 0.0]);
    assert_eq!(prod, [m, m, -m, m, -m]);
}

/// 70 M f16 elements (140 MB) exceed one 128 MiB binding; the f32 bias case bands by the
/// bias's element size.
#[test]
fn add_f16_larger_than_one_binding() {
    check16(&[70_000_000], &[70_000_000], DType::F16, 16);
    check16(&[2, 5, 2700, 2700], &[5, 1, 1], DType::F32, 17);
}
