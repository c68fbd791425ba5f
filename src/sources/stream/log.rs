//! [`WindowedLog`]: the durable windows of a stream whose events arrive
//! once (HTTP posts, NDJSON files) and so must be kept by driftwatch until
//! they are evaluated.
//!
//! ```text
//! append ──▶ open segment (WAL, fsync) ──close (rows/time)──▶ closed segment
//!   ──driver: segment → Parquet──▶ Batch + Ack ──▶ worker records ──▶ ack ──▶ delete
//! ```
//!
//! A window is one WAL segment, named by its id (nanoseconds at opening,
//! strictly increasing), so the window's version — and the store's
//! exactly-once key — is the same before and after a crash. At start-up
//! every segment left is a window to finish: recorded ones are deleted,
//! the others (the open one included, cut short by the restart) are closed
//! and sent again. Memory holds only counters: events live in the segment
//! from the moment they are accepted.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use tokio::sync::{Notify, mpsc, watch};

use super::wal::{FrameMeta, Origin, SegmentReader, SegmentWriter, sync_dir};
use super::{
    DeadLetters, EventSchema, Result, SourceConfig, StreamError, StreamStats, window_version,
};
use crate::report::BatchVersion;
use crate::sources::lake::{DoneFn, InFlight};
use crate::sources::{Ack, Batch};

/// How often the driver looks for windows due to close by time.
const TICK: Duration = Duration::from_millis(100);
/// A window whose record failed is sent again after this long.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// Why an append was refused.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Too many events wait for evaluation: try again later.
    #[error("{pending} events are waiting for evaluation (limit {limit}); try again later")]
    Full {
        /// Events accepted and not yet recorded.
        pending: u64,
        /// The limit.
        limit: u64,
    },
    /// Writing failed; nothing of this append is acknowledged.
    #[error(transparent)]
    Failed(#[from] StreamError),
}

struct Open {
    writer: SegmentWriter,
    id: i64,
    opened: Instant,
    last_append: Instant,
    rows: u64,
    schema: arrow::datatypes::SchemaRef,
}

#[derive(Debug, Clone)]
struct Closed {
    id: i64,
    rows: u64,
    segment: PathBuf,
    last_event: Instant,
    not_before: Option<Instant>,
}

#[derive(Default)]
struct Inner {
    schema: Option<EventSchema>,
    open: Option<Open>,
    closed: VecDeque<Closed>,
    sent: HashMap<String, Closed>,
    last_id: i64,
    /// Events accepted and not yet recorded (open + closed + sent).
    pending: u64,
}

/// The durable windows of one HTTP or file stream.
pub struct WindowedLog {
    source: SourceConfig,
    dir: PathBuf,
    max_pending: u64,
    inner: Mutex<Inner>,
    wake: Notify,
    /// Counters for `/status` and telemetry.
    pub stats: Arc<StreamStats>,
    /// The dead-letter file.
    pub dead: DeadLetters,
    /// Lines consumed per file, as found in the WAL at start-up (file sources resume from it).
    pub recovered: HashMap<String, u64>,
}

fn now_ns() -> i64 {
    chrono::Utc::now()
        .timestamp_nanos_opt()
        .unwrap_or(i64::MAX / 2)
}

