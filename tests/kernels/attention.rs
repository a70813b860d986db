//! Fused attention against the naive f64 CPU reference, for every variant.
//! Tolerance: |got - want| <= 1e-5 + 1e-5 * |want| (f32 online softmax vs f64 naive).

use wgsd::gpu::{DType, Recorder, Tensor};
use wgsd::ops::attention::{self, Variant, cpu};
use wgsd::ops::variant::KernelVariant;

use crate::common::{Rng, assert_close, gpu};
use crate::f16data::{assert_saturated, stored, tol};

const ATOL: f32 = 1e-5;
const RTOL: f32 = 1e-5;

/// Every variant this device can run: the subgroup kernel at the adapter's lane count
/// and at half of it (a workgroup smaller than the subgroup, as on GPUs whose subgroups
/// are wider than the lane count asked for), and the portable ones (rows, flash).
fn variants() -> Vec<Variant> {
    let caps = &gpu().caps;
    assert!(
        caps.subgroup,
        "the test device must support subgroups (lavapipe does)"
    );
    let mut v = vec![
        Variant::Rows,
        Variant::Subgroup {
            lanes: caps.subgroup_size,
        },
        Variant::Flash,
    ];
    if caps.subgroup_size >= 2 {
        v.push(Variant::Subgroup {
            lanes: caps.subgroup_size / 2,
        });
    }
    v
}

#[allow(clippy::too_many_arguments)]
fn check(
    b: usize,
    nq: usize,
    nk: usize,
    heads: usize,
    d: usize,
    causal: bool,
    seed: u64,
    all_variants: bool,
) {
    let list = if all_variants {
        variants()
    } else {
        variants().into_iter().take(3).collect()
    };
    check_as(b, nq, nk, heads, d, causal, seed, DType::F32, &list);
}

/// [`check`] with q, k, v, out stored as `dt` (f16: inputs rounded to f16; scores,
/// softmax and accumulators stay f32, one f16 rounding of the output).
#[allow(clippy::too_many_arguments)]
fn check_as(
    b: usize,
    nq: usize,
    nk: usize,
    heads: usize,
    d: usize,
    causal: bool,
    seed: u64,
    dt: DType,
    list: &[Variant],
) {
    let gpu = gpu();
    let mut rng = Rng::new(seed);
    let c = heads * d;
    // Spread the scores over a few units so the softmax is neither flat nor one-hot.
    let q: Vec<f32> = rng.vec(b * nq * c).iter().map(|x| x * 2.0).collect();
    let k: Vec<f32> = rng.vec(b * nk * c).iter().map(|x| x * 2.0).collect();
    let v: Vec<f32> = rng.vec(b * nk * c);
    let (q, k, v) = (stored(&q, dt), stored(&k, dt), stored(&v, dt));
    let scale = 1.0 / (d as f32).sqrt();
    let want = cpu::attention(&q, &k, &v, b, nq, nk, heads, d, scale, causal);
    let tq = Tensor::from_f32(gpu, &[b, nq, c], &q, dt).unwrap();
    let tk = Tensor::from_f32(gpu, &[b, nk, c], &k, dt).unwrap();
    let tv = Tensor::from_f32(gpu, &[b, nk, c], &v, dt).unwrap();
    let (atol, rtol) = tol(dt, ATOL, RTOL);
    for &variant in list {
        let mut rec = Recorder::new(gpu);
        let out = attention::attention_with(&mut rec, &tq, &tk, &tv, heads, scale, causal, variant)
            .unwrap();
        assert_eq!((out.shape(), out.dtype()), (&[b, nq, c][..], dt));
        let got = rec.read_f32(&out).unwrap();
        assert_close(
            &format!(
                "attention {variant:?} {dt:?} b{b} nq{nq} nk{nk} h{heads} d{d} causal {causal}"
            ),
            &got,
            &want,
            atol,
            rtol,
        );
    }
}

