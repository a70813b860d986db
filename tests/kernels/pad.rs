use wgsd::gpu::{DType, Recorder, Tensor};
use wgsd::ops::conv2d::{Conv2dArgs, conv2d};
use wgsd::ops::pad::{cpu, pad_circular};

use crate::common::{Rng, assert_close, gpu};
use crate::f16data::stored;

fn check(shape: [usize; 4], pad: usize, seed: u64, dt: DType) {
    let gpu = gpu();
    let mut rng = Rng::new(seed);
    let [b, c, h, w] = shape;
    let x = stored(&rng.vec(b * c * h * w), dt);
    let tx = Tensor::from_f32(gpu, &shape, &x, dt).unwrap();
    let mut rec = Recorder::new(gpu);
    let y = pad_circular(&mut rec, &tx, pad).unwrap();
    assert_eq!(
        (y.shape(), y.dtype()),
        (&[b, c, h + 2 * pad, w + 2 * pad][..], dt)
    );
    // A gather: exact.
    assert_close(
        &format!("pad_circular {shape:?} pad {pad} {dt:?}"),
        &rec.read_f32(&y).unwrap(),
        &cpu::pad_circular(&x, b * c, h, w, pad),
        0.0,
        0.0,
    );
}

/// Hand-checked: [[1, 2], [3, 4]] padded by 1 wraps the last row/column to the front.
#[test]
fn pad_circular_tiny() {
    let gpu = gpu();
    let x = Tensor::from_f32(gpu, &[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0], DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    let y = pad_circular(&mut rec, &x, 1).unwrap();
    let want = [
        4., 3., 4., 3., //
        2., 1., 2., 1., //
        4., 3., 4., 3., //
        2., 1., 2., 1.,
    ];
    assert_close("pad tiny", &rec.read_f32(&y).unwrap(), &want, 0.0, 0.0);
    // torch refuses a circular pad larger than the input; so does wgsd.
    assert!(pad_circular(&mut rec, &x, 3).is_err());
    let flat = Tensor::from_f32(gpu, &[4], &[0.0; 4], DType::F32).unwrap();
    assert!(pad_circular(&mut rec, &flat, 1).is_err());
}

#[test]
fn pad_circular_shapes_and_f16() {
    check([1, 1, 1, 1], 1, 1, DType::F32);
    check([2, 3, 5, 7], 1, 2, DType::F32);
    check([1, 4, 9, 3], 3, 3, DType::F32);
    check([2, 320, 12, 16], 1, 4, DType::F32);
    check([2, 8, 17, 33], 1, 5, DType::F16);
}

/// [1, 9, 1000, 1000] pads to 144 MB, over one binding: banded by planes.
#[test]
fn pad_circular_larger_than_one_binding() {
    check([1, 9, 1000, 1000], 1, 6, DType::F32);
}

/// PyTorch's `Conv2d(padding_mode="circular")` computed directly with wrapped indices
/// (an independent reference for pad + unpadded conv, as `models::nn::Conv2d` runs it).
fn circular_conv_reference(
    x: &[f32],
    [nb, cin, h, w]: [usize; 4],
    wt: &[f32],
    [cout, _, k, _]: [usize; 4],
    bias: &[f32],
    stride: usize,
    pad: usize,
) -> Vec<f32> {
    let ho = (h + 2 * pad - k) / stride + 1;
    let wo = (w + 2 * pad - k) / stride + 1;
    let mut out = Vec::with_capacity(nb * cout * ho * wo);
    for b in 0..nb {
        for co in 0..cout {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut acc = f64::from(bias[co]);
                    for ci in 0..cin {
                        for ky in 0..k {
                            let iy = (oy * stride + ky + h - pad) % h;
                            for kx in 0..k {
                                let ix = (ox * stride + kx + w - pad) % w;
                                acc += f64::from(x[((b * cin + ci) * h + iy) * w + ix])
                                    * f64::from(wt[((co * cin + ci) * k + ky) * k + kx]);
                            }
                        }
                    }
                    out.push(acc as f32);
                }
            }
        }
    }
    out
}

#[test]
fn circular_conv_matches_wrapped_reference() {
    let gpu = gpu();
    for (seed, (x_shape, cout, stride)) in [
        ([1, 3, 8, 8], 5, 1),
        ([2, 16, 9, 12], 8, 1),
        ([1, 8, 16, 16], 4, 2),
    ]
    .into_iter()
    .enumerate()
    {
        let mut rng = Rng::new(100 + seed as u64);
        let [nb, cin, h, w] = x_shape;
        let w_shape = [cout, cin, 3, 3];
        let x = rng.vec(nb * cin * h * w);
        let wt = rng.vec(cout * cin * 9);
        let bias = rng.vec(cout);
        let tx = Tensor::from_f32(gpu, &x_shape, &x, DType::F32).unwrap();
        let tw = Tensor::from_f32(gpu, &w_shape, &wt, DType::F32).unwrap();
        let tb = Tensor::from_f32(gpu, &[cout], &bias, DType::F32).unwrap();
        let mut rec = Recorder::new(gpu);
        let padded = pad_circular(&mut rec, &tx, 1).unwrap();
        let y = conv2d(
            &mut rec,
            &padded,
            &tw,
            Some(&tb),
            Conv2dArgs::new(stride, 0),
            None,
        )
        .unwrap();
        let want = circular_conv_reference(&x, x_shape, &wt, w_shape, &bias, stride, 1);
        assert_close(
            &format!("circular conv {x_shape:?} stride {stride}"),
            &rec.read_f32(&y).unwrap(),
            &want,
            1e-4,
            1e-4,
        );
    }
}
