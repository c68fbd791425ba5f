//! Evaluating one batch from the queue: resolve its rule file and drift
//! reference, run the engine on the evaluation runtime, record the result
//! durably (store, then results log) together with the webhook policies'
//! decisions, quarantine a bad file, and tell whoever listens.

use std::sync::Arc;
use std::time::SystemTime;

use chrono::Utc;

use super::Shared;
use crate::engine::BatchInput;
use crate::evaluate::{self, Reference, RollingWindow};
use crate::report::{AgentRecord, BatchReport, REPORT_VERSION, Report};
use crate::rules::{self, DriftConfig, RuleFile};
use crate::sinks::telemetry::{BatchIdentity, BatchTimings};
use crate::sources::Batch;
use crate::state::{DeliveryState, Evaluated, Outcome, PolicyOutcome, Retention, WebhookStep};

/// What the agent tells listeners (the demo, tests) after each evaluation.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Position in the results log.
    pub seq: u64,
    /// The report.
    pub report: BatchReport,
    /// Milliseconds from discovery to the durable record.
    pub latency_ms: u128,
}

/// Evaluates, records and announces one batch.
pub async fn process(shared: &Arc<Shared>, batch: Batch) {
    let key = (batch.dataset.clone(), batch.version.clone());
    let rule_file = shared
        .rules
        .borrow()
        .iter()
        .find(|r| r.dataset == batch.dataset)
        .cloned();
    let Some(rule_file) = rule_file else {
        // The rule file went away after the batch was queued: nothing to evaluate it for.
        tracing::info!(dataset = %batch.dataset, source = %batch.path.display(), "skipped: no rule file for the dataset any more");
        if let Some(ack) = &batch.ack {
            ack.send(&batch.version, false);
        }
        shared.forget(&key);
        return;
    };
    // A rolling reference must see its dataset's batches one at a time.
    let rolling = match &rule_file.drift {
        Some(DriftConfig {
            reference: Some(rules::Reference::Rolling { batches }),
            ..
        }) => Some(*batches),
        _ => None,
    };
    let dataset_lock = shared.dataset_lock(&batch.dataset);
    let _serial = match rolling {
        Some(_) => Some(dataset_lock.lock().await),
        None => None,
    };
    let reference = match rule_file.drift.as_ref() {
        None => None,
        Some(config) => Some((
            config.clone(),
            resolve_reference(shared, &rule_file, config).await,
        )),
    };

    let started = SystemTime::now();
    let engine = shared.engine.clone();
    let path = batch.path.clone();
    let source = batch.version.path.clone();
    let partitions = batch.partitions.clone();
    let rules_for_eval = rule_file.clone();
    let evaluated = shared
        .eval_runtime
        .spawn(async move {
            let input = BatchInput {
                path: &path,
                source: &source,
                partitions: &partitions,
            };
            evaluate::evaluate(
                &engine,
                &input,
                &rules_for_eval,
                Utc::now(),
                reference.as_ref().map(|(c, r)| (c, r.clone())),
            )
            .await
        })
        .await;
    let evaluation = match evaluated {
        Ok(e) => e,
        Err(e) => {
            // A panic inside DataFusion: report it as this batch's error, keep running.
            tracing::error!(dataset = %batch.dataset, source = %batch.path.display(), error = %e, "evaluation crashed");
            crate::engine::Evaluation {
                report: BatchReport::failed(
                    batch.version.path.clone(),
                    batch.dataset.clone(),
                    rule_file.path.display().to_string(),
                    format!(
                        "internal error evaluating the batch: {e} (this is a bug; please report it)"
                    ),
                )
                .with_partitions(&batch.partitions),
                profile: None,
                timings: Default::default(),
            }
        }
    };
    record(shared, &batch, &rule_file, evaluation, rolling, started).await;
    shared.forget(&key);
}

