//! `driftwatch run` and `driftwatch status`: the agent's command-line edge
//! (logging set-up, signals, exit codes, the status table).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use driftwatch::agent::{self, StatusDocument};
use driftwatch::config::{self, LogFormat, Overrides, Settings};
use driftwatch::state::{StateError, Store};

use super::{EXIT_USAGE, Format, LogFormatArg, RunArgs, StatusArgs};

/// Sets up the agent's log lines on standard error. `RUST_LOG`, when set, wins.
///
/// The OpenTelemetry SDK logs every failed export through `tracing`; those
/// lines are dropped here because the telemetry sink logs failures itself,
/// rate-limited (a collector outage must not flood the agent's log).
pub fn init_logging(format: LogFormat, level: &str) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    // delta-rs and its kernel log every log-segment read at INFO (one line
    // per table poll): only their warnings unless RUST_LOG asks for more.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| {
            tracing_subscriber::EnvFilter::try_new(format!(
                "{level},buoyant_kernel=warn,buoyant_kernel_engine=warn,deltalake_core=warn"
            ))
        })
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let not_sdk =
        tracing_subscriber::filter::filter_fn(|m| !m.target().starts_with("opentelemetry"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let layer = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(not_sdk).with_filter(filter))
        .try_init();
}

/// `driftwatch run`.
pub fn run(args: RunArgs) -> Result<i32> {
    let overrides = Overrides {
        watch: args.watch,
        rules: args.rules,
        state: args.state,
        listen: args.listen,
        settle: args.settle,
        poll: args.poll,
        concurrency: args.concurrency,
        memory_limit: args.memory_limit,
        log_format: args.log_format.map(|f| match f {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }),
    };
    let settings = match Settings::resolve(args.config.as_deref(), &overrides) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(EXIT_USAGE);
        }
    };
    init_logging(settings.log_format, &settings.log_level);
    // The I/O runtime: discovery, HTTP, recording. Evaluations get their own.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("driftwatch-io")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let code = runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(settings.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {}: {e}", settings.listen);
                return Ok(EXIT_USAGE);
            }
        };
        match agent::run(settings, overrides, listener, shutdown_signal(), |_| {}).await {
            Ok(()) => Ok(0),
            Err(e) => {
                eprintln!("error: {e}");
                Ok(EXIT_USAGE)
            }
        }
    });
    // Do not wait for a blocking export stuck on an unreachable collector.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    code
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `driftwatch status`.
pub async fn status(args: StatusArgs) -> Result<i32> {
    let document = fetch_status(&args).await?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&document)?),
        Format::Table => print!("{}", render(&document)),
    }
    Ok(0)
}

async fn ask(addr: SocketAddr) -> Result<StatusDocument, String> {
    let (code, body) = agent::http_get(addr, "/status", Duration::from_secs(10)).await?;
    if code != 200 {
        return Err(format!("{addr}/status answered {code}: {}", body.trim()));
    }
    serde_json::from_str(&body).map_err(|e| format!("{addr}/status: {e}"))
}

async fn fetch_status(args: &StatusArgs) -> Result<StatusDocument> {
    if let Some(state) = &args.state {
        if let Some(info) = agent::read_agent_info(state)
            && let Ok(addr) = info.listen.parse::<SocketAddr>()
            && let Ok(doc) = ask(addr).await
        {
            return Ok(doc);
        }
        return from_store(state);
    }
    let listen = args.listen.as_deref().unwrap_or(config::DEFAULT_LISTEN);
    let addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("`{listen}` is not an address such as 127.0.0.1:9464"))?;
    match ask(addr).await {
        Ok(doc) => Ok(doc),
        Err(e) => {
            bail!("{e}\nno agent answers there; give `--state DIR` to read a stopped agent's store")
        }
    }
}

