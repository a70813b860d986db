//! The studio's jobs API (`/api/v1/*`, README "Studio and its jobs API"): options, jobs
//! with server-sent progress events and previews, the history of the outputs folder,
//! its images, and the parameters of any PNG.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::AppState;
use super::error::{ApiError, ErrorKind};
use super::jobs::{JobEntry, JobEvent, Outcome};
use super::outputs::{NameError, gen_params, params_json};
use super::queue::{find_model, submit};
use super::registry::ModelEntry;
use super::request::{MAX_IMAGES, MAX_SIZE, MAX_STEPS, parse_body, read_body};
use super::worker::ProgressSink;
use crate::error::Error;
use crate::pipeline::{DEFAULT_GUIDANCE, GenerateRequest, Generated};
use crate::png_info::{self, short_name};
use crate::schedulers::Sampler;

/// Most history items one page may ask for.
const MAX_HISTORY_PAGE: usize = 500;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/options", get(options))
        .route("/api/v1/jobs", post(create_job))
        .route("/api/v1/jobs/{id}", get(get_job).delete(cancel_job))
        .route("/api/v1/jobs/{id}/events", get(job_events))
        .route("/api/v1/history", get(history))
        .route("/api/v1/images/{name}", get(image))
        .route("/api/v1/png-info", post(png_info_route))
}

