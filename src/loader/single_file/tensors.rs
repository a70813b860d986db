//! The tensors of a single-file checkpoint, whatever its container: a `.safetensors`
//! file (memory-mapped) or a `torch.save` zip (`.ckpt`: `<name>/data.pkl` read by the
//! restricted unpickler, tensors in `<name>/data/<key>` storages). Both give names,
//! dtypes, shapes and contiguous little-endian bytes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use safetensors::tensor::Dtype;

use super::pickle::{self, PickleError, TensorRef, Value};
use crate::loader::error::LoadError;
use crate::loader::weights::SafetensorsFile;

/// Largest `data.pkl` read (an SD state dict's is about 100 KB).
const MAX_PICKLE_BYTES: u64 = 64 << 20;

/// Element types found in checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredDType {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl StoredDType {
    pub fn size(self) -> usize {
        match self {
            StoredDType::F64 | StoredDType::I64 => 8,
            StoredDType::F32 | StoredDType::I32 => 4,
            StoredDType::F16 | StoredDType::BF16 | StoredDType::I16 => 2,
            StoredDType::I8 | StoredDType::U8 | StoredDType::Bool => 1,
        }
    }

    /// The name in a safetensors header.
    pub fn safetensors_name(self) -> &'static str {
        match self {
            StoredDType::F32 => "F32",
            StoredDType::F16 => "F16",
            StoredDType::BF16 => "BF16",
            StoredDType::F64 => "F64",
            StoredDType::I64 => "I64",
            StoredDType::I32 => "I32",
            StoredDType::I16 => "I16",
            StoredDType::I8 => "I8",
            StoredDType::U8 => "U8",
            StoredDType::Bool => "BOOL",
        }
    }

    fn from_safetensors(d: Dtype) -> Option<StoredDType> {
        Some(match d {
            Dtype::F32 => StoredDType::F32,
            Dtype::F16 => StoredDType::F16,
            Dtype::BF16 => StoredDType::BF16,
            Dtype::F64 => StoredDType::F64,
            Dtype::I64 => StoredDType::I64,
            Dtype::I32 => StoredDType::I32,
            Dtype::I16 => StoredDType::I16,
            Dtype::I8 => StoredDType::I8,
            Dtype::U8 => StoredDType::U8,
            Dtype::BOOL => StoredDType::Bool,
            _ => return None,
        })
    }

    /// Weights wgsd loads (the others, e.g. int64 `position_ids`, are buffers).
    pub fn is_weight(self) -> bool {
        matches!(
            self,
            StoredDType::F32 | StoredDType::F16 | StoredDType::BF16
        )
    }
}

/// One tensor's dtype and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: StoredDType,
    pub shape: Vec<usize>,
}

enum Container {
    Safetensors(SafetensorsFile),
    Torch {
        zip: Mutex<zip::ZipArchive<BufReader<File>>>,
        /// `<name>/` before `data.pkl` and `data/<key>`.
        prefix: String,
        tensors: BTreeMap<String, TensorRef>,
        /// The last storage read: (entry name, bytes).
        last: Mutex<Option<(String, std::sync::Arc<Vec<u8>>)>>,
    },
}

/// A single-file checkpoint's tensors.
pub struct Checkpoint {
    path: PathBuf,
    container: Container,
    infos: BTreeMap<String, TensorInfo>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Checkpoint({}, {} tensors)",
            self.path.display(),
            self.infos.len()
        )
    }
}

fn corrupt(path: &Path, msg: impl Into<String>) -> LoadError {
    LoadError::Corrupt {
        file: path.to_path_buf(),
        msg: msg.into(),
    }
}

