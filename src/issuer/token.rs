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
}

/// Reads the request and answers it; every answer carries `Cache-Control: no-store`. Tokens
/// issued and requests refused are counted in `metrics`.
pub async fn endpoint(
    snapshot: &Snapshot,
    issuer: &IssuerConfig,
    req: Request<Incoming>,
    now: SystemTime,
    metrics: &Metrics,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let form = form::read(&parts.headers, body).await;
    let result = form.and_then(|form| issue(&snapshot.config, issuer, &parts.headers, &form, now));
    match result {
        Ok(issued) => {
            metrics.token_issued(issued.grant.as_str(), &issued.client.client_id);
            no_store(json(StatusCode::OK, &issued.response))
        }
        Err(e) => {
            metrics.token_refused(e.code());
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
    issue(config, issuer, headers, form, now).map(|issued| issued.response)
}

/// A token issued, with whom to and how (for the metrics).
struct Issued<'c> {
    response: TokenResponse,
    client: &'c Client,
    grant: GrantType,
}

fn issue<'c>(
    config: &'c Config,
    issuer: &IssuerConfig,
    headers: &HeaderMap,
    form: &Form,
    now: SystemTime,
) -> Result<Issued<'c>, OAuthError> {
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
        %grant_type,
        aud = ?granted.aud,
        scope = %granted.scopes.join(" "),
        "access token issued"
    );
    Ok(Issued {
        response: TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: lifetime.as_secs(),
            scope: granted.scopes.join(" "),
        },
        client,
        grant,
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
            let mut headers = HeaderMap::new();
            if let Some(value) = authorization.and_then(|a| http::HeaderValue::from_str(&a).ok()) {
                headers.insert(http::header::AUTHORIZATION, value);
            }
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
            for raw in [body, form_urlencoded::Serializer::new(String::new()).extend_pairs(&pairs).finish().into_bytes()] {
                if let Ok(form) = Form::parse(&raw) {
                    let _ = token(&config, issuer, &headers, &form, now);
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
        let issued = token(&config, issuer, &HeaderMap::new(), &form, now).unwrap();
        let payload = issued.access_token.split('.').nth(1).unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(claims["iat"], 1_800_000_000u64);
        assert_eq!(claims["exp"], 1_800_003_600u64);
        assert_eq!(claims["tx_id"], "7");
    }
}
