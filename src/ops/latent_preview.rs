//! Latents to a small RGB preview (`shaders/latent_preview.wgsl`): the linear
//! latent-to-RGB approximation UIs show while denoising, at latent resolution (one pixel
//! per latent cell, no VAE pass). Each pixel is `M^T l + bias` for its 4 latent channels
//! `l`, mapped from [-1, 1] to u8 as the decoded image is.

use super::{expect_act, u32_of};
use crate::error::{Error, Result};
use crate::gpu::{DType, KernelSpec, Recorder, Tensor};

const SRC: &str = include_str!("../../shaders/latent_preview.wgsl");
const WG: usize = 256;

/// The approximation's weights: `rows[c]` is what latent channel `c` adds to (r, g, b).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatentRgb {
    pub rows: [[f32; 3]; 4],
    pub bias: [f32; 3],
}

/// The well-known factors for Stable Diffusion 1.x / 2.x latents (the 4-channel VAE),
/// fitted by the community against decoded images.
pub const SD_LATENT_RGB: LatentRgb = LatentRgb {
    rows: [
        [0.298, 0.207, 0.208],
        [0.187, 0.286, 0.173],
        [-0.158, 0.189, 0.264],
        [-0.184, -0.271, -0.473],
    ],
    bias: [0.0, 0.0, 0.0],
};

crate::shader_params! {
    struct Params {
        words: u32,
        bytes: u32,
        hw: u32,
        x_shift: u32,
        o_shift: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
        r: [f32; 4],
        g: [f32; 4],
        b: [f32; 4],
        bias: [f32; 4],
    }
}

fn spec(dt: DType) -> KernelSpec {
    KernelSpec::new("latent_preview", SRC, "latent_preview")
        .params::<Params>()
        .activation(dt)
}

/// u8 previews `[B, H, W, 3]` recorded on the GPU; read them with [`Previews::read`].
pub struct Previews {
    packed: Vec<Tensor>,
    pub height: usize,
    pub width: usize,
}

/// Records the previews of `x` `[B, 4, H, W]` (f32 or f16), one image per band.
pub fn latent_preview(rec: &mut Recorder, x: &Tensor, m: &LatentRgb) -> Result<Previews> {
    let op = "latent_preview";
    let dt = expect_act(op, x)?;
    let &[b, 4, h, w] = x.shape() else {
        return Err(Error::shape(
            op,
            format!("x must be [B, 4, H, W], got {:?}", x.shape()),
        ));
    };
    let gpu = rec.gpu();
    let kernel = gpu.kernel(&spec(dt))?;
    let column = |k: usize| [m.rows[0][k], m.rows[1][k], m.rows[2][k], m.rows[3][k]];
    let (per_in, per_out) = (4 * h * w, 3 * h * w);
    let words = per_out.div_ceil(4);
    let mut packed = Vec::with_capacity(b);
    for i in 0..b {
        let out = Tensor::empty(gpu, &[words], DType::U32)?;
        let xw = x.window(gpu, i * per_in, per_in)?;
        let ow = out.whole(gpu)?;
        let p = Params {
            words: u32_of(op, words)?,
            bytes: u32_of(op, per_out)?,
            hw: u32_of(op, h * w)?,
            x_shift: xw.shift,
            o_shift: ow.shift,
            r: column(0),
            g: column(1),
            b: column(2),
            bias: [m.bias[0], m.bias[1], m.bias[2], 0.0],
            ..Default::default()
        };
        let groups = rec.grid(u32_of(op, words.div_ceil(WG))?);
        rec.dispatch(&kernel, &p, &[xw, ow], groups)?;
        packed.push(out);
    }
    Ok(Previews {
        packed,
        height: h,
        width: w,
    })
}

impl Previews {
    /// Submits pending work and returns each preview's `H * W * 3` bytes (blocks).
    pub fn read(&self, rec: &mut Recorder) -> Result<Vec<Vec<u8>>> {
        let n = 3 * self.height * self.width;
        self.packed
            .iter()
            .map(|t| {
                let mut bytes = rec.read_bytes(t)?;
                bytes.truncate(n);
                Ok(bytes)
            })
            .collect()
    }
}

/// CPU reference.
pub mod cpu {
    use super::LatentRgb;

    /// `[B, 4, H, W]` f32 -> per image `H * W * 3` bytes.
    pub fn latent_preview(x: &[f32], b: usize, h: usize, w: usize, m: &LatentRgb) -> Vec<Vec<u8>> {
        let hw = h * w;
        (0..b)
            .map(|i| {
                let img = &x[i * 4 * hw..][..4 * hw];
                (0..hw)
                    .flat_map(|p| (0..3).map(move |k| (p, k)))
                    .map(|(p, k)| {
                        let v: f32 =
                            (0..4).map(|c| img[c * hw + p] * m.rows[c][k]).sum::<f32>() + m.bias[k];
                        (((v + 1.0) * 0.5).clamp(0.0, 1.0) * 255.0).round_ties_even() as u8
                    })
                    .collect()
            })
            .collect()
    }
}

/// Every kernel variant of this family (validated offline by the tests).
pub fn variants() -> Vec<KernelSpec> {
    vec![spec(DType::F32), spec(DType::F16)]
}
