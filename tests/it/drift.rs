//! `check --reference` and the rule file's `drift:` section, end to end:
//! baseline → profile file → check with a drift section, exit codes, edge cases.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use serde_json::Value;

use crate::common::{driftwatch, text, write_parquet};

/// `x`: `n` values evenly spread over `[shift, shift + 1000)` (shuffled).
fn xs(n: usize, shift: f64) -> Vec<f64> {
    (0..n)
        .map(|i| shift + ((i as f64 * 7919.0) % n as f64) * 1000.0 / n as f64)
        .collect()
}

/// `x` as [`xs`]; `cat`: the given categories and counts; `small`: `i % 200`.
fn batch(n: usize, shift: f64, cats: &[(&str, usize)], with_small: bool) -> RecordBatch {
    let x = xs(n, shift);
    let mut cat: Vec<&str> = Vec::with_capacity(n);
    for (value, count) in cats {
        cat.extend(std::iter::repeat_n(*value, *count));
    }
    cat.resize(n, cats.last().map_or("a", |c| c.0));
    let mut fields = vec![
        Field::new("x", DataType::Float64, true),
        Field::new("cat", DataType::Utf8, true),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(Float64Array::from(x)),
        Arc::new(StringArray::from(cat)),
    ];
    if with_small {
        fields.push(Field::new("small", DataType::Int64, true));
        columns.push(Arc::new(Int64Array::from(
            (0..n as i64).map(|i| i % 200).collect::<Vec<_>>(),
        )));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

struct Lake {
    dir: tempfile::TempDir,
}

impl Lake {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn write(&self, name: &str, batch: &RecordBatch) -> PathBuf {
        let p = self.path(name);
        write_parquet(&p, batch, 1000);
        p
    }
    fn rules(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

fn run(args: &[&Path]) -> (i32, Value, String) {
    let args: Vec<String> = args.iter().map(|p| p.display().to_string()).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = driftwatch(&args);
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), json, text(&out.stderr))
}

fn column<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["reports"][0]["drift"]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["column"] == name)
        .unwrap_or_else(|| panic!("no drift column {name} in {report}"))
}

fn baseline(lake: &Lake, data: &Path, rules: &Path) -> PathBuf {
    let out = lake.path("ref.profile");
    let (code, _, stderr) = run(&[
        Path::new("baseline"),
        data,
        Path::new("--rules"),
        rules,
        Path::new("--output"),
        &out,
    ]);
    assert_eq!(code, 0, "{stderr}");
    out
}

fn check(data: &Path, rules: &Path, reference: Option<&Path>) -> (i32, Value, String) {
    let mut args: Vec<&Path> = vec![
        Path::new("check"),
        data,
        Path::new("--rules"),
        rules,
        Path::new("--format"),
        Path::new("json"),
    ];
    if let Some(r) = reference {
        args.push(Path::new("--reference"));
        args.push(r);
    }
    run(&args)
}

#[test]
fn same_distribution_no_drift_shifted_distribution_drifts() {
    let lake = Lake::new();
    let reference = lake.write(
        "ref.parquet",
        &batch(4000, 0.0, &[("a", 2000), ("b", 1500), ("c", 500)], true),
    );
    let same = lake.write(
        "same.parquet",
        &batch(3000, 0.0, &[("a", 1500), ("b", 1125), ("c", 375)], true),
    );
    let shifted = lake.write(
        "shifted.parquet",
        &batch(3000, 500.0, &[("a", 300), ("b", 300), ("c", 2400)], true),
    );
    let rules = lake.rules("rules.yaml", "dataset: t\nchecks: []\n");
    let profile = baseline(&lake, &reference, &rules);

    let (code, report, stderr) = check(&same, &rules, Some(&profile));
    assert_eq!(code, 0, "{stderr} {report}");
    let drift = &report["reports"][0]["drift"];
    assert_eq!(drift["drifted_share"], 0.0, "{drift:#}");
    assert_eq!(drift["dataset_drift"], false);
    assert_eq!(drift["correction"], "none");
    // n_ref = 4000 > 1000: numeric with many values → wasserstein; few values → jensenshannon.
    let x = column(&report, "x");
    assert_eq!(
        (
            x["type"].as_str(),
            x["test"].as_str(),
            x["p_value"].is_null()
        ),
        (Some("numeric"), Some("wasserstein"), true)
    );
    assert!(x["statistic"].as_f64().unwrap() < 0.01, "{x}");
    assert_eq!(column(&report, "cat")["test"], "jensenshannon");
    assert_eq!(column(&report, "cat")["statistic"], 0.0);
    // `small` has 200 distinct values: one bin per value.
    assert_eq!(column(&report, "small")["test"], "wasserstein");

    let (code, report, _) = check(&shifted, &rules, Some(&profile));
    assert_eq!(code, 1, "dataset drift fails the batch: {report}");
    let drift = &report["reports"][0]["drift"];
    assert_eq!(drift["dataset_drift"], true);
    assert_eq!(report["reports"][0]["passed"], false);
    let x = column(&report, "x");
    assert_eq!(x["drifted"], true);
    // A shift of 500 on a uniform grid of step 0.25 over [0, 1000): std = 0.25·√((4000² − 1)/12).
    let std = 0.25 * ((4000.0f64 * 4000.0 - 1.0) / 12.0).sqrt();
    let w = x["statistic"].as_f64().unwrap();
    assert!((w - 500.0 / std).abs() < 0.01, "{w} vs {}", 500.0 / std);
    assert_eq!(column(&report, "cat")["drifted"], true);
    assert_eq!(column(&report, "small")["drifted"], false);
}

