//! The results log: every evaluation's report as one JSON line
//! (`results.jsonl` in the state folder), in `seq` order, rotated by size.
//!
//! The log is written *after* the store has committed the evaluation, so it
//! can always be repaired from the store: on open, a torn last line (the agent
//! was killed mid-write) is cut off, and the caller appends every stored
//! report whose seq is past the last one in the log. Each line is flushed to
//! disk before the next evaluation is acknowledged.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The current log's file name; rotated ones get `.1` (newest) … `.N`.
pub const RESULTS_LOG: &str = "results.jsonl";

/// Results log errors (I/O on the state folder).
#[derive(Debug, thiserror::Error)]
#[error("results log {}: {source}", path.display())]
pub struct ResultsLogError {
    /// The file.
    pub path: PathBuf,
    /// The I/O error.
    pub source: std::io::Error,
}

/// An open results log.
pub struct ResultsLog {
    dir: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    keep: usize,
    /// The seq of the last line written.
    last: u64,
    /// A write failed since: the log lacks stored reports after `last`, and
    /// the file may hold a torn line if cutting it back failed too.
    behind: bool,
}

impl ResultsLog {
    /// Opens (or creates) the log in `dir`; returns it with the last seq it
    /// holds (0 when empty).
    pub fn open(dir: &Path, max_size: u64, keep: usize) -> Result<(Self, u64), ResultsLogError> {
        let path = dir.join(RESULTS_LOG);
        let io = |source| ResultsLogError {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        let mut text = Vec::new();
        file.read_to_end(&mut text).map_err(io)?;
        // Cut a torn last line.
        let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if complete < text.len() {
            file.set_len(complete as u64).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        file.seek(SeekFrom::End(0)).map_err(io)?;
        let mut last = last_seq(&text[..complete]);
        if last == 0 {
            // A rotation may have just emptied the current file.
            if let Ok(rotated) = std::fs::read(dir.join(format!("{RESULTS_LOG}.1"))) {
                last = last_seq(&rotated);
            }
        }
        Ok((
            Self {
                dir: dir.to_path_buf(),
                file,
                size: complete as u64,
                max_size: max_size.max(1),
                keep,
                last,
                behind: false,
            },
            last,
        ))
    }

    /// The seq of the last line written.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Whether a failed write left the log behind the store.
    pub fn is_behind(&self) -> bool {
        self.behind
    }

    /// Appends the report with this `seq`, first catching up from the store
    /// (`stored_after(n)`: every stored line after seq `n`, in order) when
    /// an earlier append failed — so the log never skips a report, never
    /// repeats one, and a failure never leaves half a line for the next
    /// one to be glued to.
    pub fn append_report<E: std::fmt::Display>(
        &mut self,
        seq: u64,
        line: &str,
        stored_after: impl FnOnce(u64) -> Result<Vec<(u64, String)>, E>,
    ) -> Result<(), ResultsLogError> {
        if !self.behind {
            return self.append_seq(seq, line);
        }
        let missing = self.catch_up(stored_after)?;
        if self.last < seq {
            self.append_seq(seq, line)?;
        }
        tracing::info!(
            caught_up = missing,
            last = self.last,
            "results log caught up from the store after a failed write"
        );
        Ok(())
    }

    /// [`ResultsLog::append_report`] for several consecutive reports, with
    /// one write and one flush to disk for all of them (the lines of one
    /// group commit of the store).
    pub fn append_reports<E: std::fmt::Display>(
        &mut self,
        lines: &[(u64, &str)],
        stored_after: impl FnOnce(u64) -> Result<Vec<(u64, String)>, E>,
    ) -> Result<(), ResultsLogError> {
        if self.behind {
            // The store holds these lines too: catching up writes them.
            let missing = self.catch_up(stored_after)?;
            let fresh: Vec<(u64, &str)> = lines
                .iter()
                .copied()
                .filter(|(seq, _)| *seq > self.last)
                .collect();
            self.append_group(&fresh)?;
            tracing::info!(
                caught_up = missing,
                last = self.last,
                "results log caught up from the store after a failed write"
            );
            return Ok(());
        }
        self.append_group(lines)
    }

    /// Appends lines in order with one flush (more when a rotation falls
    /// among them); on failure cuts back to the last flushed line and
    /// marks the log behind.
    fn append_group(&mut self, lines: &[(u64, &str)]) -> Result<(), ResultsLogError> {
        let path = self.dir.join(RESULTS_LOG);
        let io = |source| ResultsLogError {
            path: path.clone(),
            source,
        };
        let mut bytes = Vec::new();
        let mut last = None;
        for (seq, line) in lines {
            let pending = bytes.len() as u64;
            if self.size + pending > 0
                && self.size + pending + line.len() as u64 + 1 > self.max_size
            {
                self.flush_group(&mut bytes, &mut last).map_err(io)?;
                if self.size > 0 {
                    self.rotate().map_err(|e| {
                        self.behind = true;
                        io(e)
                    })?;
                }
            }
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
            last = Some(*seq);
        }
        self.flush_group(&mut bytes, &mut last).map_err(io)
    }

    /// Writes and syncs `bytes` (lines up to seq `last`), then clears them.
    fn flush_group(&mut self, bytes: &mut Vec<u8>, last: &mut Option<u64>) -> std::io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let written = self
            .file
            .write_all(bytes)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // As in `append`: never leave part of a line for the next one
            // (a failed cut is repaired by the catch-up's reopen).
            let _ = self
                .file
                .set_len(self.size)
                .and_then(|()| self.file.sync_data());
            self.behind = true;
            return Err(e);
        }
        self.size += bytes.len() as u64;
        if let Some(seq) = last.take() {
            self.last = seq;
        }
        bytes.clear();
        Ok(())
    }

