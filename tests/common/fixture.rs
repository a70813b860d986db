//! The reference fixtures the make_*_fixtures.py scripts write
//! (`tests/fixtures/<dir>/reference.{json,safetensors}`), and sd2-style test pipelines
//! loaded in f32 with the tests' model cache.

use std::path::{Path, PathBuf};

use serde_json::Value;
use wgsd::loader::ArchiveOptions;
use wgsd::pipeline::{GenerateRequest, Pipeline, PipelineOptions, VaeTiling};
use wgsd::schedulers::Sampler;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `reference.json` (its `cases`) and the tensors of `reference.safetensors`.
pub struct Reference {
    pub json: Value,
    pub bytes: Vec<u8>,
}

impl Reference {
    /// The fixture in `tests/fixtures/<dir>/`.
    pub fn load(dir: &str) -> Reference {
        let dir = root().join("tests/fixtures").join(dir);
        let text = std::fs::read_to_string(dir.join("reference.json")).expect("reference.json");
        let json = serde_json::from_str(&text).expect("reference.json is JSON");
        let bytes =
            std::fs::read(dir.join("reference.safetensors")).expect("reference.safetensors");
        Reference { json, bytes }
    }

    /// An f32 tensor's values.
    pub fn tensor(&self, name: &str) -> Vec<f32> {
        let st = safetensors::SafeTensors::deserialize(&self.bytes).expect("safetensors");
        bytemuck::pod_collect_to_vec(st.tensor(name).expect(name).data())
    }

    /// A u8 tensor's bytes (the images).
    pub fn u8s(&self, name: &str) -> Vec<u8> {
        let st = safetensors::SafeTensors::deserialize(&self.bytes).expect("safetensors");
        st.tensor(name).expect(name).data().to_vec()
    }

    pub fn cases(&self) -> &[Value] {
        self.json["cases"].as_array().expect("cases")
    }
}

/// The model at `path` (relative to the repository root) in f32, cached under the test
/// target's temporary folder.
pub fn pipeline_f32(path: &str) -> Pipeline<'static> {
    let opts = PipelineOptions {
        precision: wgsd::Precision::F32,
        archive: ArchiveOptions {
            cache_dir: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("model-cache")),
            ..ArchiveOptions::default()
        },
    };
    Pipeline::load(super::gpu(), &root().join(path), &opts)
        .unwrap_or_else(|e| panic!("loading {path}: {e}"))
}

/// The request a pipeline fixture case describes with the keys every make_*_fixtures.py
/// case writes (prompt, seed, num_inference_steps, guidance_scale, width, height,
/// num_images_per_prompt, scheduler class), VAE tiling off; callers add their own fields.
pub fn case_request(case: &Value) -> GenerateRequest {
    let n = |k: &str| case[k].as_u64().expect(k) as usize;
    GenerateRequest {
        seed: case["seed"].as_u64().expect("seed"),
        steps: n("num_inference_steps"),
        guidance: case["guidance_scale"].as_f64().expect("guidance") as f32,
        width: n("width"),
        height: n("height"),
        num_images_per_prompt: n("num_images_per_prompt"),
        scheduler: Some(
            Sampler::of_class(case["scheduler"].as_str().expect("scheduler")).expect("class"),
        ),
        vae_tiling: VaeTiling::Off,
        ..GenerateRequest::new(case["prompt"].as_str().expect("prompt"))
    }
}

/// Relative max error: `max|got - want| / max|want|`.
pub fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "lengths");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    super::max_abs_diff(got, want) / scale
}
