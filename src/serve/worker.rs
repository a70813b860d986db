//! One GPU worker thread per model: it owns the `Gpu` and the `Pipeline` (which borrows
//! the `Gpu`, so both live on the thread's stack) and runs jobs from a bounded queue.
//!
//! Dynamic batching, as TorchServe's `batchSize` / `maxBatchDelay`: the worker takes the
//! oldest job, then gathers up to `batch_size` jobs with the same
//! [`BatchKey`](crate::pipeline::BatchKey) (size, steps, guidance, scheduler), waiting at
//! most `max_batch_delay_ms` from the first pick-up, and runs them as one
//! [`Pipeline::generate_batch`] call (one UNet pass per step for all of them). Jobs that do
//! not fit wait, in order, for a later batch. Every request gets the image it would get
//! alone: each keeps its own seed, prompt and negative prompt (ancestral samplers
//! included: each request's per-step noise comes from its own generator).
//!
//! A job whose client went away is dropped before it starts, and leaves the queue as soon
//! as the worker notices (between steps of the running batch), freeing its slot; a batch
//! whose clients have all gone stops between steps. After a failure (GPU out of memory
//! included) the worker drops its cached buffers and serves the next job; a batch that ran
//! out of memory is retried one job at a time.
//!
//! A panic while a batch runs (a bug: wgsd's code returns errors, it does not panic on
//! input) fails that batch's jobs with a 500 and the worker serves the next job, as
//! TorchServe's frontend answers 500 for a request whose worker process died and restarts
//! the worker. Only a worker thread that is really gone makes `/ping` report Unhealthy.
//!
//! A job may carry a [`ProgressSink`]: it hears of every denoising step with a preview of
//! that job's latents (the studio's progress events); the pipeline computes previews only
//! when a job of the batch has a sink.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::metrics::{BatchStats, Metrics};
use super::registry::ModelSettings;
use crate::error::{Error, Result};
use crate::gpu::{AdapterChoice, Gpu};
use crate::pipeline::{GenerateRequest, Generated, Image, Pipeline, PipelineOptions};
use crate::schedulers::Sampler;

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
    /// Most bytes of GPU memory the model may hold (weights included); past it a request
    /// fails with out-of-memory (507) and the worker goes on. `None`: no limit.
    pub memory_limit: Option<u64>,
    /// What to warm up for before reporting ready.
    pub warmup: super::WarmupSize,
    /// The size [`WarmupSize::Default`](super::WarmupSize::Default) means.
    pub default_size: (usize, usize),
    /// Tests only (see [`ServeConfig::panic_on_prompt`](super::ServeConfig::panic_on_prompt)).
    pub panic_on_prompt: Option<String>,
}

/// What the loaded model is, reported once it is ready.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// (width, height) it was trained at: UNet `sample_size` x VAE scale factor.
    pub native_size: (usize, usize),
    /// The archive's `scheduler_config.json` class.
    pub default_scheduler: Sampler,
    /// Hex SHA-256 of the archive file (`None` for a diffusers folder).
    pub sha256: Option<String>,
}

/// One denoising step of one job.
#[derive(Debug, Clone)]
pub struct StepProgress {
    pub step: usize,
    pub steps: usize,
    /// Since the first step started.
    pub elapsed: Duration,
    /// The job's first image's latents through the linear latent-to-RGB approximation
    /// (latent resolution); `None` when the model has no 4-channel latents.
    pub preview: Option<Image>,
}

/// Hears of each step of a job (called on the worker thread: keep it short).
pub type ProgressSink = Arc<dyn Fn(StepProgress) + Send + Sync>;

/// One request for the worker; the answer goes back through `reply`.
pub struct Job {
    pub request: GenerateRequest,
    /// Set when the client went away: the worker skips the job or stops between steps.
    pub cancel: Arc<AtomicBool>,
    pub reply: tokio::sync::oneshot::Sender<Result<Generated>>,
    /// When it was queued (queue latency).
    pub enqueued: Instant,
    /// Per-step progress with previews (`None`: none, and no preview cost).
    pub progress: Option<ProgressSink>,
}

