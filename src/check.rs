//! The one-shot `driftwatch check`: every input against every rule file that
//! applies to it, one scan per (input, rule file), into one [`Report`]. When a
//! reference profile applies (the rule file's `drift.reference`, or
//! `--reference`), the same scan also profiles the batch and a drift section
//! compares it with the reference.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::drift::compare::{DriftReport, compare};
use crate::engine::{Engine, ProfileRequest};
use crate::inputs::{self, Input};
use crate::profile::DatasetProfile;
use crate::report::Report;
use crate::rules::{DriftConfig, RuleFile};

/// Evaluates `inputs` against `rules` (see [`inputs::assign`] for `single`).
/// `reference` overrides every rule file's `drift.reference`.
pub async fn run_check(
    engine: &Engine,
    inputs: &[Input],
    rules: &[RuleFile],
    single: bool,
    now: DateTime<Utc>,
    reference: Option<&Path>,
) -> Report {
    let (pairs, unmatched) = inputs::assign(inputs, rules, single);
    let mut references: HashMap<PathBuf, Result<DatasetProfile, String>> = HashMap::new();
    let mut reports = Vec::with_capacity(pairs.len());
    for (input, rule_index) in pairs {
        let rule_file = &rules[rule_index];
        let drift = drift_config(rule_file, reference);
        let request = match &drift {
            Some((config, _)) => match &config.columns {
                Some(columns) => ProfileRequest::Columns(columns.clone()),
                None => ProfileRequest::AllSupported,
            },
            None => ProfileRequest::None,
        };
        let evaluation = engine
            .evaluate_with_profiles(&input.path, &input.display(), rule_file, now, &request)
            .await;
        let mut report = evaluation.report;
        if let (Some((config, reference_path)), None) = (drift, &report.error) {
            let section = match reference_path {
                None => DriftReport::failed(
                    String::new(),
                    &config,
                    format!(
                        "{}: a `drift:` section needs a `reference` (or `check --reference FILE`)",
                        config.location
                    ),
                ),
                Some(path) => {
                    let name = path.display().to_string();
                    let loaded = references
                        .entry(path.clone())
                        .or_insert_with(|| DatasetProfile::read(&path).map_err(|e| e.to_string()));
                    match (loaded, &evaluation.profile) {
                        (Err(e), _) => DriftReport::failed(name, &config, e.clone()),
                        (Ok(reference), Some(current)) => {
                            compare(&name, reference, current, &config)
                        }
                        (Ok(reference), None) => {
                            let empty = DatasetProfile::new(rule_file.dataset.clone());
                            compare(&name, reference, &empty, &config)
                        }
                    }
                }
            };
            report.drift = Some(section);
            report = report.with_passed_from_checks();
        }
        reports.push(report);
    }
    Report::new(reports, unmatched.iter().map(|i| i.display()).collect())
}

/// The drift settings for a rule file, and the reference path to use.
fn drift_config(
    rule_file: &RuleFile,
    reference: Option<&Path>,
) -> Option<(DriftConfig, Option<PathBuf>)> {
    match (&rule_file.drift, reference) {
        (Some(config), Some(path)) => Some((config.clone(), Some(path.to_path_buf()))),
        (Some(config), None) => Some((config.clone(), config.reference.clone())),
        (None, Some(path)) => Some((
            DriftConfig::defaults(&rule_file.path),
            Some(path.to_path_buf()),
        )),
        (None, None) => None,
    }
}
