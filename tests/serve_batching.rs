//! Scheduling in `wgsd serve`'s GPU worker over real HTTP on loopback with the bundled
//! tiny model: dynamic batching (each client gets exactly its solo image, with fewer UNet
//! passes), cancellation of abandoned jobs, the response timeout (504) and the GPU memory
//! budget (507, then recovery).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use wgsd::Error;
use wgsd::gpu::{AdapterChoice, Gpu};
use wgsd::pipeline::{GenerateRequest, Pipeline, PipelineOptions};
use wgsd::schedulers::Sampler;
use wgsd::serve::{ModelSettings, ServeConfig, start};

mod serve_common;
use serve_common::{agent_with_timeout, decode_nested, root, tiny_config};

/// The tests here time the worker: they run one at a time so that they do not slow each
/// other down on a CPU driver.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn archive() -> PathBuf {
    root().join("weights/sd2-tiny.zip")
}

/// A server for the tiny model on three loopback ports.
fn config(settings: ModelSettings) -> ServeConfig {
    ServeConfig {
        default_settings: settings,
        ..tiny_config()
    }
}

/// The request a client sends (as JSON) and what the library does with it alone.
#[derive(Clone)]
struct Ask {
    prompt: String,
    negative: Option<String>,
    seed: u64,
    steps: usize,
    width: usize,
    height: usize,
    scheduler: Option<&'static str>,
}

impl Ask {
    fn small(i: u64) -> Ask {
        Ask {
            prompt: format!("a photo of object number {i}"),
            negative: (i % 2 == 1).then(|| format!("blurry {i}")),
            seed: 1000 + i * 17,
            steps: 3,
            width: 32,
            height: 24,
            scheduler: None,
        }
    }

    fn json(&self) -> String {
        let mut v = serde_json::json!({
            "prompt": self.prompt,
            "seed": self.seed,
            "num_inference_steps": self.steps,
            "width": self.width,
            "height": self.height,
        });
        if let Some(n) = &self.negative {
            v["negative_prompt"] = n.clone().into();
        }
        if let Some(s) = self.scheduler {
            v["scheduler"] = s.into();
        }
        v.to_string()
    }

    fn request(&self) -> GenerateRequest {
        GenerateRequest {
            negative_prompts: self.negative.iter().cloned().collect(),
            seed: self.seed,
            steps: self.steps,
            width: self.width,
            height: self.height,
            scheduler: self
                .scheduler
                .map(|s| Sampler::parse(s).expect("scheduler")),
            ..GenerateRequest::new(self.prompt.clone())
        }
    }
}

/// Sends `ask` and returns (status, body, seconds taken).
fn send(url: &str, ask: &Ask, timeout: Option<Duration>) -> (u16, String, f64) {
    let t = Instant::now();
    match agent_with_timeout(timeout)
        .post(url)
        .header("Content-Type", "application/json")
        .send(ask.json())
    {
        Ok(mut r) => {
            let status = r.status().as_u16();
            let body = r.body_mut().read_to_string().unwrap_or_default();
            (status, body, t.elapsed().as_secs_f64())
        }
        // A client-side timeout: the client hung up.
        Err(_) => (0, String::new(), t.elapsed().as_secs_f64()),
    }
}

fn error_json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).expect("error body is JSON")
}

/// The library alone: the reference images.
struct Reference {
    _gpu: &'static Gpu,
    pipe: Pipeline<'static>,
}

fn reference() -> Reference {
    let gpu: &'static Gpu = Box::leak(Box::new(Gpu::new(&AdapterChoice::default()).expect("gpu")));
    let pipe = Pipeline::load(gpu, &archive(), &PipelineOptions::default()).expect("pipeline");
    Reference { _gpu: gpu, pipe }
}

/// Largest difference between two byte images.
fn max_diff(a: &[u8], b: &[u8]) -> u8 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}

/// `Pipeline::generate_batch` gives each request exactly its solo images, for the
/// archive's scheduler and an ancestral one (per-request noise streams), with several
/// images per prompt and a mix of negative prompts.
#[test]
fn batch_equals_solo_in_library() {
    let _serial = serial();
    let r = reference();
    for scheduler in [None, Some("euler_a")] {
        let reqs: Vec<GenerateRequest> = (0..3)
            .map(|i| {
                let mut q = Ask {
                    scheduler,
                    ..Ask::small(i)
                }
                .request();
                q.num_images_per_prompt = if i == 1 { 2 } else { 1 };
                q
            })
            .collect();
        let t = Instant::now();
        let batch = r
            .pipe
            .generate_batch(&reqs, &mut |_| {}, None)
            .expect("batch");
        let batch_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for (q, got) in reqs.iter().zip(&batch) {
            let want = r.pipe.generate(q).expect("solo");
            assert_eq!(got.images.len(), want.images.len());
            for (g, w) in got.images.iter().zip(&want.images) {
                assert_eq!(
                    max_diff(&g.data, &w.data),
                    0,
                    "{scheduler:?}: batch image differs from solo (seed {})",
                    q.seed
                );
            }
            assert_eq!(got.seed, q.seed);
        }
        eprintln!(
            "{scheduler:?}: batch of 3 in {batch_s:.2} s, solo runs {:.2} s",
            t.elapsed().as_secs_f64()
        );
    }
}

