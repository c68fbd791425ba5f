//! The Kafka source: a member of a consumer group that windows JSON events
//! per partition and commits offsets only after a window is recorded.
//!
//! ```text
//! poll ──▶ per (topic, partition): open window (EventBuilder, in memory)
//!   ──close (rows/time)──▶ Parquet in the state folder ──▶ Batch + Ack ──▶ worker records
//!   ──▶ ack ──▶ commit the end offset of the acknowledged prefix ──▶ delete the Parquet file
//! ```
//!
//! Kafka is the durable log here, so unlike [`super::WindowedLog`] nothing
//! is written ahead: an open window lives in memory and is simply dropped on
//! shutdown, revocation or crash, because its offsets are not committed and
//! whoever consumes the partition next reads it again. Delivery is therefore
//! at least once, and exactly once per agent for the reports: a window is
//! keyed by `(topic, partition, first offset)` with size 0 in its
//! [`BatchVersion`], so a window rebuilt from the committed offset has the
//! same key, and one the store already holds is committed without being
//! reported again. On revocation the recorded prefix of the revoked
//! partitions is committed by the revocation callback, before the
//! partitions are given up: asynchronously (the callback does not wait),
//! from a snapshot the main loop keeps current in [`Commits`] (never
//! while dead letters wait to be written), and librdkafka completes the
//! rebalance only once outstanding commits are done. The main loop's own
//! (synchronous) commits cover owned partitions only, one at a time; the
//! callback starts none while one may still land, and at shutdown a second
//! commit is not started beside one that did not finish.
//!
//! The Parquet file of a closed window (`{topic}-{partition}-{first}.parquet`,
//! synced before the window is sent) records the window's end offset in its
//! metadata. It is deleted once the window's offsets are committed, or when
//! reading resumes past it; never at revocation or when the store holds the
//! window already, and never while the window waits for its ack in the
//! agent's queue (an earlier ownership's window is deleted at its ack once
//! passed). After a crash or a revocation it tells the rebuilt window where
//! to end: the rebuild closes exactly at that offset — not by time or count
//! before — so it holds the same messages and the windows after it keep
//! their keys. (Files of older versions give only the event count: a cap.)
//! The files are looked at on a blocking thread when reading of a
//! partition resumes.
//!
//! Bounds: when the closed windows not yet committed hold more than
//! `max_pending_events` events (default `10 × window.rows`, at least
//! 1,000,000) — say the dataset has no rule file, so nothing is recorded —
//! the assigned partitions are paused
//! (rebalances, acks and ticks are still served, and polling goes on so the
//! member stays in the group) until at most three quarters of that wait.
//! Dead letters waiting to be written are written at once beyond 10,000
//! letters or 32 MiB; while that fails consumption pauses too (none is
//! dropped: the pause stops them coming). An open window holds at most
//! `window.rows` events, or `max_pending_events` without a row limit (a
//! window closed by time only): open events are not in the backlog, and
//! closing by count waits on nothing, so this bounds memory while a lag is
//! caught up and cannot stall.
//! The loop never waits for room in the agent's queue (it would stop
//! polling, and a member that does not poll for `max.poll.interval.ms`
//! leaves the group): windows the queue cannot take wait in order, written,
//! for room (awaited alongside the other work), and once they hold more than
//! a quarter of the bound consumption pauses until none waits (not at every
//! window: a pause drops what the client fetched ahead).
//!
//! What this module owns and why:
//! - the consumer and its `Context`: rebalance callbacks log, send plain
//!   `(topic, partition)` lists on a channel and queue the revocation commit
//!   (asynchronous; blocking consumer calls there can hang a close), and
//!   librdkafka's logs go to `tracing`;
//! - windows per partition, closed in offset order, and the acknowledgement
//!   bookkeeping that turns acks into commits of the longest recorded prefix
//!   (never past a window not yet recorded);
//! - blocking client calls (synchronous commits, watermarks for the lag) on
//!   blocking threads, each building its own `TopicPartitionList` and turning
//!   any list librdkafka returns into plain data at once: a live list from
//!   the client can make dropping the consumer hang;
//! - the event schema (the rule file's `schema` check, else inferred from the
//!   first events and kept in `schema.json`), and dead letters for messages
//!   that do not fit, each located as `topic/partition@offset`.
//!
//! Client defaults (each can be overridden in `options`, except the group,
//! the brokers and the commit settings, which are driftwatch's): reading from
//! the earliest offset when the group has none, `cooperative-sticky`
//! assignment (incremental rebalances on real Kafka; on tansu, the test
//! broker, the only assignor whose rebalance survives a member timing out),
//! and a 6 s session with 1 s heartbeats so a dead agent's partitions move
//! within seconds rather than librdkafka's default 45 s.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::wal::sync_dir;
use super::{
    DeadLetter, DeadLetters, EventSchema, Result, SourceConfig, SourceKind, SourceSettings,
    StreamError, StreamStats, rule_schema, window_version,
};
use crate::report::BatchVersion;
use crate::rules::RuleFile;
use crate::sources::lake::{DoneFn, InFlight};
use crate::sources::{Ack, Batch};

/// How often windows due by time are closed and retries, commits and dead
/// letters are looked at.
const TICK: Duration = Duration::from_millis(100);
/// A window whose record failed is sent again after this long.
const RETRY_AFTER: Duration = Duration::from_secs(10);
/// A failed commit is tried again after this long.
const COMMIT_BACKOFF: Duration = Duration::from_secs(1);
/// How often the lag is measured.
const LAG_EVERY: Duration = Duration::from_secs(5);
/// The time one lag measurement may take (watermark requests together).
const LAG_BUDGET: Duration = Duration::from_secs(3);
/// Without a schema, events wait this long (or for [`super::schema::INFER_FROM`]
/// of them) before one is inferred from them.
const INFER_WAIT: Duration = Duration::from_secs(1);
/// At shutdown, the longest wait for the last commit and for the consumer to close.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);
/// The same client error is logged at most once in this long (a broker
/// that is down is reported every few milliseconds otherwise).
const ERROR_LOG_EVERY: Duration = Duration::from_secs(30);
/// The key of a window file's Parquet metadata holding the window's end
/// offset (last offset + 1): a rebuilt window closes exactly there.
const END_KEY: &str = "driftwatch.kafka.end";
/// Dead letters waiting to be written beyond which they are written at once
/// (and consumption pauses while that fails).
const LETTERS_SOFT: usize = 10_000;
/// The same, in bytes of letters.
const LETTER_BYTES_SOFT: usize = 32 << 20;

/// A topic and a partition.
type Tp = (String, i32);

/// The consumer type of this source.
type KafkaConsumer = StreamConsumer<Context>;

/// What the rebalance callbacks tell the source (plain data only).
#[derive(Debug)]
enum Rebalanced {
    Assigned(Vec<Tp>),
    Revoked(Vec<Tp>),
}

/// The consumer's context: logging, rebalances forwarded on a channel, and
/// the commit of revoked partitions' recorded windows. Its callbacks never
/// block: the only consumer call in them is an asynchronous commit (it
/// queues a request and returns).
struct Context {
    name: String,
    events: mpsc::UnboundedSender<Rebalanced>,
    errors: Arc<Throttle>,
    commits: Arc<Mutex<Commits>>,
}

/// What may be committed, shared by the main loop (which keeps `ready`
/// current), its commit thread and the revocation callback. The lock is
/// only ever held for map updates and for queueing an asynchronous commit,
/// never across a call that waits on the broker.
#[derive(Default)]
struct Commits {
    /// The partitions assigned, as the rebalance callbacks saw them: the
    /// main loop's commits leave out any other.
    owned: HashSet<Tp>,
    /// Per owned partition, the end of its longest recorded prefix whose
    /// dead letters are written: what may be committed now.
    ready: HashMap<Tp, i64>,
    /// Per partition, the offset last committed (or queued at a revocation).
    done: HashMap<Tp, i64>,
    /// A commit of the main loop was started and may still land.
    busy: bool,
}

/// What the revocation callback does about the revoked partitions.
#[derive(Debug, PartialEq, Eq)]
enum RevokeCommit {
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
    fn assign(&mut self, tps: &[Tp]) {
        for tp in tps {
            self.owned.insert(tp.clone());
            self.ready.remove(tp);
            self.done.remove(tp);
        }
    }

