//! Helpers shared by the measuring examples (`agent_figures`,
//! `agent_latency`): reading a process's figures from /proc and waiting on
//! the agent's results log. Included by `#[path]`; each example uses a
//! subset, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// A `kB`/count field of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`, …).
pub fn proc_field(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Counts the results log's lines (reports recorded) as it grows, without
/// parsing, reading only what was appended since the last call. Re-reading
/// the whole log every few milliseconds (as the harness once did) reads
/// megabytes per poll once hundreds of reports are in: a measurable share
/// of a 2-core machine taken from the agent being measured.
pub struct LineCounter {
    path: std::path::PathBuf,
    offset: u64,
    lines: usize,
}

impl LineCounter {
    /// A counter of `state`'s results log, from its start.
    pub fn new(state: &Path) -> Self {
        Self {
            path: state.join("results.jsonl"),
            offset: 0,
            lines: 0,
        }
    }

    /// Lines recorded so far.
    pub fn count(&mut self) -> usize {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return self.lines;
        };
        if file.metadata().map(|m| m.len()).unwrap_or(0) < self.offset {
            // Replaced by a shorter log: count from its start.
            (self.offset, self.lines) = (0, 0);
        }
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return self.lines;
        }
        let mut appended = Vec::new();
        if file.read_to_end(&mut appended).is_ok() {
            self.offset += appended.len() as u64;
            self.lines += appended.iter().filter(|&&c| c == b'\n').count();
        }
        self.lines
    }
}

/// CPU seconds (user + system) `pid` has used so far, from
/// `/proc/<pid>/stat`; `None` once the process is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line (11 and 12 here).
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // In USER_HZ ticks: 1/100 s on x86-64 and aarch64 (sysconf(_SC_CLK_TCK)).
    Some(ticks as f64 / 100.0)
}

/// Every parsed report line of the results log.
pub fn reports(state: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(state.join("results.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Waits until the results log has `n` lines, polling every `poll`; an
/// error after `limit`.
pub fn wait_count(state: &Path, n: usize, limit: Duration, poll: Duration) -> Result<()> {
    let start = Instant::now();
    let mut counter = LineCounter::new(state);
    while counter.count() < n {
        if start.elapsed() > limit {
            bail!("fewer than {n} reports after {limit:?}");
        }
        std::thread::sleep(poll);
    }
    Ok(())
}
