//! `wgsd serve`: an HTTP server that answers like the TorchServe Stable Diffusion
//! deployment it replaces: the inference API (`/ping`, `/predictions/{model}`, KServe
//! and Open Inference Protocol routes), the management API and Prometheus metrics, on
//! three addresses as TorchServe has them.
//!
//! The inference address also serves the studio (`wgsd studio`'s page and its jobs API,
//! [`studio_api`], [`page`]), AUTOMATIC1111's API (`/sdapi/v1`, [`a1111`]) and OpenAI's
//! images API ([`openai`]).
//!
//! The HTTP side runs on a tokio runtime (axum); each model has one GPU worker thread
//! (see [`worker`]) fed through a bounded queue ([`queue`]); [`registry`] maps names to
//! workers.
//!
//! The Open Inference Protocol's gRPC service ([`grpc`]) listens on a fourth address
//! when one is configured (KServe's `--grpc_port`).
//!
//! All the listeners run [`listen`]'s accept loop (header, idle and body timeouts, a
//! connection cap, TLS); request bodies may come gzip- or deflate-encoded
//! ([`content_encoding`], undone by `request::read_body`).
//!
//! Imports go one way: the route modules (inference, protocols, grpc, studio_api, a1111,
//! openai, page, management, metrics) use the shared ones (error, request, queue, reply,
//! oip, oip_binary, jobs, outputs, registry, worker), never each other; this file
//! composes the routers.

pub mod a1111;
pub mod auth;
mod clock;
pub mod config;
mod content_encoding;
pub mod download;
pub mod error;
mod grpc;
pub mod hires;
mod inference;
pub mod jobs;
mod listen;
pub mod loras;
pub mod management;
pub mod metrics;
pub mod multipart;
mod oip;
mod oip_binary;
pub mod openai;
pub mod outputs;
mod page;
mod protocols;
pub mod queue;
pub mod registry;
mod reply;
pub mod request;
mod studio_api;
pub mod ts_config;
pub mod worker;

pub use config::{
    ConnectionLimits, DEFAULT_ALLOWED_URLS, DEFAULT_MAX_REQUEST_SIZE, DEFAULT_MAX_RESPONSE_SIZE,
    DEFAULT_OUTPUTS_DIR, DEFAULT_QUEUE_SIZE, ServeConfig, WarmupSize, expand_models,
    parse_model_spec,
};
pub use error::{ApiError, ErrorKind};
pub use metrics::Metrics;
pub use oip_binary::{InferRequest, parse_request as parse_oip_infer_request};
pub use registry::{ModelEntry, ModelSettings, Registry};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;

use crate::error::{Error, Result};

/// What the request handlers of all three APIs share.
pub struct AppState {
    pub registry: Registry,
    pub config: ServeConfig,
    pub metrics: Arc<Metrics>,
    /// Set on shutdown: new predictions get 503 while in-flight ones finish.
    pub shutting_down: AtomicBool,
    /// The studio's jobs (running, and the last finished ones).
    pub jobs: jobs::JobRegistry,
    /// Where finished jobs write their images.
    pub outputs: outputs::Outputs,
    /// AUTOMATIC1111's options and its running `txt2img` calls.
    pub a1111: a1111::A1111State,
}

impl AppState {
    /// What requests to `entry` that do not say get.
    pub fn defaults(&self, entry: &ModelEntry) -> request::Defaults {
        self.config.defaults(entry.worker.info.native_size)
    }

    /// Starts a worker for `archive` (loads the model on the GPU; blocking) and adds it
    /// to the registry under `name`.
    pub fn load_model(
        &self,
        name: &str,
        archive: &Path,
        settings: ModelSettings,
        loaded_at_startup: bool,
    ) -> Result<Arc<ModelEntry>> {
        if self.registry.contains(name) {
            return Err(Error::InvalidInput(format!(
                "model {name:?} is already registered"
            )));
        }
        let path = self.config.archive_path(archive);
        // TorchServe reports the `.mar` manifest's version; "1.0" is its default.
        let version = crate::loader::manifest_version(&path).unwrap_or_else(|| "1.0".to_string());
        let worker = worker::Worker::spawn(worker::WorkerConfig {
            name: name.to_string(),
            version: version.clone(),
            archive: path.clone(),
            adapter: self.config.adapter.clone(),
            pipeline: self.config.pipeline.clone(),
            queue_size: self.config.queue_size,
            settings,
            metrics: self.metrics.clone(),
            memory_limit: self.config.gpu_memory_limit,
            warmup: self.config.warmup,
            default_size: (self.config.default_width, self.config.default_height),
            panic_on_prompt: self.config.panic_on_prompt.clone(),
        })?;
        self.metrics.model_added(name, &version);
        let entry = ModelEntry {
            name: name.to_string(),
            version,
            url: archive.display().to_string(),
            archive: path,
            settings,
            loaded_at_startup,
            loaded_at: std::time::SystemTime::now(),
            worker,
        };
        self.registry
            .insert(entry)
            .map_err(|e| Error::InvalidInput(format!("model {:?} is already registered", e.name)))
    }
}

