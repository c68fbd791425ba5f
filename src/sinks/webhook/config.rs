//! `[[webhooks]]` in `driftwatch.toml`, as written ([`WebhookSection`]) and
//! resolved ([`WebhookConfig`]): durations parsed, the URL checked against
//! the preset's documented path, the template rendered once against a sample
//! event, and the secret's environment variable required to be set — so a
//! mistake shows at start-up, not at the first drift an hour later.
//!
//! Secrets never appear here: the file names environment variables, and the
//! values are read from the environment when a request is signed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;

use super::payload::{self, Preset};
use super::policy::Trigger;
use super::{BasicAuthEnv, WebhookConfig};
use crate::config::parse_interval;

/// One `[[webhooks]]` entry: where to send a retraining event, and when.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSection {
    /// A unique name (letters, digits, `-`, `_`, `.`); in events, metrics,
    /// logs and `driftwatch webhooks`. Rule files name webhooks by it.
    pub name: String,
    /// Where to POST. `https://` unless the host is loopback or `allow_http` is set.
    pub url: String,
    /// Datasets this webhook watches. Default: the datasets whose rule files
    /// name it in `webhooks:`, or every dataset when no rule file does.
    #[serde(default)]
    pub datasets: Vec<String>,
    /// When to fire.
    #[serde(default)]
    pub trigger: TriggerSection,
    /// At most one event per dataset per this period (default `1h`).
    pub cooldown: Option<String>,
    /// Log (and list in `driftwatch webhooks`) what would be sent, send nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Body shape: `generic` (default, the event itself), `github`
    /// (`repository_dispatch`), `airflow` (REST API DAG run) or `template`.
    pub preset: Option<String>,
    /// `event_type` of the `github` preset (default `driftwatch-retrain`).
    pub github_event_type: Option<String>,
    /// Body of the `template` preset: JSON with `{{path}}` placeholders
    /// (`{{dataset}}`, `{{reason.description}}`, `{{event}}`…), each replaced by
    /// the JSON encoding of that value of the event.
    pub template: Option<String>,
    /// Environment variable holding the HMAC-SHA256 signing secret
    /// (`X-Driftwatch-Signature`). Must be set when the agent starts.
    pub secret_env: Option<String>,
    /// Environment variable holding a bearer token (`Authorization: Bearer`).
    pub bearer_token_env: Option<String>,
    /// Environment variables holding a user and password for HTTP basic auth
    /// (Airflow's `basic_auth` backend), written `["USER_VAR", "PASSWORD_VAR"]`.
    pub basic_auth_env: Option<[String; 2]>,
    /// Attempts before a delivery is dead-lettered (default 10).
    pub max_attempts: Option<u32>,
    /// Age after which an undelivered event is dead-lettered (default `24h`).
    pub max_age: Option<String>,
    /// Timeout of one attempt, connect to last byte (default `10s`).
    pub timeout: Option<String>,
    /// Delay before the first retry; doubled each attempt, with jitter (default `1s`).
    pub retry_backoff: Option<String>,
    /// Longest delay between attempts (default `10m`); a longer `Retry-After` is still honoured.
    pub retry_backoff_max: Option<String>,
    /// PEM file of extra CA certificates to trust (a private receiver).
    pub ca_file: Option<PathBuf>,
    /// Allow plain `http://` to a non-loopback host.
    #[serde(default)]
    pub allow_http: bool,
}

/// `[webhooks.trigger]`: a batch *matches* when any condition holds; the
/// webhook fires on the `consecutive`-th matching batch in a row.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerSection {
    /// Fire on dataset drift (the rule file's `drift_share` threshold reached).
    #[serde(default)]
    pub dataset_drift: bool,
    /// Fire when this share (0–1] of tested columns or more drifted.
    pub drift_share: Option<f64>,
    /// Fire when one of these checks (by name, severity error) does not pass.
    #[serde(default)]
    pub checks: Vec<String>,
    /// Fire when a batch's columns differ from the dataset's previous
    /// batch (a column added, removed or of another type).
    #[serde(default)]
    pub schema_changed: bool,
    /// Fire when a batch landed late for its dataset: the gap since the
    /// previous batch exceeded the learned interval by more than half of it
    /// (the report's `lateness`).
    #[serde(default)]
    pub late: bool,
    /// Matching batches in a row needed (default 1).
    pub consecutive: Option<u32>,
}

/// Default `event_type` of the GitHub preset.
pub const DEFAULT_GITHUB_EVENT_TYPE: &str = "driftwatch-retrain";

