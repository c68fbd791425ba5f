//! `driftwatch run`: the always-on agent.
//!
//! Wiring, in the order a batch travels:
//!
//! ```text
//! LakeSource ─────────┐
//! stream sources ─────┴─Batch──▶ bounded queue ──▶ N workers ──▶ engine (own runtime)
//! (http, files, kafka)                                  │
//!        ▲                                              ▼
//!        └──────── ack ───────── store (commit) ──▶ results log ──▶ listeners, /status
//! ```
//!
//! Stream sources (`[[sources]]`) close windows into Parquet files in the
//! state folder and send them like lake files; the worker acknowledges each
//! window once its record is durable, and only then does the source delete
//! its write-ahead log segment or commit its Kafka offsets.
//!
//! Two tokio runtimes keep CPU-heavy DataFusion work from starving I/O: the
//! caller's runtime runs discovery, the queue, the HTTP server and recording;
//! [`Shared::eval_runtime`] runs evaluations. A fixed number of workers
//! (`concurrency`) and a bounded queue bound memory whatever lands in the
//! lake. Shutdown (the `shutdown` future, SIGTERM/SIGINT in the binary) stops
//! discovery, lets running evaluations finish and record, and returns; queued
//! batches are simply found again at the next start, since only the store
//! says what is done.

pub mod access;
mod client;
pub mod health;
mod http;
pub mod idle;
pub mod ingest;
pub mod pages;
mod recorder;
mod reload;
mod serve;
mod webhooks;
mod worker;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use globset::{Glob, GlobSet, GlobSetBuilder};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch};

pub use client::{AgentInfo, get as http_get, post as http_post, read_agent_info};
pub use http::{
    StatusDocument, WebhookInfo, WebhooksDocument, status_from_store, webhooks_from_store,
};
pub use worker::Evaluation;

use crate::config::{ConfigError, Overrides, Settings};
use crate::engine::{Engine, EngineError, EngineOptions};
use crate::report::BatchVersion;
use crate::rules::{RuleError, RuleFile};
use crate::sinks::results_log::{ResultsLog, ResultsLogError};
use crate::sinks::telemetry::{Telemetry, TelemetryError};
use crate::sources::Batch;
use crate::sources::lake::scan::Filter;
use crate::sources::lake::{InFlight, LakeOptions, LakeSource, LakeStats};
use crate::state::{StateError, Store};

/// The file in the state folder that says which agent runs and where it listens.
pub const AGENT_FILE: &str = "agent.json";

