//! `WWW-Authenticate` challenges of RFC 6750 §3 (and RFC 9728 §5.1's `resource_metadata`),
//! built in this one place for the gateway and the userinfo endpoint.

use http::HeaderValue;

/// One `Bearer` or `DPoP` challenge; absent parameters are left out.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Challenge<'a> {
    /// A `DPoP` challenge (RFC 9449 §7.1) rather than a `Bearer` one.
    pub dpop: bool,
    /// `algs`: the proof algorithms accepted, space-delimited (DPoP only).
    pub algs: Option<&'a str>,
    /// `realm`.
    pub realm: Option<&'a str>,
    /// `error`: an RFC 6750 code (`invalid_request`, `invalid_token`, `insufficient_scope`).
    pub error: Option<&'a str>,
    /// `error_description`, for the developer.
    pub description: Option<&'a str>,
    /// `scope`: what would do, space-delimited.
    pub scope: Option<&'a str>,
    /// `resource_metadata`: the protected resource's RFC 9728 document.
    pub resource_metadata: Option<&'a str>,
}

impl Challenge<'_> {
    /// The header value. Each parameter is a quoted-string of printable ASCII: a `"` or `\`
    /// becomes `'`, anything else unprintable `?`, so no value can end the string early.
    pub(crate) fn header(&self) -> HeaderValue {
        let mut text = String::from(if self.dpop { "DPoP" } else { "Bearer" });
        let params = [
            ("realm", self.realm),
            ("algs", self.algs),
            ("error", self.error),
            ("error_description", self.description),
            ("scope", self.scope),
            ("resource_metadata", self.resource_metadata),
        ];
        let mut first = true;
        for (name, value) in params {
            let Some(value) = value else { continue };
            text.push_str(if first { " " } else { ", " });
            first = false;
            text.push_str(name);
            text.push_str("=\"");
            text.extend(value.chars().map(|c| match c {
                '"' | '\\' => '\'',
                c if c.is_ascii_graphic() || c == ' ' => c,
                _ => '?',
            }));
            text.push('"');
        }
        // Printable ASCII only, by construction.
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_quoted_safely_and_absent_ones_left_out() {
        assert_eq!(Challenge::default().header(), "Bearer");
        let challenge = Challenge {
            realm: Some("isogate"),
            error: Some("invalid_token"),
            description: Some("bad \"quote\" \\ \n é"),
            scope: None,
            resource_metadata: Some("http://h/.well-known/oauth-protected-resource/x"),
            ..Challenge::default()
        };
        assert_eq!(
            challenge.header(),
            "Bearer realm=\"isogate\", error=\"invalid_token\", error_description=\"bad 'quote' ' ? ?\", resource_metadata=\"http://h/.well-known/oauth-protected-resource/x\""
        );
        let scope = Challenge {
            error: Some("insufficient_scope"),
            scope: Some("read write"),
            ..Challenge::default()
        };
        assert_eq!(
            scope.header(),
            "Bearer error=\"insufficient_scope\", scope=\"read write\""
        );
        let dpop = Challenge {
            dpop: true,
            algs: Some("ES256 EdDSA"),
            error: Some("invalid_dpop_proof"),
            ..Challenge::default()
        };
        assert_eq!(
            dpop.header(),
            "DPoP algs=\"ES256 EdDSA\", error=\"invalid_dpop_proof\""
        );
    }
}
