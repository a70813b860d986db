//! Prometheus metrics (`GET /metrics` on the metrics address). TorchServe's names and
//! labels where TorchServe has the metric, so its dashboards keep working
//! (`ts_inference_requests_total`, `ts_inference_latency_microseconds`,
//! `ts_queue_latency_microseconds`, labelled `model_name`, `model_version`, `hostname`),
//! and `wgsd_*` series for what it lacks.

use std::time::Duration;

use prometheus::{
    CounterVec, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every series the server exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    hostname: String,
    ts_requests: IntCounterVec,
    ts_inference_us: CounterVec,
    ts_queue_us: CounterVec,
    requests: IntCounterVec,
    cancelled: IntCounterVec,
    queue_length: IntGaugeVec,
    queue_seconds: HistogramVec,
    inference_seconds: HistogramVec,
    batch_size: HistogramVec,
    images: IntCounterVec,
    steps: IntCounterVec,
    unet_passes: IntCounterVec,
    steps_per_second: GaugeVec,
    gpu_memory: IntGaugeVec,
    /// Every model's pools together (`crate::gpu::pool::process_bytes`), read at render.
    gpu_memory_process: prometheus::IntGauge,
}

const TS_LABELS: &[&str] = &["model_name", "model_version", "hostname"];

/// Latency buckets from 10 ms to ~20 min (generation takes seconds to minutes).
fn seconds_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.01, 2.0, 18).unwrap_or_default()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        // Registration fails only on a duplicate or malformed name: a programming error
        // that every serve test would catch at once.
        fn reg<M: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: M) -> M {
            r.register(Box::new(m.clone()))
                .expect("metric names are unique and valid");
            m
        }
        let counter = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let fcounter = |name: &str, help: &str| {
            reg(
                &registry,
                CounterVec::new(Opts::new(name, help), TS_LABELS).expect("valid metric"),
            )
        };
        let hist = |name: &str, help: &str, buckets: Vec<f64>| {
            reg(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(buckets),
                    &["model_name"],
                )
                .expect("valid metric"),
            )
        };
        let igauge = |name: &str, help: &str| {
            reg(
                &registry,
                IntGaugeVec::new(Opts::new(name, help), &["model_name"]).expect("valid metric"),
            )
        };
        Metrics {
            hostname: hostname(),
            ts_requests: counter(
                "ts_inference_requests_total",
                "Total number of inference requests received.",
                TS_LABELS,
            ),
            ts_inference_us: fcounter(
                "ts_inference_latency_microseconds",
                "Cumulative inference duration in microseconds.",
            ),
            ts_queue_us: fcounter(
                "ts_queue_latency_microseconds",
                "Cumulative queue duration in microseconds.",
            ),
            requests: counter(
                "wgsd_requests_total",
                "Requests answered, by model and HTTP status.",
                &["model_name", "status"],
            ),
            cancelled: counter(
                "wgsd_requests_cancelled_total",
                "Predictions cancelled because the client went away before the answer.",
                &["model_name"],
            ),
            queue_length: igauge(
                "wgsd_queue_length",
                "Requests waiting for the model's GPU worker.",
            ),
            queue_seconds: hist(
                "wgsd_queue_latency_seconds",
                "Time from queueing a request to its batch starting.",
                seconds_buckets(),
            ),
            inference_seconds: hist(
                "wgsd_inference_latency_seconds",
                "Time the GPU worker spent on a request's batch.",
                seconds_buckets(),
            ),
            batch_size: hist(
                "wgsd_batch_size",
                "Requests run together in one batched pass.",
                vec![1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0],
            ),
            images: counter(
                "wgsd_images_generated_total",
                "Images generated.",
                &["model_name"],
            ),
            steps: counter(
                "wgsd_denoising_steps_total",
                "Denoising steps run, counted per request.",
                &["model_name"],
            ),
            unet_passes: counter(
                "wgsd_unet_passes_total",
                "UNet evaluations (one per step per batch: batching makes fewer).",
                &["model_name"],
            ),
            steps_per_second: reg(
                &registry,
                GaugeVec::new(
                    Opts::new(
                        "wgsd_denoising_steps_per_second",
                        "Denoising steps per second of the last batch (steps x requests / denoise time).",
                    ),
                    &["model_name"],
                )
                .expect("valid metric"),
            ),
            gpu_memory: igauge(
                "wgsd_gpu_memory_bytes",
                "GPU memory held by the model's worker (weights and activation pool).",
            ),
            gpu_memory_process: reg(
                &registry,
                prometheus::IntGauge::new(
                    "wgsd_gpu_memory_process_bytes",
                    "GPU memory held by all models of the process; falls when one is unregistered.",
                )
                .expect("valid metric"),
            ),
            registry,
        }
    }

    fn ts(&self, model: &str, version: &str) -> [String; 3] {
        [
            model.to_string(),
            version.to_string(),
            self.hostname.clone(),
        ]
    }

    /// Creates a newly loaded model's series at zero, so dashboards see them (and
    /// `rate()` has a start) before the first request.
    pub fn model_added(&self, model: &str, version: &str) {
        let ts = self.ts(model, version);
        let ts: Vec<&str> = ts.iter().map(String::as_str).collect();
        self.ts_requests.with_label_values(&ts);
        self.ts_inference_us.with_label_values(&ts);
        self.ts_queue_us.with_label_values(&ts);
        for c in [&self.images, &self.steps, &self.unet_passes] {
            c.with_label_values(&[model]);
        }
        self.queue_length.with_label_values(&[model]);
    }

    /// A prediction request for a known model was answered with `status`.
    pub fn request_done(&self, model: &str, version: &str, status: u16) {
        let ts = self.ts(model, version);
        let ts: Vec<&str> = ts.iter().map(String::as_str).collect();
        self.ts_requests.with_label_values(&ts).inc();
        self.requests
            .with_label_values(&[model, &status.to_string()])
            .inc();
    }

    /// A prediction's client went away before its answer (the job was cancelled).
    pub fn request_cancelled(&self, model: &str) {
        self.cancelled.with_label_values(&[model]).inc();
    }

    /// The model's queue grew (`+1`) or shrank (`-1`).
    pub fn queue_changed(&self, model: &str, delta: i64) {
        self.queue_length.with_label_values(&[model]).add(delta);
    }

    /// A request waited `wait` before its batch started.
    pub fn queue_wait(&self, model: &str, version: &str, wait: Duration) {
        let ts = self.ts(model, version);
        let ts: Vec<&str> = ts.iter().map(String::as_str).collect();
        self.ts_queue_us
            .with_label_values(&ts)
            .inc_by(wait.as_secs_f64() * 1e6);
        self.queue_seconds
            .with_label_values(&[model])
            .observe(wait.as_secs_f64());
    }

    /// A batch of `requests` requests ran on the GPU: `images` images, `steps` steps
    /// each, `unet_passes` UNet evaluations in all, in `total` (denoising `denoise`).
    pub fn batch_done(&self, model: &str, version: &str, batch: &BatchStats) {
        let ts = self.ts(model, version);
        let ts: Vec<&str> = ts.iter().map(String::as_str).collect();
        let us = batch.total.as_secs_f64() * 1e6;
        // TorchServe counts the inference time per request.
        self.ts_inference_us
            .with_label_values(&ts)
            .inc_by(us * batch.requests as f64);
        for _ in 0..batch.requests {
            self.inference_seconds
                .with_label_values(&[model])
                .observe(batch.total.as_secs_f64());
        }
        self.batch_size
            .with_label_values(&[model])
            .observe(batch.requests as f64);
        self.images
            .with_label_values(&[model])
            .inc_by(batch.images as u64);
        self.steps
            .with_label_values(&[model])
            .inc_by((batch.steps * batch.requests) as u64);
        self.unet_passes
            .with_label_values(&[model])
            .inc_by(batch.unet_passes as u64);
        let secs = batch.denoise.as_secs_f64();
        if secs > 0.0 {
            self.steps_per_second
                .with_label_values(&[model])
                .set((batch.steps * batch.requests) as f64 / secs);
        }
    }

    /// GPU memory the model's worker holds.
    pub fn gpu_memory(&self, model: &str, bytes: u64) {
        self.gpu_memory
            .with_label_values(&[model])
            .set(bytes.min(i64::MAX as u64) as i64);
    }

    /// Drops every series of an unregistered model, counters included: the series of
    /// models registered and removed over a server's life would otherwise pile up
    /// (Prometheus reads a vanished series as stale, and a re-registered name's
    /// counters as a reset).
    pub fn model_removed(&self, model: &str, version: &str) {
        let ts = self.ts(model, version);
        let ts: Vec<&str> = ts.iter().map(String::as_str).collect();
        let _ = self.ts_requests.remove_label_values(&ts);
        let _ = self.ts_inference_us.remove_label_values(&ts);
        let _ = self.ts_queue_us.remove_label_values(&ts);
        for c in [
            &self.cancelled,
            &self.images,
            &self.steps,
            &self.unet_passes,
        ] {
            let _ = c.remove_label_values(&[model]);
        }
        for h in [
            &self.queue_seconds,
            &self.inference_seconds,
            &self.batch_size,
        ] {
            let _ = h.remove_label_values(&[model]);
        }
        let _ = self.queue_length.remove_label_values(&[model]);
        let _ = self.gpu_memory.remove_label_values(&[model]);
        let _ = self.steps_per_second.remove_label_values(&[model]);
        // `wgsd_requests_total` has a series per status: find the model's.
        for status in self.statuses_of(model) {
            let _ = self.requests.remove_label_values(&[model, &status]);
        }
    }

    /// The `status` labels of `model`'s `wgsd_requests_total` series.
    fn statuses_of(&self, model: &str) -> Vec<String> {
        let label = |m: &prometheus::proto::Metric, name: &str| {
            m.get_label()
                .iter()
                .find(|l| l.name() == name)
                .map(|l| l.value().to_string())
        };
        self.registry
            .gather()
            .iter()
            .filter(|f| f.name() == "wgsd_requests_total")
            .flat_map(|f| f.get_metric())
            .filter(|m| label(m, "model_name").as_deref() == Some(model))
            .filter_map(|m| label(m, "status"))
            .collect()
    }

    /// UNet passes so far for `model` (what the batching test reads).
    pub fn unet_passes(&self, model: &str) -> u64 {
        self.unet_passes.with_label_values(&[model]).get()
    }

    /// Requests waiting in `model`'s queue (the management API's `pendingRequests`).
    pub fn queue_length(&self, model: &str) -> i64 {
        self.queue_length.with_label_values(&[model]).get()
    }

    /// GPU memory `model`'s worker holds (the management API's `memoryUsage`).
    pub fn gpu_memory_bytes(&self, model: &str) -> u64 {
        self.gpu_memory.with_label_values(&[model]).get().max(0) as u64
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let held = crate::gpu::pool::process_bytes();
        self.gpu_memory_process
            .set(held.min(i64::MAX as u64) as i64);
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// What one batched GPU pass did (for [`Metrics::batch_done`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchStats {
    pub requests: usize,
    pub images: usize,
    pub steps: usize,
    pub unet_passes: usize,
    pub total: Duration,
    pub denoise: Duration,
}

/// The metrics API: `GET /metrics` (Prometheus text format 0.0.4).
pub(crate) fn router(state: std::sync::Arc<super::AppState>) -> axum::Router {
    use axum::http::header;
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/metrics",
            get(
                |axum::extract::State(state): axum::extract::State<
                    std::sync::Arc<super::AppState>,
                >| async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        state.metrics.render(),
                    )
                },
            ),
        )
        .with_state(state)
}
