//! The agent's HTTP endpoints: `/healthz` (the process answers), `/readyz`
//! (the start-up listing is done and its batches are queued), `/status`
//! (JSON: per dataset the counts and latest results), `/metrics`, and the
//! webhook outbox: `GET /webhooks` and `POST /webhooks/{event_id}/retry`.
//! `driftwatch status` and `driftwatch webhooks` build the same documents
//! from the store when no agent runs (the store is locked while one does).
//! Every route sits behind the `Host` check and gets the security headers
//! ([`super::access`]); `metrics_router` is the subset for `metrics_listen`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::Path;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::Shared;
use crate::state::{StateError, Store};

/// How many recent results `/status` shows per dataset.
pub const RECENT_RESULTS: usize = 10;

/// The `/status` document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusDocument {
    /// The running agent; null when read from the store of a stopped agent.
    pub agent: Option<AgentStatus>,
    /// One entry per dataset, by name.
    pub datasets: Vec<DatasetStatus>,
    /// Webhook outbox counts per webhook.
    #[serde(default)]
    pub webhooks: std::collections::BTreeMap<String, crate::state::DeliveryCounts>,
    /// Stream sources (`[[sources]]`) of the running agent.
    #[serde(default)]
    pub streams: Vec<crate::sources::stream::SourceStatus>,
    /// Tables (rule files with `table:`) the running agent follows: latest
    /// and recorded version, and why one cannot be read.
    #[serde(default)]
    pub tables: Vec<crate::sources::table::TableStatus>,
}

/// The `/webhooks` document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhooksDocument {
    /// The configured webhooks (empty when read from a stopped agent's store).
    pub webhooks: Vec<WebhookInfo>,
    /// Every event in the outbox, oldest first, without bodies.
    pub deliveries: Vec<serde_json::Value>,
}

/// A configured webhook.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookInfo {
    /// Name.
    pub name: String,
    /// URL.
    pub url: String,
    /// Preset (`generic`, `github`, `airflow`, `template`).
    pub preset: String,
    /// Whether it only logs.
    pub dry_run: bool,
    /// Datasets listed in its config (rule files may add more).
    pub datasets: Vec<String>,
}

/// The agent part of `/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentStatus {
    /// driftwatch version.
    pub version: String,
    /// Instance id.
    pub instance: String,
    /// Start time (RFC 3339).
    pub started_at: String,
    /// Whether the start-up listing is done.
    pub ready: bool,
    /// The rules folder or file.
    pub rules: String,
    /// Rule files loaded.
    pub rule_files: usize,
    /// The last rejected reload (file:line:col: reason); null when the rules on disk are running.
    pub rules_error: Option<String>,
    /// Watched folders.
    pub watch: Vec<String>,
    /// Batches waiting to be complete (settling).
    pub pending: u64,
    /// Batches queued or being evaluated.
    pub queued: u64,
    /// Batches being evaluated now.
    pub running: u64,
    /// Queue capacity.
    pub queue_capacity: usize,
    /// Files in the latest listing that no rule file matches.
    pub unmatched_files: u64,
    /// Set while environment faults keep batches from being evaluated or
    /// recorded (they wait and are tried again); null when healthy.
    #[serde(default)]
    pub degraded: Option<super::health::Degraded>,
}

/// One dataset in `/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatasetStatus {
    /// Dataset name.
    pub dataset: String,
    /// Batch versions seen: evaluated + queued.
    pub seen: u64,
    /// Evaluated (any outcome).
    pub evaluated: u64,
    /// Failed (an error-severity check or drift).
    pub failed: u64,
    /// Could not be evaluated.
    pub errored: u64,
    /// Table versions recorded as skipped (they added no data).
    #[serde(default)]
    pub skipped: u64,
    /// Queued or being evaluated.
    pub queued: u64,
    /// Rows evaluated.
    pub rows: u64,
    /// When the last batch was evaluated (RFC 3339); null before the first.
    pub last_evaluated_at: Option<String>,
    /// The latest results, newest first.
    pub recent: Vec<RecentResult>,
}

/// A summary of one stored report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecentResult {
    /// Position in the results log.
    pub seq: u64,
    /// The batch.
    pub source: String,
    /// When (RFC 3339).
    pub evaluated_at: Option<String>,
    /// Rows.
    pub rows: Option<u64>,
    /// Passed.
    pub passed: bool,
    /// Why it could not be evaluated.
    pub error: Option<String>,
    /// A table version recorded as skipped: why (it added no data).
    #[serde(default)]
    pub skipped: Option<String>,
    /// Names of checks that failed or could not be evaluated.
    pub failed_checks: Vec<String>,
    /// Dataset drift; null without a drift section.
    pub dataset_drift: Option<bool>,
    /// Drifted columns.
    pub drifted_columns: Vec<String>,
}

