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

use crate::profile::{ColumnKind, ColumnProfile, NumberCounts, count_integers, count_numbers};
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
        Ok(Box::new(ProfileAccumulator::new(
            ColumnProfile::with_category_limit(
                self.kind(),
                describe_arrow_type(&data_type),
                self.category_limit,
            ),
        )))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format_state_name(args.name, "profile"),
            DataType::LargeBinary,
            true,
        ))])
    }
}

/// Categorical value counts by borrowed text, as the profile takes them
/// ([`CategoryCounts::fold_into`]); a fixed-seed hasher keeps every run
/// identical.
type Counts<'a> = HashMap<&'a str, u64, foldhash::fast::FixedState>;

/// The string layouts [`tally_categories`] reads as they are; other
/// categorical types (booleans, other dictionaries) are cast to text first.
fn is_plain_text(data_type: &DataType) -> bool {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, value) => value.as_ref() == &DataType::Utf8,
        _ => false,
    }
}

/// Adds one batch of a categorical column: its nulls to `profile` at once,
/// its values counted (one hash per row) into `kept`, the counts the
/// accumulator keeps across batches and folds into the profile (see
/// [`CategoryCounts`]). String views are counted by view
/// ([`CategoryCounts::add_views`]), other layouts by [`tally_categories`].
fn count_categories(
    array: &ArrayRef,
    profile: &mut ColumnProfile,
    kept: &mut CategoryCounts,
) -> Result<()> {
    profile.update_nulls(array.logical_null_count() as u64);
    let cast;
    let array = if is_plain_text(array.data_type()) {
        array
    } else {
        // Booleans and other dictionaries: their text form.
        cast = arrow::compute::cast(array, &DataType::Utf8)?;
        &cast
    };
    if array.data_type() == &DataType::Utf8View {
        kept.add_views(array.as_string_view(), profile);
        return Ok(());
    }
    tally_categories(array, |value, n| kept.add(value, n))
}

/// Calls `each(value, count)` for the non-null values of a text column
/// ([`is_plain_text`]), at least once per distinct value (the same value
/// may come more than once; callers add the counts up). Dictionary columns
/// are counted by key, without touching their strings per row.
fn tally_categories<'a>(array: &'a ArrayRef, mut each: impl FnMut(&'a str, u64)) -> Result<()> {
    match array.data_type() {
        DataType::Utf8 => array
            .as_string::<i32>()
            .iter()
            .flatten()
            .for_each(|v| each(v, 1)),
        DataType::LargeUtf8 => array
            .as_string::<i64>()
            .iter()
            .flatten()
            .for_each(|v| each(v, 1)),
        // Views are counted by view where it matters (see
        // `CategoryCounts::add_views`); here, value by value.
        DataType::Utf8View => array
            .as_string_view()
            .iter()
            .flatten()
            .for_each(|v| each(v, 1)),
        DataType::Dictionary(_, _) => {
            let dict = array.as_any_dictionary();
            let keys = arrow::compute::cast(dict.keys(), &DataType::UInt32)?;
            let keys = keys.as_primitive::<arrow::datatypes::UInt32Type>();
            let values = dict.values().as_string::<i32>();
            let mut per_key = vec![0u64; values.len()];
            // A null key is a null row (counted by the caller); a valid key
            // pointing at a null value is one too, and is skipped with it.
            for k in keys.iter().flatten() {
                if let Some(c) = per_key.get_mut(k as usize) {
                    *c += 1;
                }
            }
            for (i, &n) in per_key.iter().enumerate() {
                if n > 0 && values.is_valid(i) {
                    each(values.value(i), n);
                }
            }
        }
        other => {
            return Err(DataFusionError::Internal(format!(
                "counting categories of {other} without casting them to text"
            )));
        }
    }
    Ok(())
}

