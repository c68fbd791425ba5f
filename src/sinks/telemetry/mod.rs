//! OpenTelemetry signals for every evaluated batch, and the Prometheus view
//! of the same instruments.
//!
//! One [`Telemetry`] per agent owns one `MeterProvider` with two readers —
//! the Prometheus registry behind `/metrics` (pull) and, when an OTLP endpoint
//! is configured, a periodic OTLP exporter (push) — plus a tracer and a logger
//! provider exporting over OTLP gRPC or HTTP/protobuf. For each batch,
//! [`Telemetry::record_batch`] records the metrics of [`names`], a span tree
//! (`driftwatch.batch` with `read`, `evaluate`, `drift`, `sinks` children,
//! timed after the fact from measured durations) and one log record per
//! failed check and per drifted column, linked to the batch span; then asks
//! the flusher to export at once, so an alert does not wait for the export
//! interval.
//!
//! Exports never block evaluation: flushing runs on a blocking thread, at
//! most one at a time, coalescing requests. When the collector is down,
//! metrics stay cumulative aggregates, spans and logs sit in bounded queues
//! (dropped when full), and export failures are logged at most once a minute
//! with a count, then "export resumed" once it works again.
//!
//! Webhook deliveries report here too: [`Telemetry::record_webhook_event`]
//! per trigger, [`Telemetry::record_webhook_attempt`] per HTTP attempt (a
//! `driftwatch.webhook.attempt` client span and the attempt metrics), and
//! [`Telemetry::set_webhook_backlog`] for the outbox gauges.

pub mod names;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::metrics::{
    Counter, Gauge, Histogram, MeterProvider as _, ObservableCounter, ObservableGauge,
};
use opentelemetry::trace::{
    Span as _, SpanKind, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{LogExporter, MetricExporter, Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::resource::EnvResourceDetector;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use tokio::sync::Notify;

use self::names::Instrument;
use crate::report::{BatchReport, CheckStatus};
use crate::rules::Severity as RuleSeverity;

/// Telemetry set-up errors (a bad endpoint or exporter configuration).
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// An exporter could not be built.
    #[error("cannot set up OpenTelemetry export to {endpoint}: {reason}")]
    Exporter {
        /// The endpoint.
        endpoint: String,
        /// One-line reason.
        reason: String,
    },
    /// The Prometheus reader could not be built.
    #[error("cannot set up the Prometheus registry: {reason}")]
    Prometheus {
        /// One-line reason.
        reason: String,
    },
}

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (default port 4317).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (default port 4318).
    HttpProtobuf,
}

impl OtlpProtocol {
    /// Parses `grpc` or `http/protobuf` (the `OTEL_EXPORTER_OTLP_PROTOCOL` values).
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "grpc" => Ok(Self::Grpc),
            "http/protobuf" => Ok(Self::HttpProtobuf),
            other => Err(format!(
                "`{other}`: OTLP protocol must be `grpc` or `http/protobuf`"
            )),
        }
    }
}

/// Where OTLP goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    /// Base URL, e.g. `http://127.0.0.1:4317`; HTTP adds `/v1/{metrics,traces,logs}`.
    pub endpoint: String,
    /// Transport.
    pub protocol: OtlpProtocol,
    /// Export deadline (retries included).
    pub timeout: Duration,
}

/// Resolved telemetry settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetrySettings {
    /// OTLP export; None: Prometheus `/metrics` only.
    pub otlp: Option<OtlpSettings>,
    /// `service.name` (env `OTEL_SERVICE_NAME` wins).
    pub service_name: String,
    /// Extra resource attributes from the config file (env `OTEL_RESOURCE_ATTRIBUTES` wins).
    pub resource_attributes: Vec<(String, String)>,
    /// Periodic metric export interval (the per-batch flush makes export prompt anyway).
    pub export_interval: Duration,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            otlp: None,
            service_name: "driftwatch".to_string(),
            resource_attributes: Vec::new(),
            export_interval: Duration::from_secs(60),
        }
    }
}

/// How long each stage of a batch took, for the span tree.
#[derive(Debug, Clone, Copy)]
pub struct BatchTimings {
    /// When work on the batch started.
    pub started: SystemTime,
    /// Opening the batch and planning (footer, schema).
    pub read: Duration,
    /// The scan: checks and profiles.
    pub evaluate: Duration,
    /// Drift tests.
    pub drift: Duration,
    /// Recording: store, results log, quarantine.
    pub sinks: Duration,
}

