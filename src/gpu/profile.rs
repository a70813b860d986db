//! Where a model's time goes, kernel by kernel (`wgsd bench --models --profile`).
//!
//! A profiling [`super::Recorder`] submits every dispatch on its own and waits for it,
//! so each kernel's wall time includes one submission (tens of microseconds on
//! lavapipe, more on some GPU drivers): good for finding the kernels that matter, not
//! for timing kernels that take well under a millisecond.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

/// One kernel's share of a profiled run.
#[derive(Debug, Clone, Serialize)]
pub struct KernelTime {
    /// The kernel's name (its WGSL source, e.g. `matmul`, `conv3x3_subgroup`).
    pub kernel: String,
    pub dispatches: u64,
    pub ms: f64,
    /// Of the profiled run's total kernel time.
    pub fraction: f64,
}

/// Wall time per kernel name, accumulated over dispatches.
#[derive(Debug, Default)]
pub struct DispatchProfile {
    by_kernel: HashMap<&'static str, (u64, Duration)>,
}

impl DispatchProfile {
    pub fn add(&mut self, kernel: &'static str, took: Duration) {
        let e = self.by_kernel.entry(kernel).or_default();
        e.0 += 1;
        e.1 += took;
    }

    /// Every kernel, slowest first.
    pub fn kernels(&self) -> Vec<KernelTime> {
        let total: f64 = self.by_kernel.values().map(|v| v.1.as_secs_f64()).sum();
        let mut v: Vec<KernelTime> = self
            .by_kernel
            .iter()
            .map(|(k, &(n, d))| KernelTime {
                kernel: (*k).to_string(),
                dispatches: n,
                ms: d.as_secs_f64() * 1e3,
                fraction: if total > 0.0 {
                    d.as_secs_f64() / total
                } else {
                    0.0
                },
            })
            .collect();
        v.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_sorted_with_fractions() {
        let mut p = DispatchProfile::default();
        p.add("a", Duration::from_millis(1));
        p.add("b", Duration::from_millis(3));
        p.add("a", Duration::from_millis(4));
        let k = p.kernels();
        assert_eq!(k[0].kernel, "a");
        assert_eq!(k[0].dispatches, 2);
        assert!((k[0].ms - 5.0).abs() < 1e-9);
        assert!((k[0].fraction - 5.0 / 8.0).abs() < 1e-9);
        assert_eq!(k[1].kernel, "b");
    }
}
