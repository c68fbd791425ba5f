//! Writes the fuzz targets' seed corpora (`fuzz/corpus/<target>/`) and
//! dictionaries' companions from the real writers: Arrow IPC streams, NDJSON
//! bodies, rule files, config files, profiles (one profiled by the engine),
//! a WAL segment written by `SegmentWriter`, small Parquet files in every
//! codec the engine reads, and the files of the pyiceberg-written Iceberg
//! fixtures. Deterministic; see docs/fuzzing.md.
//!
//! ```text
//! cargo run --example fuzz_seeds [-- OUT_DIR]   # default: fuzz/corpus
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, UInt8Array,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use driftwatch::engine::{Engine, EngineOptions, ProfileRequest};
use driftwatch::profile::{ColumnKind, ColumnProfile, DatasetProfile};
use driftwatch::sources::stream::wal::{FrameMeta, Origin, SegmentWriter};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, GzipLevel, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};

fn main() -> anyhow::Result<()> {
    let out = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("fuzz/corpus"));
    ipc(&out.join("ipc_decode"))?;
    ndjson(&out.join("ndjson_decode"))?;
    rules(&out.join("rules_yaml"))?;
    config(&out.join("config_toml"))?;
    let parquet_files = parquet(&out.join("parquet_engine"))?;
    copy_all(&parquet_files, &out.join("parquet_read"))?;
    profiles(&out.join("profile_json"), &parquet_files[0])?;
    wal(&out.join("wal_recover"))?;
    iceberg(&out.join("iceberg_table"))?;
    println!("seeds written under {}", out.display());
    Ok(())
}

fn dir(path: &Path) -> anyhow::Result<&Path> {
    std::fs::create_dir_all(path)?;
    Ok(path)
}

fn copy_all(files: &[PathBuf], to: &Path) -> anyhow::Result<()> {
    dir(to)?;
    for f in files {
        let name = f.file_name().ok_or_else(|| anyhow::anyhow!("no name"))?;
        std::fs::copy(f, to.join(name))?;
    }
    Ok(())
}

/// The columns of the fuzz targets' declared event schema (fuzz/src/lib.rs)
/// that the IPC seeds carry, with nulls.
fn events_batch(rows: i64) -> anyhow::Result<RecordBatch> {
    let n = rows as usize;
    let schema = Schema::new(vec![
        Field::new("b", DataType::Boolean, true),
        Field::new("i32", DataType::Int32, true),
        Field::new("i64", DataType::Int64, true),
        Field::new("u8", DataType::UInt8, true),
        Field::new("f64", DataType::Float64, true),
        Field::new("s", DataType::Utf8, true),
        Field::new(
            "tz",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(BooleanArray::from_iter(
            (0..rows).map(|i| (i % 3 != 0).then_some(i % 2 == 0)),
        )),
        Arc::new(Int32Array::from_iter((0..rows).map(|i| Some(i as i32 - 2)))),
        Arc::new(Int64Array::from_iter(
            (0..rows).map(|i| (i != 1).then_some(i * 1_000_003)),
        )),
        Arc::new(UInt8Array::from_iter((0..rows).map(|i| Some(i as u8)))),
        Arc::new(Float64Array::from_iter(
            (0..rows).map(|i| Some(i as f64 / 3.0)),
        )),
        Arc::new(StringArray::from_iter((0..rows).map(|i| {
            (i != 2).then(|| ["a", "bb", "ccc", "é"][i as usize % 4])
        }))),
        Arc::new(
            TimestampMicrosecondArray::from_iter(
                (0..rows).map(|i| Some(1_700_000_000_000_000 + i * 1_000_000)),
            )
            .with_timezone("UTC"),
        ),
    ];
    debug_assert_eq!(columns[0].len(), n);
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}

fn ipc_stream(batches: &[RecordBatch], schema: &Schema) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut out, schema)?;
    for b in batches {
        w.write(b)?;
    }
    w.finish()?;
    drop(w);
    Ok(out)
}

