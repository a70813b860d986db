//! Original CompVis / LDM tensor names -> diffusers names, for the UNet
//! (`model.diffusion_model.*`), the VAE (`first_stage_model.*`) and the text encoder
//! (CLIP-L `cond_stage_model.transformer.*` for SD 1.x, OpenCLIP-H
//! `cond_stage_model.model.*` for SD 2.x). The layout is the one diffusers'
//! `convert_ldm_unet_checkpoint`, `convert_ldm_vae_checkpoint`, `convert_ldm_clip_checkpoint`
//! and `convert_open_clip_checkpoint` (loaders/single_file_utils.py) read:
//!
//! - UNet `input_blocks.{1 + b (L+1) + l}.0` is down block b's resnet l, `.1` its
//!   attention, `input_blocks.{1 + b (L+1) + L}.0.op` its downsampler (L = layers per
//!   block); `middle_block.{0,1,2}` = resnet, attention, resnet; `output_blocks.{b (L+1) + l}`
//!   holds up block b's resnet l (`.0`), attention (`.1`) and, for l = L, the upsampler
//!   (`.1.conv` without attention, else `.2.conv`); resnet parts are renamed
//!   (`in_layers.0` -> `norm1`, ...). Attention internals already have diffusers' names.
//! - VAE `{encoder,decoder}.{down,up}.i.block.j`; decoder up blocks are numbered in the
//!   other order; the mid-block attention's `q/k/v/proj_out` 1x1 convs become linears.
//! - OpenCLIP's fused `attn.in_proj_weight` / `in_proj_bias` are split in three (q, k, v);
//!   layers at or past the config's `num_hidden_layers` (SD 2 conditions on the
//!   penultimate layer, so diffusers' SD 2 text encoder has 23 of OpenCLIP's 24) and
//!   `text_projection` are not used.
//!
//! Each plan is checked for completeness (every module the config implies must be there)
//! before anything is written.

use std::collections::BTreeMap;
use std::path::Path;

use super::tensors::TensorInfo;
use crate::loader::config::ClipTextConfig;
use crate::loader::error::LoadError;
use crate::models::config::{UNetConfig, VaeConfig};

pub const UNET_PREFIX: &str = "model.diffusion_model.";
pub const VAE_PREFIXES: [&str; 2] = ["first_stage_model.", "vae."];
pub const CLIP_L_PREFIX: &str = "cond_stage_model.transformer.";
pub const OPEN_CLIP_PREFIX: &str = "cond_stage_model.model.";

/// How a diffusers tensor is made from its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Copy,
    /// Drop trailing size-1 dimensions down to 2-D (1x1 conv -> linear).
    Squeeze,
    /// Part `index` of `parts` equal slices along dimension 0 (fused q/k/v).
    Rows {
        index: usize,
        parts: usize,
    },
}

/// One diffusers tensor: its source tensor and how it is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    pub source: String,
    pub op: Op,
}

impl Mapped {
    /// The diffusers tensor's shape, from the source's.
    pub fn shape(&self, src: &[usize]) -> Vec<usize> {
        match self.op {
            Op::Copy => src.to_vec(),
            Op::Squeeze => src.iter().take(2).copied().collect(),
            Op::Rows { parts, .. } => {
                let mut s = src.to_vec();
                if let Some(r) = s.first_mut() {
                    *r /= parts;
                }
                s
            }
        }
    }
}

/// diffusers name -> source, for one component.
pub type Plan = BTreeMap<String, Mapped>;

/// Which text encoder layout the file has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextLayout {
    /// OpenAI CLIP ViT-L/14 as transformers names it (SD 1.x).
    ClipL,
    /// OpenCLIP ViT-H/14 (SD 2.x).
    OpenClip,
}

fn copy(source: String) -> Mapped {
    Mapped {
        source,
        op: Op::Copy,
    }
}

/// `key` with `old.` at its start replaced by `new.`.
fn swap(key: &str, old: &str, new: &str) -> Option<String> {
    key.strip_prefix(old)
        .and_then(|r| r.strip_prefix('.'))
        .map(|r| format!("{new}.{r}"))
}

fn unet_resnet(rest: &str) -> String {
    const PARTS: [(&str, &str); 6] = [
        ("in_layers.0", "norm1"),
        ("in_layers.2", "conv1"),
        ("emb_layers.1", "time_emb_proj"),
        ("out_layers.0", "norm2"),
        ("out_layers.3", "conv2"),
        ("skip_connection", "conv_shortcut"),
    ];
    PARTS
        .iter()
        .find_map(|(o, n)| swap(rest, o, n))
        .unwrap_or_else(|| rest.to_string())
}

