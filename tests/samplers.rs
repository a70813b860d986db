//! The samplers added after the original six, end to end against diffusers 0.42.1's
//! StableDiffusionPipeline on the bundled sd2-tiny archive (f32, CPU), with the scheduler
//! swapped the diffusers way (`Cls.from_config(archive_config, **overrides)`; references
//! made by tests/fixtures/make_sampler_fixtures.py): UniPC, DPM++ 2M Karras, DPM++ 2M SDE
//! (with and without Karras, two images from one generator), Euler / LMS Karras, and
//! trailing timestep spacing with guidance off (SD-Turbo's 1-4 step use). Each must reach
//! the f32 bar: PSNR >= 60 dB on the u8 image, final latents within 1e-4 of their scale.
//! Step-by-step checks of the same classes are in tests/schedulers.rs.

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;
use wgsd::loader::ArchiveOptions;
use wgsd::pipeline::{GenerateRequest, Pipeline, PipelineOptions, VaeTiling};
use wgsd::schedulers::{Sampler, Spacing, quote_nonfinite_tokens};

use common::{gpu, psnr};

const LATENT_TOL: f64 = 1e-4;
const MIN_PSNR: f64 = 60.0;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Fixture {
    json: Value,
    refs: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static FX: OnceLock<Fixture> = OnceLock::new();
    FX.get_or_init(|| {
        let dir = root().join("tests/fixtures/samplers");
        let text = std::fs::read_to_string(dir.join("reference.json")).expect("reference.json");
        Fixture {
            json: serde_json::from_str(&quote_nonfinite_tokens(&text)).expect("json"),
            refs: std::fs::read(dir.join("reference.safetensors")).expect("safetensors"),
        }
    })
}

impl Fixture {
    fn tensor(&self, name: &str) -> Vec<u8> {
        let st = safetensors::SafeTensors::deserialize(&self.refs).expect("safetensors");
        st.tensor(name)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .data()
            .to_vec()
    }
}

fn pipeline() -> &'static Pipeline<'static> {
    static PIPE: OnceLock<Pipeline<'static>> = OnceLock::new();
    PIPE.get_or_init(|| {
        let opts = PipelineOptions {
            precision: wgsd::Precision::F32,
            archive: ArchiveOptions {
                cache_dir: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("model-cache")),
                ..ArchiveOptions::default()
            },
        };
        let archive = root().join(fixture().json["e2e_archive"].as_str().expect("archive"));
        Pipeline::load(gpu(), &archive, &opts).expect("load sd2-tiny")
    })
}

/// max |got - want| / max |want|.
fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let scale = want
        .iter()
        .fold(0f64, |m, &w| m.max(f64::from(w).abs()))
        .max(1e-12);
    let diff = got.iter().zip(want).fold(0f64, |m, (&g, &w)| {
        m.max((f64::from(g) - f64::from(w)).abs())
    });
    diff / scale
}

/// The tests share one GPU and its activation arena: one at a time (as tests/pipeline.rs).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs the fixture case `name` through wgsd and compares with diffusers.
fn check_case(name: &str) {
    let _g = serial();
    let fx = fixture();
    let case = fx.json["e2e"]
        .as_array()
        .expect("e2e")
        .iter()
        .find(|c| c["case"] == name)
        .unwrap_or_else(|| panic!("no e2e case {name}"));
    let n = |k: &str| case[k].as_u64().expect(k) as usize;
    let sampler = Sampler::parse(case["sampler"].as_str().expect("sampler")).expect("sampler");
    let req = GenerateRequest {
        prompts: vec![case["prompt"].as_str().expect("prompt").to_string()],
        negative_prompts: case["negative_prompt"]
            .as_str()
            .map(str::to_string)
            .into_iter()
            .collect(),
        seed: case["seed"].as_u64().expect("seed"),
        steps: n("num_inference_steps"),
        guidance: case["guidance_scale"].as_f64().expect("guidance") as f32,
        width: n("width"),
        height: n("height"),
        num_images_per_prompt: n("num_images_per_prompt"),
        scheduler: Some(sampler),
        timestep_spacing: case["timestep_spacing"]
            .as_str()
            .map(|s| Spacing::parse(s).expect("spacing")),
        trace: true,
        vae_tiling: VaeTiling::Off,
        tiling: false,
        preview: false,
        ..GenerateRequest::default()
    };
    let out = pipeline().generate(&req).expect("generate");
    let want_ts: Vec<f64> = case["timesteps"]
        .as_array()
        .expect("timesteps")
        .iter()
        .map(|v| v.as_f64().expect("timestep"))
        .collect();
    // Timesteps are integers or float32 values: equal up to serde_json's float parsing.
    assert_eq!(out.timesteps.len(), want_ts.len(), "{name}: step count");
    for (g, w) in out.timesteps.iter().zip(&want_ts) {
        assert!(
            (g - w).abs() <= 1e-12 * w.abs().max(1.0),
            "{name}: timesteps {:?} vs {want_ts:?}",
            out.timesteps
        );
    }
    let pre = case["tensor_prefix"].as_str().expect("prefix");
    let want_latents: Vec<f32> =
        bytemuck::pod_collect_to_vec(&fx.tensor(&format!("{pre}.final_latents")));
    let trace = out.trace.as_ref().expect("trace");
    let e = rel_err(&trace.final_latents, &want_latents);
    let got: Vec<u8> = out.images.iter().flat_map(|i| i.data.clone()).collect();
    let p = psnr(&got, &fx.tensor(&format!("{pre}.image_u8")));
    eprintln!("{name:32} {sampler}: final latents {e:.1e}, PSNR {p:.1} dB");
    assert!(e <= LATENT_TOL, "{name}: final latents off by {e:.2e}");
    assert!(p >= MIN_PSNR, "{name}: PSNR {p:.2} dB < {MIN_PSNR}");
}

#[test]
fn unipc() {
    check_case("00_unipc");
}

#[test]
fn dpmpp_2m_karras() {
    check_case("01_dpm++2m_karras");
}

#[test]
fn dpmpp_2m_sde() {
    check_case("02_dpm++2m_sde");
}

#[test]
fn dpmpp_2m_sde_karras_two_images() {
    check_case("03_dpm++2m_sde_karras");
}

#[test]
fn euler_karras() {
    check_case("04_euler_karras");
}

#[test]
fn lms_karras() {
    check_case("05_lms_karras");
}

#[test]
fn trailing_one_step_no_guidance() {
    check_case("06_euler_a_trailing");
}

#[test]
fn unipc_trailing_no_guidance() {
    check_case("07_unipc_trailing");
}

/// Every sampler listed to users parses back from its wgsd, A1111 and class names, and
/// builds from the archive's own scheduler config.
#[test]
fn every_sampler_builds_from_the_archive_config() {
    let _g = serial();
    let pipe = pipeline();
    for s in Sampler::all() {
        assert_eq!(Sampler::parse(s.name()).expect("name"), s);
        assert_eq!(Sampler::parse(s.a1111_name()).expect("a1111"), s);
        let req = GenerateRequest {
            scheduler: Some(s),
            steps: 2,
            width: 64,
            height: 48,
            ..GenerateRequest::new("a sampler smoke test")
        };
        let out = pipe.generate(&req).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(out.scheduler, s);
        assert!(!out.images.is_empty());
    }
}
