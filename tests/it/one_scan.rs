//! Proof of one scan: ten checks compile into a single aggregate over a single
//! Parquet scan that reads only the columns the rules use.

use std::path::Path;

use driftwatch::engine::{Engine, EngineOptions, ProfileRequest};
use driftwatch::rules::parse_rule_file;

use crate::common::fixture;

#[tokio::test]
async fn ten_checks_are_one_aggregate_over_one_scan() {
    let f = fixture();
    let rules = parse_rule_file(
        Path::new("rules.yaml"),
        r#"
dataset: t
checks:
  - not_null: id
  - range: { column: score, min: 0, max: 10 }
  - accepted_values: { column: code, values: [A, B] }
  - regex: { column: name, pattern: "^[a-z]+$" }
  - unique: id
  - row_count: { min: 1 }
  - freshness: { column: ts, max_age: 1h }
  - expr: "id < 9"
  - metric: "avg(score)"
    between: [0, 1]
  - not_null: name
    where: "code = 'A'"
"#,
    )
    .unwrap();
    assert_eq!(rules.checks.len(), 10);
    let engine = Engine::new(&EngineOptions::default()).unwrap();
    let plan = engine
        .explain(&f.data, &rules, &ProfileRequest::None)
        .await
        .unwrap();
    let count = |needle: &str| plan.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(count("DataSourceExec"), 1, "{plan}");
    // One aggregate: either a single-stage one, or one partial stage per
    // partition merged by one final stage. Never a group-by or a second pass.
    let single = count("AggregateExec: mode=Single, gby=[]");
    let split = (
        count("AggregateExec: mode=Partial, gby=[]"),
        count("AggregateExec: mode=Final, gby=[]"),
    );
    assert!(single == 1 || split == (1, 1), "{plan}");
    assert_eq!(count("AggregateExec"), single + split.0 + split.1, "{plan}");
    assert_eq!(count("HashJoinExec") + count("UnionExec"), 0, "{plan}");
    // Projection pushdown: `local_ts`, `my col` and `city` are not read.
    let scan = plan.lines().find(|l| l.contains("DataSourceExec")).unwrap();
    assert!(scan.contains(", id, name, score, code, ts]"), "{scan}");
    for unused in ["local_ts", "my col", "city"] {
        assert!(!scan.contains(unused), "{scan}");
    }
}

#[tokio::test]
async fn schema_and_row_count_alone_are_answered_from_parquet_metadata() {
    let f = fixture();
    let rules = parse_rule_file(
        Path::new("rules.yaml"),
        "dataset: t\nchecks:\n  - row_count: { min: 1 }\n  - schema: { columns: { id: int64 } }\n",
    )
    .unwrap();
    let engine = Engine::new(&EngineOptions::default()).unwrap();
    let plan = engine
        .explain(&f.data, &rules, &ProfileRequest::None)
        .await
        .unwrap();
    // The row count comes from the footer's statistics: no data scan at all.
    assert!(!plan.contains("DataSourceExec"), "{plan}");
    assert!(!plan.contains("AggregateExec"), "{plan}");
    let report = engine
        .evaluate(&f.data, "data.parquet", &rules, crate::common::now())
        .await;
    assert_eq!(report.rows, Some(10));
    assert!(report.passed);
}
