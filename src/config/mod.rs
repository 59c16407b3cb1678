//! The resource file: parse (raw serde shapes with spans), validate (every problem, each with
//! its key path and line:column) and build the typed, immutable [`Config`].

pub mod host;
mod known;
mod pieces;
mod raw;
mod validate;
pub(crate) use validate::{DEFAULT_REFRESH_LIFETIME, DEFAULT_REFRESH_SLIDING_LIFETIME};

pub use host::Host;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::jwt::KeySet;
use crate::positions::Positions;
use crate::resources::{Client, Model};

/// What to do with a signing key file that is missing but marked `generate_if_missing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingKeys {
    /// `isogate check`: accept it without touching the disk (no key is loaded for it).
    Accept,
    /// `isogate serve` at start: create it (mode 0600).
    Generate,
    /// A reload: a missing key file is a problem, and the last good keys keep serving
    /// (generating one would drop the old key from JWKS and fail every token it signed).
    Refuse,
}

/// A validated resource file.
#[derive(Debug)]
pub struct Config {
    /// The file it was loaded from.
    pub path: PathBuf,
    /// `[issuer]`, when the token service runs.
    pub issuer: Option<IssuerConfig>,
    /// Identity resources, API scopes and API resources.
    pub model: Model,
    /// Clients by `client_id`.
    pub clients: BTreeMap<String, Client>,
    /// Users who can log in.
    pub users: Users,
    /// `[proxy]`, when the gateway runs.
    pub proxy: Option<ProxyConfig>,
    /// `[[routes]]` in file order.
    pub routes: Vec<Route>,
    /// `[admin]` listener.
    pub admin: Option<AdminConfig>,
    /// `[store]`: the issuer's state in PostgreSQL; without it, in redb under `data_dir`.
    pub store: Option<StoreConfig>,
    /// How long shutdown waits for in-flight requests (`shutdown_grace`, default 10s).
    pub shutdown_grace: Duration,
    /// SHA-256 of the file's bytes as parsed (zero when built from text by [`parse`]).
    pub text_hash: [u8; 32],
}

impl Config {
    /// Every file the resource file names (signing keys, TLS certificates and keys, clients'
    /// `jwks_file`s): a change
    /// to one is a change to the configuration.
    pub fn named_files(&self) -> Vec<PathBuf> {
        let keys = self.issuer.iter().flat_map(|i| i.key_files.iter().cloned());
        let tls = [
            self.issuer.as_ref().and_then(|i| i.tls.as_ref()),
            self.proxy.as_ref().and_then(|p| p.tls.as_ref()),
        ];
        let tls = tls
            .into_iter()
            .flatten()
            .flat_map(|t| [t.cert.clone(), t.key.clone()]);
        let client_keys = self
            .clients
            .values()
            .filter_map(|c| match &c.assertion_keys {
                Some(crate::resources::AssertionKeys::File { path, .. }) => Some(path.clone()),
                _ => None,
            });
        keys.chain(tls).chain(client_keys).collect()
    }

    /// The connection limits of `role`'s listener, when it runs.
    pub fn limits(&self, role: crate::Role) -> Option<Limits> {
        match role {
            crate::Role::Issuer => self.issuer.as_ref().map(|i| i.limits),
            crate::Role::Proxy => self.proxy.as_ref().map(|p| p.limits),
            crate::Role::Admin => self.admin.map(|a| a.limits),
        }
    }

    /// The TLS settings of `role`'s listener, when it has `tls`.
    pub fn listener_tls(&self, role: crate::Role) -> Option<&Arc<rustls::ServerConfig>> {
        let tls = match role {
            crate::Role::Issuer => self.issuer.as_ref()?.tls.as_ref(),
            crate::Role::Proxy => self.proxy.as_ref()?.tls.as_ref(),
            crate::Role::Admin => None,
        };
        tls.map(|t| &t.server)
    }

