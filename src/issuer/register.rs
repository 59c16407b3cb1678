//! `POST /connect/register` (RFC 7591, SPEC §9): clients that register themselves, kept in the
//! grant store, and the one look-up every endpoint uses to find a client (the file's first).
//! The design is in `docs/registration.md`.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use http::{header, HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::assertion::ClientKeys;
use super::document::{is_document_id, Documents};
use super::error::no_store;
use super::OAuthError;
use crate::config::{Config, RegistrationConfig};
use crate::grants::{Grants, RegisteredClient, StoreError};
use crate::http::Body;
use crate::protocol::authorization::{authorization, Credentials};
use crate::resources::{AssertionKeys, Client, GrantType, RefreshTokenUsage};
use crate::secret::SecretHash;

/// The largest registration request read.
const MAX_BODY: usize = 16 * 1024;
/// The most redirect URIs one client may register.
const MAX_REDIRECT_URIS: usize = 10;
/// The longest redirect URI accepted, in bytes.
const MAX_URI_LEN: usize = 2_000;
/// The largest `jwks` registered, as JSON.
const MAX_JWKS: usize = 8 * 1024;
/// The longest `client_name`, in characters.
const MAX_NAME_CHARS: usize = 200;
/// Registrations accepted from one peer address per minute, per instance.
const PER_MINUTE: u32 = 20;
/// Peer addresses remembered by the rate limit before it starts afresh.
const MAX_PEERS: usize = 10_000;

/// Registrations per peer address in the current minute.
#[derive(Default)]
pub struct RateLimit {
    minute: Mutex<(u64, HashMap<IpAddr, u32>)>,
}

impl RateLimit {
    /// Counts one registration from `peer`; `false` when it is over the limit.
    fn admit(&self, peer: IpAddr, now: u64) -> bool {
        let mut guard = self.minute.lock().unwrap_or_else(|e| e.into_inner());
        let (minute, counts) = &mut *guard;
        if *minute != now / 60 || counts.len() >= MAX_PEERS {
            *minute = now / 60;
            counts.clear();
        }
        let count = counts.entry(peer).or_insert(0);
        *count += 1;
        *count <= PER_MINUTE
    }
}

/// What isogate fetches about clients that are not in the file: the key sets of
/// private_key_jwt clients with a `jwks_uri`, and client ID metadata documents (SPEC §9).
#[derive(Default)]
pub struct Clients {
    pub(crate) keys: ClientKeys,
    pub(crate) documents: Documents,
}

/// Why a client could not be looked up.
#[derive(Debug)]
pub(crate) enum FindError {
    /// The store failed (a registered client).
    Store(StoreError),
    /// The client's metadata document could not be fetched or used: why.
    Document(String),
}

impl From<StoreError> for FindError {
    fn from(e: StoreError) -> Self {
        FindError::Store(e)
    }
}

impl From<FindError> for OAuthError {
    fn from(e: FindError) -> Self {
        match e {
            FindError::Store(e) => e.into(),
            FindError::Document(why) => OAuthError::InvalidClient {
                basic: false,
                description: format!("the client's metadata document cannot be used: {why}"),
            },
        }
    }
}

/// The client named `client_id`: the file's, else (with `[issuer.registration]`) one that
/// registered itself, or one whose `client_id` is the URL of its metadata document. The
/// file's always wins, so neither can shadow it.
pub(crate) async fn find<'c>(
    config: &'c Config,
    grants: &Grants,
    clients: &Clients,
    client_id: &str,
) -> Result<Option<Cow<'c, Client>>, FindError> {
    if let Some(client) = config.clients.get(client_id) {
        return Ok(Some(Cow::Borrowed(client)));
    }
    let Some(registration) = config.issuer.as_ref().and_then(|i| i.registration.as_ref()) else {
        return Ok(None);
    };
    if registration.client_id_metadata_documents && is_document_id(client_id) {
        let client = clients.documents.client(client_id, registration).await;
        return client
            .map(|c| Some(Cow::Owned(c)))
            .map_err(FindError::Document);
    }
    if !client_id.starts_with(ID_PREFIX) {
        return Ok(None);
    }
    let record = grants.registered_client(client_id).await?;
    Ok(record.map(|r| Cow::Owned(client_of(&r, registration))))
}

