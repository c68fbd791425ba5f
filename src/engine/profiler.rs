//! `driftwatch_profile_numeric(col)` and `driftwatch_profile_categorical(col)`:
//! aggregates that build a [`ColumnProfile`] in the same scan as the checks.
//!
//! Each partition builds its own profile; partial profiles travel between
//! plan stages as their JSON bytes. The final stage does not merge them in the
//! (thread-timing-dependent) order they arrive: it sorts them by their bytes
//! first, so the same input always gives the same profile, even though the
//! quantile sketch's merge is only associative within its error bound.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Field, FieldRef, Float64Type, Int64Type};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Signature, Volatility,
};

use crate::profile::{
    ColumnKind, ColumnProfile, NumberCounts, SMALL_DOMAIN_LIMIT, count_integers, count_numbers,
};
use crate::rules::describe_arrow_type;

/// Which kind of profile a column gets, if any: numbers (decimals included)
/// and temporal values are numeric — timestamps, dates, durations and times
/// of day on their epoch scale (see `numeric_view`); strings (plain,
/// large, view, dictionary) and booleans are categorical; the types of
/// `unprofiled_reason` are not profiled.
pub fn profile_kind(data_type: &DataType) -> Option<ColumnKind> {
    let value = match data_type {
        DataType::Dictionary(_, v) => v.as_ref(),
        other => other,
    };
    if value.is_numeric() || is_epoch_scaled(value) {
        Some(ColumnKind::Numeric)
    } else if matches!(
        value,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Boolean
    ) {
        Some(ColumnKind::Categorical)
    } else {
        None
    }
}

/// Why a column of this type is not profiled (and so not tested for
/// drift), as `type: reason` with the type's logical name (the same for
/// every physical layout DataFusion may read, e.g. `binary` for
/// `BinaryView`); `None` for the types [`profile_kind`] accepts. Drift
/// reports list such columns with it.
pub fn unprofiled_reason(data_type: &DataType) -> Option<String> {
    if profile_kind(data_type).is_some() {
        return None;
    }
    let value = match data_type {
        DataType::Dictionary(_, v) => v.as_ref(),
        other => other,
    };
    let (name, reason) = match value {
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => (
            "binary".to_string(),
            "binary values have neither an order nor categories to compare; test a derived column (e.g. its length) with a `metric` check",
        ),
        DataType::Interval(_) => (
            "interval".to_string(),
            "an interval (months, days, nanoseconds) is not one number on one scale",
        ),
        DataType::Null => ("null".to_string(), "the column holds only nulls"),
        DataType::List(_)
        | DataType::LargeList(_)
        | DataType::ListView(_)
        | DataType::LargeListView(_)
        | DataType::FixedSizeList(_, _)
        | DataType::Struct(_)
        | DataType::Map(_, _)
        | DataType::Union(_, _) => (
            describe_arrow_type(value),
            "nested values are not profiled; flatten the field you want tested",
        ),
        other => (
            describe_arrow_type(other),
            "no profile is defined for this type",
        ),
    };
    Some(format!("{name}: {reason}"))
}

/// Temporal types profiled as numbers on their epoch scale.
fn is_epoch_scaled(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Timestamp(_, _)
            | DataType::Date32
            | DataType::Date64
            | DataType::Duration(_)
            | DataType::Time32(_)
            | DataType::Time64(_)
    )
}

