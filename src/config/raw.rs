//! The resource file exactly as written: serde shapes with source spans, no meaning attached.
//! Unknown keys are collected by `serde_ignored` (all of them, not just the first) and reported
//! by [`super::load`] as errors; that is why these structs do not `deny_unknown_fields`.
//! Defaults are applied in validation, which documents them.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// A value and where it stands in the file.
pub(super) type S<T> = Spanned<T>;

/// A duration as written, such as `"30s"`: a string, read in validation. Its own type so that
/// a number in its place is told what to write.
#[derive(Debug)]
pub(super) struct Duration(pub String);

impl std::ops::Deref for Duration {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Duration;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration string such as \"30s\"")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
                Ok(Duration(text.to_owned()))
            }
        }
        deserializer.deserialize_str(Text)
    }
}

/// The whole resource file.
#[derive(Debug, Deserialize)]
pub(super) struct File {
    /// `[issuer]`: the token service.
    pub issuer: Option<S<Issuer>>,
    /// `[[identity_resources]]`.
    #[serde(default)]
    pub identity_resources: Vec<S<IdentityResource>>,
    /// `[[api_scopes]]`.
    #[serde(default)]
    pub api_scopes: Vec<S<ApiScope>>,
    /// `[[api_resources]]`.
    #[serde(default)]
    pub api_resources: Vec<S<ApiResource>>,
    /// `[[clients]]`.
    #[serde(default)]
    pub clients: Vec<S<Client>>,
    /// `[[users]]`.
    #[serde(default)]
    pub users: Vec<S<User>>,
    /// `[proxy]`: the gateway.
    pub proxy: Option<S<Proxy>>,
    /// `[[routes]]`.
    #[serde(default)]
    pub routes: Vec<S<Route>>,
    /// `[admin]`.
    pub admin: Option<S<Admin>>,
    /// `[store]`: PostgreSQL for a fleet.
    pub store: Option<S<Store>>,
    /// How long shutdown waits for in-flight requests. Default `"10s"`.
    pub shutdown_grace: Option<S<Duration>>,
}

impl File {
    /// Goes on with `more`, deserialized from the text after this one's: its arrays of tables
    /// are appended; `None` when it sets a table or key this one sets too.
    pub(super) fn append(&mut self, more: File) -> Option<()> {
        fn once<T>(here: &mut Option<T>, more: Option<T>) -> Option<()> {
            match (here.is_some(), more) {
                (true, Some(_)) => return None,
                (false, Some(more)) => *here = Some(more),
                (_, None) => {}
            }
            Some(())
        }
        let File {
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
        } = more;
        once(&mut self.issuer, issuer)?;
        once(&mut self.proxy, proxy)?;
        once(&mut self.admin, admin)?;
        once(&mut self.store, store)?;
        once(&mut self.shutdown_grace, shutdown_grace)?;
        self.identity_resources.extend(identity_resources);
        self.api_scopes.extend(api_scopes);
        self.api_resources.extend(api_resources);
        self.clients.extend(clients);
        self.users.extend(users);
        self.routes.extend(routes);
        Some(())
    }
}

/// `[issuer]`.
#[derive(Debug, Deserialize)]
pub(super) struct Issuer {
    /// Socket address to listen on, e.g. `"127.0.0.1:5000"`.
    pub listen: S<String>,
    /// The `iss` value and base URL of every endpoint.
    pub issuer: S<String>,
    /// Default `"1h"`.
    pub access_token_lifetime: Option<S<Duration>>,
    /// Default `false`.
    #[serde(default)]
    pub emit_static_audience: bool,
    /// Default `"data"`.
    pub data_dir: Option<S<String>>,
    /// TLS certificate and key.
    pub tls: Option<S<Tls>>,
    /// `[[issuer.signing_keys]]`.
    #[serde(default)]
    pub signing_keys: Vec<S<SigningKey>>,
    /// Default 4096.
    pub max_connections: Option<S<i64>>,
    /// Default `"60s"`.
    pub idle_timeout: Option<S<Duration>>,
    /// Default `"10s"`.
    pub request_header_timeout: Option<S<Duration>>,
    /// Default `"10s"`.
    pub request_body_timeout: Option<S<Duration>>,
    /// How old a DPoP proof may be. Default `"60s"`.
    pub dpop_max_age: Option<S<Duration>>,
    /// `[issuer.registration]`: `POST /connect/register` (SPEC §9).
    pub registration: Option<S<Registration>>,
}

