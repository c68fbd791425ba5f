//! Write-ahead-log segments: where acknowledged events live until their
//! window is evaluated and recorded.
//!
//! A segment is one window's events, in frames appended as events arrive. A
//! frame is one append (one HTTP post, one chunk of a file) and is on disk
//! (`fdatasync`) before the append returns, which is what lets the ingest
//! endpoint answer 2xx. Layout of a frame:
//!
//! ```text
//! "DWF1" | len: u32 LE | crc32: u32 LE | meta_len: u32 LE | meta (JSON) | Arrow IPC stream
//!                        └─────────── crc32 covers meta_len..end, len counts it too ───────┘
//! ```
//!
//! Reading stops at the first frame that is short or fails its CRC: that can
//! only be an append that never returned (the process died mid-write), whose
//! events were never acknowledged. A failed append truncates the file back to
//! where it was, so later frames never sit behind garbage.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 4] = b"DWF1";
/// The largest frame the reader accepts (its `len` field, exclusive): a
/// longer one reads as a torn tail. The writer refuses frames at or past it
/// ([`WalError::FrameTooLarge`]) so that nothing acknowledged is dropped at
/// recovery, and `max_body` is capped well below it
/// ([`super::config::MAX_BODY_LIMIT`]).
pub const MAX_FRAME: u32 = 1 << 31;

/// What a frame says besides its rows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameMeta {
    /// Rows in the frame.
    pub rows: u64,
    /// For file sources: the file and the number of its lines consumed
    /// through this frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// Where a frame's events came from (file sources resume from it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The file, as found.
    pub file: String,
    /// Lines of the file consumed (accepted or rejected) through this frame.
    pub lines: u64,
}

