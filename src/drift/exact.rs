//! Small-sample p-values for the two-sample homogeneity tests
//! ([`super::chisquare_homogeneity`], [`super::g_test`]) over a 2×k table
//! (issue 17): where expected counts are too small for the χ²(k − 1)
//! approximation, the p-value is computed conditionally on the table's
//! margins instead — Fisher's exact test for 2×2, an exact enumeration of
//! every table for 2×k within a budget, and a seeded Monte Carlo
//! permutation test beyond it.
//!
//! This module owns the rule that picks the path ([`needs_exact`], Cochran's
//! rule), the three conditional p-values, and the seeded generator they
//! share with the calibration simulation. Everything is deterministic: the
//! same counts give the same p-value on every machine and run, and the cost
//! is bounded by [`EXACT_TABLE_BUDGET`] and [`MONTE_CARLO_TABLES`].
//!
//! Why conditional on the margins: under "both samples come from one
//! distribution" the reference row of the table, given the column totals,
//! is multivariate hypergeometric whatever that distribution is, so the
//! p-value is exact (Fisher) or unbiased up to Monte Carlo error, at any n.

use serde::{Deserialize, Serialize};
use statrs::function::factorial::ln_binomial;

use super::TestOutcome;
use super::categorical::{g_cell, pearson_cell};

/// Tables (with the observed margins) at most for the exact 2×k path
/// (k ≥ 3); past it the Monte Carlo path runs instead. The tables are
/// counted first ([`TABLE_COUNT_STEPS`]); the pruned enumeration then
/// visits at most `k × EXACT_TABLE_BUDGET` partial tables, usually far
/// fewer.
pub const EXACT_TABLE_BUDGET: usize = 100_000;

/// Random tables drawn by the Monte Carlo path. Its p-value
/// `(1 + hits) / (1 + MONTE_CARLO_TABLES)` has a standard error of at most
/// `√(p(1 − p)/10,000)` around the exact one: ≤ 0.0022 at p = 0.05, ≤ 0.005
/// anywhere.
pub const MONTE_CARLO_TABLES: usize = 10_000;

/// Categories at most for the Monte Carlo path (its cost is
/// `MONTE_CARLO_TABLES × k` hypergeometric draws). A wider table with tiny
/// expected counts keeps the asymptotic p-value, and says so.
pub const MONTE_CARLO_MAX_CATEGORIES: usize = 2_000;

/// The fixed seed of the Monte Carlo path: same counts, same p-value.
pub const MONTE_CARLO_SEED: u64 = 0x17f1_5be4;

/// Relative tolerance under which two statistics (or two table
/// probabilities, for Fisher) count as equal, so that rounding never drops
/// the observed table's ties from its own p-value (R's `fisher.test` uses
/// the same 10⁻⁷).
const TIE_TOLERANCE: f64 = 1e-7;

/// How a homogeneity test's p-value was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PValueMethod {
    /// From χ²(k − 1): every expected count passes Cochran's rule.
    Asymptotic,
    /// Fisher's exact test of the 2×2 table, two-sided
    /// (`scipy.stats.fisher_exact`).
    FisherExact,
    /// Every 2×k table with the observed margins enumerated; the p-value is
    /// the probability of the tables whose statistic is at least the
    /// observed one.
    ExactConditional,
    /// [`MONTE_CARLO_TABLES`] random tables with the observed margins
    /// (seeded); p = (1 + tables at least as extreme) / (1 + tables).
    MonteCarlo,
    /// Cochran's rule failed but the table has more than
    /// [`MONTE_CARLO_MAX_CATEGORIES`] categories: the asymptotic p-value,
    /// flagged as approximate.
    AsymptoticOverBudget,
}

