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
//! reported again. The Parquet file of a closed window stays until its
//! offsets are committed; after a crash it also tells the rebuilt window how
//! many events the recorded one held, so a window first closed by time is
//! rebuilt with the same events rather than more (which would commit events
//! never evaluated).
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
    /// In the agent's queue or being evaluated.
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
    /// Windows sent before their partition was revoked: file deleted at ack.
    orphans: HashMap<String, PathBuf>,
    open_events: u64,
    pending_events: u64,
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
        loop {
            let mut ticked = false;
            let mut want_commit = false;
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => break,
                Some(ev) = events.recv() => {
                    state.rebalanced(ev);
                    lag_due = Instant::now();
                }
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
                        state.rebalanced(ev);
                        lag_due = Instant::now();
                    }
                    state.message(msg);
                }
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
            }
            if !state.send_closed(&queue, &in_flight, &ack, &mut stop).await {
                break;
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
            letters: Vec::new(),
            orphans: HashMap::new(),
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

    fn rebalanced(&mut self, ev: Rebalanced) {
        match ev {
            Rebalanced::Assigned(tps) => {
                for tp in tps {
                    self.parts.entry(tp).or_default();
                }
            }
            Rebalanced::Revoked(tps) => {
                for tp in tps {
                    self.forget(&tp);
                }
            }
        }
    }

    /// Drops a partition's windows: the open one and those not committed
    /// (whoever reads the partition next rebuilds them from the committed offset).
    fn forget(&mut self, tp: &Tp) {
        self.unschematized
            .retain(|m| (m.topic.as_str(), m.partition) != (tp.0.as_str(), tp.1));
        let Some(part) = self.parts.remove(tp) else {
            return;
        };
        let open = part.open.as_ref().map(|o| o.events).unwrap_or(0);
        let closed: u64 = part.closed.iter().map(|c| c.events).sum();
        self.open_events = self.open_events.saturating_sub(open);
        self.pending_events = self.pending_events.saturating_sub(open + closed);
        for c in part.closed {
            match c.stage {
                // A worker may still read it: deleted when its ack comes.
                Stage::Sent => {
                    self.orphans.insert(c.version.path, c.file);
                }
                _ => {
                    let _ = std::fs::remove_file(&c.file);
                }
            }
        }
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
    /// `from` (where reading resumed): those offsets are committed.
    fn remove_stale_files(&self, tp: &Tp, from: i64) {
        let prefix = format!("{}-{}-", tp.0, tp.1);
        let Ok(entries) = std::fs::read_dir(self.dir.join("windows")) else {
            return;
        };
        for e in entries.filter_map(|e| e.ok()) {
            let name = e.file_name();
            let first = name
                .to_str()
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
        match decoded {
            Ok(()) => {
                open.events += 1;
                self.open_events += 1;
                self.pending_events += 1;
                self.stats.accepted.fetch_add(1, Ordering::Relaxed);
            }
            Err(reason) => {
                let letter = DeadLetter::new(
                    &self.source.name,
                    msg.location(),
                    reason,
                    msg.payload.as_deref().unwrap_or_default(),
                );
                self.letters.push(letter);
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            }
        }
        let limit = self
            .source
            .window
            .rows
            .unwrap_or(u64::MAX)
            .min(open.cap.unwrap_or(u64::MAX));
        if open.events >= limit {
            self.close(&tp);
        }
        self.publish();
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
        // A window sent before a revocation had this key and file: they are this one's now.
        self.orphans.remove(&version.path);
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
        if let Some(file) = self.orphans.remove(&version.path) {
            let _ = std::fs::remove_file(file);
        }
        false
    }

    /// Per partition, the end offset of the longest prefix of recorded
    /// windows, where there is one.
    fn committable(&self) -> Option<Vec<(String, i32, i64)>> {
        let mut out = Vec::new();
        for (tp, part) in &self.parts {
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
            let Some(part) = self.parts.get_mut(&(t, p)) else {
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
                if w.events > 0 {
                    let _ = std::fs::remove_file(&w.file);
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
            Ok((_, Ok(()))) => true,
            Ok((letters, Err(e))) => {
                tracing::error!(source = %self.source.name, error = %e, "cannot write dead letters; offsets are not committed until they are");
                self.letters = letters;
                false
            }
            Err(e) => {
                tracing::error!(source = %self.source.name, error = %e, "dead-letter task failed");
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

    /// Writes closed windows as Parquet and sends them to the agent's
    /// queue; one the store holds already is marked recorded instead.
    /// `false` when the source must stop.
    async fn send_closed(
        &mut self,
        queue: &mpsc::Sender<Batch>,
        in_flight: &InFlight,
        ack: &Ack,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        while let Some((tp, first)) = self.next_to_send() {
            let dataset = self.source.dataset.clone();
            let name = self.source.name.clone();
            let done = self.done.clone();
            let Some(c) = self.find(&tp, first) else {
                break;
            };
            let version = c.version.clone();
            let file = c.file.clone();
            let stage = std::mem::replace(&mut c.stage, Stage::Sent);
            let rows = match stage {
                Stage::Write { rows, .. } => Some(rows),
                _ => None,
            };
            let (v, f) = (version.clone(), file.clone());
            // The store check, and the Parquet write, off the async threads.
            let prepared = tokio::task::spawn_blocking(move || -> Prepared {
                if done(&dataset, &v) {
                    let _ = std::fs::remove_file(&f);
                    return Prepared::Recorded;
                }
                let Some(rows) = rows else {
                    return Prepared::Ready;
                };
                let schema = rows.schema();
                match write_parquet(&f, &schema, std::iter::once(Ok(rows.clone()))) {
                    Ok(_) => Prepared::Ready,
                    Err(e) => Prepared::Failed(e, rows),
                }
            })
            .await;
            let Some(c) = self.find(&tp, first) else {
                continue;
            };
            match prepared {
                Ok(Prepared::Recorded) => {
                    tracing::info!(source = %name, window = %version.path, "window recorded before; committing it without reporting it again");
                    c.stage = Stage::Recorded;
                    continue;
                }
                Ok(Prepared::Ready) => {}
                Ok(Prepared::Failed(e, rows)) => {
                    tracing::error!(source = %name, window = %version.path, error = %e, "cannot write the window for evaluation; retrying in 10 s");
                    c.stage = Stage::Write {
                        rows,
                        not_before: Some(Instant::now() + RETRY_AFTER),
                    };
                    continue;
                }
                Err(e) => {
                    tracing::error!(source = %name, window = %version.path, error = %e, "window task failed; retrying in 10 s");
                    c.stage = Stage::RetryAt(Instant::now() + RETRY_AFTER);
                    continue;
                }
            }
            let discovered = c.last_message;
            if let Ok(mut set) = in_flight.lock() {
                set.insert((self.source.dataset.clone(), version.clone()));
            }
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
            tokio::select! {
                sent = queue.send(batch) => if sent.is_err() { return false },
                _ = stop.wait_for(|s| *s) => return false,
            }
        }
        true
    }

    /// Assigned partitions with the next offset to read, where known.
    fn positions(&self) -> Vec<(String, i32, Option<i64>)> {
        self.parts
            .iter()
            .map(|(tp, p)| (tp.0.clone(), tp.1, p.next))
            .collect()
    }
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
            },
        };
        std::fs::create_dir_all(dir.join("windows")).unwrap();
        let done: DoneFn = Arc::new(|_: &str, _: &BatchVersion| false);
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
        s.rebalanced(Rebalanced::Assigned(vec![("t".to_string(), 0)]));
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
        s.rebalanced(Rebalanced::Revoked(vec![("t".to_string(), 0)]));
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
}
