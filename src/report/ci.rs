//! The report in the two forms CI systems read: JUnit XML (`check --format
//! junit`) and GitHub Actions workflow commands (`check --format github`).
//!
//! Why here and not in the CLI: both are renderings of a [`Report`], like the
//! table and the HTML page, and their counts are part of the contract a CI
//! test reporter shows (tests, failures, errors), so they are computed once
//! ([`JunitCounts::of`]) and tested against the report itself.
//!
//! Mapping (docs/deploy.md, "CI"): one JUnit test case per check per batch,
//! plus one for the batch's drift section and one for a batch that could not
//! be read. A failing error-severity check is a `<failure>`, a check that
//! could not be evaluated an `<error>`; a failing warn-severity check passes
//! (it does not fail the run either) and carries its warning in
//! `<system-out>`. A table version that added no data is `<skipped>`, and so
//! is an `anomaly` check still learning its history.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::{BatchReport, CheckStatus, Report};
use crate::rules::{RuleError, RuleFile, Severity, SourceLocation};

/// Test, failure, error and skipped counts of a report's JUnit form: what a
/// CI test reporter shows for the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JunitCounts {
    /// Test cases.
    pub tests: usize,
    /// Test cases with a `<failure>`.
    pub failures: usize,
    /// Test cases with an `<error>`.
    pub errors: usize,
    /// Test cases with `<skipped>`.
    pub skipped: usize,
}

impl JunitCounts {
    /// The counts of the whole report.
    pub fn of(report: &Report) -> Self {
        let mut total = Self::default();
        for batch in &report.reports {
            total.add(&Self::of_batch(batch));
        }
        total
    }

    /// The counts of one batch's test suite.
    pub fn of_batch(batch: &BatchReport) -> Self {
        let mut counts = Self::default();
        for case in cases(batch) {
            counts.tests += 1;
            match case.outcome {
                Outcome::Failure { .. } => counts.failures += 1,
                Outcome::Error { .. } => counts.errors += 1,
                Outcome::Skipped { .. } => counts.skipped += 1,
                Outcome::Passed { .. } => {}
            }
        }
        counts
    }

    fn add(&mut self, other: &Self) {
        self.tests += other.tests;
        self.failures += other.failures;
        self.errors += other.errors;
        self.skipped += other.skipped;
    }
}

/// One JUnit test case of a batch.
struct Case<'a> {
    name: &'a str,
    /// The check kind, `drift` or `input`: the `type` of a failure or error.
    kind: &'a str,
    outcome: Outcome,
}

enum Outcome {
    Passed { warning: Option<String> },
    Failure { message: String, detail: String },
    Error { message: String },
    Skipped { message: String },
}

fn cases(batch: &BatchReport) -> Vec<Case<'_>> {
    let mut cases = Vec::new();
    if let Some(reason) = batch.table.as_ref().and_then(|t| t.skipped.as_ref()) {
        cases.push(Case {
            name: "batch",
            kind: "input",
            outcome: Outcome::Skipped {
                message: reason.clone(),
            },
        });
        return cases;
    }
    if let Some(error) = &batch.error {
        cases.push(Case {
            name: "read",
            kind: "input",
            outcome: Outcome::Error {
                message: error.clone(),
            },
        });
    }
    for check in &batch.checks {
        let message = check
            .message
            .clone()
            .unwrap_or_else(|| format!("{} {}", check.kind, check.status));
        let outcome = match (check.status, check.severity) {
            (CheckStatus::Pass, _) => Outcome::Passed { warning: None },
            (CheckStatus::Fail, Severity::Warn) => Outcome::Passed {
                warning: Some(format!("warning: {message}")),
            },
            (CheckStatus::Fail, Severity::Error) => Outcome::Failure {
                detail: check_detail(check),
                message,
            },
            (CheckStatus::Error, _) => Outcome::Error { message },
            // An `anomaly` check still learning its history: no verdict yet.
            (CheckStatus::Skipped, _) => Outcome::Skipped { message },
        };
        cases.push(Case {
            name: &check.name,
            kind: &check.kind,
            outcome,
        });
    }
    if let Some(drift) = &batch.drift {
        let drifted = batch.drifted_columns().join(", ");
        let share = drift
            .drifted_share
            .map(|s| format!("{:.0} %", s * 100.0))
            .unwrap_or_else(|| "n/a".to_string());
        let summary = format!(
            "dataset drift: {share} of tested columns drifted (threshold {:.0} %): {drifted}",
            drift.drift_share_threshold * 100.0
        );
        let outcome = if let Some(error) = &drift.error {
            Outcome::Error {
                message: error.clone(),
            }
        } else if drift.dataset_drift && drift.severity == Severity::Error {
            Outcome::Failure {
                message: summary,
                detail: format!("reference: {}", drift.reference),
            }
        } else if drift.dataset_drift {
            Outcome::Passed {
                warning: Some(format!("warning: {summary}")),
            }
        } else {
            Outcome::Passed { warning: None }
        };
        cases.push(Case {
            name: "drift",
            kind: "drift",
            outcome,
        });
    }
    cases
}

