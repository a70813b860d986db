//! `POST /sdapi/v1/txt2img`: A1111's `text2imgapi` (`modules/api/api.py`) on wgsd's queue,
//! and what `POST /sdapi/v1/img2img` (`super::img2img`) shares with it.
//!
//! `n_iter` iterations of `batch_size` images run one after another, as A1111's
//! `process_images` loop does; image `i` of the whole call has seed `seed + i` (each its
//! own generator, so each reproduces alone). An iteration's images are queued together,
//! so the worker batches them when its `batchSize` allows. Interrupt and skip
//! ([`super::progress`]) end an iteration early with its images decoded as they are.
//! The reply: base64 PNGs (each with its A1111 `parameters` chunk), the request with
//! defaults filled in as `parameters`, and `info`, a JSON *string* as A1111's
//! `Processed.js()` writes it.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};

use super::errors::A1111Error;
use super::options::{default_model, find_checkpoint};
use super::progress::Run;
use super::request::{Mode, Txt2Img, parse_as};
use crate::pipeline::{GenerateRequest, Generated, PromptSyntax};
use crate::png_info;
use crate::serve::AppState;
use crate::serve::error::ApiError;
use crate::serve::jobs::{JobEntry, Outcome};
use crate::serve::loras::{resolve, take_prompt_tags};
use crate::serve::outputs::{gen_params, lora_hashes};
use crate::serve::queue::{CancelOnDrop, run_group};
use crate::serve::registry::ModelEntry;
use crate::serve::request::{random_seed, read_body};
use crate::serve::worker::ProgressSink;

/// A1111 draws random seeds below 2^32 - 2 (`random.randrange(4294967294)`).
const SEED_RANGE: u64 = 4_294_967_294;

