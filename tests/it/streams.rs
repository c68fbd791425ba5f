//! Event streams (issue 8): `POST /ingest/{dataset}` and NDJSON files,
//! windowed into batches by the real `driftwatch run` binary, with a real
//! HTTP client on loopback. Waits poll with the shared deadline.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use serde_json::Value;

use crate::agent::{Agent, Lake, wait_for};

/// Schema-checked events: id, score, kind.
const EVENT_RULES: &str = "\
checks:
  - schema: { columns: { id: int64, score: float64, kind: utf8 } }
  - not_null: id
  - row_count: { min: 1 }
";

/// A lake with rule files for `datasets` and a config file holding `sources`.
pub(crate) fn stream_lake(datasets: &[&str], sources: &str) -> (Lake, PathBuf) {
    let lake = Lake::new(crate::agent::RULES);
    for d in datasets {
        std::fs::write(
            lake.path(&format!("rules/{d}.yaml")),
            format!("dataset: {d}\n{EVENT_RULES}"),
        )
        .unwrap();
    }
    let config = lake.path("driftwatch.toml");
    std::fs::write(
        &config,
        format!(
            "watch = [\"lake\"]\nrules = \"rules\"\nstate = \"state\"\n[http]\nlisten = \"127.0.0.1:0\"\n{sources}"
        ),
    )
    .unwrap();
    (lake, config)
}

pub(crate) fn start(lake: &Lake, config: &Path, env: &[(&str, &str)]) -> Agent {
    let args = vec![
        "run".to_string(),
        "--config".to_string(),
        config.display().to_string(),
    ];
    Agent::spawn_with_env(lake, &args, &lake.state(), env)
}

/// One HTTP response: status, `Retry-After`, body as JSON (null if not JSON).
pub(crate) struct Posted {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<String>,
    pub(crate) body: Value,
}

pub(crate) fn post(agent: &Agent, dataset: &str, content_type: &str, body: Vec<u8>) -> Posted {
    post_with(agent, dataset, content_type, body, None)
}

fn post_with(
    agent: &Agent,
    dataset: &str,
    content_type: &str,
    body: Vec<u8>,
    bearer: Option<&str>,
) -> Posted {
    let auth = bearer.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let answer = crate::common::send(
        "POST",
        &format!("http://{}/ingest/{dataset}", agent.addr),
        &headers,
        Some((content_type, body)),
    );
    Posted {
        status: answer.status,
        retry_after: answer
            .headers
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string()),
        body: serde_json::from_str(&answer.text).unwrap_or(Value::Null),
    }
}

/// `n` NDJSON events with ids from `first`.
pub(crate) fn ndjson(first: u64, n: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n as usize * 48);
    for id in first..first + n {
        out.extend_from_slice(
            format!(
                "{{\"id\": {id}, \"score\": {}, \"kind\": \"k{}\"}}\n",
                (id % 1000) as f64 / 10.0,
                id % 7
            )
            .as_bytes(),
        );
    }
    out
}

/// `n` events as an Arrow IPC stream of batches of 50,000 rows.
pub(crate) fn arrow_ipc(first: u64, n: u64) -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("kind", DataType::Utf8, true),
        Field::new("id", DataType::Int64, true),
        Field::new("score", DataType::Float64, true),
    ]));
    let mut out = Vec::new();
    let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut out, &schema).unwrap();
    let mut at = first;
    while at < first + n {
        let m = (first + n - at).min(50_000);
        let ids: Vec<i64> = (at..at + m).map(|i| i as i64).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(
                    ids.iter()
                        .map(|i| format!("k{}", i % 7))
                        .collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(ids.clone())),
                Arc::new(Float64Array::from(
                    ids.iter()
                        .map(|i| (i % 1000) as f64 / 10.0)
                        .collect::<Vec<_>>(),
                )),
            ],
        )
        .unwrap();
        w.write(&batch).unwrap();
        at += m;
    }
    w.finish().unwrap();
    drop(w);
    out
}

/// Results-log reports of one dataset: (source, rows, passed).
fn windows(lake: &Lake, dataset: &str) -> Vec<(String, u64, bool)> {
    lake.results()
        .iter()
        .map(|r| &r["reports"][0])
        .filter(|r| r["dataset"] == dataset)
        .map(|r| {
            (
                r["source"].as_str().unwrap().to_string(),
                r["rows"].as_u64().unwrap_or(0),
                r["passed"].as_bool().unwrap(),
            )
        })
        .collect()
}

