//! Inpainting against diffusers' `StableDiffusionInpaintPipeline` (f32;
//! tests/fixtures/inpaint, made by make_inpaint_fixtures.py): a 9-channel inpainting UNet
//! (tests/fixtures/inpaint/sd2-tiny-inpaint.zip) and the ordinary 4-channel one of
//! weights/sd2-tiny.zip, strengths 1 and < 1, DDIM / Euler a / DPM++ 2M, two images per
//! prompt; >= 60 dB per image. Also the mask processing, batching and bad input. The
//! blend kernel's CPU-reference test is tests/kernels/mask_blend.rs.

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use wgsd::img2img;
use wgsd::inpaint::Mask;
use wgsd::pipeline::{GenerateRequest, Image, Pipeline};

use common::fixture::{Reference as Fixture, case_request, pipeline_f32};
use common::psnr;

const MIN_PSNR: f64 = 60.0;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn dir() -> PathBuf {
    root().join("tests/fixtures/inpaint")
}

fn pipeline(model: &str) -> Pipeline<'static> {
    pipeline_f32(model)
}

fn init_image() -> Arc<Image> {
    let bytes = std::fs::read(dir().join("init_64x64.png")).expect("init image");
    Arc::new(img2img::decode_image(&bytes).expect("decodes"))
}

fn mask(name: &str) -> Arc<Mask> {
    let bytes = std::fs::read(dir().join(name)).expect("mask");
    Arc::new(Mask::decode(&bytes).expect("decodes"))
}

fn request(case: &Value) -> GenerateRequest {
    GenerateRequest {
        init_image: Some(init_image()),
        mask: Some(mask(case["mask_image"].as_str().expect("mask"))),
        strength: case["strength"].as_f64().expect("strength"),
        ..case_request(case)
    }
}

#[test]
fn mask_processing_matches_diffusers() {
    let fx = Fixture::load("inpaint");
    for case in fx.cases() {
        let pre = case["tensor_prefix"].as_str().expect("prefix");
        let m = mask(case["mask_image"].as_str().expect("mask"));
        assert_eq!(m.binary(), fx.tensor(&format!("{pre}.mask")), "{pre} mask");
        assert_eq!(
            m.latent(8),
            fx.tensor(&format!("{pre}.mask_latent")),
            "{pre} latent mask"
        );
    }
}

fn check_cases(pipe: &Pipeline, fx: &Fixture, model: &str) -> usize {
    let mut ran = 0;
    for case in fx.cases().iter().filter(|c| c["model"] == model) {
        let name = case["case"].as_str().expect("case");
        let pre = case["tensor_prefix"].as_str().expect("prefix");
        let out = pipe
            .generate(&request(case))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let want_ts: Vec<f64> = case["timesteps"]
            .as_array()
            .expect("timesteps")
            .iter()
            .map(|v| v.as_f64().expect("t"))
            .collect();
        assert_eq!(out.timesteps, want_ts, "{name}: timesteps from t_start");
        let want = fx.u8s(&format!("{pre}.image_u8"));
        assert_eq!(
            out.images.len(),
            case["num_images_per_prompt"].as_u64().unwrap() as usize
        );
        let per = want.len() / out.images.len();
        for (k, img) in out.images.iter().enumerate() {
            let p = psnr(&img.data, &want[k * per..(k + 1) * per]);
            eprintln!("{name} image {k}: PSNR {p:.1} dB");
            assert!(
                p >= MIN_PSNR,
                "{name} image {k}: PSNR {p:.2} dB < {MIN_PSNR}"
            );
        }
        ran += 1;
    }
    ran
}

#[test]
fn nine_channel_unet_matches_diffusers() {
    let fx = Fixture::load("inpaint");
    let pipe = pipeline("tests/fixtures/inpaint/sd2-tiny-inpaint.zip");
    let ran = check_cases(&pipe, &fx, "tests/fixtures/inpaint/sd2-tiny-inpaint.zip");
    assert_eq!(ran, 3, "three 9-channel cases");
}

#[test]
fn four_channel_unet_matches_diffusers() {
    let fx = Fixture::load("inpaint");
    let pipe = pipeline("weights/sd2-tiny.zip");
    let ran = check_cases(&pipe, &fx, "weights/sd2-tiny.zip");
    assert_eq!(ran, 3, "three 4-channel cases");
}

