//! A1111's global generation state over wgsd's jobs: `GET /sdapi/v1/progress`,
//! `POST /sdapi/v1/interrupt` and `POST /sdapi/v1/skip` (A1111's `modules/shared_state.py`
//! and `progressapi` in `modules/api/api.py`).
//!
//! Each `txt2img` call is a [`Run`]: a studio job in the [`JobRegistry`] (its step,
//! ETA and latent previews, also on `/api/v1/jobs/{id}/events`) plus A1111's counters
//! (`job_no` of `job_count` iterations, the step within the iteration). Interrupt and
//! skip act on the current run, the oldest one that is running (A1111 runs one at a time;
//! wgsd's queue may hold more): both set the running iteration's `finish_early` flag, so
//! its images are decoded as they are; interrupt also stops the iterations after it.
//!
//! [`JobRegistry`]: crate::serve::jobs::JobRegistry

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use axum::Json;
use axum::extract::{Query, State};
use serde_json::{Value, json};

use crate::serve::AppState;
use crate::serve::jobs::{JobEntry, JobStatus};

/// One `txt2img` call.
#[derive(Debug)]
pub struct Run {
    pub job: Arc<JobEntry>,
    /// Iterations (`n_iter`).
    pub job_count: usize,
    /// When it started, as A1111 stamps jobs (`YYYYmmddHHMMSS`, UTC).
    pub timestamp: String,
    steps: usize,
    started: Instant,
    job_no: AtomicUsize,
    step: AtomicUsize,
    interrupted: AtomicBool,
    skipped: AtomicBool,
    /// The running iteration's `finish_early` flag.
    current: Mutex<Arc<AtomicBool>>,
}

impl Run {
    pub fn new(job: Arc<JobEntry>, job_count: usize, steps: usize) -> Run {
        Run {
            job,
            job_count,
            timestamp: timestamp(SystemTime::now()),
            steps,
            started: Instant::now(),
            job_no: AtomicUsize::new(0),
            step: AtomicUsize::new(0),
            interrupted: AtomicBool::new(false),
            skipped: AtomicBool::new(false),
            current: Mutex::new(Arc::new(AtomicBool::new(false))),
        }
    }

    fn current(&self) -> MutexGuard<'_, Arc<AtomicBool>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts iteration `n`: its `finish_early` flag, or `None` once interrupted.
    pub fn begin_iteration(&self, n: usize) -> Option<Arc<AtomicBool>> {
        let mut current = self.current();
        if self.interrupted.load(Ordering::SeqCst) {
            return None;
        }
        // A skip ends the iteration it hit, as A1111's `state.skipped` is reset per batch.
        self.skipped.store(false, Ordering::SeqCst);
        self.job_no.store(n, Ordering::SeqCst);
        self.step.store(0, Ordering::SeqCst);
        let flag = Arc::new(AtomicBool::new(false));
        *current = flag.clone();
        Some(flag)
    }

    /// A denoising step of the running iteration finished.
    pub fn on_step(&self, step: usize) {
        self.step.store(step, Ordering::SeqCst);
    }

    pub fn interrupt(&self) {
        let current = self.current();
        self.interrupted.store(true, Ordering::SeqCst);
        current.store(true, Ordering::SeqCst);
    }

    pub fn skip(&self) {
        let current = self.current();
        self.skipped.store(true, Ordering::SeqCst);
        current.store(true, Ordering::SeqCst);
    }

    pub fn interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }

    fn state(&self, job: &str) -> Value {
        json!({
            "skipped": self.skipped.load(Ordering::SeqCst),
            "interrupted": self.interrupted(),
            "stopping_generation": false,
            "job": job,
            "job_count": self.job_count,
            "job_timestamp": self.timestamp,
            "job_no": self.job_no.load(Ordering::SeqCst),
            "sampling_step": self.step.load(Ordering::SeqCst),
            "sampling_steps": self.steps,
        })
    }
}

/// The runs in flight, oldest first, and the last one that ended.
#[derive(Debug, Default)]
pub struct Tracker {
    active: Mutex<Vec<Arc<Run>>>,
    last: Mutex<Option<Arc<Run>>>,
}

impl Tracker {
    fn active(&self) -> MutexGuard<'_, Vec<Arc<Run>>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn last(&self) -> MutexGuard<'_, Option<Arc<Run>>> {
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a run; it leaves when the returned guard drops (answered or abandoned).
    pub fn start(&self, run: Run) -> RunGuard<'_> {
        let run = Arc::new(run);
        self.active().push(run.clone());
        RunGuard { tracker: self, run }
    }

    /// The run A1111's global state describes: the oldest running one, else the oldest.
    pub fn current(&self) -> Option<Arc<Run>> {
        let active = self.active();
        active
            .iter()
            .find(|r| r.job.status() == JobStatus::Running)
            .or_else(|| active.first())
            .cloned()
    }

