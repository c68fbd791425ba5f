//! OpenTelemetry and Prometheus end to end: the real agent binary exporting
//! to real in-process OTLP receivers (gRPC with tonic, HTTP/protobuf with
//! axum, both from the official protobuf definitions), through an outage,
//! and scraped by a real Prometheus server.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::Value;

use crate::agent::{Agent, Lake, http_get, wait_for, wait_results};
use driftwatch::sinks::telemetry::names;

#[derive(Default)]
struct Got {
    metrics: Vec<ExportMetricsServiceRequest>,
    traces: Vec<ExportTraceServiceRequest>,
    logs: Vec<ExportLogsServiceRequest>,
}

#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Got>>);

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn export(
        &self,
        req: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().metrics.push(req.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().traces.push(req.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Sink {
    async fn export(
        &self,
        req: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().logs.push(req.into_inner());
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Transport {
    Grpc,
    Http,
}

/// An OTLP receiver on its own runtime, so stopping it really closes every
/// connection (an outage), and it can come back on the same port.
pub(crate) struct Receiver {
    runtime: Option<tokio::runtime::Runtime>,
    addr: SocketAddr,
    sink: Sink,
    transport: Transport,
}

impl Receiver {
    pub(crate) fn start(transport: Transport, port: u16) -> Receiver {
        Self::start_with(transport, port, Sink::default())
    }

    fn start_with(transport: Transport, port: u16, sink: Sink) -> Receiver {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let s = sink.clone();
        match transport {
            Transport::Grpc => {
                runtime.spawn(async move {
                    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                    let _ = tonic::transport::Server::builder()
                        .add_service(MetricsServiceServer::new(s.clone()))
                        .add_service(TraceServiceServer::new(s.clone()))
                        .add_service(LogsServiceServer::new(s))
                        .serve_with_incoming(incoming)
                        .await;
                });
            }
            Transport::Http => {
                use axum::routing::post;
                let router = axum::Router::new()
                    .route("/v1/metrics", post(http_metrics))
                    .route("/v1/traces", post(http_traces))
                    .route("/v1/logs", post(http_logs))
                    .with_state(s);
                runtime.spawn(async move {
                    let _ = axum::serve(listener, router).await;
                });
            }
        }
        Receiver {
            runtime: Some(runtime),
            addr,
            sink,
            transport,
        }
    }

    /// Stops the receiver (connections included).
    fn stop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }

    /// Starts it again on the same port, keeping what it received.
    fn restart(&mut self) {
        self.stop();
        let again = Self::start_with(self.transport, self.addr.port(), self.sink.clone());
        *self = again;
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn spans(&self) -> Vec<Span> {
        let got = self.sink.0.lock().unwrap();
        got.traces
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| s.spans.clone())
            .collect()
    }

    fn logs(&self) -> Vec<LogRecord> {
        let got = self.sink.0.lock().unwrap();
        got.logs
            .iter()
            .flat_map(|r| &r.resource_logs)
            .flat_map(|r| &r.scope_logs)
            .flat_map(|s| s.log_records.clone())
            .collect()
    }

    /// The latest value of each (metric name, attributes) point.
    pub(crate) fn metric_points(&self) -> BTreeMap<(String, BTreeMap<String, String>), f64> {
        let got = self.sink.0.lock().unwrap();
        let mut out = BTreeMap::new();
        for metric in got
            .metrics
            .iter()
            .flat_map(|r| &r.resource_metrics)
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
        {
            let points = match &metric.data {
                Some(metric::Data::Gauge(g)) => g.data_points.clone(),
                Some(metric::Data::Sum(s)) => s.data_points.clone(),
                Some(metric::Data::Histogram(h)) => {
                    for p in &h.data_points {
                        out.insert((metric.name.clone(), attrs(&p.attributes)), p.count as f64);
                    }
                    continue;
                }
                _ => continue,
            };
            for p in points {
                let v = match p.value {
                    Some(number_data_point::Value::AsDouble(d)) => d,
                    Some(number_data_point::Value::AsInt(i)) => i as f64,
                    None => continue,
                };
                out.insert((metric.name.clone(), attrs(&p.attributes)), v);
            }
        }
        out
    }

    fn resource(&self) -> BTreeMap<String, String> {
        let got = self.sink.0.lock().unwrap();
        got.metrics
            .iter()
            .flat_map(|r| &r.resource_metrics)
            .filter_map(|r| r.resource.as_ref())
            .map(|r| attrs(&r.attributes))
            .next()
            .unwrap_or_default()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn http_metrics(
    axum::extract::State(s): axum::extract::State<Sink>,
    body: axum::body::Bytes,
) -> Result<Vec<u8>, axum::http::StatusCode> {
    let req = ExportMetricsServiceRequest::decode(body)
        .map_err(|_| axum::http::StatusCode::BAD_REQUEST)?;
    s.0.lock().unwrap().metrics.push(req);
    Ok(ExportMetricsServiceResponse::default().encode_to_vec())
}

async fn http_traces(
    axum::extract::State(s): axum::extract::State<Sink>,
    body: axum::body::Bytes,
) -> Result<Vec<u8>, axum::http::StatusCode> {
    let req =
        ExportTraceServiceRequest::decode(body).map_err(|_| axum::http::StatusCode::BAD_REQUEST)?;
    s.0.lock().unwrap().traces.push(req);
    Ok(ExportTraceServiceResponse::default().encode_to_vec())
}

async fn http_logs(
    axum::extract::State(s): axum::extract::State<Sink>,
    body: axum::body::Bytes,
) -> Result<Vec<u8>, axum::http::StatusCode> {
    let req =
        ExportLogsServiceRequest::decode(body).map_err(|_| axum::http::StatusCode::BAD_REQUEST)?;
    s.0.lock().unwrap().logs.push(req);
    Ok(ExportLogsServiceResponse::default().encode_to_vec())
}

fn text(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter().map(|kv| (kv.key.clone(), text(kv))).collect()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Two checks (one fails), drift of `dep_delay` (ks, so a p-value) and
/// `carrier` against the previous batch.
const RULES: &str = "dataset: flights\nchecks:\n  - not_null: carrier\n  \
    - accepted_values: { column: origin, values: [EWR, JFK] }\n    severity: warn\n\
    drift:\n  reference: { rolling: { batches: 1 } }\n  columns: [dep_delay, carrier]\n  \
    overrides:\n    dep_delay: { test: ks }\n";

/// Starts the agent with a config file exporting to `endpoint`.
pub(crate) fn agent_exporting(lake: &Lake, endpoint: &str, protocol: &str) -> Agent {
    std::fs::write(
        lake.path("driftwatch.toml"),
        format!(
            "watch = [\"lake\"]\nrules = \"rules\"\nstate = \"state\"\n[lake]\nsettle = \"300ms\"\n\
             [http]\nlisten = \"127.0.0.1:0\"\n[telemetry]\notlp_endpoint = \"{endpoint}\"\n\
             otlp_protocol = \"{protocol}\"\notlp_timeout = \"2s\"\nservice_name = \"dw-test\"\n\
             resource_attributes = {{ \"deployment.environment\" = \"test\" }}\n"
        ),
    )
    .unwrap();
    let args = vec![
        "run".to_string(),
        "--config".to_string(),
        lake.path("driftwatch.toml").display().to_string(),
    ];
    Agent::spawn(lake, &args, &lake.state())
}

fn batch_spans(receiver: &Receiver) -> Vec<Span> {
    receiver
        .spans()
        .into_iter()
        .filter(|s| s.name == "driftwatch.batch")
        .collect()
}

fn seq_of(span: &Span) -> String {
    attrs(&span.attributes)
        .get("seq")
        .cloned()
        .unwrap_or_default()
}

/// Lands a clean and a shifted batch and checks every signal the receiver got.
fn exports_everything(transport: Transport) {
    let receiver = Receiver::start(transport, 0);
    let lake = Lake::new(RULES);
    let protocol = match transport {
        Transport::Grpc => "grpc",
        Transport::Http => "http/protobuf",
    };
    let agent = agent_exporting(&lake, &receiver.endpoint(), protocol);
    let first = lake.land("b1.parquet", &lake.bytes(3000, 41, 0));
    wait_results(&lake, &agent, 1);
    let second = lake.land("b2.parquet", &lake.bytes(3000, 42, 45));
    let results = wait_results(&lake, &agent, 2);
    assert_eq!(results[1]["reports"][0]["drift"]["dataset_drift"], true);

    // Traces: one batch span per batch, with its four children.
    let spans = wait_for("two batch span trees", || {
        let all = receiver.spans();
        (all.len() >= 10).then_some(all)
    });
    let batches: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "driftwatch.batch")
        .collect();
    assert_eq!(batches.len(), 2);
    for (batch, source) in batches.iter().zip([&first, &second]) {
        let a = attrs(&batch.attributes);
        assert_eq!(a["dataset"], "flights");
        assert_eq!(a["source"], source.display().to_string());
        assert_eq!(a["rows"], "3000");
        assert!(batch.parent_span_id.is_empty());
        let mut children: Vec<&str> = spans
            .iter()
            .filter(|s| s.parent_span_id == batch.span_id)
            .map(|s| s.name.as_str())
            .collect();
        children.sort_unstable();
        assert_eq!(children, ["drift", "evaluate", "read", "sinks"]);
        assert!(batch.end_time_unix_nano >= batch.start_time_unix_nano);
    }
    let outcome = |seq: &str| {
        batches
            .iter()
            .find(|b| seq_of(b) == seq)
            .map(|b| attrs(&b.attributes)["outcome"].clone())
    };
    assert_eq!(outcome("1").as_deref(), Some("passed"));
    assert_eq!(outcome("2").as_deref(), Some("failed"));

    // Logs: the failing warn check on both batches, the drifted column on the second,
    // each linked to its batch's span.
    let logs = wait_for("the log records", || {
        let logs = receiver.logs();
        (logs.len() >= 3).then_some(logs)
    });
    let span_of = |seq: &str| {
        batches
            .iter()
            .find(|b| seq_of(b) == seq)
            .unwrap()
            .span_id
            .clone()
    };
    let failed: Vec<&LogRecord> = logs
        .iter()
        .filter(|l| l.event_name == "driftwatch.check.failed")
        .collect();
    assert_eq!(failed.len(), 2);
    for l in &failed {
        let a = attrs(&l.attributes);
        assert_eq!(a["check"], "accepted_values_origin");
        assert_eq!(a["severity"], "warn");
        assert_eq!(l.severity_text, "WARN");
    }
    let drifted: Vec<&LogRecord> = logs
        .iter()
        .filter(|l| l.event_name == "driftwatch.column.drifted")
        .collect();
    assert_eq!(drifted.len(), 1, "only dep_delay drifts");
    assert_eq!(attrs(&drifted[0].attributes)["column"], "dep_delay");
    assert_eq!(attrs(&drifted[0].attributes)["test"], "ks");
    assert_eq!(drifted[0].span_id, span_of("2"));
    assert!(failed.iter().any(|l| l.span_id == span_of("1")));

    // Metrics, with their values after the second batch.
    let points = wait_for("metrics after the second batch", || {
        let p = receiver.metric_points();
        let key = (
            names::ROWS.name.to_string(),
            labels(&[("dataset", "flights")]),
        );
        (p.get(&key) == Some(&6000.0)).then_some(p)
    });
    let get = |name: &str, l: &[(&str, &str)]| points.get(&(name.to_string(), labels(l))).copied();
    let d = ("dataset", "flights");
    assert_eq!(
        get(names::BATCHES.name, &[d, ("outcome", "passed")]),
        Some(1.0)
    );
    assert_eq!(
        get(names::BATCHES.name, &[d, ("outcome", "failed")]),
        Some(1.0)
    );
    assert_eq!(get(names::EVALUATION_DURATION.name, &[d]), Some(2.0));
    let check = [d, ("check", "accepted_values_origin"), ("severity", "warn")];
    assert_eq!(get(names::CHECK_STATUS.name, &check), Some(1.0));
    let fraction = get(names::CHECK_FAILING_FRACTION.name, &check).unwrap();
    let failing = get(names::CHECK_FAILING_ROWS.name, &check).unwrap();
    assert_eq!(fraction, failing / 3000.0);
    let ok = [d, ("check", "not_null_carrier"), ("severity", "error")];
    assert_eq!(get(names::CHECK_STATUS.name, &ok), Some(0.0));
    let dep = [d, ("column", "dep_delay"), ("test", "ks")];
    assert_eq!(get(names::DRIFT_DRIFTED.name, &dep), Some(1.0));
    let p = get(names::DRIFT_P_VALUE.name, &dep).unwrap();
    assert!(p < 0.05, "{p}");
    let report_p = results[1]["reports"][0]["drift"]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["column"] == "dep_delay")
        .unwrap()["p_value"]
        .as_f64()
        .unwrap();
    assert_eq!(p, report_p, "the metric is the report's value");
    assert_eq!(get(names::DATASET_DRIFT_SHARE.name, &[d]), Some(0.5));
    assert_eq!(get(names::DATASET_DRIFTED.name, &[d]), Some(1.0));
    assert!(get(names::LAST_BATCH_TIME.name, &[d]).unwrap() > 1.7e9);
    assert_eq!(get(names::QUEUE_DEPTH.name, &[]), Some(0.0));

    let resource = receiver.resource();
    assert_eq!(resource["service.name"], "dw-test");
    assert_eq!(resource["service.version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(resource["deployment.environment"], "test");
    assert!(!resource["service.instance.id"].is_empty());
    assert!(!resource["host.name"].is_empty());
}

#[test]
fn otlp_grpc_receives_metrics_spans_and_logs_of_each_evaluation() {
    exports_everything(Transport::Grpc);
}

#[test]
fn otlp_http_protobuf_receives_metrics_spans_and_logs_of_each_evaluation() {
    exports_everything(Transport::Http);
}

#[test]
fn a_collector_outage_does_not_stop_evaluation_and_export_resumes() {
    let mut receiver = Receiver::start(Transport::Grpc, 0);
    let lake = Lake::new(crate::agent::RULES);
    let agent = agent_exporting(&lake, &receiver.endpoint(), "grpc");
    lake.land("b1.parquet", &lake.bytes(1000, 51, 0));
    wait_for("the first batch span", || {
        batch_spans(&receiver)
            .iter()
            .any(|s| seq_of(s) == "1")
            .then_some(())
    });
    receiver.stop();
    for (i, seed) in [52u64, 53, 54].iter().enumerate() {
        lake.land(&format!("down-{i}.parquet"), &lake.bytes(1000, *seed, 0));
    }
    // Evaluation goes on while the collector is down.
    let r = wait_results(&lake, &agent, 4);
    assert_eq!(r.len(), 4);
    assert_eq!(agent.get("/healthz").0, 200);
    wait_for("the export failure to be logged", || {
        agent
            .log_text()
            .contains("OpenTelemetry export failed")
            .then_some(())
    });
    receiver.restart();
    lake.land("after.parquet", &lake.bytes(1000, 55, 0));
    wait_results(&lake, &agent, 5);
    wait_for("signals of the batch after the outage", || {
        batch_spans(&receiver)
            .iter()
            .any(|s| seq_of(s) == "5")
            .then_some(())
    });
    wait_for("the resume to be logged", || {
        agent
            .log_text()
            .contains("OpenTelemetry export resumed")
            .then_some(())
    });
    // Rate-limited: one failure warning for the whole outage (well under a minute).
    let warnings = agent
        .log_text()
        .matches("OpenTelemetry export failed")
        .count();
    assert_eq!(warnings, 1, "{}", agent.log_text());
    assert!(
        !agent.log_text().contains("opentelemetry_sdk"),
        "SDK-internal log lines are filtered"
    );
}

#[test]
fn the_standard_otel_environment_variables_configure_export() {
    let receiver = Receiver::start(Transport::Http, 0);
    let lake = Lake::new(crate::agent::RULES);
    let endpoint = receiver.endpoint();
    let args: Vec<String> = [
        "run",
        "--watch",
        &lake.lake().display().to_string(),
        "--rules",
        &lake.path("rules").display().to_string(),
        "--state",
        &lake.state().display().to_string(),
        "--listen",
        "127.0.0.1:0",
        "--settle",
        "300ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let agent = Agent::spawn_with_env(
        &lake,
        &args,
        &lake.state(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_SERVICE_NAME", "quality-sidecar"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "team=ml,deployment.environment=staging",
            ),
        ],
    );
    lake.land("one.parquet", &lake.bytes(1000, 71, 0));
    wait_results(&lake, &agent, 1);
    let resource = wait_for("metrics with the resource", || {
        let r = receiver.resource();
        (!r.is_empty()).then_some(r)
    });
    assert_eq!(resource["service.name"], "quality-sidecar");
    assert_eq!(resource["team"], "ml");
    assert_eq!(resource["deployment.environment"], "staging");
    wait_for("the batch span", || {
        (!batch_spans(&receiver).is_empty()).then_some(())
    });
}

/// A free loopback port (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Prometheus(std::process::Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn prometheus_scrapes_the_agent_and_answers_queries_for_the_drift_metric() {
    let binary = std::path::Path::new("/usr/bin/prometheus");
    assert!(
        binary.exists(),
        "this test needs Debian's `prometheus` package (installed by .ci/run)"
    );
    let lake = Lake::new(RULES);
    let agent = crate::agent::Agent::start(&lake, &[]);
    lake.land("b1.parquet", &lake.bytes(3000, 61, 0));
    wait_results(&lake, &agent, 1);
    lake.land("b2.parquet", &lake.bytes(3000, 62, 45));
    wait_results(&lake, &agent, 2);
    // /metrics itself: every instrument, by the documented Prometheus names.
    // The results-log line is written before the batch's metrics are
    // recorded: wait for the second batch to be counted.
    let body = crate::agent::wait_for("the second batch's metrics", || {
        let (code, body) = agent.get("/metrics");
        let counted: f64 = body
            .lines()
            .filter(|l| l.starts_with("driftwatch_batches_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        (code == 200 && counted >= 2.0).then_some(body)
    });
    for instrument in names::INSTRUMENTS {
        if instrument.name == names::FILES_ERRORED.name
            || instrument.name == names::BATCH_RETRIES.name
            || instrument.name.starts_with("driftwatch.webhook.")
            || instrument.name.starts_with("driftwatch.stream.")
            || instrument.name.starts_with("driftwatch.anomaly.")
            || instrument.name == names::SCHEMA_CHANGES.name
            || instrument.name == names::VOLUME_ANOMALIES.name
            || instrument.name == names::LATE_BATCHES.name
            || instrument.name == names::ARRIVAL_INTERVAL.name
            || instrument.name == names::OVERDUE.name
        {
            // No batch errored, was retried, changed schema or landed late
            // here, two batches teach no arrival interval, no webhook, stream or
            // anomaly check is configured (tests/it/webhooks.rs,
            // tests/it/streams.rs, tests/it/hardening.rs and
            // tests/it/anomaly.rs read those).
            continue;
        }
        assert!(
            body.contains(&format!("{}{{", instrument.prometheus_name()))
                || body.contains(&format!("{} ", instrument.prometheus_name())),
            "{} missing from /metrics:\n{body}",
            instrument.prometheus_name()
        );
    }

    let port = free_port();
    let dir = lake.path("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\nscrape_configs:\n  \
             - job_name: driftwatch\n    scrape_interval: 1s\n    scrape_timeout: 1s\n    \
             static_configs: [ {{ targets: [\"{}\"] }} ]\n",
            agent.addr
        ),
    )
    .unwrap();
    let _prometheus = Prometheus(
        std::process::Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("start prometheus"),
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let get = |path: &str| http_get(addr, path);
    let query = format!(
        "/api/v1/query?query={}",
        names::DATASET_DRIFTED.prometheus_name()
    );
    let result = wait_for("Prometheus to have scraped the drift flag", || {
        let (code, body) = get(&query);
        if code != 200 {
            return None;
        }
        let v: Value = serde_json::from_str(&body).ok()?;
        let first = v["data"]["result"].as_array()?.first()?.clone();
        Some(first)
    });
    assert_eq!(result["metric"]["dataset"], "flights");
    assert_eq!(result["metric"]["job"], "driftwatch");
    assert_eq!(result["value"][1], "1");
}

#[test]
fn webhook_attempts_are_exported_as_client_spans() {
    let collector = Receiver::start(Transport::Grpc, 0);
    let hook = crate::webhooks::Receiver::start("127.0.0.1:0");
    hook.script("/hook", vec![(500, vec![], "boom")]);
    let lake = Lake::new("dataset: flights\nchecks:\n  - row_count: { min: 2000 }\n");
    std::fs::write(
        lake.path("driftwatch.toml"),
        format!(
            "watch = [\"lake\"]\nrules = \"rules\"\nstate = \"state\"\n[lake]\nsettle = \"300ms\"\n\
             [http]\nlisten = \"127.0.0.1:0\"\n[telemetry]\notlp_endpoint = \"{}\"\n\
             [[webhooks]]\nname = \"retrain\"\nurl = \"{}\"\nretry_backoff = \"50ms\"\n\
             [webhooks.trigger]\nchecks = [\"row_count\"]\n",
            collector.endpoint(),
            hook.url("/hook"),
        ),
    )
    .unwrap();
    let args = vec![
        "run".to_string(),
        "--config".to_string(),
        lake.path("driftwatch.toml").display().to_string(),
    ];
    let _agent = Agent::spawn(&lake, &args, &lake.state());
    lake.land("small.parquet", &lake.bytes(1000, 99, 0));
    let requests = hook.wait_requests(2);
    let spans = wait_for("two webhook attempt spans", || {
        let mut s: Vec<Span> = collector
            .spans()
            .into_iter()
            .filter(|s| s.name == "driftwatch.webhook.attempt")
            .collect();
        s.sort_by_key(|s| s.start_time_unix_nano);
        (s.len() >= 2).then_some(s)
    });
    assert_eq!(spans.len(), 2);
    let id = requests[0].header("Idempotency-Key").to_string();
    for (span, (attempt, outcome, status)) in spans
        .iter()
        .zip([("1", "retry", "500"), ("2", "delivered", "200")])
    {
        let a = attrs(&span.attributes);
        assert_eq!(
            span.kind,
            opentelemetry_proto::tonic::trace::v1::span::SpanKind::Client as i32
        );
        assert_eq!(a["webhook"], "retrain");
        assert_eq!(a["dataset"], "flights");
        assert_eq!(a["event_id"], id);
        assert_eq!(a["attempt"], attempt);
        assert_eq!(a["outcome"], outcome);
        assert_eq!(a["http.response.status_code"], status);
        assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
    }
    let failed = spans[0].status.as_ref().unwrap();
    assert_eq!(
        failed.code,
        opentelemetry_proto::tonic::trace::v1::status::StatusCode::Error as i32
    );
    assert_eq!(attrs(&spans[0].attributes)["error"], "HTTP 500");
}
