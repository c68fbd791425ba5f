//! What profiling each column costs (issue 19): for every column of a Parquet
//! file, the time of one scan profiling that column alone, beside a scan that
//! only counts it (decode cost), as medians of `--runs` alternating runs.
//!
//! ```text
//! cargo run --release --example profile_cost -- FILE.parquet [--runs 3] [--partitions 1] [--columns a,b]
//! ```
//! The difference is the profile's own cost. One partition by default, so the
//! figures are CPU time of one core.

use std::path::Path;
use std::time::{Duration, Instant};

use driftwatch::engine::{Engine, EngineOptions, ProfileRequest};
use driftwatch::rules::parse_rule_file;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or_else(|| {
        anyhow::anyhow!(
            "usage: profile_cost FILE.parquet [--runs N] [--partitions N] [--columns a,b]"
        )
    })?;
    let mut runs = 3usize;
    let mut partitions = 1usize;
    let mut only: Option<Vec<String>> = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = args.next().unwrap_or_default().parse()?,
            "--partitions" => partitions = args.next().unwrap_or_default().parse()?,
            "--columns" => {
                only = args
                    .next()
                    .map(|s| s.split(',').map(str::to_string).collect())
            }
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let engine = Engine::new(&EngineOptions {
        target_partitions: Some(partitions),
        ..Default::default()
    })?;
    let file = std::fs::File::open(&path)?;
    let reader = parquet::file::reader::SerializedFileReader::new(file)?;
    use parquet::file::reader::FileReader;
    let columns: Vec<String> = reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .filter(|n| only.as_ref().is_none_or(|o| o.contains(n)))
        .collect();
    let now = chrono::Utc::now();
    let mut total_profile = Duration::ZERO;
    let mut total_decode = Duration::ZERO;
    println!(
        "{:<16} {:>10} {:>10} {:>10}",
        "column", "decode ms", "profile ms", "extra ms"
    );
    let bare = parse_rule_file(
        Path::new("none.yaml"),
        "dataset: d\nchecks:\n  - row_count: { min: 0 }\n",
    )?;
    for column in &columns {
        let counting = parse_rule_file(
            Path::new("count.yaml"),
            &format!("dataset: d\nchecks:\n  - not_null: {column}\n    max_fraction: 1\n"),
        )?;
        let timed = |rules, request| {
            let (engine, path) = (&engine, &path);
            async move {
                let started = Instant::now();
                let e = engine
                    .evaluate_with_profiles(Path::new(path), path, rules, now, request)
                    .await;
                anyhow::ensure!(e.report.error.is_none(), "{:?}", e.report.error);
                Ok(started.elapsed())
            }
        };
        let one_column = ProfileRequest::Columns(vec![column.clone()]);
        let mut decode = Vec::new();
        let mut profile = Vec::new();
        for _ in 0..runs {
            decode.push(timed(&counting, &ProfileRequest::None).await?);
            profile.push(timed(&bare, &one_column).await?);
        }
        decode.sort();
        profile.sort();
        let (d, p) = (decode[runs / 2], profile[runs / 2]);
        total_profile += p;
        total_decode += d;
        println!(
            "{column:<16} {:>10.1} {:>10.1} {:>10.1}",
            d.as_secs_f64() * 1e3,
            p.as_secs_f64() * 1e3,
            (p.as_secs_f64() - d.as_secs_f64()) * 1e3
        );
    }
    println!(
        "{:<16} {:>10.1} {:>10.1} {:>10.1}",
        "total",
        total_decode.as_secs_f64() * 1e3,
        total_profile.as_secs_f64() * 1e3,
        (total_profile.as_secs_f64() - total_decode.as_secs_f64()) * 1e3
    );
    Ok(())
}
