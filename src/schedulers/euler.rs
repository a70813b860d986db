//! `EulerDiscreteScheduler` (s_churn = 0, as the Stable Diffusion pipeline calls it), with
//! or without Karras sigmas.

use super::betas;
use super::registry::{ClassDef, Overrides, SamplerDef};
use super::{Base, Lin, Prediction, Scheduler, SchedulerConfig, Spacing, StepPlan};
use crate::error::Result;

/// The predicted x0 of the sigma-parameterised schedulers (Euler, Euler ancestral, LMS):
/// `x - sigma * e` for epsilon, `e * (-sigma / sqrt(sigma^2 + 1)) + x / (sigma^2 + 1)` for v.
pub(crate) fn predicted_x0(pred: Prediction, sigma: f64) -> Lin {
    match pred {
        Prediction::Epsilon => Lin::x(1.0) + Lin::e(-sigma),
        Prediction::V => {
            let s2 = sigma * sigma + 1.0;
            Lin::e(-sigma / s2.sqrt()) + Lin::x(1.0 / s2)
        }
    }
}

/// `(x - x0) / sigma`.
pub(crate) fn derivative(pred: Prediction, sigma: f64) -> Lin {
    (Lin::x(1.0) - predicted_x0(pred, sigma)) * (1.0 / sigma)
}

/// Timesteps and sigmas of the sigma-based schedulers, shared by the three of them.
#[derive(Debug, Clone, Default)]
pub(crate) struct SigmaSchedule {
    pub table: Vec<f64>,
    /// `use_karras_sigmas`: Karras noise levels between the grid's first and last sigma,
    /// with fractional timesteps found back from them.
    pub karras: bool,
    pub timesteps: Vec<f64>,
    pub sigmas: Vec<f64>,
}

impl SigmaSchedule {
    pub fn new(base: &Base, karras: bool) -> SigmaSchedule {
        SigmaSchedule {
            table: betas::sigma_table(&base.alphas_cumprod),
            karras,
            ..SigmaSchedule::default()
        }
    }

    pub fn set(&mut self, base: &Base, n: usize, last: f64) -> Result<()> {
        base.check_steps(n)?;
        let grid =
            betas::float_timesteps(base.spacing, base.num_train_timesteps, n, base.steps_offset);
        if self.karras {
            let at = |t: f64| betas::interp_index(t, &self.table);
            let (max, min) = match (grid.first(), grid.last()) {
                (Some(&a), Some(&b)) => (at(a), at(b)),
                _ => return Err(super::step_out_of_range(base.class, 0, 0)),
            };
            let levels = super::karras::sigmas(max, min, n);
            let logs = super::karras::log_table(&self.table);
            self.timesteps = levels
                .iter()
                .map(|&s| f64::from(super::karras::sigma_to_t(s, &logs) as f32))
                .collect();
            self.sigmas = levels
                .into_iter()
                .chain(std::iter::once(last))
                .map(|s| f64::from(s as f32))
                .collect();
        } else {
            self.timesteps = grid;
            self.sigmas = betas::sigmas_at(&self.table, &self.timesteps, last);
        }
        Ok(())
    }

    /// diffusers' `init_noise_sigma` before and after `set_timesteps`.
    pub fn init_noise_sigma(&self, base: &Base) -> f64 {
        let leading = base.spacing == Spacing::Leading;
        if self.sigmas.is_empty() {
            betas::sigma_init_noise(&self.table, leading)
        } else {
            betas::sigma_init_noise(&self.sigmas, leading)
        }
    }

    /// `(sigmas[i], sigmas[i + 1])`.
    pub fn pair(&self, class: &str, i: usize) -> Result<(f64, f64)> {
        match (self.sigmas.get(i), self.sigmas.get(i + 1)) {
            (Some(&a), Some(&b)) => Ok((a, b)),
            _ => Err(super::step_out_of_range(class, i, self.timesteps.len())),
        }
    }

    pub fn input_scale(&self, i: usize) -> f64 {
        self.sigmas.get(i).map_or(1.0, |&s| betas::input_scale(s))
    }
}

/// diffusers' `EulerDiscreteScheduler`.
#[derive(Debug, Clone)]
pub struct EulerDiscrete {
    base: Base,
    sched: SigmaSchedule,
    last_sigma: f64,
}

impl EulerDiscrete {
    pub fn new(cfg: &SchedulerConfig) -> Result<EulerDiscrete> {
        let base = Base::new(
            cfg,
            CLASS.name,
            Spacing::Linspace,
            &[
                ("use_exponential_sigmas", cfg.use_exponential_sigmas),
                ("use_beta_sigmas", cfg.use_beta_sigmas),
                ("rescale_betas_zero_snr", cfg.rescale_betas_zero_snr),
            ],
        )?;
        let class = base.class;
        match cfg.interpolation_type.as_deref().unwrap_or("linear") {
            "linear" => {}
            other => {
                return Err(super::unsupported(
                    class,
                    "interpolation_type",
                    other,
                    "linear",
                ));
            }
        }
        if cfg.timestep_type.as_deref() == Some("continuous") && base.prediction == Prediction::V {
            return Err(super::unsupported(
                class,
                "timestep_type",
                "continuous",
                "discrete (continuous with v_prediction is not implemented)",
            ));
        }
        let sched = SigmaSchedule::new(&base, cfg.use_karras_sigmas.unwrap_or(false));
        let last_sigma = match cfg.final_sigmas_type.as_deref().unwrap_or("zero") {
            "zero" => 0.0,
            "sigma_min" => sched.table[0],
            other => {
                return Err(super::unsupported(
                    class,
                    "final_sigmas_type",
                    other,
                    "zero, sigma_min",
                ));
            }
        };
        Ok(EulerDiscrete {
            base,
            sched,
            last_sigma,
        })
    }
}

impl Scheduler for EulerDiscrete {
    fn class_name(&self) -> &'static str {
        self.base.class
    }

    /// Euler keeps no history: steps from the begin index are its ordinary steps.
    fn set_begin_index(&mut self, _begin: usize) -> Result<()> {
        Ok(())
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        self.sched.set(&self.base, n, self.last_sigma)
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
        let (sigma, next) = self.sched.pair(self.base.class, i)?;
        let d = derivative(self.base.prediction, sigma);
        Ok(StepPlan {
            out: Lin::x(1.0) + d * (next - sigma),
            ..StepPlan::default()
        })
    }
}

/// The registry's entry for this class.
pub(super) const CLASS: ClassDef = ClassDef {
    name: "EulerDiscreteScheduler",
    build,
};

fn build(cfg: &SchedulerConfig) -> Result<Box<dyn Scheduler>> {
    Ok(Box::new(EulerDiscrete::new(cfg)?))
}

/// The samplers built on this class (the plain one first).
pub(super) const SAMPLERS: &[SamplerDef] = &[
    SamplerDef {
        name: "euler",
        a1111: "Euler",
        aliases: &[],
        class: &CLASS,
        overrides: Overrides::NONE,
    },
    SamplerDef {
        name: "euler_karras",
        a1111: "Euler Karras",
        aliases: &["euler-karras"],
        class: &CLASS,
        overrides: Overrides::KARRAS,
    },
];
