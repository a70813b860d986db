//! The GPU context: one device and queue, what the device can do, the pipeline cache and
//! the activation arena. Created once per process (or per test binary) and shared.

use std::sync::Arc;

use super::adapter::{AdapterChoice, choose_adapter, instance_for};
use super::coopmat;
use super::kernel::PipelineCache;
use super::pool::BufferPool;
use crate::error::{Error, Result};

/// Device facts that kernels choose their variants by.
#[derive(Debug, Clone)]
pub struct Caps {
    /// `SHADER_F16`: weights may be stored as f16.
    pub f16: bool,
    /// `SUBGROUP`: subgroup builtins are available.
    pub subgroup: bool,
    /// Smallest subgroup size the adapter reports (8 on lavapipe, 32 on NVIDIA).
    pub subgroup_size: u32,
    /// The subgroup size is one fixed value (min == max: NVIDIA 32, lavapipe 8), so a
    /// kernel may assume `subgroup_size` lanes.
    pub subgroup_fixed: bool,
    /// A CPU driver (lavapipe, WARP, SwiftShader): favours subgroup register tiles.
    pub is_cpu: bool,
    /// Largest byte range one storage binding may cover.
    pub max_binding: u64,
    /// Largest single buffer.
    pub max_buffer: u64,
    /// Alignment of a storage binding's offset.
    pub binding_align: u64,
    /// Workgroup (shared) memory per workgroup, bytes.
    pub workgroup_memory: u32,
    /// Workgroups per grid dimension.
    pub max_workgroups_per_dim: u32,
    /// Cooperative matrices: what the adapter reports and the tile the kernels use.
    pub coop: super::coopmat::CoopCaps,
}

/// One device and everything that lives as long as it.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    pub caps: Caps,
    pub(crate) pipelines: PipelineCache,
    pub(crate) pool: Arc<BufferPool>,
    /// wgpu's driver-level pipeline cache, kept on disk (Vulkan only).
    pub(crate) disk_cache: Option<DiskPipelineCache>,
}

/// wgpu's pipeline cache (`Features::PIPELINE_CACHE`, Vulkan) with the file it is loaded
/// from and saved to (`<cache dir>/pipelines/<adapter key>.bin`), so that a second start
/// skips the driver's shader compilation.
pub(crate) struct DiskPipelineCache {
    pub(crate) cache: wgpu::PipelineCache,
    path: std::path::PathBuf,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("adapter", &self.info.name)
            .field("backend", &self.info.backend)
            .field("caps", &self.caps)
            .finish()
    }
}

impl Gpu {
    /// Opens the adapter chosen by `choice` (see [`AdapterChoice`]); cooperative
    /// matrices as `WGSD_COOPMAT` / `WGSD_NO_COOPMAT` say.
    pub fn new(choice: &AdapterChoice) -> Result<Gpu> {
        Gpu::new_with_coop(choice, coopmat::CoopMode::from_env())
    }

    /// [`Gpu::new`] with an explicit cooperative-matrix mode (benchmarks open the same
    /// adapter with and without them).
    pub fn new_with_coop(choice: &AdapterChoice, mode: coopmat::CoopMode) -> Result<Gpu> {
        let (instance, backends) = instance_for(choice)?;
        let adapter = choose_adapter(&instance, backends, choice)?;
        Gpu::from_adapter_with(adapter, mode)
    }

    /// Opens the adapter chosen by the environment (`WGSD_ADAPTER`, `WGSD_BACKEND`).
    pub fn from_env() -> Result<Gpu> {
        Gpu::new(&AdapterChoice::from_env())
    }

    /// Opens a device on `adapter` with its real limits and the features wgsd uses.
    pub fn from_adapter(adapter: wgpu::Adapter) -> Result<Gpu> {
        Gpu::from_adapter_with(adapter, coopmat::CoopMode::from_env())
    }

