//! Issue 15 (hardening): each test reproduces one way the agent or `check`
//! could be crashed, wedged or made to lose or misreport a batch, against
//! the real binary, with real faults where the machine allows (descriptor
//! limits lowered on the running process with `prlimit`, a full tmpfs under
//! the state folder). Waits poll with the shared deadline.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch};
use serde_json::Value;

use crate::agent::{Agent, Lake, RULES, sources, wait_for, wait_results};
use crate::common::{driftwatch, text, write_parquet};
use crate::streams::{dead_letters, post, start, stream_lake};

/// A config with a quarantine folder and a short settle time.
fn quarantine_agent(lake: &Lake) -> Agent {
    std::fs::write(
        lake.path("driftwatch.toml"),
        "watch = [\"lake\"]\nrules = \"rules\"\nstate = \"state\"\n\n[lake]\nsettle = \"200ms\"\n\
         quarantine = \"quarantine\"\n\n[http]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let args: Vec<String> = vec![
        "run".into(),
        "--config".into(),
        lake.path("driftwatch.toml").display().to_string(),
    ];
    Agent::spawn(lake, &args, &lake.state())
}

/// Peak resident memory of a process, in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024
}

/// The agent's "recovered:" log line (how long the episode lasted).
fn recovery_line(agent: &Agent) -> String {
    agent
        .log_text()
        .lines()
        .find(|l| l.contains("recovered:"))
        .map(|l| l.chars().filter(|c| !c.is_control()).collect())
        .unwrap_or_default()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| text(&o.stdout).trim() == "0")
}

/// An Arrow IPC stream of one batch `x: Int64` whose record batch claims a
/// `claimed`-byte body (the patched `bodyLength` of the attack).
fn ipc_with_body_length(claimed: i64) -> Vec<u8> {
    let batch = RecordBatch::try_from_iter([(
        "id",
        Arc::new(Int64Array::from(vec![1, 2, 3])) as arrow::array::ArrayRef,
    )])
    .unwrap();
    let mut out = Vec::new();
    let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut out, &batch.schema()).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
    drop(w);
    let mut pos = 0;
    loop {
        let len = i32::from_le_bytes(out[pos + 4..pos + 8].try_into().unwrap()) as usize;
        let meta = pos + 8..pos + 8 + len;
        let message = arrow_ipc::root_as_message(&out[meta.clone()]).unwrap();
        let body = message.bodyLength();
        if message.header_as_record_batch().is_some() {
            let at = out[meta.clone()]
                .windows(8)
                .position(|w| w == body.to_le_bytes())
                .unwrap();
            out[meta.start + at..meta.start + at + 8].copy_from_slice(&claimed.to_le_bytes());
            return out;
        }
        pos = meta.end + body as usize;
    }
}

