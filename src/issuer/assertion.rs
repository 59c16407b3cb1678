//! private_key_jwt (RFC 7523 §2.2, SPEC §9): a client proves who it is with a JWT signed by
//! its own key. The assertion is verified like an access token ([`verify::verify`], with the
//! client as the issuer), its claims are checked, and its `jti` is spent in the store, so that
//! it is single use across the fleet. The shape: docs/private_key_jwt.md.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;

use super::OAuthError;
use crate::config::Config;
use crate::grants::Grants;
use crate::jwt::verify::{self, IssuerKeys, TokenError, TrustedKeys};
use crate::resources::{AssertionKeys, Client};

/// `client_assertion_type` of a JWT client assertion (RFC 7523 §2.2).
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The signing algorithms accepted, for discovery's
/// `token_endpoint_auth_signing_alg_values_supported`.
pub const ALGS: [&str; 5] = ["ES256", "ES384", "RS256", "PS256", "EdDSA"];
/// The longest an assertion may live from now (SPEC §9: `exp` within 5 minutes).
const MAX_LIFETIME: u64 = 300;
/// How far the client's clock may be off, either way.
const SKEW: u64 = 30;
/// How long a fetched `jwks_uri` key set is used before it is fetched again.
const KEEP_FOR: Duration = Duration::from_secs(300);
/// An unknown `kid` fetches a client's key set again at most this often.
const REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS read.
const MAX_DOCUMENT: usize = 512 * 1024;

/// The key sets of `jwks_uri` clients, fetched when needed and kept per client and URI; the
/// HTTP client is made on the first fetch.
#[derive(Default)]
pub struct ClientKeys {
    http: OnceLock<crate::http::Client>,
    fetched: Mutex<HashMap<(String, String), Fetched>>,
}

struct Fetched {
    keys: Arc<TrustedKeys>,
    /// When the set was fetched.
    at: Instant,
    /// When an unknown `kid` last made it fetch again.
    refetched: Option<Instant>,
}

