//! `driftwatch rules suggest`: a commented starter rule file learned from
//! data, so nobody starts from an empty page.
//!
//! Pure logic: the caller profiles the inputs (one scan each, the profile
//! `baseline` writes) and reads their schema; [`suggest`] turns that
//! evidence into candidate checks, each with a comment carrying its exact
//! evidence. The caller then runs the candidates once over the same inputs
//! (a second scan) and calls [`Suggestions::drop_failing`] for any that do
//! not pass, so the written file passes `driftwatch check` on the data it
//! came from. What each suggestion means is in rules/README.md.

use std::collections::BTreeMap;

use crate::anomaly::format_value;
use crate::profile::{ColumnKind, ColumnProfile, DatasetProfile};

/// Most distinct values for an `accepted_values` suggestion.
pub const MAX_ACCEPTED_VALUES: usize = 20;

/// A `range` is the observed extremes widened by this share of their span
/// on each side (rounded outward; integers stay integers; a column never
/// negative keeps a lower bound of at least 0).
pub const RANGE_MARGIN: f64 = 0.1;

/// A `not_null` tolerance is the observed null fraction times this, rounded
/// up to two significant digits.
pub const NULL_TOLERANCE_FACTOR: f64 = 1.25;

/// One column as found: its name and rule-file type (None when `schema`
/// has no name for it).
#[derive(Debug, Clone)]
pub struct SchemaColumn {
    /// The column.
    pub name: String,
    /// Its logical type in rule-file syntax (`int64`, `utf8`, `timestamp(UTC)`).
    pub logical: Option<String>,
    /// Whether it is an integer column.
    pub integer: bool,
}

/// The rule-file type name of an Arrow type (None for nested types, which
/// `schema` has no name for).
pub fn logical_name(data_type: &arrow::datatypes::DataType) -> Option<String> {
    use arrow::datatypes::DataType as D;
    Some(match data_type {
        D::Dictionary(_, value) => return logical_name(value),
        D::Boolean => "bool".into(),
        D::Int8 => "int8".into(),
        D::Int16 => "int16".into(),
        D::Int32 => "int32".into(),
        D::Int64 => "int64".into(),
        D::UInt8 => "uint8".into(),
        D::UInt16 => "uint16".into(),
        D::UInt32 => "uint32".into(),
        D::UInt64 => "uint64".into(),
        D::Float16 | D::Float32 => "float32".into(),
        D::Float64 => "float64".into(),
        D::Decimal32(..) | D::Decimal64(..) | D::Decimal128(..) | D::Decimal256(..) => {
            "decimal".into()
        }
        D::Utf8 | D::LargeUtf8 | D::Utf8View => "utf8".into(),
        D::Binary | D::LargeBinary | D::BinaryView | D::FixedSizeBinary(_) => "binary".into(),
        D::Date32 | D::Date64 => "date".into(),
        D::Timestamp(_, Some(tz)) => format!("timestamp({tz})"),
        D::Timestamp(_, None) => "timestamp(none)".into(),
        _ => return None,
    })
}

/// What the suggestions are learned from.
#[derive(Debug, Clone)]
pub struct Evidence<'a> {
    /// The columns, in file order.
    pub schema: &'a [SchemaColumn],
    /// The merged profile of every input.
    pub profile: &'a DatasetProfile,
    /// Rows of each input, in input order.
    pub batch_rows: &'a [u64],
    /// The profile file the `drift:` section names, when one is written.
    pub baseline: Option<&'a str>,
}

/// One suggested check.
#[derive(Debug, Clone, PartialEq)]
pub struct Suggestion {
    /// The check's (default) name, to match it with verification results.
    pub name: String,
    /// The evidence, as a comment line (without `# `).
    pub comment: String,
    /// The check as a YAML list item (`- not_null: x`), possibly several lines.
    pub yaml: String,
}

/// The suggested rule file before rendering.
#[derive(Debug, Clone)]
pub struct Suggestions {
    /// The dataset.
    pub dataset: String,
    /// The checks, in order.
    pub checks: Vec<Suggestion>,
    /// Checks left out because they failed on their own data: name and why.
    pub dropped: Vec<(String, String)>,
    /// The baseline file named by the `drift:` section.
    pub baseline: Option<String>,
    /// Set when the drift section must be `severity: warn` (a source batch
    /// drifted from the merged baseline): the reason.
    pub drift_warn: Option<String>,
    /// Header lines (without `# `).
    pub header: Vec<String>,
}

fn quote(text: &str) -> String {
    // A JSON string is a valid YAML double-quoted scalar.
    serde_json::to_string(text).unwrap_or_else(|_| format!("\"{text}\""))
}

