//! Rule files: the declarative checks a user writes, validated into a model
//! the engine can compile.
//!
//! The flow is `YAML text → spec (serde, with spans) → RuleFile (validated)`.
//! Everything that can be known without data is checked here, with the file,
//! line and column of the offending rule: YAML syntax, unknown keys, a check
//! with zero or two kinds, SQL that does not parse, a bad regex, a bad
//! duration, an unknown type name, duplicate check names. Errors that need the
//! data's schema (an unknown column, a regex on an integer) are found by the
//! engine, which still names the rule's location because every [`Check`]
//! carries its [`SourceLocation`].
//!
//! This module does no I/O beyond reading the rule files and knows nothing of
//! DataFusion plans.

mod duration;
mod parse;
pub mod spec;
mod types;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::GlobMatcher;
use serde::Serialize;

pub use duration::{format_duration, parse_duration};
pub use parse::{load_rules, parse_rule_file};
pub use spec::LiteralSpec as Literal;
pub use spec::TableSpec;
pub use types::{LogicalType, TimeZoneSpec, describe_arrow_type, time_unit_name};

/// Errors in rule files: always the user's to fix, always with a location.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// The rule file or folder could not be read.
    #[error("{}: cannot read rules: {source}", path.display())]
    Read {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The folder holds no rule files.
    #[error("{}: no rule files (*.yaml, *.yml) found", path.display())]
    NoRuleFiles {
        /// The folder.
        path: PathBuf,
    },
    /// A rule is invalid; `location` says where.
    #[error("{location}: {message}")]
    Invalid {
        /// Where the offending rule is.
        location: SourceLocation,
        /// A one-line reason.
        message: String,
    },
}

/// A `Result` whose error is a [`RuleError`].
pub type Result<T, E = RuleError> = std::result::Result<T, E>;

/// A place in a rule file: `file:line:col`, 1-based.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceLocation {
    /// The rule file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: u64,
    /// 1-based column.
    pub column: u64,
}

impl fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// A validated rule file.
#[derive(Debug, Clone)]
pub struct RuleFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// The dataset name.
    pub dataset: String,
    /// The `match` glob as written (or the default).
    pub match_glob: String,
    /// The compiled `match` glob.
    pub matcher: GlobMatcher,
    /// The checks, in file order.
    pub checks: Vec<Check>,
    /// The `drift:` section, if any.
    pub drift: Option<DriftConfig>,
    /// Whether a batch is a file or a folder of part files.
    pub batch: BatchUnit,
    /// Webhooks named in `webhooks:` (checked against the agent's config when it loads).
    pub webhooks: Vec<WebhookRef>,
    /// The `table:` section: the dataset is a table, not files.
    pub table: Option<TableConfig>,
}

/// A table format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TableFormat {
    /// Delta Lake: a batch per table version (commit).
    Delta,
    /// Apache Iceberg: a batch per snapshot (its sequence number is the version).
    Iceberg,
}

impl TableFormat {
    /// The name as written in rule files and reports.
    pub fn name(&self) -> &'static str {
        match self {
            TableFormat::Delta => "delta",
            TableFormat::Iceberg => "iceberg",
        }
    }

    /// "a Delta table", "an Iceberg table": as messages say it.
    pub fn a_table(&self) -> &'static str {
        match self {
            TableFormat::Delta => "a Delta table",
            TableFormat::Iceberg => "an Iceberg table",
        }
    }

    /// What holds the table's versions, as messages name it.
    pub fn log_name(&self) -> &'static str {
        match self {
            TableFormat::Delta => "Delta log",
            TableFormat::Iceberg => "Iceberg metadata",
        }
    }

    /// The format's name in messages (`Delta`, `Iceberg`).
    pub fn title(&self) -> &'static str {
        match self {
            TableFormat::Delta => "Delta",
            TableFormat::Iceberg => "Iceberg",
        }
    }
}

