//! `POST /ingest/{dataset}`: events over HTTP into a stream's durable windows.
//!
//! The answer says what happened to every event: 200 with `accepted` and
//! `rejected` counts (the first rejections with line and reason; all of
//! them are in the dead-letter file) once the accepted events are synced to
//! the write-ahead log; 400 when nothing in the body fits; 401 without the
//! configured bearer token (the source's `bearer_token_env` or the API
//! token `http.api_token_env`); 404 for a dataset with no `http` source;
//! 409 when no rule file declares the stream's schema and the source does
//! not opt in to inference (`infer_schema = true`); 413 for a body over
//! `max_body`; 415 for another content type; 429 with `Retry-After` when
//! too many events wait for evaluation (nothing of the body was taken: send
//! it again); 503 with `Retry-After` when the bodies being read and decoded
//! already fill `http.body_budget`; 408 when a body takes longer than
//! `body_timeout` to arrive.
//!
//! Headers are checked before the body is read. The body is read first,
//! under the byte budget shared by all posts, and only then does it wait
//! for one of the decode slots (one per core, decoding on a blocking
//! thread): a client stalling mid-body holds bytes of the budget, never a
//! slot, so slow clients cannot stop other posts.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{Shared, StreamHandle};
use crate::sources::stream::http::{BodyFormat, decode_ipc, decode_ndjson, format_of, lines};
use crate::sources::stream::log::AppendError;
use crate::sources::stream::{
    DEAD_LETTER_BUDGET, DeadLetter, EventSchema, Rejects, SourceSettings, StreamError, WindowedLog,
    rule_schema,
};

/// Rejections listed in a response (the dead-letter file has them all).
pub const ERRORS_IN_RESPONSE: usize = Rejects::FIRST;

/// The answer to a post.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IngestResponse {
    /// Events accepted (durable; they will be evaluated).
    pub accepted: u64,
    /// Events rejected (written to the dead-letter file).
    pub rejected: u64,
    /// The first rejections.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<IngestRejection>,
    /// Why the post was refused, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One rejected event in a response.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IngestRejection {
    /// `line N` (NDJSON) or `record batch N` (Arrow IPC).
    pub location: String,
    /// Why.
    pub reason: String,
}

fn refuse(status: StatusCode, message: String) -> Response {
    let body = IngestResponse {
        accepted: 0,
        rejected: 0,
        errors: Vec::new(),
        error: Some(message),
    };
    (status, axum::Json(body)).into_response()
}

/// Budget permits are KiB (a semaphore takes at most `u32::MAX` permits at once).
const BUDGET_UNIT: u64 = 1024;

/// Permits of the body budget for `bytes`.
pub(crate) fn budget_permits(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(BUDGET_UNIT)).unwrap_or(u32::MAX)
}