impl RecentResult {
    /// Summarizes a results-log line.
    pub fn from_line(seq: u64, line: &str) -> Self {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        let report = v.pointer("/reports/0").cloned().unwrap_or_default();
        let strings = |items: Option<&Vec<serde_json::Value>>,
                       keep: &dyn Fn(&serde_json::Value) -> bool,
                       field: &str| {
            items
                .map(|a| {
                    a.iter()
                        .filter(|x| keep(x))
                        .filter_map(|x| x.get(field).and_then(|n| n.as_str()).map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        RecentResult {
            seq,
            source: report["source"].as_str().unwrap_or_default().to_string(),
            evaluated_at: v
                .pointer("/agent/evaluated_at")
                .and_then(|t| t.as_str())
                .map(String::from),
            rows: report["rows"].as_u64(),
            passed: report["passed"].as_bool().unwrap_or(false),
            error: report["error"].as_str().map(String::from),
            skipped: report["table"]["skipped"].as_str().map(String::from),
            failed_checks: strings(
                report["checks"].as_array(),
                // A skipped check (an `anomaly` check still learning) did not fail.
                &|c| matches!(c["status"].as_str(), Some("fail" | "error")),
                "name",
            ),
            dataset_drift: report["drift"]["dataset_drift"].as_bool(),
            drifted_columns: strings(
                report["drift"]["columns"].as_array(),
                &|c| c["drifted"].as_bool() == Some(true),
                "column",
            ),
        }
    }
}

/// The dataset part of a status document, from the store. `queued` gives
/// the queued count per dataset (empty for a stopped agent).
pub fn datasets_from_store(
    store: &Store,
    queued: &std::collections::HashMap<String, u64>,
    known: &[String],
) -> Result<Vec<DatasetStatus>, StateError> {
    let mut counters: std::collections::BTreeMap<String, crate::state::DatasetCounters> =
        store.datasets()?.into_iter().collect();
    for name in known.iter().chain(queued.keys()) {
        counters.entry(name.clone()).or_default();
    }
    let mut out = Vec::new();
    for (dataset, c) in counters {
        let q = queued.get(&dataset).copied().unwrap_or(0);
        let recent = store
            .latest_reports(&dataset, RECENT_RESULTS)?
            .into_iter()
            .map(|(seq, line)| RecentResult::from_line(seq, &line))
            .collect();
        out.push(DatasetStatus {
            seen: c.evaluated + q,
            evaluated: c.evaluated,
            failed: c.failed,
            errored: c.errored,
            skipped: c.skipped,
            queued: q,
            rows: c.rows,
            last_evaluated_at: (c.evaluated > 0)
                .then(|| chrono::DateTime::from_timestamp(c.last_evaluated_at, 0))
                .flatten()
                .map(|t| t.to_rfc3339()),
            recent,
            dataset,
        });
    }
    Ok(out)
}

/// The status document of a stopped agent, from its store.
pub fn status_from_store(store: &Store) -> Result<StatusDocument, StateError> {
    Ok(StatusDocument {
        agent: None,
        datasets: datasets_from_store(store, &Default::default(), &[])?,
        webhooks: store.delivery_counts()?,
        streams: Vec::new(),
        // What the store knows: each table's recorded version (the format
        // as the folder shows it now; the latest version needs the running
        // agent).
        tables: store
            .table_cursors()?
            .into_iter()
            .map(
                |(dataset, location, version)| crate::sources::table::TableStatus {
                    dataset,
                    format: crate::inputs::table_format(std::path::Path::new(&location))
                        .map(|f| f.name().to_string())
                        .unwrap_or_default(),
                    location,
                    recorded_version: Some(version),
                    ..Default::default()
                },
            )
            .collect(),
    })
}

/// The webhooks document of a stopped agent, from its store.
pub fn webhooks_from_store(store: &Store) -> Result<WebhooksDocument, StateError> {
    let mut deliveries: Vec<serde_json::Value> =
        store.deliveries()?.iter().map(|d| d.summary()).collect();
    redact_deliveries(&mut deliveries);
    Ok(WebhooksDocument {
        webhooks: Vec::new(),
        deliveries,
    })
}

/// Deliveries hold the URL they go to, and errors quote it (with its
/// token): both redacted.
fn redact_deliveries(deliveries: &mut [serde_json::Value]) {
    for d in deliveries {
        for key in ["url", "last_error"] {
            if let Some(value) = d.get_mut(key)
                && let Some(text) = value.as_str()
            {
                *value = super::access::redact_urls_in(text).into();
            }
        }
    }
}

/// `?refresh=0` turns the page's self-reload off (used by `driftwatch report`).
#[derive(Debug, Deserialize)]
struct PageQuery {
    refresh: Option<u32>,
}

fn refresh(query: &PageQuery) -> Option<u32> {
    match query.refresh {
        Some(0) => None,
        Some(n) => Some(n),
        None => Some(super::pages::REFRESH_SECONDS),
    }
}

fn html_page(text: String) -> axum::response::Response {
    (
        [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
        text,
    )
        .into_response()
}

async fn index(
    State(shared): State<Arc<Shared>>,
    axum::extract::Query(query): axum::extract::Query<PageQuery>,
) -> impl IntoResponse {
    let shared2 = shared.clone();
    match tokio::task::spawn_blocking(move || build_status(&shared2)).await {
        Ok(Ok(doc)) => html_page(super::pages::index_page(&doc.datasets, refresh(&query))),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn report_page(
    State(shared): State<Arc<Shared>>,
    Path(dataset): Path<String>,
    axum::extract::Query(query): axum::extract::Query<PageQuery>,
) -> impl IntoResponse {
    let store = shared.store.clone();
    let name = dataset.clone();
    let refresh = refresh(&query);
    match tokio::task::spawn_blocking(move || super::pages::dataset_page(&store, &name, refresh))
        .await
    {
        Ok(Ok(Some(text))) => html_page(text),
        Ok(Ok(None)) => (
            StatusCode::NOT_FOUND,
            format!("no report of dataset `{dataset}` yet\n"),
        )
            .into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn webhooks(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let store = shared.store.clone();
    let configured: Vec<WebhookInfo> = shared
        .settings
        .lock()
        .map(|s| {
            s.webhooks
                .iter()
                .map(|w| WebhookInfo {
                    name: w.name.clone(),
                    // Tokens ride in userinfo and query strings.
                    url: super::access::redact_url(&w.url),
                    preset: w.preset.name().to_string(),
                    dry_run: w.dry_run,
                    datasets: w.datasets.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    match tokio::task::spawn_blocking(move || webhooks_from_store(&store)).await {
        Ok(Ok(mut doc)) => {
            doc.webhooks = configured;
            redact_deliveries(&mut doc.deliveries);
            (StatusCode::OK, Json(doc)).into_response()
        }
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn retry_webhook(
    State(shared): State<Arc<Shared>>,
    Path(event_id): Path<String>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    // Re-sending a retraining event is an action: with an API token it takes
    // the token; without one, the header a cross-site form cannot send.
    match &shared.http.api_token_env {
        Some(var) if !super::access::carries_token(&headers, var) => {
            return super::access::unauthorized(
                "missing or wrong API token (`Authorization: Bearer …`, see `http.api_token_env`)",
            );
        }
        Some(_) => {}
        None if !headers.contains_key(super::access::REQUEST_HEADER) => {
            return (
                StatusCode::FORBIDDEN,
                "send the header `X-Driftwatch-Request: 1` (as `driftwatch webhooks retry` does): it proves the request does not come from a web page\n",
            )
                .into_response();
        }
        None => {}
    }
    let store = shared.store.clone();
    let now = chrono::Utc::now().timestamp_millis();
    let id = event_id.clone();
    match tokio::task::spawn_blocking(move || store.retry_delivery(&id, now)).await {
        Ok(Ok(crate::state::RetryResult::Requeued(d))) => {
            tracing::info!(event_id = %event_id, webhook = %d.webhook, "dead letter re-queued");
            shared.webhook_wake.notify_one();
            (StatusCode::OK, Json(d.summary())).into_response()
        }
        Ok(Ok(crate::state::RetryResult::NotFound)) => (
            StatusCode::NOT_FOUND,
            format!("no webhook event `{event_id}` in the outbox\n"),
        )
            .into_response(),
        Ok(Ok(crate::state::RetryResult::NotDead(state))) => (
            StatusCode::CONFLICT,
            format!(
                "event `{event_id}` is {}: only dead letters (with a body) can be re-queued\n",
                state.name()
            ),
        )
            .into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// Every endpoint, for `listen`.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let allowed = Arc::new(shared.http.allowed_hosts.clone());
    guarded(
        probes()
            .route("/status", get(status))
            .route("/", get(index))
            // Browsers ask for it on every page; no icon is not an error.
            .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
            .route("/report/{dataset}", get(report_page))
            .route("/webhooks", get(webhooks))
            .route("/webhooks/{event_id}/retry", post(retry_webhook))
            // The handler reads the body itself, under its own `max_body`.
            .route("/ingest/{dataset}", post(super::ingest::ingest))
            .with_state(shared),
        allowed,
    )
}

/// `/metrics`, `/healthz` and `/readyz` only, for `metrics_listen`:
/// anything else is 404 there.
pub(crate) fn metrics_router(shared: Arc<Shared>) -> Router {
    let allowed = Arc::new(shared.http.allowed_hosts.clone());
    guarded(probes().with_state(shared), allowed)
}

fn probes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// The Host check on every route (404s included), security headers on every answer.
fn guarded(router: Router, allowed: Arc<Vec<String>>) -> Router {
    router
        .layer(axum::middleware::from_fn_with_state(
            allowed,
            super::access::check_host,
        ))
        .layer(axum::middleware::map_response(
            super::access::security_headers,
        ))
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        shared.telemetry.render_prometheus(),
    )
}

/// 200 while the agent makes progress; 503 once environment faults have
/// kept it from recording anything for [`super::health::UNHEALTHY_AFTER`].
async fn healthz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    if shared.health.stuck() {
        let reason = shared
            .health
            .degraded()
            .map(|d| d.reason)
            .unwrap_or_default();
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("stuck: nothing recorded for a while because of the environment: {reason}\n"),
        );
    }
    (StatusCode::OK, "ok\n".to_string())
}

async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    if !shared.lake.ready.load(Ordering::Relaxed) || !shared.objects.ready.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: the start-up listing is not done\n".to_string(),
        );
    }
    if let Some(d) = shared.degraded() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "degraded since {}: {} batch(es) wait to be tried again: {}\n",
                d.since, d.retrying, d.reason
            ),
        );
    }
    (StatusCode::OK, "ready\n".to_string())
}

async fn status(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let shared2 = shared.clone();
    let built = tokio::task::spawn_blocking(move || build_status(&shared2)).await;
    match built {
        Ok(Ok(doc)) => (StatusCode::OK, Json(doc)).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

fn build_status(shared: &Shared) -> Result<StatusDocument, StateError> {
    let mut queued: std::collections::HashMap<String, u64> = Default::default();
    if let Ok(set) = shared.in_flight.lock() {
        for (dataset, _) in set.iter() {
            *queued.entry(dataset.clone()).or_default() += 1;
        }
    }
    let rules = shared.rules.borrow().clone();
    let known: Vec<String> = rules.iter().map(|r| r.dataset.clone()).collect();
    let datasets = datasets_from_store(&shared.store, &queued, &known)?;
    let settings = shared.settings.lock().map(|s| s.clone()).ok();
    Ok(StatusDocument {
        agent: Some(AgentStatus {
            version: env!("CARGO_PKG_VERSION").to_string(),
            instance: shared.instance.clone(),
            started_at: shared.started_at.to_rfc3339(),
            ready: shared.lake.ready.load(Ordering::Relaxed)
                && shared.objects.ready.load(Ordering::Relaxed),
            rules: settings
                .as_ref()
                .map(|s| s.rules.display().to_string())
                .unwrap_or_default(),
            rule_files: rules.len(),
            rules_error: shared.rules_error.lock().ok().and_then(|e| e.clone()),
            watch: settings
                .as_ref()
                .map(|s| {
                    s.watch
                        .iter()
                        .map(|w| w.display().to_string())
                        .chain(s.watch_objects.iter().map(|u| u.to_string()))
                        .collect()
                })
                .unwrap_or_default(),
            pending: shared.lake.pending.load(Ordering::Relaxed)
                + shared.objects.pending.load(Ordering::Relaxed),
            queued: queued.values().sum(),
            running: shared.running.load(Ordering::Relaxed),
            queue_capacity: shared.queue_capacity,
            unmatched_files: shared.lake.unmatched.load(Ordering::Relaxed)
                + shared.objects.unmatched.load(Ordering::Relaxed),
            degraded: shared.degraded(),
        }),
        datasets,
        webhooks: shared.store.delivery_counts()?,
        streams: shared
            .streams
            .iter()
            .map(|s| s.stats.status(&s.config, &s.dead_letters))
            .collect(),
        tables: shared
            .tables
            .snapshot()
            .into_iter()
            .map(|mut t| {
                // The store is the record: fresher than the watcher's last look.
                if let Ok(Some(v)) = shared.store.table_cursor(&t.dataset, &t.location) {
                    t.recorded_version = Some(v);
                }
                t
            })
            .collect(),
    })
}
