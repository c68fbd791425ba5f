//! Inputs of a one-shot check: expanding PATH arguments into batch files and
//! matching each file to the rule files that apply to it.
//!
//! A PATH may be a file (taken as given, whatever its extension) or a
//! directory (searched recursively for `*.parquet`, skipping hidden and
//! `_`-prefixed entries such as `_SUCCESS`, `_temporary/` and `.crc` files,
//! which writers leave beside their data). Rule files' `match` globs are
//! matched against the path relative to the PATH argument a file came from; a
//! file given by name matches by its file name.
//!
//! A PATH may also be an object-store URL ([`crate::location`]): an object
//! (`s3://bucket/day=1/part-0.parquet`) is taken as given, a prefix
//! (`s3://bucket/flights/`) is listed for `*.parquet` keys with the same
//! leftovers skipped, and the input's path is the object's URL. A prefix
//! holding a Delta or Iceberg table (`_delta_log/`, `metadata/*.metadata.json`)
//! is that table, as a local folder would be.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::sources::lake::scan::is_ignored;
use crate::sources::partitions::partitions_of;

use crate::rules::RuleFile;

/// Errors expanding inputs: the user's (a path that does not exist).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// A PATH argument could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An object-store URL could not be listed (the message names it).
    #[error(transparent)]
    Object {
        /// What went wrong, secrets removed.
        source: crate::location::LocationError,
    },
}

/// One batch file to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// The file.
    pub path: PathBuf,
    /// The path relative to the PATH argument it came from (its file name
    /// when the argument was the file itself); what `match` globs see.
    pub relative: PathBuf,
    /// Hive partition values from the relative path's folders.
    pub partitions: BTreeMap<String, String>,
    /// Set when the input is a table (a folder with `_delta_log/`, or with
    /// Iceberg `metadata/`): its location and which version to read; `path`
    /// is the table's folder.
    pub table: Option<TableInput>,
}

/// A table given to `check` or `baseline`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInput {
    /// The table's format.
    pub format: crate::rules::TableFormat,
    /// The location as [`crate::sources::table::location_key`] writes it.
    pub location: String,
    /// The version (None: the latest).
    pub version: Option<u64>,
    /// The REST catalog that keeps the table (rule files' `table.catalog`).
    pub catalog: Option<crate::rules::CatalogConfig>,
}

impl Input {
    /// How the input is named in reports: the path as found.
    pub fn display(&self) -> String {
        self.path.display().to_string()
    }

    /// A table input for the table of `format` at `location`.
    pub fn table(location: &Path, format: crate::rules::TableFormat, version: Option<u64>) -> Self {
        Self {
            path: location.to_path_buf(),
            relative: location
                .file_name()
                .map(PathBuf::from)
                .unwrap_or_else(|| location.to_path_buf()),
            partitions: BTreeMap::new(),
            table: Some(TableInput {
                format,
                location: crate::sources::table::location_key(location),
                version,
                catalog: None,
            }),
        }
    }
}

/// The format of the table whose folder `path` is: Delta when it holds
/// `_delta_log/`, Iceberg when it holds `metadata/` with a
/// `*.metadata.json` file; `None` for any other folder.
pub fn table_format(path: &Path) -> Option<crate::rules::TableFormat> {
    if path.join("_delta_log").is_dir() {
        return Some(crate::rules::TableFormat::Delta);
    }
    let iceberg = std::fs::read_dir(path.join("metadata")).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            crate::sources::table::iceberg::is_metadata_file(&e.file_name().to_string_lossy())
        })
    });
    iceberg.then_some(crate::rules::TableFormat::Iceberg)
}

/// The format of the table whose prefix is `prefix`, from the keys listed
/// under it: as [`table_format`] tells a folder.
fn object_table_format(
    prefix: &str,
    listed: &[crate::location::Listed],
) -> Option<crate::rules::TableFormat> {
    let under = |folder: &'static str| {
        listed
            .iter()
            .filter_map(move |l| l.key.strip_prefix(prefix)?.strip_prefix(folder))
    };
    if under("_delta_log/").next().is_some() {
        return Some(crate::rules::TableFormat::Delta);
    }
    under("metadata/")
        .any(|name| !name.contains('/') && crate::sources::table::iceberg::is_metadata_file(name))
        .then_some(crate::rules::TableFormat::Iceberg)
}

/// The tables the rule files name (`table:`), as inputs at `version`: what
/// `check` and `baseline` read when no PATH is given.
pub fn tables_of(rules: &[RuleFile], version: Option<u64>) -> Vec<Input> {
    rules
        .iter()
        .filter_map(|r| r.table.as_ref())
        .map(|t| {
            let mut input = Input::table(&t.location, t.format, version);
            if let Some(table) = input.table.as_mut() {
                table.catalog = t.catalog.clone();
            }
            input
        })
        .collect()
}

/// Expands PATH arguments into input files, in a deterministic order.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<Input>, InputError> {
    let mut inputs = Vec::new();
    for root in paths {
        let meta = std::fs::metadata(root).map_err(|source| InputError::Read {
            path: root.clone(),
            source,
        })?;
        let format = meta.is_dir().then(|| table_format(root)).flatten();
        if let Some(format) = format {
            // A table is read through its log, never as loose files.
            inputs.push(Input::table(root, format, None));
        } else if meta.is_dir() {
            let mut found = Vec::new();
            walk(root, &mut found)?;
            found.sort();
            for path in found {
                let relative = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
                let partitions = partitions_of(&relative);
                inputs.push(Input {
                    path,
                    relative,
                    partitions,
                    table: None,
                });
            }
        } else {
            let relative = root
                .file_name()
                .map(PathBuf::from)
                .unwrap_or_else(|| root.clone());
            inputs.push(Input {
                path: root.clone(),
                relative,
                partitions: BTreeMap::new(),
                table: None,
            });
        }
    }
    Ok(inputs)
}

