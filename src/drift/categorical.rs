//! Tests over category counts: Evidently's `chisquare` and two-proportion
//! `z`, plus [`align_counts`], which turns two category→count maps into the
//! aligned count vectors every categorical and binned test takes.
//!
//! Counts rather than raw values: the engine gets category frequencies from
//! one aggregate scan (or a frequent-items sketch), never the rows.

use std::collections::BTreeMap;

use statrs::distribution::{ChiSquared, ContinuousCDF, Normal};

use super::{DriftError, Result, Side, TestOutcome};

/// Aligns two category→count maps over the union of their keys, sorted (a
/// key missing on one side counts 0 there). Evidently builds the same union
/// (`get_unique_not_nan_values_list_from_series`); sorting makes the first
/// key the one [`z_test`] treats as "0", as Evidently's `sorted(keys)[0]`.
pub fn align_counts<K: Ord + Clone>(
    reference: &BTreeMap<K, u64>,
    current: &BTreeMap<K, u64>,
) -> (Vec<K>, Vec<u64>, Vec<u64>) {
    let mut keys: Vec<K> = reference.keys().chain(current.keys()).cloned().collect();
    keys.sort();
    keys.dedup();
    let r = keys
        .iter()
        .map(|k| reference.get(k).copied().unwrap_or(0))
        .collect();
    let c = keys
        .iter()
        .map(|k| current.get(k).copied().unwrap_or(0))
        .collect();
    (keys, r, c)
}

/// Checks two aligned count vectors; returns their totals.
fn totals(reference: &[u64], current: &[u64]) -> Result<(f64, f64)> {
    if reference.len() != current.len() {
        return Err(DriftError::LengthMismatch {
            reference: reference.len(),
            current: current.len(),
        });
    }
    let n_ref: u64 = reference.iter().sum();
    let n_cur: u64 = current.iter().sum();
    if n_ref == 0 {
        return Err(DriftError::EmptySample(Side::Reference));
    }
    if n_cur == 0 {
        return Err(DriftError::EmptySample(Side::Current));
    }
    Ok((n_ref as f64, n_cur as f64))
}

/// Evidently's `chisquare`: a goodness-of-fit test of the *current* counts
/// against the reference proportions scaled to the current total, over the
/// union of categories — `scipy.stats.chisquare(f_obs=cur, f_exp=ref ·
/// n_cur/n_ref)`, p-value from χ²(k−1).
///
/// Caveats, kept on purpose to match Evidently:
/// - It treats the reference proportions as *known*, not as a sample, so it
///   over-alarms: with small samples (or few expected counts per category)
///   p-values are too small and drift is flagged more often than α.
/// - A category absent from the reference but present in current gives an
///   expected count of 0: the statistic is `+inf` and the p-value 0 (scipy
///   does the same).
/// - With a single category there is nothing to test (scipy returns NaN):
///   we return statistic 0 and p-value 1.
pub fn chisquare(reference: &[u64], current: &[u64]) -> Result<TestOutcome> {
    let (n_ref, n_cur) = totals(reference, current)?;
    let k_norm = n_cur / n_ref;
    let mut stat = 0.0;
    for (&r, &c) in reference.iter().zip(current) {
        let expected = r as f64 * k_norm;
        let observed = c as f64;
        if expected == 0.0 {
            if observed > 0.0 {
                stat = f64::INFINITY;
            }
            // 0 observed of 0 expected cannot happen for aligned keys that
            // occur somewhere; treat it as contributing nothing.
            continue;
        }
        stat += (observed - expected).powi(2) / expected;
    }
    let categories = reference
        .iter()
        .zip(current)
        .filter(|(r, c)| **r > 0 || **c > 0)
        .count();
    if categories < 2 {
        return Ok(TestOutcome::test(0.0, 1.0));
    }
    if stat.is_infinite() {
        return Ok(TestOutcome::test(stat, 0.0));
    }
    let p = ChiSquared::new((categories - 1) as f64)
        .map(|d| d.sf(stat))
        .unwrap_or(1.0);
    Ok(TestOutcome::test(stat, sanitize_p(p)))
}

/// Evidently's `z` test for a two-valued column: the first category (index 0
/// of the aligned counts) is "0", every other category "1"; then the pooled
/// two-proportion z statistic `(p1 − p2)/√(P(1−P)(1/n1 + 1/n2))` with p1 the
/// share of "1" in reference, p2 in current, and the two-sided p-value
/// `2·(1 − Φ(|z|))` computed in exactly that form (so, like Evidently, it
/// reaches 0 for |z| ≳ 8.3).
///
/// When both sides hold only the same single category Evidently returns
/// p = 1 without a statistic; we return statistic 0, p-value 1.
pub fn z_test(reference: &[u64], current: &[u64]) -> Result<TestOutcome> {
    let (n1, n2) = totals(reference, current)?;
    let ones = |counts: &[u64]| counts.iter().skip(1).sum::<u64>() as f64;
    let p1 = ones(reference) / n1;
    let p2 = ones(current) / n2;
    let pooled = (p1 * n1 + p2 * n2) / (n1 + n2);
    let var = pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2);
    if var <= 0.0 || !var.is_finite() {
        // Both samples are all "0" or all "1": identical, no drift.
        return Ok(TestOutcome::test(0.0, 1.0));
    }
    let z = (p1 - p2) / var.sqrt();
    let phi = Normal::standard().cdf(z.abs());
    Ok(TestOutcome::test(z, sanitize_p(2.0 * (1.0 - phi))))
}

/// Clamps a p-value into [0, 1]; a NaN (only conceivable from a library
/// edge case) becomes 1, i.e. "no evidence of drift", never a NaN outcome.
pub(crate) fn sanitize_p(p: f64) -> f64 {
    if p.is_nan() { 1.0 } else { p.clamp(0.0, 1.0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_union_sorted() {
        let r = BTreeMap::from([("b", 2u64), ("a", 1)]);
        let c = BTreeMap::from([("c", 5u64), ("a", 3)]);
        let (k, rc, cc) = align_counts(&r, &c);
        assert_eq!(k, ["a", "b", "c"]);
        assert_eq!(rc, [1, 2, 0]);
        assert_eq!(cc, [3, 0, 5]);
    }

    #[test]
    fn errors_not_panics() {
        assert!(chisquare(&[], &[]).is_err());
        assert!(chisquare(&[1, 2], &[1]).is_err());
        assert!(z_test(&[0, 0], &[1, 1]).is_err());
    }
}
