//! `[[sources]]` in `driftwatch.toml`, as written ([`SourceSection`]) and
//! resolved ([`SourceConfig`]): one entry per event stream, each feeding one
//! dataset. Keys that do not belong to the entry's `kind` are errors, so a
//! Kafka key on an HTTP source never silently does nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::config::{parse_bytes, parse_interval};

/// Default window: 100,000 events or 60 seconds, whichever comes first.
pub const DEFAULT_WINDOW_ROWS: u64 = 100_000;
/// Default window length in seconds.
pub const DEFAULT_WINDOW_SECONDS: u64 = 60;
/// Default `max_body` of an `http` source.
pub const DEFAULT_MAX_BODY: usize = 64 << 20;
/// The largest `max_body` accepted: a post is written to the write-ahead log
/// as one frame, frames are limited to [`super::wal::MAX_FRAME`] (2 GiB), and
/// decoded rows take more room than their text — half of it leaves room.
pub const MAX_BODY_LIMIT: usize = 1 << 30;
/// Default `max_columns`: the widest schema inference may fix.
pub const DEFAULT_MAX_COLUMNS: usize = 1000;
/// Default `max_line` of an `ndjson_files` source.
pub const DEFAULT_MAX_LINE: usize = 1 << 20;

/// Which kind of stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// `POST /ingest/{dataset}` on the agent's HTTP port.
    Http,
    /// Kafka topics, consumed as a member of a consumer group.
    Kafka,
    /// NDJSON files (`*.ndjson`, `*.jsonl`) landing in a folder.
    NdjsonFiles,
}

impl SourceKind {
    /// The name used in config, version paths, `/status` and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Http => "http",
            SourceKind::Kafka => "kafka",
            SourceKind::NdjsonFiles => "ndjson_files",
        }
    }
}

/// One `[[sources]]` entry: an event stream, windowed into batches of one dataset.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    /// `http`, `kafka` or `ndjson_files`.
    pub kind: SourceKind,
    /// The dataset (rule file `dataset:`) each closed window is evaluated for.
    pub dataset: String,
    /// When a window closes (tumbling): after `rows` events or `seconds`
    /// after its first event, whichever comes first. Default `{ rows =
    /// 100000, seconds = 60 }`; give one key to close by that alone.
    pub window: Option<WindowSection>,
    /// `http`: largest request body, e.g. `64MiB` (default); larger bodies
    /// get 413. At most `1GiB` (a post is one write-ahead-log frame).
    pub max_body: Option<String>,
    /// The most columns a schema inferred from the first events may have
    /// (default 1000). Wider first events are refused (400 for a post, dead
    /// letters for file lines and Kafka messages) and fix no schema. Does not
    /// apply to a schema declared in the rule file.
    pub max_columns: Option<usize>,
    /// `ndjson_files`: the longest line read, e.g. `1MiB` (default); a longer
    /// line becomes a dead letter ("line longer than N bytes") and reading
    /// goes on without buffering it.
    pub max_line: Option<String>,
    /// `http`: how long a body may take to arrive once it is being read,
    /// e.g. `30s` (default); a slower one gets 408 and frees its slot.
    pub body_timeout: Option<String>,
    /// `http`: environment variable holding a bearer token that posts must
    /// carry (`Authorization: Bearer …`). Default: no token.
    pub bearer_token_env: Option<String>,
    /// `http`: without a `schema` check in the dataset's rule file, let the
    /// first post fix the stream's schema (inferred from its events).
    /// Default `false`: such posts get 409 until a schema is declared,
    /// because anyone who can post would otherwise choose the schema.
    pub infer_schema: Option<bool>,
    /// Events accepted but not yet evaluated beyond which `http` posts get
    /// 429 with `Retry-After`, `ndjson_files` reading waits, and `kafka`
    /// consumption pauses. Default `10 × window.rows`, at least 1,000,000.
    pub max_pending_events: Option<u64>,
    /// `ndjson_files`: the folder to watch (relative to this file). Default:
    /// the first watched lake folder.
    pub path: Option<PathBuf>,
    /// `ndjson_files`: globs of event files under `path`. Default
    /// `["**/*.ndjson", "**/*.jsonl"]`.
    pub include: Option<Vec<String>>,
    /// `ndjson_files`: how long a file must stay unchanged before it is read (default `2s`).
    pub settle: Option<String>,
    /// `kafka`: bootstrap servers, e.g. `kafka-1:9092,kafka-2:9092`.
    pub brokers: Option<String>,
    /// `kafka`: topics to consume (JSON events, one per message).
    pub topics: Option<Vec<String>>,
    /// `kafka`: consumer group id; agents with the same group share the partitions.
    pub group: Option<String>,
    /// `kafka`: extra librdkafka properties, e.g. `{ "security.protocol" = "ssl" }`.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// `window = { rows = …, seconds = … }`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowSection {
    /// Close after this many events.
    pub rows: Option<u64>,
    /// Close this many seconds after the window's first event (fractions allowed).
    pub seconds: Option<f64>,
}

