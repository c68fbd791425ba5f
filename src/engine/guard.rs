//! A linear-time check of a Parquet file's Thrift structures before the
//! parquet crate reads them.
//!
//! Why: Parquet's footer, page indexes and page headers are Thrift compact
//! structures, and the parquet crate (59.x) *skips* fields it does not know.
//! Its skipper reads nothing for a boolean element, so an unknown field
//! holding a `list<bool>` that claims 2³¹ elements costs 2³¹ iterations
//! while taking 8 bytes of the file — and such fields can be repeated. A
//! 2 KB file made `driftwatch check` spin for minutes (found by the
//! `parquet_read` fuzz target); a CPU-bound decode is not interrupted by
//! `evaluation.timeout` (the timer fires only when the scan yields), and the
//! lake watcher parses footers with no timeout at all.
//!
//! The rule checked here holds for every valid compact encoding: each element
//! of a list, set or map takes at least one byte (booleans in containers are
//! one byte each), so a container may not claim more elements than bytes are
//! left. With that and a depth limit, walking a structure costs time linear
//! in its size, and so does the parquet crate's own decoding of whatever
//! passes. Everything else (unknown types, truncation, nonsense values) is
//! left for the parquet crate to report in its own words: this guard only
//! refuses what would make decoding unbounded.
//!
//! The guard is the second line, not the fix: the parquet crate decodes known
//! fields by field id whatever wire type a file declares, so a walk by wire
//! type can see different bytes than the crate (CI's fuzz run on 2026-12-04
//! found a page header that passed the guard and still spun the crate). The
//! crate itself is patched to decode in linear time
//! (`vendor/parquet/PATCHES.md`); what stays here is what no decoder checks —
//! byte ranges that must lie inside the file — and refusing the known
//! hostile shapes early with a message naming the structure.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use parquet::file::metadata::ParquetMetaData;

/// Deeper nesting than this is refused (the parquet crate's skipper stops at
/// 64 as well; Parquet's own structures nest about 6 deep).
const MAX_DEPTH: u32 = 64;

/// Why a file was refused: a one-line reason naming the structure.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// Thrift data that claims more than it holds.
    #[error("not a valid Parquet file: {0}")]
    Invalid(String),
    /// The file could not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A `Result` whose error is a [`GuardError`].
pub type Result<T, E = GuardError> = std::result::Result<T, E>;

/// Bytes the walker reads: a slice, or a range of a file.
trait Source {
    fn byte(&mut self) -> std::io::Result<u8>;
    fn skip(&mut self, n: u64) -> std::io::Result<()>;
    fn remaining(&self) -> u64;
}

struct Slice<'a>(&'a [u8]);

impl Source for Slice<'_> {
    fn byte(&mut self) -> std::io::Result<u8> {
        let (&b, rest) = self.0.split_first().ok_or_else(eof)?;
        self.0 = rest;
        Ok(b)
    }
    fn skip(&mut self, n: u64) -> std::io::Result<()> {
        let n = usize::try_from(n).map_err(|_| eof())?;
        self.0 = self.0.get(n..).ok_or_else(eof)?;
        Ok(())
    }
    fn remaining(&self) -> u64 {
        self.0.len() as u64
    }
}

/// A byte range of a file, read through a buffer (page headers are small and
/// many; the pages between them are skipped with a seek). The buffer is 1 KiB:
/// a header is usually under 200 bytes, and each is read afresh after a seek,
/// so an 8 KiB buffer copied ~40× what the walk used (issue 19).
struct Range {
    reader: BufReader<File>,
    left: u64,
}

impl Source for Range {
    fn byte(&mut self) -> std::io::Result<u8> {
        if self.left == 0 {
            return Err(eof());
        }
        let mut b = [0u8; 1];
        self.reader.read_exact(&mut b)?;
        self.left -= 1;
        Ok(b[0])
    }
    fn skip(&mut self, n: u64) -> std::io::Result<()> {
        if n > self.left {
            return Err(eof());
        }
        let buffered = self.reader.buffer().len() as u64;
        if n <= buffered {
            self.reader.consume(n as usize);
        } else {
            let n = i64::try_from(n).map_err(|_| eof())?;
            self.reader.seek_relative(n)?;
        }
        self.left -= n;
        Ok(())
    }
    fn remaining(&self) -> u64 {
        self.left
    }
}

