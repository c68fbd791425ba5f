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

/// The two-stage (partial → final) path of every aggregate, including the
/// duplicates and profiling UDAFs, gives the verdicts and profiles of the
/// single-stage path, and the same profile on every run.
#[tokio::test]
async fn parallel_plans_agree_with_single_partition_plans() {
    use driftwatch::demo::{Defects, FlightsSpec, write_flights};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("flights.parquet");
    let spec = FlightsSpec {
        rows: 60_000,
        row_group_rows: 5_000,
        defects: Defects {
            duplicate_row_id_every: Some(97),
            bad_origin_every: Some(50),
            ..Defects::default()
        },
        ..FlightsSpec::default()
    };
    write_flights(&data, &spec).unwrap();
    let rules = parse_rule_file(
        Path::new("rules.yaml"),
        "dataset: f\nchecks:\n  - unique: row_id\n  - unique: tailnum\n  - accepted_values: { column: origin, values: [EWR, JFK, LGA] }\n  - metric: \"avg(distance)\"\n    between: [0, 5000]\n",
    )
    .unwrap();
    let single = Engine::new(&EngineOptions {
        target_partitions: Some(1),
        ..EngineOptions::default()
    })
    .unwrap();
    let parallel = Engine::new(&EngineOptions {
        target_partitions: Some(4),
        split_files_from_bytes: Some(64 * 1024),
        ..EngineOptions::default()
    })
    .unwrap();
    let plan = parallel
        .explain(&data, &rules, &ProfileRequest::AllSupported)
        .await
        .unwrap();
    assert!(plan.contains("AggregateExec: mode=Partial"), "{plan}");
    assert!(plan.contains("file_groups={4 groups"), "{plan}");
    // Issue 19: the file's twelve row groups of 5,000 rows are shared three
    // to a partition, each range starting at a row group's first page.
    assert_eq!(groups_per_range(&data, &plan), vec![3, 3, 3, 3], "{plan}");

    let now = crate::common::now();
    let request = ProfileRequest::AllSupported;
    let a = single
        .evaluate_with_profiles(&data, "f", &rules, now, &request)
        .await;
    let b = parallel
        .evaluate_with_profiles(&data, "f", &rules, now, &request)
        .await;
    assert_eq!(
        serde_json::to_value(&a.report).unwrap(),
        serde_json::to_value(&b.report).unwrap()
    );
    assert_eq!(b.report.checks[0].failing_rows, Some(618)); // 60000 / 97
    let (pa, pb) = (a.profile.unwrap(), b.profile.unwrap());
    // Same input, same profile, whatever the threads do (work stealing and
    // round-robin repartitioning are off; partial profiles merge in a fixed order).
    let first = serde_json::to_string(&pb).unwrap();
    for _ in 0..4 {
        let again = parallel
            .evaluate_with_profiles(&data, "f", &rules, now, &request)
            .await;
        assert_eq!(
            first,
            serde_json::to_string(&again.profile.unwrap()).unwrap()
        );
    }
    for (name, x) in &pa.columns {
        let y = &pb.columns[name];
        assert_eq!((x.count, x.nulls), (y.count, y.nulls), "{name}");
        // Heavy-hitter summaries past the exact limit depend on how rows were
        // split (within their documented bound); exact frequencies must agree.
        assert_eq!(x.frequencies.n, y.frequencies.n, "{name}");
        if x.frequencies.exact {
            assert_eq!(x.frequencies, y.frequencies, "{name}");
        }
        if let (Some(s), Some(t)) = (&x.numeric, &y.numeric) {
            assert_eq!(
                (s.min, s.max, s.moments.n),
                (t.min, t.max, t.moments.n),
                "{name}"
            );
            assert_eq!(s.exact_values, t.exact_values, "{name}");
            assert_eq!(s.small_domain, t.small_domain, "{name}");
            assert!(
                (s.moments.mean - t.moments.mean).abs() <= 1e-9 * s.moments.mean.abs().max(1.0)
            );
        }
    }
}