/// The validated `table:` section.
#[derive(Debug, Clone, PartialEq)]
pub struct TableConfig {
    /// The format.
    pub format: TableFormat,
    /// The table's folder, resolved against the rule file's folder, or its
    /// object-store URL carried as a path (`s3://bucket/tables/events`,
    /// see [`crate::location`]).
    pub location: PathBuf,
    /// The agent's poll interval for this table (None: `lake.poll_interval`).
    pub poll_interval: Option<Duration>,
    /// Where `location` (or `catalog`) is written.
    pub at: SourceLocation,
    /// Set for an Iceberg table a REST catalog keeps; `location` is then
    /// [`CatalogConfig::key`], the table's REST resource URL.
    pub catalog: Option<CatalogConfig>,
}

/// A table in an Iceberg REST catalog (`table.catalog`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogConfig {
    /// The catalog's base URL, without a trailing `/`.
    pub uri: String,
    /// The path prefix after `/v1/`, when the rule file gives one.
    pub prefix: Option<String>,
    /// The warehouse asked of `/v1/config`.
    pub warehouse: Option<String>,
    /// The namespace's levels (at least one).
    pub namespace: Vec<String>,
    /// The table's name.
    pub table: String,
    /// Where the bearer token comes from (None: no `Authorization`).
    pub token: Option<CatalogToken>,
}

/// Where a catalog's bearer token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogToken {
    /// An environment variable's value.
    Env(String),
    /// A file's content (trimmed), read at every request.
    File(PathBuf),
}

impl CatalogConfig {
    /// The table's REST resource URL as the rule file configures it
    /// (`{uri}/v1/{prefix}/namespaces/{ns}/tables/{table}`, levels joined
    /// by `%1F` as the REST spec says, `?warehouse=` when one is given):
    /// how reports, `/status` and the state store name the table. A prefix
    /// only the catalog's `/v1/config` gives is left out, so the name does
    /// not change with the catalog's answer.
    pub fn key(&self) -> String {
        self.table_url(self.prefix.as_deref(), "%1F", true)
    }

    /// The table's REST resource URL under `prefix`, namespace levels
    /// joined by `separator` (already percent-encoded, as a catalog's
    /// `namespace-separator` is given), with `?warehouse=` when
    /// `with_warehouse`.
    pub fn table_url(&self, prefix: Option<&str>, separator: &str, with_warehouse: bool) -> String {
        use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
        // A path segment: everything but unreserved characters encoded.
        const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'.')
            .remove(b'_')
            .remove(b'~');
        let segment = |s: &str| utf8_percent_encode(s, SEGMENT).to_string();
        let namespace: Vec<String> = self.namespace.iter().map(|l| segment(l)).collect();
        let mut url = format!("{}/v1/", self.uri);
        if let Some(prefix) = prefix.filter(|p| !p.is_empty()) {
            // A prefix may hold several segments (`catalogs/main`).
            let parts: Vec<String> = prefix.split('/').map(segment).collect();
            url.push_str(&parts.join("/"));
            url.push('/');
        }
        url.push_str(&format!(
            "namespaces/{}/tables/{}",
            namespace.join(separator),
            segment(&self.table)
        ));
        if with_warehouse && let Some(warehouse) = &self.warehouse {
            url.push_str(&format!("?warehouse={}", segment(warehouse)));
        }
        url
    }
}

/// A webhook named by a rule file.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookRef {
    /// The webhook's name.
    pub name: String,
    /// Where the rule file names it.
    pub location: SourceLocation,
}

pub use spec::CorrectionSpec as Correction;

/// Most previous batches a rolling reference may merge (profiles are kept in
/// the agent's store, one per batch).
pub const MAX_ROLLING_BATCHES: u32 = 1000;

/// Where a drift reference comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// A profile file (from `driftwatch baseline`), resolved against the rule file's folder.
    File(PathBuf),
    /// The merged profiles of the previous `batches` batches of the dataset
    /// (kept in the agent's store; within one `check` run, the previous inputs).
    Rolling {
        /// How many previous batches.
        batches: usize,
    },
}

