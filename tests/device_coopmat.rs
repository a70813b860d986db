//! The cooperative-matrix kernels (tensor cores) against the f64 CPU references: linear
//! with every epilogue, GEGLU, batched matmul, conv2d (3x3 and 1x1, stride 1 and 2) and
//! flash attention, on shapes that are not multiples of any tile.
//!
//! They need a GPU with cooperative matrices, enabled on request, so this binary is
//! built only with the `device-tests` feature:
//!
//! ```sh
//! WGSD_COOPMAT=on cargo test --release --features device-tests --test device_coopmat
//! ```
//!
//! Without such a device every test fails and says why (they never skip). lavapipe (CI)
//! has no cooperative matrices; there the kernels are validated and lowered to SPIR-V by
//! tests/kernel_variants.rs instead.
//!
//! Tolerances: inputs are f16 values (the reference uses the same rounded values), so
//! products are exact and only the f32 accumulation order and the f16 output rounding
//! differ: |got - want| <= 2e-4 * sqrt(K) + 1e-3 * |want|. Attention also rounds the
//! probabilities to f16 before P V (2^-11 relative each): atol 2e-3, rtol 4e-3.

mod common;

use common::{Rng, assert_close, gpu};
use wgsd::gpu::{DType, Gpu, Recorder, Tensor};
use wgsd::ops::attention::{self, Variant};
use wgsd::ops::conv2d::{self, Conv2dArgs, Conv2dVariant};
use wgsd::ops::matmul::{self, MatmulVariant, cpu};
use wgsd::ops::variant::KernelVariant;

/// The GPU, which must run the cooperative kernels.
fn coop_gpu() -> &'static Gpu {
    let gpu = gpu();
    assert!(
        MatmulVariant::Coop.supported(gpu),
        "{} does not run wgsd's cooperative-matrix kernels ({}); these tests need a GPU \
         with square f16 x f16 -> f32 cooperative matrices (NVIDIA/AMD via Vulkan, Apple \
         via Metal) and WGSD_COOPMAT=on. Configurations reported: {:?}",
        gpu.info.name,
        gpu.caps
            .coop
            .why_not
            .as_deref()
            .unwrap_or("the adapter reports no cooperative-matrix configurations"),
        gpu.caps.coop.configs
    );
    gpu
}

fn f16r(v: Vec<f32>) -> Vec<f32> {
    v.into_iter()
        .map(|x| half::f16::from_f32(x).to_f32())
        .collect()
}

fn h(gpu: &Gpu, shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_f32(gpu, shape, v, DType::F16).unwrap()
}

fn gemm_tol(k: usize) -> (f32, f32) {
    (2e-4 * (k as f32).sqrt(), 1e-3)
}

#[test]
fn coop_linear_with_bias_and_residual() {
    let gpu = coop_gpu();
    for (m, n, k, bias, res) in [
        (300, 200, 327, true, true),
        (128, 128, 32, false, false),
        (4608, 320, 320, true, false),
        (77, 1024, 1024, true, true),
        (5, 40, 16, false, true),
    ] {
        let mut rng = Rng::new((m * 31 + n * 7 + k) as u64);
        let x = f16r(rng.vec(m * k));
        let w = f16r(rng.vec(n * k));
        let b = rng.vec(n);
        let r = f16r(rng.vec(m * n));
        let (tx, tw, tr) = (
            h(gpu, &[m, k], &x),
            h(gpu, &[n, k], &w),
            h(gpu, &[m, n], &r),
        );
        let tb = Tensor::from_f32(gpu, &[n], &b, DType::F32).unwrap();
        let mut rec = Recorder::new(gpu);
        let out = matmul::linear_with(
            &mut rec,
            &tx,
            &tw,
            bias.then_some(&tb),
            res.then_some(&tr),
            MatmulVariant::Coop,
        )
        .unwrap();
        let got = rec.read_f32(&out).unwrap();
        let want = cpu::linear(
            &x,
            &w,
            bias.then_some(&b[..]),
            res.then_some(&r[..]),
            m,
            n,
            k,
        );
        let (atol, rtol) = gemm_tol(k);
        assert_close(
            &format!("coop linear m={m} n={n} k={k} bias={bias} res={res}"),
            &got,
            &want,
            atol,
            rtol,
        );
    }
}

#[test]
fn coop_linear_geglu() {
    let gpu = coop_gpu();
    for (m, i, k) in [(300, 200, 320), (4608, 1280, 320), (9, 24, 40)] {
        let mut rng = Rng::new((m + i + k) as u64);
        let x = f16r(rng.vec(m * k));
        let w = f16r(rng.vec(2 * i * k));
        let b = rng.vec(2 * i);
        let tb = Tensor::from_f32(gpu, &[2 * i], &b, DType::F32).unwrap();
        let mut rec = Recorder::new(gpu);
        let out = matmul::linear_geglu_with(
            &mut rec,
            &h(gpu, &[m, k], &x),
            &h(gpu, &[2 * i, k], &w),
            Some(&tb),
            MatmulVariant::Coop,
        )
        .unwrap();
        let got = rec.read_f32(&out).unwrap();
        let want = cpu::linear_geglu(&x, &w, Some(&b), m, i, k);
        let (atol, rtol) = gemm_tol(k);
        assert_close(
            &format!("coop geglu m={m} i={i} k={k}"),
            &got,
            &want,
            atol,
            rtol,
        );
    }
}

