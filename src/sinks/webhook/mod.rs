//! Retraining webhooks: a policy decides when a dataset's batches call for
//! retraining, a signed event is rendered for the receiver, and delivery is
//! retried until the receiver takes it.
//!
//! - [`config`]: `[[webhooks]]` in `driftwatch.toml`, resolved into [`WebhookConfig`].
//! - [`policy`]: when to fire (`consecutive`, `cooldown`): a pure function of
//!   a batch's report and the stored per-(webhook, dataset) state.
//! - [`payload`]: the versioned event and the receiver presets.
//! - [`sign`]: the HMAC-SHA256 signature headers.
//! - [`deliver`]: one HTTP attempt and how its outcome is classified
//!   (delivered, retry later, dead letter), backoff with jitter, `Retry-After`.
//!
//! The outbox itself lives in the state store (`state::outbox`), written in
//! the same transaction as the batch that fired, so a trigger is durable
//! before any attempt; the agent's delivery loop (`agent::webhooks`) drains
//! it. See `docs/webhook.md`.

pub mod config;
pub mod deliver;
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
    /// Environment variables holding basic-auth credentials.
    pub basic_auth: Option<BasicAuthEnv>,
    /// Attempts before a delivery is dead-lettered.
    pub max_attempts: u32,
    /// Age after which a delivery is dead-lettered.
    pub max_age: Duration,
    /// Timeout of one attempt.
    pub timeout: Duration,
    /// Delay before the first retry (doubled per attempt, jittered).
    pub retry_backoff: Duration,
    /// Longest delay between attempts (a longer `Retry-After` is honoured).
    pub retry_backoff_max: Duration,
    /// Extra CA certificates (PEM) to trust.
    pub ca_file: Option<std::path::PathBuf>,
}

/// Where basic-auth credentials come from (names of environment variables).
#[derive(Debug, Clone, PartialEq)]
pub struct BasicAuthEnv {
    /// Variable holding the user.
    pub user: String,
    /// Variable holding the password.
    pub password: String,
}

impl WebhookConfig {
    /// Whether this webhook watches `dataset`.
    ///
    /// `named_by_rule_file`: the batch's rule file lists this webhook under
    /// `webhooks:`; `named_anywhere`: some loaded rule file does. With no
    /// `datasets` and no rule file naming it, a webhook watches every dataset.
    pub fn watches(&self, dataset: &str, named_by_rule_file: bool, named_anywhere: bool) -> bool {
        named_by_rule_file
            || self.datasets.iter().any(|d| d == dataset)
            || (self.datasets.is_empty() && !named_anywhere)
    }
}
