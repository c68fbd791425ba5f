//! Measures a Kafka source's catch-up as a user runs it (the Kafka figure in
//! the issue 8 note), against `target/release/driftwatch run` and a tansu
//! 0.6.0 broker on loopback with in-memory storage (the binary from
//! `DRIFTWATCH_TANSU`, else `~/.cache/driftwatch-tools/tansu-0.6.0/bin/tansu`,
//! where `.ci/run` installs it):
//!
//! 1. produce — a topic of `--partitions` partitions gets `--events` JSON
//!    events (id, score, kind, ok; round robin over the partitions) from an
//!    rdkafka producer, `--in-flight` sends outstanding. tansu 0.6.0 needs one
//!    message per batch (`batch.num.messages=1`, `linger.ms=0`, see
//!    `docs/design/streams-research.md`), so this rate is the broker's, not
//!    driftwatch's; it is printed separately.
//! 2. catch-up — then the agent starts with one `kind = "kafka"` source
//!    (windows of `--window-rows` events per partition, a rule file with a
//!    schema check) and consumes the backlog. "catch-up" is events / time from
//!    spawning the agent until every window is in the results log (`/status`
//!    `streams[0].lag` is then checked to reach 0; the agent refreshes it every
//!    5 s, so that wait is not timed). The agent's peak resident memory
//!    (VmHWM), and the CPU time of the agent and of the broker during the
//!    catch-up (utime + stime from `/proc`), are printed: an agent mostly idle
//!    while the broker is busy means the broker's fetches bound the figure.
//!
//! ```text
//! cargo build --release --bin driftwatch --example kafka_figures
//! target/release/examples/kafka_figures [--events 400000] [--partitions 4] [--window-rows 50000] [--in-flight 10000]
//! ```

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures::StreamExt;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

struct Args {
    events: u64,
    partitions: i32,
    window_rows: u64,
    in_flight: usize,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        events: 400_000,
        partitions: 4,
        window_rows: 50_000,
        in_flight: 10_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--events" => a.events = value.parse()?,
            "--partitions" => a.partitions = value.parse()?,
            "--window-rows" => a.window_rows = value.parse()?,
            "--in-flight" => a.in_flight = value.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    ensure!(a.partitions > 0 && a.window_rows > 0 && a.in_flight > 0);
    Ok(a)
}

const RULES: &str = "checks:
  - schema: { columns: { id: int64, score: float64, kind: utf8, ok: bool } }
  - not_null: id
  - range: { column: score, min: 0, max: 100 }
  - row_count: { min: 1 }
";

fn event(id: u64) -> String {
    format!(
        "{{\"id\":{id},\"score\":{},\"kind\":\"k{}\",\"ok\":{}}}",
        (id % 1000) as f64 / 10.0,
        id % 7,
        id.is_multiple_of(3)
    )
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tansu_binary() -> Result<PathBuf> {
    let path = match std::env::var_os("DRIFTWATCH_TANSU") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/driftwatch-tools/tansu-0.6.0/bin/tansu"),
    };
    ensure!(
        path.is_file(),
        "no tansu broker at {} (set DRIFTWATCH_TANSU; `.ci/run` installs it: cargo install tansu \
         --version 0.6.0 --features dynostore --locked --root ~/.cache/driftwatch-tools/tansu-0.6.0)",
        path.display()
    );
    Ok(path)
}

/// tansu on a free loopback port with in-memory storage, once it accepts connections.
fn start_broker(dir: &Path) -> Result<(Proc, SocketAddr)> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let url = format!("tcp://{addr}");
    let log = std::fs::File::create(dir.join("tansu.log"))?;
    let mut broker = Proc(
        Command::new(tansu_binary()?)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .env_remove("CLUSTER_ID")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start tansu")?,
    );
    let t0 = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Some(status) = broker.0.try_wait()? {
            bail!(
                "tansu exited with {status}: {}",
                std::fs::read_to_string(dir.join("tansu.log")).unwrap_or_default()
            );
        }
        ensure!(
            t0.elapsed() < Duration::from_secs(30),
            "tansu did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((broker, addr))
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32, ticks_per_second: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is field 3,
    // utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / ticks_per_second
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn vm_hwm_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .unwrap_or(0)
        / 1024
}

