//! TorchServe's `config.properties` (`--ts-config`): a Java properties file whose keys
//! this module maps onto [`ServeConfig`], so a deployment's existing file keeps working.
//!
//! The file syntax (comments, `key=value` / `key: value`, line continuations, escapes)
//! is the `java-properties` crate's; here are only TorchServe's keys and their values.
//! Unknown keys are reported (not fatal); a bad value is an error naming key and line.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ModelSettings, ServeConfig, WarmupSize};

/// A `config.properties` that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TsConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config.properties does not parse: {0}")]
    Syntax(#[from] java_properties::PropertiesError),
    #[error("config.properties is not UTF-8 text: {0}")]
    Encoding(#[from] std::str::Utf8Error),
    #[error("config.properties line {line}: {key}: {message}")]
    Value {
        line: usize,
        key: String,
        message: String,
    },
}

type Result<T> = std::result::Result<T, TsConfigError>;

/// TorchServe keys wgsd knows but has no use for (Python workers, netty, gRPC, ...):
/// reported as ignored rather than unknown.
const IGNORED_KEYS: &[&str] = &[
    "number_of_netty_threads",
    "netty_client_threads",
    "number_of_gpu",
    "enable_envvars_config",
    "install_py_dep_per_model",
    "async_logging",
    "vmargs",
    "grpc_management_port",
    "grpc_management_address",
    "enable_grpc_ssl",
    "enable_metrics_api",
    "metrics_mode",
    "metrics_format",
    "metrics_config",
    "enable_model_api",
    "disable_token_authorization",
    "cors_allowed_origin",
    "cors_allowed_methods",
    "cors_allowed_headers",
    "default_startup_timeout",
    "unregister_model_timeout",
    "decode_input_request",
    "workflow_store",
    "model_server_home",
    "ts_allowed_urls",
    "plugins_path",
    "cpu_launcher_enable",
    "cpu_launcher_args",
    "use_native_io",
    "io_ratio",
    "disable_system_metrics",
    "system_metrics_cmd",
    "max_idle_time",
    "keep_alive_timeout",
];

/// One model's settings from `model_snapshot` or `models` (camelCase, as TorchServe
/// writes them); absent values fall back to the server's defaults.
#[derive(Debug, Default, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotModel {
    pub batch_size: Option<usize>,
    pub max_batch_delay: Option<u64>,
    pub response_timeout: Option<u64>,
    pub min_workers: Option<usize>,
    pub max_workers: Option<usize>,
    /// wgsd's own: `"auto"`, `"f32"` or `"f16"` for this model.
    pub precision: Option<crate::Precision>,
    /// wgsd's own: decode this model's images in tiles (true), never (false), or as the
    /// memory budget needs (absent). `vaeTiling` or `vae_tiling`.
    #[serde(alias = "vae_tiling")]
    pub vae_tiling: Option<bool>,
}

/// A snapshot model entry: the settings plus the archive it was registered from.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotVersion {
    mar_name: Option<String>,
    #[serde(flatten)]
    settings: SnapshotModel,
}

/// `model_snapshot`: `{"models": {"name": {"1.0": {...}}}, ...}`.
#[derive(Debug, Deserialize)]
struct Snapshot {
    #[serde(default)]
    models: BTreeMap<String, BTreeMap<String, SnapshotVersion>>,
}

