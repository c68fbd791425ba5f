//! Criterion micro-benchmarks of the hot pieces: column-profile updates per
//! column type (sketch, moments, HLL, frequencies), merges of partition
//! profiles, profile serialization, and each drift test on profiles of
//! realistic size (one million rows each side), and stream event decoding
//! (driftwatch's strict NDJSON → Arrow against arrow-json's decoder, the
//! reference, on the same lines).
//!
//! ```text
//! cargo bench --bench micro                 # all
//! cargo bench --bench micro -- update       # a group
//! ```
//! The macro benchmark (whole files, against DuckDB) is `benches/compare.sh`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use driftwatch::drift::TestKind;
use driftwatch::drift::compare::compare;
use driftwatch::profile::{ColumnKind, ColumnProfile, DatasetProfile};
use driftwatch::rules::DriftConfig;

/// A deterministic stream of flights-like values (xorshift).
struct Values(u64);

impl Values {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// A delay-like integer: mostly small, a long right tail.
    fn delay(&mut self, shift: f64) -> f64 {
        let u = (self.next() % 10_000) as f64 / 10_000.0;
        (-(1.0 - u).ln() * 25.0 - 10.0 + shift).round()
    }
    /// One of 16 carrier-like codes, skewed.
    fn carrier(&mut self) -> &'static str {
        const C: [&str; 16] = [
            "UA", "B6", "EV", "DL", "AA", "MQ", "US", "9E", "WN", "VX", "FL", "AS", "F9", "YV",
            "HA", "OO",
        ];
        let r = self.next() % 136;
        let mut acc = 0;
        for (i, c) in C.iter().enumerate() {
            acc += 16 - i as u64;
            if r < acc {
                return c;
            }
        }
        C[0]
    }
    /// A tail-number-like string from ~4,000 distinct values.
    fn tailnum(&mut self) -> String {
        format!("N{}", 100 + self.next() % 4000)
    }
}

fn numeric_profile(rows: usize, seed: u64, shift: f64) -> ColumnProfile {
    let mut v = Values(seed);
    let mut p = ColumnProfile::new(ColumnKind::Numeric, "int64");
    for _ in 0..rows {
        p.update_f64(v.delay(shift));
    }
    p.finish();
    p
}

fn categorical_profile(rows: usize, seed: u64) -> ColumnProfile {
    let mut v = Values(seed);
    let mut p = ColumnProfile::new(ColumnKind::Categorical, "utf8");
    for _ in 0..rows {
        p.update_str(v.carrier());
    }
    p
}

fn updates(c: &mut Criterion) {
    const N: usize = 100_000;
    let mut group = c.benchmark_group("update");
    group.throughput(Throughput::Elements(N as u64));
    let mut v = Values(7);
    let delays: Vec<f64> = (0..N).map(|_| v.delay(0.0)).collect();
    let wide: Vec<f64> = (0..N).map(|_| v.next() as f64).collect();
    let carriers: Vec<&str> = (0..N).map(|_| v.carrier()).collect();
    let tails: Vec<String> = (0..N).map(|_| v.tailnum()).collect();
    group.bench_function("numeric_small_domain_int", |b| {
        b.iter(|| {
            let mut p = ColumnProfile::new(ColumnKind::Numeric, "int64");
            for &x in &delays {
                p.update_f64(x);
            }
            black_box(p)
        })
    });
    group.bench_function("numeric_all_distinct", |b| {
        b.iter(|| {
            let mut p = ColumnProfile::new(ColumnKind::Numeric, "float64");
            for &x in &wide {
                p.update_f64(x);
            }
            black_box(p)
        })
    });
    group.bench_function("categorical_16_values", |b| {
        b.iter(|| {
            let mut p = ColumnProfile::new(ColumnKind::Categorical, "utf8");
            for &s in &carriers {
                p.update_str(s);
            }
            black_box(p)
        })
    });
    group.bench_function("categorical_4000_values", |b| {
        b.iter(|| {
            let mut p = ColumnProfile::new(ColumnKind::Categorical, "utf8");
            for s in &tails {
                p.update_str(s);
            }
            black_box(p)
        })
    });
    // The engine's paths: a batch of 8,192 values at a time.
    group.bench_function("numeric_batches_small_domain_int", |b| {
        b.iter(|| {
            let mut p = ColumnProfile::new(ColumnKind::Numeric, "int64");
            for chunk in delays.chunks(8192) {
                p.update_f64_batch(chunk);
            }
            black_box(p)
        })
    });
    group.bench_function("numeric_batches_all_distinct", |b| {
        b.iter(|| {
            let mut p = ColumnProfile::new(ColumnKind::Numeric, "float64");
            for chunk in wide.chunks(8192) {
                p.update_f64_batch(chunk);
            }
            black_box(p)
        })
    });
    group.bench_function("categorical_batches_4000_values", |b| {
        b.iter(|| {
            let mut p = ColumnProfile::new(ColumnKind::Categorical, "utf8");
            for chunk in tails.chunks(8192) {
                let mut counts: std::collections::HashMap<&str, u64> =
                    std::collections::HashMap::new();
                for s in chunk {
                    *counts.entry(s.as_str()).or_insert(0) += 1;
                }
                p.update_str_count_map(counts);
            }
            black_box(p)
        })
    });
    group.finish();
}

