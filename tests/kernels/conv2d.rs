use wgsd::gpu::{DType, Recorder, Tensor};
use wgsd::ops::conv2d::{self, Conv2dArgs, Conv2dVariant, cpu};
use wgsd::ops::variant::KernelVariant;

use crate::common::{Rng, assert_close, gpu};

/// f32 weights: f32 accumulation over K <= a few thousand terms of size ~1.
const F32_ATOL: f32 = 2e-5;
const F32_RTOL: f32 = 1e-5;
/// An f16 output adds its rounding (at most 2^-11 relative); the inputs are f16-rounded in the
/// reference too, so only the output rounding is new.
const F16_RTOL: f32 = 4.9e-4;

#[derive(Clone, Copy)]
struct Case {
    x: [usize; 4],
    w: [usize; 4],
    args: Conv2dArgs,
    bias: bool,
    res: bool,
    wt: DType,
    /// Activation dtype (x, residual, output).
    at: DType,
}

fn case(x: [usize; 4], cout: usize, k: usize, stride: usize, padding: usize) -> Case {
    Case {
        x,
        w: [cout, x[1], k, k],
        args: Conv2dArgs::new(stride, padding),
        bias: true,
        res: false,
        wt: DType::F32,
        at: DType::F32,
    }
}

/// Runs `c` with every supported variant and compares with the CPU reference.
fn check(c: &Case, seed: u64) {
    check_variants(c, seed, &Conv2dVariant::all_supported(gpu()));
}

fn check_variants(c: &Case, seed: u64, variants: &[Conv2dVariant]) {
    let gpu = gpu();
    let mut rng = Rng::new(seed);
    let [nb, _, h, wd] = c.x;
    let [cout, _, kh, kw] = c.w;
    let ho = c.args.out_size(h, kh).unwrap();
    let wo = c.args.out_size(wd, kw).unwrap();
    // The reference sees exactly the (f16-rounded) values the GPU sees.
    let round = |mut v: Vec<f32>, dt: DType| {
        if dt == DType::F16 {
            v.iter_mut()
                .for_each(|v| *v = half::f16::from_f32(*v).to_f32());
        }
        v
    };
    let x = round(rng.vec(c.x.iter().product()), c.at);
    let w = round(rng.vec(c.w.iter().product()), c.wt);
    let bias = c.bias.then(|| rng.vec(cout));
    let res = c.res.then(|| round(rng.vec(nb * cout * ho * wo), c.at));
    let want = cpu::conv2d(&x, c.x, &w, c.w, bias.as_deref(), c.args, res.as_deref());

    let tx = Tensor::from_f32(gpu, &c.x, &x, c.at).unwrap();
    let tw = Tensor::from_f32(gpu, &c.w, &w, c.wt).unwrap();
    let tb = bias
        .as_ref()
        .map(|b| Tensor::from_f32(gpu, &[cout], b, DType::F32).unwrap());
    let tr = res
        .as_ref()
        .map(|r| Tensor::from_f32(gpu, &[nb, cout, ho, wo], r, c.at).unwrap());
    for &variant in variants {
        let mut rec = Recorder::new(gpu);
        let out = conv2d::conv2d_with(
            &mut rec,
            &tx,
            &tw,
            tb.as_ref(),
            c.args,
            tr.as_ref(),
            variant,
        )
        .unwrap();
        assert_eq!(out.shape(), [nb, cout, ho, wo]);
        assert_eq!(out.dtype(), c.at);
        let got = rec.read_f32(&out).unwrap();
        let what = format!(
            "conv2d {variant:?} x{:?} w{:?} {:?} act {:?} weight {:?} bias={} res={}",
            c.x, c.w, c.args, c.at, c.wt, c.bias, c.res
        );
        // f16 weights are exact in the reference too; only the f32 sum order differs.
        let rtol = if c.at == DType::F16 {
            F16_RTOL
        } else {
            F32_RTOL
        };
        assert_close(&what, &got, &want, F32_ATOL, rtol);
    }
}