async fn resolve_reference(
    shared: &Arc<Shared>,
    rule_file: &RuleFile,
    config: &DriftConfig,
) -> Reference {
    match &config.reference {
        None => Reference::Failed {
            name: String::new(),
            error: format!(
                "{}: a `drift:` section needs a `reference`",
                config.location
            ),
        },
        Some(rules::Reference::File(path)) => shared
            .references
            .lock()
            .map(|mut cache| cache.load(path))
            .unwrap_or_else(|_| Reference::Failed {
                name: path.display().to_string(),
                error: "reference cache poisoned".to_string(),
            }),
        Some(rules::Reference::Rolling { batches }) => {
            let store = shared.store.clone();
            let dataset = rule_file.dataset.clone();
            let n = *batches;
            let loaded =
                tokio::task::spawn_blocking(move || store.rolling_profiles(&dataset, n)).await;
            match loaded {
                Ok(Ok(profiles)) => {
                    RollingWindow::from_profiles(profiles).reference(&rule_file.dataset, n)
                }
                Ok(Err(e)) => Reference::Failed {
                    name: format!("rolling (previous {n} batches)"),
                    error: e.to_string(),
                },
                Err(e) => Reference::Failed {
                    name: format!("rolling (previous {n} batches)"),
                    error: e.to_string(),
                },
            }
        }
    }
}

async fn record(
    shared: &Arc<Shared>,
    batch: &Batch,
    rule_file: &RuleFile,
    evaluation: crate::engine::Evaluation,
    rolling: Option<usize>,
    started: SystemTime,
) {
    let sinks_started = std::time::Instant::now();
    let timings = evaluation.timings;
    let report = evaluation.report;
    let outcome = if report.error.is_some() {
        Outcome::Error
    } else if report.passed {
        Outcome::Passed
    } else {
        Outcome::Failed
    };
    let evaluated_at = Utc::now();
    let rows = report.rows.unwrap_or(0);
    let shared2 = shared.clone();
    let version = batch.version.clone();
    let dataset = batch.dataset.clone();
    let report2 = report.clone();
    let profile = evaluation.profile;
    let webhooks = {
        let configured = shared
            .settings
            .lock()
            .map(|s| s.webhooks.clone())
            .unwrap_or_default();
        let rules = shared.rules.borrow().clone();
        super::webhooks::watching(rule_file, &rules, &configured)
    };
    let instance = shared.instance.clone();
    // The store commit and the log append happen under one lock so the log
    // is always in seq order.
    let written = tokio::task::spawn_blocking(move || {
        let mut log = shared2
            .results_log
            .lock()
            .map_err(|_| "results log lock poisoned".to_string())?;
        let rolling_entry = match (&profile, rolling) {
            (Some(p), Some(n)) if outcome != Outcome::Error => Some((p, n)),
            _ => None,
        };
        let mut line = String::new();
        let evaluated_text = evaluated_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let recorded = shared2
            .store
            .record_evaluation(
                &Evaluated {
                    version: &version,
                    dataset: &dataset,
                    outcome,
                    rows,
                    evaluated_at: evaluated_at.timestamp(),
                    rolling: rolling_entry,
                    profile: profile.as_ref().filter(|_| outcome != Outcome::Error),
                    webhooks: (!webhooks.is_empty()).then_some(WebhookStep {
                        report: &report2,
                        source: &version.path,
                        evaluated_at: &evaluated_text,
                        now_ms: evaluated_at.timestamp_millis(),
                        instance: &instance,
                        webhooks: &webhooks,
                    }),
                },
                Retention {
                    reports_per_dataset: shared2.reports_per_dataset,
                },
                |seq| {
                    let document = Report {
                        version: REPORT_VERSION,
                        reports: vec![report2.clone()],
                        unmatched: Vec::new(),
                        agent: Some(AgentRecord {
                            seq,
                            evaluated_at: evaluated_text.clone(),
                            batch: version.clone(),
                        }),
                    };
                    line = serde_json::to_string(&document).unwrap_or_else(|e| {
                        format!("{{\"version\":{REPORT_VERSION},\"error\":\"cannot serialize report: {e}\"}}")
                    });
                    line.clone()
                },
            )
            .map_err(|e| e.to_string())?;
        if recorded.new {
            log.append(&line).map_err(|e| e.to_string())?;
        }
        Ok::<_, String>(recorded)
    })
    .await;
    // A stream source may now drop its copy of the window (or commit its offsets).
    if let Some(ack) = &batch.ack {
        ack.send(&batch.version, matches!(written, Ok(Ok(_))));
    }
    let (seq, policies) = match written {
        Ok(Ok(r)) if r.new => (r.seq, r.webhooks),
        Ok(Ok(_)) => return,
        Ok(Err(e)) => {
            tracing::error!(dataset = %batch.dataset, source = %batch.path.display(), error = %e, "cannot record the evaluation; it will be retried");
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "recording task failed");
            return;
        }
    };
    let latency_ms = batch.discovered.elapsed().as_millis();
    shared
        .activity
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    log_outcome(seq, &report, rule_file, latency_ms);
    announce_webhooks(shared, &report.dataset, seq, &policies);
    if outcome == Outcome::Error {
        quarantine(shared, batch);
    }
    shared.telemetry.record_batch(
        &report,
        &BatchIdentity {
            source: &batch.version.path,
            seq,
            partitions: &batch.partitions,
        },
        &BatchTimings {
            started,
            read: timings.read,
            evaluate: timings.scan,
            drift: timings.drift,
            sinks: sinks_started.elapsed(),
        },
    );
    let _ = shared.events.send(Arc::new(Evaluation {
        seq,
        report,
        latency_ms,
    }));
}

