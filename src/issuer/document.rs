//! Client ID metadata documents (SPEC §9): a `client_id` that is an `https` URL names a JSON
//! document, served there by the client, that describes it. isogate fetches it with a fetcher
//! that cannot be pointed inside the network (resolve, refuse private, loopback and link-local
//! addresses, connect to the address checked, no redirects, 5 s and 64 KiB at most), keeps it
//! as its HTTP caching headers allow, and builds the client from it. The design is in
//! `docs/registration.md`.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{header, HeaderMap};
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use serde::Deserialize;

use super::register::redirect_uri_problem;
use crate::config::RegistrationConfig;
use crate::resources::{AssertionKeys, Client, GrantType};

/// How long one fetch may take, connection and body included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest document read.
const MAX_DOCUMENT: usize = 64 * 1024;
/// How long a document without caching headers is kept.
const DEFAULT_KEEP: Duration = Duration::from_secs(300);
/// The longest any document is kept, whatever its headers say.
const MAX_KEEP: Duration = Duration::from_secs(24 * 3600);
/// How long a document that could not be fetched or used is not fetched again.
const KEEP_REFUSAL: Duration = Duration::from_secs(30);
/// The most documents kept at once; when full, the expired go first, then all.
const MAX_KEPT: usize = 10_000;

/// Whether `client_id` names a client ID metadata document (an `https` URL).
pub(crate) fn is_document_id(client_id: &str) -> bool {
    client_id.starts_with("https://")
}

/// How a client is named on the login and consent pages: the host of a document's URL (SPEC
/// §9: always shown, since anyone can publish a document), else its `client_id`.
pub(crate) fn shown_name(client_id: &str) -> Cow<'_, str> {
    if is_document_id(client_id) {
        if let Some(host) = url::Url::parse(client_id)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
        {
            return Cow::Owned(host);
        }
    }
    Cow::Borrowed(client_id)
}

/// The documents fetched, kept per URL, and the two fetchers (one refusing private
/// addresses, one allowing them), each made on first use.
#[derive(Default)]
pub(crate) struct Documents {
    guarded: OnceLock<Fetcher>,
    open: OnceLock<Fetcher>,
    kept: Mutex<HashMap<String, Kept>>,
}

type Fetcher = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<HttpConnector<Checked>>,
    crate::http::Body,
>;

struct Kept {
    described: Result<Arc<Described>, String>,
    until: Instant,
    /// Fetched with `allow_private_addresses`: a reload that turns it off refetches at once.
    allow_private: bool,
}

/// A document, validated: what a client built from it needs.
#[derive(Debug)]
pub(crate) struct Described {
    client_id: String,
    redirect_uris: Vec<String>,
    grant_types: BTreeSet<GrantType>,
    keys: Option<AssertionKeys>,
}

/// The members of a document isogate reads (the rest are ignored, as RFC 7591 §2 asks).
#[derive(Deserialize)]
struct Document {
    client_id: Option<String>,
    #[serde(default)]
    redirect_uris: Vec<String>,
    token_endpoint_auth_method: Option<String>,
    grant_types: Option<Vec<String>>,
    jwks: Option<jsonwebtoken::jwk::JwkSet>,
    jwks_uri: Option<String>,
    client_secret: Option<serde::de::IgnoredAny>,
}

impl Documents {
    /// The client the document at `url` describes: kept, or fetched and validated now. An
    /// error says why the document cannot be used; it is kept for 30 s, so a client that
    /// keeps asking does not make isogate fetch each time.
    pub(crate) async fn client(
        &self,
        url: &str,
        registration: &RegistrationConfig,
    ) -> Result<Client, String> {
        let now = Instant::now();
        let allow_private = registration.allow_private_addresses;
        let kept = self
            .lock()
            .get(url)
            .filter(|k| k.until > now && k.allow_private == allow_private)
            .map(|k| k.described.clone());
        let described = match kept {
            Some(described) => described,
            None => {
                let (described, keep) = match self.fetch(url, allow_private).await {
                    Ok((described, keep)) => (Ok(Arc::new(described)), keep),
                    Err(why) => {
                        let shown: String = url.chars().take(200).collect();
                        tracing::warn!(client_id = %shown, error = %why, "client metadata document refused");
                        (Err(why), KEEP_REFUSAL)
                    }
                };
                self.keep(url, &described, keep, allow_private);
                described
            }
        };
        let described = described?;
        Ok(client_of(&described, registration))
    }

    /// Fetches and validates the document at `url`; with it, how long it may be kept.
    async fn fetch(&self, url: &str, allow_private: bool) -> Result<(Described, Duration), String> {
        url_problem(url).map_err(|why| format!("the client_id URL {why}"))?;
        let (headers, body) = self.get(url, allow_private, MAX_DOCUMENT).await?;
        let document: Document = serde_json::from_slice(&body)
            .map_err(|e| format!("the document is not client metadata JSON: {e}"))?;
        let described = validate(url, document)?;
        Ok((described, keep_for(&headers)))
    }

