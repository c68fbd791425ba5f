//! The parquet crate's footer and page decoding in memory (fast: no
//! DataFusion plan), behind the Thrift guard as the engine and the lake
//! watcher use it: metadata with page indexes, then every row group read as
//! Arrow.
//! The parquet crate panics on some corrupt files (see docs/fuzzing.md); the
//! engine contains those panics (`Engine::evaluate_batch`), so here they are
//! caught too: what this target reports is aborts, OOMs and hangs.
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataReader};

fuzz_target!(|data: &[u8]| {
    driftwatch_fuzz::init();
    // As the engine and the lake watcher do: the Thrift guard first (the
    // parquet crate alone spins for minutes on some 2 KB files; see
    // src/engine/guard.rs). What it refuses is not read further.
    let path = driftwatch_fuzz::scratch_file("read.parquet");
    if std::fs::write(&path, data).is_err() || driftwatch::engine::guard::check_file(&path).is_err()
    {
        return;
    }
    let bytes = Bytes::copy_from_slice(data);
    let _ = std::panic::catch_unwind(|| read(bytes));
});

fn read(bytes: Bytes) {
    let _ = ParquetMetaDataReader::new()
        .with_page_index_policy(PageIndexPolicy::Optional)
        .parse_and_finish(&bytes);
    let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
    let Ok(builder) = ParquetRecordBatchReaderBuilder::try_new_with_options(bytes, options) else {
        return;
    };
    let Ok(reader) = builder.with_batch_size(1024).build() else {
        return;
    };
    for batch in reader {
        if batch.is_err() {
            break;
        }
    }
}
