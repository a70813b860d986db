use wgsd::gpu::{DType, Recorder, Tensor};
use wgsd::ops::image::{cpu, to_u8};

use crate::common::{Rng, gpu};
use crate::f16data::stored;

#[test]
fn rounding_matches_numpy() {
    // Values whose *255 land exactly on .5: numpy (and WGSL) round them to even.
    let gpu = gpu();
    let vals = [
        -2.0f32,
        -1.0,
        1.0,
        3.0,
        0.0,
        1.0 / 255.0 - 1.0,
        2.0 * (0.5 / 255.0) - 1.0,
        2.0 * (1.5 / 255.0) - 1.0,
        2.0 * (2.5 / 255.0) - 1.0,
    ];
    let n = vals.len();
    let mut data = Vec::new();
    for _ in 0..3 {
        data.extend_from_slice(&vals);
    }
    let x = Tensor::from_f32(gpu, &[1, 3, 1, n], &data, DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    let got = to_u8(&mut rec, &x).unwrap().read(&mut rec).unwrap();
    assert_eq!(got, cpu::to_u8(&data, 1, 1, n));
    assert_eq!(
        &got[0][..15],
        &[
            0, 0, 0, 0, 0, 0, 255, 255, 255, 255, 255, 255, 128, 128, 128
        ]
    );
}

#[test]
fn random_images() {
    let gpu = gpu();
    let mut rng = Rng::new(11);
    for &(b, h, w) in &[(1, 8, 8), (2, 5, 7), (3, 13, 9)] {
        let data: Vec<f32> = rng.vec(b * 3 * h * w).iter().map(|v| v * 1.3).collect();
        let x = Tensor::from_f32(gpu, &[b, 3, h, w], &data, DType::F32).unwrap();
        let mut rec = Recorder::new(gpu);
        let got = to_u8(&mut rec, &x).unwrap().read(&mut rec).unwrap();
        assert_eq!(got, cpu::to_u8(&data, b, h, w), "shape {b}x3x{h}x{w}");
    }
}

/// f16 images: the same pixels as the f32 values they hold.
#[test]
fn random_images_f16() {
    let gpu = gpu();
    let mut rng = Rng::new(12);
    for &(b, h, w) in &[(1, 8, 8), (2, 5, 7)] {
        let data = stored(
            &rng.vec(b * 3 * h * w)
                .iter()
                .map(|v| v * 1.3)
                .collect::<Vec<_>>(),
            DType::F16,
        );
        let x = Tensor::from_f32(gpu, &[b, 3, h, w], &data, DType::F16).unwrap();
        let mut rec = Recorder::new(gpu);
        let got = to_u8(&mut rec, &x).unwrap().read(&mut rec).unwrap();
        assert_eq!(got, cpu::to_u8(&data, b, h, w), "f16 shape {b}x3x{h}x{w}");
    }
}