impl PValueMethod {
    /// What a report says about the p-value.
    pub fn describe(self) -> &'static str {
        match self {
            PValueMethod::Asymptotic => "asymptotic χ² p-value",
            PValueMethod::FisherExact => {
                "Fisher's exact p-value (2×2 table with an expected count below 5)"
            }
            PValueMethod::ExactConditional => {
                "exact conditional p-value over every table with these margins (expected counts too small for χ²: Cochran's rule)"
            }
            PValueMethod::MonteCarlo => {
                "Monte Carlo permutation p-value, 10,000 seeded tables with these margins (expected counts too small for χ²: Cochran's rule; standard error ≤ 0.005)"
            }
            PValueMethod::AsymptoticOverBudget => {
                "asymptotic χ² p-value although expected counts are too small for it (over 2,000 categories: beyond the permutation budget); treat it as approximate"
            }
        }
    }

    /// `asymptotic`, `fisher_exact`, … as in JSON.
    pub fn name(self) -> &'static str {
        match self {
            PValueMethod::Asymptotic => "asymptotic",
            PValueMethod::FisherExact => "fisher_exact",
            PValueMethod::ExactConditional => "exact_conditional",
            PValueMethod::MonteCarlo => "monte_carlo",
            PValueMethod::AsymptoticOverBudget => "asymptotic_over_budget",
        }
    }
}

/// The statistic a 2×k conditional test orders tables by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Statistic {
    /// Pearson's `Σ (O − E)² / E`.
    Pearson,
    /// `G = 2 Σ O ln(O / E)` (Williams' correction is a constant factor
    /// given the margins, so it does not change the ordering).
    G,
}

/// A 2×k table reduced to the categories seen on either side, the row with
/// the smaller total first (so swapping the samples gives the same table,
/// hence bit-identical p-values).
struct Table {
    /// First row (smaller total), per category.
    row: Vec<u64>,
    /// Column totals, per category (all > 0).
    columns: Vec<u64>,
    /// First row's total.
    n_row: u64,
    /// Grand total.
    n: u64,
}

impl Table {
    fn new(reference: &[u64], current: &[u64]) -> Table {
        let (mut row, mut other) = (Vec::new(), Vec::new());
        for (&r, &c) in reference.iter().zip(current) {
            if r + c > 0 {
                row.push(r);
                other.push(c);
            }
        }
        let (a, b): (u64, u64) = (row.iter().sum(), other.iter().sum());
        if b < a {
            std::mem::swap(&mut row, &mut other);
        }
        let columns: Vec<u64> = row.iter().zip(&other).map(|(x, y)| x + y).collect();
        let n_row = a.min(b);
        Table {
            row,
            columns,
            n_row,
            n: a + b,
        }
    }

    /// Expected count of the first row's cell in each column, and of the
    /// second row's.
    fn expected(&self, j: usize) -> (f64, f64) {
        let col = self.columns[j] as f64;
        let n = self.n as f64;
        let e1 = self.n_row as f64 * col / n;
        (e1, col - e1)
    }

    /// One column's contribution when the first row holds `x` of it.
    fn cell(&self, statistic: Statistic, j: usize, x: u64) -> f64 {
        let (e1, e2) = self.expected(j);
        let (o1, o2) = (x as f64, (self.columns[j] - x) as f64);
        match statistic {
            Statistic::Pearson => pearson_cell(o1, e1) + pearson_cell(o2, e2),
            Statistic::G => g_cell(o1, e1) + g_cell(o2, e2),
        }
    }

    /// The statistic a table must reach to be at least as extreme as the
    /// observed one: the observed statistic, less [`TIE_TOLERANCE`] of it
    /// (so rounding does not split ties).
    fn threshold(&self, statistic: Statistic) -> f64 {
        let observed: f64 = (0..self.columns.len())
            .map(|j| self.cell(statistic, j, self.row[j]))
            .sum();
        observed - TIE_TOLERANCE * observed.abs()
    }

    /// [`needs_exact`] of this table.
    fn needs_exact(&self) -> bool {
        if self.columns.len() < 2 || self.n_row == 0 {
            return false;
        }
        let mut small = 0usize;
        for j in 0..self.columns.len() {
            let (e1, e2) = self.expected(j);
            for e in [e1, e2] {
                if e < 1.0 {
                    return true;
                }
                if e < 5.0 {
                    small += 1;
                }
            }
        }
        // More than 20 % of the 2k cells: 5·small > 2k.
        5 * small > 2 * self.columns.len()
    }
}

/// Cochran's rule (Cochran 1954), the one textbooks and R's `chisq.test`
/// warning use: the χ² approximation is trusted when no expected count is
/// below 1 and at most 20 % of them are below 5. For a 2×2 table (4 cells)
/// this is "every expected count ≥ 5". Only categories seen on either side
/// count. Fewer than two categories: nothing to test, no exact path.
pub fn needs_exact(reference: &[u64], current: &[u64]) -> bool {
    Table::new(reference, current).needs_exact()
}

