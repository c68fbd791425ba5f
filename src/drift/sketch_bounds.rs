//! Issue 17: the sketched numeric path measured against exact computation on
//! adversarial distributions at n = 10⁵ per side (heavy tails, mixtures,
//! ties, all-equal), identical and shifted. The KS statistic must stay
//! within the sketches' rank-error bound ε_ref + ε_cur (a proven bound: each
//! empirical CDF is within its ε); the normed Wasserstein distance within
//! (ε_ref + ε_cur) · (max − min) / σ_ref, the bound that rank error alone
//! gives for ∫|F_a − F_b|. The observed errors are printed: they are what
//! docs/drift.md quotes.

use super::calibration::SplitMix;
use super::compare::{compare, wasserstein_side};
use super::{TestKind, ks, wasserstein};
use crate::profile::{ColumnKind, ColumnProfile, DatasetProfile};
use crate::rules::DriftConfig;
use proptest::prelude::*;

const N: usize = 100_000;

fn normal(rng: &mut SplitMix) -> f64 {
    let (u, v) = (rng.uniform().max(1e-300), rng.uniform());
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

/// `N` values of the named distribution, shifted by `shift`.
fn sample(name: &str, shift: f64, seed: u64) -> Vec<f64> {
    sample_n(name, shift, seed, N)
}

/// `n` values of the named distribution, shifted by `shift`.
fn sample_n(name: &str, shift: f64, seed: u64, n: usize) -> Vec<f64> {
    let mut rng = SplitMix(seed);
    (0..n)
        .map(|_| {
            let x = match name {
                "normal" => normal(&mut rng),
                // Pareto, α = 1.5: finite mean, infinite variance.
                "pareto" => rng.uniform().max(1e-12).powf(-1.0 / 1.5),
                // The heavier tail benches/evidently_compare.py shifts to.
                "pareto13" => rng.uniform().max(1e-12).powf(-1.0 / 1.3),
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
                // Log-normal, σ = 1.5 (benches/evidently_compare.py's).
                "lognormal" => (1.5 * normal(&mut rng)).exp(),
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

/// The sketched normed Wasserstein's bound for a pair of profiles: the sum
/// of each side's bound on ∫|F̂ − F| (see `compare::wasserstein_side`)
/// over the reference's σ; and whether exact tails were used.
fn w_bound(pa: &ColumnProfile, pb: &ColumnProfile) -> (f64, bool) {
    let sigma = pa
        .numeric
        .as_ref()
        .and_then(|s| s.moments.std_population())
        .unwrap_or(0.0)
        .max(0.001);
    let side =
        |p: &ColumnProfile| wasserstein_side(p).map_or((f64::NAN, false), |s| (s.bound, s.tails));
    let ((a, ta), (b, tb)) = (side(pa), side(pb));
    ((a + b) / sigma, ta || tb)
}

/// One comparison: the sketched KS within ε_ref + ε_cur and the sketched
/// normed Wasserstein within its bound of the exact values; returns the
/// Wasserstein's exact and sketched values and its bound.
fn check_pair(label: &str, mut a: Vec<f64>, mut b: Vec<f64>) -> (f64, f64, f64) {
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
        "{label}: KS {sketched_ks} vs {exact_ks} ± {eps}"
    );
    let exact_w = wasserstein(&a, &b).map_or(f64::NAN, |o| o.statistic);
    let sketched_w = run(&pa, &pb, TestKind::Wasserstein);
    let (bound, tails) = w_bound(&pa, &pb);
    assert!(
        (sketched_w - exact_w).abs() <= bound + 1e-9,
        "{label}: W {sketched_w} vs {exact_w} ± {bound}"
    );
    let rel = if exact_w > 0.0 {
        format!("{:.2} %", (sketched_w - exact_w).abs() / exact_w * 100.0)
    } else {
        "—".to_string()
    };
    eprintln!(
        "{label:24}: KS exact {exact_ks:.5} sketched {sketched_ks:.5} (|Δ| {:.5} ≤ ε {eps:.5}); normed W exact {exact_w:.5} sketched {sketched_w:.5} (|Δ| {:.5}, {rel}; bound {bound:.4}{})",
        (sketched_ks - exact_ks).abs(),
        (sketched_w - exact_w).abs(),
        if tails { ", exact tails" } else { "" }
    );
    (exact_w, sketched_w, bound)
}

#[test]
fn issue_17_sketched_ks_and_wasserstein_stay_within_their_bounds_on_adversarial_data() {
    for (i, name) in ["normal", "pareto", "cauchy", "mixture", "ties", "equal"]
        .into_iter()
        .enumerate()
    {
        for shift in [0.0, 0.5] {
            let a = sample(name, 0.0, 100 + i as u64);
            let b = sample(name, shift, 200 + i as u64);
            check_pair(&format!("{name} shift {shift}"), a, b);
        }
    }
}

/// The shape of `pareto_shift` in benches/evidently_compare.py (Pareto
/// α = 1.5 reference of 10⁵, α = 1.3 batch of 8·10⁴) and the same at 10⁶:
/// the plain sketch read 29 % / 46 % low here; with exact tails the error
/// is a few percent and the bound is an order of magnitude tighter.
#[test]
fn issue_17_exact_tails_bound_the_sketched_wasserstein_on_heavy_tails() {
    for (n, label) in [
        (N, "pareto 1.5 → 1.3, 10⁵"),
        (10 * N, "pareto 1.5 → 1.3, 10⁶"),
    ] {
        let a = sample_n("pareto", 0.0, 31, n);
        let b = sample_n("pareto13", 0.0, 32, n * 4 / 5);
        let (pa, pb) = (profile(&a), profile(&b));
        let (exact, sketched, bound) = check_pair(label, a, b);
        assert!(
            (sketched - exact).abs() / exact <= 0.1,
            "{label}: {sketched} vs {exact}"
        );
        // The plain sketch's bound, ε · (max − min) per side over σ_ref.
        let plain = |p: &ColumnProfile| {
            p.numeric.as_ref().map_or(f64::NAN, |s| {
                s.sketch.rank_error_bound() * (s.max.unwrap_or(0.0) - s.min.unwrap_or(0.0))
            })
        };
        let sigma = pa
            .numeric
            .as_ref()
            .and_then(|s| s.moments.std_population())
            .unwrap_or(1.0);
        let old = (plain(&pa) + plain(&pb)) / sigma;
        eprintln!("{label}: bound {bound:.4} with exact tails, {old:.4} without");
        assert!(
            bound * 5.0 < old,
            "{label}: bound {bound} vs {old} without tails"
        );
    }
    let a = sample_n("cauchy", 0.0, 33, 10 * N);
    let b = sample_n("cauchy", 0.5, 34, 10 * N);
    check_pair("cauchy shift 0.5, 10⁶", a, b);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]

    /// Random mixtures of a normal bulk and a Pareto tail of random weight
    /// and index, with ties from rounding, at 10⁵ values per side: the
    /// sketched KS and Wasserstein stay within their bounds.
    #[test]
    fn issue_17_sketched_statistics_stay_within_their_bounds_on_random_heavy_mixtures(
        seed in 0u64..1_000_000,
        tail_share in 0.0f64..0.3,
        alpha in 0.8f64..3.0,
        decimals in 0i32..4,
        shift in 0.0f64..1.0,
    ) {
        let draw = |seed: u64, shift: f64| {
            let mut rng = SplitMix(seed);
            let scale = 10f64.powi(decimals);
            (0..N)
                .map(|_| {
                    let x = if rng.uniform() < tail_share {
                        rng.uniform().max(1e-12).powf(-1.0 / alpha)
                    } else {
                        normal(&mut rng)
                    };
                    ((x + shift) * scale).round() / scale
                })
                .collect::<Vec<f64>>()
        };
        check_pair("random mixture", draw(seed, 0.0), draw(seed + 1, shift));
    }
}

/// Profiles stored before the exact tails existed (no `tails` field) still
/// load, take the plain sketch path, and merge into profiles without tails;
/// the same data with tails is closer to the exact distance.
#[test]
fn issue_17_profiles_stored_without_tails_still_load_and_take_the_plain_sketch() {
    let (mut a, mut b) = (
        sample_n("pareto", 0.0, 31, N),
        sample_n("pareto13", 0.0, 32, N * 4 / 5),
    );
    let (pa, pb) = (profile(&a), profile(&b));
    let mut json = serde_json::to_value(&pa).unwrap_or_default();
    assert!(
        json["numeric"]["tails"].is_object(),
        "new profiles store tails"
    );
    // What they cost: 128 distinct values per tail here (the worst case).
    let tails = &json["numeric"]["tails"];
    let runs = |side: &str| tails[side].as_array().map_or(0, Vec::len);
    assert_eq!((runs("low"), runs("high")), (128, 128));
    let bytes = serde_json::to_string(tails).map_or(0, |t| t.len());
    let whole = serde_json::to_string(&pa).map_or(0, |t| t.len());
    eprintln!("exact tails: {bytes} bytes of {whole} bytes of column profile JSON");
    assert!(bytes < 12_000, "{bytes}");
    if let Some(numeric) = json["numeric"].as_object_mut() {
        numeric.remove("tails");
    }
    let old: ColumnProfile =
        serde_json::from_value(json).unwrap_or_else(|e| panic!("old profile: {e}"));
    assert_eq!(old.numeric.as_ref().and_then(|s| s.tails.as_ref()), None);
    assert_eq!(wasserstein_side(&old).map(|s| s.tails), Some(false));
    let mut merged = old.clone();
    merged.merge(&pb, "x").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(merged.numeric.as_ref().and_then(|s| s.tails.as_ref()), None);
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let exact = wasserstein(&a, &b).map_or(f64::NAN, |o| o.statistic);
    let (plain, tails) = (
        run(&old, &pb, TestKind::Wasserstein),
        run(&pa, &pb, TestKind::Wasserstein),
    );
    eprintln!(
        "pareto 1.5 → 1.3: exact {exact:.5}, plain sketch {plain:.5}, exact tails {tails:.5}"
    );
    assert!((tails - exact).abs() * 3.0 < (plain - exact).abs());
}

/// Issue 17: on two samples of one distribution the exact distance is
/// sampling noise, and the sketched one used to be mostly sketch error
/// (normal, 10⁵ per side: 21 % above the exact value on average over 12
/// seeds with k = 1,024 and step CDFs). With k = 4,096 and the items spread
/// over their gaps (`interpolated`) it is within a few percent, so the
/// number a user checks against a raw-data tool agrees where it is small
/// too. Means and the worst seed are asserted; the figures are printed.
#[test]
fn issue_17_sketched_distance_of_identical_distributions_is_close_to_the_exact_one() {
    // Measured: mean 3.8 / 4.1 / 3.0 / 12.1 %, worst seed 9.0 / 8.5 / 14.3 /
    // 37.7 %. The log-normal (σ = 1.5) is the worst case left: its error
    // sits between the 99th percentile and the 128th largest value, where
    // the sketch's items are few and the exact tails do not reach yet
    // (1,024 tail values: 5.5 % mean, but `check` 15 % slower; docs/drift.md).
    for (name, mean_limit, worst_limit) in [
        ("normal", 0.05, 0.15),
        ("mixture", 0.05, 0.15),
        ("pareto", 0.05, 0.15),
        ("lognormal", 0.15, 0.40),
    ] {
        let mut errors = Vec::new();
        for seed in 0..8u64 {
            let mut a = sample_n(name, 0.0, 1000 + seed, N);
            let mut b = sample_n(name, 0.0, 5000 + seed, N);
            let sketched = run(&profile(&a), &profile(&b), TestKind::Wasserstein);
            a.sort_by(f64::total_cmp);
            b.sort_by(f64::total_cmp);
            let exact = wasserstein(&a, &b).map_or(f64::NAN, |o| o.statistic);
            errors.push((sketched - exact).abs() / exact);
            eprintln!("{name} seed {seed}: exact {exact:.5} sketched {sketched:.5}");
        }
        let mean = errors.iter().sum::<f64>() / errors.len() as f64;
        let worst = errors.iter().copied().fold(0.0, f64::max);
        eprintln!("{name}: relative error mean {mean:.4}, worst {worst:.4}");
        assert!(
            mean <= mean_limit && worst <= worst_limit,
            "{name}: mean {mean}, worst {worst}"
        );
    }
}
