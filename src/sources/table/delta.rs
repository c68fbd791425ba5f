//! Delta Lake tables through delta-rs (`deltalake-core`): the latest
//! version, what one version added, and the files live at a version.
//!
//! Nothing here parses the transaction log: delta-rs reads the commits, the
//! checkpoints and the log compaction files, and parses each commit into its
//! actions. What this module decides is only what a *batch* is: the data
//! files a version added with `dataChange: true` (an append, the add side
//! of an overwrite, merge or update). Files added with `dataChange: false`
//! (optimize, which rewrites existing rows into fewer files) and removes are
//! no new data, so a version with nothing else is skipped; so is a
//! `DELETE`, whose added files are rewrites of rows evaluated before.
//!
//! Tables whose files cannot be read as plain Parquet are refused with a
//! clear error rather than misread: column mapping (physical column names
//! differ from the schema's) and deletion vectors (a file's deleted rows
//! are only marked).
//!
//! A table on an object store is read through the lake's own client for
//! its bucket ([`TableFiles`], handed to delta-rs as its storage backend):
//! the same credentials and `[lake.object_store]` settings, nothing
//! downloaded to temporary files. delta-rs only knows log stores for
//! `file://` and `memory://` without its cloud crates, so the object-store
//! schemes are registered once with its default (read-only here) log store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use deltalake_core::DeltaTableBuilder;
use deltalake_core::kernel::Action;
use deltalake_core::logstore::{LogStoreRef, get_actions};
use futures::StreamExt;
use url::Url;

use super::files::TableFiles;
use super::{DataFile, TableError, VersionChanges};
use crate::location::ObjectStoreOptions;
use crate::rules::TableFormat;

const FORMAT: TableFormat = TableFormat::Delta;

/// An open Delta table.
pub struct DeltaLog {
    location: String,
    root: Url,
    files: TableFiles,
    store: LogStoreRef,
}

/// delta-rs's default log store for URLs of the object-store schemes
/// driftwatch reads: this module only reads, so the default store's commit
/// protocol (which needs put-if-absent) is never used.
struct ObjectLogStores;

impl deltalake_core::logstore::LogStoreFactory for ObjectLogStores {
    fn with_options(
        &self,
        prefixed_store: deltalake_core::logstore::ObjectStoreRef,
        root_store: deltalake_core::logstore::ObjectStoreRef,
        location: &Url,
        options: &deltalake_core::logstore::StorageConfig,
    ) -> deltalake_core::DeltaResult<LogStoreRef> {
        Ok(deltalake_core::logstore::default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

/// Registers [`ObjectLogStores`] for every object-store scheme, once.
fn register_object_log_stores() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let registry = deltalake_core::logstore::logstore_factories();
        for scheme in ["s3", "s3a", "az", "abfs", "abfss", "adl", "azure", "gs"] {
            if let Ok(url) = Url::parse(&format!("{scheme}://")) {
                registry.insert(url, Arc::new(ObjectLogStores));
            }
        }
    });
}

/// The location of a table given as a local path, as a `file://` URL of
/// the folder (ending in `/`, so relative file paths join under it).
fn folder_url(location: &Path) -> Result<Url, TableError> {
    let absolute = std::path::absolute(location).map_err(|e| TableError::NotATable {
        format: FORMAT,
        location: location.display().to_string(),
        reason: e.to_string(),
    })?;
    Url::from_directory_path(&absolute).map_err(|()| TableError::NotATable {
        format: FORMAT,
        location: location.display().to_string(),
        reason: "cannot be named as a file URL".to_string(),
    })
}

/// The delta-rs builder for the table at `root`: for an object-store
/// table, with the lake's client for its bucket as the storage backend.
fn builder(root: &Url, files: &TableFiles) -> deltalake_core::DeltaResult<DeltaTableBuilder> {
    let builder = DeltaTableBuilder::from_url(root.clone())?;
    Ok(match files {
        TableFiles::Local(_) => builder,
        TableFiles::Object { store, .. } => {
            builder.with_storage_backend(store.clone(), root.clone())
        }
    })
}

/// A delta-rs error as one line, secrets removed.
fn redacted(e: impl std::fmt::Display, options: &ObjectStoreOptions) -> String {
    crate::location::redact(&one_line(e), options)
}

