//! The agent's configuration: the `driftwatch.toml` file, its JSON Schema,
//! and the resolved [`Settings`] that `driftwatch run` uses.
//!
//! Two layers keep the file honest and the code simple: [`ConfigFile`] is the
//! file exactly as written (serde + `deny_unknown_fields`, documented field by
//! field; `driftwatch config schema` prints its JSON Schema from these doc
//! comments), and [`Settings`] is what the agent runs with — defaults filled
//! in, durations and sizes parsed, relative paths resolved against the config
//! file's folder, command-line flags ([`Overrides`]) applied last.

mod units;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

pub use units::{parse_bytes, parse_interval};

/// Configuration errors: always the user's; each names the file (and, for
/// syntax, the line and column) and says what to write instead.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("{}: cannot read the config file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// One-line reason.
        message: String,
    },
    /// A value that parses but does not make sense (a bad duration, size, address or glob).
    #[error("{origin}: `{key}`: {message}")]
    Invalid {
        /// The config file, or "command line".
        origin: String,
        /// The key, e.g. `lake.settle`.
        key: String,
        /// One-line reason.
        message: String,
    },
}

/// A `Result` whose error is a [`ConfigError`].
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// Default HTTP listen address: loopback only, the OpenTelemetry Prometheus port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";
/// Default name of the state folder inside the first watched folder.
pub const DEFAULT_STATE_DIR: &str = ".driftwatch";

/// `driftwatch.toml`, as written. Every key is optional except that a
/// watched folder and a rules folder must come from the file or the flags.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Folders to watch for new Parquet batches (the lake roots). Relative
    /// paths are relative to this file's folder.
    #[serde(default)]
    pub watch: Vec<PathBuf>,
    /// The folder of rule files (`*.yaml`), or one rule file. Reloaded on change.
    pub rules: Option<PathBuf>,
    /// Where the agent keeps its durable state (store, results log, locks).
    /// Default: `.driftwatch/` inside the first watched folder.
    pub state: Option<PathBuf>,
    /// How the lake is watched.
    #[serde(default)]
    pub lake: LakeSection,
    /// How batches are evaluated.
    #[serde(default)]
    pub evaluation: EvaluationSection,
    /// The agent's HTTP endpoints (`/healthz`, `/readyz`, `/status`).
    #[serde(default)]
    pub http: HttpSection,
    /// The agent's own logs.
    #[serde(default)]
    pub log: LogSection,
    /// How much history the state folder keeps.
    #[serde(default)]
    pub retention: RetentionSection,
    /// Dataset health signals the agent gives without rules.
    #[serde(default)]
    pub health: HealthSection,
    /// OpenTelemetry export (metrics, traces, logs over OTLP). The standard
    /// `OTEL_*` environment variables override these keys.
    #[serde(default)]
    pub telemetry: TelemetrySection,
    /// Retraining webhooks: when a dataset's batches call for it, a signed
    /// event is written to the outbox and delivered with retries.
    #[serde(default)]
    pub webhooks: Vec<crate::sinks::webhook::config::WebhookSection>,
    /// Event streams (HTTP ingest, Kafka topics, NDJSON files), each windowed
    /// into batches of one dataset. See `[[sources]]` in the README.
    #[serde(default)]
    pub sources: Vec<crate::sources::stream::config::SourceSection>,
}

/// `[telemetry]`: where OpenTelemetry signals go. Without an endpoint (here or
/// in `OTEL_EXPORTER_OTLP_ENDPOINT`) metrics are only served on `/metrics`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySection {
    /// OTLP endpoint base URL, e.g. `http://127.0.0.1:4317` (gRPC) or
    /// `http://127.0.0.1:4318` (HTTP; `/v1/metrics`, `/v1/traces`, `/v1/logs`
    /// are appended). Env: `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub otlp_endpoint: Option<String>,
    /// `grpc` (default) or `http/protobuf`. Env: `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub otlp_protocol: Option<String>,
    /// Deadline of one export, retries included (default `5s`).
    pub otlp_timeout: Option<String>,
    /// `service.name` (default `driftwatch`). Env: `OTEL_SERVICE_NAME`.
    pub service_name: Option<String>,
    /// Extra resource attributes, e.g. `{ "deployment.environment" = "prod" }`.
    /// Env `OTEL_RESOURCE_ATTRIBUTES` adds to and overrides them.
    #[serde(default)]
    pub resource_attributes: std::collections::BTreeMap<String, String>,
    /// Periodic metric export interval (default `60s`); every evaluated batch
    /// is also exported at once.
    pub export_interval: Option<String>,
}

