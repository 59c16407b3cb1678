//! `grant_type=refresh_token` (SPEC §3 rule 6, §6): the refresh token is checked as the
//! client's policy would take it, then the request in full, then it is used: rotated (a
//! reuse revokes its family unless within the reuse grace) or slid.

use std::time::SystemTime;

use super::grant::{redeem, respond, user, Issue};
use super::TokenResponse;
use crate::config::{Config, IssuerConfig};
use crate::grants::{Grants, RefreshPolicy, RefreshRefusal};
use crate::issuer::form::Form;
use crate::issuer::OAuthError;
use crate::jwt::numeric_date;
use crate::resources::{Client, GrantType, RefreshTokenUsage};

/// `grant_type=refresh_token`.
pub(super) fn refresh_token(
    config: &Config,
    issuer: &IssuerConfig,
    grants: &Grants,
    client: &Client,
    form: &Form,
    now: SystemTime,
) -> Result<TokenResponse, OAuthError> {
    let at = numeric_date(now);
    let token = form
        .get("refresh_token")
        .ok_or_else(|| OAuthError::InvalidRequest("refresh_token is missing".into()))?;
    let policy = policy(client);
    let refusal = |r: RefreshRefusal| {
        if r == RefreshRefusal::Reused {
            tracing::warn!(client_id = %client.client_id, "a rotated refresh token was used again; its family is revoked");
        }
        OAuthError::InvalidGrant(r.to_string())
    };
    let stored = grants
        .usable_refresh(token, policy, at)?
        .filter(|g| g.authorization.client_id == client.client_id);
    let Some(stored) = stored else {
        // Not live: find out why (and revoke the family when a rotated token came back).
        let why = match grants.use_refresh(token, &client.client_id, policy, at)? {
            Err(r) => r,
            Ok(_) => RefreshRefusal::Unknown,
        };
        return Err(refusal(why));
    };
    let user = user(config, &stored.authorization.subject)?;
    let granted = redeem(
        config,
        client,
        GrantType::RefreshToken,
        &stored.authorization,
        form,
    )?;
    let used = grants
        .use_refresh(token, &client.client_id, policy, at)?
        .map_err(refusal)?;
    respond(
        Issue {
            config,
            issuer,
            grants,
            client,
            user,
            authorization: &used.grant.authorization,
            family: &used.grant.family,
            nonce: None,
            now,
        },
        GrantType::RefreshToken,
        granted,
        Some(used.token),
    )
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