/// The TorchServe keys read from a `config.properties`; `None` where the file is silent.
#[derive(Debug, Default, Clone)]
pub struct TsConfig {
    pub inference_address: Option<SocketAddr>,
    pub management_address: Option<SocketAddr>,
    pub metrics_address: Option<SocketAddr>,
    /// `grpc_inference_address` (a host) and `grpc_inference_port`: either one turns the
    /// gRPC service on ([`TsConfig::grpc_address`]).
    pub grpc_inference_host: Option<std::net::IpAddr>,
    pub grpc_inference_port: Option<u16>,
    /// Relative paths are taken from the config file's folder.
    pub model_store: Option<PathBuf>,
    /// wgsd's own key `outputs_dir`: where studio jobs write their images (relative:
    /// from the config file's folder).
    pub outputs_dir: Option<PathBuf>,
    /// `load_models`: `all`, or `name=archive` / `archive` items (as `--models`).
    pub load_models: Option<Vec<String>>,
    pub max_request_size: Option<usize>,
    pub max_response_size: Option<usize>,
    /// wgsd's own key `gpu_memory_limit`: MiB of GPU memory each model's worker may hold.
    pub gpu_memory_limit_mib: Option<usize>,
    /// wgsd's own key `warmup_size`: `WxH`, `default` or `off` (see [`WarmupSize`]).
    pub warmup: Option<WarmupSize>,
    pub job_queue_size: Option<usize>,
    pub default_response_timeout: Option<u64>,
    pub allowed_urls: Option<Vec<String>>,
    pub default_workers_per_model: Option<usize>,
    /// wgsd's own key `vae_tiling` (auto, true/on, false/off): every model's default.
    pub vae_tiling: Option<crate::pipeline::VaeTiling>,
    /// wgsd's own key `auth_token`: clients send `Authorization: Bearer TOKEN`.
    pub auth_token: Option<String>,
    /// wgsd's own key `api_auth` (A1111's `--api-auth`): basic auth on `/sdapi/v1`.
    pub api_auth: Option<Vec<(String, String)>>,
    /// wgsd's own key `precision` (`auto`, `f32`, `f16`): every model's default.
    pub precision: Option<crate::Precision>,
    /// wgsd's own keys `header_read_timeout`, `idle_timeout`, `body_read_timeout`
    /// (seconds) and `max_connections` (see [`super::ConnectionLimits`]).
    pub header_read_timeout_s: Option<u64>,
    pub idle_timeout_s: Option<u64>,
    pub body_read_timeout_s: Option<u64>,
    pub max_connections: Option<usize>,
    /// TorchServe's `certificate_file` and `private_key_file` (PEM; relative paths from
    /// the config file's folder): both set, the listeners speak TLS.
    pub certificate_file: Option<PathBuf>,
    pub private_key_file: Option<PathBuf>,
    /// Some address was written `https://` (then TLS files are required).
    pub https: bool,
    /// Per-model settings from `model_snapshot` and `models`.
    pub model_settings: BTreeMap<String, SnapshotModel>,
    /// `(name, marName)` of the models `model_snapshot` lists.
    pub snapshot_models: Vec<(String, PathBuf)>,
    /// Keys wgsd does not read, with their line: `(line, key, known to TorchServe)`.
    pub unused_keys: Vec<(usize, String, bool)>,
}

impl TsConfig {
    /// Reads `path`; a relative `model_store` or `outputs_dir` is resolved against the
    /// file's folder.
    pub fn read(path: &Path) -> Result<TsConfig> {
        let text = std::fs::read(path).map_err(|e| TsConfigError::Read {
            path: path.to_path_buf(),
            source: e,
        })?;
        let mut config = TsConfig::parse(&text)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        for folder in [
            &mut config.model_store,
            &mut config.outputs_dir,
            &mut config.certificate_file,
            &mut config.private_key_file,
        ]
        .into_iter()
        .flatten()
        {
            if folder.is_relative() {
                *folder = dir.join(&*folder);
            }
        }
        Ok(config)
    }

    /// Parses the file's bytes (UTF-8; `\uXXXX` escapes as in Java).
    pub fn parse(bytes: &[u8]) -> Result<TsConfig> {
        let mut out = TsConfig::default();
        // Checked first: java-properties' decoder panics on some invalid UTF-8 (found
        // by tests/fuzz_parsers.rs).
        std::str::from_utf8(bytes)?;
        let lines = java_properties::PropertiesIter::new_with_encoding(bytes, encoding_rs::UTF_8);
        for line in lines {
            let line = line?;
            let number = line.line_number();
            if let java_properties::LineContent::KVPair(key, value) = line.consume_content() {
                out.set(number, key.trim(), value.trim())?;
            }
        }
        Ok(out)
    }

