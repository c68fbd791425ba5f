//! False alarms across windows: a sequential e-detector per column.
//!
//! Why: an agent tests a dataset batch after batch. A test at level α per
//! column per batch raises, on identical data, α false alarms per column per
//! batch — at α = 0.05, 20 columns and a batch every 5 minutes, about 290 a
//! day. Lowering α per batch trades that for power; it does not bound the
//! alarms a user sees over a week.
//!
//! What this does instead (`drift.sequential` in a rule file): each window's
//! p-value p becomes an e-value `e = 1 / (2·√p)` (a p-to-e calibrator with
//! κ = ½: under the null hypothesis p is uniform and E[e] = 1), and each
//! column keeps a Shiryaev–Roberts statistic `R_t = (1 + R_{t−1}) · e_t`
//! (R₀ = 0). The column alarms when `R_t ≥ c` and starts again from 0.
//! Under the null, `R_t − t` is a martingale, so `R_t` is a non-negative
//! submartingale with E[R_t] = t and Doob's maximal inequality gives
//! `P(max_{t ≤ T} R_t ≥ c) ≤ T / c`: with `c = T·k / α` for a dataset of k
//! tested columns, the chance of *any* false alarm in the dataset within T
//! windows is at most α. The expected time to a false alarm of one column is
//! at least c windows. Evidence accumulates: a drift that makes p small for a
//! few windows running multiplies R by 1/(2√p) each window, so it is caught
//! in about log(c)/log(e) windows (the figures measured below are in
//! docs/drift.md).
//!
//! The guarantee needs valid p-values, independent from window to window
//! under the null: `drift.sequential` therefore runs p-value tests only
//! (`defaults: p_values`, no distance test in `overrides`), with no
//! multiple-testing correction (the threshold already accounts for the
//! columns), and against a fixed reference (a rolling reference makes
//! successive windows' p-values dependent). Windows share the reference, so
//! their p-values are not exactly independent; the simulation in this
//! module's tests measures the rate with a shared reference.
//!
//! State: each report's drift section carries every column's R (and whether
//! it alarmed); the next window of the dataset starts from the latest report
//! that has one. The detector is therefore recorded atomically with the
//! report that moved it, and replaying a batch after a crash gives the same
//! answer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::compare::DriftReport;

/// Windows and false-alarm probability of `drift.sequential`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SequentialConfig {
    /// The horizon T the guarantee is stated over.
    pub windows: u64,
    /// The probability of any false alarm in the dataset within `windows`.
    pub false_alarm: f64,
}

/// The detector's state and verdict in a report's drift section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequentialSection {
    /// `shiryaev_roberts` (the procedure above).
    pub method: String,
    /// The horizon T of the guarantee.
    pub windows: u64,
    /// The false-alarm probability within T windows for the dataset.
    pub false_alarm: f64,
    /// The alarm threshold c = T·k / α (k: the columns tested here).
    pub threshold: f64,
    /// Each tested column's detector after this window, by name.
    pub columns: BTreeMap<String, SequentialColumn>,
    /// Set when the reference is too small for the guarantee over
    /// `windows` windows of this size (T·n_window / n_reference > 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The largest T·n_window / n_reference at which the false-alarm rate was
/// measured within α with one reference shared by all windows (3.5 % at
/// α = 5 %; 12.5 % at 100). See the tests and docs/drift.md.
pub const MAX_EVIDENCE_RATIO: f64 = 10.0;

/// One column's detector after a window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SequentialColumn {
    /// This window's e-value, 1 / (2·√p).
    pub e_value: f64,
    /// The Shiryaev–Roberts statistic R after this window.
    pub statistic: f64,
    /// Whether R reached the threshold (the column drifted; the next window
    /// starts from 0).
    pub alarm: bool,
}

/// The e-value of a p-value: `1 / (2·√p)` (κ = ½ calibrator), finite for
/// p = 0 (p is floored at 10⁻³⁰⁰, where the e-value is 5·10¹⁴⁹).
pub fn e_value(p: f64) -> f64 {
    let p = if p.is_nan() {
        1.0
    } else {
        p.clamp(1e-300, 1.0)
    };
    0.5 / p.sqrt()
}

/// One Shiryaev–Roberts step: `(1 + previous) · e`, kept finite.
pub fn step(previous: f64, e: f64) -> f64 {
    let r = (1.0 + previous.max(0.0)) * e;
    if r.is_finite() { r } else { f64::MAX }
}

/// The state the next window starts from: each column's R, or 0 after an
/// alarm.
pub fn carried_state(section: &SequentialSection) -> BTreeMap<String, f64> {
    section
        .columns
        .iter()
        .map(|(name, c)| (name.clone(), if c.alarm { 0.0 } else { c.statistic }))
        .collect()
}

