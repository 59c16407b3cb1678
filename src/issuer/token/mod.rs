//! `POST /connect/token`: authenticate the client, apply the resource rules, mint an RFC 9068
//! access token. Each grant has its file; [`mint`] signs for all three.

mod authorization_code;
mod client_credentials;
mod grant;
mod mint;
mod refresh_token;

pub use mint::{mint, Minted, Subject, ACCESS_TOKEN_TYP};

use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;

use super::error::no_store;
use super::form::{self, Form};
use super::Clients;
use super::{client_auth, OAuthError};
use crate::config::{Config, IssuerConfig};
use crate::dpop::{self, Replay};
use crate::grants::Grants;
use crate::http::{json, Body};
use crate::metrics::Metrics;
use crate::resources::{Client, GrantType, Granted};
use crate::state::Snapshot;

/// A successful token response (RFC 6749 §5.1).
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    /// The JWT.
    pub access_token: String,
    /// `DPoP` when the token is bound to the key of the request's proof, else `Bearer`.
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
#[allow(clippy::too_many_arguments)]
pub async fn endpoint(
    snapshot: Arc<Snapshot>,
    grants: &Grants,
    proofs: &Replay,
    clients: &Clients,
    req: Request<Incoming>,
    within: std::time::Duration,
    now: SystemTime,
    metrics: &Metrics,
    peer: std::net::SocketAddr,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    // The client the request names, for the log line of a refusal: only a configured one, as
    // the text is the caller's.
    let mut client_id = None;
    let result = match form::read(&parts.headers, body, within).await {
        Ok(form) => {
            client_id = super::client_auth::presented(&parts.headers, &form)
                .ok()
                .map(|p| p.client_id)
                .filter(|id| snapshot.config.clients.contains_key(id));
            match snapshot.config.issuer.as_ref() {
                Some(issuer) => {
                    let request = Received {
                        headers: &parts.headers,
                        form: &form,
                        proofs,
                        clients,
                        now,
                    };
                    issue(&snapshot.config, issuer, grants, request).await
                }
                None => Err(no_issuer()),
            }
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(issued) => {
            metrics.token_issued(issued.grant.as_str(), &issued.client_id);
            no_store(json(StatusCode::OK, &issued.response))
        }
        Err(e) => {
            metrics.token_refused(e.code());
            tracing::info!(
                error = e.code(),
                reason = %e,
                client_id = client_id.as_deref().unwrap_or("-"),
                %peer,
                "token request refused"
            );
            e.response()
        }
    }
}

fn no_issuer() -> OAuthError {
    OAuthError::ServerError("the token service is not configured".into())
}

/// The token endpoint without HTTP: a parsed form and the request headers in, a token out;
/// DPoP proofs' `jti`s are recorded in `proofs`.
#[allow(clippy::too_many_arguments)]
pub async fn token(
    config: &Config,
    issuer: &IssuerConfig,
    grants: &Grants,
    headers: &HeaderMap,
    form: &Form,
    proofs: &Replay,
    clients: &Clients,
    now: SystemTime,
) -> Result<TokenResponse, OAuthError> {
    let request = Received {
        headers,
        form,
        proofs,
        clients,
        now,
    };
    issue(config, issuer, grants, request)
        .await
        .map(|issued| issued.response)
}

/// A token request as read.
struct Received<'a> {
    headers: &'a HeaderMap,
    form: &'a Form,
    proofs: &'a Replay,
    clients: &'a Clients,
    now: SystemTime,
}

/// A token issued, with whom to and how (for the metrics).
struct Issued {
    response: TokenResponse,
    client_id: String,
    grant: GrantType,
}

