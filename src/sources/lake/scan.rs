//! What in a lake folder is a batch, which version of it is on disk, and
//! whether it is complete: pure functions over paths and file metadata, so
//! the watcher loop stays about timing.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use globset::GlobSet;

use crate::report::BatchVersion;
use crate::rules::{BatchUnit, RuleFile};

/// Marker file that writers (Spark, Hive, MapReduce) drop in a folder when
/// all its part files are written.
pub const SUCCESS_MARKER: &str = "_SUCCESS";

/// Whether a path (relative to a watched folder) is a writer's temporary or
/// bookkeeping file rather than data: any segment starting with `.` or `_`
/// (hidden files, `_SUCCESS`, `_temporary/`, `_committed_…`), `*.tmp`,
/// `*.crc`, `*.inprogress`.
pub fn is_ignored(relative: &Path) -> bool {
    relative.components().any(|c| match c {
        Component::Normal(name) => {
            let name = name.to_string_lossy();
            name.starts_with('.')
                || name.starts_with('_')
                || name.ends_with(".tmp")
                || name.ends_with(".crc")
                || name.ends_with(".inprogress")
        }
        _ => false,
    })
}

/// Which files of the lake are considered at all.
#[derive(Debug, Clone)]
pub struct Filter {
    /// Include globs (relative to the watched folder).
    pub include: GlobSet,
    /// Exclude globs.
    pub exclude: GlobSet,
}

impl Filter {
    /// Whether a file (relative path) is a data file to consider.
    pub fn accepts(&self, relative: &Path) -> bool {
        !is_ignored(relative) && self.include.is_match(relative) && !self.exclude.is_match(relative)
    }
}

/// A batch a file belongs to, for one rule file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BatchKey {
    /// The dataset (rule file) it is evaluated for.
    pub dataset: String,
    /// Index of the watched folder.
    pub root: usize,
    /// The batch's path relative to the watched folder: the file, or the
    /// folder of part files.
    pub relative: PathBuf,
    /// File or folder.
    pub unit: BatchUnit,
}

/// The batches a data file belongs to: one per rule file whose `match`
/// applies. Empty when no rule file matches.
pub fn batches_of(root: usize, relative: &Path, rules: &[RuleFile]) -> Vec<BatchKey> {
    rules
        .iter()
        .filter(|r| r.matches(relative))
        .map(|r| BatchKey {
            dataset: r.dataset.clone(),
            root,
            relative: match r.batch {
                BatchUnit::File => relative.to_path_buf(),
                BatchUnit::Directory => {
                    relative.parent().map(Path::to_path_buf).unwrap_or_default()
                }
            },
            unit: r.batch,
        })
        .collect()
}

/// What is on disk for a batch right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The version (size, mtime, parts).
    pub version: BatchVersion,
    /// The data files (one for a file batch).
    pub files: Vec<PathBuf>,
    /// A folder batch's `_SUCCESS` marker is present.
    pub marker: bool,
}

/// A file's modification time in nanoseconds since the epoch (part of its
/// batch version).
pub fn modified_ns(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Looks at a batch on disk; None when it is gone (or a folder with no part files).
pub fn observe(root: &Path, key: &BatchKey, filter: &Filter) -> Option<Observed> {
    let path = root.join(&key.relative);
    match key.unit {
        BatchUnit::File => {
            // Not `metadata`: a symbolic link is not followed.
            let meta = std::fs::symlink_metadata(&path)
                .ok()
                .filter(|m| m.is_file())?;
            Some(Observed {
                version: BatchVersion {
                    kind: "file".to_string(),
                    path: path.display().to_string(),
                    size: meta.len(),
                    modified_ns: modified_ns(&meta),
                    parts: 1,
                    table: None,
                    etag: None,
                },
                files: vec![path],
                marker: false,
            })
        }
        BatchUnit::Directory => {
            let mut files = Vec::new();
            walk(root, &path, filter, &mut |file, _| {
                files.push(file.to_path_buf())
            });
            files.sort();
            if files.is_empty() {
                return None;
            }
            let mut size = 0;
            let mut modified = 0;
            for file in &files {
                let meta = std::fs::metadata(file).ok()?;
                size += meta.len();
                modified = modified.max(modified_ns(&meta));
            }
            Some(Observed {
                version: BatchVersion {
                    kind: "directory".to_string(),
                    path: path.display().to_string(),
                    size,
                    modified_ns: modified,
                    parts: files.len() as u64,
                    table: None,
                    etag: None,
                },
                marker: path.join(SUCCESS_MARKER).is_file(),
                files,
            })
        }
    }
}

/// Calls `found(path, relative)` for every accepted data file under `dir`
/// (recursively), in no particular order. Unreadable folders are skipped:
/// the next scan tries again.
///
/// Symbolic links are not followed (neither to folders nor to files): a
/// link could lead out of the lake, or in a loop. A folder that cannot be
/// read (other than one that vanished meanwhile) is counted in
/// [`LISTING_ERRORS`] with its error, so that the agent can say the lake is
/// not fully visible rather than silently see less of it.
pub fn walk(root: &Path, dir: &Path, filter: &Filter, found: &mut dyn FnMut(&Path, &Path)) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            // A watched folder that cannot be read is an episode (a mount
            // that went away, descriptors exhausted). Below it, a folder may
            // vanish while listed, and one that is not ours to read (say
            // `lost+found`) stays so: neither makes the agent degraded.
            let transient = !matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            );
            if dir == root || transient {
                note_listing_error(dir, &e);
            } else if e.kind() == std::io::ErrorKind::PermissionDenied {
                tracing::debug!(folder = %crate::report::escape_control(&dir.display().to_string()), "cannot read folder: skipped");
            }
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                note_listing_error(dir, &e);
                continue;
            }
        };
        let path = entry.path();
        let Ok(relative) = path.strip_prefix(root) else {
            continue;
        };
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        if file_type.is_symlink() {
            continue;
        }
        if file_type.is_dir() {
            if !is_ignored(relative) {
                walk(root, &path, filter, found);
            }
        } else if filter.accepts(relative) {
            found(&path, relative);
        }
    }
}