/// The observed and expected values of a failing check, and its rows.
fn check_detail(check: &super::CheckResult) -> String {
    let mut detail = String::new();
    if let Some(column) = &check.column {
        let _ = writeln!(detail, "column: {column}");
    }
    if let (Some(failing), Some(considered)) = (check.failing_rows, check.rows_considered) {
        let _ = writeln!(detail, "failing rows: {failing} of {considered}");
    }
    if !check.observed.is_null() {
        let _ = writeln!(detail, "observed: {}", check.observed);
    }
    if !check.expected.is_null() {
        let _ = writeln!(detail, "expected: {}", check.expected);
    }
    detail
}

/// The report as JUnit XML: a `<testsuites>` named `name` holding one
/// `<testsuite>` per batch and rule file (named by the batch's source, the
/// dataset as each case's `classname`). `timestamp` is the run's start
/// (ISO 8601 without zone, as the JUnit schema wants).
pub fn render_junit(report: &Report, name: &str, timestamp: &str) -> String {
    let total = JunitCounts::of(report);
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\">",
        xml(name),
        total.tests,
        total.failures,
        total.errors,
        total.skipped
    );
    for (id, batch) in report.reports.iter().enumerate() {
        let counts = JunitCounts::of_batch(batch);
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" id=\"{id}\" package=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" timestamp=\"{}\">",
            xml(&batch.source),
            xml(&batch.dataset),
            counts.tests,
            counts.failures,
            counts.errors,
            counts.skipped,
            xml(timestamp)
        );
        let _ = writeln!(out, "    <properties>");
        let mut properties = vec![
            ("dataset", batch.dataset.clone()),
            ("rules", batch.rules.clone()),
            ("outcome", batch.outcome().to_string()),
        ];
        if let Some(rows) = batch.rows {
            properties.push(("rows", rows.to_string()));
        }
        for (key, value) in batch.partitions.iter() {
            properties.push(("partition", format!("{key}={value}")));
        }
        for (key, value) in properties {
            let _ = writeln!(
                out,
                "      <property name=\"{key}\" value=\"{}\"/>",
                xml(&value)
            );
        }
        let _ = writeln!(out, "    </properties>");
        for case in cases(batch) {
            let _ = write!(
                out,
                "    <testcase name=\"{}\" classname=\"{}\"",
                xml(case.name),
                xml(&batch.dataset)
            );
            match case.outcome {
                Outcome::Passed { warning: None } => out.push_str("/>\n"),
                Outcome::Passed {
                    warning: Some(warning),
                } => {
                    let _ = writeln!(
                        out,
                        ">\n      <system-out>{}</system-out>\n    </testcase>",
                        xml_text(&warning)
                    );
                }
                Outcome::Failure { message, detail } => {
                    let _ = writeln!(
                        out,
                        ">\n      <failure message=\"{}\" type=\"{}\">{}</failure>\n    </testcase>",
                        xml(&message),
                        xml(case.kind),
                        xml_text(&detail)
                    );
                }
                Outcome::Error { message } => {
                    let _ = writeln!(
                        out,
                        ">\n      <error message=\"{}\" type=\"{}\"/>\n    </testcase>",
                        xml(&message),
                        xml(case.kind)
                    );
                }
                Outcome::Skipped { message } => {
                    let _ = writeln!(
                        out,
                        ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                        xml(&message)
                    );
                }
            }
        }
        let _ = writeln!(out, "  </testsuite>");
    }
    out.push_str("</testsuites>\n");
    out
}

/// Text for XML attribute values and character data: markup characters
/// escaped, and characters XML 1.0 cannot carry at all (most control
/// characters) written as `\u{..}` so that a file name cannot make the
/// document unparseable.
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\t' => out.push_str("&#9;"),
            '\r' => out.push_str("&#13;"),
            c if c.is_control() || c == '\u{FFFE}' || c == '\u{FFFF}' => {
                let _ = write!(out, "{}", c.escape_unicode());
            }
            c => out.push(c),
        }
    }
    out
}

/// Character data: as [`xml`], with line breaks and tabs kept as they are
/// (only attribute values need them as references).
fn xml_text(text: &str) -> String {
    xml(text).replace("&#10;", "\n").replace("&#9;", "\t")
}

/// Where each check (and each drift section) of the loaded rule files
/// starts, so an annotation can point at the rule that failed.
#[derive(Debug, Default)]
pub struct RuleLocations {
    checks: HashMap<(String, String), SourceLocation>,
    drift: HashMap<String, SourceLocation>,
}

impl RuleLocations {
    /// Indexes the checks of `rule_files` by (rule file as the report
    /// names it, check name).
    pub fn of(rule_files: &[RuleFile]) -> Self {
        let mut locations = Self::default();
        for file in rule_files {
            let rules = file.path.display().to_string();
            for check in &file.checks {
                locations
                    .checks
                    .insert((rules.clone(), check.name.clone()), check.location.clone());
            }
            if let Some(drift) = &file.drift {
                locations.drift.insert(rules, drift.location.clone());
            }
        }
        locations
    }
}

