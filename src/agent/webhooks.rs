//! The agent's side of retraining webhooks: which webhooks watch a batch,
//! checking that rule files name only configured webhooks, and the delivery
//! loop that drains the outbox.
//!
//! The loop is the only sender. It reads due deliveries from the store,
//! makes at most [`PARALLEL_ATTEMPTS`] HTTP attempts at once per webhook
//! (never two for the same event), and records each outcome in its own
//! transaction:
//! delivered, pending again at `now + backoff` (or `Retry-After`), or dead.
//! It sleeps until the next delivery is due, a batch fires a new event, or
//! `retry` re-queues one. Attempts cut short by shutdown or a crash leave
//! their delivery pending, so the next start sends it again (same event id).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::Shared;
use crate::rules::{RuleError, RuleFile};
use crate::sinks::telemetry::WebhookAttempt;
use crate::sinks::webhook::WebhookConfig;
use crate::sinks::webhook::deliver::{self, Outcome};
use crate::state::{AttemptRecord, Delivery, DeliveryState};

/// HTTP attempts in flight at once, per webhook. Per webhook, not over all
/// of them: a receiver that accepts connections and never answers holds each
/// attempt for the webhook's whole `timeout`, and must not take the slots of
/// the other webhooks' receivers.
pub const PARALLEL_ATTEMPTS: usize = 4;
/// Due deliveries looked at, beyond those in flight, to find when the loop
/// must wake next (the first one whose webhook has a free slot).
const NEXT_DUE_SCAN: usize = 256;
/// Longest sleep between two reads of the outbox.
const IDLE_WAKE: Duration = Duration::from_secs(30);

/// Every webhook a rule file names must be configured.
pub(crate) fn check_names(rules: &[RuleFile], webhooks: &[WebhookConfig]) -> Result<(), RuleError> {
    for file in rules {
        for named in &file.webhooks {
            if !webhooks.iter().any(|w| w.name == named.name) {
                let configured: Vec<&str> = webhooks.iter().map(|w| w.name.as_str()).collect();
                return Err(RuleError::Invalid {
                    location: named.location.clone(),
                    message: if configured.is_empty() {
                        format!(
                            "webhook `{}` is not configured: the agent's config has no [[webhooks]]",
                            named.name
                        )
                    } else {
                        format!(
                            "webhook `{}` is not configured (configured: {})",
                            named.name,
                            configured.join(", ")
                        )
                    },
                });
            }
        }
    }
    Ok(())
}

