//! The layers every model is built from, loaded by diffusers / transformers weight names
//! (`weight`, `bias`) under a [`VarBuilder`] prefix, each a thin wrapper over a kernel.
//! Linear and Conv2d weights are recorded as LoRA targets at load (`crate::lora`) and
//! looked up through [`Recorder::weight`] at run time, so a LoRA's fused copies replace
//! them for one run.

use crate::error::Result;
use crate::gpu::{Recorder, Tensor};
use crate::loader::weights::VarBuilder;
use crate::ops;
use crate::ops::conv2d::Conv2dArgs;

/// `nn.Linear`: weight `[out, in]` in the pipeline's weight dtype, bias `[out]` f32.
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn load(vb: &VarBuilder, in_dim: usize, out_dim: usize, bias: bool) -> Result<Linear> {
        let weight = vb.get_weight(&[out_dim, in_dim], "weight")?;
        vb.lora_targets()
            .add(vb.prefix(), &weight, 0, &[out_dim, in_dim]);
        Ok(Linear {
            weight,
            bias: if bias {
                Some(vb.get_f32(&[out_dim], "bias")?)
            } else {
                None
            },
        })
    }

    /// Several `nn.Linear`s of one input fused into one (`names` under `vb`, each
    /// `[out_each, in]`): weights (and biases) concatenated along the output dimension at
    /// load, so one matmul computes them all (`[.., names.len() * out_each]`).
    pub fn load_fused(
        vb: &VarBuilder,
        names: &[&str],
        in_dim: usize,
        out_each: usize,
        bias: bool,
    ) -> Result<Linear> {
        let weights: Vec<String> = names.iter().map(|n| format!("{n}.weight")).collect();
        let weights: Vec<&str> = weights.iter().map(String::as_str).collect();
        let weight = vb.get_cat0(&weights, &[out_each, in_dim], vb.weight_dtype())?;
        for (i, n) in names.iter().enumerate() {
            vb.lora_targets().add(
                vb.pp(n).prefix(),
                &weight,
                i * out_each,
                &[out_each, in_dim],
            );
        }
        let bias = if bias {
            let biases: Vec<String> = names.iter().map(|n| format!("{n}.bias")).collect();
            let biases: Vec<&str> = biases.iter().map(String::as_str).collect();
            Some(vb.get_cat0(&biases, &[out_each], crate::gpu::DType::F32)?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    /// `x @ W^T + b`; x `[.., in]` -> `[.., out]`.
    pub fn forward(&self, rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
        let w = rec.weight(&self.weight);
        ops::matmul::linear(rec, x, &w, self.bias.as_ref(), None)
    }

    /// `x @ W^T + b + residual`, the residual add fused into the matmul.
    pub fn forward_add(&self, rec: &mut Recorder, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let w = rec.weight(&self.weight);
        ops::matmul::linear(rec, x, &w, self.bias.as_ref(), Some(residual))
    }

    /// diffusers `GEGLU` on this projection (weight `[2I, in]`): `h * gelu(gate)` of the
    /// two output halves, fused into the matmul; x `[.., in]` -> `[.., I]`.
    pub fn forward_geglu(&self, rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
        let w = rec.weight(&self.weight);
        ops::matmul::linear_geglu(rec, x, &w, self.bias.as_ref())
    }
}

/// `nn.Conv2d` with square kernel: weight `[out, in, k, k]`, bias `[out]`.
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub args: Conv2dArgs,
}

impl Conv2d {
    pub fn load(
        vb: &VarBuilder,
        in_ch: usize,
        out_ch: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Conv2d> {
        let shape = [out_ch, in_ch, kernel, kernel];
        let weight = vb.get_weight(&shape, "weight")?;
        vb.lora_targets().add(vb.prefix(), &weight, 0, &shape);
        Ok(Conv2d {
            weight,
            bias: Some(vb.get_f32(&[out_ch], "bias")?),
            args: Conv2dArgs::new(stride, padding),
        })
    }

    /// x `[B, in, H, W]` -> `[B, out, Ho, Wo]`.
    pub fn forward(&self, rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
        self.run(rec, x, None)
    }

    /// The convolution with `residual` added in the same kernel.
    pub fn forward_add(&self, rec: &mut Recorder, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        self.run(rec, x, Some(residual))
    }

    /// Zero padding in the kernel, or, when the recorder asks for seamless tiling,
    /// circular padding first and an unpadded convolution (what PyTorch does for
    /// `padding_mode="circular"`).
    fn run(&self, rec: &mut Recorder, x: &Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
        let bias = self.bias.as_ref();
        let weight = rec.weight(&self.weight);
        if rec.circular_padding() && self.args.padding > 0 {
            let padded = ops::pad::pad_circular(rec, x, self.args.padding)?;
            let args = Conv2dArgs {
                padding: 0,
                ..self.args
            };
            return ops::conv2d::conv2d(rec, &padded, &weight, bias, args, residual);
        }
        ops::conv2d::conv2d(rec, x, &weight, bias, self.args, residual)
    }
}

/// `nn.GroupNorm` with affine parameters.
pub struct GroupNorm {
    pub gamma: Tensor,
    pub beta: Tensor,
    pub groups: usize,
    pub eps: f32,
}

impl GroupNorm {
    pub fn load(vb: &VarBuilder, groups: usize, channels: usize, eps: f64) -> Result<GroupNorm> {
        Ok(GroupNorm {
            gamma: vb.get_f32(&[channels], "weight")?,
            beta: vb.get_f32(&[channels], "bias")?,
            groups,
            eps: eps as f32,
        })
    }

    /// Normalises `[B, C, ...]`; with `silu`, applies SiLU in the same kernel.
    pub fn forward(&self, rec: &mut Recorder, x: &Tensor, silu: bool) -> Result<Tensor> {
        ops::norm::group_norm(rec, x, self.groups, &self.gamma, &self.beta, self.eps, silu)
    }
}

/// `nn.LayerNorm` over the last dimension.
pub struct LayerNorm {
    pub gamma: Tensor,
    pub beta: Tensor,
    pub eps: f32,
}

impl LayerNorm {
    pub fn load(vb: &VarBuilder, dim: usize, eps: f64) -> Result<LayerNorm> {
        Ok(LayerNorm {
            gamma: vb.get_f32(&[dim], "weight")?,
            beta: vb.get_f32(&[dim], "bias")?,
            eps: eps as f32,
        })
    }

    pub fn forward(&self, rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
        ops::norm::layer_norm(rec, x, &self.gamma, &self.beta, self.eps)
    }
}
