//! What the two user grants share: SPEC §3 rule 6 on what the code or refresh token
//! remembers, and the response with its access, refresh and ID tokens.

use std::time::SystemTime;

use super::mint::{access_token_claims, mint, Subject};
use super::refresh_token::policy;
use super::{log_issued, TokenResponse};
use crate::config::{Config, IssuerConfig, User};
use crate::grants::{Authorization, Grants};
use crate::issuer::form::Form;
use crate::issuer::{oidc, OAuthError};
use crate::jwt::numeric_date;
use crate::resources::{self, Client, GrantType, Granted, Remembered, OFFLINE_ACCESS};

/// What an issuance needs besides the grant.
pub(super) struct Issue<'a> {
    pub(super) config: &'a Config,
    pub(super) issuer: &'a IssuerConfig,
    pub(super) grants: &'a Grants,
    pub(super) client: &'a Client,
    pub(super) user: &'a User,
    pub(super) authorization: &'a Authorization,
    pub(super) family: &'a str,
    pub(super) nonce: Option<&'a str>,
    pub(super) now: SystemTime,
}

/// SPEC §3 rule 6 on what the code or refresh token remembers.
pub(super) fn redeem(
    config: &Config,
    client: &Client,
    grant: GrantType,
    authorization: &Authorization,
    form: &Form,
) -> Result<Granted, OAuthError> {
    let remembered = Remembered {
        scopes: &authorization.scopes,
        resources: &authorization.resources,
    };
    let resources = form.all("resource");
    Ok(resources::redeem(
        &config.model,
        client,
        grant,
        remembered,
        form.get("scope"),
        &resources,
    )?)
}

/// Mints the access token (and the refresh and ID tokens the grant calls for).
pub(super) fn respond(
    issue: Issue<'_>,
    grant: GrantType,
    granted: Granted,
    refresh: Option<String>,
) -> Result<TokenResponse, OAuthError> {
    let Issue {
        config,
        issuer,
        grants,
        client,
        user,
        authorization,
        family,
        nonce,
        now,
    } = issue;
    let lifetime = client
        .access_token_lifetime
        .unwrap_or(issuer.access_token_lifetime);
    let claims = access_token_claims(config, user, &granted);
    let subject = Subject {
        id: &user.subject,
        claims: &claims,
    };
    let minted = mint(issuer, client, Some(subject), &granted, lifetime, now)?;
    grants.record_access_token(family, &minted.jti, minted.exp)?;
    let refresh_token = match refresh {
        Some(rotated) => Some(rotated),
        None if granted.granted.iter().any(|s| s == OFFLINE_ACCESS) => Some(grants.issue_refresh(
            authorization.clone(),
            family,
            policy(client),
            numeric_date(now),
        )?),
        None => None,
    };
    let id_token = if granted.granted.iter().any(|s| s == oidc::OPENID) {
        Some(oidc::id_token(
            issuer,
            &config.model,
            client,
            user,
            &granted.granted,
            oidc::IdTokenFor {
                access_token: &minted.token,
                nonce,
                auth_time: authorization.auth_time,
            },
            now,
        )?)
    } else {
        None
    };
    log_issued(client, grant, &granted);
    Ok(TokenResponse {
        access_token: minted.token,
        token_type: "Bearer",
        expires_in: lifetime.as_secs(),
        scope: granted.scopes.join(" "),
        refresh_token,
        id_token,
    })
}

/// The user a grant was made for; gone from the file means the grant is gone too.
pub(super) fn user<'c>(config: &'c Config, subject: &str) -> Result<&'c User, OAuthError> {
    config
        .users
        .iter()
        .find(|u| u.subject == subject)
        .ok_or_else(|| OAuthError::InvalidGrant("the user no longer exists".into()))
}
