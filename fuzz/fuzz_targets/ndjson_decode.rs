//! `POST /ingest/{dataset}` and NDJSON files: schema inference from the
//! first events (a stream without a declared schema), then decoding against
//! the inferred schema and against a declared one with every event type.
#![no_main]
use driftwatch::sources::stream::EventSchema;
use driftwatch::sources::stream::http::{decode_ndjson, lines};
use driftwatch_fuzz::declared_schema;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    driftwatch_fuzz::init();
    let location = |n: u64| format!("line {n}");
    if let Some(schema) = EventSchema::infer(lines(data).map(|(_, l)| l)) {
        // The state folder keeps the inferred schema as JSON and reads it back
        // after a restart: it must come back the same.
        let back = EventSchema::from_json(&schema.to_json()).expect("a saved schema reads back");
        assert!(back == schema, "schema changed through its JSON form");
        if let Ok(decoded) = decode_ndjson(lines(data), &schema, "http:fuzz", &location) {
            driftwatch_fuzz::downstream(&decoded.batches, &schema);
        }
    }
    let schema = declared_schema();
    if let Ok(decoded) = decode_ndjson(lines(data), schema, "http:fuzz", &location) {
        assert_eq!(
            decoded.accepted + decoded.rejected.count(),
            lines(data).count() as u64,
            "every line is accepted or rejected"
        );
        driftwatch_fuzz::downstream(&decoded.batches, schema);
    }
});
