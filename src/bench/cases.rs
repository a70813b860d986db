//! The benchmarked cases: each kernel family at Stable Diffusion 2 shapes (768x768:
//! 96x96 latent, 9216 tokens, CFG batch 2 where the UNet has it) or, with `--quick`, at
//! 384x384 (48x48 latent, 2304 tokens) so a CPU driver finishes in seconds.
//!
//! Kernels with several variants (linear, conv2d, attention) get one row for the
//! adapter's default and, on GPUs (or anywhere with `WGSD_BENCH_VARIANTS=all`), one row
//! per other supported variant, named `<case> [<Variant>]`, so old and new kernels are
//! timed side by side on the same device.

use std::time::Duration;

use super::{Work, time_median};
use crate::error::Result;
use crate::gpu::{DType, Gpu, Recorder, Tensor};
use crate::ops;
use crate::ops::attention::Variant as AttnVariant;
use crate::ops::conv2d::{Conv2dArgs, Conv2dVariant};
use crate::ops::matmul::MatmulVariant;
use crate::ops::variant::KernelVariant;

type Record = dyn Fn(&Gpu, usize) -> Result<Duration>;

/// One case: a name, its shape in words, its work, and how to time it.
pub struct Case {
    pub name: String,
    pub shape: String,
    pub work: Work,
    pub run: Box<Record>,
}

/// Deterministic filler data (values in [-1, 1)); speed does not depend on it.
pub fn filled(gpu: &Gpu, shape: &[usize], dtype: DType) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|i| ((i * 7919 % 2003) as f32 / 1001.5) - 1.0)
        .collect();
    Tensor::from_f32(gpu, shape, &data, dtype)
}

fn case(
    name: impl Into<String>,
    shape: String,
    work: Work,
    inputs: Vec<(Vec<usize>, DType)>,
    op: impl Fn(&mut Recorder, &[Tensor]) -> Result<Tensor> + 'static,
) -> Case {
    Case {
        name: name.into(),
        shape,
        work,
        run: Box::new(move |gpu, reps| {
            let ts = inputs
                .iter()
                .map(|(s, d)| filled(gpu, s, *d))
                .collect::<Result<Vec<_>>>()?;
            time_median(gpu, reps, |rec| op(rec, &ts).map(drop))
        }),
    }
}

fn f(v: usize) -> f64 {
    v as f64
}

/// `None` for the default variant, then every other variant worth timing here.
fn extra<V: Copy + PartialEq>(gpu: &Gpu, default: V, all: Vec<V>) -> Vec<Option<V>> {
    let wanted = !gpu.caps.is_cpu || std::env::var("WGSD_BENCH_VARIANTS").is_ok_and(|v| v == "all");
    let mut v = vec![None];
    if wanted {
        v.extend(all.into_iter().filter(|&x| x != default).map(Some));
    }
    v
}

/// `name` for the default variant, `name [Variant]` otherwise.
fn named<V: std::fmt::Debug>(name: &str, v: Option<V>) -> String {
    match v {
        None => name.to_string(),
        Some(v) => format!("{name} [{v:?}]"),
    }
}

