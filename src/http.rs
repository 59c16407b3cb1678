//! HTTP plumbing shared by every listener: the response body type, small response builders,
//! and the accept loop with graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Errors a response body can fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response isogate sends.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A response with `status` and a JSON body.
pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    // Serialising our own plain data types cannot fail.
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    json_bytes(status, Bytes::from(bytes))
}

/// A response with `status` and an already serialised JSON body.
pub fn json_bytes(status: StatusCode, bytes: Bytes) -> Response<Body> {
    let mut response = Response::new(full(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A plain-text response.
pub fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// 405 with the `Allow` header.
pub fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await.map(|_| ());
}

/// Largest request head (request line and headers) accepted; larger gets 431.
pub const MAX_HEAD: usize = 32 * 1024;

/// The connection settings of every listener: HTTP/1.1 and HTTP/2, a bounded request head, and
/// a deadline for the head to arrive (slow-loris).
pub fn server_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .max_buf_size(MAX_HEAD);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_header_list_size(MAX_HEAD as u32);
    builder
}

/// Where a TLS listener gets its settings, once per new connection: a reload that replaced the
/// certificate is seen by the next connection, while open connections keep theirs.
pub type TlsSource = Arc<dyn Fn() -> Arc<rustls::ServerConfig> + Send + Sync>;

/// How long a client has to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The runtimes connections are served on, taken in turn.
///
/// A connection stays on the runtime it was handed to, and so do the tasks it spawns (its
/// upstream connections' among them), so passing a request from one task to the next wakes no
/// other thread. With one single-threaded runtime per CPU, this is how nginx's workers run.
#[derive(Clone)]
pub struct Workers {
    handles: Arc<[tokio::runtime::Handle]>,
    next: Arc<std::sync::atomic::AtomicUsize>,
}

/// Keeps the worker threads of [`Workers::start`] running; dropping it stops them, cancelling
/// whatever they still run.
pub struct WorkerThreads {
    _stop: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Workers {
    /// The runtime this is called on, alone.
    pub fn current() -> Workers {
        Workers::from_handles(vec![tokio::runtime::Handle::current()])
    }

    /// `count` threads (at least one), each running a single-threaded runtime.
    pub fn start(count: usize) -> std::io::Result<(Workers, WorkerThreads)> {
        let mut handles = Vec::new();
        let mut stops = Vec::new();
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            std::thread::Builder::new()
                .name(format!("isogate-worker-{index}"))
                .spawn(move || {
                    // Sent or dropped: either way, stop.
                    let _ = runtime.block_on(stopped);
                })?;
            stops.push(stop);
        }
        Ok((
            Workers::from_handles(handles),
            WorkerThreads { _stop: stops },
        ))
    }

    fn from_handles(handles: Vec<tokio::runtime::Handle>) -> Workers {
        Workers {
            handles: handles.into(),
            next: Arc::default(),
        }
    }

    /// The first runtime, where accept loops run.
    pub fn first(&self) -> &tokio::runtime::Handle {
        &self.handles[0]
    }

    /// The runtime for the next connection.
    fn next(&self) -> &tokio::runtime::Handle {
        let turn = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        &self.handles[turn % self.handles.len()]
    }
}

/// Accepts connections on `listener` until `stop` turns true, serving each with `handle`
/// (HTTP/1.1 and HTTP/2) on one of `workers` in turn, over TLS when `tls` is given. Then waits
/// up to `grace` for open connections to finish.
pub async fn serve<F, Fut>(
    listener: std::net::TcpListener,
    workers: Workers,
    tls: Option<TlsSource>,
    handle: F,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) where
    F: Fn(http::Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    // Registered with the runtime this runs on, not the one that bound it.
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(error = %e, "cannot accept connections");
            return;
        }
    };
    let builders = Arc::new(Builders::new());
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let _ = stream.set_nodelay(true);
        let handle = handle.clone();
        let service = service_fn(move |req| {
            let handle = handle.clone();
            async move { Ok::<_, Infallible>(handle(req, peer).await) }
        });
        // Taken now, not after the handshake: shutdown waits for this connection from here on.
        let watcher = graceful.watcher();
        let builders = builders.clone();
        // The settings current at accept time; the handshake itself runs in the task.
        let acceptor = tls
            .as_ref()
            .map(|current| tokio_rustls::TlsAcceptor::from(current()));
        // Moved to the worker's runtime: its events must wake that runtime, not this one.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(error = %e, %peer, "cannot hand a connection to a worker");
                continue;
            }
        };
        workers.next().spawn(async move {
            let stream = match TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, %peer, "cannot serve a connection");
                    return;
                }
            };
            let Some(acceptor) = acceptor else {
                let io = TokioIo::new(stream);
                let conn = builders.any.serve_connection_with_upgrades(io, service);
                return finish(watcher.watch(conn.into_owned()).await, peer);
            };
            let Some(stream) = handshake(&acceptor, stream, peer).await else {
                return;
            };
            let builder = match stream.get_ref().1.alpn_protocol() {
                Some(b"h2") => &builders.h2,
                _ => &builders.any,
            };
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            finish(watcher.watch(conn.into_owned()).await, peer);
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?grace, "connections still open after the shutdown grace period; closing them");
    }
}

/// The connection settings of a listener: one that tells HTTP/1.1 from HTTP/2 by the first
/// bytes, and one for connections where ALPN already chose HTTP/2.
struct Builders {
    any: auto::Builder<TokioExecutor>,
    h2: auto::Builder<TokioExecutor>,
}

impl Builders {
    fn new() -> Self {
        let any = server_builder();
        let h2 = any.clone().http2_only();
        Builders { any, h2 }
    }
}

/// The TLS handshake on a new connection, within [`TLS_HANDSHAKE_TIMEOUT`]; a failure is the
/// client's problem and is logged at debug only.
async fn handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, %peer, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

fn finish(result: Result<(), BoxError>, peer: SocketAddr) {
    if let Err(e) = result {
        tracing::debug!(error = %e, %peer, "connection ended with an error");
    }
}

/// The pooled client isogate uses for upstreams and remote JWKS: HTTP/1.1 over TCP or rustls.
pub type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Body,
>;

/// Opens HTTP/1.1 connections over TCP, or over rustls for `https` URLs.
pub type Connector =
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

/// Builds the pooled client on `connector`.
pub fn client(connector: Connector) -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build(connector)
}

/// The connector of every outgoing connection; `https` is verified against the system's roots.
pub fn connector(connect_timeout: Duration) -> Connector {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match builder.with_native_roots() {
        Ok(builder) => builder,
        Err(e) => {
            tracing::warn!(error = %e, "no system root certificates; https upstreams will fail verification");
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            )
        }
    };
    builder.https_or_http().enable_http1().wrap_connector(http)
}

/// GETs `url` and parses its JSON body (at most `limit` bytes), within `timeout`.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    client: &Client,
    url: &str,
    timeout: Duration,
    limit: usize,
) -> Result<T, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
    let req = http::Request::get(uri)
        .header(header::ACCEPT, "application/json")
        .body(full(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let fetch = async {
        let response = client
            .request(req)
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("GET {url}: status {}", response.status()));
        }
        let body = http_body_util::Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| format!("GET {url}: not the JSON expected: {e}"))
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| format!("GET {url}: no answer within {timeout:?}"))?
}