#[test]
fn issue_15_an_ipc_post_claiming_a_huge_message_body_is_refused_and_the_agent_lives() {
    let (lake, config) = stream_lake(
        &["orders"],
        "[[sources]]\nkind = \"http\"\ndataset = \"orders\"\n",
    );
    let agent = start(&lake, &config, &[]);
    let attack = ipc_with_body_length(1 << 62);
    assert!(attack.len() < 400, "{} bytes", attack.len());
    let r = post(
        &agent,
        "orders",
        "application/vnd.apache.arrow.stream",
        attack,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let error = r.body["error"].as_str().unwrap();
    assert!(
        error.starts_with(
            "not an Arrow IPC stream: message 1 claims a 4611686018427387904-byte body"
        ),
        "{error}"
    );
    assert_eq!(agent.get("/healthz").0, 200);
    let ok = post(
        &agent,
        "orders",
        "application/x-ndjson",
        crate::streams::ndjson(1, 10),
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body["accepted"], 10);
}

#[test]
fn issue_15_a_post_of_junk_lines_writes_bounded_dead_letters_and_memory_stays_flat() {
    let (lake, config) = stream_lake(
        &["orders"],
        "[[sources]]\nkind = \"http\"\ndataset = \"orders\"\nmax_body = \"16MiB\"\n",
    );
    let agent = start(&lake, &config, &[]);
    let before = peak_rss_mib(agent.pid());
    // 8 MiB of `x\n`: 4,194,304 events, none of them JSON.
    let junk = b"x\n".repeat(4 << 20);
    let r = post(&agent, "orders", "application/x-ndjson", junk);
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["accepted"], 0);
    assert_eq!(r.body["rejected"], 4_194_304);
    assert_eq!(r.body["errors"].as_array().unwrap().len(), 10);
    let file = lake.state().join("streams/http-orders/dead-letters.ndjson");
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(
        size <= driftwatch::sources::stream::DEAD_LETTER_BUDGET as u64 + 1024,
        "{size} bytes of dead letters"
    );
    let letters = dead_letters(&lake, "http-orders");
    let kept = letters.len() as u64 - 1;
    assert_eq!(letters[0]["location"], "line 1");
    let last = letters.last().unwrap();
    // Letters are kept while they stay within 4 bytes per byte of input
    // (+ 4 KiB, at most 1 MiB); the summary spans the lines left out.
    let span = last["location"].as_str().unwrap();
    assert!(
        span.starts_with("line ") && span.ends_with(" to line 4194304"),
        "{span}"
    );
    assert!(
        last["reason"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{} more rejected events", 4_194_304 - kept)),
        "{last}"
    );
    let after = peak_rss_mib(agent.pid());
    eprintln!(
        "figures: 8 MiB junk post → {size} bytes of dead letters ({} letters); peak RSS {before} → {after} MiB",
        letters.len()
    );
    // Before the budget this post took the agent from 49 MB to 2.1 GB.
    assert!(
        after < 400,
        "peak RSS {before} MiB before, {after} MiB after"
    );
    assert_eq!(agent.get("/healthz").0, 200);
}

#[test]
fn issue_15_a_file_met_while_descriptors_are_exhausted_is_retried_not_quarantined() {
    let lake = Lake::new(RULES);
    let agent = quarantine_agent(&lake);
    let pid = agent.pid();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let soft: String = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .unwrap()
        .to_string();
    let set_soft = |n: &str| {
        let done = Command::new("prlimit")
            .args(["--pid", &pid.to_string(), &format!("--nofile={n}:")])
            .status()
            .unwrap();
        assert!(done.success(), "prlimit --nofile={n}:");
    };
    // No descriptor left for anything new: a new descriptor takes the lowest
    // free number, which must be below the limit, and 0-2 are taken.
    set_soft("3");
    let landed = lake.land("f.parquet", &lake.bytes(500, 1, 0));
    wait_for("the degraded episode to be logged", || {
        agent.log_text().contains("degraded:").then_some(())
    });
    assert!(
        lake.results().is_empty(),
        "a transient fault became a verdict"
    );
    assert!(landed.exists(), "a valid file was quarantined");
    assert!(!lake.path("quarantine/f.parquet").exists());
    set_soft(&soft);
    let r = wait_results(&lake, &agent, 1);
    assert_eq!(sources(&r), [landed.display().to_string()]);
    assert_eq!(r[0]["reports"][0]["passed"], true);
    assert_eq!(r[0]["reports"][0]["rows"], 500);
    wait_for("the recovery to be logged", || {
        agent.log_text().contains("recovered:").then_some(())
    });
    eprintln!("figures: {}", recovery_line(&agent));
    assert_eq!(agent.status()["agent"]["degraded"], Value::Null);
    assert_eq!(agent.get("/readyz").0, 200);
    let metrics = agent.get("/metrics").1;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("driftwatch_batch_retries_total{")
                && l.contains("stage=\"evaluate\"")),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("driftwatch_agent_degraded") && l.ends_with(" 0"))
    );
    // One log line for the episode, not one per try.
    assert_eq!(
        agent
            .log_text()
            .matches("degraded: the environment keeps batches")
            .count(),
        1
    );
}

