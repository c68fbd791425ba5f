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
            },
            last,
        ))
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
        self.file.write_all(&bytes).map_err(io)?;
        self.file.sync_data().map_err(io)?;
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

/// The `agent.seq` of the last line of `text` (0 when there is none).
fn last_seq(text: &[u8]) -> u64 {
    text.split(|&b| b == b'\n')
        .rev()
        .find(|l| !l.is_empty())
        .and_then(|line| serde_json::from_slice::<serde_json::Value>(line).ok())
        .and_then(|v| v.pointer("/agent/seq").and_then(|s| s.as_u64()))
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
}