    /// One line saying what the file configures, for `isogate check`.
    pub fn summary(&self) -> String {
        let issuer = match &self.issuer {
            Some(i) if i.keys_to_generate > 0 => format!(
                "issuer {} ({} signing keys, {} more generated on first start)",
                i.issuer,
                i.keys.all().len(),
                i.keys_to_generate
            ),
            Some(i) => format!("issuer {} ({} signing keys)", i.issuer, i.keys.all().len()),
            None => "no issuer".into(),
        };
        format!(
            "{issuer}, {} API resources, {} API scopes, {} identity resources, {} clients, {} users, {} routes",
            self.model.api_resources.len(),
            self.model.api_scopes.len(),
            self.model.identity_resources.len(),
            self.clients.len(),
            self.users.len(),
            self.routes.len(),
        )
    }
}

/// `[issuer]`, validated.
#[derive(Debug)]
pub struct IssuerConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The `iss` value exactly as configured.
    pub issuer: String,
    /// The path of the issuer URL without trailing slash (`""` for `https://id.example.com`):
    /// endpoints are served below it.
    pub base_path: String,
    /// Default access token lifetime (`access_token_lifetime`, default 1h).
    pub access_token_lifetime: Duration,
    /// Folder of durable grants (`data_dir`, default `data`), resolved against the file's folder.
    pub data_dir: PathBuf,
    /// Signing keys in file order.
    pub keys: KeySet,
    /// Keys marked `generate_if_missing` whose files do not exist yet (`isogate check` only).
    pub keys_to_generate: usize,
    /// The signing key files, resolved against the file's folder.
    pub key_files: Vec<PathBuf>,
    /// `tls`: the listener speaks HTTPS.
    pub tls: Option<Tls>,
    /// Connection limits of the listener.
    pub limits: Limits,
    /// How long a request body that the token service reads (token, login, consent,
    /// introspection, revocation) may take to arrive (`request_body_timeout`, default 10s).
    pub request_body_timeout: Duration,
    /// How old a DPoP proof at the token endpoint may be (`dpop_max_age`, default 60s).
    pub dpop_max_age: Duration,
    /// `[issuer.registration]`: clients may register themselves (SPEC §9).
    pub registration: Option<RegistrationConfig>,
}

/// `[issuer.registration]`, validated (SPEC §9).
#[derive(Debug, Clone)]
pub struct RegistrationConfig {
    /// The bearer token registration needs (`initial_access_token`); `None`: open.
    pub initial_access_token: Option<crate::secret::SecretHash>,
    /// The most a registered client may ask for (`allowed_scopes`).
    pub allowed_scopes: BTreeSet<String>,
    /// The grant types a registered client may use (`allowed_grant_types`, default
    /// `authorization_code` and `refresh_token`).
    pub allowed_grant_types: BTreeSet<crate::resources::GrantType>,
    /// Whether an https `client_id` names a client ID metadata document
    /// (`client_id_metadata_documents`).
    pub client_id_metadata_documents: bool,
    /// Whether such a document may come from a loopback, private or link-local address
    /// (`allow_private_addresses`, for tests).
    pub allow_private_addresses: bool,
}

/// The connection limits of one listener (`max_connections`, `idle_timeout`,
/// `request_header_timeout` in its section).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most connections open at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// A connection with no request in flight is closed after this long.
    pub idle_timeout: Duration,
    /// The time a request head may take to arrive; for a connection's first request it is
    /// counted from the connection's start, so a client that sends nothing is closed after it.
    pub request_header_timeout: Duration,
}

