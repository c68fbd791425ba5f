//! The result of evaluating batches: the [`Report`] types, their versioned JSON
//! form, the terminal table, and the self-contained HTML report ([`html`]).
//!
//! A report is a plain value: the engine produces it, sinks and renderers only
//! read it. The JSON shape is documented in `docs/report.md`; bump
//! [`REPORT_VERSION`] on any incompatible change. Fields that do not apply are
//! written as `null`, never omitted, so consumers can rely on every key.

pub mod ci;
pub mod html;
mod table;

use serde::Serialize;

pub use table::render_table;

pub use crate::drift::compare::{ColumnDrift, DriftReport};
use crate::rules::Severity;

/// Version of the JSON report schema (`docs/report.md`).
pub const REPORT_VERSION: u32 = 1;

/// The output of one `driftwatch check` run: a report per (input, dataset).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Report {
    /// Schema version of this document.
    pub version: u32,
    /// One entry per input and matching rule file.
    pub reports: Vec<BatchReport>,
    /// Inputs no rule file matched.
    pub unmatched: Vec<String>,
    /// The agent's record of this evaluation (`driftwatch run`'s results
    /// log); null from `driftwatch check`.
    pub agent: Option<AgentRecord>,
}

/// What the agent adds to each report it writes to its results log.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct AgentRecord {
    /// Position in the results log: 1, 2, 3… with no gaps and no repeats
    /// across restarts.
    pub seq: u64,
    /// When the evaluation finished (RFC 3339, UTC).
    pub evaluated_at: String,
    /// The batch version evaluated.
    pub batch: BatchVersion,
}

/// One version of a batch: a file (or folder of part files) at a given size
/// and modification time, or an object (or prefix of part objects) with its
/// ETag. A rewritten file or object is a new version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub struct BatchVersion {
    /// `file` or `directory`; `object` or `prefix` on an object store.
    pub kind: String,
    /// The path under the watched folder, as found (an object's URL).
    pub path: String,
    /// Bytes (for a folder: of all its part files).
    pub size: u64,
    /// Last modification, nanoseconds since the Unix epoch (for a folder: the latest part's).
    pub modified_ns: i64,
    /// Part files in the batch (1 for a file).
    pub parts: u64,
    /// For a table version (`kind: delta`): which table, version and
    /// operation; null for files and folders. `path` is then the table's
    /// location, `size` and `parts` the bytes and number of the data files
    /// the version added, `modified_ns` its commit time.
    pub table: Option<TableRef>,
    /// An object's ETag or version id (for a prefix batch: a digest of its
    /// parts' ETags); absent for local files. A rewritten object is a new
    /// version even at the same size and modification second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

/// One version of a table (a Delta Lake commit, an Apache Iceberg
/// snapshot): what a batch made of the data files that version added is
/// named by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub struct TableRef {
    /// The table format: `delta` or `iceberg`.
    pub format: String,
    /// The table's location as configured (a local path).
    pub location: String,
    /// The table version (Delta: the commit number; Iceberg: the
    /// snapshot's sequence number).
    pub version: u64,
    /// The Iceberg snapshot id (absent for Delta).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<i64>,
    /// The commit's operation as its writer named it (`WRITE`, `MERGE`,
    /// `OPTIMIZE`, `VACUUM END`, …; `UNKNOWN` when the commit does not say).
    pub operation: String,
    /// Why the version is not a batch (it added no data: `OPTIMIZE`,
    /// `VACUUM`, a delete); null for a version that was evaluated.
    pub skipped: Option<String>,
}

impl Report {
    /// A report with the current schema version.
    pub fn new(reports: Vec<BatchReport>, unmatched: Vec<String>) -> Self {
        Self {
            version: REPORT_VERSION,
            reports,
            unmatched,
            agent: None,
        }
    }

    /// The process exit code for CI: 2 when an input or a rule could not be
    /// evaluated (or nothing was checked), 1 when an error-severity check
    /// failed, 0 otherwise.
    pub fn exit_code(&self) -> i32 {
        let broken = self.reports.iter().any(|r| {
            r.error.is_some()
                || r.checks.iter().any(|c| c.status == CheckStatus::Error)
                || r.drift.as_ref().is_some_and(|d| d.error.is_some())
        });
        if broken || self.reports.is_empty() {
            2
        } else if self.reports.iter().any(|r| !r.passed) {
            1
        } else {
            0
        }
    }
}

