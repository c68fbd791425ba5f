//! Measures the agent as a user runs it (the figures quoted in issue notes):
//!
//! 1. latency — files of `--rows` rows are renamed one by one into a watched
//!    folder; for each, the time from the rename to its report's
//!    `evaluated_at` in the results log (median, p90, max);
//! 2. idle — the agent's resident memory on the empty lake, and after the
//!    files, with its CPU share over 60 s with nothing landing (the agent
//!    gives memory back after 5 s idle, so both are read 8 s into the quiet);
//! 3. peak — the agent's peak resident memory (VmHWM) while one file of
//!    `--big-rows` rows is evaluated under `--memory-limit`;
//! 4. outage — with its OTLP endpoint down (a closed port), `--outage-files`
//!    files are evaluated; resident memory after each third of them, and how
//!    many export-failure warnings were logged.
//!
//! ```text
//! cargo build --release --examples
//! target/release/examples/agent_figures [--files 100] [--rows 100000] [--big-rows 10000000] [--memory-limit 512MiB]
//! ```
//! It starts `target/release/driftwatch run` (next to this example) on a
//! temporary lake with the demo rules. Linux only (reads /proc).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

#[path = "common/mod.rs"]
mod common;

use anyhow::{Context, Result, bail};
use common::{LineCounter, cpu_seconds, proc_field, reports, wait_count};
use driftwatch::demo::{DEMO_RULES, FlightsSpec, write_flights};

