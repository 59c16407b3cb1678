//! `grant_type=authorization_code` (SPEC §3 rule 6, §6): the code, its redirect and PKCE
//! verifier are checked, then the request in full, and only then is the code spent, exactly
//! once; a replay revokes what was issued from it.

use std::time::SystemTime;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::grant::{redeem, respond, user, Issue, Spend};
use super::TokenResponse;
use crate::config::{Config, IssuerConfig};
use crate::grants::{CodeRefusal, Grants};
use crate::issuer::form::Form;
use crate::issuer::OAuthError;
use crate::jwt::numeric_date;
use crate::resources::{Client, GrantType};

/// `grant_type=authorization_code`.
pub(super) async fn authorization_code(
    config: &Config,
    issuer: &IssuerConfig,
    grants: &Grants,
    client: &Client,
    form: &Form,
    jkt: Option<&str>,
    now: SystemTime,
) -> Result<TokenResponse, OAuthError> {
    let at = numeric_date(now);
    let code = form
        .get("code")
        .ok_or_else(|| OAuthError::InvalidRequest("code is missing".into()))?;
    // A replay of a redeemed code revokes what was issued from it, here already.
    let grant = grants.code(code, at).await?.map_err(|refused| {
        if refused == CodeRefusal::Replayed {
            tracing::warn!(client_id = %client.client_id, "an authorization code was replayed; every token issued from it is revoked");
        }
        OAuthError::InvalidGrant(refused.to_string())
    })?;
    if grant.authorization.client_id != client.client_id {
        return Err(OAuthError::InvalidGrant(
            "the code was issued to another client".into(),
        ));
    }
    if form.get("redirect_uri") != Some(grant.redirect_uri.as_str()) {
        return Err(OAuthError::InvalidGrant(
            "redirect_uri differs from the one of the authorize request".into(),
        ));
    }
    check_verifier(grant.code_challenge.as_deref(), form.get("code_verifier"))?;
    let user = user(config, &grant.authorization.subject)?;
    let granted = redeem(
        config,
        client,
        GrantType::AuthorizationCode,
        &grant.authorization,
        form,
    )?;
    // Everything checked: the response spends the code, exactly once.
    respond(
        Issue {
            config,
            issuer,
            grants,
            client,
            user,
            authorization: &grant.authorization,
            nonce: grant.nonce.as_deref(),
            jkt,
            now,
        },
        GrantType::AuthorizationCode,
        granted,
        Spend::Code(code),
    )
    .await
}

/// RFC 7636 §4.6 with S256.
fn check_verifier(challenge: Option<&str>, verifier: Option<&str>) -> Result<(), OAuthError> {
    match (challenge, verifier) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(OAuthError::InvalidGrant(
            "code_verifier was sent but the authorize request had no code_challenge".into(),
        )),
        (Some(_), None) => Err(OAuthError::InvalidGrant("code_verifier is missing".into())),
        (Some(challenge), Some(verifier)) => {
            let well_formed = (43..=128).contains(&verifier.len())
                && verifier
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
            let computed = URL_SAFE_NO_PAD.encode(digest.as_ref());
            let same: bool =
                subtle::ConstantTimeEq::ct_eq(computed.as_bytes(), challenge.as_bytes()).into();
            if well_formed && same {
                Ok(())
            } else {
                Err(OAuthError::InvalidGrant(
                    "code_verifier does not match the code_challenge".into(),
                ))
            }
        }
    }
}
