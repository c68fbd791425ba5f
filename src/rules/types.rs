//! Logical column types for the `schema` check, and how they match Arrow types.
//!
//! DataFusion may read the same Parquet column as different Arrow types
//! (`Utf8` or `Utf8View`, dictionary-encoded or not, timestamps in several
//! units), so rules name *logical* types and each accepts every physical
//! representation of it. The full table is in `rules/README.md`.

use std::fmt;

use arrow::datatypes::{DataType, TimeUnit};

/// A time zone constraint on `timestamp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeZoneSpec {
    /// `timestamp`: with or without a time zone.
    Any,
    /// `timestamp(none)`: without a time zone.
    None,
    /// `timestamp(UTC)` etc.: exactly this time zone (compared as written, case-insensitively).
    Zone(String),
}

/// A logical type name from a rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogicalType {
    /// `bool` / `boolean`.
    Boolean,
    /// `int8`.
    Int8,
    /// `int16`.
    Int16,
    /// `int32`.
    Int32,
    /// `int64`.
    Int64,
    /// `uint8`.
    UInt8,
    /// `uint16`.
    UInt16,
    /// `uint32`.
    UInt32,
    /// `uint64`.
    UInt64,
    /// `integer`: any signed or unsigned integer width.
    AnyInteger,
    /// `float32`.
    Float32,
    /// `float64` / `double`.
    Float64,
    /// `float`: any floating-point width.
    AnyFloat,
    /// `decimal`: any decimal precision and scale.
    Decimal,
    /// `utf8` / `string`: Utf8, LargeUtf8, Utf8View, dictionary of those.
    Utf8,
    /// `binary`: Binary, LargeBinary, BinaryView, FixedSizeBinary.
    Binary,
    /// `date`: Date32 or Date64.
    Date,
    /// `timestamp`, `timestamp(none)`, `timestamp(<zone>)`: any unit.
    Timestamp(TimeZoneSpec),
}

impl LogicalType {
    /// Parses a type name; the error lists the accepted names.
    pub fn parse(text: &str) -> Result<Self, String> {
        let lower = text.trim().to_ascii_lowercase();
        let ty = match lower.as_str() {
            "bool" | "boolean" => LogicalType::Boolean,
            "int8" => LogicalType::Int8,
            "int16" => LogicalType::Int16,
            "int32" => LogicalType::Int32,
            "int64" => LogicalType::Int64,
            "uint8" => LogicalType::UInt8,
            "uint16" => LogicalType::UInt16,
            "uint32" => LogicalType::UInt32,
            "uint64" => LogicalType::UInt64,
            "integer" => LogicalType::AnyInteger,
            "float32" => LogicalType::Float32,
            "float64" | "double" => LogicalType::Float64,
            "float" => LogicalType::AnyFloat,
            "decimal" => LogicalType::Decimal,
            "utf8" | "string" => LogicalType::Utf8,
            "binary" => LogicalType::Binary,
            "date" => LogicalType::Date,
            "timestamp" => LogicalType::Timestamp(TimeZoneSpec::Any),
            _ => {
                let zone = lower
                    .strip_prefix("timestamp(")
                    .and_then(|rest| rest.strip_suffix(')'))
                    .map(str::trim);
                match zone {
                    Some("none") => LogicalType::Timestamp(TimeZoneSpec::None),
                    Some(z) if !z.is_empty() => {
                        // Keep the zone as written (not lower-cased) for messages.
                        let start = text.find('(').map_or(0, |i| i + 1);
                        let end = text.rfind(')').unwrap_or(text.len());
                        LogicalType::Timestamp(TimeZoneSpec::Zone(
                            text.get(start..end).unwrap_or(z).trim().to_string(),
                        ))
                    }
                    _ => {
                        return Err(format!(
                            "unknown type `{text}`; expected one of bool, int8, int16, int32, int64, \
                             uint8, uint16, uint32, uint64, integer, float32, float64, float, decimal, \
                             utf8, binary, date, timestamp, timestamp(none), timestamp(<zone>)"
                        ));
                    }
                }
            }
        };
        Ok(ty)
    }

