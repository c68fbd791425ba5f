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

/// A dead-letter file is rotated (to `.1`) beyond this size.
pub const DEAD_LETTER_MAX_BYTES: u64 = 64 << 20;

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
    /// The event as received (UTF-8, lossy; cut at 64 KiB).
    pub event: String,
}

impl DeadLetter {
    /// A dead letter stamped now.
    pub fn new(source: &str, location: String, reason: String, raw: &[u8]) -> Self {
        const MAX: usize = 64 << 10;
        let raw = &raw[..raw.len().min(MAX)];
        Self {
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            source: source.to_string(),
            location,
            reason,
            event: String::from_utf8_lossy(raw).into_owned(),
        }
    }
}

/// The dead-letter file of one stream: NDJSON, appended and synced before
/// the input that held the bad records is acknowledged; rotated at
/// [`DEAD_LETTER_MAX_BYTES`] to `dead-letters.ndjson.1`.
pub struct DeadLetters {
    path: PathBuf,
    file: Mutex<Option<File>>,
}

impl DeadLetters {
    /// The dead-letter file at `path` (created on first use).
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            file: Mutex::new(None),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends and syncs these dead letters.
    pub fn write(&self, letters: &[DeadLetter]) -> Result<()> {
        if letters.is_empty() {
            return Ok(());
        }
        let io = |source| StreamError::Io {
            path: self.path.clone(),
            source,
        };
        let mut text = Vec::new();
        for l in letters {
            serde_json::to_writer(&mut text, l).map_err(|e| io(std::io::Error::other(e)))?;
            text.push(b'\n');
        }
        let mut guard = self
            .file
            .lock()
            .map_err(|_| io(std::io::Error::other("dead-letter lock poisoned")))?;
        if guard.is_none() {
            *guard = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)
                    .map_err(io)?,
            );
        }
        let size = guard
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map(|m| m.len())
            .unwrap_or(0);
        if size > DEAD_LETTER_MAX_BYTES {
            let mut rotated = self.path.clone().into_os_string();
            rotated.push(".1");
            std::fs::rename(&self.path, rotated).map_err(io)?;
            *guard = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)
                    .map_err(io)?,
            );
        }
        if let Some(f) = guard.as_mut() {
            f.write_all(&text)
                .and_then(|()| f.sync_data())
                .map_err(io)?;
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
    }
}
