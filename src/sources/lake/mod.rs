//! The lake source: watches folders and sends every complete batch version
//! that the store has not evaluated yet, once.
//!
//! Discovery has three inputs, so that a missed event never means a missed
//! file: filesystem events (notify: created, closed after writing, renamed
//! into place), a full listing at start-up (files that landed while the agent
//! was down), and a listing every `rescan` interval (or every `poll_interval`
//! in `poll` mode, for network mounts without inotify). Events only say
//! "look here"; the listing and the [`scan`] functions decide.
//!
//! A file is never read half-way: it becomes a *candidate* and is sent only
//! when its Parquet footer parses **and** either a close-after-write or
//! rename event was seen for exactly its current size and mtime, or its size
//! and mtime stayed unchanged for the settle time. A file first found by
//! listing a folder that just appeared (a new Hive partition, its file renamed
//! in before the folder's watch existed, so no event of its own) counts as
//! hinted when its footer parses and a second look sees the same size and
//! mtime: it does not wait the settle time. A candidate whose footer
//! still does not parse after [`CORRUPT_AFTER_SETTLES`] settle times of
//! silence is sent anyway, so a corrupt file is reported as an error rather
//! than waited on forever.
//!
//! Object-store prefixes are watched by [`objects`], which shares the
//! notions of what a batch is ([`scan`]) but not the timing: listings only,
//! and no settle time.

pub mod objects;
pub mod scan;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use self::scan::{BatchKey, Filter, Observed};
use super::Batch;
use super::partitions::partitions_of;
use crate::report::BatchVersion;
use crate::rules::{BatchUnit, RuleFile};

/// A file whose footer does not parse is taken (and reported as corrupt) after
/// this many settle times without change.
pub const CORRUPT_AFTER_SETTLES: u32 = 10;

/// How soon a listing is tried again after folders could not be read.
const LISTING_RETRY: Duration = Duration::from_secs(1);

/// Filesystem events buffered between notify's thread and the loop; beyond
/// this the loop falls back to a full listing (nothing is lost, memory stays bounded).
const EVENT_BUFFER: usize = 4096;

/// How the lake is watched (hot-reloadable).
#[derive(Debug, Clone)]
pub struct LakeOptions {
    /// Watched folders.
    pub roots: Vec<PathBuf>,
    /// Which files are data.
    pub filter: Filter,
    /// Folders never looked into (the quarantine).
    pub skip: Vec<PathBuf>,
    /// Settle time.
    pub settle: Duration,
    /// Full listing interval.
    pub rescan: Duration,
    /// Listing only (no filesystem events).
    pub poll: bool,
    /// Watched object-store prefixes ([`objects`]).
    pub object_roots: Vec<crate::location::ObjectUrl>,
    /// How their clients are built.
    pub object_store: crate::location::ObjectStoreOptions,
    /// How often they are listed (`lake.poll_interval`): their newest
    /// partitions only, between full listings.
    pub poll_interval: Duration,
    /// How often they are listed in full (`lake.rescan`).
    pub object_rescan: Duration,
}

/// Counters the agent shows on `/status`.
#[derive(Debug, Default)]
pub struct LakeStats {
    /// Files matched by no rule file in the latest listing.
    pub unmatched: AtomicU64,
    /// Batches waiting to be complete.
    pub pending: AtomicU64,
    /// The start-up listing is done and its complete batches are queued.
    pub ready: AtomicBool,
    /// Set while listings cannot read some folder (descriptors exhausted,
    /// permissions, EIO): (since RFC 3339, the latest error). Cleared by a
    /// full listing without errors.
    pub listing_error: Mutex<Option<(String, String)>>,
}

/// Whether a dataset's batch version was already evaluated (the store).
pub type DoneFn = Arc<dyn Fn(&str, &BatchVersion) -> bool + Send + Sync>;

/// Versions sent and not yet recorded (shared with the agent, which removes them).
pub type InFlight = Arc<Mutex<HashSet<(String, BatchVersion)>>>;

