//! img2img against diffusers' `StableDiffusionImg2ImgPipeline` on sd2-tiny (f32;
//! tests/fixtures/img2img, made by make_img2img_fixtures.py): the VAE encoder's moments,
//! the starting latents after `add_noise`, and the images (>= 60 dB) for several
//! schedulers and strengths; batching; bad input. The kernels' CPU-reference tests are in
//! tests/kernels/latent_sample.rs and conv2d.rs (`pad_end`).

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use wgsd::gpu::{DType, Recorder, Tensor};
use wgsd::img2img;
use wgsd::pipeline::{GenerateRequest, Image, Pipeline};

use common::fixture::{Reference as Fixture, case_request, pipeline_f32, rel_err};
use common::psnr;

const MIN_PSNR: f64 = 60.0;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn dir() -> PathBuf {
    root().join("tests/fixtures/img2img")
}

fn pipeline() -> Pipeline<'static> {
    pipeline_f32("weights/sd2-tiny.zip")
}

fn init_image(name: &str) -> Arc<Image> {
    let bytes = std::fs::read(dir().join(name)).expect("init image");
    Arc::new(img2img::decode_image(&bytes).expect("decodes"))
}

fn request(case: &Value) -> GenerateRequest {
    GenerateRequest {
        init_image: Some(init_image(case["init_image"].as_str().expect("image"))),
        strength: case["strength"].as_f64().expect("strength"),
        ..case_request(case)
    }
}

#[test]
fn vae_encoder_matches_diffusers() {
    let fx = Fixture::load("img2img");
    let pipe = pipeline();
    assert!(!pipe.vae_encoder_loaded(), "not loaded for text to image");
    let img = init_image("init_64x64.png");
    let pixels = img2img::to_pixels(&img);
    assert_eq!(
        pixels,
        fx.tensor("vae_encoder.image"),
        "VaeImageProcessor.preprocess"
    );
    let enc = pipe.vae_encoder().expect("encoder");
    assert!(pipe.vae_encoder_loaded());
    let gpu = pipe.gpu();
    let mut rec = Recorder::new(gpu);
    let x = Tensor::from_f32(gpu, &[1, 3, 64, 64], &pixels, DType::F32).unwrap();
    let moments = enc.forward(&mut rec, &x).expect("encode");
    assert_eq!(moments.shape(), [1, 8, 8, 8]);
    let got = rec.read_f32(&moments).unwrap();
    let want = fx.tensor("vae_encoder.moments");
    let e = rel_err(&got, &want);
    eprintln!("encoder moments: relative max error {e:.2e}");
    assert!(e < 1e-4, "moments relative error {e}");
    let mean = fx.tensor("vae_encoder.mean");
    assert_eq!(&want[..mean.len()], &mean[..], "mean is the first half");
}

#[test]
fn img2img_matches_diffusers() {
    let fx = Fixture::load("img2img");
    let pipe = pipeline();
    for case in fx.cases() {
        let name = case["case"].as_str().expect("case");
        let pre = case["tensor_prefix"].as_str().expect("prefix");
        let req = GenerateRequest {
            trace: true,
            ..request(case)
        };
        let out = pipe
            .generate(&req)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let want_ts: Vec<f64> = case["timesteps"]
            .as_array()
            .expect("timesteps")
            .iter()
            .map(|v| v.as_f64().expect("t"))
            .collect();
        assert_eq!(out.timesteps, want_ts, "{name}: timesteps from t_start");
        assert_eq!(out.steps_done, want_ts.len(), "{name}");
        let tr = out.trace.as_ref().expect("trace");
        let init_err = rel_err(&tr.latents_init, &fx.tensor(&format!("{pre}.latents_init")));
        let final_err = rel_err(
            &tr.final_latents,
            &fx.tensor(&format!("{pre}.final_latents")),
        );
        let want = fx.u8s(&format!("{pre}.image_u8"));
        let per = want.len() / out.images.len();
        for (k, img) in out.images.iter().enumerate() {
            let p = psnr(&img.data, &want[k * per..(k + 1) * per]);
            eprintln!(
                "{name} image {k}: PSNR {p:.1} dB; latents_init rel {init_err:.1e}, final rel {final_err:.1e}"
            );
            assert!(
                p >= MIN_PSNR,
                "{name} image {k}: PSNR {p:.2} dB < {MIN_PSNR}"
            );
        }
        assert!(
            init_err < 1e-4,
            "{name}: starting latents off by {init_err}"
        );
    }
}

#[test]
fn img2img_batches_give_solo_results() {
    let fx = Fixture::load("img2img");
    let pipe = pipeline();
    let case = &fx.cases()[1]; // Euler a: ancestral noise from each request's generator
    let a = request(case);
    let b = GenerateRequest {
        seed: a.seed + 100,
        prompts: vec!["a small green square".into()],
        num_images_per_prompt: 1,
        ..request(case)
    };
    assert_eq!(pipe.batch_key(&a), pipe.batch_key(&b));
    let txt = GenerateRequest {
        init_image: None,
        ..request(case)
    };
    assert_ne!(
        pipe.batch_key(&a),
        pipe.batch_key(&txt),
        "img2img and txt2img"
    );
    let other = GenerateRequest {
        strength: 0.9,
        ..request(case)
    };
    assert_ne!(pipe.batch_key(&a), pipe.batch_key(&other), "strengths");
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
        assert!(p >= MIN_PSNR, "batched request a image {k}: {p:.1} dB");
    }
    let p = psnr(&batch[1].images[0].data, &solo_b.images[0].data);
    assert!(
        p >= MIN_PSNR,
        "batched request b against its solo run: {p:.1} dB"
    );
}

#[test]
fn bad_img2img_requests_are_errors() {
    let pipe = pipeline();
    let img = init_image("init_64x64.png");
    let base = GenerateRequest {
        width: 64,
        height: 64,
        steps: 4,
        init_image: Some(img),
        ..GenerateRequest::new("x")
    };
    let err = |r: GenerateRequest| pipe.validate(&r).expect_err("must fail").to_string();
    let e = err(GenerateRequest {
        width: 48,
        ..base.clone()
    });
    assert!(e.contains("64 x 64") && e.contains("48 x 64"), "{e}");
    for s in [0.0, -0.1, 1.01, f64::NAN] {
        let e = err(GenerateRequest {
            strength: s,
            ..base.clone()
        });
        assert!(e.contains("strength"), "{s}: {e}");
    }
    let e = err(GenerateRequest {
        strength: 0.2,
        ..base.clone()
    });
    assert!(e.contains("no denoising step"), "{e}");
    pipe.validate(&base).expect("a good request");
    assert!(img2img::decode_image(b"GIF89a...").is_err());
}
