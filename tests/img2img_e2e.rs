//! img2img through the user-facing doors, each compared with diffusers'
//! `StableDiffusionImg2ImgPipeline` (tests/fixtures/img2img, >= 60 dB): `wgsd generate
//! --init-image --strength`, `/predictions` JSON (`init_image` base64, `strength`) and
//! A1111's `POST /sdapi/v1/img2img` (`init_images`, `denoising_strength`); and their bad
//! input (a non-image, strength outside (0, 1], a mask that is no image) failing with clear errors.

use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::{Value, json};
use wgsd::serve::{Server, start};

mod serve_common;
use serve_common::{decode_nested, post_json, tiny_config, wgsd_cli};

const MIN_PSNR: f64 = 60.0;
/// Case 00 of the fixture: DDIM (the archive's scheduler), strength 0.75, 4 steps.
const CASE: &str = "00_ddim_s075";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/img2img").join(name)
}

fn reference(case: &str) -> (Value, Vec<u8>) {
    serve_common::e2e_reference("img2img", case)
}

#[track_caller]
fn assert_matches(what: &str, got: &[u8], want: &[u8]) {
    serve_common::assert_psnr(what, got, want, MIN_PSNR);
}

#[test]
fn cli_generate_init_image() {
    let (case, want) = reference(CASE);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("img2img-cli");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out_png = dir.join("out.png");
    let init = fixture(case["init_image"].as_str().unwrap());
    let s = |k: &str| case[k].to_string();
    let model = root().join("weights/sd2-tiny.zip");
    let out = wgsd_cli(&[
        "generate",
        case["prompt"].as_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--init-image",
        init.to_str().unwrap(),
        "--strength",
        &s("strength"),
        "--steps",
        &s("num_inference_steps"),
        "--guidance",
        &s("guidance_scale"),
        "--seed",
        &s("seed"),
        "--precision",
        "f32",
        "--no-warmup",
        "--json",
        "-o",
        out_png.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).expect("--json summary");
    assert_eq!(summary["strength"], case["strength"]);
    assert_eq!(
        (summary["width"].as_u64(), summary["height"].as_u64()),
        (Some(64), Some(64))
    );
    assert_eq!(summary["unet_evaluations"], 3, "int(4 * 0.75) steps");
    let img = image::open(&out_png).expect("png").to_rgb8();
    assert_matches("wgsd generate --init-image", img.as_raw(), &want);

    // Bad input: a non-image, a strength outside (0, 1]; nothing is written.
    let text = dir.join("not-an-image.png");
    std::fs::write(&text, "hello").unwrap();
    let bad_out = dir.join("bad.png");
    for (args, needle) in [
        (
            vec!["--init-image", text.to_str().unwrap()],
            "not a PNG or JPEG",
        ),
        (
            vec!["--init-image", init.to_str().unwrap(), "--strength", "1.5"],
            "strength",
        ),
        (
            vec!["--init-image", init.to_str().unwrap(), "--strength", "0"],
            "strength",
        ),
        (vec!["--strength", "0.5"], "--init-image"),
    ] {
        let mut all = vec![
            "generate",
            "x",
            "--model",
            model.to_str().unwrap(),
            "--steps",
            "2",
            "--no-warmup",
            "-o",
            bad_out.to_str().unwrap(),
        ];
        all.extend(args);
        let out = wgsd_cli(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{all:?} must fail");
        assert!(err.contains(needle), "{all:?}: {err}");
        assert!(!bad_out.exists(), "{all:?} wrote an image");
    }
}

fn serve() -> (Server, String) {
    let server = start(tiny_config()).expect("server starts");
    let base = format!("http://{}", server.addr());
    (server, base)
}

fn init_b64(case: &Value) -> String {
    let png = std::fs::read(fixture(case["init_image"].as_str().unwrap())).unwrap();
    base64::engine::general_purpose::STANDARD.encode(png)
}

#[test]
fn predictions_and_sdapi_img2img() {
    let (case, want) = reference(CASE);
    let (server, base) = serve();
    let b64 = init_b64(&case);

    // /predictions: diffusers' argument names; the size is the image's.
    let body = json!({
        "prompt": case["prompt"], "init_image": b64, "strength": case["strength"],
        "num_inference_steps": case["num_inference_steps"], "seed": case["seed"],
        "guidance_scale": case["guidance_scale"],
    });
    let (code, text) = post_json(&base, "/predictions/sd", &body);
    assert_eq!(code, 200, "{text}");
    let (h, w, got) = decode_nested(&text);
    assert_eq!((h, w), (64, 64));
    assert_matches("/predictions init_image", &got, &want);
    for (bad, needle) in [
        (
            json!({"prompt": "a", "init_image": "aGVsbG8="}),
            "not a PNG or JPEG",
        ),
        (
            json!({"prompt": "a", "init_image": b64, "strength": 2.0}),
            "strength",
        ),
        (
            json!({"prompt": "a", "init_image": b64, "strength": 0.1,
                "num_inference_steps": 3}),
            "no denoising step",
        ),
    ] {
        let (code, text) = post_json(&base, "/predictions/sd", &bad);
        assert_eq!(code, 400, "{bad}: {text}");
        assert!(text.contains(needle), "{bad}: {text}");
    }

    // A1111: init_images + denoising_strength, DDIM by its A1111 name.
    let body = json!({
        "prompt": case["prompt"], "init_images": [b64],
        "denoising_strength": case["strength"], "steps": case["num_inference_steps"],
        "seed": case["seed"], "cfg_scale": case["guidance_scale"], "sampler_name": "DDIM",
        "width": 64, "height": 64, "resize_mode": 0, "mask_blur": 4,
    });
    let (code, text) = post_json(&base, "/sdapi/v1/img2img", &body);
    assert_eq!(code, 200, "{text}");
    let v: Value = serde_json::from_str(&text).expect("json");
    let info: Value = serde_json::from_str(v["info"].as_str().expect("info")).expect("info");
    assert_eq!(info["denoising_strength"], case["strength"]);
    assert_eq!(info["ignored"], json!([]), "{info}");
    let png = base64::engine::general_purpose::STANDARD
        .decode(v["images"][0].as_str().expect("image"))
        .expect("base64");
    let img = image::load_from_memory(&png).expect("png").to_rgb8();
    assert_matches("/sdapi/v1/img2img", img.as_raw(), &want);

    for (bad, field) in [
        (
            json!({"prompt": "a", "init_images": [b64], "mask": "aGVsbG8="}),
            "mask",
        ),
        (
            json!({"prompt": "a", "init_images": ["aGVsbG8="]}),
            "init_images",
        ),
        (json!({"prompt": "a"}), "init_images"),
        (
            json!({"prompt": "a", "init_images": [b64], "denoising_strength": 1.5}),
            "denoising_strength",
        ),
        (
            json!({"prompt": "a", "init_images": [b64], "resize_mode": 2}),
            "resize_mode",
        ),
    ] {
        let (code, text) = post_json(&base, "/sdapi/v1/img2img", &bad);
        assert_eq!(code, 422, "{bad}: {text}");
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["detail"][0]["loc"][1], field, "{text}");
    }
    server.shutdown().expect("clean shutdown");
}