/// A tmpfs mounted on a folder for the life of the value.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` where mounting is not allowed (root in a container without
    /// CAP_SYS_ADMIN): the caller says so and skips.
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let done = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .ok()?;
        done.success().then(|| Tmpfs(at.to_path_buf()))
    }

    /// Fills the file system; returns the filler's path.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
        // Whatever is left in smaller pieces.
        while f.write_all(&[0u8; 512]).is_ok() {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn issue_15_a_full_disk_under_the_state_folder_delays_records_and_never_tears_or_repeats_the_log() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let lake = Lake::new(RULES);
    let Some(disk) = Tmpfs::mount(&lake.state(), "24m") else {
        eprintln!("skipped: this machine does not allow mounting a tmpfs");
        return;
    };
    let agent = Agent::start(&lake, &[]);
    let first = lake.land("a.parquet", &lake.bytes(400, 1, 0));
    wait_results(&lake, &agent, 1);
    let filler = disk.fill();
    let second = lake.land("b.parquet", &lake.bytes(400, 2, 0));
    let third = lake.land("c.parquet", &lake.bytes(400, 3, 0));
    wait_for("the degraded episode to be logged", || {
        agent.log_text().contains("degraded:").then_some(())
    });
    let degraded = agent.status()["agent"]["degraded"].clone();
    assert_ne!(degraded, Value::Null);
    assert_eq!(agent.get("/readyz").0, 503);
    // The agent still answers and is not yet stuck.
    assert_eq!(agent.get("/healthz").0, 200);
    std::fs::remove_file(&filler).unwrap();
    let r = wait_results(&lake, &agent, 3);
    let mut got = sources(&r);
    assert_eq!(got[0], first.display().to_string());
    got.sort();
    let mut want = vec![
        first.display().to_string(),
        second.display().to_string(),
        third.display().to_string(),
    ];
    want.sort();
    assert_eq!(got, want);
    let seqs: Vec<u64> = r
        .iter()
        .map(|l| l["agent"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
    wait_for("the recovery to be logged", || {
        agent.log_text().contains("recovered:").then_some(())
    });
    eprintln!("figures: {}", recovery_line(&agent));
    assert_eq!(agent.status()["agent"]["degraded"], Value::Null);
    assert_eq!(agent.terminate(), Some(0));
    // A restart appends nothing again (every line of the log parses: a torn
    // line would have made `results()` panic).
    let agent = Agent::start(&lake, &[]);
    assert_eq!(lake.results().len(), 3);
    assert_eq!(agent.terminate(), Some(0));
    assert_eq!(lake.results().len(), 3);
}

#[test]
fn issue_15_quarantine_never_overwrites_an_earlier_quarantined_file() {
    let lake = Lake::new(RULES);
    let agent = quarantine_agent(&lake);
    lake.land("x.parquet", b"PAR1 first broken writer");
    wait_for("the first corrupt file to be quarantined", || {
        lake.path("quarantine/x.parquet").exists().then_some(())
    });
    lake.land("x.parquet", b"PAR1 the second broken writer");
    wait_for(
        "the second corrupt file to be quarantined beside it",
        || lake.path("quarantine/x.parquet.1").exists().then_some(()),
    );
    assert_eq!(
        std::fs::read(lake.path("quarantine/x.parquet")).unwrap(),
        b"PAR1 first broken writer"
    );
    assert_eq!(
        std::fs::read(lake.path("quarantine/x.parquet.1")).unwrap(),
        b"PAR1 the second broken writer"
    );
    let r = wait_results(&lake, &agent, 2);
    assert!(r.iter().all(|l| l["reports"][0]["error"].is_string()));
}

/// A one-column Parquet file of `n` rows.
fn ids(path: &Path, n: i64) {
    let batch = RecordBatch::try_from_iter([(
        "id",
        Arc::new(Int64Array::from_iter_values(0..n)) as arrow::array::ArrayRef,
    )])
    .unwrap();
    write_parquet(path, &batch, 1000);
}

fn check_json(args: &[&str]) -> (Option<i32>, Value, String) {
    let out = driftwatch(args);
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), json, text(&out.stderr))
}

#[test]
fn issue_15_file_names_with_glob_characters_are_read_as_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    ids(&data.join("a1.parquet"), 3);
    ids(&data.join("a[1].parquet"), 5);
    ids(&data.join("b[x].parquet"), 2);
    ids(&data.join("c*.parquet"), 7);
    ids(&data.join("d{e,f}?.parquet"), 11);
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, "dataset: ids\nchecks:\n  - not_null: id\n").unwrap();
    let (code, json, stderr) = check_json(&[
        "check",
        data.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code, Some(0), "{json}\n{stderr}");
    let mut rows: Vec<(String, u64)> = json["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert!(r["error"].is_null(), "{r}");
            let source = r["source"].as_str().unwrap();
            let name = Path::new(source).file_name().unwrap().to_str().unwrap();
            (name.to_string(), r["rows"].as_u64().unwrap())
        })
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        [
            ("a1.parquet".to_string(), 3),
            ("a[1].parquet".to_string(), 5),
            ("b[x].parquet".to_string(), 2),
            ("c*.parquet".to_string(), 7),
            ("d{e,f}?.parquet".to_string(), 11),
        ]
    );
}

