//! `driftwatch_duplicates(col)`: the exact number of non-null rows beyond the
//! first occurrence of their value, i.e. `count(col) - count(DISTINCT col)`,
//! as one cheap aggregate with bounded memory.
//!
//! Why a custom aggregate: DataFusion plans `count(DISTINCT col)` next to other
//! aggregates with a hash set per partition whose whole content is re-inserted
//! into one set by the final stage — on ten million unique ids that took ~6 s
//! of a 7 s check (see `../shared/notes/datafusion-measurements.md`), barely
//! using the second core, and its memory grows with the data.
//!
//! Here each partition appends compact keys (8 bytes for numbers and timestamps; Arrow's row format
//! for everything else) to a buffer of at most half of [`SpillConfig::budget`]. A full buffer is
//! sorted and de-duplicated *in parallel with the other partitions* (its local duplicates counted)
//! into a **run**, which is written to an unlinked temporary file (spilled); the last run of a
//! partition travels to the final stage in memory. The final stage merges all runs — in memory and
//! on disk, one streaming k-way merge — and counts the values that appear in more than one run
//! (fixed-width runs are read in blocks; the run holding the smallest key skips, by galloping, past
//! every key below the other runs' heads, so a sorted id column's side-by-side runs are crossed in
//! a few comparisons per block, not a heap operation per key — that merge ran alone on one core for
//! 0.25 s of a 1.6 s check, issue 19). So memory is bounded by the budget per partition whatever
//! the number of distinct values, the answer stays exact, and no value is ever dropped or
//! approximated.
//!
//! Runs travel from the partial to the final stage as Arrow arrays (the
//! sorted keys, without copying) plus, for spilled runs, a ticket into a
//! process-wide hand-off table holding the open temporary files: files are
//! unlinked at creation, so nothing is left on disk after a crash, and the
//! space is freed when the last handle closes.
//!
//! Equality: integers and temporal values by value; floats with `-0.0 == 0.0`
//! and all NaNs equal (documented in rules/README.md); other types by their
//! Arrow row encoding (exact byte equality of the value).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, AsArray, LargeBinaryArray, ListArray, UInt64Array};
use arrow::buffer::{OffsetBuffer, ScalarBuffer};
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

/// How much memory one accumulator may hold, and where spilled runs go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpillConfig {
    /// Bytes of keys one accumulator keeps in memory before spilling (at least 64 KiB).
    pub budget: usize,
    /// Folder for spill files (default: the system's temporary folder).
    pub dir: Option<PathBuf>,
}

impl Default for SpillConfig {
    fn default() -> Self {
        Self {
            budget: 256 << 20,
            dir: None,
        }
    }
}

/// The aggregate function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Duplicates {
    signature: Signature,
    spill: SpillConfig,
}

impl Duplicates {
    /// The function as a DataFusion UDAF.
    pub fn udaf(spill: SpillConfig) -> AggregateUDF {
        AggregateUDF::from(Self {
            signature: Signature::any(1, Volatility::Immutable),
            spill,
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
        Ok(Box::new(DuplicatesAccumulator::new(
            data_type,
            self.spill.clone(),
        )?))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new(
                format_state_name(args.name, "duplicates"),
                DataType::Int64,
                true,
            )),
            // Fixed-width keys: one run, sorted and distinct.
            Arc::new(Field::new(
                format_state_name(args.name, "fixed_run"),
                DataType::List(Arc::new(Field::new_list_field(DataType::UInt64, false))),
                true,
            )),
            // Variable-width keys: one run of length-prefixed sorted distinct keys.
            Arc::new(Field::new(
                format_state_name(args.name, "byte_run"),
                DataType::LargeBinary,
                true,
            )),
            // Spilled runs: a ticket into the hand-off table.
            Arc::new(Field::new(
                format_state_name(args.name, "spilled"),
                DataType::UInt64,
                true,
            )),
        ])
    }

    fn default_value(&self, _data_type: &DataType) -> Result<ScalarValue> {
        Ok(ScalarValue::Int64(Some(0)))
    }
}

/// How values become keys.
#[derive(Debug, Clone, Copy, PartialEq)]
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