#[test]
fn drift_section_in_the_rule_file_with_overrides_and_correction() {
    let lake = Lake::new();
    let reference = lake.write(
        "ref.parquet",
        &batch(500, 0.0, &[("a", 250), ("b", 250)], false),
    );
    let current = lake.write(
        "cur.parquet",
        &batch(400, 40.0, &[("a", 150), ("b", 250)], false),
    );
    let plain = lake.rules("plain.yaml", "dataset: t\n");
    let profile = baseline(&lake, &reference, &plain);
    std::fs::rename(&profile, lake.path("t.profile")).unwrap();
    let rules = lake.rules(
        "rules.yaml",
        "dataset: t\ndrift:\n  reference: t.profile\n  columns: [x, cat]\n  correction: bonferroni\n  drift_share: 0.5\n  severity: warn\n  overrides:\n    x: { test: mannw, threshold: 0.01 }\n",
    );
    let (code, report, stderr) = check(&current, &rules, None);
    assert_eq!(
        code, 0,
        "warn severity never fails the batch: {stderr} {report}"
    );
    let drift = &report["reports"][0]["drift"];
    assert_eq!(
        drift["reference"],
        lake.path("t.profile").display().to_string()
    );
    assert_eq!(
        (drift["correction"].as_str(), drift["severity"].as_str()),
        (Some("bonferroni"), Some("warn"))
    );
    // n_ref = 500 ≤ 1000: `cat` has 2 values → z; `x` is overridden to mannw.
    let x = column(&report, "x");
    assert_eq!(
        (x["test"].as_str(), x["threshold"].as_f64()),
        (Some("mannw"), Some(0.01))
    );
    let cat = column(&report, "cat");
    assert_eq!(cat["test"], "z");
    // Bonferroni over the two p-value tests.
    for c in [x, cat] {
        let (p, adj) = (
            c["p_value"].as_f64().unwrap(),
            c["p_value_adjusted"].as_f64().unwrap(),
        );
        assert!((adj - (2.0 * p).min(1.0)).abs() < 1e-12, "{c}");
    }
    assert_eq!(cat["drifted"], true, "{cat}");
    assert_eq!(report["reports"][0]["passed"], true);
}

#[test]
fn small_samples_use_the_exact_ks_test() {
    let lake = Lake::new();
    let reference = lake.write("ref.parquet", &batch(300, 0.0, &[("a", 300)], false));
    let current = lake.write("cur.parquet", &batch(200, 30.0, &[("a", 200)], false));
    let rules = lake.rules("rules.yaml", "dataset: t\n");
    let profile = baseline(&lake, &reference, &rules);
    let (_, report, _) = check(&current, &rules, Some(&profile));
    let x = column(&report, "x");
    assert_eq!(x["test"], "ks");
    let sorted = |n: usize, shift: f64| {
        let mut v = xs(n, shift);
        v.sort_by(f64::total_cmp);
        v
    };
    let exact = driftwatch::drift::ks(&sorted(300, 0.0), &sorted(200, 30.0)).unwrap();
    assert_eq!(x["statistic"].as_f64(), Some(exact.statistic));
    assert_eq!(x["p_value"].as_f64(), exact.p_value);
    assert_eq!(x["message"], Value::Null);
    // One category on both sides: z on a single value is not applicable → not tested.
    let cat = column(&report, "cat");
    assert_eq!(cat["drifted"], false);
}

#[test]
fn edge_cases_have_defined_answers() {
    let lake = Lake::new();
    let reference = lake.write(
        "ref.parquet",
        &batch(2000, 0.0, &[("a", 1000), ("b", 1000)], true),
    );
    let rules = lake.rules("rules.yaml", "dataset: t\n");
    let profile = baseline(&lake, &reference, &rules);

    // `small` missing, `x` now a string, `cat` all null plus a new category elsewhere.
    let schema = Arc::new(Schema::new(vec![
        Field::new("x", DataType::Utf8, true),
        Field::new("cat", DataType::Utf8, true),
    ]));
    let odd = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["1"; 10])) as ArrayRef,
            Arc::new(StringArray::from(vec![None::<&str>; 10])),
        ],
    )
    .unwrap();
    let odd = lake.write("odd.parquet", &odd);
    let (code, report, _) = check(&odd, &rules, Some(&profile));
    assert_eq!(code, 1);
    assert_eq!(
        column(&report, "small")["message"],
        "column missing in the batch (or of an unprofiled type)"
    );
    assert_eq!(
        column(&report, "x")["message"],
        "type changed from numeric (float64) to categorical (utf8)"
    );
    assert_eq!(
        column(&report, "cat")["message"],
        "no non-null (finite) value in the batch"
    );
    for c in ["small", "x", "cat"] {
        assert_eq!(column(&report, c)["drifted"], true);
        assert_eq!(column(&report, c)["statistic"], Value::Null);
    }

    // An empty batch is not tested.
    let empty = lake.write(
        "empty.parquet",
        &batch(2000, 0.0, &[("a", 2000)], true).slice(0, 0),
    );
    let (code, report, _) = check(&empty, &rules, Some(&profile));
    assert_eq!(code, 0, "{report}");
    let drift = &report["reports"][0]["drift"];
    assert_eq!(
        (
            drift["dataset_drift"].as_bool(),
            drift["drifted_share"].is_null()
        ),
        (Some(false), true)
    );

    // A category absent from the reference on a small reference: chisquare is infinite.
    let small_ref = lake.write(
        "small_ref.parquet",
        &batch(100, 0.0, &[("a", 50), ("b", 50)], false),
    );
    let small_rules = lake.rules("small.yaml", "dataset: s\n");
    let out = lake.path("small.profile");
    let (code, _, stderr) = run(&[
        Path::new("baseline"),
        &small_ref,
        Path::new("--rules"),
        &small_rules,
        Path::new("--output"),
        &out,
    ]);
    assert_eq!(code, 0, "{stderr}");
    let novel = lake.write(
        "novel.parquet",
        &batch(100, 0.0, &[("a", 40), ("b", 40), ("zzz", 20)], false),
    );
    let (_, report, _) = check(&novel, &small_rules, Some(&out));
    let cat = column(&report, "cat");
    assert_eq!(
        (
            cat["test"].as_str(),
            cat["p_value"].as_f64(),
            cat["drifted"].as_bool()
        ),
        (Some("chisquare"), Some(0.0), Some(true))
    );
    assert_eq!(cat["statistic"], Value::Null);
    assert!(
        cat["message"]
            .as_str()
            .unwrap()
            .starts_with("statistic is inf"),
        "{cat}"
    );
}