#[test]
fn issue_15_a_zero_byte_file_is_a_data_error_not_an_empty_table() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.parquet");
    std::fs::write(&empty, b"").unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, "dataset: ids\nchecks:\n  - row_count: { max: 0 }\n").unwrap();
    let (code, json, _) = check_json(&[
        "check",
        empty.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code, Some(2), "{json}");
    assert_eq!(
        json["reports"][0]["error"],
        format!(
            "{}: cannot read Parquet input: not a Parquet file: 0 bytes",
            empty.display()
        )
    );
}

#[test]
fn issue_15_control_characters_in_file_names_cannot_forge_output_lines() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("evil\nPASSED \u{1b}[2Jforged.parquet"),
        b"PAR1 not really",
    )
    .unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, "dataset: ids\nchecks:\n  - not_null: id\n").unwrap();
    let out = driftwatch(&[
        "check",
        data.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
    ]);
    let table = text(&out.stdout);
    assert!(!table.contains('\u{1b}'), "{table}");
    assert!(
        !table.lines().any(|l| l.starts_with("PASSED")),
        "a file name forged a line:\n{table}"
    );
    assert!(
        table.contains("evil\\u{a}PASSED \\u{1b}[2Jforged.parquet"),
        "{table}"
    );
}

#[test]
fn issue_15_a_lake_that_vanishes_and_returns_is_reported_degraded_and_nothing_is_evaluated_again() {
    let lake = Lake::new(RULES);
    let agent = Agent::start(&lake, &[]);
    let first = lake.land("d=1/a.parquet", &lake.bytes(300, 1, 0));
    wait_results(&lake, &agent, 1);
    // The mount goes away (here: the folder is moved aside) ...
    let aside = lake.path("aside");
    std::fs::rename(lake.lake(), &aside).unwrap();
    let degraded = wait_for("the missing lake to make the agent degraded", || {
        let d = agent.status()["agent"]["degraded"].clone();
        (!d.is_null()).then_some(d)
    });
    assert!(
        degraded["reason"]
            .as_str()
            .unwrap()
            .starts_with(&format!("cannot list {}", lake.lake().display())),
        "{degraded}"
    );
    assert_eq!(agent.get("/readyz").0, 503);
    // ... and comes back, with a file that landed meanwhile.
    std::fs::write(aside.join("d=1/b.parquet"), lake.bytes(300, 2, 0)).unwrap();
    std::fs::rename(&aside, lake.lake()).unwrap();
    wait_for("the agent to recover", || {
        agent.status()["agent"]["degraded"].is_null().then_some(())
    });
    let r = wait_results(&lake, &agent, 2);
    assert_eq!(
        sources(&r),
        [
            first.display().to_string(),
            lake.lake().join("d=1/b.parquet").display().to_string()
        ]
    );
    // Watched again: a file renamed in now is seen by its event.
    let third = lake.land("d=2/c.parquet", &lake.bytes(300, 3, 0));
    let r = wait_results(&lake, &agent, 3);
    assert_eq!(sources(&r)[2], third.display().to_string());
    assert_eq!(lake.results().len(), 3);
    assert_eq!(agent.log_text().matches("degraded:").count(), 1);
}

