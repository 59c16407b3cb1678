//! `/connect/authorize` (SPEC §6): validate the request ([`request`]), sign the user in
//! ([`login`]), ask for consent when the client wants it ([`consent`]), and redirect back with
//! a code ([`redirect`]).
//!
//! An unknown client or an unregistered `redirect_uri` is shown as an error page, never
//! redirected to. Every other error goes back to the registered redirect with `error`,
//! `state` and `iss` (RFC 9207).

mod consent;
mod cookies;
mod login;
mod redirect;
mod request;

pub(crate) use request::AuthorizeRequest;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::form::{self, Form};
use super::pages;
use super::session::SESSION_LIFETIME;
use super::Service;
use crate::config::{Config, IssuerConfig, User};
use crate::grants::{Authorization, CodeGrant, StoreError};
use crate::http::Body;
use crate::issuer::session::{SessionError, SessionKey};
use crate::state::Snapshot;

/// How long a code may wait for redemption.
pub(crate) const CODE_LIFETIME: Duration = Duration::from_secs(60);

/// Why a request cannot go on.
#[derive(Debug)]
enum Failure {
    /// Shown to the user: the redirect cannot be trusted.
    Page(StatusCode, &'static str),
    /// Sent back to the client.
    Redirect(Redirect),
    /// The grant store failed.
    Store(StoreError),
}

impl Failure {
    /// An error for the client, sent to its redirect.
    fn back(request: &AuthorizeRequest, error: &'static str, description: &str) -> Failure {
        Failure::Redirect(Redirect {
            redirect_uri: request.redirect_uri.clone(),
            state: request.state.clone(),
            error,
            description: description.to_owned(),
        })
    }

    fn expired() -> Failure {
        Failure::Page(
            StatusCode::BAD_REQUEST,
            "This sign-in page has expired. Go back to the application and start again.",
        )
    }

    fn busy() -> Failure {
        Failure::Page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many sign-ins are in progress. Try again in a minute.",
        )
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

impl From<crate::issuer::register::FindError> for Failure {
    fn from(e: crate::issuer::register::FindError) -> Self {
        match e {
            crate::issuer::register::FindError::Store(e) => Failure::Store(e),
            // Why is in the log ("client metadata document refused"); no redirect is trusted.
            crate::issuer::register::FindError::Document(_) => Failure::Page(
                StatusCode::BAD_REQUEST,
                "The application's client metadata document could not be fetched, or does not \
                 describe it.",
            ),
        }
    }
}

impl From<SessionError> for Failure {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Full => Failure::busy(),
            SessionError::Store(e) => Failure::Store(e),
        }
    }
}

/// Where and how to send an error back to the client.
#[derive(Debug)]
struct Redirect {
    redirect_uri: String,
    state: Option<String>,
    error: &'static str,
    description: String,
}

/// What a handler needs: the snapshot, its issuer, the process-wide service, the browser, and
/// the one reading of the clock for this request.
struct Ctx<'a> {
    config: &'a Config,
    issuer: &'a IssuerConfig,
    service: &'a Service,
    /// The browser's cookie, or a new one to set.
    browser: String,
    set_browser: bool,
    now: SystemTime,
}

/// `GET|POST /connect/authorize`.
pub(crate) async fn authorize(
    snapshot: &Snapshot,
    issuer: &IssuerConfig,
    service: &Service,
    req: Request<Incoming>,
    now: SystemTime,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let form = if parts.method == Method::POST {
        form::read(&parts.headers, body, issuer.request_body_timeout).await
    } else {
        Form::parse(parts.uri.query().unwrap_or("").as_bytes())
    };
    let ctx = Ctx::new(&snapshot.config, issuer, service, &parts.headers, now);
    let result = match form {
        Ok(form) => match request::validate_for(&snapshot.config, service, &form).await {
            Ok(request) => {
                let session = cookies::get(&parts.headers, cookies::SESSION).map(str::to_owned);
                ctx.proceed(request, session.as_deref(), StatusCode::FOUND)
                    .await
            }
            Err(failure) => Err(failure),
        },
        Err(e) => {
            tracing::info!(reason = %e, "authorize request refused");
            Err(Failure::Page(
                StatusCode::BAD_REQUEST,
                "The sign-in request is malformed.",
            ))
        }
    };
    ctx.answer(result, StatusCode::FOUND)
}

/// `POST /connect/authorize/login`: the login form.
pub(crate) async fn login(
    snapshot: &Snapshot,
    issuer: &IssuerConfig,
    service: &Service,
    req: Request<Incoming>,
    peer: SocketAddr,
    now: SystemTime,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let ctx = Ctx::new(&snapshot.config, issuer, service, &parts.headers, now);
    let result = match form::read(&parts.headers, body, issuer.request_body_timeout).await {
        Ok(form) => ctx.login(&form, peer).await,
        Err(_) => Err(Failure::Page(
            StatusCode::BAD_REQUEST,
            "The sign-in form is malformed.",
        )),
    };
    ctx.answer(result, StatusCode::SEE_OTHER)
}

