//! Model parts against tensors diffusers / transformers produced for the same weights
//! (tests/fixtures/make_fixtures.py): the CLIP text encoder, the UNet and the VAE decoder,
//! for the SD 2-style (f32) and SD 1-style (fp16 weights) tiny pipelines. Weights are
//! uploaded in f32 so the comparison is with diffusers computing in float32.

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};

use common::{gpu, max_abs_diff};
use serde_json::Value;
use wgsd::gpu::{DType, Recorder, Tensor};
use wgsd::loader::{
    ArchiveOptions, ClipTextConfig, ModelDir, VarBuilder, open_model_with, read_component_config,
};
use wgsd::models::clip::ClipTextModel;
use wgsd::models::config::{UNetConfig, VaeConfig};
use wgsd::models::unet::UNet2DConditionModel;
use wgsd::models::vae::VaeDecoder;

struct Fixture {
    model: ModelDir,
    refs: Vec<u8>,
    json: Value,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> Fixture {
    let dir = root().join("tests/fixtures").join(name);
    // Python's json writes -Infinity (a DPM scheduler default); the tests never read it.
    let text = std::fs::read_to_string(dir.join("reference.json")).unwrap();
    let json: Value = serde_json::from_str(&text.replace("-Infinity", "null")).unwrap();
    let archive = root().join(json["archive"].as_str().unwrap());
    let opts = ArchiveOptions {
        cache_dir: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("model-cache")),
        ..ArchiveOptions::default()
    };
    Fixture {
        model: open_model_with(&archive, &opts).unwrap(),
        refs: std::fs::read(dir.join("reference.safetensors")).unwrap(),
        json,
    }
}

impl Fixture {
    fn tensor(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let st = safetensors::SafeTensors::deserialize(&self.refs).unwrap();
        let t = st
            .tensor(name)
            .unwrap_or_else(|e| panic!("reference {name}: {e}"));
        assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
        (t.shape().to_vec(), bytemuck::pod_collect_to_vec(t.data()))
    }

    fn upload(&self, name: &str) -> Tensor {
        let (shape, data) = self.tensor(name);
        Tensor::from_f32(gpu(), &shape, &data, DType::F32).unwrap()
    }

    fn vb(&self, component: &str) -> VarBuilder<'static> {
        VarBuilder::from_component(gpu(), &self.model.component(component).unwrap(), DType::F32)
            .unwrap()
    }
}

/// Fails with the worst difference relative to the reference's largest magnitude.
#[track_caller]
fn assert_rel(what: &str, got: &[f32], want: &[f32], rel: f32) {
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    let d = max_abs_diff(got, want);
    eprintln!(
        "{what}: max |diff| {d:.3e} (scale {scale:.3}, {:.3e} relative)",
        d / scale
    );
    assert!(
        d <= rel * scale,
        "{what}: max |diff| {d} > {rel} x scale {scale}"
    );
}

fn text_encoder(name: &str) {
    let fx = fixture(name);
    let config = ClipTextConfig::read(&fx.model.root).unwrap();
    let model = ClipTextModel::load(&fx.vb("text_encoder"), config).unwrap();
    for case in fx.json["text_encoder"].as_array().unwrap() {
        let ids: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let t = Tensor::from_u32(gpu(), &[1, ids.len()], &ids).unwrap();
        let mut rec = Recorder::new(gpu());
        let out = model.forward(&mut rec, &t).unwrap();
        let got = rec.read_f32(&out).unwrap();
        let (shape, want) = fx.tensor(case["tensor"].as_str().unwrap());
        assert_eq!(out.shape(), shape.as_slice());
        // Measured: ~1e-6 relative on these fixtures.
        assert_rel(
            &format!("{name} text encoder {:?}", case["prompt"]),
            &got,
            &want,
            1e-5,
        );
    }
}

#[test]
fn text_encoder_sd2() {
    text_encoder("sd2-tiny");
}

#[test]
fn text_encoder_sd1_fp16_weights() {
    text_encoder("sd1-tiny-fp16");
}