/// What identifies a batch on its span and logs (not on metrics).
#[derive(Debug, Clone)]
pub struct BatchIdentity<'a> {
    /// The batch's path.
    pub source: &'a str,
    /// Its position in the results log.
    pub seq: u64,
    /// Hive partition values.
    pub partitions: &'a std::collections::BTreeMap<String, String>,
}

struct Instruments {
    batches: Counter<u64>,
    rows: Counter<u64>,
    duration: Histogram<f64>,
    errored: Counter<u64>,
    check_status: Gauge<u64>,
    check_failing_rows: Gauge<u64>,
    check_failing_fraction: Gauge<f64>,
    schema_changes: Counter<u64>,
    volume_anomalies: Counter<u64>,
    late_batches: Counter<u64>,
    anomaly_observed: Gauge<f64>,
    anomaly_low: Gauge<f64>,
    anomaly_high: Gauge<f64>,
    drift_statistic: Gauge<f64>,
    drift_p_value: Gauge<f64>,
    drift_drifted: Gauge<u64>,
    dataset_drift_share: Gauge<f64>,
    dataset_drifted: Gauge<u64>,
    last_batch_time: Gauge<f64>,
    _queue_depth: ObservableGauge<u64>,
    batch_retries: Counter<u64>,
    degraded: Gauge<u64>,
    webhook_events: Counter<u64>,
    webhook_attempts: Counter<u64>,
    webhook_attempt_duration: Histogram<f64>,
    webhook_deliveries: Gauge<u64>,
}

/// One webhook delivery attempt, for telemetry.
#[derive(Debug, Clone)]
pub struct WebhookAttempt<'a> {
    /// The webhook.
    pub webhook: &'a str,
    /// The dataset.
    pub dataset: &'a str,
    /// The event id.
    pub event_id: &'a str,
    /// 1-based attempt number.
    pub attempt: u32,
    /// `delivered`, `retry` or `dead`.
    pub outcome: &'static str,
    /// HTTP status, when there was an answer.
    pub status: Option<u16>,
    /// Error, when it failed.
    pub error: Option<&'a str>,
    /// When it started.
    pub started: SystemTime,
    /// How long it took.
    pub duration: Duration,
}

/// The agent's OpenTelemetry providers and instruments.
pub struct Telemetry {
    meter_provider: SdkMeterProvider,
    tracer_provider: SdkTracerProvider,
    logger_provider: SdkLoggerProvider,
    registry: prometheus::Registry,
    instruments: Instruments,
    flush: Arc<Notify>,
    exporting: bool,
    /// Stream instruments, read from the sources' counters at collection.
    streams: std::sync::Mutex<Vec<StreamInstruments>>,
    /// Each dataset's recent landing times, read by the lateness gauges
    /// when metrics are collected (so "overdue" grows without a batch).
    arrivals: Arc<crate::anomaly::arrivals::Book>,
    _lateness: [ObservableGauge<f64>; 2],
}

/// The stream instruments (held so their callbacks stay registered).
struct StreamInstruments {
    _counters: Vec<ObservableCounter<u64>>,
    _gauges: Vec<ObservableGauge<u64>>,
    _lag: ObservableGauge<i64>,
}

/// A stream source whose counters telemetry observes.
#[derive(Clone)]
pub struct ObservedStream {
    /// `http`, `kafka`, `ndjson_files`.
    pub kind: &'static str,
    /// The dataset.
    pub dataset: String,
    /// Its counters.
    pub stats: Arc<crate::sources::stream::StreamStats>,
}

fn resource(settings: &TelemetrySettings, instance: &str, host: &str) -> Resource {
    // Precedence per the OpenTelemetry spec: OTEL_SERVICE_NAME, then a
    // service.name in OTEL_RESOURCE_ATTRIBUTES, then the config file.
    let from_env = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| {
            std::env::var("OTEL_RESOURCE_ATTRIBUTES")
                .ok()
                .and_then(|s| {
                    s.split(',')
                        .filter_map(|kv| kv.split_once('='))
                        .find(|(k, _)| k.trim() == "service.name")
                        .map(|(_, v)| v.trim().to_string())
                })
        });
    let service_name = from_env.unwrap_or_else(|| settings.service_name.clone());
    Resource::builder_empty()
        .with_attributes(
            settings
                .resource_attributes
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .with_detector(Box::new(EnvResourceDetector::new()))
        .with_service_name(service_name)
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", instance.to_string()),
            KeyValue::new("host.name", host.to_string()),
        ])
        .build()
}