    /// Partitions about to be revoked: from now on no commit of this member
    /// covers them; what of them may be committed is returned once (and
    /// noted as done: the callback queues it before the partitions go).
    fn revoke(&mut self, tps: &[Tp]) -> RevokeCommit {
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
    fn start(&mut self, offsets: Vec<(String, i32, i64)>) -> Option<Vec<(String, i32, i64)>> {
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
    fn finish(&mut self, c: &Committed) {
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
struct Throttle(std::sync::Mutex<HashMap<String, (Instant, u64)>>);

impl Throttle {
    /// `Some(suppressed since the last one)` when an error of this kind is
    /// to be logged now.
    fn admit(&self, kind: String) -> Option<u64> {
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

/// One message, copied out of the client's buffer.
struct Msg {
    topic: String,
    partition: i32,
    offset: i64,
    payload: Option<Vec<u8>>,
}

impl Msg {
    fn location(&self) -> String {
        format!("{}/{}@{}", self.topic, self.partition, self.offset)
    }
}

/// The open window of a partition.
struct Open {
    first: i64,
    last: i64,
    events: u64,
    /// The end offset (last + 1) of the same window written before a crash
    /// or a revocation: the rebuilt window closes exactly there, never by
    /// time or count before.
    end: Option<i64>,
    /// The events of the same window written before, when its file does
    /// not say its end (written by an older version): a cap on the events.
    cap: Option<u64>,
    /// `None` while the stream has no schema (every message is a dead letter).
    builder: Option<super::schema::EventBuilder>,
    opened: Instant,
    last_message: Instant,
}

/// Where a closed window is on its way to being committed.
enum Stage {
    /// Rows to write as Parquet and send (not before a time, after a failed write).
    Write {
        rows: RecordBatch,
        not_before: Option<Instant>,
    },
    /// Written, and waiting for room in the agent's queue (in
    /// [`State::outbox`]), in it, or being evaluated.
    Sent,
    /// Its record failed: send again then.
    RetryAt(Instant),
    /// Recorded (or empty): its end offset may be committed.
    Recorded,
}

struct Closed {
    first: i64,
    /// Last offset + 1: what is committed once this window is recorded.
    end: i64,
    events: u64,
    version: BatchVersion,
    file: PathBuf,
    last_message: Instant,
    stage: Stage,
}

/// One assigned partition.
#[derive(Default)]
struct Part {
    open: Option<Open>,
    /// Closed windows in offset order, until committed.
    closed: VecDeque<Closed>,
    /// The next offset to consume (last consumed + 1), once a message came.
    next: Option<i64>,
    /// Where reading resumed when the partition was assigned (its committed
    /// offset, usually), once a message came.
    from: Option<i64>,
    /// The window files of the partition from `from` on, by first offset,
    /// once looked at (when reading resumes): what rebuilt windows end at.
    files: Option<HashMap<i64, Written>>,
}

/// What the file of a window written before says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Written {
    /// Its end offset (`None` in files written by older versions).
    end: Option<i64>,
    events: Option<u64>,
}

/// The windows and bookkeeping of the source (everything but the client).
struct State {
    source: SourceConfig,
    dir: PathBuf,
    stats: Arc<StreamStats>,
    dead: Arc<DeadLetters>,
    done: DoneFn,
    schema: Option<EventSchema>,
    /// The last error of the rule file's schema (logged once).
    rule_schema_error: Option<String>,
    parts: HashMap<Tp, Part>,
    /// Messages waiting for a schema to be inferred.
    unschematized: Vec<Msg>,
    infer_since: Option<Instant>,
    /// Dead letters not yet written (written before any commit).
    letters: Vec<DeadLetter>,
    /// The bytes of `letters` (about).
    letter_bytes: usize,
    open_events: u64,
    pending_events: u64,
    /// Events of closed windows not yet committed beyond which consumption pauses.
    max_pending: u64,
    /// Windows written and ready to be queued that the agent's queue had
    /// no room for yet, in the order they go.
    outbox: VecDeque<Waiting>,
    /// The events of `outbox`.
    outbox_events: u64,
    /// Repeated failures (commits while the broker is away) are logged sparingly.
    throttle: Throttle,
    /// Windows in the agent's queue or being evaluated (by version path),
    /// whatever became of their partition, with how many times each is
    /// (the same window can be sent again, or by an earlier ownership):
    /// their files are not deleted before their ack.
    unacked: HashMap<String, (Unacked, usize)>,
}

/// A window handed to the agent and not acknowledged yet.
struct Unacked {
    tp: Tp,
    first: i64,
    file: PathBuf,
}

/// A Kafka stream source: see the module documentation.
pub struct KafkaSource {
    state: State,
    consumer: Arc<KafkaConsumer>,
    events: mpsc::UnboundedReceiver<Rebalanced>,
    topics: Vec<String>,
    rules: watch::Receiver<Arc<Vec<RuleFile>>>,
    errors: Arc<Throttle>,
    commits: Arc<Mutex<Commits>>,
}

impl KafkaSource {
    /// Creates the consumer (no connection yet) and loads the stream's held
    /// schema from `dir`. `stats` are the ones `/status` shows, `done` says
    /// whether the store holds a window already. Must be called within a
    /// tokio runtime.
    pub fn new(
        dir: &Path,
        source: SourceConfig,
        stats: Arc<StreamStats>,
        done: DoneFn,
        rules: watch::Receiver<Arc<Vec<RuleFile>>>,
    ) -> Result<Self> {
        let SourceSettings::Kafka {
            brokers,
            topics,
            group,
            options,
            ..
        } = &source.settings
        else {
            return Err(StreamError::Kafka(format!(
                "{}: not a kafka source",
                source.name
            )));
        };
        let windows = dir.join("windows");
        std::fs::create_dir_all(&windows).map_err(|e| StreamError::Io {
            path: windows.clone(),
            source: e,
        })?;
        let schema_path = dir.join("schema.json");
        let schema = match std::fs::read_to_string(&schema_path) {
            Ok(text) => Some(
                serde_json::from_str(&text)
                    .map_err(|e| e.to_string())
                    .and_then(|v| EventSchema::from_json(&v))
                    .map_err(|e| StreamError::Schema(format!("{}: {e}", schema_path.display())))?,
            ),
            Err(_) => None,
        };

        let mut config = ClientConfig::new();
        config
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false");
        for (k, v) in options {
            config.set(k, v);
        }
        config
            .set("group.id", group)
            .set("bootstrap.servers", brokers)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        let level = if tracing::enabled!(target: "librdkafka", tracing::Level::DEBUG) {
            RDKafkaLogLevel::Debug
        } else {
            RDKafkaLogLevel::Info
        };
        config.set_log_level(level);
        let (events_tx, events) = mpsc::unbounded_channel();
        let errors = Arc::new(Throttle::default());
        let commits = Arc::new(Mutex::new(Commits::default()));
        let context = Context {
            name: source.name.clone(),
            events: events_tx,
            errors: errors.clone(),
            commits: commits.clone(),
        };
        let consumer: KafkaConsumer = config
            .create_with_context(context)
            .map_err(|e| StreamError::Kafka(format!("{}: {e}", source.name)))?;
        stats.lag.store(-1, Ordering::Relaxed);
        Ok(Self {
            state: State::new(source.clone(), dir, stats, done, schema),
            consumer: Arc::new(consumer),
            events,
            topics: topics.clone(),
            rules,
            errors,
            commits,
        })
    }

    /// Consumes until `stop`: windows events, sends closed windows to
    /// `queue`, commits offsets as windows are recorded. At `stop`, open
    /// windows are dropped (their offsets are not committed) and the
    /// consumer leaves the group.
    pub async fn run(
        self,
        queue: mpsc::Sender<Batch>,
        in_flight: InFlight,
        mut stop: watch::Receiver<bool>,
    ) {
        let KafkaSource {
            mut state,
            consumer,
            mut events,
            topics,
            mut rules,
            errors,
            commits,
        } = self;
        let name = state.source.name.clone();
        let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        if let Err(e) = consumer.subscribe(&topic_refs) {
            tracing::error!(source = %name, error = %e, "cannot subscribe; the source stays idle");
            let _ = stop.wait_for(|s| *s).await;
            close_consumer(consumer, &name).await;
            return;
        }
        tracing::info!(source = %name, topics = ?topics, "kafka source started");
        state.apply_rules(&rules.borrow_and_update());
        state.share(&commits);

        let (ack_tx, mut acks) = mpsc::unbounded_channel::<(BatchVersion, bool)>();
        let ack = Ack(ack_tx);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut commit_task: Option<JoinHandle<Committed>> = None;
        let mut commit_not_before = Instant::now();
        let mut lag_task: Option<JoinHandle<Option<i64>>> = None;
        let mut lag_due = Instant::now();
        // Whether the assignment is paused, whether that is to be applied
        // again (partitions came), and the cause of the pause last logged.
        let mut paused = false;
        let mut apply_pause = false;
        let mut logged: Option<Pause> = None;
        // Room in the agent's queue being waited for while windows wait to
        // be queued: kept across iterations, so it keeps its place in line.
        let mut reserving: Option<Reserve> = None;
        loop {
            let mut ticked = false;
            let mut want_commit = false;
            let mut rebalances = Vec::new();
            let mut polled = None;
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => break,
                Some(ev) = events.recv() => rebalances.push(ev),
                Some((v, ok)) = acks.recv() => {
                    want_commit |= state.acknowledged(&v, ok);
                }
                done = join(&mut commit_task) => {
                    commit_task = None;
                    match done {
                        Ok(c) => {
                            if !state.committed(c) {
                                commit_not_before = Instant::now() + COMMIT_BACKOFF;
                            }
                        }
                        Err(e) => {
                            // It panicked: it waits on the broker no more.
                            if let Ok(mut c) = commits.lock() {
                                c.busy = false;
                            }
                            tracing::error!(source = %name, error = %e, "commit task failed");
                        }
                    }
                }
                lag = join(&mut lag_task) => {
                    lag_task = None;
                    let lag = lag.ok().flatten().unwrap_or(-1);
                    state.stats.lag.store(lag, Ordering::Relaxed);
                }
                permit = reserved(&mut reserving) => {
                    reserving = None;
                    match permit {
                        Ok(permit) => {
                            if let Some(batch) = state.next_waiting(&in_flight) {
                                permit.send(batch);
                            }
                        }
                        Err(_) => break,
                    }
                }
                _ = tick.tick() => ticked = true,
                received = consumer.recv() => {
                    let msg = match received {
                        Ok(m) => Msg {
                            topic: m.topic().to_string(),
                            partition: m.partition(),
                            offset: m.offset(),
                            payload: m.payload().map(<[u8]>::to_vec),
                        },
                        Err(e) => {
                            // Keyed like the error callback's, so an error it
                            // reported already is not logged twice.
                            let kind = e.rdkafka_error_code().map_or_else(
                                || e.to_string(),
                                |code| format!("{code:?}"),
                            );
                            if let Some(left_out) = errors.admit(kind) {
                                tracing::warn!(source = %name, error = %e, repeats_not_logged = left_out, "kafka consumer error (librdkafka retries)");
                            }
                            continue;
                        }
                    };
                    // Rebalances served while this message was polled come first.
                    while let Ok(ev) = events.try_recv() {
                        rebalances.push(ev);
                    }
                    polled = Some(msg);
                }
            }
            for ev in rebalances {
                lag_due = Instant::now();
                match ev {
                    Rebalanced::Assigned(tps) => {
                        state.assigned(tps);
                        apply_pause = true;
                    }
                    // Their recorded windows were committed by the callback.
                    Rebalanced::Revoked(tps) => state.revoked(tps),
                }
            }
            if let Some(msg) = polled {
                state.resume_at(&msg).await;
                state.message(msg);
            }
            while let Ok((v, ok)) = acks.try_recv() {
                want_commit |= state.acknowledged(&v, ok);
            }
            if ticked {
                if rules.has_changed().unwrap_or(false) {
                    let current = rules.borrow_and_update().clone();
                    state.apply_rules(&current);
                }
                state.tick();
                if !state.letters.is_empty() {
                    state.flush_letters().await;
                }
                want_commit = true;
            } else if state.letters_full() && !paused {
                state.flush_letters().await;
            }
            // Never waits for room in the queue: windows the queue cannot
            // take wait in order (written, room awaited below), and
            // consumption pauses while too many do — polling goes on, so the
            // member stays in the group.
            if !state.send_closed(&queue, &in_flight, &ack).await {
                break;
            }
            if !state.waiting() {
                reserving = None;
            } else if reserving.is_none() {
                reserving = Some(Box::pin(queue.clone().reserve_owned()));
            }
            if want_commit
                && commit_task.is_none()
                && Instant::now() >= commit_not_before
                && let Some(offsets) = state.committable()
            {
                if state.flush_letters().await {
                    let (consumer, commits) = (consumer.clone(), commits.clone());
                    commit_task = Some(tokio::task::spawn_blocking(move || {
                        commit(&consumer, &commits, offsets)
                    }));
                } else {
                    commit_not_before = Instant::now() + COMMIT_BACKOFF;
                }
            }
            if ticked && lag_task.is_none() && Instant::now() >= lag_due {
                lag_due = Instant::now() + LAG_EVERY;
                let positions = state.positions();
                if positions.is_empty() {
                    // No partition assigned: this member's lag says nothing.
                    state.stats.lag.store(-1, Ordering::Relaxed);
                } else {
                    let consumer = consumer.clone();
                    lag_task = Some(tokio::task::spawn_blocking(move || {
                        measure_lag(&consumer, positions)
                    }));
                }
            }
            // Pausing, not leaving the poll: rebalances, acks and ticks are
            // served on, and the member stays in the group.
            let cause = state.pause_cause(paused);
            let pause = cause.is_some();
            if pause != paused || apply_pause {
                match pause_resume(&consumer, &state.assignment(), pause) {
                    Ok(()) => {
                        if !pause && paused {
                            tracing::info!(source = %name, closed_events = state.backlog(), "consumption resumed");
                        }
                        if pause != paused {
                            logged = None;
                        }
                        paused = pause;
                        apply_pause = false;
                    }
                    Err(e) => {
                        if let Some(left_out) = errors.admit(format!("pause {e}")) {
                            tracing::warn!(source = %name, error = %e, pause, repeats_not_logged = left_out, "cannot pause or resume the partitions; trying again");
                        }
                    }
                }
            }
            // Each cause of a pause is logged once.
            if paused && cause != logged {
                match cause {
                    Some(Pause::Backlog | Pause::Letters) => {
                        tracing::warn!(source = %name, closed_events = state.backlog(), max_pending = state.max_pending, dead_letters_waiting = state.letters.len(), "consumption paused: too many events of closed windows wait to be recorded, or dead letters to be written");
                    }
                    Some(Pause::Queue) => {
                        tracing::info!(source = %name, waiting_events = state.outbox_events, "consumption paused: windows wait for room in the agent's evaluation queue (evaluation is behind the stream)");
                    }
                    None => {}
                }
                logged = cause;
            }
            // What the revocation callback may commit, as of now.
            state.share(&commits);
        }

        // Shutdown: open windows are dropped (re-read at the next start);
        // what is recorded already is committed if that is quick.
        tracing::info!(source = %name, "kafka source stopping");
        state.drop_open();
        while let Ok((v, ok)) = acks.try_recv() {
            state.acknowledged(&v, ok);
        }
        let deadline = tokio::time::Instant::now() + SHUTDOWN_WAIT;
        // A commit that did not finish may still land: none is started
        // beside it (the two could land in either order).
        let mut settled = true;
        if let Some(task) = commit_task.take() {
            match tokio::time::timeout_at(deadline, task).await {
                Ok(Ok(c)) => {
                    state.committed(c);
                }
                Ok(Err(e)) => {
                    settled = false;
                    tracing::error!(source = %name, error = %e, "commit task failed");
                }
                Err(_) => settled = false,
            }
        }
        if !settled {
            tracing::warn!(source = %name, "the last commit did not finish; the windows recorded since are evaluated again by the partitions' next reader");
        } else if let Some(offsets) = state.committable()
            && state.flush_letters().await
        {
            let (c, commits) = (consumer.clone(), commits.clone());
            let task = tokio::task::spawn_blocking(move || commit(&c, &commits, offsets));
            if let Ok(Ok(c)) = tokio::time::timeout_at(deadline, task).await {
                state.committed(c);
            }
        }
        state.flush_letters().await;
        // Leaving the group revokes the partitions: the callback commits
        // what is recorded beyond the commits above, unless one still runs.
        state.share(&commits);
        if let Some(task) = lag_task.take() {
            let _ = tokio::time::timeout_at(deadline, task).await;
        }
        state.stats.lag.store(-1, Ordering::Relaxed);
        close_consumer(consumer, &name).await;
        tracing::info!(source = %name, "kafka source stopped");
    }
}

/// Waiting for room in the agent's queue.
type Reserve = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = std::result::Result<mpsc::OwnedPermit<Batch>, mpsc::error::SendError<()>>,
            > + Send,
    >,
>;

/// Awaits room in the queue being waited for; pending forever otherwise.
async fn reserved(
    reserve: &mut Option<Reserve>,
) -> std::result::Result<mpsc::OwnedPermit<Batch>, mpsc::error::SendError<()>> {
    match reserve {
        Some(r) => r.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Awaits an optional task; pending forever without one.
async fn join<T>(
    task: &mut Option<JoinHandle<T>>,
) -> std::result::Result<T, tokio::task::JoinError> {
    match task {
        Some(t) => t.await,
        None => std::future::pending().await,
    }
}

/// Unsubscribes and drops the consumer on a thread of its own (closing
/// leaves the group and may wait on the broker), waiting at most
/// [`SHUTDOWN_WAIT`].
async fn close_consumer(consumer: Arc<KafkaConsumer>, name: &str) {
    let (tx, rx) = oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("kafka-close".to_string())
        .spawn(move || {
            consumer.unsubscribe();
            drop(consumer);
            let _ = tx.send(());
        });
    if let Err(e) = spawned {
        tracing::warn!(source = %name, error = %e, "cannot start a thread to close the consumer");
        return;
    }
    if tokio::time::timeout(SHUTDOWN_WAIT, rx).await.is_err() {
        tracing::warn!(source = %name, "the kafka consumer did not close within 10 s; leaving it");
    }
}

/// Pauses (or resumes) fetching from these partitions. Local to the
/// client (it does not wait on the broker); messages of a paused partition
/// already fetched are dropped by the client and fetched again on resume.
fn pause_resume(
    consumer: &KafkaConsumer,
    tps: &[Tp],
    pause: bool,
) -> std::result::Result<(), String> {
    if tps.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for (t, p) in tps {
        tpl.add_partition(t, *p);
    }
    let result = if pause {
        consumer.pause(&tpl)
    } else {
        consumer.resume(&tpl)
    };
    drop(tpl);
    result.map_err(|e| e.to_string())
}

/// What a commit did: the offsets and whether they were committed.
struct Committed {
    offsets: Vec<(String, i32, i64)>,
    result: std::result::Result<(), String>,
}

/// Commits these offsets synchronously (on a blocking thread), those of
/// partitions still owned only (a revoked one's recorded windows are
/// committed by the revocation callback, before it goes), and never while
/// another commit may still land.
fn commit(
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
fn measure_lag(
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

/// Why a message cannot be decoded while the stream has no schema.
fn unschematized_reason(payload: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(payload) {
        Err(e) => format!("not JSON: {e}"),
        Ok(_) => "no schema to decode it with: the stream's schema is inferred from flat JSON \
                  objects, and none came first"
            .to_string(),
    }
}

/// About the memory a dead letter takes.
fn letter_size(l: &DeadLetter) -> usize {
    l.at.len() + l.source.len() + l.location.len() + l.reason.len() + l.event.len() + 64
}

/// What the Parquet file of a window says about it (left by a run, or an
/// ownership of the partition, that closed the same window before): its
/// end offset and its events. `None` when it cannot be read.
fn written(file: &Path) -> Option<Written> {
    use parquet::file::reader::FileReader;
    let f = std::fs::File::open(file).ok()?;
    let reader = parquet::file::reader::SerializedFileReader::new(f).ok()?;
    let meta = reader.metadata().file_metadata();
    let end = meta
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|kv| kv.key == END_KEY))
        .and_then(|kv| kv.value.as_deref())
        .and_then(|v| v.parse::<i64>().ok());
    Some(Written {
        end,
        events: u64::try_from(meta.num_rows()).ok(),
    })
}

/// Blocking: in `dir`, deletes the window files of partition `tp` that start
/// before `from` (their offsets are committed, or reading resumed past them;
/// also the temporary files of a write cut short), except `keep` (windows
/// not acknowledged yet). With `read`, says what each other window file of
/// the partition holds, by first offset.
fn sweep(
    dir: &Path,
    tp: &Tp,
    from: i64,
    keep: &HashSet<PathBuf>,
    read: bool,
) -> HashMap<i64, Written> {
    let mut found = HashMap::new();
    let prefix = format!("{}-{}-", tp.0, tp.1);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let (stem, tmp) = match name.strip_suffix(".tmp") {
            Some(n) => (n, true),
            None => (name, false),
        };
        let Some(first) = stem
            .strip_suffix(".parquet")
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|n| n.parse::<i64>().ok())
        else {
            continue;
        };
        let path = e.path();
        if first < from {
            if !keep.contains(&path) {
                let _ = std::fs::remove_file(&path);
            }
        } else if read
            && !tmp
            && let Some(w) = written(&path)
        {
            found.insert(first, w);
        }
    }
    found
}

/// Blocking: writes a window's rows as Parquet with its end offset in the
/// file's metadata, synced (file and folder) before the window can be
/// recorded: after a crash or a revocation it says where the rebuilt window
/// ends. Via a temporary name, so a reader never sees half a file.
fn write_window(path: &Path, rows: &RecordBatch, end: i64) -> Result<()> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| StreamError::Io { path: p, source }
    };
    let fail = |message: String| StreamError::Window {
        path: path.to_path_buf(),
        message,
    };
    let tmp = path.with_extension("parquet.tmp");
    let file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .set_key_value_metadata(Some(vec![parquet::file::metadata::KeyValue::new(
            END_KEY.to_string(),
            end.to_string(),
        )]))
        .build();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, rows.schema(), Some(props))
        .map_err(|e| fail(e.to_string()))?;
    writer.write(rows).map_err(|e| fail(e.to_string()))?;
    let file = writer.into_inner().map_err(|e| fail(e.to_string()))?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io(path))?;
    match path.parent() {
        Some(dir) => sync_dir(dir).map_err(io(dir)),
        None => Ok(()),
    }
}

