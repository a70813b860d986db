//! Karras et al. (2022) noise levels, as diffusers' `use_karras_sigmas` computes them
//! (`_convert_to_karras` and `_sigma_to_t`, shared by Euler, LMS, DPM-Solver and UniPC).

/// diffusers' `rho`.
const RHO: f64 = 7.0;

/// `_convert_to_karras`: `n` sigmas from `sigma_max` down to `sigma_min`, evenly spaced in
/// `sigma ** (1 / 7)` (float64, as numpy computes them).
pub fn sigmas(sigma_max: f64, sigma_min: f64, n: usize) -> Vec<f64> {
    let min_inv_rho = sigma_min.powf(1.0 / RHO);
    let max_inv_rho = sigma_max.powf(1.0 / RHO);
    super::betas::np_linspace(0.0, 1.0, n)
        .into_iter()
        .map(|ramp| (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)).powf(RHO))
        .collect()
}

/// `np.log` of the float32 sigma table (`log_sigmas`, float32 values).
pub fn log_table(table: &[f64]) -> Vec<f32> {
    table.iter().map(|&s| (s as f32).ln()).collect()
}

/// `_sigma_to_t(sigma, log_sigmas)`: the fractional timestep whose (log-linearly
/// interpolated) sigma is `sigma`. `log_sigmas` is float32 as in diffusers; the
/// difference of two table entries is taken in float32 as numpy does for two float32
/// scalars.
pub fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let len = log_sigmas.len();
    if len < 2 {
        return 0.0;
    }
    let log_sigma = sigma.max(1e-10).ln();
    // cumsum(dists >= 0).argmax(): the last index of the leading run where
    // log_sigmas[i] <= log_sigma (0 when there is none), clipped to len - 2.
    let count = log_sigmas
        .iter()
        .take_while(|&&l| log_sigma - f64::from(l) >= 0.0)
        .count();
    let low_idx = count.saturating_sub(1).min(len - 2);
    let high_idx = low_idx + 1;
    let low = log_sigmas[low_idx];
    let high = log_sigmas[high_idx];
    let w = ((f64::from(low) - log_sigma) / f64::from(low - high)).clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * high_idx as f64
}

/// Karras levels over a whole sigma table (DPM-Solver, UniPC: whatever the spacing): `n`
/// levels from the table's largest sigma to its smallest, and the integer timesteps found
/// back from them (truncated instead of rounded when `truncate`, as diffusers skips the
/// rounding for the cosine schedule and `astype(int64)` truncates). `None` for an empty
/// table.
pub fn over_table(table: &[f64], n: usize, truncate: bool) -> Option<(Vec<f64>, Vec<f64>)> {
    let (&min, &max) = (table.first()?, table.last()?);
    let levels = sigmas(max, min, n);
    let logs = log_table(table);
    let timesteps = levels
        .iter()
        .map(|&s| {
            let t = sigma_to_t(s, &logs);
            if truncate {
                t.trunc()
            } else {
                super::betas::np_round(t)
            }
        })
        .collect();
    Some((timesteps, levels))
}

/// `levels` then `last`, rounded to float32 as diffusers stores sigmas.
pub fn with_last(levels: Vec<f64>, last: f64) -> Vec<f64> {
    levels
        .into_iter()
        .chain(std::iter::once(last))
        .map(|s| f64::from(s as f32))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn karras_endpoints_and_monotone() {
        let s = sigmas(14.6, 0.03, 10);
        assert_eq!(s.len(), 10);
        assert!((s[0] - 14.6).abs() < 1e-12 && (s[9] - 0.03).abs() < 1e-12);
        assert!(s.windows(2).all(|w| w[0] > w[1]));
    }

    #[test]
    fn sigma_to_t_inverts_the_table() {
        let table: Vec<f64> = (0..1000).map(|i| 0.03 * 1.005f64.powi(i)).collect();
        let logs = log_table(&table);
        for t in [0usize, 1, 17, 500, 998, 999] {
            let got = sigma_to_t(f64::from(table[t] as f32), &logs);
            assert!((got - t as f64).abs() < 1e-3, "t {t}: {got}");
        }
        // Below the table: clipped to timestep 0; above: to the last.
        assert_eq!(sigma_to_t(1e-6, &logs), 0.0);
        assert!((sigma_to_t(1e6, &logs) - 999.0).abs() < 1e-9);
    }
}
