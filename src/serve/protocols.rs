//! KServe v1 and the Open Inference Protocol (OIP, KServe v2) on the inference API, as
//! TorchServe serves them with `service_envelope=kserve` / `kservev2`.
//!
//! - KServe v1 (the KServe "Data Plane (V1)" spec): `GET /v1/models`,
//!   `GET /v1/models/{m}` (`{"name", "ready"}`), `POST /v1/models/{m}:predict` with
//!   `{"instances": [...]}` (or `"inputs"`) where each instance is a prompt string,
//!   `{"data": "..."}` or the JSON parameters of `/predictions`; one generation per
//!   instance, `{"predictions": [image, ...]}`, each image `np.array(image).tolist()`.
//! - OIP (the Open Inference Protocol HTTP/REST spec): `GET /v2`, `/v2/health/live`,
//!   `/v2/health/ready`, `GET /v2/models/{m}[/versions/{v}]` (metadata),
//!   `.../ready`, `POST .../infer` with a BYTES input whose `data` is a prompt or a list
//!   of prompts (one batched generation), request `parameters` taking the JSON
//!   parameter names; the reply's `image` output is a UINT8 tensor `[H, W, 3]` for one
//!   image from a scalar prompt, else `[N, H, W, 3]`, its `data` flat in row-major order.
//!
//! Errors in both follow the specs' error object `{"error": "message"}` with the same
//! HTTP statuses as the TorchServe API (400 bad input, 404 unknown model, 413 request
//! over `max_request_size`, 503 queue full, 500 reply over `max_response_size`, 507 out of
//! GPU memory). Parameters are checked by the same code as `/predictions`
//! ([`Params::into_request`]), and jobs go through the same queue ([`run_job`]).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::AppState;
use super::error::{ApiError, ErrorKind};
use super::oip;
use super::oip_binary::{self, InferRequest};
use super::queue::{find_model, run_job};
use super::registry::ModelEntry;
use super::reply::{self, Part};
use super::request::{MAX_IMAGES, Params, params_from_json, read_body};
use crate::pipeline::Image;

/// The routes, merged into the inference router (which adds its state and layers).
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/models/{model}", get(v1_ready).post(v1_verb))
        .route("/v2", get(v2_server))
        .route("/v2/health/live", get(v2_live))
        .route("/v2/health/ready", get(v2_ready))
        .route("/v2/models/{model}", get(v2_metadata))
        .route("/v2/models/{model}/versions/{version}", get(v2_metadata_v))
        .route("/v2/models/{model}/ready", get(v2_model_ready))
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(v2_model_ready_v),
        )
        .route("/v2/models/{model}/infer", post(v2_infer))
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(v2_infer_v),
        )
}

/// An error in the KServe/OIP shape `{"error": "..."}`.
struct ProtoError(ApiError);

impl From<ApiError> for ProtoError {
    fn from(e: ApiError) -> Self {
        ProtoError(e)
    }
}

impl IntoResponse for ProtoError {
    fn into_response(self) -> Response {
        self.0.into_kserve_response()
    }
}

