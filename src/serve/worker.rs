//! One GPU worker thread per model: it owns the `Gpu` and the `Pipeline` (which borrows
//! the `Gpu`, so both live on the thread's stack) and runs jobs from a bounded queue.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

use std::time::Instant;

use super::metrics::{BatchStats, Metrics};
use super::registry::ModelSettings;
use crate::error::{Error, Result};
use crate::gpu::{AdapterChoice, Gpu};
use crate::pipeline::{GenerateRequest, Generated, Pipeline, PipelineOptions};

/// What a worker is started with.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub name: String,
    pub version: String,
    pub archive: PathBuf,
    pub adapter: AdapterChoice,
    pub pipeline: PipelineOptions,
    pub queue_size: usize,
    pub settings: ModelSettings,
    pub metrics: Arc<Metrics>,
}

/// One request for the worker; the answer goes back through `reply`.
pub struct Job {
    pub request: GenerateRequest,
    /// Set when the client went away: the worker skips the job or stops between steps.
    pub cancel: Arc<AtomicBool>,
    pub reply: tokio::sync::oneshot::Sender<Result<Generated>>,
    /// When it was queued (queue latency).
    pub enqueued: Instant,
}

/// Why a job was not queued.
#[derive(Debug)]
pub enum SubmitError {
    /// The queue holds `job_queue_size` jobs already.
    Full,
    /// The worker thread has stopped.
    Gone,
}

/// The server's side of a worker: its queue and whether it is alive.
#[derive(Debug)]
pub struct Worker {
    pub name: String,
    pub archive: PathBuf,
    queue: Option<SyncSender<Job>>,
    alive: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts the thread, opens the GPU and loads the model; returns once the model is
    /// loaded (or with the load error).
    pub fn spawn(config: WorkerConfig) -> Result<Worker> {
        let (tx, rx) = sync_channel::<Job>(config.queue_size.max(1));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let alive = Arc::new(AtomicBool::new(true));
        let thread_alive = alive.clone();
        let name = config.name.clone();
        let archive = config.archive.clone();
        let metrics = config.metrics.clone();
        let thread = std::thread::Builder::new()
            .name(format!("wgsd-worker-{name}"))
            .spawn(move || {
                run(&config, rx, ready_tx);
                thread_alive.store(false, Ordering::SeqCst);
            })
            .map_err(|e| Error::Gpu(format!("cannot start the worker thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Worker {
                name,
                archive,
                queue: Some(tx),
                alive,
                metrics,
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(Error::Gpu(format!(
                    "worker for {name} stopped while loading"
                )))
            }
        }
    }

    /// Queues a job without waiting.
    pub fn submit(&self, job: Job) -> std::result::Result<(), SubmitError> {
        let queue = self.queue.as_ref().ok_or(SubmitError::Gone)?;
        if !self.is_alive() {
            return Err(SubmitError::Gone);
        }
        // Counted before sending: the worker may take the job at once.
        self.metrics.queue_changed(&self.name, 1);
        let sent = queue.try_send(job);
        if sent.is_err() {
            self.metrics.queue_changed(&self.name, -1);
        }
        match sent {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(SubmitError::Full),
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Gone),
        }
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }
}

impl Drop for Worker {
    /// Closing the queue ends the thread after the jobs already queued.
    fn drop(&mut self) {
        self.queue.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(config: &WorkerConfig, rx: Receiver<Job>, ready: std::sync::mpsc::Sender<Result<()>>) {
    let gpu = match Gpu::new(&config.adapter) {
        Ok(g) => g,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let pipeline = match Pipeline::load(&gpu, &config.archive, &config.pipeline) {
        Ok(p) => p,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    if ready.send(Ok(())).is_err() {
        return;
    }
    let (model, version, metrics) = (&config.name, &config.version, &config.metrics);
    metrics.gpu_memory(model, held_bytes(&gpu));
    while let Ok(job) = rx.recv() {
        metrics.queue_changed(model, -1);
        if job.cancel.load(Ordering::SeqCst) || job.reply.is_closed() {
            continue;
        }
        let started = Instant::now();
        metrics.queue_wait(model, version, started - job.enqueued);
        let out = pipeline.generate_with(&job.request, &mut |_| {}, Some(&job.cancel));
        if let Ok(g) = &out {
            metrics.batch_done(
                model,
                version,
                &BatchStats {
                    requests: 1,
                    images: g.images.len(),
                    steps: job.request.steps,
                    unet_passes: g.timesteps.len(),
                    total: started.elapsed(),
                    denoise: g.timings.denoise,
                },
            );
        }
        metrics.gpu_memory(model, held_bytes(&gpu));
        let _ = job.reply.send(out);
    }
}

/// Bytes in the GPU allocation pool (live tensors and buffers kept for reuse).
fn held_bytes(gpu: &Gpu) -> u64 {
    let pool = gpu.memory_stats();
    pool.in_use + pool.cached
}