fn json_reply(status: StatusCode, v: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn model_json(state: &AppState, entry: &ModelEntry) -> Value {
    let d = state.defaults(entry);
    json!({
        "name": entry.name,
        "default_width": d.width,
        "default_height": d.height,
        "default_steps": d.steps,
        "default_scheduler": short_name(entry.worker.info.default_scheduler),
    })
}

async fn options(State(state): State<Arc<AppState>>) -> Response {
    let models = state.registry.list();
    let schedulers: Vec<Value> = Sampler::all()
        .map(|s| json!({ "name": short_name(s), "label": s.a1111_name(), "class": s.diffusers_name() }))
        .collect();
    let first = models.first();
    let defaults = first.map(|m| (state.defaults(m), m.worker.info.default_scheduler));
    let defaults = defaults.as_ref();
    json_reply(
        StatusCode::OK,
        json!({
            "models": models.iter().map(|m| model_json(&state, m)).collect::<Vec<_>>(),
            "default_model": first.map(|m| m.name.clone()),
            "schedulers": schedulers,
            "defaults": {
                "steps": defaults.map_or(state.config.default_steps, |(d, _)| d.steps),
                "guidance_scale": DEFAULT_GUIDANCE,
                "width": defaults.map_or(state.config.default_width, |(d, _)| d.width),
                "height": defaults.map_or(state.config.default_height, |(d, _)| d.height),
                "scheduler": defaults.map(|(_, s)| short_name(*s)),
                "num_images": 1,
            },
            // LoRAs in the loras folder, by the name the `loras` field takes.
            "loras": crate::serve::loras::list(&state.config.lora_dir())
                .into_iter()
                .map(|l| l.name)
                .collect::<Vec<_>>(),
            "limits": {
                "max_steps": MAX_STEPS,
                "max_size": MAX_SIZE,
                "max_images": MAX_IMAGES,
            },
        }),
    )
}

/// The resolved parameters a job reports.
fn job_params(entry: &ModelEntry, r: &GenerateRequest) -> Value {
    let scheduler = r.scheduler.unwrap_or(entry.worker.info.default_scheduler);
    json!({
        "prompt": r.prompts.first(),
        "negative_prompt": r.negative_prompts.first().cloned().unwrap_or_default(),
        "seed": r.seed,
        "num_inference_steps": r.steps,
        "guidance_scale": r.guidance,
        "width": r.width,
        "height": r.height,
        "scheduler": short_name(scheduler),
        "num_images": r.num_images_per_prompt,
        "prompt_syntax": r.prompt_syntax.as_str(),
        // img2img / inpainting (the images themselves are not echoed).
        "init_image": r.init_image.is_some(),
        "mask": r.mask.is_some(),
        "strength": r.init_image.as_ref().map(|_| r.strength),
    })
}

async fn create_job(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Response, ApiError> {
    let body = read_body(req, state.config.max_request_size).await?;
    let mut value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the JSON body does not parse: {e}")))?;
    let model = match value.as_object_mut().map(|o| o.remove("model")) {
        None => return Err(ApiError::bad_request("expected a JSON object")),
        Some(None | Some(Value::Null)) => None,
        Some(Some(Value::String(m))) => Some(m),
        Some(Some(other)) => {
            return Err(ApiError::bad_request(format!(
                "\"model\" must be a model name, got {other}"
            )));
        }
    };
    let entry = match model {
        Some(m) => find_model(&state, &m)?,
        None => state
            .registry
            .list()
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::new(ErrorKind::ModelNotFound, "no model is loaded"))?,
    };
    // A1111's `-1` (random) is the studio's too; `/predictions` keeps refusing it.
    if let Some(o) = value.as_object_mut()
        && o.get("seed").and_then(Value::as_i64) == Some(-1)
    {
        o.remove("seed");
    }
    let params = parse_body(value.to_string().as_bytes(), true)?;
    let request = params.into_request(&state.defaults(&entry))?;
    let job = state
        .jobs
        .create(&entry.name, job_params(&entry, &request), request.steps);
    // A job of n images is n requests with seeds seed, seed + 1, ... (as A1111 numbers
    // a batch), so each image has its own seed and reproduces from its parameters. They
    // reach the worker together, which batches them into one UNet pass per step; the
    // first one reports the job's progress and previews.
    let requests: Vec<GenerateRequest> = (0..request.num_images_per_prompt as u64)
        .map(|i| GenerateRequest {
            seed: request.seed.wrapping_add(i),
            num_images_per_prompt: 1,
            ..request.clone()
        })
        .collect();
    let mut receivers = Vec::with_capacity(requests.len());
    for (i, r) in requests.iter().enumerate() {
        let sink: Option<ProgressSink> = (i == 0).then(|| {
            let job = job.clone();
            Arc::new(move |p| job.progress(p)) as ProgressSink
        });
        match submit(&state, &entry, r.clone(), job.cancel.clone(), sink) {
            Ok(rx) => receivers.push(rx),
            Err(e) => {
                // The ones already queued are dropped before they run.
                job.cancel.store(true, Ordering::SeqCst);
                state.jobs.remove(&job.id);
                return Err(e);
            }
        }
    }
    let id = job.id.clone();
    tokio::spawn(async move {
        let mut answers = Vec::with_capacity(receivers.len());
        for rx in receivers {
            answers.push(rx.await);
        }
        let outcome = outcome(&state, &entry, &job, &requests, answers).await;
        let written = match &outcome {
            Outcome::Done(names) => names.clone(),
            _ => Vec::new(),
        };
        if !state.jobs.finish(&job, outcome) {
            // Cancelled while its images were written: it leaves nothing behind.
            state.outputs.remove(&written);
        }
    });
    Ok(json_reply(StatusCode::ACCEPTED, json!({ "id": id })))
}

type Answer = Result<crate::error::Result<Generated>, tokio::sync::oneshot::error::RecvError>;

/// How a job ended, writing its images (each with its own seed in its parameters) when
/// every request of it succeeded and it was not cancelled.
async fn outcome(
    state: &Arc<AppState>,
    entry: &Arc<ModelEntry>,
    job: &JobEntry,
    requests: &[GenerateRequest],
    answers: Vec<Answer>,
) -> Outcome {
    if job.cancel.load(Ordering::SeqCst) {
        return Outcome::Cancelled;
    }
    let mut done = Vec::with_capacity(answers.len());
    for (request, answer) in requests.iter().zip(answers) {
        match answer {
            Ok(Ok(generated)) => done.push((gen_params(entry, request, &generated), generated)),
            Ok(Err(Error::Cancelled { .. })) => return Outcome::Cancelled,
            Ok(Err(e)) => return Outcome::Failed(ApiError::from(e).message),
            Err(_) => return Outcome::Failed("the worker stopped before answering".into()),
        }
    }
    let writer = state.clone();
    let written = tokio::task::spawn_blocking(move || {
        let mut names = Vec::new();
        for (params, generated) in &done {
            match writer.outputs.write(&generated.images, params) {
                Ok(n) => names.extend(n),
                Err(e) => {
                    writer.outputs.remove(&names);
                    return Err(e);
                }
            }
        }
        Ok(names)
    })
    .await;
    match written {
        Ok(Ok(names)) => Outcome::Done(names),
        Ok(Err(e)) => Outcome::Failed(format!("writing the images: {e}")),
        Err(e) => Outcome::Failed(format!("writing the images: {e}")),
    }
}

fn find_job(state: &AppState, id: &str) -> Result<Arc<JobEntry>, ApiError> {
    state
        .jobs
        .get(id)
        .ok_or_else(|| ApiError::new(ErrorKind::ResourceNotFound, format!("Job not found: {id}")))
}

async fn get_job(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(json_reply(StatusCode::OK, find_job(&state, &id)?.to_json()))
}

async fn cancel_job(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = find_job(&state, &id)?;
    job.cancel.store(true, Ordering::SeqCst);
    state.jobs.finish(&job, Outcome::Cancelled);
    Ok(json_reply(StatusCode::OK, job.to_json()))
}

fn sse_event(ev: &JobEvent) -> Event {
    Event::default().event(ev.name).data(ev.data.to_string())
}

async fn job_events(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = find_job(&state, &id)?;
    let (first, rx) = job.subscribe();
    // (the next event to send, the receiver; `None` once the stream is over)
    let start = Some((Some(first), rx));
    let stream = futures_util::stream::unfold(start, |st| async move {
        let (pending, mut rx) = st?;
        let ev = match pending {
            Some(ev) => ev,
            None => loop {
                match rx.recv().await {
                    Ok(ev) => break ev,
                    // A slow client skips the events it missed.
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return None,
                }
            },
        };
        let next = (!ev.last).then_some((None, rx));
        Some((Ok::<_, Infallible>(sse_event(&ev)), next))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn query_number(
    q: &HashMap<String, String>,
    name: &str,
    default: usize,
) -> Result<usize, ApiError> {
    match q.get(name) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|_| {
            ApiError::bad_request(format!("{name} must be a non-negative integer, got {v:?}"))
        }),
    }
}

async fn history(
    State(state): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let limit = query_number(&q, "limit", 50)?;
    let offset = query_number(&q, "offset", 0)?;
    if !(1..=MAX_HISTORY_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be 1..={MAX_HISTORY_PAGE}, got {limit}"
        )));
    }
    let reader = state.clone();
    let (total, items) = tokio::task::spawn_blocking(move || reader.outputs.history(limit, offset))
        .await
        .map_err(|e| ApiError::internal(format!("reading the history: {e}")))?
        .map_err(|e| ApiError::internal(format!("reading the history: {e}")))?;
    let items: Vec<Value> = items
        .into_iter()
        .map(|item| {
            let params = item
                .parameters
                .as_deref()
                .map(|t| params_json(&png_info::parse(t)));
            json!({
                "name": item.name,
                "url": format!("/api/v1/images/{}", item.name),
                "created": item.created,
                "parameters": item.parameters,
                "params": params,
            })
        })
        .collect();
    Ok(json_reply(
        StatusCode::OK,
        json!({ "total": total, "items": items }),
    ))
}

