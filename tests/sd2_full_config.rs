//! The full Stable Diffusion 2 UNet builds from its diffusers config alone (random
//! weights, as `wgsd bench --models --full` uses it). Its own test binary: it measures
//! the memory the weights take, which other tests running in parallel would disturb.

#[path = "common/mod.rs"]
mod common;

use common::gpu;
use wgsd::gpu::DType;
use wgsd::loader::VarBuilder;
use wgsd::models::config::UNetConfig;
use wgsd::models::unet::UNet2DConditionModel;

/// The full SD 2 architecture builds from its diffusers config (random weights) with
/// the parameter count diffusers reports (`sum(p.numel())` of `UNet2DConditionModel.from_config`): 865,910,724 for the UNet.
#[test]
fn full_size_sd2_unet_builds_from_config() {
    let cfg: UNetConfig = serde_json::from_str(wgsd::bench::models::SD2_UNET_CONFIG).unwrap();
    let gpu = gpu();
    gpu.trim();
    let before = gpu.memory_stats().in_use;
    let vb = VarBuilder::random(gpu, DType::F16);
    let unet = UNet2DConditionModel::load(&vb, cfg).unwrap();
    let params = vb.loaded_parameters();
    let bytes = gpu.memory_stats().in_use - before;
    drop(unet);
    // The builder records the Linear / Conv2d weights for LoRA (`lora_targets`): the
    // memory is the model's and the builder's together.
    drop(vb);
    assert_eq!(params, 865_910_724);
    // f16 matrices, f32 vectors: between 2 and 4 bytes per parameter on the device.
    assert!((2 * params..4 * params).contains(&bytes), "{bytes} bytes");
    // Dropping the model (and its builder) gives the memory back.
    assert_eq!(gpu.memory_stats().in_use, before);
}