pub async fn txt2img(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Response, A1111Error> {
    handle(state, req, Mode::Txt2Img).await
}

/// A txt2img or img2img call: read, queue, reply.
pub(super) async fn handle(
    state: Arc<AppState>,
    req: Request,
    mode: Mode,
) -> Result<Response, A1111Error> {
    let bytes = read_body(req, state.config.max_request_size).await?;
    let plan = parse_as(&bytes, mode)?;
    let entry = match &plan.checkpoint {
        Some(name) => find_checkpoint(&state, name),
        None => default_model(&state),
    }
    .ok_or_else(|| A1111Error::http(StatusCode::NOT_FOUND, "Model not found"))?;
    let result = run(&state, &entry, plan).await;
    let status = result
        .as_ref()
        .map_or_else(|e| e.status(), |_| StatusCode::OK);
    state
        .metrics
        .request_done(&entry.name, &entry.version, status.as_u16());
    result
}

/// One generated image and what made it.
struct Made {
    request: GenerateRequest,
    generated: Generated,
}

async fn run(
    state: &Arc<AppState>,
    entry: &Arc<ModelEntry>,
    plan: Txt2Img,
) -> Result<Response, A1111Error> {
    let d = state.defaults(entry);
    let steps = plan.steps.unwrap_or(d.steps);
    let seed = plan.seed.unwrap_or_else(|| random_seed() % SEED_RANGE);
    let subseed = plan.subseed.unwrap_or_else(|| random_seed() % SEED_RANGE);
    let total = plan.batch_size * plan.n_iter;
    // `<lora:name:scale>` tags leave the prompt and name LoRAs in the loras folder.
    let (prompt, tags) = take_prompt_tags(&plan.prompt)?;
    let loras = tags
        .iter()
        .map(|(name, scale)| resolve(d.lora_dir.as_deref(), name, *scale))
        .collect::<Result<Vec<_>, _>>()?;
    // img2img: resize mode 0 to width x height (the image's own size when not given).
    let mut mask = None;
    let (init_image, strength, width, height) = match &plan.init {
        Some(init) => {
            let img = crate::img2img::fit((*init.image).clone(), plan.width, plan.height)
                .map_err(|e| A1111Error::from(ApiError::bad_request(e.to_string())))?;
            let (w, h) = (img.width, img.height);
            // Inpainting: the mask is stretched to the same size (A1111's resize mode 0).
            mask = match &init.mask {
                Some(m) => {
                    Some(Arc::new((**m).clone().resized(w, h).map_err(|e| {
                        A1111Error::from(ApiError::bad_request(e.to_string()))
                    })?))
                }
                None => None,
            };
            (Some(Arc::new(img)), init.strength, w, h)
        }
        None => (
            None,
            crate::img2img::DEFAULT_STRENGTH,
            plan.width.unwrap_or(d.width),
            plan.height.unwrap_or(d.height),
        ),
    };
    if init_image.is_some() {
        crate::img2img::t_start(steps, strength)
            .map_err(|e| A1111Error::from(ApiError::bad_request(e.to_string())))?;
    }
    let hires = match plan.hires {
        Some(h) => Some(super::request::check_hires(h, steps, width, height)?),
        None => None,
    };
    // Progress counts both passes' steps, as A1111's does.
    let job_steps = steps
        + hires.map_or(0, |h| {
            let n = crate::hires::second_pass_steps(&h, steps);
            n - crate::img2img::t_start(n, h.strength).unwrap_or(n)
        });
    let base = GenerateRequest {
        prompts: vec![prompt],
        negative_prompts: Some(plan.negative_prompt.clone())
            .filter(|n| !n.is_empty())
            .into_iter()
            .collect(),
        seed,
        steps,
        guidance: plan.cfg_scale,
        width,
        height,
        num_images_per_prompt: 1,
        scheduler: Some(plan.sampler),
        tiling: plan.tiling,
        prompt_syntax: PromptSyntax::A1111,
        loras,
        init_image,
        strength,
        hires,
        mask,
        ..GenerateRequest::default()
    };
    let job = state
        .jobs
        .create(&entry.name, job_params(&base, &plan), job_steps);
    let guard = state
        .a1111
        .tracker
        .start(Run::new(job.clone(), plan.n_iter, job_steps));
    let run = guard.run.clone();
    // The client going away cancels what is queued and running, and ends the job.
    let _cancel = CancelOnDrop(job.cancel.clone());
    let _end = EndJob {
        state: state.as_ref(),
        job: job.clone(),
    };
    let mut made = Vec::with_capacity(total);
    for it in 0..plan.n_iter {
        let Some(flag) = run.begin_iteration(it) else {
            break;
        };
        let requests: Vec<GenerateRequest> = (0..plan.batch_size)
            .map(|b| GenerateRequest {
                seed: seed.wrapping_add((it * plan.batch_size + b) as u64),
                finish_early: Some(flag.clone()),
                ..base.clone()
            })
            .collect();
        let sink: ProgressSink = {
            let (job, run) = (job.clone(), run.clone());
            Arc::new(move |p| {
                run.on_step(p.step);
                job.progress(p);
            })
        };
        match run_group(
            state,
            entry,
            requests.clone(),
            job.cancel.clone(),
            Some(sink),
        )
        .await
        {
            Ok(generated) => made.extend(
                requests
                    .into_iter()
                    .zip(generated)
                    .map(|(request, generated)| Made { request, generated }),
            ),
            Err(e) => {
                state.jobs.finish(&job, Outcome::Failed(e.message.clone()));
                return Err(e.into());
            }
        }
    }
    let interrupted = run.interrupted();
    let timestamp = run.timestamp.clone();
    drop(guard);
    let (state2, entry2, job2) = (state.clone(), entry.clone(), job.clone());
    let reply = tokio::task::spawn_blocking(move || {
        let info = Info {
            width: base.width,
            height: base.height,
            steps,
            seed,
            subseed,
            total,
            timestamp,
            interrupted,
        };
        reply(&state2, &entry2, &job2, &plan, &info, &made)
    })
    .await
    .map_err(|e| A1111Error::from(ApiError::internal(format!("building the reply: {e}"))))??;
    Ok(reply)
}

/// Ends the job as cancelled if it is still open when the handler goes away.
struct EndJob<'a> {
    state: &'a AppState,
    job: Arc<JobEntry>,
}

impl Drop for EndJob<'_> {
    fn drop(&mut self) {
        self.state.jobs.finish(&self.job, Outcome::Cancelled);
    }
}

fn job_params(r: &GenerateRequest, plan: &Txt2Img) -> Value {
    json!({
        "prompt": r.prompts.first(),
        "negative_prompt": plan.negative_prompt,
        "seed": r.seed,
        "num_inference_steps": r.steps,
        "guidance_scale": r.guidance,
        "width": r.width,
        "height": r.height,
        "scheduler": r.scheduler.map(png_info::short_name),
        "num_images": plan.batch_size * plan.n_iter,
        "strength": r.init_image.as_ref().map(|_| r.strength),
        "api": if plan.init.is_some() { "sdapi/v1/img2img" } else { "sdapi/v1/txt2img" },
    })
}

