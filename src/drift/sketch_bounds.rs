//! Issue 17: the sketched numeric path measured against exact computation on
//! adversarial distributions at n = 10⁵ per side (heavy tails, mixtures,
//! ties, all-equal), identical and shifted. The KS statistic must stay
//! within the sketches' rank-error bound ε_ref + ε_cur (a proven bound: each
//! empirical CDF is within its ε); the normed Wasserstein distance within
//! (ε_ref + ε_cur) · (max − min) / σ_ref, the bound that rank error alone
//! gives for ∫|F_a − F_b|. The observed errors are printed: they are what
//! docs/drift.md quotes.

use super::calibration::SplitMix;
use super::compare::compare;
use super::{TestKind, ks, wasserstein};
use crate::profile::{ColumnKind, ColumnProfile, DatasetProfile};
use crate::rules::DriftConfig;

const N: usize = 100_000;

fn normal(rng: &mut SplitMix) -> f64 {
    let (u, v) = (rng.uniform().max(1e-300), rng.uniform());
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

/// `N` values of the named distribution, shifted by `shift`.
fn sample(name: &str, shift: f64, seed: u64) -> Vec<f64> {
    let mut rng = SplitMix(seed);
    (0..N)
        .map(|_| {
            let x = match name {
                "normal" => normal(&mut rng),
                // Pareto, α = 1.5: finite mean, infinite variance.
                "pareto" => rng.uniform().max(1e-12).powf(-1.0 / 1.5),
                // Cauchy-like: no mean at all (clipped to stay finite).
                "cauchy" => (std::f64::consts::PI * (rng.uniform() - 0.5))
                    .tan()
                    .clamp(-1e9, 1e9),
                // Two far-apart modes, 90 % / 10 %.
                "mixture" => {
                    if rng.uniform() < 0.9 {
                        normal(&mut rng)
                    } else {
                        50.0 + 5.0 * normal(&mut rng)
                    }
                }
                // Many ties: a log-normal rounded to 2 decimals.
                "ties" => ((3.0 * normal(&mut rng)).exp() * 100.0).round() / 100.0,
                _ => 7.0,
            };
            x + shift
        })
        .collect()
}

fn profile(values: &[f64]) -> ColumnProfile {
    let mut p = ColumnProfile::new(ColumnKind::Numeric, "float64");
    for chunk in values.chunks(8192) {
        p.update_f64_batch(chunk);
    }
    p.finish();
    p
}

fn run(reference: &ColumnProfile, current: &ColumnProfile, kind: TestKind) -> f64 {
    let dataset = |c: &ColumnProfile| {
        let mut d = DatasetProfile::new("t");
        d.rows = c.count;
        d.columns.insert("x".to_string(), c.clone());
        d
    };
    let mut config = DriftConfig::defaults(std::path::Path::new("t.yaml"));
    config.overrides.insert("x".to_string(), (Some(kind), None));
    config.forced.insert("x".to_string());
    let report = compare("ref", &dataset(reference), &dataset(current), &config);
    report.columns[0].statistic.unwrap_or(f64::NAN)
}

#[test]
fn issue_17_sketched_ks_and_wasserstein_stay_within_their_bounds_on_adversarial_data() {
    for (i, name) in ["normal", "pareto", "cauchy", "mixture", "ties", "equal"]
        .into_iter()
        .enumerate()
    {
        for shift in [0.0, 0.5] {
            let mut a = sample(name, 0.0, 100 + i as u64);
            let mut b = sample(name, shift, 200 + i as u64);
            let (pa, pb) = (profile(&a), profile(&b));
            a.sort_by(f64::total_cmp);
            b.sort_by(f64::total_cmp);
            let eps = pa
                .numeric
                .as_ref()
                .map_or(0.0, |s| s.quantiles().rank_error_bound())
                + pb.numeric
                    .as_ref()
                    .map_or(0.0, |s| s.quantiles().rank_error_bound());
            let exact_ks = ks(&a, &b).map_or(f64::NAN, |o| o.statistic);
            let sketched_ks = run(&pa, &pb, TestKind::Ks);
            assert!(
                (sketched_ks - exact_ks).abs() <= eps + 1e-12,
                "{name} shift {shift}: KS {sketched_ks} vs {exact_ks} ± {eps}"
            );
            let exact_w = wasserstein(&a, &b).map_or(f64::NAN, |o| o.statistic);
            let sketched_w = run(&pa, &pb, TestKind::Wasserstein);
            let lo = a[0].min(b[0]);
            let hi = a[N - 1].max(b[N - 1]);
            let sigma = pa
                .numeric
                .as_ref()
                .and_then(|s| s.moments.std_population())
                .unwrap_or(0.0)
                .max(0.001);
            let w_bound = eps * (hi - lo) / sigma;
            assert!(
                (sketched_w - exact_w).abs() <= w_bound + 1e-9,
                "{name} shift {shift}: W {sketched_w} vs {exact_w} ± {w_bound}"
            );
            let rel = if exact_w > 0.0 {
                format!("{:.2} %", (sketched_w - exact_w).abs() / exact_w * 100.0)
            } else {
                "—".to_string()
            };
            eprintln!(
                "{name:8} shift {shift}: KS exact {exact_ks:.5} sketched {sketched_ks:.5} (|Δ| {:.5} ≤ ε {eps:.5}); normed W exact {exact_w:.5} sketched {sketched_w:.5} (|Δ| {:.5}, {rel}; bound {w_bound:.3})",
                (sketched_ks - exact_ks).abs(),
                (sketched_w - exact_w).abs()
            );
        }
    }
}