#[test]
fn conv2d_variants_exist() {
    let gpu = gpu();
    let all = Conv2dVariant::all_supported(gpu);
    assert!(all.contains(&Conv2dVariant::Tiled));
    assert!(all.contains(&Conv2dVariant::Tiled128));
    if gpu.caps.is_cpu && gpu.caps.subgroup {
        assert!(all.contains(&Conv2dVariant::Subgroup), "{:?}", gpu.caps);
    }
}

/// 1 input channel, 3x3 ones kernel, padding 1 on a 2x2 image: every output sums the
/// whole image (4 pixels: 1+2+3+4 = 10) plus bias 0.5; with stride 2 only (0,0) is left.
#[test]
fn conv2d_hand_checked() {
    let gpu = gpu();
    let x = Tensor::from_f32(gpu, &[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0], DType::F32).unwrap();
    let w = Tensor::from_f32(gpu, &[1, 1, 3, 3], &[1.0; 9], DType::F32).unwrap();
    let b = Tensor::from_f32(gpu, &[1], &[0.5], DType::F32).unwrap();
    // 1x1 kernel, 2 outputs: [x, -2x].
    let w1 = Tensor::from_f32(gpu, &[2, 1, 1, 1], &[1.0, -2.0], DType::F32).unwrap();
    for variant in Conv2dVariant::all_supported(gpu) {
        let mut rec = Recorder::new(gpu);
        let y = conv2d::conv2d_with(
            &mut rec,
            &x,
            &w,
            Some(&b),
            Conv2dArgs::new(1, 1),
            None,
            variant,
        )
        .unwrap();
        let y2 = conv2d::conv2d_with(
            &mut rec,
            &x,
            &w,
            Some(&b),
            Conv2dArgs::new(2, 1),
            None,
            variant,
        )
        .unwrap();
        let y3 = conv2d::conv2d_with(
            &mut rec,
            &x,
            &w1,
            None,
            Conv2dArgs::new(1, 0),
            None,
            variant,
        )
        .unwrap();
        assert_eq!(rec.read_f32(&y).unwrap(), vec![10.5; 4], "{variant:?}");
        assert_eq!(y2.shape(), [1, 1, 1, 1]);
        assert_eq!(rec.read_f32(&y2).unwrap(), vec![10.5], "{variant:?}");
        assert_eq!(
            rec.read_f32(&y3).unwrap(),
            vec![1.0, 2.0, 3.0, 4.0, -2.0, -4.0, -6.0, -8.0],
            "{variant:?}"
        );
    }
}

#[test]
fn conv2d_3x3_shapes() {
    check(&case([1, 3, 5, 7], 4, 3, 1, 1), 1);
    check(&case([2, 4, 13, 9], 33, 3, 1, 1), 2);
    check(&case([1, 33, 8, 8], 8, 3, 1, 1), 3);
    check(&case([1, 17, 11, 6], 70, 3, 1, 0), 4);
    check(&case([2, 64, 16, 16], 64, 3, 1, 1), 5);
    // One past the 128x128 tile in channels and pixels (2 x 65 pixels), K = 81.
    check(&case([2, 9, 13, 5], 130, 3, 1, 1), 6);
}

#[test]
fn conv2d_stride2_odd() {
    check(&case([1, 5, 13, 9], 6, 3, 2, 1), 11);
    check(&case([2, 9, 7, 5], 17, 3, 2, 0), 12);
    check(&case([1, 16, 16, 16], 32, 3, 2, 1), 13);
}

#[test]
fn conv2d_1x1_and_general() {
    check(&case([2, 33, 5, 7], 3, 1, 1, 0), 21);
    check(&case([1, 320, 4, 4], 40, 1, 1, 0), 22);
    // General sizes the launcher allows: 1x1 with padding, 5x5, stride 3.
    check(&case([1, 4, 6, 5], 5, 1, 1, 1), 23);
    check(&case([1, 3, 11, 10], 4, 5, 3, 2), 24);
    let mut c = case([1, 2, 9, 8], 3, 3, 1, 1);
    c.w = [3, 2, 3, 1];
    check(&c, 25);
}

#[test]
fn conv2d_bias_residual() {
    let mut c = case([2, 12, 9, 13], 20, 3, 1, 1);
    c.res = true;
    check(&c, 31);
    c.bias = false;
    check(&c, 32);
    let mut c = case([1, 7, 6, 6], 5, 1, 1, 0);
    c.bias = false;
    check(&c, 33);
}

