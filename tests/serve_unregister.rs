//! Unregistering a model lets go of it (issue 16, hardening): every metric series with its
//! name is gone (counters and histograms included, so registering and removing models
//! does not grow `/metrics` without end), and the GPU memory its worker held is returned
//! (`wgsd_gpu_memory_process_bytes`, the sum over every pool of the process, falls by it).

#[path = "serve_common/mod.rs"]
mod serve_common;

use wgsd::serve::start;

use serve_common::{agent, tiny_config};

/// The value of the series `line_start` (name and labels) in Prometheus text.
fn sample(metrics: &str, line_start: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn unregistering_removes_series_and_returns_gpu_memory() {
    let server = start(tiny_config()).expect("server starts");
    let base = format!("http://{}", server.addr());
    let mgmt = format!("http://{}", server.addrs().management);
    let metrics_url = format!("http://{}/metrics", server.addrs().metrics);
    let agent = agent();
    let metrics = || {
        agent
            .get(&metrics_url)
            .call()
            .expect("metrics")
            .body_mut()
            .read_to_string()
            .expect("text")
    };

    let r = agent
        .post(format!(
            "{mgmt}/models?url=sd2-tiny.zip&model_name=copy&initial_workers=1&synchronous=true"
        ))
        .send_empty()
        .expect("register");
    assert_eq!(r.status(), 200);
    // Series of both kinds: a 200 and a 400 (two `status` labels), latencies, images.
    for (body, status) in [("a red circle", 200), (r#"{"prompt":"x","width":7}"#, 400)] {
        for model in ["sd", "copy"] {
            let r = agent
                .post(format!("{base}/predictions/{model}"))
                .header(
                    "Content-Type",
                    if body.starts_with('{') {
                        "application/json"
                    } else {
                        "text/plain"
                    },
                )
                .send(body)
                .expect("predict");
            assert_eq!(r.status(), status, "{model}: {body}");
        }
    }
    let before = metrics();
    assert!(
        before.contains(r#"wgsd_requests_total{model_name="copy",status="400"}"#),
        "{before}"
    );
    let copy_bytes = sample(&before, r#"wgsd_gpu_memory_bytes{model_name="copy"}"#)
        .expect("copy's memory gauge");
    let process_before =
        sample(&before, "wgsd_gpu_memory_process_bytes").expect("the process memory gauge");
    assert!(copy_bytes > 0.0);
    assert!(
        process_before >= copy_bytes,
        "{process_before} < {copy_bytes}"
    );

    let r = agent
        .delete(format!("{mgmt}/models/copy"))
        .call()
        .expect("unregister");
    assert_eq!(r.status(), 200);

    let after = metrics();
    let left: Vec<&str> = after.lines().filter(|l| l.contains(r#""copy""#)).collect();
    assert!(left.is_empty(), "series of the removed model: {left:#?}");
    // The other model's series stay.
    assert!(
        after.contains(r#"wgsd_requests_total{model_name="sd",status="200"} 1"#),
        "{after}"
    );
    assert!(
        after.contains(r#"model_name="sd",model_version="1.0"} 2"#),
        "{after}"
    );
    let process_after =
        sample(&after, "wgsd_gpu_memory_process_bytes").expect("the process memory gauge");
    assert!(
        process_before - process_after >= 0.9 * copy_bytes,
        "the process held {process_before} bytes with the copy ({copy_bytes} of them) and {process_after} after it went"
    );
    let sd_bytes =
        sample(&after, r#"wgsd_gpu_memory_bytes{model_name="sd"}"#).expect("sd's memory");
    assert_eq!(process_after, sd_bytes, "only sd's pool is left");
}
