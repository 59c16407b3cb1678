//! Verifying access tokens: compact JWS parsing, the key named by `kid` of a trusted issuer,
//! the signature, `typ`, and the claims the gateway enforces (SPEC §4 steps 2–4).
//!
//! The algorithm always comes from the key: a token's `alg` only has to agree with it. `none`
//! and HMAC are refused before any key is looked at, and no key isogate holds is symmetric.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::signature::{
    ParsedPublicKey, RsaParameters, RsaPublicKeyComponents, ECDSA_P256_SHA256_FIXED,
    ECDSA_P384_SHA384_FIXED, ED25519, RSA_PKCS1_2048_8192_SHA256, RSA_PSS_2048_8192_SHA256,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, KeyOperations, PublicKeyUse,
};

use super::{Alg, SigningKey};
use json::{Field, Header, Object, Payload};

/// The longest token accepted, in bytes (SPEC §4: at most 8 KiB).
pub const MAX_TOKEN_LEN: usize = 8192;

/// The latest `exp` or `nbf` accepted: 9999-12-31T23:59:59Z.
pub const MAX_NUMERIC_DATE: u64 = 253_402_300_799;

/// Room for the three decoded parts of a token of `len` bytes: base64 decodes four characters
/// to at most three bytes, and each part's size estimate rounds up by at most three.
fn decode_buf_len(len: usize) -> usize {
    len / 4 * 3 + 16
}

/// Why a token was refused. The messages are short enough for an `error_description`, use
/// only characters RFC 6750 allows there, and never contain the token or any part of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token is longer than [`MAX_TOKEN_LEN`] bytes.
    #[error("token exceeds 8 KiB")]
    TooLarge,
    /// Not a compact JWS with the header and claims isogate needs; says which part is wrong.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header `alg` is `none`, HMAC, or another algorithm isogate does not verify.
    #[error("unsupported alg")]
    UnsupportedAlg,
    /// `iss` names no trusted issuer.
    #[error("untrusted issuer")]
    UntrustedIssuer,
    /// The issuer is trusted but has no key with this `kid`; its JWKS may be worth refetching.
    #[error("unknown kid")]
    UnknownKid,
    /// The key named by `kid` does not verify the header's `alg`.
    #[error("alg does not match the key")]
    AlgMismatch,
    /// The signature does not verify with the key named by `kid`.
    #[error("invalid signature")]
    BadSignature,
    /// The issuer requires `typ` `at+jwt` (RFC 9068) and the header has another or none.
    #[error("typ must be at+jwt")]
    BadTyp,
    /// `exp` has passed, clock skew included.
    #[error("token expired")]
    Expired,
    /// `nbf` is still ahead, clock skew included.
    #[error("token not yet valid")]
    NotYetValid,
    /// Revoked with its grant or by `POST /connect/revocation` (SPEC §7).
    #[error("token revoked")]
    Revoked,
}

/// Why a JWK cannot verify tokens. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwkError {
    /// The key has no `kid`, so no token could name it.
    #[error("key has no kid")]
    MissingKid,
    /// `use` or `key_ops` says the key is not for verifying signatures.
    #[error("key is not for verifying signatures (use or key_ops)")]
    NotForSignatures,
    /// A symmetric (`oct`) key: HMAC is never accepted.
    #[error("symmetric (oct) keys are not accepted")]
    Symmetric,
    /// A key type other than EC, RSA and OKP.
    #[error("unsupported key type")]
    UnsupportedKeyType,
    /// An EC or OKP curve other than P-256, P-384 and Ed25519.
    #[error("unsupported curve {0:?}")]
    UnsupportedCurve(EllipticCurve),
    /// The JWK's `alg` is none of ES256, ES384, RS256, PS256 and EdDSA.
    #[error("unsupported alg {0}")]
    UnsupportedAlg(KeyAlgorithm),
    /// The JWK's `alg` does not fit its key type or curve.
    #[error("alg {alg} does not fit a {key} key")]
    AlgMismatch {
        /// The JWK's `alg`.
        alg: Alg,
        /// The key type and curve.
        key: &'static str,
    },
    /// An RSA modulus shorter than 2048 or longer than 8192 bits.
    #[error("RSA modulus of {0} bits; 2048 to 8192 are accepted")]
    RsaSize(usize),
    /// The key's parameters are not valid; says which.
    #[error("invalid key: {0}")]
    Invalid(&'static str),
}

