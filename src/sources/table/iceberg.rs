//! Apache Iceberg tables on a file system (Hadoop-style tables and tables
//! a catalog keeps in a warehouse folder): the snapshots of the current
//! lineage, what one snapshot added, and the files live at a snapshot.
//!
//! Why not the `iceberg` crate: every release of it (0.10.1 is the newest)
//! needs arrow and parquet 58 while this project is on 59 (DataFusion 55);
//! it would build a second arrow and an unpatched second parquet (99 more
//! crates in the lock; figures in docs/agent.md, "Tables"). What a batch
//! needs is small and fixed by the spec, so it is read here: the newest
//! metadata file (JSON, through serde; gzip-compressed ones through
//! `flate2`) → the snapshots → each snapshot's
//! manifest list and manifests (Avro, through the `apache-avro` crate; no
//! hand-written decoding) → their entries.
//!
//! A table's *version* is its snapshot's sequence number (format v2 and
//! later; on a v1 table, which has none, the snapshot's position in the
//! lineage, from 1). Snapshot ids are random, so they cannot order
//! batches; they are reported next to the version.
//!
//! A snapshot's batch is the data files its manifests list as ADDED by it.
//! `replace` (compaction) and `delete` snapshots bring no new rows and are
//! skipped, as are snapshots that add nothing. Delete files (v2 position or
//! equality deletes, v3 deletion vectors) are never ignored: a snapshot
//! adding only delete files is skipped saying so; one adding delete files
//! next to data files is an error report (the rows they delete cannot be
//! applied to a plain Parquet scan); a baseline of a snapshot with live
//! delete files is refused. Data files that are not Parquet (ORC, Avro) are
//! an error report too.
//!
//! Paths in the metadata are absolute (`file:/…`, `s3://…`). Those under
//! the table's recorded `location` are read under the location the table
//! was found at, so a table that was copied or moved (the committed test
//! fixture is one, and so is a local table uploaded to an object store)
//! reads its own files.
//!
//! A table a REST catalog keeps ([`IcebergTable::open_catalog`]) takes its
//! metadata from the catalog's answer ([`super::catalog`]) instead of the
//! newest file in `metadata/`; everything after that is the same.
//!
//! On an object store ([`TableFiles`]) the metadata and manifests are read
//! with GETs through the lake's client, `metadata/` is listed with one
//! delimiter LIST (per 1,000 names) when there is no `version-hint.text`,
//! and data files are named by their URLs for the engine's ranged reads.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use apache_avro::types::Value as Avro;
use serde::Deserialize;

use super::catalog::RestCatalog;
use super::files::TableFiles;
use super::{DataFile, TableError, VersionChanges};
use crate::location::{ObjectStoreOptions, ObjectUrl};
use crate::rules::{CatalogConfig, TableFormat};

const FORMAT: TableFormat = TableFormat::Iceberg;

/// Manifest entry status: added by the snapshot that wrote the manifest.
const ADDED: i64 = 1;
/// Manifest entry status: removed by that snapshot.
const DELETED: i64 = 2;
/// Data file content: data (1 and 2 are position and equality deletes).
const DATA: i64 = 0;

/// The parts of a table metadata file this module reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Metadata {
    format_version: u8,
    location: String,
    #[serde(default)]
    current_snapshot_id: Option<i64>,
    /// The highest sequence number the table has given (v2 and later).
    #[serde(default)]
    last_sequence_number: Option<u64>,
    #[serde(default)]
    snapshots: Vec<Snapshot>,
    #[serde(default)]
    partition_specs: Vec<PartitionSpec>,
    /// Format v1 tables may only have this (the one spec, id 0).
    #[serde(default)]
    partition_spec: Vec<PartitionField>,
    /// The table's schemas (format v2 and later; v1 may list them too).
    #[serde(default)]
    schemas: Vec<SchemaDef>,
    /// Format v1 tables' one schema.
    #[serde(default)]
    schema: Option<SchemaDef>,
    /// The current schema's id (v2; v1 tables may give it too).
    #[serde(default)]
    current_schema_id: Option<i64>,
}

/// A schema: its fields (the parts read here: ids and types, for the
/// partition values' human forms). Fields stay JSON: a primitive type is a
/// name (`timestamptz`, `decimal(9,2)`), a nested one an object with its own
/// `fields`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct SchemaDef {
    #[serde(default)]
    schema_id: Option<i64>,
    #[serde(default)]
    fields: Vec<serde_json::Value>,
}

