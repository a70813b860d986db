//! Inpainting through the user-facing doors, each compared with diffusers'
//! `StableDiffusionInpaintPipeline` (tests/fixtures/inpaint, >= 60 dB): `wgsd generate
//! --init-image --mask` (the 9-channel fixture model), `/predictions` JSON (`init_image`,
//! `mask`) and A1111's `POST /sdapi/v1/img2img` (`init_images`, `mask`, `mask_blur: 0`,
//! `inpainting_fill: 1`) on sd2-tiny's 4-channel UNet; and their bad input failing with
//! clear errors.

use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::{Value, json};
use wgsd::serve::{Server, start};

mod serve_common;
use serve_common::{decode_nested, post_json, tiny_config, wgsd_cli};

const MIN_PSNR: f64 = 60.0;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/inpaint").join(name)
}

fn reference(case: &str) -> (Value, Vec<u8>) {
    serve_common::e2e_reference("inpaint", case)
}

#[track_caller]
fn assert_matches(what: &str, got: &[u8], want: &[u8]) {
    serve_common::assert_psnr(what, got, want, MIN_PSNR);
}

#[test]
fn cli_generate_mask_with_an_inpainting_unet() {
    let (case, want) = reference("00_unet9_ddim_s1_n2");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("inpaint-cli");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out_png = dir.join("out.png");
    let init = fixture("init_64x64.png");
    let mask = fixture(case["mask_image"].as_str().unwrap());
    let model = fixture("sd2-tiny-inpaint.zip");
    let s = |k: &str| case[k].to_string();
    let out = wgsd_cli(&[
        "generate",
        case["prompt"].as_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--init-image",
        init.to_str().unwrap(),
        "--mask",
        mask.to_str().unwrap(),
        "--scheduler",
        "ddim",
        "--num-images",
        "2",
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
    assert_eq!(summary["strength"], 1.0, "inpainting's default strength");
    assert_eq!(summary["unet_evaluations"], 4, "every step at strength 1");
    assert!(
        summary["mask"]
            .as_str()
            .is_some_and(|m| m.ends_with(".png"))
    );
    let per = want.len() / 2;
    for k in 0..2 {
        let img = image::open(dir.join(format!("out-{k}.png")))
            .expect("png")
            .to_rgb8();
        assert_matches(
            &format!("wgsd generate --mask image {k}"),
            img.as_raw(),
            &want[k * per..(k + 1) * per],
        );
    }

    // Bad input; nothing is written.
    let text = dir.join("not-an-image.png");
    std::fs::write(&text, "hello").unwrap();
    let small = dir.join("small-mask.png");
    image::GrayImage::new(32, 32).save(&small).unwrap();
    let sd2 = root().join("weights/sd2-tiny.zip");
    let bad_out = dir.join("bad.png");
    let (i, m) = (init.to_str().unwrap(), mask.to_str().unwrap());
    for (model, args, needle) in [
        (
            &model,
            vec!["--init-image", i, "--mask", text.to_str().unwrap()],
            "mask: not a PNG or JPEG",
        ),
        (
            &model,
            vec!["--init-image", i, "--mask", small.to_str().unwrap()],
            "same size",
        ),
        (&model, vec!["--mask", m], "--init-image"),
        (&model, vec!["--init-image", i], "9 input channels"),
        (&model, vec![], "9 input channels"),
        (
            &sd2,
            vec!["--init-image", i, "--mask", m, "--strength", "0.1"],
            "no denoising step",
        ),
    ] {
        let mut all = vec![
            "generate",
            "x",
            "--model",
            model.to_str().unwrap(),
            "--steps",
            "2",
            "--width",
            "64",
            "--height",
            "64",
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

fn b64(name: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(fixture(name)).unwrap())
}

#[test]
fn predictions_and_sdapi_img2img_with_a_mask() {
    // sd2-tiny's ordinary UNet, Euler a, strength 1, an RGBA mask.
    let (case, want) = reference("05_unet4_euler_a_s1");
    let (server, base) = serve();
    let (init, mask) = (
        b64("init_64x64.png"),
        b64(case["mask_image"].as_str().unwrap()),
    );

    let body = json!({
        "prompt": case["prompt"], "init_image": init, "mask": mask,
        "scheduler": case["scheduler"], "num_inference_steps": case["num_inference_steps"],
        "seed": case["seed"], "guidance_scale": case["guidance_scale"],
    });
    let (code, text) = post_json(&base, "/predictions/sd", &body);
    assert_eq!(code, 200, "{text}");
    let (h, w, got) = decode_nested(&text);
    assert_eq!((h, w), (64, 64));
    assert_matches("/predictions mask", &got, &want);
    let small = base64::engine::general_purpose::STANDARD.encode({
        let mut out = std::io::Cursor::new(Vec::new());
        image::GrayImage::new(16, 16)
            .write_to(&mut out, image::ImageFormat::Png)
            .unwrap();
        out.into_inner()
    });
    for (bad, needle) in [
        (json!({"prompt": "a", "mask": mask}), "needs an init_image"),
        (
            json!({"prompt": "a", "init_image": init, "mask": "aGVsbG8="}),
            "mask: not a PNG",
        ),
        (
            json!({"prompt": "a", "init_image": init, "mask": small}),
            "same size",
        ),
    ] {
        let (code, text) = post_json(&base, "/predictions/sd", &bad);
        assert_eq!(code, 400, "{bad}: {text}");
        assert!(text.contains(needle), "{bad}: {text}");
    }

    // A1111: no blur (diffusers' mask), the original content under the mask.
    let body = json!({
        "prompt": case["prompt"], "init_images": [init], "mask": mask,
        "denoising_strength": 1.0, "steps": case["num_inference_steps"],
        "seed": case["seed"], "cfg_scale": case["guidance_scale"], "sampler_name": "Euler a",
        "width": 64, "height": 64, "mask_blur": 0, "inpainting_fill": 1,
        "inpaint_full_res": false, "inpainting_mask_invert": 0,
    });
    let (code, text) = post_json(&base, "/sdapi/v1/img2img", &body);
    assert_eq!(code, 200, "{text}");
    let v: Value = serde_json::from_str(&text).expect("json");
    let info: Value = serde_json::from_str(v["info"].as_str().expect("info")).expect("info");
    assert_eq!(info["ignored"], json!([]), "{info}");
    let png = base64::engine::general_purpose::STANDARD
        .decode(v["images"][0].as_str().expect("image"))
        .expect("base64");
    let img = image::load_from_memory(&png).expect("png").to_rgb8();
    assert_matches("/sdapi/v1/img2img mask", img.as_raw(), &want);

    // Inverting the mask repaints the other part: another image.
    let inverted = json!({"inpainting_mask_invert": 1});
    let mut body2 = body.clone();
    body2
        .as_object_mut()
        .unwrap()
        .extend(inverted.as_object().unwrap().clone());
    let (code, text) = post_json(&base, "/sdapi/v1/img2img", &body2);
    assert_eq!(code, 200, "{text}");
    let v: Value = serde_json::from_str(&text).expect("json");
    let png = base64::engine::general_purpose::STANDARD
        .decode(v["images"][0].as_str().expect("image"))
        .expect("base64");
    let inv = image::load_from_memory(&png).expect("png").to_rgb8();
    assert!(
        serve_common::psnr(inv.as_raw(), &want) < 40.0,
        "the inverted mask changes the image"
    );

    for (extra, field) in [
        (json!({"inpainting_fill": 0}), "inpainting_fill"),
        (json!({"inpainting_fill": 2}), "inpainting_fill"),
        (json!({"inpaint_full_res": true}), "inpaint_full_res"),
        (json!({"mask": "aGVsbG8="}), "mask"),
    ] {
        let mut bad = body.clone();
        bad.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (code, text) = post_json(&base, "/sdapi/v1/img2img", &bad);
        assert_eq!(code, 422, "{extra}: {text}");
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["detail"][0]["loc"][1], field, "{text}");
    }
    // txt2img takes no mask.
    let (code, text) = post_json(
        &base,
        "/sdapi/v1/txt2img",
        &json!({"prompt": "a", "mask": mask}),
    );
    assert_eq!(code, 422, "{text}");
    server.shutdown().expect("clean shutdown");
}
