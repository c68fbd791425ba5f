//! Column profiles: compact, mergeable, serializable summaries of a column,
//! from which drift is computed without the raw data.
//!
//! A [`ColumnProfile`] keeps counts (rows, nulls, NaN, ±inf), min/max, mergeable
//! [`Moments`] (mean, variance), the exact sorted values while the column has
//! at most [`EXACT_LIMIT`] finite values (so small samples get exact tests), a
//! deterministic [`QuantileSketch`] with a documented rank-error bound,
//! [`Frequencies`] (exact up to a cardinality limit, then heavy hitters plus
//! "other"), and an HLL [`DistinctSketch`]. A [`DatasetProfile`] is a set of
//! column profiles, stored as a versioned JSON file (a reference baseline).
//!
//! Profiles are values: `merge` is commutative, associative (exactly for
//! counts, within the documented bounds for sketches), and the same input gives
//! the same profile. This module is pure logic: no DataFusion, no Arrow, no
//! I/O beyond reading and writing profile files.

mod distinct;
mod frequencies;
mod moments;
mod quantiles;
mod tails;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use distinct::DistinctSketch;
pub use frequencies::{
    DEFAULT_LIMIT as DEFAULT_CATEGORY_LIMIT, Frequencies,
    MAX_KEPT_BYTES as MAX_KEPT_CATEGORY_BYTES, MAX_LIMIT as MAX_CATEGORY_LIMIT,
    kept_value as kept_category_value,
};
pub use moments::Moments;
pub use quantiles::QuantileSketch;
pub use tails::{DEFAULT_TAIL_K, Tails};

/// Finite values kept exactly per column before only the sketch remains.
/// Matches scipy's limit for exact two-sample KS p-values.
pub const EXACT_LIMIT: usize = 10_000;

/// Distinct finite values of a numeric column counted exactly (for the
/// categorical-style tests Evidently uses on numeric columns with few values);
/// past it, only the sketch describes the distribution.
pub const SMALL_DOMAIN_LIMIT: usize = 1000;

/// The profile file format's name, written in every file.
pub const PROFILE_FORMAT: &str = "driftwatch-profile";

/// The profile file format's version, written in every file.
///
/// - 1: category frequencies exact up to 1,000 values (256 KiB of values).
/// - 2 (issue 17): exact up to `drift.max_categories` (default 65,536; 1 MiB
///   of values); optional `order` evidence for ID-like detection.
///
/// Version 1 files are still read: the layout is a subset of version 2's,
/// and their columns past 1,000 categories take the sketched path (the
/// report says so). Newer versions are refused with a clear message.
pub const PROFILE_VERSION: u32 = 2;

/// The oldest profile format version this driftwatch reads.
pub const MIN_PROFILE_VERSION: u32 = 1;

/// Errors reading or writing profile files: the user's (a wrong or damaged
/// file) unless stated otherwise.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a readable profile.
    #[error("{}: not a driftwatch profile: {reason}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file is a profile of another format version.
    #[error("{}: profile format version {found} is not supported (this driftwatch reads versions {MIN_PROFILE_VERSION} to {PROFILE_VERSION}); rebuild it with `driftwatch baseline`", path.display())]
    Version {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u32,
    },
    /// Two profiles of incompatible columns were merged.
    #[error("cannot merge profiles of column `{column}`: {reason}")]
    Incompatible {
        /// The column.
        column: String,
        /// Why.
        reason: String,
    },
}

/// A `Result` whose error is a [`ProfileError`].
pub type Result<T, E = ProfileError> = std::result::Result<T, E>;

/// How a column is profiled and tested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnKind {
    /// Numbers: moments, quantiles, exact values; frequencies while few distinct.
    Numeric,
    /// Strings and booleans: frequencies.
    Categorical,
}

/// Numeric statistics of a column's non-null values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumericStats {
    /// NaN values (not in moments, quantiles or exact values).
    pub nan: u64,
    /// `+inf` values.
    pub pos_inf: u64,
    /// `-inf` values.
    pub neg_inf: u64,
    /// Smallest finite value.
    pub min: Option<f64>,
    /// Largest finite value.
    pub max: Option<f64>,
    /// Moments of the finite values.
    pub moments: Moments,
    /// All finite values while there are at most [`EXACT_LIMIT`]; then null.
    /// Sorted after [`ColumnProfile::finish`] (profiles are always finished
    /// before they are stored or merged).
    pub exact_values: Option<Vec<f64>>,
    /// `(value, count)` of each distinct finite value, sorted by value, while
    /// there are at most [`SMALL_DOMAIN_LIMIT`]; then null.
    pub small_domain: Option<Vec<(f64, u64)>>,
    /// Quantile sketch of the finite values once the small domain is gone
    /// (empty while there is one; read it through [`NumericStats::quantiles`]).
    pub sketch: QuantileSketch,
    /// Whether the finite values increase row by row (non-decreasing within
    /// each part the engine profiled in order, and parts not overlapping):
    /// the "sequence" evidence of ID-like detection (issue 17). Null when
    /// unknown (profiles of format version 1, or built value by value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub increasing: Option<bool>,
    /// The [`DEFAULT_TAIL_K`] smallest and largest finite values, exact
    /// (issue 17): the sketched Wasserstein distance uses them on heavy
    /// tails. Null in profiles written before they existed (format version
    /// 1 and early version 2 files; the field is additive, so the version is
    /// unchanged): those take the plain sketch path, as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tails: Option<Tails>,
}

impl NumericStats {
    /// The quantile sketch of the finite values: built from the small domain
    /// while there is one (exactly: fewer distinct values than the sketch
    /// keeps per level), else the stored sketch.
    pub fn quantiles(&self) -> std::borrow::Cow<'_, QuantileSketch> {
        match &self.small_domain {
            Some(domain) => std::borrow::Cow::Owned(QuantileSketch::from_counts(domain)),
            None => std::borrow::Cow::Borrowed(&self.sketch),
        }
    }
}

impl NumericStats {
    /// The distribution as sorted-by-construction `(value, weight)` points:
    /// every distinct value with its count while the small domain holds
    /// (exact), else the sketch's weighted items.
    pub fn weighted_points(&self) -> Vec<(f64, f64)> {
        match &self.small_domain {
            Some(domain) => domain.iter().map(|&(v, c)| (v, c as f64)).collect(),
            None => self
                .sketch
                .weighted_items()
                .into_iter()
                .map(|(v, w)| (v, w as f64))
                .collect(),
        }
    }
}

