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

/// Write-ahead-log bytes one append may take per byte of its input. A row
/// costs every column of the schema (a validity bit and 4–8 bytes each), so
/// sparse events under a wide schema grow: a 90 KB post of `{}` lines under a
/// 10,000-column schema was 778 MB of frames. Rows are estimated by their
/// Arrow memory size, which the IPC frame matches closely.
pub const WAL_BYTES_PER_INPUT_BYTE: u64 = 64;
/// The budget of a small input: an append may always take this much.
pub const WAL_FLOOR_BYTES: u64 = 64 << 20;

/// Checks that `batches`, decoded from `input_bytes` of input, fit the
/// write-ahead-log budget ([`WAL_BYTES_PER_INPUT_BYTE`] × input, at least
/// [`WAL_FLOOR_BYTES`]); call before [`WindowedLog::append`].
pub fn wal_budget(batches: &[RecordBatch], input_bytes: usize) -> Result<()> {
    let bytes: u64 = batches
        .iter()
        .map(|b| b.get_array_memory_size() as u64)
        .sum();
    within_wal_budget(bytes, input_bytes)
}

/// The one rule both checks apply: `bytes` of WAL for `input_bytes` of
/// input, at most [`WAL_BYTES_PER_INPUT_BYTE`] times it (at least
/// [`WAL_FLOOR_BYTES`]).
fn within_wal_budget(bytes: u64, input_bytes: usize) -> Result<()> {
    let input = input_bytes as u64;
    let limit = input
        .saturating_mul(WAL_BYTES_PER_INPUT_BYTE)
        .max(WAL_FLOOR_BYTES);
    if bytes > limit {
        return Err(StreamError::WalBudget {
            bytes,
            input,
            limit,
        });
    }
    Ok(())
}

/// [`wal_budget`] before decoding: refuses `rows` events under `schema`
/// whose rows cannot fit the budget whatever their values, from a lower
/// bound of each row's Arrow size (a validity bit per column, plus a bit per
/// boolean, 4 bytes of offset per string, the width of other values). This
/// keeps a post of millions of `{}` lines under a wide schema from being
/// decoded (allocated) at all only to be refused.
pub fn wal_budget_before_decoding(
    rows: u64,
    schema: &arrow::datatypes::Schema,
    input_bytes: usize,
) -> Result<()> {
    use arrow::datatypes::DataType;
    let bits: u64 = schema
        .fields()
        .iter()
        .map(|f| {
            1 + match f.data_type() {
                DataType::Boolean => 1,
                DataType::Utf8 => 32,
                other => other.primitive_width().map_or(0, |w| w as u64 * 8),
            }
        })
        .sum();
    let bytes = rows.saturating_mul(bits) / 8;
    within_wal_budget(bytes, input_bytes)
}

