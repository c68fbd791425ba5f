//! Profile / baseline files, as `check --reference FILE` and a rule file's
//! `drift.reference` load them (`DatasetProfile::read`), then compared with
//! a current profile by every drift test (the test chosen per column).
#![no_main]
use std::path::Path;

use driftwatch::drift::TestKind;
use driftwatch::drift::compare::compare;
use driftwatch::profile::DatasetProfile;
use driftwatch::rules::DriftConfig;
use libfuzzer_sys::fuzz_target;

const TESTS: [Option<TestKind>; 15] = [
    None,
    Some(TestKind::Ks),
    Some(TestKind::Chisquare),
    Some(TestKind::Z),
    Some(TestKind::Wasserstein),
    Some(TestKind::Psi),
    Some(TestKind::Jensenshannon),
    Some(TestKind::KlDiv),
    Some(TestKind::Hellinger),
    Some(TestKind::Tvd),
    Some(TestKind::Anderson),
    Some(TestKind::CramerVonMises),
    Some(TestKind::Mannw),
    Some(TestKind::Energy),
    Some(TestKind::TTest),
];

fuzz_target!(|data: &[u8]| {
    driftwatch_fuzz::init();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.profile");
    let Ok(profile) = DatasetProfile::from_json(path, text) else {
        return;
    };
    // The input's length picks the test, so every test sees every shape.
    let test = TESTS[data.len() % TESTS.len()];
    let mut config = DriftConfig::defaults(Path::new("fuzz.yaml"));
    for column in profile.columns.keys() {
        config.overrides.insert(column.clone(), (test, None));
    }
    let _ = compare("fuzz.profile", &profile, &profile, &config);
    let current = driftwatch_fuzz::current_profile();
    let _ = compare("fuzz.profile", &profile, current, &config);
    let _ = compare("fuzz.profile", current, &profile, &config);
});
