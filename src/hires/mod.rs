//! AUTOMATIC1111's hires fix (`StableDiffusionProcessingTxt2Img` with `enable_hr`,
//! `modules/processing.py`: `calculate_target_resolution`, `sample`, `sample_hr_pass`),
//! composed from diffusers' pipelines, which are wgsd's numerical reference:
//!
//! 1. **First pass**: text to image at `width x height` with `steps`, exactly as without
//!    the hires fix (`StableDiffusionPipeline`, generator `manual_seed(seed)`), up to the
//!    final latents.
//! 2. **Upscale** to the target size ([`target_size`], A1111's rules for `hr_scale` and
//!    `hr_resize_x/y`):
//!    - latent upscalers (`"Latent"`, `"Latent (nearest)"`, `"Latent (nearest-exact)"`,
//!      `"Latent (bicubic)"`): `F.interpolate(latents, size=(th / 8, tw / 8), mode,
//!      antialias=False)` on the GPU (`ops::latent_resize`); the result goes straight into
//!      the second pass, with no VAE round trip;
//!    - image upscalers (`"None"`, `"Lanczos"`, `"Nearest"`): the first pass is decoded to
//!      u8 images as a plain run returns them, each is resized on the CPU by [`resize`],
//!      which reproduces PIL's `Image.resize((tw, th), LANCZOS)` (`"None"`, `"Lanczos"`) or
//!      `NEAREST` (`"Nearest"`) byte for byte, and the second pass VAE-encodes them.
//!      (A1111's "Lanczos"/"Nearest" upscalers first scale by the ratio, then Lanczos to
//!      the exact size; for the sizes wgsd accepts that is the same single resize.)
//! 3. **Second pass**: `StableDiffusionImg2ImgPipeline` at the target size with
//!    `steps` = the hires steps (0: the first pass's), `strength` = the hires denoising
//!    strength (`int(steps * strength)` steps run, diffusers' `get_timesteps`).
//!
//! **Random draws.** As A1111 re-seeds its noise for the second pass, each request's
//! second pass draws from a generator freshly seeded with the request's seed
//! (`torch.Generator("cpu").manual_seed(seed)`): from latents, one `randn([rows, C, h, w])`
//! (the noise for `add_noise`); from images, the VAE's latent sample `randn([rows, C, h,
//! w])` first (diffusers' `latent_dist.sample(generator)` of the whole batch), then the
//! noise; ancestral samplers go on drawing from that generator. `rows` is the request's
//! prompts times `num_images_per_prompt`; each request of a batch (and each A1111 image
//! `seed + i`) has its own generators, so it gets what it gets alone.
//!
//! **Both passes** report progress as one run (step `k` of both passes' steps), share the
//! cancel flag, and a set `finish_early` flag ends the whole job: set during the first
//! pass, the first pass's latents are decoded at the first size, as A1111 returns them.

mod latents;
pub mod resize;
mod run;

pub(crate) use latents::{encoded_latents, noised_latents};
pub(crate) use run::run;

use crate::ops::latent_resize::Mode;

/// Pixels per latent cell in A1111's target arithmetic (`opt_f`).
const OPT_F: usize = 8;

/// The largest target side wgsd accepts (the HTTP APIs have their own, smaller limit).
pub const MAX_TARGET_SIDE: usize = 4096;

/// A1111's default `hr_scale`.
pub const DEFAULT_SCALE: f64 = 2.0;

/// A1111's default denoising strength for the second pass (the txt2img page's slider and
/// the API's `denoising_strength` default 0.7 / 0.75; wgsd takes the page's 0.7).
pub const DEFAULT_STRENGTH: f64 = 0.7;

/// How the hires fix upscales between the passes (A1111's `hr_upscaler` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Upscaler {
    /// `F.interpolate` on the latents (A1111's `latent_upscale_modes`).
    Latent(Mode),
    /// A1111's "None": the image resized with Lanczos.
    None,
    /// PIL's LANCZOS on the decoded image.
    Lanczos,
    /// PIL's NEAREST on the decoded image.
    Nearest,
}

