//! The rule file exactly as a user writes it: the serde model of the YAML.
//!
//! These structs are the *surface syntax*. They derive `Deserialize` (with
//! `deny_unknown_fields`, so a typo is an error, never a silently ignored key)
//! and `JsonSchema` (so `driftwatch rules schema` gives editors completion).
//! Values whose errors we must point at are wrapped in [`Spanned`] to keep
//! their line and column. Turning this into the validated model the engine
//! uses is the job of [`super::parse`]; nothing here interprets meaning.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

/// One rule file: the checks that apply to one dataset.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleFileSpec {
    /// A name for the dataset, used in reports and telemetry.
    pub dataset: String,
    /// Which files this rule file applies to: a glob relative to the watched
    /// root (or to the PATH given to `driftwatch check`). Default: `**/*.parquet`.
    #[serde(rename = "match", default)]
    pub match_glob: Option<String>,
    /// What one batch is: `file` (default) or `directory` (a folder of part
    /// files, complete when `_SUCCESS` appears or after the settle time).
    #[serde(default)]
    pub batch: super::BatchUnit,
    /// The checks, evaluated together in one scan of each batch.
    #[serde(default)]
    #[schemars(with = "Vec<CheckSpec>")]
    pub checks: Vec<Spanned<CheckSpec>>,
    /// Drift tests of this dataset's batches against a reference profile.
    #[schemars(with = "Option<DriftSpec>")]
    pub drift: Option<Spanned<DriftSpec>>,
    /// Retraining webhooks (by their `name` in `driftwatch.toml`) that watch
    /// this dataset, besides any that list it in their `datasets`.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub webhooks: Vec<Spanned<String>>,
    /// The dataset is a table, not files in a watched folder: each new table
    /// version's added data files are one batch (`match` and `batch` do not
    /// apply).
    #[schemars(with = "Option<TableSpec>")]
    pub table: Option<Spanned<TableSpec>>,
}

/// The `table:` section.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    /// The table format: `delta` (Delta Lake) or `iceberg` (Apache Iceberg).
    pub format: super::TableFormat,
    /// The table's folder (the one holding `_delta_log/`, or Iceberg's
    /// `metadata/`): an absolute path, or relative to this rule file's folder;
    /// or its object-store URL (`s3://bucket/prefix/table`, `az://…`,
    /// `abfss://…`, `gs://…`), reached with `[lake.object_store]`.
    /// Give `location` or `catalog`, not both.
    #[schemars(with = "Option<String>")]
    pub location: Option<Spanned<String>>,
    /// An Iceberg table an Iceberg REST catalog keeps (Polaris, Unity
    /// Catalog, Gravitino, Lakekeeper, Nessie, …): the catalog says where
    /// its current metadata is. Instead of `location`; `format: iceberg` only.
    #[schemars(with = "Option<CatalogSpec>")]
    pub catalog: Option<Spanned<CatalogSpec>>,
    /// How often the agent looks for new versions, e.g. `30s` (default: the
    /// agent's `lake.poll_interval`).
    #[schemars(with = "Option<String>")]
    pub poll_interval: Option<Spanned<String>>,
}

/// `table.catalog`: an Iceberg REST catalog and the table in it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogSpec {
    /// The catalog's base URL (`http://` or `https://`), the part before
    /// `/v1/…` in its REST paths, e.g. `https://polaris.example.com/api/catalog`.
    #[schemars(with = "String")]
    pub uri: Spanned<String>,
    /// The path prefix after `/v1/` (a catalog's name or environment). The
    /// catalog's `/v1/config` `overrides.prefix` wins over it and its
    /// `defaults.prefix` is the default, as the REST spec orders them.
    pub prefix: Option<String>,
    /// The warehouse to ask `/v1/config` for (sent as `?warehouse=`).
    pub warehouse: Option<String>,
    /// The table's namespace: a name, or a list of levels (`[sales, eu]`).
    #[schemars(with = "NamespaceSpec")]
    pub namespace: Spanned<NamespaceSpec>,
    /// The table's name in the namespace.
    #[schemars(with = "String")]
    pub table: Spanned<String>,
    /// An environment variable holding a bearer token for the catalog.
    pub token_env: Option<String>,
    /// A file holding a bearer token, read again at every request (a
    /// mounted secret that is rotated in place).
    pub token_file: Option<String>,
}

/// A namespace: one level, or a list of levels.
#[derive(Debug, JsonSchema)]
#[serde(untagged)]
pub enum NamespaceSpec {
    /// A single-level namespace.
    One(String),
    /// A multi-level namespace, outermost first.
    Levels(Vec<String>),
}