    fn set(&mut self, line: usize, key: &str, value: &str) -> Result<()> {
        let bad = |message: String| TsConfigError::Value {
            line,
            key: key.to_string(),
            message,
        };
        match key {
            "inference_address" | "management_address" | "metrics_address" => {
                let addr = Some(parse_address(value).map_err(bad)?);
                self.https |= value.to_ascii_lowercase().starts_with("https://");
                match key {
                    "inference_address" => self.inference_address = addr,
                    "management_address" => self.management_address = addr,
                    _ => self.metrics_address = addr,
                }
            }
            "grpc_inference_address" => {
                let host = if value.eq_ignore_ascii_case("localhost") {
                    Ok(std::net::IpAddr::from([127, 0, 0, 1]))
                } else {
                    value.parse()
                };
                self.grpc_inference_host =
                    Some(host.map_err(|_| bad(format!("{value}: expected an IP address")))?);
            }
            "grpc_inference_port" => {
                self.grpc_inference_port = Some(
                    value
                        .parse()
                        .map_err(|_| bad(format!("{value}: expected a port number")))?,
                );
            }
            "certificate_file" => self.certificate_file = Some(PathBuf::from(value)),
            "private_key_file" => self.private_key_file = Some(PathBuf::from(value)),
            "model_store" => self.model_store = Some(PathBuf::from(value)),
            "outputs_dir" => {
                if value.is_empty() {
                    return Err(bad("the folder is empty".into()));
                }
                self.outputs_dir = Some(PathBuf::from(value))
            }
            "load_models" => {
                let items = split_list(value);
                if items.is_empty() {
                    return Err(bad(
                        "expected `all` or a comma-separated list of NAME=ARCHIVE".into(),
                    ));
                }
                self.load_models = Some(items);
            }
            "max_request_size" => self.max_request_size = Some(parse_positive(value).map_err(bad)?),
            "max_response_size" => {
                self.max_response_size = Some(parse_positive(value).map_err(bad)?)
            }
            "gpu_memory_limit" => {
                self.gpu_memory_limit_mib = Some(parse_positive(value).map_err(bad)?)
            }
            "vae_tiling" => {
                let t = crate::pipeline::VaeTiling::parse(value).map_err(|e| bad(e.to_string()))?;
                self.vae_tiling = Some(t);
            }
            "warmup_size" => {
                self.warmup = Some(WarmupSize::parse(value).map_err(|e| bad(e.to_string()))?)
            }
            "job_queue_size" => self.job_queue_size = Some(parse_positive(value).map_err(bad)?),
            "default_response_timeout" => {
                self.default_response_timeout = Some(parse_positive(value).map_err(bad)? as u64)
            }
            "header_read_timeout" => {
                self.header_read_timeout_s = Some(parse_positive(value).map_err(bad)? as u64)
            }
            "idle_timeout" => {
                self.idle_timeout_s = Some(parse_positive(value).map_err(bad)? as u64)
            }
            "body_read_timeout" => {
                self.body_read_timeout_s = Some(parse_positive(value).map_err(bad)? as u64)
            }
            "max_connections" => self.max_connections = Some(parse_positive(value).map_err(bad)?),
            "default_workers_per_model" => {
                self.default_workers_per_model = Some(parse_positive(value).map_err(bad)?)
            }
            "allowed_urls" => {
                let items = split_list(value);
                for pattern in &items {
                    regex::Regex::new(pattern).map_err(|e| {
                        bad(format!("{pattern:?} is not a regular expression: {e}"))
                    })?;
                }
                self.allowed_urls = Some(items);
            }
            "precision" => {
                self.precision = Some(value.parse().map_err(bad)?);
            }
            "auth_token" => {
                if value.is_empty() {
                    return Err(bad("the token is empty".into()));
                }
                self.auth_token = Some(value.to_string());
            }
            "api_auth" => {
                self.api_auth = Some(super::auth::parse_api_auth(value).map_err(bad)?);
            }
            "model_snapshot" => {
                let snapshot: Snapshot = serde_json::from_str(value)
                    .map_err(|e| bad(format!("not TorchServe's snapshot JSON: {e}")))?;
                for (name, versions) in snapshot.models {
                    // wgsd serves one version per model: the first listed.
                    let Some((_, v)) = versions.into_iter().next() else {
                        continue;
                    };
                    if let Some(mar) = v.mar_name {
                        self.snapshot_models
                            .push((name.clone(), PathBuf::from(mar)));
                    }
                    self.model_settings.insert(name, v.settings);
                }
            }
            // Newer TorchServe: per-model parameters without a snapshot,
            // `models={"name": {"1.0": {"batchSize": 4, ...}}}`.
            "models" => {
                let models: BTreeMap<String, BTreeMap<String, SnapshotModel>> =
                    serde_json::from_str(value)
                        .map_err(|e| bad(format!("not TorchServe's per-model JSON: {e}")))?;
                for (name, versions) in models {
                    if let Some((_, settings)) = versions.into_iter().next() {
                        self.model_settings.insert(name, settings);
                    }
                }
            }
            _ => {
                let known = IGNORED_KEYS.contains(&key)
                    || key.starts_with("private_key")
                    || key.starts_with("certificate")
                    || key.starts_with("keystore")
                    || key.starts_with("grpc_")
                    || key.starts_with("metrics_");
                self.unused_keys.push((line, key.to_string(), known));
            }
        }
        Ok(())
    }

