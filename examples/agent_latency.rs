//! The agent's landing latency and many-small-files throughput (issue 19),
//! measured on the real binary as a user runs it:
//!
//! 1. latency — files of `--rows` rows (default 27,000 × 20 columns) are
//!    renamed one at a time into the watched lake, alternately into a Hive
//!    partition folder created just before (`flights/date=…/part-0.parquet`,
//!    the folder made right before the rename) and into a folder that already
//!    exists; for each, the time from the rename to its report's
//!    `evaluated_at` in the results log. Median and p99 per kind, beside the
//!    evaluation time of one such file measured in-process (the floor is
//!    median ≤ 50 ms + evaluation time, p99 ≤ 250 ms + evaluation time);
//! 2. many small files — `--many` files of `--rows` rows are renamed into an
//!    existing folder all at once (a backlog); files/s and rows/s from the
//!    first rename to the last report, and the agent's peak RSS (VmHWM).
//!
//! The rule file has the demo's first 9 checks (schema, row_count, unique,
//! not_null ×2, range ×2, accepted_values ×2) and runs with the default
//! settle time (2 s), so a file that waits for it shows.
//!
//! ```text
//! cargo build --release --bin driftwatch --example agent_latency
//! target/release/examples/agent_latency [--latency-files 60] [--many 500] [--rows 27000] [--settle 2s]
//!     [--runs 1] [--volume default|on|off|alternate] [--driftwatch PATH]
//! ```
//! `--runs N` repeats the many-small-files run N times on the same staged
//! files (hard links); `--volume` sets `[health] volume_anomaly` for it
//! (`alternate`: on, off, on, … — the volume signal's cost measured in one
//! sitting) and prints the median files/s per setting; `--driftwatch` runs
//! another binary than the one beside this example.
//! Linux only (reads /proc). See `benches/agent_latency.sh`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

#[path = "common/mod.rs"]
mod common;

use anyhow::{Context, Result, bail};
use common::{LineCounter, cpu_seconds, proc_field, reports, wait_count};
use driftwatch::demo::{DEMO_RULES, FlightsSpec, write_flights};

/// The demo rules' first 9 checks: everything before its `regex` check
/// (the checks after it include freshness, which generated times fail).
fn nine_checks() -> &'static str {
    let end = DEMO_RULES.find("  - regex:").unwrap_or(DEMO_RULES.len());
    &DEMO_RULES[..end]
}

