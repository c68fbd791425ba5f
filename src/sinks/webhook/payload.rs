//! The webhook event (versioned JSON, `docs/webhook.md`) and how it is
//! shaped for common receivers.
//!
//! The generic body is the [`Event`] itself. Presets wrap it for receivers
//! with their own API: GitHub `repository_dispatch` (`event_type` +
//! `client_payload`, which GitHub limits to 10 top-level keys, so it carries
//! a summary) and Airflow's REST API DAG-run trigger (`dag_run_id` derived
//! from the event id, so a redelivery is refused by Airflow as a duplicate,
//! and the event as `conf`). A custom template substitutes `{{path}}`
//! placeholders with JSON-encoded values from the event, and the result must
//! be valid JSON, so no value can break out of its place.

use serde::Serialize;

use super::policy::{BatchRef, Reason};
use crate::report::BatchReport;

/// Version of the event schema.
pub const EVENT_VERSION: u32 = 1;

/// One trigger, as sent.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Always `driftwatch.webhook`.
    pub schema: &'static str,
    /// [`EVENT_VERSION`].
    pub version: u32,
    /// Unique id; also the `Idempotency-Key` header.
    pub event_id: String,
    /// When the trigger fired (RFC 3339).
    pub created_at: String,
    /// The webhook's name.
    pub webhook: String,
    /// The dataset.
    pub dataset: String,
    /// Why it fired.
    pub reason: Reason,
    /// The batches that made it fire, oldest first.
    pub batches: Vec<BatchRef>,
    /// Checks that did not pass on the latest batch.
    pub failing_checks: Vec<FailingCheck>,
    /// Columns that drifted on the latest batch.
    pub drifted_columns: Vec<DriftedColumn>,
    /// Drifted share of the latest batch.
    pub drifted_share: Option<f64>,
    /// The agent that sent it.
    pub agent: AgentRef,
}

/// A check that did not pass.
#[derive(Debug, Clone, Serialize)]
pub struct FailingCheck {
    /// Name.
    pub name: String,
    /// `error` or `warn`.
    pub severity: String,
    /// `fail` or `error`.
    pub status: String,
    /// Failing rows (row-level checks).
    pub failing_rows: Option<u64>,
    /// Failing fraction (row-level checks).
    pub fraction: Option<f64>,
    /// Explanation.
    pub message: Option<String>,
}

/// A drifted column.
#[derive(Debug, Clone, Serialize)]
pub struct DriftedColumn {
    /// Column.
    pub column: String,
    /// Test.
    pub test: Option<String>,
    /// Statistic.
    pub statistic: Option<f64>,
    /// p-value (p-value tests).
    pub p_value: Option<f64>,
    /// Threshold.
    pub threshold: Option<f64>,
}

/// The sending agent.
#[derive(Debug, Clone, Serialize)]
pub struct AgentRef {
    /// Instance id.
    pub instance: String,
    /// driftwatch version.
    pub version: String,
}

impl Event {
    /// An event for `webhook` on `dataset`, described by the latest batch's report.
    pub fn new(
        event_id: String,
        created_at: String,
        webhook: &str,
        latest: &BatchReport,
        reason: Reason,
        batches: Vec<BatchRef>,
        instance: &str,
    ) -> Self {
        let failing_checks = latest
            .checks
            .iter()
            .filter(|c| c.status.is_problem())
            .map(|c| FailingCheck {
                name: c.name.clone(),
                severity: match c.severity {
                    crate::rules::Severity::Error => "error".to_string(),
                    crate::rules::Severity::Warn => "warn".to_string(),
                },
                status: c.status.to_string(),
                failing_rows: c.failing_rows,
                fraction: c.fraction,
                message: c.message.clone(),
            })
            .collect();
        let drifted_columns = latest
            .drift
            .iter()
            .flat_map(|d| d.columns.iter().filter(|c| c.drifted))
            .map(|c| DriftedColumn {
                column: c.column.clone(),
                test: c.test.map(|t| t.name().to_string()),
                statistic: c.statistic,
                p_value: c.p_value,
                threshold: c.threshold,
            })
            .collect();
        Self {
            schema: "driftwatch.webhook",
            version: EVENT_VERSION,
            event_id,
            created_at,
            webhook: webhook.to_string(),
            dataset: latest.dataset.clone(),
            reason,
            batches,
            failing_checks,
            drifted_columns,
            drifted_share: latest.drift.as_ref().and_then(|d| d.drifted_share),
            agent: AgentRef {
                instance: instance.to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
            },
        }
    }
}

