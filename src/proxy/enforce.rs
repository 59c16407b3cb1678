//! SPEC §4 enforcement: the bearer token in the request, then what the route asks of it.
//! Every refusal becomes a response with an RFC 6750 challenge in one place, [`Denial::response`].

use http::{header, HeaderMap, Method, Response, StatusCode};

use crate::config::Route;
use crate::http::{json, Body};
use crate::jwt::verify::Claims;
use crate::protocol::authorization::{authorization, bearer_token, Credentials};
use crate::protocol::Challenge;
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
        let description = self.description();
        let challenge = Challenge {
            realm: Some("isogate"),
            error: (!matches!(self, Denial::NoToken)).then(|| self.code()),
            description: description.as_deref(),
            scope: match self {
                Denial::InsufficientScope { scope } => Some(scope),
                _ => None,
            },
            resource_metadata: Some(metadata),
        };
        let mut response = match &description {
            Some(d) => json(
                status,
                &serde_json::json!({"error": self.code(), "error_description": d}),
            ),
            None => json(status, &serde_json::json!({"error": "unauthorized"})),
        };
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, challenge.header());
        response
    }
}

/// SPEC §4 step 1: exactly one `Authorization: Bearer <token>` header, and its token.
pub fn bearer(headers: &HeaderMap) -> Result<&str, Denial> {
    credential(headers).and_then(token)
}

/// The first half of [`bearer`]: the bytes after `Bearer ` in the one `Authorization` header,
/// not yet checked. The gateway looks these up in its verified-token cache before checking them
/// with [`token`]: a cached token passed that check when it was verified.
pub fn credential(headers: &HeaderMap) -> Result<&[u8], Denial> {
    match authorization(headers) {
        Ok(Some(Credentials::Bearer(credential))) => Ok(credential),
        // Another scheme (e.g. Basic) carries no bearer token (RFC 6750 §3.1).
        Ok(Some(_) | None) => Err(Denial::NoToken),
        Err(malformed) => Err(Denial::InvalidRequest(malformed.message())),
    }
}