/// The verdicts for one batch (a file) against one rule file.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct BatchReport {
    /// The input path, as given or found under a given folder.
    pub source: String,
    /// The dataset of the rule file.
    pub dataset: String,
    /// The rule file.
    pub rules: String,
    /// Hive partition values parsed from the batch's path (`key=value`
    /// folders); empty when there are none.
    pub partitions: std::collections::BTreeMap<String, String>,
    /// Rows in the batch; null when it could not be read.
    pub rows: Option<u64>,
    /// False only when an error-severity check fails or errors, or the batch could not be read.
    pub passed: bool,
    /// Why the batch could not be evaluated at all (unreadable or corrupt input).
    pub error: Option<String>,
    /// One verdict per check, in rule-file order.
    pub checks: Vec<CheckResult>,
    /// Drift against the reference profile; null when no reference applies.
    pub drift: Option<DriftReport>,
    /// The table version the batch is (its format, location, version and
    /// operation, and why it was skipped when it added no data); null for
    /// files and folders.
    pub table: Option<TableRef>,
    /// The agent only: how the batch's columns differ from the dataset's
    /// previous batch (`column `x` was added (int64)`, `… was removed`,
    /// `… changed type from int64 to utf8`). Absent when nothing changed
    /// (and from `driftwatch check`), so older consumers see no new key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schema_changes: Vec<String>,
    /// The agent only: why the batch's row count is abnormal for the
    /// dataset (the `[health]` volume signal; it does not fail the batch).
    /// Absent when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_anomaly: Option<String>,
    /// The agent only: the batch landed late for its dataset (the gap since
    /// the previous batch's landing exceeds the learned interval by more than
    /// [`crate::anomaly::arrivals::LATE_MARGIN`] of it). Absent when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lateness: Option<Lateness>,
}

/// How late a batch landed for its dataset (the agent's lateness signal).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Lateness {
    /// Seconds between the dataset's previous landing and this batch's.
    pub gap_seconds: f64,
    /// The learned interval between the dataset's batches (the median gap).
    pub expected_seconds: f64,
    /// Always true: the field is present for late batches only, and says so
    /// for consumers that test a flag.
    pub late: bool,
}

impl BatchReport {
    /// A report for a batch that could not be evaluated.
    pub fn failed(source: String, dataset: String, rules: String, error: String) -> Self {
        Self {
            source,
            dataset,
            rules,
            partitions: Default::default(),
            rows: None,
            passed: false,
            error: Some(error),
            checks: Vec::new(),
            drift: None,
            table: None,
            schema_changes: Vec::new(),
            volume_anomaly: None,
            lateness: None,
        }
    }

    /// The record of a table version that added no data: nothing was
    /// evaluated; `passed`, no rows.
    pub fn skipped(source: String, dataset: String, rules: String, table: TableRef) -> Self {
        Self {
            source,
            dataset,
            rules,
            partitions: Default::default(),
            rows: None,
            passed: true,
            error: None,
            checks: Vec::new(),
            drift: None,
            table: Some(table),
            schema_changes: Vec::new(),
            volume_anomaly: None,
            lateness: None,
        }
    }

    /// Whether this is the record of a table version that added no data.
    pub fn is_skipped(&self) -> bool {
        self.table.as_ref().is_some_and(|t| t.skipped.is_some())
    }

    /// Names the table version the batch is.
    pub fn with_table(mut self, table: Option<&TableRef>) -> Self {
        self.table = table.cloned();
        self
    }