#[test]
fn unusable_references_are_errors_with_exit_2() {
    let lake = Lake::new();
    let data = lake.write("d.parquet", &batch(10, 0.0, &[("a", 10)], false));
    let rules = lake.rules(
        "rules.yaml",
        "dataset: t\nchecks:\n  - row_count: { min: 1 }\n",
    );
    let missing = lake.path("missing.profile");
    let (code, report, _) = check(&data, &rules, Some(&missing));
    assert_eq!(code, 2);
    let error = report["reports"][0]["drift"]["error"].as_str().unwrap();
    assert!(error.starts_with(&missing.display().to_string()), "{error}");
    // The checks still ran.
    assert_eq!(report["reports"][0]["checks"][0]["status"], "pass");

    let junk = lake.rules(
        "junk.profile",
        "{\"format\": \"driftwatch-profile\", \"version\": 7}",
    );
    let (code, report, _) = check(&data, &rules, Some(&junk));
    assert_eq!(code, 2);
    assert!(
        report["reports"][0]["drift"]["error"]
            .as_str()
            .unwrap()
            .contains("version 7 is not supported")
    );

    let no_reference = lake.rules("noref.yaml", "dataset: t\ndrift:\n  drift_share: 0.3\n");
    let (code, report, _) = check(&data, &no_reference, None);
    assert_eq!(code, 2);
    assert_eq!(
        report["reports"][0]["drift"]["error"],
        format!(
            "{}:3:3: a `drift:` section needs a `reference` (or `check --reference FILE`)",
            no_reference.display()
        )
    );
}

#[test]
fn bad_drift_sections_name_their_location() {
    let lake = Lake::new();
    for (yaml, expected) in [
        (
            "dataset: t\ndrift:\n  drift_shar: 0.5\n",
            ":3:3: unknown field `drift_shar`",
        ),
        (
            "dataset: t\ndrift:\n  drift_share: 1.5\n",
            ":3:3: `drift_share` must be in (0, 1], got 1.5",
        ),
        (
            "dataset: t\ndrift:\n  reference: { rolling: { batches: 0 } }\n",
            ":3:3: `rolling.batches` must be between 1 and 1000, got 0",
        ),
        (
            "dataset: t\ndrift:\n  correction: holm\n",
            ":3:15: unknown variant `holm`",
        ),
        (
            "dataset: t\ndrift:\n  overrides:\n    x: { test: magic }\n",
            ":4:16: unknown variant `magic`",
        ),
        (
            "dataset: t\ndrift:\n  max_categories: 0\n",
            ":3:3: `max_categories` must be between 1 and 1048576, got 0",
        ),
        (
            "dataset: t\ndrift:\n  overrides:\n    x: { max_categories: 2000000 }\n",
            ":3:3: `overrides.x.max_categories` must be between 1 and 1048576, got 2000000",
        ),
        (
            "dataset: t\ndrift:\n  defaults: careful\n",
            ":3:13: unknown variant `careful`",
        ),
        (
            "dataset: t\ndrift:\n  sequential: { windows: 0 }\n",
            ":3:15: `sequential.windows` must be between 1 and 1000000000, got 0",
        ),
        (
            "dataset: t\ndrift:\n  sequential: { false_alarm: 1.5 }\n",
            ":3:15: `sequential.false_alarm` must be in (0, 1), got 1.5",
        ),
        (
            "dataset: t\ndrift:\n  defaults: sound\n  sequential: {}\n",
            ":3:13: `sequential` needs p-value tests: `defaults: p_values` (or leave `defaults` out)",
        ),
        (
            "dataset: t\ndrift:\n  correction: bonferroni\n  sequential: {}\n",
            ":4:15: `sequential` needs no multiple-testing `correction` (its threshold already accounts for the columns)",
        ),
        (
            "dataset: t\ndrift:\n  reference: { rolling: { batches: 3 } }\n  sequential: {}\n",
            ":4:15: `sequential` needs a fixed reference (a profile file): a rolling reference makes successive windows' p-values dependent",
        ),
        (
            "dataset: t\ndrift:\n  overrides:\n    x: { test: psi }\n  sequential: {}\n",
            ":5:15: `sequential` needs p-value tests; `overrides.x.test` is the distance `psi`",
        ),
    ] {
        let rules = lake.rules("bad.yaml", yaml);
        let out = driftwatch(&["rules", "check", rules.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2));
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&format!("{}{expected}", rules.display())),
            "{stderr}"
        );
    }
}

#[test]
fn rolling_reference_in_check_uses_the_previous_inputs_of_the_run() {
    let lake = Lake::new();
    std::fs::create_dir_all(lake.path("data")).unwrap();
    let cats = [("a", 2500), ("b", 2500)];
    // Inputs are taken in name order: two alike, then one shifted.
    lake.write("data/1.parquet", &batch(5000, 0.0, &cats, false));
    lake.write("data/2.parquet", &batch(5000, 0.0, &cats, false));
    lake.write("data/3.parquet", &batch(5000, 500.0, &cats, false));
    let rules = lake.rules(
        "rules.yaml",
        "dataset: t\ndrift:\n  reference: { rolling: { batches: 1 } }\n  columns: [x]\n",
    );
    let (code, report, stderr) = check(&lake.path("data"), &rules, None);
    assert_eq!(code, 1, "{stderr}");
    let drift = |i: usize| report["reports"][i]["drift"].clone();
    assert_eq!(drift(0)["reference"], "rolling (previous 1 batches)");
    assert_eq!(
        drift(0)["message"],
        "rolling reference has 0 of 1 batches; drift is tested once it has at least one"
    );
    assert_eq!(drift(0)["columns"], serde_json::json!([]));
    assert_eq!(drift(1)["dataset_drift"], false);
    assert_eq!(drift(1)["columns"][0]["statistic"], 0.0);
    // 3 against 2 alone (a window of one batch): shifted by half the range.
    assert_eq!(drift(2)["dataset_drift"], true);
    assert_eq!(report["reports"][2]["passed"], false);
}

/// `n` values of N(`shift`, 1): inverse-CDF draws from a seeded SplitMix64.
pub(crate) fn normals(n: usize, shift: f64, seed: u64) -> RecordBatch {
    use statrs::distribution::{ContinuousCDF, Normal};
    let normal = Normal::new(0.0, 1.0).unwrap();
    let mut state = seed;
    let x: Vec<f64> = (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            let u = ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64;
            normal.inverse_cdf(u.clamp(1e-12, 1.0 - 1e-12)) + shift
        })
        .collect();
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, true)])),
        vec![Arc::new(Float64Array::from(x)) as ArrayRef],
    )
    .unwrap()
}

