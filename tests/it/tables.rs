//! Delta Lake tables (issue 16): tables written by delta-rs itself (its
//! record-batch writer, its commit path, vacuum and checkpoints), read by the
//! real agent and `check`/`baseline` binaries; and a table written by the
//! Python `deltalake` package (tests/fixtures/delta/). Apache Iceberg
//! tables: one written by the Python `pyiceberg` package
//! (tests/fixtures/iceberg/), revealed a few snapshots at a time.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use deltalake_core::kernel::transaction::CommitBuilder;
use deltalake_core::kernel::{Action, DataType, PrimitiveType, StructField};
use deltalake_core::protocol::{DeltaOperation, SaveMode};
use deltalake_core::writer::{DeltaWriter, RecordBatchWriter};
use deltalake_core::{DeltaTable, DeltaTableBuilder};
use futures::StreamExt;
use serde_json::Value;

use crate::agent::{Agent, Lake, wait_for};
use crate::common::{driftwatch, text};
use crate::object_store::{Azurite, BUCKET, FakeGcs, S3Server, TestStore, driftwatch_env};

/// Where a test's table lives: a local folder, or a prefix of the bucket
/// `lake` on a test object store (`s3://lake/<prefix>`, `az://lake/<prefix>`).
enum Site<'a> {
    Local(PathBuf),
    Store(&'a dyn TestStore, &'static str),
}

impl Site<'_> {
    /// The table's location as reports name it.
    fn location(&self) -> String {
        match self {
            Site::Local(dir) => std::fs::canonicalize(dir)
                .unwrap_or_else(|_| dir.clone())
                .display()
                .to_string(),
            Site::Store(store, prefix) => format!("{}://{BUCKET}/{prefix}", store.scheme()),
        }
    }

    /// The environment a `driftwatch` process reaches the table with.
    fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            Site::Local(_) => Vec::new(),
            Site::Store(store, _) => store.process_env(),
        }
    }

    /// Writes the files under `from` whose relative path `keep` accepts
    /// into the table: data files and manifests first, the commit (an
    /// Iceberg metadata file, a Delta log entry) last, as writers commit.
    fn copy_tree(&self, from: &Path, keep: impl Fn(&str) -> bool) {
        fn walk(root: &Path, dir: &Path, found: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(root, &path, found);
                } else {
                    let relative = path.strip_prefix(root).unwrap();
                    found.push(relative.to_str().unwrap().replace('\\', "/"));
                }
            }
        }
        let mut files = Vec::new();
        walk(from, from, &mut files);
        files.retain(|f| keep(f));
        files.sort_by_key(|f| {
            let commit = f.ends_with(".metadata.json") || f.starts_with("_delta_log/");
            (commit, f.clone())
        });
        for relative in files {
            let bytes = std::fs::read(from.join(&relative)).unwrap();
            match self {
                Site::Local(dir) => {
                    let to = dir.join(&relative);
                    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                    std::fs::write(to, bytes).unwrap();
                }
                Site::Store(store, prefix) => store.upload(&format!("{prefix}/{relative}"), &bytes),
            }
        }
    }
}

pub(crate) fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The rule file of the tests' table (`location` relative to the rules folder).
const TABLE_RULES: &str = "dataset: events
table: { format: delta, location: ../table, poll_interval: 100ms }
checks:
  - not_null: carrier
  - range: { column: amount, min: 0 }
  - row_count: { min: 1 }
";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A Delta table written with delta-rs.
struct Writer {
    table: DeltaTable,
    rt: tokio::runtime::Runtime,
    next_id: i64,
}

impl Writer {
    /// Creates the table at `dir` (version 0: CREATE TABLE, no data).
    fn create(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let rt = runtime();
        let url = url::Url::from_directory_path(std::fs::canonicalize(dir).unwrap()).unwrap();
        let table = rt.block_on(async {
            DeltaTableBuilder::from_url(url)
                .unwrap()
                .build()
                .unwrap()
                .create()
                .with_columns([
                    StructField::new("id", DataType::Primitive(PrimitiveType::Long), false),
                    StructField::new("carrier", DataType::Primitive(PrimitiveType::String), true),
                    StructField::new("amount", DataType::Primitive(PrimitiveType::Double), true),
                ])
                .await
                .unwrap()
        });
        Writer {
            table,
            rt,
            next_id: 1,
        }
    }

    fn version(&self) -> u64 {
        self.table.version().unwrap()
    }

    /// `rows` rows; `amount` is negative on every row when `negative`.
    fn rows(&mut self, rows: i64, negative: bool) -> RecordBatch {
        self.rows_shifted(rows, negative, 0.0)
    }

