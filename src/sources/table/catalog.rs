//! Iceberg REST catalogs: asking a catalog where a table's current
//! metadata is (`table: { format: iceberg, catalog: { uri, … } }`).
//!
//! Why a catalog and not the folder: a catalog-managed table's current
//! version is whatever the catalog last committed, and its folder is often
//! one nobody can guess (`warehouse/sales/orders-<uuid>/`). Writers may leave
//! metadata files the catalog rejected; only the catalog's
//! `metadata-location` is the truth. So this module speaks the REST
//! protocol's read side — `GET /v1/config` once per open (its
//! `overrides.prefix` over the rule file's `prefix` over its
//! `defaults.prefix`, as the spec orders them; `namespace-separator` too), then
//! `GET /v1/{prefix}/namespaces/{ns}/tables/{table}` at every poll, whose
//! answer holds the table's whole metadata — and [`super::iceberg`] reads the
//! snapshots' manifests and data files from the table's `location` through
//! the lake's stores, as for a table found in a folder.
//!
//! Budgets, since the catalog's bytes are as hostile as any file's: 10 s to
//! connect, 30 s per request, at most 256 MiB per answer, no redirects (a
//! bearer token is never sent on to another host).
//!
//! Errors keep the tables' split. Refused credentials (401, 403, 419), an
//! unreachable catalog, a missing token, 429 and 5xx answers are
//! [`TableError::Store`]: the environment's, retried every poll and never a
//! verdict. A 404 for the table is [`TableError::NotATable`] (tried again
//! too: the table may be created); for `/v1/config` it is the environment's
//! (a wrong `uri` or warehouse). An answer that is not the protocol's is
//! [`TableError::Log`]. No message carries the token.

use std::time::Duration;

use serde::Deserialize;

use super::TableError;
use crate::rules::{CatalogConfig, CatalogToken, TableFormat};

const FORMAT: TableFormat = TableFormat::Iceberg;

/// The largest answer read from a catalog: far above any real table's
/// metadata, low enough that a hostile server cannot take the memory.
pub const MAX_ANSWER_BYTES: usize = 256 << 20;

/// How long connecting to the catalog may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one request may take, answer included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest excerpt of a catalog's error message a report carries.
const MAX_MESSAGE_CHARS: usize = 300;

/// `GET /v1/config`'s answer (the parts read here).
#[derive(Debug, Default, Deserialize)]
struct ConfigAnswer {
    #[serde(default)]
    defaults: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    overrides: std::collections::BTreeMap<String, String>,
}

/// A REST error answer: `{"error": {"message", "type", "code"}}`.
#[derive(Debug, Deserialize)]
struct ErrorAnswer {
    error: ErrorModel,
}

#[derive(Debug, Deserialize)]
struct ErrorModel {
    #[serde(default)]
    message: String,
    #[serde(default, rename = "type")]
    kind: String,
}

/// A connected catalog: the client and the table's resource URL, its
/// prefix resolved.
pub struct RestCatalog {
    config: CatalogConfig,
    client: reqwest::Client,
    /// The table's resource URL requests go to.
    table_url: String,
    /// How messages name the table ([`CatalogConfig::key`]).
    key: String,
}