async fn image(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let path = state.outputs.path_of(&name).map_err(|e| match e {
        NameError::Invalid => ApiError::bad_request(format!(
            "image name {name:?}: expected a file name of the outputs folder"
        )),
        NameError::Missing => ApiError::new(
            ErrorKind::ResourceNotFound,
            format!("Image not found: {name}"),
        ),
    })?;
    let bytes = tokio::task::spawn_blocking(move || std::fs::read(path))
        .await
        .map_err(|e| ApiError::internal(format!("reading {name}: {e}")))?
        .map_err(|e| ApiError::internal(format!("reading {name}: {e}")))?;
    let download = q.get("download").is_some_and(|v| v != "0" && v != "false");
    let mut res = ([(header::CONTENT_TYPE, "image/png")], bytes).into_response();
    if download {
        let value = format!("attachment; filename=\"{name}\"");
        if let Ok(v) = header::HeaderValue::from_str(&value) {
            res.headers_mut().insert(header::CONTENT_DISPOSITION, v);
        }
    }
    Ok(res)
}

async fn png_info_route(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Response, ApiError> {
    let body = read_body(req, state.config.max_request_size).await?;
    if !png_info::is_png(&body) {
        return Err(ApiError::bad_request("the body is not a PNG file"));
    }
    let text =
        png_info::read_parameters(&body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let params = text
        .as_deref()
        .map_or_else(|| json!({}), |t| params_json(&png_info::parse(t)));
    Ok(json_reply(
        StatusCode::OK,
        json!({ "parameters": text, "params": params }),
    ))
}
