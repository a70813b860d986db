//! `DDIMScheduler` (eta = 0, as the Stable Diffusion pipeline calls it).

use super::betas;
use super::registry::{ClassDef, Overrides, SamplerDef};
use super::{Base, Derived, Lin, Prediction, Scheduler, SchedulerConfig, Spacing, StepPlan};
use crate::error::Result;

/// diffusers' `DDIMScheduler`.
#[derive(Debug, Clone)]
pub struct Ddim {
    base: Base,
    final_alpha_cumprod: f64,
    clip: Option<f64>,
    n: usize,
    timesteps: Vec<i64>,
    timesteps_f: Vec<f64>,
}

impl Ddim {
    pub fn new(cfg: &SchedulerConfig) -> Result<Ddim> {
        let base = Base::new(
            cfg,
            CLASS.name,
            Spacing::Leading,
            &[
                ("thresholding", cfg.thresholding),
                ("rescale_betas_zero_snr", cfg.rescale_betas_zero_snr),
            ],
        )?;
        let final_alpha_cumprod = if cfg.set_alpha_to_one.unwrap_or(true) {
            1.0
        } else {
            base.alphas_cumprod[0]
        };
        let clip = cfg
            .clip_sample
            .unwrap_or(true)
            .then(|| cfg.clip_sample_range.unwrap_or(1.0));
        Ok(Ddim {
            base,
            final_alpha_cumprod,
            clip,
            n: 0,
            timesteps: Vec::new(),
            timesteps_f: Vec::new(),
        })
    }
}

impl Scheduler for Ddim {
    fn class_name(&self) -> &'static str {
        self.base.class
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        self.base.check_steps(n)?;
        let t = self.base.num_train_timesteps;
        self.timesteps = match self.base.spacing {
            Spacing::Linspace => betas::linspace_int((t - 1) as f64, n),
            Spacing::Leading => betas::leading(t, n, self.base.steps_offset),
            Spacing::Trailing => betas::trailing(t, t, n),
        };
        self.timesteps_f = self.timesteps.iter().map(|&v| v as f64).collect();
        self.n = n;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps_f
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    /// DDIM keeps no history: a late start changes nothing in its steps.
    fn set_begin_index(&mut self, _begin: usize) -> Result<()> {
        Ok(())
    }

    fn add_noise_coeffs(&self, i: usize) -> Result<(f64, f64)> {
        let len = self.timesteps.len();
        let t = *self
            .timesteps
            .get(i)
            .ok_or_else(|| super::step_out_of_range(self.base.class, i, len))?;
        self.base.add_noise_alpha(t)
    }

    fn step(&self, i: usize) -> Result<StepPlan> {
        let len = self.timesteps.len();
        let t = *self
            .timesteps
            .get(i)
            .ok_or_else(|| super::step_out_of_range(self.base.class, i, len))?;
        let prev = t - (self.base.num_train_timesteps / self.n) as i64;
        let a_t = self.base.alpha_at(t).ok_or_else(|| {
            super::unsupported(
                self.base.class,
                "timestep",
                t,
                "within num_train_timesteps (check steps_offset)",
            )
        })?;
        let a_prev = self.base.alpha_at(prev).unwrap_or(self.final_alpha_cumprod);
        let (sa, sb) = (a_t.sqrt(), (1.0 - a_t).sqrt());
        let (mut x0, eps) = match self.base.prediction {
            Prediction::Epsilon => (Lin::x(1.0 / sa) + Lin::e(-sb / sa), Lin::e(1.0)),
            Prediction::V => (Lin::x(sa) + Lin::e(-sb), Lin::e(sa) + Lin::x(sb)),
        };
        let derived = self.clip.map(|r| {
            let d = Derived {
                value: x0,
                clamp: Some((-r, r)),
            };
            x0 = Lin::d(1.0);
            d
        });
        Ok(StepPlan {
            derived,
            out: x0 * a_prev.sqrt() + eps * (1.0 - a_prev).sqrt(),
            ..StepPlan::default()
        })
    }
}

/// The registry's entry for this class.
pub(super) const CLASS: ClassDef = ClassDef {
    name: "DDIMScheduler",
    build,
};

fn build(cfg: &SchedulerConfig) -> Result<Box<dyn Scheduler>> {
    Ok(Box::new(Ddim::new(cfg)?))
}

/// The samplers built on this class (the plain one first).
pub(super) const SAMPLERS: &[SamplerDef] = &[SamplerDef {
    name: "ddim",
    a1111: "DDIM",
    aliases: &[],
    class: &CLASS,
    overrides: Overrides::NONE,
}];
