//! The one place a configuration is reloaded: wait until the file has settled, read it,
//! validate fully, build the snapshot, swap.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::{combined_hash, files_hash, Change, FileWatch, Status};
use crate::admin::Admin;
use crate::clock::Clock;
use crate::config::{self, Config, MissingKeys};
use crate::metrics::Metrics;
use crate::proxy::Gateway;
use crate::state::{Shared, Snapshot};
use crate::Role;

/// A file must read the same twice this far apart before it is applied: a writer that pauses
/// mid-write without the watch seeing it (an mmap, a network file system) is not applied torn.
/// Counted from each file's first read, so a load that takes this long (a big file) waits no
/// more.
const QUIET: Duration = Duration::from_millis(100);

/// How long a file being written in place (modified, not yet closed) is waited for before it
/// is read anyway (then [`QUIET`] still applies): a writer that keeps the file open, or a
/// file system that reports no close.
const STALL: Duration = Duration::from_secs(2);

/// Reads, validates and swaps in the resource file when it changes or when asked to.
pub(crate) struct Reloader {
    pub(crate) path: PathBuf,
    pub(crate) state: Shared,
    pub(crate) gateway: Option<Arc<Gateway>>,
    pub(crate) status: watch::Sender<Status>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) admin: Arc<Admin>,
    pub(crate) clock: Clock,
}

impl Reloader {
    /// Reloads on every trigger: file changes seen by `watch` (published on `changes`) and
    /// explicit requests (`true` forces a swap even when nothing changed: SIGHUP).
    pub(crate) async fn run(
        self,
        mut triggers: mpsc::Receiver<bool>,
        mut changes: watch::Receiver<Change>,
        mut watch: Option<FileWatch>,
        mut files: Vec<PathBuf>,
    ) {
        if self.path.as_os_str().is_empty() {
            // Built from text, not a file: there is nothing to reload from.
            while triggers.recv().await.is_some() {}
            return;
        }
        // The hash of the last file seen, applied or rejected: an event that changed nothing
        // (an editor's swap file next to it, a touch) is not a reload.
        let mut last_seen = self.status.borrow().hash.clone();
        loop {
            let force = tokio::select! {
                trigger = triggers.recv() => match trigger { Some(force) => force, None => return },
                Ok(()) = changes.changed() => false,
            };
            settled(&mut changes).await;
            reappeared(&self.path, &mut changes).await;
            let Some((loaded, hash)) = self.load_settled(&files).await else {
                continue;
            };
            if !force && hash == last_seen {
                continue;
            }
            last_seen = hash.clone();
            // Valid or not, the parse freed what it took once this ends.
            crate::memory::release_after_load();
            match loaded {
                Ok(config) => {
                    files = vec![self.path.clone()];
                    files.extend(config.named_files());
                    self.apply(config, hash);
                    if let Some(watch) = watch.as_mut() {
                        watch.follow(&files);
                    }
                }
                Err(invalid) => {
                    invalid.log("configuration rejected; the previous configuration keeps serving");
                    // Metrics first: whoever sees the status sees them too.
                    self.metrics.reload_rejected();
                    self.status.send_modify(|s| {
                        s.rejected += 1;
                        s.last_error = Some(invalid.to_string());
                    });
                }
            }
        }
    }

    /// Loads the file (a signing key file gone missing is a problem: keys are generated at
    /// first start only), and again until the file and the files it names read the same
    /// [`QUIET`] after they were first read as the load read them. `files` are the named files
    /// of the last good configuration, hashed when the new one is invalid.
    ///
    /// The resource file is first read when the load begins; the named files of the last good
    /// configuration are read then too, so when the new one names the same files a load that
    /// takes [`QUIET`] or longer (a big file) is checked at once. Files the new configuration
    /// names for the first time are first read after the load and waited for from then.
    async fn load_settled(
        &self,
        files: &[PathBuf],
    ) -> Option<(Result<Config, config::Invalid>, String)> {
        loop {
            let path = self.path.clone();
            let before = files[1..].to_vec();
            let began = tokio::time::Instant::now();
            let (loaded, parsed, text_hash, named, early, late) =
                tokio::task::spawn_blocking(move || {
                    let early = files_hash(&before);
                    let (loaded, parsed) = config::load_read(&path, MissingKeys::Refuse);
                    let (text_hash, named) = match &loaded {
                        Ok(config) => (config.text_hash, config.named_files()),
                        Err(invalid) => (invalid.text_hash, before.clone()),
                    };
                    let early = (named == before).then_some(early);
                    let late = files_hash(&named);
                    (loaded, parsed, text_hash, named, early, late)
                })
                .await
                .ok()?;
            let first_read = if early.is_some() {
                began
            } else {
                tokio::time::Instant::now()
            };
            tokio::time::sleep_until(first_read + QUIET).await;
            let path = self.path.clone();
            let (same_text, files_again) = tokio::task::spawn_blocking(move || {
                // Compared byte for byte with what was parsed (cheaper than hashing it again).
                (std::fs::read(&path).ok() == parsed, files_hash(&named))
            })
            .await
            .ok()?;
            if same_text && files_again == late && early.is_none_or(|e| e == late) {
                return Some((loaded, combined_hash(&text_hash, &late)));
            }
            tracing::debug!(file = %self.path.display(), "the file is still changing; reading it again");
        }
    }

