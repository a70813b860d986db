//! Configs of the UNet and the VAE, read from the archive's `unet/config.json` and
//! `vae/config.json` exactly as diffusers writes them. Fields this implementation does
//! not support are checked by `validate`, which names the field and the value.

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// An int or a per-block list, as `attention_head_dim` / `num_attention_heads` come.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PerBlock {
    One(usize),
    Each(Vec<usize>),
}

impl PerBlock {
    /// The value for block `i` of `n`.
    pub fn at(&self, i: usize, n: usize, field: &str) -> Result<usize> {
        match self {
            PerBlock::One(v) => Ok(*v),
            PerBlock::Each(v) if v.len() == n => Ok(v[i]),
            PerBlock::Each(v) => Err(unsupported(
                field,
                format!("{v:?} (has {} entries, the model has {n} blocks)", v.len()),
            )),
        }
    }
}

fn unsupported(field: &str, value: impl std::fmt::Display) -> Error {
    Error::InvalidInput(format!("unsupported model config: {field} = {value}"))
}

fn d_true() -> bool {
    true
}
fn d_groups() -> usize {
    32
}
fn d_eps() -> f64 {
    1e-5
}
fn d_layers() -> usize {
    2
}
fn d_four() -> usize {
    4
}
fn d_three() -> usize {
    3
}
fn d_one_f() -> f64 {
    1.0
}

/// `UNet2DConditionModel` config (the fields SD 1.x / 2.x use, plus those we refuse).
#[derive(Debug, Clone, Deserialize)]
pub struct UNetConfig {
    #[serde(default = "d_four")]
    pub in_channels: usize,
    #[serde(default = "d_four")]
    pub out_channels: usize,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "d_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f64,
    pub down_block_types: Vec<String>,
    #[serde(default)]
    pub mid_block_type: Option<String>,
    pub up_block_types: Vec<String>,
    #[serde(default)]
    pub only_cross_attention: Value,
    pub block_out_channels: Vec<usize>,
    #[serde(default = "d_layers")]
    pub layers_per_block: usize,
    #[serde(default = "d_one_f")]
    pub downsample_padding: f64,
    #[serde(default = "d_one_f")]
    pub mid_block_scale_factor: f64,
    #[serde(default)]
    pub act_fn: Option<String>,
    #[serde(default = "d_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "d_eps")]
    pub norm_eps: f64,
    pub cross_attention_dim: usize,
    #[serde(default)]
    pub transformer_layers_per_block: Option<PerBlock>,
    #[serde(default)]
    pub attention_head_dim: Option<PerBlock>,
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock>,
    #[serde(default)]
    pub dual_cross_attention: bool,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default)]
    pub upcast_attention: bool,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    #[serde(default)]
    pub num_class_embeds: Option<usize>,
    #[serde(default)]
    pub resnet_time_scale_shift: Option<String>,
    #[serde(default)]
    pub time_embedding_type: Option<String>,
    #[serde(default)]
    pub time_embedding_dim: Option<usize>,
    #[serde(default)]
    pub time_cond_proj_dim: Option<usize>,
    #[serde(default)]
    pub timestep_post_act: Option<String>,
    #[serde(default)]
    pub encoder_hid_dim: Option<usize>,
    #[serde(default = "d_three")]
    pub conv_in_kernel: usize,
    #[serde(default = "d_three")]
    pub conv_out_kernel: usize,
    #[serde(default)]
    pub attention_type: Option<String>,
    #[serde(default)]
    pub cross_attention_norm: Option<String>,
    #[serde(default)]
    pub sample_size: Option<usize>,
}

fn check(field: &str, ok: bool, value: impl std::fmt::Display) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(unsupported(field, value))
    }
}

fn opt_is(v: &Option<String>, allowed: &[&str]) -> bool {
    v.as_deref().is_none_or(|s| allowed.contains(&s))
}

impl UNetConfig {
    /// Number of resolution levels.
    pub fn levels(&self) -> usize {
        self.block_out_channels.len()
    }

