//! Apache Iceberg table files, as the table reader meets them in a table's
//! `metadata/` folder or a REST catalog's answer: metadata JSON (plain and
//! gzip-compressed) with the lineage and types derived from it, and Avro
//! manifest lists and manifests with every partition value's human form.
//! The first byte picks which; the rest is the file.
#![no_main]
use driftwatch::sources::table::iceberg::fuzz;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    driftwatch_fuzz::init();
    let Some((which, file)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => fuzz::metadata(file, false),
        1 => fuzz::metadata(file, true),
        _ => fuzz::avro(file),
    }
});