impl WindowedLog {
    /// Opens (or creates) the stream's folder and recovers its windows:
    /// recorded ones (per `done`) are deleted, the others queued to send.
    pub fn open(dir: &Path, source: SourceConfig, max_pending: u64, done: &DoneFn) -> Result<Self> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StreamError::Io { path, source }
        };
        let wal = dir.join("wal");
        let windows = dir.join("windows");
        std::fs::create_dir_all(&wal).map_err(io(&wal))?;
        std::fs::create_dir_all(&windows).map_err(io(&windows))?;
        let mut inner = Inner::default();
        let schema_path = dir.join("schema.json");
        if let Ok(text) = std::fs::read_to_string(&schema_path) {
            let parsed = serde_json::from_str(&text)
                .map_err(|e| e.to_string())
                .and_then(|v| EventSchema::from_json(&v));
            match parsed {
                Ok(s) => inner.schema = Some(s),
                Err(e) => {
                    return Err(StreamError::Schema(format!(
                        "{}: {e}",
                        schema_path.display()
                    )));
                }
            }
        }
        let stats = Arc::new(StreamStats::default());
        let mut recovered: HashMap<String, u64> = HashMap::new();
        let mut segments: Vec<(i64, PathBuf)> = std::fs::read_dir(&wal)
            .map_err(io(&wal))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let path = e.path();
                let id = path
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".log")?
                    .parse::<i64>()
                    .ok()?;
                Some((id, path))
            })
            .collect();
        segments.sort();
        for (id, segment) in segments {
            inner.last_id = inner.last_id.max(id);
            let mut reader = SegmentReader::open(&segment, false)?;
            let mut rows = 0;
            while let Some(frame) = reader.next_frame()? {
                rows += frame.meta.rows;
                if let Some(o) = frame.meta.origin {
                    let e = recovered.entry(o.file).or_default();
                    *e = (*e).max(o.lines);
                }
            }
            let version = Self::version_of(&source, id, rows);
            if rows == 0 || done(&source.dataset, &version) {
                remove_window(dir, id);
                continue;
            }
            tracing::info!(source = %source.name, window = %version.path, events = rows, "recovered a window not yet evaluated");
            inner.pending += rows;
            stats.windows_closed.fetch_add(1, Ordering::Relaxed);
            inner.closed.push_back(Closed {
                id,
                rows,
                segment,
                last_event: Instant::now(),
                not_before: None,
            });
        }
        stats.pending_events.store(inner.pending, Ordering::Relaxed);
        // Half-written window files of a conversion the crash cut short.
        if let Ok(entries) = std::fs::read_dir(&windows) {
            for e in entries.flatten() {
                if e.path().extension().is_some_and(|x| x == "tmp") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let dead = DeadLetters::new(dir.join("dead-letters.ndjson"));
        Ok(Self {
            source,
            dir: dir.to_path_buf(),
            max_pending,
            inner: Mutex::new(inner),
            wake: Notify::new(),
            stats,
            dead,
            recovered,
        })
    }

    /// The source's config.
    pub fn source(&self) -> &SourceConfig {
        &self.source
    }

    fn version_of(source: &SourceConfig, id: i64, rows: u64) -> BatchVersion {
        window_version(
            source.kind(),
            &source.dataset,
            &format!("{id:020}"),
            rows,
            rows,
        )
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>> {
        self.inner.lock().map_err(|_| StreamError::Io {
            path: self.dir.clone(),
            source: std::io::Error::other("stream lock poisoned"),
        })
    }

    /// The schema events are decoded with: the rule file's when it declares
    /// one (a change closes the open window), else the one held.
    pub fn schema(&self, from_rule: Option<EventSchema>) -> Result<Option<EventSchema>> {
        let mut inner = self.lock()?;
        if let Some(rule) = from_rule
            && inner.schema.as_ref() != Some(&rule)
        {
            self.close_open(&mut inner);
            inner.schema = Some(rule);
        }
        Ok(inner.schema.clone())
    }

    /// Holds `inferred` as the schema from now on (persisted), unless one is
    /// held already; returns the schema held.
    pub fn adopt_schema(&self, inferred: EventSchema) -> Result<EventSchema> {
        let mut inner = self.lock()?;
        if let Some(s) = &inner.schema {
            return Ok(s.clone());
        }
        let path = self.dir.join("schema.json");
        let tmp = self.dir.join(".schema.json.tmp");
        let text = serde_json::to_string_pretty(&inferred.to_json()).unwrap_or_default();
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|()| std::fs::rename(&tmp, &path))
            .and_then(|()| sync_dir(&self.dir))
            .map_err(|source| StreamError::Io {
                path: path.clone(),
                source,
            })?;
        tracing::info!(source = %self.source.name, schema = %inferred.to_json(), "stream schema inferred from the first events and held fixed");
        inner.schema = Some(inferred.clone());
        Ok(inferred)
    }

    /// Makes `batches` durable in the open window (closing windows that
    /// fill up), then runs `after` under the same lock (file sources save
    /// their progress there). `origin` goes with the last frame written.
    pub fn append(
        &self,
        batches: &[RecordBatch],
        origin: Option<Origin>,
        after: impl FnOnce() -> Result<()>,
    ) -> std::result::Result<u64, AppendError> {
        let total: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        let mut inner = self.lock()?;
        if total == 0 {
            after()?;
            return Ok(0);
        }
        if inner.pending > 0 && inner.pending + total > self.max_pending {
            self.stats.throttled.fetch_add(1, Ordering::Relaxed);
            return Err(AppendError::Full {
                pending: inner.pending,
                limit: self.max_pending,
            });
        }
        let mut queue: VecDeque<RecordBatch> = batches
            .iter()
            .filter(|b| b.num_rows() > 0)
            .cloned()
            .collect();
        while !queue.is_empty() {
            let Some(schema) = queue.front().map(|b| b.schema()) else {
                break;
            };
            if inner.open.as_ref().is_some_and(|o| o.schema != schema) {
                self.close_open(&mut inner);
            }
            if inner.open.is_none() {
                let id = now_ns().max(inner.last_id + 1);
                let path = self.dir.join("wal").join(format!("{id:020}.log"));
                let writer = SegmentWriter::create(&path).map_err(StreamError::from)?;
                inner.last_id = id;
                inner.open = Some(Open {
                    writer,
                    id,
                    opened: Instant::now(),
                    last_append: Instant::now(),
                    rows: 0,
                    schema: schema.clone(),
                });
            }
            let Some(open) = inner.open.as_mut() else {
                break;
            };
            let mut room = self.source.window.room(open.rows);
            let mut chunk = Vec::new();
            let mut rows = 0u64;
            while room > 0 {
                let Some(front) = queue.front() else { break };
                if front.schema() != schema {
                    break;
                }
                let n = front.num_rows() as u64;
                if n <= room {
                    room -= n;
                    rows += n;
                    if let Some(b) = queue.pop_front() {
                        chunk.push(b);
                    }
                } else {
                    let take = room as usize;
                    chunk.push(front.slice(0, take));
                    let rest = front.slice(take, front.num_rows() - take);
                    queue[0] = rest;
                    rows += room;
                    room = 0;
                }
            }
            let meta = FrameMeta {
                rows,
                origin: if queue.is_empty() {
                    origin.clone()
                } else {
                    None
                },
            };
            open.writer
                .append(&chunk, &meta)
                .map_err(StreamError::from)?;
            open.rows += rows;
            open.last_append = Instant::now();
            let full = self.source.window.room(open.rows) == 0;
            inner.pending += rows;
            self.stats.accepted.fetch_add(rows, Ordering::Relaxed);
            self.stats
                .pending_events
                .store(inner.pending, Ordering::Relaxed);
            if full {
                self.close_open(&mut inner);
            } else if let Some(o) = &inner.open {
                self.stats.open_events.store(o.rows, Ordering::Relaxed);
            }
        }
        after()?;
        Ok(total)
    }

    fn close_open(&self, inner: &mut Inner) {
        if let Some(open) = inner.open.take() {
            let segment = open.writer.path().to_path_buf();
            inner.closed.push_back(Closed {
                id: open.id,
                rows: open.rows,
                segment,
                last_event: open.last_append,
                not_before: None,
            });
            self.stats.windows_closed.fetch_add(1, Ordering::Relaxed);
            self.stats.open_events.store(0, Ordering::Relaxed);
            self.wake.notify_one();
        }
    }

    /// Closes the open window if its time is up.
    fn close_if_due(&self) {
        let Some(limit) = self.source.window.duration else {
            return;
        };
        if let Ok(mut inner) = self.inner.lock()
            && inner
                .open
                .as_ref()
                .is_some_and(|o| o.opened.elapsed() >= limit)
        {
            self.close_open(&mut inner);
        }
    }

    /// The next closed window due to be sent, moved to the sent set.
    fn next_to_send(&self) -> Option<Closed> {
        let mut inner = self.inner.lock().ok()?;
        let now = Instant::now();
        let i = inner
            .closed
            .iter()
            .position(|c| c.not_before.is_none_or(|t| t <= now))?;
        let c = inner.closed.remove(i)?;
        let key = Self::version_of(&self.source, c.id, c.rows).path;
        inner.sent.insert(key, c.clone());
        Some(c)
    }

    fn acknowledged(&self, version: &BatchVersion, recorded: bool) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let Some(mut c) = inner.sent.remove(&version.path) else {
            return;
        };
        if recorded {
            inner.pending = inner.pending.saturating_sub(c.rows);
            self.stats
                .pending_events
                .store(inner.pending, Ordering::Relaxed);
            self.stats.windows_evaluated.fetch_add(1, Ordering::Relaxed);
            drop(inner);
            remove_window(&self.dir, c.id);
        } else {
            c.not_before = Some(Instant::now() + RETRY_AFTER);
            inner.closed.push_back(c);
        }
    }

    /// Sends closed windows to the agent's queue until `stop`; closes windows
    /// by time; deletes a window's segment once its record is durable.
    pub async fn run(
        self: Arc<Self>,
        queue: mpsc::Sender<Batch>,
        in_flight: InFlight,
        mut stop: watch::Receiver<bool>,
    ) {
        let (ack_tx, mut acks) = mpsc::unbounded_channel::<(BatchVersion, bool)>();
        loop {
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => return,
                Some((v, ok)) = acks.recv() => self.acknowledged(&v, ok),
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(TICK) => {}
            }
            while let Ok((v, ok)) = acks.try_recv() {
                self.acknowledged(&v, ok);
            }
            self.close_if_due();
            while let Some(c) = self.next_to_send() {
                let version = Self::version_of(&self.source, c.id, c.rows);
                let parquet = window_path(&self.dir, c.id);
                let (segment, target) = (c.segment.clone(), parquet.clone());
                let converted =
                    tokio::task::spawn_blocking(move || segment_to_parquet(&segment, &target))
                        .await;
                match converted {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::error!(source = %self.source.name, window = %version.path, error = %e, "cannot write the window for evaluation; retrying later");
                        self.acknowledged(&version, false);
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(source = %self.source.name, error = %e, "window conversion task failed");
                        self.acknowledged(&version, false);
                        continue;
                    }
                }
                if let Ok(mut set) = in_flight.lock() {
                    set.insert((self.source.dataset.clone(), version.clone()));
                }
                let batch = Batch {
                    dataset: self.source.dataset.clone(),
                    path: parquet,
                    relative: PathBuf::from(&version.path),
                    root: self.dir.clone(),
                    partitions: Default::default(),
                    version,
                    discovered: c.last_event,
                    ack: Some(Ack(ack_tx.clone())),
                };
                tokio::select! {
                    sent = queue.send(batch) => if sent.is_err() { return },
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
    }
}