/// Replaces the asymptotic p-value of `asymptotic` (the test's outcome over
/// the same counts) by a conditional one when [`needs_exact`] says so. The
/// statistic is kept: only how its significance is judged changes.
pub(crate) fn small_sample(
    statistic: Statistic,
    reference: &[u64],
    current: &[u64],
    asymptotic: TestOutcome,
) -> (TestOutcome, PValueMethod) {
    let t = Table::new(reference, current);
    if !t.needs_exact() {
        return (asymptotic, PValueMethod::Asymptotic);
    }
    let (p, method) = if t.columns.len() == 2 {
        (fisher_2x2(&t), PValueMethod::FisherExact)
    } else if let Some(p) = enumerate(&t, statistic) {
        (p, PValueMethod::ExactConditional)
    } else if t.columns.len() <= MONTE_CARLO_MAX_CATEGORIES {
        (monte_carlo(&t, statistic), PValueMethod::MonteCarlo)
    } else {
        return (asymptotic, PValueMethod::AsymptoticOverBudget);
    };
    (
        TestOutcome::test(asymptotic.statistic, super::categorical::sanitize_p(p)),
        method,
    )
}

/// Fisher's exact test, two-sided as `scipy.stats.fisher_exact`: the first
/// row's count in the first column is hypergeometric given the margins; the
/// p-value sums the probabilities of every count no more probable than the
/// observed one (ties within [`TIE_TOLERANCE`]). When the observed count is
/// the most probable one, p is exactly 1, as in scipy.
fn fisher_2x2(t: &Table) -> f64 {
    let (m, n_row, n) = (t.columns[0], t.n_row, t.n);
    let lo = (m + n_row).saturating_sub(n);
    let hi = m.min(n_row);
    // ln P(x) up to the constant ln C(n, n_row), which normalising removes.
    let ln_p = |x: u64| ln_binomial(m, x) + ln_binomial(n - m, n_row - x);
    let observed = ln_p(t.row[0]);
    let peak = (lo..=hi).map(ln_p).fold(f64::NEG_INFINITY, f64::max);
    let (mut total, mut tail, mut all) = (0.0, 0.0, true);
    for x in lo..=hi {
        let l = ln_p(x);
        let w = (l - peak).exp();
        total += w;
        if l <= observed + TIE_TOLERANCE {
            tail += w;
        } else {
            all = false;
        }
    }
    if all { 1.0 } else { tail / total }
}

/// Steps at most spent counting a table's 2×k tables before deciding
/// between enumeration and Monte Carlo (`k × smaller row total`); a
/// larger table goes to Monte Carlo without counting.
pub const TABLE_COUNT_STEPS: usize = 20_000_000;

/// The number of 2×k tables with `t`'s margins (first rows with these
/// column totals summing to `n_row`), or `None` when counting would cost
/// more than [`TABLE_COUNT_STEPS`]. Counts past 10³⁰ are capped there,
/// which keeps every comparison with the budget right.
fn count_tables(t: &Table) -> Option<f64> {
    let n_row = usize::try_from(t.n_row).ok()?;
    if t.columns.len().saturating_mul(n_row + 1) > TABLE_COUNT_STEPS {
        return None;
    }
    const CAP: f64 = 1e30;
    // ways[s]: first rows over the columns so far summing to s.
    let mut ways = vec![0.0f64; n_row + 1];
    ways[0] = 1.0;
    let mut prefix = vec![0.0f64; n_row + 2];
    for &col in &t.columns {
        for s in 0..=n_row {
            prefix[s + 1] = prefix[s] + ways[s];
        }
        let col = usize::try_from(col).unwrap_or(usize::MAX);
        for (s, w) in ways.iter_mut().enumerate() {
            let from = s.saturating_sub(col);
            *w = (prefix[s + 1] - prefix[from]).min(CAP);
        }
    }
    Some(ways[n_row])
}

