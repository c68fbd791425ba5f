//! Anomaly detection on a metric's own history: the method behind the
//! `anomaly` check kind, and the history it learns from.
//!
//! Pure logic, no I/O and no DataFusion: the engine computes a batch's
//! metric value in its one scan; [`Series::judge`] compares it with the
//! series of earlier values and [`Series::push`] adds it. Where a series
//! lives is the caller's business — the agent's state store, or the history
//! file of `driftwatch check --history` ([`history`]).
//!
//! # The method (documented for users in `rules/README.md`)
//!
//! * **Reference.** The history window (the last N batches, or the batches
//!   of the last duration before this batch's time). A batch judged
//!   anomalous is kept, flagged: it never enters a centre (median), and it
//!   enters the noise scale only by its rank (the MAD sees on which side of
//!   it a residual lies, not how far out), so an anomaly of any size moves
//!   the band by one rank step at most. (Leaving anomalies out of the scale
//!   too would shrink it, as a truncated sample, and raise the false-alarm
//!   rate.) The flags also let a level shift be recognised.
//! * **Seasonality.** `none` compares with every batch; `hourly`, `daily`
//!   and `weekly` (the period) compare with the batches in the same slot of
//!   the period: the same minute of the hour, hour of the day, day of the
//!   week (UTC) of the batch's event time.
//! * **Band.** centre = median of the slot's reference values; scale =
//!   1.4826 × the median absolute leave-one-out residual of all reference
//!   batches (each against the median of its slot's other batches, divided
//!   by that median's own error; pooled over slots, so a slot needs few
//!   batches; 1.4826 × MAD estimates σ for normal noise). With seasonality
//!   the residuals are pooled relative to their slot's median and scaled
//!   back by the centre (noise proportional to the level, as in volumes). The band is
//!   centre ± k × scale with k = z(1 − α/2) (z(1 − α) for one direction)
//!   widened for the estimation error of the centre and the scale:
//!   k = t_{ν}(…) × √(1 + π/(2·n_slot)), ν = 0.37·(n − s) (s slots), where α is
//!   `sensitivity`: the expected false-alarm rate per normal batch under
//!   normal noise. A scale of 0 (a metric that never moved) falls back to the
//!   mean absolute residual; if that is 0 too the band is the constant.
//! * **Level shift.** A run of [`SHIFT_RUN`] consecutive batches anomalous
//!   in the same direction is taken as a new level: the batch completing the
//!   run still fails, and from the next batch on the earlier history is
//!   moved by the run's median residual and the run's batches count as
//!   normal.
//! * **Warm-up.** With fewer than `min_history` reference batches, or fewer
//!   than [`MIN_SLOT_BATCHES`] in the batch's slot, the check is `skipped`.

pub mod arrivals;
pub mod history;

use std::time::Duration;

use chrono::{DateTime, Datelike, Timelike, Utc, Weekday};
use serde::{Deserialize, Serialize};

/// Consecutive same-direction anomalies after which the new level is normal.
pub const SHIFT_RUN: usize = 3;

/// Fewest reference batches in the batch's seasonal slot for a band.
pub const MIN_SLOT_BATCHES: usize = 3;

/// Most points a series keeps, whatever its history length says (a bound on
/// store and file size: 10,000 points is about 400 KiB of JSON).
pub const MAX_POINTS: usize = 10_000;

/// Default `sensitivity`: one false alarm per 1,000 normal batches.
pub const DEFAULT_SENSITIVITY: f64 = 0.001;

/// Default `min_history`.
pub const DEFAULT_MIN_HISTORY: usize = 10;

/// Default `history`: the last 60 batches.
pub const DEFAULT_HISTORY: HistoryLength = HistoryLength::Batches(60);

/// Which batches a batch is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Seasonality {
    /// Every batch of the history.
    #[default]
    None,
    /// Batches at the same minute of the hour.
    Hourly,
    /// Batches at the same hour of the day (UTC).
    Daily,
    /// Batches on the same day of the week (UTC).
    Weekly,
}

impl Seasonality {
    /// The name as written in rule files.
    pub fn name(self) -> &'static str {
        match self {
            Seasonality::None => "none",
            Seasonality::Hourly => "hourly",
            Seasonality::Daily => "daily",
            Seasonality::Weekly => "weekly",
        }
    }

    /// The slot of the period an instant falls in.
    pub fn slot(self, t: DateTime<Utc>) -> u32 {
        match self {
            Seasonality::None => 0,
            Seasonality::Hourly => t.minute(),
            Seasonality::Daily => t.hour(),
            Seasonality::Weekly => t.weekday().num_days_from_monday(),
        }
    }

    /// How a slot reads in a reason: `for Sundays`, `at 14:00`, `at minute 5`.
    pub fn describe(self, t: DateTime<Utc>) -> String {
        match self {
            Seasonality::None => String::new(),
            Seasonality::Hourly => format!(" at minute {} of the hour", t.minute()),
            Seasonality::Daily => format!(" at {:02}:00 UTC", t.hour()),
            Seasonality::Weekly => format!(" for {}s", weekday_name(t.weekday())),
        }
    }
}