/// `cross_layers`: the fixture's number of cross-attention layers (sd2-tiny: 2 down +
/// 1 mid + 2x2 up; sd1-tiny-fp16: 2 down + 1 mid + 3 up).
fn unet(name: &str, cross_layers: usize) {
    let fx = fixture(name);
    let config: UNetConfig = read_component_config(&fx.model.root, "unet").unwrap();
    let model = UNet2DConditionModel::load(&fx.vb("unet"), config).unwrap();
    for case in fx.json["unet"].as_array().unwrap() {
        let c = case["case"].as_str().unwrap();
        let sample = fx.upload(&format!("unet.{c}.sample"));
        let ctx = fx.upload(&format!("unet.{c}.encoder_hidden_states"));
        let timestep = fx.tensor(&format!("unet.{c}.timestep")).1[0];
        let mut rec = Recorder::new(gpu());
        let out = model.forward(&mut rec, &sample, timestep, &ctx).unwrap();
        let got = rec.read_f32(&out).unwrap();
        let first_call = rec.dispatch_count();
        let (shape, want) = fx.tensor(&format!("unet.{c}.out"));
        assert_eq!(out.shape(), shape.as_slice());
        assert_rel(&format!("{name} unet {c}"), &got, &want, 1e-4);

        // A second call with the same text context reuses every cross-attention K/V
        // (two linears fewer per cross-attention layer) and gives the same output.
        let mut rec = Recorder::new(gpu());
        let again = model.forward(&mut rec, &sample, timestep, &ctx).unwrap();
        assert_eq!(rec.read_f32(&again).unwrap(), got, "{name} {c}: cached K/V");
        assert_eq!(
            first_call - rec.dispatch_count(),
            2 * cross_layers as u64,
            "{name} {c}: dispatches saved by the K/V cache"
        );
        // A new context (another tensor, same values) is computed afresh, not served
        // from the cache of the old one.
        let ctx2 = fx.upload(&format!("unet.{c}.encoder_hidden_states"));
        let mut rec = Recorder::new(gpu());
        let fresh = model.forward(&mut rec, &sample, timestep, &ctx2).unwrap();
        assert_eq!(rec.read_f32(&fresh).unwrap(), got);
        assert_eq!(rec.dispatch_count(), first_call);
    }
}

#[test]
fn unet_sd2() {
    unet("sd2-tiny", 7);
}

#[test]
fn unet_sd1_fp16_weights() {
    unet("sd1-tiny-fp16", 6);
}

fn vae(name: &str) {
    let fx = fixture(name);
    let config: VaeConfig = read_component_config(&fx.model.root, "vae").unwrap();
    let model = VaeDecoder::load(&fx.vb("vae"), config).unwrap();
    for case in fx.json["vae"]["cases"].as_array().unwrap() {
        let c = case["case"].as_str().unwrap();
        let latents = fx.upload(&format!("vae.{c}.latents"));
        let mut rec = Recorder::new(gpu());
        let out = model.forward(&mut rec, &latents).unwrap();
        let images = wgsd::ops::image::to_u8(&mut rec, &out).unwrap();
        let got = rec.read_f32(&out).unwrap();
        let (shape, want) = fx.tensor(&format!("vae.{c}.decoded"));
        assert_eq!(out.shape(), shape.as_slice());
        assert_rel(&format!("{name} vae {c}"), &got, &want, 1e-4);
        // The u8 image: equal up to pixels that sit on a rounding boundary.
        let st = safetensors::SafeTensors::deserialize(&fx.refs).unwrap();
        let want_u8 = st
            .tensor(&format!("vae.{c}.image_u8"))
            .unwrap()
            .data()
            .to_vec();
        let got_u8: Vec<u8> = images.read(&mut rec).unwrap().concat();
        assert_eq!(got_u8.len(), want_u8.len());
        let off: Vec<i32> = got_u8
            .iter()
            .zip(&want_u8)
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .collect();
        let n_off = off.iter().filter(|&&d| d > 0).count();
        assert!(
            off.iter().all(|&d| d <= 1),
            "{name} vae {c}: a pixel differs by more than 1 level"
        );
        assert!(
            n_off * 1000 <= off.len(),
            "{name} vae {c}: {n_off} of {} bytes differ",
            off.len()
        );
    }
}

#[test]
fn vae_sd2() {
    vae("sd2-tiny");
}

#[test]
fn vae_sd1_fp16_weights() {
    vae("sd1-tiny-fp16");
}

/// diffusers reads SD 2's list `attention_head_dim` as head COUNTS per block (and hands
/// the up blocks the reversed list); the fixture records the heads diffusers built.
#[test]
fn attention_heads_follow_diffusers() {
    for name in ["sd2-tiny", "sd1-tiny-fp16"] {
        let fx = fixture(name);
        let config: UNetConfig = read_component_config(&fx.model.root, "unet").unwrap();
        let n = config.block_out_channels.len();
        let layout = fx.json["unet_attention_layout"].as_object().unwrap();
        assert!(!layout.is_empty());
        for (module, v) in layout {
            let parts: Vec<&str> = module.split('.').collect();
            let level = match parts[0] {
                "down_blocks" => parts[1].parse::<usize>().unwrap(),
                "up_blocks" => n - 1 - parts[1].parse::<usize>().unwrap(),
                "mid_block" => n - 1,
                other => panic!("unexpected module {other}"),
            };
            let heads = config.heads(level).unwrap();
            assert_eq!(
                heads as u64,
                v["heads"].as_u64().unwrap(),
                "{name} {module}"
            );
            let dim = config.block_out_channels[level] / heads;
            assert_eq!(
                dim as u64,
                v["head_dim"].as_u64().unwrap(),
                "{name} {module}"
            );
        }
    }
}