    /// GETs `url` (https only) as a client published it: never inside the network unless
    /// `allow_private`, no redirects, within 5 s and `limit` bytes.
    pub(crate) async fn get(
        &self,
        url: &str,
        allow_private: bool,
        limit: usize,
    ) -> Result<(HeaderMap, bytes::Bytes), String> {
        let parsed = url::Url::parse(url).map_err(|_| format!("{url} is not a URL"))?;
        if let Some(ip) = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        } {
            // An IP literal is connected to without a look-up, so it is checked here.
            if let (false, Some(kind)) = (allow_private, inside(ip)) {
                return Err(format!("{ip} is a {kind} address"));
            }
        }
        let slot = if allow_private {
            &self.open
        } else {
            &self.guarded
        };
        let fetcher = slot.get_or_init(|| fetcher(allow_private));
        crate::http::get(fetcher, url, FETCH_TIMEOUT, limit)
            .await
            .map_err(|e| e.replace(&format!("GET {url}: "), ""))
    }

    fn keep(
        &self,
        url: &str,
        described: &Result<Arc<Described>, String>,
        keep: Duration,
        allow_private: bool,
    ) {
        if keep.is_zero() && described.is_ok() {
            self.lock().remove(url);
            return;
        }
        let now = Instant::now();
        let mut kept = self.lock();
        if kept.len() >= MAX_KEPT {
            kept.retain(|_, k| k.until > now);
            if kept.len() >= MAX_KEPT {
                kept.clear();
            }
        }
        let until = now + keep;
        let described = described.clone();
        let entry = Kept {
            described,
            until,
            allow_private,
        };
        kept.insert(url.to_owned(), entry);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Kept>> {
        self.kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The parsed `url` if it may name a document: https, a host, a path other than `/`, no user
/// information or fragment, and written as the URL parser writes it (which rules out `.` and
/// `..` segments, an upper-case host and a default port, so one client has one URL).
fn url_problem(url: &str) -> Result<url::Url, &'static str> {
    let parsed = url::Url::parse(url).map_err(|_| "is not a URL")?;
    if parsed.scheme() != "https" || parsed.host().is_none() {
        return Err("must be https with a host");
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not hold user information");
    }
    if parsed.fragment().is_some() {
        return Err("must not have a fragment");
    }
    if parsed.path() == "/" {
        return Err("needs a path (https://host/client.json)");
    }
    if parsed.as_str() != url {
        return Err("must be written in its normal form (no . or .. segments, a lower-case host, no default port)");
    }
    Ok(parsed)
}

/// Checks a fetched document: its `client_id` is the URL it came from, its redirect URIs
/// are ones registration would take, and it authenticates with `none` or `private_key_jwt`
/// (a document is public, so it can hold no secret).
fn validate(url: &str, document: Document) -> Result<Described, String> {
    match document.client_id.as_deref() {
        Some(id) if id == url => {}
        Some(id) => {
            return Err(format!(
                "its client_id {:?} is not the URL it was fetched from",
                id.chars().take(200).collect::<String>()
            ))
        }
        None => return Err("it has no client_id".into()),
    }
    if document.client_secret.is_some() {
        return Err("it holds a client_secret; a public document cannot keep one".into());
    }
    let method = document
        .token_endpoint_auth_method
        .as_deref()
        .unwrap_or("none");
    let keys = match (method, document.jwks, document.jwks_uri) {
        ("none", None, None) => None,
        ("none", _, _) => {
            return Err("jwks and jwks_uri go with token_endpoint_auth_method private_key_jwt".into())
        }
        ("private_key_jwt", Some(set), None) => Some(AssertionKeys::Given(
            super::assertion::key_set(url, &set).map_err(|why| format!("its jwks: {why}"))?,
        )),
        ("private_key_jwt", None, Some(uri)) if uri.starts_with("https://") => {
            Some(AssertionKeys::Published(uri))
        }
        ("private_key_jwt", None, Some(_)) => return Err("its jwks_uri must be https".into()),
        ("private_key_jwt", _, _) => return Err("private_key_jwt needs one of jwks and jwks_uri".into()),
        (other, _, _) => {
            return Err(format!(
                "token_endpoint_auth_method {:?} is not offered to a metadata document: use none or private_key_jwt",
                other.chars().take(100).collect::<String>()
            ))
        }
    };
    let mut grant_types = BTreeSet::new();
    let named = document
        .grant_types
        .unwrap_or_else(|| vec!["authorization_code".to_owned()]);
    for name in &named {
        let grant = GrantType::parse(name)
            .ok_or_else(|| format!("the grant type {name:?} is not offered"))?;
        grant_types.insert(grant);
    }
    if grant_types.contains(&GrantType::ClientCredentials) && keys.is_none() {
        return Err("client_credentials needs private_key_jwt".into());
    }
    if grant_types.contains(&GrantType::AuthorizationCode) && document.redirect_uris.is_empty() {
        return Err("authorization_code needs at least one redirect URI".into());
    }
    for uri in &document.redirect_uris {
        if let Some(why) = redirect_uri_problem(uri) {
            let shown: String = uri.chars().take(100).collect();
            return Err(format!("its redirect URI {shown}: {why}"));
        }
    }
    Ok(Described {
        client_id: url.to_owned(),
        redirect_uris: document.redirect_uris,
        grant_types,
        keys,
    })
}

/// The client a document describes, within what `[issuer.registration]` allows now (as for a
/// registered client: any allowed scope, the consent page every time it asks for more).
fn client_of(described: &Described, registration: &RegistrationConfig) -> Client {
    Client {
        assertion_keys: described.keys.clone(),
        ..super::register::self_described(
            &described.client_id,
            &described.redirect_uris,
            described.grant_types.iter().copied(),
            registration,
        )
    }
}

/// How long the response's `Cache-Control` lets a document be kept: nothing with `no-store`
/// or `no-cache`, `max-age` (at most a day), else 5 minutes.
fn keep_for(headers: &HeaderMap) -> Duration {
    let mut keep = DEFAULT_KEEP;
    for value in headers.get_all(header::CACHE_CONTROL) {
        for directive in value.to_str().unwrap_or("").split(',') {
            let directive = directive.trim().to_ascii_lowercase();
            if directive == "no-store" || directive == "no-cache" {
                return Duration::ZERO;
            }
            if let Some(seconds) = directive.strip_prefix("max-age=") {
                keep = seconds
                    .trim_matches('"')
                    .parse()
                    .map_or(Duration::ZERO, Duration::from_secs);
            }
        }
    }
    keep.min(MAX_KEEP)
}

/// The https-only fetcher; `allow_private` lets it connect inside the network.
fn fetcher(allow_private: bool) -> Fetcher {
    let mut http = HttpConnector::new_with_resolver(Checked { allow_private });
    http.enforce_http(false);
    http.set_connect_timeout(Some(FETCH_TIMEOUT));
    http.set_nodelay(true);
    let connector = crate::http::tls()
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(4)
        .build(connector)
}

/// The kind of range `ip` is in when it is inside a network (loopback, private, link-local and
/// the like), which a document may not come from; `None` for a public address.
fn inside(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_private() || (a == 100 && (64..128).contains(&b)) {
                Some("private")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if v4.is_unspecified() || a == 0 {
                Some("unspecified")
            } else if v4.is_broadcast()
                || v4.is_multicast()
                || a >= 240
                || v4.is_documentation()
                || (a == 198 && (b == 18 || b == 19))
            {
                Some("reserved")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return inside(IpAddr::V4(v4));
            }
            let segments = v6.segments();
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                // NAT64 (RFC 6052): the IPv4 address it reaches.
                let o = v6.octets();
                return inside(IpAddr::V4(std::net::Ipv4Addr::new(
                    o[12], o[13], o[14], o[15],
                )));
            }
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_unique_local() {
                Some("private")
            } else if v6.is_unicast_link_local() {
                Some("link-local")
            } else if v6.is_multicast() || segments[0] == 0x2001 && segments[1] == 0xdb8 {
                Some("reserved")
            } else {
                None
            }
        }
    }
}

