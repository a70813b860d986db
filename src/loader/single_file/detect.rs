//! Which Stable Diffusion a single-file checkpoint is, from tensor names and shapes
//! alone, as diffusers' `infer_diffusers_model_type` (loaders/single_file_utils.py) and
//! A1111's `sd_models_config.guess_model_config_from_state_dict` tell them apart:
//!
//! - the text encoder: `cond_stage_model.transformer.*` is OpenAI CLIP-L (SD 1.x),
//!   `cond_stage_model.model.*` is OpenCLIP-H (SD 2.x);
//! - the UNet's cross-attention context width (`attn2.to_k.weight`'s input dim): 768 for
//!   SD 1.x, 1024 for SD 2.x;
//! - `input_blocks.0.0.weight`'s input channels: 4, or 9 for inpainting UNets.
//!
//! Standard means the full-size SD 1.x / 2.x layout (a 320-channel UNet, CLIP-L 768 or
//! OpenCLIP-H 1024 wide); its diffusers configs are built in. Anything else (e.g. the
//! tiny test models) needs `--config`.

use super::keymap::{CLIP_L_PREFIX, OPEN_CLIP_PREFIX, TextLayout, UNET_PREFIX, VAE_PREFIXES};

/// SD 1.x or 2.x.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdVersion {
    V1,
    V2,
}

/// What [`detect`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Architecture {
    pub version: SdVersion,
    pub text: TextLayout,
    /// UNet input channels: 4, or 9 for inpainting.
    pub in_channels: usize,
    /// Cross-attention context width (the text encoder's hidden size).
    pub context_dim: usize,
    /// The full-size SD 1.x / 2.x layout, whose configs wgsd has built in.
    pub standard: bool,
}

impl Architecture {
    pub fn inpainting(&self) -> bool {
        self.in_channels == 9
    }

    /// "SD 1.x", "SD 2.x inpainting", ...
    pub fn describe(&self) -> String {
        let v = match self.version {
            SdVersion::V1 => "SD 1.x",
            SdVersion::V2 => "SD 2.x",
        };
        let mut s = v.to_string();
        if self.inpainting() {
            s.push_str(" inpainting");
        }
        if !self.standard {
            s.push_str(" (non-standard sizes)");
        }
        s
    }
}

/// Recognises the architecture from `(name, shape)` pairs. The error says what the file
/// looks like instead.
pub fn detect<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a [usize])> + Clone,
) -> Result<Architecture, String> {
    let find = |pred: &dyn Fn(&str) -> bool| {
        tensors
            .clone()
            .into_iter()
            .find(|(k, _)| pred(k))
            .map(|(_, s)| s)
    };
    let has = |prefix: &str| find(&|k: &str| k.starts_with(prefix)).is_some();
    let conv_in = find(&|k: &str| k == "model.diffusion_model.input_blocks.0.0.weight");
    let Some(conv_in) = conv_in else {
        let what = if has("conditioner.embedders.") {
            "an SDXL checkpoint (only SD 1.x and 2.x are supported)"
        } else if has("model.diffusion_model.double_blocks.") || has("double_blocks.") {
            "a FLUX checkpoint (only SD 1.x and 2.x are supported)"
        } else if has("model.diffusion_model.joint_blocks.") || has("joint_blocks.") {
            "an SD 3 checkpoint (only SD 1.x and 2.x are supported)"
        } else if has("lora_unet_") || has("lora_te_") || has("unet.") && !has(UNET_PREFIX) {
            "not a full checkpoint (a LoRA or a diffusers-named file?)"
        } else {
            "not a Stable Diffusion checkpoint: no UNet (model.diffusion_model.*) in it"
        };
        return Err(what.to_string());
    };
    if conv_in.len() != 4 {
        return Err(format!(
            "model.diffusion_model.input_blocks.0.0.weight has shape {conv_in:?}, not a 2-D conv's"
        ));
    }
    let in_channels = conv_in[1];
    if !matches!(in_channels, 4 | 9) {
        return Err(format!(
            "a UNet with {in_channels} input channels (4 for text to image, 9 for inpainting; \
             8 would be InstructPix2Pix, which is not supported)"
        ));
    }
    let text = if has(CLIP_L_PREFIX) {
        TextLayout::ClipL
    } else if has(OPEN_CLIP_PREFIX) {
        TextLayout::OpenClip
    } else {
        return Err(
            "no text encoder (cond_stage_model.transformer.* or cond_stage_model.model.*) in it"
                .into(),
        );
    };
    if !VAE_PREFIXES.iter().any(|p| has(p)) {
        return Err("no VAE (first_stage_model.*) in it".into());
    }
    let context_dim =
        find(&|k: &str| k.starts_with(UNET_PREFIX) && k.ends_with(".attn2.to_k.weight"))
            .and_then(|s| s.get(1).copied())
            .ok_or_else(|| "the UNet has no cross-attention (attn2.to_k.weight)".to_string())?;
    let version = match (text, context_dim) {
        (TextLayout::ClipL, 1024) | (TextLayout::OpenClip, 768) => {
            return Err(format!(
                "the text encoder ({text:?}) does not match the UNet's context width {context_dim}"
            ));
        }
        (TextLayout::ClipL, _) => SdVersion::V1,
        (TextLayout::OpenClip, _) => SdVersion::V2,
    };
    let standard = conv_in[0] == 320
        && matches!(
            (version, context_dim),
            (SdVersion::V1, 768) | (SdVersion::V2, 1024)
        );
    Ok(Architecture {
        version,
        text,
        in_channels,
        context_dim,
        standard,
    })
}
