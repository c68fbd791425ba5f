//! Statistical drift tests: pure functions over plain Rust data.
//!
//! This module owns the *mathematics* of drift detection and nothing else: it
//! takes sorted `&[f64]` samples or aligned category/bin counts and returns a
//! [`TestOutcome`]. It never touches DataFusion, sketches or I/O, so every
//! function can be checked against scipy reference values
//! (`tests/fixtures/drift/reference.json`, produced once by
//! `tests/fixtures/drift/generate.py`) without Python at test time.
//!
//! Test names, default thresholds, drift directions and the default-test
//! choice follow Evidently 0.7 (`evidently/legacy/calculations/stattests/`),
//! because users already know those names and expect the same verdicts.
//!
//! - [`ks`]: two-sample Kolmogorov–Smirnov with scipy's exact and asymptotic
//!   p-values (`ks_2samp(method='auto')`).
//! - [`categorical`]: `chisquare` and the two-proportion `z` test over aligned
//!   counts, the two-sample homogeneity tests `chisquare_homogeneity` and
//!   `g_test`, plus the helper that aligns two category→count maps.
//! - [`exact`]: Fisher's exact, exact conditional and seeded Monte Carlo
//!   p-values for those two tests when expected counts are tiny.
//! - [`binned`]: distances over aligned bins (`jensenshannon`, `psi`,
//!   `kl_div`, `hellinger`, `tvd`) with Evidently's empty-bin smoothing.
//! - [`distance`]: `wasserstein` (normed) and `energy` over raw samples.
//! - [`location`]: two-sided `mannw` (Mann–Whitney U) and Welch's `t_test`.
//! - [`cvm`]: `cramer_von_mises`, exact for small samples as scipy.
//! - [`compare`]: a batch profile against a reference profile: test choice,
//!   exact or sketched path, multiple-testing correction, dataset drift.
//! - `interpolated`: piecewise-linear CDFs for the sketched `wasserstein`
//!   (a sketch item's weight spread over the gaps around it) and their
//!   added error bound.
//! - [`anderson`]: two-sample Anderson–Darling with scipy's interpolated,
//!   capped p-value.
//! - [`sequential`]: a Shiryaev–Roberts e-detector per column that bounds
//!   the false alarms over many windows (`drift.sequential`).
//!
//! # Inputs, errors and NaN
//!
//! Callers drop nulls, NaN and ±inf before calling (Evidently does the same
//! before choosing and running a test). Every function validates its inputs
//! and returns [`DriftError`] instead of panicking: an empty sample, a
//! non-finite value, an unsorted sample, mismatched bin slices, or a sample
//! too small for the test are errors. No outcome ever contains NaN; p-values
//! are always in [0, 1]. Statistics may be infinite only where the test
//! itself says "certainly different" and scipy agrees: chi-square with a
//! category absent from the reference (`+inf`, p = 0) and Welch's t for two
//! constant samples with different values (`±inf`, p = 0). Distances are
//! always finite (an overflow is reported as `f64::MAX`).

pub mod anderson;
pub mod binned;
pub mod categorical;
pub mod compare;
pub mod cvm;
pub mod distance;
pub mod exact;
mod interpolated;
pub mod ks;
pub mod location;
pub mod sequential;

#[cfg(test)]
pub(crate) mod calibration;
#[cfg(test)]
mod categorical_reference;
#[cfg(test)]
mod properties;
#[cfg(test)]
mod scipy_reference;
#[cfg(test)]
mod sketch_bounds;
#[cfg(test)]
mod small_counts_reference;

use serde::{Deserialize, Serialize};

pub use anderson::anderson;
pub use binned::{categorical_bins, fill_zeroes, hellinger, jensenshannon, kl_div, psi, tvd};
pub use categorical::{
    align_counts, chisquare, chisquare_homogeneity, chisquare_homogeneity_with_method, g_test,
    g_test_with_method, z_test,
};
pub use cvm::cramer_von_mises;
pub use distance::{energy, wasserstein};
pub use exact::{PValueMethod, needs_exact};
pub use ks::{kolmogorov_two_sided_sf, ks};
pub use location::{mannw, t_test};

