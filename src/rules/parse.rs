//! Reading and validating rule files: spec → [`RuleFile`], with locations.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;
use globset::GlobBuilder;
use serde_saphyr::{Location, Spanned};

use super::spec::{
    AnomalySpec, CatalogSpec, CheckSpec, DriftSpec, NamespaceSpec, ReferenceSpec, RuleFileSpec,
    SeveritySpec, TableSpec,
};
use super::{
    AnomalyMetric, BatchUnit, CatalogConfig, CatalogToken, Check, CheckKind, Correction,
    DriftConfig, LogicalType, MAX_ROLLING_BATCHES, Reference, Result, RuleError, RuleFile,
    Severity, SourceLocation, SqlText, TableConfig, TableFormat, Tolerance, WebhookRef,
    parse_duration,
};

/// The glob used when a rule file has no `match`.
pub const DEFAULT_MATCH: &str = "**/*.parquet";

/// Loads one rule file, or every `*.yaml`/`*.yml` file in a folder (sorted by
/// name, not recursive). Dataset names must be unique across the folder.
pub fn load_rules(path: &Path) -> Result<Vec<RuleFile>> {
    let meta = std::fs::metadata(path).map_err(|source| RuleError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let files: Vec<PathBuf> = if meta.is_dir() {
        let mut files = Vec::new();
        let entries = std::fs::read_dir(path).map_err(|source| RuleError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| RuleError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let file = entry.path();
            let is_yaml = file
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
            let hidden = file
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if is_yaml && !hidden && file.is_file() {
                files.push(file);
            }
        }
        files.sort();
        if files.is_empty() {
            return Err(RuleError::NoRuleFiles {
                path: path.to_path_buf(),
            });
        }
        files
    } else {
        vec![path.to_path_buf()]
    };

    let mut rule_files = Vec::with_capacity(files.len());
    let mut datasets: HashSet<String> = HashSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|source| RuleError::Read {
            path: file.clone(),
            source,
        })?;
        let rules = parse_rule_file(&file, &text)?;
        if !datasets.insert(rules.dataset.clone()) {
            return Err(RuleError::Invalid {
                location: SourceLocation {
                    file: file.clone(),
                    line: 1,
                    column: 1,
                },
                message: format!(
                    "dataset `{}` is already defined by another rule file in this folder",
                    rules.dataset
                ),
            });
        }
        rule_files.push(rules);
    }
    Ok(rule_files)
}

