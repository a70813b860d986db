use wgsd::gpu::{DType, Recorder, Tensor};
use wgsd::ops::activation::{self, cpu};

use crate::common::{Rng, assert_close, gpu};
use crate::f16data::{F16_MAX, assert_saturated, stored, tol};

// f32 exp / erfc in the shader: 1e-5 relative plus 1e-6 absolute (measured max abs
// error on [-6, 6] is printed by the random test).
const ATOL: f32 = 1e-6;
const RTOL: f32 = 1e-5;

fn unary_all(shape: &[usize], scale: f32, seed: u64) {
    unary_all_as(shape, scale, seed, DType::F32);
}

/// silu, gelu, quick_gelu on activations stored as `dt` (f16: inputs rounded to f16,
/// one f16 rounding of the output on top of the f32 tolerance).
fn unary_all_as(shape: &[usize], scale: f32, seed: u64, dt: DType) {
    let gpu = gpu();
    let mut rng = Rng::new(seed);
    let n: usize = shape.iter().product();
    let x: Vec<f32> = rng.vec(n).iter().map(|v| v * scale).collect();
    let x = stored(&x, dt);
    let tx = Tensor::from_f32(gpu, shape, &x, dt).unwrap();
    let mut rec = Recorder::new(gpu);
    let s = activation::silu(&mut rec, &tx).unwrap();
    let g = activation::gelu(&mut rec, &tx).unwrap();
    let q = activation::quick_gelu(&mut rec, &tx).unwrap();
    assert_eq!((g.shape(), g.dtype()), (shape, dt));
    let (atol, rtol) = tol(dt, ATOL, RTOL);
    let what = |op: &str| format!("{op} {shape:?} {dt:?}");
    assert_close(
        &what("silu"),
        &rec.read_f32(&s).unwrap(),
        &cpu::silu(&x),
        atol,
        rtol,
    );
    assert_close(
        &what("gelu"),
        &rec.read_f32(&g).unwrap(),
        &cpu::gelu(&x),
        atol,
        rtol,
    );
    assert_close(
        &what("quick_gelu"),
        &rec.read_f32(&q).unwrap(),
        &cpu::quick_gelu(&x),
        atol,
        rtol,
    );
}

fn check_geglu(shape: &[usize], seed: u64) {
    check_geglu_as(shape, seed, DType::F32);
}

fn check_geglu_as(shape: &[usize], seed: u64, dt: DType) {
    let gpu = gpu();
    let mut rng = Rng::new(seed);
    let n: usize = shape.iter().product();
    let x: Vec<f32> = rng.vec(n).iter().map(|v| v * 4.0).collect();
    let x = stored(&x, dt);
    let tx = Tensor::from_f32(gpu, shape, &x, dt).unwrap();
    let mut rec = Recorder::new(gpu);
    let y = activation::geglu(&mut rec, &tx).unwrap();
    let f = shape[shape.len() - 1] / 2;
    let mut want_shape = shape.to_vec();
    *want_shape.last_mut().unwrap() = f;
    assert_eq!((y.shape(), y.dtype()), (&want_shape[..], dt));
    let (atol, rtol) = tol(dt, ATOL * 4.0, RTOL);
    assert_close(
        &format!("geglu {shape:?} {dt:?}"),
        &rec.read_f32(&y).unwrap(),
        &cpu::geglu(&x, f),
        atol,
        rtol,
    );
}

