//! Forwarding an allowed request upstream and its response back, bodies streamed both ways.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderName};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, Version};

use super::upstream::Upstreams;
use crate::config::{Route, Upstream};
use crate::http::{error_chain, json, Body};
use crate::jwt::verify::Claims;
use crate::protocol::REWRITING;
use crate::resources::{ApiResource, Model};

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1), plus the proxy
/// credentials and `Expect`, which isogate answers itself. Names, not strings: a `&str` name is
/// parsed again on every lookup.
const HOP_BY_HOP: [HeaderName; 10] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    header::EXPECT,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_ISOGATE_SUB: HeaderName = HeaderName::from_static("x-isogate-sub");
const X_ISOGATE_CLIENT_ID: HeaderName = HeaderName::from_static("x-isogate-client-id");
const X_ISOGATE_SCOPE: HeaderName = HeaderName::from_static("x-isogate-scope");

/// Prefixes of the headers isogate owns: a client may never send them upstream.
const OWNED_PREFIXES: [&[u8]; 2] = [b"x-isogate-", b"x-forwarded-"];

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The upstream could not be reached (502).
    #[error("upstream unreachable: {0}")]
    Connect(String),
    /// The upstream did not answer in time (504).
    #[error("upstream timed out")]
    Timeout,
    /// A verified claim cannot be carried in a header (e.g. a control character).
    #[error("the token's {0} cannot be forwarded in a header")]
    Claim(&'static str),
    /// The client's request body broke off or was malformed (a bad chunk), so the request
    /// could not be sent: the client's fault (400), not the upstream's.
    #[error("the request body could not be read: {0}")]
    ClientBody(String),
}

impl ForwardError {
    /// The response the client sees.
    pub fn response(&self) -> Response<Body> {
        let (status, code) = match self {
            ForwardError::Connect(_) => (StatusCode::BAD_GATEWAY, "upstream_unreachable"),
            ForwardError::Timeout => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
            ForwardError::Claim(_) => (StatusCode::BAD_GATEWAY, "unforwardable_claim"),
            ForwardError::ClientBody(_) => {
                return json(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({
                        "error": "invalid_request",
                        "error_description": "the request body is malformed or incomplete"
                    }),
                )
            }
        };
        json(status, &serde_json::json!({ "error": code }))
    }

    /// The reason as logged.
    pub fn code(&self) -> &'static str {
        match self {
            ForwardError::Connect(_) => "upstream_unreachable",
            ForwardError::Timeout => "upstream_timeout",
            ForwardError::Claim(_) => "unforwardable_claim",
            ForwardError::ClientBody(_) => "bad_request_body",
        }
    }
}

/// What the gateway knows about the request besides its headers.
pub struct Origin<'a> {
    /// The client's address.
    pub peer: SocketAddr,
    /// The host the client addressed (`Host` or `:authority`), as it sent it.
    pub host: Option<&'a HeaderValue>,
    /// `http` or `https`.
    pub scheme: &'static str,
}

/// Sends `req` to `upstream` + `path` (the request's path once normalised) + the request's
/// query and returns the upstream's response with its hop-by-hop headers removed. `timeout`
/// bounds the wait for the response head.
#[allow(clippy::too_many_arguments)]
pub async fn forward(
    upstreams: &Arc<Upstreams>,
    req: Request<Body>,
    upstream: &Upstream,
    path: String,
    identity: Result<Identity, &'static str>,
    route: &Route,
    origin: Origin<'_>,
    timeout: Duration,
) -> Result<Response<Body>, ForwardError> {
    let keep = &route.keep_headers;
    let (mut parts, body) = req.into_parts();
    let client_version = parts.version;
    // Origin-form, as HTTP/1.1 sends it to an origin server.
    let uri = match parts.uri.path_and_query() {
        // Normalising changed nothing (the usual case): the request's own target, shared.
        Some(sent) if sent.path() == path => Uri::from(sent.clone()),
        sent => {
            let target = match sent.and_then(PathAndQuery::query) {
                Some(query) => format!("{path}?{query}"),
                None => path,
            };
            // Parsed from the `String` itself, as parsing a `&str` would copy it once more.
            Uri::try_from(target)
                .map_err(|e| ForwardError::Connect(format!("bad upstream URI: {e}")))?
        }
    };
    let headers = &mut parts.headers;
    remove_hop_by_hop(headers);
    drop_owned(headers, keep);
    if route.strip_authorization {
        // The DPoP proof goes with the token it proves (SPEC §8).
        headers.remove(header::AUTHORIZATION);
        headers.remove(crate::dpop::DPOP);
    }
    // The upstream's own; the client's host travels in X-Forwarded-Host.
    headers.insert(header::HOST, upstream.host.clone());
    set_forwarded(headers, &origin);
    set_identity(headers, identity)?;

    let mut upstream_req = Request::new(body);
    *upstream_req.method_mut() = parts.method;
    *upstream_req.uri_mut() = uri;
    *upstream_req.version_mut() = Version::HTTP_11;
    *upstream_req.headers_mut() = parts.headers;

    let mut response =
        match tokio::time::timeout(timeout, upstreams.send(upstream, upstream_req)).await {
            Err(_) => return Err(ForwardError::Timeout),
            Ok(Err(e)) if from_client_body(&*e) => {
                return Err(ForwardError::ClientBody(error_chain(&*e)))
            }
            Ok(Err(e)) => return Err(ForwardError::Connect(error_chain(&*e))),
            Ok(Ok(response)) => response,
        };
    remove_hop_by_hop(response.headers_mut());
    // The client gets its own protocol version, whatever the upstream spoke.
    *response.version_mut() = client_version;
    Ok(response)
}

