//! `UniPCMultistepScheduler` (UniPC: a unified predictor-corrector, Zhao et al. 2023) with
//! `predict_x0 = True`, solver types `bh1` / `bh2`, orders 1 to 3, with or without Karras
//! sigmas.
//!
//! A diffusers step first corrects the incoming sample with the new model output (UniC,
//! using the previous step's sample and predictions), then predicts the next sample from
//! the corrected one (UniP). Both are linear in the latents, the model output and the
//! history, so the whole step is one [`StepPlan`]:
//!
//! - slot 0: the previous step's corrected sample (diffusers' `last_sample`);
//! - slots 1..=order: past predicted x0, newest first (`model_outputs[-1]`, `[-2]`, ...).
//!
//! Each step writes the corrected sample to slot 0, the new x0 to slot 1 and shifts the
//! older ones down (the kernel reads every slot before it writes any).

use super::betas;
use super::registry::{ClassDef, Overrides, SamplerDef};
use super::{Base, Lin, Prediction, Scheduler, SchedulerConfig, Spacing, StepPlan};
use crate::error::Result;

/// diffusers' `UniPCMultistepScheduler` (`predict_x0 = True`, no `solver_p`).
#[derive(Debug, Clone)]
pub struct UniPcMultistep {
    base: Base,
    order: usize,
    /// `solver_type == "bh2"` (`B(h) = e^h - 1`); `bh1` uses `B(h) = h`.
    bh2: bool,
    lower_order_final: bool,
    disable_corrector: Vec<i64>,
    karras: bool,
    final_zero: bool,
    table: Vec<f64>,
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    /// `set_begin_index`: `lower_order_nums` and the corrector's history start here.
    begin: usize,
}

/// `(alpha_t, lambda_t)` of a sigma (`_sigma_to_alpha_sigma_t`, then `log a - log s`).
fn alpha_lambda(sigma: f64) -> (f64, f64) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, alpha.ln() - (sigma * alpha).ln())
}