impl Upscaler {
    /// Every upscaler wgsd has, in A1111's order.
    pub const ALL: [Upscaler; 7] = [
        Upscaler::Latent(Mode::Bilinear),
        Upscaler::Latent(Mode::Bicubic),
        Upscaler::Latent(Mode::Nearest),
        Upscaler::Latent(Mode::NearestExact),
        Upscaler::None,
        Upscaler::Lanczos,
        Upscaler::Nearest,
    ];

    /// A1111's name.
    pub fn name(self) -> &'static str {
        match self {
            Upscaler::Latent(Mode::Bilinear) => "Latent",
            Upscaler::Latent(Mode::Bicubic) => "Latent (bicubic)",
            Upscaler::Latent(Mode::Nearest) => "Latent (nearest)",
            Upscaler::Latent(Mode::NearestExact) => "Latent (nearest-exact)",
            Upscaler::None => "None",
            Upscaler::Lanczos => "Lanczos",
            Upscaler::Nearest => "Nearest",
        }
    }

    /// The upscaler A1111 calls `name` (case and surrounding spaces aside).
    pub fn parse(name: &str) -> Result<Upscaler, HiresError> {
        let n = name.trim();
        Upscaler::ALL
            .into_iter()
            .find(|u| u.name().eq_ignore_ascii_case(n))
            .ok_or_else(|| HiresError::UnknownUpscaler(name.to_string()))
    }

    /// The names of [`Upscaler::ALL`], comma-separated and quoted.
    pub fn supported() -> String {
        Upscaler::ALL
            .iter()
            .map(|u| format!("\"{}\"", u.name()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The latent interpolation, for latent upscalers.
    pub fn latent_mode(self) -> Option<Mode> {
        match self {
            Upscaler::Latent(m) => Some(m),
            _ => None,
        }
    }
}

impl Default for Upscaler {
    /// A1111's `latent_upscale_default_mode`.
    fn default() -> Self {
        Upscaler::Latent(Mode::Bilinear)
    }
}

/// The second pass's size: a factor or explicit sides (A1111's `hr_scale` /
/// `hr_resize_x`, `hr_resize_y`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HiresSize {
    /// `int(width * scale) x int(height * scale)`.
    Scale(f64),
    /// Either may be 0 (follow the first pass's aspect ratio); with both, the latents are
    /// upscaled to cover `width x height` and centre-cropped, as A1111 does.
    Resize { width: usize, height: usize },
}

/// The hires fix of one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HiresFix {
    pub size: HiresSize,
    pub upscaler: Upscaler,
    /// The second pass's strength in (0, 1].
    pub strength: f64,
    /// The second pass's steps; 0: the first pass's.
    pub steps: usize,
}

impl Default for HiresFix {
    fn default() -> Self {
        HiresFix {
            size: HiresSize::Scale(DEFAULT_SCALE),
            upscaler: Upscaler::default(),
            strength: DEFAULT_STRENGTH,
            steps: 0,
        }
    }
}

/// Where the second pass runs: the upscaled size, the crop back to the target and the
/// target (all in pixels; the crop in latent cells per side, A1111's `truncate_x/y`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The size the upscaler produces (A1111's `hr_upscale_to_x/y`).
    pub upscale_to: (usize, usize),
    /// Latent columns / rows cut off (`truncate_x`, `truncate_y`): `t / 2` before,
    /// `(t + 1) / 2` after.
    pub truncate: (usize, usize),
    /// The second pass's (and the images') size.
    pub size: (usize, usize),
}