/// Runs blocking work on a blocking thread without waiting for it (inline
/// outside a tokio runtime).
fn in_background(work: impl FnOnce() + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn_blocking(work);
        }
        Err(_) => work(),
    }
}

impl State {
    fn new(
        source: SourceConfig,
        dir: &Path,
        stats: Arc<StreamStats>,
        done: DoneFn,
        schema: Option<EventSchema>,
    ) -> Self {
        // `max_pending_events` (its default is 10 × window.rows, at least 1,000,000).
        let max_pending = match &source.settings {
            SourceSettings::Kafka {
                max_pending_events, ..
            } => *max_pending_events,
            _ => source
                .window
                .rows
                .map(|r| r.saturating_mul(10))
                .unwrap_or(0)
                .max(1_000_000),
        };
        State {
            source,
            dead: Arc::new(DeadLetters::new(dir.join("dead-letters.ndjson"))),
            dir: dir.to_path_buf(),
            stats,
            done,
            schema,
            rule_schema_error: None,
            parts: HashMap::new(),
            unschematized: Vec::new(),
            infer_since: None,
            max_pending,
            outbox: VecDeque::new(),
            outbox_events: 0,
            letters: Vec::new(),
            letter_bytes: 0,
            open_events: 0,
            pending_events: 0,
            throttle: Throttle::default(),
            unacked: HashMap::new(),
        }
    }

    fn window_file(&self, topic: &str, partition: i32, first: i64) -> PathBuf {
        self.dir
            .join("windows")
            .join(format!("{topic}-{partition}-{first}.parquet"))
    }

    fn publish(&self) {
        self.stats
            .open_events
            .store(self.open_events, Ordering::Relaxed);
        self.stats
            .pending_events
            .store(self.pending_events, Ordering::Relaxed);
    }

