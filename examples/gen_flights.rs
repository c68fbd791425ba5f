//! Generates a flights-shaped Parquet file for benchmarks and manual checks.
//!
//! ```text
//! cargo run --release --example gen_flights -- OUT.parquet [ROWS] [ROW_GROUP_ROWS] [--defects]
//! ```
//! `--defects` plants a few rare failures (duplicate ids, unknown origins,
//! malformed tail numbers, negative distances, extra null delays), so that a
//! rule suite's answers are non-zero counts worth comparing.
//! Defaults: 10,000,000 rows in row groups of 1,000,000. 20 columns shaped like
//! `../shared/data/flights/` (ints with nulls, short strings, floats, a UTC
//! timestamp) plus a unique `row_id`. Deterministic: the same arguments always
//! write the same file.

use std::path::PathBuf;
use std::time::Instant;

use driftwatch::demo::{Defects, FlightsSpec, write_flights};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().ok_or_else(|| {
        anyhow::anyhow!("usage: gen_flights OUT.parquet [ROWS] [ROW_GROUP_ROWS] [--defects]")
    })?);
    let rows: u64 = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000_000);
    let row_group_rows: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let defects = if args.any(|a| a == "--defects") {
        Defects {
            null_dep_delay_every: Some(20_011),
            bad_origin_every: Some(50_021),
            duplicate_row_id_every: Some(100_003),
            bad_tailnum_every: Some(70_001),
            negative_distance_every: Some(90_007),
        }
    } else {
        Defects::default()
    };
    let spec = FlightsSpec {
        rows,
        row_group_rows,
        defects,
        ..FlightsSpec::default()
    };
    let started = Instant::now();
    write_flights(&out, &spec)?;
    let size = std::fs::metadata(&out)?.len();
    eprintln!(
        "wrote {} rows to {} ({:.1} MB) in {:.1?}",
        rows,
        out.display(),
        size as f64 / 1e6,
        started.elapsed()
    );
    Ok(())
}
