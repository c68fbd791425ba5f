//! Iceberg tables a REST catalog keeps (issue 16): a real Iceberg REST
//! catalog server (lakana-server 0.20.0, SQLite and a `file://` warehouse on
//! loopback) and the writer data engineers use (pyiceberg 0.12.0's
//! `RestCatalog`, tests/fixtures/iceberg_rest/writer.py), both from the
//! virtualenv `.ci/run` installs. The agent, `check` and `baseline` follow
//! the table through the catalog's answers alone.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::agent::{Agent, Lake, wait_for};
use crate::object_store::{driftwatch_env, free_port};
use crate::tables::{env_refs, table_results, wait_versions};

/// Where `.ci/run` installs the virtualenv (lakana-server, pyiceberg).
const VENV_CACHE: &str = ".cache/driftwatch-tools/iceberg-rest-1/bin";

/// The bootstrap token's parts (a test server's only principal).
const KEY_ID: &str = "testkey0001";
const SECRET: &str = "testsecret0000000000000000000001";

/// The environment variable the tests' rule files read the token from.
const TOKEN_ENV: &str = "DW_TEST_CATALOG_TOKEN";

fn venv_bin() -> PathBuf {
    let path = match std::env::var_os("DRIFTWATCH_ICEBERG_REST") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(VENV_CACHE),
    };
    assert!(
        path.join("lakana-server").is_file() && path.join("python").is_file(),
        "the REST catalog tests need lakana-server and pyiceberg in {} (set DRIFTWATCH_ICEBERG_REST \
         to another virtualenv's bin folder); `.ci/run` installs them: pip install \
         lakana-server==0.20.0 'pyiceberg[pyarrow,pyiceberg-core]==0.12.0'",
        path.display()
    );
    path
}

/// A lakana-server on a free loopback port with the environment (REST
/// prefix) `dev`, its warehouse a temp folder; killed on drop.
pub(crate) struct RestCatalogServer {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl RestCatalogServer {
    pub(crate) fn start() -> RestCatalogServer {
        let bin = venv_bin();
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let env = [
            (
                "LAKANA_DATABASE__URL",
                format!("sqlite:///{}", dir.path().join("lakana.db").display()),
            ),
            ("LAKANA_BOOTSTRAP_PAT_KEY_ID", KEY_ID.to_string()),
            ("LAKANA_BOOTSTRAP_PAT_SECRET", SECRET.to_string()),
            ("LAKANA_HOST", "127.0.0.1".to_string()),
            ("LAKANA_PORT", port.to_string()),
        ];
        let log = dir.path().join("lakana.log");
        let migrate = Command::new(bin.join("lakana-server"))
            .arg("migrate")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .expect("run lakana-server migrate");
        assert!(
            migrate.status.success(),
            "lakana-server migrate: {}",
            String::from_utf8_lossy(&migrate.stderr)
        );
        let child = Command::new(bin.join("lakana-server"))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
            ))
            .spawn()
            .expect("start lakana-server");
        let mut server = RestCatalogServer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            dir,
            bin,
        };
        let addr = server.addr;
        wait_for("lakana-server to accept connections", || {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "lakana-server exited with {status}: {}",
                    std::fs::read_to_string(&server.log).unwrap_or_default()
                );
            }
            TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                .ok()
                .map(|_| ())
        });
        // The environment `dev`: the REST prefix, and where its tables live.
        let warehouse = server.dir.path().join("warehouse");
        std::fs::create_dir_all(&warehouse).unwrap();
        server.create_environment(
            "dev",
            serde_json::json!({ "scheme": "file", "root": format!("file://{}", warehouse.display()) }),
        );
        server
    }

    /// Creates the environment (REST prefix) `name` with `storage`.
    pub(crate) fn create_environment(&self, name: &str, storage: Value) {
        let body = serde_json::json!({ "name": name, "storage": storage });
        let url = format!("{}/api/v1/environments", self.uri());
        let status = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                reqwest::Client::new()
                    .post(url)
                    .bearer_auth(token())
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .unwrap()
                    .status()
            });
        assert!(status.is_success(), "create the environment: {status}");
    }

    pub(crate) fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// One pyiceberg commit (`create`, `append`, `overwrite`, `delete`) on
    /// `bronze.<table>`; the table's newest snapshot afterwards.
    pub(crate) fn write(&self, action: &str, table: &str, arg: Option<&str>) -> Value {
        self.write_in("dev", &serde_json::json!({}), action, table, arg)
    }

    /// [`Self::write`] in the environment `prefix`, with extra catalog
    /// `properties` for the writer (an S3 warehouse's endpoint and keys).
    pub(crate) fn write_in(
        &self,
        prefix: &str,
        properties: &Value,
        action: &str,
        table: &str,
        arg: Option<&str>,
    ) -> Value {
        let mut command = Command::new(self.bin.join("python"));
        command
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/iceberg_rest/writer.py"
            ))
            .args([
                &self.uri(),
                prefix,
                &token(),
                action,
                &format!("bronze.{table}"),
            ])
            .env("WRITER_PROPERTIES", properties.to_string());
        if let Some(arg) = arg {
            command.arg(arg);
        }
        let out = command.output().expect("run the pyiceberg writer");
        assert!(
            out.status.success(),
            "writer {action}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The table's folder, as the catalog's answer names it.
    pub(crate) fn table_folder(&self, table: &str) -> PathBuf {
        let managed = self.dir.path().join("warehouse/managed/bronze");
        let found: Vec<PathBuf> = std::fs::read_dir(&managed)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{table}-")))
            })
            .collect();
        assert_eq!(found.len(), 1, "{found:?}");
        found[0].clone()
    }
}