    fn end(&self, run: &Arc<Run>) {
        self.active().retain(|r| !Arc::ptr_eq(r, run));
        *self.last() = Some(run.clone());
    }
}

/// Keeps a run in the [`Tracker`] while it lives.
pub struct RunGuard<'a> {
    tracker: &'a Tracker,
    pub run: Arc<Run>,
}

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        self.tracker.end(&self.run);
    }
}

/// A1111's progress estimate: iterations done plus the running one's share of steps.
fn progress_of(job_no: usize, job_count: usize, step: usize, steps: usize) -> f64 {
    let count = job_count.max(1) as f64;
    let mut p = 0.01 + job_no as f64 / count;
    if steps > 0 {
        p += step as f64 / steps as f64 / count;
    }
    p
}

/// `GET /sdapi/v1/progress[?skip_current_image=true]`.
pub async fn progress(
    State(state): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    let skip_image = q
        .get("skip_current_image")
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"));
    let tracker = &state.a1111.tracker;
    let Some(run) = tracker.current() else {
        // Idle: A1111 reports zeros after `state.end()`, keeping the last flags.
        let last = tracker.last().clone();
        let state = match last {
            Some(r) => {
                let mut s = r.state("");
                s["job_count"] = json!(0);
                s
            }
            None => json!({
                "skipped": false, "interrupted": false, "stopping_generation": false,
                "job": "", "job_count": 0, "job_timestamp": "0", "job_no": 0,
                "sampling_step": 0, "sampling_steps": 0,
            }),
        };
        return Json(json!({
            "progress": 0.0,
            "eta_relative": 0.0,
            "state": state,
            "current_image": null,
            "textinfo": null,
        }));
    };
    let snap = run.job.snapshot();
    let step = run.step.load(Ordering::SeqCst);
    let job_no = run.job_no.load(Ordering::SeqCst);
    let p = progress_of(job_no, run.job_count, step, run.steps);
    let elapsed = run.started.elapsed().as_secs_f64();
    let eta_relative = elapsed / p - elapsed;
    let current_image = (!skip_image && snap.status == JobStatus::Running)
        .then(|| {
            snap.preview
                .as_deref()
                .and_then(|u| u.strip_prefix("data:image/png;base64,"))
                .map(str::to_string)
        })
        .flatten();
    let textinfo =
        (snap.status == JobStatus::Running).then(|| format!("Sampling step {step}/{}", run.steps));
    Json(json!({
        "progress": p.min(1.0),
        "eta_relative": eta_relative,
        "state": run.state("scripts_txt2img"),
        "current_image": current_image,
        "textinfo": textinfo,
    }))
}

/// `POST /sdapi/v1/interrupt`: the current run decodes what it has and stops.
pub async fn interrupt(State(state): State<Arc<AppState>>) -> Json<Value> {
    if let Some(run) = state.a1111.tracker.current() {
        run.interrupt();
    }
    Json(json!({}))
}

/// `POST /sdapi/v1/skip`: the current run's running iteration decodes what it has; the
/// next iteration starts.
pub async fn skip(State(state): State<Arc<AppState>>) -> Json<Value> {
    if let Some(run) = state.a1111.tracker.current() {
        run.skip();
    }
    Json(Value::Null)
}

/// `YYYYmmddHHMMSS` in UTC.
pub fn timestamp(t: SystemTime) -> String {
    let u = crate::serve::clock::utc(t);
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        u.year, u.month, u.day, u.hour, u.minute, u.second
    )
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn timestamps() {
        let at = |s| timestamp(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "19700101000000");
        assert_eq!(at(951_782_400), "20000229000000");
        assert_eq!(at(1_700_000_000), "20231114221320");
    }

    #[test]
    fn progress_estimate() {
        assert!((progress_of(0, 1, 0, 20) - 0.01).abs() < 1e-12);
        assert!((progress_of(0, 2, 10, 20) - 0.26).abs() < 1e-12);
        assert!((progress_of(1, 2, 20, 20) - 1.01).abs() < 1e-12);
    }

    #[test]
    fn interrupt_and_skip_flags() {
        let jobs = crate::serve::jobs::JobRegistry::default();
        let run = Run::new(jobs.create("m", Value::Null, 4), 3, 4);
        let first = run.begin_iteration(0).expect("runs");
        run.skip();
        assert!(first.load(Ordering::SeqCst), "skip finishes the iteration");
        let second = run.begin_iteration(1).expect("a skip goes on");
        assert!(!second.load(Ordering::SeqCst));
        run.interrupt();
        assert!(second.load(Ordering::SeqCst));
        assert!(
            run.begin_iteration(2).is_none(),
            "an interrupt stops the rest"
        );
    }
}
