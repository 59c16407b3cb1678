//! The accept loop of every listener and the life of each connection: the listener's
//! connection cap, the deadline for a connection's first request head, the idle timeout, the
//! worker runtimes connections are handed to, and graceful shutdown (SPEC §4, "Requests and
//! connections").
//!
//! A connection is *idle* while no request is in flight on it: from the moment its handler is
//! called until its response body has been sent (or dropped), a request is in flight. Idle
//! time is what the limits bound, for HTTP/1 and HTTP/2 alike, so that a client cannot hold a
//! connection by sending nothing, by sending only the HTTP/2 preface, or by never finishing a
//! header block: none of those ever starts a request.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Body, BoxError};
use crate::config::Limits;
use crate::metrics::ConnectionMetrics;

/// Largest request head (request line and headers) accepted; larger gets 431.
pub(crate) const MAX_HEAD: usize = 32 * 1024;

/// Where a TLS listener gets its settings, once per new connection: a reload that replaced the
/// certificate is seen by the next connection, while open connections keep theirs.
pub(crate) type TlsSource = Arc<dyn Fn() -> Arc<rustls::ServerConfig> + Send + Sync>;

/// How often, at most, the accept loop logs that accepting failed or that the connection cap
/// turned a connection away; the rest are counted into the next line.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// A bound socket and how to serve it.
pub(crate) struct Listener {
    /// The socket, bound (by another runtime than the one that accepts on it).
    pub socket: std::net::TcpListener,
    /// The role's name, for log lines.
    pub role: &'static str,
    /// The listener's connection limits.
    pub limits: Limits,
    /// TLS settings, when the listener speaks HTTPS.
    pub tls: Option<TlsSource>,
    /// The listener's connection series.
    pub metrics: ConnectionMetrics,
}

/// The runtimes connections are served on, taken in turn.
///
/// A connection stays on the runtime it was handed to, and so do the tasks it spawns (its
/// upstream connections' among them), so passing a request from one task to the next wakes no
/// other thread. With one single-threaded runtime per CPU, this is how nginx's workers run.
#[derive(Clone)]
pub(crate) struct Workers {
    handles: Arc<[tokio::runtime::Handle]>,
    next: Arc<AtomicUsize>,
}

/// Keeps the worker threads of [`Workers::start`] running; dropping it stops them, cancelling
/// whatever they still run.
pub(crate) struct WorkerThreads {
    _stop: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Workers {
    /// The runtime this is called on, alone.
    pub(crate) fn current() -> Workers {
        Workers::from_handles(vec![tokio::runtime::Handle::current()])
    }

    /// `count` threads (at least one), each running a single-threaded runtime.
    pub(crate) fn start(count: usize) -> std::io::Result<(Workers, WorkerThreads)> {
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
    pub(crate) fn first(&self) -> &tokio::runtime::Handle {
        &self.handles[0]
    }

    /// The runtime for the next connection.
    fn next(&self) -> &tokio::runtime::Handle {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        &self.handles[turn % self.handles.len()]
    }
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await.map(|_| ());
}

/// Accepts connections on `listener` until `stop` turns true, serving each with `handle`
/// (HTTP/1.1 and HTTP/2) on one of `workers` in turn, within the listener's limits. Then waits
/// up to `grace` for open connections to finish.
pub(crate) async fn serve<F, Fut>(
    listener: Listener,
    workers: Workers,
    handle: F,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) where
    F: Fn(http::Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let Listener {
        socket,
        role,
        limits,
        tls,
        metrics,
    } = listener;
    // Registered with the runtime this runs on, not the one that bound it.
    let socket = match TcpListener::from_std(socket) {
        Ok(socket) => socket,
        Err(e) => {
            tracing::error!(role = %role, error = %e, "cannot accept connections");
            return;
        }
    };
    let mut gate = Gate {
        role,
        limits,
        metrics,
        open: watch::channel(()).0,
        accept_errors: Throttled::default(),
        refusals: Throttled::default(),
    };
    let builders = Arc::new(Builders::new());
    // Requests in flight on any of the listener's connections, for the closing line.
    let requests = Arc::new(AtomicUsize::new(0));
    while let Some((stream, peer)) = gate.accept(&socket, &mut stop).await {
        let Some(held) = gate.admit() else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        // Moved to the worker's runtime: its events must wake that runtime, not this one.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(error = %e, %peer, "cannot hand a connection to a worker");
                continue;
            }
        };
        let activity = Arc::new(Activity::new(requests.clone()));
        let conn = Connection {
            handle: handle.clone(),
            activity,
            limits,
            stop: stop.clone(),
            timed_out: gate.metrics.timed_out.clone(),
            peer,
            // The settings current at accept time; the handshake itself runs in the task.
            acceptor: tls
                .as_ref()
                .map(|current| tokio_rustls::TlsAcceptor::from(current())),
            builders: builders.clone(),
            _held: held,
        };
        workers.next().spawn(conn.serve(stream));
    }
    drop(socket);
    let draining = requests.load(Ordering::Acquire);
    let cut = match tokio::time::timeout(grace, gate.open.closed()).await {
        Ok(()) => 0,
        Err(_) => {
            let cut = requests.load(Ordering::Acquire);
            tracing::warn!(role = %role, grace = %humantime::format_duration(grace), connections = gate.open.receiver_count(), requests = cut, "connections still open after the shutdown grace period; closing them");
            cut
        }
    };
    tracing::info!(
        role = %role,
        requests_drained = draining.saturating_sub(cut),
        requests_cut = cut,
        "stopped"
    );
}

