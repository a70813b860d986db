//! The studio's jobs: each generation request made through `POST /api/v1/jobs` gets an
//! opaque id, a state (`queued`, `running`, then `done`, `failed` or `cancelled`), and a
//! broadcast of its progress to the event streams that watch it. Finished jobs stay
//! readable for a while: the last [`KEEP_FINISHED`] of them.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use base64::Engine;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::worker::StepProgress;

/// Finished jobs kept in memory (older ones are forgotten; their images stay on disk).
pub const KEEP_FINISHED: usize = 256;
/// Events buffered per job for a slow event stream (it skips what it missed).
const EVENT_BUFFER: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Done => "done",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Done | JobStatus::Failed | JobStatus::Cancelled
        )
    }

    /// The event a stream ends with for this (final) status.
    fn event_name(self) -> &'static str {
        match self {
            JobStatus::Done => "done",
            JobStatus::Failed => "error",
            _ => "cancelled",
        }
    }
}

/// How a job ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The names of its images in the outputs folder.
    Done(Vec<String>),
    Failed(String),
    Cancelled,
}

/// One server-sent event: its name and JSON data.
#[derive(Debug, Clone)]
pub struct JobEvent {
    pub name: &'static str,
    pub data: Value,
    /// The stream ends after this one.
    pub last: bool,
}

#[derive(Debug)]
struct State {
    status: JobStatus,
    step: usize,
    steps: usize,
    eta_s: Option<f64>,
    /// Seconds from creation to the end, once it ended.
    elapsed_end: Option<f64>,
    images: Vec<String>,
    error: Option<String>,
    /// The latest preview as a `data:` URL.
    preview: Option<String>,
}

/// Where a job stands (what A1111's `/sdapi/v1/progress` reports).
#[derive(Debug, Clone)]
pub struct JobProgress {
    pub status: JobStatus,
    pub step: usize,
    pub steps: usize,
    pub eta_s: Option<f64>,
    pub elapsed_s: f64,
    /// The latest preview as a `data:image/png;base64,` URL.
    pub preview: Option<String>,
}

/// One job.
#[derive(Debug)]
pub struct JobEntry {
    pub id: String,
    pub model: String,
    /// The resolved request parameters (the job object's `params`).
    pub params: Value,
    /// Set by `DELETE`: the worker drops the job, or stops it between steps.
    pub cancel: Arc<AtomicBool>,
    created: Instant,
    state: Mutex<State>,
    events: broadcast::Sender<JobEvent>,
}

/// A small PNG of a preview image as a `data:` URL.
fn preview_url(p: &StepProgress) -> Option<String> {
    let img = p.preview.as_ref()?;
    let rgb = image::RgbImage::from_raw(img.width as u32, img.height as u32, img.data.clone())?;
    let mut png = std::io::Cursor::new(Vec::new());
    rgb.write_to(&mut png, image::ImageFormat::Png).ok()?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(png.get_ref());
    Some(format!("data:image/png;base64,{b64}"))
}

impl JobEntry {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn elapsed(&self, s: &State) -> f64 {
        s.elapsed_end
            .unwrap_or_else(|| self.created.elapsed().as_secs_f64())
    }

    fn object(&self, s: &State) -> Value {
        let images: Vec<Value> = s
            .images
            .iter()
            .map(|n| json!({ "name": n, "url": format!("/api/v1/images/{n}") }))
            .collect();
        json!({
            "id": self.id,
            "model": self.model,
            "status": s.status.as_str(),
            "step": s.step,
            "steps": s.steps,
            "eta_s": s.eta_s,
            "elapsed_s": self.elapsed(s),
            "params": self.params,
            "images": images,
            "error": s.error,
        })
    }

    /// The job object (`GET /api/v1/jobs/{id}`).
    pub fn to_json(&self) -> Value {
        self.object(&self.lock())
    }

    pub fn status(&self) -> JobStatus {
        self.lock().status
    }

    /// Its state now.
    pub fn snapshot(&self) -> JobProgress {
        let s = self.lock();
        JobProgress {
            status: s.status,
            step: s.step,
            steps: s.steps,
            eta_s: s.eta_s,
            elapsed_s: self.elapsed(&s),
            preview: s.preview.clone(),
        }
    }

    fn progress_data(&self, s: &State) -> Value {
        json!({
            "status": s.status.as_str(),
            "step": s.step,
            "steps": s.steps,
            "eta_s": s.eta_s,
            "elapsed_s": self.elapsed(s),
            "preview": s.preview,
        })
    }

    /// A denoising step finished (called on the worker thread).
    pub fn progress(&self, p: StepProgress) {
        let preview = preview_url(&p);
        let mut s = self.lock();
        if s.status.is_final() {
            return;
        }
        s.status = JobStatus::Running;
        s.step = p.step;
        s.steps = p.steps;
        let per_step = p.elapsed.as_secs_f64() / p.step.max(1) as f64;
        s.eta_s = Some(per_step * p.steps.saturating_sub(p.step) as f64);
        s.preview = preview;
        let data = self.progress_data(&s);
        // Sent under the lock, so a stream that subscribes under it misses nothing.
        let _ = self.events.send(JobEvent {
            name: "progress",
            data,
            last: false,
        });
    }

