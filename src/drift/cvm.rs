//! Two-sample Cramér–von Mises test, `cramer_von_mises`, matching
//! `scipy.stats.cramervonmises_2samp(ref, cur)` (`method='auto'`), which is
//! also what Evidently's own copy of that function computes.
//!
//! As scipy: the p-value is **exact** when both samples have at most 20
//! observations (Xiao, Gordon & Yakovlev 2006, "A C++ program for the
//! Cramér–von Mises two-sample test", J. Stat. Soft. 17(8): lattice-path
//! frequency tables of the rank statistic U), and otherwise **asymptotic**:
//! the statistic is standardised (Anderson 1962, eqs. 11, 14, 15) and
//! referred to the limiting one-sample distribution (Csörgő & Faraway 1996,
//! eq. 1.2), summed until a term falls below 1e-7 — the same truncation as
//! scipy, so p-values agree, not just approximately.

use statrs::function::gamma::ln_gamma;

use super::categorical::sanitize_p;
use super::{DriftError, Result, Side, TestOutcome, check_sorted_sample};

/// Largest size for which scipy's `auto` uses the exact distribution.
const MAX_EXACT_N: usize = 20;

/// Cramér–von Mises two-sample test of sorted, finite samples, each with at
/// least two observations. Statistic T as scipy's; drift (Evidently) when
/// p ≤ threshold (0.1 by default).
pub fn cramer_von_mises(reference: &[f64], current: &[f64]) -> Result<TestOutcome> {
    check_sorted_sample(reference, Side::Reference)?;
    check_sorted_sample(current, Side::Current)?;
    let (nx, ny) = (reference.len(), current.len());
    if nx < 2 || ny < 2 {
        return Err(DriftError::NotApplicable(
            "cramer_von_mises needs at least two observations per sample",
        ));
    }
    // U = nx·Σ(r_i − i)² + ny·Σ(s_j − j)² with midranks r (reference) and s
    // (current) in the pooled sample (Anderson 1962, eq. 10). Both samples
    // are sorted, so each one's ranks come out in order while merging.
    let (mut sum_x, mut sum_y) = (0.0f64, 0.0f64);
    super::tie_groups(reference, current, |xs, ys, seen| {
        let t = xs.len() + ys.len();
        let rank = seen as f64 + (t as f64 + 1.0) / 2.0;
        for k in xs {
            sum_x += (rank - (k + 1) as f64).powi(2);
        }
        for k in ys {
            sum_y += (rank - (k + 1) as f64).powi(2);
        }
    });
    let (nxf, nyf) = (nx as f64, ny as f64);
    let u = nxf * sum_x + nyf * sum_y;
    let k = nxf * nyf;
    let n = nxf + nyf;
    let t = u / (k * n) - (4.0 * k - 1.0) / (6.0 * n);

    let p = if nx.max(ny) <= MAX_EXACT_N {
        exact_p(u, nx, ny)
    } else {
        let et = (1.0 + 1.0 / n) / 6.0;
        let vt = (n + 1.0) * (4.0 * k * n - 3.0 * (nxf * nxf + nyf * nyf) - 2.0 * k)
            / (45.0 * n * n * 4.0 * k);
        let tn = 1.0 / 6.0 + (t - et) / (45.0 * vt).sqrt();
        if tn >= 0.003 {
            (1.0 - cdf_cvm_inf(tn)).max(0.0)
        } else {
            1.0
        }
    };
    Ok(TestOutcome::test(t, sanitize_p(p)))
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Exact P(U ≥ u) (scipy `_pval_cvm_2samp_exact`): walk the (n+1)×(m+1)
/// lattice; each cell holds the frequency table of the path sums
/// Σ (a·v − b·u)² (a = lcm/m, b = lcm/n) over paths reaching it. The
/// p-value is the share of the C(m+n, m) paths whose sum reaches ζ, U
/// rescaled to that integer lattice (Xiao et al. 2006, eq. 2–3, 9–13).
fn exact_p(s: f64, m: usize, n: usize) -> f64 {
    let (mu, nu) = (m as u64, n as u64);
    let lcm = mu / gcd(mu, nu) * nu;
    let (a, b) = (lcm / mu, lcm / nu);
    let mn = (mu * nu) as f64;
    // Same float expression as scipy (all terms are exact in f64 here).
    let zeta = ((lcm * lcm * (mu + nu)) as f64 * (6.0 * s - mn * (4.0 * mn - 1.0))
        / (6.0 * mn * mn))
        .floor();

    type Table = Vec<(u64, u64)>; // (path sum, number of paths), sorted by sum
    fn merge(x: &Table, y: &Table) -> Table {
        let mut out = Vec::with_capacity(x.len() + y.len());
        let (mut i, mut j) = (0, 0);
        while i < x.len() && j < y.len() {
            match x[i].0.cmp(&y[j].0) {
                std::cmp::Ordering::Less => {
                    out.push(x[i]);
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    out.push(y[j]);
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    out.push((x[i].0, x[i].1 + y[j].1));
                    i += 1;
                    j += 1;
                }
            }
        }
        out.extend_from_slice(&x[i..]);
        out.extend_from_slice(&y[j..]);
        out
    }

    // Row "u = −1": only the start cell (v = 0) holds one empty path.
    let mut gs: Vec<Table> = vec![Vec::new(); m + 1];
    gs[0] = vec![(0, 1)];
    for u in 0..=nu {
        let mut next: Vec<Table> = Vec::with_capacity(m + 1);
        let mut tmp: Table = Vec::new();
        for (v, g) in gs.iter().enumerate() {
            tmp = merge(&tmp, g);
            let d = (a * v as u64).abs_diff(b * u);
            for e in tmp.iter_mut() {
                e.0 += d * d;
            }
            next.push(tmp.clone());
        }
        gs = next;
    }
    let total: u64 = gs[m].iter().map(|e| e.1).sum();
    let hits: u64 = gs[m]
        .iter()
        .filter(|e| e.0 as f64 >= zeta)
        .map(|e| e.1)
        .sum();
    if total == 0 {
        1.0
    } else {
        hits as f64 / total as f64
    }
}

/// CDF of the limiting Cramér–von Mises distribution (Csörgő & Faraway
/// 1996, eq. 1.2; scipy `_cdf_cvm_inf`): Σ_k u_k·√y·e^(−q)·K_{1/4}(q),
/// y = 4k+1, q = y²/(16x), adding terms until one is below 1e-7.
fn cdf_cvm_inf(x: f64) -> f64 {
    let pi15 = std::f64::consts::PI.powf(1.5);
    let mut total = 0.0;
    for k in 0..10_000u32 {
        let kf = f64::from(k);
        let u = (ln_gamma(kf + 0.5) - ln_gamma(kf + 1.0)).exp() / (pi15 * x.sqrt());
        let y = 4.0 * kf + 1.0;
        let q = y * y / (16.0 * x);
        let z = u * y.sqrt() * exp_neg_q_bessel_k_quarter(q);
        total += z;
        if z.abs() < 1e-7 || !z.is_finite() {
            break;
        }
    }
    total
}

/// `e^(−q)·K_{1/4}(q)`, the factor scipy computes as `exp(-q) * kv(0.25,
/// q)`, from the integral representation `K_ν(q) = ∫_0^∞ e^(−q·cosh t)
/// cosh(νt) dt` written as `e^(−q)·∫ e^(−q(cosh t − 1)) cosh(t/4) dt` to
/// stay in range. The integrand is analytic and decays double-exponentially,
/// so the trapezoidal rule with step 1/16 is accurate far below 1e-15.
fn exp_neg_q_bessel_k_quarter(q: f64) -> f64 {
    if q <= 0.0 {
        return f64::INFINITY;
    }
    let h = 1.0 / 16.0;
    let mut sum = 0.5; // t = 0 term: e^0 · cosh 0, halved (trapezoid end)
    let mut i = 1u32;
    loop {
        let t = f64::from(i) * h;
        let f = (-q * (t.cosh() - 1.0)).exp() * (t / 4.0).cosh();
        sum += f;
        if f < 1e-18 * sum || i > 100_000 {
            break;
        }
        i += 1;
    }
    // K(q) = e^(−q)·h·sum, times the e^(−q) factor the caller wants.
    (-2.0 * q).exp() * h * sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bessel_k_quarter_known_value() {
        // K_{1/4}(1) = 0.4307397744485814 (scipy.special.kv(0.25, 1.0)).
        let k = exp_neg_q_bessel_k_quarter(1.0) * 1f64.exp();
        assert!((k - 0.430_739_774_448_581_4).abs() < 1e-14, "{k}");
    }
}
