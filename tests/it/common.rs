//! Shared helpers: writing Parquet fixtures, rule files, running the engine.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, DictionaryArray, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};
use driftwatch::engine::{Engine, EngineOptions};
use driftwatch::report::{BatchReport, CheckResult};
use driftwatch::rules::parse_rule_file;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

/// The fixed "now" of every test, so freshness is reproducible.
pub const NOW: &str = "2024-05-01T12:00:00Z";

pub fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(NOW)
        .unwrap()
        .with_timezone(&Utc)
}

pub fn write_parquet(path: &Path, batch: &RecordBatch, row_group_rows: usize) {
    let file = std::fs::File::create(path).unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(row_group_rows))
        .build();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
}

/// Issue 15's small file with huge values: column `s`, 1,000 distinct
/// 100 KB strings (100 MB of text) in ~30 KB of zstd-compressed Parquet.
pub fn write_huge_strings(path: &Path) {
    use parquet::basic::{Compression, ZstdLevel};
    let values: Vec<String> = (0..1000)
        .map(|i| format!("{i:04}{}", "x".repeat(100_000 - 4)))
        .collect();
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, true)])),
        vec![Arc::new(StringArray::from(values)) as ArrayRef],
    )
    .unwrap();
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap()))
        .set_dictionary_enabled(false)
        .build();
    let mut writer = ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        batch.schema(),
        Some(props),
    )
    .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// Microseconds since the epoch of an RFC 3339 time.
pub fn micros(text: &str) -> i64 {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .timestamp_micros()
}

/// The ten-row table most check tests use. Row by row:
///
/// | # | id   | name  | score | code | ts (UTC)          | local_ts (naive)  | my col | city   |
/// |---|------|-------|-------|------|-------------------|-------------------|--------|--------|
/// | 0 | 1    | alpha | 1.5   | A    | 2024-04-30T00:00Z | 2024-04-30T00:00  | 10     | Zürich |
/// | 1 | 2    | beta  | 2.5   | B    | 2024-04-30T06:00Z | 2024-04-30T06:00  | 20     | 東京   |
/// | 2 | 3    | gamma | NaN   | A    | 2024-04-30T12:00Z | 2024-04-30T12:00  | 30     | Paris  |
/// | 3 | 4    | null  | +inf  | C    | 2024-04-30T18:00Z | 2024-04-30T18:00  | 40     | Zürich |
/// | 4 | 5    | delta | -inf  | A    | 2024-05-01T00:00Z | 2024-05-01T00:00  | 50     | null   |
/// | 5 | 5    | eps   | null  | B    | null              | null              | 60     | Paris  |
/// | 6 | 6    | Zeta  | 0.0   | A    | 2024-04-29T00:00Z | 2024-04-29T00:00  | 70     | 東京   |
/// | 7 | null | eta   | 3.0   | null | 2024-04-29T00:00Z | 2024-04-29T00:00  | 80     | Paris  |
/// | 8 | 8    | theta | 4.0   | B    | 2024-04-29T00:00Z | 2024-04-29T00:00  | 90     | Paris  |
/// | 9 | 9    | iota  | 5.0   | A    | 2024-04-29T00:00Z | 2024-04-29T00:00  | 100    | Paris  |
///
/// `code` is dictionary-encoded; `ts` newest is 2024-05-01T00:00Z (12 h before [`NOW`]).
pub fn table() -> RecordBatch {
    let ts = [
        Some("2024-04-30T00:00:00Z"),
        Some("2024-04-30T06:00:00Z"),
        Some("2024-04-30T12:00:00Z"),
        Some("2024-04-30T18:00:00Z"),
        Some("2024-05-01T00:00:00Z"),
        None,
        Some("2024-04-29T00:00:00Z"),
        Some("2024-04-29T00:00:00Z"),
        Some("2024-04-29T00:00:00Z"),
        Some("2024-04-29T00:00:00Z"),
    ]
    .map(|t| t.map(micros));
    let code: DictionaryArray<Int32Type> = vec![
        Some("A"),
        Some("B"),
        Some("A"),
        Some("C"),
        Some("A"),
        Some("B"),
        Some("A"),
        None,
        Some("B"),
        Some("A"),
    ]
    .into_iter()
    .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("score", DataType::Float64, true),
        Field::new(
            "code",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            true,
        ),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new(
            "local_ts",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        ),
        Field::new("my col", DataType::Int64, false),
        Field::new("city", DataType::Utf8, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![
            Some(1),
            Some(2),
            Some(3),
            Some(4),
            Some(5),
            Some(5),
            Some(6),
            None,
            Some(8),
            Some(9),
        ])),
        Arc::new(StringArray::from(vec![
            Some("alpha"),
            Some("beta"),
            Some("gamma"),
            None,
            Some("delta"),
            Some("eps"),
            Some("Zeta"),
            Some("eta"),
            Some("theta"),
            Some("iota"),
        ])),
        Arc::new(Float64Array::from(vec![
            Some(1.5),
            Some(2.5),
            Some(f64::NAN),
            Some(f64::INFINITY),
            Some(f64::NEG_INFINITY),
            None,
            Some(0.0),
            Some(3.0),
            Some(4.0),
            Some(5.0),
        ])),
        Arc::new(code),
        Arc::new(TimestampMicrosecondArray::from(ts.to_vec()).with_timezone("UTC")),
        Arc::new(TimestampMicrosecondArray::from(ts.to_vec())),
        Arc::new(Int64Array::from(
            (1..=10).map(|i| i * 10).collect::<Vec<i64>>(),
        )),
        Arc::new(StringArray::from(vec![
            Some("Zürich"),
            Some("東京"),
            Some("Paris"),
            Some("Zürich"),
            None,
            Some("Paris"),
            Some("東京"),
            Some("Paris"),
            Some("Paris"),
            Some("Paris"),
        ])),
    ];
    RecordBatch::try_new(schema, columns).unwrap()
}

/// A temp folder with `table()` written as `data.parquet` (row groups of 3 rows).
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
}

pub fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.parquet");
    write_parquet(&data, &table(), 3);
    Fixture { dir, data }
}

/// Evaluates rules (YAML text, with `dataset: t` prepended) against a file.
pub async fn evaluate(data: &Path, checks_yaml: &str) -> BatchReport {
    let text = format!("dataset: t\nchecks:\n{checks_yaml}");
    let rules = parse_rule_file(Path::new("rules.yaml"), &text).unwrap_or_else(|e| panic!("{e}"));
    let engine = Engine::new(&EngineOptions::default()).unwrap();
    engine.evaluate(data, "data.parquet", &rules, now()).await
}

pub fn check<'a>(report: &'a BatchReport, name: &str) -> &'a CheckResult {
    report
        .checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name} in {report:#?}"))
}

pub fn driftwatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_driftwatch"))
        .args(args)
        .output()
        .expect("run driftwatch")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One answer: status, headers, body text.
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
}

/// A request with reqwest (which sends `Host: <addr>` like Prometheus does).
pub fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, Vec<u8>)>,
) -> Answer {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    driftwatch::tls::ensure_crypto_provider();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let mut req = client
            .request(method.parse().unwrap(), url)
            .timeout(std::time::Duration::from_secs(120));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some((content_type, bytes)) = body {
            req = req.header("content-type", content_type).body(bytes);
        }
        let resp = req.send().await.expect("the agent answers");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        Answer {
            status,
            headers,
            text,
        }
    })
}