    /// `error` (could not be evaluated), `skipped` (a table version that
    /// added no data), `passed` or `failed`.
    pub fn outcome(&self) -> &'static str {
        if self.is_skipped() {
            "skipped"
        } else if self.error.is_some() {
            "error"
        } else if self.passed {
            "passed"
        } else {
            "failed"
        }
    }

    /// Names of the checks that did not pass, in rule-file order.
    pub fn failing_checks(&self) -> Vec<&str> {
        self.checks
            .iter()
            .filter(|c| c.status.is_problem())
            .map(|c| c.name.as_str())
            .collect()
    }

    /// Columns that drifted, in name order.
    pub fn drifted_columns(&self) -> Vec<&str> {
        self.drift
            .iter()
            .flat_map(|d| d.columns.iter().filter(|c| c.drifted))
            .map(|c| c.column.as_str())
            .collect()
    }

    /// Sets the Hive partition values of the batch.
    pub fn with_partitions(
        mut self,
        partitions: &std::collections::BTreeMap<String, String>,
    ) -> Self {
        self.partitions = partitions.clone();
        self
    }

    /// Computes `passed` from the checks.
    pub fn with_passed_from_checks(mut self) -> Self {
        // Dataset drift (or a drift section that could not be computed) fails
        // the batch unless the rule file gives drift `severity: warn`.
        let drift_failed = self.drift.as_ref().is_some_and(|d| {
            d.severity == Severity::Error && (d.dataset_drift || d.error.is_some())
        });
        self.passed = self.error.is_none()
            && !drift_failed
            && !self
                .checks
                .iter()
                .any(|c| c.severity == Severity::Error && c.status.is_problem());
        self
    }
}

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// Within its bounds and tolerance.
    Pass,
    /// Outside them.
    Fail,
    /// Could not be evaluated (e.g. an unknown column); the message says why and where.
    Error,
    /// Not judged: an `anomaly` check still learning its history (the
    /// message says how much it has). Never fails the batch.
    Skipped,
}

impl CheckStatus {
    /// Whether the check found a problem (failed or errored): what fails a
    /// batch at `error` severity.
    pub fn is_problem(self) -> bool {
        matches!(self, CheckStatus::Fail | CheckStatus::Error)
    }
}

impl std::fmt::Display for CheckStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CheckStatus::Pass => "pass",
            CheckStatus::Fail => "fail",
            CheckStatus::Error => "error",
            CheckStatus::Skipped => "skipped",
        })
    }
}

/// The verdict of one check on one batch.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct CheckResult {
    /// The check's stable name.
    pub name: String,
    /// The check kind (`not_null`, `range`, …).
    pub kind: String,
    /// The column, for single-column checks.
    pub column: Option<String>,
    /// `error` or `warn`.
    pub severity: Severity,
    /// `pass`, `fail` or `error`.
    pub status: CheckStatus,
    /// Row-level checks: rows that violate the check.
    pub failing_rows: Option<u64>,
    /// Rows the check considered (those passing its `where`).
    pub rows_considered: Option<u64>,
    /// Row-level checks: `failing_rows / rows_considered`; null with 0 rows.
    pub fraction: Option<f64>,
    /// Batch-level checks: the observed value (row count, metric value,
    /// newest timestamp, column types). Null for row-level checks.
    pub observed: serde_json::Value,
    /// What the check compares against: bounds, value set, pattern, tolerance.
    pub expected: serde_json::Value,
    /// A one-line explanation when the check fails or errors, or to note NaN/inf.
    pub message: Option<String>,
}

/// How a batch's columns differ from the previous batch's (name, type),
/// in column-name order: added, removed, or of another type.
pub fn schema_changes(previous: &[(String, String)], current: &[(String, String)]) -> Vec<String> {
    let before: std::collections::BTreeMap<&str, &str> = previous
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let after: std::collections::BTreeMap<&str, &str> = current
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let names: std::collections::BTreeSet<&str> =
        before.keys().chain(after.keys()).copied().collect();
    names
        .into_iter()
        .filter_map(|name| match (before.get(name), after.get(name)) {
            (None, Some(t)) => Some(format!("column `{name}` was added ({t})")),
            (Some(_), None) => Some(format!("column `{name}` was removed")),
            (Some(a), Some(b)) if a != b => {
                Some(format!("column `{name}` changed type from {a} to {b}"))
            }
            _ => None,
        })
        .collect()
}

/// A JSON number for a float, or null for NaN and infinities (JSON has none).
pub fn json_f64(value: f64) -> serde_json::Value {
    serde_json::Number::from_f64(value)
        .map(serde_json::Value::Number)
        .unwrap_or(serde_json::Value::Null)
}

/// `text` with control characters (newlines, escape sequences, …) written
/// as `\u{..}` escapes, for logs and terminals: a file name must not be able
/// to forge a log line or drive the terminal.
pub fn escape_control(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}
