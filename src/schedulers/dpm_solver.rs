//! `DPMSolverMultistepScheduler` with `algorithm_type = "dpmsolver++"` (DPM++ 2M) or
//! `"sde-dpmsolver++"` (DPM++ 2M SDE: fresh noise every step), orders 1 and 2, midpoint or
//! heun, with or without Karras sigmas.
//!
//! History slot 0 holds the previous step's predicted x0 (diffusers' `model_outputs[-2]`).

use super::betas;
use super::registry::{ClassDef, Overrides, SamplerDef};
use super::{Base, Lin, Prediction, Scheduler, SchedulerConfig, Spacing, StepPlan};
use crate::error::Result;

/// diffusers' `DPMSolverMultistepScheduler` (dpmsolver++ only).
#[derive(Debug, Clone)]
pub struct DpmSolverMultistep {
    base: Base,
    order: usize,
    heun: bool,
    /// `sde-dpmsolver++`.
    sde: bool,
    karras: bool,
    lower_order_final: bool,
    euler_at_final: bool,
    final_zero: bool,
    lambda_min_clipped: f64,
    table: Vec<f64>,
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    /// `set_begin_index`: `lower_order_nums` counts from here.
    begin: usize,
}

/// `(alpha_t, sigma_t, lambda_t)` of a sigma (`_sigma_to_alpha_sigma_t`).
fn alpha_sigma_lambda(sigma: f64) -> (f64, f64, f64) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    let s = sigma * alpha;
    (alpha, s, alpha.ln() - s.ln())
}

impl DpmSolverMultistep {
    pub fn new(cfg: &SchedulerConfig) -> Result<DpmSolverMultistep> {
        let base = Base::new(
            cfg,
            CLASS.name,
            Spacing::Linspace,
            &[
                ("thresholding", cfg.thresholding),
                ("use_exponential_sigmas", cfg.use_exponential_sigmas),
                ("use_beta_sigmas", cfg.use_beta_sigmas),
                ("use_lu_lambdas", cfg.use_lu_lambdas),
                ("use_flow_sigmas", cfg.use_flow_sigmas),
                ("use_dynamic_shifting", cfg.use_dynamic_shifting),
                ("rescale_betas_zero_snr", cfg.rescale_betas_zero_snr),
            ],
        )?;
        let class = base.class;
        let sde = match cfg.algorithm_type.as_deref().unwrap_or("dpmsolver++") {
            "dpmsolver++" => false,
            "sde-dpmsolver++" => true,
            other => {
                return Err(super::unsupported(
                    class,
                    "algorithm_type",
                    other,
                    "dpmsolver++, sde-dpmsolver++",
                ));
            }
        };
        // diffusers maps the retired solver types logrho/bh1/bh2 to midpoint.
        let heun = match cfg.solver_type.as_deref().unwrap_or("midpoint") {
            "midpoint" | "logrho" | "bh1" | "bh2" => false,
            "heun" => true,
            other => {
                return Err(super::unsupported(
                    class,
                    "solver_type",
                    other,
                    "midpoint, heun",
                ));
            }
        };
        let order = match cfg.solver_order.unwrap_or(2) {
            1 => 1,
            2 => 2,
            other => return Err(super::unsupported(class, "solver_order", other, "1, 2")),
        };
        let final_zero = match cfg.final_sigmas_type.as_deref().unwrap_or("zero") {
            "zero" => true,
            "sigma_min" => false,
            other => {
                return Err(super::unsupported(
                    class,
                    "final_sigmas_type",
                    other,
                    "zero, sigma_min",
                ));
            }
        };
        if let Some(v) = &cfg.variance_type {
            return Err(super::unsupported(class, "variance_type", v, "null"));
        }
        let table = betas::sigma_table(&base.alphas_cumprod);
        Ok(DpmSolverMultistep {
            base,
            order,
            heun,
            sde,
            karras: cfg.use_karras_sigmas.unwrap_or(false),
            lower_order_final: cfg.lower_order_final.unwrap_or(true),
            euler_at_final: cfg.euler_at_final.unwrap_or(false),
            final_zero,
            lambda_min_clipped: cfg.lambda_min_clipped.unwrap_or(f64::NEG_INFINITY),
            table,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            begin: 0,
        })
    }

