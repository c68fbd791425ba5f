//! Comparing a batch's profile with a reference profile: choosing each
//! column's test, running it on what the profiles hold, correcting p-values
//! for multiple tests, and deciding dataset drift.
//!
//! **Exact and sketched paths.** When both profiles still hold a column's
//! exact values (at most 10,000 finite values each), sample tests run on them
//! and match scipy exactly. Otherwise `ks` and `wasserstein` run on the
//! quantile sketches' weighted points: the KS statistic is then within
//! `ε_ref + ε_cur` (the sketches' rank-error bounds, given in the message) of
//! the exact one, and its p-value uses the asymptotic Kolmogorov distribution
//! (scipy's `ks_2samp(method='asymp')`). Tests that need raw samples
//! (`anderson`, `cramer_von_mises`, `mannw`, `energy`, `t_test`) are reported
//! as not applicable on the sketched path. Categorical columns are exact
//! while both profiles count every category (up to `max_categories`); past
//! it their tests run on the heavy hitters plus one "other" bin per side,
//! with the bound of [`sketched_bound`] where the statistic has one. Each
//! tested column says which path it took ([`DistributionPath`]).
//!
//! **What is not tested, and why.** ID-like and constant columns (evidence
//! from both profiles, [`Skipped`]) are skipped unless forced; columns of
//! unprofiled types, and time columns nobody named, are listed in
//! [`DriftReport::not_tested`]. Each tested column also reports what moved
//! in its own units ([`Effect`]).
//!
//! **Binning.** Categorical columns, and numeric columns whose profiles still
//! count every distinct value (at most 1,000), get one bin per value, like
//! Evidently. Other numeric columns are binned by the reference's deciles
//! (from its sketch). Evidently instead bins numeric columns equal-width over
//! both samples pooled, so numeric `psi`/`jensenshannon` values differ from
//! Evidently's there; the default test for such columns is `wasserstein`
//! anyway.
//!
//! **Edge cases** get a defined answer: a column missing from the batch, a
//! type change, or a batch column with no finite value is *drifted* with a
//! message and no statistic; an empty batch or a reference without values for
//! a column is *not tested* (`drifted: false`, message) and does not count in
//! the drifted share.

use std::collections::BTreeMap;

use serde::Serialize;

use super::interpolated::{self, Cdf, Point};
use super::{
    ColumnKind as TestColumnKind, TestKind, TestOutcome, chisquare, default_test,
    default_threshold, hellinger, is_drift, jensenshannon, kl_div, kolmogorov_two_sided_sf, psi,
    tvd, z_test,
};
use crate::profile::{ColumnKind, ColumnProfile, DatasetProfile};
use crate::rules::{Correction, DriftConfig, DriftDefaults, Severity};

/// The drift verdict of one column.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ColumnDrift {
    /// The column.
    pub column: String,
    /// `numeric` or `categorical`.
    #[serde(rename = "type")]
    pub column_type: String,
    /// The test run; null when none could be.
    pub test: Option<TestKind>,
    /// The test statistic (the distance for distance tests); null when not computed or infinite.
    pub statistic: Option<f64>,
    /// The p-value (p-value tests only).
    pub p_value: Option<f64>,
    /// The p-value after the multiple-testing correction (null without one).
    pub p_value_adjusted: Option<f64>,
    /// The threshold the statistic or p-value was compared with.
    pub threshold: Option<f64>,
    /// Whether the column drifted.
    pub drifted: bool,
    /// Notes: the path taken (sketched), edge cases, infinite statistics.
    pub message: Option<String>,
    /// How the column's distributions were read from the profiles: `exact`
    /// (every value or category with its exact count) or `sketched` (a
    /// quantile sketch, or heavy hitters plus "other"); null when untested.
    #[serde(default)]
    pub path: Option<DistributionPath>,
    /// Why the column was not tested although it could have been: `id-like`
    /// or `constant`, with the evidence in `message` (issue 17). Null
    /// otherwise. `overrides.COLUMN.force: true` tests it anyway.
    #[serde(default)]
    pub skipped: Option<Skipped>,
    /// What moved, in the data's own units: the median shift (numeric) or
    /// the categories whose share changed most (categorical). Null when no
    /// test ran.
    #[serde(default)]
    pub effect: Option<Effect>,
    /// The scale a temporal column was tested on (e.g. `seconds since
    /// 1970-01-01T00:00:00Z`); null for plain numbers and categories.
    #[serde(default)]
    pub unit: Option<String>,
    /// How the p-value of `chisquare_homogeneity` / `g_test` was computed:
    /// `asymptotic` (χ²), or — when expected counts are too small for it
    /// (Cochran's rule) — `fisher_exact` (2×2), `exact_conditional` or
    /// `monte_carlo` (2×k), or `asymptotic_over_budget`. Absent for other
    /// tests (issue 17).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value_method: Option<super::PValueMethod>,
    /// Whether this column counts in the drifted share.
    #[serde(skip)]
    pub tested: bool,
}

/// What moved in a column, in its own units (issue 17: a statistic alone
/// does not say what changed).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Effect {
    /// Numeric columns: the reference's and the batch's medians and the
    /// shift (batch − reference), on the column's scale (epoch units for
    /// temporal columns). Exact while the profiles hold exact values or
    /// value counts; from the quantile sketches (within their rank error)
    /// otherwise.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub median: Option<MedianShift>,
    /// Categorical columns: the categories whose share of non-null values
    /// changed most (at most [`TOP_MOVING_CATEGORIES`]), largest change first.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub categories: Vec<CategoryShift>,
    /// The same, readable: `median 12 → 15.5 (+3.5)`, `median +1.5 h
    /// (2024-01-01T00:00:00Z → …)`, ``C3 6.2 % → 9.8 % (+3.6 pp), …``.
    pub summary: String,
}

/// Reference and batch medians of a numeric column.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct MedianShift {
    /// The reference's median.
    pub reference: f64,
    /// The batch's median.
    pub batch: f64,
    /// `batch − reference`.
    pub shift: f64,
}

/// A category's share of non-null values on each side.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct CategoryShift {
    /// The category (`other` for the values a sketched profile no longer
    /// attributes to a category).
    pub category: String,
    /// Its share of the reference's non-null values, in [0, 1].
    pub reference_share: f64,
    /// Its share of the batch's non-null values, in [0, 1].
    pub batch_share: f64,
}

/// Categories listed in an [`Effect`].
pub const TOP_MOVING_CATEGORIES: usize = 3;

