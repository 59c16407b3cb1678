//! `POST /connect/token`: authenticate the client, apply the resource rules, mint an RFC 9068
//! access token.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;

use super::error::no_store;
use super::form::{self, Form};
use super::{client_auth, OAuthError};
use crate::config::{Config, IssuerConfig};
use crate::http::{json, Body};
use crate::jwt;
use crate::resources::{self, Client, GrantType, Granted, TokenRequest};
use crate::state::Snapshot;

/// The JOSE `typ` of access tokens (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// A successful token response (RFC 6749 §5.1).
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    /// The JWT.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until `exp`.
    pub expires_in: u64,
    /// The access token's scopes, space-delimited.
    pub scope: String,
}

/// Reads the request and answers it; every answer carries `Cache-Control: no-store`.
pub async fn endpoint(
    snapshot: &Snapshot,
    issuer: &IssuerConfig,
    req: Request<Incoming>,
    now: SystemTime,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let result = match form::read(&parts.headers, body).await {
        Ok(form) => token(&snapshot.config, issuer, &parts.headers, &form, now),
        Err(e) => Err(e),
    };
    match result {
        Ok(issued) => no_store(json(StatusCode::OK, &issued)),
        Err(e) => {
            tracing::info!(error = e.code(), reason = %e, "token request refused");
            e.response()
        }
    }
}

/// The token endpoint without HTTP: a parsed form and the request headers in, a token out.
pub fn token(
    config: &Config,
    issuer: &IssuerConfig,
    headers: &HeaderMap,
    form: &Form,
    now: SystemTime,
) -> Result<TokenResponse, OAuthError> {
    let grant_type = form
        .get("grant_type")
        .ok_or_else(|| OAuthError::InvalidRequest("grant_type is missing".into()))?;
    let client = client_auth::authenticate(headers, form, &config.clients)?;
    let grant = GrantType::parse(grant_type).ok_or_else(|| {
        OAuthError::UnsupportedGrantType(format!("the grant type {grant_type:?} is not supported"))
    })?;
    if !client.allowed_grant_types.contains(&grant) {
        return Err(OAuthError::UnauthorizedClient(format!(
            "the client may not use {grant_type}"
        )));
    }
    if grant != GrantType::ClientCredentials {
        return Err(OAuthError::UnsupportedGrantType(format!(
            "{grant_type} is not available in this version of isogate yet"
        )));
    }
    let resources = form.all("resource");
    let granted = resources::grant(
        &config.model,
        client,
        &TokenRequest {
            grant,
            scope: form.get("scope"),
            resources: &resources,
        },
    )?;
    let lifetime = client
        .access_token_lifetime
        .unwrap_or(issuer.access_token_lifetime);
    let access_token = mint(issuer, client, None, &granted, lifetime, now)?;
    tracing::info!(
        client_id = %client.client_id,
        grant_type,
        aud = ?granted.aud,
        scope = %granted.scopes.join(" "),
        "access token issued"
    );
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: lifetime.as_secs(),
        scope: granted.scopes.join(" "),
    })
}

#[derive(Serialize)]
#[serde(untagged)]
enum Audience<'a> {
    One(&'a str),
    Many(&'a [String]),
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: Audience<'a>,
    client_id: &'a str,
    scope: String,
    iat: u64,
    nbf: u64,
    exp: u64,
    jti: String,
    #[serde(flatten)]
    extra: BTreeMap<&'a str, &'a str>,
}

/// Signs an RFC 9068 access token for `granted`, with the first non-retired key whose
/// algorithm every audience accepts. `subject` is the user, or the client when `None`.
pub fn mint(
    issuer: &IssuerConfig,
    client: &Client,
    subject: Option<&str>,
    granted: &Granted,
    lifetime: Duration,
    now: SystemTime,
) -> Result<String, OAuthError> {
    let key = issuer
        .keys
        .signer(|alg| {
            granted
                .signing_algs
                .as_ref()
                .is_none_or(|algs| algs.contains(&alg))
        })
        .ok_or_else(|| {
            OAuthError::InvalidTarget(
                "no signing key has an algorithm that every audience accepts".into(),
            )
        })?;
    let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let aud = match granted.aud.as_slice() {
        [one] => Audience::One(one),
        many => Audience::Many(many),
    };
    let claims = Claims {
        iss: &issuer.issuer,
        sub: subject.unwrap_or(&client.client_id),
        aud,
        client_id: &client.client_id,
        scope: granted.scopes.join(" "),
        iat,
        nbf: iat,
        exp: iat + lifetime.as_secs(),
        jti: jti(),
        extra: granted
            .parameter_claims
            .iter()
            .map(|(claim, value)| (claim.as_str(), value.as_str()))
            .collect(),
    };
    jwt::encode(key, ACCESS_TOKEN_TYP, &claims)
        .map_err(|e| OAuthError::InvalidRequest(format!("the token could not be built: {e}")))
}

/// 128 random bits, base64url.
fn jti() -> String {
    let mut bytes = [0u8; 16];
    // The system RNG failing is not recoverable; aws-lc aborts rather than return weak bytes.
    aws_lc_rs::rand::fill(&mut bytes).unwrap_or_else(|_| panic!("the system RNG failed"));
    URL_SAFE_NO_PAD.encode(bytes)
}