/// Distinct numbers a scan partition counts exactly across batches before
/// it folds them into its profile and sketches batch by batch (issue 19):
/// up to about 0.6 MiB of counts per profiled column and partition. A
/// column with a few thousand distinct values (clock times, flight numbers,
/// hours since a date) is then counted — one array slot or one hash per
/// row — instead of sorted and sketched in every batch, and its sketch is
/// built once, from the exact counts in value order.
pub const COUNTED_NUMBERS_LIMIT: usize = 16_384;

/// Category counts a scan partition keeps across batches (issue 19), keyed
/// by the value as written: exact while there are at most the column's
/// category limit of them — the profile is then the same as counting row
/// by row — and a Misra–Gries summary reduced in place past it.
///
/// Counting a whole partition before touching the profile spares the
/// frequency summary's and the distinct sketch's per-batch work on every
/// value of every batch. Strings of up to 12 bytes read as views (the
/// Parquet reader's layout) are counted by their view, which holds the
/// whole string: one 16-byte key hashed per row into a map that lives as
/// long as the scan, so a column of a few thousand tail numbers costs no
/// per-batch map and no per-batch lookup of each distinct string. Longer
/// strings are counted by view within the batch, then by their kept text
/// ([`crate::profile::kept_category_value`]).
///
/// **Past the limit** (half a million tail numbers in ten million rows) the
/// counters are reduced where they are, once they would pass
/// [`CategoryCounts::reduce_at`] (1.5 × the limit): subtract the
/// (limit+1)-th largest count from every counter and drop those left at
/// zero, adding each dropped value to the distinct sketch. That is the summary's own Misra–Gries step (every
/// counter stays within `(n − Σ counters) / (limit + 1)` below its true
/// count), so the profile's error bound holds as before; done in place it
/// costs a pass over the counts per few ten thousand new values, where
/// folding them into the profile cost a string map, the summary's sorted
/// inserts and a fresh 4 MiB allocation each time (0.58 s of CPU on that
/// column). Long values' bytes are bounded too: past
/// [`crate::profile::MAX_KEPT_CATEGORY_BYTES`] they are folded into the
/// profile.
#[derive(Debug, Default)]
struct CategoryCounts {
    counts: HashMap<Box<str>, u64, foldhash::fast::FixedState>,
    /// Counts of inline views (strings of at most 12 bytes).
    inline: super::view_counts::ViewCounts,
    /// A batch's inline views, gathered to be counted together (kept, to
    /// reuse).
    batch: Vec<u128>,
    /// Bytes of the values in `counts`.
    bytes: usize,
    /// Non-null values counted since the last fold.
    rows: u64,
    /// Whether the counters were reduced since the last fold (they are
    /// then lower bounds, not exact counts).
    reduced: bool,
    /// The counts, gathered to find a reduction's cut (kept, to reuse).
    scratch: Vec<u64>,
}

/// Rows by long view within one batch, with the first row of each view.
type LongViews = HashMap<u128, (u64, usize), foldhash::fast::FixedState>;

/// The longest string an Arrow view holds inline.
const INLINE_VIEW_BYTES: u32 = 12;

/// The string an inline view holds (its little-endian bytes): the bytes
/// after the 4-byte length. Views come from UTF-8 arrays; bytes that are
/// not UTF-8 (a bug elsewhere) are skipped rather than guessed at.
fn inline_str(view: &[u8; 16]) -> Option<&str> {
    std::str::from_utf8(inline_bytes(view)).ok()
}

/// The bytes an inline view holds (see [`inline_str`]), not checked for
/// UTF-8 again: the view comes from a UTF-8 array.
fn inline_bytes(view: &[u8; 16]) -> &[u8] {
    let len = (u32::from_le_bytes([view[0], view[1], view[2], view[3]])).min(INLINE_VIEW_BYTES);
    &view[4..4 + len as usize]
}

