//! The informational `/sdapi/v1` routes: `cmd-flags`, `memory`, `refresh-checkpoints`, and
//! the lists of things wgsd does not have yet (upscalers, LoRAs, embeddings, ...) in the
//! shapes A1111's `modules/api/models.py` gives them, empty.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::serve::AppState;

/// An empty JSON list (upscalers, loras, hypernetworks, face-restorers,
/// realesrgan-models, prompt-styles, sd-vae, latent-upscale-modes, script-info).
pub async fn empty_list() -> Json<Value> {
    Json(json!([]))
}

/// `GET /sdapi/v1/embeddings`: none loaded, none skipped.
pub async fn embeddings() -> Json<Value> {
    Json(json!({ "loaded": {}, "skipped": {} }))
}

/// `GET /sdapi/v1/scripts`: no selectable or always-on scripts.
pub async fn scripts() -> Json<Value> {
    Json(json!({ "txt2img": [], "img2img": [] }))
}

/// `POST /sdapi/v1/refresh-checkpoints`: the registry is always current (models come and
/// go through the management API), so there is nothing to rescan.
pub async fn refresh_checkpoints() -> Json<Value> {
    Json(Value::Null)
}

/// `GET /sdapi/v1/cmd-flags`: A1111's flags that describe this server (credentials are
/// never echoed).
pub async fn cmd_flags(State(state): State<Arc<AppState>>) -> Json<Value> {
    let c = &state.config;
    Json(json!({
        "api": true,
        "nowebui": false,
        "listen": !c.inference_address.ip().is_loopback(),
        "port": c.inference_address.port(),
        "api_auth": (!c.api_auth.is_empty()).then_some("<set>"),
        "api_log": false,
        "ckpt_dir": c.model_store.display().to_string(),
        "lora_dir": c.lora_dir().display().to_string(),
        "outdir_samples": c.outputs_dir.display().to_string(),
        "no_half": matches!(c.pipeline.precision, crate::Precision::F32),
        "lowvram": false,
        "medvram": false,
        "skip_torch_cuda_test": true,
    }))
}

/// (total, available) bytes of system memory, from `/proc/meminfo`.
fn system_memory() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((field("MemTotal:")?, field("MemAvailable:")?))
}

/// Resident bytes of this process, from `/proc/self/status`.
fn resident() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    text.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// `GET /sdapi/v1/memory`: `ram` as A1111 reports it (this process's resident set as
/// `used`); `cuda` says it is unavailable (wgsd runs on wgpu) and wgsd's GPU pools per
/// model follow under `wgsd_gpu`.
pub async fn memory(State(state): State<Arc<AppState>>) -> Json<Value> {
    let ram = match (system_memory(), resident()) {
        (Some((total, _)), Some(rss)) => {
            json!({ "free": total.saturating_sub(rss), "used": rss, "total": total })
        }
        _ => json!({ "error": "memory statistics are read from /proc, which this system lacks" }),
    };
    let gpu: serde_json::Map<String, Value> = state
        .registry
        .list()
        .iter()
        .map(|m| {
            let bytes = state.metrics.gpu_memory_bytes(&m.name);
            (m.name.clone(), json!({ "used": bytes }))
        })
        .collect();
    Json(json!({
        "ram": ram,
        "cuda": { "error": "unavailable: wgsd runs on wgpu, not CUDA" },
        "wgsd_gpu": gpu,
    }))
}

/// `GET /sdapi/v1/loras`: the loras folder as A1111's `networks` extension lists it
/// (`name`, `alias`, `path`, `metadata`); wgsd reports no training metadata.
pub async fn loras(State(state): State<Arc<AppState>>) -> Json<Value> {
    let list: Vec<Value> = crate::serve::loras::list(&state.config.lora_dir())
        .into_iter()
        .map(|e| {
            json!({
                "name": e.name,
                "alias": e.name,
                "path": e.path.display().to_string(),
                "metadata": {},
            })
        })
        .collect();
    Json(Value::Array(list))
}
