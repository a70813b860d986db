//! diffusers' `Attention` (`models/attention_processor.py`) with the default processor:
//! q from the hidden states, k and v from the context (cross-attention) or the hidden
//! states (self-attention), one fused flash-attention kernel, and `to_out.0` with the
//! residual add fused. `upcast_attention` needs nothing extra: wgsd always computes
//! attention in f32.

use super::nn::Linear;
use crate::error::Result;
use crate::gpu::{Recorder, Tensor};
use crate::loader::weights::VarBuilder;
use crate::ops;

pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    scale: f32,
}

impl Attention {
    /// `query_dim` channels in and out, `context_dim` for k/v, `heads` x `dim_head` inner.
    pub fn load(
        vb: &VarBuilder,
        query_dim: usize,
        context_dim: usize,
        heads: usize,
        dim_head: usize,
        qkv_bias: bool,
    ) -> Result<Attention> {
        let inner = heads * dim_head;
        Ok(Attention {
            to_q: Linear::load(&vb.pp("to_q"), query_dim, inner, qkv_bias)?,
            to_k: Linear::load(&vb.pp("to_k"), context_dim, inner, qkv_bias)?,
            to_v: Linear::load(&vb.pp("to_v"), context_dim, inner, qkv_bias)?,
            to_out: Linear::load(&vb.pp("to_out").pp(0), inner, query_dim, true)?,
            heads,
            scale: (dim_head as f32).powf(-0.5),
        })
    }

    /// x `[B, N, query_dim]`, context `[B, T, context_dim]` (None: self-attention).
    /// Returns `to_out(attn) + residual` `[B, N, query_dim]`.
    pub fn forward(
        &self,
        rec: &mut Recorder,
        x: &Tensor,
        context: Option<&Tensor>,
        residual: &Tensor,
    ) -> Result<Tensor> {
        let ctx = context.unwrap_or(x);
        let q = self.to_q.forward(rec, x)?;
        let k = self.to_k.forward(rec, ctx)?;
        let v = self.to_v.forward(rec, ctx)?;
        let o = ops::attention::attention(rec, &q, &k, &v, self.heads, self.scale, false)?;
        self.to_out.forward_add(rec, &o, residual)
    }
}