/// Why the agent could not start. Everything after start-up is logged and
/// survived, never returned.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The rule files are invalid.
    #[error(transparent)]
    Rules(#[from] RuleError),
    /// The state folder cannot be used.
    #[error(transparent)]
    State(#[from] StateError),
    /// A stream source could not start.
    #[error(transparent)]
    Stream(#[from] crate::sources::stream::StreamError),
    /// The results log cannot be opened or repaired.
    #[error(transparent)]
    ResultsLog(#[from] ResultsLogError),
    /// The engine could not be set up.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// OpenTelemetry export could not be set up.
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
    /// A watched folder does not exist.
    #[error("{}: cannot watch: {source}", path.display())]
    Watch {
        /// The folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Runtime or server set-up failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being set up.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Evaluations that may wait for their record while their workers evaluate
/// the next batches: enough to fill a group commit under load, few enough
/// that what they hold (a report each) stays small.
const RECORDS_IN_FLIGHT: u32 = 64;

/// A `Result` whose error is an [`AgentError`].
pub type Result<T, E = AgentError> = std::result::Result<T, E>;

/// What the agent's tasks share.
pub struct Shared {
    /// Whether environment faults keep batches from being evaluated or recorded.
    pub(crate) health: health::Health,
    /// Puts a batch back in the queue (a retry after an environment fault).
    pub(crate) requeue: mpsc::Sender<Batch>,
    /// Becomes true when the agent stops.
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) store: Arc<Store>,
    pub(crate) results_log: Mutex<ResultsLog>,
    /// Evaluations waiting for the next (group) commit.
    pub(crate) recorder: recorder::Recorder,
    /// Records under way after their worker moved on to the next batch
    /// (one permit each; shutdown waits for all of them).
    pub(crate) recording: Arc<tokio::sync::Semaphore>,
    pub(crate) engine: Arc<Engine>,
    pub(crate) eval_runtime: tokio::runtime::Handle,
    pub(crate) rules: watch::Receiver<Arc<Vec<RuleFile>>>,
    pub(crate) rules_error: Mutex<Option<String>>,
    pub(crate) references: Mutex<crate::evaluate::ReferenceCache>,
    pub(crate) in_flight: InFlight,
    pub(crate) lake: Arc<LakeStats>,
    /// The tables followed (rule files with `table:`).
    pub(crate) tables: Arc<crate::sources::table::TableStats>,
    /// The object-store watcher's counters (`--watch s3://…`).
    pub(crate) objects: Arc<LakeStats>,
    pub(crate) events: broadcast::Sender<Arc<Evaluation>>,
    pub(crate) reports_per_dataset: usize,
    /// `[health] volume_sensitivity`; None when the volume signal is off.
    pub(crate) volume_sensitivity: Option<f64>,
    pub(crate) queue_capacity: usize,
    pub(crate) running: AtomicU64,
    pub(crate) started_at: DateTime<Utc>,
    pub(crate) instance: String,
    pub(crate) listen: SocketAddr,
    pub(crate) metrics_listen: Option<SocketAddr>,
    pub(crate) settings: Mutex<Settings>,
    pub(crate) telemetry: Arc<Telemetry>,
    /// Wakes the webhook delivery loop (a new event, a re-queued dead letter).
    pub(crate) webhook_wake: tokio::sync::Notify,
    /// Evaluations recorded so far (the idle memory release watches it).
    pub(crate) activity: AtomicU64,
    dataset_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The volume signal's series of each dataset judged without its
    /// batches serialized (no rolling reference, sequential detector or
    /// `anomaly` check): the newest, ahead of the store by the batches queued
    /// for recording, so the next batch is judged without waiting for their
    /// commit. Loaded from the store on first use; dropped when a record
    /// fails (the store is then the truth again).
    pub(crate) volume_series: Mutex<HashMap<String, crate::anomaly::Series>>,
    /// The stream sources.
    pub(crate) streams: Vec<StreamHandle>,
    /// Ingest bodies decoded at once (each holds its body and its rows in
    /// memory; more posts wait for a slot).
    pub(crate) ingest_slots: tokio::sync::Semaphore,
    /// Bytes of ingest bodies being read or decoded, in KiB permits
    /// (`http.body_budget`; a post that does not fit gets 503).
    pub(crate) body_budget: tokio::sync::Semaphore,
    /// `[http]` as the agent started with it (only a restart changes it).
    pub(crate) http: crate::config::HttpSettings,
}

/// A running stream source, as the HTTP handlers see it.
#[derive(Clone)]
pub(crate) struct StreamHandle {
    pub(crate) config: crate::sources::stream::SourceConfig,
    pub(crate) stats: Arc<crate::sources::stream::StreamStats>,
    pub(crate) dead_letters: PathBuf,
    /// The durable windows (HTTP and file sources).
    pub(crate) log: Option<Arc<crate::sources::stream::WindowedLog>>,
}

impl StreamHandle {
    fn is_http(&self) -> bool {
        self.config.kind() == crate::sources::stream::SourceKind::Http
    }
}

impl Shared {
    fn forget(&self, key: &(String, BatchVersion)) {
        if let Ok(mut set) = self.in_flight.lock() {
            set.remove(key);
        }
    }

    /// Why the agent cannot make progress, if it cannot: batches waiting
    /// after environment faults, or a lake that cannot be fully listed.
    pub(crate) fn degraded(&self) -> Option<health::Degraded> {
        if let Some(d) = self.health.degraded() {
            return Some(d);
        }
        let folders = self.lake.listing_error.lock().ok()?.clone();
        let objects = self.objects.listing_error.lock().ok()?.clone();
        let listing = match folders.or(objects) {
            Some(listing) => listing,
            None => self.tables.first_error()?,
        };
        Some(health::Degraded {
            since: listing.0,
            reason: listing.1,
            retrying: 0,
            failed_tries: 0,
            results_log_behind: false,
        })
    }

    fn dataset_lock(&self, dataset: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.dataset_locks
            .lock()
            .map(|mut locks| locks.entry(dataset.to_string()).or_default().clone())
            .unwrap_or_default()
    }
}

/// A handle on a running agent, for callers that embed it (the demo, tests).
#[derive(Clone)]
pub struct AgentHandle {
    /// Every evaluation, as it is recorded.
    pub events: broadcast::Sender<Arc<Evaluation>>,
    /// The address the HTTP server listens on.
    pub listen: SocketAddr,
    /// The metrics-and-probes listener's address (`http.metrics_listen`).
    pub metrics_listen: Option<SocketAddr>,
}

/// Builds the lake options from settings.
fn lake_options(settings: &Settings) -> Result<LakeOptions> {
    let globs = |patterns: &[String]| -> Result<GlobSet> {
        let mut builder = GlobSetBuilder::new();
        for p in patterns {
            let glob = Glob::new(p).map_err(|e| ConfigError::Invalid {
                origin: "config".to_string(),
                key: "lake.include/exclude".to_string(),
                message: e.to_string(),
            })?;
            builder.add(glob);
        }
        builder.build().map_err(|e| {
            AgentError::Config(ConfigError::Invalid {
                origin: "config".to_string(),
                key: "lake.include/exclude".to_string(),
                message: e.to_string(),
            })
        })
    };
    Ok(LakeOptions {
        // One spelling per folder: events carry absolute, resolved paths, and
        // a batch's version path must not change with how `--watch` was typed.
        roots: settings.watch.iter().map(|r| canonical(r)).collect(),
        filter: Filter {
            include: globs(&settings.include)?,
            exclude: globs(&settings.exclude)?,
        },
        // The agent's own folders are never data, wherever they are.
        skip: settings
            .quarantine
            .iter()
            .chain(std::iter::once(&settings.state))
            .map(|p| canonical(p))
            .collect(),
        settle: settings.settle,
        rescan: if settings.mode == crate::config::WatchMode::Poll {
            settings.poll_interval
        } else {
            settings.rescan
        },
        poll: settings.mode == crate::config::WatchMode::Poll,
        object_roots: settings.watch_objects.clone(),
        object_store: settings.object_store.clone(),
        poll_interval: settings.poll_interval,
        object_rescan: settings.rescan,
    })
}

/// `path` absolute with symbolic links resolved — as far as it exists (a
/// quarantine folder not made yet keeps its last components as given).
pub(crate) fn canonical(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(name)) => canonical(parent).join(name),
        _ => absolute,
    }
}

/// Runs the agent until `shutdown` completes. `listener` serves the HTTP
/// endpoints; `on_start` receives a handle once the agent is set up.
pub async fn run(
    settings: Settings,
    overrides: Overrides,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_start: impl FnOnce(AgentHandle) + Send,
) -> Result<()> {
    for root in &settings.watch {
        std::fs::metadata(root)
            .and_then(|m| {
                if m.is_dir() {
                    Ok(())
                } else {
                    Err(std::io::Error::other("not a folder"))
                }
            })
            .map_err(|source| AgentError::Watch {
                path: root.clone(),
                source,
            })?;
    }
    idle::tune_malloc();
    let rules = crate::rules::load_rules(&settings.rules)?;
    if settings.watch.is_empty()
        && settings.watch_objects.is_empty()
        && settings.sources.is_empty()
        && !rules.iter().any(|r| r.table.is_some())
    {
        return Err(AgentError::Config(ConfigError::Invalid {
            origin: "command line".to_string(),
            key: "watch".to_string(),
            message: "nothing to watch: give `--watch DIR` (or an object-store URL), `[[sources]]` event streams, or rule files with `table:`".to_string(),
        }));
    }
    webhooks::check_names(&rules, &settings.webhooks)?;
    for w in &settings.webhooks {
        if w.secret_env.is_none() && !w.dry_run {
            tracing::warn!(webhook = %w.name, "webhook has no secret_env: its requests are not signed, so the receiver cannot tell them from forgeries");
        }
    }
    let store = Arc::new(Store::open(&settings.state)?);
    let (mut log, last_logged) = ResultsLog::open(
        &settings.state,
        settings.results_log_max_size,
        settings.results_log_files,
    )?;
    // Repair: reports committed to the store but not yet in the log (the
    // agent died between the two) are appended now, in order.
    let missing = store.reports_after(last_logged)?;
    if !missing.is_empty() {
        tracing::info!(
            count = missing.len(),
            after = last_logged,
            "results log caught up from the store"
        );
    }
    // A full disk must not keep the agent from starting: what does not fit
    // now is caught up from the store before the next line.
    let health = health::Health::default();
    for (seq, line) in &missing {
        if let Err(e) =
            log.append_report(
                *seq,
                line,
                |_| Ok::<_, std::convert::Infallible>(Vec::new()),
            )
        {
            tracing::error!(error = %e, "cannot catch the results log up from the store; will try again before the next report");
            health.log_fault(&e.to_string());
            break;
        }
    }

    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let eval_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .thread_name("driftwatch-eval")
        .enable_all()
        .build()
        .map_err(|source| AgentError::Io {
            what: "cannot start the evaluation runtime".to_string(),
            source,
        })?;
    let engine = Arc::new(Engine::new(&EngineOptions {
        memory_limit: Some(settings.memory_limit),
        evaluation_timeout: Some(settings.evaluation_timeout),
        object_store: settings.object_store.clone(),
        ..EngineOptions::default()
    })?);

    let listen = listener.local_addr().map_err(|source| AgentError::Io {
        what: "cannot read the listen address".to_string(),
        source,
    })?;
    let metrics_listener = match settings.http.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| AgentError::Io {
                    what: format!("cannot listen on {addr} (`http.metrics_listen`)"),
                    source,
                })?,
        ),
        None => None,
    };
    let metrics_listen = match &metrics_listener {
        Some(l) => Some(l.local_addr().map_err(|source| AgentError::Io {
            what: "cannot read the metrics listen address".to_string(),
            source,
        })?),
        None => None,
    };
    if !listen.ip().is_loopback() && settings.http.api_token_env.is_none() {
        tracing::warn!(
            listen = %listen,
            "listening beyond loopback WITHOUT an API token: anyone who reaches {listen} can post events and re-send webhook events; set `http.api_token_env`, or keep `listen` on 127.0.0.1 and expose only `http.metrics_listen` (see docs/security.md)"
        );
    }
    let (rules_tx, rules_rx) = watch::channel(Arc::new(rules));
    let (options_tx, options_rx) = watch::channel(Arc::new(lake_options(&settings)?));
    // Listeners (the demo) read evaluations as they come; a slow one skips
    // ahead rather than holding reports in memory.
    let (events, _) = broadcast::channel(64);
    let instance = format!(
        "{}-{}-{}",
        hostname(),
        std::process::id(),
        Utc::now().timestamp_millis()
    );
    // Stream sources: their durable windows are recovered before anything runs.
    // Whether the store holds a batch version's record: the lake and the
    // stream sources ask it before sending (again).
    let store_for_done = store.clone();
    let done: crate::sources::lake::DoneFn =
        Arc::new(move |dataset: &str, version: &BatchVersion| {
            matches!(store_for_done.version(dataset, version), Ok(Some(_)))
        });
    let mut streams = Vec::new();
    for source in &settings.sources {
        if !rules_rx
            .borrow()
            .iter()
            .any(|r| r.dataset == source.dataset)
        {
            tracing::warn!(source = %source.name, dataset = %source.dataset, "no rule file has this dataset: its windows wait (in the state folder) until one does");
        }
        use crate::sources::stream::{SourceSettings, StreamStats, WindowedLog, stream_dir};
        let dir = stream_dir(&settings.state, source);
        let log = match &source.settings {
            SourceSettings::Http {
                max_pending_events, ..
            }
            | SourceSettings::NdjsonFiles {
                max_pending_events, ..
            } => Some(Arc::new(WindowedLog::open(
                &dir,
                source.clone(),
                *max_pending_events,
                &done,
            )?)),
            SourceSettings::Kafka { .. } => None,
        };
        let stats = log
            .as_ref()
            .map(|l| l.stats.clone())
            .unwrap_or_else(|| Arc::new(StreamStats::default()));
        streams.push(StreamHandle {
            config: source.clone(),
            stats,
            dead_letters: dir.join("dead-letters.ndjson"),
            log,
        });
    }
    let in_flight: InFlight = Arc::new(Mutex::new(HashSet::new()));
    let depth = in_flight.clone();
    let telemetry = Arc::new(Telemetry::new(
        &settings.telemetry,
        &instance,
        &hostname(),
        Arc::new(move || depth.lock().map(|s| s.len() as u64).unwrap_or(0)),
    )?);
    // Lateness is learned from landing times: a restarted agent takes them
    // from the reports it kept, so "overdue" holds across restarts.
    if let Ok(datasets) = store.datasets() {
        for (dataset, _) in datasets {
            let lines = store
                .latest_reports(&dataset, crate::anomaly::arrivals::KEPT)
                .unwrap_or_default();
            for (_, line) in lines.iter().rev() {
                let landed = serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| {
                        v.pointer("/agent/batch/modified_ns")
                            .and_then(|n| n.as_i64())
                    });
                if let Some(ns) = landed {
                    telemetry.record_arrival(&dataset, ns as f64 / 1e9);
                }
            }
        }
    }
    telemetry.observe_streams(
        streams
            .iter()
            .map(|s| crate::sinks::telemetry::ObservedStream {
                kind: s.config.kind().as_str(),
                dataset: s.config.dataset.clone(),
                stats: s.stats.clone(),
            })
            .collect(),
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let (queue_tx, queue_rx) = mpsc::channel(settings.queue.max(1));
    let shared = Arc::new(Shared {
        health,
        requeue: queue_tx.clone(),
        stop: stop_rx.clone(),
        store: store.clone(),
        results_log: Mutex::new(log),
        recorder: recorder::Recorder::default(),
        recording: Arc::new(tokio::sync::Semaphore::new(RECORDS_IN_FLIGHT as usize)),
        engine,
        eval_runtime: eval_runtime.handle().clone(),
        rules: rules_rx.clone(),
        rules_error: Mutex::new(None),
        references: Mutex::new(crate::evaluate::ReferenceCache::default()),
        in_flight,
        lake: Arc::new(LakeStats::default()),
        tables: Arc::new(crate::sources::table::TableStats::default()),
        objects: Arc::new(LakeStats::default()),
        events: events.clone(),
        reports_per_dataset: settings.reports_per_dataset,
        volume_sensitivity: settings.volume_sensitivity,
        queue_capacity: settings.queue,
        running: AtomicU64::new(0),
        started_at: Utc::now(),
        instance,
        listen,
        settings: Mutex::new(settings.clone()),
        telemetry: telemetry.clone(),
        webhook_wake: tokio::sync::Notify::new(),
        activity: AtomicU64::new(0),
        dataset_locks: Mutex::new(HashMap::new()),
        volume_series: Mutex::new(HashMap::new()),
        streams,
        ingest_slots: tokio::sync::Semaphore::new(cores.max(2)),
        body_budget: tokio::sync::Semaphore::new(ingest::budget_permits(
            settings.http.body_budget as u64,
        ) as usize),
        http: settings.http.clone(),
        metrics_listen,
    });
    write_agent_info(&settings.state, &shared)?;

    // Discovery.
    let objects = crate::sources::lake::objects::ObjectLakeSource {
        options: options_rx.clone(),
        rules: rules_rx.clone(),
        done: done.clone(),
        in_flight: shared.in_flight.clone(),
        stats: shared.objects.clone(),
    };
    let lake = LakeSource {
        options: options_rx,
        rules: rules_rx,
        done: done.clone(),
        in_flight: shared.in_flight.clone(),
        stats: shared.lake.clone(),
    };
    let mut stream_tasks = Vec::new();
    for stream in &shared.streams {
        use crate::sources::stream::SourceSettings;
        if let SourceSettings::Kafka { .. } = &stream.config.settings {
            // Kafka is its own durable log: windows in memory, offsets
            // committed once a window is recorded.
            let kafka = crate::sources::stream::kafka::KafkaSource::new(
                &crate::sources::stream::stream_dir(&settings.state, &stream.config),
                stream.config.clone(),
                stream.stats.clone(),
                done.clone(),
                shared.rules.clone(),
            )?;
            stream_tasks.push(tokio::spawn(kafka.run(
                queue_tx.clone(),
                shared.in_flight.clone(),
                stop_rx.clone(),
            )));
            continue;
        }
        let Some(log) = &stream.log else { continue };
        stream_tasks.push(tokio::spawn(log.clone().run(
            queue_tx.clone(),
            shared.in_flight.clone(),
            stop_rx.clone(),
        )));
        if let SourceSettings::NdjsonFiles {
            path,
            include,
            settle,
            max_line,
            ..
        } = &stream.config.settings
        {
            let files = crate::sources::stream::files::FileSource::new(
                log.clone(),
                &crate::sources::stream::stream_dir(&settings.state, &stream.config),
                canonical(path),
                include,
                *settle,
                *max_line,
                shared.rules.clone(),
            )?
            .skipping(vec![canonical(&settings.state)]);
            stream_tasks.push(tokio::spawn(Arc::new(files).run(stop_rx.clone())));
        }
    }
    // Tables: their versions, in order, one at a time.
    let store_for_cursor = store.clone();
    let tables = crate::sources::table::TableWatcher {
        rules: shared.rules.clone(),
        cursor: Arc::new(move |dataset: &str, location: &str| {
            store_for_cursor
                .table_cursor(dataset, location)
                .map_err(|e| e.to_string())
        }),
        in_flight: shared.in_flight.clone(),
        stats: shared.tables.clone(),
        poll_interval: settings.poll_interval,
        object_store: settings.object_store.clone(),
    };
    let table_task = tokio::spawn(tables.run(queue_tx.clone(), stop_rx.clone()));
    let objects_task = tokio::spawn(objects.run(queue_tx.clone(), stop_rx.clone()));
    let lake_task = tokio::spawn(lake.run(queue_tx, stop_rx.clone()));

    // Workers.
    let queue_rx = Arc::new(tokio::sync::Mutex::new(queue_rx));
    let mut workers = Vec::new();
    for _ in 0..settings.concurrency {
        let shared = shared.clone();
        let queue_rx = queue_rx.clone();
        let mut stop = stop_rx.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let next = {
                    let mut rx = queue_rx.lock().await;
                    tokio::select! {
                        biased;
                        _ = stop.wait_for(|s| *s) => None,
                        b = rx.recv() => b,
                    }
                };
                let Some(batch) = next else { return };
                shared.running.fetch_add(1, Ordering::Relaxed);
                worker::process(&shared, batch).await;
                shared.running.fetch_sub(1, Ordering::Relaxed);
            }
        }));
    }

    // Rule and config reloads, and housekeeping.
    let reload_task = tokio::spawn(reload::run(
        shared.clone(),
        overrides,
        rules_tx,
        options_tx,
        stop_rx.clone(),
    ));
    let housekeeping = tokio::spawn(housekeeping(shared.clone(), stop_rx.clone()));
    let log_repair = tokio::spawn(repair_results_log(shared.clone(), stop_rx.clone()));
    let deliveries = tokio::spawn(webhooks::run(shared.clone(), stop_rx.clone()));
    let releaser = tokio::spawn(release_when_idle(shared.clone(), stop_rx.clone()));
    let overdue = tokio::spawn(watch_overdue(shared.clone(), stop_rx.clone()));
    let mut flusher_stop = stop_rx.clone();
    let flusher = tokio::spawn(telemetry.clone().run_flusher(async move {
        let _ = flusher_stop.wait_for(|s| *s).await;
    }));

    // HTTP.
    let limits = serve::ConnectionLimits {
        max_connections: settings.http.max_connections,
        header_timeout: settings.http.header_timeout,
    };
    let mut servers = vec![tokio::spawn(serve::serve(
        listener,
        http::router(shared.clone()),
        limits,
        stop_rx.clone(),
        "listen",
    ))];
    if let Some(l) = metrics_listener {
        servers.push(tokio::spawn(serve::serve(
            l,
            http::metrics_router(shared.clone()),
            limits,
            stop_rx.clone(),
            "metrics_listen",
        )));
    }

    let (roots, rules_path) = {
        let s = &settings;
        (s.watch.clone(), s.rules.clone())
    };
    tracing::info!(
        listen = %listen,
        metrics_listen = ?metrics_listen,
        watch = ?roots,
        watch_objects = %settings.watch_objects.iter().map(|u| u.to_string()).collect::<Vec<_>>().join(", "),
        rules = %rules_path.display(),
        state = %settings.state.display(),
        concurrency = settings.concurrency,
        "driftwatch agent started"
    );
    on_start(AgentHandle {
        events,
        listen,
        metrics_listen,
    });

    shutdown.await;
    tracing::info!("shutting down: no new batches; finishing evaluations in progress");
    let _ = stop_tx.send(true);
    let _ = lake_task.await;
    let _ = table_task.await;
    let _ = objects_task.await;
    for t in stream_tasks {
        let _ = t.await;
    }
    for w in workers {
        let _ = w.await;
    }
    // Evaluations that finished are recorded before the agent stops.
    let _ = shared.recording.acquire_many(RECORDS_IN_FLIGHT).await;
    let _ = reload_task.await;
    let _ = housekeeping.await;
    let _ = log_repair.await;
    let _ = deliveries.await;
    let _ = releaser.await;
    let _ = overdue.await;
    for server in servers {
        let _ = server.await;
    }
    let _ = flusher.await;
    // Last signals out before exit, but never wait long for a collector.
    let last_export = tokio::task::spawn_blocking(move || telemetry.shutdown());
    if tokio::time::timeout(std::time::Duration::from_secs(10), last_export)
        .await
        .is_err()
    {
        tracing::warn!("the last OpenTelemetry export did not finish within 10 s; exiting anyway");
    }
    let _ = std::fs::remove_file(settings.state.join(AGENT_FILE));
    drop(shared);
    eval_runtime.shutdown_background();
    tracing::info!("stopped");
    Ok(())
}

