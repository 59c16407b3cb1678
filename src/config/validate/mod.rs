//! Raw file → typed [`Config`]: every rule a file must satisfy, each failure recorded as a
//! [`Problem`] with its key path and position. Validation never stops at the first problem.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{self, S};
use super::{
    AdminConfig, Config, IssuerConfig, Limits, Lines, MissingKeys, Problem, ProxyConfig,
    RegistrationConfig, Route, TrustedIssuer, Upstream, User,
};
use crate::jwt::{Alg, KeySet, SigningKey};
use crate::resources::rules::{is_absolute_uri_without_fragment, MAX_RESOURCE_LEN};
use crate::resources::{
    ApiResource, ApiScope, AssertionKeys, Client, GrantType, IdentityResource, Model,
    RefreshTokenUsage, OFFLINE_ACCESS,
};
use crate::secret::{check_password_hash, SecretHash};

mod clients;
mod issuer;
mod proxy;
mod resources;
mod store;
mod tls;

use clients::{client_configs, user_configs};
use issuer::issuer_config;
use proxy::{proxy_config, route_configs};
use resources::{apis, identity, scopes};
use store::store_config;

const DEFAULT_ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(30);
const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const DEFAULT_REFRESH_LIFETIME: Duration = Duration::from_secs(30 * 86_400);
pub(crate) const DEFAULT_REFRESH_SLIDING_LIFETIME: Duration = Duration::from_secs(15 * 86_400);
/// The longest `refresh_token_reuse_grace`: enough for tabs and workers that refresh at once,
/// short enough that a stolen rotated token is of little use.
const MAX_REFRESH_REUSE_GRACE: Duration = Duration::from_secs(300);
/// `max_connections` of the issuer and proxy listeners.
const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// `max_connections` of the admin listener: health checks and scrapes.
const DEFAULT_ADMIN_MAX_CONNECTIONS: usize = 64;
/// The largest `max_connections` accepted.
const MAX_MAX_CONNECTIONS: i64 = 1_000_000;
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_REQUEST_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_REQUEST_BODY_TIMEOUT: Duration = Duration::from_secs(10);
struct V<'a> {
    lines: &'a Lines<'a>,
    dir: &'a Path,
    problems: &'a mut Vec<Problem>,
}