/// A sorted, distinct run of keys.
#[derive(Debug)]
enum Run {
    /// Fixed-width keys in memory (from this accumulator or a partial state).
    Fixed(ArrayRef),
    /// Variable-width keys in memory: length-prefixed records.
    Bytes(ArrayRef),
    /// A run in an unlinked temporary file (records as in memory).
    Spilled(File),
}

/// Spilled runs waiting for the final stage, by ticket. Entries older than
/// [`HANDOFF_TTL`] belong to queries that failed between the stages; they are
/// dropped (closing, and so freeing, their files) when the next one arrives.
static HANDOFF: LazyLock<Mutex<HashMap<u64, Waiting>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Spilled runs handed off at this instant.
type Waiting = (Instant, Vec<File>);
static NEXT_TICKET: AtomicU64 = AtomicU64::new(1);
const HANDOFF_TTL: Duration = Duration::from_secs(3600);

fn hand_off(files: Vec<File>) -> u64 {
    let ticket = NEXT_TICKET.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut table) = HANDOFF.lock() {
        table.retain(|_, (at, _)| at.elapsed() < HANDOFF_TTL);
        table.insert(ticket, (Instant::now(), files));
    }
    ticket
}

fn take_handoff(ticket: u64) -> Result<Vec<File>> {
    HANDOFF
        .lock()
        .ok()
        .and_then(|mut t| t.remove(&ticket))
        .map(|(_, files)| files)
        .ok_or_else(|| DataFusionError::Internal(format!("{NAME}: spilled runs {ticket} are gone")))
}

#[derive(Debug)]
struct DuplicatesAccumulator {
    data_type: DataType,
    encoding: Encoding,
    spill: SpillConfig,
    /// Fixed-width keys not yet in a run.
    fixed: Vec<u64>,
    /// Variable-width keys not yet in a run, and their bytes.
    bytes: Vec<Box<[u8]>>,
    bytes_held: usize,
    /// Duplicates already removed (inside runs, or counted by partial states).
    duplicates: u64,
    /// Sorted distinct runs: this accumulator's and those from partial states.
    runs: Vec<Run>,
    converter: Option<RowConverter>,
    /// The largest size reported so far (see `size`).
    peak: AtomicU64,
}

fn io_error(what: &str, e: std::io::Error) -> DataFusionError {
    DataFusionError::ResourcesExhausted(format!("{NAME}: {what}: {e}"))
}

impl DuplicatesAccumulator {
    fn new(data_type: DataType, spill: SpillConfig) -> Result<Self> {
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
        let converter = match encoding {
            Encoding::Rows => Some(RowConverter::new(vec![SortField::new(data_type.clone())])?),
            _ => None,
        };
        Ok(Self {
            data_type,
            encoding,
            spill: SpillConfig {
                budget: spill.budget.max(64 << 10),
                dir: spill.dir,
            },
            fixed: Vec::new(),
            bytes: Vec::new(),
            bytes_held: 0,
            duplicates: 0,
            runs: Vec::new(),
            converter,
            peak: AtomicU64::new(0),
        })
    }

    fn held(&self) -> usize {
        self.fixed.capacity() * 8
            + self.bytes_held
            + self.bytes.capacity() * 16
            + self.runs.iter().map(run_bytes).sum::<usize>()
    }

    /// Sorts and de-duplicates the pending keys into a run, counting what was removed.
    fn seal(&mut self) -> Result<()> {
        if !self.fixed.is_empty() {
            let mut keys = std::mem::take(&mut self.fixed);
            let before = keys.len();
            keys.sort_unstable();
            keys.dedup();
            self.duplicates += (before - keys.len()) as u64;
            keys.shrink_to_fit();
            self.runs
                .push(Run::Fixed(Arc::new(UInt64Array::from(keys))));
        }
        if !self.bytes.is_empty() {
            let mut keys = std::mem::take(&mut self.bytes);
            self.bytes_held = 0;
            let before = keys.len();
            keys.sort_unstable();
            keys.dedup();
            self.duplicates += (before - keys.len()) as u64;
            let mut encoded: Vec<u8> = Vec::new();
            for k in &keys {
                encoded.extend_from_slice(&(k.len() as u64).to_le_bytes());
                encoded.extend_from_slice(k);
            }
            self.runs
                .push(Run::Bytes(Arc::new(LargeBinaryArray::from_vec(vec![
                    &encoded[..],
                ]))));
        }
        Ok(())
    }

