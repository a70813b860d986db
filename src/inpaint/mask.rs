//! The inpainting mask on the CPU, as diffusers' `VaeImageProcessor(do_normalize=False,
//! do_binarize=True, do_convert_grayscale=True)` (the inpaint pipeline's
//! `mask_processor`) prepares it: the file to grayscale with PIL's `convert("L")`
//! (`L = (19595 R + 38470 G + 7471 B + 32768) >> 16`, alpha ignored), resized to the
//! image's size when asked for (Lanczos, PIL's default for the processor), then
//! `x / 255` binarised at 0.5 (`x >= 0.5` is white: repaint). White means repaint.
//!
//! AUTOMATIC1111's extras apply to the grayscale mask before binarising:
//! `inpainting_mask_invert` (`ImageOps.invert`) and `mask_blur` (a Gaussian of sigma
//! `mask_blur`, kernel `2 * int(2.5 * sigma + 0.5) + 1`, horizontal then vertical, as
//! A1111's `cv2.GaussianBlur` calls; borders reflected as OpenCV's default
//! BORDER_REFLECT_101). Since diffusers binarises afterwards, the blur rounds the mask's
//! corners and drops details thinner than about the radius rather than softening the
//! edge (A1111 also pastes the result back through the blurred mask; wgsd does not).

use crate::error::{Error, Result};

/// A grayscale mask, `width x height` bytes (PIL mode "L"): >= 128 repaints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// PIL's RGB -> L (`ImagingConvert`'s `L24`): ITU-R 601-2 luma in 16-bit fixed point.
pub fn pil_luma(r: u8, g: u8, b: u8) -> u8 {
    let v = u32::from(r) * 19595 + u32::from(g) * 38470 + u32::from(b) * 7471 + 0x8000;
    (v >> 16) as u8
}

impl Mask {
    /// Decodes a mask file's bytes (PNG or JPEG; RGB, RGBA, gray) to grayscale.
    pub fn decode(bytes: &[u8]) -> Result<Mask> {
        let img = image::load_from_memory(bytes)
            .map_err(|e| Error::InvalidInput(format!("mask: not a PNG or JPEG image ({e})")))?
            .to_rgb8();
        let (width, height) = (img.width() as usize, img.height() as usize);
        let data = img
            .as_raw()
            .chunks_exact(3)
            .map(|p| pil_luma(p[0], p[1], p[2]))
            .collect();
        Ok(Mask {
            width,
            height,
            data,
        })
    }

