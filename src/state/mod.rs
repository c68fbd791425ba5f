//! The agent's durable state: which batch versions were evaluated, their
//! reports, per-dataset counters, and the profiles behind rolling references.
//!
//! One [redb](https://docs.rs/redb) file (`state.redb` in the state folder):
//! pure Rust, ACID, crash-safe, and locked by one process at a time — which is
//! also how `driftwatch status` knows an agent is running. Every evaluation is
//! recorded in **one** write transaction (version → status, report, counters,
//! rolling profile), committed durably *before* it is written to the results
//! log, so after `kill -9` either nothing of it happened (the batch is
//! evaluated again) or all of it did (the results log catches up from the
//! store; see [`Store::reports_after`]).
//!
//! The webhook outbox and its policy state live here too ([`outbox`]), and
//! are written in the same transaction as the batch that fires them.
//!
//! Reports are stored as the JSON text of the results-log line, so what the
//! store returns is byte-for-byte what the log holds.

mod outbox;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::profile::DatasetProfile;
use crate::report::BatchVersion;

pub use outbox::{
    AttemptRecord, Delivery, DeliveryCounts, DeliveryState, PolicyOutcome, RetryResult, WebhookStep,
};

/// State store errors. `Busy` is the user's (another agent owns the folder);
/// the rest are I/O or a damaged store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Another process holds the store.
    #[error(
        "{}: the state store is in use by a running agent (ask it with `driftwatch status --listen ADDR`)",
        path.display()
    )]
    Busy {
        /// The store file.
        path: PathBuf,
    },
    /// The state folder or store could not be created or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// redb failed.
    #[error("state store {}: {source}", path.display())]
    Store {
        /// The store file.
        path: PathBuf,
        /// The redb error.
        source: Box<redb::Error>,
    },
    /// A stored value could not be decoded (a damaged or newer store).
    #[error("state store {}: cannot decode {what}: {reason}", path.display())]
    Decode {
        /// The store file.
        path: PathBuf,
        /// What was being read.
        what: String,
        /// One-line reason.
        reason: String,
    },
}

/// A `Result` whose error is a [`StateError`].
pub type Result<T, E = StateError> = std::result::Result<T, E>;

/// Page cache of the store.
pub const STORE_CACHE_BYTES: usize = 16 << 20;

/// The store file's name inside the state folder.
pub const STORE_FILE: &str = "state.redb";

/// version key → [`VersionRecord`] (JSON).
const VERSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("versions");
/// seq → results-log line (JSON text of the report).
const REPORTS: TableDefinition<u64, &str> = TableDefinition::new("reports");
/// `dataset\0{seq:020}` → () : each dataset's stored reports, oldest first.
const DATASET_REPORTS: TableDefinition<&str, ()> = TableDefinition::new("dataset_reports");
/// dataset → [`DatasetCounters`] (JSON).
const DATASETS: TableDefinition<&str, &[u8]> = TableDefinition::new("datasets");
/// `dataset\0{seq:020}` → profile JSON: the rolling reference's batches.
const ROLLING: TableDefinition<&str, &[u8]> = TableDefinition::new("rolling");
/// `dataset\0check` → the `anomaly` check's series (JSON, [`crate::anomaly::Series`]).
const ANOMALY: TableDefinition<&str, &[u8]> = TableDefinition::new("anomaly");
/// dataset → its latest evaluated batch's columns and types (JSON), to tell
/// the next batch's schema changes.
const SCHEMAS: TableDefinition<&str, &[u8]> = TableDefinition::new("schemas");
/// name → number (`next_seq`).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// dataset → the profile of its latest profiled batch (JSON), for reports.
const LATEST_PROFILES: TableDefinition<&str, &[u8]> = TableDefinition::new("latest_profiles");
/// `dataset\0table location` → the newest table version recorded for it
/// (evaluated or skipped): where a restarted agent goes on from.
const TABLE_CURSORS: TableDefinition<&str, u64> = TableDefinition::new("table_cursors");

/// How one batch version ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Every error-severity check passed and no dataset drift.
    Passed,
    /// A check (or drift) with severity error failed.
    Failed,
    /// The batch could not be evaluated (corrupt, unreadable).
    Error,
    /// A table version that added no data (optimize, vacuum, a delete):
    /// recorded so it is accounted for, not evaluated.
    Skipped,
}

/// What the store keeps per batch version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    /// The report's position in the results log.
    pub seq: u64,
    /// The dataset it was evaluated for.
    pub dataset: String,
    /// How it ended.
    pub outcome: Outcome,
    /// When (Unix seconds).
    pub evaluated_at: i64,
}