/// `[store]`, validated (SPEC §7).
#[derive(Clone)]
pub struct StoreConfig {
    /// Where and as whom to connect. May hold a password (from `url_env`): never printed.
    pub pg: tokio_postgres::Config,
    /// Most connections kept open (`pool_size`, default 16).
    pub pool_size: usize,
    /// Bounds every connection attempt, every wait for a pooled connection and every
    /// statement (`connect_timeout`, default 3s).
    pub connect_timeout: Duration,
    /// `tls = { ca }`: verify the server against these roots; without it, no TLS.
    pub tls_roots: Option<rustls::RootCertStore>,
    /// `postgres://user@host:port/db`, without the password: for `/config` and log lines.
    pub shown: String,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &self.shown)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("tls", &self.tls_roots.is_some())
            .finish()
    }
}

/// `[admin]`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Connection limits of the listener.
    pub limits: Limits,
}

impl IssuerConfig {
    /// The URL of an endpoint at `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer.trim_end_matches('/'))
    }
}

/// A `[[users]]` entry.
#[derive(Debug, Clone)]
pub struct User {
    /// The `sub` claim.
    pub subject: String,
    /// Login name.
    pub username: String,
    /// Argon2id PHC string.
    pub password: String,
    /// Profile claims.
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// The `[[users]]` in file order, found by subject or username in one lookup (validation
/// refuses duplicates of either; the first would win).
#[derive(Debug, Clone, Default)]
pub struct Users {
    list: Vec<User>,
    by_subject: Positions,
    by_username: Positions,
}

impl Users {
    /// Indexes `list`.
    pub fn new(list: Vec<User>) -> Self {
        let mut users = Users {
            list,
            ..Users::default()
        };
        for i in 0..users.list.len() {
            users
                .by_subject
                .insert_first(i, |i| Users::subject(&users.list, i));
            users
                .by_username
                .insert_first(i, |i| Users::username(&users.list, i));
        }
        users
    }

    /// The user whose `sub` is `subject`.
    pub fn by_subject(&self, subject: &str) -> Option<&User> {
        let i = (self.by_subject).get(Some(subject), |i| Users::subject(&self.list, i))?;
        self.list.get(i)
    }

    /// The user who logs in as `username`.
    pub fn by_username(&self, username: &str) -> Option<&User> {
        let i = (self.by_username).get(Some(username), |i| Users::username(&self.list, i))?;
        self.list.get(i)
    }

    /// The keys of [`Users::by_subject`] and [`Users::by_username`].
    fn subject(list: &[User], i: usize) -> Option<&str> {
        list.get(i).map(|u| u.subject.as_str())
    }

