//! `wgsd generate` end to end through the built binary: images equal diffusers' for the
//! same settings (PSNR >= 60 dB against the fixture's `image_u8`), several images named
//! out-0.png, out-1.png, `.npy` and `.jpg` output, the `--json` summary, and bad inputs
//! that fail with a clear message, a non-zero exit and no output file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

#[path = "common/psnr.rs"]
mod psnr_impl;
use psnr_impl::psnr;

const MIN_PSNR: f64 = 60.0;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sd2() -> PathBuf {
    root().join("weights/sd2-tiny.zip")
}

/// A fresh empty folder for one test's outputs.
fn out_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("cli-out")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn wgsd(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_wgsd"))
        .args(args)
        .env(
            "WGSD_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-model-cache"),
        )
        .env_remove("WGSD_MODEL")
        .output()
        .expect("running wgsd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "wgsd panicked:\n{stderr}");
    out
}

#[track_caller]
fn ok(args: &[&str]) -> Output {
    let out = wgsd(args);
    assert!(
        out.status.success(),
        "wgsd {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A fixture's `image_u8` reference, one `H * W * 3` vector per image.
fn reference_images(fixture: &str, case: &str) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(
        root()
            .join("tests/fixtures")
            .join(fixture)
            .join("reference.safetensors"),
    )
    .unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(&format!("e2e.{case}.image_u8")).unwrap();
    let per: usize = t.shape()[1..].iter().product();
    t.data().chunks(per).map(<[u8]>::to_vec).collect()
}

fn png_pixels(path: &Path) -> (u32, u32, Vec<u8>) {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    (img.width(), img.height(), img.into_raw())
}

#[track_caller]
fn assert_matches(what: &str, got: &[u8], want: &[u8]) {
    let p = psnr(got, want);
    eprintln!("{what}: PSNR {p:.1} dB");
    assert!(p >= MIN_PSNR, "{what}: PSNR {p:.2} dB < {MIN_PSNR}");
}

/// Parses a `.npy` written by wgsd: `|u1`, C order; returns (shape, data).
fn read_npy(path: &Path) -> (Vec<usize>, Vec<u8>) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..8], b"\x93NUMPY\x01\x00", "npy magic");
    let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
    assert!(
        (10 + hlen).is_multiple_of(64),
        "npy header not 64-byte aligned"
    );
    let header = std::str::from_utf8(&b[10..10 + hlen]).unwrap();
    assert!(header.contains("'descr': '|u1'") && header.contains("'fortran_order': False"));
    let shape_txt = header.split("'shape': (").nth(1).unwrap();
    let shape: Vec<usize> = shape_txt[..shape_txt.find(')').unwrap()]
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    (shape, b[10 + hlen..].to_vec())
}

