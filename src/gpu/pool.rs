//! The activation arena: buffers freed by dropped tensors are kept by size and handed to
//! the next tensor of the same size, so a denoising step reuses the previous step's
//! memory and peak memory is the live set, not the sum of everything ever allocated.
//!
//! Reuse inside one recording is safe: dispatches run in recording order and wgpu puts a
//! barrier between a dispatch that writes a buffer and the next that touches it. Uploads
//! never write into a recycled buffer (they create mapped buffers), so a queued write can
//! never overtake a recorded read.
//!
//! Free lists are kept per thread. A buffer freed while a recording that uses it is not
//! yet submitted must not be handed to another thread, whose submit could land first and
//! whose later reads would then see the first recording's writes. Within one thread,
//! recordings are submitted in order (the rule: one open `Recorder` per thread), so reuse
//! there is safe.
//!
//! Planned by lifetime: a tensor's buffer returns to the arena when the tensor is dropped
//! (during recording, in program order), so what is in use at any moment is the live set.
//! Two rules keep the cache from adding to that: sizes are rounded up to size classes
//! (eight per octave, at most 12.5% over) so buffers match across shapes, and the cache
//! never lets the total held pass the largest live set seen so far (`peak_in_use`): a
//! miss that would first evicts cached buffers, largest first. Peak memory is then
//! weights + the largest live set, not the sum of every shape ever allocated.
//!
//! An optional budget caps what the pool holds (weights, uploads and activations): an
//! allocation past it first drops the cached buffers, then fails with
//! [`Error::OutOfMemory`], as does a buffer the driver itself cannot allocate (caught with
//! an error scope). Useful to share one GPU between models or servers.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::ThreadId;

use crate::error::{Error, Result};

/// Usage of every activation buffer.
pub const ACTIVATION_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// Memory figures of the arena, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolStats {
    /// Held by live tensors.
    pub in_use: u64,
    /// Kept for reuse.
    pub cached: u64,
    /// Highest `in_use + cached` seen.
    pub peak: u64,
    /// Highest `in_use` seen (weights + the largest live set).
    pub peak_in_use: u64,
}

#[derive(Default)]
struct Inner {
    free: HashMap<(ThreadId, u64), Vec<wgpu::Buffer>>,
    stats: PoolStats,
    /// Most bytes the pool may hold (`in_use + cached`); `None`: no limit.
    limit: Option<u64>,
    /// Highest `in_use` since the pool was made or trimmed (not reset by measurements):
    /// the cache keeps the total held under it.
    high_water: u64,
}

impl Inner {
    /// Counts `size` more bytes as in use if the budget allows, dropping the cached
    /// buffers first when that makes room.
    fn reserve(&mut self, size: u64) -> Result<()> {
        if let Some(limit) = self.limit {
            if self.stats.in_use + self.stats.cached + size > limit {
                self.free.clear();
                self.stats.cached = 0;
            }
            if self.stats.in_use + size > limit {
                return Err(Error::OutOfMemory(format!(
                    "{size} more bytes would pass the GPU memory budget of {limit} bytes ({} in use)",
                    self.stats.in_use
                )));
            }
        }
        self.stats.in_use += size;
        self.stats.peak_in_use = self.stats.peak_in_use.max(self.stats.in_use);
        self.high_water = self.high_water.max(self.stats.in_use);
        let total = self.stats.in_use + self.stats.cached;
        self.stats.peak = self.stats.peak.max(total);
        Ok(())
    }

    /// Evicts cached buffers, largest first, until `size` more bytes keep the total held
    /// within the largest live set seen (or the cache is empty).
    fn make_room(&mut self, size: u64) {
        let bound = self.high_water.max(self.stats.in_use + size);
        while self.stats.cached > 0 && self.stats.in_use + self.stats.cached + size > bound {
            let Some(key) = self
                .free
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, _)| *k)
                .max_by_key(|k| k.1)
            else {
                break;
            };
            if let Some(list) = self.free.get_mut(&key)
                && list.pop().is_some()
            {
                self.stats.cached -= key.1;
            }
            if self.free.get(&key).is_some_and(Vec::is_empty) {
                self.free.remove(&key);
            }
        }
    }
}

/// The size class of `size` bytes: rounded up to one of eight steps per octave.
pub fn size_class(size: u64) -> u64 {
    if size <= 4096 {
        return size.div_ceil(256).max(1) * 256;
    }
    let step = 1u64 << (63 - size.leading_zeros() - 3);
    size.div_ceil(step) * step
}

