//! The fixed schema of a stream's events, and turning JSON events into Arrow
//! rows without silent casts.
//!
//! A stream's schema comes from its rule file's `schema` check when there is
//! one (each logical type mapped to one concrete Arrow type), else it is
//! inferred from the first events and then held fixed (persisted in the state
//! folder, so a restart does not re-infer it). An event fits when it is a JSON
//! object whose every key is a column and whose every value has the column's
//! JSON type: integers for integer columns (in range), numbers for floats,
//! strings for strings, `true`/`false` for booleans, RFC 3339 strings for
//! timestamps, `YYYY-MM-DD` for dates, `null` for anything. A missing key is a
//! null. Anything else — `"5"` for an integer, `1.5` for an integer, an
//! unknown key, a nested object — makes the event a bad record with a reason,
//! never a cast.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, RecordBatch,
    StringBuilder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::rules::{LogicalType, TimeZoneSpec};

/// How many events inference looks at, at most.
pub const INFER_FROM: usize = 1000;

/// A stream's event schema (all columns nullable).
#[derive(Debug, Clone)]
pub struct EventSchema {
    arrow: SchemaRef,
    index: HashMap<String, usize>,
}

impl PartialEq for EventSchema {
    fn eq(&self, other: &Self) -> bool {
        self.arrow == other.arrow
    }
}

/// What the schema can hold: the Arrow types a JSON value converts to exactly.
fn supported(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Float32
            | DataType::Float64
            | DataType::Utf8
            | DataType::Date32
            | DataType::Timestamp(_, _)
    )
}

impl EventSchema {
    /// A schema of these Arrow fields; every type must be one a JSON value
    /// converts to exactly (see the module doc).
    pub fn from_arrow(schema: &Schema) -> Result<Self, String> {
        let mut fields = Vec::new();
        for f in schema.fields() {
            if !supported(f.data_type()) {
                return Err(format!(
                    "column `{}` has type {}, which stream events cannot carry (use booleans, integers, floats, utf8, date32 or timestamps)",
                    f.name(),
                    f.data_type()
                ));
            }
            fields.push(Field::new(f.name(), f.data_type().clone(), true));
        }
        Ok(Self::new(fields))
    }

