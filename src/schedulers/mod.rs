//! Noise schedulers mirroring diffusers 0.42 step for step: `DDIMScheduler`,
//! `PNDMScheduler` (PLMS, `skip_prk_steps`), `EulerDiscreteScheduler`,
//! `EulerAncestralDiscreteScheduler`, `DPMSolverMultistepScheduler` (DPM++ 1S/2M, 2M SDE),
//! `LMSDiscreteScheduler` and `UniPCMultistepScheduler`, with Karras sigmas where diffusers
//! has them. [`registry`] lists the classes and the samplers users pick by name.
//!
//! A scheduler never touches tensors: `step(i)` returns a [`StepPlan`] (the scalar
//! coefficients of diffusers' update at step `i`, computed on the CPU) that the fused GPU
//! kernel [`crate::ops::scheduler_step`] applies together with the guidance combine. Steps
//! are pure functions of the step index, so history bookkeeping (PNDM's past outputs,
//! LMS's derivatives, DPM++'s previous x0) is a fixed assignment of GPU history slots.
//!
//! Configs come from the archive's `scheduler/scheduler_config.json`; any class can be
//! built from any config the way diffusers' `Cls.from_config(config)` does: keys absent
//! from the file (or listed in its `_use_default_values`) take the NEW class's defaults.

mod betas;
mod ddim;
mod dpm_solver;
mod euler;
mod euler_ancestral;
mod karras;
mod lms;
mod pndm;
pub mod registry;
mod unipc;

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
pub use crate::ops::scheduler_step::{Derived, Lin, SLOTS, StepPlan};

pub use ddim::Ddim;
pub use dpm_solver::DpmSolverMultistep;
pub use euler::EulerDiscrete;
pub use euler_ancestral::EulerAncestralDiscrete;
pub use lms::LmsDiscrete;
pub use pndm::Pndm;
pub use registry::Sampler;
pub use unipc::UniPcMultistep;

/// One diffusers scheduler class.
pub trait Scheduler: Send + Sync {
    /// The diffusers class name, e.g. `"DDIMScheduler"`.
    fn class_name(&self) -> &'static str;
    /// diffusers' `set_timesteps(num_inference_steps)`.
    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()>;
    /// The timesteps the UNet sees, one per call of [`Scheduler::step`] (PNDM has
    /// `steps + 1`). Empty before `set_timesteps`.
    fn timesteps(&self) -> &[f64];
    /// diffusers' `sigmas` (`len = timesteps + 1`) for the sigma-based schedulers.
    fn sigmas(&self) -> Option<&[f64]> {
        None
    }
    /// The factor the initial noise is multiplied by.
    fn init_noise_sigma(&self) -> f64;
    /// `scale_model_input(sample, t) = sample * factor` at step `step_index`.
    fn scale_model_input_factor(&self, _step_index: usize) -> f64 {
        1.0
    }
    /// diffusers' `step()` at index `step_index` of `timesteps()` as scalar coefficients.
    fn step(&self, step_index: usize) -> Result<StepPlan>;
    /// How many history slots (tensors of the latents' size) the steps use.
    fn history_slots(&self) -> usize {
        0
    }
    /// diffusers' `set_begin_index(begin)` (img2img starts at `timesteps()[begin]`):
    /// [`Scheduler::step`] keeps taking indices into the full `timesteps()`, while the
    /// history a multistep scheduler keeps starts empty at `begin`, as in diffusers.
    /// Classes whose history does not support a late start refuse `begin > 0`.
    fn set_begin_index(&mut self, begin: usize) -> Result<()> {
        if begin == 0 {
            Ok(())
        } else {
            Err(Error::InvalidInput(format!(
                "img2img with strength < 1 is not supported with {} yet",
                self.class_name()
            )))
        }
    }
    /// diffusers' `add_noise(x, noise, timesteps[i])` as `ca * x + cb * noise`. The
    /// sigma-based classes (Euler, LMS) use `x + sigmas[i] * noise`; the others override.
    fn add_noise_coeffs(&self, i: usize) -> Result<(f64, f64)> {
        let sigmas = self.sigmas().unwrap_or(&[]);
        match sigmas.get(i) {
            Some(&s) if i < self.timesteps().len() => Ok((1.0, s)),
            _ => Err(step_out_of_range(
                self.class_name(),
                i,
                self.timesteps().len(),
            )),
        }
    }
}

