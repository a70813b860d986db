//! Model archives: a `model.zip` (a diffusers `save_pretrained` folder, zipped), a
//! TorchServe `.mar` (a zip with `MAR-INF/MANIFEST.json` whose extra files include that
//! `model.zip`), or an already extracted folder (used in place).
//!
//! Archives are extracted once into `<cache>/<sha256 of the archive>/`: first into a
//! temporary folder inside the cache, then renamed into place, so a half-extracted folder
//! is never used and a second start reuses the first one's work. Entries that would land
//! outside the folder (`..`, absolute paths, links) are refused, and the total size is
//! bounded (zip bombs).

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use super::config::ModelIndex;
use super::error::LoadError;
use super::single_file::{self, SingleFileOptions};

/// Default bound on the bytes one archive may unpack to (SD 2 in f32 is about 5 GiB).
pub const DEFAULT_MAX_EXTRACT_BYTES: u64 = 16 << 30;
/// Default bound on the entries of one zip (a diffusers pipeline has about 20 files).
pub const DEFAULT_MAX_ENTRIES: usize = 10_000;
/// Default bound on one entry's compression ratio (uncompressed / compressed). Weights
/// deflate by at most ~1.2x and JSON/vocabulary files by ~4x; a zip bomb by 1000x.
pub const DEFAULT_MAX_RATIO: u64 = 200;
/// Entries smaller than this are not ratio-checked (a tiny all-zero file is harmless).
const RATIO_MIN_BYTES: u64 = 1 << 20;

/// Where and how archives are extracted.
#[derive(Debug, Clone)]
pub struct ArchiveOptions {
    /// Cache root; `None` means [`default_cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// Refuse archives that unpack to more than this many bytes (default
    /// `$WGSD_MAX_EXTRACT_BYTES`, else [`DEFAULT_MAX_EXTRACT_BYTES`]).
    pub max_extract_bytes: u64,
    /// Refuse zips with more entries than this ([`DEFAULT_MAX_ENTRIES`]).
    pub max_entries: usize,
    /// Refuse entries over 1 MiB that inflate by more than this factor
    /// ([`DEFAULT_MAX_RATIO`]).
    pub max_ratio: u64,
    /// How single-file checkpoints (`.safetensors`, `.ckpt`) are converted.
    pub single_file: SingleFileOptions,
}

/// The bounds one extraction runs under.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    bytes: u64,
    entries: usize,
    ratio: u64,
}

impl Default for ArchiveOptions {
    fn default() -> Self {
        ArchiveOptions {
            cache_dir: None,
            max_extract_bytes: std::env::var("WGSD_MAX_EXTRACT_BYTES")
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(DEFAULT_MAX_EXTRACT_BYTES),
            max_entries: DEFAULT_MAX_ENTRIES,
            max_ratio: DEFAULT_MAX_RATIO,
            single_file: SingleFileOptions::default(),
        }
    }
}

impl ArchiveOptions {
    fn bounds(&self) -> Bounds {
        Bounds {
            bytes: self.max_extract_bytes,
            entries: self.max_entries,
            ratio: self.max_ratio,
        }
    }
}

/// `$WGSD_CACHE_DIR`, else `$XDG_CACHE_HOME/wgsd`, else `~/.cache/wgsd`, else a folder
/// in the system temp dir.
pub fn default_cache_dir() -> PathBuf {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = env("WGSD_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = env("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("wgsd");
    }
    if let Some(h) = env("HOME") {
        return PathBuf::from(h).join(".cache").join("wgsd");
    }
    std::env::temp_dir().join("wgsd-cache")
}

/// How the model was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Folder,
    Zip,
    Mar,
    /// A single-file checkpoint (`.safetensors`, `.ckpt`), converted into the cache.
    SingleFile,
}