    /// Whether an Arrow type is a representation of this logical type.
    pub fn accepts(&self, data_type: &DataType) -> bool {
        let data_type = match data_type {
            DataType::Dictionary(_, value) => value.as_ref(),
            other => other,
        };
        match self {
            LogicalType::Boolean => matches!(data_type, DataType::Boolean),
            LogicalType::Int8 => matches!(data_type, DataType::Int8),
            LogicalType::Int16 => matches!(data_type, DataType::Int16),
            LogicalType::Int32 => matches!(data_type, DataType::Int32),
            LogicalType::Int64 => matches!(data_type, DataType::Int64),
            LogicalType::UInt8 => matches!(data_type, DataType::UInt8),
            LogicalType::UInt16 => matches!(data_type, DataType::UInt16),
            LogicalType::UInt32 => matches!(data_type, DataType::UInt32),
            LogicalType::UInt64 => matches!(data_type, DataType::UInt64),
            LogicalType::AnyInteger => data_type.is_integer(),
            LogicalType::Float32 => matches!(data_type, DataType::Float32),
            LogicalType::Float64 => matches!(data_type, DataType::Float64),
            LogicalType::AnyFloat => data_type.is_floating(),
            LogicalType::Decimal => matches!(
                data_type,
                DataType::Decimal32(..)
                    | DataType::Decimal64(..)
                    | DataType::Decimal128(..)
                    | DataType::Decimal256(..)
            ),
            LogicalType::Utf8 => matches!(
                data_type,
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ),
            LogicalType::Binary => matches!(
                data_type,
                DataType::Binary
                    | DataType::LargeBinary
                    | DataType::BinaryView
                    | DataType::FixedSizeBinary(_)
            ),
            LogicalType::Date => matches!(data_type, DataType::Date32 | DataType::Date64),
            LogicalType::Timestamp(zone) => match data_type {
                DataType::Timestamp(_, tz) => match (zone, tz) {
                    (TimeZoneSpec::Any, _) => true,
                    (TimeZoneSpec::None, tz) => tz.is_none(),
                    (TimeZoneSpec::Zone(want), Some(have)) => {
                        want.eq_ignore_ascii_case(have) || (is_utc(want) && is_utc(have))
                    }
                    (TimeZoneSpec::Zone(_), None) => false,
                },
                _ => false,
            },
        }
    }
}

fn is_utc(zone: &str) -> bool {
    matches!(
        zone.to_ascii_uppercase().as_str(),
        "UTC" | "Z" | "+00:00" | "ETC/UTC" | "+0000"
    )
}

impl fmt::Display for LogicalType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            LogicalType::Boolean => "bool",
            LogicalType::Int8 => "int8",
            LogicalType::Int16 => "int16",
            LogicalType::Int32 => "int32",
            LogicalType::Int64 => "int64",
            LogicalType::UInt8 => "uint8",
            LogicalType::UInt16 => "uint16",
            LogicalType::UInt32 => "uint32",
            LogicalType::UInt64 => "uint64",
            LogicalType::AnyInteger => "integer",
            LogicalType::Float32 => "float32",
            LogicalType::Float64 => "float64",
            LogicalType::AnyFloat => "float",
            LogicalType::Decimal => "decimal",
            LogicalType::Utf8 => "utf8",
            LogicalType::Binary => "binary",
            LogicalType::Date => "date",
            LogicalType::Timestamp(TimeZoneSpec::Any) => "timestamp",
            LogicalType::Timestamp(TimeZoneSpec::None) => "timestamp(none)",
            LogicalType::Timestamp(TimeZoneSpec::Zone(z)) => {
                return write!(f, "timestamp({z})");
            }
        };
        f.write_str(name)
    }
}

/// The short name of a time unit: `s`, `ms`, `us`, `ns`.
pub fn time_unit_name(unit: TimeUnit) -> &'static str {
    match unit {
        TimeUnit::Second => "s",
        TimeUnit::Millisecond => "ms",
        TimeUnit::Microsecond => "us",
        TimeUnit::Nanosecond => "ns",
    }
}

/// A short logical description of an Arrow type for messages (`Utf8View` → `utf8`).
pub fn describe_arrow_type(data_type: &DataType) -> String {
    match data_type {
        DataType::Dictionary(_, value) => describe_arrow_type(value),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "utf8".to_string(),
        DataType::Timestamp(unit, tz) => {
            let unit = time_unit_name(*unit);
            match tz {
                Some(tz) => format!("timestamp({tz}) [{unit}]"),
                None => format!("timestamp(none) [{unit}]"),
            }
        }
        other => other.to_string().to_ascii_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn utf8_accepts_every_string_representation() {
        let t = LogicalType::parse("utf8").unwrap();
        for dt in [
            DataType::Utf8,
            DataType::LargeUtf8,
            DataType::Utf8View,
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
        ] {
            assert!(t.accepts(&dt), "{dt}");
        }
        assert!(!t.accepts(&DataType::Int64));
    }

    #[test]
    fn timestamp_zones() {
        let any = LogicalType::parse("timestamp").unwrap();
        let none = LogicalType::parse("timestamp(none)").unwrap();
        let utc = LogicalType::parse("timestamp(UTC)").unwrap();
        let naive = DataType::Timestamp(TimeUnit::Microsecond, None);
        let zoned = DataType::Timestamp(TimeUnit::Nanosecond, Some(Arc::from("+00:00")));
        assert!(any.accepts(&naive) && any.accepts(&zoned));
        assert!(none.accepts(&naive) && !none.accepts(&zoned));
        assert!(!utc.accepts(&naive) && utc.accepts(&zoned));
        assert_eq!(utc.to_string(), "timestamp(UTC)");
    }

    #[test]
    fn unknown_names_are_rejected() {
        assert!(LogicalType::parse("int128").is_err());
        assert!(LogicalType::parse("timestamp()").is_err());
    }
}
