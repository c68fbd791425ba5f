//! Distances between two raw numeric samples: Evidently's normed
//! `wasserstein` and `energy`. Both integrate a function of the gap between
//! the two empirical CDFs, exactly as scipy's `_cdf_distance`, over sorted
//! samples in one merge pass (O(n1 + n2), no allocation).

use super::{Result, Side, TestOutcome, check_sorted_sample};

/// `∫ |F_u − F_v|^p` over the merged sample, for p = 1 or 2 (scipy
/// `_cdf_distance` before its final root): between consecutive merged values
/// a_k < a_{k+1} both ECDFs are constant, so the integral is a sum of
/// `|F_u(a_k) − F_v(a_k)|^p · (a_{k+1} − a_k)`.
fn cdf_gap_integral(u: &[f64], v: &[f64], squared: bool) -> f64 {
    let (nu, nv) = (u.len() as f64, v.len() as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let mut total = 0.0;
    let mut prev: Option<f64> = None;
    let (mut fu, mut fv) = (0.0f64, 0.0f64);
    while i < u.len() || j < v.len() {
        let x = match (u.get(i), v.get(j)) {
            (Some(&a), Some(&b)) => a.min(b),
            (Some(&a), None) => a,
            (None, Some(&b)) => b,
            (None, None) => break,
        };
        if let Some(p) = prev {
            let gap = (fu - fv).abs();
            // Skipping zero gaps also avoids 0 · inf = NaN when a step
            // between huge finite values overflows.
            if gap > 0.0 {
                let w = if squared { gap * gap } else { gap };
                total += w * (x - p);
            }
        }
        while i < u.len() && u[i] <= x {
            i += 1;
        }
        while j < v.len() && v[j] <= x {
            j += 1;
        }
        fu = i as f64 / nu;
        fv = j as f64 / nv;
        prev = Some(x);
    }
    total
}

/// Population standard deviation (ddof = 0), two-pass like `np.std`.
fn std_pop(x: &[f64]) -> f64 {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    (x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt()
}

/// Evidently's `wasserstein`: the first Wasserstein (earth mover's) distance
/// `scipy.stats.wasserstein_distance(ref, cur)` divided by
/// `max(std(ref), 0.001)` (population std), so the default threshold 0.1
/// reads "the distributions moved by a tenth of a reference std". The 0.001
/// floor keeps a constant reference from dividing by zero.
///
/// Samples must be sorted ascending and finite.
pub fn wasserstein(reference: &[f64], current: &[f64]) -> Result<TestOutcome> {
    check_sorted_sample(reference, Side::Reference)?;
    check_sorted_sample(current, Side::Current)?;
    let w = cdf_gap_integral(reference, current, false);
    let norm = std_pop(reference).max(0.001);
    Ok(TestOutcome::distance(finite_or_max(w / norm)))
}

/// Energy distance as `scipy.stats.energy_distance(ref, cur)`:
/// `√2 · √(∫ (F_u − F_v)²)` (Székely & Rizzo's distance for one dimension).
/// Evidently's `ed` flags drift when it is strictly greater than 0.1.
pub fn energy(reference: &[f64], current: &[f64]) -> Result<TestOutcome> {
    check_sorted_sample(reference, Side::Reference)?;
    check_sorted_sample(current, Side::Current)?;
    let i2 = cdf_gap_integral(reference, current, true).max(0.0);
    Ok(TestOutcome::distance(finite_or_max(
        std::f64::consts::SQRT_2 * i2.sqrt(),
    )))
}

/// Finite inputs near ±f64::MAX can overflow a difference to inf; report the
/// largest finite distance instead (still "drift" under any threshold).
fn finite_or_max(v: f64) -> f64 {
    if v.is_nan() {
        0.0
    } else if v.is_infinite() {
        f64::MAX
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scipy_doc_example() {
        // scipy docs: wasserstein_distance([0, 1, 3], [5, 6, 8]) == 5.0;
        // std([0,1,3]) = 1.2472191289246473.
        let w = wasserstein(&[0.0, 1.0, 3.0], &[5.0, 6.0, 8.0])
            .map(|o| o.statistic)
            .unwrap_or(f64::NAN);
        assert!((w - 5.0 / 1.247_219_128_924_647_3).abs() < 1e-12);
    }
}