pub(crate) fn stream_status(agent: &Agent, name: &str) -> Value {
    agent.status()["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no stream {name} in /status"))
}

pub(crate) fn dead_letters(lake: &Lake, stream_dir: &str) -> Vec<Value> {
    std::fs::read_to_string(
        lake.state()
            .join("streams")
            .join(stream_dir)
            .join("dead-letters.ndjson"),
    )
    .unwrap_or_default()
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect()
}

#[test]
fn issue_8_a_million_events_over_ndjson_and_arrow_ipc_are_each_windowed_and_evaluated_once() {
    let window = "window = { rows = 100000 }";
    let (lake, config) = stream_lake(
        &["ev_json", "ev_ipc"],
        &format!(
            "[[sources]]\nkind = \"http\"\ndataset = \"ev_json\"\n{window}\n\
             [[sources]]\nkind = \"http\"\ndataset = \"ev_ipc\"\n{window}\n"
        ),
    );
    let agent = start(&lake, &config, &[]);
    // 20 posts of 50,000 events each per format.
    for i in 0..20u64 {
        for (dataset, content_type, body) in [
            (
                "ev_json",
                "application/x-ndjson",
                ndjson(i * 50_000, 50_000),
            ),
            (
                "ev_ipc",
                "application/vnd.apache.arrow.stream",
                arrow_ipc(i * 50_000, 50_000),
            ),
        ] {
            let r = post(&agent, dataset, content_type, body);
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(r.body["accepted"], 50_000);
            assert_eq!(r.body["rejected"], 0);
        }
    }
    for (dataset, name) in [("ev_json", "http:ev_json"), ("ev_ipc", "http:ev_ipc")] {
        let got = wait_for(&format!("10 windows of {dataset}"), || {
            let w = windows(&lake, dataset);
            (w.len() >= 10).then_some(w)
        });
        assert_eq!(got.len(), 10, "{got:?}");
        let mut sources: Vec<&String> = got.iter().map(|w| &w.0).collect();
        sources.sort();
        sources.dedup();
        assert_eq!(sources.len(), 10, "each window once: {got:?}");
        assert!(
            got.iter().all(
                |(s, rows, passed)| s.starts_with(&format!("http/{dataset}/"))
                    && *rows == 100_000
                    && *passed
            ),
            "{got:?}"
        );
        let s = wait_for("the stream's counters to settle", || {
            let s = stream_status(&agent, name);
            (s["windows_evaluated"] == 10).then_some(s)
        });
        assert_eq!(s["accepted"], 1_000_000);
        assert_eq!(s["rejected"], 0);
        assert_eq!(s["windows_closed"], 10);
        assert_eq!(s["pending_events"], 0);
        assert_eq!(s["open_events"], 0);
    }
    // Recorded windows leave nothing behind in the write-ahead log.
    let wal = lake.state().join("streams/http-ev_json/wal");
    wait_for("the WAL to be emptied", || {
        (std::fs::read_dir(&wal).unwrap().count() == 0).then_some(())
    });
    // No window reported twice after a restart either.
    agent.terminate();
    let agent = start(&lake, &config, &[]);
    let r = post(
        &agent,
        "ev_json",
        "application/x-ndjson",
        ndjson(2_000_000, 10),
    );
    assert_eq!(r.status, 200);
    assert_eq!(windows(&lake, "ev_json").len(), 10);
    assert_eq!(windows(&lake, "ev_ipc").len(), 10);
}

