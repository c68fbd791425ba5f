//! Where batches come from. Each source runs as its own task and sends
//! [`Batch`]es into the agent's bounded queue; the engine never knows which
//! source a batch came from.
//!
//! - [`lake`]: watches folders for Parquet files (or folders of part files)
//!   and sends each complete, not yet evaluated version once.
//! - [`partitions`]: Hive `key=value` path segments → batch attributes.
//! - [`table`]: Delta Lake tables: each new table version's added data
//!   files are one batch, sent in version order; versions that add no data
//!   are sent to be recorded as skipped.
//!
//! - [`stream`]: event streams (HTTP ingest, NDJSON files, Kafka) windowed
//!   into batches: a closed window is written as a Parquet file in the state
//!   folder and sent as a `Batch` like any other, with an [`Ack`] so the
//!   source learns when it is recorded (and may drop its copy or commit).

pub mod lake;
pub mod partitions;
pub mod stream;
pub mod table;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use crate::report::BatchVersion;

/// One batch to evaluate, with its identity.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The dataset (rule file) to evaluate it for.
    pub dataset: String,
    /// A Parquet file, or a folder of part files.
    pub path: PathBuf,
    /// The version; the agent evaluates each (dataset, version) once.
    pub version: BatchVersion,
    /// The path relative to its watched folder (what `match` globs saw).
    pub relative: PathBuf,
    /// The watched folder it is in.
    pub root: PathBuf,
    /// Hive partition values from `relative`.
    pub partitions: BTreeMap<String, String>,
    /// When the source first saw this version (for latency figures).
    pub discovered: Instant,
    /// Told once the batch's record is durable (or could not be made).
    pub ack: Option<Ack>,
    /// A table version's data files (`version.table` names the version);
    /// `None` for lake files and stream windows.
    pub table: Option<table::TableBatch>,
}

/// Tells a stream source whether a window it sent is recorded: `true` once
/// the store holds its record (new, or recorded before), `false` when it
/// could not be (the source sends it again later).
#[derive(Clone)]
pub struct Ack(pub tokio::sync::mpsc::UnboundedSender<(BatchVersion, bool)>);

impl Ack {
    /// Sends the outcome (a source that stopped listening is not an error).
    pub fn send(&self, version: &BatchVersion, recorded: bool) {
        let _ = self.0.send((version.clone(), recorded));
    }
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ack")
    }
}
