//! The Stable Diffusion models, each mirroring its diffusers / transformers class.

// pub mod clip; (waits for ops::embedding)
pub mod config;
pub mod nn;
