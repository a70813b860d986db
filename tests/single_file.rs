//! Single-file checkpoints (original CompVis / LDM layout) against diffusers'
//! `StableDiffusionPipeline.from_single_file(path, config=...)` (references made by
//! tests/fixtures/make_single_file_fixtures.py): .safetensors and .ckpt of the tiny SD 1
//! and SD 2 pipelines with `--config`, the prediction type from a sidecar `FILE.yaml`,
//! architecture detection on standard key inventories, `wgsd convert` and `wgsd
//! generate` end to end, a single file in serve's model store, and bad files (a pickle
//! calling `os.system`, truncated files, missing tensors, non-SD files) that must give
//! named errors and leave nothing in the cache or the output folder.
//!
//! Images must reach 60 dB PSNR against the reference in f32 (tests/pipeline.rs explains
//! the threshold); final latents 1e-4 of their largest value.

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{gpu, psnr};
use serde_json::Value;
use wgsd::loader::single_file::detect::{SdVersion, detect};
use wgsd::loader::single_file::keymap::TextLayout;
use wgsd::loader::{ArchiveOptions, LoadError, PredictionType, SingleFileOptions, open_model_with};
use wgsd::pipeline::{GenerateRequest, Pipeline, PipelineOptions};

const MIN_PSNR: f64 = 60.0;
const LATENT_TOL: f32 = 1e-4;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures() -> PathBuf {
    root().join("tests/fixtures/single_file")
}

/// A fresh empty folder under the test target dir.
fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("single-file")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

fn shared_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("single-file-cache")
}

fn opts(cache: &Path, config: Option<&str>, prediction: Option<PredictionType>) -> ArchiveOptions {
    ArchiveOptions {
        cache_dir: Some(cache.to_path_buf()),
        single_file: SingleFileOptions {
            config: config.map(|c| fixtures().join(c)),
            prediction_type: prediction,
        },
        ..ArchiveOptions::default()
    }
}

struct Case {
    json: Value,
    image: Vec<u8>,
    latents: Vec<f32>,
}

fn case(name: &str) -> Case {
    let text = std::fs::read_to_string(fixtures().join("reference.json")).expect("reference.json");
    let all: Value = serde_json::from_str(&text).expect("json");
    let json = all["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no case {name}"))
        .clone();
    let bytes = std::fs::read(fixtures().join("reference.safetensors")).expect("reference");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
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
    Case {
        json,
        image,
        latents,
    }
}

impl Case {
    fn request(&self) -> GenerateRequest {
        let n = |k: &str| self.json[k].as_u64().expect(k) as usize;
        GenerateRequest {
            prompts: vec![self.json["prompt"].as_str().expect("prompt").to_string()],
            seed: self.json["seed"].as_u64().expect("seed"),
            steps: n("steps"),
            guidance: self.json["guidance"].as_f64().expect("guidance") as f32,
            width: n("width"),
            height: n("height"),
            trace: true,
            ..GenerateRequest::default()
        }
    }

    /// Generates with `model` (a single file or an archive) and compares image and latents.
    fn check(&self, what: &str, model: &Path, archive: ArchiveOptions) {
        let options = PipelineOptions {
            precision: wgsd::Precision::F32,
            archive,
        };
        let pipe = Pipeline::load(gpu(), model, &options)
            .unwrap_or_else(|e| panic!("{what}: loading {}: {e}", model.display()));
        assert!(
            pipe.unused_weights().is_empty(),
            "{what}: unused weights {:?}",
            pipe.unused_weights()
        );
        let out = pipe.generate(&self.request()).expect("generate");
        let trace = out.trace.expect("trace");
        let scale = self.latents.iter().fold(0f32, |m, x| m.max(x.abs()));
        let diff = common::max_abs_diff(&trace.final_latents, &self.latents);
        assert!(
            diff <= LATENT_TOL * scale,
            "{what}: final latents differ by {diff} (scale {scale})"
        );
        let db = psnr(&out.images[0].data, &self.image);
        eprintln!("{what}: {db:.1} dB, final latents within {diff:.2e} (scale {scale:.2})");
        assert!(
            db >= MIN_PSNR,
            "{what}: {db:.1} dB against from_single_file"
        );
    }
}