/// The accept side of a listener: accepting with a back-off, and the cap.
struct Gate {
    role: &'static str,
    limits: Limits,
    metrics: ConnectionMetrics,
    /// Every open connection holds a receiver: their count is the number open, and shutdown
    /// waits for the last one to drop.
    open: watch::Sender<()>,
    accept_errors: Throttled,
    refusals: Throttled,
}

impl Gate {
    /// The next connection, or `None` once `stop` turns true. Accepting that fails (out of
    /// file descriptors and the like) backs off instead of spinning, and is logged at most
    /// once per [`LOG_EVERY`].
    async fn accept(
        &mut self,
        socket: &TcpListener,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<(TcpStream, SocketAddr)> {
        loop {
            tokio::select! {
                accepted = socket.accept() => match accepted {
                    Ok(conn) => return Some(conn),
                    Err(e) => {
                        let role = self.role;
                        self.accept_errors.log(|suppressed| {
                            tracing::warn!(role = %role, error = %e, suppressed, "accept failed");
                        });
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                () = stopped(stop) => return None,
            }
        }
    }

    /// A place under the cap for a new connection, or `None` (counted, and logged at most once
    /// per [`LOG_EVERY`]) when `max_connections` are open: the connection is then dropped.
    fn admit(&mut self) -> Option<Held> {
        let max_connections = self.limits.max_connections;
        if self.open.receiver_count() >= max_connections {
            self.metrics.refused.inc();
            let role = self.role;
            self.refusals.log(|suppressed| {
                tracing::warn!(
                    role,
                    max_connections,
                    suppressed,
                    "connection limit reached; closing new connections"
                );
            });
            return None;
        }
        self.metrics.open.inc();
        Some(Held {
            _open: self.open.subscribe(),
            gauge: self.metrics.open.clone(),
        })
    }
}

/// One accepted connection, on its way to a worker.
struct Connection<F> {
    handle: F,
    activity: Arc<Activity>,
    limits: Limits,
    stop: watch::Receiver<bool>,
    timed_out: prometheus_client::metrics::counter::Counter,
    peer: SocketAddr,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    builders: Arc<Builders>,
    _held: Held,
}

impl<F, Fut> Connection<F>
where
    F: Fn(http::Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    /// Serves the connection on the runtime this runs on: the TLS handshake first when the
    /// listener has TLS (within `request_header_timeout` of the accept), then HTTP.
    async fn serve(self, stream: std::net::TcpStream) {
        let peer = self.peer;
        let stream = match TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(error = %e, %peer, "cannot serve a connection");
                return;
            }
        };
        let Connection {
            handle,
            activity,
            limits,
            stop,
            timed_out,
            acceptor,
            builders,
            _held,
            ..
        } = self;
        // A request is in flight on `activity` until its response body has been sent.
        let service = {
            let activity = activity.clone();
            service_fn(move |req| {
                let in_flight = activity.begin();
                let response = handle(req, peer);
                async move {
                    let response = response.await.map(|body| Tracked {
                        body,
                        _in_flight: in_flight,
                    });
                    Ok::<_, Infallible>(response)
                }
            })
        };
        let conn = Conn {
            activity: &activity,
            limits,
            stop,
            timed_out,
            peer,
        };
        let Some(acceptor) = acceptor else {
            let served = builders
                .any
                .serve_connection_with_upgrades(TokioIo::new(stream), service);
            return conn.drive(served).await;
        };
        let deadline = activity.born + limits.request_header_timeout;
        let stream = match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, %peer, "TLS handshake failed");
                return;
            }
            Err(_) => {
                conn.timed_out.inc();
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        };
        let builder = match stream.get_ref().1.alpn_protocol() {
            Some(b"h2") => &builders.h2,
            _ => &builders.any,
        };
        let served = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        conn.drive(served).await;
    }
}

