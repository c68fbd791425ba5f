//! Decoding event bodies: NDJSON (`application/x-ndjson`, one JSON object
//! per line; also what NDJSON files hold) and Arrow IPC streams
//! (`application/vnd.apache.arrow.stream`). The agent's `POST
//! /ingest/{dataset}` handler (in `agent::ingest`) and the file source call
//! these; neither touches the network or the disk here.

use arrow::array::RecordBatch;

use super::{DEAD_LETTER_BUDGET, EventSchema, Rejects};

/// Rows per record batch built from NDJSON.
pub const ROWS_PER_BATCH: usize = 65_536;

/// The body formats `POST /ingest/{dataset}` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// One JSON object per line.
    Ndjson,
    /// An Arrow IPC stream.
    ArrowIpc,
}

/// NDJSON media types accepted (`application/json` too, for clients that
/// cannot set another type; it is still read line by line).
pub const NDJSON_TYPES: &[&str] = &[
    "application/x-ndjson",
    "application/jsonl",
    "application/json-lines",
    "application/json",
];
/// The Arrow IPC stream media type.
pub const ARROW_STREAM_TYPE: &str = "application/vnd.apache.arrow.stream";

/// The format of a `Content-Type` header value, or why it is not accepted.
pub fn format_of(content_type: Option<&str>) -> Result<BodyFormat, String> {
    let Some(ct) = content_type else {
        return Err(format!(
            "missing Content-Type: send application/x-ndjson or {ARROW_STREAM_TYPE}"
        ));
    };
    let base = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if NDJSON_TYPES.contains(&base.as_str()) {
        Ok(BodyFormat::Ndjson)
    } else if base == ARROW_STREAM_TYPE {
        Ok(BodyFormat::ArrowIpc)
    } else {
        Err(format!(
            "Content-Type `{ct}` is not accepted: send application/x-ndjson or {ARROW_STREAM_TYPE}"
        ))
    }
}

/// The non-blank lines of an NDJSON body with their 1-based line numbers
/// (a trailing `\r` is dropped).
pub fn lines(body: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    body.split(|b| *b == b'\n')
        .enumerate()
        .filter_map(|(i, l)| Some((i as u64 + 1, event_line(l)?)))
}

/// One line of NDJSON as an event: without its line ending (`\n`, `\r\n`);
/// `None` for a blank line, which is not an event.
pub fn event_line(raw: &[u8]) -> Option<&[u8]> {
    let line = raw.strip_suffix(b"\n").unwrap_or(raw);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    (!line.iter().all(u8::is_ascii_whitespace)).then_some(line)
}

/// NDJSON decoded against a schema.
#[derive(Debug)]
pub struct Decoded {
    /// The events that fit.
    pub batches: Vec<RecordBatch>,
    /// Events accepted.
    pub accepted: u64,
    /// The line number of each accepted event, in order.
    pub row_lines: Vec<u64>,
    /// The events that do not fit, with reasons (dead-letter text within
    /// [`DEAD_LETTER_BUDGET`]).
    pub rejected: Rejects,
}

/// Decodes NDJSON lines; `location` names a line number for dead letters.
pub fn decode_ndjson<'a>(
    lines: impl Iterator<Item = (u64, &'a [u8])>,
    schema: &EventSchema,
    source: &str,
    location: &dyn Fn(u64) -> String,
) -> Result<Decoded, String> {
    let mut builder = schema.builder();
    let mut out = Decoded {
        batches: Vec::new(),
        accepted: 0,
        row_lines: Vec::new(),
        rejected: Rejects::new(source, DEAD_LETTER_BUDGET),
    };
    for (n, line) in lines {
        match builder.push_json(line) {
            Ok(()) => {
                out.rejected.saw(line.len());
                out.accepted += 1;
                out.row_lines.push(n);
                if builder.len() >= ROWS_PER_BATCH {
                    out.batches.push(builder.finish()?);
                }
            }
            Err(reason) => out.rejected.push(location(n), reason, line),
        }
    }
    if !builder.is_empty() {
        out.batches.push(builder.finish()?);
    }
    Ok(out)
}

