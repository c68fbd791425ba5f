//! The compact terminal table of a [`Report`]: one block per batch, one line
//! per check, failures first, colored when writing to a terminal.

use std::fmt::Write;

use super::{BatchReport, CheckResult, CheckStatus, DriftReport, Report};
use crate::drift::PValueMethod;
use crate::drift::compare::DistributionPath;

const RED: &str = "\x1b[31m";
const YELLOW: &str = "\x1b[33m";
const GREEN: &str = "\x1b[32m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

/// Renders the report as text; `color` adds ANSI colors.
pub fn render_table(report: &Report, color: bool) -> String {
    let mut out = String::new();
    for batch in &report.reports {
        render_batch(&mut out, batch, color);
        out.push('\n');
    }
    if !report.unmatched.is_empty() {
        let _ = writeln!(out, "unmatched inputs (no rule file's `match` applies):");
        for path in &report.unmatched {
            let _ = writeln!(out, "  {}", super::escape_control(path));
        }
        out.push('\n');
    }
    let total = report.reports.len();
    let failed = report.reports.iter().filter(|r| !r.passed).count();
    let (checks, failing) = report.reports.iter().fold((0, 0), |(n, f), r| {
        (
            n + r.checks.len(),
            f + r.checks.iter().filter(|c| c.status.is_problem()).count(),
        )
    });
    let _ = writeln!(
        out,
        "{} batch report(s), {} failed; {} check(s), {} not passing; {} unmatched input(s)",
        total,
        failed,
        checks,
        failing,
        report.unmatched.len()
    );
    out
}

fn render_batch(out: &mut String, batch: &BatchReport, color: bool) {
    // A table version that added no data: nothing was evaluated.
    if let Some(table) = batch.table.as_ref().filter(|t| t.skipped.is_some()) {
        let _ = writeln!(
            out,
            "{}{}{} — dataset {} ({} {}, rules {}): SKIPPED: {}",
            if color { BOLD } else { "" },
            super::escape_control(&batch.source),
            if color { RESET } else { "" },
            batch.dataset,
            table.format,
            super::escape_control(&table.operation),
            batch.rules,
            super::escape_control(table.skipped.as_deref().unwrap_or_default())
        );
        return;
    }
    let verdict = if batch.passed { "PASSED" } else { "FAILED" };
    let verdict = paint(verdict, if batch.passed { GREEN } else { RED }, color);
    let rows = batch
        .rows
        .map_or_else(|| "?".to_string(), |r| r.to_string());
    let _ = writeln!(
        out,
        "{}{}{} — dataset {} ({} rows, rules {}): {}",
        if color { BOLD } else { "" },
        super::escape_control(&batch.source),
        if color { RESET } else { "" },
        batch.dataset,
        rows,
        batch.rules,
        verdict
    );
    if let Some(error) = &batch.error {
        let error = super::escape_control(error);
        let _ = writeln!(out, "  {}", paint(&format!("error: {error}"), RED, color));
        return;
    }
    let mut checks: Vec<&CheckResult> = batch.checks.iter().collect();
    // Failures and errors first; the sort is stable so file order is kept within each group.
    checks.sort_by_key(|c| match c.status {
        CheckStatus::Error => 0,
        CheckStatus::Fail => 1,
        CheckStatus::Pass => 2,
        CheckStatus::Skipped => 3,
    });
    let rows: Vec<[String; 6]> = checks
        .iter()
        .map(|c| {
            [
                c.status.to_string(),
                c.severity.to_string(),
                c.name.clone(),
                c.failing_rows
                    .map(|f| {
                        let frac = c
                            .fraction
                            .map(|x| format!(" ({:.3}%)", x * 100.0))
                            .unwrap_or_default();
                        format!("{f}{frac}")
                    })
                    .unwrap_or_else(|| "-".to_string()),
                compact(&c.observed),
                compact(&c.expected),
            ]
        })
        .collect();
    let header = [
        "STATUS", "SEVERITY", "CHECK", "FAILING", "OBSERVED", "EXPECTED",
    ];
    let table = Table {
        indent: "  ",
        max_width: 48,
        color,
    };
    table.write(
        out,
        &header,
        &rows,
        |i| match (checks[i].status, checks[i].severity) {
            (CheckStatus::Pass | CheckStatus::Skipped, _) => GREEN,
            (_, crate::rules::Severity::Warn) => YELLOW,
            _ => RED,
        },
        |i| {
            let c = checks[i];
            (c.status != CheckStatus::Pass)
                .then(|| c.message.clone())
                .flatten()
        },
    );
    if let Some(drift) = &batch.drift {
        render_drift(out, drift, color);
    }
}