fn ipc(to: &Path) -> anyhow::Result<()> {
    dir(to)?;
    let one = events_batch(4)?;
    let schema = one.schema();
    std::fs::write(
        to.join("four_rows.arrows"),
        ipc_stream(std::slice::from_ref(&one), &schema)?,
    )?;
    std::fs::write(
        to.join("two_batches.arrows"),
        ipc_stream(&[events_batch(2)?, events_batch(3)?], &schema)?,
    )?;
    std::fs::write(to.join("schema_only.arrows"), ipc_stream(&[], &schema)?)?;
    // A column the declared schema does not have (conform must refuse it).
    let extra = Schema::new(vec![Field::new("other", DataType::Int64, true)]);
    let extra_batch = RecordBatch::try_new(
        Arc::new(extra.clone()),
        vec![Arc::new(Int64Array::from(vec![1, 2, 3]))],
    )?;
    std::fs::write(
        to.join("unknown_column.arrows"),
        ipc_stream(&[extra_batch], &extra)?,
    )?;
    // A dictionary column (a type events cannot carry) exercises the reader's dictionaries.
    let dict_type = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let dict_schema = Schema::new(vec![Field::new("s", dict_type, true)]);
    let dict: arrow::array::DictionaryArray<arrow::datatypes::Int32Type> =
        vec!["x", "y", "x"].into_iter().collect();
    let dict_batch = RecordBatch::try_new(Arc::new(dict_schema.clone()), vec![Arc::new(dict)])?;
    std::fs::write(
        to.join("dictionary.arrows"),
        ipc_stream(&[dict_batch], &dict_schema)?,
    )?;
    Ok(())
}

fn ndjson(to: &Path) -> anyhow::Result<()> {
    dir(to)?;
    let seeds: [(&str, &str); 6] = [
        (
            "typed.ndjson",
            "{\"b\": true, \"i64\": 12, \"f64\": 1.5, \"s\": \"x\", \"t\": \"2024-05-01T10:00:00\", \"tz\": \"2024-05-01T10:00:00Z\", \"d\": \"2024-05-01\"}\n\
             {\"b\": false, \"i64\": -3, \"f64\": 2e3, \"s\": \"y\\u00e9\\n\", \"u8\": 255, \"i8\": -128, \"u64\": 18446744073709551615}\n\
             {\"i32\": 2147483647, \"i16\": -32768, \"u16\": 65535, \"u32\": 4294967295, \"f32\": 3.4e38, \"tzo\": \"2024-05-01T12:00:00+02:00\"}\n",
        ),
        (
            "nulls_and_bad.ndjson",
            "{\"i64\": null, \"s\": null}\r\n\n{\"i64\": \"a\"}\n[1, 2]\nnot json\n{\"s\": {\"nested\": 1}}\n   \n{\"f64\": 1e400}\n",
        ),
        (
            "inferred.ndjson",
            "{\"id\": 1, \"v\": 0.5, \"name\": \"a\", \"ok\": true}\n{\"id\": 2, \"v\": 3, \"name\": null, \"ok\": false, \"late\": \"x\"}\n{\"id\": 3.5}\n",
        ),
        ("one.ndjson", "{\"x\": 1}"),
        (
            "numbers.ndjson",
            "{\"i64\": 9223372036854775807}\n{\"i64\": -9223372036854775808}\n{\"i64\": 9223372036854775808}\n{\"f64\": -0.0}\n{\"i64\": 1.0}\n{\"u8\": 256}\n{\"u8\": -1}\n",
        ),
        (
            "times.ndjson",
            "{\"t\": \"2024-02-29 23:59:59.999999\"}\n{\"t\": 1700000000}\n{\"tz\": \"2024-05-01T10:00:00.123456789-07:00\"}\n{\"d\": \"2024-13-01\"}\n{\"d\": 19000}\n",
        ),
    ];
    for (name, text) in seeds {
        std::fs::write(to.join(name), text)?;
    }
    Ok(())
}

