//! The `driftwatch` binary end to end: matching, output formats, exit codes, demo.

use crate::common::{NOW, driftwatch, table, text, write_parquet};

/// A lake-like folder: two datasets, a nested partition, an unmatched file,
/// and writer droppings that must be ignored.
fn lake() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for sub in [
        "data/orders/day=1",
        "data/orders/_temporary",
        "data/misc",
        "rules",
    ] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    write_parquet(&root.join("data/orders/day=1/part-0.parquet"), &table(), 5);
    write_parquet(
        &root.join("data/orders/_temporary/part-9.parquet"),
        &table(),
        5,
    );
    write_parquet(&root.join("data/misc/other.parquet"), &table(), 5);
    std::fs::write(root.join("data/orders/_SUCCESS"), "").unwrap();
    std::fs::write(root.join("data/orders/.part-0.parquet.crc"), "").unwrap();
    std::fs::write(
        root.join("rules/orders.yaml"),
        "dataset: orders\nmatch: \"orders/**/*.parquet\"\nchecks:\n  - not_null: my col\n  - unique: my col\n",
    )
    .unwrap();
    std::fs::write(
        root.join("rules/orders_strict.yaml"),
        "dataset: orders_strict\nmatch: \"orders/**\"\nchecks:\n  - not_null: id\n  - not_null: name\n    severity: warn\n",
    )
    .unwrap();
    dir
}

#[test]
fn rules_folder_matches_by_glob_relative_to_the_path_argument() {
    let lake = lake();
    let data = lake.path().join("data");
    let rules = lake.path().join("rules");
    let out = driftwatch(&[
        "check",
        data.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
        "--format",
        "json",
        "--now",
        NOW,
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["version"], 1);
    let reports = report["reports"].as_array().unwrap();
    let pairs: Vec<(String, String)> = reports
        .iter()
        .map(|r| {
            (
                r["source"]
                    .as_str()
                    .unwrap()
                    .rsplit("data/")
                    .next()
                    .unwrap()
                    .to_string(),
                r["dataset"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // One input matching two rule files gets two reports; `_temporary`, `_SUCCESS`
    // and `.crc` are never read.
    assert_eq!(
        pairs,
        [
            (
                "orders/day=1/part-0.parquet".to_string(),
                "orders".to_string()
            ),
            (
                "orders/day=1/part-0.parquet".to_string(),
                "orders_strict".to_string()
            ),
        ]
    );
    let unmatched: Vec<&str> = report["unmatched"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(unmatched.len(), 1);
    assert!(unmatched[0].ends_with("data/misc/other.parquet"));
    assert_eq!(reports[0]["passed"], true);
    assert_eq!(reports[1]["passed"], false);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn json_report_has_every_field_even_when_null() {
    let lake = lake();
    let file = lake.path().join("data/misc/other.parquet");
    let rules = lake.path().join("rules/orders.yaml");
    // A single rules file applies to every input, whatever its `match`.
    let out = driftwatch(&[
        "check",
        file.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &report["reports"][0];
    let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "source",
            "dataset",
            "rules",
            "partitions",
            "rows",
            "passed",
            "error",
            "checks",
            "drift",
            "table"
        ]
    );
    let c = r["checks"][0].as_object().unwrap();
    let keys: Vec<&str> = c.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "name",
            "kind",
            "column",
            "severity",
            "status",
            "failing_rows",
            "rows_considered",
            "fraction",
            "observed",
            "expected",
            "message"
        ]
    );
    assert_eq!(c["observed"], serde_json::Value::Null);
    assert_eq!(c["fraction"], 0.0);
}

#[test]
fn exit_codes_and_output_file() {
    let lake = lake();
    let file = lake.path().join("data/misc/other.parquet");
    let rules_dir = lake.path().join("rules");
    // Nothing matched: exit 2 and say so.
    let out = driftwatch(&[
        "check",
        file.to_str().unwrap(),
        "--rules",
        rules_dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("nothing was checked"));
    assert!(text(&out.stdout).contains("unmatched inputs"));

    // A failing error-severity check: exit 1, table written to --output.
    let strict = lake.path().join("rules/orders_strict.yaml");
    let output = lake.path().join("out.txt");
    let out = driftwatch(&[
        "check",
        file.to_str().unwrap(),
        "--rules",
        strict.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
    let table = std::fs::read_to_string(&output).unwrap();
    assert!(table.contains("FAILED"), "{table}");
    assert!(table.contains("fail    error     not_null_id"), "{table}");
    assert!(!table.contains("\x1b["), "no colors in files");

    // Usage errors are exit 2 too.
    let out = driftwatch(&["check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let out = driftwatch(&[
        "check",
        file.to_str().unwrap(),
        "--rules",
        strict.to_str().unwrap(),
        "--now",
        "yesterday",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn rules_schema_is_a_json_schema_of_the_format() {
    let out = driftwatch(&["rules", "schema"]);
    assert_eq!(out.status.code(), Some(0));
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(schema["title"], "RuleFileSpec");
    let props = schema["properties"].as_object().unwrap();
    assert!(
        props.contains_key("dataset")
            && props.contains_key("match")
            && props.contains_key("checks")
    );
    let check = &schema["$defs"]["CheckSpec"]["properties"];
    for key in [
        "not_null",
        "range",
        "accepted_values",
        "regex",
        "unique",
        "row_count",
        "schema",
        "freshness",
        "expr",
        "metric",
        "where",
        "severity",
        "max_fraction",
        "max_count",
        "between",
        "name",
    ] {
        assert!(check.get(key).is_some(), "schema lacks `{key}`");
    }
}

#[test]
fn demo_runs_the_agent_live_and_catches_drift_failures_and_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let out = driftwatch(&[
        "demo",
        "--dir",
        dir.path().to_str().unwrap(),
        "--interval",
        "300ms",
        "--batches",
        "8",
        "--rows",
        "2000",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    // Batches 1-4 clean, 5 and 8 shifted, 6 corrupt, 7 shifted with planted failures.
    assert!(
        stdout.contains(
            "8 batches evaluated: 4 passed, 3 with dataset drift, 3 with failing checks, 1 unreadable."
        ),
        "{stdout}"
    );
    assert!(stdout.contains("DRIFT in dep_delay, arr_delay"), "{stdout}");
    assert!(
        stdout.contains("checks not passing: unique_row_id, not_null_dep_delay, range_distance, accepted_values_origin, regex_tailnum"),
        "{stdout}"
    );
    // The results log holds the same 8 reports, seq 1..8.
    let log = std::fs::read_to_string(dir.path().join("state/results.jsonl")).unwrap();
    let seqs: Vec<u64> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["agent"]["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, (1..=8).collect::<Vec<_>>());
    assert!(log.contains("\"partitions\":{\"date\":\"2013-01-06\"}"));
}
