use wgsd::gpu::{DType, Recorder, Tensor};
use wgsd::ops::concat::{concat, concat_channels, cpu};

use crate::common::{Rng, assert_close, gpu};
use crate::f16data::stored;

fn check(sa: &[usize], sb: &[usize], dim: usize, seed: u64) {
    check_as(sa, sb, dim, seed, DType::F32);
}

fn check_as(sa: &[usize], sb: &[usize], dim: usize, seed: u64, dt: DType) {
    let gpu = gpu();
    let mut rng = Rng::new(seed);
    let a = stored(&rng.vec(sa.iter().product()), dt);
    let b = stored(&rng.vec(sb.iter().product()), dt);
    let ta = Tensor::from_f32(gpu, sa, &a, dt).unwrap();
    let tb = Tensor::from_f32(gpu, sb, &b, dt).unwrap();
    let mut rec = Recorder::new(gpu);
    let y = concat(&mut rec, &ta, &tb, dim).unwrap();
    let inner: usize = sa[dim + 1..].iter().product();
    let mut want_shape = sa.to_vec();
    want_shape[dim] += sb[dim];
    assert_eq!((y.shape(), y.dtype()), (&want_shape[..], dt));
    // A copy: exact.
    assert_close(
        &format!("concat {sa:?} {sb:?} dim {dim}"),
        &rec.read_f32(&y).unwrap(),
        &cpu::concat_rows(&a, &b, sa[dim] * inner, sb[dim] * inner),
        0.0,
        0.0,
    );
}

/// Hand-checked: [[1, 2], [3, 4]] ++ [[5], [6]] on dim 1 -> [[1, 2, 5], [3, 4, 6]].
#[test]
fn concat_tiny() {
    let gpu = gpu();
    let a = Tensor::from_f32(gpu, &[2, 2], &[1., 2., 3., 4.], DType::F32).unwrap();
    let b = Tensor::from_f32(gpu, &[2, 1], &[5., 6.], DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    let y = concat(&mut rec, &a, &b, 1).unwrap();
    let z = concat(&mut rec, &a, &a, 0).unwrap();
    assert_close(
        "concat tiny",
        &rec.read_f32(&y).unwrap(),
        &[1., 2., 5., 3., 4., 6.],
        0.0,
        0.0,
    );
    assert_close(
        "concat dim0",
        &rec.read_f32(&z).unwrap(),
        &[1., 2., 3., 4., 1., 2., 3., 4.],
        0.0,
        0.0,
    );
    assert!(concat(&mut rec, &a, &b, 0).is_err());
    assert!(concat(&mut rec, &a, &b, 2).is_err());
}

#[test]
fn concat_shapes() {
    // Channel concat (copies).
    let gpu = gpu();
    let mut rng = Rng::new(1);
    let (a, b) = (rng.vec(2 * 3 * 5 * 7), rng.vec(2 * 4 * 5 * 7));
    let ta = Tensor::from_f32(gpu, &[2, 3, 5, 7], &a, DType::F32).unwrap();
    let tb = Tensor::from_f32(gpu, &[2, 4, 5, 7], &b, DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    let y = concat_channels(&mut rec, &ta, &tb).unwrap();
    assert_close(
        "concat_channels",
        &rec.read_f32(&y).unwrap(),
        &cpu::concat_rows(&a, &b, 105, 140),
        0.0,
        0.0,
    );
    check(&[2, 640, 12, 12], &[2, 320, 12, 12], 1, 2);
    check(&[1, 1, 1, 1], &[1, 1, 1, 1], 1, 3);
    // Many outer rows (kernel).
    check(&[17, 3, 5], &[17, 2, 5], 1, 4);
    check(&[300, 77, 7], &[300, 77, 5], 2, 5);
    check(&[70_000, 3], &[70_000, 2], 1, 6); // odd rows
    check(&[20, 0, 3], &[20, 2, 3], 1, 7); // empty side
}

/// Outputs of 144 MB: over one binding, by copies (dim 1, batch 1) and by kernel bands
/// (140 k workgroups: folded grid).
#[test]
fn concat_larger_than_one_binding() {
    check(&[1, 5, 2000, 2000], &[1, 4, 2000, 2000], 1, 8);
    check(&[36_000, 600], &[36_000, 400], 1, 9);
}

/// f16 activations: copies where rows stay 4-byte aligned, the kernel for odd widths.
#[test]
fn concat_f16() {
    let f16 = DType::F16;
    check_as(&[2, 3, 5, 7], &[2, 4, 5, 7], 1, 31, f16); // odd rows: kernel
    check_as(&[1, 4, 6, 6], &[1, 2, 6, 6], 1, 32, f16); // copies
    check_as(&[40, 3], &[40, 5], 1, 33, f16); // many rows: kernel
    check_as(&[3, 77, 64], &[3, 77, 32], 2, 34, f16);
    check_as(&[36_000, 1200], &[36_000, 800], 1, 35, f16); // 144 MB: bands
    let gpu = gpu();
    let a = Tensor::from_f32(gpu, &[1, 2], &[1.0, 2.0], DType::F16).unwrap();
    let b = Tensor::from_f32(gpu, &[1, 2], &[1.0, 2.0], DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    assert!(concat(&mut rec, &a, &b, 1).is_err());
}