/// The lake watcher.
pub struct LakeSource {
    /// Watch settings.
    pub options: watch::Receiver<Arc<LakeOptions>>,
    /// The current rule files.
    pub rules: watch::Receiver<Arc<Vec<RuleFile>>>,
    /// Asks the store.
    pub done: DoneFn,
    /// Sent but not recorded.
    pub in_flight: InFlight,
    /// Counters.
    pub stats: Arc<LakeStats>,
}

#[derive(Debug)]
struct Candidate {
    observed: Option<Observed>,
    /// When the observed version last changed.
    since: Instant,
    /// A close/rename event was seen for this exact version.
    hinted: Option<BatchVersion>,
    discovered: Instant,
}

impl Candidate {
    /// A batch just seen, not yet observed.
    fn new() -> Self {
        let now = Instant::now();
        Self {
            observed: None,
            since: now,
            hinted: None,
            discovered: now,
        }
    }
}

/// How listings went since the last look.
enum Listing {
    Fine,
    Failing,
    Recovered,
}

impl LakeSource {
    /// Turns folders that listings could not read into a degraded state, a
    /// log line when that starts and one when a full listing (`listed`)
    /// succeeds again.
    fn note_listing_errors(&self, listed: bool) -> Listing {
        let (count, latest) = scan::take_listing_errors();
        let Ok(mut state) = self.stats.listing_error.lock() else {
            return Listing::Fine;
        };
        if count > 0 {
            let latest = latest.unwrap_or_default();
            if state.is_none() {
                tracing::error!(error = %latest, folders = count, "degraded: the lake cannot be fully listed; new batches there wait until it can (one line per episode)");
            }
            let since = state
                .take()
                .map(|(since, _)| since)
                .unwrap_or_else(|| chrono::Utc::now().to_rfc3339());
            *state = Some((since, latest));
            return Listing::Failing;
        }
        if listed && state.take().is_some() {
            tracing::info!("recovered: the lake is fully listed again");
            return Listing::Recovered;
        }
        if state.is_some() {
            Listing::Failing
        } else {
            Listing::Fine
        }
    }