/// A diffusers pipeline folder ready to load.
#[derive(Debug, Clone)]
pub struct ModelDir {
    /// The folder holding `model_index.json`, `unet/`, `tokenizer/`, ...
    pub root: PathBuf,
    /// `model_index.json`.
    pub index: ModelIndex,
    /// What the user passed.
    pub source: PathBuf,
    pub kind: SourceKind,
    /// True when this call extracted the archive (false: folder or cache hit).
    pub extracted_now: bool,
    /// The TorchServe handler named by a `.mar`'s manifest.
    pub handler: Option<String>,
    /// Hex SHA-256 of the archive file (`None` for a folder): the extraction cache's
    /// key, and the model hash written into image parameters.
    pub sha256: Option<String>,
}

impl ModelDir {
    /// `root/<name>`, or [`LoadError::MissingComponent`] when that folder is absent.
    pub fn component(&self, name: &str) -> Result<PathBuf, LoadError> {
        let dir = self.root.join(name);
        if dir.is_dir() {
            Ok(dir)
        } else {
            Err(LoadError::MissingComponent {
                root: self.root.clone(),
                component: name.to_string(),
            })
        }
    }
}

/// Opens a model archive or folder with default options.
pub fn open_model(path: &Path) -> Result<ModelDir, LoadError> {
    open_model_with(path, &ArchiveOptions::default())
}

/// Opens `path`: a folder is used in place; a `.zip` / `.mar` is extracted into the cache
/// (or found there from an earlier run); a single-file checkpoint is converted into the
/// cache (see [`single_file`]).
pub fn open_model_with(path: &Path, opts: &ArchiveOptions) -> Result<ModelDir, LoadError> {
    let meta = fs::metadata(path).map_err(|e| LoadError::io(path, e))?;
    if meta.is_file() && single_file::is_single_file(path) {
        return single_file::open_cached(path, opts);
    }
    if meta.is_dir() {
        let root = find_pipeline_root(path)?;
        let index = ModelIndex::read(&root.join("model_index.json"))?;
        return Ok(ModelDir {
            root,
            index,
            source: path.to_path_buf(),
            kind: SourceKind::Folder,
            extracted_now: false,
            handler: read_manifest_handler(path)?,
            sha256: None,
        });
    }
    let cache = opts.cache_dir.clone().unwrap_or_else(default_cache_dir);
    fs::create_dir_all(&cache).map_err(|e| LoadError::io(&cache, e))?;
    let digest = sha256_file(path)?;
    let target = cache.join(&digest);
    let mut extracted_now = false;
    if !target.is_dir() {
        let tmp = tempfile::Builder::new()
            .prefix(".partial-")
            .tempdir_in(&cache)
            .map_err(|e| LoadError::io(&cache, e))?;
        // On any error below `tmp` is dropped, which deletes what was written: a refused
        // or broken archive leaves nothing in the cache.
        extract_with(path, tmp.path(), opts.bounds())?;
        find_pipeline_root(tmp.path()).map_err(|_| LoadError::NotAPipeline {
            path: path.to_path_buf(),
        })?;
        let tmp_path = tmp.keep();
        match fs::rename(&tmp_path, &target) {
            Ok(()) => extracted_now = true,
            // Another process finished first: use its copy, drop ours.
            Err(_) if target.is_dir() => {
                let _ = fs::remove_dir_all(&tmp_path);
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp_path);
                return Err(LoadError::io(&target, e));
            }
        }
    }
    let handler = read_manifest_handler(&target)?;
    let kind = if handler.is_some() || target.join("MAR-INF").is_dir() {
        SourceKind::Mar
    } else {
        SourceKind::Zip
    };
    let root = find_pipeline_root(&target).map_err(|_| LoadError::NotAPipeline {
        path: path.to_path_buf(),
    })?;
    let index = ModelIndex::read(&root.join("model_index.json"))?;
    Ok(ModelDir {
        root,
        index,
        source: path.to_path_buf(),
        kind,
        extracted_now,
        handler,
        sha256: Some(digest),
    })
}