/// Reads an Arrow IPC stream body. With a schema, every batch must
/// conform to it (by column name and exact type); without one, the
/// stream's own schema is returned to be adopted.
pub fn decode_ipc(
    body: &[u8],
    schema: Option<&EventSchema>,
) -> Result<(Vec<RecordBatch>, EventSchema), String> {
    // arrow-ipc panics on some malformed messages (`unimplemented!` for an
    // unknown type tag, bit widths it does not support): a client's bytes must
    // get a 400, not take down the request's task (found by fuzzing, issue 15).
    std::panic::catch_unwind(|| read_ipc(body, schema)).unwrap_or_else(|panic| {
        Err(format!(
            "not an Arrow IPC stream: the decoder failed: {}",
            panic_message(panic.as_ref())
        ))
    })
}

/// The text of a caught panic's payload (what `panic!` was given).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic")
        .to_string()
}

fn read_ipc(
    body: &[u8],
    schema: Option<&EventSchema>,
) -> Result<(Vec<RecordBatch>, EventSchema), String> {
    check_ipc_framing(body)?;
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)
        .map_err(|e| format!("not an Arrow IPC stream: {e}"))?;
    let schema = match schema {
        Some(s) => s.clone(),
        None => EventSchema::from_arrow(&reader.schema())?,
    };
    let mut batches = Vec::new();
    for (i, b) in reader.enumerate() {
        let b = b.map_err(|e| format!("record batch {i}: {e}"))?;
        batches.push(
            schema
                .conform(&b)
                .map_err(|e| format!("record batch {i}: {e}"))?,
        );
    }
    Ok((batches, schema))
}

