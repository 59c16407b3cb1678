//! A route's `host`: a DNS name or a bracketed IP literal, lower case, without its port.

use std::fmt;

/// The host a route is pinned to (`[[routes]] host`), as requests are compared against it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Host(String);

impl Host {
    /// The host of an authority (`API.example.com:8443` → `api.example.com`, `[::1]:8080` →
    /// `[::1]`); `None` when it is empty or malformed (userinfo, a non-numeric port, an
    /// unbracketed IPv6 address, characters outside a DNS name or IP literal).
    pub fn of(authority: &str) -> Option<Host> {
        split(authority).map(|host| Host(host.to_ascii_lowercase()))
    }

    /// Whether the request authority `authority` (a `Host` header or `:authority`, any case,
    /// with or without a port) names this host. Does not allocate.
    pub fn matches(&self, authority: &str) -> bool {
        split(authority).is_some_and(|host| host.eq_ignore_ascii_case(&self.0))
    }

    /// The host, lower case.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// [`Host::of`] without the allocation: the host as written.
pub(crate) fn split(authority: &str) -> Option<&str> {
    let (host, port) = if authority.starts_with('[') {
        let (host, port) = authority.split_at(authority.find(']')? + 1);
        let inside = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
        let ok = inside.is_some_and(|inside| {
            !inside.is_empty()
                && inside
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        });
        (ok.then_some(host)?, port)
    } else {
        let (host, port) = authority.split_at(authority.find(':').unwrap_or(authority.len()));
        let ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
        (ok.then_some(host)?, port)
    };
    let port_ok = port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|digits| digits.bytes().all(|b| b.is_ascii_digit()));
    port_ok.then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_is_lower_case_without_its_port() {
        for (input, want) in [
            ("API.example.com:8443", Some("api.example.com")),
            ("localhost", Some("localhost")),
            ("127.0.0.1:80", Some("127.0.0.1")),
            ("[::1]:8080", Some("[::1]")),
            ("[FE80::1]", Some("[fe80::1]")),
            ("[::ffff:192.0.2.1]:443", Some("[::ffff:192.0.2.1]")),
            ("", None),
            (":80", None),
            ("[]", None),
            ("[::1", None),
            ("::1", None),
            ("a:b", None),
            ("a b", None),
            ("user@host", None),
            ("[::1]:x", None),
            ("[zz]", None),
            ("[::1/64]", None),
            ("[a b]", None),
        ] {
            assert_eq!(
                Host::of(input).as_ref().map(Host::as_str),
                want,
                "{input:?}"
            );
        }
    }

    #[test]
    fn an_authority_matches_without_case_or_port() {
        let host = Host::of("api.example.com").unwrap();
        for yes in ["api.example.com", "API.Example.COM", "api.example.com:8443"] {
            assert!(host.matches(yes), "{yes}");
        }
        for no in [
            "api.example.org",
            "api.example.com.",
            "x.api.example.com",
            "",
            "api.example.com:x",
        ] {
            assert!(!host.matches(no), "{no}");
        }
    }
}