/// Gives memory back to the system once no batch has been evaluated, queued
/// or run for [`idle::IDLE_AFTER`] (once per quiet spell; see [`idle`]).
async fn release_when_idle(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut seen = u64::MAX;
    let mut quiet_since = std::time::Instant::now();
    let mut released_at: Option<u64> = None;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
        let activity = shared.activity.load(Ordering::Relaxed);
        let busy = shared.running.load(Ordering::Relaxed) > 0
            || shared
                .in_flight
                .lock()
                .map(|s| !s.is_empty())
                .unwrap_or(true);
        if activity != seen || busy {
            seen = activity;
            quiet_since = std::time::Instant::now();
            continue;
        }
        if quiet_since.elapsed() >= idle::IDLE_AFTER && released_at != Some(activity) {
            released_at = Some(activity);
            if let Ok(bytes) = tokio::task::spawn_blocking(idle::release).await {
                tracing::debug!(paged_out = bytes, "idle: memory returned to the system");
            }
        }
    }
}

/// Logs, once a second at most, each dataset that became overdue: nothing
/// landed for more than [`LATE_MARGIN`](crate::anomaly::arrivals::LATE_MARGIN)
/// of its learned interval past its next expected batch. Once per episode:
/// the dataset's next landing ends it (that batch carries `lateness`). The
/// `driftwatch_dataset_overdue_seconds` gauge says the same continuously.
async fn watch_overdue(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    // Dataset → the last landing time it was announced overdue after.
    let mut announced: HashMap<String, f64> = HashMap::new();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
        let now = Utc::now().timestamp_micros() as f64 / 1e6;
        let mut newly = Vec::new();
        shared.telemetry.arrivals().each(|dataset, arrivals| {
            if let (true, Some(last), Some(interval)) = (
                arrivals.is_overdue(now),
                arrivals.last(),
                arrivals.interval(),
            ) && announced.get(dataset) != Some(&last)
            {
                newly.push((dataset.to_string(), last, interval, now - last));
            }
        });
        for (dataset, last, interval, since) in newly {
            let last_at = DateTime::<Utc>::from_timestamp_micros((last * 1e6) as i64)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default();
            tracing::warn!(
                dataset = %dataset,
                last_batch_at = %last_at,
                since_s = since.round(),
                expected_s = interval,
                "dataset overdue: no batch since well past its usual interval"
            );
            announced.insert(dataset, last);
        }
    }
}