/// Parses and validates the text of one rule file; `path` is used for locations.
pub fn parse_rule_file(path: &Path, text: &str) -> Result<RuleFile> {
    let spec: RuleFileSpec = serde_saphyr::from_str(text).map_err(|err| {
        let location = err
            .location()
            .filter(|l| l.line() > 0)
            .map(|l| at(path, l))
            .unwrap_or_else(|| SourceLocation {
                file: path.to_path_buf(),
                line: 1,
                column: 1,
            });
        RuleError::Invalid {
            location,
            message: yaml_message(&err),
        }
    })?;

    let file_start = SourceLocation {
        file: path.to_path_buf(),
        line: 1,
        column: 1,
    };
    if spec.dataset.trim().is_empty() {
        return Err(invalid(file_start, "`dataset` must not be empty"));
    }
    let match_glob = spec
        .match_glob
        .clone()
        .unwrap_or_else(|| DEFAULT_MATCH.to_string());
    let matcher = GlobBuilder::new(&match_glob)
        .literal_separator(true)
        .build()
        .map_err(|e| invalid(file_start.clone(), format!("bad `match` glob: {e}")))?
        .compile_matcher();

    let mut checks = Vec::with_capacity(spec.checks.len());
    let mut names: HashSet<String> = HashSet::new();
    for (index, spanned) in spec.checks.into_iter().enumerate() {
        let location = at(path, spanned.referenced);
        let check = validate_check(path, index + 1, spanned.value, location.clone())?;
        if !names.insert(check.name.clone()) {
            return Err(invalid(
                location,
                format!(
                    "duplicate check name `{}`; give one of them a distinct `name`",
                    check.name
                ),
            ));
        }
        checks.push(check);
    }
    for check in &checks {
        if let CheckKind::Anomaly {
            metric: AnomalyMetric::FailingFraction(target),
            ..
        } = &check.kind
        {
            match checks.iter().find(|c| &c.name == target) {
                Some(c) if c.kind.is_row_level() => {}
                Some(c) => {
                    return Err(invalid(
                        check.location.clone(),
                        format!(
                            "`failing_fraction({target})`: `{target}` is a `{}` check, which has no failing rows; name a row-level check",
                            c.kind.name()
                        ),
                    ));
                }
                None => {
                    return Err(invalid(
                        check.location.clone(),
                        format!(
                            "`failing_fraction({target})`: no check named `{target}` in this file"
                        ),
                    ));
                }
            }
        }
    }
    let drift = match spec.drift {
        Some(section) => Some(validate_drift(path, section)?),
        None => None,
    };
    let table = match spec.table {
        Some(section) => {
            let at = at(path, section.referenced);
            // `match` and `batch` choose files; a table's batches are its versions.
            if spec.match_glob.is_some() {
                return Err(invalid(
                    at,
                    "a rule file with `table` takes its batches from the table's versions: remove `match`",
                ));
            }
            if spec.batch != BatchUnit::File {
                return Err(invalid(
                    at,
                    "a rule file with `table` takes its batches from the table's versions: remove `batch`",
                ));
            }
            Some(validate_table(path, at, section.value)?)
        }
        None => None,
    };
    Ok(RuleFile {
        path: path.to_path_buf(),
        dataset: spec.dataset,
        match_glob,
        matcher,
        checks,
        drift,
        batch: spec.batch,
        table,
        webhooks: spec
            .webhooks
            .into_iter()
            .map(|w| WebhookRef {
                location: at(path, w.referenced),
                name: w.value,
            })
            .collect(),
    })
}

fn validate_table(path: &Path, at_table: SourceLocation, spec: TableSpec) -> Result<TableConfig> {
    let poll_interval = match spec.poll_interval {
        Some(interval) => {
            let at_interval = at(path, interval.referenced);
            // An interval like the agent's own (`500ms`, `30s`, `5m`).
            let value = crate::config::parse_interval(&interval.value)
                .map_err(|e| invalid(at_interval.clone(), format!("`table.poll_interval`: {e}")))?;
            if value.is_zero() {
                return Err(invalid(
                    at_interval,
                    "`table.poll_interval` must be more than zero",
                ));
            }
            Some(value)
        }
        None => None,
    };
    let spanned = match (spec.location, spec.catalog) {
        (Some(_), Some(catalog)) => {
            return Err(invalid(
                at(path, catalog.referenced),
                "give `table.location` or `table.catalog`, not both",
            ));
        }
        (None, Some(catalog)) => {
            let at_catalog = at(path, catalog.referenced);
            if spec.format != TableFormat::Iceberg {
                return Err(invalid(
                    at_catalog,
                    "`table.catalog` is an Iceberg REST catalog: it needs `format: iceberg`",
                ));
            }
            let catalog = validate_catalog(path, catalog.value)?;
            return Ok(TableConfig {
                format: spec.format,
                location: PathBuf::from(catalog.key()),
                poll_interval,
                at: at_catalog,
                catalog: Some(catalog),
            });
        }
        (None, None) => {
            return Err(invalid(
                at_table,
                "`table` needs `location` (a folder or an object-store URL) or `catalog` (an Iceberg REST catalog)",
            ));
        }
        (Some(location), None) => location,
    };
    let at_location = at(path, spanned.referenced);
    let written = spanned.value.trim();
    if written.is_empty() {
        return Err(invalid(at_location, "`table.location` must not be empty"));
    }
    // An object-store URL (`s3://bucket/prefix/table`, `az://…`, `gs://…`)
    // is carried as its text, like an object batch's path
    // (`crate::location`); any other scheme must not be taken for a
    // relative folder named `hdfs:`.
    let location = match crate::location::ObjectUrl::parse(written) {
        Some(Ok(url)) => url.with_key(url.key.trim_end_matches('/')).to_path(),
        Some(Err(e)) => return Err(invalid(at_location, format!("`table.location`: {e}"))),
        None => {
            if let Some((scheme, _)) = written.split_once("://")
                && scheme != "file"
            {
                return Err(invalid(
                    at_location,
                    format!(
                        "`table.location`: `{scheme}://` is not a supported location; give a local folder or an s3://, az://, abfss:// or gs:// URL"
                    ),
                ));
            }
            let written = written.strip_prefix("file://").unwrap_or(written);
            let location = PathBuf::from(written);
            if location.is_absolute() {
                location
            } else {
                path.parent().unwrap_or(Path::new("")).join(location)
            }
        }
    };
    Ok(TableConfig {
        format: spec.format,
        location,
        poll_interval,
        at: at_location,
        catalog: None,
    })
}

