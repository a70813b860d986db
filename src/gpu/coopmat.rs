//! Cooperative matrices (tensor cores / simdgroup matrices) through wgpu 30's experimental
//! `EXPERIMENTAL_COOPERATIVE_MATRIX` feature: which configurations an adapter reports,
//! which one wgsd's kernels use, and whether they may run at all.
//!
//! wgsd's cooperative-matrix kernels take f16 inputs with an f32 accumulator (f16
//! accumulation would lose the precision contract), square tiles of 16 (Vulkan on
//! NVIDIA/AMD) or 8 (Metal), and a fixed subgroup size (each subgroup owns whole tiles).
//!
//! They are **opt-in** until a GPU run has measured them (`WGSD_COOPMAT=on`);
//! `WGSD_NO_COOPMAT=1` (or `WGSD_COOPMAT=off`) never enables the feature, so the FMA
//! kernels run for comparisons. See README "Cooperative matrices".

/// A scalar type of a cooperative-matrix configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CoopScalar {
    F16,
    F32,
    Other,
}

impl CoopScalar {
    fn from_wgpu(t: wgpu::CooperativeScalarType) -> Self {
        match t {
            wgpu::CooperativeScalarType::F16 => CoopScalar::F16,
            wgpu::CooperativeScalarType::F32 => CoopScalar::F32,
            _ => CoopScalar::Other,
        }
    }

    fn name(self) -> &'static str {
        match self {
            CoopScalar::F16 => "f16",
            CoopScalar::F32 => "f32",
            CoopScalar::Other => "other",
        }
    }
}

/// One configuration an adapter supports: `C[m x n] += A[m x k] * B[k x n]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CoopConfig {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    /// Element type of A and B.
    pub ab: CoopScalar,
    /// Element type of C and the result.
    pub cr: CoopScalar,
}

impl CoopConfig {
    fn from_wgpu(p: &wgpu::CooperativeMatrixProperties) -> Self {
        CoopConfig {
            m: p.m_size,
            n: p.n_size,
            k: p.k_size,
            ab: CoopScalar::from_wgpu(p.ab_type),
            cr: CoopScalar::from_wgpu(p.cr_type),
        }
    }

    /// `16x16x16 f16 -> f32` as `wgsd info` prints it.
    pub fn describe(&self) -> String {
        format!(
            "{}x{}x{} {} -> {}",
            self.m,
            self.n,
            self.k,
            self.ab.name(),
            self.cr.name()
        )
    }

    /// A square f16 x f16 -> f32 tile: what wgsd's kernels are written for.
    fn usable(&self) -> bool {
        self.m == self.n
            && self.n == self.k
            && matches!(self.m, 8 | 16)
            && self.ab == CoopScalar::F16
            && self.cr == CoopScalar::F32
    }
}

/// What the user asked for (`WGSD_COOPMAT` / `WGSD_NO_COOPMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoopMode {
    /// Enable the feature and use the kernels where they apply (needs a usable config).
    On,
    /// Never enable the feature: the FMA kernels run (comparisons, or a driver bug).
    Off,
    /// Today the same as `Off` for kernel choice: no cooperative-matrix kernel has been
    /// measured on a GPU yet, and an unmeasured kernel is never the default. The feature
    /// is still listed by `wgsd info`.
    Auto,
}

impl CoopMode {
    /// Reads `WGSD_NO_COOPMAT` (any non-empty value but `0` forces `Off`) and
    /// `WGSD_COOPMAT` (`on|1|true`, `off|0|false`, `auto`).
    pub fn from_env() -> CoopMode {
        let get = |k: &str| std::env::var(k).ok().map(|v| v.trim().to_ascii_lowercase());
        if get("WGSD_NO_COOPMAT").is_some_and(|v| !v.is_empty() && v != "0") {
            return CoopMode::Off;
        }
        match get("WGSD_COOPMAT").as_deref() {
            Some("on" | "1" | "true" | "yes") => CoopMode::On,
            Some("off" | "0" | "false" | "no") => CoopMode::Off,
            _ => CoopMode::Auto,
        }
    }
}