/// Removes the hop-by-hop headers and every header that `Connection` names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names finds which are present: most messages carry none of them, or only
    // `Connection` (often naming only `keep-alive` or `close`).
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // `Connection: keep-alive` names only a header removed below anyway. (`close` is no such
    // case: a header named `close` must go too.)
    let names_others = || {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"keep-alive"))
    };
    if present & 1 != 0 && names_others() {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            // The hop-by-hop ones (`keep-alive` is the usual one) go below anyway.
            .filter(|name| {
                !HOP_BY_HOP
                    .iter()
                    .any(|h| name.eq_ignore_ascii_case(h.as_str()))
            })
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// Removes every header isogate owns — `x-isogate-*`, `x-forwarded-*`, `forwarded` — and the
/// [`REWRITING`] ones that `keep` does not name. Names are compared with `_` read as `-`:
/// CGI, WSGI and Rack servers merge `X_Isogate_Sub` into `x-isogate-sub`, the spoofed value
/// first. (Names are lower-case already.) A kept header passes only under its own name.
fn drop_owned(headers: &mut HeaderMap, keep: &[HeaderName]) {
    let refused = |name: &HeaderName| {
        let bytes = name.as_str().as_bytes();
        match bytes.first() {
            Some(b'x') => {
                OWNED_PREFIXES
                    .iter()
                    .any(|p| bytes.len() >= p.len() && same_name(&bytes[..p.len()], p))
                    || (REWRITING.iter().any(|r| same_name(bytes, r.as_bytes()))
                        && !keep.contains(name))
            }
            Some(b'f') => same_name(bytes, b"forwarded"),
            _ => false,
        }
    };
    if !headers.keys().any(refused) {
        return;
    }
    let names: Vec<HeaderName> = headers.keys().filter(|n| refused(n)).cloned().collect();
    for name in names {
        headers.remove(name);
    }
}

/// Whether header name `name` is `ours` when `_` is read as `-`.
fn same_name(name: &[u8], ours: &[u8]) -> bool {
    name.len() == ours.len()
        && name
            .iter()
            .zip(ours)
            .all(|(a, b)| a == b || (*a == b'_' && *b == b'-'))
}

/// `X-Forwarded-For` (the client's address: a client-sent one was dropped), `-Proto` and
/// `-Host`.
fn set_forwarded(headers: &mut HeaderMap, origin: &Origin<'_>) {
    if let Ok(value) = ip_value(origin.peer.ip()) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(origin.scheme));
    if let Some(host) = origin.host {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
}

/// `ip` as a header value; IPv4 without the formatting machinery, as it is on every request.
fn ip_value(ip: IpAddr) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    let IpAddr::V4(v4) = ip else {
        return HeaderValue::try_from(ip.to_string());
    };
    let mut text = [0u8; 15];
    let mut len = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        let digits = [octet / 100, octet / 10 % 10, octet % 10];
        let skip = if octet >= 100 {
            0
        } else if octet >= 10 {
            1
        } else {
            2
        };
        for digit in &digits[skip..] {
            text[len] = b'0' + digit;
            len += 1;
        }
    }
    HeaderValue::from_bytes(&text[..len])
}

