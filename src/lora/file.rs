//! A LoRA file read into (module, down, up, alpha) layers. Two naming schemes:
//!
//! - kohya-ss (`sd-scripts` `networks/lora.py`): `lora_unet_<module>` and
//!   `lora_te_<module>` where `<module>` is the diffusers module path with dots as
//!   underscores, each with `.lora_down.weight` `[r, in(, kh, kw)]`, `.lora_up.weight`
//!   `[out, r(, 1, 1)]` and an optional 0-d `.alpha` (scale `alpha / r`; absent means
//!   `alpha = r`). Conv LoRA (LoCon) has a kh x kw `lora_down` and a 1x1 `lora_up`.
//! - diffusers / PEFT (`save_lora_weights`): `unet.<module>.lora_A.weight` (down) and
//!   `.lora_B.weight` (up), `text_encoder.<module>...`; older diffusers files say
//!   `.lora.down.weight` / `.lora_linear_layer.up.weight`, or
//!   `attn1.processor.to_q_lora.down.weight`. PEFT's `lora_alpha` defaults to the rank;
//!   newer diffusers files carry it in the header's `lora_adapter_metadata` (the PEFT
//!   `LoraConfig` per component: `unet.lora_alpha`, `unet.alpha_pattern`, ...).
//!
//! diffusers turns both into PEFT adapters (`lora_conversion_utils.py`,
//! `_convert_kohya_lora_to_diffusers`); wgsd maps the names straight onto its modules
//! ([`super::targets::ModelTargets`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::LoraError;
use super::targets::Component;
use crate::loader::weights::SafetensorsFile;

/// How a layer names its module.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ModuleName {
    /// kohya-ss: the diffusers path with dots as underscores.
    Kohya(String),
    /// diffusers: the dotted module path.
    Dotted(String),
}

/// A host tensor in f32.
#[derive(Debug, Clone)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// One module's low-rank update.
#[derive(Debug, Clone)]
pub struct LoraLayer {
    pub component: Component,
    pub module: ModuleName,
    /// The file's name for it (the down key), for messages.
    pub key: String,
    /// `[r, in]` or `[r, in, kh, kw]`.
    pub down: HostTensor,
    /// `[out, r]` or `[out, r, 1, 1]`.
    pub up: HostTensor,
    pub alpha: Option<f32>,
}

impl LoraLayer {
    pub fn rank(&self) -> usize {
        self.down.shape.first().copied().unwrap_or(0)
    }

    /// `alpha / rank`, diffusers' and kohya's per-module scale.
    pub fn alpha_scale(&self) -> f32 {
        let r = self.rank() as f32;
        self.alpha.map_or(1.0, |a| a / r)
    }
}

/// The layers of one file.
#[derive(Debug)]
pub struct LoraFile {
    pub path: PathBuf,
    pub layers: Vec<LoraLayer>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Down,
    Up,
    Alpha,
}

/// Tensor-name endings and the part each names.
const SUFFIXES: [(&str, Part); 11] = [
    (".lora_down.weight", Part::Down),
    (".lora_up.weight", Part::Up),
    (".lora_A.weight", Part::Down),
    (".lora_B.weight", Part::Up),
    (".lora.down.weight", Part::Down),
    (".lora.up.weight", Part::Up),
    (".lora_linear_layer.down.weight", Part::Down),
    (".lora_linear_layer.up.weight", Part::Up),
    // Old attention processors: `attn1.processor.to_q_lora.down.weight`.
    ("_lora.down.weight", Part::Down),
    ("_lora.up.weight", Part::Up),
    (".alpha", Part::Alpha),
];

/// Old diffusers attention-processor names -> module names.
const PROCESSOR_NAMES: [(&str, &str); 4] = [
    ("processor.to_q", "to_q"),
    ("processor.to_k", "to_k"),
    ("processor.to_v", "to_v"),
    ("processor.to_out", "to_out.0"),
];

/// `(component, module, part)` of a tensor name, or None for a name wgsd does not read.
fn split_key(key: &str) -> Option<(Component, ModuleName, Part)> {
    let (head, part) = SUFFIXES
        .iter()
        .find_map(|(s, p)| key.strip_suffix(s).map(|h| (h, *p)))?;
    if let Some(m) = head.strip_prefix("lora_unet_") {
        return Some((Component::Unet, ModuleName::Kohya(m.to_string()), part));
    }
    if let Some(m) = head.strip_prefix("lora_te_") {
        return Some((
            Component::TextEncoder,
            ModuleName::Kohya(m.to_string()),
            part,
        ));
    }
    let (component, m) = if let Some(m) = head.strip_prefix("unet.") {
        (Component::Unet, m)
    } else if let Some(m) = head.strip_prefix("text_encoder.") {
        (Component::TextEncoder, m)
    } else {
        return None;
    };
    let mut m = m.to_string();
    for (old, new) in PROCESSOR_NAMES {
        if let Some(stem) = m.strip_suffix(old) {
            m = format!("{stem}{new}");
        }
    }
    Some((component, ModuleName::Dotted(m), part))
}

#[derive(Default)]
struct Parts {
    down: Option<(String, HostTensor)>,
    up: Option<HostTensor>,
    alpha: Option<f32>,
}

