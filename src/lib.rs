//! isogate: OAuth 2.0 resource isolation for any HTTP API.
//!
//! One resource file (see [`config`]) drives a token service ([`issuer`]) that mints RFC 9068
//! access tokens cut down to one API resource (RFC 8707), and a gateway that lets a request
//! through only with a token minted for the API it targets.

pub mod admin;
pub mod clock;
pub mod config;
pub mod grants;
pub mod http;
pub mod issuer;
pub mod jwt;
pub mod metrics;
pub mod protocol;
pub mod proxy;
pub mod resources;
pub mod secret;
pub mod state;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::state::{Shared, Snapshot};

/// A listener's job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The token service.
    Issuer,
    /// The gateway.
    Proxy,
    /// Health and metrics.
    Admin,
}

impl Role {
    /// `issuer`, `proxy` or `admin`: the name in log lines and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Role::Issuer => "issuer",
            Role::Proxy => "proxy",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for the {role}: {source}")]
pub struct BindError {
    /// Which listener.
    pub role: Role,
    /// The address asked for.
    pub addr: SocketAddr,
    /// Why.
    pub source: std::io::Error,
}

/// A running isogate: its listeners and the shared snapshot they serve.
pub struct Server {
    state: Shared,
    addrs: Vec<(Role, SocketAddr)>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    /// Asks the reload task to load the file; `true` forces a swap even when the content hash
    /// is unchanged (SIGHUP).
    reload: tokio::sync::mpsc::Sender<bool>,
    status: watch::Receiver<reload::Status>,
    reloader: tokio::task::JoinHandle<()>,
    admin: Arc<admin::Admin>,
    /// The admin listener's stop signal and task: it closes only after the others have
    /// drained, so that `/readyz` answers 503 (rather than nothing) meanwhile.
    admin_listener: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
    /// The threads serving the issuer and proxy listeners; they stop when the server is dropped.
    _workers: http::WorkerThreads,
}

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The grant store under `data_dir` could not be opened.
    #[error(transparent)]
    Store(#[from] grants::StoreError),
    /// A worker thread or its runtime could not be started.
    #[error("cannot start a worker thread: {0}")]
    Worker(std::io::Error),
}

/// How many threads serve the issuer and proxy listeners: `ISOGATE_WORKERS`, or one per CPU.
fn workers() -> usize {
    let cpus = || std::thread::available_parallelism().map_or(1, usize::from);
    match std::env::var("ISOGATE_WORKERS") {
        Ok(text) => match text.trim().parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                tracing::warn!(value = %text, "ISOGATE_WORKERS is not a positive number; using one worker per CPU");
                cpus()
            }
        },
        Err(_) => cpus(),
    }
}

/// Descriptors kept aside for what is not a client connection: the grant store, key and
/// configuration files, the file watch, remote JWKS fetches.
const SPARE_DESCRIPTORS: u64 = 256;

/// Warns when the listeners' `max_connections` could together take more descriptors than the
/// process may open: then the public listeners could fill up the process before their caps do,
/// and the admin listener would stop answering too. A gateway connection counts twice (its
/// upstream connection).
fn check_descriptors(config: &Config) {
    let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) else {
        return;
    };
    let cap = |role| config.limits(role).map_or(0, |l| l.max_connections as u64);
    let needed = cap(Role::Issuer) + 2 * cap(Role::Proxy) + cap(Role::Admin) + SPARE_DESCRIPTORS;
    if needed > soft {
        tracing::warn!(
            open_file_limit = soft,
            needed,
            "the listeners' max_connections (a gateway connection counts twice, for its upstream) \
             may exceed the open-file limit; lower max_connections or raise the limit (ulimit -n)"
        );
    }
}

/// How often expired grants are swept from the store.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

