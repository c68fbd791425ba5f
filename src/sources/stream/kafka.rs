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
//! partitions is committed first (from the main loop, never from the
//! callback), so their next reader does not evaluate those windows again.
//!
//! The Parquet file of a closed window (`{topic}-{partition}-{first}.parquet`,
//! synced before the window is sent) is deleted only once the window's
//! offsets are committed, or when reading resumes past it; never at
//! revocation, at an ack or when the store holds the window already. After
//! a crash or a revocation it tells the rebuilt window how many events the
//! recorded one held, so a window first closed by time is rebuilt with the
//! same events rather than more (which would commit events never evaluated).
//!
//! Bounds: when the closed windows not yet committed hold more than
//! `max_pending_events` events (default `10 × window.rows`, at least
//! 1,000,000) — say the dataset has no rule file, so nothing is recorded —
//! the assigned partitions are paused
//! (rebalances, acks and ticks are still served, and polling goes on so the
//! member stays in the group) until at most three quarters of that wait.
//! Dead letters waiting to be written are written at once beyond 10,000
//! letters or 32 MiB; while that fails consumption pauses too, and beyond
//! twice those a letter is not kept: its partition is then not committed
//! past it until the partition is read again (a rebalance or a restart).
//! The loop never waits for room in the agent's queue (it would stop
//! polling, and a member that does not poll for `max.poll.interval.ms`
//! leaves the group): windows the queue cannot take wait in order, written,
//! for room (awaited alongside the other work), and once they hold more than
//! a quarter of the bound consumption pauses until none waits (not at every
//! window: a pause drops what the client fetched ahead).
//!
//! What this module owns and why:
//! - the consumer and its `Context`: rebalance callbacks only log and send
//!   plain `(topic, partition)` lists on a channel — blocking consumer calls
//!   there can hang a close — and librdkafka's logs go to `tracing`;
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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
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
    StreamError, StreamStats, rule_schema, window_version, write_parquet,
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
/// On revocation, the longest wait for a commit in flight, and then for the
/// commit of the revoked partitions' recorded windows.
const REVOKE_WAIT: Duration = Duration::from_secs(5);
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

/// The consumer's context: logging, and rebalances forwarded on a channel.
/// Its callbacks never block and never call the consumer.
struct Context {
    name: String,
    events: mpsc::UnboundedSender<Rebalanced>,
    errors: Arc<Throttle>,
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
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let tps = plain(tpl);
                tracing::info!(source = %self.name, partitions = %show(&tps), "partitions assigned");
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
    /// The events of the same window recorded before a crash, if known.
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
    /// The lowest offset whose dead letter could not be kept (the buffer
    /// was full): nothing is committed past it until the partition is read
    /// again.
    lost_letter: Option<i64>,
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
}