    /// Where gRPC listens when the file names its host or port: TorchServe's defaults
    /// for the other (127.0.0.1, port 7070).
    pub fn grpc_address(&self) -> Option<SocketAddr> {
        if self.grpc_inference_host.is_none() && self.grpc_inference_port.is_none() {
            return None;
        }
        let host = self
            .grpc_inference_host
            .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
        Some(SocketAddr::new(
            host,
            self.grpc_inference_port.unwrap_or(7070),
        ))
    }

    /// The TLS `(certificate, key)` files, or why they are missing: both keys or
    /// neither, and both when an address is `https://`.
    pub fn tls(&self) -> std::result::Result<Option<(PathBuf, PathBuf)>, String> {
        match (&self.certificate_file, &self.private_key_file) {
            (Some(c), Some(k)) => Ok(Some((c.clone(), k.clone()))),
            (None, None) if !self.https => Ok(None),
            (None, None) => {
                Err("an https:// address needs certificate_file and private_key_file".into())
            }
            _ => Err("certificate_file and private_key_file go together".into()),
        }
    }

    /// Lines for stderr, one per key wgsd does not read.
    pub fn unused_key_messages(&self) -> Vec<String> {
        self.unused_keys
            .iter()
            .map(|(line, key, known)| {
                if *known {
                    format!("config.properties line {line}: {key}: a TorchServe key wgsd does not use; ignored")
                } else {
                    format!("config.properties line {line}: {key}: unknown key; ignored")
                }
            })
            .collect()
    }

    /// The `--models` items the file asks for: `model_snapshot`'s models when it lists
    /// any (TorchServe restores a snapshot instead of `load_models`), else `load_models`.
    pub fn model_specs(&self) -> Option<Vec<String>> {
        if !self.snapshot_models.is_empty() {
            return Some(
                self.snapshot_models
                    .iter()
                    .map(|(n, p)| format!("{n}={}", p.display()))
                    .collect(),
            );
        }
        self.load_models.clone()
    }

