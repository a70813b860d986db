//! Safetensors weights, memory-mapped, and a prefix builder for their names as candle's
//! `VarBuilder` does: `vb.pp("down_blocks").pp(1).get_weight(&[320, 320, 3, 3], "weight")`
//! reads `down_blocks.1.weight`, checks its shape and uploads it in the requested storage
//! dtype. Stored F32 / F16 / BF16 are converted on the CPU while uploading (the only
//! place weights go to the GPU: [`VarBuilder::get`]). Used keys are recorded so that a
//! model can warn about the ones it never read.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata, SafeTensors, TensorInfo};

use super::error::LoadError;
use crate::error::Result;
use crate::gpu::{DType, Gpu, Tensor};
use crate::lora::LoraTargets;

/// Weight file names tried in a component folder, in order.
pub const WEIGHT_FILES: [&str; 4] = [
    "diffusion_pytorch_model.safetensors",
    "model.safetensors",
    "diffusion_pytorch_model.fp16.safetensors",
    "model.fp16.safetensors",
];

/// Pickle files that mean "convert me first".
const PICKLE_FILES: [&str; 4] = [
    "diffusion_pytorch_model.bin",
    "pytorch_model.bin",
    "diffusion_pytorch_model.fp16.bin",
    "pytorch_model.fp16.bin",
];

/// The safetensors file of a component folder (`unet/`, `text_encoder/`, ...).
pub fn find_weights_file(dir: &Path) -> Result<PathBuf, LoadError> {
    if !dir.is_dir() {
        let (root, component) = match (dir.parent(), dir.file_name()) {
            (Some(r), Some(c)) => (r.to_path_buf(), c.to_string_lossy().into_owned()),
            _ => (dir.to_path_buf(), String::new()),
        };
        return Err(LoadError::MissingComponent { root, component });
    }
    if let Some(p) = WEIGHT_FILES
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
    {
        return Ok(p);
    }
    if let Some(p) = PICKLE_FILES
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
    {
        return Err(LoadError::PickleOnly { file: p });
    }
    Err(LoadError::NoWeights {
        dir: dir.to_path_buf(),
        expected: WEIGHT_FILES.join(" or "),
    })
}

/// One memory-mapped safetensors file with its parsed header.
pub struct SafetensorsFile {
    path: PathBuf,
    mmap: Mmap,
    /// Byte offset of the data section (8 + header length).
    data_start: usize,
    meta: Metadata,
    used: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for SafetensorsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SafetensorsFile({})", self.path.display())
    }
}