#[test]
fn issue_17_sequential_check_carries_evidence_across_inputs_and_bounds_false_alarms() {
    // A reference of 20,000 rows; 8 windows of 200 rows in name order: four
    // alike, then four shifted by 0.3 standard deviations. A per-window ks
    // at α = 0.05 flags every shifted window; the sequential detector
    // (c = T·k/α = 100·1/0.05 = 2,000) accumulates their evidence and
    // alarms once it is enough, and never on the alike ones.
    let lake = Lake::new();
    std::fs::create_dir_all(lake.path("data")).unwrap();
    lake.write("ref.parquet", &normals(20_000, 0.0, 1));
    for w in 0..8u64 {
        let shift = if w < 4 { 0.0 } else { 0.3 };
        lake.write(&format!("data/w{w}.parquet"), &normals(200, shift, 100 + w));
    }
    let rules = lake.rules(
        "rules.yaml",
        "dataset: t\ndrift:\n  reference: ref.profile\n  sequential: { windows: 100, false_alarm: 0.05 }\n",
    );
    let reference = baseline(&lake, &lake.path("ref.parquet"), &rules);
    let (code, report, stderr) = check(&lake.path("data"), &rules, Some(&reference));
    assert_eq!(code, 1, "{stderr}");
    let window = |i: usize| report["reports"][i]["drift"].clone();
    let rows: Vec<(String, f64, f64, bool, bool)> = (0..8)
        .map(|i| {
            let d = window(i);
            let x = &d["columns"][0];
            let s = &d["sequential"]["columns"]["x"];
            assert_eq!(x["test"], "ks");
            (
                format!("{:.4}", x["p_value"].as_f64().unwrap()),
                (s["statistic"].as_f64().unwrap() * 100.0).round() / 100.0,
                d["sequential"]["threshold"].as_f64().unwrap(),
                x["drifted"].as_bool().unwrap(),
                d["dataset_drift"].as_bool().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, f64, f64, bool, bool)> = [
        // Alike: window 0's p = 0.0166 is a per-window false alarm at
        // α = 0.05; its e-value (3.89) is far from the threshold.
        // (The reference's 20,000 values are sketched: these p-values moved
        // within the sketch's bound when batches became sorted runs, again
        // when a partition's first 16,384 distinct values came to be
        // counted exactly and sketched once, issue 19, and when the sketch
        // grew from 1,024 to 4,096 items per level, issue 17.)
        ("0.0166", 3.89, false),
        ("0.1214", 7.01, false),
        ("0.1737", 9.61, false),
        ("0.9611", 5.41, false),
        // Shifted: evidence accumulates, the alarm comes at the second
        // shifted window and the detector starts again from 0.
        ("0.0000", 573.17, false),
        ("0.0001", 24852.37, true),
        ("0.0060", 6.47, false),
        ("0.0049", 53.4, false),
    ]
    .into_iter()
    .map(|(p, r, alarm)| (p.to_string(), r, 2000.0, alarm, alarm))
    .collect();
    assert_eq!(rows, expected, "{rows:?}");
    assert_eq!(window(0)["sequential"]["message"], Value::Null);
    // The terminal table says whose verdict it is: w5 alone (p = 0.0001)
    // is one window of evidence, R = e = 43.28, below the threshold.
    let out = driftwatch(&[
        "check",
        lake.path("data/w5.parquet").to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
        "--reference",
        reference.to_str().unwrap(),
        "--format",
        "table",
    ]);
    let table = text(&out.stdout);
    assert!(
        table.contains(
            "    sequential: drift when R >= 2000 (P(any false alarm within 100 windows) <= 0.05); R: x 43.28"
        ),
        "{table}"
    );

    // The HTML report shows each window's detector: w5's alarm and w6's
    // restart, with the e-value, R and the threshold.
    let html = lake.path("sequential.html");
    let out = driftwatch(&[
        "check",
        lake.path("data").to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
        "--reference",
        reference.to_str().unwrap(),
        "--format",
        "html",
        "--output",
        html.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let page = std::fs::read_to_string(&html).unwrap();
    let heading = "<h3>Sequential detector</h3><p class=\"note\">shiryaev_roberts: drift when \
                   R ≥ c = 2000; P(any false alarm within 100 windows) ≤ 0.05</p>";
    assert_eq!(page.matches(heading).count(), 8, "{page}");
    for row in [
        "<tr><td>x</td><td class=\"num\">3.885</td><td class=\"num\">3.885</td><td class=\"num\">2000</td><td class=\"pass\">no</td></tr>",
        "<tr><td>x</td><td class=\"num\">43.2841</td><td class=\"num\">24852.3653</td><td class=\"num\">2000</td><td class=\"fail\">yes</td></tr>",
        "<tr><td>x</td><td class=\"num\">6.4704</td><td class=\"num\">6.4704</td><td class=\"num\">2000</td><td class=\"pass\">no</td></tr>",
    ] {
        assert!(page.contains(row), "{row} not in {page}");
    }
    let doc = roxmltree::Document::parse_with_options(
        &page,
        roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        },
    )
    .expect("the report is well-formed");
    let alarms = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("sequential"))
        .flat_map(|t| t.descendants().filter(|n| n.has_tag_name("tr")))
        .filter(|tr| tr.children().any(|td| td.text() == Some("yes")))
        .count();
    assert_eq!(alarms, 1);

    // Too small a reference for 100,000 windows of 200 rows: said so.
    let rules = lake.rules(
        "long.yaml",
        "dataset: t\ndrift:\n  reference: ref.profile\n  sequential: { windows: 100000 }\n",
    );
    let (_, report, stderr) = check(&lake.path("data/w0.parquet"), &rules, Some(&reference));
    assert_eq!(
        report["reports"][0]["drift"]["sequential"]["message"],
        "the reference has 20000 rows: over 100000 windows of 200 rows its own sampling error \
         can raise false alarms above 0.05; a reference of at least 2000000 rows keeps them within it",
        "{stderr}"
    );
}

#[test]
fn issue_15_a_small_file_of_huge_distinct_strings_makes_a_small_profile_and_drift_runs() {
    let lake = Lake::new();
    let data = lake.path("huge.parquet");
    crate::common::write_huge_strings(&data);
    let file_bytes = std::fs::metadata(&data).unwrap().len();
    assert!(file_bytes < 256 << 10, "the file is {file_bytes} bytes");
    let rules = lake.rules(
        "t.yaml",
        // Issue 17: 1,000 distinct values in 1,000 rows are ID-like; forced
        // so that the test still runs on the cut values.
        "dataset: t\ndrift:\n  reference: t.profile\n  columns: [s]\n  overrides:\n    s: { force: true }\n",
    );
    let reference = baseline(&lake, &data, &rules);
    let profile_bytes = std::fs::metadata(&reference).unwrap().len();
    eprintln!("a {file_bytes}-byte file made a {profile_bytes}-byte profile");
    assert!(
        profile_bytes < 1 << 20,
        "the profile is {profile_bytes} bytes"
    );
    let (code, report, stderr) = check(&data, &rules, Some(&reference));
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    let s = column(&report, "s");
    assert_eq!(s["error"], Value::Null, "{s:#}");
    assert_eq!(s["message"], Value::Null, "{s:#}");
    assert_eq!(s["test"], "chisquare", "{s:#}");
    // Same batch as the reference: a statistic of 0 and no drift.
    assert_eq!(s["statistic"], 0.0, "{s:#}");
    assert_eq!(s["drifted"], false, "{s:#}");
    let report_bytes = serde_json::to_vec(&report).unwrap().len();
    assert!(report_bytes < 1 << 20, "the report is {report_bytes} bytes");
}

/// A `tailnum`-like column: 4,000 categories, category `i` `1 + (i * 7 +
/// shift) % 13` times, plus `carrier` with 16 categories.
fn tails(shift: usize) -> (RecordBatch, std::collections::BTreeMap<String, u64>) {
    let mut counts = std::collections::BTreeMap::new();
    let mut tail: Vec<String> = Vec::new();
    for i in 0..4000usize {
        let name = format!("N{}{}", 100 + i, ["", "A", "BC"][i % 3]);
        let n = 1 + (i * 7 + shift) % 13;
        counts.insert(name.clone(), n as u64);
        tail.extend(std::iter::repeat_n(name, n));
    }
    let carrier: Vec<String> = (0..tail.len()).map(|i| format!("C{}", i % 16)).collect();
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("tailnum", DataType::Utf8, true),
            Field::new("carrier", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(StringArray::from(tail)) as ArrayRef,
            Arc::new(StringArray::from(carrier)) as ArrayRef,
        ],
    )
    .unwrap();
    (batch, counts)
}

#[test]
fn issue_17_a_4000_category_column_is_tested_on_exact_counts_unless_max_categories_is_lower() {
    let lake = Lake::new();
    let (reference, ref_counts) = tails(0);
    let (current, cur_counts) = tails(5);
    let (ref_data, cur_data) = (
        lake.write("ref.parquet", &reference),
        lake.write("cur.parquet", &current),
    );
    // The statistic on the raw data: every category with its count.
    let (r, c) = (
        driftwatch::drift::categorical_bins(&ref_counts, &cur_counts).1,
        driftwatch::drift::categorical_bins(&ref_counts, &cur_counts).2,
    );
    let exact = driftwatch::drift::jensenshannon(&r, &c).unwrap().statistic;

    let rules = lake.rules(
        "t.yaml",
        "dataset: t\ndrift:\n  columns: [tailnum, carrier]\n",
    );
    let profile = baseline(&lake, &ref_data, &rules);
    // What the exact counts cost in the profile file (pretty JSON).
    let p = driftwatch::profile::DatasetProfile::read(&profile).unwrap();
    let tail_json = serde_json::to_string_pretty(&p.columns["tailnum"])
        .unwrap()
        .len();
    eprintln!("4,000-category column: {tail_json} bytes of profile JSON");
    assert!(p.columns["tailnum"].frequencies.exact);
    assert!(tail_json < 150_000, "{tail_json}");
    let (_, report, stderr) = check(&cur_data, &rules, Some(&profile));
    let tail = column(&report, "tailnum");
    assert_eq!(tail["test"], "jensenshannon", "{stderr}{tail:#}");
    assert_eq!(tail["path"], "exact", "{tail:#}");
    assert_eq!(tail["message"], Value::Null, "{tail:#}");
    let got = tail["statistic"].as_f64().unwrap();
    assert!((got - exact).abs() <= 1e-12, "{got} vs raw-data {exact}");
    assert_eq!(column(&report, "carrier")["path"], "exact");

    // The old limit, set by the rule file: heavy hitters + "other", bounded.
    let rules = lake.rules(
        "t.yaml",
        "dataset: t\ndrift:\n  columns: [tailnum, carrier]\n  overrides:\n    tailnum: { max_categories: 1000 }\n",
    );
    let profile = baseline(&lake, &ref_data, &rules);
    let (_, report, _) = check(&cur_data, &rules, Some(&profile));
    let tail = column(&report, "tailnum");
    assert_eq!(tail["path"], "sketched", "{tail:#}");
    let message = tail["message"].as_str().unwrap();
    let bound: f64 = message
        .rsplit_once("within ±")
        .and_then(|(_, b)| b.split_whitespace().next())
        .and_then(|b| b.parse().ok())
        .unwrap_or_else(|| panic!("no bound in {message}"));
    let got = tail["statistic"].as_f64().unwrap();
    assert!((got - exact).abs() <= bound, "{got} vs {exact} ± {bound}");
    assert_eq!(column(&report, "carrier")["path"], "exact");
}

#[test]
fn issue_17_defaults_sound_uses_the_homogeneity_test_where_evidently_over_alarms() {
    let lake = Lake::new();
    let reference = lake.write(
        "ref.parquet",
        &batch(100, 0.0, &[("a", 50), ("b", 30), ("c", 20)], false),
    );
    let current = lake.write(
        "cur.parquet",
        &batch(100, 0.0, &[("a", 36), ("b", 40), ("c", 24)], false),
    );
    let rules = lake.rules("t.yaml", "dataset: t\ndrift:\n  columns: [cat]\n");
    let profile = baseline(&lake, &reference, &rules);
    // Evidently's choice stays the default: goodness of fit, drift.
    let (code, report, _) = check(&current, &rules, Some(&profile));
    let cat = column(&report, "cat");
    assert_eq!(
        (cat["test"].as_str(), cat["drifted"].as_bool()),
        (Some("chisquare"), Some(true))
    );
    assert!((cat["statistic"].as_f64().unwrap() - (3.92 + 100.0 / 30.0 + 0.8)).abs() < 1e-9);
    assert_eq!(code, 1);
    let rules = lake.rules(
        "t.yaml",
        "dataset: t\ndrift:\n  columns: [cat]\n  defaults: sound\n",
    );
    let (code, report, _) = check(&current, &rules, Some(&profile));
    let cat = column(&report, "cat");
    assert_eq!(
        (cat["test"].as_str(), cat["drifted"].as_bool()),
        (Some("chisquare_homogeneity"), Some(false)),
        "{cat:#}"
    );
    // 2 × (7²/43 + 5²/35 + 2²/22): expected counts 43, 35, 22 per side.
    let want = 2.0 * (49.0 / 43.0 + 25.0 / 35.0 + 4.0 / 22.0);
    assert!(
        (cat["statistic"].as_f64().unwrap() - want).abs() < 1e-9,
        "{cat:#}"
    );
    assert_eq!(code, 0);
}

/// Timestamps (µs, UTC), dates, booleans, decimals and a binary column;
/// `shift_days` moves the temporal columns, `true_share` the booleans.
fn typed(n: usize, shift_days: i64, true_share: usize) -> RecordBatch {
    use arrow::array::{
        BinaryArray, BooleanArray, Date32Array, Decimal128Array, TimestampMicrosecondArray,
    };
    use arrow::datatypes::TimeUnit;
    let start = 1_704_067_200i64; // 2024-01-01T00:00:00Z
    let ts: Vec<i64> = (0..n as i64)
        .map(|i| (start + shift_days * 86_400 + (i * 7919 % n as i64) * 3600) * 1_000_000)
        .collect();
    let day: Vec<i32> = (0..n as i32)
        .map(|i| 19_723 + shift_days as i32 + (i * 31 % 10))
        .collect();
    let flag: Vec<bool> = (0..n).map(|i| i % 100 < true_share).collect();
    let price: Vec<i128> = (0..n as i128).map(|i| 1000 + (i * 37 % 500)).collect();
    let blob: Vec<&[u8]> = (0..n)
        .map(|i| if i % 2 == 0 { &b"ab"[..] } else { &b"c"[..] })
        .collect();
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("day", DataType::Date32, true),
            Field::new("flag", DataType::Boolean, true),
            Field::new("price", DataType::Decimal128(10, 2), true),
            Field::new("blob", DataType::Binary, true),
        ])),
        vec![
            Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")) as ArrayRef,
            Arc::new(Date32Array::from(day)),
            Arc::new(BooleanArray::from(flag)),
            Arc::new(
                Decimal128Array::from(price)
                    .with_precision_and_scale(10, 2)
                    .unwrap(),
            ),
            Arc::new(BinaryArray::from(blob)),
        ],
    )
    .unwrap()
}