impl Metadata {
    /// The primitive type name of the field `id` in the table's schemas
    /// (nested struct fields included), the current schema first (a
    /// field's type may have been widened since); `None` when none has it.
    fn field_type(&self, id: i64) -> Option<&str> {
        fn find(fields: &[serde_json::Value], id: i64, depth: usize) -> Option<&str> {
            // Nesting is bounded: a hostile document cannot recurse deeply.
            if depth > 32 {
                return None;
            }
            fields.iter().find_map(|field| {
                let kind = field.get("type")?;
                if field.get("id").and_then(|v| v.as_i64()) == Some(id) {
                    return kind.as_str();
                }
                find(kind.get("fields")?.as_array()?, id, depth + 1)
            })
        }
        let is_current =
            |s: &&SchemaDef| s.schema_id.is_some() && s.schema_id == self.current_schema_id;
        let current = self.schemas.iter().filter(is_current);
        let others = self.schemas.iter().filter(|s| !is_current(s));
        current
            .chain(others)
            .chain(&self.schema)
            .find_map(|schema| find(&schema.fields, id, 0))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Snapshot {
    snapshot_id: i64,
    #[serde(default)]
    parent_snapshot_id: Option<i64>,
    #[serde(default)]
    sequence_number: Option<u64>,
    #[serde(default)]
    timestamp_ms: i64,
    #[serde(default)]
    manifest_list: Option<String>,
    /// Format v1 snapshots without a manifest list name their manifests.
    #[serde(default)]
    manifests: Option<Vec<String>>,
    #[serde(default)]
    summary: BTreeMap<String, serde_json::Value>,
}

impl Snapshot {
    fn operation(&self) -> String {
        self.summary
            .get("operation")
            .and_then(|v| v.as_str())
            .unwrap_or("unknown")
            .to_string()
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct PartitionSpec {
    spec_id: i32,
    #[serde(default)]
    fields: Vec<PartitionField>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct PartitionField {
    name: String,
    transform: String,
    /// The source column's field id (its type gives the value's form).
    #[serde(default)]
    source_id: Option<i64>,
}

/// A manifest as the manifest list names it.
struct ManifestRef {
    path: String,
    /// 0: data files; 1: delete files.
    content: i64,
    spec_id: i32,
    added_snapshot_id: Option<i64>,
}

/// One manifest entry.
struct Entry {
    status: i64,
    snapshot_id: Option<i64>,
    content: i64,
    path: String,
    format: String,
    size: u64,
    /// Identity fields' values (column values).
    partition: BTreeMap<String, String>,
    /// Other fields' values in Iceberg's human form (reports only).
    transformed: BTreeMap<String, String>,
}

/// An open Iceberg table: its newest metadata, read again by [`Self::refresh`].
pub struct IcebergTable {
    location: String,
    files: TableFiles,
    metadata: Metadata,
    /// The current snapshot's lineage, oldest first, with each version.
    lineage: Vec<(u64, Snapshot)>,
    /// The REST catalog that says where the current metadata is; `None`
    /// for a table found in a folder (its newest metadata file is current).
    catalog: Option<Box<CatalogTable>>,
}

/// A catalog-managed table's catalog, and how its files are reached.
struct CatalogTable {
    catalog: RestCatalog,
    options: ObjectStoreOptions,
}

/// `LoadTableResult`: what a REST catalog answers for a table.
#[derive(Debug, Deserialize)]
struct LoadTable {
    metadata: Metadata,
}

/// An error as one line.
fn one_line(e: impl std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A metadata file's name without its suffix, and whether it is
/// gzip-compressed: `*.metadata.json`, `*.gz.metadata.json` (what Iceberg
/// writers produce with `write.metadata.compression-codec=gzip`) or the
/// older `*.metadata.json.gz`.
fn metadata_stem(name: &str) -> Option<(&str, bool)> {
    if let Some(stem) = name.strip_suffix(".gz.metadata.json") {
        return Some((stem, true));
    }
    if let Some(stem) = name.strip_suffix(".metadata.json.gz") {
        return Some((stem, true));
    }
    name.strip_suffix(".metadata.json")
        .map(|stem| (stem, false))
}

/// Whether `name` is a metadata file's (compressed or not).
pub fn is_metadata_file(name: &str) -> bool {
    metadata_stem(name).is_some()
}

/// The largest a metadata file may grow to when decompressed: far above any
/// real table's, low enough that a hostile file cannot take the memory.
const MAX_METADATA_BYTES: u64 = 256 << 20;

/// A metadata file's JSON bytes: gunzipped when its name says gzip.
fn metadata_json(name: &str, bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    use std::io::Read;
    if !metadata_stem(name).is_some_and(|(_, gz)| gz) {
        return Ok(bytes);
    }
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(bytes.as_slice())
        .take(MAX_METADATA_BYTES + 1)
        .read_to_end(&mut json)
        .map_err(|e| format!("not gzip: {e}"))?;
    if json.len() as u64 > MAX_METADATA_BYTES {
        return Err(format!(
            "decompresses to more than {} MiB",
            MAX_METADATA_BYTES >> 20
        ));
    }
    Ok(json)
}

/// The version number in a metadata file's name: `v3.metadata.json`
/// (Hadoop tables) or `00003-<uuid>.metadata.json` (catalogs), either
/// possibly gzip-compressed (`v3.gz.metadata.json`).
fn metadata_number(name: &str) -> Option<u64> {
    let (stem, _) = metadata_stem(name)?;
    let digits = stem.strip_prefix('v').unwrap_or(stem);
    let digits = digits.split('-').next()?;
    digits.parse().ok()
}

/// A path as the metadata writes it, without a `file:` scheme; `None` for
/// another scheme (an object store).
fn plain_path(path: &str) -> Option<&str> {
    if let Some(rest) = path.strip_prefix("file:") {
        // file:///a, file://host/a (only an empty host is local), file:/a
        return match rest.strip_prefix("//") {
            Some(after) => after.starts_with('/').then_some(after),
            None => Some(rest),
        };
    }
    (!path.contains("://")).then_some(path)
}

/// An Avro value without its union wrapper.
fn bare(value: &Avro) -> &Avro {
    match value {
        Avro::Union(_, inner) => bare(inner),
        other => other,
    }
}

fn field<'a>(record: &'a Avro, name: &str) -> Option<&'a Avro> {
    let Avro::Record(fields) = bare(record) else {
        return None;
    };
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| bare(v))
        .filter(|v| !matches!(v, Avro::Null))
}

fn long(value: Option<&Avro>) -> Option<i64> {
    match value? {
        Avro::Int(i) => Some(i64::from(*i)),
        Avro::Long(l) => Some(*l),
        _ => None,
    }
}

fn string(value: Option<&Avro>) -> Option<String> {
    match value? {
        Avro::String(s) | Avro::Enum(_, s) => Some(s.clone()),
        _ => None,
    }
}

/// An identity (or `truncate[W]`) partition value as Iceberg writes it in
/// paths (`Transform.toHumanString`; pyiceberg's `to_human_string`, the
/// reference of the tests), given the source column's type (`None` when
/// the schema does not say): dates `2024-05-01`, times `13:45:00` (with
/// `.ffffff` when there are microseconds), timestamps `2024-05-01T13:00:00`
/// (`+00:00` for `timestamptz`), decimals at their scale (`12.30`), floats
/// as Python prints them (`0.10000000149011612` for a float32 0.1), UUIDs
/// hyphenated, binary and fixed values in base64. `None` for null and for
/// what no form is known for.
fn partition_value(value: &Avro, source_type: Option<&str>) -> Option<String> {
    let kind = source_type.unwrap_or("");
    match bare(value) {
        Avro::String(s) | Avro::Enum(_, s) => Some(s.clone()),
        Avro::Boolean(b) => Some(b.to_string()),
        Avro::Int(i) => integer_value(i64::from(*i), kind),
        Avro::Long(l) => integer_value(*l, kind),
        Avro::Date(days) => human_day(i64::from(*days)),
        Avro::TimeMicros(micros) => human_time(*micros),
        Avro::TimeMillis(millis) => human_time(i64::from(*millis) * 1_000),
        Avro::TimestampMicros(micros) | Avro::LocalTimestampMicros(micros) => {
            human_timestamp(*micros, kind == "timestamptz")
        }
        Avro::TimestampMillis(millis) | Avro::LocalTimestampMillis(millis) => {
            human_timestamp(millis.checked_mul(1_000)?, kind == "timestamptz")
        }
        Avro::Float(f) => Some(python_float(f64::from(*f))),
        Avro::Double(d) => Some(python_float(*d)),
        Avro::Uuid(u) => Some(u.hyphenated().to_string()),
        Avro::Decimal(d) => {
            let bytes = <Vec<u8>>::try_from(d).ok()?;
            human_decimal(&bytes, decimal_scale(kind)?)
        }
        Avro::Bytes(bytes) | Avro::Fixed(_, bytes) => {
            if kind == "uuid" {
                uuid::Uuid::from_slice(bytes)
                    .ok()
                    .map(|u| u.hyphenated().to_string())
            } else if kind.starts_with("decimal") {
                human_decimal(bytes, decimal_scale(kind)?)
            } else {
                use base64::Engine as _;
                Some(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
        }
        _ => None,
    }
}

/// An integer partition value: a date, time or timestamp when the source
/// column is one (a manifest may carry them without Avro logical types).
fn integer_value(value: i64, kind: &str) -> Option<String> {
    match kind {
        "date" => human_day(value),
        "time" => human_time(value),
        "timestamp" => human_timestamp(value, false),
        "timestamptz" => human_timestamp(value, true),
        _ => Some(value.to_string()),
    }
}

/// Days since 1970-01-01 as `2024-05-01`.
fn human_day(days: i64) -> Option<String> {
    chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?
        .checked_add_signed(chrono::TimeDelta::try_days(days)?)
        .map(|d| d.format("%Y-%m-%d").to_string())
}

/// Microseconds since midnight as Python's `time.isoformat()`.
fn human_time(micros: i64) -> Option<String> {
    let seconds = u32::try_from(micros.div_euclid(1_000_000)).ok()?;
    let fraction = u32::try_from(micros.rem_euclid(1_000_000)).ok()?;
    let time = chrono::NaiveTime::from_num_seconds_from_midnight_opt(seconds, fraction * 1_000)?;
    Some(with_micros(time.format("%H:%M:%S").to_string(), fraction))
}

/// Microseconds since the epoch as Python's `datetime.isoformat()`
/// (`+00:00` for a `timestamptz`). Python's years are 1 to 9999.
fn human_timestamp(micros: i64, utc: bool) -> Option<String> {
    let at = chrono::DateTime::from_timestamp_micros(micros)?.naive_utc();
    if !(1..=9999).contains(&chrono::Datelike::year(&at)) {
        return None;
    }
    let fraction = u32::try_from(micros.rem_euclid(1_000_000)).ok()?;
    let text = with_micros(at.format("%Y-%m-%dT%H:%M:%S").to_string(), fraction);
    Some(if utc { format!("{text}+00:00") } else { text })
}

/// `text` with `.ffffff` when there are microseconds (Python's isoformat).
fn with_micros(text: String, micros: u32) -> String {
    if micros == 0 {
        text
    } else {
        format!("{text}.{micros:06}")
    }
}

/// The scale of a `decimal(P,S)` type name.
fn decimal_scale(kind: &str) -> Option<u32> {
    let inner = kind.strip_prefix("decimal(")?.strip_suffix(')')?;
    inner.split(',').nth(1)?.trim().parse().ok()
}

/// A decimal's unscaled big-endian two's-complement bytes at `scale`, as
/// Python's `str(Decimal)` writes it (what pyiceberg shows): `12.30`,
/// `-0.05`; exponent form (`1E-7`) when the adjusted exponent is below -6.
fn human_decimal(bytes: &[u8], scale: u32) -> Option<String> {
    if bytes.len() > 16 || scale > 38 {
        return None;
    }
    let unscaled = if bytes.is_empty() {
        0
    } else {
        let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0 };
        let mut wide = [fill; 16];
        wide[16 - bytes.len()..].copy_from_slice(bytes);
        i128::from_be_bytes(wide)
    };
    let sign = if unscaled < 0 { "-" } else { "" };
    let digits = unscaled.unsigned_abs().to_string();
    let scale = scale as usize;
    let adjusted = digits.len() as i64 - 1 - scale as i64;
    if adjusted < -6 {
        let (first, rest) = digits.split_at(1);
        let rest = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        return Some(format!("{sign}{first}{rest}E{adjusted}"));
    }
    if scale == 0 {
        return Some(format!("{sign}{digits}"));
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    Some(format!("{sign}{int}.{frac}"))
}

/// A double as Python's `repr` writes it: the shortest digits that read
/// back the same, fixed notation for exponents from -4 to 15 (with `.0`
/// for integers), `1e+20` / `1.5e-07` form beyond; `nan`, `inf`, `-inf`.
fn python_float(value: f64) -> String {
    if value.is_nan() {
        return "nan".to_string();
    }
    if value.is_infinite() {
        return if value > 0.0 { "inf" } else { "-inf" }.to_string();
    }
    // Rust's `{:e}` gives the shortest round-trip digits: `1.5e-7`.
    let scientific = format!("{value:e}");
    let Some((mantissa, exponent)) = scientific.split_once('e') else {
        return scientific;
    };
    let Ok(exponent) = exponent.parse::<i32>() else {
        return scientific;
    };
    if (-4..16).contains(&exponent) {
        let text = format!("{value}");
        return if text.contains('.') {
            text
        } else {
            format!("{text}.0")
        };
    }
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exponent.abs())
}

/// A partition field's value as Iceberg writes it in paths
/// (`Transform.toHumanString`; pyiceberg's `to_human_string`): identity and
/// `truncate[W]` values as [`partition_value`] gives them, `bucket[N]` as
/// its number, `year` as `2024`, `month` as `2024-05`, `day` as
/// `2024-05-01`, `hour` as `2024-05-01-13`. `None` for null, `void` and
/// what no transform gives.
fn human_partition_value(
    transform: &str,
    value: &Avro,
    source_type: Option<&str>,
) -> Option<String> {
    let int = || match bare(value) {
        Avro::Int(i) | Avro::Date(i) => Some(i64::from(*i)),
        Avro::Long(l) => Some(*l),
        _ => None,
    };
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
    match transform {
        "identity" => partition_value(value, source_type),
        t if t.starts_with("truncate[") => partition_value(value, source_type),
        t if t.starts_with("bucket[") => int().map(|b| b.to_string()),
        "year" => int()
            .and_then(|y| y.checked_add(1970))
            .map(|y| format!("{y:04}")),
        "month" => {
            int().map(|m| format!("{:04}-{:02}", 1970 + m.div_euclid(12), m.rem_euclid(12) + 1))
        }
        "day" => human_day(int()?),
        "hour" => epoch
            .and_hms_opt(0, 0, 0)?
            .checked_add_signed(chrono::TimeDelta::try_hours(int()?)?)
            .map(|t| t.format("%Y-%m-%d-%H").to_string()),
        _ => None,
    }
}

impl IcebergTable {
    /// Opens the table at `location`: a folder whose `metadata/` holds at
    /// least one `*.metadata.json` (the newest, or the one
    /// `version-hint.text` names, is the current one).
    pub async fn open(location: &Path, options: &ObjectStoreOptions) -> Result<Self, TableError> {
        let name = location.display().to_string();
        let files = TableFiles::open(FORMAT, location, options)?;
        let metadata = read_metadata(&name, &files).await?;
        let mut table = Self {
            location: name,
            files,
            metadata,
            lineage: Vec::new(),
            catalog: None,
        };
        table.lineage = table.lineage()?;
        Ok(table)
    }

    /// Opens the table a REST catalog keeps: the catalog's answer is its
    /// metadata, and its files are read from the metadata's `location` (a
    /// local folder or an object-store prefix, reached with `options`).
    /// Reports name the table by [`CatalogConfig::key`].
    pub async fn open_catalog(
        config: &CatalogConfig,
        options: &ObjectStoreOptions,
    ) -> Result<Self, TableError> {
        let catalog = RestCatalog::connect(config).await?;
        let name = config.key();
        let metadata = load_from_catalog(&name, &catalog).await?;
        let files = catalog_files(&name, &metadata.location, options)?;
        let mut table = Self {
            location: name,
            files,
            metadata,
            lineage: Vec::new(),
            catalog: Some(Box::new(CatalogTable {
                catalog,
                options: options.clone(),
            })),
        };
        table.lineage = table.lineage()?;
        Ok(table)
    }

    /// Reads the current metadata again (the agent's poll): the newest
    /// metadata file, or the catalog's answer.
    pub async fn refresh(&mut self) -> Result<(), TableError> {
        match self.catalog.as_deref() {
            None => self.metadata = read_metadata(&self.location, &self.files).await?,
            Some(CatalogTable { catalog, options }) => {
                let metadata = load_from_catalog(&self.location, catalog).await?;
                // A table the catalog moved is read where it is now.
                if metadata.location != self.metadata.location {
                    self.files = catalog_files(&self.location, &metadata.location, options)?;
                }
                self.metadata = metadata;
            }
        }
        self.lineage = self.lineage()?;
        Ok(())
    }

    fn log_error(&self, reason: impl std::fmt::Display) -> TableError {
        TableError::Log {
            format: FORMAT,
            location: self.location.clone(),
            reason: one_line(reason),
        }
    }

    fn unsupported(&self, reason: String) -> TableError {
        TableError::Unsupported {
            format: FORMAT,
            location: self.location.clone(),
            reason,
        }
    }

    /// The current snapshot and its ancestors still in the metadata,
    /// oldest first, each with its version.
    fn lineage(&self) -> Result<Vec<(u64, Snapshot)>, TableError> {
        let by_id: HashMap<i64, &Snapshot> = self
            .metadata
            .snapshots
            .iter()
            .map(|s| (s.snapshot_id, s))
            .collect();
        let mut chain = Vec::new();
        // -1 is how v1 writers say "no current snapshot".
        let mut next = self.metadata.current_snapshot_id.filter(|id| *id != -1);
        while let Some(id) = next {
            let Some(snapshot) = by_id.get(&id) else {
                if chain.is_empty() {
                    return Err(self.log_error(format!(
                        "the current snapshot {id} is not among the table's snapshots"
                    )));
                }
                break; // expired: the lineage the metadata still holds ends here
            };
            if chain.len() > by_id.len() {
                return Err(self.log_error("the snapshots' parents form a cycle"));
            }
            chain.push((*snapshot).clone());
            next = snapshot.parent_snapshot_id;
        }
        chain.reverse();
        let numbered = self.metadata.format_version >= 2;
        let mut lineage = Vec::with_capacity(chain.len());
        for (position, snapshot) in chain.into_iter().enumerate() {
            let version = match (numbered, snapshot.sequence_number) {
                (true, Some(n)) => n,
                (true, None) => {
                    return Err(self.log_error(format!(
                        "snapshot {} has no sequence number",
                        snapshot.snapshot_id
                    )));
                }
                (false, _) => position as u64 + 1,
            };
            if lineage.last().is_some_and(|(v, _)| *v >= version) {
                return Err(self.log_error(format!(
                    "snapshot {} has sequence number {version}, not after its parent's",
                    snapshot.snapshot_id
                )));
            }
            lineage.push((version, snapshot));
        }
        Ok(lineage)
    }

    /// The highest sequence number the table has given (format v2 and
    /// later): it only grows, whatever snapshot is current.
    pub fn last_sequence_number(&self) -> Option<u64> {
        if self.metadata.format_version < 2 {
            return None;
        }
        self.metadata.last_sequence_number
    }

    /// The newest version; `None` while the table has no snapshot.
    pub fn latest_version(&self) -> Option<u64> {
        self.lineage.last().map(|(v, _)| *v)
    }

    /// The first version, when the metadata still holds the lineage from
    /// the table's first snapshot (none of it expired).
    pub fn first_version(&self) -> Option<u64> {
        self.lineage
            .first()
            .filter(|(_, s)| s.parent_snapshot_id.is_none())
            .map(|(v, _)| *v)
    }

    /// The version after `recorded` in the lineage.
    pub fn version_after(&self, recorded: u64) -> Option<u64> {
        self.lineage.iter().map(|(v, _)| *v).find(|v| *v > recorded)
    }

    /// The snapshot id of `version`.
    pub fn snapshot_id(&self, version: u64) -> Option<i64> {
        self.find(version).ok().map(|s| s.snapshot_id)
    }

    /// The operation of the snapshot of `version`.
    pub fn operation(&self, version: u64) -> Result<String, TableError> {
        Ok(self.find(version)?.operation())
    }

    fn find(&self, version: u64) -> Result<&Snapshot, TableError> {
        self.lineage
            .iter()
            .find(|(v, _)| *v == version)
            .map(|(_, s)| s)
            .ok_or_else(|| TableError::NoVersion {
                format: FORMAT,
                location: self.location.clone(),
                version,
            })
    }

    /// A path from the metadata as the path of a file to read: under the
    /// table's recorded location, the same path under the location it was
    /// found at; otherwise a local absolute path (local tables) or an
    /// object in the table's bucket (object-store tables).
    fn file_path(&self, path: &str) -> Result<PathBuf, TableError> {
        let elsewhere = || self.unsupported(format!("`{path}` is not in the table's store"));
        let recorded = self.metadata.location.trim_end_matches('/');
        let under = |whole: &str, root: &str| {
            whole
                .strip_prefix(root)
                .and_then(|rest| rest.strip_prefix('/'))
                .map(str::to_string)
        };
        let relative = match (plain_path(path), plain_path(recorded)) {
            (Some(plain), Some(recorded)) => under(plain, recorded),
            _ => under(path, recorded),
        };
        if let Some(relative) = relative {
            return Ok(self.files.join(&relative));
        }
        match self.files.object_url() {
            None => {
                let local = PathBuf::from(plain_path(path).ok_or_else(elsewhere)?);
                if local.is_absolute() {
                    Ok(local)
                } else {
                    Err(elsewhere())
                }
            }
            Some(table) => match ObjectUrl::parse(path) {
                Some(Ok(object))
                    if object.scheme == table.scheme && object.bucket == table.bucket =>
                {
                    Ok(object.to_path())
                }
                _ => Err(elsewhere()),
            },
        }
    }

    /// Reads the Avro file at `path` (a manifest list or a manifest) and
    /// hands each record to `visit`, one at a time: a large manifest is
    /// never held decoded whole.
    async fn read_avro(
        &self,
        path: &str,
        mut visit: impl FnMut(&Avro) -> Result<(), String>,
    ) -> Result<(), TableError> {
        let file = self.file_path(path)?;
        let shown = file.display();
        let bytes = self
            .files
            .read(FORMAT, &self.location, &file)
            .await?
            .ok_or_else(|| self.log_error(format!("{shown}: no such file")))?;
        decode_avro(&bytes, &mut visit).map_err(|e| self.log_error(format!("{shown}: {e}")))
    }

    /// The manifests of a snapshot.
    async fn manifests(&self, snapshot: &Snapshot) -> Result<Vec<ManifestRef>, TableError> {
        let Some(list) = &snapshot.manifest_list else {
            // v1 without a manifest list: data manifests of the default spec.
            return Ok(snapshot
                .manifests
                .iter()
                .flatten()
                .map(|path| ManifestRef {
                    path: path.clone(),
                    content: DATA,
                    spec_id: 0,
                    added_snapshot_id: None,
                })
                .collect());
        };
        let mut manifests = Vec::new();
        self.read_avro(list, |record| {
            manifests.push(manifest_ref(record)?);
            Ok(())
        })
        .await?;
        Ok(manifests)
    }

    async fn entries(&self, manifest: &ManifestRef) -> Result<Vec<Entry>, TableError> {
        let fields = spec_fields(&self.metadata, manifest.spec_id);
        let mut entries = Vec::new();
        self.read_avro(&manifest.path, |record| {
            entries.push(entry(&fields, manifest.content, record)?);
            Ok(())
        })
        .await?;
        Ok(entries)
    }

    fn data_file(&self, entry: &Entry) -> Result<DataFile, TableError> {
        Ok(DataFile {
            path: self.file_path(&entry.path)?,
            size: entry.size,
            partitions: entry.partition.clone(),
            transformed: entry.transformed.clone(),
        })
    }

    /// What the snapshot of `version` added.
    pub async fn changes(&self, version: u64) -> Result<VersionChanges, TableError> {
        let snapshot = self.find(version)?;
        let id = snapshot.snapshot_id;
        let operation = snapshot.operation();
        let mut files = Vec::new();
        let mut delete_files = 0usize;
        let mut removed = 0usize;
        let mut not_parquet = None;
        for manifest in self.manifests(snapshot).await? {
            // Entries a snapshot adds or removes are in manifests it wrote.
            if manifest.added_snapshot_id.is_some_and(|added| added != id) {
                continue;
            }
            for entry in self.entries(&manifest).await? {
                // A null snapshot id is inherited from the manifest.
                if entry.snapshot_id.or(manifest.added_snapshot_id) != Some(id) {
                    continue;
                }
                match (entry.status, entry.content) {
                    (ADDED, DATA) => {
                        if !entry.format.eq_ignore_ascii_case("parquet") {
                            not_parquet.get_or_insert_with(|| {
                                format!(
                                    "data file `{}` is {}; only Parquet data files are read",
                                    entry.path, entry.format
                                )
                            });
                        }
                        files.push(self.data_file(&entry)?);
                    }
                    (ADDED, _) => delete_files += 1,
                    (DELETED, _) => removed += 1,
                    _ => {}
                }
            }
        }
        let mut unreadable = not_parquet;
        let skipped = if files.is_empty() {
            Some(if delete_files > 0 {
                format!(
                    "{operation} added {delete_files} delete file(s) (rows deleted in place) and no data files"
                )
            } else if removed > 0 {
                format!("{operation} removed {removed} file(s) and added none")
            } else {
                format!("{operation} added no data files")
            })
        } else if operation == "delete" {
            // A copy-on-write delete rewrites files without the deleted
            // rows: what it adds are rows evaluated before.
            Some(format!(
                "delete rewrote {} file(s) without the deleted rows: no new data",
                files.len()
            ))
        } else if operation == "replace" {
            Some(format!(
                "replace rewrote {removed} file(s) into {} without new data",
                files.len()
            ))
        } else {
            if delete_files > 0 {
                unreadable.get_or_insert_with(|| {
                    format!(
                        "snapshot {id} adds {delete_files} delete file(s) (rows deleted in place) with its data files; reading them as plain Parquet would count deleted rows"
                    )
                });
            }
            None
        };
        if skipped.is_some() {
            files.clear();
            unreadable = None;
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(VersionChanges {
            version,
            snapshot_id: Some(id),
            operation,
            timestamp_ms: snapshot.timestamp_ms,
            files,
            skipped,
            unreadable,
        })
    }

    /// The data files live at `version` (None: the latest) and that version.
    pub async fn snapshot(&self, version: Option<u64>) -> Result<(u64, Vec<DataFile>), TableError> {
        let version = match version.or(self.latest_version()) {
            Some(v) => v,
            None => {
                return Err(TableError::Empty {
                    format: FORMAT,
                    location: self.location.clone(),
                });
            }
        };
        let snapshot = self.find(version)?;
        let mut files = Vec::new();
        for manifest in self.manifests(snapshot).await? {
            for entry in self.entries(&manifest).await? {
                if entry.status == DELETED {
                    continue;
                }
                if entry.content != DATA {
                    return Err(self.unsupported(format!(
                        "version {version} has live delete files (rows deleted in place), e.g. `{}`",
                        entry.path
                    )));
                }
                if !entry.format.eq_ignore_ascii_case("parquet") {
                    return Err(self.unsupported(format!(
                        "data file `{}` is {}; only Parquet data files are read",
                        entry.path, entry.format
                    )));
                }
                files.push(self.data_file(&entry)?);
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok((version, files))
    }
}

/// The most one Avro value (a string, a block decompressed) may allocate
/// while manifests are decoded: far above any real manifest's, low enough
/// that a hostile length or a decompression bomb cannot take the memory
/// (apache-avro's own default is 512 MiB).
const MAX_AVRO_ALLOCATION: usize = 64 << 20;

/// Decodes an Avro object container file, record by record.
fn decode_avro(
    bytes: &[u8],
    visit: &mut dyn FnMut(&Avro) -> Result<(), String>,
) -> Result<(), String> {
    // A process-wide setting, taken by the first call; later calls with the
    // same value change nothing.
    apache_avro::util::max_allocation_bytes(MAX_AVRO_ALLOCATION);
    let reader = apache_avro::Reader::new(bytes).map_err(one_line)?;
    for record in reader {
        visit(&record.map_err(one_line)?)?;
    }
    Ok(())
}

/// A manifest list's record as the manifest it names.
fn manifest_ref(record: &Avro) -> Result<ManifestRef, String> {
    let path = string(field(record, "manifest_path"))
        .ok_or("a manifest list entry has no manifest_path")?;
    Ok(ManifestRef {
        path,
        content: long(field(record, "content")).unwrap_or(DATA),
        spec_id: long(field(record, "partition_spec_id"))
            .and_then(|id| i32::try_from(id).ok())
            .unwrap_or(0),
        added_snapshot_id: long(field(record, "added_snapshot_id")),
    })
}

/// A partition field with its source column's type, looked up once per
/// manifest (not per entry).
struct SpecField {
    field: PartitionField,
    source_type: Option<String>,
}

/// A partition spec's fields (the v1 `partition-spec` when no spec has the
/// id), each with its source column's type.
fn spec_fields(metadata: &Metadata, spec_id: i32) -> Vec<SpecField> {
    metadata
        .partition_specs
        .iter()
        .find(|s| s.spec_id == spec_id)
        .map(|s| s.fields.clone())
        .unwrap_or_else(|| metadata.partition_spec.clone())
        .into_iter()
        .map(|field| SpecField {
            source_type: field
                .source_id
                .and_then(|id| metadata.field_type(id))
                .map(str::to_string),
            field,
        })
        .collect()
}

/// A manifest's record as its entry (`fields`: the manifest's partition
/// spec; `content`: the manifest's, for v1 entries that have none).
fn entry(fields: &[SpecField], content: i64, record: &Avro) -> Result<Entry, String> {
    let bad = |what: &str| format!("a manifest entry has no {what}");
    let data_file = field(record, "data_file").ok_or_else(|| bad("data_file"))?;
    // Every field's value in Iceberg's human form; only identity fields are
    // column values (what a folder name would carry; a day or a bucket is
    // no column's value).
    let (mut partition, mut transformed) = (BTreeMap::new(), BTreeMap::new());
    if let Some(Avro::Record(values)) = field(data_file, "partition") {
        for (name, value) in values {
            let Some(spec) = fields.iter().find(|f| &f.field.name == name) else {
                continue;
            };
            let f = &spec.field;
            let Some(human) =
                human_partition_value(&f.transform, value, spec.source_type.as_deref())
            else {
                continue;
            };
            let map = if f.transform == "identity" {
                &mut partition
            } else {
                &mut transformed
            };
            map.insert(name.clone(), human);
        }
    }
    Ok(Entry {
        status: long(field(record, "status")).ok_or_else(|| bad("status"))?,
        snapshot_id: long(field(record, "snapshot_id")),
        // v1 manifests have no content: data, or deletes by the manifest's kind.
        content: long(field(data_file, "content")).unwrap_or(content),
        path: string(field(data_file, "file_path")).ok_or_else(|| bad("file_path"))?,
        format: string(field(data_file, "file_format")).unwrap_or_default(),
        size: long(field(data_file, "file_size_in_bytes"))
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0),
        partition,
        transformed,
    })
}

/// Fuzzing entry points (`fuzz/fuzz_targets/iceberg_table.rs`): the
/// parsers a hostile table's files reach, without a file system. Always
/// built (the `fuzzing` feature changes no code), never a user's API.
#[doc(hidden)]
pub mod fuzz {
    use super::*;

    /// A metadata file's bytes (gzip-compressed when `gzip`), then what is
    /// derived from it: the lineage, the versions, every spec field's type.
    pub fn metadata(bytes: &[u8], gzip: bool) {
        let name = if gzip {
            "v1.gz.metadata.json"
        } else {
            "v1.metadata.json"
        };
        let Ok(json) = metadata_json(name, bytes.to_vec()) else {
            return;
        };
        let Ok(metadata) = serde_json::from_slice::<Metadata>(&json) else {
            return;
        };
        for spec in &metadata.partition_specs {
            for field in &spec.fields {
                let _ = field.source_id.map(|id| metadata.field_type(id));
            }
        }
        let table = IcebergTable {
            location: "fuzz".to_string(),
            files: TableFiles::Local(PathBuf::from("/nonexistent-fuzz-table")),
            metadata,
            lineage: Vec::new(),
            catalog: None,
        };
        if let Ok(lineage) = table.lineage() {
            for (version, snapshot) in &lineage {
                let _ = (version, snapshot.operation());
            }
        }
    }

    /// An Avro file read as a manifest list, and as a manifest of a table
    /// with every identity and transform partition the fixtures have.
    pub fn avro(bytes: &[u8]) {
        const METADATA: &str = r#"{"format-version": 2, "location": "/t",
            "schemas": [{"fields": [{"id": 1, "name": "d", "type": "decimal(9,2)"},
                {"id": 2, "name": "ts", "type": "timestamptz"}, {"id": 3, "name": "u", "type": "uuid"}]}],
            "partition-specs": [{"spec-id": 0, "fields": [
                {"name": "d", "transform": "identity", "source-id": 1},
                {"name": "ts", "transform": "identity", "source-id": 2},
                {"name": "u", "transform": "identity", "source-id": 3},
                {"name": "ts_hour", "transform": "hour", "source-id": 2},
                {"name": "d_trunc", "transform": "truncate[10]", "source-id": 1}]}]}"#;
        let Ok(metadata) = serde_json::from_str::<Metadata>(METADATA) else {
            return;
        };
        let fields = spec_fields(&metadata, 0);
        let _ = decode_avro(bytes, &mut |record| {
            let _ = manifest_ref(record);
            let _ = entry(&fields, DATA, record);
            Ok(())
        });
    }
}

/// The current metadata of the table `catalog` keeps (`name`: how
/// messages name it).
async fn load_from_catalog(name: &str, catalog: &RestCatalog) -> Result<Metadata, TableError> {
    let answer = catalog.load_table().await?;
    let loaded: LoadTable = serde_json::from_slice(&answer).map_err(|e| TableError::Log {
        format: FORMAT,
        location: name.to_string(),
        reason: one_line(format!("the catalog's table answer: {e}")),
    })?;
    Ok(loaded.metadata)
}

/// Where a catalog table's files are: its metadata's `location`
/// (`file:/…`, a plain path, or an object-store URL).
fn catalog_files(
    name: &str,
    location: &str,
    options: &ObjectStoreOptions,
) -> Result<TableFiles, TableError> {
    let root = match plain_path(location) {
        Some(path) if Path::new(path).is_absolute() => PathBuf::from(path),
        _ => match ObjectUrl::parse(location) {
            Some(Ok(url)) => url.with_key(url.key.trim_end_matches('/')).to_path(),
            Some(Err(e)) => {
                return Err(TableError::Unsupported {
                    format: FORMAT,
                    location: name.to_string(),
                    reason: one_line(format!("the table's location `{location}`: {e}")),
                });
            }
            None => {
                return Err(TableError::Unsupported {
                    format: FORMAT,
                    location: name.to_string(),
                    reason: format!(
                        "the table's location `{location}` is not a local folder or an s3://, az://, abfss:// or gs:// URL"
                    ),
                });
            }
        },
    };
    TableFiles::open(FORMAT, &root, options)
}

/// Reads the table's current metadata file.
async fn read_metadata(location: &str, files: &TableFiles) -> Result<Metadata, TableError> {
    let not_a_table = |reason: String| TableError::NotATable {
        format: FORMAT,
        location: location.to_string(),
        reason,
    };
    if let TableFiles::Local(root) = files {
        let meta = std::fs::metadata(root).map_err(|e| not_a_table(e.to_string()))?;
        if !meta.is_dir() {
            return Err(not_a_table("not a folder".to_string()));
        }
    }
    let missing = || {
        not_a_table(
            "no Iceberg metadata (`metadata/` with `*.metadata.json` files) in it".to_string(),
        )
    };
    let log_error = |reason: String| TableError::Log {
        format: FORMAT,
        location: location.to_string(),
        reason,
    };
    // A Hadoop table's version-hint.text names the current version; it
    // is written after the metadata file, so a hint naming a missing file
    // is a fault, not a fallback to the listing. (On an object store it
    // saves the LIST of `metadata/` at every poll.)
    let hint = files
        .read(FORMAT, location, &files.join("metadata/version-hint.text"))
        .await?
        .map(|bytes| String::from_utf8_lossy(&bytes).to_string());
    let (name, text) = match hint.as_deref().map(str::trim).map(str::parse::<u64>) {
        Some(Ok(n)) => {
            // Plain or gzip-compressed, as the writer was configured.
            let mut found = None;
            for name in [
                format!("v{n}.metadata.json"),
                format!("v{n}.gz.metadata.json"),
                format!("v{n}.metadata.json.gz"),
            ] {
                let path = files.join(&format!("metadata/{name}"));
                if let Some(bytes) = files.read(FORMAT, location, &path).await? {
                    found = Some((name, bytes));
                    break;
                }
            }
            found.ok_or_else(|| {
                let path = files.join(&format!("metadata/v{n}.metadata.json"));
                log_error(format!("{}: no such file", path.display()))
            })?
        }
        Some(Err(_)) | None => {
            let mut newest: Option<(u64, String)> = None;
            for name in files.names(location, "metadata").await? {
                if let Some(n) = metadata_number(&name)
                    && newest
                        .as_ref()
                        .is_none_or(|(m, other)| (n, &name) > (*m, other))
                {
                    newest = Some((n, name));
                }
            }
            let name = newest.ok_or_else(missing)?.1;
            let path = files.join(&format!("metadata/{name}"));
            let bytes = files
                .read(FORMAT, location, &path)
                .await?
                .ok_or_else(|| log_error(format!("{}: no such file", path.display())))?;
            (name, bytes)
        }
    };
    let path = files.join(&format!("metadata/{name}"));
    let text =
        metadata_json(&name, text).map_err(|e| log_error(format!("{}: {e}", path.display())))?;
    serde_json::from_slice(&text).map_err(|e| log_error(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 16: non-identity partition fields as Iceberg writes them in
    /// paths (the integration test checks them against pyiceberg's own
    /// `to_human_string` on a table it wrote).
    #[test]
    fn issue_16_partition_transforms_read_as_iceberg_writes_them() {
        let h = |t: &str, v: Avro| human_partition_value(t, &v, None);
        assert_eq!(h("year", Avro::Int(54)).as_deref(), Some("2024"));
        assert_eq!(
            h("month", Avro::Int(54 * 12 + 4)).as_deref(),
            Some("2024-05")
        );
        assert_eq!(h("month", Avro::Int(-1)).as_deref(), Some("1969-12"));
        assert_eq!(h("day", Avro::Date(19_844)).as_deref(), Some("2024-05-01"));
        assert_eq!(h("day", Avro::Int(-1)).as_deref(), Some("1969-12-31"));
        assert_eq!(
            h("hour", Avro::Int(19_844 * 24 + 13)).as_deref(),
            Some("2024-05-01-13")
        );
        assert_eq!(h("bucket[16]", Avro::Int(7)).as_deref(), Some("7"));
        assert_eq!(
            h("truncate[2]", Avro::String("UA".into())).as_deref(),
            Some("UA")
        );
        assert_eq!(h("truncate[10]", Avro::Long(120)).as_deref(), Some("120"));
        assert_eq!(
            h("identity", Avro::String("x".into())).as_deref(),
            Some("x")
        );
        // Null (a union's null branch), void and unknown transforms: no value.
        assert_eq!(h("day", Avro::Union(0, Box::new(Avro::Null))), None);
        assert_eq!(h("void", Avro::Int(1)), None);
        assert_eq!(h("zorder", Avro::Int(1)), None);
        // Out of chrono's range: no value, no panic.
        assert_eq!(h("hour", Avro::Long(i64::MAX)), None);
        assert_eq!(h("year", Avro::Long(i64::MAX)), None);
        assert!(h("month", Avro::Long(i64::MIN)).is_some());
    }

    /// Identity values in the forms pyiceberg's `to_human_string` gives
    /// (the integration test checks them on a table pyiceberg wrote).
    #[test]
    fn issue_16_identity_values_read_as_iceberg_writes_them() {
        let v = |value: Avro, kind: &str| partition_value(&value, Some(kind));
        assert_eq!(v(Avro::Double(0.0001), "double").as_deref(), Some("0.0001"));
        assert_eq!(v(Avro::Double(0.00001), "double").as_deref(), Some("1e-05"));
        assert_eq!(
            v(Avro::Double(1.5e-7), "double").as_deref(),
            Some("1.5e-07")
        );
        assert_eq!(
            v(Avro::Double(1e15), "double").as_deref(),
            Some("1000000000000000.0")
        );
        assert_eq!(v(Avro::Double(1e16), "double").as_deref(), Some("1e+16"));
        assert_eq!(v(Avro::Double(-0.0), "double").as_deref(), Some("-0.0"));
        assert_eq!(v(Avro::Double(f64::NAN), "double").as_deref(), Some("nan"));
        assert_eq!(
            v(Avro::Float(0.1), "float").as_deref(),
            Some("0.10000000149011612")
        );
        let decimal = |bytes: &[u8], kind: &str| v(Avro::Fixed(bytes.len(), bytes.to_vec()), kind);
        assert_eq!(
            decimal(&[0x04, 0xCE], "decimal(9, 2)").as_deref(),
            Some("12.30")
        );
        assert_eq!(decimal(&[0xFB], "decimal(9,2)").as_deref(), Some("-0.05"));
        assert_eq!(decimal(&[0x01], "decimal(9,7)").as_deref(), Some("1E-7"));
        assert_eq!(decimal(&[0x00], "decimal(9,7)").as_deref(), Some("0E-7"));
        assert_eq!(decimal(&[0x00], "decimal(9,2)").as_deref(), Some("0.00"));
        assert_eq!(decimal(&[0x7B], "decimal(9,0)").as_deref(), Some("123"));
        assert_eq!(decimal(&[0; 17], "decimal(38,2)"), None);
        // Not a decimal, not a uuid: base64.
        assert_eq!(decimal(b"abcd", "fixed[4]").as_deref(), Some("YWJjZA=="));
        assert_eq!(
            v(Avro::Fixed(16, vec![0xAB; 16]), "uuid").as_deref(),
            Some("abababab-abab-abab-abab-abababababab")
        );
        assert_eq!(
            v(Avro::TimestampMicros(-1), "timestamp").as_deref(),
            Some("1969-12-31T23:59:59.999999")
        );
        assert_eq!(
            v(Avro::TimestampMicros(0), "timestamptz").as_deref(),
            Some("1970-01-01T00:00:00+00:00")
        );
        // Raw longs of a timestamp column (no Avro logical type).
        assert_eq!(
            v(Avro::Long(1_714_568_400_000_000), "timestamp").as_deref(),
            Some("2024-05-01T13:00:00")
        );
        assert_eq!(
            v(Avro::TimeMicros(49_500_000_000), "time").as_deref(),
            Some("13:45:00")
        );
        assert_eq!(
            v(Avro::TimeMicros(123), "time").as_deref(),
            Some("00:00:00.000123")
        );
        // Out of range: no value, no panic.
        assert_eq!(v(Avro::TimeMicros(-1), "time"), None);
        assert_eq!(v(Avro::TimeMicros(i64::MAX), "time"), None);
        assert_eq!(v(Avro::TimestampMicros(i64::MIN), "timestamp"), None);
        assert_eq!(v(Avro::TimestampMillis(i64::MAX), "timestamp"), None);
        // A decimal without its scale cannot be shown.
        assert_eq!(v(Avro::Bytes(vec![1]), "decimal"), None);
    }

    proptest::proptest! {
        /// A decimal's text reads back as its unscaled value and scale.
        #[test]
        fn issue_16_decimal_text_reads_back(unscaled in proptest::num::i64::ANY, scale in 0u32..=6) {
            let bytes = i128::from(unscaled).to_be_bytes();
            let text = human_decimal(&bytes, scale).unwrap();
            let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
            proptest::prop_assert_eq!(frac.len(), scale as usize);
            let digits: i128 = format!("{int}{frac}").parse().unwrap();
            proptest::prop_assert_eq!(digits, i128::from(unscaled));
        }

        /// A double's text reads back as the same double.
        #[test]
        fn issue_16_double_text_reads_back(value in proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO) {
            let text = python_float(value);
            let back: f64 = text.parse().unwrap();
            proptest::prop_assert_eq!(back.to_bits(), value.to_bits());
        }
    }

    #[test]
    fn issue_16_metadata_file_names_give_their_version() {
        assert_eq!(metadata_number("v12.metadata.json"), Some(12));
        assert_eq!(
            metadata_number("00003-6f1c2f43-9a52-4c53-a2d2-5b7d0e1d9d7a.metadata.json"),
            Some(3)
        );
        assert_eq!(metadata_number("v7.gz.metadata.json"), Some(7));
        assert_eq!(metadata_number("00012-6f1c2f43.gz.metadata.json"), Some(12));
        assert_eq!(metadata_number("00013-6f1c2f43.metadata.json.gz"), Some(13));
        assert_eq!(metadata_number("snap-1-1-abc.avro"), None);
        assert_eq!(metadata_number("version-hint.text"), None);
    }

    #[test]
    fn issue_16_file_urls_are_local_paths_and_other_schemes_are_not() {
        assert_eq!(
            plain_path("file:///w/t/data/a.parquet"),
            Some("/w/t/data/a.parquet")
        );
        assert_eq!(plain_path("file:/w/t/a.parquet"), Some("/w/t/a.parquet"));
        assert_eq!(plain_path("/w/t/a.parquet"), Some("/w/t/a.parquet"));
        assert_eq!(plain_path("file://host/w/a.parquet"), None);
        assert_eq!(plain_path("s3://bucket/t/a.parquet"), None);
    }
}
