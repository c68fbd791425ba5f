//! Row counts keyed by an Arrow string view, for the profiler's category
//! counting (issue 19).
//!
//! Why not a `HashMap<u128, u64>`: a column of many distinct short strings
//! (half a million tail numbers in ten million rows) keeps up to about
//! 100,000 counters per scan partition — a few MiB, past the core's L2
//! cache — and every row's lookup then waits for memory: one load was 56 %
//! of the profiler's per-batch samples on the benchmark file. A hash map
//! gives no way to ask for a slot ahead of time. This table is open
//! addressing with linear probing over one array, so a batch's keys are
//! hashed first and each row's slot is prefetched a few rows before it is
//! counted; the loads overlap instead of queueing.
//!
//! Slots hold the 16-byte view and its count (24 bytes, no padding); a
//! count of 0 marks an empty slot (a counted view has at least one row).
//! The table is at most 3/4 full, doubling when it would pass that. Keys
//! are hashed with the same fixed-seed hasher as the profiler's maps, so a
//! run is deterministic; iteration order is slot order.

use std::hash::BuildHasher;

/// How many rows ahead a row's slot is prefetched: far enough for a memory
/// load to arrive, near enough for the line to still be in L1.
const PREFETCH_DISTANCE: usize = 16;

/// Views counted between two checks for room (see [`ViewCounts::add_each`]).
const CHUNK: usize = 256;

/// Smallest slot count once anything is counted.
const MIN_SLOTS: usize = 64;

/// One slot: a view (as two words, so the slot needs no 16-byte alignment)
/// and its count, 0 when the slot is empty.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    key: [u64; 2],
    count: u64,
}

/// Counts by view (see the module doc).
#[derive(Debug, Default)]
pub(super) struct ViewCounts {
    slots: Vec<Slot>,
    len: usize,
    /// Hashes of the batch being counted (kept, to reuse).
    hashes: Vec<u64>,
    /// Survivors of a [`ViewCounts::retain`] (kept, to reuse).
    kept: Vec<(u128, u64)>,
}

fn split(view: u128) -> [u64; 2] {
    [view as u64, (view >> 64) as u64]
}

fn join(key: [u64; 2]) -> u128 {
    u128::from(key[0]) | (u128::from(key[1]) << 64)
}

fn hash(view: u128) -> u64 {
    foldhash::fast::FixedState::default().hash_one(view)
}

