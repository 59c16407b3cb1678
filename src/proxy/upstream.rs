//! The gateway's connections to upstreams: HTTP/1.1 over TCP or TLS, kept open and reused, one
//! request at a time each (SPEC §4: upstream connections are pooled).
//!
//! hyper-util's general-purpose client puts a connection back into its pool from a task it
//! spawns for every response. Here the response body does it when it ends, so a request costs no
//! task and no wake-up besides the connection's own.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, Uri};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use rustc_hash::FxHashMap;
use thread_local::ThreadLocal;
use tower_service::Service;

use crate::config::Upstream;
use crate::http::{Body, BoxError, Connector};

/// Idle connections kept per upstream; more are closed when their response ends.
const MAX_IDLE_PER_UPSTREAM: usize = 256;
/// An idle connection older than this is closed instead of reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Where connections go: the route's `upstream` URL, as configured (hashing it is cheaper than
/// hashing a parsed authority, which goes byte by byte).
type Key = Arc<str>;

/// A connection waiting for its next request.
struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

/// The pool of upstream connections and the connector that opens new ones.
///
/// Each thread has a pool of its own: a connection's task runs on the runtime of the thread that
/// opened it, so a request handed to it wakes no other thread. (Under a multi-threaded runtime
/// a body may end on another thread than its request started on; its connection then joins that
/// thread's pool.)
pub struct Upstreams {
    connector: Connector,
    /// By upstream URL; Fx rather than SipHash, as the keys come from the configuration.
    idle: ThreadLocal<Mutex<FxHashMap<Key, Slot>>>,
}

/// The idle connections to one upstream, oldest first.
struct Slot {
    /// The map's key, handed to each response body that will give its connection back.
    key: Key,
    idle: Vec<Idle>,
}

impl Upstreams {
    /// An empty pool opening connections with `connector`.
    pub fn new(connector: Connector) -> Arc<Self> {
        Arc::new(Upstreams {
            connector,
            idle: ThreadLocal::new(),
        })
    }

    /// Sends `req`, whose URI is in origin form (path and query) and whose headers include
    /// `Host`, on an idle connection to `upstream` or a new one. A request that an idle
    /// connection closed before taking is sent again on a new connection.
    pub async fn send(
        self: &Arc<Self>,
        upstream: &Upstream,
        mut req: Request<Body>,
    ) -> Result<Response<Body>, BoxError> {
        loop {
            let (checked_out, key) = self.checkout(&upstream.url).await;
            let key = key.unwrap_or_else(|| upstream.url.clone());
            let (mut sender, reused) = match checked_out {
                Some(sender) => (sender, true),
                None => (self.connect(upstream).await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(response) => return Ok(self.returning(response, sender, key)),
                Err(mut e) => match e.take_message() {
                    // The idle connection was closed under us and the request never left: a
                    // new connection gets it.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }

    /// An idle connection to `upstream` that is ready for a request, the most recently used
    /// first, and the pool's key for `upstream` when it has one (so that requests share it).
    async fn checkout(&self, upstream: &str) -> (Option<SendRequest<Body>>, Option<Key>) {
        let mut key = None;
        loop {
            let idle = {
                let mut pool = self.lock();
                let Some(slot) = pool.get_mut(upstream) else {
                    return (None, key);
                };
                key.get_or_insert_with(|| slot.key.clone());
                let Some(idle) = slot.idle.pop() else {
                    return (None, key);
                };
                idle
            };
            if idle.since.elapsed() >= IDLE_TIMEOUT || idle.sender.is_closed() {
                continue;
            }
            let mut sender = idle.sender;
            // Its last response has ended; the connection may still be reading that response's
            // end, which takes no longer than one turn of its task.
            if sender.ready().await.is_ok() {
                return (Some(sender), key);
            }
        }
    }

    async fn connect(&self, upstream: &Upstream) -> Result<SendRequest<Body>, BoxError> {
        let uri = Uri::builder()
            .scheme(upstream.scheme.clone())
            .authority(upstream.authority.clone())
            .path_and_query("/")
            .build()?;
        let io = self.connector.clone().call(uri).await?;
        let (sender, connection) = http1::handshake(io).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// `response` with a body that puts `sender` back into the pool once it has ended.
    fn returning(
        self: &Arc<Self>,
        response: Response<Incoming>,
        sender: SendRequest<Body>,
        key: Key,
    ) -> Response<Body> {
        let (parts, body) = response.into_parts();
        let mut body = Returning {
            body,
            back: Some((sender, key, Arc::downgrade(self))),
        };
        if body.body.is_end_stream() {
            body.give_back();
        }
        Response::from_parts(parts, http_body_util::BodyExt::boxed_unsync(body))
    }

    fn give_back(&self, sender: SendRequest<Body>, key: Key) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut pool = self.lock();
        let list = &mut pool
            .entry(key.clone())
            .or_insert_with(|| Slot {
                key,
                idle: Vec::new(),
            })
            .idle;
        // Oldest first: the stale ones are at the front.
        let stale = list
            .iter()
            .take_while(|idle| now.duration_since(idle.since) >= IDLE_TIMEOUT)
            .count();
        list.drain(..stale);
        if list.len() < MAX_IDLE_PER_UPSTREAM {
            list.push(Idle { sender, since: now });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FxHashMap<Key, Slot>> {
        // Every critical section leaves the map consistent.
        self.idle
            .get_or_default()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A response body that returns its connection to the pool when it ends (read to the end, or
/// dropped once it has nothing left). A body dropped early takes its connection with it.
struct Returning {
    body: Incoming,
    back: Option<(SendRequest<Body>, Key, Weak<Upstreams>)>,
}

impl Returning {
    fn give_back(&mut self) {
        if let Some((sender, key, pool)) = self.back.take() {
            if let Some(pool) = pool.upgrade() {
                pool.give_back(sender, key);
            }
        }
    }
}

impl HttpBody for Returning {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => self.give_back(),
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        frame.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        // hyper stops polling a body that says it has ended, without asking for its end.
        if self.body.is_end_stream() {
            self.give_back();
        }
    }
}