/// The unit a numeric column's profile is on, for temporal columns
/// (profiled on their epoch scale, see `engine::profiler::numeric_view`),
/// from its logical type name; `None` for plain numbers.
pub fn epoch_unit(data_type: &str) -> Option<EpochUnit> {
    if data_type.starts_with("timestamp") {
        Some(EpochUnit::UnixSeconds)
    } else if data_type.starts_with("date") {
        Some(EpochUnit::UnixDays)
    } else if data_type.starts_with("duration") {
        Some(EpochUnit::Seconds)
    } else if data_type.starts_with("time32") || data_type.starts_with("time64") {
        Some(EpochUnit::SecondsOfDay)
    } else {
        None
    }
}

/// The scale of a temporal column's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochUnit {
    /// Timestamps: seconds since 1970-01-01T00:00:00Z.
    UnixSeconds,
    /// Dates: days since 1970-01-01.
    UnixDays,
    /// Durations: seconds.
    Seconds,
    /// Times of day: seconds since midnight.
    SecondsOfDay,
}

impl EpochUnit {
    /// The unit as reports write it.
    pub fn describe(self) -> &'static str {
        match self {
            EpochUnit::UnixSeconds => "seconds since 1970-01-01T00:00:00Z",
            EpochUnit::UnixDays => "days since 1970-01-01",
            EpochUnit::Seconds => "seconds",
            EpochUnit::SecondsOfDay => "seconds since midnight",
        }
    }

    /// A value on this scale, readable: an RFC 3339 time, a date, a
    /// duration or a time of day.
    pub fn format_value(self, v: f64) -> String {
        match self {
            EpochUnit::UnixSeconds => {
                let (secs, nanos) = (v.floor(), ((v - v.floor()) * 1e9).round());
                chrono::DateTime::from_timestamp(secs as i64, (nanos as u32).min(999_999_999))
                    .map_or_else(
                        || format!("{v} s"),
                        |t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                    )
            }
            EpochUnit::UnixDays => chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
                .and_then(|d| d.checked_add_signed(chrono::TimeDelta::days(v.floor() as i64)))
                .map_or_else(|| format!("{v} days"), |d| d.to_string()),
            EpochUnit::Seconds => format_duration(v),
            EpochUnit::SecondsOfDay => {
                let s = v.rem_euclid(86_400.0);
                format!(
                    "{:02}:{:02}:{:02}",
                    (s / 3600.0) as u32,
                    ((s % 3600.0) / 60.0) as u32,
                    (s % 60.0) as u32
                )
            }
        }
    }

    /// A difference of two values on this scale, readable (`+3.5 h`,
    /// `-2 days`).
    pub fn format_difference(self, d: f64) -> String {
        match self {
            EpochUnit::UnixDays => format!("{d:+} days"),
            _ => {
                let text = format_duration(d.abs());
                format!("{}{text}", if d < 0.0 { "-" } else { "+" })
            }
        }
    }
}

/// Seconds as the largest unit that keeps them ≥ 1 (`90 s`, `1.5 h`, `3 d`).
fn format_duration(seconds: f64) -> String {
    let a = seconds.abs();
    let (value, unit) = if a >= 86_400.0 {
        (seconds / 86_400.0, "d")
    } else if a >= 3600.0 {
        (seconds / 3600.0, "h")
    } else if a >= 60.0 {
        (seconds / 60.0, "min")
    } else {
        (seconds, "s")
    };
    let rounded = (value * 100.0).round() / 100.0;
    format!("{rounded} {unit}")
}

/// Numbers counted by [`canonical_bits`]; a fixed-seed hasher keeps every
/// run identical.
pub type NumberCounts = std::collections::HashMap<u64, u64, foldhash::fast::FixedState>;

/// Whole numbers below 2^52 in magnitude: `lo + offset` is exact.
const EXACT_INTEGERS: f64 = 4_503_599_627_370_496.0;

/// The counts of a batch of whole numbers in a short span, by offset from
/// the smallest: `Some((lo, slots))` when every value is a whole number
/// (so no NaN or infinity) and the span is at most about twice the batch's
/// length — months, hours, delays, distances, clock times. Counting by
/// offset needs no hash and no sort, and the slots are in value order.
fn count_by_offset(values: &[f64]) -> Option<(f64, Vec<u32>)> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut whole = true;
    for &v in values {
        lo = lo.min(v);
        hi = hi.max(v);
        // A truncating conversion is one instruction (`trunc` is a libm
        // call on baseline x86-64); NaN, infinities and fractions fail it.
        whole &= (v as i64) as f64 == v;
    }
    if !whole
        || values.is_empty()
        || values.len() >= u32::MAX as usize
        || hi - lo >= offset_span_limit(values.len()) as f64
        || lo <= -EXACT_INTEGERS
        || hi >= EXACT_INTEGERS
    {
        return None;
    }
    let mut slots = vec![0u32; (hi - lo) as usize + 1];
    for &v in values {
        // In range by construction of `lo` and `hi`; `get_mut` keeps it
        // panic-free anyway.
        if let Some(slot) = slots.get_mut((v - lo) as usize) {
            *slot += 1;
        }
    }
    Some((lo, slots))
}

/// The widest span (`hi - lo`) a batch of `len` values is counted by offset
/// over: past it the array of counts would cost more than hashing.
fn offset_span_limit(len: usize) -> u64 {
    2 * len as u64 + 256
}

/// Adds counts by offset from `lo` (see [`count_by_offset`]) to `counts`,
/// each distinct value hashed once.
fn add_offset_counts(lo: f64, slots: &[u32], counts: &mut NumberCounts) {
    for (offset, &n) in slots.iter().enumerate() {
        if n > 0 {
            *counts
                .entry(canonical_bits(offset_value(lo, offset)))
                .or_insert(0) += u64::from(n);
        }
    }
}

/// Counts integers into `counts` by the [`canonical_bits`] of their `f64`
/// value, given their smallest `lo` and largest `hi`, both within ±2^53
/// (so every value is exact as `f64`): by offset in an array when the span
/// is short, else hashed run by run. The same counts as [`count_numbers`]
/// of the values as `f64`, without converting the batch.
pub fn count_integers(values: &[i64], lo: i64, hi: i64, counts: &mut NumberCounts) {
    let span = hi.abs_diff(lo);
    if span == 0 {
        // One value (a year, a constant flag): no counting at all.
        if !values.is_empty() {
            *counts.entry(canonical_bits(lo as f64)).or_insert(0) += values.len() as u64;
        }
        return;
    }
    if span < offset_span_limit(values.len()) && values.len() < u32::MAX as usize {
        let slots = count_offsets(values, lo, span as usize + 1);
        add_offset_counts(lo as f64, &slots, counts);
        return;
    }
    count_runs(values, |v| canonical_bits(v as f64), counts);
}

