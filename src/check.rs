//! The one-shot `driftwatch check`: every input against every rule file that
//! applies to it, one scan per (input, rule file), into one [`Report`].

use chrono::{DateTime, Utc};

use crate::engine::Engine;
use crate::inputs::{self, Input};
use crate::report::Report;
use crate::rules::RuleFile;

/// Evaluates `inputs` against `rules` (see [`inputs::assign`] for `single`).
pub async fn run_check(
    engine: &Engine,
    inputs: &[Input],
    rules: &[RuleFile],
    single: bool,
    now: DateTime<Utc>,
) -> Report {
    let (pairs, unmatched) = inputs::assign(inputs, rules, single);
    let mut reports = Vec::with_capacity(pairs.len());
    for (input, rule_index) in pairs {
        let rule_file = &rules[rule_index];
        reports.push(
            engine
                .evaluate(&input.path, &input.display(), rule_file, now)
                .await,
        );
    }
    Report::new(reports, unmatched.iter().map(|i| i.display()).collect())
}