/// The exact conditional test of a 2×k table: every first row with the
/// observed margins, weighted by its multivariate hypergeometric
/// probability; p = P(statistic ≥ observed). `None` when there are more
/// than [`EXACT_TABLE_BUDGET`] tables (or counting them is too costly).
///
/// The walk prunes like the network algorithm (Mehta & Patel 1983): each
/// column's contribution is convex in its count, so per-column minima and
/// maxima bound what the remaining columns can add; a subtree that must
/// (or cannot) reach the observed statistic is added whole, its total
/// probability in closed form (Vandermonde: Σ Π C(cᵢ, xᵢ) = C(Σ cᵢ, left)).
/// The answer is the full enumeration's, only cheaper.
fn enumerate(t: &Table, statistic: Statistic) -> Option<f64> {
    if count_tables(t)? > EXACT_TABLE_BUDGET as f64 {
        return None;
    }
    let k = t.columns.len();
    let threshold = t.threshold(statistic);
    // Per column: the feasible counts' smallest and largest contribution;
    // suffix sums bound what columns j.. can still add.
    let n_other = t.n - t.n_row;
    let (mut min_rest, mut max_rest) = (vec![0.0; k + 1], vec![0.0; k + 1]);
    for j in (0..k).rev() {
        let col = t.columns[j];
        let (lo, hi) = (col.saturating_sub(n_other), col.min(t.n_row));
        let (e1, _) = t.expected(j);
        let near = [e1.floor(), e1.ceil()].map(|x| (x.max(0.0) as u64).clamp(lo, hi));
        let cmin = near
            .iter()
            .map(|&x| t.cell(statistic, j, x))
            .fold(f64::INFINITY, f64::min);
        let cmax = t.cell(statistic, j, lo).max(t.cell(statistic, j, hi));
        min_rest[j] = min_rest[j + 1] + cmin;
        max_rest[j] = max_rest[j + 1] + cmax;
    }
    let mut rest = vec![0u64; k + 1];
    for j in (0..k).rev() {
        rest[j] = rest[j + 1] + t.columns[j];
    }
    let mut walk = Walk {
        t,
        statistic,
        rest: &rest,
        min_rest: &min_rest,
        max_rest: &max_rest,
        threshold,
        // Slack so that rounding in the bounds never prunes a table that
        // sits on the threshold: those are decided one by one.
        slack: 1e-9 * threshold.abs().max(1.0),
        ln_norm: ln_binomial(t.n, t.n_row),
        total: 0.0,
        tail: 0.0,
    };
    walk.visit(0, t.n_row, 0.0, 0.0);
    // The total is 1 up to rounding; dividing by it removes that rounding.
    Some(if walk.total > 0.0 {
        (walk.tail / walk.total).min(1.0)
    } else {
        1.0
    })
}

/// The depth-first walk of [`enumerate`].
struct Walk<'a> {
    t: &'a Table,
    statistic: Statistic,
    rest: &'a [u64],
    min_rest: &'a [f64],
    max_rest: &'a [f64],
    threshold: f64,
    slack: f64,
    ln_norm: f64,
    total: f64,
    tail: f64,
}

impl Walk<'_> {
    /// Visits column `j` with `left` first-row values still to place,
    /// `ln_w` the log weight and `stat` the statistic of columns before j.
    fn visit(&mut self, j: usize, left: u64, ln_w: f64, stat: f64) {
        let k = self.t.columns.len();
        if j == k || stat + self.min_rest[j] >= self.threshold + self.slack {
            // Every completion reaches the observed statistic.
            let w = (ln_w + ln_binomial(self.rest[j], left) - self.ln_norm).exp();
            self.total += w;
            if j == k && stat < self.threshold {
                return;
            }
            self.tail += w;
            return;
        }
        if stat + self.max_rest[j] < self.threshold - self.slack {
            // No completion reaches it.
            self.total += (ln_w + ln_binomial(self.rest[j], left) - self.ln_norm).exp();
            return;
        }
        let col = self.t.columns[j];
        let lo = left.saturating_sub(self.rest[j + 1]);
        let hi = col.min(left);
        for x in lo..=hi {
            let ln = ln_w + ln_binomial(col, x);
            let s = stat + self.t.cell(self.statistic, j, x);
            self.visit(j + 1, left - x, ln, s);
        }
    }
}

