//! When a webhook fires: a pure function of the batch's report and a small
//! per-(webhook, dataset) state, so the decision can be stored in the same
//! transaction as the batch's record (a crash can neither double-count a
//! batch nor lose a trigger).
//!
//! A batch *matches* when any configured condition holds: dataset drift,
//! drifted share at or over a threshold, or one of the named error-severity
//! checks not passing. `consecutive: N` fires on the N-th matching batch in
//! a row (a non-matching batch resets the count; an unreadable batch changes
//! nothing). `cooldown` allows at most one event per period; a batch that
//! matches during the cooldown keeps counting, so the first matching batch
//! after it fires.

use serde::{Deserialize, Serialize};

use crate::report::BatchReport;
use crate::rules::Severity;

/// The conditions of a webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    /// Fire on dataset drift.
    pub dataset_drift: bool,
    /// Fire when the drifted share is at least this.
    pub drift_share_at_least: Option<f64>,
    /// Fire when one of these error-severity checks does not pass.
    pub checks: Vec<String>,
    /// Fire when the batch's columns differ from the previous batch's.
    pub schema_changed: bool,
    /// Fire when the batch landed late for its dataset.
    pub late: bool,
    /// Matching batches in a row needed (at least 1).
    pub consecutive: u32,
}

/// What the policy remembers per (webhook, dataset).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TriggerState {
    /// Matching batches in a row so far.
    pub consecutive: u32,
    /// The matching batches of the current run (newest last, at most `consecutive` of them).
    pub batches: Vec<BatchRef>,
    /// When the last event fired (Unix seconds).
    pub last_fired_at: Option<i64>,
}

/// A batch that contributed to a trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRef {
    /// Its source (file or folder).
    pub source: String,
    /// Its line in the results log.
    pub seq: u64,
    /// When it was evaluated (RFC 3339).
    pub evaluated_at: String,
    /// Rows.
    pub rows: Option<u64>,
}

/// Why a webhook fired.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reason {
    /// `dataset_drift`, `drift_share`, `schema_changed`, `late` or
    /// `checks_failing` (the first that held, in that order).
    pub kind: &'static str,
    /// One line for people.
    pub description: String,
}

/// The decision for one batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Nothing to send.
    Quiet,
    /// The batch matches but the cooldown holds the event back.
    CoolingDown,
    /// Send an event for these batches.
    Fire {
        /// Why.
        reason: Reason,
        /// The matching run, oldest first.
        batches: Vec<BatchRef>,
    },
}

/// Whether `report` matches the trigger, and why.
pub fn matches(trigger: &Trigger, report: &BatchReport) -> Option<Reason> {
    if let Some(drift) = &report.drift
        && drift.error.is_none()
    {
        if trigger.dataset_drift && drift.dataset_drift {
            return Some(Reason {
                kind: "dataset_drift",
                description: format!(
                    "dataset drift: {} of the tested columns drifted (threshold {})",
                    drift
                        .drifted_share
                        .map_or("?".to_string(), |s| format!("{s:.3}")),
                    drift.drift_share_threshold
                ),
            });
        }
        if let (Some(at_least), Some(share)) = (trigger.drift_share_at_least, drift.drifted_share)
            && share >= at_least
        {
            return Some(Reason {
                kind: "drift_share",
                description: format!("drifted share {share:.3} ≥ {at_least}"),
            });
        }
    }
    if trigger.schema_changed && !report.schema_changes.is_empty() {
        return Some(Reason {
            kind: "schema_changed",
            description: format!("schema changed: {}", report.schema_changes.join("; ")),
        });
    }
    if let (true, Some(late)) = (trigger.late, &report.lateness) {
        return Some(Reason {
            kind: "late",
            description: format!(
                "batch landed late: {} since the dataset's previous batch, expected about every {}",
                seconds(late.gap_seconds),
                seconds(late.expected_seconds)
            ),
        });
    }
    let failing: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| {
            c.severity == Severity::Error
                && c.status.is_problem()
                && trigger.checks.iter().any(|n| n == &c.name)
        })
        .map(|c| c.name.as_str())
        .collect();
    (!failing.is_empty()).then(|| Reason {
        kind: "checks_failing",
        description: format!("checks not passing: {}", failing.join(", ")),
    })
}

/// Seconds in the largest exact units (`2h`, `1h30m`), as durations are
/// written in config.
fn seconds(s: f64) -> String {
    crate::rules::format_duration(std::time::Duration::from_secs(s.max(0.0).round() as u64))
}

