//! Event streams, windowed into batches.
//!
//! A stream source turns events into Arrow rows of a fixed schema
//! ([`schema`]), assembles them into tumbling windows closed by row count
//! and/or time, and hands each closed window to the agent as a [`Batch`]
//! backed by a Parquet file in the state folder (a [`super::Batch`]) — so checks, profiles,
//! drift, reports, telemetry and webhooks treat a window exactly like a file.
//! The window's identity (its [`BatchVersion`], kind `window`) is what the
//! store's exactly-once record is keyed by.
//!
//! - [`config`]: `[[sources]]` in `driftwatch.toml`.
//! - [`schema`]: the event schema and JSON → Arrow without silent casts.
//! - [`wal`]: write-ahead-log segments (CRC-checked frames, fsynced).
//! - [`log`]: [`WindowedLog`], the durable windows of the HTTP and file
//!   sources: accepted events go to the WAL before they are acknowledged,
//!   and a window's segment is deleted only after its record is durable.
//! - [`http`]: decoding `POST /ingest/{dataset}` bodies (NDJSON, Arrow IPC).
//! - [`files`]: NDJSON files landing in a folder.
//! - [`kafka`]: a consumer-group member; Kafka itself is the durable log, so
//!   windows live in memory and offsets are committed after the record.
//!
//! Bad records are never dropped silently: each goes, with its reason and
//! where it came from, to the stream's dead-letter file
//! (`streams/{kind}-{dataset}/dead-letters.ndjson` in the state folder) and
//! is counted in `/status` and telemetry.

pub mod config;
pub mod files;
pub mod http;
pub mod kafka;
pub mod log;
pub mod schema;
pub mod wal;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use arrow::array::RecordBatch;
use serde::{Deserialize, Serialize};

pub use config::{SourceConfig, SourceKind, SourceSettings, WindowSpec};
pub use log::WindowedLog;
pub use schema::EventSchema;

use crate::report::BatchVersion;
use crate::rules::{CheckKind, RuleFile};

/// A dead-letter file is rotated (to `.1`) beyond this size; when `.1` is
/// still there (nobody has moved it away since), writes are refused instead.
pub const DEAD_LETTER_MAX_BYTES: u64 = 64 << 20;

/// Dead-letter bytes one input (a post, a chunk of an event file) may write.
/// Beyond it rejects are only counted and summarized by one last letter, so
/// a body of junk lines cannot turn into a dead-letter file many times its
/// size, nor into that much memory.
pub const DEAD_LETTER_BUDGET: usize = 1 << 20;

/// Dead-letter bytes an input may write per byte of it (plus 4 KiB), within
/// [`DEAD_LETTER_BUDGET`].
pub const DEAD_LETTER_AMPLIFICATION: usize = 4;

/// Bytes of an event's text kept in its dead letter (the rest is cut off
/// and the letter says how long the event was).
pub const DEAD_LETTER_EVENT_MAX: usize = 16 << 10;

/// Stream errors (set-up and I/O; bad events are dead letters, not errors).
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// A file or folder of the stream's state could not be used.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The write-ahead log failed.
    #[error(transparent)]
    Wal(#[from] wal::WalError),
    /// A window could not be written as Parquet.
    #[error("{}: cannot write the window: {message}", path.display())]
    Window {
        /// The Parquet file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The stream's schema cannot be used.
    #[error("{0}")]
    Schema(String),
    /// The first events would fix a schema wider than `max_columns`: the
    /// client's input, refused (400, or dead letters), and no schema is held.
    #[error(
        "the events would fix an inferred schema of {columns} columns, more than max_columns = {limit}; declare the schema in the rule file's `schema` check or raise `max_columns`"
    )]
    SchemaTooWide {
        /// Columns the inferred schema has.
        columns: usize,
        /// `max_columns`.
        limit: usize,
    },
    /// Decoded events would take far more write-ahead-log bytes than their
    /// input (a wide schema and sparse events): refused before anything is
    /// written (413 for a post, dead letters for file lines).
    #[error(
        "the events would take {bytes} bytes in the write-ahead log, more than the {limit} allowed for {input} bytes of input ({}× the input, at least {} bytes); send fewer events per post or declare a narrower schema",
        log::WAL_BYTES_PER_INPUT_BYTE,
        log::WAL_FLOOR_BYTES
    )]
    WalBudget {
        /// Estimated frame bytes.
        bytes: u64,
        /// Input bytes (the body, or the chunk's lines).
        input: u64,
        /// The budget for that input.
        limit: u64,
    },
    /// The Kafka client failed to start.
    #[error("kafka: {0}")]
    Kafka(String),
    /// The dead-letter file is full and its rotated copy has not been moved
    /// away: rotating again would delete dead letters nobody has read.
    #[error(
        "{}: the dead-letter files are full (`{}.1` is still there): read and move `{}.1` away to take more input",
        path.display(), path.display(), path.display()
    )]
    DeadLettersFull {
        /// The dead-letter file.
        path: PathBuf,
    },
}

