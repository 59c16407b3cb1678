//! Client authentication at the token endpoint: `client_secret_basic` and
//! `client_secret_post`, checked in constant time against stored hashes; `private_key_jwt`
//! ([`super::assertion`]); public clients by `client_id` alone.

use std::borrow::Cow;

use http::HeaderMap;

use super::assertion;
use super::form::Form;
use super::Clients;
use super::OAuthError;
use crate::config::Config;
use crate::grants::Grants;
use crate::protocol::authorization::{authorization, basic, Credentials, Malformed};
use crate::resources::Client;
use crate::secret::matches_any;

/// Credentials as presented, before they are checked.
pub(super) struct Presented {
    /// The `client_id` (or API resource name).
    pub client_id: String,
    /// The secret, when one was sent.
    pub secret: Option<String>,
    /// Whether HTTP Basic was used.
    pub basic: bool,
    /// A `private_key_jwt` client assertion, when one was sent (then there is no secret).
    pub assertion: Option<String>,
}

/// Finds the client the request authenticates as: one of the file's, or one that registered
/// itself (SPEC §9).
pub(super) async fn authenticate<'c>(
    headers: &HeaderMap,
    form: &Form,
    config: &'c Config,
    grants: &Grants,
    clients: &Clients,
    now: u64,
) -> Result<Cow<'c, Client>, OAuthError> {
    let presented = presented(headers, form)?;
    let fail = |description: &str| OAuthError::InvalidClient {
        basic: presented.basic,
        description: description.to_owned(),
    };
    let client = super::register::find(config, grants, clients, &presented.client_id).await?;
    if let Some(assertion) = &presented.assertion {
        let Some(client) = client.filter(|c| c.assertion_keys.is_some()) else {
            return Err(fail("client authentication failed"));
        };
        assertion::check(assertion, &client, config, grants, clients, now).await?;
        return Ok(client);
    }
    match (&presented.secret, client) {
        (Some(secret), Some(client)) if !client.secrets.is_empty() => {
            if matches_any(&client.secrets, secret.as_bytes()) {
                Ok(client)
            } else {
                Err(fail("client authentication failed"))
            }
        }
        (None, Some(client)) if !client.require_secret => Ok(client),
        (Some(secret), _) => {
            // Spend the same work as a real comparison so timing does not reveal which
            // client ids exist.
            let _ = matches_any(&[], secret.as_bytes());
            Err(fail("client authentication failed"))
        }
        (None, _) => Err(fail("client authentication failed")),
    }
}

/// The credentials of a request, from HTTP Basic or the body.
pub(super) fn presented(headers: &HeaderMap, form: &Form) -> Result<Presented, OAuthError> {
    let malformed = |_| OAuthError::InvalidClient {
        basic: true,
        description: "malformed Basic credentials".into(),
    };
    let asserted =
        form.get("client_assertion").is_some() || form.get("client_assertion_type").is_some();
    if asserted {
        return asserted_client(headers, form);
    }
    let credential = match authorization(headers) {
        Ok(None) => {
            let client_id = form.get("client_id").ok_or_else(|| OAuthError::InvalidClient {
                basic: false,
                description: "no client authentication: use HTTP Basic or client_id and client_secret in the body".into(),
            })?;
            return Ok(Presented {
                client_id: client_id.to_owned(),
                secret: form.get("client_secret").map(str::to_owned),
                basic: false,
                assertion: None,
            });
        }
        Ok(Some(Credentials::Basic(credential))) => credential,
        Ok(Some(_)) => return Err(OAuthError::InvalidClient {
            basic: true,
            description:
                "the token endpoint accepts only Basic authentication in the Authorization header"
                    .into(),
        }),
        Err(Malformed::Repeated) => {
            return Err(OAuthError::InvalidRequest(
                Malformed::Repeated.message().into(),
            ))
        }
        Err(e) => return Err(malformed(e)),
    };
    let (id, secret) = basic(credential).map_err(malformed)?;
    if form.get("client_secret").is_some() {
        return Err(OAuthError::InvalidRequest(
            "use one client authentication method, not Basic and client_secret together".into(),
        ));
    }
    if form.get("client_id").is_some_and(|body_id| body_id != id) {
        return Err(OAuthError::InvalidRequest(
            "client_id in the body differs from the Basic credentials".into(),
        ));
    }
    Ok(Presented {
        client_id: id,
        secret: Some(secret),
        basic: true,
        assertion: None,
    })
}

/// The credentials of a request with a client assertion (RFC 7521 §4.2): the assertion alone,
/// its type the jwt-bearer one; the client is the assertion's `sub`, which a `client_id` in the
/// body must equal.
fn asserted_client(headers: &HeaderMap, form: &Form) -> Result<Presented, OAuthError> {
    let refused = |description: &str| OAuthError::InvalidClient {
        basic: false,
        description: description.to_owned(),
    };
    if !matches!(authorization(headers), Ok(None)) || form.get("client_secret").is_some() {
        return Err(OAuthError::InvalidRequest(
            "use one client authentication method: a client assertion and no secret".into(),
        ));
    }
    if form.get("client_assertion_type") != Some(assertion::ASSERTION_TYPE) {
        return Err(refused(&format!(
            "client_assertion_type must be {}",
            assertion::ASSERTION_TYPE
        )));
    }
    let assertion = form
        .get("client_assertion")
        .ok_or_else(|| refused("client_assertion is missing"))?;
    let client_id = assertion::client_id(assertion)
        .ok_or_else(|| refused("client assertion: not a JWT whose sub names the client"))?;
    if form.get("client_id").is_some_and(|id| id != client_id) {
        return Err(OAuthError::InvalidRequest(
            "client_id in the body differs from the client assertion's sub".into(),
        ));
    }
    Ok(Presented {
        client_id,
        secret: None,
        basic: false,
        assertion: Some(assertion.to_owned()),
    })
}
