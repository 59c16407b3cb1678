//! The resource model of the resource file (identity resources, API scopes, API resources,
//! clients) and the pure computation of a token's `aud` and `scope` (SPEC §3).

pub(crate) mod rules;

pub use rules::{
    authorize, consent_pairs, grant, redeem, Granted, Refusal, Remembered, TokenRequest,
};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use std::time::Duration;

use crate::jwt::Alg;
use crate::positions::Positions;
use crate::secret::SecretHash;

/// The scope that asks for a refresh token.
pub const OFFLINE_ACCESS: &str = "offline_access";

/// Everything a token's audience and scopes are computed from.
#[derive(Debug, Default)]
pub struct Model {
    /// Identity resources by name.
    pub identity_resources: BTreeMap<String, IdentityResource>,
    /// API scopes by name.
    pub api_scopes: BTreeMap<String, ApiScope>,
    /// API resources in file order: `aud` lists them in this order.
    pub api_resources: Vec<ApiResource>,
    /// `<issuer>/resources`, when `emit_static_audience` is set.
    pub static_audience: Option<String>,
    /// `<issuer>/resources`, whenever the token service runs: the audience of a token that
    /// grants identity scopes only (for `/connect/userinfo`).
    pub identity_audience: Option<String>,
    /// `api_resources` by name and by the scopes they list, made at first use (validation
    /// makes it, so that requests never do): a lookup costs the same whatever the file's size.
    index: OnceLock<ModelIndex>,
}

/// Positions in [`Model::api_resources`]; the names are read from the resources, not copied.
#[derive(Debug, Default)]
struct ModelIndex {
    by_name: Positions,
    /// Every scope an API resource lists, as (resource, place in its `scopes`), by scope name
    /// and then in file order.
    listed: Vec<(usize, usize)>,
    /// The first of `listed` with each scope name.
    by_scope: Positions,
}

impl Model {
    /// Makes the lookup index now; call once `api_resources` is complete. Changing
    /// `api_resources` afterwards is not seen by the lookups.
    pub fn index(&self) {
        self.lookups();
    }

    fn lookups(&self) -> &ModelIndex {
        self.index.get_or_init(|| {
            let mut index = ModelIndex::default();
            for i in 0..self.api_resources.len() {
                index.by_name.insert_first(i, |i| self.name_at(i));
            }
            index.listed = (self.api_resources.iter().enumerate())
                .flat_map(|(i, r)| (0..r.scopes.len()).map(move |j| (i, j)))
                .collect();
            // Stable: file order within a name.
            index.listed.sort_by_key(|&at| self.scope_at(at));
            index.listed.shrink_to_fit();
            for j in 0..index.listed.len() {
                let listed = &index.listed;
                index
                    .by_scope
                    .insert_first(j, |j| self.listed_scope(listed, j));
            }
            index
        })
    }

    fn name_at(&self, i: usize) -> Option<&str> {
        self.api_resources.get(i).map(|r| r.name.as_str())
    }

    /// The scope name of the `j`th of [`ModelIndex::listed`].
    fn listed_scope(&self, listed: &[(usize, usize)], j: usize) -> Option<&str> {
        listed.get(j).and_then(|&at| self.scope_at(at))
    }

    fn scope_at(&self, (i, j): (usize, usize)) -> Option<&str> {
        let resource = self.api_resources.get(i)?;
        resource.scopes.get(j).map(String::as_str)
    }

    /// The API resource with this name.
    pub fn api_resource(&self, name: &str) -> Option<&ApiResource> {
        let i = self
            .lookups()
            .by_name
            .get(Some(name), |i| self.name_at(i))?;
        self.api_resources.get(i)
    }

    /// The API resources that list the API scope `scope`, in file order (one that lists it
    /// twice comes twice).
    pub fn listing<'a>(&'a self, scope: &'a str) -> impl Iterator<Item = &'a ApiResource> + 'a {
        self.listing_at(scope)
            .filter_map(|(i, _)| self.api_resources.get(i))
    }

    /// The places in [`ModelIndex::listed`] of `scope`.
    fn listing_at<'a>(&'a self, scope: &'a str) -> impl Iterator<Item = (usize, usize)> + 'a {
        let index = self.lookups();
        let listed = &index.listed;
        let first = (index.by_scope).get(Some(scope), |j| self.listed_scope(listed, j));
        let from = first.and_then(|j| listed.get(j..)).unwrap_or_default();
        from.iter()
            .copied()
            .take_while(move |&at| self.scope_at(at) == Some(scope))
    }

    /// The API resources that list any of `scopes`, each once, in file order.
    pub fn listing_any<'a>(&self, scopes: impl Iterator<Item = &'a str>) -> Vec<&ApiResource> {
        let mut at: Vec<usize> = scopes
            .flat_map(|scope| self.listing_at(scope))
            .map(|(i, _)| i)
            .collect();
        at.sort_unstable();
        at.dedup();
        at.into_iter()
            .filter_map(|i| self.api_resources.get(i))
            .collect()
    }

    /// The API scope that a scope value names: the scope of that exact name (`read`, or
    /// `invoices:read` when a scope is called so), else the parameterized scope it is a value
    /// of (`transaction:42` is `transaction`). Only a scope declared `parameterized` is read as
    /// `name:value`.
    pub fn api_scope_of(&self, value: &str) -> Option<&ApiScope> {
        if let Some(scope) = self.api_scopes.get(value) {
            return Some(scope);
        }
        let (name, _) = value.split_once(':')?;
        self.api_scopes.get(name).filter(|s| s.parameterized)
    }
}

