//! Tiled VAE decoding, diffusers' `AutoencoderKL.enable_tiling()` / `tiled_decode`
//! (`models/autoencoders/autoencoder_kl.py`): the latents are cut into overlapping tiles
//! of `tile_latent_min_size` (`sample_size / 2 ** (len(block_out_channels) - 1)`) every
//! `int(tile * 0.75)` cells, each tile goes through `post_quant_conv` + the decoder, and
//! each decoded tile is blended in place with the finished tiles above and to the left
//! over `int(sample_size * 0.25)` pixels, cropped to `row_limit` and placed
//! (`ops::tile_blend`). As diffusers, tiling happens only when the latents are larger
//! than one tile.
//!
//! [`VaeTiling::Auto`] tiles when the untiled decode's estimated peak
//! ([`untiled_peak_bytes`]) does not fit the memory budget, or one of its tensors passes
//! the adapter's largest buffer.

use crate::error::{Error, Result};
use crate::gpu::{DType, Gpu, Recorder, Tensor};
use crate::models::config::VaeConfig;
use crate::ops::tile_blend;

/// When to decode in tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VaeTiling {
    /// Tile when the untiled decode would not fit the GPU memory budget or buffer limit.
    #[default]
    Auto,
    /// Always tile (when the latents are larger than one tile, as diffusers).
    On,
    /// Never tile.
    Off,
}

impl VaeTiling {
    /// `auto`, `on` / `true`, `off` / `false`.
    pub fn parse(s: &str) -> Result<VaeTiling> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(VaeTiling::Auto),
            "on" | "true" | "1" | "yes" => Ok(VaeTiling::On),
            "off" | "false" | "0" | "no" => Ok(VaeTiling::Off),
            _ => Err(Error::InvalidInput(format!(
                "vae tiling must be auto, on or off, got {s:?}"
            ))),
        }
    }

    /// `Some(true)`: on, `Some(false)`: off, `None`: auto.
    pub fn from_bool(b: Option<bool>) -> VaeTiling {
        match b {
            None => VaeTiling::Auto,
            Some(true) => VaeTiling::On,
            Some(false) => VaeTiling::Off,
        }
    }
}

/// diffusers' tiling constants for one VAE config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TilePlan {
    /// `tile_latent_min_size`.
    pub tile_latent: usize,
    /// `tile_sample_min_size`.
    pub tile_sample: usize,
    /// `overlap_size = int(tile_latent * (1 - 0.25))`: the stride between tiles.
    pub stride: usize,
    /// `blend_extent = int(tile_sample * 0.25)`.
    pub blend_extent: usize,
    /// `row_limit = tile_sample - blend_extent`.
    pub row_limit: usize,
}

impl TilePlan {
    pub fn new(config: &VaeConfig) -> Result<TilePlan> {
        let tile_sample = config.tile_sample_size();
        let tile_latent = config.tile_latent_size();
        let stride = tile_latent * 3 / 4;
        if stride == 0 {
            return Err(Error::InvalidInput(format!(
                "vae sample_size {tile_sample} is too small to tile"
            )));
        }
        let blend_extent = tile_sample / 4;
        Ok(TilePlan {
            tile_latent,
            tile_sample,
            stride,
            blend_extent,
            row_limit: tile_sample - blend_extent,
        })
    }

    /// diffusers' `_decode` condition: latents larger than one tile in either direction.
    pub fn applies(&self, h: usize, w: usize) -> bool {
        h > self.tile_latent || w > self.tile_latent
    }

    /// Tile origins along one latent dimension (`range(0, n, overlap_size)`).
    pub fn starts(&self, n: usize) -> Vec<usize> {
        (0..n).step_by(self.stride).collect()
    }
}

