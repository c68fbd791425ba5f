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
use crate::report::BatchReport;
use crate::rules::{self, DriftConfig, RuleFile};
use crate::sinks::telemetry::{BatchIdentity, BatchTimings};
use crate::sources::Batch;
use crate::state::{DeliveryState, Outcome, PolicyOutcome};

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
        tracing::info!(dataset = %batch.dataset, source = %display_path(&batch.path), "skipped: no rule file for the dataset any more");
        if let Some(ack) = &batch.ack {
            ack.send(&batch.version, false);
        }
        settled(shared, shared.health.dropped(&key));
        shared.forget(&key);
        return;
    };
    // The batch has arrived: its landing time enters the dataset's arrivals
    // now, before it is evaluated, so a later batch evaluated alongside it
    // is judged late or not against it (a backlog's batches are dequeued in
    // order but may finish out of order). A skipped table version is no
    // batch; its commit still says the table lives.
    shared
        .telemetry
        .record_arrival(&batch.dataset, landed(&batch));
    // A rolling reference must see its dataset's batches one at a time.
    let rolling = match &rule_file.drift {
        Some(DriftConfig {
            reference: Some(rules::Reference::Rolling { batches }),
            ..
        }) => Some(*batches),
        _ => None,
    };
    // So must a sequential detector (each window starts from the last) and
    // an `anomaly` check's history.
    let sequential = rule_file.drift.as_ref().and_then(|d| d.sequential);
    let has_anomaly = rule_file
        .checks
        .iter()
        .any(|c| matches!(c.kind, rules::CheckKind::Anomaly { .. }));
    let dataset_lock = shared.dataset_lock(&batch.dataset);
    let _serial = match (rolling, sequential, has_anomaly) {
        (None, None, false) => None,
        _ => Some(dataset_lock.lock().await),
    };
    let sequential_state = match sequential {
        None => None,
        Some(config) => match sequential_state(shared, &batch.dataset).await {
            Ok(state) => Some((config, state)),
            // The store could not be read: not a verdict on the batch.
            Err(fault) => {
                retry_later(shared, batch, "sequential state", fault);
                return;
            }
        },
    };
    let reference = match rule_file.drift.as_ref() {
        None => None,
        Some(config) => match resolve_reference(shared, &rule_file, config).await {
            Ok(reference) => Some((config.clone(), reference)),
            // The store could not be read: not a verdict on the batch.
            Err(fault) => {
                retry_later(shared, batch, "reference", fault);
                return;
            }
        },
    };

    let started = SystemTime::now();
    // A table version that added no data is recorded, not evaluated; one
    // whose files cannot be read as they are is an error report.
    if let Some(table) = &batch.version.table {
        let skipped = table.skipped.is_some();
        let unreadable = batch.table.as_ref().and_then(|t| t.unreadable.clone());
        if skipped || unreadable.is_some() {
            let rules_path = rule_file.path.display().to_string();
            let report = match unreadable {
                Some(reason) if !skipped => BatchReport::failed(
                    batch.version.path.clone(),
                    batch.dataset.clone(),
                    rules_path,
                    crate::sources::table::unsupported_message(table, &reason),
                )
                .with_table(Some(table)),
                _ => BatchReport::skipped(
                    crate::sources::table::source_name(&table.location, table.version),
                    batch.dataset.clone(),
                    rules_path,
                    table.clone(),
                ),
            };
            let evaluation = crate::engine::Evaluation::without_scan(report);
            match record(
                shared,
                &batch,
                &rule_file,
                evaluation,
                rolling,
                &[],
                started,
                None,
            )
            .await
            {
                Err(reason) => retry_later(shared, batch, "record", reason),
                Ok(()) => shared.forget(&key),
            }
            return;
        }
    }
    // For the sequential detector's reference-size condition.
    let reference_rows = match &reference {
        Some((_, evaluate::Reference::Profile { profile, .. })) => Some(profile.rows),
        _ => None,
    };
    let engine = shared.engine.clone();
    let path = batch.path.clone();
    let source = match &batch.version.table {
        Some(table) => crate::sources::table::source_name(&table.location, table.version),
        None => batch.version.path.clone(),
    };
    let partitions = batch.partitions.clone();
    let files: Vec<crate::engine::FileInput> = batch
        .table
        .iter()
        .flat_map(|t| &t.files)
        .map(|f| crate::engine::FileInput {
            path: f.path.clone(),
            partitions: f.partitions.clone(),
        })
        .collect();
    let table = batch.version.table.clone();
    let rules_for_eval = rule_file.clone();
    let evaluated = shared
        .eval_runtime
        .spawn(async move {
            let input = BatchInput {
                path: &path,
                source: &source,
                partitions: &partitions,
                files: &files,
            };
            let mut evaluation = evaluate::evaluate(
                &engine,
                &input,
                &rules_for_eval,
                Utc::now(),
                reference.as_ref().map(|(c, r)| (c, r.clone())),
            )
            .await;
            evaluation.report.table = table;
            evaluation
        })
        .await;
    let evaluation = match evaluated {
        Ok(e) => e,
        Err(e) => {
            // A panic inside DataFusion: report it as this batch's error, keep running.
            tracing::error!(dataset = %batch.dataset, source = %display_path(&batch.path), error = %e, "evaluation crashed");
            crate::engine::Evaluation {
                report: BatchReport::failed(
                    batch.version.path.clone(),
                    batch.dataset.clone(),
                    rule_file.path.display().to_string(),
                    format!(
                        "internal error evaluating the batch: {e} (this is a bug; please report it)"
                    ),
                )
                .with_partitions(&batch.partitions)
                .with_table(batch.version.table.as_ref()),
                profile: None,
                timings: Default::default(),
                environment: None,
                timed_out: false,
                out_of_memory: false,
                schema: None,
            }
        }
    };
    let mut evaluation = evaluation;
    let mut anomaly = Vec::new();
    // The volume signal judges every batch against the ones before it. A
    // dataset whose batches are serialized anyway judges it from the store
    // with its `anomaly` checks; any other judges it from the in-memory
    // series (`Shared::volume_series`) further down, under the dataset's
    // lock for as long as it takes to judge and queue the record only.
    let volume = shared
        .volume_sensitivity
        .filter(|_| evaluation.environment.is_none() && evaluation.report.error.is_none());
    if (has_anomaly || (volume.is_some() && _serial.is_some())) && evaluation.environment.is_none()
    {
        let store = shared.store.clone();
        let dataset = batch.dataset.clone();
        // A failed read and a failed blocking task are the same fault here.
        let read = tokio::task::spawn_blocking(move || store.anomaly_series(&dataset))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        match read {
            Ok(series) => {
                let mut histories = crate::anomaly::history::Histories::from_series(
                    series
                        .into_iter()
                        .map(|(check, s)| (batch.dataset.clone(), check, s)),
                );
                if has_anomaly {
                    anomaly = crate::anomaly::history::judge_report(
                        &mut evaluation.report,
                        &rule_file,
                        &mut histories,
                    );
                }
                if let (Some(sensitivity), Some(_)) = (volume, &_serial) {
                    let judged = crate::anomaly::history::judge_volume(
                        &mut evaluation.report,
                        &mut histories,
                        sensitivity,
                        Utc::now().timestamp(),
                    );
                    // Kept current for when the dataset's batches stop being
                    // serialized (a rule reload).
                    if let (Some(u), Ok(mut cache)) = (&judged, shared.volume_series.lock()) {
                        cache.insert(batch.dataset.clone(), u.series.clone());
                    }
                    anomaly.extend(judged);
                }
            }
            // The store could not be read: not a verdict on the batch.
            Err(e) => {
                retry_later(
                    shared,
                    batch,
                    "history",
                    format!("cannot read the anomaly history: {e}"),
                );
                return;
            }
        }
    }
    // Schema changes against the dataset's previous batch: a health signal
    // for every dataset, rules or not.
    if let Some(schema) = evaluation.schema.clone()
        && evaluation.environment.is_none()
    {
        let store = shared.store.clone();
        let dataset = batch.dataset.clone();
        match tokio::task::spawn_blocking(move || store.latest_schema(&dataset)).await {
            Ok(Ok(Some(previous))) => {
                evaluation.report.schema_changes =
                    crate::report::schema_changes(&previous, &schema);
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                retry_later(
                    shared,
                    batch,
                    "history",
                    format!("cannot read the previous schema: {e}"),
                );
                return;
            }
            Err(e) => {
                retry_later(
                    shared,
                    batch,
                    "history",
                    format!("cannot read the previous schema: {e}"),
                );
                return;
            }
        }
    }
    if let Some(reason) = evaluation.environment.clone() {
        // A batch that keeps running out of memory is too big for the
        // configured pool, not unlucky: after a few tries that is its verdict
        // (else it would keep the agent degraded, and restarting, for ever).
        let tries = shared.health.tries(&key);
        if !(evaluation.out_of_memory && tries + 1 >= super::health::MEMORY_TRIES) {
            retry_later(shared, batch, "evaluate", reason);
            return;
        }
        evaluation.report.error = Some(format!(
            "{reason} (tried {} times: the batch needs more memory than `evaluation.memory_limit` gives it)",
            tries + 1
        ));
    }
    // The volume signal of a dataset whose batches are not serialized:
    // judged last (nothing after it can send the batch back for a retry
    // before its record is queued), under the dataset's lock until the
    // record is queued, so batches are judged and committed in one order.
    let volume_serial = match (volume, &_serial) {
        (Some(sensitivity), None) => {
            let guard = dataset_lock.clone().lock_owned().await;
            match volume_from_cache(shared, &batch.dataset).await {
                Ok(series) => {
                    let mut histories = crate::anomaly::history::Histories::from_series([(
                        batch.dataset.clone(),
                        crate::anomaly::history::VOLUME_SERIES.to_string(),
                        series,
                    )]);
                    let judged = crate::anomaly::history::judge_volume(
                        &mut evaluation.report,
                        &mut histories,
                        sensitivity,
                        Utc::now().timestamp(),
                    );
                    if let (Some(u), Ok(mut cache)) = (&judged, shared.volume_series.lock()) {
                        cache.insert(batch.dataset.clone(), u.series.clone());
                    }
                    anomaly.extend(judged);
                    Some(guard)
                }
                Err(e) => {
                    drop(guard);
                    retry_later(
                        shared,
                        batch,
                        "history",
                        format!("cannot read the volume history: {e}"),
                    );
                    return;
                }
            }
        }
        _ => None,
    };
    if let (Some((config, state)), Some(drift)) =
        (&sequential_state, evaluation.report.drift.as_mut())
    {
        let rows = reference_rows.zip(evaluation.report.rows);
        crate::drift::sequential::apply(drift, *config, state, rows);
        evaluation.report = evaluation.report.with_passed_from_checks();
    }
    // A batch whose dataset keeps no order (no rolling reference, sequential
    // detector, history or volume signal) is recorded while its worker goes
    // on to the next batch, so records pile up into group commits under
    // load instead of each waiting for its own disk syncs.
    if _serial.is_none()
        && let Ok(permit) = shared.recording.clone().acquire_owned().await
    {
        let shared = shared.clone();
        tokio::spawn(async move {
            match record(
                &shared,
                &batch,
                &rule_file,
                evaluation,
                rolling,
                &anomaly,
                started,
                volume_serial,
            )
            .await
            {
                Err(reason) => retry_later(&shared, batch, "record", reason),
                Ok(()) => shared.forget(&key),
            }
            drop(permit);
        });
        return;
    }
    match record(
        shared,
        &batch,
        &rule_file,
        evaluation,
        rolling,
        &anomaly,
        started,
        volume_serial,
    )
    .await
    {
        Err(reason) => retry_later(shared, batch, "record", reason),
        Ok(()) => shared.forget(&key),
    }
}