impl Drop for RestCatalogServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The bootstrap principal's personal access token.
fn token() -> String {
    format!("lakana_pat_{KEY_ID}_{SECRET}")
}

/// A rule file for `bronze.<table>` in the catalog at `uri`; `auth` is the
/// token's line (`token_env: …` or `token_file: …`).
fn catalog_rules(uri: &str, table: &str, auth: &str) -> String {
    format!(
        "dataset: flights
table:
  format: iceberg
  catalog:
    uri: {uri}
    prefix: dev
    namespace: bronze
    table: {table}
    {auth}
  poll_interval: 100ms
checks:
  - not_null: carrier
  - range: {{ column: amount, min: 0 }}
  - row_count: {{ min: 1 }}
"
    )
}

fn env_token() -> Vec<(&'static str, String)> {
    vec![(TOKEN_ENV, token())]
}

/// The agent follows a table through the catalog while pyiceberg commits to
/// it, SIGKILLed twice with commits landing while it is down: every
/// snapshot reported once, in order, the remove-only one skipped.
#[test]
fn issue_16_rest_catalog_snapshots_each_reported_once_across_restarts() {
    let server = RestCatalogServer::start();
    assert_eq!(server.write("create", "flights", None), Value::Null);
    let lake = Lake::new(&catalog_rules(
        &server.uri(),
        "flights",
        &format!("token_env: {TOKEN_ENV}"),
    ));
    let key = format!("{}/v1/dev/namespaces/bronze/tables/flights", server.uri());
    let env = env_token();
    let env = env_refs(&env);
    let agent = Agent::start_with_env(&lake, &[], &env);
    let status = wait_for("the empty table polled", || {
        let status = agent.status();
        (status["tables"][0]["format"] == "iceberg"
            && status["tables"][0]["error"].is_null()
            && !status["tables"][0]["recorded_version"].is_string())
        .then_some(status)
    });
    assert_eq!(status["tables"][0]["location"], key.as_str());
    assert_eq!(status["tables"][0]["latest_version"], Value::Null);

    // Two appends while it runs; the second fails its checks.
    let s1 = server.write(
        "append",
        "flights",
        Some(r#"[["UA", 1.0], ["AA", 2.0], ["DL", 3.0]]"#),
    );
    let s2 = server.write("append", "flights", Some(r#"[[null, 5.0], ["AA", -2.0]]"#));
    assert_eq!(
        (s1["sequence_number"].clone(), s2["sequence_number"].clone()),
        (1.into(), 2.into())
    );
    wait_versions(&lake, &agent, 2);
    agent.kill9();

    // While it is down: an append, then an overwrite (pyiceberg commits it
    // as a delete snapshot and an append snapshot).
    server.write("append", "flights", Some(r#"[["B6", 4.0]]"#));
    let s5 = server.write(
        "overwrite",
        "flights",
        Some(r#"[["UA", 7.0], ["AA", 8.0]]"#),
    );
    assert_eq!(s5["sequence_number"], 5);
    let agent = Agent::start_with_env(&lake, &[], &env);
    wait_versions(&lake, &agent, 5);
    agent.kill9();

    // Down again: a delete of some rows (copy-on-write: an overwrite
    // snapshot rewriting the file without them).
    let s6 = server.write("delete", "flights", Some("UA"));
    assert_eq!(s6["operation"], "overwrite");
    let agent = Agent::start_with_env(&lake, &[], &env);
    wait_versions(&lake, &agent, 6);

    let at = |v: u64| format!("{key}@v{v}");
    let expected: Vec<(u64, String, Option<u64>, String, String)> = vec![
        (1, at(1), Some(3), "passed".into(), "append".into()),
        (2, at(2), Some(2), "failed".into(), "append".into()),
        (3, at(3), Some(1), "passed".into(), "append".into()),
        (4, at(4), None, "skipped".into(), "delete".into()),
        (5, at(5), Some(2), "passed".into(), "append".into()),
        (6, at(6), Some(1), "passed".into(), "overwrite".into()),
    ];
    assert_eq!(table_results(&lake), expected, "{}", agent.log_text());
    let results = lake.results();
    assert_eq!(
        results[1]["reports"][0]["table"]["snapshot_id"],
        s2["snapshot_id"]
    );
    assert_eq!(results[1]["reports"][0]["checks"][0]["failing_rows"], 1);
    assert_eq!(results[1]["reports"][0]["checks"][1]["failing_rows"], 1);
    assert_eq!(
        results[3]["reports"][0]["table"]["skipped"],
        "delete removed 3 file(s) and added none"
    );
    let status = agent.status();
    assert_eq!(status["tables"][0]["latest_version"], 6);
    assert_eq!(status["tables"][0]["recorded_version"], 6);
    assert_eq!(status["datasets"][0]["failed"], 1);
    assert_eq!(agent.terminate(), Some(0));
}

/// `check` and `baseline` read a catalog's table version by version, and
/// give what they give for the same table read from its folder.
#[test]
fn issue_16_check_and_baseline_read_a_rest_catalog_table_as_its_folder() {
    let server = RestCatalogServer::start();
    server.write("create", "flights", None);
    server.write("append", "flights", Some(r#"[["UA", 1.0], ["AA", 2.0]]"#));
    server.write("append", "flights", Some(r#"[["DL", -3.0]]"#));
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("catalog.yaml");
    std::fs::write(
        &rules,
        catalog_rules(&server.uri(), "flights", &format!("token_env: {TOKEN_ENV}")),
    )
    .unwrap();
    let folder = server.table_folder("flights");
    let folder_rules = dir.path().join("folder.yaml");
    std::fs::write(
        &folder_rules,
        format!(
            "dataset: flights\ntable: {{ format: iceberg, location: {} }}\nchecks:\n  - not_null: carrier\n  - range: {{ column: amount, min: 0 }}\n  - row_count: {{ min: 1 }}\n",
            folder.display()
        ),
    )
    .unwrap();
    let key = format!("{}/v1/dev/namespaces/bronze/tables/flights", server.uri());
    let check = |rules: &Path, version: &str| -> (Option<i32>, Value) {
        let out = driftwatch_env(
            &[
                "check",
                "--rules",
                rules.to_str().unwrap(),
                "--table-version",
                version,
                "--format",
                "json",
                "--now",
                "2026-01-01T00:00:00Z",
            ],
            &env_token(),
        );
        (
            out.status.code(),
            serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
                panic!("{}", String::from_utf8_lossy(&out.stderr));
            }),
        )
    };
    let folder_name = std::fs::canonicalize(&folder)
        .unwrap()
        .display()
        .to_string();
    for (version, code, rows) in [("1", 0, 2), ("2", 1, 1)] {
        let (by_catalog_code, by_catalog) = check(&rules, version);
        let (by_folder_code, by_folder) = check(&folder_rules, version);
        assert_eq!(by_catalog_code, Some(code), "{by_catalog}");
        assert_eq!(by_folder_code, Some(code));
        let report = &by_catalog["reports"][0];
        assert_eq!(report["source"], format!("{key}@v{version}").as_str());
        assert_eq!(report["rows"], rows);
        assert_eq!(report["table"]["location"], key.as_str());
        // The same report apart from where the table was found (and the
        // rule file's name).
        let same = serde_json::to_string(&by_folder)
            .unwrap()
            .replace(&folder_name, &key)
            .replace("folder.yaml", "catalog.yaml");
        let timed = |v: &Value| {
            let mut v = v.clone();
            for r in v["reports"].as_array_mut().unwrap() {
                r.as_object_mut().unwrap().remove("duration_ms");
            }
            v
        };
        assert_eq!(
            timed(&serde_json::from_str(&same).unwrap()),
            timed(&by_catalog),
            "version {version}"
        );
    }

    // A baseline of the latest version holds every live row.
    let profile = dir.path().join("flights.profile");
    let out = driftwatch_env(
        &[
            "baseline",
            "--rules",
            rules.to_str().unwrap(),
            "--output",
            profile.to_str().unwrap(),
        ],
        &env_token(),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&profile).unwrap()).unwrap();
    assert_eq!(written["rows"], 3);
    assert_eq!(written["sources"][0], format!("{key}@v2").as_str());
}

/// Wrong credentials, a missing token, a table the catalog does not have,
/// a catalog nobody answers at: one line each for `check` (exit 2), the
/// token never in it; the agent shows the error on `/status`, retries, and
/// goes on once the rotated token file holds a good token.
#[test]
fn issue_16_rest_catalog_errors_are_one_line_without_the_token_and_retried() {
    let server = RestCatalogServer::start();
    server.write("create", "flights", None);
    server.write("append", "flights", Some(r#"[["UA", 1.0]]"#));
    let dir = tempfile::tempdir().unwrap();
    let check = |rules: &str, env: &[(&'static str, String)]| -> String {
        let path = dir.path().join("rules.yaml");
        std::fs::write(&path, rules).unwrap();
        let out = driftwatch_env(
            &[
                "check",
                "--rules",
                path.to_str().unwrap(),
                "--format",
                "json",
            ],
            env,
        );
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let error = report["reports"][0]["error"].as_str().unwrap().to_string();
        assert!(!error.contains('\n'), "{error}");
        assert!(!error.contains(SECRET), "{error}");
        error
    };
    let uri = server.uri();
    let key = |table: &str| format!("{uri}/v1/dev/namespaces/bronze/tables/{table}");
    let with_env = format!("token_env: {TOKEN_ENV}");

    let wrong = format!("lakana_pat_{KEY_ID}_wrongsecret000000000000000000001");
    assert_eq!(
        check(
            &catalog_rules(&uri, "flights", &with_env),
            &[(TOKEN_ENV, wrong.clone())]
        ),
        format!(
            "{}: cannot read objects: GET /v1/dev/namespaces/bronze/tables/flights: the catalog refused the credentials (HTTP 401): AuthenticationError Invalid credentials.",
            key("flights")
        )
    );
    assert_eq!(
        check(&catalog_rules(&uri, "flights", &with_env), &[]),
        format!(
            "{}: cannot read objects: the catalog token's environment variable `{TOKEN_ENV}` is not set",
            key("flights")
        )
    );
    let missing = check(&catalog_rules(&uri, "nope", &with_env), &env_token());
    assert!(
        missing.starts_with(&format!(
            "{}: not an Iceberg table: the catalog has no table bronze.nope (HTTP 404)",
            key("nope")
        )),
        "{missing}"
    );
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let unreachable = check(&catalog_rules(&nobody, "flights", &with_env), &env_token());
    assert!(
        unreachable.starts_with(&format!(
            "{nobody}/v1/dev/namespaces/bronze/tables/flights: cannot read objects: GET /v1/config: cannot reach the catalog: "
        )),
        "{unreachable}"
    );

    // The agent, with a token file that holds a wrong token at first.
    let token_file = dir.path().join("catalog-token");
    std::fs::write(&token_file, &wrong).unwrap();
    let lake = Lake::new(&catalog_rules(
        &uri,
        "flights",
        &format!("token_file: {}", token_file.display()),
    ));
    let agent = Agent::start_unready(&lake, &[]);
    let status = wait_for("the catalog error on /status", || {
        let status = agent.status();
        status["tables"][0]["error"].is_string().then_some(status)
    });
    let error = status["tables"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("the catalog refused the credentials (HTTP 401)"),
        "{error}"
    );
    assert!(
        !error.contains(SECRET) && !error.contains("wrongsecret"),
        "{error}"
    );
    assert!(!agent.log_text().contains("wrongsecret"));
    // The secret is rotated in place: the next poll reads it.
    std::fs::write(&token_file, token()).unwrap();
    wait_versions(&lake, &agent, 1);
    let status = agent.status();
    assert_eq!(status["tables"][0]["error"], Value::Null);
    assert_eq!(status["tables"][0]["recorded_version"], 1);
    assert_eq!(lake.results()[0]["reports"][0]["rows"], 1);

    // A reload that changes how the catalog is reached (here a token
    // variable the agent does not have) opens the table again with the new
    // settings, though the open table was working.
    std::fs::write(
        lake.path("rules/flights.yaml"),
        catalog_rules(&uri, "flights", "token_env: DW_TEST_UNSET_TOKEN"),
    )
    .unwrap();
    let status = wait_for("the reloaded catalog settings in use", || {
        let status = agent.status();
        status["tables"][0]["error"].is_string().then_some(status)
    });
    assert_eq!(
        status["tables"][0]["error"],
        format!(
            "{}: cannot read objects: the catalog token's environment variable `DW_TEST_UNSET_TOKEN` is not set",
            key("flights")
        )
        .as_str()
    );
    assert_eq!(agent.terminate(), Some(0));
}

/// `table.catalog`'s mistakes, each naming file:line:col; and the key a
/// catalog table is named by.
#[test]
fn issue_16_catalog_key_errors_name_file_line_col() {
    let error = |yaml: &str| -> String {
        match driftwatch::rules::parse_rule_file(Path::new("rules/t.yaml"), yaml) {
            Ok(_) => panic!("accepted:\n{yaml}"),
            Err(e) => e.to_string(),
        }
    };
    let table =
        |catalog: &str| format!("dataset: t\ntable:\n  format: iceberg\n  catalog: {catalog}\n");
    assert_eq!(
        error("dataset: t\ntable: { format: iceberg }\n"),
        "rules/t.yaml:2:8: `table` needs `location` (a folder or an object-store URL) or `catalog` (an Iceberg REST catalog)"
    );
    assert_eq!(
        error(
            "dataset: t\ntable:\n  format: iceberg\n  location: a\n  catalog: { uri: 'http://c', namespace: ns, table: t }\n"
        ),
        "rules/t.yaml:5:12: give `table.location` or `table.catalog`, not both"
    );
    assert_eq!(
        error(
            "dataset: t\ntable:\n  format: delta\n  catalog: { uri: 'http://c', namespace: ns, table: t }\n"
        ),
        "rules/t.yaml:4:12: `table.catalog` is an Iceberg REST catalog: it needs `format: iceberg`"
    );
    assert_eq!(
        error(&table("{ uri: 'ftp://c', namespace: ns, table: t }")),
        "rules/t.yaml:4:19: `table.catalog.uri` must be an http:// or https:// URL"
    );
    assert_eq!(
        error(&table(
            "{ uri: 'https://me:pw@c', namespace: ns, table: t }"
        )),
        "rules/t.yaml:4:19: `table.catalog.uri` must not hold credentials: give `token_env` or `token_file`"
    );
    assert_eq!(
        error(&table("{ uri: 'http://c', namespace: [], table: t }")),
        "rules/t.yaml:4:42: `table.catalog.namespace` needs at least one level, none of them empty"
    );
    assert_eq!(
        error(&table("{ uri: 'http://c', namespace: ns, table: '' }")),
        "rules/t.yaml:4:53: `table.catalog.table` must not be empty"
    );
    assert_eq!(
        error(&table(
            "{ uri: 'http://c', namespace: ns, table: t, token_env: A, token_file: b }"
        )),
        "rules/t.yaml:4:19: give `table.catalog.token_env` or `token_file`, not both"
    );
    let e = error(&table("{ uri: 'http://c', namespace: n, table: t }"));
    assert!(
        e.starts_with("rules/t.yaml:4:42: ")
            && e.contains("reads as a boolean: quote the namespace's name"),
        "{e}"
    );
    let e = error(&table(
        "{ uri: 'http://c', namespace: ns, table: t, tokn_env: A }",
    ));
    assert!(e.starts_with("rules/t.yaml:4:"), "{e}");
    assert!(e.contains("unknown field `tokn_env`"), "{e}");

    // The key: the table's REST resource URL, levels joined by %1F, names
    // percent-encoded, the warehouse as a query.
    let rules = driftwatch::rules::parse_rule_file(
        Path::new("rules/t.yaml"),
        &table("{ uri: 'https://cat.example.com/api/', prefix: /main/, warehouse: 'wh 1', namespace: [sales, eu], table: 'or ders', token_file: tok }"),
    )
    .unwrap();
    let table = rules.table.unwrap();
    assert_eq!(
        table.location,
        Path::new(
            "https://cat.example.com/api/v1/main/namespaces/sales%1Feu/tables/or%20ders?warehouse=wh%201"
        )
    );
    let catalog = table.catalog.unwrap();
    assert_eq!(catalog.prefix.as_deref(), Some("main"));
    assert_eq!(
        catalog.token,
        Some(driftwatch::rules::CatalogToken::File("rules/tok".into()))
    );
}

/// A catalog whose warehouse is on S3 (the s3s-fs server): the catalog's
/// answer names `s3://lake/warehouse/…` files, read through the lake's S3
/// client (the environment's keys and endpoint) with ranged reads, exactly
/// as a table found by its URL.
#[test]
fn issue_16_rest_catalog_table_on_s3_is_read_through_the_lakes_store() {
    let s3 = crate::object_store::S3Server::start();
    let server = RestCatalogServer::start();
    let keys = serde_json::json!({
        "s3.endpoint": s3.endpoint(),
        "s3.access-key-id": crate::object_store::ACCESS_KEY,
        "s3.secret-access-key": crate::object_store::SECRET_KEY,
        "s3.region": "us-east-1",
    });
    server.create_environment(
        "lakeside",
        serde_json::json!({ "scheme": "s3", "root": "s3://lake/warehouse", "options": keys }),
    );
    let mut properties = keys.clone();
    properties["py-io-impl"] = "pyiceberg.io.fsspec.FsspecFileIO".into();
    let write = |action: &str, arg: Option<&str>| {
        server.write_in("lakeside", &properties, action, "flights", arg)
    };
    write("create", None);
    write("append", Some(r#"[["UA", 1.0], ["AA", 2.0]]"#));
    write(
        "append",
        Some(r#"[["DL", -3.0], ["B6", 4.0], [null, 5.0]]"#),
    );
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        catalog_rules(&server.uri(), "flights", &format!("token_env: {TOKEN_ENV}"))
            .replace("prefix: dev", "prefix: lakeside"),
    )
    .unwrap();
    let mut env = s3.env();
    env.extend(env_token());
    let check = |env: &[(&'static str, String)]| {
        let out = driftwatch_env(
            &[
                "check",
                "--rules",
                rules.to_str().unwrap(),
                "--format",
                "json",
            ],
            env,
        );
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), report["reports"][0].clone())
    };
    let (code, report) = check(&env);
    assert_eq!(code, Some(1), "{report}");
    let key = format!(
        "{}/v1/lakeside/namespaces/bronze/tables/flights",
        server.uri()
    );
    assert_eq!(report["source"], format!("{key}@v2").as_str());
    assert_eq!(report["rows"], 3);
    assert_eq!(report["checks"][0]["failing_rows"], 1);
    assert_eq!(report["checks"][1]["failing_rows"], 1);
    // The data files were read from the S3 server (its request log names them).
    assert!(
        s3.log_text().contains("warehouse/managed/bronze/flights-"),
        "no request for the table's files on the S3 server"
    );
    // Without the lake's S3 keys the files cannot be read: an environment
    // error naming the table, never a verdict.
    let (code, report) = check(&env_token());
    assert_eq!(code, Some(2), "{report}");
    let error = report["error"].as_str().unwrap();
    assert!(error.starts_with(&format!("{key}: ")), "{error}");
    assert!(!error.contains(crate::object_store::SECRET_KEY), "{error}");
}

/// A table dropped and created again under the same name starts its
/// sequence numbers anew, below the versions already recorded: the agent
/// says so on `/status` (degraded, retried) instead of skipping the new
/// table's versions in silence.
#[test]
fn issue_16_a_replaced_catalog_table_is_an_error_not_silently_skipped() {
    let server = RestCatalogServer::start();
    server.write("create", "flights", None);
    server.write("append", "flights", Some(r#"[["UA", 1.0]]"#));
    server.write("append", "flights", Some(r#"[["AA", 2.0]]"#));
    let lake = Lake::new(&catalog_rules(
        &server.uri(),
        "flights",
        &format!("token_env: {TOKEN_ENV}"),
    ));
    let env = env_token();
    let env = env_refs(&env);
    let agent = Agent::start_with_env(&lake, &[], &env);
    wait_versions(&lake, &agent, 2);
    server.write("drop", "flights", None);
    server.write("create", "flights", None);
    server.write("append", "flights", Some(r#"[["DL", 3.0]]"#));
    // Polls between the drop and the append see no table, then the new
    // table without a snapshot (its versions end at 0): the error settles
    // on the table as it now is.
    let key = format!("{}/v1/dev/namespaces/bronze/tables/flights", server.uri());
    let expected = format!(
        "{key}: cannot read the Iceberg metadata: the table's versions end at 1, before version 2 already recorded for it: it was replaced (dropped and created again, or another table now has this location); its versions are not evaluated until the dataset's recorded state is removed or the rule file names it as another dataset"
    );
    let status = wait_for("the replaced table on /status", || {
        let status = agent.status();
        (status["tables"][0]["error"] == expected.as_str()).then_some(status)
    });
    assert!(status["agent"]["degraded"]["reason"].is_string());
    assert_eq!(lake.results().len(), 2);
    assert_eq!(agent.terminate(), Some(0));
}
