//! Arrival lateness: the interval a dataset's batches usually arrive at,
//! learned from their landing times, so that *late* can be told before
//! *silent*.
//!
//! A batch's landing time is its version's modification time (a table
//! version's commit time). The expected interval is the median gap between
//! the last [`KEPT`] landing times (robust to a missing or doubled batch);
//! the agent exports it with how far the dataset is past its next expected
//! arrival (`docs/agent.md`). Pure logic.

use std::collections::VecDeque;

/// Landing times kept per dataset.
pub const KEPT: usize = 50;

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
}