/// The validated `table.catalog` section.
fn validate_catalog(path: &Path, spec: CatalogSpec) -> Result<CatalogConfig> {
    let at_uri = at(path, spec.uri.referenced);
    let uri = spec.uri.value.trim().trim_end_matches('/').to_string();
    match url::Url::parse(&uri) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
            if url.query().is_some() || url.fragment().is_some() {
                return Err(invalid(
                    at_uri,
                    "`table.catalog.uri` must not have a query or a fragment",
                ));
            }
            if !url.username().is_empty() || url.password().is_some() {
                // A secret in a rule file would be in reports and logs.
                return Err(invalid(
                    at_uri,
                    "`table.catalog.uri` must not hold credentials: give `token_env` or `token_file`",
                ));
            }
        }
        Ok(_) => {
            return Err(invalid(
                at_uri,
                "`table.catalog.uri` must be an http:// or https:// URL",
            ));
        }
        Err(e) => return Err(invalid(at_uri, format!("`table.catalog.uri`: {e}"))),
    }
    let at_namespace = at(path, spec.namespace.referenced);
    let namespace = match spec.namespace.value {
        NamespaceSpec::One(level) => vec![level],
        NamespaceSpec::Levels(levels) => levels,
    };
    if namespace.is_empty() || namespace.iter().any(|l| l.trim().is_empty()) {
        return Err(invalid(
            at_namespace,
            "`table.catalog.namespace` needs at least one level, none of them empty",
        ));
    }
    let table = spec.table.value.trim().to_string();
    if table.is_empty() {
        return Err(invalid(
            at(path, spec.table.referenced),
            "`table.catalog.table` must not be empty",
        ));
    }
    let token = match (spec.token_env, spec.token_file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                at_uri,
                "give `table.catalog.token_env` or `token_file`, not both",
            ));
        }
        (Some(name), None) => Some(CatalogToken::Env(name)),
        (None, Some(file)) => {
            let file = PathBuf::from(file);
            Some(CatalogToken::File(if file.is_absolute() {
                file
            } else {
                path.parent().unwrap_or(Path::new("")).join(file)
            }))
        }
        (None, None) => None,
    };
    Ok(CatalogConfig {
        uri,
        prefix: spec
            .prefix
            .map(|p| p.trim_matches('/').to_string())
            .filter(|p| !p.is_empty()),
        warehouse: spec.warehouse,
        namespace,
        table,
        token,
    })
}