    fn new(fields: Vec<Field>) -> Self {
        let index = fields
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name().clone(), i))
            .collect();
        Self {
            arrow: Arc::new(Schema::new(fields)),
            index,
        }
    }

    /// The schema a rule file's `schema` check declares, one concrete Arrow
    /// type per logical type (`integer` → int64, `float` → float64,
    /// `timestamp` → microseconds).
    pub fn from_rule(columns: &[(String, LogicalType)]) -> Result<Self, String> {
        let mut fields = Vec::new();
        for (name, logical) in columns {
            let data_type = match logical {
                LogicalType::Boolean => DataType::Boolean,
                LogicalType::Int8 => DataType::Int8,
                LogicalType::Int16 => DataType::Int16,
                LogicalType::Int32 => DataType::Int32,
                LogicalType::Int64 | LogicalType::AnyInteger => DataType::Int64,
                LogicalType::UInt8 => DataType::UInt8,
                LogicalType::UInt16 => DataType::UInt16,
                LogicalType::UInt32 => DataType::UInt32,
                LogicalType::UInt64 => DataType::UInt64,
                LogicalType::Float32 => DataType::Float32,
                LogicalType::Float64 | LogicalType::AnyFloat => DataType::Float64,
                LogicalType::Utf8 => DataType::Utf8,
                LogicalType::Date => DataType::Date32,
                LogicalType::Timestamp(zone) => DataType::Timestamp(
                    TimeUnit::Microsecond,
                    match zone {
                        TimeZoneSpec::Zone(z) => Some(z.as_str().into()),
                        TimeZoneSpec::Any | TimeZoneSpec::None => None,
                    },
                ),
                LogicalType::Decimal | LogicalType::Binary => {
                    return Err(format!(
                        "column `{name}`: stream events cannot carry {} values; declare it as float64 or utf8",
                        if *logical == LogicalType::Decimal {
                            "decimal"
                        } else {
                            "binary"
                        }
                    ));
                }
            };
            fields.push(Field::new(name, data_type, true));
        }
        Ok(Self::new(fields))
    }

    /// Infers a schema from JSON lines (the first [`INFER_FROM`] objects):
    /// booleans, int64 (float64 where any value has a fraction or exponent),
    /// utf8; columns in order of first appearance; a column that is only ever
    /// null is utf8. Lines that are not objects, or hold arrays or objects,
    /// are skipped here (they are bad records when decoded). `None` when no
    /// line is an object.
    pub fn infer<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Option<Self> {
        let mut order: Vec<String> = Vec::new();
        let mut kinds: HashMap<String, Option<DataType>> = HashMap::new();
        let mut seen = 0;
        for line in lines {
            if seen >= INFER_FROM {
                break;
            }
            let Ok(Event::Object(fields)) = parse_event(line) else {
                continue;
            };
            if fields
                .iter()
                .any(|(_, v)| matches!(v, Scalar::Array | Scalar::Object))
            {
                continue;
            }
            seen += 1;
            for (key, value) in &fields {
                let kind = match value {
                    Scalar::Null => None,
                    Scalar::Bool(_) => Some(DataType::Boolean),
                    Scalar::Float(_) => Some(DataType::Float64),
                    Scalar::Int(_) | Scalar::UInt(_) => Some(DataType::Int64),
                    _ => Some(DataType::Utf8),
                };
                let entry = kinds.entry(key.to_string()).or_insert_with(|| {
                    order.push(key.to_string());
                    None
                });
                *entry = match (entry.take(), kind) {
                    (None, k) | (k, None) => k,
                    (Some(DataType::Int64), Some(DataType::Float64))
                    | (Some(DataType::Float64), Some(DataType::Int64)) => Some(DataType::Float64),
                    // Conflicting types: the first wins; the others are bad records.
                    (Some(a), Some(_)) => Some(a),
                };
            }
        }
        if seen == 0 {
            return None;
        }
        let fields = order
            .iter()
            .map(|name| {
                let t = kinds.get(name).cloned().flatten().unwrap_or(DataType::Utf8);
                Field::new(name, t, true)
            })
            .collect();
        Some(Self::new(fields))
    }

    /// The Arrow schema.
    pub fn arrow(&self) -> &SchemaRef {
        &self.arrow
    }

    /// A JSON description, for the state folder (`[{"name", "type"}]`).
    pub fn to_json(&self) -> Value {
        Value::Array(
            self.arrow
                .fields()
                .iter()
                .map(|f| {
                    serde_json::json!({
                        "name": f.name(),
                        "type": type_name(f.data_type()),
                    })
                })
                .collect(),
        )
    }

    /// Reads what [`EventSchema::to_json`] wrote.
    pub fn from_json(value: &Value) -> Result<Self, String> {
        let items = value.as_array().ok_or("expected a list of columns")?;
        let mut fields = Vec::new();
        for item in items {
            let name = item
                .get("name")
                .and_then(Value::as_str)
                .ok_or("a column without a name")?;
            let t = item
                .get("type")
                .and_then(Value::as_str)
                .ok_or("a column without a type")?;
            let data_type = parse_type_name(t).ok_or_else(|| format!("unknown type `{t}`"))?;
            fields.push(Field::new(name, data_type, true));
        }
        Ok(Self::new(fields))
    }

    /// Checks that a record batch (Arrow IPC ingest) has exactly this
    /// schema's columns and types, in any order; returns it reordered to
    /// this schema. A column may be missing (it becomes null).
    pub fn conform(&self, batch: &RecordBatch) -> Result<RecordBatch, String> {
        let theirs = batch.schema();
        for f in theirs.fields() {
            match self.index.get(f.name()) {
                None => return Err(format!("unknown column `{}`", f.name())),
                Some(&i) => {
                    let want = self.arrow.field(i).data_type();
                    if f.data_type() != want {
                        return Err(format!(
                            "column `{}` is {}, the stream's schema says {}",
                            f.name(),
                            f.data_type(),
                            want
                        ));
                    }
                }
            }
        }
        let columns: Vec<ArrayRef> = self
            .arrow
            .fields()
            .iter()
            .map(|f| match theirs.index_of(f.name()) {
                Ok(i) => batch.column(i).clone(),
                Err(_) => arrow::array::new_null_array(f.data_type(), batch.num_rows()),
            })
            .collect();
        RecordBatch::try_new(self.arrow.clone(), columns).map_err(|e| e.to_string())
    }

    /// A row builder for this schema.
    pub fn builder(&self) -> EventBuilder {
        EventBuilder::new(self.clone())
    }
}

