//! Compiling a rule file's checks into the expressions of one aggregate plan.
//!
//! Every check becomes one or more *outputs*: scalar expressions over
//! aggregates (e.g. `count(1) FILTER (WHERE w AND col IS NULL)`). Outputs are
//! de-duplicated, so ten checks sharing a `where` share its row count. The
//! engine then plans `Aggregate(all aggregates) → Projection(outputs)` over a
//! single scan. Checks that cannot be compiled against this batch's schema
//! (unknown column, wrong type) become [`Compiled::Invalid`] with a message that
//! names the rule's location; the other checks still run.

use std::collections::HashMap;
use std::sync::LazyLock;

use arrow::datatypes::DataType;
use datafusion::common::DFSchema;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::functions::math::expr_fn::isnan;
use datafusion::functions::regex::expr_fn::regexp_like;
use datafusion::functions_aggregate::expr_fn::{count, max};
use datafusion::logical_expr::AggregateUDF;
use datafusion::logical_expr::utils::find_aggregate_exprs;
use datafusion::logical_expr::{Expr, ExprSchemable, lit};
use datafusion::prelude::{SessionContext, cast};
use datafusion::scalar::ScalarValue;

use crate::rules::{Check, CheckKind, Literal, RuleFile, SourceLocation, SqlText};

/// Where to find a check's numbers among the plan's outputs.
#[derive(Debug, Clone)]
pub enum Compiled {
    /// The check cannot run on this batch; the message says why and where.
    Invalid(String),
    /// Computed from the schema alone.
    Schema(SchemaVerdict),
    /// Row-level: failing rows and rows considered.
    RowLevel {
        /// Output index of the failing-row count.
        failing: usize,
        /// Output index of the considered-row count.
        considered: usize,
    },
    /// `row_count`.
    RowCount {
        /// Output index of the considered-row count.
        considered: usize,
    },
    /// `freshness`: the newest value.
    Freshness {
        /// Output index of `max(column)`.
        newest: usize,
        /// Output index of the considered-row count.
        considered: usize,
    },
    /// `anomaly`: the batch's metric value (judged later against its history).
    Anomaly {
        /// Where the value comes from.
        value: AnomalyValue,
        /// Output index of the considered-row count.
        considered: usize,
        /// Output index of `max(event_time column)`, when the check names one.
        event_time: Option<usize>,
    },
    /// `metric`: the value as Float64.
    Metric {
        /// Output index of the metric value.
        value: usize,
        /// Output index of the considered-row count.
        considered: usize,
    },
}

/// Where an `anomaly` check's value is among the outputs.
#[derive(Debug, Clone)]
pub enum AnomalyValue {
    /// The considered-row count itself.
    Considered,
    /// An output divided by the considered-row count.
    PerRow(usize),
    /// An output, as Float64.
    Output(usize),
    /// Another check's failing fraction (taken from its verdict).
    OtherCheck(String),
}

/// The outcome of a `schema` check, computed without scanning.
#[derive(Debug, Clone)]
pub struct SchemaVerdict {
    /// Observed logical types of the listed columns (null when missing).
    pub observed: serde_json::Map<String, serde_json::Value>,
    /// Problems found; empty when the check passes.
    pub problems: Vec<String>,
}

/// The compiled form of a rule file for one batch schema.
#[derive(Debug, Clone, Default)]
pub struct CompiledRules {
    /// Distinct output expressions, each possibly containing aggregates.
    pub outputs: Vec<Expr>,
    /// One entry per check, in rule-file order.
    pub checks: Vec<Compiled>,
    /// Output index of the batch's total row count.
    pub rows: usize,
    /// Profiled columns and the output index of each one's profile.
    pub profiles: Vec<(String, usize)>,
    /// Requested columns left unprofiled for their type: name, `type: why`.
    pub unprofiled: Vec<(String, String)>,
}

