//! Group commit of evaluations: the store transaction and the results-log
//! flush shared by every evaluation that is waiting to be recorded.
//!
//! Why: recording one evaluation is one durable store commit and one flush
//! of the results log — two disk syncs, several milliseconds each on
//! ordinary disks — taken one at a time under the log's lock, so they, not
//! the scans, capped how many small files a second the agent could take.
//! Here each evaluation to record is queued and whoever next holds the
//! commit lock records *everything queued* in one store transaction
//! ([`crate::state::Store::record_evaluations`]) and one log flush. Alone,
//! an evaluation is committed as before, at once; under load the syncs are
//! shared.
//!
//! Exactly-once is unchanged: a group is one transaction (all or nothing),
//! committed before any of its lines is written to the log, and nothing is
//! acknowledged or announced before its commit. A group that cannot be
//! committed is retried one evaluation at a time, so one evaluation whose
//! record fails never holds back the others.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use super::Shared;
use crate::profile::DatasetProfile;
use crate::report::{AgentRecord, BatchReport, BatchVersion, REPORT_VERSION, Report};
use crate::sinks::webhook::WebhookConfig;
use crate::state::{Evaluated, Outcome, Recorded, Retention, WebhookStep};

/// Most evaluations recorded in one transaction (bounds its size).
const MAX_GROUP: usize = 256;

/// One evaluation waiting to be recorded, with everything its record holds.
pub(crate) struct Job {
    pub(crate) version: BatchVersion,
    pub(crate) dataset: String,
    pub(crate) outcome: Outcome,
    pub(crate) rows: u64,
    pub(crate) evaluated_at: DateTime<Utc>,
    /// The batch's profile, and how many batches its rolling reference keeps.
    pub(crate) profile: Option<DatasetProfile>,
    pub(crate) rolling: Option<usize>,
    pub(crate) schema: Option<Vec<(String, String)>>,
    pub(crate) anomaly: Vec<crate::anomaly::history::Updated>,
    pub(crate) webhooks: Vec<WebhookConfig>,
    pub(crate) instance: String,
    pub(crate) report: BatchReport,
}

/// What recording a job did: its record (or why nothing was committed),
/// the results log's write error if any, and whether the log is whole.
pub(crate) type Outcomes = Result<(Recorded, Option<String>, bool), String>;

/// The queue of jobs waiting for the next commit.
#[derive(Default)]
pub(crate) struct Recorder {
    queue: Mutex<Vec<(Job, oneshot::Sender<Outcomes>)>>,
    /// A commit pass is scheduled or running and will look at the queue
    /// again before it ends.
    scheduled: AtomicBool,
}

impl Job {
    fn evaluated_text(&self) -> String {
        self.evaluated_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }

    /// The store's view of the job (borrowing it).
    fn evaluated<'a>(&'a self, evaluated_text: &'a str) -> Evaluated<'a> {
        let recordable = self.outcome != Outcome::Error && self.outcome != Outcome::Skipped;
        Evaluated {
            anomaly: &self.anomaly,
            schema: self.schema.as_deref(),
            version: &self.version,
            dataset: &self.dataset,
            outcome: self.outcome,
            rows: self.rows,
            evaluated_at: self.evaluated_at.timestamp(),
            rolling: match (&self.profile, self.rolling) {
                (Some(p), Some(n)) if recordable => Some((p, n)),
                _ => None,
            },
            profile: self
                .profile
                .as_ref()
                .filter(|_| self.outcome != Outcome::Error),
            // A skipped table version is no batch for the policies either.
            webhooks: (!self.webhooks.is_empty() && self.outcome != Outcome::Skipped).then_some(
                WebhookStep {
                    report: &self.report,
                    source: &self.version.path,
                    evaluated_at: evaluated_text,
                    now_ms: self.evaluated_at.timestamp_millis(),
                    instance: &self.instance,
                    webhooks: &self.webhooks,
                },
            ),
        }
    }

    /// The results-log line of the job recorded under `seq`.
    fn line(&self, seq: u64, evaluated_text: &str) -> String {
        let document = Report {
            version: REPORT_VERSION,
            reports: vec![self.report.clone()],
            unmatched: Vec::new(),
            agent: Some(AgentRecord {
                seq,
                evaluated_at: evaluated_text.to_string(),
                batch: self.version.clone(),
            }),
        };
        serde_json::to_string(&document).unwrap_or_else(|e| {
            format!("{{\"version\":{REPORT_VERSION},\"error\":\"cannot serialize report: {e}\"}}")
        })
    }
}