/// Runs `asks` from concurrent clients and checks each image against the library's solo
/// image; returns (UNet passes the server made, passes the solo runs made).
fn concurrent_clients(batch_size: usize, asks: &[Ask]) -> (u64, u64) {
    let server = start(config(ModelSettings {
        batch_size,
        max_batch_delay_ms: 400,
        ..ModelSettings::default()
    }))
    .expect("server starts");
    let url = format!("http://{}/predictions/sd", server.addr());
    let clients: Vec<_> = asks
        .iter()
        .cloned()
        .map(|ask| {
            let url = url.clone();
            std::thread::spawn(move || send(&url, &ask, None))
        })
        .collect();
    let replies: Vec<_> = clients
        .into_iter()
        .map(|c| c.join().expect("client thread"))
        .collect();
    let served = server.metrics().unet_passes("sd");
    server.shutdown().expect("clean shutdown");

    let r = reference();
    let mut solo_passes = 0;
    for (ask, (status, body, _)) in asks.iter().zip(&replies) {
        assert_eq!(*status, 200, "{body}");
        let (h, w, got) = decode_nested(body);
        assert_eq!((h, w), (ask.height, ask.width));
        let want = r.pipe.generate(&ask.request()).expect("solo");
        solo_passes += want.timesteps.len() as u64;
        assert_eq!(
            got, want.images[0].data,
            "client with seed {} got its solo image",
            ask.seed
        );
    }
    (served, solo_passes)
}

/// Eight clients with batch size 4: two schedulers (so two kinds of batch, the other kind
/// waiting its turn), all different seeds, prompts and negative prompts. Every client gets
/// byte for byte the image `Pipeline::generate` makes for its request alone, and the
/// server makes fewer UNet passes than the requests would alone.
#[test]
fn batching_serves_each_client_its_solo_image() {
    let _serial = serial();
    let asks: Vec<Ask> = (0..8)
        .map(|i| Ask {
            scheduler: (i % 2 == 1).then_some("euler_a"),
            ..Ask::small(i)
        })
        .collect();
    let (served, solo) = concurrent_clients(4, &asks);
    eprintln!("batch size 4: {served} UNet passes for 8 requests ({solo} alone)");
    assert!(
        served < solo,
        "batching observed: {served} passes, {solo} alone"
    );
}

/// The same clients with batch size 1: one UNet pass per step per request.
#[test]
fn batch_size_one_runs_each_request_alone() {
    let _serial = serial();
    let asks: Vec<Ask> = (0..8).map(Ask::small).collect();
    let (served, solo) = concurrent_clients(1, &asks);
    assert_eq!(served, solo);
}

/// A client that hangs up has its job cancelled: the running one stops between steps and
/// a queued one leaves the queue, so with a queue of one the next request is accepted and
/// served at once.
#[test]
fn disconnected_clients_free_their_slots() {
    let _serial = serial();
    let server = start(ServeConfig {
        queue_size: 1,
        ..config(ModelSettings::default())
    })
    .expect("server starts");
    let url = format!("http://{}/predictions/sd", server.addr());
    let long = Ask {
        steps: 500,
        ..Ask::small(1)
    };
    let quick = Duration::from_millis(1500);
    let t = Instant::now();
    // A runs (500 steps: tens of seconds alone), B waits in the queue's one slot; both
    // clients give up after 1.5 s.
    let a = {
        let (url, ask) = (url.clone(), long.clone());
        std::thread::spawn(move || send(&url, &ask, Some(quick)))
    };
    std::thread::sleep(Duration::from_millis(300));
    let b = {
        let (url, ask) = (url.clone(), long.clone());
        std::thread::spawn(move || send(&url, &ask, Some(quick)))
    };
    std::thread::sleep(Duration::from_millis(300));
    // While B holds the slot, a third request is refused.
    let (status, body, _) = send(&url, &Ask::small(2), None);
    assert_eq!(status, 503, "{body}");
    let (sa, _, _) = a.join().expect("client a");
    let (sb, _, _) = b.join().expect("client b");
    assert_eq!((sa, sb), (0, 0), "both clients hung up");
    // Both slots come back within a few steps.
    std::thread::sleep(Duration::from_millis(500));
    let ask = Ask::small(3);
    let (status, body, took) = send(&url, &ask, None);
    assert_eq!(status, 200, "{body}");
    let elapsed = t.elapsed().as_secs_f64();
    eprintln!("served {took:.2} s after asking, {elapsed:.2} s after the first client");
    let passes = server.metrics().unet_passes("sd");
    server.shutdown().expect("clean shutdown");
    let want = reference().pipe.generate(&ask.request()).expect("solo");
    assert_eq!(decode_nested(&body).2, want.images[0].data);
    // Only the served request's passes count; neither long job ran to its end.
    assert_eq!(passes, want.timesteps.len() as u64);
    assert!(took < 10.0, "the next request waited {took:.1} s");
}

