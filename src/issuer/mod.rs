//! The token service: discovery, JWKS and the token endpoint (SPEC §3).

pub(crate) mod authorize;
mod client_auth;
pub(crate) mod discovery;
mod error;
pub mod form;
mod introspect;
pub(crate) mod oidc;
mod pages;
pub(crate) mod passwords;
pub(crate) mod session;
pub mod token;

pub use error::OAuthError;
pub use token::{mint, token, Minted, Subject, TokenResponse};

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::clock::Clock;
use crate::grants::Grants;
use crate::http::{json_bytes, method_not_allowed, text, Body};
use crate::metrics::Metrics;
use crate::state::Shared;

/// What the token service keeps across reloads: the grant store, the signed-in sessions and
/// the metrics.
pub struct Service {
    /// Codes, refresh tokens and consents.
    pub grants: Grants,
    /// Sessions, pending sign-ins and failed logins.
    pub sessions: session::Sessions,
    /// Password checks, a bounded number at a time.
    pub passwords: passwords::Passwords,
    /// Where token requests are counted.
    pub metrics: Arc<Metrics>,
    /// The clock every request reads once.
    pub clock: Clock,
}

/// Answers one request to the issuer listener.
pub async fn handle(
    state: Shared,
    service: Arc<Service>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let snapshot = state.load_full();
    let now = service.clock.now();
    let (Some(issuer), Some(docs)) = (&snapshot.config.issuer, &snapshot.issuer_docs) else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the token service is not configured\n",
        );
    };
    if let Some(problem) = crate::http::host_problem(&req) {
        return OAuthError::InvalidRequest(problem.into()).response();
    }
    let path = req.uri().path();
    // An issuer URL with a path (https://id.example.com/tenant) serves below that path.
    let path = path.strip_prefix(issuer.base_path.as_str()).unwrap_or(path);
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    match path {
        "/.well-known/openid-configuration" | "/.well-known/oauth-authorization-server" => {
            if !get {
                return method_not_allowed("GET, HEAD");
            }
            if path == "/.well-known/openid-configuration" && !docs.openid {
                // A document strict OpenID clients reject is never published.
                return text(
                    StatusCode::NOT_FOUND,
                    "no OpenID Connect discovery document: this issuer has no RS256 signing key\n",
                );
            }
            cacheable(json_bytes(StatusCode::OK, docs.discovery.clone()))
        }
        "/.well-known/jwks" => {
            if !get {
                return method_not_allowed("GET, HEAD");
            }
            let mut response = cacheable(json_bytes(StatusCode::OK, docs.jwks.clone()));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/jwk-set+json"),
            );
            response
        }
        "/connect/token" => {
            if req.method() != Method::POST {
                return method_not_allowed("POST");
            }
            let snapshot = snapshot.clone();
            let within = issuer.request_body_timeout;
            token::endpoint(
                snapshot,
                &service.grants,
                req,
                within,
                now,
                &service.metrics,
            )
            .await
        }
        "/connect/authorize" => {
            if !matches!(*req.method(), Method::GET | Method::POST) {
                return method_not_allowed("GET, POST");
            }
            authorize::authorize(&snapshot, issuer, &service, req, now).await
        }
        "/connect/authorize/login" => {
            if req.method() != Method::POST {
                return method_not_allowed("POST");
            }
            authorize::login(&snapshot, issuer, &service, req, peer, now).await
        }
        "/connect/authorize/consent" => {
            if req.method() != Method::POST {
                return method_not_allowed("POST");
            }
            authorize::consent(&snapshot, issuer, &service, req, now).await
        }
        "/connect/userinfo" => oidc::userinfo(&snapshot, issuer, &service.grants, req, now).await,
        "/connect/introspect" => {
            if req.method() != Method::POST {
                return method_not_allowed("POST");
            }
            let within = issuer.request_body_timeout;
            introspect::introspect(snapshot.clone(), &service.grants, req, within, now).await
        }
        "/connect/revocation" => {
            if req.method() != Method::POST {
                return method_not_allowed("POST");
            }
            let within = issuer.request_body_timeout;
            introspect::revocation(snapshot.clone(), &service.grants, req, within, now).await
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Discovery and JWKS may be cached briefly; a removed key disappears within a minute.
fn cacheable(mut response: Response<Body>) -> Response<Body> {
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("public, max-age=60"),
    );
    response
}