impl Job {
    /// The client no longer waits for the answer.
    fn abandoned(&self) -> bool {
        self.cancel.load(Ordering::SeqCst) || self.reply.is_closed()
    }
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
    pub info: ModelInfo,
    queue: Option<Sender<Job>>,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    thread: Option<JoinHandle<()>>,
}

/// What the server and the worker thread both see.
#[derive(Debug)]
struct Shared {
    /// Jobs queued and not yet started or dropped (at most `capacity`).
    queued: AtomicUsize,
    capacity: usize,
    alive: AtomicBool,
}

impl Worker {
    /// Starts the thread, opens the GPU, loads the model and warms it up; returns once the
    /// model is ready (or with the load or warm-up error).
    pub fn spawn(config: WorkerConfig) -> Result<Worker> {
        // The channel itself is unbounded: `queued` bounds it, and is given back as soon
        // as a job leaves, including a cancelled job the worker has not reached yet.
        let (tx, rx) = channel::<Job>();
        let (ready_tx, ready_rx) = channel::<Result<ModelInfo>>();
        let shared = Arc::new(Shared {
            queued: AtomicUsize::new(0),
            capacity: config.queue_size.max(1),
            alive: AtomicBool::new(true),
        });
        let thread_shared = shared.clone();
        let name = config.name.clone();
        let archive = config.archive.clone();
        let metrics = config.metrics.clone();
        let intake = Intake {
            rx,
            pending: VecDeque::new(),
            closed: false,
            shared: shared.clone(),
            metrics: config.metrics.clone(),
            model: config.name.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("wgsd-worker-{name}"))
            .spawn(move || {
                // Marks the worker gone however the thread ends, a panic included.
                let _gone = Gone(thread_shared);
                run(&config, intake, ready_tx);
            })
            .map_err(|e| Error::Gpu(format!("cannot start the worker thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(info)) => Ok(Worker {
                name,
                archive,
                info,
                queue: Some(tx),
                shared,
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
        let cap = self.shared.capacity;
        self.shared
            .queued
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |q| {
                (q < cap).then_some(q + 1)
            })
            .map_err(|_| SubmitError::Full)?;
        // Counted before sending: the worker may take the job at once.
        self.metrics.queue_changed(&self.name, 1);
        queue.send(job).map_err(|_| {
            self.shared.queued.fetch_sub(1, Ordering::SeqCst);
            self.metrics.queue_changed(&self.name, -1);
            SubmitError::Gone
        })
    }

    /// Jobs waiting (queued, not yet started).
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::SeqCst)
    }

    pub fn is_alive(&self) -> bool {
        self.shared.alive.load(Ordering::SeqCst)
    }
}

/// Clears `alive` when dropped (the worker thread's last act).
struct Gone(Arc<Shared>);

impl Drop for Gone {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::SeqCst);
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

/// The worker's side of the queue: the channel plus the jobs it has taken out of it but
/// not started (they did not fit the batch being gathered), oldest first.
struct Intake {
    rx: Receiver<Job>,
    pending: VecDeque<Job>,
    /// The server side has gone: no more jobs will come.
    closed: bool,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    model: String,
}

impl Intake {
    /// A job leaves the queue (started, dropped or answered): its slot is free again.
    fn release(&self, n: usize) {
        if n > 0 {
            self.shared.queued.fetch_sub(n, Ordering::SeqCst);
            self.metrics.queue_changed(&self.model, -(n as i64));
        }
    }

    /// The job if it should run: an abandoned one is dropped and an invalid one answered
    /// at once (so it never fails a batch).
    fn admit(&self, job: Job, pipeline: &Pipeline) -> Option<Job> {
        if job.abandoned() {
            self.release(1);
            return None;
        }
        if let Err(e) = pipeline.validate(&job.request) {
            self.release(1);
            let _ = job.reply.send(Err(e));
            return None;
        }
        Some(job)
    }

    /// The oldest job still wanted, waiting for one; `None` once the queue is closed and
    /// empty.
    fn next(&mut self, pipeline: &Pipeline) -> Option<Job> {
        loop {
            let job = match self.pending.pop_front() {
                Some(j) => j,
                None if self.closed => return None,
                None => match self.rx.recv() {
                    Ok(j) => j,
                    Err(_) => {
                        self.closed = true;
                        continue;
                    }
                },
            };
            if let Some(job) = self.admit(job, pipeline) {
                return Some(job);
            }
        }
    }

