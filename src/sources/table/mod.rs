//! Table sources: rule files whose data is a Delta Lake or Apache Iceberg
//! table (`table: { format: delta | iceberg, location: … }`, or an Iceberg
//! table a REST catalog keeps: `catalog: { uri, namespace, table, … }`)
//! rather than files in a watched folder.
//!
//! A table's unit of change is a *version* — a Delta commit, an Iceberg
//! snapshot (numbered by its sequence number) — so a batch is one version:
//! the data files it added ([`delta`] and [`iceberg`] decide which; the
//! [`Table`] enum is all the watcher, `check` and `baseline` see of them). The
//! [`TableWatcher`] polls each table's latest version every poll interval
//! and sends the versions after the newest one the store has recorded for
//! (dataset, table location), **one at a time and in order**: the next is
//! sent only once the previous one is recorded. That is what makes "every
//! version exactly once, in version order" hold across restarts: the store's
//! cursor moves in the same transaction as the report, and a restarted agent
//! starts from it. Versions that add no data are sent too, marked skipped,
//! so their record (status `skipped`) moves the cursor like any other.
//!
//! A location that is not a table (or a log that cannot be read) is an error
//! on `/status` and one log line per episode; it is tried again every poll.

pub mod catalog;
pub mod delta;
pub mod files;
pub mod iceberg;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use self::delta::DeltaLog;
use self::iceberg::IcebergTable;
use super::Batch;
use super::lake::InFlight;
use crate::location::ObjectStoreOptions;
use crate::report::{BatchVersion, TableRef};
use crate::rules::{CatalogConfig, RuleFile, TableConfig, TableFormat};

/// Table errors: the user's (not a table, an unsupported table feature, a
/// version that does not exist) or the log's (unreadable now; tried again).
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The location is not a table of the format.
    #[error("{location}: not {}: {reason}", .format.a_table())]
    NotATable {
        /// The format the rule file (or the folder) says.
        format: TableFormat,
        /// The location.
        location: String,
        /// One-line reason.
        reason: String,
    },
    /// The transaction log (Delta) or the metadata (Iceberg) could not be read.
    #[error("{location}: cannot read the {}: {reason}", .format.log_name())]
    Log {
        /// The format.
        format: TableFormat,
        /// The location.
        location: String,
        /// One-line reason.
        reason: String,
    },
    /// The table uses a feature whose files cannot be read as plain Parquet.
    #[error("{location}: unsupported {} table: {reason}", .format.title())]
    Unsupported {
        /// The format.
        format: TableFormat,
        /// The location.
        location: String,
        /// One-line reason.
        reason: String,
    },
    /// The asked version is not in the table.
    #[error("{location}: the {} table has no version {version}", .format.title())]
    NoVersion {
        /// The format.
        format: TableFormat,
        /// The location.
        location: String,
        /// The version asked for.
        version: u64,
    },
    /// The object store holding the table cannot be read now (refused
    /// credentials, an unreachable endpoint, a missing bucket): the
    /// environment's fault, tried again every poll.
    #[error("{location}: cannot read objects: {reason}")]
    Store {
        /// The location.
        location: String,
        /// One-line reason, secrets removed.
        reason: String,
    },
    /// The table has no version yet (an Iceberg table created without data).
    #[error("{location}: the {} table has no snapshot yet", .format.title())]
    Empty {
        /// The format.
        format: TableFormat,
        /// The location.
        location: String,
    },
}

/// One data file of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    /// Its local path.
    pub path: PathBuf,
    /// Bytes.
    pub size: u64,
    /// The table's partition values for it that are column values (a null
    /// value is left out): a scan adds them as columns where the file
    /// lacks them, as for Hive folders.
    pub partitions: BTreeMap<String, String>,
    /// Partition values that are no column's value, for reports only:
    /// Iceberg's fields with a transform applied, as Iceberg writes them in
    /// paths (`ts_day` = `2024-05-01`, `id_bucket` = `3`); never scanned as
    /// columns. Empty for Delta, whose partitions are all columns.
    pub transformed: BTreeMap<String, String>,
}