/// `a.b.rest` -> (a, b, rest) with a and b numbers.
fn two_indices(s: &str) -> Option<(usize, usize, &str)> {
    let mut it = s.splitn(3, '.');
    let a = it.next()?.parse().ok()?;
    let b = it.next()?.parse().ok()?;
    Some((a, b, it.next()?))
}

/// The diffusers name of one LDM UNet key (without `model.diffusion_model.`).
fn unet_name(k: &str, lpb: usize) -> Option<String> {
    const TOP: [(&str, &str); 4] = [
        ("time_embed.0", "time_embedding.linear_1"),
        ("time_embed.2", "time_embedding.linear_2"),
        ("out.0", "conv_norm_out"),
        ("out.2", "conv_out"),
    ];
    if let Some(n) = TOP.iter().find_map(|(o, n)| swap(k, o, n)) {
        return Some(n);
    }
    if let Some(r) = k.strip_prefix("input_blocks.") {
        let (i, j, rest) = two_indices(r)?;
        if i == 0 {
            return (j == 0).then(|| format!("conv_in.{rest}"));
        }
        let (b, l) = ((i - 1) / (lpb + 1), (i - 1) % (lpb + 1));
        return match j {
            0 if l == lpb => rest
                .strip_prefix("op.")
                .map(|r| format!("down_blocks.{b}.downsamplers.0.conv.{r}")),
            0 => Some(format!("down_blocks.{b}.resnets.{l}.{}", unet_resnet(rest))),
            1 => Some(format!("down_blocks.{b}.attentions.{l}.{rest}")),
            _ => None,
        };
    }
    if let Some(r) = k.strip_prefix("middle_block.") {
        let (i, rest) = r.split_once('.')?;
        return match i {
            "0" => Some(format!("mid_block.resnets.0.{}", unet_resnet(rest))),
            "1" => Some(format!("mid_block.attentions.0.{rest}")),
            "2" => Some(format!("mid_block.resnets.1.{}", unet_resnet(rest))),
            _ => None,
        };
    }
    if let Some(r) = k.strip_prefix("output_blocks.") {
        let (i, j, rest) = two_indices(r)?;
        let (b, l) = (i / (lpb + 1), i % (lpb + 1));
        let upsampler = || format!("up_blocks.{b}.upsamplers.0.conv.");
        return match j {
            0 => Some(format!("up_blocks.{b}.resnets.{l}.{}", unet_resnet(rest))),
            1 | 2 if rest.starts_with("conv.") => {
                Some(upsampler() + rest.trim_start_matches("conv."))
            }
            1 => Some(format!("up_blocks.{b}.attentions.{l}.{rest}")),
            _ => None,
        };
    }
    None
}

fn vae_name(k: &str, n_up: usize) -> Option<(String, Op)> {
    let (side, rest) = k.split_once('.')?;
    if side == "quant_conv" || side == "post_quant_conv" {
        return Some((k.to_string(), Op::Copy));
    }
    if side != "encoder" && side != "decoder" {
        return None;
    }
    let shortcut = |r: &str| r.replace("nin_shortcut", "conv_shortcut");
    let name = |s: String| Some((format!("{side}.{s}"), Op::Copy));
    for (o, n) in [
        ("conv_in", "conv_in"),
        ("conv_out", "conv_out"),
        ("norm_out", "conv_norm_out"),
    ] {
        if let Some(s) = swap(rest, o, n) {
            return name(s);
        }
    }
    if let Some(r) = rest.strip_prefix("mid.") {
        if let Some(r) = r.strip_prefix("attn_1.") {
            let (part, leaf) = r.split_once('.')?;
            let part = match part {
                "norm" => "group_norm",
                "q" => "to_q",
                "k" => "to_k",
                "v" => "to_v",
                "proj_out" => "to_out.0",
                _ => return None,
            };
            let op = if part == "group_norm" {
                Op::Copy
            } else {
                Op::Squeeze
            };
            return Some((format!("{side}.mid_block.attentions.0.{part}.{leaf}"), op));
        }
        let (blk, r) = r.split_once('.')?;
        let i: usize = blk.strip_prefix("block_")?.parse().ok()?;
        return name(format!(
            "mid_block.resnets.{}.{}",
            i.checked_sub(1)?,
            shortcut(r)
        ));
    }
    let (levels, diff, sampler, flip) = if side == "encoder" {
        ("down.", "down_blocks", "downsample.conv.", false)
    } else {
        ("up.", "up_blocks", "upsample.conv.", true)
    };
    let r = rest.strip_prefix(levels)?;
    let (i, r) = r.split_once('.')?;
    let i: usize = i.parse().ok()?;
    let i = if flip { n_up.checked_sub(1 + i)? } else { i };
    if let Some(leaf) = r.strip_prefix(sampler) {
        let s = if flip { "upsamplers" } else { "downsamplers" };
        return name(format!("{diff}.{i}.{s}.0.conv.{leaf}"));
    }
    let r = r.strip_prefix("block.")?;
    name(format!("{diff}.{i}.resnets.{}", shortcut(r)))
}