    /// Takes the rule file's schema when it declares one (closing open
    /// windows if it differs from the one held).
    fn apply_rules(&mut self, rules: &[RuleFile]) {
        let declared = rules
            .iter()
            .find(|r| r.dataset == self.source.dataset)
            .and_then(rule_schema);
        match declared {
            Some(Ok(s)) => {
                self.rule_schema_error = None;
                if self.schema.as_ref() != Some(&s) {
                    self.close_all_open();
                    self.schema = Some(s);
                    self.replay();
                }
            }
            Some(Err(e)) if self.rule_schema_error.as_ref() != Some(&e) => {
                tracing::error!(source = %self.source.name, error = %e, "the rule file's schema cannot be used for events; keeping the schema held");
                self.rule_schema_error = Some(e);
            }
            Some(Err(_)) | None => {}
        }
    }

    /// Partitions assigned: windows start at the first message read.
    fn assigned(&mut self, tps: Vec<Tp>) {
        for tp in tps {
            self.parts.entry(tp).or_default();
        }
    }

    /// Partitions revoked: forgotten. Their recorded windows were committed
    /// by the revocation callback before they went (see
    /// [`Context::pre_rebalance`]); none of this member's commits covers
    /// them from then on.
    fn revoked(&mut self, tps: Vec<Tp>) {
        for tp in &tps {
            self.forget(tp);
        }
    }

    /// Makes the offsets the revocation callback may commit those of now:
    /// per owned partition, the end of the longest recorded prefix — not
    /// while dead letters wait to be written (nothing is committed before
    /// they are; the offsets shared before stay).
    fn share(&self, commits: &Mutex<Commits>) {
        if !self.letters.is_empty() {
            return;
        }
        let ready = self.committable().unwrap_or_default();
        let Ok(mut c) = commits.lock() else {
            return;
        };
        c.ready.clear();
        for (t, p, o) in ready {
            let tp = (t, p);
            if c.owned.contains(&tp) {
                c.ready.insert(tp, o);
            }
        }
    }

    /// Drops a partition's windows: the open one and those not committed
    /// (whoever reads the partition next rebuilds them from the committed
    /// offset). Their files stay: a window recorded but not committed is
    /// rebuilt with the events its file holds, and the files are deleted
    /// once committed or when reading resumes past them.
    fn forget(&mut self, tp: &Tp) {
        self.unschematized
            .retain(|m| (m.topic.as_str(), m.partition) != (tp.0.as_str(), tp.1));
        // Not in the agent's queue yet: never evaluated by this agent.
        self.outbox.retain(|w| &w.tp != tp);
        self.outbox_events = self.outbox.iter().map(|w| w.events).sum();
        let Some(part) = self.parts.remove(tp) else {
            return;
        };
        let open = part.open.as_ref().map(|o| o.events).unwrap_or(0);
        let closed: u64 = part.closed.iter().map(|c| c.events).sum();
        self.open_events = self.open_events.saturating_sub(open);
        self.pending_events = self.pending_events.saturating_sub(open + closed);
        if open + closed > 0 {
            tracing::info!(source = %self.source.name, partition = %format!("{}/{}", tp.0, tp.1), events = open + closed, "dropped windows not committed; the partition's next reader reads them again");
        }
        self.publish();
    }

    /// Consumption went back (a reset): the partition starts over.
    fn went_back(&mut self, msg: &Msg) {
        let tp = (msg.topic.clone(), msg.partition);
        if let Some(n) = self.parts.get(&tp).and_then(|p| p.next)
            && msg.offset < n
        {
            tracing::warn!(source = %self.source.name, at = %msg.location(), expected = n, "offset went back; rebuilding the partition's windows from here");
            self.forget(&tp);
        }
    }

    /// Files of windows handed to the agent and not acknowledged yet.
    fn unacked_files(&self, tp: &Tp) -> HashSet<PathBuf> {
        self.unacked
            .values()
            .filter(|(u, _)| &u.tp == tp)
            .map(|(u, _)| u.file.clone())
            .collect()
    }

    /// Before the first message of a partition since it was assigned (or
    /// went back): its window files are looked at on a blocking thread —
    /// those before the message are deleted, the others say where rebuilt
    /// windows end (see [`sweep`]).
    async fn resume_at(&mut self, msg: &Msg) {
        self.went_back(msg);
        let tp = (msg.topic.clone(), msg.partition);
        if self.parts.get(&tp).is_some_and(|p| p.files.is_some()) {
            return;
        }
        let (dir, keep, at, t) = (
            self.dir.join("windows"),
            self.unacked_files(&tp),
            msg.offset,
            tp.clone(),
        );
        let files = tokio::task::spawn_blocking(move || sweep(&dir, &t, at, &keep, true))
            .await
            .unwrap_or_default();
        self.parts.entry(tp).or_default().files = Some(files);
    }

    fn message(&mut self, msg: Msg) {
        let tp = (msg.topic.clone(), msg.partition);
        self.went_back(&msg);
        if self.parts.get(&tp).is_none_or(|p| p.files.is_none()) {
            // Not looked at yet (only when called outside the run loop).
            let keep = self.unacked_files(&tp);
            let files = sweep(&self.dir.join("windows"), &tp, msg.offset, &keep, true);
            self.parts.entry(tp.clone()).or_default().files = Some(files);
        }
        let part = self.parts.entry(tp).or_default();
        part.from.get_or_insert(msg.offset);
        part.next = Some(msg.offset + 1);
        if self.schema.is_none() {
            self.infer_since.get_or_insert_with(Instant::now);
            self.unschematized.push(msg);
            if self.unschematized.len() >= super::schema::INFER_FROM {
                self.infer();
            }
            return;
        }
        self.window(msg);
    }

    /// Infers the schema from the messages waiting for one, holds it
    /// (persisted) and windows them.
    fn infer(&mut self) {
        self.infer_since = None;
        let inferred = EventSchema::infer(
            self.unschematized
                .iter()
                .filter_map(|m| m.payload.as_deref()),
        );
        if let Some(s) = inferred {
            let path = self.dir.join("schema.json");
            let tmp = self.dir.join(".schema.json.tmp");
            let text = serde_json::to_string_pretty(&s.to_json()).unwrap_or_default();
            let (dir, name) = (self.dir.clone(), self.source.name.clone());
            // Synced, on a blocking thread: the schema is held from now on
            // whether or not saving it works.
            in_background(move || {
                let saved = std::fs::write(&tmp, text)
                    .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
                    .and_then(|()| std::fs::rename(&tmp, &path))
                    .and_then(|()| sync_dir(&dir));
                if let Err(e) = saved {
                    tracing::error!(source = %name, path = %path.display(), error = %e, "cannot save the inferred schema; it holds until restart");
                }
            });
            tracing::info!(source = %self.source.name, schema = %s.to_json(), "stream schema inferred from the first events and held fixed");
            self.close_all_open();
            self.schema = Some(s);
        }
        // Without a schema (no flat object among them) they become dead letters.
        self.replay();
    }

    fn replay(&mut self) {
        for m in std::mem::take(&mut self.unschematized) {
            self.window(m);
        }
        self.infer_since = None;
    }

    /// Adds one message to its partition's open window.
    fn window(&mut self, msg: Msg) {
        let tp = (msg.topic.clone(), msg.partition);
        let now = Instant::now();
        // A rebuilt window whose end never came (the messages before it were
        // removed meanwhile): it closes where it got to.
        if let Some(o) = self.parts.get(&tp).and_then(|p| p.open.as_ref())
            && o.end.is_some_and(|e| msg.offset >= e)
        {
            tracing::warn!(source = %self.source.name, at = %msg.location(), end = ?o.end, "a rebuilt window passed the end it was written with; closing it here");
            self.close(&tp);
        }
        let needs_open = self.parts.get(&tp).is_none_or(|p| p.open.is_none());
        let fresh = if needs_open {
            let before = self
                .parts
                .get_mut(&tp)
                .and_then(|p| p.files.as_mut())
                .and_then(|f| f.remove(&msg.offset));
            let (end, cap) = match before {
                Some(Written { end: Some(e), .. }) => (Some(e), None),
                Some(Written { end: None, events }) => (None, events),
                None => (None, None),
            };
            if let Some(e) = end {
                tracing::info!(source = %self.source.name, at = %msg.location(), end = e, "rebuilding a window written before, up to the same end offset");
            } else if let Some(n) = cap {
                tracing::info!(source = %self.source.name, at = %msg.location(), events = n, "rebuilding a window written before, with the same events");
            }
            Some(Open {
                first: msg.offset,
                last: msg.offset,
                events: 0,
                end,
                cap,
                builder: self.schema.as_ref().map(EventSchema::builder),
                opened: now,
                last_message: now,
            })
        } else {
            None
        };
        let part = self.parts.entry(tp.clone()).or_default();
        if fresh.is_some() {
            part.open = fresh;
        }
        let Some(open) = part.open.as_mut() else {
            return;
        };
        let decoded = match (&msg.payload, open.builder.as_mut()) {
            (None, _) => Err("the message has no payload".to_string()),
            (Some(p), Some(b)) => b.push_json(p),
            (Some(p), None) => Err(unschematized_reason(p)),
        };
        open.last = msg.offset;
        open.last_message = now;
        let letter = match decoded {
            Ok(()) => {
                open.events += 1;
                self.open_events += 1;
                self.pending_events += 1;
                self.stats.accepted.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(reason) => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                Some(DeadLetter::new(
                    &self.source.name,
                    msg.location(),
                    reason,
                    msg.payload.as_deref().unwrap_or_default(),
                ))
            }
        };
        // A rebuilt window closes exactly at the end it was written with;
        // any other at `window.rows` events, or at `max_pending_events`
        // without a row limit (closed by time only): an open window is not
        // in the backlog that pauses consumption, so this is what bounds it
        // while a large lag is caught up. Closing by count never waits on
        // anything, so this cannot stall.
        let full = match open.end {
            Some(end) => msg.offset + 1 >= end,
            None => {
                let limit = self
                    .source
                    .window
                    .rows
                    .unwrap_or(self.max_pending)
                    .max(1)
                    .min(open.cap.unwrap_or(u64::MAX));
                open.events >= limit
            }
        };
        if let Some(letter) = letter {
            self.keep_letter(letter);
        }
        if full {
            self.close(&tp);
        }
        self.publish();
    }

    /// Keeps a dead letter to write. None is dropped: beyond the soft
    /// bounds consumption pauses (see [`Self::pause_cause`]), which stops
    /// them coming, and they are written before any commit.
    fn keep_letter(&mut self, letter: DeadLetter) {
        self.letter_bytes += letter_size(&letter);
        self.letters.push(letter);
    }

    /// Dead letters wait beyond the soft bounds: write them now, and pause
    /// consumption while that fails.
    fn letters_full(&self) -> bool {
        self.letters.len() >= LETTERS_SOFT || self.letter_bytes >= LETTER_BYTES_SOFT
    }

