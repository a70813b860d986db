//! Shared test support: one GPU per test binary, seeded random data, and comparisons
//! that print the index, the value got and the value expected.
#![allow(dead_code)]

use std::sync::OnceLock;

use wgsd::gpu::Gpu;

/// The process-wide GPU. Panics with install instructions when there is no adapter:
/// tests never skip.
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| match Gpu::from_env() {
        Ok(g) => g,
        Err(e) => panic!(
            "no usable GPU adapter: {e}\nThe tests need a Vulkan/Metal/DX12 adapter; on a CPU-only \
             Debian/Ubuntu machine run `sudo apt-get install -y mesa-vulkan-drivers`."
        ),
    })
}

/// A small deterministic generator (SplitMix64) for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.uniform()).collect()
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo) as u64) as usize
    }
}

/// Asserts `|got - want| <= atol + rtol * |want|` everywhere; on failure prints the worst
/// element with its index.
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} != expected {}",
        got.len(),
        want.len()
    );
    let mut worst: Option<(usize, f32)> = None;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let excess = (g - w).abs() - (atol + rtol * w.abs());
        let bad = excess > 0.0 || excess.is_nan();
        if bad && worst.is_none_or(|(_, e)| excess > e || excess.is_nan()) {
            worst = Some((i, excess));
        }
    }
    if let Some((i, _)) = worst {
        panic!(
            "{what}: element {i} got {} expected {} (|diff| {} > atol {atol} + rtol {rtol} * |expected|)",
            got[i],
            want[i],
            (got[i] - want[i]).abs()
        );
    }
}

/// Largest absolute difference (for reporting measured tolerances).
pub fn max_abs_diff(got: &[f32], want: &[f32]) -> f32 {
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

pub mod fixture;
pub mod fuzz;
#[path = "psnr.rs"]
mod psnr_impl;
#[allow(unused_imports)]
pub use psnr_impl::psnr;