/// Per-dataset totals since the store was created.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DatasetCounters {
    /// Batches evaluated (any outcome).
    pub evaluated: u64,
    /// Batches that failed.
    pub failed: u64,
    /// Batches that could not be evaluated.
    pub errored: u64,
    /// Table versions recorded as skipped (they added no data); counted
    /// in `evaluated` too.
    #[serde(default)]
    pub skipped: u64,
    /// Rows evaluated.
    pub rows: u64,
    /// The latest report's seq.
    pub last_seq: u64,
    /// When the latest batch was evaluated (Unix seconds).
    pub last_evaluated_at: i64,
}

/// One evaluation to record.
#[derive(Debug, Clone)]
pub struct Evaluated<'a> {
    /// The batch version.
    pub version: &'a BatchVersion,
    /// The dataset.
    pub dataset: &'a str,
    /// How it ended.
    pub outcome: Outcome,
    /// Rows in the batch.
    pub rows: u64,
    /// When (Unix seconds).
    pub evaluated_at: i64,
    /// The batch's profile to add to the dataset's rolling reference, and how
    /// many batches that reference keeps.
    pub rolling: Option<(&'a DatasetProfile, usize)>,
    /// The webhook policies to apply to this batch (in the same transaction).
    pub webhooks: Option<WebhookStep<'a>>,
    /// The batch's profile, kept as the dataset's latest (for reports).
    pub profile: Option<&'a DatasetProfile>,
    /// The `anomaly` series this batch extended (replacing the stored ones).
    pub anomaly: &'a [crate::anomaly::history::Updated],
    /// The batch's columns and types, kept as the dataset's latest schema.
    pub schema: Option<&'a [(String, String)]>,
}

/// What [`Store::record_evaluation`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// The report's seq.
    pub seq: u64,
    /// False when the version was recorded before (nothing changed).
    pub new: bool,
    /// What each webhook's policy made of the batch.
    pub webhooks: Vec<PolicyOutcome>,
}

/// Limits on what the store keeps.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Reports kept per dataset.
    pub reports_per_dataset: usize,
}

/// The durable state store.
pub struct Store {
    /// `None` only between a failed write and a successful reopen.
    db: std::sync::RwLock<Option<Arc<Database>>>,
    path: PathBuf,
}

/// The key of a batch version for one dataset. A table version is
/// (dataset, format, table location, table version): its size and time
/// say nothing more, and a vacuum that later removes its files does not
/// make it a new version.
pub fn version_key(dataset: &str, version: &BatchVersion) -> String {
    if let Some(table) = &version.table {
        return format!(
            "{dataset}\0{}\0{}\0v{}",
            table.format, table.location, table.version
        );
    }
    let key = format!(
        "{dataset}\0{}\0{}\0{}\0{}",
        version.kind, version.path, version.size, version.modified_ns
    );
    // Local versions have no ETag: their keys are as they always were.
    match &version.etag {
        Some(etag) => format!("{key}\0{etag}"),
        None => key,
    }
}

fn cursor_key(dataset: &str, location: &str) -> String {
    format!("{dataset}\0{location}")
}

fn seq_key(dataset: &str, seq: u64) -> String {
    format!("{dataset}\0{seq:020}")
}