/// The report as GitHub Actions workflow commands: an `::error` line per
/// failing error-severity check, check that could not be evaluated, batch
/// that could not be read and dataset drift, a `::warning` line for each
/// warn-severity one, each pointing at the rule's `file`, `line` and `col`
/// when known; then one `::notice` line summing up the run.
pub fn render_github(report: &Report, locations: &RuleLocations) -> String {
    let mut out = String::new();
    for batch in &report.reports {
        if let Some(error) = &batch.error {
            annotate(
                &mut out,
                "error",
                &Place::File(&batch.rules),
                &format!("{}: batch could not be read", batch.dataset),
                &format!("{}: {error}", batch.source),
            );
        }
        for check in &batch.checks {
            let (level, verdict) = match (check.status, check.severity) {
                // Passed, or an `anomaly` check still learning: nothing to flag.
                (CheckStatus::Pass | CheckStatus::Skipped, _) => continue,
                (CheckStatus::Fail, Severity::Error) => ("error", "failed"),
                (CheckStatus::Fail, Severity::Warn) => ("warning", "failed"),
                (CheckStatus::Error, _) => ("error", "could not be evaluated"),
            };
            let place = locations
                .checks
                .get(&(batch.rules.clone(), check.name.clone()))
                .map(Place::At)
                .unwrap_or(Place::File(&batch.rules));
            let message = check
                .message
                .clone()
                .unwrap_or_else(|| format!("{} {}", check.kind, check.status));
            annotate(
                &mut out,
                level,
                &place,
                &format!("{}: check {} {verdict}", batch.dataset, check.name),
                &format!("{}: {message}", batch.source),
            );
        }
        if let Some(drift) = &batch.drift {
            let level = match drift.severity {
                Severity::Error => "error",
                Severity::Warn => "warning",
            };
            let place = locations
                .drift
                .get(&batch.rules)
                .map(Place::At)
                .unwrap_or(Place::File(&batch.rules));
            if let Some(error) = &drift.error {
                annotate(
                    &mut out,
                    "error",
                    &place,
                    &format!("{}: drift could not be computed", batch.dataset),
                    &format!("{}: {error}", batch.source),
                );
            } else if drift.dataset_drift {
                annotate(
                    &mut out,
                    level,
                    &place,
                    &format!("{}: dataset drift", batch.dataset),
                    &format!(
                        "{}: drifted columns: {}",
                        batch.source,
                        batch.drifted_columns().join(", ")
                    ),
                );
            }
        }
    }
    let failed = report.reports.iter().filter(|r| !r.passed).count();
    let counts = JunitCounts::of(report);
    let _ = writeln!(
        out,
        "::notice title=driftwatch check::{}",
        escape_data(&format!(
            "{} batch(es), {failed} failed; {} verdict(s): {} failed, {} could not be evaluated",
            report.reports.len(),
            counts.tests,
            counts.failures,
            counts.errors
        ))
    );
    out
}

/// A rule-file error as a GitHub annotation on the offending line.
pub fn github_rule_error(error: &RuleError) -> String {
    let mut out = String::new();
    match error {
        RuleError::Invalid { location, message } => annotate(
            &mut out,
            "error",
            &Place::At(location),
            "driftwatch: invalid rule",
            message,
        ),
        RuleError::Read { path, .. } | RuleError::NoRuleFiles { path } => annotate(
            &mut out,
            "error",
            &Place::File(&path.display().to_string()),
            "driftwatch: rules",
            &error.to_string(),
        ),
    }
    out
}

/// Where an annotation points.
enum Place<'a> {
    At(&'a SourceLocation),
    File(&'a str),
}

fn annotate(out: &mut String, level: &str, place: &Place<'_>, title: &str, message: &str) {
    let position = match place {
        Place::At(at) => format!(
            "file={},line={},col={}",
            escape_property(&at.file.display().to_string()),
            at.line,
            at.column
        ),
        Place::File(file) => format!("file={}", escape_property(file)),
    };
    let _ = writeln!(
        out,
        "::{level} {position},title={}::{}",
        escape_property(title),
        escape_data(message)
    );
}

/// A workflow command's message: `%`, CR and LF escaped as GitHub's
/// toolkit does (`escapeData`), so one message is one line.
fn escape_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// A workflow command's property value: as [`escape_data`], plus `:` and
/// `,`, which would end the value (`escapeProperty`).
fn escape_property(text: &str) -> String {
    escape_data(text).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_escapes_follow_the_toolkit() {
        assert_eq!(escape_data("50% a\r\nb: c, d"), "50%25 a%0D%0Ab: c, d");
        assert_eq!(
            escape_property("50% a\r\nb: c, d"),
            "50%25 a%0D%0Ab%3A c%2C d"
        );
    }

    #[test]
    fn xml_escapes_markup_and_control_characters() {
        assert_eq!(
            xml("a<b>&\"'\n\u{1b}[31m"),
            "a&lt;b&gt;&amp;&quot;&apos;&#10;\\u{1b}[31m"
        );
    }
}