#[test]
fn issue_8_acknowledged_events_survive_sigkill_before_their_window_is_evaluated() {
    // A window that would stay open for an hour: only the restart closes it.
    let (lake, config) = stream_lake(
        &["kill"],
        "[[sources]]\nkind = \"http\"\ndataset = \"kill\"\nwindow = { rows = 1000000, seconds = 3600 }\n",
    );
    let agent = start(&lake, &config, &[]);
    for i in 0..3 {
        let r = post(
            &agent,
            "kill",
            "application/x-ndjson",
            ndjson(i * 2000, 2000),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = post(
        &agent,
        "kill",
        "application/vnd.apache.arrow.stream",
        arrow_ipc(6000, 500),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(stream_status(&agent, "http:kill")["open_events"], 6500);
    agent.kill9();
    assert!(windows(&lake, "kill").is_empty());

    let agent = start(&lake, &config, &[]);
    let got = wait_for("the recovered window's report", || {
        let w = windows(&lake, "kill");
        (!w.is_empty()).then_some(w)
    });
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].1, 6500, "every acknowledged event is in the window");
    assert!(got[0].2, "{got:?}");
    // Recorded once: a second restart reports nothing more.
    wait_for("the recovered window to be acknowledged", || {
        (stream_status(&agent, "http:kill")["windows_evaluated"] == 1).then_some(())
    });
    agent.kill9();
    let agent = start(&lake, &config, &[]);
    let r = post(&agent, "kill", "application/x-ndjson", ndjson(0, 1));
    assert_eq!(r.status, 200);
    assert_eq!(windows(&lake, "kill").len(), 1);
    assert_eq!(stream_status(&agent, "http:kill")["open_events"], 1);
}

#[test]
fn issue_8_malformed_lines_go_to_the_dead_letter_file_with_their_reasons() {
    let (lake, config) = stream_lake(
        &["dl"],
        "[[sources]]\nkind = \"http\"\ndataset = \"dl\"\nwindow = { rows = 4 }\n",
    );
    let agent = start(&lake, &config, &[]);
    let body = b"{\"id\": 1, \"score\": 0.5, \"kind\": \"a\"}\n\
{\"id\": \"2\", \"score\": 0.5}\n\
not json at all\n\
\n\
{\"id\": 3, \"colour\": \"red\"}\n\
{\"id\": 4.5}\n\
{\"id\": 5}\n\
{\"id\": 6, \"score\": 1}\n\
{\"id\": 7, \"score\": null, \"kind\": null}\n"
        .to_vec();
    let r = post(&agent, "dl", "application/x-ndjson", body);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["accepted"], 4);
    assert_eq!(r.body["rejected"], 4);
    let errors: Vec<(String, String)> = r.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["location"].as_str().unwrap().to_string(),
                e["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        errors[0],
        (
            "line 2".to_string(),
            "field `id`: expected an integer (Int64), got the string \"2\"".to_string()
        )
    );
    assert_eq!(errors[1].0, "line 3");
    assert!(errors[1].1.starts_with("not JSON: "), "{errors:?}");
    assert_eq!(
        errors[2],
        ("line 5".to_string(), "unknown field `colour`".to_string())
    );
    assert_eq!(
        errors[3],
        (
            "line 6".to_string(),
            "field `id`: expected an integer (Int64), got the number 4.5".to_string()
        )
    );

    let letters = dead_letters(&lake, "http-dl");
    assert_eq!(letters.len(), 4);
    assert_eq!(letters[0]["source"], "http:dl");
    assert_eq!(letters[0]["location"], "line 2");
    assert_eq!(letters[0]["event"], "{\"id\": \"2\", \"score\": 0.5}");
    assert_eq!(letters[2]["reason"], "unknown field `colour`");
    assert_eq!(letters[3]["event"], "{\"id\": 4.5}");

    // The four good events made one window (rows = 4).
    let got = wait_for("the window of good events", || {
        let w = windows(&lake, "dl");
        (!w.is_empty()).then_some(w)
    });
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, 4);
    let s = stream_status(&agent, "http:dl");
    assert_eq!(s["accepted"], 4);
    assert_eq!(s["rejected"], 4);
    // The same counts in telemetry.
    let metrics = agent.get("/metrics").1;
    let series = |name: &str, labels: &[&str]| -> Option<String> {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|x| l.contains(x)))
            .map(|l| l.rsplit(' ').next().unwrap().to_string())
    };
    assert_eq!(
        series(
            "driftwatch_stream_events_total",
            &["dataset=\"dl\"", "outcome=\"rejected\"", "source=\"http\""]
        )
        .as_deref(),
        Some("4"),
        "{metrics}"
    );
    assert_eq!(
        series(
            "driftwatch_stream_events_total",
            &["dataset=\"dl\"", "outcome=\"accepted\""]
        )
        .as_deref(),
        Some("4")
    );
    wait_for("the window to be acknowledged", || {
        (stream_status(&agent, "http:dl")["windows_evaluated"] == 1).then_some(())
    });
    let metrics = agent.get("/metrics").1;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("driftwatch_stream_windows_total{")
                && l.contains("state=\"evaluated\"")
                && l.ends_with(" 1")),
        "{metrics}"
    );

    // A body where nothing fits is a 400, and its lines are dead letters too.
    let r = post(
        &agent,
        "dl",
        "application/x-ndjson",
        b"[1]\n{\"id\": true}\n".to_vec(),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        (r.body["accepted"].as_u64(), r.body["rejected"].as_u64()),
        (Some(0), Some(2))
    );
    assert_eq!(dead_letters(&lake, "http-dl").len(), 6);
    // An Arrow IPC body with a column of the wrong type is refused whole.
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, true)]));
    let mut ipc = Vec::new();
    {
        let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut ipc, &schema).unwrap();
        w.write(
            &RecordBatch::try_new(schema.clone(), vec![Arc::new(StringArray::from(vec!["1"]))])
                .unwrap(),
        )
        .unwrap();
        w.finish().unwrap();
    }
    let r = post(&agent, "dl", "application/vnd.apache.arrow.stream", ipc);
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body["error"],
        "record batch 0: column `id` is Utf8, the stream's schema says Int64"
    );
    let letters = dead_letters(&lake, "http-dl");
    assert_eq!(letters.len(), 7);
    assert_eq!(letters[6]["location"], "the Arrow IPC body");
    assert_eq!(letters[6]["reason"], r.body["error"]);
    assert!(
        letters[6]["event"]
            .as_str()
            .unwrap()
            .starts_with("<Arrow IPC stream, "),
        "{}",
        letters[6]
    );
}