/// A delta-rs error as one line.
fn one_line(e: impl std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

impl DeltaLog {
    /// Opens the table at `location`: a folder (or an object-store
    /// prefix) with a `_delta_log` that holds at least one commit or
    /// checkpoint.
    pub async fn open(location: &Path, options: &ObjectStoreOptions) -> Result<Self, TableError> {
        let name = location.display().to_string();
        let not_a_table = |reason: String| TableError::NotATable {
            format: FORMAT,
            location: name.clone(),
            reason,
        };
        let files = TableFiles::open(FORMAT, location, options)?;
        let root = match &files {
            TableFiles::Local(_) => {
                let meta = std::fs::metadata(location).map_err(|e| not_a_table(e.to_string()))?;
                if !meta.is_dir() {
                    return Err(not_a_table("not a folder".to_string()));
                }
                folder_url(location)?
            }
            TableFiles::Object { url, .. } => {
                register_object_log_stores();
                url.scan_url(true).map_err(|e| not_a_table(e.to_string()))?
            }
        };
        let table = builder(&root, &files)
            .and_then(|b| b.build())
            .map_err(|e| not_a_table(one_line(e)))?;
        let store = table.log_store();
        match store.is_delta_table_location().await {
            Ok(true) => {}
            Ok(false) => {
                return Err(not_a_table(
                    "no Delta transaction log (`_delta_log/` with commits) in it".to_string(),
                ));
            }
            // The store could not be listed (credentials, endpoint, bucket):
            // not the table's answer.
            Err(e) if files.object_url().is_some() => {
                return Err(TableError::Store {
                    location: name,
                    reason: redacted(&e, options),
                });
            }
            Err(e) => return Err(not_a_table(one_line(e))),
        }
        Ok(Self {
            location: name,
            root,
            files,
            store,
        })
    }

    /// The table's location as given.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn log_error(&self, e: impl std::fmt::Display) -> TableError {
        let reason = one_line(e);
        match &self.files {
            TableFiles::Local(_) => TableError::Log {
                format: FORMAT,
                location: self.location.clone(),
                reason,
            },
            // delta-rs's errors carry the store's; secrets never leave.
            TableFiles::Object { options, .. } => TableError::Log {
                format: FORMAT,
                location: self.location.clone(),
                reason: crate::location::redact(&reason, options),
            },
        }
    }

    /// The newest version in the log (commits, checkpoints and compaction
    /// files as delta-rs reads them). `from` is a version known to exist.
    pub async fn latest_version(&self, from: Option<u64>) -> Result<u64, TableError> {
        if let Ok(v) = self.store.get_latest_version(from.unwrap_or(0)).await {
            return Ok(v);
        }
        // The commit `start` names may have been cleaned up: load the table
        // from its newest checkpoint instead.
        let table = self.load(None).await?;
        table
            .version()
            .ok_or_else(|| self.log_error("the table has no version"))
    }

    /// Whether the commit of `version` is still in the log (log clean-up
    /// removes commits older than the retention once a checkpoint covers them).
    pub async fn has_commit(&self, version: u64) -> Result<bool, TableError> {
        self.store
            .read_commit_entry(version)
            .await
            .map(|c| c.is_some())
            .map_err(|e| self.log_error(e))
    }

    async fn load(&self, version: Option<u64>) -> Result<deltalake_core::DeltaTable, TableError> {
        let mut table = builder(&self.root, &self.files)
            .and_then(|b| b.build())
            .map_err(|e| self.log_error(e))?;
        let loaded = match version {
            Some(v) => table.load_version(v).await,
            None => table.load().await,
        };
        loaded.map_err(|e| match (version, &e) {
            (Some(v), deltalake_core::DeltaTableError::InvalidVersion(_)) => {
                TableError::NoVersion {
                    format: FORMAT,
                    location: self.location.clone(),
                    version: v,
                }
            }
            _ => self.log_error(e),
        })?;
        Ok(table)
    }

    /// A file path from the log (relative to the table, percent-encoded,
    /// or an absolute URL) as the path of a file to scan: a local path, or
    /// an object's URL as a path.
    fn local_path(&self, path: &str) -> Result<PathBuf, TableError> {
        self.root
            .join(path)
            .ok()
            .and_then(|u| self.file_of_url(&u))
            .ok_or_else(|| self.not_in_store(path))
    }

    /// A file path the snapshot already percent-decoded, likewise.
    fn decoded_local_path(&self, path: &str) -> Result<PathBuf, TableError> {
        if path.contains("://") || path.starts_with("file:") {
            return Url::parse(path)
                .ok()
                .and_then(|u| self.file_of_url(&u))
                .ok_or_else(|| self.not_in_store(path));
        }
        match &self.files {
            TableFiles::Local(_) => {
                let root = self
                    .root
                    .to_file_path()
                    .map_err(|()| self.not_in_store(path))?;
                Ok(root.join(path))
            }
            TableFiles::Object { .. } => Ok(self.files.join(path)),
        }
    }

    /// The file a URL names, when it is where this table's files are: a
    /// local file for a local table, an object of the table's bucket for an
    /// object-store table.
    fn file_of_url(&self, url: &Url) -> Option<PathBuf> {
        match self.files.object_url() {
            None => (url.scheme() == "file")
                .then(|| url.to_file_path().ok())
                .flatten(),
            Some(table) => {
                let same = url.scheme() == self.root.scheme()
                    && url.host_str() == self.root.host_str()
                    && url.username() == self.root.username();
                if !same {
                    return None;
                }
                let key = percent_encoding::percent_decode_str(url.path().trim_start_matches('/'))
                    .decode_utf8()
                    .ok()?;
                Some(table.with_key(&key).to_path())
            }
        }
    }

    fn not_in_store(&self, path: &str) -> TableError {
        let where_ = match self.files {
            TableFiles::Local(_) => "a local file",
            TableFiles::Object { .. } => "in the table's bucket",
        };
        TableError::Unsupported {
            format: FORMAT,
            location: self.location.clone(),
            reason: format!("data file `{path}` is not {where_}"),
        }
    }

    /// Column mapping renames columns inside the files: reading them as
    /// plain Parquet would see the physical names.
    fn check_readable(
        &self,
        configuration: &std::collections::HashMap<String, String>,
    ) -> Result<(), TableError> {
        match configuration
            .get("delta.columnMapping.mode")
            .map(String::as_str)
        {
            None | Some("none") => Ok(()),
            Some(mode) => Err(TableError::Unsupported {
                format: FORMAT,
                location: self.location.clone(),
                reason: format!("column mapping (`delta.columnMapping.mode = {mode}`)"),
            }),
        }
    }

    /// What `version` added, from its commit. A commit no longer in the log
    /// (cleaned up after a checkpoint) is skipped, saying so.
    pub async fn changes(&self, version: u64) -> Result<VersionChanges, TableError> {
        let v = version;
        let Some(bytes) = self
            .store
            .read_commit_entry(v)
            .await
            .map_err(|e| self.log_error(e))?
        else {
            return Ok(VersionChanges {
                snapshot_id: None,
                version,
                operation: "UNKNOWN".to_string(),
                timestamp_ms: 0,
                files: Vec::new(),
                skipped: Some(
                    "its commit is no longer in the log (cleaned up after a checkpoint)"
                        .to_string(),
                ),
                unreadable: None,
            });
        };
        let actions = get_actions(v, &bytes).map_err(|e| self.log_error(e))?;
        let mut operation = None;
        let mut timestamp_ms = 0;
        let mut files = Vec::new();
        let mut rearranged = 0usize;
        let mut removed = 0usize;
        let mut unreadable = None;
        for action in actions {
            match action {
                Action::CommitInfo(info) => {
                    operation = info.operation.clone();
                    timestamp_ms = info
                        .in_commit_timestamp
                        .or(info.timestamp)
                        .unwrap_or_default();
                }
                Action::Metadata(metadata) => self.check_readable(metadata.configuration())?,
                Action::Add(add) if add.data_change => {
                    if add.deletion_vector.is_some() {
                        unreadable = Some(format!(
                            "data file `{}` has a deletion vector (rows deleted in place), which is not supported",
                            add.path
                        ));
                    }
                    files.push(DataFile {
                        path: self.local_path(&add.path)?,
                        size: u64::try_from(add.size).unwrap_or(0),
                        partitions: add
                            .partition_values
                            .into_iter()
                            .filter_map(|(k, v)| v.map(|v| (k, v)))
                            .collect(),
                        transformed: BTreeMap::new(),
                    });
                }
                Action::Add(_) => rearranged += 1,
                Action::Remove(_) => removed += 1,
                _ => {}
            }
        }
        let operation = operation.unwrap_or_else(|| "UNKNOWN".to_string());
        // A delete rewrites the files it touches without the deleted rows:
        // what it adds are rows evaluated before, not new data.
        if operation == "DELETE" && !files.is_empty() {
            let rewritten = files.len();
            return Ok(VersionChanges {
                snapshot_id: None,
                version,
                operation,
                timestamp_ms,
                files: Vec::new(),
                skipped: Some(format!(
                    "DELETE rewrote {rewritten} file(s) without the deleted rows: no new data"
                )),
                unreadable: None,
            });
        }
        let skipped = files.is_empty().then(|| {
            if rearranged > 0 {
                format!("{operation} rewrote {removed} file(s) into {rearranged} without new data")
            } else if removed > 0 {
                format!("{operation} removed {removed} file(s) and added none")
            } else {
                format!("{operation} added no data files")
            }
        });
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(VersionChanges {
            snapshot_id: None,
            version,
            operation,
            timestamp_ms,
            files,
            skipped,
            unreadable,
        })
    }

    /// The data files live at `version` (None: the latest) and that
    /// version: the whole table as of then (for baselines).
    pub async fn snapshot(&self, version: Option<u64>) -> Result<(u64, Vec<DataFile>), TableError> {
        let table = self.load(version).await?;
        let state = table.snapshot().map_err(|e| self.log_error(e))?;
        self.check_readable(state.metadata().configuration())?;
        let at = table
            .version()
            .ok_or_else(|| self.log_error("the table has no version"))?;
        let mut files = Vec::new();
        let mut views = table.get_active_add_actions_by_partitions(&[]);
        while let Some(view) = views.next().await {
            let view = view.map_err(|e| self.log_error(e))?;
            if view.deletion_vector_descriptor().is_some() {
                return Err(TableError::Unsupported {
                    format: FORMAT,
                    location: self.location.clone(),
                    reason: format!(
                        "data file `{}` has a deletion vector (rows deleted in place)",
                        view.path()
                    ),
                });
            }
            files.push(DataFile {
                path: self.decoded_local_path(&view.path())?,
                size: u64::try_from(view.size()).unwrap_or(0),
                partitions: view
                    .partition_values_map()
                    .into_iter()
                    .filter_map(|(k, v)| v.map(|v| (k, v)))
                    .collect(),
                transformed: BTreeMap::new(),
            });
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok((at, files))
    }
}
