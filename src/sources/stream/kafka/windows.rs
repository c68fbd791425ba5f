//! The per-partition windows of the Kafka source and their bookkeeping:
//! [`State`] opens and closes windows, writes them as Parquet, tracks acks
//! and dead letters, and says what may be committed and when to pause.
//! Everything but the client lives here, so it is testable without a broker.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow::array::RecordBatch;
use tokio::sync::mpsc;

use super::client::{Commits, Committed, Throttle};
use super::{END_KEY, INFER_WAIT, LETTER_BYTES_SOFT, LETTERS_SOFT, RETRY_AFTER, Tp};
use crate::report::BatchVersion;
use crate::rules::RuleFile;
use crate::sources::lake::{DoneFn, InFlight};
use crate::sources::stream::wal::sync_dir;
use crate::sources::stream::{
    DeadLetter, DeadLetters, EventSchema, Result, SourceConfig, SourceKind, SourceSettings,
    StreamError, StreamStats, rule_schema, window_version,
};
use crate::sources::{Ack, Batch};

/// One message, copied out of the client's buffer.
pub(super) struct Msg {
    pub(super) topic: String,
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) payload: Option<Vec<u8>>,
}

impl Msg {
    fn location(&self) -> String {
        format!("{}/{}@{}", self.topic, self.partition, self.offset)
    }
}

/// The open window of a partition.
pub(super) struct Open {
    pub(super) first: i64,
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
    builder: Option<crate::sources::stream::schema::EventBuilder>,
    opened: Instant,
    last_message: Instant,
}

/// Where a closed window is on its way to being committed.
pub(super) enum Stage {
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

pub(super) struct Closed {
    pub(super) first: i64,
    /// Last offset + 1: what is committed once this window is recorded.
    pub(super) end: i64,
    pub(super) events: u64,
    pub(super) version: BatchVersion,
    file: PathBuf,
    last_message: Instant,
    pub(super) stage: Stage,
}

/// One assigned partition.
#[derive(Default)]
pub(super) struct Part {
    pub(super) open: Option<Open>,
    /// Closed windows in offset order, until committed.
    pub(super) closed: VecDeque<Closed>,
    /// The next offset to consume (last consumed + 1), once a message came.
    pub(super) next: Option<i64>,
    /// Where reading resumed when the partition was assigned (its committed
    /// offset, usually), once a message came.
    from: Option<i64>,
    /// The window files of the partition from `from` on, by first offset,
    /// once looked at (when reading resumes): what rebuilt windows end at.
    pub(super) files: Option<HashMap<i64, Written>>,
}

/// What the file of a window written before says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Written {
    /// Its end offset (`None` in files written by older versions).
    pub(super) end: Option<i64>,
    pub(super) events: Option<u64>,
}

/// The windows and bookkeeping of the source (everything but the client).
pub(super) struct State {
    pub(super) source: SourceConfig,
    pub(super) dir: PathBuf,
    pub(super) stats: Arc<StreamStats>,
    dead: Arc<DeadLetters>,
    done: DoneFn,
    pub(super) schema: Option<EventSchema>,
    /// The last error of the rule file's schema (logged once).
    rule_schema_error: Option<String>,
    pub(super) parts: HashMap<Tp, Part>,
    /// Messages waiting for a schema to be inferred.
    pub(super) unschematized: Vec<Msg>,
    infer_since: Option<Instant>,
    /// Why the last inference fixed no schema when it was too wide (the
    /// reason the messages it looked at are dead letters).
    too_wide: Option<String>,
    /// Dead letters not yet written (written before any commit).
    pub(super) letters: Vec<DeadLetter>,
    /// The bytes of `letters` (about).
    letter_bytes: usize,
    pub(super) open_events: u64,
    pending_events: u64,
    /// Events of closed windows not yet committed beyond which consumption pauses.
    pub(super) max_pending: u64,
    /// Windows written and ready to be queued that the agent's queue had
    /// no room for yet, in the order they go.
    pub(super) outbox: VecDeque<Waiting>,
    /// The events of `outbox`.
    pub(super) outbox_events: u64,
    /// Repeated failures (commits while the broker is away) are logged sparingly.
    throttle: Throttle,
    /// Windows in the agent's queue or being evaluated (by version path),
    /// whatever became of their partition, with how many times each is
    /// (the same window can be sent again, or by an earlier ownership):
    /// their files are not deleted before their ack.
    pub(super) unacked: HashMap<String, (Unacked, usize)>,
}