fn weekday_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Mon => "Monday",
        Weekday::Tue => "Tuesday",
        Weekday::Wed => "Wednesday",
        Weekday::Thu => "Thursday",
        Weekday::Fri => "Friday",
        Weekday::Sat => "Saturday",
        Weekday::Sun => "Sunday",
    }
}

/// Which departures are anomalies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Above or below the band.
    #[default]
    Both,
    /// Above only.
    Up,
    /// Below only.
    Down,
}

impl Direction {
    /// The name as written in rule files.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Both => "both",
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

/// How much history a band is learned from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryLength {
    /// The last N batches.
    Batches(usize),
    /// The batches of this long before the batch's time.
    Duration(Duration),
}

impl HistoryLength {
    /// Parses `60 batches`, `1 batch` or a duration such as `28d`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        let mut words = trimmed.split_whitespace();
        if let (Some(number), Some(unit), None) = (words.next(), words.next(), words.next())
            && matches!(unit, "batches" | "batch")
        {
            let n: usize = number
                .parse()
                .map_err(|_| format!("`{text}`: expected a whole number of batches"))?;
            if n == 0 || n > MAX_POINTS {
                return Err(format!(
                    "`{text}`: the history must be between 1 and {MAX_POINTS} batches"
                ));
            }
            return Ok(HistoryLength::Batches(n));
        }
        match crate::rules::parse_duration(trimmed) {
            Ok(d) if !d.is_zero() => Ok(HistoryLength::Duration(d)),
            Ok(_) => Err(format!("`{text}`: the history must be longer than zero")),
            Err(e) => Err(format!(
                "{e}; write a number of batches (`60 batches`) or a duration (`28d`)"
            )),
        }
    }

    /// As written in reports: `60 batches`, `28d`.
    pub fn text(self) -> String {
        match self {
            HistoryLength::Batches(n) => format!("{n} batches"),
            HistoryLength::Duration(d) => crate::rules::format_duration(d),
        }
    }
}

/// The settings of one `anomaly` check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// How much history.
    pub history: HistoryLength,
    /// Which batches are compared.
    pub seasonality: Seasonality,
    /// Expected false-alarm rate per normal batch (α), in (0, 0.5).
    pub sensitivity: f64,
    /// Which departures count.
    pub direction: Direction,
    /// Reference batches needed before the check judges.
    pub min_history: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            history: DEFAULT_HISTORY,
            seasonality: Seasonality::None,
            sensitivity: DEFAULT_SENSITIVITY,
            direction: Direction::Both,
            min_history: DEFAULT_MIN_HISTORY,
        }
    }
}

/// A side of the band.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// Above the band.
    Above,
    /// Below the band.
    Below,
}

/// One batch's value in a series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Event time, Unix seconds.
    pub t: i64,
    /// The metric value.
    pub v: f64,
    /// The band's centre it was judged against (null while warming up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub center: Option<f64>,
    /// Set when the batch was anomalous (and is left out of the reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomalous: Option<Side>,
}

/// A level shift taken as the new normal: earlier values are moved by `delta`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shift {
    /// Event time of the run's first batch (Unix seconds).
    pub t: i64,
    /// Added to every value before `t`.
    pub delta: f64,
}

/// The history of one metric of one dataset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// The metric's definition; a series of another definition is not this one's history.
    pub definition: String,
    /// Values, in arrival order.
    pub points: Vec<Point>,
    /// Level shifts accepted, oldest first.
    #[serde(default)]
    pub shifts: Vec<Shift>,
}

/// The expected band.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Band {
    /// The median of the comparable batches.
    pub center: f64,
    /// Lowest normal value (−∞ for `direction: up`).
    pub low: f64,
    /// Highest normal value (+∞ for `direction: down`).
    pub high: f64,
    /// The robust noise scale (σ estimate).
    pub scale: f64,
}

/// What the method says about one value.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not enough history yet.
    Skipped,
    /// Inside the band.
    Normal,
    /// Outside it.
    Anomalous(Side),
}