    /// Events of closed windows not yet committed.
    fn backlog(&self) -> u64 {
        self.pending_events.saturating_sub(self.open_events)
    }

    /// Why consumption is to pause (or stay paused), if it is: too many
    /// events wait in closed windows — once paused, until at most three
    /// quarters of the bound do, so that it does not flap at every window —
    /// dead letters cannot be written, or the windows waiting for room in
    /// the agent's queue hold more than a quarter of the bound — once
    /// paused, until none waits (pausing drops what the client fetched
    /// ahead, so it is not done at every window the queue cannot take).
    fn pause_cause(&self, paused: bool) -> Option<Pause> {
        let bound = if paused {
            self.max_pending - self.max_pending / 4
        } else {
            self.max_pending
        };
        if self.backlog() > bound {
            Some(Pause::Backlog)
        } else if self.letters_full() {
            Some(Pause::Letters)
        } else if self.outbox_events > self.max_pending / 4 || (paused && self.waiting()) {
            Some(Pause::Queue)
        } else {
            None
        }
    }

    /// The assigned partitions.
    fn assignment(&self) -> Vec<Tp> {
        self.parts.keys().cloned().collect()
    }

    /// Closes a partition's open window.
    fn close(&mut self, tp: &Tp) {
        let Some(mut open) = self.parts.get_mut(tp).and_then(|p| p.open.take()) else {
            return;
        };
        let version = window_version(
            SourceKind::Kafka,
            &self.source.dataset,
            &format!("{}/{}/{}", tp.0, tp.1, open.first),
            0,
            open.events,
        );
        let file = self.window_file(&tp.0, tp.1, open.first);
        self.open_events = self.open_events.saturating_sub(open.events);
        let stage = match open.builder.as_mut() {
            Some(b) if open.events > 0 => match b.finish() {
                Ok(rows) => Stage::Write {
                    rows,
                    not_before: None,
                },
                Err(e) => {
                    // Cannot happen for values the builder accepted; never silent.
                    tracing::error!(source = %self.source.name, window = %version.path, error = %e, events = open.events, "cannot build the window; its events are not evaluated");
                    self.pending_events = self.pending_events.saturating_sub(open.events);
                    open.events = 0;
                    Stage::Recorded
                }
            },
            // Only dead letters: nothing to evaluate, the offsets may be committed.
            _ => Stage::Recorded,
        };
        if open.events > 0 {
            self.stats.windows_closed.fetch_add(1, Ordering::Relaxed);
        }
        let closed = Closed {
            first: open.first,
            end: open.last + 1,
            events: open.events,
            version,
            file,
            last_message: open.last_message,
            stage,
        };
        self.parts
            .entry(tp.clone())
            .or_default()
            .closed
            .push_back(closed);
        self.publish();
    }

    fn close_all_open(&mut self) {
        let open: Vec<Tp> = self
            .parts
            .iter()
            .filter(|(_, p)| p.open.is_some())
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in open {
            self.close(&tp);
        }
    }

    /// Drops the open windows (shutdown): their offsets stay uncommitted.
    fn drop_open(&mut self) {
        for part in self.parts.values_mut() {
            if let Some(o) = part.open.take() {
                self.pending_events = self.pending_events.saturating_sub(o.events);
            }
        }
        self.open_events = 0;
        self.unschematized.clear();
        self.publish();
    }

    /// Time-driven work: windows due by time, schema inference.
    fn tick(&mut self) {
        if self.infer_since.is_some_and(|t| t.elapsed() >= INFER_WAIT) {
            self.infer();
        }
        if let Some(limit) = self.source.window.duration {
            let due: Vec<Tp> = self
                .parts
                .iter()
                // A rebuilt window closes at its end offset only.
                .filter(|(_, p)| {
                    p.open
                        .as_ref()
                        .is_some_and(|o| o.end.is_none() && o.opened.elapsed() >= limit)
                })
                .map(|(tp, _)| tp.clone())
                .collect();
            for tp in due {
                self.close(&tp);
            }
        }
    }

    /// An ack from the worker; `true` when a commit may now be possible.
    fn acknowledged(&mut self, version: &BatchVersion, recorded: bool) -> bool {
        let last = match self.unacked.get_mut(&version.path) {
            Some((_, n)) if *n > 1 => {
                *n -= 1;
                None
            }
            Some(_) => self.unacked.remove(&version.path).map(|(u, _)| u),
            None => None,
        };
        for part in self.parts.values_mut() {
            let Some(c) = part
                .closed
                .iter_mut()
                .find(|c| matches!(c.stage, Stage::Sent) && c.version.path == version.path)
            else {
                continue;
            };
            if recorded {
                c.stage = Stage::Recorded;
                return true;
            }
            tracing::warn!(source = %self.source.name, window = %version.path, "the window could not be recorded; sending it again in 10 s");
            c.stage = Stage::RetryAt(Instant::now() + RETRY_AFTER);
            return false;
        }
        // A window sent before its partition was revoked: its file stays
        // (it says where the window ends when rebuilt) until committed or
        // passed — passed already if the partition is read again from
        // beyond it.
        if let Some(u) = last
            && self
                .parts
                .get(&u.tp)
                .and_then(|p| p.from)
                .is_some_and(|from| u.first < from)
        {
            let _ = std::fs::remove_file(&u.file);
        }
        false
    }

    /// Per partition, the end offset of the longest prefix of recorded
    /// windows, where there is one.
    fn committable(&self) -> Option<Vec<(String, i32, i64)>> {
        self.committable_where(|_| true)
    }

    /// [`Self::committable`] of the partitions `keep` holds.
    fn committable_where(&self, keep: impl Fn(&Tp) -> bool) -> Option<Vec<(String, i32, i64)>> {
        let mut out = Vec::new();
        for (tp, part) in self.parts.iter().filter(|(tp, _)| keep(tp)) {
            let end = part
                .closed
                .iter()
                .take_while(|c| matches!(c.stage, Stage::Recorded))
                .last()
                .map(|c| c.end);
            if let Some(end) = end {
                out.push((tp.0.clone(), tp.1, end));
            }
        }
        (!out.is_empty()).then_some(out)
    }

    /// Applies a commit's outcome; `false` when it failed.
    fn committed(&mut self, c: Committed) -> bool {
        if let Err(e) = c.result {
            if let Some(left_out) = self.throttle.admit(format!("commit {e}")) {
                tracing::warn!(source = %self.source.name, error = %e, repeats_not_logged = left_out, "offset commit failed; retrying");
            }
            return false;
        }
        for (t, p, offset) in c.offsets {
            let tp = (t, p);
            let Some(part) = self.parts.get_mut(&tp) else {
                // Revoked meanwhile: the files of its windows below the
                // offset are done with (but those of windows the agent has
                // not acknowledged yet).
                let (dir, keep) = (self.dir.join("windows"), self.unacked_files(&tp));
                in_background(move || {
                    sweep(&dir, &tp, offset, &keep, false);
                });
                continue;
            };
            while part
                .closed
                .front()
                .is_some_and(|w| w.end <= offset && matches!(w.stage, Stage::Recorded))
            {
                let Some(w) = part.closed.pop_front() else {
                    break;
                };
                // The only place a window's file goes while its partition
                // is read: its offsets are committed now (unless the same
                // window of an earlier ownership still waits for its ack).
                if !self.unacked.contains_key(&w.version.path) {
                    let _ = std::fs::remove_file(&w.file);
                }
                if w.events > 0 {
                    self.stats.windows_evaluated.fetch_add(1, Ordering::Relaxed);
                    self.pending_events = self.pending_events.saturating_sub(w.events);
                }
            }
        }
        self.publish();
        true
    }

    /// Writes the dead letters seen so far; `false` when that failed (they
    /// are kept and nothing is committed past them).
    async fn flush_letters(&mut self) -> bool {
        if self.letters.is_empty() {
            return true;
        }
        let letters = std::mem::take(&mut self.letters);
        let dead = self.dead.clone();
        let written = tokio::task::spawn_blocking(move || {
            let r = dead.write(&letters);
            (letters, r)
        })
        .await;
        match written {
            Ok((_, Ok(()))) => {
                self.letter_bytes = 0;
                true
            }
            Ok((letters, Err(e))) => {
                if let Some(left_out) = self.throttle.admit(format!("dead letters {e}")) {
                    tracing::error!(source = %self.source.name, error = %e, letters = letters.len(), repeats_not_logged = left_out, "cannot write dead letters; offsets are not committed until they are");
                }
                self.letters = letters;
                false
            }
            Err(e) => {
                // A panic while writing: the letters went with the task.
                tracing::error!(source = %self.source.name, error = %e, "dead-letter task failed");
                self.letter_bytes = 0;
                false
            }
        }
    }

    /// The next closed window to write or send again: (partition, first offset).
    fn next_to_send(&self) -> Option<(Tp, i64)> {
        let now = Instant::now();
        self.parts.iter().find_map(|(tp, part)| {
            part.closed
                .iter()
                .find(|c| match c.stage {
                    Stage::Write { not_before, .. } => not_before.is_none_or(|t| t <= now),
                    Stage::RetryAt(t) => t <= now,
                    _ => false,
                })
                .map(|c| (tp.clone(), c.first))
        })
    }

    fn find(&mut self, tp: &Tp, first: i64) -> Option<&mut Closed> {
        self.parts
            .get_mut(tp)?
            .closed
            .iter_mut()
            .find(|c| c.first == first)
    }

    /// Writes closed windows as Parquet and queues them for the agent,
    /// never waiting for room in its queue: windows the queue cannot take
    /// now wait in [`Self::outbox`], in order, written (their rows are not
    /// kept in memory), and consumption pauses while too many do. One the
    /// store holds already is marked recorded instead. `false` when the
    /// queue is closed (the agent stops).
    async fn send_closed(
        &mut self,
        queue: &mpsc::Sender<Batch>,
        in_flight: &InFlight,
        ack: &Ack,
    ) -> bool {
        loop {
            if !self.queue_waiting(queue, in_flight) {
                return false;
            }
            let Some((tp, first)) = self.next_to_send() else {
                return true;
            };
            if let Some((batch, events)) = self.prepare(&tp, first, ack).await {
                self.outbox_events += events;
                self.outbox.push_back(Waiting {
                    tp,
                    first,
                    events,
                    batch,
                });
            }
        }
    }

    /// Queues the windows waiting in [`Self::outbox`], in order, while the
    /// queue has room (without waiting for it); `false` when the queue is
    /// closed.
    fn queue_waiting(&mut self, queue: &mpsc::Sender<Batch>, in_flight: &InFlight) -> bool {
        while !self.outbox.is_empty() {
            match queue.try_reserve() {
                Ok(permit) => {
                    if let Some(batch) = self.next_waiting(in_flight) {
                        permit.send(batch);
                    }
                }
                Err(mpsc::error::TrySendError::Full(())) => break,
                Err(mpsc::error::TrySendError::Closed(())) => return false,
            }
        }
        true
    }