impl LoraFile {
    /// Reads every LoRA layer of `path` (f32, f16 or bf16 tensors).
    pub fn open(path: &Path) -> Result<LoraFile, LoraError> {
        let file = SafetensorsFile::open(path)?;
        let mut parts: BTreeMap<(Component, ModuleName), Parts> = BTreeMap::new();
        let mut unsupported = None;
        for key in file.keys() {
            let Some((component, module, part)) = split_key(&key) else {
                unsupported.get_or_insert(key);
                continue;
            };
            let shape = file.shape_of(&key).unwrap_or_default();
            let data = file.read_f32(&key, None)?;
            let entry = parts.entry((component, module)).or_default();
            let t = HostTensor { shape, data };
            match part {
                Part::Down => entry.down = Some((key, t)),
                Part::Up => entry.up = Some(t),
                Part::Alpha => {
                    let [a] = t.data[..] else {
                        return Err(LoraError::Incomplete {
                            file: path.to_path_buf(),
                            module: key,
                            msg: format!("alpha must be one number, has shape {:?}", t.shape),
                        });
                    };
                    entry.alpha = Some(a);
                }
            }
        }
        let config = AdapterMetadata::read(&file, path)?;
        if parts.is_empty() {
            return Err(LoraError::NotALora {
                file: path.to_path_buf(),
            });
        }
        if let Some(key) = unsupported {
            return Err(LoraError::UnsupportedKey {
                file: path.to_path_buf(),
                key,
            });
        }
        let mut layers = Vec::with_capacity(parts.len());
        for ((component, module), p) in parts {
            let incomplete = |msg: &str| LoraError::Incomplete {
                file: path.to_path_buf(),
                module: format!("{module:?}"),
                msg: msg.to_string(),
            };
            let (key, down) = p
                .down
                .ok_or_else(|| incomplete("no down (lora_down / lora_A) matrix"))?;
            let up =
                p.up.ok_or_else(|| incomplete("no up (lora_up / lora_B) matrix"))?;
            if down.shape.len() < 2 || up.shape.len() < 2 || down.shape[0] == 0 {
                return Err(incomplete(&format!(
                    "down {:?} / up {:?} are not matrices",
                    down.shape, up.shape
                )));
            }
            if p.alpha.is_some_and(|a| !a.is_finite()) {
                return Err(incomplete("alpha is not a finite number"));
            }
            let alpha = match (&module, p.alpha) {
                (_, Some(a)) => Some(a),
                (ModuleName::Dotted(name), None) => config.alpha(component, name),
                (ModuleName::Kohya(_), None) => None,
            };
            layers.push(LoraLayer {
                component,
                module,
                key,
                down,
                up,
                alpha,
            });
        }
        Ok(LoraFile {
            path: path.to_path_buf(),
            layers,
        })
    }
}

/// diffusers' `lora_adapter_metadata` header entry: per component, PEFT's `lora_alpha`
/// and `alpha_pattern` (module name or name suffix -> alpha).
#[derive(Default)]
struct AdapterMetadata {
    config: serde_json::Map<String, serde_json::Value>,
}

impl AdapterMetadata {
    fn read(file: &SafetensorsFile, path: &Path) -> Result<AdapterMetadata, LoraError> {
        let Some(raw) = file
            .user_metadata()
            .and_then(|m| m.get("lora_adapter_metadata"))
        else {
            return Ok(AdapterMetadata::default());
        };
        match serde_json::from_str(raw) {
            Ok(serde_json::Value::Object(config)) => Ok(AdapterMetadata { config }),
            _ => Err(LoraError::Incomplete {
                file: path.to_path_buf(),
                module: "lora_adapter_metadata".into(),
                msg: "the header's lora_adapter_metadata is not a JSON object".into(),
            }),
        }
    }

    /// Module `name`'s alpha, if the metadata sets one (PEFT matches `alpha_pattern`
    /// keys against the end of the module name at a dot boundary).
    fn alpha(&self, component: Component, name: &str) -> Option<f32> {
        let c = component.name();
        if let Some(serde_json::Value::Object(pattern)) =
            self.config.get(&format!("{c}.alpha_pattern"))
        {
            let hit = pattern
                .iter()
                .find(|(k, _)| name == k.as_str() || name.ends_with(&format!(".{k}")));
            if let Some(a) = hit.and_then(|(_, v)| v.as_f64()) {
                return Some(a as f32);
            }
        }
        self.config
            .get(&format!("{c}.lora_alpha"))
            .and_then(serde_json::Value::as_f64)
            .map(|a| a as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let k = split_key("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight");
        assert_eq!(
            k,
            Some((
                Component::Unet,
                ModuleName::Kohya("down_blocks_0_attentions_0_proj_in".into()),
                Part::Down
            ))
        );
        let k = split_key("lora_te_text_model_encoder_layers_0_mlp_fc1.alpha");
        assert_eq!(
            k.map(|k| (k.0, k.2)),
            Some((Component::TextEncoder, Part::Alpha))
        );
        let k =
            split_key("unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_k.lora_B.weight");
        assert_eq!(
            k.map(|k| k.1),
            Some(ModuleName::Dotted(
                "mid_block.attentions.0.transformer_blocks.0.attn2.to_k".into()
            ))
        );
        let k = split_key("unet.a.attn1.processor.to_out_lora.up.weight");
        assert_eq!(
            k.map(|k| k.1),
            Some(ModuleName::Dotted("a.attn1.to_out.0".into()))
        );
        assert_eq!(split_key("lora_te2_text_model_x.lora_down.weight"), None);
        assert_eq!(split_key("lora_unet_x.hada_w1_a"), None);
        assert_eq!(split_key("text_encoder_2.x.lora_A.weight"), None);
    }
}