fn plain_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// `x` rounded up to two significant digits.
fn round_up_2(x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    let scale = 10f64.powi(1 - x.log10().floor() as i32);
    ((x * scale).ceil() / scale).min(1.0)
}

/// The shape of a string: runs of upper-case letters, lower-case letters and
/// digits as classes with their lengths, anything else literally.
fn shape(value: &str) -> Vec<(String, usize)> {
    let mut out: Vec<(String, usize)> = Vec::new();
    for c in value.chars() {
        let class = if c.is_ascii_uppercase() {
            "[A-Z]".to_string()
        } else if c.is_ascii_lowercase() {
            "[a-z]".to_string()
        } else if c.is_ascii_digit() {
            "[0-9]".to_string()
        } else {
            regex::escape(&c.to_string())
        };
        match out.last_mut() {
            Some((last, n)) if *last == class && class.starts_with('[') => *n += 1,
            _ => out.push((class, 1)),
        }
    }
    out
}

/// A regex every sampled value matches, when they share one sequence of
/// classes (run lengths may differ: `{min,max}`).
fn common_shape<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut merged: Option<Vec<(String, usize, usize)>> = None;
    for value in values {
        let s = shape(value);
        if s.is_empty() {
            return None;
        }
        match &mut merged {
            None => merged = Some(s.into_iter().map(|(c, n)| (c, n, n)).collect()),
            Some(m) => {
                if m.len() != s.len() || m.iter().zip(&s).any(|(a, b)| a.0 != b.0) {
                    return None;
                }
                for (a, b) in m.iter_mut().zip(&s) {
                    a.1 = a.1.min(b.1);
                    a.2 = a.2.max(b.1);
                }
            }
        }
    }
    let merged = merged?;
    // Only classes make a shape worth checking; a run of literals is a value.
    if !merged.iter().any(|(c, _, _)| c.starts_with('[')) {
        return None;
    }
    let mut pattern = String::from("^");
    for (class, lo, hi) in merged {
        pattern.push_str(&class);
        match (lo, hi) {
            (1, 1) => {}
            (lo, hi) if lo == hi => pattern.push_str(&format!("{{{lo}}}")),
            (lo, hi) => pattern.push_str(&format!("{{{lo},{hi}}}")),
        }
    }
    pattern.push('$');
    Some(pattern)
}

fn range_bounds(min: f64, max: f64, integer: bool) -> (f64, f64) {
    let span = (max - min).abs();
    let margin = if span > 0.0 {
        span * RANGE_MARGIN
    } else {
        (min.abs() * RANGE_MARGIN).max(1.0)
    };
    let mut lo = min - margin;
    let mut hi = max + margin;
    if min >= 0.0 {
        lo = lo.max(0.0);
    }
    if integer {
        lo = lo.floor();
        hi = hi.ceil();
    } else {
        // Two significant digits of the margin are plenty, outward.
        let step = 10f64.powi(margin.log10().floor() as i32 - 1);
        lo = (lo / step).floor() * step;
        hi = (hi / step).ceil() * step;
        // Clean decimal text (0.30000000000000004 → 0.3).
        lo = format!("{lo:.12}").parse().unwrap_or(lo);
        hi = format!("{hi:.12}").parse().unwrap_or(hi);
    }
    (lo, hi)
}

