//! The gateway's second stage: SPEC §4's six steps, in order, in one function
//! ([`enforce`]), into a [`Permit`] or a typed [`Denial`]. Every refusal becomes a response
//! with an RFC 6750 challenge in one place, [`Denial::response`], and keeps its cause for the
//! log line and the metric label ([`Denial::reason`]).
//!
//! Measured (BENCHMARKS.md, session 4): the verified-token cache is looked up with the raw
//! credential before its `b64token` syntax is checked (a cached token passed that check when
//! it was verified), so a warm request checks nothing twice.

use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderMap, Method, Response, StatusCode};

use super::keys::{Keys, Verified};
use super::resolve::Target;
use crate::config::Route;
use crate::dpop::{self, Presentation, ProofError, Replay};
use crate::grants::Revoked;
use crate::http::{json, Body};
use crate::jwt::verify::{check_time, Claims, TokenError};
use crate::protocol::authorization::{authorization, bearer_token, Credentials, Malformed};
use crate::protocol::Challenge;
use crate::resources::{ApiResource, Model};

/// Why a request is not forwarded, by the step of SPEC §4 that refused it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// Step 1: no bearer token was sent (401, bare challenge).
    #[error("no bearer token")]
    NoToken,
    /// Step 1: the Authorization header is malformed or repeated (400 `invalid_request`).
    #[error("invalid_request: {0}")]
    InvalidRequest(Malformed),
    /// Steps 2 to 4: the token itself (401 `invalid_token`).
    #[error("invalid_token: {0}")]
    Token(TokenError),
    /// Step 5: `aud` does not name the route's resource (401 `invalid_token`).
    #[error("invalid_token: the token is not meant for this resource")]
    Audience,
    /// Step 5: the resource is isolated and `aud` names another one too (401 `invalid_token`).
    #[error("invalid_token: this resource accepts only tokens minted for it alone")]
    NotIsolated,
    /// Step 6: the token lacks a scope the route asks for (403 `insufficient_scope`).
    #[error("insufficient_scope: needs one of {scope}")]
    InsufficientScope {
        /// The scopes any one of which would do, space-delimited.
        scope: String,
    },
    /// SPEC §8: a DPoP-bound token sent with the `Bearer` scheme (401 `invalid_token`).
    #[error("invalid_token: the token is DPoP-bound; send it with the DPoP scheme and a proof")]
    BoundAsBearer,
    /// SPEC §8: the `DPoP` scheme with a token that is not bound (401 `invalid_token`).
    #[error("invalid_token: the token is not DPoP-bound; send it with the Bearer scheme")]
    NotBound,
    /// SPEC §8: the resource has `require_dpop` and the token is not bound (401 `invalid_token`).
    #[error("invalid_token: this resource accepts only DPoP-bound tokens")]
    DpopRequired,
    /// SPEC §8: the DPoP proof is missing or wrong (401 `invalid_dpop_proof`).
    #[error("invalid_dpop_proof: {0}")]
    Proof(ProofError),
}

/// A request refused: why, and the token's claims when its signature was verified before a
/// later step refused it (for the log line: who was refused).
pub struct Refused {
    pub denial: Denial,
    pub verified: Option<Arc<Verified>>,
}

impl From<Denial> for Refused {
    fn from(denial: Denial) -> Self {
        Refused {
            denial,
            verified: None,
        }
    }
}

/// What a DPoP proof at the gateway is checked against, besides the token: the replay cache
/// and the URL the client addressed (built only when a proof is checked).
pub struct ProofContext<'a> {
    /// The gateway's replay cache.
    pub replay: &'a Replay,
    /// `[proxy] public_url`, else `None`: the request's own origin.
    pub public_url: Option<&'a str>,
    /// The listener's scheme, for the request's own origin.
    pub scheme: &'a str,
    /// The path as the client sent it.
    pub path: &'a str,
    /// `dpop_max_age`.
    pub max_age: Duration,
}

