//! `EulerAncestralDiscreteScheduler`: Euler to `sigma_down`, then fresh noise times
//! `sigma_up`. diffusers draws `randn(model_output.shape)` from the pipeline's generator
//! at every step (even the last, where `sigma_up` is 0): `StepPlan::draws_noise`.

use super::euler::{SigmaSchedule, derivative};
use super::registry::{ClassDef, Overrides, SamplerDef};
use super::{Base, Lin, Scheduler, SchedulerConfig, Spacing, StepPlan};
use crate::error::Result;

/// diffusers' `EulerAncestralDiscreteScheduler`.
#[derive(Debug, Clone)]
pub struct EulerAncestralDiscrete {
    base: Base,
    sched: SigmaSchedule,
}

impl EulerAncestralDiscrete {
    pub fn new(cfg: &SchedulerConfig) -> Result<EulerAncestralDiscrete> {
        let base = Base::new(
            cfg,
            CLASS.name,
            Spacing::Linspace,
            &[("rescale_betas_zero_snr", cfg.rescale_betas_zero_snr)],
        )?;
        let sched = SigmaSchedule::new(&base, false);
        Ok(EulerAncestralDiscrete { base, sched })
    }
}

impl Scheduler for EulerAncestralDiscrete {
    fn class_name(&self) -> &'static str {
        self.base.class
    }

    /// Euler ancestral keeps no history: steps from the begin index are its ordinary steps.
    fn set_begin_index(&mut self, _begin: usize) -> Result<()> {
        Ok(())
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        self.sched.set(&self.base, n, 0.0)
    }

    fn timesteps(&self) -> &[f64] {
        &self.sched.timesteps
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.sched.sigmas)
    }

    fn init_noise_sigma(&self) -> f64 {
        self.sched.init_noise_sigma(&self.base)
    }

    fn scale_model_input_factor(&self, i: usize) -> f64 {
        self.sched.input_scale(i)
    }

    fn step(&self, i: usize) -> Result<StepPlan> {
        let (from, to) = self.sched.pair(self.base.class, i)?;
        // sigma_up / sigma_down in float32 like torch (sigma_down has a cancellation).
        let (f, t) = (from as f32, to as f32);
        let up = (t * t * (f * f - t * t) / (f * f)).sqrt();
        let down = (t * t - up * up).sqrt();
        let d = derivative(self.base.prediction, from);
        Ok(StepPlan {
            out: Lin::x(1.0) + d * (f64::from(down) - from) + Lin::noise(f64::from(up)),
            draws_noise: true,
            ..StepPlan::default()
        })
    }
}

/// The registry's entry for this class.
pub(super) const CLASS: ClassDef = ClassDef {
    name: "EulerAncestralDiscreteScheduler",
    build,
};

fn build(cfg: &SchedulerConfig) -> Result<Box<dyn Scheduler>> {
    Ok(Box::new(EulerAncestralDiscrete::new(cfg)?))
}

/// The samplers built on this class (the plain one first).
pub(super) const SAMPLERS: &[SamplerDef] = &[SamplerDef {
    name: "euler_a",
    a1111: "Euler a",
    aliases: &["euler-a", "euler_ancestral", "euler-ancestral"],
    class: &CLASS,
    overrides: Overrides::NONE,
}];
