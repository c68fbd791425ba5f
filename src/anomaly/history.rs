//! Histories of `anomaly` checks: judging a batch report's anomaly checks
//! against them, and the history file `driftwatch check --history FILE`
//! reads and appends (the agent keeps the same series in its state store).
//!
//! A series is keyed by (dataset, check name) and carries its metric's
//! definition: a series whose definition differs from the check's is not
//! its history, and is replaced by a new one (never compare two metrics).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Series, Verdict};
use crate::report::{BatchReport, CheckStatus, json_f64};
use crate::rules::{CheckKind, RuleFile};

/// The `format` of a history file.
pub const HISTORY_FORMAT: &str = "driftwatch-anomaly-history";

/// The history file version this build writes and reads.
pub const HISTORY_VERSION: u32 = 1;

/// Errors of history files: the user's to fix, always naming the file.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The history file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a history file this build can use.
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The history file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// One series in a history file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    dataset: String,
    check: String,
    #[serde(flatten)]
    series: Series,
}

/// A history file as written.
#[derive(Debug, Serialize, Deserialize)]
struct HistoryDocument {
    format: String,
    version: u32,
    series: Vec<Entry>,
}

/// Series by (dataset, check name).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histories {
    series: BTreeMap<(String, String), Series>,
}

/// A series that a judgement changed, to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Updated {
    /// The dataset.
    pub dataset: String,
    /// The check's name.
    pub check: String,
    /// The series after the batch.
    pub series: Series,
}

impl Histories {
    /// Histories holding `series`.
    pub fn from_series(series: impl IntoIterator<Item = (String, String, Series)>) -> Self {
        Histories {
            series: series.into_iter().map(|(d, c, s)| ((d, c), s)).collect(),
        }
    }

    /// The series of a dataset's check.
    pub fn get(&self, dataset: &str, check: &str) -> Option<&Series> {
        self.series.get(&(dataset.to_string(), check.to_string()))
    }

    /// Replaces a series.
    pub fn set(&mut self, dataset: &str, check: &str, series: Series) {
        self.series
            .insert((dataset.to_string(), check.to_string()), series);
    }

    /// Datasets with a series.
    pub fn datasets(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.series.keys().map(|(d, _)| d.as_str()).collect();
        out.dedup();
        out
    }

    /// Reads a history file; a missing file is an empty history (the first
    /// run creates it). `datasets` are the datasets this run checks: a file
    /// holding only other datasets' histories is refused, as it is almost
    /// certainly the wrong file.
    pub fn read(path: &Path, datasets: &[&str]) -> Result<Self, HistoryError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(HistoryError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let invalid = |message: String| HistoryError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let value: Value =
            serde_json::from_str(&text).map_err(|e| invalid(format!("not a history file: {e}")))?;
        if value.get("format").and_then(Value::as_str) != Some(HISTORY_FORMAT) {
            return Err(invalid(format!(
                "not a history file (no `\"format\": \"{HISTORY_FORMAT}\"`)"
            )));
        }
        match value.get("version").and_then(Value::as_u64) {
            Some(v) if v == u64::from(HISTORY_VERSION) => {}
            Some(v) if v > u64::from(HISTORY_VERSION) => {
                return Err(invalid(format!(
                    "history file version {v} was written by a newer driftwatch; this one reads version {HISTORY_VERSION}"
                )));
            }
            other => {
                return Err(invalid(format!(
                    "unsupported history file version {}",
                    other.map_or("(none)".to_string(), |v| v.to_string())
                )));
            }
        }
        let document: HistoryDocument = serde_json::from_value(value)
            .map_err(|e| invalid(format!("damaged history file: {e}")))?;
        let histories = Histories::from_series(
            document
                .series
                .into_iter()
                .map(|e| (e.dataset, e.check, e.series)),
        );
        let held = histories.datasets();
        if !held.is_empty() && !held.iter().any(|d| datasets.contains(d)) {
            return Err(invalid(format!(
                "holds the history of dataset(s) {} but this run checks {}: give each set of rule files its own history file",
                names(&held),
                names(datasets)
            )));
        }
        Ok(histories)
    }