    /// `rows` rows whose `amount` cycles through 0, 1.5, … 148.5 (+ `shift`).
    fn rows_shifted(&mut self, rows: i64, negative: bool, shift: f64) -> RecordBatch {
        let ids: Vec<i64> = (self.next_id..self.next_id + rows).collect();
        self.next_id += rows;
        let carriers: Vec<Option<&str>> = ids
            .iter()
            .map(|i| Some(["AA", "UA", "DL"][(*i % 3) as usize]))
            .collect();
        let amounts: Vec<f64> = ids
            .iter()
            .map(|i| {
                if negative {
                    -1.0
                } else {
                    (*i % 100) as f64 * 1.5 + shift
                }
            })
            .collect();
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("id", arrow::datatypes::DataType::Int64, false),
            arrow::datatypes::Field::new("carrier", arrow::datatypes::DataType::Utf8, true),
            arrow::datatypes::Field::new("amount", arrow::datatypes::DataType::Float64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(carriers)),
                Arc::new(Float64Array::from(amounts)),
            ],
        )
        .unwrap()
    }

    /// Data files written by delta-rs's record-batch writer (not committed).
    fn write_files(&mut self, batch: RecordBatch) -> Vec<deltalake_core::kernel::Add> {
        let Writer { table, rt, .. } = self;
        rt.block_on(async {
            let mut writer = RecordBatchWriter::for_table(table).unwrap();
            writer.write(batch).await.unwrap();
            writer.flush().await.unwrap()
        })
    }

    /// The data files live now, as removes.
    fn removes(&mut self, data_change: bool) -> Vec<Action> {
        let Writer { table, rt, .. } = self;
        rt.block_on(async {
            let mut views = table.get_active_add_actions_by_partitions(&[]);
            let mut removes = Vec::new();
            while let Some(view) = views.next().await {
                removes.push(Action::Remove(view.unwrap().remove_action(data_change)));
            }
            removes
        })
    }

    fn commit(&mut self, actions: Vec<Action>, operation: DeltaOperation) -> u64 {
        let Writer { table, rt, .. } = self;
        rt.block_on(async {
            let version = CommitBuilder::default()
                .with_actions(actions)
                .build(
                    Some(table.snapshot().unwrap()),
                    table.log_store(),
                    operation,
                )
                .await
                .unwrap()
                .version();
            table.load().await.unwrap();
            version
        })
    }

    /// An append of `rows` rows (WRITE, mode Append).
    fn append(&mut self, rows: i64) -> u64 {
        self.append_shifted(rows, 0.0)
    }

    /// An append whose amounts are shifted by `shift`.
    fn append_shifted(&mut self, rows: i64, shift: f64) -> u64 {
        let batch = self.rows_shifted(rows, false, shift);
        let Writer { table, rt, .. } = self;
        rt.block_on(async {
            let mut writer = RecordBatchWriter::for_table(table).unwrap();
            writer.write(batch).await.unwrap();
            writer.flush_and_commit(table).await.unwrap()
        })
    }

    /// An overwrite with `rows` rows: the new file added, every live file removed.
    fn overwrite(&mut self, rows: i64, negative: bool) -> u64 {
        let batch = self.rows(rows, negative);
        let adds = self.write_files(batch);
        let mut actions: Vec<Action> = adds.into_iter().map(Action::Add).collect();
        actions.extend(self.removes(true));
        self.commit(
            actions,
            DeltaOperation::Write {
                mode: SaveMode::Overwrite,
                partition_by: None,
                predicate: None,
            },
        )
    }

    /// An optimize: every live file's rows rewritten into one file
    /// (`dataChange: false` on both sides, as OPTIMIZE commits them).
    fn optimize(&mut self) -> u64 {
        let files: Vec<PathBuf> = {
            let Writer { table, rt, .. } = self;
            let root = table.table_url().to_file_path().unwrap();
            rt.block_on(async {
                let mut views = table.get_active_add_actions_by_partitions(&[]);
                let mut files = Vec::new();
                while let Some(view) = views.next().await {
                    files.push(root.join(view.unwrap().path().as_ref()));
                }
                files
            })
        };
        let mut batches = Vec::new();
        for file in files {
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                std::fs::File::open(file).unwrap(),
            )
            .unwrap()
            .build()
            .unwrap();
            batches.extend(reader.map(|b| b.unwrap()));
        }
        let merged = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
        let mut actions: Vec<Action> = self
            .write_files(merged)
            .into_iter()
            .map(|mut add| {
                add.data_change = false;
                Action::Add(add)
            })
            .collect();
        actions.extend(self.removes(false));
        self.commit(
            actions,
            DeltaOperation::Optimize {
                predicate: None,
                target_size: 1 << 20,
            },
        )
    }

    /// VACUUM with no retention: deletes every removed file (VACUUM START
    /// and VACUUM END commits).
    fn vacuum(&mut self) -> u64 {
        let Writer { table, rt, .. } = self;
        rt.block_on(async {
            let (vacuumed, metrics) = table
                .clone()
                .vacuum()
                .with_retention_period(chrono::Duration::zero())
                .with_enforce_retention_duration(false)
                .await
                .unwrap();
            assert!(!metrics.files_deleted.is_empty(), "vacuum deleted nothing");
            *table = vacuumed;
            table.version().unwrap()
        })
    }

    /// Writes a checkpoint at the current version.
    fn checkpoint(&mut self) {
        let Writer { table, rt, .. } = self;
        rt.block_on(deltalake_core::checkpoints::create_checkpoint(table, None))
            .unwrap();
    }
}