fn json_value(status: StatusCode, v: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn bad(m: impl Into<String>) -> ProtoError {
    ProtoError(ApiError::bad_request(m))
}

fn not_found(m: impl Into<String>) -> ProtoError {
    ProtoError(ApiError::new(ErrorKind::ModelNotFound, m))
}

/// Parses a JSON body read under `max_request_size`.
async fn json_body(state: &AppState, req: Request) -> Result<Value, ProtoError> {
    let body = read_body(req, state.config.max_request_size).await?;
    serde_json::from_slice(&body).map_err(|e| bad(format!("the JSON body does not parse: {e}")))
}

/// The model, checking the version when the path names one.
fn model_version(
    state: &AppState,
    model: &str,
    version: Option<&str>,
) -> Result<Arc<ModelEntry>, ProtoError> {
    let entry = find_model(state, model)?;
    match version {
        Some(v) if v != entry.version => Err(not_found(format!(
            "Model {model} has no version {v} (it has {})",
            entry.version
        ))),
        _ => Ok(entry),
    }
}

/// Records the request in the metrics like `/predictions` does.
fn record(state: &AppState, entry: &ModelEntry, result: Result<Response, ProtoError>) -> Response {
    let response = result.into_response();
    state
        .metrics
        .request_done(&entry.name, &entry.version, response.status().as_u16());
    response
}

// ---- KServe v1 ----

/// KServe v1's model list (`GET /v1/models`, composed with OpenAI's list in `mod.rs`).
pub(crate) fn v1_list_json(state: &AppState) -> Value {
    let names: Vec<String> = state
        .registry
        .list()
        .iter()
        .map(|m| m.name.clone())
        .collect();
    json!({ "models": names })
}

async fn v1_ready(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
) -> Result<Response, ProtoError> {
    let entry = find_model(&state, &model)?;
    Ok(json_value(
        StatusCode::OK,
        json!({ "name": entry.name, "ready": entry.worker.is_alive() }),
    ))
}

/// `POST /v1/models/{m}:predict` (the router sees `m:predict` as one segment).
async fn v1_verb(
    State(state): State<Arc<AppState>>,
    Path(model_verb): Path<String>,
    req: Request,
) -> Result<Response, ProtoError> {
    let Some((model, verb)) = model_verb.rsplit_once(':') else {
        return Err(ProtoError(ApiError::new(
            ErrorKind::MethodNotAllowed,
            "POST needs a verb: /v1/models/{model}:predict",
        )));
    };
    if verb != "predict" {
        return Err(ProtoError(ApiError::new(
            ErrorKind::NotImplemented,
            format!("\"{verb}\" is not supported; use :predict"),
        )));
    }
    let entry = find_model(&state, model)?;
    let result = v1_predict(&state, &entry, req).await;
    Ok(record(&state, &entry, result))
}

/// One instance to parameters: a prompt string, or an object as `/predictions` takes.
fn v1_instance(instance: Value) -> Result<Params, ProtoError> {
    match instance {
        Value::String(_) | Value::Object(_) => params_from_json(instance).map_err(ProtoError),
        other => Err(bad(format!(
            "an instance must be a prompt string or an object with \"data\" or \"prompt\", got {other}"
        ))),
    }
}

async fn v1_predict(
    state: &AppState,
    entry: &ModelEntry,
    req: Request,
) -> Result<Response, ProtoError> {
    let mut body = json_body(state, req).await?;
    let key = if body.get("instances").is_some() {
        "instances"
    } else {
        "inputs"
    };
    let instances = match body.get_mut(key).map(Value::take) {
        Some(Value::Array(items)) => items,
        Some(_) => return Err(bad("\"instances\" must be a list")),
        None => return Err(bad("expected {\"instances\": [...]}")),
    };
    if instances.is_empty() || instances.len() > MAX_IMAGES {
        return Err(bad(format!(
            "\"instances\" must hold 1..={MAX_IMAGES} items, got {}",
            instances.len()
        )));
    }
    let mut requests = Vec::with_capacity(instances.len());
    for instance in instances {
        requests.push(v1_instance(instance)?.into_request(&state.defaults(entry))?);
    }
    let images: usize = requests.iter().map(|r| r.num_images_per_prompt).sum();
    if images > MAX_IMAGES {
        return Err(bad(format!(
            "{images} images asked for across the instances; at most {MAX_IMAGES}"
        )));
    }
    let limit = state.config.max_response_size;
    let floor: usize = requests
        .iter()
        .map(|r| reply::min_nested_len(r.width, r.height, r.num_images_per_prompt))
        .sum();
    reply::check_size(floor, limit)?;
    // All queued at once, so a batching worker can run them together; the first error
    // drops (and so cancels) the rest.
    let jobs = requests.into_iter().map(|r| run_job(state, entry, r, None));
    let done = futures_util::future::try_join_all(jobs).await?;
    let mut parts = vec![Part::Text("{\"predictions\":[".into())];
    for (i, generated) in done.into_iter().enumerate() {
        if i > 0 {
            parts.push(Part::Text(",".into()));
        }
        parts.extend(reply::nested_parts(generated.images));
    }
    parts.push(Part::Text("]}".into()));
    Ok(reply::json(parts, limit)?)
}

// ---- Open Inference Protocol (v2) ----

async fn v2_server() -> Response {
    json_value(
        StatusCode::OK,
        json!({ "name": "wgsd", "version": env!("CARGO_PKG_VERSION"), "extensions": oip::EXTENSIONS }),
    )
}

async fn v2_live() -> Response {
    json_value(StatusCode::OK, json!({ "live": true }))
}

/// 200 when every model's worker runs; else 503 (the OIP spec leaves the failure code
/// open; 503 is what readiness probes and KServe's server use).
async fn v2_ready(State(state): State<Arc<AppState>>) -> Response {
    let ready = state.registry.list().iter().all(|m| m.worker.is_alive());
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_value(status, json!({ "ready": ready }))
}

fn model_ready(
    state: &AppState,
    model: &str,
    version: Option<&str>,
) -> Result<Response, ProtoError> {
    let entry = model_version(state, model, version)?;
    let ready = entry.worker.is_alive();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok(json_value(
        status,
        json!({ "name": entry.name, "ready": ready }),
    ))
}

async fn v2_model_ready(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
) -> Result<Response, ProtoError> {
    model_ready(&state, &model, None)
}

async fn v2_model_ready_v(
    State(state): State<Arc<AppState>>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Response, ProtoError> {
    model_ready(&state, &model, Some(&version))
}

fn tensors_json(tensors: &[(&str, &str, &[i64])]) -> Value {
    tensors
        .iter()
        .map(
            |(name, datatype, shape)| json!({ "name": name, "datatype": datatype, "shape": shape }),
        )
        .collect()
}

fn metadata(state: &AppState, model: &str, version: Option<&str>) -> Result<Response, ProtoError> {
    let entry = model_version(state, model, version)?;
    Ok(json_value(
        StatusCode::OK,
        json!({
            "name": entry.name,
            "versions": [entry.version],
            "platform": oip::PLATFORM,
            "inputs": tensors_json(&oip::INPUTS),
            "outputs": tensors_json(&oip::OUTPUTS),
        }),
    ))
}

async fn v2_metadata(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
) -> Result<Response, ProtoError> {
    metadata(&state, &model, None)
}

async fn v2_metadata_v(
    State(state): State<Arc<AppState>>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Response, ProtoError> {
    metadata(&state, &model, Some(&version))
}

async fn v2_infer(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
    req: Request,
) -> Result<Response, ProtoError> {
    let entry = model_version(&state, &model, None)?;
    let result = v2_infer_model(&state, &entry, req).await;
    Ok(record(&state, &entry, result))
}

async fn v2_infer_v(
    State(state): State<Arc<AppState>>,
    Path((model, version)): Path<(String, String)>,
    req: Request,
) -> Result<Response, ProtoError> {
    let entry = model_version(&state, &model, Some(&version))?;
    let result = v2_infer_model(&state, &entry, req).await;
    Ok(record(&state, &entry, result))
}

async fn v2_infer_model(
    state: &AppState,
    entry: &ModelEntry,
    req: Request,
) -> Result<Response, ProtoError> {
    let header_id = request_id(req.headers());
    let headers = req.headers().clone();
    let body = read_body(req, state.config.max_request_size).await?;
    let InferRequest {
        head: body,
        request,
        one,
        binary,
    } = oip_binary::parse_request(&headers, body, &state.defaults(entry))?;
    let limit = state.config.max_response_size;
    let bytes = oip::image_bytes(&request);
    // Binary: the raw bytes; JSON: the flat data is at least 2 bytes a value.
    let floor = if binary {
        bytes
    } else {
        bytes.saturating_mul(2).saturating_sub(1)
    };
    reply::check_size(floor, limit)?;
    let generated = run_job(state, entry, request, header_id.as_deref()).await?;
    let images: Vec<Image> = generated.images;
    let shape = oip::image_shape(&images, one);
    let id = match body.get("id") {
        Some(Value::String(s)) => Some(s.clone()),
        _ => header_id,
    };
    let mut head = Map::new();
    head.insert("model_name".into(), json!(entry.name));
    head.insert("model_version".into(), json!(entry.version));
    if let Some(id) = id {
        head.insert("id".into(), json!(id));
    }
    if binary {
        return Ok(oip_binary::reply(head, &shape, images, limit)?);
    }
    // `{"model_name":...,"id":...,` then the outputs, whose data is streamed.
    let mut text = Value::Object(head).to_string();
    text.pop();
    text.push_str(&format!(
        ",\"outputs\":[{{\"name\":\"{}\",\"shape\":{},\"datatype\":\"UINT8\",\"data\":[",
        oip::IMAGE_OUTPUT,
        json!(shape)
    ));
    let mut parts = vec![Part::Text(text)];
    for (i, image) in images.into_iter().enumerate() {
        parts.push(Part::Flat {
            image,
            comma: i > 0,
        });
    }
    parts.push(Part::Text("]}]}".into()));
    Ok(reply::json(parts, limit)?)
}

fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}
