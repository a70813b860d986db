//! `GET /metrics` on the metrics address: Prometheus text with TorchServe's series names
//! and labels, and wgsd's own, after real requests over loopback HTTP.

use std::collections::HashMap;

use wgsd::serve::start;

mod serve_common;
use serve_common::{agent, tiny_config};

/// Sample lines `name{labels} value` -> value, keyed by the text before the value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The one sample whose key starts with `name{` and holds every `label="value"` given.
fn sample(all: &HashMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let hits: Vec<f64> = all
        .iter()
        .filter(|(k, _)| {
            (k.starts_with(&format!("{name}{{")) || *k == name)
                && labels
                    .iter()
                    .all(|(l, v)| k.contains(&format!("{l}=\"{v}\"")))
        })
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "expected one sample of {name} {labels:?}, got {hits:?}"
    );
    hits[0]
}

#[test]
fn metrics_after_requests() {
    let server = start(tiny_config()).expect("server starts");
    let addrs = server.addrs();
    let agent = agent();
    let metrics_url = format!("http://{}/metrics", addrs.metrics);

    // Before any request: the type lines exist, the memory gauge is set by the load.
    let mut r = agent.get(&metrics_url).call().expect("metrics");
    assert_eq!(r.status(), 200);
    let ctype = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(ctype.starts_with("text/plain"), "content type {ctype}");
    let text = r.body_mut().read_to_string().expect("body");
    for name in [
        "ts_inference_requests_total",
        "ts_inference_latency_microseconds",
        "ts_queue_latency_microseconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} counter")),
            "{name} missing:\n{text}"
        );
    }
    let before = samples(&text);
    assert!(sample(&before, "wgsd_gpu_memory_bytes", &[("model_name", "sd")]) > 0.0);

    // Two good predictions (3 steps each) and one bad one (400).
    let url = format!("http://{}/predictions/sd", addrs.inference);
    for prompt in ["a red apple", "a green pear"] {
        let mut r = agent.post(&url).send(prompt).expect("predict");
        assert_eq!(r.status(), 200);
        let _ = r.body_mut().read_to_string().expect("body");
    }
    let mut r = agent
        .post(&url)
        .header("content-type", "application/json")
        .send(r#"{"prompt": "x", "num_inference_steps": 0}"#)
        .expect("bad request");
    assert_eq!(r.status(), 400);
    let _ = r.body_mut().read_to_string();
    // Unknown models are not counted under any model.
    let mut r = agent
        .post(format!("http://{}/predictions/nope", addrs.inference))
        .send("x")
        .expect("404");
    assert_eq!(r.status(), 404);
    let _ = r.body_mut().read_to_string();

    let text = agent
        .get(&metrics_url)
        .call()
        .expect("metrics")
        .body_mut()
        .read_to_string()
        .expect("body");
    let m = samples(&text);
    let ts = [("model_name", "sd"), ("model_version", "1.0")];
    assert_eq!(sample(&m, "ts_inference_requests_total", &ts), 3.0);
    assert!(sample(&m, "ts_inference_latency_microseconds", &ts) > 0.0);
    assert!(sample(&m, "ts_queue_latency_microseconds", &ts) >= 0.0);
    assert!(text.contains("hostname=\""), "TorchServe's hostname label");
    assert_eq!(
        sample(
            &m,
            "wgsd_requests_total",
            &[("model_name", "sd"), ("status", "200")]
        ),
        2.0
    );
    assert_eq!(
        sample(
            &m,
            "wgsd_requests_total",
            &[("model_name", "sd"), ("status", "400")]
        ),
        1.0
    );
    assert!(!text.contains("model_name=\"nope\""));
    let sd = [("model_name", "sd")];
    assert_eq!(sample(&m, "wgsd_images_generated_total", &sd), 2.0);
    assert_eq!(sample(&m, "wgsd_denoising_steps_total", &sd), 6.0);
    assert_eq!(sample(&m, "wgsd_unet_passes_total", &sd), 6.0);
    assert_eq!(server.metrics().unet_passes("sd"), 6);
    assert!(sample(&m, "wgsd_denoising_steps_per_second", &sd) > 0.0);
    assert_eq!(sample(&m, "wgsd_queue_length", &sd), 0.0);
    assert_eq!(sample(&m, "wgsd_inference_latency_seconds_count", &sd), 2.0);
    assert_eq!(sample(&m, "wgsd_queue_latency_seconds_count", &sd), 2.0);
    assert!(sample(&m, "wgsd_gpu_memory_bytes", &sd) > 0.0);

    // Only /metrics is served there.
    let r = agent
        .get(format!("http://{}/ping", addrs.metrics))
        .call()
        .expect("404");
    assert_eq!(r.status(), 404);
    server.shutdown().expect("clean shutdown");
}