fn validate_drift(path: &Path, section: Spanned<DriftSpec>) -> Result<DriftConfig> {
    let location = at(path, section.referenced);
    let spec = section.value;
    let drift_share = spec.drift_share.unwrap_or(0.5);
    if !(drift_share > 0.0 && drift_share <= 1.0) {
        return Err(invalid(
            location,
            format!("`drift_share` must be in (0, 1], got {drift_share}"),
        ));
    }
    let limit = |key: String, v: u64| -> Result<usize> {
        let max = crate::profile::MAX_CATEGORY_LIMIT;
        if v == 0 || v > max as u64 {
            return Err(invalid(
                location.clone(),
                format!("`{key}` must be between 1 and {max}, got {v}"),
            ));
        }
        Ok(v as usize)
    };
    let max_categories = match spec.max_categories {
        Some(v) => limit("max_categories".to_string(), v)?,
        None => crate::profile::DEFAULT_CATEGORY_LIMIT,
    };
    let mut category_limits = std::collections::BTreeMap::new();
    let mut forced = std::collections::BTreeSet::new();
    let mut overrides = std::collections::BTreeMap::new();
    for (column, o) in spec.overrides {
        if let Some(v) = o.max_categories {
            category_limits.insert(
                column.clone(),
                limit(format!("overrides.{column}.max_categories"), v)?,
            );
        }
        if o.force == Some(true) {
            forced.insert(column.clone());
        }
        if let Some(t) = o.threshold
            && !(t.is_finite() && t >= 0.0)
        {
            return Err(invalid(
                location,
                format!("`overrides.{column}.threshold` must be a non-negative number, got {t}"),
            ));
        }
        overrides.insert(column, (o.test, o.threshold));
    }
    let sequential = match spec.sequential {
        None => None,
        Some(s) => {
            let at_sequential = at(path, s.referenced);
            let windows = s.value.windows.unwrap_or(1_000);
            if !(1..=1_000_000_000).contains(&windows) {
                return Err(invalid(
                    at_sequential,
                    format!("`sequential.windows` must be between 1 and 1000000000, got {windows}"),
                ));
            }
            let false_alarm = s.value.false_alarm.unwrap_or(0.05);
            if !(false_alarm > 0.0 && false_alarm < 1.0) {
                return Err(invalid(
                    at_sequential,
                    format!("`sequential.false_alarm` must be in (0, 1), got {false_alarm}"),
                ));
            }
            // The guarantee holds for p-value tests on a fixed reference,
            // without a per-window correction (docs/drift.md).
            let needs =
                |what: String| invalid(at_sequential.clone(), format!("`sequential` needs {what}"));
            if let Some(c) = spec.correction
                && c != Correction::None
            {
                return Err(needs(
                    "no multiple-testing `correction` (its threshold already accounts for the columns)"
                        .to_string(),
                ));
            }
            if matches!(spec.reference, Some(ReferenceSpec::Rolling { .. })) {
                return Err(needs(
                    "a fixed reference (a profile file): a rolling reference makes successive \
                     windows' p-values dependent"
                        .to_string(),
                ));
            }
            for (column, o) in &overrides {
                if let (Some(test), _) = o
                    && !test.is_p_value_test()
                {
                    return Err(needs(format!(
                        "p-value tests; `overrides.{column}.test` is the distance `{}`",
                        test.name()
                    )));
                }
            }
            Some(crate::drift::sequential::SequentialConfig {
                windows,
                false_alarm,
            })
        }
    };
    let defaults = match (spec.defaults, &sequential) {
        (None, None) => super::DriftDefaults::default(),
        (None, Some(_)) => super::DriftDefaults::PValues,
        (Some(d), None) => d.value,
        (Some(d), Some(_)) if d.value == super::DriftDefaults::PValues => d.value,
        (Some(d), Some(_)) => {
            return Err(invalid(
                at(path, d.referenced),
                "`sequential` needs p-value tests: `defaults: p_values` (or leave `defaults` out)",
            ));
        }
    };
    let reference = match spec.reference {
        None => None,
        Some(ReferenceSpec::File(r)) => {
            let r = PathBuf::from(r);
            Some(Reference::File(if r.is_absolute() {
                r
            } else {
                path.parent().unwrap_or(Path::new("")).join(r)
            }))
        }
        Some(ReferenceSpec::Rolling { rolling }) => {
            if rolling.batches == 0 || rolling.batches > MAX_ROLLING_BATCHES {
                return Err(invalid(
                    location,
                    format!(
                        "`rolling.batches` must be between 1 and {MAX_ROLLING_BATCHES}, got {}",
                        rolling.batches
                    ),
                ));
            }
            Some(Reference::Rolling {
                batches: rolling.batches as usize,
            })
        }
    };
    Ok(DriftConfig {
        reference,
        columns: spec.columns,
        overrides,
        drift_share,
        correction: spec.correction.unwrap_or(Correction::None),
        severity: match spec.severity {
            None | Some(SeveritySpec::Error) => Severity::Error,
            Some(SeveritySpec::Warn) => Severity::Warn,
        },
        max_categories,
        category_limits,
        defaults,
        sequential,
        forced,
        location,
    })
}