/// How batches of a dataset are formed from files.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum BatchUnit {
    /// Each file is a batch (default).
    #[default]
    File,
    /// Each folder of part files is one batch, taken when its `_SUCCESS`
    /// marker appears (or once it has been quiet for the settle time).
    Directory,
}

/// The validated `drift:` section.
#[derive(Debug, Clone)]
pub struct DriftConfig {
    /// Where the reference profile comes from.
    pub reference: Option<Reference>,
    /// Columns to test (None: every supported column of the reference).
    pub columns: Option<Vec<String>>,
    /// Per-column test and threshold overrides.
    pub overrides:
        std::collections::BTreeMap<String, (Option<crate::drift::TestKind>, Option<f64>)>,
    /// Share of drifted columns that makes the dataset drifted.
    pub drift_share: f64,
    /// Multiple-testing correction.
    pub correction: Correction,
    /// Whether dataset drift fails the batch.
    pub severity: Severity,
    /// Distinct categories counted exactly per column (`max_categories`).
    pub max_categories: usize,
    /// Per-column `max_categories` overrides.
    pub category_limits: std::collections::BTreeMap<String, usize>,
    /// The default-test policy (`defaults`).
    pub defaults: DriftDefaults,
    /// Columns tested even when ID-like or constant (`overrides.X.force`).
    pub forced: std::collections::BTreeSet<String>,
    /// The sequential detector over windows (`sequential`), if asked for.
    pub sequential: Option<crate::drift::sequential::SequentialConfig>,
    /// Where the section starts.
    pub location: SourceLocation,
}

pub use spec::DriftDefaults;

impl DriftConfig {
    /// Distinct categories of `column` counted exactly.
    pub fn category_limit(&self, column: &str) -> usize {
        self.category_limits
            .get(column)
            .copied()
            .unwrap_or(self.max_categories)
    }

    /// The settings used when only `check --reference` asks for drift.
    pub fn defaults(rule_file: &Path) -> Self {
        Self {
            reference: None,
            columns: None,
            overrides: Default::default(),
            drift_share: 0.5,
            correction: Correction::None,
            severity: Severity::Error,
            max_categories: crate::profile::DEFAULT_CATEGORY_LIMIT,
            category_limits: Default::default(),
            defaults: DriftDefaults::Evidently,
            sequential: None,
            forced: Default::default(),
            location: SourceLocation {
                file: rule_file.to_path_buf(),
                line: 1,
                column: 1,
            },
        }
    }
}

impl RuleFile {
    /// Whether a path relative to the watched root (or `check` PATH) matches
    /// this file's glob. A table's rule file matches no file: its batches
    /// are the table's versions.
    pub fn matches(&self, relative: &Path) -> bool {
        self.table.is_none() && self.matcher.is_match(relative)
    }
}

/// Whether a failure fails the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Fails the batch.
    Error,
    /// Reported only.
    Warn,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warn => "warn",
        })
    }
}

/// How many failing rows a row-level check tolerates. Both limits apply when
/// both are given; with neither, no failing row is tolerated.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Tolerance {
    /// Largest tolerated number of failing rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_count: Option<u64>,
    /// Largest tolerated fraction of failing rows among the rows considered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_fraction: Option<f64>,
}

impl Tolerance {
    /// Whether `failing` out of `considered` rows is within tolerance.
    /// Exactly at a limit passes. Zero rows considered always passes.
    pub fn allows(&self, failing: u64, considered: u64) -> bool {
        if considered == 0 {
            return true;
        }
        let count_ok = match (self.max_count, self.max_fraction) {
            (None, None) => failing == 0,
            (Some(max), _) => failing <= max,
            (None, Some(_)) => true,
        };
        let fraction_ok = match self.max_fraction {
            // Compare as integers where possible so that "exactly at the limit"
            // is not at the mercy of float rounding: failing <= f * considered.
            Some(f) => (failing as f64) <= f * (considered as f64) * (1.0 + 4.0 * f64::EPSILON),
            None => true,
        };
        count_ok && fraction_ok
    }
}