    /// Ends the job; `false` (and no change) when it had ended already.
    fn finish(&self, outcome: Outcome) -> bool {
        let mut s = self.lock();
        if s.status.is_final() {
            return false;
        }
        s.elapsed_end = Some(self.created.elapsed().as_secs_f64());
        s.eta_s = None;
        match outcome {
            Outcome::Done(images) => {
                s.status = JobStatus::Done;
                s.step = s.steps;
                s.images = images;
            }
            Outcome::Failed(message) => {
                s.status = JobStatus::Failed;
                s.error = Some(message);
            }
            Outcome::Cancelled => s.status = JobStatus::Cancelled,
        }
        let event = JobEvent {
            name: s.status.event_name(),
            data: self.object(&s),
            last: true,
        };
        let _ = self.events.send(event);
        true
    }

    /// What a new event stream starts with (the final event of a job that has ended, else
    /// a `progress` event with the current state), and the receiver of what follows.
    pub fn subscribe(&self) -> (JobEvent, broadcast::Receiver<JobEvent>) {
        let s = self.lock();
        let rx = self.events.subscribe();
        let first = if s.status.is_final() {
            JobEvent {
                name: s.status.event_name(),
                data: self.object(&s),
                last: true,
            }
        } else {
            JobEvent {
                name: "progress",
                data: self.progress_data(&s),
                last: false,
            }
        };
        (first, rx)
    }
}

#[derive(Debug, Default)]
struct Jobs {
    by_id: HashMap<String, Arc<JobEntry>>,
    /// Ids of finished jobs, oldest first.
    finished: VecDeque<String>,
}

/// Every job the server knows.
#[derive(Debug, Default)]
pub struct JobRegistry {
    jobs: Mutex<Jobs>,
    counter: AtomicU64,
}

impl JobRegistry {
    fn lock(&self) -> MutexGuard<'_, Jobs> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new queued job of `steps` steps.
    pub fn create(&self, model: &str, params: Value, steps: usize) -> Arc<JobEntry> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        let id = format!(
            "{:012x}{n:04x}",
            nanos.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16
        );
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let job = Arc::new(JobEntry {
            id: id.clone(),
            model: model.to_string(),
            params,
            cancel: Arc::new(AtomicBool::new(false)),
            created: Instant::now(),
            state: Mutex::new(State {
                status: JobStatus::Queued,
                step: 0,
                steps,
                eta_s: None,
                elapsed_end: None,
                images: Vec::new(),
                error: None,
                preview: None,
            }),
            events,
        });
        self.lock().by_id.insert(id, job.clone());
        job
    }

    pub fn get(&self, id: &str) -> Option<Arc<JobEntry>> {
        self.lock().by_id.get(id).cloned()
    }

    /// Forgets a job that never got queued.
    pub fn remove(&self, id: &str) {
        self.lock().by_id.remove(id);
    }

    /// Ends `job` with `outcome` (tells its streams); `false` when it had ended already.
    /// Past [`KEEP_FINISHED`] finished jobs, the oldest is forgotten.
    pub fn finish(&self, job: &JobEntry, outcome: Outcome) -> bool {
        if !job.finish(outcome) {
            return false;
        }
        let mut jobs = self.lock();
        jobs.finished.push_back(job.id.clone());
        while jobs.finished.len() > KEEP_FINISHED {
            if let Some(old) = jobs.finished.pop_front() {
                jobs.by_id.remove(&old);
            }
        }
        true
    }

    /// Jobs known (running and kept).
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::pipeline::Image;

    #[test]
    fn lifecycle_and_events() {
        let jobs = JobRegistry::default();
        let job = jobs.create("m", json!({ "prompt": "p" }), 4);
        assert_eq!(job.status(), JobStatus::Queued);
        let (first, mut rx) = job.subscribe();
        assert_eq!((first.name, first.last), ("progress", false));
        job.progress(StepProgress {
            step: 1,
            steps: 4,
            elapsed: Duration::from_secs(2),
            preview: Some(Image {
                width: 2,
                height: 2,
                data: vec![9; 12],
            }),
        });
        let ev = rx.try_recv().expect("progress event");
        assert_eq!(ev.name, "progress");
        assert_eq!(ev.data["step"], 1);
        assert_eq!(ev.data["eta_s"], 6.0);
        let url = ev.data["preview"].as_str().expect("preview");
        let b64 = url
            .strip_prefix("data:image/png;base64,")
            .expect("data URL");
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("base64");
        assert_eq!(
            image::load_from_memory(&png)
                .expect("png")
                .to_rgb8()
                .dimensions(),
            (2, 2)
        );
        assert!(jobs.finish(&job, Outcome::Done(vec!["00000-1.png".into()])));
        assert!(!jobs.finish(&job, Outcome::Cancelled), "ends once");
        let ev = rx.try_recv().expect("done event");
        assert_eq!((ev.name, ev.last), ("done", true));
        assert_eq!(ev.data["status"], "done");
        assert_eq!(ev.data["images"][0]["url"], "/api/v1/images/00000-1.png");
        let (first, _) = job.subscribe();
        assert_eq!((first.name, first.last), ("done", true));
    }

    #[test]
    fn finished_jobs_are_bounded() {
        let jobs = JobRegistry::default();
        let first = jobs.create("m", Value::Null, 1);
        let ids: Vec<String> = (0..KEEP_FINISHED + 10)
            .map(|_| {
                let j = jobs.create("m", Value::Null, 1);
                jobs.finish(&j, Outcome::Failed("x".into()));
                j.id.clone()
            })
            .collect();
        assert_eq!(jobs.len(), KEEP_FINISHED + 1, "the running one stays");
        assert!(jobs.get(&first.id).is_some());
        assert!(jobs.get(&ids[0]).is_none());
        assert!(jobs.get(&ids[ids.len() - 1]).is_some());
        let unique: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "ids are unique");
    }
}
