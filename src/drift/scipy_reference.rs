//! Checks every drift test against the scipy/Evidently reference values in
//! `tests/fixtures/drift/reference.json` (made by `generate.py` beside it).
//! The inputs are stored in the file, so these tests need no Python.
//!
//! Tolerance: 1e-9 relative, or 1e-12 absolute for values near 0 (tiny
//! p-values computed as `1 − cdf` carry absolute, not relative, error).

use serde_json::Value;

use super::*;

/// Signature shared by the two-sample functions.
type BinnedFn = fn(&[f64], &[f64]) -> Result<TestOutcome>;

const REFERENCE: &str = include_str!("../../tests/fixtures/drift/reference.json");

fn data() -> Value {
    serde_json::from_str(REFERENCE).unwrap_or(Value::Null)
}

/// A number from the JSON; non-finite values are stored as strings.
fn num(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        Value::String(s) if s == "inf" => f64::INFINITY,
        Value::String(s) if s == "-inf" => f64::NEG_INFINITY,
        _ => f64::NAN,
    }
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .map(|a| a.iter().map(num).collect())
        .unwrap_or_default()
}

fn counts(v: &Value) -> Vec<u64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

fn cases<'a>(d: &'a Value, key: &str) -> &'a [Value] {
    let arr = d[key].as_array().map(Vec::as_slice).unwrap_or(&[]);
    assert!(!arr.is_empty(), "no {key} cases in reference.json");
    arr
}

/// Relative error of `got` against `want` (absolute when |want| < 1e-3),
/// asserting the 1e-9 / 1e-12 tolerance. Returns the relative error seen.
fn check(what: &str, got: f64, want: f64) -> f64 {
    if want.is_infinite() {
        assert_eq!(got, want, "{what}");
        return 0.0;
    }
    let abs = (got - want).abs();
    let rel = if want == 0.0 { abs } else { abs / want.abs() };
    assert!(
        rel <= 1e-9 || abs <= 1e-12,
        "{what}: got {got:e}, want {want:e} (rel {rel:e})"
    );
    if abs <= 1e-12 && rel > 1e-9 { 0.0 } else { rel }
}

fn name(c: &Value) -> &str {
    c["name"].as_str().unwrap_or("?")
}

#[test]
fn ks_matches_scipy_exact_and_asymptotic() {
    let d = data();
    let mut worst = 0.0f64;
    let mut methods = std::collections::BTreeSet::new();
    for c in cases(&d, "ks") {
        let (r, cur) = (floats(&c["ref"]), floats(&c["cur"]));
        let out = ks(&r, &cur).unwrap_or_else(|e| panic!("{}: {e}", name(c)));
        let n = name(c);
        worst = worst.max(check(n, out.statistic, num(&c["statistic"])));
        let p = out.p_value.unwrap_or(f64::NAN);
        worst = worst.max(check(n, p, num(&c["p_value"])));
        // symmetric in its arguments
        let back = ks(&cur, &r).unwrap_or_else(|e| panic!("{n}: {e}"));
        assert_eq!(back.statistic, out.statistic, "{n}");
        methods.insert(c["method"].as_str().unwrap_or("").to_string());
    }
    assert!(methods.contains("exact") && methods.contains("asymp"));
    eprintln!("ks: max relative error {worst:e}");
}

#[test]
fn kolmogorov_sf_matches_scipy_kstwo() {
    let d = data();
    let mut worst = 0.0f64;
    for c in cases(&d, "kstwo") {
        let n = c["n"].as_u64().unwrap_or(1);
        let x = num(&c["x"]);
        let got = kolmogorov_two_sided_sf(n, x);
        worst = worst.max(check(&format!("kstwo n={n} x={x}"), got, num(&c["sf"])));
    }
    eprintln!("kstwo: max relative error {worst:e}");
}

