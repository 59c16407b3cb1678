//! The one `Authorization` header of a request (RFC 9110 §11.6.2): its scheme, and the
//! credentials of the two schemes isogate reads, `Bearer` (RFC 6750) and `Basic` (RFC 7617
//! with RFC 6749 §2.3.1's form-encoded halves).
//!
//! Scheme names compare case-insensitively. A bearer credential is handed out as the bytes
//! after the scheme, unchecked: the gateway looks them up in its verified-token cache first
//! (a cached token passed [`bearer_token`] when it was verified), so the common request checks
//! nothing twice.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::{header, HeaderMap};

/// The credentials of the `Authorization` header, by scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Credentials<'h> {
    /// `Bearer <credential>`: the bytes after `Bearer `, not yet checked.
    Bearer(&'h [u8]),
    /// `DPoP <credential>` (RFC 9449 §7.1): the bytes after `DPoP `, not yet checked; the
    /// same `b64token` syntax as a bearer token.
    Dpop(&'h [u8]),
    /// `Basic <credential>`: the bytes after `Basic `, not yet decoded ([`basic`]).
    Basic(&'h [u8]),
    /// Another scheme (e.g. `Digest`), in a well-formed header.
    Other,
}

/// Why the header cannot be read. The messages fit an `error_description`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Two or more `Authorization` headers.
    #[error("more than one Authorization header")]
    Repeated,
    /// Bytes a header may hold but a credential may not (control characters, obs-text).
    #[error("malformed Authorization header")]
    Header,
    /// A bearer credential that is not an RFC 6750 `b64token`.
    #[error("malformed bearer token")]
    Bearer,
    /// Basic credentials that are not base64 of `id:secret` (form-encoded, UTF-8).
    #[error("malformed Basic credentials")]
    Basic,
}

impl Malformed {
    /// The message, as a `'static` text for an `error_description`.
    pub fn message(self) -> &'static str {
        match self {
            Malformed::Repeated => "more than one Authorization header",
            Malformed::Header => "malformed Authorization header",
            Malformed::Bearer => "malformed bearer token",
            Malformed::Basic => "malformed Basic credentials",
        }
    }
}

/// The request's credentials: `None` without an `Authorization` header.
pub(crate) fn authorization(headers: &HeaderMap) -> Result<Option<Credentials<'_>>, Malformed> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Malformed::Repeated);
    }
    let bytes = value.as_bytes();
    let (scheme, credential) = match bytes.iter().position(|&b| b == b' ') {
        Some(space) => (&bytes[..space], &bytes[space + 1..]),
        None => (bytes, &[][..]),
    };
    if scheme.eq_ignore_ascii_case(b"bearer") {
        // Checked by `bearer_token`, after the gateway's cache lookup.
        return Ok(Some(Credentials::Bearer(credential)));
    }
    if scheme.eq_ignore_ascii_case(b"dpop") {
        return Ok(Some(Credentials::Dpop(credential)));
    }
    if value.to_str().is_err() {
        return Err(Malformed::Header);
    }
    Ok(Some(if scheme.eq_ignore_ascii_case(b"basic") {
        Credentials::Basic(credential)
    } else {
        Credentials::Other
    }))
}

/// A bearer credential as a token, when it is an RFC 6750 `b64token`.
pub(crate) fn bearer_token(credential: &[u8]) -> Result<&str, Malformed> {
    // A b64token holds only ASCII, so it is also valid UTF-8.
    if is_b64token(credential) {
        return std::str::from_utf8(credential).map_err(|_| Malformed::Bearer);
    }
    // What `HeaderValue::to_str` accepts: the rest of the header is `Bearer `.
    let visible = credential
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b));
    Err(if visible {
        Malformed::Bearer
    } else {
        Malformed::Header
    })
}

