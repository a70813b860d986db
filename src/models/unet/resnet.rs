//! `ResnetBlock2D` (diffusers `models/resnet.py`), as the UNet and the VAE decoder use it:
//! GroupNorm + SiLU, 3x3 conv, (+ projected time embedding), GroupNorm + SiLU, 3x3 conv,
//! plus the input (through a 1x1 conv when the channel count changes). The final add is
//! fused into the second conv.

use crate::error::Result;
use crate::gpu::{Recorder, Tensor};
use crate::loader::weights::VarBuilder;
use crate::models::nn::{Conv2d, GroupNorm, Linear};
use crate::ops;

pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    out_channels: usize,
}

impl ResnetBlock2D {
    /// `temb_channels` is `None` for the VAE (no time conditioning).
    pub fn load(
        vb: &VarBuilder,
        in_ch: usize,
        out_ch: usize,
        temb_channels: Option<usize>,
        groups: usize,
        eps: f64,
    ) -> Result<ResnetBlock2D> {
        Ok(ResnetBlock2D {
            norm1: GroupNorm::load(&vb.pp("norm1"), groups, in_ch, eps)?,
            conv1: Conv2d::load(&vb.pp("conv1"), in_ch, out_ch, 3, 1, 1)?,
            time_emb_proj: temb_channels
                .map(|t| Linear::load(&vb.pp("time_emb_proj"), t, out_ch, true))
                .transpose()?,
            norm2: GroupNorm::load(&vb.pp("norm2"), groups, out_ch, eps)?,
            conv2: Conv2d::load(&vb.pp("conv2"), out_ch, out_ch, 3, 1, 1)?,
            conv_shortcut: (in_ch != out_ch)
                .then(|| Conv2d::load(&vb.pp("conv_shortcut"), in_ch, out_ch, 1, 1, 0))
                .transpose()?,
            out_channels: out_ch,
        })
    }

    /// x `[B, in, H, W]`; `temb_silu` is `silu(temb)` `[B, temb_channels]`, computed once
    /// per UNet call and shared by every block. Returns `[B, out, H, W]`.
    pub fn forward(
        &self,
        rec: &mut Recorder,
        x: &Tensor,
        temb_silu: Option<&Tensor>,
    ) -> Result<Tensor> {
        let h = self.norm1.forward(rec, x, true)?;
        let mut h = self.conv1.forward(rec, &h)?;
        if let (Some(proj), Some(t)) = (&self.time_emb_proj, temb_silu) {
            let t = proj.forward(rec, t)?;
            let t = t.reshape(&[t.shape()[0], self.out_channels, 1, 1])?;
            h = ops::elementwise::add(rec, &h, &t)?;
        }
        let h = self.norm2.forward(rec, &h, true)?;
        let shortcut = match &self.conv_shortcut {
            Some(c) => c.forward(rec, x)?,
            None => x.clone(),
        };
        self.conv2.forward_add(rec, &h, &shortcut)
    }
}