/// When a window closes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowSpec {
    /// After this many events.
    pub rows: Option<u64>,
    /// This long after the first event.
    pub duration: Option<Duration>,
}

impl WindowSpec {
    /// Rows still fitting in a window holding `rows`.
    pub fn room(&self, rows: u64) -> u64 {
        self.rows
            .map(|r| r.saturating_sub(rows))
            .unwrap_or(u64::MAX)
    }
}

/// A resolved stream source.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceConfig {
    /// `{kind}:{dataset}`, unique; in logs, `/status` and metrics.
    pub name: String,
    /// The dataset.
    pub dataset: String,
    /// When windows close.
    pub window: WindowSpec,
    /// The most columns an inferred schema may have.
    pub max_columns: usize,
    /// Kind-specific settings.
    pub settings: SourceSettings,
}

impl SourceConfig {
    /// The kind.
    pub fn kind(&self) -> SourceKind {
        match self.settings {
            SourceSettings::Http { .. } => SourceKind::Http,
            SourceSettings::Kafka { .. } => SourceKind::Kafka,
            SourceSettings::NdjsonFiles { .. } => SourceKind::NdjsonFiles,
        }
    }
}

/// Kind-specific settings.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSettings {
    /// HTTP ingest.
    Http {
        /// Largest body, bytes.
        max_body: usize,
        /// Time a body may take to arrive.
        body_timeout: Duration,
        /// 429 beyond this many unevaluated events.
        max_pending_events: u64,
        /// The environment variable of the bearer token.
        bearer_token_env: Option<String>,
        /// Whether posts may fix the schema when no rule file declares one.
        infer_schema: bool,
    },
    /// NDJSON files.
    NdjsonFiles {
        /// The folder.
        path: PathBuf,
        /// Globs of event files.
        include: Vec<String>,
        /// Unchanged-for time before reading.
        settle: Duration,
        /// The longest line read, bytes; longer lines are dead letters.
        max_line: usize,
        /// Reading pauses beyond this many unevaluated events.
        max_pending_events: u64,
    },
    /// Kafka.
    Kafka {
        /// Bootstrap servers.
        brokers: String,
        /// Topics.
        topics: Vec<String>,
        /// Consumer group.
        group: String,
        /// Extra librdkafka properties.
        options: BTreeMap<String, String>,
        /// Consumption pauses beyond this many closed, uncommitted events.
        max_pending_events: u64,
    },
}