/// One public key, parsed once, with the algorithms it verifies (two for an RSA key whose JWK
/// names no `alg`: RS256 and PS256; one otherwise).
pub struct VerifyingKey {
    kid: String,
    verifiers: Box<[(Alg, ParsedPublicKey)]>,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("algs", &self.algs().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// Parses a published public key. It must have a `kid`; `use`, when present, must be `sig`
    /// and `key_ops`, when present, must include `verify`. The algorithm is the JWK's `alg` when
    /// present, else inferred from the key: EC P-256 → ES256, EC P-384 → ES384, OKP Ed25519 →
    /// EdDSA, RSA → RS256 and PS256.
    pub fn from_jwk(jwk: &Jwk) -> Result<VerifyingKey, JwkError> {
        let kid = jwk
            .common
            .key_id
            .as_deref()
            .filter(|kid| !kid.is_empty())
            .ok_or(JwkError::MissingKid)?;
        if jwk
            .common
            .public_key_use
            .as_ref()
            .is_some_and(|u| *u != PublicKeyUse::Signature)
            || jwk
                .common
                .key_operations
                .as_ref()
                .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
        {
            return Err(JwkError::NotForSignatures);
        }
        let declared = jwk.common.key_algorithm.map(alg_of_jwk).transpose()?;
        build(kid, declared, &jwk.algorithm)
    }

    /// The public half of one of the local issuer's keys.
    pub fn from_signing_key(key: &SigningKey) -> VerifyingKey {
        build(&key.kid, Some(key.alg), &key.jwk.algorithm).unwrap_or_else(|err| {
            // The JWK was built from a private key the crypto library had already accepted.
            unreachable!(
                "the public half of signing key {:?} is unusable: {err}",
                key.kid
            )
        })
    }

    /// The key of a DPoP proof's `jwk` header (which names no `kid`), for the proof's `alg`:
    /// the JWK's own `alg`, when present, must be that one.
    pub fn from_proof_jwk(jwk: &Jwk, alg: Alg) -> Result<VerifyingKey, JwkError> {
        if let Some(declared) = jwk.common.key_algorithm.map(alg_of_jwk).transpose()? {
            if declared != alg {
                return Err(JwkError::AlgMismatch {
                    alg: declared,
                    key: "proof",
                });
            }
        }
        build("", Some(alg), &jwk.algorithm)
    }

    /// Whether `signature` over `message` verifies with this key under `alg`.
    pub fn verifies(&self, alg: Alg, message: &[u8], signature: &[u8]) -> bool {
        self.verifier(alg)
            .is_some_and(|key| key.verify_sig(message, signature).is_ok())
    }

    /// The key id tokens name it by.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithms this key verifies.
    pub fn algs(&self) -> impl Iterator<Item = Alg> + '_ {
        self.verifiers.iter().map(|(alg, _)| *alg)
    }

    fn verifier(&self, alg: Alg) -> Option<&ParsedPublicKey> {
        self.verifiers
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, key)| key)
    }
}

fn alg_of_jwk(alg: KeyAlgorithm) -> Result<Alg, JwkError> {
    match alg {
        KeyAlgorithm::ES256 => Ok(Alg::ES256),
        KeyAlgorithm::ES384 => Ok(Alg::ES384),
        KeyAlgorithm::RS256 => Ok(Alg::RS256),
        KeyAlgorithm::PS256 => Ok(Alg::PS256),
        KeyAlgorithm::EdDSA => Ok(Alg::EdDSA),
        other => Err(JwkError::UnsupportedAlg(other)),
    }
}