/// `[lake]`: which files are batches, and when a file is complete.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LakeSection {
    /// Globs (relative to a watched folder) of files to consider. Default: `["**/*.parquet"]`.
    pub include: Option<Vec<String>>,
    /// Globs of files to skip even when included. Temporary names (`.`/`_`
    /// prefixes, `*.tmp`, `_temporary/`, `_SUCCESS`, `*.crc`) are always skipped.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// How long a file's size and modification time must stay unchanged
    /// before it is read, e.g. `2s` or `500ms` (default `2s`). A file renamed
    /// into place or closed after writing whose Parquet footer parses is taken
    /// at once.
    pub settle: Option<String>,
    /// How often the whole lake is re-listed so that a missed filesystem event
    /// never means a missed file (default `30s`).
    pub rescan: Option<String>,
    /// `notify` (filesystem events, default) or `poll` (list the lake every
    /// `poll_interval`; for network mounts without inotify).
    pub mode: Option<WatchMode>,
    /// The listing interval in `poll` mode (default `2s`); also how often
    /// Delta tables (rule files with `table:`) are polled for new versions,
    /// unless a rule file sets `table.poll_interval`.
    pub poll_interval: Option<String>,
    /// Move files whose evaluation errors (corrupt, unreadable) into this
    /// folder, keeping their path relative to the watched folder. Default: leave them.
    pub quarantine: Option<PathBuf>,
    /// How to reach watched object-store prefixes (`s3://…`, `az://…`, `gs://…`).
    /// Credentials are never written here: they come from the environment
    /// variables each cloud's SDKs read.
    #[serde(default)]
    pub object_store: ObjectStoreSection,
}

/// `[lake.object_store]`: the client for `s3://`, `az://` and `gs://`
/// locations, over what the standard environment variables say
/// (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ALLOW_HTTP`,
/// `AZURE_STORAGE_ACCOUNT_NAME`, `GOOGLE_APPLICATION_CREDENTIALS`, …).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ObjectStoreSection {
    /// Endpoint URL of an S3-compatible server (MinIO, Ceph, a local test
    /// server), of Azurite or of a GCS emulator, e.g. `http://127.0.0.1:9000`.
    /// Default: the cloud's own (or `AWS_ENDPOINT_URL`, `GOOGLE_BASE_URL`).
    pub endpoint: Option<String>,
    /// S3 region, e.g. `eu-west-1` (or `AWS_REGION`; default `us-east-1`).
    pub region: Option<String>,
    /// Allow a plain `http://` endpoint (local servers only). Default `false`
    /// (or `AWS_ALLOW_HTTP`).
    pub allow_http: Option<bool>,
    /// S3 virtual-hosted-style requests (`https://bucket.host/key`) instead
    /// of path-style (`https://host/bucket/key`, the default, which
    /// S3-compatible servers expect).
    pub virtual_hosted_style: Option<bool>,
    /// The name of the environment variable holding the access key id
    /// (Azure: the storage account name), when not the standard one.
    pub access_key_id_env: Option<String>,
    /// The name of the environment variable holding the secret access key
    /// (Azure: the account key), when not the standard one. Its value is
    /// kept out of every message.
    pub secret_access_key_env: Option<String>,
    /// Send requests unsigned, looking for no credentials: public buckets
    /// and local emulators (fake-gcs-server, which checks none). Default `false`.
    pub anonymous: Option<bool>,
    /// Retries of one request to the store before it counts as failed (default 4).
    pub max_retries: Option<usize>,
    /// Longest time one request is retried, e.g. `30s` (default).
    pub retry_timeout: Option<String>,
}

impl ObjectStoreSection {
    /// The resolved client options; `origin` names the file in errors.
    pub fn resolve(&self, origin: &str) -> Result<crate::location::ObjectStoreOptions> {
        let retry_timeout = self
            .retry_timeout
            .as_deref()
            .map(parse_interval)
            .transpose()
            .map_err(|message| ConfigError::Invalid {
                origin: origin.to_string(),
                key: "lake.object_store.retry_timeout".to_string(),
                message,
            })?;
        Ok(crate::location::ObjectStoreOptions {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            allow_http: self.allow_http,
            virtual_hosted_style: self.virtual_hosted_style,
            access_key_id_env: self.access_key_id_env.clone(),
            secret_access_key_env: self.secret_access_key_env.clone(),
            anonymous: self.anonymous,
            max_retries: self.max_retries,
            retry_timeout,
        })
    }
}

/// `[lake.object_store]` of a config file, resolved (for `check` and `baseline`).
pub fn object_store_options(path: &Path) -> Result<crate::location::ObjectStoreOptions> {
    ConfigFile::read(path)?
        .lake
        .object_store
        .resolve(&path.display().to_string())
}

/// How the lake is watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WatchMode {
    /// Filesystem events (inotify on Linux), plus periodic re-listing.
    #[default]
    Notify,
    /// Listing only, every `poll_interval`.
    Poll,
}