    /// Runs until `shutdown` turns true (or the queue closes).
    pub async fn run(mut self, queue: mpsc::Sender<Batch>, mut shutdown: watch::Receiver<bool>) {
        let (event_tx, mut events) = mpsc::channel::<(PathBuf, bool)>(EVENT_BUFFER);
        let overflow = Arc::new(AtomicBool::new(false));
        let mut options = self.options.borrow_and_update().clone();
        let mut watcher = start_watcher(&options, &event_tx, &overflow);
        let mut candidates: BTreeMap<BatchKey, Candidate> = BTreeMap::new();
        // Folders that just appeared, listed again on every tick for a while:
        // a file moved into a brand-new folder before the watch on that folder
        // exists raises no event of its own.
        let mut new_dirs: Vec<(PathBuf, Instant)> = Vec::new();
        let mut next_listing = Instant::now();
        let tick = |o: &LakeOptions| {
            (o.settle / 4).clamp(Duration::from_millis(20), Duration::from_millis(500))
        };
        let mut first = true;
        let mut listed = false;
        loop {
            // A full listing when due (start-up, interval, lost events, new rules or options).
            if Instant::now() >= next_listing || overflow.swap(false, Ordering::Relaxed) {
                let rules = self.rules.borrow().clone();
                let found = list_all(&options, &rules).await;
                listed = true;
                self.stats.unmatched.store(found.1, Ordering::Relaxed);
                for key in found.0 {
                    candidates.entry(key).or_insert_with(Candidate::new);
                }
                // In poll mode `rescan` is the poll interval.
                next_listing = Instant::now() + options.rescan;
            }
            if !new_dirs.is_empty() {
                let keep_for = (options.settle * 2).max(NEW_DIR_WATCH);
                new_dirs.retain(|(_, since)| since.elapsed() < keep_for);
                let rules = self.rules.borrow().clone();
                for (dir, _) in &new_dirs {
                    for key in keys_under(&options, &rules, dir) {
                        add_listed_in_new_folder(&options, &mut candidates, key);
                    }
                }
            }
            if !self
                .advance(&options, &mut candidates, &queue, &mut shutdown)
                .await
            {
                return;
            }
            if first {
                first = false;
                self.stats.ready.store(true, Ordering::Relaxed);
            }
            match self.note_listing_errors(listed) {
                Listing::Failing => {
                    // Look again soon rather than at the next rescan: what
                    // could not be listed may hold new batches.
                    next_listing = next_listing.min(Instant::now() + LISTING_RETRY);
                }
                Listing::Recovered => {
                    // A folder that vanished and came back (a remounted
                    // share) lost its watch with it: watch again.
                    drop(watcher.take());
                    watcher = start_watcher(&options, &event_tx, &overflow);
                }
                Listing::Fine => {}
            }
            listed = false;
            self.stats
                .pending
                .store(candidates.len() as u64, Ordering::Relaxed);

            let wait = tokio::time::sleep(tick(&options));
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = wait => {}
                Some((path, complete)) = events.recv() => {
                    let rules = self.rules.borrow().clone();
                    self.on_event(&options, &rules, &mut candidates, &mut new_dirs, path, complete);
                    // Drain what else is there without waiting.
                    while let Ok((path, complete)) = events.try_recv() {
                        self.on_event(&options, &rules, &mut candidates, &mut new_dirs, path, complete);
                    }
                }
                Ok(()) = self.rules.changed() => {
                    next_listing = Instant::now();
                }
                Ok(()) = self.options.changed() => {
                    options = self.options.borrow_and_update().clone();
                    watcher = start_watcher(&options, &event_tx, &overflow);
                    next_listing = Instant::now();
                }
            }
            let _ = &watcher;
        }
    }

    /// Looks at an event path: a data file becomes (or refreshes) a
    /// candidate; a folder or a `_SUCCESS` marker triggers a listing of that folder.
    fn on_event(
        &self,
        options: &LakeOptions,
        rules: &[RuleFile],
        candidates: &mut BTreeMap<BatchKey, Candidate>,
        new_dirs: &mut Vec<(PathBuf, Instant)>,
        path: PathBuf,
        complete: bool,
    ) {
        let Some((index, root)) = options
            .roots
            .iter()
            .enumerate()
            .find(|(_, r)| path.starts_with(r))
        else {
            return;
        };
        if options.skip.iter().any(|s| path.starts_with(s)) {
            return;
        }
        let Ok(relative) = path.strip_prefix(root) else {
            return;
        };
        if table_folders(rules).iter().any(|t| path.starts_with(t)) {
            return;
        }
        // A link created while the agent runs raises an event like any file:
        // it is not followed (out of the lake, or into a loop) here either.
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            return;
        }
        let keys = if path.file_name().is_some_and(|n| n == scan::SUCCESS_MARKER) {
            // The marker completes a folder batch: look at its parts.
            keys_under(options, rules, path.parent().unwrap_or(root))
        } else if path.is_dir() {
            if !new_dirs.iter().any(|(d, _)| d == &path) {
                new_dirs.push((path.clone(), Instant::now()));
            }
            // List the new folder at once: what was moved into it before
            // its watch existed raised no event and is found only here.
            let keys = keys_under(options, rules, &path);
            for key in &keys {
                add_listed_in_new_folder(options, candidates, key.clone());
            }
            keys
        } else if options.filter.accepts(relative) {
            scan::batches_of(index, relative, rules)
        } else {
            Vec::new()
        };
        for key in keys {
            let candidate = candidates.entry(key.clone()).or_insert_with(Candidate::new);
            if complete && key.unit == BatchUnit::File {
                candidate.hinted = scan::observe(root, &key, &options.filter).map(|o| o.version);
            }
        }
    }

    /// Re-observes every candidate and sends those that are complete.
    /// Returns false when the agent is shutting down.
    async fn advance(
        &self,
        options: &LakeOptions,
        candidates: &mut BTreeMap<BatchKey, Candidate>,
        queue: &mpsc::Sender<Batch>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let now = Instant::now();
        let mut finished = Vec::new();
        let mut ready = Vec::new();
        for (key, candidate) in candidates.iter_mut() {
            let Some(root) = options.roots.get(key.root) else {
                finished.push(key.clone());
                continue;
            };
            let Some(observed) = scan::observe(root, key, &options.filter) else {
                finished.push(key.clone());
                continue;
            };
            let version = observed.version.clone();
            // Quiet time restarts only when the data changes; the rest of the
            // observation (a `_SUCCESS` marker that appeared) is always fresh.
            if candidate.observed.as_ref().map(|o| &o.version) != Some(&version) {
                candidate.since = now;
            }
            candidate.observed = Some(observed);
            let entry = (key.dataset.clone(), version.clone());
            let queued = self
                .in_flight
                .lock()
                .map(|set| set.contains(&entry))
                .unwrap_or(false);
            if queued || (self.done)(&key.dataset, &version) {
                finished.push(key.clone());
                continue;
            }
            let quiet = now.duration_since(candidate.since);
            let Some(observed) = candidate.observed.as_ref() else {
                continue;
            };
            let settled = quiet >= options.settle
                || candidate.hinted.as_ref() == Some(&version)
                || (key.unit == BatchUnit::Directory && observed.marker);
            if !settled {
                continue;
            }
            let complete = observed.files.iter().all(|f| scan::footer_parses(f));
            if complete || quiet >= options.settle * CORRUPT_AFTER_SETTLES {
                ready.push((key.clone(), version, candidate.discovered));
                finished.push(key.clone());
            }
        }
        for key in finished {
            candidates.remove(&key);
        }
        for (key, version, discovered) in ready {
            let Some(root) = options.roots.get(key.root) else {
                continue;
            };
            if let Ok(mut set) = self.in_flight.lock() {
                set.insert((key.dataset.clone(), version.clone()));
            }
            let batch = Batch {
                dataset: key.dataset.clone(),
                path: root.join(&key.relative),
                // A folder batch's own segments are partitions too.
                partitions: match key.unit {
                    BatchUnit::File => partitions_of(&key.relative),
                    BatchUnit::Directory => partitions_of(&key.relative.join("part")),
                },
                version,
                relative: key.relative,
                root: root.clone(),
                discovered,
                ack: None,
                table: None,
            };
            tokio::select! {
                sent = queue.send(batch) => if sent.is_err() { return false },
                _ = shutdown.changed() => return false,
            }
        }
        true
    }
}