/// Folders that could not be read by listings, with the latest error: a
/// process-wide tally that the lake source turns into a log line per episode
/// and a degraded state (see `LakeStats::listing_error`).
pub static LISTING_ERRORS: std::sync::Mutex<(u64, Option<String>)> =
    std::sync::Mutex::new((0, None));

fn note_listing_error(dir: &Path, e: &std::io::Error) {
    if let Ok(mut tally) = LISTING_ERRORS.lock() {
        tally.0 += 1;
        tally.1 = Some(format!(
            "cannot list {}: {e}",
            crate::report::escape_control(&dir.display().to_string())
        ));
    }
}

/// Takes the listing errors noted since the last call: (count, latest).
pub fn take_listing_errors() -> (u64, Option<String>) {
    LISTING_ERRORS
        .lock()
        .map(|mut tally| std::mem::take(&mut *tally))
        .unwrap_or_default()
}

/// Whether a file ends with a Parquet footer that parses: the one sure sign
/// a writer finished it (the footer is written last).
pub fn footer_parses(path: &Path) -> bool {
    let Ok(mut file) = std::fs::File::open(path) else {
        return false;
    };
    // A footer the parquet crate would take unbounded time to skip through
    // does not parse (the engine then reports it as invalid).
    if crate::engine::guard::check_footer(&mut file).is_err() {
        return false;
    }
    parquet::file::metadata::ParquetMetaDataReader::new()
        .parse_and_finish(&file)
        .is_ok()
}

/// Every accepted file under a watched folder grouped into batches, plus the
/// number of files no rule file matched.
pub fn scan_root(
    index: usize,
    root: &Path,
    filter: &Filter,
    rules: &[RuleFile],
    tables: &[PathBuf],
) -> (BTreeMap<BatchKey, ()>, u64) {
    let mut batches = BTreeMap::new();
    let mut unmatched = 0;
    walk(root, root, filter, &mut |_, relative| {
        // A table's files are the table's (read through its log): neither
        // batches nor unmatched files.
        if !tables.is_empty() && tables.iter().any(|t| root.join(relative).starts_with(t)) {
            return;
        }
        let keys = batches_of(index, relative, rules);
        if keys.is_empty() {
            unmatched += 1;
        }
        for key in keys {
            batches.insert(key, ());
        }
    });
    (batches, unmatched)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_leftovers_are_ignored() {
        for p in [
            ".hidden.parquet",
            "_SUCCESS",
            "a/_temporary/0/part-0.parquet",
            "part-0.parquet.tmp",
            "a/.part-0.parquet.crc",
            "part-0.parquet.crc",
            "x.parquet.inprogress",
        ] {
            assert!(is_ignored(Path::new(p)), "{p}");
        }
        for p in [
            "part-0.parquet",
            "day=2024-05-01/part-0.parquet",
            "a.b/c.parquet",
        ] {
            assert!(!is_ignored(Path::new(p)), "{p}");
        }
    }

    #[test]
    fn a_file_belongs_to_one_batch_per_matching_rule_file() {
        let parse =
            |name: &str, text: &str| crate::rules::parse_rule_file(Path::new(name), text).unwrap();
        let rules = vec![
            parse("a.yaml", "dataset: files\nmatch: \"orders/**/*.parquet\"\n"),
            parse(
                "b.yaml",
                "dataset: folders\nmatch: \"orders/**/*.parquet\"\nbatch: directory\n",
            ),
            parse("c.yaml", "dataset: other\nmatch: \"misc/*.parquet\"\n"),
        ];
        let keys = batches_of(0, Path::new("orders/day=1/part-0.parquet"), &rules);
        let got: Vec<(&str, &Path, BatchUnit)> = keys
            .iter()
            .map(|k| (k.dataset.as_str(), k.relative.as_path(), k.unit))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "files",
                    Path::new("orders/day=1/part-0.parquet"),
                    BatchUnit::File
                ),
                ("folders", Path::new("orders/day=1"), BatchUnit::Directory),
            ]
        );
        assert!(batches_of(0, Path::new("elsewhere/x.parquet"), &rules).is_empty());
    }

    #[test]
    fn footers_tell_complete_files() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.parquet");
        let spec = crate::demo::FlightsSpec {
            rows: 100,
            ..Default::default()
        };
        crate::demo::write_flights(&good, &spec).unwrap();
        assert!(footer_parses(&good));
        let bytes = std::fs::read(&good).unwrap();
        let half = dir.path().join("half.parquet");
        std::fs::write(&half, &bytes[..bytes.len() / 2]).unwrap();
        assert!(!footer_parses(&half));
        let junk = dir.path().join("junk.parquet");
        std::fs::write(&junk, b"not parquet at all").unwrap();
        assert!(!footer_parses(&junk));
        assert!(!footer_parses(&dir.path().join("missing.parquet")));
    }
}
