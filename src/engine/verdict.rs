//! Turning the one row of aggregate results into per-check verdicts.

use chrono::{DateTime, TimeZone, Utc};
use datafusion::scalar::ScalarValue;
use serde_json::{Value, json};

use super::compile::{AnomalyValue, Compiled, CompiledRules, literal_json, scalar_f64};
use crate::report::{BatchReport, CheckResult, CheckStatus, json_f64};
use crate::rules::{Check, CheckKind, RuleFile, Tolerance, format_duration};

pub fn build_report(
    source: &str,
    rules: &RuleFile,
    compiled: &CompiledRules,
    values: &[ScalarValue],
    now: DateTime<Utc>,
) -> BatchReport {
    let rows = values.get(compiled.rows).and_then(as_u64);
    let mut checks: Vec<CheckResult> = rules
        .checks
        .iter()
        .zip(&compiled.checks)
        .map(|(check, c)| verdict(check, c, values, now))
        .collect();
    // `failing_fraction(check)`: the other check's verdict has the number.
    for (i, c) in compiled.checks.iter().enumerate() {
        if let Compiled::Anomaly {
            value: AnomalyValue::OtherCheck(target),
            ..
        } = c
        {
            let fraction = checks
                .iter()
                .find(|r| &r.name == target)
                .map(|r| (r.status, r.fraction));
            if let Some(result) = checks.get_mut(i) {
                match fraction {
                    Some((CheckStatus::Error, _)) => {
                        result.status = CheckStatus::Error;
                        result.message = Some(format!("`{target}` could not be evaluated"));
                    }
                    Some((_, Some(f))) => result.observed = json_f64(f),
                    _ => result.message = Some("no rows considered".to_string()),
                }
            }
        }
    }
    BatchReport {
        source: source.to_string(),
        dataset: rules.dataset.clone(),
        rules: rules.path.display().to_string(),
        partitions: Default::default(),
        rows,
        passed: true,
        error: None,
        checks,
        drift: None,
        table: None,
        schema_changes: Vec::new(),
        volume_anomaly: None,
        lateness: None,
    }
    .with_passed_from_checks()
}

fn as_u64(value: &ScalarValue) -> Option<u64> {
    match value {
        ScalarValue::Int64(Some(n)) => u64::try_from(*n).ok(),
        ScalarValue::UInt64(Some(n)) => Some(*n),
        _ => None,
    }
}

fn tolerance_json(t: &Tolerance, into: &mut serde_json::Map<String, Value>) {
    match (t.max_count, t.max_fraction) {
        (None, None) => {
            into.insert("max_count".into(), json!(0));
        }
        (count, fraction) => {
            if let Some(c) = count {
                into.insert("max_count".into(), json!(c));
            }
            if let Some(f) = fraction {
                into.insert("max_fraction".into(), json_f64(f));
            }
        }
    }
}

/// What the check compares against, as JSON.
fn expected(check: &Check, now: DateTime<Utc>) -> Value {
    let mut map = serde_json::Map::new();
    match &check.kind {
        CheckKind::NotNull { .. } | CheckKind::Unique { .. } => {}
        CheckKind::Range { min, max, .. } => {
            map.insert("min".into(), min.as_ref().map_or(Value::Null, literal_json));
            map.insert("max".into(), max.as_ref().map_or(Value::Null, literal_json));
        }
        CheckKind::AcceptedValues { values, .. } => {
            map.insert(
                "values".into(),
                Value::Array(values.iter().map(literal_json).collect()),
            );
        }
        CheckKind::Regex { pattern, .. } => {
            map.insert("pattern".into(), json!(pattern));
        }
        CheckKind::RowCount { min, max } => {
            map.insert("min".into(), json!(min));
            map.insert("max".into(), json!(max));
        }
        CheckKind::Schema {
            columns,
            allow_extra,
        } => {
            let cols: serde_json::Map<String, Value> = columns
                .iter()
                .map(|(c, t)| (c.clone(), json!(t.to_string())))
                .collect();
            map.insert("columns".into(), Value::Object(cols));
            map.insert("allow_extra".into(), json!(allow_extra));
        }
        CheckKind::Freshness { max_age, .. } => {
            map.insert("max_age".into(), json!(format_duration(*max_age)));
            map.insert("now".into(), json!(now.to_rfc3339()));
        }
        CheckKind::Expr { predicate } => {
            map.insert("predicate".into(), json!(predicate.text));
        }
        CheckKind::Anomaly { settings, .. } => {
            map.insert("metric".into(), json!(check.anomaly_definition()));
            map.insert("history".into(), json!(settings.history.text()));
            map.insert("seasonality".into(), json!(settings.seasonality.name()));
            map.insert("sensitivity".into(), json_f64(settings.sensitivity));
            map.insert("direction".into(), json!(settings.direction.name()));
            map.insert("min_history".into(), json!(settings.min_history));
            map.insert("at".into(), json!(now.to_rfc3339()));
            for key in ["low", "high", "center", "batches"] {
                map.insert(key.into(), Value::Null);
            }
        }
        CheckKind::Metric {
            expression,
            min,
            max,
        } => {
            map.insert("expression".into(), json!(expression.text));
            map.insert("min".into(), min.map_or(Value::Null, json_f64));
            map.insert("max".into(), max.map_or(Value::Null, json_f64));
        }
    }
    if check.kind.is_row_level() {
        tolerance_json(&check.tolerance, &mut map);
    }
    Value::Object(map)
}