/// Logs and counts what the webhook policies decided, and wakes the
/// delivery loop when an event was queued.
fn announce_webhooks(shared: &Shared, dataset: &str, seq: u64, policies: &[PolicyOutcome]) {
    for p in policies {
        match p {
            PolicyOutcome::Quiet {
                webhook,
                consecutive,
                needed,
            } if *consecutive > 0 => tracing::info!(
                webhook = %webhook, dataset, seq, consecutive, needed,
                "webhook trigger matched; waiting for more batches in a row"
            ),
            PolicyOutcome::Quiet { .. } => {}
            PolicyOutcome::CoolingDown { webhook } => {
                shared
                    .telemetry
                    .record_webhook_event(webhook, dataset, "cooling_down");
                tracing::info!(webhook = %webhook, dataset, seq, "webhook trigger held back by its cooldown");
            }
            PolicyOutcome::Fired {
                webhook,
                event_id,
                state,
                description,
                dry_run_body,
            } => match state {
                DeliveryState::DryRun => {
                    shared
                        .telemetry
                        .record_webhook_event(webhook, dataset, "dry_run");
                    let body = dry_run_body.as_deref().unwrap_or_default();
                    tracing::info!(
                        webhook = %webhook, dataset, seq, event_id = %event_id, reason = %description, body = %body,
                        "webhook dry run: this event would be sent"
                    );
                }
                DeliveryState::Dead => {
                    shared
                        .telemetry
                        .record_webhook_event(webhook, dataset, "fired");
                    tracing::error!(webhook = %webhook, dataset, seq, event_id = %event_id, "webhook fired but its body could not be rendered; dead-lettered");
                }
                _ => {
                    shared
                        .telemetry
                        .record_webhook_event(webhook, dataset, "fired");
                    tracing::info!(webhook = %webhook, dataset, seq, event_id = %event_id, reason = %description, "webhook fired; event queued for delivery");
                    shared.webhook_wake.notify_one();
                }
            },
        }
    }
}

fn log_outcome(seq: u64, report: &BatchReport, rule_file: &RuleFile, latency_ms: u128) {
    let partitions = report
        .partitions
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    if let Some(error) = &report.error {
        tracing::warn!(seq, dataset = %report.dataset, source = %report.source, partitions, error = %error, "batch could not be evaluated");
        return;
    }
    let failed = report.failing_checks();
    let drifted = report.drifted_columns();
    let drift = report.drift.as_ref();
    tracing::info!(
        seq,
        dataset = %report.dataset,
        source = %report.source,
        partitions,
        rows = report.rows.unwrap_or(0),
        passed = report.passed,
        failed_checks = %failed.join(","),
        dataset_drift = drift.is_some_and(|d| d.dataset_drift),
        drifted_columns = %drifted.join(","),
        latency_ms = latency_ms as u64,
        rules = %rule_file.path.display(),
        "batch evaluated"
    );
}

/// Moves a file whose evaluation errored into the quarantine folder, keeping
/// its path relative to the watched folder. Folder batches stay in place.
fn quarantine(shared: &Shared, batch: &Batch) {
    let Some(dir) = shared
        .settings
        .lock()
        .ok()
        .and_then(|s| s.quarantine.clone())
    else {
        return;
    };
    if batch.version.kind != "file" {
        return;
    }
    let target = dir.join(&batch.relative);
    let moved = target
        .parent()
        .map(std::fs::create_dir_all)
        .unwrap_or(Ok(()))
        .and_then(|()| std::fs::rename(&batch.path, &target));
    match moved {
        Ok(()) => {
            tracing::info!(source = %batch.path.display(), quarantine = %target.display(), "quarantined")
        }
        Err(e) => tracing::warn!(source = %batch.path.display(), error = %e, "cannot quarantine"),
    }
}
