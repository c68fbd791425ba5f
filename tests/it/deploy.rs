//! Issue 20: how driftwatch is deployed and wired into CI, each tried for
//! real — `check --format junit|github` parsed strictly, completions and man
//! pages, `--version`, the container `HEALTHCHECK` probe, the systemd unit
//! (`systemd-analyze verify`), the Kubernetes manifests (validated offline
//! against the API schemas, the rendered pod spec checked), and the
//! container image built and run (when this machine runs containers).
//!
//! Tools these tests need are installed by `.ci/run`; a test whose tool is
//! missing on a developer's machine prints why it did not run and passes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::agent::{Agent, Lake, RULES, http_get, wait_for};
use crate::common::{driftwatch, fixture, text};

/// Rule file for the CI-format tests: line 3 fails (error severity), lines
/// 4–5 fail as a warning, line 6 passes, line 7 cannot be evaluated.
const CI_RULES: &str = "dataset: t
checks:
  - not_null: name
  - not_null: code
    severity: warn
  - row_count: { min: 1 }
  - range: { column: no_such_column, min: 0 }
";

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

// ---------------------------------------------------------------------------
// JUnit XML

/// The structure of the JUnit XML schema CI reporters read (the Jenkins
/// xUnit `junit-10.xsd` that GitLab, Jenkins, Azure DevOps and the GitHub
/// test-report actions accept): which elements may appear where, in which
/// order, with which attributes, and which attributes are required and
/// numeric. Panics naming the first violation.
fn validate_junit_structure(doc: &roxmltree::Document<'_>) {
    fn attributes(node: roxmltree::Node<'_, '_>, allowed: &[&str], required: &[&str]) {
        for a in node.attributes() {
            assert!(
                allowed.contains(&a.name()),
                "<{}> has attribute {} the schema does not allow",
                node.tag_name().name(),
                a.name()
            );
        }
        for r in required {
            assert!(
                node.attribute(*r).is_some(),
                "<{}> lacks required attribute {r}",
                node.tag_name().name()
            );
        }
        for numeric in ["tests", "failures", "errors", "skipped", "disabled", "id"] {
            if let Some(v) = node.attribute(numeric) {
                assert!(v.parse::<u64>().is_ok(), "{numeric}={v:?} is not a count");
            }
        }
    }
    fn elements<'a, 'input>(node: roxmltree::Node<'a, 'input>) -> Vec<roxmltree::Node<'a, 'input>> {
        for child in node.children() {
            assert!(
                child.is_element() || child.text().is_none_or(|t| t.trim().is_empty()),
                "<{}> has text outside an element",
                node.tag_name().name()
            );
        }
        node.children().filter(|c| c.is_element()).collect()
    }
    /// Children in the schema's sequence order, each name at most `max` times.
    fn sequence(children: &[roxmltree::Node<'_, '_>], order: &[(&str, usize)]) {
        let mut at = 0;
        let mut seen = 0;
        for child in children {
            let name = child.tag_name().name();
            while at < order.len() && order[at].0 != name {
                at += 1;
                seen = 0;
            }
            assert!(
                at < order.len(),
                "<{name}> is out of order or not allowed here"
            );
            seen += 1;
            assert!(seen <= order[at].1, "<{name}> appears too often");
        }
    }
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    attributes(
        root,
        &[
            "name", "time", "tests", "failures", "errors", "skipped", "disabled",
        ],
        &[],
    );
    let suites = elements(root);
    sequence(&suites, &[("testsuite", usize::MAX)]);
    for suite in suites {
        attributes(
            suite,
            &[
                "name",
                "tests",
                "failures",
                "errors",
                "time",
                "disabled",
                "skipped",
                "timestamp",
                "hostname",
                "id",
                "package",
                "file",
                "log",
                "url",
                "version",
            ],
            &["name", "tests"],
        );
        let children = elements(suite);
        sequence(
            &children,
            &[
                ("properties", 1),
                ("testcase", usize::MAX),
                ("system-out", 1),
                ("system-err", 1),
            ],
        );
        for child in children {
            match child.tag_name().name() {
                "properties" => {
                    for p in elements(child) {
                        assert_eq!(p.tag_name().name(), "property");
                        attributes(p, &["name", "value"], &["name", "value"]);
                    }
                }
                "testcase" => {
                    attributes(
                        child,
                        &[
                            "name",
                            "assertions",
                            "time",
                            "classname",
                            "status",
                            "file",
                            "line",
                        ],
                        &["name"],
                    );
                    let parts = elements(child);
                    sequence(
                        &parts,
                        &[
                            ("skipped", 1),
                            ("error", usize::MAX),
                            ("failure", usize::MAX),
                            ("system-out", usize::MAX),
                            ("system-err", usize::MAX),
                        ],
                    );
                    for part in parts {
                        match part.tag_name().name() {
                            "skipped" | "error" | "failure" => {
                                attributes(part, &["message", "type"], &[])
                            }
                            _ => attributes(part, &[], &[]),
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// Counts of `<testcase>`s, and of those holding a failure, error, skipped.
fn counted(node: roxmltree::Node<'_, '_>) -> [usize; 4] {
    let cases: Vec<_> = node
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    let with = |tag: &str| {
        cases
            .iter()
            .filter(|c| c.children().any(|n| n.has_tag_name(tag)))
            .count()
    };
    [cases.len(), with("failure"), with("error"), with("skipped")]
}

fn declared(node: roxmltree::Node<'_, '_>) -> [usize; 4] {
    ["tests", "failures", "errors", "skipped"]
        .map(|a| node.attribute(a).unwrap().parse::<usize>().unwrap())
}

#[test]
fn issue_20_junit_is_strict_xml_whose_counts_equal_the_report() {
    let f = fixture();
    let dir = f.dir.path();
    std::fs::copy(&f.data, dir.join("second.parquet")).unwrap();
    write(&dir.join("broken.parquet"), "not parquet at all");
    let rules = write(&dir.join("rules.yaml"), CI_RULES);
    let run = |format: &str| -> Output {
        driftwatch(&[
            "check",
            arg(&f.data),
            arg(&dir.join("second.parquet")),
            arg(&dir.join("broken.parquet")),
            "--rules",
            arg(&rules),
            "--format",
            format,
        ])
    };
    let json = run("json");
    let junit = run("junit");
    // The same verdict, so a CI step gates on the same exit code.
    assert_eq!(json.status.code(), Some(2), "{}", text(&json.stderr));
    assert_eq!(junit.status.code(), Some(2), "{}", text(&junit.stderr));
    let report: Value = serde_json::from_slice(&json.stdout).unwrap();
    let xml = text(&junit.stdout);
    let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    validate_junit_structure(&doc);

    // What the report says, counted from its JSON form: a case per check
    // per batch, one for a batch that could not be read; failures are
    // failing error-severity checks, errors checks that could not run and
    // unreadable batches.
    let reports = report["reports"].as_array().unwrap();
    let mut expected = [0usize; 4];
    for r in reports {
        let checks = r["checks"].as_array().unwrap();
        expected[0] += checks.len() + usize::from(!r["error"].is_null());
        expected[1] += checks
            .iter()
            .filter(|c| c["status"] == "fail" && c["severity"] == "error")
            .count();
        expected[2] += checks.iter().filter(|c| c["status"] == "error").count()
            + usize::from(!r["error"].is_null());
    }
    assert_eq!(expected, [9, 2, 3, 0], "{report:#}");
    let root = doc.root_element();
    assert_eq!(declared(root), expected);
    assert_eq!(counted(root), expected);
    let suites: Vec<_> = root.children().filter(|n| n.is_element()).collect();
    assert_eq!(suites.len(), reports.len());
    for (suite, r) in suites.iter().zip(reports) {
        assert_eq!(declared(*suite), counted(*suite));
        assert_eq!(suite.attribute("name"), r["source"].as_str());
    }

    // The failing case carries the check's message; the warning passes
    // with its message in system-out.
    let case = |suite: usize, name: &str| {
        suites[suite]
            .children()
            .find(|n| n.has_tag_name("testcase") && n.attribute("name") == Some(name))
            .unwrap_or_else(|| panic!("no test case {name}"))
    };
    let message = |name: &str| {
        reports[0]["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()["message"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let failure = case(0, "not_null_name")
        .children()
        .find(|n| n.has_tag_name("failure"))
        .unwrap();
    assert_eq!(
        failure.attribute("message"),
        Some(message("not_null_name").as_str())
    );
    assert_eq!(failure.attribute("type"), Some("not_null"));
    assert!(failure.text().unwrap().contains("failing rows: 1 of 10"));
    let warning = case(0, "not_null_code");
    assert_eq!(
        warning
            .children()
            .find(|n| n.has_tag_name("system-out"))
            .and_then(|n| n.text()),
        Some(format!("warning: {}", message("not_null_code")).as_str())
    );
    assert_eq!(counted(case(0, "row_count")), [1, 0, 0, 0]);
    let read = case(2, "read");
    assert!(read.children().any(|n| n.has_tag_name("error")));
}

#[test]
fn issue_20_junit_of_a_passing_batch_has_no_failures_and_escapes_names() {
    let f = fixture();
    let dir = f.dir.path();
    // A file name with markup and quote characters must not break the XML.
    let odd = dir.join("a<b>&\"q\".parquet");
    std::fs::copy(&f.data, &odd).unwrap();
    let rules = write(
        &dir.join("rules.yaml"),
        "dataset: t\nchecks:\n  - row_count: { min: 1 }\n",
    );
    let out = driftwatch(&[
        "check",
        arg(&odd),
        "--rules",
        arg(&rules),
        "--format",
        "junit",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let xml = text(&out.stdout);
    let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    validate_junit_structure(&doc);
    assert_eq!(declared(doc.root_element()), [1, 0, 0, 0]);
    let suite = doc.root_element().first_element_child().unwrap();
    assert_eq!(suite.attribute("name"), Some(arg(&odd)));
}

// ---------------------------------------------------------------------------
// GitHub annotations

#[test]
fn issue_20_github_annotations_have_the_exact_workflow_command_format() {
    let f = fixture();
    let dir = f.dir.path();
    let rules = write(
        &dir.join("rules.yaml"),
        "dataset: t\nchecks:\n  - not_null: name\n  - not_null: code\n    severity: warn\n  - row_count: { min: 1 }\n",
    );
    let out = driftwatch(&[
        "check",
        arg(&f.data),
        "--rules",
        arg(&rules),
        "--format",
        "github",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let json = driftwatch(&[
        "check",
        arg(&f.data),
        "--rules",
        arg(&rules),
        "--format",
        "json",
    ]);
    let report: Value = serde_json::from_slice(&json.stdout).unwrap();
    // Messages as written, `%` escaped.
    let message = |i: usize| {
        report["reports"][0]["checks"][i]["message"]
            .as_str()
            .unwrap()
            .replace('%', "%25")
    };
    assert_eq!(message(0), "1 of 10 rows (10.0000%25) violate the check");
    // Properties escape `:` and `,` (%3A, %2C); messages `%`, CR and LF.
    let property = |s: &str| s.replace(':', "%3A").replace(',', "%2C");
    let data = arg(&f.data);
    let file = property(arg(&rules));
    assert_eq!(
        text(&out.stdout),
        format!(
            "::error file={file},line=3,col=5,title=t%3A check not_null_name failed::{data}: {}\n\
             ::warning file={file},line=4,col=5,title=t%3A check not_null_code failed::{data}: {}\n\
             ::notice title=driftwatch check::1 batch(es), 1 failed; 3 verdict(s): 1 failed, 0 could not be evaluated\n",
            message(0),
            message(1)
        )
    );
}

#[test]
fn issue_20_a_rule_error_is_annotated_at_its_line_with_exit_2() {
    let f = fixture();
    let dir = f.dir.path();
    let rules = write(
        &dir.join("rules.yaml"),
        "dataset: t\nchecks:\n  - not_null: name\n  - no_such_check: name\n",
    );
    let out = driftwatch(&[
        "check",
        arg(&f.data),
        "--rules",
        arg(&rules),
        "--format",
        "github",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    // The same location and reason as the plain error message.
    let plain = stderr
        .lines()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or_else(|| panic!("{stderr}"));
    let rest = plain
        .strip_prefix(&format!("{}:", arg(&rules)))
        .unwrap_or_else(|| panic!("{plain}"));
    let mut parts = rest.splitn(3, ':');
    let (line, col, reason) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap().trim_start(),
    );
    assert_eq!(line, "4");
    assert_eq!(
        stdout,
        format!(
            "::error file={},line={line},col={col},title=driftwatch%3A invalid rule::{}\n",
            arg(&rules).replace(':', "%3A").replace(',', "%2C"),
            reason.replace('%', "%25")
        )
    );
}

// ---------------------------------------------------------------------------
// --version, completions, man pages, healthcheck

#[test]
fn issue_20_version_names_the_git_commit() {
    let out = driftwatch(&["--version"]);
    assert!(out.status.success());
    let version = text(&out.stdout);
    let root = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| text(&o.stdout).trim().to_string())
    };
    let Some(head) = git(&["rev-parse", "HEAD"]) else {
        println!("not a git checkout: only the format of --version is checked");
        assert!(version.starts_with(concat!(
            "driftwatch ",
            env!("CARGO_PKG_VERSION"),
            " (commit "
        )));
        return;
    };
    assert_eq!(
        version,
        format!(
            "driftwatch {} (commit {})\n",
            env!("CARGO_PKG_VERSION"),
            &head[..12]
        )
    );
    // A release tarball made by `git archive` carries the commit for builds
    // without .git (export-subst in src/.gitattributes).
    let archive = Command::new("sh")
        .arg("-c")
        .arg("git archive HEAD src/git-commit.txt | tar -xOf -")
        .current_dir(root)
        .output()
        .unwrap();
    assert!(archive.status.success(), "{}", text(&archive.stderr));
    assert_eq!(text(&archive.stdout).trim(), head);
}

#[test]
fn issue_20_completions_parse_in_their_shells_and_man_pages_render() {
    for (shell, first, checker) in [
        ("bash", "_driftwatch() {", Some(("bash", "-n"))),
        ("zsh", "#compdef driftwatch", Some(("zsh", "-n"))),
        (
            "fish",
            "# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.",
            Some(("fish", "--no-execute")),
        ),
    ] {
        let out = driftwatch(&["completions", shell]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let script = text(&out.stdout);
        assert_eq!(script.lines().next(), Some(first), "{shell}");
        // Every subcommand is completed.
        for sub in [
            "check",
            "run",
            "status",
            "completions",
            "man",
            "healthcheck",
        ] {
            assert!(script.contains(sub), "{shell} completion lacks {sub}");
        }
        let Some((program, flag)) = checker else {
            continue;
        };
        let dir = tempfile::tempdir().unwrap();
        let file = write(&dir.path().join(format!("driftwatch.{shell}")), &script);
        match Command::new(program).arg(flag).arg(&file).output() {
            Ok(o) => assert!(o.status.success(), "{program}: {}", text(&o.stderr)),
            Err(_) => {
                println!("{program} is not installed: the {shell} script's syntax is not checked")
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let out = driftwatch(&["man", "--dir", arg(dir.path())]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for page in [
        "driftwatch.1",
        "driftwatch-check.1",
        "driftwatch-run.1",
        "driftwatch-completions.1",
    ] {
        let roff = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(roff.contains(".TH driftwatch"), "{page}");
        // groff renders it without a warning (-k: preconv reads UTF-8, as man does).
        match Command::new("groff")
            .args(["-k", "-man", "-Tutf8", "-ww", "-z"])
            .arg(dir.path().join(page))
            .output()
        {
            Ok(o) => assert!(
                o.status.success() && o.stderr.is_empty(),
                "{page}: {}",
                text(&o.stderr)
            ),
            Err(_) => println!("groff is not installed: {page} is not rendered"),
        }
    }
    // `check`'s page documents the CI formats.
    let check = std::fs::read_to_string(dir.path().join("driftwatch-check.1")).unwrap();
    assert!(check.contains("junit") && check.contains("github"));
    // Without --dir: the main page on stdout, listing every subcommand.
    let main = text(&driftwatch(&["man"]).stdout);
    assert!(main.starts_with(".ie \\n(.g .ds Aq \\(aq\n"), "{main}");
    assert!(main.contains(&format!(
        ".TH driftwatch 1  \"driftwatch {}",
        env!("CARGO_PKG_VERSION")
    )));
    for sub in ["check", "run", "completions", "man", "healthcheck"] {
        assert!(
            main.contains(&format!("driftwatch\\-{sub}(1)")),
            "main page lacks {sub}: {main}"
        );
    }
}

#[test]
fn issue_20_healthcheck_exits_0_only_when_the_probe_answers_200() {
    let lake = Lake::new(RULES);
    let agent = Agent::start(&lake, &[]);
    let addr = agent.addr.to_string();
    let out = driftwatch(&["healthcheck", "--listen", &addr]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "/healthz: 200 ok\n");
    let out = driftwatch(&["healthcheck", "--listen", &addr, "--ready"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("/readyz: 200"));
    drop(agent);
    // Nothing listens there any more.
    let out = driftwatch(&["healthcheck", "--listen", &addr, "--timeout", "2s"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with(&format!("/healthz: {addr}: ")));
}

// ---------------------------------------------------------------------------
// systemd

#[test]
fn issue_20_systemd_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(repo("examples/deploy/systemd/driftwatch.service")).unwrap();
    for directive in [
        "DynamicUser=yes",
        "StateDirectory=driftwatch",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "NoNewPrivileges=yes",
        "ReadOnlyPaths=/srv/lake",
        "Restart=on-failure",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(
            unit.lines().any(|l| l == directive),
            "the unit lacks {directive}"
        );
    }
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("systemd-analyze is not installed: the unit is not verified");
        return;
    }
    // verify checks that ExecStart's program exists: point it at the binary
    // under test instead of /usr/local/bin/driftwatch.
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir.path().join("driftwatch.service"),
        &unit.replace(
            "/usr/local/bin/driftwatch",
            env!("CARGO_BIN_EXE_driftwatch"),
        ),
    );
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Warnings about this unit (not about the host's other units) fail too.
    let ours: Vec<_> = stderr
        .lines()
        .filter(|l| l.contains("driftwatch.service"))
        .collect();
    assert!(ours.is_empty(), "{ours:#?}");
}

// ---------------------------------------------------------------------------
// Kubernetes

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The virtualenv's bin folder with `kubernetes-validate`, the Prometheus
/// Operator models and `check-jsonschema` (`.ci/run` installs them and sets
/// DRIFTWATCH_VALIDATORS).
fn validators() -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os("DRIFTWATCH_VALIDATORS")?);
    path.join("python").exists().then_some(path)
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn resource<'a>(resources: &'a [Value], kind: &str, name: &str) -> &'a Value {
    resources
        .iter()
        .find(|r| r["kind"] == kind && r["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name}"))
}

#[test]
fn issue_20_kubernetes_manifests_validate_and_the_sidecar_pod_is_wired() {
    let Some(validators) = validators() else {
        println!(
            "skipped: DRIFTWATCH_VALIDATORS is not set (.ci/run sets it): manifests not validated"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rendered = dir.path().join("rendered.json");
    let out = Command::new(validators.join("python"))
        .arg(repo("examples/deploy/kubernetes/validate"))
        .arg(repo("examples/deploy/kubernetes/sidecar"))
        .arg(repo("examples/deploy/kubernetes/standalone"))
        .arg("--render")
        .arg(&rendered)
        .output()
        .unwrap();
    let report = text(&out.stdout);
    assert!(out.status.success(), "{report}{}", text(&out.stderr));
    assert!(report.ends_with("17 resources, 0 failed\n"), "{report}");
    let rendered: Value =
        serde_json::from_str(&std::fs::read_to_string(&rendered).unwrap()).unwrap();

    for (overlay, deployment) in [("sidecar", "lake-writer"), ("standalone", "driftwatch")] {
        let resources = rendered[overlay].as_array().unwrap();
        let deploy = resource(resources, "Deployment", deployment);
        let template = &deploy["spec"]["template"];
        let pod = &template["spec"];
        let agent = container(pod, "driftwatch");
        // The config the pod runs, and its rules, are valid for this binary.
        let config =
            resource(resources, "ConfigMap", "driftwatch-config")["data"]["driftwatch.toml"]
                .as_str()
                .unwrap();
        let toml: toml::Table = toml::from_str(config).unwrap();
        let metrics_port: u64 = toml["http"]["metrics_listen"]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            toml["http"]["listen"].as_str(),
            Some("127.0.0.1:9464"),
            "{overlay}: loopback only"
        );
        let rules_dir = dir.path().join(format!("{overlay}-rules"));
        std::fs::create_dir_all(&rules_dir).unwrap();
        for (name, body) in resource(resources, "ConfigMap", "driftwatch-rules")["data"]
            .as_object()
            .unwrap()
        {
            write(&rules_dir.join(name), body.as_str().unwrap());
        }
        let checked = driftwatch(&["rules", "check", arg(&rules_dir)]);
        assert!(
            checked.status.success(),
            "{overlay}: {}",
            text(&checked.stderr)
        );
        let config_file = write(&dir.path().join(format!("{overlay}.toml")), config);
        // With the Secrets' variables set, as the pod's envFrom sets them.
        let mut env = Vec::new();
        for secret in resources.iter().filter(|r| r["kind"] == "Secret") {
            for (k, v) in secret["stringData"].as_object().unwrap() {
                env.push((k.clone(), v.as_str().unwrap().to_string()));
            }
        }
        let checked = Command::new(env!("CARGO_BIN_EXE_driftwatch"))
            .args(["config", "check", arg(&config_file)])
            .envs(env)
            .output()
            .unwrap();
        assert!(
            checked.status.success(),
            "{overlay}: {}",
            text(&checked.stderr)
        );

        // Probes on the documented paths, on the metrics port the config opens.
        assert_eq!(agent["ports"][0]["containerPort"], metrics_port);
        assert_eq!(agent["ports"][0]["name"], "metrics");
        assert_eq!(agent["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(agent["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(agent["livenessProbe"]["httpGet"]["port"], "metrics");
        assert_eq!(agent["readinessProbe"]["httpGet"]["port"], "metrics");
        let annotations = &template["metadata"]["annotations"];
        assert_eq!(annotations["prometheus.io/scrape"], "true");
        assert_eq!(annotations["prometheus.io/port"], metrics_port.to_string());
        assert_eq!(annotations["prometheus.io/path"], "/metrics");
        // The Service selects this pod; the ServiceMonitor scrapes its port.
        let service = resource(resources, "Service", "driftwatch-metrics");
        for (k, v) in service["spec"]["selector"].as_object().unwrap() {
            assert_eq!(
                &template["metadata"]["labels"][k], v,
                "{overlay}: Service selector {k}"
            );
        }
        assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics");
        let monitor = resource(resources, "ServiceMonitor", "driftwatch");
        assert_eq!(
            monitor["spec"]["endpoints"][0]["port"],
            service["spec"]["ports"][0]["name"]
        );
        assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
        // Hardened: non-root, read-only root, no capabilities, no escalation.
        let security = &agent["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], true);
        assert_eq!(security["allowPrivilegeEscalation"], false);
        assert_eq!(security["runAsNonRoot"], true);
        assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(pod["securityContext"]["runAsUser"], 65532);
        assert_eq!(pod["automountServiceAccountToken"], false);
        // Requests and a memory limit above DataFusion's pool.
        assert!(agent["resources"]["requests"]["cpu"].is_string());
        assert!(agent["resources"]["requests"]["memory"].is_string());
        let limit = mebibytes(agent["resources"]["limits"]["memory"].as_str().unwrap());
        let pool = mebibytes(toml["evaluation"]["memory_limit"].as_str().unwrap());
        assert!(
            limit >= pool + 128,
            "{overlay}: limit {limit}Mi leaves too little above the {pool}Mi pool"
        );
        // Mounts: state on the PVC at the config's state folder, config and
        // rules where the config says, a writable /tmp.
        let mounts = agent["volumeMounts"].as_array().unwrap();
        let mount = |path: &str| {
            mounts
                .iter()
                .find(|m| m["mountPath"] == path)
                .unwrap_or_else(|| panic!("{overlay}: nothing mounted at {path}"))
        };
        let volume = |name: &Value| {
            pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| &v["name"] == name)
                .unwrap()
                .clone()
        };
        let state = mount(toml["state"].as_str().unwrap());
        assert_eq!(
            volume(&state["name"])["persistentVolumeClaim"]["claimName"],
            resource(resources, "PersistentVolumeClaim", "driftwatch-state")["metadata"]["name"]
        );
        assert_eq!(
            volume(&mount("/etc/driftwatch/rules")["name"])["configMap"]["name"],
            "driftwatch-rules"
        );
        assert_eq!(toml["rules"].as_str(), Some("/etc/driftwatch/rules"));
        assert_eq!(args_config(agent), "/etc/driftwatch/driftwatch.toml");
        assert_eq!(
            mount("/etc/driftwatch/driftwatch.toml")["subPath"],
            "driftwatch.toml"
        );
        assert!(volume(&mount("/tmp")["name"])["emptyDir"].is_object());
        assert_eq!(deploy["spec"]["replicas"], 1);
        assert_eq!(deploy["spec"]["strategy"]["type"], "Recreate");

        if overlay == "sidecar" {
            // The writer and the agent share the lake volume; the agent only reads it.
            let watch = toml["watch"][0].as_str().unwrap();
            let lake = mount(watch);
            assert_eq!(lake["readOnly"], true);
            assert!(volume(&lake["name"])["emptyDir"].is_object());
            let writer = container(pod, "writer");
            assert!(
                writer["volumeMounts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["name"] == lake["name"]
                        && m["mountPath"] == watch
                        && m["readOnly"].is_null()),
                "the writer does not write the lake volume"
            );
        } else {
            assert_eq!(pod["containers"].as_array().unwrap().len(), 1);
            assert!(toml["watch"][0].as_str().unwrap().starts_with("s3://"));
        }
    }
}

fn args_config(container: &Value) -> String {
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "run");
    let i = args.iter().position(|a| *a == "--config").unwrap();
    args[i + 1].to_string()
}

/// `512MiB` / `768Mi` → 512 / 768.
fn mebibytes(text: &str) -> u64 {
    let digits: String = text.chars().take_while(|c| c.is_ascii_digit()).collect();
    let n: u64 = digits.parse().unwrap();
    match &text[digits.len()..] {
        "Mi" | "MiB" => n,
        "Gi" | "GiB" => n * 1024,
        other => panic!("unit {other}"),
    }
}

// ---------------------------------------------------------------------------
// Container image

/// Runs a command to completion within `limit` (its output in files, so a
/// chatty command cannot block on a full pipe); panics on timeout.
fn run_bounded(command: &mut Command, limit: Duration) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{command:?} did not finish within {limit:?}: {}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Output {
        status,
        stdout: std::fs::read(&out).unwrap(),
        stderr: std::fs::read(&err).unwrap(),
    }
}

fn docker(args: &[&str]) -> Output {
    run_bounded(Command::new("docker").args(args), Duration::from_secs(120))
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout).trim().to_string()
}

/// Why containers cannot run here, or None when they can.
fn containers_unavailable() -> Option<String> {
    match Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
    {
        Err(e) => Some(format!("no docker client: {e}")),
        Ok(o) if !o.status.success() => Some(format!(
            "the docker daemon does not answer: {}",
            text(&o.stderr).trim()
        )),
        Ok(_) => None,
    }
}

/// Removes the container and the image tag when the test ends, passed or not.
struct ContainerGuard {
    name: String,
    image: String,
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.name])
            .output();
        let _ = Command::new("docker").args(["rmi", &self.image]).output();
    }
}

fn make_readable(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn issue_20_container_image_runs_non_root_on_a_read_only_root_and_reports_a_batch() {
    if let Some(reason) = containers_unavailable() {
        println!("skipped: containers cannot run on this machine: {reason}");
        return;
    }
    let tag = format!("driftwatch-test:{}", std::process::id());
    let name = format!("driftwatch-test-{}", std::process::id());
    let _guard = ContainerGuard {
        name: name.clone(),
        image: tag.clone(),
    };
    // The image from the binary under test (the Containerfile's
    // `runtime-base` stage plus Containerfile.prebuilt, on the base built
    // from Debian packages, which .ci/run caches).
    let built = run_bounded(
        Command::new(repo("examples/deploy/container/build-image"))
            .arg(env!("CARGO_BIN_EXE_driftwatch"))
            .arg(&tag),
        Duration::from_secs(600),
    );
    assert!(
        built.status.success(),
        "build-image: {}",
        text(&built.stderr)
    );
    let size: u64 = docker_ok(&["image", "inspect", "-f", "{{.Size}}", &tag])
        .parse()
        .unwrap();
    println!(
        "image {tag}: {} MB (binary under test, a debug build)",
        size / 1_000_000
    );
    let labels: Value = serde_json::from_str(&docker_ok(&[
        "image",
        "inspect",
        "-f",
        "{{json .Config.Labels}}",
        &tag,
    ]))
    .unwrap();
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    assert!(
        labels["org.opencontainers.image.source"]
            .as_str()
            .unwrap()
            .starts_with("https://")
    );
    assert_eq!(
        docker_ok(&["image", "inspect", "-f", "{{.Config.User}}", &tag]),
        "65532:65532"
    );

    // A failing batch: the row count is below the rule's minimum.
    let lake = Lake::new(
        "dataset: flights\nchecks:\n  - not_null: carrier\n  - row_count: { min: 1000000 }\n",
    );
    let state = lake.state();
    std::fs::create_dir_all(&state).unwrap();
    // The agent runs as 65532: it reads the lake and rules, writes the state.
    make_readable(lake.dir.path(), 0o755);
    make_readable(&lake.lake(), 0o755);
    make_readable(&lake.path("rules"), 0o755);
    make_readable(&state, 0o777);
    let mount =
        |host: &Path, inside: &str, mode: &str| format!("{}:{inside}:{mode}", host.display());
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--health-interval",
        "1s",
        "-v",
        &mount(&lake.lake(), "/lake", "ro"),
        "-v",
        &mount(&lake.path("rules"), "/etc/driftwatch/rules", "ro"),
        "-v",
        &mount(&state, "/var/lib/driftwatch", "rw"),
        "-p",
        "127.0.0.1::9464",
        "-p",
        "127.0.0.1::9465",
        &tag,
        // The image's config, with the API port opened inside the
        // container so the test reaches /status through the published port.
        "run",
        "--config",
        "/etc/driftwatch/driftwatch.toml",
        "--listen",
        "0.0.0.0:9464",
        "--settle",
        "300ms",
    ]);
    let published = |port: &str| -> std::net::SocketAddr {
        docker_ok(&["port", &name, port])
            .lines()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let api = published("9464/tcp");
    let probes = published("9465/tcp");
    let logs = || text(&docker(&["logs", &name]).stderr);
    wait_for("/readyz through the published probe port", || {
        (http_get(probes, "/readyz").0 == 200).then_some(())
    });
    // The probe port serves nothing else.
    assert_eq!(http_get(probes, "/status").0, 404);

    lake.land("flights.parquet", &lake.bytes(2000, 7, 0));
    let status: Value = wait_for("the batch on /status through the published port", || {
        let (code, body) = http_get(api, "/status");
        let status: Value = serde_json::from_str(&body).ok()?;
        (code == 200 && status["datasets"][0]["evaluated"] == 1).then_some(status)
    });
    assert_eq!(status["datasets"][0]["dataset"], "flights", "{status:#}");
    assert_eq!(status["datasets"][0]["failed"], 1, "{status:#}\n{}", logs());
    // The verdict in the mounted state folder, written by the container.
    let results = lake.results();
    assert_eq!(results.len(), 1, "{}", logs());
    let report = &results[0]["reports"][0];
    assert_eq!(report["source"], "/lake/flights.parquet");
    assert_eq!(report["passed"], false);
    assert_eq!(report["rows"], 2000);
    let failing: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] != "pass")
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(failing, ["row_count"]);

    // The agent process: not root, and its root file system is read-only.
    let pid = docker_ok(&["inspect", "-f", "{{.State.Pid}}", &name]);
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = proc_status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid.split_whitespace().skip(1).collect::<Vec<_>>(),
        ["65532"; 4]
    );
    let gid = proc_status.lines().find(|l| l.starts_with("Gid:")).unwrap();
    assert_eq!(
        gid.split_whitespace().skip(1).collect::<Vec<_>>(),
        ["65532"; 4]
    );
    let cap_eff = proc_status
        .lines()
        .find(|l| l.starts_with("CapEff:"))
        .unwrap();
    assert_eq!(cap_eff.split_whitespace().nth(1), Some("0000000000000000"));
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let root = mountinfo
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f[4] == "/")
        .unwrap();
    assert!(
        root[5].split(',').any(|o| o == "ro"),
        "root mounted {}",
        root[5]
    );

    // The image's HEALTHCHECK (the binary probing itself) reports healthy.
    wait_for("the container's HEALTHCHECK to pass", || {
        (docker_ok(&["inspect", "-f", "{{.State.Health.Status}}", &name]) == "healthy")
            .then_some(())
    });

    // `docker stop` sends SIGTERM: the agent finishes and exits 0.
    docker_ok(&["stop", "-t", "30", &name]);
    assert_eq!(
        docker_ok(&["inspect", "-f", "{{.State.ExitCode}}", &name]),
        "0",
        "{}",
        logs()
    );
}

// ---------------------------------------------------------------------------
// CI examples

/// A folder laid out as the CI examples expect (`data/`, `rules/`) with a
/// batch that fails an error-severity check, and a `bin/` whose
/// `driftwatch` is the binary under test.
fn ci_workspace() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    std::fs::create_dir_all(dir.path().join("bin")).unwrap();
    let f = fixture();
    std::fs::copy(&f.data, dir.path().join("data/t.parquet")).unwrap();
    write(
        &dir.path().join("rules/t.yaml"),
        "dataset: t\nmatch: \"*.parquet\"\nchecks:\n  - not_null: name\n  - row_count: { min: 1 }\n",
    );
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_driftwatch"),
        dir.path().join("bin/driftwatch"),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        dir.path().join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (dir, path)
}

fn yaml(path: &Path) -> Value {
    serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn issue_20_ci_examples_validate_and_their_steps_gate_on_the_exit_code() {
    let github = repo("examples/ci/github-actions.yml");
    let gitlab = repo("examples/ci/gitlab-ci.yml");
    match validators() {
        Some(bin) => {
            for (file, schema) in [
                (&github, "vendor.github-workflows"),
                (&gitlab, "vendor.gitlab-ci"),
            ] {
                let out = Command::new(bin.join("check-jsonschema"))
                    .args(["--builtin-schema", schema])
                    .arg(file)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}: {}{}",
                    file.display(),
                    text(&out.stdout),
                    text(&out.stderr)
                );
            }
        }
        None => println!(
            "DRIFTWATCH_VALIDATORS is not set: the CI files are not validated against their schemas"
        ),
    }

    // GitHub: the check step, run as Actions runs `run:` (bash -e), fails
    // the job with exit 1, annotates the rule, and leaves the JUnit file.
    let workflow = yaml(&github);
    let steps = workflow["jobs"]["driftwatch"]["steps"].as_array().unwrap();
    let step = |name: &str| {
        steps
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no step {name}"))["run"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (dir, path) = ci_workspace();
    let bash = |script: &str| {
        Command::new("bash")
            .args([
                "--noprofile",
                "--norc",
                "-e",
                "-o",
                "pipefail",
                "-c",
                script,
            ])
            .current_dir(dir.path())
            .env("PATH", &path)
            .output()
            .unwrap()
    };
    let validate = bash(&step("Validate rules"));
    assert!(validate.status.success(), "{}", text(&validate.stderr));
    let check = bash(&step("Check the data"));
    assert_eq!(check.status.code(), Some(1), "{}", text(&check.stderr));
    let annotations = text(&check.stdout);
    assert!(
        annotations.starts_with("::error file=rules/t.yaml,line=4,col=5,title=t%3A check not_null_name failed::data/t.parquet: "),
        "{annotations}"
    );
    let junit = std::fs::read_to_string(dir.path().join("driftwatch-junit.xml")).unwrap();
    let doc = roxmltree::Document::parse(&junit).unwrap();
    validate_junit_structure(&doc);
    assert_eq!(declared(doc.root_element()), [2, 1, 0, 0]);
    let report = steps.iter().find(|s| s["name"] == "Test report").unwrap();
    assert_eq!(report["with"]["report_paths"], "driftwatch-junit.xml");
    assert_eq!(report["if"], "failure()");

    // GitLab: the job's script lines, in order, as the runner runs them.
    let job = &yaml(&gitlab)["data-quality"];
    let (dir, path) = ci_workspace();
    let mut last = None;
    for line in job["script"].as_array().unwrap() {
        let out = Command::new("sh")
            .args(["-c", line.as_str().unwrap()])
            .current_dir(dir.path())
            .env("PATH", &path)
            .output()
            .unwrap();
        last = out.status.code();
        if last != Some(0) {
            break;
        }
    }
    // Failed checks exit 1, which the job lets through as a warning; the
    // report is where `artifacts:reports:junit` says.
    assert_eq!(last, Some(1));
    assert_eq!(job["allow_failure"]["exit_codes"], serde_json::json!([1]));
    let report = job["artifacts"]["reports"]["junit"].as_str().unwrap();
    let junit = std::fs::read_to_string(dir.path().join(report)).unwrap();
    let doc = roxmltree::Document::parse(&junit).unwrap();
    assert_eq!(declared(doc.root_element()), [2, 1, 0, 0]);
}
