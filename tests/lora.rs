//! LoRA against diffusers' `load_lora_weights` + `fuse_lora(lora_scale=s)` (references
//! made by tests/fixtures/make_lora_fixtures.py on weights/sd2-tiny.zip): kohya-ss and
//! PEFT files at two scales each and two LoRAs at once, >= 60 dB in f32 (tests/pipeline.rs
//! explains the threshold); scale 0 gives the base image exactly; the same pipeline goes
//! from one LoRA set to another and back; bad LoRA files give named errors.

#[path = "common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{gpu, psnr};
use serde_json::Value;
use wgsd::lora::{LoraError, LoraFile, LoraSpec};
use wgsd::pipeline::{GenerateRequest, Pipeline, PipelineOptions};
use wgsd::{Error, Precision};

const MIN_PSNR: f64 = 60.0;
const LATENT_TOL: f32 = 1e-4;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures() -> PathBuf {
    root().join("tests/fixtures/lora")
}

fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("lora")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// One sd2-tiny pipeline in f32 for the whole binary (tests run one at a time on it).
fn pipeline() -> std::sync::MutexGuard<'static, Pipeline<'static>> {
    static PIPE: OnceLock<std::sync::Mutex<Pipeline<'static>>> = OnceLock::new();
    PIPE.get_or_init(|| {
        let options = PipelineOptions {
            precision: Precision::F32,
            ..PipelineOptions::default()
        };
        let p = Pipeline::load(gpu(), &root().join("weights/sd2-tiny.zip"), &options)
            .expect("load sd2-tiny");
        std::sync::Mutex::new(p)
    })
    .lock()
    .unwrap_or_else(|p| p.into_inner())
}

struct Case {
    json: Value,
    image: Vec<u8>,
    latents: Vec<f32>,
}

fn cases() -> &'static HashMap<String, Case> {
    static CASES: OnceLock<HashMap<String, Case>> = OnceLock::new();
    CASES.get_or_init(|| {
        let text = std::fs::read_to_string(fixtures().join("reference.json")).expect("json");
        let all: Value = serde_json::from_str(&text).expect("json");
        let bytes = std::fs::read(fixtures().join("reference.safetensors")).expect("reference");
        let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
        let mut out = HashMap::new();
        for c in all["cases"].as_array().expect("cases") {
            let name = c["name"].as_str().expect("name").to_string();
            let image = st
                .tensor(&format!("{name}.image_u8"))
                .expect("image")
                .data()
                .to_vec();
            let latents = bytemuck::pod_collect_to_vec(
                st.tensor(&format!("{name}.final_latents"))
                    .expect("latents")
                    .data(),
            );
            out.insert(
                name,
                Case {
                    json: c.clone(),
                    image,
                    latents,
                },
            );
        }
        out
    })
}

fn case(name: &str) -> &'static Case {
    cases()
        .get(name)
        .unwrap_or_else(|| panic!("no case {name}"))
}

impl Case {
    fn loras(&self) -> Vec<LoraSpec> {
        self.json["loras"]
            .as_array()
            .expect("loras")
            .iter()
            .map(|l| {
                LoraSpec::new(
                    fixtures().join(l["file"].as_str().expect("file")),
                    l["scale"].as_f64().expect("scale") as f32,
                )
                .expect("spec")
            })
            .collect()
    }

    fn request(&self, loras: Vec<LoraSpec>) -> GenerateRequest {
        let n = |k: &str| self.json[k].as_u64().expect(k) as usize;
        GenerateRequest {
            prompts: vec![self.json["prompt"].as_str().expect("prompt").to_string()],
            seed: self.json["seed"].as_u64().expect("seed"),
            steps: n("steps"),
            guidance: self.json["guidance"].as_f64().expect("guidance") as f32,
            width: n("width"),
            height: n("height"),
            trace: true,
            loras,
            ..GenerateRequest::default()
        }
    }

    /// Generates with the case's LoRAs; checks latents and image; returns the image.
    fn check(&self, pipe: &Pipeline) -> Vec<u8> {
        let name = self.json["name"].as_str().expect("name");
        let out = pipe
            .generate(&self.request(self.loras()))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let trace = out.trace.expect("trace");
        let scale = self.latents.iter().fold(0f32, |m, x| m.max(x.abs()));
        let diff = common::max_abs_diff(&trace.final_latents, &self.latents);
        let db = psnr(&out.images[0].data, &self.image);
        eprintln!("{name}: {db:.1} dB, final latents within {diff:.2e} (scale {scale:.2})");
        assert!(
            diff <= LATENT_TOL * scale,
            "{name}: final latents differ by {diff} (scale {scale})"
        );
        assert!(db >= MIN_PSNR, "{name}: {db:.1} dB against diffusers");
        out.images[0].data.clone()
    }
}

