//! The fused weights of the last LoRA set a pipeline ran, so consecutive requests with
//! the same LoRAs and scales pay for the fusion once. Keyed by each file's path, size
//! and modification time (a replaced file is read again) and its scale.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::file::LoraFile;
use super::fuse::fuse;
use super::targets::ModelTargets;
use super::{LoraError, LoraSpec};
use crate::error::Result;
use crate::gpu::{Gpu, WeightOverrides};
use crate::loader::LoadError;

type Key = Vec<(PathBuf, u64, Option<SystemTime>, u32)>;

#[derive(Default)]
pub struct LoraCache {
    last: Mutex<Option<(Key, Arc<WeightOverrides>)>>,
}

fn key(loras: &[LoraSpec]) -> Result<Key, LoraError> {
    loras
        .iter()
        .map(|l| {
            let meta = std::fs::metadata(&l.path).map_err(|e| LoadError::io(&l.path, e))?;
            Ok((
                l.path.clone(),
                meta.len(),
                meta.modified().ok(),
                l.scale.to_bits(),
            ))
        })
        .collect()
}

impl LoraCache {
    /// The weight overrides for `loras` (None when there are none).
    pub fn overrides(
        &self,
        gpu: &Gpu,
        targets: &ModelTargets,
        loras: &[LoraSpec],
    ) -> Result<Option<Arc<WeightOverrides>>> {
        if loras.is_empty() {
            return Ok(None);
        }
        let key = key(loras)?;
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((k, o)) = last.as_ref()
            && *k == key
        {
            return Ok(Some(o.clone()));
        }
        // Free the previous set's copies before making the new ones.
        *last = None;
        let files = loras
            .iter()
            .map(|l| LoraFile::open(&l.path))
            .collect::<Result<Vec<_>, _>>()?;
        let with_scales: Vec<(&LoraFile, f32)> =
            files.iter().zip(loras).map(|(f, l)| (f, l.scale)).collect();
        let overrides = Arc::new(fuse(gpu, targets, &with_scales)?);
        *last = Some((key, overrides.clone()));
        Ok(Some(overrides))
    }

    /// Drops the cached copies.
    pub fn clear(&self) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}