/// Resolves the `[[webhooks]]` entries. `origin` names the config file in
/// errors; `base` resolves relative `ca_file` paths. Errors are
/// `(key, message)` with keys such as `webhooks[retrain].url`.
pub fn resolve(
    sections: &[WebhookSection],
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<WebhookConfig>, (String, String)> {
    let mut names = HashSet::new();
    sections
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let key = |field: &str| {
                if s.name.is_empty() {
                    format!("webhooks[{i}].{field}")
                } else {
                    format!("webhooks[{}].{field}", s.name)
                }
            };
            let config = resolve_one(s, base, env, &key)?;
            if !names.insert(config.name.clone()) {
                return Err((
                    key("name"),
                    format!("`{}` is used by two webhooks; names must be unique", s.name),
                ));
            }
            Ok(config)
        })
        .collect()
}

fn resolve_one(
    s: &WebhookSection,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    key: &dyn Fn(&str) -> String,
) -> Result<WebhookConfig, (String, String)> {
    let err = |field: &str, message: String| (key(field), message);
    if s.name.is_empty()
        || !s
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(err(
            "name",
            format!(
                "`{}`: write a non-empty name of letters, digits, `-`, `_` or `.`",
                s.name
            ),
        ));
    }
    let url = reqwest::Url::parse(&s.url).map_err(|e| err("url", format!("`{}`: {e}", s.url)))?;
    match url.scheme() {
        "https" => {}
        "http" => {
            let host = url.host_str().unwrap_or("").trim_matches(['[', ']']);
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !loopback && !s.allow_http {
                return Err(err(
                    "url",
                    format!(
                        "`{}`: plain http to a remote host sends the event unencrypted; use https:// (or set allow_http = true)",
                        s.url
                    ),
                ));
            }
        }
        other => {
            return Err(err(
                "url",
                format!("`{}`: scheme `{other}` is not http or https", s.url),
            ));
        }
    }
    let preset = match s.preset.as_deref().unwrap_or("generic") {
        "generic" => Preset::Generic,
        "github" => {
            let segments: Vec<&str> = url.path().trim_matches('/').split('/').collect();
            if !(segments.len() == 4 && segments[0] == "repos" && segments[3] == "dispatches") {
                return Err(err(
                    "url",
                    format!(
                        "the github preset posts to https://api.github.com/repos/OWNER/REPO/dispatches; `{}` has path `{}`",
                        s.url,
                        url.path()
                    ),
                ));
            }
            let event_type = s
                .github_event_type
                .clone()
                .unwrap_or_else(|| DEFAULT_GITHUB_EVENT_TYPE.to_string());
            if event_type.is_empty() || event_type.chars().count() > 100 {
                return Err(err(
                    "github_event_type",
                    "GitHub requires 1 to 100 characters".to_string(),
                ));
            }
            Preset::GithubDispatch { event_type }
        }
        "airflow" => {
            let segments: Vec<&str> = url.path().trim_matches('/').split('/').collect();
            let n = segments.len();
            if !(n >= 5
                && segments[n - 5..n - 2] == ["api", "v1", "dags"]
                && segments[n - 1] == "dagRuns")
            {
                return Err(err(
                    "url",
                    format!(
                        "the airflow preset posts to BASE/api/v1/dags/DAG_ID/dagRuns; `{}` has path `{}`",
                        s.url,
                        url.path()
                    ),
                ));
            }
            Preset::AirflowDagRun
        }
        "template" => {
            let template = s.template.clone().ok_or_else(|| {
                err(
                    "template",
                    "the template preset needs `template = '{...}'`".to_string(),
                )
            })?;
            let preset = Preset::Template(template);
            payload::render(&preset, &payload::Event::sample()).map_err(|m| err("template", m))?;
            preset
        }
        other => {
            return Err(err(
                "preset",
                format!("`{other}`: write generic, github, airflow or template"),
            ));
        }
    };
    if s.template.is_some() && !matches!(preset, Preset::Template(_)) {
        return Err(err(
            "template",
            "a template is only used with preset = \"template\"".to_string(),
        ));
    }
    let t = &s.trigger;
    if !t.dataset_drift
        && t.drift_share.is_none()
        && t.checks.is_empty()
        && !t.schema_changed
        && !t.late
    {
        return Err(err(
            "trigger",
            "no condition: set dataset_drift = true, drift_share = X, checks = [...], schema_changed = true or late = true".to_string(),
        ));
    }
    if let Some(share) = t.drift_share
        && !(share > 0.0 && share <= 1.0)
    {
        return Err(err(
            "trigger.drift_share",
            format!("{share}: write a share in (0, 1]"),
        ));
    }
    let consecutive = t.consecutive.unwrap_or(1);
    if consecutive == 0 {
        return Err(err("trigger.consecutive", "must be at least 1".to_string()));
    }
    let duration = |field: &str, value: &Option<String>, default: &str| {
        parse_interval(value.as_deref().unwrap_or(default)).map_err(|m| err(field, m))
    };
    let cooldown = duration("cooldown", &s.cooldown, "1h")?;
    let max_age = duration("max_age", &s.max_age, "24h")?;
    let timeout = duration("timeout", &s.timeout, "10s")?;
    let retry_backoff = duration("retry_backoff", &s.retry_backoff, "1s")?;
    let retry_backoff_max = duration("retry_backoff_max", &s.retry_backoff_max, "10m")?;
    if timeout.is_zero() || max_age.is_zero() {
        return Err(err(
            "timeout",
            "timeout and max_age must be greater than zero".to_string(),
        ));
    }
    let max_attempts = s.max_attempts.unwrap_or(10);
    if max_attempts == 0 {
        return Err(err("max_attempts", "must be at least 1".to_string()));
    }
    let require_env = |field: &str, name: &str| -> Result<(), (String, String)> {
        if name.is_empty() {
            return Err(err(field, "name an environment variable".to_string()));
        }
        if !s.dry_run && env(name).is_none_or(|v| v.is_empty()) {
            return Err(err(
                field,
                format!(
                    "environment variable `{name}` is not set (the value is read from the environment, never from this file)"
                ),
            ));
        }
        Ok(())
    };
    if let Some(name) = &s.secret_env {
        require_env("secret_env", name)?;
    }
    if let Some(name) = &s.bearer_token_env {
        require_env("bearer_token_env", name)?;
    }
    let basic_auth = match &s.basic_auth_env {
        Some([user, password]) => {
            require_env("basic_auth_env", user)?;
            require_env("basic_auth_env", password)?;
            if s.bearer_token_env.is_some() {
                return Err(err(
                    "basic_auth_env",
                    "set either bearer_token_env or basic_auth_env, not both".to_string(),
                ));
            }
            Some(BasicAuthEnv {
                user: user.clone(),
                password: password.clone(),
            })
        }
        None => None,
    };
    let ca_file = match &s.ca_file {
        Some(p) => {
            let path = if p.is_absolute() {
                p.clone()
            } else {
                base.join(p)
            };
            let pem = std::fs::read(&path)
                .map_err(|e| err("ca_file", format!("{}: {e}", path.display())))?;
            reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| err("ca_file", format!("{}: {e}", path.display())))?;
            Some(path)
        }
        None => None,
    };
    Ok(WebhookConfig {
        name: s.name.clone(),
        url: s.url.clone(),
        datasets: s.datasets.clone(),
        trigger: Trigger {
            dataset_drift: t.dataset_drift,
            drift_share_at_least: t.drift_share,
            checks: t.checks.clone(),
            schema_changed: t.schema_changed,
            late: t.late,
            consecutive,
        },
        cooldown,
        dry_run: s.dry_run,
        preset,
        secret_env: s.secret_env.clone(),
        bearer_token_env: s.bearer_token_env.clone(),
        basic_auth,
        max_attempts,
        max_age,
        timeout,
        retry_backoff,
        retry_backoff_max: retry_backoff_max.max(retry_backoff),
        ca_file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn section(toml_text: &str) -> WebhookSection {
        toml::from_str(toml_text).unwrap()
    }

    fn one(toml_text: &str) -> Result<WebhookConfig, (String, String)> {
        let env = |name: &str| (name == "SECRET").then(|| "s3cret".to_string());
        resolve(&[section(toml_text)], Path::new("/etc"), &env).map(|mut v| v.remove(0))
    }

    #[test]
    fn defaults_and_durations() {
        let c = one(
            "name = \"r\"\nurl = \"https://h.example/x\"\nsecret_env = \"SECRET\"\n[trigger]\ndataset_drift = true\n",
        )
        .unwrap();
        assert_eq!(c.preset, Preset::Generic);
        assert_eq!(c.cooldown, Duration::from_secs(3600));
        assert_eq!(c.max_attempts, 10);
        assert_eq!(c.max_age, Duration::from_secs(86_400));
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert_eq!(c.retry_backoff, Duration::from_secs(1));
        assert_eq!(c.retry_backoff_max, Duration::from_secs(600));
        assert_eq!(c.trigger.consecutive, 1);
    }

    #[test]
    fn mistakes_name_their_key() {
        let cases = [
            (
                "name = \"r\"\nurl = \"http://example.com/x\"\n[trigger]\ndataset_drift = true\n",
                "webhooks[r].url",
                "unencrypted",
            ),
            (
                "name = \"r\"\nurl = \"https://h/x\"\n",
                "webhooks[r].trigger",
                "no condition",
            ),
            (
                "name = \"r\"\nurl = \"https://h/x\"\nsecret_env = \"MISSING\"\n[trigger]\ndataset_drift = true\n",
                "webhooks[r].secret_env",
                "`MISSING` is not set",
            ),
            (
                "name = \"r\"\nurl = \"https://api.github.com/orgs/x\"\npreset = \"github\"\n[trigger]\ndataset_drift = true\n",
                "webhooks[r].url",
                "repos/OWNER/REPO/dispatches",
            ),
            (
                "name = \"r\"\nurl = \"https://af/api/v1/dags/x\"\npreset = \"airflow\"\n[trigger]\ndataset_drift = true\n",
                "webhooks[r].url",
                "dags/DAG_ID/dagRuns",
            ),
            (
                "name = \"r\"\nurl = \"https://h/x\"\npreset = \"template\"\ntemplate = \"{\\\"a\\\": {{nope}}}\"\n[trigger]\ndataset_drift = true\n",
                "webhooks[r].template",
                "no `nope`",
            ),
            (
                "name = \"r\"\nurl = \"https://h/x\"\ncooldown = \"soon\"\n[trigger]\ndataset_drift = true\n",
                "webhooks[r].cooldown",
                "soon",
            ),
            (
                "name = \"r\"\nurl = \"https://h/x\"\n[trigger]\ndrift_share = 1.5\n",
                "webhooks[r].trigger.drift_share",
                "(0, 1]",
            ),
            (
                "name = \"a b\"\nurl = \"https://h/x\"\n[trigger]\ndataset_drift = true\n",
                "webhooks[a b].name",
                "letters, digits",
            ),
        ];
        for (text, key, fragment) in cases {
            let (k, message) = one(text).unwrap_err();
            assert_eq!(k, key, "{text}");
            assert!(message.contains(fragment), "{message}");
        }
        let twice =
            section("name = \"r\"\nurl = \"https://h/x\"\n[trigger]\ndataset_drift = true\n");
        let (k, m) = resolve(&[twice.clone(), twice], Path::new("/"), &|_| None).unwrap_err();
        assert_eq!(k, "webhooks[r].name");
        assert!(m.contains("unique"));
    }

    #[test]
    fn the_documented_configurations_resolve() {
        #[derive(serde::Deserialize)]
        struct Doc {
            webhooks: Vec<WebhookSection>,
        }
        let env = |name: &str| {
            ["RETRAIN_SECRET", "RETRAIN_TOKEN", "GITHUB_TOKEN"]
                .contains(&name)
                .then(|| "x".to_string())
        };
        for (doc, text) in [
            ("docs/webhook.md", include_str!("../../../docs/webhook.md")),
            ("README.md", include_str!("../../../README.md")),
        ] {
            let start = text.find("```toml\n[[webhooks]]").expect(doc) + "```toml\n".len();
            let end = start + text[start..].find("\n```").unwrap();
            let parsed: Doc = toml::from_str(&text[start..end]).expect(doc);
            let resolved = resolve(&parsed.webhooks, Path::new("/"), &env).expect(doc);
            assert_eq!(resolved[0].name, "retrain");
            assert_eq!(resolved[0].trigger.consecutive, 2);
        }
    }

    #[test]
    fn presets_accept_their_documented_urls() {
        let github = one(
            "name = \"g\"\nurl = \"https://api.github.com/repos/acme/models/dispatches\"\npreset = \"github\"\nbearer_token_env = \"SECRET\"\n[trigger]\ndataset_drift = true\n",
        )
        .unwrap();
        assert_eq!(
            github.preset,
            Preset::GithubDispatch {
                event_type: DEFAULT_GITHUB_EVENT_TYPE.into()
            }
        );
        let airflow = one(
            "name = \"a\"\nurl = \"https://airflow.internal/api/v1/dags/retrain/dagRuns\"\npreset = \"airflow\"\nbasic_auth_env = [\"SECRET\", \"SECRET\"]\n[trigger]\nchecks = [\"x\"]\n",
        )
        .unwrap();
        assert_eq!(airflow.preset, Preset::AirflowDagRun);
        assert!(airflow.basic_auth.is_some());
        // Loopback may use plain http (tests, sidecars on the same host).
        assert!(
            one("name = \"l\"\nurl = \"http://127.0.0.1:9/x\"\n[trigger]\ndataset_drift = true\n")
                .is_ok()
        );
    }
}