/// Parses the key parameters for the algorithm `declared`, or the ones the key type implies.
fn build(
    kid: &str,
    declared: Option<Alg>,
    params: &AlgorithmParameters,
) -> Result<VerifyingKey, JwkError> {
    let fits = |alg: Alg, key: &'static str| match declared {
        Some(d) if d != alg => Err(JwkError::AlgMismatch { alg: d, key }),
        _ => Ok(()),
    };
    let verifiers = match params {
        AlgorithmParameters::EllipticCurve(ec) => {
            let (alg, verification, len, key) = match ec.curve {
                EllipticCurve::P256 => (Alg::ES256, &ECDSA_P256_SHA256_FIXED, 32, "EC P-256"),
                EllipticCurve::P384 => (Alg::ES384, &ECDSA_P384_SHA384_FIXED, 48, "EC P-384"),
                ref other => return Err(JwkError::UnsupportedCurve(other.clone())),
            };
            fits(alg, key)?;
            let x = b64(&ec.x, "x is not base64url")?;
            let y = b64(&ec.y, "y is not base64url")?;
            if x.len() != len || y.len() != len {
                return Err(JwkError::Invalid("EC coordinates of the wrong length"));
            }
            // Uncompressed SEC1 point: 0x04 || X || Y.
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let parsed = ParsedPublicKey::new(verification, &point)
                .map_err(|_| JwkError::Invalid("EC point is not on the curve"))?;
            vec![(alg, parsed)]
        }
        AlgorithmParameters::RSA(rsa) => {
            let algs: &[Alg] = match declared {
                None => &[Alg::RS256, Alg::PS256],
                Some(Alg::RS256) => &[Alg::RS256],
                Some(Alg::PS256) => &[Alg::PS256],
                Some(alg) => return Err(JwkError::AlgMismatch { alg, key: "RSA" }),
            };
            let n = b64(&rsa.n, "n is not base64url")?;
            let e = b64(&rsa.e, "e is not base64url")?;
            let components = RsaPublicKeyComponents {
                n: without_leading_zeros(&n),
                e: without_leading_zeros(&e),
            };
            let bits = bit_len(components.n);
            if !(2048..=8192).contains(&bits) {
                return Err(JwkError::RsaSize(bits));
            }
            algs.iter()
                .map(|&alg| {
                    let params: &'static RsaParameters = if alg == Alg::RS256 {
                        &RSA_PKCS1_2048_8192_SHA256
                    } else {
                        &RSA_PSS_2048_8192_SHA256
                    };
                    components
                        .to_parsed_public_key(params)
                        .map(|parsed| (alg, parsed))
                        .map_err(|_| JwkError::Invalid("RSA n or e"))
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        AlgorithmParameters::OctetKeyPair(okp) => {
            if okp.curve != EllipticCurve::Ed25519 {
                return Err(JwkError::UnsupportedCurve(okp.curve.clone()));
            }
            fits(Alg::EdDSA, "OKP Ed25519")?;
            let x = b64(&okp.x, "x is not base64url")?;
            let parsed =
                ParsedPublicKey::new(&ED25519, &x).map_err(|_| JwkError::Invalid("Ed25519 x"))?;
            vec![(Alg::EdDSA, parsed)]
        }
        AlgorithmParameters::OctetKey(_) => return Err(JwkError::Symmetric),
        _ => return Err(JwkError::UnsupportedKeyType),
    };
    Ok(VerifyingKey {
        kid: kid.to_owned(),
        verifiers: verifiers.into_boxed_slice(),
    })
}

fn b64(text: &str, what: &'static str) -> Result<Vec<u8>, JwkError> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| JwkError::Invalid(what))
}

/// RFC 7518 forbids leading zero octets in `n` and `e`, but some issuers publish them and the
/// value is the same number.
fn without_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or_default()
}

fn bit_len(big_endian: &[u8]) -> usize {
    match big_endian.first() {
        Some(&top) => big_endian.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    }
}

/// The most keys of one type under one `kid` a token is checked against.
const MAX_KEYS_PER_KID: usize = 4;

/// The keys of one trusted issuer, by `kid`.
#[derive(Debug)]
pub struct IssuerKeys {
    /// The `iss` value tokens of this issuer carry, compared exactly.
    pub issuer: String,
    /// Whether tokens must carry `typ` `at+jwt` or `application/at+jwt`.
    pub require_typ: bool,
    /// Usually one key per `kid`; several when an issuer gives keys of different types the same
    /// `kid` (RFC 7517 §4.5 allows it), told apart by the token's `alg`.
    keys: HashMap<String, Vec<VerifyingKey>>,
}