/// Counts `values` by `bits`, hashing each run of equal neighbours once:
/// sorted or clustered columns (event times, dates) repeat values row
/// after row, and elsewhere a run is one row.
fn count_runs<T: Copy + PartialEq>(
    values: &[T],
    bits: impl Fn(T) -> u64,
    counts: &mut NumberCounts,
) {
    let Some((&first, rest)) = values.split_first() else {
        return;
    };
    let (mut current, mut n) = (first, 1u64);
    for &v in rest {
        if v == current {
            n += 1;
        } else {
            *counts.entry(bits(current)).or_insert(0) += n;
            (current, n) = (v, 1);
        }
    }
    *counts.entry(bits(current)).or_insert(0) += n;
}

/// How many of `values` lie at each offset `0..width` from `lo` (values
/// outside are not counted; callers pass `lo` and `width` that hold them
/// all). A short span is counted into four arrays, row `i` into array
/// `i % 4`, then added up: with few distinct values (months, hours) rows
/// in a row often hit the same counter, and one array would make each
/// increment wait for the previous one's store. (With the one-pass
/// minimum and maximum beside it, profiling the 31-value `day` column of
/// the 10 M-row flights file went from 39 to 14 ms, `examples/profile_cost`.)
fn count_offsets(values: &[i64], lo: i64, width: usize) -> Vec<u32> {
    /// Past this width a batch's values seldom repeat back to back.
    const INTERLEAVED_WIDTH: usize = 1024;
    let mut slots = vec![0u32; width];
    let count = |slots: &mut [u32], v: i64| {
        if let Some(slot) = slots.get_mut(v.abs_diff(lo) as usize) {
            *slot += 1;
        }
    };
    if width > INTERLEAVED_WIDTH {
        values.iter().for_each(|&v| count(&mut slots, v));
        return slots;
    }
    let mut more = [vec![0u32; width], vec![0u32; width], vec![0u32; width]];
    let mut quads = values.chunks_exact(4);
    for quad in &mut quads {
        count(&mut slots, quad[0]);
        count(&mut more[0], quad[1]);
        count(&mut more[1], quad[2]);
        count(&mut more[2], quad[3]);
    }
    quads.remainder().iter().for_each(|&v| count(&mut slots, v));
    for lane in &more {
        for (total, n) in slots.iter_mut().zip(lane) {
            *total += n;
        }
    }
    slots
}

/// The value at `offset` from `lo` (exact, see [`count_by_offset`]), with
/// `-0.0` written as `0.0`.
fn offset_value(lo: f64, offset: usize) -> f64 {
    let v = lo + offset as f64;
    if v == 0.0 { 0.0 } else { v }
}

/// Counts `values` into `counts` by their [`canonical_bits`]: by offset
/// (see [`count_by_offset`]) when the batch allows, each distinct value
/// then hashed once; otherwise hashed run by run ([`count_runs`]). Both
/// give the same counts.
pub fn count_numbers(values: &[f64], counts: &mut NumberCounts) {
    if let Some((lo, slots)) = count_by_offset(values) {
        add_offset_counts(lo, &slots, counts);
        return;
    }
    // Equal neighbours are equal bits (`0.0 == -0.0` share theirs; each
    // NaN is a run of its own, all under one key).
    count_runs(values, canonical_bits, counts);
}

/// A batch of finite numbers (`-0.0` written as `0.0`) as `(value, count)`
/// runs in increasing order: run through as is when it arrives sorted (ids,
/// event times), else counted by offset when the batch allows, radix-sorted
/// otherwise.
fn sorted_runs(mut finite: Vec<f64>) -> Vec<(f64, u64)> {
    // Sorted first: checking is one pass that stops at the first descent,
    // and an id or event-time column then needs neither counting nor sort.
    if !finite.is_sorted_by(|a, b| a.total_cmp(b).is_le()) {
        if let Some((lo, slots)) = count_by_offset(&finite) {
            return slots
                .iter()
                .enumerate()
                .filter(|&(_, &n)| n > 0)
                .map(|(offset, &n)| (offset_value(lo, offset), u64::from(n)))
                .collect();
        }
        quantiles::sort_total(&mut finite);
    }
    let mut runs: Vec<(f64, u64)> = Vec::with_capacity(finite.len());
    for v in finite {
        match runs.last_mut() {
            Some((last, c)) if last.to_bits() == v.to_bits() => *c += 1,
            _ => runs.push((v, 1)),
        }
    }
    runs
}

/// The bits a number is counted under: `-0.0` as `0.0`, every NaN as one.
pub fn canonical_bits(v: f64) -> u64 {
    if v == 0.0 {
        0
    } else if v.is_nan() {
        f64::NAN.to_bits()
    } else {
        v.to_bits()
    }
}

impl Default for NumericStats {
    fn default() -> Self {
        Self {
            nan: 0,
            pos_inf: 0,
            neg_inf: 0,
            min: None,
            max: None,
            moments: Moments::default(),
            exact_values: Some(Vec::new()),
            small_domain: Some(Vec::new()),
            sketch: QuantileSketch::default(),
            increasing: None,
            tails: Some(Tails::new(DEFAULT_TAIL_K)),
        }
    }
}

/// The profile of one column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnProfile {
    /// Numeric or categorical.
    pub kind: ColumnKind,
    /// The column's logical type when profiled (e.g. `int64`, `utf8`).
    pub data_type: String,
    /// Rows seen, nulls included.
    pub count: u64,
    /// Null rows.
    pub nulls: u64,
    /// Numeric statistics (numeric columns only).
    pub numeric: Option<NumericStats>,
    /// Category frequencies (categorical columns; empty for numeric ones,
    /// which keep [`NumericStats::small_domain`] instead).
    pub frequencies: Frequencies,
    /// Distinct-count estimate of non-null values.
    pub distinct: DistinctSketch,
}

impl ColumnProfile {
    /// An empty profile of the given kind and logical type.
    pub fn new(kind: ColumnKind, data_type: impl Into<String>) -> Self {
        Self::with_category_limit(kind, data_type, frequencies::DEFAULT_LIMIT)
    }

    /// An empty profile whose category frequencies stay exact up to
    /// `limit` distinct values (`drift.max_categories`).
    pub fn with_category_limit(
        kind: ColumnKind,
        data_type: impl Into<String>,
        limit: usize,
    ) -> Self {
        Self {
            kind,
            data_type: data_type.into(),
            count: 0,
            nulls: 0,
            numeric: (kind == ColumnKind::Numeric).then(NumericStats::default),
            frequencies: Frequencies::new(limit),
            distinct: DistinctSketch::new(),
        }
    }

