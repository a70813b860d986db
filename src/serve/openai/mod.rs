//! OpenAI's images API (`POST /v1/images/generations`, as documented at
//! platform.openai.com/docs/api-reference/images/create) and its model list, so OpenAI clients (the `openai` package with `base_url` pointing
//! here, LibreChat, Open WebUI) generate with wgsd.
//!
//! `model` is a registered model name (default: the first); `size` is `WxH` or `auto`
//! (the server's default size); `n` images get seeds `seed, seed + 1, ...`. Beyond
//! OpenAI's fields, `seed`, `steps`, `negative_prompt`, `guidance_scale` and `scheduler`
//! are read. Images come back inline (`b64_json`, PNG with A1111's `parameters` chunk);
//! `response_format: "url"` is refused. Errors have OpenAI's shape
//! `{"error": {"message", "type", "param", "code"}}`. Auth is the server's bearer token,
//! which is how OpenAI clients send their API key.

mod errors;
pub mod params;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use serde_json::{Value, json};

pub use errors::OpenAiError;
use params::{Generation, parse};

use super::AppState;
use super::error::ApiError;
use super::outputs::gen_params;
use super::queue::{CancelOnDrop, run_group};
use super::registry::ModelEntry;
use super::request::{random_seed, read_body};
use crate::pipeline::GenerateRequest;
use crate::png_info;

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
