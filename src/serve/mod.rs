//! `wgsd serve`: an HTTP server that answers like the TorchServe Stable Diffusion
//! deployment it replaces (inference API: `/ping`, `/predictions/{model}[/{version}]`).
//!
//! The HTTP side runs on a tokio runtime (axum); each model has one GPU worker thread
//! (see [`worker`]) fed through a bounded queue.

pub mod inference;
pub mod worker;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::gpu::AdapterChoice;
use crate::pipeline::{DEFAULT_SIZE, DEFAULT_STEPS, PipelineOptions};

/// TorchServe's default `max_request_size` (bytes).
pub const DEFAULT_MAX_REQUEST_SIZE: usize = 6_553_500;
/// TorchServe's default `job_queue_size`.
pub const DEFAULT_QUEUE_SIZE: usize = 100;

/// What the server loads and how it answers.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where `--models` archives are looked up when relative.
    pub model_store: PathBuf,
    /// `(name, archive)`; the archive is relative to `model_store` or absolute.
    pub models: Vec<(String, PathBuf)>,
    pub inference_address: SocketAddr,
    pub max_request_size: usize,
    pub queue_size: usize,
    /// Used when a request does not say (the deployment's 50 steps, 768 x 768).
    pub default_steps: usize,
    pub default_width: usize,
    pub default_height: usize,
    pub adapter: AdapterChoice,
    pub pipeline: PipelineOptions,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            model_store: PathBuf::from("."),
            models: Vec::new(),
            inference_address: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_request_size: DEFAULT_MAX_REQUEST_SIZE,
            queue_size: DEFAULT_QUEUE_SIZE,
            default_steps: DEFAULT_STEPS,
            default_width: DEFAULT_SIZE,
            default_height: DEFAULT_SIZE,
            adapter: AdapterChoice::default(),
            pipeline: PipelineOptions::default(),
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

/// What the request handlers share.
pub(crate) struct AppState {
    pub workers: HashMap<String, worker::Worker>,
    pub config: ServeConfig,
}

/// A running server: its bound address, and a way to stop it.
pub struct Server {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("addr", &self.addr).finish()
    }
}

impl Server {
    /// The address the inference API listens on (the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, finishes the open connections, and stops the workers.
    pub fn shutdown(mut self) -> Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.join()
    }

    /// Blocks until the server stops.
    pub fn wait(mut self) -> Result<()> {
        self.join()
    }

    fn join(&mut self) -> Result<()> {
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(Ok(()))) | None => Ok(()),
            Some(Ok(Err(e))) => Err(Error::Io {
                path: PathBuf::from("<server>"),
                source: e,
            }),
            Some(Err(_)) => Err(Error::Gpu("the server thread panicked".into())),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = self.join();
    }
}

/// Loads every model (one worker each), binds the inference address, and serves on a
/// background thread. Returns once the server accepts connections.
pub fn start(config: ServeConfig) -> Result<Server> {
    if config.models.is_empty() {
        return Err(Error::InvalidInput(
            "no models to serve; use --models NAME=ARCHIVE".into(),
        ));
    }
    let mut workers = HashMap::new();
    for (name, archive) in &config.models {
        if workers.contains_key(name) {
            return Err(Error::InvalidInput(format!("model {name:?} given twice")));
        }
        let path = if archive.is_absolute() {
            archive.clone()
        } else {
            config.model_store.join(archive)
        };
        let w = worker::Worker::spawn(
            name,
            &path,
            &config.adapter,
            &config.pipeline,
            config.queue_size,
        )?;
        workers.insert(name.clone(), w);
    }
    let bind_addr = config.inference_address.to_string();
    let io_err = |e: std::io::Error| Error::Io {
        path: PathBuf::from(&bind_addr),
        source: e,
    };
    let listener = std::net::TcpListener::bind(config.inference_address).map_err(io_err)?;
    listener.set_nonblocking(true).map_err(io_err)?;
    let addr = listener.local_addr().map_err(io_err)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(io_err)?;
    let state = Arc::new(AppState { workers, config });
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("wgsd-http".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                let app = inference::router(state.clone());
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = rx.await;
                    })
                    .await
            })
            // `state` (and so the workers) drops here, after the last connection.
        })
        .map_err(io_err)?;
    Ok(Server {
        addr,
        shutdown: Some(tx),
        thread: Some(thread),
    })
}
