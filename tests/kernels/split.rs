use wgsd::gpu::{DType, Recorder, Tensor};
use wgsd::ops::split::{cpu, split_last3};

use crate::common::{Rng, assert_close, gpu};

fn check(rows: usize, c: usize, dtype: DType, seed: u64) {
    let gpu = gpu();
    let mut rng = Rng::new(seed);
    let x = rng.vec(rows * 3 * c);
    // What the GPU holds (f16 rounding happens at upload).
    let x = match dtype {
        DType::F16 => x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect(),
        _ => x,
    };
    let tx = Tensor::from_f32(gpu, &[rows, 3 * c], &x, dtype).unwrap();
    let mut rec = Recorder::new(gpu);
    let parts = split_last3(&mut rec, &tx).unwrap();
    let want = cpu::split_last3(&x, c);
    for (k, (got, want)) in parts.iter().zip(&want).enumerate() {
        assert_eq!(got.shape(), &[rows, c]);
        assert_eq!(got.dtype(), dtype);
        // A copy: exact.
        assert_close(
            &format!("split {rows}x3x{c} {dtype:?} part {k}"),
            &rec.read_f32(got).unwrap(),
            want,
            0.0,
            0.0,
        );
    }
}

#[test]
fn split_shapes_f32_and_f16() {
    for (rows, c) in [(1, 1), (7, 5), (77, 64), (300, 40)] {
        check(rows, c, DType::F32, rows as u64);
    }
    for (rows, c) in [(1, 2), (9, 6), (77, 64), (300, 40)] {
        check(rows, c, DType::F16, 100 + rows as u64);
    }
}

#[test]
fn split_refuses_parts_of_half_words() {
    let gpu = gpu();
    let t = Tensor::from_f32(gpu, &[2, 9], &[0.0; 18], DType::F16).unwrap();
    let mut rec = Recorder::new(gpu);
    assert!(split_last3(&mut rec, &t).is_err());
    let t = Tensor::from_f32(gpu, &[2, 8], &[0.0; 16], DType::F32).unwrap();
    assert!(split_last3(&mut rec, &t).is_err());
}

/// x larger than one 128 MiB binding: split in bands of rows, still exact.
#[test]
fn split_larger_than_one_binding() {
    let gpu = gpu();
    let c = 1024;
    let rows = gpu.max_binding_elems(DType::F32) / (3 * c) + 17;
    check(rows, c, DType::F32, 7);
}