/// Why a testable column was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum Skipped {
    /// Nearly every value distinct (and, for numbers, increasing row by
    /// row) on both sides: an identifier, which "drifts" on every batch.
    #[serde(rename = "id-like")]
    IdLike,
    /// One and the same value on both sides: nothing to compare.
    #[serde(rename = "constant")]
    Constant,
}

/// Share of distinct values from which a column is ID-like.
pub const ID_LIKE_DISTINCT_RATIO: f64 = 0.95;

/// Fewest non-null values on a side for ID-like evidence (in a small sample
/// every value of a category column may be distinct by chance).
pub const ID_LIKE_MIN_VALUES: u64 = 50;

/// How a column's distribution was read from its profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DistributionPath {
    /// Both profiles hold every value (or category) with its exact count:
    /// statistics equal a computation on the raw data.
    Exact,
    /// At least one profile holds a summary: statistics are within the
    /// documented bound (given in the column's `message`).
    Sketched,
}

impl DistributionPath {
    /// `exact` or `sketched`.
    pub fn name(self) -> &'static str {
        match self {
            DistributionPath::Exact => "exact",
            DistributionPath::Sketched => "sketched",
        }
    }
}

/// The drift section of a batch report.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct DriftReport {
    /// The reference profile file.
    pub reference: String,
    /// Whether the dataset drifted (share of drifted columns ≥ threshold).
    pub dataset_drift: bool,
    /// Drifted columns / tested columns; null when none was tested.
    pub drifted_share: Option<f64>,
    /// The `drift_share` threshold.
    pub drift_share_threshold: f64,
    /// `none`, `bonferroni` or `fdr_bh`.
    pub correction: String,
    /// `error` or `warn`.
    pub severity: Severity,
    /// Why drift could not be computed at all (e.g. an unreadable reference).
    pub error: Option<String>,
    /// A note that is not an error, e.g. a rolling reference still filling up.
    pub message: Option<String>,
    /// One entry per column, in name order.
    pub columns: Vec<ColumnDrift>,
    /// Columns left out of drift testing for their type, with the type and
    /// why (issue 17: nothing is left out silently).
    #[serde(default)]
    pub not_tested: Vec<NotTested>,
    /// The sequential detector (`drift.sequential`): each column's
    /// statistic after this window and the threshold; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequential: Option<super::sequential::SequentialSection>,
}

/// A column not tested for its type: not profiled, or temporal and not named.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct NotTested {
    /// The column.
    pub column: String,
    /// `type: reason`, e.g. `binary: binary values have neither an order …`.
    pub reason: String,
}

impl DriftReport {
    /// A drift section that tested no column.
    fn untested(reference: String, config: &DriftConfig) -> Self {
        Self {
            reference,
            dataset_drift: false,
            drifted_share: None,
            drift_share_threshold: config.drift_share,
            correction: correction_name(config.correction).to_string(),
            severity: config.severity,
            error: None,
            message: None,
            columns: Vec::new(),
            not_tested: Vec::new(),
            sequential: None,
        }
    }

    /// A drift section for a reference that could not be used.
    pub fn failed(reference: String, config: &DriftConfig, error: String) -> Self {
        Self {
            error: Some(error),
            ..Self::untested(reference, config)
        }
    }

    /// A drift section with nothing to compare yet: a rolling reference that
    /// has `have` of its `need` batches (none is tested until it has one).
    pub fn warming_up(reference: String, config: &DriftConfig, have: usize, need: usize) -> Self {
        Self {
            message: Some(format!(
                "rolling reference has {have} of {need} batches; drift is tested once it has at least one"
            )),
            ..Self::untested(reference, config)
        }
    }
}

fn correction_name(c: Correction) -> &'static str {
    match c {
        Correction::None => "none",
        Correction::Bonferroni => "bonferroni",
        Correction::FdrBh => "fdr_bh",
    }
}

/// Compares `current` with `reference` under `config`.
pub fn compare(
    reference_name: &str,
    reference: &DatasetProfile,
    current: &DatasetProfile,
    config: &DriftConfig,
) -> DriftReport {
    let (columns, not_tested) = columns_to_test(reference, current, config);
    let mut results: Vec<ColumnDrift> = columns
        .iter()
        .map(|name| {
            let overrides = config.overrides.get(name).copied().unwrap_or((None, None));
            column_drift(
                name,
                reference.columns.get(name),
                current.columns.get(name),
                overrides,
                current.rows,
                config.defaults,
                config.forced.contains(name),
            )
        })
        .collect();
    apply_correction(&mut results, config.correction);
    let tested = results.iter().filter(|c| c.tested).count();
    let drifted = results.iter().filter(|c| c.tested && c.drifted).count();
    let drifted_share = (tested > 0).then(|| drifted as f64 / tested as f64);
    DriftReport {
        reference: reference_name.to_string(),
        dataset_drift: drifted_share.is_some_and(|s| s >= config.drift_share),
        drifted_share,
        drift_share_threshold: config.drift_share,
        correction: correction_name(config.correction).to_string(),
        severity: config.severity,
        error: None,
        message: None,
        columns: results,
        not_tested,
        sequential: None,
    }
}

/// The columns to test, and those left out with why: columns whose type is
/// not profiled (either side), and — unless `columns` or `overrides` name
/// them — temporal columns, which move with every batch of a time-ordered
/// dataset (Evidently's default leaves datetime columns out too, so
/// Evidently-compatible verdicts do not change).
fn columns_to_test(
    reference: &DatasetProfile,
    current: &DatasetProfile,
    config: &DriftConfig,
) -> (Vec<String>, Vec<NotTested>) {
    let mut not_tested = Vec::new();
    let named = config.columns.is_some();
    let candidates: Vec<String> = match &config.columns {
        Some(c) => c.clone(),
        None => reference
            .columns
            .keys()
            .chain(current.unprofiled.keys())
            .cloned()
            .collect::<std::collections::BTreeSet<String>>()
            .into_iter()
            .collect(),
    };
    let mut columns = Vec::new();
    for name in candidates {
        let unprofiled = current
            .unprofiled
            .get(&name)
            .or_else(|| reference.unprofiled.get(&name));
        if let Some(reason) = unprofiled
            && !reference.columns.contains_key(&name)
        {
            not_tested.push(NotTested {
                column: name,
                reason: reason.clone(),
            });
            continue;
        }
        let temporal = reference
            .columns
            .get(&name)
            .filter(|p| crate::profile::epoch_unit(&p.data_type).is_some());
        if let Some(p) = temporal
            && !named
            && !config.overrides.contains_key(&name)
            && !config.forced.contains(&name)
        {
            not_tested.push(NotTested {
                column: name,
                reason: format!(
                    "{}: a time column is tested only when `columns` or `overrides` name it (it moves with every batch of time-ordered data)",
                    p.data_type
                ),
            });
            continue;
        }
        columns.push(name);
    }
    (columns, not_tested)
}