/// A numeric or temporal column as `f64`s on the scale drift is tested on:
/// numbers (and decimals) as themselves; timestamps as seconds since
/// 1970-01-01T00:00:00 (UTC for zoned ones), dates as days since
/// 1970-01-01, durations as seconds, times of day as seconds since
/// midnight. Nulls stay null. (Timestamps in nanoseconds past 2^53 ns keep
/// about 0.25 µs of resolution as `f64` seconds.)
pub fn numeric_view(array: &ArrayRef) -> Result<ArrayRef> {
    use arrow::datatypes::{Int32Type, Int64Type, TimeUnit};
    let value_type = match array.data_type() {
        DataType::Dictionary(_, v) => v.as_ref().clone(),
        other => other.clone(),
    };
    let per_second = |unit: &TimeUnit| match unit {
        TimeUnit::Second => 1.0,
        TimeUnit::Millisecond => 1e3,
        TimeUnit::Microsecond => 1e6,
        TimeUnit::Nanosecond => 1e9,
    };
    let scaled = |ints: ArrayRef, divisor: f64| -> Result<ArrayRef> {
        let ints = arrow::compute::cast(&ints, &DataType::Int64)?;
        let out: arrow::array::Float64Array = ints
            .as_primitive::<Int64Type>()
            .unary(|v| v as f64 / divisor);
        Ok(Arc::new(out))
    };
    let plain = match array.data_type() {
        DataType::Dictionary(_, _) => arrow::compute::cast(array, &value_type)?,
        _ => array.clone(),
    };
    match &value_type {
        DataType::Timestamp(unit, _) | DataType::Duration(unit) => {
            let ints = arrow::compute::cast(&plain, &DataType::Int64)?;
            scaled(ints, per_second(unit))
        }
        DataType::Time32(unit) => {
            let ints = arrow::compute::cast(&plain, &DataType::Int32)?;
            let ints: arrow::array::Int64Array = ints.as_primitive::<Int32Type>().unary(i64::from);
            scaled(Arc::new(ints), per_second(unit))
        }
        DataType::Time64(unit) => {
            let ints = arrow::compute::cast(&plain, &DataType::Int64)?;
            scaled(ints, per_second(unit))
        }
        DataType::Date32 => {
            let ints = arrow::compute::cast(&plain, &DataType::Int32)?;
            let ints: arrow::array::Int64Array = ints.as_primitive::<Int32Type>().unary(i64::from);
            scaled(Arc::new(ints), 1.0)
        }
        DataType::Date64 => {
            let ints = arrow::compute::cast(&plain, &DataType::Int64)?;
            scaled(ints, 86_400_000.0)
        }
        _ => Ok(arrow::compute::cast(array, &DataType::Float64)?),
    }
}

/// The profiling aggregate for one kind of column.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Profiler {
    numeric: bool,
    /// Distinct categories counted exactly (`drift.max_categories`).
    category_limit: usize,
    signature: Signature,
}

impl Profiler {
    /// The aggregate for `kind` as a DataFusion UDAF, with the default
    /// category limit.
    pub fn udaf(kind: ColumnKind) -> AggregateUDF {
        Self::udaf_with_limit(kind, crate::profile::DEFAULT_CATEGORY_LIMIT)
    }

    /// The aggregate for `kind` keeping up to `category_limit` categories
    /// exactly.
    pub fn udaf_with_limit(kind: ColumnKind, category_limit: usize) -> AggregateUDF {
        AggregateUDF::from(Self {
            numeric: kind == ColumnKind::Numeric,
            category_limit,
            signature: Signature::any(1, Volatility::Immutable),
        })
    }

    fn kind(&self) -> ColumnKind {
        if self.numeric {
            ColumnKind::Numeric
        } else {
            ColumnKind::Categorical
        }
    }
}

impl AggregateUDFImpl for Profiler {
    fn name(&self) -> &str {
        if self.numeric {
            "driftwatch_profile_numeric"
        } else {
            "driftwatch_profile_categorical"
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::LargeBinary)
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let data_type = args
            .expr_fields
            .first()
            .map(|f| f.data_type().clone())
            .ok_or_else(|| {
                DataFusionError::Internal(format!("{} takes one argument", self.name()))
            })?;
        Ok(Box::new(ProfileAccumulator {
            profile: ColumnProfile::with_category_limit(
                self.kind(),
                describe_arrow_type(&data_type),
                self.category_limit,
            ),
            numbers: HashMap::default(),
            last: None,
            increasing: true,
            peak: Default::default(),
            partials: Vec::new(),
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format_state_name(args.name, "profile"),
            DataType::LargeBinary,
            true,
        ))])
    }
}

/// One batch's categorical value counts, borrowed from the batch's arrays
/// (no allocation per row); a fixed-seed hasher keeps every run identical.
type Counts<'a> = HashMap<&'a str, u64, foldhash::fast::FixedState>;