/// Updates `state` with one evaluated batch and decides. `now` and
/// `cooldown_s` are Unix seconds and seconds.
pub fn decide(
    trigger: &Trigger,
    cooldown_s: i64,
    state: &mut TriggerState,
    report: &BatchReport,
    batch: BatchRef,
    now: i64,
) -> Decision {
    if report.error.is_some() {
        return Decision::Quiet;
    }
    let Some(reason) = matches(trigger, report) else {
        state.consecutive = 0;
        state.batches.clear();
        return Decision::Quiet;
    };
    let need = trigger.consecutive.max(1);
    state.consecutive = state.consecutive.saturating_add(1);
    state.batches.push(batch);
    while state.batches.len() > need as usize {
        state.batches.remove(0);
    }
    if state.consecutive < need {
        return Decision::Quiet;
    }
    if state
        .last_fired_at
        .is_some_and(|last| now - last < cooldown_s)
    {
        return Decision::CoolingDown;
    }
    state.last_fired_at = Some(now);
    state.consecutive = 0;
    let batches = std::mem::take(&mut state.batches);
    Decision::Fire { reason, batches }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::compare::DriftReport;
    use crate::report::{CheckResult, CheckStatus};

    fn report(drifted: bool, share: f64, failing_check: Option<&str>) -> BatchReport {
        let mut r = BatchReport::failed("s".into(), "d".into(), "r".into(), String::new());
        r.error = None;
        r.rows = Some(10);
        r.drift = Some(DriftReport {
            reference: "ref".into(),
            dataset_drift: drifted,
            drifted_share: Some(share),
            drift_share_threshold: 0.5,
            correction: "none".into(),
            severity: Severity::Error,
            error: None,
            message: None,
            columns: Vec::new(),
            not_tested: Vec::new(),
            sequential: None,
        });
        for (name, fails, severity) in [
            (
                "unique_row_id",
                failing_check == Some("unique_row_id"),
                Severity::Error,
            ),
            ("warned", failing_check == Some("warned"), Severity::Warn),
        ] {
            r.checks.push(CheckResult {
                name: name.into(),
                kind: "unique".into(),
                column: None,
                severity,
                status: if fails {
                    CheckStatus::Fail
                } else {
                    CheckStatus::Pass
                },
                failing_rows: None,
                rows_considered: None,
                fraction: None,
                observed: serde_json::Value::Null,
                expected: serde_json::Value::Null,
                message: None,
            });
        }
        r
    }

    fn batch(seq: u64) -> BatchRef {
        BatchRef {
            source: format!("b{seq}"),
            seq,
            evaluated_at: String::new(),
            rows: Some(10),
        }
    }

    fn trigger(consecutive: u32) -> Trigger {
        Trigger {
            dataset_drift: true,
            drift_share_at_least: Some(0.3),
            checks: vec!["unique_row_id".into(), "warned".into()],
            schema_changed: false,
            late: false,
            consecutive,
        }
    }

    #[test]
    fn conditions_and_their_reasons() {
        let t = trigger(1);
        assert_eq!(
            matches(&t, &report(true, 0.6, None)).unwrap().kind,
            "dataset_drift"
        );
        assert_eq!(
            matches(&t, &report(false, 0.4, None)).unwrap().kind,
            "drift_share"
        );
        assert_eq!(
            matches(&t, &report(false, 0.1, Some("unique_row_id")))
                .unwrap()
                .description,
            "checks not passing: unique_row_id"
        );
        // Warn-severity checks never trigger, whatever the list says.
        assert!(matches(&t, &report(false, 0.1, Some("warned"))).is_none());
        assert!(matches(&t, &report(false, 0.1, None)).is_none());
    }

    #[test]
    fn issue_18_a_late_batch_matches_a_late_trigger_only() {
        let mut late = report(false, 0.1, None);
        late.lateness = Some(crate::report::Lateness {
            gap_seconds: 7_200.0,
            expected_seconds: 3_600.0,
            late: true,
        });
        assert!(matches(&trigger(1), &late).is_none());
        let t = Trigger {
            late: true,
            ..trigger(1)
        };
        let reason = matches(&t, &late).unwrap();
        assert_eq!(reason.kind, "late");
        assert_eq!(
            reason.description,
            "batch landed late: 2h since the dataset's previous batch, expected about every 1h"
        );
        assert!(matches(&t, &report(false, 0.1, None)).is_none());
    }

    #[test]
    fn consecutive_needs_an_unbroken_run_and_cooldown_holds_events_back() {
        let t = trigger(2);
        let mut s = TriggerState::default();
        let drift = report(true, 0.6, None);
        let calm = report(false, 0.0, None);
        assert_eq!(
            decide(&t, 3600, &mut s, &drift, batch(1), 0),
            Decision::Quiet
        );
        assert_eq!(
            decide(&t, 3600, &mut s, &calm, batch(2), 10),
            Decision::Quiet
        );
        assert_eq!(
            decide(&t, 3600, &mut s, &drift, batch(3), 20),
            Decision::Quiet
        );
        let Decision::Fire { batches, reason } = decide(&t, 3600, &mut s, &drift, batch(4), 30)
        else {
            panic!("the second drifted batch in a row fires")
        };
        assert_eq!(reason.kind, "dataset_drift");
        assert_eq!(batches.iter().map(|b| b.seq).collect::<Vec<_>>(), [3, 4]);
        // Within the cooldown: counted, held back.
        assert_eq!(
            decide(&t, 3600, &mut s, &drift, batch(5), 40),
            Decision::Quiet
        );
        assert_eq!(
            decide(&t, 3600, &mut s, &drift, batch(6), 50),
            Decision::CoolingDown
        );
        // An unreadable batch changes nothing.
        let mut broken = drift.clone();
        broken.error = Some("corrupt".into());
        let before = s.clone();
        assert_eq!(
            decide(&t, 3600, &mut s, &broken, batch(7), 60),
            Decision::Quiet
        );
        assert_eq!(s, before);
        // After the cooldown, the run continues and fires.
        let Decision::Fire { batches, .. } = decide(&t, 3600, &mut s, &drift, batch(8), 3631)
        else {
            panic!("fires after the cooldown")
        };
        assert_eq!(batches.iter().map(|b| b.seq).collect::<Vec<_>>(), [6, 8]);
        assert_eq!(s.last_fired_at, Some(3631));
    }
}