/// Which columns to profile alongside the checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ProfileRequest {
    /// None: checks only.
    #[default]
    None,
    /// Every column of a supported type (numbers, strings, booleans).
    AllSupported,
    /// These columns (unknown or unsupported ones are skipped and reported by the caller).
    Columns(Vec<String>),
}

/// The profiling aggregates.
static PROFILE_NUMERIC: LazyLock<AggregateUDF> =
    LazyLock::new(|| super::profiler::Profiler::udaf(crate::profile::ColumnKind::Numeric));
static PROFILE_CATEGORICAL: LazyLock<AggregateUDF> =
    LazyLock::new(|| super::profiler::Profiler::udaf(crate::profile::ColumnKind::Categorical));

/// Why a check cannot run, and where to point: the check itself, or a piece
/// of its SQL (which has its own location).
enum Problem {
    AtCheck(String),
    At(SourceLocation, String),
}

impl From<String> for Problem {
    fn from(message: String) -> Self {
        Problem::AtCheck(message)
    }
}

impl From<&str> for Problem {
    fn from(message: &str) -> Self {
        Problem::AtCheck(message.to_string())
    }
}

impl Problem {
    fn render(self, check: &Check) -> Compiled {
        match self {
            Problem::AtCheck(m) => Compiled::Invalid(format!("{}: {m}", check.location)),
            Problem::At(at, m) => Compiled::Invalid(format!("{at}: {m}")),
        }
    }
}

struct Outputs {
    exprs: Vec<Expr>,
    index: HashMap<Expr, usize>,
}

impl Outputs {
    fn add(&mut self, expr: Expr) -> usize {
        if let Some(&i) = self.index.get(&expr) {
            return i;
        }
        let i = self.exprs.len();
        self.index.insert(expr.clone(), i);
        self.exprs.push(expr);
        i
    }
}

/// Compiles every check of `rules` against `schema`, plus the requested profiles.
pub fn compile(
    ctx: &SessionContext,
    schema: &DFSchema,
    rules: &RuleFile,
    request: &ProfileRequest,
) -> CompiledRules {
    let mut outputs = Outputs {
        exprs: Vec::new(),
        index: HashMap::new(),
    };
    let rows = outputs.add(count(lit(1i64)));
    let checks = rules
        .checks
        .iter()
        .map(|check| {
            compile_check(ctx, schema, check, &mut outputs).unwrap_or_else(|p| p.render(check))
        })
        .collect();
    let wanted: Vec<&str> = match request {
        ProfileRequest::None => Vec::new(),
        ProfileRequest::AllSupported => schema.fields().iter().map(|f| f.name().as_str()).collect(),
        ProfileRequest::Columns(columns) => columns.iter().map(String::as_str).collect(),
    };
    let mut profiles = Vec::new();
    let mut unprofiled = Vec::new();
    for name in wanted {
        let Ok(field) = schema.field_with_unqualified_name(name) else {
            continue;
        };
        let Some(kind) = super::profiler::profile_kind(field.data_type()) else {
            if let Some(reason) = super::profiler::unprofiled_reason(field.data_type()) {
                unprofiled.push((name.to_string(), reason));
            }
            continue;
        };
        let Ok(column) = column_expr(schema, name) else {
            continue;
        };
        let limit = rules
            .drift
            .as_ref()
            .map_or(crate::profile::DEFAULT_CATEGORY_LIMIT, |d| {
                d.category_limit(name)
            });
        let call = match kind {
            crate::profile::ColumnKind::Numeric => PROFILE_NUMERIC.call(vec![column]),
            crate::profile::ColumnKind::Categorical
                if limit == crate::profile::DEFAULT_CATEGORY_LIMIT =>
            {
                PROFILE_CATEGORICAL.call(vec![column])
            }
            crate::profile::ColumnKind::Categorical => {
                super::profiler::Profiler::udaf_with_limit(kind, limit).call(vec![column])
            }
        };
        profiles.push((name.to_string(), outputs.add(call)));
    }
    CompiledRules {
        outputs: outputs.exprs,
        checks,
        rows,
        profiles,
        unprofiled,
    }
}