/// What a registered client may do now: the grant types it registered, within what
/// `[issuer.registration]` allows today, and any scope that section allows.
pub(crate) fn client_of(record: &RegisteredClient, registration: &RegistrationConfig) -> Client {
    let secret = record
        .secret
        .as_deref()
        .and_then(|s| SecretHash::parse(s).ok());
    // Checked at registration; a set that no longer parses leaves the client unable to sign in.
    let assertion_keys = match (&record.jwks, &record.jwks_uri) {
        (Some(jwks), _) => serde_json::from_str(jwks)
            .map_err(|e| e.to_string())
            .and_then(|set| super::assertion::key_set(&record.client_id, &set))
            .map_err(|why| tracing::warn!(client_id = %record.client_id, error = %why, "registered jwks unusable"))
            .ok()
            .map(AssertionKeys::Given),
        (None, Some(uri)) => Some(AssertionKeys::Published(uri.clone())),
        (None, None) => None,
    };
    Client {
        require_secret: record.token_endpoint_auth_method != "none",
        secrets: secret.into_iter().collect(),
        assertion_keys,
        ..self_described(
            &record.client_id,
            &record.redirect_uris,
            record
                .grant_types
                .iter()
                .filter_map(|g| GrantType::parse(g)),
            registration,
        )
    }
}

/// A client that describes itself (registered, or by its metadata document), public until
/// told otherwise: the grant types it named that `[issuer.registration]` still allows, any
/// scope that section allows, PKCE and consent always.
pub(super) fn self_described(
    client_id: &str,
    redirect_uris: &[String],
    grant_types: impl Iterator<Item = GrantType>,
    registration: &RegistrationConfig,
) -> Client {
    let grant_types: BTreeSet<GrantType> = grant_types
        .filter(|g| registration.allowed_grant_types.contains(g))
        .collect();
    Client {
        client_id: client_id.to_owned(),
        require_secret: false,
        secrets: Vec::new(),
        allow_offline_access: grant_types.contains(&GrantType::RefreshToken),
        allowed_grant_types: grant_types,
        // Not narrowed to the scope it registered: MCP clients register with the scope of their
        // first request and step up to more later (SPEC §10); each new scope needs the user's
        // consent, and anyone may register with every allowed scope anyway.
        allowed_scopes: registration.allowed_scopes.iter().cloned().collect(),
        access_token_lifetime: None,
        redirect_uris: redirect_uris.to_vec(),
        require_pkce: true,
        require_consent: true,
        refresh_token_usage: RefreshTokenUsage::OneTime,
        refresh_token_lifetime: crate::config::DEFAULT_REFRESH_LIFETIME,
        refresh_token_sliding_lifetime: crate::config::DEFAULT_REFRESH_SLIDING_LIFETIME,
        refresh_token_reuse_grace: Duration::ZERO,
        require_dpop: false,
        assertion_keys: None,
    }
}

/// Every registered `client_id` starts so; no other is looked up in the store.
const ID_PREFIX: &str = "reg_";

/// The metadata a client sends (RFC 7591 §2); unknown members are ignored, as §2 asks.
#[derive(Debug, Deserialize)]
struct Metadata {
    #[serde(default)]
    redirect_uris: Vec<String>,
    token_endpoint_auth_method: Option<String>,
    grant_types: Option<Vec<String>>,
    response_types: Option<Vec<String>>,
    scope: Option<String>,
    client_name: Option<String>,
    jwks: Option<serde_json::Value>,
    jwks_uri: Option<String>,
}

/// Why a registration is refused (RFC 7591 §3.2.2).
#[derive(Debug)]
pub(super) enum Refused {
    Metadata(String),
    RedirectUri(String),
    Token,
    TooMany,
    OAuth(OAuthError),
}