impl SafetensorsFile {
    /// Maps and validates the file (header, offsets, and that the data is all there).
    pub fn open(path: &Path) -> Result<SafetensorsFile, LoadError> {
        let file = File::open(path).map_err(|e| LoadError::io(path, e))?;
        // SAFETY: the file is opened read-only; the map lives as long as this struct. A
        // file truncated by another process while mapped would fault; model folders are
        // not modified while in use (the cache only ever renames complete folders).
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| LoadError::io(path, e))?;
        let (n, meta) = SafeTensors::read_metadata(&mmap).map_err(|e| LoadError::Corrupt {
            file: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            mmap,
            data_start: 8 + n,
            meta,
            used: Mutex::new(HashSet::new()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The header's `__metadata__` (free-form strings), if any.
    pub fn user_metadata(&self) -> Option<&std::collections::HashMap<String, String>> {
        self.meta.metadata().as_ref()
    }

    /// All tensor names, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut k: Vec<String> = self.meta.tensors().into_keys().collect();
        k.sort();
        k
    }

    pub fn contains(&self, key: &str) -> bool {
        self.meta.info(key).is_some()
    }

    /// True if some tensor is named `prefix.<...>`.
    pub fn has_prefix(&self, prefix: &str) -> bool {
        let dotted = format!("{prefix}.");
        self.meta.tensors().keys().any(|k| k.starts_with(&dotted))
    }

    /// Stored shape of `key`.
    pub fn shape_of(&self, key: &str) -> Option<Vec<usize>> {
        self.meta.info(key).map(|i| i.shape.clone())
    }

    /// Names never read through [`SafetensorsFile::read_f32`] / a [`VarBuilder`], sorted.
    pub fn unused_keys(&self) -> Vec<String> {
        let used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let mut k: Vec<String> = self
            .meta
            .tensors()
            .into_keys()
            .filter(|k| !used.contains(k))
            .collect();
        k.sort();
        k
    }

    /// Looks `key` up, checks its shape (when given) and marks it used.
    fn tensor(
        &self,
        key: &str,
        shape: Option<&[usize]>,
    ) -> Result<(&TensorInfo, &[u8]), LoadError> {
        let info = self
            .meta
            .info(key)
            .ok_or_else(|| LoadError::MissingTensor {
                file: self.path.clone(),
                key: key.to_string(),
            })?;
        if let Some(shape) = shape
            && info.shape != shape
        {
            return Err(LoadError::Shape {
                file: self.path.clone(),
                key: key.to_string(),
                expected: shape.to_vec(),
                got: info.shape.clone(),
            });
        }
        let (a, b) = info.data_offsets;
        // read_metadata already checked the offsets against the file length.
        let data = self
            .mmap
            .get(self.data_start + a..self.data_start + b)
            .ok_or_else(|| LoadError::Corrupt {
                file: self.path.clone(),
                msg: format!("tensor {key:?} lies outside the file"),
            })?;
        self.used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_string());
        Ok((info, data))
    }

    /// `key`'s stored dtype, shape and bytes as they are in the file (marks it used).
    pub fn raw(&self, key: &str) -> Result<(Dtype, Vec<usize>, &[u8]), LoadError> {
        let (info, data) = self.tensor(key, None)?;
        Ok((info.dtype, info.shape.clone(), data))
    }

    /// `key` converted to `dtype`'s little-endian bytes (F32 or F16 storage).
    pub fn read_as(
        &self,
        key: &str,
        shape: Option<&[usize]>,
        dtype: DType,
    ) -> Result<Vec<u8>, LoadError> {
        let (info, data) = self.tensor(key, shape)?;
        let src = info.dtype;
        let unsupported = || LoadError::UnsupportedDType {
            file: self.path.clone(),
            key: key.to_string(),
            dtype: format!("{src:?}"),
        };
        let halfs = |f: fn(u16) -> f32| {
            data.chunks_exact(2)
                .map(move |c| f(u16::from_le_bytes([c[0], c[1]])))
        };
        let f32s = || {
            data.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        };
        let from_f16 = |b: u16| half::f16::from_bits(b).to_f32();
        let from_bf16 = |b: u16| half::bf16::from_bits(b).to_f32();
        let to_f16 = |x: f32| half::f16::from_f32(x).to_le_bytes();
        Ok(match (src, dtype) {
            // Same layout: copy the bytes (no rounding at all).
            (Dtype::F32, DType::F32) | (Dtype::F16, DType::F16) => data.to_vec(),
            (Dtype::F16, DType::F32) => halfs(from_f16).flat_map(f32::to_le_bytes).collect(),
            (Dtype::BF16, DType::F32) => halfs(from_bf16).flat_map(f32::to_le_bytes).collect(),
            (Dtype::F32, DType::F16) => f32s().flat_map(to_f16).collect(),
            // bf16 -> f32 is exact, then one rounding to f16.
            (Dtype::BF16, DType::F16) => halfs(from_bf16).flat_map(to_f16).collect(),
            _ => return Err(unsupported()),
        })
    }

    /// `key` as f32 on the host (tests, small tables).
    pub fn read_f32(&self, key: &str, shape: Option<&[usize]>) -> Result<Vec<f32>, LoadError> {
        let bytes = self.read_as(key, shape, DType::F32)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}

/// Where a [`VarBuilder`]'s tensors come from.
#[derive(Clone)]
enum Source {
    /// A safetensors file.
    File(Arc<SafetensorsFile>),
    /// Deterministic pseudo-random values of whatever shape is asked for: a
    /// "config-only" model for benchmarks at full size with no download.
    Random,
}

/// A prefix into one weights file, bound to a GPU and a storage dtype for matrices.
#[derive(Clone)]
pub struct VarBuilder<'g> {
    gpu: &'g Gpu,
    source: Source,
    /// Elements uploaded through this builder and every builder derived from it.
    loaded: Arc<std::sync::atomic::AtomicU64>,
    prefix: String,
    weight_dtype: DType,
    /// How the model built from this builder stores its activations (F32 unless set).
    activation_dtype: DType,
    /// The Linear / Conv2d weights loaded through this builder and those derived from it.
    lora_targets: LoraTargets,
}

impl std::fmt::Debug for VarBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VarBuilder({}, {:?})",
            match &self.source {
                Source::File(f) => f.path.display().to_string(),
                Source::Random => "random weights".to_string(),
            },
            self.prefix
        )
    }
}

