//! The token endpoint's interactive grants (SPEC §3 rule 6, §6): `authorization_code` and
//! `refresh_token`. A request is checked in full before its code or refresh token is spent,
//! so a client that asks for a resource it was not granted keeps its code.

use std::time::SystemTime;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::form::Form;
use super::oidc;
use super::token::{log_issued, mint, Subject, TokenResponse};
use super::OAuthError;
use crate::config::{Config, IssuerConfig, User};
use crate::grants::{Authorization, Grants, Redemption, RefreshPolicy, RefreshRefusal};
use crate::jwt::numeric_date;
use crate::resources::{
    self, Client, GrantType, Granted, RefreshTokenUsage, Remembered, OFFLINE_ACCESS,
};

/// Claims an access token sets itself; a user claim of the same name is left out.
const RESERVED: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "client_id",
    "scope",
    "iat",
    "nbf",
    "exp",
    "jti",
    "auth_time",
    "acr",
    "amr",
    "cnf",
    "azp",
    "nonce",
];

/// `grant_type=authorization_code`.
pub(super) fn authorization_code(
    config: &Config,
    issuer: &IssuerConfig,
    grants: &Grants,
    client: &Client,
    form: &Form,
    now: SystemTime,
) -> Result<TokenResponse, OAuthError> {
    let at = numeric_date(now);
    let code = form
        .get("code")
        .ok_or_else(|| OAuthError::InvalidRequest("code is missing".into()))?;
    let Some(grant) = grants.code(code, at)? else {
        // Spend it anyway: a replay of a redeemed code revokes what was issued from it.
        let reason = match grants.redeem_code(code, at)? {
            Redemption::Replayed => {
                tracing::warn!(client_id = %client.client_id, "an authorization code was replayed; every token issued from it is revoked");
                "the code was already used; every token issued from it is revoked"
            }
            Redemption::Expired => "the code has expired",
            Redemption::Unknown | Redemption::Redeemed { .. } => "the code is unknown",
        };
        return Err(OAuthError::InvalidGrant(reason.into()));
    };
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
    // Everything checked: now spend the code, exactly once.
    let family = match grants.redeem_code(code, at)? {
        Redemption::Redeemed { family, .. } => family,
        _ => return Err(OAuthError::InvalidGrant("the code was already used".into())),
    };
    respond(
        Issue {
            config,
            issuer,
            grants,
            client,
            user,
            authorization: &grant.authorization,
            family: &family,
            nonce: grant.nonce.as_deref(),
            now,
        },
        GrantType::AuthorizationCode,
        granted,
        None,
    )
}

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

/// What an issuance needs besides the grant.
struct Issue<'a> {
    config: &'a Config,
    issuer: &'a IssuerConfig,
    grants: &'a Grants,
    client: &'a Client,
    user: &'a User,
    authorization: &'a Authorization,
    family: &'a str,
    nonce: Option<&'a str>,
    now: SystemTime,
}

/// SPEC §3 rule 6 on what the code or refresh token remembers.
fn redeem(
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
fn respond(
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

/// The user claims an access token carries: those of its API scopes and its audiences.
fn access_token_claims(
    config: &Config,
    user: &User,
    granted: &Granted,
) -> serde_json::Map<String, serde_json::Value> {
    let model = &config.model;
    let scope_claims = granted
        .scopes
        .iter()
        .filter_map(|s| model.api_scopes.get(s.split(':').next().unwrap_or(s)))
        .flat_map(|s| s.user_claims.iter());
    let resource_claims = granted
        .aud
        .iter()
        .filter_map(|a| model.api_resource(a))
        .flat_map(|r| r.user_claims.iter());
    scope_claims
        .chain(resource_claims)
        .filter(|name| !RESERVED.contains(&name.as_str()))
        .filter_map(|name| Some((name.clone(), user.claims.get(name)?.clone())))
        .collect()
}

/// How `client`'s refresh tokens behave.
fn policy(client: &Client) -> RefreshPolicy {
    RefreshPolicy {
        one_time: client.refresh_token_usage == RefreshTokenUsage::OneTime,
        absolute: client.refresh_token_lifetime,
        sliding: client.refresh_token_sliding_lifetime,
        reuse_grace: client.refresh_token_reuse_grace,
    }
}

/// The user a grant was made for; gone from the file means the grant is gone too.
fn user<'c>(config: &'c Config, subject: &str) -> Result<&'c User, OAuthError> {
    config
        .users
        .iter()
        .find(|u| u.subject == subject)
        .ok_or_else(|| OAuthError::InvalidGrant("the user no longer exists".into()))
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
