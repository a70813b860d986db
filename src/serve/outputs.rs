//! The outputs folder: finished studio jobs write each image as `NNNNN-<seed>.png` (a
//! running number, then the seed) with its A1111 `parameters` chunk, through a temporary
//! file renamed into place. The history is the folder itself, read back from the files
//! (newest, i.e. highest number, first), so it survives restarts.

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::UNIX_EPOCH;

use serde_json::{Value, json};

use super::registry::ModelEntry;
use crate::error::{Error, Result};
use crate::pipeline::{GenerateRequest, Generated, Image};
use crate::png_info::{self, GenParams, ParsedParams};

/// The digits of the running number (more once past 99999).
const NUMBER_DIGITS: usize = 5;

/// What an image of `generated` (from `request` on `entry`) was made with.
pub fn gen_params(
    entry: &ModelEntry,
    request: &GenerateRequest,
    generated: &Generated,
) -> GenParams {
    GenParams {
        prompt: request.prompts.first().cloned().unwrap_or_default(),
        negative_prompt: request
            .negative_prompts
            .first()
            .cloned()
            .unwrap_or_default(),
        steps: request.steps,
        scheduler: Some(generated.scheduler),
        guidance_scale: request.guidance,
        seed: generated.seed,
        width: request.width,
        height: request.height,
        model_hash: entry
            .worker
            .info
            .sha256
            .as_deref()
            .map(png_info::short_hash),
        model: Some(entry.name.clone()),
        denoising_strength: match (&request.init_image, &request.hires) {
            (Some(_), _) => Some(request.strength),
            (None, Some(h)) => Some(h.strength),
            (None, None) => None,
        },
        hires: request.hires,
        lora_hashes: Vec::new(),
    }
}

/// A1111's "Lora hashes" of a request's LoRAs: (file stem, first 12 hex digits of the
/// file's SHA-256); a file that cannot be read is left out. Each file is hashed once per
/// (path, size, modification time), as A1111 caches its hashes: LoRA files run to
/// hundreds of MB and every /sdapi reply names them.
pub fn lora_hashes(loras: &[crate::lora::LoraSpec]) -> Vec<(String, String)> {
    loras
        .iter()
        .filter_map(|l| {
            let name = l.path.file_stem()?.to_string_lossy().into_owned();
            Some((name, short_file_hash(&l.path)?))
        })
        .collect()
}

/// The first 12 hex digits of `path`'s SHA-256, cached while the file is unchanged.
fn short_file_hash(path: &std::path::Path) -> Option<String> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    type Stamp = (u64, Option<std::time::SystemTime>);
    static CACHE: OnceLock<Mutex<HashMap<std::path::PathBuf, (Stamp, String)>>> = OnceLock::new();
    let meta = std::fs::metadata(path).ok()?;
    let stamp = (meta.len(), meta.modified().ok());
    let cache = CACHE.get_or_init(Default::default);
    if let Some((seen, hash)) = cache.lock().ok()?.get(path)
        && *seen == stamp
    {
        return Some(hash.clone());
    }
    let hash: String = crate::loader::archive::sha256_file(path)
        .ok()?
        .chars()
        .take(12)
        .collect();
    cache
        .lock()
        .ok()?
        .insert(path.to_path_buf(), (stamp, hash.clone()));
    Some(hash)
}

/// The parsed fields as the HTTP API reports them (`null` for what the text lacks).
pub fn params_json(p: &ParsedParams) -> Value {
    json!({
        "prompt": p.prompt,
        "negative_prompt": p.negative_prompt,
        "seed": p.seed,
        "num_inference_steps": p.steps,
        "guidance_scale": p.guidance_scale,
        "width": p.width,
        "height": p.height,
        "scheduler": p.scheduler.map(png_info::short_name),
        "sampler": p.sampler,
        "model": p.model,
        "model_hash": p.model_hash,
    })
}

