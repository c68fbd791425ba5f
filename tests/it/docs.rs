//! The documentation's examples are real: they parse and match the code.

use std::path::Path;

use driftwatch::demo::DEMO_RULES;
use driftwatch::rules::load_rules;

use crate::common::{NOW, driftwatch, fixture};

#[test]
fn shipped_example_rules_are_the_demo_rules_and_valid() {
    let shipped = std::fs::read_to_string("rules/flights.yaml").unwrap();
    assert_eq!(
        shipped, DEMO_RULES,
        "rules/flights.yaml must stay equal to the demo's rules"
    );
    let files = load_rules(Path::new("rules")).unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].checks.len(), 13);
}

fn keys(value: &serde_json::Value) -> Vec<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn report_doc_example_has_the_shape_of_a_real_report() {
    let doc = std::fs::read_to_string("docs/report.md").unwrap();
    let start = doc.find("```json\n").unwrap() + "```json\n".len();
    let end = start + doc[start..].find("\n```").unwrap();
    let example: serde_json::Value = serde_json::from_str(&doc[start..end]).unwrap();

    let f = fixture();
    let rules = f.dir.path().join("rules.yaml");
    std::fs::write(&rules, "dataset: t\nchecks:\n  - not_null: id\n").unwrap();
    let out = driftwatch(&[
        "check",
        f.data.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
        "--format",
        "json",
        "--now",
        NOW,
    ]);
    let real: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(keys(&example), keys(&real));
    assert_eq!(example["version"], real["version"]);
    assert_eq!(keys(&example["reports"][0]), keys(&real["reports"][0]));
    for check in example["reports"][0]["checks"].as_array().unwrap() {
        assert_eq!(keys(check), keys(&real["reports"][0]["checks"][0]));
    }
    // The example's drift section has the keys the code writes.
    let drift = &example["reports"][0]["drift"];
    assert_eq!(
        keys(drift),
        [
            "reference",
            "dataset_drift",
            "drifted_share",
            "drift_share_threshold",
            "correction",
            "severity",
            "error",
            "message",
            "columns",
            "not_tested"
        ]
    );
    for column in drift["columns"].as_array().unwrap() {
        assert_eq!(
            keys(column),
            [
                "column",
                "type",
                "test",
                "statistic",
                "p_value",
                "p_value_adjusted",
                "threshold",
                "drifted",
                "message",
                "path",
                "skipped",
                "effect",
                "unit"
            ]
        );
    }
}

#[test]
fn telemetry_doc_lists_every_instrument_as_the_code_defines_it() {
    use driftwatch::sinks::telemetry::names::INSTRUMENTS;
    let doc = std::fs::read_to_string("docs/telemetry.md").unwrap();
    for i in INSTRUMENTS {
        let attributes = if i.attributes.is_empty() {
            "—".to_string()
        } else {
            i.attributes
                .iter()
                .map(|a| format!("`{a}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let row = format!(
            "| `{}` | `{}` | {} | `{}` | {} | {} |",
            i.name,
            i.prometheus_name(),
            i.kind.name(),
            i.unit,
            attributes,
            i.description
        );
        assert!(doc.contains(&row), "docs/telemetry.md lacks the row\n{row}");
    }
    let rows = doc
        .lines()
        .filter(|l| l.starts_with("| `driftwatch."))
        .count();
    assert_eq!(rows, INSTRUMENTS.len(), "no undocumented or stale rows");
}

#[test]
fn observability_examples_use_only_metrics_the_agent_exports() {
    use driftwatch::sinks::telemetry::names::{INSTRUMENTS, Kind};
    let mut known: Vec<String> = Vec::new();
    for i in INSTRUMENTS {
        let name = i.prometheus_name();
        if i.kind == Kind::Histogram {
            for suffix in ["_bucket", "_sum", "_count"] {
                known.push(format!("{name}{suffix}"));
            }
        }
        known.push(name);
    }
    let files = [
        "examples/observability/prometheus/alerts.yml",
        "examples/observability/grafana/driftwatch-dashboard.json",
    ];
    let token = regex::Regex::new(r"driftwatch_[a-z_]+").unwrap();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap();
        let used: Vec<&str> = token.find_iter(&text).map(|m| m.as_str()).collect();
        assert!(!used.is_empty(), "{file} uses no driftwatch metric");
        for name in used {
            assert!(
                known.iter().any(|k| k == name),
                "{file} uses `{name}`, which the agent does not export"
            );
        }
    }
    // The dashboard is valid JSON with one query per target.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string("examples/observability/grafana/driftwatch-dashboard.json")
            .unwrap(),
    )
    .unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            assert!(target["expr"].as_str().is_some_and(|e| !e.is_empty()));
        }
    }
}
