//! Circular padding (`shaders/pad.wgsl`): what PyTorch's `Conv2d(padding_mode="circular")`
//! does before its convolution, `F.pad(x, (p, p, p, p), mode="circular")`. Seamless
//! tiling (AUTOMATIC1111's `tiling`) sets that mode on every UNet and VAE convolution.

use super::{expect_act, for_each_band, u32_of};
use crate::error::{Error, Result};
use crate::gpu::{KernelSpec, Recorder, Tensor};

const SRC: &str = include_str!("../../shaders/pad.wgsl");
const WG: usize = 256;
const OP: &str = "pad_circular";

crate::shader_params! {
    struct Params {
        n: u32,
        x_shift: u32,
        o_shift: u32,
        h: u32,
        w: u32,
        pad: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

fn spec(dt: crate::gpu::DType) -> KernelSpec {
    KernelSpec::new("pad", SRC, OP)
        .params::<Params>()
        .activation(dt)
}

/// `x` `[B, C, H, W]` -> `[B, C, H + 2p, W + 2p]`, wrapping around (torch requires
/// `p <= H` and `p <= W`).
pub fn pad_circular(rec: &mut Recorder, x: &Tensor, pad: usize) -> Result<Tensor> {
    let dt = expect_act(OP, x)?;
    let &[b, c, h, w] = x.shape() else {
        return Err(Error::shape(
            OP,
            format!("x must be [B, C, H, W], got {:?}", x.shape()),
        ));
    };
    if pad > h || pad > w {
        return Err(Error::shape(
            OP,
            format!("circular padding {pad} is larger than the {h}x{w} input"),
        ));
    }
    if pad == 0 {
        return Ok(x.clone());
    }
    let (oh, ow) = (h + 2 * pad, w + 2 * pad);
    let gpu = rec.gpu();
    let out = Tensor::empty(gpu, &[b, c, oh, ow], dt)?;
    if out.numel() == 0 {
        return Ok(out);
    }
    let kernel = gpu.kernel(&spec(dt))?;
    let (plane_in, plane_out) = (h * w, oh * ow);
    let per_band = gpu.max_binding_elems(dt) / plane_out;
    if per_band == 0 {
        return Err(Error::OutOfMemory(format!(
            "{OP}: one {oh}x{ow} plane exceeds a storage binding"
        )));
    }
    for_each_band(b * c, per_band, |p0, np| {
        let xw = x.window(gpu, p0 * plane_in, np * plane_in)?;
        let owin = out.window(gpu, p0 * plane_out, np * plane_out)?;
        let units = np * plane_out;
        let p = Params {
            n: u32_of(OP, units)?,
            x_shift: xw.shift,
            o_shift: owin.shift,
            h: u32_of(OP, h)?,
            w: u32_of(OP, w)?,
            pad: u32_of(OP, pad)?,
            ..Default::default()
        };
        let groups = rec.grid(u32_of(OP, units.div_ceil(WG))?);
        rec.dispatch(&kernel, &p, &[xw, owin], groups)
    })?;
    Ok(out)
}

/// Every kernel variant of this family (validated offline by the tests).
pub fn variants() -> Vec<KernelSpec> {
    vec![spec(crate::gpu::DType::F32), spec(crate::gpu::DType::F16)]
}

/// CPU reference.
pub mod cpu {
    /// `[planes, h, w]` -> `[planes, h + 2p, w + 2p]`, torch's circular padding.
    pub fn pad_circular(x: &[f32], planes: usize, h: usize, w: usize, pad: usize) -> Vec<f32> {
        let (oh, ow) = (h + 2 * pad, w + 2 * pad);
        let mut out = Vec::with_capacity(planes * oh * ow);
        for pl in 0..planes {
            for oy in 0..oh {
                let iy = (oy + h - pad) % h;
                out.extend((0..ow).map(|ox| x[(pl * h + iy) * w + (ox + w - pad) % w]));
            }
        }
        out
    }
}
