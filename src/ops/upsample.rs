//! Nearest 2x upsampling (`shaders/upsample.wgsl`), diffusers' `Upsample2D` before its
//! conv: `F.interpolate(x, scale_factor=2.0, mode="nearest")`.

use super::{expect_act, for_each_band, u32_of};
use crate::error::{Error, Result};
use crate::gpu::{DType, KernelSpec, Recorder, Tensor};

const SRC: &str = include_str!("../../shaders/upsample.wgsl");
const WG: usize = 256;

crate::shader_params! {
    pub(super) struct Params {
        n: u32,
        x_shift: u32,
        o_shift: u32,
        w: u32,
        h: u32,
        oh: u32,
        ow: u32,
        sh: f32,
        sw: f32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

fn spec(entry: &'static str, dt: DType) -> KernelSpec {
    KernelSpec::new("upsample", SRC, entry)
        .params::<Params>()
        .activation(dt)
}

/// `x` `[B, C, H, W]` -> `[B, C, 2H, 2W]`, nearest neighbour.
pub fn upsample_nearest2x(rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
    let op = "upsample_nearest2x";
    let dt = expect_act(op, x)?;
    let &[b, c, h, w] = x.shape() else {
        return Err(Error::shape(
            op,
            format!("x must be [B, C, H, W], got {:?}", x.shape()),
        ));
    };
    let gpu = rec.gpu();
    let out = Tensor::empty(gpu, &[b, c, 2 * h, 2 * w], dt)?;
    if out.numel() == 0 {
        return Ok(out);
    }
    let vec4 = (2 * w).is_multiple_of(4);
    let unit = if vec4 { 4 } else { 1 };
    let kernel = gpu.kernel(&spec(if vec4 { "up2x_vec4" } else { "up2x" }, dt))?;
    // Bands of input rows; the output window (4x) is the one that must fit.
    let per_band = (gpu.max_binding_elems(dt) / (4 * w)).max(1);
    for_each_band(b * c * h, per_band, |r0, nr| {
        let xw = x.window(gpu, r0 * w, nr * w)?;
        let ow = out.window(gpu, r0 * 4 * w, nr * 4 * w)?;
        let units = nr * 4 * w / unit;
        let p = Params {
            n: u32_of(op, units)?,
            x_shift: xw.shift,
            o_shift: ow.shift / unit as u32,
            w: u32_of(op, w)?,
            ..Default::default()
        };
        let groups = rec.grid(u32_of(op, units.div_ceil(WG))?);
        rec.dispatch(&kernel, &p, &[xw, ow], groups)
    })?;
    Ok(out)
}

/// `x` `[B, C, H, W]` -> `[B, C, out_h, out_w]`, nearest neighbour with torch's index
/// rule (`F.interpolate(x, size=(out_h, out_w), mode="nearest")`).
pub fn upsample_nearest(
    rec: &mut Recorder,
    x: &Tensor,
    out_h: usize,
    out_w: usize,
) -> Result<Tensor> {
    let op = "upsample_nearest";
    let dt = expect_act(op, x)?;
    let &[_, _, h, w] = x.shape() else {
        return Err(Error::shape(
            op,
            format!("x must be [B, C, H, W], got {:?}", x.shape()),
        ));
    };
    if out_h == 2 * h && out_w == 2 * w {
        return upsample_nearest2x(rec, x);
    }
    if h == 0 || w == 0 {
        return Err(Error::shape(op, "cannot upsample an empty image"));
    }
    let kernel = rec.gpu().kernel(&spec("nearest", dt))?;
    resize_planes(rec, op, x, (out_h, out_w), &kernel)
}

/// Runs a per-output-pixel resize kernel whose uniforms are this module's `Params` (the
/// nearest kernel here, `latent_resize`'s interpolations) over `x` `[B, C, H, W]` into a
/// new `[B, C, out_h, out_w]`, in bands of whole planes that fit a storage binding.
pub(super) fn resize_planes(
    rec: &mut Recorder,
    op: &'static str,
    x: &Tensor,
    (out_h, out_w): (usize, usize),
    kernel: &std::sync::Arc<wgpu::ComputePipeline>,
) -> Result<Tensor> {
    let gpu = rec.gpu();
    let &[b, c, h, w] = x.shape() else {
        return Err(Error::shape(
            op,
            format!("x must be [B, C, H, W], got {:?}", x.shape()),
        ));
    };
    let out = Tensor::empty(gpu, &[b, c, out_h, out_w], x.dtype())?;
    if out.numel() == 0 {
        return Ok(out);
    }
    let (plane_in, plane_out) = (h * w, out_h * out_w);
    let per_band = gpu.max_binding_elems(x.dtype()) / plane_in.max(plane_out);
    if per_band == 0 {
        return Err(Error::OutOfMemory(format!(
            "{op}: one {out_h}x{out_w} plane exceeds a storage binding"
        )));
    }
    for_each_band(b * c, per_band, |p0, np| {
        let xw = x.window(gpu, p0 * plane_in, np * plane_in)?;
        let ow = out.window(gpu, p0 * plane_out, np * plane_out)?;
        let units = np * plane_out;
        let p = Params {
            n: u32_of(op, units)?,
            x_shift: xw.shift,
            o_shift: ow.shift,
            w: u32_of(op, w)?,
            h: u32_of(op, h)?,
            oh: u32_of(op, out_h)?,
            ow: u32_of(op, out_w)?,
            sh: h as f32 / out_h as f32,
            sw: w as f32 / out_w as f32,
            ..Default::default()
        };
        let groups = rec.grid(u32_of(op, units.div_ceil(WG))?);
        rec.dispatch(kernel, &p, &[xw, ow], groups)
    })?;
    Ok(out)
}

/// CPU reference.
pub mod cpu {
    /// torch's nearest: `[planes, h, w]` -> `[planes, oh, ow]`.
    pub fn upsample_nearest(
        x: &[f32],
        planes: usize,
        (h, w): (usize, usize),
        (oh, ow): (usize, usize),
    ) -> Vec<f32> {
        let (sh, sw) = (h as f32 / oh as f32, w as f32 / ow as f32);
        let mut out = Vec::with_capacity(planes * oh * ow);
        for pl in 0..planes {
            for y in 0..oh {
                let iy = ((y as f32 * sh).floor() as usize).min(h - 1);
                let row = &x[(pl * h + iy) * w..][..w];
                out.extend((0..ow).map(|xx| row[((xx as f32 * sw).floor() as usize).min(w - 1)]));
            }
        }
        out
    }

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

/// Every kernel variant of this family (validated offline by the tests).
pub fn variants() -> Vec<KernelSpec> {
    let mut v = Vec::new();
    for e in ["up2x", "up2x_vec4", "nearest"] {
        for dt in [DType::F32, DType::F16] {
            v.push(spec(e, dt));
        }
    }
    v
}