    fn username(list: &[User], i: usize) -> Option<&str> {
        list.get(i).map(|u| u.username.as_str())
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// `[proxy]`, validated.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Tolerance for `exp` and `nbf`, and for a DPoP proof's `iat` (default 30s).
    pub clock_skew: Duration,
    /// How old a DPoP proof may be (`dpop_max_age`, default 60s).
    pub dpop_max_age: Duration,
    /// `public_url`: the origin clients address the gateway at (`https://api.example.com`),
    /// for DPoP's `htu` and RFC 9728 document URLs; `None`: the request's own.
    pub public_url: Option<String>,
    /// Upstream response timeout (default 30s).
    pub upstream_timeout: Duration,
    /// Issuers other than the local one.
    pub trusted_issuers: Vec<TrustedIssuer>,
    /// `tls`: the listener speaks HTTPS.
    pub tls: Option<Tls>,
    /// Connection limits of the listener.
    pub limits: Limits,
}

/// `tls = { cert, key }` on a listener, validated: the files, resolved against the file's
/// folder, and the server settings built from them (ALPN `h2` and `http/1.1`).
#[derive(Clone)]
pub struct Tls {
    /// The PEM certificate chain.
    pub cert: PathBuf,
    /// The PEM private key.
    pub key: PathBuf,
    /// What each new connection is served with.
    pub server: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for Tls {
    // The paths only: the settings hold the private key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// A `[[proxy.trusted_issuers]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedIssuer {
    /// The `iss` value.
    pub issuer: String,
    /// Where its keys are; discovered when absent.
    pub jwks_uri: Option<String>,
    /// Require `typ: at+jwt` (default true).
    pub require_typ: bool,
    /// `/readyz` answers 503 from start until its first key set arrives (default true).
    pub wait_for_keys: bool,
}

/// A `[[routes]]` entry.
#[derive(Debug, Clone)]
pub struct Route {
    /// Normalised prefix without trailing slash (`/` for the root).
    pub path_prefix: String,
    /// The host it is pinned to.
    pub host: Option<Host>,
    /// The upstream origin, e.g. `http://127.0.0.1:9001`; one for all the routes that name it.
    pub upstream: Arc<Upstream>,
    /// The API resource this route protects.
    pub resource: String,
    /// Method → scopes; `*` for the rest. Empty: any scope of the resource.
    pub scopes: BTreeMap<String, Vec<String>>,
    /// `[routes.mcp]`: the scopes by JSON-RPC method and tool or prompt name (SPEC §10).
    pub mcp: Option<crate::proxy::mcp::Rules>,
    /// Remove `Authorization` before forwarding.
    pub strip_authorization: bool,
    /// Headers of [`crate::protocol::REWRITING`] this route forwards (`keep_headers`).
    pub keep_headers: Vec<http::HeaderName>,
}

/// A route's upstream origin, parsed once when the file is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// As configured, without a trailing slash, e.g. `http://127.0.0.1:9001`.
    pub url: Arc<str>,
    /// `http` or `https`.
    pub scheme: http::uri::Scheme,
    /// Host and port (the scheme's default when the URL names none).
    pub authority: http::uri::Authority,
    /// The `Host` header of requests to it: the host, and the port unless the scheme's default.
    pub host: http::HeaderValue,
}

impl Upstream {
    /// Parses an `http(s)` origin without path, query or fragment; `None` otherwise.
    pub fn parse(text: &str) -> Option<Upstream> {
        let url = url::Url::parse(text).ok()?;
        let scheme = match url.scheme() {
            "http" => http::uri::Scheme::HTTP,
            "https" => http::uri::Scheme::HTTPS,
            _ => return None,
        };
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return None;
        }
        let host = url.host_str()?;
        let port = url.port_or_known_default()?;
        let host_header = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        Some(Upstream {
            url: Arc::from(text.trim_end_matches('/')),
            scheme,
            authority: format!("{host}:{port}").parse().ok()?,
            host: http::HeaderValue::try_from(host_header).ok()?,
        })
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

/// One thing wrong with the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `clients[1].allowed_scopes[0]`; empty for the file as a whole.
    pub key: String,
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// 1-based column (in characters), 0 when unknown.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: ", self.line, self.column)?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Why a file was refused: every problem found.
#[derive(Debug, thiserror::Error)]
pub struct Invalid {
    /// The file.
    pub path: PathBuf,
    /// Every problem, in file order.
    pub problems: Vec<Problem>,
    /// SHA-256 of the bytes that were refused (zero when the file could not be read).
    pub text_hash: [u8; 32],
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{}: {n} problem{}",
            self.path.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  {}:{p}", self.path.display())?;
        }
        Ok(())
    }
}

impl Invalid {
    /// Logs a summary line, then one line per problem (so each can be grepped and counted).
    pub fn log(&self, what: &str) {
        tracing::error!(file = %self.path.display(), problems = self.problems.len(), "{what}");
        for p in &self.problems {
            tracing::error!(file = %self.path.display(), "{p}");
        }
    }
}

/// Reads, parses and validates the resource file at `path`.
pub fn load(path: &Path, missing_keys: MissingKeys) -> Result<Config, Invalid> {
    load_read(path, missing_keys).0
}

/// [`load`], and the bytes it parsed (`None` when the file could not be read): a reload
/// compares them with the file a moment later to tell whether it was still being written.
pub fn load_read(
    path: &Path,
    missing_keys: MissingKeys,
) -> (Result<Config, Invalid>, Option<Vec<u8>>) {
    let invalid = |problems, text_hash| Invalid {
        path: path.to_owned(),
        problems,
        text_hash,
    };
    let unreadable = |message: String| Problem {
        key: String::new(),
        line: 0,
        column: 0,
        message,
    };
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => {
            let problem = unreadable(format!("cannot read the file: {e}"));
            return (Err(invalid(vec![problem], [0; 32])), None);
        }
    };
    // The hash of exactly these bytes: a reload compares it to tell whether the file changed,
    // so it must never describe other bytes than the ones parsed. Taken on another core while
    // this one parses (the hash costs about an eighth of the parse).
    let (text_hash, parsed) = std::thread::scope(|s| {
        let hashing = s.spawn(|| {
            let mut hash = [0; 32];
            hash.copy_from_slice(
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes).as_ref(),
            );
            hash
        });
        let dir = path.parent().unwrap_or(Path::new("."));
        let parsed = std::str::from_utf8(&bytes).map(|text| parse(text, dir, missing_keys));
        let hash = hashing
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (hash, parsed)
    });
    let loaded = match parsed {
        Err(_) => Err(invalid(
            vec![unreadable("the file is not UTF-8".into())],
            text_hash,
        )),
        Ok(Ok(mut config)) => {
            config.path = path.to_owned();
            config.text_hash = text_hash;
            Ok(config)
        }
        Ok(Err(problems)) => Err(invalid(problems, text_hash)),
    };
    (loaded, Some(bytes))
}

