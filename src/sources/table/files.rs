//! Where a table's files are: a local folder, or a prefix in an object
//! store (`s3://bucket/tables/events`, `az://…`, `gs://…`).
//!
//! Why one type: the Iceberg reader needs three things of a table's
//! location — read a file whole (metadata JSON, Avro manifests), list a
//! folder's names (`metadata/`) and name a data file so the engine can scan
//! it — and those are the only places a local table and an object-store
//! table differ. Object-store clients are the lake's own
//! ([`crate::location::build_store`]: the same environment variables and
//! `[lake.object_store]` settings), and a data file is named by its URL
//! carried as a path, which the engine scans through the store registered
//! for its bucket with ranged reads (nothing is downloaded whole).
//!
//! Every file read whole is at most [`MAX_TABLE_FILE_BYTES`].
//!
//! Errors keep the lake's split: an object that is not there is the
//! table's answer (`None`); anything else the store says
//! (refused credentials, an unreachable endpoint, a missing bucket) is
//! [`TableError::Store`]: the environment's, retried by the agent every
//! poll and never a verdict.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::{ObjectStore, ObjectStoreExt};

use super::TableError;
use crate::location::{ObjectStoreOptions, ObjectUrl};
use crate::rules::TableFormat;

/// The largest table file (Iceberg metadata JSON, manifest list, manifest,
/// version hint) read whole: far above any real table's (metadata files of
/// long histories reach tens of MiB, manifests a few), low enough that a
/// hostile or broken file cannot take the memory.
pub const MAX_TABLE_FILE_BYTES: u64 = 256 << 20;

/// A table's location, opened.
// One value per watched table, made once: the size of the larger variant
// costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub enum TableFiles {
    /// A local folder (absolute).
    Local(PathBuf),
    /// A prefix in an object store.
    Object {
        /// The table's URL (its key without a trailing `/`).
        url: ObjectUrl,
        /// The client for its bucket.
        store: Arc<dyn ObjectStore>,
        /// How the client was built (for redacting messages).
        options: ObjectStoreOptions,
    },
}

impl TableFiles {
    /// Opens `location` (a local path, or an object URL carried as a path):
    /// for an object store, builds its client.
    pub fn open(
        format: TableFormat,
        location: &Path,
        options: &ObjectStoreOptions,
    ) -> Result<Self, TableError> {
        match ObjectUrl::from_path(location) {
            None => Ok(TableFiles::Local(std::path::absolute(location).map_err(
                |e| TableError::NotATable {
                    format,
                    location: location.display().to_string(),
                    reason: e.to_string(),
                },
            )?)),
            Some(url) => {
                let url = url.map_err(|e| TableError::NotATable {
                    format,
                    location: location.display().to_string(),
                    reason: e.to_string(),
                })?;
                let url = url.with_key(url.key.trim_end_matches('/'));
                let store = crate::location::build_store(&url, options).map_err(|e| {
                    // The location is said once, by the table error.
                    let text = e.to_string();
                    let reason = text
                        .strip_prefix(&format!("{url}: "))
                        .unwrap_or(&text)
                        .to_string();
                    TableError::Store {
                        location: url.to_string(),
                        reason,
                    }
                })?;
                Ok(TableFiles::Object {
                    url,
                    store,
                    options: options.clone(),
                })
            }
        }
    }

    /// The object URL of the table, when it is in an object store.
    pub fn object_url(&self) -> Option<&ObjectUrl> {
        match self {
            TableFiles::Local(_) => None,
            TableFiles::Object { url, .. } => Some(url),
        }
    }

    /// The path naming `relative` (a `/`-separated path under the table,
    /// not percent-encoded): a local path, or the object's URL as a path.
    pub fn join(&self, relative: &str) -> PathBuf {
        match self {
            TableFiles::Local(root) => root.join(relative),
            TableFiles::Object { url, .. } => url.with_key(&self.key(relative)).to_path(),
        }
    }

    fn key(&self, relative: &str) -> String {
        match self {
            TableFiles::Local(_) => relative.to_string(),
            TableFiles::Object { url, .. } => {
                let relative = relative.trim_start_matches('/');
                if url.key.is_empty() {
                    relative.to_string()
                } else {
                    format!("{}/{relative}", url.key)
                }
            }
        }
    }

