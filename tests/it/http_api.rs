//! Issue 15, the HTTP API's trust and connection budgets: the real binary,
//! real HTTP clients (reqwest, and raw TCP where a test must misbehave) on
//! loopback. Waits poll with the shared deadline; durations are measured,
//! never slept.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Answer, send};

use crate::agent::{Agent, Lake, RULES, wait_for, wait_results};

/// Rules of the `events` stream: a declared schema.
const EVENT_RULES: &str =
    "dataset: events\nchecks:\n  - schema: { columns: { id: int64 } }\n  - row_count: { min: 1 }\n";

/// A lake with the flights rules and the `events` rules, and a config file
/// with `[http]` keys `http` and the rest `rest`.
fn lake_with(http: &str, rest: &str) -> (Lake, PathBuf) {
    let lake = Lake::new(RULES);
    std::fs::write(lake.path("rules/events.yaml"), EVENT_RULES).unwrap();
    let config = lake.path("driftwatch.toml");
    std::fs::write(
        &config,
        format!(
            "watch = [\"lake\"]\nrules = \"rules\"\nstate = \"state\"\n[lake]\nsettle = \"300ms\"\n\
             [http]\nlisten = \"127.0.0.1:0\"\n{http}\n{rest}"
        ),
    )
    .unwrap();
    (lake, config)
}

fn start(lake: &Lake, config: &Path, env: &[(&str, &str)]) -> Agent {
    let args = vec![
        "run".to_string(),
        "--config".to_string(),
        config.display().to_string(),
    ];
    Agent::spawn_with_env(lake, &args, &lake.state(), env)
}

fn events(first: u64, n: u64) -> Vec<u8> {
    (first..first + n)
        .flat_map(|id| format!("{{\"id\": {id}}}\n").into_bytes())
        .collect()
}

fn post_events(agent: &Agent, dataset: &str, headers: &[(&str, &str)]) -> Answer {
    send(
        "POST",
        &format!("http://{}/ingest/{dataset}", agent.addr),
        headers,
        Some(("application/x-ndjson", events(0, 3))),
    )
}