/// Write-ahead-log errors.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// Reading or writing a segment failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The segment.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A frame would be larger than recovery reads back: refused before
    /// anything is written (the append is not acknowledged).
    #[error("{}: a write-ahead-log frame of {bytes} bytes is over the frame limit of {limit} bytes; send smaller posts or files", path.display())]
    FrameTooLarge {
        /// The segment.
        path: PathBuf,
        /// The frame's length field.
        bytes: u64,
        /// The limit (exclusive).
        limit: u64,
    },
    /// Encoding or decoding Arrow IPC failed.
    #[error("{}: {message}", path.display())]
    Arrow {
        /// The segment.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

/// A segment open for appending.
pub struct SegmentWriter {
    path: PathBuf,
    file: File,
    len: u64,
    /// Frames whose length field reaches this are refused: [`MAX_FRAME`],
    /// lowered only by tests (a 2 GiB frame is too big to build in one).
    frame_limit: u64,
}

impl SegmentWriter {
    /// Creates a new segment (fails if it exists) and makes its directory
    /// entry durable.
    pub fn create(path: &Path) -> Result<Self, WalError> {
        let io = |source| WalError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        if let Some(dir) = path.parent() {
            sync_dir(dir).map_err(io)?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            len: 0,
            frame_limit: u64::from(MAX_FRAME),
        })
    }

    #[cfg(test)]
    fn with_frame_limit(mut self, limit: u64) -> Self {
        self.frame_limit = limit;
        self
    }

    /// The segment's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one frame and syncs it to disk. On error the file is cut back
    /// to its previous length.
    pub fn append(&mut self, batches: &[RecordBatch], meta: &FrameMeta) -> Result<(), WalError> {
        let frame = encode_frame(batches, meta).map_err(|message| WalError::Arrow {
            path: self.path.clone(),
            message,
        })?;
        // The length field counts the CRC and the body: what the reader checks.
        let field = frame.len() as u64 - 8;
        if field >= self.frame_limit {
            return Err(WalError::FrameTooLarge {
                path: self.path.clone(),
                bytes: field,
                limit: self.frame_limit,
            });
        }
        let written = self
            .file
            .write_all(&frame)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.len += frame.len() as u64;
                Ok(())
            }
            Err(source) => {
                let _ = self.file.set_len(self.len);
                Err(WalError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }
}

fn encode_frame(batches: &[RecordBatch], meta: &FrameMeta) -> Result<Vec<u8>, String> {
    let meta_json = serde_json::to_vec(meta).map_err(|e| e.to_string())?;
    let mut body = Vec::with_capacity(1024);
    body.extend_from_slice(&(meta_json.len() as u32).to_le_bytes());
    body.extend_from_slice(&meta_json);
    if let Some(first) = batches.first() {
        let mut writer = arrow_ipc::writer::StreamWriter::try_new(&mut body, &first.schema())
            .map_err(|e| e.to_string())?;
        for b in batches {
            writer.write(b).map_err(|e| e.to_string())?;
        }
        writer.finish().map_err(|e| e.to_string())?;
    }
    let mut frame = Vec::with_capacity(body.len() + 12);
    frame.extend_from_slice(MAGIC);
    // Saturates rather than wraps; the writer refuses anything this large.
    let field = u32::try_from(body.len() + 4).unwrap_or(u32::MAX);
    frame.extend_from_slice(&field.to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// One frame read back.
pub struct Frame {
    /// Its metadata.
    pub meta: FrameMeta,
    /// Its rows (empty when read with `rows: false`).
    pub batches: Vec<RecordBatch>,
}

/// Reads a segment's valid frames, one at a time.
pub struct SegmentReader {
    path: PathBuf,
    reader: BufReader<File>,
    decode: bool,
    /// Bytes of valid frames read so far.
    pub valid_len: u64,
}

impl SegmentReader {
    /// Opens a segment; `decode` says whether frames' rows are decoded.
    pub fn open(path: &Path, decode: bool) -> Result<Self, WalError> {
        let file = File::open(path).map_err(|source| WalError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(1 << 20, file),
            decode,
            valid_len: 0,
        })
    }

    /// The next valid frame; `None` at the end or at the first torn frame.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, WalError> {
        let mut head = [0u8; 12];
        if !read_full(&mut self.reader, &mut head).map_err(|source| self.io(source))? {
            return Ok(None);
        }
        if &head[..4] != MAGIC {
            return Ok(None);
        }
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let crc = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
        if !(8..MAX_FRAME).contains(&len) {
            return Ok(None);
        }
        let mut body = vec![0u8; len as usize - 4];
        if !read_full(&mut self.reader, &mut body).map_err(|source| self.io(source))? {
            return Ok(None);
        }
        if crc32fast::hash(&body) != crc {
            return Ok(None);
        }
        let meta_len = u32::from_le_bytes([body[0], body[1], body[2], body[3]]) as usize;
        if 4 + meta_len > body.len() {
            return Ok(None);
        }
        let meta: FrameMeta = serde_json::from_slice(&body[4..4 + meta_len])
            .map_err(|e| self.arrow(e.to_string()))?;
        let mut batches = Vec::new();
        if self.decode && body.len() > 4 + meta_len {
            // A frame with a valid CRC is one we wrote, but arrow-ipc panics
            // on some malformed streams: recovery must report, not die
            // (found by fuzzing, issue 15).
            let ipc = &body[4 + meta_len..];
            batches = std::panic::catch_unwind(|| read_ipc(ipc))
                .unwrap_or_else(|panic| {
                    Err(format!(
                        "the IPC decoder failed: {}",
                        super::http::panic_message(panic.as_ref())
                    ))
                })
                .map_err(|e| self.arrow(e))?;
        }
        self.valid_len += 8 + len as u64;
        Ok(Some(Frame { meta, batches }))
    }

    fn io(&self, source: std::io::Error) -> WalError {
        WalError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn arrow(&self, message: String) -> WalError {
        WalError::Arrow {
            path: self.path.clone(),
            message,
        }
    }
}

/// The record batches of a frame's Arrow IPC stream.
fn read_ipc(ipc: &[u8]) -> Result<Vec<RecordBatch>, String> {
    // The reader allocates a message's claimed body length before reading
    // it; a corrupt frame must not claim gigabytes (found by fuzzing, issue 15).
    super::http::check_ipc_framing(ipc)?;
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None)
        .map_err(|e| e.to_string())?;
    reader.map(|b| b.map_err(|e| e.to_string())).collect()
}

/// Fills `buf`; `false` when the input ends first (a torn frame or the end).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Makes a directory's entries (a created, renamed or removed file) durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    #[test]
    fn issue_15_fuzz_wal_frame_claiming_a_huge_ipc_body_is_an_error() {
        // The fuzzer's input: a mode byte, then `len: u16 LE | body` chunks
        // that the target frames with valid lengths and CRCs (as here).
        let input = include_bytes!("../../../fuzz/corpus/wal_recover/oom-wal-ipc-body-length");
        let mut rest = &input[1..];
        let mut segment = Vec::new();
        while rest.len() >= 2 {
            let n = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
            rest = &rest[2..];
            let body = &rest[..n.min(rest.len())];
            rest = &rest[body.len()..];
            segment.extend_from_slice(MAGIC);
            segment.extend_from_slice(&(body.len() as u32 + 4).to_le_bytes());
            segment.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
            segment.extend_from_slice(body);
        }
        segment.extend_from_slice(rest);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg.wal");
        std::fs::write(&path, &segment).unwrap();
        let mut reader = SegmentReader::open(&path, true).unwrap();
        let mut errors = Vec::new();
        for _ in 0..100 {
            match reader.next_frame() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    errors.push(e.to_string());
                    break;
                }
            }
        }
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(&format!("{}: ", path.display())),
            "{errors:?}"
        );
    }

    #[test]
    fn issue_15_fuzz_wal_frame_with_malformed_ipc_is_an_error() {
        // A frame with a valid CRC whose IPC schema message is malformed:
        // recovery used to panic inside arrow-ipc.
        let ipc = include_bytes!("../../../fuzz/corpus/ipc_decode/crash-ipc-malformed-schema");
        let meta = br#"{"rows":1}"#;
        let mut body = (meta.len() as u32).to_le_bytes().to_vec();
        body.extend_from_slice(meta);
        body.extend_from_slice(ipc);
        let mut frame = MAGIC.to_vec();
        frame.extend_from_slice(&(body.len() as u32 + 4).to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        frame.extend_from_slice(&body);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg.wal");
        std::fs::write(&path, &frame).unwrap();
        let err = SegmentReader::open(&path, true)
            .unwrap()
            .next_frame()
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: the IPC decoder failed: called `Option::unwrap()` on a `None` value",
                path.display()
            )
        );
        // Without decoding rows the frame's metadata is all that is read.
        let frame = SegmentReader::open(&path, false)
            .unwrap()
            .next_frame()
            .unwrap()
            .unwrap();
        assert_eq!(frame.meta.rows, 1);
    }

    fn batch(values: &[i64]) -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)])),
            vec![Arc::new(Int64Array::from(values.to_vec()))],
        )
        .unwrap()
    }

    fn read_all(path: &Path) -> Vec<(FrameMeta, Vec<i64>)> {
        let mut r = SegmentReader::open(path, true).unwrap();
        let mut out = Vec::new();
        while let Some(f) = r.next_frame().unwrap() {
            let values = f
                .batches
                .iter()
                .flat_map(|b| {
                    let a = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                    (0..a.len()).map(|i| a.value(i)).collect::<Vec<_>>()
                })
                .collect();
            out.push((f.meta, values));
        }
        out
    }

    #[test]
    fn frames_read_back_in_order_with_their_meta() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.log");
        let mut w = SegmentWriter::create(&path).unwrap();
        let meta = |rows, lines| FrameMeta {
            rows,
            origin: Some(Origin {
                file: "a.ndjson".to_string(),
                lines,
            }),
        };
        w.append(&[batch(&[1, 2])], &meta(2, 2)).unwrap();
        w.append(&[batch(&[3]), batch(&[4, 5])], &meta(3, 6))
            .unwrap();
        assert!(
            SegmentWriter::create(&path).is_err(),
            "never reopens a segment"
        );
        let frames = read_all(&path);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0], (meta(2, 2), vec![1, 2]));
        assert_eq!(frames[1], (meta(3, 6), vec![3, 4, 5]));
    }

    #[test]
    fn issue_15_wal_frames_over_the_read_limit_are_refused_at_write_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.log");
        let meta = FrameMeta {
            rows: 1,
            origin: None,
        };
        let one = encode_frame(&[batch(&[1])], &meta).unwrap();
        let field = one.len() as u64 - 8;
        let values: Vec<i64> = (0..10_000).collect();
        // A limit just above a one-row frame: that frame is written, a
        // 10,000-row one is refused and leaves the file as it was.
        let mut w = SegmentWriter::create(&path)
            .unwrap()
            .with_frame_limit(field + 1);
        w.append(&[batch(&[1])], &meta).unwrap();
        let before = std::fs::metadata(&path).unwrap().len();
        let e = w
            .append(
                &[batch(&values)],
                &FrameMeta {
                    rows: 10_000,
                    origin: None,
                },
            )
            .unwrap_err();
        assert!(matches!(e, WalError::FrameTooLarge { limit, .. } if limit == field + 1));
        assert!(e.to_string().contains("over the frame limit of"), "{e}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), before);
        assert_eq!(read_all(&path), vec![(meta.clone(), vec![1])]);
        // The default limit is the one the reader applies.
        let w = SegmentWriter::create(&dir.path().join("t.log")).unwrap();
        assert_eq!(w.frame_limit, u64::from(MAX_FRAME));
        // A frame exactly at the limit is refused: the reader would drop it.
        let mut w = SegmentWriter::create(&dir.path().join("u.log"))
            .unwrap()
            .with_frame_limit(field);
        assert!(matches!(
            w.append(&[batch(&[1])], &meta),
            Err(WalError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn a_torn_or_corrupt_tail_ends_the_segment_without_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.log");
        let mut w = SegmentWriter::create(&path).unwrap();
        w.append(
            &[batch(&[1])],
            &FrameMeta {
                rows: 1,
                origin: None,
            },
        )
        .unwrap();
        w.append(
            &[batch(&[2])],
            &FrameMeta {
                rows: 1,
                origin: None,
            },
        )
        .unwrap();
        let full = std::fs::read(&path).unwrap();
        let first_len = {
            let mut r = SegmentReader::open(&path, false).unwrap();
            r.next_frame().unwrap().unwrap();
            r.valid_len as usize
        };
        // Every cut inside the second frame reads as one frame.
        for cut in (first_len..full.len()).step_by(7) {
            std::fs::write(&path, &full[..cut]).unwrap();
            let frames = read_all(&path);
            assert_eq!(frames.len(), 1, "cut at {cut}");
            assert_eq!(frames[0].1, vec![1]);
        }
        // A flipped bit in the second frame fails its CRC.
        let mut bad = full.clone();
        let last = bad.len() - 3;
        bad[last] ^= 0x40;
        std::fs::write(&path, &bad).unwrap();
        assert_eq!(read_all(&path).len(), 1);
    }
}
