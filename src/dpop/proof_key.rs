//! The client's side of DPoP: a key that makes proofs (RFC 9449 §4.2). isogate itself never
//! sends one; `isogate dpop-proof`, the tests and the benches do.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use super::PROOF_TYP;
use crate::jwt::{Alg, KeyError, SigningKey};

/// A DPoP key pair held by a client.
#[derive(Debug)]
pub struct ProofKey {
    key: SigningKey,
}

impl ProofKey {
    /// A new key for `alg`, in memory only.
    pub fn generate(alg: Alg) -> Result<Self, KeyError> {
        SigningKey::generate(alg).map(|key| ProofKey { key })
    }

    /// The PKCS#8 PEM key in `path`, for `alg`.
    pub fn from_file(path: &Path, alg: Alg) -> Result<Self, KeyError> {
        SigningKey::from_file(path, alg, None, false).map(|key| ProofKey { key })
    }

    /// The algorithm its proofs are signed with.
    pub fn alg(&self) -> Alg {
        self.key.alg
    }

    /// The public key as a proof's `jwk` header carries it: the key type's members only.
    pub fn public_jwk(&self) -> Value {
        serde_json::to_value(&self.key.jwk.algorithm).unwrap_or(Value::Null)
    }

    /// Its RFC 7638 thumbprint, the `cnf.jkt` of the tokens bound to it.
    pub fn thumbprint(&self) -> String {
        // The key id of a key built without one is its thumbprint.
        self.key.kid.clone()
    }

    /// A proof for `method` and `url` (no query) at `iat`, with `ath` for `access_token`,
    /// and a random `jti`.
    pub fn proof(&self, method: &str, url: &str, access_token: Option<&str>, iat: u64) -> String {
        let mut claims = json!({"jti": crate::protocol::random_b64::<16>(), "htm": method, "htu": url, "iat": iat});
        if let Some(token) = access_token {
            claims["ath"] = Value::String(ath(token));
        }
        self.sign(&self.header(), &claims)
    }

    /// The header of a proof by this key: `typ`, `alg`, `jwk`.
    pub fn header(&self) -> Value {
        json!({"typ": PROOF_TYP, "alg": self.key.alg.as_str(), "jwk": self.public_jwk()})
    }

    /// Any header and claims, signed by this key: for proofs made wrong on purpose.
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let mut jws = URL_SAFE_NO_PAD.encode(header.to_string());
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(claims.to_string(), &mut jws);
        let signature = self.key.sign(jws.as_bytes());
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut jws);
        jws
    }
}

/// The `ath` of `access_token`: its SHA-256, base64url.
pub fn ath(access_token: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, access_token.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}