/// Errors of the drift tests: always about the inputs, never internal.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DriftError {
    /// A sample (or a count vector) has no observations.
    #[error("the {0} sample is empty")]
    EmptySample(Side),
    /// A sample holds NaN or ±inf; callers must drop them first.
    #[error("the {0} sample contains a non-finite value")]
    NonFinite(Side),
    /// A sample that must be sorted ascending is not.
    #[error("the {0} sample is not sorted ascending")]
    Unsorted(Side),
    /// Aligned bins/categories of the two sides differ in length.
    #[error("reference has {reference} bins but current has {current}")]
    LengthMismatch { reference: usize, current: usize },
    /// A bin weight is negative or non-finite.
    #[error("the {0} bins contain a negative or non-finite weight")]
    InvalidWeight(Side),
    /// The test does not apply to this input (e.g. `z` on more than two
    /// categories); the message says why.
    #[error("{0}")]
    NotApplicable(&'static str),
}

/// Which of the two compared samples an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Reference,
    Current,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Reference => "reference",
            Side::Current => "current",
        })
    }
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, DriftError>;

/// The drift tests, named as in Evidently so rule files read the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TestKind {
    Ks,
    Chisquare,
    Z,
    Wasserstein,
    Psi,
    Jensenshannon,
    KlDiv,
    Hellinger,
    Tvd,
    Anderson,
    CramerVonMises,
    Mannw,
    Energy,
    TTest,
    /// Pearson's χ² test of homogeneity (2×k), not an Evidently test.
    ChisquareHomogeneity,
    /// The G-test (log-likelihood ratio) of homogeneity (2×k).
    GTest,
}

impl TestKind {
    /// The test's name as written in rule files and reports.
    pub fn name(self) -> &'static str {
        match self {
            TestKind::Ks => "ks",
            TestKind::Chisquare => "chisquare",
            TestKind::Z => "z",
            TestKind::Wasserstein => "wasserstein",
            TestKind::Psi => "psi",
            TestKind::Jensenshannon => "jensenshannon",
            TestKind::KlDiv => "kl_div",
            TestKind::Hellinger => "hellinger",
            TestKind::Tvd => "tvd",
            TestKind::Anderson => "anderson",
            TestKind::CramerVonMises => "cramer_von_mises",
            TestKind::Mannw => "mannw",
            TestKind::Energy => "energy",
            TestKind::TTest => "t_test",
            TestKind::ChisquareHomogeneity => "chisquare_homogeneity",
            TestKind::GTest => "g_test",
        }
    }

    /// True for tests whose outcome is a p-value (drift when it is small);
    /// false for distances (drift when the distance is large).
    pub fn is_p_value_test(self) -> bool {
        matches!(
            self,
            TestKind::Ks
                | TestKind::Chisquare
                | TestKind::Z
                | TestKind::Anderson
                | TestKind::CramerVonMises
                | TestKind::Mannw
                | TestKind::TTest
                | TestKind::ChisquareHomogeneity
                | TestKind::GTest
        )
    }
}

/// What a test computed. `p_value` is `None` for distance tests.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TestOutcome {
    /// The test statistic (KS D, χ², z, or the distance itself).
    pub statistic: f64,
    /// Two-sided p-value, for hypothesis tests only.
    pub p_value: Option<f64>,
}

impl TestOutcome {
    pub(crate) fn distance(statistic: f64) -> Self {
        TestOutcome {
            statistic,
            p_value: None,
        }
    }

    pub(crate) fn test(statistic: f64, p_value: f64) -> Self {
        TestOutcome {
            statistic,
            p_value: Some(p_value),
        }
    }
}