/// What one table version contributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionChanges {
    /// The version (Delta: the commit number; Iceberg: the snapshot's
    /// sequence number).
    pub version: u64,
    /// The Iceberg snapshot id; `None` for Delta.
    pub snapshot_id: Option<i64>,
    /// The commit's operation (Delta: `WRITE`, `MERGE`, `OPTIMIZE`, …;
    /// Iceberg: `append`, `overwrite`, `delete`, `replace`).
    pub operation: String,
    /// The commit time, milliseconds since the Unix epoch (0 when unknown).
    pub timestamp_ms: i64,
    /// The data files it added with new data.
    pub files: Vec<DataFile>,
    /// Why the version is no batch; `None` when `files` is one.
    pub skipped: Option<String>,
    /// Why its files cannot be evaluated as they are (deletion vectors,
    /// delete files added with data files, data files that are not Parquet).
    pub unreadable: Option<String>,
}

/// A table version's data, as the worker needs it.
#[derive(Debug, Clone)]
pub struct TableBatch {
    /// The data files the version added.
    pub files: Vec<DataFile>,
    /// Why they cannot be evaluated as they are (an error report).
    pub unreadable: Option<String>,
}

/// How a table location is written in reports and keys: absolute, links
/// resolved where it exists — one spelling however it was configured; an
/// object-store URL as written, without a trailing `/`; a REST catalog's
/// table as its resource URL ([`CatalogConfig::key`]).
pub fn location_key(location: &Path) -> String {
    // A REST catalog's table: its resource URL as the rule file gives it.
    if let Some(url) = location.to_str()
        && (url.starts_with("http://") || url.starts_with("https://"))
    {
        return url.to_string();
    }
    if let Some(Ok(url)) = crate::location::ObjectUrl::from_path(location) {
        return url.with_key(url.key.trim_end_matches('/')).to_string();
    }
    std::fs::canonicalize(location)
        .or_else(|_| std::path::absolute(location))
        .unwrap_or_else(|_| location.to_path_buf())
        .display()
        .to_string()
}

/// How a table version is named as a report's `source`: `LOCATION@vN`.
pub fn source_name(location: &str, version: u64) -> String {
    format!("{location}@v{version}")
}

/// The batch for one version of a table (`location` as [`location_key`] gives it).
pub fn batch_of(
    dataset: &str,
    location: &str,
    format: &str,
    changes: VersionChanges,
    discovered: Instant,
) -> Batch {
    let table = TableRef {
        format: format.to_string(),
        location: location.to_string(),
        version: changes.version,
        snapshot_id: changes.snapshot_id,
        operation: changes.operation,
        skipped: changes.skipped,
    };
    let partitions = common_partitions(&changes.files);
    let version = BatchVersion {
        etag: None,
        kind: format.to_string(),
        path: location.to_string(),
        size: changes.files.iter().map(|f| f.size).sum(),
        modified_ns: changes.timestamp_ms.saturating_mul(1_000_000),
        parts: changes.files.len() as u64,
        table: Some(table),
    };
    Batch {
        dataset: dataset.to_string(),
        path: PathBuf::from(location),
        version,
        relative: PathBuf::new(),
        root: PathBuf::from(location),
        partitions,
        discovered,
        ack: None,
        table: Some(TableBatch {
            files: changes.files,
            unreadable: changes.unreadable,
        }),
    }
}

