//! The one immutable snapshot of everything a reload can change, behind one `ArcSwap` so a
//! swap is atomic: a request loads it once and finishes on the snapshot it started with.

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;

use crate::config::Config;
use crate::http::TlsSource;
use crate::jwt::verify::{IssuerKeys, TrustedKeys, VerifyingKey};
use crate::{issuer, Role};

/// Everything derived from one valid resource file.
#[derive(Debug)]
pub struct Snapshot {
    /// The validated file.
    pub config: Config,
    /// Pre-serialised documents of the token service, when it runs.
    pub issuer_docs: Option<IssuerDocs>,
    /// `config.routes`, indexed for route choice.
    pub routes: crate::proxy::route::Index,
}

/// Documents that change only with the configuration, serialised once.
#[derive(Debug)]
pub struct IssuerDocs {
    /// `/.well-known/oauth-authorization-server`, and `/.well-known/openid-configuration` when
    /// [`IssuerDocs::openid`].
    pub discovery: Bytes,
    /// Whether the document passes OpenID Connect Discovery validation (an RS256 key signs):
    /// only then is it published as `/.well-known/openid-configuration`.
    pub openid: bool,
    /// `/.well-known/jwks`.
    pub jwks: Bytes,
    /// The issuer's own keys, to verify its access tokens at userinfo and introspection.
    pub local_keys: Arc<TrustedKeys>,
}

impl Snapshot {
    /// Builds the snapshot of a validated configuration.
    pub fn new(config: Config) -> Self {
        let issuer_docs = config.issuer.as_ref().map(|issuer| IssuerDocs {
            discovery: issuer::discovery::document(issuer, &config),
            openid: issuer::discovery::is_openid_provider(issuer),
            jwks: Bytes::from(serde_json::to_vec(&issuer.keys.jwks()).unwrap_or_default()),
            local_keys: Arc::new(TrustedKeys::new(vec![IssuerKeys::new(
                issuer.issuer.clone(),
                true,
                issuer.keys.all().iter().map(VerifyingKey::from_signing_key),
            )])),
        });
        let routes = crate::proxy::route::Index::new(&config.routes);
        Snapshot {
            config,
            issuer_docs,
            routes,
        }
    }
}

/// The shared, swappable snapshot.
pub(crate) type Shared = Arc<ArcSwap<Snapshot>>;

/// The TLS settings of `role`'s listener, read from the current snapshot for each new
/// connection; `None` when the listener started without TLS. Turning TLS on or off takes a
/// restart, so after a reload that removed `tls` the listener keeps the last settings it had.
pub(crate) fn listener_tls(state: &Shared, role: Role) -> Option<TlsSource> {
    let last = ArcSwap::new(state.load().config.listener_tls(role)?.clone());
    let state = state.clone();
    Some(Arc::new(move || {
        let snapshot = state.load();
        let Some(current) = snapshot.config.listener_tls(role) else {
            return last.load_full();
        };
        if !Arc::ptr_eq(&last.load(), current) {
            last.store(current.clone());
        }
        current.clone()
    }))
}