/// A `Result` whose error is a [`StreamError`].
pub type Result<T, E = StreamError> = std::result::Result<T, E>;

/// What `/status` and telemetry show of a stream source.
#[derive(Debug, Default)]
pub struct StreamStats {
    /// Events accepted (durable, will be evaluated).
    pub accepted: AtomicU64,
    /// Events rejected (in the dead-letter file).
    pub rejected: AtomicU64,
    /// Windows closed.
    pub windows_closed: AtomicU64,
    /// Windows whose record is durable.
    pub windows_evaluated: AtomicU64,
    /// Events in the open window(s).
    pub open_events: AtomicU64,
    /// Events accepted and not yet recorded (open and closed windows).
    pub pending_events: AtomicU64,
    /// Posts refused with 429 because too many events were pending.
    pub throttled: AtomicU64,
    /// Kafka: messages behind the partitions' high watermarks (-1: unknown).
    pub lag: AtomicI64,
}

/// A stream source as `/status` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SourceStatus {
    /// `{kind}:{dataset}`.
    pub name: String,
    /// `http`, `kafka`, `ndjson_files`.
    pub kind: String,
    /// The dataset.
    pub dataset: String,
    /// Events accepted.
    pub accepted: u64,
    /// Events rejected (dead letters).
    pub rejected: u64,
    /// Windows closed.
    pub windows_closed: u64,
    /// Windows recorded.
    pub windows_evaluated: u64,
    /// Events in open windows.
    pub open_events: u64,
    /// Events accepted, not yet recorded.
    pub pending_events: u64,
    /// Posts refused with 429.
    pub throttled: u64,
    /// Kafka consumer lag (messages), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag: Option<i64>,
    /// The dead-letter file.
    pub dead_letters: String,
}

impl StreamStats {
    /// The `/status` entry.
    pub fn status(&self, source: &SourceConfig, dead_letters: &Path) -> SourceStatus {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let lag = self.lag.load(Ordering::Relaxed);
        SourceStatus {
            name: source.name.clone(),
            kind: source.kind().as_str().to_string(),
            dataset: source.dataset.clone(),
            accepted: get(&self.accepted),
            rejected: get(&self.rejected),
            windows_closed: get(&self.windows_closed),
            windows_evaluated: get(&self.windows_evaluated),
            open_events: get(&self.open_events),
            pending_events: get(&self.pending_events),
            throttled: get(&self.throttled),
            lag: (source.kind() == SourceKind::Kafka && lag >= 0).then_some(lag),
            dead_letters: dead_letters.display().to_string(),
        }
    }
}

/// The folder of a stream's state: `{state}/streams/{kind}-{dataset}`.
pub fn stream_dir(state: &Path, source: &SourceConfig) -> PathBuf {
    state
        .join("streams")
        .join(format!("{}-{}", source.kind().as_str(), source.dataset))
}

/// One rejected event, as written to the dead-letter file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeadLetter {
    /// When it was rejected (RFC 3339).
    pub at: String,
    /// The stream (`http:orders`).
    pub source: String,
    /// Where in the input: `line 3 of the post`, `events.ndjson:17`, `clicks/2@1234`.
    pub location: String,
    /// Why it does not fit.
    pub reason: String,
    /// The event as received (UTF-8, lossy; cut at [`DEAD_LETTER_EVENT_MAX`] bytes).
    pub event: String,
    /// The event's size in bytes when `event` was cut short.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_bytes: Option<u64>,
}

