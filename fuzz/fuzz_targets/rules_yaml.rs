//! Rule files: YAML parsing and validation, as `driftwatch rules check` and
//! every command that loads rules run them (`rules::parse_rule_file`), then
//! what the engine does with a valid file before it reads any data (the
//! stream schema a `schema` check declares, the profile request).
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    driftwatch_fuzz::init();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(rules) = driftwatch::rules::parse_rule_file(Path::new("rules/fuzz.yaml"), text) else {
        return;
    };
    let _ = driftwatch::sources::stream::rule_schema(&rules);
    let _ = driftwatch::evaluate::profile_request(rules.drift.as_ref());
    let _ = rules.matches(Path::new("fuzz/a/b.parquet"));
});