impl Checkpoint {
    /// Opens `path`, recognising the container by its first bytes (a zip is a
    /// `torch.save` checkpoint, anything else must be safetensors).
    pub fn open(path: &Path) -> Result<Checkpoint, LoadError> {
        let mut magic = [0u8; 4];
        let n = File::open(path)
            .and_then(|mut f| f.read(&mut magic))
            .map_err(|e| LoadError::io(path, e))?;
        if n == 4 && &magic == b"PK\x03\x04" {
            return Self::open_torch(path);
        }
        if n >= 2 && magic[..2] == [0x80, 0x02] {
            return Err(corrupt(
                path,
                "a legacy (pre-1.6, non-zip) torch.save file; re-save it with a current torch, \
                 or as .safetensors",
            ));
        }
        let file = SafetensorsFile::open(path)?;
        let mut infos = BTreeMap::new();
        for key in file.keys() {
            let (dtype, shape, _) = file.raw(&key)?;
            let dtype = StoredDType::from_safetensors(dtype).ok_or_else(|| {
                LoadError::UnsupportedDType {
                    file: path.to_path_buf(),
                    key: key.clone(),
                    dtype: format!("{dtype:?}"),
                }
            })?;
            infos.insert(key, TensorInfo { dtype, shape });
        }
        Ok(Checkpoint {
            path: path.to_path_buf(),
            container: Container::Safetensors(file),
            infos,
        })
    }

