//! The live demo: a temporary lake, the real agent watching it, and a stream
//! of generated batches in which drift and rule failures appear midway.
//!
//! Timeline (one batch every `interval`): the first batches are clean; from
//! the middle on, departure delays shift by 45 minutes (drift against the
//! reference profile the demo takes from a clean batch); one batch carries
//! planted rule failures; one file lands corrupt. Each batch is written under
//! a temporary name and renamed into a Hive partition folder
//! (`flights/date=2013-01-DD/`), as real pipelines do. The agent's verdicts
//! are printed as they arrive.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

use super::{DEMO_RULES, Defects, DemoError, FlightsSpec, write_flights};
use crate::agent::{self, Evaluation};
use crate::config::{Overrides, Settings};
use crate::engine::{Engine, EngineOptions, ProfileRequest};

/// The drift section the live demo adds to the demo rules: a few columns
/// against a reference profile taken from a clean batch.
pub const DEMO_DRIFT: &str = r#"drift:
  reference: flights.profile
  columns: [dep_delay, arr_delay, carrier, distance]
  drift_share: 0.5
"#;

/// How the live demo runs.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// The folder for the lake, rules and state.
    pub root: PathBuf,
    /// Batches to land.
    pub batches: usize,
    /// Time between batches.
    pub interval: Duration,
    /// Rows per batch.
    pub rows: u64,
}

/// What happened, for the summary and the exit code.
#[derive(Debug, Clone, Default)]
pub struct LiveSummary {
    /// Batches evaluated.
    pub evaluated: usize,
    /// Batches that passed.
    pub passed: usize,
    /// Batches with dataset drift.
    pub drifted: usize,
    /// Batches with failing checks.
    pub failed_checks: usize,
    /// Batches that could not be evaluated.
    pub errors: usize,
    /// Median ms from landing to the recorded report.
    pub median_latency_ms: Option<u128>,
}

/// Errors of the live demo.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// Writing demo files failed.
    #[error(transparent)]
    Demo(#[from] DemoError),
    /// The agent could not start.
    #[error(transparent)]
    Agent(#[from] agent::AgentError),
    /// I/O on the demo folder or terminal.
    #[error("{0}")]
    Io(String),
}

/// What each batch of the timeline is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Clean,
    Drifted,
    DriftedWithDefects,
    Corrupt,
}

fn timeline(batches: usize) -> Vec<Kind> {
    let half = batches / 2;
    (0..batches)
        .map(|i| {
            if i < half {
                Kind::Clean
            } else if i == half + 1 {
                Kind::Corrupt
            } else if i == batches.saturating_sub(2) {
                Kind::DriftedWithDefects
            } else {
                Kind::Drifted
            }
        })
        .collect()
}

fn spec(i: usize, kind: Kind, rows: u64, start: DateTime<Utc>) -> FlightsSpec {
    FlightsSpec {
        rows,
        row_group_rows: 8_192,
        seed: 100 + i as u64,
        first_row_id: 1 + i as i64 * rows as i64,
        start,
        span_hours: 24,
        defects: if kind == Kind::DriftedWithDefects {
            Defects {
                null_dep_delay_every: Some(12),
                bad_origin_every: Some(200),
                duplicate_row_id_every: Some(500),
                bad_tailnum_every: Some(250),
                negative_distance_every: Some(1000),
            }
        } else {
            Defects::default()
        },
        delay_shift: if kind == Kind::Clean { 0 } else { 45 },
    }
}

fn io(e: impl std::fmt::Display) -> LiveError {
    LiveError::Io(e.to_string())
}

