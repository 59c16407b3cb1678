//! Request-target normalisation and route selection (SPEC §4, "Route choice").
//!
//! The gateway picks a route, and with it the protections a request gets, from the request's
//! path, and the upstream then interprets that same path again. Any disagreement between the two
//! readings is an authorisation bypass, so [`normalize`] maps every spelling of a path to one
//! canonical form (the form that is routed *and* forwarded), and refuses the spellings whose
//! meaning depends on the upstream: encoded `/`, `\` in any form, NUL, `;` path parameters and
//! double percent-encoding. [`Index::select`] then only has to compare plain strings.

use std::borrow::Cow;

use rustc_hash::FxHashSet;

use crate::positions::Positions;

use crate::config::Route;

/// Why a request path was refused. Every variant is a `400 Bad Request`; the messages are terse
/// enough for the response body and never echo the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/` (e.g. `*`, or an empty authority-form path).
    #[error("path must start with '/'")]
    NotAbsolute,
    /// A `%` not followed by two hexadecimal digits.
    #[error("malformed percent-escape in path")]
    MalformedEscape,
    /// `%2F`: an encoded `/`, which upstreams disagree on splitting.
    #[error("encoded '/' in path")]
    EncodedSlash,
    /// A `\` or `%5C`, which some upstreams treat as `/`.
    #[error("backslash in path")]
    Backslash,
    /// A NUL, literal or `%00`, which truncates the path in some upstreams.
    #[error("NUL in path")]
    Nul,
    /// A literal control character other than NUL.
    #[error("control character in path")]
    ControlCharacter,
    /// A `;` or `%3B`: a path parameter, which upstreams such as Tomcat strip before routing.
    #[error("path parameter (';') in path")]
    PathParameter,
    /// `%25` followed by two hexadecimal digits: an upstream that decodes twice would see an
    /// escape (possibly `%2E` or `%2F`) that the gateway never normalised.
    #[error("double percent-encoding in path")]
    DoubleEncoded,
    /// Escapes that decode to bytes that are not UTF-8 (`%C0%AE`, an overlong `.`): an
    /// upstream with a lenient decoder could read them as characters the gateway never saw.
    #[error("percent-escapes in path that are not UTF-8")]
    NotUtf8,
}

/// Normalises the path of an origin-form request target (`uri.path()`, without the query).
///
/// The result starts with `/` and holds no empty, `.` or `..` segment (a trailing slash is
/// kept, and a trailing `.` or `..` leaves one); escapes of unreserved characters are decoded
/// (`%2E` → `.`, before dot segments are removed), other escapes have upper-case hex digits, and
/// characters that RFC 3986 does not allow in a path (space, `"`, `{`, non-ASCII, …) are
/// percent-encoded as UTF-8. Normalising the result again returns it unchanged.
///
/// # Errors
/// See [`PathError`]: the path does not start with `/`, or holds a malformed escape, an encoded
/// `/`, a `\`, a NUL or control character, a `;`, or a double-encoded `%`.
pub fn normalize(path: &str) -> Result<String, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let (decoded, high) = decode(path)?;
    if has_double_escape(&decoded) {
        return Err(PathError::DoubleEncoded);
    }
    // Only escapes of bytes past ASCII can make invalid UTF-8 (literal characters come from a
    // `str`): checked only when there are some.
    if high
        && percent_encoding::percent_decode_str(&decoded)
            .decode_utf8()
            .is_err()
    {
        return Err(PathError::NotUtf8);
    }
    Ok(remove_dot_segments(&decoded))
}

