//! The agent's HTML pages: the index (`/`, every dataset's latest status) and
//! a dataset's page (`/report/{dataset}`: its latest batch with the charts of
//! reference vs batch, and its history), built from the store so that
//! `driftwatch report --state DIR` writes the same page for a stopped agent.
//!
//! A dataset's page reads up to [`HISTORY`] reports and two profiles, so its
//! build costs memory; N clients asking at once must not cost N builds
//! (issue 15: 16 concurrent requests took the agent to 11.3 GB). Pages are
//! cached per (dataset, refresh) and keyed by the dataset's latest report:
//! while no new batch is recorded every request is served the cached page,
//! and concurrent requests for the same page wait for the one build in
//! flight. At most [`MAX_CONCURRENT_BUILDS`] builds run at once across
//! datasets, and at most [`CACHED_PAGES`] pages are kept.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex};

use crate::evaluate::{Reference, RollingWindow};
use crate::profile::DatasetProfile;
use crate::report::Report;
use crate::report::html::{self, IndexRow, Past, Profiles};
use crate::state::{StateError, Store};

use super::http::DatasetStatus;

/// Batches of history on a dataset's page.
pub const HISTORY: usize = 50;
/// How often the live pages reload themselves, in seconds.
pub const REFRESH_SECONDS: u32 = 15;

/// Dataset page builds that may run at once (others wait their turn).
pub const MAX_CONCURRENT_BUILDS: usize = 2;
/// Pages kept; past it the cache is emptied and pages are built again.
pub const CACHED_PAGES: usize = 64;

/// The dataset state a page was built from: the latest report's seq and a
/// hash of its text (the same seq in another store is another page).
type Latest = (u64, u64);

/// A cached page's key: the dataset and the page's refresh setting.
type PageKey = (String, Option<u32>);

/// One cached page; its lock is held while it is built, so concurrent
/// requests for it wait for that build instead of starting their own.
#[derive(Default)]
struct Slot {
    page: Mutex<Option<(Latest, Arc<String>)>>,
}

/// The cache of built pages and the gate on concurrent builds.
struct PageCache {
    slots: Mutex<HashMap<PageKey, Arc<Slot>>>,
    building: Mutex<usize>,
    turn: Condvar,
    builds: AtomicU64,
}

static PAGES: LazyLock<PageCache> = LazyLock::new(|| PageCache {
    slots: Mutex::new(HashMap::new()),
    building: Mutex::new(0),
    turn: Condvar::new(),
    builds: AtomicU64::new(0),
});

/// Dataset pages built since the process started (cache misses).
pub fn page_builds() -> u64 {
    PAGES.builds.load(Ordering::Relaxed)
}

/// Holds one of the [`MAX_CONCURRENT_BUILDS`] build turns until dropped.
struct BuildTurn;

