//! The gateway (SPEC §4): route choice, token enforcement and forwarding. Every request gets
//! one log line with its route, resource, decision, reason, status and latency, and is counted
//! in the metrics with the same route, status and reason.

pub mod enforce;
pub mod forward;
pub mod keys;
pub mod mcp;
pub mod resolve;
pub mod route;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::clock::Clock;
use crate::config::Config;
use crate::grants::Revoked;
use crate::http::Body;
use crate::metrics::Metrics;
use crate::state::{Shared, Snapshot};
use forward::{ForwardError, Origin};
pub use keys::Keys;
use resolve::{Resolved, Target};

/// Where RFC 9728 protected resource metadata is served, followed by the route's prefix.
pub(crate) const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// The gateway's state that outlives one configuration: the upstream connections, the keys, the
/// metrics, the clock, and the scheme of its listener (turning TLS on or off takes a restart).
pub struct Gateway {
    upstreams: Arc<upstream::Upstreams>,
    /// Trusted keys and the verified-token cache.
    pub keys: Arc<Keys>,
    /// The revoked access tokens (SPEC §7), kept current by the store.
    revoked: Arc<Revoked>,
    /// The DPoP proofs seen within their window (SPEC §8).
    proofs: crate::dpop::Replay,
    metrics: Arc<Metrics>,
    clock: Clock,
    /// `https` when the listener speaks TLS, else `http`.
    scheme: &'static str,
}

impl Gateway {
    /// A gateway for `config`, the one its listener starts with, refusing what `revoked`
    /// holds and recording into `metrics`; call [`Gateway::configure`] again after each reload.
    pub fn new(
        config: &Config,
        revoked: Arc<Revoked>,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Arc<Self> {
        let connector = crate::http::connector(Duration::from_secs(5));
        let upstreams = upstream::Upstreams::new(connector.clone());
        let keys = Keys::new(crate::http::client(connector), metrics.clone());
        keys.configure(config);
        let tls = config.proxy.as_ref().is_some_and(|p| p.tls.is_some());
        let scheme = if tls { "https" } else { "http" };
        Arc::new(Gateway {
            upstreams,
            keys,
            revoked,
            proofs: Default::default(),
            metrics,
            clock,
            scheme,
        })
    }

    /// Adopts a new configuration's keys and trusted issuers.
    pub fn configure(&self, config: &Config) {
        self.keys.configure(config);
    }
}

/// What happened to a request, for the log line; borrowed from the snapshot and the verified
/// claims, so that building it allocates nothing.
struct Outcome<'s> {
    route: Option<&'s str>,
    resource: Option<&'s str>,
    decision: &'static str,
    reason: &'static str,
    /// The token's claims once its signature verified (also when a later step refused it).
    claims: Option<Arc<keys::Verified>>,
    /// The step that refused the request and why, in words (never the token).
    denial: Option<enforce::Denial>,
}

impl Outcome<'_> {
    fn refused(reason: &'static str) -> Self {
        Outcome {
            route: None,
            resource: None,
            decision: "deny",
            reason,
            claims: None,
            denial: None,
        }
    }

    fn client_id(&self) -> &str {
        self.claims
            .as_ref()
            .and_then(|c| c.client_id.as_deref())
            .unwrap_or("-")
    }

    fn subject(&self) -> &str {
        self.claims
            .as_ref()
            .and_then(|c| c.sub.as_deref())
            .unwrap_or("-")
    }
}

/// A denial's words in the log line, `-` for none.
struct Cause<'a>(Option<&'a enforce::Denial>);

impl std::fmt::Display for Cause<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(denial) => denial.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// The request id header: kept when the client sent a usable one, else made here; sent on to
/// the upstream and logged, so that one request can be followed through both logs.
const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// The request's id (see [`X_REQUEST_ID`]): one of at most 128 visible ASCII characters is
/// kept; any other is replaced.
fn request_id(headers: &mut http::HeaderMap) -> http::HeaderValue {
    let sent = headers.get(&X_REQUEST_ID).filter(|v| {
        let bytes = v.as_bytes();
        (1..=128).contains(&bytes.len()) && bytes.iter().all(|b| b.is_ascii_graphic())
    });
    if let Some(id) = sent {
        return id.clone();
    }
    let id = new_request_id();
    headers.insert(X_REQUEST_ID, id.clone());
    id
}