impl<'g> VarBuilder<'g> {
    /// Over one safetensors file. `weight_dtype` is what [`VarBuilder::get_weight`] stores
    /// (F16 where the device has SHADER_F16, else F32).
    pub fn from_file(gpu: &'g Gpu, path: &Path, weight_dtype: DType) -> Result<VarBuilder<'g>> {
        let file = SafetensorsFile::open(path)?;
        Ok(Self::from_safetensors(gpu, Arc::new(file), weight_dtype))
    }

    /// Over the weights of a component folder (see [`find_weights_file`]).
    pub fn from_component(gpu: &'g Gpu, dir: &Path, weight_dtype: DType) -> Result<VarBuilder<'g>> {
        let path = find_weights_file(dir)?;
        Self::from_file(gpu, &path, weight_dtype)
    }

    pub fn from_safetensors(
        gpu: &'g Gpu,
        file: Arc<SafetensorsFile>,
        weight_dtype: DType,
    ) -> VarBuilder<'g> {
        VarBuilder {
            gpu,
            source: Source::File(file),
            loaded: Arc::default(),
            prefix: String::new(),
            weight_dtype,
            activation_dtype: DType::F32,
            lora_targets: LoraTargets::default(),
        }
    }

    /// The same builder, for a model that stores activations as `dtype` (F32 or F16).
    pub fn with_activation_dtype(mut self, dtype: DType) -> VarBuilder<'g> {
        self.activation_dtype = dtype;
        self
    }

    /// How the model being built stores its activations.
    pub fn activation_dtype(&self) -> DType {
        self.activation_dtype
    }

    /// Pseudo-random weights of whatever shape the model asks for (uniform, scaled by
    /// 1/sqrt(fan-in) so activations stay finite): the real architecture from a config
    /// alone, for benchmarks at full size with no download. Not for images.
    pub fn random(gpu: &'g Gpu, weight_dtype: DType) -> VarBuilder<'g> {
        VarBuilder {
            gpu,
            source: Source::Random,
            loaded: Arc::default(),
            prefix: String::new(),
            weight_dtype,
            activation_dtype: DType::F32,
            lora_targets: LoraTargets::default(),
        }
    }

    fn file_or_err(&self, name: &str) -> Result<&Arc<SafetensorsFile>> {
        match &self.source {
            Source::File(f) => Ok(f),
            Source::Random => Err(crate::Error::InvalidInput(format!(
                "{:?}: random weights have no host copy",
                self.key(name)
            ))),
        }
    }

    /// A builder one name segment deeper: `vb.pp("down_blocks").pp(1)`.
    pub fn pp(&self, segment: impl std::fmt::Display) -> VarBuilder<'g> {
        let mut v = self.clone();
        v.prefix = self.key(&segment.to_string());
        v
    }

