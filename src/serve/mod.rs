//! `wgsd serve`: an HTTP server that answers like the TorchServe Stable Diffusion
//! deployment it replaces: the inference API (`/ping`, `/predictions/{model}`, KServe
//! and Open Inference Protocol routes), the management API and Prometheus metrics, on
//! three addresses as TorchServe has them.
//!
//! The HTTP side runs on a tokio runtime (axum); each model has one GPU worker thread
//! (see [`worker`]) fed through a bounded queue; [`registry`] maps names to workers.

pub mod auth;
pub mod download;
pub mod inference;
pub mod management;
pub mod metrics;
mod multipart;
mod protocols;
pub mod registry;
mod reply;
pub mod ts_config;
pub mod worker;

pub use metrics::Metrics;
pub use registry::{ModelEntry, ModelSettings, Registry};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::gpu::AdapterChoice;
use crate::pipeline::{DEFAULT_SIZE, DEFAULT_STEPS, PipelineOptions};

/// TorchServe's default `max_request_size` (bytes).
pub const DEFAULT_MAX_REQUEST_SIZE: usize = 6_553_500;
/// TorchServe's default `job_queue_size`.
pub const DEFAULT_QUEUE_SIZE: usize = 100;
/// wgsd's default `max_response_size`: room for a 768 x 768 image as the compact JSON
/// list (at most 14 bytes a pixel, 8.3 MB) several times over. TorchServe's own default,
/// 6,553,500, is too small for the image it is asked for.
pub const DEFAULT_MAX_RESPONSE_SIZE: usize = 64 * 1024 * 1024;
/// TorchServe's default `allowed_urls`: any file or http(s) URL.
pub const DEFAULT_ALLOWED_URLS: &str = "file://.*|http(s)?://.*";

/// What the server loads and how it answers.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where `--models` archives are looked up when relative.
    pub model_store: PathBuf,
    /// `(name, archive)`; the archive is relative to `model_store` or absolute.
    pub models: Vec<(String, PathBuf)>,
    pub inference_address: SocketAddr,
    pub management_address: SocketAddr,
    pub metrics_address: SocketAddr,
    pub max_request_size: usize,
    /// Replies larger than this are refused with a clear error (never cut short).
    pub max_response_size: usize,
    pub queue_size: usize,
    /// Settings for models that `model_settings` does not name (TorchServe's
    /// `default_response_timeout`, batch size 1).
    pub default_settings: ModelSettings,
    /// Per-model settings (`model_snapshot` in config.properties).
    pub model_settings: std::collections::BTreeMap<String, ModelSettings>,
    /// When set, the management API (and inference) need `Authorization: Bearer TOKEN`.
    pub auth_token: Option<String>,
    /// Regexes a registration URL must match (TorchServe's `allowed_urls`).
    pub allowed_urls: Vec<String>,
    /// Used when a request does not say (the deployment's 50 steps, 768 x 768).
    pub default_steps: usize,
    pub default_width: usize,
    pub default_height: usize,
    pub adapter: AdapterChoice,
    pub pipeline: PipelineOptions,
    /// Most bytes of GPU memory each model's worker may hold (weights, activations and
    /// cached buffers); a request past it gets 507 and the worker goes on. Lets several
    /// models (or servers) share one GPU. `None`: no limit.
    pub gpu_memory_limit: Option<u64>,
    /// What each model's worker warms up for before it reports ready.
    pub warmup: WarmupSize,
}

/// The size a worker runs its warm-up pass at ([`Pipeline::warm_up`]) before the model
/// reports ready, so the first request pays no pipeline compilation.
///
/// [`Pipeline::warm_up`]: crate::pipeline::Pipeline::warm_up
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WarmupSize {
    /// The server's default request size (`default_width` x `default_height`).
    #[default]
    Default,
    /// This width and height.
    Size(usize, usize),
    /// No warm-up: ready as soon as the weights are loaded.
    Off,
}

impl WarmupSize {
    /// `WxH` (e.g. `768x768`), `default`, or `off` / `none`.
    pub fn parse(s: &str) -> Result<WarmupSize> {
        let bad = || {
            Error::InvalidInput(format!(
                "warm-up size {s:?}: expected WxH (e.g. 768x768), `default` or `off`"
            ))
        };
        match s.trim().to_ascii_lowercase().as_str() {
            "default" => Ok(WarmupSize::Default),
            "off" | "none" => Ok(WarmupSize::Off),
            t => {
                let (w, h) = t.split_once('x').ok_or_else(bad)?;
                let w: usize = w.trim().parse().map_err(|_| bad())?;
                let h: usize = h.trim().parse().map_err(|_| bad())?;
                if w == 0 || h == 0 {
                    return Err(bad());
                }
                Ok(WarmupSize::Size(w, h))
            }
        }
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            model_store: PathBuf::from("."),
            models: Vec::new(),
            inference_address: SocketAddr::from(([127, 0, 0, 1], 8080)),
            management_address: SocketAddr::from(([127, 0, 0, 1], 8081)),
            metrics_address: SocketAddr::from(([127, 0, 0, 1], 8082)),
            max_request_size: DEFAULT_MAX_REQUEST_SIZE,
            max_response_size: DEFAULT_MAX_RESPONSE_SIZE,
            queue_size: DEFAULT_QUEUE_SIZE,
            default_settings: ModelSettings::default(),
            model_settings: Default::default(),
            auth_token: None,
            allowed_urls: vec![DEFAULT_ALLOWED_URLS.to_string()],
            default_steps: DEFAULT_STEPS,
            default_width: DEFAULT_SIZE,
            default_height: DEFAULT_SIZE,
            adapter: AdapterChoice::default(),
            pipeline: PipelineOptions::default(),
            gpu_memory_limit: None,
            warmup: WarmupSize::Default,
        }
    }
}

