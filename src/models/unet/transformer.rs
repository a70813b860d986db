//! `Transformer2DModel` with `BasicTransformerBlock`s (diffusers
//! `models/transformers/transformer_2d.py`, `models/attention.py`), as SD 1.x/2.x use
//! them: GroupNorm, proj_in (1x1 conv, or linear with `use_linear_projection`), blocks of
//! self-attention, cross-attention on the text embeddings and a GEGLU feed-forward, each
//! pre-LayerNorm with a residual, then proj_out and the input added back.

use crate::error::Result;
use crate::gpu::{Recorder, Tensor};
use crate::loader::weights::VarBuilder;
use crate::models::attention::Attention;
use crate::models::nn::{Conv2d, GroupNorm, LayerNorm, Linear};
use crate::ops;

/// `BasicTransformerBlock` (norm_type "layer_norm", GEGLU feed-forward).
struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff_proj: Linear,
    ff_out: Linear,
}

impl BasicTransformerBlock {
    fn load(
        vb: &VarBuilder,
        dim: usize,
        heads: usize,
        dim_head: usize,
        context_dim: usize,
    ) -> Result<Self> {
        let ff_inner = 4 * dim;
        Ok(BasicTransformerBlock {
            norm1: LayerNorm::load(&vb.pp("norm1"), dim, 1e-5)?,
            attn1: Attention::load_self(&vb.pp("attn1"), dim, heads, dim_head, false)?,
            norm2: LayerNorm::load(&vb.pp("norm2"), dim, 1e-5)?,
            attn2: Attention::load(&vb.pp("attn2"), dim, context_dim, heads, dim_head, false)?,
            norm3: LayerNorm::load(&vb.pp("norm3"), dim, 1e-5)?,
            ff_proj: Linear::load(
                &vb.pp("ff").pp("net").pp(0).pp("proj"),
                dim,
                2 * ff_inner,
                true,
            )?,
            ff_out: Linear::load(&vb.pp("ff").pp("net").pp(2), ff_inner, dim, true)?,
        })
    }

    /// x `[B, N, dim]`, context `[B, T, context_dim]`.
    fn forward(&self, rec: &mut Recorder, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let h = self.norm1.forward(rec, x)?;
        let x = self.attn1.forward(rec, &h, None, x)?;
        let h = self.norm2.forward(rec, &x)?;
        let x = self.attn2.forward(rec, &h, Some(context), &x)?;
        let h = self.norm3.forward(rec, &x)?;
        let h = self.ff_proj.forward_geglu(rec, &h)?;
        self.ff_out.forward_add(rec, &h, &x)
    }
}

enum Proj {
    Linear(Linear),
    Conv(Conv2d),
}

pub struct Transformer2DModel {
    norm: GroupNorm,
    proj_in: Proj,
    blocks: Vec<BasicTransformerBlock>,
    proj_out: Proj,
    channels: usize,
}

impl Transformer2DModel {
    pub fn load(
        vb: &VarBuilder,
        channels: usize,
        heads: usize,
        context_dim: usize,
        groups: usize,
        use_linear_projection: bool,
    ) -> Result<Transformer2DModel> {
        let dim_head = channels / heads;
        let proj = |name: &str| -> Result<Proj> {
            Ok(if use_linear_projection {
                Proj::Linear(Linear::load(&vb.pp(name), channels, channels, true)?)
            } else {
                Proj::Conv(Conv2d::load(&vb.pp(name), channels, channels, 1, 1, 0)?)
            })
        };
        Ok(Transformer2DModel {
            norm: GroupNorm::load(&vb.pp("norm"), groups, channels, 1e-6)?,
            proj_in: proj("proj_in")?,
            blocks: vec![BasicTransformerBlock::load(
                &vb.pp("transformer_blocks").pp(0),
                channels,
                heads,
                dim_head,
                context_dim,
            )?],
            proj_out: proj("proj_out")?,
            channels,
        })
    }

    /// x `[B, C, H, W]`, context `[B, T, context_dim]` -> `[B, C, H, W]`.
    pub fn forward(&self, rec: &mut Recorder, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let &[b, c, h, w] = x.shape() else {
            return Err(crate::Error::shape(
                "transformer_2d",
                format!("x must be [B, C, H, W], got {:?}", x.shape()),
            ));
        };
        debug_assert_eq!(c, self.channels);
        let n = h * w;
        let normed = self.norm.forward(rec, x, false)?;
        // To token rows [B, HW, C], projecting before (conv) or after (linear) the move.
        let mut t = match &self.proj_in {
            Proj::Conv(conv) => {
                let p = conv.forward(rec, &normed)?;
                ops::transpose::transpose(rec, &p.reshape(&[b, c, n])?, None)?
            }
            Proj::Linear(lin) => {
                let rows = ops::transpose::transpose(rec, &normed.reshape(&[b, c, n])?, None)?;
                lin.forward(rec, &rows)?
            }
        };
        for block in &self.blocks {
            t = block.forward(rec, &t, context)?;
        }
        let x_flat = x.reshape(&[b, c, n])?;
        let out = match &self.proj_out {
            Proj::Linear(lin) => {
                let p = lin.forward(rec, &t)?;
                ops::transpose::transpose(rec, &p, Some(&x_flat))?
            }
            Proj::Conv(conv) => {
                let maps = ops::transpose::transpose(rec, &t, None)?.reshape(&[b, c, h, w])?;
                conv.forward_add(rec, &maps, x)?
            }
        };
        out.reshape(&[b, c, h, w])
    }
}