/// Parses and validates file contents; relative paths are resolved against `dir`.
///
/// Every problem is reported at once: all syntax errors; otherwise every unknown key, every
/// value of the wrong shape and every missing required key (each found by deserializing
/// again without it), and every problem of meaning in what remains.
pub fn parse(text: &str, dir: &Path, missing_keys: MissingKeys) -> Result<Config, Vec<Problem>> {
    let lines = Lines::new(text);
    // A big file is first parsed in pieces; if it has a problem, the whole is parsed again
    // below to say where.
    if text.len() > 2 * pieces::PIECE {
        if let Some(config) = pieces::parse(text, pieces::PIECE)
            .and_then(|file| without_problems(file, dir, missing_keys, &lines))
        {
            return Ok(config);
        }
    }
    parse_whole(text, dir, missing_keys, &lines)
}

/// [`parse`], of the whole text at once.
fn parse_whole(
    text: &str,
    dir: &Path,
    missing_keys: MissingKeys,
    lines: &Lines<'_>,
) -> Result<Config, Vec<Problem>> {
    let (root, syntax) = toml::de::DeTable::parse_recoverable(text);
    let in_order = |mut problems: Vec<Problem>| {
        problems.sort_by_key(|p| (p.line, p.column));
        problems
    };
    if !syntax.is_empty() {
        return Err(in_order(
            syntax.iter().map(|e| lines.problem_from_toml(e)).collect(),
        ));
    }
    // The parsed document is gone before validation allocates what serves: what the parse took
    // is free for the configuration to reuse.
    let Shapes {
        file,
        unknown,
        mut problems,
    } = deserialize(root, text, lines).map_err(in_order)?;
    let mended: BTreeSet<String> = problems.iter().map(|p| p.key.clone()).collect();
    problems.extend(unknown);
    let mut meaning = Vec::new();
    let config = validate::validate(file, lines, dir, missing_keys, &mut meaning);
    // A key already reported as mistyped or missing stood in for by a placeholder: what
    // validation says about that placeholder is noise.
    problems.extend(meaning.into_iter().filter(|p| !mended.contains(&p.key)));
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(in_order(problems))
    }
}

/// The configuration `file` makes, or `None` when it has a problem.
fn without_problems(
    file: raw::File,
    dir: &Path,
    missing_keys: MissingKeys,
    lines: &Lines<'_>,
) -> Option<Config> {
    let mut meaning = Vec::new();
    let config = validate::validate(file, lines, dir, missing_keys, &mut meaning);
    meaning.is_empty().then_some(config)
}