#[test]
fn issue_8_oversized_bodies_get_413_and_a_full_queue_gets_429_with_retry_after() {
    let (lake, config) = stream_lake(
        &["small", "busy"],
        "[[sources]]\nkind = \"http\"\ndataset = \"small\"\nmax_body = \"1KiB\"\n\
         [[sources]]\nkind = \"http\"\ndataset = \"busy\"\nmax_pending_events = 1000\nwindow = { seconds = 3 }\n",
    );
    let agent = start(&lake, &config, &[]);
    let r = post(&agent, "small", "application/x-ndjson", ndjson(0, 100));
    assert_eq!(r.status, 413);
    assert!(
        r.body["error"].as_str().unwrap().contains("at most 1024"),
        "{}",
        r.body
    );
    let r = post(&agent, "small", "application/x-ndjson", ndjson(0, 10));
    assert_eq!(r.status, 200, "{}", r.body);
    // Without a Content-Length (chunked), the limit holds while the body arrives.
    {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(agent.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let body = ndjson(0, 100);
        let mut request = "POST /ingest/small HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            .as_bytes()
            .to_vec();
        for part in body.chunks(500) {
            request.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            request.extend_from_slice(part);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"0\r\n\r\n");
        tcp.write_all(&request).unwrap();
        let mut answer = String::new();
        let _ = tcp.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("more than 1024"), "{answer}");
    }

    let r = post(&agent, "busy", "application/x-ndjson", ndjson(0, 800));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = post(&agent, "busy", "application/x-ndjson", ndjson(800, 300));
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.retry_after.as_deref(), Some("1"));
    assert_eq!(stream_status(&agent, "http:busy")["throttled"], 1);
    // Nothing of the refused body was taken; once the window is evaluated,
    // the same body goes through.
    let r = wait_for("the retried post to be accepted", || {
        let r = post(&agent, "busy", "application/x-ndjson", ndjson(800, 300));
        (r.status == 200).then_some(r)
    });
    assert_eq!(r.body["accepted"], 300);
    let got = wait_for("both windows", || {
        let w = windows(&lake, "busy");
        (w.len() >= 2).then_some(w)
    });
    assert_eq!(got.iter().map(|w| w.1).sum::<u64>(), 1100);

    // Wrong content type, unknown dataset.
    let r = post(&agent, "busy", "text/csv", b"id\n1\n".to_vec());
    assert_eq!(r.status, 415);
    let r = post(&agent, "nope", "application/x-ndjson", ndjson(0, 1));
    assert_eq!(r.status, 404);
    assert!(
        r.body["error"]
            .as_str()
            .unwrap()
            .contains("kind = \"http\"")
    );
}

