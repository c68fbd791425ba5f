//! Location tests over raw numeric samples: `mannw` (Mann–Whitney U) and
//! `t_test` (Welch's t), both two-sided, matching scipy.
//!
//! Evidently runs these with other options than ours, deliberately: its
//! `mannw` uses `alternative="less"` (a one-sided test that only sees the
//! current sample moving *up*) and its `t_test` uses Student's pooled
//! variance (`ttest_ind` default). Drift can go either way and batch sizes
//! differ wildly from the reference, so we use the two-sided Mann–Whitney
//! test and Welch's unequal-variance t-test.

use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

use super::categorical::sanitize_p;
use super::{DriftError, Result, Side, TestOutcome, check_sorted_sample};

/// Two-sided Mann–Whitney U test as `scipy.stats.mannwhitneyu(ref, cur)`
/// with its defaults (`use_continuity=True`, `method='auto'`). The statistic
/// is U of the reference sample (scipy's `U1`).
///
/// Like scipy's `auto`, the p-value is **exact** when one sample has at most
/// 8 observations and there are no ties (null distribution of U counted via
/// the Gaussian binomial coefficient), and otherwise **asymptotic**: normal
/// approximation with tie correction and continuity correction,
/// `p = 2·Φ(−(max(U1, U2) − n1·n2/2 − 0.5)/σ)`, clipped to 1.
pub fn mannw(reference: &[f64], current: &[f64]) -> Result<TestOutcome> {
    check_sorted_sample(reference, Side::Reference)?;
    check_sorted_sample(current, Side::Current)?;
    let (n1, n2) = (reference.len(), current.len());
    let (n1f, n2f) = (n1 as f64, n2 as f64);

    // Average ranks over the merged sorted sample: walk tie groups, crediting
    // the reference sample with its members' shared rank.
    let mut rank_sum_ref = 0.0;
    let mut tie_term = 0.0; // Σ (t³ − t) over tie groups
    let mut has_ties = false;
    super::tie_groups(reference, current, |xs, ys, seen| {
        let t = xs.len() + ys.len();
        let avg_rank = seen as f64 + (t as f64 + 1.0) / 2.0;
        rank_sum_ref += avg_rank * xs.len() as f64;
        if t > 1 {
            has_ties = true;
            let tf = t as f64;
            tie_term += tf * tf * tf - tf;
        }
    });
    let u1 = rank_sum_ref - n1f * (n1f + 1.0) / 2.0;
    let u2 = n1f * n2f - u1;
    let u = u1.max(u2);

    let exact = (n1 <= 8 || n2 <= 8) && !has_ties;
    let p = if exact {
        2.0 * mwu_exact_sf(n1.min(n2), n1.max(n2), u.round() as usize)
    } else {
        let n = n1f + n2f;
        let s = (n1f * n2f / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)))).sqrt();
        let z = (u - n1f * n2f / 2.0 - 0.5) / s;
        if z.is_nan() {
            1.0 // a single observation in total: nothing to rank against
        } else {
            2.0 * Normal::standard().cdf(-z)
        }
    };
    Ok(TestOutcome::test(u1, sanitize_p(p)))
}

/// P(U ≥ u) under H0 for sample sizes m ≤ n, from the counts of U's values:
/// the coefficients of the Gaussian binomial [m+n choose m]_q, built as
/// Π_{i=1..m} (1 − q^{n+i}) / (1 − q^i). After each factor the polynomial
/// is again a Gaussian binomial, so all stored counts stay non-negative.
fn mwu_exact_sf(m: usize, n: usize, u: usize) -> f64 {
    let deg = m * n;
    let mut c = vec![0.0f64; deg + 1];
    c[0] = 1.0;
    let mut cur_deg = 0usize;
    for i in 1..=m {
        // multiply by (1 − q^{n+i})
        let shift = n + i;
        let new_deg = cur_deg + shift;
        let mut next = vec![0.0f64; new_deg + 1];
        next[..=cur_deg].copy_from_slice(&c[..=cur_deg]);
        for k in 0..=cur_deg {
            next[k + shift] -= c[k];
        }
        // divide by (1 − q^i): running sums with stride i
        for k in i..=new_deg {
            next[k] += next[k - i];
        }
        cur_deg = new_deg - i; // = i·n after this factor
        c[..=cur_deg].copy_from_slice(&next[..=cur_deg]);
    }
    let total: f64 = c.iter().sum();
    // P(U ≥ u) = P(U ≤ mn − u) by symmetry: sum the short lower tail.
    let upto = deg.saturating_sub(u);
    if u > deg {
        return 0.0;
    }
    c[..=upto].iter().sum::<f64>() / total
}