/// `[evaluation]`: concurrency and memory.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluationSection {
    /// Batches evaluated at the same time (default: the number of cores).
    pub concurrency: Option<usize>,
    /// Memory DataFusion may use, shared by concurrent evaluations, e.g. `1GiB` (default `1GiB`).
    pub memory_limit: Option<String>,
    /// Batches that may wait for evaluation before discovery pauses (default 1024).
    pub queue: Option<usize>,
    /// Longest one batch's evaluation may take, e.g. `15m` (default); a
    /// longer one is cancelled and recorded as the batch's error report
    /// "evaluation exceeded 15m".
    pub timeout: Option<String>,
}

/// `[http]`: the agent's HTTP server. See docs/security.md ("HTTP API") for
/// the trust model and how to expose the agent in a pod.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Address to listen on (default `127.0.0.1:9464`). Port 0 picks a free port;
    /// the address taken is written to `agent.json` in the state folder.
    pub listen: Option<String>,
    /// A second address serving only `/metrics`, `/healthz` and `/readyz`
    /// (e.g. `0.0.0.0:9465` in a pod, with `listen` left on loopback), so
    /// probes and scrapes do not expose ingest, the pages or the outbox.
    /// Default: none (everything on `listen`).
    pub metrics_listen: Option<String>,
    /// Host names (the `Host` header, port ignored, case-insensitive) the
    /// agent answers besides IP literals and `localhost`, e.g.
    /// `["driftwatch.monitoring.svc"]`. Any other host gets 421: this stops
    /// DNS rebinding from a web page. Default: none.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Environment variable holding the API token. When set, `POST
    /// /ingest/*` and `POST /webhooks/{id}/retry` need `Authorization:
    /// Bearer <token>` (an `http` source's own `bearer_token_env` token is
    /// also accepted for its dataset). Default: no token.
    pub api_token_env: Option<String>,
    /// Open connections per listener; more are closed at once (default 512).
    pub max_connections: Option<usize>,
    /// Time a client has to send a request's headers, counted from the
    /// connection's accept or the end of the previous response, so it is also
    /// the keep-alive idle timeout, e.g. `10s` (default).
    pub header_timeout: Option<String>,
    /// Request bodies held in memory at once across all ingest posts, e.g.
    /// `256MiB` (default); a post that does not fit gets 503 with
    /// `Retry-After`. At least every `http` source's `max_body`.
    pub body_budget: Option<String>,
}

/// Default open connections per listener.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// The HTTP server's resolved settings (`[http]` beyond `listen`). Only a
/// restart changes them.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    /// The metrics-and-probes listener.
    pub metrics_listen: Option<SocketAddr>,
    /// Host names accepted besides IP literals and `localhost`, lowercase.
    pub allowed_hosts: Vec<String>,
    /// The environment variable of the API token.
    pub api_token_env: Option<String>,
    /// Open connections per listener.
    pub max_connections: usize,
    /// Header (and keep-alive idle) timeout.
    pub header_timeout: Duration,
    /// Bytes of request bodies held at once.
    pub body_budget: usize,
}

/// `[log]`: the agent's own log lines (on standard error).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `text` (default) or `json` (one JSON object per line).
    pub format: Option<LogFormat>,
    /// Minimum level or filter, e.g. `info` (default), `debug`, `driftwatch=debug`.
    pub level: Option<String>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[health]`: signals for every dataset, rules or not (docs/agent.md).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    /// Judge every batch's row count against the dataset's own history
    /// (the `anomaly` method, weekly seasonality, 28 days; default true).
    pub volume_anomaly: Option<bool>,
    /// Its expected false-alarm rate per normal batch, in (0, 0.5)
    /// (default 0.0001: conservative, as nobody chose it).
    pub volume_sensitivity: Option<f64>,
}

/// Default `[health] volume_sensitivity`.
pub const DEFAULT_VOLUME_SENSITIVITY: f64 = 0.0001;

/// `[retention]`: bounds on the state folder.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionSection {
    /// Size at which the results log is rotated, e.g. `64MiB` (default).
    pub results_log_max_size: Option<String>,
    /// Rotated results logs kept besides the current one (default 5).
    pub results_log_files: Option<usize>,
    /// Reports kept per dataset in the store for `/status` and history (default 1000).
    pub reports_per_dataset: Option<usize>,
    /// Records of files no longer in the lake are forgotten after this long (default `30d`).
    pub max_age: Option<String>,
    /// How often the state is pruned of versions of files gone from the lake and of old
    /// webhook deliveries (default `1h`). Shorten it when files are deleted and landed again
    /// under the same name faster than that, or lengthen it on a lake that is slow to list.
    pub prune_interval: Option<String>,
}

/// Command-line flags of `driftwatch run`; each, when given, wins over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--watch` (repeatable).
    pub watch: Vec<PathBuf>,
    /// `--rules`.
    pub rules: Option<PathBuf>,
    /// `--state`.
    pub state: Option<PathBuf>,
    /// `--listen`.
    pub listen: Option<String>,
    /// `--settle`.
    pub settle: Option<String>,
    /// `--poll`: use polling instead of filesystem events.
    pub poll: bool,
    /// `--concurrency`.
    pub concurrency: Option<usize>,
    /// `--memory-limit`.
    pub memory_limit: Option<String>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
}