/// A Kafka stream source: see the module documentation.
pub struct KafkaSource {
    state: State,
    consumer: Arc<KafkaConsumer>,
    events: mpsc::UnboundedReceiver<Rebalanced>,
    topics: Vec<String>,
    rules: watch::Receiver<Arc<Vec<RuleFile>>>,
    errors: Arc<Throttle>,
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
        let context = Context {
            name: source.name.clone(),
            events: events_tx,
            errors: errors.clone(),
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
                        Err(e) => tracing::error!(source = %name, error = %e, "commit task failed"),
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
                    Rebalanced::Revoked(tps) => {
                        let c = consumer.clone();
                        state
                            .revoked(tps, &mut commit_task, move |offsets| commit(&c, offsets))
                            .await;
                    }
                }
            }
            if let Some(msg) = polled {
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
                    let consumer = consumer.clone();
                    commit_task = Some(tokio::task::spawn_blocking(move || {
                        commit(&consumer, offsets)
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
        }

        // Shutdown: open windows are dropped (re-read at the next start);
        // what is recorded already is committed if that is quick.
        tracing::info!(source = %name, "kafka source stopping");
        state.drop_open();
        while let Ok((v, ok)) = acks.try_recv() {
            state.acknowledged(&v, ok);
        }
        let deadline = tokio::time::Instant::now() + SHUTDOWN_WAIT;
        if let Some(task) = commit_task.take()
            && let Ok(Ok(c)) = tokio::time::timeout_at(deadline, task).await
        {
            state.committed(c);
        }
        if let Some(offsets) = state.committable()
            && state.flush_letters().await
        {
            let c = consumer.clone();
            let task = tokio::task::spawn_blocking(move || commit(&c, offsets));
            if let Ok(Ok(c)) = tokio::time::timeout_at(deadline, task).await {
                state.committed(c);
            }
        }
        state.flush_letters().await;
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

/// Commits these offsets synchronously (on a blocking thread).
fn commit(consumer: &KafkaConsumer, offsets: Vec<(String, i32, i64)>) -> Committed {
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
    Committed { offsets, result }
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

/// The events the Parquet file of a window holds, if there is one (left
/// by a run that closed the same window before a crash).
fn recorded_events(file: &Path) -> Option<u64> {
    use parquet::file::reader::FileReader;
    let f = std::fs::File::open(file).ok()?;
    let reader = parquet::file::reader::SerializedFileReader::new(f).ok()?;
    u64::try_from(reader.metadata().file_metadata().num_rows()).ok()
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

    /// Partitions revoked: the longest recorded prefix of their windows is
    /// committed first (waiting at most [`REVOKE_WAIT`] for a commit in
    /// flight, which must not land after this one and move the offsets
    /// back, and as long again for this one), then they are forgotten. A
    /// commit that fails or takes longer leaves those windows to the next
    /// reader (at least once). `commit` runs on a blocking thread; a commit
    /// still running at the deadline is left in `in_flight`.
    async fn revoked<F>(
        &mut self,
        tps: Vec<Tp>,
        in_flight: &mut Option<JoinHandle<Committed>>,
        commit: F,
    ) where
        F: FnOnce(Vec<(String, i32, i64)>) -> Committed + Send + 'static,
    {
        let name = self.source.name.clone();
        let mut clear = true;
        if let Some(task) = in_flight.as_mut() {
            match tokio::time::timeout(REVOKE_WAIT, task).await {
                Ok(Ok(c)) => {
                    *in_flight = None;
                    self.committed(c);
                }
                Ok(Err(e)) => {
                    *in_flight = None;
                    tracing::error!(source = %name, error = %e, "commit task failed");
                }
                Err(_) => clear = false,
            }
        }
        let revoked: std::collections::HashSet<&Tp> = tps.iter().collect();
        let offsets = self.committable_where(|tp| revoked.contains(tp));
        match offsets {
            _ if !clear => {
                tracing::warn!(source = %name, partitions = %show(&tps), "a commit is still running; the recorded windows of the revoked partitions are left to their next reader");
            }
            None => {}
            Some(_) if !self.flush_letters().await => {
                tracing::warn!(source = %name, partitions = %show(&tps), "dead letters cannot be written; the recorded windows of the revoked partitions are left to their next reader");
            }
            Some(offsets) => {
                let mut task = tokio::task::spawn_blocking(move || commit(offsets));
                match tokio::time::timeout(REVOKE_WAIT, &mut task).await {
                    Ok(Ok(c)) => match &c.result {
                        Ok(()) => {
                            let at = c
                                .offsets
                                .iter()
                                .map(|(t, p, o)| format!("{t}/{p}@{o}"))
                                .collect::<Vec<_>>()
                                .join(", ");
                            tracing::info!(source = %name, offsets = %at, "committed the recorded windows of revoked partitions");
                            self.committed(c);
                        }
                        Err(e) => {
                            tracing::warn!(source = %name, partitions = %show(&tps), error = %e, "cannot commit the recorded windows of revoked partitions; their next reader evaluates them again");
                        }
                    },
                    Ok(Err(e)) => {
                        tracing::error!(source = %name, error = %e, "commit task failed");
                    }
                    Err(_) => {
                        tracing::warn!(source = %name, partitions = %show(&tps), "the commit of the revoked partitions' recorded windows takes longer than 5 s; going on");
                        *in_flight = Some(task);
                    }
                }
            }
        }
        for tp in &tps {
            self.forget(tp);
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

    fn message(&mut self, msg: Msg) {
        let tp = (msg.topic.clone(), msg.partition);
        let next = self.parts.get(&tp).and_then(|p| p.next);
        match next {
            Some(n) if msg.offset < n => {
                // Consumption went back (a reset): start the partition over.
                tracing::warn!(source = %self.source.name, at = %msg.location(), expected = n, "offset went back; rebuilding the partition's windows from here");
                self.forget(&tp);
            }
            None => self.remove_stale_files(&tp, msg.offset),
            Some(_) => {}
        }
        self.parts.entry(tp).or_default().next = Some(msg.offset + 1);
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

    /// Deletes Parquet files of this partition's windows that start before
    /// `from` (where reading resumed, or an offset this agent committed):
    /// those offsets are committed. (Also the temporary files of a write
    /// cut short.)
    fn remove_stale_files(&self, tp: &Tp, from: i64) {
        let prefix = format!("{}-{}-", tp.0, tp.1);
        let Ok(entries) = std::fs::read_dir(self.dir.join("windows")) else {
            return;
        };
        for e in entries.filter_map(|e| e.ok()) {
            let name = e.file_name();
            let first = name
                .to_str()
                .map(|n| n.strip_suffix(".tmp").unwrap_or(n))
                .and_then(|n| n.strip_suffix(".parquet"))
                .and_then(|n| n.strip_prefix(&prefix))
                .and_then(|n| n.parse::<i64>().ok());
            if first.is_some_and(|f| f < from) {
                let _ = std::fs::remove_file(e.path());
            }
        }
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
            let saved = std::fs::write(&tmp, text)
                .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
                .and_then(|()| std::fs::rename(&tmp, &path))
                .and_then(|()| sync_dir(&self.dir));
            if let Err(e) = saved {
                tracing::error!(source = %self.source.name, path = %path.display(), error = %e, "cannot save the inferred schema; it holds until restart");
            }
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
        let needs_open = self.parts.get(&tp).is_none_or(|p| p.open.is_none());
        let fresh = if needs_open {
            let file = self.window_file(&msg.topic, msg.partition, msg.offset);
            let cap = if file.exists() {
                recorded_events(&file)
            } else {
                None
            };
            if let Some(n) = cap {
                tracing::info!(source = %self.source.name, at = %msg.location(), events = n, "rebuilding a window closed before a restart, with the same events");
            }
            Some(Open {
                first: msg.offset,
                last: msg.offset,
                events: 0,
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
        let limit = self
            .source
            .window
            .rows
            .unwrap_or(u64::MAX)
            .min(open.cap.unwrap_or(u64::MAX));
        let full = open.events >= limit;
        if let Some(letter) = letter {
            self.keep_letter(&tp, msg.offset, letter);
        }
        if full {
            self.close(&tp);
        }
        self.publish();
    }

    /// Keeps a dead letter to write; beyond twice the soft bounds (the
    /// file cannot be written and messages still came) it is not kept, and
    /// its partition is not committed past it.
    fn keep_letter(&mut self, tp: &Tp, offset: i64, letter: DeadLetter) {
        let size = letter_size(&letter);
        if self.letters.len() >= 2 * LETTERS_SOFT
            || self.letter_bytes + size > 2 * LETTER_BYTES_SOFT
        {
            let part = self.parts.entry(tp.clone()).or_default();
            let lowest = part.lost_letter.map_or(offset, |o| o.min(offset));
            part.lost_letter = Some(lowest);
            if let Some(left_out) = self.throttle.admit("dead letter not kept".to_string()) {
                tracing::error!(source = %self.source.name, at = %letter.location, letters_not_kept_before = left_out, "the dead-letter file cannot be written and too many letters wait: this one is not kept, and its partition is not committed past it until the partition is read again (at a rebalance or restart)");
            }
            return;
        }
        self.letter_bytes += size;
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
                .filter(|(_, p)| p.open.as_ref().is_some_and(|o| o.opened.elapsed() >= limit))
                .map(|(tp, _)| tp.clone())
                .collect();
            for tp in due {
                self.close(&tp);
            }
        }
    }

    /// An ack from the worker; `true` when a commit may now be possible.
    fn acknowledged(&mut self, version: &BatchVersion, recorded: bool) -> bool {
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
        // (it caps the window when rebuilt) until committed or passed.
        false
    }

    /// Per partition, the end offset of the longest prefix of recorded
    /// windows, where there is one.
    fn committable(&self) -> Option<Vec<(String, i32, i64)>> {
        self.committable_where(|_| true)
    }

    /// [`Self::committable`] of the partitions `keep` holds; never past a
    /// dead letter that was not kept.
    fn committable_where(&self, keep: impl Fn(&Tp) -> bool) -> Option<Vec<(String, i32, i64)>> {
        let mut out = Vec::new();
        for (tp, part) in self.parts.iter().filter(|(tp, _)| keep(tp)) {
            let end = part
                .closed
                .iter()
                .take_while(|c| {
                    matches!(c.stage, Stage::Recorded)
                        && part.lost_letter.is_none_or(|o| c.end <= o)
                })
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
                // offset are done with.
                self.remove_stale_files(&tp, offset);
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
                // is read: its offsets are committed now.
                let _ = std::fs::remove_file(&w.file);
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
                self.outbox.push_back(Waiting { tp, events, batch });
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
            let schema = rows.schema();
            // Synced before the window can be recorded: after a crash
            // its row count must be there to cap the rebuilt window.
            let written =
                write_parquet(&f, &schema, std::iter::once(Ok(rows.clone()))).and_then(|_| {
                    let synced = std::fs::File::open(&f).and_then(|file| file.sync_all());
                    let synced = match f.parent() {
                        Some(dir) => synced.and_then(|()| sync_dir(dir)),
                        None => synced,
                    };
                    synced.map_err(|source| StreamError::Io {
                        path: f.clone(),
                        source,
                    })
                });
            match written {
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
    use crate::sources::stream::WindowSpec;

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

    /// Writes the window's file as `send_closed` would (2 rows per window here).
    fn write_file(s: &State, p: i32, first: i64, rows: i64) {
        let mut b = ids().builder();
        for i in 0..rows {
            b.push_json(format!("{{\"id\": {i}}}").as_bytes()).unwrap();
        }
        let rows = b.finish().unwrap();
        write_parquet(
            &file(s, p, first),
            &rows.schema(),
            std::iter::once(Ok(rows.clone())),
        )
        .unwrap();
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

    /// The offsets a test commit was given.
    type Seen = Arc<std::sync::Mutex<Vec<(String, i32, i64)>>>;

    /// A commit that succeeds, noting what it committed.
    fn ok_commit(
        seen: &Seen,
    ) -> impl FnOnce(Vec<(String, i32, i64)>) -> Committed + Send + 'static {
        let seen = seen.clone();
        move |offsets| {
            seen.lock().unwrap().extend(offsets.iter().cloned());
            Committed {
                offsets,
                result: Ok(()),
            }
        }
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
            recorded_events(&file(&state(dir.path(), 1, None), 0, 10)),
            Some(5)
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

    #[tokio::test]
    async fn a_revocation_commits_the_revoked_partitions_recorded_prefix_after_the_commit_in_flight_and_keeps_the_other_files()
     {
        let dir = tempfile::tempdir().unwrap();
        let mut s = state(dir.path(), 2, Some(ids()));
        s.assigned(vec![tp(0), tp(1)]);
        for o in 0..5 {
            s.message(msg_p(0, o));
            s.message(msg_p(1, o));
        }
        for p in 0..2 {
            write_file(&s, p, 0, 2);
            write_file(&s, p, 2, 2);
        }
        // Partition 0: [0, 2) recorded, [2, 4) in the agent's queue.
        set_stage(&mut s, 0, 0, Stage::Recorded);
        set_stage(&mut s, 0, 2, Stage::Sent);
        // Partition 1: both recorded; the first one's commit is in flight.
        set_stage(&mut s, 1, 0, Stage::Recorded);
        set_stage(&mut s, 1, 2, Stage::Recorded);
        let mut in_flight = Some(tokio::spawn(async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Committed {
                offsets: vec![("t".to_string(), 1, 2)],
                result: Ok(()),
            }
        }));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));

        s.revoked(vec![tp(0)], &mut in_flight, ok_commit(&seen))
            .await;
        assert!(in_flight.is_none(), "the commit in flight was waited for");
        assert_eq!(*seen.lock().unwrap(), [("t".to_string(), 0, 2)]);
        assert!(!s.parts.contains_key(&tp(0)));
        assert!(!file(&s, 0, 0).exists(), "committed at the revocation");
        assert!(file(&s, 0, 2).exists(), "sent, not committed: kept");
        assert!(
            !file(&s, 1, 0).exists(),
            "committed by the commit in flight"
        );
        assert!(file(&s, 1, 2).exists());
        assert_eq!(s.stats.windows_evaluated.load(Ordering::Relaxed), 2);
        // Its ack comes after the revocation: the file stays.
        let sent = s.window_file("t", 0, 2);
        let v = window_version(SourceKind::Kafka, "t", "t/0/2", 0, 2);
        assert!(!s.acknowledged(&v, true));
        assert!(sent.exists());

        // A commit that fails: the windows are forgotten, their files kept.
        s.revoked(vec![tp(1)], &mut None, |offsets| Committed {
            offsets,
            result: Err("rebalance in progress".to_string()),
        })
        .await;
        assert!(s.parts.is_empty());
        assert!(file(&s, 1, 2).exists(), "recorded, not committed: kept");
        assert_eq!(s.stats.pending_events.load(Ordering::Relaxed), 0);

        // Reassigned, reading resumes at the committed offset 2: the files
        // from 2 on stay (and cap the rebuilt windows), older ones go.
        write_file(&s, 1, 0, 2);
        s.assigned(vec![tp(1)]);
        s.message(msg_p(1, 2));
        assert!(!file(&s, 1, 0).exists());
        assert!(file(&s, 1, 2).exists());
        assert_eq!(s.parts[&tp(1)].open.as_ref().and_then(|o| o.cap), Some(2));
    }

    #[tokio::test]
    async fn a_revocation_with_nothing_recorded_commits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = state(dir.path(), 2, Some(ids()));
        s.assigned(vec![tp(0)]);
        for o in 0..3 {
            s.message(msg_p(0, o));
        }
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        s.revoked(vec![tp(0)], &mut None, ok_commit(&seen)).await;
        assert!(seen.lock().unwrap().is_empty());
        assert!(s.parts.is_empty());
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
    async fn dead_letters_that_cannot_be_written_pause_consumption_and_past_twice_the_bound_hold_the_commit()
     {
        let dir = tempfile::tempdir().unwrap();
        let mut s = state(dir.path(), 2, Some(ids()));
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
        // Messages that still come: kept up to twice the bound.
        while s.letters.len() < 2 * LETTERS_SOFT {
            s.message(bad(o));
            o += 1;
        }
        s.message(msg_p(0, o));
        s.message(bad(o + 1));
        s.message(bad(o + 2));
        s.message(msg_p(0, o + 3));
        assert_eq!(s.letters.len(), 2 * LETTERS_SOFT, "not kept");
        assert_eq!(s.parts[&tp(0)].lost_letter, Some(o + 1));
        for p in s.parts.values_mut() {
            for c in p.closed.iter_mut() {
                c.stage = Stage::Recorded;
            }
        }
        // The window holding the letter not kept, [2, o + 4), is recorded,
        // but the commit stops before it.
        assert_eq!(closed(&s), [(0, 2, 2), (2, o + 4, 2)]);
        assert_eq!(s.committable().unwrap(), [("t".to_string(), 0, 2)]);
        // Writable again: written, resumed, still not committed past it.
        std::fs::remove_dir(dir.path().join("dead-letters.ndjson")).unwrap();
        assert!(s.flush_letters().await);
        assert!(s.letters.is_empty());
        assert_eq!(s.pause_cause(true), None);
        assert_eq!(s.committable().unwrap(), [("t".to_string(), 0, 2)]);
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
