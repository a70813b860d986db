//! Tiled VAE decode (diffusers' `AutoencoderKL.enable_tiling()`), against
//! tests/fixtures/vae-tiling (make_vae_tiling.py): the decoded floats and the u8 image
//! (PSNR >= 60 dB) for latents of 3x3 and 2x3 tiles with remainders; automatic tiling
//! when the untiled decode cannot fit the memory budget; `wgsd generate --vae-tiling`
//! through the binary.

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use common::{Rng, gpu, max_abs_diff, psnr};
use serde_json::Value;
use wgsd::Error;
use wgsd::gpu::{DType, Recorder, Tensor};
use wgsd::loader::{ArchiveOptions, VarBuilder, open_model_with, read_component_config};
use wgsd::models::config::VaeConfig;
use wgsd::models::vae::VaeDecoder;
use wgsd::models::vae_tiling::{TilePlan, VaeTiling, auto_tiles};
use wgsd::pipeline::{GenerateRequest, Pipeline, PipelineOptions};

const MIN_PSNR: f64 = 60.0;

/// The memory limit is the device's: the tests that use the shared GPU take turns.
static GPU_TURN: Mutex<()> = Mutex::new(());

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cache() -> ArchiveOptions {
    ArchiveOptions {
        cache_dir: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("model-cache")),
        ..ArchiveOptions::default()
    }
}

fn sd2_vae() -> VaeDecoder {
    let model = open_model_with(&root().join("weights/sd2-tiny.zip"), &cache()).unwrap();
    let config: VaeConfig = read_component_config(&model.root, "vae").unwrap();
    let vb =
        VarBuilder::from_component(gpu(), &model.component("vae").unwrap(), DType::F32).unwrap();
    VaeDecoder::load(&vb, config).unwrap()
}

/// Decodes and converts to u8 as the pipeline does; returns (floats, shape, u8 bytes).
fn decode(
    vae: &VaeDecoder,
    latents: &Tensor,
    tiling: VaeTiling,
) -> (Vec<f32>, Vec<usize>, Vec<u8>) {
    let mut rec = Recorder::new(gpu());
    let out = vae.forward_tiling(&mut rec, latents, tiling).unwrap();
    let images = wgsd::ops::image::to_u8(&mut rec, &out).unwrap();
    let floats = rec.read_f32(&out).unwrap();
    let u8s = images.read(&mut rec).unwrap().concat();
    (floats, out.shape().to_vec(), u8s)
}

#[test]
fn tiled_decode_matches_diffusers() {
    let _turn = GPU_TURN.lock().unwrap_or_else(|e| e.into_inner());
    let dir = root().join("tests/fixtures/vae-tiling");
    let refs = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let st = safetensors::SafeTensors::deserialize(&refs).unwrap();
    let vae = sd2_vae();
    let plan = TilePlan::new(&vae.config).unwrap();
    assert_eq!(
        plan.tile_sample,
        json["tile_sample_min_size"].as_u64().unwrap() as usize
    );
    assert_eq!(
        plan.tile_latent,
        json["tile_latent_min_size"].as_u64().unwrap() as usize
    );
    for case in json["cases"].as_array().unwrap() {
        let c = case["case"].as_str().unwrap();
        let f32s = |name: &str| -> (Vec<usize>, Vec<f32>) {
            let t = st.tensor(&format!("{c}.{name}")).unwrap();
            (t.shape().to_vec(), bytemuck::pod_collect_to_vec(t.data()))
        };
        let (lshape, lat) = f32s("latents");
        assert!(plan.applies(lshape[2], lshape[3]), "case {c} must tile");
        let latents = Tensor::from_f32(gpu(), &lshape, &lat, DType::F32).unwrap();
        let (got, shape, got_u8) = decode(&vae, &latents, VaeTiling::On);
        let (want_shape, want) = f32s("tiled");
        assert_eq!(shape, want_shape, "case {c}");
        let err = max_abs_diff(&got, &want);
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let want_u8 = st.tensor(&format!("{c}.image_u8")).unwrap().data().to_vec();
        let p = psnr(&got_u8, &want_u8);
        eprintln!("vae tiling case {c}: max |err| {err:.2e} (of {scale:.2}), u8 PSNR {p:.1} dB");
        assert!(
            err <= 1e-4 * scale,
            "case {c}: max |err| {err} > 1e-4 * {scale}"
        );
        assert!(p >= MIN_PSNR, "case {c}: PSNR {p:.2} dB < {MIN_PSNR}");
        // The untiled reference differs at the seams; wgsd's untiled decode follows it.
        if let Ok(t) = st.tensor(&format!("{c}.untiled_u8")) {
            let untiled = t.data().to_vec();
            assert!(
                psnr(&untiled, &want_u8) < 50.0,
                "case {c}: tiling changed nothing"
            );
            let (_, _, off_u8) = decode(&vae, &latents, VaeTiling::Off);
            let p_off = psnr(&off_u8, &untiled);
            assert!(p_off >= MIN_PSNR, "case {c} untiled: PSNR {p_off:.2} dB");
        }
    }
}

/// Latents of one tile or less never tile (diffusers' rule), whatever is asked.
#[test]
fn one_tile_never_tiles() {
    let _turn = GPU_TURN.lock().unwrap_or_else(|e| e.into_inner());
    let vae = sd2_vae();
    let mut rng = Rng::new(3);
    let lat = rng.vec(4 * 8 * 6);
    let latents = Tensor::from_f32(gpu(), &[1, 4, 8, 6], &lat, DType::F32).unwrap();
    let (on, _, _) = decode(&vae, &latents, VaeTiling::On);
    let (off, _, _) = decode(&vae, &latents, VaeTiling::Off);
    assert!(on == off, "one tile: On must equal Off");
}

