//! Issue 18: `anomaly` checks end to end — `driftwatch check --history FILE`
//! and the agent (state store, `/status`, Prometheus gauges, restart). The
//! batches' times come from their data (an `event_time` column), never from
//! waiting.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use serde_json::Value;

use crate::agent::{Agent, Lake, wait_for, wait_results};
use crate::common::{driftwatch, text, write_parquet};

/// Monday 2024-01-01 12:00 UTC, in microseconds.
const MONDAY_NOON_US: i64 = 1_704_110_400_000_000;
const DAY_US: i64 = 86_400_000_000;

const RULES: &str = "dataset: volumes
checks:
  - anomaly:
      metric: row_count
      seasonality: weekly
      event_time: ts
      min_history: 14
      history: 60 batches
  - anomaly:
      metric: mean(x)
      event_time: ts
      min_history: 14
";

/// Rows of day `day`'s batch: about 1,000 on weekdays, 300 at weekends.
fn normal_rows(day: i64) -> usize {
    let weekday = day % 7; // day 0 is a Monday
    if weekday >= 5 {
        290 + ((day * 3) % 5) as usize * 5
    } else {
        950 + ((day * 7) % 11) as usize * 10
    }
}

/// A batch of `rows` rows stamped at noon of day `day`; `x` has mean 10
/// plus the day's offset, one of 13 levels in ±0.01 — noise-like, and
/// independent of the row count (a mean that moved with `rows % 3` made
/// three clusters, an artefact no real metric has).
fn batch(day: i64, rows: usize) -> RecordBatch {
    let ts: Vec<i64> = (0..rows as i64)
        .map(|i| MONDAY_NOON_US + day * DAY_US + i)
        .collect();
    let offset = 0.01 * ((day * 37) % 13 - 6) as f64 / 6.0;
    let whole = rows - rows % 3;
    let x: Vec<f64> = (0..rows)
        .map(|i| 10.0 + offset + if i < whole { (i % 3) as f64 - 1.0 } else { 0.0 })
        .collect();
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("x", DataType::Float64, false),
        ])),
        vec![
            Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")) as ArrayRef,
            Arc::new(Float64Array::from(x)) as ArrayRef,
        ],
    )
    .unwrap()
}

fn write_day(dir: &Path, day: i64, rows: usize) -> PathBuf {
    let path = dir.join(format!("day-{day:03}.parquet"));
    write_parquet(&path, &batch(day, rows), 10_000);
    path
}

/// The messages of the failing checks in `check --format json` output.
fn failing_checks(stdout: &[u8]) -> String {
    let Ok(report) = serde_json::from_slice::<Value>(stdout) else {
        return text(stdout);
    };
    let mut out = Vec::new();
    for r in report["reports"].as_array().into_iter().flatten() {
        for c in r["checks"].as_array().into_iter().flatten() {
            if c["status"] == "fail" {
                out.push(format!("{}: {}: {}", r["source"], c["name"], c["message"]));
            }
        }
    }
    out.join("\n")
}

fn anomaly_check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report}"))
}