fn window_path(dir: &Path, id: i64) -> PathBuf {
    dir.join("windows").join(format!("{id:020}.parquet"))
}

fn remove_window(dir: &Path, id: i64) {
    let _ = std::fs::remove_file(window_path(dir, id));
    let _ = std::fs::remove_file(dir.join("wal").join(format!("{id:020}.log")));
    let _ = sync_dir(&dir.join("wal"));
}

/// Writes a segment's rows as a Parquet file; returns the rows.
fn segment_to_parquet(segment: &Path, target: &Path) -> Result<u64> {
    let mut reader = SegmentReader::open(segment, true)?;
    let mut pending: VecDeque<RecordBatch> = VecDeque::new();
    while pending.is_empty() {
        match reader.next_frame()? {
            Some(f) => pending.extend(f.batches),
            None => break,
        }
    }
    let Some(schema) = pending.front().map(|b| b.schema()) else {
        return Err(StreamError::Window {
            path: target.to_path_buf(),
            message: "the window holds no events".to_string(),
        });
    };
    let batches = std::iter::from_fn(move || {
        loop {
            if let Some(b) = pending.pop_front() {
                return Some(Ok(b));
            }
            match reader.next_frame() {
                Ok(Some(f)) => pending.extend(f.batches),
                Ok(None) => return None,
                Err(e) => return Some(Err(StreamError::from(e))),
            }
        }
    });
    super::write_parquet(target, &schema, batches)
}
