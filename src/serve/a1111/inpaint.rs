//! `img2img`'s inpainting fields (A1111's `StableDiffusionProcessingImg2Img`,
//! `modules/processing.py`), read into a grayscale [`Mask`] at the mask's own size; the
//! route stretches it to `width x height` with the init image (A1111 resizes the mask
//! the same way, whatever its size) and the pipeline runs diffusers'
//! `StableDiffusionInpaintPipeline` on it (`crate::inpaint`).
//!
//! - `mask`: base64 PNG / JPEG; grayscale as PIL's `convert("L")` (A1111 would take an
//!   RGBA mask's alpha channel; wgsd follows diffusers and ignores alpha);
//! - `inpainting_mask_invert` (0/1): `ImageOps.invert` first;
//! - `mask_blur` (A1111's default 4; `mask_blur_x` / `mask_blur_y` when given apart): a
//!   Gaussian before binarising. diffusers binarises the mask at 0.5 afterwards, so the
//!   blur rounds corners and removes thin details; A1111's soft paste-back through the
//!   blurred mask is not done;
//! - `inpainting_fill`: only 1 ("original": the image's own content under the mask, what
//!   diffusers does) is supported; absent means 1. 0 ("fill"), 2 ("latent noise") and
//!   3 ("latent nothing") are refused with a 422 naming the field (A1111's default is 0,
//!   so clients such as webuiapi must send 1);
//! - `inpaint_full_res` ("only masked"): refused when true (absent means false, where
//!   A1111's default is true); `inpaint_full_res_padding` then has no effect;
//! - `mask_round`: true (the default) only: the mask is always binarised;
//! - `latent_mask`: refused when given.
//!
//! Without a `mask` the other fields have no effect, as in A1111.

use serde_json::Value;

use super::fields::Body;
use crate::inpaint::Mask;

/// A1111's default `mask_blur`.
pub const DEFAULT_MASK_BLUR: f64 = 4.0;

/// The largest blur accepted (a sigma; the kernel is about 5 sigma wide).
const MAX_MASK_BLUR: i64 = 64;

fn present(v: &Option<Value>) -> bool {
    match v {
        None => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    }
}

/// Reads every inpainting field (so none is reported unread) and, when a mask is given,
/// returns it inverted and blurred as asked; errors are recorded on `body`.
pub fn mask(body: &mut Body) -> Option<Mask> {
    let text = body.value("mask");
    let invert = body.bool("inpainting_mask_invert");
    let blur = body.int_in("mask_blur", 0..=MAX_MASK_BLUR);
    let blur_x = body.int_in("mask_blur_x", 0..=MAX_MASK_BLUR);
    let blur_y = body.int_in("mask_blur_y", 0..=MAX_MASK_BLUR);
    let fill = body.int("inpainting_fill");
    let full_res = body.bool("inpaint_full_res");
    body.value("inpaint_full_res_padding");
    let round = body.bool("mask_round");
    let latent_mask = body.value("latent_mask");
    if !present(&text) {
        return None;
    }
    if let Some(f) = fill.filter(|&f| f != 1) {
        let what = match f {
            0 => "0 (fill)",
            2 => "2 (latent noise)",
            3 => "3 (latent nothing)",
            _ => "this value",
        };
        body.error(
            "inpainting_fill",
            format!(
                "inpainting_fill {what} is not supported: wgsd inpaints as diffusers, which is 1 (original)"
            ),
            "value_error",
        );
    }
    if full_res == Some(true) {
        body.error(
            "inpaint_full_res",
            "inpaint_full_res (only masked) is not supported; send false",
            "value_error",
        );
    }
    if round == Some(false) {
        body.error(
            "mask_round",
            "wgsd always binarises the mask (diffusers' mask processing); send true",
            "value_error",
        );
    }
    if present(&latent_mask) {
        body.error("latent_mask", "latent_mask is not supported", "value_error");
    }
    let Some(Value::String(text)) = text else {
        body.error("mask", "str type expected", "type_error.str");
        return None;
    };
    let m = match Mask::decode_base64(&text) {
        Ok(m) => m,
        Err(e) => {
            body.error("mask", e.to_string(), "value_error");
            return None;
        }
    };
    let m = if invert == Some(true) {
        m.inverted()
    } else {
        m
    };
    // A1111: `mask_blur`, when given, sets both directions.
    let (bx, by) = match blur {
        Some(b) => (b, b),
        None => (
            blur_x.unwrap_or(DEFAULT_MASK_BLUR as i64),
            blur_y.unwrap_or(DEFAULT_MASK_BLUR as i64),
        ),
    };
    match m.blurred(bx as f64, by as f64) {
        Ok(m) => Some(m),
        Err(e) => {
            body.error("mask_blur", e.to_string(), "value_error");
            None
        }
    }
}
