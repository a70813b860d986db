//! The `txt2img` request body (A1111's `StableDiffusionTxt2ImgProcessingAPI`, built from
//! `StableDiffusionProcessingTxt2Img` in `modules/processing.py`) read into what wgsd runs,
//! and the `img2img` body (`StableDiffusionImg2ImgProcessingAPI`): the same fields plus
//! `init_images` (one base64 image), `denoising_strength` (A1111's default 0.75) and
//! `resize_mode` (0, "just resize", only), and inpainting's `mask` with its fields
//! (`super::inpaint`); without a mask those have no effect, as in A1111.
//!
//! Every field falls in one of four groups:
//! - honoured: prompt, negative_prompt, seed, subseed (reported), steps, cfg_scale, width,
//!   height, sampler_name / sampler_index, scheduler, batch_size, n_iter, tiling,
//!   override_settings (sd_model_checkpoint), send_images, save_images;
//! - ignored, and listed in the reply's `info.ignored` because A1111 would use them:
//!   restore_faces, s_churn, s_tmax, s_tmin, s_noise, eta, and keys wgsd does not know;
//! - the hires fix (`enable_hr`): hr_scale, hr_resize_x / hr_resize_y, hr_upscaler
//!   (A1111's latent modes and the "None" / "Lanczos" / "Nearest" resizes; others 422),
//!   denoising_strength (A1111's default 0.75), hr_second_pass_steps; hr_sampler_name,
//!   hr_scheduler, hr_prompt, hr_negative_prompt and hr_checkpoint_name only when they
//!   repeat the first pass's (or are empty), firstphase_width/height only at 0 (else 422);
//! - refused with a 422 naming them, because they would change the image and wgsd cannot
//!   follow: enable_hr on img2img, init_images and mask (txt2img), styles, subseed_strength > 0, seed resizing,
//!   script_name, alwayson_scripts with content, refiner_checkpoint, infotext;
//! - without effect here as in A1111 (not listed): the hires-fix fields while enable_hr
//!   is off, the saving switches, script_args without a script, task ids and comments.

use serde_json::{Map, Value};

use super::errors::A1111Error;
use super::fields::Body;
use super::options::check_setting;
use super::samplers::{self, DEFAULT_SAMPLER};
use crate::hires::{HiresError, HiresFix, HiresSize, Upscaler};
use crate::schedulers::Sampler;
use crate::serve::request::{MAX_IMAGES, MAX_SIZE, MAX_STEPS};

/// A1111 uses these when set; wgsd does not (value: A1111's default, not listed).
const IGNORED: [(&str, f64); 6] = [
    ("restore_faces", 0.0),
    ("s_churn", 0.0),
    ("s_tmax", 0.0),
    ("s_tmin", 0.0),
    ("s_noise", 1.0),
    ("eta", f64::NAN),
];

/// Fields that have no effect on a txt2img run without the hires fix, in A1111 too.
const NO_EFFECT: [&str; 25] = [
    "denoising_strength",
    "firstphase_width",
    "firstphase_height",
    "hr_scale",
    "hr_upscaler",
    "hr_second_pass_steps",
    "hr_resize_x",
    "hr_resize_y",
    "hr_checkpoint_name",
    "hr_sampler_name",
    "hr_scheduler",
    "hr_prompt",
    "hr_negative_prompt",
    "hr_additional_modules",
    "firstpass_image",
    "do_not_save_samples",
    "do_not_save_grid",
    "override_settings_restore_afterwards",
    "force_task_id",
    "comments",
    "user",
    "disable_extra_networks",
    "script_args",
    "refiner_switch_at",
    "s_min_uncond",
];

/// Which A1111 route a body is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Txt2Img,
    Img2Img,
}

/// A1111's `img2img` default strength (`StableDiffusionProcessingImg2Img`).
pub const DEFAULT_DENOISING_STRENGTH: f64 = 0.75;

