//! The lake source for object-store prefixes (`--watch s3://bucket/prefix`):
//! sends every batch version under the prefixes that the store has not
//! evaluated yet, once.
//!
//! Why a loop of its own: object stores have no events a sidecar can rely
//! on, only listings, and they publish whole objects — an object is complete
//! once it is listed, so there is no settle time and no footer probing. What
//! is a batch, which files count and how Hive partitions are read are the
//! same functions as for folders ([`scan`]).
//!
//! Listing costs requests (one LIST per 1,000 keys), so every watched prefix
//! is listed in full only at start-up and every `lake.rescan`; every
//! `lake.poll_interval` in between, only the keys from its newest partition
//! on are listed (S3's `start-after`: keys greater than the folder of the
//! greatest data key seen). Hive partitions named by date or sequence sort
//! in time, so new data lands there or later; an object landing in an older
//! partition is found by the next full listing.
//!
//! A version is (key, size, last modified, ETag): a rewritten object is a new
//! version. A `batch: directory` batch is the data objects under one prefix
//! folder; it is sent once its `_SUCCESS` marker is listed, or once two
//! listings a poll interval apart show the same parts (the stand-in for the
//! settle time, since a prefix is never "closed"). Exactly-once across
//! restarts is the store's, as for folders: a version already recorded (or
//! in flight) is not sent again.
//!
//! A listing that fails (unreachable endpoint, refused credentials, missing
//! bucket) makes the agent degraded with one log line per episode and is
//! tried again at the next interval; it never stops the agent.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use object_store::ObjectStore;
use tokio::sync::{mpsc, watch};

use super::scan::{self, BatchKey};
use super::{DoneFn, InFlight, LakeOptions, LakeStats};
use crate::location::{Listed, ObjectUrl};
use crate::report::BatchVersion;
use crate::rules::{BatchUnit, RuleFile};
use crate::sources::Batch;
use crate::sources::partitions::partitions_of;

/// The object-store lake watcher.
pub struct ObjectLakeSource {
    /// Watch settings (the object roots, filter, interval, client options).
    pub options: watch::Receiver<Arc<LakeOptions>>,
    /// The current rule files.
    pub rules: watch::Receiver<Arc<Vec<RuleFile>>>,
    /// Asks the store.
    pub done: DoneFn,
    /// Sent but not recorded.
    pub in_flight: InFlight,
    /// Counters (its own: the folder watcher clears its listing error on
    /// its own successful listings).
    pub stats: Arc<LakeStats>,
}

/// One batch's objects in a listing.
#[derive(Default)]
struct Found {
    objects: Vec<Listed>,
}

impl ObjectLakeSource {
    /// Runs until `shutdown` turns true (or the queue closes).
    pub async fn run(mut self, queue: mpsc::Sender<Batch>, mut shutdown: watch::Receiver<bool>) {
        let mut options = self.options.borrow_and_update().clone();
        let mut stores: HashMap<String, Arc<dyn ObjectStore>> = HashMap::new();
        // Per watched prefix: the key incremental listings start after.
        let mut newest: HashMap<usize, String> = HashMap::new();
        let mut next_full = Instant::now();
        // Prefix batches without a marker: the version the last listing saw.
        let mut unsettled: HashMap<BatchKey, BatchVersion> = HashMap::new();
        loop {
            let rules = self.rules.borrow().clone();
            let full = Instant::now() >= next_full;
            let mut errors = Vec::new();
            let mut unmatched = 0;
            let mut ready = Vec::new();
            let mut seen = HashSet::new();
            for (index, root) in options.object_roots.iter().enumerate() {
                let store = match store_for(&mut stores, root, &options) {
                    Ok(store) => store,
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                };
                let after = if full { None } else { newest.get(&index) };
                let listed = match crate::location::list(
                    store.as_ref(),
                    root,
                    after.map(String::as_str),
                    &options.object_store,
                )
                .await
                {
                    Ok(listed) => listed,
                    Err(e) => {
                        errors.push(e.to_string());
                        continue;
                    }
                };
                if let Some(start) = start_after(root, &listed, &options) {
                    newest.insert(index, start);
                }
                let (batches, markers, n) = group(index, root, listed, &options, &rules);
                unmatched += n;
                for (key, found) in batches {
                    seen.insert(key.clone());
                    let version = version_of(root, &key, &found.objects);
                    let entry = (key.dataset.clone(), version.clone());
                    let queued = self
                        .in_flight
                        .lock()
                        .map(|set| set.contains(&entry))
                        .unwrap_or(false);
                    if queued || (self.done)(&key.dataset, &version) {
                        unsettled.remove(&key);
                        continue;
                    }
                    if key.unit == BatchUnit::Directory
                        && !markers.contains(&key.relative)
                        && unsettled.get(&key) != Some(&version)
                    {
                        unsettled.insert(key, version);
                        continue;
                    }
                    unsettled.remove(&key);
                    ready.push((root.clone(), key, version));
                }
            }
            if full {
                // Only a full listing shows what is gone, and what no rule matches.
                unsettled.retain(|key, _| seen.contains(key));
                self.stats.unmatched.store(unmatched, Ordering::Relaxed);
                if errors.is_empty() {
                    next_full = Instant::now() + options.object_rescan;
                }
            }
            self.note_errors(&errors);
            self.stats
                .pending
                .store(unsettled.len() as u64, Ordering::Relaxed);
            for (root, key, version) in ready {
                if let Ok(mut set) = self.in_flight.lock() {
                    set.insert((key.dataset.clone(), version.clone()));
                }
                let batch = batch_of(&root, key, version);
                tokio::select! {
                    sent = queue.send(batch) => if sent.is_err() { return },
                    _ = shutdown.changed() => return,
                }
            }
            self.stats.ready.store(true, Ordering::Relaxed);
            if options.object_roots.is_empty() {
                // Nothing to list: wait for a reload that adds some.
                tokio::select! {
                    _ = shutdown.changed() => return,
                    Ok(()) = self.options.changed() => {
                        options = self.options.borrow_and_update().clone();
                        stores.clear();
                    }
                }
                continue;
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(options.poll_interval) => {}
                Ok(()) = self.rules.changed() => next_full = Instant::now(),
                Ok(()) = self.options.changed() => {
                    options = self.options.borrow_and_update().clone();
                    // Client options may have changed: build clients anew.
                    stores.clear();
                    next_full = Instant::now();
                }
            }
        }
    }