/// A running server: its bound addresses, and a way to stop it.
pub struct Server {
    addrs: BoundAddrs,
    state: Arc<AppState>,
    shutdown: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

/// Where the APIs listen (the real ports when 0 was asked for).
#[derive(Debug, Clone, Copy)]
pub struct BoundAddrs {
    pub inference: SocketAddr,
    pub management: SocketAddr,
    pub metrics: SocketAddr,
    /// The gRPC service, when configured.
    pub grpc: Option<SocketAddr>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addrs", &self.addrs)
            .finish()
    }
}

impl Server {
    /// The address the inference API listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addrs.inference
    }

    /// All three addresses.
    pub fn addrs(&self) -> BoundAddrs {
        self.addrs
    }

    /// The server's metrics (tests read UNet pass counts from here).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.state.metrics.clone()
    }

    /// A handle that starts a graceful shutdown from another thread (signal handlers).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            tx: self.shutdown.clone(),
            state: self.state.clone(),
        }
    }

    /// Refuses new predictions, finishes the in-flight ones and the open connections,
    /// then stops the workers.
    pub fn shutdown(mut self) -> Result<()> {
        self.shutdown_handle().trigger();
        self.join()
    }

    /// Blocks until the server stops (after [`ShutdownHandle::trigger`]).
    pub fn wait(mut self) -> Result<()> {
        self.join()
    }

    fn join(&mut self) -> Result<()> {
        let joined = self.thread.take().map(|t| t.join());
        // The workers finish their queued jobs and stop as the registry lets go.
        self.state.registry.clear();
        match joined {
            Some(Ok(Ok(()))) | None => Ok(()),
            Some(Ok(Err(e))) => Err(Error::Io {
                path: PathBuf::from("<server>"),
                source: e,
            }),
            Some(Err(_)) => Err(Error::Gpu("the server thread panicked".into())),
        }
    }
}

/// `/a/b/` -> `/a/b` (the root `/` stays), keeping the query.
async fn trim_trailing_slash(mut req: axum::extract::Request) -> axum::extract::Request {
    let uri = req.uri();
    let path = uri.path();
    if path.len() > 1 && path.ends_with('/') {
        let trimmed = path.trim_end_matches('/');
        let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
        let new = match uri.query() {
            Some(q) => format!("{trimmed}?{q}"),
            None => trimmed.to_string(),
        };
        if let Ok(pq) = new.parse::<axum::http::uri::PathAndQuery>() {
            let mut parts = uri.clone().into_parts();
            parts.path_and_query = Some(pq);
            if let Ok(u) = axum::http::Uri::from_parts(parts) {
                *req.uri_mut() = u;
            }
        }
    }
    req
}

/// Starts a graceful shutdown of a [`Server`].
#[derive(Clone)]
pub struct ShutdownHandle {
    tx: Option<tokio::sync::watch::Sender<bool>>,
    state: Arc<AppState>,
}

