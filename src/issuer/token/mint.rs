//! Signing an RFC 9068 access token, and the user claims it may carry.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::{Config, IssuerConfig, User};
use crate::issuer::OAuthError;
use crate::jwt;
use crate::resources::{Client, Granted};

/// The JOSE `typ` of access tokens (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

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
    jti: &'a str,
    /// RFC 9449 §6: the DPoP key the token is bound to.
    #[serde(skip_serializing_if = "Option::is_none")]
    cnf: Option<Confirmation<'a>>,
    #[serde(flatten)]
    extra: BTreeMap<&'a str, &'a str>,
    #[serde(flatten)]
    user: &'a serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize)]
struct Confirmation<'a> {
    jkt: &'a str,
}

/// A signed access token.
#[derive(Debug)]
pub struct Minted {
    /// The JWT.
    pub token: String,
    /// Its `jti`.
    pub jti: String,
    /// Its `exp`.
    pub exp: u64,
}

/// The user an access token is issued for: `sub` and the claims its scopes and audiences
/// release.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// `sub`.
    pub id: &'a str,
    /// User claims, already cut down to what the token may carry.
    pub claims: &'a serde_json::Map<String, serde_json::Value>,
}

/// Signs an RFC 9068 access token for `granted`, with the first non-retired key whose
/// algorithm every audience accepts. `subject` is the user, or the client when `None`;
/// `jkt`, the thumbprint of the DPoP key it is bound to (`cnf.jkt`).
pub fn mint(
    issuer: &IssuerConfig,
    client: &Client,
    subject: Option<Subject<'_>>,
    granted: &Granted,
    jkt: Option<&str>,
    lifetime: Duration,
    now: SystemTime,
) -> Result<Minted, OAuthError> {
    static NO_CLAIMS: std::sync::OnceLock<serde_json::Map<String, serde_json::Value>> =
        std::sync::OnceLock::new();
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
    let iat = jwt::numeric_date(now);
    let aud = match granted.aud.as_slice() {
        [one] => Audience::One(one),
        many => Audience::Many(many),
    };
    let jti = crate::protocol::random_b64::<16>();
    let exp = iat + lifetime.as_secs();
    let claims = Claims {
        iss: &issuer.issuer,
        sub: subject.map_or(client.client_id.as_str(), |s| s.id),
        aud,
        client_id: &client.client_id,
        scope: granted.scopes.join(" "),
        iat,
        nbf: iat,
        exp,
        jti: &jti,
        cnf: jkt.map(|jkt| Confirmation { jkt }),
        extra: granted
            .parameter_claims
            .iter()
            .map(|(claim, value)| (claim.as_str(), value.as_str()))
            .collect(),
        user: subject.map_or_else(|| NO_CLAIMS.get_or_init(Default::default), |s| s.claims),
    };
    let token = jwt::encode(key, ACCESS_TOKEN_TYP, &claims)
        .map_err(|e| OAuthError::ServerError(format!("the token could not be built: {e}")))?;
    Ok(Minted { token, jti, exp })
}

/// The user claims an access token carries: those of its API scopes and its audiences.
pub(super) fn access_token_claims(
    config: &Config,
    user: &User,
    granted: &Granted,
) -> serde_json::Map<String, serde_json::Value> {
    let model = &config.model;
    let scope_claims = granted
        .scopes
        .iter()
        .filter_map(|s| model.api_scope_of(s))
        .flat_map(|s| s.user_claims.iter());
    let resource_claims = granted
        .aud
        .iter()
        .filter_map(|a| model.api_resource(a))
        .flat_map(|r| r.user_claims.iter());
    scope_claims
        .chain(resource_claims)
        .filter(|name| !jwt::RESERVED_CLAIMS.contains(&name.as_str()))
        .filter_map(|name| Some((name.clone(), user.claims.get(name)?.clone())))
        .collect()
}
