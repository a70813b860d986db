//! The image upscalers' resize, reproducing Pillow's `Image.resize` on RGB images byte for
//! byte (Pillow's `libImaging/Resample.c` and `Geometry.c`, which A1111's "Lanczos",
//! "Nearest" and "None" upscalers call):
//!
//! - LANCZOS: two separable passes, horizontal first, each output byte
//!   `clip8((2^21 + sum(in * k)) >> 22)` with integer weights `k` = the normalised
//!   `sinc(x) sinc(x / 3)` taps (support 3, stretched by the downscale factor) times 2^22,
//!   rounded away from zero; the intermediate image is u8.
//! - NEAREST: Pillow's affine scale: source column `int(x0)` where `x0` starts at
//!   `sx / 2` and grows by `sx = in / out` per column (accumulated in f64), same for rows.

use crate::pipeline::Image;

/// Pillow's `PRECISION_BITS` for 8-bit images.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// The resampling filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Lanczos,
    Nearest,
}

/// `img` resized to `width x height` as Pillow's `img.resize((width, height), filter)`.
pub fn resize(img: &Image, width: usize, height: usize, filter: Filter) -> Image {
    if (img.width, img.height) == (width, height) {
        return img.clone();
    }
    match filter {
        Filter::Lanczos => lanczos(img, width, height),
        Filter::Nearest => nearest(img, width, height),
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

fn lanczos_filter(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// One axis's taps: per output index the first input index and the integer weights.
struct Taps {
    first: Vec<usize>,
    weights: Vec<Vec<i32>>,
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for `in_size -> out_size`.
fn taps(in_size: usize, out_size: usize) -> Taps {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 3.0 * filterscale;
    let ss = 1.0 / filterscale;
    let mut first = Vec::with_capacity(out_size);
    let mut weights = Vec::with_capacity(out_size);
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        // C's (int) cast truncates toward zero.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut k: Vec<f64> = (0..n)
            .map(|x| lanczos_filter((x as f64 + xmin as f64 - center + 0.5) * ss))
            .collect();
        let ww: f64 = k.iter().sum();
        if ww != 0.0 {
            for v in &mut k {
                *v /= ww;
            }
        }
        let one = f64::from(1u32 << PRECISION_BITS);
        let fixed = k
            .iter()
            .map(|&v| {
                if v < 0.0 {
                    (-0.5 + v * one) as i32
                } else {
                    (0.5 + v * one) as i32
                }
            })
            .collect();
        first.push(xmin);
        weights.push(fixed);
    }
    Taps { first, weights }
}

fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow's two-pass Lanczos resample: the rows to `width` (u8), then the columns.
fn lanczos(img: &Image, width: usize, height: usize) -> Image {
    let (w, h) = (img.width, img.height);
    // Horizontal pass: h rows of `width`.
    let tx = taps(w, width);
    let mut tmp = vec![0u8; h * width * 3];
    let horizontal = w != width;
    let mid: &[u8] = if horizontal {
        for y in 0..h {
            let row = &img.data[y * w * 3..][..w * 3];
            for (xx, (x0, k)) in tx.first.iter().zip(&tx.weights).enumerate() {
                for c in 0..3 {
                    let mut ss = 1i32 << (PRECISION_BITS - 1);
                    for (j, &kj) in k.iter().enumerate() {
                        ss += i32::from(row[(x0 + j) * 3 + c]) * kj;
                    }
                    tmp[(y * width + xx) * 3 + c] = clip8(ss);
                }
            }
        }
        &tmp[..h * width * 3]
    } else {
        &img.data
    };
    if h == height {
        return Image {
            width,
            height,
            data: mid.to_vec(),
        };
    }
    // Vertical pass over the (width-wide) intermediate.
    let ty = taps(h, height);
    let mut out = vec![0u8; width * height * 3];
    for (yy, (y0, k)) in ty.first.iter().zip(&ty.weights).enumerate() {
        for xx in 0..width {
            for c in 0..3 {
                let mut ss = 1i32 << (PRECISION_BITS - 1);
                for (j, &kj) in k.iter().enumerate() {
                    ss += i32::from(mid[((y0 + j) * width + xx) * 3 + c]) * kj;
                }
                out[(yy * width + xx) * 3 + c] = clip8(ss);
            }
        }
    }
    Image {
        width,
        height,
        data: out,
    }
}

/// Pillow's `ImagingScaleAffine` source indices for one axis (`COORD`: `int(v)`, -1 below 0).
fn nearest_index(in_size: usize, out_size: usize) -> Vec<usize> {
    let a = in_size as f64 / out_size as f64;
    let mut o = a * 0.5;
    let mut idx = Vec::with_capacity(out_size);
    for _ in 0..out_size {
        // Never negative here (o starts at a / 2 > 0), and below in_size for in-range o.
        idx.push((o as usize).min(in_size - 1));
        o += a;
    }
    idx
}

fn nearest(img: &Image, width: usize, height: usize) -> Image {
    let (w, h) = (img.width, img.height);
    let (xs, ys) = (nearest_index(w, width), nearest_index(h, height));
    let mut data = Vec::with_capacity(width * height * 3);
    for &y in &ys {
        let row = &img.data[y * w * 3..][..w * 3];
        for &x in &xs {
            data.extend_from_slice(&row[x * 3..][..3]);
        }
    }
    Image {
        width,
        height,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_stays_flat_and_nearest_doubles() {
        let img = Image {
            width: 3,
            height: 2,
            data: vec![77; 18],
        };
        for f in [Filter::Lanczos, Filter::Nearest] {
            let r = resize(&img, 7, 5, f);
            assert_eq!((r.width, r.height, r.data.len()), (7, 5, 105));
            assert!(r.data.iter().all(|&v| v == 77), "{f:?}");
        }
        let img = Image {
            width: 2,
            height: 1,
            data: vec![1, 2, 3, 4, 5, 6],
        };
        let r = resize(&img, 4, 2, Filter::Nearest);
        assert_eq!(r.data[..12], [1, 2, 3, 1, 2, 3, 4, 5, 6, 4, 5, 6]);
        assert_eq!(r.data[12..], r.data[..12]);
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(32, 64), (24, 40), (64, 40), (7, 3)] {
            let t = taps(i, o);
            for k in &t.weights {
                let s: i32 = k.iter().sum();
                assert!(
                    (s - (1 << PRECISION_BITS)).abs() <= k.len() as i32,
                    "{i}->{o}: {s}"
                );
            }
        }
    }
}