fn config_error<T: serde::de::DeserializeOwned>(
    json: &str,
    validate: impl Fn(&T) -> wgsd::Result<()>,
) -> String {
    let cfg: T = serde_json::from_str(json).unwrap();
    validate(&cfg)
        .expect_err("config should be refused")
        .to_string()
}

/// Configs wgsd does not build are refused with the field and value named.
#[test]
fn unsupported_configs_name_the_field() {
    let base: Value = serde_json::from_str(wgsd::bench::models::SD2_UNET_CONFIG).unwrap();
    let cases = [
        ("class_embed_type", serde_json::json!("timestep")),
        (
            "down_block_types",
            serde_json::json!([
                "SimpleCrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D"
            ]),
        ),
        ("attention_head_dim", serde_json::json!([5, 10, 20])),
        ("resnet_time_scale_shift", serde_json::json!("scale_shift")),
        ("addition_embed_type", serde_json::json!("text_time")),
        ("norm_num_groups", serde_json::json!(48)),
        ("conv_in_kernel", serde_json::json!(7)),
    ];
    for (field, value) in cases {
        let mut cfg = base.clone();
        cfg[field] = value.clone();
        let err = config_error::<UNetConfig>(&cfg.to_string(), UNetConfig::validate);
        assert!(err.contains(field), "{field} = {value}: {err}");
    }
    let vae: Value = serde_json::from_str(wgsd::bench::models::SD2_VAE_CONFIG).unwrap();
    for (field, value) in [
        ("up_block_types", serde_json::json!(["UpDecoderBlock3D"])),
        ("act_fn", serde_json::json!("gelu")),
    ] {
        let mut cfg = vae.clone();
        cfg[field] = value.clone();
        let err = config_error::<VaeConfig>(&cfg.to_string(), VaeConfig::validate);
        assert!(err.contains(field), "{field} = {value}: {err}");
    }
}

/// f16 activations driven near f16's range (inputs of ~3e4, whose convolutions, sums and
/// attention scores overflow 65504): stores saturate and statistics / softmax stay f32,
/// so no NaN or infinity reaches the UNet output or the decoded image.
#[test]
fn f16_activations_near_the_range_stay_finite() {
    let fx = fixture("sd2-tiny");
    let vb = |c: &str| fx.vb(c).with_activation_dtype(DType::F16);
    let config: UNetConfig = read_component_config(&fx.model.root, "unet").unwrap();
    let unet = UNet2DConditionModel::load(&vb("unet"), config).unwrap();
    let (shape, sample) = fx.tensor("unet.b2_8x8_t981.sample");
    let big: Vec<f32> = sample.iter().map(|v| v * 3.0e4).collect();
    let sample = Tensor::from_f32(gpu(), &shape, &big, DType::F32).unwrap();
    let (cshape, ctx) = fx.tensor("unet.b2_8x8_t981.encoder_hidden_states");
    let big: Vec<f32> = ctx.iter().map(|v| v * 2.0e4).collect();
    let ctx = Tensor::from_f32(gpu(), &cshape, &big, DType::F16).unwrap();
    let mut rec = Recorder::new(gpu());
    let out = unet.forward(&mut rec, &sample, 981.0, &ctx).unwrap();
    assert_eq!(out.dtype(), DType::F16);
    let got = rec.read_f32(&out).unwrap();
    let bad = got.iter().filter(|v| !v.is_finite()).count();
    assert_eq!(bad, 0, "{bad} of {} UNet outputs are not finite", got.len());
    assert!(got.iter().any(|v| v.abs() > 1.0), "the input was not large");

    let config: VaeConfig = read_component_config(&fx.model.root, "vae").unwrap();
    let vae = VaeDecoder::load(&vb("vae"), config).unwrap();
    let (lshape, lat) = fx.tensor(&format!(
        "vae.{}.latents",
        fx.json["vae"]["cases"][0]["case"].as_str().unwrap()
    ));
    let big: Vec<f32> = lat.iter().map(|v| v * 5.0e4).collect();
    let lat = Tensor::from_f32(gpu(), &lshape, &big, DType::F32).unwrap();
    let mut rec = Recorder::new(gpu());
    let dec = vae.forward(&mut rec, &lat).unwrap();
    assert_eq!(dec.dtype(), DType::F16);
    let got = rec.read_f32(&dec).unwrap();
    let bad = got.iter().filter(|v| !v.is_finite()).count();
    assert_eq!(
        bad,
        0,
        "{bad} of {} decoded values are not finite",
        got.len()
    );
}
