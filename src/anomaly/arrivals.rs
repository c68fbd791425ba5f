//! Arrival lateness: the interval a dataset's batches usually arrive at,
//! learned from their landing times, so that *late* can be told before
//! *silent*.
//!
//! A batch's landing time is its version's modification time (a table
//! version's commit time). The expected interval is the median gap between
//! the last [`KEPT`] landing times (robust to a missing or doubled batch);
//! the agent exports it with how far the dataset is past its next expected
//! arrival (`docs/agent.md`). A batch is *late* when the gap since the
//! dataset's previous landing exceeds that interval by more than
//! [`LATE_MARGIN`] of it; a dataset is *overdue* by the same measure while
//! nothing arrives. Pure logic (the [`Book`] only adds a lock, because the
//! workers, the gauges and the agent's overdue watch share it).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use crate::report::Lateness;

/// Landing times kept per dataset.
pub const KEPT: usize = 50;

/// How far past the learned interval a gap must be to be late, as a share
/// of the interval: half an interval, the margin of the `DatasetLate` alert
/// example in docs/agent.md (an hourly dataset is late after 90 minutes), so
/// ordinary jitter of a scheduled job does not count.
pub const LATE_MARGIN: f64 = 0.5;

/// The shortest learned interval lateness is judged at (seconds): files
/// landing less than a second apart (a bulk copy, a backlog renamed in at
/// once) follow no schedule to be late for, and their sub-second jitter
/// would read as lateness.
pub const MIN_INTERVAL: f64 = 1.0;

/// The recent landing times of one dataset (Unix seconds, in arrival order).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Arrivals {
    times: VecDeque<f64>,
}

impl Arrivals {
    /// Adds a landing time (a repeat of a known time is ignored: one batch
    /// version can be recorded once only, but a restart re-reads the store).
    pub fn push(&mut self, t: f64) {
        if !t.is_finite() || self.times.contains(&t) {
            return;
        }
        self.times.push_back(t);
        while self.times.len() > KEPT {
            self.times.pop_front();
        }
    }

    /// The newest landing time.
    pub fn last(&self) -> Option<f64> {
        self.times.iter().copied().reduce(f64::max)
    }

    /// The median gap between consecutive landing times (by time), once
    /// there are at least 3 of them; None before, or when every gap is 0.
    pub fn interval(&self) -> Option<f64> {
        let mut sorted: Vec<f64> = self.times.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let mut gaps: Vec<f64> = sorted
            .windows(2)
            .map(|w| w[1] - w[0])
            .filter(|g| *g > 0.0)
            .collect();
        if gaps.len() < 2 {
            return None;
        }
        gaps.sort_by(f64::total_cmp);
        let n = gaps.len();
        Some(if n % 2 == 1 {
            gaps[n / 2]
        } else {
            (gaps[n / 2 - 1] + gaps[n / 2]) / 2.0
        })
    }

    /// Seconds past the next expected arrival at `now` (0 when not yet due).
    pub fn overdue(&self, now: f64) -> Option<f64> {
        let (last, interval) = (self.last()?, self.interval()?);
        Some((now - last - interval).max(0.0))
    }

    /// Whether the dataset is late at `now` with nothing arrived: overdue by
    /// more than [`LATE_MARGIN`] of its interval.
    pub fn is_overdue(&self, now: f64) -> bool {
        match (self.overdue(now), self.interval()) {
            (Some(overdue), Some(interval)) => {
                interval >= MIN_INTERVAL && overdue > LATE_MARGIN * interval
            }
            _ => false,
        }
    }