impl RestCatalog {
    /// Connects: asks `/v1/config` (with the warehouse, when one is given)
    /// for the prefix the rule file does not give.
    pub async fn connect(config: &CatalogConfig) -> Result<Self, TableError> {
        crate::tls::ensure_crypto_provider();
        let key = config.key();
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("driftwatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| TableError::Store {
                location: key.clone(),
                reason: format!(
                    "cannot build the catalog client: {}",
                    crate::location::error_line(&e, &Default::default())
                ),
            })?;
        let mut catalog = Self {
            config: config.clone(),
            client,
            table_url: String::new(),
            key,
        };
        let mut config_url = format!("{}/v1/config", catalog.config.uri);
        if let Some(warehouse) = &catalog.config.warehouse {
            let query: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("warehouse", warehouse)
                .finish();
            config_url = format!("{config_url}?{query}");
        }
        let answer = catalog.get(&config_url, false).await?;
        let answer: ConfigAnswer = serde_json::from_slice(&answer)
            .map_err(|e| catalog.log_error(format!("GET /v1/config: not its answer: {e}")))?;
        // The spec's precedence: the server's overrides over the client's
        // configuration over the server's defaults (Lakekeeper, e.g.,
        // overrides the prefix with the warehouse's id).
        let setting = |key: &str, given: Option<&String>| {
            answer
                .overrides
                .get(key)
                .or(given)
                .or_else(|| answer.defaults.get(key))
                .cloned()
        };
        let prefix = setting("prefix", catalog.config.prefix.as_ref());
        // Multi-level namespaces: `%1F` unless the catalog says otherwise
        // (Iceberg 1.10's `namespace-separator`, given URL-encoded).
        let separator = setting("namespace-separator", None)
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "%1F".to_string());
        catalog.table_url = catalog
            .config
            .table_url(prefix.as_deref(), &separator, false);
        Ok(catalog)
    }

    /// The table's current state: `LoadTableResult`'s JSON bytes (its
    /// `metadata-location` and whole `metadata`).
    pub async fn load_table(&self) -> Result<Vec<u8>, TableError> {
        self.get(&self.table_url, true).await
    }

    /// The bearer token, read now (a token file may have been rotated).
    fn token(&self) -> Result<Option<String>, TableError> {
        let store_error = |reason: String| TableError::Store {
            location: self.key.clone(),
            reason,
        };
        let token = match &self.config.token {
            None => return Ok(None),
            Some(CatalogToken::Env(name)) => std::env::var(name).map_err(|_| {
                store_error(format!(
                    "the catalog token's environment variable `{name}` is not set"
                ))
            })?,
            Some(CatalogToken::File(path)) => {
                let bytes = std::fs::read(path).map_err(|e| {
                    store_error(format!(
                        "cannot read the catalog token file {}: {e}",
                        path.display()
                    ))
                })?;
                String::from_utf8(bytes).map_err(|_| {
                    store_error(format!(
                        "the catalog token file {} is not UTF-8",
                        path.display()
                    ))
                })?
            }
        };
        let token = token.trim().to_string();
        if token.is_empty() {
            return Err(store_error("the catalog token is empty".to_string()));
        }
        Ok(Some(token))
    }

    fn log_error(&self, reason: String) -> TableError {
        TableError::Log {
            format: FORMAT,
            location: self.key.clone(),
            reason,
        }
    }

    /// GETs `url`: the answer's bytes on 200, a [`TableError`] otherwise
    /// (`is_table`: `url` is the table's, so a 404 means no such table;
    /// elsewhere it means a wrong `uri` or warehouse).
    async fn get(&self, url: &str, is_table: bool) -> Result<Vec<u8>, TableError> {
        let token = self.token()?;
        // Messages name the path, never the host's credentials (none are
        // allowed in `uri`) nor the token.
        let shown = url
            .strip_prefix(&self.config.uri)
            .unwrap_or(url)
            .split('?')
            .next()
            .unwrap_or_default()
            .to_string();
        let redact = |text: String| match &token {
            Some(t) => text.replace(t.as_str(), "<token>"),
            None => text,
        };
        let store_error = |reason: String| TableError::Store {
            location: self.key.clone(),
            reason: redact(reason),
        };
        let mut request = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(token) = &token {
            request = request.bearer_auth(token);
        }
        let mut response = request.send().await.map_err(|e| {
            store_error(format!(
                "GET {shown}: cannot reach the catalog: {}",
                crate::location::error_line(&e, &Default::default())
            ))
        })?;
        let status = response.status();
        if response
            .content_length()
            .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
        {
            return Err(self.log_error(format!(
                "GET {shown}: the answer is larger than {} MiB",
                MAX_ANSWER_BYTES >> 20
            )));
        }
        let mut body = Vec::new();
        loop {
            let chunk = response.chunk().await.map_err(|e| {
                store_error(format!(
                    "GET {shown}: the answer broke off: {}",
                    crate::location::error_line(&e, &Default::default())
                ))
            })?;
            let Some(chunk) = chunk else { break };
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(self.log_error(format!(
                    "GET {shown}: the answer is larger than {} MiB",
                    MAX_ANSWER_BYTES >> 20
                )));
            }
            body.extend_from_slice(&chunk);
        }
        if status.is_success() {
            return Ok(body);
        }
        // Redacted before it is cut, so no part of a token survives a cut.
        let said = error_message(&body, &redact);
        let said = said.map(|s| format!(": {s}")).unwrap_or_default();
        let code = status.as_u16();
        Err(match code {
            // 419: the spec's "authentication timeout" (an expired token).
            401 | 403 | 419 => store_error(format!(
                "GET {shown}: the catalog refused the credentials (HTTP {code}){said}"
            )),
            404 if !is_table => store_error(format!(
                "GET {shown}: the catalog answered HTTP 404 (a wrong `uri` or warehouse?){said}"
            )),
            404 => TableError::NotATable {
                format: FORMAT,
                location: self.key.clone(),
                reason: format!(
                    "the catalog has no table {}.{} (HTTP 404){said}",
                    self.config.namespace.join("."),
                    self.config.table
                ),
            },
            408 | 429 | 500..=599 => store_error(format!(
                "GET {shown}: the catalog answered HTTP {code}{said}"
            )),
            _ => self.log_error(format!(
                "GET {shown}: the catalog answered HTTP {code}{said}"
            )),
        })
    }
}