#[test]
fn issue_15_ingest_through_random_sigkills_evaluates_every_acknowledged_event_once() {
    let (lake, config) = stream_lake(
        &["orders"],
        "[[sources]]\nkind = \"http\"\ndataset = \"orders\"\nwindow = { rows = 5000, seconds = 1 }\n",
    );
    // A fixed-seed generator: the kill points are arbitrary, the run repeatable.
    let mut rng = crate::faults::Lcg::new(0x2545_f491_4f6c_dd1d);
    let (mut acknowledged, mut unknown) = (0u64, 0u64);
    let mut first_id = 1u64;
    for _ in 0..4 {
        let agent = start(&lake, &config, &[]);
        let addr = agent.addr;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let poster = {
            let stop = stop.clone();
            let start_id = first_id;
            std::thread::spawn(move || {
                driftwatch::tls::ensure_crypto_provider();
                let client = reqwest::blocking::Client::builder()
                    .timeout(std::time::Duration::from_secs(30))
                    .build()
                    .unwrap();
                let (mut ok, mut lost, mut id) = (0u64, 0u64, start_id);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let body = crate::streams::ndjson(id, 700);
                    id += 700;
                    let sent = client
                        .post(format!("http://{addr}/ingest/orders"))
                        .header("content-type", "application/x-ndjson")
                        .body(body)
                        .send();
                    match sent {
                        Ok(r) if r.status().as_u16() == 200 => ok += 700,
                        Ok(r) if r.status().as_u16() == 429 => {}
                        // Killed mid-post: the events may or may not be in.
                        _ => {
                            lost += 700;
                            break;
                        }
                    }
                }
                (ok, lost, id)
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(150 + rng.below(600)));
        agent.kill9();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (ok, lost, id) = poster.join().unwrap();
        acknowledged += ok;
        unknown += lost;
        first_id = id;
    }
    assert!(acknowledged > 0);
    // A last start finishes every window left.
    let agent = start(&lake, &config, &[]);
    let rows = || -> (u64, Vec<String>) {
        let reports: Vec<Value> = lake
            .results()
            .iter()
            .map(|r| r["reports"][0].clone())
            .filter(|r| r["dataset"] == "orders")
            .collect();
        (
            reports.iter().map(|r| r["rows"].as_u64().unwrap()).sum(),
            reports
                .iter()
                .map(|r| r["source"].as_str().unwrap().to_string())
                .collect(),
        )
    };
    let (total, windows) = wait_for(
        "every acknowledged event to be in a reported window",
        || {
            let s = crate::streams::stream_status(&agent, "http:orders");
            let (total, windows) = rows();
            (s["pending_events"] == 0 && total >= acknowledged).then_some((total, windows))
        },
    );
    assert!(
        total <= acknowledged + unknown,
        "{total} rows reported for {acknowledged} acknowledged and {unknown} unanswered events"
    );
    eprintln!(
        "4 SIGKILLs: {acknowledged} events acknowledged, {unknown} unanswered, {total} in {} windows",
        windows.len()
    );
    let mut distinct = windows.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), windows.len(), "a window was reported twice");
    assert_eq!(agent.terminate(), Some(0));
    assert_eq!(rows().0, total);
}

#[test]
fn issue_15_a_relative_watch_path_sees_file_events() {
    let lake = Lake::new(RULES);
    // Listings once an hour: only the file's own event can bring it in time.
    std::fs::write(lake.path("slow.toml"), "[lake]\nrescan = \"1h\"\n").unwrap();
    let args: Vec<String> = [
        "run",
        "--config",
        "slow.toml",
        "--watch",
        "lake",
        "--rules",
        "rules",
        "--state",
        "state",
        "--listen",
        "127.0.0.1:0",
        "--settle",
        "300ms",
    ]
    .map(String::from)
    .to_vec();
    let agent = Agent::spawn_in(&lake, &args, &lake.state(), lake.dir.path());
    let landed = lake.land("d=1/f.parquet", &lake.bytes(300, 1, 0));
    let r = wait_results(&lake, &agent, 1);
    // Reported under the resolved folder, however `--watch` was spelled.
    assert_eq!(
        sources(&r),
        [landed.canonicalize().unwrap().display().to_string()]
    );
}

#[test]
fn issue_15_symbolic_links_in_the_lake_are_not_followed() {
    let lake = Lake::new(RULES);
    let outside = lake.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("x.parquet"), lake.bytes(100, 7, 0)).unwrap();
    std::os::unix::fs::symlink(outside.join("x.parquet"), lake.lake().join("link.parquet"))
        .unwrap();
    std::os::unix::fs::symlink(&outside, lake.lake().join("dirlink")).unwrap();
    let agent = Agent::start(&lake, &[]);
    let landed = lake.land("real.parquet", &lake.bytes(200, 8, 0));
    wait_results(&lake, &agent, 1);
    // A file landing behind the folder link raises no event here either,
    // and links made while the agent runs are not followed.
    std::fs::write(outside.join("y.parquet"), lake.bytes(100, 9, 0)).unwrap();
    std::fs::write(outside.join("z.parquet"), lake.bytes(100, 11, 0)).unwrap();
    std::os::unix::fs::symlink(
        outside.join("z.parquet"),
        lake.lake().join("new-link.parquet"),
    )
    .unwrap();
    std::os::unix::fs::symlink(&outside, lake.lake().join("new-dirlink")).unwrap();
    let later = lake.land("later.parquet", &lake.bytes(200, 10, 0));
    wait_results(&lake, &agent, 2);
    // Stopping finishes anything queued: still only the two real files.
    assert_eq!(agent.terminate(), Some(0));
    assert_eq!(
        sources(&lake.results()),
        [landed.display().to_string(), later.display().to_string()]
    );
}

