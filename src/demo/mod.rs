//! `driftwatch demo`: realistic batches and rules, made on the spot.
//!
//! [`live`] runs the real agent on a temporary lake and lands a stream of
//! generated batches in which drift, rule failures and a corrupt file appear,
//! so a new user sees the whole product without bringing data. The data
//! generator lives in [`flights`] and is shared with the benchmark generator
//! (`examples/gen_flights.rs`) and the tests; [`DEMO_RULES`] is also shipped
//! as `rules/flights.yaml`.

pub mod flights;
pub mod live;

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