/// Adds one batch of a categorical column to `profile`: values are counted
/// first (one hash per row) and each distinct value is added once with its
/// count; the frequency summary is reduced at most once per batch.
/// Dictionary columns are counted by key, without touching their strings
/// per row.
fn count_categories(array: &ArrayRef, profile: &mut ColumnProfile) -> Result<()> {
    profile.update_nulls(array.logical_null_count() as u64);
    fn add<'a>(values: impl Iterator<Item = Option<&'a str>>, counts: &mut Counts<'a>) {
        for v in values.flatten() {
            *counts.entry(v).or_insert(0) += 1;
        }
    }
    let mut counts = Counts::default();
    match array.data_type() {
        DataType::Utf8 => add(array.as_string::<i32>().iter(), &mut counts),
        DataType::LargeUtf8 => add(array.as_string::<i64>().iter(), &mut counts),
        DataType::Utf8View => count_views(array.as_string_view(), &mut counts),
        DataType::Dictionary(_, value) if value.as_ref() == &DataType::Utf8 => {
            let dict = array.as_any_dictionary();
            let keys = arrow::compute::cast(dict.keys(), &DataType::UInt32)?;
            let keys = keys.as_primitive::<arrow::datatypes::UInt32Type>();
            let values = dict.values().as_string::<i32>();
            let mut per_key = vec![0u64; values.len()];
            // A null key is a null row (counted above); a valid key pointing
            // at a null value is one too, and is skipped with it.
            for k in keys.iter().flatten() {
                if let Some(c) = per_key.get_mut(k as usize) {
                    *c += 1;
                }
            }
            for (i, &n) in per_key.iter().enumerate() {
                if n > 0 && values.is_valid(i) {
                    *counts.entry(values.value(i)).or_insert(0) += n;
                }
            }
        }
        _ => {
            // Booleans and other dictionaries: their text form.
            let cast = arrow::compute::cast(array, &DataType::Utf8)?;
            let mut owned: Counts = Counts::default();
            add(cast.as_string::<i32>().iter(), &mut owned);
            profile.update_str_count_map(owned);
            return Ok(());
        }
    }
    profile.update_str_count_map(counts);
    Ok(())
}

/// Counts a string-view column by its views. Equal views are equal
/// strings (a view is the length with the string itself when it has at most
/// 12 bytes, else the length, a prefix and where the bytes are — and the
/// Parquet reader gives every row of one dictionary entry the same view), so
/// rows are counted by the view as one 16-byte integer (no string hash, no
/// byte comparison, no pointer to follow) and each distinct view's text is
/// looked up once. Different views of the same text (the same string stored
/// twice) add up in `counts`, which is keyed by text.
fn count_views<'a>(strings: &'a arrow::array::StringViewArray, counts: &mut Counts<'a>) {
    let views = strings.views();
    let mut by_view: HashMap<u128, (u64, usize), foldhash::fast::FixedState> = HashMap::default();
    let mut add = |i: usize| {
        by_view.entry(views[i]).or_insert((0, i)).0 += 1;
    };
    match strings.nulls() {
        None => (0..strings.len()).for_each(&mut add),
        Some(nulls) => nulls.valid_indices().for_each(&mut add),
    }
    for (n, first) in by_view.into_values() {
        *counts.entry(strings.value(first)).or_insert(0) += n;
    }
}

#[derive(Debug)]
struct ProfileAccumulator {
    profile: ColumnProfile,
    /// Numbers counted (by canonical bits) while the column's distinct
    /// values may still fit the small domain; folded in value order.
    numbers: NumberCounts,
    /// The last finite number seen, in row order (for `increasing`).
    last: Option<f64>,
    /// Whether the numbers seen so far increased row by row.
    increasing: bool,
    /// The largest size reported so far (see [`Accumulator::size`] below).
    peak: std::sync::atomic::AtomicUsize,
    /// Serialized partial profiles received from other partitions.
    partials: Vec<Vec<u8>>,
}