    /// Keeps memory within the budget: once pending keys (by capacity) fill
    /// half of it, they are sealed into a run and the run goes to disk, so a
    /// partition holds at most half the budget of pending keys plus, at the
    /// end, the one run that travels to the final stage in memory.
    fn bound(&mut self) -> Result<()> {
        let pending = self.fixed.capacity() * 8 + self.bytes_held + self.bytes.capacity() * 16;
        if pending < self.spill.budget / 2 {
            return Ok(());
        }
        self.seal()?;
        let runs = std::mem::take(&mut self.runs);
        for run in runs {
            self.runs.push(match run {
                Run::Fixed(_) | Run::Bytes(_) => Run::Spilled(self.write_run(&run)?),
                spilled => spilled,
            });
        }
        Ok(())
    }

    /// Makes room for `extra` more fixed keys without letting the buffer's
    /// capacity run past half the budget by doubling.
    fn reserve_fixed(&mut self, extra: usize) {
        let needed = self.fixed.len() + extra;
        if needed <= self.fixed.capacity() {
            return;
        }
        let cap_keys = (self.spill.budget / 2 / 8).max(needed);
        let target = (self.fixed.capacity() * 2).max(needed).min(cap_keys);
        self.fixed.reserve_exact(target - self.fixed.len());
    }

    fn write_run(&self, run: &Run) -> Result<File> {
        let file = match &self.spill.dir {
            Some(dir) => tempfile::tempfile_in(dir),
            None => tempfile::tempfile(),
        }
        .map_err(|e| io_error("cannot create a spill file", e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        match run {
            Run::Fixed(array) => {
                for v in array.as_primitive::<UInt64Type>().values() {
                    out.write_all(&v.to_le_bytes())
                        .map_err(|e| io_error("cannot write a spill file", e))?;
                }
            }
            Run::Bytes(array) => {
                let a: &LargeBinaryArray = array.as_binary();
                for i in 0..a.len() {
                    out.write_all(a.value(i))
                        .map_err(|e| io_error("cannot write a spill file", e))?;
                }
            }
            Run::Spilled(_) => {}
        }
        let mut file = out
            .into_inner()
            .map_err(|e| io_error("cannot write a spill file", e.into_error()))?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| io_error("cannot rewind a spill file", e))?;
        Ok(file)
    }
}

fn run_bytes(run: &Run) -> usize {
    match run {
        Run::Fixed(a) | Run::Bytes(a) => a.get_array_memory_size(),
        Run::Spilled(_) => 0,
    }
}

/// Reads a variable-width run's keys in order.
enum Cursor {
    BytesMemory { data: ArrayRef, offset: usize },
    File(BufReader<File>),
}

impl Cursor {
    fn next_bytes(&mut self) -> Result<Option<Vec<u8>>> {
        match self {
            Cursor::BytesMemory { data, offset } => {
                let a: &LargeBinaryArray = data.as_binary();
                let raw = if a.is_empty() { &[][..] } else { a.value(0) };
                let Some(len) = raw.get(*offset..*offset + 8) else {
                    return Ok(None);
                };
                let mut b = [0u8; 8];
                b.copy_from_slice(len);
                let len = u64::from_le_bytes(b) as usize;
                let value = raw
                    .get(*offset + 8..*offset + 8 + len)
                    .ok_or_else(|| DataFusionError::Internal(format!("{NAME}: truncated run")))?
                    .to_vec();
                *offset += 8 + len;
                Ok(Some(value))
            }
            Cursor::File(reader) => {
                let mut b = [0u8; 8];
                match reader.read_exact(&mut b) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                    Err(e) => return Err(io_error("cannot read a spill file", e)),
                }
                let mut value = vec![0u8; u64::from_le_bytes(b) as usize];
                reader
                    .read_exact(&mut value)
                    .map_err(|e| io_error("cannot read a spill file", e))?;
                Ok(Some(value))
            }
        }
    }
}

