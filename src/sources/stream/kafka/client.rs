//! The librdkafka side of the Kafka source: the consumer's `Context`
//! (logging, rebalance callbacks, the revocation commit), the shared
//! [`Commits`] snapshot, and the blocking client calls (synchronous commits,
//! lag) that run on blocking threads and hand back plain data only.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::{ERROR_LOG_EVERY, KafkaConsumer, LAG_BUDGET, Tp};

/// What the rebalance callbacks tell the source (plain data only).
#[derive(Debug)]
pub(super) enum Rebalanced {
    Assigned(Vec<Tp>),
    Revoked(Vec<Tp>),
}

/// The consumer's context: logging, rebalances forwarded on a channel, and
/// the commit of revoked partitions' recorded windows. Its callbacks never
/// block: the only consumer call in them is an asynchronous commit (it
/// queues a request and returns).
pub(super) struct Context {
    pub(super) name: String,
    pub(super) events: mpsc::UnboundedSender<Rebalanced>,
    pub(super) errors: Arc<Throttle>,
    pub(super) commits: Arc<Mutex<Commits>>,
}

/// What may be committed, shared by the main loop (which keeps `ready`
/// current), its commit thread and the revocation callback. The lock is
/// only ever held for map updates and for queueing an asynchronous commit,
/// never across a call that waits on the broker.
#[derive(Default)]
pub(super) struct Commits {
    /// The partitions assigned, as the rebalance callbacks saw them: the
    /// main loop's commits leave out any other.
    pub(super) owned: HashSet<Tp>,
    /// Per owned partition, the end of its longest recorded prefix whose
    /// dead letters are written: what may be committed now.
    pub(super) ready: HashMap<Tp, i64>,
    /// Per partition, the offset last committed (or queued at a revocation).
    pub(super) done: HashMap<Tp, i64>,
    /// A commit of the main loop was started and may still land.
    pub(super) busy: bool,
}

/// What the revocation callback does about the revoked partitions.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum RevokeCommit {
    /// Nothing recorded beyond what is committed.
    Nothing,
    /// Commit these offsets (asynchronously, before the partitions go).
    Commit(Vec<(String, i32, i64)>),
    /// A commit of the main loop may still land: starting another one
    /// beside it could reorder them, so the recorded windows of these
    /// partitions are left to their next reader.
    Busy(Vec<Tp>),
}

impl Commits {
    /// Partitions assigned: what was known of them before is stale.
    pub(super) fn assign(&mut self, tps: &[Tp]) {
        for tp in tps {
            self.owned.insert(tp.clone());
            self.ready.remove(tp);
            self.done.remove(tp);
        }
    }

    /// Partitions about to be revoked: from now on no commit of this member
    /// covers them; what of them may be committed is returned once (and
    /// noted as done: the callback queues it before the partitions go).
    pub(super) fn revoke(&mut self, tps: &[Tp]) -> RevokeCommit {
        let mut offsets = Vec::new();
        for tp in tps {
            self.owned.remove(tp);
            if let Some(end) = self.ready.remove(tp)
                && self.done.get(tp).is_none_or(|d| *d < end)
            {
                offsets.push((tp.clone(), end));
            }
        }
        if offsets.is_empty() {
            return RevokeCommit::Nothing;
        }
        if self.busy {
            return RevokeCommit::Busy(offsets.into_iter().map(|(tp, _)| tp).collect());
        }
        for (tp, end) in &offsets {
            self.done.insert(tp.clone(), *end);
        }
        RevokeCommit::Commit(offsets.into_iter().map(|((t, p), o)| (t, p, o)).collect())
    }

    /// A commit of the main loop starts: the offsets of partitions still
    /// owned, and `busy` set until [`Self::finish`]. `None` while another
    /// one may still land.
    pub(super) fn start(
        &mut self,
        offsets: Vec<(String, i32, i64)>,
    ) -> Option<Vec<(String, i32, i64)>> {
        if self.busy {
            return None;
        }
        let offsets: Vec<_> = offsets
            .into_iter()
            .filter(|(t, p, _)| self.owned.contains(&(t.clone(), *p)))
            .collect();
        self.busy = !offsets.is_empty();
        Some(offsets)
    }

    /// A commit of the main loop finished (landed or failed for good).
    pub(super) fn finish(&mut self, c: &Committed) {
        self.busy = false;
        if c.result.is_ok() {
            for (t, p, o) in &c.offsets {
                let d = self.done.entry((t.clone(), *p)).or_insert(*o);
                *d = (*d).max(*o);
            }
        }
    }
}

/// Repeated client errors, logged once per [`ERROR_LOG_EVERY`] with the
/// count of those left out.
#[derive(Default)]
pub(super) struct Throttle(std::sync::Mutex<HashMap<String, (Instant, u64)>>);

impl Throttle {
    /// `Some(suppressed since the last one)` when an error of this kind is
    /// to be logged now.
    pub(super) fn admit(&self, kind: String) -> Option<u64> {
        let mut seen = self.0.lock().ok()?;
        let now = Instant::now();
        match seen.get_mut(&kind) {
            Some((at, left_out)) if now.duration_since(*at) < ERROR_LOG_EVERY => {
                *left_out += 1;
                None
            }
            Some((at, left_out)) => {
                let n = *left_out;
                *at = now;
                *left_out = 0;
                Some(n)
            }
            None => {
                seen.insert(kind, (now, 0));
                Some(0)
            }
        }
    }
}

fn plain(tpl: &TopicPartitionList) -> Vec<Tp> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