impl Event {
    /// A representative event (one batch, one failing check, one drifted
    /// column), used to validate body templates when the config is loaded.
    pub fn sample() -> Self {
        Self {
            schema: "driftwatch.webhook",
            version: EVENT_VERSION,
            event_id: "00000000-0000-4000-8000-000000000000".to_string(),
            created_at: "2026-01-01T00:00:00Z".to_string(),
            webhook: "sample".to_string(),
            dataset: "sample".to_string(),
            reason: Reason {
                kind: "dataset_drift",
                description: "dataset drift".to_string(),
            },
            batches: vec![BatchRef {
                source: "sample.parquet".to_string(),
                seq: 1,
                evaluated_at: "2026-01-01T00:00:00Z".to_string(),
                rows: Some(1),
            }],
            failing_checks: vec![FailingCheck {
                name: "check".to_string(),
                severity: "error".to_string(),
                status: "fail".to_string(),
                failing_rows: Some(1),
                fraction: Some(1.0),
                message: None,
            }],
            drifted_columns: vec![DriftedColumn {
                column: "column".to_string(),
                test: Some("ks".to_string()),
                statistic: Some(1.0),
                p_value: Some(0.0),
                threshold: Some(0.05),
            }],
            drifted_share: Some(1.0),
            agent: AgentRef {
                instance: "sample".to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
            },
        }
    }
}

/// The body shape a receiver expects.
#[derive(Debug, Clone, PartialEq)]
pub enum Preset {
    /// The event as is.
    Generic,
    /// GitHub `POST /repos/{owner}/{repo}/dispatches`.
    GithubDispatch {
        /// The `event_type` workflows listen for (`on: repository_dispatch: types: [...]`).
        event_type: String,
    },
    /// Airflow `POST /api/v1/dags/{dag_id}/dagRuns`.
    AirflowDagRun,
    /// A JSON template with `{{path}}` placeholders (`{{dataset}}`, `{{reason.kind}}`, `{{event}}`…).
    Template(String),
}

impl Preset {
    /// The name used in the config file.
    pub fn name(&self) -> &'static str {
        match self {
            Preset::Generic => "generic",
            Preset::GithubDispatch { .. } => "github",
            Preset::AirflowDagRun => "airflow",
            Preset::Template(_) => "template",
        }
    }
}

/// Renders the request body.
pub fn render(preset: &Preset, event: &Event) -> Result<Vec<u8>, String> {
    let value = serde_json::to_value(event).map_err(|e| e.to_string())?;
    let body = match preset {
        Preset::Generic => value,
        Preset::GithubDispatch { event_type } => serde_json::json!({
            "event_type": event_type,
            "client_payload": {
                "event_id": event.event_id,
                "dataset": event.dataset,
                "webhook": event.webhook,
                "reason": event.reason.kind,
                "description": event.reason.description,
                "drifted_share": event.drifted_share,
                "drifted_columns": event.drifted_columns.iter().map(|c| c.column.clone()).collect::<Vec<_>>(),
                "failing_checks": event.failing_checks.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
                "batches": event.batches.iter().map(|b| b.source.clone()).collect::<Vec<_>>(),
                "created_at": event.created_at,
            }
        }),
        Preset::AirflowDagRun => serde_json::json!({
            "dag_run_id": format!("driftwatch-{}", event.event_id),
            "conf": value,
            "note": format!("driftwatch: {} on {}", event.reason.description, event.dataset),
        }),
        Preset::Template(template) => {
            let text = substitute(template, &value)?;
            serde_json::from_str::<serde_json::Value>(&text)
                .map_err(|e| format!("the body template does not give valid JSON: {e}"))?
        }
    };
    serde_json::to_vec(&body).map_err(|e| e.to_string())
}

