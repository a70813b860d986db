//! The management API (TorchServe's port 8081): list, describe, register, scale and
//! unregister models, in TorchServe's response shapes so existing scripts keep working.
//!
//! wgsd runs exactly one GPU worker per model. Registering always starts it (the load
//! finishes before the reply); scaling records the asked-for counts and reports them in
//! `minWorkers`/`maxWorkers`, but runs no more (or fewer) threads: `min_worker=0` keeps
//! the model serving, since freeing its GPU memory is what `DELETE` is for.

use std::collections::HashMap;
use std::path::{Component, Path as FsPath, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::error::{ApiError, ErrorKind};
use super::registry::ModelEntry;
use super::{AppState, ModelSettings, auth, download};
use crate::error::Error;

/// The management API's state: the server's, plus the worker counts scripts asked for.
struct Mgmt {
    app: Arc<AppState>,
    /// `PUT /models/{m}?min_worker=&max_worker=`: `(min, max)` as asked.
    scaled: Mutex<HashMap<String, (usize, usize)>>,
}

type Shared = State<Arc<Mgmt>>;
type Params = Query<HashMap<String, String>>;

pub(crate) fn router(state: Arc<AppState>) -> Router {
    let mgmt = Arc::new(Mgmt {
        app: state.clone(),
        scaled: Mutex::new(HashMap::new()),
    });
    Router::new()
        .route("/models", get(list).post(register))
        .route(
            "/models/{model}",
            get(describe).put(scale).delete(unregister),
        )
        .route(
            "/models/{model}/{version}",
            get(describe_version)
                .put(scale_version)
                .delete(unregister_version),
        )
        .route("/", axum::routing::options(api_description))
        .fallback(not_found)
        .with_state(mgmt)
        .layer(middleware::from_fn_with_state(state, auth::require_token))
}

async fn not_found() -> ApiError {
    ApiError::new(
        ErrorKind::ResourceNotFound,
        "Requested resource is not found, please refer to API document.",
    )
}

/// `OPTIONS /`: TorchServe answers with an OpenAPI 3.0.1 description; this one lists
/// the routes and their parameters.
async fn api_description() -> axum::Json<Value> {
    let q = |names: &[&str]| -> Vec<Value> {
        names
            .iter()
            .map(|n| json!({"in": "query", "name": n, "required": false, "schema": {"type": "string"}}))
            .collect()
    };
    let op = |summary: &str, params: Vec<Value>| json!({"summary": summary, "parameters": params});
    axum::Json(json!({
        "openapi": "3.0.1",
        "info": {
            "title": "wgsd management API (TorchServe-compatible)",
            "version": env!("CARGO_PKG_VERSION"),
        },
        "paths": {
            "/models": {
                "get": op("List registered models.", q(&["limit", "next_page_token"])),
                "post": op("Register a model from the model store or an allowed URL.", q(&[
                    "url", "model_name", "initial_workers", "batch_size", "max_batch_delay",
                    "response_timeout", "synchronous",
                ])),
            },
            "/models/{model_name}": {
                "get": op("Describe a model.", vec![]),
                "put": op("Record worker counts (wgsd runs one GPU worker per model).",
                    q(&["min_worker", "max_worker", "synchronous"])),
                "delete": op("Unregister a model.", vec![]),
            },
            "/models/{model_name}/{model_version}": {
                "get": op("Describe a model version (or `all`).", vec![]),
                "put": op("Record worker counts for a version.",
                    q(&["min_worker", "max_worker", "synchronous"])),
                "delete": op("Unregister a model version.", vec![]),
            },
        },
    }))
}

fn status(code: StatusCode, message: impl Into<String>) -> Response {
    (code, axum::Json(json!({ "status": message.into() }))).into_response()
}

/// A query parameter parsed as `T`; 400 naming it when it does not parse.
fn param<T: FromStr>(q: &HashMap<String, String>, name: &str) -> Result<Option<T>, ApiError> {
    match q.get(name).map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            ApiError::bad_request(format!("Invalid value for parameter {name}: {v:?}"))
        }),
    }
}

fn model_not_found(model: &str) -> ApiError {
    ApiError::new(
        ErrorKind::ModelNotFound,
        format!("Model not found: {model}"),
    )
}

/// The model, checking `version` when one is given.
fn find(state: &AppState, model: &str, version: Option<&str>) -> Result<Arc<ModelEntry>, ApiError> {
    let entry = state
        .registry
        .get(model)
        .ok_or_else(|| model_not_found(model))?;
    match version {
        Some(v) if v != entry.version && v != "all" => Err(ApiError::new(
            ErrorKind::ModelVersionNotFound,
            format!("Model version: {v} does not exist for model: {model}"),
        )),
        _ => Ok(entry),
    }
}