/// `[issuer.registration]`.
#[derive(Debug, Deserialize)]
pub(super) struct Registration {
    /// `sha256:…` of the bearer token registration needs; absent: open.
    pub initial_access_token: Option<S<String>>,
    /// The most a registered client may ask for.
    #[serde(default)]
    pub allowed_scopes: Vec<S<String>>,
    /// Default `["authorization_code", "refresh_token"]`.
    pub allowed_grant_types: Option<Vec<S<String>>>,
    /// Default `false`.
    #[serde(default)]
    pub client_id_metadata_documents: bool,
    /// Default `false`.
    #[serde(default)]
    pub allow_private_addresses: bool,
}

/// `[store]`.
#[derive(Debug, Deserialize)]
pub(super) struct Store {
    /// The name of an environment variable holding the `postgres://` URL.
    pub url_env: Option<S<String>>,
    /// The URL itself, without a password.
    pub url: Option<S<String>>,
    /// Default 16.
    pub pool_size: Option<S<i64>>,
    /// Default `"3s"`.
    pub connect_timeout: Option<S<Duration>>,
    /// `tls = { ca }`: verify the server with this CA.
    pub tls: Option<S<StoreTls>>,
}

/// `[store] tls = { ca }`.
#[derive(Debug, Deserialize)]
pub(super) struct StoreTls {
    /// PEM file of the certificate authorities that sign the server's certificate.
    pub ca: S<String>,
}

/// `tls = { cert, key }` on a listener.
#[derive(Debug, Deserialize)]
pub(super) struct Tls {
    /// PEM certificate chain, the server's certificate first.
    pub cert: S<String>,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub key: S<String>,
}

/// `[[issuer.signing_keys]]`.
#[derive(Debug, Deserialize)]
pub(super) struct SigningKey {
    /// PKCS#8 PEM private key file.
    pub file: S<String>,
    /// ES256 | ES384 | RS256 | PS256 | EdDSA.
    pub alg: S<String>,
    /// Default: RFC 7638 thumbprint.
    pub kid: Option<S<String>>,
    /// Create the file on first start. Default `false`.
    #[serde(default)]
    pub generate_if_missing: bool,
    /// Published, never used to sign. Default `false`.
    #[serde(default)]
    pub retired: bool,
}

/// `[[identity_resources]]`.
#[derive(Debug, Deserialize)]
pub(super) struct IdentityResource {
    /// The scope name.
    pub name: S<String>,
    /// Shown on consent.
    pub display_name: Option<String>,
    /// Claims released.
    #[serde(default)]
    pub user_claims: Vec<String>,
}

/// `[[api_scopes]]`.
#[derive(Debug, Deserialize)]
pub(super) struct ApiScope {
    /// The scope name.
    pub name: S<String>,
    /// Shown on consent.
    pub display_name: Option<String>,
    /// User claims added when granted.
    #[serde(default)]
    pub user_claims: Vec<String>,
    /// Requested as `name:<value>`. Default `false`.
    #[serde(default)]
    pub parameterized: bool,
    /// Claim receiving `<value>`.
    pub parameter_claim: Option<S<String>>,
}

/// `[[api_resources]]`.
#[derive(Debug, Deserialize)]
pub(super) struct ApiResource {
    /// Absolute URI: the audience value.
    pub name: S<String>,
    /// Human name.
    pub display_name: Option<String>,
    /// References to `[[api_scopes]]`.
    #[serde(default)]
    pub scopes: Vec<S<String>>,
    /// Resource isolation. Default `false`.
    #[serde(default)]
    pub require_resource_indicator: bool,
    /// Default `true`.
    pub enabled: Option<bool>,
    /// User claims added for this API.
    #[serde(default)]
    pub user_claims: Vec<String>,
    /// Empty: any.
    #[serde(default)]
    pub allowed_signing_algs: Vec<S<String>>,
    /// Stored secrets for introspection.
    #[serde(default)]
    pub secrets: Vec<S<String>>,
    /// Only DPoP-bound tokens. Default `false`.
    #[serde(default)]
    pub require_dpop: bool,
}

