//! Forwarding an allowed request upstream and its response back, bodies streamed both ways.

use std::net::SocketAddr;
use std::time::Duration;

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::http::{json, Body, Client};
use crate::jwt::verify::Claims;

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1), plus the proxy
/// credentials and `Expect`, which isogate answers itself.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "expect",
];

/// The prefix of identity headers: only isogate may set them.
const IDENTITY_PREFIX: &str = "x-isogate-";

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The upstream could not be reached (502).
    #[error("upstream unreachable: {0}")]
    Connect(String),
    /// The upstream did not answer in time (504).
    #[error("upstream timed out")]
    Timeout,
    /// A verified claim cannot be carried in a header (e.g. a control character).
    #[error("the token's {0} cannot be forwarded in a header")]
    Claim(&'static str),
}

impl ForwardError {
    /// The response the client sees.
    pub fn response(&self) -> Response<Body> {
        let (status, code) = match self {
            ForwardError::Connect(_) => (StatusCode::BAD_GATEWAY, "upstream_unreachable"),
            ForwardError::Timeout => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
            ForwardError::Claim(_) => (StatusCode::BAD_GATEWAY, "unforwardable_claim"),
        };
        json(status, &serde_json::json!({ "error": code }))
    }

    /// The reason as logged.
    pub fn code(&self) -> &'static str {
        match self {
            ForwardError::Connect(_) => "upstream_unreachable",
            ForwardError::Timeout => "upstream_timeout",
            ForwardError::Claim(_) => "unforwardable_claim",
        }
    }
}

/// What the gateway knows about the request besides its headers.
pub struct Origin<'a> {
    /// The client's address.
    pub peer: SocketAddr,
    /// The host the client addressed (`Host` or `:authority`).
    pub host: Option<&'a str>,
    /// `http` or `https`.
    pub scheme: &'static str,
}

/// Sends `req` to `upstream` + `path_and_query` and returns the upstream's response with its
/// hop-by-hop headers removed. `timeout` bounds the wait for the response head.
#[allow(clippy::too_many_arguments)]
pub async fn forward(
    client: &Client,
    req: Request<Incoming>,
    upstream: &str,
    path_and_query: &str,
    claims: &Claims,
    strip_authorization: bool,
    origin: Origin<'_>,
    timeout: Duration,
) -> Result<Response<Body>, ForwardError> {
    let (mut parts, body) = req.into_parts();
    let client_version = parts.version;
    let uri: Uri = format!("{upstream}{path_and_query}")
        .parse()
        .map_err(|e| ForwardError::Connect(format!("bad upstream URI: {e}")))?;
    let headers = &mut parts.headers;
    remove_hop_by_hop(headers);
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with(IDENTITY_PREFIX))
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(name);
    }
    if strip_authorization {
        headers.remove(header::AUTHORIZATION);
    }
    // hyper sets Host from the upstream URI; the client's host travels in X-Forwarded-Host.
    headers.remove(header::HOST);
    set_forwarded(headers, &origin);
    set_identity(headers, claims)?;

    let mut upstream_req = Request::new(body.map_err(Into::into).boxed_unsync());
    *upstream_req.method_mut() = parts.method;
    *upstream_req.uri_mut() = uri;
    *upstream_req.version_mut() = Version::HTTP_11;
    *upstream_req.headers_mut() = parts.headers;

    let response = match tokio::time::timeout(timeout, client.request(upstream_req)).await {
        Err(_) => return Err(ForwardError::Timeout),
        Ok(Err(e)) => return Err(ForwardError::Connect(error_chain(&e))),
        Ok(Ok(response)) => response,
    };
    let (mut parts, body) = response.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    // The client gets its own protocol version, whatever the upstream spoke.
    parts.version = client_version;
    Ok(Response::from_parts(
        parts,
        body.map_err(Into::into).boxed_unsync(),
    ))
}

/// Removes the hop-by-hop headers and every header that `Connection` names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

fn set_forwarded(headers: &mut HeaderMap, origin: &Origin<'_>) {
    let peer = origin.peer.ip().to_string();
    let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(before) if !before.trim().is_empty() => format!("{before}, {peer}"),
        _ => peer,
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert("x-forwarded-for", value);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static(origin.scheme));
    match origin.host.and_then(|h| HeaderValue::from_str(h).ok()) {
        Some(host) => headers.insert("x-forwarded-host", host),
        None => headers.remove("x-forwarded-host"),
    };
}

fn set_identity(headers: &mut HeaderMap, claims: &Claims) -> Result<(), ForwardError> {
    let value = |v: &str, what| HeaderValue::from_str(v).map_err(|_| ForwardError::Claim(what));
    if let Some(sub) = &claims.sub {
        headers.insert("x-isogate-sub", value(sub, "sub")?);
    }
    if let Some(client_id) = &claims.client_id {
        headers.insert("x-isogate-client-id", value(client_id, "client_id")?);
    }
    headers.insert("x-isogate-scope", value(&claims.scope.join(" "), "scope")?);
    Ok(())
}

/// The error and its causes, for the log.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_named_headers_are_removed_with_the_hop_by_hop_set() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Secret , close"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }
}