fn open_clip_name(k: &str, layers: usize) -> Option<Vec<(String, Op)>> {
    let one = |s: &str| Some(vec![(s.to_string(), Op::Copy)]);
    match k {
        "token_embedding.weight" => return one("embeddings.token_embedding.weight"),
        "positional_embedding" => return one("embeddings.position_embedding.weight"),
        "ln_final.weight" => return one("final_layer_norm.weight"),
        "ln_final.bias" => return one("final_layer_norm.bias"),
        _ => {}
    }
    let r = k.strip_prefix("transformer.resblocks.")?;
    let (i, rest) = r.split_once('.')?;
    let i: usize = i.parse().ok()?;
    if i >= layers {
        return None;
    }
    let l = format!("encoder.layers.{i}");
    if let Some(leaf) = rest.strip_prefix("attn.in_proj_") {
        return Some(
            ["q", "k", "v"]
                .iter()
                .enumerate()
                .map(|(index, p)| {
                    (
                        format!("{l}.self_attn.{p}_proj.{leaf}"),
                        Op::Rows { index, parts: 3 },
                    )
                })
                .collect(),
        );
    }
    const PARTS: [(&str, &str); 5] = [
        ("ln_1", "layer_norm1"),
        ("ln_2", "layer_norm2"),
        ("mlp.c_fc", "mlp.fc1"),
        ("mlp.c_proj", "mlp.fc2"),
        ("attn.out_proj", "self_attn.out_proj"),
    ];
    let s = PARTS.iter().find_map(|(o, n)| swap(rest, o, n))?;
    Some(vec![(format!("{l}.{s}"), Op::Copy)])
}

/// The three plans, and the source tensors no plan uses.
#[derive(Debug, Default)]
pub struct Plans {
    pub unet: Plan,
    pub vae: Plan,
    pub text_encoder: Plan,
    pub unused: Vec<String>,
}

/// Maps every tensor of the checkpoint, then checks that nothing the configs need is
/// missing ([`LoadError::IncompleteCheckpoint`] names what is).
pub fn plan(
    file: &Path,
    infos: &BTreeMap<String, TensorInfo>,
    unet: &UNetConfig,
    vae: &VaeConfig,
    text: &ClipTextConfig,
    layout: TextLayout,
) -> Result<Plans, LoadError> {
    let mut p = Plans::default();
    let vae_prefix = VAE_PREFIXES
        .iter()
        .find(|pre| infos.keys().any(|k| k.starts_with(*pre)))
        .copied()
        .unwrap_or(VAE_PREFIXES[0]);
    let n_up = vae.block_out_channels.len();
    for (key, info) in infos {
        if !info.dtype.is_weight() {
            p.unused.push(key.clone());
            continue;
        }
        let mut used = false;
        if let Some(k) = key.strip_prefix(UNET_PREFIX)
            && let Some(n) = unet_name(k, unet.layers_per_block)
        {
            p.unet.insert(n, copy(key.clone()));
            used = true;
        } else if let Some(k) = key.strip_prefix(vae_prefix)
            && let Some((n, op)) = vae_name(k, n_up)
        {
            let op = if op == Op::Squeeze && info.shape.len() <= 2 {
                Op::Copy
            } else {
                op
            };
            p.vae.insert(
                n,
                Mapped {
                    source: key.clone(),
                    op,
                },
            );
            used = true;
        } else if layout == TextLayout::ClipL
            && let Some(k) = key.strip_prefix(CLIP_L_PREFIX)
        {
            let k = k.strip_prefix("text_model.").unwrap_or(k);
            if k != "embeddings.position_ids" {
                p.text_encoder.insert(k.to_string(), copy(key.clone()));
                used = true;
            }
        } else if layout == TextLayout::OpenClip
            && let Some(k) = key.strip_prefix(OPEN_CLIP_PREFIX)
            && let Some(names) = open_clip_name(k, text.num_hidden_layers)
        {
            for (n, op) in names {
                p.text_encoder.insert(
                    n,
                    Mapped {
                        source: key.clone(),
                        op,
                    },
                );
            }
            used = true;
        }
        if !used {
            p.unused.push(key.clone());
        }
    }
    check(file, "unet", &p.unet, &required_unet(unet))?;
    check(file, "vae", &p.vae, &required_vae(vae))?;
    check(file, "text_encoder", &p.text_encoder, &required_text(text))?;
    Ok(p)
}