fn verdict(
    check: &Check,
    compiled: &Compiled,
    values: &[ScalarValue],
    now: DateTime<Utc>,
) -> CheckResult {
    let mut result = CheckResult {
        name: check.name.clone(),
        kind: check.kind.name().to_string(),
        column: check.kind.column().map(str::to_string),
        severity: check.severity,
        status: CheckStatus::Pass,
        failing_rows: None,
        rows_considered: None,
        fraction: None,
        observed: Value::Null,
        expected: expected(check, now),
        message: None,
    };
    let get = |i: usize| values.get(i).cloned().unwrap_or(ScalarValue::Null);
    match compiled {
        Compiled::Invalid(message) => {
            result.status = CheckStatus::Error;
            result.message = Some(message.clone());
        }
        Compiled::Schema(v) => {
            result.observed = Value::Object(v.observed.clone());
            if !v.problems.is_empty() {
                result.status = CheckStatus::Fail;
                result.message = Some(v.problems.join("; "));
            }
        }
        Compiled::RowLevel {
            failing,
            considered,
        } => {
            let considered = as_u64(&get(*considered)).unwrap_or(0);
            // count(col) - count(DISTINCT col) and filtered counts are never
            // negative or null; treat anything else as zero failing rows.
            let failing = as_u64(&get(*failing)).unwrap_or(0);
            result.rows_considered = Some(considered);
            result.failing_rows = Some(failing);
            result.fraction = (considered > 0).then(|| failing as f64 / considered as f64);
            if !check.tolerance.allows(failing, considered) {
                result.status = CheckStatus::Fail;
                result.message = Some(match result.fraction {
                    Some(f) => format!(
                        "{failing} of {considered} rows ({:.4}%) violate the check",
                        f * 100.0
                    ),
                    None => format!("{failing} rows violate the check"),
                });
            } else if considered == 0 {
                result.message = Some("no rows considered".to_string());
            }
        }
        Compiled::RowCount { considered } => {
            let n = as_u64(&get(*considered)).unwrap_or(0);
            result.rows_considered = Some(n);
            result.observed = json!(n);
            if let CheckKind::RowCount { min, max } = &check.kind {
                let low = min.is_some_and(|m| n < m);
                let high = max.is_some_and(|m| n > m);
                if low || high {
                    result.status = CheckStatus::Fail;
                    result.message = Some(format!(
                        "{n} rows, expected {}",
                        bounds_text(min.map(|v| v as f64), max.map(|v| v as f64))
                    ));
                }
            }
        }
        Compiled::Freshness { newest, considered } => {
            let n = as_u64(&get(*considered)).unwrap_or(0);
            result.rows_considered = Some(n);
            let max_age = match &check.kind {
                CheckKind::Freshness { max_age, .. } => *max_age,
                _ => std::time::Duration::ZERO,
            };
            match to_utc(&get(*newest)) {
                Some(ts) => {
                    result.observed = json!(ts.to_rfc3339());
                    let age = now.signed_duration_since(ts);
                    let limit =
                        chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX);
                    if age > limit {
                        result.status = CheckStatus::Fail;
                        result.message = Some(format!(
                            "newest value {} is {} old, more than {}",
                            ts.to_rfc3339(),
                            format_duration(age.to_std().unwrap_or_default()),
                            format_duration(max_age)
                        ));
                    }
                }
                None if n == 0 => result.message = Some("no rows considered".to_string()),
                None => {
                    result.status = CheckStatus::Fail;
                    result.message = Some("the column has no non-null value".to_string());
                }
            }
        }
        Compiled::Anomaly {
            value,
            considered,
            event_time,
        } => {
            let n = as_u64(&get(*considered)).unwrap_or(0);
            result.rows_considered = Some(n);
            // Judged against the history afterwards (crate::anomaly::judge);
            // until then, and without history, the check is skipped.
            result.status = CheckStatus::Skipped;
            result.message = Some("no history to judge against".to_string());
            if let Some(i) = event_time
                && let Some(at) = to_utc(&get(*i))
                && let Value::Object(map) = &mut result.expected
            {
                map.insert("at".into(), json!(at.to_rfc3339()));
            }
            let observed = match value {
                AnomalyValue::Considered => Some(n as f64),
                AnomalyValue::PerRow(i) => {
                    (n > 0).then(|| as_u64(&get(*i)).unwrap_or(0) as f64 / n as f64)
                }
                AnomalyValue::Output(i) => scalar_f64(&get(*i)),
                AnomalyValue::OtherCheck(_) => None,
            };
            match observed {
                Some(v) if v.is_nan() => {
                    result.status = CheckStatus::Fail;
                    result.message = Some("the metric is NaN".to_string());
                }
                Some(v) => result.observed = json_f64(v),
                None => result.message = Some("no value: no rows considered".to_string()),
            }
        }
        Compiled::Metric { value, considered } => {
            let n = as_u64(&get(*considered)).unwrap_or(0);
            result.rows_considered = Some(n);
            let (min, max) = match &check.kind {
                CheckKind::Metric { min, max, .. } => (*min, *max),
                _ => (None, None),
            };
            match scalar_f64(&get(*value)) {
                Some(v) => {
                    result.observed = json_f64(v);
                    if v.is_nan() {
                        result.status = CheckStatus::Fail;
                        result.message = Some("the metric is NaN".to_string());
                    } else {
                        let out = min.is_some_and(|m| v < m) || max.is_some_and(|m| v > m);
                        if v.is_infinite() {
                            result.message = Some(format!("the metric is {v}"));
                        }
                        if out {
                            result.status = CheckStatus::Fail;
                            result.message =
                                Some(format!("{v} is outside {}", bounds_text(min, max)));
                        }
                    }
                }
                None if n == 0 => result.message = Some("no rows considered".to_string()),
                None => {
                    result.status = CheckStatus::Fail;
                    result.message = Some("the metric is null".to_string());
                }
            }
        }
    }
    result
}

