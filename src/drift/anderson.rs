//! k-sample Anderson–Darling test for two samples, `anderson`, matching
//! Evidently's call `scipy.stats.anderson_ksamp([ref, cur])` (scipy's
//! default midrank variant, no permutation `method`).
//!
//! scipy's p-value is not a distribution function: it interpolates
//! log(significance) quadratically over Scholz & Stephens' (1987, Table 2)
//! critical values and is **capped to [0.001, 0.25]** outside them. We
//! reproduce exactly that, caps included, so verdicts match Evidently; the
//! consequence is that p-values above 0.25 all read 0.25 and p-values below
//! 0.001 all read 0.001.

use super::categorical::sanitize_p;
use super::{DriftError, Result, Side, TestOutcome, check_sorted_sample};

/// Anderson–Darling k-sample test (k = 2) of sorted, finite samples. The
/// statistic is scipy's standardised `A2 = (A²akN − (k−1)) / σ`; drift
/// (Evidently) when p < threshold (0.1 by default).
///
/// Needs at least 4 observations in total and 2 distinct values (scipy
/// raises or divides by zero otherwise).
pub fn anderson(reference: &[f64], current: &[f64]) -> Result<TestOutcome> {
    check_sorted_sample(reference, Side::Reference)?;
    check_sorted_sample(current, Side::Current)?;
    let samples = [reference, current];
    let nf = (reference.len() + current.len()) as f64;
    if nf < 4.0 {
        return Err(DriftError::NotApplicable(
            "anderson needs at least four observations in total",
        ));
    }
    let (first, last) = (
        reference[0].min(current[0]),
        reference[reference.len() - 1].max(current[current.len() - 1]),
    );
    if first == last {
        return Err(DriftError::NotApplicable(
            "anderson needs more than one distinct observation",
        ));
    }

    // A²akN, Scholz & Stephens (1987) eq. 7 (midranks), one pass over the
    // distinct pooled values z_j: l_j ties in the pool, B_j = #(< z_j) +
    // l_j/2, and per sample M_ij = #(≤ z_j) − f_ij/2.
    let mut pos = [0usize; 2];
    let mut below = 0usize; // pooled observations < z_j
    let mut sums = [0.0f64; 2];
    loop {
        let z = match (reference.get(pos[0]), current.get(pos[1])) {
            (Some(&a), Some(&b)) => a.min(b),
            (Some(&a), None) => a,
            (None, Some(&b)) => b,
            (None, None) => break,
        };
        let mut f = [0usize; 2];
        for (s, sample) in samples.iter().enumerate() {
            while pos[s] < sample.len() && sample[pos[s]] == z {
                pos[s] += 1;
                f[s] += 1;
            }
        }
        let lj = (f[0] + f[1]) as f64;
        let bj = below as f64 + lj / 2.0;
        let denom = bj * (nf - bj) - nf * lj / 4.0;
        for s in 0..2 {
            let m_ij = pos[s] as f64 - f[s] as f64 / 2.0;
            let ni = samples[s].len() as f64;
            sums[s] += lj / nf * (nf * m_ij - bj * ni).powi(2) / denom;
        }
        below += f[0] + f[1];
    }
    let a2akn =
        (sums[0] / reference.len() as f64 + sums[1] / current.len() as f64) * ((nf - 1.0) / nf);

    // Variance of A²akN under H0 (Scholz & Stephens eq. 4), as scipy.
    let k = 2.0f64;
    let n_total = reference.len() + current.len();
    let hh = 1.0 / reference.len() as f64 + 1.0 / current.len() as f64;
    let mut hs_cs = Vec::with_capacity(n_total.saturating_sub(2));
    let mut acc = 0.0;
    for i in (2..n_total).rev() {
        acc += 1.0 / i as f64; // 1/(N−1), 1/(N−2), …, 1/2
        hs_cs.push(acc);
    }
    let h = acc + 1.0;
    let g: f64 = hs_cs
        .iter()
        .enumerate()
        .map(|(t, v)| v / (t + 2) as f64)
        .sum();
    let a = (4.0 * g - 6.0) * (k - 1.0) + (10.0 - 6.0 * g) * hh;
    let b = (2.0 * g - 4.0) * k * k + 8.0 * h * k + (2.0 * g - 14.0 * h - 4.0) * hh - 8.0 * h
        + 4.0 * g
        - 6.0;
    let c = (6.0 * h + 2.0 * g - 2.0) * k * k
        + (4.0 * h - 4.0 * g + 6.0) * k
        + (2.0 * h - 6.0) * hh
        + 4.0 * h;
    let d = (2.0 * h + 6.0) * k * k - 4.0 * h * k;
    let sigmasq =
        (a * nf.powi(3) + b * nf * nf + c * nf + d) / ((nf - 1.0) * (nf - 2.0) * (nf - 3.0));
    let m = k - 1.0;
    let a2 = (a2akn - m) / sigmasq.sqrt();
    if !a2.is_finite() {
        return Err(DriftError::NotApplicable(
            "anderson statistic is undefined for these samples",
        ));
    }
    Ok(TestOutcome::test(a2, sanitize_p(interpolated_p(a2, m))))
}

