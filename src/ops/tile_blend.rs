//! Tiled VAE decode's seam blending and assembly (`shaders/tile_blend.wgsl`), as
//! diffusers' `AutoencoderKL.tiled_decode` does it with `blend_v` / `blend_h` (in place on
//! each decoded tile, against the already blended tile above and to the left), the crop
//! to `row_limit` and the concatenation. Plus [`crop`], which cuts a latent tile.
//!
//! Launches go per plane (`[B, C]` entry) and per band of tile rows, so that no window
//! passes one storage binding, however wide the assembled image.

use super::{expect_act, expect_same_act, u32_of};
use crate::error::{Error, Result};
use crate::gpu::{KernelSpec, Recorder, Tensor};

const SRC: &str = include_str!("../../shaders/tile_blend.wgsl");
const WG: usize = 256;

crate::shader_params! {
    struct Params {
        n: u32,
        y0: u32,
        x0: u32,
        ev: u32,
        eh: u32,
        rh: u32,
        rw: u32,
        wb: u32,
        wl: u32,
        wo: u32,
        ox: u32,
        hin: u32,
        a_shift: u32,
        l_shift: u32,
        b_shift: u32,
        o_shift: u32,
    }
}

fn dims(op: &'static str, name: &str, t: &Tensor) -> Result<[usize; 4]> {
    match *t.shape() {
        [b, c, h, w] => Ok([b, c, h, w]),
        ref s => Err(Error::shape(
            op,
            format!("{name} must be [B, C, H, W], got {s:?}"),
        )),
    }
}

/// `x[:, :, y0 : y0 + h, x0 : x0 + w]` of `[B, C, H, W]`, clipped at the edges as torch
/// slicing is (the tile of latents that diffusers decodes).
pub fn crop(
    rec: &mut Recorder,
    x: &Tensor,
    y0: usize,
    x0: usize,
    h: usize,
    w: usize,
) -> Result<Tensor> {
    let op = "tile_crop";
    let dt = expect_act(op, x)?;
    let [b, c, hi, wi] = dims(op, "x", x)?;
    let (h, w) = (h.min(hi.saturating_sub(y0)), w.min(wi.saturating_sub(x0)));
    let gpu = rec.gpu();
    let out = Tensor::empty(gpu, &[b, c, h, w], dt)?;
    if out.numel() == 0 {
        return Ok(out);
    }
    let per_band = gpu.max_binding_elems(dt) / (hi * wi);
    if per_band == 0 {
        return Err(Error::OutOfMemory(format!(
            "{op}: one {hi}x{wi} plane exceeds a storage binding"
        )));
    }
    let kernel = gpu.kernel(&spec("crop", dt))?;
    super::for_each_band(b * c, per_band, |p0, np| {
        let xw = x.window(gpu, p0 * hi * wi, np * hi * wi)?;
        let ow = out.window(gpu, p0 * h * w, np * h * w)?;
        let p = Params {
            n: u32_of(op, np * h * w)?,
            y0: u32_of(op, y0)?,
            x0: u32_of(op, x0)?,
            rh: u32_of(op, h)?,
            wb: u32_of(op, w)?,
            wo: u32_of(op, wi)?,
            hin: u32_of(op, hi)?,
            b_shift: xw.shift,
            o_shift: ow.shift,
            ..Default::default()
        };
        let groups = rec.grid(u32_of(op, (np * h * w).div_ceil(WG))?);
        rec.dispatch(&kernel, &p, &[xw, ow], groups)
    })?;
    Ok(out)
}