fn render_drift(out: &mut String, drift: &DriftReport, color: bool) {
    if let Some(error) = &drift.error {
        let _ = writeln!(
            out,
            "  {}",
            paint(&format!("drift error: {error}"), RED, color)
        );
        return;
    }
    let share = drift
        .drifted_share
        .map_or_else(|| "-".to_string(), |s| format!("{s:.2}"));
    let verdict = if drift.dataset_drift {
        paint(
            "DATASET DRIFT",
            if drift.severity == crate::rules::Severity::Warn {
                YELLOW
            } else {
                RED
            },
            color,
        )
    } else {
        paint("no dataset drift", GREEN, color)
    };
    let _ = writeln!(
        out,
        "  drift vs {}: {} (drifted share {} / threshold {:.2}, correction {}, severity {})",
        drift.reference,
        verdict,
        share,
        drift.drift_share_threshold,
        drift.correction,
        drift.severity
    );
    let mut columns: Vec<_> = drift.columns.iter().collect();
    columns.sort_by_key(|c| !c.drifted);
    let num = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |x| format!("{x:.4}"));
    let rows: Vec<[String; 6]> = columns
        .iter()
        .map(|c| {
            [
                if c.drifted {
                    "drift".into()
                } else {
                    "ok".into()
                },
                c.column.clone(),
                test_name(c),
                num(c.statistic),
                num(c.p_value_adjusted.or(c.p_value)),
                num(c.threshold),
            ]
        })
        .collect();
    let header = [
        "DRIFT",
        "COLUMN",
        "TEST",
        "STATISTIC",
        "P-VALUE",
        "THRESHOLD",
    ];
    let table = Table {
        indent: "    ",
        max_width: 40,
        color,
    };
    table.write(
        out,
        &header,
        &rows,
        |i| if columns[i].drifted { RED } else { GREEN },
        |i| {
            let c = columns[i];
            let message = (c.drifted
                || c.test.is_none()
                || c.path == Some(DistributionPath::Sketched)
                || c.p_value_method
                    .is_some_and(|m| m != PValueMethod::Asymptotic))
            .then(|| c.message.clone())
            .flatten();
            // What moved, in the data's units, for drifted columns.
            let effect = c
                .effect
                .as_ref()
                .filter(|_| c.drifted)
                .map(|e| e.summary.clone());
            match (message, effect) {
                (Some(m), Some(e)) => Some(format!("{e}; {m}")),
                (m, e) => e.or(m),
            }
        },
    );
    for n in &drift.not_tested {
        let _ = writeln!(out, "    not tested: {} ({})", n.column, n.reason);
    }
    // With `sequential`, the verdicts are the detectors', not the p-values'.
    if let Some(s) = &drift.sequential {
        let detectors: Vec<String> = s
            .columns
            .iter()
            .map(|(name, c)| {
                format!(
                    "{name} {:.2}{}",
                    c.statistic,
                    if c.alarm { " (alarm)" } else { "" }
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "    sequential: drift when R >= {:.0} (P(any false alarm within {} windows) <= {}); R: {}",
            s.threshold,
            s.windows,
            s.false_alarm,
            detectors.join(", ")
        );
        if let Some(message) = &s.message {
            let _ = writeln!(out, "    sequential: {message}");
        }
    }
}

/// The test's name, marked when it ran on a summary rather than exact data.
fn test_name(c: &crate::drift::compare::ColumnDrift) -> String {
    match (c.test, c.path) {
        (None, _) => "-".to_string(),
        (Some(t), Some(DistributionPath::Sketched)) => format!("{} (sketched)", t.name()),
        (Some(t), _) => t.name().to_string(),
    }
}

/// Aligned columns: a header, then rows whose first cell is tinted, each
/// optionally followed by an indented note (the reason for a failure).
struct Table {
    indent: &'static str,
    max_width: usize,
    color: bool,
}

impl Table {
    fn write<const N: usize>(
        &self,
        out: &mut String,
        header: &[&str; N],
        rows: &[[String; N]],
        tint: impl Fn(usize) -> &'static str,
        note: impl Fn(usize) -> Option<String>,
    ) {
        let mut widths = header.map(str::len);
        for row in rows {
            for (w, cell) in widths.iter_mut().zip(row.iter()) {
                *w = (*w).max(cell.chars().count()).min(self.max_width);
            }
        }
        let mut line = String::from(self.indent);
        for (h, w) in header.iter().zip(widths) {
            let _ = write!(line, "{h:<w$}  ");
        }
        let _ = writeln!(out, "{}", line.trim_end());
        for (i, row) in rows.iter().enumerate() {
            let mut line = String::from(self.indent);
            for (k, (cell, w)) in row.iter().zip(widths).enumerate() {
                let padded = format!("{:<w$}", truncate(cell, w));
                if k == 0 {
                    let _ = write!(line, "{}  ", paint(&padded, tint(i), self.color));
                } else {
                    let _ = write!(line, "{padded}  ");
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
            if let Some(message) = note(i) {
                let _ = writeln!(out, "{}    ↳ {message}", self.indent);
            }
        }
    }
}

fn paint(text: &str, tint: &str, color: bool) -> String {
    if color {
        format!("{tint}{text}{RESET}")
    } else {
        text.to_string()
    }
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// A JSON value on one line without quotes around plain strings.
fn compact(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k}={}", compact(v)))
            .collect::<Vec<_>>()
            .join(" "),
        serde_json::Value::Array(items) => format!(
            "[{}]",
            items.iter().map(compact).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}