impl Server {
    /// Binds every listener the configuration names and starts serving. Each logs
    /// `listening role=<role> addr=<ip:port>` with the real address.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        let grace = config.shutdown_grace;
        check_descriptors(&config);
        // aws-lc seeds its RNG on first use (tens of milliseconds); pay that before listening,
        // not in the first request.
        let mut seed = [0u8; 1];
        let _ = aws_lc_rs::rand::fill(&mut seed);
        let mut wanted = Vec::new();
        if let Some(issuer) = &config.issuer {
            wanted.push((Role::Issuer, issuer.listen));
        }
        if let Some(proxy) = &config.proxy {
            wanted.push((Role::Proxy, proxy.listen));
        }
        if let Some(admin) = config.admin {
            wanted.push((Role::Admin, admin.listen));
        }
        let metrics = Arc::new(Metrics::new());
        // The grant store is opened once: changing `data_dir` takes a restart.
        let service = match &config.issuer {
            Some(issuer) => Some(Arc::new(issuer::Service {
                grants: grants::Grants::open(&issuer.data_dir)?,
                sessions: issuer::session::Sessions::default(),
                passwords: issuer::passwords::Passwords::per_cpu(),
                metrics: metrics.clone(),
            })),
            None => None,
        };
        let snapshot = Snapshot::new(config);
        let gateway = snapshot
            .config
            .proxy
            .is_some()
            .then(|| proxy::Gateway::new(&snapshot, metrics.clone()));
        let path = snapshot.config.path.clone();
        let named = snapshot.config.named_files();
        let state: Shared = Arc::new(ArcSwap::from_pointee(snapshot));
        let (stop, stop_rx) = watch::channel(false);
        let mut listeners = Vec::new();
        for (role, addr) in wanted {
            let listener =
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| BindError { role, addr, source })?;
            let local = listener
                .local_addr()
                .map_err(|source| BindError { role, addr, source })?;
            // Accepted on by another runtime than this one.
            let listener =
                listener
                    .into_std()
                    .map_err(|source| BindError { role, addr, source })?;
            listeners.push((role, local, listener));
        }
        let status = watch::Sender::new(reload::Status {
            generation: 1,
            hash: reload::content_hash(&state.load().config.text_hash, &named),
            ..Default::default()
        });
        let admin = Arc::new(admin::Admin::new(
            state.clone(),
            status.subscribe(),
            metrics.clone(),
        ));
        let mut admin_listener = None;
        let mut tasks = JoinSet::new();
        let (workers, worker_threads) =
            http::Workers::start(workers()).map_err(StartError::Worker)?;
        let mut addrs = Vec::new();
        for (role, addr, socket) in listeners {
            let rx = stop_rx.clone();
            let Some(limits) = state.load().config.limits(role) else {
                continue;
            };
            let listener = http::Listener {
                socket,
                role: role.name(),
                limits,
                tls: crate::state::listener_tls(&state, role),
                metrics: metrics.connections(role.name()),
            };
            match role {
                Role::Issuer => {
                    let state = state.clone();
                    let Some(service) = service.clone() else {
                        continue;
                    };
                    tasks.spawn(sweep(service.grants.clone(), rx.clone()));
                    let handle =
                        move |req, peer| issuer::handle(state.clone(), service.clone(), req, peer);
                    let serve = http::serve(listener, workers.clone(), handle, rx, grace);
                    tasks.spawn_on(serve, workers.first());
                }
                Role::Proxy => {
                    let state = state.clone();
                    let Some(gateway) = gateway.clone() else {
                        continue;
                    };
                    let handle =
                        move |req, peer| proxy::handle(state.clone(), gateway.clone(), req, peer);
                    let serve = http::serve(listener, workers.clone(), handle, rx, grace);
                    tasks.spawn_on(serve, workers.first());
                }
                Role::Admin => {
                    let (stop, rx) = watch::channel(false);
                    let admin = admin.clone();
                    let handle = move |req, peer| admin::handle(admin.clone(), req, peer);
                    let serve = http::serve(listener, http::Workers::current(), handle, rx, grace);
                    admin_listener = Some((stop, tokio::spawn(serve)));
                }
            }
            addrs.push((role, addr));
        }
        // Bound sockets already queue connections: ready now (the `listening` lines come last).
        admin.set_ready(true);
        let (reload, triggers) = tokio::sync::mpsc::channel(1);
        let reloader = reload::reloader::Reloader {
            path,
            state: state.clone(),
            gateway,
            status: status.clone(),
            metrics,
            admin: admin.clone(),
        };
        // Armed before `start` returns, so no change made after it can be missed.
        let (changes_tx, changes) = watch::channel(reload::Change::default());
        let mut files = vec![reloader.path.clone()];
        files.extend(named);
        let watch = if reloader.path.as_os_str().is_empty() {
            None
        } else {
            reload::FileWatch::new(&files, changes_tx)
                .map_err(|e| tracing::warn!(error = %e, "cannot watch the configuration; reload with SIGHUP"))
                .ok()
        };
        let reloader = tokio::spawn(reloader.run(triggers, changes, watch, files));
        // Last, once everything (the file watch included) is live: whoever waits for these
        // lines may use the server, and change its file, at once.
        for (role, addr) in &addrs {
            tracing::info!(role = %role, addr = %addr, "listening");
        }
        Ok(Server {
            state,
            addrs,
            stop,
            tasks,
            reload,
            status: status.subscribe(),
            reloader,
            admin,
            admin_listener,
            _workers: worker_threads,
        })
    }

    /// The real address of a role's listener.
    pub fn addr(&self, role: Role) -> Option<SocketAddr> {
        self.addrs.iter().find(|(r, _)| *r == role).map(|(_, a)| *a)
    }

    /// The snapshot being served.
    pub fn state(&self) -> &Shared {
        &self.state
    }

    /// Asks for the file to be loaded again now (as SIGHUP does); watch [`Server::status`]
    /// for the outcome.
    pub fn reload(&self) {
        // A full channel already holds a pending reload.
        let _ = self.reload.try_send(true);
    }

    /// The outcome of the last reload attempt; changes after every attempt.
    pub fn status(&self) -> watch::Receiver<reload::Status> {
        self.status.clone()
    }

    /// Turns not ready, stops accepting, lets in-flight requests finish (up to
    /// `shutdown_grace`), closes the admin listener last, and returns.
    pub async fn shutdown(mut self) {
        self.admin.set_ready(false);
        self.reloader.abort();
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        if let Some((stop, task)) = self.admin_listener.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
    }
}

/// Removes expired grants every [`SWEEP_EVERY`] until `stop`.
async fn sweep(grants: grants::Grants, mut stop: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        let grants = grants.clone();
        let now = proxy::keys::unix_now();
        match tokio::task::spawn_blocking(move || grants.sweep(now)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(removed)) => tracing::info!(removed, "expired grants swept"),
            Ok(Err(e)) => tracing::warn!(error = %e, "sweeping expired grants failed"),
            Err(e) => tracing::warn!(error = %e, "sweeping expired grants failed"),
        }
    }
}

/// Something stopped a running server.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A listener could not be bound or the grant store opened.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Serves `config` until SIGTERM or SIGINT, reloading the file on SIGHUP.
pub async fn run(config: Config) -> Result<(), RunError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(RunError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(RunError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(RunError::Signals)?;
    let server = Server::start(config).await?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => server.reload(),
        }
    }
    tracing::info!("shutting down: no new connections, draining in-flight requests");
    server.shutdown().await;
    Ok(())
}
pub mod reload;