/// Re-judges `schema` checks against the batch's own columns and drops
/// profiles of partition columns: Hive partition values are constants added
/// to the scan so that `where` filters can use them, not data to type-check
/// or profile.
pub fn exclude_partitions(
    compiled: &mut CompiledRules,
    data_schema: &DFSchema,
    rules: &RuleFile,
    partitions: &[String],
) {
    if partitions.is_empty() {
        return;
    }
    for (check, slot) in rules.checks.iter().zip(compiled.checks.iter_mut()) {
        if let (
            Compiled::Schema(_),
            CheckKind::Schema {
                columns,
                allow_extra,
            },
        ) = (&slot, &check.kind)
        {
            *slot = Compiled::Schema(schema_verdict(data_schema, columns, *allow_extra));
        }
    }
    compiled
        .profiles
        .retain(|(name, _)| !partitions.iter().any(|p| p == name));
}

/// Compiles one check alone (used to find the culprit when a whole plan fails).
pub fn compile_single(
    ctx: &SessionContext,
    schema: &DFSchema,
    check: &Check,
) -> (Vec<Expr>, Compiled) {
    let mut outputs = Outputs {
        exprs: Vec::new(),
        index: HashMap::new(),
    };
    let compiled =
        compile_check(ctx, schema, check, &mut outputs).unwrap_or_else(|p| p.render(check));
    (outputs.exprs, compiled)
}