/// A request allowed through: the verified token it carried.
pub struct Permit {
    /// The token's claims and identity headers.
    pub verified: Arc<Verified>,
}

/// SPEC §4 steps 1 to 6 for `target`, in this order: one bearer token, its signature, `typ`,
/// `exp`/`nbf` at `now` within `skew`, not `revoked` (SPEC §7, cached or not), the DPoP
/// binding (SPEC §8), `aud` with isolation, and the scope this method needs.
#[allow(clippy::too_many_arguments)]
pub async fn enforce(
    keys: &Keys,
    revoked: &Revoked,
    headers: &HeaderMap,
    method: &Method,
    target: &Target<'_>,
    model: &Model,
    skew: Duration,
    now: u64,
    proofs: &ProofContext<'_>,
) -> Result<Permit, Refused> {
    let (scheme, credential) = credential(headers)?;
    let verified = match keys.cached(credential, skew, now) {
        Ok(verified) => verified,
        Err(miss) => keys
            .verify(token(credential)?, miss)
            .await
            .map_err(Denial::Token)?,
    };
    let checked = check_time(&verified, now, skew)
        .map_err(Denial::Token)
        .and_then(|()| {
            let revoked = verified
                .jti
                .as_deref()
                .is_some_and(|jti| revoked.contains(jti));
            if revoked {
                return Err(Denial::Token(TokenError::Revoked));
            }
            binding(
                &verified, scheme, credential, headers, method, target, proofs, skew, now,
            )?;
            audience(&verified, target.resource)?;
            scope(&verified, target.route, target.resource, model, method)
        });
    match checked {
        Ok(()) => Ok(Permit { verified }),
        Err(denial) => Err(Refused {
            denial,
            verified: Some(verified),
        }),
    }
}

