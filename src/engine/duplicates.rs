//! `driftwatch_duplicates(col)`: the exact number of non-null rows beyond the
//! first occurrence of their value, i.e. `count(col) - count(DISTINCT col)`,
//! as one cheap aggregate.
//!
//! Why a custom aggregate: DataFusion plans `count(DISTINCT col)` next to other
//! aggregates with a hash set per partition whose whole content is re-inserted
//! into one set by the final stage — on ten million unique ids that took ~6 s
//! of a 7 s check (measured; see `benches/compare.sh`), barely using the second
//! core. Here each partition appends compact keys (8 bytes for numbers and
//! timestamps; Arrow's row format for everything else), then sorts and
//! de-duplicates them *in parallel*, counting its local duplicates. The final
//! stage concatenates the already-distinct sorted runs (one per partition),
//! sorts once more (pattern-defeating quicksort is quick on sorted runs) and
//! adds the duplicates found across runs. Memory is 8 bytes per non-null value
//! for fixed-width types; the accumulator reports its size to DataFusion's
//! memory pool, so a budget overrun is a clear error, not an OOM.
//!
//! Equality: integers and temporal values by value; floats with `-0.0 == 0.0`
//! and all NaNs equal (documented in rules/README.md); other types by their
//! Arrow row encoding (exact byte equality of the value).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, LargeBinaryArray};
use arrow::datatypes::{DataType, Field, FieldRef, Float64Type, Int64Type, UInt64Type};
use arrow::row::{RowConverter, SortField};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Signature, Volatility,
};

/// The UDAF's name in plans.
pub const NAME: &str = "driftwatch_duplicates";

/// The aggregate function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Duplicates {
    signature: Signature,
}

impl Duplicates {
    /// The function as a DataFusion UDAF.
    pub fn udaf() -> AggregateUDF {
        AggregateUDF::from(Self {
            signature: Signature::any(1, Volatility::Immutable),
        })
    }
}

impl AggregateUDFImpl for Duplicates {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn is_nullable(&self) -> bool {
        false
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let data_type = args
            .expr_fields
            .first()
            .map(|f| f.data_type().clone())
            .ok_or_else(|| DataFusionError::Internal(format!("{NAME} takes one argument")))?;
        Ok(Box::new(DuplicatesAccumulator::new(data_type)?))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new(
                format_state_name(args.name, "duplicates"),
                DataType::Int64,
                true,
            )),
            Arc::new(Field::new(
                format_state_name(args.name, "distinct_keys"),
                DataType::LargeBinary,
                true,
            )),
        ])
    }

    fn default_value(&self, _data_type: &DataType) -> Result<ScalarValue> {
        Ok(ScalarValue::Int64(Some(0)))
    }
}

/// How values become keys.
#[derive(Debug)]
enum Encoding {
    /// Signed integers and temporal values, via a cast to Int64.
    Int64,
    /// Unsigned 64-bit integers.
    UInt64,
    /// Floats, via a cast to Float64, with canonical zero and NaN.
    Float,
    /// Anything else, via Arrow's row format.
    Rows,
}

/// Keys seen so far: fixed-width u64 keys, or variable-width row bytes.
#[derive(Debug)]
enum Keys {
    Fixed(Vec<u64>),
    Bytes(Vec<Box<[u8]>>),
}

#[derive(Debug)]
struct DuplicatesAccumulator {
    data_type: DataType,
    encoding: Encoding,
    keys: Keys,
    /// Duplicates already removed from `keys` (by `compact` or merged states).
    duplicates: u64,
    /// Distinct sorted runs received from partial states, merged in `evaluate`.
    runs: Vec<Keys>,
    converter: Option<RowConverter>,
}

impl DuplicatesAccumulator {
    fn new(data_type: DataType) -> Result<Self> {
        let value_type = match &data_type {
            DataType::Dictionary(_, v) => v.as_ref().clone(),
            other => other.clone(),
        };
        let encoding = if value_type == DataType::UInt64 {
            Encoding::UInt64
        } else if value_type.is_floating() {
            Encoding::Float
        } else if value_type.is_integer() || value_type.is_temporal() {
            Encoding::Int64
        } else {
            Encoding::Rows
        };
        let (keys, converter) = match encoding {
            Encoding::Rows => (
                Keys::Bytes(Vec::new()),
                Some(RowConverter::new(vec![SortField::new(data_type.clone())])?),
            ),
            _ => (Keys::Fixed(Vec::new()), None),
        };
        Ok(Self {
            data_type,
            encoding,
            keys,
            duplicates: 0,
            runs: Vec::new(),
            converter,
        })
    }

    fn cast(&self, array: &ArrayRef, to: &DataType) -> Result<ArrayRef> {
        Ok(arrow::compute::cast(array, to)?)
    }