/// The Monte Carlo permutation test: [`MONTE_CARLO_TABLES`] random first
/// rows with the observed margins (sequential hypergeometric draws, seeded
/// with [`MONTE_CARLO_SEED`]); p = (1 + #{statistic ≥ observed}) / (1 +
/// tables), which is never 0 and is a valid p-value (Phipson & Smyth 2010).
fn monte_carlo(t: &Table, statistic: Statistic) -> f64 {
    let k = t.columns.len();
    let threshold = t.threshold(statistic);
    let ln = LnBinomial::new(t.n);
    // Column by column across all the tables, not table by table: column
    // j's draws in every table read `ln m!` near the same few entries (the
    // pool left at j, minus a draw count that varies by a few), which stay
    // in cache. Table by table, each table swept the whole `ln m!` table (8
    // MB at its largest); a quarter of perf's samples sat on one load of it.
    // Measured: 13–17 % less time at k = 2,000, 7 % at 500. Table i's draw
    // for column j is still the stream's (i·(k − 1) + j)-th, and its
    // statistic adds the same cells in the same order, so the p-value is the
    // same to the bit (tested against the table-by-table loop).
    let draws_per_table = (k - 1) as u64;
    let mut left = vec![t.n_row; MONTE_CARLO_TABLES];
    let mut stat = vec![0.0f64; MONTE_CARLO_TABLES];
    let mut pool = t.n;
    for (j, &col) in t.columns.iter().enumerate() {
        for (i, (left, stat)) in left.iter_mut().zip(stat.iter_mut()).enumerate() {
            let x = if j + 1 == k {
                *left
            } else {
                let draw = i as u64 * draws_per_table + j as u64;
                let u = SplitMix::at(MONTE_CARLO_SEED, draw).uniform();
                hypergeometric(&ln, u, pool, col, *left)
            };
            *stat += t.cell(statistic, j, x);
            *left -= x;
        }
        pool -= col;
    }
    let hits = stat.iter().filter(|&&s| s >= threshold).count();
    (1 + hits) as f64 / (1 + MONTE_CARLO_TABLES) as f64
}

/// A hypergeometric draw by inversion from the mode outwards ("chop-down"):
/// the number of marked items among `draws` taken without replacement from
/// `total` items of which `marked` are marked, for a uniform `u` in [0, 1).
/// Expected steps grow with the distribution's standard deviation, not
/// with `total`.
fn hypergeometric(ln: &LnBinomial, u: f64, total: u64, marked: u64, draws: u64) -> u64 {
    let lo = (marked + draws).saturating_sub(total);
    let hi = marked.min(draws);
    if lo == hi {
        return lo;
    }
    let mode =
        (((draws + 1) as f64 * (marked + 1) as f64 / (total + 2) as f64) as u64).clamp(lo, hi);
    let ln_p = |x: u64| ln.of(marked, x) + ln.of(total - marked, draws - x) - ln.of(total, draws);
    let p_mode = ln_p(mode).exp();
    let mut u = u - p_mode;
    if u <= 0.0 {
        return mode;
    }
    // P(x + 1) / P(x), for lo <= x < hi. `total + x + 1 - marked - draws`
    // is ordered so that no intermediate goes below zero (x >= lo).
    let up = |x: u64| {
        (marked - x) as f64 * (draws - x) as f64
            / ((x + 1) as f64 * (total + x + 1 - marked - draws) as f64)
    };
    let (mut l, mut r, mut pl, mut pr) = (mode, mode, p_mode, p_mode);
    loop {
        let mut moved = false;
        if r < hi {
            pr *= up(r);
            r += 1;
            u -= pr;
            if u <= 0.0 {
                return r;
            }
            moved = true;
        }
        if l > lo {
            pl /= up(l - 1);
            l -= 1;
            u -= pl;
            if u <= 0.0 {
                return l;
            }
            moved = true;
        }
        if !moved {
            // Rounding left a sliver of u uncovered: the mode is as good as any.
            return mode;
        }
    }
}

/// `ln C(n, k)` for the Monte Carlo draws: from a table of `ln m!` while the
/// table's total is at most [`LN_FACTORIAL_TABLE`] (three lookups instead of
/// log-gamma evaluations: 9× faster draws), else from statrs. The table's
/// cumulative sums are within 3·10⁻¹⁴ relative of `ln m!` (2.5·10⁻⁷ absolute
/// at 2²⁰: below 10⁻⁶ relative in a draw's probability), plenty for choosing
/// a random draw; the exact paths never use it.
struct LnBinomial(Option<Vec<f64>>);