impl Denial {
    /// The RFC 6750 error code, or `no_token`.
    pub fn code(&self) -> &'static str {
        match self {
            Denial::NoToken => "no_token",
            Denial::InvalidRequest(_) => "invalid_request",
            Denial::Token(_)
            | Denial::Audience
            | Denial::NotIsolated
            | Denial::BoundAsBearer
            | Denial::NotBound
            | Denial::DpopRequired => "invalid_token",
            Denial::InsufficientScope { .. } => "insufficient_scope",
            Denial::Proof(_) => "invalid_dpop_proof",
        }
    }

    /// Whether the refusal is about DPoP: its error goes in the `DPoP` challenge.
    fn of_dpop(&self) -> bool {
        matches!(
            self,
            Denial::Proof(_) | Denial::BoundAsBearer | Denial::NotBound | Denial::DpopRequired
        )
    }

    /// The reason as logged and counted in `isogate_requests_total`: which step refused the
    /// request, and for a token, why.
    pub fn reason(&self) -> &'static str {
        match self {
            Denial::Token(e) => match e {
                TokenError::TooLarge => "token_too_large",
                TokenError::Malformed(_) => "token_malformed",
                TokenError::UnsupportedAlg => "token_alg",
                TokenError::UntrustedIssuer => "token_issuer",
                TokenError::UnknownKid => "token_kid",
                TokenError::AlgMismatch => "token_key_alg",
                TokenError::BadSignature => "token_signature",
                TokenError::BadTyp => "token_typ",
                TokenError::Expired => "token_expired",
                TokenError::NotYetValid => "token_not_yet_valid",
                TokenError::Revoked => "token_revoked",
            },
            Denial::Audience => "token_audience",
            Denial::NotIsolated => "token_not_isolated",
            Denial::BoundAsBearer => "token_dpop_bound",
            Denial::NotBound => "token_not_dpop_bound",
            Denial::DpopRequired => "token_dpop_required",
            Denial::Proof(e) => e.reason(),
            other => other.code(),
        }
    }

    fn description(&self) -> Option<String> {
        match self {
            Denial::NoToken => None,
            Denial::InvalidRequest(malformed) => Some(malformed.message().to_owned()),
            Denial::Token(e) => Some(e.to_string()),
            Denial::Audience => Some("the token is not meant for this resource".to_owned()),
            Denial::NotIsolated => {
                Some("this resource accepts only tokens minted for it alone".to_owned())
            }
            Denial::InsufficientScope { .. } => {
                Some("the token has none of the scopes this request needs".to_owned())
            }
            Denial::BoundAsBearer => {
                Some("the token is DPoP-bound; send it with the DPoP scheme and a proof".to_owned())
            }
            Denial::NotBound => {
                Some("the token is not DPoP-bound; send it with the Bearer scheme".to_owned())
            }
            Denial::DpopRequired => Some("this resource accepts only DPoP-bound tokens".to_owned()),
            Denial::Proof(e) => Some(e.to_string()),
        }
    }

    /// The response with its `WWW-Authenticate` challenges; `metadata` is the route's RFC 9728
    /// document URL. A `Bearer` challenge unless `resource` takes DPoP-bound tokens only, and
    /// a `DPoP` one (SPEC §8); the error goes in the `DPoP` one when the request used that
    /// scheme (`dpop_request`) or the refusal is about DPoP. `scope`, when given, is what the
    /// route asks of every request (an MCP route's `"*"` rule): named by every challenge but
    /// `insufficient_scope`'s, which names what the request lacks.
    pub fn response(
        &self,
        metadata: &str,
        resource: &ApiResource,
        dpop_request: bool,
        scope: Option<&str>,
    ) -> Response<Body> {
        let status = match self {
            Denial::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Denial::InsufficientScope { .. } => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        };
        let description = self.description();
        let with_error = Challenge {
            realm: Some("isogate"),
            error: (!matches!(self, Denial::NoToken)).then(|| self.code()),
            description: description.as_deref(),
            scope: match self {
                Denial::InsufficientScope { scope } => Some(scope),
                _ => scope,
            },
            resource_metadata: Some(metadata),
            ..Challenge::default()
        };
        let bare = Challenge {
            realm: Some("isogate"),
            scope,
            resource_metadata: Some(metadata),
            ..Challenge::default()
        };
        let on_dpop = dpop_request || resource.require_dpop || self.of_dpop();
        let (bearer, dpop) = if on_dpop {
            (bare, with_error)
        } else {
            (with_error, Challenge::default())
        };
        let dpop = Challenge {
            dpop: true,
            algs: Some(dpop::ALGS),
            ..dpop
        };
        let mut response = match &description {
            Some(d) => json(
                status,
                &serde_json::json!({"error": self.code(), "error_description": d}),
            ),
            None => json(status, &serde_json::json!({"error": "unauthorized"})),
        };
        let headers = response.headers_mut();
        if !resource.require_dpop {
            headers.append(header::WWW_AUTHENTICATE, bearer.header());
        }
        headers.append(header::WWW_AUTHENTICATE, dpop.header());
        response
    }
}

/// The scheme an access token was sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `Authorization: Bearer` (RFC 6750).
    Bearer,
    /// `Authorization: DPoP` (RFC 9449 §7.1).
    Dpop,
}

/// SPEC §4 step 1: exactly one `Authorization: Bearer <token>` (or `DPoP <token>`) header,
/// and its token.
pub fn bearer(headers: &HeaderMap) -> Result<&str, Denial> {
    credential(headers).and_then(|(_, credential)| token(credential))
}

/// The first half of [`bearer`]: the scheme and the bytes after it in the one
/// `Authorization` header, not yet checked: [`enforce`] looks them up in the verified-token
/// cache before checking them with [`token`].
pub fn credential(headers: &HeaderMap) -> Result<(Scheme, &[u8]), Denial> {
    match authorization(headers) {
        Ok(Some(Credentials::Bearer(credential))) => Ok((Scheme::Bearer, credential)),
        Ok(Some(Credentials::Dpop(credential))) => Ok((Scheme::Dpop, credential)),
        // Another scheme (e.g. Basic) carries no access token (RFC 6750 §3.1).
        Ok(Some(_) | None) => Err(Denial::NoToken),
        Err(malformed) => Err(Denial::InvalidRequest(malformed)),
    }
}