/// Catches the results log up with the store once a second while a write
/// to it has failed, so it becomes whole again (and the agent healthy) even
/// when no new batch arrives to trigger the catch-up.
async fn repair_results_log(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
        let behind = shared
            .results_log
            .lock()
            .map(|l| l.is_behind())
            .unwrap_or(false);
        if !behind {
            continue;
        }
        let shared2 = shared.clone();
        let repaired = tokio::task::spawn_blocking(move || {
            let mut log = shared2
                .results_log
                .lock()
                .map_err(|_| "results log lock poisoned".to_string())?;
            let store = shared2.store.clone();
            log.catch_up(|after| store.reports_after(after))
                .map_err(|e| e.to_string())
        })
        .await;
        if let Ok(Ok(n)) = repaired {
            tracing::info!(
                caught_up = n,
                "results log caught up from the store after a failed write"
            );
            worker::settled(&shared, shared.health.log_caught_up());
        }
    }
}

/// Prunes store records of files gone from the lake, and finished webhook
/// deliveries, every `retention.prune_interval` (hourly by default).
async fn housekeeping(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        // Read each time: a reload may change it.
        let period = shared
            .settings
            .lock()
            .map(|s| s.prune_interval)
            .unwrap_or(std::time::Duration::from_secs(3600));
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(period) => {}
        }
        let max_age = shared
            .settings
            .lock()
            .map(|s| s.max_age)
            .unwrap_or(std::time::Duration::from_secs(30 * 86400));
        let cutoff = Utc::now().timestamp() - max_age.as_secs() as i64;
        // A watched folder that is not there (a network mount gone for a
        // moment) would make every version in it look deleted: forgetting
        // them would evaluate the whole lake again when it comes back.
        let roots = shared
            .settings
            .lock()
            .map(|s| s.watch.clone())
            .unwrap_or_default();
        let missing: Vec<String> = roots
            .iter()
            .filter(|r| !r.is_dir())
            .map(|r| worker::display_path(r))
            .collect();
        let store = shared.store.clone();
        let pruned = if missing.is_empty() {
            tokio::task::spawn_blocking(move || prune_lake_versions(&store, cutoff, &roots)).await
        } else {
            tracing::warn!(missing = %missing.join(", "), "watched folders missing: not forgetting any batch version this time");
            Ok(Ok(0))
        };
        match pruned {
            Ok(Ok(n)) if n > 0 => {
                tracing::info!(pruned = n, "forgot batch versions no longer in the lake")
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "state pruning failed"),
            _ => {}
        }
        // Finished webhook deliveries (delivered, dead, dry runs) are kept as long.
        let store = shared.store.clone();
        let cutoff_ms = cutoff * 1000;
        match tokio::task::spawn_blocking(move || store.prune_deliveries(cutoff_ms)).await {
            Ok(Ok(n)) if n > 0 => tracing::info!(pruned = n, "forgot old webhook deliveries"),
            Ok(Err(e)) => tracing::warn!(error = %e, "webhook outbox pruning failed"),
            _ => {}
        }
    }
}

