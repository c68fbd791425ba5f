//! Talking to a running agent: `agent.json` in its state folder says where
//! it listens, and a minimal HTTP/1.1 client asks it (for `driftwatch status`,
//! `driftwatch webhooks` and tests).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};

/// `agent.json`: which agent runs on a state folder, and where it listens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentInfo {
    /// Process id.
    pub pid: u32,
    /// HTTP address.
    pub listen: String,
    /// The metrics-and-probes address (`http.metrics_listen`), when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    /// The environment variable holding the API token (its name, never
    /// the token), so the CLI on the same host can send it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token_env: Option<String>,
    /// Instance id (host-pid-start).
    pub instance: String,
    /// Start time (RFC 3339).
    pub started_at: String,
    /// driftwatch version.
    pub version: String,
}

/// Reads `agent.json` from a state folder.
pub fn read_agent_info(state: &Path) -> Option<AgentInfo> {
    let text = std::fs::read_to_string(state.join(super::AGENT_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// GETs `path` from the agent at `addr`; returns the status code and body.
/// Gives up after `timeout`.
pub async fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    send(hyper::Method::GET, addr, path, None, timeout).await
}

/// POSTs (no body) to `path` on the agent at `addr` with
/// `X-Driftwatch-Request: 1` (the agent refuses actions without it or the
/// token) and `Authorization: Bearer token` when a token is given; returns
/// the status code and body.
pub async fn post(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), String> {
    send(hyper::Method::POST, addr, path, token, timeout).await
}

async fn send(
    method: hyper::Method,
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let request = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        tokio::spawn(connection);
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, addr.to_string())
            .header(super::access::REQUEST_HEADER, "1");
        if let Some(token) = token {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("{addr}{path}: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{addr}{path}: {e}"))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(timeout, request)
        .await
        .map_err(|_| format!("{addr}{path}: no answer within {timeout:?}"))?
}
