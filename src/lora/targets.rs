//! The weights a LoRA can change: every `nn.Linear` / `nn.Conv2d` weight a model loaded
//! (`models::nn` records them), by diffusers module name (`down_blocks.0.attentions.0.
//! transformer_blocks.0.attn1.to_q`). A fused projection (self-attention Q/K/V as one
//! matmul) records each of its parts with its first row in the fused tensor.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::gpu::Tensor;

/// One module's weight: the loaded tensor and where the module's rows lie in it.
#[derive(Clone)]
pub struct Target {
    /// The loaded weight (the fused `[3 * inner, dim]` tensor for a fused part).
    pub tensor: Tensor,
    /// First row of this module in `tensor`.
    pub row_offset: usize,
    /// The module's own weight shape, `[out, in]` or `[out, in, kh, kw]`.
    pub shape: Vec<usize>,
}

/// The modules of one model component, shared by the builders that load it.
#[derive(Clone, Default)]
pub struct LoraTargets {
    modules: Arc<Mutex<BTreeMap<String, Target>>>,
}

impl LoraTargets {
    /// Records module `name`'s weight (rows `row_offset..` of `tensor`, shape `shape`).
    pub fn add(&self, name: &str, tensor: &Tensor, row_offset: usize, shape: &[usize]) {
        let target = Target {
            tensor: tensor.clone(),
            row_offset,
            shape: shape.to_vec(),
        };
        self.lock().insert(name.to_string(), target);
    }

    /// A snapshot of the recorded modules.
    pub fn modules(&self) -> BTreeMap<String, Target> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Target>> {
        self.modules.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The pipeline component a LoRA key addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    Unet,
    TextEncoder,
}

impl Component {
    pub fn name(self) -> &'static str {
        match self {
            Component::Unet => "unet",
            Component::TextEncoder => "text_encoder",
        }
    }
}

/// The modules of a whole pipeline, looked up by diffusers name or by kohya-ss's
/// flattened name (dots as underscores, which is ambiguous in general: `down_blocks`,
/// `to_q`; resolved here against the names that really exist).
pub struct ModelTargets {
    modules: HashMap<(Component, String), Target>,
    kohya: HashMap<(Component, String), String>,
}

/// transformers' CLIP text encoder names start with `text_model.` (hub checkpoints) or
/// not (transformers 5 saves); LoRA files always say `text_model.`.
fn canonical(component: Component, name: &str) -> &str {
    match component {
        Component::TextEncoder => name.strip_prefix("text_model.").unwrap_or(name),
        Component::Unet => name,
    }
}

impl ModelTargets {
    pub fn new(unet: &LoraTargets, text_encoder: &LoraTargets) -> ModelTargets {
        let mut modules = HashMap::new();
        let mut kohya = HashMap::new();
        for (component, targets) in [
            (Component::Unet, unet),
            (Component::TextEncoder, text_encoder),
        ] {
            for (name, t) in targets.modules() {
                let name = canonical(component, &name).to_string();
                let flat = name.replace('.', "_");
                if component == Component::TextEncoder {
                    // kohya-ss writes `lora_te_text_model_encoder_...`.
                    kohya.insert((component, format!("text_model_{flat}")), name.clone());
                }
                kohya.insert((component, flat), name.clone());
                modules.insert((component, name), t);
            }
        }
        ModelTargets { modules, kohya }
    }

    /// Module `name` (diffusers dotted name) of `component`, with its canonical name.
    pub fn dotted(&self, component: Component, name: &str) -> Option<(String, &Target)> {
        let name = canonical(component, name);
        self.modules
            .get(&(component, name.to_string()))
            .map(|t| (name.to_string(), t))
    }

    /// Module of a kohya-ss name (what follows `lora_unet_` / `lora_te_`).
    pub fn kohya(&self, component: Component, flat: &str) -> Option<(String, &Target)> {
        let name = self.kohya.get(&(component, flat.to_string()))?;
        self.dotted(component, name)
    }

    /// Number of modules a LoRA could change.
    pub fn len(&self) -> usize {
        self.modules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }
}