/// Largest `num_train_timesteps` accepted (diffusers' SD schedulers use 1000).
pub const MAX_TRAIN_TIMESTEPS: usize = 100_000;

/// `scheduler_config.json`. Every field is optional: a missing one takes the default of
/// the class being built (as diffusers does), so the same config can build any class.
/// Keys no supported class knows are ignored, as diffusers ignores them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    #[serde(rename = "_class_name")]
    pub class_name: Option<String>,
    pub num_train_timesteps: Option<usize>,
    #[serde(deserialize_with = "lenient_f64")]
    pub beta_start: Option<f64>,
    #[serde(deserialize_with = "lenient_f64")]
    pub beta_end: Option<f64>,
    pub beta_schedule: Option<String>,
    pub trained_betas: Option<Vec<f64>>,
    pub prediction_type: Option<String>,
    pub timestep_spacing: Option<String>,
    pub steps_offset: Option<i64>,
    pub set_alpha_to_one: Option<bool>,
    pub clip_sample: Option<bool>,
    #[serde(deserialize_with = "lenient_f64")]
    pub clip_sample_range: Option<f64>,
    pub skip_prk_steps: Option<bool>,
    pub thresholding: Option<bool>,
    pub rescale_betas_zero_snr: Option<bool>,
    pub use_karras_sigmas: Option<bool>,
    pub use_exponential_sigmas: Option<bool>,
    pub use_beta_sigmas: Option<bool>,
    pub use_lu_lambdas: Option<bool>,
    pub use_flow_sigmas: Option<bool>,
    pub use_dynamic_shifting: Option<bool>,
    pub interpolation_type: Option<String>,
    pub timestep_type: Option<String>,
    pub final_sigmas_type: Option<String>,
    pub algorithm_type: Option<String>,
    pub solver_type: Option<String>,
    pub solver_order: Option<i64>,
    pub lower_order_final: Option<bool>,
    pub euler_at_final: Option<bool>,
    #[serde(deserialize_with = "lenient_f64")]
    pub lambda_min_clipped: Option<f64>,
    pub variance_type: Option<String>,
    pub predict_x0: Option<bool>,
    pub disable_corrector: Option<Vec<i64>>,
}

/// Accepts a JSON number, null, or the strings the NaN/Infinity pre-pass produces.
fn lenient_f64<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum V {
        N(f64),
        S(String),
    }
    match Option::<V>::deserialize(d)? {
        None => Ok(None),
        Some(V::N(v)) => Ok(Some(v)),
        Some(V::S(s)) => match s.as_str() {
            "NaN" => Ok(Some(f64::NAN)),
            "Infinity" => Ok(Some(f64::INFINITY)),
            "-Infinity" => Ok(Some(f64::NEG_INFINITY)),
            _ => Err(serde::de::Error::custom(format!(
                "expected a number, got {s:?}"
            ))),
        },
    }
}

/// Python's `json` writes `NaN`, `Infinity` and `-Infinity` as bare tokens (diffusers'
/// DPM-Solver config has `"lambda_min_clipped": -Infinity`). Rewrites those tokens,
/// outside strings, as strings that [`lenient_f64`] maps back to the f64 values.
pub fn quote_nonfinite_tokens(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(ch) = rest.chars().next() {
        if in_string {
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == '"' {
                in_string = false;
            }
        } else if ch == '"' {
            in_string = true;
        } else {
            let token = ["-Infinity", "Infinity", "NaN"]
                .into_iter()
                .find(|t| rest.starts_with(t));
            if let Some(t) = token {
                out.push('"');
                out.push_str(t);
                out.push('"');
                rest = &rest[t.len()..];
                continue;
            }
        }
        out.push(ch);
        rest = &rest[ch.len_utf8()..];
    }
    out
}

