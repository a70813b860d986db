//! Errors of archive extraction, configs, weights and the tokenizer. Each names the file
//! (and the tensor or field) so that a user can fix the archive.

use std::path::PathBuf;

/// What went wrong while loading a model archive.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The archive is not a readable zip (or a `.mar` without what TorchServe puts in one).
    #[error("{path}: not a usable model archive: {msg}")]
    Archive { path: PathBuf, msg: String },
    /// An entry would be written outside the extraction folder (zip-slip) or is a link.
    #[error("{archive}: refusing entry {entry:?}: {reason}")]
    UnsafeEntry {
        archive: PathBuf,
        entry: String,
        reason: &'static str,
    },
    /// The archive unpacks to more bytes than allowed.
    #[error(
        "{archive}: unpacks to more than {limit} bytes (the extraction limit; raise it with WGSD_MAX_EXTRACT_BYTES if the archive is trusted)"
    )]
    TooLarge { archive: PathBuf, limit: u64 },
    /// The zip has more entries than allowed.
    #[error("{archive}: has {count} entries, more than the {limit} a model archive may have")]
    TooManyEntries {
        archive: PathBuf,
        count: usize,
        limit: usize,
    },
    /// An entry inflates by more than a model file can (a zip bomb).
    #[error(
        "{archive}: refusing entry {entry:?}: it inflates {ratio}x, more than the {limit}x a model file can (zip bomb?)"
    )]
    Suspicious {
        archive: PathBuf,
        entry: String,
        ratio: u64,
        limit: u64,
    },
    /// No `model_index.json` at the root or one level down.
    #[error(
        "{path}: no model_index.json found at the top or one folder down; is this a diffusers pipeline saved with save_pretrained?"
    )]
    NotAPipeline { path: PathBuf },
    /// A JSON file (model_index.json, config.json, tokenizer files) is malformed.
    #[error("{path}: bad JSON: {msg}")]
    Json { path: PathBuf, msg: String },
    /// A component folder (unet/, vae/, ...) is missing.
    #[error("{root}: the pipeline has no {component}/ folder")]
    MissingComponent { root: PathBuf, component: String },
    /// Only PyTorch pickle weights (`.bin`), which we do not read.
    #[error(
        "{file}: only PyTorch pickle weights (.bin) found; wgsd reads safetensors only. Convert with diffusers: \
         `DiffusionPipeline.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)`"
    )]
    PickleOnly { file: PathBuf },
    /// A component folder without any weights file.
    #[error("{dir}: no weights file (expected {expected})")]
    NoWeights { dir: PathBuf, expected: String },
    /// A tensor the model needs is not in the file.
    #[error("{file}: tensor {key:?} is missing")]
    MissingTensor { file: PathBuf, key: String },
    /// A tensor has another shape than the config implies.
    #[error("{file}: tensor {key:?} has shape {got:?}, expected {expected:?}")]
    Shape {
        file: PathBuf,
        key: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    /// The safetensors file is truncated or its header is broken.
    #[error("{file}: corrupt or truncated safetensors file: {msg}")]
    Corrupt { file: PathBuf, msg: String },
    /// A tensor stored in a dtype we do not convert.
    #[error("{file}: tensor {key:?} is stored as {dtype}, only F32, F16 and BF16 are supported")]
    UnsupportedDType {
        file: PathBuf,
        key: String,
        dtype: String,
    },
    /// A config value this implementation does not support.
    #[error("{file}: unsupported {field} = {value}")]
    UnsupportedConfig {
        file: PathBuf,
        field: String,
        value: String,
    },
    /// A `.ckpt` pickle names a global that is not a tensor rebuilder: refused, never run.
    #[error(
        "{file}: refusing to load: its pickle calls {global}, which is not a tensor (only torch \
         tensors, their storages and OrderedDict are rebuilt; nothing is executed). Convert the file \
         to .safetensors with a tool you trust"
    )]
    RefusedPickle { file: PathBuf, global: String },
    /// A single file that is not an SD 1.x / 2.x checkpoint.
    #[error("{file}: not a usable Stable Diffusion 1.x/2.x checkpoint: {msg}")]
    NotStableDiffusion { file: PathBuf, msg: String },
    /// A single file lacks tensors its configs need.
    #[error(
        "{file}: the checkpoint's {component} is incomplete: {count} tensors missing after conversion to diffusers names, e.g. {missing:?}"
    )]
    IncompleteCheckpoint {
        file: PathBuf,
        component: String,
        count: usize,
        missing: Vec<String>,
    },
    /// A non-standard single file without `--config`.
    #[error(
        "{file}: {arch} has no built-in configs; pass --config DIR|ARCHIVE (a diffusers pipeline whose configs, tokenizer and scheduler fit this file)"
    )]
    NeedsConfig { file: PathBuf, arch: String },
    /// The `--config` pipeline does not fit the single file.
    #[error("{file}: the --config pipeline does not fit this checkpoint: {msg}")]
    ConfigMismatch { file: PathBuf, msg: String },
    /// The tokenizer files could not be used.
    #[error("{path}: tokenizer: {msg}")]
    Tokenizer { path: PathBuf, msg: String },
}

impl LoadError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LoadError::Io {
            path: path.into(),
            source,
        }
    }
}
