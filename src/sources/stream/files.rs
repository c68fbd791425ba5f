//! NDJSON files landing in a folder, windowed like the HTTP stream.
//!
//! The folder is listed every second; a file matching `include` is read once
//! its size and modification time stayed unchanged for `settle`. Its lines go
//! through the same decoding as an HTTP post, in chunks, into the stream's
//! [`WindowedLog`]; bad lines go to the dead-letter file as `file:line`.
//! Progress (lines consumed per file) is saved under the log's lock right
//! after each chunk is durable in the WAL, and every WAL frame carries it
//! too, so a crash re-reads nothing that is already in a window. A file that
//! grows after it was read (an append-only log) is read on from where it was;
//! one with another inode, or shorter than before, is a new file and is read
//! from its start. A read stops at the settled size, so bytes a writer adds
//! meanwhile (a half-written line) wait for the next read. When the agent
//! stops while the stream is full, the waiting chunk is not marked as read.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::http::{ROWS_PER_BATCH, decode_ndjson, event_line};
use super::log::{AppendError, FileOrigin};
use super::wal::sync_dir;
use super::{EventSchema, Result, StreamError, WindowedLog, rule_schema};
use crate::rules::RuleFile;

/// How often the folder is listed.
const LIST_EVERY: Duration = Duration::from_secs(1);

/// What is known of one file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct FileProgress {
    /// Lines consumed (accepted or rejected).
    lines: u64,
    /// Size when last read to the end.
    size: u64,
    /// Modification time (ns) when last read to the end.
    mtime_ns: i64,
    /// The file's inode when last read (0: unknown).
    #[serde(default)]
    inode: u64,
}

/// A file as listed.
#[derive(Debug, Clone, PartialEq)]
struct Listed {
    path: PathBuf,
    size: u64,
    mtime_ns: i64,
    inode: u64,
}

/// The NDJSON file source of one dataset.
pub struct FileSource {
    log: Arc<WindowedLog>,
    root: PathBuf,
    include: GlobSet,
    /// Folders never read (the agent's state folder: its dead letters are
    /// NDJSON too, and reading them would feed the stream its own rejects).
    skip: Vec<PathBuf>,
    settle: Duration,
    /// The longest line read (`max_line`); longer ones are dead letters.
    max_line: usize,
    rules: watch::Receiver<Arc<Vec<RuleFile>>>,
    progress_path: PathBuf,
    progress: Mutex<BTreeMap<String, FileProgress>>,
}

