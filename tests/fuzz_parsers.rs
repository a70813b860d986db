//! Mutation fuzzing of everything wgsd parses from files a user (or a network peer) hands
//! it: model archives (zip), safetensors headers, the UNet / VAE / scheduler configs,
//! TorchServe's config.properties and prompts through the tokenizer. Each target starts
//! from valid inputs and applies seeded random mutations (byte flips, truncation,
//! splices, JSON values swapped for hostile ones); the parser must return Ok or an
//! error, never panic, and what it accepts must be usable (a scheduler that parses can
//! plan its steps, a tokenizer output has at most 77 ids).
//!
//! CI runs a short pass (`WGSD_FUZZ_ITERS`, default 300 per target); a long run is
//! `WGSD_FUZZ_ITERS=200000 cargo test --release --test fuzz_parsers` (README). A panic
//! prints the seed and the input, so it can be replayed.

mod common;

use std::io::Write;
use std::path::Path;

use common::Rng;
use common::fuzz::{iters, json_inputs, mutate_bytes, no_panic};
use wgsd::loader::{ArchiveOptions, SafetensorsFile, open_model_with};

#[test]
fn unet_and_vae_configs_never_panic() {
    use wgsd::bench::models::{SD2_UNET_CONFIG, SD2_VAE_CONFIG};
    use wgsd::models::config::{UNetConfig, VaeConfig};
    for (s, input) in json_inputs(SD2_UNET_CONFIG, 1) {
        no_panic("unet config", s, &input, |b| {
            if let Ok(c) = serde_json::from_slice::<UNetConfig>(b) {
                let _ = c.validate();
            }
        });
    }
    for (s, input) in json_inputs(SD2_VAE_CONFIG, 2) {
        no_panic("vae config", s, &input, |b| {
            if let Ok(c) = serde_json::from_slice::<VaeConfig>(b) {
                let _ = c.validate();
            }
        });
    }
}

const SCHEDULER: &str = r#"{"_class_name":"DDIMScheduler","beta_end":0.012,"beta_schedule":"scaled_linear",
"beta_start":0.00085,"clip_sample":false,"num_train_timesteps":1000,"prediction_type":"v_prediction",
"set_alpha_to_one":false,"skip_prk_steps":true,"steps_offset":1,"timestep_spacing":"leading",
"trained_betas":null}"#;

/// A scheduler config that parses either builds a scheduler that can plan every step,
/// or fails with an error.
#[test]
fn scheduler_configs_never_panic() {
    for (s, input) in json_inputs(SCHEDULER, 3) {
        no_panic("scheduler config", s, &input, |b| {
            let Ok(text) = std::str::from_utf8(b) else {
                return;
            };
            let Ok(cfg) = wgsd::schedulers::SchedulerConfig::from_json_str(text) else {
                return;
            };
            for class in [
                None,
                Some("euler"),
                Some("dpm++2m"),
                Some("lms"),
                Some("pndm"),
            ] {
                let class = class.map(|c| wgsd::schedulers::Sampler::parse(c).unwrap());
                let Ok(mut sched) = wgsd::schedulers::from_config(&cfg, class) else {
                    continue;
                };
                for steps in [1, 7, 50] {
                    if sched.set_timesteps(steps).is_ok() {
                        for i in 0..sched.timesteps().len() {
                            let _ = sched.step(i);
                        }
                    }
                }
            }
        });
    }
}