/// `root` deserialized into the raw shapes when every key is known and of the right shape.
///
/// Without serde_path_to_error, which copies every key it passes to know where an error is,
/// and without serde_ignored (which copies them too): a file with a problem is deserialized
/// again with both, by [`deserialize`].
fn shaped(root: toml::Spanned<toml::de::DeTable<'_>>) -> Option<raw::File> {
    if !known::all_known(root.get_ref()) {
        return None;
    }
    <raw::File as serde::Deserialize>::deserialize(toml::de::Deserializer::from(root)).ok()
}

/// What [`deserialize`] makes of a file.
struct Shapes {
    file: raw::File,
    /// Every unknown key.
    unknown: Vec<Problem>,
    /// The values of the wrong shape and the missing keys.
    problems: Vec<Problem>,
}

/// The most shape problems reported before giving up (each costs one more deserialization).
const MAX_SHAPE_PROBLEMS: usize = 100;

/// Deserializes `root`, parsed from `text`, into the raw shapes. A file without problems is
/// deserialized from `root` itself. Otherwise `text` is parsed again, to locate the problems
/// and to be mended after each error so that the next one is found too: a value of the wrong
/// shape is removed (a whole array, for a bad element), a missing required key is given an
/// empty string. `Err` with every problem found when it cannot go on.
fn deserialize(
    root: toml::Spanned<toml::de::DeTable<'_>>,
    text: &str,
    lines: &Lines<'_>,
) -> Result<Shapes, Vec<Problem>> {
    if let Some(file) = shaped(root) {
        return Ok(Shapes {
            file,
            unknown: Vec::new(),
            problems: Vec::new(),
        });
    }
    let (original, _) = toml::de::DeTable::parse_recoverable(text);
    // The mended copy, made at the first mend.
    let mut root: Option<toml::Spanned<toml::de::DeTable<'_>>> = None;
    let mut problems: Vec<Problem> = Vec::new();
    let mut mended: BTreeSet<Vec<String>> = BTreeSet::new();
    loop {
        let mut unknown = Vec::new();
        let e = match shapes(root.as_ref().unwrap_or(&original).clone(), &mut unknown) {
            Ok(file) => {
                let unknown = unknown
                    .iter()
                    .map(|segs| unknown_key(original.get_ref(), segs, lines))
                    .collect();
                return Ok(Shapes {
                    file,
                    unknown,
                    problems,
                });
            }
            Err(e) => e,
        };
        let at = error_segments(e.path());
        let message = e.inner().message().trim_end();
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.strip_suffix('`'));
        let (target, problem) = match missing {
            Some(field) => {
                let mut target = at.clone();
                target.push(Segment::Key(field.to_owned()));
                let (key, _) = key_path(&target);
                let span = locate(original.get_ref(), &at).or_else(|| e.inner().span());
                let problem = lines.problem(span, key, format!("missing required key `{field}`"));
                (target, problem)
            }
            None => {
                // A bad element of an array: the whole array goes.
                let mut target = at.clone();
                if matches!(target.last(), Some(Segment::Index(_))) {
                    target.pop();
                }
                let (key, _) = key_path(&at);
                let span = locate(original.get_ref(), &at).or_else(|| e.inner().span());
                (target, lines.problem(span, key, shape_message(message)))
            }
        };
        // Removing a required key makes it missing next time: reported once, as mistyped.
        if !problems.iter().any(|p| p.key == problem.key) {
            problems.push(problem);
        }
        let mut mend_key: Vec<String> = target.iter().map(|s| format!("{s:?}")).collect();
        mend_key.push(missing.map_or("remove", |_| "add").to_owned());
        let again = !mended.insert(mend_key);
        if again
            || problems.len() >= MAX_SHAPE_PROBLEMS
            || !mend(
                root.get_or_insert_with(|| original.clone()).get_mut(),
                &target,
                missing.is_some(),
            )
        {
            return Err(problems);
        }
    }
}

