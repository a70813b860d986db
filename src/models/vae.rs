//! The VAE decoder of diffusers' `AutoencoderKL` (`models/autoencoders/autoencoder_kl.py`,
//! `vae.py`'s `Decoder`): latents divided by `scaling_factor`, `post_quant_conv`,
//! conv_in, a mid block (resnet, single-head attention with GroupNorm, resnet),
//! `UpDecoderBlock2D`s with nearest-2x + conv upsampling, GroupNorm + SiLU + conv_out.
//! Then diffusers' image post-processing to u8 (see `ops::image`).
//!
//! Tiled decoding (diffusers' `enable_tiling()`) is in `vae_tiling`.
//!
//! At 768x768 its largest activations ([1, 256, 768, 768] f32, 604 MB) exceed one storage
//! binding; every kernel it calls bands its bindings, so the result stays exact.

use super::nn::{Conv2d, GroupNorm, Linear};
use super::unet::resnet::ResnetBlock2D;
use super::vae_tiling::{self, TilePlan, VaeTiling};
use crate::error::{Error, Result};
use crate::gpu::{DType, Recorder, Tensor};
use crate::loader::weights::VarBuilder;
use crate::models::config::VaeConfig;
use crate::ops;

pub(crate) const EPS: f64 = 1e-6;

/// The mid block's attention (diffusers `Attention` with `group_norm`, one head,
/// `residual_connection`, biases on q/k/v).
pub(crate) struct MidAttention {
    group_norm: GroupNorm,
    /// `to_q`, `to_k`, `to_v` fused into one matmul (concatenated at load).
    to_qkv: Linear,
    to_out: Linear,
    scale: f32,
}

impl MidAttention {
    pub(crate) fn load(vb: &VarBuilder, ch: usize, groups: usize) -> Result<Self> {
        Ok(MidAttention {
            group_norm: GroupNorm::load(&vb.pp("group_norm"), groups, ch, EPS)?,
            to_qkv: Linear::load_fused(vb, &["to_q", "to_k", "to_v"], ch, ch, true)?,
            to_out: Linear::load(&vb.pp("to_out").pp(0), ch, ch, true)?,
            scale: (ch as f32).powf(-0.5),
        })
    }

    pub(crate) fn forward(&self, rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
        let &[b, c, h, w] = x.shape() else {
            return Err(Error::shape(
                "vae attention",
                format!("x must be [B, C, H, W], got {:?}", x.shape()),
            ));
        };
        let n = h * w;
        let normed = self.group_norm.forward(rec, x, false)?;
        let rows = ops::transpose::transpose(rec, &normed.reshape(&[b, c, n])?, None)?; // [B, HW, C]
        let fused = self.to_qkv.forward(rec, &rows)?;
        let [q, k, v] = ops::split::split_last3(rec, &fused)?;
        let o = ops::attention::attention(rec, &q, &k, &v, 1, self.scale, false)?;
        let o = self.to_out.forward(rec, &o)?;
        let out = ops::transpose::transpose(rec, &o, Some(&x.reshape(&[b, c, n])?))?;
        out.reshape(&[b, c, h, w])
    }
}

/// `UpDecoderBlock2D`.
struct UpDecoderBlock {
    resnets: Vec<ResnetBlock2D>,
    upsampler: Option<Conv2d>,
}

pub struct VaeDecoder {
    pub config: VaeConfig,
    post_quant_conv: Option<Conv2d>,
    conv_in: Conv2d,
    mid_resnet0: ResnetBlock2D,
    mid_attention: Option<MidAttention>,
    mid_resnet1: ResnetBlock2D,
    up_blocks: Vec<UpDecoderBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    /// How activations are stored (the pipeline's precision); latents arrive as f32.
    act: DType,
}