impl Store {
    /// Opens (or creates) the store in `dir`, taking its lock.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(STORE_FILE);
        let db = Self::open_file(&path)?;
        let store = Self {
            db: std::sync::RwLock::new(Some(Arc::new(db))),
            path,
        };
        // Create the tables so readers never meet a missing one.
        store.write(|txn| {
            txn.open_table(VERSIONS)?;
            txn.open_table(REPORTS)?;
            txn.open_table(DATASET_REPORTS)?;
            txn.open_table(DATASETS)?;
            txn.open_table(ROLLING)?;
            txn.open_table(META)?;
            txn.open_table(LATEST_PROFILES)?;
            txn.open_table(TABLE_CURSORS)?;
            txn.open_table(ANOMALY)?;
            txn.open_table(SCHEMAS)?;
            txn.open_table(outbox::DELIVERIES)?;
            txn.open_table(outbox::DUE)?;
            txn.open_table(outbox::POLICY)?;
            Ok(())
        })?;
        Ok(store)
    }

    fn open_file(path: &Path) -> Result<Database> {
        // redb caches up to 1 GiB by default; a sidecar's store is read a
        // little per batch, so a small cache keeps memory flat as it grows.
        match redb::Builder::new()
            .set_cache_size(STORE_CACHE_BYTES)
            .create(path)
        {
            Ok(db) => Ok(db),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(StateError::Busy {
                path: path.to_path_buf(),
            }),
            Err(e) => Err(StateError::Store {
                path: path.to_path_buf(),
                source: Box::new(e.into()),
            }),
        }
    }

    /// The open database, reopening it first after a failed write.
    ///
    /// Why: after an I/O error in a commit (a full disk, say) redb refuses
    /// every later transaction until the database is closed and opened
    /// again (which also repairs it); without this one `ENOSPC` would wedge
    /// the agent until a restart.
    fn db(&self) -> Result<Arc<Database>> {
        let poisoned = || StateError::Io {
            path: self.path.clone(),
            source: std::io::Error::other("state store lock poisoned"),
        };
        if let Some(db) = self.db.read().map_err(|_| poisoned())?.as_ref() {
            return Ok(db.clone());
        }
        let mut slot = self.db.write().map_err(|_| poisoned())?;
        if let Some(db) = slot.as_ref() {
            return Ok(db.clone());
        }
        let db = Arc::new(Self::open_file(&self.path)?);
        tracing::info!(store = %self.path.display(), "state store reopened after a failed write");
        *slot = Some(db.clone());
        Ok(db)
    }

    /// Drops the database after an I/O failure, so the next use reopens it
    /// (once transactions still holding the old one are gone).
    fn close_after(&self, e: &redb::Error) {
        let io = matches!(
            e,
            redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::DatabaseClosed
        );
        if io && let Ok(mut slot) = self.db.write() {
            *slot = None;
        }
    }

    /// Whether another process holds the store in `dir` (an agent is running).
    pub fn is_busy(dir: &Path) -> bool {
        matches!(Self::open(dir), Err(StateError::Busy { .. }))
    }

    fn err(&self, e: impl Into<redb::Error>) -> StateError {
        StateError::Store {
            path: self.path.clone(),
            source: Box::new(e.into()),
        }
    }

    fn decode<T: for<'de> Deserialize<'de>>(&self, what: &str, bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes).map_err(|e| StateError::Decode {
            path: self.path.clone(),
            what: what.to_string(),
            reason: e.to_string(),
        })
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> std::result::Result<T, redb::Error>,
    ) -> Result<T> {
        let db = self.db()?;
        let done = db.begin_write().map_err(redb::Error::from).and_then(|txn| {
            let out = f(&txn)?;
            txn.commit()?;
            Ok(out)
        });
        drop(db);
        done.map_err(|e| {
            self.close_after(&e);
            self.err(e)
        })
    }

    /// The record of a batch version, if it was evaluated.
    pub fn version(&self, dataset: &str, version: &BatchVersion) -> Result<Option<VersionRecord>> {
        let txn = self.db()?.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(VERSIONS).map_err(|e| self.err(e))?;
        let key = version_key(dataset, version);
        match table.get(key.as_str()).map_err(|e| self.err(e))? {
            Some(v) => Ok(Some(self.decode("a version record", v.value())?)),
            None => Ok(None),
        }
    }

    /// The newest version of the table at `location` recorded for
    /// `dataset` (evaluated or skipped), if any.
    pub fn table_cursor(&self, dataset: &str, location: &str) -> Result<Option<u64>> {
        let txn = self.db()?.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(TABLE_CURSORS).map_err(|e| self.err(e))?;
        Ok(table
            .get(cursor_key(dataset, location).as_str())
            .map_err(|e| self.err(e))?
            .map(|v| v.value()))
    }

    /// Every table's cursor: (dataset, location, newest recorded version).
    pub fn table_cursors(&self) -> Result<Vec<(String, String, u64)>> {
        let txn = self.db()?.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(TABLE_CURSORS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| self.err(e))? {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            let key = k.value().to_string();
            if let Some((dataset, location)) = key.split_once('\0') {
                out.push((dataset.to_string(), location.to_string(), v.value()));
            }
        }
        Ok(out)
    }

    /// The seq the next recorded report will get.
    pub fn next_seq(&self) -> Result<u64> {
        let txn = self.db()?.begin_read().map_err(|e| self.err(e))?;
        let meta = txn.open_table(META).map_err(|e| self.err(e))?;
        Ok(meta
            .get("next_seq")
            .map_err(|e| self.err(e))?
            .map(|v| v.value())
            .unwrap_or(1))
    }

    /// Records an evaluation durably and returns its seq. `line` renders the
    /// results-log line for that seq. Recording a version that is already
    /// recorded changes nothing and returns the existing seq with `false`.
    pub fn record(
        &self,
        evaluated: &Evaluated<'_>,
        retention: Retention,
        line: impl FnOnce(u64) -> String,
    ) -> Result<(u64, bool)> {
        self.record_evaluation(evaluated, retention, line)
            .map(|r| (r.seq, r.new))
    }

    /// [`Store::record`], also applying the webhook policies of
    /// `evaluated.webhooks` in the same transaction and saying what they did.
    pub fn record_evaluation(
        &self,
        evaluated: &Evaluated<'_>,
        retention: Retention,
        line: impl FnOnce(u64) -> String,
    ) -> Result<Recorded> {
        let mut line = Some(line);
        let mut recorded =
            self.record_evaluations(std::slice::from_ref(evaluated), retention, |_, seq| {
                line.take().map(|f| f(seq)).unwrap_or_default()
            })?;
        recorded.pop().ok_or_else(|| StateError::Io {
            path: self.path.clone(),
            source: std::io::Error::other("internal: an evaluation was not recorded"),
        })
    }

    /// Records several evaluations in **one** write transaction — one
    /// durable commit (one fsync) for the group — each exactly as
    /// [`Store::record_evaluation`] would, in order: seqs are consecutive in
    /// `evaluated`'s order, and `line(i, seq)` renders item `i`'s line.
    /// All or nothing: when the transaction fails, none is recorded.
    ///
    /// Why: on a disk where a sync takes milliseconds, one commit per batch
    /// caps the agent at a few hundred batches a second whatever the CPU;
    /// grouping the evaluations that finish while a commit is under way
    /// (see `agent::recorder`) amortises it without weakening the record.
    pub fn record_evaluations(
        &self,
        evaluated: &[Evaluated<'_>],
        retention: Retention,
        mut line: impl FnMut(usize, u64) -> String,
    ) -> Result<Vec<Recorded>> {
        let mut profile_json = Vec::with_capacity(evaluated.len());
        for e in evaluated {
            profile_json.push(match e.rolling {
                Some((profile, _)) => {
                    Some(serde_json::to_vec(profile).map_err(|e| StateError::Decode {
                        path: self.path.clone(),
                        what: "a profile".to_string(),
                        reason: e.to_string(),
                    })?)
                }
                None => None,
            });
        }
        self.write(|txn| {
            let mut out = Vec::with_capacity(evaluated.len());
            for (i, (e, json)) in evaluated.iter().zip(&profile_json).enumerate() {
                out.push(
                    self.apply_evaluation(txn, e, json.as_deref(), retention, |seq| line(i, seq))?,
                );
            }
            Ok(out)
        })
    }

    /// One evaluation's writes inside `txn` (see [`Store::record_evaluation`]).
    fn apply_evaluation(
        &self,
        txn: &redb::WriteTransaction,
        evaluated: &Evaluated<'_>,
        profile_json: Option<&[u8]>,
        retention: Retention,
        line: impl FnOnce(u64) -> String,
    ) -> std::result::Result<Recorded, redb::Error> {
        let key = version_key(evaluated.dataset, evaluated.version);
        let path = self.path.clone();
        let decode_err = |what: &str, e: serde_json::Error| {
            redb::Error::Io(std::io::Error::other(format!(
                "{}: cannot decode {what}: {e}",
                path.display()
            )))
        };
        let mut versions = txn.open_table(VERSIONS)?;
        if let Some(existing) = versions.get(key.as_str())? {
            let record: VersionRecord = serde_json::from_slice(existing.value())
                .map_err(|e| decode_err("a version record", e))?;
            return Ok(Recorded {
                seq: record.seq,
                new: false,
                webhooks: Vec::new(),
            });
        }
        let mut meta = txn.open_table(META)?;
        let seq = meta.get("next_seq")?.map(|v| v.value()).unwrap_or(1);
        meta.insert("next_seq", seq + 1)?;
        let record = VersionRecord {
            seq,
            dataset: evaluated.dataset.to_string(),
            outcome: evaluated.outcome,
            evaluated_at: evaluated.evaluated_at,
        };
        let bytes = serde_json::to_vec(&record).map_err(|e| decode_err("a version record", e))?;
        versions.insert(key.as_str(), bytes.as_slice())?;

        let mut reports = txn.open_table(REPORTS)?;
        let text = line(seq);
        reports.insert(seq, text.as_str())?;
        let mut index = txn.open_table(DATASET_REPORTS)?;
        index.insert(seq_key(evaluated.dataset, seq).as_str(), ())?;
        // Keep the newest `reports_per_dataset` reports of this dataset.
        let prefix = format!("{}\0", evaluated.dataset);
        let end = format!("{}\u{1}", evaluated.dataset);
        let keys: Vec<String> = index
            .range(prefix.as_str()..end.as_str())?
            .map(|entry| entry.map(|(k, _)| k.value().to_string()))
            .collect::<std::result::Result<_, _>>()?;
        if keys.len() > retention.reports_per_dataset {
            for old in &keys[..keys.len() - retention.reports_per_dataset] {
                index.remove(old.as_str())?;
                if let Some(old_seq) = old.rsplit('\0').next().and_then(|s| s.parse::<u64>().ok()) {
                    reports.remove(old_seq)?;
                }
            }
        }

        let mut datasets = txn.open_table(DATASETS)?;
        let mut counters: DatasetCounters = match datasets.get(evaluated.dataset)? {
            Some(v) => {
                serde_json::from_slice(v.value()).map_err(|e| decode_err("dataset counters", e))?
            }
            None => DatasetCounters::default(),
        };
        counters.evaluated += 1;
        match evaluated.outcome {
            Outcome::Passed => {}
            Outcome::Failed => counters.failed += 1,
            Outcome::Error => counters.errored += 1,
            Outcome::Skipped => counters.skipped += 1,
        }
        counters.rows += evaluated.rows;
        counters.last_seq = seq;
        counters.last_evaluated_at = evaluated.evaluated_at;
        let bytes = serde_json::to_vec(&counters).map_err(|e| decode_err("counters", e))?;
        datasets.insert(evaluated.dataset, bytes.as_slice())?;

        if let (Some((_, capacity)), Some(json)) = (evaluated.rolling, profile_json) {
            let mut rolling = txn.open_table(ROLLING)?;
            rolling.insert(seq_key(evaluated.dataset, seq).as_str(), json)?;
            let keys: Vec<String> = rolling
                .range(prefix.as_str()..end.as_str())?
                .map(|entry| entry.map(|(k, _)| k.value().to_string()))
                .collect::<std::result::Result<_, _>>()?;
            if keys.len() > capacity {
                for old in &keys[..keys.len() - capacity] {
                    rolling.remove(old.as_str())?;
                }
            }
        }
        if let Some(table) = &evaluated.version.table {
            let mut cursors = txn.open_table(TABLE_CURSORS)?;
            let key = cursor_key(evaluated.dataset, &table.location);
            let newest = cursors.get(key.as_str())?.map(|v| v.value());
            if newest.is_none_or(|n| n < table.version) {
                cursors.insert(key.as_str(), table.version)?;
            }
        }
        if let Some(schema) = evaluated.schema {
            let json = serde_json::to_vec(schema).map_err(|e| decode_err("a schema", e))?;
            txn.open_table(SCHEMAS)?
                .insert(evaluated.dataset, json.as_slice())?;
        }
        if !evaluated.anomaly.is_empty() {
            let mut table = txn.open_table(ANOMALY)?;
            for updated in evaluated.anomaly {
                let json = serde_json::to_vec(&updated.series)
                    .map_err(|e| decode_err("an anomaly series", e))?;
                let key = format!("{}\0{}", updated.dataset, updated.check);
                table.insert(key.as_str(), json.as_slice())?;
            }
        }
        if let Some(profile) = evaluated.profile {
            let json = serde_json::to_vec(profile).map_err(|e| decode_err("a profile", e))?;
            txn.open_table(LATEST_PROFILES)?
                .insert(evaluated.dataset, json.as_slice())?;
        }
        let webhooks = match &evaluated.webhooks {
            Some(step) => outbox::apply(txn, step, seq)?,
            None => Vec::new(),
        };
        Ok(Recorded {
            seq,
            new: true,
            webhooks,
        })
    }

    /// The profiles of a dataset's rolling reference, oldest first (at most `limit`, the newest).
    pub fn rolling_profiles(&self, dataset: &str, limit: usize) -> Result<Vec<DatasetProfile>> {
        let txn = self.db()?.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(ROLLING).map_err(|e| self.err(e))?;
        let prefix = format!("{dataset}\0");
        let end = format!("{dataset}\u{1}");
        let mut out = Vec::new();
        for entry in table
            .range(prefix.as_str()..end.as_str())
            .map_err(|e| self.err(e))?
            .rev()
            .take(limit)
        {
            let (_, v) = entry.map_err(|e| self.err(e))?;
            out.push(self.decode("a rolling profile", v.value())?);
        }
        out.reverse();
        Ok(out)
    }

    /// The columns and types of a dataset's latest evaluated batch.
    pub fn latest_schema(&self, dataset: &str) -> Result<Option<Vec<(String, String)>>> {
        let txn = self.db()?.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(SCHEMAS).map_err(|e| self.err(e))?;
        match table.get(dataset).map_err(|e| self.err(e))? {
            Some(v) => Ok(Some(self.decode("a schema", v.value())?)),
            None => Ok(None),
        }
    }

    /// The `anomaly` series of a dataset, by check name.
    pub fn anomaly_series(&self, dataset: &str) -> Result<Vec<(String, crate::anomaly::Series)>> {
        let txn = self.db()?.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(ANOMALY).map_err(|e| self.err(e))?;
        let prefix = format!("{dataset}\0");
        let end = format!("{dataset}\u{1}");
        let mut out = Vec::new();
        for entry in table
            .range(prefix.as_str()..end.as_str())
            .map_err(|e| self.err(e))?
        {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            let check = k
                .value()
                .rsplit('\0')
                .next()
                .unwrap_or_default()
                .to_string();
            out.push((check, self.decode("an anomaly series", v.value())?));
        }
        Ok(out)
    }

    /// The profile of a dataset's latest profiled batch.
    pub fn latest_profile(&self, dataset: &str) -> Result<Option<DatasetProfile>> {
        let txn = self.db()?.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(LATEST_PROFILES).map_err(|e| self.err(e))?;
        match table.get(dataset).map_err(|e| self.err(e))? {
            Some(v) => Ok(Some(self.decode("a profile", v.value())?)),
            None => Ok(None),
        }
    }

    /// Stored results-log lines with a seq greater than `after`, in order.
    pub fn reports_after(&self, after: u64) -> Result<Vec<(u64, String)>> {
        let txn = self.db()?.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(REPORTS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for entry in table
            .range(after.saturating_add(1)..)
            .map_err(|e| self.err(e))?
        {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            out.push((k.value(), v.value().to_string()));
        }
        Ok(out)
    }

    /// The newest `limit` stored reports of a dataset, newest first.
    pub fn latest_reports(&self, dataset: &str, limit: usize) -> Result<Vec<(u64, String)>> {
        let txn = self.db()?.begin_read().map_err(|e| self.err(e))?;
        let index = txn.open_table(DATASET_REPORTS).map_err(|e| self.err(e))?;
        let reports = txn.open_table(REPORTS).map_err(|e| self.err(e))?;
        let prefix = format!("{dataset}\0");
        let end = format!("{dataset}\u{1}");
        let mut out = Vec::new();
        for entry in index
            .range(prefix.as_str()..end.as_str())
            .map_err(|e| self.err(e))?
            .rev()
            .take(limit)
        {
            let (k, _) = entry.map_err(|e| self.err(e))?;
            let Some(seq) = k
                .value()
                .rsplit('\0')
                .next()
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            if let Some(line) = reports.get(seq).map_err(|e| self.err(e))? {
                out.push((seq, line.value().to_string()));
            }
        }
        Ok(out)
    }

    /// Every dataset's counters, by name.
    pub fn datasets(&self) -> Result<Vec<(String, DatasetCounters)>> {
        let txn = self.db()?.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(DATASETS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| self.err(e))? {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            out.push((
                k.value().to_string(),
                self.decode("dataset counters", v.value())?,
            ));
        }
        Ok(out)
    }

    /// Forgets versions evaluated before `older_than` (Unix seconds) whose
    /// path `exists` says is gone: they can never be seen again, so keeping
    /// them only grows the store. Returns how many were removed.
    pub fn prune_versions(&self, older_than: i64, exists: impl Fn(&str) -> bool) -> Result<usize> {
        let mut gone = Vec::new();
        {
            let txn = self.db()?.begin_read().map_err(|e| self.err(e))?;
            let table = txn.open_table(VERSIONS).map_err(|e| self.err(e))?;
            for entry in table.iter().map_err(|e| self.err(e))? {
                let (k, v) = entry.map_err(|e| self.err(e))?;
                let record: VersionRecord = self.decode("a version record", v.value())?;
                let key = k.value().to_string();
                let path = key.split('\0').nth(2).unwrap_or_default();
                if record.evaluated_at < older_than && !exists(path) {
                    gone.push(key);
                }
            }
        }
        if gone.is_empty() {
            return Ok(0);
        }
        self.write(|txn| {
            let mut table = txn.open_table(VERSIONS)?;
            for key in &gone {
                table.remove(key.as_str())?;
            }
            Ok(())
        })?;
        Ok(gone.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(path: &str, size: u64) -> BatchVersion {
        BatchVersion {
            kind: "file".to_string(),
            path: path.to_string(),
            size,
            modified_ns: 7,
            parts: 1,
            table: None,
            etag: None,
        }
    }

    fn record(store: &Store, v: &BatchVersion, outcome: Outcome) -> (u64, bool) {
        store
            .record(
                &Evaluated {
                    version: v,
                    anomaly: &[],
                    schema: None,
                    dataset: "d",
                    outcome,
                    rows: 10,
                    evaluated_at: 100,
                    rolling: None,
                    webhooks: None,
                    profile: None,
                },
                Retention {
                    reports_per_dataset: 2,
                },
                |seq| format!("{{\"seq\":{seq}}}"),
            )
            .unwrap()
    }

    #[test]
    fn issue_16_a_table_version_is_keyed_by_location_and_version_and_moves_the_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let table = |version: u64, size: u64, skipped: Option<&str>| BatchVersion {
            etag: None,
            kind: "delta".to_string(),
            path: "/t".to_string(),
            size,
            modified_ns: 1,
            parts: 1,
            table: Some(crate::report::TableRef {
                format: "delta".to_string(),
                location: "/t".to_string(),
                version,
                snapshot_id: None,
                operation: "WRITE".to_string(),
                skipped: skipped.map(String::from),
            }),
        };
        assert_eq!(store.table_cursor("d", "/t").unwrap(), None);
        assert_eq!(
            record(&store, &table(0, 0, Some("no data")), Outcome::Skipped),
            (1, true)
        );
        assert_eq!(
            record(&store, &table(1, 10, None), Outcome::Passed),
            (2, true)
        );
        // Its files' size is no part of a table version's identity.
        assert_eq!(
            record(&store, &table(1, 99, None), Outcome::Passed),
            (2, false)
        );
        assert_eq!(store.table_cursor("d", "/t").unwrap(), Some(1));
        assert_eq!(store.table_cursor("d", "/other").unwrap(), None);
        assert_eq!(store.table_cursor("e", "/t").unwrap(), None);
        assert_eq!(
            store.table_cursors().unwrap(),
            vec![("d".to_string(), "/t".to_string(), 1)]
        );
        let (_, counters) = &store.datasets().unwrap()[0];
        assert_eq!((counters.evaluated, counters.skipped), (2, 1));
    }

    #[test]
    fn versions_are_recorded_once_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            assert!(Store::is_busy(dir.path()));
            assert_eq!(record(&store, &version("a", 1), Outcome::Passed), (1, true));
            assert_eq!(
                record(&store, &version("a", 1), Outcome::Passed),
                (1, false)
            );
            assert_eq!(record(&store, &version("a", 2), Outcome::Error), (2, true));
            assert_eq!(record(&store, &version("b", 1), Outcome::Failed), (3, true));
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.next_seq().unwrap(), 4);
        let rec = store.version("d", &version("a", 2)).unwrap().unwrap();
        assert_eq!((rec.seq, rec.outcome), (2, Outcome::Error));
        assert!(store.version("other", &version("a", 2)).unwrap().is_none());
        let (name, counters) = &store.datasets().unwrap()[0];
        assert_eq!(name, "d");
        assert_eq!(
            (
                counters.evaluated,
                counters.failed,
                counters.errored,
                counters.rows,
                counters.last_seq
            ),
            (3, 1, 1, 30, 3)
        );
        // Only the newest two reports of the dataset are kept.
        let latest = store.latest_reports("d", 10).unwrap();
        assert_eq!(
            latest.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![3, 2]
        );
        assert_eq!(
            store.reports_after(1).unwrap(),
            vec![
                (2, "{\"seq\":2}".to_string()),
                (3, "{\"seq\":3}".to_string())
            ]
        );
        assert_eq!(store.prune_versions(101, |p| p == "a").unwrap(), 1);
        assert!(store.version("d", &version("b", 1)).unwrap().is_none());
        assert!(store.version("d", &version("a", 1)).unwrap().is_some());
    }

    #[test]
    fn issue_19_grouped_commits_store_exactly_what_single_commits_store() {
        // The same evaluations — two datasets, a repeat of a version inside
        // the group, rolling profiles, retention — recorded one commit each
        // and as one group: identical seqs, lines, counters and profiles.
        let mut profiles = Vec::new();
        for i in 0..6u64 {
            let mut p = DatasetProfile::new("d");
            p.rows = i;
            profiles.push(p);
        }
        let versions: Vec<BatchVersion> = (0..6u64)
            .map(|i| {
                // The last is the second again (same dataset, same version).
                let n = if i == 5 { 1 } else { i };
                version(&format!("f{n}"), 10 + n)
            })
            .collect();
        let evaluated: Vec<Evaluated<'_>> = (0..6)
            .map(|i| Evaluated {
                version: &versions[i],
                anomaly: &[],
                schema: None,
                dataset: if i % 2 == 0 { "d" } else { "e" },
                outcome: if i == 3 {
                    Outcome::Failed
                } else {
                    Outcome::Passed
                },
                rows: i as u64,
                evaluated_at: 100 + i as i64,
                rolling: Some((&profiles[i], 2)),
                webhooks: None,
                profile: Some(&profiles[i]),
            })
            .collect();
        let retention = Retention {
            reports_per_dataset: 2,
        };
        let line = |i: usize, seq: u64| format!("{{\"i\":{i},\"seq\":{seq}}}");
        let single_dir = tempfile::tempdir().unwrap();
        let single = Store::open(single_dir.path()).unwrap();
        let one_by_one: Vec<Recorded> = evaluated
            .iter()
            .enumerate()
            .map(|(i, e)| {
                single
                    .record_evaluation(e, retention, |seq| line(i, seq))
                    .unwrap()
            })
            .collect();
        let grouped_dir = tempfile::tempdir().unwrap();
        let grouped = Store::open(grouped_dir.path()).unwrap();
        let together = grouped
            .record_evaluations(&evaluated, retention, line)
            .unwrap();
        assert_eq!(together, one_by_one);
        // Versions f0..f4, then f1 of `e` again (recorded earlier in the group).
        assert_eq!(
            together.iter().map(|r| (r.seq, r.new)).collect::<Vec<_>>(),
            vec![
                (1, true),
                (2, true),
                (3, true),
                (4, true),
                (5, true),
                (2, false)
            ]
        );
        for store in [&single, &grouped] {
            assert_eq!(store.next_seq().unwrap(), 6);
        }
        assert_eq!(
            grouped.reports_after(0).unwrap(),
            single.reports_after(0).unwrap()
        );
        assert_eq!(grouped.datasets().unwrap(), single.datasets().unwrap());
        for dataset in ["d", "e"] {
            assert_eq!(
                grouped.latest_reports(dataset, 10).unwrap(),
                single.latest_reports(dataset, 10).unwrap()
            );
            let rows = |s: &Store| -> Vec<u64> {
                s.rolling_profiles(dataset, 5)
                    .unwrap()
                    .iter()
                    .map(|p| p.rows)
                    .collect()
            };
            assert_eq!(rows(&grouped), rows(&single));
        }
        assert_eq!(
            grouped
                .latest_reports("d", 10)
                .unwrap()
                .iter()
                .map(|(s, _)| *s)
                .collect::<Vec<_>>(),
            vec![5, 3]
        );
    }

    #[test]
    fn rolling_profiles_keep_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for i in 0..4u64 {
            let mut profile = DatasetProfile::new("d");
            profile.rows = i;
            store
                .record(
                    &Evaluated {
                        version: &version("f", i),
                        anomaly: &[],
                        schema: None,
                        dataset: "d",
                        outcome: Outcome::Passed,
                        rows: i,
                        evaluated_at: 1,
                        rolling: Some((&profile, 3)),
                        webhooks: None,
                        profile: Some(&profile),
                    },
                    Retention {
                        reports_per_dataset: 10,
                    },
                    |_| String::new(),
                )
                .unwrap();
        }
        let rows: Vec<u64> = store
            .rolling_profiles("d", 3)
            .unwrap()
            .iter()
            .map(|p| p.rows)
            .collect();
        assert_eq!(rows, vec![1, 2, 3]);
        let rows: Vec<u64> = store
            .rolling_profiles("d", 2)
            .unwrap()
            .iter()
            .map(|p| p.rows)
            .collect();
        assert_eq!(rows, vec![2, 3]);
        // The latest profile is kept for reports.
        assert_eq!(store.latest_profile("d").unwrap().unwrap().rows, 3);
        assert!(store.latest_profile("other").unwrap().is_none());
    }
}