fn validate_check(
    path: &Path,
    position: usize,
    spec: CheckSpec,
    location: SourceLocation,
) -> Result<Check> {
    let CheckSpec {
        not_null,
        range,
        accepted_values,
        regex,
        unique,
        row_count,
        schema,
        freshness,
        expr,
        metric,
        between,
        anomaly,
        name,
        severity,
        max_fraction,
        max_count,
        where_,
        description,
    } = spec;

    let given: Vec<&str> = [
        ("not_null", not_null.is_some()),
        ("range", range.is_some()),
        ("accepted_values", accepted_values.is_some()),
        ("regex", regex.is_some()),
        ("unique", unique.is_some()),
        ("row_count", row_count.is_some()),
        ("schema", schema.is_some()),
        ("freshness", freshness.is_some()),
        ("expr", expr.is_some()),
        ("metric", metric.is_some()),
        ("anomaly", anomaly.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, present)| present.then_some(k))
    .collect();
    match given.len() {
        0 => {
            return Err(invalid(
                location,
                "a check needs one kind: not_null, range, accepted_values, regex, unique, \
                 row_count, schema, freshness, expr, metric or anomaly",
            ));
        }
        1 => {}
        _ => {
            return Err(invalid(
                location,
                format!(
                    "a check has exactly one kind, found {}; split it into separate checks",
                    given.join(" and ")
                ),
            ));
        }
    }

    let kind = if let Some(column) = not_null {
        CheckKind::NotNull {
            column: non_empty_column(column, &location)?,
        }
    } else if let Some(r) = range {
        if r.min.is_none() && r.max.is_none() {
            return Err(invalid(location, "`range` needs `min`, `max` or both"));
        }
        CheckKind::Range {
            column: non_empty_column(r.column, &location)?,
            min: r.min,
            max: r.max,
        }
    } else if let Some(a) = accepted_values {
        if a.values.is_empty() {
            return Err(invalid(
                location,
                "`accepted_values` needs at least one value",
            ));
        }
        CheckKind::AcceptedValues {
            column: non_empty_column(a.column, &location)?,
            values: a.values,
        }
    } else if let Some(r) = regex {
        let pattern_at = at(path, r.pattern.referenced);
        regex::Regex::new(&r.pattern.value).map_err(|e| {
            invalid(
                pattern_at,
                format!("bad regex: {}", one_line(&e.to_string())),
            )
        })?;
        CheckKind::Regex {
            column: non_empty_column(r.column, &location)?,
            pattern: r.pattern.value,
        }
    } else if let Some(column) = unique {
        CheckKind::Unique {
            column: non_empty_column(column, &location)?,
        }
    } else if let Some(b) = row_count {
        if b.min.is_none() && b.max.is_none() {
            return Err(invalid(location, "`row_count` needs `min`, `max` or both"));
        }
        if let (Some(lo), Some(hi)) = (b.min, b.max)
            && lo > hi
        {
            return Err(invalid(
                location,
                format!("`row_count`: min {lo} > max {hi}"),
            ));
        }
        CheckKind::RowCount {
            min: b.min,
            max: b.max,
        }
    } else if let Some(s) = schema {
        let mut columns = Vec::with_capacity(s.columns.len());
        for (column, type_name) in s.columns {
            let ty = LogicalType::parse(&type_name)
                .map_err(|e| invalid(location.clone(), format!("column `{column}`: {e}")))?;
            columns.push((column, ty));
        }
        CheckKind::Schema {
            columns,
            allow_extra: s.allow_extra,
        }
    } else if let Some(f) = freshness {
        let max_age = parse_duration(&f.max_age)
            .map_err(|e| invalid(location.clone(), format!("`max_age`: {e}")))?;
        CheckKind::Freshness {
            column: non_empty_column(f.column, &location)?,
            max_age,
        }
    } else if let Some(predicate) = expr {
        CheckKind::Expr {
            predicate: sql_text(path, predicate, "expr")?,
        }
    } else if let Some(expression) = metric {
        let [min, max] = between.ok_or_else(|| {
            invalid(
                location.clone(),
                "`metric` needs `between: [min, max]` (use ~ for an open end)",
            )
        })?;
        if min.is_none() && max.is_none() {
            return Err(invalid(location, "`between` needs at least one bound"));
        }
        for bound in [min, max].into_iter().flatten() {
            if bound.is_nan() {
                return Err(invalid(
                    location,
                    "`between` bounds must be numbers, not NaN",
                ));
            }
        }
        if let (Some(lo), Some(hi)) = (min, max)
            && lo > hi
        {
            return Err(invalid(location, format!("`between`: {lo} > {hi}")));
        }
        CheckKind::Metric {
            expression: sql_text(path, expression, "metric")?,
            min,
            max,
        }
    } else if let Some(a) = anomaly {
        validate_anomaly(path, a, &location)?
    } else {
        // Not reachable: exactly one kind was found above. Kept as an error,
        // not a panic, so a future kind added to the list but not here fails loudly but safely.
        return Err(invalid(location, "internal error: check kind not handled"));
    };

    if between.is_some() && !matches!(kind, CheckKind::Metric { .. }) {
        return Err(invalid(
            location,
            "`between` applies only to `metric` checks",
        ));
    }
    if (max_fraction.is_some() || max_count.is_some()) && !kind.is_row_level() {
        return Err(invalid(
            location,
            format!(
                "`max_fraction`/`max_count` apply only to row-level checks, not `{}`",
                kind.name()
            ),
        ));
    }
    if let Some(f) = max_fraction
        && !(0.0..=1.0).contains(&f)
    {
        return Err(invalid(
            location,
            format!("`max_fraction` must be in [0, 1], got {f}"),
        ));
    }
    let filter = match where_ {
        Some(w) => {
            if matches!(kind, CheckKind::Schema { .. }) {
                return Err(invalid(
                    location,
                    "`where` does not apply to `schema` checks",
                ));
            }
            Some(sql_text(path, w, "where")?)
        }
        None => None,
    };

    let name = match name {
        Some(n) if n.trim().is_empty() => {
            return Err(invalid(location, "`name` must not be empty"));
        }
        // The agent keeps its own series beside the checks' (the volume
        // signal's `@volume`), under names no check can take.
        Some(n) if n.starts_with(crate::anomaly::history::RESERVED_PREFIX) => {
            return Err(invalid(
                location,
                format!(
                    "check name `{n}`: names starting with `{}` are reserved for driftwatch's own signals",
                    crate::anomaly::history::RESERVED_PREFIX
                ),
            ));
        }
        Some(n) => n,
        None => match kind.column() {
            _ if matches!(kind, CheckKind::Anomaly { .. }) => match &kind {
                CheckKind::Anomaly { metric, .. } => anomaly_name(metric, position),
                _ => kind.name().to_string(),
            },
            Some(column) => format!("{}_{}", kind.name(), column),
            None if matches!(kind, CheckKind::Expr { .. } | CheckKind::Metric { .. }) => {
                format!("{}_{position}", kind.name())
            }
            None => kind.name().to_string(),
        },
    };

    Ok(Check {
        name,
        kind,
        severity: match severity {
            None | Some(SeveritySpec::Error) => Severity::Error,
            Some(SeveritySpec::Warn) => Severity::Warn,
        },
        tolerance: Tolerance {
            max_count,
            max_fraction,
        },
        filter,
        description,
        location,
    })
}

