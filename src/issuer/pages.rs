//! The HTML pages of `/connect/authorize`: login, consent and errors. Plain, server-rendered,
//! accessible (labelled fields, one heading, alerts announced), no script, and framed by
//! nobody. Rendered with maud, which escapes every interpolated value: no value reaches the
//! page as markup.

use http::{header, HeaderValue, Response, StatusCode};
use maud::{html, Markup, DOCTYPE};

use crate::http::{full, Body};

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem;line-height:1.5;color:#1a1a1a}\
label{display:block;margin-top:1rem;font-weight:600}\
input[type=text],input[type=password]{width:100%;padding:.5rem;font-size:1rem;box-sizing:border-box}\
button{margin-top:1.25rem;margin-right:.5rem;padding:.5rem 1.25rem;font-size:1rem}\
[role=alert]{background:#fdecea;border:1px solid #b3261e;padding:.5rem .75rem;margin-top:1rem}\
:focus{outline:3px solid #1a5fb4;outline-offset:2px}";

fn page(title: &str, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (maud::PreEscaped(STYLE)) }
            }
            body { main { (body) } }
        }
    }
    .into_string()
}

/// The login form for pending request `pending`.
pub(super) fn login(
    action: &str,
    pending: &str,
    csrf: &str,
    client: &str,
    username: &str,
    error: Option<&str>,
) -> String {
    let described = error.map(|_| "error");
    page(
        "Sign in",
        html! {
            h1 { "Sign in" }
            p { "to continue to " strong { (client) } }
            @if let Some(error) = error {
                p role="alert" id="error" { (error) }
            }
            form method="post" action=(action) {
                input type="hidden" name="request" value=(pending);
                input type="hidden" name="csrf" value=(csrf);
                label for="username" { "Username" }
                input type="text" id="username" name="username" value=(username)
                    autocomplete="username" autocapitalize="none" spellcheck="false" required autofocus
                    aria-describedby=[described];
                label for="password" { "Password" }
                input type="password" id="password" name="password"
                    autocomplete="current-password" required aria-describedby=[described];
                button type="submit" { "Sign in" }
            }
        },
    )
}

/// One line of the consent page: a scope or API and its description.
pub(super) struct Item<'a> {
    /// Shown to the user.
    pub label: &'a str,
    /// The technical name, shown small.
    pub name: &'a str,
}

/// The consent form for pending request `pending`.
pub(super) fn consent(
    action: &str,
    pending: &str,
    csrf: &str,
    client: &str,
    scopes: &[Item<'_>],
    apis: &[Item<'_>],
) -> String {
    page(
        "Allow access?",
        html! {
            h1 { "Allow access?" }
            p { strong { (client) } " asks for:" }
            ul {
                @for item in scopes { li { (item.label) " " small { "(" (item.name) ")" } } }
            }
            @if !apis.is_empty() {
                p { "at these APIs:" }
                ul {
                    @for item in apis { li { (item.label) " " small { "(" (item.name) ")" } } }
                }
            }
            form method="post" action=(action) {
                input type="hidden" name="request" value=(pending);
                input type="hidden" name="csrf" value=(csrf);
                p {
                    input type="checkbox" id="remember" name="remember" value="yes" checked;
                    " "
                    label for="remember" style="display:inline" { "Remember my decision" }
                }
                button type="submit" name="decision" value="allow" { "Allow" }
                button type="submit" name="decision" value="deny" { "Deny" }
            }
        },
    )
}

/// An error shown to the user instead of a redirect (unknown client, unregistered redirect).
pub(super) fn error(message: &str) -> String {
    page(
        "Sign-in error",
        html! {
            h1 { "Sign-in error" }
            p role="alert" { (message) }
        },
    )
}

/// An HTML response: never cached, never framed, no script, no referrer.
pub(super) fn response(status: StatusCode, html: String) -> Response<Body> {
    let mut response = Response::new(full(html));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "\"><script>alert(1)</script>&'";
    const ESCAPED: &str = "&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&amp;'";

    /// Every value a page shows, one at a time, comes out escaped.
    #[test]
    fn every_interpolated_value_is_escaped() {
        let login_pages = [
            login(HOSTILE, "p", "c", "client", "user", None),
            login("/a", HOSTILE, "c", "client", "user", None),
            login("/a", "p", HOSTILE, "client", "user", None),
            login("/a", "p", "c", HOSTILE, "user", None),
            login("/a", "p", "c", "client", HOSTILE, None),
            login("/a", "p", "c", "client", "user", Some(HOSTILE)),
        ];
        let item = [Item {
            label: HOSTILE,
            name: "n",
        }];
        let name = [Item {
            label: "l",
            name: HOSTILE,
        }];
        let consent_pages = [
            consent(HOSTILE, "p", "c", "client", &[], &[]),
            consent("/a", HOSTILE, "c", "client", &[], &[]),
            consent("/a", "p", HOSTILE, "client", &[], &[]),
            consent("/a", "p", "c", HOSTILE, &[], &[]),
            consent("/a", "p", "c", "client", &item, &[]),
            consent("/a", "p", "c", "client", &name, &[]),
            consent("/a", "p", "c", "client", &[], &item),
            consent("/a", "p", "c", "client", &[], &name),
        ];
        for html in login_pages
            .iter()
            .chain(&consent_pages)
            .chain([&error(HOSTILE)])
        {
            assert!(html.contains(ESCAPED), "{html}");
            assert!(!html.contains("<script>"), "{html}");
        }
    }

    #[test]
    fn the_login_form_carries_its_hidden_fields_and_labels() {
        let html = login(
            "/connect/authorize/login",
            "req-1",
            "csrf-1",
            "web",
            "alice",
            Some("Wrong."),
        );
        for part in [
            "<form method=\"post\" action=\"/connect/authorize/login\">",
            "<input type=\"hidden\" name=\"request\" value=\"req-1\">",
            "<input type=\"hidden\" name=\"csrf\" value=\"csrf-1\">",
            "<label for=\"username\">Username</label>",
            "value=\"alice\"",
            "aria-describedby=\"error\"",
            "<p role=\"alert\" id=\"error\">Wrong.</p>",
        ] {
            assert!(html.contains(part), "{part} in {html}");
        }
        assert!(!login("/a", "p", "c", "web", "", None).contains("aria-describedby"));
    }
}