/// A job longer than `responseTimeout` gets TorchServe's 504 and is cancelled: the next
/// request is served at once.
#[test]
fn response_timeout_is_504() {
    let _serial = serial();
    let server = start(config(ModelSettings {
        response_timeout_s: 1,
        ..ModelSettings::default()
    }))
    .expect("server starts");
    let url = format!("http://{}/predictions/sd", server.addr());
    let long = Ask {
        steps: 500,
        ..Ask::small(4)
    };
    let (status, body, took) = send(&url, &long, None);
    assert_eq!(status, 504, "{body}");
    let e = error_json(&body);
    assert_eq!(e["code"], 504);
    assert_eq!(e["type"], "RequestTimeoutException");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!((1.0..5.0).contains(&took), "answered after {took:.2} s");
    // The worker is free again: a one-step request is served (the first tries may also
    // time out while the device compiles the kernels the long job never reached; each
    // such try is cancelled too). Had the long job kept running (tens of seconds), every
    // try would time out.
    let ask = Ask {
        steps: 1,
        ..Ask::small(5)
    };
    let mut tries = Vec::new();
    let body = loop {
        let (status, body, took) = send(&url, &ask, None);
        tries.push((status, took));
        match status {
            200 => break body,
            504 if tries.len() < 5 => continue,
            _ => panic!("the worker did not come back: {tries:?} {body}"),
        }
    };
    eprintln!("after the 504: {tries:?}");
    server.shutdown().expect("clean shutdown");
    let want = reference().pipe.generate(&ask.request()).expect("solo");
    assert_eq!(decode_nested(&body).2, want.images[0].data);
}

/// Past the GPU memory budget a request gets 507 in TorchServe's shape; the worker frees
/// what it held and serves the next request with the right image.
#[test]
fn out_of_memory_is_507_and_the_worker_recovers() {
    let _serial = serial();
    // Measure what a small and a large request hold on a fresh device.
    let gpu = Gpu::new(&AdapterChoice::default()).expect("gpu");
    let pipe = Pipeline::load(&gpu, &archive(), &PipelineOptions::default()).expect("pipeline");
    let held = |g: &Gpu| g.memory_stats().peak;
    let weights = held(&gpu);
    let small = Ask::small(6);
    let want = pipe.generate(&small.request()).expect("small");
    let small_peak = held(&gpu);
    let large = Ask {
        width: 256,
        height: 256,
        steps: 1,
        ..Ask::small(7)
    };
    gpu.trim();
    gpu.reset_peak_memory();
    pipe.generate(&large.request()).expect("large");
    let large_peak = held(&gpu);
    let limit = small_peak + (small_peak - weights);
    eprintln!(
        "weights {weights} B, small peak {small_peak} B, large peak {large_peak} B, limit {limit} B"
    );
    assert!(
        large_peak > limit,
        "the large request must not fit the budget"
    );

    // The library under the budget: the large request fails cleanly, the small one works.
    gpu.set_memory_limit(Some(limit));
    assert_eq!(gpu.memory_limit(), Some(limit));
    match pipe.generate(&large.request()) {
        Err(Error::OutOfMemory(m)) => assert!(m.contains("budget"), "{m}"),
        other => panic!(
            "expected out of memory, got {:?}",
            other.map(|g| g.images.len())
        ),
    }
    gpu.trim();
    let again = pipe
        .generate(&small.request())
        .expect("small under the budget");
    assert_eq!(again.images[0].data, want.images[0].data);
    drop(pipe);

    let server = start(ServeConfig {
        gpu_memory_limit: Some(limit),
        ..config(ModelSettings::default())
    })
    .expect("server starts");
    let url = format!("http://{}/predictions/sd", server.addr());
    let (status, body, _) = send(&url, &large, None);
    assert_eq!(status, 507, "{body}");
    let e = error_json(&body);
    assert_eq!(e["code"], 507);
    assert_eq!(e["type"], "OutOfMemoryException");
    for _ in 0..2 {
        let (status, body, _) = send(&url, &small, None);
        assert_eq!(status, 200, "{body}");
        assert_eq!(decode_nested(&body).2, want.images[0].data);
    }
    server.shutdown().expect("clean shutdown");
}