/// A REST error answer's type and message as one short line, `redact`ed
/// before it is cut; `None` when the body is not one.
fn error_message(body: &[u8], redact: &dyn Fn(String) -> String) -> Option<String> {
    let answer: ErrorAnswer = serde_json::from_slice(body).ok()?;
    let text = match (
        answer.error.kind.is_empty(),
        answer.error.message.is_empty(),
    ) {
        (true, true) => return None,
        (false, true) => answer.error.kind,
        (true, false) => answer.error.message,
        (false, false) => format!("{} {}", answer.error.kind, answer.error.message),
    };
    let text = redact(text);
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    Some(if line.chars().count() > MAX_MESSAGE_CHARS {
        let cut: String = line.chars().take(MAX_MESSAGE_CHARS).collect();
        format!("{cut}…")
    } else {
        line
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_16_catalog_error_answers_read_as_one_short_line() {
        let same = |s: String| s;
        let body = br#"{"error":{"message":"Table does not exist:\n bronze.x","type":"NoSuchTableException","code":404}}"#;
        assert_eq!(
            error_message(body, &same).as_deref(),
            Some("NoSuchTableException Table does not exist: bronze.x")
        );
        assert_eq!(error_message(b"<html>502</html>", &same), None);
        assert_eq!(error_message(br#"{"error":{}}"#, &same), None);
        // A token the catalog echoes is redacted before the cut, so no
        // prefix of it survives.
        let token = format!("tok{}", "t".repeat(400));
        let echoed = format!(
            r#"{{"error":{{"message":"{}{token}","type":"E","code":401}}}}"#,
            "x".repeat(250)
        );
        let hide = |s: String| s.replace(&token, "<token>");
        let line = error_message(echoed.as_bytes(), &hide).unwrap();
        assert!(line.ends_with("<token>"), "{line}");
        assert!(!line.contains("tokttt"), "{line}");
        let long = format!(
            r#"{{"error":{{"message":"{}","type":"E","code":500}}}}"#,
            "x".repeat(1000)
        );
        let line = error_message(long.as_bytes(), &same).unwrap();
        assert_eq!(line.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(line.ends_with('…'));
    }
}