impl FileSource {
    /// A file source over `root` feeding `log`; progress lives in `dir`.
    /// `root` should be a canonical (resolved) path, as listings compare
    /// paths by prefix (see [`FileSource::skipping`]).
    pub fn new(
        log: Arc<WindowedLog>,
        dir: &Path,
        root: PathBuf,
        include: &[String],
        settle: Duration,
        max_line: usize,
        rules: watch::Receiver<Arc<Vec<RuleFile>>>,
    ) -> Result<Self> {
        let mut builder = GlobSetBuilder::new();
        for g in include {
            builder.add(Glob::new(g).map_err(|e| StreamError::Schema(e.to_string()))?);
        }
        let include = builder
            .build()
            .map_err(|e| StreamError::Schema(e.to_string()))?;
        let progress_path = dir.join("files.json");
        let mut progress: BTreeMap<String, FileProgress> = std::fs::read_to_string(&progress_path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        // Frames still in the WAL may be ahead of the saved progress (a crash
        // between the two writes): the larger count wins.
        for (file, lines) in &log.recovered {
            let p = progress.entry(file.clone()).or_default();
            p.lines = p.lines.max(*lines);
        }
        Ok(Self {
            log,
            root,
            include,
            skip: Vec::new(),
            settle,
            max_line,
            rules,
            progress_path,
            progress: Mutex::new(progress),
        })
    }

    /// Never reads anything under these (canonical) folders.
    pub fn skipping(mut self, folders: Vec<PathBuf>) -> Self {
        self.skip = folders;
        self
    }

    /// Lists and reads files until `stop`.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut seen: HashMap<PathBuf, (Listed, Instant)> = HashMap::new();
        loop {
            let mut ready = Vec::new();
            let listed = list(&self.root, &self.include, &self.skip);
            let now = Instant::now();
            seen.retain(|p, _| listed.iter().any(|l| &l.path == p));
            for file in listed {
                let rel = self.relative(&file.path);
                let known = self.progress.lock().ok().and_then(|p| p.get(&rel).cloned());
                if known.as_ref().is_some_and(|k| {
                    k.size == file.size && k.mtime_ns == file.mtime_ns && k.inode == file.inode
                }) {
                    continue;
                }
                let entry = seen.entry(file.path.clone()).or_insert((file.clone(), now));
                if entry.0 != file {
                    *entry = (file, now);
                } else if entry.1.elapsed() >= self.settle {
                    ready.push(file);
                }
            }
            for file in ready {
                let this = self.clone();
                let stop_flag = stop.clone();
                let read =
                    tokio::task::spawn_blocking(move || this.read_file(&file, &stop_flag)).await;
                match read {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::error!(source = %self.log.source().name, error = %e, "cannot read an event file; retrying")
                    }
                    Err(e) => tracing::error!(error = %e, "event file task failed"),
                }
                if *stop.borrow() {
                    return;
                }
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(LIST_EVERY) => {}
            }
        }
    }

    fn relative(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned()
    }

    /// The schema held, or adopted from these lines; `Ok(Err(reason))` when
    /// there is none, the reason every line of the chunk is a dead letter.
    fn schema(
        &self,
        first_lines: &[(u64, Vec<u8>)],
    ) -> Result<std::result::Result<EventSchema, String>> {
        let dataset = &self.log.source().dataset;
        let from_rule = self
            .rules
            .borrow()
            .iter()
            .find(|r| &r.dataset == dataset)
            .and_then(rule_schema)
            .transpose()
            .map_err(StreamError::Schema)?;
        if let Some(s) = self.log.schema(from_rule)? {
            return Ok(Ok(s));
        }
        match EventSchema::infer(first_lines.iter().map(|(_, l)| l.as_slice())) {
            Some(s) => match self.log.adopt_schema(s) {
                Ok(s) => Ok(Ok(s)),
                Err(e @ StreamError::SchemaTooWide { .. }) => Ok(Err(e.to_string())),
                Err(e) => Err(e),
            },
            None => Ok(Err("expected a JSON object".to_string())),
        }
    }

    /// Reads a settled file from where it was left, chunk by chunk, up to
    /// the settled size (bytes a writer adds meanwhile wait for the next
    /// read). A file with another inode, or shorter than when it was read, is
    /// a new file: read from its start.
    fn read_file(&self, file: &Listed, stop: &watch::Receiver<bool>) -> Result<()> {
        let path = &file.path;
        let rel = self.relative(path);
        let io = |source| StreamError::Io {
            path: path.to_path_buf(),
            source,
        };
        let start = {
            let mut progress = self
                .progress
                .lock()
                .map_err(|_| io(std::io::Error::other("progress lock poisoned")))?;
            let p = progress.entry(rel.clone()).or_default();
            if (p.inode != 0 && p.inode != file.inode) || file.size < p.size {
                tracing::info!(source = %self.log.source().name, file = %rel, "a new file under a name already read: reading it from the start");
                *p = FileProgress::default();
            }
            p.lines
        };
        let handle = std::fs::File::open(path).map_err(io)?;
        let mut reader =
            std::io::BufReader::with_capacity(1 << 20, std::io::Read::take(handle, file.size));
        let source_name = self.log.source().name.clone();
        let mut n = 0u64;
        let mut buf = Vec::new();
        let mut chunk: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut long: Vec<super::DeadLetter> = Vec::new();
        loop {
            buf.clear();
            let (read, too_long) =
                read_line_capped(&mut reader, &mut buf, self.max_line).map_err(io)?;
            if read > 0 {
                n += 1;
                if n > start && too_long {
                    long.push(super::DeadLetter::new(
                        &source_name,
                        format!("{rel}:{n}"),
                        format!("line longer than {} bytes", self.max_line),
                        &buf,
                    ));
                } else if n > start
                    && let Some(line) = event_line(&buf)
                {
                    chunk.push((n, line.to_vec()));
                }
            }
            let end = read == 0;
            if chunk.len() + long.len() >= ROWS_PER_BATCH || (end && n > start) {
                if !self.flush_chunk(&rel, &source_name, &chunk, &long, n, stop)? {
                    // Stopping while the stream was full: this chunk was not
                    // taken, and the progress saved says so.
                    return Ok(());
                }
                chunk.clear();
                long.clear();
            }
            if end {
                break;
            }
        }
        let mut progress = self
            .progress
            .lock()
            .map_err(|_| io(std::io::Error::other("progress lock poisoned")))?;
        let p = progress.entry(rel).or_default();
        p.lines = p.lines.max(n);
        p.size = file.size;
        p.mtime_ns = file.mtime_ns;
        p.inode = file.inode;
        save(&self.progress_path, &progress)
    }

    /// Decodes and appends one chunk (through line `through`), waiting while
    /// the stream is full; `false` when it stopped waiting because the agent
    /// is stopping (nothing of the chunk was taken). `long` are the chunk's
    /// lines over `max_line`, already dead letters.
    fn flush_chunk(
        &self,
        rel: &str,
        source_name: &str,
        chunk: &[(u64, Vec<u8>)],
        long: &[super::DeadLetter],
        through: u64,
        stop: &watch::Receiver<bool>,
    ) -> Result<bool> {
        let schema = match self.schema(chunk)? {
            Ok(s) => s,
            // No schema (no line is a JSON object, or they would fix one
            // too wide): all of them are bad records.
            Err(reason) => {
                return self.reject_chunk(rel, source_name, chunk, long, through, &reason);
            }
        };
        let input: usize = chunk.iter().map(|(_, l)| l.len() + 1).sum();
        if let Err(e) =
            super::log::wal_budget_before_decoding(chunk.len() as u64, schema.arrow(), input)
        {
            return self.reject_chunk(rel, source_name, chunk, long, through, &e.to_string());
        }
        let decoded = decode_ndjson(
            chunk.iter().map(|(n, l)| (*n, l.as_slice())),
            &schema,
            source_name,
            &|n| format!("{rel}:{n}"),
        )
        .map_err(StreamError::Schema)?;
        if let Err(e) = super::log::wal_budget(&decoded.batches, input) {
            return self.reject_chunk(rel, source_name, chunk, long, through, &e.to_string());
        }
        let origin = FileOrigin {
            file: rel.to_string(),
            row_lines: decoded.row_lines.clone(),
            through,
        };
        loop {
            let appended = self.log.append(
                &decoded.batches,
                Some(&origin),
                || {
                    self.log.dead.write_text(&decoded.rejected.text())?;
                    self.log.dead.write(long)?;
                    self.log.stats.rejected.fetch_add(
                        decoded.rejected.count() + long.len() as u64,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    Ok(())
                },
                || self.save_lines(rel, through),
            );
            match appended {
                Ok(_) => return Ok(true),
                Err(AppendError::Full { .. }) => {
                    if *stop.borrow() {
                        return Ok(false);
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(AppendError::Failed(e)) => return Err(e),
            }
        }
    }

    /// Makes every line of a chunk a dead letter for `reason` (with the
    /// chunk's over-long lines) and marks the chunk read.
    fn reject_chunk(
        &self,
        rel: &str,
        source_name: &str,
        chunk: &[(u64, Vec<u8>)],
        long: &[super::DeadLetter],
        through: u64,
        reason: &str,
    ) -> Result<bool> {
        let mut rejects = super::Rejects::new(source_name, super::DEAD_LETTER_BUDGET);
        for (n, l) in chunk {
            rejects.push(format!("{rel}:{n}"), reason.to_string(), l);
        }
        self.log.dead.write_text(&rejects.text())?;
        self.log.dead.write(long)?;
        self.log.stats.rejected.fetch_add(
            rejects.count() + long.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        self.save_lines(rel, through)?;
        Ok(true)
    }

    fn save_lines(&self, rel: &str, lines: u64) -> Result<()> {
        let mut progress = self.progress.lock().map_err(|_| StreamError::Io {
            path: self.progress_path.clone(),
            source: std::io::Error::other("progress lock poisoned"),
        })?;
        let p = progress.entry(rel.to_string()).or_default();
        p.lines = lines;
        save(&self.progress_path, &progress)
    }
}

/// Reads one line (through its `\n`, if any) into `buf`, keeping at most
/// `max + 2` bytes of it (the line and a `\r\n`): the rest of a longer line
/// is read and dropped, so a file without line breaks never fills memory.
/// Returns the bytes consumed (0 at the end) and whether the line, without
/// its ending, was longer than `max`.
fn read_line_capped(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<(usize, bool)> {
    let keep = max.saturating_add(2);
    let mut consumed = 0usize;
    let mut over = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            break;
        }
        let (part, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        let room = keep.saturating_sub(buf.len());
        if part.len() > room {
            over = true;
        }
        buf.extend_from_slice(&part[..part.len().min(room)]);
        let used = part.len();
        reader.consume(used);
        consumed += used;
        if done {
            break;
        }
    }
    let too_long = over || event_line(buf).is_some_and(|l| l.len() > max);
    Ok((consumed, too_long))
}

fn save(path: &Path, progress: &BTreeMap<String, FileProgress>) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec(progress).unwrap_or_default();
    let io = |source| StreamError::Io {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir).map_err(io)?;
    }
    Ok(())
}

/// Files under `root` matching `include` (hidden and `_` names skipped),
/// with size, modification time (ns) and inode.
fn list(root: &Path, include: &GlobSet, skip: &[PathBuf]) -> Vec<Listed> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name.starts_with('_') || name.ends_with(".tmp") {
                continue;
            }
            let path = e.path();
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                if !skip.iter().any(|s| path.starts_with(s)) {
                    dirs.push(path);
                }
            } else if meta.is_file() && include.is_match(path.strip_prefix(root).unwrap_or(&path)) {
                let mtime_ns = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_nanos() as i64)
                    .unwrap_or(0);
                out.push(Listed {
                    path,
                    size: meta.len(),
                    mtime_ns,
                    inode: meta.ino(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}
