//! What the two user grants share: SPEC §3 rule 6 on what the code or refresh token
//! remembers, and the response with its access, refresh and ID tokens.

use std::time::SystemTime;

use super::mint::{access_token_claims, mint, Subject};
use super::refresh_token::{policy, refresh_refusal};
use super::{log_issued, token_type, TokenResponse};
use crate::config::{Config, IssuerConfig, User};
use crate::grants::{AccessToken, Authorization, CodeRefusal, Grants, RefreshPolicy};
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
    pub(super) nonce: Option<&'a str>,
    /// The thumbprint of the request's DPoP key, when it sent a proof.
    pub(super) jkt: Option<&'a str>,
    pub(super) now: SystemTime,
}

/// What the response spends: the store records the access token in the same step, so a
/// token is handed out only when its grant was spent, and revoking the grant revokes it.
pub(super) enum Spend<'a> {
    /// An authorization code, once.
    Code(&'a str),
    /// A refresh token under its client's policy.
    Refresh(&'a str, RefreshPolicy),
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

/// Mints the access token, spends the grant (recording the token), then mints the ID token
/// when `openid` was granted.
pub(super) async fn respond(
    issue: Issue<'_>,
    grant: GrantType,
    granted: Granted,
    spend: Spend<'_>,
) -> Result<TokenResponse, OAuthError> {
    let Issue {
        config,
        issuer,
        grants,
        client,
        user,
        authorization,
        nonce,
        jkt,
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
    let minted = mint(issuer, client, Some(subject), &granted, jkt, lifetime, now)?;
    let access = AccessToken {
        jti: &minted.jti,
        exp: minted.exp,
    };
    let at = numeric_date(now);
    let refresh_token = match spend {
        Spend::Code(code) => {
            let offline = granted.granted.iter().any(|s| s == OFFLINE_ACCESS);
            let refresh = offline.then(|| policy(client));
            // SPEC §8: a public client's refresh tokens are bound to its DPoP key, which its
            // family remembers with the authorization.
            let bound;
            let authorization = match jkt {
                Some(jkt) if !client.require_secret => {
                    bound = Authorization {
                        jkt: Some(jkt.to_owned()),
                        ..authorization.clone()
                    };
                    &bound
                }
                _ => authorization,
            };
            grants
                .redeem_code(code, authorization, at, access, refresh)
                .await?
                .map_err(|refused| {
                    if refused == CodeRefusal::Replayed {
                        tracing::warn!(client_id = %client.client_id, "an authorization code was replayed; every token issued from it is revoked");
                    }
                    OAuthError::InvalidGrant(refused.to_string())
                })?
                .refresh_token
        }
        Spend::Refresh(token, policy) => {
            let used = grants
                .use_refresh(token, &client.client_id, policy, at, access)
                .await?
                .map_err(|refused| refresh_refusal(client, refused))?;
            Some(used.token)
        }
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
        token_type: token_type(jkt),
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
        .by_subject(subject)
        .ok_or_else(|| OAuthError::InvalidGrant("the user no longer exists".into()))
}
