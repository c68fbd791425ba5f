//! Retraining webhooks end to end (issue 6): the real binary, a real HTTP
//! receiver on loopback that verifies signatures and records every request,
//! and a scripted sequence of answers. Every wait polls with a deadline.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::IntoResponse;
use driftwatch::sinks::webhook::sign;
use serde_json::Value;

use crate::agent::{Agent, Lake, wait_for, wait_results};

pub(crate) const SECRET: &str = "s3cret-for-tests";

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    pub(crate) body: Vec<u8>,
    at: Instant,
}

impl Received {
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
            .unwrap_or("")
    }
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
    /// Whether the signature headers verify with the test secret.
    pub(crate) fn signed(&self) -> bool {
        sign::verify(
            SECRET.as_bytes(),
            self.header("X-Driftwatch-Timestamp"),
            &self.body,
            self.header("X-Driftwatch-Signature"),
        )
    }
}

/// A scripted answer: status, extra headers, body.
pub(crate) type Answer = (u16, Vec<(&'static str, &'static str)>, &'static str);

#[derive(Default)]
struct ReceiverState {
    requests: Vec<Received>,
    /// Answers per path, used in order; afterwards 200.
    script: BTreeMap<String, VecDeque<Answer>>,
    /// How long to wait before answering each request (a slow receiver):
    /// a seeded generator of delays in milliseconds, or none.
    delay: Option<Box<dyn FnMut() -> u64 + Send>>,
}

/// An HTTP receiver on loopback, in its own thread and runtime.
pub(crate) struct Receiver {
    addr: SocketAddr,
    state: Arc<Mutex<ReceiverState>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

async fn receive(
    State(state): State<Arc<Mutex<ReceiverState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let ((status, extra, text), delay) = {
        let mut s = state.lock().unwrap();
        s.requests.push(Received {
            method: method.to_string(),
            path: uri.path().to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                .collect(),
            body: body.to_vec(),
            at: Instant::now(),
        });
        let answer = s
            .script
            .get_mut(uri.path())
            .and_then(|q| q.pop_front())
            .unwrap_or((200, Vec::new(), "ok"));
        (answer, s.delay.as_mut().map(|next| next()))
    };
    // A slow receiver takes the event, then answers late.
    if let Some(ms) = delay {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut response = (
        axum::http::StatusCode::from_u16(status).unwrap(),
        text.to_string(),
    )
        .into_response();
    for (k, v) in extra {
        response.headers_mut().insert(k, v.parse().unwrap());
    }
    response
}

/// A TLS listener for axum: the handshake happens in `accept`; failed
/// handshakes (an untrusting client) are skipped.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

impl Receiver {
    /// Binds `addr` (use port 0 for any) and serves plain HTTP until dropped.
    pub(crate) fn start(addr: &str) -> Receiver {
        Self::start_with(addr, None)
    }

    /// Serves HTTPS with this certificate chain and key (PEM files).
    fn start_tls(addr: &str, cert: &std::path::Path, key: &std::path::Path) -> Receiver {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        driftwatch::tls::ensure_crypto_provider();
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let config = tokio_rustls::rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Self::start_with(
            addr,
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
        )
    }

    fn start_with(addr: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> Receiver {
        let listener = std::net::TcpListener::bind(addr).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(state.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let stopped = async move {
                    let _ = stopped.await;
                };
                match tls {
                    None => axum::serve(listener, app)
                        .with_graceful_shutdown(stopped)
                        .await
                        .unwrap(),
                    Some(acceptor) => axum::serve(
                        TlsListener {
                            tcp: listener,
                            acceptor,
                        },
                        app,
                    )
                    .with_graceful_shutdown(stopped)
                    .await
                    .unwrap(),
                }
            });
        });
        Receiver {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) fn script(&self, path: &str, answers: Vec<Answer>) {
        self.state
            .lock()
            .unwrap()
            .script
            .insert(path.to_string(), answers.into());
    }

    /// Answers each later request only after `next()` milliseconds (the
    /// request is recorded when it arrives, before the wait).
    pub(crate) fn delay_answers(&self, next: impl FnMut() -> u64 + Send + 'static) {
        self.state.lock().unwrap().delay = Some(Box::new(next));
    }

    pub(crate) fn requests(&self) -> Vec<Received> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Waits until at least `n` requests arrived and returns them all.
    pub(crate) fn wait_requests(&self, n: usize) -> Vec<Received> {
        wait_for(&format!("{n} webhook request(s)"), || {
            let r = self.requests();
            (r.len() >= n).then_some(r)
        })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A loopback port that refuses connections and that no other process can
/// take: a socket bound to it without listening. Drop it to free the port.
fn refusing_port() -> (SocketAddr, tokio::net::TcpSocket) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    (socket.local_addr().unwrap(), socket)
}

/// Writes `driftwatch.toml` for `lake` with these `[[webhooks]]` and starts the agent.
pub(crate) fn start_agent(lake: &Lake, webhooks: &str) -> Agent {
    let config = config_file(lake, webhooks);
    Agent::spawn_with_env(
        lake,
        &[
            "run".to_string(),
            "--config".to_string(),
            config.display().to_string(),
            "--listen".to_string(),
            "127.0.0.1:0".to_string(),
        ],
        &lake.state(),
        &[
            ("DW_TEST_SECRET", SECRET),
            ("GH_TOKEN", "ghp_test_token"),
            ("AF_USER", "admin"),
            ("AF_PASSWORD", "pa:ss"),
        ],
    )
}

fn config_file(lake: &Lake, webhooks: &str) -> PathBuf {
    let path = lake.path("driftwatch.toml");
    std::fs::write(
        &path,
        format!(
            "watch = [\"lake\"]\nrules = \"rules\"\nstate = \"state\"\n[lake]\nsettle = \"300ms\"\n\n{webhooks}"
        ),
    )
    .unwrap();
    path
}

/// `GET /webhooks` from the agent.
pub(crate) fn outbox(agent: &Agent) -> Value {
    let (code, body) = agent.get("/webhooks");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Waits until the outbox holds a delivery in `state` and returns it.
fn wait_delivery(agent: &Agent, state: &str) -> Value {
    wait_for(&format!("a {state} delivery"), || {
        outbox(agent)["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["state"] == state)
            .cloned()
    })
}

fn driftwatch(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_driftwatch"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Rolling reference of one batch: a shifted batch after a calm one drifts.
const DRIFT_RULES: &str = "dataset: flights\nchecks:\n  - not_null: carrier\ndrift:\n  reference: { rolling: { batches: 1 } }\n  \
                           columns: [dep_delay]\nwebhooks: [retrain]\n";

/// A row-count check that fails on small batches (1,000 rows) and passes on large ones (3,000).
pub(crate) const ROWS_RULES: &str = "dataset: flights\nchecks:\n  - row_count: { min: 2000 }\n";

pub(crate) fn generic_webhook(url: &str, extra: &str) -> String {
    format!(
        "[[webhooks]]\nname = \"retrain\"\nurl = \"{url}\"\nsecret_env = \"DW_TEST_SECRET\"\nretry_backoff = \"50ms\"\nretry_backoff_max = \"200ms\"\n{extra}\n"
    )
}

#[test]
fn a_drift_event_triggers_exactly_one_signed_delivery() {
    let receiver = Receiver::start("127.0.0.1:0");
    let lake = Lake::new(DRIFT_RULES);
    let agent = start_agent(
        &lake,
        &generic_webhook(
            &receiver.url("/hooks/retrain"),
            "[webhooks.trigger]\ndataset_drift = true",
        ),
    );
    lake.land("b1.parquet", &lake.bytes(4000, 61, 0));
    wait_results(&lake, &agent, 1);
    lake.land("b2.parquet", &lake.bytes(4000, 62, 45));
    let r = wait_results(&lake, &agent, 2);
    assert_eq!(r[1]["reports"][0]["drift"]["dataset_drift"], true);
    let requests = receiver.wait_requests(1);
    let req = &requests[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/hooks/retrain");
    assert!(req.signed(), "the signature verifies: {:?}", req.headers);
    let ts: i64 = req.header("X-Driftwatch-Timestamp").parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - ts).abs() < 120);
    assert_eq!(req.header("Content-Type"), "application/json");
    assert!(req.header("User-Agent").starts_with("driftwatch/"));
    let event = req.json();
    assert_eq!(
        req.header("Idempotency-Key"),
        event["event_id"].as_str().unwrap()
    );
    assert_eq!(event["schema"], "driftwatch.webhook");
    assert_eq!(event["version"], 1);
    assert_eq!(event["webhook"], "retrain");
    assert_eq!(event["dataset"], "flights");
    assert_eq!(event["reason"]["kind"], "dataset_drift");
    assert_eq!(event["batches"].as_array().unwrap().len(), 1);
    assert_eq!(event["batches"][0]["seq"], 2);
    assert_eq!(event["batches"][0]["rows"], 4000);
    assert!(
        event["batches"][0]["source"]
            .as_str()
            .unwrap()
            .ends_with("b2.parquet")
    );
    assert_eq!(event["drifted_columns"][0]["column"], "dep_delay");
    assert_eq!(event["drifted_share"], 1.0);
    assert!(event["agent"]["instance"].as_str().unwrap().contains('-'));
    // A third batch like the second does not drift against it: no new event.
    lake.land("b3.parquet", &lake.bytes(4000, 63, 45));
    let r = wait_results(&lake, &agent, 3);
    assert_eq!(r[2]["reports"][0]["drift"]["dataset_drift"], false);
    let delivered = wait_delivery(&agent, "delivered");
    assert_eq!(delivered["attempts"], 1);
    assert_eq!(delivered["last_status"], 200);
    assert_eq!(outbox(&agent)["deliveries"].as_array().unwrap().len(), 1);
    assert_eq!(receiver.requests().len(), 1);
    let metrics = agent.get("/metrics").1;
    assert!(
        metrics.contains(
            "driftwatch_webhook_attempts_total{outcome=\"delivered\",webhook=\"retrain\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains(
        "driftwatch_webhook_events_total{dataset=\"flights\",outcome=\"fired\",webhook=\"retrain\"} 1"
    ));
}

#[test]
fn consecutive_and_cooldown_are_honoured_and_dry_runs_send_nothing() {
    let receiver = Receiver::start("127.0.0.1:0");
    let lake = Lake::new(ROWS_RULES);
    let webhooks = format!(
        "{}\n[webhooks.trigger]\nchecks = [\"row_count\"]\nconsecutive = 2\n\n\
         [[webhooks]]\nname = \"rehearsal\"\nurl = \"{}\"\ndry_run = true\ncooldown = \"0s\"\n[webhooks.trigger]\nchecks = [\"row_count\"]\n",
        generic_webhook(&receiver.url("/hooks/retrain"), "cooldown = \"1h\""),
        receiver.url("/hooks/rehearsal"),
    );
    let agent = start_agent(&lake, &webhooks);
    // small, large, small, small (fires), small, small (held back by the cooldown)
    let sizes = [1000, 3000, 1000, 1000, 1000, 1000];
    for (i, rows) in sizes.iter().enumerate() {
        lake.land(
            &format!("b{}.parquet", i + 1),
            &lake.bytes(*rows, 70 + i as u64, 0),
        );
        wait_results(&lake, &agent, i + 1);
    }
    let requests = receiver.wait_requests(1);
    let event = requests[0].json();
    assert_eq!(event["reason"]["kind"], "checks_failing");
    assert_eq!(
        event["reason"]["description"],
        "checks not passing: row_count"
    );
    let seqs: Vec<u64> = event["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        [3, 4],
        "the two small batches in a row after the large one"
    );
    assert_eq!(event["failing_checks"][0]["name"], "row_count");
    wait_delivery(&agent, "delivered");
    let deliveries = outbox(&agent)["deliveries"].as_array().unwrap().clone();
    let real: Vec<&Value> = deliveries
        .iter()
        .filter(|d| d["webhook"] == "retrain")
        .collect();
    assert_eq!(
        real.len(),
        1,
        "the cooldown held the second run back: {deliveries:?}"
    );
    // The dry-run webhook fires on every small batch (no cooldown), sends nothing.
    let dry: Vec<&Value> = deliveries
        .iter()
        .filter(|d| d["webhook"] == "rehearsal")
        .collect();
    assert_eq!(dry.len(), 5);
    assert!(
        dry.iter()
            .all(|d| d["state"] == "dry_run" && d["attempts"] == 0)
    );
    assert_eq!(receiver.requests().len(), 1);
    assert!(
        receiver
            .requests()
            .iter()
            .all(|r| r.path == "/hooks/retrain")
    );
    let log = agent.log_text();
    assert!(
        log.contains("webhook trigger held back by its cooldown"),
        "{log}"
    );
    assert!(log.contains("webhook dry run: this event would be sent"));
    let metrics = agent.get("/metrics").1;
    assert!(metrics.contains(
        "driftwatch_webhook_events_total{dataset=\"flights\",outcome=\"cooling_down\",webhook=\"retrain\"} 1"
    ), "{metrics}");
    assert!(metrics.contains(
        "driftwatch_webhook_events_total{dataset=\"flights\",outcome=\"dry_run\",webhook=\"rehearsal\"} 5"
    ));
}

#[test]
fn a_receiver_failing_three_times_gets_one_event_with_one_idempotency_key() {
    let receiver = Receiver::start("127.0.0.1:0");
    receiver.script(
        "/hooks/retrain",
        vec![
            (500, vec![], "boom"),
            (503, vec![("Retry-After", "1")], "busy"),
            (500, vec![], "boom"),
        ],
    );
    let lake = Lake::new(ROWS_RULES);
    let agent = start_agent(
        &lake,
        &generic_webhook(
            &receiver.url("/hooks/retrain"),
            "[webhooks.trigger]\nchecks = [\"row_count\"]",
        ),
    );
    lake.land("small.parquet", &lake.bytes(1000, 81, 0));
    let requests = receiver.wait_requests(4);
    let delivered = wait_delivery(&agent, "delivered");
    assert_eq!(requests.len(), 4);
    let key = requests[0].header("Idempotency-Key").to_string();
    assert!(!key.is_empty());
    for r in &requests {
        assert_eq!(r.header("Idempotency-Key"), key);
        assert_eq!(r.body, requests[0].body, "identical bytes on every attempt");
        assert!(r.signed());
    }
    assert_eq!(requests[0].json()["event_id"], key.as_str());
    // Retry-After: 1 on the second answer is honoured before the third attempt.
    assert!(requests[2].at - requests[1].at >= Duration::from_millis(990));
    assert_eq!(delivered["event_id"], key.as_str());
    assert_eq!(delivered["attempts"], 4);
    assert_eq!(delivered["last_status"], 200);
    let metrics = agent.get("/metrics").1;
    assert!(
        metrics
            .contains("driftwatch_webhook_attempts_total{outcome=\"retry\",webhook=\"retrain\"} 3"),
        "{metrics}"
    );
    let log = agent.log_text();
    assert!(log.contains("webhook attempt failed; will retry"));
    assert!(log.contains("webhook delivered"));
}

#[test]
fn a_400_answer_is_dead_lettered_at_once_and_retry_sends_it_again() {
    let receiver = Receiver::start("127.0.0.1:0");
    receiver.script(
        "/hooks/retrain",
        vec![
            (400, vec![], "unknown dataset"),
            (422, vec![], "still unknown"),
        ],
    );
    let lake = Lake::new(ROWS_RULES);
    let webhooks = generic_webhook(
        &receiver.url("/hooks/retrain"),
        "[webhooks.trigger]\nchecks = [\"row_count\"]",
    );
    let agent = start_agent(&lake, &webhooks);
    lake.land("small.parquet", &lake.bytes(1000, 91, 0));
    let dead = wait_delivery(&agent, "dead");
    assert_eq!(dead["attempts"], 1);
    assert_eq!(dead["last_status"], 400);
    assert_eq!(dead["last_response"], "unknown dataset");
    assert!(dead["last_error"].as_str().unwrap().contains("not retried"));
    assert_eq!(dead["next_attempt_at_ms"], Value::Null);
    assert_eq!(receiver.requests().len(), 1);
    let id = dead["event_id"].as_str().unwrap().to_string();
    // The CLI lists it (through the running agent) and re-queues it.
    let state = lake.state().display().to_string();
    let (code, table, err) = driftwatch(&["webhooks", "--state", &state]);
    assert_eq!(code, 0, "{err}");
    assert!(table.starts_with("EVENT"), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with(&id))
        .expect("the dead letter is listed");
    assert!(
        row.contains("retrain") && row.contains("dead") && row.contains("HTTP 400"),
        "{row}"
    );
    let (code, out, err) = driftwatch(&["webhooks", "retry", &id, "--state", &state]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("the agent sends it now"), "{out}");
    // Refused again (422): dead again, after one more request.
    let requests = receiver.wait_requests(2);
    assert_eq!(requests[1].header("Idempotency-Key"), id);
    let dead = wait_for("dead again", || {
        let d = outbox(&agent)["deliveries"][0].clone();
        (d["state"] == "dead" && d["last_status"] == 422).then_some(d)
    });
    assert_eq!(dead["attempts"], 1);
    // With the agent stopped, retry goes to the store; the next start sends it.
    assert_eq!(agent.terminate(), Some(0));
    let (code, out, err) = driftwatch(&["webhooks", "retry", &id, "--state", &state]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("sent when the agent starts"), "{out}");
    let agent = start_agent(&lake, &webhooks);
    let requests = receiver.wait_requests(3);
    assert_eq!(requests[2].header("Idempotency-Key"), id);
    let delivered = wait_delivery(&agent, "delivered");
    assert_eq!(delivered["event_id"], id.as_str());
    assert_eq!(delivered["attempts"], 1);
    // Only dead letters can be re-queued; unknown ids are refused.
    let (code, _, err) = driftwatch(&["webhooks", "retry", &id, "--state", &state]);
    assert_eq!(code, 2);
    assert!(err.contains("is delivered"), "{err}");
    let (code, _, err) = driftwatch(&["webhooks", "retry", "nope", "--state", &state]);
    assert_eq!(code, 2);
    assert!(err.contains("no webhook event `nope`"), "{err}");
    let (code, json, _) = driftwatch(&["webhooks", "--all", "--format", "json", "--state", &state]);
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(listed["webhooks"][0]["name"], "retrain");
    assert_eq!(listed["deliveries"][0]["state"], "delivered");
    assert_eq!(listed["deliveries"][0].get("body"), None);
}

#[test]
fn a_receiver_down_across_an_agent_kill_gets_the_event_when_it_returns() {
    let (port, reserved) = refusing_port();
    let lake = Lake::new(ROWS_RULES);
    let url = format!("http://{port}/hooks/retrain");
    let webhooks = generic_webhook(&url, "[webhooks.trigger]\nchecks = [\"row_count\"]");
    let agent = start_agent(&lake, &webhooks);
    lake.land("small.parquet", &lake.bytes(1000, 95, 0));
    // Connection refused, again and again: pending with a growing attempt count.
    let pending = wait_for("two failed attempts", || {
        outbox(&agent)["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["state"] == "pending" && d["attempts"].as_u64() >= Some(2))
            .cloned()
    });
    let id = pending["event_id"].as_str().unwrap().to_string();
    assert!(
        pending["last_error"].as_str().unwrap().contains("onnect"),
        "{pending}"
    );
    agent.kill9();
    // While the agent is down, the CLI reads the store.
    let state = lake.state().display().to_string();
    let (code, table, err) = driftwatch(&["webhooks", "--state", &state]);
    assert_eq!(code, 0, "{err}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("pending")),
        "{table}"
    );
    drop(reserved);
    let receiver = Receiver::start(&port.to_string());
    let agent = start_agent(&lake, &webhooks);
    let requests = receiver.wait_requests(1);
    assert_eq!(requests[0].header("Idempotency-Key"), id);
    assert!(requests[0].signed());
    let delivered = wait_delivery(&agent, "delivered");
    assert_eq!(delivered["event_id"], id.as_str());
    // The batch was recorded before the kill: it neither fires again nor is re-evaluated.
    assert_eq!(lake.results().len(), 1);
    assert_eq!(outbox(&agent)["deliveries"].as_array().unwrap().len(), 1);
    assert_eq!(receiver.requests().len(), 1);
}

#[test]
fn github_and_airflow_presets_send_the_requests_those_apis_document() {
    let receiver = Receiver::start("127.0.0.1:0");
    // Airflow answers 409 when the DAG run exists: the event was delivered before.
    receiver.script(
        "/api/v1/dags/retrain_model/dagRuns",
        vec![(409, vec![], "{\"title\": \"DAGRun already exists\"}")],
    );
    let lake = Lake::new(ROWS_RULES);
    let webhooks = format!(
        "[[webhooks]]\nname = \"gh\"\nurl = \"{}\"\npreset = \"github\"\ngithub_event_type = \"retrain-model\"\n\
         bearer_token_env = \"GH_TOKEN\"\n[webhooks.trigger]\nchecks = [\"row_count\"]\n\n\
         [[webhooks]]\nname = \"af\"\nurl = \"{}\"\npreset = \"airflow\"\nbasic_auth_env = [\"AF_USER\", \"AF_PASSWORD\"]\n\
         [webhooks.trigger]\nchecks = [\"row_count\"]\n",
        receiver.url("/repos/acme/models/dispatches"),
        receiver.url("/api/v1/dags/retrain_model/dagRuns"),
    );
    let agent = start_agent(&lake, &webhooks);
    lake.land("small.parquet", &lake.bytes(1000, 97, 0));
    let requests = receiver.wait_requests(2);
    let github = requests
        .iter()
        .find(|r| r.path == "/repos/acme/models/dispatches")
        .unwrap();
    assert_eq!(github.method, "POST");
    assert_eq!(github.header("Accept"), "application/vnd.github+json");
    assert_eq!(github.header("X-GitHub-Api-Version"), "2022-11-28");
    assert_eq!(github.header("Authorization"), "Bearer ghp_test_token");
    assert_eq!(github.header("Content-Type"), "application/json");
    assert!(github.header("User-Agent").starts_with("driftwatch/"));
    let body = github.json();
    let mut keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["client_payload", "event_type"]);
    assert_eq!(body["event_type"], "retrain-model");
    let payload = body["client_payload"].as_object().unwrap();
    assert!(
        payload.len() <= 10,
        "GitHub allows at most 10 top-level keys"
    );
    assert_eq!(payload["event_id"], github.header("Idempotency-Key"));
    assert_eq!(payload["dataset"], "flights");
    assert_eq!(payload["reason"], "checks_failing");
    assert_eq!(payload["failing_checks"], serde_json::json!(["row_count"]));

    let airflow = requests
        .iter()
        .find(|r| r.path == "/api/v1/dags/retrain_model/dagRuns")
        .unwrap();
    assert_eq!(airflow.method, "POST");
    assert_eq!(airflow.header("Content-Type"), "application/json");
    assert_eq!(airflow.header("Accept"), "application/json");
    // base64("admin:pa:ss")
    assert_eq!(airflow.header("Authorization"), "Basic YWRtaW46cGE6c3M=");
    let body = airflow.json();
    let mut keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["conf", "dag_run_id", "note"]);
    let id = airflow.header("Idempotency-Key");
    assert_eq!(body["dag_run_id"], format!("driftwatch-{id}"));
    assert_eq!(body["conf"]["event_id"], id);
    assert_eq!(body["conf"]["schema"], "driftwatch.webhook");
    assert_eq!(
        body["note"],
        "driftwatch: checks not passing: row_count on flights"
    );
    // Both count as delivered, the 409 included, with one attempt each.
    wait_for("both delivered", || {
        let doc = outbox(&agent);
        let d = doc["deliveries"].as_array().unwrap();
        (d.len() == 2
            && d.iter()
                .all(|x| x["state"] == "delivered" && x["attempts"] == 1))
        .then_some(())
    });
    assert_eq!(receiver.requests().len(), 2);
}

#[test]
fn webhook_mistakes_stop_the_agent_with_where_and_what() {
    let lake = Lake::new(ROWS_RULES);
    // A secret variable that is not set.
    let config = config_file(
        &lake,
        "[[webhooks]]\nname = \"retrain\"\nurl = \"https://ci.example.com/hook\"\nsecret_env = \"DW_NOT_SET_ANYWHERE\"\n\
         [webhooks.trigger]\ndataset_drift = true\n",
    );
    let (code, _, err) = driftwatch(&["run", "--config", &config.display().to_string()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(
            "`webhooks[retrain].secret_env`: environment variable `DW_NOT_SET_ANYWHERE` is not set"
        ),
        "{err}"
    );
    // A rule file naming a webhook the config does not have.
    std::fs::write(
        lake.path("rules/flights.yaml"),
        "dataset: flights\nchecks:\n  - row_count: { min: 2000 }\nwebhooks: [retrain, retrian]\n",
    )
    .unwrap();
    let config = config_file(
        &lake,
        "[[webhooks]]\nname = \"retrain\"\nurl = \"http://127.0.0.1:9/hook\"\n[webhooks.trigger]\ndataset_drift = true\n",
    );
    let (code, _, err) = driftwatch(&["run", "--config", &config.display().to_string()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(
            "flights.yaml:4:21: webhook `retrian` is not configured (configured: retrain)"
        ),
        "{err}"
    );
}

/// Makes a private CA and a certificate for `localhost` / 127.0.0.1 signed by
/// it, with Debian's `openssl` (installed by `.ci/run`).
fn private_ca(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (Debian's package) runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=driftwatch test CA",
    ]);
    run(&ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    run(&csr);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

#[test]
fn https_receivers_are_trusted_through_the_system_store_or_a_ca_file_only() {
    let lake = Lake::new(ROWS_RULES);
    let (ca, cert, key) = private_ca(lake.dir.path());
    let receiver = Receiver::start_tls("127.0.0.1:0", &cert, &key);
    let url = format!("https://localhost:{}/hook", receiver.addr.port());
    let webhooks = format!(
        "{}ca_file = \"{}\"\n[webhooks.trigger]\nchecks = [\"row_count\"]\n\n\
         [[webhooks]]\nname = \"untrusting\"\nurl = \"{url}\"\nretry_backoff = \"50ms\"\n\
         [webhooks.trigger]\nchecks = [\"row_count\"]\n",
        generic_webhook(&url, ""),
        ca.display(),
    );
    let agent = start_agent(&lake, &webhooks);
    lake.land("small.parquet", &lake.bytes(1000, 98, 0));
    let requests = receiver.wait_requests(1);
    assert!(requests[0].signed());
    assert_eq!(requests[0].json()["webhook"], "retrain");
    // The webhook without the CA file refuses the private certificate, and keeps trying.
    let refused = wait_for("the untrusting webhook to fail twice", || {
        outbox(&agent)["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["webhook"] == "untrusting" && d["attempts"].as_u64() >= Some(2))
            .cloned()
    });
    assert_eq!(refused["state"], "pending");
    let error = refused["last_error"].as_str().unwrap();
    assert!(error.contains("certificate"), "{error}");
    wait_delivery(&agent, "delivered");
    assert!(
        receiver
            .requests()
            .iter()
            .all(|r| r.json()["webhook"] == "retrain")
    );
}

/// A receiver that answers every request with `status`, `headers` and a body
/// of `body_bytes` generated as it is sent, counting the bytes it produced.
struct HugeAnswer {
    addr: SocketAddr,
    produced: Arc<std::sync::atomic::AtomicU64>,
    requests: Arc<std::sync::atomic::AtomicU64>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl HugeAnswer {
    fn start(
        status: u16,
        headers: &'static [(&'static str, &'static str)],
        body_bytes: u64,
    ) -> Self {
        use futures::StreamExt as _;
        use std::sync::atomic::{AtomicU64, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let produced = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (p, r) = (produced.clone(), requests.clone());
        let app = axum::Router::new().fallback(move || {
            let produced = p.clone();
            r.fetch_add(1, Ordering::SeqCst);
            async move {
                const CHUNK: usize = 64 << 10;
                let chunks = body_bytes.div_ceil(CHUNK as u64);
                let stream = futures::stream::iter(0..chunks).map(move |_| {
                    produced.fetch_add(CHUNK as u64, Ordering::SeqCst);
                    Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; CHUNK]))
                });
                let mut response = (
                    axum::http::StatusCode::from_u16(status).unwrap(),
                    axum::body::Body::from_stream(stream),
                )
                    .into_response();
                for (k, v) in headers {
                    response.headers_mut().insert(*k, v.parse().unwrap());
                }
                response
            }
        });
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        HugeAnswer {
            addr,
            produced,
            requests,
            _stop: stop,
        }
    }
}

#[test]
fn issue_15_a_receivers_huge_error_body_is_read_only_as_far_as_it_is_kept() {
    const BODY: u64 = 400 << 20;
    let receiver = HugeAnswer::start(400, &[], BODY);
    let lake = Lake::new(ROWS_RULES);
    let webhooks = generic_webhook(
        &format!("http://{}/hooks/retrain", receiver.addr),
        "[webhooks.trigger]\nchecks = [\"row_count\"]",
    );
    let agent = start_agent(&lake, &webhooks);
    lake.land("small.parquet", &lake.bytes(1000, 91, 0));
    let dead = wait_delivery(&agent, "dead");
    assert_eq!(dead["last_status"], 400);
    let kept = dead["last_response"].as_str().unwrap();
    assert_eq!(kept, "x".repeat(2048));
    let produced = receiver.produced.load(std::sync::atomic::Ordering::SeqCst);
    eprintln!("the receiver produced {produced} bytes of a {BODY}-byte body");
    // What sat in socket buffers when the agent hung up, not 400 MB.
    assert!(
        produced < 32 << 20,
        "the receiver produced {produced} bytes"
    );
    assert_eq!(
        receiver.requests.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

#[test]
fn issue_15_a_huge_retry_after_is_clamped_not_wrapped_to_an_immediate_retry() {
    let receiver = HugeAnswer::start(503, &[("retry-after", "18446744073709551615")], 2);
    let lake = Lake::new(ROWS_RULES);
    let webhooks = generic_webhook(
        &format!("http://{}/hooks/retrain", receiver.addr),
        "[webhooks.trigger]\nchecks = [\"row_count\"]",
    );
    let agent = start_agent(&lake, &webhooks);
    lake.land("small.parquet", &lake.bytes(1000, 91, 0));
    let pending = wait_for("a failed attempt", || {
        outbox(&agent)["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["attempts"] == 1 && d["state"] == "pending")
            .cloned()
    });
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let next = pending["next_attempt_at_ms"].as_i64().unwrap();
    // One hour (the clamp; max_age is 24 h), give or take the test's time.
    let wait = next - now_ms;
    assert!(
        (3_500_000..=3_600_000).contains(&wait),
        "next attempt in {wait} ms"
    );
    // A wrapped delay would have retried at once, again and again.
    assert_eq!(
        receiver.requests.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}