    /// Attention heads of down block `i` (and the matching up block), as diffusers
    /// computes them: `num_attention_heads`, or, when it is absent, `attention_head_dim`
    /// read as a head COUNT (a long-standing diffusers naming quirk that SD 2's
    /// `[5, 10, 20, 20]` relies on: 5 heads of 64 channels at 320 channels).
    pub fn heads(&self, i: usize) -> Result<usize> {
        let n = self.levels();
        match (&self.num_attention_heads, &self.attention_head_dim) {
            (Some(h), _) => h.at(i, n, "num_attention_heads"),
            (None, Some(d)) => d.at(i, n, "attention_head_dim"),
            (None, None) => Ok(8),
        }
    }

    /// Rejects configs this implementation does not build, naming the field.
    pub fn validate(&self) -> Result<()> {
        let n = self.levels();
        check(
            "block_out_channels",
            n >= 1,
            format!("{:?}", self.block_out_channels),
        )?;
        check(
            "down_block_types",
            self.down_block_types.len() == n,
            format!("{:?}", self.down_block_types),
        )?;
        check(
            "up_block_types",
            self.up_block_types.len() == n,
            format!("{:?}", self.up_block_types),
        )?;
        for t in &self.down_block_types {
            check(
                "down_block_types",
                matches!(t.as_str(), "CrossAttnDownBlock2D" | "DownBlock2D"),
                t,
            )?;
        }
        for t in &self.up_block_types {
            check(
                "up_block_types",
                matches!(t.as_str(), "CrossAttnUpBlock2D" | "UpBlock2D"),
                t,
            )?;
        }
        check(
            "mid_block_type",
            opt_is(&self.mid_block_type, &["UNetMidBlock2DCrossAttn"]),
            format!("{:?}", self.mid_block_type),
        )?;
        check(
            "only_cross_attention",
            matches!(self.only_cross_attention, Value::Null | Value::Bool(false)),
            &self.only_cross_attention,
        )?;
        check("dual_cross_attention", !self.dual_cross_attention, true)?;
        check("center_input_sample", !self.center_input_sample, true)?;
        check(
            "act_fn",
            opt_is(&self.act_fn, &["silu"]),
            format!("{:?}", self.act_fn),
        )?;
        check(
            "class_embed_type",
            self.class_embed_type.is_none(),
            format!("{:?}", self.class_embed_type),
        )?;
        check(
            "addition_embed_type",
            self.addition_embed_type.is_none(),
            format!("{:?}", self.addition_embed_type),
        )?;
        check(
            "num_class_embeds",
            self.num_class_embeds.is_none(),
            format!("{:?}", self.num_class_embeds),
        )?;
        check(
            "resnet_time_scale_shift",
            opt_is(&self.resnet_time_scale_shift, &["default"]),
            format!("{:?}", self.resnet_time_scale_shift),
        )?;
        check(
            "time_embedding_type",
            opt_is(&self.time_embedding_type, &["positional"]),
            format!("{:?}", self.time_embedding_type),
        )?;
        check(
            "time_embedding_dim",
            self.time_embedding_dim.is_none(),
            format!("{:?}", self.time_embedding_dim),
        )?;
        check(
            "time_cond_proj_dim",
            self.time_cond_proj_dim.is_none(),
            format!("{:?}", self.time_cond_proj_dim),
        )?;
        check(
            "timestep_post_act",
            self.timestep_post_act.is_none(),
            format!("{:?}", self.timestep_post_act),
        )?;
        check(
            "encoder_hid_dim",
            self.encoder_hid_dim.is_none(),
            format!("{:?}", self.encoder_hid_dim),
        )?;
        check(
            "conv_in_kernel",
            self.conv_in_kernel == 3,
            self.conv_in_kernel,
        )?;
        check(
            "conv_out_kernel",
            self.conv_out_kernel == 3,
            self.conv_out_kernel,
        )?;
        check(
            "attention_type",
            opt_is(&self.attention_type, &["default"]),
            format!("{:?}", self.attention_type),
        )?;
        check(
            "cross_attention_norm",
            self.cross_attention_norm.is_none(),
            format!("{:?}", self.cross_attention_norm),
        )?;
        check(
            "downsample_padding",
            self.downsample_padding == 1.0,
            self.downsample_padding,
        )?;
        check(
            "mid_block_scale_factor",
            self.mid_block_scale_factor == 1.0,
            self.mid_block_scale_factor,
        )?;
        if let Some(t) = &self.transformer_layers_per_block {
            for i in 0..n {
                check(
                    "transformer_layers_per_block",
                    t.at(i, n, "transformer_layers_per_block")? == 1,
                    format!("{t:?}"),
                )?;
            }
        }
        for (i, &c) in self.block_out_channels.iter().enumerate() {
            check(
                "norm_num_groups",
                self.norm_num_groups > 0 && c % self.norm_num_groups == 0,
                format!("{} (does not divide {c} channels)", self.norm_num_groups),
            )?;
            let heads = self.heads(i)?;
            check(
                "attention_head_dim",
                heads > 0 && c % heads == 0,
                format!("{heads} heads (do not divide {c} channels)"),
            )?;
        }
        Ok(())
    }
}