/// Random bytes of a request id (16 base64url characters).
const REQUEST_ID_BYTES: usize = 12;
/// Ids drawn from aws-lc's generator per call: one call costs about what drawing the bytes of
/// 64 ids does (as Envoy draws its request UUIDs, in batches). A request id is not a secret.
const REQUEST_IDS_PER_DRAW: usize = 64;

/// A new request id: 12 random bytes, base64url, from this thread's batch.
fn new_request_id() -> http::HeaderValue {
    use base64::Engine as _;
    use std::cell::RefCell;
    thread_local! {
        /// Random bytes and how many of them are used; starts used up.
        static BATCH: RefCell<([u8; REQUEST_ID_BYTES * REQUEST_IDS_PER_DRAW], usize)> =
            const { RefCell::new(([0; REQUEST_ID_BYTES * REQUEST_IDS_PER_DRAW], REQUEST_ID_BYTES * REQUEST_IDS_PER_DRAW)) };
    }
    let mut text = [0u8; REQUEST_ID_BYTES / 3 * 4];
    BATCH.with_borrow_mut(|(bytes, used)| {
        if *used == bytes.len() {
            crate::protocol::random_fill(bytes);
            *used = 0;
        }
        let id = &bytes[*used..*used + REQUEST_ID_BYTES];
        *used += REQUEST_ID_BYTES;
        let written = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_slice(id, &mut text);
        debug_assert_eq!(written.ok(), Some(text.len()));
    });
    http::HeaderValue::from_bytes(&text).unwrap_or(http::HeaderValue::from_static("-"))
}

/// Answers one request to the proxy listener: one log line and one count per request.
pub async fn handle(
    state: Shared,
    gateway: Arc<Gateway>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    // Shared with the request (a reference count), not copied; the query is never logged.
    let uri = req.uri().clone();
    let request_id = request_id(req.headers_mut());
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
        cause = %Cause(outcome.denial.as_ref()),
        status,
        latency_us = latency.as_micros() as u64,
        client_id = %outcome.client_id(),
        sub = %outcome.subject(),
        %peer,
        path = %uri.path(),
        request_id = %request_id.to_str().unwrap_or("-"),
        "request"
    );
    response
}

/// The three stages, in order: what the request targets ([`resolve`]), whether its token
/// may reach it ([`enforce`], SPEC §4's six steps), and the round trip upstream ([`forward`]).
async fn decide<'s>(
    snapshot: &'s Snapshot,
    gateway: &Gateway,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> (Response<Body>, Outcome<'s>) {
    let target = match resolve::resolve(snapshot, &req) {
        Ok(Resolved::Route(target)) => target,
        Ok(Resolved::Metadata(document)) => {
            let outcome = Outcome {
                decision: "allow",
                ..Outcome::refused("metadata")
            };
            return (document, outcome);
        }
        Err(refusal) => return (refusal.response(), Outcome::refused(refusal.reason())),
    };
    let mut outcome = Outcome {
        route: Some(&target.route.path_prefix),
        resource: Some(&target.route.resource),
        decision: "deny",
        reason: "",
        claims: None,
        denial: None,
    };
    let Some(proxy) = &snapshot.config.proxy else {
        return (resolve::Refusal::NotConfigured.response(), outcome);
    };
    let now = gateway.clock.unix();
    let model = &snapshot.config.model;
    let proofs = enforce::ProofContext {
        replay: &gateway.proofs,
        public_url: proxy.public_url.as_deref(),
        scheme: gateway.scheme,
        path: req.uri().path(),
        max_age: proxy.dpop_max_age,
    };
    let permit = enforce::enforce(
        &gateway.keys,
        &gateway.revoked,
        req.headers(),
        req.method(),
        &target,
        model,
        proxy.clock_skew,
        now,
        &proofs,
    )
    .await;
    let permit = match permit {
        Ok(permit) => permit,
        Err(refused) => {
            let dpop_request = matches!(
                enforce::credential(req.headers()),
                Ok((enforce::Scheme::Dpop, _))
            );
            let metadata = gateway.metadata_url(&target, proxy.public_url.as_deref());
            // SPEC §10: an MCP client asks for what the challenge names, else for every scope
            // of the metadata document; the `"*"` rule is what every call needs at least.
            let baseline = target
                .route
                .mcp
                .as_ref()
                .map(|r| r.default_rule().join(" "))
                .filter(|s| !s.is_empty());
            let response = refused.denial.response(
                &metadata,
                target.resource,
                dpop_request,
                baseline.as_deref(),
            );
            outcome.reason = refused.denial.reason();
            outcome.claims = refused.verified;
            outcome.denial = Some(refused.denial);
            return (response, outcome);
        }
    };
    let req = match mcp::body_rules(target.route, req.method()) {
        None => req.map(|body| body.map_err(Into::into).boxed_unsync()),
        Some(rules) => {
            let (parts, body) = req.into_parts();
            let read = mcp::read(&parts.headers, body, proxy.upstream_timeout).await;
            let checked = read.and_then(|bytes| {
                let calls = mcp::parse(&bytes)?;
                mcp::check_headers(&parts.headers, &calls)?;
                // A batch needs every call's scope; the first call short of it is named.
                let short = calls.iter().find_map(|call| {
                    let wanted = rules.needs(call);
                    enforce::holds(&permit.verified, target.resource, model, wanted).err()
                });
                drop(calls);
                Ok((bytes, short))
            });
            match checked {
                Ok((bytes, None)) => Request::from_parts(parts, crate::http::full(bytes)),
                Ok((_, Some(denial))) => {
                    let metadata = gateway.metadata_url(&target, proxy.public_url.as_deref());
                    let dpop_request = matches!(
                        enforce::credential(&parts.headers),
                        Ok((enforce::Scheme::Dpop, _))
                    );
                    let response = denial.response(&metadata, target.resource, dpop_request, None);
                    outcome.reason = denial.reason();
                    outcome.claims = Some(permit.verified);
                    outcome.denial = Some(denial);
                    return (response, outcome);
                }
                Err(refused) => {
                    outcome.reason = refused.reason();
                    outcome.claims = Some(permit.verified);
                    return (refused.response(), outcome);
                }
            }
        }
    };
    let identity = permit.verified.identity_for(target.resource, model);
    outcome.decision = "allow";
    outcome.claims = Some(permit.verified);
    let forwarded = gateway
        .forward(req, target, identity, peer, proxy.upstream_timeout)
        .await;
    outcome.reason = match &forwarded {
        Ok(_) => "ok",
        Err(e) => e.code(),
    };
    (forwarded.unwrap_or_else(|e| e.response()), outcome)
}

