//! The consent page: asked when the client sets `require_consent` and the user has not yet
//! approved every (scope, API) pair of the request, remembered for a year when the user says
//! so (SPEC §6).

use std::collections::BTreeSet;
use std::time::Duration;

use http::{Response, StatusCode};

use super::{AuthorizeRequest, Ctx, Failure};
use crate::http::Body;
use crate::issuer::form::Form;
use crate::issuer::pages::{self, Item};
use crate::issuer::register;
use crate::issuer::session::SessionKey;
use crate::resources::{self, OFFLINE_ACCESS};

/// How long a remembered consent lasts.
const CONSENT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

impl Ctx<'_> {
    pub(super) async fn consent(&self, form: &Form) -> Result<Response<Body>, Failure> {
        let (pending_id, pending) = self.pending(form).await?;
        let sessions = &self.service.sessions;
        let session = match &pending.session {
            Some(key) => sessions.session(key, self.now).await?,
            None => None,
        };
        let session = session.ok_or_else(Failure::expired)?;
        sessions.finish(&pending_id).await?;
        let request = pending.request;
        if form.get("decision") != Some("allow") {
            tracing::info!(client_id = %request.client_id, subject = %session.subject, "consent denied");
            return Err(Failure::back(
                &request,
                "access_denied",
                "the user denied access",
            ));
        }
        if form.get("remember") == Some("yes") {
            let approved = self.consent_pairs(&request);
            let now = crate::jwt::numeric_date(self.now);
            // Added to what was approved before: consent at one API, then at another, is
            // consent at both.
            self.service
                .grants
                .remember_consent(
                    &session.subject,
                    &request.client_id,
                    &approved,
                    CONSENT_LIFETIME,
                    now,
                )
                .await?;
        }
        tracing::info!(client_id = %request.client_id, subject = %session.subject, "consent given");
        self.issue_code(
            request,
            &session.subject,
            session.auth_time,
            StatusCode::SEE_OTHER,
        )
        .await
    }

    pub(super) async fn needs_consent(
        &self,
        request: &AuthorizeRequest,
        subject: &str,
    ) -> Result<bool, Failure> {
        let found = register::find(
            self.config,
            &self.service.grants,
            &self.service.clients,
            &request.client_id,
        )
        .await?;
        let Some(client) = found else {
            return Ok(false);
        };
        if !client.require_consent {
            return Ok(false);
        }
        let now = crate::jwt::numeric_date(self.now);
        let given = self
            .service
            .grants
            .consent(subject, &request.client_id, now)
            .await?;
        let asked = self.consent_pairs(request);
        Ok(!given.is_some_and(|c| asked.is_subset(&c.approved)))
    }

    /// The `(scope, API)` pairs `request` asks the user to approve.
    fn consent_pairs(&self, request: &AuthorizeRequest) -> BTreeSet<(String, String)> {
        resources::consent_pairs(&self.config.model, &request.scopes, &request.resources)
    }

    pub(super) async fn show_consent(
        &self,
        request: AuthorizeRequest,
        session: SessionKey,
    ) -> Result<Response<Body>, Failure> {
        let model = &self.config.model;
        let scopes: Vec<Item<'_>> = request
            .scopes
            .iter()
            .map(|name| {
                let label = if name == OFFLINE_ACCESS {
                    Some("Keep access while you are away (offline access)")
                } else if let Some(r) = model.identity_resources.get(name) {
                    r.display_name.as_deref()
                } else {
                    model
                        .api_scope_of(name)
                        .and_then(|s| s.display_name.as_deref())
                };
                Item {
                    label: label.unwrap_or(name),
                    name,
                }
            })
            .collect();
        // Every API the approval reaches, also when the request named none.
        let reached: BTreeSet<String> = self
            .consent_pairs(&request)
            .into_iter()
            .map(|(_, api)| api)
            .filter(|api| !api.is_empty())
            .collect();
        let apis: Vec<Item<'_>> = reached
            .iter()
            .map(|name| Item {
                label: model
                    .api_resource(name)
                    .and_then(|r| r.display_name.as_deref())
                    .unwrap_or(name),
                name,
            })
            .collect();
        let client = crate::issuer::document::shown_name(&request.client_id).into_owned();
        let (id, pending) = self
            .service
            .sessions
            .park(request.clone(), Some(session), &self.browser, self.now)
            .await?;
        let html = pages::consent(
            &self.issuer.url("/connect/authorize/consent"),
            &id,
            &pending.csrf,
            &client,
            &scopes,
            &apis,
        );
        Ok(pages::response(StatusCode::OK, html))
    }
}