fn check(file: &Path, component: &str, plan: &Plan, required: &[String]) -> Result<(), LoadError> {
    let missing: Vec<String> = required
        .iter()
        .filter(|k| !plan.contains_key(*k))
        .cloned()
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(LoadError::IncompleteCheckpoint {
        file: file.to_path_buf(),
        component: component.to_string(),
        count: missing.len(),
        missing: missing.into_iter().take(5).collect(),
    })
}

fn resnet_keys(prefix: &str) -> Vec<String> {
    ["norm1", "conv1", "norm2", "conv2"]
        .iter()
        .flat_map(|p| ["weight", "bias"].map(|l| format!("{prefix}.{p}.{l}")))
        .collect()
}

fn attention_keys(prefix: &str) -> Vec<String> {
    [
        "norm.weight",
        "proj_in.weight",
        "transformer_blocks.0.attn1.to_q.weight",
        "transformer_blocks.0.attn2.to_k.weight",
        "transformer_blocks.0.ff.net.0.proj.weight",
        "proj_out.weight",
    ]
    .iter()
    .map(|l| format!("{prefix}.{l}"))
    .collect()
}

/// Modules every UNet with this config has (a representative tensor or two of each).
fn required_unet(c: &UNetConfig) -> Vec<String> {
    let mut r: Vec<String> = [
        "conv_in.weight",
        "time_embedding.linear_1.weight",
        "time_embedding.linear_2.weight",
        "conv_norm_out.weight",
        "conv_out.weight",
    ]
    .map(String::from)
    .to_vec();
    let n = c.block_out_channels.len();
    for (b, t) in c.down_block_types.iter().enumerate() {
        for l in 0..c.layers_per_block {
            r.extend(resnet_keys(&format!("down_blocks.{b}.resnets.{l}")));
            if t.starts_with("CrossAttn") {
                r.extend(attention_keys(&format!("down_blocks.{b}.attentions.{l}")));
            }
        }
        if b + 1 < n {
            r.push(format!("down_blocks.{b}.downsamplers.0.conv.weight"));
        }
    }
    for i in 0..2 {
        r.extend(resnet_keys(&format!("mid_block.resnets.{i}")));
    }
    if c.mid_block_type
        .as_deref()
        .is_none_or(|t| t.contains("CrossAttn"))
    {
        r.extend(attention_keys("mid_block.attentions.0"));
    }
    for (b, t) in c.up_block_types.iter().enumerate() {
        for l in 0..=c.layers_per_block {
            r.extend(resnet_keys(&format!("up_blocks.{b}.resnets.{l}")));
            if t.starts_with("CrossAttn") {
                r.extend(attention_keys(&format!("up_blocks.{b}.attentions.{l}")));
            }
        }
        if b + 1 < n {
            r.push(format!("up_blocks.{b}.upsamplers.0.conv.weight"));
        }
    }
    r
}

fn required_vae(c: &VaeConfig) -> Vec<String> {
    let n = c.block_out_channels.len();
    let mut r: Vec<String> = [
        "encoder.conv_in.weight",
        "encoder.conv_norm_out.weight",
        "encoder.conv_out.weight",
        "decoder.conv_in.weight",
        "decoder.conv_norm_out.weight",
        "decoder.conv_out.weight",
    ]
    .map(String::from)
    .to_vec();
    if c.use_post_quant_conv {
        r.push("quant_conv.weight".into());
        r.push("post_quant_conv.weight".into());
    }
    for side in ["encoder", "decoder"] {
        for i in 0..2 {
            r.extend(resnet_keys(&format!("{side}.mid_block.resnets.{i}")));
        }
        if c.mid_block_add_attention {
            for p in ["group_norm", "to_q", "to_k", "to_v", "to_out.0"] {
                r.push(format!("{side}.mid_block.attentions.0.{p}.weight"));
            }
        }
    }
    for i in 0..n {
        for j in 0..c.layers_per_block {
            r.extend(resnet_keys(&format!("encoder.down_blocks.{i}.resnets.{j}")));
        }
        for j in 0..=c.layers_per_block {
            r.extend(resnet_keys(&format!("decoder.up_blocks.{i}.resnets.{j}")));
        }
        if i + 1 < n {
            r.push(format!(
                "encoder.down_blocks.{i}.downsamplers.0.conv.weight"
            ));
            r.push(format!("decoder.up_blocks.{i}.upsamplers.0.conv.weight"));
        }
    }
    r
}

