//! `grant_type=client_credentials`: a machine acting for itself (SPEC §3 rules 1 to 5).

use std::time::SystemTime;

use super::mint::mint;
use super::{log_issued, token_type, TokenResponse};
use crate::config::{Config, IssuerConfig};
use crate::issuer::form::Form;
use crate::issuer::OAuthError;
use crate::resources::{self, Client, GrantType, TokenRequest};

/// `grant_type=client_credentials`.
pub(super) fn client_credentials(
    config: &Config,
    issuer: &IssuerConfig,
    client: &Client,
    form: &Form,
    jkt: Option<&str>,
    now: SystemTime,
) -> Result<TokenResponse, OAuthError> {
    let resources = form.all("resource");
    let granted = resources::grant(
        &config.model,
        client,
        &TokenRequest {
            grant: GrantType::ClientCredentials,
            scope: form.get("scope"),
            resources: &resources,
        },
    )?;
    let lifetime = client
        .access_token_lifetime
        .unwrap_or(issuer.access_token_lifetime);
    let minted = mint(issuer, client, None, &granted, jkt, lifetime, now)?;
    log_issued(client, GrantType::ClientCredentials, &granted);
    Ok(TokenResponse {
        access_token: minted.token,
        token_type: token_type(jkt),
        expires_in: lifetime.as_secs(),
        scope: granted.scopes.join(" "),
        refresh_token: None,
        id_token: None,
    })
}