fn column_checks(column: &SchemaColumn, p: &ColumnProfile, out: &mut Vec<Suggestion>) {
    let name = &column.name;
    let q = quote(name);
    let non_null = p.non_null();
    if p.count == 0 || non_null == 0 {
        return;
    }
    // not_null, or a tolerance just above the observed null fraction.
    if p.nulls == 0 {
        out.push(Suggestion {
            name: format!("not_null_{name}"),
            comment: format!("0 nulls in {} rows", format_value(p.count as f64)),
            yaml: format!("- not_null: {q}"),
        });
    } else {
        let fraction = p.nulls as f64 / p.count as f64;
        let tolerance = round_up_2(fraction * NULL_TOLERANCE_FACTOR);
        out.push(Suggestion {
            name: format!("not_null_{name}"),
            comment: format!(
                "{} nulls in {} rows ({}); tolerance {} = observed × {NULL_TOLERANCE_FACTOR}, rounded up",
                format_value(p.nulls as f64),
                format_value(p.count as f64),
                format_value(fraction),
                plain_number(tolerance)
            ),
            yaml: format!("- not_null: {q}\n  max_fraction: {}", plain_number(tolerance)),
        });
    }
    let (distinct, exact) = p.distinct_values();
    match p.kind {
        ColumnKind::Categorical => {
            let f = &p.frequencies;
            let exact_values = f.exact && exact;
            let values: Vec<(&String, &u64)> = f.items.iter().collect();
            if exact_values && non_null >= 2 && values.iter().all(|(_, c)| **c == 1) {
                out.push(Suggestion {
                    name: format!("unique_{name}"),
                    comment: format!(
                        "{} distinct values in {} non-null rows",
                        format_value(values.len() as f64),
                        format_value(non_null as f64)
                    ),
                    yaml: format!("- unique: {q}"),
                });
            } else if exact_values
                && values.len() <= MAX_ACCEPTED_VALUES
                && non_null >= 10 * values.len() as u64
                && column.logical.as_deref() == Some("utf8")
            {
                let list: Vec<String> = values.iter().map(|(v, _)| quote(v)).collect();
                let counts: Vec<String> = values
                    .iter()
                    .map(|(v, c)| format!("{v} {}", format_value(**c as f64)))
                    .collect();
                out.push(Suggestion {
                    name: format!("accepted_values_{name}"),
                    comment: format!(
                        "{} distinct values in {} non-null rows: {}",
                        values.len(),
                        format_value(non_null as f64),
                        counts.join(", ")
                    ),
                    yaml: format!(
                        "- accepted_values:\n    column: {q}\n    values: [{}]",
                        list.join(", ")
                    ),
                });
                return;
            }
            if column.logical.as_deref() == Some("utf8")
                && let Some(pattern) = common_shape(values.iter().map(|(v, _)| v.as_str()))
            {
                let sampled = if exact_values {
                    format!("all {} distinct values", format_value(values.len() as f64))
                } else {
                    format!(
                        "the {} most frequent values",
                        format_value(values.len() as f64)
                    )
                };
                out.push(Suggestion {
                    name: format!("regex_{name}"),
                    comment: format!(
                        "{sampled} have this shape; checked on all {} non-null rows",
                        format_value(non_null as f64)
                    ),
                    yaml: format!(
                        "- regex:\n    column: {q}\n    pattern: {}",
                        quote(&pattern)
                    ),
                });
            }
        }
        ColumnKind::Numeric => {
            let Some(n) = &p.numeric else { return };
            if distinct >= 0.99 * non_null as f64 && non_null >= 2 && column.integer {
                out.push(Suggestion {
                    name: format!("unique_{name}"),
                    // A sketch's estimate can exceed the row count (it did
                    // on the 10 M-row benchmark file); the evidence kept is
                    // the exact fact the verification scan established (a
                    // `unique` that fails there is dropped, not kept).
                    comment: if exact {
                        format!(
                            "{} distinct values in {} non-null rows",
                            format_value(distinct.round()),
                            format_value(non_null as f64)
                        )
                    } else {
                        format!(
                            "all {} non-null values distinct: counted exactly by the check on these rows (the profile's sketch estimated {})",
                            format_value(non_null as f64),
                            format_value(distinct.round())
                        )
                    },
                    yaml: format!("- unique: {q}"),
                });
            }
            if n.nan > 0 || n.pos_inf > 0 || n.neg_inf > 0 {
                return; // NaN fails every range
            }
            // Times are profiled as epoch numbers; a range on them is a
            // `freshness` question, not a starter check.
            let plain = column.logical.as_deref().is_some_and(|t| {
                t.starts_with("int")
                    || t.starts_with("uint")
                    || t.starts_with("float")
                    || t == "decimal"
            });
            if !plain {
                return;
            }
            if let (Some(min), Some(max)) = (n.min, n.max) {
                let (lo, hi) = range_bounds(min, max, column.integer);
                // Say how the bounds were found: a single value has no span.
                let widened = if max > min {
                    format!("widened by {}% of the span each side", RANGE_MARGIN * 100.0)
                } else {
                    format!(
                        "one value, widened by {}% of its magnitude (at least 1) each side",
                        RANGE_MARGIN * 100.0
                    )
                };
                out.push(Suggestion {
                    name: format!("range_{name}"),
                    comment: format!(
                        "observed {} to {} in {} non-null rows; {widened}",
                        plain_number(min),
                        plain_number(max),
                        format_value(non_null as f64),
                    ),
                    yaml: format!(
                        "- range:\n    column: {q}\n    min: {}\n    max: {}",
                        plain_number(lo),
                        plain_number(hi)
                    ),
                });
            }
        }
    }
}