/// Walks an Arrow IPC stream's framing before any of it is decoded: every
/// message's metadata must be a valid flatbuffer inside the body, and every
/// message body it announces must lie inside the body too.
///
/// Why: the IPC reader allocates a message's `bodyLength` before reading
/// it, so a few hundred bytes claiming a 2^62-byte body abort the process.
/// A record batch's row count is bounded by its body's bits as well (every
/// column type a stream accepts takes at least one bit per row), so a tiny
/// body cannot claim billions of rows that later steps would materialize.
pub fn check_ipc_framing(body: &[u8]) -> Result<(), String> {
    let word = |at: usize| -> Option<i32> {
        let bytes: [u8; 4] = body.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(i32::from_le_bytes(bytes))
    };
    let mut pos = 0usize;
    let mut index = 0usize;
    while pos < body.len() {
        let Some(mut len) = word(pos) else {
            return Err(format!(
                "not an Arrow IPC stream: {} stray bytes at offset {pos}",
                body.len() - pos
            ));
        };
        pos += 4;
        // 0xFFFFFFFF is the continuation marker of the current format; the
        // length follows it. Older writers put the length first.
        if len == -1 {
            len = word(pos).ok_or_else(|| {
                format!("not an Arrow IPC stream: message {index} is cut off at offset {pos}")
            })?;
            pos += 4;
        }
        if len == 0 {
            return Ok(()); // end-of-stream marker
        }
        let remaining = body.len() - pos;
        let len = usize::try_from(len)
            .ok()
            .filter(|l| *l <= remaining)
            .ok_or_else(|| {
                format!(
                    "not an Arrow IPC stream: message {index} claims {len} bytes of metadata, {remaining} remain"
                )
            })?;
        let message = arrow_ipc::root_as_message(&body[pos..pos + len])
            .map_err(|e| format!("not an Arrow IPC stream: message {index}: {e}"))?;
        pos += len;
        let remaining = body.len() - pos;
        let body_len = usize::try_from(message.bodyLength())
            .ok()
            .filter(|l| *l <= remaining)
            .ok_or_else(|| {
                format!(
                    "not an Arrow IPC stream: message {index} claims a {}-byte body, {remaining} bytes remain",
                    message.bodyLength()
                )
            })?;
        let batch = message
            .header_as_record_batch()
            .or_else(|| message.header_as_dictionary_batch().and_then(|d| d.data()));
        // Compressed buffers announce their uncompressed size, which the
        // reader allocates before decompressing: a few bytes could claim
        // terabytes. Streams of events have no need for it.
        if batch.is_some_and(|b| b.compression().is_some()) {
            return Err(format!(
                "not accepted: message {index} has compressed buffers (send the Arrow IPC stream uncompressed)"
            ));
        }
        let rows = batch.map(|b| b.length());
        if let Some(rows) = rows {
            let bound = (body_len as i64).saturating_mul(8);
            if !(0..=bound).contains(&rows) {
                return Err(format!(
                    "not an Arrow IPC stream: message {index} claims {rows} rows in a {body_len}-byte body"
                ));
            }
        }
        pos += body_len;
        index += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::LogicalType;

    #[test]
    fn issue_15_fuzz_ipc_malformed_schema_is_an_error() {
        // A schema message with a field missing its type (minimized from a
        // fuzzer crash): arrow-ipc's `unwrap`/`unimplemented!` in its schema
        // conversion used to take down the ingest request's task.
        let body = include_bytes!("../../../fuzz/corpus/ipc_decode/crash-ipc-malformed-schema");
        let want = "not an Arrow IPC stream: the decoder failed: called `Option::unwrap()` on a `None` value";
        assert_eq!(decode_ipc(body, None).unwrap_err(), want);
        let held = EventSchema::from_rule(&[("x".to_string(), LogicalType::Int64)]).unwrap();
        assert_eq!(decode_ipc(body, Some(&held)).unwrap_err(), want);
    }

    #[test]
    fn content_types() {
        assert_eq!(
            format_of(Some("application/x-ndjson; charset=utf-8")),
            Ok(BodyFormat::Ndjson)
        );
        assert_eq!(format_of(Some(ARROW_STREAM_TYPE)), Ok(BodyFormat::ArrowIpc));
        assert!(
            format_of(Some("text/csv"))
                .unwrap_err()
                .contains("`text/csv`")
        );
        assert!(
            format_of(None)
                .unwrap_err()
                .starts_with("missing Content-Type")
        );
    }

    #[test]
    fn ndjson_lines_are_numbered_blank_lines_skipped_and_bad_ones_kept_with_reasons() {
        let schema = EventSchema::from_rule(&[("x".to_string(), LogicalType::Int64)]).unwrap();
        let body = b"{\"x\": 1}\r\n\n{\"x\": \"a\"}\n   \n{\"x\": 3}\nnope";
        let d = decode_ndjson(lines(body), &schema, "http:t", &|n| format!("line {n}")).unwrap();
        assert_eq!(d.accepted, 2);
        assert_eq!(d.batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
        let got: Vec<(String, String, String)> = String::from_utf8(d.rejected.text())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<crate::sources::stream::DeadLetter>(l).unwrap())
            .map(|l| (l.location, l.reason, l.event))
            .collect();
        assert_eq!(got[0].0, "line 3");
        assert_eq!(
            got[0].1,
            "field `x`: expected an integer (Int64), got the string \"a\""
        );
        assert_eq!(got[0].2, "{\"x\": \"a\"}");
        assert_eq!(got[1].0, "line 6");
        assert!(got[1].1.starts_with("not JSON: "), "{}", got[1].1);
        assert_eq!(d.rejected.count(), 2);
        assert_eq!(got.len(), 2);
    }

    /// A one-batch IPC stream of `x: Int64` = 1..=n.
    fn ipc_stream(n: i64) -> Vec<u8> {
        use std::sync::Arc;
        let batch = RecordBatch::try_from_iter([(
            "x",
            Arc::new(arrow::array::Int64Array::from_iter_values(1..=n)) as arrow::array::ArrayRef,
        )])
        .unwrap();
        let mut out = Vec::new();
        let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut out, &batch.schema()).unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
        drop(w);
        out
    }

    /// Rewrites the record batch's `bodyLength` (found as its 8 little-endian
    /// bytes in the message metadata) to `claimed`.
    fn patch_body_length(stream: &mut [u8], claimed: i64) {
        let mut pos = 0;
        loop {
            assert_eq!(&stream[pos..pos + 4], &[0xff; 4]);
            let len = i32::from_le_bytes(stream[pos + 4..pos + 8].try_into().unwrap()) as usize;
            let meta = pos + 8..pos + 8 + len;
            let message = arrow_ipc::root_as_message(&stream[meta.clone()]).unwrap();
            let body = message.bodyLength();
            if message.header_as_record_batch().is_some() {
                let needle = body.to_le_bytes();
                let at = stream[meta.clone()]
                    .windows(8)
                    .position(|w| w == needle)
                    .unwrap();
                stream[meta.start + at..meta.start + at + 8]
                    .copy_from_slice(&claimed.to_le_bytes());
                return;
            }
            pos = meta.end + body as usize;
        }
    }

    #[test]
    fn issue_15_an_ipc_body_claiming_a_huge_message_body_is_refused_before_any_allocation() {
        let good = ipc_stream(3);
        assert_eq!(check_ipc_framing(&good), Ok(()));
        let (batches, _) = decode_ipc(&good, None).unwrap();
        assert_eq!(batches[0].num_rows(), 3);
        let mut bad = good.clone();
        patch_body_length(&mut bad, 1 << 62);
        let e = decode_ipc(&bad, None).unwrap_err();
        assert!(
            e.starts_with(
                "not an Arrow IPC stream: message 1 claims a 4611686018427387904-byte body,"
            ),
            "{e}"
        );
        let mut negative = good.clone();
        patch_body_length(&mut negative, -8);
        assert!(
            decode_ipc(&negative, None)
                .unwrap_err()
                .contains("claims a -8-byte body")
        );
    }

    #[test]
    fn issue_15_compressed_ipc_buffers_are_refused_before_their_claimed_size_is_allocated() {
        use std::sync::Arc;
        let batch = RecordBatch::try_from_iter([(
            "x",
            Arc::new(arrow::array::Int64Array::from_iter_values(1..=100)) as arrow::array::ArrayRef,
        )])
        .unwrap();
        let mut out = Vec::new();
        let options = arrow_ipc::writer::IpcWriteOptions::default()
            .try_with_compression(Some(arrow_ipc::CompressionType::LZ4_FRAME))
            .unwrap();
        let mut w = arrow_ipc::writer::StreamWriter::try_new_with_options(
            &mut out,
            &batch.schema(),
            options,
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
        drop(w);
        assert_eq!(
            decode_ipc(&out, None).unwrap_err(),
            "not accepted: message 1 has compressed buffers (send the Arrow IPC stream uncompressed)"
        );
    }

    #[test]
    fn issue_15_ipc_framing_refuses_cut_and_oversized_metadata() {
        let good = ipc_stream(3);
        // Cut anywhere: an error or a shorter valid prefix, never a panic.
        for cut in 0..good.len() {
            let _ = decode_ipc(&good[..cut], None);
        }
        let mut huge_meta = good.clone();
        huge_meta[4..8].copy_from_slice(&i32::MAX.to_le_bytes());
        assert_eq!(
            check_ipc_framing(&huge_meta).unwrap_err(),
            format!(
                "not an Arrow IPC stream: message 0 claims {} bytes of metadata, {} remain",
                i32::MAX,
                good.len() - 8
            )
        );
    }
}