#[test]
fn sd2_safetensors_matches_from_single_file() {
    let c = case("sd2_safetensors");
    assert_eq!(c.json["prediction_type"], "v_prediction");
    let file = fixtures().join("sd2-tiny.safetensors");
    c.check(
        "sd2 .safetensors",
        &file,
        opts(&shared_cache(), Some("sd2-config"), None),
    );
}

#[test]
fn sd2_ckpt_matches_from_single_file() {
    let c = case("sd2_ckpt");
    let file = fixtures().join("sd2-tiny.ckpt");
    c.check(
        "sd2 .ckpt",
        &file,
        opts(&shared_cache(), Some("sd2-config"), None),
    );
}

#[test]
fn sd1_safetensors_matches_from_single_file() {
    let c = case("sd1_safetensors");
    let file = fixtures().join("sd1-tiny.safetensors");
    c.check(
        "sd1 .safetensors",
        &file,
        opts(&shared_cache(), Some("sd1-config"), None),
    );
}

#[test]
fn sd1_ckpt_matches_from_single_file() {
    let c = case("sd1_ckpt");
    let file = fixtures().join("sd1-tiny.ckpt");
    c.check(
        "sd1 .ckpt",
        &file,
        opts(&shared_cache(), Some("sd1-config"), None),
    );
}

/// `parameterization: "eps"` in a sidecar FILE.yaml (A1111 style) turns the config's
/// v-prediction into epsilon, and so does the option; the prediction type is part of the
/// cache key.
#[test]
fn prediction_type_from_sidecar_yaml_and_option() {
    let c = case("sd2_safetensors_epsilon");
    assert_eq!(c.json["prediction_type"], "epsilon");
    let dir = scratch("sidecar");
    let file = dir.join("model.safetensors");
    std::fs::copy(fixtures().join("sd2-tiny.safetensors"), &file).expect("copy");
    std::fs::write(
        dir.join("model.yaml"),
        "model:\n  target: ldm.models.diffusion.ddpm.LatentDiffusion\n  params:\n    parameterization: \"eps\"  # A1111\n",
    )
    .expect("yaml");
    let cache = scratch("sidecar-cache");
    c.check("sidecar eps", &file, opts(&cache, Some("sd2-config"), None));
    let original = fixtures().join("sd2-tiny.safetensors");
    c.check(
        "--prediction-type epsilon",
        &original,
        opts(&cache, Some("sd2-config"), Some(PredictionType::Epsilon)),
    );
    // Same bytes and the same effective settings: one conversion serves both. Without
    // the sidecar or the option the config's v-prediction stays: a second entry.
    assert_eq!(std::fs::read_dir(&cache).expect("cache").count(), 1);
    let v = open_model_with(&original, &opts(&cache, Some("sd2-config"), None)).expect("open");
    let sched: Value = serde_json::from_str(
        &std::fs::read_to_string(v.root.join("scheduler/scheduler_config.json")).expect("sched"),
    )
    .expect("json");
    assert_eq!(sched["prediction_type"], "v_prediction");
    assert_eq!(std::fs::read_dir(&cache).expect("cache").count(), 2);
}

/// A standard SD 1.5 / 2.x / inpainting key inventory (names and shapes only).
fn inventory(version: SdVersion, in_channels: usize) -> Vec<(String, Vec<usize>)> {
    let ctx = if version == SdVersion::V1 { 768 } else { 1024 };
    let mut v = vec![
        (
            "model.diffusion_model.input_blocks.0.0.weight".to_string(),
            vec![320, in_channels, 3, 3],
        ),
        (
            "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
                .to_string(),
            vec![320, ctx],
        ),
        (
            "first_stage_model.decoder.conv_in.weight".to_string(),
            vec![512, 4, 3, 3],
        ),
    ];
    if version == SdVersion::V1 {
        v.push((
            "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight".into(),
            vec![49408, 768],
        ));
    } else {
        v.push((
            "cond_stage_model.model.token_embedding.weight".into(),
            vec![49408, 1024],
        ));
        v.push((
            "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight".into(),
            vec![3072, 1024],
        ));
    }
    v
}

