//! `LMSDiscreteScheduler` (linear multistep, order 4 as the pipeline calls it).
//!
//! History slots 0..2 hold past derivatives: step `i`'s in slot `i % 3`.

use super::euler::{SigmaSchedule, derivative};
use super::registry::{ClassDef, Overrides, SamplerDef};
use super::{Base, Lin, Scheduler, SchedulerConfig, Spacing, StepPlan};
use crate::error::Result;

const ORDER: usize = 4;

/// diffusers' `LMSDiscreteScheduler`.
#[derive(Debug, Clone)]
pub struct LmsDiscrete {
    base: Base,
    sched: SigmaSchedule,
    /// `set_begin_index`: the derivatives list starts empty here.
    begin: usize,
}

impl LmsDiscrete {
    pub fn new(cfg: &SchedulerConfig) -> Result<LmsDiscrete> {
        let base = Base::new(
            cfg,
            CLASS.name,
            Spacing::Linspace,
            &[
                ("use_exponential_sigmas", cfg.use_exponential_sigmas),
                ("use_beta_sigmas", cfg.use_beta_sigmas),
            ],
        )?;
        let sched = SigmaSchedule::new(&base, cfg.use_karras_sigmas.unwrap_or(false));
        Ok(LmsDiscrete {
            base,
            sched,
            begin: 0,
        })
    }

    /// `get_lms_coefficient`: the integral over [sigmas[i], sigmas[i+1]] of the Lagrange
    /// basis polynomial `k` on the nodes sigmas[i], sigmas[i-1], ... (degree <= 3, so
    /// 3-point Gauss-Legendre is exact; diffusers uses scipy's quad).
    fn coefficient(&self, order: usize, i: usize, k: usize) -> f64 {
        let s = &self.sched.sigmas;
        let basis = |tau: f64| {
            (0..order)
                .filter(|&m| m != k)
                .map(|m| (tau - s[i - m]) / (s[i - k] - s[i - m]))
                .product::<f64>()
        };
        let (a, b) = (s[i], s[i + 1]);
        let (mid, half) = ((a + b) / 2.0, (b - a) / 2.0);
        let r = (0.6f64).sqrt();
        half * (5.0 / 9.0 * basis(mid - half * r)
            + 8.0 / 9.0 * basis(mid)
            + 5.0 / 9.0 * basis(mid + half * r))
    }
}

impl Scheduler for LmsDiscrete {
    fn class_name(&self) -> &'static str {
        self.base.class
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

    fn history_slots(&self) -> usize {
        ORDER - 1
    }

    fn set_begin_index(&mut self, begin: usize) -> Result<()> {
        self.begin = begin;
        Ok(())
    }

    fn step(&self, i: usize) -> Result<StepPlan> {
        let (sigma, _) = self.sched.pair(self.base.class, i)?;
        let d = derivative(self.base.prediction, sigma);
        let order = (i + 1).min(ORDER);
        let mut out = Lin::x(1.0) + d * self.coefficient(order, i, 0);
        // diffusers zips the coefficients with the derivatives it has: after a late
        // start (img2img's begin index) fewer than `order`, with `order`'s coefficients.
        let have = (i + 1).saturating_sub(self.begin);
        for k in 1..order.min(have) {
            out = out + Lin::h((i - k) % (ORDER - 1), self.coefficient(order, i, k));
        }
        let mut writes = [None; super::SLOTS];
        writes[i % (ORDER - 1)] = Some(d);
        Ok(StepPlan {
            out,
            writes,
            ..StepPlan::default()
        })
    }
}

/// The registry's entry for this class.
pub(super) const CLASS: ClassDef = ClassDef {
    name: "LMSDiscreteScheduler",
    build,
};

fn build(cfg: &SchedulerConfig) -> Result<Box<dyn Scheduler>> {
    Ok(Box::new(LmsDiscrete::new(cfg)?))
}

/// The samplers built on this class (the plain one first).
pub(super) const SAMPLERS: &[SamplerDef] = &[
    SamplerDef {
        name: "lms",
        a1111: "LMS",
        aliases: &[],
        class: &CLASS,
        overrides: Overrides::NONE,
    },
    SamplerDef {
        name: "lms_karras",
        a1111: "LMS Karras",
        aliases: &["lms-karras"],
        class: &CLASS,
        overrides: Overrides::KARRAS,
    },
];
