//! Edge cases: empty files, all-null columns, row groups, float oddities.

use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use driftwatch::report::CheckStatus::{Fail, Pass};
use serde_json::json;

use crate::common::{check, evaluate, fixture, table, write_parquet};

const ALL_KINDS: &str = r#"
  - not_null: id
  - range: { column: score, min: 0, max: 10 }
  - accepted_values: { column: code, values: [A, B] }
  - regex: { column: name, pattern: "^[a-z]+$" }
  - unique: id
  - row_count: { min: 1 }
  - schema: { columns: { id: int64 } }
  - freshness: { column: ts, max_age: 1h }
  - expr: "id < 9"
  - metric: "avg(score)"
    between: [0, 1]
"#;

#[tokio::test]
async fn zero_row_file_passes_everything_but_row_count() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("empty.parquet");
    let empty = table().slice(0, 0);
    write_parquet(&data, &empty, 1024);
    let r = evaluate(&data, ALL_KINDS).await;
    assert_eq!(r.rows, Some(0));
    for c in &r.checks {
        if c.name == "row_count" {
            assert_eq!((c.status, c.observed.clone()), (Fail, json!(0)));
        } else {
            assert_eq!(c.status, Pass, "{c:?}");
        }
        if c.failing_rows.is_some() {
            assert_eq!((c.failing_rows, c.fraction), (Some(0), None), "{c:?}");
        }
    }
    assert_eq!(
        check(&r, "metric_10").message.as_deref(),
        Some("no rows considered")
    );
}

#[tokio::test]
async fn all_null_column() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("nulls.parquet");
    let schema = Arc::new(Schema::new(vec![
        Field::new("x", DataType::Float64, true),
        Field::new("s", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Float64Array::from(vec![None::<f64>; 4])),
            Arc::new(StringArray::from(vec![None::<&str>; 4])),
        ],
    )
    .unwrap();
    write_parquet(&data, &batch, 1024);
    let r = evaluate(
        &data,
        r#"
  - not_null: x
  - range: { column: x, min: 0 }
  - unique: s
  - regex: { column: s, pattern: "^a" }
  - metric: "avg(x)"
    between: [0, 1]
"#,
    )
    .await;
    let c = check(&r, "not_null_x");
    assert_eq!(
        (c.status, c.failing_rows, c.fraction),
        (Fail, Some(4), Some(1.0))
    );
    assert_eq!(check(&r, "range_x").failing_rows, Some(0));
    assert_eq!(check(&r, "unique_s").failing_rows, Some(0));
    assert_eq!(check(&r, "regex_s").failing_rows, Some(0));
    // Rows exist but the mean is undefined: that cannot be shown to be in bounds.
    let c = check(&r, "metric_5");
    assert_eq!(
        (c.status, c.message.as_deref()),
        (Fail, Some("the metric is null"))
    );
}

#[tokio::test]
async fn row_group_layout_does_not_change_verdicts() {
    let f = fixture(); // row groups of 3 rows
    let dir = tempfile::tempdir().unwrap();
    let single = dir.path().join("one_group.parquet");
    write_parquet(&single, &table(), 1_000_000);
    let a = evaluate(&f.data, ALL_KINDS).await;
    let b = evaluate(&single, ALL_KINDS).await;
    let a = serde_json::to_value(&a.checks).unwrap();
    let b = serde_json::to_value(&b.checks).unwrap();
    assert_eq!(a, b);
    let meta =
        parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&f.data).unwrap())
            .map(|r| parquet::file::reader::FileReader::metadata(&r).num_row_groups())
            .unwrap();
    assert_eq!(meta, 4, "the fixture must really have several row groups");
}

#[tokio::test]
async fn large_integers_compare_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("big.parquet");
    let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
    // 2^53 + 1 is not representable as f64: an integer bound must not go through floats.
    let big = (1i64 << 53) + 1;
    let batch =
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![big, big - 1]))]).unwrap();
    write_parquet(&data, &batch, 1024);
    let r = evaluate(
        &data,
        &format!("\n  - range: {{ column: n, max: {} }}\n", big - 1),
    )
    .await;
    assert_eq!(check(&r, "range_n").failing_rows, Some(1));
}