fn untested(name: &str, column_type: &str, drifted: bool, message: String) -> ColumnDrift {
    ColumnDrift {
        column: name.to_string(),
        column_type: column_type.to_string(),
        test: None,
        statistic: None,
        p_value: None,
        p_value_adjusted: None,
        threshold: None,
        drifted,
        message: Some(message),
        path: None,
        skipped: None,
        effect: None,
        unit: None,
        p_value_method: None,
        tested: drifted,
    }
}

fn kind_name(kind: ColumnKind) -> &'static str {
    match kind {
        ColumnKind::Numeric => "numeric",
        ColumnKind::Categorical => "categorical",
    }
}

fn column_drift(
    name: &str,
    reference: Option<&ColumnProfile>,
    current: Option<&ColumnProfile>,
    (test_override, threshold_override): (Option<TestKind>, Option<f64>),
    current_rows: u64,
    defaults: DriftDefaults,
    forced: bool,
) -> ColumnDrift {
    let Some(reference) = reference else {
        return untested(
            name,
            "unknown",
            false,
            "not in the reference profile".to_string(),
        );
    };
    let type_name = kind_name(reference.kind);
    if current_rows == 0 {
        return untested(
            name,
            type_name,
            false,
            "empty batch: not tested".to_string(),
        );
    }
    let Some(current) = current else {
        return untested(
            name,
            type_name,
            true,
            "column missing in the batch (or of an unprofiled type)".to_string(),
        );
    };
    if current.kind != reference.kind {
        return untested(
            name,
            type_name,
            true,
            format!(
                "type changed from {} ({}) to {} ({})",
                type_name,
                reference.data_type,
                kind_name(current.kind),
                current.data_type
            ),
        );
    }
    let (ref_n, cur_n) = (values_counted(reference), values_counted(current));
    if ref_n == 0 {
        return untested(
            name,
            type_name,
            false,
            "the reference has no non-null value: not tested".to_string(),
        );
    }
    if cur_n == 0 {
        return untested(
            name,
            type_name,
            true,
            "no non-null (finite) value in the batch".to_string(),
        );
    }
    if !forced && let Some((skipped, evidence)) = skip_evidence(name, reference, current) {
        let mut result = untested(name, type_name, false, evidence);
        result.skipped = Some(skipped);
        return result;
    }
    let distinct = distinct_union(reference, current);
    let test_kind = test_override.unwrap_or_else(|| {
        let k = match reference.kind {
            ColumnKind::Numeric => TestColumnKind::Numerical,
            ColumnKind::Categorical => TestColumnKind::Categorical,
        };
        match defaults {
            DriftDefaults::Evidently => default_test(k, ref_n, distinct),
            DriftDefaults::Sound => super::sound_default_test(k, ref_n, distinct),
            DriftDefaults::PValues => super::p_value_default_test(k, distinct),
        }
    });
    let threshold = threshold_override.unwrap_or_else(|| default_threshold(test_kind));
    let mut result = ColumnDrift {
        column: name.to_string(),
        column_type: type_name.to_string(),
        test: Some(test_kind),
        statistic: None,
        p_value: None,
        p_value_adjusted: None,
        threshold: Some(threshold),
        drifted: false,
        message: None,
        path: Some(distribution_path(test_kind, reference, current)),
        skipped: None,
        effect: effect(reference, current),
        unit: crate::profile::epoch_unit(&reference.data_type).map(|u| u.describe().to_string()),
        p_value_method: None,
        tested: true,
    };
    match run_test(test_kind, reference, current) {
        Ok((outcome, note, method)) => {
            result.p_value_method = method;
            result.drifted = is_drift(test_kind, &outcome, threshold);
            result.p_value = outcome.p_value;
            if outcome.statistic.is_finite() {
                result.statistic = Some(outcome.statistic);
                result.message = note;
            } else {
                result.message = Some(match note {
                    Some(n) => format!("statistic is {}; {n}", outcome.statistic),
                    None => format!(
                        "statistic is {} (a category absent from the reference)",
                        outcome.statistic
                    ),
                });
            }
        }
        Err(message) => {
            result.tested = false;
            result.path = None;
            result.effect = None;
            result.message = Some(message);
        }
    }
    result
}

/// Whether the column is ID-like or constant on *both* sides, with the
/// evidence as a message. One side alone is not enough: a reference of ids
/// and a batch with repeated values is a change worth testing, and so is a
/// constant that changes value.
fn skip_evidence(
    name: &str,
    reference: &ColumnProfile,
    current: &ColumnProfile,
) -> Option<(Skipped, String)> {
    let force = format!("; set `overrides.{name}.force: true` to test it");
    if let (Some(a), Some(b)) = (single_value(reference), single_value(current))
        && a == b
    {
        return Some((
            Skipped::Constant,
            format!("skipped: constant — the one value `{a}` in reference and batch{force}"),
        ));
    }
    let (r, c) = (id_evidence(reference)?, id_evidence(current)?);
    Some((
        Skipped::IdLike,
        format!("skipped: id-like — reference {r}; batch {c}{force}"),
    ))
}

/// The column's only non-null (finite) value, when it has exactly one.
fn single_value(p: &ColumnProfile) -> Option<String> {
    match (&p.kind, &p.numeric) {
        (ColumnKind::Numeric, Some(s)) => {
            let (lo, hi) = (s.min?, s.max?);
            (lo == hi && s.nan == 0 && s.pos_inf == 0 && s.neg_inf == 0).then(|| lo.to_string())
        }
        _ => {
            let f = &p.frequencies;
            if f.exact && f.items.len() == 1 {
                f.items.keys().next().cloned()
            } else {
                None
            }
        }
    }
}