#[test]
fn issue_8_a_bearer_token_guards_ingest() {
    let (lake, config) = stream_lake(
        &["sec"],
        "[[sources]]\nkind = \"http\"\ndataset = \"sec\"\nbearer_token_env = \"DW_INGEST_TOKEN\"\n",
    );
    let agent = start(&lake, &config, &[("DW_INGEST_TOKEN", "t0ken")]);
    let r = post(&agent, "sec", "application/x-ndjson", ndjson(0, 1));
    assert_eq!(r.status, 401);
    let r = post_with(
        &agent,
        "sec",
        "application/x-ndjson",
        ndjson(0, 1),
        Some("wrong"),
    );
    assert_eq!(r.status, 401);
    let r = post_with(
        &agent,
        "sec",
        "application/x-ndjson",
        ndjson(0, 1),
        Some("t0ken"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // `driftwatch status` lists the stream with its counts.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_driftwatch"))
        .args(["status", "--state"])
        .arg(lake.state())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let row: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("http:sec "))
        .unwrap_or_else(|| panic!("{text}"))
        .split_whitespace()
        .collect();
    assert_eq!(row, ["http:sec", "1", "0", "0", "0", "1", "-"], "{text}");
}

#[test]
fn issue_8_ndjson_files_in_the_lake_are_windowed_with_bad_lines_as_dead_letters() {
    let (lake, config) = stream_lake(
        &["files"],
        "[[sources]]\nkind = \"ndjson_files\"\ndataset = \"files\"\nsettle = \"200ms\"\nwindow = { rows = 1000, seconds = 2 }\n",
    );
    let agent = start(&lake, &config, &[]);
    let mut body = ndjson(0, 1500);
    body.extend_from_slice(b"{\"id\": \"x\"}\n");
    body.extend_from_slice(&ndjson(1500, 500));
    lake.land("events/a.ndjson", &body);
    let got = wait_for("two windows from the file", || {
        let w = windows(&lake, "files");
        (w.len() >= 2).then_some(w)
    });
    let mut rows: Vec<u64> = got.iter().map(|w| w.1).collect();
    rows.sort();
    assert_eq!(rows, vec![1000, 1000]);
    let letters = dead_letters(&lake, "ndjson_files-files");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["location"], "events/a.ndjson:1501");
    assert_eq!(
        letters[0]["reason"],
        "field `id`: expected an integer (Int64), got the string \"x\""
    );
    // Lines appended to the file are read on from where it was left; a
    // restart reads nothing twice.
    agent.terminate();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(lake.lake().join("events/a.ndjson"))
            .unwrap();
        f.write_all(&ndjson(2000, 10)).unwrap();
    }
    let agent = start(&lake, &config, &[]);
    let got = wait_for("the appended lines' window", || {
        let w = windows(&lake, "files");
        (w.len() >= 3).then_some(w)
    });
    assert_eq!(got.len(), 3);
    assert_eq!(got[2].1, 10);
    let s = stream_status(&agent, "ndjson_files:files");
    assert_eq!(s["accepted"], 10);
    assert_eq!(dead_letters(&lake, "ndjson_files-files").len(), 1);
    // A new file renamed into place under the same name is read whole.
    lake.land("events/a.ndjson", &ndjson(5000, 1000));
    let got = wait_for("the replaced file's window", || {
        let w = windows(&lake, "files");
        (w.len() >= 4).then_some(w)
    });
    assert_eq!(got[3].1, 1000);
    assert_eq!(
        stream_status(&agent, "ndjson_files:files")["accepted"],
        1010
    );
}

