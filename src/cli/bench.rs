//! `wgsd bench`: kernel speed against the device's measured peaks.

use wgsd::bench::{BenchOptions, run};
use wgsd::gpu::{AdapterChoice, Gpu};

pub fn main(choice: &AdapterChoice, opts: &BenchOptions, json: bool) -> anyhow::Result<()> {
    let gpu = Gpu::new(choice)?;
    if !json {
        eprintln!(
            "benchmarking on {} ({:?})...",
            gpu.info.name, gpu.info.backend
        );
    }
    let report = run(&gpu, opts)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// `wgsd bench --models`: UNet call and VAE decode timings, dispatches and peak memory.
pub fn models(
    choice: &AdapterChoice,
    tiny_archive: &std::path::Path,
    full_sizes: Option<&[usize]>,
    precision: wgsd::Precision,
    repeats: usize,
    json: bool,
) -> anyhow::Result<()> {
    use wgsd::bench::models;
    let gpu = Gpu::new(choice)?;
    let report = models::run(&gpu, tiny_archive, full_sizes, precision, repeats.max(1))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", models::table(&report));
    }
    Ok(())
}