/// What an open connection holds until it ends: its place under the cap and in the gauge.
struct Held {
    _open: watch::Receiver<()>,
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Logs at most once per [`LOG_EVERY`], saying how many it kept quiet since.
#[derive(Default)]
struct Throttled {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttled {
    fn log(&mut self, log: impl FnOnce(u64)) {
        let now = Instant::now();
        if self.last.is_some_and(|last| now < last + LOG_EVERY) {
            self.suppressed += 1;
            return;
        }
        log(self.suppressed);
        self.last = Some(now);
        self.suppressed = 0;
    }
}

/// The connection settings of a listener: one that tells HTTP/1.1 from HTTP/2 by the first
/// bytes, and one for connections where ALPN already chose HTTP/2.
struct Builders {
    any: auto::Builder<TokioExecutor>,
    h2: auto::Builder<TokioExecutor>,
}

impl Builders {
    /// HTTP/1.1 and HTTP/2 with a bounded request head. The time a head may take is bounded by
    /// [`Conn::drive`], not by hyper: hyper's HTTP/1 header timeout would also close a
    /// keep-alive connection between requests, before its `idle_timeout`.
    fn new() -> Self {
        let mut any = auto::Builder::new(TokioExecutor::new());
        any.http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(None)
            .max_buf_size(MAX_HEAD);
        any.http2()
            .timer(hyper_util::rt::TokioTimer::new())
            .max_header_list_size(MAX_HEAD as u32);
        let h2 = any.clone().http2_only();
        Builders { any, h2 }
    }
}

/// When a connection's requests begin and end.
struct Activity {
    born: Instant,
    in_flight: AtomicUsize,
    /// Requests in flight on all of the listener's connections.
    listener: Arc<AtomicUsize>,
    /// When the last request ended, in milliseconds after `born`; [`Activity::NEVER`] before
    /// the first.
    last_end: AtomicU64,
}

impl Activity {
    const NEVER: u64 = u64::MAX;

    fn new(listener: Arc<AtomicUsize>) -> Self {
        Activity {
            born: Instant::now(),
            in_flight: AtomicUsize::new(0),
            listener,
            last_end: AtomicU64::new(Self::NEVER),
        }
    }

    /// A request begins; it ends when the returned guard drops.
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.listener.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// When the connection will have been idle too long, or `None` while a request is in
    /// flight: `request_header_timeout` after its start until a first request begins,
    /// `idle_timeout` after the end of the last request from then on.
    fn idle_deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(match self.last_end.load(Ordering::Acquire) {
            Self::NEVER => self.born + limits.request_header_timeout,
            ms => self.born + Duration::from_millis(ms) + limits.idle_timeout,
        })
    }
}

/// A request in flight on a connection.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let ms = u64::try_from(activity.born.elapsed().as_millis()).unwrap_or(Activity::NEVER - 1);
        // Stored before the count drops, so whoever sees no request in flight sees this end.
        activity.last_end.store(ms, Ordering::Release);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
        activity.listener.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request in flight until it has been sent or dropped.
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// One connection being served.
struct Conn<'a> {
    activity: &'a Activity,
    limits: Limits,
    stop: watch::Receiver<bool>,
    timed_out: prometheus_client::metrics::counter::Counter,
    peer: SocketAddr,
}

impl Conn<'_> {
    /// Serves `conn` until it ends, shutting it down gracefully when the server stops or when
    /// it has been idle too long. A connection shut down for idleness that does not close
    /// within `request_header_timeout` more (an HTTP/2 peer that never answers the GOAWAY's
    /// ping) is dropped.
    async fn drive<C: GracefulConnection>(mut self, conn: C)
    where
        C::Error: std::fmt::Display,
    {
        let mut conn = std::pin::pin!(conn);
        // Requests begin and end without waking this task: it looks again at least every
        // `idle_timeout`, so a deadline computed before a request began is never waited out.
        let every = self.limits.idle_timeout;
        let first = self.activity.born + self.limits.request_header_timeout.min(every);
        let sleep = tokio::time::sleep_until(first);
        let mut sleep = std::pin::pin!(sleep);
        loop {
            tokio::select! {
                result = conn.as_mut() => return self.finish(result),
                () = stopped(&mut self.stop) => {
                    // The server's shutdown grace bounds this wait.
                    conn.as_mut().graceful_shutdown();
                    let result = conn.await;
                    return self.finish(result);
                }
                () = &mut sleep => {
                    let now = Instant::now();
                    match self.activity.idle_deadline(&self.limits) {
                        Some(deadline) if deadline <= now => break,
                        Some(deadline) => sleep.as_mut().reset(deadline.min(now + every)),
                        None => sleep.as_mut().reset(now + every),
                    }
                }
            }
        }
        self.timed_out.inc();
        tracing::debug!(peer = %self.peer, "closing an idle connection");
        conn.as_mut().graceful_shutdown();
        if let Ok(result) = tokio::time::timeout(self.limits.request_header_timeout, conn).await {
            self.finish(result);
        }
    }

    fn finish<E: std::fmt::Display>(&self, result: Result<(), E>) {
        if let Err(e) = result {
            tracing::debug!(error = %e, peer = %self.peer, "connection ended with an error");
        }
    }
}
