//! The non-weight parts of the diffusers folder a single file becomes: `model_index.json`,
//! each component's `config.json`, the scheduler config and the CLIP tokenizer.
//!
//! For the standard architectures they are built in, with the values of the diffusers
//! hub configs that `from_single_file` falls back to (`DIFFUSERS_DEFAULT_PIPELINE_PATHS`
//! in diffusers' loaders/single_file_utils.py): SD 1.x = stable-diffusion-v1-5 (PNDM,
//! epsilon, 512 px), SD 2.x = stable-diffusion-2-1 (DDIM, v-prediction, 768 px; with
//! epsilon, the 512 px SD 2 base size). Otherwise they come from a diffusers folder or
//! archive given with `--config`, as `from_single_file(..., config=DIR)` takes them.
//!
//! The CLIP BPE tokenizer (`weights/clip-tokenizer/`, the same vocabulary for both
//! versions) ships inside wgsd; SD 1 pads with `<|endoftext|>`, SD 2 with `!`.

use std::fs;
use std::path::Path;

use serde_json::{Value, json};

use super::detect::{Architecture, SdVersion};
use crate::loader::archive::ModelDir;
use crate::loader::error::LoadError;

const VOCAB: &[u8] = include_bytes!("../../../weights/clip-tokenizer/vocab.json");
const MERGES: &[u8] = include_bytes!("../../../weights/clip-tokenizer/merges.txt");

/// epsilon or v_prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictionType {
    Epsilon,
    VPrediction,
}

impl PredictionType {
    /// `epsilon` / `eps`, `v_prediction` / `v`.
    pub fn parse(s: &str) -> Result<PredictionType, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "epsilon" | "eps" => Ok(PredictionType::Epsilon),
            "v_prediction" | "v" => Ok(PredictionType::VPrediction),
            other => Err(format!(
                "prediction type {other:?}: expected epsilon or v_prediction"
            )),
        }
    }

    /// The diffusers scheduler config value.
    pub fn as_str(self) -> &'static str {
        match self {
            PredictionType::Epsilon => "epsilon",
            PredictionType::VPrediction => "v_prediction",
        }
    }
}

impl std::str::FromStr for PredictionType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        PredictionType::parse(s)
    }
}

/// `parameterization: "v"` (or `"eps"`) from an A1111-style sidecar `FILE.yaml` (the
/// LDM inference config, `model.params.parameterization`). Only that key is read.
pub fn sidecar_prediction(checkpoint: &Path) -> Result<Option<PredictionType>, LoadError> {
    let yaml = checkpoint.with_extension("yaml");
    if !yaml.is_file() {
        return Ok(None);
    }
    let text = fs::read_to_string(&yaml).map_err(|e| LoadError::io(&yaml, e))?;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if let Some(v) = line.strip_prefix("parameterization:") {
            let v = v.trim().trim_matches(|c| c == '"' || c == '\'');
            return PredictionType::parse(v).map(Some).map_err(|msg| {
                LoadError::UnsupportedConfig {
                    file: yaml.clone(),
                    field: "parameterization".into(),
                    value: msg,
                }
            });
        }
    }
    Ok(None)
}

