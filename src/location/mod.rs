//! Where a batch lives: a local path, or an object in an object store
//! (`s3://bucket/key`, `az://container/key`, `abfss://…`, `gs://bucket/key`).
//!
//! Why one notion: `check`, `baseline` and the agent carry a batch's location
//! as a path (`Input::path`, `Batch::path`, `BatchInput::path`) and show it as
//! the report's `source`. An object is carried as its URL in that same path
//! (`s3://lake/flights/day=1/part-0.parquet`), and [`ObjectUrl::from_path`]
//! tells the two apart by scheme, so every local code path stays as it was
//! and the engine alone decides how to open what it is given. Local paths
//! reach here absolute (the agent canonicalizes watched folders) or as the
//! user typed them (`check`), where `s3://…` means the object store.
//!
//! This module also owns building the stores ([`build_store`]): credentials
//! come from the environment variables each cloud's SDKs read (via
//! `object_store`'s `from_env`; for GCS `GOOGLE_APPLICATION_CREDENTIALS`
//! and the application default credentials; for S3 also AWS named profiles,
//! [`aws_profile`]), endpoint and addressing from
//! `[lake.object_store]` ([`ObjectStoreOptions`]). Secrets never leave here:
//! [`redact`] removes every credential value known to the process from a
//! message before it is logged, shown on `/status` or put in a report.

pub mod aws_profile;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;

/// Errors naming an object-store location.
#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    /// The URL is not of a supported form.
    #[error("{url}: {reason}")]
    Invalid {
        /// The URL as given.
        url: String,
        /// Why.
        reason: String,
    },
    /// The store client could not be configured (bad endpoint, missing region…).
    #[error("{url}: cannot set up the object store client: {reason}")]
    Setup {
        /// The URL.
        url: String,
        /// One-line reason, secrets removed.
        reason: String,
    },
    /// Listing the objects under a prefix failed.
    #[error("{url}: cannot list objects: {reason}")]
    List {
        /// The URL.
        url: String,
        /// One-line reason, secrets removed.
        reason: String,
    },
}

/// The object stores driftwatch knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    /// Amazon S3 and S3-compatible stores (`s3://`, `s3a://`).
    S3,
    /// Azure Blob Storage / ADLS Gen2 (`az://`, `abfs://`, `abfss://`).
    Azure,
    /// Google Cloud Storage (`gs://`).
    Gcs,
}

/// An object-store location: a bucket (container) and a key or key prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectUrl {
    /// Which store.
    pub scheme: Scheme,
    /// The scheme as written (`s3`, `s3a`, `az`, `abfss`, …).
    pub scheme_text: String,
    /// The URL's authority: the bucket or container (for `abfss://`, `container@account.dfs.core.windows.net`).
    pub bucket: String,
    /// The key (or key prefix), without a leading `/`; may be empty.
    pub key: String,
}

impl ObjectUrl {
    /// Parses `text` when it is an object-store URL; `None` when it is not
    /// one (a local path), an error when the scheme is one but the rest is not.
    pub fn parse(text: &str) -> Option<Result<Self, LocationError>> {
        let (scheme_text, rest) = text.split_once("://")?;
        let scheme = match scheme_text {
            "s3" | "s3a" => Scheme::S3,
            "az" | "abfs" | "abfss" | "adl" | "azure" => Scheme::Azure,
            "gs" => Scheme::Gcs,
            _ => return None,
        };
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Some(Err(LocationError::Invalid {
                url: text.to_string(),
                reason: "no bucket (write e.g. s3://bucket/prefix)".to_string(),
            }));
        }
        Some(Ok(Self {
            scheme,
            scheme_text: scheme_text.to_string(),
            bucket: bucket.to_string(),
            key: key.trim_start_matches('/').to_string(),
        }))
    }

    /// The object URL a path carries (see the module documentation), if any.
    pub fn from_path(path: &Path) -> Option<Result<Self, LocationError>> {
        Self::parse(path.to_str()?)
    }

    /// The same bucket, another key.
    pub fn with_key(&self, key: &str) -> Self {
        Self {
            key: key.to_string(),
            ..self.clone()
        }
    }

    /// The key as a prefix to list under: empty, or ending with `/`.
    pub fn prefix(&self) -> String {
        let key = self.key.trim_end_matches('/');
        if key.is_empty() {
            String::new()
        } else {
            format!("{key}/")
        }
    }

    /// The URL naming the whole bucket: what a store is registered under.
    pub fn store_url(&self) -> Result<url::Url, LocationError> {
        url::Url::parse(&format!("{}://{}", self.scheme_text, self.bucket)).map_err(|e| {
            LocationError::Invalid {
                url: self.to_string(),
                reason: e.to_string(),
            }
        })
    }

    /// The URL DataFusion is given: the key percent-encoded segment by
    /// segment, so `#`, `?`, `%` and spaces in keys name exactly that object.
    /// With `folder`, a trailing `/` (a prefix of part objects).
    pub fn scan_url(&self, folder: bool) -> Result<url::Url, LocationError> {
        let mut url = self.store_url()?;
        let key = self.key.trim_end_matches('/');
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.clear();
            if !key.is_empty() {
                segments.extend(key.split('/'));
            }
            if folder {
                segments.push("");
            }
        }
        Ok(url)
    }

    /// The path that carries this URL (see the module documentation).
    pub fn to_path(&self) -> PathBuf {
        PathBuf::from(self.to_string())
    }
}

