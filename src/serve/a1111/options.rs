//! `GET/POST /sdapi/v1/options` (A1111's `shared.opts` over its API) and the checkpoint
//! names: wgsd's registered model names are the checkpoint titles.
//!
//! Options wgsd does not know are stored and echoed back, as A1111 stores them.
//! `sd_model_checkpoint` switches the model `txt2img` uses by default. Options that would
//! change the image in a way wgsd cannot follow (CLIP skip, an ENSD, another VAE,
//! another sample format) are refused with a 422 naming them, here and in a request's
//! `override_settings`.

use std::sync::{Arc, Mutex, MutexGuard};

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::errors::A1111Error;
use super::fields::Body;
use crate::png_info;
use crate::serve::AppState;
use crate::serve::registry::ModelEntry;
use crate::serve::request::read_body;

/// The options A1111 clients set through the API, stored as sent.
#[derive(Debug, Default)]
pub struct Options {
    stored: Mutex<Map<String, Value>>,
    /// The model `txt2img` uses when a request does not name one.
    checkpoint: Mutex<Option<String>>,
}

impl Options {
    fn stored(&self) -> MutexGuard<'_, Map<String, Value>> {
        self.stored.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn checkpoint(&self) -> MutexGuard<'_, Option<String>> {
        self.checkpoint.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A1111's checkpoint title for a model.
pub fn title(entry: &ModelEntry) -> String {
    entry.name.clone()
}

/// The registered model a checkpoint name means: its title, also with A1111's
/// ` [hash]` suffix or a file extension (`name.safetensors [abc123]`).
pub fn find_checkpoint(state: &AppState, name: &str) -> Option<Arc<ModelEntry>> {
    let mut t = name.trim();
    if t.ends_with(']')
        && let Some(i) = t.rfind(" [")
    {
        t = &t[..i];
    }
    if let Some(e) = state.registry.get(t) {
        return Some(e);
    }
    [".safetensors", ".ckpt", ".zip", ".mar"]
        .iter()
        .find_map(|ext| t.strip_suffix(ext))
        .and_then(|stem| state.registry.get(stem))
}

/// The model `txt2img` uses unless told: the one `sd_model_checkpoint` chose while it
/// stays registered, else the first registered.
pub fn default_model(state: &AppState) -> Option<Arc<ModelEntry>> {
    let chosen = state.a1111.options.checkpoint().clone();
    chosen
        .and_then(|n| state.registry.get(&n))
        .or_else(|| state.registry.list().into_iter().next())
}

/// Whether wgsd can follow `key = value`; the error says why not.
pub fn check_setting(key: &str, value: &Value) -> Result<(), String> {
    let ok = match key {
        "CLIP_stop_at_last_layers" => value.is_null() || value.as_f64() == Some(1.0),
        "eta_noise_seed_delta" => value.is_null() || value.as_f64() == Some(0.0),
        "sd_vae" => matches!(value.as_str(), None | Some("Automatic" | "None")),
        "samples_format" => value.as_str().is_none_or(|f| f.eq_ignore_ascii_case("png")),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "wgsd cannot honour {key} = {value}: it would change the image (supported: the default)"
        ))
    }
}

/// `GET /sdapi/v1/options`: wgsd's values of the options clients read, then every stored one.
pub async fn get_options(State(state): State<Arc<AppState>>) -> Json<Value> {
    let model = default_model(&state);
    let mut out = json!({
        "sd_model_checkpoint": model.as_deref().map(title),
        "sd_checkpoint_hash": model.as_ref().and_then(|m| m.worker.info.sha256.clone()),
        "sd_vae": "Automatic",
        "CLIP_stop_at_last_layers": 1,
        "eta_noise_seed_delta": 0,
        "samples_format": "png",
        "samples_save": true,
        "outdir_samples": state.outputs.dir().display().to_string(),
        "outdir_txt2img_samples": state.outputs.dir().display().to_string(),
        "enable_pnginfo": true,
        "live_previews_enable": true,
        "show_progress_every_n_steps": 1,
        "sd_checkpoints_limit": state.registry.list().len(),
    });
    if let Some(o) = out.as_object_mut() {
        for (k, v) in state.a1111.options.stored().iter() {
            if k != "sd_model_checkpoint" {
                o.insert(k.clone(), v.clone());
            }
        }
    }
    Json(out)
}

/// `POST /sdapi/v1/options`: stores every key; `sd_model_checkpoint` must name a model.
pub async fn set_options(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Json<Value>, A1111Error> {
    let bytes = read_body(req, state.config.max_request_size).await?;
    let body = Body::parse(&bytes)?;
    let mut errors = Vec::new();
    let mut checkpoint = None;
    for (key, value) in body.as_map() {
        if key == "sd_model_checkpoint" && !value.is_null() {
            let name = value.as_str().unwrap_or_default();
            match find_checkpoint(&state, name) {
                Some(e) => checkpoint = Some(e.name.clone()),
                None => {
                    return Err(A1111Error::http(
                        StatusCode::NOT_FOUND,
                        format!("model {value} not found"),
                    ));
                }
            }
        } else if let Err(msg) = check_setting(key, value) {
            errors.push(super::errors::FieldError::body_field(
                key,
                msg,
                "value_error",
            ));
        }
    }
    if !errors.is_empty() {
        return Err(A1111Error::Validation(errors));
    }
    if let Some(c) = checkpoint {
        *state.a1111.options.checkpoint() = Some(c);
    }
    let mut stored = state.a1111.options.stored();
    for (key, value) in body.as_map() {
        stored.insert(key.clone(), value.clone());
    }
    Ok(Json(Value::Null))
}

/// `GET /sdapi/v1/sd-models`.
pub async fn sd_models(State(state): State<Arc<AppState>>) -> Json<Value> {
    let list: Vec<Value> = state
        .registry
        .list()
        .iter()
        .map(|m| {
            let sha = m.worker.info.sha256.clone();
            json!({
                "title": title(m),
                "model_name": m.name,
                "hash": sha.as_deref().map(png_info::short_hash),
                "sha256": sha,
                "filename": m.archive.display().to_string(),
                "config": null,
            })
        })
        .collect();
    Json(Value::from(list))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_wgsd_follows() {
        assert!(check_setting("CLIP_stop_at_last_layers", &json!(1)).is_ok());
        assert!(check_setting("CLIP_stop_at_last_layers", &json!(2)).is_err());
        assert!(check_setting("eta_noise_seed_delta", &json!(31337)).is_err());
        assert!(check_setting("sd_vae", &json!("Automatic")).is_ok());
        assert!(check_setting("sd_vae", &json!("vae-ft-mse.safetensors")).is_err());
        assert!(check_setting("samples_format", &json!("jpg")).is_err());
        assert!(check_setting("anything_else", &json!({"x": 1})).is_ok());
    }
}
