//! `wgsd bench`: kernel speed against the device's measured peaks.

use wgsd::bench::{BenchOptions, run};
use wgsd::gpu::{AdapterChoice, Gpu};

pub fn main(choice: &AdapterChoice, opts: &BenchOptions, json: bool) -> anyhow::Result<()> {
    let gpu = Gpu::new(choice)?;
    if !json {
        eprintln!("benchmarking on {} ({:?})...", gpu.info.name, gpu.info.backend);
    }
    let report = run(&gpu, opts)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
