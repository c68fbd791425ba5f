//! AWS named profiles: the shared `config` and `credentials` files every AWS
//! SDK and the CLI read (`AWS_PROFILE`, `~/.aws/credentials`, `~/.aws/config`).
//!
//! Why here: `object_store` reads credentials from environment variables,
//! web identity, ECS and instance metadata, but not from profiles, and a
//! sidecar on a laptop or a CI runner is usually given `AWS_PROFILE=…`. The
//! chain follows the SDKs' order: explicit keys in the environment win;
//! then the profile (`AWS_PROFILE`, else `default`); then what
//! `object_store` finds itself (web identity, ECS, instance metadata).
//!
//! A profile gives static keys (`aws_access_key_id`, `aws_secret_access_key`,
//! `aws_session_token`; the credentials file over the config file), or a
//! `credential_process` (run through `sh -c`, its JSON answer cached for the
//! whole process until five minutes before its `Expiration`, or halfway
//! through a shorter life; a failed run keeps keys not yet expired), and
//! `region` and `endpoint_url`.
//! Profiles that assume a role (`role_arn`) or use IAM Identity Center
//! (`sso_*`) are refused with a message when `AWS_PROFILE` names them: their
//! keys come from STS calls this client does not make.
//!
//! Budgets: each file at most 1 MiB; a credential process at most 60 s and
//! 64 KiB of output. Secret values read here are added to what
//! [`super::redact`] removes from messages.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use object_store::CredentialProvider;
use object_store::aws::AwsCredential;

/// The largest config or credentials file read.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// How long a credential process may run.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(60);

/// The most output a credential process may print.
const MAX_PROCESS_OUTPUT: usize = 64 << 10;

/// A credential process's keys are used until this long before they expire.
const REFRESH_BEFORE: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// Secret values read from profiles and credential processes, for
/// [`super::redact`].
static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The secret values read so far (see [`SECRETS`]).
pub fn secrets() -> Vec<String> {
    SECRETS.lock().map(|s| s.clone()).unwrap_or_default()
}

fn remember(secret: &str) {
    if let Ok(mut secrets) = SECRETS.lock()
        && !secrets.iter().any(|s| s == secret)
    {
        secrets.push(secret.to_string());
    }
}

/// One named profile, from both files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    /// Its name.
    pub name: String,
    /// Static keys: key id, secret, optional session token.
    pub keys: Option<(String, String, Option<String>)>,
    /// A command printing keys as JSON.
    pub credential_process: Option<String>,
    /// `region`.
    pub region: Option<String>,
    /// `endpoint_url` (an S3-compatible server).
    pub endpoint_url: Option<String>,
    /// Why the profile's keys cannot be had here (`role_arn`, `sso_*`).
    pub unsupported: Option<String>,
}