impl V<'_> {
    fn report(&mut self, span: Range<usize>, key: impl Into<String>, message: impl Into<String>) {
        self.problems
            .push(self.lines.problem(Some(span), key, message));
    }

    fn at<T>(&mut self, value: &S<T>, key: impl Into<String>, message: impl Into<String>) {
        self.report(value.span(), key, message)
    }

    fn duration(
        &mut self,
        value: &Option<S<raw::Duration>>,
        key: &(impl fmt::Display + ?Sized),
        default: Duration,
    ) -> Duration {
        let Some(value) = value else { return default };
        match humantime::parse_duration(value.get_ref()) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.at(value, key.to_string(), "must be longer than zero");
                default
            }
            Err(e) => {
                self.at(
                    value,
                    key.to_string(),
                    format!("not a duration ({e}); write e.g. \"30s\", \"5m\", \"1h\", \"30d\""),
                );
                default
            }
        }
    }

    /// A listener's connection limits; `section` is its key path (`issuer`, `proxy`, `admin`).
    fn limits(
        &mut self,
        section: &str,
        max_connections: Option<S<i64>>,
        idle_timeout: Option<S<raw::Duration>>,
        request_header_timeout: Option<S<raw::Duration>>,
        default_max: usize,
    ) -> Limits {
        let max_connections = match max_connections {
            None => default_max,
            Some(n) if (1..=MAX_MAX_CONNECTIONS).contains(n.get_ref()) => *n.get_ref() as usize,
            Some(n) => {
                self.at(
                    &n,
                    format!("{section}.max_connections"),
                    format!("must be a whole number from 1 to {MAX_MAX_CONNECTIONS}"),
                );
                default_max
            }
        };
        Limits {
            max_connections,
            idle_timeout: self.duration(
                &idle_timeout,
                &format!("{section}.idle_timeout"),
                DEFAULT_IDLE_TIMEOUT,
            ),
            request_header_timeout: self.duration(
                &request_header_timeout,
                &format!("{section}.request_header_timeout"),
                DEFAULT_REQUEST_HEADER_TIMEOUT,
            ),
        }
    }

    /// A duration that may be zero (which turns something off), at most `max`.
    fn duration_up_to(
        &mut self,
        value: &Option<S<raw::Duration>>,
        key: &(impl fmt::Display + ?Sized),
        default: Duration,
        max: Duration,
    ) -> Duration {
        let Some(value) = value else { return default };
        match humantime::parse_duration(value.get_ref()) {
            Ok(d) if d <= max => d,
            Ok(_) => {
                self.at(
                    value,
                    key.to_string(),
                    format!("must be at most {}", humantime::format_duration(max)),
                );
                default
            }
            Err(e) => {
                self.at(
                    value,
                    key.to_string(),
                    format!("not a duration ({e}); write e.g. \"0s\", \"30s\", \"5m\", \"15d\""),
                );
                default
            }
        }
    }

    fn socket(&mut self, value: &S<String>, key: &str) -> SocketAddr {
        value.get_ref().parse().unwrap_or_else(|_| {
            self.at(
                value,
                key,
                "not a socket address; write e.g. \"127.0.0.1:8080\"",
            );
            SocketAddr::from(([127, 0, 0, 1], 0))
        })
    }

    fn path(&self, value: &str) -> PathBuf {
        self.dir.join(value)
    }

    /// Checks the `allowed_scopes` at `key`: each names an identity resource or an API scope,
    /// never `offline_access`, which is granted otherwise (`offline` says how).
    fn allowed_scopes(
        &mut self,
        scopes: &[S<String>],
        key: &(impl fmt::Display + ?Sized),
        model: &Model,
        offline: &str,
    ) {
        for (i, scope) in scopes.iter().enumerate() {
            let name = scope.get_ref();
            let key = || format!("{key}[{i}]");
            if name == OFFLINE_ACCESS {
                self.at(
                    scope,
                    key(),
                    format!("offline_access is granted {offline}, not listed here"),
                );
            } else if !model.identity_resources.contains_key(name)
                && !model.api_scopes.contains_key(name)
            {
                let message =
                    format!("no [[identity_resources]] or [[api_scopes]] entry is named {name:?}");
                self.at(scope, key(), message);
            }
        }
    }

    /// The grant types listed at `key`, each reported when unknown.
    fn grant_types(
        &mut self,
        listed: &[S<String>],
        key: &(impl fmt::Display + ?Sized),
    ) -> BTreeSet<GrantType> {
        let mut grant_types = BTreeSet::new();
        for (i, g) in listed.iter().enumerate() {
            match GrantType::parse(g.get_ref()) {
                Some(g) => {
                    grant_types.insert(g);
                }
                None => self.at(
                    g,
                    format!("{key}[{i}]"),
                    "expected client_credentials, authorization_code or refresh_token",
                ),
            }
        }
        grant_types
    }

    fn secrets(
        &mut self,
        values: &[S<String>],
        key: &(impl fmt::Display + ?Sized),
    ) -> Vec<SecretHash> {
        let mut hashes: Vec<SecretHash> = values
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match SecretHash::parse(s.get_ref()) {
                Ok(hash) => Some(hash),
                Err(e) => {
                    self.at(s, format!("{key}[{i}]"), e.to_string());
                    None
                }
            })
            .collect();
        // Kept for the life of the configuration: no room to spare (collected, it has four).
        hashes.shrink_to_fit();
        hashes
    }

    /// A name must be unique among `seen`; reports the second occurrence.
    fn unique(
        &mut self,
        seen: &mut BTreeSet<String>,
        name: &S<String>,
        key: impl fmt::Display,
        what: &str,
    ) {
        if !seen.insert(name.get_ref().clone()) {
            let message = format!("duplicate {what} {:?}", name.get_ref());
            self.at(name, key.to_string(), message);
        }
    }
}

