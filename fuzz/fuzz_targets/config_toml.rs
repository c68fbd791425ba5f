//! `driftwatch run --config FILE` / `driftwatch config check FILE`: the TOML
//! is parsed and resolved into settings (intervals, sizes, listen address,
//! globs, telemetry, webhooks, stream sources) exactly as the agent does.
#![no_main]
use driftwatch::config::{Overrides, Settings};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    driftwatch_fuzz::init();
    let path = driftwatch_fuzz::scratch_file("driftwatch.toml");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let _ = Settings::resolve(Some(&path), &Overrides::default());
});
