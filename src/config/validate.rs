//! Raw file → typed [`Config`]: every rule a file must satisfy, each failure recorded as a
//! [`Problem`] with its key path and position. Validation never stops at the first problem.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{self, S};
use super::{
    Config, IssuerConfig, Lines, MissingKeys, Problem, ProxyConfig, Route, TrustedIssuer, User,
};
use crate::jwt::{Alg, KeySet, SigningKey};
use crate::resources::rules::is_absolute_uri_without_fragment;
use crate::resources::{
    ApiResource, ApiScope, Client, GrantType, IdentityResource, Model, RefreshTokenUsage,
    OFFLINE_ACCESS,
};
use crate::secret::{check_password_hash, SecretHash};

const DEFAULT_ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(30);
const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_REFRESH_LIFETIME: Duration = Duration::from_secs(30 * 86_400);
const DEFAULT_REFRESH_SLIDING_LIFETIME: Duration = Duration::from_secs(15 * 86_400);
const MAX_RESOURCE_LEN: usize = 512;
/// Claims of an access token that configuration may not supply.
const RESERVED_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "client_id",
    "scope",
    "auth_time",
    "acr",
    "amr",
    "cnf",
];

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

    fn duration(&mut self, value: &Option<S<String>>, key: &str, default: Duration) -> Duration {
        let Some(value) = value else { return default };
        match humantime::parse_duration(value.get_ref()) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.at(value, key, "must be longer than zero");
                default
            }
            Err(e) => {
                self.at(
                    value,
                    key,
                    format!("not a duration ({e}); write e.g. \"30s\", \"5m\", \"1h\", \"30d\""),
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

    fn secrets(&mut self, values: &[S<String>], key: &str) -> Vec<SecretHash> {
        values
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match SecretHash::parse(s.get_ref()) {
                Ok(hash) => Some(hash),
                Err(e) => {
                    self.at(s, format!("{key}[{i}]"), e.to_string());
                    None
                }
            })
            .collect()
    }

    /// A name must be unique among `seen`; reports the second occurrence.
    fn unique(&mut self, seen: &mut BTreeSet<String>, name: &S<String>, key: String, what: &str) {
        if !seen.insert(name.get_ref().clone()) {
            self.at(name, key, format!("duplicate {what} {:?}", name.get_ref()));
        }
    }

    fn tls(&mut self, tls: &Option<S<raw::Tls>>, key: &str) {
        if let Some(tls) = tls {
            self.at(
                tls,
                key,
                "TLS on listeners is not available in this version of isogate yet",
            );
        }
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
    let clients = client_configs(&mut v, clients, &model);
    let users = user_configs(&mut v, users);
    let proxy_span = proxy.as_ref().map(S::span);
    let proxy = proxy.map(|p| proxy_config(&mut v, p));
    let routes = route_configs(&mut v, routes, &model, proxy_span.is_some());
    let admin = admin.map(|a| v.socket(&a.get_ref().listen, "admin.listen"));

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
        let addrs = [proxy.as_ref().map(|p| p.listen), admin];
        if addrs.contains(&Some(issuer.listen)) && issuer.listen.port() != 0 {
            problems.push(lines.problem(
                Some(span),
                "issuer.listen",
                "the same address is used by another listener",
            ));
        }
    }
    if let (Some(span), Some(proxy)) = (proxy_span, &proxy) {
        if admin == Some(proxy.listen) && proxy.listen.port() != 0 {
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
        shutdown_grace,
    }
}

/// RFC 6749 §3.3 scope-token characters, and not empty.
fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E))
}