/// A judgement of one value against a series.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// The verdict.
    pub verdict: Verdict,
    /// The band, when there was enough history.
    pub band: Option<Band>,
    /// Reference batches used (or found, when skipped).
    pub history: usize,
    /// Reference batches in the value's seasonal slot.
    pub in_slot: usize,
    /// Set when this value completes a level-shift run: the delta to apply.
    pub shift: Option<f64>,
    /// A one-line explanation.
    pub reason: String,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The band multiplier for `n` reference batches, `n_slot` of them in the slot.
pub fn multiplier(settings: &Settings, n: usize, n_slot: usize) -> f64 {
    use statrs::distribution::{ContinuousCDF, StudentsT};
    let alpha = settings.sensitivity;
    let p = match settings.direction {
        Direction::Both => 1.0 - alpha / 2.0,
        Direction::Up | Direction::Down => 1.0 - alpha,
    };
    // The MAD's efficiency for normal data is 37 %: its estimate of σ is as
    // uncertain as a standard deviation's from 0.37·n values.
    let dof = (0.37 * (n.saturating_sub(1)) as f64).max(1.0);
    let t = StudentsT::new(0.0, 1.0, dof)
        .map(|d| d.inverse_cdf(p))
        .unwrap_or(f64::INFINITY);
    // The slot median's own error: variance π/2·σ²/n for normal data.
    t * (1.0 + std::f64::consts::FRAC_PI_2 / n_slot.max(1) as f64).sqrt()
}

/// Variance of the median of `m` independent standard normal values
/// (`tests/fixtures/median_variance.py` computes the table exactly by
/// integration; beyond it π/(2(m + 1)), within 2 % at m = 40).
fn median_variance(m: usize) -> f64 {
    const TABLE: [f64; 40] = [
        1.00000000, 0.50000000, 0.44867110, 0.29819962, 0.28683366, 0.21474267, 0.21044686,
        0.16818086, 0.16610128, 0.13832644, 0.13716243, 0.11751619, 0.11679900, 0.10216784,
        0.10169465, 0.09037521, 0.09004658, 0.08102851, 0.08079098, 0.07343703, 0.07325975,
        0.06714811, 0.06701230, 0.06185261, 0.06174626, 0.05733213, 0.05724729, 0.05342799,
        0.05335923, 0.05002209, 0.04996558, 0.04702470, 0.04697769, 0.04436644, 0.04432692,
        0.04199280, 0.04195926, 0.03986038, 0.03983166, 0.03793416,
    ];
    match m {
        0 => f64::INFINITY,
        1..=40 => TABLE[m - 1],
        _ => std::f64::consts::FRAC_PI_2 / (m as f64 + 1.0),
    }
}

/// The median of sorted `values` without the one at `skip` (at least one
/// value must remain).
fn median_of_sorted_without(values: &[f64], skip: usize) -> f64 {
    let n = values.len() - 1;
    let at = |i: usize| values[if i < skip { i } else { i + 1 }];
    if n % 2 == 1 {
        at(n / 2)
    } else {
        (at(n / 2 - 1) + at(n / 2)) / 2.0
    }
}

/// `1234567.0` → `1,234,567`; from 100 on rounded to a whole number
/// (a band edge of 837.5189 rows reads as 838); below, up to 4 decimals.
pub fn format_value(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        let digits = format!("{}", v.abs() as u64);
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        return if v < 0.0 { format!("-{out}") } else { out };
    }
    if v.abs() >= 100.0 {
        return format_value(v.round());
    }
    let text = format!("{v:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.to_string()
}

impl Series {
    /// An empty series of `definition`.
    pub fn new(definition: impl Into<String>) -> Self {
        Series {
            definition: definition.into(),
            points: Vec::new(),
            shifts: Vec::new(),
        }
    }

