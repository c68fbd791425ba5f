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

/// Lines in the results log (reports recorded), counted without parsing.
pub fn line_count(state: &Path) -> usize {
    std::fs::read(state.join("results.jsonl"))
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
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
    while line_count(state) < n {
        if start.elapsed() > limit {
            bail!("fewer than {n} reports after {limit:?}");
        }
        std::thread::sleep(poll);
    }
    Ok(())
}