impl VaeDecoder {
    /// Builds the decoder from the `vae/` weights (`vb` at the file's root).
    pub fn load(vb: &VarBuilder, config: VaeConfig) -> Result<VaeDecoder> {
        config.validate()?;
        let ch = &config.block_out_channels;
        let n = ch.len();
        let g = config.norm_num_groups;
        let lat = config.latent_channels;
        let dec = vb.pp("decoder");
        let top = ch[n - 1];
        let mid = dec.pp("mid_block");
        let post_quant_conv = config
            .use_post_quant_conv
            .then(|| Conv2d::load(&vb.pp("post_quant_conv"), lat, lat, 1, 1, 0))
            .transpose()?;
        let mut up_blocks = Vec::with_capacity(n);
        let mut out_ch = top;
        for i in 0..n {
            let prev = out_ch;
            out_ch = ch[n - 1 - i];
            let ub = dec.pp("up_blocks").pp(i);
            let resnets = (0..config.layers_per_block + 1)
                .map(|j| {
                    ResnetBlock2D::load(
                        &ub.pp("resnets").pp(j),
                        if j == 0 { prev } else { out_ch },
                        out_ch,
                        None,
                        g,
                        EPS,
                    )
                })
                .collect::<Result<_>>()?;
            let upsampler = (i + 1 < n)
                .then(|| {
                    Conv2d::load(
                        &ub.pp("upsamplers").pp(0).pp("conv"),
                        out_ch,
                        out_ch,
                        3,
                        1,
                        1,
                    )
                })
                .transpose()?;
            up_blocks.push(UpDecoderBlock { resnets, upsampler });
        }
        Ok(VaeDecoder {
            act: vb.activation_dtype(),
            post_quant_conv,
            conv_in: Conv2d::load(&dec.pp("conv_in"), lat, top, 3, 1, 1)?,
            mid_resnet0: ResnetBlock2D::load(&mid.pp("resnets").pp(0), top, top, None, g, EPS)?,
            mid_attention: config
                .mid_block_add_attention
                .then(|| MidAttention::load(&mid.pp("attentions").pp(0), top, g))
                .transpose()?,
            mid_resnet1: ResnetBlock2D::load(&mid.pp("resnets").pp(1), top, top, None, g, EPS)?,
            up_blocks,
            conv_norm_out: GroupNorm::load(&dec.pp("conv_norm_out"), g, ch[0], EPS)?,
            conv_out: Conv2d::load(&dec.pp("conv_out"), ch[0], config.out_channels, 3, 1, 1)?,
            config,
        })
    }

    /// Latents `[B, latent_channels, h, w]` as the scheduler leaves them (not yet divided
    /// by `scaling_factor`) -> decoded image `[B, 3, 8h, 8w]` in about [-1, 1], untiled.
    pub fn forward(&self, rec: &mut Recorder, latents: &Tensor) -> Result<Tensor> {
        self.forward_tiling(rec, latents, VaeTiling::Off)
    }

    /// [`forward`](VaeDecoder::forward), tiled as diffusers' `enable_tiling()` when
    /// `tiling` says so (see `models::vae_tiling`).
    pub fn forward_tiling(
        &self,
        rec: &mut Recorder,
        latents: &Tensor,
        tiling: VaeTiling,
    ) -> Result<Tensor> {
        match latents.shape() {
            &[_, c, _, _] if c == self.config.latent_channels => {}
            s => {
                return Err(Error::shape(
                    "vae",
                    format!(
                        "latents must be [B, {}, h, w], got {s:?}",
                        self.config.latent_channels
                    ),
                ));
            }
        }
        // Decided before anything is allocated for the decode.
        let tiled = match tiling {
            VaeTiling::Off => false,
            VaeTiling::On => true,
            VaeTiling::Auto => {
                vae_tiling::auto_tiles(rec.gpu(), &self.config, latents.shape(), self.act)
            }
        };
        let inv = (1.0 / self.config.scaling_factor) as f32;
        let zero = Tensor::from_f32(rec.gpu(), &[1], &[0.0], DType::F32)?;
        let z = ops::elementwise::add_scaled(rec, latents, &zero, inv)?;
        let z = if z.dtype() == self.act {
            z
        } else {
            ops::cast::cast(rec, &z, self.act)?
        };
        let [.., h, w] = *latents.shape() else {
            return Err(Error::shape("vae", "latents must be 4-D"));
        };
        if tiled {
            let plan = TilePlan::new(&self.config)?;
            if plan.applies(h, w) {
                return vae_tiling::tiled_decode(rec, &plan, &z, &|rec, t| self.decode_z(rec, t));
            }
        }
        self.decode_z(rec, &z)
    }

    /// `post_quant_conv` + the decoder on latents already divided by `scaling_factor`
    /// (diffusers `AutoencoderKL._decode` without tiling; what each tile goes through).
    pub fn decode_z(&self, rec: &mut Recorder, z: &Tensor) -> Result<Tensor> {
        let z = match &self.post_quant_conv {
            Some(c) => c.forward(rec, z)?,
            None => z.clone(),
        };
        let mut h = self.conv_in.forward(rec, &z)?;
        h = self.mid_resnet0.forward(rec, &h, None)?;
        if let Some(a) = &self.mid_attention {
            h = a.forward(rec, &h)?;
        }
        h = self.mid_resnet1.forward(rec, &h, None)?;
        for block in &self.up_blocks {
            for r in &block.resnets {
                h = r.forward(rec, &h, None)?;
            }
            if let Some(up) = &block.upsampler {
                let u = ops::upsample::upsample_nearest2x(rec, &h)?;
                h = up.forward(rec, &u)?;
            }
        }
        let h = self.conv_norm_out.forward(rec, &h, true)?;
        self.conv_out.forward(rec, &h)
    }
}