#[test]
fn lora_images_match_diffusers() {
    let pipe = pipeline();
    let base = case("base").check(&pipe);
    // Kohya, PEFT, two at once, then kohya again (cache replaced twice).
    for name in [
        "kohya_s1",
        "kohya_s05",
        "peft_s1",
        "peft_s07",
        "both",
        "kohya_s1",
    ] {
        let img = case(name).check(&pipe);
        let db = psnr(&img, &base);
        assert!(
            db < 30.0,
            "{name}: the LoRA barely changed the image ({db:.1} dB)"
        );
    }
    // And back to no LoRA: the base weights were never touched.
    assert_eq!(case("base").check(&pipe), base);
}

#[test]
fn scale_zero_gives_the_base_image_exactly() {
    let pipe = pipeline();
    let c = case("base");
    let base = pipe.generate(&c.request(Vec::new())).expect("base");
    let zero = vec![
        LoraSpec::new(fixtures().join("kohya.safetensors"), 0.0).expect("spec"),
        LoraSpec::new(fixtures().join("peft.safetensors"), 0.0).expect("spec"),
    ];
    let out = pipe.generate(&c.request(zero)).expect("scale 0");
    assert_eq!(out.images[0].data, base.images[0].data);
    assert_eq!(
        out.trace.expect("trace").final_latents,
        base.trace.expect("trace").final_latents
    );
}

#[test]
fn different_lora_sets_do_not_batch() {
    let pipe = pipeline();
    let c = case("base");
    let mut a = c.request(case("kohya_s1").loras());
    let mut b = c.request(case("kohya_s05").loras());
    a.trace = false;
    b.trace = false;
    assert_ne!(pipe.batch_key(&a), pipe.batch_key(&b));
    let mut a2 = a.clone();
    a2.seed += 1;
    assert_eq!(pipe.batch_key(&a), pipe.batch_key(&a2));
    let err = pipe
        .generate_batch(&[a, b], &mut |_| {}, None)
        .expect_err("mixed LoRA batch");
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
}

/// Writes `tensors` (name -> (shape, f32 data)) as a safetensors file.
fn write_lora(path: &Path, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, d)| d.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .expect("view");
            (n.to_string(), v)
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).expect("write");
}

fn lora_error(path: &Path) -> LoraError {
    let pipe = pipeline();
    let err = pipe
        .generate(&case("base").request(vec![LoraSpec::new(path, 1.0).expect("spec")]))
        .expect_err("a bad LoRA must fail");
    match err {
        Error::Lora(e) => e,
        other => panic!("{}: expected a LoRA error, got {other}", path.display()),
    }
}

