//! The gateway (SPEC §4): route choice, token enforcement and forwarding. Every request gets
//! one log line with its route, resource, decision, reason, status and latency, and is counted
//! in the metrics with the same route, status and reason.

pub mod enforce;
pub mod forward;
pub mod keys;
pub mod resolve;
pub mod route;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
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

/// Answers one request to the proxy listener: one log line and one count per request.
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
    };
    let Some(proxy) = &snapshot.config.proxy else {
        return (resolve::Refusal::NotConfigured.response(), outcome);
    };
    let now = gateway.clock.unix();
    let model = &snapshot.config.model;
    let permit = enforce::enforce(
        &gateway.keys,
        &gateway.revoked,
        req.headers(),
        req.method(),
        &target,
        model,
        proxy.clock_skew,
        now,
    )
    .await;
    let permit = match permit {
        Ok(permit) => permit,
        Err(denial) => {
            tracing::debug!(reason = %denial, "request denied");
            outcome.reason = denial.reason();
            return (denial.response(&gateway.metadata_url(&target)), outcome);
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
        req: Request<Incoming>,
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
    fn metadata_url(&self, target: &Target<'_>) -> String {
        let host = target
            .host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        let prefix = &target.route.path_prefix;
        let prefix = if prefix == "/" { "" } else { prefix };
        format!("{}://{host}{METADATA_PATH}{prefix}", self.scheme)
    }
}
