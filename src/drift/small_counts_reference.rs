//! Issue 17: the homogeneity tests' small-sample p-values against scipy
//! (`tests/fixtures/drift/small_counts.json`, made once by
//! `generate_small_counts.py` beside it; no Python at test time), plus
//! property tests of their invariants.
//!
//! Fisher's exact and the exact conditional p-values must equal scipy's to
//! 1e-9; Monte Carlo ones must be within four standard errors of both
//! Monte Carlo estimates (driftwatch's 10,000 tables, the fixture's 10⁶)
//! and bit-identical from run to run. Each case also runs through
//! [`compare`] so the report's `p_value_method` and message are checked.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::Value;

use super::categorical_reference::{profile_rows, run};
use super::compare::ColumnDrift;
use super::exact::MONTE_CARLO_TABLES;
use super::{
    PValueMethod, TestKind, chisquare_homogeneity, chisquare_homogeneity_with_method, g_test,
    g_test_with_method, needs_exact,
};

const CASES: &str = include_str!("../../tests/fixtures/drift/small_counts.json");

fn cases() -> Vec<Value> {
    let v: Value = serde_json::from_str(CASES).unwrap_or(Value::Null);
    let cases = v["cases"].as_array().cloned().unwrap_or_default();
    assert!(cases.len() >= 17, "small_counts.json has its cases");
    cases
}

fn row(v: &Value) -> Vec<u64> {
    v.as_array()
        .map(|a| a.iter().map(|c| c.as_u64().unwrap_or(0)).collect())
        .unwrap_or_default()
}

fn method(name: &str) -> PValueMethod {
    match name {
        "asymptotic" => PValueMethod::Asymptotic,
        "fisher_exact" => PValueMethod::FisherExact,
        "exact_conditional" => PValueMethod::ExactConditional,
        "monte_carlo" => PValueMethod::MonteCarlo,
        other => panic!("unknown method {other}"),
    }
}

/// The column through the engine: rows profiled, then `compare`.
fn through_compare(r: &[u64], c: &[u64], kind: TestKind) -> ColumnDrift {
    let labels: Vec<String> = (0..r.len()).map(|i| format!("c{i:02}")).collect();
    let expand = |counts: &[u64]| -> Vec<&str> {
        counts
            .iter()
            .zip(&labels)
            .flat_map(|(&n, l)| std::iter::repeat_n(l.as_str(), n as usize))
            .collect()
    };
    let profile =
        |counts: &[u64]| profile_rows(&expand(counts), crate::profile::DEFAULT_CATEGORY_LIMIT);
    run(&profile(r), &profile(c), kind)
}

#[test]
fn issue_17_small_counts_take_fisher_or_exact_p_values_equal_to_scipy() {
    let mut worst = 0.0f64;
    let mut seen = BTreeMap::new();
    for case in cases() {
        let name = case["name"].as_str().unwrap_or("?").to_string();
        let (r, c) = (row(&case["ref"]), row(&case["cur"]));
        let want_method = method(case["method"].as_str().unwrap_or("?"));
        *seen.entry(want_method.name()).or_insert(0) += 1;
        assert_eq!(
            needs_exact(&r, &c),
            case["cochran"].as_bool() == Some(true),
            "{name}: Cochran's rule"
        );
        for kind in [TestKind::ChisquareHomogeneity, TestKind::GTest] {
            let (outcome, got_method) = if kind == TestKind::GTest {
                g_test_with_method(&r, &c)
            } else {
                chisquare_homogeneity_with_method(&r, &c)
            }
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got_method, want_method, "{name} {}", kind.name());
            let want = &case[kind.name()];
            let stat = want["statistic"].as_f64().unwrap_or(f64::NAN);
            assert!(
                (outcome.statistic - stat).abs() <= 1e-9 * stat.abs().max(1.0),
                "{name} {}: statistic {} vs scipy {stat}",
                kind.name(),
                outcome.statistic
            );
            let p = outcome.p_value.unwrap_or(f64::NAN);
            let want_p = want["p_value"].as_f64().unwrap_or(f64::NAN);
            if want_method == PValueMethod::MonteCarlo {
                let se_ref = case["se_reference"][kind.name()].as_f64().unwrap_or(1.0);
                let se_ours = (want_p * (1.0 - want_p) / MONTE_CARLO_TABLES as f64)
                    .sqrt()
                    .max(1.0 / MONTE_CARLO_TABLES as f64);
                let tolerance = 4.0 * (se_ref + se_ours);
                assert!(
                    (p - want_p).abs() <= tolerance,
                    "{name} {}: Monte Carlo p {p} vs scipy's {want_p} (± {tolerance})",
                    kind.name()
                );
                // Seeded: the same counts give the same p-value.
                let again = if kind == TestKind::GTest {
                    g_test(&r, &c)
                } else {
                    chisquare_homogeneity(&r, &c)
                };
                assert_eq!(again.ok().and_then(|o| o.p_value), Some(p), "{name}");
                eprintln!(
                    "{name} {}: Monte Carlo p {p:.5}, scipy 10⁶ tables {want_p:.5}",
                    kind.name()
                );
            } else {
                let e = (p - want_p).abs();
                assert!(e <= 1e-9, "{name} {}: p {p} vs scipy {want_p}", kind.name());
                worst = worst.max(e);
            }
            // The engine reports the same p-value and names the path.
            let d = through_compare(&r, &c, kind);
            assert_eq!(d.p_value, Some(p), "{name} {}", kind.name());
            assert_eq!(d.p_value_method, Some(want_method), "{name}");
            if want_method == PValueMethod::Asymptotic {
                assert_eq!(d.message, None, "{name}");
            } else {
                assert_eq!(d.message.as_deref(), Some(want_method.describe()), "{name}");
            }
        }
    }
    eprintln!("small-sample p-values: paths {seen:?}, largest |p − scipy| {worst:e}");
    assert_eq!(seen.len(), 4, "every path has a case: {seen:?}");
}