fn write_json(path: &Path, v: &Value) -> Result<(), LoadError> {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).map_err(|e| LoadError::io(p, e))?;
    }
    let text = serde_json::to_string_pretty(v).map_err(|e| LoadError::Json {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    fs::write(path, text + "\n").map_err(|e| LoadError::io(path, e))
}

/// Writes the shipped CLIP tokenizer into `dir` with the version's pad token.
pub fn write_tokenizer(dir: &Path, version: SdVersion) -> Result<(), LoadError> {
    fs::create_dir_all(dir).map_err(|e| LoadError::io(dir, e))?;
    for (name, bytes) in [("vocab.json", VOCAB), ("merges.txt", MERGES)] {
        let p = dir.join(name);
        fs::write(&p, bytes).map_err(|e| LoadError::io(&p, e))?;
    }
    let pad = match version {
        SdVersion::V1 => "<|endoftext|>",
        SdVersion::V2 => "!",
    };
    let map = json!({
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": pad,
    });
    write_json(&dir.join("special_tokens_map.json"), &map)?;
    let mut cfg = map;
    cfg["tokenizer_class"] = json!("CLIPTokenizer");
    cfg["model_max_length"] = json!(77);
    cfg["do_lower_case"] = json!(true);
    write_json(&dir.join("tokenizer_config.json"), &cfg)
}

fn model_index(inpainting: bool) -> Value {
    json!({
        "_class_name": if inpainting { "StableDiffusionInpaintPipeline" } else { "StableDiffusionPipeline" },
        "_diffusers_version": "0.42.1",
        "feature_extractor": [null, null],
        "requires_safety_checker": false,
        "safety_checker": [null, null],
        "scheduler": ["diffusers", "SchedulerClass"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    })
}

/// Writes the built-in configs of a standard architecture into `root`.
pub fn write_standard(
    root: &Path,
    arch: &Architecture,
    prediction: Option<PredictionType>,
) -> Result<PredictionType, LoadError> {
    let v2 = arch.version == SdVersion::V2;
    let prediction = prediction.unwrap_or(if v2 {
        PredictionType::VPrediction
    } else {
        PredictionType::Epsilon
    });
    // SD 2.1 (v) is a 768 px model, SD 2 base (epsilon) and SD 1.x are 512 px.
    let pixels = if v2 && prediction == PredictionType::VPrediction {
        768
    } else {
        512
    };
    let cross = ["CrossAttnDownBlock2D"; 3];
    let mut unet = json!({
        "_class_name": "UNet2DConditionModel",
        "act_fn": "silu",
        "attention_head_dim": if v2 { json!([5, 10, 20, 20]) } else { json!(8) },
        "block_out_channels": [320, 640, 1280, 1280],
        "center_input_sample": false,
        "cross_attention_dim": if v2 { 1024 } else { 768 },
        "down_block_types": [cross[0], cross[1], cross[2], "DownBlock2D"],
        "downsample_padding": 1,
        "dual_cross_attention": false,
        "flip_sin_to_cos": true,
        "freq_shift": 0,
        "in_channels": arch.in_channels,
        "layers_per_block": 2,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": 32,
        "out_channels": 4,
        "sample_size": pixels / 8,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "use_linear_projection": v2,
    });
    if v2 {
        // stable-diffusion-2-1 upcasts attention (its fp16 overflow fix).
        unet["upcast_attention"] = json!(true);
    }
    let (enc, dec) = ("DownEncoderBlock2D", "UpDecoderBlock2D");
    let vae = json!({
        "_class_name": "AutoencoderKL",
        "act_fn": "silu",
        "block_out_channels": [128, 256, 512, 512],
        "down_block_types": [enc, enc, enc, enc],
        "in_channels": 3,
        "latent_channels": 4,
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "out_channels": 3,
        "sample_size": pixels,
        "scaling_factor": 0.18215,
        "up_block_types": [dec, dec, dec, dec],
    });
    let text = if v2 {
        json!({
            "architectures": ["CLIPTextModel"],
            "hidden_act": "gelu",
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_attention_heads": 16,
            "num_hidden_layers": 23,
            "projection_dim": 512,
        })
    } else {
        json!({
            "architectures": ["CLIPTextModel"],
            "hidden_act": "quick_gelu",
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_attention_heads": 12,
            "num_hidden_layers": 12,
            "projection_dim": 768,
        })
    };
    let mut text = text;
    for (k, v) in [
        ("model_type", json!("clip_text_model")),
        ("vocab_size", json!(49408)),
        ("max_position_embeddings", json!(77)),
        ("layer_norm_eps", json!(1e-05)),
        ("bos_token_id", json!(0)),
        ("eos_token_id", json!(2)),
        ("pad_token_id", json!(1)),
    ] {
        text[k] = v;
    }
    let scheduler = json!({
        "_class_name": if v2 { "DDIMScheduler" } else { "PNDMScheduler" },
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "clip_sample": false,
        "num_train_timesteps": 1000,
        "prediction_type": prediction.as_str(),
        "set_alpha_to_one": false,
        "skip_prk_steps": true,
        "steps_offset": 1,
        "trained_betas": null,
    });
    let mut index = model_index(arch.inpainting());
    index["scheduler"] = json!(["diffusers", scheduler["_class_name"]]);
    write_json(&root.join("model_index.json"), &index)?;
    write_json(&root.join("unet").join("config.json"), &unet)?;
    write_json(&root.join("vae").join("config.json"), &vae)?;
    write_json(&root.join("text_encoder").join("config.json"), &text)?;
    write_json(
        &root.join("scheduler").join("scheduler_config.json"),
        &scheduler,
    )?;
    write_tokenizer(&root.join("tokenizer"), arch.version)?;
    Ok(prediction)
}

/// The config files `--config` contributes, relative to the pipeline root.
pub fn config_files(src: &ModelDir) -> Result<Vec<std::path::PathBuf>, LoadError> {
    let mut out = vec![std::path::PathBuf::from("model_index.json")];
    for c in ["unet", "vae", "text_encoder"] {
        src.component(c)?;
        out.push(Path::new(c).join("config.json"));
    }
    src.component("scheduler")?;
    out.push(Path::new("scheduler").join("scheduler_config.json"));
    let tok = src.root.join("tokenizer");
    if tok.is_dir() {
        let mut names: Vec<_> = fs::read_dir(&tok)
            .map_err(|e| LoadError::io(&tok, e))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_file())
            .map(|e| e.file_name())
            .collect();
        names.sort();
        out.extend(names.into_iter().map(|n| Path::new("tokenizer").join(n)));
    }
    for f in &out {
        let p = src.root.join(f);
        if !p.is_file() {
            return Err(LoadError::io(
                &p,
                std::io::Error::new(std::io::ErrorKind::NotFound, "missing from --config"),
            ));
        }
    }
    Ok(out)
}

/// Copies the `--config` pipeline's configs (never its weights) into `root`, adding the
/// shipped tokenizer when it has none, and sets the prediction type when one is given.
pub fn write_from(
    root: &Path,
    src: &ModelDir,
    version: SdVersion,
    prediction: Option<PredictionType>,
) -> Result<(), LoadError> {
    let files = config_files(src)?;
    for f in &files {
        let (from, to) = (src.root.join(f), root.join(f));
        if let Some(p) = to.parent() {
            fs::create_dir_all(p).map_err(|e| LoadError::io(p, e))?;
        }
        fs::copy(&from, &to).map_err(|e| LoadError::io(&from, e))?;
    }
    if !files.iter().any(|f| f.starts_with("tokenizer")) {
        write_tokenizer(&root.join("tokenizer"), version)?;
    }
    if let Some(p) = prediction {
        let path = root.join("scheduler").join("scheduler_config.json");
        let mut v: Value = crate::loader::config::read_json(&path)?;
        v["prediction_type"] = json!(p.as_str());
        write_json(&path, &v)?;
    }
    Ok(())
}
