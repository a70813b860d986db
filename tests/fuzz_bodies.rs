//! Mutation fuzzing of the request bodies the HTTP APIs parse, as they arrive from the
//! network: TorchServe's `/predictions` bodies (JSON and raw text, then the checks that
//! turn them into a generation request), multipart forms, AUTOMATIC1111's txt2img and
//! img2img bodies (with a base64 init image), OpenAI's image generation bodies, and
//! A1111's prompt language (emphasis, editing, alternation, BREAK). Every parser must
//! return Ok or an error, never panic; a prompt schedule always covers every step.
//! Same seeds and `WGSD_FUZZ_ITERS` as tests/fuzz_parsers.rs (README "Fuzzing").

mod common;

use base64::Engine;
use common::Rng;
use common::fuzz::{iters, json_inputs, mutate_bytes, no_panic};
use wgsd::serve::a1111::request::{Mode, parse_as};
use wgsd::serve::request::{Defaults, parse_body};

fn defaults() -> Defaults {
    Defaults {
        steps: 5,
        width: 32,
        height: 24,
        lora_dir: None,
    }
}

#[test]
fn torchserve_bodies_never_panic() {
    let json = r#"{"prompt": "a red fox", "negative_prompt": "blurry", "seed": 42, "width": 64,
        "height": 48, "num_inference_steps": 5, "guidance_scale": 7.5, "num_images_per_prompt": 2,
        "scheduler": "euler_a", "prompt_syntax": "a1111", "strength": 0.5,
        "loras": [{"name": "x", "scale": 0.5}]}"#;
    for (s, input) in json_inputs(json, 11) {
        no_panic("predictions JSON", s, &input, |b| {
            if let Ok(params) = parse_body(b, true) {
                let _ = params.into_request(&defaults());
            }
        });
    }
    for i in 0..iters() as u64 {
        let mut rng = Rng::new(12_000_000 + i);
        let input = mutate_bytes(&mut rng, b"a red fox in the snow, (detailed:1.2)");
        no_panic("predictions raw text", i, &input, |b| {
            if let Ok(params) = parse_body(b, false) {
                let _ = params.into_request(&defaults());
            }
        });
    }
}

#[test]
fn multipart_forms_never_panic() {
    use axum::http::HeaderValue;
    let boundary = "XyZ123";
    let form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"data\"\r\n\r\na red fox\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"seed\"\r\n\r\n7\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"width\"\r\n\r\n64\r\n--{boundary}--\r\n"
    );
    let content_type = HeaderValue::from_str(&format!("multipart/form-data; boundary={boundary}"))
        .expect("header");
    let parsed = pollster::block_on(wgsd::serve::multipart::parse(
        content_type.clone(),
        form.clone().into(),
    ));
    assert!(parsed.is_ok(), "the unmutated form parses: {parsed:?}");
    for i in 0..iters() as u64 {
        let mut rng = Rng::new(13_000_000 + i);
        let input = mutate_bytes(&mut rng, form.as_bytes());
        no_panic("multipart form", i, &input, |b| {
            let body = axum::body::Bytes::copy_from_slice(b);
            if let Ok(params) =
                pollster::block_on(wgsd::serve::multipart::parse(content_type.clone(), body))
            {
                let _ = params.into_request(&defaults());
            }
        });
    }
}

/// A 16x16 PNG as A1111 clients send it (base64, optionally as a data: URL).
fn png_base64() -> String {
    let img =
        image::RgbImage::from_fn(16, 16, |x, y| image::Rgb([x as u8 * 16, y as u8 * 16, 128]));
    let mut png = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("png");
    base64::engine::general_purpose::STANDARD.encode(png)
}

#[test]
fn a1111_bodies_never_panic() {
    let txt2img = r#"{"prompt": "a (red:1.2) fox [in:on:0.5] the snow <lora:x:0.5>", "negative_prompt": "bad",
        "steps": 5, "width": 64, "height": 48, "cfg_scale": 7, "seed": -1, "batch_size": 2, "n_iter": 2,
        "sampler_name": "DPM++ 2M", "scheduler": "Karras", "send_images": true, "save_images": false,
        "override_settings": {"sd_model_checkpoint": "sd"}, "styles": [], "tiling": false}"#;
    for (s, input) in json_inputs(txt2img, 21) {
        no_panic("a1111 txt2img", s, &input, |b| {
            let _ = parse_as(b, Mode::Txt2Img);
        });
    }
    let img2img = serde_json::json!({
        "prompt": "a fox", "init_images": [format!("data:image/png;base64,{}", png_base64())],
        "denoising_strength": 0.6, "resize_mode": 0, "steps": 4, "width": 16, "height": 16,
        "sampler_name": "Euler a", "seed": 3,
    })
    .to_string();
    let parsed = parse_as(img2img.as_bytes(), Mode::Img2Img);
    assert!(
        parsed.is_ok(),
        "the unmutated img2img body parses: {parsed:?}"
    );
    for (s, input) in json_inputs(&img2img, 22) {
        no_panic("a1111 img2img", s, &input, |b| {
            let _ = parse_as(b, Mode::Img2Img);
        });
    }
}

#[test]
fn openai_bodies_never_panic() {
    let body = r#"{"prompt": "a red fox", "model": "sd", "n": 2, "size": "64x48", "response_format": "b64_json",
        "quality": "standard", "style": "vivid", "user": "u", "output_format": "png"}"#;
    for (s, input) in json_inputs(body, 31) {
        no_panic("openai generations", s, &input, |b| {
            let _ = wgsd::serve::openai::params::parse(b);
        });
    }
}

/// Random text over the prompt language's alphabet, so the grammar's corners come up.
fn prompt_text(rng: &mut Rng) -> String {
    const PIECES: [&str; 24] = [
        "(",
        ")",
        "[",
        "]",
        ":",
        "|",
        "\\",
        " ",
        "a",
        "fox",
        "0.5",
        "1.2",
        "-3",
        "1e9",
        "::",
        "BREAK",
        "AND",
        ",",
        "<lora:x:0.5>",
        "((",
        "))",
        "[[",
        "]]",
        "\u{1F98A}",
    ];
    (0..rng.range(0, 40))
        .map(|_| PIECES[rng.range(0, PIECES.len())])
        .collect()
}

#[test]
fn a1111_prompt_language_never_panics() {
    use wgsd::prompt::{entry_at, parse_attention, prompt_schedule};
    for i in 0..(iters() * 10) as u64 {
        let mut rng = Rng::new(41_000_000 + i);
        let text = prompt_text(&mut rng);
        let steps = 1 + rng.range(0, 60);
        no_panic("prompt language", i, text.as_bytes(), |_| {
            let schedule = prompt_schedule(&text, steps);
            assert!(!schedule.is_empty(), "a schedule covers the run");
            for step in 0..steps {
                let _ = entry_at(&schedule, step);
            }
            for (_, weight) in parse_attention(&text) {
                assert!(
                    weight.is_finite() || text.contains("1e9"),
                    "weight {weight} for {text:?}"
                );
            }
        });
    }
}
