//! Retraining webhooks: a policy decides when a dataset's batches call for
//! retraining, and a signed event is rendered for the receiver.
//!
//! This module holds the parts that need no network: the resolved
//! configuration ([`WebhookConfig`]), the trigger policy with its per-dataset
//! state ([`policy`]: `consecutive`, `cooldown`), the versioned event and the
//! receiver presets ([`payload`]), and request signing ([`sign`]). Durable
//! delivery (the outbox in the state store, retries, dead letters) builds on
//! them; see `docs/design/webhook-research.md` for its plan.

pub mod payload;
pub mod policy;
pub mod sign;

use std::time::Duration;

pub use payload::{Event, Preset};
pub use policy::{Trigger, TriggerState};

/// One `[[webhooks]]` entry, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    /// Name (unique; in events, metrics and the outbox).
    pub name: String,
    /// Where to POST.
    pub url: String,
    /// Datasets it watches (empty: all).
    pub datasets: Vec<String>,
    /// When to fire.
    pub trigger: Trigger,
    /// At most one event per dataset per this period.
    pub cooldown: Duration,
    /// Log what would be sent instead of sending.
    pub dry_run: bool,
    /// Body shape.
    pub preset: Preset,
    /// Environment variable holding the HMAC secret (never the secret itself).
    pub secret_env: Option<String>,
    /// Environment variable holding a bearer token.
    pub bearer_token_env: Option<String>,
    /// Attempts before a delivery is dead-lettered.
    pub max_attempts: u32,
    /// Age after which a delivery is dead-lettered.
    pub max_age: Duration,
    /// Timeout of one attempt.
    pub timeout: Duration,
}

impl WebhookConfig {
    /// Whether this webhook watches `dataset`.
    pub fn watches(&self, dataset: &str) -> bool {
        self.datasets.is_empty() || self.datasets.iter().any(|d| d == dataset)
    }
}
