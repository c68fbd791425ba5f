//! `driftwatch baseline`: column profiles built in the same scan as the
//! checks, merged across batches, written as a versioned profile file.

use std::path::Path;

use driftwatch::engine::{Engine, EngineOptions, ProfileRequest};
use driftwatch::profile::{ColumnKind, DatasetProfile};
use driftwatch::rules::parse_rule_file;

use crate::common::{driftwatch, fixture, table, text, write_parquet};

#[test]
fn baseline_profiles_every_supported_column_exactly() {
    let f = fixture();
    let rules = f.dir.path().join("rules.yaml");
    std::fs::write(&rules, "dataset: t\nchecks:\n  - not_null: id\n").unwrap();
    let output = f.dir.path().join("t.profile");
    let out = driftwatch(&[
        "baseline",
        f.data.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with(&format!(
        "wrote {}: dataset t, 10 rows from 1 batch(es), 8 column(s)",
        output.display()
    )));
    let p = DatasetProfile::read(&output).unwrap();
    assert_eq!(
        (p.format.as_str(), p.version, p.rows),
        ("driftwatch-profile", 2, 10)
    );
    // Numbers, strings, dictionaries and (issue 17) timestamps are profiled.
    let names: Vec<&str> = p.columns.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "city", "code", "id", "local_ts", "my col", "name", "score", "ts"
        ]
    );
    // Timestamps on their epoch scale: seconds since 1970-01-01T00:00:00Z.
    let ts = p.columns["ts"].numeric.as_ref().unwrap();
    assert_eq!(
        (ts.min, ts.max, ts.moments.n),
        (Some(1_714_348_800.0), Some(1_714_521_600.0), 9)
    );

    let id = &p.columns["id"];
    assert_eq!((id.kind, id.count, id.nulls), (ColumnKind::Numeric, 10, 1));
    let s = id.numeric.as_ref().unwrap();
    assert_eq!(
        s.exact_values.as_deref(),
        Some(&[1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 6.0, 8.0, 9.0][..])
    );
    assert_eq!((s.min, s.max, s.moments.n), (Some(1.0), Some(9.0), 9));
    assert_eq!(s.moments.mean, 43.0 / 9.0);
    assert_eq!(id.distinct.estimate().round(), 8.0);

    let score = p.columns["score"].numeric.as_ref().unwrap();
    assert_eq!((score.nan, score.pos_inf, score.neg_inf), (1, 1, 1));
    assert_eq!(
        score.exact_values.as_deref(),
        Some(&[0.0, 1.5, 2.5, 3.0, 4.0, 5.0][..])
    );

    let code = &p.columns["code"];
    assert_eq!(
        (code.kind, code.nulls, code.data_type.as_str()),
        (ColumnKind::Categorical, 1, "utf8")
    );
    let items: Vec<(&str, u64)> = code
        .frequencies
        .items
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(items, [("A", 5), ("B", 3), ("C", 1)]);
    let city: Vec<(&str, u64)> = p.columns["city"]
        .frequencies
        .items
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(city, [("Paris", 5), ("Zürich", 2), ("東京", 2)]);
}

#[test]
fn baseline_merges_batches_deterministically_and_refuses_bad_input() {
    let f = fixture();
    let second = f.dir.path().join("more.parquet");
    write_parquet(&second, &table(), 7);
    let rules = f.dir.path().join("rules.yaml");
    std::fs::write(&rules, "dataset: t\nchecks: []\n").unwrap();
    let run = |output: &Path, inputs: &[&Path]| {
        let mut args: Vec<String> = vec!["baseline".into()];
        args.extend(inputs.iter().map(|p| p.display().to_string()));
        args.extend([
            "--rules".into(),
            rules.display().to_string(),
            "--output".into(),
            output.display().to_string(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        driftwatch(&args)
    };
    let a = f.dir.path().join("a.profile");
    let b = f.dir.path().join("b.profile");
    assert_eq!(run(&a, &[&f.data, &second]).status.code(), Some(0));
    assert_eq!(run(&b, &[&f.data, &second]).status.code(), Some(0));
    assert_eq!(
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        "same input, same profile"
    );
    let p = DatasetProfile::read(&a).unwrap();
    assert_eq!(p.rows, 20);
    assert_eq!(p.sources.len(), 2);
    let code = &p.columns["code"];
    assert_eq!(
        (code.count, code.nulls, code.frequencies.items["A"]),
        (20, 2, 10)
    );
    assert_eq!(
        p.columns["id"]
            .numeric
            .as_ref()
            .unwrap()
            .exact_values
            .as_ref()
            .unwrap()
            .len(),
        18
    );

    // A corrupt batch: exit 2, nothing written.
    let bytes = std::fs::read(&second).unwrap();
    let broken = f.dir.path().join("broken.parquet");
    std::fs::write(&broken, &bytes[..bytes.len() / 3]).unwrap();
    let c = f.dir.path().join("c.profile");
    let out = run(&c, &[&f.data, &broken]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("cannot read Parquet input"),
        "{}",
        text(&out.stderr)
    );
    assert!(!c.exists());
}

#[tokio::test]
async fn profiles_share_the_checks_single_scan() {
    let f = fixture();
    let rules = parse_rule_file(
        Path::new("rules.yaml"),
        "dataset: t\nchecks:\n  - not_null: id\n  - unique: id\n  - range: { column: score, min: 0 }\n",
    )
    .unwrap();
    let engine = Engine::new(&EngineOptions::default()).unwrap();
    let plan = engine
        .explain(&f.data, &rules, &ProfileRequest::AllSupported)
        .await
        .unwrap();
    assert_eq!(plan.matches("DataSourceExec").count(), 1, "{plan}");
    assert!(plan.contains("driftwatch_profile_numeric"), "{plan}");
    let aggregates = plan.lines().filter(|l| l.contains("AggregateExec")).count();
    assert!(aggregates == 1 || aggregates == 2, "{plan}");
}

#[test]
fn several_datasets_write_one_profile_each_into_a_folder() {
    let f = fixture();
    let data = f.dir.path().join("data");
    std::fs::create_dir_all(data.join("a")).unwrap();
    std::fs::create_dir_all(data.join("b")).unwrap();
    write_parquet(&data.join("a/1.parquet"), &table(), 5);
    write_parquet(&data.join("b/1.parquet"), &table(), 5);
    let rules = f.dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("a.yaml"),
        "dataset: alpha\nmatch: \"a/*.parquet\"\n",
    )
    .unwrap();
    std::fs::write(
        rules.join("b.yaml"),
        "dataset: beta\nmatch: \"b/*.parquet\"\n",
    )
    .unwrap();
    let out_dir = f.dir.path().join("profiles");
    let out = driftwatch(&[
        "baseline",
        data.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
        "--output",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for name in ["alpha", "beta"] {
        let p = DatasetProfile::read(&out_dir.join(format!("{name}.profile"))).unwrap();
        assert_eq!((p.dataset.as_str(), p.rows), (name, 10));
    }
}