impl CategoryCounts {
    fn add(&mut self, value: &str, n: u64) {
        self.rows += n;
        // One counter per value whichever layout it came in (a reduction
        // splitting one value's count over two counters would break the
        // error bound): short values under the view Arrow gives them (its
        // validation requires the zero padding `make_view` writes), long
        // ones under the form the summary keeps.
        if value.len() <= INLINE_VIEW_BYTES as usize {
            let view = arrow::array::builder::make_view(value.as_bytes(), 0, 0);
            self.inline.add(view, n);
            return;
        }
        let value = crate::profile::kept_category_value(value);
        if let Some(count) = self.counts.get_mut(value.as_ref()) {
            *count += n;
        } else {
            self.bytes += value.len();
            self.counts.insert(value.into(), n);
        }
    }

    /// Counts a string-view column's non-null values (see [`CategoryCounts`]):
    /// inline views gathered and counted together (their slots prefetched,
    /// see [`super::view_counts`]), long ones by view within the batch,
    /// then by text.
    fn add_views(&mut self, strings: &arrow::array::StringViewArray, profile: &mut ColumnProfile) {
        let views = strings.views();
        let mut batch = std::mem::take(&mut self.batch);
        batch.clear();
        let mut long = LongViews::default();
        #[inline(always)]
        fn add(batch: &mut Vec<u128>, long: &mut LongViews, view: u128, i: usize) {
            if view as u32 <= INLINE_VIEW_BYTES {
                batch.push(view);
            } else {
                long.entry(view).or_insert((0, i)).0 += 1;
            }
        }
        // Loops written out: through a closure called from two places the
        // row's work was not inlined (twice the time).
        match strings.nulls() {
            None => {
                for (i, &view) in views.iter().enumerate() {
                    add(&mut batch, &mut long, view, i);
                }
            }
            Some(nulls) => {
                for i in nulls.valid_indices() {
                    if let Some(&view) = views.get(i) {
                        add(&mut batch, &mut long, view, i);
                    }
                }
            }
        }
        // Reduced first if the batch could take the counters past their
        // bound, so the table stays at the size the bound needs.
        self.reduce_before(batch.len(), profile);
        self.inline.add_each(&batch);
        self.rows += batch.len() as u64;
        self.batch = batch;
        for (n, first) in long.into_values() {
            self.add(strings.value(first), n);
        }
    }

    /// Counters held before they are reduced, for a category `limit`:
    /// half as many again, so a reduction (a pass over the table) comes
    /// once per `limit / 2` or so new values, and the table stays at the
    /// size its 3/4 load needs (131,072 slots, 3 MiB, at the default
    /// limit). Batches are checked before they are counted.
    fn reduce_at(limit: usize) -> usize {
        limit.saturating_add(limit / 2)
    }

    /// Keeps the counts within their bounds (see [`CategoryCounts`]):
    /// reduces the counters past the limit, folds long values into
    /// `profile` past their byte budget.
    fn bound(&mut self, profile: &mut ColumnProfile) {
        self.reduce_before(0, profile);
        if self.bytes > crate::profile::MAX_KEPT_CATEGORY_BYTES {
            self.fold_into(profile);
        }
    }

    /// Reduces the counters if `incoming` new ones could take them past
    /// [`CategoryCounts::reduce_at`].
    fn reduce_before(&mut self, incoming: usize, profile: &mut ColumnProfile) {
        let limit = profile.frequencies.limit;
        if self.counts.len() + self.inline.len() + incoming > Self::reduce_at(limit) {
            self.reduce(limit, &mut profile.distinct);
        }
    }

    /// One Misra–Gries step in place (see [`CategoryCounts`]): subtracts
    /// the (limit+1)-th largest count from every counter; the values of
    /// those left at zero go into `distinct`.
    fn reduce(&mut self, limit: usize, distinct: &mut crate::profile::DistinctSketch) {
        let mut all = std::mem::take(&mut self.scratch);
        all.clear();
        self.inline.push_counts(&mut all);
        all.extend(self.counts.values().copied());
        if all.len() > limit {
            let cut = *all.select_nth_unstable_by(limit, |a, b| b.cmp(a)).1;
            self.inline.retain(|view, count| {
                if *count > cut {
                    *count -= cut;
                    return true;
                }
                distinct.update_utf8(inline_bytes(&view.to_le_bytes()));
                false
            });
            let mut freed = 0;
            self.counts.retain(|value, count| {
                if *count > cut {
                    *count -= cut;
                    return true;
                }
                distinct.update_str(value);
                freed += value.len();
                false
            });
            self.bytes -= freed;
            self.reduced = true;
        }
        self.scratch = all;
    }

