//! The self-contained HTML report: one file, no external resources (no CDN,
//! fonts or scripts), readable without JavaScript, light and dark through
//! `prefers-color-scheme`, charts as inline SVG drawn from the stored
//! profiles — so no raw data is needed, and the file works offline and as an
//! e-mail attachment.
//!
//! The document is also well-formed XML (every tag closed, text escaped), so
//! tests parse it strictly.

use std::fmt::Write as _;

use crate::profile::{ColumnKind, ColumnProfile, DatasetProfile};
use crate::report::{BatchReport, CheckStatus, Report};

/// The profiles behind one batch report's drift section, for its charts.
#[derive(Debug, Clone, Copy)]
pub struct Profiles<'a> {
    /// The reference.
    pub reference: &'a DatasetProfile,
    /// The batch.
    pub current: &'a DatasetProfile,
}

/// Bins of a numeric chart.
const BINS: usize = 30;
/// Categories shown per categorical chart (the rest is "other").
const TOP_CATEGORIES: usize = 12;

const STYLE: &str = "
:root { color-scheme: light dark; --fg: #1d2430; --bg: #ffffff; --muted: #667085; --line: #d0d5dd;
  --fail: #b42318; --pass: #067647; --warn: #b54708; --ref: #98a2b3; --cur: #2e90fa; }
@media (prefers-color-scheme: dark) { :root { --fg: #e4e7ec; --bg: #101828; --muted: #98a2b3;
  --line: #344054; --fail: #f97066; --pass: #47cd89; --warn: #fdb022; --ref: #667085; --cur: #53b1fd; } }
body { font: 14px/1.45 system-ui, sans-serif; color: var(--fg); background: var(--bg); margin: 2em auto;
  max-width: 1100px; padding: 0 1em; }
h1 { font-size: 1.4em; } h2 { font-size: 1.2em; margin-top: 2em; } h3 { font-size: 1em; }
table { border-collapse: collapse; width: 100%; margin: .5em 0 1.5em; }
th, td { text-align: left; padding: .3em .6em; border-bottom: 1px solid var(--line); vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.fail { color: var(--fail); font-weight: 600; } .pass { color: var(--pass); } .warn { color: var(--warn); }
.muted { color: var(--muted); } .charts { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; } figcaption { font-size: .9em; color: var(--muted); max-width: 520px; }
svg text { fill: var(--fg); font-size: 11px; } svg .axis { stroke: var(--muted); }
svg .ref { fill: var(--ref); } svg .cur { fill: var(--cur); } svg .anomaly { fill: var(--fail); }
";

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn number(v: Option<f64>) -> String {
    match v {
        None => "—".to_string(),
        Some(x) if x != 0.0 && (x.abs() < 1e-3 || x.abs() >= 1e6) => format!("{x:.3e}"),
        Some(x) => format!("{x:.4}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string(),
    }
}

fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "—".to_string(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Renders a whole report; `profiles[i]` holds the charts' data for
/// `report.reports[i]` when it has drift results.
pub fn render_html(report: &Report, profiles: &[Option<Profiles<'_>>], title: &str) -> String {
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/>");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>");
    let _ = write!(
        out,
        "<title>{}</title><style>{STYLE}</style></head><body>",
        escape(title)
    );
    let _ = write!(out, "<h1>{}</h1>", escape(title));
    let failed = report.reports.iter().filter(|r| !r.passed).count();
    let _ = write!(
        out,
        "<p class=\"muted\">{} batch report(s), {} failed{}</p>",
        report.reports.len(),
        failed,
        if report.unmatched.is_empty() {
            String::new()
        } else {
            format!("; {} input(s) matched no rule file", report.unmatched.len())
        }
    );
    for (i, batch) in report.reports.iter().enumerate() {
        render_batch(&mut out, batch, profiles.get(i).copied().flatten());
    }
    out.push_str("</body></html>\n");
    out
}

fn render_batch(out: &mut String, b: &BatchReport, profiles: Option<Profiles<'_>>) {
    let _ = write!(
        out,
        "<section class=\"batch\"><h2>{} — {}</h2>",
        escape(&b.dataset),
        escape(&b.source)
    );
    let verdict = if b.error.is_some() {
        "<span class=\"fail\">ERROR</span>"
    } else if b.passed {
        "<span class=\"pass\">PASSED</span>"
    } else {
        "<span class=\"fail\">FAILED</span>"
    };
    let drift = match &b.drift {
        Some(d) if d.error.is_none() && d.message.is_none() => format!(
            "; dataset drift: <strong>{}</strong> (drifted share {}, threshold {})",
            if d.dataset_drift { "yes" } else { "no" },
            number(d.drifted_share),
            number(Some(d.drift_share_threshold))
        ),
        Some(d) => format!(
            "; drift: {}",
            escape(d.error.as_deref().or(d.message.as_deref()).unwrap_or(""))
        ),
        None => String::new(),
    };
    let _ = write!(
        out,
        "<p class=\"summary\">{verdict} · rows: {}{drift}</p>",
        b.rows.map_or("—".to_string(), |r| r.to_string())
    );
    if let Some(e) = &b.error {
        let _ = write!(out, "<p class=\"fail\">{}</p>", escape(e));
    }
    if !b.checks.is_empty() {
        out.push_str("<h3>Checks</h3><table class=\"checks\"><thead><tr><th>check</th><th>status</th><th>severity</th><th>failing rows</th><th>fraction</th><th>observed</th><th>expected</th></tr></thead><tbody>");
        let mut checks: Vec<_> = b.checks.iter().collect();
        // Failures first (errors before warnings), then the rest in file order.
        checks.sort_by_key(|c| {
            (
                !c.status.is_problem(),
                c.severity != crate::rules::Severity::Error,
            )
        });
        for c in checks {
            let class = match c.status {
                CheckStatus::Pass | CheckStatus::Skipped => "pass",
                _ if c.severity == crate::rules::Severity::Warn => "warn",
                _ => "fail",
            };
            let _ = write!(
                out,
                "<tr><td>{}</td><td class=\"{class}\">{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
                escape(&c.name),
                c.status,
                match c.severity {
                    crate::rules::Severity::Error => "error",
                    crate::rules::Severity::Warn => "warn",
                },
                c.failing_rows.map_or("—".to_string(), |n| n.to_string()),
                number(c.fraction),
                escape(&json_text(&c.observed)),
                escape(&json_text(&c.expected)),
            );
        }
        out.push_str("</tbody></table>");
    }
    if let Some(d) = &b.drift
        && !d.columns.is_empty()
    {
        let _ = write!(
            out,
            "<h3>Drift against {}</h3><table class=\"drift\"><thead><tr><th>column</th><th>test</th><th>path</th><th>statistic</th><th>p-value</th><th>threshold</th><th>drifted</th><th>what moved</th></tr></thead><tbody>",
            escape(&d.reference)
        );
        let mut columns: Vec<_> = d.columns.iter().collect();
        columns.sort_by_key(|c| !c.drifted);
        for c in &columns {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td title=\"{}\">{}</td><td class=\"num\">{}</td><td class=\"num\"{}>{}</td><td class=\"num\">{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
                escape(&c.column),
                c.test.map_or("—", |t| t.name()),
                escape(c.message.as_deref().unwrap_or("")),
                c.path.map_or("—", |p| p.name()),
                number(c.statistic),
                small_sample_title(c),
                number(c.p_value),
                number(c.threshold),
                if c.drifted { "fail" } else { "pass" },
                if c.drifted { "yes" } else { "no" },
                escape(c.effect.as_ref().map_or("", |e| e.summary.as_str())),
            );
        }
        out.push_str("</tbody></table>");
        if !d.not_tested.is_empty() {
            out.push_str("<p class=\"note\">Not tested: ");
            for (i, n) in d.not_tested.iter().enumerate() {
                let _ = write!(
                    out,
                    "{}<code>{}</code> — {}",
                    if i > 0 { "; " } else { "" },
                    escape(&n.column),
                    escape(&n.reason)
                );
            }
            out.push_str("</p>");
        }
        // With `sequential`, the verdicts are the detectors', not the
        // p-values': show each column's evidence next to the threshold.
        if let Some(s) = &d.sequential {
            let _ = write!(
                out,
                "<h3>Sequential detector</h3><p class=\"note\">{}: drift when R ≥ c = {}; \
                 P(any false alarm within {} windows) ≤ {}</p><table class=\"sequential\"><thead>\
                 <tr><th>column</th><th>e-value</th><th>R</th><th>threshold c</th><th>alarm</th>\
                 </tr></thead><tbody>",
                escape(&s.method),
                number(Some(s.threshold)),
                s.windows,
                number(Some(s.false_alarm)),
            );
            for (name, c) in &s.columns {
                let _ = write!(
                    out,
                    "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                     <td class=\"num\">{}</td><td class=\"{}\">{}</td></tr>",
                    escape(name),
                    number(Some(c.e_value)),
                    number(Some(c.statistic)),
                    number(Some(s.threshold)),
                    if c.alarm { "fail" } else { "pass" },
                    if c.alarm { "yes" } else { "no" },
                );
            }
            out.push_str("</tbody></table>");
            if let Some(message) = &s.message {
                let _ = write!(out, "<p class=\"note\">{}</p>", escape(message));
            }
        }
        if let Some(p) = profiles {
            out.push_str("<h3>Reference vs batch</h3><div class=\"charts\">");
            for c in &columns {
                if let (Some(r), Some(k)) = (
                    p.reference.columns.get(&c.column),
                    p.current.columns.get(&c.column),
                ) {
                    out.push_str(&chart(&c.column, r, k));
                }
            }
            out.push_str("</div>");
        }
    }
    out.push_str("</section>");
}

/// A value distribution as (value, weight) points.
fn points(p: &ColumnProfile) -> Vec<(f64, f64)> {
    p.numeric
        .as_ref()
        .map(|s| s.weighted_points())
        .unwrap_or_default()
}

/// One chart for a column: overlaid histograms on shared bins (numeric) or
/// side-by-side bars of the top categories plus "other" (categorical).
pub fn chart(column: &str, reference: &ColumnProfile, current: &ColumnProfile) -> String {
    let (labels, r, c, note) = match reference.kind {
        ColumnKind::Numeric => numeric_bins(reference, current),
        ColumnKind::Categorical => categorical_bars(reference, current),
    };
    let caption = format!(
        "{} — share of non-null values per {}; grey: reference, blue: batch{}",
        column,
        if reference.kind == ColumnKind::Numeric {
            "bin"
        } else {
            "category"
        },
        note.map(|n| format!("; {n}")).unwrap_or_default()
    );
    svg(column, &labels, &r, &c, &caption)
}

type Bars = (Vec<String>, Vec<f64>, Vec<f64>, Option<String>);

fn shares(w: &[f64]) -> Vec<f64> {
    let total: f64 = w.iter().sum();
    w.iter()
        .map(|x| if total > 0.0 { x / total } else { 0.0 })
        .collect()
}

fn numeric_bins(reference: &ColumnProfile, current: &ColumnProfile) -> Bars {
    let (pr, pc) = (points(reference), points(current));
    // Temporal columns are profiled on their epoch scale; label them as
    // times, dates or durations.
    let unit = crate::profile::epoch_unit(&reference.data_type);
    let label = |v: f64| unit.map_or_else(|| number(Some(v)), |u| u.format_value(v));
    let mut values: Vec<f64> = pr.iter().chain(&pc).map(|p| p.0).collect();
    values.sort_by(f64::total_cmp);
    values.dedup();
    if values.is_empty() {
        return (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Some("no finite values".into()),
        );
    }
    // Few distinct values: one bar each.
    if values.len() <= BINS {
        let weight =
            |p: &[(f64, f64)], v: f64| p.iter().filter(|x| x.0 == v).map(|x| x.1).sum::<f64>();
        let r: Vec<f64> = values.iter().map(|&v| weight(&pr, v)).collect();
        let c: Vec<f64> = values.iter().map(|&v| weight(&pc, v)).collect();
        let labels = values.iter().map(|v| label(*v)).collect();
        return (labels, shares(&r), shares(&c), None);
    }
    // Equal-width bins between the pooled 1st and 99th percentiles, so
    // extreme outliers do not squash the chart; what lies outside is said.
    let quantile = |p: &[(f64, f64)], q: f64| {
        let mut sorted = p.to_vec();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total: f64 = sorted.iter().map(|x| x.1).sum();
        let mut acc = 0.0;
        for (v, w) in &sorted {
            acc += w;
            if acc >= q * total {
                return *v;
            }
        }
        sorted.last().map_or(0.0, |x| x.0)
    };
    let pooled: Vec<(f64, f64)> = pr.iter().chain(&pc).copied().collect();
    let (lo, hi) = (quantile(&pooled, 0.01), quantile(&pooled, 0.99));
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        (values[0], values[values.len() - 1])
    };
    let width = (hi - lo) / BINS as f64;
    let bin = |p: &[(f64, f64)]| {
        let mut out = vec![0.0; BINS];
        let mut outside = 0.0;
        for &(v, w) in p {
            if v < lo || v > hi {
                outside += w;
                continue;
            }
            let i = (((v - lo) / width) as usize).min(BINS - 1);
            out[i] += w;
        }
        let total: f64 = p.iter().map(|x| x.1).sum();
        (out, if total > 0.0 { outside / total } else { 0.0 })
    };
    let ((r, ro), (c, co)) = (bin(&pr), bin(&pc));
    let labels = (0..BINS).map(|i| label(lo + width * i as f64)).collect();
    let note = (ro > 0.0 || co > 0.0).then(|| {
        format!(
            "clipped to [{}, {}] (the pooled 1st–99th percentiles): {:.1} % of the reference and {:.1} % of the batch lie outside",
            label(lo),
            label(hi),
            ro * 100.0,
            co * 100.0
        )
    });
    let total = |p: &[(f64, f64)]| p.iter().map(|x| x.1).sum::<f64>();
    let (tr, tc) = (total(&pr), total(&pc));
    let scale = |v: Vec<f64>, t: f64| {
        v.into_iter()
            .map(|x| if t > 0.0 { x / t } else { 0.0 })
            .collect()
    };
    (labels, scale(r, tr), scale(c, tc), note)
}

fn categorical_bars(reference: &ColumnProfile, current: &ColumnProfile) -> Bars {
    let (fr, fc) = (&reference.frequencies, &current.frequencies);
    let (nr, nc) = (fr.n.max(1) as f64, fc.n.max(1) as f64);
    let mut keys: Vec<&String> = fr.items.keys().chain(fc.items.keys()).collect();
    keys.sort();
    keys.dedup();
    let share = |f: &crate::profile::Frequencies, n: f64, k: &str| {
        f.items.get(k).copied().unwrap_or(0) as f64 / n
    };
    keys.sort_by(|a, b| {
        let wa = share(fr, nr, a).max(share(fc, nc, a));
        let wb = share(fr, nr, b).max(share(fc, nc, b));
        wb.total_cmp(&wa).then(a.cmp(b))
    });
    let shown: Vec<&String> = keys.iter().take(TOP_CATEGORIES).copied().collect();
    let mut labels: Vec<String> = shown.iter().map(|k| k.to_string()).collect();
    let mut r: Vec<f64> = shown.iter().map(|k| share(fr, nr, k)).collect();
    let mut c: Vec<f64> = shown.iter().map(|k| share(fc, nc, k)).collect();
    let (rs, cs) = (r.iter().sum::<f64>(), c.iter().sum::<f64>());
    let note = if keys.len() > TOP_CATEGORIES || rs < 0.9999 || cs < 0.9999 {
        labels.push("other".to_string());
        r.push((1.0 - rs).max(0.0));
        c.push((1.0 - cs).max(0.0));
        let kept = if fr.exact && fc.exact {
            "all counted exactly in the profiles".to_string()
        } else {
            format!(
                "profiles keep heavy hitters only (sketched: {} and {} of reference and batch values not kept)",
                fr.other(),
                fc.other()
            )
        };
        Some(format!(
            "top {} of {} categories shown, the rest as \"other\"; {kept}",
            shown.len(),
            keys.len()
        ))
    } else {
        None
    };
    (labels, r, c, note)
}

/// Opens a chart's `<figure>` and `<svg>` and draws its two axes. `frame` is
/// (width, height, left margin, bottom margin, top margin).
fn open_chart(
    s: &mut String,
    class: &str,
    column: &str,
    caption: &str,
    frame: (f64, f64, f64, f64, f64),
) {
    let (w, h, left, bottom, top) = frame;
    let _ = write!(
        s,
        "<figure class=\"{class}\" data-column=\"{}\"><svg width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{}\">",
        escape(column),
        escape(caption)
    );
    let _ = write!(
        s,
        "<line class=\"axis\" x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\"/><line class=\"axis\" x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\"/>",
        h - bottom,
        w - 4.0,
        h - bottom,
        h - bottom
    );
}

fn svg(column: &str, labels: &[String], r: &[f64], c: &[f64], caption: &str) -> String {
    let (w, h, left, bottom, top) = (520.0, 220.0, 44.0, 48.0, 10.0);
    let plot_h = h - bottom - top;
    let n = labels.len().max(1) as f64;
    let slot = (w - left - 8.0) / n;
    let max = r.iter().chain(c).copied().fold(0.0f64, f64::max).max(1e-9);
    let mut s = String::new();
    open_chart(&mut s, "chart", column, caption, (w, h, left, bottom, top));
    let _ = write!(
        s,
        "<text x=\"2\" y=\"{}\">{:.0}%</text><text x=\"2\" y=\"{}\">0%</text>",
        top + 8.0,
        max * 100.0,
        h - bottom
    );
    // Label every k-th slot so 50+ categories stay legible.
    let every = ((n / 12.0).ceil() as usize).max(1);
    for (i, label) in labels.iter().enumerate() {
        let x = left + slot * i as f64;
        let bar = (slot / 2.0 - 1.0).max(0.5);
        let hr = r.get(i).copied().unwrap_or(0.0) / max * plot_h;
        let hc = c.get(i).copied().unwrap_or(0.0) / max * plot_h;
        let _ = write!(
            s,
            "<rect class=\"ref\" x=\"{:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{hr:.1}\"><title>reference {}: {:.2}%</title></rect>",
            x + 0.5,
            h - bottom - hr,
            escape(label),
            r.get(i).copied().unwrap_or(0.0) * 100.0
        );
        let _ = write!(
            s,
            "<rect class=\"cur\" x=\"{:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{hc:.1}\"><title>batch {}: {:.2}%</title></rect>",
            x + 0.5 + bar,
            h - bottom - hc,
            escape(label),
            c.get(i).copied().unwrap_or(0.0) * 100.0
        );
        if i % every == 0 {
            let short: String = label.chars().take(10).collect();
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" transform=\"rotate(45 {:.1} {:.1})\">{}</text>",
                x + 2.0,
                h - bottom + 12.0,
                x + 2.0,
                h - bottom + 12.0,
                escape(&short)
            );
        }
    }
    let _ = write!(
        s,
        "<text x=\"{left}\" y=\"{}\" class=\"muted\">{}</text></svg><figcaption>{}</figcaption></figure>",
        h - 2.0,
        escape(column),
        escape(caption)
    );
    s
}

/// One past evaluation of a dataset, for its history.
#[derive(Debug, Clone)]
pub struct Past {
    /// Its line in the results log.
    pub seq: u64,
    /// When it was evaluated (RFC 3339), when known.
    pub evaluated_at: Option<String>,
    /// Its report.
    pub report: BatchReport,
}

fn head(out: &mut String, title: &str, refresh: Option<u32>) {
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/>");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>");
    if let Some(seconds) = refresh {
        let _ = write!(out, "<meta http-equiv=\"refresh\" content=\"{seconds}\"/>");
    }
    let _ = write!(
        out,
        "<title>{}</title><style>{STYLE}</style></head><body>",
        escape(title)
    );
}

/// A dataset's page: its latest batch (summary, checks, drift and charts) and
/// its history — each tested column's drift score over the stored batches and
/// the checks that failed in each. `history` is newest first; `refresh`
/// reloads the page every so many seconds (the live page).
pub fn render_dataset_page(
    dataset: &str,
    history: &[Past],
    profiles: Option<Profiles<'_>>,
    refresh: Option<u32>,
) -> String {
    let mut out = String::new();
    let title = format!("driftwatch — {dataset}");
    head(&mut out, &title, refresh);
    let _ = write!(out, "<h1>{}</h1>", escape(&title));
    let Some(latest) = history.first() else {
        out.push_str("<p class=\"muted\">No batch of this dataset has been evaluated yet.</p></body></html>\n");
        return out;
    };
    let _ = write!(
        out,
        "<p class=\"muted\">Latest batch: #{} evaluated {}; {} stored batch(es) below.</p>",
        latest.seq,
        escape(latest.evaluated_at.as_deref().unwrap_or("—")),
        history.len()
    );
    render_batch(&mut out, &latest.report, profiles);
    let oldest_first: Vec<&Past> = history.iter().rev().collect();
    if let Some(drift) = &latest.report.drift {
        // (`tested` is not part of the JSON; a tested column has a test.)
        let tested: Vec<_> = drift.columns.iter().filter(|c| c.test.is_some()).collect();
        if !tested.is_empty() && history.len() > 1 {
            out.push_str("<h2>Drift over the last batches</h2><div class=\"charts\">");
            for column in tested {
                let p_value = column.test.is_some_and(|t| t.is_p_value_test());
                let series: Vec<(u64, f64)> = oldest_first
                    .iter()
                    .filter_map(|past| {
                        let c = past
                            .report
                            .drift
                            .as_ref()?
                            .columns
                            .iter()
                            .find(|c| c.column == column.column)?;
                        let y = if p_value { c.p_value } else { c.statistic }?;
                        y.is_finite().then_some((past.seq, y))
                    })
                    .collect();
                out.push_str(&line_chart(
                    &column.column,
                    &series,
                    column.threshold,
                    if p_value { "p-value" } else { "statistic" },
                ));
            }
            out.push_str("</div>");
        }
    }
    // Each `anomaly` check's metric over the stored batches, with the band
    // each batch was judged against.
    let anomaly_checks: Vec<&str> = latest
        .report
        .checks
        .iter()
        .filter(|c| c.kind == "anomaly")
        .map(|c| c.name.as_str())
        .collect();
    if !anomaly_checks.is_empty() && history.len() > 1 {
        out.push_str("<h2>Anomaly checks over the last batches</h2><div class=\"charts\">");
        for name in anomaly_checks {
            let series: Vec<BandPoint> = oldest_first
                .iter()
                .filter_map(|past| {
                    let c = past.report.checks.iter().find(|c| c.name == name)?;
                    let observed = c.observed.as_f64()?;
                    let edge = |key: &str| c.expected.get(key).and_then(serde_json::Value::as_f64);
                    Some(BandPoint {
                        seq: past.seq,
                        observed,
                        low: edge("low"),
                        high: edge("high"),
                        failed: c.status.is_problem(),
                    })
                })
                .collect();
            out.push_str(&band_chart(name, &series));
        }
        out.push_str("</div>");
    }
    out.push_str("<h2>Check failures by batch</h2><table class=\"history\"><thead><tr><th>#</th><th>evaluated</th><th>source</th><th>rows</th><th>outcome</th><th>checks not passing</th><th>dataset drift</th></tr></thead><tbody>");
    for past in history {
        let r = &past.report;
        let failing: Vec<&str> = r
            .checks
            .iter()
            .filter(|c| c.status.is_problem())
            .map(|c| c.name.as_str())
            .collect();
        let _ = write!(
            out,
            "<tr><td class=\"num\">{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td></tr>",
            past.seq,
            escape(past.evaluated_at.as_deref().unwrap_or("—")),
            escape(&r.source),
            r.rows.map_or("—".to_string(), |n| n.to_string()),
            if r.passed { "pass" } else { "fail" },
            r.outcome(),
            escape(&if failing.is_empty() {
                "—".to_string()
            } else {
                failing.join(", ")
            }),
            match r.drift.as_ref() {
                Some(d) if d.error.is_none() && d.message.is_none() => {
                    if d.dataset_drift { "yes" } else { "no" }
                }
                _ => "—",
            },
        );
    }
    out.push_str("</tbody></table></body></html>\n");
    out
}

/// A row of the index page.
#[derive(Debug, Clone)]
pub struct IndexRow {
    /// Dataset.
    pub dataset: String,
    /// Batches evaluated.
    pub evaluated: u64,
    /// Batches failed.
    pub failed: u64,
    /// Batches that could not be read.
    pub errored: u64,
    /// When the latest batch was evaluated.
    pub last_evaluated_at: Option<String>,
    /// The latest batch: passed?
    pub latest_passed: Option<bool>,
    /// The latest batch: dataset drift?
    pub latest_drift: Option<bool>,
}

/// The agent's index page: every dataset with its latest status, each linking
/// to its page (`report/NAME`, relative, so it works behind any prefix).
pub fn render_index(rows: &[IndexRow], refresh: Option<u32>) -> String {
    let mut out = String::new();
    head(&mut out, "driftwatch", refresh);
    out.push_str("<h1>driftwatch</h1>");
    if rows.is_empty() {
        out.push_str("<p class=\"muted\">No dataset yet: no rule file has matched a batch.</p>");
    }
    out.push_str("<table class=\"datasets\"><thead><tr><th>dataset</th><th>latest</th><th>dataset drift</th><th>evaluated</th><th>failed</th><th>errored</th><th>last evaluated</th></tr></thead><tbody>");
    for r in rows {
        let (class, latest) = match r.latest_passed {
            Some(true) => ("pass", "passed"),
            Some(false) => ("fail", "failed"),
            None => ("muted", "—"),
        };
        let _ = write!(
            out,
            "<tr><td><a href=\"report/{}\">{}</a></td><td class=\"{class}\">{latest}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            escape(&percent_encode(&r.dataset)),
            escape(&r.dataset),
            match r.latest_drift {
                Some(true) => "yes",
                Some(false) => "no",
                None => "—",
            },
            r.evaluated,
            r.failed,
            r.errored,
            escape(r.last_evaluated_at.as_deref().unwrap_or("—")),
        );
    }
    out.push_str("</tbody></table></body></html>\n");
    out
}

/// Percent-encodes a URL path segment.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A small line chart of a column's drift score per batch, with the
/// threshold as a dashed line.
/// One batch of an `anomaly` check's chart.
struct BandPoint {
    seq: u64,
    observed: f64,
    low: Option<f64>,
    high: Option<f64>,
    failed: bool,
}

/// An `anomaly` check's observed value per batch (a line, failed batches as
/// filled marks) over the expected band each was judged against (shaded;
/// absent while the check was learning).
fn band_chart(check: &str, series: &[BandPoint]) -> String {
    let (w, h, left, bottom, top) = (520.0, 180.0, 52.0, 34.0, 10.0);
    let plot_h = h - bottom - top;
    let plot_w = w - left - 10.0;
    let values = series
        .iter()
        .flat_map(|p| [Some(p.observed), p.low, p.high])
        .flatten()
        .filter(|v| v.is_finite());
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let (lo, hi) = if lo.is_finite() && hi > lo {
        (lo, hi)
    } else {
        (lo.min(0.0), lo.max(0.0) + 1.0)
    };
    let x = |i: usize| {
        left + plot_w
            * if series.len() > 1 {
                i as f64 / (series.len() - 1) as f64
            } else {
                0.5
            }
    };
    let y = |v: f64| h - bottom - (v.clamp(lo, hi) - lo) / (hi - lo) * plot_h;
    let caption = format!(
        "{check} — observed per batch (#{} to #{}); shaded: the expected band",
        series.first().map_or(0, |p| p.seq),
        series.last().map_or(0, |p| p.seq),
    );
    let mut s = String::new();
    open_chart(&mut s, "trend", check, &caption, (w, h, left, bottom, top));
    let _ = write!(
        s,
        "<text x=\"2\" y=\"{}\">{}</text><text x=\"2\" y=\"{}\">{}</text><text x=\"{left}\" y=\"{}\">batch #</text>",
        top + 8.0,
        number(Some(hi)),
        h - bottom,
        number(Some(lo)),
        h - 4.0
    );
    // The band: one polygon per run of batches that had one.
    let mut run: Vec<(usize, f64, f64)> = Vec::new();
    let flush = |run: &mut Vec<(usize, f64, f64)>, s: &mut String| {
        if run.len() > 1 {
            let upper = run
                .iter()
                .map(|(i, _, high)| format!("{:.1},{:.1}", x(*i), y(*high)));
            let lower = run
                .iter()
                .rev()
                .map(|(i, low, _)| format!("{:.1},{:.1}", x(*i), y(*low)));
            let points: Vec<String> = upper.chain(lower).collect();
            let _ = write!(
                s,
                "<polygon class=\"band\" style=\"fill: var(--ref); opacity: 0.35\" points=\"{}\"/>",
                points.join(" ")
            );
        }
        run.clear();
    };
    for (i, p) in series.iter().enumerate() {
        match (p.low, p.high) {
            (None, None) => flush(&mut run, &mut s),
            (low, high) => run.push((i, low.unwrap_or(lo), high.unwrap_or(hi))),
        }
    }
    flush(&mut run, &mut s);
    let path: Vec<String> = series
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{:.1},{:.1}", x(i), y(p.observed)))
        .collect();
    let _ = write!(
        s,
        "<polyline fill=\"none\" stroke=\"currentColor\" class=\"cur\" style=\"stroke: var(--cur)\" stroke-width=\"2\" points=\"{}\"/>",
        path.join(" ")
    );
    for (i, p) in series.iter().enumerate() {
        let band = match (p.low, p.high) {
            (None, None) => "learning".to_string(),
            (low, high) => format!(
                "expected {} to {}",
                low.map_or("—".to_string(), |v| number(Some(v))),
                high.map_or("—".to_string(), |v| number(Some(v)))
            ),
        };
        let _ = write!(
            s,
            "<circle class=\"{}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"{}\"><title>#{}: {} ({band})</title></circle>",
            if p.failed { "anomaly" } else { "cur" },
            x(i),
            y(p.observed),
            if p.failed { 5 } else { 3 },
            p.seq,
            number(Some(p.observed)),
        );
    }
    let _ = write!(
        s,
        "</svg><figcaption>{}</figcaption></figure>",
        escape(&caption)
    );
    s
}

fn line_chart(column: &str, series: &[(u64, f64)], threshold: Option<f64>, what: &str) -> String {
    let (w, h, left, bottom, top) = (520.0, 180.0, 52.0, 34.0, 10.0);
    let plot_h = h - bottom - top;
    let plot_w = w - left - 10.0;
    let max = series
        .iter()
        .map(|p| p.1)
        .chain(threshold)
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let x = |i: usize| {
        left + plot_w
            * if series.len() > 1 {
                i as f64 / (series.len() - 1) as f64
            } else {
                0.5
            }
    };
    let y = |v: f64| h - bottom - v / max * plot_h;
    let caption = format!(
        "{column} — drift {what} per batch (#{} to #{}){}",
        series.first().map_or(0, |p| p.0),
        series.last().map_or(0, |p| p.0),
        threshold.map_or(String::new(), |t| format!(
            "; dashed: threshold {}",
            number(Some(t))
        ))
    );
    let mut s = String::new();
    open_chart(&mut s, "trend", column, &caption, (w, h, left, bottom, top));
    let _ = write!(
        s,
        "<text x=\"2\" y=\"{}\">{}</text><text x=\"2\" y=\"{}\">0</text><text x=\"{left}\" y=\"{}\">batch #</text>",
        top + 8.0,
        number(Some(max)),
        h - bottom,
        h - 4.0
    );
    if let Some(t) = threshold {
        let _ = write!(
            s,
            "<line class=\"axis\" stroke-dasharray=\"4 3\" x1=\"{left}\" y1=\"{:.1}\" x2=\"{}\" y2=\"{:.1}\"/>",
            y(t),
            w - 4.0,
            y(t)
        );
    }
    let path: Vec<String> = series
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{:.1},{:.1}", x(i), y(p.1)))
        .collect();
    let _ = write!(
        s,
        "<polyline fill=\"none\" stroke=\"currentColor\" class=\"cur\" style=\"stroke: var(--cur)\" stroke-width=\"2\" points=\"{}\"/>",
        path.join(" ")
    );
    for (i, p) in series.iter().enumerate() {
        let _ = write!(
            s,
            "<circle class=\"cur\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\"><title>#{}: {}</title></circle>",
            x(i),
            y(p.1),
            p.0,
            number(Some(p.1))
        );
    }
    let _ = write!(
        s,
        "</svg><figcaption>{}</figcaption></figure>",
        escape(&caption)
    );
    s
}

/// A ` title="…"` naming the p-value's small-sample method (Fisher's exact,
/// exact conditional, Monte Carlo; issue 17), empty for a χ² p-value.
fn small_sample_title(c: &crate::drift::compare::ColumnDrift) -> String {
    match c.p_value_method {
        Some(m) if m != crate::drift::PValueMethod::Asymptotic => {
            format!(" title=\"{}\"", escape(m.describe()))
        }
        _ => String::new(),
    }
}
