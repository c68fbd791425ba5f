//! The reference for `benches/compare.sh`: a bare DataFusion query computing
//! `count(col)` for every column of a Parquet file, i.e. one full scan of all
//! columns with the cheapest possible aggregate.
//!
//! ```text
//! cargo run --release --example bare_scan -- FILE.parquet [--columns a,b,c]
//! ```
//! Statistics collection is turned off, because DataFusion would otherwise
//! answer `count(col)` from the Parquet footer's null counts without reading
//! any data, and the point is to time a real scan. `--columns` restricts the
//! scan to the columns a rule suite reads, for a like-for-like comparison.

use std::time::Instant;

use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: bare_scan FILE.parquet [--columns a,b,c]"))?;
    let mut only: Option<Vec<String>> = None;
    while let Some(arg) = args.next() {
        if arg == "--columns" {
            only = args
                .next()
                .map(|s| s.split(',').map(str::to_string).collect());
        }
    }
    let config = SessionConfig::new().set_bool("datafusion.execution.collect_statistics", false);
    let ctx = SessionContext::new_with_config(config);
    ctx.register_parquet("t", &path, ParquetReadOptions::default().file_extension(""))
        .await?;
    let schema = ctx.table("t").await?.schema().clone();
    let columns: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| only.as_ref().is_none_or(|o| o.contains(n)))
        .collect();
    let select = columns
        .iter()
        .map(|c| format!("count(\"{}\")", c.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(", ");
    let started = Instant::now();
    let batches = ctx
        .sql(&format!("SELECT {select} FROM t"))
        .await?
        .collect()
        .await?;
    let elapsed = started.elapsed();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    eprintln!(
        "count() of {} column(s) in {:.3?} ({} result row)",
        columns.len(),
        elapsed,
        rows
    );
    Ok(())
}