#[test]
fn issue_17_timestamps_dates_booleans_and_decimals_are_tested_and_binary_is_listed_with_why() {
    let lake = Lake::new();
    let reference = lake.write("ref.parquet", &typed(300, 0, 50));
    let current = lake.write("cur.parquet", &typed(300, 3, 70));
    // Time columns are tested when named (they move with every batch of
    // time-ordered data, so not by default).
    let rules = lake.rules("t.yaml", "dataset: t\ndrift: {}\n");
    let profile = baseline(&lake, &reference, &rules);
    let (_, report, _) = check(&current, &rules, Some(&profile));
    let not_tested = &report["reports"][0]["drift"]["not_tested"];
    let left_out: Vec<&str> = not_tested
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["column"].as_str().unwrap())
        .collect();
    assert_eq!(left_out, ["blob", "day", "ts"], "{not_tested:#}");
    assert!(
        not_tested[2]["reason"]
            .as_str()
            .unwrap()
            .starts_with("timestamp(UTC) [us]: a time column is tested only when"),
        "{not_tested:#}"
    );
    let rules = lake.rules(
        "t.yaml",
        "dataset: t\ndrift:\n  columns: [ts, day, flag, price, blob]\n",
    );
    let (_, report, stderr) = check(&current, &rules, Some(&profile));
    // Timestamps on the epoch scale in seconds: KS equals the raw-data one.
    let ts = column(&report, "ts");
    assert_eq!(ts["test"], "ks", "{stderr}{ts:#}");
    assert_eq!(ts["path"], "exact");
    assert_eq!(ts["unit"], "seconds since 1970-01-01T00:00:00Z");
    let seconds = |shift: i64| {
        let mut v: Vec<f64> = (0..300i64)
            .map(|i| (1_704_067_200 + shift * 86_400 + (i * 7919 % 300) * 3600) as f64)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let raw = driftwatch::drift::ks(&seconds(0), &seconds(3)).unwrap();
    assert_eq!(ts["statistic"].as_f64(), Some(raw.statistic), "{ts:#}");
    assert_eq!(ts["p_value"].as_f64(), raw.p_value, "{ts:#}");
    assert_eq!(ts["drifted"], true);
    // What moved, in the data's units: medians 3 days apart.
    assert_eq!(
        ts["effect"]["median"]["shift"].as_f64(),
        Some(3.0 * 86_400.0)
    );
    assert_eq!(
        ts["effect"]["summary"],
        "median +3 d (2024-01-07T05:30:00Z → 2024-01-10T05:30:00Z)"
    );
    let day = column(&report, "day");
    assert_eq!(
        (day["test"].as_str(), day["unit"].as_str()),
        (Some("ks"), Some("days since 1970-01-01"))
    );
    assert_eq!(day["drifted"], true, "{day:#}");
    // Booleans are two categories: the z test, 50 % vs 70 % true.
    let flag = column(&report, "flag");
    assert_eq!(
        (flag["test"].as_str(), flag["type"].as_str()),
        (Some("z"), Some("categorical"))
    );
    assert_eq!(flag["drifted"], true, "{flag:#}");
    assert_eq!(
        flag["effect"]["summary"],
        "false 50.0 % → 30.0 % (-20.0 pp), true 50.0 % → 70.0 % (+20.0 pp)"
    );
    // Decimals are numbers (the same values on both sides: no drift).
    let price = column(&report, "price");
    assert_eq!(
        (price["test"].as_str(), price["statistic"].as_f64()),
        (Some("ks"), Some(0.0))
    );
    assert_eq!(price["unit"], Value::Null);
    // Binary is left out, and the report says so and why.
    let not_tested = &report["reports"][0]["drift"]["not_tested"];
    assert_eq!(
        not_tested.as_array().map(Vec::len),
        Some(1),
        "{not_tested:#}"
    );
    assert_eq!(not_tested[0]["column"], "blob");
    assert!(
        not_tested[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("binary: binary values have neither an order nor categories"),
        "{not_tested:#}"
    );
    // The terminal table says it too.
    let out = driftwatch(&[
        "check",
        current.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
        "--reference",
        profile.to_str().unwrap(),
    ]);
    assert!(
        text(&out.stdout).contains("not tested: blob (binary: "),
        "{}",
        text(&out.stdout)
    );
}

/// Integer columns of rows `start..start + n` that are not in row order:
/// `row_id` (unique, shuffled), `random_id` (unique random 64-bit numbers,
/// UUID-like), `near_id` (90 % distinct: every 10th row repeats the row
/// before) and `minutes` (an integer measurement, 25 % distinct).
fn unordered_integers(start: i64, n: i64) -> RecordBatch {
    let shuffled = |i: i64| start + (i * 7919) % n;
    // SplitMix64's finaliser: a bijection, so distinct rows give distinct
    // numbers that look random.
    let mix = |i: i64| {
        let mut z = (i as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let near = |i: i64| if i % 10 == 9 { i - 1 } else { i };
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("row_id", DataType::Int64, false),
            Field::new("random_id", DataType::UInt64, false),
            Field::new("near_id", DataType::Int64, false),
            Field::new("minutes", DataType::Int64, false),
        ])),
        vec![
            Arc::new(Int64Array::from((0..n).map(shuffled).collect::<Vec<_>>())),
            Arc::new(UInt64Array::from(
                (0..n).map(|i| mix(shuffled(i))).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                (0..n)
                    .map(|i| start + near((i * 7919) % n))
                    .collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                (0..n)
                    .map(|i| (shuffled(i) * 37) % (n / 4))
                    .collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap()
}

#[test]
fn issue_17_unordered_integer_ids_are_id_like_but_near_ids_and_measurements_are_tested() {
    let lake = Lake::new();
    let reference = lake.write("ref.parquet", &unordered_integers(0, 40_000));
    let current = lake.write("cur.parquet", &unordered_integers(40_000, 40_000));
    let rules = lake.rules("t.yaml", "dataset: t\ndrift: {}\n");
    let profile = baseline(&lake, &reference, &rules);
    let (_, report, stderr) = check(&current, &rules, Some(&profile));
    // 40,000 values per side: past the exact values, so the distinct
    // counts are HyperLogLog estimates (≈ 1.6 % standard error).
    for name in ["row_id", "random_id"] {
        let c = column(&report, name);
        assert_eq!(c["skipped"], "id-like", "{stderr}{c:#}");
        assert_eq!(c["test"], Value::Null, "{c:#}");
    }
    assert_eq!(
        column(&report, "row_id")["message"],
        "skipped: id-like — reference 98.8 % distinct (≈ 39535 distinct (HLL estimate) of \
         40000 values), integer-typed (int64), not ordered; batch 100.0 % distinct (≈ 40479 \
         distinct (HLL estimate) of 40000 values), integer-typed (int64), not ordered; set \
         `overrides.row_id.force: true` to test it"
    );
    let random = column(&report, "random_id")["message"].as_str().unwrap();
    assert!(
        random.contains("integer-typed (uint64), not ordered"),
        "{random}"
    );
    // 90 % distinct is below the 95 % an id needs, and a measurement with
    // repeated values is far below: both tested.
    for name in ["near_id", "minutes"] {
        let c = column(&report, name);
        assert_eq!(c["skipped"], Value::Null, "{c:#}");
        assert_eq!(c["test"], "wasserstein", "{c:#}");
    }
}

/// Flights-shaped rows `start..start + n`: `row_id` (unique, increasing),
/// `user` (unique strings, shuffled), `amount` (unique floats, shuffled),
/// `tailnum` (4,000 tail numbers, each about n / 4,000 times), `carrier`
/// (16), `origin` (3), `dest` (100) and `const` (always `x`).
fn flights_like(start: i64, n: i64) -> RecordBatch {
    let shuffled = |i: i64| (i * 7919) % n;
    let strings = |f: &dyn Fn(i64) -> String| -> ArrayRef {
        Arc::new(StringArray::from((0..n).map(f).collect::<Vec<_>>()))
    };
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("row_id", DataType::Int64, false),
            Field::new("user", DataType::Utf8, false),
            Field::new("amount", DataType::Float64, false),
            Field::new("tailnum", DataType::Utf8, false),
            Field::new("carrier", DataType::Utf8, false),
            Field::new("origin", DataType::Utf8, false),
            Field::new("dest", DataType::Utf8, false),
            Field::new("const", DataType::Utf8, false),
        ])),
        vec![
            Arc::new(Int64Array::from((start..start + n).collect::<Vec<_>>())),
            strings(&|i| format!("u{}", start + shuffled(i))),
            Arc::new(Float64Array::from(
                (0..n)
                    .map(|i| (start + shuffled(i)) as f64 * 0.37)
                    .collect::<Vec<_>>(),
            )),
            strings(&|i| format!("N{}", 100 + (i * 31 + i / 7) % 4000)),
            strings(&|i| format!("C{}", i % 16)),
            strings(&|i| ["EWR", "JFK", "LGA"][(i % 3) as usize].to_string()),
            strings(&|i| format!("D{}", (i * 13) % 100)),
            strings(&|_| "x".to_string()),
        ],
    )
    .unwrap()
}