/// The profile the environment names, when a file has it: `AWS_PROFILE`
/// (else `default`) in `AWS_SHARED_CREDENTIALS_FILE` (else
/// `~/.aws/credentials`) and `AWS_CONFIG_FILE` (else `~/.aws/config`).
/// `Ok(None)` when neither file has it and `AWS_PROFILE` is unset; an error
/// when `AWS_PROFILE` names a profile no file has, or a file cannot be read.
pub fn load(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Profile>, String> {
    let named = env("AWS_PROFILE").filter(|p| !p.is_empty());
    let name = named.clone().unwrap_or_else(|| "default".to_string());
    let home = env("HOME").map(PathBuf::from);
    // `~/…` in the variables is the home folder, as the SDKs read it.
    let file = |var: &str, default: &str| match env(var) {
        Some(path) => Some(match (path.strip_prefix("~/"), &home) {
            (Some(rest), Some(home)) => home.join(rest),
            _ => PathBuf::from(path),
        }),
        None => home.as_ref().map(|h| h.join(".aws").join(default)),
    };
    let credentials = read(file("AWS_SHARED_CREDENTIALS_FILE", "credentials"))?;
    let config = read(file("AWS_CONFIG_FILE", "config"))?;
    // The credentials file names sections `[NAME]`; the config file
    // `[profile NAME]`, except `[default]`.
    let from_credentials = credentials.get(&name);
    let from_config = config
        .get(&format!("profile {name}"))
        .or_else(|| (name == "default").then(|| config.get("default")).flatten());
    if from_credentials.is_none() && from_config.is_none() {
        return match named {
            Some(_) => Err(format!(
                "AWS_PROFILE `{name}`: no such profile in the AWS config or credentials file"
            )),
            None => Ok(None),
        };
    }
    let get = |key: &str| {
        from_credentials
            .and_then(|s| s.get(key))
            .or_else(|| from_config.and_then(|s| s.get(key)))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let keys = match (get("aws_access_key_id"), get("aws_secret_access_key")) {
        (Some(id), Some(secret)) => {
            let token = get("aws_session_token");
            remember(&secret);
            if let Some(token) = &token {
                remember(token);
            }
            Some((id, secret, token))
        }
        _ => None,
    };
    let unsupported = ["role_arn", "sso_session", "sso_start_url", "web_identity_token_file"]
        .into_iter()
        .find(|key| get(key).is_some())
        .map(|key| {
            format!(
                "AWS profile `{name}` uses `{key}`, which needs STS or IAM Identity Center calls driftwatch does not make: give the profile keys or a `credential_process` (e.g. `aws configure export-credentials --profile {name} --format process`), or export AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
            )
        });
    Ok(Some(Profile {
        name,
        keys,
        credential_process: get("credential_process"),
        region: get("region"),
        endpoint_url: get("endpoint_url"),
        unsupported,
    }))
}

/// `builder` with the named profile applied (see [`load`]): its region and
/// endpoint whenever the environment gives none (the SDKs resolve them apart
/// from credentials); its keys or credential process when no keys are
/// exported (`explicit_keys`: given by another variable) — the SDKs' order,
/// before web identity and instance metadata, which `object_store` finds
/// itself. A role the user named is an error, never silently replaced by the
/// profile's base keys (the SDKs would assume it).
pub fn apply(
    mut builder: object_store::aws::AmazonS3Builder,
    explicit_keys: bool,
) -> Result<object_store::aws::AmazonS3Builder, String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let explicit_keys = explicit_keys || var("AWS_ACCESS_KEY_ID").is_some();
    let Some(profile) = load(&var)? else {
        return Ok(builder);
    };
    if var("AWS_REGION").is_none()
        && var("AWS_DEFAULT_REGION").is_none()
        && let Some(region) = &profile.region
    {
        builder = builder.with_region(region);
    }
    if var("AWS_ENDPOINT_URL").is_none()
        && var("AWS_ENDPOINT").is_none()
        && let Some(endpoint) = &profile.endpoint_url
    {
        builder = builder.with_endpoint(endpoint);
    }
    if explicit_keys {
        return Ok(builder);
    }
    if let Some(reason) = profile.unsupported
        && var("AWS_PROFILE").is_some()
    {
        return Err(reason);
    }
    Ok(match (profile.keys, profile.credential_process) {
        (Some((id, secret, token)), _) => {
            builder = builder
                .with_access_key_id(id)
                .with_secret_access_key(secret);
            match token {
                Some(token) => builder.with_token(token),
                None => builder,
            }
        }
        (None, Some(command)) => {
            builder.with_credentials(Arc::new(ProcessCredentials::new(command, profile.name)))
        }
        // An unusable `default` leaves the other sources.
        (None, None) => builder,
    })
}

/// A file's sections, or none when it does not exist.
fn read(path: Option<PathBuf>) -> Result<BTreeMap<String, BTreeMap<String, String>>, String> {
    use std::io::Read;
    let Some(path) = path else {
        return Ok(BTreeMap::new());
    };
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "{}: larger than {} KiB",
            path.display(),
            MAX_FILE_BYTES >> 10
        ));
    }
    Ok(parse(&String::from_utf8_lossy(&bytes)))
}

/// The INI dialect of the AWS files: `[section]`, `key = value`, comments
/// starting with `#` or `;`; indented lines are a nested block of the key
/// before them (`s3 =` then `  addressing_style = path`) and are skipped.
pub fn parse(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut sections: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let indented = line.starts_with([' ', '\t']);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
            sections.entry(name.clone()).or_default();
            current = Some(name);
            continue;
        }
        if indented {
            continue;
        }
        let (Some(section), Some((key, value))) = (&current, line.split_once('=')) else {
            continue;
        };
        sections
            .entry(section.clone())
            .or_default()
            .insert(key.trim().to_lowercase(), value.trim().to_string());
    }
    sections
}

/// Keys a credential process gave, by command, until they are about to
/// expire: shared by every store the process builds (one per bucket, and
/// `check` builds one to list and one to scan), so the command runs once.
type ProcessCache = HashMap<String, Cached>;

/// A credential process's keys: when to run it again, when they expire.
#[derive(Debug)]
struct Cached {
    credential: Arc<AwsCredential>,
    refresh_at: Option<DateTime<Utc>>,
    expires: Option<DateTime<Utc>>,
}
static PROCESS_CACHE: LazyLock<tokio::sync::Mutex<ProcessCache>> =
    LazyLock::new(|| tokio::sync::Mutex::new(HashMap::new()));

/// Keys from a `credential_process`, run when none are cached or the cached
/// ones are about to expire.
#[derive(Debug)]
pub struct ProcessCredentials {
    command: String,
    profile: String,
}