/// Merges sorted distinct runs; returns how many keys appear in more than
/// one run (each extra occurrence counts once).
fn duplicates_across<C, K: Ord + Clone>(
    cursors: &mut [C],
    next: impl Fn(&mut C) -> Result<Option<K>>,
) -> Result<u64> {
    // One run (a small file's one partition) is distinct by itself: nothing
    // can repeat across runs, so there is no merge to walk (issue 19).
    if cursors.len() <= 1 {
        return Ok(0);
    }
    let mut heap = BinaryHeap::with_capacity(cursors.len());
    for (i, c) in cursors.iter_mut().enumerate() {
        if let Some(k) = next(c)? {
            heap.push(Reverse((k, i)));
        }
    }
    let mut across = 0u64;
    let mut last: Option<K> = None;
    while let Some(Reverse((key, i))) = heap.pop() {
        if last.as_ref() == Some(&key) {
            across += 1;
        }
        if let Some(k) = next(&mut cursors[i])? {
            heap.push(Reverse((k, i)));
        }
        last = Some(key);
    }
    Ok(across)
}

/// Keys a spilled fixed-width run reads at a time (256 KiB).
const FIXED_BLOCK_KEYS: usize = 32_768;

/// Up to this many runs the merge compares heads directly; beyond, a heap.
const LINEAR_MERGE_RUNS: usize = 16;

/// Reads a fixed-width run's keys in order, block by block: an in-memory run
/// is one block (shared, not copied); a spilled run is read
/// [`FIXED_BLOCK_KEYS`] at a time rather than 8 bytes per call.
struct FixedRun {
    block: ScalarBuffer<u64>,
    next: usize,
    /// The rest of a spilled run; `None` once read to its end.
    file: Option<File>,
    block_keys: usize,
}

impl FixedRun {
    fn in_memory(array: &ArrayRef) -> Self {
        Self {
            block: array.as_primitive::<UInt64Type>().values().clone(),
            next: 0,
            file: None,
            block_keys: FIXED_BLOCK_KEYS,
        }
    }

    fn spilled(file: File, block_keys: usize) -> Result<Self> {
        let mut run = Self {
            block: ScalarBuffer::from(Vec::new()),
            next: 0,
            file: Some(file),
            block_keys: block_keys.max(1),
        };
        run.refill()?;
        Ok(run)
    }

    /// The next key, or `None` when the run is read.
    fn head(&self) -> Option<u64> {
        self.block.get(self.next).copied()
    }