#[test]
fn issue_17_report_json_names_the_p_value_method() {
    let d = through_compare(&[8, 2], &[1, 5], TestKind::ChisquareHomogeneity);
    let json = serde_json::to_value(&d).unwrap_or(Value::Null);
    assert_eq!(json["p_value_method"], "fisher_exact");
    // scipy.stats.fisher_exact([[8, 2], [1, 5]]).pvalue
    assert!((json["p_value"].as_f64().unwrap_or(0.0) - 0.034965034965034975).abs() <= 1e-12);
    let d = through_compare(&[40, 30, 20, 10], &[35, 30, 25, 10], TestKind::GTest);
    let json = serde_json::to_value(&d).unwrap_or(Value::Null);
    assert_eq!(json["p_value_method"], "asymptotic");
    // Other tests carry no such field.
    let d = through_compare(&[8, 2], &[1, 5], TestKind::Chisquare);
    let json = serde_json::to_value(&d).unwrap_or(Value::Null);
    assert!(json.get("p_value_method").is_none(), "{json}");
}

/// Small 2×k count vectors (k = 2..6), counts 0..12: mostly tiny tables.
fn small_table() -> impl Strategy<Value = (Vec<u64>, Vec<u64>)> {
    (2usize..=6).prop_flat_map(|k| {
        (
            prop::collection::vec(0u64..12, k),
            prop::collection::vec(0u64..12, k),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// p in [0, 1], the same p-value (and path) whichever sample is called
    /// the reference, and p = 1 for identical 2×2 samples as in scipy.
    #[test]
    fn issue_17_small_sample_p_values_are_valid_and_symmetric((r, c) in small_table()) {
        prop_assume!(r.iter().sum::<u64>() > 0 && c.iter().sum::<u64>() > 0);
        for f in [chisquare_homogeneity_with_method, g_test_with_method] {
            let (a, ma) = f(&r, &c).unwrap_or_else(|e| panic!("{e}"));
            let (b, mb) = f(&c, &r).unwrap_or_else(|e| panic!("{e}"));
            let (pa, pb) = (a.p_value.unwrap_or(f64::NAN), b.p_value.unwrap_or(f64::NAN));
            prop_assert!((0.0..=1.0).contains(&pa), "p = {pa}");
            prop_assert_eq!(ma, mb);
            prop_assert!((pa - pb).abs() <= 1e-12, "{pa} vs {pb} swapped");
            prop_assert!((a.statistic - b.statistic).abs() <= 1e-9 * a.statistic.abs().max(1.0));
            let (same, m) = f(&r, &r).unwrap_or_else(|e| panic!("{e}"));
            if m == PValueMethod::FisherExact {
                prop_assert_eq!(same.p_value, Some(1.0));
            }
            if m == PValueMethod::ExactConditional {
                // The observed table is the least extreme one: p = 1.
                prop_assert!((same.p_value.unwrap_or(0.0) - 1.0).abs() <= 1e-12);
            }
        }
    }

    /// Fisher's p-value of a 2×2 table never exceeds 1 and is never below
    /// the probability of the observed table itself (it includes it).
    #[test]
    fn issue_17_fisher_includes_the_observed_table(a in 0u64..15, b in 0u64..15, c in 0u64..15, d in 0u64..15) {
        prop_assume!(a + b > 0 && c + d > 0 && a + c > 0 && b + d > 0);
        let (o, m) = chisquare_homogeneity_with_method(&[a, b], &[c, d]).unwrap_or_else(|e| panic!("{e}"));
        if m == PValueMethod::FisherExact {
            let ln_c = statrs::function::factorial::ln_binomial;
            let (n_row, col, n) = (a + b, a + c, a + b + c + d);
            let p_obs = (ln_c(col, a) + ln_c(n - col, n_row - a) - ln_c(n, n_row)).exp();
            let p = o.p_value.unwrap_or(f64::NAN);
            prop_assert!(p >= p_obs * (1.0 - 1e-9) && p <= 1.0, "p {p} < P(observed) {p_obs}");
        }
    }
}