    /// The points of the history window for a value at `t`, in order.
    fn window(&self, settings: &Settings, t: i64) -> Vec<&Point> {
        match settings.history {
            HistoryLength::Batches(n) => {
                let start = self.points.len().saturating_sub(n);
                self.points[start..].iter().collect()
            }
            // Batches may arrive out of time order (a backfill): by time, not position.
            HistoryLength::Duration(d) => {
                let from = t.saturating_sub(i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
                self.points
                    .iter()
                    .filter(|p| p.t >= from && p.t <= t)
                    .collect()
            }
        }
    }

    /// A point's value moved by the level shifts accepted after it.
    fn adjusted(&self, p: &Point) -> f64 {
        p.v + self
            .shifts
            .iter()
            .filter(|s| s.t > p.t)
            .map(|s| s.delta)
            .sum::<f64>()
    }

    /// Judges `v` at event time `t` (Unix seconds) against the series.
    /// `what` names the metric in the reason (`row_count`).
    pub fn judge(&self, settings: &Settings, what: &str, t: i64, v: f64) -> Judgement {
        let when = DateTime::from_timestamp(t, 0).unwrap_or_default();
        let slot = settings.seasonality.slot(when);
        // (slot, value, normal): anomalous batches are kept for the scale.
        let window: Vec<(u32, f64, bool)> = self
            .window(settings, t)
            .into_iter()
            .filter(|p| p.v.is_finite())
            .map(|p| {
                let at = DateTime::from_timestamp(p.t, 0).unwrap_or_default();
                (
                    settings.seasonality.slot(at),
                    self.adjusted(p),
                    p.anomalous.is_none(),
                )
            })
            .collect();
        let reference: Vec<(u32, f64)> = window
            .iter()
            .filter(|(_, _, normal)| *normal)
            .map(|(s, v, _)| (*s, *v))
            .collect();
        let n = reference.len();
        let mut in_slot: Vec<f64> = reference
            .iter()
            .filter(|(s, _)| *s == slot)
            .map(|(_, v)| *v)
            .collect();
        let n_slot = in_slot.len();
        let slot_text = settings.seasonality.describe(when);
        if n < settings.min_history.max(1) || n_slot < MIN_SLOT_BATCHES {
            let reason = if n < settings.min_history.max(1) {
                format!(
                    "learning: {n} of {} batches of history needed",
                    settings.min_history.max(1)
                )
            } else {
                format!(
                    "learning: {n_slot} of {MIN_SLOT_BATCHES} batches of history{slot_text} needed"
                )
            };
            return Judgement {
                verdict: Verdict::Skipped,
                band: None,
                history: n,
                in_slot: n_slot,
                shift: None,
                reason,
            };
        }
        let center = median(&mut in_slot);
        // Residuals within each slot, pooled over slots. With
        // seasonality the noise is taken as proportional to the level
        // (volumes: weekdays vary more in rows than Sundays), so residuals are
        // pooled relative to their slot's median; absolute when a median is 0.
        // Each slot's median is of its normal batches; every batch of the
        // window, anomalous ones too, gives a residual: the MAD sees only
        // which side of it a residual falls, never how far out, so an
        // anomaly of any size moves the scale by one rank at most — while
        // leaving anomalies out would shrink it (a truncated sample) and
        // raise the false-alarm rate.
        // (normal values, anomalous values) per slot.
        let mut by_slot: std::collections::BTreeMap<u32, (Vec<f64>, Vec<f64>)> = Default::default();
        for (s, value, normal) in &window {
            let entry = by_slot.entry(*s).or_default();
            if *normal {
                entry.0.push(*value);
            } else {
                entry.1.push(*value);
            }
        }
        let slots: Vec<(f64, Vec<f64>, Vec<f64>)> = by_slot
            .into_values()
            // A lone value has no other value to be compared with.
            .filter(|(normal, _)| normal.len() >= 2)
            .map(|(mut normal, anomalous)| {
                let m = median(&mut normal);
                normal.sort_by(f64::total_cmp);
                (m, normal, anomalous)
            })
            .collect();
        let relative = settings.seasonality != Seasonality::None
            && center != 0.0
            && slots.iter().all(|(m, _, _)| *m != 0.0);
        let mut residuals = Vec::with_capacity(n);
        for (m, normal, anomalous) in &slots {
            let unit = if relative { m.abs() } else { 1.0 };
            // Leave-one-out residuals: each normal value against the median of
            // its slot's *other* normal values (an anomalous one against all
            // of them), divided by √(1 + c) where c·σ² is that median's own
            // variance, so every residual is ≈ N(0, σ²) whatever the slot's
            // size. Residuals from a slot's own median are not: with 4 values
            // its two middle residuals tie at half their gap, and the pooled
            // MAD fell between clusters (2.4× the stated false-alarm rate;
            // issue 18, stop 24).
            let k = normal.len();
            let loo = 1.0 / (1.0 + median_variance(k - 1)).sqrt();
            for i in 0..k {
                let x = normal[i];
                let others = median_of_sorted_without(normal, i);
                residuals.push((x - others).abs() / unit * loo);
            }
            let all = 1.0 / (1.0 + median_variance(k)).sqrt();
            for x in anomalous.iter() {
                residuals.push((*x - *m).abs() / unit * all);
            }
        }
        let mut scale = 1.4826 * median(&mut residuals.clone());
        if scale.is_nan() || scale <= 0.0 {
            let mean_abs = residuals.iter().sum::<f64>() / residuals.len().max(1) as f64;
            scale = 1.2533 * mean_abs;
        }
        if relative {
            scale *= center.abs();
        }
        if !scale.is_finite() {
            scale = 0.0;
        }
        // Each slot's medians take one degree of freedom from its residuals.
        let independent = residuals
            .len()
            .saturating_sub(slots.len().saturating_sub(1));
        let k = multiplier(settings, independent.max(n_slot), n_slot);
        let width = if scale > 0.0 { k * scale } else { 0.0 };
        let (low, high) = match settings.direction {
            Direction::Both => (center - width, center + width),
            Direction::Up => (f64::NEG_INFINITY, center + width),
            Direction::Down => (center - width, f64::INFINITY),
        };
        let band = Band {
            center,
            low,
            high,
            scale,
        };
        // (NaN is refused before judging; were it here, it would be "above".)
        let side = if v.is_nan() || v > high {
            Some(Side::Above)
        } else if v < low {
            Some(Side::Below)
        } else {
            None
        };
        let band_text = match settings.direction {
            Direction::Both if low == high => format!("exactly {}", format_value(center)),
            Direction::Both => format!("{}–{}", format_value(low), format_value(high)),
            Direction::Up => format!("at most {}", format_value(high)),
            Direction::Down => format!("at least {}", format_value(low)),
        };
        let history_text = format!("{n} batches of history");
        let Some(side) = side else {
            return Judgement {
                verdict: Verdict::Normal,
                band: Some(band),
                history: n,
                in_slot: n_slot,
                shift: None,
                reason: format!(
                    "{what} {} is within the expected {band_text}{slot_text} ({history_text})",
                    format_value(v)
                ),
            };
        };
        let mut reason = format!(
            "{what} {} is {} the expected {band_text}{slot_text} ({history_text})",
            format_value(v),
            match side {
                Side::Above => "above",
                Side::Below => "below",
            }
        );
        // A run of same-side anomalies ending here is a new level.
        let run: Vec<&Point> = self.points.iter().rev().take(SHIFT_RUN - 1).collect();
        let shift = (run.len() == SHIFT_RUN - 1 && run.iter().all(|p| p.anomalous == Some(side)))
            .then(|| {
                let mut residuals: Vec<f64> = run
                    .iter()
                    .map(|p| p.v - p.center.unwrap_or(center))
                    .chain(std::iter::once(v - center))
                    .collect();
                median(&mut residuals)
            });
        if shift.is_some() {
            reason.push_str(&format!(
                "; {SHIFT_RUN} batches in a row {}: taken as a new level from the next batch on",
                match side {
                    Side::Above => "above",
                    Side::Below => "below",
                }
            ));
        }
        Judgement {
            verdict: Verdict::Anomalous(side),
            band: Some(band),
            history: n,
            in_slot: n_slot,
            shift,
            reason,
        }
    }

    /// Adds a judged value, applies a level shift it completes, and drops
    /// what the history window no longer needs.
    pub fn push(&mut self, settings: &Settings, t: i64, v: f64, judgement: &Judgement) {
        let anomalous = match judgement.verdict {
            Verdict::Anomalous(side) => Some(side),
            _ => None,
        };
        self.points.push(Point {
            t,
            v,
            center: judgement.band.map(|b| b.center),
            anomalous,
        });
        if let Some(delta) = judgement.shift {
            let start = self.points.len().saturating_sub(SHIFT_RUN);
            let first = self.points[start].t;
            for p in &mut self.points[start..] {
                p.anomalous = None;
            }
            self.shifts.push(Shift { t: first, delta });
        }
        // Keep the window plus a run's worth of points, at most MAX_POINTS.
        let keep_from = match settings.history {
            HistoryLength::Batches(n) => self.points.len().saturating_sub(n + SHIFT_RUN),
            HistoryLength::Duration(_) => 0,
        }
        .max(self.points.len().saturating_sub(MAX_POINTS));
        if keep_from > 0 {
            self.points.drain(..keep_from);
        }
        if let HistoryLength::Duration(d) = settings.history {
            let newest = self.points.iter().map(|p| p.t).max().unwrap_or(t);
            let from = newest.saturating_sub(i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            self.points.retain(|p| p.t >= from);
        }
        // A shift no kept point precedes moves nothing any more.
        if let Some(oldest) = self.points.iter().map(|p| p.t).min() {
            self.shifts.retain(|s| s.t > oldest);
        }
    }
}

#[cfg(test)]
mod calibration;
