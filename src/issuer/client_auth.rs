//! Client authentication at the token endpoint: `client_secret_basic` and
//! `client_secret_post`, checked in constant time against stored hashes; public clients by
//! `client_id` alone.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::{header, HeaderMap};

use super::form::Form;
use super::OAuthError;
use crate::resources::Client;
use crate::secret::matches_any;

/// Credentials as presented, before they are checked.
pub struct Presented {
    /// The `client_id` (or API resource name).
    pub client_id: String,
    /// The secret, when one was sent.
    pub secret: Option<String>,
    /// Whether HTTP Basic was used.
    pub basic: bool,
}

/// Finds the client the request authenticates as.
pub fn authenticate<'a>(
    headers: &HeaderMap,
    form: &Form,
    clients: &'a BTreeMap<String, Client>,
) -> Result<&'a Client, OAuthError> {
    let presented = presented(headers, form)?;
    let fail = |description: &str| OAuthError::InvalidClient {
        basic: presented.basic,
        description: description.to_owned(),
    };
    let client = clients.get(&presented.client_id);
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
pub fn presented(headers: &HeaderMap, form: &Form) -> Result<Presented, OAuthError> {
    let mut authorization = headers.get_all(header::AUTHORIZATION).iter();
    let first = authorization.next();
    if authorization.next().is_some() {
        return Err(OAuthError::InvalidRequest(
            "more than one Authorization header".into(),
        ));
    }
    let Some(value) = first else {
        let client_id = form.get("client_id").ok_or_else(|| OAuthError::InvalidClient {
            basic: false,
            description: "no client authentication: use HTTP Basic or client_id and client_secret in the body".into(),
        })?;
        return Ok(Presented {
            client_id: client_id.to_owned(),
            secret: form.get("client_secret").map(str::to_owned),
            basic: false,
        });
    };
    let malformed = || OAuthError::InvalidClient {
        basic: true,
        description: "malformed Basic credentials".into(),
    };
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, credentials) = value.split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::InvalidClient {
            basic: true,
            description:
                "the token endpoint accepts only Basic authentication in the Authorization header"
                    .into(),
        });
    }
    let decoded = STANDARD
        .decode(credentials.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(malformed)?;
    let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
    // RFC 6749 §2.3.1: both halves are form-urlencoded before Base64.
    let (id, secret) = (
        form_decode(id).ok_or_else(malformed)?,
        form_decode(secret).ok_or_else(malformed)?,
    );
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
    })
}

fn form_decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}