#[test]
fn conv2d_f16_weights() {
    let mut c = case([2, 24, 10, 7], 36, 3, 1, 1);
    c.wt = DType::F16;
    c.res = true;
    check(&c, 41);
    let mut c = case([1, 9, 9, 9], 4, 3, 2, 1);
    c.wt = DType::F16;
    check(&c, 42);
}

/// x [1, 40, 1000, 900] f32 is 144 MB, over one 128 MiB binding: the launcher splits
/// the input channels into groups and accumulates. Cout 2 keeps the FLOPs low. Every
/// variant runs the 1x1 case; the 3x3 case runs on the adapter's own variant (the tiled
/// kernel's 64-channel tile would do 32x the work on lavapipe).
#[test]
fn conv2d_larger_than_one_binding() {
    let mut c = case([1, 40, 1000, 900], 2, 1, 1, 0);
    c.res = true;
    check(&c, 51);
    let mut c = case([1, 40, 1000, 900], 2, 3, 1, 1);
    c.res = true;
    check_variants(&c, 52, &[Conv2dVariant::auto(gpu())]);
}

/// Every variant x {f32, f16} activations x {f32, f16} weights: 3x3 (stride 1 and 2)
/// and 1x1, channel and pixel counts on and off the tiles, with bias and residual.
#[test]
fn conv2d_activation_and_weight_dtypes() {
    let shapes = [
        case([2, 9, 13, 5], 130, 3, 1, 1),
        case([1, 16, 16, 16], 32, 3, 2, 1),
        case([2, 33, 5, 7], 3, 1, 1, 0),
        case([1, 64, 8, 8], 64, 3, 1, 1),
    ];
    for at in [DType::F32, DType::F16] {
        for wt in [DType::F32, DType::F16] {
            for (i, s) in shapes.iter().enumerate() {
                let c = Case {
                    at,
                    wt,
                    res: i % 2 == 0,
                    bias: i != 3,
                    ..*s
                };
                check(&c, 60 + i as u64);
            }
        }
    }
}

/// f16 x [1, 75, 1000, 900] is 135 MB, over one 128 MiB binding: the input channels are
/// split into groups whose partial sums go through an f32 scratch, so the f16 output is
/// rounded once (as exact as the f32 path).
#[test]
fn conv2d_f16_larger_than_one_binding() {
    let mut c = case([1, 75, 1000, 900], 2, 1, 1, 0);
    c.res = true;
    c.at = DType::F16;
    c.wt = DType::F16;
    check(&c, 71);
    let mut c = case([1, 75, 1000, 900], 2, 3, 1, 1);
    c.at = DType::F16;
    check_variants(&c, 72, &[Conv2dVariant::auto(gpu())]);
}

/// diffusers' `Downsample2D(padding=0)`: `F.pad(x, (0, 1, 0, 1))` then a stride-2 3x3
/// convolution without padding (the VAE encoder's downsamplers), as `pad_end = 1`.
#[test]
fn conv2d_stride2_pad_end() {
    let args = Conv2dArgs {
        pad_end: 1,
        ..Conv2dArgs::new(2, 0)
    };
    // The reference's `pad_end` equals convolving an explicitly zero-padded input.
    let (b, c, h, w, co) = (2, 3, 6, 5, 4);
    let mut rng = Rng::new(41);
    let x = rng.vec(b * c * h * w);
    let wt = rng.vec(co * c * 9);
    let mut padded = vec![0f32; b * c * (h + 1) * (w + 1)];
    for p in 0..b * c {
        for y in 0..h {
            for xx in 0..w {
                padded[(p * (h + 1) + y) * (w + 1) + xx] = x[(p * h + y) * w + xx];
            }
        }
    }
    let got = cpu::conv2d(&x, [b, c, h, w], &wt, [co, c, 3, 3], None, args, None);
    let want = cpu::conv2d(
        &padded,
        [b, c, h + 1, w + 1],
        &wt,
        [co, c, 3, 3],
        None,
        Conv2dArgs::new(2, 0),
        None,
    );
    assert_eq!(args.out_size(h, 3), Some(3));
    assert_eq!(args.out_size(w, 3), Some(2));
    assert_close("pad_end reference", &got, &want, 0.0, 0.0);
    for (x, cout, seed) in [
        ([1, 8, 16, 16], 8, 42),
        ([2, 5, 13, 9], 6, 43),
        ([1, 16, 64, 64], 16, 44),
    ] {
        check(
            &Case {
                args,
                ..case(x, cout, 3, 2, 0)
            },
            seed,
        );
    }
}