/// The dataset's volume series as the next batch is to be judged against:
/// the in-memory one, else the store's (its first batch since the agent
/// started, or since a record failed). `Err` when the store cannot be read.
async fn volume_from_cache(
    shared: &Arc<Shared>,
    dataset: &str,
) -> Result<crate::anomaly::Series, String> {
    if let Some(series) = shared
        .volume_series
        .lock()
        .ok()
        .and_then(|cache| cache.get(dataset).cloned())
    {
        return Ok(series);
    }
    let store = shared.store.clone();
    let name = dataset.to_string();
    let stored = tokio::task::spawn_blocking(move || store.anomaly_series(&name))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(stored
        .into_iter()
        .find(|(check, _)| check == crate::anomaly::history::VOLUME_SERIES)
        .map(|(_, series)| series)
        .unwrap_or_default())
}

/// Reports searched for the dataset's last sequential detector state: a
/// report without one (an error, a skipped table version) does not reset it.
const SEQUENTIAL_LOOKBACK: usize = 64;

/// The sequential detector state the dataset's next window starts from: the
/// one in its newest stored report that has one (empty for the first).
/// `Err` when the store cannot be read.
async fn sequential_state(
    shared: &Arc<Shared>,
    dataset: &str,
) -> Result<std::collections::BTreeMap<String, f64>, String> {
    let store = shared.store.clone();
    let dataset = dataset.to_string();
    let reports =
        tokio::task::spawn_blocking(move || store.latest_reports(&dataset, SEQUENTIAL_LOOKBACK))
            .await
            .map_err(|e| format!("reading the sequential state: {e}"))?
            .map_err(|e| format!("reading the sequential state: {e}"))?;
    Ok(reports
        .iter()
        .find_map(|(_, line)| {
            let document: serde_json::Value = serde_json::from_str(line).ok()?;
            let section = document.pointer("/reports/0/drift/sequential")?;
            serde_json::from_value::<crate::drift::sequential::SequentialSection>(section.clone())
                .ok()
        })
        .map(|section| crate::drift::sequential::carried_state(&section))
        .unwrap_or_default())
}

