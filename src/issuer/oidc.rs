//! OpenID Connect: the ID token and `/connect/userinfo`, and the check of isogate's own access
//! tokens that userinfo and introspection share.

use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;
use serde_json::{Map, Value};

use super::OAuthError;
use crate::config::{IssuerConfig, User};
use crate::dpop::{self, Presentation, Replay};
use crate::grants::Grants;
use crate::http::{json, Body};
use crate::jwt::verify::{check_time, verify, Claims, TrustedKeys};
use crate::jwt::{self, Alg};
use crate::protocol::authorization::{authorization, bearer_token, Credentials, Malformed};
use crate::protocol::Challenge;
use crate::resources::{Client, Model};
use crate::state::Snapshot;

/// The scope that makes a request an OpenID Connect one.
pub(crate) const OPENID: &str = "openid";
/// How long an ID token is valid.
const ID_TOKEN_LIFETIME: Duration = Duration::from_secs(300);

/// What the ID token is bound to.
pub(crate) struct IdTokenFor<'a> {
    /// The access token issued with it (`at_hash`).
    pub access_token: &'a str,
    /// The authorize request's `nonce`.
    pub nonce: Option<&'a str>,
    /// When the user signed in.
    pub auth_time: u64,
}

#[derive(Serialize)]
struct IdClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
    auth_time: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
    at_hash: String,
    #[serde(flatten)]
    claims: Map<String, Value>,
}

/// Signs an ID token for `user` with the claims of the identity scopes in `scopes`: with an
/// RS256 key when there is one (OpenID Connect's default), else with the first signing key.
pub(crate) fn id_token(
    issuer: &IssuerConfig,
    model: &Model,
    client: &Client,
    user: &User,
    scopes: &[String],
    bound: IdTokenFor<'_>,
    now: SystemTime,
) -> Result<String, OAuthError> {
    let key = issuer
        .keys
        .signer(|alg| alg == Alg::RS256)
        .or_else(|| issuer.keys.signer(|_| true))
        .ok_or_else(|| OAuthError::ServerError("no key can sign ID tokens".into()))?;
    let iat = jwt::numeric_date(now);
    let claims = IdClaims {
        iss: &issuer.issuer,
        sub: &user.subject,
        aud: &client.client_id,
        iat,
        exp: iat + ID_TOKEN_LIFETIME.as_secs(),
        auth_time: bound.auth_time,
        nonce: bound.nonce,
        at_hash: at_hash(key.alg, bound.access_token),
        claims: identity_claims(model, user, scopes),
    };
    jwt::encode(key, "JWT", &claims)
        .map_err(|e| OAuthError::ServerError(format!("the ID token could not be built: {e}")))
}

/// OpenID Connect Core §3.1.3.6: the left half of the hash that goes with the ID token's alg.
fn at_hash(alg: Alg, access_token: &str) -> String {
    use aws_lc_rs::digest::{digest, SHA256, SHA384, SHA512};
    let algorithm = match alg {
        Alg::ES384 => &SHA384,
        Alg::EdDSA => &SHA512,
        Alg::ES256 | Alg::RS256 | Alg::PS256 => &SHA256,
    };
    let hash = digest(algorithm, access_token.as_bytes());
    let bytes = hash.as_ref();
    URL_SAFE_NO_PAD.encode(&bytes[..bytes.len() / 2])
}

/// The claims of `user` that the identity resources among `scopes` release (`sub` is set
/// apart).
pub(crate) fn identity_claims(model: &Model, user: &User, scopes: &[String]) -> Map<String, Value> {
    scopes
        .iter()
        .filter_map(|s| model.identity_resources.get(s))
        .flat_map(|r| r.user_claims.iter())
        .filter(|name| *name != "sub")
        .filter_map(|name| Some((name.clone(), user.claims.get(name)?.clone())))
        .collect()
}

/// One of isogate's own access tokens, verified: signature, `iss`, `typ`, time, and not
/// revoked with its grant.
pub(crate) struct LocalToken {
    /// What the gateway reads.
    pub claims: Claims,
    /// The whole payload, for the other claims.
    pub payload: Map<String, Value>,
}

/// Why [`verify_local`] could not decide: the store did not answer.
pub(crate) const UNCHECKED: &str = "the token could not be checked (the store is unavailable)";

/// Verifies `token` as an access token of this issuer.
pub(crate) async fn verify_local(
    token: &str,
    keys: &TrustedKeys,
    grants: &Grants,
    now: u64,
) -> Result<LocalToken, &'static str> {
    let claims = verify(token, keys).map_err(|_| "the token is not valid")?;
    check_time(&claims, now, Duration::ZERO).map_err(|_| "the token has expired")?;
    // The signature is good, so the payload is well-formed JSON.
    let payload: Map<String, Value> = token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    if let Some(jti) = payload.get("jti").and_then(Value::as_str) {
        match grants.access_token_revoked(jti).await {
            Ok(false) => {}
            Ok(true) => return Err("the token has been revoked"),
            Err(_) => return Err(UNCHECKED),
        }
    }
    Ok(LocalToken { claims, payload })
}

