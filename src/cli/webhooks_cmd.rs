//! `driftwatch webhooks` (the outbox as a table or JSON, and `retry ID` to
//! re-queue a dead letter) and `driftwatch report` (a dataset's HTML page):
//! the commands that read an agent's state. A running agent owns the store,
//! so they go through its HTTP API when it answers; a stopped agent's store is
//! used directly (a re-queued event is then sent when the agent starts).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use driftwatch::agent::{self, WebhooksDocument};
use driftwatch::config;
use driftwatch::state::{RetryResult, StateError, Store};

use super::{EXIT_USAGE, Format, ReportArgs, WebhooksArgs, WebhooksCommand};

/// `driftwatch report --state DIR --dataset NAME --output FILE`.
pub async fn report(args: ReportArgs) -> Result<i32> {
    let page = match target(None, Some(&args.state)).await? {
        Target::Agent(addr) => {
            let path = format!(
                "/report/{}?refresh=0",
                driftwatch::report::html::percent_encode(&args.dataset)
            );
            let (code, body) = agent::http_get(addr, &path, Duration::from_secs(30))
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            match code {
                200 => Some(body),
                404 => None,
                _ => bail!("{addr}{path} answered {code}: {}", body.trim()),
            }
        }
        Target::Store(state) => {
            agent::pages::dataset_page(&open_store(&state)?, &args.dataset, None)?
        }
    };
    let Some(page) = page else {
        eprintln!(
            "error: no report of dataset `{}` in {}",
            args.dataset,
            args.state.display()
        );
        return Ok(EXIT_USAGE);
    };
    std::fs::write(&args.output, page)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    println!("wrote {}", args.output.display());
    Ok(0)
}

/// Where the outbox is read from.
enum Target {
    Agent(SocketAddr),
    Store(PathBuf),
}

async fn target(listen: Option<&str>, state: Option<&Path>) -> Result<Target> {
    if let Some(state) = state {
        if let Some(info) = agent::read_agent_info(state)
            && let Ok(addr) = info.listen.parse::<SocketAddr>()
            && agent::http_get(addr, "/healthz", Duration::from_secs(5))
                .await
                .is_ok_and(|(code, _)| code == 200)
        {
            return Ok(Target::Agent(addr));
        }
        if !state.join(driftwatch::state::STORE_FILE).exists() {
            bail!("{}: no driftwatch state here", state.display());
        }
        return Ok(Target::Store(state.to_path_buf()));
    }
    let listen = listen.unwrap_or(config::DEFAULT_LISTEN);
    let addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("`{listen}` is not an address such as 127.0.0.1:9464"))?;
    Ok(Target::Agent(addr))
}

fn open_store(state: &Path) -> Result<Store> {
    match Store::open(state) {
        Ok(store) => Ok(store),
        Err(StateError::Busy { path }) => bail!(
            "{}: an agent holds the store but does not answer over HTTP (see its agent.json)",
            path.display()
        ),
        Err(e) => Err(e.into()),
    }
}

