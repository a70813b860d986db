//! Request bodies to generation requests: reading a body under `max_request_size`, the
//! parameter forms (JSON, raw prompt text), and the limits every API checks.

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::header;
use serde::Deserialize;

use super::error::{ApiError, ErrorKind};
use crate::pipeline::{DEFAULT_GUIDANCE, GenerateRequest, PromptSyntax, VaeTiling};
use crate::schedulers::{Sampler, Spacing};

/// Largest accepted `num_inference_steps`.
pub const MAX_STEPS: usize = 500;
/// Largest accepted width or height.
pub const MAX_SIZE: usize = 2048;
/// Largest accepted `num_images`.
pub const MAX_IMAGES: usize = 16;

/// What a request that does not say gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    pub steps: usize,
    pub width: usize,
    pub height: usize,
    /// Where the `loras` field's names are looked up (`super::loras`).
    pub lora_dir: Option<std::path::PathBuf>,
}

/// Reads the body, refusing it (413) as soon as it passes `limit`: first from
/// `Content-Length`, then while streaming in, then after undoing its `Content-Encoding`
/// (gzip, deflate; see [`content_encoding`](super::content_encoding)).
pub async fn read_body(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorKind::RequestEntityTooLarge,
            format!("request body is larger than max_request_size ({limit} bytes)"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        let mut length_limit = false;
        let mut timed_out = false;
        while let Some(err) = source {
            length_limit |= err.is::<http_body_util::LengthLimitError>();
            timed_out |= err.is::<super::listen::BodyTimeout>();
            source = err.source();
        }
        if length_limit {
            too_large()
        } else if timed_out {
            ApiError::new(ErrorKind::BodyTimeout, e.to_string())
        } else {
            ApiError::bad_request(format!("could not read the request body: {e}"))
        }
    })?;
    super::content_encoding::decode(&parts.headers, bytes, limit)
}

/// The JSON request form (diffusers' argument names).
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct Params {
    pub prompt: Option<String>,
    /// TorchServe's `{"data": ...}` (and `body`) wrapping of the prompt.
    pub data: Option<String>,
    pub body: Option<String>,
    pub negative_prompt: Option<String>,
    pub num_inference_steps: Option<usize>,
    pub guidance_scale: Option<f32>,
    /// Absent or `null`: a random one ([`random_seed`]).
    pub seed: Option<u64>,
    pub width: Option<usize>,
    pub height: Option<usize>,
    pub scheduler: Option<String>,
    /// Overrides the scheduler config's `timestep_spacing` (leading, trailing, linspace).
    pub timestep_spacing: Option<String>,
    /// Seamless tiling (circular padding in every convolution).
    pub tiling: Option<bool>,
    /// `plain` (the default: diffusers' reading) or `a1111` (AUTOMATIC1111's emphasis,
    /// chunks, prompt editing); the `/sdapi/v1` routes always use `a1111`.
    pub prompt_syntax: Option<String>,
    /// wgsd's own: decode in tiles (true) or not (false); absent: the model's setting.
    pub vae_tiling: Option<bool>,
    pub num_images: Option<usize>,
    pub num_images_per_prompt: Option<usize>,
    /// `[{"name": .., "scale": ..}]` or `{"name": scale}`, names in the loras folder.
    pub loras: Option<serde_json::Value>,
    /// img2img: the init image as base64 PNG / JPEG (a `data:` URL prefix is accepted).
    /// Without width/height the size is the image's; with them it is resized to them.
    pub init_image: Option<String>,
    /// img2img's strength in (0, 1] (diffusers' default 0.8; 1.0 with a mask).
    pub strength: Option<f64>,
    /// A1111's hires fix (text to image only): see [`super::hires::HiresParams`].
    pub hires: Option<super::hires::HiresParams>,
    /// Inpainting: the mask as base64 PNG / JPEG, the init image's size (white repaints;
    /// grayscale, binarised at 0.5, as diffusers' StableDiffusionInpaintPipeline).
    pub mask: Option<String>,
}