/// A window handed to the agent and not acknowledged yet.
pub(super) struct Unacked {
    tp: Tp,
    first: i64,
    file: PathBuf,
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
pub(super) fn written(file: &Path) -> Option<Written> {
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
pub(super) fn write_window(path: &Path, rows: &RecordBatch, end: i64) -> Result<()> {
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
    pub(super) fn new(
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
            too_wide: None,
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

    pub(super) fn window_file(&self, topic: &str, partition: i32, first: i64) -> PathBuf {
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
    pub(super) fn apply_rules(&mut self, rules: &[RuleFile]) {
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
    pub(super) fn assigned(&mut self, tps: Vec<Tp>) {
        for tp in tps {
            self.parts.entry(tp).or_default();
        }
    }

    /// Partitions revoked: forgotten. Their recorded windows were committed
    /// by the revocation callback before they went (see
    /// [`Context::pre_rebalance`]); none of this member's commits covers
    /// them from then on.
    pub(super) fn revoked(&mut self, tps: Vec<Tp>) {
        for tp in &tps {
            self.forget(tp);
        }
    }

    /// Makes the offsets the revocation callback may commit those of now:
    /// per owned partition, the end of the longest recorded prefix — not
    /// while dead letters wait to be written (nothing is committed before
    /// they are; the offsets shared before stay).
    pub(super) fn share(&self, commits: &Mutex<Commits>) {
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
    pub(super) fn forget(&mut self, tp: &Tp) {
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
    pub(super) async fn resume_at(&mut self, msg: &Msg) {
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

    pub(super) fn message(&mut self, msg: Msg) {
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
            if self.unschematized.len() >= crate::sources::stream::schema::INFER_FROM {
                self.infer();
            }
            return;
        }
        self.window(msg);
    }

    /// Infers the schema from the messages waiting for one, holds it
    /// (persisted) and windows them.
    pub(super) fn infer(&mut self) {
        self.infer_since = None;
        let inferred = EventSchema::infer(
            self.unschematized
                .iter()
                .filter_map(|m| m.payload.as_deref()),
        );
        self.too_wide = None;
        let inferred = match inferred {
            Some(s) if s.arrow().fields().len() > self.source.max_columns => {
                let e = StreamError::SchemaTooWide {
                    columns: s.arrow().fields().len(),
                    limit: self.source.max_columns,
                };
                tracing::warn!(source = %self.source.name, error = %e, "no schema inferred; the messages looked at are dead letters");
                self.too_wide = Some(e.to_string());
                None
            }
            other => other,
        };
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
            (Some(p), None) => Err(self
                .too_wide
                .clone()
                .unwrap_or_else(|| unschematized_reason(p))),
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
    pub(super) fn letters_full(&self) -> bool {
        self.letters.len() >= LETTERS_SOFT || self.letter_bytes >= LETTER_BYTES_SOFT
    }

    /// Events of closed windows not yet committed.
    pub(super) fn backlog(&self) -> u64 {
        self.pending_events.saturating_sub(self.open_events)
    }

    /// Why consumption is to pause (or stay paused), if it is: too many
    /// events wait in closed windows — once paused, until at most three
    /// quarters of the bound do, so that it does not flap at every window —
    /// dead letters cannot be written, or the windows waiting for room in
    /// the agent's queue hold more than a quarter of the bound — once
    /// paused, until none waits (pausing drops what the client fetched
    /// ahead, so it is not done at every window the queue cannot take).
    pub(super) fn pause_cause(&self, paused: bool) -> Option<Pause> {
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
    pub(super) fn assignment(&self) -> Vec<Tp> {
        self.parts.keys().cloned().collect()
    }

    /// Closes a partition's open window.
    pub(super) fn close(&mut self, tp: &Tp) {
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
    pub(super) fn drop_open(&mut self) {
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
    pub(super) fn tick(&mut self) {
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
    pub(super) fn acknowledged(&mut self, version: &BatchVersion, recorded: bool) -> bool {
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
    pub(super) fn committable(&self) -> Option<Vec<(String, i32, i64)>> {
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
    pub(super) fn committed(&mut self, c: Committed) -> bool {
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
    pub(super) async fn flush_letters(&mut self) -> bool {
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
    pub(super) async fn send_closed(
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
    pub(super) fn next_waiting(&mut self, in_flight: &InFlight) -> Option<Batch> {
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
    pub(super) fn waiting(&self) -> bool {
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
            table: None,
        };
        Some((batch, events))
    }

    /// Assigned partitions with the next offset to read, where known.
    pub(super) fn positions(&self) -> Vec<(String, i32, Option<i64>)> {
        self.parts
            .iter()
            .map(|(tp, p)| (tp.0.clone(), tp.1, p.next))
            .collect()
    }
}

/// A closed window whose batch waits for room in the agent's queue.
pub(super) struct Waiting {
    pub(super) tp: Tp,
    first: i64,
    events: u64,
    batch: Batch,
}

/// Why consumption pauses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pause {
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
