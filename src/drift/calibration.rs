//! Issue 17: calibration of the categorical p-value tests by seeded
//! simulation (not timed). Two samples of the same size are drawn from the
//! *same* distribution again and again; a sound test at α = 0.05 flags
//! drift in 5 % of the draws. The homogeneity tests must stay within
//! α ± 1 % at n = 50, 100 and 1,000; Evidently's goodness-of-fit `chisquare`
//! — which takes the reference proportions as exact — is shown to exceed it,
//! the reason `defaults: sound` exists.

use super::{TestKind, align_counts, chisquare, chisquare_homogeneity, g_test, is_drift};
use std::collections::BTreeMap;

pub(crate) use super::exact::SplitMix;

/// Category counts of `n` draws from `cdf` (cumulative probabilities).
fn draw(rng: &mut SplitMix, cdf: &[f64], n: usize) -> BTreeMap<usize, u64> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let u = rng.uniform();
        let k = cdf.partition_point(|c| *c <= u).min(cdf.len() - 1);
        *counts.entry(k).or_insert(0) += 1;
    }
    counts
}

/// False-alarm rates of (homogeneity χ², G-test, Evidently's GOF χ²) over
/// `reps` pairs of samples of `n` from the same distribution, at α = 0.05,
/// each test run exactly as `compare` runs it (over the categories seen).
pub(crate) fn false_alarm_rates(probs: &[f64], n: usize, reps: usize, seed: u64) -> [f64; 3] {
    let mut cdf = Vec::with_capacity(probs.len());
    let mut acc = 0.0;
    for p in probs {
        acc += p;
        cdf.push(acc);
    }
    let mut rng = SplitMix(seed);
    let mut alarms = [0usize; 3];
    for _ in 0..reps {
        let (r, c) = (draw(&mut rng, &cdf, n), draw(&mut rng, &cdf, n));
        let (_, rc, cc) = align_counts(&r, &c);
        let outcomes = [
            (
                TestKind::ChisquareHomogeneity,
                chisquare_homogeneity(&rc, &cc),
            ),
            (TestKind::GTest, g_test(&rc, &cc)),
            (TestKind::Chisquare, chisquare(&rc, &cc)),
        ];
        for (i, (kind, outcome)) in outcomes.into_iter().enumerate() {
            if outcome.is_ok_and(|o| is_drift(kind, &o, 0.05)) {
                alarms[i] += 1;
            }
        }
    }
    alarms.map(|a| a as f64 / reps as f64)
}

#[test]
fn issue_17_homogeneity_tests_hold_their_false_alarm_rate() {
    // Five categories, the rarest at 8 %: 4 expected at n = 50.
    let probs = [0.35, 0.25, 0.2, 0.12, 0.08];
    for (n, reps) in [(50, 20_000), (100, 20_000), (1000, 10_000)] {
        let [homogeneity, g, gof] = false_alarm_rates(&probs, n, reps, 17 + n as u64);
        eprintln!(
            "n = {n}, {reps} pairs: false alarms at α = 0.05: chisquare_homogeneity {:.4}, g_test {:.4}, Evidently chisquare {:.4}",
            homogeneity, g, gof
        );
        assert!((homogeneity - 0.05).abs() <= 0.01, "n {n}: {homogeneity}");
        assert!((g - 0.05).abs() <= 0.01, "n {n}: {g}");
        // The goodness-of-fit form ignores the reference's own sampling
        // error: with equal sizes its statistic is about twice the
        // homogeneity one, so it alarms far more often than α.
        assert!(gof > 0.15, "n {n}: Evidently's chisquare {gof}");
    }
}

/// Where the χ² approximation strains: a category at 2 % (one expected
/// value per side at n = 50). Measured and documented (docs/drift.md), so a
/// change of behaviour shows up here.
#[test]
fn issue_17_homogeneity_tests_with_a_rare_category() {
    let probs = [0.5, 0.3, 0.18, 0.02];
    for (n, reps) in [(50, 20_000), (100, 20_000)] {
        let [homogeneity, g, gof] = false_alarm_rates(&probs, n, reps, 1700 + n as u64);
        eprintln!(
            "rare category, n = {n}: chisquare_homogeneity {homogeneity:.4}, g_test {g:.4}, Evidently chisquare {gof:.4}"
        );
        // Conservative rather than liberal here (4.1–5.0 % measured): never
        // more false alarms than α + 1 %.
        for rate in [homogeneity, g] {
            assert!((0.03..=0.06).contains(&rate), "n {n}: {rate}");
        }
        assert!(gof > 0.15, "n {n}: {gof}");
    }
}
