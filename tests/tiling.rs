//! Seamless tiling (AUTOMATIC1111's "Tiling"): with `tiling` on, every UNet and VAE
//! convolution pads circularly. Checked against diffusers with every `nn.Conv2d` of the
//! UNet and VAE set to `padding_mode="circular"` (tests/fixtures/tiling, made by
//! make_tiling_fixtures.py; >= 60 dB, f32), and on the image itself: its left and right
//! edges (and top and bottom) continue each other, which the untiled image's do not.
//! The circular convolution's own CPU reference test is in tests/kernels/pad.rs.

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};

use serde_json::Value;
use wgsd::loader::ArchiveOptions;
use wgsd::pipeline::{GenerateRequest, Pipeline, PipelineOptions, VaeTiling};

use common::{gpu, psnr};

const MIN_PSNR: f64 = 60.0;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn pipeline() -> Pipeline<'static> {
    let opts = PipelineOptions {
        precision: wgsd::Precision::F32,
        archive: ArchiveOptions {
            cache_dir: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("model-cache")),
            ..ArchiveOptions::default()
        },
    };
    Pipeline::load(gpu(), &root().join("weights/sd2-tiny.zip"), &opts).expect("load sd2-tiny")
}

fn request(case: &Value, tiling: bool) -> GenerateRequest {
    let n = |k: &str| case[k].as_u64().expect(k) as usize;
    GenerateRequest {
        seed: case["seed"].as_u64().expect("seed"),
        steps: n("num_inference_steps"),
        guidance: case["guidance_scale"].as_f64().expect("guidance") as f32,
        width: n("width"),
        height: n("height"),
        vae_tiling: VaeTiling::Off,
        tiling,
        ..GenerateRequest::new(case["prompt"].as_str().expect("prompt"))
    }
}

/// Mean absolute difference between pixel columns `a` and `b` (or rows, `by_rows`).
fn line_diff(img: &[u8], w: usize, h: usize, a: usize, b: usize, by_rows: bool) -> f64 {
    let px = |x: usize, y: usize, c: usize| f64::from(img[(y * w + x) * 3 + c]);
    let (len, pair): (usize, Box<dyn Fn(usize, usize) -> f64>) = if by_rows {
        (w, Box::new(|i, c| (px(i, a, c) - px(i, b, c)).abs()))
    } else {
        (h, Box::new(|i, c| (px(a, i, c) - px(b, i, c)).abs()))
    };
    let sum: f64 = (0..len)
        .flat_map(|i| (0..3).map(move |c| (i, c)))
        .map(|(i, c)| pair(i, c))
        .sum();
    sum / (len * 3) as f64
}

/// The wrap-around seam (last column against the first) relative to the typical step
/// between neighbouring columns inside the image; same for rows.
fn seam_ratios(img: &[u8], w: usize, h: usize) -> (f64, f64) {
    let inner = |n: usize, by_rows: bool| {
        (0..n - 1)
            .map(|i| line_diff(img, w, h, i, i + 1, by_rows))
            .sum::<f64>()
            / (n - 1) as f64
    };
    (
        line_diff(img, w, h, w - 1, 0, false) / inner(w, false),
        line_diff(img, w, h, h - 1, 0, true) / inner(h, true),
    )
}

#[test]
fn tiling_matches_diffusers_circular_convolutions_and_wraps_without_seams() {
    let dir = root().join("tests/fixtures/tiling");
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).expect("json"))
            .expect("json");
    let refs = std::fs::read(dir.join("reference.safetensors")).expect("safetensors");
    let st = safetensors::SafeTensors::deserialize(&refs).expect("safetensors");
    let pipe = pipeline();
    for case in json["cases"].as_array().expect("cases") {
        let name = case["case"].as_str().expect("case");
        let pre = case["tensor_prefix"].as_str().expect("prefix");
        let (w, h) = (
            case["width"].as_u64().expect("w") as usize,
            case["height"].as_u64().expect("h") as usize,
        );
        let tiled = pipe.generate(&request(case, true)).expect("tiled");
        let want = st.tensor(&format!("{pre}.image_u8")).expect("image");
        let p = psnr(&tiled.images[0].data, want.data());
        let plain = pipe.generate(&request(case, false)).expect("plain");
        let p_plain = psnr(&plain.images[0].data, want.data());
        let (sx, sy) = seam_ratios(&tiled.images[0].data, w, h);
        let (px, py) = seam_ratios(&plain.images[0].data, w, h);
        eprintln!(
            "{name}: PSNR {p:.1} dB (untiled image against it: {p_plain:.1} dB); seam/inner \
             tiled {sx:.2} x {sy:.2}, untiled {px:.2} x {py:.2}"
        );
        assert!(p >= MIN_PSNR, "{name}: PSNR {p:.2} dB < {MIN_PSNR}");
        assert!(
            p_plain < 40.0,
            "{name}: tiling changed nothing ({p_plain:.1} dB)"
        );
        // The wrap-around step (last column to first, last row to first) is like any
        // step between neighbours inside the image. (The untiled image's ratio is printed
        // for comparison only: with random weights its zero-padded borders happen to be
        // alike, so it is no baseline to beat.)
        for (what, r) in [("columns", sx), ("rows", sy)] {
            assert!((0.5..1.5).contains(&r), "{name}: {what} seam/inner {r:.2}");
        }
    }
}

#[test]
fn tiling_with_a_tiled_vae_decode_is_refused() {
    let pipe = pipeline();
    let req = GenerateRequest {
        tiling: true,
        vae_tiling: VaeTiling::On,
        steps: 1,
        width: 64,
        height: 48,
        ..GenerateRequest::new("x")
    };
    let err = pipe.generate(&req).expect_err("refused").to_string();
    assert!(err.contains("seamless tiling"), "{err}");
}
