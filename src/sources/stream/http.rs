//! Decoding event bodies: NDJSON (`application/x-ndjson`, one JSON object
//! per line; also what NDJSON files hold) and Arrow IPC streams
//! (`application/vnd.apache.arrow.stream`). The agent's `POST
//! /ingest/{dataset}` handler (in `agent::ingest`) and the file source call
//! these; neither touches the network or the disk here.

use arrow::array::RecordBatch;

use super::{DeadLetter, EventSchema};

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
#[derive(Debug, Default)]
pub struct Decoded {
    /// The events that fit.
    pub batches: Vec<RecordBatch>,
    /// Events accepted.
    pub accepted: u64,
    /// The line number of each accepted event, in order.
    pub row_lines: Vec<u64>,
    /// The events that do not fit, with reasons.
    pub rejected: Vec<DeadLetter>,
}

/// Decodes NDJSON lines; `location` names a line number for dead letters.
pub fn decode_ndjson<'a>(
    lines: impl Iterator<Item = (u64, &'a [u8])>,
    schema: &EventSchema,
    source: &str,
    location: &dyn Fn(u64) -> String,
) -> Result<Decoded, String> {
    let mut builder = schema.builder();
    let mut out = Decoded::default();
    for (n, line) in lines {
        match builder.push_json(line) {
            Ok(()) => {
                out.accepted += 1;
                out.row_lines.push(n);
                if builder.len() >= ROWS_PER_BATCH {
                    out.batches.push(builder.finish()?);
                }
            }
            Err(reason) => out
                .rejected
                .push(DeadLetter::new(source, location(n), reason, line)),
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
        let got: Vec<(String, String, String)> = d
            .rejected
            .iter()
            .map(|l| (l.location.clone(), l.reason.clone(), l.event.clone()))
            .collect();
        assert_eq!(got[0].0, "line 3");
        assert_eq!(
            got[0].1,
            "field `x`: expected an integer (Int64), got the string \"a\""
        );
        assert_eq!(got[0].2, "{\"x\": \"a\"}");
        assert_eq!(got[1].0, "line 6");
        assert!(got[1].1.starts_with("not JSON: "), "{}", got[1].1);
        assert_eq!(d.rejected.len(), 2);
    }
}
