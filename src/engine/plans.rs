//! Plans kept per shape of batch, so that a lake landing many small files of
//! one shape plans once, not once per file.
//!
//! Why: for a 27,000-row file with nine checks, opening and planning (the
//! footer read twice for the schema and its statistics, compiling the
//! rules, DataFusion's logical and physical optimizers) took longer than the
//! scan itself (3.8 ms against 2.9 ms, issue 19). A physical plan here is a
//! tree of operators over one `DataSourceExec` leaf; for another file of the
//! same shape it differs only in the file that leaf reads. DataFusion
//! supports executing a plan again (`ExecutionPlan::reset_state`): the leaf
//! is rebuilt for the new file and every other operator is reset, so each
//! run has fresh operator state and metrics and answers exactly as a plan
//! made for that file.
//!
//! A plan is reused only where that is certain to hold:
//! - the key matches: the same rule file (its full parsed form, so an edit
//!   or a reload that changes anything is a new key), the same profile
//!   request, the same Hive partition values (they are constants in the
//!   plan) and the same Parquet schema, byte for byte (the file's schema tree
//!   and its embedded Arrow schema, from which DataFusion infers the table's);
//! - both files are single local files below the size from which DataFusion
//!   splits a file into byte ranges, so a fresh plan would also read them as
//!   one partition (profiles depend on how rows are split: same input, same
//!   answer) — folders, table versions and object-store batches are planned
//!   afresh;
//! - neither file declares a sort order (it would change the plan's
//!   properties);
//! - the plan reads the file (DataFusion did not answer it from the first
//!   file's statistics) and its expressions are evaluated per run: no
//!   function folded into a constant at planning (`now()`, `current_date`)
//!   and no subquery.
//!
//! The cache holds at most [`CAPACITY`] plans (a few hundred KB each at
//! most); the least recently used goes first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::common::Statistics;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{
    FileGroup, FileScanConfig, FileScanConfigBuilder, FileSource, ParquetSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{Expr, Volatility};
use datafusion::physical_plan::ExecutionPlan;
use object_store::ObjectMeta;
use parquet::file::metadata::ParquetMetaData;

use super::compile::{CompiledRules, ProfileRequest};
use crate::rules::RuleFile;

/// Plans kept at most.
pub(super) const CAPACITY: usize = 32;

/// What a plan depends on besides the file it reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct PlanKey {
    rules: String,
    request: String,
    partitions: Vec<(String, String)>,
    schema: String,
}

impl PlanKey {
    /// The key of a batch whose footer is `footer`, or None when the file
    /// declares a sort order (see the module doc).
    pub(super) fn new(
        rules: &RuleFile,
        request: &ProfileRequest,
        partitions: &std::collections::BTreeMap<String, String>,
        footer: &ParquetMetaData,
    ) -> Option<Self> {
        if footer
            .row_groups()
            .iter()
            .any(|g| g.sorting_columns().is_some_and(|s| !s.is_empty()))
        {
            return None;
        }
        let file = footer.file_metadata();
        let mut schema = Vec::new();
        parquet::schema::printer::print_schema(
            &mut schema,
            file.schema_descr().root_schema_ptr().as_ref(),
        );
        let mut schema = String::from_utf8_lossy(&schema).into_owned();
        // The embedded Arrow schema decides types the Parquet schema leaves
        // open (timestamps' zones, dictionaries, views).
        for kv in file.key_value_metadata().into_iter().flatten() {
            if kv.key == "ARROW:schema" {
                schema.push('\n');
                schema.push_str(kv.value.as_deref().unwrap_or(""));
            }
        }
        Some(Self {
            rules: rules_key(rules),
            request: format!("{request:?}"),
            partitions: partitions
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            schema,
        })
    }
}

/// Everything in a rule file that can change a plan, as text. The compiled
/// `match` glob is left out — its `Debug` form dumps the regex automaton and
/// cost 4 M instructions per file, 15 % of a small file's evaluation
/// (callgrind, issue 19) — because the glob as written decides it. The
/// destructuring is exhaustive so that a new field cannot be forgotten.
fn rules_key(rules: &RuleFile) -> String {
    let RuleFile {
        path,
        dataset,
        match_glob,
        matcher: _,
        checks,
        drift,
        batch,
        webhooks,
        table,
    } = rules;
    format!(
        "{path:?}|{dataset:?}|{match_glob:?}|{checks:?}|{drift:?}|{batch:?}|{webhooks:?}|{table:?}"
    )
}