/// Hex SHA-256 of a file's bytes.
pub fn sha256_file(path: &Path) -> Result<String, LoadError> {
    let mut f = File::open(path).map_err(|e| LoadError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| LoadError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The folder holding `model_index.json`: `dir` itself, else the shallowest match up to
/// two folders down (a zip made with `zip -r model.zip folder/`; a `.mar`'s unpacked
/// `model.zip` in `model/`), alphabetical among equals.
pub fn find_pipeline_root(dir: &Path) -> Result<PathBuf, LoadError> {
    let mut level = vec![dir.to_path_buf()];
    for _ in 0..3 {
        let mut hits: Vec<&PathBuf> = level
            .iter()
            .filter(|d| d.join("model_index.json").is_file())
            .collect();
        hits.sort();
        if let Some(h) = hits.first() {
            return Ok((*h).clone());
        }
        let mut next = Vec::new();
        for d in &level {
            let entries = fs::read_dir(d).map_err(|e| LoadError::io(d, e))?;
            for entry in entries {
                let p = entry.map_err(|e| LoadError::io(d, e))?.path();
                // Not following links: extracted archives hold none, folders may.
                if p.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                    next.push(p);
                }
            }
        }
        level = next;
    }
    Err(LoadError::NotAPipeline {
        path: dir.to_path_buf(),
    })
}

/// `model.modelVersion` of a TorchServe archive's `MAR-INF/MANIFEST.json`, read without
/// extracting: from a `.mar` (zip) file, or a folder holding `MAR-INF/`. `None` for
/// plain diffusers archives and folders, or an unreadable manifest.
pub fn manifest_version(path: &Path) -> Option<String> {
    const MANIFEST: &str = "MAR-INF/MANIFEST.json";
    let text = if path.is_dir() {
        fs::read_to_string(path.join(MANIFEST)).ok()?
    } else {
        let file = File::open(path).ok()?;
        let mut zip = zip::ZipArchive::new(io::BufReader::new(file)).ok()?;
        let entry = zip.by_name(MANIFEST).ok()?;
        let mut text = String::new();
        // A manifest is a few hundred bytes; a huge one is not a manifest.
        entry.take(1 << 20).read_to_string(&mut text).ok()?;
        text
    };
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.pointer("/model/modelVersion")
        .and_then(|h| h.as_str())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// `model.handler` from `MAR-INF/MANIFEST.json`, if there is one.
fn read_manifest_handler(dir: &Path) -> Result<Option<String>, LoadError> {
    let path = dir.join("MAR-INF").join("MANIFEST.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = fs::read_to_string(&path).map_err(|e| LoadError::io(&path, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| LoadError::Json {
        path: path.clone(),
        msg: e.to_string(),
    })?;
    Ok(v.pointer("/model/handler")
        .and_then(|h| h.as_str())
        .map(str::to_string))
}

/// Extracts `archive` into the (empty) folder `dest`. A `.mar` (recognised by its
/// `MAR-INF/MANIFEST.json`) has its inner `model.zip` extracted into `dest/model/` too,
/// sharing the same size budget.
pub fn extract_archive(archive: &Path, dest: &Path, max_bytes: u64) -> Result<(), LoadError> {
    let bounds = ArchiveOptions {
        max_extract_bytes: max_bytes,
        ..ArchiveOptions::default()
    }
    .bounds();
    extract_with(archive, dest, bounds)
}

fn extract_with(archive: &Path, dest: &Path, bounds: Bounds) -> Result<(), LoadError> {
    let mut budget = bounds.bytes;
    extract_zip(archive, archive, dest, &mut budget, bounds)?;
    if dest.join("MAR-INF").join("MANIFEST.json").is_file() {
        let inner = dest.join("model.zip");
        if inner.is_file() {
            let inner_dest = dest.join("model");
            fs::create_dir_all(&inner_dest).map_err(|e| LoadError::io(&inner_dest, e))?;
            extract_zip(&inner, archive, &inner_dest, &mut budget, bounds)?;
            fs::remove_file(&inner).map_err(|e| LoadError::io(&inner, e))?;
        }
    }
    Ok(())
}

/// Checks an entry name and turns it into a relative path with only normal components.
fn safe_relative(archive: &Path, name: &str) -> Result<PathBuf, LoadError> {
    let refuse = |reason| LoadError::UnsafeEntry {
        archive: archive.to_path_buf(),
        entry: name.to_string(),
        reason,
    };
    if name.contains('\0') {
        return Err(refuse("the name contains a NUL byte"));
    }
    if name.starts_with('/') || name.starts_with('\\') {
        return Err(refuse("absolute path"));
    }
    let mut out = PathBuf::new();
    for part in name.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => return Err(refuse("path escapes the extraction folder (`..`)")),
            p if p.contains(':') => return Err(refuse("drive letter or stream name")),
            p => out.push(p),
        }
    }
    // Belt and braces: after the checks above only normal components remain.
    if out.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(refuse("path escapes the extraction folder"));
    }
    Ok(out)
}

