//! Latents to any size (`shaders/latent_resize.wgsl`): AUTOMATIC1111's latent hires-fix
//! upscalers, `F.interpolate(x, size=(oh, ow), mode=..., antialias=False)` as in its
//! `sample_hr_pass` (`modules/processing.py`), with torch's CPU index and weight rules.

use super::{expect_act, upsample};
use crate::error::{Error, Result};
use crate::gpu::{DType, KernelSpec, Recorder, Tensor};

const SRC: &str = include_str!("../../shaders/latent_resize.wgsl");
// Workgroups of 256 invocations, as `upsample::resize_planes` dispatches them.

// The uniforms are upsample.rs's `Params` (the same per-pixel resize layout), and so is
// the band-by-band dispatch (`upsample::resize_planes`).
use upsample::Params;

/// torch's interpolation modes A1111 names ("Latent" is `Bilinear`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    Nearest,
    NearestExact,
    Bilinear,
    Bicubic,
}

impl Mode {
    /// torch's name of the mode.
    pub fn torch_name(self) -> &'static str {
        match self {
            Mode::Nearest => "nearest",
            Mode::NearestExact => "nearest-exact",
            Mode::Bilinear => "bilinear",
            Mode::Bicubic => "bicubic",
        }
    }

    fn entry(self) -> &'static str {
        match self {
            Mode::Nearest => "nearest",
            Mode::NearestExact => "nearest_exact",
            Mode::Bilinear => "bilinear",
            Mode::Bicubic => "bicubic",
        }
    }
}

fn spec(entry: &'static str, dt: DType) -> KernelSpec {
    KernelSpec::new("latent_resize", SRC, entry)
        .params::<Params>()
        .activation(dt)
}

/// `x` `[B, C, H, W]` -> `[B, C, out_h, out_w]` with `mode`.
pub fn resize(
    rec: &mut Recorder,
    x: &Tensor,
    out_h: usize,
    out_w: usize,
    mode: Mode,
) -> Result<Tensor> {
    let op = "latent_resize";
    let dt = expect_act(op, x)?;
    let &[_, _, h, w] = x.shape() else {
        return Err(Error::shape(
            op,
            format!("x must be [B, C, H, W], got {:?}", x.shape()),
        ));
    };
    if h == 0 || w == 0 || out_h == 0 || out_w == 0 {
        return Err(Error::shape(
            op,
            format!("cannot resize {h}x{w} to {out_h}x{out_w}"),
        ));
    }
    if mode == Mode::Nearest {
        return upsample::upsample_nearest(rec, x, out_h, out_w);
    }
    let kernel = rec.gpu().kernel(&spec(mode.entry(), dt))?;
    upsample::resize_planes(rec, op, x, (out_h, out_w), &kernel)
}

/// CPU reference, in f32 with torch's operation order (so it matches torch to rounding).
pub mod cpu {
    use super::Mode;

    /// torch's `area_pixel_compute_source_index` (align_corners=False).
    fn source(scale: f32, o: usize, cubic: bool) -> f32 {
        let s = scale * (o as f32 + 0.5) - 0.5;
        if !cubic && s < 0.0 { 0.0 } else { s }
    }

    /// Linear taps of one axis: indices and weights.
    fn linear(scale: f32, o: usize, size: usize) -> ([usize; 2], [f32; 2]) {
        let src = source(scale, o, false);
        let i0 = (src.floor() as usize).min(size - 1);
        let l1 = (src - i0 as f32).clamp(0.0, 1.0);
        let i1 = if i0 < size - 1 { i0 + 1 } else { i0 };
        ([i0, i1], [1.0 - l1, l1])
    }

    /// Keys' cubic (A = -0.75) taps of one axis: clamped indices and weights.
    fn cubic(scale: f32, o: usize, size: usize) -> ([usize; 4], [f32; 4]) {
        const A: f32 = -0.75;
        let src = source(scale, o, true);
        let i = src.floor().min(size as f32 - 1.0);
        let t = (src - i).clamp(0.0, 1.0);
        let conv1 = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
        let conv2 = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
        let x2 = 1.0 - t;
        let w = [conv2(t + 1.0), conv1(t), conv1(x2), conv2(x2 + 1.0)];
        let idx =
            std::array::from_fn(|k| (i as i64 - 1 + k as i64).clamp(0, size as i64 - 1) as usize);
        (idx, w)
    }

    fn nearest(scale: f32, o: usize, size: usize, exact: bool) -> usize {
        let s = if exact {
            (o as f32 + 0.5) * scale
        } else {
            o as f32 * scale
        };
        (s.floor() as usize).min(size - 1)
    }

    /// `[planes, h, w]` -> `[planes, oh, ow]`.
    pub fn resize(
        x: &[f32],
        planes: usize,
        (h, w): (usize, usize),
        (oh, ow): (usize, usize),
        mode: Mode,
    ) -> Vec<f32> {
        let (sh, sw) = (h as f32 / oh as f32, w as f32 / ow as f32);
        let mut out = Vec::with_capacity(planes * oh * ow);
        for pl in 0..planes {
            let plane = &x[pl * h * w..][..h * w];
            let px = |iy: usize, ix: usize| plane[iy * w + ix];
            for oy in 0..oh {
                for ox in 0..ow {
                    let v = match mode {
                        Mode::Nearest | Mode::NearestExact => {
                            let exact = mode == Mode::NearestExact;
                            px(nearest(sh, oy, h, exact), nearest(sw, ox, w, exact))
                        }
                        Mode::Bilinear => {
                            let (iy, wy) = linear(sh, oy, h);
                            let (ix, wx) = linear(sw, ox, w);
                            let row = |y| px(y, ix[0]) * wx[0] + px(y, ix[1]) * wx[1];
                            row(iy[0]) * wy[0] + row(iy[1]) * wy[1]
                        }
                        Mode::Bicubic => {
                            let (iy, wy) = cubic(sh, oy, h);
                            let (ix, wx) = cubic(sw, ox, w);
                            let mut acc = 0f32;
                            for j in 0..4 {
                                let mut row = 0f32;
                                for k in 0..4 {
                                    row += px(iy[j], ix[k]) * wx[k];
                                }
                                acc += row * wy[j];
                            }
                            acc
                        }
                    };
                    out.push(v);
                }
            }
        }
        out
    }
}

/// Every kernel variant of this family (validated offline by the tests).
pub fn variants() -> Vec<KernelSpec> {
    let mut v = Vec::new();
    for m in [Mode::NearestExact, Mode::Bilinear, Mode::Bicubic] {
        for dt in [DType::F32, DType::F16] {
            v.push(spec(m.entry(), dt));
        }
    }
    v
}
