//! `/connect/authorize` (SPEC §6): validate the request, sign the user in, ask for consent
//! when the client wants it, and redirect back with a code.
//!
//! An unknown client or an unregistered `redirect_uri` is shown as an error page, never
//! redirected to. Every other error goes back to the registered redirect with `error`,
//! `state` and `iss` (RFC 9207).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::form::{self, Form};
use super::pages::{self, Item};
use super::session::{Pending, SESSION_LIFETIME};
use super::{OAuthError, Service};
use crate::config::{Config, IssuerConfig, User};
use crate::grants::{Authorization, CodeGrant, Grants, StoreError};
use crate::http::Body;
use crate::jwt::numeric_date;
use crate::resources::{self, Client, GrantType, OFFLINE_ACCESS};
use crate::state::Snapshot;

/// How long a code may wait for redemption.
pub const CODE_LIFETIME: Duration = Duration::from_secs(60);
/// How long a remembered consent lasts.
const CONSENT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// The session cookie.
const SESSION_COOKIE: &str = "isogate_session";
/// The cookie that ties a login or consent form to the browser it was shown in.
const BROWSER_COOKIE: &str = "isogate_browser";

/// A validated authorize request.
#[derive(Debug, Clone)]
pub struct AuthorizeRequest {
    client_id: String,
    redirect_uri: String,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    scopes: Vec<String>,
    resources: Vec<String>,
    prompt: Prompt,
}

/// The OpenID Connect `prompt` values isogate acts on.
#[derive(Debug, Clone, Copy, Default)]
struct Prompt {
    none: bool,
    login: bool,
    consent: bool,
}