/// The default name of an `anomaly` check: `anomaly_row_count`,
/// `anomaly_null_fraction_x`; `anomaly_<position>` for SQL.
fn anomaly_name(metric: &AnomalyMetric, position: usize) -> String {
    if matches!(metric, AnomalyMetric::Aggregate(_)) {
        return format!("anomaly_{position}");
    }
    let slug: String = metric
        .text()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let parts: Vec<&str> = slug.split('_').filter(|p| !p.is_empty()).collect();
    format!("anomaly_{}", parts.join("_"))
}

/// Validates the arguments of an `anomaly` check.
fn validate_anomaly(
    path: &Path,
    spec: AnomalySpec,
    location: &SourceLocation,
) -> Result<CheckKind> {
    let metric_at = at(path, spec.metric.referenced);
    let text = spec.metric.value.trim().to_string();
    let named = text
        .split_once('(')
        .filter(|_| text.ends_with(')'))
        .map(|(name, rest)| (name.trim(), &rest[..rest.len() - 1]))
        .filter(|(name, _)| {
            matches!(
                *name,
                "null_fraction" | "mean" | "distinct_count" | "quantile" | "failing_fraction"
            )
        });
    let metric = if text == "row_count" {
        AnomalyMetric::RowCount
    } else if let Some((name, args)) = named {
        let args: Vec<String> = args
            .split(',')
            .map(|a| a.trim().trim_matches('"').to_string())
            .collect();
        let one = |args: &[String]| -> Result<String> {
            match args {
                [a] if !a.is_empty() => Ok(a.clone()),
                _ => Err(invalid(
                    metric_at.clone(),
                    format!("`{name}` takes one argument: `{name}(column)`"),
                )),
            }
        };
        match name {
            "null_fraction" => AnomalyMetric::NullFraction(one(&args)?),
            "mean" => AnomalyMetric::Mean(one(&args)?),
            "distinct_count" => AnomalyMetric::DistinctCount(one(&args)?),
            "failing_fraction" => AnomalyMetric::FailingFraction(one(&args)?),
            _ => {
                let [column, q] = args.as_slice() else {
                    return Err(invalid(
                        metric_at,
                        "`quantile` takes two arguments: `quantile(column, 0.95)`",
                    ));
                };
                let q: f64 = q
                    .parse()
                    .ok()
                    .filter(|q: &f64| *q > 0.0 && *q < 1.0)
                    .ok_or_else(|| {
                        invalid(
                            metric_at.clone(),
                            format!("`quantile`: the level must be a number in (0, 1), got `{q}`"),
                        )
                    })?;
                if column.is_empty() {
                    return Err(invalid(metric_at, "`quantile` needs a column"));
                }
                AnomalyMetric::Quantile(column.clone(), q)
            }
        }
    } else {
        AnomalyMetric::Aggregate(sql_text(path, spec.metric, "anomaly.metric")?)
    };
    let history = match spec.history {
        Some(h) => {
            let h_at = at(path, h.referenced);
            crate::anomaly::HistoryLength::parse(&h.value)
                .map_err(|e| invalid(h_at, format!("`history`: {e}")))?
        }
        None => crate::anomaly::DEFAULT_HISTORY,
    };
    let sensitivity = spec
        .sensitivity
        .unwrap_or(crate::anomaly::DEFAULT_SENSITIVITY);
    if !(sensitivity > 0.0 && sensitivity < 0.5) {
        return Err(invalid(
            location.clone(),
            format!(
                "`sensitivity` is the expected false-alarm rate per batch and must be in (0, 0.5), got {sensitivity}"
            ),
        ));
    }
    let min_history = match spec.min_history {
        Some(0) => {
            return Err(invalid(
                location.clone(),
                "`min_history` must be at least 1",
            ));
        }
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        None => crate::anomaly::DEFAULT_MIN_HISTORY,
    };
    if let crate::anomaly::HistoryLength::Batches(n) = history
        && min_history > n
    {
        return Err(invalid(
            location.clone(),
            format!("`min_history` ({min_history}) is more than the `history` ({n} batches)"),
        ));
    }
    if let Some(c) = &spec.event_time
        && c.trim().is_empty()
    {
        return Err(invalid(location.clone(), "`event_time` must name a column"));
    }
    Ok(CheckKind::Anomaly {
        metric,
        settings: crate::anomaly::Settings {
            history,
            seasonality: spec.seasonality.unwrap_or_default(),
            sensitivity,
            direction: spec.direction.unwrap_or_default(),
            min_history,
        },
        event_time: spec.event_time,
    })
}

