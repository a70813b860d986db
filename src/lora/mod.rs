//! LoRA (low-rank adaptation) files applied per request without reloading the base
//! weights, as diffusers' `load_lora_weights(...)` + `fuse_lora(lora_scale=s)`:
//!
//! - `file.rs` reads kohya-ss and diffusers/PEFT safetensors into (module, down, up,
//!   alpha) layers;
//! - `targets.rs` is the index of the Linear / Conv2d weights a model loaded, by
//!   diffusers module name (filled by `models::nn` at load);
//! - `fuse.rs` computes fused copies of just the affected weights on the GPU;
//! - `cache.rs` keeps the last set's copies; a run hands them to its `Recorder`
//!   (`set_weight_overrides`), which `Linear` / `Conv2d` consult.

pub mod cache;
pub mod error;
pub mod file;
pub mod fuse;
pub mod spec;
pub mod targets;

pub use cache::LoraCache;
pub use error::LoraError;
pub use file::LoraFile;
pub use spec::{LoraSpec, set_key};
pub use targets::{Component, LoraTargets, ModelTargets};
