//! The compact terminal table of a [`Report`]: one block per batch, one line
//! per check, failures first, colored when writing to a terminal.

use std::fmt::Write;

use super::{BatchReport, CheckResult, CheckStatus, Report};

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
            let _ = writeln!(out, "  {path}");
        }
        out.push('\n');
    }
    let total = report.reports.len();
    let failed = report.reports.iter().filter(|r| !r.passed).count();
    let (checks, failing) = report.reports.iter().fold((0, 0), |(n, f), r| {
        (
            n + r.checks.len(),
            f + r
                .checks
                .iter()
                .filter(|c| c.status != CheckStatus::Pass)
                .count(),
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
    let verdict = if batch.passed { "PASSED" } else { "FAILED" };
    let verdict = paint(verdict, if batch.passed { GREEN } else { RED }, color);
    let rows = batch
        .rows
        .map_or_else(|| "?".to_string(), |r| r.to_string());
    let _ = writeln!(
        out,
        "{}{}{} — dataset {} ({} rows, rules {}): {}",
        if color { BOLD } else { "" },
        batch.source,
        if color { RESET } else { "" },
        batch.dataset,
        rows,
        batch.rules,
        verdict
    );
    if let Some(error) = &batch.error {
        let _ = writeln!(out, "  {}", paint(&format!("error: {error}"), RED, color));
        return;
    }
    let mut checks: Vec<&CheckResult> = batch.checks.iter().collect();
    // Failures and errors first; the sort is stable so file order is kept within each group.
    checks.sort_by_key(|c| match c.status {
        CheckStatus::Error => 0,
        CheckStatus::Fail => 1,
        CheckStatus::Pass => 2,
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
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count()).min(48);
        }
    }
    let mut line = String::from("  ");
    for (h, w) in header.iter().zip(widths) {
        let _ = write!(line, "{h:<w$}  ");
    }
    let _ = writeln!(out, "{}", line.trim_end());
    for (row, check) in rows.iter().zip(&checks) {
        let mut line = String::from("  ");
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            let cell = truncate(cell, w);
            let padded = format!("{cell:<w$}");
            if i == 0 {
                let tint = match (check.status, check.severity) {
                    (CheckStatus::Pass, _) => GREEN,
                    (_, crate::rules::Severity::Warn) => YELLOW,
                    _ => RED,
                };
                let _ = write!(line, "{}  ", paint(&padded, tint, color));
            } else {
                let _ = write!(line, "{padded}  ");
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
        if check.status != CheckStatus::Pass
            && let Some(message) = &check.message
        {
            let _ = writeln!(out, "      ↳ {message}");
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
