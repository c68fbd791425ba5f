//! Where batches come from. Each source runs as its own task and sends
//! [`Batch`]es into the agent's bounded queue; the engine never knows which
//! source a batch came from.
//!
//! - [`lake`]: watches folders for Parquet files (or folders of part files)
//!   and sends each complete, not yet evaluated version once.
//! - [`partitions`]: Hive `key=value` path segments → batch attributes.
//!
//! Event streams (HTTP ingest, Kafka) plug in beside `lake`: a stream source
//! closes a window, writes it as a Parquet file in the state folder, and sends
//! a `Batch` for it like any other.

pub mod lake;
pub mod partitions;

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
}