    /// When a write failed: cuts a torn tail and appends what the store
    /// holds after the last line (`stored_after`), so the log is whole
    /// again even if no new report comes. Returns the lines added.
    pub fn catch_up<E: std::fmt::Display>(
        &mut self,
        stored_after: impl FnOnce(u64) -> Result<Vec<(u64, String)>, E>,
    ) -> Result<usize, ResultsLogError> {
        if !self.behind {
            return Ok(0);
        }
        let path = self.dir.join(RESULTS_LOG);
        // Cut a torn tail the failed write may have left (when cutting it
        // back at the time failed too), then add what the store has.
        let (fresh, last) = Self::open(&self.dir, self.max_size, self.keep)?;
        *self = fresh;
        self.behind = true;
        let missing = stored_after(last).map_err(|e| ResultsLogError {
            path,
            source: std::io::Error::other(format!("cannot read the store to catch up: {e}")),
        })?;
        for (n, text) in &missing {
            self.append_seq(*n, text)?;
        }
        self.behind = false;
        Ok(missing.len())
    }

    fn append_seq(&mut self, seq: u64, line: &str) -> Result<(), ResultsLogError> {
        match self.append(line) {
            Ok(()) => {
                self.last = seq;
                Ok(())
            }
            Err(e) => {
                self.behind = true;
                Err(e)
            }
        }
    }

    /// Appends one line (without its newline) and syncs it to disk.
    pub fn append(&mut self, line: &str) -> Result<(), ResultsLogError> {
        let path = self.dir.join(RESULTS_LOG);
        let io = |source| ResultsLogError {
            path: path.clone(),
            source,
        };
        if self.size > 0 && self.size + line.len() as u64 + 1 > self.max_size {
            self.rotate().map_err(io)?;
        }
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        let written = self
            .file
            .write_all(&bytes)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Part of the line may be on disk (a full disk takes what fits):
            // cut it back so the next line starts on a line of its own.
            let cut = self
                .file
                .set_len(self.size)
                .and_then(|()| self.file.sync_data());
            if cut.is_err() {
                self.behind = true;
            }
            return Err(io(e));
        }
        self.size += bytes.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let name = |n: usize| self.dir.join(format!("{RESULTS_LOG}.{n}"));
        if self.keep == 0 {
            self.file.set_len(0)?;
        } else {
            let _ = std::fs::remove_file(name(self.keep));
            for n in (1..self.keep).rev() {
                if name(n).exists() {
                    std::fs::rename(name(n), name(n + 1))?;
                }
            }
            std::fs::rename(self.dir.join(RESULTS_LOG), name(1))?;
            self.file = OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .open(self.dir.join(RESULTS_LOG))?;
        }
        self.size = 0;
        Ok(())
    }
}