impl SchedulerConfig {
    /// Parses `scheduler_config.json` text. Keys listed in `_use_default_values` are
    /// dropped, as diffusers' `from_config` drops them.
    pub fn from_json_str(text: &str) -> Result<SchedulerConfig> {
        let bad = |e: serde_json::Error| Error::InvalidInput(format!("scheduler config: {e}"));
        let mut value: serde_json::Value =
            serde_json::from_str(&quote_nonfinite_tokens(text)).map_err(bad)?;
        let obj = value.as_object_mut().ok_or_else(|| {
            Error::InvalidInput("scheduler config: expected a JSON object".into())
        })?;
        if let Some(defaults) = obj.remove("_use_default_values") {
            let keys: BTreeSet<String> = defaults
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect();
            obj.retain(|k, _| !keys.contains(k));
        }
        serde_json::from_value(value).map_err(bad)
    }

    /// Reads `scheduler_config.json`.
    pub fn from_file(path: &Path) -> Result<SchedulerConfig> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_json_str(&text)
            .map_err(|e| Error::InvalidInput(format!("{}: {e}", path.display())))
    }

    /// This config with `timestep_spacing` replaced (when `Some`).
    pub fn with_spacing(&self, spacing: Option<Spacing>) -> SchedulerConfig {
        let mut cfg = self.clone();
        if let Some(s) = spacing {
            cfg.timestep_spacing = Some(s.as_str().to_string());
        }
        cfg
    }

    /// The plain sampler of the class named by `_class_name`.
    pub fn class(&self) -> Result<Sampler> {
        match &self.class_name {
            Some(name) => Sampler::of_class(name),
            None => Err(Error::InvalidInput(
                "scheduler config: no _class_name; pass the scheduler explicitly".into(),
            )),
        }
    }
}

/// Builds the config's own class (`_class_name`), or `sampler` when given (diffusers'
/// `Cls.from_config(config, **overrides)`). [`SchedulerConfig::with_spacing`] overrides
/// the spacing.
pub fn from_config(cfg: &SchedulerConfig, sampler: Option<Sampler>) -> Result<Box<dyn Scheduler>> {
    let sampler = match sampler {
        Some(s) => s,
        None => cfg.class()?,
    };
    sampler.build(cfg)
}

/// A config value this implementation does not support, naming the field.
pub(crate) fn unsupported(
    class: &str,
    field: &str,
    value: impl std::fmt::Debug,
    supported: &str,
) -> Error {
    Error::InvalidInput(format!(
        "scheduler config: {class} with {field} = {value:?} is not supported (supported: {supported})"
    ))
}

/// `prediction_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prediction {
    Epsilon,
    V,
}

/// `timestep_spacing`: how the inference timesteps are spread over the training ones
/// (Table 2 of "Common Diffusion Noise Schedules and Sample Steps are Flawed").
/// `Trailing` starts at the last training timestep: what few-step models (SD-Turbo) use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Spacing {
    Leading,
    Trailing,
    Linspace,
}

impl Spacing {
    pub const ALL: [Spacing; 3] = [Spacing::Leading, Spacing::Trailing, Spacing::Linspace];

    /// diffusers' config value.
    pub fn as_str(self) -> &'static str {
        match self {
            Spacing::Leading => "leading",
            Spacing::Trailing => "trailing",
            Spacing::Linspace => "linspace",
        }
    }

    pub fn parse(s: &str) -> Result<Spacing> {
        let want = s.trim().to_ascii_lowercase();
        Spacing::ALL
            .into_iter()
            .find(|v| v.as_str() == want)
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "unknown timestep spacing {s:?}; use leading, trailing or linspace"
                ))
            })
    }
}