fn rules(to: &Path) -> anyhow::Result<()> {
    dir(to)?;
    std::fs::copy("rules/flights.yaml", to.join("flights.yaml"))?;
    // Every YAML block of the rules reference.
    let readme = std::fs::read_to_string("rules/README.md")?;
    for (i, block) in fenced(&readme, "yaml").into_iter().enumerate() {
        std::fs::write(to.join(format!("readme_{i}.yaml")), block)?;
    }
    let seeds: [(&str, &str); 4] = [
        (
            "rolling.yaml",
            "dataset: events\nmatch: \"events/*.parquet\"\nbatch: directory\nwebhooks: [retrain]\nchecks:\n  - not_null: id\n    max_count: 3\n    where: \"kind = 'a'\"\n    name: ids\n    description: ids are set\n  - schema:\n      columns: { id: integer, v: float, t: timestamp(none), z: timestamp(Europe/Paris), d: date, b: bool, x: decimal, y: binary }\ndrift:\n  reference: { rolling: { batches: 3 } }\n  correction: bonferroni\n  severity: warn\n  drift_share: 1\n",
        ),
        (
            "overrides.yaml",
            "dataset: t\ndrift:\n  reference: t.profile\n  columns: [x, cat]\n  correction: fdr_bh\n  drift_share: 0.5\n  overrides:\n    x: { test: mannw, threshold: 0.01 }\n    cat: { test: psi }\n",
        ),
        (
            "anchors.yaml",
            "dataset: &d t\nchecks:\n  - &c not_null: a\n  - range: { column: b, min: -1e3, max: .inf }\n  - accepted_values: { column: c, values: [1, 2.5, true, null, \"x\"] }\n  - freshness: { column: t, max_age: 1d12h30m }\n",
        ),
        ("empty.yaml", "dataset: x\n"),
    ];
    for (name, text) in seeds {
        std::fs::write(to.join(name), text)?;
    }
    Ok(())
}

fn config(to: &Path) -> anyhow::Result<()> {
    dir(to)?;
    let mut n = 0;
    for doc in [
        "README.md",
        "docs/agent.md",
        "docs/streams.md",
        "docs/webhook.md",
        "docs/telemetry.md",
    ] {
        let text = std::fs::read_to_string(doc)?;
        for block in fenced(&text, "toml") {
            std::fs::write(to.join(format!("doc_{n}.toml")), block)?;
            n += 1;
        }
    }
    std::fs::write(
        to.join("minimal.toml"),
        "watch = [\"lake\"]\nrules = \"rules\"\n",
    )?;
    std::fs::write(
        to.join("full.toml"),
        "watch = [\"lake\", \"/data/other\"]\nrules = \"rules\"\nstate = \"state\"\n\n[lake]\nsettle = \"500ms\"\nrescan = \"1m\"\nmode = \"poll\"\npoll_interval = \"3s\"\ninclude = [\"**/*.parquet\"]\nexclude = [\"tmp/**\"]\nquarantine = \"bad\"\n\n[evaluation]\nconcurrency = 2\nmemory_limit = \"512MiB\"\nqueue = 16\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n[log]\nformat = \"json\"\nlevel = \"debug\"\n\n[retention]\nresults_log_max_size = \"1MiB\"\nresults_log_files = 2\nreports_per_dataset = 10\nmax_age = \"7d\"\n",
    )?;
    Ok(())
}