fn type_name(t: &DataType) -> String {
    match t {
        DataType::Timestamp(unit, tz) => {
            let unit = crate::rules::time_unit_name(*unit);
            match tz {
                Some(z) => format!("timestamp[{unit}, {z}]"),
                None => format!("timestamp[{unit}]"),
            }
        }
        other => other.to_string(),
    }
}

fn parse_type_name(s: &str) -> Option<DataType> {
    if let Some(rest) = s
        .strip_prefix("timestamp[")
        .and_then(|r| r.strip_suffix(']'))
    {
        let (unit, tz) = match rest.split_once(", ") {
            Some((u, z)) => (u, Some(z.into())),
            None => (rest, None),
        };
        let unit = match unit {
            "s" => TimeUnit::Second,
            "ms" => TimeUnit::Millisecond,
            "us" => TimeUnit::Microsecond,
            "ns" => TimeUnit::Nanosecond,
            _ => return None,
        };
        return Some(DataType::Timestamp(unit, tz));
    }
    let t = match s {
        "Boolean" => DataType::Boolean,
        "Int8" => DataType::Int8,
        "Int16" => DataType::Int16,
        "Int32" => DataType::Int32,
        "Int64" => DataType::Int64,
        "UInt8" => DataType::UInt8,
        "UInt16" => DataType::UInt16,
        "UInt32" => DataType::UInt32,
        "UInt64" => DataType::UInt64,
        "Float32" => DataType::Float32,
        "Float64" => DataType::Float64,
        "Utf8" => DataType::Utf8,
        "Date32" => DataType::Date32,
        _ => return None,
    };
    Some(t)
}

/// One column's values while a batch is built; narrow types are built wide
/// (after their range was checked) and cast exactly at the end.
enum Column {
    Bool(BooleanBuilder),
    Int(Int64Builder, i64, i64),
    UInt64(UInt64Builder),
    Float(Float64Builder),
    Str(StringBuilder),
    Date(Int32Builder),
    Time(Int64Builder, TimeUnit),
}

/// A converted value, held until the whole event is known to fit.
enum Cell<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(&'a str),
}

/// Builds Arrow rows from JSON events, one event at a time; an event that
/// does not fit changes nothing and returns the reason.
pub struct EventBuilder {
    schema: EventSchema,
    columns: Vec<Column>,
    rows: usize,
}

