//! Category frequencies: exact while the number of distinct values stays at or
//! under a limit (default [`DEFAULT_LIMIT`] = 65,536, set per rule file or
//! column with `drift.max_categories`), then the heavy hitters plus an
//! "other" count.
//!
//! The exact range is what makes drift statistics on real dimension columns
//! (a few thousand tail numbers, airports, products) equal a computation on
//! the raw data (issue 17): with a limit of 1,000 a 4,000-category column was
//! tested on a truncated distribution and its Jensen–Shannon distance was
//! 50 % off Evidently's.
//!
//! Past the limit the summary is a Misra–Gries sketch with `limit` counters,
//! merged as Agarwal et al. ("Mergeable summaries", 2012): add the counters,
//! subtract the `(limit+1)`-th largest count from all, drop the non-positive.
//! Every kept count then underestimates the true count by at most
//! `error_bound()` = `(n − Σ kept) / (limit + 1)`; a value not kept occurred
//! at most that many times. Ties are broken by value, so the result depends
//! only on the multiset of inputs and the merge order used by the caller.
//!
//! Two budgets keep a summary small whatever the data (issue 15: a 13 KB
//! Parquet file of 1,000 distinct 100 KB strings made a 100 MB profile):
//! a value longer than [`MAX_VALUE_BYTES`] is kept as its first bytes (cut
//! on a UTF-8 boundary) followed by [`TRUNCATION_MARK`], so long values that
//! share a prefix count as one; and when the kept values' bytes pass
//! [`MAX_KEPT_BYTES`] the summary lowers its own `limit` (halving it until
//! they fit) — it degrades to fewer heavy hitters plus "other", never grows.
//! Both are pure functions of the input, so profiles stay deterministic and
//! mergeable (merging keeps the smaller limit; the error bound still holds).
//!
//! **Memory** (estimated, not measured). A kept category costs its bytes
//! plus up to about 80 bytes: its share of a `BTreeMap<String, u64>` node
//! (≈ 40–50 B) and its key's heap allocation (≈ 16–32 B with allocator
//! rounding); in a (pretty-printed) profile file its bytes plus about 20.
//! So a column at the default limit holds at most 1 MiB of value bytes +
//! 65,536 × 80 B ≈ 6 MiB in memory (per scan partition while a batch is
//! profiled) and ≈ 2.3 MiB of JSON; a 4,000-category column of 6-byte tail
//! numbers ≈ 350 KiB in memory and ≈ 100 KiB of JSON. Whatever the values,
//! [`MAX_KEPT_BYTES`] caps the value bytes, so a column never holds more
//! than 1 MiB + limit × 80 B.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;

use foldhash::fast::FixedState;

use serde::{Deserialize, Serialize};

/// Default number of distinct values kept exactly (issue 17: high enough
/// for real dimension columns; it was 1,000 in profile format version 1).
pub const DEFAULT_LIMIT: usize = 65_536;

/// Largest limit a rule file may set (`drift.max_categories`): past it the
/// per-entry overhead alone (≈ 80 B each) would pass 80 MiB per column.
pub const MAX_LIMIT: usize = 1 << 20;

/// Longest value kept as written, in bytes; a longer one is kept as its
/// first bytes (at most this many, cut on a character boundary) followed by
/// [`TRUNCATION_MARK`].
pub const MAX_VALUE_BYTES: usize = 256;

/// Appended to a value cut at [`MAX_VALUE_BYTES`]: `…` (U+2026).
pub const TRUNCATION_MARK: &str = "\u{2026}";

/// Bytes of kept values a summary may hold (1 MiB); past it the summary
/// keeps fewer values (see the module doc). It was 256 KiB with a limit of
/// 1,000 values; at 1 MiB a column of up to 4,048 values of any kept length
/// (≤ 259 bytes), or of 65,536 values of up to 16 bytes, stays exact.
pub const MAX_KEPT_BYTES: usize = 1 << 20;

/// The key a value is counted under: itself, or its first
/// [`MAX_VALUE_BYTES`] bytes (on a character boundary) and `…`.
pub fn kept_value(value: &str) -> std::borrow::Cow<'_, str> {
    if value.len() <= MAX_VALUE_BYTES {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut end = MAX_VALUE_BYTES;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}{TRUNCATION_MARK}", &value[..end]))
}

