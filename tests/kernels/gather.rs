use wgsd::gpu::{DType, Recorder, Tensor};
use wgsd::ops::gather::{cpu, gather_rows};

use crate::common::{Rng, assert_close, gpu};
use crate::f16data::stored;

fn check(rows: usize, row_shape: &[usize], idx: &[u32], seed: u64, dt: DType) {
    let gpu = gpu();
    let mut rng = Rng::new(seed);
    let row: usize = row_shape.iter().product();
    let src = stored(&rng.vec(rows * row), dt);
    let mut shape = vec![rows];
    shape.extend_from_slice(row_shape);
    let ts = Tensor::from_f32(gpu, &shape, &src, dt).unwrap();
    let mut rec = Recorder::new(gpu);
    let y = gather_rows(&mut rec, &ts, idx).unwrap();
    assert_eq!(y.shape()[0], idx.len());
    assert_eq!(&y.shape()[1..], row_shape);
    // A copy: exact.
    assert_close(
        &format!("gather {rows} rows {row_shape:?} {idx:?} {dt:?}"),
        &rec.read_f32(&y).unwrap(),
        &cpu::gather_rows(&src, row, idx),
        0.0,
        0.0,
    );
}

#[test]
fn gather_rows_matches_cpu() {
    check(3, &[77, 8], &[2, 0, 0, 1, 2], 1, DType::F32);
    check(1, &[5], &[0, 0, 0], 2, DType::F32);
    check(4, &[77, 1024], &[3, 1], 3, DType::F32);
    check(5, &[7, 3], &[4, 4, 0, 2], 4, DType::F16);
}

#[test]
fn gather_rows_refuses_bad_indices() {
    let gpu = gpu();
    let ts = Tensor::from_f32(gpu, &[2, 3], &[0.0; 6], DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    assert!(gather_rows(&mut rec, &ts, &[0, 2]).is_err());
    let y = gather_rows(&mut rec, &ts, &[]).unwrap();
    assert_eq!(y.shape(), &[0, 3]);
}