fn compile_check(
    ctx: &SessionContext,
    schema: &DFSchema,
    check: &Check,
    outputs: &mut Outputs,
) -> Result<Compiled, Problem> {
    let filter = match &check.filter {
        Some(sql) => Some(row_predicate(ctx, schema, sql, "where")?),
        None => None,
    };
    let counted = |predicate: Option<Expr>| -> Expr {
        let condition = match (filter.clone(), predicate) {
            (Some(w), Some(p)) => Some(w.and(p)),
            (Some(w), None) => Some(w),
            (None, Some(p)) => Some(p),
            (None, None) => None,
        };
        with_filter(count(lit(1i64)), condition)
    };
    let considered = outputs.add(counted(None));

    let compiled = match &check.kind {
        CheckKind::NotNull { column } => {
            let c = column_expr(schema, column)?;
            let failing = outputs.add(counted(Some(c.is_null())));
            Compiled::RowLevel {
                failing,
                considered,
            }
        }
        CheckKind::Range { column, min, max } => {
            let c = column_expr(schema, column)?;
            let data_type = column_type(schema, column)?;
            let mut outside: Option<Expr> = None;
            for (bound, below) in [(min, true), (max, false)] {
                if let Some(bound) = bound {
                    let value = bound_literal(bound, &data_type, column)?;
                    let violation = if below {
                        c.clone().lt(value)
                    } else {
                        c.clone().gt(value)
                    };
                    outside = Some(match outside {
                        Some(o) => o.or(violation),
                        None => violation,
                    });
                }
            }
            let mut outside = outside.ok_or("`range` needs `min` or `max`")?;
            if data_type.is_floating() {
                // NaN is outside every range, whatever the comparison kernels think of it.
                outside = isnan(c.clone()).or(outside);
            }
            let failing = outputs.add(counted(Some(c.is_not_null().and(outside))));
            Compiled::RowLevel {
                failing,
                considered,
            }
        }
        CheckKind::AcceptedValues { column, values } => {
            let c = column_expr(schema, column)?;
            let data_type = column_type(schema, column)?;
            let list = values
                .iter()
                .map(|v| set_literal(v, &data_type, column))
                .collect::<Result<Vec<_>, _>>()?;
            let failing = outputs.add(counted(Some(
                c.clone().is_not_null().and(c.in_list(list, true)),
            )));
            Compiled::RowLevel {
                failing,
                considered,
            }
        }
        CheckKind::Regex { column, pattern } => {
            let c = column_expr(schema, column)?;
            let data_type = column_type(schema, column)?;
            if !is_string(&data_type) {
                return Err(Problem::AtCheck(format!(
                    "`regex` needs a string column, but `{column}` is {}",
                    crate::rules::describe_arrow_type(&data_type)
                )));
            }
            let matches = regexp_like(c.clone(), lit(pattern.as_str()), None);
            let failing = outputs.add(counted(Some(c.is_not_null().and(!matches))));
            Compiled::RowLevel {
                failing,
                considered,
            }
        }
        CheckKind::Unique { column } => {
            let c = column_expr(schema, column)?;
            // count(c) - count(DISTINCT c), computed by one parallel-friendly UDAF.
            // The engine registers it with its memory budget and spill folder.
            let duplicates =
                datafusion::execution::FunctionRegistry::udaf(ctx, super::duplicates::NAME)
                    .map_err(|e| Problem::AtCheck(format!("internal: {e}")))?;
            let failing = outputs.add(with_filter(duplicates.call(vec![c]), filter.clone()));
            Compiled::RowLevel {
                failing,
                considered,
            }
        }
        CheckKind::RowCount { .. } => Compiled::RowCount { considered },
        CheckKind::Schema {
            columns,
            allow_extra,
        } => Compiled::Schema(schema_verdict(schema, columns, *allow_extra)),
        CheckKind::Freshness { column, .. } => {
            let c = column_expr(schema, column)?;
            let data_type = column_type(schema, column)?;
            if !matches!(
                data_type,
                DataType::Timestamp(..) | DataType::Date32 | DataType::Date64
            ) {
                return Err(Problem::AtCheck(format!(
                    "`freshness` needs a timestamp or date column, but `{column}` is {}",
                    crate::rules::describe_arrow_type(&data_type)
                )));
            }
            let newest = outputs.add(with_filter(max(c), filter.clone()));
            Compiled::Freshness { newest, considered }
        }
        CheckKind::Expr { predicate } => {
            let p = row_predicate(ctx, schema, predicate, "expr")?;
            // Only a definite `false` fails a row: NULL (unknown) passes.
            let failing = outputs.add(counted(Some(p.is_false())));
            Compiled::RowLevel {
                failing,
                considered,
            }
        }
        CheckKind::Anomaly {
            metric, event_time, ..
        } => {
            use crate::rules::AnomalyMetric;
            use datafusion::functions_aggregate::expr_fn::{
                approx_distinct, approx_percentile_cont, avg,
            };
            let event_time = match event_time {
                Some(column) => {
                    let c = column_expr(schema, column)?;
                    let data_type = column_type(schema, column)?;
                    if !matches!(
                        data_type,
                        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64
                    ) {
                        return Err(Problem::AtCheck(format!(
                            "`event_time` needs a timestamp or date column, but `{column}` is {}",
                            crate::rules::describe_arrow_type(&data_type)
                        )));
                    }
                    Some(outputs.add(max(c)))
                }
                None => None,
            };
            let numeric = |column: &str, what: &str| -> Result<Expr, Problem> {
                let c = column_expr(schema, column)?;
                let data_type = column_type(schema, column)?;
                if !data_type.is_numeric() {
                    return Err(Problem::AtCheck(format!(
                        "`{what}({column})` needs a numeric column, but `{column}` is {}",
                        crate::rules::describe_arrow_type(&data_type)
                    )));
                }
                Ok(c)
            };
            let value = match metric {
                AnomalyMetric::RowCount => AnomalyValue::Considered,
                AnomalyMetric::NullFraction(column) => {
                    let c = column_expr(schema, column)?;
                    AnomalyValue::PerRow(outputs.add(counted(Some(c.is_null()))))
                }
                AnomalyMetric::Mean(column) => {
                    let c = numeric(column, "mean")?;
                    AnomalyValue::Output(
                        outputs.add(cast(with_filter(avg(c), filter.clone()), DataType::Float64)),
                    )
                }
                AnomalyMetric::DistinctCount(column) => {
                    let c = column_expr(schema, column)?;
                    AnomalyValue::Output(outputs.add(cast(
                        with_filter(approx_distinct(c), filter.clone()),
                        DataType::Float64,
                    )))
                }
                AnomalyMetric::Quantile(column, q) => {
                    let c = numeric(column, "quantile")?;
                    let call = approx_percentile_cont(c.sort(true, false), lit(*q), None);
                    AnomalyValue::Output(
                        outputs.add(cast(with_filter(call, filter.clone()), DataType::Float64)),
                    )
                }
                AnomalyMetric::FailingFraction(name) => AnomalyValue::OtherCheck(name.clone()),
                AnomalyMetric::Aggregate(sql) => {
                    let e = parse(ctx, schema, sql, "anomaly.metric")?;
                    if find_aggregate_exprs([&e]).is_empty() {
                        return Err(Problem::At(
                            sql.location.clone(),
                            format!(
                                "`anomaly.metric` must be `row_count`, `null_fraction(col)`, `mean(col)`, \
                                 `distinct_count(col)`, `quantile(col, q)`, `failing_fraction(check)` \
                                 or an aggregate expression such as `avg(x)`, got `{}`",
                                sql.text
                            ),
                        ));
                    }
                    let data_type = e.get_type(schema).map_err(|err| {
                        Problem::At(
                            sql.location.clone(),
                            format!("`anomaly.metric`: {}", one_line(&err.to_string())),
                        )
                    })?;
                    if !(data_type.is_numeric() || data_type == DataType::Null) {
                        return Err(Problem::At(
                            sql.location.clone(),
                            format!("`anomaly.metric` must be numeric, but it is {data_type}"),
                        ));
                    }
                    let filtered = inject_filter(e, filter.clone())?;
                    AnomalyValue::Output(outputs.add(cast(filtered, DataType::Float64)))
                }
            };
            Compiled::Anomaly {
                value,
                considered,
                event_time,
            }
        }
        CheckKind::Metric { expression, .. } => {
            let e = parse(ctx, schema, expression, "metric")?;
            if find_aggregate_exprs([&e]).is_empty() {
                return Err(Problem::AtCheck(format!(
                    "`metric` must be an aggregate expression such as `avg(x)`, got `{}`",
                    expression.text
                )));
            }
            let data_type = e
                .get_type(schema)
                .map_err(|err| format!("`metric`: {}", one_line(&err.to_string())))?;
            if !(data_type.is_numeric() || data_type == DataType::Null) {
                return Err(Problem::AtCheck(format!(
                    "`metric` must be numeric, but it is {data_type}"
                )));
            }
            let filtered = inject_filter(e, filter.clone())?;
            let value = outputs.add(cast(filtered, DataType::Float64));
            Compiled::Metric { value, considered }
        }
    };
    Ok(compiled)
}