/// The webhooks watching batches of `rule_file`.
pub(crate) fn watching(
    rule_file: &RuleFile,
    rules: &[RuleFile],
    webhooks: &[WebhookConfig],
) -> Vec<WebhookConfig> {
    webhooks
        .iter()
        .filter(|w| {
            let named_here = rule_file.webhooks.iter().any(|n| n.name == w.name);
            let named_anywhere = rules
                .iter()
                .any(|r| r.webhooks.iter().any(|n| n.name == w.name));
            w.watches(&rule_file.dataset, named_here, named_anywhere)
        })
        .cloned()
        .collect()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Drains the outbox until `stop`.
pub(crate) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut in_flight: HashSet<String> = HashSet::new();
    // Attempts in flight per webhook.
    let mut busy: HashMap<String, usize> = HashMap::new();
    // Which event (and webhook) each task carries, so even a task that
    // panicked frees them.
    let mut task_events: HashMap<tokio::task::Id, (String, String)> = HashMap::new();
    let mut clients: HashMap<String, (WebhookConfig, reqwest::Client)> = HashMap::new();
    let mut tasks: JoinSet<String> = JoinSet::new();
    loop {
        publish_backlog(&shared).await;
        let now = now_ms();
        let store = shared.store.clone();
        // As many as the wake-up below looks at: whatever it finds due now
        // is attempted in this pass (no busy loop over a skipped delivery).
        let limit = in_flight.len() + NEXT_DUE_SCAN;
        let due = match tokio::task::spawn_blocking(move || store.due_deliveries(now, limit)).await
        {
            Ok(Ok(due)) => due,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot read the webhook outbox; trying again");
                Vec::new()
            }
            Err(e) => {
                tracing::error!(error = %e, "webhook outbox task failed");
                Vec::new()
            }
        };
        let configs = shared
            .settings
            .lock()
            .map(|s| s.webhooks.clone())
            .unwrap_or_default();
        for delivery in due {
            if in_flight.contains(&delivery.event_id)
                || busy.get(&delivery.webhook).copied().unwrap_or(0) >= PARALLEL_ATTEMPTS
            {
                continue;
            }
            let Some(config) = configs.iter().find(|c| c.name == delivery.webhook) else {
                give_up(
                    &shared,
                    &delivery,
                    format!(
                        "webhook `{}` is no longer configured; re-add it and run `driftwatch webhooks retry {}`",
                        delivery.webhook, delivery.event_id
                    ),
                )
                .await;
                continue;
            };
            let max_age_ms = config.max_age.as_millis() as i64;
            if delivery.age_ms(now) >= max_age_ms {
                give_up(
                    &shared,
                    &delivery,
                    format!(
                        "not delivered within max_age ({}s) after {} attempt(s); last error: {}",
                        config.max_age.as_secs(),
                        delivery.attempts,
                        delivery.last_error.as_deref().unwrap_or("none")
                    ),
                )
                .await;
                continue;
            }
            let client = match clients.get(&config.name) {
                Some((cached, client)) if cached == config => Ok(client.clone()),
                _ => deliver::client(config).inspect(|client| {
                    clients.insert(config.name.clone(), (config.clone(), client.clone()));
                }),
            };
            in_flight.insert(delivery.event_id.clone());
            *busy.entry(delivery.webhook.clone()).or_default() += 1;
            let shared = shared.clone();
            let config = config.clone();
            let event = (delivery.event_id.clone(), delivery.webhook.clone());
            let handle = tasks.spawn(async move {
                let id = delivery.event_id.clone();
                attempt(&shared, client, &config, delivery).await;
                id
            });
            task_events.insert(handle.id(), event);
        }
        // The next due delivery that could be attempted: not in flight, its
        // webhook with a free slot. (The end of an attempt wakes the loop
        // too, and frees a slot.)
        let next_due = {
            let store = shared.store.clone();
            let limit = in_flight.len() + NEXT_DUE_SCAN;
            tokio::task::spawn_blocking(move || store.due_deliveries(i64::MAX, limit))
                .await
                .ok()
                .and_then(|r| r.ok())
                .and_then(|due| {
                    due.into_iter()
                        .find(|d| {
                            !in_flight.contains(&d.event_id)
                                && busy.get(&d.webhook).copied().unwrap_or(0) < PARALLEL_ATTEMPTS
                        })
                        .and_then(|d| d.next_attempt_at_ms)
                })
        };
        let now = now_ms();
        let sleep = match next_due {
            Some(at) => {
                Duration::from_millis((at - now).clamp(0, IDLE_WAKE.as_millis() as i64) as u64)
            }
            None => IDLE_WAKE,
        };
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = shared.webhook_wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let mut finished = vec![done];
                while let Some(done) = tasks.try_join_next_with_id() {
                    finished.push(done);
                }
                for done in finished {
                    let task = match done {
                        Ok((task, _)) => task,
                        Err(e) => {
                            tracing::error!(error = %e, "a webhook attempt task failed; its event stays pending");
                            e.id()
                        }
                    };
                    if let Some((event_id, webhook)) = task_events.remove(&task) {
                        in_flight.remove(&event_id);
                        if let Some(n) = busy.get_mut(&webhook) {
                            *n = n.saturating_sub(1);
                        }
                    }
                }
            }
        }
    }
    // Attempts in flight are abandoned; their deliveries stay pending and
    // are sent again at the next start.
    tasks.shutdown().await;
}