/// A named group of user claims, requested as a scope (`openid`, `profile`, …).
#[derive(Debug, Clone)]
pub struct IdentityResource {
    /// The scope name.
    pub name: String,
    /// Shown on consent.
    pub display_name: Option<String>,
    /// Claims of the user this scope releases.
    pub user_claims: Vec<String>,
}

/// A scope of access to APIs; several API resources may list the same one.
#[derive(Debug, Clone)]
pub struct ApiScope {
    /// The scope name (without parameter).
    pub name: String,
    /// Shown on consent.
    pub display_name: Option<String>,
    /// User claims added to access tokens when granted.
    pub user_claims: Vec<String>,
    /// Requested as `name:<value>`.
    pub parameterized: bool,
    /// With `parameterized`: the claim that receives `<value>`.
    pub parameter_claim: Option<String>,
}

/// An API: the audience value of tokens minted for it.
#[derive(Debug, Clone)]
pub struct ApiResource {
    /// The audience value and resource indicator.
    pub name: String,
    /// Human name.
    pub display_name: Option<String>,
    /// Names of the API scopes this API understands.
    pub scopes: Vec<String>,
    /// `require_resource_indicator`: accepts only tokens minted for it alone.
    pub isolated: bool,
    /// A disabled resource is never an audience and never a valid indicator.
    pub enabled: bool,
    /// User claims added to access tokens for this API.
    pub user_claims: Vec<String>,
    /// Algorithms tokens for this API may be signed with; empty means any.
    pub allowed_signing_algs: Vec<Alg>,
    /// Secrets with which this API may call the introspection endpoint.
    pub secrets: Vec<SecretHash>,
    /// Only DPoP-bound tokens are accepted (`require_dpop`, SPEC §8).
    pub require_dpop: bool,
}

impl ApiResource {
    /// Whether this API lists the scope `name`.
    pub fn lists(&self, name: &str) -> bool {
        self.scopes.iter().any(|s| s == name)
    }
}

/// A set of names, sorted, in one allocation of exactly its size. Kept per client for the life
/// of a configuration: a `BTreeSet<String>` holds a node with room for eleven, 280 bytes for a
/// client with one scope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names(Box<[String]>);

impl Names {
    /// Whether `name` is in the set.
    pub fn contains(&self, name: &str) -> bool {
        self.0.binary_search_by(|n| n.as_str().cmp(name)).is_ok()
    }

    /// The names in order.
    pub fn iter(&self) -> std::slice::Iter<'_, String> {
        self.0.iter()
    }
}

impl FromIterator<String> for Names {
    fn from_iter<I: IntoIterator<Item = String>>(names: I) -> Self {
        let mut names: Vec<String> = names.into_iter().collect();
        names.sort_unstable();
        names.dedup();
        Names(names.into_boxed_slice())
    }
}

/// An OAuth grant type a client may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GrantType {
    /// `client_credentials`: a machine acting for itself.
    ClientCredentials,
    /// `authorization_code`: a user signed in at `/connect/authorize`.
    AuthorizationCode,
    /// `refresh_token`: a new access token from a refresh token.
    RefreshToken,
}

impl GrantType {
    /// Every grant type.
    pub const ALL: [GrantType; 3] = [
        GrantType::ClientCredentials,
        GrantType::AuthorizationCode,
        GrantType::RefreshToken,
    ];

    /// The `grant_type` parameter value.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantType::ClientCredentials => "client_credentials",
            GrantType::AuthorizationCode => "authorization_code",
            GrantType::RefreshToken => "refresh_token",
        }
    }

    /// Parses a `grant_type` value.
    pub fn parse(s: &str) -> Option<Self> {
        GrantType::ALL.into_iter().find(|g| g.as_str() == s)
    }
}

/// How a refresh token behaves when used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshTokenUsage {
    /// Rotated on every use; reusing a rotated token revokes its family.
    OneTime,
    /// The same token may be used again.
    Reuse,
}

