//! A panicking generation fails only its own request (issue 16, hardening): the client
//! gets TorchServe's 500, the worker serves the next request, and `/ping` stays Healthy
//! because the worker thread is still there. The panic comes from the test-only
//! `panic_on_prompt` hook, at the first denoising step (inside the pipeline's loop).

#[path = "serve_common/mod.rs"]
mod serve_common;

use serde_json::Value;
use wgsd::serve::start;

use serve_common::{agent, tiny_config};

#[test]
fn a_panicking_generation_gets_500_and_the_worker_goes_on() {
    let mut config = tiny_config();
    config.panic_on_prompt = Some("panic please".into());
    let server = start(config).expect("server starts");
    let base = format!("http://{}", server.addr());
    let agent = agent();

    let mut r = agent
        .post(format!("{base}/predictions/sd"))
        .send("panic please")
        .expect("predict");
    assert_eq!(r.status(), 500);
    let body: Value =
        serde_json::from_str(&r.body_mut().read_to_string().expect("body")).expect("json");
    assert_eq!(body["code"], 500);
    assert_eq!(body["type"], "InternalServerException");
    let message = body["message"].as_str().expect("message");
    assert!(message.contains("panicked"), "{message}");

    // The same worker answers the next request, and twice in a row, on every API.
    for _ in 0..2 {
        let r = agent
            .post(format!("{base}/predictions/sd"))
            .send("a red circle")
            .expect("predict");
        assert_eq!(r.status(), 200);
    }
    let r = agent
        .post(format!("{base}/v2/models/sd/infer"))
        .header("Content-Type", "application/json")
        .send(
            serde_json::json!({"inputs": [{
                "name": "prompt", "shape": [1], "datatype": "BYTES", "data": ["after a panic"]
            }]})
            .to_string(),
        )
        .expect("infer");
    assert_eq!(r.status(), 200);

    let mut r = agent.get(format!("{base}/ping")).call().expect("ping");
    assert_eq!(r.status(), 200);
    let ping: Value =
        serde_json::from_str(&r.body_mut().read_to_string().expect("body")).expect("json");
    assert_eq!(ping["status"], "Healthy");
    let r = agent
        .get(format!("{base}/v2/models/sd/ready"))
        .call()
        .expect("ready");
    assert_eq!(r.status(), 200);
}
