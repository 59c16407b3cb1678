//! The admin listener (`[admin] listen`): liveness (`/healthz`), readiness (`/readyz`),
//! metrics (`/metrics`, OpenMetrics text) and a view of the configuration being served
//! (`/config`: generation, load time, file, hash, reload counts and the last rejection, never a
//! secret).
//!
//! Readiness: not ready until every listener is bound and serving and the gateway has the first
//! key set of every trusted issuer that `wait_for_keys`, ready while serving, and not ready
//! again from the moment shutdown begins. The admin listener keeps answering during the
//! drain (so `/readyz` says 503 rather than refusing) and closes last.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::grants::{Health, PgStore};
use crate::http::{full, json, method_not_allowed, text, Body};
use crate::metrics::{Metrics, CONTENT_TYPE};
use crate::reload;
use crate::state::Shared;

/// What the admin endpoints report: readiness, metrics, and the reload status.
pub(crate) struct Admin {
    ready: AtomicBool,
    /// Unix seconds at which the configuration being served was loaded.
    loaded_at: AtomicU64,
    metrics: Arc<Metrics>,
    status: watch::Receiver<reload::Status>,
    state: Shared,
    /// With `[store]`: the store, and its URL without the password.
    store: Option<(Arc<PgStore>, String)>,
    /// With a gateway: its keys, whose first key sets readiness waits for.
    keys: Option<Arc<crate::proxy::Keys>>,
}

impl Admin {
    /// Not ready yet; the configuration in `state` counts as loaded now.
    pub(crate) fn new(
        state: Shared,
        status: watch::Receiver<reload::Status>,
        metrics: Arc<Metrics>,
        clock: Clock,
        store: Option<(Arc<PgStore>, String)>,
        keys: Option<Arc<crate::proxy::Keys>>,
    ) -> Self {
        let admin = Admin {
            ready: AtomicBool::new(false),
            loaded_at: AtomicU64::new(0),
            metrics,
            status,
            state,
            store,
            keys,
        };
        admin.loaded(clock.now());
        admin
    }

    /// Sets what `/readyz` answers.
    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Whether `/readyz` answers 200 (the server's own readiness, not the key sets').
    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// `/readyz`: 200 when serving with every awaited key set, else 503 saying why.
    fn readiness(&self) -> Response<Body> {
        if !self.is_ready() {
            return text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n");
        }
        let awaited = self.keys.as_ref().map(|k| k.awaited()).unwrap_or_default();
        if awaited.is_empty() {
            return text(StatusCode::OK, "ready\n");
        }
        let body = format!(
            "not ready: waiting for the first key set of {}\n",
            awaited.join(", ")
        );
        text(StatusCode::SERVICE_UNAVAILABLE, body)
    }

    /// Records that a configuration was applied at `at`.
    pub(crate) fn loaded(&self, at: SystemTime) {
        let secs = crate::jwt::numeric_date(at);
        self.loaded_at.store(secs, Ordering::Relaxed);
    }

    /// The `/config` document.
    fn config_view(&self) -> ConfigView {
        let status = self.status.borrow().clone();
        let path = self.state.load().config.path.clone();
        let loaded_at = UNIX_EPOCH + Duration::from_secs(self.loaded_at.load(Ordering::Relaxed));
        ConfigView {
            generation: status.generation,
            loaded_at: humantime::format_rfc3339_seconds(loaded_at).to_string(),
            file: (!path.as_os_str().is_empty()).then(|| path.display().to_string()),
            hash: status.hash,
            applied: status.applied,
            rejected: status.rejected,
            last_error: status.last_error.clone(),
            store: self.store.as_ref().map(|(store, url)| StoreView {
                backend: "postgres",
                url: url.clone(),
                health: store.health(),
            }),
        }
    }
}

/// `/config`'s `store`, with `[store]`.
#[derive(Debug, Serialize)]
struct StoreView {
    backend: &'static str,
    /// Without the password.
    url: String,
    #[serde(flatten)]
    health: Health,
}

/// `GET /config`.
#[derive(Debug, Serialize)]
struct ConfigView {
    /// 1 at start, +1 per applied reload.
    generation: u64,
    /// When the configuration being served was loaded (RFC 3339, UTC).
    loaded_at: String,
    /// The resource file; `None` for a configuration not read from a file.
    file: Option<String>,
    /// SHA-256 (hex) of the file and every file it names, as last applied.
    hash: String,
    applied: u64,
    rejected: u64,
    /// Every problem of the last file, when the last reload was rejected.
    last_error: Option<String>,
    /// With `[store]`: whether PostgreSQL answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    store: Option<StoreView>,
}

/// Answers one request to the admin listener.
pub(crate) async fn handle(
    admin: Arc<Admin>,
    req: Request<Incoming>,
    _peer: SocketAddr,
) -> Response<Body> {
    if crate::http::host_problem(&req).is_some() {
        return text(StatusCode::BAD_REQUEST, "bad Host header\n");
    }
    answer(&admin, req.method(), req.uri().path())
}

fn answer(admin: &Admin, method: &Method, path: &str) -> Response<Body> {
    if !matches!(path, "/healthz" | "/readyz" | "/metrics" | "/config") {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if !matches!(*method, Method::GET | Method::HEAD) {
        return method_not_allowed("GET, HEAD");
    }
    let response = match path {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => admin.readiness(),
        "/metrics" => match admin.metrics.encode() {
            Ok(body) => {
                let mut response = Response::new(full(body));
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
                response
            }
            Err(e) => {
                tracing::error!(error = %e, "metrics unavailable");
                text(StatusCode::INTERNAL_SERVER_ERROR, "metrics unavailable\n")
            }
        },
        _ => json(StatusCode::OK, &admin.config_view()),
    };
    no_store(response)
}

/// Probes and metrics must never be answered from a cache.
fn no_store(mut response: Response<Body>) -> Response<Body> {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, MissingKeys};
    use crate::state::Snapshot;

    const CONFIG: &str = r#"
[admin]
listen = "127.0.0.1:0"
[proxy]
listen = "127.0.0.1:0"
[[api_scopes]]
name = "read"
[[api_resources]]
name = "urn:x"
scopes = ["read"]
[[routes]]
path_prefix = "/x"
upstream = "http://127.0.0.1:9"
resource = "urn:x"
"#;

    fn admin() -> (tempfile::TempDir, Admin) {
        let dir = tempfile::tempdir().unwrap();
        let config = parse(CONFIG, dir.path(), MissingKeys::Generate).unwrap();
        let state = Arc::new(arc_swap::ArcSwap::from_pointee(Snapshot::new(config)));
        let (_, status) = watch::channel(reload::Status::default());
        (
            dir,
            Admin::new(
                state,
                status,
                Arc::new(Metrics::new()),
                Clock::system(),
                None,
                None,
            ),
        )
    }

    #[test]
    fn readiness_follows_the_flag_and_liveness_does_not() {
        let (_dir, admin) = admin();
        let status = |path| answer(&admin, &Method::GET, path).status();
        assert_eq!(
            status("/readyz"),
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready at first"
        );
        assert_eq!(status("/healthz"), StatusCode::OK);
        admin.set_ready(true);
        assert_eq!(status("/readyz"), StatusCode::OK);
        admin.set_ready(false);
        assert_eq!(status("/readyz"), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status("/healthz"), StatusCode::OK);
    }
}
