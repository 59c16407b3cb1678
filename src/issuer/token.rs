//! `POST /connect/token`: authenticate the client, apply the resource rules, mint an RFC 9068
//! access token.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;

use super::error::no_store;
use super::form::{self, Form};
use super::{client_auth, OAuthError};
use crate::config::{Config, IssuerConfig};
use crate::grants::Grants;
use crate::http::{json, Body};
use crate::jwt;
use crate::metrics::Metrics;
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
    /// With `offline_access` granted: the opaque refresh token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// With `openid` granted: the OpenID Connect ID token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

/// Reads the request and answers it; every answer carries `Cache-Control: no-store`. Tokens
/// issued and requests refused are counted in `metrics`.
pub async fn endpoint(
    snapshot: Arc<Snapshot>,
    grants: &Grants,
    req: Request<Incoming>,
    within: std::time::Duration,
    now: SystemTime,
    metrics: &Metrics,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let result = match form::read(&parts.headers, body, within).await {
        // Codes and refresh tokens wait for the grant store's disk: off the async threads.
        Ok(form) if form.get("grant_type") != Some(GrantType::ClientCredentials.as_str()) => {
            let grants = grants.clone();
            tokio::task::spawn_blocking(move || {
                let issuer = snapshot.config.issuer.as_ref().ok_or_else(no_issuer)?;
                issue(
                    &snapshot.config,
                    issuer,
                    &grants,
                    &parts.headers,
                    &form,
                    now,
                )
            })
            .await
            .unwrap_or_else(|e| Err(OAuthError::ServerError(e.to_string())))
        }
        Ok(form) => snapshot
            .config
            .issuer
            .as_ref()
            .ok_or_else(no_issuer)
            .and_then(|issuer| issue(&snapshot.config, issuer, grants, &parts.headers, &form, now)),
        Err(e) => Err(e),
    };
    match result {
        Ok(issued) => {
            metrics.token_issued(issued.grant.as_str(), &issued.client_id);
            no_store(json(StatusCode::OK, &issued.response))
        }
        Err(e) => {
            metrics.token_refused(e.code());
            tracing::info!(error = e.code(), reason = %e, "token request refused");
            e.response()
        }
    }
}

fn no_issuer() -> OAuthError {
    OAuthError::ServerError("the token service is not configured".into())
}

/// The token endpoint without HTTP: a parsed form and the request headers in, a token out.
pub fn token(
    config: &Config,
    issuer: &IssuerConfig,
    grants: &Grants,
    headers: &HeaderMap,
    form: &Form,
    now: SystemTime,
) -> Result<TokenResponse, OAuthError> {
    issue(config, issuer, grants, headers, form, now).map(|issued| issued.response)
}

/// A token issued, with whom to and how (for the metrics).
struct Issued {
    response: TokenResponse,
    client_id: String,
    grant: GrantType,
}

fn issue(
    config: &Config,
    issuer: &IssuerConfig,
    grants: &Grants,
    headers: &HeaderMap,
    form: &Form,
    now: SystemTime,
) -> Result<Issued, OAuthError> {
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
    let response = match grant {
        GrantType::ClientCredentials => client_credentials(config, issuer, client, form, now)?,
        GrantType::AuthorizationCode => {
            super::redeem::authorization_code(config, issuer, grants, client, form, now)?
        }
        GrantType::RefreshToken => {
            super::redeem::refresh_token(config, issuer, grants, client, form, now)?
        }
    };
    Ok(Issued {
        response,
        client_id: client.client_id.clone(),
        grant,
    })
}

fn client_credentials(
    config: &Config,
    issuer: &IssuerConfig,
    client: &Client,
    form: &Form,
    now: SystemTime,
) -> Result<TokenResponse, OAuthError> {
    let resources = form.all("resource");
    let granted = resources::grant(
        &config.model,
        client,
        &TokenRequest {
            grant: GrantType::ClientCredentials,
            scope: form.get("scope"),
            resources: &resources,
        },
    )?;
    let lifetime = client
        .access_token_lifetime
        .unwrap_or(issuer.access_token_lifetime);
    let minted = mint(issuer, client, None, &granted, lifetime, now)?;
    log_issued(client, GrantType::ClientCredentials, &granted);
    Ok(TokenResponse {
        access_token: minted.token,
        token_type: "Bearer",
        expires_in: lifetime.as_secs(),
        scope: granted.scopes.join(" "),
        refresh_token: None,
        id_token: None,
    })
}