/// Checks every character, decodes escapes of unreserved characters and canonicalises the rest;
/// also says whether an escape of a byte past ASCII was seen.
fn decode(path: &str) -> Result<(String, bool), PathError> {
    let mut out = String::with_capacity(path.len());
    let mut high = false;
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' => {
                let hi = chars.next().and_then(|c| c.to_digit(16));
                let lo = chars.next().and_then(|c| c.to_digit(16));
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathError::MalformedEscape);
                };
                // Two hex digits make at most 0xFF, so this never truncates.
                let byte = (hi << 4 | lo) as u8;
                match byte {
                    b'/' => return Err(PathError::EncodedSlash),
                    b'\\' => return Err(PathError::Backslash),
                    0 => return Err(PathError::Nul),
                    b';' => return Err(PathError::PathParameter),
                    b if is_unreserved(b) => out.push(char::from(b)),
                    b => {
                        high |= b >= 0x80;
                        push_escape(&mut out, b)
                    }
                }
            }
            '\\' => return Err(PathError::Backslash),
            ';' => return Err(PathError::PathParameter),
            '\0' => return Err(PathError::Nul),
            c if c.is_control() => return Err(PathError::ControlCharacter),
            c if c.is_ascii() && is_path_literal(c as u8) => out.push(c),
            c => {
                let mut utf8 = [0; 4];
                for &b in c.encode_utf8(&mut utf8).as_bytes() {
                    push_escape(&mut out, b);
                }
            }
        }
    }
    Ok((out, high))
}

/// Whether `s` (already canonical: every `%` starts an escape) holds `%25` followed by two hex
/// digits, which reads as another escape once decoded.
fn has_double_escape(s: &str) -> bool {
    s.match_indices("%25").any(|(i, _)| {
        s.as_bytes()
            .get(i + 3..i + 5)
            .is_some_and(|pair| pair.iter().all(u8::is_ascii_hexdigit))
    })
}

/// RFC 3986 §5.2.4 on a path that starts with `/`, with empty segments (repeated slashes)
/// dropped first, as most upstreams and file systems treat `//` as `/`.
fn remove_dot_segments(path: &str) -> String {
    // Holds `/seg/seg` without a trailing slash; the root is the empty string until the end.
    let mut out = String::with_capacity(path.len());
    let mut trailing_slash = false;
    for segment in path.split('/').skip(1) {
        trailing_slash = true;
        match segment {
            "" | "." => {}
            ".." => {
                let parent = out.rfind('/').unwrap_or(0);
                out.truncate(parent);
            }
            s => {
                out.push('/');
                out.push_str(s);
                trailing_slash = false;
            }
        }
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    out
}

/// RFC 3986 §2.3: ALPHA DIGIT `-` `.` `_` `~`.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Bytes that stay literal in a normalised path: `pchar` and `/` (RFC 3986 §3.3), less `;`.
fn is_path_literal(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b'='
                | b':'
                | b'@'
                | b'/'
        )
}

fn push_escape(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0x0F)]));
}

/// The routes of a file indexed for [`Index::select`], by host (none for a host-less route)
/// and prefix. Prefixes are looked up without trailing slashes (the root is the empty string);
/// each key finds the first route of the file with it. The keys are read from the routes, not
/// copied: pass the same slice to every call.
#[derive(Debug, Default)]
pub struct Index {
    by_key: Positions,
    /// The hosts that routes name: a request for another host looks up host-less routes only.
    hosts: FxHashSet<Box<str>>,
}

/// The key in the [`Index`] of the route at `i`.
fn key(routes: &[Route], i: usize) -> Option<(Option<&str>, &str)> {
    let route = routes.get(i)?;
    Some((
        route.host.as_ref().map(|h| h.as_str()),
        route.path_prefix.trim_end_matches('/'),
    ))
}

impl Index {
    /// Indexes `routes` (their positions: pass the same slice to [`Index::select`]).
    pub fn new(routes: &[Route]) -> Self {
        let mut index = Index::default();
        for (i, route) in routes.iter().enumerate() {
            if let Some(host) = &route.host {
                if !index.hosts.contains(host.as_str()) {
                    index.hosts.insert(host.as_str().into());
                }
            }
            index.by_key.insert_first(i, |i| key(routes, i));
        }
        index
    }