/// Reports in the results log.
fn reports(state: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(state.join("results.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .collect()
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    driftwatch::tls::ensure_crypto_provider();
    let ticks = clock_ticks();
    let dir = tempfile::tempdir()?;
    let (broker, addr) = start_broker(dir.path())?;
    let broker_pid = broker.0.id();
    let per_partition = args.events / args.partitions as u64;
    let windows = (per_partition / args.window_rows) * args.partitions as u64;
    ensure!(windows > 0, "fewer events per partition than --window-rows");
    println!(
        "{} events over {} partitions, windows of {} events per partition ({windows} windows)",
        args.events, args.partitions, args.window_rows
    );

    // 1. Produce.
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", addr.to_string());
    let admin: AdminClient<DefaultClientContext> = client.create()?;
    for r in admin
        .create_topics(
            &[NewTopic::new(
                "events",
                args.partitions,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?
    {
        r.map_err(|(t, e)| anyhow::anyhow!("cannot create topic {t}: {e}"))?;
    }
    let producer: FutureProducer = client
        .clone()
        // One message per batch: tansu 0.6.0 cannot fetch from inside a batch.
        .set("batch.num.messages", "1")
        .set("linger.ms", "0")
        .set("message.timeout.ms", "60000")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let cpu0 = cpu_seconds(broker_pid, ticks);
    let t0 = Instant::now();
    let partitions = args.partitions;
    let results: Vec<Result<()>> = futures::stream::iter(0..args.events)
        .map(|id| {
            let producer = &producer;
            async move {
                let payload = event(id);
                producer
                    .send(
                        FutureRecord::<(), String>::to("events")
                            .partition((id % partitions as u64) as i32)
                            .payload(&payload),
                        Duration::from_secs(60),
                    )
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| anyhow::anyhow!("produce event {id}: {e}"))
            }
        })
        .buffer_unordered(args.in_flight)
        .collect()
        .await;
    results.into_iter().collect::<Result<()>>()?;
    producer.flush(Duration::from_secs(60))?;
    let produced = t0.elapsed().as_secs_f64();
    let broker_produce_cpu = cpu_seconds(broker_pid, ticks) - cpu0;
    drop(producer);
    println!(
        "produce (tansu, one message per batch): {:.1} s, {:.0} events/s; broker CPU {:.1} s",
        produced,
        args.events as f64 / produced,
        broker_produce_cpu
    );

    // 2. Catch up.
    std::fs::create_dir_all(dir.path().join("rules"))?;
    std::fs::write(
        dir.path().join("rules/events.yaml"),
        format!("dataset: events\n{RULES}"),
    )?;
    std::fs::write(
        dir.path().join("driftwatch.toml"),
        format!(
            "rules = \"rules\"\nstate = \"state\"\n[http]\nlisten = \"127.0.0.1:0\"\n\n\
             [[sources]]\nkind = \"kafka\"\ndataset = \"events\"\nbrokers = \"{addr}\"\n\
             topics = [\"events\"]\ngroup = \"figures\"\nwindow = {{ rows = {} }}\n",
            args.window_rows
        ),
    )?;
    let bin = std::env::current_exe()?
        .parent()
        .and_then(Path::parent)
        .context("no target dir")?
        .join("driftwatch");
    let state = dir.path().join("state");
    let broker_cpu0 = cpu_seconds(broker_pid, ticks);
    let t0 = Instant::now();
    let agent = Proc(
        Command::new(&bin)
            .args(["run", "--config"])
            .arg(dir.path().join("driftwatch.toml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("agent.log"))?)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?,
    );
    let agent_pid = agent.0.id();
    let (mut agent_cpu, mut broker_cpu) = (0.0, 0.0);
    loop {
        let n = reports(&state).len() as u64;
        // CPU read while the agent is alive (before it could exit).
        agent_cpu = cpu_seconds(agent_pid, ticks).max(agent_cpu);
        broker_cpu = (cpu_seconds(broker_pid, ticks) - broker_cpu0).max(broker_cpu);
        if n >= windows {
            break;
        }
        if t0.elapsed() > Duration::from_secs(1800) {
            bail!("{n} of {windows} windows reported after 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let caught_up = t0.elapsed().as_secs_f64();
    let hwm = vm_hwm_mib(agent_pid);
    let all = reports(&state);
    let rows: u64 = all
        .iter()
        .filter_map(|v| v["reports"][0]["rows"].as_u64())
        .sum();
    let failed = all
        .iter()
        .filter(|v| v["reports"][0]["passed"] != true)
        .count();
    ensure!(
        rows == windows * args.window_rows,
        "windows hold {rows} events"
    );
    ensure!(failed == 0, "{failed} windows failed their checks");

    // The lag the agent reports (refreshed every 5 s) must reach 0.
    let info = loop {
        if let Some(info) = driftwatch::agent::read_agent_info(&state)
            && info.pid == agent_pid
        {
            break info;
        }
        ensure!(
            t0.elapsed().as_secs_f64() < caught_up + 30.0,
            "no agent info"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let http = reqwest::Client::new();
    let status = loop {
        let s: serde_json::Value = serde_json::from_str(
            &http
                .get(format!("http://{}/status", info.listen))
                .send()
                .await?
                .text()
                .await?,
        )?;
        let stream = s["streams"][0].clone();
        if stream["lag"].as_i64() == Some(0) {
            break stream;
        }
        ensure!(
            t0.elapsed().as_secs_f64() < caught_up + 30.0,
            "lag not 0 30 s after the last window: {stream}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "catch-up (driftwatch, spawn to last window reported): {:.1} s, {:.0} events/s; lag 0 at {:.1} s \
         (refreshed every 5 s), rejected {}",
        caught_up,
        args.events as f64 / caught_up,
        t0.elapsed().as_secs_f64(),
        status["rejected"]
    );
    println!(
        "CPU during catch-up: agent {:.1} s ({:.0}% of one core), broker {:.1} s ({:.0}% of one core)",
        agent_cpu,
        agent_cpu / caught_up * 100.0,
        broker_cpu,
        broker_cpu / caught_up * 100.0
    );
    println!("agent peak resident memory: {hwm} MiB");
    drop(agent);
    drop(broker);
    Ok(())
}