impl BuildTurn {
    fn take() -> Self {
        let mut n = PAGES
            .building
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while *n >= MAX_CONCURRENT_BUILDS {
            n = PAGES
                .turn
                .wait(n)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *n += 1;
        BuildTurn
    }
}

impl Drop for BuildTurn {
    fn drop(&mut self) {
        let mut n = PAGES
            .building
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *n = n.saturating_sub(1);
        PAGES.turn.notify_one();
    }
}

/// A dataset's page, or `None` when the store has no report of it: the
/// cached page while the dataset's latest report is the one it was built
/// from, else built (once, however many ask at the same time).
pub fn dataset_page(
    store: &Store,
    dataset: &str,
    refresh: Option<u32>,
) -> Result<Option<String>, StateError> {
    let Some((seq, line)) = store.latest_reports(dataset, 1)?.into_iter().next() else {
        return Ok(None);
    };
    let latest: Latest = (seq, foldhash::fast::FixedState::default().hash_one(&line));
    drop(line);
    let slot = {
        let mut slots = PAGES
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (dataset.to_string(), refresh);
        if !slots.contains_key(&key) && slots.len() >= CACHED_PAGES {
            slots.clear();
        }
        slots.entry(key).or_default().clone()
    };
    let mut cached = slot
        .page
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((built_from, page)) = cached.as_ref()
        && *built_from == latest
    {
        return Ok(Some(page.as_str().to_owned()));
    }
    let turn = BuildTurn::take();
    PAGES.builds.fetch_add(1, Ordering::Relaxed);
    let built = build_dataset_page(store, dataset, refresh);
    drop(turn);
    let page = built?;
    *cached = page.as_ref().map(|p| (latest, Arc::new(p.clone())));
    Ok(page)
}

/// Builds a dataset's page from the store.
fn build_dataset_page(
    store: &Store,
    dataset: &str,
    refresh: Option<u32>,
) -> Result<Option<String>, StateError> {
    let history: Vec<Past> = store
        .latest_reports(dataset, HISTORY)?
        .into_iter()
        .filter_map(|(seq, line)| {
            let document: Report = serde_json::from_str(&line).ok()?;
            let evaluated_at = document.agent.as_ref().map(|a| a.evaluated_at.clone());
            let report = document.reports.into_iter().next()?;
            Some(Past {
                seq,
                evaluated_at,
                report,
            })
        })
        .collect();
    if history.is_empty() {
        return Ok(None);
    }
    let current = store.latest_profile(dataset)?;
    let reference = match history[0].report.drift.as_ref() {
        Some(d) if d.error.is_none() && d.message.is_none() => {
            reference_profile(store, dataset, &d.reference)?
        }
        _ => None,
    };
    let profiles = match (&reference, &current) {
        (Some(reference), Some(current)) => Some(Profiles { reference, current }),
        _ => None,
    };
    Ok(Some(html::render_dataset_page(
        dataset, &history, profiles, refresh,
    )))
}

/// The reference a drift section names: a rolling window (the stored profiles
/// of the batches before the latest) or a profile file.
fn reference_profile(
    store: &Store,
    dataset: &str,
    name: &str,
) -> Result<Option<DatasetProfile>, StateError> {
    if let Some(rest) = name.strip_prefix("rolling (previous ") {
        let n: usize = rest
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        let mut profiles = store.rolling_profiles(dataset, n + 1)?;
        // The newest is the latest batch itself.
        profiles.pop();
        return Ok(
            match RollingWindow::from_profiles(profiles).reference(dataset, n) {
                Reference::Profile { profile, .. } => Some((*profile).clone()),
                _ => None,
            },
        );
    }
    Ok(DatasetProfile::read(Path::new(name)).ok())
}

/// The index page from the datasets' status.
pub fn index_page(datasets: &[DatasetStatus], refresh: Option<u32>) -> String {
    let rows: Vec<IndexRow> = datasets
        .iter()
        .map(|d| IndexRow {
            dataset: d.dataset.clone(),
            evaluated: d.evaluated,
            failed: d.failed,
            errored: d.errored,
            last_evaluated_at: d.last_evaluated_at.clone(),
            latest_passed: d.recent.first().map(|r| r.passed),
            latest_drift: d.recent.first().and_then(|r| r.dataset_drift),
        })
        .collect();
    html::render_index(&rows, refresh)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{BatchReport, BatchVersion};
    use crate::state::{Evaluated, Outcome, Retention};

    fn record(store: &Store, dataset: &str, n: u64) {
        let version = BatchVersion {
            kind: "file".to_string(),
            path: format!("b{n}.parquet"),
            size: n,
            modified_ns: 1,
            parts: 1,
            table: None,
            etag: None,
        };
        let line = |_seq: u64| {
            serde_json::to_string(&Report {
                version: 1,
                reports: vec![BatchReport::failed(
                    format!("b{n}.parquet"),
                    dataset.to_string(),
                    "rules.yaml".to_string(),
                    format!("error {n}"),
                )],
                unmatched: Vec::new(),
                agent: None,
            })
            .unwrap()
        };
        store
            .record(
                &Evaluated {
                    version: &version,
                    anomaly: &[],
                    schema: None,
                    dataset,
                    outcome: Outcome::Error,
                    rows: 0,
                    evaluated_at: 1,
                    rolling: None,
                    webhooks: None,
                    profile: None,
                },
                Retention {
                    reports_per_dataset: 10,
                },
                line,
            )
            .unwrap();
    }

    #[test]
    fn issue_15_concurrent_requests_for_a_dataset_page_build_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // A dataset name no other test uses: the cache is process-wide.
        let dataset = "pages-issue-15";
        record(&store, dataset, 1);
        let before = page_builds();
        let pages: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..16)
                .map(|_| scope.spawn(|| dataset_page(&store, dataset, Some(15)).unwrap().unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(page_builds() - before, 1, "one build for 16 requests");
        assert!(pages.iter().all(|p| p == &pages[0]));
        assert!(pages[0].contains("error 1"));
        // A new batch is a new page, built once more.
        record(&store, dataset, 2);
        let page = dataset_page(&store, dataset, Some(15)).unwrap().unwrap();
        assert!(page.contains("error 2"));
        assert_eq!(page_builds() - before, 2);
        assert_eq!(
            dataset_page(&store, dataset, Some(15)).unwrap().unwrap(),
            page
        );
        assert_eq!(page_builds() - before, 2);
        // No report, no page, no build.
        assert_eq!(dataset_page(&store, "pages-none", None).unwrap(), None);
        assert_eq!(page_builds() - before, 2);
    }
}