/// SPEC §8: a bound token only with the `DPoP` scheme and a proof by its key, for this
/// request, seen once; an unbound one only with `Bearer`, and not at a `require_dpop`
/// resource. A Bearer request with an unbound token checks two fields here.
#[allow(clippy::too_many_arguments)]
fn binding(
    claims: &Claims,
    scheme: Scheme,
    credential: &[u8],
    headers: &HeaderMap,
    method: &Method,
    target: &Target<'_>,
    proofs: &ProofContext<'_>,
    skew: Duration,
    now: u64,
) -> Result<(), Denial> {
    let jkt = claims.jkt.as_deref();
    if jkt.is_none() && scheme == Scheme::Bearer && target.resource.require_dpop {
        return Err(Denial::DpopRequired);
    }
    let proof = match dpop::presented(jkt, scheme == Scheme::Dpop, headers) {
        Ok(Some(proof)) => proof,
        Ok(None) => return Ok(()),
        Err(Presentation::BoundAsBearer) => return Err(Denial::BoundAsBearer),
        Err(Presentation::NotBound) => return Err(Denial::NotBound),
        Err(Presentation::Proof(e)) => return Err(Denial::Proof(e)),
    };
    let origin = match proofs.public_url {
        Some(origin) => std::borrow::Cow::Borrowed(origin),
        None => {
            let host = target
                .host
                .as_ref()
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost");
            std::borrow::Cow::Owned(format!("{}://{host}", proofs.scheme))
        }
    };
    let url = format!("{origin}{}", proofs.path);
    let expected = dpop::Expected {
        method: method.as_str(),
        url: &url,
        // The credential verified as a token, so it is a b64token and UTF-8.
        access_token: std::str::from_utf8(credential).ok(),
        key: jkt,
        now,
        max_age: proofs.max_age,
        skew,
    };
    dpop::check(proof, &expected, proofs.replay)
        .map(drop)
        .map_err(Denial::Proof)
}

/// The second half of [`bearer`]: `credential` as a token when it is a `b64token`.
pub fn token(credential: &[u8]) -> Result<&str, Denial> {
    bearer_token(credential).map_err(Denial::InvalidRequest)
}

/// SPEC §4 step 5: `aud` names the route's resource; an isolated resource must be the only one.
pub fn audience(claims: &Claims, resource: &ApiResource) -> Result<(), Denial> {
    if !claims.aud.contains(&resource.name) {
        return Err(Denial::Audience);
    }
    if resource.isolated && claims.aud.iter().any(|a| *a != resource.name) {
        return Err(Denial::NotIsolated);
    }
    Ok(())
}

/// SPEC §4 step 6: at least one scope the route asks for this method, counting only scopes
/// the resource lists (a parameterized scope by its name). A `[routes.mcp]` route asks its
/// `"*"` rule, and leaves a POST to its body ([`super::mcp::body_rules`]).
pub fn scope<'a>(
    claims: &'a Claims,
    route: &Route,
    resource: &'a ApiResource,
    model: &'a Model,
    method: &Method,
) -> Result<(), Denial> {
    let wanted: &[String] = if let Some(rules) = &route.mcp {
        if super::mcp::body_rules(route, method).is_some() {
            return Ok(());
        }
        rules.default_rule()
    } else if route.scopes.is_empty() {
        &resource.scopes
    } else {
        let rule = |m: &str| route.scopes.get(m);
        // HEAD reads what GET reads: it needs what GET needs unless the route names it.
        rule(method.as_str())
            .or_else(|| (method == Method::HEAD).then(|| rule("GET")).flatten())
            .or_else(|| rule("*"))
            .map_or(&[], Vec::as_slice)
    };
    holds(claims, resource, model, wanted)
}