    /// `pp(segment)` if the file has tensors under that segment, else this builder.
    /// Checkpoints differ here: hub CLIP text encoders say `text_model.embeddings...`,
    /// transformers 5 saves `embeddings...`.
    pub fn pp_if_present(&self, segment: impl std::fmt::Display) -> VarBuilder<'g> {
        let deeper = self.pp(segment);
        let present = match &self.source {
            Source::File(f) => f.has_prefix(&deeper.prefix),
            Source::Random => false,
        };
        if present { deeper } else { self.clone() }
    }

    /// The full tensor name of `name` under this prefix.
    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn gpu(&self) -> &'g Gpu {
        self.gpu
    }

    pub fn weight_dtype(&self) -> DType {
        self.weight_dtype
    }

    /// The safetensors file behind this builder (None for random weights).
    pub fn file(&self) -> Option<&Arc<SafetensorsFile>> {
        match &self.source {
            Source::File(f) => Some(f),
            Source::Random => None,
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.file().is_some_and(|f| f.contains(&self.key(name)))
    }

    /// Stored shape of `name`, if present (for layers saved in two layouts).
    pub fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        self.file().and_then(|f| f.shape_of(&self.key(name)))
    }

    /// Uploads `name` with the given shape, stored as `dtype` (F32 or F16). The one place
    /// weights reach the GPU.
    pub fn get(&self, shape: &[usize], name: &str, dtype: DType) -> Result<Tensor> {
        if dtype == DType::U32 {
            return Err(crate::Error::InvalidInput(format!(
                "weight {:?} requested as U32; weights are stored as F32 or F16",
                self.key(name)
            )));
        }
        self.loaded.fetch_add(
            shape.iter().product::<usize>() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        let file = match &self.source {
            Source::File(f) => f,
            Source::Random => return random_tensor(self.gpu, shape, dtype, &self.key(name)),
        };
        let bytes = file.read_as(&self.key(name), Some(shape), dtype)?;
        Tensor::from_bytes(self.gpu, shape, dtype, &bytes)
    }

    /// Tensors `names` (each `shape`, under this prefix) concatenated along dimension 0
    /// and uploaded as one `[n * shape[0], ..]` tensor stored as `dtype`: how fused
    /// projections (Q/K/V as one matmul) get their weights.
    pub fn get_cat0(&self, names: &[&str], shape: &[usize], dtype: DType) -> Result<Tensor> {
        let Some((&rows, rest)) = shape.split_first() else {
            return Err(crate::Error::InvalidInput(
                "get_cat0 needs at least one dimension".into(),
            ));
        };
        let mut out_shape = vec![rows * names.len()];
        out_shape.extend_from_slice(rest);
        match &self.source {
            Source::Random => {
                let mut all = Vec::new();
                for name in names {
                    all.extend(random_data(shape, &self.key(name)));
                }
                self.loaded
                    .fetch_add(all.len() as u64, std::sync::atomic::Ordering::Relaxed);
                Tensor::from_f32(self.gpu, &out_shape, &all, dtype)
            }
            Source::File(file) => {
                let mut bytes = Vec::new();
                for name in names {
                    bytes.extend(file.read_as(&self.key(name), Some(shape), dtype)?);
                }
                self.loaded.fetch_add(
                    out_shape.iter().product::<usize>() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
                Tensor::from_bytes(self.gpu, &out_shape, dtype, &bytes)
            }
        }
    }

    /// Where `models::nn` records the Linear / Conv2d weights it loads (shared by every
    /// builder derived from this one): what a LoRA can change.
    pub fn lora_targets(&self) -> &LoraTargets {
        &self.lora_targets
    }

    /// Parameters uploaded so far through this builder and all builders derived from it.
    pub fn loaded_parameters(&self) -> u64 {
        self.loaded.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A matrix / conv kernel in the pipeline's weight dtype.
    pub fn get_weight(&self, shape: &[usize], name: &str) -> Result<Tensor> {
        self.get(shape, name, self.weight_dtype)
    }

    /// A vector (bias, norm scale) or anything kept in f32.
    pub fn get_f32(&self, shape: &[usize], name: &str) -> Result<Tensor> {
        self.get(shape, name, DType::F32)
    }

    /// `name` as f32 on the host, shape-checked (tests, CPU-side tables).
    pub fn get_f32_host(&self, shape: &[usize], name: &str) -> Result<Vec<f32>> {
        Ok(self
            .file_or_err(name)?
            .read_f32(&self.key(name), Some(shape))?)
    }

    /// Tensors of the file never read, sorted (for an "unused weights" warning).
    pub fn unused_keys(&self) -> Vec<String> {
        self.file().map(|f| f.unused_keys()).unwrap_or_default()
    }
}

/// Deterministic uniform values in +-1/sqrt(fan_in), seeded by the tensor's name;
/// norm scales (`weight` of 1-D tensors) are near 1.
fn random_tensor(gpu: &Gpu, shape: &[usize], dtype: DType, key: &str) -> Result<Tensor> {
    Tensor::from_f32(gpu, shape, &random_data(shape, key), dtype)
}

/// The values of [`random_tensor`].
fn random_data(shape: &[usize], key: &str) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
    let bound = 1.0 / (fan_in as f32).sqrt();
    let mut state = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let norm_scale = shape.len() == 1 && key.ends_with(".weight");
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let u = (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
            if norm_scale { 1.0 + 0.1 * u } else { u * bound }
        })
        .collect()
}