/// Forgets versions evaluated before `cutoff` whose file is gone — but only
/// when the watched folder holding it is there and lists something. An
/// empty folder where a root was is what an unmounted mount point looks like
/// (and a folder can vanish while the prune runs): judged by it, every
/// version would look deleted and the whole lake would be evaluated again
/// when the mount returns. Such versions are kept, and the folder logged.
fn prune_lake_versions(
    store: &Store,
    cutoff: i64,
    roots: &[PathBuf],
) -> std::result::Result<usize, StateError> {
    let held: std::cell::RefCell<BTreeMap<PathBuf, usize>> = Default::default();
    let pruned = store.prune_versions(cutoff, |path| {
        // An object's version is kept: telling a deleted object from one the
        // store would not list just now takes a request each.
        if crate::location::ObjectUrl::parse(path).is_some() {
            return true;
        }
        let path = Path::new(path);
        if path.exists() {
            return true;
        }
        // Asked again for each gone file, not once per prune: the folder
        // may go away between two of them.
        let Some(root) = roots.iter().find(|r| path.starts_with(r)) else {
            return false;
        };
        let lists_something = std::fs::read_dir(root).is_ok_and(|mut d| d.next().is_some());
        if !lists_something {
            *held.borrow_mut().entry(root.clone()).or_default() += 1;
        }
        !lists_something
    })?;
    for (root, versions) in held.into_inner() {
        tracing::warn!(
            folder = %worker::display_path(&root),
            versions,
            "watched folder is missing or empty but has recorded batch versions (an unmounted mount point?): not forgetting them"
        );
    }
    Ok(pruned)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_string())
}

fn write_agent_info(state: &Path, shared: &Shared) -> Result<()> {
    let info = AgentInfo {
        pid: std::process::id(),
        listen: shared.listen.to_string(),
        metrics_listen: shared.metrics_listen.map(|a| a.to_string()),
        api_token_env: shared.http.api_token_env.clone(),
        instance: shared.instance.clone(),
        started_at: shared.started_at.to_rfc3339(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let path = state.join(AGENT_FILE);
    let tmp = state.join(format!(".{AGENT_FILE}.tmp"));
    let text = serde_json::to_string_pretty(&info).unwrap_or_default();
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|source| AgentError::Io {
            what: format!("cannot write {}", path.display()),
            source,
        })
}