/// The second half of [`bearer`]: `credential` as a token when it is a `b64token`.
pub fn token(credential: &[u8]) -> Result<&str, Denial> {
    bearer_token(credential).map_err(|malformed| Denial::InvalidRequest(malformed.message()))
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
    use crate::resources::ApiScope;
    use http::HeaderValue;
    use std::collections::BTreeMap;

    fn resource(name: &str, scopes: &[&str], isolated: bool) -> ApiResource {
        ApiResource {
            name: name.into(),
            display_name: None,
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            isolated,
            enabled: true,
            user_claims: vec![],
            allowed_signing_algs: vec![],
            secrets: vec![],
        }
    }

    fn claims(aud: &[&str], scope: &[&str]) -> Claims {
        Claims {
            iss: "https://issuer.test".into(),
            sub: Some("alice".into()),
            client_id: Some("app".into()),
            aud: aud.iter().map(|s| s.to_string()).collect(),
            scope: scope.iter().map(|s| s.to_string()).collect(),
            exp: 2_000_000_000,
            nbf: None,
        }
    }

    /// `read`, `write`, the parameterized `transaction`, and `invoices:read`, a scope whose
    /// name holds a `:` without being parameterized.
    fn model() -> Model {
        let mut m = Model::default();
        for (name, parameterized) in [
            ("read", false),
            ("write", false),
            ("transaction", true),
            ("invoices:read", false),
        ] {
            m.api_scopes.insert(
                name.into(),
                ApiScope {
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

    fn route(rules: &[(&str, &[&str])]) -> Route {
        Route {
            path_prefix: "/invoices".into(),
            host: None,
            upstream: crate::config::Upstream::parse("http://127.0.0.1:1").unwrap(),
            resource: "urn:invoices".into(),
            scopes: rules
                .iter()
                .map(|(m, s)| (m.to_string(), s.iter().map(|s| s.to_string()).collect()))
                .collect::<BTreeMap<_, _>>(),
            strip_authorization: false,
            keep_headers: vec![],
        }
    }

    /// SPEC §4 step 5, for a shared and an isolated resource, `aud` of one value and of several.
    #[test]
    fn the_audience_must_name_the_resource_and_an_isolated_one_alone() {
        let shared = resource("urn:products", &["read"], false);
        let isolated = resource("urn:invoices", &["read"], true);
        let not_meant = Err(Denial::InvalidToken(
            "the token is not meant for this resource".into(),
        ));
        let not_alone = Err(Denial::InvalidToken(
            "this resource accepts only tokens minted for it alone".into(),
        ));
        for (aud, at_shared, at_isolated) in [
            (&["urn:products"][..], Ok(()), not_meant.clone()),
            (&["urn:invoices"][..], not_meant.clone(), Ok(())),
            (
                &["urn:products", "urn:other"][..],
                Ok(()),
                not_meant.clone(),
            ),
            (
                &["urn:invoices", "urn:products"][..],
                Ok(()),
                not_alone.clone(),
            ),
            (
                &["urn:products", "urn:invoices"][..],
                Ok(()),
                not_alone.clone(),
            ),
            (&["urn:other"][..], not_meant.clone(), not_meant.clone()),
            (
                &["urn:invoices", "urn:invoices"][..],
                not_meant.clone(),
                Ok(()),
            ),
        ] {
            let c = claims(aud, &["read"]);
            assert_eq!(audience(&c, &shared), at_shared, "{aud:?} at products");
            assert_eq!(audience(&c, &isolated), at_isolated, "{aud:?} at invoices");
        }
    }

    fn insufficient(scope: &str) -> Result<(), Denial> {
        Err(Denial::InsufficientScope {
            scope: scope.into(),
        })
    }

    /// SPEC §4 step 6: per-method rules and `*`, HEAD as GET, only scopes the resource lists,
    /// a parameterized scope by its name, a colon-named scope as itself.
    #[test]
    fn a_scope_the_route_asks_for_this_method_is_needed() {
        let m = model();
        let invoices = resource(
            "urn:invoices",
            &["read", "write", "transaction", "invoices:read"],
            true,
        );
        let rules = route(&[("GET", &["read"]), ("DELETE", &[]), ("*", &["write"])]);
        let check = |scopes: &[&str], method: Method| {
            scope(
                &claims(&["urn:invoices"], scopes),
                &rules,
                &invoices,
                &m,
                &method,
            )
        };
        assert_eq!(check(&["read"], Method::GET), Ok(()));
        assert_eq!(check(&["read"], Method::HEAD), Ok(()), "HEAD as GET");
        assert_eq!(check(&["read"], Method::POST), insufficient("write"));
        assert_eq!(check(&["read", "write"], Method::POST), Ok(()));
        assert_eq!(check(&["write"], Method::GET), insufficient("read"));
        assert_eq!(check(&["read", "write"], Method::DELETE), insufficient(""));
        assert_eq!(check(&[], Method::GET), insufficient("read"));
        // A route that names HEAD decides it itself.
        let head = route(&[("GET", &["read"]), ("HEAD", &["write"])]);
        let c = claims(&["urn:invoices"], &["read"]);
        assert_eq!(
            scope(&c, &head, &invoices, &m, &Method::HEAD),
            insufficient("write")
        );

        // No rules: any scope of the resource.
        let open = route(&[]);
        let any = |scopes: &[&str]| {
            scope(
                &claims(&["urn:invoices"], scopes),
                &open,
                &invoices,
                &m,
                &Method::PUT,
            )
        };
        assert_eq!(any(&["write"]), Ok(()));
        assert_eq!(
            any(&["transaction:42"]),
            Ok(()),
            "a value of a parameterized scope"
        );
        assert_eq!(
            any(&["invoices:read"]),
            Ok(()),
            "a scope named with a colon"
        );
        assert_eq!(
            any(&["admin"]),
            insufficient("read write transaction invoices:read")
        );
        // Only a parameterized scope is read as name:value: `write:x` is not `write`, and
        // `invoices:x` is not `invoices:read`.
        assert_eq!(
            any(&["write:x", "invoices:x", "invoices"]),
            insufficient("read write transaction invoices:read")
        );
        // A scope the resource does not list never counts, whatever the route asks.
        let products = resource("urn:products", &["read"], false);
        let c = claims(&["urn:products"], &["write"]);
        assert_eq!(
            scope(&c, &rules, &products, &m, &Method::POST),
            insufficient("write")
        );
        let parameterized = route(&[("*", &["transaction"])]);
        let c = claims(&["urn:invoices"], &["transaction:7"]);
        assert_eq!(
            scope(&c, &parameterized, &invoices, &m, &Method::POST),
            Ok(())
        );
        let c = claims(&["urn:invoices"], &["transaction"]);
        assert_eq!(
            scope(&c, &parameterized, &invoices, &m, &Method::POST),
            Ok(())
        );
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