async fn issue(
    config: &Config,
    issuer: &IssuerConfig,
    grants: &Grants,
    request: Received<'_>,
) -> Result<Issued, OAuthError> {
    let Received {
        headers,
        form,
        proofs,
        clients,
        now,
    } = request;
    let grant_type = form
        .get("grant_type")
        .ok_or_else(|| OAuthError::InvalidRequest("grant_type is missing".into()))?;
    let at = crate::jwt::numeric_date(now);
    let client = client_auth::authenticate(headers, form, config, grants, clients, at).await?;
    let client = &*client;
    let grant = GrantType::parse(grant_type).ok_or_else(|| {
        OAuthError::UnsupportedGrantType(format!("the grant type {grant_type:?} is not supported"))
    })?;
    if !client.allowed_grant_types.contains(&grant) {
        return Err(OAuthError::UnauthorizedClient(format!(
            "the client may not use {grant_type}"
        )));
    }
    // The proof is checked before any grant is looked at, let alone spent.
    let jkt = proof_key(issuer, client, headers, proofs, now)?;
    let jkt = jkt.as_deref();
    let response = match grant {
        GrantType::ClientCredentials => {
            client_credentials::client_credentials(config, issuer, client, form, jkt, now)?
        }
        GrantType::AuthorizationCode => {
            authorization_code::authorization_code(config, issuer, grants, client, form, jkt, now)
                .await?
        }
        GrantType::RefreshToken => {
            refresh_token::refresh_token(config, issuer, grants, client, form, jkt, now).await?
        }
    };
    let client_id = match config.clients.contains_key(&client.client_id) {
        true => client.client_id.clone(),
        false => crate::metrics::REGISTERED.to_owned(),
    };
    Ok(Issued {
        response,
        client_id,
        grant,
    })
}

/// SPEC §8: the thumbprint of the key of the request's DPoP proof, checked for a `POST` to the
/// advertised token endpoint; `None` without a proof, unless the client must send one.
fn proof_key(
    issuer: &IssuerConfig,
    client: &Client,
    headers: &HeaderMap,
    proofs: &Replay,
    now: SystemTime,
) -> Result<Option<dpop::Thumbprint>, OAuthError> {
    let Some(proof) = dpop::proof(headers)? else {
        if client.require_dpop {
            return Err(OAuthError::InvalidDpopProof(
                "this client must send a DPoP proof".into(),
            ));
        }
        return Ok(None);
    };
    let url = issuer.url("/connect/token");
    let expected = dpop::Expected {
        method: "POST",
        url: &url,
        access_token: None,
        key: None,
        now: crate::jwt::numeric_date(now),
        max_age: issuer.dpop_max_age,
        skew: dpop::ISSUER_CLOCK_SKEW,
    };
    Ok(Some(dpop::check(proof, &expected, proofs)?))
}

/// The `token_type` of a token bound to `jkt` or not.
pub(super) fn token_type(jkt: Option<&str>) -> &'static str {
    if jkt.is_some() {
        "DPoP"
    } else {
        "Bearer"
    }
}

/// The log line of every access token issued.
pub(super) fn log_issued(client: &Client, grant: GrantType, granted: &Granted) {
    tracing::info!(
        client_id = %client.client_id,
        grant_type = grant.as_str(),
        aud = %granted.aud.join(" "),
        scope = %granted.scopes.join(" "),
        "access token issued"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, MissingKeys};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use proptest::prelude::*;
    use std::time::Duration;

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
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            for raw in [body, form_urlencoded::Serializer::new(String::new()).extend_pairs(&pairs).finish().into_bytes()] {
                if let Ok(form) = Form::parse(&raw) {
                    let _ = runtime.block_on(token(&config, issuer, &grants, &headers, &form, &Replay::default(), &Clients::default(), now));
                }
            }
        }
    }

    #[tokio::test]
    async fn the_clock_is_passed_in() {
        let (_dir, config) = fixture();
        let issuer = config.issuer.as_ref().unwrap();
        let form = Form::parse(
            b"grant_type=client_credentials&client_id=client&client_secret=secret&scope=tx:7",
        )
        .unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let grants = Grants::open(&config.issuer.as_ref().unwrap().data_dir).unwrap();
        let issued = token(
            &config,
            issuer,
            &grants,
            &HeaderMap::new(),
            &form,
            &Replay::default(),
            &Clients::default(),
            now,
        )
        .await
        .unwrap();
        let payload = issued.access_token.split('.').nth(1).unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(claims["iat"], 1_800_000_000u64);
        assert_eq!(claims["exp"], 1_800_003_600u64);
        assert_eq!(claims["tx_id"], "7");
    }
}