    /// Reads the next block once the current one is used up.
    fn refill(&mut self) -> Result<()> {
        while self.next >= self.block.len() {
            let Some(file) = self.file.as_mut() else {
                return Ok(());
            };
            let mut bytes = vec![0u8; self.block_keys * 8];
            let mut filled = 0;
            while filled < bytes.len() {
                match file.read(&mut bytes[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(io_error("cannot read a spill file", e)),
                }
            }
            if filled == 0 {
                self.file = None;
            } else if filled % 8 != 0 {
                return Err(DataFusionError::Internal(format!(
                    "{NAME}: a spill file ends inside a key"
                )));
            }
            let keys: Vec<u64> = bytes[..filled]
                .chunks_exact(8)
                .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                .collect();
            self.block = ScalarBuffer::from(keys);
            self.next = 0;
        }
        Ok(())
    }

    fn advance(&mut self) -> Result<()> {
        self.next += 1;
        self.refill()
    }

    /// Moves past every key below `bound`: runs that do not overlap (a
    /// sorted id column's runs) are crossed by galloping, not key by key.
    fn skip_below(&mut self, bound: u64) -> Result<()> {
        while self.head().is_some_and(|k| k < bound) {
            self.next += first_at_least(&self.block[self.next..], bound);
            self.refill()?;
        }
        Ok(())
    }

    fn pop(&mut self) -> Result<Option<u64>> {
        let key = self.head();
        if key.is_some() {
            self.advance()?;
        }
        Ok(key)
    }
}

/// The index of the first key `>= bound` in a sorted slice, found by
/// galloping from the front (cheap when it is near).
fn first_at_least(keys: &[u64], bound: u64) -> usize {
    if keys.first().is_none_or(|&k| k >= bound) {
        return 0;
    }
    // keys[low] < bound throughout.
    let (mut low, mut step) = (0usize, 1usize);
    while low + step < keys.len() && keys[low + step] < bound {
        low += step;
        step *= 2;
    }
    let high = (low + step).min(keys.len());
    low + 1 + keys[low + 1..high].partition_point(|&k| k < bound)
}

/// [`duplicates_across`] for fixed-width runs. With few runs (the usual
/// case: one or two per partition) it compares the heads directly and lets
/// the run with the smallest head skip, by galloping, every key below the
/// other runs' heads; a key is only compared one by one where runs overlap.
fn fixed_duplicates_across(mut runs: Vec<FixedRun>) -> Result<u64> {
    if runs.len() > LINEAR_MERGE_RUNS {
        return duplicates_across(&mut runs, FixedRun::pop);
    }
    runs.retain(|r| r.head().is_some());
    let mut across = 0u64;
    // Once one run is left, nothing can repeat across runs.
    while runs.len() > 1 {
        // The smallest head, its run, and the smallest head of the others.
        let mut smallest = 0;
        let mut low = runs[0].head().unwrap_or(u64::MAX);
        let mut second: Option<u64> = None;
        for (i, run) in runs.iter().enumerate().skip(1) {
            let key = run.head().unwrap_or(u64::MAX);
            if key < low {
                second = Some(low);
                (smallest, low) = (i, key);
            } else if second.is_none_or(|s| key < s) {
                second = Some(key);
            }
        }
        let second = second.unwrap_or(u64::MAX);
        if low == second {
            let mut holding = 0u64;
            for run in runs.iter_mut().filter(|r| r.head() == Some(low)) {
                holding += 1;
                run.advance()?;
            }
            across += holding - 1;
        } else {
            runs[smallest].skip_below(second)?;
        }
        if runs.iter().any(|r| r.head().is_none()) {
            runs.retain(|r| r.head().is_some());
        }
    }
    Ok(across)
}

impl Accumulator for DuplicatesAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let Some(array) = values.first() else {
            return Ok(());
        };
        match self.encoding {
            Encoding::Int64 => {
                let cast = arrow::compute::cast(array, &DataType::Int64)?;
                self.reserve_fixed(cast.len() - cast.null_count());
                self.fixed.extend(
                    cast.as_primitive::<Int64Type>()
                        .iter()
                        .flatten()
                        .map(|v| v as u64),
                );
            }
            Encoding::UInt64 => {
                let cast = arrow::compute::cast(array, &DataType::UInt64)?;
                self.reserve_fixed(cast.len() - cast.null_count());
                self.fixed
                    .extend(cast.as_primitive::<UInt64Type>().iter().flatten());
            }
            Encoding::Float => {
                let cast = arrow::compute::cast(array, &DataType::Float64)?;
                self.reserve_fixed(cast.len() - cast.null_count());
                self.fixed.extend(
                    cast.as_primitive::<Float64Type>()
                        .iter()
                        .flatten()
                        .map(crate::profile::canonical_bits),
                );
            }
            Encoding::Rows => {
                let converter = self.converter.as_ref().ok_or_else(|| {
                    DataFusionError::Internal(format!("{NAME}: no row converter"))
                })?;
                let rows = converter.convert_columns(std::slice::from_ref(array))?;
                for i in 0..array.len() {
                    if array.is_valid(i) {
                        let key: Box<[u8]> = rows.row(i).as_ref().into();
                        self.bytes_held += key.len();
                        self.bytes.push(key);
                    }
                }
            }
        }
        self.bound()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.seal()?;
        // One run travels in memory (its keys shared, not copied); any other
        // goes to disk first, so the state stays within the budget.
        let runs = std::mem::take(&mut self.runs);
        let travelling = runs.iter().rposition(|r| !matches!(r, Run::Spilled(_)));
        let mut fixed: Option<ArrayRef> = None;
        let mut bytes: Option<Vec<u8>> = None;
        let mut files: Vec<File> = Vec::new();
        for (i, run) in runs.into_iter().enumerate() {
            match run {
                Run::Spilled(f) => files.push(f),
                Run::Fixed(a) if Some(i) == travelling => fixed = Some(a),
                Run::Bytes(a) if Some(i) == travelling => {
                    let a: &LargeBinaryArray = a.as_binary();
                    bytes = (!a.is_empty()).then(|| a.value(0).to_vec());
                }
                other => files.push(self.write_run(&other)?),
            }
        }
        let item = Arc::new(Field::new_list_field(DataType::UInt64, false));
        let fixed = match fixed {
            Some(a) => ListArray::new(item, OffsetBuffer::from_lengths([a.len()]), a, None),
            None => ListArray::new_null(item, 1),
        };
        Ok(vec![
            ScalarValue::Int64(Some(self.duplicates as i64)),
            ScalarValue::List(Arc::new(fixed)),
            ScalarValue::LargeBinary(bytes),
            ScalarValue::UInt64((!files.is_empty()).then(|| hand_off(files))),
        ])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let [dups, fixed, bytes, tickets] = states else {
            return Err(DataFusionError::Internal(format!("{NAME}: bad state")));
        };
        let dups = dups.as_primitive::<Int64Type>();
        let fixed = fixed.as_list::<i32>();
        let bytes: &LargeBinaryArray = bytes.as_binary();
        let tickets = tickets.as_primitive::<UInt64Type>();
        for i in 0..dups.len() {
            if dups.is_valid(i) {
                self.duplicates += dups.value(i).max(0) as u64;
            }
            if fixed.is_valid(i) {
                self.runs.push(Run::Fixed(fixed.value(i)));
            }
            if bytes.is_valid(i) {
                self.runs.push(Run::Bytes(Arc::new(bytes.slice(i, 1))));
            }
            if tickets.is_valid(i) {
                for f in take_handoff(tickets.value(i))? {
                    self.runs.push(Run::Spilled(f));
                }
            }
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        // Rows seen directly (single-stage plans) form one more run.
        self.seal()?;
        let runs = std::mem::take(&mut self.runs);
        // Each run is sorted and distinct: a key met again in the merge is a
        // duplicate across runs.
        let across = if self.encoding != Encoding::Rows {
            let runs = runs
                .into_iter()
                .map(|run| match run {
                    Run::Fixed(array) => Ok(FixedRun::in_memory(&array)),
                    Run::Spilled(f) => FixedRun::spilled(f, FIXED_BLOCK_KEYS),
                    Run::Bytes(_) => Err(DataFusionError::Internal(format!(
                        "{NAME}: a byte run among fixed-width runs"
                    ))),
                })
                .collect::<Result<Vec<_>>>()?;
            fixed_duplicates_across(runs)?
        } else {
            let mut cursors = runs
                .into_iter()
                .map(|run| match run {
                    Run::Bytes(data) => Ok(Cursor::BytesMemory { data, offset: 0 }),
                    Run::Spilled(f) => Ok(Cursor::File(BufReader::with_capacity(256 << 10, f))),
                    Run::Fixed(_) => Err(DataFusionError::Internal(format!(
                        "{NAME}: a fixed-width run among byte runs"
                    ))),
                })
                .collect::<Result<Vec<_>>>()?;
            duplicates_across(&mut cursors, Cursor::next_bytes)?
        };
        let total = self.duplicates + across;
        Ok(ScalarValue::Int64(Some(
            i64::try_from(total).unwrap_or(i64::MAX),
        )))
    }

