//! SPEC §4 enforcement: the bearer token in the request, then what the route asks of it.
//! Every refusal becomes a response with an RFC 6750 challenge in one place, [`Denial::response`].

use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};

use crate::config::Route;
use crate::http::{json, Body};
use crate::jwt::verify::Claims;
use crate::resources::{ApiResource, Model};

/// Why a request is not forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// No bearer token was sent (401, bare challenge).
    #[error("no bearer token")]
    NoToken,
    /// The Authorization header is malformed or repeated (400 `invalid_request`).
    #[error("invalid_request: {0}")]
    InvalidRequest(&'static str),
    /// The token is not acceptable (401 `invalid_token`).
    #[error("invalid_token: {0}")]
    InvalidToken(String),
    /// The token lacks a scope the route asks for (403 `insufficient_scope`).
    #[error("insufficient_scope: needs one of {scope}")]
    InsufficientScope {
        /// The scopes any one of which would do, space-delimited.
        scope: String,
    },
}

impl Denial {
    /// The reason as logged and counted: the RFC error code, or `no_token`.
    pub fn code(&self) -> &'static str {
        match self {
            Denial::NoToken => "no_token",
            Denial::InvalidRequest(_) => "invalid_request",
            Denial::InvalidToken(_) => "invalid_token",
            Denial::InsufficientScope { .. } => "insufficient_scope",
        }
    }

    fn description(&self) -> Option<String> {
        match self {
            Denial::NoToken => None,
            Denial::InvalidRequest(d) => Some((*d).to_owned()),
            Denial::InvalidToken(d) => Some(d.clone()),
            Denial::InsufficientScope { .. } => {
                Some("the token has none of the scopes this request needs".to_owned())
            }
        }
    }

    /// The response with its `WWW-Authenticate` challenge; `metadata` is the route's RFC 9728
    /// document URL.
    pub fn response(&self, metadata: &str) -> Response<Body> {
        let status = match self {
            Denial::NoToken | Denial::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            Denial::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Denial::InsufficientScope { .. } => StatusCode::FORBIDDEN,
        };
        let mut challenge = String::from("Bearer realm=\"isogate\"");
        let description = self.description();
        if !matches!(self, Denial::NoToken) {
            challenge.push_str(&format!(", error=\"{}\"", self.code()));
        }
        if let Some(d) = &description {
            challenge.push_str(&format!(", error_description=\"{}\"", quotable(d)));
        }
        if let Denial::InsufficientScope { scope } = self {
            challenge.push_str(&format!(", scope=\"{}\"", quotable(scope)));
        }
        challenge.push_str(&format!(", resource_metadata=\"{}\"", quotable(metadata)));
        let mut response = match &description {
            Some(d) => json(
                status,
                &serde_json::json!({"error": self.code(), "error_description": d}),
            ),
            None => json(status, &serde_json::json!({"error": "unauthorized"})),
        };
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

/// A quoted-string body: printable ASCII without `"` and `\`.
fn quotable(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            c if c.is_ascii_graphic() || c == ' ' => c,
            _ => '?',
        })
        .collect()
}

/// SPEC §4 step 1: exactly one `Authorization: Bearer <token>` header, and its token.
pub fn bearer(headers: &HeaderMap) -> Result<&str, Denial> {
    credential(headers).and_then(token)
}

/// The first half of [`bearer`]: the bytes after `Bearer ` in the one `Authorization` header,
/// not yet checked. The gateway looks these up in its verified-token cache before checking them
/// with [`token`]: a cached token passed that check when it was verified.
pub fn credential(headers: &HeaderMap) -> Result<&[u8], Denial> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(Denial::NoToken);
    };
    if values.next().is_some() {
        return Err(Denial::InvalidRequest("more than one Authorization header"));
    }
    let bytes = value.as_bytes();
    let (scheme, credential) = match bytes.iter().position(|&b| b == b' ') {
        Some(space) => (&bytes[..space], &bytes[space + 1..]),
        None => (bytes, &[][..]),
    };
    if scheme.eq_ignore_ascii_case(b"bearer") {
        Ok(credential)
    } else if value.to_str().is_err() {
        Err(Denial::InvalidRequest("malformed Authorization header"))
    } else {
        // Another scheme (e.g. Basic) carries no bearer token (RFC 6750 §3.1).
        Err(Denial::NoToken)
    }
}

/// The second half of [`bearer`]: `credential` as a token when it is a `b64token`.
pub fn token(credential: &[u8]) -> Result<&str, Denial> {
    // A b64token holds only ASCII, so it is also valid UTF-8.
    if is_b64token(credential) {
        return std::str::from_utf8(credential)
            .map_err(|_| Denial::InvalidRequest("malformed bearer token"));
    }
    // What `HeaderValue::to_str` accepts: the rest of the header is `Bearer `.
    let visible = credential
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b));
    Err(Denial::InvalidRequest(if visible {
        "malformed bearer token"
    } else {
        "malformed Authorization header"
    }))
}