/// `GET|POST /connect/userinfo`: the claims of the user the bearer token was issued for, as
/// its identity scopes release them.
pub(crate) async fn userinfo(
    snapshot: &Snapshot,
    issuer: &IssuerConfig,
    grants: &Grants,
    proofs: &Replay,
    req: Request<Incoming>,
    now: SystemTime,
) -> Response<Body> {
    let Some(keys) = snapshot.issuer_docs.as_ref().map(|d| &d.local_keys) else {
        return challenge(StatusCode::UNAUTHORIZED, "invalid_token", "no keys");
    };
    let (dpop_scheme, token) = match bearer_of(req.headers()) {
        Ok((dpop_scheme, token)) => (dpop_scheme, token.to_owned()),
        Err(Some(malformed)) => {
            return challenge(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                malformed.message(),
            )
        }
        Err(None) => {
            let mut response =
                crate::http::text(StatusCode::UNAUTHORIZED, "a bearer token is required\n");
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, Challenge::default().header());
            return response;
        }
    };
    let now = jwt::numeric_date(now);
    let local = match verify_local(&token, keys, grants, now).await {
        Ok(local) => local,
        Err(reason) => return challenge(StatusCode::UNAUTHORIZED, "invalid_token", reason),
    };
    let presented = Presented {
        dpop_scheme,
        token: &token,
        method: req.method(),
        headers: req.headers(),
    };
    if let Err((error, description)) = possession(&local.claims, presented, issuer, proofs, now) {
        let mut response = challenge(StatusCode::UNAUTHORIZED, error, &description);
        let dpop = Challenge {
            dpop: true,
            algs: Some(dpop::ALGS),
            error: Some(error),
            description: Some(&description),
            ..Challenge::default()
        };
        response
            .headers_mut()
            .append(header::WWW_AUTHENTICATE, dpop.header());
        return response;
    }
    if local.claims.iss != issuer.issuer || !local.claims.scope.iter().any(|s| s == OPENID) {
        return challenge(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            "the token does not grant the openid scope",
        );
    }
    let sub = local.claims.sub.unwrap_or_default();
    let Some(user) = snapshot.config.users.by_subject(&sub) else {
        return challenge(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "the user no longer exists",
        );
    };
    let mut claims = identity_claims(&snapshot.config.model, user, &local.claims.scope);
    claims.insert("sub".into(), Value::String(user.subject.clone()));
    let mut response = json(StatusCode::OK, &claims);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// How the access token came to userinfo.
struct Presented<'r> {
    dpop_scheme: bool,
    token: &'r str,
    method: &'r http::Method,
    headers: &'r http::HeaderMap,
}

/// SPEC §8 at userinfo: a DPoP-bound token only with the `DPoP` scheme and a proof by its key
/// for this request; an unbound one only as Bearer. A refusal is its error and description.
fn possession(
    claims: &Claims,
    presented: Presented<'_>,
    issuer: &IssuerConfig,
    proofs: &Replay,
    now: u64,
) -> Result<(), (&'static str, String)> {
    let jkt = claims.jkt.as_deref();
    let refused = |error: &'static str, description: &str| (error, description.to_owned());
    let proof = match dpop::presented(jkt, presented.dpop_scheme, presented.headers) {
        Ok(Some(proof)) => proof,
        Ok(None) => return Ok(()),
        Err(Presentation::BoundAsBearer) => {
            return Err(refused(
                "invalid_token",
                "the token is DPoP-bound; send it with the DPoP scheme and a proof",
            ))
        }
        Err(Presentation::NotBound) => {
            return Err(refused(
                "invalid_token",
                "the token is not DPoP-bound; send it with the Bearer scheme",
            ))
        }
        Err(Presentation::Proof(e)) => return Err(refused("invalid_dpop_proof", &e.to_string())),
    };
    let url = issuer.url("/connect/userinfo");
    let expected = dpop::Expected {
        method: presented.method.as_str(),
        url: &url,
        access_token: Some(presented.token),
        key: jkt,
        now,
        max_age: issuer.dpop_max_age,
        skew: dpop::ISSUER_CLOCK_SKEW,
    };
    dpop::check(proof, &expected, proofs)
        .map(drop)
        .map_err(|e| refused("invalid_dpop_proof", &e.to_string()))
}

/// The request's access token, and whether it came with the `DPoP` scheme; `Err(None)`
/// without one, `Err(Some(_))` when the header is malformed.
fn bearer_of(headers: &http::HeaderMap) -> Result<(bool, &str), Option<Malformed>> {
    match authorization(headers) {
        Ok(Some(Credentials::Bearer(credential))) => {
            bearer_token(credential).map(|t| (false, t)).map_err(Some)
        }
        Ok(Some(Credentials::Dpop(credential))) => {
            bearer_token(credential).map(|t| (true, t)).map_err(Some)
        }
        Err(m) => Err(Some(m)),
        Ok(Some(_) | None) => Err(None),
    }
}

/// An RFC 6750 error answer.
fn challenge(status: StatusCode, error: &str, description: &str) -> Response<Body> {
    let mut response = json(
        status,
        &serde_json::json!({"error": error, "error_description": description}),
    );
    let challenge = Challenge {
        error: Some(error),
        description: Some(description),
        ..Challenge::default()
    };
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, challenge.header());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_hash_is_the_left_half_of_the_algs_hash() {
        // OpenID Connect Core, example of §A.4 (RS256).
        assert_eq!(
            at_hash(Alg::RS256, "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
        assert_eq!(at_hash(Alg::ES384, "x").len(), 32);
        assert_eq!(at_hash(Alg::EdDSA, "x").len(), 43);
    }
}