fn detect_list(
    v: &[(String, Vec<usize>)],
) -> Result<wgsd::loader::single_file::Architecture, String> {
    detect(v.iter().map(|(k, s)| (k.as_str(), s.as_slice())))
}

#[test]
fn detects_standard_architectures_from_names_and_shapes() {
    let a = detect_list(&inventory(SdVersion::V1, 4)).expect("sd1");
    assert_eq!(
        (a.version, a.text, a.context_dim, a.inpainting(), a.standard),
        (SdVersion::V1, TextLayout::ClipL, 768, false, true)
    );
    let a = detect_list(&inventory(SdVersion::V2, 4)).expect("sd2");
    assert_eq!(
        (a.version, a.text, a.context_dim, a.inpainting(), a.standard),
        (SdVersion::V2, TextLayout::OpenClip, 1024, false, true)
    );
    let a = detect_list(&inventory(SdVersion::V1, 9)).expect("sd1 inpainting");
    assert!(a.inpainting() && a.standard && a.version == SdVersion::V1);
    let a = detect_list(&inventory(SdVersion::V2, 9)).expect("sd2 inpainting");
    assert!(a.inpainting() && a.version == SdVersion::V2);
    assert_eq!(a.describe(), "SD 2.x inpainting");

    // The tiny fixtures: recognised, but not standard (they need --config).
    let mut tiny = inventory(SdVersion::V2, 4);
    tiny[0].1 = vec![16, 4, 3, 3];
    tiny[1].1 = vec![16, 16];
    let a = detect_list(&tiny).expect("tiny");
    assert!(!a.standard && a.version == SdVersion::V2);

    // What is not SD 1/2 says what it is.
    let sdxl = vec![(
        "conditioner.embedders.1.model.positional_embedding".to_string(),
        vec![77, 1280],
    )];
    assert!(detect_list(&sdxl).unwrap_err().contains("SDXL"));
    let lora = vec![(
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight".to_string(),
        vec![4, 320],
    )];
    assert!(detect_list(&lora).unwrap_err().contains("LoRA"));
    let mut pix2pix = inventory(SdVersion::V1, 8);
    pix2pix.truncate(3);
    assert!(detect_list(&pix2pix).unwrap_err().contains("8"));
    let mut mixed = inventory(SdVersion::V1, 4);
    mixed[1].1 = vec![320, 1024];
    assert!(detect_list(&mixed).unwrap_err().contains("does not match"));
}

/// The shipped tokenizer with built-in configs: a standard SD 2 file's folder is
/// complete, and its tokenizer pads with "!" (SD 1 with <|endoftext|>).
#[test]
fn built_in_configs_and_tokenizer() {
    use wgsd::loader::single_file::configs::write_standard;
    use wgsd::tokenizer::Tokenizer;
    for (version, pad) in [(SdVersion::V1, 49407u32), (SdVersion::V2, 0u32)] {
        let dir = scratch(&format!("builtin-{version:?}"));
        let arch = detect_list(&inventory(version, 4)).expect("detect");
        let p = write_standard(&dir, &arch, None).expect("configs");
        let want = if version == SdVersion::V1 {
            PredictionType::Epsilon
        } else {
            PredictionType::VPrediction
        };
        assert_eq!(p, want);
        let unet: wgsd::models::config::UNetConfig =
            wgsd::loader::read_component_config(&dir, "unet").expect("unet config");
        assert_eq!(unet.cross_attention_dim, arch.context_dim);
        let vae: wgsd::models::config::VaeConfig =
            wgsd::loader::read_component_config(&dir, "vae").expect("vae config");
        assert_eq!(vae.block_out_channels, [128, 256, 512, 512]);
        let sched = wgsd::schedulers::SchedulerConfig::from_file(
            &dir.join("scheduler/scheduler_config.json"),
        )
        .expect("scheduler config");
        sched.class().expect("scheduler class");
        let text = wgsd::loader::ClipTextConfig::read(&dir).expect("text config");
        assert_eq!(
            text.num_hidden_layers,
            if version == SdVersion::V1 { 12 } else { 23 }
        );
        let tok = Tokenizer::from_dir(&dir.join("tokenizer")).expect("tokenizer");
        let enc = tok.encode("a red circle").expect("encode");
        assert_eq!(enc.ids.len(), 77);
        assert_eq!(enc.ids[0], 49406);
        assert_eq!(*enc.ids.last().expect("ids"), pad, "{version:?} pad id");
    }
}