/// Everything `driftwatch run` needs, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The config file, when one was given (re-read on reload).
    pub config_file: Option<PathBuf>,
    /// Watched folders (absolute or as given).
    pub watch: Vec<PathBuf>,
    /// Watched object-store prefixes (`s3://bucket/prefix`).
    pub watch_objects: Vec<crate::location::ObjectUrl>,
    /// How object-store clients are built.
    pub object_store: crate::location::ObjectStoreOptions,
    /// The rules folder or file.
    pub rules: PathBuf,
    /// The state folder.
    pub state: PathBuf,
    /// Include globs.
    pub include: Vec<String>,
    /// Exclude globs.
    pub exclude: Vec<String>,
    /// Settle time.
    pub settle: Duration,
    /// Re-listing interval.
    pub rescan: Duration,
    /// Watch mode.
    pub mode: WatchMode,
    /// Listing interval in poll mode.
    pub poll_interval: Duration,
    /// Quarantine folder.
    pub quarantine: Option<PathBuf>,
    /// Concurrent evaluations.
    pub concurrency: usize,
    /// DataFusion memory pool, bytes.
    pub memory_limit: usize,
    /// Longest one batch's evaluation may take.
    pub evaluation_timeout: Duration,
    /// Queue capacity.
    pub queue: usize,
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// The rest of `[http]`.
    pub http: HttpSettings,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log_level: String,
    /// Results log rotation size, bytes.
    pub results_log_max_size: u64,
    /// Rotated results logs kept.
    pub results_log_files: usize,
    /// Reports kept per dataset.
    pub reports_per_dataset: usize,
    /// The volume anomaly signal's sensitivity; None when it is off.
    pub volume_sensitivity: Option<f64>,
    /// Forget vanished files after this long.
    pub max_age: Duration,
    /// Period of the housekeeping prune (`retention.prune_interval`).
    pub prune_interval: Duration,
    /// OpenTelemetry export.
    pub telemetry: crate::sinks::telemetry::TelemetrySettings,
    /// Retraining webhooks.
    pub webhooks: Vec<crate::sinks::webhook::WebhookConfig>,
    /// Event stream sources.
    pub sources: Vec<crate::sources::stream::SourceConfig>,
}

impl ConfigFile {
    /// Reads and parses a config file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses config text; `path` is only used in error messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|span| line_col(text, span.start))
                .unwrap_or((1, 1));
            ConfigError::Syntax {
                path: path.to_path_buf(),
                line,
                column,
                message: e.message().trim().replace('\n', " "),
            }
        })
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count() + 1)
        .unwrap_or(1);
    (line, column)
}

