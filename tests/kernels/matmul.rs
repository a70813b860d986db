//! `linear` and `matmul` against the f64 CPU reference, for every kernel variant the
//! adapter supports (both on lavapipe).
//!
//! Tolerance: |got - want| <= 1e-5 * sqrt(K) + 1e-5 * |want| (f32 accumulation over K
//! terms of size <= 1). f16 weights and f16 activation inputs are compared against a
//! reference computed from the same f16-rounded values (the kernel widens them exactly,
//! so the f32 bound applies); an f16 output adds its rounding, at most 2^-11 relative,
//! so those cases allow 4.9e-4 * |want|.

use wgsd::gpu::{DType, Recorder, Tensor};
use wgsd::ops::matmul::{self, MatmulVariant, cpu};
use wgsd::ops::variant::KernelVariant;

use crate::common::{Rng, assert_close, gpu};

fn variants() -> Vec<MatmulVariant> {
    let gpu = gpu();
    let v = MatmulVariant::all_supported(gpu);
    if gpu.caps.is_cpu && gpu.caps.subgroup {
        assert!(
            v.contains(&MatmulVariant::Subgroup),
            "the subgroup kernel must run on {} (caps {:?})",
            gpu.info.name,
            gpu.caps
        );
    }
    assert!(v.contains(&MatmulVariant::Tiled));
    assert!(v.contains(&MatmulVariant::Tiled128));
    v
}

/// The variants for the banded (>128 MiB) cases: banding happens in the launcher and
/// only depends on the tile size, so the 64x64 fallback (same banding as before, and
/// slow on lavapipe) is left to the other tests.
fn banded_variants() -> Vec<MatmulVariant> {
    variants()
        .into_iter()
        .filter(|&v| v != MatmulVariant::Tiled)
        .collect()
}

fn atol(k: usize) -> f32 {
    1e-5 * (k as f32).sqrt().max(1.0)
}

/// Rounds through f16, as an f16 weight upload does.
fn f16_round(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
}

/// Relative tolerance for an output stored as `at`.
fn rtol(at: DType) -> f32 {
    if at == DType::F16 { 4.9e-4 } else { 1e-5 }
}

/// `v` as a tensor of dtype `dt` rounds through f16 when dt is F16.
fn rounded(v: Vec<f32>, dt: DType) -> Vec<f32> {
    if dt == DType::F16 { f16_round(&v) } else { v }
}

struct Case {
    m: usize,
    n: usize,
    k: usize,
    /// Activation dtype (x, residual, output).
    at: DType,
    wt: DType,
    bias: bool,
    res: bool,
}

impl Case {
    fn new(m: usize, n: usize, k: usize) -> Case {
        Case {
            m,
            n,
            k,
            at: DType::F32,
            wt: DType::F32,
            bias: true,
            res: false,
        }
    }
}

fn check_linear(c: &Case, variant: MatmulVariant, seed: u64) {
    let gpu = gpu();
    let mut rng = Rng::new(seed);
    let x = rounded(rng.vec(c.m * c.k), c.at);
    let w = rounded(rng.vec(c.n * c.k), c.wt);
    let bias = rng.vec(c.n);
    let res = rounded(rng.vec(c.m * c.n), c.at);
    // x as [2, m/2, K] when m is even, to exercise leading dimensions.
    let x_shape = if c.m.is_multiple_of(2) && c.m > 0 {
        vec![2, c.m / 2, c.k]
    } else {
        vec![c.m, c.k]
    };
    let mut o_shape = x_shape.clone();
    *o_shape.last_mut().unwrap() = c.n;
    let tx = Tensor::from_f32(gpu, &x_shape, &x, c.at).unwrap();
    let tw = Tensor::from_f32(gpu, &[c.n, c.k], &w, c.wt).unwrap();
    let tb = Tensor::from_f32(gpu, &[c.n], &bias, DType::F32).unwrap();
    let tr = Tensor::from_f32(gpu, &o_shape, &res, c.at).unwrap();
    let mut rec = Recorder::new(gpu);
    let out = matmul::linear_with(
        &mut rec,
        &tx,
        &tw,
        c.bias.then_some(&tb),
        c.res.then_some(&tr),
        variant,
    )
    .unwrap();
    assert_eq!(out.shape(), o_shape.as_slice());
    assert_eq!(out.dtype(), c.at);
    let got = rec.read_f32(&out).unwrap();
    let want = cpu::linear(
        &x,
        &w,
        c.bias.then_some(&bias[..]),
        c.res.then_some(&res[..]),
        c.m,
        c.n,
        c.k,
    );
    let what = format!(
        "linear {variant:?} m={} n={} k={} act {:?} weight {:?} bias={} res={}",
        c.m, c.n, c.k, c.at, c.wt, c.bias, c.res
    );
    assert_close(&what, &got, &want, atol(c.k), rtol(c.at));
}

