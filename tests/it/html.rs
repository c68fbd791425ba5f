//! Issue 9: the HTML report of `driftwatch check --format html`, parsed
//! strictly: its tables' rows and values, one chart per tested column, and no
//! external resource anywhere.

use std::process::Command;

use driftwatch::demo::{Defects, FlightsSpec, write_flights};

#[test]
fn check_writes_a_self_contained_html_report_with_tables_and_charts() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference.parquet");
    let batch = dir.path().join("batch.parquet");
    let spec = |seed, shift, defects| FlightsSpec {
        rows: 20_000,
        row_group_rows: 10_000,
        seed,
        delay_shift: shift,
        defects,
        ..FlightsSpec::default()
    };
    write_flights(&reference, &spec(1, 0, Defects::default())).unwrap();
    write_flights(
        &batch,
        &spec(
            2,
            45,
            Defects {
                bad_origin_every: Some(100),
                ..Defects::default()
            },
        ),
    )
    .unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        "dataset: flights\nchecks:\n  - not_null: carrier\n  - accepted_values: { column: origin, values: [EWR, JFK, LGA] }\n  - row_count: { min: 1 }\n\
         drift:\n  drift_share: 0.3\n  columns: [dep_delay, arr_delay, carrier, origin, distance]\n",
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_driftwatch");
    let profile = dir.path().join("reference.profile");
    let out = Command::new(bin)
        .args(["baseline", &reference.display().to_string(), "--rules"])
        .arg(&rules)
        .arg("--output")
        .arg(&profile)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html_path = dir.path().join("report.html");
    let out = Command::new(bin)
        .args(["check", &batch.display().to_string(), "--rules"])
        .arg(&rules)
        .arg("--reference")
        .arg(&profile)
        .args(["--format", "html", "--output"])
        .arg(&html_path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&html_path).unwrap();

    // Self-contained: no URL, no reference to another resource.
    for needle in ["http:", "https:", "//", "src=", "href=", "@import", "url("] {
        assert!(!text.contains(needle), "found {needle:?} in the report");
    }
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc =
        roxmltree::Document::parse_with_options(&text, options).expect("the report is well-formed");
    let by_class = |class: &str| {
        doc.descendants()
            .filter(move |n| n.attribute("class") == Some(class))
            .collect::<Vec<_>>()
    };
    let rows = |table: roxmltree::Node| -> Vec<Vec<String>> {
        table
            .descendants()
            .filter(|n| n.has_tag_name("tbody"))
            .flat_map(|b| b.children().filter(|n| n.has_tag_name("tr")))
            .map(|tr| {
                tr.children()
                    .filter(|n| n.has_tag_name("td"))
                    .map(|td| {
                        td.descendants()
                            .filter(|d| d.is_text())
                            .filter_map(|d| d.text())
                            .collect::<String>()
                    })
                    .collect()
            })
            .collect()
    };

    let summary: String = by_class("summary")[0]
        .descendants()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .collect();
    assert!(summary.starts_with("FAILED · rows: 20000"), "{summary}");
    assert!(summary.contains("dataset drift: yes"), "{summary}");

    // Checks: failures first, with their numbers.
    let checks = rows(by_class("checks")[0]);
    assert_eq!(checks.len(), 3);
    assert_eq!(checks[0][0], "accepted_values_origin");
    assert_eq!(checks[0][1], "fail");
    assert_eq!(checks[0][3], "200"); // 20000 / 100
    assert_eq!(checks[0][4], "0.01");
    assert!(checks[1..].iter().all(|r| r[1] == "pass"));

    // Drift: one row per tested column, drifted first; dep_delay drifted.
    let drift = rows(by_class("drift")[0]);
    assert_eq!(drift.len(), 5);
    let first_calm = drift
        .iter()
        .position(|r| r[5] == "no")
        .unwrap_or(drift.len());
    assert!(drift[first_calm..].iter().all(|r| r[5] == "no"));
    let dep = drift.iter().find(|r| r[0] == "dep_delay").unwrap();
    assert_eq!(dep[5], "yes");

    // One chart per tested column, each with reference and batch bars.
    let charts = by_class("chart");
    assert_eq!(charts.len(), 5);
    let mut charted: Vec<&str> = charts
        .iter()
        .filter_map(|c| c.attribute("data-column"))
        .collect();
    charted.sort();
    assert_eq!(
        charted,
        ["arr_delay", "carrier", "dep_delay", "distance", "origin"]
    );
    for chart in &charts {
        let bars = |class| {
            chart
                .descendants()
                .filter(|n| n.attribute("class") == Some(class))
                .count()
        };
        assert!(
            bars("ref") > 1 && bars("ref") == bars("cur"),
            "{:?}",
            chart.attribute("data-column")
        );
        let caption: String = chart
            .descendants()
            .filter(|n| n.has_tag_name("figcaption"))
            .flat_map(|f| {
                f.descendants()
                    .filter(|d| d.is_text())
                    .filter_map(|d| d.text())
            })
            .collect();
        assert!(
            caption.contains("grey: reference, blue: batch"),
            "{caption}"
        );
    }
    // Light and dark.
    assert!(text.contains("prefers-color-scheme: dark"));
}
