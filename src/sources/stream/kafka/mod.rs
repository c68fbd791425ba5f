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
//! - the consumer and its `Context` (in `client`): rebalance callbacks log,
//!   send plain `(topic, partition)` lists on a channel and queue the
//!   revocation commit (asynchronous; blocking consumer calls there can hang a
//!   close), and librdkafka's logs go to `tracing`;
//! - windows per partition, closed in offset order, and the acknowledgement
//!   bookkeeping that turns acks into commits of the longest recorded prefix
//!   (never past a window not yet recorded) (in `windows`);
//! - blocking client calls (synchronous commits, watermarks for the lag) on
//!   blocking threads (in `client`), each building its own
//!   `TopicPartitionList` and turning any list librdkafka returns into plain
//!   data at once: a live list from the client can make dropping the consumer
//!   hang;
//! - the event schema (the rule file's `schema` check, else inferred from the
//!   first events and kept in `schema.json`), and dead letters for messages
//!   that do not fit, each located as `topic/partition@offset` (in
//!   `windows`);
//! - the run loop that ties them together, [`KafkaSource::run`] (here).
//!
//! Submodules:
//! - `client`: the librdkafka side — `Context` and its callbacks, the
//!   `Commits` snapshot shared with the revocation callback, and the
//!   blocking commit and lag calls;
//! - `windows`: the per-partition windows and their bookkeeping (`State`),
//!   window files, dead letters and the schema;
//! - `tests`: unit tests of both, without a broker.
//!
//! Client defaults (each can be overridden in `options`, except the group,
//! the brokers and the commit settings, which are driftwatch's): reading from
//! the earliest offset when the group has none, `cooperative-sticky`
//! assignment (incremental rebalances on real Kafka; on tansu, the test
//! broker, the only assignor whose rebalance survives a member timing out),
//! and a 6 s session with 1 s heartbeats so a dead agent's partitions move
//! within seconds rather than librdkafka's default 45 s.

mod client;
mod windows;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::TopicPartitionList;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::{EventSchema, Result, SourceConfig, SourceSettings, StreamError, StreamStats};
use crate::report::BatchVersion;
use crate::rules::RuleFile;
use crate::sources::lake::{DoneFn, InFlight};
use crate::sources::{Ack, Batch};
use client::{Commits, Committed, Context, Rebalanced, Throttle, commit, measure_lag};
use windows::{Msg, Pause, State};

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
