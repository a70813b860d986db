use wgsd::gpu::{DType, Recorder, Tensor};
use wgsd::ops::elementwise::{self, Broadcast, broadcast, cpu};

use crate::common::{Rng, assert_close, gpu};

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