/// Evidently's default threshold of each test (its `StatTest.default_threshold`,
/// 0.05 when a test does not set one).
pub fn default_threshold(kind: TestKind) -> f64 {
    match kind {
        TestKind::Ks
        | TestKind::Chisquare
        | TestKind::Z
        | TestKind::Mannw
        | TestKind::TTest
        | TestKind::ChisquareHomogeneity
        | TestKind::GTest => 0.05,
        TestKind::Wasserstein
        | TestKind::Psi
        | TestKind::Jensenshannon
        | TestKind::KlDiv
        | TestKind::Hellinger
        | TestKind::Tvd
        | TestKind::Anderson
        | TestKind::CramerVonMises
        | TestKind::Energy => 0.1,
    }
}

/// Whether `outcome` means drift at `threshold`, with Evidently's comparison
/// direction for each test. Evidently is not uniform here and we follow it:
/// `ks` and `cramer_von_mises` flag `p ≤ t`, the other p-value tests `p < t`;
/// `energy` flags `d > t`, the other distances `d ≥ t`.
///
/// A p-value test whose outcome lacks a p-value falls back to comparing the
/// statistic as a distance (that only happens for hand-built outcomes).
pub fn is_drift(kind: TestKind, outcome: &TestOutcome, threshold: f64) -> bool {
    match (kind.is_p_value_test(), outcome.p_value) {
        (true, Some(p)) => match kind {
            TestKind::Ks | TestKind::CramerVonMises => p <= threshold,
            _ => p < threshold,
        },
        _ => match kind {
            TestKind::Energy => outcome.statistic > threshold,
            _ => outcome.statistic >= threshold,
        },
    }
}

/// The column's kind, as far as the default-test choice cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnKind {
    Numerical,
    Categorical,
}

/// Evidently's default test (`registry._get_default_stattest`):
///
/// - `reference_rows` = non-null reference rows; `distinct` = distinct
///   non-null values of reference and current together.
/// - `reference_rows ≤ 1000`: numerical with `distinct > 5` → `ks`;
///   otherwise `chisquare` if `distinct > 2`, else `z`.
/// - `reference_rows > 1000`: numerical with `distinct > 5` → `wasserstein`;
///   otherwise `jensenshannon`.
pub fn default_test(column: ColumnKind, reference_rows: u64, distinct: u64) -> TestKind {
    let numeric_continuous = column == ColumnKind::Numerical && distinct > 5;
    if reference_rows <= 1000 {
        if numeric_continuous {
            TestKind::Ks
        } else if distinct > 2 {
            TestKind::Chisquare
        } else {
            TestKind::Z
        }
    } else if numeric_continuous {
        TestKind::Wasserstein
    } else {
        TestKind::Jensenshannon
    }
}

/// The `defaults: sound` choice: Evidently's ([`default_test`]) except that
/// its goodness-of-fit `chisquare`, which treats the reference proportions
/// as exact and so over-alarms on small samples, becomes the two-sample
/// [`chisquare_homogeneity`]. (`z` is already a two-sample test: the pooled
/// two-proportion z² is the 2×2 homogeneity χ².)
pub fn sound_default_test(column: ColumnKind, reference_rows: u64, distinct: u64) -> TestKind {
    match default_test(column, reference_rows, distinct) {
        TestKind::Chisquare => TestKind::ChisquareHomogeneity,
        other => other,
    }
}

/// The `defaults: p_values` choice (what `drift.sequential` needs): a
/// p-value test whatever the reference's size — `ks` for continuous numeric
/// columns, `chisquare_homogeneity` for categories, `z` for two values —
/// i.e. the sound choice Evidently makes for small references, where it does
/// not yet switch to distances.
pub fn p_value_default_test(column: ColumnKind, distinct: u64) -> TestKind {
    sound_default_test(column, 0, distinct)
}

