//! The HTML pages of `/connect/authorize`: login, consent and errors. Plain, server-rendered,
//! accessible (labelled fields, one heading, alerts announced), no script, and framed by
//! nobody.

use std::fmt::Write;

use http::{header, HeaderValue, Response, StatusCode};

use crate::http::{full, Body};

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem;line-height:1.5;color:#1a1a1a}\
label{display:block;margin-top:1rem;font-weight:600}\
input[type=text],input[type=password]{width:100%;padding:.5rem;font-size:1rem;box-sizing:border-box}\
button{margin-top:1.25rem;margin-right:.5rem;padding:.5rem 1.25rem;font-size:1rem}\
[role=alert]{background:#fdecea;border:1px solid #b3261e;padding:.5rem .75rem;margin-top:1rem}\
:focus{outline:3px solid #1a5fb4;outline-offset:2px}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n{body}</main>\n</body>\n</html>\n",
        title = escape(title)
    )
}

/// The login form for pending request `pending`.
pub fn login(
    action: &str,
    pending: &str,
    csrf: &str,
    client: &str,
    username: &str,
    error: Option<&str>,
) -> String {
    let mut body = format!(
        "<h1>Sign in</h1>\n<p>to continue to <strong>{}</strong></p>\n",
        escape(client)
    );
    if let Some(error) = error {
        let _ = writeln!(body, "<p role=\"alert\" id=\"error\">{}</p>", escape(error));
    }
    let described = if error.is_some() {
        " aria-describedby=\"error\""
    } else {
        ""
    };
    let _ = write!(
        body,
        "<form method=\"post\" action=\"{action}\">\n\
         <input type=\"hidden\" name=\"request\" value=\"{pending}\">\n\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\n\
         <label for=\"username\">Username</label>\n\
         <input type=\"text\" id=\"username\" name=\"username\" value=\"{username}\" autocomplete=\"username\" autocapitalize=\"none\" spellcheck=\"false\" required autofocus{described}>\n\
         <label for=\"password\">Password</label>\n\
         <input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" required{described}>\n\
         <button type=\"submit\">Sign in</button>\n\
         </form>\n",
        action = escape(action),
        pending = escape(pending),
        csrf = escape(csrf),
        username = escape(username),
    );
    page("Sign in", &body)
}

/// One line of the consent page: a scope or API and its description.
pub struct Item<'a> {
    /// Shown to the user.
    pub label: &'a str,
    /// The technical name, shown small.
    pub name: &'a str,
}

/// The consent form for pending request `pending`.
pub fn consent(
    action: &str,
    pending: &str,
    csrf: &str,
    client: &str,
    scopes: &[Item<'_>],
    apis: &[Item<'_>],
) -> String {
    let mut body = format!(
        "<h1>Allow access?</h1>\n<p><strong>{}</strong> asks for:</p>\n<ul>\n",
        escape(client)
    );
    for item in scopes {
        let _ = writeln!(
            body,
            "<li>{} <small>({})</small></li>",
            escape(item.label),
            escape(item.name)
        );
    }
    body.push_str("</ul>\n");
    if !apis.is_empty() {
        body.push_str("<p>at these APIs:</p>\n<ul>\n");
        for item in apis {
            let _ = writeln!(
                body,
                "<li>{} <small>({})</small></li>",
                escape(item.label),
                escape(item.name)
            );
        }
        body.push_str("</ul>\n");
    }
    let _ = write!(
        body,
        "<form method=\"post\" action=\"{action}\">\n\
         <input type=\"hidden\" name=\"request\" value=\"{pending}\">\n\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\n\
         <p><input type=\"checkbox\" id=\"remember\" name=\"remember\" value=\"yes\" checked> <label for=\"remember\" style=\"display:inline\">Remember my decision</label></p>\n\
         <button type=\"submit\" name=\"decision\" value=\"allow\">Allow</button>\n\
         <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button>\n\
         </form>\n",
        action = escape(action),
        pending = escape(pending),
        csrf = escape(csrf),
    );
    page("Allow access?", &body)
}

/// An error shown to the user instead of a redirect (unknown client, unregistered redirect).
pub fn error(message: &str) -> String {
    page(
        "Sign-in error",
        &format!(
            "<h1>Sign-in error</h1>\n<p role=\"alert\">{}</p>\n",
            escape(message)
        ),
    )
}

/// An HTML response: never cached, never framed, no script, no referrer.
pub fn response(status: StatusCode, html: String) -> Response<Body> {
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

    #[test]
    fn user_text_is_escaped() {
        let html = login("/a", "p", "c", "<script>", "\"><img src=x>", Some("a&b"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("&quot;&gt;&lt;img src=x&gt;"));
        assert!(html.contains("a&amp;b"));
        assert!(!html.contains("<script>"));
    }
}
