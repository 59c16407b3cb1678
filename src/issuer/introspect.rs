//! `POST /connect/introspect` (RFC 7662) and `POST /connect/revocation` (RFC 7009).
//!
//! Isolation holds at introspection too: an API resource sees an access token as active only
//! when it is in the token's `aud`, and sees only its own scopes. A client may introspect
//! its own refresh tokens.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Map, Value};

use super::client_auth::{self, Presented};
use super::error::no_store;
use super::form::{self, Form};
use super::oidc::{verify_local, UNCHECKED};
use super::Clients;
use super::OAuthError;
use crate::grants::Grants;
use crate::http::{full, json, Body};
use crate::resources::{ApiResource, Client};
use crate::secret::matches_any;
use crate::state::Snapshot;

/// Who is asking.
enum Caller<'a> {
    Api(&'a ApiResource),
    Client(Box<std::borrow::Cow<'a, Client>>),
}

/// `POST /connect/introspect`.
pub(super) async fn introspect(
    snapshot: Arc<Snapshot>,
    grants: &Grants,
    clients: &Clients,
    req: Request<Incoming>,
    within: std::time::Duration,
    now: std::time::SystemTime,
) -> Response<Body> {
    let now = crate::jwt::numeric_date(now);
    let (parts, body) = req.into_parts();
    let form = match form::read(&parts.headers, body, within).await {
        Ok(form) => form,
        Err(e) => return e.response(),
    };
    let answer = async {
        let caller = authenticate(&snapshot, grants, clients, &parts.headers, &form, now).await?;
        let token = form
            .get("token")
            .ok_or_else(|| OAuthError::InvalidRequest("token is missing".into()))?;
        describe(&snapshot, grants, &caller, token, now).await
    };
    match answer.await {
        Ok(body) => no_store(json(StatusCode::OK, &body)),
        Err(e) => {
            tracing::info!(error = e.code(), reason = %e, "introspection refused");
            e.response()
        }
    }
}

/// An API resource by its name and one of its `secrets`, or a client as at the token endpoint.
async fn authenticate<'s>(
    snapshot: &'s Snapshot,
    grants: &Grants,
    clients: &Clients,
    headers: &http::HeaderMap,
    form: &Form,
    now: u64,
) -> Result<Caller<'s>, OAuthError> {
    let config = &snapshot.config;
    let Presented {
        client_id,
        secret,
        basic,
        ..
    } = client_auth::presented(headers, form)?;
    let api = config
        .model
        .api_resource(&client_id)
        .filter(|r| !r.secrets.is_empty());
    match (api, secret) {
        (Some(api), Some(secret)) if matches_any(&api.secrets, secret.as_bytes()) => {
            Ok(Caller::Api(api))
        }
        (Some(_), _) => Err(OAuthError::InvalidClient {
            basic,
            description: "client authentication failed".into(),
        }),
        (None, _) => client_auth::authenticate(headers, form, config, grants, clients, now)
            .await
            .map(|client| Caller::Client(Box::new(client))),
    }
}