#[test]
fn issue_8_windows_get_drift_against_the_rolling_reference_like_files() {
    let (lake, config) = stream_lake(
        &[],
        "[[sources]]\nkind = \"http\"\ndataset = \"scores\"\nwindow = { rows = 5000 }\n",
    );
    std::fs::write(
        lake.path("rules/scores.yaml"),
        format!(
            "dataset: scores\n{EVENT_RULES}drift:\n  reference: {{ rolling: {{ batches: 1 }} }}\n  columns: [score]\n"
        ),
    )
    .unwrap();
    let agent = start(&lake, &config, &[]);
    // Window 1 and 2 from one distribution, window 3 shifted by 60.
    let events = |first: u64, shift: f64| {
        let mut out = Vec::new();
        for id in first..first + 5000 {
            out.extend_from_slice(
                format!(
                    "{{\"id\": {id}, \"score\": {}, \"kind\": \"k\"}}\n",
                    (id % 100) as f64 + shift
                )
                .as_bytes(),
            );
        }
        out
    };
    for (i, shift) in [0.0, 0.0, 60.0].into_iter().enumerate() {
        let r = post(
            &agent,
            "scores",
            "application/x-ndjson",
            events(i as u64 * 5000, shift),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        wait_for("the window's report", || {
            (windows(&lake, "scores").len() > i).then_some(())
        });
    }
    let reports: Vec<Value> = lake
        .results()
        .into_iter()
        .map(|r| r["reports"][0].clone())
        .filter(|r| r["dataset"] == "scores")
        .collect();
    assert_eq!(reports.len(), 3);
    assert!(
        reports[0]["drift"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "the first window has nothing to compare with: {}",
        reports[0]["drift"]
    );
    assert_eq!(
        reports[1]["drift"]["dataset_drift"], false,
        "{}",
        reports[1]["drift"]
    );
    assert_eq!(
        reports[2]["drift"]["dataset_drift"], true,
        "{}",
        reports[2]["drift"]
    );
    assert_eq!(reports[2]["passed"], false);
    assert_eq!(reports[2]["drift"]["columns"][0]["column"], "score");
}

#[test]
fn issue_8_clients_stalling_mid_body_get_408_and_do_not_block_other_posts() {
    use std::io::{Read, Write};
    let (lake, config) = stream_lake(
        &["slow"],
        "[[sources]]\nkind = \"http\"\ndataset = \"slow\"\nbody_timeout = \"1s\"\n",
    );
    let agent = start(&lake, &config, &[]);
    // More stalled clients than decode slots (one per core, at least two).
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let mut stalled: Vec<std::net::TcpStream> = (0..cores.max(2) + 1)
        .map(|_| {
            let mut tcp = std::net::TcpStream::connect(agent.addr).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            tcp.write_all(
                b"POST /ingest/slow HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-ndjson\r\nContent-Length: 1000\r\n\r\n{\"id\": 1",
            )
            .unwrap();
            tcp
        })
        .collect();
    // A well-behaved post still goes through once the stalled ones time out.
    let r = post(&agent, "slow", "application/x-ndjson", ndjson(0, 5));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["accepted"], 5);
    for tcp in &mut stalled {
        let mut answer = String::new();
        let _ = tcp.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("`body_timeout`"), "{answer}");
    }
    assert_eq!(stream_status(&agent, "http:slow")["accepted"], 5);
}

/// A rule file without a `schema` check: the stream's schema is inferred.
fn inferring_lake(dataset: &str, sources: &str) -> (Lake, PathBuf) {
    let (lake, config) = stream_lake(&[], sources);
    std::fs::write(
        lake.path(&format!("rules/{dataset}.yaml")),
        format!("dataset: {dataset}\nchecks:\n  - row_count: {{ min: 1 }}\n"),
    )
    .unwrap();
    (lake, config)
}

/// One event with `n` keys `c0`…: 119 KB for 10,000.
fn wide_event(n: usize) -> Vec<u8> {
    let fields: Vec<String> = (0..n).map(|i| format!("\"c{i}\": {i}")).collect();
    format!("{{{}}}\n", fields.join(", ")).into_bytes()
}

fn wal_bytes(lake: &Lake, stream_dir: &str) -> u64 {
    let dir = lake.state().join("streams").join(stream_dir).join("wal");
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.metadata().unwrap().len()).sum())
        .unwrap_or(0)
}

#[test]
fn issue_15_a_wide_first_post_is_refused_and_fixes_no_schema() {
    let (lake, config) = inferring_lake(
        "wide",
        "[[sources]]\nkind = \"http\"\ndataset = \"wide\"\ninfer_schema = true\nwindow = { rows = 100000, seconds = 3600 }\n",
    );
    let agent = start(&lake, &config, &[]);
    let wide = wide_event(10_000);
    assert!(wide.len() > 100_000, "{}", wide.len());
    let refused = post(&agent, "wide", "application/x-ndjson", wide);
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(
        refused.body["error"],
        "the events would fix an inferred schema of 10000 columns, more than max_columns = 1000; declare the schema in the rule file's `schema` check or raise `max_columns`"
    );
    // 90 KB of empty events after it: the schema comes from them, not from
    // the refused post, and the WAL stays the size of the input's order.
    let empty: Vec<u8> = b"{\"a\": 1}\n{}\n".repeat(90_000 / 12);
    let accepted = post(&agent, "wide", "application/x-ndjson", empty.clone());
    assert_eq!(accepted.status, 200, "{}", accepted.body);
    assert_eq!(accepted.body["accepted"], 2 * (90_000 / 12));
    let wal = wal_bytes(&lake, "http-wide");
    eprintln!("a {}-byte post wrote {wal} bytes of WAL", empty.len());
    assert!(wal < 1 << 20, "{wal} bytes of WAL");
    let schema =
        std::fs::read_to_string(lake.state().join("streams/http-wide/schema.json")).unwrap();
    let schema: Value = serde_json::from_str(&schema).unwrap();
    assert_eq!(schema.as_array().unwrap().len(), 1, "{schema}");
}