/// A registered client.
#[derive(Debug, Clone)]
pub struct Client {
    /// The `client_id`.
    pub client_id: String,
    /// Stored secrets; any one authenticates.
    pub secrets: Vec<SecretHash>,
    /// A public client (no secrets, `require_secret = false`) authenticates by `client_id` alone.
    pub require_secret: bool,
    /// Grant types the client may use.
    pub allowed_grant_types: BTreeSet<GrantType>,
    /// Scope names (identity or API) the client may request.
    pub allowed_scopes: Names,
    /// Overrides the issuer's access token lifetime.
    pub access_token_lifetime: Option<Duration>,
    /// Exact redirect URIs for `authorization_code`.
    pub redirect_uris: Vec<String>,
    /// PKCE S256 is required at `/connect/authorize`.
    pub require_pkce: bool,
    /// The user is asked to consent.
    pub require_consent: bool,
    /// `offline_access` may be requested.
    pub allow_offline_access: bool,
    /// Refresh token rotation.
    pub refresh_token_usage: RefreshTokenUsage,
    /// Absolute refresh token lifetime.
    pub refresh_token_lifetime: Duration,
    /// Sliding refresh token lifetime; zero for none.
    pub refresh_token_sliding_lifetime: Duration,
    /// How long a rotated refresh token may still be used (zero: never).
    pub refresh_token_reuse_grace: Duration,
    /// Every token request must carry a DPoP proof (`require_dpop`, SPEC §8).
    pub require_dpop: bool,
    /// A `private_key_jwt` client's public keys (SPEC §9); it then has no secrets.
    pub assertion_keys: Option<AssertionKeys>,
}

/// Where a `private_key_jwt` client's public keys come from.
#[derive(Debug, Clone)]
pub enum AssertionKeys {
    /// `jwks_file`: read and parsed with the resource file, under the client's id as issuer.
    File {
        /// The file, watched like the signing keys.
        path: std::path::PathBuf,
        /// Its keys.
        keys: std::sync::Arc<crate::jwt::verify::TrustedKeys>,
    },
    /// `jwks_uri`: fetched when needed (`crate::issuer::assertion`).
    Uri(String),
    /// A `jwks_uri` a client published itself (registered, or in its metadata document):
    /// fetched like a metadata document, never from inside the network unless allowed.
    Published(String),
    /// `jwks` given whole at registration or in a client ID metadata document.
    Given(std::sync::Arc<crate::jwt::verify::TrustedKeys>),
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    fn api(name: &str, scopes: &[String]) -> ApiResource {
        ApiResource {
            name: name.to_owned(),
            display_name: None,
            scopes: scopes.to_vec(),
            isolated: false,
            enabled: true,
            user_claims: Vec::new(),
            allowed_signing_algs: Vec::new(),
            secrets: Vec::new(),
            require_dpop: false,
        }
    }

    /// Up to 12 resources from 5 names (so names repeat), each listing up to 4 of 6 scopes
    /// (so a resource may list a scope twice).
    fn models() -> impl Strategy<Value = Vec<(usize, Vec<usize>)>> {
        prop::collection::vec((0..5usize, prop::collection::vec(0..6usize, 0..4)), 0..12)
    }

    proptest! {
        /// The index finds what a scan of `api_resources` in file order finds.
        #[test]
        fn the_index_and_a_scan_agree(listed in models(), asked in prop::collection::vec(0..7usize, 0..4)) {
            let model = Model {
                api_resources: listed
                    .iter()
                    .map(|(n, s)| api(&format!("urn:{n}"), &s.iter().map(|s| format!("s{s}")).collect::<Vec<_>>()))
                    .collect(),
                ..Model::default()
            };
            model.index();
            let at = |r: &ApiResource| r as *const ApiResource;
            for n in 0..6 {
                let name = format!("urn:{n}");
                let first = model.api_resources.iter().find(|r| r.name == name);
                prop_assert_eq!(model.api_resource(&name).map(at), first.map(at));
            }
            for s in 0..7 {
                let scope = format!("s{s}");
                let scan: Vec<_> = model
                    .api_resources
                    .iter()
                    .flat_map(|r| r.scopes.iter().filter(|&x| *x == scope).map(move |_| at(r)))
                    .collect();
                prop_assert_eq!(model.listing(&scope).map(at).collect::<Vec<_>>(), scan);
            }
            let asked: Vec<String> = asked.iter().map(|s| format!("s{s}")).collect();
            let scan: Vec<_> = model
                .api_resources
                .iter()
                .filter(|r| r.scopes.iter().any(|x| asked.contains(x)))
                .map(at)
                .collect();
            let any = model.listing_any(asked.iter().map(String::as_str));
            prop_assert_eq!(any.into_iter().map(at).collect::<Vec<_>>(), scan);
        }
    }

    #[test]
    fn names_are_a_sorted_set() {
        let names: Names = ["read", "openid", "read", "write"]
            .map(str::to_owned)
            .into_iter()
            .collect();
        assert_eq!(
            names.iter().collect::<Vec<_>>(),
            ["openid", "read", "write"]
        );
        for name in ["openid", "read", "write"] {
            assert!(names.contains(name), "{name}");
        }
        for name in ["", "rea", "reads", "Read", "profile"] {
            assert!(!names.contains(name), "{name}");
        }
        assert!(!Names::default().contains(""));
    }

    #[test]
    fn grant_types_read_and_write_their_rfc_names() {
        for (grant, name) in [
            (GrantType::ClientCredentials, "client_credentials"),
            (GrantType::AuthorizationCode, "authorization_code"),
            (GrantType::RefreshToken, "refresh_token"),
        ] {
            assert_eq!(grant.as_str(), name);
            assert_eq!(GrantType::parse(name), Some(grant));
        }
        for other in ["password", "", "Client_Credentials", "implicit"] {
            assert_eq!(GrantType::parse(other), None, "{other}");
        }
    }
}