/// Welch's two-sample t-test, `scipy.stats.ttest_ind(ref, cur,
/// equal_var=False)`: `t = (x̄₁ − x̄₂)/√(s₁²/n₁ + s₂²/n₂)` with
/// Welch–Satterthwaite degrees of freedom; two-sided p-value.
///
/// Each sample needs at least two observations. When both samples have zero
/// variance (scipy returns NaN) we return t = 0, p = 1 if the means are
/// equal, and t = ±inf, p = 0 otherwise — constant but different is drift.
pub fn t_test(reference: &[f64], current: &[f64]) -> Result<TestOutcome> {
    for (x, side) in [(reference, Side::Reference), (current, Side::Current)] {
        if x.is_empty() {
            return Err(DriftError::EmptySample(side));
        }
        if x.iter().any(|v| !v.is_finite()) {
            return Err(DriftError::NonFinite(side));
        }
        if x.len() < 2 {
            return Err(DriftError::NotApplicable(
                "t_test needs at least two observations per sample",
            ));
        }
    }
    let stats = |x: &[f64]| {
        let n = x.len() as f64;
        let mean = x.iter().sum::<f64>() / n;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (n, mean, var)
    };
    let (n1, m1, v1) = stats(reference);
    let (n2, m2, v2) = stats(current);
    let (vn1, vn2) = (v1 / n1, v2 / n2);
    let se2 = vn1 + vn2;
    let diff = m1 - m2;
    if se2.is_nan() || se2 <= 0.0 || se2.is_infinite() || !diff.is_finite() {
        return Ok(if diff == 0.0 || !diff.is_finite() {
            TestOutcome::test(0.0, 1.0)
        } else {
            TestOutcome::test(f64::INFINITY.copysign(diff), 0.0)
        });
    }
    let df = se2 * se2 / (vn1 * vn1 / (n1 - 1.0) + vn2 * vn2 / (n2 - 1.0));
    let t = diff / se2.sqrt();
    let p = StudentsT::new(0.0, 1.0, df)
        .map(|d| 2.0 * d.sf(t.abs()))
        .unwrap_or(f64::NAN);
    Ok(TestOutcome::test(t, sanitize_p(p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_counts_are_a_distribution() {
        // m = 2, n = 2: U ∈ {0..4} with counts 1,1,2,1,1 (total 6).
        assert!((mwu_exact_sf(2, 2, 4) - 1.0 / 6.0).abs() < 1e-15);
        assert!((mwu_exact_sf(2, 2, 2) - 4.0 / 6.0).abs() < 1e-15);
        assert!((mwu_exact_sf(2, 2, 0) - 1.0).abs() < 1e-15);
    }

    #[test]
    fn degenerate_inputs() {
        assert!(t_test(&[1.0], &[1.0, 2.0]).is_err());
        let same = t_test(&[1.0, 1.0], &[1.0, 1.0]).ok();
        assert_eq!(same.and_then(|o| o.p_value), Some(1.0));
        let apart = t_test(&[1.0, 1.0], &[2.0, 2.0]).ok();
        assert_eq!(apart.and_then(|o| o.p_value), Some(0.0));
        assert!(mannw(&[1.0], &[1.0]).is_ok_and(|o| o.p_value == Some(1.0)));
    }
}