/// Why an image name was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum NameError {
    /// Path separators, `..`, or not a PNG name (400).
    Invalid,
    /// No such image (404).
    Missing,
}

/// The `NNNNN` of `NNNNN-<seed>.png`, when `name` is one of ours.
fn number_of(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".png")?;
    let (number, seed) = stem.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if number.len() < NUMBER_DIGITS || !digits(number) || !digits(seed) {
        return None;
    }
    number.parse().ok()
}

/// One image of the history.
#[derive(Debug, Clone)]
pub struct HistoryItem {
    pub name: String,
    /// Modification time, unix seconds.
    pub created: u64,
    /// The raw `parameters` text (`None`: the file has none or is unreadable).
    pub parameters: Option<String>,
}

/// The outputs folder.
#[derive(Debug)]
pub struct Outputs {
    dir: PathBuf,
    /// The next running number, once the folder has been scanned; held while writing,
    /// so two jobs never take the same number.
    next: Mutex<Option<u64>>,
}

impl Outputs {
    pub fn new(dir: PathBuf) -> Outputs {
        Outputs {
            dir,
            next: Mutex::new(None),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn io_err(&self, e: std::io::Error) -> Error {
        Error::Io {
            path: self.dir.clone(),
            source: e,
        }
    }

    /// Our image names in the folder, highest number first (none when it does not
    /// exist yet).
    fn names(&self) -> Result<Vec<(u64, String)>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io_err(e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| self.io_err(e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if let Some(n) = number_of(&name) {
                names.push((n, name));
            }
        }
        names.sort_by(|a, b| b.cmp(a));
        Ok(names)
    }

    /// Writes each image with `params` (the seed is the job's; all images of a job
    /// share it) and returns the names, in order.
    pub fn write(&self, images: &[Image], params: &GenParams) -> Result<Vec<String>> {
        let text = png_info::format(params);
        let encoded = images
            .iter()
            .map(|img| png_info::encode_png(img.width, img.height, &img.data, &text))
            .collect::<Result<Vec<_>>>()?;
        std::fs::create_dir_all(&self.dir).map_err(|e| self.io_err(e))?;
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let mut number = match *next {
            Some(n) => n,
            None => self.names()?.first().map_or(0, |(n, _)| n + 1),
        };
        let mut names = Vec::with_capacity(images.len());
        for png in &encoded {
            let name = format!("{number:0w$}-{}.png", params.seed, w = NUMBER_DIGITS);
            self.write_atomic(&name, png)?;
            names.push(name);
            number += 1;
        }
        *next = Some(number);
        Ok(names)
    }

    fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.dir.join(name);
        let mut builder = tempfile::Builder::new();
        builder.prefix(".wgsd-").suffix(".tmp");
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
        let mut tmp = builder.tempfile_in(&self.dir).map_err(|e| self.io_err(e))?;
        let io = |e: std::io::Error| Error::Io {
            path: path.clone(),
            source: e,
        };
        tmp.write_all(bytes).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(&path).map_err(|e| io(e.error))?;
        Ok(())
    }

    /// Removes images this server wrote (a job cancelled as it finished).
    pub fn remove(&self, names: &[String]) {
        for name in names {
            let _ = std::fs::remove_file(self.dir.join(name));
        }
    }

    /// The path of image `name`, checked: a plain file name of ours that exists.
    pub fn path_of(&self, name: &str) -> std::result::Result<PathBuf, NameError> {
        if name.is_empty()
            || name.contains(['/', '\\', '\0'])
            || name.contains("..")
            || !name.ends_with(".png")
        {
            return Err(NameError::Invalid);
        }
        let path = self.dir.join(name);
        if path.is_file() {
            Ok(path)
        } else {
            Err(NameError::Missing)
        }
    }

    /// `(total, items)`: up to `limit` images after skipping `offset`, newest first.
    /// Only the chunks before each file's pixels are read.
    pub fn history(&self, limit: usize, offset: usize) -> Result<(usize, Vec<HistoryItem>)> {
        let names = self.names()?;
        let total = names.len();
        let items = names
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|(_, name)| {
                let path = self.dir.join(&name);
                let created = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs());
                let parameters = File::open(&path)
                    .ok()
                    .and_then(|f| png_info::read_parameters_from(BufReader::new(f)).ok())
                    .flatten();
                HistoryItem {
                    name,
                    created,
                    parameters,
                }
            })
            .collect();
        Ok((total, items))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lora_hashes_are_a1111s_short_sha256_and_follow_the_file() {
        use sha2::{Digest, Sha256};
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("detail_tweaker.safetensors");
        let short = |bytes: &[u8]| -> String {
            Sha256::digest(bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()[..12]
                .to_string()
        };
        let spec = [crate::lora::LoraSpec {
            path: path.clone(),
            scale: 0.8,
        }];
        std::fs::write(&path, b"first version").expect("write");
        let first = lora_hashes(&spec);
        assert_eq!(
            first,
            vec![("detail_tweaker".to_string(), short(b"first version"))]
        );
        assert_eq!(lora_hashes(&spec), first, "the cached hash");
        // A changed file (another size) is hashed again, not served from the cache.
        std::fs::write(&path, b"the second, longer version").expect("rewrite");
        assert_eq!(
            lora_hashes(&spec)[0].1,
            short(b"the second, longer version")
        );
        // A file that is gone is left out.
        std::fs::remove_file(&path).expect("remove");
        assert!(lora_hashes(&spec).is_empty());
    }

    use super::*;

    fn params(seed: u64) -> GenParams {
        GenParams {
            prompt: "a test".into(),
            steps: 3,
            guidance_scale: 7.5,
            seed,
            width: 2,
            height: 1,
            ..GenParams::default()
        }
    }

    fn image() -> Image {
        Image {
            width: 2,
            height: 1,
            data: vec![1, 2, 3, 4, 5, 6],
        }
    }

    #[test]
    fn names_are_numbered_and_listed_newest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Outputs::new(dir.path().join("outputs"));
        assert_eq!(out.history(10, 0).expect("empty").0, 0);
        let a = out.write(&[image()], &params(7)).expect("write");
        let b = out.write(&[image(), image()], &params(9)).expect("write");
        assert_eq!(a, ["00000-7.png"]);
        assert_eq!(b, ["00001-9.png", "00002-9.png"]);
        // A fresh view of the same folder (a restart) continues the numbering.
        let again = Outputs::new(dir.path().join("outputs"));
        assert_eq!(
            again.write(&[image()], &params(1)).expect("write"),
            ["00003-1.png"]
        );
        let (total, items) = again.history(2, 1).expect("history");
        assert_eq!(total, 4);
        let names: Vec<&str> = items.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["00002-9.png", "00001-9.png"]);
        let text = items[0].parameters.as_deref().expect("parameters");
        assert_eq!(png_info::parse(text).seed, Some(9));
        // No temporary files are left behind.
        let leftovers = std::fs::read_dir(again.dir())
            .expect("dir")
            .filter(|e| {
                e.as_ref()
                    .map(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
                    .unwrap_or(true)
            })
            .count();
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn names_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Outputs::new(dir.path().to_path_buf());
        out.write(&[image()], &params(5)).expect("write");
        assert!(out.path_of("00000-5.png").is_ok());
        assert_eq!(out.path_of("00001-5.png"), Err(NameError::Missing));
        for bad in ["../x.png", "a/b.png", "..png", "x.txt", "", "a\\b.png"] {
            assert_eq!(out.path_of(bad), Err(NameError::Invalid), "{bad:?}");
        }
        assert_eq!(number_of("00012-1234.png"), Some(12));
        assert_eq!(number_of("12-1234.png"), None);
        assert_eq!(number_of("00012-x.png"), None);
    }
}