/// Runs `create` inside an out-of-memory error scope: a driver allocation failure becomes
/// [`Error::OutOfMemory`] instead of wgpu's uncaptured-error panic.
pub(crate) fn create_checked(
    device: &wgpu::Device,
    what: &str,
    size: u64,
    create: impl FnOnce() -> wgpu::Buffer,
) -> Result<wgpu::Buffer> {
    let scope = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let buf = create();
    match pollster::block_on(scope.pop()) {
        None => Ok(buf),
        Some(e) => Err(Error::OutOfMemory(format!(
            "the device could not allocate a {size}-byte {what} buffer: {e}"
        ))),
    }
}

/// Bytes held by every pool of the process (`in_use + cached`, summed): what the
/// server's memory gauge reports, and how a test sees an unloaded model's memory go.
static PROCESS_BYTES: AtomicU64 = AtomicU64::new(0);

/// GPU memory held by all [`BufferPool`]s of this process.
pub fn process_bytes() -> u64 {
    PROCESS_BYTES.load(Ordering::Relaxed)
}

impl Inner {
    fn held(&self) -> u64 {
        self.stats.in_use + self.stats.cached
    }
}

/// The locked pool; on unlock it moves [`PROCESS_BYTES`] by what the holder changed.
struct Locked<'a> {
    guard: std::sync::MutexGuard<'a, Inner>,
    before: u64,
}

impl std::ops::Deref for Locked<'_> {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.guard
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Inner {
        &mut self.guard
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // Wrapping: a decrease is added as its two's complement.
        let delta = self.guard.held().wrapping_sub(self.before);
        PROCESS_BYTES.fetch_add(delta, Ordering::Relaxed);
    }
}

/// Size-keyed free lists of activation buffers.
#[derive(Default)]
pub struct BufferPool {
    inner: Mutex<Inner>,
}

impl Drop for BufferPool {
    /// The pool's buffers go with it (and the device): the process holds that much less.
    fn drop(&mut self) {
        let held = self.lock().held();
        PROCESS_BYTES.fetch_sub(held, Ordering::Relaxed);
    }
}

impl BufferPool {
    fn lock(&self) -> Locked<'_> {
        // A panic while holding the lock leaves only bookkeeping behind: keep going.
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let before = guard.held();
        Locked { guard, before }
    }

    /// A buffer of at least `size` bytes (its size class), reused if one is free;
    /// [`Error::OutOfMemory`] past the budget or when the device has no room.
    pub fn take(&self, device: &wgpu::Device, size: u64) -> Result<wgpu::Buffer> {
        let size = size_class(size);
        let mut inner = self.lock();
        let key = (std::thread::current().id(), size);
        if let Some(buf) = inner.free.get_mut(&key).and_then(Vec::pop) {
            inner.stats.cached -= size;
            inner.stats.in_use += size;
            return Ok(buf);
        }
        inner.make_room(size);
        inner.reserve(size)?;
        drop(inner);
        create_checked(device, "activation", size, || {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("activation"),
                size,
                usage: ACTIVATION_USAGE,
                mapped_at_creation: false,
            })
        })
        .inspect_err(|_| self.give_uncached(size))
    }

    /// Returns a buffer for reuse.
    pub fn give(&self, buf: wgpu::Buffer) {
        let size = buf.size();
        let mut inner = self.lock();
        inner.stats.in_use -= size;
        inner.stats.cached += size;
        let key = (std::thread::current().id(), size);
        inner.free.entry(key).or_default().push(buf);
    }

    /// Counts a buffer about to be created outside the pool (an upload) as in use;
    /// [`Error::OutOfMemory`] when that passes the budget.
    pub fn adopt(&self, size: u64) -> Result<()> {
        self.lock().reserve(size)
    }

    /// Sets (or with `None` lifts) the budget: the most bytes the pool may hold.
    pub fn set_limit(&self, limit: Option<u64>) {
        self.lock().limit = limit;
    }

    /// The budget, if one is set.
    pub fn limit(&self) -> Option<u64> {
        self.lock().limit
    }

    /// Forgets a buffer counted by [`adopt`](Self::adopt) that is being freed.
    pub fn give_uncached(&self, size: u64) {
        self.lock().stats.in_use -= size;
    }

    /// Current figures.
    pub fn stats(&self) -> PoolStats {
        self.lock().stats
    }

    /// Starts a new peak measurement from the current total.
    pub fn reset_peak(&self) {
        let mut inner = self.lock();
        inner.stats.peak = inner.stats.in_use + inner.stats.cached;
        inner.stats.peak_in_use = inner.stats.in_use;
    }

    /// Drops every cached buffer.
    pub fn trim(&self) {
        let mut inner = self.lock();
        inner.free.clear();
        inner.stats.cached = 0;
        inner.high_water = inner.stats.in_use;
    }
}