/// `GET /models?limit=&next_page_token=`.
async fn list(State(m): Shared, Query(q): Params) -> Result<Response, ApiError> {
    let limit = param::<usize>(&q, "limit")?
        .filter(|n| (1..=100).contains(n))
        .unwrap_or(100);
    let start = param::<usize>(&q, "next_page_token")?.unwrap_or(0);
    let all = m.app.registry.list();
    let models: Vec<Value> = all
        .iter()
        .skip(start)
        .take(limit)
        .map(|e| json!({ "modelName": e.name, "modelUrl": e.url }))
        .collect();
    let mut body = json!({ "models": models });
    if start + limit < all.len() {
        body["nextPageToken"] = json!((start + limit).to_string());
    }
    Ok(axum::Json(body).into_response())
}

async fn describe(State(m): Shared, Path(model): Path<String>) -> Result<Response, ApiError> {
    let entry = find(&m.app, &model, None)?;
    Ok(axum::Json(json!([m.describe(&entry)])).into_response())
}

async fn describe_version(
    State(m): Shared,
    Path((model, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let entry = find(&m.app, &model, Some(&version))?;
    Ok(axum::Json(json!([m.describe(&entry)])).into_response())
}

impl Mgmt {
    /// TorchServe's describe object for one model version.
    fn describe(&self, e: &ModelEntry) -> Value {
        let (min, max) = self.workers(e);
        let metrics = &self.app.metrics;
        let pending = metrics.queue_length(&e.name).max(0) as usize;
        let capacity = self.app.config.queue_size;
        let memory = metrics.gpu_memory_bytes(&e.name);
        let s = &e.settings;
        json!({
            "modelName": e.name,
            "modelVersion": e.version,
            "modelUrl": e.url,
            "runtime": "wgsd",
            "minWorkers": min,
            "maxWorkers": max,
            "batchSize": s.batch_size,
            "maxBatchDelay": s.max_batch_delay_ms,
            "loadedAtStartup": e.loaded_at_startup,
            "workers": [{
                "id": "9000",
                "startTime": iso8601(e.loaded_at),
                "status": if e.worker.is_alive() { "READY" } else { "UNLOADING" },
                "memoryUsage": memory,
                "pid": std::process::id(),
                "gpu": true,
                "gpuUsage": format!("memory.used [MiB]::{}", memory / (1024 * 1024)),
            }],
            "jobQueueStatus": {
                "remainingCapacity": capacity.saturating_sub(pending),
                "pendingRequests": pending,
            },
            "responseTimeout": s.response_timeout_s,
        })
    }

    /// `(minWorkers, maxWorkers)`: as scaled, else as registered.
    fn workers(&self, e: &ModelEntry) -> (usize, usize) {
        self.scaled_map()
            .get(&e.name)
            .copied()
            .unwrap_or((e.settings.min_workers, e.settings.max_workers))
    }

    fn scaled_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, (usize, usize)>> {
        self.scaled.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `POST /models?url=&model_name=&initial_workers=&batch_size=&max_batch_delay=&response_timeout=&synchronous=`.
async fn register(State(m): Shared, Query(q): Params) -> Result<Response, ApiError> {
    let url = q
        .get("url")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("Parameter url is required."))?;
    let initial_workers = param::<usize>(&q, "initial_workers")?;
    let batch_size = param::<usize>(&q, "batch_size")?;
    let max_batch_delay = param::<u64>(&q, "max_batch_delay")?;
    let response_timeout = param::<u64>(&q, "response_timeout")?;
    // wgsd always answers once the model is loaded, so `synchronous` changes nothing;
    // it is still checked so a typo is reported.
    let _ = param::<bool>(&q, "synchronous")?;
    if batch_size == Some(0) {
        return Err(ApiError::bad_request("batch_size must be at least 1"));
    }
    if response_timeout == Some(0) {
        return Err(ApiError::bad_request("response_timeout must be at least 1"));
    }

    let config = &m.app.config;
    // A given name is checked before anything touches the filesystem or the network.
    let given = q
        .get("model_name")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty());
    if let Some(n) = given {
        check_model_name(n)?;
    }
    let archive = resolve_url(&m.app, &url).await?;
    let name = match given {
        Some(n) => n.to_string(),
        None => default_name(&archive),
    };
    check_model_name(&name)?;
    let conflict = || {
        ApiError::new(
            ErrorKind::Conflict,
            format!("Model version 1.0 is already registered for model {name}"),
        )
    };
    if m.app.registry.contains(&name) {
        return Err(conflict());
    }

    let base = config.settings_for(&name);
    let min_workers = initial_workers.unwrap_or(base.min_workers);
    let settings = ModelSettings {
        batch_size: batch_size.unwrap_or(base.batch_size),
        max_batch_delay_ms: max_batch_delay.unwrap_or(base.max_batch_delay_ms),
        response_timeout_s: response_timeout.unwrap_or(base.response_timeout_s),
        min_workers,
        max_workers: base.max_workers.max(min_workers),
        precision: base.precision,
        vae_tiling: base.vae_tiling,
    };
    // The archive as the store names it (`modelUrl`), absolute when outside it.
    let relative = archive
        .strip_prefix(canonical_store(&m.app)?)
        .map(FsPath::to_path_buf)
        .unwrap_or_else(|_| archive.clone());
    let app = m.app.clone();
    let load_name = name.clone();
    let loaded =
        tokio::task::spawn_blocking(move || app.load_model(&load_name, &relative, settings, false))
            .await
            .map_err(|e| internal(format!("the model loader stopped: {e}")))?;
    let entry = match loaded {
        Ok(entry) => entry,
        Err(_) if m.app.registry.contains(&name) => return Err(conflict()),
        Err(Error::OutOfMemory(msg)) => {
            return Err(ApiError::new(
                ErrorKind::OutOfMemory,
                format!("out of GPU memory loading {url}: {msg}"),
            ));
        }
        Err(e) => {
            return Err(ApiError::bad_request(format!(
                "Failed to load model {name} from {url}: {e}"
            )));
        }
    };
    m.scaled_map().remove(&name);
    Ok(status(
        StatusCode::OK,
        format!(
            "Model \"{}\" Version: {} registered with 1 initial workers",
            entry.name, entry.version
        ),
    ))
}

fn internal(message: String) -> ApiError {
    ApiError::new(ErrorKind::Internal, message)
}

/// Longest accepted model name.
pub const MAX_MODEL_NAME: usize = 128;

/// TorchServe's rule for model names: `[A-Za-z0-9][A-Za-z0-9_.-]*`, here also bounded in
/// length (names become URL path segments and metric labels).
pub fn check_model_name(name: &str) -> Result<(), ApiError> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= MAX_MODEL_NAME;
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "Invalid model name: {name:?} (a letter or digit, then letters, digits, '_', '.' \
             or '-', at most {MAX_MODEL_NAME} characters)"
        )))
    }
}

