//! The reference fixtures the make_*_fixtures.py scripts write
//! (`tests/fixtures/<dir>/reference.{json,safetensors}`), and sd2-style test pipelines
//! loaded in f32 with the tests' model cache.

use std::path::{Path, PathBuf};

use serde_json::Value;
use wgsd::loader::ArchiveOptions;
use wgsd::pipeline::{Pipeline, PipelineOptions};

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