/// RFC 6750 §2.1: `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(token: &[u8]) -> bool {
    let padding = token.iter().rev().take_while(|&&b| b == b'=').count();
    let body = &token[..token.len() - padding];
    // Without a branch per byte, so that the compiler checks a chunk's bytes side by side.
    !body.is_empty()
        && body
            .chunks(32)
            .all(|chunk| chunk.iter().fold(true, |ok, &b| ok & is_b64token_char(b)))
}

/// Whether `b` may appear in a `b64token` before its padding.
#[inline]
fn is_b64token_char(b: u8) -> bool {
    // `| 0x20` lower-cases ASCII letters and maps nothing else into `a..=z`.
    ((b | 0x20).wrapping_sub(b'a') < 26)
        | (b.wrapping_sub(b'0') < 10)
        | (b == b'-')
        | (b == b'.')
        | (b == b'_')
        | (b == b'~')
        | (b == b'+')
        | (b == b'/')
}

/// SPEC §4 step 5: `aud` names the route's resource; an isolated resource must be the only one.
pub fn audience(claims: &Claims, resource: &ApiResource) -> Result<(), Denial> {
    if !claims.aud.contains(&resource.name) {
        return Err(Denial::InvalidToken(
            "the token is not meant for this resource".into(),
        ));
    }
    if resource.isolated && claims.aud.iter().any(|a| *a != resource.name) {
        return Err(Denial::InvalidToken(
            "this resource accepts only tokens minted for it alone".into(),
        ));
    }
    Ok(())
}

/// SPEC §4 step 6: at least one scope the route asks for this method, counting only scopes
/// the resource lists (a parameterized scope by its name).
pub fn scope(
    claims: &Claims,
    route: &Route,
    resource: &ApiResource,
    model: &Model,
    method: &Method,
) -> Result<(), Denial> {
    let wanted: &[String] = if route.scopes.is_empty() {
        &resource.scopes
    } else {
        let rule = |m: &str| route.scopes.get(m);
        // HEAD reads what GET reads: it needs what GET needs unless the route names it.
        rule(method.as_str())
            .or_else(|| (method == Method::HEAD).then(|| rule("GET")).flatten())
            .or_else(|| rule("*"))
            .map_or(&[], Vec::as_slice)
    };
    let held = claims.scope.iter().map(|s| {
        model
            .api_scope_of(s)
            .map_or(s.as_str(), |a| a.name.as_str())
    });
    let mut held = held.filter(|name| resource.lists(name));
    if held.any(|name| wanted.iter().any(|w| w == name)) {
        Ok(())
    } else {
        Err(Denial::InsufficientScope {
            scope: wanted.join(" "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte value, in every position of a chunk and past it: exactly RFC 6750's set.
    #[test]
    fn b64token_characters_are_exactly_rfc_6750s() {
        for b in 0..=u8::MAX {
            let allowed =
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
            assert_eq!(is_b64token_char(b), allowed, "byte {b:#04x}");
            for at in [0, 17, 31, 32, 63, 99] {
                let mut token = vec![b'a'; 100];
                token[at] = b;
                let expected = allowed || (b == b'=' && at == 99);
                assert_eq!(is_b64token(&token), expected, "byte {b:#04x} at {at}");
            }
        }
    }

    #[test]
    fn bearer_header_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), Err(Denial::NoToken));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bEaReR abc.def-_~+/=="),
        );
        assert_eq!(bearer(&h), Ok("abc.def-_~+/=="));
        for bad in [
            "Bearer",
            "Bearer ",
            "Bearer  abc",
            "Bearer a b",
            "Bearer ==",
            "Bearer a\"b",
        ] {
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(bad));
            assert!(
                matches!(bearer(&h), Err(Denial::InvalidRequest(_))),
                "{bad}"
            );
        }
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic Y2xpZW50OnNlY3JldA=="),
        );
        assert_eq!(bearer(&h), Err(Denial::NoToken));
        h.append(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert!(matches!(bearer(&h), Err(Denial::InvalidRequest(_))));
        // Bytes `to_str` refuses, whatever the scheme: the header itself is malformed.
        for bad in [&b"Bearer abc\xff"[..], b"Basic \xe9t\xe9"] {
            h.insert(
                header::AUTHORIZATION,
                HeaderValue::from_bytes(bad).expect("obs-text is a header value"),
            );
            assert_eq!(
                bearer(&h),
                Err(Denial::InvalidRequest("malformed Authorization header"))
            );
        }
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer a b"),
        );
        assert_eq!(
            bearer(&h),
            Err(Denial::InvalidRequest("malformed bearer token"))
        );
    }

    #[test]
    fn challenges_quote_safely() {
        let r = Denial::InvalidToken("bad \"quote\"\n".into())
            .response("http://h/.well-known/oauth-protected-resource/x");
        let c = r.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert_eq!(c, "Bearer realm=\"isogate\", error=\"invalid_token\", error_description=\"bad 'quote'?\", resource_metadata=\"http://h/.well-known/oauth-protected-resource/x\"");
    }
}
