//! The hires fix against diffusers' pipelines composed as `crate::hires` defines it
//! (tests/fixtures/hires, made by make_hires_fixtures.py, on sd2-tiny in f32): the first
//! pass's latents, the upscaled latents or resized images, the final images (>= 60 dB)
//! for every upscaler; Pillow's resizes byte for byte; batching, progress across both
//! passes, finish_early, and the named errors. The latent kernel's own tests are in
//! tests/kernels/latent_resize.rs.

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde_json::Value;
use wgsd::hires::resize::{Filter, resize};
use wgsd::hires::{HiresFix, HiresSize, Upscaler};
use wgsd::pipeline::{GenerateRequest, Image, Pipeline};

use common::fixture::{Reference as Fixture, case_request, pipeline_f32, rel_err};
use common::psnr;

const MIN_PSNR: f64 = 60.0;

fn pipeline() -> Pipeline<'static> {
    pipeline_f32("weights/sd2-tiny.zip")
}

fn request(case: &Value) -> GenerateRequest {
    let n = |k: &str| case[k].as_u64().expect(k) as usize;
    GenerateRequest {
        hires: Some(HiresFix {
            size: HiresSize::Resize {
                width: n("hires_width"),
                height: n("hires_height"),
            },
            upscaler: Upscaler::parse(case["hires_upscaler"].as_str().expect("upscaler"))
                .expect("known upscaler"),
            strength: case["hires_strength"].as_f64().expect("strength"),
            steps: n("hires_steps"),
        }),
        ..case_request(case)
    }
}

#[test]
fn pillow_resizes_byte_for_byte() {
    let fx = Fixture::load("hires");
    let resizes = fx.json["resizes"].as_array().expect("resizes");
    assert!(resizes.len() >= 6);
    for r in resizes {
        let n = |k: &str| r[k].as_u64().expect(k) as usize;
        let f = r["filter"].as_str().expect("filter");
        let (w, h, tw, th) = (
            n("width"),
            n("height"),
            n("target_width"),
            n("target_height"),
        );
        let k = format!("resize.{f}.{w}x{h}.{tw}x{th}");
        let img = Image {
            width: w,
            height: h,
            data: fx.u8s(&format!("{k}.in")),
        };
        let filter = if f == "Nearest" {
            Filter::Nearest
        } else {
            Filter::Lanczos
        };
        let got = resize(&img, tw, th, filter);
        assert_eq!((got.width, got.height), (tw, th), "{k}");
        let want = fx.u8s(&format!("{k}.out"));
        let diff = got.data.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(diff, 0, "{k}: {diff} bytes differ from Pillow");
    }
}

#[test]
fn hires_matches_diffusers() {
    let fx = Fixture::load("hires");
    let pipe = pipeline();
    for case in fx.cases() {
        let name = case["case"].as_str().expect("case");
        let pre = case["tensor_prefix"].as_str().expect("prefix");
        let req = GenerateRequest {
            trace: true,
            ..request(case)
        };
        let mut steps_seen = Vec::new();
        let out = pipe
            .generate_with(&req, &mut |p| steps_seen.push((p.step, p.total)), None)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let total = steps_seen.last().map_or(0, |s| s.1);
        assert_eq!(
            steps_seen,
            (1..=total).map(|k| (k, total)).collect::<Vec<_>>(),
            "{name}: one progress report per step of both passes"
        );
        assert_eq!(out.steps_done, total, "{name}");
        assert_eq!(out.timesteps.len(), total, "{name}");
        let tr = out.trace.as_ref().expect("trace");
        if case["hires_upscaler"]
            .as_str()
            .unwrap()
            .starts_with("Latent")
        {
            let e1 = rel_err(
                &tr.hires_first_latents,
                &fx.tensor(&format!("{pre}.first_latents")),
            );
            let eu = rel_err(
                &tr.hires_upscaled_latents,
                &fx.tensor(&format!("{pre}.upscaled_latents")),
            );
            eprintln!("{name}: first-pass latents rel {e1:.1e}, upscaled rel {eu:.1e}");
            assert!(e1 < 1e-4 && eu < 1e-4, "{name}: {e1} {eu}");
        }
        let final_err = rel_err(
            &tr.final_latents,
            &fx.tensor(&format!("{pre}.final_latents")),
        );
        let want = fx.u8s(&format!("{pre}.image_u8"));
        let per = want.len() / out.images.len();
        let (tw, th) = (
            case["hires_width"].as_u64().unwrap() as usize,
            case["hires_height"].as_u64().unwrap() as usize,
        );
        assert_eq!(per, tw * th * 3, "{name}: image size");
        for (k, img) in out.images.iter().enumerate() {
            assert_eq!((img.width, img.height), (tw, th), "{name}");
            let p = psnr(&img.data, &want[k * per..(k + 1) * per]);
            eprintln!("{name} image {k}: PSNR {p:.1} dB; final latents rel {final_err:.1e}");
            assert!(
                p >= MIN_PSNR,
                "{name} image {k}: PSNR {p:.2} dB < {MIN_PSNR}"
            );
        }
    }
}