/// Body to parameters: JSON (when sent as JSON, or a JSON object with a prompt sent as
/// anything else, as `curl -d '{...}'` does) or the raw prompt text.
pub fn parse_body(body: &[u8], is_json: bool) -> Result<Params, ApiError> {
    if is_json {
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the JSON body does not parse: {e}")))?;
        return params_from_json(value);
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("the prompt is not valid UTF-8"))?;
    if text.trim_start().starts_with('{')
        && let Ok(value @ serde_json::Value::Object(_)) = serde_json::from_str(text)
    {
        let has_prompt = ["prompt", "data", "body"]
            .iter()
            .any(|k| value.get(k).is_some());
        if has_prompt {
            return params_from_json(value);
        }
    }
    Ok(Params {
        prompt: Some(text.to_string()),
        ..Params::default()
    })
}

pub fn params_from_json(value: serde_json::Value) -> Result<Params, ApiError> {
    match value {
        serde_json::Value::String(s) => Ok(Params {
            prompt: Some(s),
            ..Params::default()
        }),
        // A batch of one (`[{"data": ...}]`), as TorchServe clients sometimes send.
        serde_json::Value::Array(mut items) if items.len() == 1 => {
            params_from_json(items.remove(0))
        }
        v @ serde_json::Value::Object(_) => serde_json::from_value(v)
            .map_err(|e| ApiError::bad_request(format!("bad request parameters: {e}"))),
        _ => Err(ApiError::bad_request(
            "expected a JSON object with \"prompt\" or \"data\", or a string",
        )),
    }
}

/// A seed for a request that asks for a random one: below 2^53, so it survives JSON
/// number round trips (the studio reports it to a browser).
pub fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    // Mixed so that requests a few ns apart get unrelated seeds.
    nanos.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11
}

