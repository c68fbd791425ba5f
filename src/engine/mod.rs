//! The engine: evaluates a rule file against one batch in a single scan.
//!
//! [`Engine::evaluate`] opens the batch with DataFusion, compiles every check
//! into expressions over aggregates ([`compile`]), plans them as **one**
//! `Aggregate → Projection` over **one** Parquet scan (only the columns the
//! rules use are read), runs it under a bounded memory pool, and turns the one
//! resulting row into verdicts ([`verdict`]). The engine knows nothing about
//! where batches come from or where reports go.

mod compile;
mod duplicates;
pub mod guard;
mod plans;
mod profiler;
mod ranges;
mod verdict;
mod view_counts;

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::common::DFSchema;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::DataFusionError;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::utils::find_aggregate_exprs;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, col, lit};
use datafusion::physical_plan::{ExecutionPlan, collect, displayable};
use datafusion::prelude::{DataFrame, ParquetReadOptions, SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;
use futures::FutureExt;

use crate::report::BatchReport;
use crate::rules::RuleFile;

pub use compile::{Compiled, CompiledRules, ProfileRequest, is_string};
pub use profiler::profile_kind;

use crate::profile::{ColumnProfile, DatasetProfile};

/// A batch's verdicts and, when requested, its column profiles.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The verdicts.
    pub report: BatchReport,
    /// The profiles of the requested columns (None when the batch could not be read).
    pub profile: Option<DatasetProfile>,
    /// How long each stage took.
    pub timings: Timings,
    /// Set when the batch could not be evaluated because of the environment
    /// (see [`EngineError::Environment`]): `report` then only says so and
    /// must not be recorded as the batch's verdict.
    pub environment: Option<String>,
    /// The evaluation ran out of `evaluation.timeout`: an error report, but
    /// not a sign that the file is bad (the agent does not quarantine it).
    pub timed_out: bool,
    /// The environment fault was the memory pool or a spill budget running
    /// out (tried a few times only, then recorded).
    pub out_of_memory: bool,
    /// The batch's own columns and their types as reports describe them
    /// (None when it could not be read): what the agent compares with the
    /// previous batch's.
    pub schema: Option<Vec<(String, String)>>,
}

impl Evaluation {
    /// An evaluation that scanned nothing (a table version that added no
    /// data, or a table that could not be read): its report alone.
    pub fn without_scan(report: BatchReport) -> Self {
        Evaluation {
            report,
            profile: None,
            timings: Timings::default(),
            environment: None,
            timed_out: false,
            out_of_memory: false,
            schema: None,
        }
    }
}

/// Whether a DataFusion failure came from the environment rather than from
/// the batch's bytes: an I/O error other than invalid or truncated data
/// (descriptors, permissions, a full disk, a vanished file, EIO) anywhere in
/// its chain, an object store's error other than a missing object (network,
/// credentials, throttling), or an exhausted memory pool or spill budget.
///
/// Why: data errors are verdicts (recorded, the file quarantined), but a
/// transient fault recorded as a verdict would never be evaluated again.
pub fn is_environment_fault(e: &DataFusionError) -> bool {
    if is_memory_fault(e) {
        return true;
    }
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        // An object store that cannot be reached, refuses the credentials
        // or throttles is the environment; an object that is not there (any
        // more) is that version's answer, as a vanished file's would be if
        // it could not be told from a transient fault.
        if let Some(store) = err.downcast_ref::<object_store::Error>() {
            return !matches!(store, object_store::Error::NotFound { .. });
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return !matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::InvalidInput
            );
        }
        next = err.source();
    }
    false
}

/// Whether a failure is the memory pool or a spill budget running out: an
/// environment fault that may also be the batch's own size, so the agent
/// tries such a batch a few times only
/// ([`crate::agent::health::MEMORY_TRIES`]) before it becomes a verdict.
pub fn is_memory_fault(e: &DataFusionError) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(DataFusionError::ResourcesExhausted(_)) = err.downcast_ref::<DataFusionError>()
        {
            return true;
        }
        next = err.source();
    }
    false
}

/// The engine error for a failure reading `path`: [`EngineError::Environment`]
/// or [`EngineError::Input`].
fn read_error(path: &Path, e: &DataFusionError) -> EngineError {
    let reason = compile::one_line(&e.strip_backtrace());
    let path = path.display().to_string();
    if is_environment_fault(e) {
        EngineError::Environment {
            path,
            reason,
            memory: is_memory_fault(e),
        }
    } else {
        EngineError::Input { path, reason }
    }
}

/// The guard's verdict on `path` as an engine error: refused Thrift is the
/// input's fault; a read that failed is classified like any other.
fn guarded(path: &Path, check: guard::Result<()>) -> Result<()> {
    match check {
        Ok(()) => Ok(()),
        Err(guard::GuardError::Invalid(reason)) => Err(EngineError::Input {
            path: path.display().to_string(),
            reason: format!("not a valid Parquet file: {reason}"),
        }),
        Err(guard::GuardError::Io(e)) => Err(read_error(path, &DataFusionError::IoError(e))),
    }
}