/// How long, at least, a new folder is listed again on every tick.
const NEW_DIR_WATCH: Duration = Duration::from_secs(2);

/// Adds a file batch found by listing a folder that just appeared.
///
/// Why it need not wait the settle time: a file in a new folder that raised
/// no event of its own was complete before the folder's watch existed —
/// renamed in, or closed — (a file still being written raises a
/// close-after-write event later, the watch being there by then). So it is
/// taken as if its close/rename event had been seen when its footer parses
/// and its size and mtime are the same on an immediate second look. A file
/// whose footer does not parse yet stays an ordinary candidate (event or
/// settle time). Only batches not already candidates are probed: one known
/// from its own events keeps what they said.
fn add_listed_in_new_folder(
    options: &LakeOptions,
    candidates: &mut BTreeMap<BatchKey, Candidate>,
    key: BatchKey,
) {
    let candidate = candidates.entry(key.clone()).or_insert_with(Candidate::new);
    if candidate.hinted.is_some() {
        return;
    }
    // Also a candidate already known without a hint: a full listing that
    // ran just then (at start-up, every rescan) may have found the file
    // before the folder's event came, and no rename event will follow.
    if let (BatchUnit::File, Some(root)) = (key.unit, options.roots.get(key.root)) {
        candidate.hinted = complete_on_sight(root, &key, &options.filter);
    }
}

