//! Bench results: a table for people, JSON for machines.

use std::time::Duration;

use serde::Serialize;

use super::Peaks;
use super::probe::LaunchOverhead;
use crate::gpu::Gpu;

/// What one run of a case does, for the rate.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "kind", content = "amount", rename_all = "lowercase")]
pub enum Work {
    /// Floating-point operations (a multiply-add counts 2).
    Flops(f64),
    /// Bytes read plus bytes written.
    Bytes(f64),
    /// Floating-point operations run on cooperative matrices: compared with the
    /// cooperative-matrix probe instead of the FMA probe.
    CoopFlops(f64),
}

/// One benchmarked case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub name: String,
    pub shape: String,
    pub work: Work,
    pub time_ms: f64,
    /// GFLOP/s for compute-bound cases, GB/s for memory-bound ones.
    pub rate: f64,
    pub unit: &'static str,
    /// `rate` over the matching measured peak.
    pub fraction_of_peak: f64,
}

impl CaseResult {
    pub fn new(name: &str, shape: String, work: Work, time: Duration, peaks: &Peaks) -> Self {
        let s = time.as_secs_f64();
        let (rate, unit, peak) = match work {
            Work::Flops(f) => (f / s / 1e9, "GFLOP/s", peaks.fma_gflops),
            Work::Bytes(b) => (b / s / 1e9, "GB/s", peaks.copy_gbps),
            Work::CoopFlops(f) => (
                f / s / 1e9,
                "GFLOP/s",
                peaks.coop_gflops.unwrap_or(f64::NAN),
            ),
        };
        CaseResult {
            name: name.to_string(),
            shape,
            work,
            time_ms: s * 1e3,
            rate,
            unit,
            fraction_of_peak: rate / peak,
        }
    }
}

/// Everything `wgsd bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub adapter: String,
    pub backend: String,
    pub driver: String,
    pub peaks: Peaks,
    pub launch: LaunchOverhead,
    pub cases: Vec<CaseResult>,
}

impl BenchReport {
    pub fn new(gpu: &Gpu, peaks: Peaks, launch: LaunchOverhead, cases: Vec<CaseResult>) -> Self {
        BenchReport {
            adapter: gpu.info.name.clone(),
            backend: format!("{:?}", gpu.info.backend),
            driver: format!("{} {}", gpu.info.driver, gpu.info.driver_info)
                .trim()
                .to_string(),
            peaks,
            launch,
            cases,
        }
    }

    /// A plain-text table.
    pub fn table(&self) -> String {
        let mut s = format!(
            "adapter: {} ({}, {})\npeak: {:.1} GFLOP/s FMA ({}), {:.1} GB/s copy ({}; {:.1} GB/s uncached, {:.1} GB/s best shader copy)\nlaunch: {:.1} us per dispatch ({:.0} dispatches/s in one submit)\n\n",
            self.adapter,
            self.backend,
            self.driver,
            self.peaks.fma_gflops,
            self.peaks.fma_layout,
            self.peaks.copy_gbps,
            self.peaks.copy_layout,
            self.peaks.copy_dram_gbps,
            self.peaks.shader_copy_gbps,
            self.launch.us_per_dispatch,
            self.launch.dispatches_per_second
        );
        if let (Some(g), Some(l)) = (self.peaks.coop_gflops, &self.peaks.coop_layout) {
            s.push_str(&format!(
                "cooperative-matrix peak: {g:.1} GFLOP/s ({l}); [Coop] rows are % of it\n\n"
            ));
        }
        s.push_str(&format!(
            "{:<40} {:<34} {:>10} {:>10} {:<8} {:>7}\n",
            "kernel", "shape", "time ms", "rate", "unit", "% peak"
        ));
        for c in &self.cases {
            s.push_str(&format!(
                "{:<40} {:<34} {:>10.3} {:>10.2} {:<8} {:>6.1}%\n",
                c.name,
                c.shape,
                c.time_ms,
                c.rate,
                c.unit,
                100.0 * c.fraction_of_peak
            ));
        }
        let over: Vec<&str> = self
            .cases
            .iter()
            .filter(|c| c.fraction_of_peak > 1.0)
            .map(|c| c.name.as_str())
            .collect();
        if !over.is_empty() {
            s.push_str(&format!(
                "\nwarning: above the measured peak (the probe under-read; rerun on a quiet machine): {}\n",
                over.join(", ")
            ));
        }
        s
    }
}