/// The log line of every access token issued.
pub(super) fn log_issued(client: &Client, grant: GrantType, granted: &Granted) {
    tracing::info!(
        client_id = %client.client_id,
        grant_type = grant.as_str(),
        aud = ?granted.aud,
        scope = %granted.scopes.join(" "),
        "access token issued"
    );
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
    jti: &'a str,
    #[serde(flatten)]
    extra: BTreeMap<&'a str, &'a str>,
    #[serde(flatten)]
    user: &'a serde_json::Map<String, serde_json::Value>,
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
/// algorithm every audience accepts. `subject` is the user, or the client when `None`.
pub fn mint(
    issuer: &IssuerConfig,
    client: &Client,
    subject: Option<Subject<'_>>,
    granted: &Granted,
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
    let jti = jti();
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

/// 128 random bits, base64url.
fn jti() -> String {
    let mut bytes = [0u8; 16];
    // The system RNG failing is not recoverable; aws-lc aborts rather than return weak bytes.
    aws_lc_rs::rand::fill(&mut bytes).unwrap_or_else(|_| panic!("the system RNG failed"));
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, MissingKeys};
    use proptest::prelude::*;

    const CONFIG: &str = r#"
[issuer]
listen = "127.0.0.1:0"
issuer = "http://isogate.test"
[[issuer.signing_keys]]
file = "k.pem"
alg = "ES256"
generate_if_missing = true
[[api_scopes]]
name = "read"
[[api_scopes]]
name = "tx"
parameterized = true
parameter_claim = "tx_id"
[[api_resources]]
name = "urn:invoices"
scopes = ["read", "tx"]
[[clients]]
client_id = "client"
secrets = ["sha256:K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols="]
allowed_grant_types = ["client_credentials"]
allowed_scopes = ["read", "tx"]
"#;

    fn fixture() -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        let config = parse(CONFIG, dir.path(), MissingKeys::Generate).unwrap();
        (dir, config)
    }

    fn words() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("grant_type".to_owned()),
            Just("client_credentials".to_owned()),
            Just("scope".to_owned()),
            Just("resource".to_owned()),
            Just("client_id".to_owned()),
            Just("client_secret".to_owned()),
            Just("urn:invoices".to_owned()),
            Just("tx:".to_owned()),
            "[ -~]{0,12}",
        ]
    }

    proptest! {
        /// Arbitrary bodies and Authorization headers get a token or an OAuth error, never a panic.
        #[test]
        fn any_request_is_answered(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            pairs in proptest::collection::vec((words(), words()), 0..6),
            authorization in proptest::option::of("[ -~]{0,40}"),
        ) {
            let (_dir, config) = fixture();
            let issuer = config.issuer.as_ref().unwrap();
            let grants = Grants::open(&issuer.data_dir).unwrap();
            let mut headers = HeaderMap::new();
            if let Some(value) = authorization.and_then(|a| http::HeaderValue::from_str(&a).ok()) {
                headers.insert(http::header::AUTHORIZATION, value);
            }
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
            for raw in [body, form_urlencoded::Serializer::new(String::new()).extend_pairs(&pairs).finish().into_bytes()] {
                if let Ok(form) = Form::parse(&raw) {
                    let _ = token(&config, issuer, &grants, &headers, &form, now);
                }
            }
        }
    }

    #[test]
    fn the_clock_is_passed_in() {
        let (_dir, config) = fixture();
        let issuer = config.issuer.as_ref().unwrap();
        let form = Form::parse(
            b"grant_type=client_credentials&client_id=client&client_secret=secret&scope=tx:7",
        )
        .unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let grants = Grants::open(&config.issuer.as_ref().unwrap().data_dir).unwrap();
        let issued = token(&config, issuer, &grants, &HeaderMap::new(), &form, now).unwrap();
        let payload = issued.access_token.split('.').nth(1).unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(claims["iat"], 1_800_000_000u64);
        assert_eq!(claims["exp"], 1_800_003_600u64);
        assert_eq!(claims["tx_id"], "7");
    }
}
