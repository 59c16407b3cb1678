//! HTTP plumbing shared by every listener: the response body type, small response builders,
//! the outgoing client, and (in [`serve`]) the accept loop with its connection limits.

mod serve;

pub(crate) use serve::{serve, Listener, TlsSource, WorkerThreads, Workers};

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioExecutor;

/// Errors a response body can fail with.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response isogate sends.
pub(crate) type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body holding `bytes`.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A response with `status` and a JSON body.
pub(crate) fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    // Serialising our own plain data types cannot fail.
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    json_bytes(status, Bytes::from(bytes))
}

/// A response with `status` and an already serialised JSON body.
pub(crate) fn json_bytes(status: StatusCode, bytes: Bytes) -> Response<Body> {
    let mut response = Response::new(full(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A plain-text response.
pub(crate) fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Why a request's `Host` is not acceptable (RFC 9112 §3.2), or `None` when it is: an
/// HTTP/1.1 request carries exactly one `Host`, any request at most one, and it must be a
/// valid `host[:port]`; an HTTP/2 request's `Host`, when sent, must name what `:authority`
/// names (RFC 9113 §8.3.1). Two readers of one request must never disagree on its host.
pub(crate) fn host_problem<B>(req: &http::Request<B>) -> Option<&'static str> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (_, Some(_)) => return Some("the request has more than one Host header"),
        (None, None) if req.version() == http::Version::HTTP_11 => {
            return Some("the request has no Host header")
        }
        (None, None) => return None,
        (Some(host), None) => host,
    };
    let valid = http::uri::Authority::try_from(host.as_bytes())
        .is_ok_and(|a| !a.as_str().contains('@') && !a.host().is_empty());
    if !valid {
        return Some("the Host header is not a valid host");
    }
    match req.uri().authority() {
        Some(authority)
            if !authority
                .as_str()
                .eq_ignore_ascii_case(host.to_str().unwrap_or("")) =>
        {
            Some("the Host header differs from the request's authority")
        }
        _ => None,
    }
}

/// 405 with the `Allow` header.
pub(crate) fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// The pooled client isogate uses for upstreams and remote JWKS: HTTP/1.1 over TCP or rustls.
pub(crate) type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Body,
>;

/// Opens HTTP/1.1 connections over TCP, or over rustls for `https` URLs.
pub(crate) type Connector =
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

/// Builds the pooled client on `connector`.
pub(crate) fn client(connector: Connector) -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build(connector)
}

/// The connector of every outgoing connection; `https` is verified against the system's roots.
pub(crate) fn connector(connect_timeout: Duration) -> Connector {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    tls().https_or_http().enable_http1().wrap_connector(http)
}

/// rustls verifying against the system's roots (`SSL_CERT_FILE` and `SSL_CERT_DIR` too).
pub(crate) fn tls() -> hyper_rustls::HttpsConnectorBuilder<hyper_rustls::builderstates::WantsSchemes>
{
    match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
        Ok(builder) => builder,
        Err(e) => {
            tracing::warn!(error = %e, "no system root certificates; https connections will fail verification");
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            )
        }
    }
}

/// GETs `url` and parses its JSON body (at most `limit` bytes), within `timeout`.
pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
    client: &Client,
    url: &str,
    timeout: Duration,
    limit: usize,
) -> Result<T, String> {
    let (_, body) = get(client, url, timeout, limit).await?;
    serde_json::from_slice(&body).map_err(|e| format!("GET {url}: not the JSON expected: {e}"))
}

/// GETs `url` asking for JSON: a `200`'s headers and body (at most `limit` bytes), within
/// `timeout`. Any other status is an error; redirects are not followed.
pub(crate) async fn get<C>(
    client: &hyper_util::client::legacy::Client<C, Body>,
    url: &str,
    timeout: Duration,
    limit: usize,
) -> Result<(HeaderMap, Bytes), String>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let uri: http::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
    let req = http::Request::get(uri)
        .header(header::ACCEPT, "application/json")
        .body(full(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let fetch = async {
        let response = client
            .request(req)
            .await
            .map_err(|e| format!("GET {url}: {}", error_chain(&e)))?;
        let status = response.status();
        if status.is_redirection() {
            return Err(format!(
                "GET {url}: status {status}; redirects are not followed"
            ));
        }
        if status != StatusCode::OK {
            return Err(format!("GET {url}: status {status}"));
        }
        let (parts, body) = response.into_parts();
        let body = http_body_util::Limited::new(body, limit)
            .collect()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?
            .to_bytes();
        Ok((parts.headers, body))
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| format!("GET {url}: no answer within {timeout:?}"))?
}

/// An error and its causes, `: `-joined, for logs and error descriptions (hyper's client error
/// alone says only "client error (Connect)").
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}