#[test]
fn categorical_tests_match_scipy_and_evidently() {
    let d = data();
    let mut worst = 0.0f64;
    for c in cases(&d, "categorical") {
        let n = name(c);
        let (r, cur) = (counts(&c["ref"]), counts(&c["cur"]));
        let chi = chisquare(&r, &cur).unwrap_or_else(|e| panic!("{n}: {e}"));
        let want_p = num(&c["chisquare"]["p_value"]);
        if want_p.is_nan() {
            // one category: scipy says NaN, we say "no drift" (documented)
            assert_eq!((chi.statistic, chi.p_value), (0.0, Some(1.0)), "{n}");
        } else {
            worst = worst.max(check(n, chi.statistic, num(&c["chisquare"]["statistic"])));
            worst = worst.max(check(n, chi.p_value.unwrap_or(f64::NAN), want_p));
        }
        if c.get("z").is_some() {
            let z = z_test(&r, &cur).unwrap_or_else(|e| panic!("{n}: {e}"));
            worst = worst.max(check(n, z.statistic, num(&c["z"]["statistic"])));
            worst = worst.max(check(
                n,
                z.p_value.unwrap_or(f64::NAN),
                num(&c["z"]["p_value"]),
            ));
        }
        let (rf, cf): (Vec<f64>, Vec<f64>) = (
            r.iter().map(|v| *v as f64).collect(),
            cur.iter().map(|v| *v as f64).collect(),
        );
        let runs: [(&str, BinnedFn); 5] = [
            ("jensenshannon", jensenshannon),
            ("psi", psi),
            ("kl_div", kl_div),
            ("hellinger", hellinger),
            ("tvd", tvd),
        ];
        for (key, f) in runs {
            let out = f(&rf, &cf).unwrap_or_else(|e| panic!("{n} {key}: {e}"));
            assert!(out.p_value.is_none());
            worst = worst.max(check(&format!("{n} {key}"), out.statistic, num(&c[key])));
        }
    }
    eprintln!("categorical: max relative error {worst:e}");
}

#[test]
fn numeric_distances_match_scipy() {
    let d = data();
    let mut worst = 0.0f64;
    for c in cases(&d, "numeric") {
        let n = name(c);
        let (r, cur) = (floats(&c["ref"]), floats(&c["cur"]));
        let w = wasserstein(&r, &cur).unwrap_or_else(|e| panic!("{n}: {e}"));
        worst = worst.max(check(
            &format!("{n} wasserstein"),
            w.statistic,
            num(&c["wasserstein"]),
        ));
        let e = energy(&r, &cur).unwrap_or_else(|e| panic!("{n}: {e}"));
        worst = worst.max(check(
            &format!("{n} energy"),
            e.statistic,
            num(&c["energy"]),
        ));
    }
    for c in cases(&d, "binned_numeric") {
        let n = name(c);
        let js = jensenshannon(&floats(&c["ref"]), &floats(&c["cur"]))
            .unwrap_or_else(|e| panic!("{n}: {e}"));
        worst = worst.max(check(n, js.statistic, num(&c["jensenshannon"])));
    }
    eprintln!("numeric: max relative error {worst:e}");
}

#[test]
fn location_tests_match_scipy() {
    let d = data();
    let mut worst = 0.0f64;
    for c in cases(&d, "location") {
        let n = name(c);
        let (r, cur) = (floats(&c["ref"]), floats(&c["cur"]));
        let runs: [(&str, BinnedFn); 4] = [
            ("anderson", anderson),
            ("mannw", mannw),
            ("t_test", t_test),
            ("cramer_von_mises", cramer_von_mises),
        ];
        for (key, f) in runs {
            let out = f(&r, &cur).unwrap_or_else(|e| panic!("{n} {key}: {e}"));
            let what = format!("{n} {key}");
            worst = worst.max(check(&what, out.statistic, num(&c[key]["statistic"])));
            let p = out.p_value.unwrap_or(f64::NAN);
            worst = worst.max(check(&what, p, num(&c[key]["p_value"])));
        }
    }
    eprintln!("location: max relative error {worst:e}");
}
