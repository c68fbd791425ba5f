//! Distances between two binned distributions: `jensenshannon`, `psi`,
//! `kl_div`, `hellinger`, `tvd`, as Evidently computes them.
//!
//! Every function takes two *aligned* slices of non-negative bin weights
//! (counts or percentages: each side is divided by its own total first, as
//! Evidently's `count / len(data)` does). How bins were made is the caller's
//! business: one bin per category ([`super::align_counts`]), or reference
//! quantiles from a sketch for numeric columns.

use std::collections::BTreeMap;

use super::{DriftError, Result, Side, TestOutcome};

/// Categorical binning, one bin per value: the union of both maps' keys
/// (sorted), with each side's counts as bin weights (0 where a key is
/// missing) — Evidently's `get_binned_data` for categorical columns.
pub fn categorical_bins<K: Ord + Clone>(
    reference: &BTreeMap<K, u64>,
    current: &BTreeMap<K, u64>,
) -> (Vec<K>, Vec<f64>, Vec<f64>) {
    let (keys, r, c) = super::align_counts(reference, current);
    let to_f = |v: Vec<u64>| v.into_iter().map(|x| x as f64).collect();
    (keys, to_f(r), to_f(c))
}

/// Validates aligned bins and returns each side divided by its total.
fn proportions(reference: &[f64], current: &[f64]) -> Result<(Vec<f64>, Vec<f64>)> {
    if reference.len() != current.len() {
        return Err(DriftError::LengthMismatch {
            reference: reference.len(),
            current: current.len(),
        });
    }
    let norm = |w: &[f64], side: Side| -> Result<Vec<f64>> {
        if w.iter().any(|v| !v.is_finite() || *v < 0.0) {
            return Err(DriftError::InvalidWeight(side));
        }
        let total: f64 = w.iter().sum();
        if total <= 0.0 || !total.is_finite() {
            return Err(DriftError::EmptySample(side));
        }
        Ok(w.iter().map(|v| v / total).collect())
    };
    Ok((
        norm(reference, Side::Reference)?,
        norm(current, Side::Current)?,
    ))
}

/// Evidently's smoothing of empty bins (`get_binned_data(feel_zeroes=True)`),
/// applied to one side's proportions: every 0 becomes `min_nonzero / 10^6`
/// when the smallest non-zero proportion is ≤ 10^-4, else `10^-4`. Without
/// it `psi` and `kl_div` are infinite as soon as one bin is empty.
pub fn fill_zeroes(p: &mut [f64]) {
    let min_nonzero = p
        .iter()
        .copied()
        .filter(|v| *v != 0.0)
        .fold(f64::INFINITY, f64::min);
    if !min_nonzero.is_finite() {
        return; // all zero: proportions() already rejected that
    }
    let fill = if min_nonzero <= 0.0001 {
        min_nonzero / 1e6
    } else {
        0.0001
    };
    for v in p.iter_mut().filter(|v| **v == 0.0) {
        *v = fill;
    }
}

/// scipy's `rel_entr(x, y)`: `x·ln(x/y)`, 0 when x = 0; +inf when y = 0 < x.
fn rel_entr(x: f64, y: f64) -> f64 {
    if x == 0.0 {
        0.0
    } else if y == 0.0 {
        f64::INFINITY
    } else {
        x * (x / y).ln()
    }
}

/// Jensen–Shannon *distance* (natural log), `scipy.spatial.distance.
/// jensenshannon(p, q)`: with m = (p+q)/2,
/// `√((Σ p·ln(p/m) + Σ q·ln(q/m)) / 2)`, in [0, √ln 2].
///
/// Evidently calls it without smoothing empty bins (`feel_zeroes=False`),
/// and so do we: an empty bin contributes 0 on its side.
pub fn jensenshannon(reference: &[f64], current: &[f64]) -> Result<TestOutcome> {
    let (p, q) = proportions(reference, current)?;
    let (mut left, mut right) = (0.0, 0.0);
    for (&a, &b) in p.iter().zip(&q) {
        let m = (a + b) / 2.0;
        left += rel_entr(a, m);
        right += rel_entr(b, m);
    }
    // Rounding can leave a tiny negative sum for identical inputs; the
    // divergence is ≥ 0, so clamp rather than return sqrt(-ε) = NaN.
    let js = ((left + right) / 2.0).max(0.0);
    Ok(TestOutcome::distance(js.sqrt()))
}

