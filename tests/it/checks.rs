//! Every check kind, passing and failing, with exact counts on `common::table()`.

use driftwatch::report::CheckStatus::{Error, Fail, Pass};
use serde_json::json;

use crate::common::{check, evaluate, fixture};

#[tokio::test]
async fn not_null_counts_nulls_and_honours_tolerances_at_the_limit() {
    let f = fixture();
    let r = evaluate(
        &f.data,
        r#"
  - not_null: id
  - not_null: id
    name: id_tolerant_fraction
    max_fraction: 0.1
  - not_null: id
    name: id_tolerant_count
    max_count: 1
  - not_null: id
    name: id_too_strict
    max_fraction: 0.09
  - not_null: my col
"#,
    )
    .await;
    assert_eq!(r.rows, Some(10));
    let c = check(&r, "not_null_id");
    assert_eq!(
        (c.status, c.failing_rows, c.rows_considered),
        (Fail, Some(1), Some(10))
    );
    assert_eq!(c.fraction, Some(0.1));
    assert_eq!(c.expected, json!({"max_count": 0}));
    assert_eq!(check(&r, "id_tolerant_fraction").status, Pass);
    assert_eq!(check(&r, "id_tolerant_count").status, Pass);
    assert_eq!(check(&r, "id_too_strict").status, Fail);
    let c = check(&r, "not_null_my col");
    assert_eq!((c.status, c.failing_rows), (Pass, Some(0)));
    assert!(!r.passed);
}

#[tokio::test]
async fn range_skips_nulls_and_fails_nan_and_infinities() {
    let f = fixture();
    let r = evaluate(
        &f.data,
        r#"
  - range: { column: score, min: 0, max: 10 }
  - range: { column: score, min: 0 }
    name: score_non_negative
  - range: { column: id, min: 1, max: 9 }
  - range: { column: id, min: 2, max: 8 }
    name: id_narrow
  - range: { column: ts, min: "2024-04-29T00:00:00Z", max: "2024-04-30T23:59:59Z" }
"#,
    )
    .await;
    // NaN, +inf and -inf fail; the null is skipped.
    let c = check(&r, "range_score");
    assert_eq!(
        (c.status, c.failing_rows, c.rows_considered),
        (Fail, Some(3), Some(10))
    );
    assert_eq!(c.expected, json!({"min": 0, "max": 10, "max_count": 0}));
    // With no upper bound, +inf is in range; NaN and -inf are not.
    assert_eq!(check(&r, "score_non_negative").failing_rows, Some(2));
    assert_eq!(check(&r, "range_id").status, Pass);
    // 1 and 9 are outside [2, 8]; the null id is skipped.
    assert_eq!(check(&r, "id_narrow").failing_rows, Some(2));
    // Only 2024-05-01T00:00Z is after the bound.
    assert_eq!(check(&r, "range_ts").failing_rows, Some(1));
}

#[tokio::test]
async fn accepted_values_on_dictionary_and_unicode_strings() {
    let f = fixture();
    let r = evaluate(
        &f.data,
        r#"
  - accepted_values: { column: code, values: [A, B] }
  - accepted_values: { column: code, values: [A, B, C] }
    name: code_all
  - accepted_values: { column: city, values: ["Zürich", "東京", Paris] }
  - accepted_values: { column: city, values: ["Zürich", Paris] }
    name: city_no_tokyo
  - accepted_values: { column: id, values: [1, 2, 3, 4, 5, 6, 8] }
"#,
    )
    .await;
    let c = check(&r, "accepted_values_code");
    assert_eq!((c.status, c.failing_rows), (Fail, Some(1)));
    assert_eq!(c.expected, json!({"values": ["A", "B"], "max_count": 0}));
    assert_eq!(check(&r, "code_all").status, Pass);
    assert_eq!(check(&r, "accepted_values_city").status, Pass);
    assert_eq!(check(&r, "city_no_tokyo").failing_rows, Some(2));
    // 9 is not accepted; the null id is skipped.
    assert_eq!(check(&r, "accepted_values_id").failing_rows, Some(1));
}

#[tokio::test]
async fn regex_skips_nulls() {
    let f = fixture();
    let r = evaluate(
        &f.data,
        r#"
  - regex: { column: name, pattern: "^[a-z]+$" }
  - regex: { column: name, pattern: "^[A-Za-z]+$" }
    name: letters
  - regex: { column: code, pattern: "^[AB]$" }
"#,
    )
    .await;
    let c = check(&r, "regex_name");
    assert_eq!(
        (c.status, c.failing_rows, c.rows_considered),
        (Fail, Some(1), Some(10))
    );
    assert_eq!(check(&r, "letters").status, Pass);
    // Dictionary-encoded strings work too: only "C" fails.
    assert_eq!(check(&r, "regex_code").failing_rows, Some(1));
}