/// Checks that user SQL is exactly one expression (so nothing can be appended
/// to the plan) and keeps it with its location.
fn sql_text(path: &Path, spanned: Spanned<String>, key: &str) -> Result<SqlText> {
    let location = at(path, spanned.referenced);
    let text = spanned.value;
    if text.trim().is_empty() {
        return Err(invalid(location, format!("`{key}` must not be empty")));
    }
    let dialect = GenericDialect {};
    let mut parser = Parser::new(&dialect).try_with_sql(&text).map_err(|e| {
        invalid(
            location.clone(),
            format!("`{key}`: SQL does not parse: {e}"),
        )
    })?;
    let expr = parser.parse_expr().map_err(|e| {
        invalid(
            location.clone(),
            format!("`{key}`: SQL does not parse: {e}"),
        )
    })?;
    if let Some(what) = forbidden_sql(&expr) {
        return Err(invalid(
            location,
            format!(
                "`{key}`: {what} not allowed in rule SQL (a rule is one expression over the batch's rows, evaluated in one scan)"
            ),
        ));
    }
    let next = parser.peek_token();
    if next.token != Token::EOF {
        return Err(invalid(
            location,
            format!(
                "`{key}`: expected one SQL expression, found more after it: `{}`",
                next.token
            ),
        ));
    }
    Ok(SqlText { text, location })
}

