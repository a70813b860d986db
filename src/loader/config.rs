//! Configs read with serde: the pipeline's `model_index.json` and the components'
//! `config.json` (the text encoder's here; other models define their own structs and read
//! them with [`read_json`] / [`read_component_config`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::error::LoadError;

/// Reads and parses a JSON file, naming the file in errors.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|e| LoadError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| LoadError::Json {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })
}

/// Reads `<root>/<component>/config.json` (a missing folder is
/// [`LoadError::MissingComponent`]).
pub fn read_component_config<T: DeserializeOwned>(
    root: &Path,
    component: &str,
) -> Result<T, LoadError> {
    let dir = root.join(component);
    if !dir.is_dir() {
        return Err(LoadError::MissingComponent {
            root: root.to_path_buf(),
            component: component.to_string(),
        });
    }
    read_json(&dir.join("config.json"))
}

/// `model_index.json`: the pipeline class and, per component, its `[library, class]`.
#[derive(Debug, Clone)]
pub struct ModelIndex {
    /// e.g. `StableDiffusionPipeline`.
    pub class_name: String,
    pub diffusers_version: Option<String>,
    /// Component name -> (library, class); `None`s for absent optional parts
    /// (`safety_checker: [null, null]`).
    pub components: BTreeMap<String, (Option<String>, Option<String>)>,
    /// Other non-component keys (`requires_safety_checker`, ...).
    pub extra: BTreeMap<String, serde_json::Value>,
    /// Where it was read from.
    pub path: PathBuf,
}

impl ModelIndex {
    pub fn read(path: &Path) -> Result<ModelIndex, LoadError> {
        let raw: BTreeMap<String, serde_json::Value> = read_json(path)?;
        let bad = |msg: String| LoadError::Json {
            path: path.to_path_buf(),
            msg,
        };
        let class_name = raw
            .get("_class_name")
            .and_then(|v| v.as_str())
            .ok_or_else(|| bad("missing \"_class_name\"".into()))?
            .to_string();
        let diffusers_version = raw
            .get("_diffusers_version")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        let mut components = BTreeMap::new();
        let mut extra = BTreeMap::new();
        for (k, v) in raw {
            if k.starts_with('_') {
                continue;
            }
            match v.as_array() {
                Some(a) if a.len() == 2 => {
                    let s = |i: usize| a[i].as_str().map(str::to_string);
                    components.insert(k, (s(0), s(1)));
                }
                _ => {
                    extra.insert(k, v);
                }
            }
        }
        Ok(ModelIndex {
            class_name,
            diffusers_version,
            components,
            extra,
            path: path.to_path_buf(),
        })
    }

    /// The class of a present component (`"UNet2DConditionModel"`), `None` if absent or null.
    pub fn class_of(&self, component: &str) -> Option<&str> {
        self.components
            .get(component)
            .and_then(|(_, c)| c.as_deref())
    }
}

fn default_eps() -> f64 {
    1e-5
}
fn default_act() -> String {
    "quick_gelu".into()
}
fn default_max_pos() -> usize {
    77
}

/// transformers' `CLIPTextConfig` (`text_encoder/config.json`), the fields the text
/// encoder needs.
#[derive(Debug, Clone, Deserialize)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    /// `gelu` (SD 2, OpenCLIP) or `quick_gelu` (SD 1, OpenAI CLIP).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub projection_dim: Option<usize>,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<u32>,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// Stored dtype as saved (`"float32"`, `"float16"`); informational.
    #[serde(default, alias = "torch_dtype")]
    pub dtype: Option<String>,
}

impl ClipTextConfig {
    /// Reads `<root>/text_encoder/config.json` and checks what we support.
    pub fn read(root: &Path) -> Result<ClipTextConfig, LoadError> {
        let cfg: ClipTextConfig = read_component_config(root, "text_encoder")?;
        let file = root.join("text_encoder").join("config.json");
        let unsupported = |field: &str, value: String| LoadError::UnsupportedConfig {
            file: file.clone(),
            field: field.into(),
            value,
        };
        if !matches!(cfg.hidden_act.as_str(), "gelu" | "quick_gelu") {
            return Err(unsupported(
                "hidden_act",
                format!("{:?} (supported: \"gelu\", \"quick_gelu\")", cfg.hidden_act),
            ));
        }
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads)
        {
            return Err(unsupported(
                "num_attention_heads",
                format!(
                    "{} (must divide hidden_size {})",
                    cfg.num_attention_heads, cfg.hidden_size
                ),
            ));
        }
        Ok(cfg)
    }
}