/// The identity headers of a token's claims: `X-Isogate-Sub`, `X-Isogate-Client-Id` (each when
/// the token has the claim) and `X-Isogate-Scope` (space-delimited). A value is forwarded only
/// when it is visible ASCII without `,` (an upstream that reads a header as a list would split
/// it, and one that trims would turn `" admin "` into `admin`): anything else refuses the
/// request rather than reach the upstream altered.
#[derive(Debug, Clone)]
pub struct Identity {
    sub: Option<HeaderValue>,
    client_id: Option<HeaderValue>,
    /// Every scope of the token, when each is forwardable: sent as is to a resource that lists
    /// them all (the usual case, a token cut down to one resource).
    scope: Option<HeaderValue>,
}

impl Identity {
    /// The headers of `claims`, or the name of the claim that cannot be forwarded faithfully.
    pub fn of(claims: &Claims) -> Result<Identity, &'static str> {
        let value = |v: &str, what| {
            if v.is_empty() || !v.bytes().all(forwardable) {
                return Err(what);
            }
            HeaderValue::from_str(v).map_err(|_| what)
        };
        let scope = claims
            .scope
            .iter()
            .all(|s| s.bytes().all(forwardable))
            .then(|| HeaderValue::from_str(&claims.scope.join(" ")).ok())
            .flatten();
        Ok(Identity {
            sub: claims.sub.as_deref().map(|s| value(s, "sub")).transpose()?,
            client_id: claims
                .client_id
                .as_deref()
                .map(|c| value(c, "client_id"))
                .transpose()?,
            scope,
        })
    }

    /// The headers for a request to `resource`: `X-Isogate-Scope` holds the token's `scopes`
    /// (the ones this was made `of`) that the resource lists (a parameterized one by its
    /// name), in the token's order; one of them that cannot be forwarded faithfully refuses the
    /// request.
    pub(super) fn for_resource(
        &self,
        scopes: &[String],
        resource: &ApiResource,
        model: &Model,
    ) -> Result<Identity, &'static str> {
        // Listed as it is (no lookup on the warm path), or as the parameterized scope it is a
        // value of.
        let listed = |s: &&String| {
            resource.lists(s)
                || model
                    .api_scope_of(s)
                    .is_some_and(|scope| resource.lists(&scope.name))
        };
        let scope = match &self.scope {
            Some(all) if scopes.iter().all(|s| listed(&s)) => all.clone(),
            _ => {
                let kept: Vec<&str> = scopes.iter().filter(listed).map(String::as_str).collect();
                if !kept.iter().all(|s| s.bytes().all(forwardable)) {
                    return Err("scope");
                }
                HeaderValue::from_str(&kept.join(" ")).map_err(|_| "scope")?
            }
        };
        Ok(Identity {
            sub: self.sub.clone(),
            client_id: self.client_id.clone(),
            scope: Some(scope),
        })
    }
}

/// A byte an identity header carries as is: visible ASCII other than `,`.
fn forwardable(byte: u8) -> bool {
    matches!(byte, 0x21..=0x7E) && byte != b','
}

fn set_identity(
    headers: &mut HeaderMap,
    identity: Result<Identity, &'static str>,
) -> Result<(), ForwardError> {
    let identity = identity.map_err(ForwardError::Claim)?;
    if let Some(sub) = identity.sub {
        headers.insert(X_ISOGATE_SUB, sub);
    }
    if let Some(client_id) = identity.client_id {
        headers.insert(X_ISOGATE_CLIENT_ID, client_id);
    }
    if let Some(scope) = identity.scope {
        headers.insert(X_ISOGATE_SCOPE, scope);
    }
    Ok(())
}

