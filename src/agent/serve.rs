//! The HTTP accept loop: connection budgets that `axum::serve` does not
//! have. Idle connections once exhausted the process's file descriptors and
//! then a valid lake file failed to open; so each listener here
//!
//! - holds at most `max_connections` open connections: one more is closed
//!   at once (logged once per episode, not per connection);
//! - gives a client `header_timeout` to send a request's headers, counted
//!   from accept or from the end of the previous response (so an idle
//!   keep-alive connection is closed after it too), whatever it trickles;
//! - backs off briefly when `accept` itself fails (descriptors exhausted)
//!   instead of spinning;
//! - on shutdown stops accepting, lets requests in progress finish (their
//!   own timeouts bound them) and closes idle connections.
//!
//! HTTP/1.1 only: every client the agent has (Prometheus, probes, curl, the
//! CLI) speaks it, and its timeouts are the ones above.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// How long the loop waits after a failed `accept` (EMFILE, ENFILE, …).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The budgets of one listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    /// Open connections at most.
    pub(crate) max_connections: usize,
    /// Time to send a request's headers (and keep-alive idle time).
    pub(crate) header_timeout: Duration,
}

/// Serves `router` on `listener` until `stop` turns true, then drains.
/// `name` names the listener in log lines.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
    name: &'static str,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = tokio::task::JoinSet::new();
    // One log line per episode: set while refusing, cleared when a
    // connection is taken again.
    let mut refusing = false;
    let mut accept_failing = false;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stopped(&mut stop) => break,
            a = listener.accept() => a,
        };
        // Reap finished connections so the set stays as small as the budget.
        while connections.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _)) => {
                if accept_failing {
                    accept_failing = false;
                    tracing::info!(listener = name, "accepting connections again");
                }
                stream
            }
            Err(e) => {
                if !accept_failing {
                    accept_failing = true;
                    tracing::warn!(listener = name, error = %e, "cannot accept connections (retrying every 100 ms)");
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            if !refusing {
                refusing = true;
                tracing::warn!(
                    listener = name,
                    max_connections = limits.max_connections,
                    "connection limit reached (`http.max_connections`): new connections are closed at once until some close"
                );
            }
            drop(stream);
            continue;
        };
        if refusing {
            refusing = false;
            tracing::info!(listener = name, "below the connection limit again");
        }
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let mut stop = stop.clone();
        connections.spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                done = connection.as_mut() => {
                    if let Err(e) = done {
                        tracing::debug!(error = %e, "HTTP connection ended with an error");
                    }
                }
                _ = stopped(&mut stop) => {
                    // Idle: closed now; busy: the request finishes first.
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Completes once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