impl Settings {
    /// Resolves a config file (optional) and flags into settings.
    pub fn resolve(config_path: Option<&Path>, overrides: &Overrides) -> Result<Self> {
        let (file, base, origin) = match config_path {
            Some(path) => (
                ConfigFile::read(path)?,
                path.parent().map(Path::to_path_buf).unwrap_or_default(),
                path.display().to_string(),
            ),
            None => (ConfigFile::default(), PathBuf::new(), String::new()),
        };
        let relative = |p: &PathBuf| {
            if p.is_absolute() {
                p.clone()
            } else {
                base.join(p)
            }
        };
        let cli = "command line".to_string();
        let invalid = |origin: &str, key: &str, message: String| ConfigError::Invalid {
            origin: if origin.is_empty() {
                "defaults".to_string()
            } else {
                origin.to_string()
            },
            key: key.to_string(),
            message,
        };

        // Object-store URLs are not paths: never made relative to the file.
        let given: Vec<(PathBuf, &str)> = if overrides.watch.is_empty() {
            file.watch
                .iter()
                .map(|w| (w.clone(), origin.as_str()))
                .collect()
        } else {
            overrides
                .watch
                .iter()
                .map(|w| (w.clone(), cli.as_str()))
                .collect()
        };
        let mut watch: Vec<PathBuf> = Vec::new();
        let mut watch_objects = Vec::new();
        for (entry, from) in given {
            match crate::location::ObjectUrl::from_path(&entry) {
                Some(url) => {
                    watch_objects.push(url.map_err(|e| invalid(from, "watch", e.to_string()))?)
                }
                None if overrides.watch.is_empty() => watch.push(relative(&entry)),
                None => watch.push(entry),
            }
        }
        // Without folders, streams or a state folder there is nothing to run;
        // with a state folder, rule files with `table:` may be all there is
        // (the agent checks that once it has read them).
        if watch.is_empty()
            && watch_objects.is_empty()
            && file.sources.is_empty()
            && overrides.state.is_none()
            && file.state.is_none()
        {
            return Err(invalid(
                &cli,
                "watch",
                "no folder to watch: give `--watch DIR` or `watch = [\"DIR\"]` in the config file \
                 (or declare `[[sources]]` event streams, or rule files with `table:`, and a `state` folder)"
                    .to_string(),
            ));
        }
        let rules = match (&overrides.rules, &file.rules) {
            (Some(r), _) => r.clone(),
            (None, Some(r)) => relative(r),
            (None, None) => {
                return Err(invalid(
                    &cli,
                    "rules",
                    "no rules: give `--rules DIR` or `rules = \"DIR\"` in the config file"
                        .to_string(),
                ));
            }
        };
        let state = match (&overrides.state, &file.state) {
            (Some(s), _) => s.clone(),
            (None, Some(s)) => relative(s),
            (None, None) => match watch.first() {
                Some(w) => w.join(DEFAULT_STATE_DIR),
                None => {
                    return Err(invalid(
                        &cli,
                        "state",
                        "no watched folder to keep the state in (an object store is no place for it): give `--state DIR` or `state = \"DIR\"`"
                            .to_string(),
                    ));
                }
            },
        };

        // Each value: flag first, then file, then default; errors name where the value came from.
        let pick = |flag: &Option<String>, from_file: &Option<String>, default: &str| match (
            flag, from_file,
        ) {
            (Some(v), _) => (v.clone(), cli.clone()),
            (None, Some(v)) => (v.clone(), origin.clone()),
            (None, None) => (default.to_string(), String::new()),
        };
        let interval = |key: &str, (text, from): (String, String)| {
            parse_interval(&text).map_err(|m| invalid(&from, key, m))
        };
        let bytes = |key: &str, (text, from): (String, String)| {
            parse_bytes(&text).map_err(|m| invalid(&from, key, m))
        };

        let settle = interval(
            "lake.settle",
            pick(&overrides.settle, &file.lake.settle, "2s"),
        )?;
        let rescan = interval("lake.rescan", pick(&None, &file.lake.rescan, "30s"))?;
        let poll_interval = interval(
            "lake.poll_interval",
            pick(&None, &file.lake.poll_interval, "2s"),
        )?;
        if rescan.is_zero() || poll_interval.is_zero() {
            return Err(invalid(
                &origin,
                "lake.rescan",
                "intervals must be greater than zero".to_string(),
            ));
        }
        let memory_limit = bytes(
            "evaluation.memory_limit",
            pick(
                &overrides.memory_limit,
                &file.evaluation.memory_limit,
                "1GiB",
            ),
        )?;
        let evaluation_timeout = interval(
            "evaluation.timeout",
            pick(&None, &file.evaluation.timeout, "15m"),
        )?;
        if evaluation_timeout.is_zero() {
            return Err(invalid(
                &origin,
                "evaluation.timeout",
                "must be greater than zero".to_string(),
            ));
        }
        let results_log_max_size = bytes(
            "retention.results_log_max_size",
            pick(&None, &file.retention.results_log_max_size, "64MiB"),
        )? as u64;
        let max_age = interval(
            "retention.max_age",
            pick(&None, &file.retention.max_age, "30d"),
        )?;
        let prune_interval = interval(
            "retention.prune_interval",
            pick(&None, &file.retention.prune_interval, "1h"),
        )?;
        if prune_interval.is_zero() {
            return Err(invalid(
                &origin,
                "retention.prune_interval",
                "must be greater than zero".to_string(),
            ));
        }
        let volume_sensitivity = file
            .health
            .volume_sensitivity
            .unwrap_or(DEFAULT_VOLUME_SENSITIVITY);
        if !(volume_sensitivity > 0.0 && volume_sensitivity < 0.5) {
            return Err(invalid(
                &origin,
                "health.volume_sensitivity",
                format!("{volume_sensitivity}: write an expected false-alarm rate in (0, 0.5)"),
            ));
        }
        let volume_sensitivity = file
            .health
            .volume_anomaly
            .unwrap_or(true)
            .then_some(volume_sensitivity);
        let (listen_text, listen_from) = pick(&overrides.listen, &file.http.listen, DEFAULT_LISTEN);
        let listen: SocketAddr = listen_text.parse().map_err(|e| {
            invalid(
                &listen_from,
                "http.listen",
                format!("`{listen_text}`: {e} (write e.g. 127.0.0.1:9464)"),
            )
        })?;
        let include = file
            .lake
            .include
            .clone()
            .unwrap_or_else(|| vec!["**/*.parquet".to_string()]);
        for glob in include.iter().chain(file.lake.exclude.iter()) {
            globset::Glob::new(glob)
                .map_err(|e| invalid(&origin, "lake.include/exclude", e.to_string()))?;
        }
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let concurrency = overrides
            .concurrency
            .or(file.evaluation.concurrency)
            .unwrap_or(cores);
        if concurrency == 0 {
            return Err(invalid(
                &origin,
                "evaluation.concurrency",
                "must be at least 1".to_string(),
            ));
        }
        let queue = file.evaluation.queue.unwrap_or(1024).max(1);
        let telemetry = telemetry_settings(&file.telemetry, &origin)?;
        let webhooks = crate::sinks::webhook::config::resolve(&file.webhooks, &base, &|name| {
            std::env::var(name).ok()
        })
        .map_err(|(key, message)| invalid(&origin, &key, message))?;
        let sources = crate::sources::stream::config::resolve(
            &file.sources,
            &base,
            watch.first().map(PathBuf::as_path),
            &|name| std::env::var(name).ok(),
        )
        .map_err(|(key, message)| invalid(&origin, &key, message))?;
        let http = http_settings(&file.http, &origin, &sources)?;
        Ok(Settings {
            config_file: config_path.map(Path::to_path_buf),
            watch,
            watch_objects,
            object_store: file.lake.object_store.resolve(&origin)?,
            rules,
            state,
            include,
            exclude: file.lake.exclude.clone(),
            settle,
            rescan,
            mode: if overrides.poll {
                WatchMode::Poll
            } else {
                file.lake.mode.unwrap_or_default()
            },
            poll_interval,
            quarantine: file.lake.quarantine.as_ref().map(relative),
            concurrency,
            memory_limit,
            evaluation_timeout,
            queue,
            listen,
            http,
            log_format: overrides.log_format.or(file.log.format).unwrap_or_default(),
            log_level: file.log.level.clone().unwrap_or_else(|| "info".to_string()),
            results_log_max_size,
            results_log_files: file.retention.results_log_files.unwrap_or(5),
            reports_per_dataset: file.retention.reports_per_dataset.unwrap_or(1000).max(1),
            volume_sensitivity,
            max_age,
            prune_interval,
            telemetry,
            webhooks,
            sources,
        })
    }
}