/// Which lines of an event file the rows of an append come from.
#[derive(Debug, Clone)]
pub struct FileOrigin {
    /// The file (relative to the source's folder).
    pub file: String,
    /// The line number of each row, in order.
    pub row_lines: Vec<u64>,
    /// Lines consumed through this append (rejected trailing lines included).
    pub through: u64,
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
    /// held already; returns the schema held. An inferred schema wider than
    /// the source's `max_columns` is refused ([`StreamError::SchemaTooWide`])
    /// and nothing is held: every event's row costs every column in the
    /// write-ahead log, so one wide first event must not fix it for good.
    pub fn adopt_schema(&self, inferred: EventSchema) -> Result<EventSchema> {
        let mut inner = self.lock()?;
        if let Some(s) = &inner.schema {
            return Ok(s.clone());
        }
        let columns = inferred.arrow().fields().len();
        if columns > self.source.max_columns {
            return Err(StreamError::SchemaTooWide {
                columns,
                limit: self.source.max_columns,
            });
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
    /// fill up). Under the log's lock: refuses with [`AppendError::Full`]
    /// before anything is written, runs `before` (the caller's dead letters,
    /// so they are durable before the events they came with are
    /// acknowledged), writes the frames, then runs `after` (file sources save
    /// their progress there). `origin` says which file lines the rows are
    /// from, so every frame carries how far the file is consumed.
    ///
    /// An error after the first frame leaves the frames written so far in
    /// their windows (they will be evaluated: at-least-once for a retry).
    pub fn append(
        &self,
        batches: &[RecordBatch],
        origin: Option<&FileOrigin>,
        before: impl FnOnce() -> Result<()>,
        after: impl FnOnce() -> Result<()>,
    ) -> std::result::Result<u64, AppendError> {
        let total: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        let mut inner = self.lock()?;
        if total > 0 && inner.pending > 0 && inner.pending + total > self.max_pending {
            self.stats.throttled.fetch_add(1, Ordering::Relaxed);
            return Err(AppendError::Full {
                pending: inner.pending,
                limit: self.max_pending,
            });
        }
        before()?;
        let mut queue: VecDeque<RecordBatch> = batches
            .iter()
            .filter(|b| b.num_rows() > 0)
            .cloned()
            .collect();
        let mut written = 0u64;
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
                origin: origin.map(|o| Origin {
                    file: o.file.clone(),
                    lines: if queue.is_empty() {
                        o.through
                    } else {
                        o.row_lines
                            .get((written + rows) as usize - 1)
                            .copied()
                            .unwrap_or(o.through)
                    },
                }),
            };
            if let Err(e) = open.writer.append(&chunk, &meta) {
                // A segment whose tail could not be cut back must not take
                // more frames: close it (its good frames are still evaluated).
                self.close_open(&mut inner);
                return Err(StreamError::from(e).into());
            }
            written += rows;
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
            if open.rows == 0 {
                // Its first frame failed: nothing in it to evaluate.
                drop(open);
                let _ = std::fs::remove_file(&segment);
                self.stats.open_events.store(0, Ordering::Relaxed);
                return;
            }
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
            let mut received = Vec::new();
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => return,
                Some(a) = acks.recv() => received.push(a),
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(TICK) => {}
            }
            while let Ok(a) = acks.try_recv() {
                received.push(a);
            }
            // The log's lock is held by appends across fsyncs, and deleting a
            // window syncs its folder: all of it off the async threads.
            let this = self.clone();
            let due = tokio::task::spawn_blocking(move || {
                for (v, ok) in received {
                    this.acknowledged(&v, ok);
                }
                this.close_if_due();
                std::iter::from_fn(|| this.next_to_send()).collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            for c in due {
                let version = Self::version_of(&self.source, c.id, c.rows);
                let parquet = window_path(&self.dir, c.id);
                let (segment, target) = (c.segment.clone(), parquet.clone());
                let converted =
                    tokio::task::spawn_blocking(move || segment_to_parquet(&segment, &target))
                        .await;
                match converted {
                    Ok(Ok(_)) => {}
                    failed => {
                        let error = match failed {
                            Ok(Err(e)) => e.to_string(),
                            Err(e) => e.to_string(),
                            Ok(Ok(_)) => String::new(),
                        };
                        tracing::error!(source = %self.source.name, window = %version.path, error = %error, "cannot write the window for evaluation; retrying later");
                        let this = self.clone();
                        let _ =
                            tokio::task::spawn_blocking(move || this.acknowledged(&version, false))
                                .await;
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
                    table: None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::stream::config::{SourceSettings, WindowSpec};
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    fn source(rows: u64) -> SourceConfig {
        SourceConfig {
            name: "http:t".to_string(),
            dataset: "t".to_string(),
            window: WindowSpec {
                rows: Some(rows),
                duration: None,
            },
            max_columns: crate::sources::stream::config::DEFAULT_MAX_COLUMNS,
            settings: SourceSettings::Http {
                max_body: 1 << 20,
                body_timeout: std::time::Duration::from_secs(30),
                max_pending_events: 5,
                bearer_token_env: None,
                infer_schema: false,
            },
        }
    }

    fn rows(values: std::ops::Range<i64>) -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)])),
            vec![Arc::new(Int64Array::from(values.collect::<Vec<_>>()))],
        )
        .unwrap()
    }

    fn never_done() -> DoneFn {
        Arc::new(|_: &str, _: &BatchVersion| false)
    }

    fn ok() -> Result<()> {
        Ok(())
    }