    /// `num_train_timesteps - searchsorted(flip(lambda_t), lambda_min_clipped)`.
    fn last_timestep(&self) -> usize {
        let clipped = self
            .base
            .alphas_cumprod
            .iter()
            .filter(|&&a| {
                let a = a as f32;
                let lambda = a.sqrt().ln() - (1.0 - a).sqrt().ln();
                f64::from(lambda) < self.lambda_min_clipped
            })
            .count();
        self.base.num_train_timesteps - clipped
    }
}

impl Scheduler for DpmSolverMultistep {
    fn class_name(&self) -> &'static str {
        self.base.class
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        self.base.check_steps(n)?;
        let t = self.base.num_train_timesteps;
        let last = self.last_timestep();
        let ts: Vec<i64> = match self.base.spacing {
            Spacing::Linspace => {
                let mut v = betas::linspace_int(last as f64 - 1.0, n + 1);
                v.pop();
                v
            }
            Spacing::Leading => {
                let ratio = (last / (n + 1)) as i64;
                (1..=n as i64)
                    .rev()
                    .map(|i| i * ratio + self.base.steps_offset)
                    .collect()
            }
            Spacing::Trailing => betas::trailing(last, t, n),
        };
        let final_sigma = if self.final_zero { 0.0 } else { self.table[0] };
        if self.karras {
            let cosine = self.base.beta_schedule == "squaredcos_cap_v2";
            let (timesteps, levels) = super::karras::over_table(&self.table, n, cosine)
                .ok_or_else(|| super::step_out_of_range(self.base.class, 0, 0))?;
            self.timesteps = timesteps;
            self.sigmas = super::karras::with_last(levels, final_sigma);
        } else {
            self.timesteps = ts.iter().map(|&v| v as f64).collect();
            self.sigmas = betas::sigmas_at(&self.table, &self.timesteps, final_sigma);
        }
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.sigmas)
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn history_slots(&self) -> usize {
        usize::from(self.order == 2)
    }

    fn set_begin_index(&mut self, begin: usize) -> Result<()> {
        self.begin = begin;
        Ok(())
    }

    /// `alpha_t * x + sigma_t * noise` at `sigmas[i]` (`_sigma_to_alpha_sigma_t`).
    fn add_noise_coeffs(&self, i: usize) -> Result<(f64, f64)> {
        match self.sigmas.get(i) {
            Some(&s) if i < self.timesteps.len() => {
                let (alpha_t, sigma_t, _) = alpha_sigma_lambda(s);
                Ok((alpha_t, sigma_t))
            }
            _ => Err(super::step_out_of_range(
                self.base.class,
                i,
                self.timesteps.len(),
            )),
        }
    }

    fn step(&self, i: usize) -> Result<StepPlan> {
        let len = self.timesteps.len();
        if i >= len || i < self.begin || self.sigmas.len() != len + 1 {
            return Err(super::step_out_of_range(self.base.class, i, len));
        }
        let short = self.lower_order_final && len < 15;
        let lower_order_final = i == len - 1 && (self.euler_at_final || short || self.final_zero);
        let (alpha_s0, sigma_s0, lambda_s0) = alpha_sigma_lambda(self.sigmas[i]);
        let (alpha_t, sigma_t, lambda_t) = alpha_sigma_lambda(self.sigmas[i + 1]);
        let m0 = match self.base.prediction {
            Prediction::Epsilon => (Lin::x(1.0) - Lin::e(sigma_s0)) * (1.0 / alpha_s0),
            Prediction::V => Lin::x(alpha_s0) - Lin::e(sigma_s0),
        };
        let h = lambda_t - lambda_s0;
        // `lower_order_nums` is min(i, order) when step i starts.
        // (counted from the begin index, img2img's first step).
        let first_order = self.order == 1 || i < self.begin + 1 || lower_order_final;
        let d1 = || {
            let (_, _, lambda_s1) = alpha_sigma_lambda(self.sigmas[i - 1]);
            let r0 = (lambda_s0 - lambda_s1) / h;
            (m0 - Lin::h(0, 1.0)) * (1.0 / r0)
        };
        // With a final sigma of 0: sigma_t = 0, h = inf, so x_t = x0 exactly.
        let out = if self.sde {
            // x_t = sigma_t/sigma_s e^-h x + alpha_t (1 - e^-2h) (D0 + c D1)
            //       + sigma_t sqrt(1 - e^-2h) noise
            let e2 = (-2.0 * h).exp();
            let drift = Lin::x(sigma_t / sigma_s0 * (-h).exp()) + m0 * (alpha_t * (1.0 - e2));
            let noise = Lin::noise(sigma_t * (1.0 - e2).sqrt());
            if first_order {
                drift + noise
            } else {
                let c = if self.heun {
                    alpha_t * ((1.0 - e2) / (-2.0 * h) + 1.0)
                } else {
                    0.5 * (alpha_t * (1.0 - e2))
                };
                drift + d1() * c + noise
            }
        } else {
            let em1 = (-h).exp() - 1.0;
            let sample_coef = sigma_t / sigma_s0;
            if first_order {
                Lin::x(sample_coef) - m0 * (alpha_t * em1)
            } else {
                let d1_coef = if self.heun {
                    alpha_t * (em1 / h + 1.0)
                } else {
                    -0.5 * (alpha_t * em1)
                };
                Lin::x(sample_coef) - m0 * (alpha_t * em1) + d1() * d1_coef
            }
        };
        let mut writes = [None; super::SLOTS];
        if self.order == 2 {
            writes[0] = Some(m0);
        }
        Ok(StepPlan {
            out,
            writes,
            // diffusers draws the SDE noise at every step, the last one included.
            draws_noise: self.sde,
            ..StepPlan::default()
        })
    }
}