impl std::fmt::Display for ObjectUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}/{}", self.scheme_text, self.bucket, self.key)
    }
}

/// How object-store clients are built (`[lake.object_store]`, resolved).
/// Credentials are never here: they come from the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectStoreOptions {
    /// Endpoint URL (an S3-compatible server, Azurite, a GCS emulator).
    pub endpoint: Option<String>,
    /// Region (S3).
    pub region: Option<String>,
    /// Allow plain `http://` endpoints.
    pub allow_http: Option<bool>,
    /// Virtual-hosted-style requests (`bucket.host`) instead of path-style (S3).
    pub virtual_hosted_style: Option<bool>,
    /// Environment variable holding the access key id, instead of `AWS_ACCESS_KEY_ID`.
    pub access_key_id_env: Option<String>,
    /// Environment variable holding the secret key, instead of `AWS_SECRET_ACCESS_KEY`
    /// (S3) or `AZURE_STORAGE_ACCOUNT_KEY` (Azure); for GCS, one holding a
    /// service account key (JSON).
    pub secret_access_key_env: Option<String>,
    /// Unsigned requests (public buckets, local emulators): no credentials
    /// are looked for.
    pub anonymous: Option<bool>,
    /// Retries of one request (default [`DEFAULT_MAX_RETRIES`]).
    pub max_retries: Option<usize>,
    /// Longest time one request is retried (default [`DEFAULT_RETRY_TIMEOUT`]).
    pub retry_timeout: Option<Duration>,
}

/// Default retries of one request: enough for a throttled (503) store, few
/// enough that an unreachable endpoint is an error within seconds.
pub const DEFAULT_MAX_RETRIES: usize = 4;

/// Default bound on the retries of one request.
pub const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(30);

/// Environment variables whose values are secrets, whatever the store.
const SECRET_ENV: &[&str] = &[
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_MASTER_KEY",
    "AZURE_STORAGE_SAS_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_TOKEN",
    "AZURE_CLIENT_SECRET",
    "GOOGLE_SERVICE_ACCOUNT_KEY",
];

/// `text` with every secret value this process knows replaced by `***`: the
/// values of the standard secret variables and of the ones
/// `[lake.object_store]` names. Short values (under 8 characters) are left:
/// replacing them would mangle ordinary words and no real key is that short.
pub fn redact(text: &str, options: &ObjectStoreOptions) -> String {
    let mut out = text.to_string();
    let names = SECRET_ENV
        .iter()
        .map(|s| s.to_string())
        .chain(options.secret_access_key_env.iter().cloned());
    for name in names {
        if let Ok(value) = std::env::var(&name)
            && value.len() >= 8
        {
            out = out.replace(&value, "***");
        }
    }
    // Secrets read from AWS profiles and credential processes.
    for value in aws_profile::secrets() {
        if value.len() >= 8 {
            out = out.replace(&value, "***");
        }
    }
    out
}

/// One line of an error chain, secrets removed.
pub fn error_line(e: &dyn std::error::Error, options: &ObjectStoreOptions) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        next = cause.source();
    }
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    redact(&line, options)
}