#[test]
fn bad_lora_files_are_named_errors() {
    let dir = scratch("bad");
    let q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q";
    let down = |r: usize, i: usize| (vec![r, i], vec![0.01; r * i]);

    // A module sd2-tiny does not have (an SD 1.x / XL block index).
    let p = dir.join("other-arch.safetensors");
    let (ds, dd) = down(4, 16);
    write_lora(
        &p,
        &[
            (
                "lora_unet_down_blocks_5_attentions_0_proj_in.lora_down.weight",
                ds.clone(),
                dd.clone(),
            ),
            (
                "lora_unet_down_blocks_5_attentions_0_proj_in.lora_up.weight",
                vec![16, 4],
                vec![0.01; 64],
            ),
        ],
    );
    let e = lora_error(&p);
    assert!(matches!(e, LoraError::NoSuchModule { .. }), "{e}");
    assert!(e.to_string().contains("another architecture"), "{e}");

    // The right module, the wrong width (a LoRA for a bigger model).
    let p = dir.join("shape.safetensors");
    let (ds, dd) = down(4, 320);
    write_lora(
        &p,
        &[
            (&format!("{q}.lora_down.weight"), ds, dd),
            (
                &format!("{q}.lora_up.weight"),
                vec![320, 4],
                vec![0.01; 1280],
            ),
        ],
    );
    let e = lora_error(&p);
    assert!(matches!(e, LoraError::Shape { .. }), "{e}");

    // SDXL's second text encoder.
    let p = dir.join("sdxl.safetensors");
    let (ds, dd) = down(4, 16);
    write_lora(
        &p,
        &[
            (&format!("{q}.lora_down.weight"), ds.clone(), dd.clone()),
            (&format!("{q}.lora_up.weight"), vec![16, 4], vec![0.01; 64]),
            (
                "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight",
                ds,
                dd,
            ),
        ],
    );
    let e = lora_error(&p);
    assert!(matches!(e, LoraError::UnsupportedKey { .. }), "{e}");

    // An up without its down.
    let p = dir.join("half.safetensors");
    write_lora(
        &p,
        &[(&format!("{q}.lora_up.weight"), vec![16, 4], vec![0.01; 64])],
    );
    let e = lora_error(&p);
    assert!(matches!(e, LoraError::Incomplete { .. }), "{e}");

    // A model's weights, not a LoRA.
    let p = dir.join("model.safetensors");
    write_lora(&p, &[("conv_in.weight", vec![4, 4], vec![0.0; 16])]);
    let e = lora_error(&p);
    assert!(matches!(e, LoraError::NotALora { .. }), "{e}");

    // A truncated file and a missing one.
    let p = dir.join("truncated.safetensors");
    let bytes = std::fs::read(fixtures().join("peft.safetensors")).expect("peft");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).expect("write");
    let e = lora_error(&p);
    assert!(matches!(e, LoraError::Load(_)), "{e}");
    let pipe = pipeline();
    let err = pipe
        .generate(&case("base").request(vec![
            LoraSpec::new(dir.join("missing.safetensors"), 1.0).expect("spec"),
        ]))
        .expect_err("missing file");
    assert!(err.to_string().contains("missing.safetensors"), "{err}");
    drop(pipe);

    // After all that the pipeline still gives the right images.
    case("peft_s1").check(&pipeline());
}

#[test]
fn files_are_read_in_both_namings() {
    let kohya = LoraFile::open(&fixtures().join("kohya.safetensors")).expect("kohya");
    let conv = kohya
        .layers
        .iter()
        .find(|l| l.down.shape.len() == 4 && l.down.shape[2] == 3)
        .expect("a 3x3 conv LoRA");
    assert_eq!(conv.up.shape[2..], [1, 1]);
    assert!(kohya.layers.iter().all(|l| l.alpha == Some(2.0)));
    assert_eq!(kohya.layers[0].alpha_scale(), 0.5);
    let peft = LoraFile::open(&fixtures().join("peft.safetensors")).expect("peft");
    assert!(
        peft.layers
            .iter()
            .all(|l| l.alpha.is_none() && l.alpha_scale() == 1.0)
    );
    assert!(
        peft.layers
            .iter()
            .any(|l| l.component == wgsd::lora::Component::TextEncoder)
    );
}

/// diffusers' `lora_adapter_metadata` header (PEFT `lora_alpha` per component): the PEFT
/// fixture with alpha 2r at scale 0.35 is the same LoRA as without metadata at 0.7.
#[test]
fn peft_alpha_from_adapter_metadata() {
    let dir = scratch("metadata");
    let bytes = std::fs::read(fixtures().join("peft.safetensors")).expect("peft");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let meta = serde_json::json!({
        "unet.lora_alpha": 8, "unet.r": 4,
        "text_encoder.lora_alpha": 8, "text_encoder.r": 4,
    });
    let header = HashMap::from([("lora_adapter_metadata".to_string(), meta.to_string())]);
    let path = dir.join("peft-alpha8.safetensors");
    safetensors::serialize_to_file(st.tensors(), Some(header), &path).expect("write");
    let file = LoraFile::open(&path).expect("open");
    assert!(file.layers.iter().all(|l| l.alpha_scale() == 2.0));
    let pipe = pipeline();
    let c = case("peft_s07");
    let out = pipe
        .generate(&c.request(vec![LoraSpec::new(&path, 0.35).expect("spec")]))
        .expect("generate");
    let db = psnr(&out.images[0].data, &c.image);
    assert!(
        db >= MIN_PSNR,
        "alpha from metadata: {db:.1} dB against peft_s07"
    );
}