/// Full-size SD 1.x / 2.x without weights (names and shapes from diffusers models on the
/// meta device, in LDM layout): recognised as standard; the built-in configs equal what
/// diffusers derives from the LDM inference configs; and the conversion plan gives exactly
/// diffusers' state dicts, name for name and shape for shape.
#[test]
fn standard_inventories_convert_to_diffusers_state_dicts() {
    use std::collections::BTreeMap;
    use wgsd::loader::single_file::configs::write_standard;
    use wgsd::loader::single_file::keymap::plan;
    use wgsd::loader::single_file::tensors::{StoredDType, TensorInfo};
    let text = std::fs::read_to_string(fixtures().join("standard_inventories.json")).expect("json");
    let all: Value = serde_json::from_str(&text).expect("json");
    for (name, version) in [("sd1", SdVersion::V1), ("sd2", SdVersion::V2)] {
        let inv = &all[name];
        let list: Vec<(String, Vec<usize>)> = inv["ldm"]
            .as_array()
            .expect("ldm")
            .iter()
            .map(|e| {
                let shape = e[1].as_array().expect("shape");
                (
                    e[0].as_str().expect("name").to_string(),
                    shape
                        .iter()
                        .map(|d| d.as_u64().expect("dim") as usize)
                        .collect(),
                )
            })
            .collect();
        let arch = detect_list(&list).expect("detect");
        assert!(arch.standard && arch.version == version, "{name}: {arch:?}");
        let dir = scratch(&format!("standard-{name}"));
        write_standard(&dir, &arch, None).expect("configs");
        for (component, keys) in [
            (
                "unet",
                &[
                    "sample_size",
                    "in_channels",
                    "out_channels",
                    "down_block_types",
                    "up_block_types",
                    "block_out_channels",
                    "layers_per_block",
                    "cross_attention_dim",
                    "attention_head_dim",
                    "use_linear_projection",
                ][..],
            ),
            (
                "vae",
                &[
                    "sample_size",
                    "in_channels",
                    "out_channels",
                    "down_block_types",
                    "up_block_types",
                    "block_out_channels",
                    "latent_channels",
                    "layers_per_block",
                    "scaling_factor",
                ][..],
            ),
            (
                "text_encoder",
                &[
                    "hidden_size",
                    "intermediate_size",
                    "num_attention_heads",
                    "num_hidden_layers",
                    "hidden_act",
                    "projection_dim",
                ][..],
            ),
        ] {
            let ours: Value = serde_json::from_str(
                &std::fs::read_to_string(dir.join(component).join("config.json")).expect("config"),
            )
            .expect("json");
            for k in keys {
                assert_eq!(
                    ours[*k], inv["configs"][component][*k],
                    "{name} {component}.{k}: built-in vs diffusers"
                );
            }
        }
        let infos: BTreeMap<String, TensorInfo> = list
            .iter()
            .map(|(k, s)| {
                (
                    k.clone(),
                    TensorInfo {
                        dtype: StoredDType::F16,
                        shape: s.clone(),
                    },
                )
            })
            .collect();
        let unet = wgsd::loader::read_component_config(&dir, "unet").expect("unet");
        let vae = wgsd::loader::read_component_config(&dir, "vae").expect("vae");
        let text = wgsd::loader::ClipTextConfig::read(&dir).expect("text");
        let plans = plan(Path::new(name), &infos, &unet, &vae, &text, arch.text).expect("plan");
        for (component, p) in [
            ("unet", &plans.unet),
            ("vae", &plans.vae),
            ("text_encoder", &plans.text_encoder),
        ] {
            let want = inv["diffusers"][component].as_object().expect("state dict");
            let got: Vec<&String> = p.keys().collect();
            let want_keys: Vec<&String> = want.keys().collect();
            assert_eq!(got, want_keys, "{name} {component}: converted names");
            for (k, m) in p {
                let src = &infos[&m.source].shape;
                let shape: Vec<u64> = m.shape(src).iter().map(|&d| d as u64).collect();
                let w: Vec<u64> = want[k]
                    .as_array()
                    .expect("shape")
                    .iter()
                    .map(|d| d.as_u64().expect("dim"))
                    .collect();
                assert_eq!(shape, w, "{name} {component}.{k}");
            }
        }
        // What is left over: the extra OpenCLIP layer and text_projection (SD 2) and the
        // int64 position ids are not read; nothing else.
        for k in &plans.unused {
            assert!(
                k.contains("resblocks.23.") || k.ends_with("text_projection"),
                "{name}: unexpectedly unused {k}"
            );
        }
    }
}