    /// Writes the histories to `path` (a temporary file renamed over it,
    /// so an interrupted run leaves the previous history intact).
    pub fn write(&self, path: &Path) -> Result<(), HistoryError> {
        let document = HistoryDocument {
            format: HISTORY_FORMAT.to_string(),
            version: HISTORY_VERSION,
            series: self
                .series
                .iter()
                .map(|((dataset, check), series)| Entry {
                    dataset: dataset.clone(),
                    check: check.clone(),
                    series: series.clone(),
                })
                .collect(),
        };
        let io = |source| HistoryError::Io {
            path: path.to_path_buf(),
            source,
        };
        let text =
            serde_json::to_string_pretty(&document).map_err(|e| io(std::io::Error::other(e)))?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, text + "\n").map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

fn names(datasets: &[&str]) -> String {
    datasets
        .iter()
        .map(|d| format!("`{d}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first character of the agent's own series names; rule files cannot
/// give a check a name starting with it (a parse error), so a check's
/// history never shares a series with a signal's.
pub const RESERVED_PREFIX: char = '@';

/// The series name of the `[health]` volume signal (see [`RESERVED_PREFIX`]).
pub const VOLUME_SERIES: &str = "@volume";

/// The volume signal's settings: the `anomaly` method on `row_count`, weekly
/// seasonality over 28 days, 20 batches before it judges.
pub fn volume_settings(sensitivity: f64) -> super::Settings {
    super::Settings {
        history: super::HistoryLength::Duration(std::time::Duration::from_secs(28 * 86_400)),
        seasonality: super::Seasonality::Weekly,
        sensitivity,
        direction: super::Direction::Both,
        min_history: 20,
    }
}

/// The `[health]` volume signal: judges the batch's row count (at `at`,
/// Unix seconds: when it is evaluated) against the dataset's volume series
/// and sets `report.volume_anomaly` when it is abnormal. It never fails the
/// batch. Returns the extended series to store.
pub fn judge_volume(
    report: &mut BatchReport,
    histories: &mut Histories,
    sensitivity: f64,
    at: i64,
) -> Option<Updated> {
    let rows = report.rows.filter(|_| report.error.is_none())?;
    let settings = volume_settings(sensitivity);
    let mut series = histories
        .get(&report.dataset, VOLUME_SERIES)
        .filter(|s| s.definition == "row_count")
        .cloned()
        .unwrap_or_else(|| Series::new("row_count"));
    let judgement = series.judge(&settings, "row_count", at, rows as f64);
    if let Verdict::Anomalous(_) = judgement.verdict {
        report.volume_anomaly = Some(judgement.reason.clone());
    }
    series.push(&settings, at, rows as f64, &judgement);
    histories.set(&report.dataset, VOLUME_SERIES, series.clone());
    Some(Updated {
        dataset: report.dataset.clone(),
        check: VOLUME_SERIES.to_string(),
        series,
    })
}

/// Judges the `anomaly` checks of `report` (made from `rules`) against
/// `histories`, filling in each one's status, band and reason, and adds the
/// batch's values to the series. Returns the series that changed. A batch
/// that could not be evaluated adds nothing.
pub fn judge_report(
    report: &mut BatchReport,
    rules: &RuleFile,
    histories: &mut Histories,
) -> Vec<Updated> {
    let mut updated = Vec::new();
    if report.error.is_some() {
        return updated;
    }
    for check in &rules.checks {
        let CheckKind::Anomaly {
            metric, settings, ..
        } = &check.kind
        else {
            continue;
        };
        let Some(result) = report.checks.iter_mut().find(|c| c.name == check.name) else {
            continue;
        };
        let definition = check.anomaly_definition().unwrap_or_default();
        let at = result
            .expected
            .get("at")
            .and_then(Value::as_str)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp());
        let (Some(v), Some(t), CheckStatus::Skipped) =
            (result.observed.as_f64(), at, result.status)
        else {
            continue; // no value (no rows), NaN, or the check errored
        };
        let existing = histories.get(&rules.dataset, &check.name);
        let restarted = existing.is_some_and(|s| s.definition != definition);
        let mut series = match existing {
            Some(s) if !restarted => s.clone(),
            _ => Series::new(definition.clone()),
        };
        let judgement = series.judge(settings, &metric.text(), t, v);
        result.status = match judgement.verdict {
            Verdict::Skipped => CheckStatus::Skipped,
            Verdict::Normal => CheckStatus::Pass,
            Verdict::Anomalous(_) => CheckStatus::Fail,
        };
        let mut reason = judgement.reason.clone();
        if restarted {
            reason.push_str(" (the metric's definition changed: its history started again)");
        }
        result.message = Some(reason);
        if let Value::Object(map) = &mut result.expected {
            let edge = |x: f64| {
                if x.is_finite() {
                    json_f64(x)
                } else {
                    Value::Null
                }
            };
            if let Some(band) = judgement.band {
                map.insert("low".into(), edge(band.low));
                map.insert("high".into(), edge(band.high));
                map.insert("center".into(), json_f64(band.center));
            }
            map.insert("batches".into(), json!(judgement.history));
        }
        series.push(settings, t, v, &judgement);
        histories.set(&rules.dataset, &check.name, series.clone());
        updated.push(Updated {
            dataset: rules.dataset.clone(),
            check: check.name.clone(),
            series,
        });
    }
    *report = std::mem::replace(
        report,
        BatchReport::failed(String::new(), String::new(), String::new(), String::new()),
    )
    .with_passed_from_checks();
    updated
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::CheckResult;
    use crate::rules::{Severity, parse_rule_file};

    fn rules(metric: &str) -> RuleFile {
        let text = format!(
            "dataset: d\nchecks:\n  - not_null: x\n  - anomaly: {{ metric: \"{metric}\", min_history: 2 }}\n    where: \"x > 0\"\n"
        );
        parse_rule_file(Path::new("r.yaml"), &text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn report(name: &str, value: f64, at: &str) -> BatchReport {
        let mut r = BatchReport::failed("s".into(), "d".into(), "r.yaml".into(), String::new());
        r.error = None;
        r.checks.push(CheckResult {
            name: name.into(),
            kind: "anomaly".into(),
            column: None,
            severity: Severity::Error,
            status: CheckStatus::Skipped,
            failing_rows: None,
            rows_considered: Some(10),
            fraction: None,
            observed: json_f64(value),
            expected: json!({ "at": at }),
            message: None,
        });
        r
    }

    #[test]
    fn issue_18_default_names_and_definitions_name_the_metric_and_its_filter() {
        let r = rules("null_fraction(x)");
        assert_eq!(r.checks[1].name, "anomaly_null_fraction_x");
        assert_eq!(
            r.checks[1].anomaly_definition().as_deref(),
            Some("null_fraction(x) where x > 0")
        );
        assert_eq!(
            rules("quantile(x, 0.95)").checks[1].name,
            "anomaly_quantile_x_0.95"
        );
        assert_eq!(rules("avg(x) * 2").checks[1].name, "anomaly_2");
        assert_eq!(
            rules("failing_fraction(not_null_x)").checks[1].name,
            "anomaly_failing_fraction_not_null_x"
        );
    }

    #[test]
    fn issue_18_a_changed_metric_definition_starts_a_new_history() {
        let mean = rules("mean(x)");
        let mut histories = Histories::default();
        for (i, v) in [10.0, 10.0, 10.0].into_iter().enumerate() {
            let mut r = report(
                "anomaly_mean_x",
                v,
                &format!("2024-01-0{}T00:00:00Z", i + 1),
            );
            judge_report(&mut r, &mean, &mut histories);
        }
        let series = histories.get("d", "anomaly_mean_x").expect("series");
        assert_eq!(series.points.len(), 3);
        assert_eq!(series.definition, "mean(x) where x > 0");
        // Same check name, another metric: the old points are not its history.
        let changed = parse_rule_file(
            Path::new("r.yaml"),
            "dataset: d\nchecks:\n  - anomaly: { metric: \"mean(x)\", min_history: 2 }\n    name: anomaly_mean_x\n",
        )
        .unwrap();
        let mut r = report("anomaly_mean_x", 500.0, "2024-01-05T00:00:00Z");
        let updated = judge_report(&mut r, &changed, &mut histories);
        assert_eq!(r.checks[0].status, CheckStatus::Skipped);
        assert_eq!(
            r.checks[0].message.as_deref(),
            Some(
                "learning: 0 of 2 batches of history needed (the metric's definition changed: its history started again)"
            )
        );
        assert_eq!(updated[0].series.definition, "mean(x)");
        assert_eq!(updated[0].series.points.len(), 1);
        assert!(r.passed);
    }

    #[test]
    fn issue_18_history_files_round_trip_and_a_missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.json");
        assert_eq!(
            Histories::read(&path, &["d"]).unwrap(),
            Histories::default()
        );
        let mut series = Series::new("row_count");
        series.points.push(super::super::Point {
            t: 1,
            v: 2.0,
            center: None,
            anomalous: None,
        });
        let histories = Histories::from_series([("d".to_string(), "c".to_string(), series)]);
        histories.write(&path).unwrap();
        assert_eq!(Histories::read(&path, &["d", "e"]).unwrap(), histories);
    }
}
