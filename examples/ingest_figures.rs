//! Measures HTTP event ingest as a user runs it (the figures quoted in the
//! issue 8 note), against `target/release/driftwatch run` on loopback:
//!
//! 1. throughput — `--events` events posted to `POST /ingest/{dataset}` in
//!    bodies of `--body-events`, `--concurrency` posts in flight, once as
//!    NDJSON and once as Arrow IPC (bodies generated before the clock
//!    starts). "ingest" is accepted events / time until the last 2xx (every
//!    accepted event is durable in the WAL by then); "end to end" is events /
//!    time until the last window's report is in the results log. Windows of
//!    100,000 events.
//!    The agent's peak resident memory (VmHWM) over all runs is printed.
//! 2. latency — `--latency-runs` times, one body of 1,000 events closes a
//!    1,000-event window; the time from sending the post (the arrival of the
//!    window's last event) to that window's `evaluated_at` in the results
//!    log (median, p90, max).
//!
//! ```text
//! cargo build --release --bin driftwatch --example ingest_figures
//! target/release/examples/ingest_figures [--events 1000000] [--body-events 10000] [--concurrency 4] [--runs 3] [--latency-runs 30]
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use futures::StreamExt;

struct Args {
    events: u64,
    body_events: u64,
    concurrency: usize,
    runs: usize,
    latency_runs: usize,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        events: 1_000_000,
        body_events: 10_000,
        concurrency: 4,
        runs: 3,
        latency_runs: 30,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--events" => a.events = value.parse()?,
            "--body-events" => a.body_events = value.parse()?,
            "--concurrency" => a.concurrency = value.parse()?,
            "--runs" => a.runs = value.parse()?,
            "--latency-runs" => a.latency_runs = value.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

const RULES: &str = "checks:
  - schema: { columns: { id: int64, score: float64, kind: utf8, ok: bool } }
  - not_null: id
  - range: { column: score, min: 0, max: 100 }
  - row_count: { min: 1 }
";

fn ndjson(first: u64, n: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n as usize * 64);
    for id in first..first + n {
        out.extend_from_slice(
            format!(
                "{{\"id\":{id},\"score\":{},\"kind\":\"k{}\",\"ok\":{}}}\n",
                (id % 1000) as f64 / 10.0,
                id % 7,
                id % 3 == 0
            )
            .as_bytes(),
        );
    }
    out
}

fn arrow_ipc(first: u64, n: u64) -> Result<Vec<u8>> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("score", DataType::Float64, true),
        Field::new("kind", DataType::Utf8, true),
        Field::new("ok", DataType::Boolean, true),
    ]));
    let ids: Vec<i64> = (first..first + n).map(|i| i as i64).collect();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(Float64Array::from(
                ids.iter()
                    .map(|i| (i % 1000) as f64 / 10.0)
                    .collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                ids.iter()
                    .map(|i| format!("k{}", i % 7))
                    .collect::<Vec<_>>(),
            )),
            Arc::new(arrow::array::BooleanArray::from(
                ids.iter().map(|i| i % 3 == 0).collect::<Vec<_>>(),
            )),
        ],
    )?;
    let mut out = Vec::new();
    let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut out, &schema)?;
    w.write(&batch)?;
    w.finish()?;
    drop(w);
    Ok(out)
}