fn identity(
    v: &mut V<'_>,
    entries: Vec<S<raw::IdentityResource>>,
    model: &mut Model,
    names: &mut BTreeSet<String>,
) {
    for (i, entry) in entries.into_iter().enumerate() {
        let raw::IdentityResource {
            name,
            display_name,
            user_claims,
        } = entry.into_inner();
        let key = format!("identity_resources[{i}].name");
        if !is_scope_token(name.get_ref()) || name.get_ref() == OFFLINE_ACCESS {
            v.at(&name, &key, "not a usable scope name (no spaces, quotes or backslashes; offline_access is reserved)");
        }
        v.unique(names, &name, key, "scope name");
        let name = name.into_inner();
        model.identity_resources.insert(
            name.clone(),
            IdentityResource {
                name,
                display_name,
                user_claims,
            },
        );
    }
}

fn scopes(
    v: &mut V<'_>,
    entries: Vec<S<raw::ApiScope>>,
    model: &mut Model,
    names: &mut BTreeSet<String>,
) {
    for (i, entry) in entries.into_iter().enumerate() {
        let raw::ApiScope {
            name,
            display_name,
            user_claims,
            parameterized,
            parameter_claim,
        } = entry.into_inner();
        let key = format!("api_scopes[{i}].name");
        if !is_scope_token(name.get_ref()) || name.get_ref() == OFFLINE_ACCESS {
            v.at(&name, &key, "not a usable scope name (no spaces, quotes or backslashes; offline_access is reserved)");
        } else if parameterized && name.get_ref().contains(':') {
            v.at(&name, &key, "a parameterized scope's name may not contain ':' (it is requested as \"name:value\")");
        }
        v.unique(names, &name, key, "scope name");
        if let Some(claim) = &parameter_claim {
            let key = format!("api_scopes[{i}].parameter_claim");
            if !parameterized {
                v.at(
                    claim,
                    key,
                    "only a parameterized scope has a parameter claim",
                );
            } else if RESERVED_CLAIMS.contains(&claim.get_ref().as_str()) {
                v.at(
                    claim,
                    key,
                    format!("{:?} is a claim isogate sets itself", claim.get_ref()),
                );
            }
        }
        let name = name.into_inner();
        model.api_scopes.insert(
            name.clone(),
            ApiScope {
                name,
                display_name,
                user_claims,
                parameterized,
                parameter_claim: parameter_claim.map(S::into_inner),
            },
        );
    }
}

fn issuer_config(
    v: &mut V<'_>,
    issuer: S<raw::Issuer>,
    missing_keys: MissingKeys,
    model: &mut Model,
) -> IssuerConfig {
    let span = issuer.span();
    let raw::Issuer {
        listen,
        issuer: iss,
        access_token_lifetime,
        emit_static_audience,
        data_dir,
        tls,
        signing_keys,
    } = issuer.into_inner();
    let listen = v.socket(&listen, "issuer.listen");
    match url::Url::parse(iss.get_ref()) {
        Ok(url)
            if matches!(url.scheme(), "http" | "https")
                && url.query().is_none()
                && url.fragment().is_none() => {}
        _ => v.at(
            &iss,
            "issuer.issuer",
            "must be an http(s) URL without query or fragment, e.g. \"https://id.example.com\"",
        ),
    }
    let access_token_lifetime = v.duration(
        &access_token_lifetime,
        "issuer.access_token_lifetime",
        DEFAULT_ACCESS_TOKEN_LIFETIME,
    );
    let data_dir = v.path(data_dir.as_ref().map_or("data", |d| d.get_ref()));
    v.tls(&tls, "issuer.tls");
    let iss = iss.into_inner();
    if emit_static_audience {
        model.static_audience = Some(format!("{}/resources", iss.trim_end_matches('/')));
    }

    let mut keys = Vec::new();
    let mut kids = BTreeSet::new();
    let mut signers = 0;
    let mut keys_to_generate = 0;
    for (i, key) in signing_keys.into_iter().enumerate() {
        let raw::SigningKey {
            file,
            alg,
            kid,
            generate_if_missing,
            retired,
        } = key.into_inner();
        let alg_value = match alg.get_ref().parse::<Alg>() {
            Ok(a) => a,
            Err(e) => {
                v.at(&alg, format!("issuer.signing_keys[{i}].alg"), e.to_string());
                continue;
            }
        };
        if !retired {
            signers += 1;
        }
        let path = v.path(file.get_ref());
        let file_key = format!("issuer.signing_keys[{i}].file");
        if generate_if_missing && !path.exists() {
            if missing_keys == MissingKeys::Accept {
                keys_to_generate += 1;
                continue;
            }
            if let Err(e) = crate::jwt::generate_file(&path, alg_value) {
                v.at(&file, file_key, e.to_string());
                continue;
            }
            tracing::info!(file = %path.display(), alg = %alg_value, "generated a new signing key");
        }
        if let Some(kid) = kid.as_ref().filter(|k| k.get_ref().is_empty()) {
            v.at(
                kid,
                format!("issuer.signing_keys[{i}].kid"),
                "must not be empty",
            );
        }
        match SigningKey::from_file(&path, alg_value, kid.map(S::into_inner), retired) {
            Ok(key) => {
                if !kids.insert(key.kid.clone()) {
                    v.at(
                        &file,
                        format!("issuer.signing_keys[{i}]"),
                        format!("duplicate kid {:?}", key.kid),
                    );
                }
                keys.push(key);
            }
            Err(e) => v.at(&file, file_key, e.to_string()),
        }
    }
    if signers == 0 {
        v.report(
            span,
            "issuer.signing_keys",
            "the token service needs at least one signing key that is not retired",
        );
    }
    IssuerConfig {
        listen,
        issuer: iss,
        access_token_lifetime,
        data_dir,
        keys: KeySet::new(keys),
        keys_to_generate,
    }
}