/// Whether a failed upstream request failed because the body it was streaming, the client's,
/// failed: hyper reports that as a user error caused by the incoming body's own error.
fn from_client_body(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<hyper::Error>().is_some_and(|e| {
        use std::error::Error;
        e.is_user()
            && e.source()
                .is_some_and(|cause| cause.downcast_ref::<hyper::Error>().is_some())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_named_headers_are_removed_with_the_hop_by_hop_set() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Secret , close"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }

    #[test]
    fn connection_keep_alive_alone_removes_both_and_nothing_else() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("Keep-Alive"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }

    #[test]
    fn a_header_named_close_goes_when_connection_names_it() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close"));
        h.insert("close", HeaderValue::from_static("1"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }

    #[test]
    fn each_forwarding_failure_has_its_status_and_code() {
        for (error, status, code) in [
            (
                ForwardError::Connect("refused".into()),
                StatusCode::BAD_GATEWAY,
                "upstream_unreachable",
            ),
            (
                ForwardError::Timeout,
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
            ),
            (
                ForwardError::Claim("sub"),
                StatusCode::BAD_GATEWAY,
                "unforwardable_claim",
            ),
            (
                ForwardError::ClientBody("bad chunk".into()),
                StatusCode::BAD_REQUEST,
                "bad_request_body",
            ),
        ] {
            assert_eq!(error.code(), code);
            let response = error.response();
            assert_eq!(response.status(), status, "{code}");
            assert_eq!(
                response.headers()[header::CONTENT_TYPE],
                "application/json",
                "{code}"
            );
        }
    }

    /// Owned and rewriting headers go under every spelling; a kept one only as named; the
    /// rest stays.
    #[test]
    fn owned_headers_are_dropped_with_underscores_read_as_dashes() {
        let mut h = HeaderMap::new();
        for name in [
            "x-isogate-sub",
            "x_isogate_sub",
            "x_isogate-scope",
            "x-forwarded-for",
            "x_forwarded_host",
            "forwarded",
            "x-original-url",
            "x_rewrite_url",
            "x-http-method-override",
            "x_http_method_override",
            "x-http-method",
            "x-method-override",
            "x-isogatex",
            "x-forwardedx",
            "forwardedx",
            "x-other",
            "accept",
        ] {
            h.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("v"),
            );
        }
        drop_owned(&mut h, &[HeaderName::from_static("x-http-method-override")]);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            [
                "accept",
                "forwardedx",
                "x-forwardedx",
                "x-http-method-override",
                "x-isogatex",
                "x-other"
            ]
        );
        // Nothing to drop: nothing changes.
        let mut plain = HeaderMap::new();
        plain.insert("x-kept", HeaderValue::from_static("1"));
        drop_owned(&mut plain, &[]);
        assert_eq!(plain.len(), 1);
    }

    #[test]
    fn forwarded_headers_name_the_peer_the_scheme_and_the_host() {
        let host = HeaderValue::from_static("api.example.com");
        let origin = Origin {
            peer: "192.0.2.7:5555".parse().unwrap(),
            host: Some(&host),
            scheme: "https",
        };
        let mut h = HeaderMap::new();
        set_forwarded(&mut h, &origin);
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
        let mut h = HeaderMap::new();
        set_forwarded(
            &mut h,
            &Origin {
                host: None,
                ..origin
            },
        );
        assert!(h.get("x-forwarded-host").is_none());
    }

    fn claims(sub: Option<&str>, client_id: Option<&str>, scope: &[&str]) -> Claims {
        Claims {
            iss: "https://issuer.test".into(),
            sub: sub.map(str::to_owned),
            client_id: client_id.map(str::to_owned),
            aud: vec!["urn:a".into()],
            scope: scope.iter().map(|s| s.to_string()).collect(),
            exp: 2_000_000_000,
            nbf: None,
            jti: None,
            jkt: None,
        }
    }

    fn resource(scopes: &[&str]) -> ApiResource {
        ApiResource {
            name: "urn:a".into(),
            display_name: None,
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            isolated: false,
            enabled: true,
            user_claims: vec![],
            allowed_signing_algs: vec![],
            secrets: vec![],
            require_dpop: false,
        }
    }

    fn model() -> Model {
        let mut m = Model::default();
        for (name, parameterized) in [("read", false), ("write", false), ("tx", true)] {
            m.api_scopes.insert(
                name.into(),
                crate::resources::ApiScope {
                    name: name.into(),
                    display_name: None,
                    user_claims: vec![],
                    parameterized,
                    parameter_claim: None,
                },
            );
        }
        m
    }

    fn headers(identity: Identity) -> HeaderMap {
        let mut h = HeaderMap::new();
        set_identity(&mut h, Ok(identity)).unwrap();
        h
    }

    #[test]
    fn identity_headers_carry_claims_as_they_are_or_refuse() {
        let m = model();
        let all = resource(&["read", "write", "tx"]);
        let identity = Identity::of(&claims(Some("alice"), Some("app"), &["read", "tx:7"]))
            .unwrap()
            .for_resource(&["read".into(), "tx:7".into()], &all, &m)
            .unwrap();
        let h = headers(identity);
        assert_eq!(h["x-isogate-sub"], "alice");
        assert_eq!(h["x-isogate-client-id"], "app");
        assert_eq!(h["x-isogate-scope"], "read tx:7");
        // Without sub or client_id the header is absent, never empty.
        let h = headers(
            Identity::of(&claims(None, None, &["read"]))
                .unwrap()
                .for_resource(&["read".into()], &all, &m)
                .unwrap(),
        );
        assert!(h.get("x-isogate-sub").is_none() && h.get("x-isogate-client-id").is_none());
        for (sub, client_id, what) in [
            (" alice", "app", "sub"),
            ("al,ice", "app", "sub"),
            ("", "app", "sub"),
            ("alice", "the app", "client_id"),
            ("alice", "", "client_id"),
        ] {
            assert_eq!(
                Identity::of(&claims(Some(sub), Some(client_id), &[])).map(|_| ()),
                Err(what),
                "{sub:?} {client_id:?}"
            );
        }
        let refused = set_identity(&mut HeaderMap::new(), Err("sub"));
        assert!(matches!(refused, Err(ForwardError::Claim("sub"))));
    }

    #[test]
    fn the_scope_header_holds_only_what_the_resource_lists() {
        let m = model();
        let token = ["read", "write", "tx:7", "other,odd", "read:x"];
        let scopes: Vec<String> = token.iter().map(|s| s.to_string()).collect();
        let identity = Identity::of(&claims(Some("alice"), None, &token)).unwrap();
        let for_scopes = |listed: &[&str], scopes: &[String]| {
            identity
                .for_resource(scopes, &resource(listed), &m)
                .map(|i| headers(i)["x-isogate-scope"].to_str().unwrap().to_owned())
        };
        assert_eq!(for_scopes(&["read"], &scopes).as_deref(), Ok("read"));
        assert_eq!(
            for_scopes(&["tx", "write"], &scopes).as_deref(),
            Ok("write tx:7")
        );
        assert_eq!(for_scopes(&["admin"], &scopes).as_deref(), Ok(""));
        // All listed: the token's own header, as is.
        let all = Identity::of(&claims(Some("alice"), None, &["read", "write"])).unwrap();
        let h = headers(
            all.for_resource(
                &["read".into(), "write".into()],
                &resource(&["read", "write"]),
                &m,
            )
            .unwrap(),
        );
        assert_eq!(h["x-isogate-scope"], "read write");
        // Not all listed: the listed ones only.
        let h = headers(
            all.for_resource(&["read".into(), "write".into()], &resource(&["write"]), &m)
                .unwrap(),
        );
        assert_eq!(h["x-isogate-scope"], "write");
        // A listed scope that cannot be forwarded faithfully refuses.
        let mut m2 = model();
        m2.api_scopes.insert(
            "a,b".into(),
            crate::resources::ApiScope {
                name: "a,b".into(),
                display_name: None,
                user_claims: vec![],
                parameterized: false,
                parameter_claim: None,
            },
        );
        let odd = Identity::of(&claims(Some("alice"), None, &["a,b", "read"])).unwrap();
        assert_eq!(
            odd.for_resource(&["a,b".into(), "read".into()], &resource(&["a,b"]), &m2)
                .map(|_| ()),
            Err("scope")
        );
        assert_eq!(
            odd.for_resource(&["a,b".into(), "read".into()], &resource(&["read"]), &m2)
                .map(|i| headers(i)["x-isogate-scope"].to_str().unwrap().to_owned())
                .as_deref(),
            Ok("read")
        );
    }

    #[test]
    fn only_visible_ascii_without_commas_is_forwarded_as_identity() {
        for b in 0..=u8::MAX {
            let expected = (0x21..=0x7E).contains(&b) && b != b',';
            assert_eq!(forwardable(b), expected, "{b:#04x}");
        }
    }

    #[test]
    fn an_error_is_logged_with_its_causes() {
        #[derive(Debug, thiserror::Error)]
        #[error("connect failed")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        ));
        assert_eq!(error_chain(&e), "connect failed: refused");
    }

    #[test]
    fn peer_addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "192.168.100.9",
            "255.255.255.255",
            "::1",
            "2001:db8::8a2e:370:7334",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_value(ip).unwrap(), ip.to_string().as_str());
        }
    }
}