    fn apply(&self, config: Config, hash: String) {
        let old = self.state.load_full();
        if listen_addrs(&config) != listen_addrs(&old.config) {
            tracing::warn!("a listen address changed; that takes effect only after a restart");
        }
        let limits = |c: &Config| [Role::Issuer, Role::Proxy, Role::Admin].map(|r| c.limits(r));
        if limits(&config) != limits(&old.config) {
            tracing::warn!("a listener's max_connections, idle_timeout or request_header_timeout changed; that takes effect only after a restart");
        }
        let data_dir = |c: &Config| c.issuer.as_ref().map(|i| i.data_dir.clone());
        if data_dir(&config) != data_dir(&old.config) {
            tracing::warn!("issuer.data_dir changed; that takes effect only after a restart");
        }
        let store = |c: &Config| {
            c.store.as_ref().map(|s| {
                (
                    s.pg.clone(),
                    s.pool_size,
                    s.connect_timeout,
                    s.tls_roots.is_some(),
                )
            })
        };
        if store(&config) != store(&old.config) {
            tracing::warn!("[store] changed; that takes effect only after a restart");
        }
        for role in [Role::Issuer, Role::Proxy] {
            let modes = tls_mode(&config, role).zip(tls_mode(&old.config, role));
            if modes.is_some_and(|(now, was)| now != was) {
                tracing::warn!(role = %role, "TLS was turned on or off for a listener; that takes effect only after a restart");
            }
        }
        let snapshot = Arc::new(Snapshot::new(config));
        if let Some(gateway) = &self.gateway {
            gateway.configure(&snapshot.config);
        }
        // The series of routes, clients and trusted issuers this configuration removed go from
        // the scrape.
        self.metrics.keep_routes(
            snapshot
                .config
                .routes
                .iter()
                .map(|r| r.path_prefix.as_str()),
        );
        let kept: rustc_hash::FxHashSet<&str> = trusted_issuers(&snapshot.config).collect();
        self.metrics.forget(
            old.config
                .clients
                .keys()
                .filter(|c| !snapshot.config.clients.contains_key(*c))
                .map(String::as_str),
            trusted_issuers(&old.config).filter(|i| !kept.contains(i)),
        );
        self.state.store(snapshot);
        // Metrics and load time first: whoever sees the status sees them too.
        let generation = self.status.borrow().generation + 1;
        self.metrics.reload_applied(generation);
        self.admin.loaded(self.clock.now());
        self.status.send_modify(|s| {
            s.generation = generation;
            s.applied += 1;
            s.last_error = None;
            s.hash = hash;
        });
        tracing::info!(file = %self.path.display(), generation, "configuration reloaded");
    }
}

/// Waits while the watch says a file is being written in place, for at most [`STALL`] without
/// news.
async fn settled(changes: &mut watch::Receiver<Change>) {
    while changes.borrow_and_update().writing {
        match tokio::time::timeout(STALL, changes.changed()).await {
            Ok(Ok(())) => {}
            // Stalled, or the watch is gone: read what is there.
            _ => return,
        }
    }
}

/// Waits while the resource file is gone, for at most [`STALL`] in all: an editor that saves
/// by renaming the file away and writing a new one is between the two, and a file deleted
/// for good is a rejected reload once this ends.
async fn reappeared(path: &std::path::Path, changes: &mut watch::Receiver<Change>) {
    let deadline = tokio::time::Instant::now() + STALL;
    while !tokio::fs::try_exists(path).await.unwrap_or(true) {
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => settled(changes).await,
            _ => return,
        }
    }
}

fn listen_addrs(config: &Config) -> [Option<SocketAddr>; 3] {
    [
        config.issuer.as_ref().map(|i| i.listen),
        config.proxy.as_ref().map(|p| p.listen),
        config.admin.map(|a| a.listen),
    ]
}

/// Whether `role`'s listener speaks TLS; `None` when the role does not run.
fn tls_mode(config: &Config, role: Role) -> Option<bool> {
    match role {
        Role::Issuer => config.issuer.as_ref().map(|i| i.tls.is_some()),
        Role::Proxy => config.proxy.as_ref().map(|p| p.tls.is_some()),
        Role::Admin => None,
    }
}

/// The `iss` of each of the gateway's trusted issuers.
fn trusted_issuers(config: &Config) -> impl Iterator<Item = &str> {
    config
        .proxy
        .iter()
        .flat_map(|p| &p.trusted_issuers)
        .map(|t| t.issuer.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_file_being_written_is_waited_for_until_closed_or_stalled() {
        let (tx, mut rx) = watch::channel(Change {
            seq: 1,
            writing: true,
        });
        let started = tokio::time::Instant::now();
        let closer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            tx.send_modify(|c| {
                c.seq += 1;
                c.writing = false;
            });
            tx
        });
        settled(&mut rx).await;
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(500),
            "until closed"
        );
        let tx = closer.await.unwrap();
        // Never closed: read after STALL without news.
        tx.send_modify(|c| c.writing = true);
        let started = tokio::time::Instant::now();
        settled(&mut rx).await;
        assert_eq!(started.elapsed(), STALL);
    }
}