impl EventBuilder {
    fn new(schema: EventSchema) -> Self {
        let columns = schema
            .arrow
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Boolean => Column::Bool(BooleanBuilder::new()),
                DataType::Int8 => Column::Int(Int64Builder::new(), i8::MIN.into(), i8::MAX.into()),
                DataType::Int16 => {
                    Column::Int(Int64Builder::new(), i16::MIN.into(), i16::MAX.into())
                }
                DataType::Int32 => {
                    Column::Int(Int64Builder::new(), i32::MIN.into(), i32::MAX.into())
                }
                DataType::UInt8 => Column::Int(Int64Builder::new(), 0, u8::MAX.into()),
                DataType::UInt16 => Column::Int(Int64Builder::new(), 0, u16::MAX.into()),
                DataType::UInt32 => Column::Int(Int64Builder::new(), 0, u32::MAX.into()),
                DataType::UInt64 => Column::UInt64(UInt64Builder::new()),
                DataType::Float32 | DataType::Float64 => Column::Float(Float64Builder::new()),
                DataType::Utf8 => Column::Str(StringBuilder::new()),
                DataType::Date32 => Column::Date(Int32Builder::new()),
                DataType::Timestamp(unit, _) => Column::Time(Int64Builder::new(), *unit),
                // from_arrow/from_rule admit nothing else; Int64 lands here.
                _ => Column::Int(Int64Builder::new(), i64::MIN, i64::MAX),
            })
            .collect();
        Self {
            schema,
            columns,
            rows: 0,
        }
    }

    /// Rows built so far.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no row was built yet.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The schema rows are built for.
    pub fn schema(&self) -> &EventSchema {
        &self.schema
    }

    /// Adds one event (a JSON object, one NDJSON line), or says why it does not fit.
    pub fn push_json(&mut self, line: &[u8]) -> Result<(), String> {
        let event = parse_event(line)?;
        let fields = match event {
            Event::Object(fields) => fields,
            Event::Other(kind) => return Err(format!("expected a JSON object, got {kind}")),
        };
        // Convert every value first so a bad one leaves the builders untouched.
        let mut cells: Vec<Cell<'_>> = (0..self.columns.len()).map(|_| Cell::Null).collect();
        for (key, value) in &fields {
            let Some(&i) = self.schema.index.get(key.as_ref()) else {
                return Err(format!("unknown field `{key}`"));
            };
            cells[i] = convert(
                &self.columns[i],
                self.schema.arrow.field(i).data_type(),
                key,
                value,
            )?;
        }
        for (column, cell) in self.columns.iter_mut().zip(cells.iter()) {
            append(column, cell);
        }
        self.rows += 1;
        Ok(())
    }

    /// The rows built so far as one record batch; the builder starts empty again.
    pub fn finish(&mut self) -> Result<RecordBatch, String> {
        let fields = self.schema.arrow.fields().clone();
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.columns.len());
        for (column, field) in self.columns.iter_mut().zip(fields.iter()) {
            let built: ArrayRef = match column {
                Column::Bool(b) => Arc::new(b.finish()),
                Column::Int(b, _, _) => Arc::new(b.finish()),
                Column::UInt64(b) => Arc::new(b.finish()),
                Column::Float(b) => Arc::new(b.finish()),
                Column::Str(b) => Arc::new(b.finish()),
                Column::Date(b) => Arc::new(b.finish()),
                Column::Time(b, _) => Arc::new(b.finish()),
            };
            let array = if built.data_type() == field.data_type() {
                built
            } else {
                // Values were range-checked on the way in, so this cast is exact.
                arrow::compute::cast(&built, field.data_type()).map_err(|e| e.to_string())?
            };
            arrays.push(array);
        }
        self.rows = 0;
        RecordBatch::try_new(self.schema.arrow.clone(), arrays).map_err(|e| e.to_string())
    }
}

/// One JSON value of an event, borrowed from the line where it can be.
#[derive(Debug)]
enum Scalar<'de> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(Cow<'de, str>),
    /// An array (skipped).
    Array,
    /// An object (skipped).
    Object,
}

impl Scalar<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Scalar::Null => "null",
            Scalar::Bool(_) => "a boolean",
            Scalar::Int(_) | Scalar::UInt(_) | Scalar::Float(_) => "a number",
            Scalar::Str(_) => "a string",
            Scalar::Array => "an array",
            Scalar::Object => "an object",
        }
    }

    /// The number as JSON writes it.
    fn number(&self) -> String {
        match self {
            Scalar::Int(i) => i.to_string(),
            Scalar::UInt(u) => u.to_string(),
            Scalar::Float(f) => serde_json::Number::from_f64(*f)
                .map(|n| n.to_string())
                .unwrap_or_else(|| f.to_string()),
            _ => String::new(),
        }
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Scalar::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(match i64::try_from(v) {
            Ok(i) => Scalar::Int(i),
            Err(_) => Scalar::UInt(v),
        })
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Scalar::Float(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Object)
    }
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

/// Parses one event line — the module's one JSON reader, for inference and
/// for rows alike. No `Value` is built: keys and unescaped strings are
/// borrowed from the line, nested values skipped.
fn parse_event(line: &[u8]) -> Result<Event<'_>, String> {
    let mut de = serde_json::Deserializer::from_slice(line);
    Event::deserialize(&mut de)
        .and_then(|e| de.end().map(|()| e))
        .map_err(|e| format!("not JSON: {e}"))
}

/// A whole event: an object's fields in order, or what it is instead.
enum Event<'de> {
    Object(Vec<(Cow<'de, str>, Scalar<'de>)>),
    Other(&'static str),
}

impl<'de> Deserialize<'de> for Event<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Event<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some((k, v)) = map.next_entry::<Scalar<'de>, Scalar<'de>>()? {
                    // JSON keys are strings; the scalar reader borrows them.
                    let Scalar::Str(k) = k else {
                        return Err(serde::de::Error::custom("a key that is not a string"));
                    };
                    fields.push((k, v));
                }
                Ok(Event::Object(fields))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Event::Other("an array"))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Event::Other("a boolean"))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Event::Other("a number"))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Event::Other("a number"))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Event::Other("a number"))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Event::Other("a string"))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Event::Other("null"))
            }
        }
        d.deserialize_any(V)
    }
}