/// Parses `NAME=ARCHIVE` (a bare `ARCHIVE` is named after its file stem).
pub fn parse_model_spec(spec: &str) -> Result<(String, PathBuf)> {
    let (name, path) = match spec.split_once('=') {
        Some((n, p)) => (n.trim().to_string(), PathBuf::from(p.trim())),
        None => {
            let p = PathBuf::from(spec.trim());
            let stem = p
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            (stem, p)
        }
    };
    if name.is_empty() || path.as_os_str().is_empty() {
        return Err(Error::InvalidInput(format!(
            "--models {spec:?}: expected NAME=ARCHIVE"
        )));
    }
    Ok((name, path))
}

/// Expands `--models` specs: `NAME=ARCHIVE`, a bare archive, or `all` (every `.mar`,
/// `.zip` and diffusers folder, one with `model_index.json`, in the model store, each
/// named after its file stem).
pub fn expand_models(
    model_store: &std::path::Path,
    specs: &[String],
) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for spec in specs {
        if !spec.trim().eq_ignore_ascii_case("all") {
            out.push(parse_model_spec(spec)?);
            continue;
        }
        let io_err = |e: std::io::Error| Error::Io {
            path: model_store.to_path_buf(),
            source: e,
        };
        let mut found = Vec::new();
        for entry in std::fs::read_dir(model_store).map_err(io_err)? {
            let path = entry.map_err(io_err)?.path();
            let ext = path
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase);
            let archive = matches!(ext.as_deref(), Some("mar" | "zip")) && path.is_file();
            if !archive && !path.join("model_index.json").is_file() {
                continue;
            }
            let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            let Some(file) = path.file_name() else {
                continue;
            };
            found.push((name.to_string(), PathBuf::from(file)));
        }
        found.sort();
        if found.is_empty() {
            return Err(Error::InvalidInput(format!(
                "--models all: no .mar, .zip or diffusers folder in {}",
                model_store.display()
            )));
        }
        out.extend(found);
    }
    Ok(out)
}

impl ServeConfig {
    /// The settings for `model`: its `model_snapshot` entry, else the defaults.
    pub fn settings_for(&self, model: &str) -> ModelSettings {
        self.model_settings
            .get(model)
            .copied()
            .unwrap_or(self.default_settings)
    }

    /// An archive named relative to the model store, or absolute.
    pub fn archive_path(&self, archive: &Path) -> PathBuf {
        if archive.is_absolute() {
            archive.to_path_buf()
        } else {
            self.model_store.join(archive)
        }
    }
}

/// What the request handlers of all three APIs share.
pub struct AppState {
    pub registry: Registry,
    pub config: ServeConfig,
    pub metrics: Arc<Metrics>,
    /// Set on shutdown: new predictions get 503 while in-flight ones finish.
    pub shutting_down: AtomicBool,
}

impl AppState {
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
            warmup: match self.config.warmup {
                WarmupSize::Default => {
                    Some((self.config.default_width, self.config.default_height))
                }
                WarmupSize::Size(w, h) => Some((w, h)),
                WarmupSize::Off => None,
            },
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

/// Where the three APIs listen (the real ports when 0 was asked for).
#[derive(Debug, Clone, Copy)]
pub struct BoundAddrs {
    pub inference: SocketAddr,
    pub management: SocketAddr,
    pub metrics: SocketAddr,
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
    let listeners = [
        bind(config.inference_address)?,
        bind(config.management_address)?,
        bind(config.metrics_address)?,
    ];
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
    };
    let state = Arc::new(AppState {
        registry: Registry::default(),
        metrics: Arc::new(Metrics::new()),
        shutting_down: AtomicBool::new(false),
        config,
    });
    for (name, archive) in &state.config.models {
        let settings = state.config.settings_for(name);
        state.load_model(name, archive, settings, true)?;
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
                    inference::router(serve_state.clone()),
                    management::router(serve_state.clone()),
                    metrics::router(serve_state.clone()),
                ];
                let mut tasks = Vec::new();
                for (listener, app) in [inference, management, metrics].into_iter().zip(routers) {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    let mut rx = rx.clone();
                    tasks.push(tokio::spawn(async move {
                        axum::serve(listener, app)
                            .with_graceful_shutdown(async move {
                                let _ = rx.wait_for(|stop| *stop).await;
                            })
                            .await
                    }));
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