struct Args {
    files: usize,
    rows: u64,
    big_rows: u64,
    memory_limit: String,
    outage_files: usize,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        files: 100,
        rows: 100_000,
        big_rows: 10_000_000,
        memory_limit: "512MiB".to_string(),
        outage_files: 300,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--files" => a.files = value.parse()?,
            "--rows" => a.rows = value.parse()?,
            "--big-rows" => a.big_rows = value.parse()?,
            "--memory-limit" => a.memory_limit = value,
            "--outage-files" => a.outage_files = value.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

fn wait_lines(state: &Path, n: usize, limit: Duration) -> Result<Vec<serde_json::Value>> {
    let start = Instant::now();
    let mut counter = LineCounter::new(state);
    loop {
        // Count newlines (cheap) and parse only once there are enough.
        let count = counter.count();
        if count >= n {
            return Ok(reports(state));
        }
        if start.elapsed() > limit {
            bail!("only {count} of {n} reports after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start_agent(bin: &Path, root: &Path, extra: &[&str]) -> Result<Child> {
    start_agent_logging(bin, root, extra, Stdio::null())
}

fn start_agent_logging(bin: &Path, root: &Path, extra: &[&str], log: Stdio) -> Result<Child> {
    let state = root.join("state");
    let mut cmd = Command::new(bin);
    cmd.args(["run", "--watch"])
        .arg(root.join("lake"))
        .arg("--rules")
        .arg(root.join("rules"))
        .arg("--state")
        .arg(&state)
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log);
    let child = cmd.spawn().context("start the agent")?;
    let pid = child.id();
    let start = Instant::now();
    while driftwatch::agent::read_agent_info(&state).is_none_or(|i| i.pid != pid) {
        if start.elapsed() > Duration::from_secs(30) {
            bail!("the agent did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let exe = std::env::current_exe()?;
    let bin: PathBuf = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("driftwatch"))
        .context("locate the driftwatch binary")?;
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    for d in ["lake/flights", "rules", "staging"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    // The demo rules without freshness (generated timestamps are from 2013).
    let rules: String =
        DEMO_RULES.replace("  - freshness: { column: time_hour, max_age: 36h }\n", "");
    std::fs::write(root.join("rules/flights.yaml"), rules)?;

    println!("generating {} files of {} rows…", args.files, args.rows);
    let mut staged = Vec::new();
    for i in 0..args.files {
        let path = root.join(format!("staging/f{i:04}.parquet"));
        write_flights(
            &path,
            &FlightsSpec {
                rows: args.rows,
                row_group_rows: 100_000,
                seed: i as u64,
                first_row_id: 1 + (i as u64 * args.rows) as i64,
                ..FlightsSpec::default()
            },
        )?;
        staged.push(path);
    }

    // 1. Latency.
    let mut agent = start_agent(&bin, root, &[])?;
    std::thread::sleep(Duration::from_secs(8));
    println!(
        "idle on the empty lake: RSS {} KiB",
        proc_field(agent.id(), "VmRSS:").unwrap_or(0)
    );
    let pid = agent.id();
    let mut renamed = Vec::new();
    for (i, path) in staged.iter().enumerate() {
        let target = root.join(format!("lake/flights/f{i:04}.parquet"));
        let at = SystemTime::now();
        std::fs::rename(path, &target)?;
        renamed.push((target.display().to_string(), at));
        // One file at a time, as a pipeline lands them: wait for its report.
        wait_lines(&root.join("state"), i + 1, Duration::from_secs(60))?;
    }
    let reports = common::reports(&root.join("state"));
    let mut latencies: Vec<f64> = Vec::new();
    for (source, at) in &renamed {
        let line = reports
            .iter()
            .find(|r| r["reports"][0]["source"] == source.as_str())
            .with_context(|| format!("no report for {source}"))?;
        let evaluated: chrono::DateTime<chrono::Utc> = line["agent"]["evaluated_at"]
            .as_str()
            .context("evaluated_at")?
            .parse()?;
        let at: chrono::DateTime<chrono::Utc> = (*at).into();
        latencies.push((evaluated - at).num_microseconds().unwrap_or(0) as f64 / 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    println!(
        "latency rename → report over {} files of {} rows: median {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        latencies.len(),
        args.rows,
        pick(0.5),
        pick(0.9),
        pick(1.0)
    );

    // 2. Idle.
    std::thread::sleep(Duration::from_secs(8));
    let rss_quiet = proc_field(pid, "VmRSS:").unwrap_or(0);
    let cpu0 = cpu_seconds(pid).unwrap_or(0.0);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(60));
    let cpu = (cpu_seconds(pid).unwrap_or(0.0) - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
    println!(
        "idle after {} files: RSS {} KiB 8 s into the quiet, {} KiB 68 s in; CPU {:.2} % of one core over 60 s",
        args.files,
        rss_quiet,
        proc_field(pid, "VmRSS:").unwrap_or(0),
        cpu
    );
    agent.kill()?;
    agent.wait()?;

    // 3. Peak memory on one big file.
    if args.big_rows > 0 {
        let big_root = tmp.path().join("big");
        for d in ["lake/flights", "rules"] {
            std::fs::create_dir_all(big_root.join(d))?;
        }
        std::fs::copy(
            root.join("rules/flights.yaml"),
            big_root.join("rules/flights.yaml"),
        )?;
        let staged = big_root.join("big.parquet");
        println!("generating one file of {} rows…", args.big_rows);
        write_flights(
            &staged,
            &FlightsSpec {
                rows: args.big_rows,
                ..FlightsSpec::default()
            },
        )?;
        let size = std::fs::metadata(&staged)?.len();
        let mut agent = start_agent(&bin, &big_root, &["--memory-limit", &args.memory_limit])?;
        let pid = agent.id();
        let before = proc_field(pid, "VmHWM:").unwrap_or(0);
        let at = Instant::now();
        std::fs::rename(&staged, big_root.join("lake/flights/big.parquet"))?;
        let report = wait_lines(&big_root.join("state"), 1, Duration::from_secs(600))?;
        let elapsed = at.elapsed();
        let peak = proc_field(pid, "VmHWM:").unwrap_or(0);
        println!(
            "big file: {} rows, {:.0} MB; report after {:.2} s (passed: {}); peak RSS {} MiB (before: {} MiB) with --memory-limit {}",
            args.big_rows,
            size as f64 / 1e6,
            elapsed.as_secs_f64(),
            report[0]["reports"][0]["passed"],
            peak / 1024,
            before / 1024,
            args.memory_limit
        );
        agent.kill()?;
        agent.wait()?;
    }

    // 4. A collector outage.
    if args.outage_files > 0 {
        let out_root = tmp.path().join("outage");
        for d in ["lake/flights", "rules", "staging"] {
            std::fs::create_dir_all(out_root.join(d))?;
        }
        std::fs::copy(
            root.join("rules/flights.yaml"),
            out_root.join("rules/flights.yaml"),
        )?;
        let closed = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let config = out_root.join("driftwatch.toml");
        std::fs::write(
            &config,
            format!(
                "[telemetry]\notlp_endpoint = \"http://127.0.0.1:{closed}\"\notlp_timeout = \"1s\"\n"
            ),
        )?;
        let sample = out_root.join("staging/sample.parquet");
        write_flights(
            &sample,
            &FlightsSpec {
                rows: 10_000,
                ..FlightsSpec::default()
            },
        )?;
        let log = out_root.join("agent.log");
        let mut agent = start_agent_logging(
            &bin,
            &out_root,
            &["--config", &config.display().to_string()],
            Stdio::from(std::fs::File::create(&log)?),
        )?;
        let pid = agent.id();
        let started = Instant::now();
        let mut samples = Vec::new();
        for i in 0..args.outage_files {
            let tmp = out_root.join("staging/t.tmp");
            std::fs::copy(&sample, &tmp)?;
            std::fs::rename(&tmp, out_root.join(format!("lake/flights/o{i:05}.parquet")))?;
            wait_count(
                &out_root.join("state"),
                i + 1,
                Duration::from_secs(60),
                Duration::from_millis(20),
            )?;
            if (i + 1) % (args.outage_files / 3).max(1) == 0 {
                samples.push((i + 1, proc_field(pid, "VmRSS:").unwrap_or(0) / 1024));
            }
        }
        let warnings = std::fs::read_to_string(&log)?
            .matches("OpenTelemetry export failed")
            .count();
        println!(
            "collector down: {} files evaluated in {:.1} s; RSS (MiB) after n files: {:?}; {} export-failure warning(s) logged",
            args.outage_files,
            started.elapsed().as_secs_f64(),
            samples,
            warnings
        );
        agent.kill()?;
        agent.wait()?;
    }
    Ok(())
}