/// Replaces the per-window verdicts of `report`'s p-value columns with the
/// sequential detector's, starting from `previous` (a column absent from it
/// starts from 0). Columns without a p-value (a structural change such as a
/// missing column or a changed type) keep their verdict. The dataset's
/// drifted share is recomputed from the new verdicts. `rows` (reference
/// rows, window rows), when known, says whether the reference is large
/// enough for the guarantee ([`MAX_EVIDENCE_RATIO`]).
pub fn apply(
    report: &mut DriftReport,
    config: SequentialConfig,
    previous: &BTreeMap<String, f64>,
    rows: Option<(u64, u64)>,
) {
    if report.error.is_some() {
        return;
    }
    let tested = report
        .columns
        .iter()
        .filter(|c| c.tested && c.p_value.is_some())
        .count();
    let threshold = config.windows as f64 * tested.max(1) as f64 / config.false_alarm;
    let mut columns = BTreeMap::new();
    for column in report.columns.iter_mut() {
        let (true, Some(p)) = (column.tested, column.p_value) else {
            continue;
        };
        let e = e_value(p);
        let statistic = step(previous.get(&column.column).copied().unwrap_or(0.0), e);
        let alarm = statistic >= threshold;
        column.drifted = alarm;
        columns.insert(
            column.column.clone(),
            SequentialColumn {
                e_value: e,
                statistic,
                alarm,
            },
        );
    }
    let counted = report.columns.iter().filter(|c| c.tested).count();
    let drifted = report
        .columns
        .iter()
        .filter(|c| c.tested && c.drifted)
        .count();
    report.drifted_share = (counted > 0).then(|| drifted as f64 / counted as f64);
    report.dataset_drift = report
        .drifted_share
        .is_some_and(|s| s >= report.drift_share_threshold);
    let message = rows.and_then(|(reference, window)| {
        let ratio = config.windows as f64 * window as f64 / reference.max(1) as f64;
        (ratio > MAX_EVIDENCE_RATIO).then(|| {
            format!(
                "the reference has {reference} rows: over {} windows of {window} rows its own \
                 sampling error can raise false alarms above {}; a reference of at least {} rows \
                 keeps them within it",
                config.windows,
                config.false_alarm,
                (config.windows as f64 * window as f64 / MAX_EVIDENCE_RATIO).ceil() as u64
            )
        })
    });
    report.sequential = Some(SequentialSection {
        method: "shiryaev_roberts".to_string(),
        windows: config.windows,
        false_alarm: config.false_alarm,
        threshold,
        columns,
        message,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::calibration::SplitMix;
    use crate::drift::{categorical::chisquare_homogeneity, ks::ks};

    fn normal(rng: &mut SplitMix) -> f64 {
        // Box–Muller; 1 − u keeps the logarithm finite.
        let (u, v) = (1.0 - rng.uniform(), rng.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    fn sorted_normals(rng: &mut SplitMix, n: usize, shift: f64) -> Vec<f64> {
        let mut v: Vec<f64> = (0..n).map(|_| normal(rng) + shift).collect();
        v.sort_by(f64::total_cmp);
        v
    }

    /// The window (1-based) at which a stream of p-values first alarms at
    /// threshold `c`, within `windows`.
    fn first_alarm(windows: usize, c: f64, mut p_of: impl FnMut() -> f64) -> Option<usize> {
        let mut r = 0.0;
        for t in 0..windows {
            r = step(r, e_value(p_of()));
            if r >= c {
                return Some(t + 1);
            }
        }
        None
    }

    #[test]
    fn the_calibrator_has_mean_one_under_the_null() {
        // E[1/(2√U)] = 1 for U uniform on (0, 1): midpoint rule on a fine
        // grid (the integrand's singularity at 0 is integrable).
        let n = 1_000_000;
        let mean: f64 = (0..n)
            .map(|i| e_value((i as f64 + 0.5) / n as f64))
            .sum::<f64>()
            / n as f64;
        assert!((mean - 1.0).abs() < 2e-3, "{mean}");
        assert_eq!(e_value(1.0), 0.5);
        assert_eq!(e_value(0.25), 1.0);
        assert_eq!(e_value(0.0), 0.5e150);
        assert_eq!(e_value(f64::NAN), 0.5);
        assert_eq!(step(3.0, 2.0), 8.0);
        assert_eq!(step(f64::MAX, 2.0), f64::MAX);
    }

    #[test]
    fn issue_17_sequential_false_alarms_stay_within_t_over_c_on_uniform_p_values() {
        // 2,000 streams of 1,000 windows with uniform p-values (the null
        // with independent windows), c = 1,000 / 0.05: P(any alarm within
        // 1,000 windows) ≤ 0.05 by Doob's inequality.
        let mut rng = SplitMix(17);
        let alarms = (0..2_000)
            .filter(|_| first_alarm(1_000, 1_000.0 / 0.05, || rng.uniform()).is_some())
            .count();
        let rate = alarms as f64 / 2_000.0;
        assert!(rate <= 0.05, "{rate}");
        // 2.25 % with this seed (Doob's bound is not tight).
        assert_eq!(alarms, 45);
        // The per-window test at α = 0.05 alarms in every stream.
        let mut rng = SplitMix(17);
        let naive = (0..2_000)
            .filter(|_| (0..1_000).any(|_| rng.uniform() < 0.05))
            .count();
        assert_eq!(naive, 2_000);
    }

    #[test]
    fn issue_17_sequential_false_alarms_with_a_shared_reference_and_real_tests() {
        // The windows share one reference sample, so their p-values are
        // dependent: the reference's own sampling error looks, to a long
        // enough run of windows, like a shift. Measured with the tests
        // `p_values` runs, 1,000 windows of 200 rows, α = 0.05 (c = 20,000),
        // 200 streams: within α while T·n_window / n_ref ≤ 10, above it at
        // 100 (docs/drift.md states the condition; reports say when a
        // reference is too small for it).
        let probs = [0.4, 0.25, 0.15, 0.12, 0.08];
        let draw = |rng: &mut SplitMix, n: usize| -> Vec<u64> {
            let mut counts = vec![0u64; probs.len()];
            for _ in 0..n {
                let mut u = rng.uniform();
                let k = probs
                    .iter()
                    .position(|p| {
                        u -= p;
                        u < 0.0
                    })
                    .unwrap_or(probs.len() - 1);
                counts[k] += 1;
            }
            counts
        };
        let c = 1_000.0 / 0.05;
        let streams = |n_ref: usize, seed: u64| {
            let mut rng = SplitMix(seed);
            let mut alarms = 0;
            for _ in 0..200 {
                let reference = draw(&mut rng, n_ref);
                let alarm = first_alarm(1_000, c, || {
                    let current = draw(&mut rng, 200);
                    chisquare_homogeneity(&reference, &current)
                        .map(|o| o.p_value.unwrap_or(1.0))
                        .unwrap_or(1.0)
                });
                alarms += usize::from(alarm.is_some());
            }
            alarms
        };
        // Categorical, chisquare_homogeneity: n_ref = 20,000 (T·n/n_ref = 10).
        let alarms = streams(20_000, 1717);
        assert!(alarms as f64 / 200.0 <= 0.05, "{alarms}");
        assert_eq!(alarms, 7);
        // n_ref = 2,000 (T·n/n_ref = 100): 12.5 %, above α — the condition.
        assert_eq!(streams(2_000, 1717), 25);
        // Numeric, ks: reference 3,000 values, windows of 30 (T·n/n_ref =
        // 10), 50 streams × 1,000 windows.
        let mut rng = SplitMix(1718);
        let mut alarms = 0;
        for _ in 0..50 {
            let reference = sorted_normals(&mut rng, 3_000, 0.0);
            let alarm = first_alarm(1_000, c, || {
                let current = sorted_normals(&mut rng, 30, 0.0);
                ks(&reference, &current)
                    .map(|o| o.p_value.unwrap_or(1.0))
                    .unwrap_or(1.0)
            });
            alarms += usize::from(alarm.is_some());
        }
        assert!(alarms as f64 / 50.0 <= 0.05, "{alarms}");
        assert_eq!(alarms, 1);
    }

    #[test]
    fn issue_17_sequential_catches_a_half_std_shift_within_the_stated_windows() {
        // Reference 1,000 rows of N(0, 1); from the first window on, windows
        // of 100 rows of N(0.5, 1); one column at c = 1,000 / 0.05. The
        // windows to the alarm, over 100 streams: docs/drift.md states them.
        let c = 1_000.0 / 0.05;
        let mut rng = SplitMix(1719);
        let mut delays = Vec::new();
        for _ in 0..100 {
            let reference = sorted_normals(&mut rng, 1_000, 0.0);
            let alarm = first_alarm(50, c, || {
                let current = sorted_normals(&mut rng, 100, 0.5);
                ks(&reference, &current)
                    .map(|o| o.p_value.unwrap_or(1.0))
                    .unwrap_or(1.0)
            });
            delays.push(alarm.unwrap_or(usize::MAX));
        }
        delays.sort_unstable();
        let (median, p95, max) = (delays[49], delays[94], delays[99]);
        // Measured: median 3 windows, 95th percentile 4, at most 5.
        assert_eq!((median, p95, max), (3, 4, 5));
    }
}
