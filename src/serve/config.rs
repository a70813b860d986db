//! What `wgsd serve` (and `wgsd studio`) load and how they answer: [`ServeConfig`], its
//! TorchServe defaults, and the `--models` specs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::registry::ModelSettings;
use super::request::Defaults;
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
/// Where studio jobs write their images unless told.
pub const DEFAULT_OUTPUTS_DIR: &str = "outputs";
/// TorchServe's default `allowed_urls`: any file or http(s) URL.
pub const DEFAULT_ALLOWED_URLS: &str = "file://.*|http(s)?://.*";

/// What the server loads and how it answers.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where `--models` archives are looked up when relative.
    pub model_store: PathBuf,
    /// Where requests' LoRAs are looked up by name (`None`: `loras/` in the model store).
    pub lora_dir: Option<PathBuf>,
    /// `(name, archive)`; the archive is relative to `model_store` or absolute.
    pub models: Vec<(String, PathBuf)>,
    pub inference_address: SocketAddr,
    pub management_address: SocketAddr,
    pub metrics_address: SocketAddr,
    /// Where the Open Inference Protocol's gRPC service listens (`None`: not served);
    /// KServe's `--grpc_port`, TorchServe's `grpc_inference_address`/`_port`.
    pub grpc_address: Option<SocketAddr>,
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
    /// AUTOMATIC1111's `--api-auth user:pass[,user2:pass2]`: `(user, password)` pairs
    /// the `/sdapi/v1` routes accept as HTTP basic auth; empty: those routes are open
    /// (apart from `auth_token`).
    pub api_auth: Vec<(String, String)>,
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
    /// Requests that give no size get the model's native size (UNet `sample_size` x VAE
    /// scale factor) instead of `default_width` x `default_height` (the studio's choice).
    pub native_size_defaults: bool,
    /// Where finished studio jobs write their images (`NNNNN-<seed>.png`); created on
    /// first write (`--outputs`, config key `outputs_dir`).
    pub outputs_dir: PathBuf,
    /// Timeouts and the connection cap of each of the three listeners.
    pub connections: ConnectionLimits,
    /// `(certificate, private key)` PEM files: all three listeners then speak TLS only
    /// (`--tls-cert`/`--tls-key`, TorchServe's `certificate_file`/`private_key_file`).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// For tests of the worker's panic recovery: a generation whose first prompt is
    /// exactly this panics at its first step. No flag or config key sets it.
    #[doc(hidden)]
    pub panic_on_prompt: Option<String>,
}

/// How long each listener waits on its clients, and how many it serves at once (each
/// listener has its own cap). A connection with a request being handled is never timed
/// out: generations take as long as `responseTimeout` lets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A request head must be complete this long after its first byte (nginx's
    /// `client_header_timeout`; config key `header_read_timeout`, seconds).
    pub header_read_timeout: Duration,
    /// A connection with no request in flight and no byte moving is closed after this
    /// (nginx's `keepalive_timeout`; config key `idle_timeout`, seconds).
    pub idle_timeout: Duration,
    /// A request body must be complete this long after its head, or the request gets
    /// 408 (config key `body_read_timeout`, seconds). With the default 6,553,500-byte
    /// `max_request_size` and 120 s, a client must send at least 55 KB/s.
    pub body_read_timeout: Duration,
    /// Open connections per listener; more wait unaccepted until one closes (config key
    /// `max_connections`).
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(120),
            max_connections: 512,
        }
    }
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
    /// The model's native size (UNet `sample_size` x VAE scale factor).
    Native,
    /// No warm-up: ready as soon as the weights are loaded.
    Off,
}

impl WarmupSize {
    /// `WxH` (e.g. `768x768`), `default`, or `off` / `none`.
    pub fn parse(s: &str) -> Result<WarmupSize> {
        let bad = || {
            Error::InvalidInput(format!(
                "warm-up size {s:?}: expected WxH (e.g. 768x768), `default`, `native` or `off`"
            ))
        };
        match s.trim().to_ascii_lowercase().as_str() {
            "default" => Ok(WarmupSize::Default),
            "native" => Ok(WarmupSize::Native),
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
            lora_dir: None,
            models: Vec::new(),
            inference_address: SocketAddr::from(([127, 0, 0, 1], 8080)),
            management_address: SocketAddr::from(([127, 0, 0, 1], 8081)),
            grpc_address: None,
            metrics_address: SocketAddr::from(([127, 0, 0, 1], 8082)),
            max_request_size: DEFAULT_MAX_REQUEST_SIZE,
            max_response_size: DEFAULT_MAX_RESPONSE_SIZE,
            queue_size: DEFAULT_QUEUE_SIZE,
            default_settings: ModelSettings::default(),
            model_settings: Default::default(),
            auth_token: None,
            api_auth: Vec::new(),
            allowed_urls: vec![DEFAULT_ALLOWED_URLS.to_string()],
            default_steps: DEFAULT_STEPS,
            default_width: DEFAULT_SIZE,
            default_height: DEFAULT_SIZE,
            adapter: AdapterChoice::default(),
            pipeline: PipelineOptions::default(),
            gpu_memory_limit: None,
            warmup: WarmupSize::Default,
            native_size_defaults: false,
            outputs_dir: PathBuf::from(DEFAULT_OUTPUTS_DIR),
            connections: ConnectionLimits::default(),
            tls: None,
            panic_on_prompt: None,
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
/// `.zip`, single-file checkpoint (`.safetensors`, `.ckpt`) and diffusers folder, one with
/// `model_index.json`, in the model store, each named after its file stem).
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
            let archive = path.is_file()
                && (matches!(ext.as_deref(), Some("mar" | "zip"))
                    || crate::loader::single_file::is_single_file(&path));
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
                "--models all: no .mar, .zip, .safetensors, .ckpt or diffusers folder in {}",
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

    /// What requests that do not say get, for a model of `native` (width, height).
    pub fn defaults(&self, native: (usize, usize)) -> Defaults {
        let (width, height) = if self.native_size_defaults {
            native
        } else {
            (self.default_width, self.default_height)
        };
        Defaults {
            steps: self.default_steps,
            width,
            height,
            lora_dir: Some(self.lora_dir()),
        }
    }

    /// The loras folder: `--lora-dir`, or `loras/` in the model store.
    pub fn lora_dir(&self) -> PathBuf {
        self.lora_dir
            .clone()
            .unwrap_or_else(|| self.model_store.join("loras"))
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
