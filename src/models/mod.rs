//! The Stable Diffusion models, each mirroring its diffusers / transformers class.

pub mod config;