pub fn all(gpu: &Gpu, quick: bool) -> Vec<Case> {
    let side = if quick { 48 } else { 96 };
    let n = side * side; // tokens per image
    let b = 2; // classifier-free guidance batch
    let f32_ = DType::F32;
    let mut cases = Vec::new();

    // linear: the UNet's 320-wide transformer at the top level, ff proj_in shape.
    for (name, wt) in [
        ("linear f32", DType::F32),
        ("linear f16 weights", DType::F16),
    ] {
        let (m, k, nn) = (n, 320, 1280);
        let auto = MatmulVariant::auto(gpu);
        for v in extra(gpu, auto, MatmulVariant::all_supported(gpu)) {
            let variant = v.unwrap_or(auto);
            cases.push(case(
                named(name, v),
                format!("{m}x{k}x{nn}"),
                Work::Flops(2.0 * f(m) * f(k) * f(nn)),
                vec![(vec![m, k], f32_), (vec![nn, k], wt), (vec![nn], f32_)],
                move |rec, t| {
                    ops::matmul::linear_with(rec, &t[0], &t[1], Some(&t[2]), None, variant)
                },
            ));
        }
    }
    // conv 3x3 320->320 at the top level, batch 2.
    let auto = Conv2dVariant::auto(gpu);
    for v in extra(gpu, auto, Conv2dVariant::all_supported(gpu)) {
        let variant = v.unwrap_or(auto);
        cases.push(case(
            named("conv2d 3x3", v),
            format!("{b}x320x{side}x{side} -> 320"),
            Work::Flops(2.0 * f(b * n) * 320.0 * 320.0 * 9.0),
            vec![
                (vec![b, 320, side, side], f32_),
                (vec![320, 320, 3, 3], DType::F16),
                (vec![320], f32_),
            ],
            move |rec, t| {
                ops::conv2d::conv2d_with(
                    rec,
                    &t[0],
                    &t[1],
                    Some(&t[2]),
                    Conv2dArgs::new(1, 1),
                    None,
                    variant,
                )
            },
        ));
    }
    // self-attention at the top level: 5 heads of 64 (SD 2), batch 2.
    let auto = AttnVariant::for_caps(&gpu.caps);
    let mut attn = vec![AttnVariant::Rows, AttnVariant::Flash];
    if gpu.caps.subgroup {
        attn.push(AttnVariant::Subgroup {
            lanes: gpu.caps.subgroup_size,
        });
    }
    for v in extra(gpu, auto, attn) {
        let variant = v.unwrap_or(auto);
        cases.push(case(
            named("attention self", v),
            format!("{b}x{n} tokens x 5 heads x 64"),
            Work::Flops(4.0 * f(b) * f(n) * f(n) * 320.0),
            vec![
                (vec![b, n, 320], f32_),
                (vec![b, n, 320], f32_),
                (vec![b, n, 320], f32_),
            ],
            move |rec, t| {
                ops::attention::attention_with(rec, &t[0], &t[1], &t[2], 5, 0.125, false, variant)
            },
        ));
        // cross-attention on 77 text tokens.
        cases.push(case(
            named("attention cross", v),
            format!("{b}x{n} x 77 tokens x 5 x 64"),
            Work::Flops(4.0 * f(b) * f(n) * 77.0 * 320.0),
            vec![
                (vec![b, n, 320], f32_),
                (vec![b, 77, 320], f32_),
                (vec![b, 77, 320], f32_),
            ],
            move |rec, t| {
                ops::attention::attention_with(rec, &t[0], &t[1], &t[2], 5, 0.125, false, variant)
            },
        ));
    }
    if crate::ops::gemm::coop_geometry(gpu).is_some() {
        coop_cases(gpu, &mut cases, b, side, n);
    }
    let maps = b * 320 * n;
    let bytes = |reads: usize, writes: usize| Work::Bytes(4.0 * f(reads + writes));
    cases.push(case(
        "group_norm + silu",
        format!("{b}x320x{side}x{side}, 32 groups"),
        bytes(2 * maps, maps),
        vec![
            (vec![b, 320, side, side], f32_),
            (vec![320], f32_),
            (vec![320], f32_),
        ],
        |rec, t| ops::norm::group_norm(rec, &t[0], 32, &t[1], &t[2], 1e-5, true),
    ));
    cases.push(case(
        "layer_norm",
        format!("{}x320", b * n),
        bytes(maps, maps),
        vec![
            (vec![b * n, 320], f32_),
            (vec![320], f32_),
            (vec![320], f32_),
        ],
        |rec, t| ops::norm::layer_norm(rec, &t[0], &t[1], &t[2], 1e-5),
    ));
    cases.push(case(
        "geglu",
        format!("{}x2560 -> 1280", b * n),
        bytes(b * n * 2560, b * n * 1280),
        vec![(vec![b * n, 2560], f32_)],
        |rec, t| ops::activation::geglu(rec, &t[0]),
    ));
    cases.push(case(
        "silu",
        format!("{b}x320x{side}x{side}"),
        bytes(maps, maps),
        vec![(vec![b, 320, side, side], f32_)],
        |rec, t| ops::activation::silu(rec, &t[0]),
    ));
    cases.push(case(
        "add (residual)",
        format!("{b}x320x{side}x{side}"),
        bytes(2 * maps, maps),
        vec![
            (vec![b, 320, side, side], f32_),
            (vec![b, 320, side, side], f32_),
        ],
        |rec, t| ops::elementwise::add(rec, &t[0], &t[1]),
    ));
    let half = side / 2;
    let small = b * 640 * half * half;
    cases.push(case(
        "upsample nearest 2x",
        format!("{b}x640x{half}x{half}"),
        bytes(small, 4 * small),
        vec![(vec![b, 640, half, half], f32_)],
        |rec, t| ops::upsample::upsample_nearest2x(rec, &t[0]),
    ));
    cases.push(case(
        "concat channels",
        format!("{b}x(320+320)x{side}x{side}"),
        bytes(2 * maps, 2 * maps),
        vec![
            (vec![b, 320, side, side], f32_),
            (vec![b, 320, side, side], f32_),
        ],
        |rec, t| ops::concat::concat_channels(rec, &t[0], &t[1]),
    ));
    cases.push(case(
        "transpose",
        format!("{b}x320x{n}"),
        bytes(maps, maps),
        vec![(vec![b, 320, n], f32_)],
        |rec, t| ops::transpose::transpose(rec, &t[0], None),
    ));
    cases
}