impl ProfileAccumulator {
    /// The small-domain path for plain integer columns (issue 19): while the
    /// column still fits its small domain and the batch's values are within
    /// ±2^53 (exact as `f64`), they are counted as integers — no conversion
    /// to `f64`, and by offset in an array when their span is short (no hash
    /// per value). Returns whether the batch was taken; otherwise the caller
    /// takes the general path. Same counts, same order evidence.
    fn count_whole_numbers(&mut self, array: &ArrayRef) -> Result<bool> {
        const EXACT: i64 = 1 << 53;
        let domain_holds = self
            .profile
            .numeric
            .as_ref()
            .is_some_and(|s| s.small_domain.is_some());
        let plain_integer = matches!(
            array.data_type(),
            DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::UInt8
                | DataType::UInt16
                | DataType::UInt32
        );
        if !domain_holds || !plain_integer {
            return Ok(false);
        }
        let wide = arrow::compute::cast(array, &DataType::Int64)?;
        let ints = wide.as_primitive::<Int64Type>();
        let valid: std::borrow::Cow<'_, [i64]> = if ints.null_count() == 0 {
            std::borrow::Cow::Borrowed(ints.values().as_ref())
        } else {
            std::borrow::Cow::Owned(ints.iter().flatten().collect())
        };
        let (Some(&lo), Some(&hi)) = (valid.iter().min(), valid.iter().max()) else {
            // Only nulls.
            self.profile.update_nulls(ints.null_count() as u64);
            return Ok(true);
        };
        if lo <= -EXACT || hi >= EXACT {
            return Ok(false);
        }
        self.profile.update_nulls(ints.null_count() as u64);
        if self.increasing {
            self.increasing =
                ColumnProfile::observe_order(valid.iter().map(|&v| v as f64), &mut self.last);
        }
        count_integers(&valid, lo, hi, &mut self.numbers);
        if self.numbers.len() > SMALL_DOMAIN_LIMIT {
            self.fold_numbers();
        }
        Ok(true)
    }

    fn fold_numbers(&mut self) {
        if !self.numbers.is_empty() {
            let counts = std::mem::take(&mut self.numbers);
            self.profile.update_f64_counts(counts);
        }
    }
}

fn to_bytes(profile: &ColumnProfile) -> Result<Vec<u8>> {
    serde_json::to_vec(profile)
        .map_err(|e| DataFusionError::Internal(format!("serializing a column profile: {e}")))
}