    /// Counts a null.
    pub fn update_null(&mut self) {
        self.update_nulls(1);
    }

    /// Counts `n` nulls.
    pub fn update_nulls(&mut self, n: u64) {
        self.count += n;
        self.nulls += n;
    }

    /// Adds a number (numeric columns; ignored on categorical ones).
    pub fn update_f64(&mut self, value: f64) {
        self.update_f64_n(value, 1);
    }

    /// Adds one batch of non-null numbers. While the column's values still
    /// fit the small domain, the batch is counted first (one hash per value)
    /// and each distinct value is added once with its count; otherwise value
    /// by value. Either way the profile describes the same multiset.
    pub fn update_f64_batch(&mut self, values: &[f64]) {
        let Some(stats) = self.numeric.as_ref() else {
            return;
        };
        if stats.small_domain.is_some() {
            let mut counts = NumberCounts::with_capacity_and_hasher(64, Default::default());
            count_numbers(values, &mut counts);
            if counts.len() <= SMALL_DOMAIN_LIMIT {
                self.update_f64_counts(counts);
                return;
            }
        }
        if stats.small_domain.is_none() && stats.exact_values.is_none() {
            self.update_f64_wide(values);
            return;
        }
        for &v in values {
            self.update_f64_n(v, 1);
        }
    }

    /// A batch of a column past its small domain and exact values, as sorted
    /// runs (at most one sort, see [`sorted_runs`]), so
    /// extremes are the ends, the distinct sketch hashes each distinct value
    /// once (not every row), and the quantile sketch takes the batch as
    /// sorted runs (see [`QuantileSketch::update_sorted_counts`]). Moments
    /// per batch (two passes, then Chan's merge — no division per value).
    fn update_f64_wide(&mut self, values: &[f64]) {
        let Some(stats) = self.numeric.as_mut() else {
            return;
        };
        self.count += values.len() as u64;
        let mut finite: Vec<f64> = Vec::with_capacity(values.len());
        let mut sum = 0.0f64;
        for &v in values {
            if v.is_finite() {
                let v = if v == 0.0 { 0.0 } else { v };
                sum += v;
                finite.push(v);
            } else if v.is_nan() {
                stats.nan += 1;
            } else if v > 0.0 {
                stats.pos_inf += 1;
            } else {
                stats.neg_inf += 1;
            }
        }
        // The distinct sketch is idempotent: one update per special value.
        for (seen, v) in [
            (stats.nan, f64::NAN),
            (stats.pos_inf, f64::INFINITY),
            (stats.neg_inf, f64::NEG_INFINITY),
        ] {
            if seen > 0 {
                self.distinct.update_f64(v);
            }
        }
        let n = finite.len() as u64;
        if n == 0 {
            return;
        }
        let mean = sum / n as f64;
        let m2: f64 = finite.iter().map(|v| (v - mean) * (v - mean)).sum();
        stats.moments.merge(&Moments { n, mean, m2 });
        let runs = sorted_runs(finite);
        if let (Some(&(lo, _)), Some(&(hi, _))) = (runs.first(), runs.last()) {
            stats.min = Some(stats.min.map_or(lo, |m| m.min(lo)));
            stats.max = Some(stats.max.map_or(hi, |m| m.max(hi)));
        }
        for &(v, _) in &runs {
            self.distinct.update_f64(v);
        }
        if let Some(tails) = stats.tails.as_mut() {
            tails.add_sorted_runs(&runs);
        }
        stats.sketch.update_sorted_counts(&runs);
    }

    /// Adds counted numbers, `(canonical_bits(value), count)` in any order:
    /// they are added in value order, so the profile does not depend on the
    /// order of the counts.
    pub fn update_f64_counts(&mut self, counts: impl IntoIterator<Item = (u64, u64)>) {
        let mut pairs: Vec<(f64, u64)> = counts
            .into_iter()
            .map(|(bits, n)| (f64::from_bits(bits), n))
            .collect();
        pairs.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        for (v, n) in pairs {
            self.update_f64_n(v, n);
        }
    }

    /// Adds a number `n` times.
    ///
    /// While the column has at most [`SMALL_DOMAIN_LIMIT`] distinct values,
    /// the small domain *is* the distribution and the quantile sketch stays
    /// empty (see [`NumericStats::quantiles`]); when the domain overflows, the
    /// sketch is built from it (exactly) and updated from then on.
    pub fn update_f64_n(&mut self, value: f64, n: u64) {
        let Some(stats) = self.numeric.as_mut() else {
            return;
        };
        if n == 0 {
            return;
        }
        self.count += n;
        self.distinct.update_f64(value);
        if value.is_nan() {
            stats.nan += n;
            return;
        }
        if value.is_infinite() {
            if value > 0.0 {
                stats.pos_inf += n;
            } else {
                stats.neg_inf += n;
            }
            return;
        }
        let value = if value == 0.0 { 0.0 } else { value };
        stats.min = Some(stats.min.map_or(value, |m| m.min(value)));
        stats.max = Some(stats.max.map_or(value, |m| m.max(value)));
        stats.moments.update_weighted(value, n);
        if let Some(tails) = stats.tails.as_mut() {
            tails.add(value, n);
        }
        if let Some(exact) = stats.exact_values.as_mut() {
            if exact.len() + n as usize <= EXACT_LIMIT {
                exact.extend(std::iter::repeat_n(value, n as usize));
            } else {
                stats.exact_values = None;
            }
        }
        match stats.small_domain.as_mut() {
            Some(domain) => match domain.binary_search_by(|(v, _)| v.total_cmp(&value)) {
                Ok(i) => domain[i].1 += n,
                Err(_) if domain.len() >= SMALL_DOMAIN_LIMIT => {
                    let domain = stats.small_domain.take().unwrap_or_default();
                    let mut sketch = QuantileSketch::from_counts(&domain);
                    sketch.merge(&stats.sketch);
                    sketch.update_weighted(value, n);
                    stats.sketch = sketch;
                }
                Err(i) => domain.insert(i, (value, n)),
            },
            None => stats.sketch.update_weighted(value, n),
        }
    }

    /// Puts the profile in canonical form (sorts exact values). Call before
    /// comparing, storing or merging; [`ColumnProfile::merge`] does it itself.
    pub fn finish(&mut self) {
        if let Some(exact) = self.numeric.as_mut().and_then(|s| s.exact_values.as_mut()) {
            exact.sort_by(f64::total_cmp);
        }
    }