/// Nothing but finished conversions in `cache` (no `.partial-*` folders, no entries).
fn assert_cache_empty(cache: &Path, what: &str) {
    let left: Vec<_> = std::fs::read_dir(cache)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{what}: left in the cache: {left:?}");
}

fn open_err(file: &Path, cache: &Path, config: Option<&str>) -> LoadError {
    match open_model_with(file, &opts(cache, config, None)) {
        Ok(m) => panic!("{} opened as {:?}", file.display(), m.root),
        Err(e) => e,
    }
}

/// A `.ckpt` whose data.pkl calls `os.system`: refused by name, nothing run or cached.
#[test]
fn pickle_calling_os_system_is_refused() {
    let dir = scratch("evil");
    let cache = scratch("evil-cache");
    let file = dir.join("evil.ckpt");
    let marker = dir.join("pwned");
    // pickle.dumps(X(), protocol=2) where X.__reduce__ returns (os.system, ("touch ...",)),
    // inside a torch.save-shaped zip.
    let cmd = format!("touch {}", marker.display());
    let mut pkl = b"\x80\x02cposix\nsystem\nq\x00X".to_vec();
    pkl.extend((cmd.len() as u32).to_le_bytes());
    pkl.extend(cmd.as_bytes());
    pkl.extend(b"q\x01\x85q\x02Rq\x03.");
    {
        let f = std::fs::File::create(&file).expect("create");
        let mut z = zip::ZipWriter::new(f);
        let o = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        z.start_file("evil/data.pkl", o).expect("entry");
        std::io::Write::write_all(&mut z, &pkl).expect("write");
        z.start_file("evil/version", o).expect("entry");
        std::io::Write::write_all(&mut z, b"3\n").expect("write");
        z.finish().expect("zip");
    }
    let e = open_err(&file, &cache, None);
    assert!(
        matches!(&e, LoadError::RefusedPickle { global, .. } if global == "posix.system"),
        "{e}"
    );
    assert!(e.to_string().contains("posix.system"), "{e}");
    assert!(!marker.exists(), "the pickle ran");
    assert_cache_empty(&cache, "evil pickle");
}

