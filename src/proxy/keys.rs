//! The keys the gateway trusts: the local issuer's, in-process, and each trusted issuer's
//! remote JWKS, fetched with a timeout, refreshed in the background, refetched on an unknown
//! `kid` at most once per 30 s per issuer, and kept as last known good while the issuer is down.
//!
//! Readiness: from start, `/readyz` waits for the first key set of each trusted issuer with
//! `wait_for_keys` (the default). Issuers a reload adds do not make a serving gateway unready,
//! and an issuer that goes down later leaves its last key set in place.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::JwkSet;

use super::forward::Identity;
use crate::config::{Config, TrustedIssuer};
use crate::http::{get_json, Client};
use crate::jwt::cache::{self, Expiring, VerifiedCache};
use crate::jwt::verify::{self, Claims, IssuerKeys, TokenError, TrustedKeys};
use crate::metrics::Metrics;
use crate::resources::{ApiResource, Model};

/// An unknown `kid` refetches an issuer's JWKS at most this often.
const REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// How often remote key sets are refreshed in the background.
const REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// How long one fetch (discovery + JWKS) may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS or discovery document read.
const MAX_DOCUMENT: usize = 512 * 1024;
/// Verified tokens remembered. Each costs about 900 bytes (its claims and identity headers, the
/// map and the eviction queue), so a full cache holds about 22 MB: under a stream of never-seen
/// tokens the gateway stays well within 50 MiB (BENCHMARKS.md, "Load"); 32,768 places took it
/// to 47 MiB, 65,536 (without the identity headers) to 57 MiB.
pub const CACHE_CAPACITY: usize = 24_576;

/// A verified token's claims, with the identity headers forwarding them takes, made once per
/// token rather than once per request.
#[derive(Debug)]
pub struct Verified {
    claims: Claims,
    /// The headers, or the claim that cannot be one.
    identity: Result<Identity, &'static str>,
}

impl Verified {
    fn new(claims: Claims) -> Self {
        let identity = Identity::of(&claims);
        Verified { claims, identity }
    }

    /// The identity headers of a request to `resource`, or the claim that cannot be forwarded.
    pub fn identity_for(
        &self,
        resource: &ApiResource,
        model: &Model,
    ) -> Result<Identity, &'static str> {
        self.identity.as_ref().map_err(|what| *what)?.for_resource(
            &self.claims.scope,
            resource,
            model,
        )
    }
}

impl std::ops::Deref for Verified {
    type Target = Claims;

    fn deref(&self) -> &Claims {
        &self.claims
    }
}

impl Expiring for Verified {
    fn exp(&self) -> u64 {
        self.claims.exp
    }
}

/// A token [`Keys::cached`] did not find: its cache key and the keys it is to be verified with.
pub struct Miss {
    key: cache::Key,
    trusted: Arc<TrustedKeys>,
}

/// One remote issuer's state.
struct Remote {
    config: TrustedIssuer,
    /// The last key set fetched successfully, and when it was fetched.
    jwks: Option<(JwkSet, Instant)>,
    /// Serialises fetches; holds when the last unknown-kid refetch started.
    fetching: Arc<tokio::sync::Mutex<Option<Instant>>>,
    refresher: Option<tokio::task::JoinHandle<()>>,
    /// Trusted since the first configuration with `wait_for_keys` every time since: `/readyz`
    /// waits for this issuer's first key set.
    gates_readiness: bool,
}

/// Trusted keys plus the verified-token cache.
pub struct Keys {
    client: Client,
    /// Every trusted key. Each rebuild has a new generation; cache entries of older
    /// generations never hit.
    trusted: ArcSwap<TrustedKeys>,
    cache: VerifiedCache<Verified>,
    /// The local issuer and its published keys (retired ones included).
    local: Mutex<Option<(String, JwkSet)>>,
    remotes: Mutex<BTreeMap<String, Remote>>,
    /// Set by the first [`Keys::configure`]: issuers added later do not gate readiness.
    configured: AtomicBool,
    /// Counts cache hits and misses and JWKS fetches.
    metrics: Arc<Metrics>,
}

