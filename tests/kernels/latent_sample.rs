use wgsd::gpu::{DType, Recorder, Tensor};
use wgsd::ops::latent_sample::{add_noise, cpu, sample};

use crate::common::{Rng, assert_close, gpu};

#[test]
fn sample_hand_checked() {
    // One image, one channel, two pixels: mean (1, -2), logvar (0, ln 4) -> std (1, 2);
    // eps (0.5, 1) -> (1.5, 0) times scale 2; a logvar past 20 is clamped to 20.
    let gpu = gpu();
    let m = [1.0f32, -2.0, 0.0, 4f32.ln()];
    let e = [0.5f32, 1.0];
    let mt = Tensor::from_f32(gpu, &[1, 2, 1, 2], &m, DType::F32).unwrap();
    let et = Tensor::from_f32(gpu, &[1, 1, 1, 2], &e, DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    let out = sample(&mut rec, &mt, &et, 2.0).unwrap();
    let got = rec.read_f32(&out).unwrap();
    assert_close("sample", &got, &[3.0, 0.0], 1e-6, 1e-6);
    let big = [0.0f32, 100.0];
    let want = cpu::sample(&big, &[1.0], 1, 1.0);
    assert_close(
        "clamped logvar",
        &want,
        &[(10.0f64).exp() as f32],
        0.0,
        1e-7,
    );
}

#[test]
fn sample_random_f32_and_f16() {
    let gpu = gpu();
    let mut rng = Rng::new(7);
    for (shape, dt) in [
        ([2usize, 4, 5, 7], DType::F32),
        ([3, 4, 13, 9], DType::F32),
        ([1, 4, 96, 96], DType::F32),
        ([2, 4, 8, 8], DType::F16),
    ] {
        let [b, c, h, w] = shape;
        let n = c * h * w;
        let mut m: Vec<f32> = rng.vec(b * 2 * n).iter().map(|v| v * 4.0).collect();
        if dt == DType::F16 {
            m.iter_mut()
                .for_each(|v| *v = half::f16::from_f32(*v).to_f32());
        }
        let e = rng.vec(b * n);
        let mt = Tensor::from_f32(gpu, &[b, 2 * c, h, w], &m, dt).unwrap();
        let et = Tensor::from_f32(gpu, &[b, c, h, w], &e, DType::F32).unwrap();
        let mut rec = Recorder::new(gpu);
        let out = sample(&mut rec, &mt, &et, 0.18215).unwrap();
        let got = rec.read_f32(&out).unwrap();
        let want = cpu::sample(&m, &e, n, 0.18215);
        assert_close(&format!("sample {shape:?} {dt:?}"), &got, &want, 1e-6, 1e-5);
    }
}

#[test]
fn add_noise_random_with_repeated_rows() {
    let gpu = gpu();
    let mut rng = Rng::new(8);
    let (c, h, w) = (4, 9, 11);
    let n = c * h * w;
    let x = rng.vec(2 * n);
    // Request 0's image starts three images, request 1's one.
    let rows = [0usize, 0, 0, 1];
    let z = rng.vec(rows.len() * n);
    let xt = Tensor::from_f32(gpu, &[2, c, h, w], &x, DType::F32).unwrap();
    let zt = Tensor::from_f32(gpu, &[rows.len(), c, h, w], &z, DType::F32).unwrap();
    for (ca, cb) in [(1.0f32, 14.6146), (0.5641, 0.8257)] {
        let mut rec = Recorder::new(gpu);
        let out = add_noise(&mut rec, &xt, &rows, &zt, ca, cb).unwrap();
        let got = rec.read_f32(&out).unwrap();
        let want = cpu::add_noise(&x, &rows, &z, n, ca, cb);
        assert_close(&format!("add_noise {ca} {cb}"), &got, &want, 1e-5, 1e-6);
    }
}

#[test]
fn bad_shapes_are_errors() {
    let gpu = gpu();
    let x = Tensor::from_f32(gpu, &[1, 4, 2, 2], &[0.0; 16], DType::F32).unwrap();
    let z = Tensor::from_f32(gpu, &[2, 4, 2, 2], &[0.0; 32], DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    assert!(
        add_noise(&mut rec, &x, &[0, 1], &z, 1.0, 1.0).is_err(),
        "row past x"
    );
    assert!(
        add_noise(&mut rec, &x, &[0], &z, 1.0, 1.0).is_err(),
        "noise rows"
    );
    assert!(sample(&mut rec, &x, &z, 1.0).is_err(), "eps shape");
}