struct Args {
    latency_files: usize,
    many: usize,
    rows: u64,
    settle: String,
    runs: usize,
    /// `None`: the agent's default; else alternate between these settings.
    volume: Option<Vec<bool>>,
    driftwatch: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        latency_files: 60,
        many: 500,
        rows: 27_000,
        settle: "2s".to_string(),
        runs: 1,
        volume: None,
        driftwatch: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--latency-files" => a.latency_files = value.parse()?,
            "--many" => a.many = value.parse()?,
            "--rows" => a.rows = value.parse()?,
            "--settle" => a.settle = value,
            "--runs" => a.runs = value.parse()?,
            "--driftwatch" => a.driftwatch = Some(value.into()),
            "--volume" => {
                a.volume = match value.as_str() {
                    "default" => None,
                    "on" => Some(vec![true]),
                    "off" => Some(vec![false]),
                    "alternate" => Some(vec![true, false]),
                    other => bail!("--volume {other}: write default, on, off or alternate"),
                }
            }
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

fn start_agent(bin: &Path, root: &Path, settle: &str, volume: Option<bool>) -> Result<Child> {
    let state = root.join("state");
    let mut command = Command::new(bin);
    command.arg("run");
    if let Some(on) = volume {
        let config = root.join("driftwatch.toml");
        std::fs::write(&config, format!("[health]\nvolume_anomaly = {on}\n"))?;
        command.arg("--config").arg(config);
    }
    let child = command
        .arg("--watch")
        .arg(root.join("lake"))
        .arg("--rules")
        .arg(root.join("rules"))
        .arg("--state")
        .arg(&state)
        .args(["--listen", "127.0.0.1:0", "--settle", settle])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start the agent")?;
    let pid = child.id();
    let start = Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Ready: its start-up listing is done (files landed before it are not
    // what is measured).
    loop {
        let ready = driftwatch::agent::read_agent_info(&state)
            .filter(|i| i.pid == pid)
            .and_then(|i| i.listen.parse().ok())
            .and_then(|addr| {
                runtime
                    .block_on(driftwatch::agent::http_get(
                        addr,
                        "/readyz",
                        Duration::from_secs(5),
                    ))
                    .ok()
            })
            .is_some_and(|(code, _)| code == 200);
        if ready {
            return Ok(child);
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("the agent did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes `n` files of `rows` rows into `dir`; their paths.
fn stage(dir: &Path, n: usize, rows: u64, seed: u64) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    (0..n)
        .map(|i| {
            let path = dir.join(format!("s{i:05}.parquet"));
            write_flights(
                &path,
                &FlightsSpec {
                    rows,
                    row_group_rows: 8_192,
                    seed: seed + i as u64,
                    first_row_id: 1 + (i as u64 * rows) as i64,
                    ..FlightsSpec::default()
                },
            )?;
            Ok(path)
        })
        .collect()
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Milliseconds from each rename to its report's `evaluated_at`.
fn latencies(state: &Path, renamed: &[(String, SystemTime)]) -> Result<Vec<f64>> {
    let all = reports(state);
    let mut out = Vec::new();
    for (source, at) in renamed {
        let line = all
            .iter()
            .find(|r| r["reports"][0]["source"] == source.as_str())
            .with_context(|| format!("no report for {source}"))?;
        let evaluated: chrono::DateTime<chrono::Utc> = line["agent"]["evaluated_at"]
            .as_str()
            .context("evaluated_at")?
            .parse()?;
        let at: chrono::DateTime<chrono::Utc> = (*at).into();
        out.push((evaluated - at).num_microseconds().unwrap_or(0) as f64 / 1000.0);
    }
    out.sort_by(f64::total_cmp);
    Ok(out)
}

/// The median in-process evaluation time of `file` (engine only: footer,
/// planning, scan, verdicts), over `runs` runs after one warm-up, with the
/// medians of its two parts: opening and planning (guard, footer, schema,
/// compiling the rules, the physical plan) and the scan.
fn evaluation_ms(file: &Path, runs: usize) -> Result<(f64, f64, f64)> {
    let rules = driftwatch::rules::parse_rule_file(Path::new("flights.yaml"), nine_checks())?;
    let engine = driftwatch::engine::Engine::new(&driftwatch::engine::EngineOptions::default())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (mut total, mut planning, mut scan) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..=runs {
        let started = Instant::now();
        let evaluation = runtime.block_on(engine.evaluate_with_profiles(
            file,
            "f",
            &rules,
            chrono::Utc::now(),
            &driftwatch::engine::ProfileRequest::None,
        ));
        if let Some(e) = evaluation.report.error {
            bail!("evaluation failed: {e}");
        }
        if i > 0 {
            total.push(started.elapsed().as_secs_f64() * 1000.0);
            planning.push(evaluation.timings.read.as_secs_f64() * 1000.0);
            scan.push(evaluation.timings.scan.as_secs_f64() * 1000.0);
        }
    }
    for v in [&mut total, &mut planning, &mut scan] {
        v.sort_by(f64::total_cmp);
    }
    Ok((
        quantile(&total, 0.5),
        quantile(&planning, 0.5),
        quantile(&scan, 0.5),
    ))
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let exe = std::env::current_exe()?;
    let bin: PathBuf = match &args.driftwatch {
        Some(path) => path.clone(),
        None => exe
            .parent()
            .and_then(Path::parent)
            .map(|d| d.join("driftwatch"))
            .context("locate the driftwatch binary")?,
    };
    let tmp = tempfile::tempdir_in(std::env::var_os("BENCH_DIR").unwrap_or("/var/tmp".into()))?;
    let root = tmp.path();
    for d in ["lake/flights/existing", "rules"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::write(root.join("rules/flights.yaml"), nine_checks())?;

    println!(
        "staging {} + {} files of {} rows × 20 columns…",
        args.latency_files, args.many, args.rows
    );
    let staged = stage(&root.join("staging"), args.latency_files, args.rows, 1)?;
    let many = stage(&root.join("staging-many"), args.many, args.rows, 10_000)?;
    let (eval, planning, scan) =
        evaluation_ms(staged.first().or(many.first()).context("no files")?, 20)?;
    println!(
        "evaluation time of one file in-process (median of 20): {eval:.1} ms \
         (opening and planning {planning:.1} ms, scan {scan:.1} ms)"
    );

    // 1. Latency, new folder vs existing folder, alternating.
    if args.latency_files > 0 {
        let mut agent = start_agent(&bin, root, &args.settle, None)?;
        let state = root.join("state");
        let (mut fresh, mut existing) = (Vec::new(), Vec::new());
        for (i, path) in staged.iter().enumerate() {
            let (target, list) = if i % 2 == 0 {
                let folder = root.join(format!("lake/flights/date=2026-12-04-{i:03}"));
                std::fs::create_dir(&folder)?;
                (folder.join("part-0.parquet"), &mut fresh)
            } else {
                (
                    root.join(format!("lake/flights/existing/part-{i:03}.parquet")),
                    &mut existing,
                )
            };
            let at = SystemTime::now();
            std::fs::rename(path, &target)?;
            list.push((target.display().to_string(), at));
            wait_count(
                &state,
                i + 1,
                Duration::from_secs(60),
                Duration::from_millis(2),
            )?;
            // A pipeline's files do not land back to back.
            std::thread::sleep(Duration::from_millis(20));
        }
        for (label, renamed) in [("new folder", &fresh), ("existing folder", &existing)] {
            let ms = latencies(&state, renamed)?;
            println!(
                "landing → verdict, rename into {label:<15}: median {:>6.1} ms, p99 {:>6.1} ms, max {:>6.1} ms ({} files; floors: median ≤ {:.0} ms, p99 ≤ {:.0} ms)",
                quantile(&ms, 0.5),
                quantile(&ms, 0.99),
                quantile(&ms, 1.0),
                ms.len(),
                50.0 + eval,
                250.0 + eval,
            );
        }
        agent.kill()?;
        agent.wait()?;
    }

    // 2. Many small files, landed at once into an existing folder.
    if args.many > 0 {
        let settings = args.volume.clone().unwrap_or_default();
        let mut by_setting: Vec<(Option<bool>, Vec<f64>)> = Vec::new();
        for run in 0..args.runs.max(1) {
            let volume = (!settings.is_empty()).then(|| settings[run % settings.len()]);
            let files_per_s = many_small_files(
                &bin,
                &root.join(format!("many-{run}")),
                &many,
                &args,
                volume,
            )?;
            match by_setting.iter_mut().find(|(v, _)| *v == volume) {
                Some((_, list)) => list.push(files_per_s),
                None => by_setting.push((volume, vec![files_per_s])),
            }
        }
        if args.runs > 1 {
            for (volume, mut list) in by_setting {
                list.sort_by(f64::total_cmp);
                let label = match volume {
                    None => "default".to_string(),
                    Some(on) => format!("volume_anomaly = {on}"),
                };
                println!(
                    "many small files, {label}: median {:.0} files/s over {} runs (each: {})",
                    quantile(&list, 0.5),
                    list.len(),
                    list.iter()
                        .map(|f| format!("{f:.0}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
    }
    Ok(())
}

/// One many-small-files run: `staged` hard-linked into a fresh lake under
/// `many_root` at once; prints the run's figures and returns its files/s.
fn many_small_files(
    bin: &Path,
    many_root: &Path,
    staged: &[PathBuf],
    args: &Args,
    volume: Option<bool>,
) -> Result<f64> {
    for d in ["lake/flights/day", "rules", "staging"] {
        std::fs::create_dir_all(many_root.join(d))?;
    }
    std::fs::write(many_root.join("rules/flights.yaml"), nine_checks())?;
    // Links made before the agent starts, renamed in after: the same files
    // (and modification times) for every run.
    let mut links = Vec::with_capacity(staged.len());
    for (i, path) in staged.iter().enumerate() {
        let link = many_root.join(format!("staging/s{i:05}.parquet"));
        std::fs::hard_link(path, &link)?;
        links.push(link);
    }
    let mut agent = start_agent(bin, many_root, &args.settle, volume)?;
    let pid = agent.id();
    let state = many_root.join("state");
    let mut recorded = LineCounter::new(&state);
    let cpu_before = cpu_seconds(pid).unwrap_or(0.0);
    let started = Instant::now();
    for (i, path) in links.iter().enumerate() {
        std::fs::rename(
            path,
            many_root.join(format!("lake/flights/day/part-{i:05}.parquet")),
        )?;
    }
    let mut peak_rss = 0;
    while recorded.count() < args.many {
        peak_rss = peak_rss.max(proc_field(pid, "VmRSS:").unwrap_or(0));
        if started.elapsed() > Duration::from_secs(600) {
            bail!("fewer than {} reports after 600 s", args.many);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = started.elapsed().as_secs_f64();
    // How busy the agent kept the cores: 2.0 on 2 cores is CPU-bound; less
    // means its workers waited for something other than the CPU.
    let cores_busy = (cpu_seconds(pid).unwrap_or(0.0) - cpu_before) / elapsed;
    let hwm = proc_field(pid, "VmHWM:").unwrap_or(0);
    let passed = reports(&state)
        .iter()
        .filter(|r| r["reports"][0]["passed"] == true)
        .count();
    let label = match volume {
        None => String::new(),
        Some(on) => format!(" [volume_anomaly = {on}]"),
    };
    println!(
        "many small files{label}: {} files of {} rows in {:.2} s: {:.0} files/s, {:.2} M rows/s; agent CPU {:.2} cores busy, {:.2} ms a file; agent peak RSS {} MiB (VmHWM; sampled VmRSS max {} MiB); {} passed (floor: ≥ 300 files/s, ≤ 128 MiB)",
        args.many,
        args.rows,
        elapsed,
        args.many as f64 / elapsed,
        (args.many as u64 * args.rows) as f64 / elapsed / 1e6,
        cores_busy,
        cores_busy * elapsed * 1000.0 / args.many as f64,
        hwm / 1024,
        peak_rss / 1024,
        passed,
    );
    agent.kill()?;
    agent.wait()?;
    Ok(args.many as f64 / elapsed)
}