// By hand rather than `untagged`: an untagged enum's error says only "did
// not match any variant", and YAML 1.1 plain scalars such as `n` or `on`
// arrive as booleans, which are names here.
impl<'de> Deserialize<'de> for NamespaceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = NamespaceSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a namespace name or a list of its levels")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(NamespaceSpec::One(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Err(E::custom(format!(
                    "`{v}` reads as a boolean: quote the namespace's name"
                )))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut levels = Vec::new();
                while let Some(level) = seq.next_element::<String>()? {
                    levels.push(level);
                }
                Ok(NamespaceSpec::Levels(levels))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// The `drift:` section.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DriftSpec {
    /// A profile file written by `driftwatch baseline`, relative to this rule
    /// file (`check --reference` overrides it); or `{ rolling: { batches: N } }`:
    /// the merged profiles of the dataset's previous N batches.
    pub reference: Option<ReferenceSpec>,
    /// Columns to test; default: every column of a supported type in the reference.
    pub columns: Option<Vec<String>>,
    /// Per-column test and threshold, instead of the default choice.
    #[serde(default)]
    pub overrides: BTreeMap<String, DriftOverrideSpec>,
    /// Dataset drift when the share of drifted columns is at least this (default 0.5).
    pub drift_share: Option<f64>,
    /// Multiple-testing correction of p-value tests: `none` (default), `bonferroni`, `fdr_bh`.
    pub correction: Option<CorrectionSpec>,
    /// `error` (default): dataset drift fails the batch; `warn`: reported only.
    pub severity: Option<SeveritySpec>,
    /// Distinct categories counted exactly per column (default 65,536, at
    /// most 1,048,576); past it a column keeps its heavy hitters and an
    /// "other" count, and its categorical statistics take the sketched path.
    pub max_categories: Option<u64>,
    /// Which default test each column gets: `evidently` (default; Evidently
    /// 0.7's choice), `sound` (two-sample homogeneity tests instead of
    /// Evidently's goodness-of-fit `chisquare`) or `p_values` (p-value tests
    /// whatever the size: `ks`, `chisquare_homogeneity`, `z`; the default
    /// with `sequential`).
    #[schemars(with = "Option<DriftDefaults>")]
    pub defaults: Option<Spanned<DriftDefaults>>,
    /// Bound the false alarms over many windows instead of testing each
    /// window alone (agent and multi-input `check`): `{ windows: T,
    /// false_alarm: α }` — the probability of any false alarm in the dataset
    /// within T windows is at most α (docs/drift.md).
    #[schemars(with = "Option<SequentialSpec>")]
    pub sequential: Option<Spanned<SequentialSpec>>,
}

/// `drift.sequential`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SequentialSpec {
    /// The horizon T, in windows (batches) of the dataset (default 1,000).
    pub windows: Option<u64>,
    /// The probability of any false alarm in the dataset within `windows`
    /// (default 0.05).
    pub false_alarm: Option<f64>,
}

/// The default-test policy of a `drift:` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DriftDefaults {
    /// Evidently 0.7's default test choice, so verdicts match Evidently's.
    #[default]
    Evidently,
    /// Evidently's choice, except that `chisquare` (goodness of fit against
    /// the reference proportions taken as exact) becomes
    /// `chisquare_homogeneity` (a 2×k test of two samples).
    Sound,
    /// A p-value test whatever the reference's size (`ks`,
    /// `chisquare_homogeneity`, `z`): what `sequential` needs.
    PValues,
}

/// Where the reference profile comes from.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ReferenceSpec {
    /// A profile file.
    File(String),
    /// The merged profiles of the previous batches of this dataset.
    Rolling {
        /// `{ batches: N }`.
        rolling: RollingSpec,
    },
}

/// A rolling reference.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RollingSpec {
    /// How many previous batches to merge.
    pub batches: u32,
}

/// A per-column drift test override.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DriftOverrideSpec {
    /// The test to use.
    pub test: Option<crate::drift::TestKind>,
    /// Its threshold (p-value for tests, distance for distances).
    pub threshold: Option<f64>,
    /// Distinct categories of this column counted exactly (overrides
    /// `max_categories`).
    pub max_categories: Option<u64>,
    /// Test the column even when its profile says it is ID-like or constant
    /// (such columns are otherwise skipped with the evidence).
    pub force: Option<bool>,
}

/// Multiple-testing correction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CorrectionSpec {
    /// No correction.
    None,
    /// Bonferroni: p × m.
    Bonferroni,
    /// Benjamini–Hochberg false discovery rate.
    FdrBh,
}