#[test]
fn coop_batched_matmul() {
    let gpu = coop_gpu();
    for (b, m, k, n) in [(3, 130, 70, 90), (10, 256, 64, 77), (1, 17, 300, 33)] {
        let mut rng = Rng::new((b * m * k * n) as u64);
        let a = f16r(rng.vec(b * m * k));
        let w = f16r(rng.vec(b * k * n));
        let mut rec = Recorder::new(gpu);
        let out = matmul::matmul_with(
            &mut rec,
            &h(gpu, &[b, m, k], &a),
            &h(gpu, &[b, k, n], &w),
            MatmulVariant::Coop,
        )
        .unwrap();
        let got = rec.read_f32(&out).unwrap();
        let want = cpu::matmul(&a, &w, b, m, k, n);
        let (atol, rtol) = gemm_tol(k);
        assert_close(
            &format!("coop matmul {b}x{m}x{k}x{n}"),
            &got,
            &want,
            atol,
            rtol,
        );
    }
}

#[test]
fn coop_conv2d_3x3_1x1_stride_1_and_2() {
    let gpu = coop_gpu();
    for (nb, cin, hw, cout, kk, stride, pad, res) in [
        (2, 40, 19, 96, 3, 1, 1, true),
        (2, 64, 24, 128, 3, 2, 1, false),
        (1, 96, 17, 64, 1, 1, 0, true),
        (2, 4, 12, 320, 3, 1, 1, false),
        (1, 320, 12, 4, 3, 1, 1, false),
    ] {
        let mut rng = Rng::new((cin * 131 + cout + kk) as u64);
        let xs = [nb, cin, hw, hw];
        let ws = [cout, cin, kk, kk];
        let x = f16r(rng.vec(xs.iter().product()));
        let w = f16r(rng.vec(ws.iter().product()));
        let b = rng.vec(cout);
        let args = Conv2dArgs::new(stride, pad);
        let ho = args.out_size(hw, kk).unwrap();
        let r = f16r(rng.vec(nb * cout * ho * ho));
        let tb = Tensor::from_f32(gpu, &[cout], &b, DType::F32).unwrap();
        let tr = h(gpu, &[nb, cout, ho, ho], &r);
        let mut rec = Recorder::new(gpu);
        let out = conv2d::conv2d_with(
            &mut rec,
            &h(gpu, &xs, &x),
            &h(gpu, &ws, &w),
            Some(&tb),
            args,
            res.then_some(&tr),
            Conv2dVariant::Coop,
        )
        .unwrap();
        let got = rec.read_f32(&out).unwrap();
        let want = conv2d::cpu::conv2d(&x, xs, &w, ws, Some(&b), args, res.then_some(&r[..]));
        let (atol, rtol) = gemm_tol(cin * kk * kk);
        assert_close(
            &format!("coop conv2d {xs:?} * {ws:?} stride {stride} pad {pad} res {res}"),
            &got,
            &want,
            atol,
            rtol,
        );
    }
}

#[test]
fn coop_flash_attention() {
    let gpu = coop_gpu();
    let variant = Variant::Coop {
        lanes: gpu.caps.subgroup_size,
    };
    assert!(
        variant.supported(gpu),
        "cooperative attention needs 16x16 tiles; {} uses {:?}",
        gpu.info.name,
        gpu.caps.coop.tile
    );
    // SD 2 heads (64), SD 1 heads (40, 80, 160), self and cross (77 keys), odd lengths.
    for (b, nq, nk, heads, d) in [
        (2, 300, 300, 5, 64),
        (2, 257, 77, 8, 40),
        (1, 100, 131, 8, 80),
        (2, 64, 77, 8, 160),
        (1, 1, 1, 1, 16),
    ] {
        let mut rng = Rng::new((nq * nk + d) as u64);
        let c = heads * d;
        let q = f16r(rng.vec(b * nq * c));
        let k = f16r(rng.vec(b * nk * c));
        let v = f16r(rng.vec(b * nk * c));
        let scale = 1.0 / (d as f32).sqrt();
        let mut rec = Recorder::new(gpu);
        let out = attention::attention_with(
            &mut rec,
            &h(gpu, &[b, nq, c], &q),
            &h(gpu, &[b, nk, c], &k),
            &h(gpu, &[b, nk, c], &v),
            heads,
            scale,
            false,
            variant,
        )
        .unwrap();
        let got = rec.read_f32(&out).unwrap();
        let want = attention::cpu::attention(&q, &k, &v, b, nq, nk, heads, d, scale, false);
        assert_close(
            &format!("coop attention b={b} nq={nq} nk={nk} heads={heads} d={d}"),
            &got,
            &want,
            2e-3,
            4e-3,
        );
    }
}

/// The default choice takes the cooperative kernels for f16 and keeps the FMA kernels
/// for f32 (f32 mode's 60 dB contract) and for causal attention.
#[test]
fn coop_is_chosen_for_f16_only() {
    let gpu = coop_gpu();
    assert_eq!(
        MatmulVariant::choose(gpu, DType::F16, DType::F16, 4608, 320),
        MatmulVariant::Coop
    );
    assert_ne!(
        MatmulVariant::choose(gpu, DType::F32, DType::F16, 4608, 320),
        MatmulVariant::Coop
    );
    assert_ne!(
        MatmulVariant::choose(gpu, DType::F16, DType::F16, 2, 1280),
        MatmulVariant::Coop
    );
    assert_eq!(
        Conv2dVariant::choose(gpu, DType::F16, DType::F16, 320),
        Conv2dVariant::Coop
    );
    assert_ne!(
        Conv2dVariant::choose(gpu, DType::F16, DType::F16, 4),
        Conv2dVariant::Coop
    );
}