    /// The lateness of a batch that landed at `landed`, judged against the
    /// landing times before it only (so judging it again after it was pushed
    /// gives the same answer, and a batch recorded out of order is compared
    /// with its predecessor): `Some` when the gap since the newest earlier
    /// landing exceeds the interval learned from the earlier ones by more
    /// than [`LATE_MARGIN`] of it.
    pub fn lateness(&self, landed: f64) -> Option<Lateness> {
        let before = Arrivals {
            times: self.times.iter().copied().filter(|t| *t < landed).collect(),
        };
        let (previous, expected) = (before.last()?, before.interval()?);
        let gap = landed - previous;
        (expected >= MIN_INTERVAL && gap > expected * (1.0 + LATE_MARGIN)).then_some(Lateness {
            gap_seconds: gap,
            expected_seconds: expected,
            late: true,
        })
    }
}

/// Every dataset's arrivals, shared by the workers (a batch's lateness),
/// the lateness gauges and the agent's overdue watch.
#[derive(Debug, Default)]
pub struct Book {
    datasets: Mutex<BTreeMap<String, Arrivals>>,
}

impl Book {
    /// Adds a landing time of `dataset`.
    pub fn push(&self, dataset: &str, landed: f64) {
        if let Ok(mut map) = self.datasets.lock() {
            map.entry(dataset.to_string()).or_default().push(landed);
        }
    }

    /// The lateness of `dataset`'s batch that landed at `landed`.
    pub fn lateness(&self, dataset: &str, landed: f64) -> Option<Lateness> {
        let map = self.datasets.lock().ok()?;
        map.get(dataset)?.lateness(landed)
    }

    /// Calls `f` with each dataset's arrivals (under the lock: keep it short).
    pub fn each(&self, mut f: impl FnMut(&str, &Arrivals)) {
        if let Ok(map) = self.datasets.lock() {
            for (dataset, arrivals) in map.iter() {
                f(dataset, arrivals);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_18_the_interval_is_the_median_gap_and_overdue_counts_from_the_next_expected_arrival() {
        let mut a = Arrivals::default();
        assert_eq!(a.interval(), None);
        for t in [0.0, 3_600.0, 7_200.0] {
            a.push(t);
        }
        assert_eq!(a.interval(), Some(3_600.0));
        // A missing batch (a 2-hour gap) and a repeat do not move the median.
        a.push(14_400.0);
        a.push(14_400.0);
        a.push(18_000.0);
        assert_eq!(a.interval(), Some(3_600.0));
        assert_eq!(a.overdue(20_000.0), Some(0.0));
        assert_eq!(a.overdue(25_000.0), Some(3_400.0));
    }

    #[test]
    fn issue_18_a_batch_is_late_past_half_an_interval_over_the_learned_one() {
        let mut a = Arrivals::default();
        for t in [0.0, 3_600.0, 7_200.0, 10_800.0] {
            a.push(t);
        }
        // Up to 1.5 intervals after the previous landing: on time.
        assert_eq!(a.lateness(10_800.0 + 5_400.0), None);
        let late = a.lateness(10_800.0 + 5_401.0);
        assert_eq!(
            late,
            Some(Lateness {
                gap_seconds: 5_401.0,
                expected_seconds: 3_600.0,
                late: true
            })
        );
        // Judged against the landings before it: the same once it is pushed,
        // and its own gap does not enter the interval it is judged by.
        a.push(16_201.0);
        assert_eq!(a.lateness(16_201.0), late);
        // Too little history: never late.
        let mut b = Arrivals::default();
        b.push(0.0);
        b.push(60.0);
        assert_eq!(b.lateness(100_000.0), None);
        // Overdue with nothing arrived, by the same margin.
        assert!(!a.is_overdue(16_201.0 + 3_600.0 + 1_800.0));
        assert!(a.is_overdue(16_201.0 + 3_600.0 + 1_801.0));
        assert!(!b.is_overdue(1e9));
        // A burst (files landing 10 ms apart) is never late.
        let mut burst = Arrivals::default();
        for i in 0..10 {
            burst.push(f64::from(i) * 0.01);
        }
        assert_eq!(burst.lateness(5.0), None);
        assert!(!burst.is_overdue(1e6));
    }
}