impl Accumulator for ProfileAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let Some(array) = values.first() else {
            return Ok(());
        };
        match self.profile.kind {
            ColumnKind::Numeric => {
                if self.count_whole_numbers(array)? {
                    return Ok(());
                }
                let cast = numeric_view(array)?;
                let numbers = cast.as_primitive::<Float64Type>();
                self.profile.update_nulls(numbers.null_count() as u64);
                if self.increasing {
                    self.increasing =
                        ColumnProfile::observe_order(numbers.iter().flatten(), &mut self.last);
                }
                let domain_holds = self
                    .profile
                    .numeric
                    .as_ref()
                    .is_some_and(|s| s.small_domain.is_some());
                if domain_holds {
                    // Count now, add each distinct value once when folded.
                    if numbers.null_count() == 0 {
                        count_numbers(numbers.values(), &mut self.numbers);
                    } else {
                        let valid: Vec<f64> = numbers.iter().flatten().collect();
                        count_numbers(&valid, &mut self.numbers);
                    }
                    if self.numbers.len() > SMALL_DOMAIN_LIMIT {
                        self.fold_numbers();
                    }
                } else if numbers.null_count() == 0 {
                    self.profile.update_f64_batch(numbers.values());
                } else {
                    let valid: Vec<f64> = numbers.iter().flatten().collect();
                    self.profile.update_f64_batch(&valid);
                }
            }
            ColumnKind::Categorical => count_categories(array, &mut self.profile)?,
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.fold_numbers();
        self.profile.set_increasing(self.increasing);
        self.profile.finish();
        Ok(vec![ScalarValue::LargeBinary(Some(to_bytes(
            &self.profile,
        )?))])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let Some(states) = states.first() else {
            return Ok(());
        };
        let states = states.as_binary::<i64>();
        for i in 0..states.len() {
            if states.is_valid(i) {
                self.partials.push(states.value(i).to_vec());
            }
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.fold_numbers();
        self.profile.set_increasing(self.increasing);
        self.profile.finish();
        let mut partials = std::mem::take(&mut self.partials);
        partials.sort();
        for bytes in &partials {
            let partial: ColumnProfile = serde_json::from_slice(bytes).map_err(|e| {
                DataFusionError::Internal(format!("reading a partial column profile: {e}"))
            })?;
            self.profile
                .merge(&partial, "column")
                .map_err(|e| DataFusionError::Internal(e.to_string()))?;
        }
        self.profile.finish();
        Ok(ScalarValue::LargeBinary(Some(to_bytes(&self.profile)?)))
    }

    fn size(&self) -> usize {
        let numeric = self.profile.numeric.as_ref().map_or(0, |s| {
            s.exact_values.as_ref().map_or(0, |v| v.capacity() * 8)
                + s.small_domain.as_ref().map_or(0, |v| v.capacity() * 16)
                + s.sketch.retained() * 8
                + s.tails
                    .as_ref()
                    .map_or(0, |t| (t.low.capacity() + t.high.capacity()) * 16)
        });
        let now = std::mem::size_of_val(self)
            + self.numbers.capacity() * 24
            + numeric
            + self.profile.frequencies.items.len() * 80
            + self.profile.frequencies.kept_bytes()
            + 4096 // HLL registers
            + self.partials.iter().map(Vec::len).sum::<usize>();
        // DataFusion grows a no-grouping aggregate's reservation by every
        // increase of `size()` and never shrinks it, so a buffer that fills
        // and drains would be counted again on every refill: report the
        // high-water mark instead.
        let peak = self
            .peak
            .fetch_max(now, std::sync::atomic::Ordering::Relaxed);
        peak.max(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        BooleanArray, DictionaryArray, LargeStringArray, StringArray, StringViewArray,
    };
    use arrow::datatypes::Int32Type;
    use proptest::prelude::*;

    /// The row-at-a-time profile of the column's text form: the reference.
    fn row_by_row(values: &[Option<String>]) -> ColumnProfile {
        let mut p = ColumnProfile::new(ColumnKind::Categorical, "utf8");
        for v in values {
            match v {
                Some(s) => p.update_str(s),
                None => p.update_null(),
            }
        }
        p
    }

    fn counted(array: ArrayRef) -> ColumnProfile {
        let mut p = ColumnProfile::new(ColumnKind::Categorical, "utf8");
        count_categories(&array, &mut p).unwrap();
        p
    }

    proptest! {
        #[test]
        fn batch_counts_equal_row_by_row_updates_for_every_string_layout(
            // Up to 12 bytes a view holds its string inline; past it, not.
            values in proptest::collection::vec(
                proptest::option::of("[a-e]{0,2}|[a-c]{11,14}"),
                0..300,
            )
        ) {
            let expected = row_by_row(&values);
            let refs: Vec<Option<&str>> = values.iter().map(|v| v.as_deref()).collect();
            let layouts: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from(refs.clone())),
                Arc::new(LargeStringArray::from(refs.clone())),
                Arc::new(StringViewArray::from(refs.clone())),
                Arc::new(refs.iter().copied().collect::<DictionaryArray<Int32Type>>()),
            ];
            for array in layouts {
                let got = counted(array.clone());
                prop_assert_eq!(got.count, expected.count, "{}", array.data_type());
                prop_assert_eq!(got.nulls, expected.nulls);
                prop_assert_eq!(&got.frequencies, &expected.frequencies);
                prop_assert_eq!(got.distinct.estimate(), expected.distinct.estimate());
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// The accumulator's cross-batch counting describes the same numbers
        /// as row-by-row updates, across the small domain's overflow.
        #[test]
        fn numeric_batches_through_the_accumulator_match_row_by_row(
            values in proptest::collection::vec(
                proptest::option::of(prop_oneof![3 => 0i64..50, 1 => -3000i64..3000]),
                0..5000,
            ),
            batch in 1usize..900,
        ) {
            let mut expected = ColumnProfile::new(ColumnKind::Numeric, "int64");
            for v in &values {
                match v {
                    Some(x) => expected.update_f64(*x as f64),
                    None => expected.update_null(),
                }
            }
            expected.finish();
            let mut acc = ProfileAccumulator {
                profile: ColumnProfile::new(ColumnKind::Numeric, "int64"),
                numbers: HashMap::default(),
                last: None,
                increasing: true,
                partials: Vec::new(),
                peak: Default::default(),
            };
            for chunk in values.chunks(batch) {
                let array: ArrayRef = Arc::new(arrow::array::Int64Array::from(chunk.to_vec()));
                acc.update_batch(&[array]).unwrap();
            }
            let ScalarValue::LargeBinary(Some(bytes)) = acc.evaluate().unwrap() else {
                panic!("a profile")
            };
            let got: ColumnProfile = serde_json::from_slice(&bytes).unwrap();
            prop_assert_eq!((got.count, got.nulls), (expected.count, expected.nulls));
            let (g, e) = (got.numeric.as_ref().unwrap(), expected.numeric.as_ref().unwrap());
            prop_assert_eq!((g.min, g.max), (e.min, e.max));
            prop_assert_eq!(&g.exact_values, &e.exact_values);
            prop_assert_eq!(&g.small_domain, &e.small_domain);
            prop_assert_eq!(g.moments.n, e.moments.n);
            prop_assert!((g.moments.mean - e.moments.mean).abs() <= 1e-9 * e.moments.mean.abs().max(1.0));
            prop_assert_eq!(g.quantiles().n(), e.quantiles().n());
        }
    }

    #[test]
    fn issue_17_temporal_columns_are_numbers_on_their_epoch_scale() {
        use arrow::array::{
            Date32Array, Date64Array, DurationNanosecondArray, Time32MillisecondArray,
            Time64MicrosecondArray, TimestampNanosecondArray, TimestampSecondArray,
        };
        let cases: Vec<(ArrayRef, Vec<Option<f64>>)> = vec![
            (
                Arc::new(TimestampSecondArray::from(vec![Some(1_704_067_200), None])),
                vec![Some(1_704_067_200.0), None],
            ),
            (
                Arc::new(
                    TimestampNanosecondArray::from(vec![1_704_067_200_500_000_000])
                        .with_timezone("+02:00"),
                ),
                vec![Some(1_704_067_200.5)],
            ),
            (
                Arc::new(Date32Array::from(vec![19_723, -1])),
                vec![Some(19_723.0), Some(-1.0)],
            ),
            (
                Arc::new(Date64Array::from(vec![86_400_000 * 3])),
                vec![Some(3.0)],
            ),
            (
                Arc::new(DurationNanosecondArray::from(vec![1_500_000_000])),
                vec![Some(1.5)],
            ),
            (
                Arc::new(Time32MillisecondArray::from(vec![3_600_500])),
                vec![Some(3600.5)],
            ),
            (
                Arc::new(Time64MicrosecondArray::from(vec![60_000_001])),
                vec![Some(60.000001)],
            ),
        ];
        for (array, want) in cases {
            assert_eq!(profile_kind(array.data_type()), Some(ColumnKind::Numeric));
            let got = numeric_view(&array).unwrap();
            let got: Vec<Option<f64>> = got.as_primitive::<Float64Type>().iter().collect();
            assert_eq!(got, want, "{}", array.data_type());
        }
        assert_eq!(
            profile_kind(&DataType::Decimal128(10, 2)),
            Some(ColumnKind::Numeric)
        );
        assert!(
            unprofiled_reason(&DataType::BinaryView)
                .unwrap()
                .starts_with("binary: ")
        );
        assert!(
            unprofiled_reason(&DataType::Interval(arrow::datatypes::IntervalUnit::DayTime))
                .unwrap()
                .starts_with("interval: ")
        );
        assert_eq!(unprofiled_reason(&DataType::Date32), None);
    }

    #[test]
    fn dictionary_keys_to_null_values_are_nulls_and_booleans_count_as_text() {
        let values = StringArray::from(vec![Some("x"), None, Some("y")]);
        let keys = arrow::array::Int32Array::from(vec![Some(0), Some(1), None, Some(2), Some(0)]);
        let dict: ArrayRef =
            Arc::new(DictionaryArray::<Int32Type>::try_new(keys, Arc::new(values)).unwrap());
        let p = counted(dict);
        assert_eq!((p.count, p.nulls), (5, 2));
        assert_eq!(p.frequencies.items.get("x"), Some(&2));
        assert_eq!(p.frequencies.items.get("y"), Some(&1));
        let bools: ArrayRef = Arc::new(BooleanArray::from(vec![
            Some(true),
            None,
            Some(true),
            Some(false),
        ]));
        let p = counted(bools);
        assert_eq!((p.count, p.nulls), (4, 1));
        assert_eq!(p.frequencies.items.get("true"), Some(&2));
        assert_eq!(p.frequencies.items.get("false"), Some(&1));
    }
}
