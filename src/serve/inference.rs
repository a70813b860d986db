//! The inference API: `GET /ping`, `POST /predictions/{model}[/{version}]`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::AppState;
use super::registry::ModelEntry;
use super::worker::{Job, SubmitError};
use crate::error::Error;
use crate::pipeline::{DEFAULT_GUIDANCE, GenerateRequest, Generated, VaeTiling};
use crate::schedulers::{Sampler, Spacing};

/// Largest accepted `num_inference_steps`.
pub const MAX_STEPS: usize = 500;
/// Largest accepted width or height.
pub const MAX_SIZE: usize = 2048;
/// Largest accepted `num_images`.
pub const MAX_IMAGES: usize = 16;

pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/ping", get(ping))
        .route("/predictions/{model}", post(predict))
        .route("/predictions/{model}/{version}", post(predict_version))
        .merge(super::protocols::routes())
        .fallback(not_found)
        // The body limit is enforced by `read_body` (413 in TorchServe's shape).
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(
            state.clone(),
            super::auth::require_token,
        ))
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

/// An error reply in TorchServe's shape.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "BadRequestException", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "code": self.status.as_u16(),
            "type": self.kind,
            "message": self.message,
        });
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

/// Echoes the client's `x-request-id`, or makes one.
async fn request_id(req: Request, next: Next) -> Response {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let id = req
        .headers()
        .get("x-request-id")
        .filter(|v| !v.is_empty())
        .cloned()
        .unwrap_or_else(|| {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            let s = format!("{:016x}-{:08x}-{n:08x}", t as u64, std::process::id());
            HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static("wgsd"))
        });
    let mut res = next.run(req).await;
    res.headers_mut().insert("x-request-id", id);
    res
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "ResourceNotFoundException",
        "Requested resource is not found, please refer to API document.",
    )
}

async fn ping(State(state): State<Arc<AppState>>) -> Response {
    let healthy = state.registry.list().iter().all(|m| m.worker.is_alive());
    let (code, status) = if healthy {
        (StatusCode::OK, "Healthy")
    } else {
        (StatusCode::INTERNAL_SERVER_ERROR, "Unhealthy")
    };
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "status": status }).to_string(),
    )
        .into_response()
}

#[derive(Deserialize, Default)]
pub(crate) struct FormatQuery {
    format: Option<String>,
}

async fn predict_version(
    State(state): State<Arc<AppState>>,
    Path((model, _version)): Path<(String, String)>,
    query: Query<FormatQuery>,
    req: Request,
) -> Result<Response, ApiError> {
    predict_inner(state, model, query.0, req).await
}

async fn predict(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
    query: Query<FormatQuery>,
    req: Request,
) -> Result<Response, ApiError> {
    predict_inner(state, model, query.0, req).await
}

/// Sets the worker's cancel flag when the handler future is dropped (client gone).
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

async fn predict_inner(
    state: Arc<AppState>,
    model: String,
    query: FormatQuery,
    req: Request,
) -> Result<Response, ApiError> {
    let entry = find_model(&state, &model)?;
    let result = predict_model(&state, &entry, query, req).await;
    let status = match &result {
        Ok(r) => r.status(),
        Err(e) => e.status,
    };
    state
        .metrics
        .request_done(&entry.name, &entry.version, status.as_u16());
    result
}

/// The registered model, or TorchServe's 404.
pub(crate) fn find_model(state: &AppState, model: &str) -> Result<Arc<ModelEntry>, ApiError> {
    state.registry.get(model).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "ModelNotFoundException",
            format!("Model not found: {model}"),
        )
    })
}

async fn predict_model(
    state: &AppState,
    entry: &ModelEntry,
    query: FormatQuery,
    req: Request,
) -> Result<Response, ApiError> {
    let png = wants_png(req.headers(), &query)?;
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let v = v.trim().to_ascii_lowercase();
            v.starts_with("application/json") || v.contains("+json")
        })
        .unwrap_or(false);
    let multipart = super::multipart::is_multipart(req.headers())
        .then(|| req.headers().get(header::CONTENT_TYPE).cloned())
        .flatten();
    let body = read_body(req, state.config.max_request_size).await?;
    let params = match multipart {
        Some(content_type) => super::multipart::parse(content_type, body).await?,
        None => parse_body(&body, is_json)?,
    };
    let request = params.into_request(&state.config)?;
    if png && request.num_images_per_prompt != 1 {
        return Err(ApiError::bad_request(
            "a PNG reply holds one image; ask for num_images 1 or the JSON reply",
        ));
    }
    let limit = state.config.max_response_size;
    if !png {
        let (w, h, n) = (request.width, request.height, request.num_images_per_prompt);
        super::reply::check_size(super::reply::min_nested_len(w, h, n), limit)?;
    }
    let generated = run_job(state, entry, request).await?;
    if png {
        png_reply(&generated, limit)
    } else {
        super::reply::json(super::reply::nested_parts(generated.images), limit)
    }
}

