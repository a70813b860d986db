//! `wgsd info`: every adapter wgpu finds, the one wgsd would pick, its features and the
//! limits that matter.

use serde::Serialize;

use wgsd::gpu::adapter::{
    AdapterChoice, INSTALL_HINT, choose_adapter, instance_for, list_adapters,
};
use wgsd::gpu::coopmat;

#[derive(Serialize)]
struct AdapterReport {
    index: usize,
    name: String,
    backend: String,
    device_type: String,
    driver: String,
    driver_info: String,
    chosen: bool,
    shader_f16: bool,
    subgroup: bool,
    subgroup_sizes: [u32; 2],
    max_storage_binding_bytes: u64,
    max_buffer_bytes: u64,
    workgroup_memory_bytes: u32,
    max_invocations_per_workgroup: u32,
    max_workgroups_per_dimension: u32,
    /// Cooperative-matrix configurations (`MxNxK A/B -> C`), empty without the feature.
    cooperative_matrix: Vec<String>,
    /// Whether wgsd's cooperative kernels would run here, and why not.
    cooperative_kernels: String,
}

pub fn run(choice: &AdapterChoice, json: bool) -> anyhow::Result<()> {
    let (instance, backends) = instance_for(choice)?;
    let adapters = list_adapters(&instance, backends);
    if adapters.is_empty() {
        anyhow::bail!("{INSTALL_HINT}");
    }
    let chosen = choose_adapter(&instance, backends, choice)
        .ok()
        .map(|a| a.get_info());
    let reports: Vec<AdapterReport> = adapters
        .iter()
        .enumerate()
        .map(|(index, a)| {
            let info = a.get_info();
            let f = a.features();
            let l = a.limits();
            let configs = coopmat::adapter_configs(a);
            let decision = coopmat::decide(
                configs.clone(),
                coopmat::CoopMode::from_env(),
                f.contains(wgpu::Features::SHADER_F16),
                f.contains(wgpu::Features::SUBGROUP)
                    && info.subgroup_min_size == info.subgroup_max_size,
            );
            let cooperative_kernels = match (decision.tile, decision.why_not) {
                (Some(t), _) => format!("on ({t}x{t} tiles)"),
                (None, Some(why)) => format!("off: {why}"),
                (None, None) => "off: the adapter has no cooperative matrices".to_string(),
            };
            AdapterReport {
                cooperative_matrix: configs.iter().map(|c| c.describe()).collect(),
                cooperative_kernels,
                index,
                chosen: chosen.as_ref() == Some(&info),
                backend: format!("{:?}", info.backend),
                device_type: format!("{:?}", info.device_type),
                shader_f16: f.contains(wgpu::Features::SHADER_F16),
                subgroup: f.contains(wgpu::Features::SUBGROUP),
                subgroup_sizes: [info.subgroup_min_size, info.subgroup_max_size],
                max_storage_binding_bytes: l.max_storage_buffer_binding_size,
                max_buffer_bytes: l.max_buffer_size,
                workgroup_memory_bytes: l.max_compute_workgroup_storage_size,
                max_invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
                max_workgroups_per_dimension: l.max_compute_workgroups_per_dimension,
                name: info.name,
                driver: info.driver,
                driver_info: info.driver_info,
            }
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
        return Ok(());
    }
    for r in &reports {
        let mark = if r.chosen { "*" } else { " " };
        println!(
            "{mark} [{}] {} — {} {} — driver: {} {}",
            r.index, r.name, r.backend, r.device_type, r.driver, r.driver_info
        );
        println!(
            "      features: SHADER_F16 {}, SUBGROUP {} (sizes {}..{})",
            yes(r.shader_f16),
            yes(r.subgroup),
            r.subgroup_sizes[0],
            r.subgroup_sizes[1]
        );
        println!(
            "      limits: storage binding {}, buffer {}, workgroup memory {}, {} invocations/workgroup, {} workgroups/dim",
            bytes(r.max_storage_binding_bytes),
            bytes(r.max_buffer_bytes),
            bytes(u64::from(r.workgroup_memory_bytes)),
            r.max_invocations_per_workgroup,
            r.max_workgroups_per_dimension
        );
        let configs = if r.cooperative_matrix.is_empty() {
            "none".to_string()
        } else {
            r.cooperative_matrix.join(", ")
        };
        println!("      cooperative matrices: {configs}");
        println!("      cooperative kernels: {}", r.cooperative_kernels);
    }
    match reports.iter().find(|r| r.chosen) {
        Some(r) => println!("\nwgsd would use [{}] {} ({})", r.index, r.name, r.backend),
        None => println!("\nno adapter matches the --adapter/--backend choice"),
    }
    Ok(())
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn bytes(b: u64) -> String {
    const MIB: u64 = 1 << 20;
    if b >= 1 << 30 && b.is_multiple_of(1 << 30) {
        format!("{} GiB", b >> 30)
    } else if b >= MIB {
        format!("{:.0} MiB", b as f64 / MIB as f64)
    } else {
        format!("{} KiB", b >> 10)
    }
}