/// Builds the client for the bucket of `url`: credentials and settings from
/// the environment, then `options` over them.
pub fn build_store(
    url: &ObjectUrl,
    options: &ObjectStoreOptions,
) -> Result<Arc<dyn ObjectStore>, LocationError> {
    let retry = object_store::RetryConfig {
        max_retries: options.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
        retry_timeout: options.retry_timeout.unwrap_or(DEFAULT_RETRY_TIMEOUT),
        ..Default::default()
    };
    let base = url.store_url()?.to_string();
    let env = |name: &Option<String>| name.as_ref().and_then(|n| std::env::var(n).ok());
    let setup = |e: object_store::Error| LocationError::Setup {
        url: url.to_string(),
        reason: error_line(&e, options),
    };
    match url.scheme {
        Scheme::S3 => {
            let mut builder = object_store::aws::AmazonS3Builder::from_env()
                .with_url(base)
                .with_retry(retry);
            // The named profile (AWS_PROFILE, ~/.aws/…), under what the
            // environment and `options` set explicitly.
            if options.anonymous != Some(true) {
                let explicit_keys = env(&options.access_key_id_env).is_some();
                builder = aws_profile::apply(builder, explicit_keys).map_err(|reason| {
                    LocationError::Setup {
                        url: url.to_string(),
                        reason,
                    }
                })?;
            }
            if let Some(endpoint) = &options.endpoint {
                builder = builder.with_endpoint(endpoint);
            }
            if let Some(region) = &options.region {
                builder = builder.with_region(region);
            }
            if let Some(allow) = options.allow_http {
                builder = builder.with_allow_http(allow);
            }
            if let Some(virtual_hosted) = options.virtual_hosted_style {
                builder = builder.with_virtual_hosted_style_request(virtual_hosted);
            }
            if let Some(key) = env(&options.access_key_id_env) {
                builder = builder.with_access_key_id(key);
            }
            if let Some(secret) = env(&options.secret_access_key_env) {
                builder = builder.with_secret_access_key(secret);
            }
            if let Some(anonymous) = options.anonymous {
                builder = builder.with_skip_signature(anonymous);
            }
            Ok(Arc::new(builder.build().map_err(setup)?))
        }
        Scheme::Azure => {
            let mut builder = object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_url(base)
                .with_retry(retry);
            if let Some(endpoint) = &options.endpoint {
                builder = builder.with_endpoint(endpoint.clone());
            }
            if let Some(allow) = options.allow_http {
                builder = builder.with_allow_http(allow);
            }
            if let Some(account) = env(&options.access_key_id_env) {
                builder = builder.with_account(account);
            }
            if let Some(key) = env(&options.secret_access_key_env) {
                builder = builder.with_access_key(key);
            }
            if let Some(anonymous) = options.anonymous {
                builder = builder.with_skip_signature(anonymous);
            }
            Ok(Arc::new(builder.build().map_err(setup)?))
        }
        Scheme::Gcs => {
            use object_store::ClientConfigKey;
            use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
            // `GOOGLE_APPLICATION_CREDENTIALS`, `GOOGLE_SERVICE_ACCOUNT*`,
            // `GOOGLE_BASE_URL`, … from the environment; otherwise the
            // application default credentials (gcloud's file, then the
            // instance metadata server).
            let mut builder = GoogleCloudStorageBuilder::from_env()
                .with_url(base)
                .with_retry(retry);
            if let Some(endpoint) = &options.endpoint {
                builder = builder.with_base_url(endpoint.trim_end_matches('/'));
            }
            if let Some(allow) = options.allow_http {
                builder = builder.with_config(
                    GoogleConfigKey::Client(ClientConfigKey::AllowHttp),
                    allow.to_string(),
                );
            }
            if let Some(key) = env(&options.secret_access_key_env) {
                builder = builder.with_service_account_key(key);
            }
            if let Some(anonymous) = options.anonymous {
                builder = builder.with_skip_signature(anonymous);
            }
            Ok(Arc::new(builder.build().map_err(setup)?))
        }
    }
}