/// Writes `request` on a new connection and reads until the agent closes it.
fn raw(addr: SocketAddr, request: &str) -> String {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    tcp.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

fn get_with_host(addr: SocketAddr, path: &str, host: &str) -> String {
    raw(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
}

fn driftwatch(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_driftwatch"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn issue_15_the_host_header_is_checked_so_dns_rebinding_fails_while_ips_and_listed_names_work() {
    let (lake, config) = lake_with("allowed_hosts = [\"driftwatch.monitoring.svc\"]", "");
    let agent = start(&lake, &config, &[]);
    let port = agent.addr.port();
    // What a Prometheus scraping a pod IP, a probe, curl on localhost or a
    // Service name listed in the config send.
    for host in [
        format!("127.0.0.1:{port}"),
        "10.244.1.17:9464".to_string(),
        "[::1]".to_string(),
        format!("[::1]:{port}"),
        "localhost".to_string(),
        format!("LocalHost:{port}"),
        "driftwatch.monitoring.svc".to_string(),
        "Driftwatch.Monitoring.Svc:9464".to_string(),
    ] {
        for path in ["/healthz", "/metrics", "/status"] {
            let answer = get_with_host(agent.addr, path, &host);
            assert!(
                answer.starts_with("HTTP/1.1 200 OK\r\n"),
                "{host} {path}: {answer}"
            );
        }
    }
    let answer = send("GET", &format!("http://{}/metrics", agent.addr), &[], None);
    assert_eq!(answer.status, 200);
    // A page on evil.example whose name now resolves to 127.0.0.1.
    for host in [
        "evil.example",
        format!("evil.example:{port}").as_str(),
        "127.0.0.1.evil.example",
        "localhost.evil.example",
    ] {
        for path in ["/healthz", "/status", "/webhooks", "/", "/nope"] {
            let answer = get_with_host(agent.addr, path, host);
            assert!(
                answer.starts_with("HTTP/1.1 421 Misdirected Request\r\n"),
                "{host} {path}: {answer}"
            );
            assert!(
                answer.ends_with(&format!(
                    "\r\n\r\nHost `{host}` is not served here: use the agent's IP address or localhost, or list the name in `http.allowed_hosts` in the config file\n"
                )),
                "{answer}"
            );
        }
    }
    let answer = raw(
        agent.addr,
        "POST /ingest/events HTTP/1.1\r\nHost: evil.example\r\nContent-Type: application/x-ndjson\r\nContent-Length: 10\r\nConnection: close\r\n\r\n{\"id\": 1}\n",
    );
    assert!(answer.starts_with("HTTP/1.1 421"), "{answer}");
    // HTTP/1.1 without a Host at all.
    let answer = raw(
        agent.addr,
        "GET /status HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
}

#[test]
fn issue_15_an_api_token_guards_ingest_and_webhook_retry_and_the_cli_sends_it() {
    let (lake, config) = lake_with(
        "api_token_env = \"DW_API_TOKEN\"",
        "[[sources]]\nkind = \"http\"\ndataset = \"events\"\n\
         [[sources]]\nkind = \"http\"\ndataset = \"own\"\nbearer_token_env = \"DW_OWN_TOKEN\"\n",
    );
    std::fs::write(
        lake.path("rules/own.yaml"),
        EVENT_RULES.replace("dataset: events", "dataset: own"),
    )
    .unwrap();
    let env = [("DW_API_TOKEN", "api-t0ken"), ("DW_OWN_TOKEN", "own-t0ken")];
    let agent = start(&lake, &config, &env);
    let no_token = post_events(&agent, "events", &[]);
    assert_eq!(no_token.status, 401, "{}", no_token.text);
    assert_eq!(no_token.header("www-authenticate"), "Bearer");
    let wrong = post_events(&agent, "events", &[("authorization", "Bearer api-t0kem")]);
    assert_eq!(wrong.status, 401);
    let own_elsewhere = post_events(&agent, "events", &[("authorization", "Bearer own-t0ken")]);
    assert_eq!(
        own_elsewhere.status, 401,
        "a source's token is for its dataset only"
    );
    let ok = post_events(&agent, "events", &[("authorization", "Bearer api-t0ken")]);
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(
        serde_json::from_str::<Value>(&ok.text).unwrap()["accepted"],
        3
    );
    // A source with its own token takes it, or the API token.
    for token in ["own-t0ken", "api-t0ken"] {
        let ok = post_events(
            &agent,
            "own",
            &[("authorization", &format!("Bearer {token}"))],
        );
        assert_eq!(ok.status, 200, "{token}: {}", ok.text);
    }
    assert_eq!(post_events(&agent, "own", &[]).status, 401);

    let retry = format!("http://{}/webhooks/nope/retry", agent.addr);
    let answer = send("POST", &retry, &[("x-driftwatch-request", "1")], None);
    assert_eq!(
        answer.status, 401,
        "the header is not the token: {}",
        answer.text
    );
    assert_eq!(
        answer.text,
        "missing or wrong API token (`Authorization: Bearer …`, see `http.api_token_env`)\n"
    );
    let answer = send(
        "POST",
        &retry,
        &[("authorization", "Bearer api-t0ken")],
        None,
    );
    assert_eq!(answer.status, 404, "{}", answer.text);
    assert_eq!(answer.text, "no webhook event `nope` in the outbox\n");

    // The CLI finds the variable's name in agent.json and sends its value.
    let state = lake.state().display().to_string();
    let (code, _, err) = driftwatch(&["webhooks", "retry", "nope", "--state", &state], &env);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err, "error: no webhook event `nope` in the outbox\n");
    let (code, _, err) = driftwatch(&["webhooks", "retry", "nope", "--state", &state], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("the agent takes an API token from `DW_API_TOKEN`: set `DW_API_TOKEN` in this environment"),
        "{err}"
    );
    let listen = agent.addr.to_string();
    let (code, _, err) = driftwatch(
        &[
            "webhooks",
            "retry",
            "nope",
            "--listen",
            &listen,
            "--token-env",
            "DW_API_TOKEN",
        ],
        &env,
    );
    assert_eq!(code, 2, "{err}");
    assert_eq!(err, "error: no webhook event `nope` in the outbox\n");
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(lake.state().join("agent.json")).unwrap())
            .unwrap();
    assert_eq!(info["api_token_env"], "DW_API_TOKEN");
    assert!(
        !std::fs::read_to_string(lake.state().join("agent.json"))
            .unwrap()
            .contains("api-t0ken")
    );
}

#[test]
fn issue_15_webhook_retry_without_a_token_refuses_requests_a_web_page_could_send() {
    let (lake, config) = lake_with("", "");
    let agent = start(&lake, &config, &[]);
    let retry = format!("http://{}/webhooks/nope/retry", agent.addr);
    // A cross-site form post: a simple request, no custom header.
    let answer = send(
        "POST",
        &retry,
        &[],
        Some(("application/x-www-form-urlencoded", b"a=1".to_vec())),
    );
    assert_eq!(answer.status, 403);
    assert_eq!(
        answer.text,
        "send the header `X-Driftwatch-Request: 1` (as `driftwatch webhooks retry` does): it proves the request does not come from a web page\n"
    );
    let answer = send("POST", &retry, &[("X-Driftwatch-Request", "1")], None);
    assert_eq!(answer.status, 404, "{}", answer.text);
    let state = lake.state().display().to_string();
    let (code, _, err) = driftwatch(&["webhooks", "retry", "nope", "--state", &state], &[]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err, "error: no webhook event `nope` in the outbox\n");
}

#[test]
fn issue_15_a_metrics_listener_serves_only_metrics_and_probes() {
    let (lake, config) = lake_with(
        "metrics_listen = \"127.0.0.1:0\"",
        "[[sources]]\nkind = \"http\"\ndataset = \"events\"\n",
    );
    let agent = start(&lake, &config, &[]);
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(lake.state().join("agent.json")).unwrap())
            .unwrap();
    let metrics: SocketAddr = info["metrics_listen"].as_str().unwrap().parse().unwrap();
    assert_ne!(metrics, agent.addr);
    for addr in [agent.addr, metrics] {
        for (path, body) in [("/healthz", "ok\n"), ("/readyz", "ready\n")] {
            let answer = send("GET", &format!("http://{addr}{path}"), &[], None);
            assert_eq!(
                (answer.status, answer.text.as_str()),
                (200, body),
                "{addr}{path}"
            );
        }
        let answer = send("GET", &format!("http://{addr}/metrics"), &[], None);
        assert_eq!(answer.status, 200);
        assert!(answer.text.contains("# TYPE "), "{}", answer.text);
    }
    for path in ["/status", "/", "/webhooks"] {
        assert_eq!(
            send("GET", &format!("http://{metrics}{path}"), &[], None).status,
            404,
            "{path}"
        );
        assert_eq!(
            send("GET", &format!("http://{}{path}", agent.addr), &[], None).status,
            200,
            "{path}"
        );
    }
    let answer = send(
        "GET",
        &format!("http://{metrics}/report/flights"),
        &[],
        None,
    );
    assert_eq!((answer.status, answer.text.as_str()), (404, ""));
    let answer = send(
        "POST",
        &format!("http://{metrics}/ingest/events"),
        &[],
        Some(("application/x-ndjson", events(0, 3))),
    );
    assert_eq!(answer.status, 404);
    let answer = post_events(&agent, "events", &[]);
    assert_eq!(answer.status, 200, "{}", answer.text);
    // The Host check holds on the metrics listener too.
    let answer = get_with_host(metrics, "/metrics", "evil.example");
    assert!(answer.starts_with("HTTP/1.1 421"), "{answer}");
    // A listener beyond loopback without a token is warned about; this one is not.
    assert!(!agent.log_text().contains("WITHOUT an API token"));
}