/// TorchServe names a model without `model_name` after its archive (single-file
/// checkpoints likewise, after the file).
fn default_name(archive: &FsPath) -> String {
    let file = archive
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    let lower = file.to_ascii_lowercase();
    let exts = [".mar", ".zip", ".safetensors", ".ckpt", ".pt", ".pth"];
    match exts.iter().find(|ext| lower.ends_with(**ext)) {
        Some(ext) => file[..file.len() - ext.len()].to_string(),
        None => file.to_string(),
    }
}

fn canonical_store(app: &AppState) -> Result<PathBuf, ApiError> {
    app.config.model_store.canonicalize().map_err(|e| {
        internal(format!(
            "the model store {} cannot be read: {e}",
            app.config.model_store.display()
        ))
    })
}

fn forbidden(message: String) -> ApiError {
    ApiError::new(ErrorKind::Forbidden, message)
}

/// Whether `url` matches one of `allowed_urls` as a whole (Java's `matches()`,
/// case-insensitive, as TorchServe checks it).
fn url_allowed(allowed: &[String], url: &str) -> bool {
    allowed.iter().any(|p| {
        regex::RegexBuilder::new(&format!("^(?:{p})$"))
            .case_insensitive(true)
            .build()
            .is_ok_and(|re| re.is_match(url))
    })
}

/// The registration `url` as a canonical path inside the model store: a name in the
/// store, a `file://` URL or absolute path that resolves inside it, or an allowed
/// http(s) URL downloaded into it. Anything else is refused.
async fn resolve_url(app: &Arc<AppState>, url: &str) -> Result<PathBuf, ApiError> {
    let lower = url.to_ascii_lowercase();
    let is_remote = lower.starts_with("http://") || lower.starts_with("https://");
    let is_file_url = lower.starts_with("file://");
    if (is_remote || is_file_url) && !url_allowed(&app.config.allowed_urls, url) {
        return Err(forbidden(format!(
            "Given URL {url} does not match any allowed URL(s)"
        )));
    }
    let store = canonical_store(app)?;
    if is_remote {
        let url = url.to_string();
        let dest_store = store.clone();
        return tokio::task::spawn_blocking(move || download::fetch_into(&url, &dest_store))
            .await
            .map_err(|e| internal(format!("the download stopped: {e}")))?;
    }
    let raw = if is_file_url {
        &url["file://".len()..]
    } else {
        url
    };
    let path = PathBuf::from(raw);
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(ApiError::bad_request(format!(
            "Relative path is not allowed in url: {url}"
        )));
    }
    let candidate = if path.is_absolute() {
        path
    } else {
        store.join(path)
    };
    let real = candidate.canonicalize().map_err(|_| {
        ApiError::new(
            ErrorKind::ModelNotFound,
            format!("Model not found at: {url}"),
        )
    })?;
    // Canonical paths have symlinks resolved: a link out of the store is refused too.
    if !real.starts_with(&store) || real == store {
        return Err(forbidden(format!(
            "{url} is outside the model store {}",
            app.config.model_store.display()
        )));
    }
    Ok(real)
}