/// Sets (or ANDs into) the FILTER of every aggregate call in `expr`.
fn inject_filter(expr: Expr, filter: Option<Expr>) -> Result<Expr, String> {
    let Some(filter) = filter else {
        return Ok(expr);
    };
    expr.transform_up(|e| match e {
        Expr::AggregateFunction(mut agg) => {
            agg.params.filter = Some(Box::new(match agg.params.filter.take() {
                Some(existing) => filter.clone().and(*existing),
                None => filter.clone(),
            }));
            Ok(Transformed::yes(Expr::AggregateFunction(agg)))
        }
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
    .map_err(|e| format!("internal error adding `where` to the metric: {e}"))
}

fn with_filter(expr: Expr, filter: Option<Expr>) -> Expr {
    match (expr, filter) {
        (Expr::AggregateFunction(mut agg), Some(filter)) => {
            agg.params.filter = Some(Box::new(filter));
            Expr::AggregateFunction(agg)
        }
        (expr, _) => expr,
    }
}

/// Parses a row-level predicate and checks it is boolean and has no aggregates.
fn row_predicate(
    ctx: &SessionContext,
    schema: &DFSchema,
    sql: &SqlText,
    key: &str,
) -> Result<Expr, Problem> {
    let at = |m: String| Problem::At(sql.location.clone(), m);
    let e = parse(ctx, schema, sql, key)?;
    if !find_aggregate_exprs([&e]).is_empty() {
        return Err(at(format!(
            "`{key}` is evaluated per row and cannot contain aggregates; use `metric` for `{}`",
            sql.text
        )));
    }
    let data_type = e
        .get_type(schema)
        .map_err(|err| at(format!("`{key}`: {}", one_line(&err.to_string()))))?;
    if !matches!(data_type, DataType::Boolean | DataType::Null) {
        return Err(at(format!(
            "`{key}` must be a boolean predicate, but `{}` is {data_type}",
            sql.text
        )));
    }
    Ok(e)
}

fn parse(
    ctx: &SessionContext,
    schema: &DFSchema,
    sql: &SqlText,
    key: &str,
) -> Result<Expr, Problem> {
    ctx.parse_sql_expr(&sql.text, schema).map_err(|e| {
        Problem::At(
            sql.location.clone(),
            format!("`{key}`: {}", one_line(&e.strip_backtrace())),
        )
    })
}

fn column_expr(schema: &DFSchema, column: &str) -> Result<Expr, String> {
    match schema.qualified_field_with_unqualified_name(column) {
        Ok((qualifier, field)) => Ok(Expr::Column(datafusion::common::Column::new(
            qualifier.cloned(),
            field.name(),
        ))),
        Err(_) => Err(unknown_column(schema, column)),
    }
}

fn column_type(schema: &DFSchema, column: &str) -> Result<DataType, String> {
    schema
        .field_with_unqualified_name(column)
        .map(|f| f.data_type().clone())
        .map_err(|_| unknown_column(schema, column))
}

fn unknown_column(schema: &DFSchema, column: &str) -> String {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let mut message = format!("unknown column `{column}`");
    if let Some(close) = names.iter().find(|n| n.eq_ignore_ascii_case(column)) {
        message.push_str(&format!(
            " (did you mean `{close}`? names are case-sensitive)"
        ));
    }
    let listed = names
        .iter()
        .take(30)
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>();
    message.push_str(&format!("; the batch has {}", listed.join(", ")));
    if names.len() > 30 {
        message.push_str(&format!(" and {} more", names.len() - 30));
    }
    message
}

/// A string-like Arrow type (including dictionary-encoded strings).
pub fn is_string(data_type: &DataType) -> bool {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, value) => is_string(value),
        _ => false,
    }
}