/// The cooperative-matrix facts of one device.
#[derive(Debug, Clone, Default)]
pub struct CoopCaps {
    /// Every configuration the adapter reports (empty without the feature).
    pub configs: Vec<CoopConfig>,
    /// The tile edge wgsd's kernels run with (16 preferred, else 8), when the mode is
    /// `On`, the feature is enabled on the device, and the subgroup size is fixed.
    pub tile: Option<u32>,
    /// Why `tile` is `None` although the adapter has configurations (for `wgsd info`).
    pub why_not: Option<String>,
}

/// The configurations `adapter` reports.
pub fn adapter_configs(adapter: &wgpu::Adapter) -> Vec<CoopConfig> {
    if !adapter
        .features()
        .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
    {
        return Vec::new();
    }
    adapter
        .cooperative_matrix_properties()
        .iter()
        .map(CoopConfig::from_wgpu)
        .collect()
}

/// The tile edge wgsd would use among `configs`: 16 (fewer, larger MMAs) before 8.
pub fn preferred_tile(configs: &[CoopConfig]) -> Option<u32> {
    [16, 8]
        .into_iter()
        .find(|&s| configs.iter().any(|c| c.usable() && c.m == s))
}

/// Decides whether the device should enable the feature and which tile the kernels use.
/// `f16` and `subgroup_fixed` are the device's SHADER_F16 / fixed-subgroup facts.
pub fn decide(
    configs: Vec<CoopConfig>,
    mode: CoopMode,
    f16: bool,
    subgroup_fixed: bool,
) -> CoopCaps {
    let tile = preferred_tile(&configs);
    let why_not = if configs.is_empty() {
        None
    } else if tile.is_none() {
        Some("no square f16 x f16 -> f32 configuration".to_string())
    } else if !f16 {
        Some("SHADER_F16 is missing".to_string())
    } else if !subgroup_fixed {
        Some("the subgroup size is not fixed (min != max)".to_string())
    } else {
        match mode {
            CoopMode::On => None,
            CoopMode::Off => Some("disabled (WGSD_NO_COOPMAT / WGSD_COOPMAT=off)".to_string()),
            CoopMode::Auto => {
                Some("not measured on this GPU yet; opt in with WGSD_COOPMAT=on".to_string())
            }
        }
    };
    CoopCaps {
        tile: if why_not.is_none() { tile } else { None },
        why_not,
        configs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(s: u32, ab: CoopScalar, cr: CoopScalar) -> CoopConfig {
        CoopConfig {
            m: s,
            n: s,
            k: s,
            ab,
            cr,
        }
    }

    #[test]
    fn prefers_16_f16_f32_and_ignores_f16_accumulators() {
        use CoopScalar::*;
        let nv = [cfg(16, F16, F16), cfg(16, F16, F32), cfg(8, F16, F32)];
        assert_eq!(preferred_tile(&nv), Some(16));
        assert_eq!(preferred_tile(&[cfg(16, F16, F16)]), None);
        let metal = [cfg(8, F32, F32), cfg(8, F16, F16), cfg(8, F16, F32)];
        assert_eq!(preferred_tile(&metal), Some(8));
        let rect = CoopConfig {
            m: 16,
            n: 8,
            k: 16,
            ab: F16,
            cr: F32,
        };
        assert_eq!(preferred_tile(&[rect]), None);
    }

    #[test]
    fn only_on_enables_and_each_refusal_says_why() {
        use CoopScalar::*;
        let c = vec![cfg(16, F16, F32)];
        assert_eq!(decide(c.clone(), CoopMode::On, true, true).tile, Some(16));
        for (mode, f16, fixed) in [
            (CoopMode::Auto, true, true),
            (CoopMode::Off, true, true),
            (CoopMode::On, false, true),
            (CoopMode::On, true, false),
        ] {
            let d = decide(c.clone(), mode, f16, fixed);
            assert_eq!(d.tile, None);
            assert!(d.why_not.is_some());
        }
        let none = decide(Vec::new(), CoopMode::On, true, true);
        assert!(none.tile.is_none() && none.why_not.is_none());
    }
}