/// The fetcher's resolver: looks the name up and refuses it when any address it has is
/// [`inside`] the network, so the connection goes only to addresses checked here.
#[derive(Clone, Copy)]
struct Checked {
    allow_private: bool,
}

impl tower_service::Service<Name> for Checked {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !allow_private {
                if let Some((addr, kind)) = addrs
                    .iter()
                    .find_map(|a| inside(a.ip()).map(|kind| (a.ip(), kind)))
                {
                    return Err(std::io::Error::other(format!(
                        "{host} resolves to {addr}, a {kind} address"
                    )));
                }
            }
            Ok(addrs.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_inside_the_network_are_named() {
        for (ip, kind) in [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "private"),
            ("169.254.169.254", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("224.0.0.1", "reserved"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd00::1", "private"),
            ("fe80::1", "link-local"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("64:ff9b::a00:1", "private"),
        ] {
            assert_eq!(inside(ip.parse().unwrap()), Some(kind), "{ip}");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert_eq!(inside(ip.parse().unwrap()), None, "{ip}");
        }
    }

    #[test]
    fn a_client_id_url_is_https_with_a_path_in_normal_form() {
        assert!(url_problem("https://app.example.com/client.json").is_ok());
        assert!(url_problem("https://app.example.com:8443/c?v=1").is_ok());
        for bad in [
            "http://app.example.com/client.json",
            "https://app.example.com/",
            "https://app.example.com",
            "https://user@app.example.com/c",
            "https://app.example.com/c#x",
            "https://App.example.com/c",
            "https://app.example.com:443/c",
            "https://app.example.com/a/../c",
            "not a url",
        ] {
            assert!(url_problem(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn caching_headers_decide_how_long_a_document_is_kept() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CACHE_CONTROL, value.parse().unwrap());
            keep_for(&headers)
        };
        assert_eq!(keep_for(&HeaderMap::new()), DEFAULT_KEEP);
        assert_eq!(with("public, max-age=60"), Duration::from_secs(60));
        assert_eq!(with("max-age=999999"), MAX_KEEP);
        assert_eq!(with("no-store"), Duration::ZERO);
        assert_eq!(with("max-age=60, no-cache"), Duration::ZERO);
        assert_eq!(with("max-age=x"), Duration::ZERO);
    }
}