impl Gateway {
    /// The third stage: `req` to `target`'s upstream with the permitted identity, and its
    /// response back.
    async fn forward(
        &self,
        req: Request<Body>,
        target: Target<'_>,
        identity: Result<forward::Identity, &'static str>,
        peer: SocketAddr,
        timeout: Duration,
    ) -> Result<Response<Body>, ForwardError> {
        let origin = Origin {
            peer,
            host: target.host.as_ref(),
            scheme: self.scheme,
        };
        let upstream = &target.route.upstream;
        let forwarded = forward::forward(
            &self.upstreams,
            req,
            upstream,
            target.path,
            identity,
            target.route,
            origin,
            timeout,
        )
        .await;
        if let Err(ForwardError::Connect(detail)) = &forwarded {
            tracing::warn!(upstream = %upstream, error = %detail, "upstream unreachable");
        }
        forwarded
    }

    /// The URL of `target`'s RFC 9728 document, for a challenge: built only for a refusal.
    /// Its origin is `public_url` when set, else the request's.
    fn metadata_url(&self, target: &Target<'_>, public_url: Option<&str>) -> String {
        let prefix = &target.route.path_prefix;
        let prefix = if prefix == "/" { "" } else { prefix };
        if let Some(origin) = public_url {
            return format!("{origin}{METADATA_PATH}{prefix}");
        }
        let host = target
            .host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        format!("{}://{host}{METADATA_PATH}{prefix}", self.scheme)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_request_ids_are_distinct_base64url_across_draws() {
        let ids: std::collections::HashSet<_> = (0..REQUEST_IDS_PER_DRAW * 3 + 5)
            .map(|_| new_request_id().to_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids.len(), REQUEST_IDS_PER_DRAW * 3 + 5);
        for id in &ids {
            assert_eq!(id.len(), 16, "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{id}"
            );
        }
    }

    #[test]
    fn a_usable_sent_request_id_is_kept_and_another_replaced() {
        let mut headers = http::HeaderMap::new();
        headers.insert(X_REQUEST_ID, http::HeaderValue::from_static("trace-42"));
        assert_eq!(request_id(&mut headers), "trace-42");
        headers.insert(X_REQUEST_ID, http::HeaderValue::from_static("two words"));
        let made = request_id(&mut headers);
        assert_eq!(made.len(), 16);
        assert_eq!(headers[&X_REQUEST_ID], made);
    }
}
