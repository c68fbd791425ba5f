//! One delivery attempt: the request (headers per preset, signature, auth),
//! and what its outcome means for the outbox.
//!
//! Classification follows what receivers mean by their answers: 2xx is
//! delivered; connection errors, timeouts, 5xx, 408 and 429 are worth another
//! try (after `Retry-After` when the receiver says so); any other 4xx (and
//! 3xx, since redirects are never followed with a signed body) will not get
//! better by repeating it, so the event is dead-lettered at once with the
//! response kept for the operator. Airflow answers 409 when the DAG run id
//! (derived from the event id) exists: the event was delivered before.
//!
//! Secrets are read from the environment at attempt time and never logged or
//! stored; the body bytes were rendered once, when the event was enqueued, so
//! every attempt (and every restart) sends identical bytes with the same
//! `Idempotency-Key`; only the signed timestamp is fresh.

use std::time::{Duration, SystemTime};

use super::WebhookConfig;
use super::payload::Preset;
use super::sign::{SIGNATURE_HEADER, TIMESTAMP_HEADER, signature};

/// Header carrying the event id (constant across attempts).
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
/// Response bytes kept with a delivery for the operator; also all that is
/// read of a response body (the connection is dropped after them), so a
/// receiver answering with a huge body costs nothing more.
pub const RESPONSE_KEPT_BYTES: usize = 2048;
/// The shortest wait a `Retry-After` can ask for.
pub const RETRY_AFTER_MIN: Duration = Duration::from_secs(1);
/// The longest wait a `Retry-After` can ask for (or the webhook's `max_age`
/// when that is shorter): a larger value is clamped, never wrapped.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(3600);
/// The GitHub REST API version the preset speaks.
pub const GITHUB_API_VERSION: &str = "2022-11-28";

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The receiver took it.
    Delivered {
        /// HTTP status.
        status: u16,
    },
    /// Try again later.
    Retry {
        /// HTTP status, when there was an answer.
        status: Option<u16>,
        /// What the receiver asked for in `Retry-After`.
        retry_after: Option<Duration>,
        /// What went wrong.
        error: String,
    },
    /// Never going to work: dead-letter it.
    Dead {
        /// HTTP status, when there was an answer.
        status: Option<u16>,
        /// What went wrong.
        error: String,
    },
}

impl Outcome {
    /// `delivered`, `retry` or `dead` (metric attribute and log field).
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Delivered { .. } => "delivered",
            Outcome::Retry { .. } => "retry",
            Outcome::Dead { .. } => "dead",
        }
    }

    /// The HTTP status, when there was an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Outcome::Delivered { status } => Some(*status),
            Outcome::Retry { status, .. } | Outcome::Dead { status, .. } => *status,
        }
    }
}

/// One attempt, as recorded.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The outcome.
    pub outcome: Outcome,
    /// The start of the response body (at most [`RESPONSE_KEPT_BYTES`]).
    pub response: Option<String>,
    /// When it started.
    pub started: SystemTime,
    /// How long it took.
    pub duration: Duration,
}

/// Classifies an HTTP status for `preset`.
pub fn classify(preset: &Preset, status: u16) -> &'static str {
    match status {
        200..=299 => "delivered",
        409 if matches!(preset, Preset::AirflowDagRun) => "delivered",
        408 | 429 | 500..=599 => "retry",
        _ => "dead",
    }
}

/// The HTTP client for one webhook: timeouts, no redirects, the OS trust
/// store plus the configured CA file.
pub fn client(config: &WebhookConfig) -> Result<reqwest::Client, String> {
    crate::tls::ensure_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .connect_timeout(config.timeout.min(Duration::from_secs(10)))
        .timeout(config.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("driftwatch/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &config.ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{}: {e}", path.display()))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| error_chain(&e))
}