/// The partition values every file shares (what the report shows): its
/// column values and its transformed values ([`DataFile::transformed`]).
pub fn common_partitions(files: &[DataFile]) -> BTreeMap<String, String> {
    let Some(first) = files.first() else {
        return BTreeMap::new();
    };
    fn value<'a>(f: &'a DataFile, k: &str) -> Option<&'a String> {
        f.partitions.get(k).or_else(|| f.transformed.get(k))
    }
    first
        .partitions
        .iter()
        .chain(&first.transformed)
        .filter(|(k, v)| files.iter().all(|f| value(f, k) == Some(*v)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The newest version recorded for (dataset, table location), from the store.
pub type CursorFn = Arc<dyn Fn(&str, &str) -> Result<Option<u64>, String> + Send + Sync>;

/// One table on `/status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TableStatus {
    /// The dataset (rule file) it feeds.
    pub dataset: String,
    /// `delta` or `iceberg`.
    pub format: String,
    /// The location.
    pub location: String,
    /// The newest version seen in the table; null before the first poll.
    pub latest_version: Option<u64>,
    /// The newest version recorded (evaluated or skipped); null before the first.
    pub recorded_version: Option<u64>,
    /// Why the table cannot be read now (not a table, an unreadable log);
    /// null when it can. Tried again every poll.
    pub error: Option<String>,
    /// Since when (RFC 3339); null without an error.
    pub error_since: Option<String>,
}

/// What `/status` shows of the tables, by (dataset, location).
#[derive(Debug, Default)]
pub struct TableStats {
    /// Per table.
    pub tables: Mutex<BTreeMap<(String, String), TableStatus>>,
}

impl TableStats {
    /// The tables, by dataset then location.
    pub fn snapshot(&self) -> Vec<TableStatus> {
        self.tables
            .lock()
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The first table error, for the agent's degraded state: (since, reason).
    pub fn first_error(&self) -> Option<(String, String)> {
        self.tables.lock().ok()?.values().find_map(|t| {
            t.error
                .clone()
                .map(|e| (t.error_since.clone().unwrap_or_default(), e))
        })
    }

    fn update(&self, key: &(String, String), change: impl FnOnce(&mut TableStatus)) {
        if let Ok(mut tables) = self.tables.lock()
            && let Some(status) = tables.get_mut(key)
        {
            change(status);
        }
    }
}

/// An open table of either format: what the watcher, `check` and
/// `baseline` ask of a table, whatever writes its versions.
pub enum Table {
    /// A Delta Lake table (delta-rs).
    Delta(DeltaLog),
    /// An Apache Iceberg table (its metadata files and Avro manifests).
    Iceberg(IcebergTable),
}

impl Table {
    /// Opens the table of `format` at `location` (a local folder, or an
    /// object-store URL carried as a path, reached with `options`).
    /// A table a REST catalog keeps is opened through `catalog` instead
    /// (`location` is then its [`CatalogConfig::key`]).
    pub async fn open(
        format: TableFormat,
        location: &Path,
        catalog: Option<&CatalogConfig>,
        options: &ObjectStoreOptions,
    ) -> Result<Self, TableError> {
        Ok(match (format, catalog) {
            (TableFormat::Iceberg, Some(catalog)) => {
                Table::Iceberg(IcebergTable::open_catalog(catalog, options).await?)
            }
            (TableFormat::Delta, _) => Table::Delta(DeltaLog::open(location, options).await?),
            (TableFormat::Iceberg, None) => {
                Table::Iceberg(IcebergTable::open(location, options).await?)
            }
        })
    }

    /// The newest version, read again from the table (`from`: a version
    /// known to exist); `None` while the table has none (an Iceberg table
    /// created without data).
    pub async fn latest_version(&mut self, from: Option<u64>) -> Result<Option<u64>, TableError> {
        match self {
            Table::Delta(log) => log.latest_version(from).await.map(Some),
            Table::Iceberg(table) => {
                table.refresh().await?;
                Ok(table.latest_version())
            }
        }
    }

    /// What `version` added.
    pub async fn changes(&self, version: u64) -> Result<VersionChanges, TableError> {
        match self {
            Table::Delta(log) => log.changes(version).await,
            Table::Iceberg(table) => table.changes(version).await,
        }
    }

    /// The version after `recorded` (Delta numbers its commits without
    /// gaps; an Iceberg lineage may skip sequence numbers: snapshots of
    /// other branches, expired ones).
    pub async fn changes_after(&self, recorded: u64) -> Result<Option<VersionChanges>, TableError> {
        match self {
            Table::Delta(log) => log.changes(recorded + 1).await.map(Some),
            Table::Iceberg(table) => match table.version_after(recorded) {
                Some(next) => table.changes(next).await.map(Some),
                None => Ok(None),
            },
        }
    }

    /// The first batch of a table never recorded: its first version when
    /// the table still holds it; otherwise (cleaned-up Delta commits,
    /// expired Iceberg snapshots) the whole table as of `latest`, named
    /// `SNAPSHOT`.
    pub async fn first_changes(&self, latest: u64) -> Result<VersionChanges, TableError> {
        let first = match self {
            Table::Delta(log) => log.has_commit(0).await?.then_some(0),
            Table::Iceberg(table) => table.first_version(),
        };
        if let Some(first) = first {
            return self.changes(first).await;
        }
        let (at, files) = self.snapshot(Some(latest)).await?;
        Ok(VersionChanges {
            snapshot_id: self.snapshot_id(at),
            version: at,
            operation: "SNAPSHOT".to_string(),
            timestamp_ms: 0,
            skipped: files
                .is_empty()
                .then(|| "the table holds no data files".to_string()),
            files,
            unreadable: None,
        })
    }

    /// The data files live at `version` (None: the latest) and that version.
    pub async fn snapshot(&self, version: Option<u64>) -> Result<(u64, Vec<DataFile>), TableError> {
        match self {
            Table::Delta(log) => log.snapshot(version).await,
            Table::Iceberg(table) => table.snapshot(version).await,
        }
    }

    /// The operation that wrote `version`.
    pub async fn operation(&self, version: u64) -> Result<String, TableError> {
        match self {
            Table::Delta(log) => Ok(log.changes(version).await?.operation),
            Table::Iceberg(table) => table.operation(version),
        }
    }

    /// Why the table cannot be the one whose versions up to `recorded`
    /// were evaluated (`latest`: its newest version now): a Delta table's
    /// versions never go back; an Iceberg table's sequence numbers never do
    /// either, even when a rollback makes an older snapshot current (so the
    /// metadata's `last-sequence-number`, not the current snapshot, is
    /// compared). `None` when it can be.
    pub fn replaced(&self, recorded: u64, latest: Option<u64>) -> Option<String> {
        let end = match self {
            Table::Delta(_) => latest?,
            Table::Iceberg(table) => table.last_sequence_number()?,
        };
        (end < recorded).then(|| {
            format!(
                "the table's versions end at {end}, before version {recorded} already recorded for it: it was replaced (dropped and created again, or another table now has this location); its versions are not evaluated until the dataset's recorded state is removed or the rule file names it as another dataset"
            )
        })
    }

    /// The Iceberg snapshot id of `version`; `None` for Delta.
    pub fn snapshot_id(&self, version: u64) -> Option<i64> {
        match self {
            Table::Delta(_) => None,
            Table::Iceberg(table) => table.snapshot_id(version),
        }
    }
}

/// One table being followed.
struct Followed {
    table: Option<Table>,
    /// The catalog settings `table` was opened with: a rule-file reload
    /// that changes them (another token variable, prefix or warehouse)
    /// opens the table again.
    catalog: Option<CatalogConfig>,
    latest: Option<u64>,
    next_poll: Instant,
}

/// Follows the tables of the current rule files and sends their versions.
pub struct TableWatcher {
    /// The current rule files.
    pub rules: watch::Receiver<Arc<Vec<RuleFile>>>,
    /// The store's cursor per (dataset, location).
    pub cursor: CursorFn,
    /// Sent but not recorded (shared with the agent, which removes them).
    pub in_flight: InFlight,
    /// What `/status` shows.
    pub stats: Arc<TableStats>,
    /// Poll interval of tables that do not set their own (`lake.poll_interval`).
    pub poll_interval: Duration,
    /// How clients for tables on object stores are built (`[lake.object_store]`).
    pub object_store: ObjectStoreOptions,
}

/// How often the loop looks whether a sent version is recorded (and the
/// next can go).
const TICK: Duration = Duration::from_millis(50);

impl TableWatcher {
    /// Runs until `shutdown` turns true (or the queue closes).
    pub async fn run(self, queue: mpsc::Sender<Batch>, mut shutdown: watch::Receiver<bool>) {
        let mut followed: HashMap<(String, String), Followed> = HashMap::new();
        loop {
            let rules = self.rules.borrow().clone();
            let tables: Vec<(&RuleFile, &TableConfig, String)> = rules
                .iter()
                .filter_map(|r| r.table.as_ref().map(|t| (r, t, location_key(&t.location))))
                .collect();
            // Tables no rule file names any more are forgotten.
            followed.retain(|key, _| {
                tables
                    .iter()
                    .any(|(r, _, l)| (&r.dataset, l) == (&key.0, &key.1))
            });
            if let Ok(mut stats) = self.stats.tables.lock() {
                stats.retain(|key, _| {
                    followed.contains_key(key)
                        || tables
                            .iter()
                            .any(|(r, _, l)| (&r.dataset, l) == (&key.0, &key.1))
                });
                for (rule_file, table, location) in &tables {
                    stats
                        .entry((rule_file.dataset.clone(), location.clone()))
                        .or_insert_with(|| TableStatus {
                            dataset: rule_file.dataset.clone(),
                            format: table.format.name().to_string(),
                            location: location.clone(),
                            ..TableStatus::default()
                        });
                }
            }
            for (rule_file, table, location) in &tables {
                let key = (rule_file.dataset.clone(), location.clone());
                let entry = followed.entry(key.clone()).or_insert_with(|| Followed {
                    table: None,
                    catalog: table.catalog.clone(),
                    latest: None,
                    next_poll: Instant::now(),
                });
                if entry.catalog != table.catalog {
                    entry.table = None;
                    entry.catalog = table.catalog.clone();
                }
                let interval = table.poll_interval.unwrap_or(self.poll_interval);
                let next = match self.next_batch(&key, table, entry, interval).await {
                    Ok(next) => {
                        // Only a table that opened has recovered (a tick
                        // between polls says nothing).
                        if entry.table.is_some() {
                            self.recovered(&key);
                        }
                        next
                    }
                    Err(e) => {
                        self.failed(&key, &e);
                        // Open again at the next poll (not at the next
                        // tick, even when behind): the folder may become a
                        // table, the log readable.
                        entry.table = None;
                        entry.latest = None;
                        entry.next_poll = Instant::now() + interval;
                        None
                    }
                };
                let Some(batch) = next else { continue };
                if let Ok(mut set) = self.in_flight.lock() {
                    set.insert((batch.dataset.clone(), batch.version.clone()));
                }
                tokio::select! {
                    sent = queue.send(batch) => if sent.is_err() { return },
                    _ = shutdown.changed() => return,
                }
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }

    /// The next version of one table to send, if one is due: none while a
    /// version of it is in flight, none before the poll when the recorded
    /// cursor has caught up with the latest version seen.
    async fn next_batch(
        &self,
        key: &(String, String),
        table: &TableConfig,
        followed: &mut Followed,
        interval: Duration,
    ) -> Result<Option<Batch>, TableError> {
        let (dataset, location) = key;
        let busy = self.in_flight.lock().is_ok_and(|set| {
            set.iter().any(|(d, v)| {
                d == dataset && v.table.as_ref().is_some_and(|t| &t.location == location)
            })
        });
        if busy {
            return Ok(None);
        }
        let recorded = (self.cursor)(dataset, location).map_err(|reason| TableError::Log {
            format: table.format,
            location: location.clone(),
            reason: format!("cannot read the state store: {reason}"),
        })?;
        self.stats.update(key, |s| s.recorded_version = recorded);
        let caught_up = match (recorded, followed.latest) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some(r), Some(l)) => r >= l,
        };
        if caught_up {
            if Instant::now() < followed.next_poll {
                return Ok(None);
            }
            followed.next_poll = Instant::now() + interval;
        }
        if followed.table.is_none() {
            followed.table = Some(
                Table::open(
                    table.format,
                    Path::new(location),
                    table.catalog.as_ref(),
                    &self.object_store,
                )
                .await?,
            );
        }
        let Some(open) = followed.table.as_mut() else {
            return Ok(None);
        };
        if caught_up {
            let latest = open.latest_version(recorded).await?;
            followed.latest = latest;
            self.stats.update(key, |s| s.latest_version = latest);
            // A table whose versions never reached the cursor is another
            // table now: said on /status, never silently skipped.
            if let Some(recorded) = recorded
                && let Some(reason) = open.replaced(recorded, latest)
            {
                return Err(TableError::Log {
                    format: table.format,
                    location: location.clone(),
                    reason,
                });
            }
        }
        let Some(latest) = followed.latest else {
            return Ok(None);
        };
        let discovered = Instant::now();
        let changes = match recorded {
            Some(r) if r >= latest => return Ok(None),
            Some(r) => match open.changes_after(r).await? {
                Some(changes) => changes,
                None => return Ok(None),
            },
            // A table never recorded: from its first version, or — when the
            // table no longer holds it — from the whole table as of now.
            None => open.first_changes(latest).await?,
        };
        Ok(Some(batch_of(
            dataset,
            location,
            table.format.name(),
            changes,
            discovered,
        )))
    }

    fn failed(&self, key: &(String, String), e: &TableError) {
        let message = e.to_string();
        let mut first = false;
        self.stats.update(key, |s| {
            first = s.error.is_none();
            if first {
                s.error_since = Some(chrono::Utc::now().to_rfc3339());
            }
            s.error = Some(message.clone());
        });
        if first {
            tracing::error!(dataset = %key.0, table = %key.1, error = %message, "table cannot be read; tried again every poll (one line per episode)");
        }
    }

    fn recovered(&self, key: &(String, String)) {
        let mut was = false;
        self.stats.update(key, |s| {
            was = s.error.take().is_some();
            s.error_since = None;
        });
        if was {
            tracing::info!(dataset = %key.0, table = %key.1, "table readable again");
        }
    }
}

/// A table version read for `check` or `baseline`: what to scan and how to
/// name it.
#[derive(Debug, Clone)]
pub struct ReadVersion {
    /// The version (with `skipped` set when it added no data).
    pub table: TableRef,
    /// The files to scan.
    pub files: Vec<crate::engine::FileInput>,
    /// The partition values every file shares.
    pub partitions: BTreeMap<String, String>,
    /// Why the files cannot be evaluated as they are.
    pub unreadable: Option<String>,
}

impl ReadVersion {
    /// How the version is named as a report's `source`.
    pub fn source(&self) -> String {
        source_name(&self.table.location, self.table.version)
    }
}

/// Reads the table of `format` at `location` at `version` (None: the
/// latest): the files that version added (`whole: false`, what the agent's
/// batch for it is), or every file live at it (`whole: true`, for baselines).
pub async fn read_version(
    format: TableFormat,
    location: &str,
    catalog: Option<&CatalogConfig>,
    version: Option<u64>,
    whole: bool,
    options: &ObjectStoreOptions,
) -> Result<ReadVersion, TableError> {
    let mut table = Table::open(format, Path::new(location), catalog, options).await?;
    let Some(latest) = table.latest_version(None).await? else {
        return Err(TableError::Empty {
            format,
            location: location.to_string(),
        });
    };
    let version = version.unwrap_or(latest);
    if version > latest {
        return Err(TableError::NoVersion {
            format,
            location: location.to_string(),
            version,
        });
    }
    let changes = if whole {
        let (at, files) = table.snapshot(Some(version)).await?;
        VersionChanges {
            snapshot_id: table.snapshot_id(at),
            version: at,
            operation: table.operation(at).await?,
            timestamp_ms: 0,
            skipped: files
                .is_empty()
                .then(|| "the table holds no data files at this version".to_string()),
            files,
            unreadable: None,
        }
    } else {
        table.changes(version).await?
    };
    Ok(ReadVersion {
        table: TableRef {
            format: format.name().to_string(),
            location: location.to_string(),
            version: changes.version,
            snapshot_id: changes.snapshot_id,
            operation: changes.operation,
            skipped: changes.skipped,
        },
        partitions: common_partitions(&changes.files),
        files: changes
            .files
            .into_iter()
            .map(|f| crate::engine::FileInput {
                path: f.path,
                partitions: f.partitions,
            })
            .collect(),
        unreadable: changes.unreadable,
    })
}

/// How a version whose files cannot be read as they are is reported.
pub fn unsupported_message(table: &TableRef, reason: &str) -> String {
    let title = match table.format.as_str() {
        "iceberg" => TableFormat::Iceberg.title(),
        _ => TableFormat::Delta.title(),
    };
    format!("{}: unsupported {title} table: {reason}", table.location)
}