/// The starter checks for the evidence, in order: schema, per-column
/// checks in file order, then the row-count anomaly check.
pub fn suggest(dataset: &str, evidence: &Evidence<'_>) -> Suggestions {
    let mut checks = Vec::new();
    let typed: Vec<&SchemaColumn> = evidence
        .schema
        .iter()
        .filter(|c| c.logical.is_some())
        .collect();
    if !typed.is_empty() {
        let lines: Vec<String> = typed
            .iter()
            .map(|c| {
                format!(
                    "      {}: {}",
                    quote(&c.name),
                    quote(c.logical.as_deref().unwrap_or_default())
                )
            })
            .collect();
        let untyped = evidence.schema.len() - typed.len();
        checks.push(Suggestion {
            name: "schema".to_string(),
            comment: format!(
                "{} columns with these types in every input{}",
                typed.len(),
                if untyped > 0 {
                    format!("; {untyped} nested column(s) left out, so other columns are allowed")
                } else {
                    String::new()
                }
            ),
            yaml: format!(
                "- schema:\n    allow_extra: {}\n    columns:\n{}",
                untyped > 0,
                lines.join("\n")
            ),
        });
    }
    for column in evidence.schema {
        if let Some(p) = evidence.profile.columns.get(&column.name) {
            column_checks(column, p, &mut checks);
        }
    }
    let rows = evidence.batch_rows;
    if let (Some(lo), Some(hi)) = (rows.iter().min(), rows.iter().max()) {
        checks.push(Suggestion {
            name: "anomaly_row_count".to_string(),
            comment: format!(
                "{} batch(es) of {} to {} rows; judged against its own history once it has 10 batches",
                rows.len(),
                format_value(*lo as f64),
                format_value(*hi as f64)
            ),
            yaml: "- anomaly:\n    metric: row_count".to_string(),
        });
    }
    Suggestions {
        dataset: dataset.to_string(),
        checks,
        dropped: Vec::new(),
        baseline: evidence.baseline.map(str::to_string),
        drift_warn: None,
        header: Vec::new(),
    }
}

impl Suggestions {
    /// Leaves out the checks that failed on the inputs they were learned
    /// from (`failures`: check name → why), keeping the reason as a comment.
    pub fn drop_failing(&mut self, failures: &BTreeMap<String, String>) {
        let (kept, dropped): (Vec<Suggestion>, Vec<Suggestion>) = self
            .checks
            .drain(..)
            .partition(|s| !failures.contains_key(&s.name));
        self.checks = kept;
        for s in dropped {
            let why = failures.get(&s.name).cloned().unwrap_or_default();
            self.dropped.push((s.name, why));
        }
    }

    /// The rule file's text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.header {
            out.push_str(&format!("# {line}\n"));
        }
        out.push_str(&format!("dataset: {}\n", quote(&self.dataset)));
        out.push_str("checks:\n");
        for check in &self.checks {
            out.push_str(&format!("  # {}\n", check.comment));
            for line in check.yaml.lines() {
                out.push_str(&format!("  {line}\n"));
            }
        }
        for (name, why) in &self.dropped {
            out.push_str(&format!(
                "  # not suggested: `{name}` fails on this data ({why})\n"
            ));
        }
        match &self.baseline {
            Some(baseline) => {
                out.push_str(&format!(
                    "# drift against the profile of the data this file was learned from\ndrift:\n  reference: {}\n",
                    quote(baseline)
                ));
                if let Some(why) = &self.drift_warn {
                    out.push_str(&format!("  # warn only: {why}\n  severity: warn\n"));
                }
            }
            None => out.push_str(
                "# drift: give `--output FILE` to write a baseline profile next to the rule file\n",
            ),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_18_shapes_generalise_run_lengths_and_refuse_mixed_shapes() {
        assert_eq!(
            common_shape(["AA1234", "UA987"]).as_deref(),
            Some("^[A-Z]{2}[0-9]{3,4}$")
        );
        assert_eq!(
            common_shape(["2024-05-01", "2023-12-31"]).as_deref(),
            Some("^[0-9]{4}\\-[0-9]{2}\\-[0-9]{2}$")
        );
        assert_eq!(common_shape(["AA1", "1AA"]), None);
        assert_eq!(common_shape(["--", "--"]), None);
    }

    #[test]
    fn issue_18_ranges_are_widened_by_a_tenth_of_the_span_outward() {
        assert_eq!(range_bounds(0.0, 100.0, true), (0.0, 110.0));
        assert_eq!(range_bounds(-12.0, 1433.0, true), (-157.0, 1578.0));
        assert_eq!(range_bounds(1.5, 2.5, false), (1.4, 2.6));
        assert_eq!(range_bounds(7.0, 7.0, true), (6.0, 8.0));
        assert_eq!(round_up_2(0.012_34 * 1.25), 0.016);
    }
}
