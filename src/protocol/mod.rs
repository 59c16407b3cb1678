//! What both roles speak, owned by neither: the `Authorization` header and RFC 6750
//! challenges, OAuth's scope characters, the headers that change a request's meaning
//! upstream, and the random tokens every grant, session and form is named by.
//!
//! The token service and the gateway each import this module; neither imports the other.

pub(crate) mod authorization;
pub(crate) mod challenge;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

pub(crate) use challenge::Challenge;

/// 256 random bits, base64url (43 characters): a code, a refresh token, a family, a session,
/// a pending sign-in, an anti-forgery token.
pub(crate) fn random_token() -> String {
    random_b64::<32>()
}

/// `N` random bytes, base64url: a `jti` or a registered `client_id` (16).
pub(crate) fn random_b64<const N: usize>() -> String {
    let mut bytes = [0u8; N];
    random_fill(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Fills `bytes` from aws-lc's generator.
pub(crate) fn random_fill(bytes: &mut [u8]) {
    // The system RNG failing is not recoverable; aws-lc aborts rather than return weak bytes.
    aws_lc_rs::rand::fill(bytes).unwrap_or_else(|_| panic!("the system RNG failed"));
}

/// RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
/// Whether `url` is plain `http` to this machine: to a loopback IP literal (`127.0.0.1`,
/// `[::1]`), or with `or_localhost` also to the name `localhost` (RFC 8252 §7.3 lets only the IP
/// literals take any port).
pub(crate) fn is_loopback_http(url: &url::Url, or_localhost: bool) -> bool {
    url.scheme() == "http"
        && match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(name)) => or_localhost && name == "localhost",
            None => false,
        }
}

pub(crate) fn is_scope_token(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E))
}

/// Request headers that make upstream frameworks read another path or method than the
/// request's (IIS and Symfony rewrites, method overrides): the gateway drops them unless a
/// route keeps them (`keep_headers`).
pub(crate) const REWRITING: [&str; 5] = [
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_tokens_are_43_base64url_characters_and_differ() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 43);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_ne!(a, b);
    }

    #[test]
    fn scope_tokens_are_exactly_rfc_6749s_characters() {
        for b in 0..=u8::MAX {
            let allowed = b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b);
            let text = [b'a', b, b'z'];
            let valid = std::str::from_utf8(&text).is_ok_and(is_scope_token);
            assert_eq!(valid, allowed, "byte {b:#04x}");
        }
        assert!(!is_scope_token(""));
        assert!(is_scope_token("invoices:read"));
    }
}