fn is_temporal(data_type: &DataType) -> bool {
    value_type(data_type).is_temporal()
}

fn value_type(data_type: &DataType) -> &DataType {
    match data_type {
        DataType::Dictionary(_, v) => v.as_ref(),
        other => other,
    }
}

/// A literal for a `range` bound, refusing comparisons that would silently
/// compare numbers as strings or strings as numbers.
fn bound_literal(bound: &Literal, data_type: &DataType, column: &str) -> Result<Expr, String> {
    let value_type = value_type(data_type);
    match bound {
        Literal::Int(i) if value_type.is_numeric() => Ok(lit(*i)),
        Literal::Float(f) if value_type.is_numeric() => {
            if f.is_nan() {
                Err("a `range` bound cannot be NaN".to_string())
            } else {
                Ok(lit(*f))
            }
        }
        Literal::Text(s) if is_string(data_type) => Ok(lit(s.as_str())),
        Literal::Text(s) if is_temporal(data_type) => Ok(cast(lit(s.as_str()), value_type.clone())),
        other => Err(format!(
            "`range` bound {} does not fit column `{column}` of type {}",
            literal_text(other),
            crate::rules::describe_arrow_type(data_type)
        )),
    }
}

/// A literal for `accepted_values`: numbers are accepted for string columns
/// (written as text, so `values: [1, 2]` works on a string code column).
fn set_literal(value: &Literal, data_type: &DataType, column: &str) -> Result<Expr, String> {
    let value_type = value_type(data_type);
    match value {
        _ if is_string(data_type) => Ok(lit(literal_text(value))),
        Literal::Int(i) if value_type.is_numeric() => Ok(lit(*i)),
        Literal::Float(f) if value_type.is_numeric() => Ok(lit(*f)),
        Literal::Bool(b) if *value_type == DataType::Boolean => Ok(lit(*b)),
        Literal::Text(s) if is_temporal(data_type) => Ok(cast(lit(s.as_str()), value_type.clone())),
        other => Err(format!(
            "accepted value {} does not fit column `{column}` of type {}",
            literal_text(other),
            crate::rules::describe_arrow_type(data_type)
        )),
    }
}

