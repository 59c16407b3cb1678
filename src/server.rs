//! A running isogate: bind every listener the file names, start each role on them, arm the
//! reload, and shut down in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::clock::Clock;
use crate::config::{Config, StoreConfig};
use crate::metrics::Metrics;
use crate::reload::reloader::Reloader;
use crate::reload::{self, FileWatch};
use crate::state::{Shared, Snapshot};
use crate::{admin, grants, http, issuer, proxy, Role};

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

/// A running isogate: its listeners and the shared snapshot they serve.
pub struct Server {
    state: Shared,
    addrs: Vec<(Role, SocketAddr)>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    /// Asks the reload task to load the file; `true` forces a swap even when the content hash
    /// is unchanged (SIGHUP).
    reload: mpsc::Sender<bool>,
    status: watch::Receiver<reload::Status>,
    reloader: JoinHandle<()>,
    admin: Arc<admin::Admin>,
    /// The admin listener's stop signal and task: it closes only after the others have
    /// drained, so that `/readyz` answers 503 (rather than nothing) meanwhile.
    admin_listener: Option<(watch::Sender<bool>, JoinHandle<()>)>,
    /// The threads serving the issuer and proxy listeners; they stop when the server is dropped.
    _workers: http::WorkerThreads,
}

/// The roles' state that outlives a reload.
struct Roles {
    /// The store, shared by the token service and the gateway's revocation list.
    grants: Option<grants::Grants>,
    service: Option<Arc<issuer::Service>>,
    gateway: Option<Arc<proxy::Gateway>>,
}

/// What the listeners were started with.
struct Started {
    addrs: Vec<(Role, SocketAddr)>,
    tasks: JoinSet<()>,
    admin_listener: Option<(watch::Sender<bool>, JoinHandle<()>)>,
    workers: http::WorkerThreads,
}

/// How often expired grants are swept from the store.
const SWEEP_EVERY: Duration = Duration::from_secs(600);
/// How often a fleet's instance reads the revocations of the others.
const REVOCATION_POLL: Duration = Duration::from_secs(1);

/// Descriptors kept aside for what is not a client connection: the grant store, key and
/// configuration files, the file watch, remote JWKS fetches.
const SPARE_DESCRIPTORS: u64 = 256;

