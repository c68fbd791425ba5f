//! `driftwatch_profile_numeric(col)` and `driftwatch_profile_categorical(col)`:
//! aggregates that build a [`ColumnProfile`] in the same scan as the checks.
//!
//! Each partition builds its own profile; partial profiles travel between
//! plan stages as their JSON bytes. The final stage does not merge them in the
//! (thread-timing-dependent) order they arrive: it sorts them by their bytes
//! first, so the same input always gives the same profile, even though the
//! quantile sketch's merge is only associative within its error bound.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Signature, Volatility,
};

use crate::profile::{ColumnKind, ColumnProfile};
use crate::rules::describe_arrow_type;

/// Which kind of profile a column gets, if any: numbers are numeric; strings
/// (plain, large, view, dictionary) and booleans are categorical; other types
/// (timestamps, binary, nested) are not profiled.
pub fn profile_kind(data_type: &DataType) -> Option<ColumnKind> {
    let value = match data_type {
        DataType::Dictionary(_, v) => v.as_ref(),
        other => other,
    };
    if value.is_numeric() {
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

/// The profiling aggregate for one kind of column.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Profiler {
    numeric: bool,
    signature: Signature,
}

impl Profiler {
    /// The aggregate for `kind` as a DataFusion UDAF.
    pub fn udaf(kind: ColumnKind) -> AggregateUDF {
        AggregateUDF::from(Self {
            numeric: kind == ColumnKind::Numeric,
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
            profile: ColumnProfile::new(self.kind(), describe_arrow_type(&data_type)),
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

#[derive(Debug)]
struct ProfileAccumulator {
    profile: ColumnProfile,
    /// Serialized partial profiles received from other partitions.
    partials: Vec<Vec<u8>>,
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
                let cast = arrow::compute::cast(array, &DataType::Float64)?;
                for v in cast.as_primitive::<Float64Type>() {
                    match v {
                        Some(x) => self.profile.update_f64(x),
                        None => self.profile.update_null(),
                    }
                }
            }
            ColumnKind::Categorical => {
                let cast = arrow::compute::cast(array, &DataType::Utf8)?;
                for v in cast.as_string::<i32>() {
                    match v {
                        Some(s) => self.profile.update_str(s),
                        None => self.profile.update_null(),
                    }
                }
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
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
        });
        let frequencies: usize = self
            .profile
            .frequencies
            .items
            .keys()
            .map(|k| k.len() + 48)
            .sum();
        std::mem::size_of_val(self)
            + numeric
            + frequencies
            + 4096 // HLL registers
            + self.partials.iter().map(Vec::len).sum::<usize>()
    }
}
