//! The bundled trained model, weights/shapes-tiny.zip (made by weights/make_shapes_model.py):
//! it draws what the prompt asks. For every colour x background (the shape cycles) wgsd
//! generates at the native 64 x 64 in f32 with a fixed seed, 20 steps, guidance 7.5, and
//! the mean colour of the centre patch must be nearest (of the 4 colours) to the prompt's
//! colour, the mean of the four corner patches nearest (of the 3 backgrounds) to its
//! background. And one image equals diffusers' f32 image (reference.png) at >= 60 dB.

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};

use common::{gpu, psnr};
use serde_json::Value;
use wgsd::loader::ArchiveOptions;
use wgsd::pipeline::{GenerateRequest, Pipeline, PipelineOptions, VaeTiling};

/// The palette of make_shapes_model.py (RGB 0-255); checked against reference.json.
const COLOURS: [(&str, [f64; 3]); 4] = [
    ("red", [220.0, 30.0, 30.0]),
    ("green", [30.0, 170.0, 50.0]),
    ("blue", [30.0, 60.0, 220.0]),
    ("yellow", [240.0, 210.0, 30.0]),
];
const BACKGROUNDS: [(&str, [f64; 3]); 3] = [
    ("white", [255.0, 255.0, 255.0]),
    ("black", [0.0, 0.0, 0.0]),
    ("gray", [128.0, 128.0, 128.0]),
];
const SHAPES: [&str; 3] = ["circle", "square", "triangle"];
const SIZE: usize = 64;
/// Side of the centre patch and of each corner patch (pixels).
const PATCH: usize = 8;
const STEPS: usize = 20;
const GUIDANCE: f32 = 7.5;
const MIN_PSNR: f64 = 60.0;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn reference_json() -> Value {
    let path = root().join("tests/fixtures/shapes-tiny/reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (made by weights/make_shapes_model.py)",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn load() -> Pipeline<'static> {
    let opts = PipelineOptions {
        precision: wgsd::Precision::F32,
        archive: ArchiveOptions {
            cache_dir: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("model-cache")),
            ..ArchiveOptions::default()
        },
    };
    let archive = root().join("weights/shapes-tiny.zip");
    Pipeline::load(gpu(), &archive, &opts).unwrap_or_else(|e| panic!("{}: {e}", archive.display()))
}

/// The tests share one GPU and its activation arena: one at a time (see tests/pipeline.rs).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn generate(pipe: &Pipeline, prompt: &str, seed: u64) -> Vec<u8> {
    let req = GenerateRequest {
        prompts: vec![prompt.to_string()],
        seed,
        steps: STEPS,
        guidance: GUIDANCE,
        width: SIZE,
        height: SIZE,
        vae_tiling: VaeTiling::Off,
        ..GenerateRequest::default()
    };
    let out = pipe
        .generate(&req)
        .unwrap_or_else(|e| panic!("{prompt:?} seed {seed}: {e}"));
    assert_eq!(out.images.len(), 1, "{prompt:?}: image count");
    let img = &out.images[0];
    assert_eq!(
        (img.width, img.height),
        (SIZE, SIZE),
        "{prompt:?}: image size"
    );
    img.data.clone()
}

/// Mean RGB of the `PATCH` x `PATCH` square whose top-left pixel is (x, y).
fn patch_mean(rgb: &[u8], x: usize, y: usize) -> [f64; 3] {
    let mut sum = [0f64; 3];
    for row in y..y + PATCH {
        for col in x..x + PATCH {
            let p = (row * SIZE + col) * 3;
            for (c, s) in sum.iter_mut().enumerate() {
                *s += f64::from(rgb[p + c]);
            }
        }
    }
    sum.map(|s| s / (PATCH * PATCH) as f64)
}

/// (centre patch mean, mean of the four corner patches).
fn measure(rgb: &[u8]) -> ([f64; 3], [f64; 3]) {
    let c0 = SIZE / 2 - PATCH / 2;
    let e = SIZE - PATCH;
    let corners = [(0, 0), (e, 0), (0, e), (e, e)].map(|(x, y)| patch_mean(rgb, x, y));
    let mut mean = [0f64; 3];
    for c in corners {
        for (m, v) in mean.iter_mut().zip(c) {
            *m += v / 4.0;
        }
    }
    (patch_mean(rgb, c0, c0), mean)
}

