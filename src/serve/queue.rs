//! Putting a generation request on a model's GPU worker queue, the one path every API
//! (TorchServe, KServe, OIP, the studio's jobs) takes, so they all share the queue and
//! its dynamic batching.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::AppState;
use super::error::{ApiError, ErrorKind};
use super::registry::ModelEntry;
use super::worker::{Job, ProgressSink, SubmitError};
use crate::error::Result;
use crate::pipeline::{GenerateRequest, Generated, VaeTiling};

/// The registered model, or TorchServe's 404.
pub fn find_model(state: &AppState, model: &str) -> Result<Arc<ModelEntry>, ApiError> {
    state
        .registry
        .get(model)
        .ok_or_else(|| ApiError::model_not_found(model))
}

/// Sets the worker's cancel flag when dropped (the waiting handler went away).
pub struct CancelOnDrop(pub Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Notices a handler dropped before its answer (the client disconnected): one log line
/// with the request id, and the model's cancelled-requests counter.
struct CancelNotice<'a> {
    state: &'a AppState,
    model: &'a str,
    request_id: Option<String>,
    answered: bool,
}

impl Drop for CancelNotice<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.state.metrics.request_cancelled(self.model);
            eprintln!(
                "wgsd serve: request {} for model {} cancelled: the client went away",
                self.request_id.as_deref().unwrap_or("-"),
                self.model
            );
        }
    }
}

/// Queues `request` without waiting: the answer comes through the returned receiver.
/// Setting `cancel` drops the job before it starts, or stops it between steps;
/// `progress` hears of every step.
pub fn submit(
    state: &AppState,
    entry: &ModelEntry,
    mut request: GenerateRequest,
    cancel: Arc<AtomicBool>,
    progress: Option<ProgressSink>,
) -> Result<tokio::sync::oneshot::Receiver<Result<Generated>>, ApiError> {
    let model = &entry.name;
    if request.vae_tiling == VaeTiling::Auto {
        request.vae_tiling = entry.settings.vae_tiling;
    }
    if state.shutting_down.load(Ordering::SeqCst) {
        return Err(ApiError::new(
            ErrorKind::ServiceUnavailable,
            "the server is shutting down",
        ));
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job = Job {
        request,
        cancel,
        reply: tx,
        enqueued: std::time::Instant::now(),
        progress,
    };
    entry.worker.submit(job).map_err(|e| match e {
        SubmitError::Full => ApiError::new(
            ErrorKind::ServiceUnavailable,
            format!("Model \"{model}\" has no worker to serve inference request. Please use scale workers API to add workers. (job queue full)"),
        ),
        SubmitError::Gone => ApiError::new(
            ErrorKind::ServiceUnavailable,
            format!("the worker for model \"{model}\" has stopped"),
        ),
    })?;
    Ok(rx)
}

/// Queues `requests` together (the worker may batch them) and waits for all their
/// answers, in order, at most the model's `responseTimeout`; `progress` hears of the
/// first one's steps. Setting `cancel` (or dropping the future, through the caller's
/// [`CancelOnDrop`]) stops them. Used by the APIs that number a batch's seeds
/// themselves (AUTOMATIC1111's, OpenAI's).
pub async fn run_group(
    state: &AppState,
    entry: &ModelEntry,
    requests: Vec<GenerateRequest>,
    cancel: Arc<AtomicBool>,
    progress: Option<ProgressSink>,
) -> Result<Vec<Generated>, ApiError> {
    let mut receivers = Vec::with_capacity(requests.len());
    let mut sink = progress;
    for r in requests {
        match submit(state, entry, r, cancel.clone(), sink.take()) {
            Ok(rx) => receivers.push(rx),
            Err(e) => {
                // The ones already queued are dropped before they run.
                cancel.store(true, Ordering::SeqCst);
                return Err(e);
            }
        }
    }
    let mut notice = CancelNotice {
        state,
        model: &entry.name,
        request_id: None,
        answered: false,
    };
    let wait = async {
        let mut out = Vec::with_capacity(receivers.len());
        for rx in receivers {
            match rx.await {
                Ok(Ok(g)) => out.push(g),
                Ok(Err(e)) => return Err(ApiError::from(e)),
                Err(_) => return Err(ApiError::internal("the worker stopped before answering")),
            }
        }
        Ok(out)
    };
    let secs = entry.settings.response_timeout_s;
    let answer = if secs == 0 {
        Ok(wait.await)
    } else {
        tokio::time::timeout(std::time::Duration::from_secs(secs), wait).await
    };
    notice.answered = true;
    match answer {
        Ok(r) => r,
        Err(_) => {
            cancel.store(true, Ordering::SeqCst);
            Err(ApiError::new(
                ErrorKind::RequestTimeout,
                format!(
                    "Model \"{}\" did not answer within its response timeout of {secs} s; the request was cancelled",
                    entry.name
                ),
            ))
        }
    }
}

/// Queues `request` on the model's worker and waits for the images, at most the model's
/// `responseTimeout`. Dropping the returned future (the client went away) cancels the
/// job between denoising steps.
pub async fn run_job(
    state: &AppState,
    entry: &ModelEntry,
    request: GenerateRequest,
    request_id: Option<&str>,
) -> Result<Generated, ApiError> {
    let cancel = Arc::new(AtomicBool::new(false));
    let _guard = CancelOnDrop(cancel.clone());
    let rx = submit(state, entry, request, cancel, None)?;
    let mut notice = CancelNotice {
        state,
        model: &entry.name,
        request_id: request_id.map(str::to_string),
        answered: false,
    };
    let model = &entry.name;
    // `responseTimeout`: past it the client gets 504 and the job is cancelled (the
    // guard sets its flag as this returns). 0 means no limit.
    let secs = entry.settings.response_timeout_s;
    let answer = if secs == 0 {
        rx.await
    } else {
        match tokio::time::timeout(std::time::Duration::from_secs(secs), rx).await {
            Ok(a) => a,
            Err(_) => {
                notice.answered = true;
                return Err(ApiError::new(
                    ErrorKind::RequestTimeout,
                    format!(
                        "Model \"{model}\" did not answer within its response timeout of {secs} s; the request was cancelled"
                    ),
                ));
            }
        }
    };
    notice.answered = true;
    match answer {
        Ok(Ok(g)) => Ok(g),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(ApiError::internal("the worker stopped before answering")),
    }
}