    /// Adds the counts to `profile` and empties them.
    ///
    /// The maps keep their capacity: a column past its byte budget fills
    /// them again.
    fn fold_into(&mut self, profile: &mut ColumnProfile) {
        // A reduction may have dropped every counter: the rows still count.
        if self.rows == 0 {
            return;
        }
        // Inline values are read in place from their views' bytes: no
        // string is allocated per distinct value.
        let inline: Vec<([u8; 16], u64)> = self
            .inline
            .iter()
            .map(|(view, n)| (view.to_le_bytes(), n))
            .collect();
        self.inline.clear();
        let mut all: Counts<'_> =
            HashMap::with_capacity_and_hasher(inline.len() + self.counts.len(), Default::default());
        for (bytes, n) in &inline {
            if let Some(text) = inline_str(bytes) {
                *all.entry(text).or_insert(0) += n;
            }
        }
        for (value, &n) in &self.counts {
            *all.entry(value.as_ref()).or_insert(0) += n;
        }
        profile.update_str_summary(all, self.rows, !self.reduced);
        self.counts.clear();
        self.bytes = 0;
        self.rows = 0;
        self.reduced = false;
    }
}

#[derive(Debug)]
struct ProfileAccumulator {
    profile: ColumnProfile,
    /// Whether numbers are still counted across batches (within
    /// [`COUNTED_NUMBERS_LIMIT`]) rather than added batch by batch.
    /// Categories always are (see [`ProfileAccumulator::bound_counts`]).
    counting: bool,
    /// Numbers counted (by canonical bits) while there are at most
    /// [`COUNTED_NUMBERS_LIMIT`]; folded in value order.
    numbers: NumberCounts,
    /// Categories counted while within their bounds (see [`CategoryCounts`]).
    categories: CategoryCounts,
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
    /// An accumulator adding to `profile`.
    fn new(profile: ColumnProfile) -> Self {
        Self {
            profile,
            counting: true,
            numbers: NumberCounts::default(),
            categories: CategoryCounts::default(),
            last: None,
            increasing: true,
            peak: Default::default(),
            partials: Vec::new(),
        }
    }