#[tokio::test]
async fn unique_counts_rows_beyond_the_first_occurrence() {
    let f = fixture();
    let r = evaluate(
        &f.data,
        r#"
  - unique: id
  - unique: my col
  - unique: city
"#,
    )
    .await;
    assert_eq!(check(&r, "unique_id").failing_rows, Some(1));
    assert_eq!(check(&r, "unique_my col").status, Pass);
    // Zürich×2, 東京×2, Paris×5 → 1 + 1 + 4 duplicates; the null is skipped.
    assert_eq!(check(&r, "unique_city").failing_rows, Some(6));
}

#[tokio::test]
async fn row_count_bounds() {
    let f = fixture();
    let r = evaluate(
        &f.data,
        r#"
  - row_count: { min: 10, max: 10 }
  - row_count: { min: 11 }
    name: too_few
  - row_count: { max: 3 }
    name: filtered
    where: "id > 6"
"#,
    )
    .await;
    let c = check(&r, "row_count");
    assert_eq!((c.status, c.observed.clone()), (Pass, json!(10)));
    let c = check(&r, "too_few");
    assert_eq!((c.status, c.observed.clone()), (Fail, json!(10)));
    assert_eq!(c.message.as_deref(), Some("10 rows, expected >= 11"));
    // ids 8 and 9 only.
    let c = check(&r, "filtered");
    assert_eq!((c.status, c.observed.clone()), (Pass, json!(2)));
}

#[tokio::test]
async fn schema_uses_logical_type_equivalences() {
    let f = fixture();
    let r = evaluate(
        &f.data,
        r#"
  - schema:
      columns:
        id: int64
        name: utf8
        code: utf8
        score: float
        ts: timestamp(UTC)
        local_ts: timestamp(none)
        "my col": integer
  - schema:
      columns: { id: utf8, missing: int64, ts: timestamp(none) }
    name: wrong
  - schema:
      columns: { id: int64 }
      allow_extra: false
    name: closed
"#,
    )
    .await;
    assert_eq!(check(&r, "schema").status, Pass);
    let c = check(&r, "wrong");
    assert_eq!(c.status, Fail);
    assert_eq!(
        c.message.as_deref(),
        Some(
            "`id` is int64, expected utf8; `missing` is missing; \
             `ts` is timestamp(UTC) [us], expected timestamp(none)"
        )
    );
    assert_eq!(c.observed["missing"], serde_json::Value::Null);
    let c = check(&r, "closed");
    assert_eq!(c.status, Fail);
    assert!(
        c.message
            .as_deref()
            .unwrap()
            .starts_with("unexpected column(s) `name`, `score`")
    );
}

#[tokio::test]
async fn freshness_with_and_without_time_zone() {
    let f = fixture();
    // NOW is 2024-05-01T12:00Z; the newest value is 2024-05-01T00:00 (12 h old).
    let r = evaluate(
        &f.data,
        r#"
  - freshness: { column: ts, max_age: 12h }
  - freshness: { column: ts, max_age: 11h59m }
    name: too_old
  - freshness: { column: local_ts, max_age: 36h }
  - freshness: { column: ts, max_age: 1h }
    name: old_rows_only
    where: "id >= 6"
"#,
    )
    .await;
    let c = check(&r, "freshness_ts");
    assert_eq!(c.status, Pass);
    assert_eq!(c.observed, json!("2024-05-01T00:00:00+00:00"));
    let c = check(&r, "too_old");
    assert_eq!(c.status, Fail);
    assert_eq!(
        c.message.as_deref(),
        Some("newest value 2024-05-01T00:00:00+00:00 is 12h old, more than 11h59m")
    );
    assert_eq!(check(&r, "freshness_local_ts").status, Pass);
    let c = check(&r, "old_rows_only");
    assert_eq!(c.status, Fail);
    assert_eq!(c.observed, json!("2024-04-29T00:00:00+00:00"));
}

#[tokio::test]
async fn expr_fails_only_definitely_false_rows() {
    let f = fixture();
    let r = evaluate(
        &f.data,
        r#"
  - expr: "id < 9"
  - expr: "length(city) <= 5"
    name: short_city
  - expr: "\"my col\" % 10 = 0"
    name: tens
"#,
    )
    .await;
    // id 9 fails; the null id is unknown, so it passes.
    let c = check(&r, "expr_1");
    assert_eq!((c.status, c.failing_rows), (Fail, Some(1)));
    assert_eq!(c.expected, json!({"predicate": "id < 9", "max_count": 0}));
    // "Zürich" has 6 characters (not 7 bytes' worth): two rows fail.
    assert_eq!(check(&r, "short_city").failing_rows, Some(2));
    assert_eq!(check(&r, "tens").status, Pass);
}

