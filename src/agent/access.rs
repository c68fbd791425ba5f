//! Who may talk to the agent's HTTP API, and what its answers may reveal:
//! the `Host` check (DNS rebinding), the API token and the request header
//! that cross-site forms cannot send, security headers on every response,
//! and URL redaction for `/webhooks`.
//!
//! Config and rule files are trusted; HTTP clients are not (docs/security.md,
//! "HTTP API"). Everything here is applied as middleware or called by the
//! handlers of mutating endpoints, so a new route gets the same treatment.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The header `driftwatch webhooks retry` and documented `curl` lines send:
/// a browser cannot add it to a cross-site request without a CORS preflight
/// (which the agent never grants), so its presence proves a deliberate client.
pub const REQUEST_HEADER: &str = "x-driftwatch-request";

/// The Content-Security-Policy of every response. The pages are
/// self-contained: inline `<style>` and `style=` attributes, inline SVG, no
/// script, no image, font or fetch from anywhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Compares in time independent of where the strings differ.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The bearer token a request carries (`Authorization: Bearer …`), or "".
pub fn bearer(headers: &HeaderMap) -> &str {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
}

/// Whether the request carries the token held in environment variable
/// `var`. An unset or empty variable matches nothing (the config check
/// refuses it at start; one emptied later must not open the door).
pub fn carries_token(headers: &HeaderMap, var: &str) -> bool {
    let expected = std::env::var(var).unwrap_or_default();
    !expected.is_empty() && same_secret(bearer(headers).as_bytes(), expected.as_bytes())
}

/// 401 with `WWW-Authenticate: Bearer` and a plain-text reason.
pub fn unauthorized(message: &str) -> Response {
    let mut r = (StatusCode::UNAUTHORIZED, format!("{message}\n")).into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// Whether a `Host` value names this agent: an IP literal (v4, or v6 in
/// brackets), `localhost`, or one of `allowed` (lowercase), with or without
/// a port. A DNS-rebinding page sends its own name, which is none of these.
pub fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let host = host.trim();
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return false;
        };
        if inside.parse::<Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(p) => return valid_port(p),
                None => return false,
            },
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    if port.is_some_and(|p| !valid_port(p)) {
        return false;
    }
    if name.parse::<Ipv4Addr>().is_ok() {
        return true;
    }
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || allowed.contains(&name)
}

fn valid_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// Middleware: refuses requests whose `Host` (or absolute-form authority)
/// is not this agent's, before any handler runs.
pub async fn check_host(
    State(allowed): State<Arc<Vec<String>>>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|a| a.to_string()));
    let Some(host) = host else {
        return (
            StatusCode::BAD_REQUEST,
            "a Host header is required (HTTP/1.1)\n",
        )
            .into_response();
    };
    if !host_allowed(&host, &allowed) {
        let shown: String = host
            .chars()
            .take(100)
            .flat_map(char::escape_default)
            .collect();
        return (
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "Host `{shown}` is not served here: use the agent's IP address or localhost, or list the name in `http.allowed_hosts` in the config file\n"
            ),
        )
            .into_response();
    }
    next.run(request).await
}

/// Middleware: the security headers every answer carries (they matter on
/// the HTML pages and cost nothing elsewhere).
pub async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// A URL without its userinfo, query values and fragment:
/// `https://u:p@host/path?token=abc#x` → `https://host/path?token=REDACTED`.
/// Text that is not a URL is returned whole (it holds no URL to redact).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let tail = tail.split('#').next().unwrap_or_default();
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (tail, None),
    };
    let mut out = format!("{scheme}://{authority}{path}");
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, _)) => format!("{k}=REDACTED"),
                None => "REDACTED".to_string(),
            })
            .collect();
        if !pairs.is_empty() {
            out.push('?');
            out.push_str(&pairs.join("&"));
        }
    }
    out
}

/// `text` with every `http://` or `https://` URL in it redacted (error
/// messages quote the URL they failed on).
pub fn redact_urls_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = ["http://", "https://"]
        .iter()
        .filter_map(|s| rest.find(s))
        .min()
    {
        out.push_str(&rest[..at]);
        let url = &rest[at..];
        let end = url
            .find(|c: char| c.is_whitespace() || "()<>\"'`".contains(c))
            .unwrap_or(url.len());
        out.push_str(&redact_url(&url[..end]));
        rest = &url[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let allowed = vec!["driftwatch.svc".to_string()];
        for ok in [
            "127.0.0.1",
            "10.1.2.3:9464",
            "[::1]",
            "[::1]:9464",
            "[fe80::1]:80",
            "localhost",
            "LOCALHOST:9464",
            "localhost.",
            "driftwatch.svc",
            "DriftWatch.svc:8080",
        ] {
            assert!(host_allowed(ok, &allowed), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:9464",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "[::1",
            "[nope]:1",
            "[::1]x",
            "127.0.0.1:port",
            "127.0.0.1:",
            "::1",
            "",
            "driftwatch.svc.evil",
        ] {
            assert!(!host_allowed(bad, &allowed), "{bad}");
        }
    }

    #[test]
    fn urls_lose_userinfo_and_query_values() {
        assert_eq!(
            redact_url("https://user:pass@hooks.example:8443/p/a?token=abc&x=1#frag"),
            "https://hooks.example:8443/p/a?token=REDACTED&x=REDACTED"
        );
        assert_eq!(redact_url("http://h/p?s3cret"), "http://h/p?REDACTED");
        assert_eq!(redact_url("http://h"), "http://h");
        assert_eq!(
            redact_urls_in(
                "error sending request for url (https://u:p@h/x?token=abc): connection refused"
            ),
            "error sending request for url (https://h/x?token=REDACTED): connection refused"
        );
        assert_eq!(redact_urls_in("HTTP 500"), "HTTP 500");
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
    }
}
