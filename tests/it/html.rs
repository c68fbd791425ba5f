//! Issue 9: reports people look at. The HTML report of `driftwatch check
//! --format html`, parsed strictly (its tables' rows and values, one chart per
//! tested column, no external resource anywhere); the same in headless
//! Chromium over WebDriver (no console error, screenshot kept); the agent's
//! live index and dataset pages, and `driftwatch report` for a stopped agent;
//! `check`'s progress bar on a terminal only.

use std::process::Command;

use driftwatch::demo::{Defects, FlightsSpec, write_flights};

/// The fixture of the HTML tests: a reference and a batch whose delays
/// shifted and whose origins are sometimes unknown, a baseline of the
/// reference and `check --format html` of the batch (which fails). Returns
/// the report's path.
fn drifted_report(dir: &std::path::Path) -> std::path::PathBuf {
    let reference = dir.join("reference.parquet");
    let batch = dir.join("batch.parquet");
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
    let rules = dir.join("rules.yaml");
    std::fs::write(
        &rules,
        "dataset: flights\nchecks:\n  - not_null: carrier\n  - accepted_values: { column: origin, values: [EWR, JFK, LGA] }\n  - row_count: { min: 1 }\n\
         drift:\n  drift_share: 0.3\n  columns: [dep_delay, arr_delay, carrier, origin, distance]\n",
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_driftwatch");
    let profile = dir.join("reference.profile");
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
    let html_path = dir.join("report.html");
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
    html_path
}

#[test]
fn check_writes_a_self_contained_html_report_with_tables_and_charts() {
    let dir = tempfile::tempdir().unwrap();
    let html_path = drifted_report(dir.path());
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
        .position(|r| r[6] == "no")
        .unwrap_or(drift.len());
    assert!(drift[first_calm..].iter().all(|r| r[6] == "no"));
    let dep = drift.iter().find(|r| r[0] == "dep_delay").unwrap();
    assert_eq!(dep[6], "yes");
    // Issue 17: each tested column says which path its statistic took.
    let carrier = drift.iter().find(|r| r[0] == "carrier").unwrap();
    assert_eq!(carrier[2], "exact");

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

/// A headless Chromium, driven over WebDriver by Debian's chromedriver
/// (installed by `.ci/run`), on a loopback port.
struct Browser {
    driver: std::process::Child,
    base: String,
    session: String,
    client: reqwest::blocking::Client,
}

impl Browser {
    fn start(profile_dir: &std::path::Path) -> Browser {
        assert!(
            std::path::Path::new("/usr/bin/chromedriver").exists(),
            "this test needs Debian's chromium and chromium-driver (installed by .ci/run)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        driftwatch::tls::ensure_crypto_provider();
        let client = reqwest::blocking::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .unwrap();
        crate::agent::wait_for("chromedriver to answer", || {
            client
                .get(format!("{base}/status"))
                .send()
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        });
        let capabilities = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--window-size=1200,2200", format!("--user-data-dir={}", profile_dir.display())]
            },
            "goog:loggingPrefs": {"browser": "ALL"}
        }}});
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            client,
        };
        let created = browser.call("POST", "/session", capabilities);
        browser.session = created["sessionId"]
            .as_str()
            .expect("a session")
            .to_string();
        browser
    }

    fn call(&self, method: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.client.get(url),
            "DELETE" => self.client.delete(url),
            _ => self
                .client
                .post(url)
                .header("Content-Type", "application/json")
                .body(body.to_string()),
        };
        let response = request.send().expect("chromedriver answers");
        let status = response.status();
        let value: serde_json::Value = serde_json::from_str(&response.text().expect("a body"))
            .expect("JSON from chromedriver");
        assert!(status.is_success(), "{method} {path}: {status} {value}");
        value.get("value").cloned().unwrap_or(value)
    }

    fn session(&self, method: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    /// Loads `url` and returns the page's title.
    fn visit(&self, url: &str) -> serde_json::Value {
        self.session("POST", "/url", serde_json::json!({ "url": url }));
        self.session("GET", "/title", serde_json::Value::Null)
    }

    /// The browser console's SEVERE entries so far.
    fn console_errors(&self) -> Vec<serde_json::Value> {
        let log = self.session("POST", "/se/log", serde_json::json!({"type": "browser"}));
        log.as_array()
            .unwrap()
            .iter()
            .filter(|e| e["level"] == "SEVERE")
            .cloned()
            .collect()
    }

    /// Saves a screenshot of the page as a test artifact (under the temp
    /// dir's `driftwatch-test-artifacts/`) and prints its path.
    fn screenshot(&self, name: &str) -> std::path::PathBuf {
        let png = base64_decode(
            self.session("GET", "/screenshot", serde_json::Value::Null)
                .as_str()
                .unwrap(),
        );
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let kept = std::env::temp_dir().join("driftwatch-test-artifacts");
        std::fs::create_dir_all(&kept).unwrap();
        let path = kept.join(name);
        std::fs::write(&path, &png).unwrap();
        println!("screenshot: {}", path.display());
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self
                .client
                .delete(format!("{}/session/{}", self.base, self.session))
                .send();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
    {
        let v = ALPHABET.iter().position(|&a| a == c).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Issue 9: the report renders in a real browser with no console error; the
/// screenshot is kept and its path printed.
#[test]
fn the_html_report_renders_in_headless_chromium_without_console_errors() {
    let dir = tempfile::tempdir().unwrap();
    let report = drifted_report(dir.path());

    let browser = Browser::start(&dir.path().join("chromium-profile"));
    assert_eq!(
        browser.visit(&format!("file://{}", report.display())),
        "driftwatch check"
    );
    let rendered = browser.session(
        "POST",
        "/execute/sync",
        serde_json::json!({"script": "return [document.querySelectorAll('figure.chart svg rect').length, \
            document.querySelector('table.drift').getBoundingClientRect().height, \
            getComputedStyle(document.body).fontFamily.length];", "args": []}),
    );
    assert!(rendered[0].as_u64().unwrap() > 40, "{rendered}");
    assert!(rendered[1].as_f64().unwrap() > 100.0, "{rendered}");
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    browser.screenshot("check-report.png");
}

/// Issue 9: the agent serves an index and a live page per dataset (latest
/// batch, charts, history), they render in Chromium without console errors,
/// and `driftwatch report` writes the same page for a stopped agent.
#[test]
fn the_agent_serves_an_index_and_a_live_dataset_page_and_report_writes_it() {
    use crate::agent::{Agent, Lake, wait_results};
    let rules = "dataset: flights\nchecks:\n  - not_null: carrier\n  - row_count: { min: 2000 }\n\
                 drift:\n  reference: { rolling: { batches: 2 } }\n  drift_share: 0.3\n  \
                 columns: [dep_delay, arr_delay, carrier, distance]\n";
    let lake = Lake::new(rules);
    let agent = Agent::start(&lake, &[]);
    for (i, (rows, shift)) in [(3000, 0), (3000, 0), (1500, 45)].into_iter().enumerate() {
        lake.land(
            &format!("b{i}.parquet"),
            &lake.bytes(rows, 40 + i as u64, shift),
        );
        wait_results(&lake, &agent, i + 1);
    }
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let texts = |n: roxmltree::Node| -> String {
        n.descendants()
            .filter(|d| d.is_text())
            .filter_map(|d| d.text())
            .collect()
    };

    let (code, index) = agent.get("/");
    assert_eq!(code, 200);
    let doc = roxmltree::Document::parse_with_options(&index, options).unwrap();
    let link = doc.descendants().find(|n| n.has_tag_name("a")).unwrap();
    assert_eq!(link.attribute("href"), Some("report/flights"));
    let row: Vec<String> = link
        .ancestors()
        .find(|n| n.has_tag_name("tr"))
        .unwrap()
        .children()
        .filter(|n| n.has_tag_name("td"))
        .map(texts)
        .collect();
    assert_eq!(&row[..5], ["flights", "failed", "yes", "3", "1"]);
    assert!(index.contains("<meta http-equiv=\"refresh\" content=\"15\"/>"));

    let (code, page) = agent.get("/report/flights");
    assert_eq!(code, 200);
    let check_page = |page: &str| {
        let doc = roxmltree::Document::parse_with_options(page, options).unwrap();
        let class = |c: &str| {
            doc.descendants()
                .filter(|n| n.attribute("class") == Some(c))
                .count()
        };
        assert_eq!(
            class("chart"),
            4,
            "one reference-vs-batch chart per tested column"
        );
        assert_eq!(
            class("trend"),
            4,
            "one drift-over-time chart per tested column"
        );
        let history = doc
            .descendants()
            .find(|n| n.attribute("class") == Some("history"))
            .unwrap();
        let rows: Vec<String> = history
            .descendants()
            .filter(|n| n.has_tag_name("tr"))
            .skip(1)
            .map(texts)
            .collect();
        assert_eq!(rows.len(), 3);
        assert!(rows[0].starts_with("3"), "newest first: {rows:?}");
        assert!(rows[0].contains("row_count"), "{rows:?}");
        for needle in ["http:", "https:", "src=", "url("] {
            assert!(!page.contains(needle), "found {needle:?}");
        }
    };
    check_page(&page);
    assert_eq!(agent.get("/report/nope").0, 404);

    // The live page in a real browser.
    let browser = Browser::start(&lake.path("chromium-profile"));
    assert_eq!(
        browser.visit(&format!("http://{}/report/flights", agent.addr)),
        "driftwatch — flights"
    );
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    browser.screenshot("live-dataset-page.png");
    assert_eq!(
        browser.visit(&format!("http://{}/", agent.addr)),
        "driftwatch"
    );
    assert!(browser.console_errors().is_empty());
    browser.screenshot("index-page.png");
    drop(browser);

    // A stopped agent: the same page from the store, without self-reload.
    assert_eq!(agent.terminate(), Some(0));
    let out_file = lake.path("flights.html");
    let state = lake.state().display().to_string();
    let bin = env!("CARGO_BIN_EXE_driftwatch");
    let out = Command::new(bin)
        .args([
            "report",
            "--state",
            &state,
            "--dataset",
            "flights",
            "--output",
        ])
        .arg(&out_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read_to_string(&out_file).unwrap();
    check_page(&written);
    assert!(!written.contains("http-equiv"));
    let out = Command::new(bin)
        .args(["report", "--state", &state, "--dataset", "nope", "--output"])
        .arg(lake.path("nope.html"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Issue 9: `check` over many files draws a progress bar on a terminal (a
/// pseudo-terminal from util-linux's `script`) and writes nothing extra when
/// its standard error is not a terminal.
#[test]
fn check_shows_progress_on_a_terminal_and_stays_quiet_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..4 {
        write_flights(
            &dir.path().join(format!("f{i}.parquet")),
            &FlightsSpec {
                rows: 2_000,
                row_group_rows: 1_000,
                seed: i,
                ..FlightsSpec::default()
            },
        )
        .unwrap();
    }
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        "dataset: flights\nchecks:\n  - row_count: { min: 1 }\n",
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_driftwatch");
    let out_json = dir.path().join("out.json");
    let command = format!(
        "{bin} check {} --rules {} --format json --output {}",
        dir.path().display(),
        rules.display(),
        out_json.display()
    );
    // Piped: no bar.
    let piped = Command::new("sh").arg("-c").arg(&command).output().unwrap();
    assert!(
        piped.status.success(),
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );
    assert!(
        piped.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );
    // On a terminal: the bar, counting the four evaluations.
    let typescript = dir.path().join("typescript");
    let tty = Command::new("script")
        .args(["-q", "-e", "-c", &command])
        .arg(&typescript)
        .output()
        .expect("util-linux `script`");
    assert!(tty.status.success());
    let seen = String::from_utf8_lossy(&std::fs::read(&typescript).unwrap()).into_owned();
    assert!(seen.contains("/4 evaluations"), "{seen}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out_json).unwrap()).unwrap();
    assert_eq!(report["reports"].as_array().unwrap().len(), 4);
}