#[tokio::test]
async fn metric_with_where_and_bounds() {
    let f = fixture();
    let r = evaluate(
        &f.data,
        r#"
  - metric: "avg(score)"
    between: [1.9, 2.1]
    where: "id <= 2"
    name: mean_score_low_ids
  - metric: "sum(\"my col\") / count(*)"
    between: [55, 55]
    name: mean_my_col
  - metric: "max(id) - min(id)"
    between: [~, 5]
    name: id_spread
  - metric: "avg(score)"
    between: [0, 10]
    name: mean_score_nan
"#,
    )
    .await;
    let c = check(&r, "mean_score_low_ids");
    assert_eq!((c.status, c.observed.clone()), (Pass, json!(2.0)));
    assert_eq!(c.rows_considered, Some(2));
    let c = check(&r, "mean_my_col");
    assert_eq!((c.status, c.observed.clone()), (Pass, json!(55.0)));
    let c = check(&r, "id_spread");
    assert_eq!((c.status, c.observed.clone()), (Fail, json!(8.0)));
    assert_eq!(c.message.as_deref(), Some("8 is outside <= 5"));
    // The mean of values including NaN is NaN: written as null, explained in the message.
    let c = check(&r, "mean_score_nan");
    assert_eq!(
        (c.status, c.observed.clone()),
        (Fail, serde_json::Value::Null)
    );
    assert_eq!(c.message.as_deref(), Some("the metric is NaN"));
}

#[tokio::test]
async fn where_filters_apply_to_row_level_checks() {
    let f = fixture();
    let r = evaluate(
        &f.data,
        r#"
  - not_null: name
    where: "code = 'C'"
  - not_null: name
    name: name_in_a
    where: "code = 'A'"
  - range: { column: score, min: 0, max: 10 }
    where: "city = 'Paris'"
"#,
    )
    .await;
    let c = check(&r, "not_null_name");
    assert_eq!(
        (c.status, c.failing_rows, c.rows_considered),
        (Fail, Some(1), Some(1))
    );
    assert_eq!(c.fraction, Some(1.0));
    let c = check(&r, "name_in_a");
    assert_eq!(
        (c.status, c.failing_rows, c.rows_considered),
        (Pass, Some(0), Some(5))
    );
    // Paris rows: NaN (fails), null (skipped), 3.0, 4.0, 5.0.
    let c = check(&r, "range_score");
    assert_eq!((c.failing_rows, c.rows_considered), (Some(1), Some(5)));
}

#[tokio::test]
async fn warnings_never_fail_the_batch() {
    let f = fixture();
    let r = evaluate(
        &f.data,
        r#"
  - not_null: id
    severity: warn
  - unique: my col
"#,
    )
    .await;
    assert_eq!(check(&r, "not_null_id").status, Fail);
    assert!(r.passed);
}

#[tokio::test]
async fn schema_dependent_errors_name_the_rule_location() {
    let f = fixture();
    let r = evaluate(
        &f.data,
        r#"
  - not_null: nope
  - regex: { column: id, pattern: "^1" }
  - expr: "no_such_column > 1"
  - range: { column: name, min: 1 }
  - metric: "id + 1"
    between: [0, 1]
  - not_null: ID
  - unique: id
"#,
    )
    .await;
    let c = check(&r, "not_null_nope");
    assert_eq!(c.status, Error);
    let m = c.message.as_deref().unwrap();
    assert!(
        m.starts_with("rules.yaml:4:5: unknown column `nope`; the batch has `id`, `name`"),
        "{m}"
    );
    let m = check(&r, "regex_id").message.clone().unwrap();
    assert_eq!(
        m,
        "rules.yaml:5:5: `regex` needs a string column, but `id` is int64"
    );
    let c = check(&r, "expr_3");
    assert_eq!(c.status, Error);
    assert!(
        c.message
            .as_deref()
            .unwrap()
            .starts_with("rules.yaml:6:11: `expr`: "),
        "{:?}",
        c.message
    );
    assert!(c.message.as_deref().unwrap().contains("no_such_column"));
    assert_eq!(
        check(&r, "range_name").message.as_deref(),
        Some("rules.yaml:7:5: `range` bound 1 does not fit column `name` of type utf8")
    );
    assert_eq!(
        check(&r, "metric_5").message.as_deref(),
        Some(
            "rules.yaml:8:5: `metric` must be an aggregate expression such as `avg(x)`, got `id + 1`"
        )
    );
    assert!(
        check(&r, "not_null_ID")
            .message
            .as_deref()
            .unwrap()
            .contains("did you mean `id`? names are case-sensitive")
    );
    // The valid check still ran.
    assert_eq!(check(&r, "unique_id").failing_rows, Some(1));
    assert!(!r.passed);
}