/// `AutoencoderKL` config (the decoder half is what wgsd runs).
#[derive(Debug, Clone, Deserialize)]
pub struct VaeConfig {
    #[serde(default = "d_three")]
    pub in_channels: usize,
    #[serde(default = "d_three")]
    pub out_channels: usize,
    #[serde(default)]
    pub up_block_types: Vec<String>,
    pub block_out_channels: Vec<usize>,
    #[serde(default = "d_one_usize")]
    pub layers_per_block: usize,
    #[serde(default)]
    pub act_fn: Option<String>,
    #[serde(default = "d_four")]
    pub latent_channels: usize,
    #[serde(default = "d_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "d_scaling")]
    pub scaling_factor: f64,
    #[serde(default)]
    pub shift_factor: Option<f64>,
    #[serde(default = "d_true")]
    pub mid_block_add_attention: bool,
    #[serde(default = "d_true")]
    pub use_post_quant_conv: bool,
    /// The encoder's `quant_conv` (img2img).
    #[serde(default = "d_true")]
    pub use_quant_conv: bool,
    #[serde(default)]
    pub force_upcast: Option<bool>,
    /// The training image size; diffusers' tiled decode uses it as its tile size.
    #[serde(default)]
    pub sample_size: Option<SampleSize>,
}

/// `sample_size`: one number, or `[h, w]` of which diffusers' tiling takes the first.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SampleSize {
    One(usize),
    Many(Vec<usize>),
}

impl VaeConfig {
    /// `AutoencoderKL.tile_sample_min_size` (`sample_size`, default 32).
    pub fn tile_sample_size(&self) -> usize {
        match &self.sample_size {
            None => 32,
            Some(SampleSize::One(n)) => *n,
            Some(SampleSize::Many(v)) => v.first().copied().unwrap_or(32),
        }
    }

    /// `tile_latent_min_size`: `int(sample_size / 2 ** (len(block_out_channels) - 1))`.
    pub fn tile_latent_size(&self) -> usize {
        self.tile_sample_size() >> self.block_out_channels.len().saturating_sub(1)
    }
}

fn d_one_usize() -> usize {
    1
}
fn d_scaling() -> f64 {
    0.18215
}

impl VaeConfig {
    /// Rejects configs this implementation does not build, naming the field.
    pub fn validate(&self) -> Result<()> {
        check(
            "block_out_channels",
            !self.block_out_channels.is_empty(),
            "[]",
        )?;
        for t in &self.up_block_types {
            check("up_block_types", t == "UpDecoderBlock2D", t)?;
        }
        check(
            "act_fn",
            opt_is(&self.act_fn, &["silu"]),
            format!("{:?}", self.act_fn),
        )?;
        check(
            "shift_factor",
            self.shift_factor.is_none_or(|s| s == 0.0),
            format!("{:?}", self.shift_factor),
        )?;
        for &c in &self.block_out_channels {
            check(
                "norm_num_groups",
                self.norm_num_groups > 0 && c % self.norm_num_groups == 0,
                format!("{} (does not divide {c} channels)", self.norm_num_groups),
            )?;
        }
        Ok(())
    }
}