fn show(tps: &[Tp]) -> String {
    tps.iter()
        .map(|(t, p)| format!("{t}/{p}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let source = self.name.as_str();
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", source, facility = fac, "{message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", source, facility = fac, "{message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", source, facility = fac, "{message}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", source, facility = fac, "{message}")
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let kind = error
            .rdkafka_error_code()
            .map_or_else(|| error.to_string(), |code| format!("{code:?}"));
        if let Some(left_out) = self.errors.admit(kind) {
            tracing::warn!(target: "librdkafka", source = %self.name, error = %error, repeats_not_logged = left_out, "{reason}");
        }
    }
}

impl ConsumerContext for Context {
    /// Before revoked partitions are given up (and the group can hand them
    /// to another member), their recorded windows are committed: the commit
    /// is queued asynchronously (the callback does not wait), and librdkafka
    /// completes the rebalance only once its outstanding commits are done,
    /// so it cannot land after the next owner's commits.
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let tps = plain(tpl);
        let Ok(mut commits) = self.commits.lock() else {
            return;
        };
        match commits.revoke(&tps) {
            RevokeCommit::Nothing => {}
            RevokeCommit::Busy(tps) => {
                tracing::warn!(source = %self.name, partitions = %show(&tps), "a commit is still running; the recorded windows of the revoked partitions are left to their next reader");
            }
            RevokeCommit::Commit(offsets) => {
                let at = offsets
                    .iter()
                    .map(|(t, p, o)| format!("{t}/{p}@{o}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let mut list = TopicPartitionList::new();
                let mut queued = Ok(());
                for (t, p, o) in &offsets {
                    if let Err(e) = list.add_partition_offset(t, *p, Offset::Offset(*o)) {
                        queued = Err(e);
                    }
                }
                if queued.is_ok() {
                    queued = consumer.commit(&list, CommitMode::Async);
                }
                drop(list);
                match queued {
                    Ok(()) => {
                        tracing::info!(source = %self.name, offsets = %at, "committing the recorded windows of revoked partitions")
                    }
                    Err(e) => {
                        for (t, p, _) in &offsets {
                            commits.done.remove(&(t.clone(), *p));
                        }
                        tracing::warn!(source = %self.name, offsets = %at, error = %e, "cannot commit the recorded windows of revoked partitions; their next reader evaluates them again");
                    }
                }
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let tps = plain(tpl);
                tracing::info!(source = %self.name, partitions = %show(&tps), "partitions assigned");
                if let Ok(mut commits) = self.commits.lock() {
                    commits.assign(&tps);
                }
                let _ = self.events.send(Rebalanced::Assigned(tps));
            }
            Rebalance::Revoke(tpl) => {
                let tps = plain(tpl);
                tracing::info!(source = %self.name, partitions = %show(&tps), "partitions revoked");
                let _ = self.events.send(Rebalanced::Revoked(tps));
            }
            Rebalance::Error(e) => {
                tracing::warn!(source = %self.name, error = %e, "rebalance failed");
            }
        }
    }
}

/// What a commit did: the offsets and whether they were committed.
pub(super) struct Committed {
    pub(super) offsets: Vec<(String, i32, i64)>,
    pub(super) result: std::result::Result<(), String>,
}

/// Commits these offsets synchronously (on a blocking thread), those of
/// partitions still owned only (a revoked one's recorded windows are
/// committed by the revocation callback, before it goes), and never while
/// another commit may still land.
pub(super) fn commit(
    consumer: &KafkaConsumer,
    commits: &Mutex<Commits>,
    offsets: Vec<(String, i32, i64)>,
) -> Committed {
    let started = match commits.lock() {
        Ok(mut c) => c.start(offsets),
        Err(_) => None,
    };
    let Some(offsets) = started else {
        return Committed {
            offsets: Vec::new(),
            result: Err("another commit may still land".to_string()),
        };
    };
    if offsets.is_empty() {
        return Committed {
            offsets,
            result: Ok(()),
        };
    }
    let mut tpl = TopicPartitionList::new();
    let mut result = Ok(());
    for (t, p, o) in &offsets {
        if let Err(e) = tpl.add_partition_offset(t, *p, Offset::Offset(*o)) {
            result = Err(e.to_string());
        }
    }
    if result.is_ok() {
        result = consumer
            .commit(&tpl, CommitMode::Sync)
            .map_err(|e| e.to_string());
    }
    drop(tpl);
    let c = Committed { offsets, result };
    if let Ok(mut commits) = commits.lock() {
        commits.finish(&c);
    }
    c
}

/// Messages behind the high watermarks of these partitions; a partition
/// not read from yet counts from its committed offset (else the earliest).
/// `None` when the broker did not answer in time.
pub(super) fn measure_lag(
    consumer: &KafkaConsumer,
    positions: Vec<(String, i32, Option<i64>)>,
) -> Option<i64> {
    let deadline = Instant::now() + LAG_BUDGET;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(10))
    };
    let mut committed: HashMap<Tp, i64> = HashMap::new();
    if positions.iter().any(|(_, _, n)| n.is_none()) {
        let mut tpl = TopicPartitionList::new();
        for (t, p, _) in positions.iter().filter(|(_, _, n)| n.is_none()) {
            tpl.add_partition(t, *p);
        }
        let answer = consumer.committed_offsets(tpl, left()).ok()?;
        for e in answer.elements() {
            if let Offset::Offset(o) = e.offset() {
                committed.insert((e.topic().to_string(), e.partition()), o);
            }
        }
        drop(answer);
    }
    let mut total = 0i64;
    for (t, p, next) in positions {
        let (low, high) = consumer.fetch_watermarks(&t, p, left()).ok()?;
        let at = next
            .or_else(|| committed.get(&(t.clone(), p)).copied())
            .unwrap_or(low);
        total += (high - at).max(0);
    }
    Some(total)
}
