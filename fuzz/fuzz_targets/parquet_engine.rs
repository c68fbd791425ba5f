//! The Parquet read path end to end: a mutated file evaluated by the engine
//! (`Engine::evaluate_with_profiles`: one DataFusion scan with every check
//! family and the profiler) must give a report — with `error` set for a
//! corrupt file — and never panic or abort.
#![no_main]
use driftwatch::engine::{Engine, EngineOptions, ProfileRequest};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        Engine::new(&EngineOptions {
            memory_limit: Some(256 << 20),
            target_partitions: Some(1),
            ..EngineOptions::default()
        })
        .expect("an engine")
    })
}

fuzz_target!(|data: &[u8]| {
    driftwatch_fuzz::init();
    let path = driftwatch_fuzz::scratch_file("batch.parquet");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let rules = driftwatch_fuzz::engine_rules();
    let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("a valid time");
    let _ = driftwatch_fuzz::runtime().block_on(engine().evaluate_with_profiles(
        &path,
        "fuzz/batch.parquet",
        rules,
        now,
        &ProfileRequest::AllSupported,
    ));
});