/// Resolves `[[sources]]`; errors are `(key, message)` with keys like
/// `sources[0].window.rows`. `base` resolves relative paths; `lake` is the
/// first watched folder (the default `path` of `ndjson_files`).
pub fn resolve(
    sections: &[SourceSection],
    base: &Path,
    lake: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<SourceConfig>, (String, String)> {
    let mut out: Vec<SourceConfig> = Vec::new();
    for (i, s) in sections.iter().enumerate() {
        let key = |k: &str| format!("sources[{i}].{k}");
        if s.dataset.is_empty()
            || !s
                .dataset
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err((
                key("dataset"),
                format!(
                    "`{}`: write a dataset name of letters, digits, `-`, `_` and `.`",
                    s.dataset
                ),
            ));
        }
        let kind = s.kind;
        let only = |k: &str, set: bool, kinds: &str| -> Result<(), (String, String)> {
            if set {
                Err((
                    key(k),
                    format!(
                        "only for {kinds}; this source has kind = \"{}\"",
                        kind.as_str()
                    ),
                ))
            } else {
                Ok(())
            }
        };
        let http = kind == SourceKind::Http;
        let files = kind == SourceKind::NdjsonFiles;
        let kafka = kind == SourceKind::Kafka;
        only("max_body", !http && s.max_body.is_some(), "kind = \"http\"")?;
        only(
            "max_line",
            !files && s.max_line.is_some(),
            "kind = \"ndjson_files\"",
        )?;
        let max_columns = s.max_columns.unwrap_or(DEFAULT_MAX_COLUMNS);
        if max_columns == 0 {
            return Err((key("max_columns"), "must be at least 1".to_string()));
        }
        only(
            "body_timeout",
            !http && s.body_timeout.is_some(),
            "kind = \"http\"",
        )?;
        only(
            "bearer_token_env",
            !http && s.bearer_token_env.is_some(),
            "kind = \"http\"",
        )?;
        only(
            "infer_schema",
            !http && s.infer_schema.is_some(),
            "kind = \"http\"",
        )?;
        for (k, set) in [
            ("path", s.path.is_some()),
            ("include", s.include.is_some()),
            ("settle", s.settle.is_some()),
        ] {
            only(k, !files && set, "kind = \"ndjson_files\"")?;
        }
        for (k, set) in [
            ("brokers", s.brokers.is_some()),
            ("topics", s.topics.is_some()),
            ("group", s.group.is_some()),
            ("options", !s.options.is_empty()),
        ] {
            only(k, !kafka && set, "kind = \"kafka\"")?;
        }

        let window = match &s.window {
            None => WindowSpec {
                rows: Some(DEFAULT_WINDOW_ROWS),
                duration: Some(Duration::from_secs(DEFAULT_WINDOW_SECONDS)),
            },
            Some(w) => {
                if w.rows.is_none() && w.seconds.is_none() {
                    return Err((key("window"), "give `rows`, `seconds` or both".to_string()));
                }
                if w.rows == Some(0) {
                    return Err((key("window.rows"), "must be at least 1".to_string()));
                }
                let duration = match w.seconds {
                    None => None,
                    Some(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 * 365.0 => {
                        Some(Duration::from_secs_f64(s))
                    }
                    Some(s) => {
                        return Err((
                            key("window.seconds"),
                            format!("{s}: must be a positive number of seconds"),
                        ));
                    }
                };
                WindowSpec {
                    rows: w.rows,
                    duration,
                }
            }
        };
        let pending = s.max_pending_events.unwrap_or_else(|| {
            window
                .rows
                .map(|r| r.saturating_mul(10))
                .unwrap_or(0)
                .max(1_000_000)
        });
        if pending == 0 {
            return Err((key("max_pending_events"), "must be at least 1".to_string()));
        }
        let settings = match kind {
            SourceKind::Http => {
                let max_body = match &s.max_body {
                    Some(t) => parse_bytes(t).map_err(|m| (key("max_body"), m))?,
                    None => DEFAULT_MAX_BODY,
                };
                if max_body > MAX_BODY_LIMIT {
                    return Err((
                        key("max_body"),
                        format!(
                            "{max_body} bytes: must be at most 1GiB ({MAX_BODY_LIMIT} bytes), since a post is written to the write-ahead log as one frame and frames are limited to 2GiB"
                        ),
                    ));
                }
                if max_body == 0 {
                    return Err((key("max_body"), "must be greater than zero".to_string()));
                }
                if let Some(var) = &s.bearer_token_env
                    && env(var).is_none_or(|v| v.is_empty())
                {
                    return Err((
                        key("bearer_token_env"),
                        format!("environment variable `{var}` is not set"),
                    ));
                }
                let body_timeout = match &s.body_timeout {
                    Some(t) => parse_interval(t).map_err(|m| (key("body_timeout"), m))?,
                    None => Duration::from_secs(30),
                };
                if body_timeout.is_zero() {
                    return Err((key("body_timeout"), "must be greater than zero".to_string()));
                }
                SourceSettings::Http {
                    max_body,
                    body_timeout,
                    max_pending_events: pending,
                    bearer_token_env: s.bearer_token_env.clone(),
                    infer_schema: s.infer_schema.unwrap_or(false),
                }
            }
            SourceKind::NdjsonFiles => {
                let path = match (&s.path, lake) {
                    (Some(p), _) if p.is_absolute() => p.clone(),
                    (Some(p), _) => base.join(p),
                    (None, Some(l)) => l.to_path_buf(),
                    (None, None) => {
                        return Err((
                            key("path"),
                            "give the folder the event files land in".to_string(),
                        ));
                    }
                };
                let include = s
                    .include
                    .clone()
                    .unwrap_or_else(|| vec!["**/*.ndjson".to_string(), "**/*.jsonl".to_string()]);
                for g in &include {
                    globset::Glob::new(g).map_err(|e| (key("include"), e.to_string()))?;
                }
                let settle = match &s.settle {
                    Some(t) => parse_interval(t).map_err(|m| (key("settle"), m))?,
                    None => Duration::from_secs(2),
                };
                let max_line = match &s.max_line {
                    Some(t) => parse_bytes(t).map_err(|m| (key("max_line"), m))?,
                    None => DEFAULT_MAX_LINE,
                };
                if max_line == 0 {
                    return Err((key("max_line"), "must be greater than zero".to_string()));
                }
                SourceSettings::NdjsonFiles {
                    path,
                    include,
                    settle,
                    max_line,
                    max_pending_events: pending,
                }
            }
            SourceKind::Kafka => {
                let need = |k: &str, v: Option<String>| {
                    v.filter(|v| !v.trim().is_empty())
                        .ok_or_else(|| (key(k), "required for kind = \"kafka\"".to_string()))
                };
                let brokers = need("brokers", s.brokers.clone())?;
                let group = need("group", s.group.clone())?;
                let topics = s.topics.clone().unwrap_or_default();
                if topics.is_empty() || topics.iter().any(|t| t.trim().is_empty()) {
                    return Err((key("topics"), "list one or more topic names".to_string()));
                }
                for reserved in [
                    "group.id",
                    "bootstrap.servers",
                    "enable.auto.commit",
                    "enable.auto.offset.store",
                ] {
                    if s.options.contains_key(reserved) {
                        return Err((
                            key(&format!("options.\"{reserved}\"")),
                            "set by driftwatch (it commits offsets itself after a window is recorded)"
                                .to_string(),
                        ));
                    }
                }
                SourceSettings::Kafka {
                    brokers,
                    topics,
                    group,
                    options: s.options.clone(),
                    max_pending_events: pending,
                }
            }
        };
        let name = format!("{}:{}", kind.as_str(), s.dataset);
        if out.iter().any(|o| o.name == name) {
            return Err((
                key("dataset"),
                format!(
                    "a second `{}` source for dataset `{}`; one stream of a kind per dataset",
                    kind.as_str(),
                    s.dataset
                ),
            ));
        }
        out.push(SourceConfig {
            name,
            dataset: s.dataset.clone(),
            window,
            max_columns,
            settings,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<SourceConfig>, (String, String)> {
        #[derive(Deserialize)]
        struct Doc {
            sources: Vec<SourceSection>,
        }
        let doc: Doc = toml::from_str(text).unwrap();
        resolve(
            &doc.sources,
            Path::new("/etc/dw"),
            Some(Path::new("/lake")),
            &|v| (v == "TOKEN").then(|| "s3cret".to_string()),
        )
    }

    #[test]
    fn defaults_and_kinds_resolve() {
        let s = parse(
            "[[sources]]\nkind = \"http\"\ndataset = \"orders\"\nbearer_token_env = \"TOKEN\"\n\
             [[sources]]\nkind = \"ndjson_files\"\ndataset = \"orders\"\nwindow = { seconds = 0.5 }\n\
             [[sources]]\nkind = \"kafka\"\ndataset = \"clicks\"\nbrokers = \"k:9092\"\ntopics = [\"c\"]\ngroup = \"g\"\nwindow = { rows = 10 }\n",
        )
        .unwrap();
        assert_eq!(s[0].name, "http:orders");
        assert_eq!(s[0].window.rows, Some(100_000));
        assert_eq!(s[0].window.duration, Some(Duration::from_secs(60)));
        match &s[0].settings {
            SourceSettings::Http {
                max_body,
                max_pending_events,
                ..
            } => {
                assert_eq!(*max_body, 64 << 20);
                assert_eq!(*max_pending_events, 1_000_000);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s[1].window.rows, None);
        assert_eq!(s[1].window.duration, Some(Duration::from_millis(500)));
        match &s[1].settings {
            SourceSettings::NdjsonFiles { path, include, .. } => {
                assert_eq!(path, Path::new("/lake"));
                assert_eq!(include.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s[2].kind(), SourceKind::Kafka);
        assert_eq!(s[2].window.room(4), 6);
    }

    #[test]
    fn mistakes_name_the_key() {
        let cases = [
            (
                "kind = \"http\"\ndataset = \"o\"\ntopics = [\"x\"]",
                "sources[0].topics",
                "only for kind = \"kafka\"; this source has kind = \"http\"",
            ),
            (
                "kind = \"kafka\"\ndataset = \"o\"\ngroup = \"g\"\ntopics = [\"x\"]",
                "sources[0].brokers",
                "required for kind = \"kafka\"",
            ),
            (
                "kind = \"http\"\ndataset = \"o\"\nwindow = { rows = 0 }",
                "sources[0].window.rows",
                "must be at least 1",
            ),
            (
                "kind = \"http\"\ndataset = \"o\"\nbearer_token_env = \"NOPE\"",
                "sources[0].bearer_token_env",
                "environment variable `NOPE` is not set",
            ),
            (
                "kind = \"http\"\ndataset = \"a/b\"",
                "sources[0].dataset",
                "`a/b`: write a dataset name of letters, digits, `-`, `_` and `.`",
            ),
        ];
        for (body, key, message) in cases {
            let e = parse(&format!("[[sources]]\n{body}\n")).unwrap_err();
            assert_eq!((e.0.as_str(), e.1.as_str()), (key, message), "{body}");
        }
        let e = parse(
            "[[sources]]\nkind = \"http\"\ndataset = \"o\"\n[[sources]]\nkind = \"http\"\ndataset = \"o\"\n",
        )
        .unwrap_err();
        assert_eq!(e.0, "sources[1].dataset");
    }

    #[test]
    fn issue_15_max_body_is_capped_below_the_wal_frame_limit() {
        const { assert!((MAX_BODY_LIMIT as u64) < super::super::wal::MAX_FRAME as u64) };
        let e = parse("[[sources]]\nkind = \"http\"\ndataset = \"o\"\nmax_body = \"2GiB\"\n")
            .unwrap_err();
        assert_eq!(
            (e.0.as_str(), e.1.as_str()),
            (
                "sources[0].max_body",
                "2147483648 bytes: must be at most 1GiB (1073741824 bytes), since a post is written to the write-ahead log as one frame and frames are limited to 2GiB"
            )
        );
        let ok =
            parse("[[sources]]\nkind = \"http\"\ndataset = \"o\"\nmax_body = \"1GiB\"\n").unwrap();
        assert!(
            matches!(ok[0].settings, SourceSettings::Http { max_body, .. } if max_body == 1 << 30)
        );
    }

    #[test]
    fn issue_15_schema_width_and_line_length_have_defaults_and_keys() {
        let s = parse(
            "[[sources]]\nkind = \"ndjson_files\"\ndataset = \"o\"\n\
             [[sources]]\nkind = \"ndjson_files\"\ndataset = \"p\"\nmax_columns = 20\nmax_line = \"4KiB\"\n",
        )
        .unwrap();
        assert_eq!((s[0].max_columns, s[1].max_columns), (1000, 20));
        let lines: Vec<usize> = s
            .iter()
            .map(|c| match c.settings {
                SourceSettings::NdjsonFiles { max_line, .. } => max_line,
                _ => 0,
            })
            .collect();
        assert_eq!(lines, vec![1 << 20, 4096]);
        for (body, key, message) in [
            (
                "kind = \"http\"\ndataset = \"o\"\nmax_line = \"1KiB\"",
                "sources[0].max_line",
                "only for kind = \"ndjson_files\"; this source has kind = \"http\"",
            ),
            (
                "kind = \"http\"\ndataset = \"o\"\nmax_columns = 0",
                "sources[0].max_columns",
                "must be at least 1",
            ),
        ] {
            let e = parse(&format!("[[sources]]\n{body}\n")).unwrap_err();
            assert_eq!((e.0.as_str(), e.1.as_str()), (key, message), "{body}");
        }
    }
}