fn apis(
    v: &mut V<'_>,
    entries: Vec<S<raw::ApiResource>>,
    model: &mut Model,
    issuer: Option<&IssuerConfig>,
) {
    let mut names = BTreeSet::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let raw::ApiResource {
            name,
            display_name,
            scopes,
            require_resource_indicator,
            enabled,
            user_claims,
            allowed_signing_algs,
            secrets,
        } = entry.into_inner();
        let key = format!("api_resources[{i}]");
        if name.get_ref().len() > MAX_RESOURCE_LEN
            || !is_absolute_uri_without_fragment(name.get_ref())
        {
            v.at(&name, format!("{key}.name"), "must be an absolute URI without fragment, at most 512 characters (e.g. \"urn:invoices\" or \"https://api.example.com/invoices\")");
        }
        v.unique(&mut names, &name, format!("{key}.name"), "API resource");
        for (j, scope) in scopes.iter().enumerate() {
            if !model.api_scopes.contains_key(scope.get_ref()) {
                v.at(
                    scope,
                    format!("{key}.scopes[{j}]"),
                    format!("no [[api_scopes]] entry is named {:?}", scope.get_ref()),
                );
            }
        }
        let mut algs = Vec::new();
        for (j, alg) in allowed_signing_algs.iter().enumerate() {
            match alg.get_ref().parse::<Alg>() {
                Ok(a) => algs.push(a),
                Err(e) => v.at(
                    alg,
                    format!("{key}.allowed_signing_algs[{j}]"),
                    e.to_string(),
                ),
            }
        }
        if let (Some(issuer), Some(first)) = (issuer, allowed_signing_algs.first()) {
            let loaded = issuer.keys.all();
            // Keys still to be generated are not loaded; only judge when all are there.
            if !loaded.is_empty() && issuer.keys.signer(|a| algs.contains(&a)).is_none() {
                v.at(
                    first,
                    format!("{key}.allowed_signing_algs"),
                    "no signing key that is not retired has one of these algorithms",
                );
            }
        }
        let secrets = v.secrets(&secrets, &format!("{key}.secrets"));
        model.api_resources.push(ApiResource {
            name: name.into_inner(),
            display_name,
            scopes: scopes.into_iter().map(S::into_inner).collect(),
            isolated: require_resource_indicator,
            enabled: enabled.unwrap_or(true),
            user_claims,
            allowed_signing_algs: algs,
            secrets,
        });
    }
}

