//! Inpainting's latent blend for ordinary 4-channel UNets (`shaders/mask_blend.wgsl`),
//! mirroring diffusers' `StableDiffusionInpaintPipeline.__call__` after each
//! `scheduler.step`: `latents = (1 - init_mask) * init_latents_proper + init_mask * latents`,
//! the mask `[1, h, w]` broadcast over the latent channels. In place on the latents.
//!
//! One dispatch per latent row (image): latent rows are small (4 x 96 x 96 at 768px).

use super::{expect_f32, u32_of};
use crate::error::{Error, Result};
use crate::gpu::{KernelSpec, Recorder, Tensor};

const SRC: &str = include_str!("../../shaders/mask_blend.wgsl");
const WG: usize = 256;
const OP: &str = "mask_blend";

crate::shader_params! {
    struct Params {
        n: u32,
        hw: u32,
        a_shift: u32,
        m_shift: u32,
        x_shift: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

fn spec() -> KernelSpec {
    KernelSpec::new(OP, SRC, OP).params::<Params>()
}

/// x `[R, C, h, w]` f32 (updated in place), a `[R, C, h, w]` f32, mask `[R, 1, h, w]` f32:
/// `x = (1 - mask) * a + mask * x`.
pub fn mask_blend(rec: &mut Recorder, x: &Tensor, a: &Tensor, mask: &Tensor) -> Result<()> {
    expect_f32(OP, x)?;
    expect_f32(OP, a)?;
    expect_f32(OP, mask)?;
    let &[r, c, h, w] = x.shape() else {
        return Err(Error::shape(
            OP,
            format!("x must be [R, C, h, w], got {:?}", x.shape()),
        ));
    };
    if a.shape() != x.shape() || mask.shape() != [r, 1, h, w] {
        return Err(Error::shape(
            OP,
            format!(
                "a must be {:?} and mask [{r}, 1, {h}, {w}], got {:?} and {:?}",
                x.shape(),
                a.shape(),
                mask.shape()
            ),
        ));
    }
    let gpu = rec.gpu();
    let (hw, n) = (h * w, c * h * w);
    let kernel = gpu.kernel(&spec())?;
    for row in 0..r {
        let aw = a.window(gpu, row * n, n)?;
        let mw = mask.window(gpu, row * hw, hw)?;
        let xw = x.window(gpu, row * n, n)?;
        let p = Params {
            n: u32_of(OP, n)?,
            hw: u32_of(OP, hw)?,
            a_shift: aw.shift,
            m_shift: mw.shift,
            x_shift: xw.shift,
            ..Default::default()
        };
        let groups = rec.grid(u32_of(OP, n.div_ceil(WG))?);
        rec.dispatch(&kernel, &p, &[aw, mw, xw], groups)?;
    }
    Ok(())
}

/// Every kernel variant of this family (validated offline by the tests).
pub fn variants() -> Vec<KernelSpec> {
    vec![spec()]
}

/// CPU reference (f64 arithmetic, f32 results).
pub mod cpu {
    /// x, a `[R, C, hw]`, mask `[R, hw]`: `(1 - m) * a + m * x`.
    pub fn mask_blend(x: &[f32], a: &[f32], mask: &[f32], c: usize, hw: usize) -> Vec<f32> {
        x.iter()
            .zip(a)
            .enumerate()
            .map(|(i, (&xv, &av))| {
                let row = i / (c * hw);
                let m = f64::from(mask[row * hw + i % hw]);
                ((1.0 - m) * f64::from(av) + m * f64::from(xv)) as f32
            })
            .collect()
    }
}
