//! The UNet's down, mid and up blocks (diffusers `models/unets/unet_2d_blocks.py`):
//! `CrossAttnDownBlock2D` / `DownBlock2D`, `UNetMidBlock2DCrossAttn`,
//! `CrossAttnUpBlock2D` / `UpBlock2D`, with `Downsample2D` (3x3 conv, stride 2) and
//! `Upsample2D` (nearest 2x, then 3x3 conv).

use super::resnet::ResnetBlock2D;
use super::transformer::Transformer2DModel;
use crate::error::Result;
use crate::gpu::{Recorder, Tensor};
use crate::loader::weights::VarBuilder;
use crate::models::nn::Conv2d;
use crate::ops;

/// What every block needs to know about the model.
#[derive(Clone, Copy)]
pub struct BlockArgs {
    pub temb_channels: usize,
    pub groups: usize,
    pub eps: f64,
    pub context_dim: usize,
    pub linear_projection: bool,
}

/// One resnet, optionally followed by a transformer (`None` for the plain blocks).
struct Layer {
    resnet: ResnetBlock2D,
    attention: Option<Transformer2DModel>,
}

impl Layer {
    fn forward(
        &self,
        rec: &mut Recorder,
        x: &Tensor,
        temb: &Tensor,
        ctx: &Tensor,
    ) -> Result<Tensor> {
        let h = self.resnet.forward(rec, x, Some(temb))?;
        match &self.attention {
            Some(a) => a.forward(rec, &h, ctx),
            None => Ok(h),
        }
    }
}

fn layer(
    vb: &VarBuilder,
    j: usize,
    in_ch: usize,
    out_ch: usize,
    heads: Option<usize>,
    a: BlockArgs,
) -> Result<Layer> {
    Ok(Layer {
        resnet: ResnetBlock2D::load(
            &vb.pp("resnets").pp(j),
            in_ch,
            out_ch,
            Some(a.temb_channels),
            a.groups,
            a.eps,
        )?,
        attention: heads
            .map(|h| {
                Transformer2DModel::load(
                    &vb.pp("attentions").pp(j),
                    out_ch,
                    h,
                    a.context_dim,
                    a.groups,
                    a.linear_projection,
                )
            })
            .transpose()?,
    })
}

/// `CrossAttnDownBlock2D` (with `heads`) or `DownBlock2D`.
pub struct DownBlock {
    layers: Vec<Layer>,
    downsampler: Option<Conv2d>,
}

impl DownBlock {
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        vb: &VarBuilder,
        in_ch: usize,
        out_ch: usize,
        num_layers: usize,
        heads: Option<usize>,
        add_downsample: bool,
        a: BlockArgs,
    ) -> Result<DownBlock> {
        let layers = (0..num_layers)
            .map(|j| layer(vb, j, if j == 0 { in_ch } else { out_ch }, out_ch, heads, a))
            .collect::<Result<_>>()?;
        let downsampler = add_downsample
            .then(|| {
                Conv2d::load(
                    &vb.pp("downsamplers").pp(0).pp("conv"),
                    out_ch,
                    out_ch,
                    3,
                    2,
                    1,
                )
            })
            .transpose()?;
        Ok(DownBlock {
            layers,
            downsampler,
        })
    }

    /// Returns the block output and pushes every skip connection onto `skips`.
    pub fn forward(
        &self,
        rec: &mut Recorder,
        x: &Tensor,
        temb: &Tensor,
        ctx: &Tensor,
        skips: &mut Vec<Tensor>,
    ) -> Result<Tensor> {
        let mut h = x.clone();
        for l in &self.layers {
            h = l.forward(rec, &h, temb, ctx)?;
            skips.push(h.clone());
        }
        if let Some(down) = &self.downsampler {
            h = down.forward(rec, &h)?;
            skips.push(h.clone());
        }
        Ok(h)
    }
}