    /// Adds a category (categorical columns; ignored on numeric ones).
    pub fn update_str(&mut self, value: &str) {
        self.update_str_n(value, 1);
    }

    /// Adds `n` occurrences of a category at once: the same profile as `n`
    /// calls of [`ColumnProfile::update_str`] while frequencies are exact
    /// (the distinct sketch is idempotent), and one hash and one lookup
    /// instead of `n` — callers count a batch's values first.
    pub fn update_str_n(&mut self, value: &str, n: u64) {
        if self.kind != ColumnKind::Categorical || n == 0 {
            return;
        }
        self.count += n;
        self.distinct.update_str(value);
        self.frequencies.add(value, n);
    }

    /// Adds a batch's counted categories: each distinct value once, and the
    /// frequency summary reduced at most once for the whole batch.
    pub fn update_str_counts<'a>(&mut self, counts: impl IntoIterator<Item = (&'a str, u64)>) {
        let mut batch: std::collections::HashMap<&'a str, u64, foldhash::fast::FixedState> =
            std::collections::HashMap::default();
        for (value, n) in counts {
            *batch.entry(value).or_insert(0) += n;
        }
        self.update_str_count_map(batch);
    }

    /// [`ColumnProfile::update_str_counts`] for counts already in a map.
    pub fn update_str_count_map<S: std::hash::BuildHasher>(
        &mut self,
        batch: std::collections::HashMap<&str, u64, S>,
    ) {
        let n = batch.values().sum();
        self.update_str_summary(batch, n, true);
    }

    /// Adds a Misra–Gries summary of `n` non-null values counted elsewhere
    /// (see [`Frequencies::add_summary_map`]): its counters, exact counts
    /// when `exact`. Values the summary dropped must already be in the
    /// distinct sketch; the counters' values are added to it here.
    pub fn update_str_summary<S: std::hash::BuildHasher>(
        &mut self,
        batch: std::collections::HashMap<&str, u64, S>,
        n: u64,
        exact: bool,
    ) {
        if self.kind != ColumnKind::Categorical {
            return;
        }
        self.count += n;
        for (value, c) in &batch {
            if *c > 0 {
                self.distinct.update_str(value);
            }
        }
        self.frequencies.add_summary_map(batch, n, exact);
    }

    /// Merges another profile of the same column.
    pub fn merge(&mut self, other: &ColumnProfile, column: &str) -> Result<()> {
        if self.kind != other.kind {
            return Err(ProfileError::Incompatible {
                column: column.to_string(),
                reason: format!("{:?} vs {:?}", self.kind, other.kind),
            });
        }
        self.finish();
        self.count += other.count;
        self.nulls += other.nulls;
        self.frequencies.merge(&other.frequencies);
        self.distinct.merge(&other.distinct);
        if let (Some(a), Some(b)) = (self.numeric.as_mut(), other.numeric.as_ref()) {
            // Two increasing parts are increasing together when one's values
            // all come before the other's (either way round: merge order is
            // not row order); an empty part changes nothing.
            a.increasing = match (a.increasing, b.increasing, a.max, b.min, b.max, a.min) {
                (Some(x), Some(y), Some(a_max), Some(b_min), Some(b_max), Some(a_min)) => {
                    Some(x && y && (a_max < b_min || b_max < a_min))
                }
                (Some(x), Some(y), ..) => Some(x && y),
                _ => None,
            };
            a.nan += b.nan;
            a.pos_inf += b.pos_inf;
            a.neg_inf += b.neg_inf;
            a.min = min_opt(a.min, b.min, f64::min);
            a.max = min_opt(a.max, b.max, f64::max);
            a.moments.merge(&b.moments);
            // Tails are known only when both parts kept them.
            a.tails = match (a.tails.take(), b.tails.as_ref()) {
                (Some(mut x), Some(y)) => {
                    x.merge(y);
                    Some(x)
                }
                _ => None,
            };
            a.exact_values = match (a.exact_values.take(), b.exact_values.as_ref()) {
                (Some(x), Some(y)) if x.len() + y.len() <= EXACT_LIMIT => {
                    let mut y = y.clone();
                    y.sort_by(f64::total_cmp);
                    Some(merge_sorted(&x, &y))
                }
                _ => None,
            };
            // A side with a small domain has its distribution there (its
            // sketch is empty, or redundant in files of older versions).
            let (a_sketch, b_sketch) = (a.quantiles().into_owned(), b.quantiles().into_owned());
            a.small_domain = match (a.small_domain.take(), b.small_domain.as_ref()) {
                (Some(x), Some(y)) => merge_domains(&x, y),
                _ => None,
            };
            a.sketch = if a.small_domain.is_some() {
                QuantileSketch::default()
            } else {
                let mut sketch = a_sketch;
                sketch.merge(&b_sketch);
                sketch
            };
        }
        Ok(())
    }

    /// Non-null values.
    pub fn non_null(&self) -> u64 {
        self.count - self.nulls
    }

    /// Records the row order of a run of values the caller sees in row
    /// order (NaN and ±inf skipped): `last` carries the previous finite
    /// value between calls. The result is stored by [`Self::set_increasing`].
    pub fn observe_order(values: impl IntoIterator<Item = f64>, last: &mut Option<f64>) -> bool {
        let mut increasing = true;
        for v in values.into_iter().filter(|v| v.is_finite()) {
            if last.is_some_and(|l| v < l) {
                increasing = false;
            }
            *last = Some(v);
        }
        increasing
    }

    /// Stores whether this profile's values increased row by row.
    pub fn set_increasing(&mut self, increasing: bool) {
        if let Some(s) = self.numeric.as_mut() {
            s.increasing = Some(increasing);
        }
    }

    /// Distinct non-null values: exact while the profile counts every value
    /// (`true`), else the HLL estimate (`false`).
    pub fn distinct_values(&self) -> (f64, bool) {
        match (&self.kind, &self.numeric) {
            (ColumnKind::Numeric, Some(s)) => {
                if let Some(d) = &s.small_domain {
                    return (d.len() as f64, true);
                }
                if let Some(v) = &s.exact_values {
                    let mut v = v.clone();
                    v.sort_by(f64::total_cmp);
                    v.dedup_by(|a, b| a.total_cmp(b).is_eq());
                    return (v.len() as f64, true);
                }
                (self.distinct.estimate(), false)
            }
            _ if self.frequencies.exact => (self.frequencies.items.len() as f64, true),
            _ => (self.distinct.estimate(), false),
        }
    }
}