/// Runs the live demo, printing to `out`.
pub async fn run_live(
    options: &LiveOptions,
    out: &mut (dyn Write + Send),
) -> Result<LiveSummary, LiveError> {
    let lake = options.root.join("lake");
    let rules_dir = options.root.join("rules");
    let staging = options.root.join("staging");
    for dir in [&lake.join("flights"), &rules_dir, &staging] {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let now = Utc::now();
    let start = now - chrono::Duration::hours(30);

    // The reference: a profile of one clean batch, as `driftwatch baseline` writes it.
    let reference_batch = staging.join("reference.parquet");
    write_flights(
        &reference_batch,
        &spec(999, Kind::Clean, options.rows, start),
    )?;
    std::fs::write(
        rules_dir.join("flights.yaml"),
        format!("{DEMO_RULES}{DEMO_DRIFT}"),
    )
    .map_err(io)?;
    let rule_files = crate::rules::load_rules(&rules_dir).map_err(io)?;
    let engine = Engine::new(&EngineOptions::default()).map_err(io)?;
    let evaluation = engine
        .evaluate_with_profiles(
            &reference_batch,
            "reference",
            &rule_files[0],
            now,
            &ProfileRequest::AllSupported,
        )
        .await;
    let profile = evaluation
        .profile
        .ok_or_else(|| io("the reference batch could not be profiled"))?;
    profile
        .write(&rules_dir.join("flights.profile"))
        .map_err(io)?;
    drop(engine);

    let state = options.root.join("state");
    let overrides = Overrides {
        watch: vec![lake.clone()],
        rules: Some(rules_dir.clone()),
        state: Some(state.clone()),
        listen: Some("127.0.0.1:0".to_string()),
        settle: Some("1s".to_string()),
        ..Overrides::default()
    };
    let settings = Settings::resolve(None, &overrides).map_err(io)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io)?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (handle_tx, handle_rx) = tokio::sync::oneshot::channel();
    let agent_task = tokio::spawn(agent::run(
        settings,
        overrides,
        listener,
        async move {
            let _ = stop_rx.await;
        },
        move |handle| {
            let _ = handle_tx.send(handle);
        },
    ));
    let handle = match handle_rx.await {
        Ok(h) => h,
        Err(_) => {
            return match agent_task.await {
                Ok(Err(e)) => Err(e.into()),
                _ => Err(io("the agent stopped before starting")),
            };
        }
    };
    let mut events = handle.events.subscribe();
    writeln!(
        out,
        "driftwatch demo: an agent is watching {}\n  rules: {}\n  landing {} batches of {} rows, one every {:?}; \
         drift starts at batch {}.\n",
        lake.display(),
        rules_dir.join("flights.yaml").display(),
        options.batches,
        options.rows,
        options.interval,
        options.batches / 2 + 1
    )
    .map_err(io)?;

    let began = Instant::now();
    let kinds = timeline(options.batches);
    let mut summary = LiveSummary::default();
    let mut latencies = Vec::new();
    let mut expected = 0usize;
    for (i, kind) in kinds.iter().copied().enumerate() {
        let day = format!("2013-01-{:02}", i + 1);
        let folder = lake.join("flights").join(format!("date={day}"));
        let temp = staging.join(format!("{day}.parquet.tmp"));
        let target = folder.join(format!("part-{i:03}.parquet"));
        let spec = spec(i, kind, options.rows, start);
        let temp2 = temp.clone();
        tokio::task::spawn_blocking(move || -> Result<(), LiveError> {
            if kind == Kind::Corrupt {
                std::fs::write(&temp2, b"PAR1 this pipeline crashed while writing").map_err(io)?;
            } else {
                write_flights(&temp2, &spec)?;
            }
            Ok(())
        })
        .await
        .map_err(io)??;
        std::fs::create_dir_all(&folder).map_err(io)?;
        std::fs::rename(&temp, &target).map_err(io)?;
        expected += 1;
        let label = match kind {
            Kind::Clean => "clean",
            Kind::Drifted => "delays shifted +45 min",
            Kind::DriftedWithDefects => "shifted + planted rule failures",
            Kind::Corrupt => "corrupt file",
        };
        writeln!(
            out,
            "[{:>5.1}s] landed  {}  ({label})",
            began.elapsed().as_secs_f64(),
            relative(&target, &lake)
        )
        .map_err(io)?;
        let deadline = Instant::now() + options.interval;
        drain(
            &mut events,
            deadline,
            &began,
            out,
            &mut summary,
            &mut latencies,
        )
        .await?;
    }
    // Wait for the stragglers (the corrupt file takes ten settle times).
    let deadline = Instant::now() + Duration::from_secs(20);
    while summary.evaluated < expected && Instant::now() < deadline {
        drain(
            &mut events,
            Instant::now() + Duration::from_millis(200),
            &began,
            out,
            &mut summary,
            &mut latencies,
        )
        .await?;
    }
    let _ = stop_tx.send(());
    match agent_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(e) => return Err(io(e)),
    }
    latencies.sort_unstable();
    summary.median_latency_ms = latencies.get(latencies.len() / 2).copied();
    writeln!(
        out,
        "\n{} batches evaluated: {} passed, {} with dataset drift, {} with failing checks, {} unreadable.",
        summary.evaluated, summary.passed, summary.drifted, summary.failed_checks, summary.errors
    )
    .map_err(io)?;
    if let Some(ms) = summary.median_latency_ms {
        writeln!(
            out,
            "Median time from landing to a recorded verdict: {ms} ms (settle time 1 s)."
        )
        .map_err(io)?;
    }
    writeln!(
        out,
        "\nWhere to look next:\n  results log (one JSON report per line): {}\n  \
         latest per dataset:  driftwatch status --state {}\n  \
         run it yourself:     driftwatch run --watch {} --rules {} --state {}",
        state.join(crate::sinks::results_log::RESULTS_LOG).display(),
        state.display(),
        lake.display(),
        rules_dir.display(),
        state.display(),
    )
    .map_err(io)?;
    Ok(summary)
}