#[test]
fn truncated_missing_and_foreign_files_are_named_errors() {
    let dir = scratch("bad");
    let cache = scratch("bad-cache");
    for name in ["sd2-tiny.safetensors", "sd2-tiny.ckpt"] {
        let bytes = std::fs::read(fixtures().join(name)).expect("fixture");
        let cut = dir.join(format!("cut-{name}"));
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
        let e = open_err(&cut, &cache, Some("sd2-config"));
        assert!(matches!(e, LoadError::Corrupt { .. }), "{name}: {e}");
        assert!(e.to_string().contains("cut-"), "{e}");
        assert_cache_empty(&cache, name);
    }

    // The SD 1 file without its VAE decoder's first up block.
    let bytes = std::fs::read(fixtures().join("sd1-tiny.safetensors")).expect("fixture");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("st");
    let kept: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("first_stage_model.decoder.up.0."))
        .collect();
    let partial = dir.join("partial.safetensors");
    safetensors::serialize_to_file(kept, None, &partial).expect("write");
    let e = open_err(&partial, &cache, Some("sd1-config"));
    match &e {
        LoadError::IncompleteCheckpoint {
            component, missing, ..
        } => {
            assert_eq!(component, "vae");
            assert!(
                missing[0].starts_with("decoder.up_blocks.3."),
                "{missing:?}"
            );
        }
        other => panic!("expected IncompleteCheckpoint, got {other}"),
    }
    assert_cache_empty(&cache, "missing keys");

    // A diffusers component file is not an LDM checkpoint; nor is a text file.
    let foreign = dir.join("unet.safetensors");
    let zip = open_model_with(
        &root().join("weights/sd2-tiny.zip"),
        &opts(&scratch("zip-cache"), None, None),
    )
    .expect("sd2-tiny.zip");
    std::fs::copy(
        zip.root.join("unet/diffusion_pytorch_model.safetensors"),
        &foreign,
    )
    .expect("copy");
    let e = open_err(&foreign, &cache, None);
    assert!(matches!(e, LoadError::NotStableDiffusion { .. }), "{e}");
    let text = dir.join("notes.ckpt");
    std::fs::write(&text, "not a checkpoint at all").expect("write");
    let e = open_err(&text, &cache, None);
    assert!(matches!(e, LoadError::Corrupt { .. }), "{e}");

    // A non-standard file without --config, and with a config of the other version.
    let tiny = fixtures().join("sd1-tiny.safetensors");
    let e = open_err(&tiny, &cache, None);
    assert!(matches!(e, LoadError::NeedsConfig { .. }), "{e}");
    assert!(e.to_string().contains("--config"), "{e}");
    let e = open_err(
        &fixtures().join("sd2-tiny.ckpt"),
        &cache,
        Some("sd1-config"),
    );
    assert!(
        matches!(
            e,
            LoadError::IncompleteCheckpoint { .. } | LoadError::ConfigMismatch { .. }
        ),
        "{e}"
    );
    assert_cache_empty(&cache, "bad files");
}

fn wgsd(args: &[&str], cache: &Path) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_wgsd"))
        .args(args)
        .env("WGSD_CACHE_DIR", cache)
        .env_remove("WGSD_MODEL")
        .output()
        .expect("running wgsd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "wgsd panicked:\n{stderr}");
    out
}