    fn open_torch(path: &Path) -> Result<Checkpoint, LoadError> {
        let file = File::open(path).map_err(|e| LoadError::io(path, e))?;
        let mut zip = zip::ZipArchive::new(BufReader::new(file))
            .map_err(|e| corrupt(path, format!("not a readable torch.save zip: {e}")))?;
        let pkl = (0..zip.len())
            .filter_map(|i| {
                zip.name_for_index(i)
                    .and_then(|n| n.ok())
                    .map(|n| n.to_string())
            })
            .find(|n| n.ends_with("data.pkl") && n.matches('/').count() <= 1)
            .ok_or_else(|| corrupt(path, "a zip without data.pkl is not a torch.save file"))?;
        let prefix = pkl.trim_end_matches("data.pkl").to_string();
        let mut bytes = Vec::new();
        zip.by_name(&pkl)
            .map_err(|e| corrupt(path, e.to_string()))?
            .take(MAX_PICKLE_BYTES)
            .read_to_end(&mut bytes)
            .map_err(|e| corrupt(path, format!("{pkl}: {e}")))?;
        let value = pickle::unpickle(&bytes).map_err(|e| match e {
            PickleError::Refused(global) => LoadError::RefusedPickle {
                file: path.to_path_buf(),
                global,
            },
            PickleError::Malformed(msg) => corrupt(path, format!("{pkl}: {msg}")),
        })?;
        let tensors = state_dict(value).ok_or_else(|| LoadError::NotStableDiffusion {
            file: path.to_path_buf(),
            msg: "the pickle holds no dict of tensors".into(),
        })?;
        let mut infos = BTreeMap::new();
        for (k, t) in &tensors {
            infos.insert(
                k.clone(),
                TensorInfo {
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                },
            );
        }
        Ok(Checkpoint {
            path: path.to_path_buf(),
            container: Container::Torch {
                zip: Mutex::new(zip),
                prefix,
                tensors,
                last: Mutex::new(None),
            },
            infos,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every tensor's name, dtype and shape, sorted by name.
    pub fn infos(&self) -> &BTreeMap<String, TensorInfo> {
        &self.infos
    }

    /// `key`'s elements, contiguous, little-endian, in its stored dtype.
    pub fn read(&self, key: &str) -> Result<Vec<u8>, LoadError> {
        let missing = || LoadError::MissingTensor {
            file: self.path.clone(),
            key: key.to_string(),
        };
        match &self.container {
            Container::Safetensors(f) => Ok(f.raw(key)?.2.to_vec()),
            Container::Torch {
                zip,
                prefix,
                tensors,
                last,
            } => {
                let t = tensors.get(key).ok_or_else(missing)?;
                let name = format!("{prefix}data/{}", t.storage);
                let es = t.dtype.size();
                let want = t.storage_numel * es;
                // Views of one storage usually come one after another (and a file may
                // keep many tensors in one storage): the last storage read is kept.
                let mut cache = last.lock().unwrap_or_else(|p| p.into_inner());
                let storage = match cache.as_ref() {
                    Some((k, d)) if *k == name => d.clone(),
                    _ => {
                        let d = std::sync::Arc::new(self.read_storage(zip, &name, want)?);
                        *cache = Some((name.clone(), d.clone()));
                        d
                    }
                };
                gather(&storage, t, es).ok_or_else(|| {
                    corrupt(
                        &self.path,
                        format!("tensor {key:?} lies outside its storage"),
                    )
                })
            }
        }
    }
}

impl Checkpoint {
    /// The bytes of storage entry `name`, which must hold exactly `want` bytes.
    fn read_storage(
        &self,
        zip: &Mutex<zip::ZipArchive<BufReader<File>>>,
        name: &str,
        want: usize,
    ) -> Result<Vec<u8>, LoadError> {
        let mut zip = zip.lock().unwrap_or_else(|p| p.into_inner());
        let mut entry = zip
            .by_name(name)
            .map_err(|e| corrupt(&self.path, format!("storage {name}: {e}")))?;
        if entry.size() != want as u64 {
            return Err(corrupt(
                &self.path,
                format!(
                    "storage {name} holds {} bytes, the pickle says {want}",
                    entry.size()
                ),
            ));
        }
        let mut storage = Vec::with_capacity(want);
        entry
            .read_to_end(&mut storage)
            .map_err(|e| corrupt(&self.path, format!("storage {name}: {e}")))?;
        Ok(storage)
    }
}

/// The dict of tensors: the top-level dict, or its `state_dict` entry (nested as
/// diffusers unwraps it). Non-tensor entries (`global_step`, ...) are skipped.
fn state_dict(mut v: Value) -> Option<BTreeMap<String, TensorRef>> {
    loop {
        let Value::Dict(items) = v else {
            return None;
        };
        let inner = items.iter().position(|(k, val)| {
            matches!(k, Value::Str(s) if s == "state_dict") && matches!(val, Value::Dict(_))
        });
        if let Some(i) = inner {
            v = items.into_iter().nth(i).map(|(_, val)| val)?;
            continue;
        }
        let out: BTreeMap<String, TensorRef> = items
            .into_iter()
            .filter_map(|(k, val)| match (k, val) {
                (Value::Str(k), Value::Tensor(t)) => Some((k, t)),
                _ => None,
            })
            .collect();
        return (!out.is_empty()).then_some(out);
    }
}

/// The elements of view `t` of `storage`, row-major; `None` when the view reaches past
/// the storage.
fn gather(storage: &[u8], t: &TensorRef, es: usize) -> Option<Vec<u8>> {
    let numel: usize = t.shape.iter().product();
    if numel == 0 {
        return Some(Vec::new());
    }
    let last = t
        .shape
        .iter()
        .zip(&t.stride)
        .try_fold(t.offset, |acc, (&n, &s)| {
            acc.checked_add((n - 1).checked_mul(s)?)
        })?;
    if last >= t.storage_numel || (last + 1) * es > storage.len() {
        return None;
    }
    // Row-major strides: one slice.
    let mut contiguous = true;
    let mut expect = 1;
    for (&n, &s) in t.shape.iter().zip(&t.stride).rev() {
        if n != 1 && s != expect {
            contiguous = false;
        }
        expect *= n;
    }
    if contiguous {
        return Some(storage[t.offset * es..(t.offset + numel) * es].to_vec());
    }
    let mut out = Vec::with_capacity(numel * es);
    let mut idx = vec![0usize; t.shape.len()];
    for _ in 0..numel {
        let at = t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
        out.extend_from_slice(&storage[at * es..(at + 1) * es]);
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < t.shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathers_transposed_and_offset_views() {
        // storage 0..6 as u8 elements; a 2x2 view at offset 1 with strides (1, 2): [[1, 3], [2, 4]].
        let storage: Vec<u8> = (0..6).collect();
        let t = TensorRef {
            storage: "0".into(),
            dtype: StoredDType::U8,
            storage_numel: 6,
            offset: 1,
            shape: vec![2, 2],
            stride: vec![1, 2],
        };
        assert_eq!(gather(&storage, &t, 1), Some(vec![1, 3, 2, 4]));
        let past = TensorRef {
            offset: 3,
            ..t.clone()
        };
        assert_eq!(gather(&storage, &past, 1), None);
        let contiguous = TensorRef {
            offset: 2,
            shape: vec![2, 2],
            stride: vec![2, 1],
            ..t
        };
        assert_eq!(gather(&storage, &contiguous, 1), Some(vec![2, 3, 4, 5]));
    }
}