/// scipy's p-value: quadratic least-squares fit of ln(significance) against
/// the critical values `b0 + b1/√m + b2/m` (Scholz & Stephens Table 2),
/// evaluated at A2, capped to [0.001, 0.25] outside the table.
fn interpolated_p(a2: f64, m: f64) -> f64 {
    const B0: [f64; 7] = [0.675, 1.281, 1.645, 1.96, 2.326, 2.573, 3.085];
    const B1: [f64; 7] = [-0.245, 0.25, 0.678, 1.149, 1.822, 2.364, 3.615];
    const B2: [f64; 7] = [-0.105, -0.305, -0.362, -0.391, -0.396, -0.345, -0.154];
    const SIG: [f64; 7] = [0.25, 0.1, 0.05, 0.025, 0.01, 0.005, 0.001];
    let crit: Vec<f64> = (0..7)
        .map(|i| B0[i] + B1[i] / m.sqrt() + B2[i] / m)
        .collect();
    let (lo, hi) = crit
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    if a2 < lo {
        return 0.25;
    }
    if a2 > hi {
        return 0.001;
    }
    // Normal equations of the 3-parameter fit y ≈ p0·x² + p1·x + p2,
    // solved by Gaussian elimination with partial pivoting. Well
    // conditioned here (x in ~[0.3, 4]), so this agrees with numpy's
    // SVD-based polyfit to ~1e-13.
    let mut ata = [[0.0f64; 3]; 3];
    let mut aty = [0.0f64; 3];
    for (x, s) in crit.iter().zip(SIG) {
        let row = [x * x, *x, 1.0];
        let y = s.ln();
        for r in 0..3 {
            aty[r] += row[r] * y;
            for c in 0..3 {
                ata[r][c] += row[r] * row[c];
            }
        }
    }
    let coef = solve3(ata, aty);
    (coef[0] * a2 * a2 + coef[1] * a2 + coef[2]).exp()
}

fn solve3(mut a: [[f64; 3]; 3], mut b: [f64; 3]) -> [f64; 3] {
    for col in 0..3 {
        let pivot = (col..3)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap_or(col);
        a.swap(col, pivot);
        b.swap(col, pivot);
        for r in (col + 1)..3 {
            let f = a[r][col] / a[col][col];
            let pivot_row = a[col];
            for (dst, src) in a[r].iter_mut().zip(pivot_row).skip(col) {
                *dst -= f * src;
            }
            b[r] -= f * b[col];
        }
    }
    let mut x = [0.0f64; 3];
    for r in (0..3).rev() {
        let s: f64 = ((r + 1)..3).map(|c| a[r][c] * x[c]).sum();
        x[r] = (b[r] - s) / a[r][r];
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degenerate_inputs_are_errors() {
        assert!(anderson(&[1.0, 1.0], &[1.0, 1.0]).is_err());
        assert!(anderson(&[1.0], &[2.0]).is_err());
    }
}