fn eof() -> std::io::Error {
    std::io::Error::from(std::io::ErrorKind::UnexpectedEof)
}

/// What a walk stopped at: a refusal, or the data simply ended (left to the
/// parquet crate to report).
enum Stop {
    Refused(String),
    Ended,
}

impl From<std::io::Error> for Stop {
    fn from(_: std::io::Error) -> Self {
        Stop::Ended
    }
}

type Walk<T> = std::result::Result<T, Stop>;

/// Walks Thrift compact values the way the parquet crate's skipper consumes
/// them — a boolean takes no byte, even inside a list or map, unlike the
/// compact protocol's writers — so that the walk sees the bytes the crate
/// will see, and refuses what would make the crate loop without reading.
struct Walker<'s, S: Source> {
    src: &'s mut S,
    what: &'static str,
    /// Boolean elements the crate may still iterate over without reading a
    /// byte: a writer spends a byte on each, so a structure of n bytes holds
    /// at most n of them.
    free_elements: u64,
    /// A top-level list field the crate decodes itself with one byte per
    /// boolean (`null_pages`, field 1 of a column index).
    known_bool_list: Option<i16>,
}

impl<S: Source> Walker<'_, S> {
    fn varint(&mut self) -> Walk<u64> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.src.byte()?;
            value |= u64::from(b & 0x7f) << shift.min(63);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Stop::Ended)
    }

    fn refuse<T>(&self, detail: String) -> Walk<T> {
        Err(Stop::Refused(format!("{}: {detail}", self.what)))
    }

    /// One value of compact type `ty`. Returns integers' values
    /// (zigzag-decoded) so callers can read fields.
    fn value(&mut self, ty: u8, depth: u32) -> Walk<Option<i64>> {
        if depth > MAX_DEPTH {
            return self.refuse(format!("structures nested deeper than {MAX_DEPTH}"));
        }
        match ty {
            1 | 2 => Ok(None),
            3 => Ok(Some(i64::from(self.src.byte()? as i8))),
            4..=6 => {
                let v = self.varint()?;
                Ok(Some((v >> 1) as i64 ^ -((v & 1) as i64)))
            }
            7 => {
                self.src.skip(8)?;
                Ok(None)
            }
            8 => {
                let len = self.varint()?;
                if len > self.src.remaining() {
                    return Err(Stop::Ended);
                }
                self.src.skip(len)?;
                Ok(None)
            }
            9 | 10 => {
                let (size, element) = self.list_header()?;
                self.elements(size, &[element], depth)?;
                Ok(None)
            }
            11 => {
                let size = self.varint()?;
                // The crate reads the size as an i32 and skips nothing when
                // it is not positive.
                if i32::try_from(size).is_ok_and(|n| n > 0) {
                    let kv = self.src.byte()?;
                    self.elements(size, &[kv >> 4, kv & 0x0f], depth)?;
                }
                Ok(None)
            }
            12 => {
                self.structure(depth + 1, &mut |_, _| {})?;
                Ok(None)
            }
            13 => {
                self.src.skip(16)?;
                Ok(None)
            }
            // Unknown types: the parquet crate refuses them itself.
            _ => Err(Stop::Ended),
        }
    }

    fn list_header(&mut self) -> Walk<(u64, u8)> {
        let header = self.src.byte()?;
        let size = match header >> 4 {
            15 => self.varint()?,
            n => u64::from(n),
        };
        Ok((size, header & 0x0f))
    }

    /// `size` container entries of `types` each (one for lists, two for maps).
    fn elements(&mut self, size: u64, types: &[u8], depth: u32) -> Walk<()> {
        let least_bytes = types.iter().filter(|t| !matches!(t, 1 | 2)).count() as u64;
        let left = self.src.remaining();
        if least_bytes == 0 {
            // Entries the crate iterates over without reading anything.
            if size > self.free_elements {
                return self.refuse(format!(
                    "a container claims {size} boolean elements, more than the structure has bytes"
                ));
            }
            self.free_elements -= size;
            return Ok(());
        }
        if size.saturating_mul(least_bytes) > left {
            return self.refuse(format!(
                "a container claims {size} elements with {left} bytes left"
            ));
        }
        for _ in 0..size {
            for &ty in types {
                self.value(ty, depth + 1)?;
            }
        }
        Ok(())
    }

    /// A struct's fields up to its stop byte; `field` sees each integer
    /// field's id and value.
    fn structure(&mut self, depth: u32, field: &mut dyn FnMut(i16, i64)) -> Walk<()> {
        if depth > MAX_DEPTH {
            return self.refuse(format!("structures nested deeper than {MAX_DEPTH}"));
        }
        let mut last: i16 = 0;
        loop {
            let header = self.src.byte()?;
            if header == 0 {
                return Ok(());
            }
            let ty = header & 0x0f;
            let id = match header >> 4 {
                0 => {
                    let v = self.varint()?;
                    ((v >> 1) as i64 ^ -((v & 1) as i64)) as i16
                }
                delta => last.wrapping_add(i16::from(delta)),
            };
            last = id;
            if depth == 1 && ty == 9 && self.known_bool_list == Some(id) {
                // Decoded, not skipped: a byte per element.
                let (size, element) = self.list_header()?;
                if matches!(element, 1 | 2) {
                    if size > self.src.remaining() {
                        return self.refuse(format!(
                            "a list claims {size} elements with {} bytes left",
                            self.src.remaining()
                        ));
                    }
                    self.src.skip(size)?;
                } else {
                    self.elements(size, &[element], depth)?;
                }
                continue;
            }
            if let Some(v) = self.value(ty, depth)? {
                field(id, v);
            }
        }
    }
}

