//! Loading a model: archives (`model.zip`, TorchServe `.mar`, folders) into a cached
//! diffusers folder, its configs (serde), and its safetensors weights behind a prefix
//! builder. Single-file checkpoints (`.safetensors`, `.ckpt`) are converted into such a
//! folder first.

pub mod archive;
pub mod config;
pub mod error;
pub mod single_file;
pub mod weights;

pub use archive::{
    ArchiveOptions, DEFAULT_MAX_EXTRACT_BYTES, ModelDir, SourceKind, default_cache_dir,
    manifest_version, open_model, open_model_with,
};
pub use config::{ClipTextConfig, ModelIndex, read_component_config, read_json};
pub use error::LoadError;
pub use single_file::{PredictionType, SingleFileOptions};
pub use weights::{SafetensorsFile, VarBuilder, find_weights_file};