impl IssuerKeys {
    /// Collects `keys` under `issuer`.
    pub fn new(
        issuer: impl Into<String>,
        require_typ: bool,
        keys: impl IntoIterator<Item = VerifyingKey>,
    ) -> Self {
        let mut by_kid: HashMap<String, Vec<VerifyingKey>> = HashMap::new();
        for key in keys {
            by_kid.entry(key.kid.clone()).or_default().push(key);
        }
        IssuerKeys {
            issuer: issuer.into(),
            require_typ,
            keys: by_kid,
        }
    }

    /// The usable keys of a JWKS document, and for each skipped key its `kid` and why, so the
    /// caller can log them.
    pub fn from_jwk_set(
        issuer: impl Into<String>,
        require_typ: bool,
        set: &JwkSet,
    ) -> (Self, Vec<(Option<String>, JwkError)>) {
        let mut skipped = Vec::new();
        let keys: Vec<VerifyingKey> = set
            .keys
            .iter()
            .filter_map(|jwk| {
                VerifyingKey::from_jwk(jwk)
                    .map_err(|err| skipped.push((jwk.common.key_id.clone(), err)))
                    .ok()
            })
            .collect();
        (Self::new(issuer, require_typ, keys), skipped)
    }

    /// Every key.
    pub fn keys(&self) -> impl Iterator<Item = &VerifyingKey> {
        self.keys.values().flatten()
    }

    /// The parsed keys that verify `alg` under `kid`: usually one, several when an issuer
    /// publishes two keys of one type under one `kid` (a rotation that reused it), at most
    /// [`MAX_KEYS_PER_KID`] so that a forged token costs a bounded number of checks.
    fn verifiers(
        &self,
        kid: &str,
        alg: Alg,
    ) -> Result<impl Iterator<Item = &ParsedPublicKey>, TokenError> {
        let keys = self.keys.get(kid).ok_or(TokenError::UnknownKid)?;
        if !keys.iter().any(|key| key.verifier(alg).is_some()) {
            return Err(TokenError::AlgMismatch);
        }
        Ok(keys
            .iter()
            .filter_map(move |key| key.verifier(alg))
            .take(MAX_KEYS_PER_KID))
    }
}

/// Every generation handed out so far; each [`TrustedKeys`] takes the next one.
static GENERATIONS: AtomicU64 = AtomicU64::new(0);

/// The keys of every trusted issuer, by `iss`, with a generation number that is new for every
/// set built, so a cache of verified tokens can tell which set proved what.
#[derive(Debug)]
pub struct TrustedKeys {
    issuers: HashMap<String, Arc<IssuerKeys>>,
    generation: u64,
}

impl Default for TrustedKeys {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl TrustedKeys {
    /// Indexes `issuers` by `iss`. When an issuer appears twice, the first entry wins
    /// (configuration validation refuses duplicates).
    pub fn new(issuers: Vec<IssuerKeys>) -> Self {
        let mut by_iss = HashMap::with_capacity(issuers.len());
        for keys in issuers {
            by_iss
                .entry(keys.issuer.clone())
                .or_insert_with(|| Arc::new(keys));
        }
        TrustedKeys {
            issuers: by_iss,
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The keys of issuer `iss`, compared exactly.
    pub fn issuer(&self, iss: &str) -> Option<&IssuerKeys> {
        self.issuers.get(iss).map(|keys| &**keys)
    }

    /// Every issuer.
    pub fn issuers(&self) -> impl Iterator<Item = &IssuerKeys> {
        self.issuers.values().map(|keys| &**keys)
    }

    /// Distinct for every set built in this process and increasing, never 0.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// What a verified token says that the gateway enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The issuer, one of the trusted ones.
    pub iss: String,
    /// The user, or the client when there is none.
    pub sub: Option<String>,
    /// The client the token was issued to.
    pub client_id: Option<String>,
    /// The audiences; never empty.
    pub aud: Vec<String>,
    /// The scopes, from a space-delimited string or an array; empty when absent.
    pub scope: Vec<String>,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not before, seconds since the epoch.
    pub nbf: Option<u64>,
    /// The token's id, by which it can be revoked.
    pub jti: Option<String>,
    /// `cnf.jkt`: the thumbprint of the DPoP key the token is bound to (RFC 9449 §6.1).
    pub jkt: Option<String>,
}

/// Verifies a compact JWS access token against `keys` and returns its claims: size, shape,
/// `alg` (never `none` or HMAC), trusted `iss`, the key named by `kid`, the signature with the
/// key's algorithm, `typ` when the issuer requires it, then the claims' types. Time is not
/// checked here: see [`check_time`].
pub fn verify(token: &str, keys: &TrustedKeys) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLarge);
    }
    let not_jws = TokenError::Malformed("not a compact JWS");
    let (signing_input, signature_b64) = token.rsplit_once('.').ok_or(not_jws)?;
    let (header_b64, payload_b64) = signing_input.split_once('.').ok_or(not_jws)?;
    if payload_b64.contains('.') {
        return Err(not_jws);
    }