/// `POST /connect/authorize/consent`: the consent form.
pub(crate) async fn consent(
    snapshot: &Snapshot,
    issuer: &IssuerConfig,
    service: &Service,
    req: Request<Incoming>,
    now: SystemTime,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let ctx = Ctx::new(&snapshot.config, issuer, service, &parts.headers, now);
    let result = match form::read(&parts.headers, body, issuer.request_body_timeout).await {
        Ok(form) => ctx.consent(&form).await,
        Err(_) => Err(Failure::Page(
            StatusCode::BAD_REQUEST,
            "The consent form is malformed.",
        )),
    };
    ctx.answer(result, StatusCode::SEE_OTHER)
}

impl<'a> Ctx<'a> {
    fn new(
        config: &'a Config,
        issuer: &'a IssuerConfig,
        service: &'a Service,
        headers: &HeaderMap,
        now: SystemTime,
    ) -> Self {
        let (browser, set_browser) = match cookies::get(headers, cookies::BROWSER) {
            Some(b) if b.len() == 43 => (b.to_owned(), false),
            _ => (crate::protocol::random_token(), true),
        };
        Ctx {
            config,
            issuer,
            service,
            browser,
            set_browser,
            now,
        }
    }

    /// Signs in (or not), asks for consent (or not), and redirects with a code.
    async fn proceed(
        &self,
        request: AuthorizeRequest,
        session_id: Option<&str>,
        status: StatusCode,
    ) -> Result<Response<Body>, Failure> {
        let session = match session_id.map(SessionKey::of) {
            Some(key) => self
                .service
                .sessions
                .session(&key, self.now)
                .await?
                .map(|session| (key, session)),
            None => None,
        };
        let session = session.filter(|(_, s)| self.user_by_subject(&s.subject).is_some());
        let Some((key, session)) = session.filter(|_| !request.prompt.login) else {
            if request.prompt.none {
                return Err(Failure::back(
                    &request,
                    "login_required",
                    "the user is not signed in",
                ));
            }
            return self.show_login(request, "", None, StatusCode::OK).await;
        };
        if request.prompt.consent || self.needs_consent(&request, &session.subject).await? {
            if request.prompt.none {
                return Err(Failure::back(
                    &request,
                    "consent_required",
                    "the user has not consented",
                ));
            }
            return self.show_consent(request, key).await;
        }
        self.issue_code(request, &session.subject, session.auth_time, status)
            .await
    }

    async fn issue_code(
        &self,
        request: AuthorizeRequest,
        subject: &str,
        auth_time: u64,
        status: StatusCode,
    ) -> Result<Response<Body>, Failure> {
        let grant = CodeGrant {
            authorization: Authorization {
                client_id: request.client_id.clone(),
                subject: subject.to_owned(),
                scopes: request.scopes.clone(),
                resources: request.resources.clone(),
                auth_time,
                jkt: None,
            },
            redirect_uri: request.redirect_uri.clone(),
            code_challenge: request.code_challenge.clone(),
            nonce: request.nonce.clone(),
        };
        let now = crate::jwt::numeric_date(self.now);
        let code = self
            .service
            .grants
            .issue_code(grant, CODE_LIFETIME, now)
            .await?;
        tracing::info!(
            client_id = %request.client_id,
            %subject,
            scope = %request.scopes.join(" "),
            resources = %request.resources.join(" "),
            "authorization code issued"
        );
        Ok(redirect::to(
            &request.redirect_uri,
            &[("code", code.as_str())],
            request.state.as_deref(),
            &self.issuer.issuer,
            status,
        ))
    }

    fn user_by_subject(&self, subject: &str) -> Option<&User> {
        self.config.users.by_subject(subject)
    }

    /// The response for `result`, with the browser cookie when this browser had none.
    fn answer(
        &self,
        result: Result<Response<Body>, Failure>,
        status: StatusCode,
    ) -> Response<Body> {
        let mut response = match result {
            Ok(response) => response,
            Err(Failure::Page(status, message)) => pages::response(status, pages::error(message)),
            Err(Failure::Redirect(r)) => {
                tracing::info!(error = r.error, reason = %r.description, "authorize request refused");
                redirect::to(
                    &r.redirect_uri,
                    &[("error", r.error), ("error_description", &r.description)],
                    r.state.as_deref(),
                    &self.issuer.issuer,
                    status,
                )
            }
            Err(Failure::Store(e @ StoreError::Unavailable(_))) => {
                tracing::warn!(error = %e, "authorize failed: the store is unavailable");
                pages::response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    pages::error("Signing in is unavailable for a moment. Try again shortly."),
                )
            }
            Err(Failure::Store(e)) => {
                tracing::error!(error = %e, "authorize failed");
                pages::response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    pages::error("Something went wrong on our side. Try again later."),
                )
            }
        };
        if self.set_browser {
            let cookie = self.cookie(cookies::BROWSER, &self.browser, "/connect/authorize");
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        response
    }

    /// A `Set-Cookie` value below the issuer's base path, for a session's lifetime; `Secure`
    /// when the issuer is https or the listener has TLS.
    fn cookie(&self, name: &'static str, value: &str, path: &str) -> http::HeaderValue {
        let secure = self.issuer.issuer.starts_with("https://") || self.issuer.tls.is_some();
        let path = format!("{}{path}", self.issuer.base_path);
        cookies::set(name, value, path, SESSION_LIFETIME, secure)
    }
}
