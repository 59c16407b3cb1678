//! The gateway (SPEC §4): route choice, token enforcement and forwarding. Every request gets
//! one log line with its route, resource, decision, reason, status and latency, and is counted
//! in the metrics with the same route, status and reason.

pub mod enforce;
pub mod forward;
pub mod keys;
pub mod route;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{header, HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use crate::config::Route;
use crate::http::{json, method_not_allowed, Body};
use crate::metrics::Metrics;
use crate::resources::ApiResource;
use crate::state::{Shared, Snapshot};
use enforce::Denial;
use forward::{ForwardError, Origin};
pub use keys::Keys;

/// Where RFC 9728 protected resource metadata is served, followed by the route's prefix.
const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// The gateway's state that outlives one configuration: the upstream connections, the keys, the
/// metrics, and the scheme of its listener (turning TLS on or off takes a restart).
pub struct Gateway {
    upstreams: Arc<upstream::Upstreams>,
    /// Trusted keys and the verified-token cache.
    pub keys: Arc<Keys>,
    metrics: Arc<Metrics>,
    /// `https` when the listener speaks TLS, else `http`.
    scheme: &'static str,
}

impl Gateway {
    /// A gateway for `snapshot`, the one its listener starts with, recording into `metrics`;
    /// call [`Gateway::configure`] again after each reload.
    pub fn new(snapshot: &Snapshot, metrics: Arc<Metrics>) -> Arc<Self> {
        let connector = crate::http::connector(Duration::from_secs(5));
        let upstreams = upstream::Upstreams::new(connector.clone());
        let keys = Keys::new(crate::http::client(connector), metrics.clone());
        keys.configure(&snapshot.config);
        let tls = snapshot
            .config
            .proxy
            .as_ref()
            .is_some_and(|p| p.tls.is_some());
        let scheme = if tls { "https" } else { "http" };
        Arc::new(Gateway {
            upstreams,
            keys,
            metrics,
            scheme,
        })
    }

    /// Adopts a new configuration's keys and trusted issuers.
    pub fn configure(&self, snapshot: &Snapshot) {
        self.keys.configure(&snapshot.config);
    }
}

/// What happened to a request, for the log line; borrowed from the snapshot and the verified
/// claims, so that building it allocates nothing.
struct Outcome<'s> {
    route: Option<&'s str>,
    resource: Option<&'s str>,
    decision: &'static str,
    reason: &'static str,
    claims: Option<Arc<keys::Verified>>,
}

impl Outcome<'_> {
    fn refused(reason: &'static str) -> Self {
        Outcome {
            route: None,
            resource: None,
            decision: "deny",
            reason,
            claims: None,
        }
    }

    fn client_id(&self) -> &str {
        self.claims
            .as_ref()
            .and_then(|c| c.client_id.as_deref())
            .unwrap_or("-")
    }
}

/// Answers one request to the proxy listener.
pub async fn handle(
    state: Shared,
    gateway: Arc<Gateway>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let snapshot = state.load_full();
    let (response, outcome) = decide(&snapshot, &gateway, req, peer).await;
    let latency = started.elapsed();
    let status = response.status().as_u16();
    gateway
        .metrics
        .proxy_request(outcome.route, status, outcome.reason, latency);
    tracing::info!(
        %method,
        route = %outcome.route.unwrap_or("-"),
        resource = %outcome.resource.unwrap_or("-"),
        decision = %outcome.decision,
        reason = %outcome.reason,
        status,
        latency_us = latency.as_micros() as u64,
        client_id = %outcome.client_id(),
        %peer,
        "request"
    );
    response
}