/// Set-returning (table) functions: they belong in `FROM`, which a rule
/// expression has none of, and can multiply rows.
const TABLE_FUNCTIONS: &[&str] = &["generate_series", "range", "unnest"];

/// What in a parsed rule expression could reach beyond the batch's rows or
/// run unbounded work of its own: a subquery (scalar, `EXISTS`, `IN`,
/// `ANY`/`ALL`, or as a function argument), a table reference, or a table
/// function. `None` when there is nothing of the kind.
fn forbidden_sql(expr: &datafusion::sql::sqlparser::ast::Expr) -> Option<String> {
    use datafusion::sql::sqlparser::ast::{
        Expr, FunctionArguments, visit_expressions, visit_relations,
    };
    use std::ops::ControlFlow;
    let found = visit_expressions(expr, |e| match e {
        Expr::Subquery(_) | Expr::InSubquery { .. } => {
            ControlFlow::Break("a subquery is".to_string())
        }
        Expr::Exists { .. } => ControlFlow::Break("an EXISTS subquery is".to_string()),
        Expr::Function(f) if matches!(f.args, FunctionArguments::Subquery(_)) => {
            ControlFlow::Break("a subquery is".to_string())
        }
        Expr::Function(f) => {
            let name = f.name.to_string().to_ascii_lowercase();
            let last = name.rsplit('.').next().unwrap_or(&name).trim_matches('"');
            if TABLE_FUNCTIONS.contains(&last) {
                ControlFlow::Break(format!("the table function `{last}` is"))
            } else {
                ControlFlow::Continue(())
            }
        }
        _ => ControlFlow::Continue(()),
    });
    if let ControlFlow::Break(what) = found {
        return Some(what);
    }
    match visit_relations(expr, |r| ControlFlow::Break(r.to_string())) {
        ControlFlow::Break(table) => Some(format!("a table reference (`{table}`) is")),
        ControlFlow::Continue(()) => None,
    }
}

fn non_empty_column(column: String, location: &SourceLocation) -> Result<String> {
    if column.is_empty() {
        Err(invalid(location.clone(), "column name must not be empty"))
    } else {
        Ok(column)
    }
}

fn at(path: &Path, location: Location) -> SourceLocation {
    SourceLocation {
        file: path.to_path_buf(),
        line: location.line().max(1),
        column: location.column().max(1),
    }
}

fn invalid(location: SourceLocation, message: impl Into<String>) -> RuleError {
    RuleError::Invalid {
        location,
        message: message.into(),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// serde-saphyr's message without its own "at line …" suffix or snippet.
fn yaml_message(err: &serde_saphyr::Error) -> String {
    let text = err.without_snippet().to_string();
    let first = text.lines().next().unwrap_or_default();
    let trimmed = match first.rfind(" at line ") {
        Some(i) => &first[..i],
        None => first,
    };
    one_line(trimmed)
}