    /// Turns failed listings into a degraded state: a log line when an
    /// episode starts and one when every prefix is listed again.
    fn note_errors(&self, errors: &[String]) {
        let Ok(mut state) = self.stats.listing_error.lock() else {
            return;
        };
        match errors.last() {
            Some(latest) => {
                if state.is_none() {
                    tracing::error!(error = %latest, prefixes = errors.len(), "degraded: the object store cannot be listed; new batches there wait until it can (retried every poll interval; one line per episode)");
                }
                let since = state
                    .take()
                    .map(|(since, _)| since)
                    .unwrap_or_else(|| chrono::Utc::now().to_rfc3339());
                *state = Some((since, latest.clone()));
            }
            None => {
                if state.take().is_some() {
                    tracing::info!("recovered: the object store is listed again");
                }
            }
        }
    }
}

/// Where the next incremental listing of `root` starts: just before the
/// folder of the greatest data key listed (so that folder is listed again,
/// whole). None when nothing was listed, or the greatest key is not in a
/// folder below the prefix (then every listing is a full one).
fn start_after(root: &ObjectUrl, listed: &[Listed], options: &LakeOptions) -> Option<String> {
    let prefix = root.prefix();
    let greatest = listed
        .iter()
        .filter(|o| {
            o.key
                .strip_prefix(&prefix)
                .is_some_and(|rel| options.filter.accepts(std::path::Path::new(rel)))
        })
        .map(|o| o.key.as_str())
        .max()?;
    let folder = greatest.rsplit_once('/').map(|(folder, _)| folder)?;
    // Keys of the folder itself (`folder/…`) sort after `folder`.
    (folder.len() > prefix.trim_end_matches('/').len()).then(|| folder.to_string())
}

/// The client for `root`'s bucket, built once per bucket (and anew after
/// a reload); the error is one line naming the URL, without secrets.
fn store_for(
    stores: &mut HashMap<String, Arc<dyn ObjectStore>>,
    root: &ObjectUrl,
    options: &LakeOptions,
) -> Result<Arc<dyn ObjectStore>, String> {
    let id = root.with_key("").to_string();
    if let Some(store) = stores.get(&id) {
        return Ok(store.clone());
    }
    let store =
        crate::location::build_store(root, &options.object_store).map_err(|e| e.to_string())?;
    stores.insert(id, store.clone());
    Ok(store)
}

/// The batches in one prefix's listing, the folders (relative) that hold a
/// `_SUCCESS` marker, and how many data objects no rule file matched.
fn group(
    index: usize,
    root: &ObjectUrl,
    listed: Vec<Listed>,
    options: &LakeOptions,
    rules: &[RuleFile],
) -> (BTreeMap<BatchKey, Found>, HashSet<PathBuf>, u64) {
    let prefix = root.prefix();
    let mut batches: BTreeMap<BatchKey, Found> = BTreeMap::new();
    let mut markers = HashSet::new();
    let mut unmatched = 0;
    for object in listed {
        let Some(relative) = object.key.strip_prefix(&prefix).map(PathBuf::from) else {
            continue;
        };
        if relative
            .file_name()
            .is_some_and(|n| n == scan::SUCCESS_MARKER)
        {
            markers.insert(relative.parent().map(PathBuf::from).unwrap_or_default());
            continue;
        }
        if !options.filter.accepts(&relative) {
            continue;
        }
        let keys = scan::batches_of(index, &relative, rules);
        if keys.is_empty() {
            unmatched += 1;
        }
        for key in keys {
            batches.entry(key).or_default().objects.push(object.clone());
        }
    }
    (batches, markers, unmatched)
}