/// What can be wrong with a hires-fix request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HiresError {
    #[error(
        "hires upscaler {0:?} is not available; wgsd has {list}",
        list = Upscaler::supported()
    )]
    UnknownUpscaler(String),
    #[error("hires scale must be a finite number of at least 1, got {0}")]
    BadScale(f64),
    #[error("hires target {width} x {height} is not a multiple of 8 on both sides")]
    NotMultipleOf8 { width: usize, height: usize },
    #[error("hires target {width} x {height} is too large; at most {max} a side")]
    TooLarge {
        width: usize,
        height: usize,
        max: usize,
    },
    #[error("hires denoising strength must be in (0, 1], got {0}")]
    BadStrength(f64),
    #[error(
        "hires denoising strength {strength} with {steps} second-pass steps leaves no step (int(steps * strength) = 0)"
    )]
    NoStep { steps: usize, strength: f64 },
}

/// A1111's `calculate_target_resolution` for a first pass of `width x height`; the
/// target must be a positive multiple of 8 on both sides and at most `max_side`.
pub fn target_size(
    hires: &HiresFix,
    width: usize,
    height: usize,
    max_side: usize,
) -> Result<Target, HiresError> {
    let (size, upscale_to, truncate) = match hires.size {
        HiresSize::Scale(s) => {
            if !(s.is_finite() && s >= 1.0) {
                return Err(HiresError::BadScale(s));
            }
            // Python's int() truncates.
            let to = (
                (width as f64 * s).floor() as usize,
                (height as f64 * s).floor() as usize,
            );
            (to, to, (0, 0))
        }
        HiresSize::Resize {
            width: rx,
            height: ry,
        } => match (rx, ry) {
            (0, 0) => {
                return Err(HiresError::NotMultipleOf8 {
                    width: 0,
                    height: 0,
                });
            }
            (rx, 0) => {
                let to = (rx, rx * height / width.max(1));
                (to, to, (0, 0))
            }
            (0, ry) => {
                let to = (ry * width / height.max(1), ry);
                (to, to, (0, 0))
            }
            (rx, ry) => {
                // Cover the target with the first pass's aspect ratio, then crop.
                let (src, dst) = (width as f64 / height as f64, rx as f64 / ry as f64);
                let to = if src < dst {
                    (rx, rx * height / width)
                } else {
                    (ry * width / height, ry)
                };
                let cut = ((to.0 - rx) / OPT_F, (to.1 - ry) / OPT_F);
                ((rx, ry), to, cut)
            }
        },
    };
    let (w, h) = size;
    if w > max_side || h > max_side || upscale_to.0 > max_side || upscale_to.1 > max_side {
        return Err(HiresError::TooLarge {
            width: w,
            height: h,
            max: max_side,
        });
    }
    let latent_fits = upscale_to.0 / OPT_F - truncate.0 == w / OPT_F
        && upscale_to.1 / OPT_F - truncate.1 == h / OPT_F;
    if w == 0 || h == 0 || !w.is_multiple_of(OPT_F) || !h.is_multiple_of(OPT_F) || !latent_fits {
        return Err(HiresError::NotMultipleOf8 {
            width: w,
            height: h,
        });
    }
    Ok(Target {
        upscale_to,
        truncate,
        size,
    })
}

/// Checks the hires fix's own settings (not the sizes): strength in (0, 1] and at least
/// one second-pass step.
pub fn check(hires: &HiresFix, steps: usize) -> Result<(), HiresError> {
    let s = hires.strength;
    if !(s.is_finite() && s > 0.0 && s <= 1.0) {
        return Err(HiresError::BadStrength(s));
    }
    let steps2 = second_pass_steps(hires, steps);
    if crate::img2img::t_start(steps2, s).is_err() {
        return Err(HiresError::NoStep {
            steps: steps2,
            strength: s,
        });
    }
    Ok(())
}

/// The second pass's schedule length (`hr_second_pass_steps or steps`).
pub fn second_pass_steps(hires: &HiresFix, steps: usize) -> usize {
    if hires.steps == 0 { steps } else { hires.steps }
}

/// What two requests' hires fixes must share to run as one batch (bit patterns of the
/// floats, so it is `Eq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HiresKey {
    size: (u8, u64, usize, usize),
    upscaler: Upscaler,
    strength_bits: u64,
    steps: usize,
}

