//! f32 <-> f16 casts against the CPU rounding (round to nearest even after saturating to
//! +-65504).

use wgsd::gpu::{DType, Recorder, Tensor};
use wgsd::ops::cast::{self, cpu};

use crate::common::{Rng, gpu};
use crate::f16data::{F16_MAX, assert_saturated};

fn round_trip(x: &[f32]) {
    let gpu = gpu();
    let n = x.len();
    let t = Tensor::from_f32(gpu, &[n], x, DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    let h = cast::cast(&mut rec, &t, DType::F16).unwrap();
    assert_eq!((h.shape(), h.dtype()), (&[n][..], DType::F16));
    let back = cast::cast(&mut rec, &h, DType::F32).unwrap();
    assert_eq!(back.dtype(), DType::F32);
    let want = cpu::cast(x, DType::F16);
    let got = rec.read_f32(&h).unwrap();
    if let Some(i) = (0..n).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!(
            "cast to f16: element {i} ({}) got {} expected {}",
            x[i], got[i], want[i]
        );
    }
    assert_saturated("cast to f16", &got);
    let got = rec.read_f32(&back).unwrap();
    if let Some(i) = (0..n).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!(
            "cast back to f32: element {i} got {} expected {}",
            got[i], want[i]
        );
    }
}

#[test]
fn cast_rounding_and_saturation() {
    let mut rng = Rng::new(1);
    let mut x: Vec<f32> = rng.vec(10_001).iter().map(|v| v * 300.0).collect();
    x.extend([
        0.0,
        -0.0,
        1.0,
        1e-8,
        -3e-6,
        65504.0,
        -65504.0,
        65519.0,
        65520.0,
        -65520.0,
        7e4,
        -1e9,
        3.0e38,
        1.0 + 1.0 / 2048.0,
        1.0 + 3.0 / 2048.0,
    ]);
    round_trip(&x);
    let want = cpu::cast(&[7e4, -1e9, 65520.0], DType::F16);
    assert_eq!(want, [F16_MAX, -F16_MAX, F16_MAX]);
}

#[test]
fn cast_same_dtype_and_bad_target() {
    let gpu = gpu();
    let t = Tensor::from_f32(gpu, &[3], &[1.0, 2.0, 3.0], DType::F16).unwrap();
    let mut rec = Recorder::new(gpu);
    let same = cast::cast(&mut rec, &t, DType::F16).unwrap();
    assert!(same.same_storage(&t));
    assert!(cast::cast(&mut rec, &t, DType::U32).is_err());
    let ids = Tensor::from_u32(gpu, &[2], &[1, 2]).unwrap();
    assert!(cast::cast(&mut rec, &ids, DType::F16).is_err());
}

/// 70 M elements: the f32 side (280 MB) and the f16 side (140 MB) both exceed one
/// 128 MiB binding.
#[test]
fn cast_larger_than_one_binding() {
    let mut rng = Rng::new(2);
    let x: Vec<f32> = rng.vec(70_000_000).iter().map(|v| v * 1000.0).collect();
    round_trip(&x);
}
