//! The scheduler registry: every diffusers class wgsd implements ([`ClassDef`]) and every
//! sampler a user can pick ([`Sampler`]: a class plus the config changes that make it,
//! e.g. "DPM++ 2M SDE Karras" = `DPMSolverMultistepScheduler` with
//! `algorithm_type = "sde-dpmsolver++"` and `use_karras_sigmas = true`).
//!
//! Each scheduler module declares its `CLASS` and `SAMPLERS`; adding a scheduler is one
//! file, one line in [`CLASSES`] / [`SAMPLER_LISTS`] and one test.

use super::{Scheduler, SchedulerConfig};
use crate::error::{Error, Result};

/// One diffusers scheduler class.
#[derive(Debug)]
pub struct ClassDef {
    /// The diffusers class name, e.g. `"DDIMScheduler"`.
    pub name: &'static str,
    /// diffusers' `Cls.from_config(config)`.
    pub build: fn(&SchedulerConfig) -> Result<Box<dyn Scheduler>>,
}

/// Config keys a sampler sets on top of the archive's scheduler config (diffusers'
/// `Cls.from_config(config, **overrides)`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Overrides {
    pub use_karras_sigmas: Option<bool>,
    pub algorithm_type: Option<&'static str>,
}

impl Overrides {
    pub const NONE: Overrides = Overrides {
        use_karras_sigmas: None,
        algorithm_type: None,
    };
    pub const KARRAS: Overrides = Overrides {
        use_karras_sigmas: Some(true),
        algorithm_type: None,
    };

    fn apply(&self, cfg: &mut SchedulerConfig) {
        if let Some(v) = self.use_karras_sigmas {
            cfg.use_karras_sigmas = Some(v);
        }
        if let Some(v) = self.algorithm_type {
            cfg.algorithm_type = Some(v.to_string());
        }
    }
}

/// A sampler as users name it.
#[derive(Debug)]
pub struct SamplerDef {
    /// wgsd's short name (`--scheduler`), e.g. `"dpm++2m_karras"`.
    pub name: &'static str,
    /// AUTOMATIC1111's sampler name, e.g. `"DPM++ 2M Karras"`.
    pub a1111: &'static str,
    /// Other accepted spellings.
    pub aliases: &'static [&'static str],
    pub class: &'static ClassDef,
    pub overrides: Overrides,
}

/// Every implemented class.
pub const CLASSES: [&ClassDef; 7] = [
    &super::ddim::CLASS,
    &super::pndm::CLASS,
    &super::euler::CLASS,
    &super::euler_ancestral::CLASS,
    &super::dpm_solver::CLASS,
    &super::lms::CLASS,
    &super::unipc::CLASS,
];

/// Every sampler, in the order they are listed to users. The first sampler of each
/// class is its plain form (no overrides).
const SAMPLER_LISTS: [&[SamplerDef]; 7] = [
    super::euler_ancestral::SAMPLERS,
    super::euler::SAMPLERS,
    super::lms::SAMPLERS,
    super::dpm_solver::SAMPLERS,
    super::unipc::SAMPLERS,
    super::ddim::SAMPLERS,
    super::pndm::SAMPLERS,
];

/// A sampler: a scheduler class and the config overrides that make it.
#[derive(Clone, Copy)]
pub struct Sampler(&'static SamplerDef);

impl PartialEq for Sampler {
    fn eq(&self, other: &Sampler) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for Sampler {}

impl std::hash::Hash for Sampler {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.name.hash(state);
    }
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sampler({})", self.0.name)
    }
}

impl std::fmt::Display for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.name)
    }
}

fn normalise(s: &str) -> String {
    s.trim().to_ascii_lowercase()
}

impl Sampler {
    /// Every sampler.
    pub fn all() -> impl Iterator<Item = Sampler> {
        SAMPLER_LISTS.into_iter().flatten().map(Sampler)
    }

    /// wgsd's short name, e.g. `"euler_a"`.
    pub fn name(self) -> &'static str {
        self.0.name
    }

    /// AUTOMATIC1111's name, e.g. `"Euler a"`.
    pub fn a1111_name(self) -> &'static str {
        self.0.a1111
    }

    /// The diffusers class name.
    pub fn diffusers_name(self) -> &'static str {
        self.0.class.name
    }

    /// Other accepted spellings.
    pub fn aliases(self) -> &'static [&'static str] {
        self.0.aliases
    }

    pub fn overrides(self) -> Overrides {
        self.0.overrides
    }

    /// The plain sampler of a class (`"DDIMScheduler"` -> `ddim`).
    pub fn of_class(class: &str) -> Result<Sampler> {
        Sampler::all()
            .find(|s| s.0.class.name.eq_ignore_ascii_case(class.trim()))
            .ok_or_else(|| Sampler::unknown(class))
    }

    /// Parses wgsd's short names and aliases, AUTOMATIC1111's sampler names and diffusers
    /// class names (with or without the `Scheduler` suffix), case-insensitively.
    pub fn parse(name: &str) -> Result<Sampler> {
        let want = normalise(name);
        if let Some(s) = Sampler::all().find(|s| {
            s.0.name == want
                || normalise(s.0.a1111) == want
                || s.0.aliases.iter().any(|a| normalise(a) == want)
        }) {
            return Ok(s);
        }
        // A class name is its plain sampler.
        Sampler::all()
            .find(|s| {
                let class = s.0.class.name.to_ascii_lowercase();
                class == want || class.trim_end_matches("scheduler") == want
            })
            .ok_or_else(|| Sampler::unknown(name))
    }

    fn unknown(name: &str) -> Error {
        let names: Vec<String> = Sampler::all()
            .map(|s| format!("{} (\"{}\")", s.0.name, s.0.a1111))
            .collect();
        Error::InvalidInput(format!(
            "unknown scheduler {name:?}; supported: {}, or a diffusers class name ({})",
            names.join(", "),
            CLASSES.map(|c| c.name).join(", ")
        ))
    }

    /// Builds this sampler from the archive's scheduler config (diffusers'
    /// `Cls.from_config(config, **overrides)`).
    pub fn build(self, cfg: &SchedulerConfig) -> Result<Box<dyn Scheduler>> {
        let mut cfg = cfg.clone();
        self.0.overrides.apply(&mut cfg);
        (self.0.class.build)(&cfg)
    }
}