/// The request's headers (names and values), secrets included: the caller
/// sends them and never logs them. `timestamp` is Unix seconds.
pub fn headers(
    config: &WebhookConfig,
    event_id: &str,
    body: &[u8],
    timestamp: i64,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, String> {
    let mut out = vec![
        ("Content-Type".to_string(), "application/json".to_string()),
        (IDEMPOTENCY_HEADER.to_string(), event_id.to_string()),
    ];
    match &config.preset {
        Preset::GithubDispatch { .. } => {
            out.push(("Accept".into(), "application/vnd.github+json".into()));
            out.push(("X-GitHub-Api-Version".into(), GITHUB_API_VERSION.into()));
        }
        Preset::AirflowDagRun => out.push(("Accept".into(), "application/json".into())),
        Preset::Generic | Preset::Template(_) => {}
    }
    let read = |name: &str| {
        env(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("environment variable `{name}` is not set"))
    };
    if let Some(name) = &config.secret_env {
        let secret = read(name)?;
        let ts = timestamp.to_string();
        out.push((
            SIGNATURE_HEADER.to_string(),
            signature(secret.as_bytes(), &ts, body),
        ));
        out.push((TIMESTAMP_HEADER.to_string(), ts));
    }
    if let Some(name) = &config.bearer_token_env {
        out.push(("Authorization".into(), format!("Bearer {}", read(name)?)));
    }
    if let Some(basic) = &config.basic_auth {
        let credentials = format!("{}:{}", read(&basic.user)?, read(&basic.password)?);
        out.push((
            "Authorization".into(),
            format!("Basic {}", base64(credentials.as_bytes())),
        ));
    }
    Ok(out)
}

/// Sends `body` once.
pub async fn attempt(
    client: &reqwest::Client,
    config: &WebhookConfig,
    event_id: &str,
    body: &[u8],
) -> Attempt {
    let started = SystemTime::now();
    let clock = std::time::Instant::now();
    let timestamp = chrono::Utc::now().timestamp();
    let env = |name: &str| std::env::var(name).ok();
    let finish = |outcome: Outcome, response: Option<String>| Attempt {
        outcome,
        response,
        started,
        duration: clock.elapsed(),
    };
    let headers = match headers(config, event_id, body, timestamp, &env) {
        Ok(h) => h,
        // The environment is the operator's to fix; keep retrying until max_age.
        Err(error) => {
            return finish(
                Outcome::Retry {
                    status: None,
                    retry_after: None,
                    error,
                },
                None,
            );
        }
    };
    let mut request = client.post(&config.url).body(body.to_vec());
    for (name, value) in &headers {
        request = request.header(name.as_str(), value.as_str());
    }
    match request.send().await {
        Err(e) => finish(
            Outcome::Retry {
                status: None,
                retry_after: None,
                error: error_chain(&e),
            },
            None,
        ),
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            let text = match read_kept(response).await {
                Ok(kept) => String::from_utf8_lossy(&kept).into_owned(),
                Err(e) => format!("(body unreadable: {})", error_chain(&e)),
            };
            let error = format!("HTTP {status}");
            let outcome = match classify(&config.preset, status) {
                "delivered" => Outcome::Delivered { status },
                "retry" => Outcome::Retry {
                    status: Some(status),
                    retry_after,
                    error,
                },
                _ => Outcome::Dead {
                    status: Some(status),
                    error,
                },
            };
            finish(outcome, Some(text))
        }
    }
}