fn png_pixels(path: &Path) -> Vec<u8> {
    image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
        .into_raw()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `wgsd generate --model X.safetensors --config DIR`, then `wgsd convert X.ckpt OUT.zip`
/// and `wgsd generate --model OUT.zip` (the round trip); a refused convert writes nothing.
#[test]
fn cli_generate_and_convert() {
    let dir = scratch("cli");
    let cache = scratch("cli-cache");
    let gen_args = |c: &Case, model: &Path, out: &Path| -> Vec<String> {
        let r = c.request();
        vec![
            "generate".into(),
            "--model".into(),
            s(model).into(),
            r.prompts[0].clone(),
            "--seed".into(),
            r.seed.to_string(),
            "--steps".into(),
            r.steps.to_string(),
            "--width".into(),
            r.width.to_string(),
            "--height".into(),
            r.height.to_string(),
            "--precision".into(),
            "f32".into(),
            "--no-warmup".into(),
            "-o".into(),
            s(out).into(),
        ]
    };
    let run = |args: Vec<String>| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = wgsd(&a, &cache);
        assert!(
            out.status.success(),
            "wgsd {a:?}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };

    let c = case("sd1_safetensors");
    let png = dir.join("sd1.png");
    let mut args = gen_args(&c, &fixtures().join("sd1-tiny.safetensors"), &png);
    args.extend(["--config".into(), s(&fixtures().join("sd1-config")).into()]);
    run(args);
    let db = psnr(&png_pixels(&png), &c.image);
    assert!(db >= MIN_PSNR, "generate sd1 .safetensors: {db:.1} dB");

    let c = case("sd2_ckpt");
    let zip = dir.join("sd2-converted.zip");
    let out = run(vec![
        "convert".into(),
        s(&fixtures().join("sd2-tiny.ckpt")).into(),
        s(&zip).into(),
        "--config".into(),
        s(&fixtures().join("sd2-config")).into(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SD 2.x"), "{stderr}");
    assert!(stderr.contains("v_prediction"), "{stderr}");
    let png = dir.join("sd2.png");
    run(gen_args(&c, &zip, &png));
    let db = psnr(&png_pixels(&png), &c.image);
    assert!(
        db >= MIN_PSNR,
        "generate from the converted zip: {db:.1} dB"
    );

    // `wgsd tokenize` on a single file: sd2-config brings its tokenizer (pads with "!"),
    // sd1-config has none, so the shipped one is used (SD 1 pads with <|endoftext|>).
    let ids = |file: &str, config: &str| -> Vec<u64> {
        let out = run(vec![
            "tokenize".into(),
            "--model".into(),
            s(&fixtures().join(file)).into(),
            "--config".into(),
            s(&fixtures().join(config)).into(),
            "a red circle on a white background".into(),
        ]);
        let v: Value = serde_json::from_slice(&out.stdout).expect("tokenize json");
        v["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|x| x.as_u64().expect("id"))
            .collect()
    };
    let sd2 = ids("sd2-tiny.safetensors", "sd2-config");
    let sd1 = ids("sd1-tiny.safetensors", "sd1-config");
    assert!(!fixtures().join("sd1-config/tokenizer").exists());
    let n = 1 + sd2.iter().position(|&i| i == 49407).expect("eos");
    assert_eq!(sd1[..n], sd2[..n], "same vocabulary and merges");
    assert!(sd1[n..].iter().all(|&i| i == 49407) && sd2[n..].iter().all(|&i| i == 0));

    // Refused: no --config for a tiny file; nothing written, no temporary left.
    let bad_out = dir.join("bad.zip");
    let out = wgsd(
        &["convert", s(&fixtures().join("sd1-tiny.ckpt")), s(&bad_out)],
        &cache,
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--config"), "{stderr}");
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["sd1.png", "sd2-converted.zip", "sd2.png"]);
}

/// A single file in serve's model store: loaded at start-up and registered through the
/// management API, with the server-wide single-file config; images match diffusers.
#[test]
fn serve_loads_single_files_from_the_model_store() {
    use wgsd::serve::{ServeConfig, start};
    let any = || "127.0.0.1:0".parse().expect("addr");
    let mut config = ServeConfig {
        model_store: fixtures(),
        models: vec![("sd2st".into(), PathBuf::from("sd2-tiny.safetensors"))],
        inference_address: any(),
        management_address: any(),
        metrics_address: any(),
        ..ServeConfig::default()
    };
    config.pipeline.precision = wgsd::Precision::F32;
    config.pipeline.archive = opts(&scratch("serve-cache"), Some("sd2-config"), None);
    let server = start(config).expect("server starts");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let m = format!("http://{}", server.addrs().management);
    let inf = format!("http://{}", server.addrs().inference);
    let mut r = agent
        .post(format!(
            "{m}/models?url=sd2-tiny.ckpt&initial_workers=1&synchronous=true"
        ))
        .send_empty()
        .expect("register");
    let body = r.body_mut().read_to_string().expect("body");
    assert_eq!(r.status().as_u16(), 200, "{body}");
    for (model, case_name) in [("sd2st", "sd2_safetensors"), ("sd2-tiny", "sd2_ckpt")] {
        let c = case(case_name);
        let req = c.request();
        let body = serde_json::json!({
            "prompt": req.prompts[0],
            "seed": req.seed,
            "num_inference_steps": req.steps,
            "guidance_scale": req.guidance,
            "width": req.width,
            "height": req.height,
        });
        let mut r = agent
            .post(format!("{inf}/predictions/{model}"))
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .expect("predict");
        let text = r.body_mut().read_to_string().expect("reply");
        assert_eq!(r.status().as_u16(), 200, "{model}: {text}");
        let rows: Value = serde_json::from_str(&text).expect("json");
        let px: Vec<u8> = rows
            .as_array()
            .expect("rows")
            .iter()
            .flat_map(|row| row.as_array().expect("row").iter())
            .flat_map(|p| p.as_array().expect("pixel").iter())
            .map(|v| v.as_u64().expect("u8") as u8)
            .collect();
        let db = psnr(&px, &c.image);
        assert!(db >= MIN_PSNR, "serve {model}: {db:.1} dB");
    }
    server.shutdown().expect("shutdown");
}