impl Params {
    /// The generation request, checked against the limits; `defaults` fill what the
    /// request does not say.
    pub fn into_request(self, defaults: &Defaults) -> Result<GenerateRequest, ApiError> {
        let bad = |m: String| Err(ApiError::bad_request(m));
        let prompt = self.prompt.or(self.data).or(self.body).unwrap_or_default();
        if prompt.trim().is_empty() {
            return bad("the prompt is empty".into());
        }
        let steps = self.num_inference_steps.unwrap_or(defaults.steps);
        if !(1..=MAX_STEPS).contains(&steps) {
            return bad(format!(
                "num_inference_steps must be 1..={MAX_STEPS}, got {steps}"
            ));
        }
        let mut original_size = None;
        let init_image = match self.init_image.as_deref() {
            None | Some("") => None,
            Some(b64) => {
                let img = crate::img2img::decode_base64_image(b64)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                for (name, v) in [("width", img.width), ("height", img.height)] {
                    if v > MAX_SIZE {
                        return bad(format!(
                            "init_image {name} must be at most {MAX_SIZE}, got {v}"
                        ));
                    }
                }
                original_size = Some((img.width, img.height));
                let img = crate::img2img::fit(img, self.width, self.height)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                Some(std::sync::Arc::new(img))
            }
        };
        let mask = match (self.mask.as_deref(), &init_image, original_size) {
            (None | Some(""), _, _) => None,
            (Some(b64), Some(img), Some((ow, oh))) => {
                let m = crate::inpaint::Mask::decode_base64(b64)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                if (m.width, m.height) != (ow, oh) {
                    return bad(format!(
                        "mask is {} x {} but init_image is {ow} x {oh}; they must be the same size",
                        m.width, m.height
                    ));
                }
                // Stretched with the image when width/height resize it.
                let m = m
                    .resized(img.width, img.height)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                Some(std::sync::Arc::new(m))
            }
            (Some(_), _, _) => return bad("mask needs an init_image (inpainting)".into()),
        };
        let strength = self.strength.unwrap_or(if mask.is_some() {
            crate::inpaint::DEFAULT_STRENGTH
        } else {
            crate::img2img::DEFAULT_STRENGTH
        });
        if init_image.is_some() {
            crate::img2img::check_strength(strength)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
        } else if self.strength.is_some() {
            return bad("strength needs an init_image (img2img)".into());
        }
        let width = init_image
            .as_ref()
            .map_or(self.width.unwrap_or(defaults.width), |i| i.width);
        let height = init_image
            .as_ref()
            .map_or(self.height.unwrap_or(defaults.height), |i| i.height);
        for (name, v) in [("width", width), ("height", height)] {
            if v == 0 || v % 8 != 0 || v > MAX_SIZE {
                return bad(format!(
                    "{name} must be a positive multiple of 8 up to {MAX_SIZE}, got {v}"
                ));
            }
        }
        let guidance = self.guidance_scale.unwrap_or(DEFAULT_GUIDANCE);
        if !guidance.is_finite() {
            return bad(format!("guidance_scale must be finite, got {guidance}"));
        }
        let n = self.num_images.or(self.num_images_per_prompt).unwrap_or(1);
        if !(1..=MAX_IMAGES).contains(&n) {
            return bad(format!("num_images must be 1..={MAX_IMAGES}, got {n}"));
        }
        let scheduler = match self.scheduler.as_deref() {
            None | Some("") => None,
            Some(s) => Some(Sampler::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?),
        };
        let timestep_spacing = match self.timestep_spacing.as_deref() {
            None | Some("") => None,
            Some(s) => Some(Spacing::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?),
        };
        let prompt_syntax = match self.prompt_syntax.as_deref() {
            None | Some("") => PromptSyntax::Plain,
            Some(s) => s.parse().map_err(|e: String| ApiError::bad_request(e))?,
        };
        let loras = match &self.loras {
            Some(v) => super::loras::from_json(v, defaults.lora_dir.as_deref())?,
            None => Vec::new(),
        };
        let hires = match self.hires {
            None => None,
            Some(_) if init_image.is_some() => {
                return bad("hires is for text to image; it cannot take an init_image".into());
            }
            Some(h) => Some(h.into_hires(steps, width, height)?),
        };
        Ok(GenerateRequest {
            prompts: vec![prompt],
            negative_prompts: self
                .negative_prompt
                .into_iter()
                .filter(|n| !n.is_empty())
                .collect(),
            seed: self.seed.unwrap_or_else(random_seed),
            steps,
            guidance,
            width,
            height,
            num_images_per_prompt: n,
            scheduler,
            timestep_spacing,
            trace: false,
            vae_tiling: VaeTiling::from_bool(self.vae_tiling),
            tiling: self.tiling.unwrap_or(false),
            preview: false,
            prompt_syntax,
            loras,
            init_image,
            strength,
            hires,
            mask,
            ..GenerateRequest::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Defaults = Defaults {
        steps: 20,
        width: 64,
        height: 48,
        lora_dir: None,
    };

    fn request(json: &str) -> Result<GenerateRequest, ApiError> {
        parse_body(json.as_bytes(), true)?.into_request(&D)
    }

    #[test]
    fn defaults_and_seeds() {
        let r = request(r#"{"prompt": "a cat", "seed": 7}"#).expect("valid");
        assert_eq!((r.steps, r.width, r.height, r.seed), (20, 64, 48, 7));
        for random in [r#"{"prompt": "a", "seed": null}"#, r#"{"prompt": "a"}"#] {
            let r = request(random).expect("valid");
            assert!(r.seed < 1 << 53);
        }
        // `/predictions` refuses A1111's -1 (the studio's jobs take it as random).
        assert!(request(r#"{"prompt": "a", "seed": -1}"#).is_err());
        assert!(request(r#"{"prompt": "a", "seed": "x"}"#).is_err());
    }

    #[test]
    fn prompt_syntax_is_plain_unless_asked() {
        let r = request(r#"{"prompt": "a (cat:1.2)"}"#).expect("valid");
        assert_eq!(r.prompt_syntax, PromptSyntax::Plain);
        let r = request(r#"{"prompt": "a (cat:1.2)", "prompt_syntax": "a1111"}"#).expect("valid");
        assert_eq!(r.prompt_syntax, PromptSyntax::A1111);
        let e = request(r#"{"prompt": "a", "prompt_syntax": "comfy"}"#).expect_err("unknown");
        assert_eq!(e.kind, ErrorKind::BadRequest);
        assert!(e.message.contains("a1111"), "{}", e.message);
    }

    #[test]
    fn limits_are_400s() {
        for body in [
            r#"{"prompt": ""}"#,
            r#"{"prompt": "a", "num_inference_steps": 0}"#,
            r#"{"prompt": "a", "num_inference_steps": 501}"#,
            r#"{"prompt": "a", "width": 30}"#,
            r#"{"prompt": "a", "num_images": 17}"#,
            r#"{"prompt": "a", "scheduler": "magic"}"#,
        ] {
            let e = request(body).expect_err(body);
            assert_eq!(e.kind, ErrorKind::BadRequest, "{body}");
        }
    }

    #[test]
    fn img2img_fields() {
        use base64::Engine as _;
        let img = image::RgbImage::from_pixel(24, 16, image::Rgb([10, 20, 30]));
        let mut png = std::io::Cursor::new(Vec::new());
        img.write_to(&mut png, image::ImageFormat::Png).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(png.get_ref());
        let r = request(&format!(
            r#"{{"prompt": "a", "init_image": "{b64}", "strength": 0.5}}"#
        ))
        .expect("valid");
        assert_eq!(
            (r.width, r.height, r.strength),
            (24, 16, 0.5),
            "the image's size"
        );
        let img = r.init_image.expect("image");
        assert_eq!(&img.data[..3], &[10, 20, 30]);
        let r = request(&format!(
            r#"{{"prompt": "a", "init_image": "data:image/png;base64,{b64}", "width": 32}}"#
        ))
        .expect("valid");
        assert_eq!(
            (r.width, r.height, r.strength),
            (32, 16, 0.8),
            "resized to width"
        );
        for body in [
            r#"{"prompt": "a", "init_image": "bm90IGFuIGltYWdl"}"#.to_string(),
            r#"{"prompt": "a", "init_image": "%%%"}"#.to_string(),
            format!(r#"{{"prompt": "a", "init_image": "{b64}", "strength": 0}}"#),
            format!(r#"{{"prompt": "a", "init_image": "{b64}", "strength": 1.5}}"#),
            r#"{"prompt": "a", "strength": 0.5}"#.to_string(),
        ] {
            let e = request(&body).expect_err(&body);
            assert_eq!(e.kind, ErrorKind::BadRequest, "{body}");
        }
    }

    #[test]
    fn raw_text_is_the_prompt() {
        let p = parse_body(b"a plain prompt", false).expect("text");
        assert_eq!(p.prompt.as_deref(), Some("a plain prompt"));
    }

    #[test]
    fn mask_fields() {
        use base64::Engine as _;
        let png = |w: u32, h: u32, v: u8| {
            let img = image::RgbaImage::from_pixel(w, h, image::Rgba([v, v, v, 7]));
            let mut out = std::io::Cursor::new(Vec::new());
            img.write_to(&mut out, image::ImageFormat::Png).unwrap();
            base64::engine::general_purpose::STANDARD.encode(out.get_ref())
        };
        let (img, mask) = (png(24, 16, 10), png(24, 16, 255));
        let r = request(&format!(
            r#"{{"prompt": "a", "init_image": "{img}", "mask": "{mask}"}}"#
        ))
        .expect("valid");
        assert_eq!(r.strength, 1.0, "diffusers' inpainting default");
        let m = r.mask.expect("mask");
        assert_eq!((m.width, m.height), (24, 16), "an RGBA mask is fine");
        assert!(m.data.iter().all(|&v| v == 255));
        let r = request(&format!(
            r#"{{"prompt": "a", "init_image": "{img}", "mask": "{mask}", "width": 48, "height": 32}}"#
        ))
        .expect("resized together");
        assert_eq!(r.mask.map(|m| (m.width, m.height)), Some((48, 32)));
        let small = png(8, 8, 255);
        for (body, needle) in [
            (
                format!(r#"{{"prompt": "a", "mask": "{mask}"}}"#),
                "needs an init_image",
            ),
            (
                format!(r#"{{"prompt": "a", "init_image": "{img}", "mask": "{small}"}}"#),
                "same size",
            ),
            (
                format!(r#"{{"prompt": "a", "init_image": "{img}", "mask": "bm90IGFuIGltYWdl"}}"#),
                "mask: not a PNG",
            ),
        ] {
            let e = request(&body).expect_err(needle);
            assert_eq!(e.kind, ErrorKind::BadRequest, "{needle}");
            assert!(e.message.contains(needle), "{}", e.message);
        }
    }
}