/// A plan made for one file, ready to be pointed at another.
pub(super) struct Template {
    physical: Arc<dyn ExecutionPlan>,
    /// The file the plan was made for, as DataFusion described it.
    file: PartitionedFile,
    pub(super) compiled: CompiledRules,
    pub(super) schema: Vec<(String, String)>,
}

impl Template {
    /// A template of `physical`, or None when it must not be reused (see the
    /// module doc).
    pub(super) fn of(
        physical: &Arc<dyn ExecutionPlan>,
        compiled: &CompiledRules,
        schema: &[(String, String)],
    ) -> Option<Self> {
        if compiled.outputs.iter().any(folded_at_planning) {
            return None;
        }
        let mut files = Vec::new();
        let mut leaves = 0;
        physical
            .apply(|node| {
                if let Some(exec) = node.downcast_ref::<DataSourceExec>() {
                    leaves += 1;
                    if let Some(config) = exec.data_source().downcast_ref::<FileScanConfig>()
                        && config.limit.is_none()
                        && config.output_ordering.is_empty()
                        && config.file_groups.len() == 1
                        && fresh_source(&config.file_source).is_some()
                    {
                        files.extend(config.file_groups[0].iter().cloned());
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
            .ok()?;
        let [file] = <[PartitionedFile; 1]>::try_from(files).ok()?;
        if leaves != 1
            || file.range.is_some()
            || file.ordering.is_some()
            || !file.partition_values.is_empty()
        {
            return None;
        }
        Some(Self {
            physical: physical.clone(),
            file,
            compiled: compiled.clone(),
            schema: schema.to_vec(),
        })
    }

    /// The plan, reading the file `meta` names instead.
    pub(super) fn rebind(
        &self,
        meta: ObjectMeta,
    ) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        let mut file = self.file.clone();
        file.object_meta = meta;
        // The first file's statistics say nothing of this one.
        file.statistics = None;
        self.physical
            .clone()
            .transform_up(|node| {
                if let Some(exec) = node.downcast_ref::<DataSourceExec>()
                    && let Some(config) = exec.data_source().downcast_ref::<FileScanConfig>()
                {
                    let unknown =
                        Statistics::new_unknown(config.file_source.table_schema().table_schema());
                    let source = fresh_source(&config.file_source).ok_or_else(|| {
                        DataFusionError::Internal("a kept plan's scan changed".to_string())
                    })?;
                    let config = FileScanConfigBuilder::from(config.clone())
                        .with_source(source)
                        .with_file_groups(vec![FileGroup::new(vec![file.clone()])])
                        .with_statistics(unknown)
                        .build();
                    let leaf: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(config);
                    return Ok(Transformed::yes(leaf));
                }
                Ok(Transformed::yes(node.reset_state()?))
            })
            .map(|t| t.data)
    }
}

/// A Parquet source reading what `source` reads, with metrics of its own.
///
/// Why: a `ParquetSource` registers every file it opens in its metrics set,
/// which lives as long as the source; reused across files it would grow
/// without bound (the `parquet_engine` fuzz target saw 1.8 GB after 1.4 M
/// files). None for anything this cannot rebuild exactly: another format, a
/// predicate (none is in the plans made here).
fn fresh_source(source: &Arc<dyn FileSource>) -> Option<Arc<dyn FileSource>> {
    let old = source.downcast_ref::<ParquetSource>()?;
    if old.filter().is_some() {
        return None;
    }
    let options = old.table_parquet_options().clone();
    let hint = options.global.metadata_size_hint;
    let mut fresh =
        ParquetSource::new(old.table_schema().clone()).with_table_parquet_options(options);
    if let Some(hint) = hint {
        fresh = fresh.with_metadata_size_hint(hint);
    }
    // The reader factory DataFusion set at planning reads through the
    // session's object store and holds no per-file state: shared.
    if let Some(factory) = old.parquet_file_reader_factory() {
        fresh = fresh.with_parquet_file_reader_factory(factory.clone());
    }
    match old.projection() {
        Some(projection) => fresh.try_pushdown_projection(projection).ok().flatten(),
        None => Some(Arc::new(fresh)),
    }
}

/// Whether `expr` has a part DataFusion computes once at planning (a
/// stable function such as `now()`, folded into a constant) or a subquery.
fn folded_at_planning(expr: &Expr) -> bool {
    expr.exists(|e| {
        Ok(match e {
            Expr::ScalarFunction(f) => f.func.signature().volatility == Volatility::Stable,
            Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_) => true,
            _ => false,
        })
    })
    .unwrap_or(true)
}

/// The templates, least recently used first out.
#[derive(Default)]
pub(super) struct PlanCache {
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    plans: HashMap<PlanKey, (Arc<Template>, u64)>,
    clock: u64,
}

impl PlanCache {
    pub(super) fn get(&self, key: &PlanKey) -> Option<Arc<Template>> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.clock += 1;
        let now = entries.clock;
        let (template, used) = entries.plans.get_mut(key)?;
        *used = now;
        Some(template.clone())
    }

    pub(super) fn insert(&self, key: PlanKey, template: Template) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.clock += 1;
        let now = entries.clock;
        if entries.plans.len() >= CAPACITY && !entries.plans.contains_key(&key) {
            let oldest = entries
                .plans
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                entries.plans.remove(&oldest);
            }
        }
        entries.plans.insert(key, (Arc::new(template), now));
    }

    /// Metrics registered in the kept plans' scans (for tests).
    #[cfg(test)]
    fn scan_metrics(&self) -> usize {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut n = 0;
        for (template, _) in entries.plans.values() {
            let _ = template.physical.apply(|node| {
                if let Some(exec) = node.downcast_ref::<DataSourceExec>()
                    && let Some(config) = exec.data_source().downcast_ref::<FileScanConfig>()
                {
                    n += config.file_source.metrics().clone_inner().iter().count();
                }
                Ok(TreeNodeRecursion::Continue)
            });
        }
        n
    }

    /// Plans kept now (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .plans
            .len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use chrono::DateTime;

    use crate::demo::{DEMO_RULES, Defects, FlightsSpec, write_flights};
    use crate::engine::{BatchInput, Engine, EngineOptions, ProfileRequest};
    use crate::rules::{RuleFile, parse_rule_file};

    fn flights(dir: &Path, name: &str, spec: FlightsSpec) -> PathBuf {
        let path = dir.join(name);
        write_flights(&path, &spec).expect("write flights");
        path
    }

    /// The report and profile of `path` as JSON: what a user sees.
    async fn answer(
        engine: &Engine,
        path: &Path,
        partitions: &BTreeMap<String, String>,
        rules: &RuleFile,
        request: &ProfileRequest,
    ) -> (serde_json::Value, serde_json::Value) {
        let input = BatchInput {
            path,
            source: "batch",
            partitions,
            files: &[],
        };
        let now = DateTime::from_timestamp(1_357_100_000, 0).expect("a time");
        let evaluation = engine.evaluate_batch(&input, rules, now, request).await;
        assert_eq!(evaluation.report.error, None);
        (
            serde_json::to_value(&evaluation.report).expect("report json"),
            serde_json::to_value(&evaluation.profile).expect("profile json"),
        )
    }

    #[tokio::test]
    async fn issue_19_a_kept_plan_answers_exactly_as_a_plan_made_for_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = [
            flights(
                dir.path(),
                "a.parquet",
                FlightsSpec {
                    rows: 3_000,
                    seed: 1,
                    ..Default::default()
                },
            ),
            flights(
                dir.path(),
                "b[1].parquet",
                FlightsSpec {
                    rows: 4_321,
                    seed: 2,
                    first_row_id: 50_000,
                    delay_shift: 40,
                    defects: Defects {
                        null_dep_delay_every: Some(7),
                        bad_origin_every: Some(11),
                        duplicate_row_id_every: Some(13),
                        bad_tailnum_every: Some(17),
                        negative_distance_every: Some(19),
                    },
                    ..Default::default()
                },
            ),
            flights(
                dir.path(),
                "c.parquet",
                FlightsSpec {
                    rows: 1_500,
                    seed: 3,
                    ..Default::default()
                },
            ),
        ];
        let rules = parse_rule_file(Path::new("flights.yaml"), DEMO_RULES).expect("rules");
        let kept = Engine::new(&EngineOptions::default()).expect("engine");
        let none = BTreeMap::new();
        let day = BTreeMap::from([("day".to_string(), "2013-01-02".to_string())]);
        for request in [ProfileRequest::None, ProfileRequest::AllSupported] {
            for partitions in [&none, &day] {
                for file in &files {
                    let fresh = Engine::new(&EngineOptions::default()).expect("engine");
                    let expected = answer(&fresh, file, partitions, &rules, &request).await;
                    assert_eq!(fresh.plans.len(), 1, "the first plan is kept");
                    let got = answer(&kept, file, partitions, &rules, &request).await;
                    assert_eq!(
                        got,
                        expected,
                        "{} {request:?} {partitions:?}",
                        file.display()
                    );
                }
            }
        }
        // One plan per (request, partition values): the files share one.
        assert_eq!(kept.plans.len(), 4);
        // Runs of a kept plan leave nothing behind in it (a scan's metrics
        // grow with every file it opens).
        let before = kept.plans.scan_metrics();
        for _ in 0..5 {
            answer(&kept, &files[2], &none, &rules, &ProfileRequest::None).await;
        }
        assert_eq!(kept.plans.scan_metrics(), before);
        // The defects of the second file (and its 40-minute delay shift)
        // are seen through a kept plan.
        let got = answer(&kept, &files[1], &none, &rules, &ProfileRequest::None)
            .await
            .0;
        let failed: Vec<&str> = got["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .filter(|c| c["status"] == "fail")
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(
            failed,
            [
                "unique_row_id",
                "not_null_dep_delay",
                "range_distance",
                "range_dep_delay",
                "accepted_values_origin",
                "regex_tailnum",
                "mean_arrival_delay_jfk"
            ]
        );
        assert_eq!(got["rows"], 4_321);
    }

    #[tokio::test]
    async fn issue_19_a_count_answered_from_statistics_is_never_reused() {
        // `row_count` alone is an aggregate DataFusion can answer from the
        // footer's statistics without reading the file: that plan holds the
        // first file's count as a constant and must not be kept.
        let dir = tempfile::tempdir().expect("tempdir");
        let rules = parse_rule_file(
            Path::new("count.yaml"),
            "dataset: flights\nchecks:\n  - row_count: { min: 1, max: 2000 }\n",
        )
        .expect("rules");
        let engine = Engine::new(&EngineOptions::default()).expect("engine");
        let none = BTreeMap::new();
        for (name, rows, passed) in [("a.parquet", 1_000, true), ("b.parquet", 2_500, false)] {
            let path = flights(
                dir.path(),
                name,
                FlightsSpec {
                    rows,
                    ..Default::default()
                },
            );
            let (report, _) = answer(&engine, &path, &none, &rules, &ProfileRequest::None).await;
            assert_eq!(report["rows"], rows);
            assert_eq!(report["passed"], passed, "{report}");
        }
        // DataFusion did answer it from statistics: nothing kept.
        assert_eq!(engine.plans.len(), 0);
    }

    #[tokio::test]
    async fn issue_19_a_plan_with_now_or_a_changed_schema_or_rule_file_is_planned_afresh() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = flights(
            dir.path(),
            "a.parquet",
            FlightsSpec {
                rows: 1_000,
                ..Default::default()
            },
        );
        let engine = Engine::new(&EngineOptions::default()).expect("engine");
        let none = BTreeMap::new();
        // `now()` is folded into a constant when planning.
        let now_rules = parse_rule_file(
            Path::new("now.yaml"),
            "dataset: flights\nchecks:\n  - expr: \"time_hour < now()\"\n",
        )
        .expect("rules");
        answer(&engine, &path, &none, &now_rules, &ProfileRequest::None).await;
        assert_eq!(engine.plans.len(), 0);
        // A rule file that differs in anything is another plan.
        for max in [10, 20] {
            let rules = parse_rule_file(
                Path::new("r.yaml"),
                &format!("dataset: flights\nchecks:\n  - range: {{ column: distance, min: 0, max: {max} }}\n"),
            )
            .expect("rules");
            answer(&engine, &path, &none, &rules, &ProfileRequest::None).await;
        }
        assert_eq!(engine.plans.len(), 2);
        // Another schema (one column fewer) is another plan.
        let other = dir.path().join("other.parquet");
        {
            let file = std::fs::File::open(&path).expect("open");
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .expect("reader")
                    .build()
                    .expect("reader");
            let batches: Vec<_> = reader.map(|b| b.expect("batch")).collect();
            let schema = batches[0].schema();
            let keep: Vec<usize> = (0..schema.fields().len())
                .filter(|i| schema.field(*i).name() != "carrier")
                .collect();
            let projected = schema.project(&keep).expect("project");
            let mut writer = parquet::arrow::ArrowWriter::try_new(
                std::fs::File::create(&other).expect("create"),
                std::sync::Arc::new(projected),
                None,
            )
            .expect("writer");
            for batch in &batches {
                writer
                    .write(&batch.project(&keep).expect("project"))
                    .expect("write");
            }
            writer.close().expect("close");
        }
        let rules = parse_rule_file(
            Path::new("r.yaml"),
            "dataset: flights\nchecks:\n  - range: { column: distance, min: 0, max: 20 }\n",
        )
        .expect("rules");
        answer(&engine, &other, &none, &rules, &ProfileRequest::None).await;
        assert_eq!(engine.plans.len(), 3);
    }
}