/// The subgroup variant's 3x3 stride-1 kernel (`conv3x3_subgroup.wgsl`): input channels
/// off the 8-channel block (the lane tail), output channels off every channel tile
/// (4, 8, 16, 32), odd heights, widths 4 to 40 (8 pixels per lane, or 4), batch 2, every activation x weight
/// dtype with bias and residual, and input-channel groups (f32 and the f16 scratch).
#[test]
fn conv2d_3x3_subgroup_kernel() {
    let shapes = [
        case([2, 12, 5, 8], 40, 3, 1, 1),
        case([1, 8, 3, 16], 3, 3, 1, 1),
        case([1, 4, 7, 24], 70, 3, 1, 1),
        case([2, 20, 4, 40], 9, 3, 1, 1),
        case([1, 32, 9, 8], 16, 3, 1, 1),
        // 4 and 12 wide: one vec4 of pixels per lane.
        case([2, 16, 4, 4], 33, 3, 1, 1),
        case([1, 8, 6, 12], 8, 3, 1, 1),
    ];
    let v = [Conv2dVariant::auto(gpu())];
    for (i, s) in shapes.iter().enumerate() {
        assert!(conv2d::fast3x3(s.x[1], s.x[3], 3, 3, s.args), "{:?}", s.x);
        for (j, (at, wt)) in [
            (DType::F32, DType::F32),
            (DType::F32, DType::F16),
            (DType::F16, DType::F32),
            (DType::F16, DType::F16),
        ]
        .into_iter()
        .enumerate()
        {
            let c = Case {
                at,
                wt,
                res: (i + j) % 2 == 0,
                bias: j != 3,
                ..*s
            };
            check_variants(&c, 90 + (4 * i + j) as u64, &v);
        }
    }
    // 144 MB f32 / 137 MB f16 inputs: input-channel groups, each a pass of this kernel.
    let mut c = case([1, 40, 1000, 904], 2, 3, 1, 1);
    c.res = true;
    assert!(conv2d::fast3x3(40, 904, 3, 3, c.args));
    check_variants(&c, 110, &v);
    let mut c = case([1, 76, 1000, 904], 2, 3, 1, 1);
    c.at = DType::F16;
    c.wt = DType::F16;
    check_variants(&c, 111, &v);
}

/// 1x1 convolutions on the subgroup adapter run as products on the matmul kernel
/// (`matmul::conv1x1`: the weight shared by the batch, bias per output channel):
/// channels and pixels off the tiles, batch 2, residual, f32 and f16, and one shape big
/// enough for the large tile.
#[test]
fn conv2d_1x1_as_matmul() {
    let gpu = gpu();
    let v = [Conv2dVariant::auto(gpu)];
    let shapes = [
        case([2, 12, 5, 4], 7, 1, 1, 0),
        case([1, 320, 4, 4], 40, 1, 1, 0),
        case([1, 256, 64, 64], 256, 1, 1, 0),
    ];
    for (i, s) in shapes.iter().enumerate() {
        for (j, dt) in [DType::F32, DType::F16].into_iter().enumerate() {
            let c = Case {
                at: dt,
                wt: dt,
                res: (i + j) % 2 == 1,
                bias: i != 1 || j == 0,
                ..*s
            };
            if gpu.caps.is_cpu && gpu.caps.subgroup {
                let x = Tensor::from_f32(gpu, &c.x, &vec![0.0; c.x.iter().product()], dt).unwrap();
                let w = Tensor::from_f32(gpu, &c.w, &vec![0.0; c.w.iter().product()], dt).unwrap();
                assert!(wgsd::ops::matmul::conv1x1_ok(gpu, &x, &w), "{:?}", c.x);
            }
            check_variants(&c, 120 + (2 * i + j) as u64, &v);
        }
    }
}