/// A key as the store has it. `Path::from` would percent-encode characters
/// such as `[` or `#` into a different key; a key `parse` rejects (an empty
/// segment, `..`) has no other spelling, so it is taken encoded.
pub fn key_path(key: &str) -> object_store::path::Path {
    object_store::path::Path::parse(key).unwrap_or_else(|_| object_store::path::Path::from(key))
}

/// One object found under a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The object's key.
    pub key: String,
    /// Bytes.
    pub size: u64,
    /// Last modification, nanoseconds since the Unix epoch.
    pub modified_ns: i64,
    /// The ETag (or version id) the store gave.
    pub etag: Option<String>,
}

/// Every object under `url`'s prefix (with `after`, only keys greater
/// than it: S3's `start-after`, Azure's `marker`), sorted by key.
pub async fn list(
    store: &dyn ObjectStore,
    url: &ObjectUrl,
    after: Option<&str>,
    options: &ObjectStoreOptions,
) -> Result<Vec<Listed>, LocationError> {
    use futures::TryStreamExt;
    let prefix = url.prefix();
    let prefix_path = key_path(prefix.trim_end_matches('/'));
    let prefix_path = (!prefix.is_empty()).then_some(&prefix_path);
    let stream = match after {
        Some(after) => store.list_with_offset(prefix_path, &key_path(after)),
        None => store.list(prefix_path),
    };
    let listing: Vec<object_store::ObjectMeta> =
        stream
            .try_collect()
            .await
            .map_err(|e| LocationError::List {
                url: url.to_string(),
                reason: error_line(&e, options),
            })?;
    let mut found: Vec<Listed> = listing
        .into_iter()
        .map(|meta| Listed {
            key: meta.location.to_string(),
            size: meta.size,
            modified_ns: meta.last_modified.timestamp_nanos_opt().unwrap_or(0),
            etag: meta.e_tag.or(meta.version),
        })
        .collect();
    found.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_urls_are_told_from_paths() {
        assert!(ObjectUrl::parse("/data/lake").is_none());
        assert!(ObjectUrl::parse("lake/s3/x.parquet").is_none());
        assert!(ObjectUrl::parse("file:///data/lake").is_none());
        let url = ObjectUrl::parse("s3://lake/flights/day=1/")
            .unwrap()
            .unwrap();
        assert_eq!(
            (url.scheme, url.bucket.as_str(), url.key.as_str()),
            (Scheme::S3, "lake", "flights/day=1/")
        );
        assert_eq!(url.prefix(), "flights/day=1/");
        assert_eq!(url.to_string(), "s3://lake/flights/day=1/");
        let bucket = ObjectUrl::parse("s3://lake").unwrap().unwrap();
        assert_eq!((bucket.key.as_str(), bucket.prefix()), ("", String::new()));
        assert_eq!(
            ObjectUrl::parse("abfss://c@acct.dfs.core.windows.net/x")
                .unwrap()
                .unwrap()
                .scheme,
            Scheme::Azure
        );
        assert_eq!(
            ObjectUrl::parse("s3:///x")
                .unwrap()
                .unwrap_err()
                .to_string(),
            "s3:///x: no bucket (write e.g. s3://bucket/prefix)"
        );
    }

    #[test]
    fn scan_urls_name_exactly_one_object() {
        let url = ObjectUrl::parse("s3://lake/a b/x#1?.parquet")
            .unwrap()
            .unwrap();
        assert_eq!(
            url.scan_url(false).unwrap().as_str(),
            "s3://lake/a%20b/x%231%3F.parquet"
        );
        let folder = ObjectUrl::parse("s3://lake/day=1").unwrap().unwrap();
        assert_eq!(folder.scan_url(true).unwrap().as_str(), "s3://lake/day=1/");
    }

    #[test]
    fn configured_secrets_are_redacted() {
        // A variable only this test sets, named by the options.
        // SAFETY: no other test reads or writes this variable.
        unsafe { std::env::set_var("DRIFTWATCH_TEST_REDACT_SECRET", "s3cr3t-value-xyz") };
        let options = ObjectStoreOptions {
            secret_access_key_env: Some("DRIFTWATCH_TEST_REDACT_SECRET".to_string()),
            ..Default::default()
        };
        assert_eq!(
            redact("denied for s3cr3t-value-xyz at x", &options),
            "denied for *** at x"
        );
    }
}