/// One key: every query's output is that key's value row, whatever the scores.
#[test]
fn attention_single_key_returns_value() {
    let gpu = gpu();
    let q = [0.5f32, -1.0, 2.0, 3.0, 0.0, 1.0];
    let k = [1.0f32, 2.0];
    let v = [7.0f32, -3.0];
    let tq = Tensor::from_f32(gpu, &[1, 3, 2], &q, DType::F32).unwrap();
    let tk = Tensor::from_f32(gpu, &[1, 1, 2], &k, DType::F32).unwrap();
    let tv = Tensor::from_f32(gpu, &[1, 1, 2], &v, DType::F32).unwrap();
    for variant in variants() {
        let mut rec = Recorder::new(gpu);
        let out =
            attention::attention_with(&mut rec, &tq, &tk, &tv, 1, 0.7, false, variant).unwrap();
        let got = rec.read_f32(&out).unwrap();
        assert_eq!(got, [7.0, -3.0, 7.0, -3.0, 7.0, -3.0], "{variant:?}");
    }
}

/// Two keys, one head, D = 1: out = (e^{s0} v0 + e^{s1} v1) / (e^{s0} + e^{s1}) by hand.
#[test]
fn attention_two_keys_by_hand() {
    let gpu = gpu();
    // q = 1, keys 0 and ln 3 (scale 1): weights 1/4 and 3/4; values 4 and 8 -> 7.
    let tq = Tensor::from_f32(gpu, &[1, 1, 1], &[1.0], DType::F32).unwrap();
    let tk = Tensor::from_f32(gpu, &[1, 2, 1], &[0.0, 3f32.ln()], DType::F32).unwrap();
    let tv = Tensor::from_f32(gpu, &[1, 2, 1], &[4.0, 8.0], DType::F32).unwrap();
    for variant in variants() {
        let mut rec = Recorder::new(gpu);
        let out =
            attention::attention_with(&mut rec, &tq, &tk, &tv, 1, 1.0, false, variant).unwrap();
        let got = rec.read_f32(&out).unwrap();
        assert_close(&format!("{variant:?}"), &got, &[7.0], 1e-6, 1e-6);
    }
}

#[test]
fn attention_self_and_cross_sd_heads() {
    check(1, 64, 64, 1, 64, false, 1, false); // self, multiples of the tiles
    check(2, 40, 40, 5, 64, false, 2, true); // SD2 heads, batch 2
    check(1, 13, 77, 1, 40, false, 3, false); // cross-attention, odd sizes
    check(2, 37, 77, 8, 40, false, 4, false); // SD1 cross-attention heads
}

#[test]
fn attention_small_heads() {
    check(1, 13, 77, 2, 8, false, 5, false);
    check(1, 29, 31, 3, 4, false, 6, false); // tiny test-model heads
    check(1, 9, 5, 1, 3, false, 7, true); // D not a multiple of 4
    check(1, 300, 300, 2, 16, false, 11, false); // many key blocks
}

#[test]
fn attention_wide_heads() {
    check(1, 21, 19, 2, 80, false, 8, false);
    check(1, 17, 33, 1, 160, false, 9, false);
    check(1, 19, 23, 1, 512, false, 10, false); // VAE mid-block: one head of 512
}

#[test]
fn attention_causal() {
    check(2, 77, 77, 2, 16, true, 20, true); // CLIP-like
    check(1, 45, 45, 3, 8, true, 21, false);
    check(1, 100, 100, 1, 40, true, 22, false);
}

/// The flash variant's own edges: several 64-row query blocks, partial key blocks,
/// column groups (D = 160 splits into two groups of 80), causal blocks that stop early,
/// and a head wider than it keeps in registers (runs the rows kernel).
#[test]
fn attention_flash_blocks() {
    let one = |b, nq, nk, heads, d, causal, seed| {
        let gpu = gpu();
        let mut rng = Rng::new(seed);
        let c = heads * d;
        let q: Vec<f32> = rng.vec(b * nq * c).iter().map(|x| x * 2.0).collect();
        let k: Vec<f32> = rng.vec(b * nk * c).iter().map(|x| x * 2.0).collect();
        let v: Vec<f32> = rng.vec(b * nk * c);
        let scale = 1.0 / (d as f32).sqrt();
        let want = cpu::attention(&q, &k, &v, b, nq, nk, heads, d, scale, causal);
        let tq = Tensor::from_f32(gpu, &[b, nq, c], &q, DType::F32).unwrap();
        let tk = Tensor::from_f32(gpu, &[b, nk, c], &k, DType::F32).unwrap();
        let tv = Tensor::from_f32(gpu, &[b, nk, c], &v, DType::F32).unwrap();
        let mut rec = Recorder::new(gpu);
        let out = attention::attention_with(
            &mut rec,
            &tq,
            &tk,
            &tv,
            heads,
            scale,
            causal,
            Variant::Flash,
        )
        .unwrap();
        let got = rec.read_f32(&out).unwrap();
        let what = format!("flash b{b} nq{nq} nk{nk} h{heads} d{d} causal {causal}");
        assert_close(&what, &got, &want, ATOL, RTOL);
    };
    one(2, 150, 77, 2, 64, false, 40); // 3 query blocks, 77 keys = 2 blocks of 32 + 13
    one(1, 130, 130, 1, 64, true, 41); // causal over several blocks
    one(1, 70, 33, 1, 160, false, 42); // two column groups
    one(1, 20, 9, 2, 6, true, 43); // D not a multiple of 4
    one(1, 5, 4, 1, 200, false, 44); // wider than FLASH_MAX_D: rows kernel
}

