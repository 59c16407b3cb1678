//! The token service: discovery, JWKS and the token endpoint (SPEC §3).

pub mod assertion;
pub(crate) mod authorize;
mod client_auth;
pub(crate) mod discovery;
pub(crate) mod document;
mod error;
pub mod form;
mod introspect;
pub(crate) mod oidc;
mod pages;
pub(crate) mod passwords;
pub(crate) mod register;
pub(crate) mod session;
pub mod token;

pub use error::OAuthError;
pub use register::Clients;
pub use token::{mint, token, Minted, Subject, TokenResponse};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

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
    /// The DPoP proofs seen at the token endpoint within their window (SPEC §8).
    pub proofs: crate::dpop::Replay,
    /// Registrations per peer address (SPEC §9).
    pub registrations: register::RateLimit,
    /// What is fetched about clients: `jwks_uri` key sets and metadata documents (SPEC §9).
    pub clients: Clients,
    /// Where token requests are counted.
    pub metrics: Arc<Metrics>,
    /// The clock every request reads once.
    pub clock: Clock,
}

/// The token service's endpoints, below the issuer's base path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    OpenIdConfiguration,
    AuthorizationServer,
    Jwks,
    Token,
    Authorize,
    Login,
    Consent,
    UserInfo,
    Introspect,
    Revocation,
    Register,
}

const ENDPOINTS: [Endpoint; 11] = [
    Endpoint::OpenIdConfiguration,
    Endpoint::AuthorizationServer,
    Endpoint::Jwks,
    Endpoint::Token,
    Endpoint::Authorize,
    Endpoint::Login,
    Endpoint::Consent,
    Endpoint::UserInfo,
    Endpoint::Introspect,
    Endpoint::Revocation,
    Endpoint::Register,
];

impl Endpoint {
    /// Its path below the issuer's base path, which is also its metrics label.
    fn path(self) -> &'static str {
        match self {
            Endpoint::OpenIdConfiguration => "/.well-known/openid-configuration",
            Endpoint::AuthorizationServer => "/.well-known/oauth-authorization-server",
            Endpoint::Jwks => "/.well-known/jwks",
            Endpoint::Token => "/connect/token",
            Endpoint::Authorize => "/connect/authorize",
            Endpoint::Login => "/connect/authorize/login",
            Endpoint::Consent => "/connect/authorize/consent",
            Endpoint::UserInfo => "/connect/userinfo",
            Endpoint::Introspect => "/connect/introspect",
            Endpoint::Revocation => "/connect/revocation",
            Endpoint::Register => "/connect/register",
        }
    }

    fn of(path: &str) -> Option<Self> {
        ENDPOINTS.into_iter().find(|e| e.path() == path)
    }

    /// The methods it answers, as an `Allow` header says them.
    fn allow(self) -> &'static str {
        match self {
            Endpoint::OpenIdConfiguration | Endpoint::AuthorizationServer | Endpoint::Jwks => {
                "GET, HEAD"
            }
            Endpoint::Authorize | Endpoint::UserInfo => "GET, POST",
            _ => "POST",
        }
    }

    fn allows(self, method: &Method) -> bool {
        match self.allow() {
            "GET, HEAD" => matches!(*method, Method::GET | Method::HEAD),
            "GET, POST" => matches!(*method, Method::GET | Method::POST),
            _ => method == Method::POST,
        }
    }
}

/// Answers one request to the issuer listener and times it by endpoint.
pub async fn handle(
    state: Shared,
    service: Arc<Service>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let started = Instant::now();
    let metrics = service.metrics.clone();
    let (response, endpoint) = answer(state, service, req, peer).await;
    let endpoint = endpoint.map_or(crate::metrics::NO_ROUTE, Endpoint::path);
    metrics.issuer_request(endpoint, response.status().as_u16(), started.elapsed());
    response
}

/// Answers one request, and says which endpoint it reached: the clock is read once, here.
async fn answer(
    state: Shared,
    service: Arc<Service>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> (Response<Body>, Option<Endpoint>) {
    let snapshot = state.load_full();
    let now = service.clock.now();
    let (Some(issuer), Some(docs)) = (&snapshot.config.issuer, &snapshot.issuer_docs) else {
        let response = text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the token service is not configured\n",
        );
        return (response, None);
    };
    if let Some(problem) = crate::http::host_problem(&req) {
        return (OAuthError::InvalidRequest(problem.into()).response(), None);
    }
    let path = req.uri().path();
    // An issuer URL with a path (https://id.example.com/tenant) serves below that path.
    let path = path.strip_prefix(issuer.base_path.as_str()).unwrap_or(path);
    let Some(endpoint) = Endpoint::of(path) else {
        return (text(StatusCode::NOT_FOUND, "not found\n"), None);
    };
    if !endpoint.allows(req.method()) {
        return (method_not_allowed(endpoint.allow()), Some(endpoint));
    }
    let (grants, within) = (&service.grants, issuer.request_body_timeout);
    let response = match endpoint {
        Endpoint::OpenIdConfiguration if !docs.openid => {
            // A document strict OpenID clients reject is never published.
            text(
                StatusCode::NOT_FOUND,
                "no OpenID Connect discovery document: this issuer has no RS256 signing key\n",
            )
        }
        Endpoint::OpenIdConfiguration | Endpoint::AuthorizationServer => {
            cacheable(json_bytes(StatusCode::OK, docs.discovery.clone()))
        }
        Endpoint::Jwks => {
            let mut response = cacheable(json_bytes(StatusCode::OK, docs.jwks.clone()));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/jwk-set+json"),
            );
            response
        }
        Endpoint::Token => {
            let metrics = &service.metrics;
            let proofs = &service.proofs;
            token::endpoint(
                snapshot.clone(),
                grants,
                proofs,
                &service.clients,
                req,
                within,
                now,
                metrics,
                peer,
            )
            .await
        }
        Endpoint::Authorize => authorize::authorize(&snapshot, issuer, &service, req, now).await,
        Endpoint::Login => authorize::login(&snapshot, issuer, &service, req, peer, now).await,
        Endpoint::Consent => authorize::consent(&snapshot, issuer, &service, req, now).await,
        Endpoint::UserInfo => {
            oidc::userinfo(&snapshot, issuer, grants, &service.proofs, req, now).await
        }
        Endpoint::Introspect => {
            let keys = &service.clients;
            introspect::introspect(snapshot.clone(), grants, keys, req, within, now).await
        }
        Endpoint::Revocation => {
            let keys = &service.clients;
            introspect::revocation(snapshot.clone(), grants, keys, req, within, now).await
        }
        Endpoint::Register => match issuer.registration.as_ref() {
            None => text(
                StatusCode::NOT_FOUND,
                "registration is off: there is no [issuer.registration]\n",
            ),
            Some(registration) => {
                let limit = &service.registrations;
                let at = crate::jwt::numeric_date(now);
                let config = &snapshot.config;
                let ip = peer.ip();
                register::register(config, registration, grants, limit, req, within, ip, at)
                    .await
                    .unwrap_or_else(register::Refused::response)
            }
        },
    };
    (response, Some(endpoint))
}

/// Discovery and JWKS may be cached briefly; a removed key disappears within a minute.
fn cacheable(mut response: Response<Body>) -> Response<Body> {
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("public, max-age=60"),
    );
    response
}