#[test]
fn hires_batches_give_solo_results() {
    let fx = Fixture::load("hires");
    let pipe = pipeline();
    for idx in [1, 4] {
        // Euler a with latents (ancestral draws), Lanczos with images (encoder draws).
        let case = &fx.cases()[idx];
        let a = request(case);
        let b = GenerateRequest {
            seed: a.seed + 100,
            prompts: vec!["a small green square".into()],
            num_images_per_prompt: 1,
            ..request(case)
        };
        assert_eq!(pipe.batch_key(&a), pipe.batch_key(&b));
        let plain = GenerateRequest {
            hires: None,
            ..request(case)
        };
        assert_ne!(pipe.batch_key(&a), pipe.batch_key(&plain), "hires and not");
        let batch = pipe
            .generate_batch(&[a.clone(), b.clone()], &mut |_| {}, None)
            .expect("batch");
        let solo_b = pipe.generate(&b).expect("solo");
        let want = fx.u8s(&format!(
            "{}.image_u8",
            case["tensor_prefix"].as_str().unwrap()
        ));
        let per = want.len() / 2;
        for k in 0..2 {
            let p = psnr(&batch[0].images[k].data, &want[k * per..(k + 1) * per]);
            assert!(
                p >= MIN_PSNR,
                "case {idx}: batched request a image {k}: {p:.1} dB"
            );
        }
        let p = psnr(&batch[1].images[0].data, &solo_b.images[0].data);
        assert!(
            p >= MIN_PSNR,
            "case {idx}: batched b against solo: {p:.1} dB"
        );
    }
}

#[test]
fn finish_early_in_the_first_pass_returns_its_images() {
    let fx = Fixture::load("hires");
    let pipe = pipeline();
    let flag = Arc::new(AtomicBool::new(false));
    let req = GenerateRequest {
        finish_early: Some(flag.clone()),
        ..request(&fx.cases()[0])
    };
    let mut reports = 0;
    let out = pipe
        .generate_with(
            &req,
            &mut |p| {
                reports += 1;
                if p.step == 2 {
                    flag.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            },
            None,
        )
        .expect("runs");
    assert_eq!(
        (out.steps_done, reports),
        (2, 2),
        "stopped in the first pass"
    );
    let img = &out.images[0];
    assert_eq!(
        (img.width, img.height),
        (32, 32),
        "first-pass size, as A1111"
    );
    // Cancelling counts steps over both passes.
    let cancel = AtomicBool::new(false);
    let req = request(&fx.cases()[0]);
    let err = pipe
        .generate_with(
            &req,
            &mut |p| {
                if p.step == 5 {
                    cancel.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            },
            Some(&cancel),
        )
        .expect_err("cancelled");
    match err {
        wgsd::Error::Cancelled { completed, total } => {
            assert_eq!((completed, total), (5, 4 + 2), "in the second pass")
        }
        e => panic!("expected a cancellation, got {e}"),
    }
}

#[test]
fn bad_hires_requests_are_named_errors() {
    let pipe = pipeline();
    let base = GenerateRequest {
        width: 32,
        height: 32,
        steps: 4,
        hires: Some(HiresFix::default()),
        ..GenerateRequest::new("x")
    };
    pipe.validate(&base).expect("a good request");
    let err = |h: HiresFix| {
        pipe.validate(&GenerateRequest {
            hires: Some(h),
            ..base.clone()
        })
        .expect_err("must fail")
        .to_string()
    };
    let e = err(HiresFix {
        size: HiresSize::Scale(1.3),
        ..HiresFix::default()
    });
    assert!(e.contains("41 x 41") && e.contains("multiple of 8"), "{e}");
    let e = err(HiresFix {
        size: HiresSize::Scale(200.0),
        ..HiresFix::default()
    });
    assert!(e.contains("too large"), "{e}");
    for s in [0.0, 1.5, f64::NAN] {
        let e = err(HiresFix {
            strength: s,
            ..HiresFix::default()
        });
        assert!(e.contains("strength must be in (0, 1]"), "{s}: {e}");
    }
    let e = err(HiresFix {
        strength: 0.1,
        ..HiresFix::default()
    });
    assert!(e.contains("leaves no step"), "{e}");
    let with_image = GenerateRequest {
        init_image: Some(Arc::new(Image {
            width: 32,
            height: 32,
            data: vec![0; 32 * 32 * 3],
        })),
        ..base.clone()
    };
    let e = pipe
        .validate(&with_image)
        .expect_err("img2img + hires")
        .to_string();
    assert!(e.contains("text to image"), "{e}");
}
