//! Nearest 2x upsampling (`shaders/upsample.wgsl`), diffusers' `Upsample2D` before its
//! conv: `F.interpolate(x, scale_factor=2.0, mode="nearest")`.

use super::{expect_f32, for_each_band, u32_of};
use crate::error::{Error, Result};
use crate::gpu::{DType, KernelSpec, Recorder, Tensor};

const SRC: &str = include_str!("../../shaders/upsample.wgsl");
const WG: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    x_shift: u32,
    o_shift: u32,
    w: u32,
}

/// `x` `[B, C, H, W]` -> `[B, C, 2H, 2W]`, nearest neighbour.
pub fn upsample_nearest2x(rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
    let op = "upsample_nearest2x";
    expect_f32(op, x)?;
    let &[b, c, h, w] = x.shape() else {
        return Err(Error::shape(
            op,
            format!("x must be [B, C, H, W], got {:?}", x.shape()),
        ));
    };
    let gpu = rec.gpu();
    let out = Tensor::empty(gpu, &[b, c, 2 * h, 2 * w], DType::F32)?;
    if out.numel() == 0 {
        return Ok(out);
    }
    let vec4 = (2 * w).is_multiple_of(4);
    let unit = if vec4 { 4 } else { 1 };
    let kernel = gpu.kernel(&KernelSpec::new(
        "upsample",
        SRC,
        if vec4 { "up2x_vec4" } else { "up2x" },
    ))?;
    // Bands of input rows; the output window (4x) is the one that must fit.
    let per_band = (gpu.max_binding_elems(DType::F32) / (4 * w)).max(1);
    for_each_band(b * c * h, per_band, |r0, nr| {
        let xw = x.window(gpu, r0 * w, nr * w)?;
        let ow = out.window(gpu, r0 * 4 * w, nr * 4 * w)?;
        let units = nr * 4 * w / unit;
        let p = Params {
            n: u32_of(op, units)?,
            x_shift: xw.shift,
            o_shift: ow.shift / unit as u32,
            w: u32_of(op, w)?,
        };
        let groups = rec.grid(u32_of(op, units.div_ceil(WG))?);
        rec.dispatch(&kernel, &p, &[xw, ow], groups)
    })?;
    Ok(out)
}

/// CPU reference.
pub mod cpu {
    /// `[planes, h, w]` -> `[planes, 2h, 2w]`.
    pub fn upsample_nearest2x(x: &[f32], planes: usize, h: usize, w: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(planes * 4 * h * w);
        for pl in 0..planes {
            for y in 0..2 * h {
                let row = &x[(pl * h + y / 2) * w..][..w];
                out.extend((0..2 * w).map(|xx| row[xx / 2]));
            }
        }
        out
    }
}