    /// The counting path for plain integer columns (issue 19): while the
    /// column still fits its small domain and the batch's values are within
    /// ±2^53 (exact as `f64`), they are counted as integers — no conversion
    /// to `f64`, and by offset in an array when their span is short (no hash
    /// per value). Returns whether the batch was taken; otherwise the caller
    /// takes the general path. Same counts, same order evidence.
    fn count_whole_numbers(&mut self, array: &ArrayRef) -> Result<bool> {
        const EXACT: i64 = 1 << 53;
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
        if !self.counting || !plain_integer {
            return Ok(false);
        }
        let wide = arrow::compute::cast(array, &DataType::Int64)?;
        let ints = wide.as_primitive::<Int64Type>();
        let values = ints.values();
        let valid: std::borrow::Cow<'_, [i64]> = match ints.nulls() {
            Some(nulls) if nulls.null_count() > 0 => nulls
                .valid_indices()
                .filter_map(|i| values.get(i).copied())
                .collect(),
            _ => std::borrow::Cow::Borrowed(values.as_ref()),
        };
        let Some((lo, hi)) = min_max(&valid) else {
            // Only nulls.
            self.profile.update_nulls(ints.null_count() as u64);
            return Ok(true);
        };
        if lo <= -EXACT || hi >= EXACT {
            return Ok(false);
        }
        self.profile.update_nulls(ints.null_count() as u64);
        if self.increasing {
            // Whole numbers within ±2^53 order as their `f64`s do.
            let (first, last) = (valid.first().copied(), valid.last().copied());
            let continues = match (self.last, first) {
                (Some(before), Some(first)) => first as f64 >= before,
                _ => true,
            };
            self.increasing = continues && valid.is_sorted();
            self.last = last.map(|v| v as f64).or(self.last);
        }
        count_integers(&valid, lo, hi, &mut self.numbers);
        self.bound_counts();
        Ok(true)
    }

    /// Past their bounds, folds the counts into the profile: numbers are
    /// then added batch by batch.
    ///
    /// Categories are never added batch by batch: full counts are folded in
    /// and counting starts again (issue 19). On a column of many distinct
    /// values (half a million tail numbers in ten million rows) the
    /// frequency summary is then merged once per category limit of new
    /// values instead of once per batch — each merge walks all the kept
    /// values and sorts new ones into them, which cost 3.3 s of CPU on that
    /// column when done per 8,192-row batch. The summary stays a merge of
    /// exact counts of consecutive rows, so its error bound holds as before.
    fn bound_counts(&mut self) {
        match self.profile.kind {
            ColumnKind::Numeric => {
                if self.numbers.len() > COUNTED_NUMBERS_LIMIT {
                    self.fold_counts();
                    self.counting = false;
                }
            }
            ColumnKind::Categorical => self.categories.bound(&mut self.profile),
        }
    }

    /// Adds what was counted to the profile (numbers in value order).
    fn fold_counts(&mut self) {
        if !self.numbers.is_empty() {
            let counts = std::mem::take(&mut self.numbers);
            self.profile.update_f64_counts(counts);
        }
        self.categories.fold_into(&mut self.profile);
    }
}