/// Frequencies of non-null values, keyed by their text form.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "FrequenciesFile")]
pub struct Frequencies {
    /// Most distinct values kept.
    pub limit: usize,
    /// Non-null values counted.
    pub n: u64,
    /// Whether `items` holds every value with its exact count.
    pub exact: bool,
    /// The kept values and their (exact, or lower-bound) counts.
    pub items: BTreeMap<String, u64>,
    /// Bytes of the kept values' text, kept up to date so the byte budget
    /// is checked in O(1) per new value (summing 65,536 keys per insert was
    /// quadratic). Derived from `items`, so neither stored nor compared.
    #[serde(skip)]
    kept: usize,
}

/// A [`Frequencies`] as stored: the derived byte count is recomputed.
#[derive(Deserialize)]
struct FrequenciesFile {
    limit: usize,
    n: u64,
    exact: bool,
    items: BTreeMap<String, u64>,
}

impl From<FrequenciesFile> for Frequencies {
    fn from(f: FrequenciesFile) -> Self {
        let kept = f.items.keys().map(String::len).sum();
        Self {
            limit: f.limit.max(1),
            n: f.n,
            exact: f.exact,
            items: f.items,
            kept,
        }
    }
}

impl PartialEq for Frequencies {
    fn eq(&self, other: &Self) -> bool {
        (self.limit, self.n, self.exact, &self.items)
            == (other.limit, other.n, other.exact, &other.items)
    }
}

impl Default for Frequencies {
    fn default() -> Self {
        Self::new(DEFAULT_LIMIT)
    }
}

