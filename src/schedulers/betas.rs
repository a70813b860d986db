//! The training noise schedule and the numpy/torch helpers the schedulers share, written
//! to round like diffusers does: betas, alphas and `alphas_cumprod` are float32 torch
//! tensors there, timestep grids come from numpy in float64.

use super::unsupported;
use crate::error::Result;

/// `torch.linspace(start, end, steps, dtype=float32)` (torch's two-sided formula).
fn linspace_f32(start: f64, end: f64, steps: usize) -> Vec<f32> {
    let (s, e) = (start as f32, end as f32);
    if steps == 1 {
        return vec![s];
    }
    let step = (e - s) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                s + step * i as f32
            } else {
                e - step * (steps - i - 1) as f32
            }
        })
        .collect()
}

/// diffusers' `betas_for_alpha_bar` with the cosine transform (`squaredcos_cap_v2`).
fn cosine_betas(n: usize) -> Vec<f32> {
    let alpha_bar = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
            .cos()
            .powi(2)
    };
    (0..n)
        .map(|i| {
            let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect()
}

/// `alphas_cumprod` of a class's `__init__`, as float32 values (torch's CPU cumprod
/// accumulates in double and rounds each output to float).
pub fn alphas_cumprod(
    class: &str,
    n: usize,
    beta_start: f64,
    beta_end: f64,
    schedule: &str,
    trained: Option<&[f64]>,
) -> Result<Vec<f64>> {
    let betas: Vec<f32> = match (trained, schedule) {
        (Some(b), _) => {
            if b.len() != n {
                return Err(unsupported(
                    class,
                    "trained_betas",
                    format!("{} values", b.len()),
                    "num_train_timesteps values",
                ));
            }
            b.iter().map(|&v| v as f32).collect()
        }
        (None, "linear") => linspace_f32(beta_start, beta_end, n),
        (None, "scaled_linear") => linspace_f32(beta_start.sqrt(), beta_end.sqrt(), n)
            .into_iter()
            .map(|b| b * b)
            .collect(),
        (None, "squaredcos_cap_v2") => cosine_betas(n),
        (None, other) => {
            return Err(unsupported(
                class,
                "beta_schedule",
                other,
                "linear, scaled_linear, squaredcos_cap_v2",
            ));
        }
    };
    let mut acc = 1.0f64;
    Ok(betas
        .iter()
        .map(|&b| {
            acc *= f64::from(1.0f32 - b);
            f64::from(acc as f32)
        })
        .collect())
}

/// `((1 - ac) / ac) ** 0.5` in float32, as the sigma-based schedulers compute it.
pub fn sigma_table(alphas_cumprod: &[f64]) -> Vec<f64> {
    alphas_cumprod
        .iter()
        .map(|&a| {
            let a = a as f32;
            f64::from(((1.0 - a) / a).sqrt())
        })
        .collect()
}

/// `np.linspace(start, stop, num)` (float64).
pub fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    if let Some(last) = v.last_mut() {
        *last = stop;
    }
    v
}

/// `np.arange(start, 0, -step)` (float64, `step > 0`).
pub fn np_arange_down(start: f64, step: f64) -> Vec<f64> {
    let len = (start / step).ceil().max(0.0) as usize;
    (0..len).map(|i| start + i as f64 * -step).collect()
}

/// `np.round` (half to even).
pub fn np_round(v: f64) -> f64 {
    v.round_ties_even()
}

/// `np.interp(x, np.arange(len(fp)), fp)`.
pub fn interp_index(x: f64, fp: &[f64]) -> f64 {
    let last = fp.len().saturating_sub(1);
    if fp.is_empty() {
        return f64::NAN;
    }
    if x <= 0.0 {
        return fp[0];
    }
    if x >= last as f64 {
        return fp[last];
    }
    let j = x.floor() as usize;
    if x == j as f64 {
        return fp[j];
    }
    (fp[j + 1] - fp[j]) * (x - j as f64) + fp[j]
}

/// `(np.arange(0, n) * (T // n)).round()[::-1] + offset`: leading spacing (descending).
pub fn leading(num_train: usize, n: usize, offset: i64) -> Vec<i64> {
    let ratio = (num_train / n) as i64;
    (0..n as i64).rev().map(|i| i * ratio + offset).collect()
}

/// `np.round(np.arange(T, 0, -T / n)) - 1`: trailing spacing (descending).
pub fn trailing(start: usize, num_train: usize, n: usize) -> Vec<i64> {
    np_arange_down(start as f64, num_train as f64 / n as f64)
        .into_iter()
        .map(|v| np_round(v) as i64 - 1)
        .collect()
}

/// `np.linspace(0, last, n).round()[::-1]` as integers (descending).
pub fn linspace_int(last: f64, n: usize) -> Vec<i64> {
    np_linspace(0.0, last, n)
        .into_iter()
        .rev()
        .map(|v| np_round(v) as i64)
        .collect()
}

/// float32 `(max_sigma ** 2 + 1) ** 0.5` or `max_sigma`, diffusers' `init_noise_sigma` for
/// Euler / Euler ancestral / LMS.
pub fn sigma_init_noise(sigmas: &[f64], leading: bool) -> f64 {
    let max = sigmas.iter().copied().fold(0.0f64, f64::max) as f32;
    if leading {
        f64::from((max * max + 1.0).sqrt())
    } else {
        f64::from(max)
    }
}

/// `1 / ((sigma ** 2 + 1) ** 0.5)` with the denominator in float32 like torch.
pub fn input_scale(sigma: f64) -> f64 {
    let s = sigma as f32;
    1.0 / f64::from((s * s + 1.0).sqrt())
}

/// The float32 timestep grid of Euler, Euler ancestral and LMS (descending).
pub fn float_timesteps(
    spacing: super::Spacing,
    num_train: usize,
    n: usize,
    offset: i64,
) -> Vec<f64> {
    let grid: Vec<f32> = match spacing {
        super::Spacing::Linspace => np_linspace(0.0, (num_train - 1) as f64, n)
            .into_iter()
            .rev()
            .map(|v| v as f32)
            .collect(),
        super::Spacing::Leading => leading(num_train, n, 0)
            .into_iter()
            .map(|v| v as f32 + offset as f32)
            .collect(),
        super::Spacing::Trailing => np_arange_down(num_train as f64, num_train as f64 / n as f64)
            .into_iter()
            .map(|v| np_round(v) as f32 - 1.0)
            .collect(),
    };
    grid.into_iter().map(f64::from).collect()
}

/// Sigmas at (possibly fractional) timesteps, then `last` appended, all rounded to
/// float32 as diffusers stores them.
pub fn sigmas_at(table: &[f64], timesteps: &[f64], last: f64) -> Vec<f64> {
    timesteps
        .iter()
        .map(|&t| interp_index(t, table))
        .chain(std::iter::once(last))
        .map(|s| f64::from(s as f32))
        .collect()
}
