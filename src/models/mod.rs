//! The Stable Diffusion models, each mirroring its diffusers / transformers class.

pub mod attention;
pub mod clip;
pub mod config;
pub mod nn;
pub mod unet;
pub mod vae;
pub mod vae_encoder;
pub mod vae_tiling;