/// One attempt and its record.
async fn attempt(
    shared: &Arc<Shared>,
    client: Result<reqwest::Client, String>,
    config: &WebhookConfig,
    delivery: Delivery,
) {
    let number = delivery.attempts + 1;
    let attempt = match client {
        Ok(client) => {
            deliver::attempt(
                &client,
                config,
                &delivery.event_id,
                delivery.body.as_bytes(),
            )
            .await
        }
        Err(error) => deliver::Attempt {
            outcome: Outcome::Retry {
                status: None,
                retry_after: None,
                error: format!("cannot build the HTTP client: {error}"),
            },
            response: None,
            started: std::time::SystemTime::now(),
            duration: Duration::ZERO,
        },
    };
    let now = now_ms();
    let (state, next, error) = match &attempt.outcome {
        Outcome::Delivered { .. } => (DeliveryState::Delivered, None, None),
        Outcome::Dead { error, .. } => (
            DeliveryState::Dead,
            None,
            Some(format!(
                "{error}: the receiver refused the event; not retried"
            )),
        ),
        Outcome::Retry {
            retry_after, error, ..
        } => {
            if number >= config.max_attempts {
                (
                    DeliveryState::Dead,
                    None,
                    Some(format!("{error} (gave up after {number} attempts)")),
                )
            } else {
                let random = uuid::Uuid::new_v4().as_u128() as u64;
                let delay = deliver::next_delay(config, number, *retry_after, random);
                // Never schedule past the deadline; that pass dead-letters it.
                let deadline = delivery.requeued_at_ms.unwrap_or(delivery.created_at_ms)
                    + config.max_age.as_millis() as i64;
                let at = (now + delay.as_millis() as i64).min(deadline.max(now));
                (DeliveryState::Pending, Some(at), Some(error.clone()))
            }
        }
    };
    let outcome_name = match state {
        DeliveryState::Delivered => "delivered",
        DeliveryState::Dead => "dead",
        _ => "retry",
    };
    let record = AttemptRecord {
        at_ms: now,
        attempted: true,
        state,
        next_attempt_at_ms: next,
        status: attempt.outcome.status(),
        error: error.clone(),
        response: attempt.response.clone(),
    };
    let store = shared.store.clone();
    let id = delivery.event_id.clone();
    match tokio::task::spawn_blocking(move || store.finish_attempt(&id, &record)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::error!(event_id = %delivery.event_id, error = %e, "cannot record a webhook attempt; it will be made again");
        }
        Err(e) => tracing::error!(error = %e, "webhook record task failed"),
    }
    shared.telemetry.record_webhook_attempt(&WebhookAttempt {
        webhook: &delivery.webhook,
        dataset: &delivery.dataset,
        event_id: &delivery.event_id,
        attempt: number,
        outcome: outcome_name,
        status: attempt.outcome.status(),
        error: error.as_deref(),
        started: attempt.started,
        duration: attempt.duration,
    });
    let status = attempt.outcome.status().map(i64::from).unwrap_or(0);
    let took_ms = attempt.duration.as_millis() as u64;
    match state {
        DeliveryState::Delivered => tracing::info!(
            webhook = %delivery.webhook, dataset = %delivery.dataset, event_id = %delivery.event_id,
            attempt = number, status, took_ms, "webhook delivered"
        ),
        DeliveryState::Dead => tracing::error!(
            webhook = %delivery.webhook, dataset = %delivery.dataset, event_id = %delivery.event_id,
            attempt = number, status, error = error.as_deref().unwrap_or(""),
            "webhook dead-lettered; `driftwatch webhooks retry {}` sends it again", delivery.event_id
        ),
        _ => tracing::warn!(
            webhook = %delivery.webhook, dataset = %delivery.dataset, event_id = %delivery.event_id,
            attempt = number, status, error = error.as_deref().unwrap_or(""),
            retry_in_ms = next.map(|at| at - now).unwrap_or(0),
            "webhook attempt failed; will retry"
        ),
    }
}

/// Dead-letters a delivery without an attempt.
async fn give_up(shared: &Arc<Shared>, delivery: &Delivery, error: String) {
    tracing::error!(webhook = %delivery.webhook, event_id = %delivery.event_id, error = %error, "webhook dead-lettered");
    let record = AttemptRecord {
        at_ms: now_ms(),
        attempted: false,
        state: DeliveryState::Dead,
        next_attempt_at_ms: None,
        status: None,
        error: Some(error),
        response: None,
    };
    let store = shared.store.clone();
    let id = delivery.event_id.clone();
    if let Ok(Err(e)) =
        tokio::task::spawn_blocking(move || store.finish_attempt(&id, &record)).await
    {
        tracing::error!(event_id = %delivery.event_id, error = %e, "cannot record a dead letter");
    }
}

/// Updates the outbox gauges from the store.
async fn publish_backlog(shared: &Arc<Shared>) {
    let store = shared.store.clone();
    let Ok(Ok(counts)) = tokio::task::spawn_blocking(move || store.delivery_counts()).await else {
        return;
    };
    let configured: Vec<String> = shared
        .settings
        .lock()
        .map(|s| s.webhooks.iter().map(|w| w.name.clone()).collect())
        .unwrap_or_default();
    for name in configured.iter().chain(counts.keys()) {
        let c = counts.get(name).cloned().unwrap_or_default();
        shared
            .telemetry
            .set_webhook_backlog(name, c.pending, c.dead);
    }
}