fn extract_zip(
    zip_path: &Path,
    reported: &Path,
    dest: &Path,
    budget: &mut u64,
    bounds: Bounds,
) -> Result<(), LoadError> {
    let limit = bounds.bytes;
    let bad = |msg: String| LoadError::Archive {
        path: reported.to_path_buf(),
        msg,
    };
    let file = File::open(zip_path).map_err(|e| LoadError::io(zip_path, e))?;
    let mut zip = zip::ZipArchive::new(io::BufReader::new(file)).map_err(|e| bad(e.to_string()))?;
    // First pass: validate the entry count, every name, each entry's compression ratio
    // and the declared total before writing anything.
    if zip.len() > bounds.entries {
        return Err(LoadError::TooManyEntries {
            archive: reported.to_path_buf(),
            count: zip.len(),
            limit: bounds.entries,
        });
    }
    let mut declared: u64 = 0;
    for i in 0..zip.len() {
        let entry = zip.by_index_raw(i).map_err(|e| bad(e.to_string()))?;
        let name = entry.name().map_err(|e| bad(e.to_string()))?.into_owned();
        safe_relative(reported, &name)?;
        if entry.is_symlink() {
            return Err(LoadError::UnsafeEntry {
                archive: reported.to_path_buf(),
                entry: name,
                reason: "symbolic links are not allowed",
            });
        }
        let (size, packed) = (entry.size(), entry.compressed_size());
        if size >= RATIO_MIN_BYTES && size / packed.max(1) > bounds.ratio {
            return Err(LoadError::Suspicious {
                archive: reported.to_path_buf(),
                entry: name,
                ratio: size / packed.max(1),
                limit: bounds.ratio,
            });
        }
        declared = declared.saturating_add(size);
    }
    if declared > *budget {
        return Err(LoadError::TooLarge {
            archive: reported.to_path_buf(),
            limit,
        });
    }
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| bad(e.to_string()))?;
        let name = entry.name().map_err(|e| bad(e.to_string()))?.into_owned();
        let rel = safe_relative(reported, &name)?;
        let out = dest.join(&rel);
        if entry.is_dir() {
            fs::create_dir_all(&out).map_err(|e| LoadError::io(&out, e))?;
            continue;
        }
        if let Some(parent) = out.parent() {
            fs::create_dir_all(parent).map_err(|e| LoadError::io(parent, e))?;
        }
        let mut f = File::create(&out).map_err(|e| LoadError::io(&out, e))?;
        // The declared size may lie: count what is really inflated, and stop one byte
        // past the declared size (the ratio and total checks above trusted it).
        let declared_size = entry.size();
        let mut limited = (&mut entry).take((*budget).min(declared_size) + 1);
        let n = io::copy(&mut limited, &mut f).map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => {
                bad(format!("entry {name:?}: {e}"))
            }
            _ => LoadError::io(&out, e),
        })?;
        if n > declared_size {
            return Err(bad(format!(
                "entry {name:?} inflates past its declared size of {declared_size} bytes"
            )));
        }
        if n > *budget {
            return Err(LoadError::TooLarge {
                archive: reported.to_path_buf(),
                limit,
            });
        }
        *budget -= n;
    }
    Ok(())
}