/// When a batch landed (Unix seconds): its version's modification time (a
/// table version's commit time).
fn landed(batch: &Batch) -> f64 {
    batch.version.modified_ns as f64 / 1e9
}

/// Puts a batch that met an environment fault back in the queue after a
/// backoff, without recording anything: the fault says nothing about the
/// batch. It stays in flight meanwhile, so discovery does not queue it twice.
fn retry_later(shared: &Arc<Shared>, batch: Batch, stage: &'static str, reason: String) {
    let key = (batch.dataset.clone(), batch.version.clone());
    let (tries, transition) = shared.health.fault(&key, &reason);
    shared.telemetry.record_retry(&batch.dataset, stage);
    let wait = super::health::backoff(tries);
    if transition == super::health::Transition::Degraded {
        shared.telemetry.set_degraded(true);
        tracing::error!(
            dataset = %batch.dataset, source = %display_path(&batch.path), stage, error = %reason,
            "degraded: the environment keeps batches from being evaluated or recorded; they are tried again with backoff and never given a verdict for it (one line per episode)"
        );
    } else {
        tracing::debug!(dataset = %batch.dataset, source = %display_path(&batch.path), stage, tries, error = %reason, "environment fault; trying again later");
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        let mut stop = shared.stop.clone();
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(wait) => {}
        }
        // A lake file gone or rewritten meanwhile needs no more tries under
        // this version: discovery sends a new version of its own (a stream
        // window's file is the source's to keep).
        if batch.ack.is_none() && !still_the_same(&batch) {
            tracing::info!(dataset = %batch.dataset, source = %display_path(&batch.path), "gone or changed while waiting to be tried again; this version is forgotten");
            settled(&shared, shared.health.dropped(&key));
            shared.forget(&key);
            return;
        }
        let requeue = shared.requeue.clone();
        tokio::select! {
            _ = stop.wait_for(|s| *s) => {}
            sent = requeue.send(batch) => {
                if sent.is_err() {
                    shared.forget(&key);
                }
            }
        }
    });
}