    /// (rows, lines of each frame's origin) of every segment, in order.
    fn segments(dir: &Path) -> Vec<(u64, Vec<u64>)> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir.join("wal"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|p| {
                let mut r = SegmentReader::open(p, false).unwrap();
                let (mut n, mut lines) = (0, Vec::new());
                while let Some(f) = r.next_frame().unwrap() {
                    n += f.meta.rows;
                    lines.extend(f.meta.origin.map(|o| o.lines));
                }
                (n, lines)
            })
            .collect()
    }

    #[test]
    fn issue_15_the_wal_budget_scales_with_the_input_above_a_floor() {
        let batch = rows(0..100_000);
        let bytes = batch.get_array_memory_size() as u64;
        assert!(bytes > 800_000, "{bytes}");
        assert!(
            wal_budget(std::slice::from_ref(&batch), 0).is_ok(),
            "under the floor"
        );
        let wide = RecordBatch::try_new(
            Arc::new(Schema::new(
                (0..100)
                    .map(|i| Field::new(format!("c{i}"), DataType::Int64, true))
                    .collect::<Vec<_>>(),
            )),
            (0..100)
                .map(|_| Arc::new(Int64Array::from(vec![None::<i64>; 100_000])) as _)
                .collect(),
        )
        .unwrap();
        // 80 MB of rows from 300 KB of `{}` lines: over 64 × 300 KB.
        let e = wal_budget(std::slice::from_ref(&wide), 300_000).unwrap_err();
        assert!(
            matches!(e, StreamError::WalBudget { input: 300_000, limit, .. } if limit == WAL_FLOOR_BYTES),
            "{e}"
        );
        assert!(
            wal_budget(std::slice::from_ref(&wide), 2_000_000).is_ok(),
            "64 × 2 MB is enough"
        );
        // The bound before decoding is below the decoded size, and refuses
        // what the decoded size would.
        let lower = |rows| match wal_budget_before_decoding(rows, &wide.schema(), 0) {
            Err(StreamError::WalBudget { bytes, .. }) => bytes,
            other => panic!("{other:?}"),
        };
        assert_eq!(lower(100_000), 100_000 * 100 * 65 / 8);
        assert!(lower(100_000) <= wide.get_array_memory_size() as u64);
        assert!(wal_budget_before_decoding(100_000, &wide.schema(), 300_000).is_err());
        assert!(wal_budget_before_decoding(100_000, &wide.schema(), 2_000_000).is_ok());
    }

    #[test]
    fn appends_fill_windows_in_order_and_each_frame_says_how_far_its_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let log = WindowedLog::open(dir.path(), source(3), 100, &never_done()).unwrap();
        // Rows from lines 1, 2, 4, 5, 6, 8, 9 (3 and 7 were rejected); 10 lines read.
        let origin = FileOrigin {
            file: "a.ndjson".to_string(),
            row_lines: vec![1, 2, 4, 5, 6, 8, 9],
            through: 10,
        };
        assert_eq!(
            log.append(&[rows(0..4), rows(4..7)], Some(&origin), ok, ok)
                .unwrap(),
            7
        );
        assert_eq!(
            segments(dir.path()),
            vec![(3, vec![4]), (3, vec![8]), (1, vec![10])]
        );
        assert_eq!(log.stats.windows_closed.load(Ordering::Relaxed), 2);
        assert_eq!(log.stats.open_events.load(Ordering::Relaxed), 1);
        assert_eq!(log.stats.pending_events.load(Ordering::Relaxed), 7);
    }

    #[test]
    fn a_full_stream_refuses_before_writing_anything_and_an_empty_one_takes_any_size() {
        let dir = tempfile::tempdir().unwrap();
        let log = WindowedLog::open(dir.path(), source(100), 5, &never_done()).unwrap();
        let mut before_ran = false;
        // Over the limit, but nothing pending: taken.
        log.append(
            &[rows(0..7)],
            None,
            || {
                before_ran = true;
                Ok(())
            },
            ok,
        )
        .unwrap();
        assert!(before_ran);
        let mut ran = false;
        let refused = log.append(
            &[rows(7..8)],
            None,
            || {
                ran = true;
                Ok(())
            },
            ok,
        );
        assert!(matches!(
            refused,
            Err(AppendError::Full {
                pending: 7,
                limit: 5
            })
        ));
        assert!(!ran, "dead letters are not written for a refused post");
        assert_eq!(segments(dir.path()), vec![(7, vec![])]);
        assert_eq!(log.stats.throttled.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_restart_finishes_every_window_left_and_drops_recorded_ones() {
        let dir = tempfile::tempdir().unwrap();
        let first_version;
        {
            let log = WindowedLog::open(dir.path(), source(3), 100, &never_done()).unwrap();
            log.append(&[rows(0..7)], None, ok, ok).unwrap();
            let c = log.next_to_send().unwrap();
            first_version = WindowedLog::version_of(log.source(), c.id, c.rows);
        }
        // The first window was recorded before the crash; the open one was not closed.
        let recorded = first_version.clone();
        let done: DoneFn = Arc::new(move |_: &str, v: &BatchVersion| *v == recorded);
        let log = WindowedLog::open(dir.path(), source(3), 100, &done).unwrap();
        assert_eq!(segments(dir.path()).len(), 2);
        let left: Vec<(u64, BatchVersion)> = std::iter::from_fn(|| log.next_to_send())
            .map(|c| (c.rows, WindowedLog::version_of(log.source(), c.id, c.rows)))
            .collect();
        assert_eq!(left.iter().map(|l| l.0).collect::<Vec<_>>(), vec![3, 1]);
        assert_eq!(log.stats.pending_events.load(Ordering::Relaxed), 4);
        drop(log);
        // Same windows, same versions after another restart.
        let again = WindowedLog::open(dir.path(), source(3), 100, &never_done()).unwrap();
        let versions: Vec<BatchVersion> = std::iter::from_fn(|| again.next_to_send())
            .map(|c| WindowedLog::version_of(again.source(), c.id, c.rows))
            .collect();
        assert_eq!(
            versions,
            left.iter().map(|l| l.1.clone()).collect::<Vec<_>>()
        );
        again.acknowledged(&versions[0], true);
        assert_eq!(
            segments(dir.path()).len(),
            1,
            "a recorded window's segment is deleted"
        );
    }
}
