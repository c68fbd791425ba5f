//! Shared pieces of the fuzz targets (see docs/fuzzing.md): fixed schemas and
//! rule files the targets decode or evaluate against, a scratch folder for
//! targets whose code under test reads a file, and a tokio runtime for the
//! engine. Built by `fuzz/run` (docs/fuzzing.md); a member of the root
//! workspace that `cargo build`/`test` at the root leave out.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use driftwatch::rules::{LogicalType, RuleFile, TimeZoneSpec, parse_rule_file};
use driftwatch::sources::stream::EventSchema;

/// A declared event schema with one column of every type events can carry:
/// what an `http` source with a rule file's `schema` check holds.
pub fn declared_schema() -> &'static EventSchema {
    static SCHEMA: OnceLock<EventSchema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let columns = [
            ("b", LogicalType::Boolean),
            ("i8", LogicalType::Int8),
            ("i16", LogicalType::Int16),
            ("i32", LogicalType::Int32),
            ("i64", LogicalType::Int64),
            ("u8", LogicalType::UInt8),
            ("u16", LogicalType::UInt16),
            ("u32", LogicalType::UInt32),
            ("u64", LogicalType::UInt64),
            ("f32", LogicalType::Float32),
            ("f64", LogicalType::Float64),
            ("s", LogicalType::Utf8),
            ("d", LogicalType::Date),
            ("t", LogicalType::Timestamp(TimeZoneSpec::None)),
            (
                "tz",
                LogicalType::Timestamp(TimeZoneSpec::Zone("UTC".to_string())),
            ),
            (
                "tzo",
                LogicalType::Timestamp(TimeZoneSpec::Zone("+02:00".to_string())),
            ),
        ];
        let columns: Vec<(String, LogicalType)> = columns
            .into_iter()
            .map(|(n, t)| (n.to_string(), t))
            .collect();
        EventSchema::from_rule(&columns).expect("the declared schema is valid")
    })
}

/// A per-process scratch folder (removed when the process exits normally;
/// libFuzzer processes that crash leave it in the system temp folder).
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        // /dev/shm when present: the file targets write one file per input.
        let base = Path::new("/dev/shm");
        let builder = tempfile::Builder::new()
            .prefix("driftwatch-fuzz-")
            .tempdir_in(base);
        builder
            .or_else(|_| tempfile::tempdir())
            .expect("a scratch folder")
    })
    .path()
}

/// `name` inside the scratch folder.
pub fn scratch_file(name: &str) -> PathBuf {
    scratch().join(name)
}

/// The rule file the engine target evaluates every mutated Parquet file
/// with: one check of each family over the columns the seed files have,
/// plus a drift section so the profiler runs in the same scan.
pub const ENGINE_RULES: &str = r#"dataset: fuzz
checks:
  - row_count: { min: 1, max: 1000000 }
  - not_null: i
  - unique: i
  - range: { column: f, min: -1000, max: 1000 }
    max_fraction: 0.5
  - accepted_values: { column: s, values: [a, b, c] }
    max_fraction: 0.5
  - regex: { column: s, pattern: "^[a-z]+$" }
    max_fraction: 0.5
  - expr: "i IS NULL OR i >= 0"
    name: non_negative
  - metric: "avg(f)"
    between: [-1000, 1000]
  - freshness: { column: t, max_age: 100000d }
drift:
  drift_share: 0.5
"#;

/// [`ENGINE_RULES`] parsed (the path only names it in messages).
pub fn engine_rules() -> &'static RuleFile {
    static RULES: OnceLock<RuleFile> = OnceLock::new();
    RULES.get_or_init(|| {
        parse_rule_file(Path::new("fuzz.yaml"), ENGINE_RULES).expect("the engine rules are valid")
    })
}