/// img2img's own part of a request.
#[derive(Debug, Clone)]
pub struct InitImage {
    pub image: std::sync::Arc<crate::pipeline::Image>,
    pub strength: f64,
    /// Inpainting: the mask (inverted and blurred as asked), its own size.
    pub mask: Option<std::sync::Arc<crate::inpaint::Mask>>,
}

/// A `txt2img` (or `img2img`) request, checked.
#[derive(Debug, Clone)]
pub struct Txt2Img {
    /// `txt2img` with `enable_hr`: the hires fix (its sizes checked against the steps and
    /// size the run resolves, by [`check_hires`]).
    pub hires: Option<HiresFix>,
    /// `img2img` only: the decoded init image and `denoising_strength`.
    pub init: Option<InitImage>,
    pub prompt: String,
    pub negative_prompt: String,
    /// `None`: random (A1111's -1).
    pub seed: Option<u64>,
    pub subseed: Option<u64>,
    /// `None`: the server's default.
    pub steps: Option<usize>,
    pub cfg_scale: f32,
    pub width: Option<usize>,
    pub height: Option<usize>,
    pub sampler: Sampler,
    pub batch_size: usize,
    pub n_iter: usize,
    pub tiling: bool,
    /// `override_settings.sd_model_checkpoint`.
    pub checkpoint: Option<String>,
    pub send_images: bool,
    pub save_images: bool,
    /// Fields accepted without effect that A1111 would have used.
    pub ignored: Vec<String>,
    /// The request with A1111's defaults for what it left out (the reply's `parameters`).
    pub parameters: Value,
}

/// A1111's defaults for the fields its reply echoes (`sampler_index` is "Euler").
const DEFAULTS: &str = r#"{
    "prompt": "", "negative_prompt": "", "styles": null, "seed": -1, "subseed": -1,
    "subseed_strength": 0, "seed_resize_from_h": -1, "seed_resize_from_w": -1,
    "sampler_name": null, "scheduler": null, "batch_size": 1, "n_iter": 1, "steps": 50,
    "cfg_scale": 7.0, "width": 512, "height": 512, "restore_faces": null, "tiling": null,
    "do_not_save_samples": false, "do_not_save_grid": false, "eta": null,
    "denoising_strength": null, "s_churn": null, "s_tmax": null, "s_tmin": null,
    "s_noise": null, "override_settings": null,
    "override_settings_restore_afterwards": true, "refiner_checkpoint": null,
    "refiner_switch_at": null, "disable_extra_networks": false, "comments": null,
    "enable_hr": false, "firstphase_width": 0, "firstphase_height": 0, "hr_scale": 2.0,
    "hr_upscaler": null, "hr_second_pass_steps": 0, "hr_resize_x": 0, "hr_resize_y": 0,
    "hr_checkpoint_name": null, "hr_sampler_name": null, "hr_scheduler": null,
    "hr_prompt": "", "hr_negative_prompt": "", "force_task_id": null,
    "sampler_index": "Euler", "script_name": null, "script_args": [],
    "send_images": true, "save_images": false, "alwayson_scripts": {}, "infotext": null
}"#;

fn defaults() -> Map<String, Value> {
    serde_json::from_str(DEFAULTS).unwrap_or_default()
}

/// A seed field: -1 is random, other negatives are refused.
fn seed(body: &mut Body, key: &str) -> Option<u64> {
    let s = body.int(key)?;
    match s {
        -1 => None,
        s if s < -1 => {
            body.error(
                key,
                "a seed is -1 (random) or a non-negative integer",
                "value_error",
            );
            None
        }
        s => Some(s as u64),
    }
}

fn size(body: &mut Body, key: &str) -> Option<usize> {
    let v = body.int_in(key, 8..=MAX_SIZE as i64)? as usize;
    if !v.is_multiple_of(8) {
        body.error(
            key,
            format!("{key} must be a multiple of 8, got {v}"),
            "value_error",
        );
        return None;
    }
    Some(v)
}