/// The registry's entry for this class.
pub(super) const CLASS: ClassDef = ClassDef {
    name: "DPMSolverMultistepScheduler",
    build,
};

fn build(cfg: &SchedulerConfig) -> Result<Box<dyn Scheduler>> {
    Ok(Box::new(DpmSolverMultistep::new(cfg)?))
}

/// The samplers built on this class (the plain one first).
pub(super) const SAMPLERS: &[SamplerDef] = &[
    SamplerDef {
        name: "dpm++2m",
        a1111: "DPM++ 2M",
        aliases: &[
            "dpm",
            "dpm++",
            "dpmpp2m",
            "dpmpp_2m",
            "dpm-solver",
            "dpmsolver",
        ],
        class: &CLASS,
        overrides: Overrides::NONE,
    },
    SamplerDef {
        name: "dpm++2m_karras",
        a1111: "DPM++ 2M Karras",
        aliases: &["dpmpp2m_karras", "dpmpp_2m_karras"],
        class: &CLASS,
        overrides: Overrides::KARRAS,
    },
    SamplerDef {
        name: "dpm++2m_sde",
        a1111: "DPM++ 2M SDE",
        aliases: &["dpmpp2m_sde", "dpmpp_2m_sde"],
        class: &CLASS,
        overrides: Overrides {
            use_karras_sigmas: None,
            algorithm_type: Some("sde-dpmsolver++"),
        },
    },
    SamplerDef {
        name: "dpm++2m_sde_karras",
        a1111: "DPM++ 2M SDE Karras",
        aliases: &["dpmpp2m_sde_karras", "dpmpp_2m_sde_karras"],
        class: &CLASS,
        overrides: Overrides {
            use_karras_sigmas: Some(true),
            algorithm_type: Some("sde-dpmsolver++"),
        },
    },
];