#[test]
fn issue_15_an_ndjson_source_never_reads_the_dead_letters_of_a_state_folder_inside_it() {
    let (lake, _) = stream_lake(&["files"], "");
    // The state folder inside the folder the source reads.
    let config = lake.path("inside.toml");
    std::fs::write(
        &config,
        "rules = \"rules\"\nstate = \"lake/state\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [[sources]]\nkind = \"ndjson_files\"\ndataset = \"files\"\npath = \"lake\"\nsettle = \"200ms\"\n\
         window = { rows = 1000, seconds = 1 }\n",
    )
    .unwrap();
    let args: Vec<String> = vec![
        "run".into(),
        "--config".into(),
        config.display().to_string(),
    ];
    let state = lake.lake().join("state");
    let agent = Agent::spawn(&lake, &args, &state);
    let mut body = crate::streams::ndjson(0, 10);
    body.extend_from_slice(b"{\"id\": \"x\"}\n");
    lake.land("a.ndjson", &body);
    wait_for("the bad line's dead letter", || {
        (crate::streams::stream_status(&agent, "ndjson_files:files")["rejected"] == 1).then_some(())
    });
    // A second file is read by a listing that also sees the dead-letter file.
    lake.land("b.ndjson", &crate::streams::ndjson(10, 10));
    wait_for("the second file's events", || {
        (crate::streams::stream_status(&agent, "ndjson_files:files")["accepted"] == 20)
            .then_some(())
    });
    let s = crate::streams::stream_status(&agent, "ndjson_files:files");
    assert_eq!(s["rejected"], 1, "{s}");
    let letters =
        std::fs::read_to_string(state.join("streams/ndjson_files-files/dead-letters.ndjson"))
            .unwrap();
    assert_eq!(letters.lines().count(), 1, "{letters}");
}

/// `path`'s footer with `n` unknown fields appended, each a `list<bool>`
/// claiming 2³¹−1 elements in 8 bytes: the parquet crate's skipper iterates
/// over each element without reading (seconds per field).
fn with_boolean_bomb_footer(path: &Path, n: usize) {
    let bytes = std::fs::read(path).unwrap();
    let len = bytes.len();
    let footer_len = u32::from_le_bytes(bytes[len - 8..len - 4].try_into().unwrap()) as usize;
    let footer = &bytes[len - 8 - footer_len..len - 8];
    assert_eq!(footer.last(), Some(&0), "a footer ends with its stop byte");
    let field = [0x09, 0xC8, 0x01, 0xF1, 0xFF, 0xFF, 0xFF, 0xFF, 0x07];
    let mut out = bytes[..len - 8 - footer_len].to_vec();
    out.extend_from_slice(&footer[..footer.len() - 1]);
    for _ in 0..n {
        out.extend_from_slice(&field);
    }
    out.push(0);
    out.extend_from_slice(&((footer.len() - 1 + n * field.len() + 1) as u32).to_le_bytes());
    out.extend_from_slice(b"PAR1");
    std::fs::write(path, out).unwrap();
}

#[test]
fn issue_15_fuzz_a_footer_the_parquet_crate_would_skip_through_for_hours_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    ids(&data.join("good.parquet"), 3);
    ids(&data.join("bomb.parquet"), 3);
    // 64 fields: about 64 × 10 s of skipping before the guard.
    with_boolean_bomb_footer(&data.join("bomb.parquet"), 64);
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, "dataset: ids\nchecks:\n  - not_null: id\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_driftwatch"))
        .args([
            "check",
            data.to_str().unwrap(),
            "--rules",
            rules.to_str().unwrap(),
        ])
        .args(["--format", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A generous bound, not a timing: without the guard this runs for ~10 min.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("check is still skipping through the footer after 120 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let reports = json["reports"].as_array().unwrap();
    let by_name = |name: &str| {
        reports
            .iter()
            .find(|r| r["source"].as_str().unwrap().ends_with(name))
            .unwrap()
    };
    assert_eq!(by_name("good.parquet")["rows"], 3);
    let bomb = by_name("bomb.parquet");
    assert_eq!(
        bomb["error"].as_str().unwrap(),
        format!(
            "{}: cannot read Parquet input: not a valid Parquet file: the footer: a container \
             claims 2147483647 boolean elements, more than the structure has bytes",
            data.join("bomb.parquet").display()
        )
    );
}
