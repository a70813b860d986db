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

/// `wgsd bench --models`: UNet step and VAE decode timings and peak memory.
pub fn models(
    choice: &AdapterChoice,
    tiny_archive: &std::path::Path,
    full_sizes: Option<&[usize]>,
    repeats: usize,
    json: bool,
) -> anyhow::Result<()> {
    use wgsd::bench::models;
    let gpu = Gpu::new(choice)?;
    let reps = repeats.max(1);
    let mut results = models::tiny(&gpu, tiny_archive, reps)?;
    if let Some(sizes) = full_sizes {
        results.extend(models::full(&gpu, sizes, reps)?);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        println!("adapter: {} ({:?})", gpu.info.name, gpu.info.backend);
        print!("{}", models::table(&results));
    }
    Ok(())
}