/// What an `anomaly` check measures.
#[derive(Debug, Clone)]
pub enum AnomalyMetric {
    /// Rows considered.
    RowCount,
    /// Null rows / rows considered.
    NullFraction(String),
    /// The column's mean.
    Mean(String),
    /// Distinct non-null values (HyperLogLog estimate).
    DistinctCount(String),
    /// The column's quantile (t-digest estimate).
    Quantile(String, f64),
    /// Another (row-level) check's failing fraction, by its name.
    FailingFraction(String),
    /// A numeric SQL aggregate (`min(x)`, `avg(arr_delay)`).
    Aggregate(SqlText),
}

impl AnomalyMetric {
    /// The metric as written canonically: what a history is of.
    pub fn text(&self) -> String {
        match self {
            AnomalyMetric::RowCount => "row_count".to_string(),
            AnomalyMetric::NullFraction(c) => format!("null_fraction({c})"),
            AnomalyMetric::Mean(c) => format!("mean({c})"),
            AnomalyMetric::DistinctCount(c) => format!("distinct_count({c})"),
            AnomalyMetric::Quantile(c, q) => format!("quantile({c}, {q})"),
            AnomalyMetric::FailingFraction(c) => format!("failing_fraction({c})"),
            AnomalyMetric::Aggregate(sql) => sql.text.trim().to_string(),
        }
    }

    /// The column of a single-column metric.
    pub fn column(&self) -> Option<&str> {
        match self {
            AnomalyMetric::NullFraction(c)
            | AnomalyMetric::Mean(c)
            | AnomalyMetric::DistinctCount(c)
            | AnomalyMetric::Quantile(c, _) => Some(c),
            AnomalyMetric::RowCount
            | AnomalyMetric::FailingFraction(_)
            | AnomalyMetric::Aggregate(_) => None,
        }
    }
}

impl Check {
    /// For an `anomaly` check: the definition its history belongs to — the
    /// metric, its `where` and its event time. A history of another
    /// definition is not this check's history.
    pub fn anomaly_definition(&self) -> Option<String> {
        let CheckKind::Anomaly {
            metric, event_time, ..
        } = &self.kind
        else {
            return None;
        };
        let mut text = metric.text();
        if let Some(filter) = &self.filter {
            text.push_str(&format!(" where {}", filter.text.trim()));
        }
        if let Some(column) = event_time {
            text.push_str(&format!(" event_time {column}"));
        }
        Some(text)
    }
}

/// A piece of user SQL and where it was written.
#[derive(Debug, Clone)]
pub struct SqlText {
    /// The SQL as written.
    pub text: String,
    /// Where it was written.
    pub location: SourceLocation,
}

/// One validated check.
#[derive(Debug, Clone)]
pub struct Check {
    /// Stable, unique within its file.
    pub name: String,
    /// What it checks.
    pub kind: CheckKind,
    /// Whether a failure fails the batch.
    pub severity: Severity,
    /// Tolerance for row-level checks.
    pub tolerance: Tolerance,
    /// Optional `where` filter.
    pub filter: Option<SqlText>,
    /// Optional description.
    pub description: Option<String>,
    /// Where the check starts in its rule file.
    pub location: SourceLocation,
}

