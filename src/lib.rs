//! driftwatch: a streaming data-quality and drift agent.
//!
//! Declarative rules (YAML) are evaluated against Parquet batches in a single
//! DataFusion scan per batch; the result is a [`report::Report`] that
//! renderers and sinks consume.
//!
//! # Layout
//!
//! The flow reads left to right: sources → engine → report → sinks, with the
//! agent wiring them together for `driftwatch run` and `check` doing the same
//! once for `driftwatch check`.
//!
//! - [`rules`]: the rule-file language. Parses YAML with source spans and
//!   validates everything that can be known without data, so every error names
//!   `file:line:col`. Pure logic, no DataFusion plans.
//! - [`engine`]: compiles a rule file into one aggregate plan over one Parquet
//!   scan, runs it under a bounded memory pool, and turns the single result row
//!   into verdicts. Knows nothing of where batches come from.
//! - [`profile`]: column profiles — counts, moments, exact values while few,
//!   a deterministic quantile sketch, frequencies, HLL — mergeable and stored as
//!   versioned reference files. Pure logic.
//! - [`drift`]: the statistical drift tests (ks, chisquare, z, wasserstein,
//!   jensenshannon, …) as pure functions over samples or counts, checked
//!   against scipy reference values. No DataFusion, no I/O.
//! - [`report`]: the report value, its versioned JSON form, the terminal
//!   table and the self-contained HTML report (charts from profiles).
//!   Read-only consumers of engine results.
//! - [`anomaly`]: the `anomaly` check's method — a metric judged against
//!   its own history with robust, seasonal bands — and the history file of
//!   `check --history`. Pure logic.
//! - [`evaluate`]: one batch against one rule file with its drift reference
//!   (a profile file or a rolling window): what `check` and the agent share.
//! - [`inputs`]: expands the paths given to `check` into batches and matches
//!   each against the rule files' `match` globs.
//! - [`location`]: object-store locations (`s3://`, `az://`): telling them
//!   from local paths, building store clients from the environment and
//!   `[lake.object_store]`, listing prefixes, keeping secrets out of messages.
//! - [`check`]: the one-shot `driftwatch check`: inputs × rule files → report.
//! - [`sources`]: where the agent's batches come from — the lake watcher
//!   (events, listings, settle time, footers, `batch: directory`), Hive
//!   partition parsing, and event streams (`sources::stream`: HTTP ingest,
//!   NDJSON files and Kafka windowed into batches, a write-ahead log, dead
//!   letters, offsets committed after the record).
//! - [`state`]: the agent's durable store (redb): evaluated batch versions,
//!   reports, counters, rolling-reference profiles, and the webhook outbox
//!   with its policy state. The exactly-once record.
//! - [`sinks`]: where reports go — the results log (JSON lines, repaired from
//!   the store after a crash), telemetry (OpenTelemetry metrics, traces and
//!   logs over OTLP; the same metrics on `/metrics` for Prometheus) and
//!   retraining webhooks (policy, signed events, retried delivery).
//! - [`tls`]: the process-wide rustls provider every HTTP client needs.
//! - [`config`]: `driftwatch.toml`, its JSON Schema, flags over file.
//! - [`agent`]: `driftwatch run` — queue, workers, the evaluation runtime,
//!   HTTP endpoints (status, metrics, live HTML pages, webhook outbox, event
//!   ingest) behind the Host check, API token and security headers
//!   (`agent::access`) and an accept loop with connection budgets
//!   (`agent::serve`), the webhook delivery loop, reload, idle memory
//!   release, shutdown, and its own health (`agent::health`: environment
//!   faults are retried with backoff, never recorded as verdicts, and make
//!   the agent *degraded* until they clear).
//! - [`suggest`]: `rules suggest` — a commented starter rule file learned
//!   from data's profile, each check with its evidence. Pure logic.
//! - [`demo`]: a deterministic generator of flights-shaped Parquet batches
//!   and the live demo, used by `driftwatch demo`, benchmarks and tests.
//! - `cli` (binary only): argument parsing, exit codes; the only place that
//!   uses `anyhow`.

pub mod agent;
pub mod anomaly;
pub mod check;
pub mod config;
pub mod demo;
pub mod drift;
pub mod engine;
pub mod evaluate;
pub mod inputs;
pub mod location;
pub mod profile;
pub mod report;
pub mod rules;
pub mod sinks;
pub mod sources;
pub mod state;
pub mod suggest;
pub mod tls;