/// `[http]` beyond `listen`, checked against the `http` sources.
fn http_settings(
    section: &HttpSection,
    origin: &str,
    sources: &[crate::sources::stream::SourceConfig],
) -> Result<HttpSettings> {
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        origin: if origin.is_empty() {
            "defaults".to_string()
        } else {
            origin.to_string()
        },
        key: format!("http.{key}"),
        message,
    };
    let metrics_listen = match &section.metrics_listen {
        Some(text) => Some(text.parse::<SocketAddr>().map_err(|e| {
            invalid(
                "metrics_listen",
                format!("`{text}`: {e} (write e.g. 0.0.0.0:9465)"),
            )
        })?),
        None => None,
    };
    let mut allowed_hosts = Vec::new();
    for name in &section.allowed_hosts {
        let host = name.trim().trim_end_matches('.').to_ascii_lowercase();
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(invalid(
                "allowed_hosts",
                format!(
                    "`{name}`: write a host name such as driftwatch.monitoring.svc (no scheme, no port)"
                ),
            ));
        }
        allowed_hosts.push(host);
    }
    if let Some(var) = &section.api_token_env
        && std::env::var(var).map_or(true, |v| v.is_empty())
    {
        return Err(invalid(
            "api_token_env",
            format!("environment variable `{var}` is not set"),
        ));
    }
    let max_connections = section.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    if max_connections == 0 {
        return Err(invalid("max_connections", "must be at least 1".to_string()));
    }
    let header_timeout = match &section.header_timeout {
        Some(t) => parse_interval(t).map_err(|m| invalid("header_timeout", m))?,
        None => Duration::from_secs(10),
    };
    if header_timeout.is_zero() {
        return Err(invalid(
            "header_timeout",
            "must be greater than zero".to_string(),
        ));
    }
    let body_budget = match &section.body_budget {
        Some(t) => parse_bytes(t).map_err(|m| invalid("body_budget", m))?,
        None => 256 << 20,
    };
    for source in sources {
        if let crate::sources::stream::SourceSettings::Http { max_body, .. } = &source.settings
            && *max_body > body_budget
        {
            return Err(invalid(
                "body_budget",
                format!(
                    "{body_budget} bytes is less than `max_body` of source `{}` ({max_body}): no post of that size could ever be read; raise `http.body_budget` or lower `max_body`",
                    source.name
                ),
            ));
        }
    }
    Ok(HttpSettings {
        metrics_listen,
        allowed_hosts,
        api_token_env: section.api_token_env.clone(),
        max_connections,
        header_timeout,
        body_budget,
    })
}