/// Runs `f` under a memory budget of `bytes` on top of what is in use now.
fn with_budget<T>(bytes: u64, f: impl FnOnce() -> T) -> T {
    let g = gpu();
    g.trim();
    g.set_memory_limit(Some(g.memory_stats().in_use + bytes));
    let out = f();
    g.set_memory_limit(None);
    g.trim();
    out
}

/// Under a budget the untiled decode cannot meet, `Auto` tiles (and succeeds, with the
/// tiled result) while `Off` runs out of memory; under the estimate, `Auto` does not tile
/// and the untiled decode fits.
#[test]
fn auto_tiles_when_the_untiled_decode_does_not_fit() {
    let _turn = GPU_TURN.lock().unwrap_or_else(|e| e.into_inner());
    let g = gpu();
    let vae = sd2_vae();
    let mut rng = Rng::new(5);
    let shape = [1, 4, 24, 20];
    let lat = rng.vec(shape.iter().product());
    let latents = Tensor::from_f32(g, &shape, &lat, DType::F32).unwrap();
    let run = |tiling: VaeTiling| {
        let mut rec = Recorder::new(g);
        vae.forward_tiling(&mut rec, &latents, tiling)
            .and_then(|o| rec.read_f32(&o))
    };
    let tiled = run(VaeTiling::On).unwrap();
    let untiled = run(VaeTiling::Off).unwrap();
    assert!(tiled != untiled, "tiling must change the seams");
    assert!(
        !auto_tiles(g, &vae.config, &shape, DType::F32),
        "no budget: no tiling"
    );
    let (estimate, _) = wgsd::models::vae_tiling::untiled_peak_bytes(&vae.config, 1, 24, 20, 4);

    // Half the estimate: the untiled decode does not fit, the tiled one does.
    let (auto, off, got) = with_budget(estimate / 2, || {
        let auto = auto_tiles(g, &vae.config, &shape, DType::F32);
        let off = run(VaeTiling::Off);
        g.trim();
        (auto, off, run(VaeTiling::Auto))
    });
    assert!(
        auto,
        "Auto must tile under half the estimate ({estimate} B)"
    );
    assert!(
        matches!(off, Err(Error::OutOfMemory(_))),
        "the untiled decode must not fit half the estimate: {:?}",
        off.map(|v| v.len())
    );
    assert!(
        got.unwrap() == tiled,
        "Auto under the budget = the tiled decode"
    );

    // The estimate itself: enough for the untiled decode, so Auto keeps it.
    let (auto, got) = with_budget(estimate, || {
        (
            auto_tiles(g, &vae.config, &shape, DType::F32),
            run(VaeTiling::Auto),
        )
    });
    assert!(!auto, "Auto must not tile when the estimate fits");
    assert!(
        got.unwrap() == untiled,
        "the estimate must cover the untiled decode"
    );
}

/// `wgsd generate --vae-tiling` at 104 x 144 (13 x 18 latents: 3 x 3 tiles): the image is
/// the library's tiled one, and differs from `--vae-tiling=off`'s.
#[test]
fn cli_vae_tiling_flag() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vae-tiling-cli");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let model = root().join("weights/sd2-tiny.zip");
    let run = |flag: &str, name: &str| -> Vec<u8> {
        let out_path = dir.join(name);
        let out = Command::new(env!("CARGO_BIN_EXE_wgsd"))
            .args(["generate", "a red fox", "--model"])
            .arg(&model)
            .args([
                "--seed", "7", "--steps", "2", "--width", "144", "--height", "104",
            ])
            .args([flag, "--output"])
            .arg(&out_path)
            .env(
                "WGSD_CACHE_DIR",
                Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-model-cache"),
            )
            .env_remove("WGSD_MODEL")
            .output()
            .expect("running wgsd");
        assert!(
            out.status.success(),
            "wgsd generate {flag} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        image::open(&out_path).unwrap().to_rgb8().into_raw()
    };
    // A bad value fails before the model loads, naming the choices.
    let bad = Command::new(env!("CARGO_BIN_EXE_wgsd"))
        .args(["generate", "a red fox", "--model"])
        .arg(&model)
        .arg("--vae-tiling=sometimes")
        .arg("--output")
        .arg(dir.join("bad.png"))
        .output()
        .expect("running wgsd");
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("auto, on or off"), "{err}");
    assert!(!dir.join("bad.png").exists());

    let tiled = run("--vae-tiling", "tiled.png");
    let untiled = run("--vae-tiling=off", "untiled.png");

    let _turn = GPU_TURN.lock().unwrap_or_else(|e| e.into_inner());
    let pipe = Pipeline::load(
        gpu(),
        &model,
        &PipelineOptions {
            archive: cache(),
            ..PipelineOptions::default()
        },
    )
    .unwrap();
    let lib = |vae_tiling: VaeTiling| {
        let req = GenerateRequest {
            seed: 7,
            steps: 2,
            width: 144,
            height: 104,
            vae_tiling,
            ..GenerateRequest::new("a red fox")
        };
        pipe.generate(&req).unwrap().images.remove(0).data
    };
    let (lib_tiled, lib_untiled) = (lib(VaeTiling::On), lib(VaeTiling::Off));
    let p = psnr(&tiled, &lib_tiled);
    assert!(
        p >= MIN_PSNR,
        "--vae-tiling vs the library's tiled image: {p:.1} dB"
    );
    let p = psnr(&untiled, &lib_untiled);
    assert!(
        p >= MIN_PSNR,
        "--vae-tiling=off vs the library's image: {p:.1} dB"
    );
    assert!(
        psnr(&tiled, &untiled) < 50.0,
        "--vae-tiling changed nothing"
    );
}
