//! The login form: a sign-in attempt is counted before its password is checked, the check
//! waits for a turn ([`crate::issuer::passwords`]), and a success signs the browser in.

use std::net::SocketAddr;

use http::{header, HeaderValue, Response, StatusCode};

use super::{cookies, AuthorizeRequest, Ctx, Failure};
use crate::http::Body;
use crate::issuer::form::Form;
use crate::issuer::pages;
use crate::issuer::session::Pending;

impl Ctx<'_> {
    pub(super) async fn login(
        &self,
        form: &Form,
        peer: SocketAddr,
    ) -> Result<Response<Body>, Failure> {
        let (pending_id, pending) = self.pending(form).await?;
        let username = form.get("username").unwrap_or("");
        let password = form.get("password").unwrap_or("");
        let sessions = &self.service.sessions;
        let keys = [
            format!("user:{}", username.to_lowercase()),
            format!("addr:{}", peer.ip()),
        ];
        if let Err(wait) = sessions.attempt(&keys, self.now).await? {
            let message = format!(
                "Too many failed sign-in attempts. Wait {} seconds and try again.",
                wait.as_secs().max(1)
            );
            self.service.metrics.login("slowed");
            tracing::info!(client_id = %pending.request.client_id, %peer, "login slowed down after repeated failures");
            return self.show_login_again(&pending_id, &pending, username, &message);
        }
        let user = self.config.users.by_username(username);
        let phc = user.map(|u| u.password.clone());
        let Some(verified) = self.service.passwords.verify(phc, password).await else {
            return self.too_busy(&pending_id, &pending, username);
        };
        let Some(user) = user.filter(|_| verified) else {
            self.service.metrics.login("failed");
            tracing::info!(client_id = %pending.request.client_id, %peer, "login failed");
            return self.show_login_again(
                &pending_id,
                &pending,
                username,
                "The username or password is incorrect.",
            );
        };
        sessions.succeeded(&keys).await?;
        sessions.finish(&pending_id).await?;
        self.service.metrics.login("ok");
        let session_id = sessions.sign_in(&user.subject, self.now).await?;
        tracing::info!(client_id = %pending.request.client_id, subject = %user.subject, %peer, "user signed in");
        let mut request = pending.request;
        request.prompt.login = false;
        let mut response = self
            .proceed(request, Some(&session_id), StatusCode::SEE_OTHER)
            .await?;
        let cookie = self.cookie(cookies::SESSION, &session_id, "/connect");
        response.headers_mut().append(header::SET_COOKIE, cookie);
        Ok(response)
    }

    /// The login page again, 503 with `Retry-After`: no password check had a turn.
    fn too_busy(
        &self,
        pending_id: &str,
        pending: &Pending,
        username: &str,
    ) -> Result<Response<Body>, Failure> {
        self.service.metrics.login("busy");
        tracing::warn!(client_id = %pending.request.client_id, "login refused: too many password checks waiting");
        let mut page = self.show_login_again(
            pending_id,
            pending,
            username,
            "Too many sign-ins are being checked right now. Wait a moment and try again.",
        )?;
        *page.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        page.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        Ok(page)
    }

    /// The pending request a form answers, after checking its anti-forgery token and that
    /// it comes from the browser the page was shown in.
    pub(super) async fn pending(&self, form: &Form) -> Result<(String, Pending), Failure> {
        let id = form.get("request").ok_or_else(Failure::expired)?;
        let pending = self
            .service
            .sessions
            .pending(id, self.now)
            .await?
            .ok_or_else(Failure::expired)?;
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

    pub(super) async fn show_login(
        &self,
        request: AuthorizeRequest,
        username: &str,
        error: Option<&str>,
        status: StatusCode,
    ) -> Result<Response<Body>, Failure> {
        let (id, pending) = self
            .service
            .sessions
            .park(request, None, &self.browser, self.now)
            .await?;
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
            &crate::issuer::document::shown_name(&pending.request.client_id),
            username,
            error,
        );
        Ok(pages::response(status, html))
    }
}