/// A1111's `p.extra_generation_params` (what the infotext adds after its fixed fields).
fn extra_generation_params(plan: &Txt2Img) -> Value {
    let mut m = serde_json::Map::new();
    if let Some(i) = &plan.init {
        m.insert("Denoising strength".into(), json!(i.strength));
    }
    if let Some(h) = &plan.hires {
        m.insert("Denoising strength".into(), json!(h.strength));
        match h.size {
            crate::hires::HiresSize::Scale(s) => m.insert("Hires upscale".into(), json!(s)),
            crate::hires::HiresSize::Resize { width, height } => {
                m.insert("Hires resize".into(), json!(format!("{width}x{height}")))
            }
        };
        if h.steps > 0 {
            m.insert("Hires steps".into(), json!(h.steps));
        }
        m.insert("Hires upscaler".into(), json!(h.upscaler.name()));
    }
    Value::Object(m)
}

/// What `info` reports beyond the images.
struct Info {
    width: usize,
    height: usize,
    steps: usize,
    seed: u64,
    subseed: u64,
    total: usize,
    timestamp: String,
    interrupted: bool,
}

/// The PNGs (base64), saved when asked, and the reply (blocking: PNG encoding).
fn reply(
    state: &AppState,
    entry: &ModelEntry,
    job: &JobEntry,
    plan: &Txt2Img,
    info: &Info,
    made: &[Made],
) -> Result<Response, A1111Error> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut images = Vec::new();
    let mut infotexts = Vec::new();
    let mut saved = Vec::new();
    let mut steps_done = Vec::new();
    // A1111's "Lora hashes" (one file read per LoRA, the same for every image).
    let lora_hashes = made
        .first()
        .map(|m| lora_hashes(&m.request.loras))
        .unwrap_or_default();
    for m in made {
        let mut params = gen_params(entry, &m.request, &m.generated);
        // A1111's infotext keeps the prompt as written, `<lora:..>` tags included.
        params.prompt = plan.prompt.clone();
        params.lora_hashes = lora_hashes.clone();
        let text = png_info::format(&params);
        for img in &m.generated.images {
            if plan.send_images {
                let png = png_info::encode_png(img.width, img.height, &img.data, &text)
                    .map_err(|e| ApiError::internal(format!("encoding a PNG: {e}")))?;
                images.push(Value::from(b64.encode(png)));
            }
            infotexts.push(text.clone());
            steps_done.push(m.generated.steps_done);
        }
        if plan.save_images {
            let names = state
                .outputs
                .write(&m.generated.images, &params)
                .map_err(|e| ApiError::internal(format!("saving the images: {e}")))?;
            saved.extend(names);
        }
    }
    state.jobs.finish(job, Outcome::Done(saved.clone()));
    let r = &plan;
    let n = info.total;
    let hash = entry
        .worker
        .info
        .sha256
        .as_deref()
        .map(png_info::short_hash);
    let info_json = json!({
        "prompt": r.prompt,
        "all_prompts": vec![&r.prompt; n],
        "negative_prompt": r.negative_prompt,
        "all_negative_prompts": vec![&r.negative_prompt; n],
        "seed": info.seed,
        "all_seeds": (0..n as u64).map(|i| info.seed.wrapping_add(i)).collect::<Vec<_>>(),
        "subseed": info.subseed,
        "all_subseeds": (0..n as u64).map(|i| info.subseed.wrapping_add(i)).collect::<Vec<_>>(),
        "subseed_strength": 0,
        "width": info.width,
        "height": info.height,
        "sampler_name": r.sampler.a1111_name(),
        "cfg_scale": r.cfg_scale,
        "steps": info.steps,
        "batch_size": r.batch_size,
        "restore_faces": false,
        "face_restoration_model": null,
        "sd_model_name": entry.name,
        "sd_model_hash": hash,
        "sd_vae_name": null,
        "sd_vae_hash": null,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": r.init.as_ref().map(|i| i.strength).or(r.hires.map(|h| h.strength)),
        "extra_generation_params": extra_generation_params(r),
        "index_of_first_image": 0,
        "infotexts": infotexts,
        "styles": [],
        "job_timestamp": info.timestamp,
        "clip_skip": 1,
        "is_using_inpainting_conditioning": false,
        "version": concat!("wgsd ", env!("CARGO_PKG_VERSION")),
        // wgsd's own: what was accepted without effect, and how far each image got.
        "ignored": r.ignored,
        "interrupted": info.interrupted,
        "steps_done": steps_done,
        "saved": saved,
    });
    let body = json!({
        "images": images,
        "parameters": r.parameters,
        "info": info_json.to_string(),
    })
    .to_string();
    if body.len() > state.config.max_response_size {
        return Err(ApiError::new(
            crate::serve::ErrorKind::ResponseTooLarge,
            format!(
                "the reply ({} bytes) is larger than max_response_size ({} bytes); ask for fewer or smaller images",
                body.len(),
                state.config.max_response_size
            ),
        )
        .into());
    }
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}