/// The kinds of check and their arguments.
#[derive(Debug, Clone)]
pub enum CheckKind {
    /// Rows where `column` is null fail.
    NotNull {
        /// The column.
        column: String,
    },
    /// Non-null rows outside `[min, max]` fail; NaN always fails.
    Range {
        /// The column.
        column: String,
        /// Inclusive lower bound.
        min: Option<Literal>,
        /// Inclusive upper bound.
        max: Option<Literal>,
    },
    /// Non-null rows not in `values` fail.
    AcceptedValues {
        /// The column.
        column: String,
        /// The accepted values.
        values: Vec<Literal>,
    },
    /// Non-null rows not matching `pattern` fail.
    Regex {
        /// The column.
        column: String,
        /// The pattern, known to compile.
        pattern: String,
    },
    /// Non-null rows beyond the first occurrence of their value fail.
    Unique {
        /// The column.
        column: String,
    },
    /// The number of rows considered must be within bounds.
    RowCount {
        /// Inclusive lower bound.
        min: Option<u64>,
        /// Inclusive upper bound.
        max: Option<u64>,
    },
    /// The batch's columns and types.
    Schema {
        /// Expected columns, in name order.
        columns: Vec<(String, LogicalType)>,
        /// Whether unlisted columns are allowed.
        allow_extra: bool,
    },
    /// The newest value of `column` must be at most `max_age` old.
    Freshness {
        /// A timestamp or date column.
        column: String,
        /// The largest allowed age.
        max_age: Duration,
    },
    /// A row fails when the predicate is false (null passes).
    Expr {
        /// The predicate.
        predicate: SqlText,
    },
    /// A metric judged against its own history.
    Anomaly {
        /// What is measured.
        metric: AnomalyMetric,
        /// How it is judged.
        settings: crate::anomaly::Settings,
        /// The column whose newest value is the batch's event time.
        event_time: Option<String>,
    },
    /// An aggregate expression compared with bounds.
    Metric {
        /// The aggregate expression.
        expression: SqlText,
        /// Inclusive lower bound.
        min: Option<f64>,
        /// Inclusive upper bound.
        max: Option<f64>,
    },
}

impl CheckKind {
    /// The kind's name as written in rule files and reports.
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::NotNull { .. } => "not_null",
            CheckKind::Range { .. } => "range",
            CheckKind::AcceptedValues { .. } => "accepted_values",
            CheckKind::Regex { .. } => "regex",
            CheckKind::Unique { .. } => "unique",
            CheckKind::RowCount { .. } => "row_count",
            CheckKind::Schema { .. } => "schema",
            CheckKind::Freshness { .. } => "freshness",
            CheckKind::Expr { .. } => "expr",
            CheckKind::Metric { .. } => "metric",
            CheckKind::Anomaly { .. } => "anomaly",
        }
    }

    /// The single column the check is about, if there is one.
    pub fn column(&self) -> Option<&str> {
        match self {
            CheckKind::NotNull { column }
            | CheckKind::Range { column, .. }
            | CheckKind::AcceptedValues { column, .. }
            | CheckKind::Regex { column, .. }
            | CheckKind::Unique { column }
            | CheckKind::Freshness { column, .. } => Some(column),
            CheckKind::Anomaly { metric, .. } => metric.column(),
            CheckKind::RowCount { .. }
            | CheckKind::Schema { .. }
            | CheckKind::Expr { .. }
            | CheckKind::Metric { .. } => None,
        }
    }

    /// Whether the check counts failing rows (and so has a tolerance).
    pub fn is_row_level(&self) -> bool {
        matches!(
            self,
            CheckKind::NotNull { .. }
                | CheckKind::Range { .. }
                | CheckKind::AcceptedValues { .. }
                | CheckKind::Regex { .. }
                | CheckKind::Unique { .. }
                | CheckKind::Expr { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerance_exactly_at_the_limit_passes() {
        let t = Tolerance {
            max_count: None,
            max_fraction: Some(0.05),
        };
        assert!(t.allows(5, 100));
        assert!(!t.allows(6, 100));
        // 0.1 * 30 is 3.0000000000000004 in binary; 3 of 30 must still pass.
        let t = Tolerance {
            max_count: None,
            max_fraction: Some(0.1),
        };
        assert!(t.allows(3, 30));
        assert!(!t.allows(4, 30));
    }

    #[test]
    fn tolerance_defaults_to_zero_failing_rows() {
        let t = Tolerance::default();
        assert!(t.allows(0, 10));
        assert!(!t.allows(1, 10));
        assert!(t.allows(0, 0));
    }

    #[test]
    fn both_limits_must_hold() {
        let t = Tolerance {
            max_count: Some(2),
            max_fraction: Some(0.5),
        };
        assert!(t.allows(2, 4));
        assert!(!t.allows(3, 100));
        assert!(!t.allows(2, 3));
    }
}
