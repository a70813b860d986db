//! `UNet2DConditionModel` (diffusers `models/unets/unet_2d_condition.py`) for Stable
//! Diffusion 1.x and 2.x configs: sinusoidal time projection + time-embedding MLP,
//! conv_in, down blocks, mid block, up blocks with skip concatenation, GroupNorm + SiLU +
//! conv_out. Built from `unet/config.json`; weights found by their diffusers names
//! (`down_blocks.1.attentions.0...`).

pub mod blocks;
pub mod resnet;
pub mod transformer;

use blocks::{BlockArgs, DownBlock, MidBlock, UpBlock};

use crate::error::{Error, Result};
use crate::gpu::{DType, Recorder, Tensor};
use crate::loader::weights::VarBuilder;
use crate::models::config::UNetConfig;
use crate::models::nn::{Conv2d, GroupNorm, Linear};
use crate::ops;

pub struct UNet2DConditionModel {
    pub config: UNetConfig,
    time_linear_1: Linear,
    time_linear_2: Linear,
    conv_in: Conv2d,
    down_blocks: Vec<DownBlock>,
    mid_block: MidBlock,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    /// How activations are stored (the pipeline's precision). The sample and context
    /// are cast to it on the way in; the time-embedding MLP runs in f32.
    act: DType,
}

impl UNet2DConditionModel {
    /// Builds the UNet described by `config` from `vb` (the root of the unet weights).
    pub fn load(vb: &VarBuilder, config: UNetConfig) -> Result<UNet2DConditionModel> {
        config.validate()?;
        let ch = &config.block_out_channels;
        let n = ch.len();
        let temb_channels = 4 * ch[0];
        let a = BlockArgs {
            temb_channels,
            groups: config.norm_num_groups,
            eps: config.norm_eps,
            context_dim: config.cross_attention_dim,
            linear_projection: config.use_linear_projection,
        };
        let te = vb.pp("time_embedding");
        let time_linear_1 = Linear::load(&te.pp("linear_1"), ch[0], temb_channels, true)?;
        let time_linear_2 = Linear::load(&te.pp("linear_2"), temb_channels, temb_channels, true)?;
        let conv_in = Conv2d::load(&vb.pp("conv_in"), config.in_channels, ch[0], 3, 1, 1)?;

        let mut down_blocks = Vec::with_capacity(n);
        for (i, kind) in config.down_block_types.iter().enumerate() {
            let heads = (kind == "CrossAttnDownBlock2D")
                .then(|| config.heads(i))
                .transpose()?;
            let in_ch = if i == 0 { ch[0] } else { ch[i - 1] };
            down_blocks.push(DownBlock::load(
                &vb.pp("down_blocks").pp(i),
                in_ch,
                ch[i],
                config.layers_per_block,
                heads,
                i + 1 < n,
                a,
            )?);
        }
        let mid_block = MidBlock::load(&vb.pp("mid_block"), ch[n - 1], config.heads(n - 1)?, a)?;

        // Up blocks run from the deepest level; diffusers hands them the head list
        // reversed, so up block i uses the heads of down block n-1-i.
        let mut up_blocks = Vec::with_capacity(n);
        let mut out_ch = ch[n - 1];
        for (i, kind) in config.up_block_types.iter().enumerate() {
            let level = n - 1 - i;
            let prev_ch = out_ch;
            out_ch = ch[level];
            let skip_in_ch = ch[level.saturating_sub(1)];
            let heads = (kind == "CrossAttnUpBlock2D")
                .then(|| config.heads(level))
                .transpose()?;
            up_blocks.push(UpBlock::load(
                &vb.pp("up_blocks").pp(i),
                skip_in_ch,
                out_ch,
                prev_ch,
                config.layers_per_block + 1,
                heads,
                i + 1 < n,
                a,
            )?);
        }
        let conv_norm_out = GroupNorm::load(
            &vb.pp("conv_norm_out"),
            config.norm_num_groups,
            ch[0],
            config.norm_eps,
        )?;
        let conv_out = Conv2d::load(&vb.pp("conv_out"), ch[0], config.out_channels, 3, 1, 1)?;
        Ok(UNet2DConditionModel {
            act: vb.activation_dtype(),
            config,
            time_linear_1,
            time_linear_2,
            conv_in,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_out,
        })
    }

    /// The latent side must survive the downsampling convs (any size >= 1 works; odd
    /// sizes take diffusers' `upsample_size` path).
    pub fn check_input(&self, sample: &Tensor, context: &Tensor) -> Result<()> {
        let c = &self.config;
        match (sample.shape(), context.shape()) {
            (&[b, ci, _, _], &[bc, _, d])
                if ci == c.in_channels && b == bc && d == c.cross_attention_dim =>
            {
                Ok(())
            }
            (s, e) => Err(Error::shape(
                "unet",
                format!(
                    "sample must be [B, {}, h, w] and encoder_hidden_states [B, T, {}], got {s:?} and {e:?}",
                    c.in_channels, c.cross_attention_dim
                ),
            )),
        }
    }

    /// How this UNet stores activations.
    pub fn activation_dtype(&self) -> DType {
        self.act
    }

    fn to_act(&self, rec: &mut Recorder, t: &Tensor) -> Result<Tensor> {
        if t.dtype() == self.act {
            Ok(t.clone())
        } else {
            ops::cast::cast(rec, t, self.act)
        }
    }

    /// One UNet evaluation. sample `[B, C, h, w]`, `timestep` (the same for the whole
    /// batch, as diffusers broadcasts it), encoder_hidden_states `[B, T, D]` ->
    /// `[B, out_channels, h, w]`. Everything is recorded into `rec`; nothing is waited for.
    pub fn forward(
        &self,
        rec: &mut Recorder,
        sample: &Tensor,
        timestep: f32,
        context: &Tensor,
    ) -> Result<Tensor> {
        self.check_input(sample, context)?;
        let b = sample.shape()[0];
        let gpu = rec.gpu();
        let c = &self.config;
        let t = Tensor::from_f32(gpu, &[b], &vec![timestep; b], DType::F32)?;
        let t_emb = ops::embedding::timestep_embedding(
            rec,
            &t,
            c.block_out_channels[0],
            c.flip_sin_to_cos,
            c.freq_shift as f32,
        )?;
        let temb = self.time_linear_1.forward(rec, &t_emb)?;
        let temb = ops::activation::silu(rec, &temb)?;
        let temb = self.time_linear_2.forward(rec, &temb)?;
        // Every resnet applies SiLU to temb before its projection: do it once.
        let temb = ops::activation::silu(rec, &temb)?;
        let temb = self.to_act(rec, &temb)?;
        let sample = self.to_act(rec, sample)?;
        // The pipeline hands the context over in `act` already, once per generation (so
        // the cross-attention K/V cache sees one tensor); a cast here would defeat it.
        let context = &self.to_act(rec, context)?;

        let mut h = self.conv_in.forward(rec, &sample)?;
        let mut skips = vec![h.clone()];
        for block in &self.down_blocks {
            h = block.forward(rec, &h, &temb, context, &mut skips)?;
        }
        h = self.mid_block.forward(rec, &h, &temb, context)?;
        for block in &self.up_blocks {
            h = block.forward(rec, &h, &temb, context, &mut skips)?;
        }
        let h = self.conv_norm_out.forward(rec, &h, true)?;
        self.conv_out.forward(rec, &h)
    }
}
