//! The one-shot `driftwatch check`: every input against every rule file that
//! applies to it, one scan per (input, rule file), into one [`Report`]. When a
//! reference applies (the rule file's `drift.reference`, or `--reference`),
//! the same scan also profiles the batch and a drift section compares it with
//! the reference. A rolling reference (`{rolling: {batches: N}}`) is the merge
//! of the previous N inputs of the same dataset in this run, in input order.
//! `anomaly` checks are judged in input order against `histories` (read from
//! and written back to `check --history FILE` by the CLI), each batch added
//! to its series after it is judged.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::engine::{BatchInput, Engine};
use crate::evaluate::{self, Reference, ReferenceCache, RollingWindow};
use crate::inputs::{self, Input};
use crate::profile::DatasetProfile;
use crate::report::{BatchReport, Report};
use crate::rules::{self, DriftConfig, RuleFile};

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
    let mut histories = crate::anomaly::history::Histories::default();
    run_check_with_profiles(
        engine,
        inputs,
        rules,
        single,
        now,
        reference,
        &mut histories,
        &|_, _| {},
    )
    .await
    .report
}

/// A check run's report, and for each batch report with drift results the
/// reference and batch profiles behind them (for the HTML report's charts).
pub struct CheckRun {
    /// The report.
    pub report: Report,
    /// `profiles[i]` belongs to `report.reports[i]`.
    pub profiles: Vec<Option<(Arc<DatasetProfile>, DatasetProfile)>>,
}

/// [`run_check`], keeping the profiles and judging `anomaly` checks against
/// `histories` (which gain each batch's values); `progress(done, total)` is
/// called after each (input, rule file) evaluation.
#[allow(clippy::too_many_arguments)]
pub async fn run_check_with_profiles(
    engine: &Engine,
    inputs: &[Input],
    rules: &[RuleFile],
    single: bool,
    now: DateTime<Utc>,
    reference: Option<&Path>,
    histories: &mut crate::anomaly::history::Histories,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> CheckRun {
    let mut profiles = Vec::new();
    let (pairs, unmatched) = inputs::assign(inputs, rules, single);
    let mut files = ReferenceCache::default();
    let mut windows: HashMap<String, RollingWindow> = HashMap::new();
    // Each dataset's sequential detector, carried from input to input in
    // the order given (`drift.sequential`).
    let mut detectors: HashMap<String, std::collections::BTreeMap<String, f64>> = HashMap::new();
    let mut reports = Vec::with_capacity(pairs.len());
    let total = pairs.len();
    for (input, rule_index) in pairs {
        let rule_file = &rules[rule_index];
        let config = drift_config(rule_file, reference);
        let resolved = config.as_ref().map(|config| {
            let reference = match &config.reference {
                None => Reference::Failed {
                    name: String::new(),
                    error: format!(
                        "{}: a `drift:` section needs a `reference` (or `check --reference FILE`)",
                        config.location
                    ),
                },
                Some(rules::Reference::File(path)) => files.load(path),
                Some(rules::Reference::Rolling { batches }) => windows
                    .entry(rule_file.dataset.clone())
                    .or_default()
                    .reference(&rule_file.dataset, *batches),
            };
            (config, reference)
        });
        // A table input: the files its version added, read through its log.
        let table = match &input.table {
            Some(t) => Some(
                crate::sources::table::read_version(
                    t.format,
                    &t.location,
                    t.catalog.as_ref(),
                    t.version,
                    false,
                    engine.object_store(),
                )
                .await
                .map_err(|e| e.to_string()),
            ),
            None => None,
        };
        let rules_path = rule_file.path.display().to_string();
        let evaluation = match &table {
            Some(Err(error)) => crate::engine::Evaluation::without_scan(BatchReport::failed(
                input
                    .table
                    .as_ref()
                    .map(|t| t.location.clone())
                    .unwrap_or_else(|| input.display()),
                rule_file.dataset.clone(),
                rules_path,
                error.clone(),
            )),
            Some(Ok(version)) if version.table.skipped.is_some() => {
                crate::engine::Evaluation::without_scan(BatchReport::skipped(
                    version.source(),
                    rule_file.dataset.clone(),
                    rules_path,
                    version.table.clone(),
                ))
            }
            Some(Ok(version)) if version.unreadable.is_some() => {
                crate::engine::Evaluation::without_scan(
                    BatchReport::failed(
                        version.source(),
                        rule_file.dataset.clone(),
                        rules_path,
                        crate::sources::table::unsupported_message(
                            &version.table,
                            version.unreadable.as_deref().unwrap_or_default(),
                        ),
                    )
                    .with_table(Some(&version.table)),
                )
            }
            _ => {
                let version = table.as_ref().and_then(|t| t.as_ref().ok());
                let source = version
                    .map(|v| v.source())
                    .unwrap_or_else(|| input.display());
                let batch = BatchInput {
                    path: &input.path,
                    source: &source,
                    partitions: version.map(|v| &v.partitions).unwrap_or(&input.partitions),
                    files: version.map(|v| v.files.as_slice()).unwrap_or(&[]),
                };
                let mut evaluation = evaluate::evaluate(
                    engine,
                    &batch,
                    rule_file,
                    now,
                    resolved.as_ref().map(|(c, r)| (*c, r.clone())),
                )
                .await;
                evaluation.report.table = version.map(|v| v.table.clone());
                evaluation
            }
        };
        let mut evaluation = evaluation;
        if let (Some(sequential), Some(drift)) = (
            config.as_ref().and_then(|c| c.sequential),
            evaluation.report.drift.as_mut(),
        ) {
            let rows = match (&resolved, evaluation.report.rows) {
                (Some((_, Reference::Profile { profile, .. })), Some(rows)) => {
                    Some((profile.rows, rows))
                }
                _ => None,
            };
            let state = detectors.entry(rule_file.dataset.clone()).or_default();
            crate::drift::sequential::apply(drift, sequential, state, rows);
            if let Some(section) = &drift.sequential {
                *state = crate::drift::sequential::carried_state(section);
            }
            evaluation.report = evaluation.report.with_passed_from_checks();
        }
        let reference_profile = match &resolved {
            Some((_, Reference::Profile { profile, .. })) => Some(profile.clone()),
            _ => None,
        };
        profiles.push(match (&reference_profile, &evaluation.profile) {
            (Some(r), Some(c)) if evaluation.report.drift.is_some() => Some((r.clone(), c.clone())),
            _ => None,
        });
        if let (Some(config), Some(profile)) = (&config, evaluation.profile)
            && let Some(rules::Reference::Rolling { batches }) = &config.reference
        {
            windows
                .entry(rule_file.dataset.clone())
                .or_default()
                .push(profile, *batches);
        }
        let mut report = evaluation.report;
        crate::anomaly::history::judge_report(&mut report, rule_file, histories);
        reports.push(report);
        progress(reports.len(), total);
    }
    CheckRun {
        report: Report::new(reports, unmatched.iter().map(|i| i.display()).collect()),
        profiles,
    }
}

/// The drift settings for a rule file, with `--reference` applied.
fn drift_config(rule_file: &RuleFile, reference: Option<&Path>) -> Option<DriftConfig> {
    match (&rule_file.drift, reference) {
        (Some(config), Some(path)) => Some(DriftConfig {
            reference: Some(rules::Reference::File(path.to_path_buf())),
            ..config.clone()
        }),
        (Some(config), None) => Some(config.clone()),
        (None, Some(path)) => Some(DriftConfig {
            reference: Some(rules::Reference::File(path.to_path_buf())),
            ..DriftConfig::defaults(&rule_file.path)
        }),
        (None, None) => None,
    }
}