#[test]
fn issue_18_check_history_file_learns_weekly_volumes_and_flags_only_the_abnormal_batch() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, RULES).unwrap();
    let history = dir.path().join("history.json");
    for day in 0..60 {
        write_day(&data, day, normal_rows(day));
    }
    let args = |path: &Path| {
        vec![
            "check".to_string(),
            path.display().to_string(),
            "--rules".into(),
            rules.display().to_string(),
            "--history".into(),
            history.display().to_string(),
            "--format".into(),
            "json".into(),
        ]
    };
    let run = |path: &Path| {
        let a = args(path);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        driftwatch(&a)
    };
    // 60 normal days in one run: nothing fails. The first 14 learn
    // (`min_history: 14`), and the third week too: a day needs 3 earlier
    // batches on the same weekday.
    let out = run(&data);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out.stderr),
        failing_checks(&out.stdout)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let reports = report["reports"].as_array().unwrap();
    assert_eq!(reports.len(), 60);
    let statuses: Vec<&str> = reports
        .iter()
        .map(|r| {
            anomaly_check(r, "anomaly_row_count")["status"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == "skipped").count(), 14 + 7);
    assert_eq!(
        statuses[14..21].iter().filter(|s| **s == "skipped").count(),
        7
    );
    assert_eq!(statuses.iter().filter(|s| **s == "fail").count(), 0);
    let first = anomaly_check(&reports[0], "anomaly_row_count");
    assert_eq!(
        first["message"],
        "learning: 0 of 14 batches of history needed"
    );
    assert_eq!(first["observed"], 950.0);
    // The history file holds both series.
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&history).unwrap()).unwrap();
    assert_eq!(saved["format"], "driftwatch-anomaly-history");
    assert_eq!(saved["version"], 1);
    assert_eq!(saved["series"].as_array().unwrap().len(), 2);
    assert_eq!(saved["series"][0]["definition"], "mean(x) event_time ts");
    assert_eq!(saved["series"][1]["points"].as_array().unwrap().len(), 60);

    // Day 60 (Friday 1 March 2024) at 60 % of a weekday's volume: the next run reads
    // the history and fails exactly that check.
    let abnormal = dir.path().join("late");
    std::fs::create_dir_all(&abnormal).unwrap();
    let file = write_day(&abnormal, 60, 600);
    let out = run(&file);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &report["reports"][0];
    let volume = anomaly_check(r, "anomaly_row_count");
    assert_eq!(volume["status"], "fail", "{volume}");
    assert_eq!(volume["observed"], 600.0);
    assert_eq!(volume["expected"]["seasonality"], "weekly");
    assert_eq!(volume["expected"]["batches"], 60);
    // The median of the eight earlier Fridays: 950, 980, …, 1,050.
    assert_eq!(volume["expected"]["center"], 1005.0);
    assert_eq!(
        volume["message"],
        "row_count 600 is below the expected 816–1,194 for Fridays (60 batches of history)"
    );
    let low = volume["expected"]["low"].as_f64().unwrap();
    // tests/fixtures/anomaly_band.py computes the band independently.
    assert!((low - 815.868_958_6).abs() < 1e-6, "{volume}");
    assert_eq!(anomaly_check(r, "anomaly_mean_x")["status"], "pass");
    assert_eq!(r["passed"], false);
}