/// Whether a lake batch is still the version that was queued: a file with
/// the same size and modification time, or a folder that still exists (its
/// parts are compared by discovery).
fn still_the_same(batch: &Batch) -> bool {
    // An object rewritten meanwhile is listed as a version of its own; the
    // one waiting here is tried as it is (a vanished one then reads as
    // not found, its version's answer).
    if matches!(batch.version.kind.as_str(), "object" | "prefix") {
        return true;
    }
    let Ok(meta) = std::fs::symlink_metadata(&batch.path) else {
        return false;
    };
    if batch.version.kind != "file" {
        return meta.is_dir();
    }
    meta.is_file()
        && meta.len() == batch.version.size
        && crate::sources::lake::scan::modified_ns(&meta) == batch.version.modified_ns
}

/// Logs the end of a degraded episode.
pub(crate) fn settled(shared: &Shared, transition: super::health::Transition) {
    if let super::health::Transition::Recovered(after, tries) = transition {
        shared.telemetry.set_degraded(false);
        tracing::info!(
            after_s = after.as_secs_f64(),
            failed_tries = tries,
            "recovered: batches are evaluated and recorded again"
        );
    }
}

/// A path as logs and terminals should show it: control characters
/// escaped, so a file name cannot forge log lines or move the cursor.
pub(crate) fn display_path(path: &std::path::Path) -> String {
    crate::report::escape_control(&path.display().to_string())
}

