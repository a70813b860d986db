//! The hires fix in request bodies: `/predictions`' `"hires"` object and its checks
//! against the HTTP limits (the A1111 routes read their own `enable_hr` fields and share
//! [`checked`]).

use serde::Deserialize;

use super::error::ApiError;
use super::request::MAX_SIZE;
use crate::hires::{self, HiresFix, HiresSize, Upscaler};

/// `"hires": {"scale": 2.0, "upscaler": "Latent", "strength": 0.7, "steps": 0}`, or
/// `width` / `height` instead of `scale` (A1111's `hr_resize_x` / `hr_resize_y`).
#[derive(Deserialize, Default, Debug, Clone)]
#[serde(default, deny_unknown_fields)]
pub struct HiresParams {
    pub scale: Option<f64>,
    pub width: Option<usize>,
    pub height: Option<usize>,
    /// An A1111 upscaler name (default "Latent").
    pub upscaler: Option<String>,
    /// The second pass's denoising strength (default 0.7).
    pub strength: Option<f64>,
    /// The second pass's steps (0: the request's).
    pub steps: Option<usize>,
}

impl HiresParams {
    /// The hires fix for a first pass of `width x height` with `steps`, checked.
    pub fn into_hires(
        self,
        steps: usize,
        width: usize,
        height: usize,
    ) -> Result<HiresFix, ApiError> {
        let size = match (self.scale, self.width, self.height) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(ApiError::bad_request(
                    "hires: give scale or width/height, not both",
                ));
            }
            (Some(s), None, None) => HiresSize::Scale(s),
            (None, None, None) => HiresSize::Scale(hires::DEFAULT_SCALE),
            (None, w, h) => HiresSize::Resize {
                width: w.unwrap_or(0),
                height: h.unwrap_or(0),
            },
        };
        let upscaler = match self.upscaler.as_deref() {
            None | Some("") => Upscaler::default(),
            Some(name) => Upscaler::parse(name)
                .map_err(|e| ApiError::bad_request(format!("hires.upscaler: {e}")))?,
        };
        let fix = HiresFix {
            size,
            upscaler,
            strength: self.strength.unwrap_or(hires::DEFAULT_STRENGTH),
            steps: self.steps.unwrap_or(0),
        };
        checked(fix, steps, width, height).map_err(ApiError::bad_request)
    }
}

/// Checks a hires fix against the request's steps and size and the HTTP size limit;
/// the error message names what is wrong.
pub fn checked(
    fix: HiresFix,
    steps: usize,
    width: usize,
    height: usize,
) -> Result<HiresFix, String> {
    if fix.steps > super::request::MAX_STEPS {
        return Err(format!(
            "hires steps must be at most {}, got {}",
            super::request::MAX_STEPS,
            fix.steps
        ));
    }
    hires::check(&fix, steps).map_err(|e| e.to_string())?;
    hires::target_size(&fix, width, height, MAX_SIZE).map_err(|e| e.to_string())?;
    Ok(fix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<HiresFix, ApiError> {
        let p: HiresParams = serde_json::from_str(json).expect("json");
        p.into_hires(10, 64, 48)
    }

    #[test]
    fn fields_and_defaults() {
        let h = parse("{}").expect("defaults");
        assert_eq!(h, HiresFix::default());
        let h = parse(r#"{"scale": 1.5, "upscaler": "Lanczos", "strength": 0.5, "steps": 4}"#)
            .expect("valid");
        assert_eq!(
            (h.size, h.upscaler, h.strength, h.steps),
            (HiresSize::Scale(1.5), Upscaler::Lanczos, 0.5, 4)
        );
        let h = parse(r#"{"width": 96}"#).expect("valid");
        assert_eq!(
            h.size,
            HiresSize::Resize {
                width: 96,
                height: 0
            }
        );
    }

    #[test]
    fn bad_fields_are_400s_that_say_why() {
        let msg = |json: &str| parse(json).expect_err(json).message;
        assert!(msg(r#"{"upscaler": "ESRGAN_4x"}"#).contains("\"Latent (nearest-exact)\""));
        assert!(msg(r#"{"scale": 1.1}"#).contains("multiple of 8"));
        assert!(msg(r#"{"scale": 64}"#).contains("too large"));
        assert!(msg(r#"{"strength": 0}"#).contains("(0, 1]"));
        assert!(msg(r#"{"scale": 2, "width": 96}"#).contains("not both"));
        let p: Result<HiresParams, _> = serde_json::from_str(r#"{"denoise": 1}"#);
        assert!(p.is_err(), "unknown fields are refused");
    }
}
