//! SPEC §10: a route that protects an MCP server. With `[routes.mcp]`, the JSON-RPC message in
//! a POST body decides the scope a call needs (`"method:name"`, then `"method"`, then `"*"`);
//! the body is read (at most [`MAX_BODY`]) after the token passed SPEC §4's steps 1 to 5, and
//! forwarded unchanged. `Mcp-Method` and `Mcp-Name`, when sent, must agree with the body: older
//! MCP servers route by the body alone, so a header must never pick a laxer rule.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Method, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use crate::config::Route;
use crate::http::{json, Body};
use crate::issuer::OAuthError;

/// Largest POST body a `[routes.mcp]` route reads (SPEC §10); a larger one is 413.
pub const MAX_BODY: usize = 1024 * 1024;

/// The JSON-RPC method, repeated by newer MCP clients.
const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
/// The tool, prompt or resource a call names, repeated by newer MCP clients.
const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");

/// The methods whose `params.name` a rule may name (`"tools/call:delete_invoice"`).
pub const NAMED: [&str; 2] = ["tools/call", "prompts/get"];

/// `[routes.mcp]`, validated: rule → scopes, any one of which suffices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    rules: BTreeMap<String, Vec<String>>,
}

impl Rules {
    /// Rules from validated keys (`"*"`, a method, or a method of [`NAMED`] with `:name`).
    pub fn new(rules: BTreeMap<String, Vec<String>>) -> Self {
        Rules { rules }
    }

    /// The scopes `call` needs, any one of which suffices: its `"method:name"` rule, else its
    /// method's, else `"*"`'s; none (so every token is refused) when no rule fits.
    pub fn needs(&self, call: &Call<'_>) -> &[String] {
        let named = match (&call.method, &call.name) {
            (Some(method), Some(name)) if NAMED.contains(&method.as_ref()) => {
                self.rules.get(&format!("{method}:{name}"))
            }
            _ => None,
        };
        named
            .or_else(|| call.method.as_deref().and_then(|m| self.rules.get(m)))
            .or_else(|| self.rules.get("*"))
            .map_or(&[], Vec::as_slice)
    }

    /// What a request without a JSON-RPC body (GET for the event stream, DELETE to end a
    /// session) needs: the `"*"` rule.
    pub fn default_rule(&self) -> &[String] {
        self.rules.get("*").map_or(&[], Vec::as_slice)
    }

    /// Every scope a rule names, sorted, once each: the route's `scopes_supported`.
    pub fn scopes(&self) -> Vec<&str> {
        let mut scopes: Vec<&str> = self.rules.values().flatten().map(String::as_str).collect();
        scopes.sort_unstable();
        scopes.dedup();
        scopes
    }
}

/// The rules that decide by the body, when `route` has `[routes.mcp]` and the request is a
/// POST: [`super::enforce::scope`] leaves the scope to [`read`] and [`Rules::needs`] then.
pub fn body_rules<'r>(route: &'r Route, method: &Method) -> Option<&'r Rules> {
    route.mcp.as_ref().filter(|_| method == Method::POST)
}

/// One JSON-RPC message of a body: its method (none for a response to the server) and the
/// name it calls (`params.name` of [`NAMED`], `params.uri` of `resources/read`).
#[derive(Debug, PartialEq, Eq)]
pub struct Call<'a> {
    pub method: Option<Cow<'a, str>>,
    pub name: Option<Cow<'a, str>>,
}

/// Why a `[routes.mcp]` route refuses a body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Larger than [`MAX_BODY`] (413).
    #[error("the body is larger than 1 MiB")]
    TooLarge,
    /// Not all there within the upstream timeout (408).
    #[error("the body did not arrive in time")]
    TimedOut,
    /// Not `application/json`, unreadable, or not JSON-RPC (400).
    #[error("{0}")]
    Invalid(String),
    /// `Mcp-Method` or `Mcp-Name` says something else than the body (400).
    #[error("{0}")]
    Header(String),
}

