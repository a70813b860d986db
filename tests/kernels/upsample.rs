use wgsd::gpu::{DType, Recorder, Tensor};
use wgsd::ops::upsample::{cpu, upsample_nearest, upsample_nearest2x};

use crate::common::{Rng, assert_close, gpu};
use crate::f16data::stored;

fn check(shape: [usize; 4], seed: u64) {
    check_as(shape, seed, DType::F32);
}

fn check_as(shape: [usize; 4], seed: u64, dt: DType) {
    let gpu = gpu();
    let mut rng = Rng::new(seed);
    let [b, c, h, w] = shape;
    let x = stored(&rng.vec(b * c * h * w), dt);
    let tx = Tensor::from_f32(gpu, &shape, &x, dt).unwrap();
    let mut rec = Recorder::new(gpu);
    let y = upsample_nearest2x(&mut rec, &tx).unwrap();
    assert_eq!((y.shape(), y.dtype()), (&[b, c, 2 * h, 2 * w][..], dt));
    // A copy: exact.
    assert_close(
        &format!("upsample {shape:?}"),
        &rec.read_f32(&y).unwrap(),
        &cpu::upsample_nearest2x(&x, b * c, h, w),
        0.0,
        0.0,
    );
}

/// Hand-checked: [[1, 2], [3, 4]] -> rows [1 1 2 2], [1 1 2 2], [3 3 4 4], [3 3 4 4].
#[test]
fn upsample_tiny() {
    let gpu = gpu();
    let x = Tensor::from_f32(gpu, &[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0], DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    let y = upsample_nearest2x(&mut rec, &x).unwrap();
    let want = [
        1., 1., 2., 2., 1., 1., 2., 2., 3., 3., 4., 4., 3., 3., 4., 4.,
    ];
    assert_close("upsample tiny", &rec.read_f32(&y).unwrap(), &want, 0.0, 0.0);
    let bad = Tensor::from_f32(gpu, &[4], &[0.0; 4], DType::F32).unwrap();
    assert!(upsample_nearest2x(&mut rec, &bad).is_err());
}

#[test]
fn upsample_shapes() {
    check([1, 1, 1, 1], 1); // 2W = 2: scalar path
    check([2, 3, 5, 7], 2); // odd W: scalar path
    check([2, 320, 12, 12], 3);
    check([1, 4, 33, 50], 4);
    check([1, 2, 300, 301], 5);
}

/// Input [1, 9, 1000, 1000] gives a 144 MB output, over one binding.
#[test]
fn upsample_larger_than_one_binding() {
    check([1, 9, 1000, 1000], 6);
    check([1, 3, 1001, 2999], 7); // odd W, scalar path, banded
}

fn check_any(shape: [usize; 4], oh: usize, ow: usize, seed: u64) {
    check_any_as(shape, oh, ow, seed, DType::F32);
}

fn check_any_as(shape: [usize; 4], oh: usize, ow: usize, seed: u64, dt: DType) {
    let gpu = gpu();
    let mut rng = Rng::new(seed);
    let [b, c, h, w] = shape;
    let x = stored(&rng.vec(b * c * h * w), dt);
    let tx = Tensor::from_f32(gpu, &shape, &x, dt).unwrap();
    let mut rec = Recorder::new(gpu);
    let y = upsample_nearest(&mut rec, &tx, oh, ow).unwrap();
    assert_eq!((y.shape(), y.dtype()), (&[b, c, oh, ow][..], dt));
    assert_close(
        &format!("upsample_nearest {shape:?} -> {oh}x{ow}"),
        &rec.read_f32(&y).unwrap(),
        &cpu::upsample_nearest(&x, b * c, (h, w), (oh, ow)),
        0.0,
        0.0,
    );
}

/// Any output size (diffusers Upsample2D with output_size, odd latent sizes).
#[test]
fn upsample_any_size() {
    // Hand-checked: torch nearest [1, 2, 3] -> size 5 picks floor(i * 0.6) = 0 0 1 1 2.
    let gpu = gpu();
    let x = Tensor::from_f32(gpu, &[1, 1, 1, 3], &[1.0, 2.0, 3.0], DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    let y = upsample_nearest(&mut rec, &x, 1, 5).unwrap();
    assert_close(
        "nearest tiny",
        &rec.read_f32(&y).unwrap(),
        &[1., 1., 2., 2., 3.],
        0.0,
        0.0,
    );
    check_any([2, 3, 5, 7], 11, 13, 21); // 2x + 1 (odd skip sizes)
    check_any([1, 4, 6, 6], 12, 12, 22); // exact 2x: the 2x kernel
    check_any([2, 2, 7, 9], 7, 9, 23); // identity
    check_any([1, 3, 10, 10], 25, 31, 24);
}

/// Output [1, 34, 1000, 1000] f32 = 136 MB, over one binding: banded by planes.
#[test]
fn upsample_any_size_larger_than_one_binding() {
    check_any([1, 34, 500, 400], 1000, 1000, 25);
}

#[test]
fn upsample_f16() {
    let f16 = DType::F16;
    check_as([2, 3, 5, 6], 41, f16); // vec4
    check_as([1, 3, 7, 5], 42, f16); // odd W
    check_as([1, 19, 1000, 1000], 43, f16); // 152 MB output: banded
    check_any_as([2, 3, 5, 7], 11, 13, 44, f16);
    check_any_as([1, 3, 10, 10], 25, 31, 45, f16);
}
