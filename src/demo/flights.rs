//! A deterministic generator of flights-shaped Parquet data.
//!
//! The columns mirror the nycflights13 `flights` table as stored in
//! `../shared/data/flights/` (every number an int64, with nulls for cancelled
//! flights; short strings; a UTC timestamp) plus a unique `row_id`: 20
//! columns, with realistic value distributions. Values come from a
//! seeded SplitMix64 stream, so the same [`FlightsSpec`] always writes the same
//! file. [`Defects`] plants rule failures at exact, known rates so demos and
//! tests can show failing checks.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Datelike, Utc};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

/// Errors writing generated data.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The file could not be created or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Arrow or Parquet refused the data (a bug in the generator).
    #[error("{path}: {reason}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// The 16 carrier codes of the flights data.
pub const CARRIERS: [&str; 16] = [
    "9E", "AA", "AS", "B6", "DL", "EV", "F9", "FL", "HA", "MQ", "OO", "UA", "US", "VX", "WN", "YV",
];

/// The three New York origins.
pub const ORIGINS: [&str; 3] = ["EWR", "JFK", "LGA"];

/// Destinations with their distance in miles from New York.
const DESTS: [(&str, f64); 20] = [
    ("ATL", 762.0),
    ("ORD", 733.0),
    ("LAX", 2475.0),
    ("BOS", 187.0),
    ("MCO", 944.0),
    ("CLT", 541.0),
    ("PIT", 335.0),
    ("FLL", 1069.0),
    ("MIA", 1089.0),
    ("DCA", 213.0),
    ("DTW", 502.0),
    ("DFW", 1372.0),
    ("RDU", 427.0),
    ("TPA", 1005.0),
    ("CLE", 419.0),
    ("IAH", 1416.0),
    ("MSP", 1020.0),
    ("PBI", 1035.0),
    ("BNA", 764.0),
    ("HNL", 4983.0),
];

/// Failures to plant, as exact per-row rates (a row is defective when its
/// index falls on the rate's stride, so counts are exact and predictable).
#[derive(Debug, Clone, Copy, Default)]
pub struct Defects {
    /// Every n-th row has a null `dep_delay` on top of cancelled flights.
    pub null_dep_delay_every: Option<u64>,
    /// Every n-th row has origin `XXX`.
    pub bad_origin_every: Option<u64>,
    /// Every n-th row repeats the previous row's `row_id`.
    pub duplicate_row_id_every: Option<u64>,
    /// Every n-th row has a lower-case, malformed `tailnum`.
    pub bad_tailnum_every: Option<u64>,
    /// Every n-th row has a negative `distance`.
    pub negative_distance_every: Option<u64>,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct FlightsSpec {
    /// Number of rows.
    pub rows: u64,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// Seed of the value stream.
    pub seed: u64,
    /// The first `row_id`.
    pub first_row_id: i64,
    /// The earliest `time_hour`; rows spread over the following `span_hours`.
    pub start: DateTime<Utc>,
    /// Hours covered by `time_hour`.
    pub span_hours: i64,
    /// Planted failures.
    pub defects: Defects,
    /// Minutes added to every departure (and so arrival) delay: distribution
    /// drift for demos and drift tests (0: none).
    pub delay_shift: i64,
}

impl Default for FlightsSpec {
    fn default() -> Self {
        Self {
            rows: 10_000,
            row_group_rows: 1_000_000,
            seed: 42,
            first_row_id: 1,
            start: DateTime::from_timestamp(1_356_998_400, 0).unwrap_or_default(), // 2013-01-01
            span_hours: 24 * 31,
            defects: Defects::default(),
            delay_shift: 0,
        }
    }
}

/// The Arrow schema of generated flights data.
pub fn flights_schema() -> SchemaRef {
    let utc: Arc<str> = Arc::from("UTC");
    Arc::new(Schema::new(vec![
        Field::new("row_id", DataType::Int64, false),
        Field::new("year", DataType::Int64, true),
        Field::new("month", DataType::Int64, true),
        Field::new("day", DataType::Int64, true),
        Field::new("dep_time", DataType::Int64, true),
        Field::new("sched_dep_time", DataType::Int64, true),
        Field::new("dep_delay", DataType::Int64, true),
        Field::new("arr_time", DataType::Int64, true),
        Field::new("sched_arr_time", DataType::Int64, true),
        Field::new("arr_delay", DataType::Int64, true),
        Field::new("carrier", DataType::Utf8, true),
        Field::new("flight", DataType::Int64, true),
        Field::new("tailnum", DataType::Utf8, true),
        Field::new("origin", DataType::Utf8, true),
        Field::new("dest", DataType::Utf8, true),
        Field::new("air_time", DataType::Int64, true),
        Field::new("distance", DataType::Int64, true),
        Field::new("hour", DataType::Int64, true),
        Field::new("minute", DataType::Int64, true),
        Field::new(
            "time_hour",
            DataType::Timestamp(TimeUnit::Microsecond, Some(utc)),
            true,
        ),
    ]))
}

/// SplitMix64: tiny, fast, and the same on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn hits(every: Option<u64>, index: u64) -> bool {
    every.is_some_and(|n| n > 0 && index % n == n - 1)
}

