//! Single-file checkpoints (`.safetensors`, `.ckpt`) in the original CompVis / LDM
//! layout, as AUTOMATIC1111 loads them and diffusers'
//! `StableDiffusionPipeline.from_single_file(path, config=...)` converts them.
//!
//! A file is converted once into a diffusers folder in the archive cache, keyed by the
//! file's sha256 and a digest of what else decides the result (the `--config` files, the
//! prediction type, the sidecar `FILE.yaml`, this converter's version): written into a
//! temporary folder, checked, then renamed into place, so a refused or broken file leaves
//! nothing behind. From there it loads like any archive. `wgsd convert` runs the same
//! conversion and zips the folder (a diffusers archive for a TorchServe-style model store).
//!
//! Parts: [`tensors`] reads either container ([`pickle`] is the restricted unpickler for
//! `.ckpt`), [`detect`] recognises the architecture, [`keymap`] renames LDM keys to
//! diffusers keys, [`configs`] writes the configs and tokenizer, [`writer`] the files.

pub mod configs;
pub mod detect;
pub mod keymap;
pub mod pickle;
pub mod tensors;
pub mod writer;

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::{Digest, Sha256};

pub use configs::PredictionType;
pub use detect::{Architecture, SdVersion, detect};

use super::archive::{
    ArchiveOptions, ModelDir, SourceKind, default_cache_dir, open_model_with, sha256_file,
};
use super::config::{ClipTextConfig, ModelIndex, read_component_config};
use super::error::LoadError;
use crate::models::config::{UNetConfig, VaeConfig};
use tensors::Checkpoint;

/// Bumped when the conversion's output changes, so cached conversions are redone.
const CONVERTER_VERSION: &str = "wgsd-single-file-1";

/// Extensions read as single-file checkpoints.
pub const EXTENSIONS: [&str; 4] = ["safetensors", "ckpt", "pt", "pth"];

/// What the conversion record in the converted folder is called.
pub const RECORD_FILE: &str = "wgsd-conversion.json";

/// How single files are converted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SingleFileOptions {
    /// A diffusers folder or archive whose configs, tokenizer and scheduler are used
    /// (its weights never are); needed for non-standard architectures.
    pub config: Option<PathBuf>,
    /// Overrides the sidecar `FILE.yaml` and the default (SD 1.x epsilon, SD 2.x
    /// v-prediction as diffusers' defaults).
    pub prediction_type: Option<PredictionType>,
}

/// Whether `path` names a single-file checkpoint (by its extension).
pub fn is_single_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// What a conversion found and did.
#[derive(Debug, Clone)]
pub struct Conversion {
    pub architecture: Architecture,
    /// The scheduler config's prediction type after conversion.
    pub prediction_type: Option<String>,
    /// Source tensors not used (EMA copies, DDPM buffers, `position_ids`, ...).
    pub unused: Vec<String>,
}

fn not_sd(file: &Path, msg: String) -> LoadError {
    LoadError::NotStableDiffusion {
        file: file.to_path_buf(),
        msg,
    }
}

/// The `--config` source, opened (an archive is extracted into the cache).
fn open_config(config: &Path, opts: &ArchiveOptions) -> Result<ModelDir, LoadError> {
    if is_single_file(config) {
        return Err(LoadError::UnsupportedConfig {
            file: config.to_path_buf(),
            field: "--config".into(),
            value: "a single-file checkpoint (give a diffusers folder or archive)".into(),
        });
    }
    open_model_with(config, opts)
}

/// The prediction type asked for: the option, else the sidecar `FILE.yaml`.
fn prediction(path: &Path, sf: &SingleFileOptions) -> Result<Option<PredictionType>, LoadError> {
    match sf.prediction_type {
        Some(p) => Ok(Some(p)),
        None => configs::sidecar_prediction(path),
    }
}