/// The results log's reports for the table, in log order: (seq, source,
/// rows, outcome, operation).
pub(crate) fn table_results(lake: &Lake) -> Vec<(u64, String, Option<u64>, String, String)> {
    lake.results()
        .iter()
        .map(|r| {
            let report = &r["reports"][0];
            let outcome = if report["table"]["skipped"].is_string() {
                "skipped"
            } else if report["error"].is_string() {
                "error"
            } else if report["passed"] == true {
                "passed"
            } else {
                "failed"
            };
            (
                r["agent"]["seq"].as_u64().unwrap(),
                report["source"].as_str().unwrap().to_string(),
                report["rows"].as_u64(),
                outcome.to_string(),
                report["table"]["operation"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

pub(crate) fn wait_versions(lake: &Lake, agent: &Agent, n: usize) {
    wait_for(&format!("{n} table versions recorded"), || {
        (lake.results().len() >= n).then_some(())
    });
    // Nothing beyond: no version twice.
    assert_eq!(lake.results().len(), n, "{}", agent.log_text());
}

#[test]
fn issue_16_delta_versions_each_reported_once_in_order_across_restarts() {
    // The table lives inside the watched folder, next to a rule file that
    // takes every Parquet file there: its files are the table's, never lake
    // batches.
    let lake = Lake::new(&TABLE_RULES.replace("../table", "../lake/table"));
    std::fs::write(
        lake.path("rules/files.yaml"),
        "dataset: files\nchecks:\n  - row_count: { min: 1 }\n",
    )
    .unwrap();
    let table_dir = lake.lake().join("table");
    let location = std::fs::canonicalize(lake.lake())
        .unwrap()
        .join("table")
        .display()
        .to_string();
    let mut writer = Writer::create(&table_dir);
    assert_eq!(writer.version(), 0);
    assert_eq!(writer.append(10), 1);
    assert_eq!(writer.append(20), 2);

    let agent = Agent::start(&lake, &[]);
    wait_versions(&lake, &agent, 3);
    agent.kill9();

    // While the agent is down: two appends, an overwrite (one of whose
    // rows breaks the range check), an append.
    assert_eq!(writer.append(30), 3);
    assert_eq!(writer.append(40), 4);
    assert_eq!(writer.overwrite(50, true), 5);
    assert_eq!(writer.append(60), 6);

    let agent = Agent::start(&lake, &[]);
    wait_versions(&lake, &agent, 7);
    agent.kill9();

    // Down again: optimize, then vacuum (which deletes files of versions
    // already evaluated).
    assert_eq!(writer.optimize(), 7);
    let vacuumed = writer.vacuum();
    assert_eq!(vacuumed, 9, "VACUUM START and VACUUM END");

    let agent = Agent::start(&lake, &[]);
    wait_versions(&lake, &agent, 10);

    let at = |v: u64| format!("{location}@v{v}");
    let expected: Vec<(u64, String, Option<u64>, String, String)> = vec![
        (1, at(0), None, "skipped".into(), "CREATE TABLE".into()),
        (2, at(1), Some(10), "passed".into(), "WRITE".into()),
        (3, at(2), Some(20), "passed".into(), "WRITE".into()),
        (4, at(3), Some(30), "passed".into(), "WRITE".into()),
        (5, at(4), Some(40), "passed".into(), "WRITE".into()),
        (6, at(5), Some(50), "failed".into(), "WRITE".into()),
        (7, at(6), Some(60), "passed".into(), "WRITE".into()),
        (8, at(7), None, "skipped".into(), "OPTIMIZE".into()),
        (9, at(8), None, "skipped".into(), "VACUUM START".into()),
        (10, at(9), None, "skipped".into(), "VACUUM END".into()),
    ];
    assert_eq!(table_results(&lake), expected, "{}", agent.log_text());

    let results = lake.results();
    // The overwrite is a batch of what it added (its removes do not count).
    let overwrite = &results[5];
    assert_eq!(overwrite["agent"]["batch"]["kind"], "delta");
    assert_eq!(overwrite["agent"]["batch"]["path"], location.as_str());
    assert_eq!(overwrite["agent"]["batch"]["parts"], 1);
    assert_eq!(overwrite["agent"]["batch"]["table"]["version"], 5);
    assert_eq!(overwrite["reports"][0]["table"]["version"], 5);
    let range = &overwrite["reports"][0]["checks"][1];
    assert_eq!(range["name"], "range_amount");
    assert_eq!(range["failing_rows"], 50);
    assert_eq!(
        results[7]["reports"][0]["table"]["skipped"],
        "OPTIMIZE rewrote 2 file(s) into 1 without new data"
    );
    assert_eq!(results[7]["reports"][0]["passed"], true);
    assert_eq!(results[7]["reports"][0]["checks"], Value::Array(vec![]));

    let status = agent.status();
    let table = &status["tables"][0];
    assert_eq!(table["location"], location.as_str());
    assert_eq!(table["format"], "delta");
    assert_eq!(table["latest_version"], 9);
    assert_eq!(table["recorded_version"], 9);
    assert_eq!(table["error"], Value::Null);
    assert_eq!(status["agent"]["unmatched_files"], 0);
    assert_eq!(status["datasets"][1]["dataset"], "files");
    assert_eq!(status["datasets"][1]["evaluated"], 0);
    let dataset = &status["datasets"][0];
    assert_eq!(dataset["dataset"], "events");
    assert_eq!(dataset["evaluated"], 10);
    assert_eq!(dataset["skipped"], 4);
    assert_eq!(dataset["failed"], 1);
    assert_eq!(dataset["rows"], 210);
    assert_eq!(
        dataset["recent"][0]["skipped"],
        "VACUUM END added no data files"
    );

    // A new append while it runs: the next version, once.
    assert_eq!(writer.append(5), 10);
    wait_versions(&lake, &agent, 11);
    let last = table_results(&lake).pop().unwrap();
    assert_eq!(last, (11, at(10), Some(5), "passed".into(), "WRITE".into()));
    assert_eq!(agent.terminate(), Some(0));
    // A stopped agent's store still tells the recorded version.
    let out = driftwatch(&[
        "status",
        "--state",
        lake.state().to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["tables"][0]["location"], location.as_str());
    assert_eq!(status["tables"][0]["recorded_version"], 10);
    assert_eq!(status["datasets"][0]["skipped"], 4);
}

#[test]
fn issue_16_rolling_reference_over_table_versions_skips_versions_without_data() {
    let lake = Lake::new(
        "dataset: events
table: { format: delta, location: ../table, poll_interval: 100ms }
checks:
  - row_count: { min: 1 }
drift:
  reference: { rolling: { batches: 1 } }
  columns: [amount]
",
    );
    let mut writer = Writer::create(&lake.path("table")); // v0: skipped
    writer.append(200); // v1: the window is empty
    writer.optimize(); // v2: skipped, not part of the window
    writer.append(200); // v3: like v1
    writer.append_shifted(200, 1000.0); // v4: shifted
    let agent = Agent::start(&lake, &[]);
    wait_versions(&lake, &agent, 5);
    let results = lake.results();
    let drift = |i: usize| results[i]["reports"][0]["drift"].clone();
    assert_eq!(drift(0), Value::Null);
    assert_eq!(
        drift(1)["message"],
        "rolling reference has 0 of 1 batches; drift is tested once it has at least one"
    );
    assert_eq!(drift(2), Value::Null);
    assert_eq!(drift(3)["dataset_drift"], false);
    assert_eq!(drift(3)["reference"], "rolling (previous 1 batches)");
    assert_eq!(drift(4)["dataset_drift"], true);
    assert_eq!(results[4]["reports"][0]["passed"], false);
}

#[test]
fn issue_16_delta_table_with_checkpoint_and_cleaned_log_is_read_through_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let table_dir = dir.path().join("table");
    let mut writer = Writer::create(&table_dir);
    writer.append(100); // v1
    writer.append(200); // v2
    writer.append(300); // v3
    writer.checkpoint(); // at v3
    writer.append(400); // v4
    // Log clean-up: the commits the checkpoint covers are gone.
    for v in 0..=3 {
        std::fs::remove_file(table_dir.join(format!("_delta_log/{v:020}.json"))).unwrap();
    }
    assert!(
        table_dir
            .join("_delta_log/00000000000000000003.checkpoint.parquet")
            .is_file()
    );
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        "dataset: events\ntable: { format: delta, location: table }\nchecks:\n  - row_count: { min: 1 }\n",
    )
    .unwrap();
    let location = std::fs::canonicalize(&table_dir)
        .unwrap()
        .display()
        .to_string();

    // `check` with no PATH reads the rule file's table at its latest version.
    let out = driftwatch(&[
        "check",
        "--rules",
        rules.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let batch = &report["reports"][0];
    assert_eq!(batch["source"], format!("{location}@v4"));
    assert_eq!(batch["rows"], 400);
    assert_eq!(batch["table"]["version"], 4);
    assert_eq!(batch["table"]["operation"], "WRITE");

    // A version whose commit was cleaned up cannot be a batch: said so.
    let out = check_table_version(table_dir.to_str().unwrap(), &rules, "2", &[]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["reports"][0]["table"]["skipped"],
        "its commit is no longer in the log (cleaned up after a checkpoint)"
    );

    // The baseline at version 3 is the whole table then: from the checkpoint.
    let profile = dir.path().join("v3.profile");
    let out = driftwatch(&[
        "baseline",
        "--rules",
        rules.to_str().unwrap(),
        "--table-version",
        "3",
        "--output",
        profile.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&profile).unwrap()).unwrap();
    assert_eq!(written["rows"], 600);
    assert_eq!(written["sources"][0], format!("{location}@v3"));

    // An agent that never saw the table starts from the whole table as of
    // its latest version (the earlier commits are gone), then goes on. It
    // watches no folder: the table is all there is.
    let lake = Lake::new(&format!(
        "dataset: events\ntable: {{ format: delta, location: {location}, poll_interval: 100ms }}\nchecks:\n  - row_count: {{ min: 1 }}\n"
    ));
    let args: Vec<String> = [
        "run",
        "--rules",
        lake.path("rules").to_str().unwrap(),
        "--state",
        lake.state().to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]
    .map(String::from)
    .to_vec();
    let agent = Agent::spawn(&lake, &args, &lake.state());
    wait_versions(&lake, &agent, 1);
    writer.append(500); // v5
    wait_versions(&lake, &agent, 2);
    let results = table_results(&lake);
    assert_eq!(
        results,
        vec![
            (
                1,
                format!("{location}@v4"),
                Some(1000),
                "passed".into(),
                "SNAPSHOT".into()
            ),
            (
                2,
                format!("{location}@v5"),
                Some(500),
                "passed".into(),
                "WRITE".into()
            ),
        ]
    );
}

#[test]
fn issue_16_not_a_table_is_a_one_line_error_for_check_and_the_agent() {
    let lake = Lake::new(TABLE_RULES);
    std::fs::create_dir_all(lake.path("table")).unwrap();
    std::fs::write(lake.path("table/part-0.parquet"), b"not parquet").unwrap();
    let location = std::fs::canonicalize(lake.path("table"))
        .unwrap()
        .display()
        .to_string();
    let message = format!(
        "{location}: not a Delta table: no Delta transaction log (`_delta_log/` with commits) in it"
    );

    let rules = lake.path("rules/flights.yaml");
    let out = driftwatch(&[
        "check",
        "--rules",
        rules.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["reports"][0]["error"], message.as_str());

    // The agent: an error on /status (and not ready) and one log line,
    // retried, no crash.
    let agent = Agent::start_unready(&lake, &[]);
    let status = wait_for("the table error on /status", || {
        let status = agent.status();
        status["tables"][0]["error"].is_string().then_some(status)
    });
    assert_eq!(status["tables"][0]["error"], message.as_str());
    assert_eq!(status["agent"]["degraded"]["reason"], message.as_str());
    assert_eq!(agent.get("/readyz").0, 503);
    wait_for("the error log line", || {
        agent
            .log_text()
            .contains("table cannot be read; tried again every poll")
            .then_some(())
    });
    // The folder becomes a table: picked up at the next poll.
    std::fs::remove_file(lake.path("table/part-0.parquet")).unwrap();
    let mut writer = Writer::create(&lake.path("table"));
    writer.append(7);
    wait_versions(&lake, &agent, 2);
    let status = agent.status();
    assert_eq!(status["tables"][0]["error"], Value::Null);
    assert_eq!(status["agent"]["degraded"], Value::Null);
    assert_eq!(agent.get("/readyz").0, 200);
    assert_eq!(
        agent
            .log_text()
            .matches("table cannot be read; tried again every poll")
            .count(),
        1
    );

    // A URL of a scheme no object store has is a rule error, not a folder
    // named `hdfs:`.
    std::fs::write(
        &rules,
        "dataset: events\ntable:\n  format: delta\n  location: hdfs://nn/events\n",
    )
    .unwrap();
    let out = driftwatch(&["rules", "check", rules.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr).trim(),
        format!(
            "error: {}:4:13: `table.location`: `hdfs://` is not a supported location; give a local folder or an s3://, az://, abfss:// or gs:// URL",
            rules.display()
        )
    );
}

/// A table on S3 that cannot be read: a one-line error naming the location
/// for `check` (exit 2), no secret in it; for the agent an error on
/// `/status`, one log line, tried again every poll until the table is there.
#[test]
fn issue_16_tables_on_s3_that_cannot_be_read_are_one_line_errors_retried() {
    let server = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let site = Site::Store(&server, "tables/events");
    site.copy_tree(Path::new(DELTA_FIXTURE), |_| true);
    let wrong_secret = "wrong-secret-5e4d3c2b1a09";
    let with = |name: &str, value: &str| -> Vec<(&'static str, String)> {
        server
            .env()
            .into_iter()
            .map(|(k, v)| (k, if k == name { value.to_string() } else { v }))
            .collect()
    };
    let closed = format!("http://127.0.0.1:{}", crate::object_store::free_port());
    let check = |format: &str, location: &str, env: &[(&'static str, String)]| {
        let rules = dir.path().join("rules.yaml");
        std::fs::write(
            &rules,
            format!("dataset: events\ntable: {{ format: {format}, location: {location} }}\nchecks:\n  - row_count: {{ min: 1 }}\n"),
        )
        .unwrap();
        let out = driftwatch_env(
            &[
                "check",
                "--rules",
                rules.to_str().unwrap(),
                "--format",
                "json",
            ],
            env,
        );
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let error = report["reports"][0]["error"].as_str().unwrap().to_string();
        assert!(!error.contains('\n'), "{error}");
        for secret in [wrong_secret, crate::object_store::SECRET_KEY] {
            assert!(!error.contains(secret), "a secret in: {error}");
        }
        error
    };
    // The table is read (the same check passes with the right settings).
    let rules = dir.path().join("ok.yaml");
    std::fs::write(
        &rules,
        "dataset: events\ntable: { format: delta, location: s3://lake/tables/events }\nchecks:\n  - row_count: { min: 1 }\n",
    )
    .unwrap();
    let out = driftwatch_env(
        &["check", "--rules", rules.to_str().unwrap()],
        &server.env(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        check("delta", "s3://lake/tables/missing", &server.env()),
        "s3://lake/tables/missing: not a Delta table: no Delta transaction log (`_delta_log/` with commits) in it"
    );
    assert_eq!(
        check("iceberg", "s3://lake/tables/missing", &server.env()),
        "s3://lake/tables/missing: not an Iceberg table: no Iceberg metadata (`metadata/` with `*.metadata.json` files) in it"
    );
    for format in ["delta", "iceberg"] {
        for (env, what) in [
            (
                with("AWS_SECRET_ACCESS_KEY", wrong_secret),
                "wrong credentials",
            ),
            (with("AWS_ENDPOINT_URL", &closed), "an unreachable endpoint"),
            (server.env(), "a missing bucket"),
        ] {
            let location = if what == "a missing bucket" {
                "s3://no-such-bucket/tables/events"
            } else {
                "s3://lake/tables/events"
            };
            let error = check(format, location, &env);
            assert!(
                error.starts_with(&format!("{location}: cannot read objects: ")),
                "{format}, {what}: {error}"
            );
            assert_eq!(error.matches(location).count(), 1, "{error}");
        }
    }

    // The agent with refused credentials: the table's error on /status,
    // degraded, one log line, no secret; still running.
    let lake = Lake::new(&site_rules("delta", "s3://lake/tables/events"));
    let env = with("AWS_SECRET_ACCESS_KEY", wrong_secret);
    let agent = Agent::start_unready_with_env(&lake, &[], &env_refs(&env));
    let status = wait_for("the table error on /status", || {
        let status = agent.status();
        status["tables"][0]["error"].is_string().then_some(status)
    });
    let error = status["tables"][0]["error"].as_str().unwrap();
    assert!(
        error.starts_with("s3://lake/tables/events: cannot read objects: "),
        "{error}"
    );
    assert_eq!(status["agent"]["degraded"]["reason"], error);
    assert_eq!(agent.get("/readyz").0, 503);
    // Polled every 100 ms: a few polls later, still one line.
    std::thread::sleep(std::time::Duration::from_millis(600));
    let log = agent.log_text();
    assert_eq!(
        log.matches("table cannot be read; tried again every poll")
            .count(),
        1,
        "{log}"
    );
    for text in [log.as_str(), &agent.get("/status").1] {
        assert!(!text.contains(wrong_secret), "{text}");
    }
    assert_eq!(agent.terminate(), Some(0));
    assert!(lake.results().is_empty());

    // A table not there yet: an error until it is uploaded, then its versions.
    let lake = Lake::new(&site_rules("delta", "s3://lake/tables/later"));
    let env = server.env();
    let agent = Agent::start_unready_with_env(&lake, &[], &env_refs(&env));
    wait_for("the table error on /status", || {
        agent.status()["tables"][0]["error"]
            .is_string()
            .then_some(())
    });
    Site::Store(&server, "tables/later").copy_tree(Path::new(DELTA_FIXTURE), |_| true);
    wait_versions(&lake, &agent, 6);
    assert_eq!(agent.status()["tables"][0]["error"], Value::Null);
    assert_eq!(agent.terminate(), Some(0));
}

/// The Python-written Delta fixture (tests/fixtures/delta/python_table).
const DELTA_FIXTURE: &str = "tests/fixtures/delta/python_table";

/// `driftwatch check INPUT --rules RULES --table-version VERSION --format json`.
fn check_table_version(
    input: &str,
    rules: &Path,
    version: &str,
    env: &[(&'static str, String)],
) -> std::process::Output {
    driftwatch_env(
        &[
            "check",
            input,
            "--rules",
            rules.to_str().unwrap(),
            "--table-version",
            version,
            "--format",
            "json",
        ],
        env,
    )
}

/// Checks every version of the Delta fixture at `input` (its folder, or a
/// copy's URL) against tests/fixtures/delta/expected.json.
fn assert_delta_fixture_read_exactly(input: &str, env: &[(&'static str, String)]) {
    let rules = Path::new("tests/fixtures/delta/rules.yaml");
    let check = |version: &str| -> Value {
        let out = check_table_version(input, rules, version, env);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stderr)))
    };
    let expected = include_str!("../fixtures/delta/expected.json");
    let expected: Value = serde_json::from_str(expected).unwrap();
    for (version, want) in expected.as_object().unwrap() {
        let got = &check(version)["reports"][0];
        assert_eq!(got["error"], Value::Null, "v{version}");
        assert_eq!(&got["rows"], &want["rows"], "v{version}");
        assert_eq!(&got["passed"], &want["passed"], "v{version}");
        assert_eq!(&got["partitions"], &want["partitions"], "v{version}");
        assert_eq!(&got["table"]["operation"], &want["operation"], "v{version}");
        assert_eq!(
            got["table"]["skipped"].is_string(),
            want["skipped"].as_bool().unwrap(),
            "v{version}"
        );
        let failing: Vec<(&str, u64)> = got["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| Some((c["name"].as_str()?, c["failing_rows"].as_u64()?)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let want_failing: Vec<(&str, u64)> = want["failing"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_u64().unwrap()))
            .collect();
        assert_eq!(failing, want_failing, "v{version}");
    }
}

/// tests/fixtures/delta/python_table: written once by the Python
/// `deltalake` package (tests/fixtures/delta/generate.py): a partitioned
/// table with a first write, 2 appends (one into two partitions), an
/// overwrite of one partition, a compaction and a delete.
#[test]
fn issue_16_delta_table_written_by_python_deltalake_is_read_exactly() {
    assert_delta_fixture_read_exactly(DELTA_FIXTURE, &[]);
}

/// The same table uploaded to a real S3 server: the same results, its log
/// and files read through the object store.
#[test]
fn issue_16_delta_table_on_s3_is_read_exactly() {
    let server = S3Server::start();
    let site = Site::Store(&server, "tables/delta");
    site.copy_tree(Path::new(DELTA_FIXTURE), |_| true);
    assert_delta_fixture_read_exactly(&site.location(), &site.env());
}

/// And on Google Cloud Storage (fake-gcs-server).
#[test]
fn issue_16_delta_table_on_gcs_is_read_exactly() {
    let gcs = FakeGcs::start();
    let site = Site::Store(&gcs, "tables/delta");
    site.copy_tree(Path::new(DELTA_FIXTURE), |_| true);
    assert_delta_fixture_read_exactly(&site.location(), &site.env());
}

/// And on Azure Blob Storage (Azurite).
#[test]
fn issue_16_delta_table_on_azure_is_read_exactly() {
    let azurite = Azurite::start();
    let site = Site::Store(&azurite, "tables/delta");
    site.copy_tree(Path::new(DELTA_FIXTURE), |_| true);
    assert_delta_fixture_read_exactly(&site.location(), &site.env());
}

#[test]
fn issue_16_table_key_errors_name_file_line_col() {
    let error = |yaml: &str| -> String {
        match driftwatch::rules::parse_rule_file(Path::new("rules/t.yaml"), yaml) {
            Ok(_) => panic!("accepted:\n{yaml}"),
            Err(e) => e.to_string(),
        }
    };
    assert_eq!(
        error("dataset: t\ntable: { format: delta, location: a, poll_interval: 0s }\n"),
        "rules/t.yaml:2:53: `table.poll_interval` must be more than zero"
    );
    assert_eq!(
        error("dataset: t\ntable:\n  format: delta\n  location: ''\n"),
        "rules/t.yaml:4:13: `table.location` must not be empty"
    );
    assert_eq!(
        error("dataset: t\nmatch: '*.parquet'\ntable: { format: delta, location: a }\n"),
        "rules/t.yaml:3:8: a rule file with `table` takes its batches from the table's versions: remove `match`"
    );
    let e = error("dataset: t\ntable: { format: hudi, location: a }\n");
    assert!(
        e.starts_with("rules/t.yaml:2:18: unknown variant `hudi`, expected one of delta, iceberg"),
        "{e}"
    );
    // A relative location is the rule file's folder's.
    let rules = driftwatch::rules::parse_rule_file(
        Path::new("rules/t.yaml"),
        "dataset: t\ntable: { format: delta, location: ../tables/t, poll_interval: 5s }\n",
    )
    .unwrap();
    let table = rules.table.unwrap();
    assert_eq!(table.location, Path::new("rules/../tables/t"));
    assert_eq!(table.poll_interval, Some(std::time::Duration::from_secs(5)));
}

/// The pyiceberg-written fixture (tests/fixtures/iceberg/python_table).
const ICEBERG_FIXTURE: &str = "tests/fixtures/iceberg/python_table";

/// Checks every snapshot of the Iceberg fixture at `input` (its folder,
/// or a copy's URL; reports name it `location`) against
/// tests/fixtures/iceberg/expected.json, a missing version and a baseline.
fn assert_iceberg_fixture_read_exactly(
    input: &str,
    location: &str,
    env: &[(&'static str, String)],
) {
    let rules = Path::new("tests/fixtures/iceberg/rules.yaml");
    let run = |version: &str| check_table_version(input, rules, version, env);
    let check = |version: &str| -> Value {
        let out = run(version);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stderr)))
    };
    let expected: Value =
        serde_json::from_str(include_str!("../fixtures/iceberg/expected.json")).unwrap();
    let expected = expected.as_object().unwrap();
    assert_eq!(expected.len(), 5);
    for (version, want) in expected {
        let got = &check(version)["reports"][0];
        assert_eq!(got["error"], Value::Null, "v{version}");
        assert_eq!(got["source"], format!("{location}@v{version}"));
        assert_eq!(&got["rows"], &want["rows"], "v{version}");
        assert_eq!(&got["passed"], &want["passed"], "v{version}");
        assert_eq!(&got["partitions"], &want["partitions"], "v{version}");
        assert_eq!(got["table"]["format"], "iceberg");
        assert_eq!(got["table"]["version"], version.parse::<u64>().unwrap());
        assert_eq!(
            &got["table"]["snapshot_id"], &want["snapshot_id"],
            "v{version}"
        );
        assert_eq!(&got["table"]["operation"], &want["operation"], "v{version}");
        assert_eq!(
            got["table"]["skipped"].is_string(),
            want["skipped"].as_bool().unwrap(),
            "v{version}"
        );
        let failing: Vec<(&str, u64)> = got["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| Some((c["name"].as_str()?, c["failing_rows"].as_u64()?)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let want_failing: Vec<(&str, u64)> = want["failing"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_u64().unwrap()))
            .collect();
        assert_eq!(failing, want_failing, "v{version}");
    }
    assert_eq!(
        check("3")["reports"][0]["table"]["skipped"],
        "delete removed 1 file(s) and added none"
    );
    // No such sequence number: exit 2, one line.
    let out = run("9");
    assert_eq!(out.status.code(), Some(2));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["reports"][0]["error"],
        format!("{location}: the Iceberg table has no version 9")
    );

    // A baseline at version 4 is the whole table then: the 25 rows of the
    // overwrite and the 40 of the second append.
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("v4.profile");
    let out = driftwatch_env(
        &[
            "baseline",
            input,
            "--rules",
            rules.to_str().unwrap(),
            "--table-version",
            "4",
            "--output",
            profile.to_str().unwrap(),
        ],
        env,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&profile).unwrap()).unwrap();
    assert_eq!(written["rows"], 65);
    assert_eq!(written["sources"][0], format!("{location}@v4"));
}

/// Checks both snapshots of the pyiceberg-written fixture `fixture`
/// (tests/fixtures/FIXTURE/python_table, its rules.yaml) against `expected`
/// (its expected.json: per version, the rows and the partition values
/// pyiceberg's `to_human_string` gives): each passes with exactly those.
fn assert_partitions_as_pyiceberg_says(fixture: &str, expected: &Value) {
    let rules = PathBuf::from(format!("tests/fixtures/{fixture}/rules.yaml"));
    let expected = expected.as_object().unwrap();
    assert_eq!(expected.len(), 2);
    for (version, want) in expected {
        let out = check_table_version(
            &format!("tests/fixtures/{fixture}/python_table"),
            &rules,
            version,
            &[],
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let got = &report["reports"][0];
        assert_eq!(got["error"], Value::Null, "v{version}");
        assert_eq!(&got["rows"], &want["rows"], "v{version}");
        assert_eq!(&got["partitions"], &want["partitions"], "v{version}");
        assert_eq!(got["passed"], true, "v{version}");
    }
}

/// Identity partitions of every primitive type (tests/fixtures/iceberg_types,
/// written by pyiceberg): each value in the report as pyiceberg's own
/// `to_human_string` gives it — timestamps with and without a zone and
/// with microseconds, decimals at their scale, floats as Python prints
/// them, UUIDs, binary and fixed values in base64. (Before, every type but
/// string, int, long, boolean and date was left out.)
#[test]
fn issue_16_iceberg_identity_partitions_of_every_type_are_reported_as_iceberg_writes_them() {
    let expected: Value =
        serde_json::from_str(include_str!("../fixtures/iceberg_types/expected.json")).unwrap();
    assert_partitions_as_pyiceberg_says("iceberg_types", &expected);
    // All fourteen fields, in both snapshots.
    assert_eq!(expected["1"]["partitions"].as_object().unwrap().len(), 14);
    assert_eq!(expected["2"]["partitions"].as_object().unwrap().len(), 14);
}

/// tests/fixtures/iceberg/python_table: written once by `pyiceberg`
/// (tests/fixtures/iceberg/generate.py): a table partitioned by day with
/// an append, a two-partition append, an overwrite (a `delete` snapshot
/// then an `append`) and a delete of a whole partition. Its metadata names
/// the generator's scratch folder, which does not exist here: paths under
/// the recorded location are read under the fixture's folder.
#[test]
fn issue_16_iceberg_table_written_by_pyiceberg_is_read_exactly() {
    let location = std::fs::canonicalize(ICEBERG_FIXTURE)
        .unwrap()
        .display()
        .to_string();
    assert_iceberg_fixture_read_exactly(ICEBERG_FIXTURE, &location, &[]);
}

/// Issue 16: a table partitioned by every non-identity transform (hour,
/// day, month, year, bucket, truncate), written by pyiceberg. Reports give
/// the partition values the snapshot's files share as Iceberg writes them
/// in paths (expected.json holds pyiceberg's own `to_human_string` of the
/// manifests' values). Only identity fields are column values a scan may
/// add; these never are. Before, only identity fields were reported and
/// these snapshots showed `{}`.
#[test]
fn issue_16_iceberg_transform_partitions_are_reported_as_iceberg_writes_them() {
    let expected: Value =
        serde_json::from_str(include_str!("../fixtures/iceberg_transforms/expected.json")).unwrap();
    assert_partitions_as_pyiceberg_says("iceberg_transforms", &expected);
    // Version 1's one file has all six fields; version 2's four files share
    // four of them (two hours of ts1, two carriers' buckets).
    assert_eq!(expected["1"]["partitions"].as_object().unwrap().len(), 6);
    assert_eq!(expected["2"]["partitions"].as_object().unwrap().len(), 4);
}

/// The same table uploaded to a real S3 server: its metadata, manifests
/// and data files read through the object store, paths under the recorded
/// (local) location read under the table's URL.
#[test]
fn issue_16_iceberg_table_on_s3_is_read_exactly() {
    let server = S3Server::start();
    let site = Site::Store(&server, "warehouse/events");
    site.copy_tree(Path::new(ICEBERG_FIXTURE), |_| true);
    let location = site.location();
    assert_iceberg_fixture_read_exactly(&location, &location, &site.env());
}

/// And on Google Cloud Storage (fake-gcs-server).
#[test]
fn issue_16_iceberg_table_on_gcs_is_read_exactly() {
    let gcs = FakeGcs::start();
    let site = Site::Store(&gcs, "warehouse/events");
    site.copy_tree(Path::new(ICEBERG_FIXTURE), |_| true);
    let location = site.location();
    assert_iceberg_fixture_read_exactly(&location, &location, &site.env());
}

/// The pyiceberg fixture copied to `to` with each metadata file
/// gzip-compressed and renamed by `rename` (given the file's number and
/// its name without `.metadata.json`).
fn iceberg_fixture_gzipped(to: &Path, rename: impl Fn(usize, &str) -> String) {
    use std::io::Write;
    Site::Local(to.to_path_buf()).copy_tree(Path::new(ICEBERG_FIXTURE), |_| true);
    for entry in std::fs::read_dir(to.join("metadata")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let Some(stem) = name.strip_suffix(".metadata.json") else {
            continue;
        };
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&std::fs::read(&path).unwrap()).unwrap();
        let number: usize = stem[..5].parse().unwrap();
        std::fs::write(
            to.join("metadata").join(rename(number, stem)),
            gz.finish().unwrap(),
        )
        .unwrap();
        std::fs::remove_file(&path).unwrap();
    }
}

/// A table file beyond the 256 MiB budget (here a metadata file grown to
/// 300 MiB of zeros, sparse on disk) is a one-line metadata error found
/// from its size, before any of it is read.
#[test]
fn issue_16_iceberg_files_beyond_the_budget_are_errors_not_allocations() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table");
    Site::Local(table.clone()).copy_tree(Path::new(ICEBERG_FIXTURE), |_| true);
    let newest = table.join("metadata/00004-3616421f-debc-45ef-ac07-fbb645ac0019.metadata.json");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&newest)
        .unwrap()
        .set_len(300 << 20)
        .unwrap();
    let out = driftwatch(&[
        "check",
        table.to_str().unwrap(),
        "--rules",
        "tests/fixtures/iceberg/rules.yaml",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let location = std::fs::canonicalize(&table).unwrap().display().to_string();
    assert_eq!(
        report["reports"][0]["error"],
        format!(
            "{location}: cannot read the Iceberg metadata: {}: 314572800 bytes, more than the 256 MiB a table's metadata file may have",
            std::fs::canonicalize(&newest).unwrap().display()
        )
        .as_str()
    );
}

/// Variants of the pyiceberg fixture whose metadata files are
/// gzip-compressed, as Iceberg writers name them with
/// `write.metadata.compression-codec=gzip` (`*.gz.metadata.json`), as older
/// ones did (`*.metadata.json.gz`), and a Hadoop table (`version-hint.text`
/// naming `vN.gz.metadata.json`): read exactly as the plain fixture.
#[test]
fn issue_16_iceberg_gzip_metadata_files_are_read() {
    let dir = tempfile::tempdir().unwrap();
    type Rename = fn(usize, &str) -> String;
    let variants: [(&str, Rename); 3] = [
        ("catalog-gz", |_, stem| format!("{stem}.gz.metadata.json")),
        ("catalog-json-gz", |_, stem| {
            format!("{stem}.metadata.json.gz")
        }),
        ("hadoop-gz", |n, _| format!("v{}.gz.metadata.json", n + 1)),
    ];
    for (name, rename) in variants {
        let table = dir.path().join(name);
        iceberg_fixture_gzipped(&table, rename);
        if name == "hadoop-gz" {
            std::fs::write(table.join("metadata/version-hint.text"), "5").unwrap();
        }
        let location = std::fs::canonicalize(&table).unwrap().display().to_string();
        assert_iceberg_fixture_read_exactly(&location, &location, &[]);
    }
    // A file named gzip that is not: a one-line metadata error.
    let table = dir.path().join("catalog-gz");
    let newest = table.join("metadata/00004-3616421f-debc-45ef-ac07-fbb645ac0019.gz.metadata.json");
    std::fs::write(&newest, b"{ plain json }").unwrap();
    let out = driftwatch(&[
        "check",
        table.to_str().unwrap(),
        "--rules",
        "tests/fixtures/iceberg/rules.yaml",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let location = std::fs::canonicalize(&table).unwrap().display().to_string();
    let error = report["reports"][0]["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!(
            "{location}: cannot read the Iceberg metadata: {}: not gzip: ",
            std::fs::canonicalize(&newest).unwrap().display()
        )),
        "{error}"
    );
}

/// Writes the pyiceberg fixture to `site` with only its first `metadata`
/// metadata files (00000-… to 0000{metadata-1}-…): the table as it was
/// after that commit. Data and manifest files are all written (files of
/// snapshots not yet committed are what a writer leaves before its commit).
fn iceberg_fixture_until(site: &Site, metadata: usize) {
    site.copy_tree(Path::new(ICEBERG_FIXTURE), |relative| {
        match relative
            .strip_prefix("metadata/")
            .and_then(|name| name.strip_suffix(".metadata.json"))
        {
            Some(stem) => stem[..5].parse::<usize>().unwrap() < metadata,
            None => true,
        }
    });
}

/// The rules of the restart tests for a table of `format` at `location`.
fn site_rules(format: &str, location: &str) -> String {
    TABLE_RULES
        .replace("format: delta", &format!("format: {format}"))
        .replace("../table", location)
}

/// The agent follows the Iceberg table at `site` (whose files land while
/// it runs and while it is SIGKILLed): each snapshot reported once, in order.
fn iceberg_snapshots_each_reported_once(lake: &Lake, site: &Site) {
    std::fs::write(
        lake.path("rules/flights.yaml"),
        site_rules("iceberg", &site.location()),
    )
    .unwrap();
    let env = site.env();
    let env = env_refs(&env);
    // The table before its first snapshot: nothing to report yet.
    iceberg_fixture_until(site, 1);
    let location = site.location();
    let agent = Agent::start_with_env(lake, &[], &env);
    let status = wait_for("the empty table polled", || {
        let status = agent.status();
        (status["tables"][0]["format"] == "iceberg").then_some(status)
    });
    assert_eq!(status["tables"][0]["latest_version"], Value::Null);
    assert_eq!(status["tables"][0]["error"], Value::Null);
    // Snapshots 1 and 2 are committed while it runs.
    iceberg_fixture_until(site, 3);
    wait_versions(lake, &agent, 2);
    agent.kill9();

    // While the agent is down: the overwrite (snapshots 3 and 4, one commit).
    iceberg_fixture_until(site, 4);
    let agent = Agent::start_with_env(lake, &[], &env);
    wait_versions(lake, &agent, 4);
    agent.kill9();

    // Down again: the delete (snapshot 5).
    iceberg_fixture_until(site, 5);
    let agent = Agent::start_with_env(lake, &[], &env);
    wait_versions(lake, &agent, 5);

    let at = |v: u64| format!("{location}@v{v}");
    let expected: Vec<(u64, String, Option<u64>, String, String)> = vec![
        (1, at(1), Some(40), "passed".into(), "append".into()),
        (2, at(2), Some(40), "failed".into(), "append".into()),
        (3, at(3), None, "skipped".into(), "delete".into()),
        (4, at(4), Some(25), "passed".into(), "append".into()),
        (5, at(5), None, "skipped".into(), "delete".into()),
    ];
    assert_eq!(table_results(lake), expected, "{}", agent.log_text());
    let results = lake.results();
    let fixture: Value =
        serde_json::from_str(include_str!("../fixtures/iceberg/expected.json")).unwrap();
    for (i, result) in results.iter().enumerate() {
        let version = (i + 1).to_string();
        assert_eq!(result["agent"]["batch"]["kind"], "iceberg");
        assert_eq!(
            result["reports"][0]["table"]["snapshot_id"],
            fixture[&version]["snapshot_id"]
        );
    }
    assert_eq!(results[1]["agent"]["batch"]["parts"], 2);
    assert_eq!(results[1]["reports"][0]["checks"][0]["failing_rows"], 3);
    assert_eq!(results[1]["reports"][0]["checks"][1]["failing_rows"], 2);
    assert_eq!(
        results[4]["reports"][0]["table"]["skipped"],
        "delete removed 1 file(s) and added none"
    );
    let status = agent.status();
    assert_eq!(status["tables"][0]["location"], location.as_str());
    assert_eq!(status["tables"][0]["latest_version"], 5);
    assert_eq!(status["tables"][0]["recorded_version"], 5);
    assert_eq!(status["datasets"][0]["evaluated"], 5);
    assert_eq!(status["datasets"][0]["skipped"], 2);
    assert_eq!(status["datasets"][0]["failed"], 1);
    assert_eq!(status["datasets"][0]["rows"], 105);
    assert_eq!(agent.terminate(), Some(0));
}

#[test]
fn issue_16_iceberg_snapshots_each_reported_once_in_order_across_restarts() {
    let lake = Lake::new(TABLE_RULES);
    iceberg_snapshots_each_reported_once(&lake, &Site::Local(lake.path("table")));
}

#[test]
fn issue_16_iceberg_snapshots_on_s3_each_reported_once_across_restarts() {
    let server = S3Server::start();
    let lake = Lake::new(TABLE_RULES);
    iceberg_snapshots_each_reported_once(&lake, &Site::Store(&server, "warehouse/events"));
}

#[test]
fn issue_16_iceberg_snapshots_on_azure_each_reported_once_across_restarts() {
    let azurite = Azurite::start();
    let lake = Lake::new(TABLE_RULES);
    iceberg_snapshots_each_reported_once(&lake, &Site::Store(&azurite, "warehouse/events"));
}

#[test]
fn issue_16_iceberg_snapshots_on_gcs_each_reported_once_across_restarts() {
    let gcs = FakeGcs::start();
    let lake = Lake::new(TABLE_RULES);
    iceberg_snapshots_each_reported_once(&lake, &Site::Store(&gcs, "warehouse/events"));
}

/// Writes the Python-written Delta fixture to `site` with only its first
/// `commits` log entries: the table as it was after that commit.
fn delta_fixture_until(site: &Site, commits: usize) {
    site.copy_tree(Path::new(DELTA_FIXTURE), |relative| {
        match relative
            .strip_prefix("_delta_log/")
            .and_then(|name| name.strip_suffix(".json"))
        {
            Some(stem) => stem.parse::<usize>().unwrap() < commits,
            None => true,
        }
    });
}

/// The agent follows the Delta fixture at `site` revealed a few commits at
/// a time, SIGKILLed in between: each version once, in order, as
/// tests/fixtures/delta/expected.json says.
fn delta_versions_each_reported_once(lake: &Lake, site: &Site) {
    std::fs::write(
        lake.path("rules/flights.yaml"),
        site_rules("delta", &site.location()),
    )
    .unwrap();
    let env = site.env();
    let env = env_refs(&env);
    delta_fixture_until(site, 2);
    let location = site.location();
    let agent = Agent::start_with_env(lake, &[], &env);
    wait_versions(lake, &agent, 2);
    agent.kill9();
    // Commits 2 and 3 while it is down.
    delta_fixture_until(site, 4);
    let agent = Agent::start_with_env(lake, &[], &env);
    wait_versions(lake, &agent, 4);
    agent.kill9();
    delta_fixture_until(site, 6);
    let agent = Agent::start_with_env(lake, &[], &env);
    wait_versions(lake, &agent, 6);

    let expected: Value =
        serde_json::from_str(include_str!("../fixtures/delta/expected.json")).unwrap();
    let want: Vec<(u64, String, Option<u64>, String, String)> = expected
        .as_object()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, (version, want))| {
            let skipped = want["skipped"].as_bool().unwrap();
            let outcome = if skipped {
                "skipped"
            } else if want["passed"] == true {
                "passed"
            } else {
                "failed"
            };
            (
                i as u64 + 1,
                format!("{location}@v{version}"),
                (!skipped).then(|| want["rows"].as_u64().unwrap()),
                outcome.to_string(),
                want["operation"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(want.len(), 6);
    assert_eq!(table_results(lake), want, "{}", agent.log_text());
    let status = agent.status();
    assert_eq!(status["tables"][0]["location"], location.as_str());
    assert_eq!(status["tables"][0]["recorded_version"], 5);
    assert_eq!(status["tables"][0]["error"], Value::Null);
    assert_eq!(agent.terminate(), Some(0));
}

#[test]
fn issue_16_delta_fixture_versions_each_reported_once_across_restarts() {
    let lake = Lake::new(TABLE_RULES);
    delta_versions_each_reported_once(&lake, &Site::Local(lake.path("table")));
}

#[test]
fn issue_16_delta_versions_on_s3_each_reported_once_across_restarts() {
    let server = S3Server::start();
    let lake = Lake::new(TABLE_RULES);
    delta_versions_each_reported_once(&lake, &Site::Store(&server, "tables/events"));
}

#[test]
fn issue_16_not_an_iceberg_table_is_a_one_line_error_for_check_and_the_agent() {
    let lake = Lake::new(&TABLE_RULES.replace("format: delta", "format: iceberg"));
    std::fs::create_dir_all(lake.path("table/metadata")).unwrap();
    std::fs::write(lake.path("table/metadata/notes.txt"), b"no table here").unwrap();
    let location = std::fs::canonicalize(lake.path("table"))
        .unwrap()
        .display()
        .to_string();
    let message = format!(
        "{location}: not an Iceberg table: no Iceberg metadata (`metadata/` with `*.metadata.json` files) in it"
    );
    let rules = lake.path("rules/flights.yaml");
    let out = driftwatch(&[
        "check",
        "--rules",
        rules.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["reports"][0]["error"], message.as_str());

    // A metadata file that is not JSON: the metadata cannot be read.
    std::fs::write(lake.path("table/metadata/v1.metadata.json"), b"{ not json").unwrap();
    let out = driftwatch(&[
        "check",
        "--rules",
        rules.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let error = report["reports"][0]["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!(
            "{location}: cannot read the Iceberg metadata: {location}/metadata/v1.metadata.json: key must be a string"
        )),
        "{error}"
    );
    assert!(!error.contains('\n'));
    std::fs::remove_file(lake.path("table/metadata/v1.metadata.json")).unwrap();

    // The agent: an error on /status, retried, no crash; then the folder
    // becomes a table and its snapshots are reported.
    let agent = Agent::start_unready(&lake, &[]);
    let status = wait_for("the table error on /status", || {
        let status = agent.status();
        status["tables"][0]["error"].is_string().then_some(status)
    });
    assert_eq!(status["tables"][0]["error"], message.as_str());
    assert_eq!(status["agent"]["degraded"]["reason"], message.as_str());
    iceberg_fixture_until(&Site::Local(lake.path("table")), 2);
    wait_versions(&lake, &agent, 1);
    let status = agent.status();
    assert_eq!(status["tables"][0]["error"], Value::Null);
    assert_eq!(status["tables"][0]["recorded_version"], 1);
    assert_eq!(
        agent
            .log_text()
            .matches("table cannot be read; tried again every poll")
            .count(),
        1
    );
}
