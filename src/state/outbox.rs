//! The webhook outbox and policy state, in the same store as the batches.
//!
//! Why here: a trigger must be durable before any attempt to send it, and a
//! batch must count towards `consecutive` exactly once. Both follow from
//! applying the webhook policies *inside* [`Store::record_evaluation`]'s
//! write transaction: either the batch, its policy-state update and the
//! event it fired are all committed, or none is (and the batch is evaluated
//! again). A batch version recorded before is never applied twice.
//!
//! Tables:
//! - `webhook_deliveries`: event id → [`Delivery`] (JSON, body included).
//! - `webhook_due`: `(next attempt, Unix ms; event id)` → () for pending
//!   deliveries only: a range read is the due work, the first key the next
//!   wake-up.
//! - `webhook_policy`: `webhook\0dataset` → [`TriggerState`] (JSON).
//!
//! "In flight" is never stored: after a crash every pending delivery is
//! simply due, so an attempt cut short by `kill -9` is made again — with the
//! same event id and body, which receivers dedupe on (`Idempotency-Key`).

use std::collections::BTreeMap;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{Result, Store};
use crate::report::BatchReport;
use crate::sinks::webhook::WebhookConfig;
use crate::sinks::webhook::payload::{Event, render};
use crate::sinks::webhook::policy::{BatchRef, Decision, TriggerState, decide};

/// event id → [`Delivery`] (JSON).
pub(super) const DELIVERIES: TableDefinition<&str, &[u8]> =
    TableDefinition::new("webhook_deliveries");
/// (next attempt Unix ms, event id) → (): pending deliveries by due time.
pub(super) const DUE: TableDefinition<(u64, &str), ()> = TableDefinition::new("webhook_due");
/// `webhook\0dataset` → [`TriggerState`] (JSON).
pub(super) const POLICY: TableDefinition<&str, &[u8]> = TableDefinition::new("webhook_policy");

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its next attempt.
    Pending,
    /// The receiver took it.
    Delivered,
    /// Given up: a 4xx answer, too many attempts, too old. `retry` re-queues it.
    Dead,
    /// `dry_run`: recorded, never sent.
    DryRun,
}

impl DeliveryState {
    /// The name used in JSON, tables and metrics.
    pub fn name(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
            DeliveryState::DryRun => "dry_run",
        }
    }
}

/// One event in the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// The event id (also the `Idempotency-Key`).
    pub event_id: String,
    /// The webhook's name.
    pub webhook: String,
    /// The dataset.
    pub dataset: String,
    /// Where it stands.
    pub state: DeliveryState,
    /// Why it fired (`dataset_drift`, `drift_share`, `checks_failing`).
    pub reason: String,
    /// Why, for people.
    pub description: String,
    /// The results-log seqs of the batches that fired it.
    pub batches: Vec<u64>,
    /// The URL when it was enqueued (attempts use the webhook's current one).
    pub url: String,
    /// When it fired (Unix ms).
    pub created_at_ms: i64,
    /// When `retry` last re-queued it (Unix ms); its age counts from here.
    pub requeued_at_ms: Option<i64>,
    /// Attempts made (since the last re-queue).
    pub attempts: u32,
    /// When the next attempt is due (pending only; Unix ms).
    pub next_attempt_at_ms: Option<i64>,
    /// When the last attempt was made (Unix ms).
    pub last_attempt_at_ms: Option<i64>,
    /// The last attempt's HTTP status.
    pub last_status: Option<u16>,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// The start of the last response body.
    pub last_response: Option<String>,
    /// When it was delivered or dead-lettered (Unix ms).
    pub finished_at_ms: Option<i64>,
    /// The request body, rendered once (identical on every attempt).
    pub body: String,
}

impl Delivery {
    /// The delivery as shown by `/webhooks` and `driftwatch webhooks`: the
    /// body is left out (it can be large; it is in the store and the log).
    pub fn summary(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(object) = value.as_object_mut() {
            object.remove("body");
            object.insert("body_bytes".into(), self.body.len().into());
        }
        value
    }

    /// Milliseconds since it fired or was last re-queued.
    pub fn age_ms(&self, now_ms: i64) -> i64 {
        now_ms - self.requeued_at_ms.unwrap_or(self.created_at_ms)
    }
}