    // Sized to the token: zeroing room for the longest token costs more than allocating.
    let mut buf = vec![0u8; decode_buf_len(token.len())];
    let (header_json, rest) = decode(header_b64, &mut buf, "header is not base64url")?;
    let Object::<Header<'_>>(header) = serde_json::from_slice(header_json)
        .map_err(|_| TokenError::Malformed("header is not a JSON object"))?;
    if header.crit.0 {
        return Err(TokenError::Malformed(
            "crit header parameters are not supported",
        ));
    }
    let alg = header
        .alg
        .ok_or(TokenError::Malformed("header has no alg"))?;
    // Case-sensitive, as JOSE names are; `none`, HS256 and the rest all end here.
    let alg = Alg::ALL
        .into_iter()
        .find(|a| a.as_str() == alg.0)
        .ok_or(TokenError::UnsupportedAlg)?;
    let kid = header
        .kid
        .ok_or(TokenError::Malformed("header has no kid"))?;

    let (payload_json, rest) = decode(payload_b64, rest, "payload is not base64url")?;
    let Object::<Payload>(mut payload) = serde_json::from_slice(payload_json)
        .map_err(|_| TokenError::Malformed("payload is not a JSON object"))?;
    // Not yet verified: only used to find the keys that will verify it.
    let Field::Valid(iss) = std::mem::take(&mut payload.iss) else {
        return Err(TokenError::Malformed("iss is missing or not a string"));
    };
    let issuer = keys.issuer(&iss).ok_or(TokenError::UntrustedIssuer)?;
    let mut keys = issuer.verifiers(&kid.0, alg)?;

    let (signature, _) = decode(signature_b64, rest, "signature is not base64url")?;
    if !keys.any(|key| key.verify_sig(signing_input.as_bytes(), signature).is_ok()) {
        return Err(TokenError::BadSignature);
    }

    if issuer.require_typ && !header.typ.is_some_and(|typ| is_at_jwt(&typ.0)) {
        return Err(TokenError::BadTyp);
    }
    Claims::from_payload(iss, payload)
}

/// Checks `exp` and `nbf` against `now` (seconds since the epoch), allowing `skew` either way.
pub fn check_time(claims: &Claims, now: u64, skew: Duration) -> Result<(), TokenError> {
    let skew = skew.as_secs();
    if claims.exp.saturating_add(skew) <= now {
        return Err(TokenError::Expired);
    }
    if claims.nbf.is_some_and(|nbf| nbf.saturating_sub(skew) > now) {
        return Err(TokenError::NotYetValid);
    }
    Ok(())
}

/// Decodes one base64url part into the front of `buf`; returns it and the rest of `buf`.
fn decode<'b>(
    part: &str,
    buf: &'b mut [u8],
    what: &'static str,
) -> Result<(&'b [u8], &'b mut [u8]), TokenError> {
    let len = URL_SAFE_NO_PAD
        .decode_slice(part, &mut *buf)
        .map_err(|_| TokenError::Malformed(what))?;
    let (part, rest) = buf
        .split_at_mut_checked(len)
        .ok_or(TokenError::Malformed(what))?;
    Ok((part, rest))
}

/// RFC 9068 §4: media type names compare case-insensitively, with or without `application/`.
fn is_at_jwt(typ: &str) -> bool {
    typ.eq_ignore_ascii_case("at+jwt") || typ.eq_ignore_ascii_case("application/at+jwt")
}

mod json;

#[cfg(test)]
mod tests;
