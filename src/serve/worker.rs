//! One GPU worker thread per model: it owns the `Gpu` and the `Pipeline` (which borrows
//! the `Gpu`, so both live on the thread's stack) and runs jobs from a bounded queue.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::gpu::{AdapterChoice, Gpu};
use crate::pipeline::{GenerateRequest, Generated, Pipeline, PipelineOptions};

/// One request for the worker; the answer goes back through `reply`.
pub struct Job {
    pub request: GenerateRequest,
    /// Set when the client went away: the worker skips the job or stops between steps.
    pub cancel: Arc<AtomicBool>,
    pub reply: tokio::sync::oneshot::Sender<Result<Generated>>,
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
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts the thread, opens the GPU and loads the model; returns once the model is
    /// loaded (or with the load error).
    pub fn spawn(
        name: &str,
        archive: &Path,
        choice: &AdapterChoice,
        options: &PipelineOptions,
        queue_size: usize,
    ) -> Result<Worker> {
        let (tx, rx) = sync_channel::<Job>(queue_size.max(1));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let alive = Arc::new(AtomicBool::new(true));
        let thread_alive = alive.clone();
        let (choice, options, path) = (choice.clone(), options.clone(), archive.to_path_buf());
        let thread = std::thread::Builder::new()
            .name(format!("wgsd-worker-{name}"))
            .spawn(move || {
                run(&choice, &path, &options, rx, ready_tx);
                thread_alive.store(false, Ordering::SeqCst);
            })
            .map_err(|e| Error::Gpu(format!("cannot start the worker thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Worker {
                name: name.to_string(),
                archive: archive.to_path_buf(),
                queue: Some(tx),
                alive,
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
        match queue.try_send(job) {
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

fn run(
    choice: &AdapterChoice,
    path: &Path,
    options: &PipelineOptions,
    rx: Receiver<Job>,
    ready: std::sync::mpsc::Sender<Result<()>>,
) {
    let gpu = match Gpu::new(choice) {
        Ok(g) => g,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let pipeline = match Pipeline::load(&gpu, path, options) {
        Ok(p) => p,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    if ready.send(Ok(())).is_err() {
        return;
    }
    while let Ok(job) = rx.recv() {
        if job.cancel.load(Ordering::SeqCst) || job.reply.is_closed() {
            continue;
        }
        let out = pipeline.generate_with(&job.request, &mut |_| {}, Some(&job.cancel));
        let _ = job.reply.send(out);
    }
}