/// [`expand`], with object-store URLs among the PATH arguments listed
/// through clients built with `options`.
pub async fn expand_all(
    paths: &[PathBuf],
    options: &crate::location::ObjectStoreOptions,
) -> Result<Vec<Input>, InputError> {
    let mut inputs = Vec::new();
    for root in paths {
        match crate::location::ObjectUrl::from_path(root) {
            None => inputs.extend(expand(std::slice::from_ref(root))?),
            Some(url) => {
                let url = url.map_err(|source| InputError::Object { source })?;
                inputs.extend(expand_object(&url, options).await?);
            }
        }
    }
    Ok(inputs)
}

/// The inputs one object-store URL names: the object itself when it
/// exists, else the data objects under it as a prefix.
async fn expand_object(
    url: &crate::location::ObjectUrl,
    options: &crate::location::ObjectStoreOptions,
) -> Result<Vec<Input>, InputError> {
    use object_store::ObjectStoreExt;
    let store = crate::location::build_store(url, options)
        .map_err(|source| InputError::Object { source })?;
    let named = !url.key.is_empty() && !url.key.ends_with('/');
    let mut head_error = None;
    if named {
        let key = crate::location::key_path(&url.key);
        match store.head(&key).await {
            Ok(_) => {
                let relative = PathBuf::from(url.key.rsplit('/').next().unwrap_or(&url.key));
                return Ok(vec![Input {
                    table: None,
                    path: url.to_path(),
                    relative,
                    partitions: BTreeMap::new(),
                }]);
            }
            // Not an object: perhaps a prefix.
            Err(object_store::Error::NotFound { .. }) => {}
            // Some S3-compatible servers answer a HEAD of a prefix's name
            // with an error rather than 404 (s3s-fs: 500, its folder is
            // no file): the listing decides, and its error or emptiness
            // gives this one.
            Err(e) => {
                head_error = Some(InputError::Object {
                    source: crate::location::LocationError::List {
                        url: url.to_string(),
                        reason: crate::location::error_line(&e, options),
                    },
                });
            }
        }
    }
    let prefix = url.prefix();
    let listed = crate::location::list(store.as_ref(), url, None, options).await;
    let listed = match (listed, head_error) {
        (Ok(listed), Some(e)) if listed.is_empty() => return Err(e),
        (Ok(listed), _) => listed,
        (Err(_), Some(e)) => return Err(e),
        (Err(source), None) => return Err(InputError::Object { source }),
    };
    // Like a local path that does not exist.
    if named && listed.is_empty() {
        return Err(InputError::Object {
            source: crate::location::LocationError::Invalid {
                url: url.to_string(),
                reason: "no such object or prefix".to_string(),
            },
        });
    }
    // A table is read through its log, never as loose objects.
    if let Some(format) = object_table_format(&prefix, &listed) {
        return Ok(vec![Input::table(
            &url.with_key(url.key.trim_end_matches('/')).to_path(),
            format,
            None,
        )]);
    }
    let mut found: Vec<(PathBuf, String)> = listed
        .into_iter()
        .filter_map(|object| {
            let relative = PathBuf::from(object.key.strip_prefix(&prefix)?);
            (!is_ignored(&relative) && object.key.to_ascii_lowercase().ends_with(".parquet"))
                .then_some((relative, object.key))
        })
        .collect();
    // The order a local copy of the same files is checked in.
    found.sort();
    Ok(found
        .into_iter()
        .map(|(relative, key)| Input {
            table: None,
            path: url.with_key(&key).to_path(),
            partitions: partitions_of(&relative),
            relative,
        })
        .collect())
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> Result<(), InputError> {
    let entries = std::fs::read_dir(dir).map_err(|source| InputError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| InputError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // The same notion of writer leftovers as the agent's lake watcher.
        if is_ignored(Path::new(name.as_ref())) {
            continue;
        }
        let file_type = entry.file_type().map_err(|source| InputError::Read {
            path: path.clone(),
            source,
        })?;
        if file_type.is_dir() {
            walk(&path, found)?;
        } else if name.to_ascii_lowercase().ends_with(".parquet") {
            found.push(path);
        }
    }
    Ok(())
}

/// Which rule files apply to each input. With `single` (a rules *file* was
/// given) every input is checked against it; otherwise by `match` glob.
/// Returns (input, rule file index) pairs in input order, and unmatched inputs.
pub fn assign<'a>(
    inputs: &'a [Input],
    rules: &[RuleFile],
    single: bool,
) -> (Vec<(&'a Input, usize)>, Vec<&'a Input>) {
    let mut pairs = Vec::new();
    let mut unmatched = Vec::new();
    for input in inputs {
        let before = pairs.len();
        for (i, rule_file) in rules.iter().enumerate() {
            let applies = match &input.table {
                // A table: the rule file that names it (or the one given).
                Some(table) => {
                    single
                        || rule_file.table.as_ref().is_some_and(|t| {
                            crate::sources::table::location_key(&t.location) == table.location
                        })
                }
                None => single || rule_file.matches(&input.relative),
            };
            if applies {
                pairs.push((input, i));
            }
        }
        if pairs.len() == before {
            unmatched.push(input);
        }
    }
    (pairs, unmatched)
}