/// A literal as plain text (no quotes).
pub fn literal_text(value: &Literal) -> String {
    match value {
        Literal::Bool(b) => b.to_string(),
        Literal::Int(i) => i.to_string(),
        Literal::Float(f) => f.to_string(),
        Literal::Text(s) => s.clone(),
    }
}

/// A literal as JSON.
pub fn literal_json(value: &Literal) -> serde_json::Value {
    match value {
        Literal::Bool(b) => serde_json::Value::Bool(*b),
        Literal::Int(i) => serde_json::Value::from(*i),
        Literal::Float(f) => crate::report::json_f64(*f),
        Literal::Text(s) => serde_json::Value::String(s.clone()),
    }
}

fn schema_verdict(
    schema: &DFSchema,
    columns: &[(String, crate::rules::LogicalType)],
    allow_extra: bool,
) -> SchemaVerdict {
    let mut observed = serde_json::Map::new();
    let mut problems = Vec::new();
    for (name, expected) in columns {
        match schema.field_with_unqualified_name(name) {
            Ok(field) => {
                observed.insert(
                    name.clone(),
                    serde_json::Value::String(
                        crate::rules::describe_arrow_type(field.data_type()).to_string(),
                    ),
                );
                if !expected.accepts(field.data_type()) {
                    problems.push(format!(
                        "`{name}` is {}, expected {expected}",
                        crate::rules::describe_arrow_type(field.data_type())
                    ));
                }
            }
            Err(_) => {
                observed.insert(name.clone(), serde_json::Value::Null);
                problems.push(format!("`{name}` is missing"));
            }
        }
    }
    if !allow_extra {
        let extra: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|n| !columns.iter().any(|(c, _)| c == n))
            .map(|n| format!("`{n}`"))
            .collect();
        if !extra.is_empty() {
            problems.push(format!("unexpected column(s) {}", extra.join(", ")));
        }
    }
    SchemaVerdict { observed, problems }
}

/// DataFusion error text on one line, without the internal `?table?` qualifier.
pub fn one_line(text: &str) -> String {
    text.replace("\"?table?\".", "")
        .replace("?table?.", "")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The Float64 value of a scalar, if it is a number.
pub fn scalar_f64(value: &ScalarValue) -> Option<f64> {
    match value {
        ScalarValue::Float64(v) => *v,
        ScalarValue::Float32(v) => v.map(f64::from),
        other => other
            .cast_to(&DataType::Float64)
            .ok()
            .and_then(|v| match v {
                ScalarValue::Float64(f) => f,
                _ => None,
            }),
    }
}