fn client_configs(
    v: &mut V<'_>,
    entries: Vec<S<raw::Client>>,
    model: &Model,
) -> BTreeMap<String, Client> {
    let mut clients = BTreeMap::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let span = entry.span();
        let raw::Client {
            client_id,
            secrets,
            require_secret,
            allowed_grant_types,
            allowed_scopes,
            access_token_lifetime,
            redirect_uris,
            require_pkce,
            require_consent,
            allow_offline_access,
            refresh_token_usage,
            refresh_token_lifetime,
            refresh_token_sliding_lifetime,
        } = entry.into_inner();
        let key = format!("clients[{i}]");
        if client_id.get_ref().is_empty() {
            v.at(&client_id, format!("{key}.client_id"), "must not be empty");
        } else if clients.contains_key(client_id.get_ref()) {
            v.at(
                &client_id,
                format!("{key}.client_id"),
                format!("duplicate client_id {:?}", client_id.get_ref()),
            );
        }
        let hashes = v.secrets(&secrets, &format!("{key}.secrets"));
        let require_secret = require_secret.unwrap_or(true);
        if require_secret && secrets.is_empty() {
            v.report(span.clone(), format!("{key}.secrets"), "a confidential client needs at least one secret (or set require_secret = false for a public client)");
        }
        let mut grant_types = BTreeSet::new();
        for (j, g) in allowed_grant_types.iter().enumerate() {
            match GrantType::parse(g.get_ref()) {
                Some(g) => {
                    grant_types.insert(g);
                }
                None => v.at(
                    g,
                    format!("{key}.allowed_grant_types[{j}]"),
                    "expected client_credentials, authorization_code or refresh_token",
                ),
            }
        }
        if allowed_grant_types.is_empty() {
            v.report(
                span.clone(),
                format!("{key}.allowed_grant_types"),
                "a client needs at least one grant type",
            );
        }
        if grant_types.contains(&GrantType::ClientCredentials) && !require_secret {
            v.report(span.clone(), format!("{key}.allowed_grant_types"), "client_credentials needs a confidential client (secrets and require_secret = true)");
        }
        if grant_types.contains(&GrantType::AuthorizationCode) && redirect_uris.is_empty() {
            v.report(
                span.clone(),
                format!("{key}.redirect_uris"),
                "authorization_code needs at least one redirect URI",
            );
        }
        for (j, uri) in redirect_uris.iter().enumerate() {
            match url::Url::parse(uri.get_ref()) {
                Ok(u) if u.fragment().is_none() => {}
                _ => v.at(
                    uri,
                    format!("{key}.redirect_uris[{j}]"),
                    "must be an absolute URI without fragment",
                ),
            }
        }
        for (j, scope) in allowed_scopes.iter().enumerate() {
            let name = scope.get_ref();
            if name == OFFLINE_ACCESS {
                v.at(
                    scope,
                    format!("{key}.allowed_scopes[{j}]"),
                    "offline_access is granted with allow_offline_access = true, not listed here",
                );
            } else if !model.identity_resources.contains_key(name)
                && !model.api_scopes.contains_key(name)
            {
                v.at(
                    scope,
                    format!("{key}.allowed_scopes[{j}]"),
                    format!("no [[identity_resources]] or [[api_scopes]] entry is named {name:?}"),
                );
            }
        }
        let usage = match refresh_token_usage.as_ref().map(|u| u.get_ref().as_str()) {
            None | Some("one_time") => RefreshTokenUsage::OneTime,
            Some("reuse") => RefreshTokenUsage::Reuse,
            Some(_) => {
                if let Some(u) = &refresh_token_usage {
                    v.at(
                        u,
                        format!("{key}.refresh_token_usage"),
                        "expected \"one_time\" or \"reuse\"",
                    );
                }
                RefreshTokenUsage::OneTime
            }
        };
        let client = Client {
            client_id: client_id.get_ref().clone(),
            secrets: hashes,
            require_secret,
            allowed_grant_types: grant_types,
            allowed_scopes: allowed_scopes.into_iter().map(S::into_inner).collect(),
            access_token_lifetime: access_token_lifetime.as_ref().map(|_| {
                v.duration(
                    &access_token_lifetime,
                    &format!("{key}.access_token_lifetime"),
                    DEFAULT_ACCESS_TOKEN_LIFETIME,
                )
            }),
            redirect_uris: redirect_uris.into_iter().map(S::into_inner).collect(),
            require_pkce: require_pkce.unwrap_or(true),
            require_consent,
            allow_offline_access,
            refresh_token_usage: usage,
            refresh_token_lifetime: v.duration(
                &refresh_token_lifetime,
                &format!("{key}.refresh_token_lifetime"),
                DEFAULT_REFRESH_LIFETIME,
            ),
            refresh_token_sliding_lifetime: v.duration(
                &refresh_token_sliding_lifetime,
                &format!("{key}.refresh_token_sliding_lifetime"),
                DEFAULT_REFRESH_SLIDING_LIFETIME,
            ),
        };
        clients.entry(client_id.into_inner()).or_insert(client);
    }
    clients
}