impl DeadLetter {
    /// A dead letter stamped now.
    pub fn new(source: &str, location: String, reason: String, raw: &[u8]) -> Self {
        let cut = raw.len() > DEAD_LETTER_EVENT_MAX;
        let kept = &raw[..raw.len().min(DEAD_LETTER_EVENT_MAX)];
        Self {
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            source: source.to_string(),
            location,
            reason,
            event: String::from_utf8_lossy(kept).into_owned(),
            event_bytes: cut.then_some(raw.len() as u64),
        }
    }

    /// Appends this letter as one NDJSON line.
    fn write_line(&self, out: &mut Vec<u8>) {
        // Serializing plain strings cannot fail; keep the line whole anyway.
        if serde_json::to_writer(&mut *out, self).is_ok() {
            out.push(b'\n');
        }
    }
}

/// The rejects of one input, as dead-letter text within
/// [`DEAD_LETTER_BUDGET`]: what the input's answer and the dead-letter
/// file need, never one owned letter per rejected event.
#[derive(Debug)]
pub struct Rejects {
    source: String,
    budget: usize,
    /// Bytes of input seen (accepted and rejected events).
    input: usize,
    text: Vec<u8>,
    count: u64,
    omitted: u64,
    omitted_span: Option<(String, String)>,
    first: Vec<(String, String)>,
}

impl Rejects {
    /// Rejections listed by [`Rejects::first`].
    pub const FIRST: usize = 10;

    /// No rejects yet, for the stream `source`, within `budget` bytes of letters.
    pub fn new(source: &str, budget: usize) -> Self {
        Self {
            source: source.to_string(),
            budget,
            input: 0,
            text: Vec::new(),
            count: 0,
            omitted: 0,
            omitted_span: None,
            first: Vec::new(),
        }
    }

    /// Counts an accepted event's bytes as input (the budget grows with it).
    pub fn saw(&mut self, bytes: usize) {
        self.input += bytes + 1;
    }

    /// Letter bytes this input may write so far: [`DEAD_LETTER_AMPLIFICATION`]
    /// times its bytes plus 4 KiB, at most the budget given — so small
    /// posts of junk cannot fill the dead-letter files many times faster
    /// than they arrive.
    fn allowed(&self) -> usize {
        self.budget
            .min(DEAD_LETTER_AMPLIFICATION.saturating_mul(self.input) + 4096)
    }

    /// Rejects one event.
    pub fn push(&mut self, location: String, reason: String, raw: &[u8]) {
        self.count += 1;
        self.input += raw.len() + 1;
        if self.first.len() < Self::FIRST {
            self.first.push((location.clone(), reason.clone()));
        }
        if self.text.len() >= self.allowed() {
            self.omitted += 1;
            match &mut self.omitted_span {
                Some((_, last)) => *last = location,
                None => self.omitted_span = Some((location.clone(), location)),
            }
            return;
        }
        DeadLetter::new(&self.source, location, reason, raw).write_line(&mut self.text);
    }

    /// Events rejected.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Whether nothing was rejected.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The first [`Rejects::FIRST`] rejections: (location, reason).
    pub fn first(&self) -> &[(String, String)] {
        &self.first
    }

    /// The dead-letter text: every letter within the budget, then one
    /// letter saying how many more were rejected and not stored.
    pub fn text(&self) -> Vec<u8> {
        let mut text = self.text.clone();
        if let Some((from, to)) = &self.omitted_span {
            let location = if from == to {
                from.clone()
            } else {
                format!("{from} to {to}")
            };
            DeadLetter::new(
                &self.source,
                location,
                format!(
                    "{} more rejected events of this input are not stored here: an input may write {} bytes of dead letters (4 per byte of input plus 4 KiB, at most {}; the first {} rejections are above; the answer or the log counts them all)",
                    self.omitted,
                    self.allowed(),
                    self.budget,
                    self.count - self.omitted
                ),
                b"",
            )
            .write_line(&mut text);
        }
        text
    }
}

/// The dead-letter file of one stream: NDJSON, appended and synced before
/// the input that held the bad records is acknowledged; rotated at
/// [`DEAD_LETTER_MAX_BYTES`] to `dead-letters.ndjson.1`.
pub struct DeadLetters {
    path: PathBuf,
    file: Mutex<Option<File>>,
    max_bytes: u64,
}