fn walk<S: Source>(
    src: &mut S,
    what: &'static str,
    known_bool_list: Option<i16>,
    field: &mut dyn FnMut(i16, i64),
) -> Result<()> {
    let free_elements = src.remaining();
    let mut walker = Walker {
        src,
        what,
        free_elements,
        known_bool_list,
    };
    match walker.structure(1, field) {
        Ok(()) | Err(Stop::Ended) => Ok(()),
        Err(Stop::Refused(reason)) => Err(GuardError::Invalid(reason)),
    }
}

fn walk_struct<S: Source>(
    src: &mut S,
    what: &'static str,
    field: &mut dyn FnMut(i16, i64),
) -> Result<()> {
    walk(src, what, None, field)
}

/// Checks a footer's Thrift bytes (the `FileMetaData` structure).
pub fn check_footer_bytes(footer: &[u8]) -> Result<()> {
    walk_struct(&mut Slice(footer), "the footer", &mut |_, _| {})
}

/// Reads and checks a file's footer. Files too short or not ending in
/// `PAR1` are left to the parquet crate, which says what is wrong.
pub fn check_footer(file: &mut File) -> Result<()> {
    let len = file.metadata()?.len();
    if len < 12 {
        return Ok(());
    }
    let mut tail = [0u8; 8];
    file.seek(SeekFrom::Start(len - 8))?;
    file.read_exact(&mut tail)?;
    if &tail[4..] != b"PAR1" {
        return Ok(());
    }
    let footer_len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if footer_len > len - 8 {
        return Ok(());
    }
    let mut footer = vec![0u8; footer_len as usize];
    file.seek(SeekFrom::Start(len - 8 - footer_len))?;
    file.read_exact(&mut footer)?;
    check_footer_bytes(&footer)
}