    /// `first` and up to `settings.batch_size - 1` compatible jobs: waiting ones first, in
    /// order, then new ones arriving before `max_batch_delay_ms` has passed since `picked`.
    fn gather(
        &mut self,
        first: Job,
        picked: Instant,
        pipeline: &Pipeline,
        settings: &ModelSettings,
    ) -> Vec<Job> {
        let size = settings.batch_size.max(1);
        let key = pipeline.batch_key(&first.request);
        let mut batch = vec![first];
        if size == 1 || key.is_none() {
            return batch;
        }
        let fits = |job: &Job| pipeline.batch_key(&job.request) == key;
        let mut rest = VecDeque::with_capacity(self.pending.len());
        while let Some(job) = self.pending.pop_front() {
            if batch.len() < size && fits(&job) {
                if let Some(job) = self.admit(job, pipeline) {
                    batch.push(job);
                }
            } else {
                rest.push_back(job);
            }
        }
        self.pending = rest;
        let deadline = picked + Duration::from_millis(settings.max_batch_delay_ms);
        while batch.len() < size && !self.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.rx.recv_timeout(left) {
                Ok(job) => {
                    let Some(job) = self.admit(job, pipeline) else {
                        continue;
                    };
                    if fits(&job) {
                        batch.push(job);
                    } else {
                        self.pending.push_back(job);
                    }
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => self.closed = true,
            }
        }
        batch
    }