#[test]
fn issue_17_id_like_and_constant_columns_are_skipped_with_evidence_unless_forced() {
    let lake = Lake::new();
    let reference = lake.write("ref.parquet", &flights_like(0, 40_000));
    let current = lake.write("cur.parquet", &flights_like(40_000, 40_000));
    let rules = lake.rules("t.yaml", "dataset: t\ndrift: {}\n");
    let profile = baseline(&lake, &reference, &rules);
    let (_, report, stderr) = check(&current, &rules, Some(&profile));
    let row_id = column(&report, "row_id");
    assert_eq!(row_id["skipped"], "id-like", "{stderr}{row_id:#}");
    assert_eq!(
        (row_id["test"].clone(), row_id["drifted"].clone()),
        (Value::Null, Value::Bool(false))
    );
    let message = row_id["message"].as_str().unwrap();
    assert!(
        message.starts_with("skipped: id-like — reference "),
        "{message}"
    );
    assert!(message.contains("increasing row by row"), "{message}");
    assert!(
        message.ends_with("set `overrides.row_id.force: true` to test it"),
        "{message}"
    );
    assert_eq!(column(&report, "user")["skipped"], "id-like");
    let constant = column(&report, "const");
    assert_eq!(constant["skipped"], "constant", "{constant:#}");
    assert!(
        constant["message"]
            .as_str()
            .unwrap()
            .contains("the one value `x`")
    );
    // Unique but not a sequence, and high-cardinality categories: tested.
    for name in ["amount", "tailnum", "carrier", "origin", "dest"] {
        let c = column(&report, name);
        assert_eq!(c["skipped"], Value::Null, "{c:#}");
        assert!(c["test"].is_string(), "{c:#}");
    }
    assert_eq!(column(&report, "tailnum")["path"], "exact");
    // The amount's median moved by 40,000 × 0.37 (its rows moved by
    // 40,000); from the sketches (40,000 values), so within their rank
    // error: 2 × 6/1024 × 40,000 ranks × 0.37 per rank ≈ 173.
    let shift = column(&report, "amount")["effect"]["median"]["shift"]
        .as_f64()
        .unwrap();
    assert!((shift - 14_800.0).abs() <= 174.0, "{shift}");
    // Skipped columns do not count in the drifted share: amount drifted
    // (new values), the five others tested did not.
    assert_eq!(
        report["reports"][0]["drift"]["drifted_share"].as_f64(),
        Some(1.0 / 5.0)
    );

    let rules = lake.rules(
        "t.yaml",
        "dataset: t\ndrift:\n  overrides:\n    row_id: { force: true }\n",
    );
    let (_, report, _) = check(&current, &rules, Some(&profile));
    let row_id = column(&report, "row_id");
    assert_eq!(row_id["skipped"], Value::Null, "{row_id:#}");
    assert_eq!(
        (row_id["test"].as_str(), row_id["drifted"].as_bool()),
        (Some("wasserstein"), Some(true))
    );
}