/// What every class reads the same way: the training schedule, prediction type,
/// spacing and offset (with the class's defaults).
#[derive(Debug, Clone)]
pub(crate) struct Base {
    pub class: &'static str,
    pub num_train_timesteps: usize,
    pub beta_schedule: String,
    /// `alphas_cumprod` as torch computes it (float32 values).
    pub alphas_cumprod: Vec<f64>,
    pub prediction: Prediction,
    pub spacing: Spacing,
    pub steps_offset: i64,
}

impl Base {
    /// `flags`: boolean options of this class that must be false (unsupported when true).
    pub fn new(
        cfg: &SchedulerConfig,
        name: &'static str,
        default_spacing: Spacing,
        flags: &[(&str, Option<bool>)],
    ) -> Result<Base> {
        for (field, v) in flags {
            if *v == Some(true) {
                return Err(unsupported(name, field, true, "false"));
            }
        }
        let n = cfg.num_train_timesteps.unwrap_or(1000);
        // Bounded above too: the schedule is a table of n entries (SD uses 1000).
        if !(2..=MAX_TRAIN_TIMESTEPS).contains(&n) {
            return Err(unsupported(
                name,
                "num_train_timesteps",
                n,
                &format!("2 to {MAX_TRAIN_TIMESTEPS}"),
            ));
        }
        let alphas_cumprod = betas::alphas_cumprod(
            name,
            n,
            cfg.beta_start.unwrap_or(0.0001),
            cfg.beta_end.unwrap_or(0.02),
            cfg.beta_schedule.as_deref().unwrap_or("linear"),
            cfg.trained_betas.as_deref(),
        )?;
        let prediction = match cfg.prediction_type.as_deref().unwrap_or("epsilon") {
            "epsilon" => Prediction::Epsilon,
            "v_prediction" => Prediction::V,
            other => {
                return Err(unsupported(
                    name,
                    "prediction_type",
                    other,
                    "epsilon, v_prediction",
                ));
            }
        };
        let spacing = match cfg.timestep_spacing.as_deref() {
            None => default_spacing,
            Some("leading") => Spacing::Leading,
            Some("trailing") => Spacing::Trailing,
            Some("linspace") => Spacing::Linspace,
            Some(other) => {
                return Err(unsupported(
                    name,
                    "timestep_spacing",
                    other,
                    "leading, trailing, linspace",
                ));
            }
        };
        Ok(Base {
            class: name,
            num_train_timesteps: n,
            beta_schedule: cfg.beta_schedule.clone().unwrap_or_else(|| "linear".into()),
            alphas_cumprod,
            prediction,
            spacing,
            steps_offset: cfg.steps_offset.unwrap_or(0),
        })
    }

    /// Errors unless `1 <= n <= num_train_timesteps`.
    pub fn check_steps(&self, n: usize) -> Result<()> {
        if n == 0 || n > self.num_train_timesteps {
            return Err(Error::InvalidInput(format!(
                "{}: {n} inference steps; expected 1 to num_train_timesteps = {}",
                self.class, self.num_train_timesteps
            )));
        }
        Ok(())
    }

    /// `add_noise` of the alpha-based classes (DDIM, PNDM) at timestep `t`:
    /// `(sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t))`.
    pub fn add_noise_alpha(&self, t: i64) -> Result<(f64, f64)> {
        let a = self
            .alpha_at(t)
            .ok_or_else(|| unsupported(self.class, "timestep", t, "within num_train_timesteps"))?;
        Ok((a.sqrt(), (1.0 - a).sqrt()))
    }

    /// `alphas_cumprod[t]`, or `None` when `t` is outside the table.
    pub fn alpha_at(&self, t: i64) -> Option<f64> {
        usize::try_from(t)
            .ok()
            .and_then(|i| self.alphas_cumprod.get(i).copied())
    }
}

/// The error for a step index past the schedule (or before `set_timesteps`).
pub(crate) fn step_out_of_range(class: &str, i: usize, len: usize) -> Error {
    Error::InvalidInput(format!(
        "{class}: step {i} requested but the schedule has {len} steps (call set_timesteps first)"
    ))
}
