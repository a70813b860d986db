//! The hires fix through the user-facing doors, each compared with diffusers' pipelines
//! composed as `wgsd::hires` defines it (tests/fixtures/hires, >= 60 dB): `wgsd generate
//! --hires-scale`, `/predictions`' `"hires"` object and A1111's `POST /sdapi/v1/txt2img`
//! with `enable_hr` (its infotext and `info`); and their bad input (an unknown upscaler,
//! a target that is not a multiple of 8) failing with clear errors.

use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::{Value, json};
use wgsd::serve::start;

mod serve_common;
use serve_common::{nested_image, post_json, tiny_config, wgsd_cli};

const MIN_PSNR: f64 = 60.0;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn reference(case: &str) -> (Value, Vec<u8>) {
    serve_common::e2e_reference("hires", case)
}

#[track_caller]
fn assert_matches(what: &str, got: &[u8], want: &[u8]) {
    serve_common::assert_psnr(what, got, want, MIN_PSNR);
}

#[test]
fn cli_generate_hires() {
    // Case 00: 32x32 -> 64x64 with "Latent", DDIM, 4 steps, strength 0.7.
    let (case, want) = reference("00_latent_ddim");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hires-cli");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out_png = dir.join("out.png");
    let s = |k: &str| case[k].to_string();
    let model = root().join("weights/sd2-tiny.zip");
    let common = [
        "--model",
        model.to_str().unwrap(),
        "--steps",
        "4",
        "--width",
        "32",
        "--height",
        "32",
        "--precision",
        "f32",
        "--no-warmup",
    ];
    let mut args = vec!["generate", case["prompt"].as_str().unwrap()];
    args.extend(common);
    let (g, seed) = (s("guidance_scale"), s("seed"));
    args.extend([
        "--guidance",
        &g,
        "--seed",
        &seed,
        "--hires-scale",
        "2",
        "--hires-strength",
        "0.7",
        "--json",
        "-o",
        out_png.to_str().unwrap(),
    ]);
    let out = wgsd_cli(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).expect("--json summary");
    assert_eq!(summary["hires"]["width"], 64);
    assert_eq!(summary["hires"]["upscaler"], "Latent");
    assert_eq!(summary["unet_evaluations"], 4 + 2, "4 steps + int(4 * 0.7)");
    let bytes = std::fs::read(&out_png).expect("png");
    let img = image::load_from_memory(&bytes).expect("png").to_rgb8();
    assert_eq!(img.dimensions(), (64, 64));
    assert_matches("wgsd generate --hires-scale 2", img.as_raw(), &want);
    let text = wgsd::png_info::read_parameters(&bytes)
        .expect("reads")
        .expect("parameters");
    assert!(
        text.contains("Size: 32x32, ")
            && text.contains("Denoising strength: 0.7, Hires upscale: 2, Hires upscaler: Latent"),
        "{text}"
    );

    let bad_out = dir.join("bad.png");
    for (extra, needle) in [
        (
            vec!["--hires-scale", "2", "--hires-upscaler", "4x-UltraSharp"],
            "\"Latent (bicubic)\"",
        ),
        (vec!["--hires-scale", "1.1"], "multiple of 8"),
        (
            vec!["--hires-scale", "2", "--hires-strength", "0"],
            "(0, 1]",
        ),
        (vec!["--hires-upscaler", "Latent"], "--hires-scale"),
    ] {
        let mut all = vec!["generate", "x"];
        all.extend(common);
        all.extend(["-o", bad_out.to_str().unwrap()]);
        all.extend(extra);
        let out = wgsd_cli(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{all:?} must fail");
        assert!(err.contains(needle), "{all:?}: {err}");
        assert!(!bad_out.exists(), "{all:?} wrote an image");
    }
}

#[test]
fn predictions_and_sdapi_txt2img_hires() {
    let server = start(tiny_config()).expect("server starts");
    let base = format!("http://{}", server.addr());

    // /predictions: case 04, "Lanczos", two images, 32x32 -> 64x64 by width/height.
    let (case, want) = reference("04_lanczos_n2");
    let body = json!({
        "prompt": case["prompt"], "seed": case["seed"], "num_inference_steps": 3,
        "guidance_scale": case["guidance_scale"], "width": 32, "height": 32, "num_images": 2,
        "hires": {"width": 64, "height": 64, "upscaler": "Lanczos", "strength": 0.7},
    });
    let (code, text) = post_json(&base, "/predictions/sd", &body);
    assert_eq!(code, 200, "{text}");
    let v: Value = serde_json::from_str(&text).expect("json");
    let items = v.as_array().expect("two images");
    assert_eq!(items.len(), 2, "{text:.200}");
    for (k, item) in items.iter().enumerate() {
        let (h, w, got) = nested_image(item);
        assert_eq!((h, w), (64, 64));
        let per = want.len() / 2;
        assert_matches(
            &format!("/predictions hires image {k}"),
            &got,
            &want[k * per..(k + 1) * per],
        );
    }
    for (bad, needle) in [
        (
            json!({"prompt": "a", "width": 32, "height": 32, "hires": {"upscaler": "SwinIR_4x"}}),
            "hires.upscaler",
        ),
        (
            json!({"prompt": "a", "width": 32, "height": 32, "hires": {"scale": 1.1}}),
            "multiple of 8",
        ),
        (
            json!({"prompt": "a", "width": 32, "height": 32, "hires": {"scale": 100}}),
            "too large",
        ),
        (
            json!({"prompt": "a", "hires": {"size": 2}}),
            "unknown field",
        ),
    ] {
        let (code, text) = post_json(&base, "/predictions/sd", &bad);
        assert_eq!(code, 400, "{bad}: {text}");
        assert!(text.contains(needle), "{bad}: {text}");
    }

    // A1111: enable_hr on case 00.
    let (case, want) = reference("00_latent_ddim");
    let body = json!({
        "prompt": case["prompt"], "seed": case["seed"], "steps": 4,
        "cfg_scale": case["guidance_scale"], "sampler_name": "DDIM", "width": 32, "height": 32,
        "enable_hr": true, "hr_scale": 2, "hr_upscaler": "Latent", "denoising_strength": 0.7,
    });
    let (code, text) = post_json(&base, "/sdapi/v1/txt2img", &body);
    assert_eq!(code, 200, "{text:.300}");
    let v: Value = serde_json::from_str(&text).expect("json");
    let info: Value = serde_json::from_str(v["info"].as_str().expect("info")).expect("info");
    assert_eq!(
        (info["width"].as_u64(), info["height"].as_u64()),
        (Some(32), Some(32)),
        "A1111 reports the first pass's size"
    );
    assert_eq!(info["denoising_strength"], 0.7);
    assert_eq!(info["extra_generation_params"]["Hires upscaler"], "Latent");
    assert_eq!(info["extra_generation_params"]["Hires upscale"], 2.0);
    assert_eq!(info["ignored"], json!([]), "{info}");
    let infotext = info["infotexts"][0].as_str().expect("infotext");
    assert!(
        infotext.ends_with("Denoising strength: 0.7, Hires upscale: 2, Hires upscaler: Latent"),
        "{infotext}"
    );
    let png = base64::engine::general_purpose::STANDARD
        .decode(v["images"][0].as_str().expect("image"))
        .expect("base64");
    let img = image::load_from_memory(&png).expect("png").to_rgb8();
    assert_eq!(img.dimensions(), (64, 64));
    assert_matches("/sdapi/v1/txt2img enable_hr", img.as_raw(), &want);

    for (bad, field) in [
        (
            json!({"prompt": "a", "enable_hr": true, "hr_upscaler": "R-ESRGAN 4x+"}),
            "hr_upscaler",
        ),
        (
            json!({"prompt": "a", "enable_hr": true, "width": 32, "height": 32, "hr_scale": 1.1}),
            "hr_scale",
        ),
        (
            json!({"prompt": "a", "enable_hr": true, "width": 32, "height": 32, "hr_resize_x": 60}),
            "hr_resize_x",
        ),
        (
            json!({"prompt": "a", "enable_hr": true, "hr_sampler_name": "Euler a"}),
            "hr_sampler_name",
        ),
    ] {
        let (code, text) = post_json(&base, "/sdapi/v1/txt2img", &bad);
        assert_eq!(code, 422, "{bad}: {text}");
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["detail"][0]["loc"][1], field, "{text}");
    }
    server.shutdown().expect("clean shutdown");
}
