//! Adapter discovery and choice: discrete GPU first, CPU drivers last, overridable by
//! `--adapter <index|name substring>` / `WGSD_ADAPTER` and `--backend` / `WGSD_BACKEND`.

use crate::error::{Error, Result};

/// How to pick an adapter. Empty fields mean "choose automatically".
#[derive(Debug, Clone, Default)]
pub struct AdapterChoice {
    /// An index into [`list_adapters`]'s order, or a case-insensitive substring of the name.
    pub adapter: Option<String>,
    /// Restrict to one backend: vulkan, metal, dx12 or gl.
    pub backend: Option<String>,
}

impl AdapterChoice {
    /// Reads `WGSD_ADAPTER` and `WGSD_BACKEND`.
    pub fn from_env() -> Self {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        AdapterChoice {
            adapter: get("WGSD_ADAPTER"),
            backend: get("WGSD_BACKEND"),
        }
    }
}

/// How to install a GPU driver, printed whenever no adapter is found.
pub const INSTALL_HINT: &str = "no GPU adapter found. Install a Vulkan, Metal or DX12 driver for your GPU, \
or for a CPU-only machine Mesa's software Vulkan driver: `sudo apt-get install mesa-vulkan-drivers` \
(Debian/Ubuntu), then check with `wgsd info`";

/// Parses a backend name as users write it.
pub fn parse_backend(name: &str) -> Result<wgpu::Backends> {
    match name.trim().to_ascii_lowercase().as_str() {
        "vulkan" | "vk" => Ok(wgpu::Backends::VULKAN),
        "metal" | "mtl" => Ok(wgpu::Backends::METAL),
        "dx12" | "d3d12" => Ok(wgpu::Backends::DX12),
        "gl" | "gles" | "opengl" => Ok(wgpu::Backends::GL),
        other => Err(Error::InvalidInput(format!(
            "unknown backend '{other}': use vulkan, metal, dx12 or gl"
        ))),
    }
}

/// Lower is better: discrete, integrated, virtual, other, CPU; GL after the native APIs.
fn rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let ty = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    let backend = u8::from(info.backend == wgpu::Backend::Gl);
    (ty, backend)
}

/// Every adapter wgpu finds, in preference order (the first is the automatic choice).
pub fn list_adapters(instance: &wgpu::Instance, backends: wgpu::Backends) -> Vec<wgpu::Adapter> {
    let mut adapters = pollster::block_on(instance.enumerate_adapters(backends));
    adapters.sort_by_key(|a| rank(&a.get_info()));
    adapters
}

/// A wgpu instance over the backends the choice allows.
pub fn instance_for(choice: &AdapterChoice) -> Result<(wgpu::Instance, wgpu::Backends)> {
    let backends = match &choice.backend {
        Some(b) => parse_backend(b)?,
        None => wgpu::Backends::all(),
    };
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    Ok((wgpu::Instance::new(desc), backends))
}

/// Picks the adapter the choice names, or the best one.
pub fn choose_adapter(
    instance: &wgpu::Instance,
    backends: wgpu::Backends,
    choice: &AdapterChoice,
) -> Result<wgpu::Adapter> {
    let adapters = list_adapters(instance, backends);
    if adapters.is_empty() {
        return Err(Error::NoAdapter(match &choice.backend {
            Some(b) => format!("{INSTALL_HINT} (only backend '{b}' was searched)"),
            None => INSTALL_HINT.to_string(),
        }));
    }
    let Some(want) = &choice.adapter else {
        return Ok(adapters.into_iter().next().expect("non-empty"));
    };
    if let Ok(index) = want.trim().parse::<usize>() {
        let n = adapters.len();
        return adapters.into_iter().nth(index).ok_or_else(|| {
            Error::NoAdapter(format!(
                "adapter index {index} does not exist: {n} adapter(s) found; see `wgsd info`"
            ))
        });
    }
    let needle = want.to_lowercase();
    let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
    adapters
        .into_iter()
        .find(|a| a.get_info().name.to_lowercase().contains(&needle))
        .ok_or_else(|| {
            Error::NoAdapter(format!(
                "no adapter name contains '{want}'; found: {}",
                names.join(", ")
            ))
        })
}