/// The fused GEGLU linear against `cpu::linear_geglu`: w `[2I, K]`, out `[.., I]`.
fn check_geglu(c: &Case, variant: MatmulVariant, seed: u64) {
    let gpu = gpu();
    let mut rng = Rng::new(seed);
    let (m, i, k) = (c.m, c.n, c.k);
    let x = rounded(rng.vec(m * k), c.at);
    let w = rounded(rng.vec(2 * i * k), c.wt);
    let bias = rng.vec(2 * i);
    let tx = Tensor::from_f32(gpu, &[m, k], &x, c.at).unwrap();
    let tw = Tensor::from_f32(gpu, &[2 * i, k], &w, c.wt).unwrap();
    let tb = Tensor::from_f32(gpu, &[2 * i], &bias, DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    let out =
        matmul::linear_geglu_with(&mut rec, &tx, &tw, c.bias.then_some(&tb), variant).unwrap();
    assert_eq!(out.shape(), [m, i]);
    assert_eq!(out.dtype(), c.at);
    let got = rec.read_f32(&out).unwrap();
    let want = cpu::linear_geglu(&x, &w, c.bias.then_some(&bias[..]), m, i, k);
    let what = format!(
        "linear_geglu {variant:?} m={m} i={i} k={k} act {:?} weight {:?} bias={}",
        c.at, c.wt, c.bias
    );
    assert_close(&what, &got, &want, atol(k), rtol(c.at));
}

fn check_matmul(batch: usize, m: usize, k: usize, n: usize, variant: MatmulVariant, seed: u64) {
    check_matmul_dt(batch, m, k, n, variant, DType::F32, DType::F32, seed);
}

#[allow(clippy::too_many_arguments)]
fn check_matmul_dt(
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    variant: MatmulVariant,
    at: DType,
    wt: DType,
    seed: u64,
) {
    let gpu = gpu();
    let mut rng = Rng::new(seed);
    let a = rounded(rng.vec(batch * m * k), at);
    let b = rounded(rng.vec(batch * k * n), wt);
    let (sa, sb) = if batch == 1 {
        (vec![m, k], vec![k, n])
    } else {
        (vec![batch, m, k], vec![batch, k, n])
    };
    let ta = Tensor::from_f32(gpu, &sa, &a, at).unwrap();
    let tb = Tensor::from_f32(gpu, &sb, &b, wt).unwrap();
    let mut rec = Recorder::new(gpu);
    let out = matmul::matmul_with(&mut rec, &ta, &tb, variant).unwrap();
    assert_eq!(out.dtype(), at);
    let got = rec.read_f32(&out).unwrap();
    let want = cpu::matmul(&a, &b, batch, m, k, n);
    let what = format!("matmul {variant:?} b={batch} m={m} k={k} n={n} act {at:?} weight {wt:?}");
    assert_close(&what, &got, &want, atol(k), rtol(at));
}

#[test]
fn hand_checked() {
    let gpu = gpu();
    for v in variants() {
        let x = Tensor::from_f32(gpu, &[2, 3], &[1., 2., 3., 4., 5., 6.], DType::F32).unwrap();
        let w = Tensor::from_f32(gpu, &[2, 3], &[1., 0., -1., 0.5, 1., 2.], DType::F32).unwrap();
        let b = Tensor::from_f32(gpu, &[2], &[10., 20.], DType::F32).unwrap();
        let r = Tensor::from_f32(gpu, &[2, 2], &[0., 1., 2., 3.], DType::F32).unwrap();
        let mut rec = Recorder::new(gpu);
        let y = matmul::linear_with(&mut rec, &x, &w, Some(&b), Some(&r), v).unwrap();
        // [1-3+10, 0.5+2+6+20 +1; 4-6+10 +2, 2+5+12+20 +3]
        assert_eq!(rec.read_f32(&y).unwrap(), vec![8.0, 29.5, 10.0, 42.0]);

        let a = Tensor::from_f32(gpu, &[2, 2], &[1., 2., 3., 4.], DType::F32).unwrap();
        let bm = Tensor::from_f32(gpu, &[2, 2], &[5., 6., 7., 8.], DType::F32).unwrap();
        let p = matmul::matmul_with(&mut rec, &a, &bm, v).unwrap();
        assert_eq!(rec.read_f32(&p).unwrap(), vec![19.0, 22.0, 43.0, 50.0]);
    }
}

#[test]
fn linear_shapes() {
    let dims = [
        (1, 1, 1),
        (7, 5, 3),
        (77, 130, 64),
        (130, 333, 77),
        (64, 128, 256),
        (33, 7, 1000),
        (256, 96, 8),
    ];
    for v in variants() {
        for (i, &(m, n, k)) in dims.iter().enumerate() {
            for (j, (bias, res)) in [(false, false), (true, false), (true, true)]
                .into_iter()
                .enumerate()
            {
                let c = Case {
                    m,
                    n,
                    k,
                    at: DType::F32,
                    wt: DType::F32,
                    bias,
                    res,
                };
                check_linear(&c, v, (i * 3 + j) as u64);
            }
        }
    }
}

#[test]
fn linear_f16_weights() {
    let gpu = gpu();
    assert!(gpu.caps.f16, "{} lacks SHADER_F16", gpu.info.name);
    for v in variants() {
        for (i, &(m, n, k)) in [(1, 1, 1), (77, 130, 64), (130, 333, 77), (40, 64, 1280)]
            .iter()
            .enumerate()
        {
            let c = Case {
                m,
                n,
                k,
                at: DType::F32,
                wt: DType::F16,
                bias: true,
                res: i % 2 == 1,
            };
            check_linear(&c, v, 100 + i as u64);
        }
    }
}

#[test]
fn matmul_shapes() {
    for v in variants() {
        check_matmul(1, 1, 1, 1, v, 200);
        check_matmul(1, 77, 130, 333, v, 201);
        check_matmul(3, 7, 5, 9, v, 202);
        check_matmul(4, 64, 40, 77, v, 203);
        check_matmul(2, 130, 64, 128, v, 204);
        check_matmul(2, 129, 9, 257, v, 205); // one past the 128 tile in M and N
    }
}

#[test]
fn shape_errors() {
    let gpu = gpu();
    let x = Tensor::from_f32(gpu, &[2, 3], &[0.0; 6], DType::F32).unwrap();
    let w = Tensor::from_f32(gpu, &[2, 4], &[0.0; 8], DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    assert!(matmul::linear(&mut rec, &x, &w, None, None).is_err());
    assert!(matmul::matmul(&mut rec, &x, &w).is_err());
    let w = Tensor::from_f32(gpu, &[4, 3], &[0.0; 12], DType::F32).unwrap();
    let b = Tensor::from_f32(gpu, &[3], &[0.0; 3], DType::F32).unwrap();
    assert!(matmul::linear(&mut rec, &x, &w, Some(&b), None).is_err());
    assert!(matmul::linear(&mut rec, &x, &w, None, Some(&x)).is_err());
}

/// Output [36864, 1024] f32 = 151 MB (and the residual too) exceed one 128 MiB binding:
/// the launcher bands the rows.
#[test]
fn linear_output_larger_than_one_binding() {
    for (i, v) in banded_variants().into_iter().enumerate() {
        let c = Case {
            m: 36864,
            n: 1024,
            k: 16,
            at: DType::F32,
            wt: DType::F32,
            bias: true,
            res: i == 0,
        };
        check_linear(&c, v, 300 + i as u64);
    }
}

/// An f16 weight [70000, 1000] = 140 MB exceeds one binding: the launcher bands N.
#[test]
fn linear_weight_larger_than_one_binding() {
    for (i, v) in banded_variants().into_iter().enumerate() {
        let c = Case {
            m: 3,
            n: 70000,
            k: 1000,
            at: DType::F32,
            wt: DType::F16,
            bias: true,
            res: false,
        };
        check_linear(&c, v, 400 + i as u64);
    }
}

/// Batched matmul whose a and out exceed one binding together: banded per batch item.
#[test]
fn matmul_larger_than_one_binding() {
    check_matmul(3, 4096, 8, 3000, MatmulVariant::auto(gpu()), 500);
    check_matmul(3, 4096, 8, 3000, MatmulVariant::Tiled128, 501);
}

const DTYPES: [DType; 2] = [DType::F32, DType::F16];

/// Every variant x {f32, f16} activations x {f32, f16} weights, at shapes on and off the
/// tiles, with bias and residual.
#[test]
fn linear_activation_and_weight_dtypes() {
    let dims = [(7, 5, 3), (130, 333, 77), (64, 128, 256), (33, 7, 1000)];
    for v in variants() {
        for at in DTYPES {
            for wt in DTYPES {
                for (i, &(m, n, k)) in dims.iter().enumerate() {
                    let c = Case {
                        at,
                        wt,
                        res: i % 2 == 0,
                        bias: i != 3,
                        ..Case::new(m, n, k)
                    };
                    check_linear(&c, v, 600 + i as u64);
                }
            }
        }
    }
}

#[test]
fn matmul_activation_and_weight_dtypes() {
    for v in variants() {
        for at in DTYPES {
            for wt in DTYPES {
                check_matmul_dt(2, 129, 9, 257, v, at, wt, 700);
                check_matmul_dt(3, 7, 40, 64, v, at, wt, 701);
            }
        }
    }
}

/// The fused GEGLU linear: every variant x activation x weight dtype, on and off the
/// tiles, with and without bias.
#[test]
fn linear_geglu_fused() {
    let dims = [(1, 1, 1), (7, 5, 3), (130, 333, 77), (77, 64, 320)];
    for v in variants() {
        for at in DTYPES {
            for wt in DTYPES {
                for (i, &(m, n, k)) in dims.iter().enumerate() {
                    let c = Case {
                        at,
                        wt,
                        bias: i != 1,
                        ..Case::new(m, n, k)
                    };
                    check_geglu(&c, v, 800 + i as u64);
                }
            }
        }
    }
}

/// GEGLU's [70000, 1000] f16 weight (140 MB) exceeds one binding: the launcher bands the
/// output columns, each band's window spanning its value rows and its gate rows.
#[test]
fn linear_geglu_weight_larger_than_one_binding() {
    for (i, v) in banded_variants().into_iter().enumerate() {
        let c = Case {
            at: DType::F16,
            wt: DType::F16,
            ..Case::new(3, 35000, 1000)
        };
        check_geglu(&c, v, 900 + i as u64);
    }
}

/// An f16 output [66000, 1024] (135 MB, and its residual) exceeds one 128 MiB binding:
/// the launcher bands the rows by the f16 limit.
#[test]
fn linear_f16_output_larger_than_one_binding() {
    for (i, v) in banded_variants().into_iter().enumerate() {
        let c = Case {
            at: DType::F16,
            wt: DType::F16,
            res: true,
            ..Case::new(66000, 1024, 12)
        };
        check_linear(&c, v, 1000 + i as u64);
    }
}

#[test]
fn mixed_activation_dtypes_are_rejected() {
    let gpu = gpu();
    let x = Tensor::from_f32(gpu, &[2, 3], &[0.0; 6], DType::F16).unwrap();
    let w = Tensor::from_f32(gpu, &[2, 3], &[0.0; 6], DType::F16).unwrap();
    let r = Tensor::from_f32(gpu, &[2, 2], &[0.0; 4], DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    assert!(matmul::linear(&mut rec, &x, &w, None, Some(&r)).is_err());
    let w3 = Tensor::from_f32(gpu, &[3, 3], &[0.0; 9], DType::F16).unwrap();
    assert!(matmul::linear_geglu(&mut rec, &x, &w3, None).is_err());
}

/// The subgroup kernel's large tile (48 rows x 64 columns, vec4 reads): shapes big
/// enough to take it, off the tile in M and N, with a K tail past the 32-deep chunk,
/// every activation x weight dtype, bias + residual, GEGLU and a `[B, K, N]` matmul.
#[test]
fn large_tile_shapes() {
    use wgsd::ops::gemm::{SG_TILE_LARGE, SgTile};
    let v = MatmulVariant::auto(gpu());
    let (m, n, k) = (203, 650, 1004);
    assert_eq!(SgTile::for_shape(m, n, k), SG_TILE_LARGE);
    for (i, at) in DTYPES.into_iter().enumerate() {
        for (j, wt) in DTYPES.into_iter().enumerate() {
            let c = Case {
                at,
                wt,
                res: true,
                ..Case::new(m, n, k)
            };
            check_linear(&c, v, 1000 + (2 * i + j) as u64);
        }
        let g = Case {
            at,
            wt: at,
            ..Case::new(m, n / 2 + 1, k)
        };
        assert_eq!(SgTile::for_shape(m, 2 * g.n, k), SG_TILE_LARGE);
        check_geglu(&g, v, 1010 + i as u64);
    }
    // [B, K, N] weights: N % 4 == 0 reads vec4s, N % 4 != 0 reads scalars.
    assert_eq!(SgTile::for_shape(200, 652, 1004), SG_TILE_LARGE);
    check_matmul(2, 200, 1004, 652, v, 1020);
    check_matmul(1, 200, 1004, 650, v, 1021);
}