/// `PUT /models/{m}?min_worker=&max_worker=&synchronous=`.
async fn scale(
    State(m): Shared,
    Path(model): Path<String>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    scale_inner(&m, &model, None, &q)
}

async fn scale_version(
    State(m): Shared,
    Path((model, version)): Path<(String, String)>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    scale_inner(&m, &model, Some(&version), &q)
}

fn scale_inner(
    m: &Mgmt,
    model: &str,
    version: Option<&str>,
    q: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let entry = find(&m.app, model, version)?;
    let min = param::<usize>(q, "min_worker")?.unwrap_or(1);
    let max = param::<usize>(q, "max_worker")?.unwrap_or(min);
    let synchronous = param::<bool>(q, "synchronous")?.unwrap_or(false);
    if max < min {
        return Err(ApiError::bad_request(format!(
            "max_worker ({max}) cannot be less than min_worker ({min})"
        )));
    }
    m.scaled_map().insert(entry.name.clone(), (min, max));
    if !synchronous {
        return Ok(status(StatusCode::ACCEPTED, "Processing worker updates..."));
    }
    let mut message = match version {
        Some(v) => format!("Workers scaled to {min} for model: {model}, version: {v}"),
        None => format!("Workers scaled to {min} for model: {model}"),
    };
    if min != 1 || max != 1 {
        message.push_str(
            " (wgsd runs one GPU worker per model: the counts are recorded and reported; \
             the model keeps serving)",
        );
    }
    Ok(status(StatusCode::OK, message))
}

/// `DELETE /models/{m}`: new requests get 404 at once; the reply comes once the
/// requests already in flight have finished and the worker has let go of the GPU.
async fn unregister(State(m): Shared, Path(model): Path<String>) -> Result<Response, ApiError> {
    unregister_inner(&m, &model, None).await
}

async fn unregister_version(
    State(m): Shared,
    Path((model, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    unregister_inner(&m, &model, Some(&version)).await
}

async fn unregister_inner(
    m: &Mgmt,
    model: &str,
    version: Option<&str>,
) -> Result<Response, ApiError> {
    find(&m.app, model, version)?;
    let entry = m
        .app
        .registry
        .remove(model)
        .ok_or_else(|| model_not_found(model))?;
    m.scaled_map().remove(model);
    let version = entry.version.clone();
    // Hold the last reference on a blocking thread: dropping it joins the worker.
    tokio::task::spawn_blocking(move || {
        while Arc::strong_count(&entry) > 1 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        drop(entry);
    })
    .await
    .map_err(|e| internal(format!("unloading stopped: {e}")))?;
    m.app.metrics.model_removed(model, &version);
    Ok(status(
        StatusCode::OK,
        format!("Model \"{model}\" unregistered"),
    ))
}

/// `2018-10-02T13:44:53.034Z`, as TorchServe writes a worker's `startTime`.
fn iso8601(t: SystemTime) -> String {
    let u = super::clock::utc(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        u.year, u.month, u.day, u.hour, u.minute, u.second, u.millis
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_matches_known_dates() {
        let t = |s: u64, ms: u64| {
            SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(s * 1000 + ms)
        };
        assert_eq!(iso8601(t(0, 0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(t(1_538_487_893, 34)), "2018-10-02T13:44:53.034Z");
        assert_eq!(iso8601(t(951_782_400, 0)), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn allowed_urls_match_whole_url_case_insensitively() {
        let allowed = vec![r"http://127\.0\.0\.1:\d+/ok/.*".to_string()];
        assert!(url_allowed(&allowed, "http://127.0.0.1:80/ok/a.mar"));
        assert!(url_allowed(&allowed, "HTTP://127.0.0.1:80/ok/a.mar"));
        assert!(!url_allowed(&allowed, "http://127.0.0.1:80/no/a.mar"));
        assert!(!url_allowed(&allowed, "xhttp://127.0.0.1:80/ok/a.mar"));
    }

    #[test]
    fn default_name_strips_archive_extension() {
        assert_eq!(default_name(FsPath::new("/s/sd2-tiny.mar")), "sd2-tiny");
        assert_eq!(default_name(FsPath::new("/s/model.ZIP")), "model");
        assert_eq!(default_name(FsPath::new("/s/folder")), "folder");
    }
}