/// Population stability index with Evidently's empty-bin smoothing
/// ([`fill_zeroes`] on each side): `Σ (r − c)·ln(r/c)` over the proportions
/// r (reference) and c (current). Symmetric; 0 for identical inputs.
pub fn psi(reference: &[f64], current: &[f64]) -> Result<TestOutcome> {
    let (mut r, mut c) = proportions(reference, current)?;
    fill_zeroes(&mut r);
    fill_zeroes(&mut c);
    let v: f64 = r.iter().zip(&c).map(|(a, b)| (a - b) * (a / b).ln()).sum();
    Ok(TestOutcome::distance(v.max(0.0)))
}

/// Kullback–Leibler divergence KL(reference ‖ current) as Evidently computes
/// it: proportions smoothed by [`fill_zeroes`], renormalised to sum 1 (what
/// `scipy.stats.entropy(r, c)` does), then `Σ r·ln(r/c)`. Not symmetric.
pub fn kl_div(reference: &[f64], current: &[f64]) -> Result<TestOutcome> {
    let (mut r, mut c) = proportions(reference, current)?;
    fill_zeroes(&mut r);
    fill_zeroes(&mut c);
    let (sr, sc): (f64, f64) = (r.iter().sum(), c.iter().sum());
    let v: f64 = r
        .iter()
        .zip(&c)
        .map(|(a, b)| rel_entr(a / sr, b / sc))
        .sum();
    Ok(TestOutcome::distance(v.max(0.0)))
}

/// Hellinger distance over proportions, in [0, 1], no smoothing.
/// Evidently's categorical form is `√(1 − clip(Σ √(p·q), 0, 1))`; we compute
/// the algebraically identical `√(½·Σ (√p − √q)²)` (equal because Σp = Σq =
/// 1), which is exactly 0 for identical inputs where the first form leaves a
/// rounding floor of ~1e-8 (√ of 1 − (1 − ε)). (Evidently's numeric form
/// integrates density histograms of equal-width bins, which is the same sum
/// when the bins handed in are that histogram's counts.)
pub fn hellinger(reference: &[f64], current: &[f64]) -> Result<TestOutcome> {
    let (p, q) = proportions(reference, current)?;
    let ss: f64 = p
        .iter()
        .zip(&q)
        .map(|(a, b)| (a.sqrt() - b.sqrt()).powi(2))
        .sum();
    Ok(TestOutcome::distance((0.5 * ss).sqrt().clamp(0.0, 1.0)))
}

/// Total variation distance `½·Σ |p − q|` over proportions, in [0, 1].
///
/// Evidently's `TVD` reports a permutation-test p-value (1000 random
/// relabelings, seeded with NumPy's global RNG), which cannot be reproduced
/// here; we report the distance itself and, as for the other distances,
/// drift means distance ≥ threshold (0.1 by default).
pub fn tvd(reference: &[f64], current: &[f64]) -> Result<TestOutcome> {
    let (p, q) = proportions(reference, current)?;
    let v: f64 = p.iter().zip(&q).map(|(a, b)| (a - b).abs()).sum();
    Ok(TestOutcome::distance((0.5 * v).clamp(0.0, 1.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_zeroes_as_evidently() {
        let mut p = vec![0.5, 0.0, 0.5];
        fill_zeroes(&mut p);
        assert_eq!(p, [0.5, 0.0001, 0.5]);
        let mut p = vec![0.99995, 0.00005, 0.0];
        fill_zeroes(&mut p);
        assert_eq!(p[2], 0.00005 / 1e6);
    }

    #[test]
    fn categorical_bins_union() {
        let r = BTreeMap::from([("x", 3u64)]);
        let c = BTreeMap::from([("y", 2u64)]);
        let (k, rb, cb) = categorical_bins(&r, &c);
        assert_eq!(
            (k, rb, cb),
            (vec!["x", "y"], vec![3.0, 0.0], vec![0.0, 2.0])
        );
    }

    #[test]
    fn bad_bins_are_errors() {
        assert!(psi(&[1.0], &[1.0, 2.0]).is_err());
        assert!(jensenshannon(&[0.0, 0.0], &[1.0, 2.0]).is_err());
        assert!(tvd(&[-1.0, 2.0], &[1.0, 2.0]).is_err());
        assert!(kl_div(&[f64::NAN, 2.0], &[1.0, 2.0]).is_err());
        assert!(hellinger(&[], &[]).is_err());
    }
}