/// Deserializes `root` into the raw shapes, adding the path of every unknown key to `unknown`.
fn shapes(
    root: toml::Spanned<toml::de::DeTable<'_>>,
    unknown: &mut Vec<Vec<Segment>>,
) -> Result<raw::File, serde_path_to_error::Error<toml::de::Error>> {
    let deserializer = toml::de::Deserializer::from(root);
    let mut ignored = |path: serde_ignored::Path<'_>| unknown.push(segments(&path));
    let ignoring = serde_ignored::Deserializer::new(deserializer, &mut ignored);
    serde_path_to_error::deserialize::<_, raw::File>(ignoring)
}

/// The problem of the unknown key at `segs`, with the nearest known key when one is close.
fn unknown_key(root: &toml::de::DeTable<'_>, segs: &[Segment], lines: &Lines<'_>) -> Problem {
    let span = locate(root, segs);
    let (key, last) = key_path(segs);
    let table: Vec<&str> = segs[..segs.len().saturating_sub(1)]
        .iter()
        .filter_map(|seg| match seg {
            Segment::Key(k) => Some(k.as_str()),
            Segment::Index(_) => None,
        })
        .collect();
    let message = match known::nearest(&table, &last) {
        Some(near) => format!("unknown key `{last}`; did you mean `{near}`?"),
        None => format!("unknown key `{last}`"),
    };
    lines.problem(span, key, message)
}

/// `invalid type: integer `30`, expected a string` as `expected a string, found integer `30``.
fn shape_message(message: &str) -> String {
    let message = redact(message);
    match message
        .strip_prefix("invalid type: ")
        .and_then(|rest| rest.rsplit_once(", expected "))
    {
        // The value itself is not repeated: it may be a secret in the wrong place.
        Some((found, expected)) if found.starts_with("string ") => {
            format!("expected {expected}, found a string")
        }
        Some((found, expected)) => format!("expected {expected}, found {found}"),
        None => message,
    }
}

/// The path `serde_path_to_error` reports, without the `Spanned` wrappers.
fn error_segments(path: &serde_path_to_error::Path) -> Vec<Segment> {
    use serde_path_to_error::Segment as P;
    path.iter()
        .filter_map(|seg| match seg {
            P::Seq { index } => Some(Segment::Index(*index)),
            P::Map { key } if !key.starts_with("$__serde_spanned_private") => {
                Some(Segment::Key(key.clone()))
            }
            _ => None,
        })
        .collect()
}

/// Removes the key at `segments` from `root`, or, when `placeholder`, sets it to `""`.
/// False when there is no such table to change.
fn mend(root: &mut toml::de::DeTable<'_>, segments: &[Segment], placeholder: bool) -> bool {
    use toml::de::DeValue;
    let Some((Segment::Key(last), parents)) = segments.split_last() else {
        return false;
    };
    let Some(table) = table_at(root, parents) else {
        return false;
    };
    if placeholder {
        let key = toml::Spanned::new(0..0, std::borrow::Cow::Owned(last.clone()));
        let value = toml::Spanned::new(0..0, DeValue::String(std::borrow::Cow::Borrowed("")));
        table.insert(key, value);
        true
    } else {
        table.remove(last.as_str()).is_some()
    }
}

/// The table at `segments` (keys, and indexes into arrays of tables).
fn table_at<'a, 'i>(
    root: &'a mut toml::de::DeTable<'i>,
    segments: &[Segment],
) -> Option<&'a mut toml::de::DeTable<'i>> {
    use toml::de::DeValue;
    let mut table = root;
    let mut rest = segments;
    while let Some((Segment::Key(key), after)) = rest.split_first() {
        let mut value = table.get_mut(key.as_str())?.get_mut();
        rest = after;
        while let Some((Segment::Index(i), after)) = rest.split_first() {
            value = match value {
                DeValue::Array(a) => a.get_mut(*i)?.get_mut(),
                _ => return None,
            };
            rest = after;
        }
        table = match value {
            DeValue::Table(t) => t,
            _ => return None,
        };
    }
    rest.is_empty().then_some(table)
}