/// Case 00 of sd2-tiny (the archive's DDIM), with --npy and --json.
#[test]
fn generate_matches_diffusers_with_npy_and_json() {
    let dir = out_dir("case00");
    let out = dir.join("fox.png");
    let o = ok(&[
        "generate",
        "--model",
        sd2().to_str().unwrap(),
        "a tiny red fox in the snow, 4k",
        "--seed",
        "42",
        "--steps",
        "5",
        "--width",
        "64",
        "--height",
        "48",
        "--npy",
        "--json",
        "--precision",
        "f32",
        "--output",
        out.to_str().unwrap(),
    ]);
    let want = &reference_images("sd2-tiny", "00_DDIM")[0];
    let (w, h, px) = png_pixels(&out);
    assert_eq!((w, h), (64, 48));
    assert_matches("cli sd2-tiny 00_DDIM png", &px, want);
    let (shape, npy) = read_npy(&dir.join("fox.npy"));
    assert_eq!(shape, [48, 64, 3]);
    assert_eq!(npy, px, "npy and png hold different pixels");

    let j: Value = serde_json::from_slice(&o.stdout).expect("--json prints JSON on stdout");
    assert_eq!(j["seed"], 42);
    assert_eq!(j["steps"], 5);
    assert_eq!(j["scheduler"], "DDIMScheduler");
    assert_eq!(j["width"], 64);
    assert_eq!(j["height"], 48);
    assert_eq!(j["num_images"], 1);
    assert!(j["adapter"]["name"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(j["adapter"]["backend"].is_string());
    for k in ["load", "text_encoder", "denoise", "vae", "write", "total"] {
        let v = j["timings_ms"][k].as_f64().unwrap_or(-1.0);
        assert!(v >= 0.0, "timings_ms.{k} = {}", j["timings_ms"][k]);
    }
    assert_eq!(j["precision_requested"], "f32");
    assert_eq!(j["precision"], "f32");
    assert_eq!(j["vae_tiling"], "auto");
    // Weights (1.6 MB in f32) plus activations.
    assert!(
        j["peak_gpu_bytes"].as_u64().is_some_and(|b| b > 1_500_000),
        "peak_gpu_bytes = {}",
        j["peak_gpu_bytes"]
    );
    // Loading and the warm-up pass are reported apart (seconds).
    for k in ["load_s", "warmup_s"] {
        assert!(j[k].as_f64().is_some_and(|v| v > 0.0), "{k} = {}", j[k]);
    }
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("loaded in") && err.contains("warmed up in"),
        "{err}"
    );
    let outputs: Vec<&str> = j["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(outputs.len(), 2, "{outputs:?}");
    assert!(outputs[0].ends_with("fox.png") && outputs[1].ends_with("fox.npy"));
    // Nothing else left in the folder (no temporary files).
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
}

/// Case 09 of sd2-tiny: Euler ancestral via --scheduler, a negative prompt, two images.
#[test]
fn generate_two_images_ancestral_negative_prompt() {
    let dir = out_dir("case09");
    let out = dir.join("anc.png");
    ok(&[
        "generate",
        "--model",
        sd2().to_str().unwrap(),
        "--prompt",
        "an ancestral sampler test!",
        "--negative-prompt",
        "ugly",
        "--seed",
        "2024",
        "--steps",
        "6",
        "--scheduler",
        "euler_a",
        "--num-images",
        "2",
        "--width",
        "64",
        "--height",
        "48",
        "--precision",
        "f32",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!out.exists(), "one file per image: anc-0.png, anc-1.png");
    for (i, want) in reference_images("sd2-tiny", "09_EulerAncestralDiscrete")
        .iter()
        .enumerate()
    {
        let (_, _, px) = png_pixels(&dir.join(format!("anc-{i}.png")));
        assert_matches(&format!("cli sd2-tiny 09 image {i}"), &px, want);
    }
}

/// Samplers by their AUTOMATIC1111 name and trailing spacing through the binary: cases of
/// tests/fixtures/samplers (DPM++ 2M SDE Karras, two images from one generator; Euler a,
/// trailing, one step, guidance 0 as SD-Turbo is run).
#[test]
fn generate_with_a1111_sampler_names_and_trailing_spacing() {
    let dir = out_dir("samplers");
    let sde = dir.join("sde.png");
    let out = ok(&[
        "generate",
        "--model",
        sd2().to_str().unwrap(),
        "--prompt",
        "a lighthouse on a cliff, stormy sea",
        "--negative-prompt",
        "blurry",
        "--seed",
        "303",
        "--steps",
        "5",
        "--scheduler",
        "DPM++ 2M SDE Karras",
        "--num-images",
        "2",
        "--width",
        "64",
        "--height",
        "48",
        "--precision",
        "f32",
        "--json",
        "-o",
        sde.to_str().unwrap(),
    ]);
    let j: Value = serde_json::from_slice(&out.stdout).expect("--json output");
    assert_eq!(j["scheduler"], "DPMSolverMultistepScheduler");
    assert_eq!(j["sampler"], "dpm++2m_sde_karras");
    for (i, want) in reference_images("samplers", "03_dpm++2m_sde_karras")
        .iter()
        .enumerate()
    {
        let (_, _, px) = png_pixels(&dir.join(format!("sde-{i}.png")));
        assert_matches(&format!("cli DPM++ 2M SDE Karras image {i}"), &px, want);
    }
    let turbo = dir.join("turbo.png");
    let out = ok(&[
        "generate",
        "--model",
        sd2().to_str().unwrap(),
        "--prompt",
        "a lighthouse on a cliff, stormy sea",
        "--seed",
        "306",
        "--steps",
        "1",
        "--guidance",
        "0",
        "--scheduler",
        "Euler a",
        "--timestep-spacing",
        "trailing",
        "--width",
        "64",
        "--height",
        "48",
        "--precision",
        "f32",
        "--json",
        "-o",
        turbo.to_str().unwrap(),
    ]);
    let j: Value = serde_json::from_slice(&out.stdout).expect("--json output");
    assert_eq!(j["timestep_spacing"], "trailing");
    let (_, _, px) = png_pixels(&turbo);
    assert_matches(
        "cli trailing one step",
        &px,
        &reference_images("samplers", "06_euler_a_trailing")[0],
    );
}

/// `--tiling` (seamless, circular convolutions) through the binary: case 00 of
/// tests/fixtures/tiling (diffusers with every Conv2d circular).
#[test]
fn generate_seamless_tiling() {
    let dir = out_dir("tiling");
    let out = dir.join("wall.png");
    ok(&[
        "generate",
        "--model",
        sd2().to_str().unwrap(),
        "--prompt",
        "a seamless stone wall texture",
        "--seed",
        "11",
        "--steps",
        "4",
        "--width",
        "64",
        "--height",
        "48",
        "--precision",
        "f32",
        "--tiling",
        "-o",
        out.to_str().unwrap(),
    ]);
    let (_, _, px) = png_pixels(&out);
    assert_matches(
        "cli --tiling",
        &px,
        &reference_images("tiling", "00_circular")[0],
    );
}

/// `--prompt-syntax a1111`: the emphasis case of tests/fixtures/prompt-syntax (weighted
/// prompt and negative prompt) through the binary; an unknown syntax is refused.
#[test]
fn generate_with_a1111_prompt_syntax() {
    let dir = out_dir("prompt-syntax");
    let out = dir.join("emphasis.png");
    let json = ok(&[
        "generate",
        "--model",
        sd2().to_str().unwrap(),
        "--prompt",
        "a (red:1.5) circle on a ((white)) background, [blurry]",
        "--negative-prompt",
        "(ugly:1.2), text",
        "--seed",
        "21",
        "--steps",
        "4",
        "--width",
        "64",
        "--height",
        "64",
        "--precision",
        "f32",
        "--prompt-syntax",
        "a1111",
        "--json",
        "-o",
        out.to_str().unwrap(),
    ]);
    let summary: serde_json::Value = serde_json::from_slice(&json.stdout).expect("--json");
    assert_eq!(summary["prompt_syntax"], "a1111");
    let (_, _, px) = png_pixels(&out);
    assert_matches(
        "cli --prompt-syntax a1111",
        &px,
        &reference_images("prompt-syntax", "00_emphasis")[0],
    );
    let bad = wgsd(&["generate", "--prompt", "x", "--prompt-syntax", "comfy"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("plain (diffusers) or a1111"), "{err}");
}

/// The SD1-style fp16 archive with its own PNDM scheduler (case 00), written as .npy only.
#[test]
fn generate_sd1_fp16_archive_npy() {
    let dir = out_dir("sd1");
    let out = dir.join("img.npy");
    ok(&[
        "generate",
        "--model",
        root()
            .join("tests/fixtures/sd1-tiny-fp16/model.zip")
            .to_str()
            .unwrap(),
        "a tiny red fox in the snow, 4k",
        "--seed",
        "42",
        "--steps",
        "5",
        "--width",
        "48",
        "--height",
        "64",
        "--precision",
        "f32",
        "-o",
        out.to_str().unwrap(),
    ]);
    let (shape, px) = read_npy(&out);
    assert_eq!(shape, [64, 48, 3]);
    assert_matches(
        "cli sd1-tiny-fp16 00_PNDM npy",
        &px,
        &reference_images("sd1-tiny-fp16", "00_PNDM")[0],
    );
}

#[test]
fn generate_jpeg_by_extension() {
    let dir = out_dir("jpeg");
    let out = dir.join("x.JPG");
    ok(&[
        "generate",
        "--model",
        sd2().to_str().unwrap(),
        "a bowl of fruit",
        "--seed",
        "5",
        "--steps",
        "2",
        "--width",
        "32",
        "--height",
        "40",
        "-o",
        out.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(&bytes[..3], &[0xFF, 0xD8, 0xFF], "not a JPEG");
    let img = image::load_from_memory(&bytes).unwrap();
    assert_eq!((img.width(), img.height()), (32, 40));
}

#[test]
fn bad_inputs_fail_cleanly_without_output() {
    let dir = out_dir("bad");
    let out = dir.join("bad.png");
    let o = out.to_str().unwrap();
    let model = sd2();
    let m = model.to_str().unwrap();
    let missing = dir.join("nope.zip");
    let gif = dir.join("bad.gif");
    let nodir = dir.join("no/such/dir/a.png");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--model", missing.to_str().unwrap(), "x", "-o", o],
            "no such file",
        ),
        (
            vec!["--model", m, "x", "--width", "60", "-o", o],
            "multiples of 8",
        ),
        (
            vec!["--model", m, "x", "--height", "0", "-o", o],
            "multiples of 8",
        ),
        (
            vec!["--model", m, "x", "--scheduler", "warp-drive", "-o", o],
            "unknown scheduler",
        ),
        (
            vec!["--model", m, "x", "--timestep-spacing", "sideways", "-o", o],
            "unknown timestep spacing",
        ),
        (vec!["--model", m, "x", "--steps", "0", "-o", o], "steps"),
        (
            vec!["--model", m, "x", "-o", gif.to_str().unwrap()],
            "unsupported extension",
        ),
        (
            vec!["--model", m, "x", "-o", nodir.to_str().unwrap()],
            "does not exist",
        ),
        (vec!["--model", m, "-o", o], "no prompt"),
        (vec!["x", "-o", o], "--model"),
        (
            vec![
                "--model",
                dir.to_str().unwrap(),
                "x",
                "--width",
                "8",
                "--height",
                "8",
                "-o",
                o,
            ],
            "model_index.json",
        ),
    ];
    for (args, msg) in cases {
        let mut full = vec!["generate"];
        full.extend(&args);
        let r = wgsd(&full);
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success(), "{args:?} succeeded");
        assert!(
            stderr.contains(msg),
            "{args:?}: expected {msg:?} in the error, got:\n{stderr}"
        );
        assert!(
            std::fs::read_dir(&dir).unwrap().next().is_none(),
            "{args:?} left a file behind"
        );
    }
}

/// Ctrl-C (SIGINT) during the denoising loop: the run stops between steps, exits 130,
/// says so, and writes no image.
#[cfg(unix)]
#[test]
fn interrupt_stops_between_steps_and_writes_nothing() {
    use std::io::Read;
    use std::time::{Duration, Instant};

    let dir = out_dir("interrupt");
    let out = dir.join("never.png");
    let sd2 = sd2();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wgsd"))
        .args(["generate", "--model"])
        .arg(&sd2)
        .args([
            "--width", "32", "--height", "32", "--steps", "500", "--seed", "1", "-o",
        ])
        .arg(&out)
        .arg("a fox")
        .env(
            "WGSD_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-model-cache"),
        )
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running wgsd");
    // Long enough for the model to load and the loop to start (500 steps take far longer).
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        child.try_wait().expect("wait").is_none(),
        "wgsd finished 500 steps in 3 s; raise --steps"
    );
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "wgsd did not stop after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    assert_eq!(status.code(), Some(130), "stderr:\n{stderr}");
    assert!(stderr.contains("nothing written"), "stderr:\n{stderr}");
    assert!(!out.exists(), "no image after an interrupt");
    let leftovers: Vec<_> = std::fs::read_dir(&dir).expect("dir").collect();
    assert!(leftovers.is_empty(), "no temp files: {leftovers:?}");
}

/// `--f16` (= `--precision f16`) through the binary: weights and activations in f16; the
/// image is within 3 dB of diffusers' own fp16 distance from its f32 image.
#[test]
fn generate_f16_through_the_binary() {
    let dir = out_dir("f16");
    let out = dir.join("fox.png");
    let o = ok(&[
        "generate",
        "--model",
        sd2().to_str().unwrap(),
        "a tiny red fox in the snow, 4k",
        "--seed",
        "42",
        "--steps",
        "5",
        "--width",
        "64",
        "--height",
        "48",
        "--f16",
        "--no-warmup",
        "--json",
        "--output",
        out.to_str().unwrap(),
    ]);
    let j: Value = serde_json::from_slice(&o.stdout).expect("--json prints JSON on stdout");
    assert_eq!(j["precision_requested"], "f16");
    assert_eq!(j["precision"], "f16");
    assert_eq!(j["weight_dtype"], "f16");
    let fp16: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/sd2-tiny/fp16.json")).unwrap(),
    )
    .unwrap();
    let bar = fp16["cases"][0]["psnr_fp16_vs_f32"].as_f64().unwrap();
    assert_eq!(fp16["cases"][0]["case"], "00_DDIM");
    let want = &reference_images("sd2-tiny", "00_DDIM")[0];
    let (_, _, px) = png_pixels(&out);
    let p = psnr(&px, want);
    eprintln!("cli f16: {p:.1} dB (diffusers fp16: {bar:.1} dB)");
    assert!(
        p >= bar - 3.0,
        "f16 image at {p:.2} dB, diffusers fp16 at {bar:.2} dB"
    );
}