    /// Takes the first window waiting to be queued, counted in flight: the
    /// caller holds room for it in the queue.
    fn next_waiting(&mut self, in_flight: &InFlight) -> Option<Batch> {
        let w = self.outbox.pop_front()?;
        self.outbox_events = self.outbox_events.saturating_sub(w.events);
        let sent = Unacked {
            tp: w.tp.clone(),
            first: w.first,
            file: w.batch.path.clone(),
        };
        self.unacked
            .entry(w.batch.version.path.clone())
            .or_insert((sent, 0))
            .1 += 1;
        if let Ok(mut set) = in_flight.lock() {
            set.insert((w.batch.dataset.clone(), w.batch.version.clone()));
        }
        Some(w.batch)
    }

    /// Whether windows wait for room in the agent's queue.
    fn waiting(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// Writes a closed window as Parquet (the store check and the write off
    /// the async threads) and makes its batch, with its events; `None` when
    /// it is not to be queued now: the store holds it (marked recorded), or
    /// the write failed (tried again later).
    async fn prepare(&mut self, tp: &Tp, first: i64, ack: &Ack) -> Option<(Batch, u64)> {
        let dataset = self.source.dataset.clone();
        let name = self.source.name.clone();
        let done = self.done.clone();
        let c = self.find(tp, first)?;
        let version = c.version.clone();
        let file = c.file.clone();
        let end = c.end;
        let stage = std::mem::replace(&mut c.stage, Stage::Sent);
        let rows = match stage {
            Stage::Write { rows, .. } => Some(rows),
            _ => None,
        };
        let (v, f) = (version.clone(), file.clone());
        // The file stays even when the store holds the window: until the
        // offsets are committed it is what caps a rebuilt window.
        let prepared = tokio::task::spawn_blocking(move || -> Prepared {
            if done(&dataset, &v) {
                return Prepared::Recorded;
            }
            let Some(rows) = rows else {
                return Prepared::Ready;
            };
            // Synced before the window can be recorded: after a crash its
            // end offset must be there for the rebuilt window.
            match write_window(&f, &rows, end) {
                Ok(()) => Prepared::Ready,
                Err(e) => Prepared::Failed(e, rows),
            }
        })
        .await;
        let c = self.find(tp, first)?;
        match prepared {
            Ok(Prepared::Recorded) => {
                tracing::info!(source = %name, window = %version.path, "window recorded before; committing it without reporting it again");
                c.stage = Stage::Recorded;
                return None;
            }
            Ok(Prepared::Ready) => {}
            Ok(Prepared::Failed(e, rows)) => {
                tracing::error!(source = %name, window = %version.path, error = %e, "cannot write the window for evaluation; retrying in 10 s");
                c.stage = Stage::Write {
                    rows,
                    not_before: Some(Instant::now() + RETRY_AFTER),
                };
                return None;
            }
            Err(e) => {
                tracing::error!(source = %name, window = %version.path, error = %e, "window task failed; retrying in 10 s");
                c.stage = Stage::RetryAt(Instant::now() + RETRY_AFTER);
                return None;
            }
        }
        let (discovered, events) = (c.last_message, c.events);
        let batch = Batch {
            dataset: self.source.dataset.clone(),
            path: file,
            relative: PathBuf::from(&version.path),
            root: self.dir.clone(),
            partitions: BTreeMap::from([
                ("topic".to_string(), tp.0.clone()),
                ("partition".to_string(), tp.1.to_string()),
            ]),
            version,
            discovered,
            ack: Some(ack.clone()),
        };
        Some((batch, events))
    }

    /// Assigned partitions with the next offset to read, where known.
    fn positions(&self) -> Vec<(String, i32, Option<i64>)> {
        self.parts
            .iter()
            .map(|(tp, p)| (tp.0.clone(), tp.1, p.next))
            .collect()
    }
}

/// A closed window whose batch waits for room in the agent's queue.
struct Waiting {
    tp: Tp,
    first: i64,
    events: u64,
    batch: Batch,
}

/// Why consumption pauses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pause {
    /// Too many events of closed windows wait to be committed.
    Backlog,
    /// Dead letters wait to be written beyond the soft bounds.
    Letters,
    /// Too many windows wait for room in the agent's queue.
    Queue,
}

/// A closed window made ready to send.
enum Prepared {
    /// The store holds it already.
    Recorded,
    /// Its Parquet file is written.
    Ready,
    /// Writing failed; the rows are kept.
    Failed(StreamError, RecordBatch),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::LogicalType;
    use crate::sources::stream::{WindowSpec, write_parquet};

    fn state(dir: &Path, rows: u64, schema: Option<EventSchema>) -> State {
        state_done(dir, rows, schema, false)
    }

    /// A state whose store holds every window (`done`) or none.
    fn state_done(dir: &Path, rows: u64, schema: Option<EventSchema>, done: bool) -> State {
        let source = SourceConfig {
            name: "kafka:t".to_string(),
            dataset: "t".to_string(),
            window: WindowSpec {
                rows: Some(rows),
                duration: None,
            },
            settings: SourceSettings::Kafka {
                brokers: "localhost:1".to_string(),
                topics: vec!["t".to_string()],
                group: "g".to_string(),
                options: BTreeMap::new(),
                max_pending_events: rows.saturating_mul(10).max(1_000_000),
            },
        };
        std::fs::create_dir_all(dir.join("windows")).unwrap();
        let done: DoneFn = Arc::new(move |_: &str, _: &BatchVersion| done);
        State::new(source, dir, Arc::new(StreamStats::default()), done, schema)
    }

    fn ids() -> EventSchema {
        EventSchema::from_rule(&[("id".to_string(), LogicalType::Int64)]).unwrap()
    }

    fn msg(offset: i64, payload: &str) -> Msg {
        Msg {
            topic: "t".to_string(),
            partition: 0,
            offset,
            payload: Some(payload.as_bytes().to_vec()),
        }
    }

    fn closed(s: &State) -> Vec<(i64, i64, u64)> {
        s.parts[&("t".to_string(), 0)]
            .closed
            .iter()
            .map(|c| (c.first, c.end, c.events))
            .collect()
    }

    fn path(s: &State, first: i64) -> BatchVersion {
        s.parts[&("t".to_string(), 0)]
            .closed
            .iter()
            .find(|c| c.first == first)
            .unwrap()
            .version
            .clone()
    }

