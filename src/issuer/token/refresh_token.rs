//! `grant_type=refresh_token` (SPEC §3 rule 6, §6): the refresh token is checked as the
//! client's policy would take it, then the request in full, then it is used: rotated (a
//! reuse revokes its family unless within the reuse grace) or slid.

use std::time::SystemTime;

use super::grant::{redeem, respond, user, Issue, Spend};
use super::TokenResponse;
use crate::config::{Config, IssuerConfig};
use crate::grants::{Grants, RefreshPolicy, RefreshRefusal};
use crate::issuer::form::Form;
use crate::issuer::OAuthError;
use crate::jwt::numeric_date;
use crate::resources::{Client, GrantType, RefreshTokenUsage};

/// `grant_type=refresh_token`.
pub(super) async fn refresh_token(
    config: &Config,
    issuer: &IssuerConfig,
    grants: &Grants,
    client: &Client,
    form: &Form,
    jkt: Option<&str>,
    now: SystemTime,
) -> Result<TokenResponse, OAuthError> {
    let at = numeric_date(now);
    let token = form
        .get("refresh_token")
        .ok_or_else(|| OAuthError::InvalidRequest("refresh_token is missing".into()))?;
    let policy = policy(client);
    let stored = grants
        .usable_refresh(token, policy, at)
        .await?
        .filter(|g| g.authorization.client_id == client.client_id);
    let Some(stored) = stored else {
        // Not live: find out why (and revoke the family when a rotated token came back).
        return Err(refresh_refusal(
            client,
            grants
                .refuse_refresh(token, &client.client_id, policy, at)
                .await?,
        ));
    };
    // SPEC §8: a public client's refresh token bound to a DPoP key is used with that key only.
    if let Some(bound) = stored.authorization.jkt.as_deref() {
        if jkt != Some(bound) {
            let why = if jkt.is_none() {
                "this refresh token is bound to a DPoP key: send a proof made with it"
            } else {
                "the proof is not made with the key this refresh token is bound to"
            };
            return Err(OAuthError::InvalidDpopProof(why.into()));
        }
    }
    let user = user(config, &stored.authorization.subject)?;
    let granted = redeem(
        config,
        client,
        GrantType::RefreshToken,
        &stored.authorization,
        form,
    )?;
    respond(
        Issue {
            config,
            issuer,
            grants,
            client,
            user,
            authorization: &stored.authorization,
            nonce: None,
            jkt,
            now,
        },
        GrantType::RefreshToken,
        granted,
        Spend::Refresh(token, policy),
    )
    .await
}

/// The `invalid_grant` of a refused refresh token; a reuse is logged as the alarm it is.
pub(super) fn refresh_refusal(client: &Client, refused: RefreshRefusal) -> OAuthError {
    if refused == RefreshRefusal::Reused {
        tracing::warn!(client_id = %client.client_id, "a rotated refresh token was used again; its family is revoked");
    }
    OAuthError::InvalidGrant(refused.to_string())
}

/// How `client`'s refresh tokens behave.
pub(super) fn policy(client: &Client) -> RefreshPolicy {
    RefreshPolicy {
        one_time: client.refresh_token_usage == RefreshTokenUsage::OneTime,
        absolute: client.refresh_token_lifetime,
        sliding: client.refresh_token_sliding_lifetime,
        reuse_grace: client.refresh_token_reuse_grace,
    }
}