/// Why a request cannot go on.
enum Failure {
    /// Shown to the user: the redirect cannot be trusted.
    Page(StatusCode, &'static str),
    /// Sent back to the client.
    Redirect(Redirect),
    /// The grant store failed.
    Store(StoreError),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

/// Where and how to send an error back to the client.
struct Redirect {
    redirect_uri: String,
    state: Option<String>,
    error: &'static str,
    description: String,
}

/// What a handler needs: the snapshot, its issuer and the process-wide service.
struct Ctx<'a> {
    config: &'a Config,
    issuer: &'a IssuerConfig,
    service: &'a Service,
    /// The browser's cookie, or a new one to set.
    browser: String,
    set_browser: bool,
}

/// `GET|POST /connect/authorize`.
pub async fn authorize(
    snapshot: &Snapshot,
    issuer: &IssuerConfig,
    service: &Service,
    req: Request<Incoming>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let form = if parts.method == Method::POST {
        form::read(&parts.headers, body, issuer.request_body_timeout).await
    } else {
        Form::parse(parts.uri.query().unwrap_or("").as_bytes())
    };
    let ctx = Ctx::new(&snapshot.config, issuer, service, &parts.headers);
    let result = match form {
        Ok(form) => match validate(&snapshot.config, &form) {
            Ok(request) => {
                let session = cookie(&parts.headers, SESSION_COOKIE).map(str::to_owned);
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
pub async fn login(
    snapshot: &Snapshot,
    issuer: &IssuerConfig,
    service: &Service,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let ctx = Ctx::new(&snapshot.config, issuer, service, &parts.headers);
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
pub async fn consent(
    snapshot: &Snapshot,
    issuer: &IssuerConfig,
    service: &Service,
    req: Request<Incoming>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let ctx = Ctx::new(&snapshot.config, issuer, service, &parts.headers);
    let result = match form::read(&parts.headers, body, issuer.request_body_timeout).await {
        Ok(form) => ctx.consent(&form).await,
        Err(_) => Err(Failure::Page(
            StatusCode::BAD_REQUEST,
            "The consent form is malformed.",
        )),
    };
    ctx.answer(result, StatusCode::SEE_OTHER)
}

/// Checks the request: the client and redirect first (failures shown as a page), then the
/// rest (failures sent back to the redirect).
fn validate(config: &Config, form: &Form) -> Result<AuthorizeRequest, Failure> {
    let bad = |message| Failure::Page(StatusCode::BAD_REQUEST, message);
    let client_id = form
        .get("client_id")
        .ok_or_else(|| bad("The sign-in request does not name an application (client_id)."))?;
    let client = config
        .clients
        .get(client_id)
        .ok_or_else(|| bad("The application asking you to sign in is not registered here."))?;
    let redirect_uri = match (form.get("redirect_uri"), client.redirect_uris.as_slice()) {
        (Some(uri), registered) if registered.iter().any(|r| r == uri) => uri.to_owned(),
        (Some(_), _) => {
            return Err(bad(
                "The application asked to send you to an address it has not registered.",
            ))
        }
        (None, [only]) => only.clone(),
        (None, _) => return Err(bad("The sign-in request has no redirect_uri.")),
    };
    let state = form.get("state").map(str::to_owned);
    let fail = |error: &'static str, description: String| {
        Failure::Redirect(Redirect {
            redirect_uri: redirect_uri.clone(),
            state: state.clone(),
            error,
            description,
        })
    };
    if !client
        .allowed_grant_types
        .contains(&GrantType::AuthorizationCode)
    {
        return Err(fail(
            "unauthorized_client",
            "the client may not use authorization_code".into(),
        ));
    }
    match form.get("response_type") {
        Some("code") => {}
        None => return Err(fail("invalid_request", "response_type is missing".into())),
        Some(_) => {
            return Err(fail(
                "unsupported_response_type",
                "only response_type=code is supported".into(),
            ))
        }
    }
    if form.get("response_mode").is_some_and(|m| m != "query") {
        return Err(fail(
            "invalid_request",
            "only response_mode=query is supported".into(),
        ));
    }
    if form.get("request").is_some() {
        return Err(fail(
            "request_not_supported",
            "request objects are not supported".into(),
        ));
    }
    if form.get("request_uri").is_some() {
        return Err(fail(
            "request_uri_not_supported",
            "request_uri is not supported".into(),
        ));
    }
    let code_challenge = pkce(client, form).map_err(|d| fail("invalid_request", d.into()))?;
    let (scopes, resources) = resources::authorize(
        &config.model,
        client,
        form.get("scope"),
        &form.all("resource"),
    )
    .map_err(|refusal| {
        let e = OAuthError::from(refusal);
        fail(e.code(), e.description().to_owned())
    })?;
    let mut prompt = Prompt::default();
    for value in form.get("prompt").unwrap_or("").split(' ') {
        match value {
            "none" => prompt.none = true,
            "login" => prompt.login = true,
            "consent" => prompt.consent = true,
            _ => {}
        }
    }
    if prompt.none && (prompt.login || prompt.consent) {
        return Err(fail(
            "invalid_request",
            "prompt=none cannot be combined with other values".into(),
        ));
    }
    Ok(AuthorizeRequest {
        client_id: client.client_id.clone(),
        redirect_uri,
        state,
        nonce: form.get("nonce").map(str::to_owned),
        code_challenge,
        scopes,
        resources,
        prompt,
    })
}

/// RFC 7636 with S256 only: required unless the client sets `require_pkce = false`.
fn pkce(client: &Client, form: &Form) -> Result<Option<String>, &'static str> {
    match (
        form.get("code_challenge"),
        form.get("code_challenge_method"),
    ) {
        (Some(challenge), Some("S256")) => {
            // BASE64URL(SHA-256(verifier)): 43 characters.
            let valid = challenge.len() == 43
                && challenge
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if valid {
                Ok(Some(challenge.to_owned()))
            } else {
                Err("code_challenge is not a base64url SHA-256 digest")
            }
        }
        (Some(_), _) => Err("code_challenge_method must be S256; plain is not accepted"),
        (None, Some(_)) => Err("code_challenge_method was sent without code_challenge"),
        (None, None) if client.require_pkce => {
            Err("PKCE is required: send code_challenge with code_challenge_method=S256")
        }
        (None, None) => Ok(None),
    }
}

/// Runs a grant store call off the async threads (a commit waits for the disk).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(StoreError::new(e)))
}

impl<'a> Ctx<'a> {
    fn new(
        config: &'a Config,
        issuer: &'a IssuerConfig,
        service: &'a Service,
        headers: &HeaderMap,
    ) -> Self {
        let (browser, set_browser) = match cookie(headers, BROWSER_COOKIE) {
            Some(b) if b.len() == 43 => (b.to_owned(), false),
            _ => (crate::protocol::random_token(), true),
        };
        Ctx {
            config,
            issuer,
            service,
            browser,
            set_browser,
        }
    }

    /// Signs in (or not), asks for consent (or not), and redirects with a code.
    async fn proceed(
        &self,
        request: AuthorizeRequest,
        session_id: Option<&str>,
        status: StatusCode,
    ) -> Result<Response<Body>, Failure> {
        let sessions = &self.service.sessions;
        let session = session_id
            .and_then(|id| Some((id, sessions.session(id)?)))
            .filter(|(_, s)| self.user_by_subject(&s.subject).is_some());
        let Some((session_id, session)) = session.filter(|_| !request.prompt.login) else {
            if request.prompt.none {
                return Err(self.back(&request, "login_required", "the user is not signed in"));
            }
            return self.show_login(request, "", None, StatusCode::OK);
        };
        if request.prompt.consent || self.needs_consent(&request, &session.subject).await? {
            if request.prompt.none {
                return Err(self.back(&request, "consent_required", "the user has not consented"));
            }
            return self.show_consent(request, session_id.to_owned());
        }
        self.issue_code(request, &session.subject, session.auth_time, status)
            .await
    }

    async fn login(&self, form: &Form, peer: SocketAddr) -> Result<Response<Body>, Failure> {
        let (pending_id, pending) = self.pending(form)?;
        let username = form.get("username").unwrap_or("");
        let password = form.get("password").unwrap_or("");
        let sessions = &self.service.sessions;
        let keys = [
            format!("user:{}", username.to_lowercase()),
            format!("addr:{}", peer.ip()),
        ];
        if let Err(wait) = sessions.attempt(&keys, Instant::now()) {
            let message = format!(
                "Too many failed sign-in attempts. Wait {} seconds and try again.",
                wait.as_secs().max(1)
            );
            self.service.metrics.login("slowed");
            tracing::info!(client_id = %pending.request.client_id, "login slowed down after repeated failures");
            return self.show_login_again(&pending_id, &pending, username, &message);
        }
        let user = self.config.users.iter().find(|u| u.username == username);
        let phc = user.map(|u| u.password.clone());
        let Some(verified) = self.service.passwords.verify(phc, password).await else {
            self.service.metrics.login("busy");
            tracing::warn!(client_id = %pending.request.client_id, "login refused: too many password checks waiting");
            let mut page = self.show_login_again(
                &pending_id,
                &pending,
                username,
                "Too many sign-ins are being checked right now. Wait a moment and try again.",
            )?;
            *page.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            page.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return Ok(page);
        };
        let Some(user) = user.filter(|_| verified) else {
            self.service.metrics.login("failed");
            tracing::info!(client_id = %pending.request.client_id, "login failed");
            return self.show_login_again(
                &pending_id,
                &pending,
                username,
                "The username or password is incorrect.",
            );
        };
        sessions.succeeded(&keys);
        sessions.finish(&pending_id);
        self.service.metrics.login("ok");
        let now = numeric_date(SystemTime::now());
        let session_id = sessions
            .sign_in(&user.subject, now)
            .map_err(|_| self.busy())?;
        tracing::info!(client_id = %pending.request.client_id, subject = %user.subject, "user signed in");
        let mut request = pending.request;
        request.prompt.login = false;
        let mut response = self
            .proceed(request, Some(&session_id), StatusCode::SEE_OTHER)
            .await?;
        let cookie = self.cookie(SESSION_COOKIE, &session_id, "/connect", SESSION_LIFETIME);
        response.headers_mut().append(header::SET_COOKIE, cookie);
        Ok(response)
    }

    async fn consent(&self, form: &Form) -> Result<Response<Body>, Failure> {
        let (pending_id, pending) = self.pending(form)?;
        let session = pending
            .session
            .as_deref()
            .and_then(|id| self.service.sessions.session(id))
            .ok_or_else(|| self.expired())?;
        self.service.sessions.finish(&pending_id);
        let request = pending.request;
        if form.get("decision") != Some("allow") {
            tracing::info!(client_id = %request.client_id, subject = %session.subject, "consent denied");
            return Err(self.back(&request, "access_denied", "the user denied access"));
        }
        if form.get("remember") == Some("yes") {
            let grants = self.service.grants.clone();
            let (subject, client_id) = (session.subject.clone(), request.client_id.clone());
            let approved = self.consent_pairs(&request);
            let now = numeric_date(SystemTime::now());
            // Added to what was approved before: consent at one API, then at another, is
            // consent at both.
            blocking(move || {
                grants.remember_consent(&subject, &client_id, &approved, CONSENT_LIFETIME, now)
            })
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

    /// The pending request a form answers, after checking its anti-forgery token and that
    /// it comes from the browser the page was shown in.
    fn pending(&self, form: &Form) -> Result<(String, Pending), Failure> {
        let id = form.get("request").ok_or_else(|| self.expired())?;
        let pending = self
            .service
            .sessions
            .pending(id)
            .ok_or_else(|| self.expired())?;
        let csrf = form.get("csrf").unwrap_or("");
        let same_form = bool::from(subtle::ConstantTimeEq::ct_eq(
            csrf.as_bytes(),
            pending.csrf.as_bytes(),
        ));
        let same_browser = !self.set_browser
            && bool::from(subtle::ConstantTimeEq::ct_eq(
                self.browser.as_bytes(),
                pending.browser.as_bytes(),
            ));
        if !(same_form && same_browser) {
            tracing::info!("a login or consent form failed its anti-forgery check");
            return Err(Failure::Page(
                StatusCode::FORBIDDEN,
                "The form could not be verified. Go back to the application and start again.",
            ));
        }
        Ok((id.to_owned(), pending))
    }

    async fn needs_consent(
        &self,
        request: &AuthorizeRequest,
        subject: &str,
    ) -> Result<bool, Failure> {
        let Some(client) = self.config.clients.get(&request.client_id) else {
            return Ok(false);
        };
        if !client.require_consent {
            return Ok(false);
        }
        let grants = self.service.grants.clone();
        let (subject, client_id) = (subject.to_owned(), request.client_id.clone());
        let given = blocking(move || grants.consent(&subject, &client_id)).await?;
        let asked = self.consent_pairs(request);
        Ok(!given.is_some_and(|c| asked.is_subset(&c.approved)))
    }

    /// The `(scope, API)` pairs `request` asks the user to approve.
    fn consent_pairs(&self, request: &AuthorizeRequest) -> BTreeSet<(String, String)> {
        resources::consent_pairs(&self.config.model, &request.scopes, &request.resources)
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
            },
            redirect_uri: request.redirect_uri.clone(),
            code_challenge: request.code_challenge.clone(),
            nonce: request.nonce.clone(),
        };
        let grants: Grants = self.service.grants.clone();
        let now = numeric_date(SystemTime::now());
        let code = blocking(move || grants.issue_code(grant, CODE_LIFETIME, now)).await?;
        tracing::info!(
            client_id = %request.client_id,
            %subject,
            scope = %request.scopes.join(" "),
            resources = ?request.resources,
            "authorization code issued"
        );
        Ok(self.redirect(
            &request.redirect_uri,
            &[("code", code.as_str())],
            request.state.as_deref(),
            status,
        ))
    }

    fn show_login(
        &self,
        request: AuthorizeRequest,
        username: &str,
        error: Option<&str>,
        status: StatusCode,
    ) -> Result<Response<Body>, Failure> {
        let (id, pending) = self
            .service
            .sessions
            .park(request, None, &self.browser)
            .map_err(|_| self.busy())?;
        self.login_page(&id, &pending, username, error, status)
    }

    fn show_login_again(
        &self,
        id: &str,
        pending: &Pending,
        username: &str,
        error: &str,
    ) -> Result<Response<Body>, Failure> {
        self.login_page(id, pending, username, Some(error), StatusCode::OK)
    }

    fn login_page(
        &self,
        id: &str,
        pending: &Pending,
        username: &str,
        error: Option<&str>,
        status: StatusCode,
    ) -> Result<Response<Body>, Failure> {
        let html = pages::login(
            &self.issuer.url("/connect/authorize/login"),
            id,
            &pending.csrf,
            &pending.request.client_id,
            username,
            error,
        );
        Ok(pages::response(status, html))
    }

    fn show_consent(
        &self,
        request: AuthorizeRequest,
        session_id: String,
    ) -> Result<Response<Body>, Failure> {
        let model = &self.config.model;
        let scopes: Vec<Item> = request
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
        let apis: Vec<Item> = reached
            .iter()
            .map(|name| Item {
                label: model
                    .api_resource(name)
                    .and_then(|r| r.display_name.as_deref())
                    .unwrap_or(name),
                name,
            })
            .collect();
        let client = request.client_id.clone();
        let (id, pending) = self
            .service
            .sessions
            .park(request.clone(), Some(session_id), &self.browser)
            .map_err(|_| self.busy())?;
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

    fn user_by_subject(&self, subject: &str) -> Option<&User> {
        self.config.users.iter().find(|u| u.subject == subject)
    }

    /// An error for the client, sent to its redirect.
    fn back(&self, request: &AuthorizeRequest, error: &'static str, description: &str) -> Failure {
        Failure::Redirect(Redirect {
            redirect_uri: request.redirect_uri.clone(),
            state: request.state.clone(),
            error,
            description: description.to_owned(),
        })
    }

    fn expired(&self) -> Failure {
        Failure::Page(
            StatusCode::BAD_REQUEST,
            "This sign-in page has expired. Go back to the application and start again.",
        )
    }

    fn busy(&self) -> Failure {
        Failure::Page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many sign-ins are in progress. Try again in a minute.",
        )
    }

    /// `redirect_uri` with `params`, `state` and `iss` added to its query.
    fn redirect(
        &self,
        redirect_uri: &str,
        params: &[(&str, &str)],
        state: Option<&str>,
        status: StatusCode,
    ) -> Response<Body> {
        let location = match url::Url::parse(redirect_uri) {
            Ok(mut url) => {
                {
                    let mut query = url.query_pairs_mut();
                    query.extend_pairs(params);
                    if let Some(state) = state {
                        query.append_pair("state", state);
                    }
                    query.append_pair("iss", &self.issuer.issuer);
                }
                url.to_string()
            }
            // Registered redirect URIs were validated as absolute URLs.
            Err(_) => redirect_uri.to_owned(),
        };
        let mut response = Response::new(crate::http::full(""));
        *response.status_mut() = status;
        if let Ok(location) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, location);
        }
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

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
                self.redirect(
                    &r.redirect_uri,
                    &[("error", r.error), ("error_description", &r.description)],
                    r.state.as_deref(),
                    status,
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
            let cookie = self.cookie(
                BROWSER_COOKIE,
                &self.browser,
                "/connect/authorize",
                SESSION_LIFETIME,
            );
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        response
    }

    /// A `Set-Cookie` value: HttpOnly, SameSite=Lax, Secure when the issuer is https.
    fn cookie(&self, name: &str, value: &str, path: &str, max_age: Duration) -> HeaderValue {
        let secure = if self.issuer.issuer.starts_with("https://") || self.issuer.tls.is_some() {
            "; Secure"
        } else {
            ""
        };
        let cookie = format!(
            "{name}={value}; Path={}{path}; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
            self.issuer.base_path,
            max_age.as_secs()
        );
        // Names, random values and the validated base path are header-safe.
        HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// The value of cookie `name`, from any `Cookie` header.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}