impl Keys {
    /// An empty registry recording into `metrics`; call [`Keys::configure`] with the first
    /// snapshot.
    pub fn new(client: Client, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Keys {
            client,
            trusted: ArcSwap::from_pointee(TrustedKeys::default()),
            cache: VerifiedCache::new(CACHE_CAPACITY),
            local: Mutex::new(None),
            remotes: Mutex::new(BTreeMap::new()),
            configured: AtomicBool::new(false),
            metrics,
        })
    }

    /// Adopts the key sources of `config`: the local issuer's keys, and the trusted issuers
    /// (starting background refreshers for new ones, stopping those no longer listed; an
    /// unchanged issuer keeps its last fetched keys).
    pub fn configure(self: &Arc<Self>, config: &Config) {
        *lock(&self.local) = config
            .issuer
            .as_ref()
            .map(|issuer| (issuer.issuer.clone(), issuer.keys.jwks()));
        let wanted: Vec<TrustedIssuer> = config
            .proxy
            .as_ref()
            .map(|p| p.trusted_issuers.clone())
            .unwrap_or_default();
        let first = !self.configured.swap(true, Ordering::Relaxed);
        {
            let mut remotes = lock(&self.remotes);
            remotes.retain(|issuer, remote| {
                // The same key source; `wait_for_keys` alone changes no key.
                let same = wanted.iter().find(|w| {
                    TrustedIssuer {
                        wait_for_keys: remote.config.wait_for_keys,
                        ..(*w).clone()
                    } == remote.config
                });
                if let Some(same) = same {
                    remote.gates_readiness &= remote.config.wait_for_keys;
                    remote.config = same.clone();
                }
                let keep = same.is_some();
                if !keep {
                    if let Some(task) = remote.refresher.take() {
                        task.abort();
                    }
                    tracing::info!(issuer, "no longer trusted");
                }
                keep
            });
            for config in wanted {
                if remotes.contains_key(&config.issuer) {
                    continue;
                }
                let issuer = config.issuer.clone();
                let refresher = tokio::spawn(refresh_forever(Arc::downgrade(self), issuer.clone()));
                remotes.insert(
                    issuer,
                    Remote {
                        gates_readiness: first,
                        config,
                        jwks: None,
                        fetching: Arc::new(tokio::sync::Mutex::new(None)),
                        refresher: Some(refresher),
                    },
                );
            }
        }
        self.rebuild();
    }

    /// The trusted issuers whose first key set `/readyz` waits for, in order.
    pub fn awaited(&self) -> Vec<String> {
        lock(&self.remotes)
            .values()
            .filter(|r| r.gates_readiness && r.config.wait_for_keys && r.jwks.is_none())
            .map(|r| r.config.issuer.clone())
            .collect()
    }

    /// Rebuilds the trusted set from the local keys and every remote's last good JWKS.
    fn rebuild(&self) {
        let mut sets: Vec<(String, bool, JwkSet)> = Vec::new();
        if let Some((issuer, jwks)) = lock(&self.local).as_ref() {
            sets.push((issuer.clone(), true, jwks.clone()));
        }
        for remote in lock(&self.remotes).values() {
            let jwks = remote
                .jwks
                .as_ref()
                .map(|(jwks, _)| jwks.clone())
                .unwrap_or_default();
            sets.push((
                remote.config.issuer.clone(),
                remote.config.require_typ,
                jwks,
            ));
        }
        let issuers = sets
            .into_iter()
            .map(|(issuer, require_typ, jwks)| {
                let (keys, skipped) = IssuerKeys::from_jwk_set(issuer.as_str(), require_typ, &jwks);
                for (kid, error) in skipped {
                    let kid = kid.as_deref().unwrap_or("-");
                    tracing::warn!(issuer, kid, %error, "JWKS key skipped");
                }
                keys
            })
            .collect();
        self.trusted.store(Arc::new(TrustedKeys::new(issuers)));
        self.cache.clear();
    }

    /// The claims of `token` (the bearer credential, not yet checked in any way) when it was
    /// verified before under the current keys; otherwise what [`Keys::verify`] needs.
    ///
    /// The caller accepts a token until `exp + skew`, so cache entries live that long too: the
    /// cache's clock runs `skew` behind `now`. The caller's time check still runs on every hit.
    pub fn cached(&self, token: &[u8], skew: Duration, now: u64) -> Result<Arc<Verified>, Miss> {
        let trusted = self.trusted.load_full();
        let key = cache::key(token);
        let cache_now = now.saturating_sub(skew.as_secs());
        let cached = self.cache.get_key(&key, cache_now, trusted.generation());
        self.metrics.verified_cache(cached.is_some());
        cached.ok_or(Miss { key, trusted })
    }

    /// Verifies the signature and `typ` of `token`, which [`Keys::cached`] missed, and caches
    /// its claims. An unknown `kid` of a trusted remote issuer refetches that issuer's JWKS (at
    /// most once per 30 s) and tries again. Time, `aud` and `scope` are the caller's.
    pub async fn verify(&self, token: &str, miss: Miss) -> Result<Arc<Verified>, TokenError> {
        let Miss { key, trusted } = miss;
        match self.verify_uncached(token, key, &trusted) {
            Err(TokenError::UnknownKid) => {
                let Some(issuer) = unverified_issuer(token) else {
                    return Err(TokenError::UnknownKid);
                };
                if self.refetch(&issuer, trusted.generation()).await {
                    self.verify_uncached(token, key, &self.trusted.load_full())
                } else {
                    Err(TokenError::UnknownKid)
                }
            }
            result => result,
        }
    }

    fn verify_uncached(
        &self,
        token: &str,
        key: cache::Key,
        trusted: &TrustedKeys,
    ) -> Result<Arc<Verified>, TokenError> {
        let claims = Arc::new(Verified::new(verify::verify(token, trusted)?));
        self.cache
            .insert_key(key, claims.clone(), trusted.generation());
        Ok(claims)
    }

    /// Fetches `issuer`'s JWKS now unless an unknown `kid` did so in the last 30 s; true when
    /// the key set changed since generation `seen`.
    async fn refetch(&self, issuer: &str, seen: u64) -> bool {
        let Some((config, fetching)) = lock(&self.remotes)
            .get(issuer)
            .map(|r| (r.config.clone(), r.fetching.clone()))
        else {
            return false;
        };
        let mut last = fetching.lock().await;
        if self.trusted.load().generation() != seen {
            // The keys changed while this request waited (another fetch, or a reload).
            return true;
        }
        if last.is_some_and(|t| t.elapsed() < REFETCH_INTERVAL) {
            return false;
        }
        *last = Some(Instant::now());
        self.fetch_into(&config).await
    }

    /// Fetches `config`'s JWKS and adopts it; true when the key set changed.
    async fn fetch_into(&self, config: &TrustedIssuer) -> bool {
        let fetched = fetch(&self.client, config).await;
        self.metrics.jwks_fetch(&config.issuer, fetched.is_ok());
        match fetched {
            Ok(jwks) => {
                let changed = {
                    let mut remotes = lock(&self.remotes);
                    let Some(remote) = remotes.get_mut(&config.issuer) else {
                        return false;
                    };
                    let changed = remote.jwks.as_ref().map(|(j, _)| j) != Some(&jwks);
                    if changed {
                        tracing::info!(issuer = %config.issuer, keys = jwks.keys.len(), "JWKS fetched");
                    }
                    remote.jwks = Some((jwks, Instant::now()));
                    changed
                };
                if changed {
                    self.rebuild();
                }
                changed
            }
            Err(e) => {
                let fetched = lock(&self.remotes)
                    .get(&config.issuer)
                    .and_then(|r| r.jwks.as_ref().map(|(_, at)| at.elapsed()));
                match fetched {
                    Some(age) => {
                        let age = humantime::format_duration(Duration::from_secs(age.as_secs()));
                        tracing::warn!(issuer = %config.issuer, error = %e, fetched = %format!("{age} ago"), "JWKS fetch failed; keeping the last good key set");
                    }
                    None => {
                        tracing::warn!(issuer = %config.issuer, error = %e, retry_in = %humantime::format_duration(REFETCH_INTERVAL), "JWKS fetch failed; no key set yet, so every token of this issuer is refused until a fetch succeeds");
                    }
                }
                false
            }
        }
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        for remote in lock(&self.remotes).values_mut() {
            if let Some(task) = remote.refresher.take() {
                task.abort();
            }
        }
    }
}