impl ShutdownHandle {
    pub fn trigger(&self) {
        self.state.shutting_down.store(true, Ordering::SeqCst);
        if let Some(tx) = &self.tx {
            let _ = tx.send(true);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown_handle().trigger();
        let _ = self.join();
    }
}

fn bind(addr: SocketAddr) -> Result<std::net::TcpListener> {
    let io_err = |e: std::io::Error| Error::Io {
        path: PathBuf::from(addr.to_string()),
        source: e,
    };
    let listener = std::net::TcpListener::bind(addr).map_err(io_err)?;
    listener.set_nonblocking(true).map_err(io_err)?;
    Ok(listener)
}

/// Loads every model (one worker each), binds the three addresses, and serves on a
/// background thread. Returns once the server accepts connections.
pub fn start(config: ServeConfig) -> Result<Server> {
    if config.models.is_empty() {
        return Err(Error::InvalidInput(
            "no models to serve; use --models NAME=ARCHIVE".into(),
        ));
    }
    // Read first, so a bad certificate or key stops start-up before any model loads.
    let (tls, grpc_tls) = match &config.tls {
        Some((cert, key)) => (
            Some(listen::tls_acceptor(cert, key, b"http/1.1")?),
            Some(listen::tls_acceptor(cert, key, b"h2")?),
        ),
        None => (None, None),
    };
    let listeners = [
        bind(config.inference_address)?,
        bind(config.management_address)?,
        bind(config.metrics_address)?,
    ];
    let grpc_listener = config.grpc_address.map(bind).transpose()?;
    let local = |l: &std::net::TcpListener| {
        l.local_addr().map_err(|e| Error::Io {
            path: PathBuf::from("<listener>"),
            source: e,
        })
    };
    let addrs = BoundAddrs {
        inference: local(&listeners[0])?,
        management: local(&listeners[1])?,
        metrics: local(&listeners[2])?,
        grpc: grpc_listener.as_ref().map(local).transpose()?,
    };
    let state = Arc::new(AppState {
        registry: Registry::default(),
        metrics: Arc::new(Metrics::new()),
        shutting_down: AtomicBool::new(false),
        jobs: jobs::JobRegistry::default(),
        outputs: outputs::Outputs::new(config.outputs_dir.clone()),
        a1111: a1111::A1111State::default(),
        config,
    });
    // As TorchServe does, a model that fails to load at start-up is logged and skipped;
    // the server refuses to start only when none loads.
    let mut first_error = None;
    for (name, archive) in &state.config.models {
        let settings = state.config.settings_for(name);
        if let Err(e) = state.load_model(name, archive, settings, true) {
            eprintln!(
                "wgsd serve: model {name} ({}) failed to load and is skipped: {e}",
                archive.display()
            );
            first_error.get_or_insert(e);
        }
    }
    if state.registry.list().is_empty()
        && let Some(e) = first_error
    {
        return Err(e);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Io {
            path: PathBuf::from("<tokio runtime>"),
            source: e,
        })?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let serve_state = state.clone();
    let thread = std::thread::Builder::new()
        .name("wgsd-http".into())
        .spawn(move || {
            runtime.block_on(async move {
                let [inference, management, metrics] = listeners;
                let routers = [
                    inference_router(serve_state.clone()),
                    management::router(serve_state.clone()),
                    metrics::router(serve_state.clone()),
                ];
                let limits = serve_state.config.connections;
                let mut tasks = Vec::new();
                if let Some(listener) = grpc_listener {
                    tasks.push(tokio::spawn(listen::serve(
                        tokio::net::TcpListener::from_std(listener)?,
                        grpc_tls,
                        listen::Protocol::Http2,
                        grpc::router(serve_state.clone()),
                        limits,
                        rx.clone(),
                    )));
                }
                for (listener, app) in [inference, management, metrics].into_iter().zip(routers) {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    // Trailing slashes route as TorchServe's do (`/predictions/sd/`,
                    // `/models/`): trimmed before the router sees the path.
                    let app = tower::Layer::layer(
                        &axum::middleware::map_request(trim_trailing_slash),
                        app,
                    );
                    tasks.push(tokio::spawn(listen::serve(
                        listener,
                        tls.clone(),
                        listen::Protocol::Http1,
                        app,
                        limits,
                        rx.clone(),
                    )));
                }
                for t in tasks {
                    t.await.map_err(std::io::Error::other)??;
                }
                Ok(())
            })
        })
        .map_err(|e| Error::Io {
            path: PathBuf::from("<server thread>"),
            source: e,
        })?;
    Ok(Server {
        addrs,
        state,
        shutdown: Some(tx),
        thread: Some(thread),
    })
}

/// The inference address: TorchServe's inference API, KServe v1 and OIP v2 and the
/// studio's jobs API behind token auth (which leaves health probes open), then the
/// studio page (open: it asks for the token itself), all with request ids.
fn inference_router(state: Arc<AppState>) -> Router {
    Router::new()
        .merge(inference::routes())
        .merge(protocols::routes())
        .merge(studio_api::routes())
        .merge(a1111::routes(state.clone()))
        .merge(openai::routes())
        .route("/v1/models", axum::routing::get(v1_models))
        .fallback(not_found)
        // The body limit is enforced by `read_body` (413 in TorchServe's shape).
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        // Added after the auth layer, so it does not apply to them.
        .merge(page::routes())
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

/// `GET /v1/models` is both KServe v1's model list (`models`) and OpenAI's (`object`,
/// `data`); each client reads its own keys.
async fn v1_models(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
) -> axum::Json<serde_json::Value> {
    let mut v = protocols::v1_list_json(&state);
    if let (Some(o), serde_json::Value::Object(extra)) =
        (v.as_object_mut(), openai::models_json(&state))
    {
        o.extend(extra);
    }
    axum::Json(v)
}

/// 404 for a path no route answers, in the shape of the API the path belongs to.
async fn not_found(uri: axum::http::Uri) -> Response {
    ApiError::resource_not_found().into_response_for(uri.path())
}

async fn method_not_allowed(uri: axum::http::Uri) -> Response {
    ApiError::new(
        ErrorKind::MethodNotAllowed,
        "Requested method is not allowed, please refer to API document.",
    )
    .into_response_for(uri.path())
}

/// Echoes the client's `x-request-id`, or makes one.
async fn request_id(mut req: Request, next: Next) -> Response {
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
    // Handlers see the id too (their log lines name it).
    req.headers_mut().insert("x-request-id", id.clone());
    let mut res = next.run(req).await;
    res.headers_mut().insert("x-request-id", id);
    close_if_body_unread(&mut res);
    res
}

/// A 413 or 408 is sent before the request body has been read to its end, so the
/// connection cannot carry another request: say so (`Connection: close`), or a client
/// that pools connections sends its next request on one the server is closing.
fn close_if_body_unread(res: &mut Response) {
    use axum::http::{StatusCode, header};
    if matches!(
        res.status(),
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
    ) {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}
