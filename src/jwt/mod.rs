//! JSON Web Tokens: the signing algorithms isogate knows, private keys parsed once at load,
//! and compact JWS signing.

mod keys;
pub use keys::generate_file as generate_key_file;
pub(crate) use keys::generate_file;
pub mod cache;
mod sign;
pub mod verify;

pub use keys::{generate_pem, KeyError, KeySet, SigningKey};
pub use sign::{encode, SignError};

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

/// Claims isogate sets itself in the tokens it signs: configuration may not name one as a
/// `parameter_claim`, and a user claim of the same name is left out of an access token.
pub const RESERVED_CLAIMS: &[&str] = &[
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
    "azp",
    "nonce",
];

/// `at` as a JWT NumericDate (RFC 7519 §2): whole seconds since the Unix epoch; 0 before it.
pub fn numeric_date(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// A JWS algorithm isogate signs and publishes with. HMAC and `none` are deliberately absent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Alg {
    /// ECDSA with P-256 and SHA-256.
    ES256,
    /// ECDSA with P-384 and SHA-384.
    ES384,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// Ed25519.
    EdDSA,
}

impl Alg {
    /// Every algorithm, in the order they are listed in error messages.
    pub const ALL: [Alg; 5] = [Alg::ES256, Alg::ES384, Alg::RS256, Alg::PS256, Alg::EdDSA];

    /// The JOSE name, as in a JWS header.
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::RS256 => "RS256",
            Alg::PS256 => "PS256",
            Alg::EdDSA => "EdDSA",
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name given is not an algorithm isogate supports.
#[derive(Debug, thiserror::Error)]
#[error("unsupported algorithm {0:?}; expected one of ES256, ES384, RS256, PS256, EdDSA")]
pub struct UnknownAlg(pub String);

impl FromStr for Alg {
    type Err = UnknownAlg;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Alg::ALL
            .into_iter()
            .find(|alg| alg.as_str() == s)
            .ok_or_else(|| UnknownAlg(s.to_owned()))
    }
}