impl Server {
    /// Binds every listener the configuration names and starts serving, on the system clock.
    /// Each logs `listening role=<role> addr=<ip:port>` with the real address.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        Self::start_with(config, Clock::system()).await
    }

    /// [`Server::start`] on `clock` (tests move an adjustable one).
    pub async fn start_with(config: Config, clock: Clock) -> Result<Server, StartError> {
        check_descriptors(&config);
        // aws-lc seeds its RNG on first use (tens of milliseconds); pay that before listening,
        // not in the first request.
        let mut seed = [0u8; 1];
        let _ = aws_lc_rs::rand::fill(&mut seed);
        let metrics = Arc::new(Metrics::new());
        let listeners = bind(&config).await?;
        let roles = Roles::new(&config, &metrics, &clock)?;
        if let Some(grants) = &roles.grants {
            start_store(grants, config.store.as_ref(), &clock).await?;
        }
        let grace = config.shutdown_grace;
        let store_url = config.store.as_ref().map(|s| s.shown.clone());
        let path = config.path.clone();
        let named = config.named_files();
        let snapshot = Snapshot::new(config);
        let status = watch::Sender::new(reload::Status {
            generation: 1,
            hash: reload::content_hash(&snapshot.config.text_hash, &named),
            ..Default::default()
        });
        let state: Shared = Arc::new(ArcSwap::from_pointee(snapshot));
        let store = roles
            .grants
            .as_ref()
            .and_then(|g| g.pg().cloned())
            .zip(store_url);
        let admin = Arc::new(admin::Admin::new(
            state.clone(),
            status.subscribe(),
            metrics.clone(),
            clock.clone(),
            store,
            roles.gateway.as_ref().map(|g| g.keys.clone()),
        ));
        let (stop, stop_rx) = watch::channel(false);
        let started = roles.serve(listeners, &state, &admin, &metrics, &clock, stop_rx, grace)?;
        // Bound sockets already queue connections: ready now (the `listening` lines come last).
        admin.set_ready(true);
        crate::memory::release_after_load();
        let reloader = Reloader {
            path,
            state: state.clone(),
            gateway: roles.gateway.clone(),
            status: status.clone(),
            metrics,
            admin: admin.clone(),
            clock,
        };
        let (reload, reloader) = arm_reload(reloader, named);
        // Last, once everything (the file watch included) is live: whoever waits for these
        // lines may use the server, and change its file, at once.
        for (role, addr) in &started.addrs {
            tracing::info!(role = %role, addr = %addr, "listening");
        }
        Ok(Server {
            state,
            addrs: started.addrs,
            stop,
            tasks: started.tasks,
            reload,
            status: status.subscribe(),
            reloader,
            admin,
            admin_listener: started.admin_listener,
            _workers: started.workers,
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

/// Binds the listener of every role the file configures (on this runtime; they are accepted
/// on by others), with their real addresses.
async fn bind(
    config: &Config,
) -> Result<Vec<(Role, SocketAddr, std::net::TcpListener)>, BindError> {
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
    let mut bound = Vec::new();
    for (role, addr) in wanted {
        let fail = |source| BindError { role, addr, source };
        let listener = TcpListener::bind(addr).await.map_err(fail)?;
        let local = listener.local_addr().map_err(fail)?;
        bound.push((role, local, listener.into_std().map_err(fail)?));
    }
    Ok(bound)
}

impl Roles {
    /// The store (opened once: changing `data_dir` or `[store]` takes a restart), the token
    /// service and the gateway, for the roles the file configures. The gateway refuses the
    /// revoked tokens the store knows of; a gateway alone has a store only with `[store]`.
    fn new(config: &Config, metrics: &Arc<Metrics>, clock: &Clock) -> Result<Self, StartError> {
        let pg = config
            .store
            .as_ref()
            .map(grants::PgStore::new)
            .transpose()?
            .map(Arc::new);
        let grants = match (&pg, &config.issuer) {
            (Some(store), _) => Some(grants::Grants::postgres(store.clone())),
            (None, Some(issuer)) => Some(grants::Grants::open(&issuer.data_dir)?),
            (None, None) => None,
        };
        let service = match (&config.issuer, &grants) {
            (Some(_), Some(grants)) => Some(Arc::new(issuer::Service {
                grants: grants.clone(),
                sessions: pg
                    .clone()
                    .map_or_else(Default::default, issuer::session::Sessions::postgres),
                passwords: issuer::passwords::Passwords::per_cpu(),
                proofs: Default::default(),
                registrations: Default::default(),
                clients: Default::default(),
                metrics: metrics.clone(),
                clock: clock.clone(),
            })),
            _ => None,
        };
        let revoked = grants
            .as_ref()
            .map_or_else(Arc::default, |g| g.revoked().clone());
        let gateway = config
            .proxy
            .is_some()
            .then(|| proxy::Gateway::new(config, revoked, metrics.clone(), clock.clone()));
        Ok(Roles {
            grants,
            service,
            gateway,
        })
    }

    /// Serves each listener with its role: the issuer and the gateway on the worker
    /// threads, the admin listener on this runtime.
    #[allow(clippy::too_many_arguments)]
    fn serve(
        &self,
        listeners: Vec<(Role, SocketAddr, std::net::TcpListener)>,
        state: &Shared,
        admin: &Arc<admin::Admin>,
        metrics: &Arc<Metrics>,
        clock: &Clock,
        stop: watch::Receiver<bool>,
        grace: Duration,
    ) -> Result<Started, StartError> {
        let (workers, threads) = http::Workers::start(workers()).map_err(StartError::Worker)?;
        let mut started = Started {
            addrs: Vec::new(),
            tasks: JoinSet::new(),
            admin_listener: None,
            workers: threads,
        };
        if let Some(grants) = self.grants.as_ref().filter(|g| g.pg().is_some()) {
            started.tasks.spawn(follow_revocations(
                grants.clone(),
                clock.clone(),
                metrics.clone(),
                stop.clone(),
            ));
        }
        for (role, addr, socket) in listeners {
            let Some(limits) = state.load().config.limits(role) else {
                continue;
            };
            let listener = http::Listener {
                socket,
                role: role.name(),
                limits,
                tls: crate::state::listener_tls(state, role),
                metrics: metrics.connections(role.name()),
            };
            let rx = stop.clone();
            match (role, &self.service, &self.gateway) {
                (Role::Issuer, Some(service), _) => {
                    started
                        .tasks
                        .spawn(sweep(service.grants.clone(), clock.clone(), rx.clone()));

                    let (state, service) = (state.clone(), service.clone());
                    let handle =
                        move |req, peer| issuer::handle(state.clone(), service.clone(), req, peer);
                    let serve = http::serve(listener, workers.clone(), handle, rx, grace);
                    started.tasks.spawn_on(serve, workers.first());
                }
                (Role::Proxy, _, Some(gateway)) => {
                    let (state, gateway) = (state.clone(), gateway.clone());
                    let handle =
                        move |req, peer| proxy::handle(state.clone(), gateway.clone(), req, peer);
                    let serve = http::serve(listener, workers.clone(), handle, rx, grace);
                    started.tasks.spawn_on(serve, workers.first());
                }
                (Role::Admin, _, _) => {
                    let (stop, rx) = watch::channel(false);
                    let admin = admin.clone();
                    let handle = move |req, peer| admin::handle(admin.clone(), req, peer);
                    let serve = http::serve(listener, http::Workers::current(), handle, rx, grace);
                    started.admin_listener = Some((stop, tokio::spawn(serve)));
                }
                _ => continue,
            }
            started.addrs.push((role, addr));
        }
        Ok(started)
    }
}

/// Starts the reloader with the file watch armed (before `start` returns, so that no change
/// made after it can be missed); returns the channel that asks it to reload.
fn arm_reload(
    reloader: Reloader,
    named: Vec<std::path::PathBuf>,
) -> (mpsc::Sender<bool>, JoinHandle<()>) {
    let (reload, triggers) = mpsc::channel(1);
    let (changes_tx, changes) = watch::channel(reload::Change::default());
    let mut files = vec![reloader.path.clone()];
    files.extend(named);
    let watch = if reloader.path.as_os_str().is_empty() {
        None
    } else {
        FileWatch::new(&files, changes_tx)
            .map_err(|e| tracing::warn!(error = %e, "cannot watch the configuration; reload with SIGHUP"))
            .ok()
    };
    let task = tokio::spawn(reloader.run(triggers, changes, watch, files));
    (reload, task)
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

/// Brings the store's schema up to date and reads what is revoked, when the store answers:
/// `serve` starts without it (SPEC §7) and tries again as requests come. A schema newer than
/// this binary knows stops the start.
async fn start_store(
    grants: &grants::Grants,
    config: Option<&StoreConfig>,
    clock: &Clock,
) -> Result<(), StartError> {
    if let (Some(store), Some(config)) = (grants.pg(), config) {
        match store.migrate().await {
            Ok(()) => tracing::info!(store = %config.shown, "store ready"),
            Err(e @ grants::StoreError::SchemaTooNew { .. }) => return Err(StartError::Store(e)),
            Err(e) => {
                tracing::warn!(
                    store = %config.shown,
                    error = %e,
                    "the store is unavailable: serving what needs no store, and trying again as requests come"
                );
                return Ok(());
            }
        }
    }
    if let Err(e) = grants.sync_revocations(clock.unix()).await {
        tracing::warn!(error = %e, "reading the revoked access tokens failed");
    }
    Ok(())
}

/// Follows the store's revocations as they are notified, and every [`REVOCATION_POLL`] in any
/// case, until `stop`, so that a token revoked at another instance is refused here within two
/// seconds (SPEC §7).
async fn follow_revocations(
    grants: grants::Grants,
    clock: Clock,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(REVOCATION_POLL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Woken at once by a revocation anywhere (LISTEN); the poll catches what a lost
    // notification or a reconnect missed.
    let wake = Arc::new(tokio::sync::Notify::new());
    let listening = grants.pg().cloned().map(|store| {
        let wake = wake.clone();
        tokio::spawn(async move { store.listen(&wake).await })
    });
    let mut failing = false;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = wake.notified() => {}
            _ = stop.wait_for(|stop| *stop) => break,
        }
        let start = std::time::Instant::now();
        let synced = grants.sync_revocations(clock.unix()).await;
        metrics.store(synced.is_ok().then(|| start.elapsed()));
        metrics.revoked_tokens(grants.revoked().len());
        match synced {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("reading the revoked access tokens works again");
            }
            Ok(()) => {}
            // Said once, not every second; the last list keeps being enforced.
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "reading the revoked access tokens failed; the last list stays in force");
            }
            Err(_) => {}
        }
    }
    if let Some(listening) = listening {
        listening.abort();
    }
}

/// Removes expired grants every [`SWEEP_EVERY`] until `stop`.
async fn sweep(grants: grants::Grants, clock: Clock, mut stop: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        match grants.sweep(clock.unix()).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "expired grants swept"),
            Err(e) => tracing::warn!(error = %e, "sweeping expired grants failed"),
        }
    }
}