/// Records `job` (with whatever else is queued by then) and returns what
/// that did. The store commit and the log append happen under the results
/// log's lock, so the log is always in seq order.
///
/// Queues `job` now (jobs are committed in the order they are queued) and
/// returns where the answer will come; await it with [`answer`]. Split so
/// that a caller can release a lock once its job is in line, before the
/// commit.
pub(crate) fn enqueue(
    shared: &Arc<Shared>,
    job: Job,
) -> Result<oneshot::Receiver<Outcomes>, String> {
    let (tx, rx) = oneshot::channel();
    shared
        .recorder
        .queue
        .lock()
        .map_err(|_| "recorder queue poisoned".to_string())?
        .push((job, tx));
    // One commit pass at a time is enough: a running pass clears the flag
    // before each look at the queue, so a job queued after that look
    // schedules a pass of its own.
    if !shared.recorder.scheduled.swap(true, Ordering::SeqCst) {
        let shared2 = shared.clone();
        tokio::task::spawn_blocking(move || commit_queued(&shared2));
    }
    Ok(rx)
}

/// The answer to a job [`enqueue`]d.
pub(crate) async fn answer(queued: Result<oneshot::Receiver<Outcomes>, String>) -> Outcomes {
    queued?
        .await
        .map_err(|_| "the recording pass ended without an answer".to_string())?
}

/// Takes the lock, then every queued job (up to [`MAX_GROUP`]) until none
/// is left, recording each take as one group.
fn commit_queued(shared: &Shared) {
    let mut log = shared.results_log.lock();
    loop {
        shared.recorder.scheduled.store(false, Ordering::SeqCst);
        let jobs = take(shared);
        if jobs.is_empty() {
            return;
        }
        match log.as_mut() {
            Ok(log) => {
                // A panic in a group (a bug) drops its jobs' answers — they
                // are tried again — and must not strand jobs queued since.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    commit_group(shared, log, jobs)
                }));
            }
            Err(_) => {
                for (_, reply) in jobs {
                    let _ = reply.send(Err("results log lock poisoned".to_string()));
                }
            }
        }
    }
}

fn take(shared: &Shared) -> Vec<(Job, oneshot::Sender<Outcomes>)> {
    let Ok(mut queue) = shared.recorder.queue.lock() else {
        return Vec::new();
    };
    let n = queue.len().min(MAX_GROUP);
    queue.drain(..n).collect()
}

fn commit_group(
    shared: &Shared,
    log: &mut crate::sinks::results_log::ResultsLog,
    jobs: Vec<(Job, oneshot::Sender<Outcomes>)>,
) {
    let retention = Retention {
        reports_per_dataset: shared.reports_per_dataset,
    };
    let texts: Vec<String> = jobs.iter().map(|(j, _)| j.evaluated_text()).collect();
    let evaluated: Vec<Evaluated<'_>> = jobs
        .iter()
        .zip(&texts)
        .map(|((j, _), t)| j.evaluated(t))
        .collect();
    let mut lines: Vec<String> = vec![String::new(); jobs.len()];
    let grouped = shared
        .store
        .record_evaluations(&evaluated, retention, |i, seq| {
            let line = jobs[i].0.line(seq, &texts[i]);
            lines[i] = line.clone();
            line
        });
    let recorded: Vec<Result<Recorded, String>> = match grouped {
        Ok(r) => r.into_iter().map(Ok).collect(),
        Err(e) if jobs.len() == 1 => vec![Err(e.to_string())],
        // One job's record may be what failed: each on its own, so the
        // others are not held back by it.
        Err(_) => evaluated
            .iter()
            .enumerate()
            .map(|(i, e)| {
                shared
                    .store
                    .record_evaluation(e, retention, |seq| {
                        let line = jobs[i].0.line(seq, &texts[i]);
                        lines[i] = line.clone();
                        line
                    })
                    .map_err(|e| e.to_string())
            })
            .collect(),
    };
    drop(evaluated);
    let new_lines: Vec<(u64, &str)> = recorded
        .iter()
        .zip(&lines)
        .filter_map(|(r, line)| match r {
            Ok(r) if r.new => Some((r.seq, line.as_str())),
            _ => None,
        })
        .collect();
    let log_error = if new_lines.is_empty() {
        None
    } else {
        log.append_reports(&new_lines, |after| shared.store.reports_after(after))
            .err()
            .map(|e| e.to_string())
    };
    let caught_up = !log.is_behind();
    for ((_, reply), r) in jobs.into_iter().zip(recorded) {
        let _ = reply.send(r.map(|r| (r, log_error.clone(), caught_up)));
    }
}