fn nearest(rgb: [f64; 3], palette: &[(&'static str, [f64; 3])]) -> &'static str {
    let dist = |p: [f64; 3]| p.iter().zip(rgb).map(|(a, b)| (a - b).powi(2)).sum::<f64>();
    palette
        .iter()
        .min_by(|a, b| dist(a.1).total_cmp(&dist(b.1)))
        .map(|p| p.0)
        .expect("a non-empty palette")
}

fn fmt(rgb: [f64; 3]) -> String {
    format!("({:5.1}, {:5.1}, {:5.1})", rgb[0], rgb[1], rgb[2])
}

fn save_png(path: &Path, rgb: &[u8], width: usize, height: usize) {
    image::save_buffer(
        path,
        rgb,
        width as u32,
        height as u32,
        image::ExtendedColorType::Rgb8,
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// The images as a grid (a row per background, a column per colour), 4 px gaps.
fn contact_sheet(images: &[Vec<u8>], cols: usize) -> (Vec<u8>, usize, usize) {
    let gap = 4;
    let rows = images.len().div_ceil(cols);
    let (w, h) = (cols * (SIZE + gap) + gap, rows * (SIZE + gap) + gap);
    let mut sheet = vec![200u8; w * h * 3];
    for (i, img) in images.iter().enumerate() {
        let (x0, y0) = (
            gap + (i % cols) * (SIZE + gap),
            gap + (i / cols) * (SIZE + gap),
        );
        for y in 0..SIZE {
            let dst = ((y0 + y) * w + x0) * 3;
            sheet[dst..dst + SIZE * 3].copy_from_slice(&img[y * SIZE * 3..(y + 1) * SIZE * 3]);
        }
    }
    (sheet, w, h)
}

#[test]
fn palette_matches_the_training_script() {
    let json = reference_json();
    let pal = &json["palette"];
    for (table, key) in [(&COLOURS[..], "colours"), (&BACKGROUNDS[..], "backgrounds")] {
        let want = pal[key].as_object().expect("palette entries");
        assert_eq!(want.len(), table.len(), "{key}");
        for (name, rgb) in table {
            let got: Vec<f64> = want[*name]
                .as_array()
                .unwrap_or_else(|| panic!("{key}.{name} missing"))
                .iter()
                .map(|v| v.as_f64().expect("a number"))
                .collect();
            assert_eq!(got, rgb.to_vec(), "{key}.{name}");
        }
    }
    assert_eq!(json["patch"].as_u64(), Some(PATCH as u64));
}

#[test]
fn draws_every_colour_on_every_background() {
    let _guard = serial();
    let pipe = load();
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("shapes-tiny");
    std::fs::create_dir_all(&out_dir).expect("create the output folder");
    let mut images = Vec::new();
    let mut failures = Vec::new();
    for i in 0..COLOURS.len() * BACKGROUNDS.len() {
        let (colour, background, shape) = (
            COLOURS[i % COLOURS.len()].0,
            BACKGROUNDS[i / COLOURS.len()].0,
            SHAPES[i % SHAPES.len()],
        );
        let prompt = format!("a {colour} {shape} on a {background} background");
        let seed = 1000 + i as u64;
        let rgb = generate(&pipe, &prompt, seed);
        let (centre, corners) = measure(&rgb);
        let (got_c, got_b) = (nearest(centre, &COLOURS), nearest(corners, &BACKGROUNDS));
        let ok = got_c == colour && got_b == background;
        eprintln!(
            "{} seed {seed} {prompt:42} centre {} -> {got_c:6}  corners {} -> {got_b}",
            if ok { "ok  " } else { "FAIL" },
            fmt(centre),
            fmt(corners)
        );
        if !ok {
            failures.push(format!(
                "{prompt:?} (seed {seed}): centre {} is nearest {got_c}, corners {} nearest {got_b}",
                fmt(centre),
                fmt(corners)
            ));
        }
        save_png(
            &out_dir.join(format!("{i:02}-{}.png", prompt.replace(' ', "-"))),
            &rgb,
            SIZE,
            SIZE,
        );
        images.push(rgb);
    }
    let (sheet, w, h) = contact_sheet(&images, COLOURS.len());
    let sheet_path = out_dir.join("contact-sheet.png");
    save_png(&sheet_path, &sheet, w, h);
    eprintln!("images in {}", out_dir.display());
    assert!(
        failures.is_empty(),
        "{} of 12 images do not show what the prompt says:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn matches_diffusers_f32_image() {
    let _guard = serial();
    let json = reference_json();
    let r = &json["reference"];
    let prompt = r["prompt"].as_str().expect("reference.prompt");
    let seed = r["seed"].as_u64().expect("reference.seed");
    assert_eq!(r["num_inference_steps"].as_u64(), Some(STEPS as u64));
    assert_eq!(r["guidance_scale"].as_f64(), Some(f64::from(GUIDANCE)));
    assert_eq!(r["width"].as_u64(), Some(SIZE as u64));
    assert_eq!(r["height"].as_u64(), Some(SIZE as u64));
    let pipe = load();
    assert_eq!(
        pipe.default_scheduler().diffusers_name(),
        r["scheduler"].as_str().expect("reference.scheduler")
    );
    let got = generate(&pipe, prompt, seed);
    let path = root().join("tests/fixtures/shapes-tiny/reference.png");
    let want = image::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
        .into_raw();
    let p = psnr(&got, &want);
    eprintln!("{prompt:?} seed {seed}: PSNR against diffusers f32 {p:.1} dB");
    assert!(p >= MIN_PSNR, "PSNR {p:.2} dB < {MIN_PSNR} dB");
}