fn signal_url(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim_end_matches('/'))
}

fn exporter_error(endpoint: &str, e: impl std::fmt::Display) -> TelemetryError {
    TelemetryError::Exporter {
        endpoint: endpoint.to_string(),
        reason: e.to_string(),
    }
}

impl Telemetry {
    /// Builds the providers. Must run inside a tokio runtime (the gRPC
    /// exporter connects lazily on it). `queue_depth` is read when metrics are collected.
    pub fn new(
        settings: &TelemetrySettings,
        instance: &str,
        host: &str,
        queue_depth: Arc<dyn Fn() -> u64 + Send + Sync>,
    ) -> Result<Self, TelemetryError> {
        // The OTLP/HTTP exporter builds a rustls-backed reqwest client.
        crate::tls::ensure_crypto_provider();
        let resource = resource(settings, instance, host);
        let registry = prometheus::Registry::new();
        let prometheus_reader = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .scope_info_enabled(false)
            .build()
            .map_err(|e| TelemetryError::Prometheus {
                reason: e.to_string(),
            })?;
        let mut meters = SdkMeterProvider::builder()
            .with_resource(resource.clone())
            .with_reader(prometheus_reader);
        let mut tracers = SdkTracerProvider::builder().with_resource(resource.clone());
        let mut loggers = SdkLoggerProvider::builder().with_resource(resource);
        if let Some(otlp) = &settings.otlp {
            let e = &otlp.endpoint;
            // One exporter per signal; HTTP endpoints are used verbatim by the
            // SDK, so the per-signal path is added here.
            macro_rules! exporter {
                ($kind:ident, $path:literal) => {
                    match otlp.protocol {
                        OtlpProtocol::Grpc => $kind::builder()
                            .with_tonic()
                            .with_endpoint(e)
                            .with_timeout(otlp.timeout)
                            .build(),
                        OtlpProtocol::HttpProtobuf => $kind::builder()
                            .with_http()
                            .with_protocol(Protocol::HttpBinary)
                            .with_endpoint(signal_url(e, $path))
                            .with_timeout(otlp.timeout)
                            .build(),
                    }
                    .map_err(|x| exporter_error(e, x))?
                };
            }
            let metrics = exporter!(MetricExporter, "/v1/metrics");
            let spans = exporter!(SpanExporter, "/v1/traces");
            let logs = exporter!(LogExporter, "/v1/logs");
            meters = meters.with_reader(
                PeriodicReader::builder(metrics)
                    .with_interval(settings.export_interval)
                    .build(),
            );
            tracers = tracers.with_span_processor(
                BatchSpanProcessor::builder(spans)
                    .with_batch_config(
                        BatchConfigBuilder::default()
                            .with_max_queue_size(2048)
                            .build(),
                    )
                    .build(),
            );
            loggers = loggers.with_batch_exporter(logs);
        }
        let meter_provider = meters.build();
        let meter = meter_provider.meter("driftwatch");
        let describe = |i: &Instrument| (i.name, i.unit, i.description);
        let counter = |i: &Instrument| {
            let (n, u, d) = describe(i);
            meter
                .u64_counter(n)
                .with_unit(u)
                .with_description(d)
                .build()
        };
        let gauge_u = |i: &Instrument| {
            let (n, u, d) = describe(i);
            meter.u64_gauge(n).with_unit(u).with_description(d).build()
        };
        let gauge_f = |i: &Instrument| {
            let (n, u, d) = describe(i);
            meter.f64_gauge(n).with_unit(u).with_description(d).build()
        };
        let (n, u, d) = describe(&names::EVALUATION_DURATION);
        let duration = meter
            .f64_histogram(n)
            .with_unit(u)
            .with_description(d)
            .with_boundaries(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ])
            .build();
        let (n, u, d) = describe(&names::QUEUE_DEPTH);
        let queue_depth = meter
            .u64_observable_gauge(n)
            .with_unit(u)
            .with_description(d)
            .with_callback(move |observer| observer.observe(queue_depth(), &[]))
            .build();
        let instruments = Instruments {
            batches: counter(&names::BATCHES),
            rows: counter(&names::ROWS),
            duration,
            errored: counter(&names::FILES_ERRORED),
            check_status: gauge_u(&names::CHECK_STATUS),
            check_failing_rows: gauge_u(&names::CHECK_FAILING_ROWS),
            check_failing_fraction: gauge_f(&names::CHECK_FAILING_FRACTION),
            schema_changes: counter(&names::SCHEMA_CHANGES),
            volume_anomalies: counter(&names::VOLUME_ANOMALIES),
            late_batches: counter(&names::LATE_BATCHES),
            anomaly_observed: gauge_f(&names::ANOMALY_OBSERVED),
            anomaly_low: gauge_f(&names::ANOMALY_EXPECTED_LOW),
            anomaly_high: gauge_f(&names::ANOMALY_EXPECTED_HIGH),
            drift_statistic: gauge_f(&names::DRIFT_STATISTIC),
            drift_p_value: gauge_f(&names::DRIFT_P_VALUE),
            drift_drifted: gauge_u(&names::DRIFT_DRIFTED),
            dataset_drift_share: gauge_f(&names::DATASET_DRIFT_SHARE),
            dataset_drifted: gauge_u(&names::DATASET_DRIFTED),
            last_batch_time: gauge_f(&names::LAST_BATCH_TIME),
            _queue_depth: queue_depth,
            batch_retries: counter(&names::BATCH_RETRIES),
            degraded: {
                let g = gauge_u(&names::AGENT_DEGRADED);
                g.record(0, &[]);
                g
            },
            webhook_events: counter(&names::WEBHOOK_EVENTS),
            webhook_attempts: counter(&names::WEBHOOK_ATTEMPTS),
            webhook_attempt_duration: {
                let (n, u, d) = describe(&names::WEBHOOK_ATTEMPT_DURATION);
                meter
                    .f64_histogram(n)
                    .with_unit(u)
                    .with_description(d)
                    .with_boundaries(vec![
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    ])
                    .build()
            },
            webhook_deliveries: gauge_u(&names::WEBHOOK_DELIVERIES),
        };
        let arrivals: Arc<crate::anomaly::arrivals::Book> = Default::default();
        let lateness = |i: &Instrument, overdue: bool| {
            let arrivals = arrivals.clone();
            meter
                .f64_observable_gauge(i.name)
                .with_unit(i.unit)
                .with_description(i.description)
                .with_callback(move |o| {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs_f64())
                        .unwrap_or(0.0);
                    arrivals.each(|dataset, a| {
                        let value = if overdue {
                            a.overdue(now)
                        } else {
                            a.interval()
                        };
                        if let Some(v) = value {
                            o.observe(v, &[KeyValue::new(names::DATASET, dataset.to_string())]);
                        }
                    });
                })
                .build()
        };
        let _lateness = [
            lateness(&names::ARRIVAL_INTERVAL, false),
            lateness(&names::OVERDUE, true),
        ];
        Ok(Self {
            arrivals,
            _lateness,
            meter_provider,
            tracer_provider: tracers.build(),
            logger_provider: loggers.build(),
            registry,
            instruments,
            flush: Arc::new(Notify::new()),
            exporting: settings.otlp.is_some(),
            streams: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Exports the stream sources' counters (events, windows, pending
    /// events, throttled posts, Kafka lag), read whenever metrics are collected.
    pub fn observe_streams(&self, streams: Vec<ObservedStream>) {
        if streams.is_empty() {
            return;
        }
        let meter = self.meter_provider.meter("driftwatch");
        let streams = Arc::new(streams);
        let attrs = |s: &ObservedStream| {
            vec![
                KeyValue::new(names::SOURCE, s.kind),
                KeyValue::new(names::DATASET, s.dataset.clone()),
            ]
        };
        type Read = fn(&crate::sources::stream::StreamStats) -> u64;
        let counter =
            |i: &Instrument, series: Vec<(Option<(&'static str, &'static str)>, Read)>| {
                let streams = streams.clone();
                meter
                    .u64_observable_counter(i.name)
                    .with_unit(i.unit)
                    .with_description(i.description)
                    .with_callback(move |o| {
                        for s in streams.iter() {
                            for (extra, read) in &series {
                                let mut a = attrs(s);
                                if let Some((k, v)) = extra {
                                    a.push(KeyValue::new(*k, *v));
                                }
                                o.observe(read(&s.stats), &a);
                            }
                        }
                    })
                    .build()
            };
        let events = counter(
            &names::STREAM_EVENTS,
            vec![
                (Some((names::OUTCOME, "accepted")), |s| {
                    s.accepted.load(Ordering::Relaxed)
                }),
                (Some((names::OUTCOME, "rejected")), |s| {
                    s.rejected.load(Ordering::Relaxed)
                }),
            ],
        );
        let windows = counter(
            &names::STREAM_WINDOWS,
            vec![
                (Some((names::STATE, "closed")), |s| {
                    s.windows_closed.load(Ordering::Relaxed)
                }),
                (Some((names::STATE, "evaluated")), |s| {
                    s.windows_evaluated.load(Ordering::Relaxed)
                }),
            ],
        );
        let throttled = counter(
            &names::STREAM_THROTTLED,
            vec![(None, |s| s.throttled.load(Ordering::Relaxed))],
        );
        let pending = {
            let streams = streams.clone();
            let i = &names::STREAM_PENDING_EVENTS;
            meter
                .u64_observable_gauge(i.name)
                .with_unit(i.unit)
                .with_description(i.description)
                .with_callback(move |o| {
                    for s in streams.iter() {
                        o.observe(s.stats.pending_events.load(Ordering::Relaxed), &attrs(s));
                    }
                })
                .build()
        };
        let lag = {
            let streams = streams.clone();
            let i = &names::STREAM_LAG;
            meter
                .i64_observable_gauge(i.name)
                .with_unit(i.unit)
                .with_description(i.description)
                .with_callback(move |o| {
                    for s in streams.iter().filter(|s| s.kind == "kafka") {
                        let lag = s.stats.lag.load(Ordering::Relaxed);
                        if lag >= 0 {
                            o.observe(lag, &attrs(s));
                        }
                    }
                })
                .build()
        };
        if let Ok(mut held) = self.streams.lock() {
            held.push(StreamInstruments {
                _counters: vec![events, windows, throttled],
                _gauges: vec![pending],
                _lag: lag,
            });
        }
    }

    /// The Prometheus text exposition of every instrument (`/metrics`).
    pub fn render_prometheus(&self) -> String {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        if let Err(e) = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            return format!("# cannot encode metrics: {e}\n");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Records one evaluated batch: metrics, spans, logs; then requests a flush.
    pub fn record_batch(
        &self,
        report: &BatchReport,
        batch: &BatchIdentity<'_>,
        timings: &BatchTimings,
    ) {
        self.record_metrics(report, timings);
        self.record_trace(report, batch, timings);
        self.flush.notify_one();
    }

    /// Counts a batch put back after an environment fault at `stage`.
    pub fn record_retry(&self, dataset: &str, stage: &'static str) {
        self.instruments.batch_retries.add(
            1,
            &[
                KeyValue::new(names::DATASET, dataset.to_string()),
                KeyValue::new(names::STAGE, stage),
            ],
        );
    }

    /// Notes a batch's landing time (Unix seconds) for the lateness gauges.
    pub fn record_arrival(&self, dataset: &str, landed: f64) {
        self.arrivals.push(dataset, landed);
    }

    /// Every dataset's landing times, as the lateness gauges read them (the
    /// agent judges a batch's lateness and watches for overdue datasets
    /// from the same book).
    pub fn arrivals(&self) -> &crate::anomaly::arrivals::Book {
        &self.arrivals
    }

    /// Counts a batch that landed late for its dataset.
    pub fn record_late_batch(&self, dataset: &str) {
        self.instruments
            .late_batches
            .add(1, &[KeyValue::new(names::DATASET, dataset.to_string())]);
    }

    /// Counts a batch whose row count the volume signal found abnormal.
    pub fn record_volume_anomaly(&self, dataset: &str) {
        self.instruments
            .volume_anomalies
            .add(1, &[KeyValue::new(names::DATASET, dataset.to_string())]);
    }

    /// Counts a batch whose columns differ from its dataset's previous batch.
    pub fn record_schema_change(&self, dataset: &str) {
        self.instruments
            .schema_changes
            .add(1, &[KeyValue::new(names::DATASET, dataset.to_string())]);
    }

    /// Sets whether the agent is degraded (cannot make progress).
    pub fn set_degraded(&self, degraded: bool) {
        self.instruments.degraded.record(u64::from(degraded), &[]);
    }

    /// Counts a webhook trigger: `fired`, `dry_run` or `cooling_down`.
    pub fn record_webhook_event(&self, webhook: &str, dataset: &str, outcome: &'static str) {
        self.instruments.webhook_events.add(
            1,
            &[
                KeyValue::new(names::WEBHOOK, webhook.to_string()),
                KeyValue::new(names::DATASET, dataset.to_string()),
                KeyValue::new(names::OUTCOME, outcome),
            ],
        );
    }

    /// Records one delivery attempt: a client span and the attempt metrics.
    pub fn record_webhook_attempt(&self, a: &WebhookAttempt<'_>) {
        let webhook = KeyValue::new(names::WEBHOOK, a.webhook.to_string());
        self.instruments.webhook_attempts.add(
            1,
            &[webhook.clone(), KeyValue::new(names::OUTCOME, a.outcome)],
        );
        self.instruments
            .webhook_attempt_duration
            .record(a.duration.as_secs_f64(), &[webhook]);
        let tracer = self.tracer_provider.tracer("driftwatch");
        let mut attributes = vec![
            KeyValue::new("webhook", a.webhook.to_string()),
            KeyValue::new("dataset", a.dataset.to_string()),
            KeyValue::new("event_id", a.event_id.to_string()),
            KeyValue::new("attempt", i64::from(a.attempt)),
            KeyValue::new("outcome", a.outcome),
        ];
        if let Some(status) = a.status {
            attributes.push(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
        }
        if let Some(error) = a.error {
            attributes.push(KeyValue::new("error", error.to_string()));
        }
        let mut span = tracer
            .span_builder("driftwatch.webhook.attempt")
            .with_kind(SpanKind::Client)
            .with_start_time(a.started)
            .with_attributes(attributes)
            .start(&tracer);
        if a.outcome != "delivered" {
            span.set_status(opentelemetry::trace::Status::error(
                a.error.unwrap_or("failed").to_string(),
            ));
        }
        span.end_with_timestamp(a.started + a.duration);
        self.flush.notify_one();
    }

    /// Sets the outbox gauges: pending and dead events per webhook.
    pub fn set_webhook_backlog(&self, webhook: &str, pending: u64, dead: u64) {
        for (state, n) in [("pending", pending), ("dead", dead)] {
            self.instruments.webhook_deliveries.record(
                n,
                &[
                    KeyValue::new(names::WEBHOOK, webhook.to_string()),
                    KeyValue::new(names::STATE, state),
                ],
            );
        }
    }

    fn record_metrics(&self, report: &BatchReport, timings: &BatchTimings) {
        let m = &self.instruments;
        let dataset = KeyValue::new(names::DATASET, report.dataset.clone());
        let outcome = report.outcome();
        m.batches.add(
            1,
            &[dataset.clone(), KeyValue::new(names::OUTCOME, outcome)],
        );
        m.rows
            .add(report.rows.unwrap_or(0), std::slice::from_ref(&dataset));
        m.duration.record(
            (timings.read + timings.evaluate + timings.drift).as_secs_f64(),
            std::slice::from_ref(&dataset),
        );
        if report.error.is_some() {
            m.errored.add(1, std::slice::from_ref(&dataset));
        }
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        m.last_batch_time
            .record(now, std::slice::from_ref(&dataset));
        for check in &report.checks {
            let attrs = [
                dataset.clone(),
                KeyValue::new(names::CHECK, check.name.clone()),
                KeyValue::new(names::SEVERITY, severity_name(check.severity)),
            ];
            let status = match check.status {
                CheckStatus::Pass => 0,
                CheckStatus::Fail => 1,
                CheckStatus::Error => 2,
                CheckStatus::Skipped => 3,
            };
            m.check_status.record(status, &attrs);
            if let Some(rows) = check.failing_rows {
                m.check_failing_rows.record(rows, &attrs);
            }
            if let Some(fraction) = check.fraction {
                m.check_failing_fraction.record(fraction, &attrs);
            }
            if check.kind == "anomaly" {
                let attrs = [
                    dataset.clone(),
                    KeyValue::new(names::CHECK, check.name.clone()),
                ];
                let number =
                    |key: &str| check.expected.get(key).and_then(serde_json::Value::as_f64);
                if let Some(v) = check.observed.as_f64() {
                    m.anomaly_observed.record(v, &attrs);
                }
                if let Some(low) = number("low") {
                    m.anomaly_low.record(low, &attrs);
                }
                if let Some(high) = number("high") {
                    m.anomaly_high.record(high, &attrs);
                }
            }
        }
        if let Some(drift) = &report.drift {
            for column in &drift.columns {
                let Some(test) = column.test else { continue };
                let attrs = [
                    dataset.clone(),
                    KeyValue::new(names::COLUMN, column.column.clone()),
                    KeyValue::new(names::TEST, test.name()),
                ];
                if let Some(s) = column.statistic {
                    m.drift_statistic.record(s, &attrs);
                }
                if let Some(p) = column.p_value {
                    m.drift_p_value.record(p, &attrs);
                }
                m.drift_drifted.record(u64::from(column.drifted), &attrs);
            }
            if let Some(share) = drift.drifted_share {
                m.dataset_drift_share
                    .record(share, std::slice::from_ref(&dataset));
            }
            if drift.error.is_none() && drift.message.is_none() {
                m.dataset_drifted.record(
                    u64::from(drift.dataset_drift),
                    std::slice::from_ref(&dataset),
                );
            }
        }
    }

    fn record_trace(&self, report: &BatchReport, batch: &BatchIdentity<'_>, t: &BatchTimings) {
        let tracer = self.tracer_provider.tracer("driftwatch");
        let outcome = report.outcome();
        let mut attributes = vec![
            KeyValue::new("dataset", report.dataset.clone()),
            KeyValue::new("source", batch.source.to_string()),
            KeyValue::new("rows", report.rows.map_or(0, |r| r as i64)),
            KeyValue::new("outcome", outcome),
            KeyValue::new("seq", batch.seq as i64),
        ];
        for (k, v) in batch.partitions {
            attributes.push(KeyValue::new(format!("partition.{k}"), v.clone()));
        }
        if let Some(e) = &report.error {
            attributes.push(KeyValue::new("error", e.clone()));
        }
        let end = t.started + t.read + t.evaluate + t.drift + t.sinks;
        let span = tracer
            .span_builder("driftwatch.batch")
            .with_kind(SpanKind::Internal)
            .with_start_time(t.started)
            .with_attributes(attributes)
            .start(&tracer);
        let cx = Context::new().with_span(span);
        let mut at = t.started;
        for (name, took) in [
            ("read", t.read),
            ("evaluate", t.evaluate),
            ("drift", t.drift),
            ("sinks", t.sinks),
        ] {
            let mut child = tracer
                .span_builder(name)
                .with_start_time(at)
                .start_with_context(&tracer, &cx);
            at += took;
            child.end_with_timestamp(at);
        }

        // One log record per failing check and per drifted column, on the batch span.
        let logger = self.logger_provider.logger("driftwatch");
        let span_context = cx.span().span_context().clone();
        let emit = |event: &'static str,
                    severity: RuleSeverity,
                    body: String,
                    attrs: Vec<(&'static str, String)>| {
            let mut record = logger.create_log_record();
            record.set_event_name(event);
            record.set_timestamp(end);
            let (number, text) = match severity {
                RuleSeverity::Error => (Severity::Error, "ERROR"),
                RuleSeverity::Warn => (Severity::Warn, "WARN"),
            };
            record.set_severity_number(number);
            record.set_severity_text(text);
            record.set_body(AnyValue::from(body));
            record.add_attribute("dataset", report.dataset.clone());
            record.add_attribute("source", batch.source.to_string());
            for (k, v) in attrs {
                record.add_attribute(k, v);
            }
            record.set_trace_context(
                span_context.trace_id(),
                span_context.span_id(),
                Some(span_context.trace_flags()),
            );
            logger.emit(record);
        };
        if let Some(error) = &report.error {
            emit(
                "driftwatch.batch.error",
                RuleSeverity::Error,
                error.clone(),
                Vec::new(),
            );
        }
        for check in report.checks.iter().filter(|c| c.status.is_problem()) {
            emit(
                "driftwatch.check.failed",
                check.severity,
                check
                    .message
                    .clone()
                    .unwrap_or_else(|| format!("check `{}` {}", check.name, check.status)),
                vec![
                    ("check", check.name.clone()),
                    ("status", check.status.to_string()),
                    ("severity", severity_name(check.severity).to_string()),
                ],
            );
        }
        if let Some(drift) = &report.drift {
            for column in drift.columns.iter().filter(|c| c.drifted) {
                let test = column
                    .test
                    .map(|t| t.name().to_string())
                    .unwrap_or_default();
                emit(
                    "driftwatch.column.drifted",
                    drift.severity,
                    format!(
                        "column `{}` drifted ({test} statistic {}, p-value {})",
                        column.column,
                        column
                            .statistic
                            .map_or("-".to_string(), |s| format!("{s:.4}")),
                        column
                            .p_value
                            .map_or("-".to_string(), |p| format!("{p:.4}")),
                    ),
                    vec![("column", column.column.clone()), ("test", test)],
                );
            }
        }
        cx.span().end_with_timestamp(end);
    }

    /// Runs the flusher until `stop` completes: after each batch (coalesced),
    /// exports traces, logs and metrics on a blocking thread; logs failures at
    /// most once a minute, and when export resumes.
    pub async fn run_flusher(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        if !self.exporting {
            stop.await;
            return;
        }
        tokio::pin!(stop);
        let mut failures = FailureLog::default();
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = self.flush.notified() => {}
            }
            let me = self.clone();
            let flushing = tokio::task::spawn_blocking(move || me.flush_now());
            // A black-holed endpoint can hold a flush for long; never hold up a stop for it.
            let result = tokio::select! {
                _ = &mut stop => return,
                r = flushing => r,
            };
            match result {
                Ok(Ok(())) => failures.success(),
                Ok(Err(e)) => failures.failure(&e),
                Err(e) => failures.failure(&e.to_string()),
            }
        }
    }

    /// Exports everything now (blocking; call from a blocking thread). The
    /// three signals export at once, each on its own thread: a collector
    /// that never answers costs one export timeout, not three in a row.
    pub fn flush_now(&self) -> Result<(), String> {
        let (traces, logs, metrics) = std::thread::scope(|s| {
            let traces = s.spawn(|| self.tracer_provider.force_flush());
            let logs = s.spawn(|| self.logger_provider.force_flush());
            let metrics = self.meter_provider.force_flush();
            (joined(traces.join()), joined(logs.join()), metrics)
        });
        match (traces, logs, metrics) {
            (Ok(()), Ok(()), Ok(())) => Ok(()),
            (t, l, m) => Err([t.err(), l.err(), m.err()]
                .into_iter()
                .flatten()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")),
        }
    }

    /// Shuts the providers down (blocking). Each provider's shutdown exports
    /// what it still holds (no flush before it: that would try a wedged
    /// collector twice), and the three run at once, so a stop waits for one
    /// export timeout (after an export already in flight, if any).
    pub fn shutdown(&self) {
        std::thread::scope(|s| {
            let traces = s.spawn(|| self.tracer_provider.shutdown());
            let logs = s.spawn(|| self.logger_provider.shutdown());
            let _ = self.meter_provider.shutdown();
            // Joined here, so a panic in one is not re-raised by the scope.
            let _ = (traces.join(), logs.join());
        });
    }
}

/// A flush thread's result; a panicked flush is a failed export.
fn joined(
    r: std::thread::Result<opentelemetry_sdk::error::OTelSdkResult>,
) -> opentelemetry_sdk::error::OTelSdkResult {
    r.unwrap_or_else(|_| {
        Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
            "the export thread panicked".to_string(),
        ))
    })
}

fn severity_name(s: RuleSeverity) -> &'static str {
    match s {
        RuleSeverity::Error => "error",
        RuleSeverity::Warn => "warn",
    }
}

/// Rate-limited export-failure logging: the first failure, then at most one
/// warning a minute with the count since, then one line when export resumes.
#[derive(Default)]
struct FailureLog {
    failing_since: Option<Instant>,
    last_logged: Option<Instant>,
    suppressed: AtomicU64,
}

/// Minimum time between two export-failure warnings.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

impl FailureLog {
    fn failure(&mut self, error: &str) {
        let now = Instant::now();
        self.failing_since.get_or_insert(now);
        let due = self
            .last_logged
            .is_none_or(|t| now.duration_since(t) >= FAILURE_LOG_INTERVAL);
        if due {
            let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
            tracing::warn!(error = %error, suppressed, "OpenTelemetry export failed; evaluation continues, signals are kept (bounded) and retried");
            self.last_logged = Some(now);
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn success(&mut self) {
        if let Some(since) = self.failing_since.take() {
            tracing::info!(
                down_for_s = since.elapsed().as_secs(),
                "OpenTelemetry export resumed"
            );
            self.last_logged = None;
            self.suppressed.store(0, Ordering::Relaxed);
        }
    }
}
