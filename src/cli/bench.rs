//! `wgsd bench`: kernel speed against the device's measured peaks.

use wgsd::bench::{BenchOptions, run};
use wgsd::gpu::coopmat::CoopMode;
use wgsd::gpu::{AdapterChoice, Gpu};

/// The cooperative-matrix modes `--coopmat` asks to run, in order: `both` measures the
/// same adapter with and then without them, side by side in one run.
pub fn coop_modes(arg: Option<&str>) -> anyhow::Result<Vec<CoopMode>> {
    Ok(
        match arg.map(|a| a.trim().to_ascii_lowercase()).as_deref() {
            None | Some("env") => vec![CoopMode::from_env()],
            Some("on") => vec![CoopMode::On],
            Some("off") => vec![CoopMode::Off],
            Some("both") => vec![CoopMode::On, CoopMode::Off],
            Some(other) => anyhow::bail!("--coopmat {other}: use on, off, both or env"),
        },
    )
}

pub fn main(
    choice: &AdapterChoice,
    opts: &BenchOptions,
    coop: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let mode = match coop_modes(coop)?.as_slice() {
        [m] => *m,
        _ => CoopMode::On, // `both`: the kernel table already has FMA rows beside [Coop]
    };
    let gpu = Gpu::new_with_coop(choice, mode)?;
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
    measure: wgsd::bench::models::Measure,
    coop: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    use wgsd::bench::models;
    let mut reports = Vec::new();
    for mode in coop_modes(coop)? {
        let gpu = Gpu::new_with_coop(choice, mode)?;
        if mode == CoopMode::On && gpu.caps.coop.tile.is_none() {
            eprintln!(
                "cooperative matrices: not available on {} ({}); measuring without them",
                gpu.info.name,
                gpu.caps
                    .coop
                    .why_not
                    .as_deref()
                    .unwrap_or("the adapter reports none")
            );
            if coop_modes(coop)?.len() > 1 {
                continue; // `both`: the `off` pass measures the same thing
            }
        }
        let report = models::run(&gpu, tiny_archive, full_sizes, precision, measure)?;
        if !json {
            println!("{}", models::table(&report));
        }
        reports.push(report);
    }
    if json {
        // One report as before; `--coopmat both` prints the list of both.
        match reports.as_slice() {
            [one] => println!("{}", serde_json::to_string_pretty(one)?),
            all => println!("{}", serde_json::to_string_pretty(all)?),
        }
    }
    Ok(())
}