fn min_opt(a: Option<f64>, b: Option<f64>, pick: fn(f64, f64) -> f64) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(pick(x, y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Merges two sorted `(value, count)` lists; `None` past [`SMALL_DOMAIN_LIMIT`].
fn merge_domains(a: &[(f64, u64)], b: &[(f64, u64)]) -> Option<Vec<(f64, u64)>> {
    let mut out: Vec<(f64, u64)> = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    loop {
        let next = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => match x.0.total_cmp(&y.0) {
                std::cmp::Ordering::Less => {
                    i += 1;
                    *x
                }
                std::cmp::Ordering::Greater => {
                    j += 1;
                    *y
                }
                std::cmp::Ordering::Equal => {
                    i += 1;
                    j += 1;
                    (x.0, x.1 + y.1)
                }
            },
            (Some(x), None) => {
                i += 1;
                *x
            }
            (None, Some(y)) => {
                j += 1;
                *y
            }
            (None, None) => break,
        };
        out.push(next);
        if out.len() > SMALL_DOMAIN_LIMIT {
            return None;
        }
    }
    Some(out)
}

fn merge_sorted(a: &[f64], b: &[f64]) -> Vec<f64> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].total_cmp(&b[j]).is_le() {
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// A reference baseline: the profiles of a dataset's columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetProfile {
    /// Always [`PROFILE_FORMAT`].
    pub format: String,
    /// [`PROFILE_VERSION`] when written by this driftwatch.
    pub version: u32,
    /// The dataset.
    pub dataset: String,
    /// Rows profiled.
    pub rows: u64,
    /// The batches profiled, in merge order.
    pub sources: Vec<String>,
    /// Column profiles by name.
    pub columns: BTreeMap<String, ColumnProfile>,
    /// Columns of the data left unprofiled for their type, with the type and
    /// why (`binary: …`); drift reports list them (issue 17).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unprofiled: BTreeMap<String, String>,
}

impl DatasetProfile {
    /// An empty profile of a dataset.
    pub fn new(dataset: impl Into<String>) -> Self {
        Self {
            format: PROFILE_FORMAT.to_string(),
            version: PROFILE_VERSION,
            dataset: dataset.into(),
            rows: 0,
            sources: Vec::new(),
            columns: BTreeMap::new(),
            unprofiled: BTreeMap::new(),
        }
    }

    /// Merges another profile of the same dataset. A column in only one of them
    /// keeps its profile (its counts then cover only the batches that had it).
    pub fn merge(&mut self, other: &DatasetProfile) -> Result<()> {
        self.rows += other.rows;
        self.sources.extend(other.sources.iter().cloned());
        for (name, why) in &other.unprofiled {
            self.unprofiled
                .entry(name.clone())
                .or_insert_with(|| why.clone());
        }
        for (name, column) in &other.columns {
            match self.columns.get_mut(name) {
                Some(mine) => mine.merge(column, name)?,
                None => {
                    self.columns.insert(name.clone(), column.clone());
                }
            }
        }
        Ok(())
    }

