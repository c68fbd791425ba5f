//! The agent's HTML pages: the index (`/`, every dataset's latest status) and
//! a dataset's page (`/report/{dataset}`: its latest batch with the charts of
//! reference vs batch, and its history), built from the store so that
//! `driftwatch report --state DIR` writes the same page for a stopped agent.

use std::path::Path;

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

/// A dataset's page, or `None` when the store has no report of it.
pub fn dataset_page(
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