/// How many of `data`'s row groups start in each byte range of the plan's
/// scan (`path:start..end` in DataFusion's plan text).
fn groups_per_range(data: &Path, plan: &str) -> Vec<usize> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(std::fs::File::open(data).unwrap()).unwrap();
    let starts: Vec<i64> = reader
        .metadata()
        .row_groups()
        .iter()
        .map(|g| {
            let c = g.column(0);
            c.dictionary_page_offset().unwrap_or(c.data_page_offset())
        })
        .collect();
    let ranges = regex::Regex::new(r"\.parquet:(\d+)\.\.(\d+)").unwrap();
    ranges
        .captures_iter(plan)
        .map(|c| {
            let (from, to): (i64, i64) = (c[1].parse().unwrap(), c[2].parse().unwrap());
            starts.iter().filter(|&&s| s >= from && s < to).count()
        })
        .collect()
}

/// Issue 7: the benchmark's 12 rules (benches/perf12.yaml) give identical
/// answers whichever path computes them — all fused in one plan, each check
/// in a plan of its own, the `unique` check spilling sorted runs to disk on
/// four partitions, and DataFusion's own `count(DISTINCT …)` for uniqueness.
#[tokio::test]
async fn issue_7_benchmark_rules_answer_the_same_fused_alone_and_spilled() {
    use driftwatch::demo::{Defects, FlightsSpec, write_flights};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("bench.parquet");
    write_flights(
        &data,
        &FlightsSpec {
            rows: 120_000,
            row_group_rows: 20_000,
            defects: Defects {
                null_dep_delay_every: Some(211),
                bad_origin_every: Some(503),
                duplicate_row_id_every: Some(97),
                bad_tailnum_every: Some(701),
                negative_distance_every: Some(907),
            },
            ..FlightsSpec::default()
        },
    )
    .unwrap();
    let suite =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/perf12.yaml"))
            .unwrap();
    let rules = parse_rule_file(Path::new("perf12.yaml"), &suite).unwrap();
    assert_eq!(rules.checks.len(), 12);
    let now = crate::common::now();
    let answers = |report: &driftwatch::report::BatchReport| -> Vec<(String, String)> {
        report
            .checks
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    format!("{:?} {} {:?}", c.status, c.observed, c.failing_rows),
                )
            })
            .collect()
    };

    let fused = Engine::new(&EngineOptions::default()).unwrap();
    let report = fused.evaluate(&data, "b", &rules, now).await;
    assert_eq!(report.error, None);
    let expected = answers(&report);
    let by_name: std::collections::BTreeMap<_, _> = expected.iter().cloned().collect();
    // The planted defects are found (so agreement is not agreement on zeros).
    assert_eq!(by_name["unique_row_id"], "Fail null Some(1237)"); // 120000 / 97
    assert!(by_name["accepted_values_origin"].ends_with("Some(238)"));
    assert!(by_name["regex_tailnum"].contains("Some(171)"));
    assert!(by_name["range_distance"].contains("Some(132)"));

    // Each check alone, in its own plan.
    for (i, check) in rules.checks.iter().enumerate() {
        let mut alone = rules.clone();
        alone.checks = vec![check.clone()];
        let report = fused.evaluate(&data, "b", &alone, now).await;
        assert_eq!(answers(&report)[0], expected[i], "{}", check.name);
    }

    // Four partitions, a unique budget so small that every partition spills.
    let spill_dir = dir.path().join("spill");
    std::fs::create_dir_all(&spill_dir).unwrap();
    let spilling = Engine::new(&EngineOptions {
        target_partitions: Some(4),
        split_files_from_bytes: Some(64 * 1024),
        unique_budget: Some(64 << 10),
        spill_dir: Some(spill_dir.clone()),
        ..EngineOptions::default()
    })
    .unwrap();
    assert_eq!(
        answers(&spilling.evaluate(&data, "b", &rules, now).await),
        expected
    );
    assert_eq!(
        std::fs::read_dir(&spill_dir).unwrap().count(),
        0,
        "no spill file left"
    );

    // DataFusion's generic distinct count agrees with the specialised aggregate.
    let generic = parse_rule_file(
        Path::new("generic.yaml"),
        "dataset: b\nchecks:\n  - metric: \"count(row_id) - count(DISTINCT row_id)\"\n    between: [0, 0]\n    name: generic_unique\n",
    )
    .unwrap();
    let report = fused.evaluate(&data, "b", &generic, now).await;
    assert_eq!(report.checks[0].observed, serde_json::json!(1237.0));
}
