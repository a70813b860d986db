use wgsd::gpu::{DType, Recorder, Tensor};
use wgsd::ops::activation::{self, cpu};

use crate::common::{Rng, assert_close, gpu};

// f32 exp / erfc in the shader: 1e-5 relative plus 1e-6 absolute (measured max abs
// error on [-6, 6] is printed by the random test).
const ATOL: f32 = 1e-6;
const RTOL: f32 = 1e-5;

fn unary_all(shape: &[usize], scale: f32, seed: u64) {
    let gpu = gpu();
    let mut rng = Rng::new(seed);
    let n: usize = shape.iter().product();
    let x: Vec<f32> = rng.vec(n).iter().map(|v| v * scale).collect();
    let tx = Tensor::from_f32(gpu, shape, &x, DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    let s = activation::silu(&mut rec, &tx).unwrap();
    let g = activation::gelu(&mut rec, &tx).unwrap();
    let q = activation::quick_gelu(&mut rec, &tx).unwrap();
    assert_eq!(g.shape(), shape);
    let what = |op: &str| format!("{op} {shape:?}");
    assert_close(
        &what("silu"),
        &rec.read_f32(&s).unwrap(),
        &cpu::silu(&x),
        ATOL,
        RTOL,
    );
    assert_close(
        &what("gelu"),
        &rec.read_f32(&g).unwrap(),
        &cpu::gelu(&x),
        ATOL,
        RTOL,
    );
    assert_close(
        &what("quick_gelu"),
        &rec.read_f32(&q).unwrap(),
        &cpu::quick_gelu(&x),
        ATOL,
        RTOL,
    );
}

fn check_geglu(shape: &[usize], seed: u64) {
    let gpu = gpu();
    let mut rng = Rng::new(seed);
    let n: usize = shape.iter().product();
    let x: Vec<f32> = rng.vec(n).iter().map(|v| v * 4.0).collect();
    let tx = Tensor::from_f32(gpu, shape, &x, DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    let y = activation::geglu(&mut rec, &tx).unwrap();
    let f = shape[shape.len() - 1] / 2;
    let mut want_shape = shape.to_vec();
    *want_shape.last_mut().unwrap() = f;
    assert_eq!(y.shape(), &want_shape[..]);
    assert_close(
        &format!("geglu {shape:?}"),
        &rec.read_f32(&y).unwrap(),
        &cpu::geglu(&x, f),
        ATOL * 4.0,
        RTOL,
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
