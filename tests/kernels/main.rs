//! Every kernel against its CPU reference, on the process-wide GPU (one device per test
//! binary, so each pipeline compiles once).

#[path = "../common/mod.rs"]
mod common;

mod activation;
mod attention;
mod cast;
mod concat;
mod conv2d;
mod elementwise;
mod embedding;
mod f16data;
mod gather;
mod image;
mod latent_preview;
mod latent_resize;
mod latent_sample;
mod mask_blend;
mod matmul;
mod norm;
mod pad;
mod prompt_weight;
mod runtime;
mod scheduler_step;
mod split;
mod tile_blend;
mod transpose;
mod upsample;