#[test]
fn issue_15_event_files_bound_line_length_and_schema_width() {
    let (lake, config) = inferring_lake(
        "lines",
        "[[sources]]\nkind = \"ndjson_files\"\ndataset = \"lines\"\nsettle = \"200ms\"\nmax_line = \"4KiB\"\nmax_columns = 5\nwindow = { rows = 1000, seconds = 1 }\n",
    );
    let agent = start(&lake, &config, &[]);
    // Too wide for max_columns = 5 (and short enough for max_line): the
    // chunk's lines are dead letters and no schema is held.
    lake.land("events/a.ndjson", &wide_event(6));
    wait_for("the wide line's dead letter", || {
        (dead_letters(&lake, "ndjson_files-lines").len() == 1).then_some(())
    });
    let letters = dead_letters(&lake, "ndjson_files-lines");
    assert_eq!(letters[0]["location"], "events/a.ndjson:1");
    assert_eq!(
        letters[0]["reason"],
        "the events would fix an inferred schema of 6 columns, more than max_columns = 5; declare the schema in the rule file's `schema` check or raise `max_columns`"
    );
    // A 10 MB line without a line break between two good ones: a dead letter
    // ("line longer than 4096 bytes"), and reading goes on.
    let mut body = b"{\"id\": 1}\n".to_vec();
    body.extend_from_slice(b"{\"id\": \"");
    body.extend(std::iter::repeat_n(b'x', 10 << 20));
    body.extend_from_slice(b"\"}\n{\"id\": 2}\n");
    lake.land("events/b.ndjson", &body);
    let got = wait_for("the window of the two good lines", || {
        let w = windows(&lake, "lines");
        (!w.is_empty()).then_some(w)
    });
    assert_eq!(got[0].1, 2);
    let letters = dead_letters(&lake, "ndjson_files-lines");
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[1]["location"], "events/b.ndjson:2");
    assert_eq!(letters[1]["reason"], "line longer than 4096 bytes");
    assert!(letters[1]["event"].as_str().unwrap().len() <= 4098);
    assert_eq!(stream_status(&agent, "ndjson_files:lines")["accepted"], 2);
}

#[test]
fn issue_15_sparse_events_under_a_wide_schema_are_refused_before_the_wal() {
    let (lake, config) = inferring_lake(
        "sparse",
        "[[sources]]\nkind = \"http\"\ndataset = \"sparse\"\ninfer_schema = true\nwindow = { rows = 1000000, seconds = 3600 }\n",
    );
    let agent = start(&lake, &config, &[]);
    // 1,000 columns: within max_columns, so the schema is held.
    let first = post(&agent, "sparse", "application/x-ndjson", wide_event(1000));
    assert_eq!(first.status, 200, "{}", first.body);
    let before = wal_bytes(&lake, "http-sparse");
    // 30 KB of `{}`: 10,000 rows of 1,000 int64 columns, ~80 MB of frames.
    let sparse = b"{}\n".repeat(10_000);
    let refused = post(&agent, "sparse", "application/x-ndjson", sparse);
    assert_eq!(refused.status, 413, "{}", refused.body);
    let error = refused.body["error"].as_str().unwrap();
    // Refused before decoding, from a lower bound of the rows' size: 10,000
    // rows × 1,000 columns × (64 value bits + 1 validity bit).
    assert_eq!(
        error,
        "the events would take 81250000 bytes in the write-ahead log, more than the 67108864 allowed for 30000 bytes of input (64× the input, at least 67108864 bytes); send fewer events per post or declare a narrower schema"
    );
    assert_eq!(wal_bytes(&lake, "http-sparse"), before, "nothing written");
    // The same events in posts the budget allows are taken.
    let ok = post(
        &agent,
        "sparse",
        "application/x-ndjson",
        b"{}\n".repeat(2_000),
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body["accepted"], 2_000);
}
