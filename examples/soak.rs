//! Soak run (issue 15): the agent as it lives for days, compressed. Lands
//! `--batches` small Parquet files (Hive partitions, a few failing) into a
//! watched lake while a client posts NDJSON events to `POST /ingest/events`
//! and a webhook receiver flaps (answers 503 half the time, in 2-second
//! spells). Every `--every` batches it samples the agent's resident memory,
//! open descriptors and state-folder size; at the end it checks that every
//! landed file has exactly one report, that every acknowledged event is in
//! a window, and that every webhook event was delivered once the receiver
//! stayed up.
//!
//! ```text
//! cargo build --release --examples
//! target/release/examples/soak [--batches 10000] [--rows 200] [--every 1000] [--binary PATH]
//! ```
//! It starts `driftwatch run` from next to this example unless `--binary`
//! names another. Linux only (reads /proc).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use driftwatch::demo::{FlightsSpec, write_flights};

struct Args {
    batches: usize,
    rows: u64,
    every: usize,
    binary: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        batches: 10_000,
        rows: 200,
        every: 1000,
        binary: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--batches" => a.batches = value.parse()?,
            "--rows" => a.rows = value.parse()?,
            "--every" => a.every = value.parse()?,
            "--binary" => a.binary = Some(PathBuf::from(value)),
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

fn proc_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_size(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

fn results(state: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(state.join("results.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A receiver that answers 503 during odd 2-second spells, 200 otherwise
/// (or always 200 once `stable` is set); counts deliveries by event id.
async fn receiver(
    listener: tokio::net::TcpListener,
    stable: Arc<AtomicBool>,
    delivered: Arc<std::sync::Mutex<HashMap<String, u64>>>,
    refused: Arc<AtomicU64>,
) {
    let started = Instant::now();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let stable = stable.clone();
            let delivered = delivered.clone();
            let refused = refused.clone();
            async move {
                let down = (started.elapsed().as_secs() / 2) % 2 == 1;
                if down && !stable.load(Ordering::Relaxed) {
                    refused.fetch_add(1, Ordering::Relaxed);
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                let id = headers
                    .get("idempotency-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                if let Ok(mut d) = delivered.lock() {
                    *d.entry(id).or_default() += 1;
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let _ = axum::serve(listener, app).await;
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let binary = match args.binary.clone() {
        Some(b) => b,
        None => std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .context("examples/ has a parent")?
            .join("driftwatch"),
    };
    let rt = tokio::runtime::Runtime::new()?;
    let hook = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let hook_addr = hook.local_addr()?;
    let stable = Arc::new(AtomicBool::new(false));
    let delivered = Arc::new(std::sync::Mutex::new(HashMap::new()));
    let refused = Arc::new(AtomicU64::new(0));
    rt.spawn(receiver(
        hook,
        stable.clone(),
        delivered.clone(),
        refused.clone(),
    ));

    let dir = tempfile::tempdir()?;
    if std::env::var_os("SOAK_KEEP").is_some() {
        println!("keeping {}", dir.path().display());
        let _ = dir.path().to_path_buf();
    }
    let (lake, rules, state, staging) = (
        dir.path().join("lake"),
        dir.path().join("rules"),
        dir.path().join("state"),
        dir.path().join("staging"),
    );
    for d in [&lake, &rules, &staging] {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(
        rules.join("flights.yaml"),
        "dataset: flights\nmatch: \"**/*.parquet\"\nchecks:\n  - not_null: carrier\n  - name: big_enough\n    row_count: { min: 150 }\n",
    )?;
    std::fs::write(
        rules.join("events.yaml"),
        "dataset: events\nmatch: \"no-lake-files/**\"\nchecks:\n  - schema: { columns: { id: int64, score: float64 } }\n  - not_null: id\n",
    )?;
    let config = dir.path().join("driftwatch.toml");
    std::fs::write(
        &config,
        format!(
            "watch = [\"{lake}\"]\nrules = \"{rules}\"\nstate = \"{state}\"\n[lake]\nsettle = \"200ms\"\n\
             [http]\nlisten = \"127.0.0.1:0\"\n[retention]\nreports_per_dataset = 200\n\
             [[sources]]\nkind = \"http\"\ndataset = \"events\"\nwindow = {{ rows = 5000, seconds = 3600 }}\n\
             [[webhooks]]\nname = \"retrain\"\nurl = \"http://{hook_addr}/hook\"\ncooldown = \"0s\"\n\
             retry_backoff = \"100ms\"\nretry_backoff_max = \"1s\"\n[webhooks.trigger]\nchecks = [\"big_enough\"]\n",
            lake = lake.display(),
            rules = rules.display(),
            state = state.display(),
        ),
    )?;
    let log = std::fs::File::create(dir.path().join("agent.log"))?;
    let mut child: Child = Command::new(&binary)
        .args(["run", "--config", &config.display().to_string()])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("start {}", binary.display()))?;
    let pid = child.id();
    let info = loop {
        if let Some(i) = driftwatch::agent::read_agent_info(&state)
            && i.pid == pid
        {
            break i;
        }
        if let Some(status) = child.try_wait()? {
            bail!("the agent exited: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let addr: std::net::SocketAddr = info.listen.parse()?;

    // A few batch shapes, written once; 1 in 10 is too small (fails a check,
    // fires the webhook).
    let shape = |rows: u64, seed: u64| -> Result<Vec<u8>> {
        let tmp = staging.join(format!("shape-{seed}.bin"));
        write_flights(
            &tmp,
            &FlightsSpec {
                rows,
                row_group_rows: 1000,
                seed,
                ..FlightsSpec::default()
            },
        )?;
        let b = std::fs::read(&tmp)?;
        std::fs::remove_file(&tmp)?;
        Ok(b)
    };
    let good = shape(args.rows, 1)?;
    let small = shape(100, 2)?;

    driftwatch::tls::ensure_crypto_provider();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let mut accepted_events = 0u64;
    let mut next_event = 0u64;
    let started = Instant::now();
    println!("batches  elapsed_s  rss_mib  fds  state_mib  results");
    let mut samples = Vec::new();
    for i in 0..args.batches {
        // Keep at most 200 files waiting, so the sample reflects a lake the
        // agent keeps up with rather than an ever longer queue.
        while i >= 200 && results(&state).len() + 200 < i {
            std::thread::sleep(Duration::from_millis(20));
        }
        let bytes = if i % 10 == 9 { &small } else { &good };
        let tmp = staging.join("landing.tmp");
        std::fs::write(&tmp, bytes)?;
        let target = lake.join(format!("day={:04}/part-{i:06}.parquet", i / 500));
        std::fs::create_dir_all(target.parent().context("partition")?)?;
        std::fs::rename(&tmp, &target)?;
        if i % 20 == 0 {
            let body: String = (next_event..next_event + 500)
                .map(|id| format!("{{\"id\": {id}, \"score\": {}.5}}\n", id % 100))
                .collect();
            next_event += 500;
            let r = client
                .post(format!("http://{addr}/ingest/events"))
                .header("content-type", "application/x-ndjson")
                .body(body)
                .send()?;
            if r.status().is_success() {
                accepted_events += 500;
            }
        }
        if (i + 1) % args.every == 0 || i == 0 {
            let s = (
                i + 1,
                started.elapsed().as_secs_f64(),
                proc_kib(pid, "VmRSS:") / 1024,
                fds(pid),
                dir_size(&state) as f64 / (1 << 20) as f64,
                results(&state).len(),
            );
            println!(
                "{:>7}  {:>9.1}  {:>7}  {:>3}  {:>9.1}  {:>7}",
                s.0, s.1, s.2, s.3, s.4, s.5
            );
            samples.push(s);
        }
    }
    // Let everything land, then keep the receiver up so deliveries finish.
    stable.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(600);
    let all = loop {
        let r = results(&state);
        let lake_reports: Vec<&serde_json::Value> = r
            .iter()
            .filter(|l| l["reports"][0]["dataset"] == "flights")
            .collect();
        if lake_reports.len() >= args.batches {
            break r;
        }
        if Instant::now() > deadline {
            bail!(
                "only {} of {} batches reported",
                lake_reports.len(),
                args.batches
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut seen: HashMap<(String, String), u64> = HashMap::new();
    let mut window_rows = 0u64;
    for l in &all {
        let r = &l["reports"][0];
        let key = (
            r["dataset"].as_str().unwrap_or_default().to_string(),
            r["source"].as_str().unwrap_or_default().to_string(),
        );
        *seen.entry(key).or_default() += 1;
        if r["dataset"] == "events" {
            window_rows += r["rows"].as_u64().unwrap_or(0);
        }
    }
    let lake_sources = seen.keys().filter(|(d, _)| d == "flights").count();
    let duplicated = seen.values().filter(|n| **n > 1).count();
    let open_window: u64 = {
        let status: serde_json::Value =
            serde_json::from_str(&client.get(format!("http://{addr}/status")).send()?.text()?)?;
        status["streams"][0]["open_events"].as_u64().unwrap_or(0)
    };
    let webhooks_deadline = Instant::now() + Duration::from_secs(120);
    let (pending, dead) = loop {
        let doc: serde_json::Value =
            serde_json::from_str(&client.get(format!("http://{addr}/status")).send()?.text()?)?;
        let w = &doc["webhooks"]["retrain"];
        let (p, d) = (
            w["pending"].as_u64().unwrap_or(0),
            w["dead"].as_u64().unwrap_or(0),
        );
        if p == 0 || Instant::now() > webhooks_deadline {
            break (p, d);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let deliveries = delivered.lock().map(|d| d.clone()).unwrap_or_default();
    let delivered_twice = deliveries.values().filter(|n| **n > 1).count();
    let _ = child.kill();
    let _ = child.wait();
    if std::env::var_os("SOAK_KEEP").is_some() {
        let _ = dir.keep();
    }
    println!();
    println!(
        "lake batches landed {}, reported {} (distinct files {}), duplicated {}",
        args.batches,
        all.iter()
            .filter(|l| l["reports"][0]["dataset"] == "flights")
            .count(),
        lake_sources,
        duplicated
    );
    println!(
        "events acknowledged {accepted_events}, in reported windows {window_rows}, in the open window {open_window}, lost {}",
        accepted_events.saturating_sub(window_rows + open_window)
    );
    println!(
        "webhook events delivered {} (refused 503 while flapping: {}), delivered twice {delivered_twice}, pending {pending}, dead {dead}",
        deliveries.len(),
        refused.load(Ordering::Relaxed)
    );
    if let (Some(first), Some(last)) = (samples.get(1).or(samples.first()), samples.last()) {
        println!(
            "RSS {} → {} MiB, descriptors {} → {}, state {:.1} → {:.1} MiB (from batch {} to {})",
            first.2, last.2, first.3, last.3, first.4, last.4, first.0, last.0
        );
    }
    Ok(())
}