/// Fetches an issuer's JWKS now, then every five minutes (every 30 s while it fails).
async fn refresh_forever(keys: std::sync::Weak<Keys>, issuer: String) {
    loop {
        let Some(strong) = keys.upgrade() else { return };
        let Some((config, fetching)) = lock(&strong.remotes)
            .get(&issuer)
            .map(|r| (r.config.clone(), r.fetching.clone()))
        else {
            return;
        };
        let ok = {
            // Serialised with unknown-kid refetches, but does not use up their 30 s budget.
            let _guard = fetching.lock().await;
            strong.fetch_into(&config).await;
            lock(&strong.remotes)
                .get(&issuer)
                .is_some_and(|r| r.jwks.is_some())
        };
        drop(strong);
        tokio::time::sleep(if ok {
            REFRESH_INTERVAL
        } else {
            REFETCH_INTERVAL
        })
        .await;
    }
}

/// The issuer's JWKS, its `jwks_uri` discovered when not configured.
async fn fetch(client: &Client, config: &TrustedIssuer) -> Result<JwkSet, String> {
    let jwks_uri = match &config.jwks_uri {
        Some(uri) => uri.clone(),
        None => discover(client, &config.issuer).await?,
    };
    get_json(client, &jwks_uri, FETCH_TIMEOUT, MAX_DOCUMENT).await
}

/// `jwks_uri` from the issuer's OpenID Connect or RFC 8414 discovery document.
async fn discover(client: &Client, issuer: &str) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct Discovery {
        issuer: String,
        jwks_uri: String,
    }
    let base = issuer.trim_end_matches('/');
    let mut errors = Vec::new();
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ] {
        match get_json::<Discovery>(
            client,
            &format!("{base}{path}"),
            FETCH_TIMEOUT,
            MAX_DOCUMENT,
        )
        .await
        {
            Ok(doc) if doc.issuer == issuer => return Ok(doc.jwks_uri),
            Ok(doc) => errors.push(format!("{path} names the issuer {:?}", doc.issuer)),
            Err(e) => errors.push(e),
        }
    }
    Err(format!("discovery failed: {}", errors.join("; ")))
}

/// The `iss` of a token before verification, to know whose JWKS to refetch.
fn unverified_issuer(token: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Iss {
        iss: String,
    }
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<Iss>(&bytes).ok().map(|p| p.iss)
}

/// Locks a std mutex, recovering from poisoning (state here is always consistent between
/// statements).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