    /// Decodes a base64 mask (`/predictions`' `mask`, A1111's `mask`), with or without a
    /// `data:image/...;base64,` prefix.
    pub fn decode_base64(text: &str) -> Result<Mask> {
        use base64::Engine as _;
        let body = match text.split_once(";base64,") {
            Some((head, rest)) if head.starts_with("data:") => rest,
            _ => text,
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(body.trim())
            .map_err(|e| Error::InvalidInput(format!("mask: not base64 ({e})")))?;
        Mask::decode(&bytes)
    }

    /// `ImageOps.invert`: black and white swap (A1111's `inpainting_mask_invert`).
    pub fn inverted(mut self) -> Mask {
        self.data.iter_mut().for_each(|v| *v = 255 - *v);
        self
    }

    /// A1111's `mask_blur_x` / `mask_blur_y`: a Gaussian of sigma `sx` along rows, then
    /// of sigma `sy` along columns (none for 0).
    pub fn blurred(self, sx: f64, sy: f64) -> Result<Mask> {
        for s in [sx, sy] {
            if !(s.is_finite() && s >= 0.0) {
                return Err(Error::InvalidInput(format!(
                    "mask_blur must be a non-negative number, got {s}"
                )));
            }
        }
        if self.data.is_empty() {
            return Ok(self);
        }
        let (w, h) = (self.width, self.height);
        let mut v: Vec<f64> = self.data.iter().map(|&v| f64::from(v)).collect();
        if sx > 0.0 {
            v = convolve(&v, w, h, &gaussian_kernel(sx), true);
        }
        if sy > 0.0 {
            v = convolve(&v, w, h, &gaussian_kernel(sy), false);
        }
        let both = v;
        Ok(Mask {
            data: both
                .iter()
                .map(|v| v.round().clamp(0.0, 255.0) as u8)
                .collect(),
            ..self
        })
    }

    /// The mask stretched to `width x height` (Lanczos), as the image it goes with.
    pub fn resized(self, width: usize, height: usize) -> Result<Mask> {
        if (width, height) == (self.width, self.height) {
            return Ok(self);
        }
        let dims = |v: usize| {
            u32::try_from(v).map_err(|_| Error::InvalidInput(format!("mask size {v} is too large")))
        };
        let src = image::GrayImage::from_raw(dims(self.width)?, dims(self.height)?, self.data)
            .ok_or_else(|| {
                Error::InvalidInput("mask: pixel data does not match its size".into())
            })?;
        let out = image::imageops::resize(
            &src,
            dims(width)?,
            dims(height)?,
            image::imageops::FilterType::Lanczos3,
        );
        Ok(Mask {
            width,
            height,
            data: out.into_raw(),
        })
    }

    /// diffusers' binarisation: `x / 255 >= 0.5` (i.e. `x >= 128`) is 1, else 0.
    pub fn binary(&self) -> Vec<f32> {
        self.data.iter().map(|&v| f32::from(v >= 128)).collect()
    }

    /// `torch.nn.functional.interpolate(mask, size=(h / f, w / f))` (mode "nearest": the
    /// pixel at `(y * f, x * f)`) of the binary mask, `[h / f, w / f]`.
    pub fn latent(&self, f: usize) -> Vec<f32> {
        let (lw, lh) = (self.width / f, self.height / f);
        let mut out = Vec::with_capacity(lw * lh);
        for y in 0..lh {
            for x in 0..lw {
                out.push(f32::from(self.data[y * f * self.width + x * f] >= 128));
            }
        }
        out
    }
}

/// OpenCV's `getGaussianKernel(2 * int(2.5 * sigma + 0.5) + 1, sigma)`, normalised.
fn gaussian_kernel(sigma: f64) -> Vec<f64> {
    let r = (2.5 * sigma + 0.5).floor() as i64;
    let k: Vec<f64> = (-r..=r)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f64 = k.iter().sum();
    k.into_iter().map(|v| v / sum).collect()
}

/// BORDER_REFLECT_101 index (`gfedcb|abcdefgh|gfedcba`).
fn reflect101(i: i64, n: usize) -> usize {
    let n = n as i64;
    if n == 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let m = i.rem_euclid(period);
    (if m < n { m } else { period - m }) as usize
}

fn convolve(src: &[f64], w: usize, h: usize, k: &[f64], horizontal: bool) -> Vec<f64> {
    let r = (k.len() / 2) as i64;
    let mut out = vec![0.0; src.len()];
    for y in 0..h {
        for x in 0..w {
            out[y * w + x] = k
                .iter()
                .enumerate()
                .map(|(j, kv)| {
                    let d = j as i64 - r;
                    let (sx, sy) = if horizontal {
                        (reflect101(x as i64 + d, w), y)
                    } else {
                        (x, reflect101(y as i64 + d, h))
                    };
                    kv * src[sy * w + sx]
                })
                .sum();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(width: usize, height: usize, data: Vec<u8>) -> Mask {
        Mask {
            width,
            height,
            data,
        }
    }

    #[test]
    fn pil_grayscale_and_binarisation() {
        // PIL: (255, 100, 0) -> 135 (white); sRGB luma would give 126 (black).
        assert_eq!(pil_luma(255, 100, 0), 135);
        assert_eq!(pil_luma(255, 255, 255), 255);
        assert_eq!(pil_luma(7, 7, 7), 7, "gray stays gray");
        let m = mask(4, 1, vec![0, 127, 128, 255]);
        assert_eq!(m.binary(), vec![0.0, 0.0, 1.0, 1.0]);
        assert_eq!(m.inverted().data, vec![255, 128, 127, 0]);
    }

    #[test]
    fn latent_mask_is_nearest() {
        // 16 x 8 with f = 8: the latent pixel takes the source pixel at (8y, 8x).
        let mut data = vec![0u8; 16 * 8];
        data[8] = 200; // (y 0, x 8)
        data[9] = 200; // not sampled
        let m = mask(16, 8, data);
        assert_eq!(m.latent(8), vec![0.0, 1.0]);
    }

    #[test]
    fn blur_is_normalised_and_symmetric() {
        let k = gaussian_kernel(4.0);
        assert_eq!(k.len(), 2 * 10 + 1);
        assert!((k.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        let flat = mask(5, 3, vec![200; 15]).blurred(2.0, 2.0).unwrap();
        assert!(flat.data.iter().all(|&v| v == 200), "flat stays flat");
        let mut dot = vec![0u8; 9 * 9];
        dot[4 * 9 + 4] = 255;
        let b = mask(9, 9, dot).blurred(1.0, 1.0).unwrap();
        assert!(b.data[4 * 9 + 4] < 255 && b.data[4 * 9 + 3] > 0);
        assert_eq!(b.data[4 * 9 + 3], b.data[4 * 9 + 5]);
        assert_eq!(b.data[3 * 9 + 4], b.data[4 * 9 + 3]);
        assert!(mask(2, 2, vec![0; 4]).blurred(-1.0, 0.0).is_err());
        assert_eq!(reflect101(-1, 5), 1);
        assert_eq!(reflect101(5, 5), 3);
    }

    #[test]
    fn bad_bytes_and_resize() {
        assert!(Mask::decode(b"not an image").is_err());
        assert!(Mask::decode_base64("***").is_err());
        let r = mask(4, 2, vec![255; 8]).resized(8, 8).unwrap();
        assert_eq!((r.width, r.height, r.data.len()), (8, 8, 64));
        assert!(r.data.iter().all(|&v| v >= 254));
    }
}