    /// [`Gpu::from_adapter`] with an explicit cooperative-matrix mode.
    pub fn from_adapter_with(adapter: wgpu::Adapter, mode: coopmat::CoopMode) -> Result<Gpu> {
        let info = adapter.get_info();
        let adapter_limits = adapter.limits();
        let wanted =
            wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP | wgpu::Features::PIPELINE_CACHE;
        let mut features = adapter.features() & wanted;
        let coop = coopmat::decide(
            coopmat::adapter_configs(&adapter),
            mode,
            features.contains(wgpu::Features::SHADER_F16),
            features.contains(wgpu::Features::SUBGROUP)
                && info.subgroup_min_size == info.subgroup_max_size,
        );
        // The experimental feature is only requested when its kernels will run.
        let experimental = if coop.tile.is_some() {
            features |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
            // SAFETY: wgpu asks callers of experimental features to accept that its
            // implementation may still have bugs; wgsd only enables this one on request
            // (WGSD_COOPMAT=on), and its kernels use only configurations the adapter
            // reported (square f16 x f16 -> f32, see gpu::coopmat).
            unsafe { wgpu::ExperimentalFeatures::enabled() }
        } else {
            wgpu::ExperimentalFeatures::disabled()
        };
        let desc = wgpu::DeviceDescriptor {
            label: Some("wgsd"),
            required_features: features,
            // Ask for everything the adapter has: the defaults cap a binding at 128 MiB
            // and a buffer at 256 MiB even where the hardware allows more.
            required_limits: adapter_limits.clone(),
            experimental_features: experimental,
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc))
            .map_err(|e| Error::Device(format!("{} ({:?}): {e}", info.name, info.backend)))?;
        let limits = device.limits();
        let caps = Caps {
            f16: features.contains(wgpu::Features::SHADER_F16),
            subgroup: features.contains(wgpu::Features::SUBGROUP),
            subgroup_size: info.subgroup_min_size.max(1),
            subgroup_fixed: info.subgroup_min_size == info.subgroup_max_size,
            is_cpu: info.device_type == wgpu::DeviceType::Cpu,
            max_binding: limits.max_storage_buffer_binding_size,
            max_buffer: limits.max_buffer_size,
            binding_align: u64::from(limits.min_storage_buffer_offset_alignment),
            workgroup_memory: limits.max_compute_workgroup_storage_size,
            max_workgroups_per_dim: limits.max_compute_workgroups_per_dimension,
            coop,
        };
        let disk_cache = if features.contains(wgpu::Features::PIPELINE_CACHE) {
            open_disk_cache(&device, &info)
        } else {
            None
        };
        Ok(Gpu {
            disk_cache,
            pool: Arc::new(BufferPool::default()),
            pipelines: PipelineCache::default(),
            device,
            queue,
            info,
            limits,
            features,
            caps,
        })
    }

    /// Writes wgpu's pipeline cache to disk (temp file, then rename) so the next process
    /// skips shader compilation. Returns the bytes written (0 where the backend keeps no
    /// cache). Call after warm-up.
    pub fn save_pipeline_cache(&self) -> Result<u64> {
        let Some(dc) = &self.disk_cache else {
            return Ok(0);
        };
        let Some(data) = dc.cache.get_data() else {
            return Ok(0);
        };
        let io = |e| Error::Io {
            path: dc.path.clone(),
            source: e,
        };
        if let Some(dir) = dc.path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = dc.path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, &data).map_err(io)?;
        std::fs::rename(&tmp, &dc.path).map_err(io)?;
        Ok(data.len() as u64)
    }

    /// Where the pipeline cache lives, if this backend has one.
    pub fn pipeline_cache_path(&self) -> Option<&std::path::Path> {
        self.disk_cache.as_ref().map(|c| c.path.as_path())
    }

    /// Blocks until all submitted work has finished.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for the device: {e}")))?;
        Ok(())
    }

    /// Bytes currently allocated for activations (in use + cached for reuse), and the peak.
    pub fn memory_stats(&self) -> super::pool::PoolStats {
        self.pool.stats()
    }

    /// Starts a new peak-memory measurement (see [`Gpu::memory_stats`]).
    pub fn reset_peak_memory(&self) {
        self.pool.reset_peak();
    }

    /// Frees activation buffers kept for reuse (weights and live tensors stay).
    pub fn trim(&self) {
        self.pool.trim();
    }

    /// Caps the bytes this device's tensors may hold (weights, uploads, activations and
    /// the reuse cache; see [`memory_stats`](Gpu::memory_stats)); `None` lifts the cap.
    /// An allocation past it fails with [`Error::OutOfMemory`], as a real out-of-memory
    /// does: useful to share one GPU between models.
    pub fn set_memory_limit(&self, bytes: Option<u64>) {
        self.pool.set_limit(bytes);
    }

    /// The cap set by [`set_memory_limit`](Gpu::set_memory_limit).
    pub fn memory_limit(&self) -> Option<u64> {
        self.pool.limit()
    }
}

/// Opens the on-disk pipeline cache for this adapter (`WGSD_NO_PIPELINE_CACHE=1` turns it
/// off). An unreadable or stale file just starts an empty cache.
fn open_disk_cache(device: &wgpu::Device, info: &wgpu::AdapterInfo) -> Option<DiskPipelineCache> {
    if std::env::var_os("WGSD_NO_PIPELINE_CACHE").is_some_and(|v| v != "0") {
        return None;
    }
    let key = wgpu::util::pipeline_cache_key(info)?;
    let path = crate::loader::default_cache_dir()
        .join("pipelines")
        .join(format!("{key}.bin"));
    let data = std::fs::read(&path).ok();
    // SAFETY: the file is only ever written whole (temp file + rename) by
    // `save_pipeline_cache` from `PipelineCache::get_data` for an adapter with this key
    // (wgpu's key names vendor and device; wgpu checks its header, backend and size, and
    // the driver its own header and version); `fallback: true` starts an empty cache
    // when the data is rejected.
    let cache = unsafe {
        device.create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
            label: Some("wgsd"),
            data: data.as_deref(),
            fallback: true,
        })
    };
    Some(DiskPipelineCache { cache, path })
}