fn bounds_text(min: Option<f64>, max: Option<f64>) -> String {
    match (min, max) {
        (Some(lo), Some(hi)) => format!("[{lo}, {hi}]"),
        (Some(lo), None) => format!(">= {lo}"),
        (None, Some(hi)) => format!("<= {hi}"),
        (None, None) => "any value".to_string(),
    }
}

/// The instant of a timestamp or date scalar. Timestamps without a time zone
/// are taken as UTC (documented in rules/README.md). Each unit converts
/// directly, so second- and millisecond-precision values far from 1970 (beyond
/// the ±292 years nanoseconds can hold) still work.
fn to_utc(value: &ScalarValue) -> Option<DateTime<Utc>> {
    match value {
        ScalarValue::TimestampSecond(Some(v), _) => DateTime::from_timestamp(*v, 0),
        ScalarValue::TimestampMillisecond(Some(v), _) => DateTime::from_timestamp_millis(*v),
        ScalarValue::TimestampMicrosecond(Some(v), _) => DateTime::from_timestamp_micros(*v),
        ScalarValue::TimestampNanosecond(Some(v), _) => Some(Utc.timestamp_nanos(*v)),
        ScalarValue::Date32(Some(days)) => {
            DateTime::from_timestamp(i64::from(*days).checked_mul(86_400)?, 0)
        }
        ScalarValue::Date64(Some(ms)) => DateTime::from_timestamp_millis(*ms),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_timestamp_unit_and_date_converts() {
        let expect = |v: ScalarValue, text: &str| {
            assert_eq!(
                to_utc(&v).map(|t| t.to_rfc3339()),
                Some(text.to_string()),
                "{v:?}"
            );
        };
        expect(
            ScalarValue::Date32(Some(19_844)),
            "2024-05-01T00:00:00+00:00",
        );
        expect(
            ScalarValue::Date64(Some(1_714_521_600_000)),
            "2024-05-01T00:00:00+00:00",
        );
        expect(
            ScalarValue::TimestampSecond(Some(253_402_300_799), None),
            "9999-12-31T23:59:59+00:00",
        );
        expect(
            ScalarValue::TimestampMillisecond(Some(1_714_521_600_123), Some("UTC".into())),
            "2024-05-01T00:00:00.123+00:00",
        );
        expect(
            ScalarValue::TimestampNanosecond(Some(1), None),
            "1970-01-01T00:00:00.000000001+00:00",
        );
        assert_eq!(to_utc(&ScalarValue::TimestampSecond(None, None)), None);
        assert_eq!(to_utc(&ScalarValue::Int64(Some(1))), None);
    }
}
