//! `wgsd bench` and `cargo bench`: per-kernel speed at Stable Diffusion 2 shapes, reported
//! as GFLOP/s or GB/s and as a fraction of this device's measured peak (an FMA-throughput
//! probe and a copy-bandwidth probe), plus the cost of one dispatch inside a submit.

mod cases;
pub mod models;
pub mod probe;
mod report;

use std::time::{Duration, Instant};

pub use probe::Peaks;
pub use report::{BenchReport, CaseResult, Work};

use crate::error::Result;
use crate::gpu::{Gpu, Recorder};

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct BenchOptions {
    /// Smaller shapes and fewer repeats (seconds on a CPU driver instead of minutes).
    pub quick: bool,
    /// Only cases whose name contains this.
    pub filter: Option<String>,
    /// Timed repeats per case (after one warm-up); 0 picks a default.
    pub repeats: usize,
}

impl BenchOptions {
    fn repeats(&self) -> usize {
        match self.repeats {
            0 if self.quick => 3,
            0 => 5,
            n => n,
        }
    }

    fn wants(&self, name: &str) -> bool {
        self.filter.as_deref().is_none_or(|f| name.contains(f))
    }
}

/// Times `record` (which records one run of the work into a recorder): one warm-up run
/// (it pays shader compilation), then `repeats` timed runs, each submitted and waited for.
/// Returns the median.
pub fn time_median(
    gpu: &Gpu,
    repeats: usize,
    record: impl FnMut(&mut Recorder) -> Result<()>,
) -> Result<Duration> {
    let times = time_runs(gpu, repeats, record)?;
    Ok(times[times.len() / 2])
}

/// As [`time_median`], but every timed run, fastest first (never empty).
pub fn time_runs(
    gpu: &Gpu,
    repeats: usize,
    mut record: impl FnMut(&mut Recorder) -> Result<()>,
) -> Result<Vec<Duration>> {
    let mut run = || -> Result<Duration> {
        let mut rec = Recorder::new(gpu);
        record(&mut rec)?;
        let t = Instant::now();
        rec.submit()?;
        gpu.wait()?;
        Ok(t.elapsed())
    };
    run()?;
    let mut times = (0..repeats.max(1))
        .map(|_| run())
        .collect::<Result<Vec<_>>>()?;
    times.sort();
    Ok(times)
}

/// Runs the probes and every selected case. The FMA probe runs again after the cases and
/// the better of the two counts, so load that comes or goes during the run cannot make
/// a kernel read above the peak.
pub fn run(gpu: &Gpu, opts: &BenchOptions) -> Result<BenchReport> {
    let mut peaks = probe::measure_peaks(gpu, opts.quick)?;
    let launch = probe::launch_overhead(gpu)?;
    let mut timed = Vec::new();
    for case in cases::all(gpu, opts.quick) {
        if !opts.wants(&case.name) {
            continue;
        }
        let time = (case.run)(gpu, opts.repeats())?;
        timed.push((case, time));
    }
    let (again, layout) = probe::fma_peak(gpu, if opts.quick { 3 } else { 5 })?;
    if again > peaks.fma_gflops {
        peaks.fma_gflops = again;
        peaks.fma_layout = layout;
    }
    let results = timed
        .into_iter()
        .map(|(case, time)| CaseResult::new(&case.name, case.shape, case.work, time, &peaks))
        .collect();
    Ok(BenchReport::new(gpu, peaks, launch, results))
}