/// The smallest and largest of `values`, in one pass.
fn min_max(values: &[i64]) -> Option<(i64, i64)> {
    let first = *values.first()?;
    Some(
        values
            .iter()
            .fold((first, first), |(lo, hi), &v| (lo.min(v), hi.max(v))),
    )
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
                if self.counting {
                    // Count now, add each distinct value once when folded.
                    if numbers.null_count() == 0 {
                        count_numbers(numbers.values(), &mut self.numbers);
                    } else {
                        let valid: Vec<f64> = numbers.iter().flatten().collect();
                        count_numbers(&valid, &mut self.numbers);
                    }
                    self.bound_counts();
                } else if numbers.null_count() == 0 {
                    self.profile.update_f64_batch(numbers.values());
                } else {
                    let valid: Vec<f64> = numbers.iter().flatten().collect();
                    self.profile.update_f64_batch(&valid);
                }
            }
            ColumnKind::Categorical => {
                count_categories(array, &mut self.profile, &mut self.categories)?;
                self.bound_counts();
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.fold_counts();
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
        self.fold_counts();
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
            + self.categories.counts.capacity() * 40
            + self.categories.inline.allocated_bytes()
            + self.categories.batch.capacity() * 16
            + self.categories.bytes
            + self.categories.inline.len() * INLINE_VIEW_BYTES as usize
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

    /// The batch counted, then folded into a profile.
    fn counted(array: ArrayRef) -> ColumnProfile {
        let mut folded = ColumnProfile::new(ColumnKind::Categorical, "utf8");
        let mut kept = CategoryCounts::default();
        count_categories(&array, &mut folded, &mut kept).unwrap();
        kept.fold_into(&mut folded);
        folded
    }

    /// A profile through the accumulator, `values` in batches of `batch`.
    fn accumulated(profile: ColumnProfile, batches: Vec<ArrayRef>) -> ColumnProfile {
        let mut acc = ProfileAccumulator::new(profile);
        for array in batches {
            acc.update_batch(&[array]).unwrap();
        }
        let ScalarValue::LargeBinary(Some(bytes)) = acc.evaluate().unwrap() else {
            panic!("a profile")
        };
        serde_json::from_slice(&bytes).unwrap()
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

        /// Issue 19: categories counted across batches give the profile of
        /// row-by-row updates while within the category limit; past it (the
        /// counts folded in each time they fill, and counted again) the
        /// counts add up and every kept frequency is within its error bound.
        #[test]
        fn issue_19_categories_counted_across_batches_match_row_by_row(
            // Inline (up to 12 bytes) and longer values.
            values in proptest::collection::vec(proptest::option::of("[a-z]{1,2}|[a-b]{12,13}"), 0..2000),
            batch in 1usize..300,
            limit in prop_oneof![Just(crate::profile::DEFAULT_CATEGORY_LIMIT), 2usize..40],
        ) {
            let mut expected = ColumnProfile::with_category_limit(ColumnKind::Categorical, "utf8", limit);
            for v in &values {
                match v {
                    Some(s) => expected.update_str(s),
                    None => expected.update_null(),
                }
            }
            // Views and plain strings by turns: one value can be counted
            // both by its view and by its text before a fold.
            let batches: Vec<ArrayRef> = values
                .chunks(batch)
                .enumerate()
                .map(|(i, c)| {
                    if i % 3 == 2 {
                        Arc::new(StringArray::from(c.to_vec())) as ArrayRef
                    } else {
                        Arc::new(StringViewArray::from(c.to_vec())) as ArrayRef
                    }
                })
                .collect();
            let got = accumulated(
                ColumnProfile::with_category_limit(ColumnKind::Categorical, "utf8", limit),
                batches,
            );
            prop_assert_eq!((got.count, got.nulls), (expected.count, expected.nulls));
            prop_assert_eq!(got.frequencies.n, expected.frequencies.n);
            // HLL's estimate follows the order values arrive in (here hash
            // order, not row order, a value again after each fold): both
            // are within three standard errors (3 x 1.6 %) of the truth.
            let truth = values.iter().flatten().collect::<std::collections::HashSet<_>>().len() as f64;
            for estimate in [got.distinct.estimate(), expected.distinct.estimate()] {
                prop_assert!((estimate - truth).abs() <= 0.048 * truth, "{estimate} vs {truth}");
            }
            if expected.frequencies.exact {
                prop_assert_eq!(&got.frequencies, &expected.frequencies);
            } else {
                let mut truth: HashMap<&str, u64> = HashMap::new();
                for v in values.iter().flatten() {
                    *truth.entry(v.as_str()).or_insert(0) += 1;
                }
                let bound = got.frequencies.error_bound();
                for (value, &count) in &got.frequencies.items {
                    let true_count = truth[value.as_str()];
                    prop_assert!(count <= true_count && true_count - count <= bound, "{value}: {count} of {true_count}, bound {bound}");
                }
                // A value the summary dropped occurred at most `bound` times.
                for (value, &true_count) in &truth {
                    if !got.frequencies.items.contains_key(*value) {
                        prop_assert!(true_count <= bound, "{value} dropped with {true_count}, bound {bound}");
                    }
                }
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
            sorted in any::<bool>(),
        ) {
            let mut values = values;
            if sorted {
                // Nulls stay where they are; the numbers between them increase.
                let mut numbers: Vec<i64> = values.iter().flatten().copied().collect();
                numbers.sort_unstable();
                let mut numbers = numbers.into_iter();
                for v in values.iter_mut().flatten() {
                    *v = numbers.next().unwrap_or_default();
                }
            }
            let mut expected = ColumnProfile::new(ColumnKind::Numeric, "int64");
            for v in &values {
                match v {
                    Some(x) => expected.update_f64(*x as f64),
                    None => expected.update_null(),
                }
            }
            expected.finish();
            let batches = values
                .chunks(batch)
                .map(|c| Arc::new(arrow::array::Int64Array::from(c.to_vec())) as ArrayRef)
                .collect();
            let got = accumulated(ColumnProfile::new(ColumnKind::Numeric, "int64"), batches);
            prop_assert_eq!((got.count, got.nulls), (expected.count, expected.nulls));
            let (g, e) = (got.numeric.as_ref().unwrap(), expected.numeric.as_ref().unwrap());
            prop_assert_eq!((g.min, g.max), (e.min, e.max));
            prop_assert_eq!(&g.exact_values, &e.exact_values);
            prop_assert_eq!(&g.small_domain, &e.small_domain);
            prop_assert_eq!(g.moments.n, e.moments.n);
            prop_assert!((g.moments.mean - e.moments.mean).abs() <= 1e-9 * e.moments.mean.abs().max(1.0));
            prop_assert_eq!(g.quantiles().n(), e.quantiles().n());
            let increasing = ColumnProfile::observe_order(
                values.iter().flatten().map(|&v| v as f64),
                &mut None,
            );
            prop_assert_eq!(g.increasing, Some(increasing));
            prop_assert_eq!(increasing, sorted || values.iter().flatten().is_sorted());
        }
    }

    /// Issue 19: numbers are counted across batches up to
    /// [`COUNTED_NUMBERS_LIMIT`] distinct values, then folded in once and
    /// added batch by batch; whole numbers and fractions, either way the
    /// profile describes the same numbers as row-by-row updates.
    #[test]
    fn issue_19_numbers_counted_past_the_limit_fold_once() {
        let limit = COUNTED_NUMBERS_LIMIT as i64;
        for (batches, fractions) in [(2, false), (4, false), (2, true), (4, true)] {
            // Each batch: limit/2 + 1 consecutive multiples of 7 (or 7/4),
            // its first the previous batch's last: the limit is passed in
            // the second batch, and later batches are added batch by batch.
            let mut expected = ColumnProfile::new(ColumnKind::Numeric, "float64");
            let arrays: Vec<ArrayRef> = (0..batches)
                .map(|b| {
                    let values: Vec<f64> = (0..=limit / 2)
                        .map(|i| {
                            let v = (b * (limit / 2) + i) as f64 * 7.0;
                            if fractions { v / 4.0 } else { v }
                        })
                        .collect();
                    values.iter().for_each(|&v| expected.update_f64(v));
                    if fractions {
                        Arc::new(arrow::array::Float64Array::from(values)) as ArrayRef
                    } else {
                        let ints: Vec<i64> = values.iter().map(|&v| v as i64).collect();
                        Arc::new(arrow::array::Int64Array::from(ints)) as ArrayRef
                    }
                })
                .collect();
            expected.finish();
            let got = accumulated(ColumnProfile::new(ColumnKind::Numeric, "float64"), arrays);
            let (g, e) = (
                got.numeric.as_ref().unwrap(),
                expected.numeric.as_ref().unwrap(),
            );
            assert_eq!(got.count, expected.count);
            assert_eq!((g.min, g.max), (e.min, e.max));
            assert_eq!(
                (g.exact_values.is_none(), g.small_domain.is_none()),
                (true, true)
            );
            assert_eq!(g.moments.n, e.moments.n);
            assert!((g.moments.mean - e.moments.mean).abs() <= 1e-9 * e.moments.mean);
            assert_eq!(g.tails, e.tails);
            let sketch = g.quantiles();
            assert_eq!(sketch.n(), e.moments.n);
            // Every value once: the median's rank error is within the bound.
            let median = sketch.quantile(0.5).unwrap();
            let (lo, hi) = (g.min.unwrap(), g.max.unwrap());
            let rank = (median - lo) / (hi - lo);
            assert!(
                (rank - 0.5).abs() <= sketch.rank_error_bound() + 1e-3,
                "{rank}"
            );
            let (estimate, _) = got.distinct_values();
            let n = e.moments.n as f64;
            assert!((estimate - n).abs() <= 0.05 * n, "{estimate} of {n}");
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