/// `[[clients]]`.
#[derive(Debug, Deserialize)]
pub(super) struct Client {
    /// The `client_id`.
    pub client_id: S<String>,
    /// Stored secrets.
    #[serde(default)]
    pub secrets: Vec<S<String>>,
    /// Default `true`.
    pub require_secret: Option<bool>,
    /// `private_key_jwt` (RFC 7523), or the secret methods (the default).
    pub token_endpoint_auth_method: Option<S<String>>,
    /// Where a `private_key_jwt` client's public keys are published.
    pub jwks_uri: Option<S<String>>,
    /// A JWKS file of a `private_key_jwt` client's public keys.
    pub jwks_file: Option<S<String>>,
    /// client_credentials | authorization_code | refresh_token.
    #[serde(default)]
    pub allowed_grant_types: Vec<S<String>>,
    /// Scope names the client may request.
    #[serde(default)]
    pub allowed_scopes: Vec<S<String>>,
    /// Overrides `[issuer] access_token_lifetime`.
    pub access_token_lifetime: Option<S<Duration>>,
    /// Exact redirect URIs.
    #[serde(default)]
    pub redirect_uris: Vec<S<String>>,
    /// Default `true`.
    pub require_pkce: Option<bool>,
    /// Default `false`.
    #[serde(default)]
    pub require_consent: bool,
    /// Default `false`.
    #[serde(default)]
    pub allow_offline_access: bool,
    /// `"one_time"` (default) | `"reuse"`.
    pub refresh_token_usage: Option<S<String>>,
    /// Default `"30d"`.
    pub refresh_token_lifetime: Option<S<Duration>>,
    /// Default `"15d"`.
    pub refresh_token_sliding_lifetime: Option<S<Duration>>,
    /// Default `"0s"` (none).
    pub refresh_token_reuse_grace: Option<S<Duration>>,
    /// Every token request carries a DPoP proof. Default `false`.
    #[serde(default)]
    pub require_dpop: bool,
}

/// `[[users]]`.
#[derive(Debug, Deserialize)]
pub(super) struct User {
    /// The `sub` value.
    pub subject: S<String>,
    /// Login name.
    pub username: S<String>,
    /// Argon2id PHC string.
    pub password: S<String>,
    /// Claims, e.g. `{ name = "Alice", email = "alice@example.com" }`.
    #[serde(default)]
    pub claims: BTreeMap<String, toml::Value>,
}

/// `[proxy]`.
#[derive(Debug, Deserialize)]
pub(super) struct Proxy {
    /// Socket address to listen on.
    pub listen: S<String>,
    /// Default `"30s"`.
    pub clock_skew: Option<S<Duration>>,
    /// Default `"30s"`.
    pub upstream_timeout: Option<S<Duration>>,
    /// TLS certificate and key.
    pub tls: Option<S<Tls>>,
    /// `[[proxy.trusted_issuers]]`.
    #[serde(default)]
    pub trusted_issuers: Vec<S<TrustedIssuer>>,
    /// Default 4096.
    pub max_connections: Option<S<i64>>,
    /// Default `"60s"`.
    pub idle_timeout: Option<S<Duration>>,
    /// Default `"10s"`.
    pub request_header_timeout: Option<S<Duration>>,
    /// How old a DPoP proof may be. Default `"60s"`.
    pub dpop_max_age: Option<S<Duration>>,
    /// The origin clients address the gateway at, e.g. `"https://api.example.com"`.
    pub public_url: Option<S<String>>,
}

/// `[[proxy.trusted_issuers]]`.
#[derive(Debug, Deserialize)]
pub(super) struct TrustedIssuer {
    /// The `iss` value.
    pub issuer: S<String>,
    /// Default: discovered from the issuer.
    pub jwks_uri: Option<S<String>>,
    /// Default `true`.
    pub require_typ: Option<bool>,
    /// Default `true`.
    pub wait_for_keys: Option<bool>,
}

/// `[[routes]]`.
#[derive(Debug, Deserialize)]
pub(super) struct Route {
    /// Matches the prefix and everything below it on a segment boundary.
    pub path_prefix: S<String>,
    /// Optional host, case-insensitive, port ignored.
    pub host: Option<S<String>>,
    /// `http://` or `https://` origin.
    pub upstream: S<String>,
    /// Names an `[[api_resources]]` entry.
    pub resource: S<String>,
    /// Method → scopes, any one of which suffices; `"*"` for every other method.
    pub scopes: Option<S<BTreeMap<String, Vec<S<String>>>>>,
    /// `[routes.mcp]` (SPEC §10): `"method:name"`, `"method"` or `"*"` → scopes, any one of
    /// which suffices; replaces `scopes`.
    pub mcp: Option<S<BTreeMap<String, Vec<S<String>>>>>,
    /// Default `false`.
    #[serde(default)]
    pub strip_authorization: bool,
    /// Request headers that change a request's meaning upstream, forwarded anyway.
    #[serde(default)]
    pub keep_headers: Vec<S<String>>,
}

/// `[admin]`.
#[derive(Debug, Deserialize)]
pub(super) struct Admin {
    /// Socket address to listen on.
    pub listen: S<String>,
    /// Default 64.
    pub max_connections: Option<S<i64>>,
    /// Default `"60s"`.
    pub idle_timeout: Option<S<Duration>>,
    /// Default `"10s"`.
    pub request_header_timeout: Option<S<Duration>>,
}