/// With cooperative matrices enabled: the cooperative kernels in f16 (rated against the
/// cooperative probe), each beside the FMA kernel the device would otherwise run on the
/// same f16 operands (rated against the FMA probe).
fn coop_cases(gpu: &Gpu, cases: &mut Vec<Case>, b: usize, side: usize, n: usize) {
    let h = DType::F16;
    let (m, k, nn) = (b * n, 320, 1280);
    let flops = 2.0 * f(m) * f(k) * f(nn);
    for variant in [MatmulVariant::Coop, MatmulVariant::auto(gpu)] {
        let work = if variant == MatmulVariant::Coop {
            Work::CoopFlops(flops)
        } else {
            Work::Flops(flops)
        };
        cases.push(case(
            format!("linear f16 [{variant:?}]"),
            format!("{m}x{k}x{nn}"),
            work,
            vec![(vec![m, k], h), (vec![nn, k], h), (vec![nn], DType::F32)],
            move |rec, t| ops::matmul::linear_with(rec, &t[0], &t[1], Some(&t[2]), None, variant),
        ));
    }
    let flops = 2.0 * f(b * n) * 320.0 * 320.0 * 9.0;
    for variant in [Conv2dVariant::Coop, Conv2dVariant::auto(gpu)] {
        let work = if variant == Conv2dVariant::Coop {
            Work::CoopFlops(flops)
        } else {
            Work::Flops(flops)
        };
        cases.push(case(
            format!("conv2d 3x3 f16 [{variant:?}]"),
            format!("{b}x320x{side}x{side} -> 320"),
            work,
            vec![
                (vec![b, 320, side, side], h),
                (vec![320, 320, 3, 3], h),
                (vec![320], DType::F32),
            ],
            move |rec, t| {
                ops::conv2d::conv2d_with(
                    rec,
                    &t[0],
                    &t[1],
                    Some(&t[2]),
                    Conv2dArgs::new(1, 1),
                    None,
                    variant,
                )
            },
        ));
    }
    let coop = AttnVariant::Coop {
        lanes: gpu.caps.subgroup_size,
    };
    for variant in [coop, AttnVariant::for_caps(&gpu.caps)] {
        for (what, nk) in [("self", n), ("cross", 77)] {
            let flops = 4.0 * f(b) * f(n) * f(nk) * 320.0;
            let work = if variant == coop {
                Work::CoopFlops(flops)
            } else {
                Work::Flops(flops)
            };
            cases.push(case(
                format!("attention {what} f16 [{variant:?}]"),
                format!("{b}x{n} x {nk} tokens x 5 x 64"),
                work,
                vec![
                    (vec![b, n, 320], h),
                    (vec![b, nk, 320], h),
                    (vec![b, nk, 320], h),
                ],
                move |rec, t| {
                    ops::attention::attention_with(
                        rec, &t[0], &t[1], &t[2], 5, 0.125, false, variant,
                    )
                },
            ));
        }
    }
}