/// The telemetry settings: the standard `OTEL_EXPORTER_OTLP_*` variables
/// over the config file's `[telemetry]`.
fn telemetry_settings(
    section: &TelemetrySection,
    origin: &str,
) -> Result<crate::sinks::telemetry::TelemetrySettings> {
    use crate::sinks::telemetry::{OtlpProtocol, OtlpSettings, TelemetrySettings};
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let invalid = |from: &str, key: &str, message: String| ConfigError::Invalid {
        origin: from.to_string(),
        key: key.to_string(),
        message,
    };
    let endpoint = env("OTEL_EXPORTER_OTLP_ENDPOINT").or_else(|| section.otlp_endpoint.clone());
    let protocol = match env("OTEL_EXPORTER_OTLP_PROTOCOL") {
        Some(p) => OtlpProtocol::parse(&p)
            .map_err(|m| invalid("environment", "OTEL_EXPORTER_OTLP_PROTOCOL", m))?,
        None => match &section.otlp_protocol {
            Some(p) => {
                OtlpProtocol::parse(p).map_err(|m| invalid(origin, "telemetry.otlp_protocol", m))?
            }
            None => OtlpProtocol::Grpc,
        },
    };
    let timeout = match &section.otlp_timeout {
        Some(t) => parse_interval(t).map_err(|m| invalid(origin, "telemetry.otlp_timeout", m))?,
        None => Duration::from_secs(5),
    };
    let export_interval = match &section.export_interval {
        Some(t) => {
            parse_interval(t).map_err(|m| invalid(origin, "telemetry.export_interval", m))?
        }
        None => Duration::from_secs(60),
    };
    if let Some(e) = &endpoint
        && !(e.starts_with("http://") || e.starts_with("https://"))
    {
        return Err(invalid(
            origin,
            "telemetry.otlp_endpoint",
            format!("`{e}`: write a URL such as http://127.0.0.1:4317"),
        ));
    }
    Ok(TelemetrySettings {
        otlp: endpoint.map(|endpoint| OtlpSettings {
            endpoint,
            protocol,
            timeout,
        }),
        service_name: section
            .service_name
            .clone()
            .unwrap_or_else(|| "driftwatch".to_string()),
        resource_attributes: section
            .resource_attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        export_interval,
    })
}