impl ProcessCredentials {
    /// A provider running `command` (from profile `profile`).
    pub fn new(command: String, profile: String) -> Self {
        Self { command, profile }
    }

    async fn run(&self) -> Result<(AwsCredential, Option<DateTime<Utc>>), String> {
        use tokio::io::AsyncReadExt;
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&self.command)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start it: {e}"))?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err("cannot read its output".to_string());
        };
        // Both streams are read within the budget (a process printing
        // without end is cut, not buffered), then it must exit.
        let budget = MAX_PROCESS_OUTPUT as u64 + 1;
        let run = async {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let (mut stdout, mut stderr) = (stdout.take(budget), stderr.take(budget));
            let (read_out, read_err) =
                tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
            read_out.and(read_err)?;
            let status = child.wait().await?;
            Ok::<_, std::io::Error>((status, out, err))
        };
        let (status, stdout, stderr) = tokio::time::timeout(PROCESS_TIMEOUT, run)
            .await
            .map_err(|_| format!("it ran longer than {} s", PROCESS_TIMEOUT.as_secs()))?
            .map_err(|e| format!("cannot run it: {e}"))?;
        if !status.success() {
            // stderr's first line says why (redacted before it is cut);
            // stdout may hold secrets and is never quoted.
            let said = super::redact(&String::from_utf8_lossy(&stderr), &Default::default());
            let first: String = said
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect();
            return Err(format!("it exited with {status}: {first}"));
        }
        if stdout.len() > MAX_PROCESS_OUTPUT {
            return Err(format!(
                "it printed more than {} KiB",
                MAX_PROCESS_OUTPUT >> 10
            ));
        }
        parse_process_output(&stdout)
    }
}