    #[test]
    fn acks_commit_only_the_longest_recorded_prefix_and_a_revocation_forgets_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = state(dir.path(), 2, Some(ids()));
        s.assigned(vec![("t".to_string(), 0)]);
        for o in 0..7 {
            s.message(msg(o, &format!("{{\"id\": {o}}}")));
        }
        assert_eq!(closed(&s), [(0, 2, 2), (2, 4, 2), (4, 6, 2)]);
        assert_eq!(path(&s, 2).path, "kafka/t/t/0/2");
        assert_eq!((path(&s, 2).size, path(&s, 2).parts), (0, 2));
        assert_eq!(s.stats.open_events.load(Ordering::Relaxed), 1);
        assert_eq!(s.stats.pending_events.load(Ordering::Relaxed), 7);
        for part in s.parts.values_mut() {
            for c in part.closed.iter_mut() {
                c.stage = Stage::Sent;
            }
        }
        assert!(s.acknowledged(&path(&s, 2), true));
        assert_eq!(s.committable(), None, "window 0 is not recorded yet");
        assert!(s.acknowledged(&path(&s, 0), true));
        assert_eq!(s.committable(), Some(vec![("t".to_string(), 0, 4)]));
        assert!(!s.acknowledged(&path(&s, 4), false));
        assert!(matches!(
            s.parts[&("t".to_string(), 0)].closed[2].stage,
            Stage::RetryAt(_)
        ));
        assert!(s.committed(Committed {
            offsets: vec![("t".to_string(), 0, 4)],
            result: Ok(()),
        }));
        assert_eq!(closed(&s), [(4, 6, 2)]);
        assert_eq!(s.stats.windows_evaluated.load(Ordering::Relaxed), 2);
        assert_eq!(s.stats.pending_events.load(Ordering::Relaxed), 3);
        s.forget(&("t".to_string(), 0));
        assert!(s.parts.is_empty());
        assert_eq!(s.stats.pending_events.load(Ordering::Relaxed), 0);
        assert_eq!(s.stats.open_events.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn without_a_rule_schema_one_is_inferred_held_in_the_state_folder_and_misfits_are_dead_letters()
    {
        let dir = tempfile::tempdir().unwrap();
        let mut s = state(dir.path(), 3, None);
        s.message(msg(0, r#"{"a": 1, "b": "x"}"#));
        s.message(msg(1, r#"{"a": 2.5}"#));
        s.message(msg(2, "nope"));
        assert_eq!(s.unschematized.len(), 3);
        s.infer();
        let saved = std::fs::read_to_string(dir.path().join("schema.json")).unwrap();
        let held = EventSchema::from_json(&serde_json::from_str(&saved).unwrap()).unwrap();
        assert_eq!(Some(&held), s.schema.as_ref());
        assert_eq!(
            held.arrow().field(0).data_type(),
            &arrow::datatypes::DataType::Float64
        );
        s.message(msg(3, r#"{"a": "str"}"#));
        s.message(Msg {
            payload: None,
            ..msg(4, "")
        });
        s.message(msg(5, r#"{"b": "y"}"#));
        assert_eq!(closed(&s), [(0, 6, 3)]);
        let letters: Vec<(String, String)> = s
            .letters
            .iter()
            .map(|l| (l.location.clone(), l.reason.clone()))
            .collect();
        assert_eq!(letters.len(), 3);
        assert_eq!(letters[0].0, "t/0@2");
        assert!(letters[0].1.starts_with("not JSON: "), "{letters:?}");
        assert_eq!(
            letters[1],
            (
                "t/0@3".to_string(),
                "field `a`: expected a number, got the string \"str\"".to_string()
            )
        );
        assert_eq!(
            letters[2],
            (
                "t/0@4".to_string(),
                "the message has no payload".to_string()
            )
        );
        assert_eq!(s.stats.rejected.load(Ordering::Relaxed), 3);
        assert_eq!(s.stats.accepted.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_window_left_on_disk_by_a_crash_is_rebuilt_with_the_events_it_held() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = state(dir.path(), 100, Some(ids()));
        // Closed by time with 2 events, written, maybe recorded; then a crash.
        let mut b = ids().builder();
        b.push_json(br#"{"id": 0}"#).unwrap();
        b.push_json(br#"{"id": 1}"#).unwrap();
        let rows = b.finish().unwrap();
        write_parquet(
            &s.window_file("t", 0, 10),
            &rows.schema(),
            std::iter::once(Ok(rows.clone())),
        )
        .unwrap();
        // An older window of the partition, committed before the crash.
        std::fs::write(s.window_file("t", 0, 0), b"old").unwrap();
        // Reading resumes at the committed offset, 10.
        for o in 10..13 {
            s.message(msg(o, &format!("{{\"id\": {o}}}")));
        }
        assert_eq!(closed(&s), [(10, 12, 2)]);
        assert!(!s.window_file("t", 0, 0).exists());
        assert!(s.window_file("t", 0, 10).exists());
    }

    fn tp(p: i32) -> Tp {
        ("t".to_string(), p)
    }

    fn msg_p(partition: i32, offset: i64) -> Msg {
        Msg {
            partition,
            ..msg(offset, &format!("{{\"id\": {offset}}}"))
        }
    }

    /// Sets the stage of every closed window of a partition starting at `first`.
    fn set_stage(s: &mut State, p: i32, first: i64, stage: Stage) {
        let c = s
            .parts
            .get_mut(&tp(p))
            .and_then(|part| part.closed.iter_mut().find(|c| c.first == first))
            .unwrap();
        c.stage = stage;
    }

    fn file(s: &State, p: i32, first: i64) -> PathBuf {
        s.window_file("t", p, first)
    }

    /// Writes the window's file as `send_closed` would (ending at `first + rows`).
    fn write_file(s: &State, p: i32, first: i64, rows: i64) {
        let mut b = ids().builder();
        for i in 0..rows {
            b.push_json(format!("{{\"id\": {i}}}").as_bytes()).unwrap();
        }
        let batch = b.finish().unwrap();
        write_window(&file(s, p, first), &batch, first + rows).unwrap();
    }

    struct Sink {
        queue: mpsc::Sender<Batch>,
        batches: mpsc::Receiver<Batch>,
        in_flight: InFlight,
        ack: Ack,
        _acks: mpsc::UnboundedReceiver<(BatchVersion, bool)>,
    }

    fn sink() -> Sink {
        sink_of(16)
    }

    /// A sink whose queue holds `capacity` batches.
    fn sink_of(capacity: usize) -> Sink {
        let (queue, batches) = mpsc::channel(capacity);
        let (ack_tx, acks) = mpsc::unbounded_channel();
        Sink {
            queue,
            batches,
            in_flight: Arc::default(),
            ack: Ack(ack_tx),
            _acks: acks,
        }
    }

    async fn send(s: &mut State, k: &mut Sink) {
        assert!(s.send_closed(&k.queue, &k.in_flight, &k.ack).await);
    }

    #[tokio::test]
    async fn a_window_file_stays_until_committed_so_a_window_closed_by_time_is_rebuilt_the_same_after_every_crash()
     {
        let dir = tempfile::tempdir().unwrap();
        // Run 1: a window closes by time at 5 events [10..15), is written,
        // sent and recorded; the agent dies before the commit.
        let mut s = state(dir.path(), 100, Some(ids()));
        let mut k = sink();
        for o in 10..15 {
            s.message(msg(o, &format!("{{\"id\": {o}}}")));
        }
        s.close(&tp(0));
        send(&mut s, &mut k).await;
        let batch = k.batches.try_recv().unwrap();
        assert_eq!(batch.version.path, "kafka/t/t/0/10");
        assert!(s.acknowledged(&batch.version, true));
        drop(s);
        assert_eq!(
            written(&file(&state(dir.path(), 1, None), 0, 10)),
            Some(Written {
                end: Some(15),
                events: Some(5)
            })
        );

        // Runs 2 and 3: the store holds the window; each rebuild is capped at
        // 5 events by the file, which no step before the commit deletes.
        for run in 2..=3 {
            let mut s = state_done(dir.path(), 100, Some(ids()), true);
            let mut k = sink();
            for o in 10..20 {
                s.message(msg(o, &format!("{{\"id\": {o}}}")));
            }
            assert_eq!(closed(&s), [(10, 15, 5)], "run {run}");
            send(&mut s, &mut k).await;
            assert!(k.batches.try_recv().is_err(), "recorded before: not sent");
            assert!(matches!(s.parts[&tp(0)].closed[0].stage, Stage::Recorded));
            assert!(file(&s, 0, 10).exists(), "run {run}: kept until committed");
            if run == 2 {
                // Dies again before the commit (or loses the partition).
                s.forget(&tp(0));
                assert!(file(&s, 0, 10).exists());
                continue;
            }
            let offsets = s.committable().unwrap();
            assert_eq!(offsets, [("t".to_string(), 0, 15)]);
            assert!(s.committed(Committed {
                offsets,
                result: Ok(()),
            }));
            assert!(!file(&s, 0, 10).exists(), "deleted once committed");
            assert_eq!(s.stats.windows_evaluated.load(Ordering::Relaxed), 1);
        }
    }

    fn offsets(v: &[(i32, i64)]) -> Vec<(String, i32, i64)> {
        v.iter().map(|(p, o)| ("t".to_string(), *p, *o)).collect()
    }

    #[test]
    fn a_revocation_commits_the_recorded_prefix_once_before_the_partitions_go_and_never_beside_a_commit_that_may_still_land()
     {
        let mut c = Commits::default();
        c.assign(&[tp(0), tp(1), tp(2)]);
        c.ready = HashMap::from([(tp(0), 4), (tp(1), 2)]);
        // The main loop's commit covers only partitions still owned.
        assert_eq!(
            c.start(offsets(&[(0, 4), (3, 9)])),
            Some(offsets(&[(0, 4)]))
        );
        assert!(c.busy);
        assert_eq!(c.start(offsets(&[(0, 4)])), None, "one at a time");
        // Revoked while it runs: no second commit beside it.
        assert_eq!(c.revoke(&[tp(1)]), RevokeCommit::Busy(vec![tp(1)]));
        assert!(!c.owned.contains(&tp(1)) && !c.ready.contains_key(&tp(1)));
        c.finish(&Committed {
            offsets: offsets(&[(0, 4)]),
            result: Ok(()),
        });
        assert!(!c.busy);
        assert_eq!(c.start(offsets(&[(1, 2)])), Some(vec![]), "revoked: never");
        assert!(!c.busy, "nothing started");
        // What is committed already is not committed again; what is beyond is.
        assert_eq!(c.revoke(&[tp(0)]), RevokeCommit::Nothing);
        c.ready.insert(tp(2), 6);
        assert_eq!(c.revoke(&[tp(2)]), RevokeCommit::Commit(offsets(&[(2, 6)])));
        assert_eq!(c.done.get(&tp(2)), Some(&6));
        // Assigned again, the partition starts afresh; a failed commit does
        // not count as done.
        c.assign(&[tp(2)]);
        assert!(c.owned.contains(&tp(2)) && !c.done.contains_key(&tp(2)));
        assert_eq!(c.start(offsets(&[(2, 8)])), Some(offsets(&[(2, 8)])));
        c.finish(&Committed {
            offsets: offsets(&[(2, 8)]),
            result: Err("coordinator away".to_string()),
        });
        assert!(!c.busy && !c.done.contains_key(&tp(2)));
    }

    #[test]
    fn what_the_revocation_callback_may_commit_is_the_recorded_prefix_of_owned_partitions_with_its_dead_letters_written()
     {
        let dir = tempfile::tempdir().unwrap();
        let mut s = state(dir.path(), 2, Some(ids()));
        let commits = Mutex::new(Commits::default());
        commits.lock().unwrap().assign(&[tp(0), tp(1)]);
        s.assigned(vec![tp(0), tp(1)]);
        for o in 0..5 {
            s.message(msg_p(0, o));
            s.message(msg_p(1, o));
        }
        set_stage(&mut s, 0, 0, Stage::Recorded);
        set_stage(&mut s, 0, 2, Stage::Sent);
        set_stage(&mut s, 1, 0, Stage::Recorded);
        set_stage(&mut s, 1, 2, Stage::Recorded);
        s.share(&commits);
        assert_eq!(
            commits.lock().unwrap().ready,
            HashMap::from([(tp(0), 2), (tp(1), 4)])
        );
        // A dead letter not written yet: what was shared before stays.
        s.message(msg(5, "nope"));
        set_stage(&mut s, 0, 2, Stage::Recorded);
        s.share(&commits);
        assert_eq!(commits.lock().unwrap().ready.get(&tp(0)), Some(&2));
        s.letters.clear();
        s.share(&commits);
        assert_eq!(commits.lock().unwrap().ready.get(&tp(0)), Some(&4));
        // Revoked (by the callback): not shared any more.
        assert_eq!(
            commits.lock().unwrap().revoke(&[tp(1)]),
            RevokeCommit::Commit(offsets(&[(1, 4)]))
        );
        s.share(&commits);
        assert!(!commits.lock().unwrap().ready.contains_key(&tp(1)));
        // The main loop then forgets the partition; its files stay.
        write_file(&s, 1, 0, 2);
        s.revoked(vec![tp(1)]);
        assert!(!s.parts.contains_key(&tp(1)));
        assert!(file(&s, 1, 0).exists());
    }

    #[tokio::test]
    async fn a_window_still_in_the_agents_queue_keeps_its_file_when_its_partition_comes_back_past_it_until_its_ack()
     {
        let dir = tempfile::tempdir().unwrap();
        let mut s = state(dir.path(), 2, Some(ids()));
        let mut k = sink();
        s.assigned(vec![tp(0)]);
        for o in 0..4 {
            s.message(msg_p(0, o));
        }
        send(&mut s, &mut k).await;
        let first = k.batches.try_recv().unwrap();
        let second = k.batches.try_recv().unwrap();
        assert!(s.acknowledged(&first.version, true));
        // Revoked with [2, 4) in the agent's queue; another member commits
        // it, and the partition comes back at 4: the file stays.
        s.revoked(vec![tp(0)]);
        s.assigned(vec![tp(0)]);
        let next = msg_p(0, 4);
        s.resume_at(&next).await;
        s.message(next);
        assert!(second.path.exists(), "not acknowledged yet: kept");
        assert!(!file(&s, 0, 0).exists(), "acknowledged and passed: deleted");
        assert_eq!(s.parts[&tp(0)].files, Some(HashMap::new()));
        // Its ack: passed, so deleted now.
        assert!(!s.acknowledged(&second.version, true));
        assert!(!second.path.exists());
        assert!(s.unacked.is_empty());

        // Not passed (the partition comes back at 4, where the window
        // starts): the file stays after the ack and ends the rebuilt window.
        s.message(msg_p(0, 5));
        send(&mut s, &mut k).await;
        let third = k.batches.try_recv().unwrap();
        s.revoked(vec![tp(0)]);
        assert!(!s.acknowledged(&third.version, true));
        assert!(third.path.exists());
        s.assigned(vec![tp(0)]);
        let again = msg_p(0, 4);
        s.resume_at(&again).await;
        assert_eq!(
            s.parts[&tp(0)].files,
            Some(HashMap::from([(
                4,
                Written {
                    end: Some(6),
                    events: Some(2)
                }
            )]))
        );
    }

    /// A state whose windows close after `seconds` (0: at every tick) and,
    /// with `rows`, at that many events.
    fn timed(dir: &Path, rows: Option<u64>, done: bool) -> State {
        let mut s = state_done(dir, 1, Some(ids()), done);
        s.source.window = WindowSpec {
            rows,
            duration: Some(Duration::ZERO),
        };
        s
    }

    #[tokio::test]
    async fn a_window_closed_by_time_on_dead_letters_is_rebuilt_to_the_same_end_offset_never_closed_before_it_by_time_or_count()
     {
        let dir = tempfile::tempdir().unwrap();
        // Run 1: accepted 100..105, dead letters 105..110, closed by time →
        // end 110; written and recorded, then a crash before the commit.
        let mut s = timed(dir.path(), Some(100), false);
        let mut k = sink();
        for o in 100..105 {
            s.message(msg_p(0, o));
        }
        for o in 105..110 {
            s.message(msg(o, "nope"));
        }
        s.tick();
        assert_eq!(closed(&s), [(100, 110, 5)]);
        send(&mut s, &mut k).await;
        assert!(s.acknowledged(&k.batches.try_recv().unwrap().version, true));
        drop(s);

        // Run 2 (fewer rows per window now): the rebuild takes the same
        // messages, is not closed by time or count before its end, and the
        // next window is keyed at 110 as before.
        let mut s = timed(dir.path(), Some(3), true);
        let first = msg_p(0, 100);
        s.resume_at(&first).await;
        s.message(first);
        for o in 101..105 {
            s.message(msg_p(0, o));
            s.tick();
        }
        for o in 105..109 {
            s.message(msg(o, "nope"));
            s.tick();
        }
        assert!(closed(&s).is_empty(), "open until its end offset");
        s.message(msg(109, "nope"));
        s.message(msg_p(0, 110));
        assert_eq!(closed(&s), [(100, 110, 5)]);
        assert_eq!(s.parts[&tp(0)].open.as_ref().map(|o| o.first), Some(110));
        send(&mut s, &mut k).await;
        assert!(k.batches.try_recv().is_err(), "recorded before: not again");
        let offsets = s.committable().unwrap();
        assert_eq!(offsets, [("t".to_string(), 0, 110)]);

        // A rebuild whose end never comes (the messages before it went):
        // closed where it got to, before the message past its end.
        write_file(&s, 1, 0, 4);
        s.assigned(vec![tp(1)]);
        s.message(msg_p(1, 0));
        s.message(msg_p(1, 5));
        assert_eq!(
            s.parts[&tp(1)]
                .closed
                .iter()
                .map(|c| (c.first, c.end))
                .collect::<Vec<_>>(),
            [(0, 1)]
        );
    }

    #[test]
    fn windows_closed_by_time_only_still_close_at_max_pending_events() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = timed(dir.path(), None, false);
        s.source.window.duration = Some(Duration::from_secs(3600));
        s.max_pending = 3;
        for o in 0..7 {
            s.message(msg_p(0, o));
        }
        assert_eq!(closed(&s), [(0, 3, 3), (3, 6, 3)]);
        assert_eq!(s.open_events, 1);
    }

    #[test]
    fn consumption_pauses_while_closed_windows_not_committed_exceed_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(state(dir.path(), 2, None).max_pending, 1_000_000);
        assert_eq!(state(dir.path(), 300_000, None).max_pending, 3_000_000);
        let mut s = state(dir.path(), 2, Some(ids()));
        s.max_pending = 6;
        s.assigned(vec![tp(0)]);
        for o in 0..6 {
            s.message(msg_p(0, o));
        }
        assert_eq!(s.backlog(), 6);
        assert_eq!(s.pause_cause(false), None, "at the bound, not beyond");
        s.message(msg_p(0, 6));
        assert_eq!(s.backlog(), 6, "open events do not count");
        s.message(msg_p(0, 7));
        assert_eq!(s.backlog(), 8);
        assert_eq!(s.pause_cause(false), Some(Pause::Backlog));
        let commit = |s: &mut State, first: i64| {
            set_stage(s, 0, first, Stage::Recorded);
            let offsets = s.committable().unwrap();
            assert!(s.committed(Committed {
                offsets,
                result: Ok(()),
            }));
        };
        commit(&mut s, 0);
        assert_eq!(s.backlog(), 6);
        assert_eq!(
            s.pause_cause(true),
            Some(Pause::Backlog),
            "paused until at most 3/4 of the bound"
        );
        commit(&mut s, 2);
        assert_eq!(s.backlog(), 4);
        assert_eq!(s.pause_cause(true), None);
        assert_eq!(s.assignment(), [tp(0)]);
    }

    #[tokio::test]
    async fn dead_letters_that_cannot_be_written_pause_consumption_and_hold_the_commit_and_none_is_dropped()
     {
        let dir = tempfile::tempdir().unwrap();
        let mut s = state(dir.path(), 2, Some(ids()));
        let commits = Mutex::new(Commits::default());
        commits.lock().unwrap().assign(&[tp(0)]);
        // The dead-letter file cannot be written.
        std::fs::create_dir(dir.path().join("dead-letters.ndjson")).unwrap();
        s.assigned(vec![tp(0)]);
        let bad = |o: i64| msg(o, "nope");
        // A window [0, 2) first, then only bad messages.
        s.message(msg_p(0, 0));
        s.message(msg_p(0, 1));
        let mut o = 2;
        while s.letters.len() < LETTERS_SOFT {
            s.message(bad(o));
            o += 1;
        }
        assert!(s.letters_full());
        assert!(!s.flush_letters().await);
        assert_eq!(s.letters.len(), LETTERS_SOFT, "kept to write later");
        assert_eq!(s.pause_cause(false), Some(Pause::Letters));
        // Messages fetched before the pause still come: every letter is kept.
        for _ in 0..2 * LETTERS_SOFT {
            s.message(bad(o));
            o += 1;
        }
        s.message(msg_p(0, o));
        s.message(msg_p(0, o + 1));
        assert_eq!(s.letters.len(), 3 * LETTERS_SOFT, "none dropped");
        for p in s.parts.values_mut() {
            for c in p.closed.iter_mut() {
                c.stage = Stage::Recorded;
            }
        }
        assert_eq!(closed(&s), [(0, 2, 2), (2, o + 2, 2)]);
        // Recorded, but nothing is shared for a commit while letters wait.
        s.share(&commits);
        assert!(commits.lock().unwrap().ready.is_empty());
        // Writable again: written, resumed, and committed past them (the
        // partition does not stall).
        std::fs::remove_dir(dir.path().join("dead-letters.ndjson")).unwrap();
        assert!(s.flush_letters().await);
        assert!(s.letters.is_empty());
        assert_eq!(s.pause_cause(true), None);
        assert_eq!(s.committable().unwrap(), [("t".to_string(), 0, o + 2)]);
        s.share(&commits);
        assert_eq!(commits.lock().unwrap().ready.get(&tp(0)), Some(&(o + 2)));
    }

    #[tokio::test]
    async fn a_full_queue_never_blocks_sending_windows_wait_in_order_and_too_many_waiting_pause_consumption()
     {
        let dir = tempfile::tempdir().unwrap();
        let mut s = state(dir.path(), 2, Some(ids()));
        // A quarter of the bound: 3 events.
        s.max_pending = 12;
        let mut k = sink_of(1);
        s.assigned(vec![tp(0), tp(1)]);
        // Partition 0: windows [0, 2), [2, 4), [4, 6); partition 1: [0, 2).
        for o in 0..6 {
            s.message(msg_p(0, o));
        }
        s.message(msg_p(1, 0));
        s.message(msg_p(1, 1));
        let files = |s: &State| std::fs::read_dir(s.dir.join("windows")).unwrap().count();
        let in_flight = |k: &Sink| k.in_flight.lock().unwrap().len();

        // The queue takes one window; the others wait, written, and sending
        // returns at once rather than waiting for room.
        let sent = tokio::time::timeout(
            Duration::from_secs(10),
            s.send_closed(&k.queue, &k.in_flight, &k.ack),
        )
        .await;
        assert_eq!(sent, Ok(true), "never waits for room in the queue");
        assert_eq!((s.outbox.len(), s.outbox_events), (3, 6));
        assert!(s.waiting());
        assert_eq!(files(&s), 4, "waiting windows are written, not held");
        for part in s.parts.values() {
            assert!(part.closed.iter().all(|c| matches!(c.stage, Stage::Sent)));
        }
        assert_eq!(in_flight(&k), 1, "only what is in the queue is in flight");
        assert_eq!(s.pause_cause(false), Some(Pause::Queue), "6 > 12 / 4");
        // Trying again while the queue is full changes nothing.
        send(&mut s, &mut k).await;
        assert_eq!((s.outbox.len(), in_flight(&k)), (3, 1));

        // As the queue takes them, one at a time, every window goes, each
        // partition's in offset order; paused until none waits.
        let mut got = Vec::new();
        while let Ok(batch) = k.batches.try_recv() {
            assert!(batch.path.exists(), "{}", batch.path.display());
            got.push(batch.version.path.clone());
            if s.waiting() {
                assert_eq!(s.pause_cause(true), Some(Pause::Queue), "{got:?}");
            }
            send(&mut s, &mut k).await;
        }
        let p0: Vec<&str> = got
            .iter()
            .map(String::as_str)
            .filter(|p| p.starts_with("kafka/t/t/0/"))
            .collect();
        assert_eq!(p0, ["kafka/t/t/0/0", "kafka/t/t/0/2", "kafka/t/t/0/4"]);
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got.iter().any(|p| p == "kafka/t/t/1/0"), "{got:?}");
        assert!(!s.waiting());
        assert_eq!(s.outbox_events, 0);
        assert_eq!(s.pause_cause(true), None, "resumed once none waits");
        assert_eq!(in_flight(&k), 4);

        // Up to a quarter of the bound waiting: consumption goes on.
        s.message(msg_p(0, 6));
        s.message(msg_p(0, 7));
        s.message(msg_p(1, 2));
        s.message(msg_p(1, 3));
        send(&mut s, &mut k).await;
        assert_eq!((s.outbox.len(), s.outbox_events), (1, 2));
        assert_eq!(s.pause_cause(false), None, "2 is not beyond 12 / 4");

        // A window waiting when its partition is revoked is dropped, never
        // queued; the other partition's goes.
        let dropped = s.outbox[0].tp.clone();
        s.forget(&dropped);
        assert!(!s.waiting(), "dropped with its partition");
        assert_eq!(s.outbox_events, 0);
        let first = k.batches.try_recv().unwrap();
        assert!(
            !first
                .version
                .path
                .starts_with(&format!("kafka/t/t/{}/", dropped.1))
        );
        send(&mut s, &mut k).await;
        assert!(
            k.batches.try_recv().is_err(),
            "the dropped window never went"
        );

        // A closed queue: the source stops.
        let kept = if dropped == tp(0) { tp(1) } else { tp(0) };
        let next = s.parts[&kept].next.unwrap();
        s.message(msg_p(kept.1, next));
        s.message(msg_p(kept.1, next + 1));
        drop(k.batches);
        assert!(!s.send_closed(&k.queue, &k.in_flight, &k.ack).await);
    }
}