/// The webhooks to apply to one recorded batch.
#[derive(Debug, Clone, Copy)]
pub struct WebhookStep<'a> {
    /// The batch's report.
    pub report: &'a BatchReport,
    /// The batch's source.
    pub source: &'a str,
    /// When it was evaluated (RFC 3339).
    pub evaluated_at: &'a str,
    /// Now (Unix ms).
    pub now_ms: i64,
    /// The agent's instance id (in events).
    pub instance: &'a str,
    /// The webhooks watching this batch.
    pub webhooks: &'a [WebhookConfig],
}

/// What a webhook's policy made of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyOutcome {
    /// No event (the batch did not match, or the run is still short).
    Quiet {
        /// The webhook.
        webhook: String,
        /// Matching batches in a row so far.
        consecutive: u32,
        /// Needed to fire.
        needed: u32,
    },
    /// It would fire, but the cooldown holds it back.
    CoolingDown {
        /// The webhook.
        webhook: String,
    },
    /// An event was written to the outbox.
    Fired {
        /// The webhook.
        webhook: String,
        /// The event id.
        event_id: String,
        /// `pending`, `dry_run`, or `dead` when the body could not be rendered.
        state: DeliveryState,
        /// Why.
        description: String,
        /// For a dry run, the body that would have been sent (for the log).
        dry_run_body: Option<String>,
    },
}

/// The outcome of one attempt (or of giving up without one), to record.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    /// When (Unix ms).
    pub at_ms: i64,
    /// Whether an HTTP attempt was made (false: expired or unconfigured).
    pub attempted: bool,
    /// The new state: pending (retry), delivered or dead.
    pub state: DeliveryState,
    /// The next attempt (pending only).
    pub next_attempt_at_ms: Option<i64>,
    /// HTTP status.
    pub status: Option<u16>,
    /// Error.
    pub error: Option<String>,
    /// Response body start.
    pub response: Option<String>,
}

/// The result of `retry ID`.
#[derive(Debug, Clone, PartialEq)]
pub enum RetryResult {
    /// Re-queued: due now.
    Requeued(Box<Delivery>),
    /// No such event.
    NotFound,
    /// Only dead letters can be re-queued.
    NotDead(DeliveryState),
}

/// Deliveries per state, for one webhook.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeliveryCounts {
    /// Pending.
    pub pending: u64,
    /// Delivered.
    pub delivered: u64,
    /// Dead-lettered.
    pub dead: u64,
    /// Dry runs.
    pub dry_run: u64,
}

fn io(message: String) -> redb::Error {
    redb::Error::Io(std::io::Error::other(message))
}

fn read_delivery(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    event_id: &str,
    path: &std::path::Path,
) -> std::result::Result<Option<Delivery>, redb::Error> {
    match table.get(event_id)? {
        Some(v) => serde_json::from_slice(v.value()).map(Some).map_err(|e| {
            io(format!(
                "{}: cannot decode a webhook delivery: {e}",
                path.display()
            ))
        }),
        None => Ok(None),
    }
}

fn write_delivery(
    table: &mut redb::Table<&'static str, &'static [u8]>,
    delivery: &Delivery,
) -> std::result::Result<(), redb::Error> {
    let bytes = serde_json::to_vec(delivery).map_err(|e| io(e.to_string()))?;
    table.insert(delivery.event_id.as_str(), bytes.as_slice())?;
    Ok(())
}

fn due_key(delivery: &Delivery) -> Option<u64> {
    delivery.next_attempt_at_ms.map(|ms| ms.max(0) as u64)
}