/// Largest total with a table of `ln m!` (8 MB).
const LN_FACTORIAL_TABLE: u64 = 1 << 20;

impl LnBinomial {
    fn new(n: u64) -> Self {
        LnBinomial((n <= LN_FACTORIAL_TABLE).then(|| {
            let mut table = Vec::with_capacity(n as usize + 1);
            let mut acc = 0.0f64;
            table.push(0.0);
            for m in 1..=n {
                acc += (m as f64).ln();
                table.push(acc);
            }
            table
        }))
    }

    fn of(&self, n: u64, k: u64) -> f64 {
        match &self.0 {
            Some(t) => t[n as usize] - t[k as usize] - t[(n - k) as usize],
            None => ln_binomial(n, k),
        }
    }
}

/// SplitMix64: a seeded, dependency-free generator (the same draws on every
/// machine), shared with the calibration simulation.
pub(crate) struct SplitMix(pub(crate) u64);

/// SplitMix64's increment: its state after `i` draws is `seed + i·GAMMA`.
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

impl SplitMix {
    /// The generator seeded with `seed`, positioned so that its next draw
    /// is the stream's `i`-th (from 0): `SplitMix::at(s, 0)` is
    /// `SplitMix(s)`.
    fn at(seed: u64, i: u64) -> Self {
        SplitMix(seed.wrapping_add(i.wrapping_mul(GAMMA)))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GAMMA);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform draw in [0, 1) with 53 random bits.
    pub(crate) fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Every table, no pruning: the definition [`enumerate`] must equal.
    fn brute_force(t: &Table, statistic: Statistic) -> (f64, usize) {
        fn rec(
            t: &Table,
            (st, threshold): (Statistic, f64),
            j: usize,
            left: u64,
            ln_w: f64,
            stat: f64,
            acc: &mut (f64, f64, usize),
        ) {
            if j == t.columns.len() {
                if left == 0 {
                    let w = ln_w.exp();
                    acc.0 += w;
                    if stat >= threshold {
                        acc.1 += w;
                    }
                    acc.2 += 1;
                }
                return;
            }
            for x in 0..=t.columns[j].min(left) {
                let ln = ln_w + ln_binomial(t.columns[j], x);
                rec(
                    t,
                    (st, threshold),
                    j + 1,
                    left - x,
                    ln,
                    stat + t.cell(st, j, x),
                    acc,
                );
            }
        }
        let threshold = t.threshold(statistic);
        let mut acc = (0.0, 0.0, 0);
        rec(
            t,
            (statistic, threshold),
            0,
            t.n_row,
            -ln_binomial(t.n, t.n_row),
            0.0,
            &mut acc,
        );
        (acc.1 / acc.0, acc.2)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// The pruned walk gives the full enumeration's p-value, and the
        /// table count is the enumeration's.
        #[test]
        fn pruned_enumeration_equals_brute_force(
            r in prop::collection::vec(0u64..9, 3..6),
            c in prop::collection::vec(0u64..9, 3..6),
        ) {
            let k = r.len().min(c.len());
            let (r, c) = (&r[..k], &c[..k]);
            let t = Table::new(r, c);
            prop_assume!(t.columns.len() >= 2 && t.n_row > 0);
            for st in [Statistic::Pearson, Statistic::G] {
                let (want, tables) = brute_force(&t, st);
                prop_assert_eq!(count_tables(&t), Some(tables as f64));
                let got = enumerate(&t, st).unwrap_or(f64::NAN);
                prop_assert!((got - want.min(1.0)).abs() <= 1e-12, "{got} vs {want}");
            }
        }
    }