/// Asks the CPU to bring `slot`'s cache line in; a hint only.
#[inline(always)]
fn prefetch(slot: &Slot) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` reads nothing and cannot fault; it only needs
    // SSE, which every x86-64 CPU has. The pointer comes from a reference.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            (slot as *const Slot).cast(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = slot;
}

impl ViewCounts {
    /// Views counted.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Bytes held by the table (for the accumulator's size).
    pub(super) fn allocated_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.hashes.capacity() * 8
            + self.kept.capacity() * 32
    }

    /// Adds `n` rows of `view`.
    pub(super) fn add(&mut self, view: u128, n: u64) {
        if n == 0 {
            return;
        }
        self.reserve(1);
        self.add_hashed(view, hash(view), n);
    }

    /// Adds one row of each of `views`, hashing them all first and
    /// prefetching each one's slot [`PREFETCH_DISTANCE`] views ahead.
    /// Room is made chunk by chunk ([`CHUNK`] views), not for the whole
    /// batch at once: a column of a dozen values must not get a table
    /// sized for a batch of 8,192 distinct ones (a small file's scan pays
    /// for every slot it allocates and walks).
    pub(super) fn add_each(&mut self, views: &[u128]) {
        let mut hashes = std::mem::take(&mut self.hashes);
        for chunk in views.chunks(CHUNK) {
            self.reserve(chunk.len());
            hashes.clear();
            hashes.extend(chunk.iter().map(|&v| hash(v)));
            let mask = self.slots.len() - 1;
            for (k, (&view, &h)) in chunk.iter().zip(&hashes).enumerate() {
                if let Some(&ahead) = hashes.get(k + PREFETCH_DISTANCE) {
                    prefetch(&self.slots[ahead as usize & mask]);
                }
                self.add_hashed(view, h, 1);
            }
        }
        self.hashes = hashes;
    }

    /// Counts `n` more rows of `view` (whose hash is `h`) in a table with a
    /// free slot.
    #[inline(always)]
    fn add_hashed(&mut self, view: u128, h: u64, n: u64) {
        let key = split(view);
        let mask = self.slots.len() - 1;
        let mut at = h as usize & mask;
        loop {
            let slot = &mut self.slots[at];
            if slot.count == 0 {
                *slot = Slot { key, count: n };
                self.len += 1;
                return;
            }
            if slot.key == key {
                slot.count += n;
                return;
            }
            at = (at + 1) & mask;
        }
    }

    /// Makes room for `more` new views within 3/4 of the slots.
    fn reserve(&mut self, more: usize) {
        let needed = self.len.saturating_add(more);
        if needed.saturating_mul(4) <= self.slots.len().saturating_mul(3) {
            return;
        }
        let mut slots = MIN_SLOTS.max(self.slots.len());
        while needed.saturating_mul(4) > slots.saturating_mul(3) {
            slots = slots.saturating_mul(2);
        }
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); slots]);
        self.len = 0;
        for slot in old.into_iter().filter(|s| s.count > 0) {
            let view = join(slot.key);
            self.add_hashed(view, hash(view), slot.count);
        }
    }

    /// Appends the counts to `out`, in slot order. Branch-free: every
    /// slot's count is written and the end moves past the non-zero ones
    /// (a table three quarters full, in no order, mispredicted a branch
    /// per slot).
    pub(super) fn push_counts(&self, out: &mut Vec<u64>) {
        let start = out.len();
        out.resize(start + self.slots.len(), 0);
        let mut end = start;
        for slot in &self.slots {
            if let Some(cell) = out.get_mut(end) {
                *cell = slot.count;
            }
            end += usize::from(slot.count > 0);
        }
        out.truncate(end);
    }

    /// The views and their counts, in slot order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u128, u64)> + '_ {
        self.slots
            .iter()
            .filter(|s| s.count > 0)
            .map(|s| (join(s.key), s.count))
    }

    /// Keeps the views for which `keep` returns true (it may change their
    /// counts; a count set to 0 drops the view too), in place: one pass
    /// empties the slots and gathers the survivors, which go back in (the
    /// profiler's reductions keep few of them, and a fresh table each time
    /// cost an allocation and its page faults).
    pub(super) fn retain(&mut self, mut keep: impl FnMut(u128, &mut u64) -> bool) {
        let mut kept = std::mem::take(&mut self.kept);
        kept.clear();
        for slot in self.slots.iter_mut().filter(|s| s.count > 0) {
            let view = join(slot.key);
            let mut count = slot.count;
            if keep(view, &mut count) && count > 0 {
                kept.push((view, count));
            }
            *slot = Slot::default();
        }
        self.len = 0;
        for &(view, count) in &kept {
            self.add_hashed(view, hash(view), count);
        }
        self.kept = kept;
    }

    /// Forgets every count; slots stay allocated.
    pub(super) fn clear(&mut self) {
        self.slots.fill(Slot::default());
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        Add(u128, u64),
        Each(Vec<u128>),
        /// Subtract this from every count, drop those left at zero.
        Cut(u64),
        Clear,
    }

    fn view() -> impl Strategy<Value = u128> {
        // Few distinct keys, so counts collide and probe chains form;
        // 0 (the empty string's view) included.
        prop_oneof![0u128..40, any::<u128>()]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (view(), 0u64..5).prop_map(|(v, n)| Op::Add(v, n)),
            proptest::collection::vec(view(), 0..700).prop_map(Op::Each),
            (0u64..4).prop_map(Op::Cut),
            Just(Op::Clear),
        ]
    }

    proptest! {
        /// The table counts as a map does, through growth, reductions and
        /// clears.
        #[test]
        fn view_counts_match_a_map(ops in proptest::collection::vec(op(), 0..40)) {
            let mut table = ViewCounts::default();
            let mut model: BTreeMap<u128, u64> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Add(v, n) => {
                        table.add(v, n);
                        if n > 0 {
                            *model.entry(v).or_insert(0) += n;
                        }
                    }
                    Op::Each(views) => {
                        table.add_each(&views);
                        for &v in &views {
                            *model.entry(v).or_insert(0) += 1;
                        }
                    }
                    Op::Cut(cut) => {
                        table.retain(|_, c| {
                            *c = c.saturating_sub(cut);
                            true
                        });
                        model.retain(|_, c| {
                            *c = c.saturating_sub(cut);
                            *c > 0
                        });
                    }
                    Op::Clear => {
                        table.clear();
                        model.clear();
                    }
                }
                let got: BTreeMap<u128, u64> = table.iter().collect();
                prop_assert_eq!(&got, &model);
                prop_assert_eq!(table.len(), model.len());
                // Appended after what `out` held, in any order.
                let mut counts = vec![7];
                table.push_counts(&mut counts);
                let mut expected: Vec<u64> = std::iter::once(7).chain(model.values().copied()).collect();
                counts[1..].sort_unstable();
                expected[1..].sort_unstable();
                prop_assert_eq!(counts, expected);
                prop_assert!(table.slots.is_empty() || table.len * 4 <= table.slots.len() * 3);
            }
        }
    }
}
