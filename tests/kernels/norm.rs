use wgsd::gpu::{DType, Recorder, Tensor};
use wgsd::ops::norm::{self, cpu};

use crate::common::{Rng, assert_close, gpu};
use crate::f16data::{F16_MAX, assert_saturated, stored, tol};

/// Inputs with a mean far from zero and a small spread: a single-pass sum of squares in
/// f32 fails on these, shifted sums must not.
fn data(rng: &mut Rng, n: usize, offset: f32, spread: f32) -> Vec<f32> {
    (0..n).map(|_| offset + spread * rng.uniform()).collect()
}

fn check_gn(shape: &[usize], groups: usize, silu: bool, seed: u64) {
    check_gn_as(shape, groups, silu, seed, DType::F32);
}

/// GroupNorm of activations stored as `dt` (gamma / beta f32; statistics f32 either way).
fn check_gn_as(shape: &[usize], groups: usize, silu: bool, seed: u64, dt: DType) {
    let gpu = gpu();
    let mut rng = Rng::new(seed);
    let (b, c) = (shape[0], shape[1]);
    let s: usize = shape[2..].iter().product();
    let x = stored(&data(&mut rng, b * c * s, 3.0, 0.5), dt);
    let gamma: Vec<f32> = (0..c).map(|_| 1.0 + 0.5 * rng.uniform()).collect();
    let beta = rng.vec(c);
    let tx = Tensor::from_f32(gpu, shape, &x, dt).unwrap();
    let tg = Tensor::from_f32(gpu, &[c], &gamma, DType::F32).unwrap();
    let tb = Tensor::from_f32(gpu, &[c], &beta, DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    let y = norm::group_norm(&mut rec, &tx, groups, &tg, &tb, 1e-6, silu).unwrap();
    assert_eq!(y.dtype(), dt);
    let want = cpu::group_norm(&x, b, c, s, groups, &gamma, &beta, 1e-6, silu);
    // f32 statistics over up to millions of elements: ~1e-5 relative on O(1) outputs.
    let (atol, rtol) = tol(dt, 2e-5, 2e-5);
    assert_close(
        &format!("group_norm {shape:?} g{groups} silu {silu} {dt:?}"),
        &rec.read_f32(&y).unwrap(),
        &want,
        atol,
        rtol,
    );
}

fn check_ln(shape: &[usize], seed: u64) {
    check_ln_as(shape, seed, DType::F32);
}

fn check_ln_as(shape: &[usize], seed: u64, dt: DType) {
    let gpu = gpu();
    let mut rng = Rng::new(seed);
    let c = *shape.last().unwrap();
    let n: usize = shape.iter().product();
    let x = stored(&data(&mut rng, n, -2.0, 1.0), dt);
    let gamma: Vec<f32> = (0..c).map(|_| 1.0 + 0.5 * rng.uniform()).collect();
    let beta = rng.vec(c);
    let tx = Tensor::from_f32(gpu, shape, &x, dt).unwrap();
    let tg = Tensor::from_f32(gpu, &[c], &gamma, DType::F32).unwrap();
    let tb = Tensor::from_f32(gpu, &[c], &beta, DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    let y = norm::layer_norm(&mut rec, &tx, &tg, &tb, 1e-5).unwrap();
    assert_eq!(y.dtype(), dt);
    let (atol, rtol) = tol(dt, 1e-5, 1e-5);
    assert_close(
        &format!("layer_norm {shape:?} {dt:?}"),
        &rec.read_f32(&y).unwrap(),
        &cpu::layer_norm(&x, c, &gamma, &beta, 1e-5),
        atol,
        rtol,
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

#[test]
fn norm_f16_shapes() {
    let f16 = DType::F16;
    check_gn_as(&[2, 6, 5, 7], 3, true, 21, f16); // scalar path
    check_gn_as(&[2, 64, 12, 12], 32, true, 22, f16);
    check_gn_as(&[1, 8, 130, 129], 2, false, 23, f16);
    check_gn_as(&[2, 16, 96, 96], 4, true, 24, f16);
    check_ln_as(&[3, 77, 1024], 25, f16);
    check_ln_as(&[5, 33], 26, f16);
    check_ln_as(&[70_000, 8], 27, f16);
}

/// Values near f16's range: their sums and squares overflow f16 but the statistics are
/// f32, so the normalised output is +-1; a large gamma saturates the store at +-65504.
#[test]
fn norm_f16_saturate() {
    let gpu = gpu();
    let x = [6e4f32, -6e4, 6e4, -6e4, 6e4, -6e4, 6e4, -6e4];
    let tx = Tensor::from_f32(gpu, &[1, 2, 4], &x, DType::F16).unwrap();
    let one = Tensor::from_f32(gpu, &[2], &[1.0, 1.0], DType::F32).unwrap();
    let big = Tensor::from_f32(gpu, &[2], &[1e5, 1e5], DType::F32).unwrap();
    let zero = Tensor::from_f32(gpu, &[2], &[0.0, 0.0], DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    let y = norm::group_norm(&mut rec, &tx, 1, &one, &zero, 1e-6, false).unwrap();
    let want: Vec<f32> = x.iter().map(|v| v.signum()).collect();
    let (atol, rtol) = tol(DType::F16, 1e-5, 1e-5);
    assert_close(
        "gn f16 +-6e4",
        &rec.read_f32(&y).unwrap(),
        &want,
        atol,
        rtol,
    );
    let y = norm::group_norm(&mut rec, &tx, 1, &big, &zero, 1e-6, false).unwrap();
    let got = rec.read_f32(&y).unwrap();
    assert_saturated("gn f16 gamma 1e5", &got);
    let want: Vec<f32> = x.iter().map(|v| v.signum() * F16_MAX).collect();
    assert_eq!(got, want);
    let ln_x = tx.reshape(&[4, 2]).unwrap();
    let y = norm::layer_norm(&mut rec, &ln_x, &big, &zero, 1e-5).unwrap();
    let got = rec.read_f32(&y).unwrap();
    assert_saturated("ln f16 gamma 1e5", &got);
    assert_eq!(got, want);
}

/// 72 M f16 elements (144 MB) exceed one 128 MiB binding: bands of groups, and with one
/// group, bands of chunks inside it; LayerNorm bands rows.
#[test]
fn norm_f16_larger_than_one_binding() {
    check_gn_as(&[1, 32, 1500, 1500], 32, true, 28, DType::F16);
    check_gn_as(&[1, 2, 6000, 6000], 1, false, 29, DType::F16);
    check_ln_as(&[72_000, 1000], 30, DType::F16);
}