/// A column chunk's bytes: (start, length). The parquet crate's own
/// `byte_range` panics on negative values; here they are the file's fault.
fn chunk_range(chunk: &parquet::file::metadata::ColumnChunkMetaData) -> Result<(u64, u64)> {
    let start = chunk
        .dictionary_page_offset()
        .unwrap_or_else(|| chunk.data_page_offset());
    match (u64::try_from(start), u64::try_from(chunk.compressed_size())) {
        (Ok(start), Ok(length)) => Ok((start, length)),
        _ => Err(GuardError::Invalid(format!(
            "a column chunk at offset {start} has a negative offset or size ({})",
            chunk.compressed_size()
        ))),
    }
}

/// Checks every Parquet file of a batch (a file, or a folder's `*.parquet`
/// files, as the engine reads them; links are not followed).
pub fn check_batch(path: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.is_dir() {
        return check_file(path).map(|_| ());
    }
    let mut folders = vec![path.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let p = entry.path();
            if kind.is_dir() {
                folders.push(p);
            } else if kind.is_file() && p.extension().is_some_and(|e| e == "parquet") {
                let _footer = check_file(&p)?;
            }
        }
    }
    Ok(())
}

/// Checks everything of a Parquet file the parquet crate decodes as Thrift:
/// the footer, then (once the footer is known to be safe to decode) every
/// column chunk's column and offset index and every page header. Reads the
/// footer, the indexes and the page headers, never the pages.
///
/// Returns the footer as the parquet crate decoded it (None when it does
/// not decode: the crate reports that itself when the file is read), so a
/// caller that needs the file's schema does not parse the footer again.
pub fn check_file(path: &Path) -> Result<Option<ParquetMetaData>> {
    let mut file = File::open(path)?;
    check_footer(&mut file)?;
    let Ok(metadata) =
        parquet::file::metadata::ParquetMetaDataReader::new().parse_and_finish(&file)
    else {
        return Ok(None);
    };
    let len = file.metadata()?.len();
    // Every byte range the footer names must lie inside the file: readers
    // allocate a range's length before reading it (object_store's local
    // reader aborted the process on a chunk claiming 64 TB; found by the
    // parquet_engine fuzz target).
    let within = |what: &str, offset: Option<i64>, length: Option<u64>| -> Result<()> {
        let (Some(offset), Some(length)) = (offset, length) else {
            return Ok(());
        };
        let end = u64::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(length));
        match end {
            Some(end) if end <= len => Ok(()),
            _ => Err(GuardError::Invalid(format!(
                "{what} at offset {offset} with {length} bytes lies beyond the end of the \
                 file ({len} bytes)"
            ))),
        }
    };
    for row_group in metadata.row_groups() {
        for chunk in row_group.columns() {
            let (start, size) = chunk_range(chunk)?;
            within(
                "a column chunk",
                i64::try_from(start).ok().or(Some(-1)),
                Some(size),
            )?;
            within(
                "a column index",
                chunk.column_index_offset(),
                chunk
                    .column_index_length()
                    .and_then(|l| u64::try_from(l).ok()),
            )?;
            within(
                "an offset index",
                chunk.offset_index_offset(),
                chunk
                    .offset_index_length()
                    .and_then(|l| u64::try_from(l).ok()),
            )?;
            within(
                "a bloom filter",
                chunk.bloom_filter_offset(),
                chunk
                    .bloom_filter_length()
                    .and_then(|l| u64::try_from(l).ok()),
            )?;
        }
    }
    let range = |file: &File, start: u64, end: u64| -> Result<Range> {
        let mut file = file.try_clone()?;
        file.seek(SeekFrom::Start(start))?;
        Ok(Range {
            reader: BufReader::with_capacity(1 << 10, file),
            left: end.min(len).saturating_sub(start),
        })
    };
    for row_group in metadata.row_groups() {
        for chunk in row_group.columns() {
            for (offset, length, what, known) in [
                (
                    chunk.column_index_offset(),
                    chunk.column_index_length(),
                    "a column index",
                    Some(1),
                ),
                (
                    chunk.offset_index_offset(),
                    chunk.offset_index_length(),
                    "an offset index",
                    None,
                ),
            ] {
                let (Some(offset), Some(length)) = (offset, length) else {
                    continue;
                };
                let (Ok(start), Ok(length)) = (u64::try_from(offset), u64::try_from(length)) else {
                    continue;
                };
                let mut index = range(&file, start, start.saturating_add(length))?;
                walk(&mut index, what, known, &mut |_, _| {})?;
            }
            // The crate reads a page header from a reader that runs to the
            // end of the file, not of the chunk: walk the same bytes.
            let (start, size) = chunk_range(chunk)?;
            let chunk_end = start.saturating_add(size).min(len);
            let mut pages = range(&file, start, len)?;
            while len - pages.remaining() < chunk_end {
                let mut compressed = None;
                walk_struct(&mut pages, "a page header", &mut |id, v| {
                    if id == 3 {
                        compressed = Some(v);
                    }
                })?;
                // A header without a usable size: the parquet crate says so.
                let Some(c) = compressed.and_then(|c| u64::try_from(c).ok()) else {
                    break;
                };
                if pages.skip(c).is_err() {
                    break;
                }
            }
        }
    }
    // With its indexes known to be safe to decode, the offset index's page
    // locations: readers that use them read a page header at each.
    let with_indexes = parquet::file::metadata::ParquetMetaDataReader::new()
        .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Optional)
        .parse_and_finish(&file);
    if let Some(indexes) = with_indexes.ok().as_ref().and_then(|m| m.offset_index()) {
        for location in indexes.iter().flatten().flat_map(|i| i.page_locations()) {
            let (Ok(start), Ok(size)) = (
                u64::try_from(location.offset),
                u64::try_from(location.compressed_page_size),
            ) else {
                continue;
            };
            if start.saturating_add(size) > len {
                continue;
            }
            let mut header = range(&file, start, len)?;
            walk_struct(&mut header, "a page header", &mut |_, _| {})?;
        }
    }
    Ok(Some(metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    /// An unknown field 100 holding a `list<bool>` claiming `n` elements.
    fn bool_list_field(n: u64) -> Vec<u8> {
        let mut out = vec![0x09];
        out.extend(varint(200));
        out.push(0xF1);
        out.extend(varint(n));
        out
    }

    #[test]
    fn issue_15_fuzz_a_list_of_booleans_claiming_more_elements_than_bytes_is_refused() {
        let mut footer = bool_list_field(0x7fff_ffff);
        footer.push(0);
        let e = check_footer_bytes(&footer).unwrap_err();
        assert_eq!(
            e.to_string(),
            "not a valid Parquet file: the footer: a container claims 2147483647 boolean elements, more than the structure has bytes"
        );
        // Three booleans in a structure of more than three bytes pass.
        let mut footer = vec![0x09];
        footer.extend(varint(200));
        footer.push(0x31);
        footer.push(0);
        check_footer_bytes(&footer).unwrap();
    }

    #[test]
    fn issue_15_fuzz_maps_and_nesting_are_bounded() {
        // map<bool,bool> claiming 1,000 entries in 7 bytes.
        let mut footer = vec![0x0B];
        footer.extend(varint(200));
        footer.extend(varint(1000));
        footer.extend([0x11, 0]);
        let e = check_footer_bytes(&footer).unwrap_err();
        assert!(
            e.to_string().contains("claims 1000 boolean elements"),
            "{e}"
        );
        // map<i32,binary> claiming 1,000 entries in 3 bytes left.
        let mut footer = vec![0x0B];
        footer.extend(varint(200));
        footer.extend(varint(1000));
        footer.extend([0x58, 0, 0]);
        let e = check_footer_bytes(&footer).unwrap_err();
        assert!(
            e.to_string()
                .contains("claims 1000 elements with 2 bytes left"),
            "{e}"
        );
        // 100 nested structs.
        let mut footer = vec![0x1C; 100];
        footer.extend(std::iter::repeat_n(0, 101));
        let e = check_footer_bytes(&footer).unwrap_err();
        assert!(e.to_string().contains("nested deeper than 64"), "{e}");
    }

    #[test]
    fn real_files_pass_and_so_does_what_the_parquet_crate_reports_itself() {
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/parquet_read");
        for name in [
            "plain.parquet",
            "gzip.parquet",
            "lz4.parquet",
            "row_groups.parquet",
            "snappy_dict.parquet",
            "zstd_pages.parquet",
        ] {
            check_file(&corpus.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        // Truncated thrift: ended, not refused.
        check_footer_bytes(&[0x15]).unwrap();
        check_footer_bytes(&[]).unwrap();
    }

    #[test]
    fn issue_15_fuzz_a_column_chunk_beyond_the_end_of_the_file_is_refused() {
        // Found by the parquet_engine fuzz target: the chunk's range made
        // object_store allocate 64 TB and the process abort.
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus/parquet_engine/crash-chunk-range-beyond-file");
        let e = check_file(&path).unwrap_err();
        assert!(
            e.to_string().starts_with("not a valid Parquet file: ")
                && e.to_string()
                    .ends_with("lies beyond the end of the file (5243 bytes)"),
            "{e}"
        );
    }

    #[test]
    fn issue_15_fuzz_a_negative_column_chunk_size_is_refused_not_a_panic() {
        // Found by CI's parquet_read run: the parquet crate's `byte_range`
        // asserts on it, and the guard called it.
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus/parquet_read/crash-negative-chunk-size");
        let e = check_file(&path).unwrap_err();
        assert!(
            e.to_string().contains("has a negative offset or size"),
            "{e}"
        );
    }

    #[test]
    fn issue_15_fuzz_a_page_header_claiming_a_huge_container_is_refused() {
        // Found by the parquet_read fuzz target (2,711 bytes): the parquet
        // crate spun for minutes skipping a page header's unknown fields.
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus/parquet_read/timeout-page-header-bool-list");
        let e = check_file(&path).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("not a valid Parquet file: a page header: a container claims"),
            "{e}"
        );
    }

    /// A dictionary page whose header claims billions of values in a
    /// 2,390-byte file: the crate sized the dictionary from the claim and
    /// allocated gigabytes (the `parquet_read` fuzz target's OOM of
    /// 2026-12-05). The patched crate (vendor/parquet, PATCHES.md 4) reads
    /// it as an error, with the guard passing it as before.
    #[test]
    fn issue_15_fuzz_a_dictionary_page_claiming_huge_num_values_is_an_error_not_an_allocation() {
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus/parquet_read/oom-dictionary-page-claiming-huge-num-values");
        assert!(
            check_file(&path).is_ok(),
            "the guard models the footer only"
        );
        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap())
            .expect("the footer is valid");
        let errors: Vec<String> = builder
            .build()
            .unwrap()
            .filter_map(|b| b.err().map(|e| e.to_string()))
            .take(1)
            .collect();
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].contains("dictionary page claims") && errors[0].contains("values in"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn issue_15_fuzz_the_patched_parquet_crate_alone_ends_on_both_hangs() {
        // Without the guard: the parquet crate itself (vendor/parquet,
        // PATCHES.md) must end on both inputs that made it spin — a huge
        // list of booleans, and a huge list of UUIDs past the end of a page.
        // On its own thread, so a regression fails after a generous deadline
        // instead of hanging the suite.
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/parquet_read");
        for name in [
            "timeout-page-header-bool-list",
            "timeout-overlong-varint-uuid-list",
        ] {
            let file = File::open(corpus.join(name)).unwrap();
            let (done, wait) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                // Batches until the first error (a reader keeps failing
                // once it has failed).
                let mut outcome = "no reader";
                if let Ok(builder) = ParquetRecordBatchReaderBuilder::try_new(file)
                    && let Ok(reader) = builder.build()
                {
                    outcome = "read to the end";
                    for batch in reader {
                        if batch.is_err() {
                            outcome = "an error";
                            break;
                        }
                    }
                }
                let _ = done.send(outcome);
            });
            let outcome = wait
                .recv_timeout(std::time::Duration::from_secs(120))
                .unwrap_or_else(|_| panic!("{name}: reading did not end"));
            assert_eq!(outcome, "an error", "{name}");
        }
    }
}