/// Refuses `key` when `active` (it would change the image).
fn refuse_if(body: &mut Body, key: &str, active: bool, why: &str) {
    if active {
        body.error(
            key,
            format!("wgsd cannot honour {key}: {why}"),
            "value_error",
        );
    }
}

fn non_empty(v: &Option<Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.trim().is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(_) => true,
    }
}

/// Reads a `txt2img` body; 422 naming every field that is malformed or refused.
#[cfg(test)]
pub fn parse(bytes: &[u8]) -> Result<Txt2Img, A1111Error> {
    parse_as(bytes, Mode::Txt2Img)
}

/// `img2img`'s own fields: the init image, strength, resize mode and the mask.
fn init_image(body: &mut Body) -> Option<InitImage> {
    let images = body.value("init_images");
    let first = match &images {
        Some(Value::Array(a)) if a.len() == 1 => a[0].as_str().map(str::to_string),
        Some(Value::Array(a)) if a.len() > 1 => {
            body.error(
                "init_images",
                "wgsd takes one init image per request",
                "value_error",
            );
            return None;
        }
        _ => None,
    };
    let strength = body.float("denoising_strength");
    let resize_mode = body.int("resize_mode").unwrap_or(0);
    refuse_if(
        body,
        "resize_mode",
        resize_mode != 0,
        "only resize_mode 0 (just resize) is supported",
    );
    let mask = super::inpaint::mask(body).map(std::sync::Arc::new);
    let strength = strength.unwrap_or(DEFAULT_DENOISING_STRENGTH);
    if let Err(e) = crate::img2img::check_strength(strength) {
        body.error("denoising_strength", e.to_string(), "value_error");
    }
    let Some(text) = first else {
        body.error(
            "init_images",
            "img2img needs init_images: a list with one base64 image",
            "value_error",
        );
        return None;
    };
    match crate::img2img::decode_base64_image(&text) {
        Ok(img) if img.width <= MAX_SIZE && img.height <= MAX_SIZE => Some(InitImage {
            image: std::sync::Arc::new(img),
            strength,
            mask,
        }),
        Ok(img) => {
            body.error(
                "init_images",
                format!(
                    "the image is {} x {}; at most {MAX_SIZE} a side",
                    img.width, img.height
                ),
                "value_error",
            );
            None
        }
        Err(e) => {
            body.error("init_images", e.to_string(), "value_error");
            None
        }
    }
}

