//! CLIP text encoder, mirroring transformers' `CLIPTextModel` (what diffusers' Stable
//! Diffusion pipelines call): token + position embeddings, pre-LayerNorm transformer
//! layers with a causal self-attention mask, the activation from the config (`gelu` for
//! SD 2's OpenCLIP, `quick_gelu` for SD 1's OpenAI CLIP), and a final LayerNorm. Its
//! `last_hidden_state` is the UNet's `encoder_hidden_states`.

use super::nn::{LayerNorm, Linear};
use crate::error::{Error, Result};
use crate::gpu::{Recorder, Tensor};
use crate::loader::ClipTextConfig;
use crate::loader::weights::VarBuilder;
use crate::ops;

/// `CLIPAttention`: q/k/v/out projections with bias.
struct SelfAttention {
    /// `q_proj`, `k_proj`, `v_proj` fused into one matmul (concatenated at load).
    qkv_proj: Linear,
    out_proj: Linear,
    heads: usize,
    scale: f32,
}

/// `CLIPEncoderLayer`.
struct EncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: SelfAttention,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// `CLIPTextModel` (`text_model.*` weights).
pub struct ClipTextModel {
    pub config: ClipTextConfig,
    token_embedding: Tensor,
    position_embedding: Tensor,
    layers: Vec<EncoderLayer>,
    final_layer_norm: LayerNorm,
    gelu: bool,
}

impl ClipTextModel {
    /// Builds the model from `text_encoder/` weights. `vb` is at the file's root.
    pub fn load(vb: &VarBuilder, config: ClipTextConfig) -> Result<ClipTextModel> {
        let d = config.hidden_size;
        let eps = config.layer_norm_eps;
        let heads = config.num_attention_heads;
        let head_dim = d / heads;
        let gelu = match config.hidden_act.as_str() {
            "gelu" => true,
            "quick_gelu" => false,
            other => {
                return Err(Error::InvalidInput(format!(
                    "unsupported text encoder config: hidden_act = {other:?}"
                )));
            }
        };
        let tm = vb.pp_if_present("text_model");
        let emb = tm.pp("embeddings");
        let token_embedding = emb
            .pp("token_embedding")
            .get_weight(&[config.vocab_size, d], "weight")?;
        let position_embedding = emb
            .pp("position_embedding")
            .get_weight(&[config.max_position_embeddings, d], "weight")?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let l = tm.pp("encoder").pp("layers").pp(i);
                let a = l.pp("self_attn");
                Ok(EncoderLayer {
                    layer_norm1: LayerNorm::load(&l.pp("layer_norm1"), d, eps)?,
                    self_attn: SelfAttention {
                        qkv_proj: Linear::load_fused(
                            &a,
                            &["q_proj", "k_proj", "v_proj"],
                            d,
                            d,
                            true,
                        )?,
                        out_proj: Linear::load(&a.pp("out_proj"), d, d, true)?,
                        heads,
                        scale: (head_dim as f32).powf(-0.5),
                    },
                    layer_norm2: LayerNorm::load(&l.pp("layer_norm2"), d, eps)?,
                    fc1: Linear::load(&l.pp("mlp").pp("fc1"), d, config.intermediate_size, true)?,
                    fc2: Linear::load(&l.pp("mlp").pp("fc2"), config.intermediate_size, d, true)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let final_layer_norm = LayerNorm::load(&tm.pp("final_layer_norm"), d, eps)?;
        Ok(ClipTextModel {
            config,
            token_embedding,
            position_embedding,
            layers,
            final_layer_norm,
            gelu,
        })
    }

    /// `last_hidden_state` for token ids `[B, T]` (U32): `[B, T, hidden]`.
    pub fn forward(&self, rec: &mut Recorder, ids: &Tensor) -> Result<Tensor> {
        let &[_, t] = ids.shape() else {
            return Err(Error::shape(
                "clip",
                format!("ids must be [B, T], got {:?}", ids.shape()),
            ));
        };
        if t > self.config.max_position_embeddings {
            return Err(Error::shape(
                "clip",
                format!(
                    "{t} tokens exceed max_position_embeddings {}",
                    self.config.max_position_embeddings
                ),
            ));
        }
        let mut h = ops::embedding::token_position_embedding(
            rec,
            ids,
            &self.token_embedding,
            &self.position_embedding,
        )?;
        for layer in &self.layers {
            h = layer.forward(rec, &h, self.gelu)?;
        }
        self.final_layer_norm.forward(rec, &h)
    }
}

impl EncoderLayer {
    fn forward(&self, rec: &mut Recorder, x: &Tensor, gelu: bool) -> Result<Tensor> {
        // x + attn(ln1(x))
        let h = self.layer_norm1.forward(rec, x)?;
        let a = &self.self_attn;
        let fused = a.qkv_proj.forward(rec, &h)?;
        let [q, k, v] = ops::split::split_last3(rec, &fused)?;
        let o = ops::attention::attention(rec, &q, &k, &v, a.heads, a.scale, true)?;
        let x = a.out_proj.forward_add(rec, &o, x)?;
        // x + fc2(act(fc1(ln2(x))))
        let h = self.layer_norm2.forward(rec, &x)?;
        let h = self.fc1.forward(rec, &h)?;
        let h = if gelu {
            ops::activation::gelu(rec, &h)?
        } else {
            ops::activation::quick_gelu(rec, &h)?
        };
        self.fc2.forward_add(rec, &h, &x)
    }
}