fn convert<'a>(
    column: &Column,
    data_type: &DataType,
    key: &str,
    value: &'a Scalar<'a>,
) -> Result<Cell<'a>, String> {
    if matches!(value, Scalar::Null) {
        return Ok(Cell::Null);
    }
    let mismatch = || {
        format!(
            "field `{key}`: expected {}, got {}",
            expected(data_type),
            match value {
                Scalar::Int(_) | Scalar::UInt(_) | Scalar::Float(_) =>
                    format!("the number {}", value.number()),
                Scalar::Str(s) if s.len() <= 40 => format!("the string {s:?}"),
                other => other.kind().to_string(),
            }
        )
    };
    let out_of_range = || {
        format!(
            "field `{key}`: {} is out of range for {data_type}",
            value.number()
        )
    };
    match (column, value) {
        (Column::Bool(_), Scalar::Bool(b)) => Ok(Cell::Bool(*b)),
        (Column::Int(_, min, max), Scalar::Int(i)) if i >= min && i <= max => Ok(Cell::Int(*i)),
        (Column::Int(..), Scalar::Int(_) | Scalar::UInt(_)) => Err(out_of_range()),
        (Column::UInt64(_), Scalar::Int(i)) if *i >= 0 => Ok(Cell::UInt(*i as u64)),
        (Column::UInt64(_), Scalar::UInt(u)) => Ok(Cell::UInt(*u)),
        (Column::UInt64(_), Scalar::Int(_)) => Err(out_of_range()),
        (Column::Float(_), Scalar::Int(_) | Scalar::UInt(_) | Scalar::Float(_)) => {
            let f = match value {
                Scalar::Int(i) => *i as f64,
                Scalar::UInt(u) => *u as f64,
                Scalar::Float(f) => *f,
                _ => 0.0,
            };
            if *data_type == DataType::Float32 && f.is_finite() && f.abs() > f32::MAX as f64 {
                Err(out_of_range())
            } else {
                Ok(Cell::Float(f))
            }
        }
        (Column::Str(_), Scalar::Str(s)) => Ok(Cell::Str(s.as_ref())),
        (Column::Date(_), Scalar::Str(s)) => {
            let date = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map_err(|_| format!("field `{key}`: {s:?} is not a date (YYYY-MM-DD)"))?;
            let days = date
                .signed_duration_since(chrono::NaiveDate::default())
                .num_days();
            Ok(Cell::Int(days))
        }
        (Column::Time(_, unit), Scalar::Str(s)) => {
            let utc_naive = match chrono::DateTime::parse_from_rfc3339(s) {
                Ok(t) => t.naive_utc(),
                Err(_) => match data_type {
                    DataType::Timestamp(_, None) => parse_naive(s).ok_or_else(|| {
                        format!("field `{key}`: {s:?} is not an RFC 3339 timestamp")
                    })?,
                    _ => {
                        return Err(format!(
                            "field `{key}`: {s:?} is not an RFC 3339 timestamp with an offset"
                        ));
                    }
                },
            };
            let t = utc_naive.and_utc();
            let v = match unit {
                TimeUnit::Second => Some(t.timestamp()),
                TimeUnit::Millisecond => Some(t.timestamp_millis()),
                TimeUnit::Microsecond => Some(t.timestamp_micros()),
                TimeUnit::Nanosecond => t.timestamp_nanos_opt(),
            }
            .ok_or_else(|| format!("field `{key}`: {s:?} is out of range"))?;
            Ok(Cell::Int(v))
        }
        _ => Err(mismatch()),
    }
}

fn parse_naive(s: &str) -> Option<chrono::NaiveDateTime> {
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(s, f).ok())
}

fn expected(t: &DataType) -> String {
    match t {
        DataType::Boolean => "a boolean".to_string(),
        DataType::Float32 | DataType::Float64 => "a number".to_string(),
        DataType::Utf8 => "a string".to_string(),
        DataType::Date32 => "a date string".to_string(),
        DataType::Timestamp(..) => "a timestamp string".to_string(),
        other => format!("an integer ({other})"),
    }
}

