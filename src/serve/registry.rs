//! The models the server holds: name -> worker and its TorchServe settings. The
//! management API adds and removes entries while requests are in flight, so lookups hand
//! out `Arc`s: a request keeps its model alive until it is answered.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use super::worker::Worker;
use crate::pipeline::VaeTiling;

/// TorchServe's per-model settings (`model_snapshot` / registration parameters).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelSettings {
    /// Up to this many compatible requests run as one batched pass (`batchSize`).
    pub batch_size: usize,
    /// How long the worker waits for a batch to fill (`maxBatchDelay`, ms).
    pub max_batch_delay_ms: u64,
    /// A request not answered in this many seconds gets 504 (`responseTimeout`).
    pub response_timeout_s: u64,
    /// TorchServe's worker counts; wgsd runs one GPU worker per model, so these are
    /// reported (and `min_workers = 0` unloads nothing) but do not add threads.
    pub min_workers: usize,
    pub max_workers: usize,
    /// wgsd's per-model `precision` (config `models` / `model_snapshot`); `None`: the
    /// server's (`--precision`, config key `precision`).
    pub precision: Option<crate::Precision>,
    /// wgsd's `vae_tiling`: how requests that do not say (`"vae_tiling"` absent) decode.
    pub vae_tiling: VaeTiling,
}

/// TorchServe's `default_response_timeout` (seconds).
pub const DEFAULT_RESPONSE_TIMEOUT_S: u64 = 120;

impl Default for ModelSettings {
    fn default() -> Self {
        ModelSettings {
            batch_size: 1,
            max_batch_delay_ms: 100,
            response_timeout_s: DEFAULT_RESPONSE_TIMEOUT_S,
            min_workers: 1,
            max_workers: 1,
            precision: None,
            vae_tiling: VaeTiling::Auto,
        }
    }
}

/// One loaded model.
#[derive(Debug)]
pub struct ModelEntry {
    pub name: String,
    /// TorchServe's `modelVersion` (from the `.mar` manifest when there is one).
    pub version: String,
    /// What it was registered from (`modelUrl`): the archive's name in the model store.
    pub url: String,
    pub archive: PathBuf,
    pub settings: ModelSettings,
    pub loaded_at_startup: bool,
    pub loaded_at: SystemTime,
    pub worker: Worker,
}

/// name -> model, shared by the three APIs.
#[derive(Debug, Default)]
pub struct Registry {
    models: RwLock<BTreeMap<String, Arc<ModelEntry>>>,
}

impl Registry {
    pub fn get(&self, name: &str) -> Option<Arc<ModelEntry>> {
        self.read().get(name).cloned()
    }

    /// Every model, sorted by name.
    pub fn list(&self) -> Vec<Arc<ModelEntry>> {
        self.read().values().cloned().collect()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.read().contains_key(name)
    }

    /// Adds a model; gives it back (boxed: it is large) if the name is taken.
    pub fn insert(&self, entry: ModelEntry) -> Result<Arc<ModelEntry>, Box<ModelEntry>> {
        let mut map = self.write();
        if map.contains_key(&entry.name) {
            return Err(Box::new(entry));
        }
        let entry = Arc::new(entry);
        map.insert(entry.name.clone(), entry.clone());
        Ok(entry)
    }

    /// Removes a model. Its worker stops once the last in-flight request lets go of it.
    pub fn remove(&self, name: &str) -> Option<Arc<ModelEntry>> {
        self.write().remove(name)
    }

    /// Removes every model (shutdown).
    pub fn clear(&self) -> Vec<Arc<ModelEntry>> {
        std::mem::take(&mut *self.write()).into_values().collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<ModelEntry>>> {
        // A panic while holding the lock leaves the map itself consistent.
        self.models.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<ModelEntry>>> {
        self.models.write().unwrap_or_else(|e| e.into_inner())
    }
}