/// Time spent per stage of one evaluation (for traces and metrics).
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// Opening the batch and planning: footer, schema, compiling the rules.
    pub read: std::time::Duration,
    /// The scan: every check and profile in one aggregate.
    pub scan: std::time::Duration,
    /// Drift tests on the profiles (set by [`crate::evaluate`]).
    pub drift: std::time::Duration,
}

/// One batch to evaluate.
#[derive(Debug, Clone, Copy)]
pub struct BatchInput<'a> {
    /// A Parquet file, or a folder whose `*.parquet` files form the batch
    /// (with `files`: the table the files belong to, for messages).
    pub path: &'a Path,
    /// How the batch is named in the report.
    pub source: &'a str,
    /// Hive partition values from the batch's path (`day=2024-05-01/…`).
    pub partitions: &'a BTreeMap<String, String>,
    /// When not empty, the batch is exactly these Parquet files (a table
    /// version's added files), scanned as one table; `path` is not read.
    pub files: &'a [FileInput],
}

/// One Parquet file of a batch given as a list of files, with the
/// partition values its table gives it (columns the file does not hold).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInput {
    /// The file.
    pub path: std::path::PathBuf,
    /// Partition column → value (absent: null).
    pub partitions: BTreeMap<String, String>,
}

/// Engine errors. Input errors are the user's (a missing or corrupt file);
/// `Internal` means a bug in driftwatch or DataFusion.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The input could not be opened or read as Parquet.
    #[error("{path}: cannot read Parquet input: {reason}")]
    Input {
        /// The input path.
        path: String,
        /// One-line reason.
        reason: String,
    },
    /// The engine could not be set up.
    #[error("cannot set up the query engine: {source}")]
    Setup {
        /// The DataFusion error.
        source: DataFusionError,
    },
    /// The environment failed while reading or evaluating the batch (I/O
    /// other than invalid data, descriptors, memory, a full disk): not a
    /// verdict on the batch, which is to be tried again.
    #[error("{path}: cannot evaluate now: {reason}")]
    Environment {
        /// The input path.
        path: String,
        /// One-line reason.
        reason: String,
        /// The memory pool or a spill budget ran out (see [`is_memory_fault`]).
        memory: bool,
    },
    /// The evaluation ran longer than `evaluation.timeout` and was stopped
    /// (its scan cancelled): recorded as the batch's error report. Neither
    /// the data's nor the environment's fault as such — a rule too costly
    /// for the batch, or a machine too busy.
    #[error("{path}: evaluation exceeded {}", timeout_text(*limit))]
    Timeout {
        /// The input path.
        path: String,
        /// The timeout.
        limit: std::time::Duration,
    },
    /// A plan that should have worked did not.
    #[error("internal error evaluating {path}: {reason} (this is a bug; please report it)")]
    Internal {
        /// The input path.
        path: String,
        /// One-line reason.
        reason: String,
    },
}

/// A timeout as configured: `15m`; `250ms` or `1.5s` when not whole seconds.
fn timeout_text(limit: std::time::Duration) -> String {
    if limit.subsec_nanos() != 0 {
        format!("{limit:?}")
    } else {
        crate::rules::format_duration(limit)
    }
}

/// A `Result` whose error is an [`EngineError`].
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// Resource settings for evaluation.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// Memory DataFusion may use for evaluation, in bytes (default: 1 GiB).
    pub memory_limit: Option<usize>,
    /// Parallelism of a scan (default: the number of cores).
    pub target_partitions: Option<usize>,
    /// Smallest file DataFusion splits into several scan partitions
    /// (DataFusion's default: 1 MiB). Mostly for tests of the parallel path.
    pub split_files_from_bytes: Option<usize>,
    /// Memory one `unique` check keeps per scan partition before it spills
    /// sorted runs to disk (default: an eighth of `memory_limit`).
    pub unique_budget: Option<usize>,
    /// Folder for spill files (default: the system's temporary folder).
    pub spill_dir: Option<std::path::PathBuf>,
    /// Longest one batch's evaluation (planning and scan) may take before it
    /// is cancelled with [`EngineError::Timeout`] (default
    /// [`DEFAULT_EVALUATION_TIMEOUT`]).
    pub evaluation_timeout: Option<std::time::Duration>,
    /// How clients for object-store batches (`s3://…`) are built.
    pub object_store: crate::location::ObjectStoreOptions,
}

/// Default memory pool size: plenty for aggregates over sketches, small
/// enough for a sidecar.
pub const DEFAULT_MEMORY_LIMIT: usize = 1 << 30;

/// Default `evaluation.timeout`: generous, since a legitimate scan of a
/// large batch on a busy machine can take minutes; it only bounds the
/// pathological ones.
pub const DEFAULT_EVALUATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Evaluates rule files against batches.
pub struct Engine {
    ctx: SessionContext,
    timeout: std::time::Duration,
    object_store: crate::location::ObjectStoreOptions,
    /// Plans kept per shape of batch (see [`plans`]).
    plans: plans::PlanCache,
}