/// The hires-fix fields of a `txt2img` body with `enable_hr` (A1111's
/// `StableDiffusionProcessingTxt2Img` defaults); what wgsd cannot follow is a 422.
fn hires_fields(
    body: &mut Body,
    prompt: &str,
    negative_prompt: &str,
    sampler: Option<&str>,
) -> Option<HiresFix> {
    let scale = body
        .float("hr_scale")
        .unwrap_or(crate::hires::DEFAULT_SCALE);
    let rx = body.int_in("hr_resize_x", 0..=MAX_SIZE as i64).unwrap_or(0) as usize;
    let ry = body.int_in("hr_resize_y", 0..=MAX_SIZE as i64).unwrap_or(0) as usize;
    let steps = body
        .int_in("hr_second_pass_steps", 0..=MAX_STEPS as i64)
        .unwrap_or(0) as usize;
    let strength = body
        .float("denoising_strength")
        .unwrap_or(DEFAULT_DENOISING_STRENGTH);
    let upscaler = match body.string("hr_upscaler").filter(|s| !s.is_empty()) {
        None => Some(Upscaler::default()),
        Some(name) => match Upscaler::parse(&name) {
            Ok(u) => Some(u),
            Err(e) => {
                body.error("hr_upscaler", e.to_string(), "value_error");
                None
            }
        },
    };
    // What would make the second pass differ from the first: refused unless it repeats it.
    let same = |v: Option<String>, first: Option<&str>| {
        v.filter(|s| !s.trim().is_empty())
            .is_none_or(|s| Some(s.as_str()) == first)
    };
    let v = body.string("hr_sampler_name");
    let ok = same(v, sampler);
    refuse_if(
        body,
        "hr_sampler_name",
        !ok,
        "the second pass uses the first pass's sampler",
    );
    let v = body.string("hr_scheduler");
    let ok = same(v.filter(|s| !s.eq_ignore_ascii_case("Automatic")), None);
    refuse_if(
        body,
        "hr_scheduler",
        !ok,
        "the second pass uses the first pass's schedule type",
    );
    let v = body.string("hr_prompt");
    let ok = same(v, Some(prompt));
    refuse_if(
        body,
        "hr_prompt",
        !ok,
        "the second pass uses the first pass's prompt",
    );
    let v = body.string("hr_negative_prompt");
    let ok = same(v, Some(negative_prompt));
    refuse_if(
        body,
        "hr_negative_prompt",
        !ok,
        "the second pass uses the first pass's negative prompt",
    );
    let v = body.string("hr_checkpoint_name");
    let ok = same(v.filter(|s| s != "Use same checkpoint"), None);
    refuse_if(
        body,
        "hr_checkpoint_name",
        !ok,
        "the second pass uses the first pass's model",
    );
    for key in ["firstphase_width", "firstphase_height"] {
        let v = body.int(key).unwrap_or(0);
        refuse_if(
            body,
            key,
            v != 0,
            "set width/height and hr_scale or hr_resize_x/y instead",
        );
    }
    let size = if (rx, ry) == (0, 0) {
        HiresSize::Scale(scale)
    } else {
        HiresSize::Resize {
            width: rx,
            height: ry,
        }
    };
    let fix = HiresFix {
        size,
        upscaler: upscaler?,
        strength,
        steps,
    };
    if let Err(e) = crate::hires::check(&fix, usize::MAX / 2) {
        // Only the strength range is checked here; the step count once steps are known.
        body.error("denoising_strength", e.to_string(), "value_error");
        return None;
    }
    Some(fix)
}

/// The hires fix against the run's steps and first-pass size (422 naming the field).
pub fn check_hires(
    fix: HiresFix,
    steps: usize,
    width: usize,
    height: usize,
) -> Result<HiresFix, A1111Error> {
    let field = |e: &HiresError| match e {
        HiresError::UnknownUpscaler(_) => "hr_upscaler",
        HiresError::BadStrength(_) | HiresError::NoStep { .. } => "denoising_strength",
        _ if matches!(fix.size, HiresSize::Resize { .. }) => "hr_resize_x",
        _ => "hr_scale",
    };
    crate::serve::hires::checked(fix, steps, width, height).map_err(|m| {
        let e = crate::hires::check(&fix, steps)
            .err()
            .or_else(|| crate::hires::target_size(&fix, width, height, MAX_SIZE).err());
        A1111Error::field(e.as_ref().map_or("enable_hr", field), m, "value_error")
    })
}