impl BodyError {
    /// The reason as logged and counted.
    pub fn reason(&self) -> &'static str {
        match self {
            BodyError::TooLarge => "mcp_too_large",
            BodyError::TimedOut => "mcp_timeout",
            BodyError::Invalid(_) => "mcp_invalid",
            BodyError::Header(_) => "mcp_header_mismatch",
        }
    }

    /// The response the client sees.
    pub fn response(&self) -> Response<Body> {
        let (status, error) = match self {
            BodyError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request"),
            BodyError::TimedOut => (StatusCode::REQUEST_TIMEOUT, "invalid_request"),
            BodyError::Invalid(_) | BodyError::Header(_) => {
                (StatusCode::BAD_REQUEST, "invalid_request")
            }
        };
        json(
            status,
            &serde_json::json!({"error": error, "error_description": self.to_string()}),
        )
    }
}

/// Reads a `[routes.mcp]` POST body that arrives `within`, for [`parse`] and to forward.
pub async fn read(
    headers: &HeaderMap,
    body: Incoming,
    within: Duration,
) -> Result<Bytes, BodyError> {
    crate::issuer::form::read_body(headers, body, within, "application/json", MAX_BODY)
        .await
        .map_err(|e| match e {
            OAuthError::TooLarge => BodyError::TooLarge,
            OAuthError::TimedOut => BodyError::TimedOut,
            other => BodyError::Invalid(other.description().to_owned()),
        })
}

/// A JSON-RPC 2.0 message as far as the rules look: unknown members are skipped unread.
#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    jsonrpc: Option<Cow<'a, str>>,
    #[serde(borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow)]
    params: Option<Params<'a>>,
    #[serde(default)]
    result: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct Params<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    uri: Option<Cow<'a, str>>,
}

/// The calls in a JSON-RPC body: one message, or a batch of at least one. Anything else (not
/// JSON, not version 2.0, neither a request nor a response, `tools/call` or `prompts/get`
/// without a `params.name`) is [`BodyError::Invalid`].
pub fn parse(body: &[u8]) -> Result<Vec<Call<'_>>, BodyError> {
    let invalid =
        |why: &str| BodyError::Invalid(format!("the body is not a JSON-RPC 2.0 message: {why}"));
    let batch = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let messages: Vec<Message<'_>> = if batch {
        serde_json::from_slice(body).map_err(|e| invalid(&e.to_string()))?
    } else {
        vec![serde_json::from_slice(body).map_err(|e| invalid(&e.to_string()))?]
    };
    if messages.is_empty() {
        return Err(invalid("an empty batch"));
    }
    messages
        .into_iter()
        .map(|m| {
            if m.jsonrpc.as_deref() != Some("2.0") {
                return Err(invalid("\"jsonrpc\" must be \"2.0\""));
            }
            let response = m.result.is_some() || m.error.is_some();
            let Some(method) = m.method else {
                return if response {
                    Ok(Call {
                        method: None,
                        name: None,
                    })
                } else {
                    Err(invalid("neither a request (\"method\") nor a response"))
                };
            };
            let params = m.params.unwrap_or(Params {
                name: None,
                uri: None,
            });
            let name = if NAMED.contains(&method.as_ref()) {
                let Some(name) = params.name else {
                    return Err(BodyError::Invalid(format!(
                        "{method} needs a string params.name"
                    )));
                };
                Some(name)
            } else if method == "resources/read" {
                params.uri
            } else {
                None
            };
            Ok(Call {
                method: Some(method),
                name,
            })
        })
        .collect()
}

