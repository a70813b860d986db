//! The body of `POST /v1/images/generations` (OpenAI's fields plus wgsd's extras),
//! checked field by field with OpenAI's 400s naming the `param`.

use serde_json::{Map, Value};

use super::errors::OpenAiError;
use crate::pipeline::DEFAULT_GUIDANCE;
use crate::schedulers::Sampler;
use crate::serve::request::{MAX_IMAGES, MAX_SIZE, MAX_STEPS};

/// OpenAI's request fields wgsd accepts without effect.
const IGNORED: [&str; 8] = [
    "quality",
    "style",
    "user",
    "background",
    "moderation",
    "output_compression",
    "partial_images",
    "stream",
];

/// A checked generations request.
#[derive(Debug)]
pub struct Generation {
    pub model: Option<String>,
    pub prompt: String,
    pub negative_prompt: Option<String>,
    pub n: usize,
    pub size: Option<(usize, usize)>,
    pub seed: Option<u64>,
    pub steps: Option<usize>,
    pub guidance: f32,
    pub scheduler: Option<Sampler>,
}

fn parse_size(s: &str) -> Result<Option<(usize, usize)>, OpenAiError> {
    let t = s.trim().to_ascii_lowercase();
    if t == "auto" {
        return Ok(None);
    }
    let bad = || {
        OpenAiError::invalid(
            "size",
            format!(
                "Invalid size {s:?}: expected \"auto\" or \"WxH\" with sides multiples of 8 up to {MAX_SIZE}"
            ),
        )
    };
    let (w, h) = t.split_once('x').ok_or_else(bad)?;
    let w: usize = w.trim().parse().map_err(|_| bad())?;
    let h: usize = h.trim().parse().map_err(|_| bad())?;
    let ok = |v: usize| v > 0 && v.is_multiple_of(8) && v <= MAX_SIZE;
    if !ok(w) || !ok(h) {
        return Err(bad());
    }
    Ok(Some((w, h)))
}

fn int_field(o: &Map<String, Value>, key: &str) -> Result<Option<i64>, OpenAiError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| OpenAiError::invalid(key, format!("{key} must be an integer, got {v}"))),
    }
}

fn str_field<'a>(o: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, OpenAiError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(OpenAiError::invalid(
            key,
            format!("{key} must be a string, got {v}"),
        )),
    }
}

pub fn parse(bytes: &[u8]) -> Result<Generation, OpenAiError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        OpenAiError::invalid(
            "body",
            format!("We could not parse the JSON body of your request: {e}"),
        )
    })?;
    let Value::Object(o) = value else {
        return Err(OpenAiError::invalid(
            "body",
            "the body must be a JSON object",
        ));
    };
    const KNOWN: [&str; 11] = [
        "prompt",
        "model",
        "n",
        "size",
        "response_format",
        "output_format",
        "seed",
        "steps",
        "negative_prompt",
        "guidance_scale",
        "scheduler",
    ];
    if let Some(k) = o
        .keys()
        .find(|k| !KNOWN.contains(&k.as_str()) && !IGNORED.contains(&k.as_str()))
    {
        return Err(OpenAiError::invalid(
            k,
            format!("Unrecognized request argument supplied: {k}"),
        ));
    }
    if o.get("stream").and_then(Value::as_bool) == Some(true) {
        return Err(OpenAiError::invalid(
            "stream",
            "wgsd does not stream images",
        ));
    }
    let prompt = str_field(&o, "prompt")?.unwrap_or_default();
    if prompt.trim().is_empty() {
        return Err(OpenAiError::invalid("prompt", "You must provide a prompt."));
    }
    match str_field(&o, "response_format")? {
        None | Some("b64_json") => {}
        Some("url") => {
            return Err(OpenAiError::invalid(
                "response_format",
                "wgsd returns images inline only: use response_format \"b64_json\"",
            ));
        }
        Some(f) => {
            return Err(OpenAiError::invalid(
                "response_format",
                format!("Invalid response_format {f:?}: expected \"b64_json\""),
            ));
        }
    }
    if let Some(f) = str_field(&o, "output_format")?
        && !f.eq_ignore_ascii_case("png")
    {
        return Err(OpenAiError::invalid(
            "output_format",
            format!("wgsd writes PNG only, got output_format {f:?}"),
        ));
    }
    let n = int_field(&o, "n")?.unwrap_or(1);
    if !(1..=MAX_IMAGES as i64).contains(&n) {
        return Err(OpenAiError::invalid(
            "n",
            format!("n must be 1..={MAX_IMAGES}, got {n}"),
        ));
    }
    let size = match str_field(&o, "size")? {
        None => None,
        Some(s) => parse_size(s)?,
    };
    let seed = match int_field(&o, "seed")? {
        None | Some(-1) => None,
        Some(s) if s < 0 => {
            return Err(OpenAiError::invalid(
                "seed",
                "seed must be a non-negative integer",
            ));
        }
        Some(s) => Some(s as u64),
    };
    let steps = match int_field(&o, "steps")? {
        None => None,
        Some(s) if (1..=MAX_STEPS as i64).contains(&s) => Some(s as usize),
        Some(s) => {
            return Err(OpenAiError::invalid(
                "steps",
                format!("steps must be 1..={MAX_STEPS}, got {s}"),
            ));
        }
    };
    let guidance = match o.get("guidance_scale") {
        None | Some(Value::Null) => DEFAULT_GUIDANCE,
        Some(v) => v.as_f64().filter(|g| g.is_finite()).ok_or_else(|| {
            OpenAiError::invalid("guidance_scale", "guidance_scale must be a number")
        })? as f32,
    };
    let scheduler = str_field(&o, "scheduler")?
        .map(|s| Sampler::parse(s).map_err(|e| OpenAiError::invalid("scheduler", e.to_string())))
        .transpose()?;
    Ok(Generation {
        model: str_field(&o, "model")?.map(str::to_string),
        prompt: prompt.to_string(),
        negative_prompt: str_field(&o, "negative_prompt")?
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        n: n as usize,
        size,
        seed,
        steps,
        guidance,
        scheduler,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param_of(body: &str) -> Option<String> {
        parse(body.as_bytes()).expect_err(body).param
    }

    #[test]
    fn requests_and_refusals() {
        let g = parse(
            br#"{"prompt": "a cat", "n": 2, "size": "64x32", "seed": 3, "steps": 4,
            "response_format": "b64_json", "quality": "hd"}"#,
        )
        .expect("valid");
        assert_eq!(
            (g.n, g.size, g.seed, g.steps),
            (2, Some((64, 32)), Some(3), Some(4))
        );
        let g = parse(br#"{"prompt": "a", "size": "auto"}"#).expect("auto");
        assert_eq!(g.size, None);
        assert_eq!(param_of(r#"{"prompt": ""}"#).as_deref(), Some("prompt"));
        assert_eq!(
            param_of(r#"{"prompt": "a", "size": "big"}"#).as_deref(),
            Some("size")
        );
        assert_eq!(
            param_of(r#"{"prompt": "a", "size": "30x30"}"#).as_deref(),
            Some("size")
        );
        assert_eq!(param_of(r#"{"prompt": "a", "n": 0}"#).as_deref(), Some("n"));
        assert_eq!(
            param_of(r#"{"prompt": "a", "response_format": "url"}"#).as_deref(),
            Some("response_format")
        );
        assert_eq!(
            param_of(r#"{"prompt": "a", "frobnicate": 1}"#).as_deref(),
            Some("frobnicate")
        );
        assert_eq!(
            param_of(r#"{"prompt": "a", "scheduler": "magic"}"#).as_deref(),
            Some("scheduler")
        );
    }
}