/// q and out are 1,081,344 x 40 floats = 173 MB, over one 128 MiB binding: the launcher
/// must band the query rows; FLOPs stay small with 3 keys.
#[test]
fn attention_larger_than_one_binding() {
    check(1, (1 << 20) + 32768, 3, 5, 8, false, 30, false);
}

/// The shared variant-choice API: the automatic choice is supported and listed.
#[test]
fn attention_kernel_variant_trait() {
    let gpu = gpu();
    let auto = Variant::auto(gpu);
    assert_eq!(auto, Variant::for_caps(&gpu.caps));
    assert!(auto.supported(gpu));
    let all = Variant::all_supported(gpu);
    assert!(all.contains(&auto) && all.contains(&Variant::Rows) && all.contains(&Variant::Flash));
}

/// f16 q, k, v, out through every variant: self, cross, causal, odd and wide heads.
#[test]
fn attention_f16() {
    let f16 = DType::F16;
    let all = variants();
    check_as(1, 64, 64, 1, 64, false, 51, f16, &all);
    check_as(2, 37, 77, 8, 40, false, 52, f16, &all);
    check_as(1, 9, 5, 1, 3, false, 53, f16, &all); // D not a multiple of 4
    check_as(2, 77, 77, 2, 16, true, 54, f16, &all);
    check_as(1, 19, 23, 1, 512, false, 55, f16, &all); // one head of 512
    check_as(1, 70, 33, 1, 160, false, 56, f16, &all);
}

/// Inputs near f16's range: q . k (2.5e5) overflows f16 but scores are f32, so the
/// softmax is exact and the output is finite: a weighted mean of values up to 65504.
#[test]
fn attention_f16_saturate() {
    let gpu = gpu();
    let (nq, nk, d) = (3, 4, 4);
    let q: Vec<f32> = (0..nq * d)
        .map(|i| if i % 2 == 0 { 250.0 } else { -250.0 })
        .collect();
    let k: Vec<f32> = (0..nk * d)
        .map(|i| if (i / d) % 2 == 0 { 250.0 } else { 240.0 } * if i % 2 == 0 { 1.0 } else { -1.0 })
        .collect();
    let v: Vec<f32> = (0..nk * d)
        .map(|i| if i % 3 == 0 { 65504.0 } else { -6e4 })
        .collect();
    let want = cpu::attention(&q, &k, &v, 1, nq, nk, 1, d, 1.0, false);
    let tq = Tensor::from_f32(gpu, &[1, nq, d], &q, DType::F16).unwrap();
    let tk = Tensor::from_f32(gpu, &[1, nk, d], &k, DType::F16).unwrap();
    let tv = Tensor::from_f32(gpu, &[1, nk, d], &v, DType::F16).unwrap();
    for variant in variants() {
        let mut rec = Recorder::new(gpu);
        let out =
            attention::attention_with(&mut rec, &tq, &tk, &tv, 1, 1.0, false, variant).unwrap();
        let got = rec.read_f32(&out).unwrap();
        assert_saturated(&format!("{variant:?}"), &got);
        let (atol, rtol) = tol(DType::F16, 0.0, 1e-5);
        assert_close(&format!("{variant:?}"), &got, &want, atol, rtol);
    }
}

/// q and out are 1,750,000 x 40 halves = 140 MB, over one 128 MiB binding: the launcher
/// bands the query rows by the f16 element size.
#[test]
fn attention_f16_larger_than_one_binding() {
    let variant = Variant::auto(gpu());
    check_as(1, 1_750_000, 3, 5, 8, false, 57, DType::F16, &[variant]);
}