/// Solves the `k x k` system `r x = b` (k <= 3) by Gaussian elimination with pivoting.
fn solve(mut r: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let k = b.len();
    for col in 0..k {
        let pivot = (col..k)
            .max_by(|&i, &j| r[i][col].abs().total_cmp(&r[j][col].abs()))
            .unwrap_or(col);
        r.swap(col, pivot);
        b.swap(col, pivot);
        let pivot_row = r[col].clone();
        for row in col + 1..k {
            let f = r[row][col] / pivot_row[col];
            for (v, p) in r[row].iter_mut().zip(&pivot_row).skip(col) {
                *v -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0; k];
    for row in (0..k).rev() {
        let tail: f64 = (row + 1..k).map(|c| r[row][c] * x[c]).sum();
        x[row] = (b[row] - tail) / r[row][row];
    }
    x
}

/// The scalars of one UniP / UniC update of order `order` from `sigma_s0` to `sigma_t`:
/// `rks` of the earlier nodes, `R`, `b`, `h_phi_1` and `B(h)`.
struct Update {
    alpha_t: f64,
    sample_coef: f64,
    h_phi_1: f64,
    b_h: f64,
    rks: Vec<f64>,
    r: Vec<Vec<f64>>,
    b: Vec<f64>,
}

impl UniPcMultistep {
    pub fn new(cfg: &SchedulerConfig) -> Result<UniPcMultistep> {
        let base = Base::new(
            cfg,
            CLASS.name,
            Spacing::Linspace,
            &[
                ("thresholding", cfg.thresholding),
                ("use_exponential_sigmas", cfg.use_exponential_sigmas),
                ("use_beta_sigmas", cfg.use_beta_sigmas),
                ("use_flow_sigmas", cfg.use_flow_sigmas),
                ("use_dynamic_shifting", cfg.use_dynamic_shifting),
                ("rescale_betas_zero_snr", cfg.rescale_betas_zero_snr),
            ],
        )?;
        let class = base.class;
        if cfg.predict_x0 == Some(false) {
            return Err(super::unsupported(class, "predict_x0", false, "true"));
        }
        // diffusers maps midpoint/heun/logrho to bh2.
        let bh2 = match cfg.solver_type.as_deref().unwrap_or("bh2") {
            "bh2" | "midpoint" | "heun" | "logrho" => true,
            "bh1" => false,
            other => return Err(super::unsupported(class, "solver_type", other, "bh1, bh2")),
        };
        let order = match cfg.solver_order.unwrap_or(2) {
            o @ 1..=3 => o as usize,
            other => return Err(super::unsupported(class, "solver_order", other, "1, 2, 3")),
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
        let table = betas::sigma_table(&base.alphas_cumprod);
        Ok(UniPcMultistep {
            base,
            order,
            bh2,
            lower_order_final: cfg.lower_order_final.unwrap_or(true),
            disable_corrector: cfg.disable_corrector.clone().unwrap_or_default(),
            karras: cfg.use_karras_sigmas.unwrap_or(false),
            final_zero,
            table,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            begin: 0,
        })
    }

    /// The predictor's order at step `i` (`this_order`): warm-up from 1, and lower at the
    /// end of short schedules with `lower_order_final`.
    fn predictor_order(&self, i: usize) -> usize {
        let mut k = self.order;
        if self.lower_order_final {
            k = k.min(self.timesteps.len() - i);
        }
        k.min(i + 1 - self.begin.min(i))
    }

    /// The update from `sigmas[s0]` to `sigmas[t]` of order `order`, whose earlier nodes
    /// are `sigmas[s0 - 1]`, `sigmas[s0 - 2]`, ...
    fn update(&self, t: usize, s0: usize, order: usize) -> Update {
        let (alpha_t, lambda_t) = alpha_lambda(self.sigmas[t]);
        let (alpha_s0, lambda_s0) = alpha_lambda(self.sigmas[s0]);
        let h = lambda_t - lambda_s0;
        let mut rks: Vec<f64> = (1..order)
            .map(|j| (alpha_lambda(self.sigmas[s0 - j]).1 - lambda_s0) / h)
            .collect();
        rks.push(1.0);
        let hh = -h;
        let h_phi_1 = hh.exp_m1();
        let b_h = if self.bh2 { hh.exp_m1() } else { hh };
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let mut factorial = 1.0;
        let mut r = Vec::with_capacity(order);
        let mut b = Vec::with_capacity(order);
        for p in 1..=order {
            r.push(rks.iter().map(|&rk| rk.powi(p as i32 - 1)).collect());
            b.push(h_phi_k * factorial / b_h);
            factorial *= (p + 1) as f64;
            h_phi_k = h_phi_k / hh - 1.0 / factorial;
        }
        // sigma_t / sigma_s0 of diffusers' alpha/sigma pair (sigma * alpha).
        let sample_coef = self.sigmas[t] * alpha_t / (self.sigmas[s0] * alpha_s0);
        Update {
            alpha_t,
            sample_coef,
            h_phi_1,
            b_h,
            rks,
            r,
            b,
        }
    }

    /// The predicted x0 at step `i` from the (uncorrected) sample and the model output.
    fn x0(&self, i: usize) -> Lin {
        let sigma = self.sigmas[i];
        let (alpha, _) = alpha_lambda(sigma);
        let sigma_t = sigma * alpha;
        match self.base.prediction {
            Prediction::Epsilon => (Lin::x(1.0) - Lin::e(sigma_t)) * (1.0 / alpha),
            Prediction::V => Lin::x(alpha) - Lin::e(sigma_t),
        }
    }
}

impl Scheduler for UniPcMultistep {
    fn class_name(&self) -> &'static str {
        self.base.class
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        self.base.check_steps(n)?;
        let t = self.base.num_train_timesteps;
        let ts: Vec<i64> = match self.base.spacing {
            Spacing::Linspace => {
                let mut v = betas::linspace_int(t as f64 - 1.0, n + 1);
                v.pop();
                v
            }
            Spacing::Leading => {
                let ratio = (t / (n + 1)) as i64;
                (1..=n as i64)
                    .rev()
                    .map(|i| i * ratio + self.base.steps_offset)
                    .collect()
            }
            Spacing::Trailing => betas::trailing(t, t, n),
        };
        if self.karras {
            let (timesteps, levels) = super::karras::over_table(&self.table, n, false)
                .ok_or_else(|| super::step_out_of_range(self.base.class, 0, 0))?;
            let last = if self.final_zero {
                0.0
            } else {
                levels.last().copied().unwrap_or(0.0)
            };
            self.timesteps = timesteps;
            self.sigmas = super::karras::with_last(levels, last);
        } else {
            self.timesteps = ts.iter().map(|&v| v as f64).collect();
            let last = if self.final_zero { 0.0 } else { self.table[0] };
            self.sigmas = betas::sigmas_at(&self.table, &self.timesteps, last);
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
        1 + self.order
    }

    fn set_begin_index(&mut self, begin: usize) -> Result<()> {
        self.begin = begin;
        Ok(())
    }

    /// `alpha_t * x + sigma_t * noise` at `sigmas[i]` (`_sigma_to_alpha_sigma_t`).
    fn add_noise_coeffs(&self, i: usize) -> Result<(f64, f64)> {
        match self.sigmas.get(i) {
            Some(&s) if i < self.timesteps.len() => {
                let alpha_t = 1.0 / (s * s + 1.0).sqrt();
                Ok((alpha_t, s * alpha_t))
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
        let m_t = self.x0(i);
        // Past predictions: m(1) = model_outputs[-1] before this step, m(2) = [-2], ...
        let m = |j: usize| Lin::h(j, 1.0);

        // UniC: correct the incoming sample with this step's prediction.
        let use_corrector = i > self.begin && !self.disable_corrector.contains(&(i as i64 - 1));
        let sample = if use_corrector {
            let k = self.predictor_order(i - 1);
            let u = self.update(i, i - 1, k);
            let rhos = if k == 1 {
                vec![0.5]
            } else {
                solve(u.r.clone(), u.b.clone())
            };
            let mut corr = (m_t - m(1)) * rhos[k - 1];
            for j in 1..k {
                corr = corr + (m(j + 1) - m(1)) * (rhos[j - 1] / u.rks[j - 1]);
            }
            Lin::h(0, u.sample_coef) - m(1) * (u.alpha_t * u.h_phi_1) - corr * (u.alpha_t * u.b_h)
        } else {
            Lin::x(1.0)
        };

        // UniP: predict the next sample from the corrected one. After this step's shift,
        // model_outputs[-1] is m_t and [-(j+1)] is m(j).
        let k = self.predictor_order(i);
        let u = self.update(i + 1, i, k);
        let mut out = sample * u.sample_coef - m_t * (u.alpha_t * u.h_phi_1);
        if k >= 2 {
            let rhos = if k == 2 {
                vec![0.5]
            } else {
                let r: Vec<Vec<f64>> = u.r[..k - 1]
                    .iter()
                    .map(|row| row[..k - 1].to_vec())
                    .collect();
                solve(r, u.b[..k - 1].to_vec())
            };
            let mut res = Lin::default();
            for j in 1..k {
                res = res + (m(j) - m_t) * (rhos[j - 1] / u.rks[j - 1]);
            }
            out = out - res * (u.alpha_t * u.b_h);
        }

        let mut writes = [None; super::SLOTS];
        writes[0] = Some(sample);
        writes[1] = Some(m_t);
        // Shift only slots already written (slot j holds data from step j - 1 on): the
        // kernel would otherwise read a never-written buffer.
        for (j, w) in writes.iter_mut().enumerate().take(self.order + 1).skip(2) {
            if i + 1 >= j + self.begin {
                *w = Some(m(j - 1));
            }
        }
        Ok(StepPlan {
            out,
            writes,
            ..StepPlan::default()
        })
    }
}

/// The registry's entry for this class.
pub(super) const CLASS: ClassDef = ClassDef {
    name: "UniPCMultistepScheduler",
    build,
};

fn build(cfg: &SchedulerConfig) -> Result<Box<dyn Scheduler>> {
    Ok(Box::new(UniPcMultistep::new(cfg)?))
}

/// The samplers built on this class (the plain one first).
pub(super) const SAMPLERS: &[SamplerDef] = &[SamplerDef {
    name: "unipc",
    a1111: "UniPC",
    aliases: &["uni_pc", "uni-pc"],
    class: &CLASS,
    overrides: Overrides::NONE,
}];

#[cfg(test)]
mod tests {
    use super::solve;

    #[test]
    fn solves_small_systems() {
        let x = solve(
            vec![
                vec![1.0, 1.0, 1.0],
                vec![0.5, -1.0, 1.0],
                vec![0.25, 1.0, 1.0],
            ],
            vec![6.0, 1.5, 4.75],
        );
        // 1*1 + 2 + 3 = 6; 0.5 - 2 + 3 = 1.5; 0.25 + 2 + 3 ... check by substitution.
        let r = [[1.0, 1.0, 1.0], [0.5, -1.0, 1.0], [0.25, 1.0, 1.0]];
        let b = [6.0, 1.5, 4.75];
        for (row, want) in r.iter().zip(b) {
            let got: f64 = row.iter().zip(&x).map(|(a, v)| a * v).sum();
            assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        }
    }
}