/// The largest live set (bytes) of an untiled decode of `[b, latent_channels, h, w]`
/// with `act_bytes`-byte activations, and its largest single tensor, following the
/// decoder's code: a `ResnetBlock2D` holds its input, norm1's output (input-sized),
/// conv1's and norm2's, the shortcut (when the channels change) and its output; the mid
/// attention its input and eight more tensors of that size (norm, rows, q, k, v, the
/// attention, to_out, the result); an upsampler its input, the 2x copy and the conv
/// output. Small buffers (norm statistics) get 1/16 on top.
pub fn untiled_peak_bytes(
    config: &VaeConfig,
    b: usize,
    h: usize,
    w: usize,
    act_bytes: usize,
) -> (u64, u64) {
    let t = |c: usize, hh: usize, ww: usize| (b * c * hh * ww * act_bytes) as u64;
    let ch = &config.block_out_channels;
    let top = ch[ch.len() - 1];
    let (mut hh, mut ww) = (h, w);
    let mut peak = 2 * t(config.latent_channels, h, w) + t(top, h, w);
    let mut largest = t(top, h, w);
    let resnet = |cin: usize, cout: usize, hh: usize, ww: usize| {
        let short = if cin != cout { t(cout, hh, ww) } else { 0 };
        2 * t(cin, hh, ww) + 3 * t(cout, hh, ww) + short
    };
    peak = peak.max(resnet(top, top, h, w));
    if config.mid_block_add_attention {
        peak = peak.max(9 * t(top, h, w));
    }
    let mut cin = top;
    for (i, &cout) in ch.iter().rev().enumerate() {
        for _ in 0..config.layers_per_block + 1 {
            peak = peak.max(resnet(cin, cout, hh, ww));
            largest = largest.max(t(cin.max(cout), hh, ww));
            cin = cout;
        }
        if i + 1 < ch.len() {
            peak = peak.max(t(cout, hh, ww) + 2 * t(cout, 2 * hh, 2 * ww));
            hh *= 2;
            ww *= 2;
            largest = largest.max(t(cout, hh, ww));
        }
    }
    // conv_norm_out (+ SiLU) and conv_out.
    peak = peak.max(2 * t(ch[0], hh, ww) + t(config.out_channels, hh, ww));
    (peak + peak / 16, largest)
}

/// Whether [`VaeTiling::Auto`] tiles: the latents span more than one tile and the untiled
/// decode's estimated peak does not fit next to what is already in use under the memory
/// budget, or a tensor of it would pass the adapter's largest buffer.
pub fn auto_tiles(gpu: &Gpu, config: &VaeConfig, shape: &[usize], act: DType) -> bool {
    let &[b, _, h, w] = shape else {
        return false;
    };
    let Ok(plan) = TilePlan::new(config) else {
        return false;
    };
    if !plan.applies(h, w) {
        return false;
    }
    let (peak, largest) = untiled_peak_bytes(config, b, h, w, act.size() as usize);
    let over_budget = gpu
        .memory_limit()
        .is_some_and(|limit| gpu.memory_stats().in_use.saturating_add(peak) > limit);
    over_budget || largest > gpu.caps.max_buffer
}

/// Decodes `z` (latents already divided by `scaling_factor`) tile by tile with `decode`
/// (`post_quant_conv` + decoder), blending and assembling as diffusers. Keeps only the
/// previous row of decoded tiles.
pub fn tiled_decode(
    rec: &mut Recorder,
    plan: &TilePlan,
    z: &Tensor,
    decode: &dyn Fn(&mut Recorder, &Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let &[b, _, h, w] = z.shape() else {
        return Err(Error::shape(
            "vae tiled decode",
            format!("latents must be [B, C, h, w], got {:?}", z.shape()),
        ));
    };
    let (ys, xs) = (plan.starts(h), plan.starts(w));
    let mut above: Vec<Tensor> = Vec::new();
    let mut out: Option<Tensor> = None;
    let mut oy = 0;
    for &y in &ys {
        let mut row: Vec<Tensor> = Vec::with_capacity(xs.len());
        let mut ox = 0;
        let mut row_h = 0;
        for (j, &x) in xs.iter().enumerate() {
            let tile_z = tile_blend::crop(rec, z, y, x, plan.tile_latent, plan.tile_latent)?;
            let tile = decode(rec, &tile_z)?;
            let &[_, c, th, tw] = tile.shape() else {
                return Err(Error::shape(
                    "vae tiled decode",
                    "decoder output is not 4-D",
                ));
            };
            // The image: the crops' sizes summed (8x the latents when
            // `overlap_size * scale == row_limit`, as for every SD config).
            if out.is_none() {
                let f = th / tile_z.shape()[2].max(1);
                let size = |n: usize, starts: &[usize]| -> usize {
                    let px = |s: usize| (plan.tile_latent.min(n - s) * f).min(plan.row_limit);
                    starts.iter().map(|&s| px(s)).sum()
                };
                let shape = [b, c, size(h, &ys), size(w, &xs)];
                out = Some(Tensor::empty(rec.gpu(), &shape, tile.dtype())?);
            }
            let Some(out) = out.as_ref() else {
                continue;
            };
            tile_blend::blend_tile(
                rec,
                &tile,
                above.get(j),
                j.checked_sub(1).map(|k| &row[k]),
                plan.blend_extent,
                plan.row_limit,
                out,
                (oy, ox),
            )?;
            rec.submit()?;
            ox += tw.min(plan.row_limit);
            row_h = th.min(plan.row_limit);
            row.push(tile);
        }
        oy += row_h;
        above = row;
    }
    out.ok_or_else(|| Error::shape("vae tiled decode", "empty latents"))
}