#[test]
fn issue_15_listening_beyond_loopback_without_a_token_is_warned_about() {
    let (lake, config) = lake_with("", "");
    let args = vec![
        "run".to_string(),
        "--config".to_string(),
        config.display().to_string(),
        "--listen".to_string(),
        "0.0.0.0:0".to_string(),
    ];
    let agent = Agent::spawn(&lake, &args, &lake.state());
    let log = agent.log_text();
    assert_eq!(
        log.matches("listening beyond loopback WITHOUT an API token")
            .count(),
        1,
        "{log}"
    );
}

#[test]
fn issue_15_webhooks_show_urls_without_userinfo_or_query_values() {
    let lake = Lake::new("dataset: flights\nchecks:\n  - row_count: { min: 2000 }\n");
    let config = lake.path("driftwatch.toml");
    // Nothing listens on port 1: the delivery fails and its error quotes the URL.
    std::fs::write(
        &config,
        "watch = [\"lake\"]\nrules = \"rules\"\nstate = \"state\"\n[lake]\nsettle = \"300ms\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\n\
         [[webhooks]]\nname = \"retrain\"\nurl = \"http://user:pass@127.0.0.1:1/hook?token=abc&team=ml#frag\"\n\
         retry_backoff = \"50ms\"\nretry_backoff_max = \"100ms\"\n[webhooks.trigger]\nchecks = [\"row_count\"]\n",
    )
    .unwrap();
    let agent = start(&lake, &config, &[]);
    lake.land("small.parquet", &lake.bytes(1000, 91, 0));
    wait_results(&lake, &agent, 1);
    let doc: Value = wait_for("a failed delivery attempt", || {
        let (_, body) = agent.get("/webhooks");
        let doc: Value = serde_json::from_str(&body).unwrap();
        doc["deliveries"][0]["last_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
            .then_some(doc)
    });
    let redacted = "http://127.0.0.1:1/hook?token=REDACTED&team=REDACTED";
    assert_eq!(doc["webhooks"][0]["url"], redacted);
    assert_eq!(doc["deliveries"][0]["url"], redacted);
    assert!(
        doc["deliveries"][0]["last_error"]
            .as_str()
            .unwrap()
            .starts_with(&format!("error sending request for url ({redacted}): ")),
        "{doc}"
    );
    let text = doc.to_string();
    for secret in ["user:pass", "pass@", "abc", "frag", "team=ml"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    let state = lake.state().display().to_string();
    let (code, out, err) = driftwatch(
        &["webhooks", "--state", &state, "--format", "json", "--all"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    for secret in ["user:pass", "pass@", "abc", "frag"] {
        assert!(!out.contains(secret), "{secret} in {out}");
    }
}

#[test]
fn issue_15_an_http_source_without_a_declared_schema_infers_only_when_told_to() {
    let (lake, config) = lake_with(
        "",
        "[[sources]]\nkind = \"http\"\ndataset = \"free\"\n\
         [[sources]]\nkind = \"http\"\ndataset = \"opted\"\ninfer_schema = true\n\
         [[sources]]\nkind = \"http\"\ndataset = \"events\"\n",
    );
    for d in ["free", "opted"] {
        std::fs::write(
            lake.path(&format!("rules/{d}.yaml")),
            format!("dataset: {d}\nchecks:\n  - row_count: {{ min: 1 }}\n"),
        )
        .unwrap();
    }
    let agent = start(&lake, &config, &[]);
    let answer = post_events(&agent, "free", &[]);
    assert_eq!(answer.status, 409, "{}", answer.text);
    let body: Value = serde_json::from_str(&answer.text).unwrap();
    assert_eq!(
        body["error"],
        "stream `http:free` has no declared schema: add a `schema` check to the rule file of dataset `free`, or set `infer_schema = true` on its [[sources]] entry to let the first post fix it"
    );
    assert!(!lake.state().join("streams/http-free/schema.json").exists());
    let answer = post_events(&agent, "opted", &[]);
    assert_eq!(answer.status, 200, "{}", answer.text);
    let answer = post_events(&agent, "events", &[]);
    assert_eq!(answer.status, 200, "{}", answer.text);
    // The key belongs to `http` sources only.
    std::fs::write(
        &config,
        "watch = [\"lake\"]\nrules = \"rules\"\nstate = \"state2\"\n\
         [[sources]]\nkind = \"ndjson_files\"\ndataset = \"free\"\ninfer_schema = true\n",
    )
    .unwrap();
    let (code, _, err) = driftwatch(&["run", "--config", &config.display().to_string()], &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("`sources[0].infer_schema`: only for kind = \"http\"; this source has kind = \"ndjson_files\""),
        "{err}"
    );
}

#[test]
fn issue_15_every_answer_carries_security_headers_and_pages_still_render() {
    let (lake, config) = lake_with("", "");
    let agent = start(&lake, &config, &[]);
    lake.land("b.parquet", &lake.bytes(1000, 1, 0));
    wait_results(&lake, &agent, 1);
    for path in ["/", "/report/flights", "/status", "/metrics", "/nope"] {
        let answer = send("GET", &format!("http://{}{path}", agent.addr), &[], None);
        assert_eq!(
            answer.header("content-security-policy"),
            "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            "{path}"
        );
        assert_eq!(answer.header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(answer.header("x-frame-options"), "DENY", "{path}");
        assert_eq!(answer.header("referrer-policy"), "no-referrer", "{path}");
        if path == "/report/flights" {
            assert_eq!(answer.status, 200);
            // What the policy allows is all the page needs: inline style, no
            // script, nothing fetched from anywhere.
            assert!(answer.text.contains("<style>"));
            for needs_more in ["<script", "src=", "<link", "url("] {
                assert!(!answer.text.contains(needs_more), "{needs_more}");
            }
        }
    }
}

#[test]
fn issue_15_connections_over_the_cap_are_closed_at_once_and_idle_ones_time_out() {
    let (lake, config) = lake_with("max_connections = 8\nheader_timeout = \"10s\"", "");
    let agent = start(&lake, &config, &[]);
    let started = Instant::now();
    // Eight idle connections (nothing sent) fill the cap.
    let connect = || {
        let tcp = TcpStream::connect(agent.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        tcp
    };
    // Whether the agent holds a connection open (not closed at once).
    let held = |tcp: &TcpStream| {
        tcp.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let open = matches!(
            tcp.peek(&mut [0u8; 1]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
        );
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        open
    };
    let mut idle: Vec<TcpStream> = Vec::new();
    // Once the agent holds all eight, a new connection is closed at once,
    // without an answer, well before the idle ones time out. (The agent may
    // still be closing the start-up probe's connection when the first ones
    // arrive: one refused then is replaced. A probe the agent still answers
    // is listed in the failure message.)
    let mut answered = Vec::new();
    let refused_after = loop {
        idle.retain(|t| held(t));
        while idle.len() < 8 {
            idle.push(connect());
        }
        let mut tcp = connect();
        let _ =
            tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer);
        if answer.is_empty() && idle.iter().all(&held) {
            break started.elapsed();
        }
        answered.push((
            started.elapsed(),
            String::from_utf8_lossy(&answer)
                .lines()
                .next()
                .unwrap_or("")
                .to_string(),
        ));
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "no connection refused: {answered:?}\n{}",
            agent.log_text()
        );
    };
    assert!(refused_after < Duration::from_secs(8), "{refused_after:?}");
    // More refusals in the same episode add no log line.
    let episodes = agent.log_text().matches("connection limit reached").count();
    assert!(episodes >= 1);
    for _ in 0..3 {
        let mut tcp = connect();
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer);
        assert!(answer.is_empty());
    }
    assert!(started.elapsed() < Duration::from_secs(8));
    // The idle ones are closed by the header timeout…
    for tcp in &mut idle {
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer);
        assert!(answer.is_empty());
    }
    let closed_after = started.elapsed();
    assert!(
        closed_after >= Duration::from_millis(9900) && closed_after < Duration::from_secs(30),
        "{closed_after:?}"
    );
    // …and the agent answers at once on a new connection.
    let asked = Instant::now();
    let answer = get_with_host(agent.addr, "/healthz", "localhost");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    eprintln!(
        "figures: over the cap closed after {refused_after:?}; idle closed after {closed_after:?}; /healthz then in {:?}",
        asked.elapsed()
    );
    let log = agent.log_text();
    assert_eq!(
        log.matches("connection limit reached").count(),
        episodes,
        "one line per episode, not per connection: {log}"
    );
    // A client sending half a header line is cut off after the timeout.
    let mut slow = TcpStream::connect(agent.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let begun = Instant::now();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHo").unwrap();
    let mut answer = Vec::new();
    let _ = slow.read_to_end(&mut answer);
    let cut = begun.elapsed();
    assert!(
        cut >= Duration::from_millis(9900) && cut < Duration::from_secs(30),
        "{cut:?}"
    );
    assert!(!String::from_utf8_lossy(&answer).contains("200 OK"));
    eprintln!("figures: half a header line cut after {cut:?}");
}

#[test]
fn issue_15_with_64_descriptors_idle_connections_cannot_stop_evaluation() {
    let (lake, config) = lake_with("max_connections = 16\nheader_timeout = \"3s\"", "");
    let agent = start(&lake, &config, &[]);
    let info = driftwatch::agent::read_agent_info(&lake.state()).unwrap();
    let limited = std::process::Command::new("prlimit")
        .args(["--pid", &info.pid.to_string(), "--nofile=64:64"])
        .status()
        .unwrap();
    assert!(limited.success());
    // Far more connections than descriptors: beyond the cap they are closed
    // at once, so the agent keeps descriptors for its lake files.
    let held: Vec<TcpStream> = (0..200)
        .filter_map(|_| TcpStream::connect(agent.addr).ok())
        .collect();
    assert!(held.len() >= 100, "{}", held.len());
    lake.land("b.parquet", &lake.bytes(1000, 1, 0));
    let results = wait_results(&lake, &agent, 1);
    let report = &results[0]["reports"][0];
    assert_eq!(report["error"], Value::Null, "{report}");
    assert_eq!(report["rows"], 1000);
    drop(held);
    wait_for("/healthz", || {
        (agent.get("/healthz").0 == 200).then_some(())
    });
}

#[test]
fn issue_15_clients_stalling_mid_body_hold_bytes_of_the_budget_not_decode_slots() {
    let (lake, config) = lake_with(
        "body_budget = \"64KiB\"",
        "[[sources]]\nkind = \"http\"\ndataset = \"events\"\nmax_body = \"16KiB\"\nbody_timeout = \"60s\"\n",
    );
    let agent = start(&lake, &config, &[]);
    let stall = |length: usize| {
        let mut tcp = TcpStream::connect(agent.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
        tcp.write_all(
            format!(
                "POST /ingest/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-ndjson\r\nContent-Length: {length}\r\n\r\n{{\"id\": 1"
            )
            .as_bytes(),
        )
        .unwrap();
        tcp
    };
    // More stalled clients than decode slots (one per core, at least two).
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let stalled: Vec<TcpStream> = (0..cores.max(2) + 1).map(|_| stall(1000)).collect();
    let asked = Instant::now();
    let answer = post_events(&agent, "events", &[]);
    let took = asked.elapsed();
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert!(
        took < Duration::from_secs(10),
        "{took:?} (body_timeout is 60 s)"
    );
    eprintln!(
        "figures: a post next to {} stalled clients answered in {took:?}",
        cores.max(2) + 1
    );
    drop(stalled);
    // Four stalled 16 KiB bodies fill the 64 KiB budget: the next post is
    // told to come back, and nothing of it is taken.
    // (Opened one by one until posts are refused: the first stalled
    // clients' bytes are given back as the agent notices they are gone.)
    let mut full: Vec<TcpStream> = Vec::new();
    let refused = wait_for("a post refused for the body budget", || {
        let answer = post_events(&agent, "events", &[]);
        if answer.status == 503 {
            return Some(answer);
        }
        if full.len() < 8 {
            full.push(stall(16 * 1024));
        }
        None
    });
    assert_eq!(refused.header("retry-after"), "1");
    let body: Value = serde_json::from_str(&refused.text).unwrap();
    assert_eq!(
        body["error"],
        "the bodies being read and decoded fill the agent's body budget (65536 bytes, `http.body_budget`); nothing of this body was taken, send it again"
    );
    drop(full);
    wait_for("a post accepted once the stalled clients are gone", || {
        (post_events(&agent, "events", &[]).status == 200).then_some(())
    });
}
