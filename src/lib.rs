//! wgsd: Stable Diffusion text-to-image where every tensor operation is a hand-written
//! WGSL compute shader run through wgpu.

pub mod bench;
mod conditioning;
pub mod error;
pub mod gpu;
pub mod hires;
pub mod img2img;
pub mod inpaint;
pub mod loader;
pub mod lora;
pub mod models;
pub mod ops;
pub mod pipeline;
pub mod pipeline_warmup;
pub mod png_info;
pub mod precision;
pub mod prompt;
pub mod rng;
pub mod schedulers;
pub mod serve;
pub mod tokenizer;

pub use error::{Error, Result};
pub use pipeline_warmup::WarmUp;
pub use precision::Precision;
