//! The encoder half of diffusers' `AutoencoderKL` (`models/autoencoders/vae.py`'s
//! `Encoder` + `quant_conv`), for img2img: conv_in, `DownEncoderBlock2D`s (resnets, then
//! a stride-2 3x3 convolution after `F.pad(x, (0, 1, 0, 1))` in all but the last block),
//! the mid block (resnet, single-head attention, resnet), GroupNorm + SiLU, conv_out to
//! `2 * latent_channels` moments (mean and logvar, `double_z`), then `quant_conv`.
//!
//! The pipeline loads it on the first img2img request, so text-to-image memory is
//! unchanged (see `Pipeline::vae_encoder`).

use super::nn::{Conv2d, GroupNorm};
use super::unet::resnet::ResnetBlock2D;
use super::vae::{EPS, MidAttention};
use crate::error::{Error, Result};
use crate::gpu::{DType, Recorder, Tensor};
use crate::loader::weights::VarBuilder;
use crate::models::config::VaeConfig;
use crate::ops;
use crate::ops::conv2d::Conv2dArgs;

/// `DownEncoderBlock2D`.
struct DownEncoderBlock {
    resnets: Vec<ResnetBlock2D>,
    /// `Downsample2D(use_conv=True, padding=0)`: asymmetric zero padding, stride 2.
    downsampler: Option<Conv2d>,
}

pub struct VaeEncoder {
    pub config: VaeConfig,
    conv_in: Conv2d,
    down_blocks: Vec<DownEncoderBlock>,
    mid_resnet0: ResnetBlock2D,
    mid_attention: Option<MidAttention>,
    mid_resnet1: ResnetBlock2D,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    quant_conv: Option<Conv2d>,
    /// How activations are stored (the pipeline's precision).
    act: DType,
}

impl VaeEncoder {
    /// Builds the encoder from the `vae/` weights (`vb` at the file's root).
    pub fn load(vb: &VarBuilder, config: VaeConfig) -> Result<VaeEncoder> {
        config.validate()?;
        let ch = &config.block_out_channels;
        let n = ch.len();
        let g = config.norm_num_groups;
        let moments = 2 * config.latent_channels;
        let enc = vb.pp("encoder");
        let top = ch[n - 1];
        let mut down_blocks = Vec::with_capacity(n);
        let mut out_ch = ch[0];
        for (i, &c) in ch.iter().enumerate() {
            let prev = out_ch;
            out_ch = c;
            let db = enc.pp("down_blocks").pp(i);
            let resnets = (0..config.layers_per_block)
                .map(|j| {
                    ResnetBlock2D::load(
                        &db.pp("resnets").pp(j),
                        if j == 0 { prev } else { out_ch },
                        out_ch,
                        None,
                        g,
                        EPS,
                    )
                })
                .collect::<Result<_>>()?;
            let downsampler = (i + 1 < n)
                .then(|| -> Result<Conv2d> {
                    let mut conv = Conv2d::load(
                        &db.pp("downsamplers").pp(0).pp("conv"),
                        out_ch,
                        out_ch,
                        3,
                        2,
                        0,
                    )?;
                    conv.args = Conv2dArgs {
                        pad_end: 1,
                        ..conv.args
                    };
                    Ok(conv)
                })
                .transpose()?;
            down_blocks.push(DownEncoderBlock {
                resnets,
                downsampler,
            });
        }
        let mid = enc.pp("mid_block");
        Ok(VaeEncoder {
            act: vb.activation_dtype(),
            conv_in: Conv2d::load(&enc.pp("conv_in"), config.in_channels, ch[0], 3, 1, 1)?,
            down_blocks,
            mid_resnet0: ResnetBlock2D::load(&mid.pp("resnets").pp(0), top, top, None, g, EPS)?,
            mid_attention: config
                .mid_block_add_attention
                .then(|| MidAttention::load(&mid.pp("attentions").pp(0), top, g))
                .transpose()?,
            mid_resnet1: ResnetBlock2D::load(&mid.pp("resnets").pp(1), top, top, None, g, EPS)?,
            conv_norm_out: GroupNorm::load(&enc.pp("conv_norm_out"), g, top, EPS)?,
            conv_out: Conv2d::load(&enc.pp("conv_out"), top, moments, 3, 1, 1)?,
            quant_conv: config
                .use_quant_conv
                .then(|| Conv2d::load(&vb.pp("quant_conv"), moments, moments, 1, 1, 0))
                .transpose()?,
            config,
        })
    }

    /// The activation dtype images must arrive in.
    pub fn activation_dtype(&self) -> DType {
        self.act
    }

    /// Image `[B, in_channels, H, W]` in [-1, 1] (H and W multiples of the VAE scale
    /// factor) -> moments `[B, 2 * latent_channels, H / f, W / f]`: the mean, then the
    /// log-variance (`AutoencoderKL.encode(x).latent_dist.parameters`).
    pub fn forward(&self, rec: &mut Recorder, image: &Tensor) -> Result<Tensor> {
        match image.shape() {
            &[_, c, _, _] if c == self.config.in_channels => {}
            s => {
                return Err(Error::shape(
                    "vae encoder",
                    format!(
                        "image must be [B, {}, H, W], got {s:?}",
                        self.config.in_channels
                    ),
                ));
            }
        }
        let x = if image.dtype() == self.act {
            image.clone()
        } else {
            ops::cast::cast(rec, image, self.act)?
        };
        let mut h = self.conv_in.forward(rec, &x)?;
        for block in &self.down_blocks {
            for r in &block.resnets {
                h = r.forward(rec, &h, None)?;
            }
            if let Some(down) = &block.downsampler {
                h = down.forward(rec, &h)?;
            }
        }
        h = self.mid_resnet0.forward(rec, &h, None)?;
        if let Some(a) = &self.mid_attention {
            h = a.forward(rec, &h)?;
        }
        h = self.mid_resnet1.forward(rec, &h, None)?;
        let h = self.conv_norm_out.forward(rec, &h, true)?;
        let h = self.conv_out.forward(rec, &h)?;
        match &self.quant_conv {
            Some(q) => q.forward(rec, &h),
            None => Ok(h),
        }
    }
}