#[derive(Debug, Clone)]
enum Segment {
    Key(String),
    Index(usize),
}

/// The path `serde_ignored` reports, without the `Option` and `Spanned` wrappers.
fn segments(path: &serde_ignored::Path<'_>) -> Vec<Segment> {
    use serde_ignored::Path as P;
    let mut out = match path {
        P::Root => return Vec::new(),
        P::Seq { parent, .. }
        | P::Map { parent, .. }
        | P::Some { parent }
        | P::NewtypeStruct { parent }
        | P::NewtypeVariant { parent } => segments(parent),
    };
    match path {
        P::Seq { index, .. } => out.push(Segment::Index(*index)),
        P::Map { key, .. } if !key.starts_with("$__serde_spanned_private") => {
            out.push(Segment::Key(key.clone()))
        }
        _ => {}
    }
    out
}

/// `clients[0].foo` and `foo` for a path.
fn key_path(segments: &[Segment]) -> (String, String) {
    let mut key = String::new();
    for seg in segments {
        match seg {
            Segment::Key(k) if key.is_empty() => key.push_str(k),
            Segment::Key(k) => {
                key.push('.');
                key.push_str(k)
            }
            Segment::Index(i) => key.push_str(&format!("[{i}]")),
        }
    }
    let last = match segments.last() {
        Some(Segment::Key(k)) => k.clone(),
        _ => String::new(),
    };
    (key, last)
}

/// The span of the key at `segments` in the parsed document.
fn locate(root: &toml::de::DeTable<'_>, segments: &[Segment]) -> Option<Range<usize>> {
    use toml::de::DeValue;
    let (Segment::Key(first), rest) = segments.split_first()? else {
        return None;
    };
    let (key, mut value) = root.get_key_value(first.as_str())?;
    let mut span = key.span();
    for seg in rest {
        match (seg, value.get_ref()) {
            (Segment::Key(k), DeValue::Table(t)) => {
                let (key, v) = t.get_key_value(k.as_str())?;
                span = key.span();
                value = v;
            }
            (Segment::Index(i), DeValue::Array(a)) => {
                value = a.get(*i)?;
                span = value.span();
            }
            _ => return None,
        }
    }
    Some(span)
}

/// Turns byte offsets into line:column.
pub(crate) struct Lines<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Lines { text, starts }
    }

    fn position(&self, offset: usize) -> (usize, usize) {
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts[line - 1];
        let column = self
            .text
            .get(start..offset.min(self.text.len()))
            .map_or(1, |s| s.chars().count() + 1);
        (line, column)
    }

    /// A problem at `span` (or at no known place).
    pub(crate) fn problem(
        &self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Problem {
        let (line, column) = span.map_or((0, 0), |s| self.position(s.start));
        Problem {
            key: key.into(),
            line,
            column,
            message: message.into(),
        }
    }

    fn problem_from_toml(&self, e: &toml::de::Error) -> Problem {
        self.problem(e.span(), "", redact(e.message().trim_end()))
    }
}

/// Hides the values that serde quotes in type errors (`invalid type: string "…", expected a
/// sequence`): a secret or hash written in the wrong shape would otherwise be shown verbatim.
pub(crate) fn redact(error: &str) -> String {
    const QUOTED: &str = "string \"";
    let mut out = String::with_capacity(error.len());
    let mut rest = error;
    while let Some(at) = rest.find(QUOTED) {
        let (before, after) = rest.split_at(at + QUOTED.len());
        out.push_str(before);
        out.push_str("<redacted>\"");
        // Skip to the closing quote; serde writes the value with Debug escapes (`\"`, `\\`).
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests;