fn merges(c: &mut Criterion) {
    let mut group = c.benchmark_group("merge");
    let a = numeric_profile(1_000_000, 1, 0.0);
    let b = numeric_profile(1_000_000, 2, 0.0);
    group.bench_function("numeric_1M_into_1M", |bench| {
        bench.iter_batched(
            || a.clone(),
            |mut x| {
                x.merge(&b, "c").unwrap();
                x
            },
            BatchSize::SmallInput,
        )
    });
    let a = categorical_profile(1_000_000, 3);
    let b = categorical_profile(1_000_000, 4);
    group.bench_function("categorical_1M_into_1M", |bench| {
        bench.iter_batched(
            || a.clone(),
            |mut x| {
                x.merge(&b, "c").unwrap();
                x
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// A 20-column dataset profile of one million rows (the benchmark file's shape).
fn dataset(seed: u64, shift: f64) -> DatasetProfile {
    let mut d = DatasetProfile::new("flights");
    d.rows = 1_000_000;
    for i in 0..14 {
        d.columns.insert(
            format!("n{i:02}"),
            numeric_profile(1_000_000, seed + i, shift),
        );
    }
    for i in 0..6 {
        d.columns.insert(
            format!("c{i:02}"),
            categorical_profile(1_000_000, seed + 100 + i),
        );
    }
    d
}

fn serialization(c: &mut Criterion) {
    let mut group = c.benchmark_group("serialize");
    let d = dataset(11, 0.0);
    let json = serde_json::to_string(&d).unwrap();
    group.throughput(Throughput::Bytes(json.len() as u64));
    group.bench_function("profile_20_columns_to_json", |b| {
        b.iter(|| black_box(serde_json::to_string(&d).unwrap()))
    });
    group.bench_function("profile_20_columns_from_json", |b| {
        b.iter(|| black_box(DatasetProfile::from_json(Path::new("bench"), &json).unwrap()))
    });
    group.finish();
}

fn drift_tests(c: &mut Criterion) {
    let mut group = c.benchmark_group("drift");
    let reference = dataset(21, 0.0);
    let current = dataset(41, 5.0);
    let numeric = [
        TestKind::Ks,
        TestKind::Wasserstein,
        TestKind::Psi,
        TestKind::Jensenshannon,
        TestKind::KlDiv,
        TestKind::Hellinger,
        TestKind::Tvd,
        TestKind::Anderson,
        TestKind::CramerVonMises,
        TestKind::Mannw,
        TestKind::Energy,
        TestKind::TTest,
    ];
    for test in numeric {
        let config = one_column("n00", test);
        group.bench_function(format!("numeric_{}", test.name()), |b| {
            b.iter(|| black_box(compare("ref", &reference, &current, &config)))
        });
    }
    for test in [
        TestKind::Chisquare,
        TestKind::Z,
        TestKind::Psi,
        TestKind::Jensenshannon,
    ] {
        let config = one_column("c00", test);
        group.bench_function(format!("categorical_{}", test.name()), |b| {
            b.iter(|| black_box(compare("ref", &reference, &current, &config)))
        });
    }
    let all = DriftConfig::defaults(Path::new("bench.yaml"));
    group.bench_function("all_20_columns_default_tests", |b| {
        b.iter(|| black_box(compare("ref", &reference, &current, &all)))
    });
    group.finish();
}

fn one_column(column: &str, test: TestKind) -> DriftConfig {
    let mut config = DriftConfig::defaults(Path::new("bench.yaml"));
    config.columns = Some(vec![column.to_string()]);
    let mut overrides = BTreeMap::new();
    overrides.insert(column.to_string(), (Some(test), None));
    config.overrides = overrides;
    config
}

/// NDJSON → Arrow: driftwatch's strict per-event decoding (each event
/// validated, a bad one rejected alone with its reason) against arrow-json's
/// batch decoder (no per-line rejection) on the same 10,000 lines.
fn stream_decode(c: &mut Criterion) {
    use driftwatch::rules::LogicalType;
    use driftwatch::sources::stream::EventSchema;
    let schema = EventSchema::from_rule(&[
        ("id".to_string(), LogicalType::Int64),
        ("kind".to_string(), LogicalType::Utf8),
        ("ok".to_string(), LogicalType::Boolean),
        ("score".to_string(), LogicalType::Float64),
    ])
    .expect("a valid schema");
    let mut body = Vec::new();
    for id in 0..10_000u64 {
        body.extend_from_slice(
            format!(
                "{{\"id\":{id},\"score\":{},\"kind\":\"k{}\",\"ok\":{}}}\n",
                (id % 1000) as f64 / 10.0,
                id % 7,
                id % 3 == 0
            )
            .as_bytes(),
        );
    }
    let mut group = c.benchmark_group("stream_decode");
    group.throughput(Throughput::Elements(10_000));
    group.bench_function("driftwatch_strict", |b| {
        b.iter(|| {
            let d = driftwatch::sources::stream::http::decode_ndjson(
                driftwatch::sources::stream::http::lines(&body),
                &schema,
                "bench",
                &|n| n.to_string(),
            )
            .expect("decodes");
            black_box(d.accepted)
        })
    });
    group.bench_function("arrow_json_reference", |b| {
        b.iter(|| {
            let mut decoder = arrow_json::ReaderBuilder::new(schema.arrow().clone())
                .with_batch_size(65_536)
                .build_decoder()
                .expect("a decoder");
            decoder.decode(&body).expect("decodes");
            let batch = decoder.flush().expect("flushes").expect("rows");
            black_box(batch.num_rows())
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    updates,
    merges,
    serialization,
    drift_tests,
    stream_decode
);
criterion_main!(benches);