/// Hand-checked values (Python math.erf / math.exp).
#[test]
fn activation_tiny() {
    let gpu = gpu();
    let x = [0.0, 1.0, -1.0, 2.5, -3.0];
    let tx = Tensor::from_f32(gpu, &[5], &x, DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    let s = activation::silu(&mut rec, &tx).unwrap();
    let g = activation::gelu(&mut rec, &tx).unwrap();
    let q = activation::quick_gelu(&mut rec, &tx).unwrap();
    let silu = [0.0, 0.731_058_6, -0.268_941_42, 2.310_354_5, -0.142_277_62];
    let gelu = [0.0, 0.841_344_8, -0.158_655_25, 2.484_475_8, -0.004_049_694];
    let qg = [0.0, 0.845_795_77, -0.154_204_23, 2.465_013_8, -0.018_071_31];
    assert_close("silu tiny", &rec.read_f32(&s).unwrap(), &silu, 1e-7, 1e-6);
    assert_close("gelu tiny", &rec.read_f32(&g).unwrap(), &gelu, 1e-7, 1e-6);
    assert_close(
        "quick_gelu tiny",
        &rec.read_f32(&q).unwrap(),
        &qg,
        1e-7,
        1e-6,
    );
    // geglu [1, 4]: hidden [1, 2], gate [1, -1].
    let t = Tensor::from_f32(gpu, &[1, 4], &[1.0, 2.0, 1.0, -1.0], DType::F32).unwrap();
    let y = activation::geglu(&mut rec, &t).unwrap();
    assert_close(
        "geglu tiny",
        &rec.read_f32(&y).unwrap(),
        &[0.841_344_8, -0.317_310_5],
        1e-7,
        1e-6,
    );
    let odd = Tensor::from_f32(gpu, &[1, 3], &[1.0, 2.0, 3.0], DType::F32).unwrap();
    assert!(activation::geglu(&mut rec, &odd).is_err());
}

#[test]
fn cpu_erf_reference() {
    // Against Python math.erf / math.erfc.
    assert!((cpu::erf(0.5) - 0.520_499_877_813_046_5).abs() < 1e-15);
    assert!((cpu::erf(3.0) - 0.999_977_909_503_001_4).abs() < 1e-15);
    assert!((cpu::erfc(4.0) / 1.541_725_790_028_002e-8 - 1.0).abs() < 1e-12);
    assert!((cpu::erfc(-1.0) - 1.842_700_792_949_715).abs() < 1e-15);
}

#[test]
fn activation_shapes() {
    unary_all(&[1], 6.0, 1);
    unary_all(&[7], 6.0, 2); // not a multiple of 4
    unary_all(&[2, 320, 13, 11], 6.0, 3);
    unary_all(&[1000, 1003], 10.0, 4);
    unary_all(&[70_000, 257], 3.0, 5); // > 65535 workgroups: folded grid
    check_geglu(&[2, 8], 6);
    check_geglu(&[3, 77, 2560], 7);
    check_geglu(&[5, 7, 6], 8); // F = 3: scalar path
    check_geglu(&[1, 9, 2 * 1283], 9);
}

/// 34.4 M floats (138 MB) exceed one 128 MiB binding: bands.
#[test]
fn activation_larger_than_one_binding() {
    unary_all(&[2, 4096, 4201], 6.0, 10);
    check_geglu(&[17_000, 2002], 11);
}

#[test]
fn activation_f16_shapes() {
    let f16 = DType::F16;
    unary_all_as(&[1], 6.0, 21, f16);
    unary_all_as(&[7], 6.0, 22, f16);
    unary_all_as(&[2, 320, 13, 11], 6.0, 23, f16);
    unary_all_as(&[70_000, 257], 3.0, 24, f16);
    check_geglu_as(&[3, 77, 2560], 25, f16);
    check_geglu_as(&[5, 7, 6], 26, f16); // F = 3: scalar path
}

/// Inputs near f16's range: the activations are about the identity for large positive
/// inputs, and GEGLU's product 6e4 * gelu(6e4) overflows: +-65504, never inf or NaN.
#[test]
fn activation_f16_saturate() {
    let gpu = gpu();
    let x = [6e4f32, -6e4, 65504.0, -65504.0];
    let tx = Tensor::from_f32(gpu, &[4], &x, DType::F16).unwrap();
    let mut rec = Recorder::new(gpu);
    let s = activation::silu(&mut rec, &tx).unwrap();
    let g = activation::gelu(&mut rec, &tx).unwrap();
    let s = rec.read_f32(&s).unwrap();
    let g = rec.read_f32(&g).unwrap();
    assert_saturated("silu", &s);
    assert_saturated("gelu", &g);
    assert_eq!(s[0], 6e4);
    assert_eq!(g[2], F16_MAX);
    // geglu rows [hidden, gate]: 6e4 * gelu(6e4) = 3.6e9 and -6e4 * gelu(6e4).
    let t = Tensor::from_f32(gpu, &[2, 2], &[6e4, 6e4, -6e4, 6e4], DType::F16).unwrap();
    let y = activation::geglu(&mut rec, &t).unwrap();
    assert_eq!(rec.read_f32(&y).unwrap(), [F16_MAX, -F16_MAX]);
}

/// 70 M f16 elements (140 MB) exceed one 128 MiB binding.
#[test]
fn activation_f16_larger_than_one_binding() {
    unary_all_as(&[2, 5000, 7000], 6.0, 27, DType::F16);
    check_geglu_as(&[20_000, 3600], 28, DType::F16);
}