fn required_text(c: &ClipTextConfig) -> Vec<String> {
    let mut r: Vec<String> = [
        "embeddings.token_embedding.weight",
        "embeddings.position_embedding.weight",
        "final_layer_norm.weight",
        "final_layer_norm.bias",
    ]
    .map(String::from)
    .to_vec();
    for i in 0..c.num_hidden_layers {
        for p in [
            "layer_norm1",
            "layer_norm2",
            "mlp.fc1",
            "mlp.fc2",
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.out_proj",
        ] {
            for leaf in ["weight", "bias"] {
                r.push(format!("encoder.layers.{i}.{p}.{leaf}"));
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unet_blocks_follow_the_ldm_numbering() {
        let n = |k| unet_name(k, 2);
        assert_eq!(
            n("input_blocks.0.0.weight").as_deref(),
            Some("conv_in.weight")
        );
        assert_eq!(
            n("input_blocks.2.0.in_layers.2.weight").as_deref(),
            Some("down_blocks.0.resnets.1.conv1.weight")
        );
        assert_eq!(
            n("input_blocks.3.0.op.weight").as_deref(),
            Some("down_blocks.0.downsamplers.0.conv.weight")
        );
        assert_eq!(
            n("input_blocks.4.1.proj_in.weight").as_deref(),
            Some("down_blocks.1.attentions.0.proj_in.weight")
        );
        assert_eq!(
            n("middle_block.2.skip_connection.bias").as_deref(),
            Some("mid_block.resnets.1.conv_shortcut.bias")
        );
        assert_eq!(
            n("output_blocks.2.1.conv.weight").as_deref(),
            Some("up_blocks.0.upsamplers.0.conv.weight")
        );
        assert_eq!(
            n("output_blocks.5.2.conv.bias").as_deref(),
            Some("up_blocks.1.upsamplers.0.conv.bias")
        );
        assert_eq!(
            n("output_blocks.5.1.transformer_blocks.0.attn2.to_k.weight").as_deref(),
            Some("up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_k.weight")
        );
        assert_eq!(n("label_emb.0.0.weight"), None);
    }

    #[test]
    fn vae_up_blocks_are_reversed_and_attention_squeezed() {
        assert_eq!(
            vae_name("decoder.up.3.block.0.nin_shortcut.weight", 4),
            Some((
                "decoder.up_blocks.0.resnets.0.conv_shortcut.weight".into(),
                Op::Copy
            ))
        );
        assert_eq!(
            vae_name("decoder.up.1.upsample.conv.bias", 4),
            Some((
                "decoder.up_blocks.2.upsamplers.0.conv.bias".into(),
                Op::Copy
            ))
        );
        assert_eq!(
            vae_name("encoder.mid.attn_1.proj_out.weight", 4),
            Some((
                "encoder.mid_block.attentions.0.to_out.0.weight".into(),
                Op::Squeeze
            ))
        );
        assert_eq!(
            vae_name("decoder.norm_out.bias", 4),
            Some(("decoder.conv_norm_out.bias".into(), Op::Copy))
        );
    }

    #[test]
    fn open_clip_splits_qkv_and_drops_the_last_layer() {
        let v = open_clip_name("transformer.resblocks.1.attn.in_proj_weight", 23).expect("mapped");
        assert_eq!(v.len(), 3);
        assert_eq!(v[2].0, "encoder.layers.1.self_attn.v_proj.weight");
        assert_eq!(v[2].1, Op::Rows { index: 2, parts: 3 });
        assert_eq!(
            open_clip_name("transformer.resblocks.23.ln_1.weight", 23),
            None
        );
        assert_eq!(open_clip_name("text_projection", 23), None);
        let m = Mapped {
            source: String::new(),
            op: Op::Rows { index: 0, parts: 3 },
        };
        assert_eq!(m.shape(&[3072, 1024]), vec![1024, 1024]);
    }
}