    fn size(&self) -> usize {
        let now = (std::mem::size_of_val(self) + self.held() + self.data_type.size()) as u64;
        // DataFusion grows a no-grouping aggregate's reservation by every
        // increase of `size()` and never shrinks it: a buffer that fills and
        // spills would be counted again on every refill, so report the
        // high-water mark.
        let peak = self.peak.fetch_max(now, Ordering::Relaxed);
        peak.max(now) as usize
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
            let mut acc =
                DuplicatesAccumulator::new(data_type.clone(), SpillConfig::default()).unwrap();
            acc.update_batch(&[part]).unwrap();
            states.push(acc.state().unwrap());
        }
        let mut final_acc = DuplicatesAccumulator::new(data_type, SpillConfig::default()).unwrap();
        let columns: Vec<ArrayRef> = (0..4)
            .map(|i| ScalarValue::iter_to_array(states.iter().map(|s| s[i].clone())).unwrap())
            .collect();
        final_acc.merge_batch(&columns).unwrap();
        match final_acc.evaluate().unwrap() {
            ScalarValue::Int64(Some(n)) => n,
            other => panic!("{other:?}"),
        }
    }

    fn single_stage(data_type: DataType, all: ArrayRef) -> i64 {
        let mut acc = DuplicatesAccumulator::new(data_type, SpillConfig::default()).unwrap();
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

    /// Two-stage with a tiny budget: every partial spills sorted runs to disk.
    fn spilled(data_type: DataType, parts: Vec<ArrayRef>, dir: &std::path::Path) -> i64 {
        let spill = SpillConfig {
            budget: 0, // clamped to the 64 KiB minimum
            dir: Some(dir.to_path_buf()),
        };
        let mut states: Vec<Vec<ScalarValue>> = Vec::new();
        for part in parts {
            let mut acc = DuplicatesAccumulator::new(data_type.clone(), spill.clone()).unwrap();
            // Batches as DataFusion sends them.
            for start in (0..part.len()).step_by(1000) {
                let len = 1000.min(part.len() - start);
                acc.update_batch(&[part.slice(start, len)]).unwrap();
            }
            states.push(acc.state().unwrap());
        }
        let mut final_acc = DuplicatesAccumulator::new(data_type, spill).unwrap();
        let columns: Vec<ArrayRef> = (0..4)
            .map(|i| ScalarValue::iter_to_array(states.iter().map(|s| s[i].clone())).unwrap())
            .collect();
        final_acc.merge_batch(&columns).unwrap();
        match final_acc.evaluate().unwrap() {
            ScalarValue::Int64(Some(n)) => n,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn spilled_runs_give_the_exact_count_and_leave_no_file_behind() {
        let dir = tempfile::tempdir().unwrap();
        // 60,000 ids, every 7th repeated: far over the 64 KiB budget (8 bytes a key).
        let ids: Vec<i64> = (0..60_000i64)
            .map(|i| if i % 7 == 0 { i - 1 } else { i })
            .collect();
        let distinct: std::collections::BTreeSet<i64> = ids.iter().copied().collect();
        let expected = (ids.len() - distinct.len()) as i64;
        let half = ids.len() / 2;
        let parts: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(ids[..half].to_vec())),
            Arc::new(Int64Array::from(ids[half..].to_vec())),
        ];
        assert_eq!(spilled(DataType::Int64, parts, dir.path()), expected);
        // Strings, via the row format: same answer.
        let names: Vec<String> = ids.iter().map(|i| format!("tail-{i}")).collect();
        let parts: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(names[..half].to_vec())),
            Arc::new(StringArray::from(names[half..].to_vec())),
        ];
        assert_eq!(spilled(DataType::Utf8, parts, dir.path()), expected);
        // Spill files are unlinked at creation: nothing is left in the folder.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let acc = DuplicatesAccumulator::new(
            DataType::Int64,
            SpillConfig {
                budget: 0,
                dir: Some(dir.path().to_path_buf()),
            },
        )
        .unwrap();
        assert_eq!(acc.spill.budget, 64 << 10);
    }

    #[test]
    fn memory_stays_within_the_budget_while_spilling() {
        let dir = tempfile::tempdir().unwrap();
        let spill = SpillConfig {
            budget: 1 << 20,
            dir: Some(dir.path().to_path_buf()),
        };
        let mut acc = DuplicatesAccumulator::new(DataType::Int64, spill).unwrap();
        let mut peak = 0;
        // What DataFusion reserves for a no-grouping aggregate: the sum of
        // every increase of `size()` (it never shrinks the reservation).
        let mut reserved = 0;
        for chunk in 0..200i64 {
            let values: Vec<i64> = (chunk * 8192..(chunk + 1) * 8192).collect();
            let before = acc.size();
            acc.update_batch(&[Arc::new(Int64Array::from(values))])
                .unwrap();
            reserved += acc.size().saturating_sub(before);
            peak = peak.max(acc.held());
        }
        assert!(
            reserved <= (512 << 10) + 8192 * 8 + 4096,
            "reserved {reserved} bytes"
        );
        // 1.6 million distinct keys (12.5 MiB) through a 1 MiB budget: half
        // of it for pending keys, at most one batch more.
        assert!(peak <= (512 << 10) + 8192 * 8, "held {peak} bytes");
        assert!(
            acc.runs
                .iter()
                .filter(|r| matches!(r, Run::Spilled(_)))
                .count()
                >= 10
        );
        match acc.evaluate().unwrap() {
            ScalarValue::Int64(Some(n)) => assert_eq!(n, 0),
            other => panic!("{other:?}"),
        }
    }

    proptest! {
        // Each case writes and merges spill files: fewer, larger cases.
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn spilled_and_in_memory_paths_agree(
            values in proptest::collection::vec(proptest::option::of(0i64..20_000), 0..12_000),
            cut in 0usize..12_000,
        ) {
            let cut = cut.min(values.len());
            let non_null: Vec<i64> = values.iter().flatten().copied().collect();
            let distinct: std::collections::BTreeSet<i64> = non_null.iter().copied().collect();
            let expected = (non_null.len() - distinct.len()) as i64;
            let parts: Vec<ArrayRef> = vec![
                Arc::new(Int64Array::from(values[..cut].to_vec())),
                Arc::new(Int64Array::from(values[cut..].to_vec())),
            ];
            let dir = tempfile::tempdir().unwrap();
            prop_assert_eq!(spilled(DataType::Int64, parts.clone(), dir.path()), expected);
            prop_assert_eq!(two_stage(DataType::Int64, parts), expected);
        }
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

    /// A run written as a spill file would be (keys in little-endian order).
    fn spill_file(keys: &[u64]) -> File {
        let mut file = tempfile::tempfile().unwrap();
        for k in keys {
            file.write_all(&k.to_le_bytes()).unwrap();
        }
        file.seek(SeekFrom::Start(0)).unwrap();
        file
    }

    #[test]
    fn a_spill_file_ending_inside_a_key_is_an_error_not_a_panic() {
        let file = spill_file(&[1, 2]);
        file.set_len(12).unwrap();
        let run = FixedRun::spilled(file, 4);
        assert!(matches!(run, Err(DataFusionError::Internal(m)) if m.contains("inside a key")));
    }

    #[test]
    fn sorted_id_runs_side_by_side_count_only_the_shared_key() {
        // Ten sorted id runs side by side (a sorted column's spilled runs),
        // plus one key shared by the last two.
        let mut runs: Vec<FixedRun> = (0..10u64)
            .map(|r| {
                let keys: Vec<u64> = (r * 1000..(r + 1) * 1000 + u64::from(r == 8)).collect();
                FixedRun::spilled(spill_file(&keys), 64).unwrap()
            })
            .collect();
        runs.push(FixedRun::in_memory(
            &(Arc::new(UInt64Array::from(vec![u64::MAX])) as ArrayRef),
        ));
        assert_eq!(fixed_duplicates_across(runs).unwrap(), 1);
    }

    proptest! {
        #[test]
        fn first_at_least_is_the_partition_point(
            keys in proptest::collection::btree_set(0u64..500, 0..200),
            bound in 0u64..520,
        ) {
            let keys: Vec<u64> = keys.into_iter().collect();
            prop_assert_eq!(first_at_least(&keys, bound), keys.partition_point(|&k| k < bound));
        }

        /// Any mix of in-memory and spilled runs, read in blocks of any size,
        /// through the direct merge (up to 16 runs) and the heap (more):
        /// the number of extra runs holding each key.
        #[test]
        fn fixed_merge_counts_each_key_once_per_extra_run(
            runs in proptest::collection::vec(
                (proptest::collection::btree_set(
                    prop_oneof![0u64..300, Just(u64::MAX), Just(u64::MAX - 1)], 0..80),
                 any::<bool>()),
                0..24),
            block_keys in 1usize..9,
        ) {
            let mut holders: std::collections::BTreeMap<u64, u64> = Default::default();
            for (keys, _) in &runs {
                for k in keys {
                    *holders.entry(*k).or_default() += 1;
                }
            }
            let expected: u64 = holders.values().map(|n| n - 1).sum();
            let readers: Vec<FixedRun> = runs
                .iter()
                .map(|(keys, on_disk)| {
                    let keys: Vec<u64> = keys.iter().copied().collect();
                    if *on_disk {
                        FixedRun::spilled(spill_file(&keys), block_keys).unwrap()
                    } else {
                        FixedRun::in_memory(&(Arc::new(UInt64Array::from(keys)) as ArrayRef))
                    }
                })
                .collect();
            prop_assert_eq!(fixed_duplicates_across(readers).unwrap(), expected);
        }
    }
}