/// The drift reference of a batch; `Err` when the store holding a rolling
/// reference could not be read (an environment fault: the batch waits).
async fn resolve_reference(
    shared: &Arc<Shared>,
    rule_file: &RuleFile,
    config: &DriftConfig,
) -> Result<Reference, String> {
    Ok(match &config.reference {
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
                // A damaged stored profile stays damaged: a verdict.
                Ok(Err(e @ crate::state::StateError::Decode { .. })) => Reference::Failed {
                    name: format!("rolling (previous {n} batches)"),
                    error: e.to_string(),
                },
                Ok(Err(e)) => {
                    return Err(format!(
                        "cannot read the rolling reference (previous {n} batches): {e}"
                    ));
                }
                Err(e) => Reference::Failed {
                    name: format!("rolling (previous {n} batches)"),
                    error: e.to_string(),
                },
            }
        }
    })
}

/// Records an evaluation (store, then results log) and announces it. An
/// `Err` is an environment fault before the store committed: the batch is
/// to be tried again. A failed results-log write after the commit is not:
/// the log catches up from the store before its next line.
///
/// `serial`, when given, is the dataset's lock held since its volume signal
/// was judged: released as soon as the record is queued (records are
/// committed in queue order), before the commit is awaited.
#[allow(clippy::too_many_arguments)]
async fn record(
    shared: &Arc<Shared>,
    batch: &Batch,
    rule_file: &RuleFile,
    evaluation: crate::engine::Evaluation,
    rolling: Option<usize>,
    anomaly: &[crate::anomaly::history::Updated],
    started: SystemTime,
    serial: Option<tokio::sync::OwnedMutexGuard<()>>,
) -> Result<(), String> {
    let sinks_started = std::time::Instant::now();
    let timings = evaluation.timings;
    // Too costly (a timeout) or too big (memory) is a verdict on the
    // rules' cost or the pool's size, not on the file: it is not quarantined.
    let keep_in_place = evaluation.timed_out || evaluation.out_of_memory;
    let mut report = evaluation.report;
    // Judged against the landings before this one only: a retried record
    // gets the same answer.
    report.lateness = shared
        .telemetry
        .arrivals()
        .lateness(&batch.dataset, landed(batch));
    let schema = evaluation.schema;
    let outcome = if report.is_skipped() {
        Outcome::Skipped
    } else if report.error.is_some() {
        Outcome::Error
    } else if report.passed {
        Outcome::Passed
    } else {
        Outcome::Failed
    };
    let webhooks = {
        let configured = shared
            .settings
            .lock()
            .map(|s| s.webhooks.clone())
            .unwrap_or_default();
        let rules = shared.rules.borrow().clone();
        super::webhooks::watching(rule_file, &rules, &configured)
    };
    let job = super::recorder::Job {
        version: batch.version.clone(),
        dataset: batch.dataset.clone(),
        outcome,
        rows: report.rows.unwrap_or(0),
        evaluated_at: Utc::now(),
        profile: evaluation.profile,
        rolling,
        schema,
        anomaly: anomaly.to_vec(),
        webhooks,
        instance: shared.instance.clone(),
        report: report.clone(),
    };
    let queued = super::recorder::enqueue(shared, job);
    let volume_judged = serial.is_some();
    drop(serial);
    let written = super::recorder::answer(queued).await;
    let (recorded, log_error, caught_up) = match written {
        Ok(r) => r,
        // Nothing was committed: the batch waits and is tried again.
        // (A stream source hears nothing yet: the retry will tell it.) Its
        // volume point is in the in-memory series only: the store's is the
        // truth again, so the retry does not count the batch twice.
        Err(e) => {
            if volume_judged && let Ok(mut cache) = shared.volume_series.lock() {
                cache.remove(&batch.dataset);
            }
            return Err(format!("cannot record the evaluation: {e}"));
        }
    };
    // A stream source may now drop its copy of the window (or commit its offsets).
    if let Some(ack) = &batch.ack {
        ack.send(&batch.version, true);
    }
    let key = (batch.dataset.clone(), batch.version.clone());
    if let Some(e) = &log_error
        && shared.health.log_fault(e) == super::health::Transition::Degraded
    {
        shared.telemetry.set_degraded(true);
        tracing::error!(error = %e, "degraded: cannot write the results log; the store holds the record and the log catches up before its next line");
    }
    settled(shared, shared.health.progress(&key, caught_up));
    if !recorded.new {
        return Ok(());
    }
    let (seq, policies) = (recorded.seq, recorded.webhooks);
    let latency_ms = batch.discovered.elapsed().as_millis();
    shared
        .activity
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    log_outcome(seq, &report, rule_file, latency_ms);
    if !report.schema_changes.is_empty() {
        tracing::warn!(
            seq,
            dataset = %report.dataset,
            source = %crate::report::escape_control(&report.source),
            changes = %report.schema_changes.join("; "),
            "schema changed since the dataset's previous batch"
        );
        shared.telemetry.record_schema_change(&report.dataset);
    }
    if let Some(reason) = &report.volume_anomaly {
        tracing::warn!(
            seq,
            dataset = %report.dataset,
            source = %crate::report::escape_control(&report.source),
            reason = %reason,
            "abnormal volume for the dataset"
        );
        shared.telemetry.record_volume_anomaly(&report.dataset);
    }
    if let Some(late) = &report.lateness {
        tracing::warn!(
            seq,
            dataset = %report.dataset,
            source = %crate::report::escape_control(&report.source),
            gap_s = late.gap_seconds,
            expected_s = late.expected_seconds,
            "batch landed late for the dataset"
        );
        shared.telemetry.record_late_batch(&report.dataset);
    }
    announce_webhooks(shared, &report.dataset, seq, &policies);
    // A table's files are the table's: never moved.
    if outcome == Outcome::Error && !keep_in_place && batch.table.is_none() {
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
    Ok(())
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
    if let Some(table) = report.table.as_ref().filter(|t| t.skipped.is_some()) {
        tracing::info!(seq, dataset = %report.dataset, source = %report.source, operation = %table.operation, reason = table.skipped.as_deref().unwrap_or_default(), "table version skipped: no new data");
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

/// Moves a file whose evaluation errored (a data error: environment faults
/// never get here) into the quarantine folder, keeping its path relative to
/// the watched folder. An earlier quarantined file of the same name is
/// never overwritten: the newcomer gets a `.N` suffix. Folder batches stay
/// in place.
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
    let wanted = dir.join(&batch.relative);
    let moved = wanted
        .parent()
        .map(std::fs::create_dir_all)
        .unwrap_or(Ok(()))
        .and_then(|()| move_without_overwrite(&batch.path, &wanted));
    match moved {
        Ok(target) => {
            tracing::info!(source = %display_path(&batch.path), quarantine = %display_path(&target), "quarantined")
        }
        Err(e) => {
            tracing::warn!(source = %display_path(&batch.path), error = %e, "cannot quarantine")
        }
    }
}

/// Moves `from` to `to`, or to `to.1`, `to.2`, … when taken; returns where.
/// A hard link claims the name atomically (so two moves never pick the
/// same one), then the original is removed.
fn move_without_overwrite(
    from: &std::path::Path,
    to: &std::path::Path,
) -> std::io::Result<std::path::PathBuf> {
    for n in 0u32..10_000 {
        let target = if n == 0 {
            to.to_path_buf()
        } else {
            let mut name = to.as_os_str().to_owned();
            name.push(format!(".{n}"));
            std::path::PathBuf::from(name)
        };
        match std::fs::hard_link(from, &target) {
            Ok(()) => {
                std::fs::remove_file(from)?;
                return Ok(target);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other(format!(
        "{}: 10,000 quarantined files of this name already",
        to.display()
    )))
}
