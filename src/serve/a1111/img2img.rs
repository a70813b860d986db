//! `POST /sdapi/v1/img2img`: A1111's `img2imgapi` (`modules/api/api.py`) on wgsd's queue.
//!
//! The txt2img route's request, iterations, progress and reply (`super::txt2img`), plus
//! one init image (resize mode 0 to `width` x `height`, the image's own size when they
//! are absent) and `denoising_strength`, run as diffusers' `StableDiffusionImg2ImgPipeline`
//! (`crate::img2img`): `int(steps * strength)` steps are run, where A1111's k-diffusion
//! samplers differ slightly in how they trim the schedule.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;

use super::errors::A1111Error;
use super::request::Mode;
use crate::serve::AppState;

pub async fn img2img(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Response, A1111Error> {
    super::txt2img::handle(state, req, Mode::Img2Img).await
}