    /// Writes the profile as pretty JSON.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut finished = self.clone();
        finished
            .columns
            .values_mut()
            .for_each(ColumnProfile::finish);
        let text = serde_json::to_string_pretty(&finished).map_err(|e| ProfileError::Format {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        std::fs::write(path, text + "\n").map_err(|source| ProfileError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads a profile, checking its format and version.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(path, &text)
    }

    /// Parses a profile from JSON text; `path` is for messages.
    pub fn from_json(path: &Path, text: &str) -> Result<Self> {
        #[derive(Deserialize)]
        struct Header {
            format: Option<String>,
            version: Option<u32>,
        }
        let format_error = |reason: String| ProfileError::Format {
            path: path.to_path_buf(),
            reason,
        };
        let header: Header = serde_json::from_str(text).map_err(|e| format_error(e.to_string()))?;
        if header.format.as_deref() != Some(PROFILE_FORMAT) {
            return Err(format_error(format!(
                "missing `\"format\": \"{PROFILE_FORMAT}\"`"
            )));
        }
        match header.version {
            Some(MIN_PROFILE_VERSION..=PROFILE_VERSION) => {}
            Some(found) => {
                return Err(ProfileError::Version {
                    path: path.to_path_buf(),
                    found,
                });
            }
            None => return Err(format_error("missing `version`".to_string())),
        }
        serde_json::from_str(text).map_err(|e| format_error(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn numeric(values: &[Option<f64>]) -> ColumnProfile {
        let mut p = ColumnProfile::new(ColumnKind::Numeric, "float64");
        for v in values {
            match v {
                Some(x) => p.update_f64(*x),
                None => p.update_null(),
            }
        }
        p.finish();
        p
    }

    #[test]
    fn counts_special_values_apart() {
        let p = numeric(&[
            Some(1.0),
            None,
            Some(f64::NAN),
            Some(f64::INFINITY),
            Some(-0.0),
            Some(3.0),
        ]);
        let s = p.numeric.as_ref().unwrap();
        assert_eq!(
            (p.count, p.nulls, s.nan, s.pos_inf, s.neg_inf),
            (6, 1, 1, 1, 0)
        );
        assert_eq!((s.min, s.max), (Some(0.0), Some(3.0)));
        assert_eq!(s.exact_values.as_deref(), Some(&[0.0, 1.0, 3.0][..]));
        assert_eq!(s.moments.n, 3);
        assert_eq!(
            s.small_domain.as_deref(),
            Some(&[(0.0, 1), (1.0, 1), (3.0, 1)][..])
        );
        assert_eq!(p.frequencies.n, 0);
    }

    #[test]
    fn issue_17_epoch_units_read_as_times_dates_and_durations() {
        let ts = epoch_unit("timestamp(UTC) [us]").unwrap();
        assert_eq!(ts.format_value(1_704_067_200.5), "2024-01-01T00:00:00.500Z");
        assert_eq!(ts.format_difference(-5400.0), "-1.5 h");
        let day = epoch_unit("date32").unwrap();
        assert_eq!(day.format_value(19_723.0), "2024-01-01");
        assert_eq!(day.format_difference(3.0), "+3 days");
        assert_eq!(
            epoch_unit("duration(ns)").unwrap().format_value(90.0),
            "1.5 min"
        );
        assert_eq!(
            epoch_unit("time64(µs)").unwrap().format_value(3_723.0),
            "01:02:03"
        );
        assert_eq!(epoch_unit("float64"), None);
    }

    #[test]
    fn exact_values_stop_past_the_limit() {
        let values: Vec<Option<f64>> = (0..=EXACT_LIMIT).map(|i| Some(i as f64)).collect();
        let p = numeric(&values);
        let s = p.numeric.unwrap();
        assert_eq!(s.exact_values, None);
        assert_eq!(s.small_domain, None);
    }

    #[test]
    fn profile_file_round_trips_and_checks_its_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.profile");
        let mut d = DatasetProfile::new("flights");
        d.rows = 3;
        d.sources.push("a.parquet".into());
        d.columns
            .insert("x".into(), numeric(&[Some(1.0), None, Some(2.0)]));
        let mut c = ColumnProfile::new(ColumnKind::Categorical, "utf8");
        c.update_str("EWR");
        d.columns.insert("origin".into(), c);
        d.write(&path).unwrap();
        assert_eq!(DatasetProfile::read(&path).unwrap(), d);

        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("\"version\": 2", "\"version\": 99");
        let e = DatasetProfile::from_json(&path, &text)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("profile format version 99 is not supported"),
            "{e}"
        );
        // Issue 17: a version 1 file (categories exact up to 1,000) still loads.
        let v1 = std::fs::read_to_string(&path)
            .unwrap()
            .replace("\"version\": 2", "\"version\": 1")
            .replace("\"limit\": 65536", "\"limit\": 1000");
        let old = DatasetProfile::from_json(&path, &v1).unwrap();
        assert_eq!(old.version, 1);
        assert_eq!(old.columns["origin"].frequencies.limit, 1000);
        assert_eq!(old.columns["origin"].frequencies.items.get("EWR"), Some(&1));
        let e = DatasetProfile::from_json(&path, "{\"a\": 1}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a driftwatch profile"), "{e}");
        assert!(DatasetProfile::from_json(&path, "not json").is_err());
    }

    #[test]
    fn wide_batches_past_the_exact_limit_match_single_updates() {
        // 30,000 values from ~20,000 distinct ones, some NaN and infinite:
        // past both the small domain and the exact values after one batch.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let values: Vec<f64> = (0..30_000)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                match i % 997 {
                    0 => f64::NAN,
                    1 => f64::INFINITY,
                    _ => (x % 20_000) as f64 * 0.25 - 1000.0,
                }
            })
            .collect();
        let mut one = ColumnProfile::new(ColumnKind::Numeric, "float64");
        for &v in &values {
            one.update_f64(v);
        }
        let mut batched = ColumnProfile::new(ColumnKind::Numeric, "float64");
        for chunk in values.chunks(8192) {
            batched.update_f64_batch(chunk);
        }
        let (o, b) = (
            one.numeric.as_ref().unwrap(),
            batched.numeric.as_ref().unwrap(),
        );
        assert_eq!(batched.count, one.count);
        assert_eq!((b.nan, b.pos_inf, b.neg_inf), (o.nan, o.pos_inf, o.neg_inf));
        assert_eq!((b.min, b.max), (o.min, o.max));
        assert!(b.small_domain.is_none() && b.exact_values.is_none());
        assert_eq!(b.moments.n, o.moments.n);
        assert!((b.moments.mean - o.moments.mean).abs() < 1e-9 * o.moments.mean.abs());
        assert!((b.moments.m2 - o.moments.m2).abs() < 1e-9 * o.moments.m2);
        assert_eq!(b.sketch.n(), o.sketch.n());
        let mut finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        finite.sort_by(f64::total_cmp);
        let n = finite.len() as f64;
        for q in [0.05, 0.25, 0.5, 0.75, 0.95] {
            let got = b.sketch.quantile(q).unwrap();
            let rank = finite.partition_point(|v| *v <= got) as f64;
            assert!(
                (rank - q * n).abs() <= b.sketch.rank_error_bound() * n + 1.0,
                "q {q}"
            );
        }
    }

    fn opt_values() -> impl Strategy<Value = Vec<Option<f64>>> {
        proptest::collection::vec(
            prop_oneof![
                8 => (-1e4f64..1e4).prop_map(|v| Some((v * 100.0).round() / 100.0)),
                1 => Just(None),
                1 => Just(Some(f64::NAN)),
                1 => Just(Some(f64::INFINITY)),
            ],
            0..300,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Merging profiles of parts equals the profile of the whole: exactly for
        /// counts, extremes, exact values and frequencies; within 1e-9 for moments.
        #[test]
        fn merge_of_parts_equals_profile_of_whole(values in opt_values(), cut in 0usize..300) {
            let cut = cut.min(values.len());
            let whole = numeric(&values);
            let (a, b) = (numeric(&values[..cut]), numeric(&values[cut..]));
            for (first, second) in [(&a, &b), (&b, &a)] {
                let mut merged = first.clone();
                merged.merge(second, "x").unwrap();
                prop_assert_eq!((merged.count, merged.nulls), (whole.count, whole.nulls));
                let (m, w) = (merged.numeric.as_ref().unwrap(), whole.numeric.as_ref().unwrap());
                prop_assert_eq!((m.nan, m.pos_inf, m.neg_inf), (w.nan, w.pos_inf, w.neg_inf));
                prop_assert_eq!((m.min, m.max), (w.min, w.max));
                prop_assert_eq!(&m.exact_values, &w.exact_values);
                prop_assert_eq!(&m.small_domain, &w.small_domain);
                prop_assert_eq!(m.moments.n, w.moments.n);
                prop_assert!((m.moments.mean - w.moments.mean).abs() <= 1e-9 * w.moments.mean.abs().max(1.0));
                prop_assert_eq!(&merged.frequencies, &whole.frequencies);
                prop_assert_eq!(merged.distinct.estimate(), whole.distinct.estimate());
            }
        }

        /// Batched updates (counted per batch while the domain is small) and
        /// one-by-one updates describe the same values; past the small domain
        /// both sketches keep their rank-error bound, across merges too.
        #[test]
        fn batches_and_single_updates_describe_the_same_values(
            values in proptest::collection::vec(
                prop_oneof![
                    6 => (0i32..40).prop_map(f64::from),
                    3 => (-5000i32..5000).prop_map(|v| f64::from(v) * 0.5),
                    1 => Just(f64::NAN),
                ],
                0..4000,
            ),
            batch in 1usize..700,
            cut in 0usize..4000,
        ) {
            let mut one = ColumnProfile::new(ColumnKind::Numeric, "float64");
            for &v in &values {
                one.update_f64(v);
            }
            one.finish();
            let batched = |part: &[f64]| {
                let mut p = ColumnProfile::new(ColumnKind::Numeric, "float64");
                for chunk in part.chunks(batch) {
                    p.update_f64_batch(chunk);
                }
                p.finish();
                p
            };
            let cut = cut.min(values.len());
            let mut merged = batched(&values[..cut]);
            merged.merge(&batched(&values[cut..]), "x").unwrap();
            merged.finish();
            let mut finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
            finite.sort_by(f64::total_cmp);
            for p in [&batched(&values), &merged] {
                prop_assert_eq!(p.count, one.count);
                let (s, o) = (p.numeric.as_ref().unwrap(), one.numeric.as_ref().unwrap());
                prop_assert_eq!(s.nan, o.nan);
                prop_assert_eq!((s.min, s.max), (o.min, o.max));
                prop_assert_eq!(&s.exact_values, &o.exact_values);
                prop_assert_eq!(&s.small_domain, &o.small_domain);
                prop_assert_eq!(s.moments.n, o.moments.n);
                prop_assert!((s.moments.mean - o.moments.mean).abs() <= 1e-9 * o.moments.mean.abs().max(1.0));
                // HLL's estimator depends on insertion order past its exact
                // (small-cardinality) mode; both stay within its error.
                let (d, e) = (p.distinct.estimate(), one.distinct.estimate());
                prop_assert!((d - e).abs() <= 0.05 * e.max(1.0), "{} vs {}", d, e);
                let sketch = s.quantiles();
                prop_assert_eq!(sketch.n(), finite.len() as u64);
                if s.small_domain.is_some() {
                    prop_assert!(s.sketch.is_empty(), "no sketch while the domain holds");
                }
                // Rank error within the documented bound (0 from a small domain).
                let bound = if s.small_domain.is_some() { 0.0 } else { sketch.rank_error_bound() };
                for q in [0.1, 0.25, 0.5, 0.75, 0.9] {
                    if let Some(x) = sketch.quantile(q) {
                        let below = finite.partition_point(|v| *v < x) as f64;
                        let upto = finite.partition_point(|v| *v <= x) as f64;
                        let n = finite.len() as f64;
                        let target = q * n;
                        let miss = if target < below { below - target } else if target > upto { target - upto } else { 0.0 };
                        prop_assert!(miss <= bound * n + 1.0, "q {} -> {} misses by {} (bound {})", q, x, miss, bound * n);
                    }
                }
            }
        }

        /// Issue 17: `increasing` of parts profiled in row order merges (in
        /// either order) to whether the whole, read part by part, increases —
        /// and survives a JSON round trip.
        #[test]
        fn issue_17_increasing_merges_as_the_row_order_of_the_parts(
            values in proptest::collection::vec(-50i32..50, 1..200),
            cut in 0usize..200,
            sort in any::<bool>(),
        ) {
            // Distinct values (ties are "increasing" within a part but not
            // across parts, which this oracle does not model).
            let mut seen = std::collections::BTreeSet::new();
            let mut values: Vec<f64> = values
                .into_iter()
                .filter(|v| seen.insert(*v))
                .map(f64::from)
                .collect();
            if sort {
                values.sort_by(f64::total_cmp);
            }
            let cut = cut.min(values.len());
            let part = |v: &[f64]| {
                let mut p = ColumnProfile::new(ColumnKind::Numeric, "int64");
                v.iter().for_each(|&x| p.update_f64(x));
                let mut last = None;
                p.set_increasing(ColumnProfile::observe_order(v.iter().copied(), &mut last));
                p.finish();
                p
            };
            let whole_increasing = values.windows(2).all(|w| w[0] < w[1]);
            let (a, b) = (part(&values[..cut]), part(&values[cut..]));
            for (x, y) in [(&a, &b), (&b, &a)] {
                let mut m = x.clone();
                m.merge(y, "x").unwrap();
                prop_assert_eq!(m.numeric.as_ref().unwrap().increasing, Some(whole_increasing));
                let mut d = DatasetProfile::new("t");
                d.columns.insert("x".into(), m.clone());
                let back = DatasetProfile::from_json(Path::new("mem"), &serde_json::to_string(&d).unwrap()).unwrap();
                prop_assert_eq!(back.columns["x"].numeric.as_ref().unwrap().increasing, Some(whole_increasing));
            }
        }

        /// The array-counting fast path (issue 19) counts exactly what
        /// hashing value by value counts: whole numbers in short and long
        /// spans, signed zeros, fractions, NaN and infinities.
        #[test]
        fn issue_19_counting_by_offset_equals_counting_by_hash(
            values in proptest::collection::vec(
                prop_oneof![
                    6 => (-50i32..50).prop_map(f64::from),
                    1 => Just(-0.0),
                    1 => Just(1e15),
                    1 => Just(4_503_599_627_370_497.0),
                    1 => Just(0.5),
                    1 => Just(f64::NAN),
                    1 => Just(f64::NEG_INFINITY),
                ],
                0..400,
            ),
            only_small in any::<bool>(),
        ) {
            let values: Vec<f64> = if only_small {
                values.into_iter().filter(|v| v.abs() < 100.0).collect()
            } else {
                values
            };
            let mut fast = NumberCounts::default();
            count_numbers(&values, &mut fast);
            let mut slow = NumberCounts::default();
            for &v in &values {
                *slow.entry(canonical_bits(v)).or_insert(0) += 1;
            }
            prop_assert_eq!(fast, slow);
        }

        /// Issue 19: integers counted by offset (a single value, four
        /// interleaved arrays, one array) or hashed run by run give the
        /// counts of hashing value by value.
        #[test]
        fn issue_19_integer_counts_equal_counting_by_hash(
            values in proptest::collection::vec(
                prop_oneof![4 => -3i64..3, 2 => -2000i64..2000, 1 => Just(1i64 << 40)],
                0..3000,
            ),
            sorted in any::<bool>(),
            constant in any::<bool>(),
        ) {
            let mut values = values;
            if sorted {
                values.sort_unstable();
            }
            if constant {
                values.iter_mut().for_each(|v| *v = -7);
            }
            let mut fast = NumberCounts::default();
            if let (Some(&lo), Some(&hi)) = (values.iter().min(), values.iter().max()) {
                count_integers(&values, lo, hi, &mut fast);
            }
            let mut slow = NumberCounts::default();
            for &v in &values {
                *slow.entry(canonical_bits(v as f64)).or_insert(0) += 1;
            }
            prop_assert_eq!(fast, slow);
        }

        #[test]
        fn serialization_round_trips(values in opt_values()) {
            let mut d = DatasetProfile::new("t");
            d.columns.insert("x".into(), numeric(&values));
            let text = serde_json::to_string(&d).unwrap();
            let back = DatasetProfile::from_json(Path::new("mem"), &text).unwrap();
            // NaN is not equal to itself, but the profile stores no NaN values.
            prop_assert_eq!(back, d);
        }
    }
}