    /// Sorts and de-duplicates `keys`, counting what was removed.
    fn compact(&mut self) {
        match &mut self.keys {
            Keys::Fixed(k) => {
                let before = k.len();
                k.sort_unstable();
                k.dedup();
                self.duplicates += (before - k.len()) as u64;
            }
            Keys::Bytes(k) => {
                let before = k.len();
                k.sort_unstable();
                k.dedup();
                self.duplicates += (before - k.len()) as u64;
            }
        }
    }
}

fn canonical_float(v: f64) -> u64 {
    if v == 0.0 {
        0
    } else if v.is_nan() {
        f64::NAN.to_bits()
    } else {
        v.to_bits()
    }
}

impl Accumulator for DuplicatesAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let Some(array) = values.first() else {
            return Ok(());
        };
        match self.encoding {
            Encoding::Int64 => {
                let cast = self.cast(array, &DataType::Int64)?;
                if let Keys::Fixed(k) = &mut self.keys {
                    k.extend(
                        cast.as_primitive::<Int64Type>()
                            .iter()
                            .flatten()
                            .map(|v| v as u64),
                    );
                }
            }
            Encoding::UInt64 => {
                let cast = self.cast(array, &DataType::UInt64)?;
                if let Keys::Fixed(k) = &mut self.keys {
                    k.extend(cast.as_primitive::<UInt64Type>().iter().flatten());
                }
            }
            Encoding::Float => {
                let cast = self.cast(array, &DataType::Float64)?;
                if let Keys::Fixed(k) = &mut self.keys {
                    k.extend(
                        cast.as_primitive::<Float64Type>()
                            .iter()
                            .flatten()
                            .map(canonical_float),
                    );
                }
            }
            Encoding::Rows => {
                let converter = self.converter.as_ref().ok_or_else(|| {
                    DataFusionError::Internal(format!("{NAME}: no row converter"))
                })?;
                let rows = converter.convert_columns(std::slice::from_ref(array))?;
                if let Keys::Bytes(k) = &mut self.keys {
                    for i in 0..array.len() {
                        if array.is_valid(i) {
                            k.push(rows.row(i).as_ref().into());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.compact();
        let mut bytes: Vec<u8> = Vec::new();
        match &self.keys {
            Keys::Fixed(k) => {
                bytes.reserve(k.len() * 8);
                for v in k {
                    bytes.extend_from_slice(&v.to_le_bytes());
                }
            }
            Keys::Bytes(k) => {
                for v in k {
                    bytes.extend_from_slice(&(v.len() as u64).to_le_bytes());
                    bytes.extend_from_slice(v);
                }
            }
        }
        Ok(vec![
            ScalarValue::Int64(Some(self.duplicates as i64)),
            ScalarValue::LargeBinary(Some(bytes)),
        ])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let (Some(dups), Some(keys)) = (states.first(), states.get(1)) else {
            return Err(DataFusionError::Internal(format!("{NAME}: bad state")));
        };
        let dups = dups.as_primitive::<Int64Type>();
        let keys: &LargeBinaryArray = keys.as_binary();
        for i in 0..keys.len() {
            if dups.is_valid(i) {
                self.duplicates += dups.value(i).max(0) as u64;
            }
            if keys.is_null(i) {
                continue;
            }
            let raw = keys.value(i);
            let run = match self.keys {
                Keys::Fixed(_) => Keys::Fixed(
                    raw.chunks_exact(8)
                        .map(|c| {
                            let mut b = [0u8; 8];
                            b.copy_from_slice(c);
                            u64::from_le_bytes(b)
                        })
                        .collect(),
                ),
                Keys::Bytes(_) => {
                    let mut out = Vec::new();
                    let mut rest = raw;
                    while rest.len() >= 8 {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&rest[..8]);
                        let len = u64::from_le_bytes(b) as usize;
                        let Some(value) = rest.get(8..8 + len) else {
                            return Err(DataFusionError::Internal(format!(
                                "{NAME}: truncated state"
                            )));
                        };
                        out.push(value.into());
                        rest = &rest[8 + len..];
                    }
                    Keys::Bytes(out)
                }
            };
            self.runs.push(run);
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        // Rows seen directly (single-stage plans) form one more run.
        self.compact();
        let empty = match self.keys {
            Keys::Fixed(_) => Keys::Fixed(Vec::new()),
            Keys::Bytes(_) => Keys::Bytes(Vec::new()),
        };
        let own = std::mem::replace(&mut self.keys, empty);
        self.runs.push(own);
        // Each run is sorted and distinct: the duplicates across runs are the
        // total length minus the distinct count of their union.
        let mut across = 0u64;
        match self.runs.first() {
            Some(Keys::Fixed(_)) => {
                let mut all: Vec<u64> = Vec::new();
                for run in self.runs.drain(..) {
                    if let Keys::Fixed(k) = run {
                        all.extend(k);
                    }
                }
                let before = all.len();
                all.sort_unstable();
                all.dedup();
                across += (before - all.len()) as u64;
            }
            Some(Keys::Bytes(_)) => {
                let mut all: Vec<Box<[u8]>> = Vec::new();
                for run in self.runs.drain(..) {
                    if let Keys::Bytes(k) = run {
                        all.extend(k);
                    }
                }
                let before = all.len();
                all.sort_unstable();
                all.dedup();
                across += (before - all.len()) as u64;
            }
            None => {}
        }
        let total = self.duplicates + across;
        Ok(ScalarValue::Int64(Some(
            i64::try_from(total).unwrap_or(i64::MAX),
        )))
    }

    fn size(&self) -> usize {
        let keys = |k: &Keys| match k {
            Keys::Fixed(v) => v.capacity() * 8,
            Keys::Bytes(v) => v.iter().map(|b| b.len() + 16).sum::<usize>() + v.capacity() * 16,
        };
        std::mem::size_of_val(self)
            + keys(&self.keys)
            + self.runs.iter().map(keys).sum::<usize>()
            + self.data_type.size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int64Array, StringArray, UInt64Array};
    use proptest::prelude::*;

    /// Runs the two-stage path: one partial accumulator per part, states
    /// merged by a final accumulator, as DataFusion does across partitions.
    fn two_stage(data_type: DataType, parts: Vec<ArrayRef>) -> i64 {
        let mut states: Vec<Vec<ScalarValue>> = Vec::new();
        for part in parts {
            let mut acc = DuplicatesAccumulator::new(data_type.clone()).unwrap();
            acc.update_batch(&[part]).unwrap();
            states.push(acc.state().unwrap());
        }
        let mut final_acc = DuplicatesAccumulator::new(data_type).unwrap();
        let columns: Vec<ArrayRef> = (0..2)
            .map(|i| ScalarValue::iter_to_array(states.iter().map(|s| s[i].clone())).unwrap())
            .collect();
        final_acc.merge_batch(&columns).unwrap();
        match final_acc.evaluate().unwrap() {
            ScalarValue::Int64(Some(n)) => n,
            other => panic!("{other:?}"),
        }
    }

    fn single_stage(data_type: DataType, all: ArrayRef) -> i64 {
        let mut acc = DuplicatesAccumulator::new(data_type).unwrap();
        acc.update_batch(&[all]).unwrap();
        match acc.evaluate().unwrap() {
            ScalarValue::Int64(Some(n)) => n,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn floats_treat_zeroes_and_nans_as_equal_and_skip_nulls() {
        let a: ArrayRef = Arc::new(Float64Array::from(vec![
            Some(0.0),
            Some(-0.0),
            Some(f64::NAN),
            Some(-f64::NAN),
            None,
            None,
            Some(1.5),
        ]));
        assert_eq!(single_stage(DataType::Float64, a), 2);
    }

    #[test]
    fn unsigned_values_above_i64_max_stay_distinct() {
        let a: ArrayRef = Arc::new(UInt64Array::from(vec![u64::MAX, u64::MAX - 1, u64::MAX]));
        assert_eq!(single_stage(DataType::UInt64, a), 1);
    }

    proptest! {
        #[test]
        fn integers_match_count_minus_distinct(
            values in proptest::collection::vec(proptest::option::of(0i64..50), 0..300),
            cut in 0usize..300,
        ) {
            let cut = cut.min(values.len());
            let non_null: Vec<i64> = values.iter().flatten().copied().collect();
            let distinct: std::collections::BTreeSet<i64> = non_null.iter().copied().collect();
            let expected = (non_null.len() - distinct.len()) as i64;
            let all: ArrayRef = Arc::new(Int64Array::from(values.clone()));
            prop_assert_eq!(single_stage(DataType::Int64, all), expected);
            let parts: Vec<ArrayRef> = vec![
                Arc::new(Int64Array::from(values[..cut].to_vec())),
                Arc::new(Int64Array::from(values[cut..].to_vec())),
            ];
            prop_assert_eq!(two_stage(DataType::Int64, parts), expected);
        }

        #[test]
        fn strings_match_count_minus_distinct(
            values in proptest::collection::vec(proptest::option::of("[a-c]{0,2}"), 0..200),
            cut in 0usize..200,
        ) {
            let cut = cut.min(values.len());
            let non_null: Vec<&String> = values.iter().flatten().collect();
            let distinct: std::collections::BTreeSet<&String> = non_null.iter().copied().collect();
            let expected = (non_null.len() - distinct.len()) as i64;
            let parts: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from(values[..cut].to_vec())),
                Arc::new(StringArray::from(values[cut..].to_vec())),
            ];
            prop_assert_eq!(two_stage(DataType::Utf8, parts), expected);
        }
    }
}