/// At least one of `wanted` among the scopes `claims` hold, counting only scopes `resource`
/// lists (a parameterized scope by its name); else `insufficient_scope` naming `wanted`.
pub fn holds<'a>(
    claims: &'a Claims,
    resource: &'a ApiResource,
    model: &'a Model,
    wanted: &[String],
) -> Result<(), Denial> {
    // The scope a held value counts as at this resource: itself when the resource lists it (a
    // plain or colon-named scope: no lookup on the warm path), else the parameterized scope it
    // is a value of.
    let counts_as = |s: &'a str| -> Option<&'a str> {
        if resource.lists(s) {
            return Some(s);
        }
        let scope = model.api_scope_of(s)?;
        resource.lists(&scope.name).then_some(scope.name.as_str())
    };
    let mut held = claims.scope.iter().filter_map(|s| counts_as(s));
    if held.any(|name| wanted.iter().any(|w| w == name)) {
        Ok(())
    } else {
        Err(Denial::InsufficientScope {
            scope: wanted.join(" "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::ApiScope;
    use http::HeaderValue;
    use std::collections::BTreeMap;

    fn resource(name: &str, scopes: &[&str], isolated: bool) -> ApiResource {
        ApiResource {
            name: name.into(),
            display_name: None,
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            isolated,
            enabled: true,
            user_claims: vec![],
            allowed_signing_algs: vec![],
            secrets: vec![],
            require_dpop: false,
        }
    }

    fn claims(aud: &[&str], scope: &[&str]) -> Claims {
        Claims {
            iss: "https://issuer.test".into(),
            sub: Some("alice".into()),
            client_id: Some("app".into()),
            aud: aud.iter().map(|s| s.to_string()).collect(),
            scope: scope.iter().map(|s| s.to_string()).collect(),
            exp: 2_000_000_000,
            nbf: None,
            jti: None,
            jkt: None,
        }
    }

    /// `read`, `write`, the parameterized `transaction`, and `invoices:read`, a scope whose
    /// name holds a `:` without being parameterized.
    fn model() -> Model {
        let mut m = Model::default();
        for (name, parameterized) in [
            ("read", false),
            ("write", false),
            ("transaction", true),
            ("invoices:read", false),
        ] {
            m.api_scopes.insert(
                name.into(),
                ApiScope {
                    name: name.into(),
                    display_name: None,
                    user_claims: vec![],
                    parameterized,
                    parameter_claim: None,
                },
            );
        }
        m
    }

    fn route(rules: &[(&str, &[&str])]) -> Route {
        Route {
            path_prefix: "/invoices".into(),
            host: None,
            upstream: std::sync::Arc::new(
                crate::config::Upstream::parse("http://127.0.0.1:1").unwrap(),
            ),
            resource: "urn:invoices".into(),
            scopes: rules
                .iter()
                .map(|(m, s)| (m.to_string(), s.iter().map(|s| s.to_string()).collect()))
                .collect::<BTreeMap<_, _>>(),
            mcp: None,
            strip_authorization: false,
            keep_headers: vec![],
        }
    }

    /// SPEC §4 step 5, for a shared and an isolated resource, `aud` of one value and of several.
    #[test]
    fn the_audience_must_name_the_resource_and_an_isolated_one_alone() {
        let shared = resource("urn:products", &["read"], false);
        let isolated = resource("urn:invoices", &["read"], true);
        let not_meant = Err(Denial::Audience);
        let not_alone = Err(Denial::NotIsolated);
        for (aud, at_shared, at_isolated) in [
            (&["urn:products"][..], Ok(()), not_meant.clone()),
            (&["urn:invoices"][..], not_meant.clone(), Ok(())),
            (
                &["urn:products", "urn:other"][..],
                Ok(()),
                not_meant.clone(),
            ),
            (
                &["urn:invoices", "urn:products"][..],
                Ok(()),
                not_alone.clone(),
            ),
            (
                &["urn:products", "urn:invoices"][..],
                Ok(()),
                not_alone.clone(),
            ),
            (&["urn:other"][..], not_meant.clone(), not_meant.clone()),
            (
                &["urn:invoices", "urn:invoices"][..],
                not_meant.clone(),
                Ok(()),
            ),
        ] {
            let c = claims(aud, &["read"]);
            assert_eq!(audience(&c, &shared), at_shared, "{aud:?} at products");
            assert_eq!(audience(&c, &isolated), at_isolated, "{aud:?} at invoices");
        }
    }

    fn insufficient(scope: &str) -> Result<(), Denial> {
        Err(Denial::InsufficientScope {
            scope: scope.into(),
        })
    }

    /// SPEC §4 step 6: per-method rules and `*`, HEAD as GET, only scopes the resource lists,
    /// a parameterized scope by its name, a colon-named scope as itself.
    #[test]
    fn a_scope_the_route_asks_for_this_method_is_needed() {
        let m = model();
        let invoices = resource(
            "urn:invoices",
            &["read", "write", "transaction", "invoices:read"],
            true,
        );
        let rules = route(&[("GET", &["read"]), ("DELETE", &[]), ("*", &["write"])]);
        let check = |scopes: &[&str], method: Method| {
            scope(
                &claims(&["urn:invoices"], scopes),
                &rules,
                &invoices,
                &m,
                &method,
            )
        };
        assert_eq!(check(&["read"], Method::GET), Ok(()));
        assert_eq!(check(&["read"], Method::HEAD), Ok(()), "HEAD as GET");
        assert_eq!(check(&["read"], Method::POST), insufficient("write"));
        assert_eq!(check(&["read", "write"], Method::POST), Ok(()));
        assert_eq!(check(&["write"], Method::GET), insufficient("read"));
        assert_eq!(check(&["read", "write"], Method::DELETE), insufficient(""));
        assert_eq!(check(&[], Method::GET), insufficient("read"));
        // A route that names HEAD decides it itself.
        let head = route(&[("GET", &["read"]), ("HEAD", &["write"])]);
        let c = claims(&["urn:invoices"], &["read"]);
        assert_eq!(
            scope(&c, &head, &invoices, &m, &Method::HEAD),
            insufficient("write")
        );

        // No rules: any scope of the resource.
        let open = route(&[]);
        let any = |scopes: &[&str]| {
            scope(
                &claims(&["urn:invoices"], scopes),
                &open,
                &invoices,
                &m,
                &Method::PUT,
            )
        };
        assert_eq!(any(&["write"]), Ok(()));
        assert_eq!(
            any(&["transaction:42"]),
            Ok(()),
            "a value of a parameterized scope"
        );
        assert_eq!(
            any(&["invoices:read"]),
            Ok(()),
            "a scope named with a colon"
        );
        assert_eq!(
            any(&["admin"]),
            insufficient("read write transaction invoices:read")
        );
        // Only a parameterized scope is read as name:value: `write:x` is not `write`, and
        // `invoices:x` is not `invoices:read`.
        assert_eq!(
            any(&["write:x", "invoices:x", "invoices"]),
            insufficient("read write transaction invoices:read")
        );
        // A scope the resource does not list never counts, whatever the route asks.
        let products = resource("urn:products", &["read"], false);
        let c = claims(&["urn:products"], &["write"]);
        assert_eq!(
            scope(&c, &rules, &products, &m, &Method::POST),
            insufficient("write")
        );
        let parameterized = route(&[("*", &["transaction"])]);
        let c = claims(&["urn:invoices"], &["transaction:7"]);
        assert_eq!(
            scope(&c, &parameterized, &invoices, &m, &Method::POST),
            Ok(())
        );
        let c = claims(&["urn:invoices"], &["transaction"]);
        assert_eq!(
            scope(&c, &parameterized, &invoices, &m, &Method::POST),
            Ok(())
        );
    }

    #[test]
    fn bearer_header_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), Err(Denial::NoToken));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bEaReR abc.def-_~+/=="),
        );
        assert_eq!(bearer(&h), Ok("abc.def-_~+/=="));
        for bad in [
            "Bearer",
            "Bearer ",
            "Bearer  abc",
            "Bearer a b",
            "Bearer ==",
            "Bearer a\"b",
        ] {
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(bad));
            assert!(
                matches!(bearer(&h), Err(Denial::InvalidRequest(_))),
                "{bad}"
            );
        }
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic Y2xpZW50OnNlY3JldA=="),
        );
        assert_eq!(bearer(&h), Err(Denial::NoToken));
        h.append(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert!(matches!(bearer(&h), Err(Denial::InvalidRequest(_))));
        // Bytes `to_str` refuses, whatever the scheme: the header itself is malformed.
        for bad in [&b"Bearer abc\xff"[..], b"Basic \xe9t\xe9"] {
            h.insert(
                header::AUTHORIZATION,
                HeaderValue::from_bytes(bad).expect("obs-text is a header value"),
            );
            assert_eq!(bearer(&h), Err(Denial::InvalidRequest(Malformed::Header)));
        }
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer a b"),
        );
        assert_eq!(bearer(&h), Err(Denial::InvalidRequest(Malformed::Bearer)));
    }

    #[test]
    fn each_denial_has_its_status_challenge_and_reason() {
        let metadata = "http://h/.well-known/oauth-protected-resource/x";
        for (denial, status, reason, challenge) in [
            (Denial::NoToken, 401, "no_token", "Bearer realm=\"isogate\", resource_metadata=\"http://h/.well-known/oauth-protected-resource/x\""),
            (Denial::InvalidRequest(Malformed::Repeated), 400, "invalid_request", "Bearer realm=\"isogate\", error=\"invalid_request\", error_description=\"more than one Authorization header\", resource_metadata=\"http://h/.well-known/oauth-protected-resource/x\""),
            (Denial::Token(TokenError::Expired), 401, "token_expired", "Bearer realm=\"isogate\", error=\"invalid_token\", error_description=\"token expired\", resource_metadata=\"http://h/.well-known/oauth-protected-resource/x\""),
            (Denial::Audience, 401, "token_audience", "Bearer realm=\"isogate\", error=\"invalid_token\", error_description=\"the token is not meant for this resource\", resource_metadata=\"http://h/.well-known/oauth-protected-resource/x\""),
            (Denial::NotIsolated, 401, "token_not_isolated", "Bearer realm=\"isogate\", error=\"invalid_token\", error_description=\"this resource accepts only tokens minted for it alone\", resource_metadata=\"http://h/.well-known/oauth-protected-resource/x\""),
            (Denial::InsufficientScope { scope: "write".into() }, 403, "insufficient_scope", "Bearer realm=\"isogate\", error=\"insufficient_scope\", error_description=\"the token has none of the scopes this request needs\", scope=\"write\", resource_metadata=\"http://h/.well-known/oauth-protected-resource/x\""),
        ] {
            let api = resource("urn:x", &[], false);
            let response = denial.response(metadata, &api, false, None);
            assert_eq!(response.status().as_u16(), status, "{denial}");
            assert_eq!(denial.reason(), reason);
            let challenges: Vec<_> = response.headers().get_all(header::WWW_AUTHENTICATE).iter().collect();
            // The Bearer challenge with the error, and a bare DPoP one beside it (SPEC §8).
            assert_eq!(challenges, [challenge, "DPoP algs=\"ES256 ES384 RS256 PS256 EdDSA\""]);
        }
        // A DPoP refusal, or any refusal of a request that used DPoP: the error goes in the
        // DPoP challenge; at a require_dpop resource there is no Bearer challenge at all.
        let bare_bearer = "Bearer realm=\"isogate\", resource_metadata=\"http://h/.well-known/oauth-protected-resource/x\"";
        let open = resource("urn:x", &[], false);
        let mut dpop_only = resource("urn:x", &[], false);
        dpop_only.require_dpop = true;
        for (denial, api, dpop_request, reason, challenges) in [
            (Denial::Proof(ProofError::Replayed), &open, true, "dpop_replay", vec![bare_bearer, "DPoP realm=\"isogate\", algs=\"ES256 ES384 RS256 PS256 EdDSA\", error=\"invalid_dpop_proof\", error_description=\"the proof was already used (jti)\", resource_metadata=\"http://h/.well-known/oauth-protected-resource/x\""]),
            (Denial::Proof(ProofError::Ath), &open, true, "dpop_proof", vec![bare_bearer, "DPoP realm=\"isogate\", algs=\"ES256 ES384 RS256 PS256 EdDSA\", error=\"invalid_dpop_proof\", error_description=\"ath does not match the access token\", resource_metadata=\"http://h/.well-known/oauth-protected-resource/x\""]),
            (Denial::BoundAsBearer, &open, false, "token_dpop_bound", vec![bare_bearer, "DPoP realm=\"isogate\", algs=\"ES256 ES384 RS256 PS256 EdDSA\", error=\"invalid_token\", error_description=\"the token is DPoP-bound; send it with the DPoP scheme and a proof\", resource_metadata=\"http://h/.well-known/oauth-protected-resource/x\""]),
            (Denial::Token(TokenError::Expired), &open, true, "token_expired", vec![bare_bearer, "DPoP realm=\"isogate\", algs=\"ES256 ES384 RS256 PS256 EdDSA\", error=\"invalid_token\", error_description=\"token expired\", resource_metadata=\"http://h/.well-known/oauth-protected-resource/x\""]),
            (Denial::NotBound, &open, true, "token_not_dpop_bound", vec![bare_bearer, "DPoP realm=\"isogate\", algs=\"ES256 ES384 RS256 PS256 EdDSA\", error=\"invalid_token\", error_description=\"the token is not DPoP-bound; send it with the Bearer scheme\", resource_metadata=\"http://h/.well-known/oauth-protected-resource/x\""]),
            (Denial::DpopRequired, &dpop_only, false, "token_dpop_required", vec!["DPoP realm=\"isogate\", algs=\"ES256 ES384 RS256 PS256 EdDSA\", error=\"invalid_token\", error_description=\"this resource accepts only DPoP-bound tokens\", resource_metadata=\"http://h/.well-known/oauth-protected-resource/x\""]),
            (Denial::NoToken, &dpop_only, false, "no_token", vec!["DPoP realm=\"isogate\", algs=\"ES256 ES384 RS256 PS256 EdDSA\", resource_metadata=\"http://h/.well-known/oauth-protected-resource/x\""]),
        ] {
            let response = denial.response(metadata, api, dpop_request, None);
            assert_eq!(response.status().as_u16(), 401, "{denial}");
            assert_eq!(denial.reason(), reason);
            let got: Vec<_> = response.headers().get_all(header::WWW_AUTHENTICATE).iter().collect();
            assert_eq!(got, challenges, "{denial}");
        }
        // Every token error has a reason of its own.
        let errors = [
            TokenError::TooLarge,
            TokenError::Malformed("x"),
            TokenError::UnsupportedAlg,
            TokenError::UntrustedIssuer,
            TokenError::UnknownKid,
            TokenError::AlgMismatch,
            TokenError::BadSignature,
            TokenError::BadTyp,
            TokenError::Expired,
            TokenError::NotYetValid,
            TokenError::Revoked,
        ];
        let reasons: std::collections::BTreeSet<&str> =
            errors.iter().map(|e| Denial::Token(*e).reason()).collect();
        assert_eq!(reasons.len(), errors.len());
        assert!(reasons.iter().all(|r| r.starts_with("token_")));
    }
}