/// Converts `path` into the (empty) folder `dest` as a diffusers pipeline.
pub fn convert_into(
    path: &Path,
    opts: &ArchiveOptions,
    dest: &Path,
) -> Result<Conversion, LoadError> {
    let sf = &opts.single_file;
    let ckpt = Checkpoint::open(path)?;
    let arch = detect(
        ckpt.infos()
            .iter()
            .map(|(k, i)| (k.as_str(), i.shape.as_slice())),
    )
    .map_err(|msg| not_sd(path, msg))?;
    let prediction = prediction(path, sf)?;
    match &sf.config {
        Some(c) => {
            let src = open_config(c, opts)?;
            configs::write_from(dest, &src, arch.version, prediction)?;
        }
        None if arch.standard => {
            configs::write_standard(dest, &arch, prediction)?;
        }
        None => {
            return Err(LoadError::NeedsConfig {
                file: path.to_path_buf(),
                arch: arch.describe(),
            });
        }
    }
    let unet: UNetConfig = read_component_config(dest, "unet")?;
    let vae: VaeConfig = read_component_config(dest, "vae")?;
    let text = ClipTextConfig::read(dest)?;
    let mismatch = |what: String| LoadError::ConfigMismatch {
        file: path.to_path_buf(),
        msg: what,
    };
    if unet.cross_attention_dim != arch.context_dim || text.hidden_size != arch.context_dim {
        return Err(mismatch(format!(
            "the file's UNet context width is {}, the config's UNet says {} and its text encoder {}",
            arch.context_dim, unet.cross_attention_dim, text.hidden_size
        )));
    }
    if unet.in_channels != arch.in_channels {
        return Err(mismatch(format!(
            "the file's UNet takes {} input channels, the config says {}",
            arch.in_channels, unet.in_channels
        )));
    }
    let plans = keymap::plan(path, ckpt.infos(), &unet, &vae, &text, arch.text)?;
    writer::write_safetensors(
        &ckpt,
        &plans.unet,
        &dest
            .join("unet")
            .join("diffusion_pytorch_model.safetensors"),
    )?;
    writer::write_safetensors(
        &ckpt,
        &plans.vae,
        &dest.join("vae").join("diffusion_pytorch_model.safetensors"),
    )?;
    writer::write_safetensors(
        &ckpt,
        &plans.text_encoder,
        &dest.join("text_encoder").join("model.safetensors"),
    )?;
    let sched: serde_json::Value =
        super::config::read_json(&dest.join("scheduler").join("scheduler_config.json"))?;
    let conversion = Conversion {
        architecture: arch,
        prediction_type: sched
            .get("prediction_type")
            .and_then(|v| v.as_str())
            .map(str::to_string),
        unused: plans.unused,
    };
    let record = json!({
        "converter": CONVERTER_VERSION,
        "source": path.file_name().map(|n| n.to_string_lossy().into_owned()),
        "architecture": arch.describe(),
        "config": sf.config.as_ref().map(|c| c.display().to_string()),
        "prediction_type": conversion.prediction_type,
        "unused_tensors": conversion.unused,
    });
    let record_path = dest.join(RECORD_FILE);
    fs::write(&record_path, format!("{record:#}\n")).map_err(|e| LoadError::io(&record_path, e))?;
    Ok(conversion)
}

/// Hex digest of everything besides the file that decides the conversion.
fn settings_digest(path: &Path, opts: &ArchiveOptions) -> Result<String, LoadError> {
    let sf = &opts.single_file;
    let mut h = Sha256::new();
    h.update(CONVERTER_VERSION.as_bytes());
    match prediction(path, sf)? {
        Some(p) => h.update(format!("\0prediction={}", p.as_str()).as_bytes()),
        None => h.update(b"\0prediction=default"),
    }
    if let Some(c) = &sf.config {
        let src = open_config(c, opts)?;
        for f in configs::config_files(&src)? {
            let p = src.root.join(&f);
            let bytes = fs::read(&p).map_err(|e| LoadError::io(&p, e))?;
            h.update(format!("\0{}\0{}\0", f.display(), bytes.len()).as_bytes());
            h.update(&bytes);
        }
    }
    Ok(h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Converts `path` into the cache (or finds an earlier conversion there) and opens it.
pub fn open_cached(path: &Path, opts: &ArchiveOptions) -> Result<ModelDir, LoadError> {
    let cache = opts.cache_dir.clone().unwrap_or_else(default_cache_dir);
    fs::create_dir_all(&cache).map_err(|e| LoadError::io(&cache, e))?;
    let digest = sha256_file(path)?;
    let target = cache.join(format!("{digest}-{}", settings_digest(path, opts)?));
    let mut extracted_now = false;
    if !target.join("model_index.json").is_file() {
        let tmp = tempfile::Builder::new()
            .prefix(".partial-")
            .tempdir_in(&cache)
            .map_err(|e| LoadError::io(&cache, e))?;
        // On any error `tmp` is dropped, deleting what was written.
        convert_into(path, opts, tmp.path())?;
        let tmp_path = tmp.keep();
        match fs::rename(&tmp_path, &target) {
            Ok(()) => extracted_now = true,
            Err(_) if target.is_dir() => {
                let _ = fs::remove_dir_all(&tmp_path);
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp_path);
                return Err(LoadError::io(&target, e));
            }
        }
    }
    let index = ModelIndex::read(&target.join("model_index.json"))?;
    Ok(ModelDir {
        root: target,
        index,
        source: path.to_path_buf(),
        kind: SourceKind::SingleFile,
        extracted_now,
        handler: None,
        sha256: Some(digest),
    })
}

/// `wgsd convert`: converts `path` and writes a diffusers archive (`model.zip` layout)
/// to `out`, through temporary files beside it, renamed into place when complete.
pub fn convert_to_zip(
    path: &Path,
    opts: &ArchiveOptions,
    out: &Path,
) -> Result<Conversion, LoadError> {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let work = tempfile::Builder::new()
        .prefix(".wgsd-convert-")
        .tempdir_in(&dir)
        .map_err(|e| LoadError::io(&dir, e))?;
    let folder = work.path().join("model");
    fs::create_dir_all(&folder).map_err(|e| LoadError::io(&folder, e))?;
    let conversion = convert_into(path, opts, &folder)?;
    let zip_tmp = work.path().join("model.zip");
    writer::zip_folder(&folder, &zip_tmp)?;
    fs::rename(&zip_tmp, out).map_err(|e| LoadError::io(out, e))?;
    Ok(conversion)
}
