//! `driftwatch run` end to end: the real binary against a temporary lake.
//! Every wait polls for the outcome with a generous deadline; sleeps appear
//! only where a test *makes* time pass (a slow writer, a crash schedule).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use driftwatch::demo::{Defects, FlightsSpec, write_flights};
use serde_json::Value;

use crate::common::text;

pub(crate) const DEADLINE: Duration = Duration::from_secs(60);

/// Polls `f` until it returns Some, or panics after `DEADLINE` naming `what`.
pub(crate) fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// GET `path` from `addr` (blocking); `(0, "")` when nothing answers.
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(driftwatch::agent::http_get(
        addr,
        path,
        Duration::from_secs(10),
    ))
    .unwrap_or((0, String::new()))
}

/// A lake, its rules and state folder, in one temp dir.
pub(crate) struct Lake {
    pub(crate) dir: tempfile::TempDir,
}

impl Lake {
    pub(crate) fn new(rules: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("lake")).unwrap();
        std::fs::create_dir_all(dir.path().join("rules")).unwrap();
        std::fs::create_dir_all(dir.path().join("staging")).unwrap();
        std::fs::write(dir.path().join("rules/flights.yaml"), rules).unwrap();
        Lake { dir }
    }
    pub(crate) fn lake(&self) -> PathBuf {
        self.dir.path().join("lake")
    }
    pub(crate) fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    /// Flights-shaped Parquet bytes.
    pub(crate) fn bytes(&self, rows: u64, seed: u64, shift: i64) -> Vec<u8> {
        let tmp = self.path(&format!("staging/gen-{seed}-{rows}-{shift}.bin"));
        write_flights(
            &tmp,
            &FlightsSpec {
                rows,
                row_group_rows: 1000,
                seed,
                first_row_id: 1,
                defects: Defects::default(),
                delay_shift: shift,
                ..FlightsSpec::default()
            },
        )
        .unwrap();
        let bytes = std::fs::read(&tmp).unwrap();
        std::fs::remove_file(&tmp).unwrap();
        bytes
    }
    /// Writes a file under a temporary name outside the lake and renames it into place.
    pub(crate) fn land(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let target = self.lake().join(rel);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        let tmp = self.path("staging/landing.tmp");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, &target).unwrap();
        target
    }
    pub(crate) fn results(&self) -> Vec<Value> {
        results(&self.state())
    }
}

fn results(state: &Path) -> Vec<Value> {
    std::fs::read_to_string(state.join("results.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a results-log line is JSON"))
        .collect()
}

pub(crate) fn sources(results: &[Value]) -> Vec<String> {
    results
        .iter()
        .map(|r| r["reports"][0]["source"].as_str().unwrap().to_string())
        .collect()
}

pub(crate) const RULES: &str =
    "dataset: flights\nchecks:\n  - not_null: carrier\n  - row_count: { min: 1 }\n";

/// A running `driftwatch run`.
pub(crate) struct Agent {
    child: Child,
    pub(crate) addr: SocketAddr,
    log: PathBuf,
}

impl Agent {
    pub(crate) fn start(lake: &Lake, extra: &[&str]) -> Agent {
        let agent = Self::start_unready(lake, extra);
        wait_for("/readyz", || (agent.get("/readyz").0 == 200).then_some(()));
        agent
    }

    /// Like `start`, with extra environment variables for the agent process.
    pub(crate) fn start_with_env(lake: &Lake, extra: &[&str], env: &[(&str, &str)]) -> Agent {
        let agent = Self::start_unready_with_env(lake, extra, env);
        wait_for("/readyz", || (agent.get("/readyz").0 == 200).then_some(()));
        agent
    }

    /// Like `start`, without waiting for `/readyz` (an agent that starts degraded).
    pub(crate) fn start_unready(lake: &Lake, extra: &[&str]) -> Agent {
        Self::start_unready_with_env(lake, extra, &[])
    }

