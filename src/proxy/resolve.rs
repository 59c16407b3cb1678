//! The gateway's first stage: what a request targets. Its method, `Host` and request target
//! are checked, its path normalised, and the route chosen (SPEC §4, "Route choice" and
//! "Requests and connections"), or the RFC 9728 document of a route is the answer.

use http::{header, HeaderValue, Method, Request, Response, StatusCode, Version};

use super::route::{self, PathError};
use super::METADATA_PATH;
use crate::config::Route;
use crate::http::{json, method_not_allowed, Body};
use crate::resources::ApiResource;
use crate::state::Snapshot;

/// A route chosen, with what the next stages need of it.
pub struct Target<'s> {
    /// The route.
    pub route: &'s Route,
    /// Its API resource.
    pub resource: &'s ApiResource,
    /// The normalised path: routed and forwarded.
    pub path: String,
    /// The host the client addressed (`:authority` or `Host`), when it is visible ASCII; shared
    /// with the request, not copied.
    pub host: Option<HeaderValue>,
}

/// What a request is for.
pub enum Resolved<'s> {
    /// A route, to enforce and forward.
    Route(Target<'s>),
    /// The RFC 9728 document of a route: answered by the gateway itself.
    Metadata(Response<Body>),
}

/// Why the gateway answers a request without looking at its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `[proxy]` is gone from the file.
    NotConfigured,
    /// `CONNECT` or `TRACE` (405).
    Method,
    /// `Host` missing, repeated or invalid (400).
    Host(&'static str),
    /// An absolute-form request target on HTTP/1 (400).
    Target,
    /// A path SPEC §4 refuses (400).
    Path(PathError),
    /// No route fits (404).
    NoRoute,
    /// A metadata document asked with another method than GET or HEAD (405).
    MetadataMethod,
    /// The route's resource is gone from the file (validation prevents it).
    NoResource,
}

impl Refusal {
    /// The reason as logged and counted.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::NotConfigured | Refusal::NoResource => "not_configured",
            Refusal::Method => "method_not_allowed",
            Refusal::Host(_) => "bad_host",
            Refusal::Target => "bad_target",
            Refusal::Path(_) => "bad_path",
            Refusal::NoRoute => "no_route",
            Refusal::MetadataMethod => "metadata",
        }
    }

    /// The response the client sees.
    pub fn response(self) -> Response<Body> {
        let invalid = |description: &str| {
            json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({"error": "invalid_request", "error_description": description}),
            )
        };
        match self {
            Refusal::NotConfigured => json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"error": "the gateway is not configured"}),
            ),
            Refusal::NoResource => json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"error": "the route's resource is not configured"}),
            ),
            Refusal::Method => {
                let mut response = json(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &serde_json::json!({"error": "method_not_allowed"}),
                );
                response.headers_mut().insert(
                    header::ALLOW,
                    HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
                );
                response
            }
            Refusal::Host(problem) => invalid(problem),
            Refusal::Target => invalid("absolute-form request targets are not accepted"),
            Refusal::Path(_) => invalid("the request path is not acceptable"),
            Refusal::NoRoute => json(
                StatusCode::NOT_FOUND,
                &serde_json::json!({"error": "no route"}),
            ),
            Refusal::MetadataMethod => method_not_allowed("GET, HEAD"),
        }
    }
}

/// The first stage: the route `req` targets, or the metadata document it asks for.
pub fn resolve<'s, B>(snapshot: &'s Snapshot, req: &Request<B>) -> Result<Resolved<'s>, Refusal> {
    let config = &snapshot.config;
    if config.proxy.is_none() {
        return Err(Refusal::NotConfigured);
    }
    // A tunnel or a loop-back of the request's own headers is never what an API is for.
    if matches!(*req.method(), Method::CONNECT | Method::TRACE) {
        return Err(Refusal::Method);
    }
    if let Some(problem) = crate::http::host_problem(req) {
        return Err(Refusal::Host(problem));
    }
    // HTTP/1 requests must use origin-form (`/path`); HTTP/2 carries the authority apart.
    if req.version() < Version::HTTP_2 && req.uri().authority().is_some() {
        return Err(Refusal::Target);
    }
    let path = route::normalize(req.uri().path()).map_err(Refusal::Path)?;
    let host = host(req);
    // `host` only returns values that are visible ASCII.
    let host_str = host.as_ref().and_then(|h| h.to_str().ok());
    if let Some(suffix) = path.strip_prefix(METADATA_PATH) {
        return metadata(snapshot, req.method(), suffix, host_str).map(Resolved::Metadata);
    }
    // `select` takes the raw authority: it ignores the port and compares case-insensitively.
    let route = snapshot
        .routes
        .select(&config.routes, host_str, &path)
        .ok_or(Refusal::NoRoute)?;
    let resource = config
        .model
        .api_resource(&route.resource)
        .ok_or(Refusal::NoResource)?;
    Ok(Resolved::Route(Target {
        route,
        resource,
        path,
        host,
    }))
}

/// The host the client addressed: `:authority` for HTTP/2, else the `Host` header; `None` when
/// it is not visible ASCII. The header's value is shared, not copied.
fn host<B>(req: &Request<B>) -> Option<HeaderValue> {
    match req.uri().authority() {
        Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
        None => req
            .headers()
            .get(header::HOST)
            .filter(|h| h.to_str().is_ok())
            .cloned(),
    }
}

/// The RFC 9728 document of the route whose prefix is `suffix` (and whose host fits).
fn metadata(
    snapshot: &Snapshot,
    method: &Method,
    suffix: &str,
    host: Option<&str>,
) -> Result<Response<Body>, Refusal> {
    let config = &snapshot.config;
    let suffix = if suffix.is_empty() { "/" } else { suffix };
    let route = snapshot
        .routes
        .exact(&config.routes, host, suffix)
        .ok_or(Refusal::NoRoute)?;
    if !matches!(*method, Method::GET | Method::HEAD) {
        return Err(Refusal::MetadataMethod);
    }
    let mut servers: Vec<&str> = config.issuer.iter().map(|i| i.issuer.as_str()).collect();
    if let Some(proxy) = &config.proxy {
        servers.extend(proxy.trusted_issuers.iter().map(|t| t.issuer.as_str()));
    }
    let resource = config.model.api_resource(&route.resource);
    // SPEC §10: an MCP route's rules say which scopes its calls can need.
    let scopes: Vec<&str> = match (&route.mcp, resource) {
        (Some(rules), _) => rules.scopes(),
        (None, Some(r)) => r.scopes.iter().map(String::as_str).collect(),
        (None, None) => Vec::new(),
    };
    let mut document = serde_json::json!({
        "resource": route.resource,
        "authorization_servers": servers,
        "scopes_supported": scopes,
        "bearer_methods_supported": ["header"],
        "dpop_signing_alg_values_supported": crate::dpop::ALGS.split(' ').collect::<Vec<_>>(),
    });
    if resource.is_some_and(|r| r.require_dpop) {
        document["dpop_bound_access_tokens_required"] = serde_json::Value::Bool(true);
    }
    Ok(json(StatusCode::OK, &document))
}