const PROPERTIES: &str = "inference_address=http://127.0.0.1:8080
management_address=http://127.0.0.1:8081
metrics_address=http://127.0.0.1:8082
model_store=/tmp/model-store
load_models=all
max_request_size=65535000
max_response_size=65535000
default_workers_per_model=1
job_queue_size=100
enable_envvars_config=true
models={\"sd\": {\"1.0\": {\"marName\": \"sd.mar\", \"batchSize\": 4, \"maxBatchDelay\": 100, \"responseTimeout\": 600}}}
";

#[test]
fn config_properties_never_panic() {
    for i in 0..iters() as u64 {
        let s = 4_000_000 + i;
        let mut rng = Rng::new(s);
        let input = mutate_bytes(&mut rng, PROPERTIES.as_bytes());
        no_panic("config.properties", s, &input, |b| {
            let _ = wgsd::serve::ts_config::TsConfig::parse(b);
        });
    }
}

/// A small valid safetensors file: two tensors (f32 and f16).
fn small_safetensors() -> Vec<u8> {
    use safetensors::tensor::{Dtype, TensorView};
    let a: Vec<u8> = (0..24u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let b: Vec<u8> = (0..8u16).flat_map(|i| i.to_le_bytes()).collect();
    let views = vec![
        (
            "a".to_string(),
            TensorView::new(Dtype::F32, vec![2, 3, 4], &a).unwrap(),
        ),
        (
            "b".to_string(),
            TensorView::new(Dtype::F16, vec![8], &b).unwrap(),
        ),
    ];
    safetensors::serialize(views, None).unwrap()
}

#[test]
fn safetensors_headers_never_panic() {
    let base = small_safetensors();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("w.safetensors");
    for i in 0..iters() as u64 {
        let s = 5_000_000 + i;
        let mut rng = Rng::new(s);
        // Mostly the header (the first ~120 bytes), where the parser's work is.
        let mut input = base.clone();
        let head = input.len().min(160);
        let mutated = mutate_bytes(&mut rng, &input[..head]);
        input.splice(..head, mutated);
        std::fs::write(&path, &input).unwrap();
        no_panic("safetensors", s, &input, |_| {
            if let Ok(f) = SafetensorsFile::open(&path) {
                for key in f.keys() {
                    let _ = f.read_f32(&key, None);
                    let _ = f.read_f32(&key, Some(&[24]));
                }
            }
        });
    }
}

/// A tiny but complete-looking pipeline zip.
fn small_zip() -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        let o = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, data) in [
            ("model_index.json", &br#"{"_class_name":"StableDiffusionPipeline","unet":["diffusers","UNet2DConditionModel"]}"#[..]),
            ("unet/config.json", br#"{"in_channels":4}"#),
            ("scheduler/scheduler_config.json", SCHEDULER.as_bytes()),
        ] {
            z.start_file(name, o).unwrap();
            z.write_all(data).unwrap();
        }
        z.finish().unwrap();
    }
    buf.into_inner()
}

#[test]
fn archives_never_panic() {
    let base = small_zip();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("m.zip");
    // Extraction writes files: a tenth of the other targets' count.
    for i in 0..(iters() / 10).max(20) as u64 {
        let s = 6_000_000 + i;
        let mut rng = Rng::new(s);
        let input = mutate_bytes(&mut rng, &base);
        std::fs::write(&path, &input).unwrap();
        let cache = tmp.path().join(format!("cache{i}"));
        no_panic("archive", s, &input, |_| {
            let opts = ArchiveOptions {
                cache_dir: Some(cache.clone()),
                ..ArchiveOptions::default()
            };
            let _ = open_model_with(&path, &opts);
        });
        let _ = std::fs::remove_dir_all(&cache);
    }
}

#[test]
fn prompts_never_panic_and_stay_within_77_tokens() {
    let opts = ArchiveOptions {
        cache_dir: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("model-cache")),
        ..ArchiveOptions::default()
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = open_model_with(&root.join("weights/sd2-tiny.zip"), &opts).unwrap();
    let tok = wgsd::tokenizer::Tokenizer::from_dir(&model.root.join("tokenizer")).unwrap();
    let pieces = [
        "a",
        " ",
        "(",
        ")",
        "[",
        "]",
        ":",
        "1.5",
        "<|endoftext|>",
        "<|startoftext|>",
        "\u{0}",
        "é",
        "日本",
        "🦊",
        "\u{202e}",
        "\\",
        "\n",
        "BREAK",
        "’",
        "ﬁ",
    ];
    for i in 0..iters() as u64 {
        let s = 7_000_000 + i;
        let mut rng = Rng::new(s);
        let n = rng.range(0, 200);
        let mut prompt = String::new();
        for _ in 0..n {
            if rng.range(0, 4) == 0 {
                prompt.push(char::from_u32(rng.range(0, 0x3_0000) as u32).unwrap_or('?'));
            } else {
                prompt.push_str(pieces[rng.range(0, pieces.len())]);
            }
        }
        no_panic("tokenizer", s, prompt.as_bytes(), |_| {
            if let Ok(enc) = tok.encode(&prompt) {
                assert!(enc.ids.len() <= 77, "{} ids", enc.ids.len());
            }
        });
    }
}

/// An OIP REST inference request with Triton's binary tensor extension: the JSON head
/// (prompts and negative prompts as binary data and as JSON, request parameters, a
/// binary output) followed by the raw BYTES.
fn oip_binary_request() -> (String, Vec<u8>) {
    let raw = |strings: &[&str]| {
        let mut out = Vec::new();
        for s in strings {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        out
    };
    let prompts = raw(&["a red circle", "a blue square"]);
    let head = serde_json::json!({
        "id": "1",
        "inputs": [
            { "name": "prompt", "shape": [2], "datatype": "BYTES",
              "parameters": { "binary_data_size": prompts.len() } },
            { "name": "negative_prompt", "shape": [1], "datatype": "BYTES", "data": ["blurry"] },
        ],
        "outputs": [{ "name": "image", "parameters": { "binary_data": true } }],
        "parameters": { "seed": 1, "num_inference_steps": 2, "width": 32, "height": 32,
                        "binary_data_output": true },
    });
    (head.to_string(), prompts)
}

#[test]
fn oip_binary_requests_never_panic() {
    use axum::http::{HeaderMap, HeaderValue};
    use wgsd::serve::parse_oip_infer_request;
    let defaults = wgsd::serve::request::Defaults {
        steps: 2,
        width: 32,
        height: 32,
        lora_dir: None,
    };
    let (head, tail) = oip_binary_request();
    let parse = |header: Option<String>, body: &[u8]| {
        let mut headers = HeaderMap::new();
        if let Some(h) = header.and_then(|h| HeaderValue::from_str(&h).ok()) {
            headers.insert("inference-header-content-length", h);
        }
        parse_oip_infer_request(&headers, body.to_vec().into(), &defaults)
    };
    // The valid request parses, as sent.
    let body = [head.as_bytes(), &tail].concat();
    let ok = parse(Some(head.len().to_string()), &body).expect("the seed request is valid");
    assert_eq!(ok.request.prompts, vec!["a red circle", "a blue square"]);
    assert!(ok.binary);
    for (s, mutated_head) in json_inputs(&head, 9) {
        let mut rng = Rng::new(s ^ 0x5eed);
        // The tail mutated too, and the declared header length off by a little, or huge.
        let tail = if rng.range(0, 3) == 0 {
            mutate_bytes(&mut rng, &tail)
        } else {
            tail.clone()
        };
        let n = mutated_head.len();
        let declared = match rng.range(0, 6) {
            0 => None,
            1 => Some(format!("{}", n.saturating_sub(rng.range(1, 8)))),
            2 => Some(format!("{}", n + rng.range(1, 8))),
            3 => Some(u64::MAX.to_string()),
            _ => Some(n.to_string()),
        };
        let body = [mutated_head, tail].concat();
        no_panic("OIP binary request", s, &body, |b| {
            if let Ok(r) = parse(declared.clone(), b) {
                // What parses is a request the limits allow.
                assert!(!r.request.prompts.is_empty() && r.request.prompts.len() <= 16);
                assert!(r.request.width <= 2048 && r.request.height <= 2048);
            }
        });
    }
}