/// The contents of every ```lang fenced block.
fn fenced(text: &str, lang: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        match current.as_mut() {
            None if trimmed == format!("```{lang}") => current = Some(String::new()),
            None => {}
            Some(_) if trimmed.starts_with("```") => blocks.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    blocks
}

/// The columns the engine target's rule file checks: `i`, `f`, `s`, `t`.
fn table(rows: i64) -> anyhow::Result<RecordBatch> {
    let schema = Schema::new(vec![
        Field::new("i", DataType::Int64, true),
        Field::new("f", DataType::Float64, true),
        Field::new("s", DataType::Utf8, true),
        Field::new(
            "t",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter(
            (0..rows).map(|i| (i % 7 != 3).then_some(i)),
        )),
        Arc::new(Float64Array::from_iter(
            (0..rows).map(|i| Some((i as f64 - 10.0) * 1.25)),
        )),
        Arc::new(StringArray::from_iter((0..rows).map(|i| {
            (i % 5 != 4).then(|| ["a", "b", "c", "Dd"][i as usize % 4])
        }))),
        Arc::new(
            TimestampMicrosecondArray::from_iter(
                (0..rows).map(|i| Some(1_799_000_000_000_000 + i * 60_000_000)),
            )
            .with_timezone("UTC"),
        ),
    ];
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}

fn parquet(to: &Path) -> anyhow::Result<Vec<PathBuf>> {
    dir(to)?;
    let variants: [(&str, Compression, bool, EnabledStatistics, usize); 6] = [
        (
            "plain.parquet",
            Compression::UNCOMPRESSED,
            false,
            EnabledStatistics::None,
            40,
        ),
        (
            "snappy_dict.parquet",
            Compression::SNAPPY,
            true,
            EnabledStatistics::Chunk,
            40,
        ),
        (
            "zstd_pages.parquet",
            Compression::ZSTD(ZstdLevel::default()),
            true,
            EnabledStatistics::Page,
            40,
        ),
        (
            "lz4.parquet",
            Compression::LZ4_RAW,
            false,
            EnabledStatistics::Page,
            40,
        ),
        (
            "gzip.parquet",
            Compression::GZIP(GzipLevel::default()),
            true,
            EnabledStatistics::Chunk,
            40,
        ),
        (
            "row_groups.parquet",
            Compression::SNAPPY,
            true,
            EnabledStatistics::Page,
            8,
        ),
    ];
    let mut files = Vec::new();
    for (name, codec, dictionary, stats, group) in variants {
        let props = WriterProperties::builder()
            .set_compression(codec)
            .set_dictionary_enabled(dictionary)
            .set_statistics_enabled(stats)
            .set_max_row_group_row_count(Some(group))
            .set_data_page_row_count_limit(10)
            .set_write_batch_size(10)
            .build();
        let path = to.join(name);
        let file = std::fs::File::create(&path)?;
        let batch = table(40)?;
        let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props))?;
        w.write(&batch)?;
        w.close()?;
        files.push(path);
    }
    Ok(files)
}