impl Refused {
    pub(super) fn response(self) -> Response<Body> {
        let (status, error, description) = match self {
            Refused::Metadata(d) => (StatusCode::BAD_REQUEST, "invalid_client_metadata", d),
            Refused::RedirectUri(d) => (StatusCode::BAD_REQUEST, "invalid_redirect_uri", d),
            Refused::Token => (
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "registration needs the initial access token as a Bearer token".to_owned(),
            ),
            Refused::TooMany => (
                StatusCode::TOO_MANY_REQUESTS,
                "temporarily_unavailable",
                format!("at most {PER_MINUTE} registrations a minute from one address"),
            ),
            Refused::OAuth(e) => return e.response(),
        };
        let mut response = crate::http::json(
            status,
            &json!({"error": error, "error_description": description}),
        );
        match status {
            StatusCode::UNAUTHORIZED => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
            }
            StatusCode::TOO_MANY_REQUESTS => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, http::HeaderValue::from_static("60"));
            }
            _ => {}
        }
        no_store(response)
    }
}

impl From<OAuthError> for Refused {
    fn from(e: OAuthError) -> Self {
        Refused::OAuth(e)
    }
}

/// The `201` answer: the client as registered, and its secret, shown this once.
#[derive(Serialize)]
struct Registered<'a> {
    client_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret_expires_at: Option<u64>,
    client_id_issued_at: u64,
    redirect_uris: &'a [String],
    grant_types: &'a [String],
    response_types: &'static [&'static str],
    token_endpoint_auth_method: &'a str,
    scope: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jwks: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jwks_uri: Option<&'a str>,
}

/// Answers `POST /connect/register`: `201` with the client, or why not.
#[allow(clippy::too_many_arguments)]
pub(super) async fn register(
    config: &Config,
    registration: &RegistrationConfig,
    grants: &Grants,
    limit: &RateLimit,
    req: Request<Incoming>,
    within: Duration,
    peer: IpAddr,
    now: u64,
) -> Result<Response<Body>, Refused> {
    let (parts, body) = req.into_parts();
    if let Some(expected) = &registration.initial_access_token {
        match authorization(&parts.headers) {
            Ok(Some(Credentials::Bearer(token))) if expected.matches(token) => {}
            _ => return Err(Refused::Token),
        }
    }
    if !limit.admit(peer, now) {
        return Err(Refused::TooMany);
    }
    let bytes = read_json(&parts.headers, body, within).await?;
    let metadata: Metadata = serde_json::from_slice(&bytes)
        .map_err(|e| Refused::Metadata(format!("the body is not client metadata JSON: {e}")))?;
    let mut record = validate(config, registration, metadata, now)?;
    let secret = (record.token_endpoint_auth_method == "client_secret_basic")
        .then(crate::protocol::random_token);
    record.secret = secret
        .as_deref()
        .map(|s| SecretHash::of(s.as_bytes()).to_stored());
    grants
        .register_client(&record)
        .await
        .map_err(OAuthError::from)?;
    tracing::info!(client_id = %record.client_id, %peer, "client registered");
    let answer = Registered {
        client_id: &record.client_id,
        client_secret: secret.as_deref(),
        client_secret_expires_at: secret.as_ref().map(|_| 0),
        client_id_issued_at: record.issued_at,
        redirect_uris: &record.redirect_uris,
        grant_types: &record.grant_types,
        response_types: response_types(&record.grant_types),
        token_endpoint_auth_method: &record.token_endpoint_auth_method,
        scope: &record.scope,
        client_name: record.client_name.as_deref(),
        jwks: record
            .jwks
            .as_deref()
            .and_then(|j| serde_json::from_str(j).ok()),
        jwks_uri: record.jwks_uri.as_deref(),
    };
    Ok(no_store(crate::http::json(StatusCode::CREATED, &answer)))
}

/// Reads a JSON body of at most [`MAX_BODY`] bytes; a larger one is refused as metadata.
async fn read_json(
    headers: &HeaderMap,
    body: Incoming,
    within: Duration,
) -> Result<bytes::Bytes, Refused> {
    let read = super::form::read_body(headers, body, within, "application/json", MAX_BODY);
    read.await.map_err(|e| match e {
        OAuthError::TooLarge => Refused::Metadata(format!(
            "the metadata is larger than {} KiB",
            MAX_BODY / 1024
        )),
        e => Refused::OAuth(e),
    })
}