/// ID-like evidence of one side: at least [`ID_LIKE_MIN_VALUES`] values, at
/// least [`ID_LIKE_DISTINCT_RATIO`] of them distinct, and for numbers
/// either increasing row by row or of an integer type (a continuous
/// measurement is distinct too, but neither a sequence nor integers).
fn id_evidence(p: &ColumnProfile) -> Option<String> {
    let n = values_counted(p);
    if n < ID_LIKE_MIN_VALUES {
        return None;
    }
    let (distinct, exact) = p.distinct_values();
    let ratio = (distinct / n as f64).min(1.0);
    if ratio < ID_LIKE_DISTINCT_RATIO {
        return None;
    }
    let counted = if exact {
        format!("{distinct:.0} distinct of {n} values")
    } else {
        format!("≈ {distinct:.0} distinct (HLL estimate) of {n} values")
    };
    match p.kind {
        ColumnKind::Numeric => {
            if p.numeric.as_ref()?.increasing == Some(true) {
                Some(format!(
                    "{:.1} % distinct ({counted}), increasing row by row",
                    ratio * 100.0
                ))
            } else if is_integer_type(&p.data_type) {
                // Shuffled row ids and random numeric ids: the same
                // distinct-share rule as string ids (an integer measurement
                // ≥ 95 % distinct is skipped too; `force` tests it).
                Some(format!(
                    "{:.1} % distinct ({counted}), integer-typed ({}), not ordered",
                    ratio * 100.0,
                    p.data_type
                ))
            } else {
                None
            }
        }
        ColumnKind::Categorical => Some(format!("{:.1} % distinct ({counted})", ratio * 100.0)),
    }
}

/// Whether the column's type is a plain integer (`int8` … `uint64`):
/// temporal columns are integers on their epoch scale but distinct event
/// times are not identifiers, and floats and decimals are measurements.
fn is_integer_type(data_type: &str) -> bool {
    matches!(
        data_type,
        "int8" | "int16" | "int32" | "int64" | "uint8" | "uint16" | "uint32" | "uint64"
    )
}