/// Replaces each `{{path}}` with the JSON encoding of that value of the event
/// (`event` is the whole event; `a.b` walks objects; `batches.0` arrays).
pub fn substitute(template: &str, event: &serde_json::Value) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| "unclosed `{{` in the body template".to_string())?;
        let path = after[..end].trim();
        let value = if path == "event" {
            Some(event)
        } else {
            path.split('.').try_fold(event, |v, key| match v {
                serde_json::Value::Array(items) => {
                    key.parse::<usize>().ok().and_then(|i| items.get(i))
                }
                _ => v.get(key),
            })
        };
        let value = value.ok_or_else(|| format!("`{{{{{path}}}}}`: the event has no `{path}`"))?;
        out.push_str(&value.to_string());
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        let mut latest =
            BatchReport::failed("s".into(), "flights".into(), "r".into(), String::new());
        latest.error = None;
        Event::new(
            "0b7c".into(),
            "2026-11-26T12:00:00Z".into(),
            "retrain",
            &latest,
            Reason {
                kind: "dataset_drift",
                description: "dataset drift".into(),
            },
            vec![BatchRef {
                source: "lake/a.parquet".into(),
                seq: 7,
                evaluated_at: "2026-11-26T11:59:59Z".into(),
                rows: Some(10),
            }],
            "host-1-2",
        )
    }

    #[test]
    fn presets_shape_the_body() {
        let e = event();
        let generic: serde_json::Value =
            serde_json::from_slice(&render(&Preset::Generic, &e).unwrap()).unwrap();
        assert_eq!(generic["schema"], "driftwatch.webhook");
        assert_eq!(generic["version"], 1);
        assert_eq!(generic["event_id"], "0b7c");
        assert_eq!(generic["batches"][0]["seq"], 7);
        assert_eq!(generic["agent"]["instance"], "host-1-2");
        let github: serde_json::Value = serde_json::from_slice(
            &render(
                &Preset::GithubDispatch {
                    event_type: "retrain".into(),
                },
                &e,
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(github["event_type"], "retrain");
        assert_eq!(github["client_payload"]["event_id"], "0b7c");
        assert!(github["client_payload"].as_object().unwrap().len() <= 10);
        let airflow: serde_json::Value =
            serde_json::from_slice(&render(&Preset::AirflowDagRun, &e).unwrap()).unwrap();
        assert_eq!(airflow["dag_run_id"], "driftwatch-0b7c");
        assert_eq!(airflow["conf"]["dataset"], "flights");
    }

    #[test]
    fn the_documented_example_has_the_shape_of_a_real_event() {
        let doc = include_str!("../../../docs/webhook.md");
        let start = doc.find("```json\n").unwrap() + "```json\n".len();
        let end = start + doc[start..].find("\n```").unwrap();
        let example: serde_json::Value = serde_json::from_str(&doc[start..end]).unwrap();
        let real = serde_json::to_value(event()).unwrap();
        let keys =
            |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&example), keys(&real));
        assert_eq!(keys(&example["reason"]), keys(&real["reason"]));
        assert_eq!(keys(&example["batches"][0]), keys(&real["batches"][0]));
        assert_eq!(keys(&example["agent"]), keys(&real["agent"]));
        assert_eq!(example["version"], EVENT_VERSION);
        let check = serde_json::to_value(FailingCheck {
            name: String::new(),
            severity: String::new(),
            status: String::new(),
            failing_rows: None,
            fraction: None,
            message: None,
        })
        .unwrap();
        assert_eq!(keys(&example["failing_checks"][0]), keys(&check));
        let column = serde_json::to_value(DriftedColumn {
            column: String::new(),
            test: None,
            statistic: None,
            p_value: None,
            threshold: None,
        })
        .unwrap();
        assert_eq!(keys(&example["drifted_columns"][0]), keys(&column));
        // The documented Python check agrees with our signature format.
        assert!(doc.contains(
            r#""sha256=" + hmac.new(secret, ts.encode() + b"." + body, hashlib.sha256).hexdigest()"#
        ));
    }

    proptest::proptest! {
        #[test]
        fn any_value_stays_inside_its_placeholder(dataset in "\\PC{0,40}") {
            let mut e = event();
            e.dataset = dataset.clone();
            let body = render(&Preset::Template(r#"{"d": {{dataset}}, "k": 1}"#.into()), &e).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            proptest::prop_assert_eq!(v["d"].as_str(), Some(dataset.as_str()));
            proptest::prop_assert_eq!(v.as_object().unwrap().len(), 2);
        }
    }

    #[test]
    fn templates_insert_json_values_and_must_give_json() {
        let e = event();
        let t = Preset::Template(
            r#"{"text": {{reason.description}}, "first": {{batches.0.source}}, "all": {{event}}}"#
                .into(),
        );
        let body: serde_json::Value = serde_json::from_slice(&render(&t, &e).unwrap()).unwrap();
        assert_eq!(body["text"], "dataset drift");
        assert_eq!(body["first"], "lake/a.parquet");
        assert_eq!(body["all"]["event_id"], "0b7c");
        // A value with quotes cannot break out: it is JSON-encoded.
        let mut tricky = e.clone();
        tricky.dataset = "x\", \"admin\": true, \"y\": \"".into();
        let body: serde_json::Value = serde_json::from_slice(
            &render(&Preset::Template(r#"{"d": {{dataset}}}"#.into()), &tricky).unwrap(),
        )
        .unwrap();
        assert_eq!(body.as_object().unwrap().len(), 1);
        assert!(
            render(&Preset::Template("{{nope}}".into()), &e)
                .unwrap_err()
                .contains("no `nope`")
        );
        assert!(
            render(&Preset::Template("{ {{dataset}".into()), &e)
                .unwrap_err()
                .contains("unclosed")
        );
        assert!(
            render(&Preset::Template("not json {{dataset}}".into()), &e)
                .unwrap_err()
                .contains("valid JSON")
        );
    }
}