    /// Writes every key the file sets onto `config` (models excepted: see
    /// [`TsConfig::model_specs`]). Per-model settings start from the defaults, so
    /// `default_response_timeout` applies to models whose entry has no `responseTimeout`.
    pub fn apply(&self, config: &mut ServeConfig) {
        let set = |dst: &mut SocketAddr, src: Option<SocketAddr>| {
            if let Some(a) = src {
                *dst = a;
            }
        };
        set(&mut config.inference_address, self.inference_address);
        set(&mut config.management_address, self.management_address);
        set(&mut config.metrics_address, self.metrics_address);
        if let Some(a) = self.grpc_address() {
            config.grpc_address = Some(a);
        }
        if let Some(s) = &self.model_store {
            config.model_store = s.clone();
        }
        if let Some(d) = &self.outputs_dir {
            config.outputs_dir = d.clone();
        }
        if let Some(n) = self.max_request_size {
            config.max_request_size = n;
        }
        if let Some(n) = self.max_response_size {
            config.max_response_size = n;
        }
        if let Some(n) = self.job_queue_size {
            config.queue_size = n;
        }
        if let Some(mib) = self.gpu_memory_limit_mib {
            config.gpu_memory_limit = Some(mib as u64 * 1024 * 1024);
        }
        if let Some(w) = self.warmup {
            config.warmup = w;
        }
        if let Some(t) = self.default_response_timeout {
            config.default_settings.response_timeout_s = t;
        }
        if let Some(t) = self.vae_tiling {
            config.default_settings.vae_tiling = t;
        }
        if let Some(n) = self.default_workers_per_model {
            config.default_settings.min_workers = n;
            config.default_settings.max_workers = n;
        }
        if let Some(urls) = &self.allowed_urls {
            config.allowed_urls = urls.clone();
        }
        if let Some(t) = &self.auth_token {
            config.auth_token = Some(t.clone());
        }
        if let Some(a) = &self.api_auth {
            config.api_auth = a.clone();
        }
        if let Some(p) = self.precision {
            config.pipeline.precision = p;
        }
        if let Ok(Some(files)) = self.tls() {
            config.tls = Some(files);
        }
        let c = &mut config.connections;
        for (dst, src) in [
            (&mut c.header_read_timeout, self.header_read_timeout_s),
            (&mut c.idle_timeout, self.idle_timeout_s),
            (&mut c.body_read_timeout, self.body_read_timeout_s),
        ] {
            if let Some(s) = src {
                *dst = std::time::Duration::from_secs(s);
            }
        }
        if let Some(n) = self.max_connections {
            c.max_connections = n;
        }
        let base = config.default_settings;
        for (name, m) in &self.model_settings {
            config.model_settings.insert(name.clone(), m.over(base));
        }
    }
}

impl SnapshotModel {
    /// These settings on top of `base`.
    pub fn over(&self, base: ModelSettings) -> ModelSettings {
        let min_workers = self.min_workers.unwrap_or(base.min_workers);
        ModelSettings {
            batch_size: self.batch_size.unwrap_or(base.batch_size).max(1),
            max_batch_delay_ms: self.max_batch_delay.unwrap_or(base.max_batch_delay_ms),
            response_timeout_s: self.response_timeout.unwrap_or(base.response_timeout_s),
            min_workers,
            max_workers: self
                .max_workers
                .unwrap_or(base.max_workers)
                .max(min_workers),
            precision: self.precision.or(base.precision),
            vae_tiling: match self.vae_tiling {
                None => base.vae_tiling,
                b => crate::pipeline::VaeTiling::from_bool(b),
            },
        }
    }
}

/// Comma-separated items, blanks dropped.
fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn parse_positive(value: &str) -> std::result::Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("expected a positive whole number, got {value:?}")),
    }
}

/// TorchServe writes addresses as URLs (`http://127.0.0.1:8080`); a bare
/// `host:port` is accepted too, and `https://` (TLS then needs `certificate_file` and
/// `private_key_file`; see [`TsConfig::tls`]).
pub fn parse_address(value: &str) -> std::result::Result<SocketAddr, String> {
    let lower = value.to_ascii_lowercase();
    let (rest, default_port) = if lower.starts_with("https://") {
        (&value["https://".len()..], Some(443))
    } else if lower.starts_with("http://") {
        (&value["http://".len()..], Some(80))
    } else if lower.starts_with("unix:") {
        return Err(format!(
            "{value}: unix sockets are not supported; use http://HOST:PORT"
        ));
    } else {
        (value, None)
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') {
        return Err(format!("{value}: expected http://HOST:PORT without a path"));
    }
    if let Ok(addr) = rest.parse::<SocketAddr>() {
        return Ok(addr);
    }
    // Host without a port, or `localhost`.
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => match p.parse::<u16>() {
            Ok(p) => (h, Some(p)),
            Err(_) => (rest, None),
        },
        _ => (rest, None),
    };
    let port = port
        .or(default_port)
        .ok_or_else(|| format!("{value}: expected http://HOST:PORT"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse::<IpAddr>()
            .map_err(|_| format!("{value}: {host:?} is not an IP address (or localhost)"))?
    };
    Ok(SocketAddr::new(ip, port))
}