/// Checks the metadata against RFC 7591 and `[issuer.registration]`; the record to store
/// (without its secret).
fn validate(
    config: &Config,
    registration: &RegistrationConfig,
    metadata: Metadata,
    now: u64,
) -> Result<RegisteredClient, Refused> {
    let bad = |m: String| Err(Refused::Metadata(m));
    let method = metadata
        .token_endpoint_auth_method
        .unwrap_or_else(|| "client_secret_basic".to_owned());
    if !matches!(
        method.as_str(),
        "none" | "client_secret_basic" | "private_key_jwt"
    ) {
        return bad(format!(
            "token_endpoint_auth_method {method:?} is not offered: use none, client_secret_basic \
             or private_key_jwt"
        ));
    }
    let client_id = format!("{ID_PREFIX}{}", crate::protocol::random_b64::<16>());
    let (jwks, jwks_uri) = assertion_keys(&client_id, &method, metadata.jwks, metadata.jwks_uri)?;
    let asked = metadata
        .grant_types
        .unwrap_or_else(|| vec!["authorization_code".to_owned()]);
    let mut parsed = BTreeSet::new();
    for name in &asked {
        let Some(grant) = GrantType::parse(name) else {
            return bad(format!("the grant type {name:?} is not offered"));
        };
        if !registration.allowed_grant_types.contains(&grant) {
            return bad(format!("a registered client may not use {name}"));
        }
        parsed.insert(grant);
    }
    if parsed.is_empty() {
        return bad("grant_types is empty".into());
    }
    if parsed.contains(&GrantType::ClientCredentials) && method == "none" {
        return bad(
            "client_credentials needs a confidential client (client_secret_basic or \
             private_key_jwt)"
                .into(),
        );
    }
    let code = parsed.contains(&GrantType::AuthorizationCode);
    let grant_types: Vec<String> = parsed.iter().map(|g| g.as_str().to_owned()).collect();
    if let Some(types) = &metadata.response_types {
        let expected = response_types(&grant_types);
        if types
            .iter()
            .map(String::as_str)
            .ne(expected.iter().copied())
        {
            return bad(format!(
                "response_types must be {expected:?} for these grant_types"
            ));
        }
    }
    if code && metadata.redirect_uris.is_empty() {
        return Err(Refused::RedirectUri(
            "authorization_code needs at least one redirect URI".into(),
        ));
    }
    if metadata.redirect_uris.len() > MAX_REDIRECT_URIS {
        return Err(Refused::RedirectUri(format!(
            "at most {MAX_REDIRECT_URIS} redirect URIs"
        )));
    }
    for uri in &metadata.redirect_uris {
        redirect_uri_problem(uri).map_or(Ok(()), |why| {
            Err(Refused::RedirectUri(format!("{}: {why}", shown(uri))))
        })?;
    }
    let scope = match &metadata.scope {
        Some(asked) => {
            let mut scopes = Vec::new();
            for s in asked.split(' ').filter(|s| !s.is_empty()) {
                if !registration.allowed_scopes.contains(s) {
                    return bad(format!("the scope {:?} may not be registered", shown(s)));
                }
                scopes.push(s);
            }
            scopes.join(" ")
        }
        None => registration
            .allowed_scopes
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" "),
    };
    if let Some(name) = &metadata.client_name {
        if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
            return bad(format!(
                "client_name must be at most {MAX_NAME_CHARS} characters, without control characters"
            ));
        }
    }
    if config.clients.contains_key(&client_id) {
        return Err(
            OAuthError::ServerError("a random client_id is taken by the file".into()).into(),
        );
    }
    Ok(RegisteredClient {
        client_id,
        client_name: metadata.client_name,
        redirect_uris: metadata.redirect_uris,
        grant_types,
        token_endpoint_auth_method: method,
        jwks,
        jwks_uri,
        scope,
        secret: None,
        issued_at: now,
    })
}