/// Walks two sorted samples together, one group of equal values at a time,
/// calling `visit(reference_range, current_range, values_before)` with the
/// group's index ranges in each sample and how many pooled values precede it.
/// The rank tests use it for midranks: the group's shared rank is
/// `values_before + (group size + 1) / 2`.
pub(crate) fn tie_groups(
    reference: &[f64],
    current: &[f64],
    mut visit: impl FnMut(std::ops::Range<usize>, std::ops::Range<usize>, usize),
) {
    let (mut i, mut j, mut seen) = (0usize, 0usize, 0usize);
    while i < reference.len() || j < current.len() {
        let v = match (reference.get(i), current.get(j)) {
            (Some(&a), Some(&b)) => a.min(b),
            (Some(&a), None) => a,
            (None, Some(&b)) => b,
            (None, None) => break,
        };
        let (i0, j0) = (i, j);
        while i < reference.len() && reference[i] == v {
            i += 1;
        }
        while j < current.len() && current[j] == v {
            j += 1;
        }
        visit(i0..i, j0..j, seen);
        seen += (i - i0) + (j - j0);
    }
}

/// Checks that a raw sample is non-empty, finite and sorted ascending.
pub(crate) fn check_sorted_sample(x: &[f64], side: Side) -> Result<()> {
    if x.is_empty() {
        return Err(DriftError::EmptySample(side));
    }
    if x.iter().any(|v| !v.is_finite()) {
        return Err(DriftError::NonFinite(side));
    }
    if x.windows(2).any(|w| w[0] > w[1]) {
        return Err(DriftError::Unsorted(side));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_choice_matches_evidently() {
        use ColumnKind::*;
        assert_eq!(default_test(Numerical, 1000, 6), TestKind::Ks);
        assert_eq!(default_test(Numerical, 1000, 5), TestKind::Chisquare);
        assert_eq!(default_test(Numerical, 10, 2), TestKind::Z);
        assert_eq!(default_test(Categorical, 500, 40), TestKind::Chisquare);
        assert_eq!(default_test(Categorical, 500, 2), TestKind::Z);
        assert_eq!(default_test(Numerical, 1001, 6), TestKind::Wasserstein);
        assert_eq!(default_test(Numerical, 1001, 5), TestKind::Jensenshannon);
        assert_eq!(default_test(Categorical, 5000, 2), TestKind::Jensenshannon);
    }

    #[test]
    fn sound_defaults_swap_only_the_goodness_of_fit_chisquare() {
        use ColumnKind::*;
        assert_eq!(
            sound_default_test(Categorical, 500, 40),
            TestKind::ChisquareHomogeneity
        );
        assert_eq!(
            sound_default_test(Numerical, 1000, 5),
            TestKind::ChisquareHomogeneity
        );
        assert_eq!(sound_default_test(Categorical, 500, 2), TestKind::Z);
        assert_eq!(sound_default_test(Numerical, 1000, 6), TestKind::Ks);
        assert_eq!(
            sound_default_test(Categorical, 5000, 40),
            TestKind::Jensenshannon
        );
        assert_eq!(
            sound_default_test(Numerical, 5000, 40),
            TestKind::Wasserstein
        );
    }

    #[test]
    fn drift_directions() {
        let p = |v| TestOutcome::test(0.0, v);
        assert!(is_drift(TestKind::Ks, &p(0.05), 0.05));
        assert!(!is_drift(TestKind::Chisquare, &p(0.05), 0.05));
        assert!(!is_drift(TestKind::Z, &p(0.05), 0.05));
        assert!(is_drift(TestKind::Z, &p(0.049), 0.05));
        let d = TestOutcome::distance;
        assert!(is_drift(TestKind::Wasserstein, &d(0.1), 0.1));
        assert!(!is_drift(TestKind::Energy, &d(0.1), 0.1));
        assert!(!is_drift(TestKind::Jensenshannon, &d(0.09), 0.1));
    }

    #[test]
    fn serde_names() {
        let names: Vec<String> = [
            TestKind::Ks,
            TestKind::KlDiv,
            TestKind::CramerVonMises,
            TestKind::TTest,
            TestKind::Jensenshannon,
        ]
        .iter()
        .map(|k| serde_json::to_string(k).unwrap_or_default())
        .collect();
        assert_eq!(
            names,
            [
                "\"ks\"",
                "\"kl_div\"",
                "\"cramer_von_mises\"",
                "\"t_test\"",
                "\"jensenshannon\""
            ]
        );
    }
}