/// One check. Exactly one of the check kinds (`not_null`, `range`,
/// `accepted_values`, `regex`, `unique`, `row_count`, `schema`, `freshness`,
/// `expr`, `metric`, `anomaly`) must be given, plus any of the common keys.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    /// Fails rows where the column is null.
    pub not_null: Option<String>,
    /// Fails non-null rows outside `[min, max]` (NaN is outside every range).
    pub range: Option<RangeSpec>,
    /// Fails non-null rows whose value is not in the list.
    pub accepted_values: Option<AcceptedValuesSpec>,
    /// Fails non-null string values that do not match the pattern.
    pub regex: Option<RegexSpec>,
    /// Fails every non-null row beyond the first occurrence of its value.
    pub unique: Option<String>,
    /// Fails the batch when its row count is outside `[min, max]`.
    pub row_count: Option<BoundsSpec>,
    /// Fails the batch when columns are missing, of the wrong type, or (with
    /// `allow_extra: false`) unexpected.
    pub schema: Option<SchemaSpec>,
    /// Fails the batch when the newest timestamp in the column is older than `max_age`.
    pub freshness: Option<FreshnessSpec>,
    /// A row-level SQL predicate (DataFusion SQL); a row fails when it is false.
    #[schemars(with = "Option<String>")]
    pub expr: Option<Spanned<String>>,
    /// An aggregate SQL expression, e.g. `avg(arr_delay)`; compared with `between`.
    #[schemars(with = "Option<String>")]
    pub metric: Option<Spanned<String>>,
    /// Bounds for `metric`: `[min, max]`, either may be null (`~`) for open.
    pub between: Option<[Option<f64>; 2]>,
    /// Judges a metric of the batch against its own history (see
    /// rules/README.md, "anomaly").
    pub anomaly: Option<AnomalySpec>,

    /// A stable name for the check; default derived from its kind and column.
    /// Names starting with `@` are reserved for the agent's own signals.
    pub name: Option<String>,
    /// `error` (default) fails the batch; `warn` is reported but never fails it.
    pub severity: Option<SeveritySpec>,
    /// Row-level checks: the largest fraction of failing rows that still passes.
    pub max_fraction: Option<f64>,
    /// Row-level checks: the largest number of failing rows that still passes.
    pub max_count: Option<u64>,
    /// A SQL predicate selecting the rows the check considers.
    #[serde(rename = "where")]
    #[schemars(rename = "where", with = "Option<String>")]
    pub where_: Option<Spanned<String>>,
    /// Free text shown beside the check in reports.
    pub description: Option<String>,
}

/// Severity as written.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SeveritySpec {
    /// A failure fails the batch (exit code 1 in `check`).
    Error,
    /// A failure is reported but does not fail the batch.
    Warn,
}

/// A literal value in a rule: a number, a string or a boolean.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum LiteralSpec {
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A string (also used for dates and timestamps, e.g. `"2024-01-01"`).
    Text(String),
}

/// Arguments of `range`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RangeSpec {
    /// The column to check.
    pub column: String,
    /// Inclusive lower bound (optional).
    pub min: Option<LiteralSpec>,
    /// Inclusive upper bound (optional).
    pub max: Option<LiteralSpec>,
}

/// Arguments of `accepted_values`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptedValuesSpec {
    /// The column to check.
    pub column: String,
    /// The allowed values.
    pub values: Vec<LiteralSpec>,
}

/// Arguments of `regex`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegexSpec {
    /// The (string) column to check.
    pub column: String,
    /// A regular expression (Rust `regex` syntax); unanchored unless you write `^`/`$`.
    #[schemars(with = "String")]
    pub pattern: Spanned<String>,
}

/// Inclusive bounds; either may be omitted.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BoundsSpec {
    /// Inclusive lower bound.
    pub min: Option<u64>,
    /// Inclusive upper bound.
    pub max: Option<u64>,
}

/// Arguments of `schema`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SchemaSpec {
    /// Expected columns and their logical types (see rules/README.md for the names).
    pub columns: BTreeMap<String, String>,
    /// Whether columns not listed are allowed (default true).
    #[serde(default = "default_true")]
    pub allow_extra: bool,
}

fn default_true() -> bool {
    true
}

/// Arguments of `freshness`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FreshnessSpec {
    /// A timestamp or date column.
    pub column: String,
    /// The oldest the newest value may be, e.g. `36h`, `90m`, `2d`, `1h30m`.
    pub max_age: String,
}

/// Arguments of `anomaly`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnomalySpec {
    /// What to judge: `row_count`, `null_fraction(col)`, `mean(col)`,
    /// `distinct_count(col)`, `quantile(col, 0.95)`, `failing_fraction(check)`,
    /// or any numeric SQL aggregate such as `min(x)` or `avg(arr_delay)`.
    #[schemars(with = "String")]
    pub metric: Spanned<String>,
    /// How much history the band is learned from: `60 batches` (default) or
    /// a duration such as `28d`.
    #[schemars(with = "Option<String>")]
    pub history: Option<Spanned<String>>,
    /// `none` (default), `hourly` (same minute of the hour), `daily` (same
    /// hour of the day) or `weekly` (same day of the week), in UTC.
    pub seasonality: Option<crate::anomaly::Seasonality>,
    /// The expected false-alarm rate per normal batch, in (0, 0.5); default 0.001.
    pub sensitivity: Option<f64>,
    /// `both` (default), `up` (only higher values are anomalies) or `down`.
    pub direction: Option<crate::anomaly::Direction>,
    /// Batches of history needed before the check judges (default 10);
    /// until then it is `skipped`.
    pub min_history: Option<u64>,
    /// A timestamp or date column whose newest value is the batch's time
    /// for seasonality and `history: <duration>`; default: the time the
    /// batch is evaluated.
    pub event_time: Option<String>,
}