/// Issue 17: tiny counts take Fisher's exact test (2×2) or the exact
/// conditional test (2×k) through the real binary, and the JSON and the
/// table say so; values from scipy (tests/fixtures/drift/small_counts.json).
#[test]
fn issue_17_tiny_counts_take_fishers_exact_or_the_exact_conditional_test() {
    let lake = Lake::new();
    // 2×2 [[8, 2], [1, 5]]: scipy.stats.fisher_exact p = 0.034965034965034975.
    let reference = lake.write("ref.parquet", &batch(10, 0.0, &[("a", 8), ("b", 2)], false));
    let current = lake.write("cur.parquet", &batch(6, 0.0, &[("a", 1), ("b", 5)], false));
    let rules = lake.rules(
        "t.yaml",
        "dataset: t\ndrift:\n  columns: [cat]\n  overrides:\n    cat: { test: g_test }\n",
    );
    let profile = baseline(&lake, &reference, &rules);
    let (code, report, stderr) = check(&current, &rules, Some(&profile));
    let cat = column(&report, "cat");
    assert_eq!(cat["p_value_method"], "fisher_exact", "{cat:#}");
    assert!((cat["p_value"].as_f64().unwrap() - 0.034965034965034975).abs() <= 1e-12);
    assert_eq!(cat["drifted"], true);
    assert!(
        cat["message"]
            .as_str()
            .unwrap()
            .starts_with("Fisher's exact p-value"),
        "{cat:#}"
    );
    assert_eq!(code, 1, "{stderr}");
    // 2×3 [[5, 3, 2], [1, 4, 6]]: exact conditional p = 0.1047868540128602
    // (Pearson), the table says which p-value it is.
    let reference = lake.write(
        "ref.parquet",
        &batch(10, 0.0, &[("a", 5), ("b", 3), ("c", 2)], false),
    );
    let current = lake.write(
        "cur.parquet",
        &batch(11, 0.0, &[("a", 1), ("b", 4), ("c", 6)], false),
    );
    let rules = lake.rules(
        "t.yaml",
        "dataset: t\ndrift:\n  columns: [cat]\n  overrides:\n    cat: { test: chisquare_homogeneity }\n",
    );
    let profile = baseline(&lake, &reference, &rules);
    let (code, report, stderr) = check(&current, &rules, Some(&profile));
    let cat = column(&report, "cat");
    assert_eq!(cat["p_value_method"], "exact_conditional", "{cat:#}");
    assert!((cat["p_value"].as_f64().unwrap() - 0.1047868540128602).abs() <= 1e-9);
    assert_eq!(
        (cat["drifted"].as_bool(), code),
        (Some(false), 0),
        "{stderr}"
    );
    let out = driftwatch(&[
        "check",
        current.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
        "--reference",
        profile.to_str().unwrap(),
    ]);
    let table = text(&out.stdout);
    assert!(table.contains("exact conditional p-value"), "{table}");
    // The HTML report names the method on the p-value cell.
    let html_path = lake.path("report.html");
    let out = driftwatch(&[
        "check",
        current.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
        "--reference",
        profile.to_str().unwrap(),
        "--format",
        "html",
        "--output",
        html_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(
        html.contains("<td class=\"num\" title=\"exact conditional p-value over every table with these margins"),
        "{html}"
    );
}