/// What moved between the two profiles, in the column's units.
fn effect(reference: &ColumnProfile, current: &ColumnProfile) -> Option<Effect> {
    match reference.kind {
        ColumnKind::Numeric => {
            let (r, c) = (median(reference)?, median(current)?);
            let shift = c - r;
            let summary = match crate::profile::epoch_unit(&reference.data_type) {
                Some(u) => format!(
                    "median {} ({} → {})",
                    u.format_difference(shift),
                    u.format_value(r),
                    u.format_value(c)
                ),
                None => format!(
                    "median {} → {} ({})",
                    short(r),
                    short(c),
                    short_signed(shift)
                ),
            };
            Some(Effect {
                median: Some(MedianShift {
                    reference: r,
                    batch: c,
                    shift,
                }),
                categories: Vec::new(),
                summary,
            })
        }
        ColumnKind::Categorical => {
            let (fr, fc) = (&reference.frequencies, &current.frequencies);
            if fr.n == 0 || fc.n == 0 {
                return None;
            }
            let share = |f: &crate::profile::Frequencies, k: &str| {
                f.items.get(k).copied().unwrap_or(0) as f64 / f.n as f64
            };
            let mut moved: Vec<CategoryShift> = fr
                .items
                .keys()
                .chain(fc.items.keys())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .map(|k| CategoryShift {
                    category: k.clone(),
                    reference_share: share(fr, k),
                    batch_share: share(fc, k),
                })
                .collect();
            if !(fr.exact && fc.exact) {
                moved.push(CategoryShift {
                    category: "other".to_string(),
                    reference_share: fr.other() as f64 / fr.n as f64,
                    batch_share: fc.other() as f64 / fc.n as f64,
                });
            }
            let change = |c: &CategoryShift| (c.batch_share - c.reference_share).abs();
            // Largest change first; ties by name, so the order is stable.
            moved.sort_by(|a, b| {
                change(b)
                    .total_cmp(&change(a))
                    .then(a.category.cmp(&b.category))
            });
            moved.truncate(TOP_MOVING_CATEGORIES);
            let summary = moved
                .iter()
                .map(|c| {
                    format!(
                        "{} {:.1} % → {:.1} % ({:+.1} pp)",
                        c.category,
                        c.reference_share * 100.0,
                        c.batch_share * 100.0,
                        (c.batch_share - c.reference_share) * 100.0
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            Some(Effect {
                median: None,
                categories: moved,
                summary,
            })
        }
    }
}

/// The median of a numeric profile's finite values: exact (numpy's, the
/// mean of the two middle values for an even count) from exact values,
/// else the quantile sketch's (exact from value counts).
fn median(p: &ColumnProfile) -> Option<f64> {
    let s = p.numeric.as_ref()?;
    if let Some(v) = &s.exact_values
        && !v.is_empty()
    {
        let mut v = v.clone();
        v.sort_by(f64::total_cmp);
        let m = v.len() / 2;
        return Some(if v.len() % 2 == 1 {
            v[m]
        } else {
            (v[m - 1] + v[m]) / 2.0
        });
    }
    s.quantiles().quantile(0.5)
}

/// A number with at most 4 significant decimals, trailing zeros dropped.
fn short(v: f64) -> String {
    let text = format!("{v:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_string()
    } else {
        text.to_string()
    }
}

fn short_signed(v: f64) -> String {
    if v >= 0.0 {
        format!("+{}", short(v))
    } else {
        short(v)
    }
}

/// Whether `kind` runs on exact data for these two profiles.
fn distribution_path(
    kind: TestKind,
    reference: &ColumnProfile,
    current: &ColumnProfile,
) -> DistributionPath {
    let exact = match reference.kind {
        ColumnKind::Categorical => reference.frequencies.exact && current.frequencies.exact,
        ColumnKind::Numeric => {
            let both = |f: fn(&crate::profile::NumericStats) -> bool| {
                reference.numeric.as_ref().is_some_and(f) && current.numeric.as_ref().is_some_and(f)
            };
            let samples = both(|s| s.exact_values.is_some());
            let domain = both(|s| s.small_domain.is_some());
            match kind {
                // Value counts are the distribution; deciles of a sketch are not.
                TestKind::Ks | TestKind::Wasserstein => samples || domain,
                TestKind::Jensenshannon
                | TestKind::Psi
                | TestKind::KlDiv
                | TestKind::Hellinger
                | TestKind::Tvd
                | TestKind::Chisquare
                | TestKind::ChisquareHomogeneity
                | TestKind::GTest
                | TestKind::Z => domain,
                _ => samples,
            }
        }
    };
    if exact {
        DistributionPath::Exact
    } else {
        DistributionPath::Sketched
    }
}

/// Finite non-null values (numeric) or non-null values (categorical).
fn values_counted(p: &ColumnProfile) -> u64 {
    match (&p.kind, &p.numeric) {
        (ColumnKind::Numeric, Some(s)) => s.moments.n,
        _ => p.frequencies.n,
    }
}

/// Distinct values of both sides together; "many" (1001) once a side stopped counting.
fn distinct_union(a: &ColumnProfile, b: &ColumnProfile) -> u64 {
    match (a.kind, &a.numeric, &b.numeric) {
        (ColumnKind::Numeric, Some(x), Some(y)) => match (&x.small_domain, &y.small_domain) {
            (Some(dx), Some(dy)) => domain_union(dx, dy).len() as u64,
            _ => 1001,
        },
        _ => {
            if !a.frequencies.exact || !b.frequencies.exact {
                return 1001;
            }
            let mut keys: Vec<&String> = a
                .frequencies
                .items
                .keys()
                .chain(b.frequencies.items.keys())
                .collect();
            keys.sort();
            keys.dedup();
            keys.len() as u64
        }
    }
}

/// Category (or small numeric domain) counts keyed by text.
fn counts(p: &ColumnProfile) -> Option<BTreeMap<String, u64>> {
    match (&p.kind, &p.numeric) {
        (ColumnKind::Numeric, Some(s)) => s
            .small_domain
            .as_ref()
            .map(|d| d.iter().map(|(v, c)| (v.to_string(), *c)).collect()),
        _ => Some(p.frequencies.items.clone()),
    }
}

/// Shares of each side's values that a categorical summary no longer
/// attributes to a category: `(other_ref / n_ref, other_cur / n_cur)`.
type Missing = (f64, f64);

/// Aligned counts over the union of kept values (sorted), and — when either
/// side's frequencies are a heavy-hitters summary — one more bin at the end
/// holding each side's "other" count, with the missing shares. `None` for a
/// numeric column past its small domain.
fn aligned_counts(
    reference: &ColumnProfile,
    current: &ColumnProfile,
) -> Option<(Vec<u64>, Vec<u64>, Option<Missing>)> {
    let (r, c) = (counts(reference)?, counts(current)?);
    let (_, mut rc, mut cc) = super::align_counts(&r, &c);
    if reference.kind != ColumnKind::Categorical
        || (reference.frequencies.exact && current.frequencies.exact)
    {
        return Some((rc, cc, None));
    }
    let (fr, fc) = (&reference.frequencies, &current.frequencies);
    rc.push(fr.other());
    cc.push(fc.other());
    let share = |f: &crate::profile::Frequencies| {
        if f.n == 0 {
            0.0
        } else {
            f.other() as f64 / f.n as f64
        }
    };
    Some((rc, cc, Some((share(fr), share(fc)))))
}

/// The documented bound of a categorical statistic computed on heavy
/// hitters plus "other" (docs/drift.md): δ = each side's missing share is
/// the total variation distance between its true distribution and the
/// summarised one, so for the metrics TVD, Hellinger and Jensen–Shannon the
/// triangle inequality bounds the error by the two sides' distances to
/// their summaries — δ for TVD, √δ for Hellinger (H² ≤ TVD), √(δ·ln 2) for
/// the JS distance (JSD ≤ ln 2 · TVD). PSI, KL and χ² are not continuous in
/// the missing mass (one unseen category can move them without limit), so
/// none is claimed for them.
pub fn sketched_bound(kind: TestKind, (dr, dc): Missing) -> Option<f64> {
    match kind {
        TestKind::Tvd => Some(dr + dc),
        TestKind::Hellinger => Some(dr.sqrt() + dc.sqrt()),
        TestKind::Jensenshannon => {
            let ln2 = std::f64::consts::LN_2;
            Some((dr * ln2).sqrt() + (dc * ln2).sqrt())
        }
        _ => None,
    }
}

fn sketched_note(kind: TestKind, missing: Missing) -> String {
    let head = format!(
        "sketched: heavy hitters + \"other\" ({:.2}% of reference and {:.2}% of batch values not kept by category)",
        missing.0 * 100.0,
        missing.1 * 100.0
    );
    match sketched_bound(kind, missing) {
        Some(b) => format!("{head}; {} within ±{b:.4} of the exact value", kind.name()),
        None => format!(
            "{head}; no error bound for {} on this path (raise max_categories for an exact value)",
            kind.name()
        ),
    }
}

/// The distinct values of two small numeric domains together, sorted.
fn domain_union(a: &[(f64, u64)], b: &[(f64, u64)]) -> Vec<f64> {
    let mut values: Vec<f64> = a.iter().chain(b).map(|(v, _)| *v).collect();
    values.sort_by(f64::total_cmp);
    values.dedup_by(|p, q| p.total_cmp(q).is_eq());
    values
}

/// Numeric counts keyed in value order (for one-bin-per-value binning).
fn numeric_domain_bins(a: &ColumnProfile, b: &ColumnProfile) -> Option<(Vec<f64>, Vec<f64>)> {
    let (da, db) = (
        a.numeric.as_ref()?.small_domain.as_ref()?,
        b.numeric.as_ref()?.small_domain.as_ref()?,
    );
    let values = domain_union(da, db);
    let lookup = |d: &[(f64, u64)], v: f64| {
        d.binary_search_by(|(x, _)| x.total_cmp(&v))
            .map_or(0.0, |i| d[i].1 as f64)
    };
    Some((
        values.iter().map(|&v| lookup(da, v)).collect(),
        values.iter().map(|&v| lookup(db, v)).collect(),
    ))
}

/// Sorted `(value, weight)` points describing a numeric distribution.
type Points = Vec<(f64, f64)>;

/// Aligned bin weights of both sides, and a note on how they were binned.
type Bins = (Vec<f64>, Vec<f64>, Option<String>);

/// A numeric distribution's weighted points and their rank-error bound
/// (0 for exact values).
fn points(p: &ColumnProfile) -> Option<(Points, f64)> {
    if let Some(exact) = samples(p) {
        return Some((exact.into_iter().map(|x| (x, 1.0)).collect(), 0.0));
    }
    let s = p.numeric.as_ref()?;
    // Value counts are exact (no rank error); a sketch has its bound.
    let error = if s.small_domain.is_some() {
        0.0
    } else {
        s.sketch.rank_error_bound()
    };
    Some((s.weighted_points(), error))
}

/// A side's CDF for the sketched Wasserstein distance and what it
/// guarantees.
pub(crate) struct WassersteinSide {
    /// The side's piecewise-linear CDF.
    pub(crate) cdf: Cdf,
    /// Bound on ∫|L − F| dx for this side, in the column's units.
    pub(crate) bound: f64,
    /// Whether the exact tails were used.
    pub(crate) tails: bool,
}

/// A sketch's items as points standing for the values around them (see
/// `interpolated`), optionally only those in `[lo, hi]`, weights scaled.
fn sketch_points(
    sketch: &crate::profile::QuantileSketch,
    within: Option<(f64, f64)>,
) -> Vec<Point> {
    sketch
        .weighted_items()
        .into_iter()
        .filter(|&(v, _)| within.is_none_or(|(lo, hi)| v >= lo && v <= hi))
        .map(|(v, w)| Point::spread(v, w as f64))
        .collect()
}

/// The CDF the sketched `wasserstein` integrates for one side (issue 17).
///
/// Plain sketch: every step-CDF value is within ε (the sketch's rank-error
/// bound), so ∫|F̂ − F| ≤ ε · (max − min). With the profile's exact tails
/// (the k smallest values, up to `lo`, and the k largest, from `hi`): the
/// values below `lo` and above `hi` are exact points, and the sketch's items
/// in [lo, hi] are rescaled to the exact mass there. The step CDF is then
/// exact outside [lo, hi) and within 4ε inside it (2ε for the sketch mass
/// between two points, 2ε for the rescaling), so ∫|F̂ − F| ≤ 4ε · (hi − lo).
/// Each side takes whichever bound is smaller: on a light-tailed column
/// (normal) `max − min` is under 4 (hi − lo) and the plain sketch stays; on a
/// heavy tail (Pareto α = 1.5 at 10⁵ values, hi ≈ 85 and max ≈ 2,000) the
/// tails win. Either way the sketch's items are spread over the gaps around
/// them rather than stacked at their values (`interpolated`), which adds
/// [`Cdf::spread_bound`] to the bound. Exact values and small domains have
/// no error.
pub(crate) fn wasserstein_side(p: &ColumnProfile) -> Option<WassersteinSide> {
    let exact = |points: Vec<Point>| {
        Some(WassersteinSide {
            cdf: Cdf::new(&points)?,
            bound: 0.0,
            tails: false,
        })
    };
    let weighted = |points: Vec<(f64, f64)>| {
        points
            .into_iter()
            .map(|(v, w)| Point::exact(v, w))
            .collect::<Vec<_>>()
    };
    if let Some(values) = samples(p) {
        return exact(values.into_iter().map(|x| Point::exact(x, 1.0)).collect());
    }
    let s = p.numeric.as_ref()?;
    if s.small_domain.is_some() {
        return exact(weighted(s.weighted_points()));
    }
    let eps = s.sketch.rank_error_bound();
    let (Some(min), Some(max)) = (s.min, s.max) else {
        return exact(weighted(s.weighted_points()));
    };
    let plain = || {
        let cdf = Cdf::new(&sketch_points(&s.sketch, None))?;
        Some(WassersteinSide {
            bound: eps * (max - min) + cdf.spread_bound(),
            cdf,
            tails: false,
        })
    };
    let Some(t) = s.tails.as_ref() else {
        return plain();
    };
    let (Some(&(lo, _)), Some(&(hi, _))) = (t.low.last(), t.high.first()) else {
        return plain();
    };
    let tail_bound = 4.0 * eps * (hi - lo);
    if lo >= hi || tail_bound >= eps * (max - min) {
        return plain();
    }
    let below = t.low.iter().filter(|r| r.0 < lo);
    let above = t.high.iter().filter(|r| r.0 > hi);
    let middle = sketch_points(&s.sketch, Some((lo, hi)));
    let sketched_mass: f64 = middle.iter().map(|p| p.weight).sum();
    let outside: f64 = below.clone().chain(above.clone()).map(|r| r.1 as f64).sum();
    let mass = s.sketch.n() as f64 - outside;
    if sketched_mass <= 0.0 || mass <= 0.0 {
        return plain();
    }
    let scale = mass / sketched_mass;
    let mut points: Vec<Point> = below.map(|&(v, c)| Point::exact(v, c as f64)).collect();
    points.extend(
        middle
            .into_iter()
            .map(|p| Point::spread(p.value, p.weight * scale)),
    );
    points.extend(above.map(|&(v, c)| Point::exact(v, c as f64)));
    let cdf = Cdf::new(&points)?;
    Some(WassersteinSide {
        bound: tail_bound + cdf.spread_bound(),
        cdf,
        tails: true,
    })
}

/// Empirical CDFs of two weighted point sets evaluated on their merged support:
/// returns (x, F_a(x), F_b(x)) for each distinct x.
fn merged_cdfs(a: &[(f64, f64)], b: &[(f64, f64)]) -> Vec<(f64, f64, f64)> {
    let (ta, tb) = (
        a.iter().map(|p| p.1).sum::<f64>(),
        b.iter().map(|p| p.1).sum::<f64>(),
    );
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j, mut ca, mut cb) = (0, 0, 0.0, 0.0);
    while i < a.len() || j < b.len() {
        let x = match (a.get(i), b.get(j)) {
            (Some(p), Some(q)) => p.0.min(q.0),
            (Some(p), None) => p.0,
            (None, Some(q)) => q.0,
            (None, None) => break,
        };
        while i < a.len() && a[i].0 <= x {
            ca += a[i].1;
            i += 1;
        }
        while j < b.len() && b[j].0 <= x {
            cb += b[j].1;
            j += 1;
        }
        out.push((x, ca / ta, cb / tb));
    }
    out
}

fn samples(p: &ColumnProfile) -> Option<Vec<f64>> {
    let mut v = p.numeric.as_ref()?.exact_values.clone()?;
    v.sort_by(f64::total_cmp);
    Some(v)
}

/// A test's outcome, its note for the report, and (homogeneity tests) how
/// its p-value was computed.
type Outcome = Result<(TestOutcome, Option<String>, Option<super::PValueMethod>), String>;

fn run_test(kind: TestKind, reference: &ColumnProfile, current: &ColumnProfile) -> Outcome {
    let err = |e: super::DriftError| e.to_string();
    match kind {
        TestKind::Ks | TestKind::Wasserstein if reference.kind == ColumnKind::Numeric => {
            if let (Some(r), Some(c)) = (samples(reference), samples(current)) {
                let outcome = if kind == TestKind::Ks {
                    super::ks(&r, &c).map_err(err)?
                } else {
                    super::wasserstein(&r, &c).map_err(err)?
                };
                return Ok((outcome, None, None));
            }
            let (Some((pa, ea)), Some((pb, eb))) = (points(reference), points(current)) else {
                return Err("no numeric values".to_string());
            };
            let cdfs = merged_cdfs(&pa, &pb);
            let bound = ea + eb;
            if kind == TestKind::Ks {
                let d = cdfs
                    .iter()
                    .map(|(_, fa, fb)| (fa - fb).abs())
                    .fold(0.0, f64::max);
                let (n1, n2) = (
                    values_counted(reference) as f64,
                    values_counted(current) as f64,
                );
                let en = (n1 * n2 / (n1 + n2)).round() as u64;
                let p = kolmogorov_two_sided_sf(en, d).clamp(0.0, 1.0);
                Ok((
                    TestOutcome {
                        statistic: d,
                        p_value: Some(p),
                    },
                    Some(if bound == 0.0 {
                        "from exact value counts; asymptotic p-value".to_string()
                    } else {
                        format!(
                            "sketched: D within ±{bound:.4} of the exact value; asymptotic p-value"
                        )
                    }),
                    None,
                ))
            } else {
                // The distance gets its own points: exact tails where they
                // tighten the bound (heavy tails), see `wasserstein_side`.
                let (Some(ba), Some(bb)) = (wasserstein_side(reference), wasserstein_side(current))
                else {
                    return Err("no numeric values".to_string());
                };
                let w = interpolated::gap_integral(&ba.cdf, &bb.cdf);
                let std = reference
                    .numeric
                    .as_ref()
                    .and_then(|s| s.moments.std_population())
                    .unwrap_or(0.0)
                    .max(0.001);
                let bound = (ba.bound + bb.bound) / std;
                let tails = ba.tails || bb.tails;
                Ok((
                    TestOutcome {
                        statistic: w / std,
                        p_value: None,
                    },
                    (bound > 0.0).then(|| {
                        format!(
                            "sketched: within ±{bound:.4} of the exact distance{}",
                            if tails { " (exact tails)" } else { "" }
                        )
                    }),
                    None,
                ))
            }
        }
        TestKind::Chisquare | TestKind::Z | TestKind::ChisquareHomogeneity | TestKind::GTest => {
            let Some((rc, cc, missing)) = aligned_counts(reference, current) else {
                return Err(format!(
                    "`{}` needs the value counts, which the profile no longer holds (over 1,000 distinct values)",
                    kind.name()
                ));
            };
            let (outcome, method) = match kind {
                TestKind::Chisquare => chisquare(&rc, &cc).map(|o| (o, None)),
                TestKind::ChisquareHomogeneity => {
                    super::chisquare_homogeneity_with_method(&rc, &cc).map(|(o, m)| (o, Some(m)))
                }
                TestKind::GTest => super::g_test_with_method(&rc, &cc).map(|(o, m)| (o, Some(m))),
                _ => z_test(&rc, &cc).map(|o| (o, None)),
            }
            .map_err(err)?;
            let sketched = missing.map(|m| sketched_note(kind, m));
            // Only a p-value that is not the plain χ² one is worth a note.
            let small = method
                .filter(|m| *m != super::PValueMethod::Asymptotic)
                .map(|m| m.describe().to_string());
            let note = match (sketched, small) {
                (Some(a), Some(b)) => Some(format!("{a}; {b}")),
                (a, b) => a.or(b),
            };
            Ok((outcome, note, method))
        }
        TestKind::Jensenshannon
        | TestKind::Psi
        | TestKind::KlDiv
        | TestKind::Hellinger
        | TestKind::Tvd => {
            let (rb, cb, note) = binned(kind, reference, current)?;
            let f = match kind {
                TestKind::Jensenshannon => jensenshannon,
                TestKind::Psi => psi,
                TestKind::KlDiv => kl_div,
                TestKind::Hellinger => hellinger,
                _ => tvd,
            };
            Ok((f(&rb, &cb).map_err(err)?, note, None))
        }
        TestKind::Anderson
        | TestKind::CramerVonMises
        | TestKind::Mannw
        | TestKind::Energy
        | TestKind::TTest
        | TestKind::Ks
        | TestKind::Wasserstein => {
            let (Some(r), Some(c)) = (samples(reference), samples(current)) else {
                return Err(format!(
                    "`{}` needs both sides' exact numeric values (at most 10,000 each); use ks, wasserstein or a binned test",
                    kind.name()
                ));
            };
            let outcome = match kind {
                TestKind::Anderson => super::anderson(&r, &c),
                TestKind::CramerVonMises => super::cramer_von_mises(&r, &c),
                TestKind::Mannw => super::mannw(&r, &c),
                TestKind::Energy => super::energy(&r, &c),
                TestKind::TTest => super::t_test(&r, &c),
                TestKind::Ks => super::ks(&r, &c),
                _ => super::wasserstein(&r, &c),
            }
            .map_err(err)?;
            Ok((outcome, None, None))
        }
    }
}

/// Aligned bins: one per value where value counts exist, else reference deciles.
fn binned(
    kind: TestKind,
    reference: &ColumnProfile,
    current: &ColumnProfile,
) -> Result<Bins, String> {
    if reference.kind == ColumnKind::Categorical {
        let (r, c, missing) =
            aligned_counts(reference, current).ok_or("no category counts".to_string())?;
        let to_f = |v: Vec<u64>| v.into_iter().map(|x| x as f64).collect();
        return Ok((to_f(r), to_f(c), missing.map(|m| sketched_note(kind, m))));
    }
    if let Some((r, c)) = numeric_domain_bins(reference, current) {
        return Ok((r, c, None));
    }
    let (Some((pa, _)), Some((pb, _))) = (points(reference), points(current)) else {
        return Err("no numeric values".to_string());
    };
    let sketch = reference
        .numeric
        .as_ref()
        .ok_or("no numeric values")?
        .quantiles();
    let mut edges: Vec<f64> = (1..10)
        .filter_map(|i| sketch.quantile(f64::from(i) / 10.0))
        .collect();
    edges.dedup_by(|a, b| a.total_cmp(b).is_eq());
    let bins = |p: &[(f64, f64)]| {
        let mut out = vec![0.0; edges.len() + 1];
        for (x, w) in p {
            let i = edges.partition_point(|e| e < x);
            out[i] += w;
        }
        out
    };
    Ok((
        bins(&pa),
        bins(&pb),
        Some("binned by reference deciles".to_string()),
    ))
}

/// Adjusts p-values of p-value tests and re-decides drift on the adjusted values.
fn apply_correction(results: &mut [ColumnDrift], correction: Correction) {
    if correction == Correction::None {
        return;
    }
    let idx: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.tested && r.p_value.is_some())
        .map(|(i, _)| i)
        .collect();
    let m = idx.len() as f64;
    let adjusted: Vec<f64> = match correction {
        Correction::Bonferroni => idx
            .iter()
            .map(|&i| (results[i].p_value.unwrap_or(1.0) * m).min(1.0))
            .collect(),
        _ => {
            // Benjamini–Hochberg: p_(k) · m / k, made monotone from the largest rank down.
            let mut order: Vec<usize> = (0..idx.len()).collect();
            order.sort_by(|&a, &b| {
                let pa = results[idx[a]].p_value.unwrap_or(1.0);
                let pb = results[idx[b]].p_value.unwrap_or(1.0);
                pa.total_cmp(&pb)
            });
            let mut adj = vec![1.0; idx.len()];
            let mut running = 1.0f64;
            for (rank, &o) in order.iter().enumerate().rev() {
                let p = results[idx[o]].p_value.unwrap_or(1.0);
                running = running.min(p * m / (rank as f64 + 1.0));
                adj[o] = running.min(1.0);
            }
            adj
        }
    };
    for (k, &i) in idx.iter().enumerate() {
        let r = &mut results[i];
        r.p_value_adjusted = Some(adjusted[k]);
        if let (Some(test), Some(threshold)) = (r.test, r.threshold) {
            let outcome = TestOutcome {
                statistic: r.statistic.unwrap_or(0.0),
                p_value: Some(adjusted[k]),
            };
            r.drifted = is_drift(test, &outcome, threshold);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(values: &[f64]) -> ColumnProfile {
        let mut p = ColumnProfile::new(ColumnKind::Numeric, "float64");
        values.iter().for_each(|&v| p.update_f64(v));
        p.finish();
        p
    }

    #[test]
    fn bh_and_bonferroni_match_their_definitions() {
        let mk = |p: f64| ColumnDrift {
            column: String::new(),
            column_type: "numeric".into(),
            test: Some(TestKind::Ks),
            statistic: Some(0.1),
            p_value: Some(p),
            p_value_adjusted: None,
            threshold: Some(0.05),
            drifted: false,
            message: None,
            path: None,
            skipped: None,
            effect: None,
            unit: None,
            p_value_method: None,
            tested: true,
        };
        let mut r = vec![mk(0.01), mk(0.04), mk(0.03), mk(0.5)];
        apply_correction(&mut r, Correction::FdrBh);
        // statsmodels multipletests(method='fdr_bh'): [0.04, 0.05333, 0.05333, 0.5]
        let adj: Vec<f64> = r.iter().map(|c| c.p_value_adjusted.unwrap()).collect();
        let want = [0.04, 0.16 / 3.0, 0.16 / 3.0, 0.5];
        for (a, w) in adj.iter().zip(want) {
            assert!((a - w).abs() < 1e-12, "{adj:?}");
        }
        assert_eq!(
            r.iter().map(|c| c.drifted).collect::<Vec<_>>(),
            [true, false, false, false]
        );
        let mut r = vec![mk(0.01), mk(0.04), mk(0.5)];
        apply_correction(&mut r, Correction::Bonferroni);
        let adj: Vec<f64> = r.iter().map(|c| c.p_value_adjusted.unwrap()).collect();
        for (a, w) in adj.iter().zip([0.03, 0.12, 1.0]) {
            assert!((a - w).abs() < 1e-12, "{adj:?}");
        }
    }

    #[test]
    fn sketched_ks_is_within_the_bound_of_the_exact_statistic() {
        // Over 1,000 distinct values and 10,000 values: only the sketch is left.
        let a: Vec<f64> = (0..30_000).map(|i| f64::from(i % 1997)).collect();
        let b: Vec<f64> = (0..25_000).map(|i| f64::from(i % 1991) + 20.0).collect();
        let (pa, pb) = (numeric(&a), numeric(&b));
        assert!(pa.numeric.as_ref().unwrap().exact_values.is_none());
        assert!(pa.numeric.as_ref().unwrap().small_domain.is_none());
        let (outcome, note, _) = run_test(TestKind::Ks, &pa, &pb).unwrap();
        let mut sa = a.clone();
        sa.sort_by(f64::total_cmp);
        let mut sb = b.clone();
        sb.sort_by(f64::total_cmp);
        let exact = super::super::ks(&sa, &sb).unwrap();
        let bound = pa.numeric.as_ref().unwrap().sketch.rank_error_bound()
            + pb.numeric.as_ref().unwrap().sketch.rank_error_bound();
        assert!(
            (outcome.statistic - exact.statistic).abs() <= bound,
            "{} vs {} ± {bound}",
            outcome.statistic,
            exact.statistic
        );
        assert!(note.unwrap().starts_with("sketched"));
    }

    #[test]
    fn small_domain_ks_is_the_exact_statistic() {
        // Many values (no exact list), few distinct ones: the value counts
        // are the distribution, so D is exact.
        let a: Vec<f64> = (0..30_000).map(|i| f64::from(i % 997)).collect();
        let b: Vec<f64> = (0..25_000).map(|i| f64::from(i % 991) + 20.0).collect();
        let (pa, pb) = (numeric(&a), numeric(&b));
        assert!(pa.numeric.as_ref().unwrap().exact_values.is_none());
        assert!(pa.numeric.as_ref().unwrap().small_domain.is_some());
        let (outcome, note, _) = run_test(TestKind::Ks, &pa, &pb).unwrap();
        let mut sa = a.clone();
        sa.sort_by(f64::total_cmp);
        let mut sb = b.clone();
        sb.sort_by(f64::total_cmp);
        let exact = super::super::ks(&sa, &sb).unwrap();
        assert!((outcome.statistic - exact.statistic).abs() < 1e-12);
        assert_eq!(
            note.as_deref(),
            Some("from exact value counts; asymptotic p-value")
        );
    }

    #[test]
    fn exact_path_equals_the_sample_test() {
        let a: Vec<f64> = (0..500).map(|i| f64::from(i) * 0.37 % 50.0).collect();
        let b: Vec<f64> = (0..400).map(|i| f64::from(i) * 0.41 % 55.0).collect();
        let (outcome, note, _) = run_test(TestKind::Ks, &numeric(&a), &numeric(&b)).unwrap();
        let (mut sa, mut sb) = (a.clone(), b.clone());
        sa.sort_by(f64::total_cmp);
        sb.sort_by(f64::total_cmp);
        assert_eq!(outcome, super::super::ks(&sa, &sb).unwrap());
        assert_eq!(note, None);
    }
}
