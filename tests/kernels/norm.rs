use wgsd::gpu::{DType, Recorder, Tensor};
use wgsd::ops::norm::{self, cpu};

use crate::common::{Rng, assert_close, gpu};

/// Inputs with a mean far from zero and a small spread: a single-pass sum of squares in
/// f32 fails on these, shifted sums must not.
fn data(rng: &mut Rng, n: usize, offset: f32, spread: f32) -> Vec<f32> {
    (0..n).map(|_| offset + spread * rng.uniform()).collect()
}

fn check_gn(shape: &[usize], groups: usize, silu: bool, seed: u64) {
    let gpu = gpu();
    let mut rng = Rng::new(seed);
    let (b, c) = (shape[0], shape[1]);
    let s: usize = shape[2..].iter().product();
    let x = data(&mut rng, b * c * s, 3.0, 0.5);
    let gamma: Vec<f32> = (0..c).map(|_| 1.0 + 0.5 * rng.uniform()).collect();
    let beta = rng.vec(c);
    let tx = Tensor::from_f32(gpu, shape, &x, DType::F32).unwrap();
    let tg = Tensor::from_f32(gpu, &[c], &gamma, DType::F32).unwrap();
    let tb = Tensor::from_f32(gpu, &[c], &beta, DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    let y = norm::group_norm(&mut rec, &tx, groups, &tg, &tb, 1e-6, silu).unwrap();
    let want = cpu::group_norm(&x, b, c, s, groups, &gamma, &beta, 1e-6, silu);
    // f32 statistics over up to millions of elements: ~1e-5 relative on O(1) outputs.
    assert_close(
        &format!("group_norm {shape:?} g{groups} silu {silu}"),
        &rec.read_f32(&y).unwrap(),
        &want,
        2e-5,
        2e-5,
    );
}

fn check_ln(shape: &[usize], seed: u64) {
    let gpu = gpu();
    let mut rng = Rng::new(seed);
    let c = *shape.last().unwrap();
    let n: usize = shape.iter().product();
    let x = data(&mut rng, n, -2.0, 1.0);
    let gamma: Vec<f32> = (0..c).map(|_| 1.0 + 0.5 * rng.uniform()).collect();
    let beta = rng.vec(c);
    let tx = Tensor::from_f32(gpu, shape, &x, DType::F32).unwrap();
    let tg = Tensor::from_f32(gpu, &[c], &gamma, DType::F32).unwrap();
    let tb = Tensor::from_f32(gpu, &[c], &beta, DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    let y = norm::layer_norm(&mut rec, &tx, &tg, &tb, 1e-5).unwrap();
    assert_close(
        &format!("layer_norm {shape:?}"),
        &rec.read_f32(&y).unwrap(),
        &cpu::layer_norm(&x, c, &gamma, &beta, 1e-5),
        1e-5,
        1e-5,
    );
}

/// Hand-checked: one group [1, 2, 3, 4] has mean 2.5, variance 1.25.
#[test]
fn group_norm_tiny() {
    let gpu = gpu();
    let x = Tensor::from_f32(gpu, &[1, 2, 2], &[1.0, 2.0, 3.0, 4.0], DType::F32).unwrap();
    let g = Tensor::from_f32(gpu, &[2], &[1.0, 2.0], DType::F32).unwrap();
    let b = Tensor::from_f32(gpu, &[2], &[0.0, 1.0], DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    let y = norm::group_norm(&mut rec, &x, 1, &g, &b, 0.0, false).unwrap();
    let r = 1.25f32.sqrt();
    let want = [-1.5 / r, -0.5 / r, 2.0 * 0.5 / r + 1.0, 2.0 * 1.5 / r + 1.0];
    assert_close("gn tiny", &rec.read_f32(&y).unwrap(), &want, 1e-6, 1e-6);
    let ln = norm::layer_norm(
        &mut rec,
        &x.reshape(&[1, 4]).unwrap(),
        &g.reshape(&[2]).unwrap(),
        &b,
        0.0,
    );
    assert!(ln.is_err(), "gamma of the wrong length must be an error");
}

#[test]
fn group_norm_shapes() {
    check_gn(&[1, 4, 8, 8], 2, false, 1);
    check_gn(&[2, 6, 5, 7], 3, true, 2); // odd spatial: scalar path
    check_gn(&[2, 64, 12, 12], 32, true, 3);
    check_gn(&[1, 8, 130, 129], 2, false, 4); // groups of several chunks, odd
    check_gn(&[2, 16, 96, 96], 4, true, 5); // vec4, 9 chunks per group
    check_gn(&[3, 10, 7], 5, false, 6); // 1-D spatial
}

/// 35.2 M floats (141 MB) exceed one 128 MiB binding: bands of whole groups (32
/// groups), and with one group, bands of chunks inside the group.
#[test]
fn group_norm_larger_than_one_binding() {
    check_gn(&[1, 32, 1100, 1000], 32, true, 7);
    check_gn(&[1, 32, 1100, 1000], 1, false, 8);
}

#[test]
fn layer_norm_shapes() {
    check_ln(&[1, 4], 11);
    check_ln(&[3, 77, 1024], 12);
    check_ln(&[5, 33], 13); // odd width: scalar path
    check_ln(&[70_000, 8], 14); // > 65535 rows: folded grid
    check_ln(&[2, 9, 1280], 15);
}

/// 36 M floats in rows of 1000 exceed one binding: bands of rows.
#[test]
fn layer_norm_larger_than_one_binding() {
    check_ln(&[36_000, 1000], 16);
}
