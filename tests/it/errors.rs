//! Bad input: every bad-rule case names file:line:col with a one-line reason;
//! unreadable data names its path; nothing panics.

use std::path::Path;

use driftwatch::rules::parse_rule_file;
use proptest::prelude::*;

use crate::common::{driftwatch, fixture, text};

fn rule_error(yaml: &str) -> String {
    match parse_rule_file(Path::new("rules/bad.yaml"), yaml) {
        Ok(_) => panic!("accepted a bad rule file:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn yaml_syntax_error() {
    assert_eq!(
        rule_error("dataset: x\nchecks:\n  - not_null: a\n   - range: {column: b\n"),
        "rules/bad.yaml:4:4: while parsing a block collection, did not find expected '-' indicator"
    );
}

#[test]
fn unknown_check_kind() {
    let e = rule_error("dataset: x\nchecks:\n  - not_null: a\n  - bogus_kind: a\n");
    assert!(
        e.starts_with(
            "rules/bad.yaml:4:5: unknown field `bogus_kind`, expected one of not_null, range"
        ),
        "{e}"
    );
}

#[test]
fn unknown_field() {
    let e = rule_error("dataset: x\nchecks:\n  - not_null: a\n    max_fractoin: 0.1\n");
    assert!(
        e.starts_with("rules/bad.yaml:4:5: unknown field `max_fractoin`"),
        "{e}"
    );
    let e = rule_error("dataset: x\nchecks:\n  - range: { column: a, minimum: 1 }\n");
    assert!(
        e.starts_with("rules/bad.yaml:3:25: unknown field `minimum`"),
        "{e}"
    );
}

#[test]
fn sql_that_does_not_parse() {
    assert_eq!(
        rule_error("dataset: x\nchecks:\n  - expr: \"a >>> AND\"\n"),
        "rules/bad.yaml:3:11: `expr`: SQL does not parse: sql parser error: Expected: an expression, found: > at Line: 1, Column: 5"
    );
    assert_eq!(
        rule_error("dataset: x\nchecks:\n  - not_null: a\n    where: \"a = 1; DROP TABLE t\"\n"),
        "rules/bad.yaml:4:12: `where`: expected one SQL expression, found more after it: `;`"
    );
    let e = rule_error("dataset: x\nchecks:\n  - metric: \"avg(\"\n    between: [0, 1]\n");
    assert!(
        e.starts_with("rules/bad.yaml:3:13: `metric`: SQL does not parse"),
        "{e}"
    );
}

#[test]
fn invalid_values() {
    let cases = [
        (
            "dataset: x\nchecks:\n  - regex: {column: a, pattern: \"([\"}\n",
            "rules/bad.yaml:3:33: bad regex: regex parse error: ([ ^ error: unclosed character class",
        ),
        (
            "dataset: x\nchecks:\n  - freshness: {column: a, max_age: 3x}\n",
            "rules/bad.yaml:3:5: `max_age`: `3x`: unknown unit `x` (use s, m, h, d or w)",
        ),
        (
            "dataset: x\nchecks:\n  - not_null: a\n    range: {column: a, min: 1}\n",
            "rules/bad.yaml:3:5: a check has exactly one kind, found not_null and range; split it into separate checks",
        ),
        (
            "dataset: x\nchecks:\n  - not_null: a\n    severity: fatal\n",
            "rules/bad.yaml:4:15: unknown variant `fatal`, expected one of error, warn",
        ),
        (
            "checks:\n  - not_null: a\n",
            "rules/bad.yaml:1:1: missing field `dataset`",
        ),
        (
            "dataset: x\nchecks:\n  - schema: { columns: { a: int128 } }\n",
            "rules/bad.yaml:3:5: column `a`: unknown type `int128`; expected one of bool, int8, int16, int32, int64, uint8, uint16, uint32, uint64, integer, float32, float64, float, decimal, utf8, binary, date, timestamp, timestamp(none), timestamp(<zone>)",
        ),
        (
            "dataset: x\nchecks:\n  - not_null: a\n  - not_null: a\n",
            "rules/bad.yaml:4:5: duplicate check name `not_null_a`; give one of them a distinct `name`",
        ),
        (
            "dataset: x\nchecks:\n  - row_count: { min: 5 }\n    max_fraction: 0.1\n",
            "rules/bad.yaml:3:5: `max_fraction`/`max_count` apply only to row-level checks, not `row_count`",
        ),
        (
            "dataset: x\nchecks:\n  - metric: \"avg(a)\"\n",
            "rules/bad.yaml:3:5: `metric` needs `between: [min, max]` (use ~ for an open end)",
        ),
        (
            "dataset: x\nchecks:\n  - not_null: a\n    max_fraction: 1.5\n",
            "rules/bad.yaml:3:5: `max_fraction` must be in [0, 1], got 1.5",
        ),
        (
            "dataset: x\nchecks:\n  - {}\n",
            "rules/bad.yaml:3:5: a check needs one kind: not_null, range, accepted_values, regex, unique, row_count, schema, freshness, expr, metric or anomaly",
        ),
    ];
    for (yaml, expected) in cases {
        assert_eq!(rule_error(yaml), expected, "for\n{yaml}");
    }
}

#[test]
fn rules_check_command_reports_location_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("good.yaml"),
        "dataset: good\nchecks:\n  - not_null: a\n",
    )
    .unwrap();
    let out = driftwatch(&["rules", "check", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("dataset good, 1 check(s)"));

    let bad = dir.path().join("zz_bad.yaml");
    std::fs::write(&bad, "dataset: bad\nchecks:\n  - expr: \"a >\"\n").unwrap();
    let out = driftwatch(&["rules", "check", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "error: {}:3:11: `expr`: SQL does not parse",
            bad.display()
        )),
        "{stderr}"
    );
}

