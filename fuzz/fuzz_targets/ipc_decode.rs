//! `POST /ingest/{dataset}` with an Arrow IPC body: the decoder with no held
//! schema (the stream's own is adopted) and with one (every batch must
//! conform). Whatever it accepts then goes where the agent sends it: into a
//! WAL frame (IPC again, read back at recovery) and a window's Parquet file.
#![no_main]
use driftwatch::sources::stream::http::decode_ipc;
use driftwatch_fuzz::declared_schema;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    driftwatch_fuzz::init();
    if let Ok((batches, schema)) = decode_ipc(data, None) {
        driftwatch_fuzz::downstream(&batches, &schema);
    }
    if let Ok((batches, schema)) = decode_ipc(data, Some(declared_schema())) {
        driftwatch_fuzz::downstream(&batches, &schema);
    }
});
