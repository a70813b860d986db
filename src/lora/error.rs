//! What can be wrong with a LoRA file or a LoRA request.

use std::path::PathBuf;

use crate::loader::LoadError;

#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    /// The file could not be read as safetensors.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// `FILE[:SCALE]` or a scale that is not a finite number.
    #[error("bad LoRA {spec:?}: {msg}")]
    Spec { spec: String, msg: String },
    /// No tensor of the file has a LoRA name.
    #[error(
        "{file}: not a LoRA file (no kohya-ss `lora_unet_*` / `lora_te_*` or diffusers `unet.*.lora_A.weight` tensors)"
    )]
    NotALora { file: PathBuf },
    /// A tensor name that is no LoRA part wgsd knows (LyCORIS, DoRA, SDXL's second text
    /// encoder, ...).
    #[error(
        "{file}: unsupported LoRA tensor {key:?} (wgsd reads kohya-ss lora_down/lora_up/alpha and diffusers/PEFT lora_A/lora_B for the UNet and the text encoder)"
    )]
    UnsupportedKey { file: PathBuf, key: String },
    /// A key names a module this model does not have.
    #[error(
        "{file}: {key:?} changes {component} module {module:?}, which this model does not have: the LoRA is for another architecture"
    )]
    NoSuchModule {
        file: PathBuf,
        key: String,
        component: &'static str,
        module: String,
    },
    /// A module's down/up pair does not fit its weight.
    #[error(
        "{file}: LoRA for {module:?} has down {down:?} and up {up:?}, which do not fit its weight {weight:?}: the LoRA is for another architecture"
    )]
    Shape {
        file: PathBuf,
        module: String,
        down: Vec<usize>,
        up: Vec<usize>,
        weight: Vec<usize>,
    },
    /// A module with a down but no up matrix (or the reverse), or a bad alpha.
    #[error("{file}: LoRA module {module:?}: {msg}")]
    Incomplete {
        file: PathBuf,
        module: String,
        msg: String,
    },
}
