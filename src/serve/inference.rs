//! The TorchServe inference API: `GET /ping`, `POST /predictions/{model}[/{version}]`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::AppState;
use super::error::{ApiError, ErrorKind};
use super::queue::{find_model, run_job};
use super::registry::ModelEntry;
use super::request::{parse_body, read_body};
use crate::pipeline::{GenerateRequest, Generated};

/// The routes, merged into the inference router (which adds its state and layers).
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/ping", get(ping))
        .route("/predictions/{model}", post(predict))
        .route("/predictions/{model}/{version}", post(predict_version))
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
    Path((model, version)): Path<(String, String)>,
    query: Query<FormatQuery>,
    req: Request,
) -> Result<Response, ApiError> {
    // TorchServe answers 404 for a version that is not registered.
    let entry = find_model(&state, &model)?;
    if entry.version != version {
        return Err(ApiError::new(
            ErrorKind::ModelNotFound,
            format!(
                "Model version {version} not found for model {model} (registered: {})",
                entry.version
            ),
        ));
    }
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
        Err(e) => e.status(),
    };
    state
        .metrics
        .request_done(&entry.name, &entry.version, status.as_u16());
    result
}

async fn predict_model(
    state: &AppState,
    entry: &ModelEntry,
    query: FormatQuery,
    req: Request,
) -> Result<Response, ApiError> {
    let png = wants_png(req.headers(), &query)?;
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
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
    let request = params.into_request(&state.defaults(entry))?;
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
    let generated = run_job(state, entry, request.clone(), request_id.as_deref()).await?;
    if png {
        png_reply(entry, &request, &generated, limit)
    } else {
        super::reply::json(super::reply::nested_parts(generated.images), limit)
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

/// The first image as a PNG carrying its A1111 `parameters` chunk.
fn png_reply(
    entry: &ModelEntry,
    request: &GenerateRequest,
    generated: &Generated,
    limit: usize,
) -> Result<Response, ApiError> {
    let img = generated
        .images
        .first()
        .ok_or_else(|| ApiError::internal("no image"))?;
    let text = crate::png_info::format(&super::outputs::gen_params(entry, request, generated));
    let png = crate::png_info::encode_png(img.width, img.height, &img.data, &text)
        .map_err(|e| ApiError::internal(format!("PNG encoding failed: {e}")))?;
    super::reply::check_size(png.len(), limit)?;
    Ok(([(header::CONTENT_TYPE, "image/png")], png).into_response())
}