/// The planned form of one evaluation, before execution.
struct Planned {
    physical: Arc<dyn ExecutionPlan>,
    compiled: CompiledRules,
    /// The batch's own columns (not partition values) and their types.
    schema: Vec<(String, String)>,
}

/// A batch that is one small local file (see [`Engine::plan`]).
struct SmallFile {
    /// The file as DataFusion's object store names it.
    meta: object_store::ObjectMeta,
    /// Its footer, when the parquet crate decodes it.
    footer: Option<parquet::file::metadata::ParquetMetaData>,
}

const AGG_PREFIX: &str = "__driftwatch_agg_";
const OUT_PREFIX: &str = "__driftwatch_out_";

impl Engine {
    /// A new engine with its own memory pool.
    pub fn new(options: &EngineOptions) -> Result<Self> {
        // No caches of file listings, footers or statistics: each batch
        // version is read once, so a cache only grows (up to ~70 MiB by
        // default) and, worse, could serve a stale listing of a folder batch
        // whose parts changed.
        let caches = CacheManagerConfig::default()
            .with_metadata_cache_limit(0)
            .with_file_statistics_cache_limit(0)
            .with_list_files_cache_limit(0);
        let runtime = RuntimeEnvBuilder::new()
            .with_cache_manager(caches)
            .with_memory_limit(options.memory_limit.unwrap_or(DEFAULT_MEMORY_LIMIT), 1.0)
            .build_arc()
            .map_err(|source| EngineError::Setup { source })?;
        let mut config = SessionConfig::new().with_information_schema(false);
        if let Some(n) = options.target_partitions {
            config = config.with_target_partitions(n.max(1));
        }
        // Same input, same answer: each scan partition must always see the same
        // rows, so partial profiles (whose sketches depend on their input) are
        // reproducible. Byte-range file splits are deterministic; round-robin
        // redistribution of batches and work stealing between scan partitions
        // are not (they follow thread timing), so both are off. Scans still
        // run in parallel, one byte range per partition.
        let options_mut = config.options_mut();
        options_mut.optimizer.enable_round_robin_repartition = false;
        options_mut.execution.enable_file_stream_work_stealing = false;
        if let Some(bytes) = options.split_files_from_bytes {
            config.options_mut().optimizer.repartition_file_min_size = bytes;
        }
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        let limit = options.memory_limit.unwrap_or(DEFAULT_MEMORY_LIMIT);
        ctx.register_udaf(duplicates::Duplicates::udaf(duplicates::SpillConfig {
            budget: options.unique_budget.unwrap_or(limit / 8),
            dir: options.spill_dir.clone(),
        }));
        Ok(Self {
            ctx,
            timeout: options
                .evaluation_timeout
                .unwrap_or(DEFAULT_EVALUATION_TIMEOUT),
            object_store: options.object_store.clone(),
            plans: plans::PlanCache::default(),
        })
    }

    /// How this engine's object-store clients are built (`check` and
    /// `baseline` read tables with the same settings).
    pub fn object_store(&self) -> &crate::location::ObjectStoreOptions {
        &self.object_store
    }

    /// Evaluates `rules` against the Parquet batch at `path`. Never fails:
    /// an unreadable batch becomes a report with `error` set, and checks that
    /// cannot run on this batch become `status: error` verdicts.
    pub async fn evaluate(
        &self,
        path: &Path,
        source: &str,
        rules: &RuleFile,
        now: DateTime<Utc>,
    ) -> BatchReport {
        self.evaluate_with_profiles(path, source, rules, now, &ProfileRequest::None)
            .await
            .report
    }

    /// Like [`Engine::evaluate`], also profiling the requested columns in the
    /// same scan.
    pub async fn evaluate_with_profiles(
        &self,
        path: &Path,
        source: &str,
        rules: &RuleFile,
        now: DateTime<Utc>,
        request: &ProfileRequest,
    ) -> Evaluation {
        let input = BatchInput {
            path,
            source,
            partitions: &BTreeMap::new(),
            files: &[],
        };
        self.evaluate_batch(&input, rules, now, request).await
    }

