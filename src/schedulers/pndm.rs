//! `PNDMScheduler` with `skip_prk_steps` (PLMS), the SD 1.x default.
//!
//! History slots: 0..3 hold the model outputs diffusers keeps in `ets` (a ring, the
//! append index `j` in slot `j % 3`), slot 3 the first step's sample (`cur_sample`).

use super::betas;
use super::registry::{ClassDef, Overrides, SamplerDef};
use super::{Base, Lin, Prediction, Scheduler, SchedulerConfig, Spacing, StepPlan};
use crate::error::Result;

const CUR_SAMPLE: usize = 3;

/// diffusers' `PNDMScheduler` (PLMS steps only).
#[derive(Debug, Clone)]
pub struct Pndm {
    base: Base,
    final_alpha_cumprod: f64,
    n: usize,
    timesteps: Vec<i64>,
    timesteps_f: Vec<f64>,
    /// img2img's first step: diffusers' PLMS `counter` (and its `ets`) start at 0 there.
    begin: usize,
}

impl Pndm {
    pub fn new(cfg: &SchedulerConfig) -> Result<Pndm> {
        let base = Base::new(cfg, CLASS.name, Spacing::Leading, &[])?;
        if !cfg.skip_prk_steps.unwrap_or(false) {
            return Err(super::unsupported(
                base.class,
                "skip_prk_steps",
                false,
                "true (PLMS steps only; Runge-Kutta warm-up steps are not implemented)",
            ));
        }
        let final_alpha_cumprod = if cfg.set_alpha_to_one.unwrap_or(false) {
            1.0
        } else {
            base.alphas_cumprod[0]
        };
        Ok(Pndm {
            base,
            final_alpha_cumprod,
            n: 0,
            timesteps: Vec::new(),
            timesteps_f: Vec::new(),
            begin: 0,
        })
    }

    fn alpha(&self, t: i64) -> Result<f64> {
        self.base.alpha_at(t).ok_or_else(|| {
            super::unsupported(
                self.base.class,
                "timestep",
                t,
                "within num_train_timesteps (check steps_offset)",
            )
        })
    }
}

impl Scheduler for Pndm {
    fn class_name(&self) -> &'static str {
        self.base.class
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        self.base.check_steps(n)?;
        let t = self.base.num_train_timesteps;
        // `_timesteps`, ascending.
        let mut asc = match self.base.spacing {
            Spacing::Linspace => betas::linspace_int((t - 1) as f64, n),
            Spacing::Leading => betas::leading(t, n, self.base.steps_offset),
            Spacing::Trailing => betas::trailing(t, t, n),
        };
        asc.reverse();
        // plms = concat(ts[:-1], ts[-2:-1], ts[-1:])[::-1]: the second-to-last repeated.
        let mut plms = asc[..asc.len() - 1].to_vec();
        if asc.len() >= 2 {
            plms.push(asc[asc.len() - 2]);
        }
        plms.push(asc[asc.len() - 1]);
        plms.reverse();
        self.timesteps_f = plms.iter().map(|&v| v as f64).collect();
        self.timesteps = plms;
        self.n = n;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps_f
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn history_slots(&self) -> usize {
        4
    }

    /// PNDMScheduler has no `set_begin_index`; the img2img pipeline hands it the
    /// timesteps from `begin` on, and its `counter` counts from 0 there.
    fn set_begin_index(&mut self, begin: usize) -> Result<()> {
        self.begin = begin;
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

    fn step(&self, step_index: usize) -> Result<StepPlan> {
        let len = self.timesteps.len();
        let t0 = *self
            .timesteps
            .get(step_index)
            .ok_or_else(|| super::step_out_of_range(self.base.class, step_index, len))?;
        // The PLMS counter.
        let i = step_index
            .checked_sub(self.begin)
            .ok_or_else(|| super::step_out_of_range(self.base.class, step_index, len))?;
        let ratio = (self.base.num_train_timesteps / self.n) as i64;
        let (t, prev) = if i == 1 {
            (t0 + ratio, t0)
        } else {
            (t0, t0 - ratio)
        };
        // Which `ets` entry step i appends (step 1 appends none) and where it lives.
        let slot = |j: usize| j % 3;
        let mut writes = [None; super::SLOTS];
        let (combined, sample) = if i == 0 {
            writes[slot(0)] = Some(Lin::e(1.0));
            writes[CUR_SAMPLE] = Some(Lin::x(1.0));
            (Lin::e(1.0), Lin::x(1.0))
        } else if i == 1 {
            (Lin::e(0.5) + Lin::h(slot(0), 0.5), Lin::h(CUR_SAMPLE, 1.0))
        } else {
            let j = i - 1;
            writes[slot(j)] = Some(Lin::e(1.0));
            let past = |k: usize, c: f64| Lin::h(slot(j - k), c);
            let c = match i.min(4) {
                2 => (Lin::e(3.0) - past(1, 1.0)) * (1.0 / 2.0),
                3 => (Lin::e(23.0) - past(1, 16.0) + past(2, 5.0)) * (1.0 / 12.0),
                _ => (Lin::e(55.0) - past(1, 59.0) + past(2, 37.0) - past(3, 9.0)) * (1.0 / 24.0),
            };
            (c, Lin::x(1.0))
        };
        let a_t = self.alpha(t)?;
        let a_prev = if prev >= 0 {
            self.alpha(prev)?
        } else {
            self.final_alpha_cumprod
        };
        let (b_t, b_prev) = (1.0 - a_t, 1.0 - a_prev);
        let eps = match self.base.prediction {
            Prediction::Epsilon => combined,
            Prediction::V => combined * a_t.sqrt() + sample * b_t.sqrt(),
        };
        let sample_coeff = (a_prev / a_t).sqrt();
        let denom = a_t * b_prev.sqrt() + (a_t * b_t * a_prev).sqrt();
        Ok(StepPlan {
            derived: None,
            out: sample * sample_coeff - eps * ((a_prev - a_t) / denom),
            writes,
            draws_noise: false,
        })
    }
}

/// The registry's entry for this class.
pub(super) const CLASS: ClassDef = ClassDef {
    name: "PNDMScheduler",
    build,
};

fn build(cfg: &SchedulerConfig) -> Result<Box<dyn Scheduler>> {
    Ok(Box::new(Pndm::new(cfg)?))
}

/// The samplers built on this class (the plain one first).
pub(super) const SAMPLERS: &[SamplerDef] = &[SamplerDef {
    name: "pndm",
    a1111: "PLMS",
    aliases: &["plms"],
    class: &CLASS,
    overrides: Overrides::NONE,
}];