fn from_store(state: &Path) -> Result<StatusDocument> {
    if !state.join(driftwatch::state::STORE_FILE).exists() {
        bail!("{}: no driftwatch state here", state.display());
    }
    match Store::open(state) {
        Ok(store) => Ok(agent::status_from_store(&store)?),
        Err(StateError::Busy { path }) => bail!(
            "{}: an agent holds the store but does not answer over HTTP (see its agent.json)",
            path.display()
        ),
        Err(e) => Err(e.into()),
    }
}

fn render(doc: &StatusDocument) -> String {
    let mut out = String::new();
    match &doc.agent {
        Some(a) => {
            out.push_str(&format!(
                "agent {} (driftwatch {}), started {}, {}; {} rule file(s) from {}\n",
                a.instance,
                a.version,
                a.started_at,
                if a.ready { "ready" } else { "starting" },
                a.rule_files,
                a.rules
            ));
            out.push_str(&format!(
                "queue: {} queued, {} running, {} settling; {} unmatched file(s)\n",
                a.queued, a.running, a.pending, a.unmatched_files
            ));
            if let Some(e) = &a.rules_error {
                out.push_str(&format!("rules reload rejected (old rules running): {e}\n"));
            }
        }
        None => out.push_str("no agent running; from the store\n"),
    }
    out.push('\n');
    out.push_str(&format!(
        "{:<20} {:>9} {:>7} {:>7} {:>6}  {:<25}  {}\n",
        "DATASET", "EVALUATED", "FAILED", "ERRORS", "QUEUED", "LAST BATCH AT", "LAST RESULT"
    ));
    for d in &doc.datasets {
        let last = d.recent.first().map(|r| {
            let mut text = if let Some(why) = &r.skipped {
                format!("skipped: {why}")
            } else if let Some(e) = &r.error {
                format!("error: {}", e.lines().next().unwrap_or_default())
            } else if r.passed {
                "pass".to_string()
            } else {
                "fail".to_string()
            };
            if !r.failed_checks.is_empty() {
                text.push_str(&format!(" (checks: {})", r.failed_checks.join(", ")));
            }
            if r.dataset_drift == Some(true) {
                text.push_str(&format!(" (drift: {})", r.drifted_columns.join(", ")));
            }
            format!("{text} — {}", r.source)
        });
        out.push_str(&format!(
            "{:<20} {:>9} {:>7} {:>7} {:>6}  {:<25}  {}\n",
            d.dataset,
            d.evaluated,
            d.failed,
            d.errored,
            d.queued,
            d.last_evaluated_at.as_deref().unwrap_or("-"),
            last.unwrap_or_else(|| "-".to_string())
        ));
    }
    if !doc.tables.is_empty() {
        out.push('\n');
        out.push_str(&format!(
            "{:<20} {:>8} {:>8}  {}\n",
            "TABLE DATASET", "LATEST", "RECORDED", "LOCATION"
        ));
        let version = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".to_string());
        for t in &doc.tables {
            out.push_str(&format!(
                "{:<20} {:>8} {:>8}  {}{}\n",
                t.dataset,
                version(t.latest_version),
                version(t.recorded_version),
                t.location,
                t.error
                    .as_ref()
                    .map(|e| format!(" — error: {e}"))
                    .unwrap_or_default()
            ));
        }
    }
    if !doc.streams.is_empty() {
        out.push('\n');
        out.push_str(&format!(
            "{:<28} {:>10} {:>9} {:>8} {:>9} {:>8} {:>8}\n",
            "STREAM", "ACCEPTED", "REJECTED", "WINDOWS", "EVALUATED", "PENDING", "LAG"
        ));
        for s in &doc.streams {
            out.push_str(&format!(
                "{:<28} {:>10} {:>9} {:>8} {:>9} {:>8} {:>8}\n",
                s.name,
                s.accepted,
                s.rejected,
                s.windows_closed,
                s.windows_evaluated,
                s.pending_events,
                s.lag
                    .map(|l| l.to_string())
                    .unwrap_or_else(|| "-".to_string())
            ));
        }
    }
    out
}
