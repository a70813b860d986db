//! `ops::latent_resize` (the hires fix's latent upscalers) against its CPU reference, and
//! the CPU reference against torch's `F.interpolate` (tests/fixtures/hires, written by
//! make_hires_fixtures.py).

use wgsd::gpu::{DType, Recorder, Tensor};
use wgsd::ops::latent_resize::{Mode, cpu, resize};

use crate::common::{Rng, assert_close, gpu};
use crate::f16data::stored;

const MODES: [Mode; 4] = [
    Mode::Nearest,
    Mode::NearestExact,
    Mode::Bilinear,
    Mode::Bicubic,
];

fn check_as(shape: [usize; 4], oh: usize, ow: usize, mode: Mode, seed: u64, dt: DType) {
    let gpu = gpu();
    let mut rng = Rng::new(seed);
    let [b, c, h, w] = shape;
    let x = stored(&rng.vec(b * c * h * w), dt);
    let tx = Tensor::from_f32(gpu, &shape, &x, dt).unwrap();
    let mut rec = Recorder::new(gpu);
    let y = resize(&mut rec, &tx, oh, ow, mode).unwrap();
    assert_eq!((y.shape(), y.dtype()), (&[b, c, oh, ow][..], dt));
    let want = cpu::resize(&x, b * c, (h, w), (oh, ow), mode);
    // f32: the same operations in the same order (an FMA may round differently).
    let tol = if dt == DType::F16 { 2e-3 } else { 2e-6 };
    assert_close(
        &format!("latent_resize {mode:?} {shape:?} -> {oh}x{ow} {dt:?}"),
        &rec.read_f32(&y).unwrap(),
        &want,
        tol,
        tol,
    );
}

/// Hand-checked bilinear 2x of [[0, 4]]: src x = (o + 0.5) / 2 - 0.5 = -0.25 (clamped to
/// 0), 0.25, 0.75, 1.25 (index 1, its neighbour clamped) -> 0, 1, 3, 4.
#[test]
fn bilinear_tiny() {
    let gpu = gpu();
    let x = Tensor::from_f32(gpu, &[1, 1, 1, 2], &[0.0, 4.0], DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    let y = resize(&mut rec, &x, 1, 4, Mode::Bilinear).unwrap();
    assert_close(
        "bilinear tiny",
        &rec.read_f32(&y).unwrap(),
        &[0.0, 1.0, 3.0, 4.0],
        0.0,
        0.0,
    );
    let bad = Tensor::from_f32(gpu, &[4], &[0.0; 4], DType::F32).unwrap();
    assert!(resize(&mut rec, &bad, 2, 2, Mode::Bilinear).is_err());
    assert!(resize(&mut rec, &x, 0, 2, Mode::Bicubic).is_err());
}

#[test]
fn every_mode_at_odd_shapes() {
    for (k, mode) in MODES.into_iter().enumerate() {
        let s = k as u64 * 10;
        check_as([1, 4, 4, 4], 8, 8, mode, s + 1, DType::F32); // the 2x hires case
        check_as([2, 4, 5, 7], 9, 11, mode, s + 2, DType::F32); // odd, non-integer ratio
        check_as([1, 3, 6, 5], 3, 4, mode, s + 3, DType::F32); // downscale
        check_as([1, 4, 32, 24], 48, 36, mode, s + 4, DType::F32); // 1.5x
        check_as([1, 4, 5, 7], 9, 11, mode, s + 5, DType::F16);
    }
}

/// 3 * 300 * 300 planes -> 2048 x 2048: 151 MB of output, over one 128 MiB binding.
#[test]
fn larger_than_one_binding() {
    check_as([1, 9, 300, 300], 2048, 2048, Mode::Bilinear, 7, DType::F32);
}

/// Many workgroups in a folded grid: 4 x 300 x 300 -> 4 x 1000 x 1100.
#[test]
fn folded_grid() {
    check_as([1, 4, 300, 300], 1000, 1100, Mode::Bicubic, 8, DType::F32);
}

#[test]
fn cpu_reference_matches_torch() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(root.join("tests/fixtures/hires/reference.safetensors"))
        .expect("tests/fixtures/hires/reference.safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let read = |name: &str| -> Vec<f32> {
        bytemuck::pod_collect_to_vec(st.tensor(name).expect(name).data())
    };
    let x = read("interp.in");
    let mut checked = 0;
    for mode in MODES {
        for (oh, ow) in [(9, 11), (3, 4), (10, 14)] {
            let want = read(&format!("interp.{}.{oh}x{ow}", mode.torch_name()));
            let got = cpu::resize(&x, 6, (5, 7), (oh, ow), mode);
            // torch's CPU kernels sum in their own (vectorised) order: rounding only.
            let tol = 1e-5;
            assert_close(
                &format!("{mode:?} {oh}x{ow} vs torch"),
                &got,
                &want,
                tol,
                tol,
            );
            // And the GPU against torch directly.
            let gpu = gpu();
            let tx = Tensor::from_f32(gpu, &[2, 3, 5, 7], &x, DType::F32).unwrap();
            let mut rec = Recorder::new(gpu);
            let y = resize(&mut rec, &tx, oh, ow, mode).unwrap();
            assert_close(
                &format!("{mode:?} {oh}x{ow} GPU vs torch"),
                &rec.read_f32(&y).unwrap(),
                &want,
                tol,
                tol,
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 12);
}