/// Blends decoded tile `tile` `[B, C, h, w]` in place with the finished tile `above`
/// (diffusers `blend_v`) and then `left` (`blend_h`), each over
/// `min(neighbour, tile, blend_extent)` rows / columns, and writes its
/// `[:row_limit, :row_limit]` crop into `out` `[B, C, H, W]` at `(oy, ox)`.
#[allow(clippy::too_many_arguments)]
pub fn blend_tile(
    rec: &mut Recorder,
    tile: &Tensor,
    above: Option<&Tensor>,
    left: Option<&Tensor>,
    blend_extent: usize,
    row_limit: usize,
    out: &Tensor,
    (oy, ox): (usize, usize),
) -> Result<()> {
    let op = "tile_blend";
    let dt = expect_act(op, tile)?;
    let all: Vec<&Tensor> = [Some(tile), above, left, Some(out)]
        .into_iter()
        .flatten()
        .collect();
    expect_same_act(op, dt, &all)?;
    let [b, c, hb, wb] = dims(op, "tile", tile)?;
    let [bo, co, ho, wo] = dims(op, "out", out)?;
    let (rh, rw) = (row_limit.min(hb), row_limit.min(wb));
    if (bo, co) != (b, c) || oy + rh > ho || ox + rw > wo {
        return Err(Error::shape(
            op,
            format!(
                "a {hb}x{wb} tile cropped to {rh}x{rw} at ({oy}, {ox}) does not fit out {:?}",
                out.shape()
            ),
        ));
    }
    let mut ha = 0;
    if let Some(a) = above {
        let [ba, ca, h, w] = dims(op, "above", a)?;
        if (ba, ca, w) != (b, c, wb) {
            return Err(Error::shape(
                op,
                format!(
                    "above {:?} does not match tile {:?}",
                    a.shape(),
                    tile.shape()
                ),
            ));
        }
        ha = h;
    }
    let mut wl = 0;
    if let Some(l) = left {
        let [bl, cl, h, w] = dims(op, "left", l)?;
        if (bl, cl, h) != (b, c, hb) {
            return Err(Error::shape(
                op,
                format!(
                    "left {:?} does not match tile {:?}",
                    l.shape(),
                    tile.shape()
                ),
            ));
        }
        wl = w;
    }
    let ev = if above.is_some() {
        ha.min(hb).min(blend_extent)
    } else {
        0
    };
    let eh = if left.is_some() {
        wl.min(wb).min(blend_extent)
    } else {
        0
    };
    if tile.numel() == 0 {
        return Ok(());
    }
    let gpu = rec.gpu();
    let kernel = gpu.kernel(&spec("blend", dt))?;
    // Windows of no use in a band bind these (a read and a read_write one).
    let dummy_r = Tensor::empty(gpu, &[4], dt)?;
    let dummy_w = Tensor::empty(gpu, &[4], dt)?;
    let rows_per_band = (gpu.max_binding_elems(dt) / wb.max(wo).max(wl)).max(1);
    for pl in 0..b * c {
        // Bands never straddle the crop's last row: below it, `out` is not bound.
        for (s0, s1) in [(0, rh), (rh, hb)] {
            super::for_each_band(s1 - s0, rows_per_band, |r0, nr| {
                let y0 = s0 + r0;
                let bw = tile.window(gpu, (pl * hb + y0) * wb, nr * wb)?;
                let aw = match above {
                    Some(a) if y0 < ev => {
                        a.window(gpu, (pl * ha + ha - ev + y0) * wb, nr.min(ev - y0) * wb)?
                    }
                    _ => dummy_r.whole(gpu)?,
                };
                let lw = match left {
                    Some(l) if eh > 0 => l.window(gpu, (pl * hb + y0) * wl, nr * wl)?,
                    _ => dummy_r.whole(gpu)?,
                };
                let ow = if y0 < rh {
                    out.window(gpu, (pl * ho + oy + y0) * wo, (nr - 1) * wo + ox + rw)?
                } else {
                    dummy_w.whole(gpu)?
                };
                let p = Params {
                    n: u32_of(op, nr * wb)?,
                    y0: u32_of(op, y0)?,
                    ev: u32_of(op, ev)?,
                    eh: u32_of(op, eh)?,
                    rh: u32_of(op, rh)?,
                    rw: u32_of(op, rw)?,
                    wb: u32_of(op, wb)?,
                    wl: u32_of(op, wl)?,
                    wo: u32_of(op, wo)?,
                    ox: u32_of(op, ox)?,
                    a_shift: aw.shift,
                    l_shift: lw.shift,
                    b_shift: bw.shift,
                    o_shift: ow.shift,
                    ..Default::default()
                };
                let groups = rec.grid(u32_of(op, (nr * wb).div_ceil(WG))?);
                rec.dispatch(&kernel, &p, &[aw, lw, bw, ow], groups)
            })?;
        }
    }
    Ok(())
}

fn spec(entry: &'static str, dt: crate::gpu::DType) -> KernelSpec {
    KernelSpec::new("tile_blend", SRC, entry)
        .params::<Params>()
        .activation(dt)
}

