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

use std::collections::HashMap;
use std::sync::Mutex;
use std::thread::ThreadId;

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
}

#[derive(Default)]
struct Inner {
    free: HashMap<(ThreadId, u64), Vec<wgpu::Buffer>>,
    stats: PoolStats,
}

/// Size-keyed free lists of activation buffers.
#[derive(Default)]
pub struct BufferPool {
    inner: Mutex<Inner>,
}

impl BufferPool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves only bookkeeping behind: keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A buffer of exactly `size` bytes (already rounded by the caller), reused if one is free.
    pub fn take(&self, device: &wgpu::Device, size: u64) -> wgpu::Buffer {
        let mut inner = self.lock();
        let key = (std::thread::current().id(), size);
        if let Some(buf) = inner.free.get_mut(&key).and_then(Vec::pop) {
            inner.stats.cached -= size;
            inner.stats.in_use += size;
            return buf;
        }
        inner.stats.in_use += size;
        let total = inner.stats.in_use + inner.stats.cached;
        inner.stats.peak = inner.stats.peak.max(total);
        drop(inner);
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("activation"),
            size,
            usage: ACTIVATION_USAGE,
            mapped_at_creation: false,
        })
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

    /// Counts a buffer that was created outside the pool (an upload) as in use.
    pub fn adopt(&self, size: u64) {
        let mut inner = self.lock();
        inner.stats.in_use += size;
        let total = inner.stats.in_use + inner.stats.cached;
        inner.stats.peak = inner.stats.peak.max(total);
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
    }

    /// Drops every cached buffer.
    pub fn trim(&self) {
        let mut inner = self.lock();
        inner.free.clear();
        inner.stats.cached = 0;
    }
}