async fn decide<'s>(
    snapshot: &'s Snapshot,
    gateway: &Gateway,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> (Response<Body>, Outcome<'s>) {
    let bad = |reason: &'static str, message: &'static str| {
        (
            json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({"error": "invalid_request", "error_description": message}),
            ),
            Outcome::refused(reason),
        )
    };
    let config = &snapshot.config;
    let Some(proxy) = &config.proxy else {
        return (
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"error": "the gateway is not configured"}),
            ),
            Outcome::refused("not_configured"),
        );
    };
    // A tunnel or a loop-back of the request's own headers is never what an API is for.
    if matches!(*req.method(), Method::CONNECT | Method::TRACE) {
        let mut response = json(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({"error": "method_not_allowed"}),
        );
        response.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
        return (response, Outcome::refused("method_not_allowed"));
    }
    if let Some(problem) = crate::http::host_problem(&req) {
        return bad("bad_host", problem);
    }
    // HTTP/1 requests must use origin-form (`/path`); HTTP/2 carries the authority apart.
    if req.version() < Version::HTTP_2 && req.uri().authority().is_some() {
        return bad(
            "bad_target",
            "absolute-form request targets are not accepted",
        );
    }
    let path = match route::normalize(req.uri().path()) {
        Ok(path) => path,
        Err(e) => {
            tracing::debug!(error = %e, "path refused");
            return bad("bad_path", "the request path is not acceptable");
        }
    };
    let host_value = host(&req);
    // `host` only returns values that are visible ASCII.
    let host_str = host_value.as_ref().and_then(|h| h.to_str().ok());

    if let Some(suffix) = path.strip_prefix(METADATA_PATH) {
        let suffix = if suffix.is_empty() { "/" } else { suffix };
        let route = config.routes.iter().find(|r| {
            r.path_prefix == suffix
                && r.host
                    .as_ref()
                    .is_none_or(|h| host_str.is_some_and(|got| h.matches(got)))
        });
        let outcome = Outcome::refused("metadata");
        return match route {
            Some(_) if !matches!(*req.method(), Method::GET | Method::HEAD) => {
                (method_not_allowed("GET, HEAD"), outcome)
            }
            Some(route) => (
                json(StatusCode::OK, &metadata(snapshot, route)),
                Outcome {
                    decision: "allow",
                    ..outcome
                },
            ),
            None => (
                json(
                    StatusCode::NOT_FOUND,
                    &serde_json::json!({"error": "no such route"}),
                ),
                Outcome::refused("no_route"),
            ),
        };
    }

    // `select` takes the raw authority: it ignores the port and compares case-insensitively.
    let Some(route) = route::select(&config.routes, host_str, &path) else {
        return (
            json(
                StatusCode::NOT_FOUND,
                &serde_json::json!({"error": "no route"}),
            ),
            Outcome::refused("no_route"),
        );
    };
    let mut outcome = Outcome {
        route: Some(&route.path_prefix),
        resource: Some(&route.resource),
        decision: "deny",
        reason: "",
        claims: None,
    };
    let model = &config.model;
    // Validation guarantees a route's resource exists.
    let Some(resource) = model.api_resource(&route.resource) else {
        outcome.reason = "not_configured";
        return (
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"error": "the route's resource is not configured"}),
            ),
            outcome,
        );
    };
    let claims = match authorize(snapshot, gateway, &req, route, resource, proxy.clock_skew).await {
        Ok(claims) => claims,
        Err(denial) => {
            tracing::debug!(reason = %denial, "request denied");
            outcome.reason = denial.code();
            // Built only for a refusal: allowed requests never need it.
            let metadata_url = format!(
                "{}://{}{METADATA_PATH}{}",
                gateway.scheme,
                host_str.unwrap_or("localhost"),
                if route.path_prefix == "/" {
                    ""
                } else {
                    &route.path_prefix
                }
            );
            return (denial.response(&metadata_url), outcome);
        }
    };
    let identity = claims.identity_for(resource, model);
    let origin = Origin {
        peer,
        host: host_value.as_ref(),
        scheme: gateway.scheme,
    };
    let upstream = &route.upstream;
    match forward::forward(
        &gateway.upstreams,
        req,
        upstream,
        path,
        identity,
        route,
        origin,
        proxy.upstream_timeout,
    )
    .await
    {
        Ok(response) => {
            outcome.decision = "allow";
            outcome.reason = "ok";
            outcome.claims = Some(claims);
            (response, outcome)
        }
        Err(e) => {
            if let ForwardError::Connect(detail) = &e {
                tracing::warn!(upstream = %upstream, error = %detail, "upstream unreachable");
            }
            outcome.decision = "allow";
            outcome.reason = e.code();
            outcome.claims = Some(claims);
            (e.response(), outcome)
        }
    }
}

/// SPEC §4 steps 1–6 for `route`.
async fn authorize(
    snapshot: &Snapshot,
    gateway: &Gateway,
    req: &Request<Incoming>,
    route: &Route,
    resource: &ApiResource,
    skew: Duration,
) -> Result<Arc<keys::Verified>, Denial> {
    let credential = enforce::credential(req.headers())?;
    let claims = match gateway.keys.cached(credential, skew) {
        Ok(claims) => claims,
        Err(miss) => {
            let token = enforce::token(credential)?;
            gateway
                .keys
                .verify(token, miss)
                .await
                .map_err(|e| Denial::InvalidToken(e.to_string()))?
        }
    };
    crate::jwt::verify::check_time(&claims, keys::unix_now(), skew)
        .map_err(|e| Denial::InvalidToken(e.to_string()))?;
    enforce::audience(&claims, resource)?;
    enforce::scope(
        &claims,
        route,
        resource,
        &snapshot.config.model,
        req.method(),
    )?;
    Ok(claims)
}

/// The host the client addressed: `:authority` for HTTP/2, else the `Host` header; `None` when
/// it is not visible ASCII. The header's value is shared, not copied.
fn host(req: &Request<Incoming>) -> Option<HeaderValue> {
    match req.uri().authority() {
        Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
        None => req
            .headers()
            .get(header::HOST)
            .filter(|h| h.to_str().is_ok())
            .cloned(),
    }
}

/// The RFC 9728 document of `route`.
fn metadata(snapshot: &Snapshot, route: &Route) -> serde_json::Value {
    let config = &snapshot.config;
    let mut servers: Vec<&str> = config.issuer.iter().map(|i| i.issuer.as_str()).collect();
    if let Some(proxy) = &config.proxy {
        servers.extend(proxy.trusted_issuers.iter().map(|t| t.issuer.as_str()));
    }
    let scopes = config
        .model
        .api_resource(&route.resource)
        .map(|r| r.scopes.clone())
        .unwrap_or_default();
    serde_json::json!({
        "resource": route.resource,
        "authorization_servers": servers,
        "scopes_supported": scopes,
        "bearer_methods_supported": ["header"],
    })
}
