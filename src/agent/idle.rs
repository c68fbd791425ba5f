//! Giving memory back while the agent waits for batches.
//!
//! A sidecar spends most of its life idle, and what it holds then is what
//! the host pays for. After an evaluation, two things keep the resident set
//! high although nothing uses them: free heap pages that glibc keeps in its
//! per-thread arenas, and the pages of the executable's own code that
//! DataFusion, Arrow and Parquet touched (~60 MiB of a ~100 MiB binary).
//! Once the agent has been idle for [`IDLE_AFTER`], [`release`] returns the
//! free heap (`malloc_trim`) and asks the kernel to reclaim the binary's
//! clean, read-only, file-backed pages (`MADV_PAGEOUT`) — exactly what the
//! kernel does under memory pressure, done early: the pages stay in the page
//! cache and fault back in when the next batch needs them (measured: one
//! release takes ~3 ms; the next batch pays minor faults). [`tune_malloc`]
//! also caps glibc at two arenas and fixes its trim and mmap thresholds
//! ([`TRIM_THRESHOLD`], [`MMAP_THRESHOLD`]): large buffers go back to the
//! kernel when freed, small ones are reused without a page fault.
//!
//! Linux with glibc only; elsewhere both are no-ops.

use std::time::Duration;

/// Idle time after which memory is released.
pub const IDLE_AFTER: Duration = Duration::from_secs(5);

/// Allocations of at least this many bytes get their own mapping, returned
/// to the kernel when freed (glibc's `M_MMAP_THRESHOLD`). A small file's
/// Arrow buffers (a column of 8,192 values: 64–200 KiB) stay below it and
/// are reused from the heap; a large file's column chunks (several MiB) go
/// straight back. At 128 KiB many of a small file's buffers were fresh
/// mappings: a page fault per 4 KiB page, an `munmap` and a TLB shootdown
/// on free. Profiled on a backlog of 27,000-row files (issue 19), `munmap`,
/// those faults and glibc's free-list work were 14 % of the agent's
/// samples; 1 MiB took the backlog from 268 to 348 files/s (medians, side
/// by side) and keeps the 10-million-row file's peak where it was (134 MiB).
pub const MMAP_THRESHOLD: i32 = 1024 * 1024;

/// Free memory at the top of a heap beyond this many bytes is returned to
/// the kernel at once (glibc's `M_TRIM_THRESHOLD`); what stays below it is
/// returned by [`release`] once the agent is idle. Setting it (like the
/// mmap threshold) also turns off glibc's dynamic thresholds, which would
/// let both grow to 32/64 MiB after one large batch.
pub const TRIM_THRESHOLD: i32 = 8 * 1024 * 1024;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod sys {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> i32;
        fn mallopt(param: i32, value: i32) -> i32;
        fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
    }
    const M_TRIM_THRESHOLD: i32 = -1;
    const M_MMAP_THRESHOLD: i32 = -3;
    const M_ARENA_MAX: i32 = -8;
    const MADV_PAGEOUT: i32 = 21;

    pub fn tune_malloc() {
        // SAFETY: mallopt only changes allocator parameters; called once at
        // start-up, before the agent's threads allocate concurrently.
        unsafe {
            mallopt(M_ARENA_MAX, 2);
            mallopt(M_TRIM_THRESHOLD, super::TRIM_THRESHOLD);
            mallopt(M_MMAP_THRESHOLD, super::MMAP_THRESHOLD);
        }
    }

    pub fn trim() {
        // SAFETY: malloc_trim only returns free memory to the kernel.
        unsafe {
            malloc_trim(0);
        }
    }

    pub fn page_out(start: usize, len: usize) -> bool {
        // SAFETY: the range is a whole mapping of our own executable, read
        // only and without private (anonymous) pages, so reclaiming it loses
        // nothing: its pages are re-read from the file when next touched.
        unsafe { madvise(start as *mut std::ffi::c_void, len, MADV_PAGEOUT) == 0 }
    }
}

/// Caps glibc's arenas and fixes its trim and mmap thresholds.
pub fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    sys::tune_malloc();
}

/// The executable's read-only mappings that hold no private pages, from the
/// text of `/proc/self/smaps`: `(start, length)`.
pub fn clean_executable_mappings(smaps: &str, exe: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else {
            continue;
        };
        if let Some((lo, hi)) = first.split_once('-')
            && !first.ends_with(':')
        {
            let perms = fields.next().unwrap_or("");
            let path = fields.nth(3).unwrap_or("");
            let range = usize::from_str_radix(lo, 16)
                .ok()
                .zip(usize::from_str_radix(hi, 16).ok());
            current = match range {
                Some((lo, hi))
                    if path == exe && (perms == "r-xp" || perms == "r--p") && hi > lo =>
                {
                    Some((lo, hi - lo))
                }
                _ => None,
            };
        } else if first == "Anonymous:"
            && let Some(mapping) = current.take()
            && fields.next() == Some("0")
        {
            out.push(mapping);
        }
    }
    out
}

/// Returns free heap pages and the executable's clean code pages to the
/// kernel. Returns the bytes of mappings paged out.
pub fn release() -> usize {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        sys::trim();
        let exe = std::fs::read_link("/proc/self/exe")
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
            return 0;
        };
        clean_executable_mappings(&smaps, &exe)
            .into_iter()
            .filter(|&(start, len)| sys::page_out(start, len))
            .map(|(_, len)| len)
            .sum()
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clean_read_only_mappings_of_the_executable_are_chosen() {
        let smaps = "\
55d0c0000000-55d0c1000000 r--p 00000000 08:01 42 /usr/bin/driftwatch
Rss:                1024 kB
Anonymous:             0 kB
55d0c1000000-55d0c6000000 r-xp 01000000 08:01 42 /usr/bin/driftwatch
Anonymous:             0 kB
55d0c6000000-55d0c6400000 r--p 06000000 08:01 42 /usr/bin/driftwatch
Anonymous:           512 kB
55d0c6400000-55d0c6500000 rw-p 06400000 08:01 42 /usr/bin/driftwatch
Anonymous:           100 kB
7f0000000000-7f0000100000 r-xp 00000000 08:01 7 /usr/lib/libc.so.6
Anonymous:             0 kB
";
        assert_eq!(
            clean_executable_mappings(smaps, "/usr/bin/driftwatch"),
            [(0x55d0c0000000, 0x1000000), (0x55d0c1000000, 0x5000000)]
        );
    }

    #[test]
    fn releasing_is_safe_to_call_at_any_time() {
        // Our own test binary's pages: paged out and faulted back in.
        release();
        let v: Vec<u64> = (0..1000).collect();
        assert_eq!(v.iter().sum::<u64>(), 499_500);
        release();
    }
}