fn append(column: &mut Column, cell: &Cell<'_>) {
    match (column, cell) {
        (Column::Bool(b), Cell::Bool(v)) => b.append_value(*v),
        (Column::Int(b, _, _), Cell::Int(v)) => b.append_value(*v),
        (Column::Date(b), Cell::Int(v)) => b.append_value(*v as i32),
        (Column::Time(b, _), Cell::Int(v)) => b.append_value(*v),
        (Column::UInt64(b), Cell::UInt(v)) => b.append_value(*v),
        (Column::Float(b), Cell::Float(v)) => b.append_value(*v),
        (Column::Str(b), Cell::Str(v)) => b.append_value(v),
        (Column::Bool(b), _) => b.append_null(),
        (Column::Int(b, _, _), _) => b.append_null(),
        (Column::Date(b), _) => b.append_null(),
        (Column::Time(b, _), _) => b.append_null(),
        (Column::UInt64(b), _) => b.append_null(),
        (Column::Float(b), _) => b.append_null(),
        (Column::Str(b), _) => b.append_null(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, Int64Type};

    fn schema() -> EventSchema {
        EventSchema::from_rule(&[
            ("id".to_string(), LogicalType::Int64),
            ("score".to_string(), LogicalType::Float64),
            ("kind".to_string(), LogicalType::Utf8),
            ("ok".to_string(), LogicalType::Boolean),
            ("small".to_string(), LogicalType::Int8),
            (
                "at".to_string(),
                LogicalType::Timestamp(TimeZoneSpec::Zone("UTC".to_string())),
            ),
            ("day".to_string(), LogicalType::Date),
        ])
        .unwrap()
    }

    #[test]
    fn events_that_fit_become_rows_and_missing_keys_are_null() {
        let mut b = schema().builder();
        b.push_json(br#"{"id": 1, "score": 2, "kind": "a", "ok": true, "small": -128, "at": "2026-01-02T03:04:05.5+01:00", "day": "2026-01-02"}"#).unwrap();
        b.push_json(br#"{"id": null, "score": 0.25}"#).unwrap();
        let batch = b.finish().unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.column(0).as_primitive::<Int64Type>().value(0), 1);
        assert!(batch.column(0).is_null(1));
        assert_eq!(batch.column(1).as_primitive::<Float64Type>().value(0), 2.0);
        assert_eq!(batch.column(1).as_primitive::<Float64Type>().value(1), 0.25);
        assert_eq!(batch.column(4).data_type(), &DataType::Int8);
        let at = batch
            .column(5)
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
            .value(0);
        assert_eq!(at, 1_767_319_445_500_000);
        let day = batch
            .column(6)
            .as_primitive::<arrow::datatypes::Date32Type>()
            .value(0);
        assert_eq!(day, 20_455);
        assert!(b.is_empty());
    }

    #[test]
    fn events_that_do_not_fit_are_refused_with_a_reason_and_change_nothing() {
        let mut b = schema().builder();
        let cases: [(&[u8], &str); 9] = [
            (
                br#"{"id": "5"}"#,
                "field `id`: expected an integer (Int64), got the string \"5\"",
            ),
            (
                br#"{"id": 1.5}"#,
                "field `id`: expected an integer (Int64), got the number 1.5",
            ),
            (
                br#"{"small": 128}"#,
                "field `small`: 128 is out of range for Int8",
            ),
            (br#"{"id": 1, "extra": 2}"#, "unknown field `extra`"),
            (br#"[1, 2]"#, "expected a JSON object, got an array"),
            (
                br#"{"kind": {"a": 1}}"#,
                "field `kind`: expected a string, got an object",
            ),
            (
                br#"{"ok": 1}"#,
                "field `ok`: expected a boolean, got the number 1",
            ),
            (
                br#"{"at": "2026-01-02"}"#,
                "field `at`: \"2026-01-02\" is not an RFC 3339 timestamp with an offset",
            ),
            (
                br#"{"day": "02/01/2026"}"#,
                "field `day`: \"02/01/2026\" is not a date (YYYY-MM-DD)",
            ),
        ];
        for (line, reason) in cases {
            assert_eq!(b.push_json(line).unwrap_err(), reason);
        }
        assert!(
            b.push_json(b"{\"id\": 1")
                .unwrap_err()
                .starts_with("not JSON: ")
        );
        assert_eq!(b.len(), 0);
        assert_eq!(b.finish().unwrap().num_rows(), 0);
    }

    #[test]
    fn inference_widens_integers_to_floats_and_keeps_first_appearance_order() {
        let lines: Vec<&[u8]> = vec![
            br#"{"a": 1, "b": "x"}"#,
            br#"{"a": 2.5, "c": null, "d": true}"#,
            b"not json",
        ];
        let s = EventSchema::infer(lines.into_iter()).unwrap();
        let names: Vec<(String, DataType)> = s
            .arrow()
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("a".to_string(), DataType::Float64),
                ("b".to_string(), DataType::Utf8),
                ("c".to_string(), DataType::Utf8),
                ("d".to_string(), DataType::Boolean),
            ]
        );
        assert_eq!(EventSchema::from_json(&s.to_json()).unwrap(), s);
        assert!(EventSchema::infer([b"[1]".as_slice()].into_iter()).is_none());
    }

    #[test]
    fn ipc_batches_conform_by_name_and_exact_type() {
        let s = schema();
        let mut b = s.builder();
        b.push_json(br#"{"id": 7}"#).unwrap();
        let full = b.finish().unwrap();
        let subset = full.project(&[1, 0]).unwrap();
        let conformed = s.conform(&subset).unwrap();
        assert_eq!(conformed.schema(), *s.arrow());
        assert_eq!(conformed.column(0).as_primitive::<Int64Type>().value(0), 7);
        let other = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, true)])),
            vec![Arc::new(arrow::array::StringArray::from(vec!["7"]))],
        )
        .unwrap();
        assert_eq!(
            s.conform(&other).unwrap_err(),
            "column `id` is Utf8, the stream's schema says Int64"
        );
    }

    proptest::proptest! {
        /// Any event of the schema's types, written by serde_json (escapes,
        /// unicode, extreme numbers, nulls, any key order), reads back as
        /// exactly its values.
        #[test]
        fn events_round_trip(
            events in proptest::collection::vec(
                (
                    proptest::option::of(proptest::num::i64::ANY),
                    proptest::option::of(-1e300f64..1e300),
                    proptest::option::of(".*"),
                    proptest::option::of(proptest::bool::ANY),
                    proptest::bool::ANY,
                ),
                1..40,
            )
        ) {
            let schema = EventSchema::from_rule(&[
                ("id".to_string(), LogicalType::Int64),
                ("kind".to_string(), LogicalType::Utf8),
                ("ok".to_string(), LogicalType::Boolean),
                ("score".to_string(), LogicalType::Float64),
            ])
            .unwrap();
            let mut b = schema.builder();
            for (id, score, kind, ok, reversed) in &events {
                let mut fields = vec![
                    ("id", serde_json::json!(id)),
                    ("score", serde_json::json!(score)),
                    ("kind", serde_json::json!(kind)),
                    ("ok", serde_json::json!(ok)),
                ];
                if *reversed {
                    fields.reverse();
                }
                let line = serde_json::to_vec(&fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<serde_json::Map<_, _>>()).unwrap();
                b.push_json(&line).unwrap();
            }
            let batch = b.finish().unwrap();
            proptest::prop_assert_eq!(batch.num_rows(), events.len());
            let ids = batch.column(0).as_primitive::<Int64Type>();
            let kinds = batch.column(1).as_string::<i32>();
            let oks = batch.column(2).as_boolean();
            let scores = batch.column(3).as_primitive::<Float64Type>();
            for (i, (id, score, kind, ok, _)) in events.iter().enumerate() {
                proptest::prop_assert_eq!(ids.is_valid(i).then(|| ids.value(i)), *id);
                proptest::prop_assert_eq!(scores.is_valid(i).then(|| scores.value(i)), *score);
                proptest::prop_assert_eq!(kinds.is_valid(i).then(|| kinds.value(i).to_string()), kind.clone());
                proptest::prop_assert_eq!(oks.is_valid(i).then(|| oks.value(i)), *ok);
            }
        }

        /// Arbitrary bytes never panic; a refused line adds no row.
        #[test]
        fn arbitrary_lines_are_accepted_whole_or_refused_whole(
            lines in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..64), 1..20)
        ) {
            let mut b = schema().builder();
            let mut accepted = 0;
            for line in &lines {
                if b.push_json(line).is_ok() {
                    accepted += 1;
                }
            }
            proptest::prop_assert_eq!(b.finish().unwrap().num_rows(), accepted);
        }
    }
}