    /// The store's error as one line naming the table, secrets removed.
    pub fn store_error(&self, location: &str, e: &object_store::Error) -> TableError {
        let options = match self {
            TableFiles::Object { options, .. } => options.clone(),
            TableFiles::Local(_) => ObjectStoreOptions::default(),
        };
        TableError::Store {
            location: location.to_string(),
            reason: crate::location::error_line(e, &options),
        }
    }

    /// Reads the file at `path` (one [`Self::join`] gave) whole; `None`
    /// when it is not there. A file larger than [`MAX_TABLE_FILE_BYTES`] is
    /// an error before any of it is read.
    pub async fn read(
        &self,
        format: TableFormat,
        location: &str,
        path: &Path,
    ) -> Result<Option<Vec<u8>>, TableError> {
        let too_large = |size: u64| TableError::Log {
            format,
            location: location.to_string(),
            reason: format!(
                "{}: {size} bytes, more than the {} MiB a table's metadata file may have",
                path.display(),
                MAX_TABLE_FILE_BYTES >> 20
            ),
        };
        match self {
            TableFiles::Local(_) => {
                let read = std::fs::File::open(path).and_then(|file| {
                    let size = file.metadata()?.len();
                    if size > MAX_TABLE_FILE_BYTES {
                        return Ok(Err(size));
                    }
                    let mut bytes = Vec::with_capacity(size as usize);
                    std::io::Read::read_to_end(
                        &mut std::io::Read::take(file, MAX_TABLE_FILE_BYTES + 1),
                        &mut bytes,
                    )?;
                    Ok(match bytes.len() as u64 {
                        n if n > MAX_TABLE_FILE_BYTES => Err(n),
                        _ => Ok(bytes),
                    })
                });
                match read {
                    Ok(Ok(bytes)) => Ok(Some(bytes)),
                    Ok(Err(size)) => Err(too_large(size)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(TableError::Log {
                        format,
                        location: location.to_string(),
                        reason: format!("{}: {e}", path.display()),
                    }),
                }
            }
            TableFiles::Object { store, .. } => {
                let Some(Ok(object)) = ObjectUrl::from_path(path) else {
                    return Ok(None);
                };
                let key = crate::location::key_path(&object.key);
                let got = match store.get(&key).await {
                    Ok(got) => got,
                    Err(object_store::Error::NotFound { .. }) => return Ok(None),
                    Err(e) => return Err(self.store_error(location, &e)),
                };
                if got.meta.size > MAX_TABLE_FILE_BYTES {
                    return Err(too_large(got.meta.size));
                }
                match got.bytes().await {
                    Ok(bytes) => Ok(Some(bytes.to_vec())),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(self.store_error(location, &e)),
                }
            }
        }
    }

    /// The names of the files directly in the folder `relative` (empty when
    /// there is no such folder).
    pub async fn names(&self, location: &str, relative: &str) -> Result<Vec<String>, TableError> {
        match self {
            TableFiles::Local(root) => Ok(std::fs::read_dir(root.join(relative))
                .map(|entries| {
                    entries
                        .flatten()
                        .map(|e| e.file_name().to_string_lossy().to_string())
                        .collect()
                })
                .unwrap_or_default()),
            TableFiles::Object { url, store, .. } => {
                let folder = url.with_key(&self.key(relative));
                let prefix = folder.prefix();
                // Only this folder's objects (a delimiter listing): one
                // LIST request per 1,000 names.
                let listing = store
                    .list_with_delimiter(Some(&crate::location::key_path(
                        prefix.trim_end_matches('/'),
                    )))
                    .await;
                match listing {
                    Ok(listing) => Ok(listing
                        .objects
                        .into_iter()
                        .filter_map(|meta| {
                            meta.location
                                .as_ref()
                                .strip_prefix(&prefix)
                                .map(str::to_string)
                        })
                        .collect()),
                    // A missing prefix lists empty; a missing bucket is an
                    // error (as for the lake's listings).
                    Err(e) => Err(self.store_error(location, &e)),
                }
            }
        }
    }
}