/// CPU reference: diffusers' `tiled_decode` after the tiles are decoded, in f64 with a
/// rounding to f32 after each step as torch stores them.
pub mod cpu {
    /// A `[P, h, w]` tile (P = B * C planes).
    #[derive(Debug, Clone)]
    pub struct Tile {
        pub data: Vec<f32>,
        pub h: usize,
        pub w: usize,
    }

    /// `blend_v(a, b, extent)`: b's top rows from a's bottom rows.
    pub fn blend_v(a: &Tile, b: &mut Tile, planes: usize, extent: usize) {
        let e = a.h.min(b.h).min(extent);
        for pl in 0..planes {
            for y in 0..e {
                let t = y as f64 / e as f64;
                for x in 0..b.w {
                    let av = a.data[(pl * a.h + a.h - e + y) * a.w + x] as f64;
                    let bi = (pl * b.h + y) * b.w + x;
                    b.data[bi] = (av * (1.0 - t) + b.data[bi] as f64 * t) as f32;
                }
            }
        }
    }

    /// `blend_h(a, b, extent)`: b's left columns from a's right columns.
    pub fn blend_h(a: &Tile, b: &mut Tile, planes: usize, extent: usize) {
        let e = a.w.min(b.w).min(extent);
        for pl in 0..planes {
            for y in 0..b.h {
                for x in 0..e {
                    let t = x as f64 / e as f64;
                    let av = a.data[(pl * a.h + y) * a.w + a.w - e + x] as f64;
                    let bi = (pl * b.h + y) * b.w + x;
                    b.data[bi] = (av * (1.0 - t) + b.data[bi] as f64 * t) as f32;
                }
            }
        }
    }

    /// The whole assembly: `rows[i][j]` are the decoded tiles in raster order; returns
    /// `[P, H, W]` with its `(H, W)`.
    pub fn assemble(
        mut rows: Vec<Vec<Tile>>,
        planes: usize,
        extent: usize,
        row_limit: usize,
    ) -> (Vec<f32>, usize, usize) {
        for i in 0..rows.len() {
            for j in 0..rows[i].len() {
                let mut t = rows[i][j].clone();
                if i > 0 {
                    blend_v(&rows[i - 1][j], &mut t, planes, extent);
                }
                if j > 0 {
                    blend_h(&rows[i][j - 1], &mut t, planes, extent);
                }
                rows[i][j] = t;
            }
        }
        let hs: Vec<usize> = rows.iter().map(|r| r[0].h.min(row_limit)).collect();
        let ws: Vec<usize> = rows[0].iter().map(|t| t.w.min(row_limit)).collect();
        let (h, w) = (hs.iter().sum::<usize>(), ws.iter().sum::<usize>());
        let mut out = vec![0.0; planes * h * w];
        let mut oy = 0;
        for (i, row) in rows.iter().enumerate() {
            let mut ox = 0;
            for (j, t) in row.iter().enumerate() {
                for pl in 0..planes {
                    for y in 0..hs[i] {
                        for x in 0..ws[j] {
                            out[(pl * h + oy + y) * w + ox + x] = t.data[(pl * t.h + y) * t.w + x];
                        }
                    }
                }
                ox += ws[j];
            }
            oy += hs[i];
        }
        (out, h, w)
    }

    /// `x[:, y0 : y0 + h, x0 : x0 + w]` of `[P, H, W]` (already clipped sizes).
    pub fn crop(
        x: &[f32],
        planes: usize,
        (hi, wi): (usize, usize),
        (y0, x0): (usize, usize),
        (h, w): (usize, usize),
    ) -> Vec<f32> {
        let mut out = Vec::with_capacity(planes * h * w);
        for pl in 0..planes {
            for y in 0..h {
                let row = (pl * hi + y0 + y) * wi + x0;
                out.extend_from_slice(&x[row..row + w]);
            }
        }
        out
    }
}

/// Every kernel variant of this family (validated offline by the tests).
pub fn variants() -> Vec<KernelSpec> {
    let mut v = Vec::new();
    for dt in [crate::gpu::DType::F32, crate::gpu::DType::F16] {
        for e in ["blend", "crop"] {
            v.push(spec(e, dt));
        }
    }
    v
}