/// A credential process's answer: `{"Version": 1, "AccessKeyId": …,
/// "SecretAccessKey": …, "SessionToken": …, "Expiration": RFC 3339}`.
pub fn parse_process_output(
    stdout: &[u8],
) -> Result<(AwsCredential, Option<DateTime<Utc>>), String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Answer {
        version: i64,
        access_key_id: String,
        secret_access_key: String,
        #[serde(default)]
        session_token: Option<String>,
        #[serde(default)]
        expiration: Option<String>,
    }
    // The error never quotes the output: it holds the secret.
    let answer: Answer = serde_json::from_slice(stdout).map_err(|e| {
        format!(
            "its output is not the credential process JSON (line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    if answer.version != 1 {
        return Err(format!(
            "its output has Version {}; only 1 is known",
            answer.version
        ));
    }
    let expiration = match answer.expiration {
        Some(text) => Some(
            DateTime::parse_from_rfc3339(&text)
                .map_err(|e| format!("its Expiration `{text}` is not RFC 3339: {e}"))?
                .with_timezone(&Utc),
        ),
        None => None,
    };
    remember(&answer.secret_access_key);
    if let Some(token) = &answer.session_token {
        remember(token);
    }
    Ok((
        AwsCredential {
            key_id: answer.access_key_id,
            secret_key: answer.secret_access_key,
            token: answer.session_token,
        },
        expiration,
    ))
}

#[async_trait::async_trait]
impl CredentialProvider for ProcessCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        // Held while the process runs: concurrent requests wait for its
        // keys instead of each running it.
        let mut cache = PROCESS_CACHE.lock().await;
        let now = Utc::now();
        if let Some(cached) = cache.get(&self.command)
            && cached.refresh_at.is_none_or(|at| now < at)
        {
            return Ok(cached.credential.clone());
        }
        match self.run().await {
            Ok((credential, expires)) => {
                let credential = Arc::new(credential);
                // Refreshed five minutes before expiry, or halfway through a
                // shorter life (so short-lived keys are not fetched anew for
                // every request).
                let refresh_at = expires.map(|at| {
                    let life = at - now;
                    at - REFRESH_BEFORE.min(life / 2)
                });
                cache.insert(
                    self.command.clone(),
                    Cached {
                        credential: credential.clone(),
                        refresh_at,
                        expires,
                    },
                );
                Ok(credential)
            }
            // A failed refresh keeps keys that have not expired yet.
            Err(_)
                if cache
                    .get(&self.command)
                    .is_some_and(|c| c.expires.is_some_and(|at| now < at)) =>
            {
                Ok(cache[&self.command].credential.clone())
            }
            Err(reason) => Err(object_store::Error::Generic {
                store: "S3",
                source: format!(
                    "the credential_process of AWS profile `{}`: {reason}",
                    self.profile
                )
                .into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &[(&str, String)]) -> impl Fn(&str) -> Option<String> + use<> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn issue_16_profiles_read_as_the_aws_sdks_read_them() {
        let dir = tempfile::tempdir().unwrap();
        let credentials = dir.path().join("credentials");
        let config = dir.path().join("config");
        std::fs::write(
            &credentials,
            "[default]\naws_access_key_id = AKDEFAULT\naws_secret_access_key = secretdefault0\n\n\
             # a comment\n[ci]\naws_access_key_id=AKCI\naws_secret_access_key = secretci000000\naws_session_token = tok00000000\n",
        )
        .unwrap();
        std::fs::write(
            &config,
            "[default]\nregion = eu-west-1\n[profile ci]\nregion = us-east-2\nendpoint_url = http://127.0.0.1:9000\ns3 =\n  addressing_style = path\n\
             [profile proc]\ncredential_process = echo hi\n[profile role]\nrole_arn = arn:aws:iam::1:role/r\nsource_profile = default\n",
        )
        .unwrap();
        let files = |profile: Option<&str>| {
            let mut vars = vec![
                (
                    "AWS_SHARED_CREDENTIALS_FILE",
                    credentials.display().to_string(),
                ),
                ("AWS_CONFIG_FILE", config.display().to_string()),
            ];
            if let Some(p) = profile {
                vars.push(("AWS_PROFILE", p.to_string()));
            }
            env_of(&vars)
        };
        let default = load(&files(None)).unwrap().unwrap();
        assert_eq!(
            default.keys,
            Some(("AKDEFAULT".into(), "secretdefault0".into(), None))
        );
        assert_eq!(default.region.as_deref(), Some("eu-west-1"));
        let ci = load(&files(Some("ci"))).unwrap().unwrap();
        assert_eq!(
            ci.keys,
            Some((
                "AKCI".into(),
                "secretci000000".into(),
                Some("tok00000000".into())
            ))
        );
        assert_eq!(ci.region.as_deref(), Some("us-east-2"));
        assert_eq!(ci.endpoint_url.as_deref(), Some("http://127.0.0.1:9000"));
        let process = load(&files(Some("proc"))).unwrap().unwrap();
        assert_eq!(process.credential_process.as_deref(), Some("echo hi"));
        assert_eq!(process.keys, None);
        let role = load(&files(Some("role"))).unwrap().unwrap();
        assert!(
            role.unsupported
                .as_deref()
                .is_some_and(|u| u.starts_with("AWS profile `role` uses `role_arn`")),
            "{role:?}"
        );
        assert_eq!(
            load(&files(Some("nope"))).unwrap_err(),
            "AWS_PROFILE `nope`: no such profile in the AWS config or credentials file"
        );
        // `~/` in the variables is the home folder.
        let home = env_of(&[
            ("HOME", dir.path().display().to_string()),
            ("AWS_SHARED_CREDENTIALS_FILE", "~/credentials".to_string()),
            ("AWS_CONFIG_FILE", "~/config".to_string()),
            ("AWS_PROFILE", "ci".to_string()),
        ]);
        assert_eq!(
            load(&home).unwrap().unwrap().region.as_deref(),
            Some("us-east-2")
        );
        // No files, no AWS_PROFILE: nothing to read, no error.
        let none = env_of(&[("HOME", dir.path().join("absent").display().to_string())]);
        assert_eq!(load(&none).unwrap(), None);
        // Secrets read are redacted from then on.
        assert!(secrets().contains(&"secretci000000".to_string()));
    }

    #[test]
    fn issue_16_credential_process_output_is_checked_and_never_quoted() {
        let (credential, expires) = parse_process_output(
            br#"{"Version": 1, "AccessKeyId": "AKP", "SecretAccessKey": "secretprocess0", "SessionToken": "t", "Expiration": "2030-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(credential.key_id, "AKP");
        assert_eq!(credential.token.as_deref(), Some("t"));
        assert_eq!(
            expires.map(|e| e.to_rfc3339()).as_deref(),
            Some("2030-01-01T00:00:00+00:00")
        );
        let e = parse_process_output(
            br#"{"Version": 1, "AccessKeyId": "AKP", "SecretAccessKey": "topsecret123"#,
        )
        .unwrap_err();
        assert!(!e.contains("topsecret123"), "{e}");
        assert_eq!(
            parse_process_output(br#"{"Version": 2, "AccessKeyId": "A", "SecretAccessKey": "S"}"#)
                .unwrap_err(),
            "its output has Version 2; only 1 is known"
        );
    }

    proptest::proptest! {
        /// Any text parses (no panic), and what it says of a key it says exactly.
        #[test]
        fn issue_16_any_ini_text_parses(text in "\\PC{0,400}", value in "[a-zA-Z0-9/+]{1,40}") {
            let _ = parse(&text);
            let sections = parse(&format!("{text}\n[p]\nkey = {value}\n"));
            proptest::prop_assert_eq!(sections.get("p").and_then(|s| s.get("key")), Some(&value));
        }
    }
}
