//! `driftwatch demo`: realistic batches and rules, made on the spot.
//!
//! [`prepare`] writes, into a folder, a few flights-shaped Parquet batches —
//! clean ones and one with planted failures — and the example rule file below,
//! so a new user sees every part of a report without bringing data. The data
//! generator itself lives in [`flights`] and is shared with the benchmark
//! generator (`examples/gen_flights.rs`) and the tests.

pub mod flights;
pub mod live;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};

pub use flights::{Defects, DemoError, FlightsSpec, write_flights};

/// The rule file the demo writes (`rules/flights.yaml`).
pub const DEMO_RULES: &str = r#"# Example rules for the flights dataset (see rules/README.md for every key).
dataset: flights
match: "flights/**/*.parquet"
checks:
  - schema:
      columns: { row_id: int64, dep_delay: int64, carrier: utf8, time_hour: timestamp(UTC) }
      allow_extra: true
  - row_count: { min: 1000, max: 5000000 }
  - unique: row_id
  - not_null: carrier
  - not_null: dep_delay
    max_fraction: 0.05          # cancelled flights have no delay; more than 5% is suspicious
    severity: warn
  - range: { column: distance, min: 17, max: 4983 }
  - range: { column: dep_delay, min: -30, max: 600 }
    max_fraction: 0.001
  - accepted_values: { column: origin, values: [EWR, JFK, LGA] }
  - accepted_values:
      column: carrier
      values: [9E, AA, AS, B6, DL, EV, F9, FL, HA, MQ, OO, UA, US, VX, WN, YV]
  - regex: { column: tailnum, pattern: "^N[0-9A-Z]+$" }
    max_fraction: 0.001
  - freshness: { column: time_hour, max_age: 36h }
  - expr: "arr_time IS NULL OR arr_time >= 0"
    name: arrival_time_non_negative
  - metric: "avg(arr_delay)"
    between: [-10, 30]
    name: mean_arrival_delay_jfk
    where: "origin = 'JFK'"
"#;

/// What [`prepare`] wrote.
#[derive(Debug, Clone)]
pub struct DemoFiles {
    /// The folder holding everything.
    pub root: PathBuf,
    /// The data folder to pass to `check`.
    pub data: PathBuf,
    /// The rules folder.
    pub rules: PathBuf,
    /// The batch files, clean ones first.
    pub batches: Vec<PathBuf>,
}

/// Writes the demo batches and rules under `root`; timestamps end shortly
/// before `now`, so the freshness check is meaningful.
pub fn prepare(root: &Path, now: DateTime<Utc>) -> Result<DemoFiles, DemoError> {
    let data = root.join("data");
    let flights_dir = data.join("flights");
    let rules = root.join("rules");
    for dir in [&flights_dir, &rules] {
        std::fs::create_dir_all(dir).map_err(|source| DemoError::Io {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let rules_file = rules.join("flights.yaml");
    std::fs::write(&rules_file, DEMO_RULES).map_err(|source| DemoError::Io {
        path: rules_file.display().to_string(),
        source,
    })?;

    let day = |days_ago: i64| now - Duration::hours(24 * days_ago + 30);
    let batches = [
        (
            "2013-01-01.parquet",
            1,
            20_000u64,
            Defects::default(),
            day(1),
        ),
        (
            "2013-01-02.parquet",
            20_001,
            20_000,
            Defects::default(),
            day(0),
        ),
        (
            "2013-01-03-broken.parquet",
            40_001,
            20_000,
            Defects {
                null_dep_delay_every: Some(12),
                bad_origin_every: Some(200),
                duplicate_row_id_every: Some(500),
                bad_tailnum_every: Some(250),
                negative_distance_every: Some(1000),
            },
            day(0),
        ),
    ];
    let mut written = Vec::new();
    for (i, (name, first_row_id, rows, defects, start)) in batches.into_iter().enumerate() {
        let path = flights_dir.join(name);
        let spec = FlightsSpec {
            rows,
            row_group_rows: 8_192,
            seed: 7 + i as u64,
            first_row_id,
            start,
            span_hours: 24,
            defects,
            delay_shift: 0,
        };
        write_flights(&path, &spec)?;
        written.push(path);
    }
    Ok(DemoFiles {
        root: root.to_path_buf(),
        data,
        rules,
        batches: written,
    })
}
