//! diffusers' `Attention` (`models/attention_processor.py`) with the default processor:
//! q from the hidden states, k and v from the context (cross-attention) or the hidden
//! states (self-attention: Q/K/V as one fused matmul, split in one pass), one fused flash-attention kernel, and `to_out.0` with the
//! residual add fused. `upcast_attention` needs nothing extra: wgsd always computes
//! QK^T and the softmax in f32, whatever the storage precision.
//!
//! Cross-attention K and V depend only on the text embeddings, which stay the same for a
//! whole generation: they are computed at the first denoising step and reused after,
//! keyed by the context tensor's storage identity and shape (never reused for another
//! tensor, see [`Tensor::storage_id`]) and by the K/V weights the run uses (a LoRA
//! replaces them, see [`Recorder::weight`]).

use std::sync::Mutex;

use super::nn::Linear;
use crate::error::Result;
use crate::gpu::{Recorder, Tensor};
use crate::loader::weights::VarBuilder;
use crate::ops;

/// The input projections: Q/K/V fused into one matmul for self-attention, separate for
/// cross-attention (K/V of the context are cached, Q is per step).
enum Projections {
    /// `[to_q; to_k; to_v]` as one `[3 * inner, dim]` linear.
    SelfFused(Linear),
    Cross {
        to_q: Linear,
        to_k: Linear,
        to_v: Linear,
    },
}

pub struct Attention {
    proj: Projections,
    to_out: Linear,
    heads: usize,
    scale: f32,
    /// K and V of the last cross-attention context: (storage id, shape, k, v).
    kv_cache: Mutex<Option<CachedKv>>,
}

struct CachedKv {
    id: u64,
    shape: Vec<usize>,
    /// Storage ids of the to_k and to_v weights used.
    weights: [u64; 2],
    k: Tensor,
    v: Tensor,
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
            proj: Projections::Cross {
                to_q: Linear::load(&vb.pp("to_q"), query_dim, inner, qkv_bias)?,
                to_k: Linear::load(&vb.pp("to_k"), context_dim, inner, qkv_bias)?,
                to_v: Linear::load(&vb.pp("to_v"), context_dim, inner, qkv_bias)?,
            },
            to_out: Linear::load(&vb.pp("to_out").pp(0), inner, query_dim, true)?,
            heads,
            scale: (dim_head as f32).powf(-0.5),
            kv_cache: Mutex::new(None),
        })
    }

    /// A self-attention block (`attn1`): Q, K and V of `dim` channels computed by one
    /// fused matmul (weights concatenated here, at load).
    pub fn load_self(
        vb: &VarBuilder,
        dim: usize,
        heads: usize,
        dim_head: usize,
        qkv_bias: bool,
    ) -> Result<Attention> {
        let inner = heads * dim_head;
        Ok(Attention {
            proj: Projections::SelfFused(Linear::load_fused(
                vb,
                &["to_q", "to_k", "to_v"],
                dim,
                inner,
                qkv_bias,
            )?),
            to_out: Linear::load(&vb.pp("to_out").pp(0), inner, dim, true)?,
            heads,
            scale: (dim_head as f32).powf(-0.5),
            kv_cache: Mutex::new(None),
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
        let (q, k, v) = match (&self.proj, context) {
            (Projections::SelfFused(qkv), None) => {
                let fused = qkv.forward(rec, x)?;
                let [q, k, v] = ops::split::split_last3(rec, &fused)?;
                (q, k, v)
            }
            (Projections::SelfFused(_), Some(_)) => {
                return Err(crate::Error::shape(
                    "attention",
                    "a self-attention block was given a cross-attention context",
                ));
            }
            (Projections::Cross { to_q, to_k, to_v }, ctx) => {
                let q = to_q.forward(rec, x)?;
                let (k, v) = match ctx {
                    Some(ctx) => self.cross_kv(rec, to_k, to_v, ctx)?,
                    None => (to_k.forward(rec, x)?, to_v.forward(rec, x)?),
                };
                (q, k, v)
            }
        };
        let o = ops::attention::attention(rec, &q, &k, &v, self.heads, self.scale, false)?;
        self.to_out.forward_add(rec, &o, residual)
    }

    /// K and V of a cross-attention context, from the cache when the same context was
    /// seen before.
    fn cross_kv(
        &self,
        rec: &mut Recorder,
        to_k: &Linear,
        to_v: &Linear,
        ctx: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let mut cache = self.kv_cache.lock().unwrap_or_else(|e| e.into_inner());
        let weights = [
            rec.weight(&to_k.weight).storage_id(),
            rec.weight(&to_v.weight).storage_id(),
        ];
        if let Some(c) = cache.as_ref()
            && c.id == ctx.storage_id()
            && c.shape == ctx.shape()
            && c.weights == weights
        {
            return Ok((c.k.clone(), c.v.clone()));
        }
        let k = to_k.forward(rec, ctx)?;
        let v = to_v.forward(rec, ctx)?;
        *cache = Some(CachedKv {
            id: ctx.storage_id(),
            shape: ctx.shape().to_vec(),
            weights,
            k: k.clone(),
            v: v.clone(),
        });
        Ok((k, v))
    }

    /// Drops the cached cross-attention K/V (frees their memory between generations).
    pub fn clear_cache(&self) {
        *self.kv_cache.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}
