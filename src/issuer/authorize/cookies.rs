//! The two cookies of the sign-in pages: the session, and the browser cookie that ties a login
//! or consent form to the browser it was shown in. Read and written with the `cookie` crate.

use std::time::Duration;

use cookie::{Cookie, SameSite};
use http::{header, HeaderMap, HeaderValue};

/// The session cookie.
pub(super) const SESSION: &str = "isogate_session";
/// The cookie that ties a login or consent form to the browser it was shown in.
pub(super) const BROWSER: &str = "isogate_browser";

/// The value of cookie `name`, from any `Cookie` header; the first one when sent twice.
pub(super) fn get<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        // `split_parse` borrows from the header: the value is a slice of it.
        .and_then(|c| c.value_raw())
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Lax`, for `path`, for `max_age`; `Secure` when
/// the issuer is served over https.
pub(super) fn set(
    name: &'static str,
    value: &str,
    path: String,
    max_age: Duration,
    secure: bool,
) -> HeaderValue {
    let max_age = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
    let cookie = Cookie::build((name, value))
        .path(path)
        .max_age(cookie::time::Duration::seconds(max_age))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure)
        .build();
    // Names, random values and the validated base path are header-safe.
    HeaderValue::from_str(&cookie.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_is_found_in_any_cookie_header() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; isogate_session=s1"),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_static("isogate_browser=b1"),
        );
        assert_eq!(get(&h, SESSION), Some("s1"));
        assert_eq!(get(&h, BROWSER), Some("b1"));
        assert_eq!(get(&h, "a"), Some("1"));
        assert_eq!(get(&h, "isogate"), None);
        assert_eq!(get(&HeaderMap::new(), SESSION), None);
    }

    #[test]
    fn set_cookies_are_http_only_lax_and_secure_over_https() {
        let plain = set(
            SESSION,
            "v",
            "/connect".into(),
            Duration::from_secs(60),
            false,
        );
        assert_eq!(
            plain,
            "isogate_session=v; HttpOnly; SameSite=Lax; Path=/connect; Max-Age=60"
        );
        let secure = set(
            BROWSER,
            "v",
            "/t/connect/authorize".into(),
            Duration::from_secs(1),
            true,
        );
        let text = secure.to_str().unwrap();
        assert!(text.contains("; Secure"), "{text}");
        assert!(text.contains("Path=/t/connect/authorize"), "{text}");
    }
}