    /// The route for a request, as [`scan`] chooses it, in time that grows with the number of
    /// `/` in `path`, not with the number of routes: each prefix `path` could lie under is
    /// looked up, the longest first, the request's host before no host.
    ///
    /// Allocates only for a host with upper-case letters.
    pub fn select<'a>(
        &self,
        routes: &'a [Route],
        host: Option<&str>,
        path: &str,
    ) -> Option<&'a Route> {
        let host = self.named(host);
        let find = |key| self.find(routes, key);
        let mut end = path.len();
        loop {
            let prefix = &path[..end];
            let found = host
                .as_deref()
                .and_then(|host| find((Some(host), prefix)))
                .or_else(|| find((None, prefix)));
            if let Some(i) = found {
                return routes.get(i);
            }
            if end == 0 {
                return None;
            }
            end = prefix.rfind('/')?;
        }
    }

    /// The first route of the file whose `path_prefix` is `prefix` exactly and whose host is
    /// unset or `host`'s: whose RFC 9728 document `/.well-known/oauth-protected-resource`
    /// + `prefix` is.
    pub fn exact<'a>(
        &self,
        routes: &'a [Route],
        host: Option<&str>,
        prefix: &str,
    ) -> Option<&'a Route> {
        let key = if prefix == "/" { "" } else { prefix };
        let named = self
            .named(host)
            .and_then(|host| self.find(routes, (Some(&host), key)));
        let any = self.find(routes, (None, key));
        let first = match (named, any) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        routes.get(first).filter(|r| r.path_prefix == prefix)
    }

    /// The position of the first route with `key`.
    fn find(&self, routes: &[Route], key: (Option<&str>, &str)) -> Option<usize> {
        self.by_key.get(Some(key), |i| self::key(routes, i))
    }

    /// The host of the authority `host`, lower-cased, when routes name it.
    fn named<'h>(&self, host: Option<&'h str>) -> Option<Cow<'h, str>> {
        if self.hosts.is_empty() {
            return None;
        }
        let host = host.and_then(crate::config::host::split)?;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(host.to_ascii_lowercase())
        } else {
            Cow::Borrowed(host)
        };
        self.hosts.contains(&*host).then_some(host)
    }
}

/// The route for a request: among routes whose `host` is unset or equals the request's host,
/// the one with the longest `path_prefix` that `path` equals or continues with `/`; on equal
/// length a route naming the host beats a host-less one, then file order decides.
///
/// `host` is the request's authority (`Host` header or `:authority`), with or without a port;
/// a missing or malformed one (see [`Host::of`](crate::config::Host::of)) only matches
/// host-less routes. `path` must come from [`normalize`]. Does not allocate.
///
/// This is the rule as a plain scan of every route, the reference [`Index::select`] is tested
/// and measured against.
pub fn scan<'a>(routes: &'a [Route], host: Option<&str>, path: &str) -> Option<&'a Route> {
    let host = host.and_then(crate::config::host::split);
    // (route, prefix length, names the host)
    let mut best: Option<(&Route, usize, bool)> = None;
    for route in routes {
        let names_host = match (&route.host, host) {
            (None, _) => false,
            (Some(want), Some(got)) if want.as_str().eq_ignore_ascii_case(got) => true,
            (Some(_), _) => continue,
        };
        let Some(len) = prefix_len(&route.path_prefix, path) else {
            continue;
        };
        let better = match best {
            None => true,
            Some((_, best_len, best_names_host)) => {
                len > best_len || (len == best_len && names_host && !best_names_host)
            }
        };
        if better {
            best = Some((route, len, names_host));
        }
    }
    best.map(|(route, _, _)| route)
}

/// The length of `prefix` (trailing slashes ignored) when `path` lies under it.
fn prefix_len(prefix: &str, path: &str) -> Option<usize> {
    let prefix = prefix.trim_end_matches('/');
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(prefix.len())
}

#[cfg(test)]
mod tests;
