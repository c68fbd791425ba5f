//! One batch against one rule file, drift included: what `check` and the
//! agent share.
//!
//! The caller resolves the drift reference first ([`Reference`] — a loaded
//! profile file, a rolling window of previous batches, or why there is none),
//! because where references live differs: `check` keeps a rolling window in
//! memory for the inputs of one run, the agent keeps it in its store. The
//! batch is then profiled in the same scan as its checks and compared.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use chrono::{DateTime, Utc};

use crate::drift::compare::{DriftReport, compare};
use crate::engine::{BatchInput, Engine, Evaluation, ProfileRequest};
use crate::profile::DatasetProfile;
use crate::rules::{DriftConfig, RuleFile};

/// The drift reference for one evaluation.
#[derive(Debug, Clone)]
pub enum Reference {
    /// A profile to compare with, and how to name it in the report.
    Profile {
        /// E.g. the profile file's path, or `rolling (previous 3 batches)`.
        name: String,
        /// The reference profile.
        profile: Arc<DatasetProfile>,
    },
    /// A rolling reference that does not have a batch yet.
    WarmingUp {
        /// How to name it.
        name: String,
        /// Batches it has.
        have: usize,
        /// Batches it wants.
        need: usize,
    },
    /// The reference could not be used; the drift section reports why.
    Failed {
        /// How to name it.
        name: String,
        /// One-line reason.
        error: String,
    },
}

/// What columns a drift section needs profiled.
pub fn profile_request(config: Option<&DriftConfig>) -> ProfileRequest {
    match config {
        Some(DriftConfig {
            columns: Some(columns),
            ..
        }) => ProfileRequest::Columns(columns.clone()),
        Some(_) => ProfileRequest::AllSupported,
        None => ProfileRequest::None,
    }
}

/// Evaluates `rules` on `input` in one scan and, when `drift` is given,
/// compares the batch's profile with the reference. The profile is returned
/// too, for rolling references and baselines.
pub async fn evaluate(
    engine: &Engine,
    input: &BatchInput<'_>,
    rules: &RuleFile,
    now: DateTime<Utc>,
    drift: Option<(&DriftConfig, Reference)>,
) -> Evaluation {
    let request = profile_request(drift.as_ref().map(|(c, _)| *c));
    let evaluation = engine.evaluate_batch(input, rules, now, &request).await;
    let Some((config, reference)) = drift else {
        return evaluation;
    };
    if evaluation.report.error.is_some() {
        return evaluation;
    }
    let started = std::time::Instant::now();
    let section = match reference {
        Reference::Failed { name, error } => DriftReport::failed(name, config, error),
        Reference::WarmingUp { name, have, need } => {
            DriftReport::warming_up(name, config, have, need)
        }
        Reference::Profile { name, profile } => match &evaluation.profile {
            Some(current) => compare(&name, &profile, current, config),
            None => compare(
                &name,
                &profile,
                &DatasetProfile::new(rules.dataset.clone()),
                config,
            ),
        },
    };
    let Evaluation {
        mut report,
        profile,
        mut timings,
        environment,
        timed_out,
        out_of_memory,
        schema,
    } = evaluation;
    report.drift = Some(section);
    timings.drift = started.elapsed();
    Evaluation {
        report: report.with_passed_from_checks(),
        profile,
        timings,
        environment,
        timed_out,
        out_of_memory,
        schema,
    }
}

/// Reference profile files, cached by path and modification time so a
/// replaced baseline is picked up without a restart.
#[derive(Default)]
pub struct ReferenceCache {
    files: HashMap<PathBuf, CachedReference>,
}

/// A loaded reference file (or why it could not be loaded) and the mtime it had.
type CachedReference = (Option<SystemTime>, Result<Arc<DatasetProfile>, String>);

impl ReferenceCache {
    /// The profile file at `path` as a reference (read again when its mtime changed).
    pub fn load(&mut self, path: &Path) -> Reference {
        let name = path.display().to_string();
        let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let fresh = self
            .files
            .get(path)
            .is_some_and(|(cached, _)| *cached == mtime && mtime.is_some());
        if !fresh {
            let loaded = DatasetProfile::read(path)
                .map(Arc::new)
                .map_err(|e| e.to_string());
            self.files.insert(path.to_path_buf(), (mtime, loaded));
        }
        match self.files.get(path).map(|(_, r)| r.clone()) {
            Some(Ok(profile)) => Reference::Profile { name, profile },
            Some(Err(error)) => Reference::Failed { name, error },
            None => Reference::Failed {
                name,
                error: "reference cache lost its entry (a bug)".to_string(),
            },
        }
    }
}

/// The previous batches' profiles of one dataset, newest last, at most
/// `capacity` of them; their merge is the rolling reference.
#[derive(Debug, Clone, Default)]
pub struct RollingWindow {
    profiles: VecDeque<DatasetProfile>,
}

impl RollingWindow {
    /// A window holding `profiles` (oldest first).
    pub fn from_profiles(profiles: impl IntoIterator<Item = DatasetProfile>) -> Self {
        Self {
            profiles: profiles.into_iter().collect(),
        }
    }

    /// Adds the newest batch's profile, dropping the oldest beyond `capacity`.
    pub fn push(&mut self, profile: DatasetProfile, capacity: usize) {
        self.profiles.push_back(profile);
        while self.profiles.len() > capacity.max(1) {
            self.profiles.pop_front();
        }
    }

    /// Batches held.
    pub fn len(&self) -> usize {
        self.profiles.len()
    }

    /// Whether no batch is held yet.
    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }

    /// The rolling reference for the next batch: the merge of the held
    /// profiles, oldest first (merge order is fixed so the result is
    /// deterministic).
    pub fn reference(&self, dataset: &str, need: usize) -> Reference {
        let name = format!("rolling (previous {need} batches)");
        let Some(first) = self.profiles.front() else {
            return Reference::WarmingUp {
                name,
                have: 0,
                need,
            };
        };
        let mut merged = first.clone();
        for next in self.profiles.iter().skip(1) {
            if let Err(e) = merged.merge(next) {
                return Reference::Failed {
                    name,
                    error: format!("cannot merge the rolling reference of `{dataset}`: {e}"),
                };
            }
        }
        Reference::Profile {
            name,
            profile: Arc::new(merged),
        }
    }
}