/// Basic credentials decoded: the client id and secret, each form-urlencoded before Base64
/// as RFC 6749 §2.3.1 asks.
pub(crate) fn basic(credential: &[u8]) -> Result<(String, String), Malformed> {
    let text = std::str::from_utf8(credential).map_err(|_| Malformed::Basic)?;
    let decoded = STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or(Malformed::Basic)?;
    let (id, secret) = decoded.split_once(':').ok_or(Malformed::Basic)?;
    Ok((
        form_decode(id).ok_or(Malformed::Basic)?,
        form_decode(secret).ok_or(Malformed::Basic)?,
    ))
}

fn form_decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// RFC 6750 §2.1: `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
///
/// Measured on the gateway's cold path (BENCHMARKS.md, session 3): checked without a branch
/// per byte, so that the compiler checks a chunk's bytes side by side.
fn is_b64token(token: &[u8]) -> bool {
    let padding = token.iter().rev().take_while(|&&b| b == b'=').count();
    let body = &token[..token.len() - padding];
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

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

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

    fn with(values: &[&'static [u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                header::AUTHORIZATION,
                HeaderValue::from_bytes(v).expect("a header value"),
            );
        }
        h
    }

    #[test]
    fn the_scheme_decides_and_one_header_only() {
        assert_eq!(authorization(&HeaderMap::new()), Ok(None));
        assert_eq!(
            authorization(&with(&[b"bEaReR abc"])),
            Ok(Some(Credentials::Bearer(b"abc")))
        );
        assert_eq!(
            authorization(&with(&[b"Bearer"])),
            Ok(Some(Credentials::Bearer(b"")))
        );
        assert_eq!(
            authorization(&with(&[b"basic eDp5"])),
            Ok(Some(Credentials::Basic(b"eDp5")))
        );
        assert_eq!(
            authorization(&with(&[b"dpop abc"])),
            Ok(Some(Credentials::Dpop(b"abc")))
        );
        assert_eq!(
            authorization(&with(&[b"Digest x=1"])),
            Ok(Some(Credentials::Other))
        );
        assert_eq!(
            authorization(&with(&[b"Bearer a", b"Bearer b"])),
            Err(Malformed::Repeated)
        );
        // Bytes `to_str` refuses in a header of another scheme; a bearer one is checked later.
        assert_eq!(
            authorization(&with(&[b"Digest \xe9"])),
            Err(Malformed::Header)
        );
        assert_eq!(
            authorization(&with(&[b"Basic \xe9t\xe9"])),
            Err(Malformed::Header)
        );
        assert_eq!(
            authorization(&with(&[b"Bearer abc\xff"])),
            Ok(Some(Credentials::Bearer(b"abc\xff")))
        );
    }

    #[test]
    fn bearer_tokens_are_b64tokens() {
        assert_eq!(bearer_token(b"abc.def-_~+/=="), Ok("abc.def-_~+/=="));
        for bad in [&b""[..], b" abc", b"a b", b"==", b"a\"b", b"a=b"] {
            assert_eq!(bearer_token(bad), Err(Malformed::Bearer), "{bad:?}");
        }
        assert_eq!(bearer_token(b"abc\xff"), Err(Malformed::Header));
        assert_eq!(bearer_token(b"abc\n"), Err(Malformed::Header));
    }

    #[test]
    fn basic_credentials_are_base64_of_form_encoded_halves() {
        // RFC 6749 §2.3.1: "my client:p@ss+word" form-encoded, then Base64.
        let encoded = STANDARD.encode("my+client:p%40ss%2Bword");
        assert_eq!(
            basic(encoded.as_bytes()),
            Ok(("my client".into(), "p@ss+word".into()))
        );
        assert_eq!(
            basic(STANDARD.encode("id:").as_bytes()),
            Ok(("id".into(), String::new()))
        );
        for bad in [
            "not base64!".to_owned(),
            STANDARD.encode("no colon"),
            STANDARD.encode([0xff, b':', b'x']),
            STANDARD.encode("id:%zz%c3"),
        ] {
            assert_eq!(basic(bad.as_bytes()), Err(Malformed::Basic), "{bad}");
        }
    }
}