    /// The Monte Carlo test as first written, one table at a time from one
    /// running generator: what [`monte_carlo`]'s column-by-column loop must
    /// reproduce to the bit.
    fn monte_carlo_table_by_table(t: &Table, statistic: Statistic) -> f64 {
        let k = t.columns.len();
        let threshold = t.threshold(statistic);
        let mut rng = SplitMix(MONTE_CARLO_SEED);
        let ln = LnBinomial::new(t.n);
        let mut hits = 0usize;
        for _ in 0..MONTE_CARLO_TABLES {
            let (mut pool, mut left, mut stat) = (t.n, t.n_row, 0.0);
            for j in 0..k {
                let col = t.columns[j];
                let x = if j + 1 == k {
                    left
                } else {
                    hypergeometric(&ln, rng.uniform(), pool, col, left)
                };
                stat += t.cell(statistic, j, x);
                pool -= col;
                left -= x;
            }
            if stat >= threshold {
                hits += 1;
            }
        }
        (1 + hits) as f64 / (1 + MONTE_CARLO_TABLES) as f64
    }

    #[test]
    fn splitmix_at_i_is_the_streams_ith_draw() {
        let mut running = SplitMix(MONTE_CARLO_SEED);
        for i in 0..1_000u64 {
            let want = running.next();
            assert_eq!(SplitMix::at(MONTE_CARLO_SEED, i).next(), want, "draw {i}");
        }
    }

    #[test]
    fn issue_17_monte_carlo_by_column_equals_table_by_table_on_a_wide_table() {
        // 200 categories, a large reference and a batch of about two values
        // a category (the shape that reaches Monte Carlo in practice).
        let reference: Vec<u64> = (0..200u64).map(|j| 900 + (j * 37) % 250).collect();
        let current: Vec<u64> = (0..200u64).map(|j| (j * 7919) % 5).collect();
        let t = Table::new(&reference, &current);
        for st in [Statistic::Pearson, Statistic::G] {
            let want = monte_carlo_table_by_table(&t, st);
            assert_eq!(monte_carlo(&t, st).to_bits(), want.to_bits(), "{st:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]

        /// Column by column, the same draws and the same p-value to the bit.
        #[test]
        fn issue_17_monte_carlo_by_column_equals_table_by_table(
            r in prop::collection::vec(0u64..400, 3..40),
            c in prop::collection::vec(0u64..6, 3..40),
        ) {
            let k = r.len().min(c.len());
            let t = Table::new(&r[..k], &c[..k]);
            prop_assume!(t.columns.len() >= 3 && t.n_row > 0);
            for st in [Statistic::Pearson, Statistic::G] {
                let want = monte_carlo_table_by_table(&t, st);
                prop_assert_eq!(monte_carlo(&t, st).to_bits(), want.to_bits());
            }
        }
    }

    #[test]
    fn cochrans_rule() {
        // 2×2: every expected count ≥ 5 or Fisher.
        assert!(!needs_exact(&[10, 10], &[10, 10]));
        assert!(needs_exact(&[10, 4], &[10, 4]));
        // 2×5, two of ten cells below 5 (20 %): still asymptotic; three: exact.
        assert!(!needs_exact(&[20, 20, 20, 20, 4], &[20, 20, 20, 20, 4]));
        assert!(needs_exact(&[20, 20, 20, 4, 4], &[20, 20, 20, 4, 5]));
        // An expected count below 1 anywhere.
        assert!(needs_exact(&[500, 500, 1], &[500, 500, 0]));
        // One category: nothing to test.
        assert!(!needs_exact(&[3, 0], &[2, 0]));
    }

    #[test]
    fn hypergeometric_draws_cover_the_support_with_the_right_mean() {
        let mut rng = SplitMix(5);
        let (mut sum, n) = (0u64, 20_000);
        for _ in 0..n {
            let x = hypergeometric(&LnBinomial::new(50), rng.uniform(), 50, 20, 10);
            assert!(x <= 10);
            sum += x;
        }
        // Mean draws · marked / total = 4; sd of the mean ≈ 0.01.
        let mean = sum as f64 / n as f64;
        assert!((mean - 4.0).abs() < 0.05, "{mean}");
        let ln = LnBinomial::new(10);
        assert_eq!(hypergeometric(&ln, 0.3, 10, 10, 4), 4);
        assert_eq!(hypergeometric(&ln, 0.3, 10, 0, 4), 0);
        // The table agrees with statrs.
        let big = LnBinomial::new(100_000);
        let want = ln_binomial(100_000, 31_337);
        assert!((big.of(100_000, 31_337) - want).abs() <= 1e-9 * want);
    }
}