    /// Takes whatever has arrived and drops the waiting jobs whose clients have gone,
    /// freeing their slots (called between denoising steps).
    fn sweep(&mut self, pipeline: &Pipeline) {
        loop {
            match self.rx.try_recv() {
                Ok(job) => {
                    if let Some(job) = self.admit(job, pipeline) {
                        self.pending.push_back(job);
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.closed = true;
                    break;
                }
            }
        }
        let before = self.pending.len();
        self.pending.retain(|j| !j.abandoned());
        self.release(before - self.pending.len());
    }
}

fn run(config: &WorkerConfig, mut intake: Intake, ready: Sender<Result<ModelInfo>>) {
    let gpu = match Gpu::new(&config.adapter) {
        Ok(g) => g,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    // Set before loading: the weights count against the budget too.
    gpu.set_memory_limit(config.memory_limit);
    let mut options = config.pipeline.clone();
    if let Some(p) = config.settings.precision {
        options.precision = p;
    }
    let t0 = Instant::now();
    let pipeline = match Pipeline::load(&gpu, &config.archive, &options) {
        Ok(p) => p,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let load = t0.elapsed();
    let info = ModelInfo {
        native_size: pipeline.native_size(),
        default_scheduler: pipeline.default_scheduler(),
        sha256: pipeline.model().sha256.clone(),
    };
    let warmup = match config.warmup {
        super::WarmupSize::Default => Some(config.default_size),
        super::WarmupSize::Size(w, h) => Some((w, h)),
        super::WarmupSize::Native => Some(info.native_size),
        super::WarmupSize::Off => None,
    };
    // Ready only once every pipeline the default size needs is built (and compiled).
    let warm = match warmup {
        None => None,
        Some((w, h)) => match pipeline.warm_up(w, h, 1) {
            Ok(wu) => Some(wu),
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        },
    };
    match warm {
        Some(wu) => eprintln!(
            "wgsd serve: model {}: loaded in {:.1} s, warmed up at {}x{} in {:.1} s ({} pipelines)",
            config.name,
            load.as_secs_f64(),
            wu.width,
            wu.height,
            wu.elapsed.as_secs_f64(),
            wu.pipelines_created
        ),
        None => eprintln!(
            "wgsd serve: model {}: loaded in {:.1} s (no warm-up)",
            config.name,
            load.as_secs_f64()
        ),
    }
    // Reported before the ready signal, so a describe right after loading sees it.
    config.metrics.gpu_memory(&config.name, held_bytes(&gpu));
    if ready.send(Ok(info)).is_err() {
        return;
    }
    while let Some(first) = intake.next(&pipeline) {
        let picked = Instant::now();
        let jobs = intake.gather(first, picked, &pipeline, &config.settings);
        intake.release(jobs.len());
        run_batch(config, &gpu, &pipeline, &mut intake, jobs);
        config.metrics.gpu_memory(&config.name, held_bytes(&gpu));
    }
}

/// Runs `jobs` as one batch and answers each. On an error the cached buffers are dropped
/// (what the failed batch held); a batch out of memory is retried one job at a time.
fn run_batch(
    config: &WorkerConfig,
    gpu: &Gpu,
    pipeline: &Pipeline,
    intake: &mut Intake,
    jobs: Vec<Job>,
) {
    let (model, version, metrics) = (&config.name, &config.version, &config.metrics);
    let started = Instant::now();
    for job in &jobs {
        metrics.queue_wait(model, version, started - job.enqueued);
    }
    let requests: Vec<GenerateRequest> = jobs
        .iter()
        .map(|j| GenerateRequest {
            preview: j.progress.is_some(),
            ..j.request.clone()
        })
        .collect();
    // Each job's first latent row (previews come one per row, in the jobs' order).
    let first_rows: Vec<usize> = requests
        .iter()
        .scan(0, |row, r| {
            let first = *row;
            *row += r.prompts.len() * r.num_images_per_prompt;
            Some(first)
        })
        .collect();
    let stop = AtomicBool::new(false);
    let panic_hook = config.panic_on_prompt.as_deref();
    let out = catch_panic(|| {
        let mut on_step = |p: &crate::pipeline::Progress| {
            if let Some(trigger) = panic_hook
                && requests
                    .iter()
                    .any(|r| r.prompts.first().is_some_and(|p| p == trigger))
            {
                panic!("panic_on_prompt: a test asked this generation to panic");
            }
            for (job, &row) in jobs.iter().zip(&first_rows) {
                if let Some(sink) = &job.progress {
                    sink(StepProgress {
                        step: p.step,
                        steps: p.total,
                        elapsed: p.elapsed,
                        preview: p.previews.get(row).cloned(),
                    });
                }
            }
            intake.sweep(pipeline);
            if jobs.iter().all(Job::abandoned) {
                stop.store(true, Ordering::SeqCst);
            }
        };
        pipeline.generate_batch(&requests, &mut on_step, Some(&stop))
    });
    match out {
        Ok(generated) => {
            metrics.batch_done(
                model,
                version,
                &BatchStats {
                    requests: jobs.len(),
                    images: generated.iter().map(|g| g.images.len()).sum(),
                    steps: requests[0].steps,
                    unet_passes: generated.first().map_or(0, |g| g.timesteps.len()),
                    total: started.elapsed(),
                    denoise: generated
                        .first()
                        .map_or(Duration::ZERO, |g| g.timings.denoise),
                },
            );
            for (job, g) in jobs.into_iter().zip(generated) {
                let _ = job.reply.send(Ok(g));
            }
        }
        Err(e) => {
            gpu.trim();
            if matches!(e, Error::OutOfMemory(_)) && jobs.len() > 1 {
                for job in jobs {
                    if !job.abandoned() {
                        run_batch(config, gpu, pipeline, intake, vec![job]);
                    }
                }
                return;
            }
            for job in jobs {
                let _ = job.reply.send(Err(copy_error(&e)));
            }
        }
    }
}

/// Runs `f`, turning a panic into an error (its message kept) so the worker goes on.
fn catch_panic<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        eprintln!("wgsd serve: a generation panicked ({message}); its requests get 500");
        Err(Error::Gpu(format!("the generation panicked: {message}")))
    })
}

/// The same error for each job of a failed batch ([`Error`] is not `Clone`).
fn copy_error(e: &Error) -> Error {
    match e {
        Error::InvalidInput(m) => Error::InvalidInput(m.clone()),
        Error::Lora(e) => Error::InvalidInput(e.to_string()),
        Error::Hires(e) => Error::Hires(e.clone()),
        Error::OutOfMemory(m) => Error::OutOfMemory(m.clone()),
        Error::Cancelled { completed, total } => Error::Cancelled {
            completed: *completed,
            total: *total,
        },
        other => Error::Gpu(other.to_string()),
    }
}

/// Bytes in the GPU allocation pool (live tensors and buffers kept for reuse).
fn held_bytes(gpu: &Gpu) -> u64 {
    let pool = gpu.memory_stats();
    pool.in_use + pool.cached
}