impl DeadLetters {
    /// The dead-letter file at `path` (created on first use).
    pub fn new(path: PathBuf) -> Self {
        Self::with_limit(path, DEAD_LETTER_MAX_BYTES)
    }

    /// Like [`DeadLetters::new`], rotated beyond `max_bytes` instead of
    /// [`DEAD_LETTER_MAX_BYTES`].
    pub fn with_limit(path: PathBuf, max_bytes: u64) -> Self {
        Self {
            path,
            file: Mutex::new(None),
            max_bytes,
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends and syncs these dead letters.
    pub fn write(&self, letters: &[DeadLetter]) -> Result<()> {
        let mut text = Vec::new();
        for l in letters {
            l.write_line(&mut text);
        }
        self.write_text(&text)
    }

    /// Appends and syncs dead-letter text (whole NDJSON lines). The file is
    /// rotated to `.1` first when the text would take it past
    /// [`DEAD_LETTER_MAX_BYTES`]; when `.1` is still there the write is
    /// refused ([`StreamError::DeadLettersFull`]) rather than deleting
    /// letters nobody has read.
    pub fn write_text(&self, text: &[u8]) -> Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        let io = |source| StreamError::Io {
            path: self.path.clone(),
            source,
        };
        let mut guard = self
            .file
            .lock()
            .map_err(|_| io(std::io::Error::other("dead-letter lock poisoned")))?;
        let open = |path: &Path| OpenOptions::new().create(true).append(true).open(path);
        if guard.is_none() {
            *guard = Some(open(&self.path).map_err(io)?);
        }
        let mut size = match guard.as_ref() {
            Some(f) => f.metadata().map_err(io)?.len(),
            None => 0,
        };
        if size > 0 && size + text.len() as u64 > self.max_bytes {
            let mut rotated = self.path.clone().into_os_string();
            rotated.push(".1");
            let rotated = PathBuf::from(rotated);
            if rotated.exists() {
                return Err(StreamError::DeadLettersFull {
                    path: self.path.clone(),
                });
            }
            std::fs::rename(&self.path, &rotated).map_err(io)?;
            *guard = Some(open(&self.path).map_err(io)?);
            size = 0;
        }
        if let Some(f) = guard.as_mut() {
            let written = f.write_all(text).and_then(|()| f.sync_data());
            if let Err(e) = written {
                // A short write must not glue the next letter to half a line:
                // cut the file back to where this write began.
                let _ = f.set_len(size).and_then(|()| f.sync_data());
                return Err(io(e));
            }
        }
        Ok(())
    }
}

/// The schema a rule file's `schema` check declares, if it has one.
pub fn rule_schema(rule_file: &RuleFile) -> Option<std::result::Result<EventSchema, String>> {
    rule_file.checks.iter().find_map(|c| match &c.kind {
        CheckKind::Schema { columns, .. } => Some(EventSchema::from_rule(columns)),
        _ => None,
    })
}

/// Writes record batches as a Parquet file (via a temporary name, so a
/// reader never sees half a file). Returns the rows written.
pub fn write_parquet(
    path: &Path,
    schema: &arrow::datatypes::SchemaRef,
    batches: impl Iterator<Item = Result<RecordBatch>>,
) -> Result<u64> {
    let fail = |message: String| StreamError::Window {
        path: path.to_path_buf(),
        message,
    };
    let tmp = path.with_extension("parquet.tmp");
    let file = File::create(&tmp).map_err(|source| StreamError::Io {
        path: tmp.clone(),
        source,
    })?;
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .build();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema.clone(), Some(props))
        .map_err(|e| fail(e.to_string()))?;
    let mut rows = 0;
    for b in batches {
        let b = b?;
        rows += b.num_rows() as u64;
        writer.write(&b).map_err(|e| fail(e.to_string()))?;
    }
    writer.close().map_err(|e| fail(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|source| StreamError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(rows)
}

/// The version of a window: kind `window`, path `{kind}/{dataset}/{id}`,
/// `size` = `key_events` (part of the store's key: the WAL sources pass the
/// window's events, Kafka passes 0 so a window rebuilt from the same first
/// offset has the same key), `parts` = the events in it.
pub fn window_version(
    kind: SourceKind,
    dataset: &str,
    id: &str,
    key_events: u64,
    events: u64,
) -> BatchVersion {
    BatchVersion {
        kind: "window".to_string(),
        path: format!("{}/{dataset}/{id}", kind.as_str()),
        size: key_events,
        modified_ns: 0,
        parts: events,
        table: None,
        etag: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(n: usize) -> DeadLetter {
        DeadLetter::new(
            "http:t",
            format!("line {n}"),
            "bad".to_string(),
            b"{\"x\": 1}",
        )
    }

    #[test]
    fn issue_15_rotation_refuses_instead_of_deleting_unread_dead_letters() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead-letters.ndjson");
        let one = {
            let mut t = Vec::new();
            letter(0).write_line(&mut t);
            t.len() as u64
        };
        let dead = DeadLetters::with_limit(path.clone(), 3 * one);
        for n in 0..3 {
            dead.write(&[letter(n)]).unwrap();
        }
        // The fourth rotates the first three to `.1`.
        dead.write(&[letter(3)]).unwrap();
        let rotated = dir.path().join("dead-letters.ndjson.1");
        let read = |p: &Path| std::fs::read_to_string(p).unwrap().lines().count();
        assert_eq!((read(&rotated), read(&path)), (3, 1));
        dead.write(&[letter(4)]).unwrap();
        dead.write(&[letter(5)]).unwrap();
        // Full again, and `.1` is unread: refused, nothing deleted.
        let e = dead.write(&[letter(6)]).unwrap_err();
        assert!(matches!(e, StreamError::DeadLettersFull { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            format!(
                "{p}: the dead-letter files are full (`{p}.1` is still there): read and move `{p}.1` away to take more input",
                p = path.display()
            )
        );
        assert_eq!((read(&rotated), read(&path)), (3, 3));
        // Once the operator moves `.1` away, writing goes on.
        std::fs::rename(&rotated, dir.path().join("read-already")).unwrap();
        dead.write(&[letter(6)]).unwrap();
        assert_eq!((read(&rotated), read(&path)), (3, 1));
    }

    #[test]
    fn issue_15_rejects_keep_their_budget_and_say_how_many_more_were_not_stored() {
        let mut r = Rejects::new("http:t", 1000);
        for n in 1..=10_000u64 {
            r.push(format!("line {n}"), "not JSON".to_string(), b"x");
        }
        assert_eq!(r.count(), 10_000);
        assert_eq!(r.first().len(), Rejects::FIRST);
        let text = String::from_utf8(r.text()).unwrap();
        let letters: Vec<DeadLetter> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let kept = letters.len() - 1;
        assert!(text.len() < 1000 + 2 * 200, "{} bytes", text.len());
        let last = letters.last().unwrap();
        assert_eq!(last.location, format!("line {} to line 10000", kept + 1));
        assert_eq!(
            last.reason,
            format!(
                "{} more rejected events of this input are not stored here: an input may write 1000 bytes of dead letters (4 per byte of input plus 4 KiB, at most 1000; the first {kept} rejections are above; the answer or the log counts them all)",
                10_000 - kept
            )
        );
        // A small input writes at most 4 bytes of letters per byte (+ 4 KiB).
        let mut small = Rejects::new("http:t", DEAD_LETTER_BUDGET);
        for n in 1..=7_000u64 {
            small.push(
                format!("line {n}"),
                "not JSON: expected value at line 1 column 1".to_string(),
                b"x",
            );
        }
        let text = small.text();
        assert!(
            text.len() <= 4 * 14_000 + 4096 + 1024,
            "{} bytes for a 14,000-byte input",
            text.len()
        );
        // A long event is cut, and says how long it was.
        let long = DeadLetter::new(
            "s",
            "l".into(),
            "r".into(),
            &vec![b'a'; DEAD_LETTER_EVENT_MAX + 5],
        );
        assert_eq!(long.event.len(), DEAD_LETTER_EVENT_MAX);
        assert_eq!(long.event_bytes, Some(DEAD_LETTER_EVENT_MAX as u64 + 5));
    }
}