/// `driftwatch webhooks [retry ID]`.
pub async fn webhooks(args: WebhooksArgs) -> Result<i32> {
    let target = target(args.listen.as_deref(), args.state.as_deref()).await?;
    match &args.command {
        Some(WebhooksCommand::Retry { event_id }) => {
            // The API token: from the variable `--token-env` names, or the
            // one the agent's `agent.json` names (same host, same env).
            let var = args.token_env.clone().or_else(|| {
                args.state
                    .as_deref()
                    .and_then(agent::read_agent_info)
                    .and_then(|i| i.api_token_env)
            });
            let token = match var {
                Some(var) => Some(std::env::var(&var).ok().filter(|t| !t.is_empty()).with_context(
                    || format!("the agent takes an API token from `{var}`: set `{var}` in this environment"),
                )?),
                None => None,
            };
            retry(&target, event_id, token).await
        }
        None => {
            let doc = match &target {
                Target::Agent(addr) => {
                    let (code, body) =
                        agent::http_get(*addr, "/webhooks", Duration::from_secs(10))
                            .await
                            .map_err(|e| {
                                anyhow::anyhow!(
                                    "{e}\nno agent answers there; give `--state DIR` to read a stopped agent's store"
                                )
                            })?;
                    if code != 200 {
                        bail!("{addr}/webhooks answered {code}: {}", body.trim());
                    }
                    serde_json::from_str::<WebhooksDocument>(&body)
                        .with_context(|| format!("{addr}/webhooks"))?
                }
                Target::Store(state) => agent::webhooks_from_store(&open_store(state)?)?,
            };
            let shown: Vec<&serde_json::Value> = doc
                .deliveries
                .iter()
                .filter(|d| args.all || matches!(d["state"].as_str(), Some("pending" | "dead")))
                .collect();
            match args.format {
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "webhooks": doc.webhooks,
                        "deliveries": shown,
                    }))?
                ),
                Format::Table => print!("{}", render(&shown, args.all)),
            }
            Ok(0)
        }
    }
}

async fn retry(target: &Target, event_id: &str, token: Option<String>) -> Result<i32> {
    match target {
        Target::Agent(addr) => {
            let path = format!("/webhooks/{event_id}/retry");
            let token = token.as_deref();
            let (code, body) = agent::http_post(*addr, &path, token, Duration::from_secs(10))
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "{e}\nno agent answers there; give `--state DIR` to use a stopped agent's store"
                    )
                })?;
            match code {
                200 => {
                    println!("re-queued {event_id}: the agent sends it now");
                    Ok(0)
                }
                401 | 403 | 404 | 409 => {
                    eprintln!("error: {}", body.trim());
                    Ok(EXIT_USAGE)
                }
                _ => bail!("{addr}{path} answered {code}: {}", body.trim()),
            }
        }
        Target::Store(state) => {
            let store = open_store(state)?;
            match store.retry_delivery(event_id, chrono::Utc::now().timestamp_millis())? {
                RetryResult::Requeued(_) => {
                    println!("re-queued {event_id}: sent when the agent starts");
                    Ok(0)
                }
                RetryResult::NotFound => {
                    eprintln!("error: no webhook event `{event_id}` in the outbox");
                    Ok(EXIT_USAGE)
                }
                RetryResult::NotDead(state) => {
                    eprintln!(
                        "error: event `{event_id}` is {}: only dead letters (with a body) can be re-queued",
                        state.name()
                    );
                    Ok(EXIT_USAGE)
                }
            }
        }
    }
}

fn render(deliveries: &[&serde_json::Value], all: bool) -> String {
    if deliveries.is_empty() {
        return if all {
            "no webhook events\n".to_string()
        } else {
            "no pending or dead-lettered webhook events (--all lists delivered ones too)\n"
                .to_string()
        };
    }
    let time = |v: &serde_json::Value| {
        v.as_i64()
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_else(|| "-".to_string())
    };
    let rows: Vec<[String; 8]> = deliveries
        .iter()
        .map(|d| {
            [
                d["event_id"].as_str().unwrap_or("").to_string(),
                d["webhook"].as_str().unwrap_or("").to_string(),
                d["dataset"].as_str().unwrap_or("").to_string(),
                d["state"].as_str().unwrap_or("").to_string(),
                d["attempts"].as_u64().unwrap_or(0).to_string(),
                time(&d["created_at_ms"]),
                match d["state"].as_str() {
                    Some("pending") => time(&d["next_attempt_at_ms"]),
                    _ => "-".to_string(),
                },
                d["last_error"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    let header = [
        "EVENT",
        "WEBHOOK",
        "DATASET",
        "STATE",
        "ATTEMPTS",
        "FIRED",
        "NEXT",
        "LAST ERROR",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        text.truncate(text.trim_end().len());
        text.push('\n');
        text
    };
    let mut out = line(header.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}
