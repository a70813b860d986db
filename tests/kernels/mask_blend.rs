use wgsd::gpu::{DType, Recorder, Tensor};
use wgsd::ops::mask_blend::{cpu, mask_blend};

use crate::common::{Rng, assert_close, gpu};

#[test]
fn mask_blend_hand_checked() {
    // Two channels, two pixels; the mask keeps the generated latent at pixel 1 only.
    let gpu = gpu();
    let x = [1.0f32, 2.0, 3.0, 4.0];
    let a = [-1.0f32, -2.0, -3.0, -4.0];
    let m = [0.0f32, 1.0];
    let xt = Tensor::from_f32(gpu, &[1, 2, 1, 2], &x, DType::F32).unwrap();
    let at = Tensor::from_f32(gpu, &[1, 2, 1, 2], &a, DType::F32).unwrap();
    let mt = Tensor::from_f32(gpu, &[1, 1, 1, 2], &m, DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    mask_blend(&mut rec, &xt, &at, &mt).unwrap();
    let got = rec.read_f32(&xt).unwrap();
    assert_eq!(got, vec![-1.0, 2.0, -3.0, 4.0]);
}

#[test]
fn mask_blend_random_rows_binary_and_soft() {
    let gpu = gpu();
    let mut rng = Rng::new(15);
    for (shape, binary) in [
        ([1usize, 4, 8, 8], true),
        ([3, 4, 13, 9], true),
        ([2, 4, 96, 96], true),
        ([5, 3, 7, 5], false),
    ] {
        let [r, c, h, w] = shape;
        let (hw, n) = (h * w, r * c * h * w);
        let x = rng.vec(n);
        let a = rng.vec(n);
        let m: Vec<f32> = rng
            .vec(r * hw)
            .iter()
            .map(|v| {
                if binary {
                    f32::from(*v > 0.0)
                } else {
                    v.abs().min(1.0)
                }
            })
            .collect();
        let xt = Tensor::from_f32(gpu, &shape, &x, DType::F32).unwrap();
        let at = Tensor::from_f32(gpu, &shape, &a, DType::F32).unwrap();
        let mt = Tensor::from_f32(gpu, &[r, 1, h, w], &m, DType::F32).unwrap();
        let mut rec = Recorder::new(gpu);
        mask_blend(&mut rec, &xt, &at, &mt).unwrap();
        let got = rec.read_f32(&xt).unwrap();
        let want = cpu::mask_blend(&x, &a, &m, c, hw);
        if binary {
            // A binary mask picks one side exactly (diffusers binarises the mask).
            assert_eq!(got, want, "{shape:?}");
        } else {
            assert_close(&format!("soft {shape:?}"), &got, &want, 1e-6, 1e-6);
        }
    }
}

#[test]
fn mask_blend_bad_shapes_are_errors() {
    let gpu = gpu();
    let x = Tensor::from_f32(gpu, &[1, 4, 2, 2], &[0.0; 16], DType::F32).unwrap();
    let m_bad = Tensor::from_f32(gpu, &[1, 4, 2, 2], &[0.0; 16], DType::F32).unwrap();
    let a_bad = Tensor::from_f32(gpu, &[2, 4, 2, 2], &[0.0; 32], DType::F32).unwrap();
    let m = Tensor::from_f32(gpu, &[1, 1, 2, 2], &[0.0; 4], DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    assert!(
        mask_blend(&mut rec, &x, &x, &m_bad).is_err(),
        "mask with channels"
    );
    assert!(
        mask_blend(&mut rec, &x, &a_bad, &m).is_err(),
        "a of another shape"
    );
    let h = Tensor::from_f32(gpu, &[1, 4, 2, 2], &[0.0; 16], DType::F16).unwrap();
    assert!(mask_blend(&mut rec, &h, &x, &m).is_err(), "f16 latents");
}