    /// Like `start_unready`, with extra environment variables.
    pub(crate) fn start_unready_with_env(
        lake: &Lake,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Agent {
        let mut args: Vec<String> = vec![
            "run".into(),
            "--watch".into(),
            lake.lake().display().to_string(),
            "--rules".into(),
            lake.path("rules").display().to_string(),
            "--state".into(),
            lake.state().display().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ];
        if !extra.contains(&"--settle") {
            args.extend(["--settle".to_string(), "300ms".to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::start_process(lake, &args, &lake.state(), env, None, false)
    }

    pub(crate) fn spawn(lake: &Lake, args: &[String], state: &Path) -> Agent {
        Self::spawn_with_env(lake, args, state, &[])
    }

    /// Like `spawn`, in the working directory `cwd` (relative paths in `args`
    /// are resolved there).
    pub(crate) fn spawn_in(lake: &Lake, args: &[String], state: &Path, cwd: &Path) -> Agent {
        Self::start_process(lake, args, state, &[], Some(cwd), true)
    }

    /// Like `spawn`, with extra environment variables for the agent process.
    pub(crate) fn spawn_with_env(
        lake: &Lake,
        args: &[String],
        state: &Path,
        env: &[(&str, &str)],
    ) -> Agent {
        Self::start_process(lake, args, state, env, None, true)
    }

    /// Like `spawn_with_env`, without waiting for `/readyz` (an agent that
    /// starts degraded never says ready).
    pub(crate) fn spawn_unready(
        lake: &Lake,
        args: &[String],
        state: &Path,
        env: &[(&str, &str)],
    ) -> Agent {
        Self::launch(lake, args, state, env, None)
    }

    fn start_process(
        lake: &Lake,
        args: &[String],
        state: &Path,
        env: &[(&str, &str)],
        cwd: Option<&Path>,
        ready: bool,
    ) -> Agent {
        let agent = Self::launch(lake, args, state, env, cwd);
        if ready {
            wait_for("/readyz", || (agent.get("/readyz").0 == 200).then_some(()));
        }
        agent
    }

    fn launch(
        lake: &Lake,
        args: &[String],
        state: &Path,
        env: &[(&str, &str)],
        cwd: Option<&Path>,
    ) -> Agent {
        let n = std::fs::read_dir(lake.dir.path()).unwrap().count();
        let log = lake.path(&format!("agent-{n}.log"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_driftwatch"));
        if let Some(dir) = cwd {
            command.current_dir(dir);
        }
        let child = command
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start driftwatch run");
        let pid = child.id();
        let mut agent = Agent {
            child,
            addr: "127.0.0.1:1".parse().unwrap(),
            log,
        };
        agent.addr = wait_for("agent.json of the new agent", || {
            if let Ok(Some(status)) = agent.child.try_wait() {
                panic!("agent exited with {status}: {}", agent.log_text());
            }
            let info = driftwatch::agent::read_agent_info(state)?;
            (info.pid == pid).then(|| info.listen.parse().unwrap())
        });
        agent
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path)
    }

    /// The agent's peak resident memory so far (`VmHWM`), in bytes.
    pub(crate) fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kb * 1024
    }

    pub(crate) fn status(&self) -> Value {
        let (code, body) = self.get("/status");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    pub(crate) fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM; returns the exit code.
    pub(crate) fn terminate(mut self) -> Option<i32> {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        wait_for("the agent to exit after SIGTERM", || {
            self.child.try_wait().unwrap().map(|s| s.code())
        })
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the results log has `n` lines and returns them.
pub(crate) fn wait_results(lake: &Lake, agent: &Agent, n: usize) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let r = lake.results();
        if r.len() >= n {
            return r;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for {n} results (have {}): {:?}\n{}",
            r.len(),
            sources(&r),
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn files_renamed_or_written_in_place_are_evaluated_once_and_leftovers_ignored() {
    let lake = Lake::new(RULES);
    let agent = Agent::start(&lake, &[]);
    let bytes = lake.bytes(2000, 1, 0);
    let renamed = lake.land("renamed.parquet", &bytes);
    let first = wait_results(&lake, &agent, 1);
    assert_eq!(sources(&first), [renamed.display().to_string()]);
    let report = &first[0]["reports"][0];
    assert_eq!(report["rows"], 2000);
    assert_eq!(report["passed"], true);
    assert_eq!(first[0]["agent"]["seq"], 1);
    assert_eq!(first[0]["agent"]["batch"]["kind"], "file");
    assert_eq!(first[0]["agent"]["batch"]["size"], bytes.len());

    // Writer leftovers: never evaluated.
    std::fs::write(lake.lake().join(".hidden.parquet"), &bytes).unwrap();
    std::fs::write(lake.lake().join("_SUCCESS"), b"").unwrap();
    std::fs::write(lake.lake().join("x.parquet.tmp"), &bytes).unwrap();
    std::fs::create_dir_all(lake.lake().join("_temporary/0")).unwrap();
    std::fs::write(lake.lake().join("_temporary/0/part-0.parquet"), &bytes).unwrap();
    std::fs::write(lake.lake().join("notes.txt"), b"not data").unwrap();
    // Written in place (create, write, close), in a Hive partition folder.
    let in_place = lake.lake().join("day=2024-05-01/in-place.parquet");
    std::fs::create_dir_all(in_place.parent().unwrap()).unwrap();
    std::fs::write(&in_place, lake.bytes(1500, 2, 0)).unwrap();
    let all = wait_results(&lake, &agent, 2);
    assert_eq!(
        sources(&all),
        [
            renamed.display().to_string(),
            in_place.display().to_string()
        ]
    );
    assert_eq!(all[1]["reports"][0]["rows"], 1500);
    assert_eq!(
        all[1]["reports"][0]["partitions"],
        serde_json::json!({"day": "2024-05-01"})
    );
    // A later file proves the leftovers had their chance and were skipped.
    let last = lake.land("last.parquet", &lake.bytes(1000, 3, 0));
    let all = wait_results(&lake, &agent, 3);
    assert_eq!(sources(&all)[2], last.display().to_string());
    let status = agent.status();
    assert_eq!(status["datasets"][0]["evaluated"], 3);
    assert_eq!(status["datasets"][0]["failed"], 0);
    assert_eq!(status["agent"]["ready"], true);
    assert_eq!(status["agent"]["unmatched_files"], 0);
    assert_eq!(agent.get("/healthz").0, 200);
    assert_eq!(agent.terminate(), Some(0));
    assert_eq!(lake.results().len(), 3);
}

#[test]
fn a_slowly_appended_file_is_not_read_before_its_footer() {
    let lake = Lake::new(RULES);
    let agent = Agent::start(&lake, &[]);
    let bytes = lake.bytes(3000, 4, 0);
    let path = lake.lake().join("slow.parquet");
    // Ten appends, each closing the file, with pauses longer than the settle time.
    let chunk = bytes.len().div_ceil(10);
    for part in bytes.chunks(chunk) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut f, part).unwrap();
        drop(f);
        std::thread::sleep(Duration::from_millis(450));
    }
    let r = wait_results(&lake, &agent, 1);
    assert_eq!(
        r[0]["reports"][0]["error"],
        Value::Null,
        "{}",
        agent.log_text()
    );
    assert_eq!(r[0]["reports"][0]["rows"], 3000);
    assert_eq!(r[0]["agent"]["batch"]["size"], bytes.len());
    // The next file shows nothing else (no half-read version) was recorded.
    lake.land("next.parquet", &lake.bytes(1000, 5, 0));
    assert_eq!(wait_results(&lake, &agent, 2).len(), 2);
    assert_eq!(lake.results().len(), 2);
}

#[test]
fn files_landed_while_stopped_and_rewritten_files_are_evaluated_after_restart() {
    let lake = Lake::new(RULES);
    let agent = Agent::start(&lake, &[]);
    let a = lake.land("a.parquet", &lake.bytes(1000, 6, 0));
    wait_results(&lake, &agent, 1);
    assert_eq!(agent.terminate(), Some(0));
    assert!(driftwatch::agent::read_agent_info(&lake.state()).is_none());

    // While stopped: a new file, and `a` rewritten with other content.
    let b = lake.land("b.parquet", &lake.bytes(1200, 7, 0));
    lake.land("a.parquet", &lake.bytes(1100, 8, 0));
    let agent = Agent::start(&lake, &[]);
    let r = wait_results(&lake, &agent, 3);
    let mut got: Vec<(String, u64)> = r
        .iter()
        .map(|x| {
            (
                x["reports"][0]["source"].as_str().unwrap().to_string(),
                x["reports"][0]["rows"].as_u64().unwrap(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            (a.display().to_string(), 1000),
            (a.display().to_string(), 1100),
            (b.display().to_string(), 1200)
        ]
    );
    let seqs: Vec<u64> = r
        .iter()
        .map(|x| x["agent"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
    // Restarting again evaluates nothing new.
    assert_eq!(agent.terminate(), Some(0));
    let agent = Agent::start(&lake, &[]);
    let marker = lake.land("c.parquet", &lake.bytes(1000, 9, 0));
    let r = wait_results(&lake, &agent, 4);
    assert_eq!(r.len(), 4);
    assert_eq!(sources(&r)[3], marker.display().to_string());
}

#[test]
fn a_corrupt_file_is_reported_quarantined_and_the_next_file_evaluated() {
    let lake = Lake::new(RULES);
    // Configured through a config file this time (flags still win for the address).
    std::fs::write(
        lake.path("driftwatch.toml"),
        "watch = [\"lake\"]\nrules = \"rules\"\nstate = \"state\"\n\n[lake]\nsettle = \"200ms\"\n\
         quarantine = \"quarantine\"\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n[log]\nformat = \"json\"\n",
    )
    .unwrap();
    let args: Vec<String> = vec![
        "run".into(),
        "--config".into(),
        lake.path("driftwatch.toml").display().to_string(),
    ];
    let agent = Agent::spawn(&lake, &args, &lake.state());
    let bad = lake.land("broken.parquet", b"PAR1 this writer crashed half-way");
    let r = wait_results(&lake, &agent, 1);
    let report = &r[0]["reports"][0];
    assert_eq!(report["source"], bad.display().to_string());
    assert_eq!(report["passed"], false);
    let error = report["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!("{}: cannot read Parquet input:", bad.display())),
        "{error}"
    );
    wait_for("the corrupt file to be quarantined", || {
        lake.path("quarantine/broken.parquet")
            .exists()
            .then_some(())
    });
    assert!(!bad.exists());
    let good = lake.land("good.parquet", &lake.bytes(1000, 10, 0));
    let r = wait_results(&lake, &agent, 2);
    assert_eq!(sources(&r)[1], good.display().to_string());
    assert_eq!(r[1]["reports"][0]["passed"], true);
    let status = agent.status();
    assert_eq!(status["datasets"][0]["errored"], 1);
    assert_eq!(status["datasets"][0]["evaluated"], 2);
    // JSON logs, one object per line, with the error named.
    let log = agent.log_text();
    assert!(
        log.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|l| l["message"] == "batch could not be evaluated"),
        "{log}"
    );
}

#[test]
fn sigkill_while_files_land_loses_and_repeats_nothing() {
    let lake = Lake::new(RULES);
    let files: Vec<Vec<u8>> = (0..30).map(|i| lake.bytes(500, 100 + i, 0)).collect();
    let rewrite = lake.bytes(700, 999, 0);
    let root = lake.lake();
    let staging = lake.path("staging");
    let writer = std::thread::spawn(move || {
        for (i, bytes) in files.iter().enumerate() {
            let tmp = staging.join("w.tmp");
            std::fs::write(&tmp, bytes).unwrap();
            std::fs::rename(&tmp, root.join(format!("batch-{i:03}.parquet"))).unwrap();
            if i == 20 {
                std::fs::write(&tmp, &rewrite).unwrap();
                std::fs::rename(&tmp, root.join("batch-005.parquet")).unwrap();
            }
            std::thread::sleep(Duration::from_millis(60));
        }
    });
    // The crash schedule: run a while, SIGKILL, restart.
    for run_ms in [500u64, 900, 300, 700] {
        let agent = Agent::start(&lake, &[]);
        std::thread::sleep(Duration::from_millis(run_ms));
        agent.kill9();
    }
    writer.join().unwrap();
    let agent = Agent::start(&lake, &[]);
    // 30 files + one rewrite = 31 versions.
    let r = wait_results(&lake, &agent, 31);
    assert_eq!(agent.terminate(), Some(0));
    let r2 = lake.results();
    assert_eq!(r2.len(), 31, "nothing more after a clean stop");
    let seqs: Vec<u64> = r
        .iter()
        .map(|x| x["agent"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=31).collect::<Vec<_>>());
    let mut versions: BTreeMap<(String, u64, i64), usize> = BTreeMap::new();
    for x in &r {
        let b = &x["agent"]["batch"];
        *versions
            .entry((
                b["path"].as_str().unwrap().to_string(),
                b["size"].as_u64().unwrap(),
                b["modified_ns"].as_i64().unwrap(),
            ))
            .or_default() += 1;
        assert_eq!(x["reports"][0]["error"], Value::Null);
    }
    assert_eq!(versions.len(), 31, "every version exactly once");
    assert!(versions.values().all(|&n| n == 1));
    let paths: std::collections::BTreeSet<&str> =
        versions.keys().map(|(p, _, _)| p.as_str()).collect();
    assert_eq!(paths.len(), 30);
}

#[test]
fn a_broken_rule_file_is_rejected_with_its_location_and_the_old_rules_keep_running() {
    let lake = Lake::new(RULES);
    let agent = Agent::start(&lake, &[]);
    lake.land("one.parquet", &lake.bytes(1000, 11, 0));
    wait_results(&lake, &agent, 1);
    let rules = lake.path("rules/flights.yaml");
    std::fs::write(
        &rules,
        "dataset: flights\nchecks:\n  - not_null: carrier\n  - rowcount: { min: 1 }\n",
    )
    .unwrap();
    let error = wait_for("the reload to be rejected", || {
        agent.status()["agent"]["rules_error"]
            .as_str()
            .map(String::from)
    });
    assert!(
        error.starts_with(&format!(
            "{}:4:5: unknown field `rowcount`",
            rules.display()
        )),
        "{error}"
    );
    lake.land("two.parquet", &lake.bytes(1000, 12, 0));
    let r = wait_results(&lake, &agent, 2);
    let names = |x: &Value| -> Vec<String> {
        x["reports"][0]["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&r[1]), ["not_null_carrier", "row_count"]);
    // Fixed, with one more check: picked up.
    std::fs::write(
        &rules,
        "dataset: flights\nchecks:\n  - not_null: carrier\n  - row_count: { min: 1 }\n  - not_null: origin\n",
    )
    .unwrap();
    wait_for("the fixed rules to load", || {
        agent.status()["agent"]["rules_error"]
            .is_null()
            .then_some(())
    });
    lake.land("three.parquet", &lake.bytes(1000, 13, 0));
    let r = wait_results(&lake, &agent, 3);
    assert_eq!(
        names(&r[2]),
        ["not_null_carrier", "row_count", "not_null_origin"]
    );
}

#[test]
fn a_folder_of_parts_is_one_batch_once_its_success_marker_lands() {
    let rules = "dataset: events\nmatch: \"events/**/*.parquet\"\nbatch: directory\nchecks:\n  \
                 - row_count: { min: 3000, max: 3000 }\n  - metric: \"count(*)\"\n    between: [3000, 3000]\n    \
                 where: \"date = '2024-05-01'\"\n    name: rows_of_the_day\n";
    let lake = Lake::new(rules);
    // A long settle: only the marker can make the folder complete in time.
    let agent = Agent::start(&lake, &["--settle", "120s"]);
    let dir = lake.lake().join("events/date=2024-05-01");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("part-0.parquet"), lake.bytes(1500, 14, 0)).unwrap();
    std::fs::write(dir.join("part-1.parquet"), lake.bytes(1500, 15, 0)).unwrap();
    std::fs::write(dir.join("_SUCCESS"), b"").unwrap();
    let r = wait_results(&lake, &agent, 1);
    let report = &r[0]["reports"][0];
    assert_eq!(report["source"], dir.display().to_string());
    assert_eq!(report["rows"], 3000);
    assert_eq!(
        report["partitions"],
        serde_json::json!({"date": "2024-05-01"})
    );
    assert_eq!(report["passed"], true, "{report}");
    assert_eq!(report["checks"][1]["observed"], 3000.0);
    assert_eq!(r[0]["agent"]["batch"]["kind"], "directory");
    assert_eq!(r[0]["agent"]["batch"]["parts"], 2);
}

#[test]
fn rolling_reference_lives_in_the_store_across_restarts() {
    let rules = "dataset: flights\nchecks:\n  - not_null: carrier\ndrift:\n  reference: { rolling: { batches: 2 } }\n  \
                 columns: [dep_delay]\n";
    let lake = Lake::new(rules);
    let agent = Agent::start(&lake, &[]);
    lake.land("b1.parquet", &lake.bytes(4000, 21, 0));
    let r = wait_results(&lake, &agent, 1);
    let drift = &r[0]["reports"][0]["drift"];
    assert_eq!(drift["reference"], "rolling (previous 2 batches)");
    assert_eq!(
        drift["message"],
        "rolling reference has 0 of 2 batches; drift is tested once it has at least one"
    );
    lake.land("b2.parquet", &lake.bytes(4000, 22, 0));
    let r = wait_results(&lake, &agent, 2);
    assert_eq!(r[1]["reports"][0]["drift"]["dataset_drift"], false);
    assert_eq!(
        r[1]["reports"][0]["drift"]["columns"][0]["column"],
        "dep_delay"
    );
    assert_eq!(agent.terminate(), Some(0));
    // After a restart the reference is still the previous two batches.
    let agent = Agent::start(&lake, &[]);
    lake.land("b3.parquet", &lake.bytes(4000, 23, 45));
    let r = wait_results(&lake, &agent, 3);
    let drift = &r[2]["reports"][0]["drift"];
    assert_eq!(drift["dataset_drift"], true, "{drift}");
    assert_eq!(r[2]["reports"][0]["passed"], false);
}

#[test]
fn issue_17_the_sequential_detector_lives_in_the_reports_across_restarts() {
    // The windows of drift::issue_17_sequential_check_carries_evidence_…,
    // landed one at a time with a restart after the sixth: the agent's
    // detector statistics equal `check`'s, window for window.
    let rules = "dataset: flights\ndrift:\n  reference: ref.profile\n  \
                 sequential: { windows: 100, false_alarm: 0.05 }\n";
    let lake = Lake::new(rules);
    let window = |w: u64| {
        let tmp = lake.path(&format!("staging/w{w}.bin"));
        let shift = if w < 4 { 0.0 } else { 0.3 };
        crate::common::write_parquet(&tmp, &crate::drift::normals(200, shift, 100 + w), 1000);
        std::fs::read(&tmp).unwrap()
    };
    let reference = lake.path("staging/ref.parquet");
    // Row groups as in the `check` test: the reference (20,000 rows) is
    // sketched, and a sketch depends on how the rows were split.
    crate::common::write_parquet(&reference, &crate::drift::normals(20_000, 0.0, 1), 1000);
    let out = crate::common::driftwatch(&[
        "baseline",
        reference.to_str().unwrap(),
        "--rules",
        lake.path("rules/flights.yaml").to_str().unwrap(),
        "--output",
        lake.path("rules/ref.profile").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", crate::common::text(&out.stderr));
    let mut agent = Agent::start(&lake, &[]);
    for w in 0..8u64 {
        if w == 6 {
            assert_eq!(agent.terminate(), Some(0));
            agent = Agent::start(&lake, &[]);
        }
        lake.land(&format!("w{w}.parquet"), &window(w));
        wait_results(&lake, &agent, w as usize + 1);
    }
    let statistics: Vec<(f64, bool)> = lake
        .results()
        .iter()
        .map(|r| {
            let d = &r["reports"][0]["drift"];
            let s = &d["sequential"]["columns"]["x"];
            (
                (s["statistic"].as_f64().unwrap() * 100.0).round() / 100.0,
                d["columns"][0]["drifted"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        statistics,
        [
            (3.89, false),
            (7.01, false),
            (9.61, false),
            (5.41, false),
            (573.17, false),
            (24852.37, true),
            (6.47, false),
            (53.4, false),
        ]
    );
}

#[test]
fn status_answers_from_the_agent_and_from_the_store_when_stopped() {
    let lake = Lake::new(RULES);
    let agent = Agent::start(&lake, &["--poll"]);
    lake.land("one.parquet", &lake.bytes(1000, 31, 0));
    wait_results(&lake, &agent, 1);
    let state = lake.state().display().to_string();
    let out = crate::common::driftwatch(&["status", "--state", &state, "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let live: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(live["agent"].is_object());
    assert_eq!(live["datasets"][0]["evaluated"], 1);
    assert_eq!(live["datasets"][0]["recent"][0]["passed"], true);
    let by_addr = crate::common::driftwatch(&[
        "status",
        "--listen",
        &agent.addr.to_string(),
        "--format",
        "json",
    ]);
    assert_eq!(by_addr.status.code(), Some(0));
    assert_eq!(agent.terminate(), Some(0));
    let out = crate::common::driftwatch(&["status", "--state", &state]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(
        table.starts_with("no agent running; from the store"),
        "{table}"
    );
    assert!(table.contains("flights"), "{table}");
    let line = table.lines().find(|l| l.starts_with("flights")).unwrap();
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&cells[..5], ["flights", "1", "0", "0", "0"]);
}

#[test]
fn a_folder_batch_that_gains_a_part_is_evaluated_again_with_all_its_parts() {
    let rules = "dataset: events\nmatch: \"events/**/*.parquet\"\nbatch: directory\nchecks:\n  - row_count: { min: 1 }\n";
    let lake = Lake::new(rules);
    let agent = Agent::start(&lake, &[]);
    let dir = lake.lake().join("events/date=2024-05-02");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("part-0.parquet"), lake.bytes(1000, 81, 0)).unwrap();
    std::fs::write(dir.join("part-1.parquet"), lake.bytes(1000, 82, 0)).unwrap();
    std::fs::write(dir.join("_SUCCESS"), b"").unwrap();
    let r = wait_results(&lake, &agent, 1);
    assert_eq!(r[0]["reports"][0]["rows"], 2000);
    // A late part (a new version of the folder): all three parts are read, not a cached listing.
    std::fs::write(dir.join("part-2.parquet"), lake.bytes(500, 83, 0)).unwrap();
    let r = wait_results(&lake, &agent, 2);
    assert_eq!(r[1]["reports"][0]["rows"], 2500);
    assert_eq!(r[1]["agent"]["batch"]["parts"], 3);
}

#[test]
fn files_moved_into_brand_new_folders_are_found_without_waiting_for_a_listing() {
    let lake = Lake::new(RULES);
    // Listings only every 10 minutes: events alone must find every file.
    std::fs::write(
        lake.path("driftwatch.toml"),
        "[lake]\nrescan = \"10m\"\nsettle = \"300ms\"\n",
    )
    .unwrap();
    let config = lake.path("driftwatch.toml").display().to_string();
    let agent = Agent::start(&lake, &["--config", &config]);
    let bytes = lake.bytes(500, 91, 0);
    for i in 0..8 {
        // A new nested folder per file, the file renamed in at once.
        lake.land(
            &format!("day=2024-05-0{}/hour={i:02}/part-0.parquet", i + 1),
            &bytes,
        );
    }
    let r = wait_results(&lake, &agent, 8);
    assert_eq!(r.len(), 8);
}

#[test]
fn issue_15_six_small_files_of_huge_strings_keep_the_state_and_live_pages_small() {
    let lake = Lake::new(
        "dataset: flights
drift:
  reference: { rolling: { batches: 5 } }
  columns: [s]
",
    );
    let staged = lake.path("staging/huge.parquet");
    crate::common::write_huge_strings(&staged);
    let bytes = std::fs::read(&staged).unwrap();
    std::fs::remove_file(&staged).unwrap();
    let agent = Agent::start(&lake, &[]);
    for i in 0..6 {
        lake.land(&format!("h{i}.parquet"), &bytes);
    }
    let results = wait_results(&lake, &agent, 6);
    for r in &results {
        assert_eq!(r["reports"][0]["error"], Value::Null, "{r}");
    }
    let state = std::fs::metadata(lake.state().join("state.redb"))
        .unwrap()
        .len();
    // Was 2.1 GB: six profiles of 100 MB, each stored twice.
    assert!(state < 32 << 20, "state.redb is {state} bytes");
    // 16 concurrent requests for the live page: one build, one answer.
    let pages: Vec<(u16, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|_| scope.spawn(|| agent.get("/report/flights")))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(pages.iter().all(|p| p.0 == 200 && p.1 == pages[0].1));
    let page = pages[0].1.len();
    let rss = agent.peak_rss();
    eprintln!(
        "six {}-byte files: state.redb {state} bytes, page {page} bytes, agent peak RSS {rss} bytes",
        bytes.len()
    );
    assert!(page < 8 << 20, "the page is {page} bytes");
    // Was 11.3 GB.
    assert!(rss < 1 << 30, "peak RSS {rss} bytes");
}

/// Stages `bytes` outside the lake, then makes the folders of `rel` and
/// renames the file in at once — before the agent can have watched them.
fn land_in_new_folders(lake: &Lake, rel: &str, bytes: &[u8]) -> PathBuf {
    let target = lake.lake().join(rel);
    let tmp = lake.path(&format!("staging/{}.tmp", rel.replace('/', "_")));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::rename(&tmp, &target).unwrap();
    target
}

#[test]
fn issue_19_files_renamed_into_brand_new_folders_do_not_wait_the_settle_time() {
    let lake = Lake::new(RULES);
    // A settle time far beyond the test's deadline and no listing before
    // it: a file is taken only if its folder's own listing (or its rename
    // event) says it is complete.
    std::fs::write(lake.path("driftwatch.toml"), "[lake]\nrescan = \"10m\"\n").unwrap();
    let config = lake.path("driftwatch.toml").display().to_string();
    let agent = Agent::start(&lake, &["--config", &config, "--settle", "10m"]);
    let bytes = lake.bytes(800, 19, 0);
    let mut landed = Vec::new();
    for i in 0..6 {
        // A new Hive partition, nested one level more every other file.
        let rel = if i % 2 == 0 {
            format!("date=2026-12-0{}/part-0.parquet", i + 1)
        } else {
            format!("date=2026-12-0{}/hour=0{i}/part-0.parquet", i + 1)
        };
        landed.push(
            land_in_new_folders(&lake, &rel, &bytes)
                .display()
                .to_string(),
        );
        wait_results(&lake, &agent, landed.len());
    }
    // And into a folder that exists by now.
    landed.push(
        land_in_new_folders(&lake, "date=2026-12-01/part-1.parquet", &bytes)
            .display()
            .to_string(),
    );
    let r = wait_results(&lake, &agent, landed.len());
    assert_eq!(sources(&r), landed);
    for line in &r {
        assert_eq!(line["reports"][0]["rows"], 800);
        assert_eq!(line["reports"][0]["error"], Value::Null);
    }
    assert_eq!(
        r[1]["reports"][0]["partitions"],
        serde_json::json!({"date": "2026-12-02", "hour": "01"})
    );
}

#[test]
fn issue_19_a_file_written_in_place_in_a_brand_new_folder_is_not_read_before_its_footer() {
    let lake = Lake::new(RULES);
    // Only close-after-write events can complete the file in time.
    let agent = Agent::start(&lake, &["--settle", "10m"]);
    let bytes = lake.bytes(3000, 20, 0);
    let folder = lake.lake().join("date=2026-12-04");
    std::fs::create_dir(&folder).unwrap();
    let path = folder.join("in-place.parquet");
    let chunk = bytes.len().div_ceil(6);
    for part in bytes.chunks(chunk) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut f, part).unwrap();
        drop(f);
        // The writer is slow: the folder's listings see it half-written.
        std::thread::sleep(Duration::from_millis(150));
    }
    let r = wait_results(&lake, &agent, 1);
    assert_eq!(
        r[0]["reports"][0]["error"],
        Value::Null,
        "{}",
        agent.log_text()
    );
    assert_eq!(r[0]["reports"][0]["rows"], 3000);
    assert_eq!(r[0]["agent"]["batch"]["size"], bytes.len());
    // The next file shows that no half-read version was recorded.
    lake.land("date=2026-12-04/next.parquet", &lake.bytes(1000, 21, 0));
    assert_eq!(wait_results(&lake, &agent, 2).len(), 2);
    assert_eq!(lake.results().len(), 2);
}

#[test]
fn issue_19_group_commits_under_a_backlog_stay_exactly_once_across_kill_9() {
    let lake = Lake::new(RULES);
    let files: Vec<Vec<u8>> = (0..15).map(|i| lake.bytes(400, 300 + i, 0)).collect();
    let root = lake.lake();
    let staging = lake.path("staging");
    // Bursts of 15 files renamed in at once: a backlog, whose records the
    // agent commits in groups, killed while it works through them.
    let writer = std::thread::spawn(move || {
        for burst in 0..4 {
            for (i, bytes) in files.iter().enumerate() {
                let tmp = staging.join(format!("b{burst}-{i}.tmp"));
                std::fs::write(&tmp, bytes).unwrap();
            }
            for i in 0..files.len() {
                let tmp = staging.join(format!("b{burst}-{i}.tmp"));
                std::fs::rename(&tmp, root.join(format!("b{burst}-{i:02}.parquet"))).unwrap();
            }
            std::thread::sleep(Duration::from_millis(400));
        }
    });
    for run_ms in [300u64, 700, 200, 500] {
        let agent = Agent::start(&lake, &[]);
        std::thread::sleep(Duration::from_millis(run_ms));
        agent.kill9();
    }
    writer.join().unwrap();
    let agent = Agent::start(&lake, &[]);
    let r = wait_results(&lake, &agent, 60);
    assert_eq!(agent.terminate(), Some(0));
    let r = {
        let after = lake.results();
        assert_eq!(after.len(), r.len(), "nothing more after a clean stop");
        after
    };
    assert_eq!(r.len(), 60);
    let seqs: Vec<u64> = r
        .iter()
        .map(|x| x["agent"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=60).collect::<Vec<_>>());
    let paths: std::collections::BTreeSet<&str> = r
        .iter()
        .map(|x| x["agent"]["batch"]["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths.len(), 60, "every file exactly once");
    for x in &r {
        assert_eq!(x["reports"][0]["error"], Value::Null);
        assert_eq!(x["reports"][0]["rows"], 400);
    }
}