/// The version of a batch's objects: an object's own (size, last modified,
/// ETag), or for a prefix the sum of sizes, the latest modification, the
/// number of parts and a digest of their keys and ETags.
fn version_of(root: &ObjectUrl, key: &BatchKey, objects: &[Listed]) -> BatchVersion {
    match (key.unit, objects) {
        (BatchUnit::File, [object]) => BatchVersion {
            table: None,
            kind: "object".to_string(),
            path: root.with_key(&object.key).to_string(),
            size: object.size,
            modified_ns: object.modified_ns,
            parts: 1,
            etag: object.etag.clone(),
        },
        _ => {
            let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
            for object in objects {
                digest.update(object.key.as_bytes());
                digest.update(b"\0");
                digest.update(object.etag.as_deref().unwrap_or("").as_bytes());
                digest.update(b"\0");
            }
            let hex: String = digest
                .finish()
                .as_ref()
                .iter()
                .take(16)
                .map(|b| format!("{b:02x}"))
                .collect();
            BatchVersion {
                table: None,
                kind: "prefix".to_string(),
                path: prefix_url(root, key).to_string(),
                size: objects.iter().map(|o| o.size).sum(),
                modified_ns: objects.iter().map(|o| o.modified_ns).max().unwrap_or(0),
                parts: objects.len() as u64,
                etag: Some(hex),
            }
        }
    }
}

/// A prefix batch's URL: the folder's key with a trailing `/` (which tells
/// the engine to scan the `*.parquet` objects under it).
fn prefix_url(root: &ObjectUrl, key: &BatchKey) -> ObjectUrl {
    let folder = key.relative.to_string_lossy();
    let base = root.prefix();
    if folder.is_empty() {
        root.with_key(&base)
    } else {
        root.with_key(&format!("{base}{folder}/"))
    }
}

fn batch_of(root: &ObjectUrl, key: BatchKey, version: BatchVersion) -> Batch {
    Batch {
        table: None,
        dataset: key.dataset.clone(),
        path: PathBuf::from(&version.path),
        partitions: match key.unit {
            BatchUnit::File => partitions_of(&key.relative),
            BatchUnit::Directory => partitions_of(&key.relative.join("part")),
        },
        version,
        relative: key.relative,
        root: root.to_path(),
        discovered: Instant::now(),
        ack: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> LakeOptions {
        let mut include = globset::GlobSetBuilder::new();
        include.add(globset::Glob::new("**/*.parquet").unwrap());
        LakeOptions {
            roots: Vec::new(),
            filter: scan::Filter {
                include: include.build().unwrap(),
                exclude: globset::GlobSet::empty(),
            },
            skip: Vec::new(),
            settle: std::time::Duration::from_secs(2),
            rescan: std::time::Duration::from_secs(30),
            poll: false,
            object_roots: Vec::new(),
            object_store: Default::default(),
            poll_interval: std::time::Duration::from_secs(2),
            object_rescan: std::time::Duration::from_secs(30),
        }
    }

    fn listed(keys: &[&str]) -> Vec<Listed> {
        keys.iter()
            .map(|k| Listed {
                key: k.to_string(),
                size: 1,
                modified_ns: 0,
                etag: None,
            })
            .collect()
    }

    #[test]
    fn incremental_listings_start_at_the_newest_partition() {
        let root = ObjectUrl::parse("s3://lake/flights").unwrap().unwrap();
        let o = options();
        let keys = [
            "flights/day=1/a.parquet",
            "flights/day=3/b.parquet",
            "flights/day=3/_SUCCESS",
            "flights/day=2/c.parquet",
            "flights/day=9/.hidden.parquet",
        ];
        let start = start_after(&root, &listed(&keys), &o).unwrap();
        assert_eq!(start, "flights/day=3");
        // What a listing after it sees: the newest folder again, and later ones.
        for later in ["flights/day=3/a.parquet", "flights/day=4/a.parquet"] {
            assert!(later > start.as_str(), "{later}");
        }
        assert!("flights/day=2/z.parquet" < start.as_str());
        // Objects at the prefix's top level, or none: always full listings.
        assert_eq!(
            start_after(&root, &listed(&["flights/a.parquet"]), &o),
            None
        );
        assert_eq!(start_after(&root, &listed(&[]), &o), None);
        let bucket = ObjectUrl::parse("s3://lake").unwrap().unwrap();
        assert_eq!(
            start_after(&bucket, &listed(&["x/day=1/a.parquet"]), &o),
            Some("x/day=1".to_string())
        );
    }
}