impl ClientKeys {
    /// `client_id`'s keys from `uri`: the kept set while it is younger than [`KEEP_FOR`], else
    /// fetched again; when `unknown_kid`, fetched again unless an unknown `kid` did so less
    /// than [`REFETCH_INTERVAL`] ago. A failed fetch keeps serving the last set; with none, the
    /// error.
    async fn keys(
        &self,
        client_id: &str,
        uri: &str,
        unknown_kid: bool,
        via: Via<'_>,
    ) -> Result<Arc<TrustedKeys>, String> {
        let slot = (client_id.to_owned(), uri.to_owned());
        let kept = self.lock().get(&slot).map(|f| {
            let fresh = if unknown_kid {
                f.refetched.is_some_and(|r| r.elapsed() < REFETCH_INTERVAL)
            } else {
                f.at.elapsed() < KEEP_FOR
            };
            (f.keys.clone(), fresh, f.refetched)
        });
        if let Some((keys, true, _)) = kept {
            return Ok(keys);
        }
        let fetched = match via {
            Via::Trusted => {
                let http = self
                    .http
                    .get_or_init(|| crate::http::client(crate::http::connector(FETCH_TIMEOUT)));
                crate::http::get_json::<JwkSet>(http, uri, FETCH_TIMEOUT, MAX_DOCUMENT).await
            }
            Via::Guarded {
                documents,
                allow_private,
            } => documents
                .get(uri, allow_private, MAX_DOCUMENT)
                .await
                .and_then(|(_, body)| {
                    serde_json::from_slice::<JwkSet>(&body)
                        .map_err(|e| format!("not a JWKS (a JSON object with \"keys\"): {e}"))
                }),
        };
        let now = Instant::now();
        let refetched = if unknown_kid {
            Some(now)
        } else {
            kept.as_ref().and_then(|(_, _, r)| *r)
        };
        match fetched {
            Ok(set) => {
                let (keys, skipped) = IssuerKeys::from_jwk_set(client_id, false, &set);
                for (kid, why) in skipped {
                    tracing::warn!(client_id, jwks_uri = uri, kid = kid.as_deref().unwrap_or("-"), error = %why, "client key skipped");
                }
                let keys = Arc::new(TrustedKeys::new(vec![keys]));
                let entry = Fetched {
                    keys: keys.clone(),
                    at: now,
                    refetched,
                };
                self.lock().insert(slot, entry);
                Ok(keys)
            }
            Err(e) => {
                tracing::warn!(client_id, jwks_uri = uri, error = %e, "client keys could not be fetched");
                let Some((keys, _, _)) = kept else {
                    return Err(e);
                };
                // Not tried again for every request while the URI is down.
                if let Some(entry) = self.lock().get_mut(&slot) {
                    if unknown_kid {
                        entry.refetched = Some(now);
                    } else {
                        entry.at = now;
                    }
                }
                Ok(keys)
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Fetched>> {
        self.fetched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// `client_id`'s keys from a JWKS given whole (`jwks_file`, a document's `jwks`): every key
/// must be usable, and there must be one.
pub fn key_set(client_id: &str, set: &JwkSet) -> Result<Arc<TrustedKeys>, String> {
    let (keys, skipped) = IssuerKeys::from_jwk_set(client_id, false, set);
    match skipped.first() {
        Some((kid, why)) => Err(format!(
            "the key {} is not usable: {why}",
            kid.as_deref().unwrap_or("without kid")
        )),
        None if keys.keys().next().is_none() => Err("holds no key".to_owned()),
        None => Ok(Arc::new(TrustedKeys::new(vec![keys]))),
    }
}

/// How a `jwks_uri` is fetched: as the file's operator wrote it, or as a client published it
/// (registered or in a metadata document), with the metadata documents' guards.
#[derive(Clone, Copy)]
enum Via<'a> {
    Trusted,
    Guarded {
        documents: &'a super::document::Documents,
        allow_private: bool,
    },
}

/// The client an assertion says it comes from: its `sub` (which must equal `iss`), read
/// before anything is verified, only to find the client and its keys.
pub fn client_id(assertion: &str) -> Option<String> {
    use base64::Engine;
    #[derive(serde::Deserialize)]
    struct Names {
        sub: Option<String>,
    }
    let payload = assertion.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice::<Names>(&bytes).ok()?.sub
}

/// Checks `assertion` as `client`'s proof of identity at `now` (docs/private_key_jwt.md): its
/// signature by one of the client's keys, `iss` = `sub` = `client_id`, `aud` the issuer or
/// its token endpoint, `exp` not past and at most 5 minutes away, `nbf` not ahead, and `jti`
/// never used before (spent in `grants`).
pub async fn check(
    assertion: &str,
    client: &Client,
    config: &Config,
    grants: &Grants,
    clients: &super::Clients,
    now: u64,
) -> Result<(), OAuthError> {
    let refused = |why: String| OAuthError::InvalidClient {
        basic: false,
        description: format!("client assertion: {why}"),
    };
    let claims = match &client.assertion_keys {
        Some(AssertionKeys::File { keys, .. } | AssertionKeys::Given(keys)) => {
            verify::verify(assertion, keys)
        }
        Some(AssertionKeys::Uri(uri) | AssertionKeys::Published(uri)) => {
            let via = match &client.assertion_keys {
                Some(AssertionKeys::Published(_)) => Via::Guarded {
                    documents: &clients.documents,
                    allow_private: config
                        .issuer
                        .as_ref()
                        .and_then(|i| i.registration.as_ref())
                        .is_some_and(|r| r.allow_private_addresses),
                },
                _ => Via::Trusted,
            };
            let id = &client.client_id;
            let fetch_failed = |_| refused("the client's keys could not be fetched".into());
            let keys = clients
                .keys
                .keys(id, uri, false, via)
                .await
                .map_err(fetch_failed)?;
            match verify::verify(assertion, &keys) {
                // A key the client added since: fetched again, at most every 30 s.
                Err(TokenError::UnknownKid) => {
                    let keys = clients
                        .keys
                        .keys(id, uri, true, via)
                        .await
                        .map_err(fetch_failed)?;
                    verify::verify(assertion, &keys)
                }
                other => other,
            }
        }
        None => return Err(refused("the client does not use private_key_jwt".into())),
    }
    .map_err(|e| match e {
        TokenError::UntrustedIssuer => refused("iss must be the client_id".into()),
        other => refused(other.to_string()),
    })?;
    if claims.sub.as_deref() != Some(client.client_id.as_str()) {
        return Err(refused("sub must be the client_id".into()));
    }
    let issuer = config
        .issuer
        .as_ref()
        .ok_or_else(|| OAuthError::ServerError("the token service is not configured".into()))?;
    let token_endpoint = issuer.url("/connect/token");
    if !claims
        .aud
        .iter()
        .any(|a| *a == issuer.issuer || *a == token_endpoint)
    {
        return Err(refused(format!(
            "aud must be the issuer identifier ({}) or the token endpoint ({token_endpoint})",
            issuer.issuer
        )));
    }
    if claims.exp.saturating_add(SKEW) <= now {
        return Err(refused("it has expired".into()));
    }
    if claims.exp > now + MAX_LIFETIME + SKEW {
        return Err(refused(format!(
            "exp must be at most {MAX_LIFETIME} seconds away"
        )));
    }
    if claims.nbf.is_some_and(|nbf| nbf > now + SKEW) {
        return Err(refused("it is not valid yet (nbf)".into()));
    }
    let jti = claims
        .jti
        .as_deref()
        .ok_or_else(|| refused("it has no jti".into()))?;
    let first = grants
        .spend_assertion(&client.client_id, jti, claims.exp + SKEW, now)
        .await?;
    if !first {
        return Err(refused("it was used before (jti)".into()));
    }
    Ok(())
}