/// Generates rows `[offset, offset + len)` of the spec as one record batch.
pub fn flights_batch(spec: &FlightsSpec, offset: u64, len: usize) -> Result<RecordBatch, String> {
    // Each batch reseeds from (seed, offset) so batches can be made independently.
    let mut rng = Rng(spec.seed ^ offset.wrapping_mul(0xD1B5_4A32_D192_ED03));
    let mut row_id = Int64Builder::with_capacity(len);
    let mut year = Int64Builder::with_capacity(len);
    let mut month = Int64Builder::with_capacity(len);
    let mut day = Int64Builder::with_capacity(len);
    let mut dep_time = Int64Builder::with_capacity(len);
    let mut sched_dep_time = Int64Builder::with_capacity(len);
    let mut dep_delay = Int64Builder::with_capacity(len);
    let mut arr_time = Int64Builder::with_capacity(len);
    let mut sched_arr_time = Int64Builder::with_capacity(len);
    let mut arr_delay = Int64Builder::with_capacity(len);
    let mut carrier = StringBuilder::with_capacity(len, len * 2);
    let mut flight = Int64Builder::with_capacity(len);
    let mut tailnum = StringBuilder::with_capacity(len, len * 6);
    let mut origin = StringBuilder::with_capacity(len, len * 3);
    let mut dest = StringBuilder::with_capacity(len, len * 3);
    let mut air_time = Int64Builder::with_capacity(len);
    let mut distance = Int64Builder::with_capacity(len);
    let mut hour = Int64Builder::with_capacity(len);
    let mut minute = Int64Builder::with_capacity(len);
    let mut time_hour = TimestampMicrosecondBuilder::with_capacity(len).with_timezone("UTC");

    let start_us = spec.start.timestamp_micros();
    let span = spec.span_hours.max(1) as u64;
    let d = &spec.defects;
    for i in 0..len as u64 {
        let index = offset + i;
        let id = spec.first_row_id + index as i64;
        row_id.append_value(if hits(d.duplicate_row_id_every, index) && index > 0 {
            id - 1
        } else {
            id
        });
        let hour_offset = rng.below(span) as i64;
        let ts_us = start_us + hour_offset * 3_600_000_000;
        let ts = DateTime::from_timestamp_micros(ts_us).unwrap_or_default();
        year.append_value(i64::from(ts.year()));
        month.append_value(i64::from(ts.month()));
        day.append_value(i64::from(ts.day()));
        time_hour.append_value(ts_us);

        let sched_h = 5 + rng.below(19) as i64; // 05..23
        let sched_m = (rng.below(12) * 5) as i64;
        sched_dep_time.append_value(sched_h * 100 + sched_m);
        hour.append_value(sched_h);
        minute.append_value(sched_m);

        let (dest_code, dest_miles) = DESTS[rng.below(DESTS.len() as u64) as usize];
        dest.append_value(dest_code);
        let miles = if hits(d.negative_distance_every, index) {
            -dest_miles
        } else {
            dest_miles
        };
        distance.append_value(miles as i64);
        let block = (dest_miles / 8.0).round();
        let sched_arr = (sched_h * 60 + sched_m + block as i64 + 30) % 1440;
        sched_arr_time.append_value((sched_arr / 60) * 100 + sched_arr % 60);

        let cancelled = rng.unit() < 0.025;
        let u = rng.unit();
        let delay = if u < 0.6 {
            -(rng.below(11) as i64)
        } else if u < 0.9 {
            rng.below(31) as i64
        } else if u < 0.99 {
            30 + rng.below(150) as i64
        } else {
            180 + rng.below(420) as i64
        } + spec.delay_shift;
        if cancelled {
            dep_time.append_null();
            dep_delay.append_null();
            arr_time.append_null();
            arr_delay.append_null();
            air_time.append_null();
        } else {
            let dep = (sched_h * 60 + sched_m + delay).rem_euclid(1440);
            dep_time.append_value((dep / 60) * 100 + dep % 60);
            if hits(d.null_dep_delay_every, index) {
                dep_delay.append_null();
            } else {
                dep_delay.append_value(delay);
            }
            let arrival_delay = delay + rng.below(31) as i64 - 15;
            let arr = (sched_arr + arrival_delay).rem_euclid(1440);
            arr_time.append_value((arr / 60) * 100 + arr % 60);
            arr_delay.append_value(arrival_delay);
            air_time.append_value(((block * 0.85).round() as i64).max(20));
        }

        carrier.append_value(CARRIERS[rng.below(CARRIERS.len() as u64) as usize]);
        flight.append_value(1 + rng.below(6000) as i64);
        if hits(d.bad_tailnum_every, index) {
            tailnum.append_value("n-bad");
        } else if rng.unit() < 0.007 {
            tailnum.append_null();
        } else {
            let letters = b"ABCDEFGHJKLMNPRSTUVWXYZ";
            let a = letters[rng.below(letters.len() as u64) as usize] as char;
            let b = letters[rng.below(letters.len() as u64) as usize] as char;
            tailnum.append_value(format!("N{}{a}{b}", 100 + rng.below(900)));
        }
        origin.append_value(if hits(d.bad_origin_every, index) {
            "XXX"
        } else {
            ORIGINS[rng.below(3) as usize]
        });
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(row_id.finish()),
        Arc::new(year.finish()),
        Arc::new(month.finish()),
        Arc::new(day.finish()),
        Arc::new(dep_time.finish()),
        Arc::new(sched_dep_time.finish()),
        Arc::new(dep_delay.finish()),
        Arc::new(arr_time.finish()),
        Arc::new(sched_arr_time.finish()),
        Arc::new(arr_delay.finish()),
        Arc::new(carrier.finish()),
        Arc::new(flight.finish()),
        Arc::new(tailnum.finish()),
        Arc::new(origin.finish()),
        Arc::new(dest.finish()),
        Arc::new(air_time.finish()),
        Arc::new(distance.finish()),
        Arc::new(hour.finish()),
        Arc::new(minute.finish()),
        Arc::new(time_hour.finish()),
    ];
    RecordBatch::try_new(flights_schema(), columns).map_err(|e| e.to_string())
}

/// Writes the spec to a Parquet file (Snappy, `row_group_rows` per row
/// group), streaming in chunks so memory stays small for any row count.
pub fn write_flights(path: &Path, spec: &FlightsSpec) -> Result<u64, DemoError> {
    let name = path.display().to_string();
    let file = File::create(path).map_err(|source| DemoError::Io {
        path: name.clone(),
        source,
    })?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(spec.row_group_rows.max(1)))
        .build();
    let write_err = |reason: String| DemoError::Write {
        path: name.clone(),
        reason,
    };
    let mut writer = ArrowWriter::try_new(file, flights_schema(), Some(props))
        .map_err(|e| write_err(e.to_string()))?;
    const CHUNK: u64 = 65_536;
    let mut offset = 0;
    while offset < spec.rows {
        let len = CHUNK.min(spec.rows - offset) as usize;
        let batch = flights_batch(spec, offset, len).map_err(write_err)?;
        writer.write(&batch).map_err(|e| write_err(e.to_string()))?;
        offset += len as u64;
    }
    writer.close().map_err(|e| write_err(e.to_string()))?;
    Ok(spec.rows)
}