/// The handler.
pub async fn ingest(
    State(shared): State<Arc<Shared>>,
    Path(dataset): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some((stream, log)) = shared
        .streams
        .iter()
        .filter(|s| s.is_http() && s.config.dataset == dataset)
        .find_map(|s| Some((s.clone(), s.log.clone()?)))
    else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!(
                "no `http` source for dataset `{dataset}`: declare one in the config file ([[sources]] kind = \"http\", dataset = \"{dataset}\")"
            ),
        );
    };
    let SourceSettings::Http {
        max_body,
        body_timeout,
        bearer_token_env,
        infer_schema,
        ..
    } = &stream.config.settings
    else {
        return refuse(StatusCode::NOT_FOUND, "not an http source".to_string());
    };
    // The source's own token or the API token, whichever are configured.
    let tokens: Vec<&String> = bearer_token_env
        .iter()
        .chain(shared.http.api_token_env.iter())
        .collect();
    if !tokens.is_empty() {
        use super::access::carries_token;
        if !tokens.iter().any(|var| carries_token(&headers, var)) {
            let mut r = refuse(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token".to_string(),
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    let too_large = |size: String| {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body has {size} bytes; this source takes at most {max_body} (`max_body`): split it"
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared
        && n > *max_body as u64
    {
        return too_large(n.to_string());
    }
    let format = match format_of(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    ) {
        Ok(f) => f,
        Err(m) => return refuse(StatusCode::UNSUPPORTED_MEDIA_TYPE, m),
    };
    let from_rule = shared
        .rules
        .borrow()
        .iter()
        .find(|r| r.dataset == dataset)
        .and_then(rule_schema);
    let from_rule = match from_rule.transpose() {
        Ok(s) => s,
        Err(e) => {
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the rule file's schema check cannot type stream events: {e}"),
            );
        }
    };
    // Whoever can post must not choose the schema the rules are checked
    // against, unless the operator said so.
    if from_rule.is_none() && !infer_schema {
        return refuse(
            StatusCode::CONFLICT,
            format!(
                "stream `{}` has no declared schema: add a `schema` check to the rule file of dataset `{dataset}`, or set `infer_schema = true` on its [[sources]] entry to let the first post fix it",
                stream.config.name
            ),
        );
    }
    // The bytes this body may take, held until its answer: a declared
    // length, or `max_body` for a chunked body of unknown length.
    let reserve = declared.unwrap_or(*max_body as u64).min(*max_body as u64);
    let Ok(_budget) = shared.body_budget.try_acquire_many(budget_permits(reserve)) else {
        let mut r = refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the bodies being read and decoded fill the agent's body budget ({} bytes, `http.body_budget`); nothing of this body was taken, send it again",
                shared.http.body_budget
            ),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    };
    // A client that stalls mid-body holds its bytes of the budget until
    // `body_timeout`, and no decode slot.
    let read = tokio::time::timeout(*body_timeout, axum::body::to_bytes(body, *max_body)).await;
    let Ok(read) = read else {
        return refuse(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the body did not arrive within {:?} (`body_timeout`); nothing was taken",
                body_timeout
            ),
        );
    };
    let body = match read {
        Ok(b) => b,
        Err(e) => {
            // Over the limit while arriving (no or a wrong Content-Length), or the client went away.
            let over = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if over {
                return too_large(format!("more than {max_body}"));
            }
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}"),
            );
        }
    };
    // Decoding holds the body and its rows: at most one per slot.
    let Ok(_slot) = shared.ingest_slots.acquire().await else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent is stopping".to_string(),
        );
    };
    let done =
        tokio::task::spawn_blocking(move || take(&stream, &log, format, &body, from_rule)).await;
    match done {
        Ok(r) => r,
        Err(e) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("ingest task failed: {e}"),
        ),
    }
}