/// `Mcp-Method` and `Mcp-Name`, when sent (once each), must agree with every call of the body:
/// the method, and the name (or a resource's URI) it calls.
pub fn check_headers(headers: &HeaderMap, calls: &[Call<'_>]) -> Result<(), BodyError> {
    for header in [MCP_METHOD, MCP_NAME] {
        let mut sent = headers.get_all(&header).iter();
        let Some(value) = sent.next() else {
            continue;
        };
        if sent.next().is_some() {
            return Err(BodyError::Header(format!("{header} is repeated")));
        }
        let value = value
            .to_str()
            .map_err(|_| BodyError::Header(format!("{header} is not visible ASCII")))?;
        let disagrees = calls.iter().any(|c| {
            let said = if header == MCP_METHOD {
                &c.method
            } else {
                &c.name
            };
            said.as_deref() != Some(value)
        });
        if disagrees {
            return Err(BodyError::Header(format!(
                "{header} does not agree with the JSON-RPC body"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(pairs: &[(&str, &[&str])]) -> Rules {
        Rules::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
        )
    }

    fn call<'a>(method: Option<&'a str>, name: Option<&'a str>) -> Call<'a> {
        Call {
            method: method.map(Cow::Borrowed),
            name: name.map(Cow::Borrowed),
        }
    }

    #[test]
    fn the_most_specific_rule_decides() {
        let r = rules(&[
            ("tools/call:delete_invoice", &["invoices.delete"]),
            ("tools/call", &["tools.call"]),
            ("prompts/get:summary", &["prompts"]),
            ("*", &["mcp"]),
        ]);
        let needs = |m, n| r.needs(&call(m, n)).to_vec();
        assert_eq!(
            needs(Some("tools/call"), Some("delete_invoice")),
            ["invoices.delete"]
        );
        assert_eq!(
            needs(Some("tools/call"), Some("list_invoices")),
            ["tools.call"]
        );
        assert_eq!(needs(Some("prompts/get"), Some("summary")), ["prompts"]);
        assert_eq!(needs(Some("prompts/get"), Some("other")), ["mcp"]);
        assert_eq!(needs(Some("tools/list"), None), ["mcp"]);
        // A response to the server, and a name on a method rules cannot name.
        assert_eq!(needs(None, None), ["mcp"]);
        assert_eq!(
            needs(Some("resources/read"), Some("delete_invoice")),
            ["mcp"]
        );
        assert_eq!(r.default_rule(), ["mcp"]);
        assert_eq!(
            r.scopes(),
            ["invoices.delete", "mcp", "prompts", "tools.call"]
        );
        let no_star = rules(&[("tools/list", &["mcp"])]);
        assert!(no_star
            .needs(&call(Some("tools/call"), Some("x")))
            .is_empty());
        assert!(no_star.default_rule().is_empty());
    }

    #[test]
    fn bodies_are_json_rpc_requests_notifications_responses_or_batches() {
        let one = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_invoice","arguments":{"id":7}}}"#;
        assert_eq!(
            parse(one).unwrap(),
            [call(Some("tools/call"), Some("delete_invoice"))]
        );
        let escaped =
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"de\u006cete"}}"#;
        assert_eq!(
            parse(escaped).unwrap(),
            [call(Some("tools/call"), Some("delete"))]
        );
        let batch = br#" [{"jsonrpc":"2.0","method":"notifications/initialized"},
            {"jsonrpc":"2.0","id":"a","result":{}},
            {"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"file:///a"}}]"#;
        assert_eq!(
            parse(batch).unwrap(),
            [
                call(Some("notifications/initialized"), None),
                call(None, None),
                call(Some("resources/read"), Some("file:///a")),
            ]
        );
        for bad in [
            &b"not json"[..],
            b"[]",
            b"{}",
            br#"{"jsonrpc":"1.0","method":"x"}"#,
            br#"{"jsonrpc":"2.0","id":1}"#,
            br#"{"jsonrpc":"2.0","method":7}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":1}}"#,
            br#"[{"jsonrpc":"2.0","method":"x"}, 3]"#,
            br#""string""#,
        ] {
            let refused = parse(bad);
            assert!(
                matches!(refused, Err(BodyError::Invalid(_))),
                "{:?} gave {refused:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn headers_must_agree_with_every_call() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, http::HeaderValue::from_static(v));
            }
            h
        };
        let calls = [call(Some("tools/call"), Some("delete_invoice"))];
        assert!(check_headers(&headers(&[]), &calls).is_ok());
        let agree = headers(&[("mcp-method", "tools/call"), ("mcp-name", "delete_invoice")]);
        assert!(check_headers(&agree, &calls).is_ok());
        for bad in [
            headers(&[("mcp-method", "tools/list")]),
            headers(&[("mcp-name", "list_invoices")]),
            headers(&[("mcp-method", "tools/call"), ("mcp-method", "tools/call")]),
        ] {
            assert!(matches!(
                check_headers(&bad, &calls),
                Err(BodyError::Header(_))
            ));
        }
        // A name where the body names nothing, and a batch of two methods.
        let list = [call(Some("tools/list"), None)];
        assert!(check_headers(&headers(&[("mcp-name", "x")]), &list).is_err());
        let two = [call(Some("tools/list"), None), call(Some("ping"), None)];
        assert!(check_headers(&headers(&[("mcp-method", "ping")]), &two).is_err());
    }
}