#[test]
fn issue_18_bad_history_files_and_bad_anomaly_rules_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, RULES).unwrap();
    let data = write_day(dir.path(), 0, 1000);
    let history = dir.path().join("history.json");
    let check = |history: &Path| {
        driftwatch(&[
            "check",
            data.to_str().unwrap(),
            "--rules",
            rules.to_str().unwrap(),
            "--history",
            history.to_str().unwrap(),
        ])
    };
    // A future version.
    std::fs::write(
        &history,
        r#"{"format":"driftwatch-anomaly-history","version":2,"series":[]}"#,
    )
    .unwrap();
    let out = check(&history);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(&format!(
            "{}: history file version 2 was written by a newer driftwatch; this one reads version 1",
            history.display()
        )),
        "{}",
        text(&out.stderr)
    );
    // Another dataset's history.
    std::fs::write(
        &history,
        r#"{"format":"driftwatch-anomaly-history","version":1,"series":[{"dataset":"flights","check":"anomaly_row_count","definition":"row_count","points":[]}]}"#,
    )
    .unwrap();
    let out = check(&history);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(&format!(
            "{}: holds the history of dataset(s) `flights` but this run checks `volumes`",
            history.display()
        )),
        "{}",
        text(&out.stderr)
    );
    // Not a history file at all.
    std::fs::write(&history, "{}").unwrap();
    let out = check(&history);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not a history file"));

    // Rule errors at file:line:col.
    let bad = |yaml: &str| {
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, yaml).unwrap();
        let out = driftwatch(&["rules", "check", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{yaml}");
        text(&out.stderr)
    };
    let stderr =
        bad("dataset: d\nchecks:\n  - anomaly: { metric: row_count, seasonality: monthly }\n");
    assert!(stderr.contains("bad.yaml:3:"), "{stderr}");
    assert!(stderr.contains("monthly"), "{stderr}");
    let stderr = bad("dataset: d\nchecks:\n  - anomaly:\n      metric: quantile(x, 1.5)\n");
    assert!(
        stderr
            .contains("bad.yaml:4:15: `quantile`: the level must be a number in (0, 1), got `1.5`"),
        "{stderr}"
    );
    let stderr = bad("dataset: d\nchecks:\n  - anomaly: { metric: \"failing_fraction(nope)\" }\n");
    assert!(
        stderr
            .contains("bad.yaml:3:5: `failing_fraction(nope)`: no check named `nope` in this file"),
        "{stderr}"
    );
    let stderr = bad("dataset: d\nchecks:\n  - anomaly: { metric: row_count, history: 60 days }\n");
    assert!(stderr.contains("bad.yaml:3:"), "{stderr}");
    assert!(stderr.contains("`history`"), "{stderr}");
    // A metric the engine cannot compute on this data: the check errors with its location.
    std::fs::write(
        dir.path().join("strings.yaml"),
        "dataset: volumes\nchecks:\n  - anomaly: { metric: \"mean(ts)\" }\n",
    )
    .unwrap();
    let out = driftwatch(&[
        "check",
        data.to_str().unwrap(),
        "--rules",
        dir.path().join("strings.yaml").to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = &report["reports"][0]["checks"][0];
    assert_eq!(c["status"], "error");
    assert!(
        c["message"].as_str().unwrap().ends_with(
            "strings.yaml:3:5: `mean(ts)` needs a numeric column, but `ts` is timestamp(UTC) [us]"
        ),
        "{c}"
    );
}

#[test]
fn issue_18_a_check_cannot_take_the_volume_signals_series_name() {
    // The volume signal keeps its row counts under `@volume` beside the
    // checks' series: a check of that name (or any `@` name) is refused
    // where it is written, by `rules check` and by `check` alike.
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("clash.yaml");
    std::fs::write(
        &rules,
        "dataset: volumes\nchecks:\n  - row_count: { min: 1 }\n  - anomaly: { metric: row_count }\n    name: \"@volume\"\n",
    )
    .unwrap();
    let expected = format!(
        "{}:4:5: check name `@volume`: names starting with `@` are reserved for driftwatch's own signals",
        rules.display()
    );
    let out = driftwatch(&["rules", "check", rules.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(&expected),
        "{}",
        text(&out.stderr)
    );
    let data = write_day(dir.path(), 0, 10);
    let out = driftwatch(&[
        "check",
        data.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(&expected),
        "{}",
        text(&out.stderr)
    );
    // Any other name is the check's own series.
    std::fs::write(
        &rules,
        "dataset: volumes\nchecks:\n  - anomaly: { metric: row_count }\n    name: volume\n",
    )
    .unwrap();
    let out = driftwatch(&["rules", "check", rules.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn issue_18_agent_flags_exactly_the_abnormal_batch_and_keeps_history_across_restart() {
    let lake = Lake::new(RULES);
    let agent = Agent::start(&lake, &[]);
    let staging = lake.path("staging");
    for day in 0..60 {
        let path = write_day(&staging, day, normal_rows(day));
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        lake.land(&format!("day-{day:03}.parquet"), &bytes);
    }
    let results = wait_results(&lake, &agent, 60);
    let failed: Vec<&Value> = results
        .iter()
        .filter(|r| r["reports"][0]["passed"] == false)
        .collect();
    assert!(failed.is_empty(), "normal batches failed: {failed:?}");
    // The abnormal Friday.
    let path = write_day(&staging, 60, 600);
    let bytes = std::fs::read(&path).unwrap();
    lake.land("day-060.parquet", &bytes);
    let results = wait_results(&lake, &agent, 61);
    let r = &results[60]["reports"][0];
    assert!(
        r["source"].as_str().unwrap().ends_with("/day-060.parquet"),
        "{r}"
    );
    assert_eq!(r["passed"], false);
    let volume = anomaly_check(r, "anomaly_row_count");
    assert_eq!(volume["status"], "fail", "{volume}");
    assert_eq!(volume["observed"], 600.0);
    assert_eq!(volume["expected"]["batches"], 60);
    let low = volume["expected"]["low"].as_f64().unwrap();
    let high = volume["expected"]["high"].as_f64().unwrap();
    // /status: only that batch, only that check.
    let status = agent.status();
    let dataset = &status["datasets"][0];
    assert_eq!(dataset["failed"], 1);
    assert_eq!(
        dataset["recent"][0]["failed_checks"],
        serde_json::json!(["anomaly_row_count"])
    );
    // Telemetry: the observed value beside the expected band.
    let metrics = wait_for("the anomaly gauges on /metrics", || {
        let (code, body) = agent.get("/metrics");
        (code == 200 && body.contains("driftwatch_anomaly_observed")).then_some(body)
    });
    let gauge = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains("check=\"anomaly_row_count\""))
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(gauge("driftwatch_anomaly_observed"), 600.0);
    assert_eq!(gauge("driftwatch_anomaly_expected_low"), low);
    assert_eq!(gauge("driftwatch_anomaly_expected_high"), high);
    // The live dataset page draws the metric over time with its band.
    let (code, page) = agent.get("/report/volumes?refresh=0");
    assert_eq!(code, 200);
    assert!(
        page.contains("<h2>Anomaly checks over the last batches</h2>"),
        "{page}"
    );
    assert!(
        page.contains("anomaly_row_count — observed per batch (#"),
        "{page}"
    );
    assert!(
        page.contains("; shaded: the expected band</figcaption>"),
        "{page}"
    );
    assert!(page.contains("<polygon class=\"band\""), "{page}");
    assert!(page.contains("<circle class=\"anomaly\""), "{page}");
    assert!(page.contains(": 600 (expected "), "{page}");
    assert_eq!(agent.terminate(), Some(0));

    // Restarted, the agent still has the history: a normal Saturday passes
    // against 59 normal batches (the window's last 60, less the anomaly).
    let agent = Agent::start(&lake, &[]);
    let path = write_day(&staging, 61, normal_rows(61));
    let bytes = std::fs::read(&path).unwrap();
    lake.land("day-061.parquet", &bytes);
    let results = wait_results(&lake, &agent, 62);
    let r = &results[61]["reports"][0];
    let volume = anomaly_check(r, "anomaly_row_count");
    assert_eq!(volume["status"], "pass", "{volume}");
    assert_eq!(volume["expected"]["batches"], 59);
    assert!(
        volume["message"]
            .as_str()
            .unwrap()
            .ends_with(" for Saturdays (59 batches of history)"),
        "{volume}"
    );
    assert_eq!(r["passed"], true);
}

/// Writes a flights-shaped file of `rows` rows.
fn flights(
    path: &Path,
    rows: u64,
    seed: u64,
    first_row_id: i64,
    defects: driftwatch::demo::Defects,
) {
    driftwatch::demo::write_flights(
        path,
        &driftwatch::demo::FlightsSpec {
            rows,
            seed,
            first_row_id,
            defects,
            ..driftwatch::demo::FlightsSpec::default()
        },
    )
    .unwrap();
}

#[test]
fn issue_18_rules_suggest_writes_a_file_that_passes_on_its_data_and_catches_planted_defects() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("months");
    std::fs::create_dir_all(&data).unwrap();
    for (month, seed) in [(1, 101), (2, 102), (3, 103)] {
        flights(
            &data.join(format!("2013-{month:02}.parquet")),
            5_000,
            seed,
            1 + (month - 1) * 5_000,
            Default::default(),
        );
    }
    let rules = dir.path().join("flights.yaml");
    let out = driftwatch(&[
        "rules",
        "suggest",
        data.to_str().unwrap(),
        "--dataset",
        "flights",
        "--output",
        rules.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let yaml = std::fs::read_to_string(&rules).unwrap();
    println!("{yaml}");
    assert!(dir.path().join("flights.profile").is_file());
    // Valid, and passing on its own data.
    let out = driftwatch(&["rules", "check", rules.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = driftwatch(&[
        "check",
        data.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // Exact evidence in the comments.
    for line in [
        "# Suggested by `driftwatch rules suggest` from 3 input(s), 15,000 rows; every check passed on them.",
        "  # 0 nulls in 15,000 rows\n  - not_null: \"origin\"",
        "  # 3 distinct values in 15,000 non-null rows: EWR 4,992, JFK 5,066, LGA 4,942\n  - accepted_values:\n      column: \"origin\"\n      values: [\"EWR\", \"JFK\", \"LGA\"]",
        "  # 117 nulls in 15,000 rows (0.0078); tolerance 0.0098 = observed × 1.25, rounded up\n  - not_null: \"tailnum\"\n    max_fraction: 0.0098",
        "  # all 14,627 distinct values have this shape; checked on all 14,883 non-null rows\n  - regex:\n      column: \"tailnum\"\n      pattern: \"^[A-Z][0-9]{3}[A-Z]{2}$\"",
        "  # observed 187 to 4983 in 15,000 non-null rows; widened by 10% of the span each side\n  - range:\n      column: \"distance\"\n      min: 0\n      max: 5463",
        "  # 3 batch(es) of 5,000 to 5,000 rows; judged against its own history once it has 10 batches\n  - anomaly:\n      metric: row_count",
        "drift:\n  reference: \"flights.profile\"\n",
    ] {
        assert!(yaml.contains(line), "missing\n{line}\nin\n{yaml}");
    }
    assert!(!yaml.contains("not suggested"), "{yaml}");
    assert!(yaml.contains("  - unique: \"row_id\""), "{yaml}");

    // Planted defects in a batch like January's: exactly the checks about
    // them fail.
    let bad = dir.path().join("bad.parquet");
    flights(
        &bad,
        5_000,
        101,
        1,
        driftwatch::demo::Defects {
            null_dep_delay_every: Some(10),
            bad_origin_every: Some(50),
            duplicate_row_id_every: Some(100),
            bad_tailnum_every: Some(70),
            negative_distance_every: Some(90),
        },
    );
    let out = driftwatch(&[
        "check",
        bad.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let failing: Vec<&str> = report["reports"][0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        failing,
        [
            "unique_row_id",
            "not_null_dep_delay",
            "regex_tailnum",
            "accepted_values_origin",
            "range_distance"
        ],
        "{report}"
    );
}

#[test]
fn issue_18_rules_suggest_leaves_out_a_check_its_data_fails_and_the_rest_pass() {
    // 200,000 ids with one repeated: too many to count exactly in the
    // profile, so the sketch makes `unique` a candidate; the verification
    // scan finds the repeat and leaves it out, saying why, and the file
    // written passes on its data without another scan deciding it.
    let dir = tempfile::tempdir().unwrap();
    let n = 200_000i64;
    let ids: Vec<i64> = (0..n).map(|i| if i == n - 1 { 7 } else { i }).collect();
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)])),
        vec![Arc::new(arrow::array::Int64Array::from(ids)) as ArrayRef],
    )
    .unwrap();
    let data = dir.path().join("ids.parquet");
    write_parquet(&data, &batch, 65_536);
    let rules = dir.path().join("ids.yaml");
    let out = driftwatch(&[
        "rules",
        "suggest",
        data.to_str().unwrap(),
        "--output",
        rules.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let yaml = std::fs::read_to_string(&rules).unwrap();
    assert!(!yaml.contains("- unique:"), "{yaml}");
    assert!(
        yaml.contains(&format!(
            "  # not suggested: `unique_id` fails on this data ({}: 1 of 200000 rows (0.0005%) violate the check)",
            data.display()
        )),
        "{yaml}"
    );
    assert!(
        yaml.contains("  # observed 0 to 199998 in 200,000 non-null rows"),
        "{yaml}"
    );
    let out = driftwatch(&[
        "check",
        data.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}

#[test]
fn issue_18_a_schema_change_is_a_report_field_a_log_record_a_metric_and_a_webhook_trigger() {
    use crate::webhooks::{Receiver, generic_webhook, start_agent};
    let receiver = Receiver::start("127.0.0.1:0");
    let lake = Lake::new("dataset: volumes\nchecks:\n  - row_count: { min: 1 }\n");
    let webhooks = format!(
        "{}[webhooks.trigger]\nschema_changed = true\n",
        generic_webhook(&receiver.url("/hooks/schema"), "")
    );
    let agent = start_agent(&lake, &webhooks);
    let staging = lake.path("staging");
    let first = write_day(&staging, 0, 10);
    lake.land("a.parquet", &std::fs::read(first).unwrap());
    let r = wait_results(&lake, &agent, 1);
    assert!(
        r[0]["reports"][0].get("schema_changes").is_none(),
        "{}",
        r[0]
    );
    // The same columns again: no change.
    let second = write_day(&staging, 1, 10);
    lake.land("b.parquet", &std::fs::read(second).unwrap());
    let r = wait_results(&lake, &agent, 2);
    assert!(
        r[1]["reports"][0].get("schema_changes").is_none(),
        "{}",
        r[1]
    );
    // `x` becomes a string, `y` appears, `ts` goes.
    let changed = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("x", DataType::Utf8, false),
            Field::new("y", DataType::Int64, false),
        ])),
        vec![
            Arc::new(arrow::array::StringArray::from(vec!["a", "b"])) as ArrayRef,
            Arc::new(arrow::array::Int64Array::from(vec![1, 2])) as ArrayRef,
        ],
    )
    .unwrap();
    let path = staging.join("c.parquet");
    write_parquet(&path, &changed, 10);
    lake.land("c.parquet", &std::fs::read(&path).unwrap());
    let r = wait_results(&lake, &agent, 3);
    let changes = serde_json::json!([
        "column `ts` was removed",
        "column `x` changed type from float64 to utf8",
        "column `y` was added (int64)"
    ]);
    assert_eq!(r[2]["reports"][0]["schema_changes"], changes, "{}", r[2]);
    // The webhook fired once, for that batch, saying why.
    let requests = receiver.wait_requests(1);
    let event = requests[0].json();
    assert_eq!(event["reason"]["kind"], "schema_changed");
    assert_eq!(
        event["reason"]["description"],
        "schema changed: column `ts` was removed; column `x` changed type from float64 to utf8; column `y` was added (int64)"
    );
    assert_eq!(event["batches"][0]["seq"], 3);
    // The metric and the log record.
    let (_, metrics) = agent.get("/metrics");
    assert!(
        metrics.contains("driftwatch_dataset_schema_changes_total{dataset=\"volumes\"} 1"),
        "{metrics}"
    );
    let log = wait_for("the schema-change log record", || {
        let log = agent.log_text();
        log.contains("schema changed since the dataset's previous batch")
            .then_some(log)
    });
    assert!(log.contains("column `y` was added (int64)"), "{log}");
    assert_eq!(receiver.requests().len(), 1);
}

#[test]
fn issue_18_lateness_is_learned_from_landing_times_and_survives_a_restart() {
    let lake = Lake::new("dataset: volumes\nchecks:\n  - row_count: { min: 1 }\n");
    let agent = Agent::start(&lake, &[]);
    // Five hourly batches that landed two days ago (their modification
    // times say so): the dataset is a day and a half overdue, without waiting.
    let now = std::time::SystemTime::now();
    let two_days = std::time::Duration::from_secs(2 * 86_400);
    let staging = lake.path("staging");
    for i in 0..5u64 {
        let path = write_day(&staging, i as i64, 10);
        let landed = now - two_days + std::time::Duration::from_secs(i * 3_600);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(landed)
            .unwrap();
        std::fs::rename(&path, lake.lake().join(format!("h{i}.parquet"))).unwrap();
    }
    wait_results(&lake, &agent, 5);
    let gauge = |agent: &Agent, name: &str| -> f64 {
        wait_for(name, || {
            let (_, metrics) = agent.get("/metrics");
            metrics
                .lines()
                .find(|l| l.starts_with(&format!("{name}{{dataset=\"volumes\"")))
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        })
    };
    let expected_overdue = |now: std::time::SystemTime| {
        // now − (last landing + interval): 2 days − 4 h − 1 h.
        (now.duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64())
            - (now - two_days + std::time::Duration::from_secs(5 * 3_600))
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64()
    };
    assert_eq!(
        gauge(&agent, "driftwatch_dataset_arrival_interval_seconds"),
        3_600.0
    );
    let overdue = gauge(&agent, "driftwatch_dataset_overdue_seconds");
    let expected = expected_overdue(now);
    assert!(
        overdue >= expected && overdue < expected + 120.0,
        "overdue {overdue}, expected about {expected}"
    );
    assert_eq!(agent.terminate(), Some(0));
    // Restarted, the agent knows it from the stored reports.
    let agent = Agent::start(&lake, &[]);
    assert_eq!(
        gauge(&agent, "driftwatch_dataset_arrival_interval_seconds"),
        3_600.0
    );
    assert!(gauge(&agent, "driftwatch_dataset_overdue_seconds") >= expected);
}

/// Writes day `i`'s batch with its modification time set to `landed` and
/// renames it into the lake as `name` (a rename keeps the time): a landing
/// time chosen by the test, without waiting for it.
fn land_at(lake: &Lake, name: &str, i: i64, landed: std::time::SystemTime) {
    let path = write_day(&lake.path("staging"), i, 10);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(landed)
        .unwrap();
    std::fs::rename(&path, lake.lake().join(name)).unwrap();
}

#[test]
fn issue_18_a_late_batch_is_a_report_field_a_log_record_a_metric_and_a_webhook_trigger() {
    use crate::webhooks::{Receiver, generic_webhook, start_agent};
    use std::time::{Duration, SystemTime};
    let receiver = Receiver::start("127.0.0.1:0");
    let lake = Lake::new("dataset: volumes\nchecks:\n  - row_count: { min: 1 }\n");
    let webhooks = format!(
        "{}[webhooks.trigger]\nlate = true\n",
        generic_webhook(&receiver.url("/hooks/late"), "")
    );
    let agent = start_agent(&lake, &webhooks);
    // Hourly batches that landed ten hours ago and after (whole seconds, so
    // the gaps are exact): four on time, a fifth three hours after the
    // fourth (late: more than 1.5 intervals), a sixth an hour after that.
    let now = SystemTime::UNIX_EPOCH
        + Duration::from_secs(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        );
    let hour = Duration::from_secs(3_600);
    let at = |hours: u32| now - 10 * hour + hours * hour;
    for (i, hours) in [0, 1, 2, 3].into_iter().enumerate() {
        land_at(&lake, &format!("h{i}.parquet"), i as i64, at(hours));
        wait_results(&lake, &agent, i + 1);
    }
    let r = lake.results();
    assert!(
        r.iter().all(|r| r["reports"][0].get("lateness").is_none()),
        "{r:?}"
    );
    // Nothing for seven hours after an hourly rhythm: the dataset is
    // overdue, said once in the log without any batch.
    let log = wait_for("the overdue log record", || {
        let log = agent.log_text();
        log.contains("dataset overdue: no batch since well past its usual interval")
            .then_some(log)
    });
    let record = log.lines().find(|l| l.contains("dataset overdue")).unwrap();
    assert!(
        record.contains("expected_s") && record.contains("3600.0"),
        "{record}"
    );
    land_at(&lake, "h4.parquet", 4, at(6));
    let r = wait_results(&lake, &agent, 5);
    assert_eq!(
        r[4]["reports"][0]["lateness"],
        serde_json::json!({"gap_seconds": 10800.0, "expected_seconds": 3600.0, "late": true}),
        "{}",
        r[4]
    );
    // The webhook fired for that batch, saying why.
    let requests = receiver.wait_requests(1);
    let event = requests[0].json();
    assert_eq!(event["reason"]["kind"], "late");
    assert_eq!(
        event["reason"]["description"],
        "batch landed late: 3h since the dataset's previous batch, expected about every 1h"
    );
    assert_eq!(event["batches"][0]["seq"], 5);
    // The log record and the counter.
    let log = wait_for("the late-batch log record", || {
        let log = agent.log_text();
        log.contains("batch landed late for the dataset")
            .then_some(log)
    });
    let record = log
        .lines()
        .find(|l| l.contains("batch landed late for the dataset"))
        .unwrap();
    assert!(
        record.contains("gap_s") && record.contains("10800.0") && record.contains("h4.parquet"),
        "{record}"
    );
    let (_, metrics) = agent.get("/metrics");
    assert!(
        metrics.contains("driftwatch_dataset_late_batches_total{dataset=\"volumes\"} 1"),
        "{metrics}"
    );
    // Back on time: an hour after the late one is not late (the learned
    // interval is still an hour: the median gap).
    land_at(&lake, "h5.parquet", 5, at(7));
    let r = wait_results(&lake, &agent, 6);
    assert!(r[5]["reports"][0].get("lateness").is_none(), "{}", r[5]);
    // One overdue record per episode (each landing ends one), not one per
    // second: let a few of the watch's one-second ticks pass first, timed
    // by the overdue gauge, which grows with the clock.
    let overdue = |agent: &Agent| -> Option<f64> {
        let (_, metrics) = agent.get("/metrics");
        metrics
            .lines()
            .find(|l| l.starts_with("driftwatch_dataset_overdue_seconds{dataset=\"volumes\""))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    };
    let start = wait_for("the overdue gauge", || overdue(&agent));
    wait_for("three seconds of overdue", || {
        overdue(&agent).filter(|o| *o >= start + 3.0)
    });
    let episodes = agent
        .log_text()
        .matches("dataset overdue: no batch since well past its usual interval")
        .count();
    assert!((1..=3).contains(&episodes), "{episodes} overdue records");
    assert_eq!(receiver.requests().len(), 1);
}

#[test]
fn issue_18_the_volume_signal_keeps_every_point_of_a_backlog_evaluated_in_parallel() {
    // 24 batches renamed in at once are evaluated side by side; the volume
    // signal judges them one at a time from its in-memory series and their
    // records are committed in that order, so the store ends with all 24
    // points: an abnormal batch after a restart is judged against 24.
    let sizes: Vec<usize> = (0..24).map(|i| 950 + (i * 37 % 11) * 10).collect();
    let lake = Lake::new("dataset: volumes\nchecks:\n  - row_count: { min: 1 }\n");
    let agent = Agent::start(&lake, &["--concurrency", "4"]);
    let staging = lake.path("staging");
    let staged: Vec<PathBuf> = sizes
        .iter()
        .enumerate()
        .map(|(i, rows)| write_day(&staging, i as i64, *rows))
        .collect();
    for (i, path) in staged.iter().enumerate() {
        std::fs::rename(path, lake.lake().join(format!("b{i:02}.parquet"))).unwrap();
    }
    let results = wait_results(&lake, &agent, 24);
    assert!(
        results
            .iter()
            .all(|r| r["reports"][0].get("volume_anomaly").is_none()),
        "{results:?}"
    );
    // Before the restart, from memory: all 24 judged.
    let path = write_day(&staging, 30, 100);
    lake.land("low1.parquet", &std::fs::read(&path).unwrap());
    let r = wait_results(&lake, &agent, 25);
    let reason = r[24]["reports"][0]["volume_anomaly"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.ends_with("(24 batches of history)"), "{}", r[24]);
    assert_eq!(agent.terminate(), Some(0));
    // After it, from the store.
    let agent = Agent::start(&lake, &[]);
    let path = write_day(&staging, 31, 100);
    lake.land("low2.parquet", &std::fs::read(&path).unwrap());
    let r = wait_results(&lake, &agent, 26);
    let reason = r[25]["reports"][0]["volume_anomaly"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.ends_with("(24 batches of history)"), "{}", r[25]);
}

/// Lands `sizes` as batches `v00.parquet`, … one after the other.
fn land_sizes(lake: &Lake, agent: &Agent, sizes: &[usize]) -> Vec<Value> {
    let staging = lake.path("staging");
    let mut results = Vec::new();
    for (i, rows) in sizes.iter().enumerate() {
        let path = write_day(&staging, i as i64, *rows);
        lake.land(&format!("v{i:02}.parquet"), &std::fs::read(&path).unwrap());
        results = wait_results(lake, agent, i + 1);
    }
    results
}

#[test]
fn issue_18_the_volume_signal_flags_an_abnormal_row_count_without_rules_and_can_be_off() {
    // 24 batches of 950–1,050 rows, then one of 100. (Evaluation time is the
    // batch's time here: all fall on today's weekday slot.)
    let mut sizes: Vec<usize> = (0..24).map(|i| 950 + (i * 37 % 11) * 10).collect();
    sizes.push(100);
    let lake = Lake::new("dataset: volumes\nchecks:\n  - row_count: { min: 1 }\n");
    let agent = Agent::start(&lake, &[]);
    let results = land_sizes(&lake, &agent, &sizes);
    let flagged: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r["reports"][0].get("volume_anomaly").is_some())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(flagged, [24], "{results:?}");
    let last = &results[24]["reports"][0];
    let reason = last["volume_anomaly"].as_str().unwrap();
    assert!(
        reason.starts_with("row_count 100 is below the expected "),
        "{reason}"
    );
    assert!(reason.ends_with("(24 batches of history)"), "{reason}");
    // A signal, not a verdict: the batch passes its rules.
    assert_eq!(last["passed"], true);
    let (_, metrics) = agent.get("/metrics");
    assert!(
        metrics.contains("driftwatch_dataset_volume_anomalies_total{dataset=\"volumes\"} 1"),
        "{metrics}"
    );
    assert!(agent.log_text().contains("abnormal volume for the dataset"));
    drop(agent);

    // Off.
    let lake = Lake::new("dataset: volumes\nchecks:\n  - row_count: { min: 1 }\n");
    let agent = crate::webhooks::start_agent(&lake, "[health]\nvolume_anomaly = false\n");
    let results = land_sizes(&lake, &agent, &sizes);
    assert!(
        results
            .iter()
            .all(|r| r["reports"][0].get("volume_anomaly").is_none())
    );
}
