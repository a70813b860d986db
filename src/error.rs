//! The library's error type. Every fallible public function returns [`Result`].

use std::path::PathBuf;

/// Everything that can go wrong in wgsd, with enough context for a user to act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// wgpu found no adapter at all (or none matching the user's choice).
    #[error("{0}")]
    NoAdapter(String),
    /// The adapter refused to give us a device with the features/limits we asked for.
    #[error("could not open the GPU device: {0}")]
    Device(String),
    /// A tensor had the wrong shape or dtype for an operation.
    #[error("shape error in {op}: {msg}")]
    Shape { op: &'static str, msg: String },
    /// A buffer or binding would exceed what the device can hold.
    #[error("out of GPU memory or limits: {0}")]
    OutOfMemory(String),
    /// wgpu reported a validation or internal error (a bug in wgsd or the driver).
    #[error("GPU error: {0}")]
    Gpu(String),
    /// Invalid user input (CLI flags, request parameters).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The caller's cancellation flag was set; the work stopped between steps.
    #[error("cancelled after {completed} of {total} steps")]
    Cancelled { completed: usize, total: usize },
    /// A model archive, config, weights file or tokenizer could not be loaded.
    #[error(transparent)]
    Load(#[from] crate::loader::LoadError),
    /// A LoRA file that cannot be applied to this model, or a bad LoRA request.
    #[error(transparent)]
    Lora(#[from] crate::lora::LoraError),
    /// A hires-fix request that cannot run (upscaler, target size, strength).
    #[error(transparent)]
    Hires(#[from] crate::hires::HiresError),
}

/// `Result` with wgsd's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A shape error for operation `op`.
    pub fn shape(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Shape {
            op,
            msg: msg.into(),
        }
    }
}