    /// Evaluates one batch — a file, or a folder of part files scanned as
    /// one table — with its Hive partition values usable as columns.
    pub async fn evaluate_batch(
        &self,
        input: &BatchInput<'_>,
        rules: &RuleFile,
        now: DateTime<Utc>,
        request: &ProfileRequest,
    ) -> Evaluation {
        let (path, source) = (input.path, input.source);
        let started = std::time::Instant::now();
        let mut timings = Timings::default();
        // No credential ever reaches a report, a log line or `/status`.
        let message = |e: &EngineError| crate::location::redact(&e.to_string(), &self.object_store);
        let failed = |e: EngineError, timings: Timings| Evaluation {
            environment: matches!(e, EngineError::Environment { .. }).then(|| message(&e)),
            timed_out: matches!(e, EngineError::Timeout { .. }),
            out_of_memory: matches!(e, EngineError::Environment { memory: true, .. }),
            report: BatchReport::failed(
                source.to_string(),
                rules.dataset.clone(),
                rules.path.display().to_string(),
                message(&e),
            )
            .with_partitions(input.partitions),
            profile: None,
            timings,
            schema: None,
        };
        // The parquet and arrow crates panic on some corrupt files (found by
        // fuzzing, issue 15); DataFusion re-raises a task's panic here. A
        // file's bytes must give an input error, not kill the worker.
        let contained = |panic: Box<dyn std::any::Any + Send>| EngineError::Input {
            path: path.display().to_string(),
            reason: format!(
                "the Parquet reader failed: {}",
                crate::sources::stream::http::panic_message(panic.as_ref())
            ),
        };
        // One deadline for planning (footers are read there) and the scan;
        // dropping the future on expiry cancels the scan's tasks.
        let deadline = tokio::time::Instant::now() + self.timeout;
        let timed_out = || EngineError::Timeout {
            path: path.display().to_string(),
            limit: self.timeout,
        };
        let planned = match tokio::time::timeout_at(
            deadline,
            AssertUnwindSafe(self.plan(input, rules, request)).catch_unwind(),
        )
        .await
        .map(|r| r.unwrap_or_else(|panic| Err(contained(panic))))
        {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                timings.read = started.elapsed();
                return failed(e, timings);
            }
            Err(_) => {
                timings.read = started.elapsed();
                return failed(timed_out(), timings);
            }
        };
        timings.read = started.elapsed();
        // Planning used the whole budget: the scan is not started. (The
        // timer alone may fire late while the runtime stays busy.)
        if tokio::time::Instant::now() >= deadline {
            return failed(timed_out(), timings);
        }
        let values = match tokio::time::timeout_at(
            deadline,
            AssertUnwindSafe(self.execute(path, &planned)).catch_unwind(),
        )
        .await
        .map(|r| r.unwrap_or_else(|panic| Err(contained(panic))))
        {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                timings.scan = started.elapsed() - timings.read;
                return failed(e, timings);
            }
            Err(_) => {
                timings.scan = started.elapsed() - timings.read;
                return failed(timed_out(), timings);
            }
        };
        let profile = match self.collect_profiles(path, source, rules, &planned.compiled, &values) {
            Ok(p) => p,
            Err(e) => {
                timings.scan = started.elapsed() - timings.read;
                return failed(e, timings);
            }
        };
        timings.scan = started.elapsed() - timings.read;
        Evaluation {
            report: verdict::build_report(source, rules, &planned.compiled, &values, now)
                .with_partitions(input.partitions),
            profile,
            timings,
            environment: None,
            timed_out: false,
            out_of_memory: false,
            schema: Some(planned.schema),
        }
    }

    fn collect_profiles(
        &self,
        path: &Path,
        source: &str,
        rules: &RuleFile,
        compiled: &CompiledRules,
        values: &[ScalarValue],
    ) -> Result<Option<DatasetProfile>> {
        if compiled.profiles.is_empty() && compiled.unprofiled.is_empty() {
            return Ok(None);
        }
        let mut profile = DatasetProfile::new(rules.dataset.clone());
        for (column, reason) in &compiled.unprofiled {
            profile.unprofiled.insert(column.clone(), reason.clone());
        }
        profile.sources.push(source.to_string());
        profile.rows = match values.get(compiled.rows) {
            Some(ScalarValue::Int64(Some(n))) => u64::try_from(*n).unwrap_or(0),
            _ => 0,
        };
        for (column, index) in &compiled.profiles {
            let bytes = match values.get(*index) {
                Some(ScalarValue::LargeBinary(Some(b))) => b,
                other => {
                    return Err(EngineError::Internal {
                        path: path.display().to_string(),
                        reason: format!("profile of `{column}` missing: {other:?}"),
                    });
                }
            };
            let column_profile: ColumnProfile =
                serde_json::from_slice(bytes).map_err(|e| EngineError::Internal {
                    path: path.display().to_string(),
                    reason: format!("profile of `{column}`: {e}"),
                })?;
            profile.columns.insert(column.clone(), column_profile);
        }
        Ok(Some(profile))
    }

    /// The physical plan `evaluate` would run, as text (for `EXPLAIN`-style tests and debugging).
    pub async fn explain(
        &self,
        path: &Path,
        rules: &RuleFile,
        request: &ProfileRequest,
    ) -> Result<String> {
        let input = BatchInput {
            path,
            source: "",
            partitions: &BTreeMap::new(),
            files: &[],
        };
        let planned = self.plan(&input, rules, request).await?;
        Ok(displayable(planned.physical.as_ref())
            .indent(true)
            .to_string())
    }

    /// Opens the batch at `path`; `guard_checked` when [`guard`] has
    /// already passed it.
    async fn open(&self, path: &Path, guard_checked: bool) -> Result<DataFrame> {
        if let Some(url) = crate::location::ObjectUrl::from_path(path) {
            return self.open_object(path, url).await;
        }
        let meta = std::fs::metadata(path).map_err(|e| {
            let e = DataFusionError::IoError(e);
            read_error(path, &e)
        })?;
        let is_dir = meta.is_dir();
        // An empty file is not an empty table: no writer produces one.
        if !is_dir && meta.len() == 0 {
            return Err(EngineError::Input {
                path: path.display().to_string(),
                reason: "not a Parquet file: 0 bytes".to_string(),
            });
        }
        // Thrift the parquet crate would spend unbounded time skipping is
        // refused before it sees the file (see `guard`).
        if !guard_checked {
            guarded(path, guard::check_batch(path))?;
        }
        // A file: any extension (the caller decided it is a batch). A folder
        // of part files: its `*.parquet` files, which leaves out `_SUCCESS`,
        // `.crc` and other writer leftovers.
        let options =
            ParquetReadOptions::default().file_extension(if is_dir { ".parquet" } else { "" });
        // As a `file://` URL, never a path: DataFusion reads `[`, `*`, `?`
        // and `{` in a path as a glob, so `a[1].parquet` would be read as
        // `a1.parquet`. A URL names exactly one file (or folder).
        let absolute = std::path::absolute(path).map_err(|e| {
            let e = DataFusionError::IoError(e);
            read_error(path, &e)
        })?;
        let url = if is_dir {
            url::Url::from_directory_path(&absolute)
        } else {
            url::Url::from_file_path(&absolute)
        }
        .map_err(|()| EngineError::Input {
            path: path.display().to_string(),
            reason: "cannot be named as a file URL".to_string(),
        })?;
        self.ctx
            .read_parquet(url.to_string(), options)
            .await
            .map_err(|e| read_error(path, &e))
    }

    /// Opens exactly `files` as one table: one scan per set of partition
    /// values, each with its values as constant columns (null where a file
    /// has none), unioned. Returns the frame, the files' own schema and the
    /// partition columns added.
    async fn open_files(
        &self,
        table: &Path,
        files: &[FileInput],
    ) -> Result<(DataFrame, DFSchema, Vec<String>)> {
        let mut groups: BTreeMap<&BTreeMap<String, String>, Vec<String>> = BTreeMap::new();
        for file in files {
            // An object (a table on an object store): scanned through the
            // store registered for its bucket, with ranged reads. One the
            // log names but the store lacks is the scan's NotFound, a
            // verdict like a missing local file below.
            if let Some(url) = crate::location::ObjectUrl::from_path(&file.path) {
                let url = self.object_url(&file.path, url)?;
                let scan_url = url.scan_url(false).map_err(|e| EngineError::Input {
                    path: file.path.display().to_string(),
                    reason: e.to_string(),
                })?;
                groups
                    .entry(&file.partitions)
                    .or_default()
                    .push(scan_url.to_string());
                continue;
            }
            // A file the log names but the folder lacks (vacuumed, deleted by
            // hand) is the table's state, not a passing fault: a verdict.
            match std::fs::metadata(&file.path) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(EngineError::Input {
                        path: table.display().to_string(),
                        reason: format!(
                            "data file {} is missing (removed since the version was written)",
                            file.path.display()
                        ),
                    });
                }
                Err(e) => return Err(read_error(&file.path, &DataFusionError::IoError(e))),
            }
            guarded(&file.path, guard::check_file(&file.path).map(|_| ()))?;
            let absolute = std::path::absolute(&file.path)
                .map_err(|e| read_error(&file.path, &DataFusionError::IoError(e)))?;
            let url = url::Url::from_file_path(&absolute).map_err(|()| EngineError::Input {
                path: file.path.display().to_string(),
                reason: "cannot be named as a file URL".to_string(),
            })?;
            groups
                .entry(&file.partitions)
                .or_default()
                .push(url.to_string());
        }
        let keys: std::collections::BTreeSet<&String> =
            files.iter().flat_map(|f| f.partitions.keys()).collect();
        let mut frames = Vec::new();
        let mut data_schema = None;
        for (partitions, urls) in groups {
            let mut df = self
                .ctx
                .read_parquet(urls, ParquetReadOptions::default().file_extension(""))
                .await
                .map_err(|e| read_error(table, &e))?;
            let schema = df.schema().clone();
            for key in &keys {
                if schema.field_with_unqualified_name(key).is_ok() {
                    continue;
                }
                let value = match partitions.get(*key) {
                    Some(v) => lit(v.clone()),
                    None => lit(ScalarValue::Utf8(None)),
                };
                df = df
                    .with_column(key, value)
                    .map_err(|e| EngineError::Internal {
                        path: table.display().to_string(),
                        reason: compile::one_line(&e.strip_backtrace()),
                    })?;
            }
            data_schema.get_or_insert(schema);
            frames.push(df);
        }
        let mut frames = frames.into_iter();
        let (Some(first), Some(data_schema)) = (frames.next(), data_schema) else {
            return Err(EngineError::Input {
                path: table.display().to_string(),
                reason: "the batch has no data files".to_string(),
            });
        };
        let mut df = first;
        for other in frames {
            // Files of one version may differ in schema (evolution): a
            // union that does not line up is the batch's error.
            df = df.union(other).map_err(|e| EngineError::Input {
                path: table.display().to_string(),
                reason: compile::one_line(&e.strip_backtrace()),
            })?;
        }
        let added = keys
            .into_iter()
            .filter(|k| data_schema.field_with_unqualified_name(k).is_err())
            .cloned()
            .collect();
        Ok((df, data_schema, added))
    }

    /// The object URL `path` carries, with a client for its bucket
    /// registered with the session (built on first use).
    fn object_url(
        &self,
        path: &Path,
        url: std::result::Result<crate::location::ObjectUrl, crate::location::LocationError>,
    ) -> Result<crate::location::ObjectUrl> {
        let input = |reason: String| EngineError::Input {
            path: path.display().to_string(),
            reason,
        };
        let url = url.map_err(|e| input(e.to_string()))?;
        let store_url = url.store_url().map_err(|e| input(e.to_string()))?;
        let runtime = self.ctx.runtime_env();
        if runtime.object_store_registry.get_store(&store_url).is_err() {
            // A client that cannot be built (a malformed endpoint, no region
            // anywhere) is the setup's fault, not the object's.
            let store = crate::location::build_store(&url, &self.object_store).map_err(|e| {
                EngineError::Environment {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                    memory: false,
                }
            })?;
            runtime.register_object_store(&store_url, store);
        }
        Ok(url)
    }

    /// Opens an object (or, for a key ending in `/`, the `*.parquet` objects
    /// under that prefix) through the store registered for its bucket, which
    /// is built on first use. DataFusion then reads the footer and only the
    /// needed column chunks with ranged GETs: nothing is downloaded whole.
    async fn open_object(
        &self,
        path: &Path,
        url: std::result::Result<crate::location::ObjectUrl, crate::location::LocationError>,
    ) -> Result<DataFrame> {
        let input = |reason: String| EngineError::Input {
            path: path.display().to_string(),
            reason,
        };
        let url = self.object_url(path, url)?;
        let folder = url.key.ends_with('/');
        let scan_url = url.scan_url(folder).map_err(|e| input(e.to_string()))?;
        let options =
            ParquetReadOptions::default().file_extension(if folder { ".parquet" } else { "" });
        self.ctx
            .read_parquet(scan_url.to_string(), options)
            .await
            .map_err(|e| read_error(path, &e))
    }

    /// Opens the batch and adds each Hive partition value the file does not
    /// already have as a constant column, so `where: "day = '2024-05-01'"`
    /// works; returns the names added.
    async fn open_with_partitions(
        &self,
        input: &BatchInput<'_>,
        guard_checked: bool,
    ) -> Result<(DataFrame, DFSchema, Vec<String>)> {
        let (path, partitions) = (input.path, input.partitions);
        if !input.files.is_empty() {
            return self.open_files(path, input.files).await;
        }
        let mut df = self.open(path, guard_checked).await?;
        let data_schema = df.schema().clone();
        let mut added = Vec::new();
        for (key, value) in partitions {
            if data_schema.field_with_unqualified_name(key).is_ok() {
                continue;
            }
            df = df
                .with_column(key, lit(value.clone()))
                .map_err(|e| EngineError::Internal {
                    path: path.display().to_string(),
                    reason: compile::one_line(&e.strip_backtrace()),
                })?;
            added.push(key.clone());
        }
        Ok((df, data_schema, added))
    }

    /// Plans the evaluation: from a kept plan when the batch has the shape
    /// of one planned before (see [`plans`]), afresh otherwise.
    async fn plan(
        &self,
        input: &BatchInput<'_>,
        rules: &RuleFile,
        request: &ProfileRequest,
    ) -> Result<Planned> {
        let Some(file) = self.small_local_file(input)? else {
            return self.plan_afresh(input, rules, request, false).await;
        };
        let key = file
            .footer
            .as_ref()
            .and_then(|footer| plans::PlanKey::new(rules, request, input.partitions, footer));
        if let Some(template) = key.as_ref().and_then(|k| self.plans.get(k)) {
            let physical = template
                .rebind(file.meta)
                .map_err(|e| EngineError::Internal {
                    path: input.path.display().to_string(),
                    reason: compile::one_line(&e.strip_backtrace()),
                })?;
            return Ok(Planned {
                physical,
                compiled: template.compiled.clone(),
                schema: template.schema.clone(),
            });
        }
        let planned = self.plan_afresh(input, rules, request, true).await?;
        if let Some(key) = key
            && let Some(template) =
                plans::Template::of(&planned.physical, &planned.compiled, &planned.schema)
        {
            self.plans.insert(key, template);
        }
        Ok(planned)
    }

    /// The batch when it is one local file that DataFusion reads as one
    /// partition (below the size it splits files from), checked by
    /// [`guard`], with its footer; None for anything else.
    fn small_local_file(&self, input: &BatchInput<'_>) -> Result<Option<SmallFile>> {
        let path = input.path;
        if !input.files.is_empty() || crate::location::ObjectUrl::from_path(path).is_some() {
            return Ok(None);
        }
        let Ok(meta) = std::fs::metadata(path) else {
            return Ok(None);
        };
        let options = self.ctx.state().config().options().optimizer.clone();
        let split_from = if options.repartition_file_scans {
            options.repartition_file_min_size as u64
        } else {
            u64::MAX
        };
        if !meta.is_file() || meta.len() == 0 || meta.len() >= split_from {
            return Ok(None);
        }
        let Some(url) = std::path::absolute(path)
            .ok()
            .and_then(|a| url::Url::from_file_path(a).ok())
        else {
            return Ok(None);
        };
        let Ok(location) = object_store::path::Path::from_url_path(url.path()) else {
            return Ok(None);
        };
        let footer = match guard::check_file(path) {
            Ok(footer) => footer,
            Err(e) => return guarded(path, Err(e)).map(|()| None),
        };
        Ok(Some(SmallFile {
            meta: object_store::ObjectMeta {
                location,
                last_modified: meta
                    .modified()
                    .map(DateTime::<Utc>::from)
                    .unwrap_or_default(),
                size: meta.len(),
                e_tag: None,
                version: None,
            },
            footer,
        }))
    }

    async fn plan_afresh(
        &self,
        input: &BatchInput<'_>,
        rules: &RuleFile,
        request: &ProfileRequest,
        guard_checked: bool,
    ) -> Result<Planned> {
        let path = input.path;
        let (df, data_schema, partition_columns) =
            self.open_with_partitions(input, guard_checked).await?;
        let columns: Vec<(String, String)> = data_schema
            .fields()
            .iter()
            .map(|f| {
                (
                    f.name().clone(),
                    crate::rules::describe_arrow_type(f.data_type()),
                )
            })
            .collect();
        let schema = df.schema().clone();
        let scan = df.into_unoptimized_plan();
        let compile_all = |rules: &RuleFile| {
            let mut compiled = compile::compile(&self.ctx, &schema, rules, request);
            compile::exclude_partitions(&mut compiled, &data_schema, rules, &partition_columns);
            compiled
        };
        let mut compiled = compile_all(rules);
        match self.physical(&scan, &compiled.outputs).await {
            Ok(physical) => {
                // Ranges are balanced for the plan that runs only, so a
                // large file's footer is not read again for every check
                // planned alone below.
                return Ok(Planned {
                    physical: ranges::balance(physical, &self.ctx).await,
                    compiled,
                    schema: columns,
                });
            }
            Err(whole) => {
                // Some check type-checked but does not plan. Find the culprits
                // one by one, report them as errors and plan the rest.
                let mut any = false;
                for (check, slot) in rules.checks.iter().zip(compiled.checks.iter_mut()) {
                    if matches!(slot, Compiled::Invalid(_) | Compiled::Schema(_)) {
                        continue;
                    }
                    let (outputs, _) = compile::compile_single(&self.ctx, &schema, check);
                    if let Err(e) = self.physical(&scan, &outputs).await {
                        *slot = Compiled::Invalid(format!(
                            "{}: {}",
                            check.location,
                            compile::one_line(&e.strip_backtrace())
                        ));
                        any = true;
                    }
                }
                if !any {
                    return Err(EngineError::Internal {
                        path: path.display().to_string(),
                        reason: compile::one_line(&whole.strip_backtrace()),
                    });
                }
            }
        }
        // Rebuild without the invalid checks.
        let mut valid = rules.clone();
        let keep: Vec<bool> = compiled
            .checks
            .iter()
            .map(|c| !matches!(c, Compiled::Invalid(_)))
            .collect();
        let mut it = keep.iter();
        valid.checks.retain(|_| *it.next().unwrap_or(&false));
        let rebuilt = compile_all(&valid);
        let physical =
            self.physical(&scan, &rebuilt.outputs)
                .await
                .map_err(|e| EngineError::Internal {
                    path: path.display().to_string(),
                    reason: compile::one_line(&e.strip_backtrace()),
                })?;
        // Merge: invalid slots stay, valid ones take the rebuilt indices.
        let mut rebuilt_checks = rebuilt.checks.into_iter();
        let checks = compiled
            .checks
            .into_iter()
            .map(|c| match c {
                Compiled::Invalid(m) => Compiled::Invalid(m),
                _ => rebuilt_checks
                    .next()
                    .unwrap_or_else(|| Compiled::Invalid("internal: check lost".to_string())),
            })
            .collect();
        Ok(Planned {
            physical: ranges::balance(physical, &self.ctx).await,
            schema: columns,
            compiled: CompiledRules {
                outputs: rebuilt.outputs,
                checks,
                rows: rebuilt.rows,
                profiles: rebuilt.profiles,
                unprofiled: rebuilt.unprofiled,
            },
        })
    }

    /// Plans `outputs` as one aggregate over the scan, then a projection.
    async fn physical(
        &self,
        scan: &LogicalPlan,
        outputs: &[Expr],
    ) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        let aggregates = find_aggregate_exprs(outputs.iter());
        let index: HashMap<&Expr, usize> =
            aggregates.iter().enumerate().map(|(i, e)| (e, i)).collect();
        let projections = outputs
            .iter()
            .enumerate()
            .map(|(k, output)| {
                let rebased = output
                    .clone()
                    .transform_down(|e| match index.get(&e) {
                        Some(i) => Ok(Transformed::new(
                            col(format!("{AGG_PREFIX}{i}")),
                            true,
                            TreeNodeRecursion::Jump,
                        )),
                        None => Ok(Transformed::no(e)),
                    })?
                    .data;
                Ok(rebased.alias(format!("{OUT_PREFIX}{k}")))
            })
            .collect::<Result<Vec<_>, DataFusionError>>()?;
        let aliased = aggregates
            .iter()
            .enumerate()
            .map(|(i, e)| e.clone().alias(format!("{AGG_PREFIX}{i}")));
        let plan = LogicalPlanBuilder::from(scan.clone())
            .aggregate(Vec::<Expr>::new(), aliased)?
            .project(projections)?
            .build()?;
        self.ctx.state().create_physical_plan(&plan).await
    }

    async fn execute(&self, path: &Path, planned: &Planned) -> Result<Vec<ScalarValue>> {
        let batches = collect(planned.physical.clone(), self.ctx.task_ctx())
            .await
            .map_err(|e| read_error(path, &e))?;
        let batch =
            batches
                .iter()
                .find(|b| b.num_rows() > 0)
                .ok_or_else(|| EngineError::Internal {
                    path: path.display().to_string(),
                    reason: "the aggregate returned no row".to_string(),
                })?;
        (0..batch.num_columns())
            .map(|i| {
                ScalarValue::try_from_array(batch.column(i), 0).map_err(|e| EngineError::Internal {
                    path: path.display().to_string(),
                    reason: compile::one_line(&e.strip_backtrace()),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Evaluates `bytes` as a Parquet file with a small rule file; the report's error.
    async fn error_of(bytes: &[u8]) -> (String, Option<String>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("batch.parquet");
        std::fs::write(&path, bytes).unwrap();
        let rules = crate::rules::parse_rule_file(
            Path::new("t.yaml"),
            "dataset: t\nchecks:\n  - not_null: i\n",
        )
        .unwrap();
        let engine = Engine::new(&EngineOptions::default()).unwrap();
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let report = engine.evaluate(&path, "batch.parquet", &rules, now).await;
        (path.display().to_string(), report.error)
    }

    #[tokio::test]
    async fn issue_15_fuzz_corrupt_parquet_is_an_input_error_not_a_panic() {
        // A footer whose embedded Arrow schema has a 2^24-bit integer.
        let (path, error) = error_of(include_bytes!(
            "../../fuzz/corpus/parquet_engine/crash-arrow-schema-int-width"
        ))
        .await;
        assert_eq!(
            error.as_deref(),
            Some(
                format!(
                    "{path}: cannot read Parquet input: the Parquet reader failed: \
                     Int type with bit width of 16777216 and signed of false not supported"
                )
                .as_str()
            )
        );
        // `.AR1PAR1`: a footer length larger than the file (an overflow the
        // parquet crate checks only with debug assertions).
        let (_, error) = error_of(include_bytes!(
            "../../fuzz/corpus/parquet_engine/crash-footer-length-overflow"
        ))
        .await;
        let error = error.expect("an error");
        assert!(error.contains("cannot read Parquet input"), "{error}");
    }

    #[tokio::test]
    async fn issue_15_fuzz_a_uuid_list_past_the_end_of_a_page_header_is_an_error_not_a_hang() {
        // Found by CI's parquet_read run (2,445 bytes): a page header with
        // an overlong varint, then an unknown field holding a list that
        // claims 794,820,607 UUIDs. The parquet crate skipped UUIDs past the
        // end of the page bytes without reading and spun for minutes; the
        // patched crate (vendor/parquet/PATCHES.md) stops at the end. The
        // evaluation runs on its own thread so that a regression fails this
        // test after a generous deadline instead of hanging the suite.
        let (done, wait) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            let result = runtime.block_on(error_of(include_bytes!(
                "../../fuzz/corpus/parquet_engine/timeout-overlong-varint-uuid-list"
            )));
            let _ = done.send(result);
        });
        let (path, error) = wait
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("the evaluation ends");
        assert_eq!(
            error.as_deref(),
            Some(
                format!(
                    "{path}: cannot read Parquet input: Arrow error: Parquet argument error: \
                     External: failed to fill whole buffer"
                )
                .as_str()
            )
        );
    }
}
