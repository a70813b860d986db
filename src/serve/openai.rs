//! OpenAI's images API (`POST /v1/images/generations`, platform.openai.com/docs/api-reference/images/create)
//! and its model list, so OpenAI clients (the `openai` package with `base_url` pointing
//! here, LibreChat, Open WebUI) generate with wgsd.
//!
//! `model` is a registered model name (default: the first); `size` is `WxH` or `auto`
//! (the server's default size); `n` images get seeds `seed, seed + 1, ...`. Beyond
//! OpenAI's fields, `seed`, `steps`, `negative_prompt`, `guidance_scale` and `scheduler`
//! are read. Images come back inline (`b64_json`, PNG with A1111's `parameters` chunk);
//! `response_format: "url"` is refused. Errors have OpenAI's shape
//! `{"error": {"message", "type", "param", "code"}}`. Auth is the server's bearer token,
//! which is how OpenAI clients send their API key.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use serde_json::{Map, Value, json};

use super::AppState;
use super::error::ApiError;
use super::outputs::gen_params;
use super::queue::{CancelOnDrop, run_group};
use super::registry::ModelEntry;
use super::request::{MAX_IMAGES, MAX_SIZE, MAX_STEPS, random_seed, read_body};
use crate::pipeline::{DEFAULT_GUIDANCE, GenerateRequest};
use crate::png_info;
use crate::schedulers::Sampler;

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

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/v1/images/generations", post(generations))
}

/// OpenAI's model list (`GET /v1/models`): every registered model.
pub fn models_json(state: &AppState) -> Value {
    let data: Vec<Value> = state
        .registry
        .list()
        .iter()
        .map(|m| {
            json!({
                "id": m.name,
                "object": "model",
                "created": unix(m.loaded_at),
                "owned_by": "wgsd",
            })
        })
        .collect();
    json!({ "object": "list", "data": data })
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// An error reply in OpenAI's shape.
#[derive(Debug)]
pub struct OpenAiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl OpenAiError {
    fn invalid(param: &str, message: impl Into<String>) -> OpenAiError {
        OpenAiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param.to_string()),
            code: None,
        }
    }
}

impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> Self {
        let status = e.status();
        let (kind, code) = match status.as_u16() {
            404 => ("invalid_request_error", Some("model_not_found")),
            413 => ("invalid_request_error", Some("request_too_large")),
            400..=499 => ("invalid_request_error", None),
            503 => ("server_error", Some("server_busy")),
            504 => ("server_error", Some("timeout")),
            _ => ("server_error", None),
        };
        OpenAiError {
            status,
            message: e.message,
            kind,
            param: None,
            code,
        }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        });
        let mut res = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        res
    }
}

/// A checked generations request.
#[derive(Debug)]
struct Generation {
    model: Option<String>,
    prompt: String,
    negative_prompt: Option<String>,
    n: usize,
    size: Option<(usize, usize)>,
    seed: Option<u64>,
    steps: Option<usize>,
    guidance: f32,
    scheduler: Option<Sampler>,
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

fn parse(bytes: &[u8]) -> Result<Generation, OpenAiError> {
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

fn find(state: &AppState, model: Option<&str>) -> Result<Arc<ModelEntry>, OpenAiError> {
    let found = match model {
        Some(m) => state.registry.get(m),
        None => state.registry.list().into_iter().next(),
    };
    found.ok_or_else(|| OpenAiError {
        status: StatusCode::NOT_FOUND,
        message: format!(
            "The model `{}` does not exist; GET /v1/models lists the models",
            model.unwrap_or_default()
        ),
        kind: "invalid_request_error",
        param: Some("model".into()),
        code: Some("model_not_found"),
    })
}

async fn generations(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Response, OpenAiError> {
    let bytes = read_body(req, state.config.max_request_size).await?;
    let g = parse(&bytes)?;
    let entry = find(&state, g.model.as_deref())?;
    let result = generate(&state, &entry, g).await;
    let status = result
        .as_ref()
        .map_or_else(|e| e.status, |_| StatusCode::OK);
    state
        .metrics
        .request_done(&entry.name, &entry.version, status.as_u16());
    result
}

async fn generate(
    state: &Arc<AppState>,
    entry: &Arc<ModelEntry>,
    g: Generation,
) -> Result<Response, OpenAiError> {
    let d = state.defaults(entry);
    let (width, height) = g.size.unwrap_or((d.width, d.height));
    let seed = g.seed.unwrap_or_else(random_seed);
    let requests: Vec<GenerateRequest> = (0..g.n as u64)
        .map(|i| GenerateRequest {
            prompts: vec![g.prompt.clone()],
            negative_prompts: g.negative_prompt.clone().into_iter().collect(),
            seed: seed.wrapping_add(i),
            steps: g.steps.unwrap_or(d.steps),
            guidance: g.guidance,
            width,
            height,
            scheduler: g.scheduler,
            ..GenerateRequest::default()
        })
        .collect();
    let cancel = Arc::new(AtomicBool::new(false));
    let _guard = CancelOnDrop(cancel.clone());
    let generated = run_group(state, entry, requests.clone(), cancel, None).await?;
    let (state2, entry2) = (state.clone(), entry.clone());
    let body = tokio::task::spawn_blocking(move || -> Result<String, ApiError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut data = Vec::new();
        for (r, gen_) in requests.iter().zip(&generated) {
            let text = png_info::format(&gen_params(&entry2, r, gen_));
            for img in &gen_.images {
                let png = png_info::encode_png(img.width, img.height, &img.data, &text)
                    .map_err(|e| ApiError::internal(format!("encoding a PNG: {e}")))?;
                data.push(json!({ "b64_json": b64.encode(png) }));
            }
        }
        let body = json!({ "created": unix(SystemTime::now()), "data": data }).to_string();
        if body.len() > state2.config.max_response_size {
            return Err(ApiError::new(
                super::ErrorKind::ResponseTooLarge,
                format!(
                    "the reply ({} bytes) is larger than max_response_size ({} bytes); ask for fewer or smaller images",
                    body.len(),
                    state2.config.max_response_size
                ),
            ));
        }
        Ok(body)
    })
    .await
    .map_err(|e| ApiError::internal(format!("building the reply: {e}")))??;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
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

    #[test]
    fn error_shape() {
        let res = OpenAiError::invalid("size", "bad").into_response();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        let e = OpenAiError::from(ApiError::new(
            super::super::ErrorKind::ServiceUnavailable,
            "full",
        ));
        assert_eq!(
            (e.status.as_u16(), e.kind, e.code),
            (503, "server_error", Some("server_busy"))
        );
    }
}