fn user_configs(v: &mut V<'_>, entries: Vec<S<raw::User>>) -> Vec<User> {
    let mut subjects = BTreeSet::new();
    let mut usernames = BTreeSet::new();
    entries
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            let raw::User {
                subject,
                username,
                password,
                claims,
            } = entry.into_inner();
            v.unique(
                &mut subjects,
                &subject,
                format!("users[{i}].subject"),
                "subject",
            );
            v.unique(
                &mut usernames,
                &username,
                format!("users[{i}].username"),
                "username",
            );
            if let Err(e) = check_password_hash(password.get_ref()) {
                v.at(&password, format!("users[{i}].password"), e);
            }
            User {
                subject: subject.into_inner(),
                username: username.into_inner(),
                password: password.into_inner(),
                claims: claims
                    .into_iter()
                    .map(|(k, value)| (k, serde_json::to_value(value).unwrap_or_default()))
                    .collect(),
            }
        })
        .collect()
}

fn proxy_config(v: &mut V<'_>, proxy: S<raw::Proxy>) -> ProxyConfig {
    let raw::Proxy {
        listen,
        clock_skew,
        upstream_timeout,
        tls,
        trusted_issuers,
    } = proxy.into_inner();
    v.tls(&tls, "proxy.tls");
    let trusted_issuers = trusted_issuers
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let raw::TrustedIssuer {
                issuer,
                jwks_uri,
                require_typ,
            } = t.into_inner();
            if url::Url::parse(issuer.get_ref())
                .map_or(true, |u| !matches!(u.scheme(), "http" | "https"))
            {
                v.at(
                    &issuer,
                    format!("proxy.trusted_issuers[{i}].issuer"),
                    "must be an http(s) URL",
                );
            }
            if let Some(uri) = &jwks_uri {
                if url::Url::parse(uri.get_ref())
                    .map_or(true, |u| !matches!(u.scheme(), "http" | "https"))
                {
                    v.at(
                        uri,
                        format!("proxy.trusted_issuers[{i}].jwks_uri"),
                        "must be an http(s) URL",
                    );
                }
            }
            TrustedIssuer {
                issuer: issuer.into_inner(),
                jwks_uri: jwks_uri.map(S::into_inner),
                require_typ: require_typ.unwrap_or(true),
            }
        })
        .collect();
    ProxyConfig {
        listen: v.socket(&listen, "proxy.listen"),
        clock_skew: v.duration(&clock_skew, "proxy.clock_skew", DEFAULT_CLOCK_SKEW),
        upstream_timeout: v.duration(
            &upstream_timeout,
            "proxy.upstream_timeout",
            DEFAULT_UPSTREAM_TIMEOUT,
        ),
        trusted_issuers,
    }
}