struct Agent {
    child: Child,
    addr: String,
    state: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path) -> Result<Agent> {
    std::fs::create_dir_all(dir.join("rules"))?;
    for d in ["load_ndjson", "load_ipc", "latency"] {
        std::fs::write(
            dir.join(format!("rules/{d}.yaml")),
            format!("dataset: {d}\n{RULES}"),
        )?;
    }
    std::fs::write(
        dir.join("driftwatch.toml"),
        "rules = \"rules\"\nstate = \"state\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [[sources]]\nkind = \"http\"\ndataset = \"load_ndjson\"\nwindow = { rows = 100000 }\nmax_pending_events = 100000000\n\
         [[sources]]\nkind = \"http\"\ndataset = \"load_ipc\"\nwindow = { rows = 100000 }\nmax_pending_events = 100000000\n\
         [[sources]]\nkind = \"http\"\ndataset = \"latency\"\nwindow = { rows = 1000 }\n",
    )?;
    let bin = std::env::current_exe()?
        .parent()
        .and_then(Path::parent)
        .context("no target dir")?
        .join("driftwatch");
    let child = Command::new(&bin)
        .args(["run", "--config"])
        .arg(dir.join("driftwatch.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let state = dir.join("state");
    let start = Instant::now();
    loop {
        if let Some(info) = driftwatch::agent::read_agent_info(&state)
            && info.pid == child.id()
        {
            return Ok(Agent {
                child,
                addr: info.listen,
                state,
            });
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("the agent did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// (source, rows, evaluated_at) of every report of `dataset`.
fn reports(state: &Path, dataset: &str) -> Vec<(String, u64, SystemTime)> {
    std::fs::read_to_string(state.join("results.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reports"][0]["dataset"] == dataset)
        .filter_map(|v| {
            let at =
                chrono::DateTime::parse_from_rfc3339(v["agent"]["evaluated_at"].as_str()?).ok()?;
            Some((
                v["reports"][0]["source"].as_str()?.to_string(),
                v["reports"][0]["rows"].as_u64()?,
                SystemTime::UNIX_EPOCH + Duration::from_millis(at.timestamp_millis().max(0) as u64),
            ))
        })
        .collect()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn post_all(
    client: &reqwest::Client,
    url: &str,
    content_type: &str,
    bodies: &[Vec<u8>],
    concurrency: usize,
) -> Result<u64> {
    let results: Vec<Result<u64>> = futures::stream::iter(bodies.iter().cloned())
        .map(|body| async move {
            loop {
                let r = client
                    .post(url)
                    .header("content-type", content_type)
                    .body(body.clone())
                    .send()
                    .await?;
                if r.status() == 429 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                if !r.status().is_success() {
                    bail!("{}: {}", r.status(), r.text().await?);
                }
                let v: serde_json::Value = serde_json::from_str(&r.text().await?)?;
                return Ok(v["accepted"].as_u64().unwrap_or(0));
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut total = 0;
    for r in results {
        total += r?;
    }
    Ok(total)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    driftwatch::tls::ensure_crypto_provider();
    let dir = tempfile::tempdir()?;
    let agent = start(dir.path())?;
    let client = reqwest::Client::new();
    let windows_per_run = args.events / 100_000;
    println!(
        "{} events per run in bodies of {} events, {} posts in flight, windows of 100,000 events",
        args.events, args.body_events, args.concurrency
    );
    for (dataset, content_type) in [
        ("load_ndjson", "application/x-ndjson"),
        ("load_ipc", "application/vnd.apache.arrow.stream"),
    ] {
        let url = format!("http://{}/ingest/{dataset}", agent.addr);
        let mut ingest = Vec::new();
        let mut end_to_end = Vec::new();
        let mut body_bytes = 0;
        for run in 0..args.runs {
            let first = run as u64 * args.events;
            let mut bodies = Vec::new();
            let mut at = first;
            while at < first + args.events {
                let n = args.body_events.min(first + args.events - at);
                bodies.push(if dataset == "load_ipc" {
                    arrow_ipc(at, n)?
                } else {
                    ndjson(at, n)
                });
                at += n;
            }
            body_bytes = bodies.iter().map(Vec::len).sum::<usize>();
            let before = reports(&agent.state, dataset).len() as u64;
            let t0 = Instant::now();
            let accepted = post_all(&client, &url, content_type, &bodies, args.concurrency).await?;
            let acked = t0.elapsed();
            anyhow::ensure!(accepted == args.events, "accepted {accepted}");
            loop {
                let n = reports(&agent.state, dataset).len() as u64;
                if n >= before + windows_per_run {
                    break;
                }
                if t0.elapsed() > Duration::from_secs(600) {
                    bail!("windows not evaluated after 10 minutes");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let done = t0.elapsed();
            ingest.push(args.events as f64 / acked.as_secs_f64());
            end_to_end.push(args.events as f64 / done.as_secs_f64());
            println!(
                "  {dataset} run {}: acknowledged in {:.2} s ({:.0} events/s), all windows reported after {:.2} s ({:.0} events/s)",
                run + 1,
                acked.as_secs_f64(),
                args.events as f64 / acked.as_secs_f64(),
                done.as_secs_f64(),
                args.events as f64 / done.as_secs_f64()
            );
        }
        println!(
            "{dataset}: median ingest {:.0} events/s ({:.1} MB/s of bodies), median end to end {:.0} events/s",
            median(&mut ingest),
            median(&mut ingest.clone()) * body_bytes as f64 / args.events as f64 / 1e6,
            median(&mut end_to_end)
        );
    }

    let hwm = std::fs::read_to_string(format!("/proc/{}/status", agent.child.id()))
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap_or(0);
    println!(
        "agent peak resident memory over all runs: {} MiB",
        hwm / 1024
    );

    let url = format!("http://{}/ingest/latency", agent.addr);
    let mut latencies = Vec::new();
    for i in 0..args.latency_runs {
        let body = ndjson(i as u64 * 1000, 1000);
        let before = reports(&agent.state, "latency").len();
        let sent = SystemTime::now();
        post_all(&client, &url, "application/x-ndjson", &[body], 1).await?;
        let t0 = Instant::now();
        let evaluated_at = loop {
            let r = reports(&agent.state, "latency");
            if r.len() > before {
                break r[before].2;
            }
            if t0.elapsed() > Duration::from_secs(60) {
                bail!("latency window not evaluated");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let ms = evaluated_at
            .duration_since(sent)
            .unwrap_or_default()
            .as_secs_f64()
            * 1000.0;
        latencies.push(ms);
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    println!(
        "arrival of a window's last event → its report: median {:.0} ms, p90 {:.0} ms, max {:.0} ms ({} windows of 1,000 events)",
        p(0.5),
        p(0.9),
        p(1.0),
        latencies.len()
    );
    Ok(())
}