/// Reads a `txt2img` or `img2img` body; 422 naming every field that is malformed or
/// refused.
pub fn parse_as(bytes: &[u8], mode: Mode) -> Result<Txt2Img, A1111Error> {
    let mut body = Body::parse(bytes)?;
    let init = match mode {
        Mode::Img2Img => {
            let init = init_image(&mut body);
            for key in [
                "include_init_images",
                "image_cfg_scale",
                "initial_noise_multiplier",
            ] {
                body.value(key);
            }
            init
        }
        Mode::Txt2Img => None,
    };
    let prompt = body.string("prompt").unwrap_or_default();
    let negative_prompt = body.string("negative_prompt").unwrap_or_default();
    let seed_v = seed(&mut body, "seed");
    let subseed = seed(&mut body, "subseed");
    let steps = body
        .int_in("steps", 1..=MAX_STEPS as i64)
        .map(|n| n as usize);
    let cfg_scale = body.float("cfg_scale").unwrap_or(7.0) as f32;
    let width = size(&mut body, "width");
    let height = size(&mut body, "height");
    let batch_size = body
        .int_in("batch_size", 1..=MAX_IMAGES as i64)
        .unwrap_or(1) as usize;
    let n_iter = body.int_in("n_iter", 1..=MAX_IMAGES as i64).unwrap_or(1) as usize;
    let tiling = body.bool("tiling").unwrap_or(false);
    let send_images = body.bool("send_images").unwrap_or(true);
    let save_images = body.bool("save_images").unwrap_or(false);

    // The sampler: `sampler_name`, else the deprecated `sampler_index`, else Euler.
    let name = body.string("sampler_name").filter(|s| !s.is_empty());
    let index = body.string("sampler_index").filter(|s| !s.is_empty());
    let scheduler = body.string("scheduler");
    let sampler_key = if name.is_some() {
        "sampler_name"
    } else {
        "sampler_index"
    };
    let sampler_name = name
        .or(index)
        .unwrap_or_else(|| DEFAULT_SAMPLER.to_string());
    let sampler = match samplers::resolve(&sampler_name, scheduler.as_deref()) {
        Ok(s) => Some(s),
        Err(msg) => {
            let key = if msg.starts_with("Sampler not found") {
                sampler_key
            } else {
                "scheduler"
            };
            body.error(key, msg, "value_error");
            None
        }
    };

    // The hires fix (txt2img only).
    let enable_hr = body.bool("enable_hr").unwrap_or(false);
    let hires = match mode {
        Mode::Txt2Img if enable_hr => hires_fields(
            &mut body,
            &prompt,
            &negative_prompt,
            sampler.map(|s| s.a1111_name()),
        ),
        _ => {
            refuse_if(
                &mut body,
                "enable_hr",
                enable_hr,
                "the hires fix is a txt2img feature",
            );
            None
        }
    };
    if mode == Mode::Txt2Img {
        for key in ["init_images", "mask"] {
            let v = body.value(key);
            refuse_if(
                &mut body,
                key,
                non_empty(&v),
                "txt2img takes no image (use /sdapi/v1/img2img)",
            );
        }
    }
    for (key, why) in [
        ("styles", "wgsd has no prompt styles"),
        ("script_name", "wgsd has no scripts"),
        ("alwayson_scripts", "wgsd has no scripts"),
        ("refiner_checkpoint", "wgsd has no refiner"),
        ("infotext", "wgsd does not read parameters from infotext"),
    ] {
        let v = body.value(key);
        refuse_if(&mut body, key, non_empty(&v), why);
    }
    let strength = body.float("subseed_strength").unwrap_or(0.0);
    refuse_if(
        &mut body,
        "subseed_strength",
        strength > 0.0,
        "wgsd has no variation seeds",
    );
    for key in ["seed_resize_from_h", "seed_resize_from_w"] {
        let v = body.int(key).unwrap_or(-1);
        refuse_if(&mut body, key, v > 0, "wgsd does not resize seeds");
    }

    // override_settings: the model, and settings wgsd must be able to follow.
    let mut checkpoint = None;
    let mut ignored = Vec::new();
    match body.value("override_settings") {
        None => {}
        Some(Value::Object(o)) => {
            for (key, value) in &o {
                if key == "sd_model_checkpoint" {
                    checkpoint = value.as_str().map(str::to_string);
                } else if let Err(msg) = check_setting(key, value) {
                    body.error(&format!("override_settings.{key}"), msg, "value_error");
                } else {
                    ignored.push(format!("override_settings.{key}"));
                }
            }
        }
        Some(_) => body.error(
            "override_settings",
            "value is not a valid dict",
            "type_error.dict",
        ),
    }

    for (key, default) in IGNORED {
        let Some(v) = body.value(key) else { continue };
        let is_default = match &v {
            Value::Bool(b) => !*b && default == 0.0,
            Value::Number(n) => n.as_f64() == Some(default),
            _ => false,
        };
        if !is_default {
            ignored.push(key.to_string());
        }
    }
    for key in NO_EFFECT {
        body.value(key);
    }
    ignored.extend(body.unread());
    body.finish()?;

    let mut parameters = defaults();
    for (k, v) in body.as_map() {
        parameters.insert(k.clone(), v.clone());
    }
    if mode == Mode::Img2Img {
        parameters.remove("enable_hr");
        parameters
            .entry("denoising_strength")
            .or_insert(Value::from(DEFAULT_DENOISING_STRENGTH));
        parameters.entry("resize_mode").or_insert(Value::from(0));
        // The reply's parameters do not echo the (large) image back.
        parameters.insert("init_images".into(), Value::Null);
    }
    if mode == Mode::Img2Img && init.is_none() {
        return Err(A1111Error::Validation(Vec::new()));
    }
    Ok(Txt2Img {
        hires,
        init,
        prompt,
        negative_prompt,
        seed: seed_v,
        subseed,
        steps,
        cfg_scale,
        width,
        height,
        sampler: sampler.ok_or_else(|| A1111Error::Validation(Vec::new()))?,
        batch_size,
        n_iter,
        tiling,
        checkpoint,
        send_images,
        save_images,
        ignored,
        parameters: Value::Object(parameters),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(body: &str) -> Vec<String> {
        match parse(body.as_bytes()) {
            Err(A1111Error::Validation(errors)) => errors
                .iter()
                .map(|e| e.loc[1].as_str().unwrap_or_default().to_string())
                .collect(),
            other => panic!("{body}: expected a 422, got {other:?}"),
        }
    }

    #[test]
    fn honoured_and_defaults() {
        let r = parse(
            br#"{"prompt": "a cat", "seed": 5, "steps": 4, "width": 64, "height": 32,
            "sampler_name": "DPM++ 2M", "scheduler": "Karras", "batch_size": 2, "n_iter": 3,
            "restore_faces": true, "s_noise": 1, "enable_hr": false, "hr_scale": 2,
            "override_settings": {"sd_model_checkpoint": "sd", "CLIP_stop_at_last_layers": 1}}"#,
        )
        .expect("valid");
        assert_eq!(
            (r.seed, r.steps, r.width, r.height),
            (Some(5), Some(4), Some(64), Some(32))
        );
        assert_eq!(r.sampler.a1111_name(), "DPM++ 2M Karras");
        assert_eq!((r.batch_size, r.n_iter), (2, 3));
        assert_eq!(r.checkpoint.as_deref(), Some("sd"));
        assert_eq!(
            r.ignored,
            [
                "override_settings.CLIP_stop_at_last_layers",
                "restore_faces"
            ]
        );
        assert_eq!(r.parameters["cfg_scale"], 7.0);
        let r = parse(b"{}").expect("all defaults");
        assert_eq!(
            (r.seed, r.sampler.a1111_name(), r.send_images),
            (None, "Euler", true)
        );
        let r = parse(br#"{"sampler_index": "Euler a", "seed": -1, "mystery": 1}"#).expect("ok");
        assert_eq!(r.sampler.a1111_name(), "Euler a");
        assert_eq!(r.ignored, ["mystery"]);
    }

    #[test]
    fn hires_fields() {
        let r = parse(
            br#"{"enable_hr": true, "prompt": "a", "hr_prompt": "a",
            "hr_sampler_name": "Euler", "hr_checkpoint_name": "Use same checkpoint"}"#,
        )
        .expect("valid");
        let h = r.hires.expect("hires");
        assert_eq!(h.size, HiresSize::Scale(2.0));
        assert_eq!(
            (h.upscaler, h.strength, h.steps),
            (Upscaler::default(), 0.75, 0)
        );
        let r = parse(
            br#"{"enable_hr": true, "hr_resize_x": 96, "hr_upscaler": "Lanczos",
            "denoising_strength": 0.5, "hr_second_pass_steps": 7}"#,
        )
        .expect("valid");
        let h = r.hires.expect("hires");
        assert_eq!(
            h.size,
            HiresSize::Resize {
                width: 96,
                height: 0
            }
        );
        assert_eq!(
            (h.upscaler, h.strength, h.steps),
            (Upscaler::Lanczos, 0.5, 7)
        );
        let r = parse(br#"{"enable_hr": false, "hr_upscaler": "ESRGAN"}"#).expect("no effect");
        assert!(r.hires.is_none() && r.ignored.is_empty());
        check_hires(h, 20, 64, 64).expect("fits");
        let bad = HiresFix {
            size: HiresSize::Scale(1.1),
            ..HiresFix::default()
        };
        match check_hires(bad, 20, 64, 64) {
            Err(A1111Error::Validation(v)) => assert_eq!(v[0].loc[1], "hr_scale"),
            other => panic!("{other:?}"),
        }
        let few = HiresFix {
            strength: 0.1,
            ..HiresFix::default()
        };
        match check_hires(few, 5, 64, 64) {
            Err(A1111Error::Validation(v)) => assert_eq!(v[0].loc[1], "denoising_strength"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refusals_name_the_field() {
        assert_eq!(
            refused(r#"{"enable_hr": true, "hr_upscaler": "R-ESRGAN 4x+"}"#),
            ["hr_upscaler"]
        );
        assert_eq!(
            refused(r#"{"enable_hr": true, "hr_sampler_name": "DPM++ 2M"}"#),
            ["hr_sampler_name"]
        );
        assert_eq!(
            refused(r#"{"enable_hr": true, "hr_prompt": "another"}"#),
            ["hr_prompt"]
        );
        assert_eq!(
            refused(r#"{"enable_hr": true, "denoising_strength": 1.5}"#),
            ["denoising_strength"]
        );
        assert_eq!(
            refused(r#"{"enable_hr": true, "firstphase_width": 256}"#),
            ["firstphase_width"]
        );
        assert_eq!(refused(r#"{"sampler_name": "Heun"}"#), ["sampler_name"]);
        assert_eq!(refused(r#"{"scheduler": "Exponential"}"#), ["scheduler"]);
        assert_eq!(refused(r#"{"init_images": ["abc"]}"#), ["init_images"]);
        assert_eq!(
            refused(r#"{"subseed_strength": 0.5}"#),
            ["subseed_strength"]
        );
        assert_eq!(
            refused(r#"{"alwayson_scripts": {"x": {}}}"#),
            ["alwayson_scripts"]
        );
        assert_eq!(refused(r#"{"script_name": "x/y/z plot"}"#), ["script_name"]);
        assert_eq!(
            refused(r#"{"steps": "many", "width": 30}"#),
            ["steps", "width"]
        );
        assert_eq!(refused(r#"{"seed": -7}"#), ["seed"]);
        assert_eq!(
            refused(r#"{"override_settings": {"CLIP_stop_at_last_layers": 2}}"#),
            ["override_settings.CLIP_stop_at_last_layers"]
        );
        assert!(parse(br#"{"alwayson_scripts": {}, "styles": [], "script_name": ""}"#).is_ok());
    }

    fn refused_img2img(body: &str) -> Vec<String> {
        match parse_as(body.as_bytes(), Mode::Img2Img) {
            Err(A1111Error::Validation(errors)) => errors
                .iter()
                .map(|e| e.loc[1].as_str().unwrap_or_default().to_string())
                .collect(),
            other => panic!("{body}: expected a 422, got {other:?}"),
        }
    }

    #[test]
    fn img2img_fields() {
        use base64::Engine as _;
        let img = image::RgbImage::from_pixel(16, 8, image::Rgb([1, 2, 3]));
        let mut png = std::io::Cursor::new(Vec::new());
        img.write_to(&mut png, image::ImageFormat::Png).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(png.get_ref());
        let r = parse_as(
            format!(r#"{{"init_images": ["{b64}"], "denoising_strength": 0.5, "mask_blur": 4}}"#)
                .as_bytes(),
            Mode::Img2Img,
        )
        .expect("valid");
        let init = r.init.expect("init");
        assert_eq!(
            (init.image.width, init.image.height, init.strength),
            (16, 8, 0.5)
        );
        assert!(r.ignored.is_empty(), "{:?}", r.ignored);
        let r = parse_as(
            format!(r#"{{"init_images": ["{b64}"]}}"#).as_bytes(),
            Mode::Img2Img,
        )
        .expect("valid");
        assert_eq!(r.init.expect("init").strength, DEFAULT_DENOISING_STRENGTH);
        assert_eq!(refused_img2img("{}"), ["init_images"]);
        assert_eq!(
            refused_img2img(r#"{"init_images": ["bm90"]}"#),
            ["init_images"]
        );
        let with = |extra: &str| format!(r#"{{"init_images": ["{b64}"], {extra}}}"#);
        assert_eq!(refused_img2img(&with(r#""mask": "abc""#)), ["mask"]);
        assert_eq!(
            refused_img2img(&with(r#""resize_mode": 1"#)),
            ["resize_mode"]
        );
        assert_eq!(
            refused_img2img(&with(r#""denoising_strength": 0"#)),
            ["denoising_strength"]
        );
        assert_eq!(
            refused_img2img(&format!(r#"{{"init_images": ["{b64}", "{b64}"]}}"#)),
            ["init_images"]
        );
    }

    #[test]
    fn inpainting_fields() {
        use base64::Engine as _;
        let png = |w: u32, h: u32| {
            let img = image::RgbImage::from_fn(w, h, |x, _| {
                image::Rgb(if x < w / 2 { [0; 3] } else { [255; 3] })
            });
            let mut out = std::io::Cursor::new(Vec::new());
            img.write_to(&mut out, image::ImageFormat::Png).unwrap();
            base64::engine::general_purpose::STANDARD.encode(out.get_ref())
        };
        let (img, mask) = (png(16, 8), png(32, 16));
        let with =
            |extra: &str| format!(r#"{{"init_images": ["{img}"], "mask": "{mask}", {extra}}}"#);
        let r = parse_as(
            with(r#""inpainting_fill": 1, "inpaint_full_res": false, "mask_blur": 0, "inpainting_mask_invert": 1"#)
                .as_bytes(),
            Mode::Img2Img,
        )
        .expect("valid");
        assert!(r.ignored.is_empty(), "{:?}", r.ignored);
        let m = r.init.expect("init").mask.expect("mask");
        assert_eq!((m.width, m.height), (32, 16), "the mask's own size");
        assert_eq!((m.data[0], m.data[31]), (255, 0), "inverted, not blurred");
        let r = parse_as(with(r#""inpainting_fill": 1"#).as_bytes(), Mode::Img2Img).expect("valid");
        let m = r.init.expect("init").mask.expect("mask");
        assert!(
            m.data[15] > 0 && m.data[15] < 255,
            "A1111's default blur of 4"
        );
        for (extra, field) in [
            (r#""inpainting_fill": 0"#, "inpainting_fill"),
            (r#""inpainting_fill": 2"#, "inpainting_fill"),
            (r#""inpaint_full_res": true"#, "inpaint_full_res"),
            (r#""mask_round": false"#, "mask_round"),
            (r#""mask_blur": -1"#, "mask_blur"),
        ] {
            assert_eq!(refused_img2img(&with(extra)), [field], "{extra}");
        }
        // Without a mask the inpainting fields have no effect (as in A1111).
        let r = parse_as(
            format!(
                r#"{{"init_images": ["{img}"], "inpainting_fill": 0, "inpaint_full_res": true}}"#
            )
            .as_bytes(),
            Mode::Img2Img,
        )
        .expect("valid");
        assert!(r.init.expect("init").mask.is_none());
    }
}

#[cfg(test)]
mod defaults_tests {
    #[test]
    fn defaults_parse() {
        let d = super::defaults();
        assert_eq!(d["sampler_index"], super::DEFAULT_SAMPLER);
        assert_eq!(d["steps"], 50);
    }
}