/// A post whose dead letters cannot be stored is refused whole (nothing of
/// it was taken): 507 when the dead-letter files are full, 500 otherwise.
fn dead_letter_failure(e: StreamError) -> Response {
    let status = match e {
        StreamError::DeadLettersFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    refuse(
        status,
        format!("{e}; nothing of this body was taken, send it again"),
    )
}

/// Decodes, appends and dead-letters one body (blocking).
fn take(
    stream: &StreamHandle,
    log: &WindowedLog,
    format: BodyFormat,
    body: &[u8],
    from_rule: Option<EventSchema>,
) -> Response {
    let name = stream.config.name.as_str();
    let internal = |e: String| refuse(StatusCode::INTERNAL_SERVER_ERROR, e);
    let held = match log.schema(from_rule) {
        Ok(s) => s,
        Err(e) => return internal(e.to_string()),
    };
    let (batches, accepted, rejected) = match format {
        BodyFormat::Ndjson => {
            let schema = match held {
                Some(s) => s,
                None => match EventSchema::infer(lines(body).map(|(_, l)| l)) {
                    Some(s) => match log.adopt_schema(s) {
                        Ok(s) => s,
                        // The client's events, not the agent, are at fault.
                        Err(e @ crate::sources::stream::StreamError::SchemaTooWide { .. }) => {
                            return refuse(StatusCode::BAD_REQUEST, e.to_string());
                        }
                        Err(e) => return internal(e.to_string()),
                    },
                    None if lines(body).next().is_none() => {
                        return (
                            StatusCode::OK,
                            axum::Json(IngestResponse {
                                accepted: 0,
                                rejected: 0,
                                errors: Vec::new(),
                                error: None,
                            }),
                        )
                            .into_response();
                    }
                    // Nothing to infer from: every line is rejected below
                    // against an empty schema (each says why).
                    None => match EventSchema::from_arrow(&arrow::datatypes::Schema::empty()) {
                        Ok(s) => s,
                        Err(e) => return internal(e),
                    },
                },
            };
            // Refused before anything is decoded when the rows cannot fit
            // the write-ahead-log budget whatever their values.
            let rows = lines(body).count() as u64;
            if let Err(e) = crate::sources::stream::log::wal_budget_before_decoding(
                rows,
                schema.arrow(),
                body.len(),
            ) {
                return refuse(StatusCode::PAYLOAD_TOO_LARGE, e.to_string());
            }
            match decode_ndjson(lines(body), &schema, name, &|n| format!("line {n}")) {
                Ok(d) => (d.batches, d.accepted, d.rejected),
                Err(e) => return internal(e),
            }
        }
        BodyFormat::ArrowIpc => match decode_ipc(body, held.as_ref()) {
            Ok((batches, schema)) => {
                if held.is_none()
                    && let Err(e) = log.adopt_schema(schema)
                {
                    return internal(e.to_string());
                }
                let n = batches.iter().map(|b| b.num_rows() as u64).sum();
                (batches, n, Rejects::new(name, DEAD_LETTER_BUDGET))
            }
            Err(reason) => {
                let letter = DeadLetter::new(
                    name,
                    "the Arrow IPC body".to_string(),
                    reason.clone(),
                    format!("<Arrow IPC stream, {} bytes>", body.len()).as_bytes(),
                );
                if let Err(e) = log.dead.write(&[letter]) {
                    return dead_letter_failure(e);
                }
                log.stats
                    .rejected
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return refuse(StatusCode::BAD_REQUEST, reason);
            }
        },
    };
    if let Err(e) = crate::sources::stream::log::wal_budget(&batches, body.len()) {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, e.to_string());
    }
    // Dead letters are durable before the answer, written under the log's
    // lock once the post is known not to be throttled.
    let appended = log.append(
        &batches,
        None,
        || {
            log.dead.write_text(&rejected.text())?;
            log.stats
                .rejected
                .fetch_add(rejected.count(), std::sync::atomic::Ordering::Relaxed);
            Ok(())
        },
        || Ok(()),
    );
    match appended {
        Ok(_) => {}
        Err(AppendError::Full { pending, limit }) => {
            let mut r = refuse(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "{pending} events are waiting for evaluation (limit {limit}); nothing of this body was taken, send it again"
                ),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        }
        Err(AppendError::Failed(e @ StreamError::DeadLettersFull { .. })) => {
            return dead_letter_failure(e);
        }
        Err(AppendError::Failed(e)) => {
            return internal(format!(
                "{e}; events of this body may have been taken already (a retry may repeat them)"
            ));
        }
    }
    let status = if accepted == 0 && !rejected.is_empty() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let response = IngestResponse {
        accepted,
        rejected: rejected.count(),
        errors: rejected
            .first()
            .iter()
            .map(|(location, reason)| IngestRejection {
                location: location.clone(),
                reason: reason.clone(),
            })
            .collect(),
        error: (status == StatusCode::BAD_REQUEST).then(|| {
            format!(
                "no event in the body fits the stream's schema; all {} are in {}",
                rejected.count(),
                log.dead.path().display()
            )
        }),
    };
    (status, axum::Json(response)).into_response()
}