/// The keys of a `private_key_jwt` registration: `jwks` (checked now, kept as JSON) or an
/// https `jwks_uri` (fetched when the client authenticates), exactly one; neither for any other
/// method.
fn assertion_keys(
    client_id: &str,
    method: &str,
    jwks: Option<serde_json::Value>,
    jwks_uri: Option<String>,
) -> Result<(Option<String>, Option<String>), Refused> {
    let bad = |m: &str| Err(Refused::Metadata(m.to_owned()));
    match (method == "private_key_jwt", jwks, jwks_uri) {
        (false, None, None) => Ok((None, None)),
        (false, _, _) => {
            bad("jwks and jwks_uri go with token_endpoint_auth_method private_key_jwt")
        }
        (true, Some(jwks), None) => {
            let text = jwks.to_string();
            if text.len() > MAX_JWKS {
                return bad("jwks is larger than 8 KiB");
            }
            let set = serde_json::from_value(jwks)
                .map_err(|e| Refused::Metadata(format!("jwks is not a JWKS: {e}")))?;
            super::assertion::key_set(client_id, &set)
                .map_err(|why| Refused::Metadata(format!("jwks {why}")))?;
            Ok((Some(text), None))
        }
        (true, None, Some(uri)) => {
            let https = url::Url::parse(&uri).is_ok_and(|u| {
                u.scheme() == "https" && u.host().is_some() && uri.len() <= MAX_URI_LEN
            });
            if !https {
                return bad("jwks_uri must be an https URL");
            }
            Ok((None, Some(uri)))
        }
        (true, _, _) => bad("private_key_jwt needs one of jwks and jwks_uri"),
    }
}

/// The `response_types` that go with `grant_types` (RFC 7591 §2.1): `code` with
/// `authorization_code`, none otherwise.
fn response_types(grant_types: &[String]) -> &'static [&'static str] {
    match grant_types
        .iter()
        .any(|g| g == GrantType::AuthorizationCode.as_str())
    {
        true => &["code"],
        false => &[],
    }
}

/// Why `uri` may not be registered as a redirect URI (RFC 8252, SPEC §9), if it may not.
pub(super) fn redirect_uri_problem(uri: &str) -> Option<&'static str> {
    if uri.len() > MAX_URI_LEN {
        return Some("longer than 2,000 bytes");
    }
    if uri.contains('*') {
        return Some("wildcards are not allowed");
    }
    let Ok(url) = url::Url::parse(uri) else {
        return Some("not an absolute URI");
    };
    if url.fragment().is_some() || uri.contains('#') {
        return Some("a redirect URI never has a fragment");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Some("a redirect URI never has user information");
    }
    match url.scheme() {
        "https" if url.host().is_some() => None,
        "https" => Some("an https redirect needs a host"),
        "http" if crate::protocol::is_loopback_http(&url, true) => None,
        "http" => Some("http is allowed only to a loopback address (127.0.0.1, [::1], localhost)"),
        scheme if scheme.contains('.') => None,
        _ => Some(
            "use https, http to a loopback address, or a private-use scheme with a dot \
             (com.example.app:/callback)",
        ),
    }
}

/// At most 100 characters of what a client sent, for an error message.
fn shown(text: &str) -> String {
    text.chars().take(100).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_are_https_loopback_http_or_a_private_scheme() {
        for good in [
            "https://app.example.com/cb",
            "http://127.0.0.1/cb",
            "http://127.0.0.1:5173/cb",
            "http://[::1]:8080/cb",
            "http://localhost:3000/callback",
            "com.example.app:/oauth2redirect",
        ] {
            assert_eq!(redirect_uri_problem(good), None, "{good}");
        }
        for bad in [
            "http://app.example.com/cb",
            "https://app.example.com/cb#x",
            "https://app.example.com/cb#",
            "https://*.example.com/cb",
            "https://user:pw@app.example.com/cb",
            "javascript:alert(1)",
            "data:text/html,hi",
            "file:///etc/passwd",
            "/relative",
            "myapp:/cb",
        ] {
            assert!(redirect_uri_problem(bad).is_some(), "{bad}");
        }
        assert!(
            redirect_uri_problem(&format!("https://a.example/{}", "x".repeat(2_000))).is_some()
        );
    }

    #[test]
    fn the_rate_limit_counts_per_address_and_minute() {
        let limit = RateLimit::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..PER_MINUTE {
            assert!(limit.admit(a, 120));
        }
        assert!(!limit.admit(a, 179));
        assert!(limit.admit(b, 179));
        assert!(limit.admit(a, 180));
    }
}