/// The RFC 7662 answer for `token` as `caller` may see it; the store unavailable is an
/// error rather than a guess (`503 temporarily_unavailable`).
async fn describe(
    snapshot: &Snapshot,
    grants: &Grants,
    caller: &Caller<'_>,
    token: &str,
    now: u64,
) -> Result<Value, OAuthError> {
    let inactive = json!({"active": false});
    let model = &snapshot.config.model;
    match caller {
        Caller::Api(api) => {
            let Some(keys) = snapshot.issuer_docs.as_ref().map(|d| &d.local_keys) else {
                return Ok(inactive);
            };
            let local = match verify_local(token, keys, grants, now).await {
                Ok(local) => local,
                Err(UNCHECKED) => return Err(OAuthError::unavailable()),
                Err(_) => return Ok(inactive),
            };
            if !local.claims.aud.contains(&api.name) {
                return Ok(inactive);
            }
            let scope: Vec<&str> = local
                .claims
                .scope
                .iter()
                .map(String::as_str)
                .filter(|s| {
                    model
                        .api_scope_of(s)
                        .is_some_and(|scope| api.lists(&scope.name))
                })
                .collect();
            let mut answer = Map::new();
            answer.insert("active".into(), Value::Bool(true));
            answer.insert("scope".into(), Value::String(scope.join(" ")));
            answer.insert("aud".into(), Value::String(api.name.clone()));
            let bound = local.payload.contains_key("cnf");
            let token_type = if bound { "DPoP" } else { "Bearer" };
            answer.insert("token_type".into(), Value::String(token_type.into()));
            for claim in ["iss", "sub", "client_id", "exp", "iat", "nbf", "jti", "cnf"] {
                if let Some(value) = local.payload.get(claim) {
                    answer.insert(claim.into(), value.clone());
                }
            }
            Ok(Value::Object(answer))
        }
        Caller::Client(client) => Ok(match grants.refresh_grant(token, now).await? {
            Some(grant) if grant.authorization.client_id == client.client_id => json!({
                "active": true,
                "token_type": "refresh_token",
                "client_id": grant.authorization.client_id,
                "sub": grant.authorization.subject,
                "scope": grant.authorization.scopes.join(" "),
                "exp": grant.absolute_expiry.min(grant.sliding_expiry),
                "iss": snapshot.config.issuer.as_ref().map(|i| i.issuer.as_str()),
            }),
            _ => inactive,
        }),
    }
}

/// `POST /connect/revocation`: revokes a refresh token (and its family) or an access token
/// (by its `jti`, until it expires; SPEC §7) of the calling client. Other clients' tokens and
/// unknown ones are answered 200 too, and left alone, as RFC 7009 §2.2 says.
pub(super) async fn revocation(
    snapshot: Arc<Snapshot>,
    grants: &Grants,
    clients: &Clients,
    req: Request<Incoming>,
    within: std::time::Duration,
    now: std::time::SystemTime,
) -> Response<Body> {
    let now = crate::jwt::numeric_date(now);
    let (parts, body) = req.into_parts();
    let form = match form::read(&parts.headers, body, within).await {
        Ok(form) => form,
        Err(e) => return e.response(),
    };
    let done = async {
        let client = client_auth::authenticate(
            &parts.headers,
            &form,
            &snapshot.config,
            grants,
            clients,
            now,
        )
        .await?;
        let client = &*client;
        let token = form
            .get("token")
            .ok_or_else(|| OAuthError::InvalidRequest("token is missing".into()))?;
        if grants.revoke_refresh(token, &client.client_id, now).await? {
            tracing::info!(client_id = %client.client_id, "refresh token revoked");
        } else if let Some((jti, exp)) = own_access_token(&snapshot, token, client, now) {
            grants.revoke_access_token(&jti, exp, now).await?;
            tracing::info!(client_id = %client.client_id, "access token revoked");
        }
        Ok::<_, OAuthError>(())
    };
    match done.await {
        Ok(()) => {
            let mut response = Response::new(full(""));
            *response.status_mut() = StatusCode::OK;
            no_store(response)
        }
        Err(e) => {
            tracing::info!(error = e.code(), reason = %e, "revocation refused");
            e.response()
        }
    }
}

/// `jti` and `exp` of `token` when it is one of this issuer's access tokens, unexpired, issued
/// to `client`.
fn own_access_token(
    snapshot: &Snapshot,
    token: &str,
    client: &Client,
    now: u64,
) -> Option<(String, u64)> {
    let keys = &snapshot.issuer_docs.as_ref()?.local_keys;
    let claims = crate::jwt::verify::verify(token, keys).ok()?;
    let owned = claims.client_id.as_deref() == Some(client.client_id.as_str());
    if !owned || claims.exp < now {
        return None;
    }
    Some((claims.jti?, claims.exp))
}