/// Queues `request` on the model's worker and waits for the images. Dropping the
/// returned future (the client went away) cancels the job between denoising steps.
pub(crate) async fn run_job(
    state: &AppState,
    entry: &ModelEntry,
    mut request: GenerateRequest,
) -> Result<Generated, ApiError> {
    let model = &entry.name;
    if request.vae_tiling == VaeTiling::Auto {
        request.vae_tiling = entry.settings.vae_tiling;
    }
    if state.shutting_down.load(Ordering::SeqCst) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableException",
            "the server is shutting down",
        ));
    }
    let cancel = Arc::new(AtomicBool::new(false));
    let _guard = CancelOnDrop(cancel.clone());
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job = Job {
        request,
        cancel,
        reply: tx,
        enqueued: std::time::Instant::now(),
    };
    entry.worker.submit(job).map_err(|e| match e {
        SubmitError::Full => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableException",
            format!("Model \"{model}\" has no worker to serve inference request. Please use scale workers API to add workers. (job queue full)"),
        ),
        SubmitError::Gone => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableException",
            format!("the worker for model \"{model}\" has stopped"),
        ),
    })?;
    // `responseTimeout`: past it the client gets 504 and the job is cancelled (the
    // guard sets its flag as this returns). 0 means no limit.
    let secs = entry.settings.response_timeout_s;
    let answer = if secs == 0 {
        rx.await
    } else {
        match tokio::time::timeout(std::time::Duration::from_secs(secs), rx).await {
            Ok(a) => a,
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "RequestTimeoutException",
                    format!(
                        "Model \"{model}\" did not answer within its response timeout of {secs} s; the request was cancelled"
                    ),
                ));
            }
        }
    };
    match answer {
        Ok(Ok(g)) => Ok(g),
        Ok(Err(e)) => Err(pipeline_error(e)),
        Err(_) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerException",
            "the worker stopped before answering",
        )),
    }
}

fn pipeline_error(e: Error) -> ApiError {
    match e {
        Error::InvalidInput(m) => ApiError::bad_request(m),
        Error::OutOfMemory(m) => ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "OutOfMemoryException",
            format!("out of GPU memory: {m}"),
        ),
        other => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerException",
            other.to_string(),
        ),
    }
}

fn wants_png(headers: &HeaderMap, query: &FormatQuery) -> Result<bool, ApiError> {
    match query
        .format
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("png") => return Ok(true),
        Some("json") => return Ok(false),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "format={other}: use png or json"
            )));
        }
        None => {}
    }
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .collect::<Vec<_>>();
    Ok(accept.iter().any(|a| a == "image/png") && !accept.iter().any(|a| a == "application/json"))
}

/// Reads the body, refusing it (413) as soon as it passes `limit`: first from
/// `Content-Length`, then while streaming in.
pub(crate) async fn read_body(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLargeException",
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
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|e| {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            let mut length_limit = false;
            while let Some(err) = source {
                length_limit |= err.is::<http_body_util::LengthLimitError>();
                source = err.source();
            }
            if length_limit {
                too_large()
            } else {
                ApiError::bad_request(format!("could not read the request body: {e}"))
            }
        })
}

/// The JSON request form (diffusers' argument names).
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub(crate) struct Params {
    prompt: Option<String>,
    /// TorchServe's `{"data": ...}` (and `body`) wrapping of the prompt.
    data: Option<String>,
    body: Option<String>,
    negative_prompt: Option<String>,
    num_inference_steps: Option<usize>,
    guidance_scale: Option<f32>,
    seed: Option<u64>,
    width: Option<usize>,
    height: Option<usize>,
    scheduler: Option<String>,
    /// Overrides the scheduler config's `timestep_spacing` (leading, trailing, linspace).
    timestep_spacing: Option<String>,
    /// Seamless tiling (circular padding in every convolution).
    tiling: Option<bool>,
    /// wgsd's own: decode in tiles (true) or not (false); absent: the model's setting.
    vae_tiling: Option<bool>,
    num_images: Option<usize>,
    num_images_per_prompt: Option<usize>,
}

/// Body to parameters: JSON (when sent as JSON, or a JSON object with a prompt sent as
/// anything else, as `curl -d '{...}'` does) or the raw prompt text.
pub(crate) fn parse_body(body: &[u8], is_json: bool) -> Result<Params, ApiError> {
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

pub(crate) fn params_from_json(value: serde_json::Value) -> Result<Params, ApiError> {
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

impl Params {
    pub(crate) fn into_request(
        self,
        config: &super::ServeConfig,
    ) -> Result<GenerateRequest, ApiError> {
        let bad = |m: String| Err(ApiError::bad_request(m));
        let prompt = self.prompt.or(self.data).or(self.body).unwrap_or_default();
        if prompt.trim().is_empty() {
            return bad("the prompt is empty".into());
        }
        let steps = self.num_inference_steps.unwrap_or(config.default_steps);
        if !(1..=MAX_STEPS).contains(&steps) {
            return bad(format!(
                "num_inference_steps must be 1..={MAX_STEPS}, got {steps}"
            ));
        }
        let width = self.width.unwrap_or(config.default_width);
        let height = self.height.unwrap_or(config.default_height);
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
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or_default()
        });
        Ok(GenerateRequest {
            prompts: vec![prompt],
            negative_prompts: self.negative_prompt.into_iter().collect(),
            seed,
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
        })
    }
}

fn png_reply(generated: &Generated, limit: usize) -> Result<Response, ApiError> {
    let internal = |m: String| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerException",
            m,
        )
    };
    let img = generated
        .images
        .first()
        .ok_or_else(|| internal("no image".into()))?;
    let rgb = image::RgbImage::from_raw(img.width as u32, img.height as u32, img.data.clone())
        .ok_or_else(|| internal("image buffer has the wrong size".into()))?;
    let mut out = std::io::Cursor::new(Vec::new());
    rgb.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| internal(format!("PNG encoding failed: {e}")))?;
    super::reply::check_size(out.get_ref().len(), limit)?;
    Ok(([(header::CONTENT_TYPE, "image/png")], out.into_inner()).into_response())
}
