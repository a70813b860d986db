//! `cargo bench`: the same measurements as `wgsd bench` (every kernel family at Stable
//! Diffusion 2 shapes against this device's measured FMA and copy peaks). Set
//! `WGSD_BENCH_QUICK=1` for the 384 px shapes, `WGSD_BENCH_JSON=1` for JSON, and
//! `WGSD_BENCH_FILTER=name` to select kernels.

use wgsd::bench::{BenchOptions, run};
use wgsd::gpu::Gpu;

fn main() -> anyhow::Result<()> {
    let flag = |k: &str| std::env::var(k).is_ok_and(|v| v != "0" && !v.is_empty());
    // `cargo bench` passes harness flags such as `--bench`; a positional filter too.
    let positional = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let opts = BenchOptions {
        quick: flag("WGSD_BENCH_QUICK"),
        filter: std::env::var("WGSD_BENCH_FILTER").ok().or(positional),
        repeats: 0,
    };
    let gpu = Gpu::from_env()?;
    let report = run(&gpu, &opts)?;
    if flag("WGSD_BENCH_JSON") {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
