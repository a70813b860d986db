use wgsd::gpu::{DType, Recorder, Tensor};
use wgsd::ops::latent_preview::{LatentRgb, SD_LATENT_RGB, cpu, latent_preview};

use crate::common::{Rng, gpu};
use crate::f16data::stored;

/// The GPU sums the four products in its own order (and may fuse them), so a value that
/// lands within an ulp of a rounding boundary can differ by one level; nothing else may.
fn assert_close(got: &[Vec<u8>], want: &[Vec<u8>], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: image count");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.len(), w.len(), "{what}: image size");
        let off: Vec<(u8, u8)> = g
            .iter()
            .zip(w)
            .filter(|(a, b)| a != b)
            .map(|(a, b)| (*a, *b))
            .collect();
        assert!(
            off.iter().all(|(a, b)| a.abs_diff(*b) <= 1) && off.len() * 100 <= g.len(),
            "{what}: {} of {} bytes differ: {:?}",
            off.len(),
            g.len(),
            &off[..off.len().min(8)]
        );
    }
}

#[test]
fn known_pixels() {
    // One latent pixel per case: zero latents are mid grey; each channel alone adds its
    // row of the matrix; large values clamp.
    let gpu = gpu();
    let m = LatentRgb {
        rows: [
            [1.0, 0.0, 0.0],
            [0.0, 1.0, 0.0],
            [0.0, 0.0, 1.0],
            [-1.0, -1.0, -1.0],
        ],
        bias: [0.0, 0.5, 0.0],
    };
    // [1, 4, 1, 3]: pixel 0 all zero, pixel 1 channel 0 = 1, pixel 2 channel 3 = 5.
    let x = [
        0.0f32, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 5.0,
    ];
    let t = Tensor::from_f32(gpu, &[1, 4, 1, 3], &x, DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    let got = latent_preview(&mut rec, &t, &m)
        .unwrap()
        .read(&mut rec)
        .unwrap();
    assert_eq!(
        got[0],
        vec![128, 191, 128, 255, 191, 128, 0, 0, 0],
        "grey (+ green bias), red, clamped black"
    );
    assert_eq!(got, cpu::latent_preview(&x, 1, 1, 3, &m));
}

#[test]
fn random_latents_sd_factors() {
    let gpu = gpu();
    let mut rng = Rng::new(21);
    for &(b, h, w) in &[(1, 8, 8), (2, 5, 7), (3, 12, 9), (1, 96, 96)] {
        let data: Vec<f32> = rng.vec(b * 4 * h * w).iter().map(|v| v * 2.5).collect();
        let x = Tensor::from_f32(gpu, &[b, 4, h, w], &data, DType::F32).unwrap();
        let mut rec = Recorder::new(gpu);
        let p = latent_preview(&mut rec, &x, &SD_LATENT_RGB).unwrap();
        assert_eq!((p.height, p.width), (h, w));
        let got = p.read(&mut rec).unwrap();
        let want = cpu::latent_preview(&data, b, h, w, &SD_LATENT_RGB);
        assert_close(&got, &want, &format!("f32 {b}x4x{h}x{w}"));
    }
}

/// f16 latents: the same pixels as the f32 values they hold.
#[test]
fn random_latents_f16() {
    let gpu = gpu();
    let mut rng = Rng::new(22);
    for &(b, h, w) in &[(1, 8, 8), (2, 6, 5)] {
        let data = stored(
            &rng.vec(b * 4 * h * w)
                .iter()
                .map(|v| v * 2.5)
                .collect::<Vec<_>>(),
            DType::F16,
        );
        let x = Tensor::from_f32(gpu, &[b, 4, h, w], &data, DType::F16).unwrap();
        let mut rec = Recorder::new(gpu);
        let got = latent_preview(&mut rec, &x, &SD_LATENT_RGB)
            .unwrap()
            .read(&mut rec)
            .unwrap();
        let want = cpu::latent_preview(&data, b, h, w, &SD_LATENT_RGB);
        assert_close(&got, &want, &format!("f16 {b}x4x{h}x{w}"));
    }
}

#[test]
fn refuses_other_channel_counts() {
    let gpu = gpu();
    let x = Tensor::from_f32(gpu, &[1, 3, 2, 2], &[0.0; 12], DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    assert!(latent_preview(&mut rec, &x, &SD_LATENT_RGB).is_err());
}