/// Whether `prefix` is already in the normal form the gateway matches against.
fn is_normal_prefix(prefix: &str) -> bool {
    prefix.starts_with('/')
        && !prefix.contains("//")
        && !prefix.contains(['?', '#', '%', '\\', ';'])
        && !prefix.split('/').any(|seg| seg == "." || seg == "..")
}

fn route_configs(
    v: &mut V<'_>,
    entries: Vec<S<raw::Route>>,
    model: &Model,
    has_proxy: bool,
) -> Vec<Route> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let span = entry.span();
        let raw::Route {
            path_prefix,
            host,
            upstream,
            resource,
            scopes,
            strip_authorization,
        } = entry.into_inner();
        let key = format!("routes[{i}]");
        if !has_proxy {
            v.report(
                span.clone(),
                key.clone(),
                "[[routes]] need a [proxy] section",
            );
        }
        if !is_normal_prefix(path_prefix.get_ref()) {
            v.at(&path_prefix, format!("{key}.path_prefix"), "must start with '/' and be a normalised path (no '//', '.', '..', '%', '\\', ';', '?' or '#')");
        }
        let prefix = match path_prefix.get_ref().trim_end_matches('/') {
            "" => "/".to_owned(),
            p => p.to_owned(),
        };
        let host_value = host.as_ref().map(|h| {
            let h = h.get_ref().to_ascii_lowercase();
            match h.rsplit_once(':') {
                Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name.to_owned(),
                _ => h,
            }
        });
        if !seen.insert((host_value.clone(), prefix.clone())) {
            v.at(
                &path_prefix,
                format!("{key}.path_prefix"),
                "another route has the same host and path_prefix",
            );
        }
        match url::Url::parse(upstream.get_ref()) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && matches!(u.path(), "" | "/")
                    && u.query().is_none()
                    && u.fragment().is_none() => {}
            _ => v.at(
                &upstream,
                format!("{key}.upstream"),
                "must be an http(s) origin without path, e.g. \"http://127.0.0.1:9001\"",
            ),
        }
        let api = model.api_resource(resource.get_ref());
        if api.is_none() {
            v.at(
                &resource,
                format!("{key}.resource"),
                format!(
                    "no [[api_resources]] entry is named {:?}",
                    resource.get_ref()
                ),
            );
        }
        let mut methods = BTreeMap::new();
        if let Some(scopes) = scopes {
            for (method, list) in scopes.into_inner() {
                let method_ok = method == "*"
                    || (!method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase()));
                if !method_ok {
                    v.report(
                        span.clone(),
                        format!("{key}.scopes.{method}"),
                        "a method must be upper case (e.g. GET) or \"*\"",
                    );
                }
                for (j, s) in list.iter().enumerate() {
                    if api.is_some_and(|a| !a.lists(s.get_ref())) {
                        v.at(
                            s,
                            format!("{key}.scopes.{method}[{j}]"),
                            format!(
                                "the resource {:?} does not list the scope {:?}",
                                resource.get_ref(),
                                s.get_ref()
                            ),
                        );
                    }
                }
                methods.insert(method, list.into_iter().map(S::into_inner).collect());
            }
        }
        out.push(Route {
            path_prefix: prefix,
            host: host_value,
            upstream: upstream.into_inner().trim_end_matches('/').to_owned(),
            resource: resource.into_inner(),
            scopes: methods,
            strip_authorization,
        });
    }
    if has_proxy && out.is_empty() {
        v.problems.push(v.lines.problem(
            None,
            "routes",
            "the gateway needs at least one [[routes]] entry",
        ));
    }
    out
}