/// The JSON Schema of `driftwatch.toml` (`driftwatch config schema`).
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(ConfigFile)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overrides(watch: &str, rules: &str) -> Overrides {
        Overrides {
            watch: vec![PathBuf::from(watch)],
            rules: Some(PathBuf::from(rules)),
            ..Overrides::default()
        }
    }

    #[test]
    fn zero_config_defaults() {
        let s = Settings::resolve(None, &overrides("lake", "rules")).unwrap();
        assert_eq!(s.state, PathBuf::from("lake/.driftwatch"));
        assert_eq!(s.listen.to_string(), "127.0.0.1:9464");
        assert_eq!(s.settle, Duration::from_secs(2));
        assert_eq!(s.rescan, Duration::from_secs(30));
        assert_eq!(s.memory_limit, 1 << 30);
        assert_eq!(s.evaluation_timeout, Duration::from_secs(15 * 60));
        assert_eq!(s.include, vec!["**/*.parquet".to_string()]);
        assert_eq!(s.mode, WatchMode::Notify);
        assert_eq!(s.results_log_max_size, 64 << 20);
        assert_eq!(s.prune_interval, Duration::from_secs(3600));
        assert_eq!(
            s.http,
            HttpSettings {
                metrics_listen: None,
                allowed_hosts: Vec::new(),
                api_token_env: None,
                max_connections: 512,
                header_timeout: Duration::from_secs(10),
                body_budget: 256 << 20,
            }
        );
    }

    #[test]
    fn the_prune_interval_is_read_and_must_not_be_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.toml");
        let resolve = |value: &str| {
            std::fs::write(
                &path,
                format!("watch = [\"lake\"]\nrules = \"rules\"\n[retention]\nprune_interval = \"{value}\"\n"),
            )
            .unwrap();
            Settings::resolve(Some(&path), &Overrides::default()).map_err(|e| {
                e.to_string()
                    .trim_start_matches(&path.display().to_string())
                    .to_string()
            })
        };
        assert_eq!(
            resolve("10m").unwrap().prune_interval,
            Duration::from_secs(600)
        );
        assert_eq!(
            resolve("0s").unwrap_err(),
            ": `retention.prune_interval`: must be greater than zero"
        );
    }

    #[test]
    fn http_keys_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.toml");
        let resolve = |http: &str, rest: &str| {
            std::fs::write(
                &path,
                format!("watch = [\"lake\"]\nrules = \"rules\"\n[http]\n{http}\n{rest}"),
            )
            .unwrap();
            Settings::resolve(Some(&path), &Overrides::default()).map_err(|e| {
                e.to_string()
                    .trim_start_matches(&path.display().to_string())
                    .to_string()
            })
        };
        let s = resolve(
            "metrics_listen = \"0.0.0.0:9465\"\nallowed_hosts = [\"DW.svc.\"]\nmax_connections = 8\nheader_timeout = \"2s\"\nbody_budget = \"1MiB\"",
            "[[sources]]\nkind = \"http\"\ndataset = \"e\"\nmax_body = \"1MiB\"\n",
        )
        .unwrap();
        assert_eq!(s.http.metrics_listen, Some("0.0.0.0:9465".parse().unwrap()));
        assert_eq!(s.http.allowed_hosts, vec!["dw.svc".to_string()]);
        assert_eq!(s.http.max_connections, 8);
        assert_eq!(s.http.header_timeout, Duration::from_secs(2));
        assert_eq!(s.http.body_budget, 1 << 20);
        let cases = [
            (
                "body_budget = \"1MiB\"",
                "[[sources]]\nkind = \"http\"\ndataset = \"e\"\nmax_body = \"2MiB\"\n",
                ": `http.body_budget`: 1048576 bytes is less than `max_body` of source `http:e` (2097152): no post of that size could ever be read; raise `http.body_budget` or lower `max_body`",
            ),
            (
                "allowed_hosts = [\"https://x\"]",
                "",
                ": `http.allowed_hosts`: `https://x`: write a host name such as driftwatch.monitoring.svc (no scheme, no port)",
            ),
            (
                "api_token_env = \"DW_CONFIG_TEST_UNSET\"",
                "",
                ": `http.api_token_env`: environment variable `DW_CONFIG_TEST_UNSET` is not set",
            ),
            (
                "max_connections = 0",
                "",
                ": `http.max_connections`: must be at least 1",
            ),
            (
                "metrics_listen = \"9465\"",
                "",
                ": `http.metrics_listen`: `9465`: invalid socket address syntax (write e.g. 0.0.0.0:9465)",
            ),
        ];
        for (http, rest, message) in cases {
            assert_eq!(resolve(http, rest).unwrap_err(), message, "{http}");
        }
    }

    #[test]
    fn file_values_resolve_relative_to_the_file_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("driftwatch.toml");
        std::fs::write(
            &path,
            "watch = [\"lake\"]\nrules = \"rules\"\n[lake]\nsettle = \"500ms\"\nmode = \"poll\"\n\
             [evaluation]\nconcurrency = 3\nmemory_limit = \"256MiB\"\ntimeout = \"90s\"\n[http]\nlisten = \"127.0.0.1:0\"\n",
        )
        .unwrap();
        let s = Settings::resolve(Some(&path), &Overrides::default()).unwrap();
        assert_eq!(s.watch, vec![dir.path().join("lake")]);
        assert_eq!(s.rules, dir.path().join("rules"));
        assert_eq!(s.state, dir.path().join("lake").join(".driftwatch"));
        assert_eq!(s.settle, Duration::from_millis(500));
        assert_eq!(s.mode, WatchMode::Poll);
        assert_eq!(s.concurrency, 3);
        assert_eq!(s.memory_limit, 256 << 20);
        assert_eq!(s.evaluation_timeout, Duration::from_secs(90));
        let flags = Overrides {
            settle: Some("1s".to_string()),
            concurrency: Some(1),
            listen: Some("127.0.0.1:9999".to_string()),
            ..Overrides::default()
        };
        let s = Settings::resolve(Some(&path), &flags).unwrap();
        assert_eq!(s.settle, Duration::from_secs(1));
        assert_eq!(s.concurrency, 1);
        assert_eq!(s.listen.port(), 9999);
    }

    #[test]
    fn unknown_keys_are_errors_with_line_and_column() {
        let text = "watch = [\"lake\"]\n[lake]\nsetle = \"2s\"\n";
        let e = ConfigFile::parse(Path::new("d.toml"), text)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("d.toml:3:1: unknown field `setle`"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key_and_origin() {
        let flags = Overrides {
            settle: Some("soon".to_string()),
            ..overrides("lake", "rules")
        };
        let e = Settings::resolve(None, &flags).unwrap_err().to_string();
        assert!(e.starts_with("command line: `lake.settle`:"), "{e}");
        let e = Settings::resolve(None, &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no folder to watch"), "{e}");
    }

    #[test]
    fn schema_lists_sections() {
        let schema = json_schema().to_string();
        for key in [
            "watch",
            "lake",
            "settle",
            "evaluation",
            "http",
            "retention",
            "sources",
            "max_pending_events",
            "metrics_listen",
            "allowed_hosts",
            "api_token_env",
            "max_connections",
            "header_timeout",
            "body_budget",
            "infer_schema",
        ] {
            assert!(schema.contains(&format!("\"{key}\"")), "{key}");
        }
    }
}