/// `UNetMidBlock2DCrossAttn`: resnet, transformer, resnet.
pub struct MidBlock {
    resnet0: ResnetBlock2D,
    attention: Transformer2DModel,
    resnet1: ResnetBlock2D,
}

impl MidBlock {
    pub fn load(vb: &VarBuilder, ch: usize, heads: usize, a: BlockArgs) -> Result<MidBlock> {
        let resnet = |j: usize| {
            ResnetBlock2D::load(
                &vb.pp("resnets").pp(j),
                ch,
                ch,
                Some(a.temb_channels),
                a.groups,
                a.eps,
            )
        };
        Ok(MidBlock {
            resnet0: resnet(0)?,
            attention: Transformer2DModel::load(
                &vb.pp("attentions").pp(0),
                ch,
                heads,
                a.context_dim,
                a.groups,
                a.linear_projection,
            )?,
            resnet1: resnet(1)?,
        })
    }

    pub fn forward(
        &self,
        rec: &mut Recorder,
        x: &Tensor,
        temb: &Tensor,
        ctx: &Tensor,
    ) -> Result<Tensor> {
        let h = self.resnet0.forward(rec, x, Some(temb))?;
        let h = self.attention.forward(rec, &h, ctx)?;
        self.resnet1.forward(rec, &h, Some(temb))
    }
}

/// `CrossAttnUpBlock2D` (with `heads`) or `UpBlock2D`.
pub struct UpBlock {
    layers: Vec<Layer>,
    upsampler: Option<Conv2d>,
}

impl UpBlock {
    /// `prev_ch`: channels coming from the block below; `skip_in_ch`: channels of the
    /// matching down block's input (the last skip this block consumes).
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        vb: &VarBuilder,
        skip_in_ch: usize,
        out_ch: usize,
        prev_ch: usize,
        num_layers: usize,
        heads: Option<usize>,
        add_upsample: bool,
        a: BlockArgs,
    ) -> Result<UpBlock> {
        let layers = (0..num_layers)
            .map(|j| {
                let skip = if j == num_layers - 1 {
                    skip_in_ch
                } else {
                    out_ch
                };
                let input = if j == 0 { prev_ch } else { out_ch };
                layer(vb, j, input + skip, out_ch, heads, a)
            })
            .collect::<Result<_>>()?;
        let upsampler = add_upsample
            .then(|| {
                Conv2d::load(
                    &vb.pp("upsamplers").pp(0).pp("conv"),
                    out_ch,
                    out_ch,
                    3,
                    1,
                    1,
                )
            })
            .transpose()?;
        Ok(UpBlock { layers, upsampler })
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Consumes this block's skips from the end of `skips`. The upsampler resizes to the
    /// next skip's size: 2x whenever the latent divides evenly, otherwise what diffusers
    /// passes as `upsample_size` (nearest interpolation to that size).
    pub fn forward(
        &self,
        rec: &mut Recorder,
        x: &Tensor,
        temb: &Tensor,
        ctx: &Tensor,
        skips: &mut Vec<Tensor>,
    ) -> Result<Tensor> {
        let mut h = x.clone();
        for l in &self.layers {
            let skip = skips
                .pop()
                .ok_or_else(|| crate::Error::shape("unet", "ran out of skip connections"))?;
            let cat = ops::concat::concat_channels(rec, &h, &skip)?;
            h = l.forward(rec, &cat, temb, ctx)?;
        }
        if let Some(up) = &self.upsampler {
            let (hh, ww) = (h.shape()[2], h.shape()[3]);
            let target = skips
                .last()
                .map_or((2 * hh, 2 * ww), |s| (s.shape()[2], s.shape()[3]));
            let u = if target == (2 * hh, 2 * ww) {
                ops::upsample::upsample_nearest2x(rec, &h)?
            } else {
                ops::upsample::upsample_nearest(rec, &h, target.0, target.1)?
            };
            h = up.forward(rec, &u)?;
        }
        Ok(h)
    }
}