/// One current-thread runtime per process.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// Where the agent sends decoded events: a WAL frame (an Arrow IPC stream,
/// read back at recovery) and a window's Parquet file. Batches a decoder
/// accepted must survive both; a failure here would be acknowledged events
/// that can never be evaluated.
pub fn downstream(batches: &[arrow::array::RecordBatch], schema: &EventSchema) {
    if batches.is_empty() {
        return;
    }
    let mut ipc = Vec::new();
    {
        let mut writer = arrow_ipc::writer::StreamWriter::try_new(&mut ipc, schema.arrow())
            .expect("an IPC writer for an accepted schema");
        for b in batches {
            writer.write(b).expect("an accepted batch encodes as IPC");
        }
        writer.finish().expect("the IPC stream ends");
    }
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(&ipc), None)
        .expect("the WAL's own IPC stream reads back");
    let back: Vec<_> = reader
        .collect::<Result<_, _>>()
        .expect("the WAL's own batches read back");
    // Compared by their encoding, not `==`: a float column holding NaN is
    // never `==` to itself, yet the same bits went through (found by CI's
    // ipc_decode run).
    let mut again = Vec::new();
    {
        let mut writer = arrow_ipc::writer::StreamWriter::try_new(&mut again, schema.arrow())
            .expect("an IPC writer for an accepted schema");
        for b in &back {
            writer.write(b).expect("a read-back batch encodes as IPC");
        }
        writer.finish().expect("the IPC stream ends");
    }
    assert!(again == ipc, "batches changed through IPC");
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .build();
    let mut parquet = Vec::new();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(&mut parquet, schema.arrow().clone(), Some(props))
            .expect("a Parquet writer for an accepted schema");
    for b in batches {
        writer
            .write(b)
            .expect("an accepted batch encodes as Parquet");
    }
    writer.close().expect("the Parquet file closes");
}

/// A small valid current profile (numeric and categorical columns named as
/// in the seed profiles) for the drift tests to compare fuzzed references with.
pub fn current_profile() -> &'static driftwatch::profile::DatasetProfile {
    use driftwatch::profile::{ColumnKind, ColumnProfile, DatasetProfile};
    static PROFILE: OnceLock<DatasetProfile> = OnceLock::new();
    PROFILE.get_or_init(|| {
        let mut profile = DatasetProfile::new("fuzz");
        let mut x = ColumnProfile::new(ColumnKind::Numeric, "float64");
        let mut few = ColumnProfile::new(ColumnKind::Numeric, "int64");
        let mut cat = ColumnProfile::new(ColumnKind::Categorical, "utf8");
        for i in 0..500u32 {
            x.update_f64(f64::from(i) * 0.5 - 20.0);
            few.update_f64(f64::from(i % 4));
            cat.update_str(["a", "b", "c", "d"][(i % 4) as usize]);
        }
        x.update_null();
        for c in [&mut x, &mut few, &mut cat] {
            c.finish();
        }
        profile.rows = 501;
        profile.columns.insert("x".to_string(), x);
        profile.columns.insert("few".to_string(), few);
        profile.columns.insert("cat".to_string(), cat);
        profile
    })
}

/// Frame magic of a WAL segment (see `driftwatch::sources::stream::wal`).
pub const WAL_MAGIC: &[u8; 4] = b"DWF1";

/// Turns arbitrary bytes into WAL frames with valid lengths and CRCs: each
/// chunk is `n: u16 LE` then up to `n` body bytes (`meta_len | meta | IPC`),
/// framed as the writer frames it. Lets the fuzzer reach past the checksum.
pub fn fix_up_frames(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rest.len() + 64);
    while rest.len() >= 2 {
        let n = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
        let body = &rest[..n.min(rest.len())];
        rest = &rest[body.len()..];
        out.extend_from_slice(WAL_MAGIC);
        out.extend_from_slice(&(body.len() as u32 + 4).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        out.extend_from_slice(body);
    }
    out.extend_from_slice(rest);
    out
}

/// Lets panics that the library itself catches (at its trust boundaries,
/// around third-party decoders) unwind as they do in the agent. libfuzzer-sys
/// installs a hook that aborts on every panic, caught or not; with a hook
/// that only prints, a panic that escapes the library still reaches
/// libfuzzer-sys's own `catch_unwind`, which aborts: the target judges only
/// what the agent would suffer.
pub fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // One line per panic (file:line and message), no backtrace: caught
        // panics are frequent and must not slow the run.
        std::panic::set_hook(Box::new(|info| eprintln!("{info}")));
    });
}