/// The `agent.seq` of the last line of `text` that has one (0 when none
/// does). A damaged line (two glued by an old failed write) is passed over
/// rather than read as "nothing logged", which would append every stored
/// report again.
fn last_seq(text: &[u8]) -> u64 {
    text.split(|&b| b == b'\n')
        .rev()
        .filter(|l| !l.is_empty())
        .find_map(|line| {
            serde_json::from_slice::<serde_json::Value>(line)
                .ok()?
                .pointer("/agent/seq")?
                .as_u64()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64) -> String {
        format!(
            "{{\"agent\":{{\"seq\":{seq}}},\"pad\":\"{}\"}}",
            "x".repeat(20)
        )
    }

    #[test]
    fn torn_lines_are_cut_and_the_last_seq_found() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, last) = ResultsLog::open(dir.path(), 1 << 20, 2).unwrap();
        assert_eq!(last, 0);
        log.append(&line(1)).unwrap();
        log.append(&line(2)).unwrap();
        drop(log);
        let path = dir.path().join(RESULTS_LOG);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"agent\":{\"se").unwrap();
        drop(f);
        let (mut log, last) = ResultsLog::open(dir.path(), 1 << 20, 2).unwrap();
        assert_eq!(last, 2);
        log.append(&line(3)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("{}\n{}\n{}\n", line(1), line(2), line(3)));
    }

    #[test]
    fn rotation_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let size = line(1).len() as u64 + 1;
        let (mut log, _) = ResultsLog::open(dir.path(), 2 * size, 2).unwrap();
        for seq in 1..=7 {
            log.append(&line(seq)).unwrap();
        }
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert_eq!(read(RESULTS_LOG), format!("{}\n", line(7)));
        assert_eq!(
            read("results.jsonl.1"),
            format!("{}\n{}\n", line(5), line(6))
        );
        assert_eq!(
            read("results.jsonl.2"),
            format!("{}\n{}\n", line(3), line(4))
        );
        assert!(!dir.path().join("results.jsonl.3").exists());
        drop(log);
        // Just rotated: the current file is empty, the last seq is in `.1`.
        std::fs::write(dir.path().join(RESULTS_LOG), "").unwrap();
        let (_, last) = ResultsLog::open(dir.path(), 2 * size, 2).unwrap();
        assert_eq!(last, 6);
    }

    #[test]
    fn issue_15_a_line_glued_to_a_torn_one_does_not_make_a_restart_log_everything_again() {
        let dir = tempfile::tempdir().unwrap();
        let glued = format!("{}{}", &line(3)[..10], line(4));
        std::fs::write(
            dir.path().join(RESULTS_LOG),
            format!("{}\n{}\n{glued}\n", line(1), line(2)),
        )
        .unwrap();
        let (_, last) = ResultsLog::open(dir.path(), 1 << 20, 2).unwrap();
        assert_eq!(last, 2);
    }

    #[test]
    fn issue_15_after_a_failed_append_the_log_catches_up_from_the_store_without_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = ResultsLog::open(dir.path(), 1 << 20, 2).unwrap();
        let never = |_: u64| -> Result<Vec<(u64, String)>, String> { panic!("not behind") };
        log.append_report(1, &line(1), never).unwrap();
        log.append_report(2, &line(2), never).unwrap();
        // As a failed write leaves it: behind, half a line on disk.
        log.behind = true;
        let path = dir.path().join(RESULTS_LOG);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&line(3).as_bytes()[..7]).unwrap();
        drop(f);
        let mut asked = None;
        log.append_report(5, &line(5), |after| {
            asked = Some(after);
            Ok::<_, String>((3..=5).map(|n| (n, line(n))).collect())
        })
        .unwrap();
        assert_eq!(asked, Some(2));
        assert!(!log.is_behind());
        assert_eq!(log.last(), 5);
        let want: String = (1..=5).map(|n| format!("{}\n", line(n))).collect();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), want);
        log.append_report(6, &line(6), never).unwrap();
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .ends_with(&format!("{}\n", line(6)))
        );
    }

    #[test]
    fn issue_19_a_group_append_writes_what_single_appends_write_across_rotations() {
        let size = line(1).len() as u64 + 1;
        let never = |_: u64| -> Result<Vec<(u64, String)>, String> { panic!("not behind") };
        let files = |dir: &Path| -> Vec<String> {
            [RESULTS_LOG, "results.jsonl.1", "results.jsonl.2"]
                .iter()
                .map(|n| std::fs::read_to_string(dir.join(n)).unwrap_or_default())
                .collect()
        };
        let single = tempfile::tempdir().unwrap();
        let (mut log, _) = ResultsLog::open(single.path(), 2 * size, 2).unwrap();
        for seq in 1..=7 {
            log.append_report(seq, &line(seq), never).unwrap();
        }
        let grouped = tempfile::tempdir().unwrap();
        let (mut log, _) = ResultsLog::open(grouped.path(), 2 * size, 2).unwrap();
        let lines: Vec<(u64, String)> = (1..=7).map(|n| (n, line(n))).collect();
        let (first, rest) = lines.split_at(1);
        for group in [first, rest] {
            let refs: Vec<(u64, &str)> = group.iter().map(|(n, l)| (*n, l.as_str())).collect();
            log.append_reports(&refs, never).unwrap();
        }
        assert_eq!(log.last(), 7);
        assert_eq!(files(grouped.path()), files(single.path()));
        assert_eq!(files(grouped.path())[0], format!("{}\n", line(7)));
        // Behind (a failed write): the group's lines come from the store
        // once, not twice.
        log.behind = true;
        let mut asked = None;
        log.append_reports(&[(8, &line(8)), (9, &line(9))], |after| {
            asked = Some(after);
            Ok::<_, String>(vec![(8, line(8))])
        })
        .unwrap();
        assert_eq!(asked, Some(7));
        assert_eq!(log.last(), 9);
        let all: String = files(grouped.path())
            .iter()
            .rev()
            .map(String::as_str)
            .collect();
        let want: String = (5..=9).map(|n| format!("{}\n", line(n))).collect();
        assert_eq!(all, want);
    }
}