#[test]
fn inpaint_batches_give_solo_results() {
    let fx = Fixture::load("inpaint");
    let pipe = pipeline("weights/sd2-tiny.zip");
    let case = &fx.cases()[4]; // 4-channel, Euler a, strength 0.6, 2 images
    assert_eq!(case["model"], "weights/sd2-tiny.zip");
    let a = request(case);
    let b = GenerateRequest {
        seed: a.seed + 100,
        prompts: vec!["a small green square".into()],
        num_images_per_prompt: 1,
        mask: Some(mask("mask_rgba_64x64.png")),
        ..request(case)
    };
    assert_eq!(pipe.batch_key(&a), pipe.batch_key(&b), "masks may differ");
    let img2img_only = GenerateRequest {
        mask: None,
        ..request(case)
    };
    assert_ne!(pipe.batch_key(&a), pipe.batch_key(&img2img_only));
    let batch = pipe
        .generate_batch(&[a.clone(), b.clone()], &mut |_| {}, None)
        .expect("batch");
    let want = fx.u8s(&format!(
        "{}.image_u8",
        case["tensor_prefix"].as_str().unwrap()
    ));
    let per = want.len() / 2;
    for k in 0..2 {
        let p = psnr(&batch[0].images[k].data, &want[k * per..(k + 1) * per]);
        assert!(p >= MIN_PSNR, "batched request a image {k}: {p:.1} dB");
    }
    let solo_b = pipe.generate(&b).expect("solo");
    let p = psnr(&batch[1].images[0].data, &solo_b.images[0].data);
    assert!(
        p >= MIN_PSNR,
        "batched request b against its solo run: {p:.1} dB"
    );
}

#[test]
fn unmasked_latents_are_the_images_with_a_four_channel_unet() {
    // The last blend puts the image's own latents back outside the mask: there the final
    // latents are the same whatever the prompt (same seed, so the same latent sample).
    let fx = Fixture::load("inpaint");
    let pipe = pipeline("weights/sd2-tiny.zip");
    let case = &fx.cases()[3];
    let run = |prompt: &str| {
        let r = GenerateRequest {
            prompts: vec![prompt.into()],
            num_images_per_prompt: 1,
            trace: true,
            ..request(case)
        };
        let out = pipe.generate(&r).expect("inpaint");
        out.trace.expect("trace").final_latents
    };
    let (a, b) = (run("a red circle"), run("something else entirely"));
    let lat = mask("mask_64x64.png").latent(8);
    let (mut kept, mut changed) = (0, 0);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        if lat[i % 64] == 0.0 {
            assert_eq!(x, y, "latent {i} outside the mask");
            kept += 1;
        } else if x != y {
            changed += 1;
        }
    }
    assert!(kept > 0 && changed > 0, "kept {kept}, changed {changed}");
}

#[test]
fn bad_inpaint_requests_are_errors() {
    let pipe4 = pipeline("weights/sd2-tiny.zip");
    let pipe9 = pipeline("tests/fixtures/inpaint/sd2-tiny-inpaint.zip");
    let base = GenerateRequest {
        width: 64,
        height: 64,
        steps: 4,
        strength: 1.0,
        init_image: Some(init_image()),
        mask: Some(mask("mask_64x64.png")),
        ..GenerateRequest::new("x")
    };
    pipe4.validate(&base).expect("good 4-channel request");
    pipe9.validate(&base).expect("good 9-channel request");
    let err = |p: &Pipeline, r: GenerateRequest| p.validate(&r).expect_err("must fail").to_string();
    let e = err(
        &pipe4,
        GenerateRequest {
            init_image: None,
            ..base.clone()
        },
    );
    assert!(e.contains("mask needs an init image"), "{e}");
    let small = Mask {
        width: 32,
        height: 64,
        data: vec![255; 32 * 64],
    };
    let e = err(
        &pipe4,
        GenerateRequest {
            mask: Some(Arc::new(small)),
            ..base.clone()
        },
    );
    assert!(e.contains("32 x 64") && e.contains("same size"), "{e}");
    for r in [
        GenerateRequest {
            mask: None,
            ..base.clone()
        },
        GenerateRequest {
            mask: None,
            init_image: None,
            ..base.clone()
        },
    ] {
        let e = err(&pipe9, r);
        assert!(e.contains("9 input channels"), "{e}");
    }
    assert!(Mask::decode(b"GIF89a...").is_err());
}

#[test]
fn an_inpainting_model_warms_up_with_an_image_and_a_mask() {
    // Plain text to image is refused by a 9-channel UNet, so the warm-up inpaints.
    let pipe = pipeline("tests/fixtures/inpaint/sd2-tiny-inpaint.zip");
    let w = pipe.warm_up(64, 64, 1).expect("warm-up");
    assert_eq!((w.width, w.height, w.batch), (64, 64, 1));
    assert_eq!(pipe.unet_in_channels(), 9);
    assert!(
        pipe.vae_encoder_loaded(),
        "the masked image went through the encoder"
    );
}
