//! `[store]`: the PostgreSQL URL (from the environment, or without its password in the file),
//! the pool and TLS to the server. `isogate check` never connects.

use std::str::FromStr;

use tokio_postgres::config::SslMode;

use super::tls::read_chain;
use super::*;
use crate::config::StoreConfig;

const DEFAULT_POOL_SIZE: usize = 16;
const MAX_POOL_SIZE: i64 = 1000;
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

pub(super) fn store_config(v: &mut V<'_>, store: S<raw::Store>) -> Option<StoreConfig> {
    let span = store.span();
    let raw::Store {
        url_env,
        url,
        pool_size,
        connect_timeout,
        tls,
    } = store.into_inner();
    let pool_size = match pool_size {
        None => DEFAULT_POOL_SIZE,
        Some(n) if (1..=MAX_POOL_SIZE).contains(n.get_ref()) => *n.get_ref() as usize,
        Some(n) => {
            v.at(
                &n,
                "store.pool_size",
                format!("must be a whole number from 1 to {MAX_POOL_SIZE}"),
            );
            DEFAULT_POOL_SIZE
        }
    };
    let connect_timeout = v.duration(
        &connect_timeout,
        "store.connect_timeout",
        DEFAULT_CONNECT_TIMEOUT,
    );
    let tls_roots = tls.and_then(|tls| {
        let ca = tls.into_inner().ca;
        let roots = read_chain(&v.path(ca.get_ref())).and_then(|chain| {
            let mut roots = rustls::RootCertStore::empty();
            let (_, unusable) = roots.add_parsable_certificates(chain);
            match unusable {
                0 => Ok(roots),
                n => Err(format!("{n} certificate(s) in it cannot be used as a CA")),
            }
        });
        roots.map_err(|e| v.at(&ca, "store.tls.ca", e)).ok()
    });
    let pg = match (url_env, url) {
        (Some(env), None) => from_env(v, &env),
        (None, Some(url)) => from_file(v, &url),
        (Some(env), Some(_)) => {
            v.at(&env, "store", "set url_env or url, not both");
            None
        }
        (None, None) => {
            v.report(
                span,
                "store",
                "no database: set url_env (the name of an environment variable holding a \
                 postgres:// URL) or url",
            );
            None
        }
    };
    let (mut pg, key, at) = pg?;
    match (pg.get_ssl_mode(), &tls_roots) {
        // Without a CA, no TLS (rather than trying TLS that nothing can verify).
        (SslMode::Prefer, None) => {
            pg.ssl_mode(SslMode::Disable);
        }
        // With one, TLS or nothing: never a silent fallback to plain text.
        (SslMode::Prefer | SslMode::Disable, Some(_)) => {
            pg.ssl_mode(SslMode::Require);
        }
        (SslMode::Disable, None) => {}
        (_, None) => {
            v.report(
                at,
                key,
                "the URL asks for TLS (sslmode): add tls = { ca = \"…\" } to [store] to verify \
                 the server",
            );
            return None;
        }
        (_, Some(_)) => {}
    }
    let shown = describe(&pg);
    Some(StoreConfig {
        pg,
        pool_size,
        connect_timeout,
        tls_roots,
        shown,
    })
}

/// The URL in the environment variable named by `url_env` (it may hold the password).
fn from_env(
    v: &mut V<'_>,
    env: &S<String>,
) -> Option<(tokio_postgres::Config, &'static str, Range<usize>)> {
    let name = env.get_ref();
    let url = match std::env::var(name) {
        Ok(url) if !url.trim().is_empty() => url,
        Ok(_) | Err(std::env::VarError::NotPresent) => {
            v.at(
                env,
                "store.url_env",
                format!("the environment variable {name} is not set"),
            );
            return None;
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            v.at(env, "store.url_env", format!("{name} is not valid UTF-8"));
            return None;
        }
    };
    // Never quote the value: it may hold a password.
    match parse(&url) {
        Ok(pg) => Some((pg, "store.url_env", env.span())),
        Err(why) => {
            v.at(env, "store.url_env", format!("{name} holds {why}"));
            None
        }
    }
}

/// The URL written in the file, which must not hold a password.
fn from_file(
    v: &mut V<'_>,
    url: &S<String>,
) -> Option<(tokio_postgres::Config, &'static str, Range<usize>)> {
    match parse(url.get_ref()) {
        Ok(pg) if pg.get_password().is_some() => {
            v.at(
                url,
                "store.url",
                "holds a password; keep it out of the file: put the whole URL in an \
                 environment variable and name that variable in url_env",
            );
            None
        }
        Ok(pg) => Some((pg, "store.url", url.span())),
        Err(why) => {
            v.at(url, "store.url", format!("is {why}"));
            None
        }
    }
}

/// A `postgres://` (or `postgresql://`) URL naming a host.
fn parse(url: &str) -> Result<tokio_postgres::Config, String> {
    let not_a_url = "not a postgres:// URL (e.g. postgres://isogate@db.internal/isogate)";
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(not_a_url.into());
    }
    let pg = tokio_postgres::Config::from_str(url).map_err(|_| not_a_url.to_owned())?;
    if pg.get_hosts().is_empty() {
        return Err("a URL without a host".into());
    }
    Ok(pg)
}

/// `postgres://user@host:port/db`, without the password, for `/config` and log lines.
fn describe(pg: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let hosts: Vec<String> = pg
        .get_hosts()
        .iter()
        .zip(pg.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(host, port)| match host {
            Host::Tcp(name) => format!("{name}:{port}"),
            Host::Unix(path) => format!("{}:{port}", path.display()),
        })
        .collect();
    let user = pg.get_user().map(|u| format!("{u}@")).unwrap_or_default();
    let db = pg.get_dbname().unwrap_or("");
    format!("postgres://{user}{}/{db}", hosts.join(","))
}