#[test]
fn truncated_parquet_is_a_clear_input_error_with_exit_2() {
    let f = fixture();
    let bytes = std::fs::read(&f.data).unwrap();
    let truncated = f.dir.path().join("truncated.parquet");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let rules = f.dir.path().join("rules.yaml");
    std::fs::write(&rules, "dataset: t\nchecks:\n  - not_null: id\n").unwrap();
    let out = driftwatch(&[
        "check",
        truncated.to_str().unwrap(),
        f.data.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = &report["reports"][0];
    assert_eq!(first["source"], truncated.to_str().unwrap());
    assert_eq!(first["passed"], false);
    assert_eq!(first["rows"], serde_json::Value::Null);
    let error = first["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!(
            "{}: cannot read Parquet input: ",
            truncated.display()
        )),
        "{error}"
    );
    // The good file next to it is still checked.
    assert_eq!(report["reports"][1]["passed"], false);
    assert_eq!(report["reports"][1]["checks"][0]["failing_rows"], 1);
}

#[test]
fn missing_input_path_is_a_usage_error() {
    let f = fixture();
    let rules = f.dir.path().join("rules.yaml");
    std::fs::write(&rules, "dataset: t\nchecks:\n  - not_null: id\n").unwrap();
    let out = driftwatch(&[
        "check",
        "/nonexistent/file.parquet",
        "--rules",
        rules.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with("error: /nonexistent/file.parquet: No such file"),
        "{}",
        text(&out.stderr)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary text never panics the parser; errors always carry a location.
    #[test]
    fn arbitrary_rule_text_never_panics(input in "(dataset: x\nchecks:\n)?([ -~\n]{0,120})") {
        if let Err(e) = parse_rule_file(Path::new("f.yaml"), &input) {
            let e = e.to_string();
            prop_assert!(e.starts_with("f.yaml:"), "{}", e);
        }
    }

    /// Arbitrary SQL in `expr` is either accepted or rejected with a location, never a panic.
    #[test]
    fn arbitrary_sql_never_panics(sql in "[a-z0-9 ()<>=!'\";.*+-]{0,40}") {
        let yaml = format!("dataset: x\nchecks:\n  - expr: {}\n", serde_json::to_string(&sql).unwrap());
        if let Err(e) = parse_rule_file(Path::new("f.yaml"), &yaml) {
            prop_assert!(e.to_string().starts_with("f.yaml:3:"), "{}", e);
        }
    }
}

#[test]
fn issue_15_rule_sql_with_subqueries_or_table_functions_is_rejected_at_its_location() {
    let cases = [
        (
            "dataset: x\nchecks:\n  - expr: \"a > (select max(b) from t)\"\n",
            "rules/bad.yaml:3:11: `expr`: a subquery is not allowed in rule SQL (a rule is one expression over the batch's rows, evaluated in one scan)",
        ),
        (
            "dataset: x\nchecks:\n  - metric: \"avg(a) + (SELECT count(*) FROM generate_series(1, 1000000000))\"\n    between: [0, 1]\n",
            "rules/bad.yaml:3:13: `metric`: a subquery is not allowed in rule SQL (a rule is one expression over the batch's rows, evaluated in one scan)",
        ),
        (
            "dataset: x\nchecks:\n  - not_null: a\n    where: \"exists (select 1)\"\n",
            "rules/bad.yaml:4:12: `where`: an EXISTS subquery is not allowed in rule SQL (a rule is one expression over the batch's rows, evaluated in one scan)",
        ),
        (
            "dataset: x\nchecks:\n  - expr: \"a in (select b from t)\"\n",
            "rules/bad.yaml:3:11: `expr`: a subquery is not allowed in rule SQL (a rule is one expression over the batch's rows, evaluated in one scan)",
        ),
        (
            "dataset: x\nchecks:\n  - expr: \"a = any(select b from t)\"\n",
            "rules/bad.yaml:3:11: `expr`: a subquery is not allowed in rule SQL (a rule is one expression over the batch's rows, evaluated in one scan)",
        ),
        (
            "dataset: x\nchecks:\n  - metric: \"count(generate_series(1, 10))\"\n    between: [0, 1]\n",
            "rules/bad.yaml:3:13: `metric`: the table function `generate_series` is not allowed in rule SQL (a rule is one expression over the batch's rows, evaluated in one scan)",
        ),
    ];
    for (yaml, expected) in cases {
        assert_eq!(rule_error(yaml), expected, "{yaml}");
    }
    // Ordinary expressions, parenthesised ones included, still pass.
    parse_rule_file(
        Path::new("rules/ok.yaml"),
        "dataset: x\nchecks:\n  - expr: \"(a + 1) > (b * 2)\"\n  - metric: \"avg(a)\"\n    between: [0, 1]\n",
    )
    .unwrap();
}

#[tokio::test]
async fn issue_15_an_evaluation_over_its_timeout_is_an_error_report() {
    use driftwatch::engine::{Engine, EngineOptions};
    let f = fixture();
    let rules = parse_rule_file(
        Path::new("rules.yaml"),
        "dataset: t\nchecks:\n  - not_null: id\n",
    )
    .unwrap();
    let engine = Engine::new(&EngineOptions {
        evaluation_timeout: Some(std::time::Duration::from_nanos(1)),
        ..EngineOptions::default()
    })
    .unwrap();
    let report = engine
        .evaluate(&f.data, "data.parquet", &rules, chrono::Utc::now())
        .await;
    assert_eq!(
        report.error.as_deref(),
        Some(format!("{}: evaluation exceeded 1ns", f.data.display()).as_str())
    );
    assert!(!report.passed);
    // The same batch within the default timeout evaluates.
    let engine = Engine::new(&EngineOptions::default()).unwrap();
    let report = engine
        .evaluate(&f.data, "data.parquet", &rules, chrono::Utc::now())
        .await;
    assert_eq!(report.error, None);
}