/// Applies the webhook policies to a recorded batch, inside its transaction.
pub(super) fn apply(
    txn: &redb::WriteTransaction,
    step: &WebhookStep<'_>,
    seq: u64,
) -> std::result::Result<Vec<PolicyOutcome>, redb::Error> {
    let mut policies = txn.open_table(POLICY)?;
    let mut deliveries = txn.open_table(DELIVERIES)?;
    let mut due = txn.open_table(DUE)?;
    let mut outcomes = Vec::new();
    let now_s = step.now_ms.div_euclid(1000);
    for webhook in step.webhooks {
        let key = format!("{}\0{}", webhook.name, step.report.dataset);
        let mut state: TriggerState = match policies.get(key.as_str())? {
            Some(v) => serde_json::from_slice(v.value())
                .map_err(|e| io(format!("cannot decode webhook policy state: {e}")))?,
            None => TriggerState::default(),
        };
        let batch = BatchRef {
            source: step.source.to_string(),
            seq,
            evaluated_at: step.evaluated_at.to_string(),
            rows: step.report.rows,
        };
        let decision = decide(
            &webhook.trigger,
            webhook.cooldown.as_secs() as i64,
            &mut state,
            step.report,
            batch,
            now_s,
        );
        let bytes = serde_json::to_vec(&state).map_err(|e| io(e.to_string()))?;
        policies.insert(key.as_str(), bytes.as_slice())?;
        let outcome = match decision {
            Decision::Quiet => PolicyOutcome::Quiet {
                webhook: webhook.name.clone(),
                consecutive: state.consecutive,
                needed: webhook.trigger.consecutive,
            },
            Decision::CoolingDown => PolicyOutcome::CoolingDown {
                webhook: webhook.name.clone(),
            },
            Decision::Fire { reason, batches } => {
                let event_id = uuid::Uuid::new_v4().to_string();
                let created_at = chrono::DateTime::from_timestamp_millis(step.now_ms)
                    .unwrap_or_default()
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                let seqs = batches.iter().map(|b| b.seq).collect();
                let description = reason.description.clone();
                let kind = reason.kind.to_string();
                let event = Event::new(
                    event_id.clone(),
                    created_at,
                    &webhook.name,
                    step.report,
                    reason,
                    batches,
                    step.instance,
                );
                let (state, body, error) = match render(&webhook.preset, &event) {
                    Ok(body) if webhook.dry_run => (
                        DeliveryState::DryRun,
                        String::from_utf8_lossy(&body).into_owned(),
                        None,
                    ),
                    Ok(body) => (
                        DeliveryState::Pending,
                        String::from_utf8_lossy(&body).into_owned(),
                        None,
                    ),
                    Err(e) => (DeliveryState::Dead, String::new(), Some(e)),
                };
                let delivery = Delivery {
                    event_id: event_id.clone(),
                    webhook: webhook.name.clone(),
                    dataset: step.report.dataset.clone(),
                    state,
                    reason: kind,
                    description: description.clone(),
                    batches: seqs,
                    url: webhook.url.clone(),
                    created_at_ms: step.now_ms,
                    requeued_at_ms: None,
                    attempts: 0,
                    next_attempt_at_ms: (state == DeliveryState::Pending).then_some(step.now_ms),
                    last_attempt_at_ms: None,
                    last_status: None,
                    last_error: error,
                    last_response: None,
                    finished_at_ms: (state != DeliveryState::Pending).then_some(step.now_ms),
                    body,
                };
                write_delivery(&mut deliveries, &delivery)?;
                if let Some(at) = due_key(&delivery) {
                    due.insert((at, event_id.as_str()), ())?;
                }
                PolicyOutcome::Fired {
                    webhook: webhook.name.clone(),
                    event_id,
                    state,
                    description,
                    dry_run_body: (state == DeliveryState::DryRun).then(|| delivery.body.clone()),
                }
            }
        };
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

impl Store {
    fn decode_delivery(&self, bytes: &[u8]) -> Result<Delivery> {
        self.decode("a webhook delivery", bytes)
    }

    /// Pending deliveries due at `now_ms`, soonest first (at most `limit`).
    pub fn due_deliveries(&self, now_ms: i64, limit: usize) -> Result<Vec<Delivery>> {
        let txn = self.db()?.begin_read().map_err(|e| self.err(e))?;
        let due = txn.open_table(DUE).map_err(|e| self.err(e))?;
        let deliveries = txn.open_table(DELIVERIES).map_err(|e| self.err(e))?;
        let end = (now_ms.max(0) as u64).saturating_add(1);
        let mut out = Vec::new();
        for entry in due.range(..(end, "")).map_err(|e| self.err(e))?.take(limit) {
            let (key, _) = entry.map_err(|e| self.err(e))?;
            let (_, id) = key.value();
            if let Some(v) = deliveries.get(id).map_err(|e| self.err(e))? {
                out.push(self.decode_delivery(v.value())?);
            }
        }
        Ok(out)
    }

    /// When the next pending delivery is due (Unix ms).
    pub fn next_due_ms(&self) -> Result<Option<i64>> {
        let txn = self.db()?.begin_read().map_err(|e| self.err(e))?;
        let due = txn.open_table(DUE).map_err(|e| self.err(e))?;
        let first = due.first().map_err(|e| self.err(e))?;
        Ok(first.map(|(k, _)| k.value().0 as i64))
    }

    /// Records an attempt's outcome (or a give-up without one). Ignored when
    /// the delivery is no longer pending.
    pub fn finish_attempt(
        &self,
        event_id: &str,
        record: &AttemptRecord,
    ) -> Result<Option<Delivery>> {
        let path = self.path.clone();
        self.write(|txn| {
            let mut deliveries = txn.open_table(DELIVERIES)?;
            let mut due = txn.open_table(DUE)?;
            let Some(mut delivery) = read_delivery(&deliveries, event_id, &path)? else {
                return Ok(None);
            };
            if delivery.state != DeliveryState::Pending {
                return Ok(None);
            }
            if let Some(at) = due_key(&delivery) {
                due.remove((at, event_id))?;
            }
            if record.attempted {
                delivery.attempts += 1;
                delivery.last_attempt_at_ms = Some(record.at_ms);
                delivery.last_status = record.status;
                delivery.last_response = record.response.clone();
            }
            delivery.last_error = record.error.clone();
            delivery.state = record.state;
            delivery.next_attempt_at_ms = match record.state {
                DeliveryState::Pending => Some(record.next_attempt_at_ms.unwrap_or(record.at_ms)),
                _ => None,
            };
            if record.state != DeliveryState::Pending {
                delivery.finished_at_ms = Some(record.at_ms);
            }
            if let Some(at) = due_key(&delivery) {
                due.insert((at, event_id), ())?;
            }
            write_delivery(&mut deliveries, &delivery)?;
            Ok(Some(delivery))
        })
    }

    /// Every delivery in the outbox, oldest first.
    pub fn deliveries(&self) -> Result<Vec<Delivery>> {
        let txn = self.db()?.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(DELIVERIES).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| self.err(e))? {
            let (_, v) = entry.map_err(|e| self.err(e))?;
            out.push(self.decode_delivery(v.value())?);
        }
        out.sort_by(|a, b| (a.created_at_ms, &a.event_id).cmp(&(b.created_at_ms, &b.event_id)));
        Ok(out)
    }

    /// One delivery.
    pub fn delivery(&self, event_id: &str) -> Result<Option<Delivery>> {
        let txn = self.db()?.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(DELIVERIES).map_err(|e| self.err(e))?;
        match table.get(event_id).map_err(|e| self.err(e))? {
            Some(v) => Ok(Some(self.decode_delivery(v.value())?)),
            None => Ok(None),
        }
    }

    /// Re-queues a dead letter: pending, due now, attempts and age from zero.
    pub fn retry_delivery(&self, event_id: &str, now_ms: i64) -> Result<RetryResult> {
        let path = self.path.clone();
        self.write(|txn| {
            let mut deliveries = txn.open_table(DELIVERIES)?;
            let mut due = txn.open_table(DUE)?;
            let Some(mut delivery) = read_delivery(&deliveries, event_id, &path)? else {
                return Ok(RetryResult::NotFound);
            };
            if delivery.state != DeliveryState::Dead {
                return Ok(RetryResult::NotDead(delivery.state));
            }
            if delivery.body.is_empty() {
                // Its body could not be rendered; re-sending cannot help.
                return Ok(RetryResult::NotDead(DeliveryState::Dead));
            }
            delivery.state = DeliveryState::Pending;
            delivery.attempts = 0;
            delivery.requeued_at_ms = Some(now_ms);
            delivery.next_attempt_at_ms = Some(now_ms);
            delivery.finished_at_ms = None;
            due.insert((now_ms.max(0) as u64, event_id), ())?;
            write_delivery(&mut deliveries, &delivery)?;
            Ok(RetryResult::Requeued(Box::new(delivery)))
        })
    }

    /// Deliveries per webhook and state.
    pub fn delivery_counts(&self) -> Result<BTreeMap<String, DeliveryCounts>> {
        let mut out: BTreeMap<String, DeliveryCounts> = BTreeMap::new();
        for d in self.deliveries()? {
            let c = out.entry(d.webhook.clone()).or_default();
            match d.state {
                DeliveryState::Pending => c.pending += 1,
                DeliveryState::Delivered => c.delivered += 1,
                DeliveryState::Dead => c.dead += 1,
                DeliveryState::DryRun => c.dry_run += 1,
            }
        }
        Ok(out)
    }

    /// Forgets finished deliveries (delivered, dead, dry runs) that finished
    /// before `older_than_ms`. Returns how many.
    pub fn prune_deliveries(&self, older_than_ms: i64) -> Result<usize> {
        let old: Vec<String> = self
            .deliveries()?
            .into_iter()
            .filter(|d| {
                d.state != DeliveryState::Pending
                    && d.finished_at_ms.is_some_and(|at| at < older_than_ms)
            })
            .map(|d| d.event_id)
            .collect();
        if old.is_empty() {
            return Ok(0);
        }
        self.write(|txn| {
            let mut deliveries = txn.open_table(DELIVERIES)?;
            for id in &old {
                deliveries.remove(id.as_str())?;
            }
            Ok(())
        })?;
        Ok(old.len())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::report::{BatchVersion, CheckResult, CheckStatus};
    use crate::rules::Severity;
    use crate::sinks::webhook::payload::Preset;
    use crate::sinks::webhook::policy::Trigger;
    use crate::state::{Evaluated, Outcome, Retention};

    fn webhook(dry_run: bool) -> WebhookConfig {
        WebhookConfig {
            name: "w".into(),
            url: "http://127.0.0.1:9/x".into(),
            datasets: Vec::new(),
            trigger: Trigger {
                dataset_drift: false,
                drift_share_at_least: None,
                checks: vec!["c".into()],
                schema_changed: false,
                late: false,
                consecutive: 1,
            },
            cooldown: Duration::from_secs(0),
            dry_run,
            preset: Preset::Generic,
            secret_env: None,
            bearer_token_env: None,
            basic_auth: None,
            max_attempts: 3,
            max_age: Duration::from_secs(60),
            timeout: Duration::from_secs(1),
            retry_backoff: Duration::from_millis(10),
            retry_backoff_max: Duration::from_millis(100),
            ca_file: None,
        }
    }

    fn failing_report() -> BatchReport {
        let mut r = BatchReport::failed("s".into(), "d".into(), "r".into(), String::new());
        r.error = None;
        r.rows = Some(5);
        r.checks.push(CheckResult {
            name: "c".into(),
            kind: "row_count".into(),
            column: None,
            severity: Severity::Error,
            status: CheckStatus::Fail,
            failing_rows: None,
            rows_considered: None,
            fraction: None,
            observed: serde_json::Value::Null,
            expected: serde_json::Value::Null,
            message: None,
        });
        r
    }

    fn record(
        store: &Store,
        path: &str,
        webhooks: &[WebhookConfig],
        now_ms: i64,
    ) -> super::super::Recorded {
        let report = failing_report();
        let version = BatchVersion {
            kind: "file".into(),
            path: path.into(),
            size: 1,
            modified_ns: 1,
            parts: 1,
            table: None,
            etag: None,
        };
        store
            .record_evaluation(
                &Evaluated {
                    version: &version,
                    anomaly: &[],
                    schema: None,
                    dataset: "d",
                    outcome: Outcome::Failed,
                    rows: 5,
                    evaluated_at: now_ms / 1000,
                    rolling: None,
                    profile: None,
                    webhooks: Some(WebhookStep {
                        report: &report,
                        source: path,
                        evaluated_at: "t",
                        now_ms,
                        instance: "i",
                        webhooks,
                    }),
                },
                Retention {
                    reports_per_dataset: 10,
                },
                |seq| format!("{{\"seq\":{seq}}}"),
            )
            .unwrap()
    }

    fn attempt(state: DeliveryState, at_ms: i64, next: Option<i64>) -> AttemptRecord {
        AttemptRecord {
            at_ms,
            attempted: true,
            state,
            next_attempt_at_ms: next,
            status: Some(500),
            error: Some("HTTP 500".into()),
            response: Some("boom".into()),
        }
    }

    #[test]
    fn a_batch_fires_once_and_its_event_survives_reopening_until_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let hooks = [webhook(false)];
        let id = {
            let store = Store::open(dir.path()).unwrap();
            let first = record(&store, "a", &hooks, 1_000_000);
            let PolicyOutcome::Fired {
                event_id, state, ..
            } = &first.webhooks[0]
            else {
                panic!("fires: {:?}", first.webhooks)
            };
            assert_eq!(*state, DeliveryState::Pending);
            // The same version again: nothing recorded, nothing fired.
            let again = record(&store, "a", &hooks, 1_000_500);
            assert!(!again.new);
            assert!(again.webhooks.is_empty());
            assert_eq!(store.deliveries().unwrap().len(), 1);
            event_id.clone()
        };
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.next_due_ms().unwrap(), Some(1_000_000));
        assert!(store.due_deliveries(999_999, 10).unwrap().is_empty());
        let due = store.due_deliveries(1_000_000, 10).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].event_id, id);
        assert_eq!(due[0].batches, [1]);
        let body: serde_json::Value = serde_json::from_str(&due[0].body).unwrap();
        assert_eq!(body["event_id"], id.as_str());

        // A failed attempt moves the due time; a delivered one leaves the due index.
        let d = store
            .finish_attempt(
                &id,
                &attempt(DeliveryState::Pending, 1_000_100, Some(1_000_300)),
            )
            .unwrap()
            .unwrap();
        assert_eq!((d.attempts, d.next_attempt_at_ms), (1, Some(1_000_300)));
        assert!(store.due_deliveries(1_000_299, 10).unwrap().is_empty());
        assert_eq!(store.next_due_ms().unwrap(), Some(1_000_300));
        let d = store
            .finish_attempt(
                &id,
                &AttemptRecord {
                    status: Some(200),
                    error: None,
                    ..attempt(DeliveryState::Delivered, 1_000_400, None)
                },
            )
            .unwrap()
            .unwrap();
        assert_eq!(d.state, DeliveryState::Delivered);
        assert_eq!((d.attempts, d.finished_at_ms), (2, Some(1_000_400)));
        assert_eq!(store.next_due_ms().unwrap(), None);
        // A finished delivery ignores late records.
        assert!(
            store
                .finish_attempt(&id, &attempt(DeliveryState::Dead, 1_000_500, None))
                .unwrap()
                .is_none()
        );
        assert_eq!(store.delivery_counts().unwrap()["w"].delivered, 1);
    }

    #[test]
    fn dead_letters_are_requeued_fresh_and_old_finished_events_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        record(&store, "a", &[webhook(false)], 5_000);
        let id = store.deliveries().unwrap()[0].event_id.clone();
        assert_eq!(
            store.retry_delivery(&id, 6_000).unwrap(),
            RetryResult::NotDead(DeliveryState::Pending)
        );
        assert_eq!(
            store.retry_delivery("nope", 6_000).unwrap(),
            RetryResult::NotFound
        );
        store
            .finish_attempt(&id, &attempt(DeliveryState::Dead, 7_000, None))
            .unwrap();
        assert!(store.due_deliveries(i64::MAX, 10).unwrap().is_empty());
        let RetryResult::Requeued(d) = store.retry_delivery(&id, 8_000).unwrap() else {
            panic!("a dead letter is re-queued")
        };
        assert_eq!((d.state, d.attempts), (DeliveryState::Pending, 0));
        assert_eq!(d.age_ms(8_500), 500, "its age counts from the re-queue");
        assert_eq!(store.due_deliveries(8_000, 10).unwrap().len(), 1);
        // Dry runs are recorded, never due; pruning drops finished events only.
        record(&store, "b", &[webhook(true)], 9_000);
        let counts = &store.delivery_counts().unwrap()["w"];
        assert_eq!((counts.pending, counts.dry_run), (1, 1));
        assert_eq!(store.due_deliveries(i64::MAX, 10).unwrap().len(), 1);
        assert_eq!(store.prune_deliveries(9_001).unwrap(), 1);
        assert_eq!(store.deliveries().unwrap().len(), 1);
        assert_eq!(store.deliveries().unwrap()[0].state, DeliveryState::Pending);
    }
}