fn relative(path: &Path, root: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

async fn drain(
    events: &mut broadcast::Receiver<Arc<Evaluation>>,
    deadline: Instant,
    began: &Instant,
    out: &mut (dyn Write + Send),
    summary: &mut LiveSummary,
    latencies: &mut Vec<u128>,
) -> Result<(), LiveError> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        let event = match tokio::time::timeout(left, events.recv()).await {
            Err(_) => return Ok(()),
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(broadcast::error::RecvError::Closed)) => return Ok(()),
            Ok(Ok(e)) => e,
        };
        summary.evaluated += 1;
        latencies.push(event.latency_ms);
        let report = &event.report;
        let partitions: Vec<String> = report
            .partitions
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut line = format!(
            "[{:>5.1}s] verdict #{} {} {}: ",
            began.elapsed().as_secs_f64(),
            event.seq,
            report.dataset,
            partitions.join(",")
        );
        if let Some(error) = &report.error {
            summary.errors += 1;
            line.push_str(&format!("ERROR {}", one_line_tail(error)));
        } else {
            let failed = report.failing_checks();
            let drifted = report.drifted_columns();
            let dataset_drift = report.drift.as_ref().is_some_and(|d| d.dataset_drift);
            if report.passed {
                summary.passed += 1;
            }
            if dataset_drift {
                summary.drifted += 1;
            }
            if !failed.is_empty() {
                summary.failed_checks += 1;
            }
            line.push_str(&format!(
                "{} rows, {}",
                report.rows.unwrap_or(0),
                if report.passed { "PASS" } else { "FAIL" }
            ));
            if !failed.is_empty() {
                line.push_str(&format!("; checks not passing: {}", failed.join(", ")));
            }
            if dataset_drift {
                line.push_str(&format!("; DRIFT in {}", drifted.join(", ")));
            }
        }
        line.push_str(&format!(" ({} ms after landing)", event.latency_ms));
        writeln!(out, "{line}").map_err(io)?;
    }
}

fn one_line_tail(error: &str) -> String {
    let text = error.lines().next().unwrap_or_default();
    if text.len() > 140 {
        format!("{}…", &text[..text.floor_char_boundary(140)])
    } else {
        text.to_string()
    }
}
