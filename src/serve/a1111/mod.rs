//! AUTOMATIC1111's web UI API (`/sdapi/v1/*`, its `modules/api/api.py`), so the tools
//! written for it (webuiapi, SillyTavern, Open WebUI, bots, editor plugins) drive wgsd.
//!
//! Requests go through the same queue and workers as every other route; prompts are read
//! with A1111's prompt syntax ([`PromptSyntax::A1111`](crate::pipeline::PromptSyntax)).
//! Errors have A1111's shapes ([`errors`]); `--api-auth` adds basic auth ([`auth`]).
//! README "AUTOMATIC1111 and OpenAI APIs" lists what is supported, ignored and refused.

mod auth;
pub mod errors;
mod fields;
mod img2img;
mod inpaint;
mod lists;
mod options;
pub mod progress;
pub mod request;
mod samplers;
mod txt2img;

use std::sync::Arc;

use axum::Router;
use axum::middleware;
use axum::routing::{get, post};

use super::AppState;

/// What the A1111 routes keep between requests.
#[derive(Debug, Default)]
pub struct A1111State {
    pub options: options::Options,
    pub tracker: progress::Tracker,
}

/// The `/sdapi/v1` routes, behind `--api-auth` when it is set.
pub(crate) fn routes(state: Arc<AppState>) -> Router<Arc<AppState>> {
    let p = |name: &str| format!("/sdapi/v1/{name}");
    let mut router = Router::new()
        .route(&p("txt2img"), post(txt2img::txt2img))
        .route(&p("img2img"), post(img2img::img2img))
        .route(&p("progress"), get(progress::progress))
        .route(&p("interrupt"), post(progress::interrupt))
        .route(&p("skip"), post(progress::skip))
        .route(
            &p("options"),
            get(options::get_options).post(options::set_options),
        )
        .route(&p("sd-models"), get(options::sd_models))
        .route(&p("samplers"), get(samplers::samplers))
        .route(&p("schedulers"), get(samplers::schedulers))
        .route(&p("refresh-checkpoints"), post(lists::refresh_checkpoints))
        .route(&p("cmd-flags"), get(lists::cmd_flags))
        .route(&p("memory"), get(lists::memory))
        .route(&p("embeddings"), get(lists::embeddings))
        .route(&p("scripts"), get(lists::scripts))
        .route(&p("loras"), get(lists::loras))
        .route(&p("refresh-loras"), post(lists::refresh_checkpoints));
    for empty in [
        "upscalers",
        "latent-upscale-modes",
        "hypernetworks",
        "face-restorers",
        "realesrgan-models",
        "prompt-styles",
        "sd-vae",
        "script-info",
    ] {
        router = router.route(&p(empty), get(lists::empty_list));
    }
    router.route_layer(middleware::from_fn_with_state(state, auth::require_basic))
}