/// A key path written only when a problem needs it: `0.1` (`clients[3]` and `secrets`). A
/// big file has no problems, and formatting every key of it cost a tenth of its validation.
struct Field<'a>(&'a str, &'a str);

impl fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// Validates the raw file; problems are appended to `problems`. The returned config is only
/// meaningful when no problem was found.
pub(super) fn validate(
    file: raw::File,
    lines: &Lines<'_>,
    dir: &Path,
    missing_keys: MissingKeys,
    problems: &mut Vec<Problem>,
) -> Config {
    let raw::File {
        issuer,
        identity_resources,
        api_scopes,
        api_resources,
        clients,
        users,
        proxy,
        routes,
        admin,
        store,
        shutdown_grace,
    } = file;
    let mut v = V {
        lines,
        dir,
        problems,
    };

    let shutdown_grace = v.duration(&shutdown_grace, "shutdown_grace", DEFAULT_SHUTDOWN_GRACE);
    let mut model = Model::default();
    let mut scope_names = BTreeSet::new();
    identity(&mut v, identity_resources, &mut model, &mut scope_names);
    scopes(&mut v, api_scopes, &mut model, &mut scope_names);
    let issuer_span = issuer.as_ref().map(S::span);
    let issuer = issuer.map(|i| issuer_config(&mut v, i, missing_keys, &mut model));
    apis(&mut v, api_resources, &mut model, issuer.as_ref());
    // Complete: index it now, not at the first request.
    model.index();
    let clients = client_configs(&mut v, clients, &model);
    let users = crate::config::Users::new(user_configs(&mut v, users));
    let proxy_span = proxy.as_ref().map(S::span);
    let proxy = proxy.map(|p| proxy_config(&mut v, p));
    let routes = route_configs(&mut v, routes, &model, proxy_span.is_some());
    let admin = admin.map(|a| {
        let raw::Admin {
            listen,
            max_connections,
            idle_timeout,
            request_header_timeout,
        } = a.into_inner();
        AdminConfig {
            listen: v.socket(&listen, "admin.listen"),
            limits: v.limits(
                "admin",
                max_connections,
                idle_timeout,
                request_header_timeout,
                DEFAULT_ADMIN_MAX_CONNECTIONS,
            ),
        }
    });
    let admin_listen = admin.map(|a| a.listen);
    let store = store.and_then(|s| store_config(&mut v, s));

    if issuer.is_none() && proxy.is_none() {
        problems.push(lines.problem(
            None,
            "",
            "nothing to run: add an [issuer] section, a [proxy] section, or both",
        ));
    }
    if let (Some(span), Some(issuer)) = (issuer_span, &issuer) {
        if clients.is_empty() {
            problems.push(lines.problem(
                Some(span.clone()),
                "issuer",
                "the token service has no [[clients]]",
            ));
        }
        let addrs = [proxy.as_ref().map(|p| p.listen), admin_listen];
        if addrs.contains(&Some(issuer.listen)) && issuer.listen.port() != 0 {
            problems.push(lines.problem(
                Some(span),
                "issuer.listen",
                "the same address is used by another listener",
            ));
        }
    }
    if let (Some(span), Some(proxy)) = (proxy_span, &proxy) {
        if admin_listen == Some(proxy.listen) && proxy.listen.port() != 0 {
            problems.push(lines.problem(
                Some(span),
                "proxy.listen",
                "the same address is used by [admin]",
            ));
        }
    }

    Config {
        path: PathBuf::new(),
        issuer,
        model,
        clients,
        users,
        proxy,
        routes,
        admin,
        store,
        shutdown_grace,
        text_hash: [0; 32],
    }
}
