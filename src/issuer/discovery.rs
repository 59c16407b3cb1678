//! The discovery document (OpenID Connect Discovery 1.0 and RFC 8414), one for both
//! well-known locations.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::config::{Config, IssuerConfig};
use crate::jwt::Alg;
use crate::resources::OFFLINE_ACCESS;

/// Whether `issuer` can be an OpenID Connect provider: a key that is not retired signs RS256,
/// the algorithm OpenID Connect Discovery requires among the ID token algorithms.
pub(crate) fn is_openid_provider(issuer: &IssuerConfig) -> bool {
    issuer
        .keys
        .all()
        .iter()
        .any(|k| !k.retired && k.alg == Alg::RS256)
}

/// Serialises the discovery document of `issuer`.
pub(crate) fn document(issuer: &IssuerConfig, config: &Config) -> Bytes {
    let model = &config.model;
    let mut scopes: Vec<&str> = model
        .identity_resources
        .keys()
        .chain(model.api_scopes.keys())
        .map(String::as_str)
        .collect();
    let registered_offline = issuer.registration.as_ref().is_some_and(|r| {
        r.allowed_grant_types
            .contains(&crate::resources::GrantType::RefreshToken)
    });
    if registered_offline || config.clients.values().any(|c| c.allow_offline_access) {
        scopes.push(OFFLINE_ACCESS);
    }
    let mut claims: Vec<&str> = model
        .identity_resources
        .values()
        .flat_map(|r| r.user_claims.iter().map(String::as_str))
        .chain(["sub"])
        .collect();
    claims.sort_unstable();
    claims.dedup();
    // OpenID Connect requires RS256 among the id_token algorithms; list every signing
    // algorithm configured, RS256 first when present.
    let mut algs: Vec<Alg> = issuer
        .keys
        .all()
        .iter()
        .filter(|k| !k.retired)
        .map(|k| k.alg)
        .collect();
    algs.sort_by_key(|a| (*a != Alg::RS256, *a));
    algs.dedup();
    let mut doc: Value = json!({
        "issuer": issuer.issuer,
        "jwks_uri": issuer.url("/.well-known/jwks"),
        "authorization_endpoint": issuer.url("/connect/authorize"),
        "token_endpoint": issuer.url("/connect/token"),
        "userinfo_endpoint": issuer.url("/connect/userinfo"),
        "introspection_endpoint": issuer.url("/connect/introspect"),
        "revocation_endpoint": issuer.url("/connect/revocation"),
        "scopes_supported": scopes,
        "claims_supported": claims,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algs.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"],
        "token_endpoint_auth_signing_alg_values_supported": super::assertion::ALGS,
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "introspection_endpoint_auth_signing_alg_values_supported": super::assertion::ALGS,
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"],
        "revocation_endpoint_auth_signing_alg_values_supported": super::assertion::ALGS,
        "prompt_values_supported": ["none", "login", "consent"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
        "dpop_signing_alg_values_supported": crate::dpop::ALGS.split(' ').collect::<Vec<_>>(),
    });
    if let Some(registration) = &issuer.registration {
        doc["registration_endpoint"] = json!(issuer.url("/connect/register"));
        if registration.client_id_metadata_documents {
            doc["client_id_metadata_document_supported"] = json!(true);
        }
    }
    Bytes::from(doc.to_string())
}