fn profiles(to: &Path, parquet_file: &Path) -> anyhow::Result<()> {
    dir(to)?;
    // A profile as `driftwatch baseline` makes it: the engine profiles a batch.
    let engine = Engine::new(&EngineOptions {
        target_partitions: Some(1),
        ..EngineOptions::default()
    })?;
    let rules = driftwatch::rules::parse_rule_file(Path::new("seed.yaml"), "dataset: seed\n")?;
    let now = chrono::DateTime::from_timestamp(1_800_000_000, 0)
        .ok_or_else(|| anyhow::anyhow!("time"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let evaluation = runtime.block_on(engine.evaluate_with_profiles(
        parquet_file,
        "seed.parquet",
        &rules,
        now,
        &ProfileRequest::AllSupported,
    ));
    let profile = evaluation
        .profile
        .ok_or_else(|| anyhow::anyhow!("the engine made no profile"))?;
    profile.write(&to.join("engine.profile"))?;

    // Hand-made columns named like the target's current profile (x, few, cat).
    let mut p = DatasetProfile::new("fuzz");
    let mut x = ColumnProfile::new(ColumnKind::Numeric, "float64");
    let mut few = ColumnProfile::new(ColumnKind::Numeric, "int64");
    let mut cat = ColumnProfile::new(ColumnKind::Categorical, "utf8");
    for i in 0..60u32 {
        x.update_f64(f64::from(i) * 1.5);
        few.update_f64(f64::from(i % 3));
        cat.update_str(["a", "b", "z"][(i % 3) as usize]);
    }
    cat.update_null();
    p.rows = 61;
    p.sources.push("seed".to_string());
    p.columns.insert("x".to_string(), x);
    p.columns.insert("few".to_string(), few);
    p.columns.insert("cat".to_string(), cat);
    p.write(&to.join("small.profile"))?;
    DatasetProfile::new("empty").write(&to.join("empty.profile"))?;
    Ok(())
}

fn wal(to: &Path) -> anyhow::Result<()> {
    dir(to)?;
    let scratch = tempfile::tempdir()?;
    let seg = scratch.path().join("seg.wal");
    let mut w = SegmentWriter::create(&seg)?;
    w.append(
        &[events_batch(3)?],
        &FrameMeta {
            rows: 3,
            origin: None,
        },
    )?;
    w.append(
        &[events_batch(2)?],
        &FrameMeta {
            rows: 2,
            origin: Some(Origin {
                file: "events/a.ndjson".to_string(),
                lines: 7,
            }),
        },
    )?;
    w.append(
        &[],
        &FrameMeta {
            rows: 0,
            origin: None,
        },
    )?;
    drop(w);
    let bytes = std::fs::read(&seg)?;
    // Mode byte 0: the segment as written.
    let mut raw = vec![0u8];
    raw.extend_from_slice(&bytes);
    std::fs::write(to.join("segment_raw"), &raw)?;
    // A torn last frame.
    std::fs::write(to.join("segment_torn"), &raw[..raw.len() - 5])?;
    // Mode byte 1: the same frames' bodies, each `len: u16 LE | body`
    // (the target recomputes the frame header and CRC).
    let mut fixed = vec![1u8];
    let mut rest = &bytes[..];
    while rest.len() >= 12 {
        let len = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        let body = &rest[12..8 + len];
        fixed.extend_from_slice(&u16::try_from(body.len())?.to_le_bytes());
        fixed.extend_from_slice(body);
        rest = &rest[8 + len..];
    }
    std::fs::write(to.join("segment_bodies"), &fixed)?;
    Ok(())
}

/// The Iceberg fixtures' files (written by pyiceberg, tests/fixtures/iceberg*),
/// each behind the byte that tells the `iceberg_table` target what it is:
/// 0 a metadata file, 1 a gzip-compressed one, 2 an Avro manifest list or
/// manifest. Per fixture: its newest metadata file and its first manifest
/// list and manifest (by name).
fn iceberg(to: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    dir(to)?;
    let seed = |name: String, kind: u8, bytes: &[u8]| -> anyhow::Result<()> {
        let mut data = vec![kind];
        data.extend_from_slice(bytes);
        std::fs::write(to.join(name), data)?;
        Ok(())
    };
    for fixture in ["iceberg", "iceberg_transforms", "iceberg_types"] {
        let folder = PathBuf::from(format!("tests/fixtures/{fixture}/python_table/metadata"));
        let mut names: Vec<String> = std::fs::read_dir(&folder)?
            .map(|e| Ok(e?.file_name().to_string_lossy().to_string()))
            .collect::<anyhow::Result<_>>()?;
        names.sort();
        let first = |keep: &dyn Fn(&str) -> bool| {
            names
                .iter()
                .find(|n| keep(n))
                .ok_or_else(|| anyhow::anyhow!("{fixture}: no such file"))
        };
        let metadata = names
            .iter()
            .rfind(|n| n.ends_with(".metadata.json"))
            .ok_or_else(|| anyhow::anyhow!("{fixture}: no metadata file"))?;
        let json = std::fs::read(folder.join(metadata))?;
        seed(format!("{fixture}-metadata.json"), 0, &json)?;
        if fixture == "iceberg" {
            // flate2's header has no time stamp: the same bytes every run.
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(&json)?;
            seed(format!("{fixture}-metadata.json.gz"), 1, &gz.finish()?)?;
        }
        let list = first(&|n| n.starts_with("snap-") && n.ends_with(".avro"))?;
        seed(
            format!("{fixture}-manifest-list.avro"),
            2,
            &std::fs::read(folder.join(list))?,
        )?;
        let manifest = first(&|n| !n.starts_with("snap-") && n.ends_with(".avro"))?;
        seed(
            format!("{fixture}-manifest.avro"),
            2,
            &std::fs::read(folder.join(manifest))?,
        )?;
    }
    Ok(())
}