impl Frequencies {
    /// An empty summary keeping up to `limit` (at least 1) values exactly.
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            n: 0,
            exact: true,
            items: BTreeMap::new(),
            kept: 0,
        }
    }

    /// Counts `count` occurrences of `value` (under [`kept_value`]).
    pub fn add(&mut self, value: &str, count: u64) {
        if count == 0 {
            return;
        }
        let value = kept_value(value);
        self.n += count;
        match self.items.get_mut(value.as_ref()) {
            Some(c) => *c += count,
            None => {
                self.kept += value.len();
                self.items.insert(value.into_owned(), count);
                if self.items.len() > self.limit {
                    self.reduce();
                }
                self.fit_budget();
            }
        }
    }

    /// Bytes of the kept values.
    pub fn kept_bytes(&self) -> usize {
        self.kept
    }

    fn recount_bytes(&mut self) {
        self.kept = self.items.keys().map(String::len).sum();
    }

    /// Lowers `limit` (halving) and reduces until the kept values fit
    /// [`MAX_KEPT_BYTES`].
    fn fit_budget(&mut self) {
        while self.items.len() > 1 && self.kept_bytes() > MAX_KEPT_BYTES {
            self.limit = (self.items.len() / 2).clamp(1, self.limit);
            self.reduce();
        }
    }

    /// Counts a batch's exact `(value, count)` pairs, each value at most
    /// once (see [`Frequencies::add_count_map`]).
    pub fn add_counts<'a>(&mut self, counts: impl IntoIterator<Item = (&'a str, u64)>) {
        let mut batch: HashMap<&'a str, u64, FixedState> = HashMap::default();
        for (value, count) in counts {
            *batch.entry(value).or_insert(0) += count;
        }
        self.add_count_map(batch);
    }

    /// Counts a batch's exact value counts: the merge of an exact summary of
    /// the batch (Agarwal et al.), so the summary is reduced once per batch
    /// rather than once per new value past the limit. The kept values are
    /// looked up in the batch (a hash map), not the batch in the sorted map,
    /// and values that cannot survive the reduction are never inserted. The
    /// result equals inserting every count and then reducing; while it stays
    /// within the limit it equals adding values one by one.
    pub fn add_count_map<S: BuildHasher>(&mut self, batch: HashMap<&str, u64, S>) {
        let n = batch.values().sum();
        self.add_summary_map(batch, n, true);
    }

    /// Merges a Misra–Gries summary of `n` values (Agarwal et al.): `batch`
    /// holds its counters — exact counts when `exact`, otherwise lower
    /// bounds, each at most `(n − Σ counters) / (limit + 1)` below the truth
    /// for a summary reduced as this one is (see the module doc). A
    /// caller that counts a long stretch of rows in its own map and reduces
    /// it in place when it fills (the profiler, issue 19) passes it here
    /// once; the merged summary's error bound then holds as for any merge.
    pub fn add_summary_map<S: BuildHasher>(
        &mut self,
        batch: HashMap<&str, u64, S>,
        n: u64,
        exact: bool,
    ) {
        self.n += n;
        self.exact &= exact;
        if batch.keys().any(|k| k.len() > MAX_VALUE_BYTES) {
            // Rare: long values are counted under their cut form, so values
            // sharing a prefix are one key.
            let mut cut: HashMap<String, u64, FixedState> = HashMap::default();
            for (value, count) in batch {
                *cut.entry(kept_value(value).into_owned()).or_insert(0) += count;
            }
            let rekeyed: HashMap<&str, u64, FixedState> =
                cut.iter().map(|(k, c)| (k.as_str(), *c)).collect();
            self.add_kept_count_map(rekeyed);
        } else {
            self.add_kept_count_map(batch);
        }
        self.fit_budget();
    }

    /// [`Frequencies::add_count_map`] of values already in their kept form.
    fn add_kept_count_map<S: BuildHasher>(&mut self, mut batch: HashMap<&str, u64, S>) {
        batch.retain(|_, c| *c > 0);
        // Add the counts of values already kept: walk the smaller side (a
        // batch of a few values against 65,536 kept ones looks each up in
        // the sorted map instead of every kept value up in the batch).
        if batch.len().saturating_mul(16) < self.items.len() {
            let items = &mut self.items;
            batch.retain(|value, more| match items.get_mut(*value) {
                Some(count) => {
                    *count += *more;
                    false
                }
                None => true,
            });
        } else {
            for (value, count) in self.items.iter_mut() {
                if let Some(more) = batch.remove(value.as_str()) {
                    *count += more;
                }
            }
        }
        if self.items.len() + batch.len() <= self.limit {
            for (value, count) in batch {
                self.kept += value.len();
                self.items.insert(value.to_string(), count);
            }
            return;
        }
        // Misra–Gries, as `reduce`: subtract the (limit+1)-th largest count
        // from every count and drop what is left at zero.
        self.exact = false;
        let mut all: Vec<u64> = self
            .items
            .values()
            .copied()
            .chain(batch.values().copied())
            .collect();
        let (_, cut, _) = all.select_nth_unstable_by(self.limit, |a, b| b.cmp(a));
        let cut = *cut;
        self.items.retain(|_, c| {
            *c -= cut.min(*c);
            *c > 0
        });
        for (value, count) in batch {
            if count > cut {
                self.items.insert(value.to_string(), count - cut);
            }
        }
        self.recount_bytes();
    }

    /// Merges another summary (the smaller limit wins, so bounds stay valid).
    pub fn merge(&mut self, other: &Frequencies) {
        self.limit = self.limit.min(other.limit);
        self.n += other.n;
        self.exact &= other.exact;
        for (value, count) in &other.items {
            *self
                .items
                .entry(kept_value(value).into_owned())
                .or_insert(0) += count;
        }
        self.recount_bytes();
        if self.items.len() > self.limit {
            self.reduce();
        }
        self.fit_budget();
    }

    /// Misra–Gries reduction: subtract the (limit+1)-th largest count from all.
    fn reduce(&mut self) {
        self.exact = false;
        let mut counts: Vec<u64> = self.items.values().copied().collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let cut = counts.get(self.limit).copied().unwrap_or(0);
        self.items.retain(|_, c| {
            *c -= cut.min(*c);
            *c > 0
        });
        self.recount_bytes();
    }

    /// Count of values not in `items` (all values when nothing is kept).
    pub fn other(&self) -> u64 {
        self.n.saturating_sub(self.items.values().sum())
    }

    /// Largest possible undercount of any value; 0 while exact.
    pub fn error_bound(&self) -> u64 {
        if self.exact {
            0
        } else {
            self.other() / (self.limit as u64 + 1)
        }
    }

    /// Distinct values kept.
    pub fn distinct_kept(&self) -> usize {
        self.items.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A batch's counts give the same summary as inserting them all and
        /// reducing once (the definition of merging an exact batch summary).
        #[test]
        fn add_counts_equals_insert_then_reduce(
            before in proptest::collection::btree_map("[a-j]{1,2}", 1u64..20, 0..12),
            batch in proptest::collection::btree_map("[a-j]{1,2}", 1u64..20, 0..40),
            limit in 1usize..10,
        ) {
            let mut base = Frequencies::new(limit);
            base.add_counts(before.iter().map(|(k, v)| (k.as_str(), *v)));
            let mut expected = base.clone();
            for (k, v) in &batch {
                expected.n += v;
                *expected.items.entry(k.clone()).or_insert(0) += v;
            }
            if expected.items.len() > expected.limit {
                expected.reduce();
            }
            let mut got = base;
            got.add_counts(batch.iter().map(|(k, v)| (k.as_str(), *v)));
            prop_assert_eq!(got, expected);
        }
    }

    #[test]
    fn issue_15_long_values_are_cut_on_a_character_boundary_and_marked() {
        let short = "a".repeat(MAX_VALUE_BYTES);
        assert_eq!(kept_value(&short), short.as_str());
        // 255 ASCII bytes then a 3-byte character: the cut falls before it.
        let long = format!("{}€€", "a".repeat(255));
        assert_eq!(kept_value(&long), format!("{}…", "a".repeat(255)));
        let mut f = Frequencies::new(10);
        f.add(&format!("{}x", "b".repeat(300)), 2);
        f.add(&format!("{}y", "b".repeat(300)), 3);
        let mut batch: HashMap<&str, u64> = HashMap::new();
        let z = format!("{}z", "b".repeat(300));
        batch.insert(&z, 4);
        f.add_count_map(batch);
        let key = format!("{}…", "b".repeat(256));
        assert_eq!(f.items.get(&key), Some(&9));
        assert_eq!((f.n, f.items.len(), f.exact), (9, 1, true));
    }

    #[test]
    fn issue_15_kept_values_past_the_byte_budget_degrade_and_never_grow() {
        // 5,000 values of 259 bytes once cut: 1.3 MB, over the budget.
        let values: Vec<String> = (0..5000)
            .map(|i| format!("{i:04}{}", "v".repeat(400)))
            .collect();
        let mut one = Frequencies::new(10_000);
        for (i, v) in values.iter().enumerate() {
            one.add(v, 1 + (i % 3 == 0) as u64 * 50);
        }
        let mut batched = Frequencies::new(10_000);
        batched.add_counts(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| (v.as_str(), 1 + (i % 3 == 0) as u64 * 50)),
        );
        for f in [&one, &batched] {
            assert!(f.kept_bytes() <= MAX_KEPT_BYTES, "{}", f.kept_bytes());
            assert!(!f.exact && f.limit < 5000);
            assert_eq!(f.n, 5000 + 1667 * 50);
            assert_eq!(f.other() + f.items.values().sum::<u64>(), f.n);
            // Still a Misra–Gries summary: no value undercounted by more
            // than the error bound (under the smaller limit).
            for (i, v) in values.iter().enumerate() {
                let truth = 1 + (i % 3 == 0) as u64 * 50;
                let kept = f.items.get(kept_value(v).as_ref()).copied().unwrap_or(0);
                assert!(kept <= truth && truth - kept <= f.error_bound(), "{i}");
            }
        }
        let mut merged = one.clone();
        merged.merge(&batched);
        assert!(merged.kept_bytes() <= MAX_KEPT_BYTES);
        assert_eq!(merged.n, 2 * one.n);
        let mut again = batched.clone();
        again.merge(&one);
        assert_eq!(merged, again, "merge stays commutative");
    }

    proptest! {
        /// Issue 17: the byte count behind the budget stays equal to the
        /// kept values' bytes through adds, batches, merges and a JSON round
        /// trip (which recomputes it), and a round trip changes nothing.
        #[test]
        fn issue_17_kept_bytes_track_the_items_through_merge_and_serde(
            singles in proptest::collection::vec(("[a-z]{1,12}", 1u64..9), 0..80),
            batch in proptest::collection::btree_map("[a-z]{1,12}", 1u64..9, 0..80),
            other in proptest::collection::btree_map("[a-z]{1,30}", 1u64..9, 0..80),
            limit in 1usize..100,
        ) {
            let mut a = Frequencies::new(limit);
            for (v, c) in &singles {
                a.add(v, *c);
            }
            a.add_counts(batch.iter().map(|(k, v)| (k.as_str(), *v)));
            let mut b = Frequencies::new(limit);
            b.add_counts(other.iter().map(|(k, v)| (k.as_str(), *v)));
            let mut ab = a.clone();
            ab.merge(&b);
            for f in [&a, &b, &ab] {
                prop_assert_eq!(f.kept_bytes(), f.items.keys().map(String::len).sum::<usize>());
                let back: Frequencies = serde_json::from_str(&serde_json::to_string(f).unwrap()).unwrap();
                prop_assert_eq!(&back, f);
                prop_assert_eq!(back.kept_bytes(), f.kept_bytes());
            }
        }
    }

    #[test]
    fn issue_17_a_4000_category_column_of_short_values_stays_exact() {
        let mut f = Frequencies::default();
        let mut batch: HashMap<String, u64> = HashMap::new();
        for i in 0..4000u64 {
            batch.insert(format!("N{i}XY"), 1 + i % 7);
        }
        f.add_count_map(
            batch
                .iter()
                .map(|(k, v)| (k.as_str(), *v))
                .collect::<HashMap<_, _>>(),
        );
        assert!(f.exact);
        assert_eq!(f.items.len(), 4000);
        // Even at the longest kept length (259 bytes), 4,048 values fit the budget.
        assert!(4048 * (MAX_VALUE_BYTES + TRUNCATION_MARK.len()) <= MAX_KEPT_BYTES);
    }

    #[test]
    fn exact_under_the_limit() {
        let mut f = Frequencies::new(3);
        for v in ["a", "b", "a", "c", "a"] {
            f.add(v, 1);
        }
        assert!(f.exact);
        assert_eq!(f.items.get("a"), Some(&3));
        assert_eq!((f.n, f.other(), f.error_bound()), (5, 0, 0));
    }

    #[test]
    fn heavy_hitters_past_the_limit() {
        let mut f = Frequencies::new(2);
        f.add("hot", 100);
        for i in 0..50 {
            f.add(&format!("cold{i}"), 1);
        }
        assert!(!f.exact);
        let hot = *f.items.get("hot").unwrap();
        assert!(
            hot <= 100 && 100 - hot <= f.error_bound(),
            "{hot} {}",
            f.error_bound()
        );
        assert_eq!(f.n, 150);
        assert_eq!(f.other() + f.items.values().sum::<u64>(), 150);
    }

    proptest! {
        #[test]
        fn merge_is_exact_under_the_limit_and_bounded_past_it(
            values in proptest::collection::vec(0u8..40, 0..400),
            cut in 0usize..400,
            limit in 1usize..60,
        ) {
            let cut = cut.min(values.len());
            let mut a = Frequencies::new(limit);
            let mut b = Frequencies::new(limit);
            values[..cut].iter().for_each(|v| a.add(&v.to_string(), 1));
            values[cut..].iter().for_each(|v| b.add(&v.to_string(), 1));
            let mut ab = a.clone(); ab.merge(&b);
            let mut ba = b.clone(); ba.merge(&a);
            prop_assert_eq!(&ab, &ba);
            let mut truth: BTreeMap<String, u64> = BTreeMap::new();
            values.iter().for_each(|v| *truth.entry(v.to_string()).or_insert(0) += 1);
            prop_assert_eq!(ab.n, values.len() as u64);
            if truth.len() <= limit {
                prop_assert!(ab.exact);
                prop_assert_eq!(&ab.items, &truth);
            }
            // Agarwal et al.: undercount ≤ (n − Σ kept) / (k + 1) for every value.
            for (value, true_count) in &truth {
                let kept = ab.items.get(value).copied().unwrap_or(0);
                prop_assert!(kept <= *true_count);
                prop_assert!(true_count - kept <= ab.error_bound(), "{} {} {}", value, kept, ab.error_bound());
            }
            let json = serde_json::to_string(&ab).unwrap();
            prop_assert_eq!(serde_json::from_str::<Frequencies>(&json).unwrap(), ab);
        }
    }
}