/// The version of a file batch whose footer parses and whose size and mtime
/// do not change across the footer read (see [`add_listed_in_new_folder`]).
fn complete_on_sight(root: &Path, key: &BatchKey, filter: &Filter) -> Option<BatchVersion> {
    let before = scan::observe(root, key, filter)?;
    if !before.files.iter().all(|f| scan::footer_parses(f)) {
        return None;
    }
    let after = scan::observe(root, key, filter)?;
    (after.version == before.version).then_some(after.version)
}

/// The batches of the data files under `dir` (inside a watched folder).
fn keys_under(options: &LakeOptions, rules: &[RuleFile], dir: &Path) -> Vec<BatchKey> {
    let Some((index, root)) = options
        .roots
        .iter()
        .enumerate()
        .find(|(_, r)| dir.starts_with(r))
    else {
        return Vec::new();
    };
    let mut keys = Vec::new();
    scan::walk(root, dir, &options.filter, &mut |_, rel| {
        keys.extend(scan::batches_of(index, rel, rules))
    });
    keys
}

/// The folders of the tables the rule files name: inside a watched folder
/// their Parquet files are the table's (read through its log), never files
/// of their own.
fn table_folders(rules: &[RuleFile]) -> Vec<PathBuf> {
    rules
        .iter()
        .filter_map(|r| r.table.as_ref())
        .map(|t| PathBuf::from(crate::sources::table::location_key(&t.location)))
        .collect()
}

/// Lists every watched folder (on a blocking thread: big lakes take a while).
async fn list_all(options: &LakeOptions, rules: &Arc<Vec<RuleFile>>) -> (Vec<BatchKey>, u64) {
    let options = options.clone();
    let rules = rules.clone();
    tokio::task::spawn_blocking(move || {
        let mut keys = Vec::new();
        let mut unmatched = 0;
        let tables = table_folders(&rules);
        for (index, root) in options.roots.iter().enumerate() {
            let (found, n) = scan::scan_root(index, root, &options.filter, &rules, &tables);
            unmatched += n;
            keys.extend(found.into_keys().filter(|k| {
                let path = root.join(&k.relative);
                !options.skip.iter().any(|s| path.starts_with(s))
            }));
        }
        (keys, unmatched)
    })
    .await
    .unwrap_or_default()
}

/// Starts notify on every root (none in poll mode). A root that cannot be
/// watched is logged; the periodic listing still covers it.
fn start_watcher(
    options: &LakeOptions,
    events: &mpsc::Sender<(PathBuf, bool)>,
    overflow: &Arc<AtomicBool>,
) -> Option<notify::RecommendedWatcher> {
    if options.poll {
        return None;
    }
    let tx = events.clone();
    let overflow = overflow.clone();
    let handler = move |result: notify::Result<notify::Event>| match result {
        Ok(event) => {
            use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
            let complete = matches!(
                event.kind,
                EventKind::Access(AccessKind::Close(AccessMode::Write))
                    | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
            );
            if matches!(
                event.kind,
                EventKind::Access(AccessKind::Open(_)) | EventKind::Remove(_)
            ) {
                return;
            }
            // For a rename with both paths, the destination is the last one.
            let paths: Vec<PathBuf> = match event.kind {
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
                    event.paths.last().cloned().into_iter().collect()
                }
                _ => event.paths,
            };
            for path in paths {
                if tx.try_send((path, complete)).is_err() {
                    overflow.store(true, Ordering::Relaxed);
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "filesystem watch error; relying on listings");
            overflow.store(true, Ordering::Relaxed);
        }
    };
    // Never follow symbolic links out of the lake (one link to `/usr` once
    // took fifteen thousand inotify watches).
    let config = notify::Config::default().with_follow_symlinks(false);
    let mut watcher = match <notify::RecommendedWatcher as Watcher>::new(handler, config) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start filesystem events; listing every rescan interval");
            return None;
        }
    };
    for root in &options.roots {
        if let Err(e) = watcher.watch(Path::new(root), RecursiveMode::Recursive) {
            tracing::warn!(root = %root.display(), error = %e, "cannot watch folder; relying on listings");
        }
    }
    Some(watcher)
}