impl HiresFix {
    /// The batch key of this hires fix.
    pub fn key(&self) -> HiresKey {
        let size = match self.size {
            HiresSize::Scale(s) => (0, s.to_bits(), 0, 0),
            HiresSize::Resize { width, height } => (1, 0, width, height),
        };
        HiresKey {
            size,
            upscaler: self.upscaler,
            strength_bits: self.strength.to_bits(),
            steps: self.steps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scaled(s: f64) -> HiresFix {
        HiresFix {
            size: HiresSize::Scale(s),
            ..HiresFix::default()
        }
    }

    fn resized(width: usize, height: usize) -> HiresFix {
        HiresFix {
            size: HiresSize::Resize { width, height },
            ..HiresFix::default()
        }
    }

    #[test]
    fn targets_follow_a1111() {
        let t = target_size(&scaled(2.0), 32, 24, 4096).unwrap();
        assert_eq!(
            (t.size, t.upscale_to, t.truncate),
            ((64, 48), (64, 48), (0, 0))
        );
        assert_eq!(
            target_size(&scaled(1.5), 32, 32, 4096).unwrap().size,
            (48, 48)
        );
        // hr_resize_x only: the height follows the aspect ratio (integer division).
        assert_eq!(
            target_size(&resized(64, 0), 32, 24, 4096).unwrap().size,
            (64, 48)
        );
        assert_eq!(
            target_size(&resized(0, 48), 32, 24, 4096).unwrap().size,
            (64, 48)
        );
        // Both: cover, then crop. 32x24 (4:3) to 64x64: upscale to 85x64, cut 2 columns.
        let t = target_size(&resized(64, 64), 32, 24, 4096).unwrap();
        assert_eq!(
            (t.size, t.upscale_to, t.truncate),
            ((64, 64), (85, 64), (2, 0))
        );
        // 24x32 to 64x32: upscale to 64x85, cut 6 latent rows.
        let t = target_size(&resized(64, 32), 24, 32, 4096).unwrap();
        assert_eq!(
            (t.size, t.upscale_to, t.truncate),
            ((64, 32), (64, 85), (0, 6))
        );
    }

    #[test]
    fn named_errors() {
        assert_eq!(
            target_size(&scaled(1.3), 32, 32, 4096),
            Err(HiresError::NotMultipleOf8 {
                width: 41,
                height: 41
            })
        );
        assert!(matches!(
            target_size(&scaled(64.0), 512, 512, 4096),
            Err(HiresError::TooLarge { width: 32768, .. })
        ));
        assert_eq!(
            target_size(&scaled(0.5), 32, 32, 4096),
            Err(HiresError::BadScale(0.5))
        );
        assert!(target_size(&resized(0, 0), 32, 32, 4096).is_err());
        assert!(target_size(&resized(60, 0), 32, 32, 4096).is_err());
        for bad in [0.0, -0.1, 1.5, f64::NAN] {
            let h = HiresFix {
                strength: bad,
                ..HiresFix::default()
            };
            assert!(
                matches!(check(&h, 10), Err(HiresError::BadStrength(_))),
                "{bad}"
            );
        }
        let h = HiresFix {
            strength: 0.1,
            ..HiresFix::default()
        };
        assert!(matches!(
            check(&h, 5),
            Err(HiresError::NoStep { steps: 5, .. })
        ));
        assert!(check(&h, 10).is_ok());
    }

    #[test]
    fn upscaler_names() {
        for u in Upscaler::ALL {
            assert_eq!(Upscaler::parse(u.name()), Ok(u));
        }
        assert_eq!(Upscaler::parse(" latent "), Ok(Upscaler::default()));
        let e = Upscaler::parse("R-ESRGAN 4x+").unwrap_err().to_string();
        assert!(
            e.contains("R-ESRGAN 4x+") && e.contains("\"Latent (bicubic)\""),
            "{e}"
        );
    }
}