/// The first [`RESPONSE_KEPT_BYTES`] of a response body. The rest is never
/// read: dropping the response with its body unfinished closes the
/// connection instead of draining it.
async fn read_kept(mut response: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut kept = Vec::new();
    while kept.len() < RESPONSE_KEPT_BYTES {
        let Some(chunk) = response.chunk().await? else {
            break;
        };
        let room = RESPONSE_KEPT_BYTES - kept.len();
        kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    Ok(kept)
}

/// `Retry-After`: seconds or an HTTP date (a date in the past is 0).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The delay before attempt `attempts + 1`, after `attempts` failed ones:
/// `retry_backoff · 2^(attempts-1)` capped at `retry_backoff_max`, with
/// "equal jitter" (a uniformly random point in the upper half, from
/// `random`), so retries of many events spread out but never come at once.
/// A longer `Retry-After` wins, clamped to [`RETRY_AFTER_MIN`] ..
/// [`RETRY_AFTER_MAX`] or `max_age` if shorter (a huge value would otherwise
/// overflow the scheduled time into an immediate retry).
pub fn next_delay(
    config: &WebhookConfig,
    attempts: u32,
    retry_after: Option<Duration>,
    random: u64,
) -> Duration {
    let exponent = attempts.saturating_sub(1).min(30);
    let base = config
        .retry_backoff
        .saturating_mul(1u32 << exponent)
        .min(config.retry_backoff_max);
    let half = base / 2;
    let jitter_ms = if half.as_millis() == 0 {
        0
    } else {
        random % (half.as_millis() as u64 + 1)
    };
    let delay = half + Duration::from_millis(jitter_ms);
    let ceiling = RETRY_AFTER_MAX.min(config.max_age).max(RETRY_AFTER_MIN);
    match retry_after.map(|a| a.clamp(RETRY_AFTER_MIN, ceiling)) {
        Some(asked) if asked > delay => asked,
        _ => delay,
    }
}

/// An error and its causes on one line (reqwest's own text is only
/// "error sending request").
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::webhook::policy::Trigger;

    fn config(preset: Preset) -> WebhookConfig {
        WebhookConfig {
            name: "w".into(),
            url: "http://127.0.0.1:9/x".into(),
            datasets: Vec::new(),
            trigger: Trigger {
                dataset_drift: true,
                drift_share_at_least: None,
                checks: Vec::new(),
                schema_changed: false,
                late: false,
                consecutive: 1,
            },
            cooldown: Duration::from_secs(3600),
            dry_run: false,
            preset,
            secret_env: Some("S".into()),
            bearer_token_env: None,
            basic_auth: None,
            max_attempts: 10,
            max_age: Duration::from_secs(86_400),
            timeout: Duration::from_secs(10),
            retry_backoff: Duration::from_secs(1),
            retry_backoff_max: Duration::from_secs(600),
            ca_file: None,
        }
    }

    #[test]
    fn statuses_are_classified_as_receivers_mean_them() {
        let g = Preset::Generic;
        for (status, class) in [
            (200, "delivered"),
            (204, "delivered"),
            (301, "dead"),
            (400, "dead"),
            (401, "dead"),
            (404, "dead"),
            (408, "retry"),
            (409, "dead"),
            (429, "retry"),
            (500, "retry"),
            (503, "retry"),
        ] {
            assert_eq!(classify(&g, status), class, "{status}");
        }
        assert_eq!(classify(&Preset::AirflowDagRun, 409), "delivered");
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:27:00 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:28:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn backoff_doubles_is_capped_jittered_and_yields_to_retry_after() {
        let c = config(Preset::Generic);
        // random = 0: the lower bound, half the exponential step.
        let lows: Vec<u128> = (1..=12)
            .map(|n| next_delay(&c, n, None, 0).as_millis())
            .collect();
        assert_eq!(
            lows,
            [
                500, 1000, 2000, 4000, 8000, 16_000, 32_000, 64_000, 128_000, 256_000, 300_000,
                300_000
            ]
        );
        // random = max: the full step.
        let top = next_delay(&c, 3, None, u64::MAX).as_millis();
        assert_eq!(top, 2000 + u128::from(u64::MAX % 2001));
        assert_eq!(next_delay(&c, 3, None, 2000).as_millis(), 4000);
        assert_eq!(
            next_delay(&c, 1, Some(Duration::from_secs(30)), 0),
            Duration::from_secs(30)
        );
        assert_eq!(
            next_delay(&c, 5, Some(Duration::from_secs(1)), 0),
            Duration::from_secs(8)
        );
    }

    #[test]
    fn issue_15_retry_after_is_clamped_to_an_hour_or_max_age() {
        let mut c = config(Preset::Generic);
        let huge = parse_retry_after("18446744073709551615", SystemTime::now());
        assert_eq!(huge, Some(Duration::from_secs(u64::MAX)));
        assert_eq!(next_delay(&c, 1, huge, 0), Duration::from_secs(3600));
        c.max_age = Duration::from_secs(600);
        assert_eq!(next_delay(&c, 1, huge, 0), Duration::from_secs(600));
        // The floor: `Retry-After: 0` waits a second, not zero.
        c.retry_backoff = Duration::from_millis(10);
        assert_eq!(
            next_delay(&c, 1, Some(Duration::ZERO), 0),
            Duration::from_secs(1)
        );
    }

    proptest::proptest! {
        #[test]
        fn backoff_stays_within_half_and_whole_step(attempts in 1u32..40, random in proptest::prelude::any::<u64>()) {
            let c = config(Preset::Generic);
            let step = c.retry_backoff.saturating_mul(1u32 << attempts.saturating_sub(1).min(30)).min(c.retry_backoff_max);
            let d = next_delay(&c, attempts, None, random);
            proptest::prop_assert!(d >= step / 2 && d <= step);
        }

        #[test]
        fn base64_matches_the_standard_alphabet(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let ours = base64(&bytes);
            proptest::prop_assert_eq!(ours.len(), bytes.len().div_ceil(3) * 4);
            // Decoding with a straightforward reference decoder gives the bytes back.
            let value = |c: u8| ALPHA.iter().position(|&a| a == c).map(|p| p as u32);
            const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let mut decoded = Vec::new();
            for quad in ours.as_bytes().chunks(4) {
                let n = quad.iter().fold(0u32, |acc, &c| (acc << 6) | value(c).unwrap_or(0));
                let pad = quad.iter().filter(|&&c| c == b'=').count();
                let three = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
                decoded.extend_from_slice(&three[..3 - pad]);
            }
            proptest::prop_assert_eq!(decoded, bytes);
        }
    }

    #[test]
    fn base64_rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }

    #[test]
    fn headers_per_preset_with_secrets_from_the_environment() {
        let env = |name: &str| match name {
            "S" => Some("topsecret".to_string()),
            "TOKEN" => Some("ghp_x".to_string()),
            "U" => Some("admin".to_string()),
            "P" => Some("pw".to_string()),
            _ => None,
        };
        let body = br#"{"a":1}"#;
        let mut github = config(Preset::GithubDispatch {
            event_type: "retrain".into(),
        });
        github.bearer_token_env = Some("TOKEN".into());
        let h = headers(&github, "id-1", body, 1_700_000_000, &env).unwrap();
        let get = |h: &[(String, String)], k: &str| {
            h.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        assert_eq!(get(&h, "Accept"), "application/vnd.github+json");
        assert_eq!(get(&h, "X-GitHub-Api-Version"), "2022-11-28");
        assert_eq!(get(&h, "Authorization"), "Bearer ghp_x");
        assert_eq!(get(&h, "Idempotency-Key"), "id-1");
        assert_eq!(get(&h, "X-Driftwatch-Timestamp"), "1700000000");
        assert_eq!(
            get(&h, "X-Driftwatch-Signature"),
            signature(b"topsecret", "1700000000", body)
        );
        let mut airflow = config(Preset::AirflowDagRun);
        airflow.basic_auth = Some(super::super::BasicAuthEnv {
            user: "U".into(),
            password: "P".into(),
        });
        let h = headers(&airflow, "id-1", body, 1, &env).unwrap();
        assert_eq!(get(&h, "Authorization"), "Basic YWRtaW46cHc=");
        assert_eq!(get(&h, "Accept"), "application/json");
        let mut missing = config(Preset::Generic);
        missing.secret_env = Some("NOPE".into());
        assert_eq!(
            headers(&missing, "id", body, 1, &env).unwrap_err(),
            "environment variable `NOPE` is not set"
        );
    }
}
