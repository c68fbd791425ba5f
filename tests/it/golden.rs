//! Golden tests: `tests/golden/<case>/rules.yaml` + data → `expected.json`.
//!
//! The data of each case is generated deterministically by the test (the
//! flights generator with planted defects, or `common::table()`), so the
//! repository stays small. To accept a deliberate change of verdicts, run with
//! `DRIFTWATCH_BLESS=1` and review the diff of `expected.json`.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use driftwatch::demo::{Defects, FlightsSpec, write_flights};
use driftwatch::engine::{Engine, EngineOptions};
use driftwatch::report::Report;
use driftwatch::rules::load_rules;

use crate::common::{now, table, write_parquet};

async fn golden(case: &str, data: &Path) {
    let dir = PathBuf::from("tests/golden").join(case);
    let rules = load_rules(&dir.join("rules.yaml")).unwrap();
    let engine = Engine::new(&EngineOptions::default()).unwrap();
    let batch = engine
        .evaluate(data, "data.parquet", &rules[0], now())
        .await;
    let report = Report::new(vec![batch], vec![]);
    let actual = serde_json::to_string_pretty(&report).unwrap() + "\n";
    let expected_path = dir.join("expected.json");
    if std::env::var_os("DRIFTWATCH_BLESS").is_some() {
        std::fs::write(&expected_path, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with DRIFTWATCH_BLESS=1)",
            expected_path.display()
        )
    });
    assert_eq!(
        actual,
        expected,
        "verdicts differ from {}; if intended, rerun with DRIFTWATCH_BLESS=1",
        expected_path.display()
    );
}

#[tokio::test]
async fn golden_flights_with_planted_defects() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.parquet");
    let start: DateTime<Utc> = "2024-04-30T00:00:00Z".parse().unwrap();
    let spec = FlightsSpec {
        rows: 30_000,
        row_group_rows: 4_096,
        seed: 2024,
        first_row_id: 1,
        start,
        span_hours: 24,
        defects: Defects {
            null_dep_delay_every: Some(10),
            bad_origin_every: Some(300),
            duplicate_row_id_every: Some(1000),
            bad_tailnum_every: Some(700),
            negative_distance_every: Some(5000),
        },
        delay_shift: 0,
    };
    write_flights(&data, &spec).unwrap();
    golden("flights_defects", &data).await;
}

#[tokio::test]
async fn golden_edge_values() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.parquet");
    write_parquet(&data, &table(), 4);
    golden("edge_values", &data).await;
}
