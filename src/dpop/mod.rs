//! DPoP proofs (RFC 9449, SPEC §8): the one check both the token endpoint and the gateway run
//! on a `DPoP` header, the key's RFC 7638 thumbprint it yields, and the replay cache it
//! records `jti`s in. The shape of it all is in `docs/dpop.md`.

mod proof_key;
mod replay;

pub use proof_key::{ath, ProofKey};
pub use replay::Replay;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{HeaderMap, HeaderName};
use jsonwebtoken::jwk::Jwk;
use serde::Deserialize;
use serde_json::Value;

use crate::jwt::verify::VerifyingKey;
use crate::jwt::Alg;

/// The request header a proof travels in.
pub const DPOP: HeaderName = HeaderName::from_static("dpop");

/// The JOSE `typ` of a proof.
pub const PROOF_TYP: &str = "dpop+jwt";

/// The algorithms a proof may be signed with, as discovery and challenges list them.
pub const ALGS: &str = "ES256 ES384 RS256 PS256 EdDSA";

/// How old a proof may be by default (`dpop_max_age`).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(60);

/// How far the token service lets a proof's `iat` be ahead of its clock, or behind it beyond
/// `dpop_max_age`: the gateway's default `clock_skew` (the token service has no such key).
pub const ISSUER_CLOCK_SKEW: Duration = Duration::from_secs(30);

/// The longest proof accepted, in bytes: an RSA key of 8192 bits fits with room to spare.
pub const MAX_PROOF_LEN: usize = 8192;

/// The longest `jti` accepted, in bytes.
const MAX_JTI_LEN: usize = 256;

/// Members only a private key has (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037 §2): a proof
/// carrying one has leaked its key and is refused.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Why a proof is refused. The messages fit an `error_description` and never hold a part of
/// the proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// No `DPoP` header where one is needed.
    #[error("a DPoP proof is required")]
    Missing,
    /// Two or more `DPoP` headers.
    #[error("more than one DPoP header")]
    Repeated,
    /// Not a compact JWS, or a part of it is not what it must be; says which.
    #[error("malformed DPoP proof: {0}")]
    Malformed(&'static str),
    /// `typ` is not `dpop+jwt`.
    #[error("typ must be dpop+jwt")]
    Typ,
    /// `alg` is `none`, HMAC, or another algorithm not in [`ALGS`].
    #[error("alg must be one of ES256 ES384 RS256 PS256 EdDSA")]
    Alg,
    /// `jwk` holds members of a private key.
    #[error("the jwk holds a private key")]
    PrivateKey,
    /// `jwk` is not a usable public key for `alg`.
    #[error("the jwk is not a usable public key for alg")]
    Key,
    /// The signature does not verify with `jwk`.
    #[error("invalid DPoP proof signature")]
    Signature,
    /// `htm` is not the request's method.
    #[error("htm does not match the request method")]
    Method,
    /// `htu` is not the request's URL, or carries a query or fragment.
    #[error("htu does not match the request URL")]
    Url,
    /// `iat` is older than `dpop_max_age` (with the clock skew).
    #[error("the proof is too old (iat)")]
    Old,
    /// `iat` is ahead of now by more than the clock skew.
    #[error("the proof is issued in the future (iat)")]
    Future,
    /// `ath` is missing or not the SHA-256 of the access token.
    #[error("ath does not match the access token")]
    Ath,
    /// The key is not the one the token or refresh token is bound to.
    #[error("the proof is not made with the key the token is bound to")]
    WrongKey,
    /// The `jti` was seen within the window.
    #[error("the proof was already used (jti)")]
    Replayed,
    /// The replay cache is full: refused rather than admitted unrecorded.
    #[error("the server sees too many proofs; try again")]
    Full,
}

impl ProofError {
    /// The reason label of a refusal: `dpop_replay` for a replayed `jti`, else `dpop_proof`.
    pub fn reason(self) -> &'static str {
        match self {
            ProofError::Replayed => "dpop_replay",
            _ => "dpop_proof",
        }
    }
}

/// The request a proof must have been made for.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The request method (`htm`).
    pub method: &'a str,
    /// The request URL without query (`htu`): scheme, host, optional port and path.
    pub url: &'a str,
    /// The access token presented with the proof (`ath`), at a resource.
    pub access_token: Option<&'a str>,
    /// The thumbprint the proof's key must have: that of the key the token is bound to.
    pub key: Option<&'a str>,
    /// Now, seconds since the epoch.
    pub now: u64,
    /// `dpop_max_age`.
    pub max_age: Duration,
    /// How far clocks may disagree.
    pub skew: Duration,
}

/// The key's RFC 7638 thumbprint: base64url SHA-256, 43 characters.
pub type Thumbprint = String;

/// The proof of a request: `None` without a `DPoP` header, an error with two.
pub fn proof(headers: &HeaderMap) -> Result<Option<&str>, ProofError> {
    let mut values = headers.get_all(&DPOP).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ProofError::Repeated);
    }
    value
        .to_str()
        .map(Some)
        .map_err(|_| ProofError::Malformed("not a compact JWS"))
}

/// Why a token's presentation does not fit its binding (SPEC §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presentation {
    /// A DPoP-bound token sent with the `Bearer` scheme.
    BoundAsBearer,
    /// The `DPoP` scheme with a token that is not bound.
    NotBound,
    /// The proof is missing or repeated.
    Proof(ProofError),
}

/// How a token bound to `jkt` (or not) was presented, with the `DPoP` scheme or `Bearer`:
/// the proof to check against `jkt`, `None` for an unbound token sent as Bearer (nothing to
/// check), or why the two do not fit.
pub fn presented<'h>(
    jkt: Option<&str>,
    dpop_scheme: bool,
    headers: &'h HeaderMap,
) -> Result<Option<&'h str>, Presentation> {
    match (jkt, dpop_scheme) {
        (None, false) => Ok(None),
        (None, true) => Err(Presentation::NotBound),
        (Some(_), false) => Err(Presentation::BoundAsBearer),
        (Some(_), true) => match proof(headers) {
            Ok(Some(proof)) => Ok(Some(proof)),
            Ok(None) => Err(Presentation::Proof(ProofError::Missing)),
            Err(e) => Err(Presentation::Proof(e)),
        },
    }
}

/// The proof's JOSE header. A member named twice fails the parse.
#[derive(Deserialize)]
struct Header {
    typ: Option<Value>,
    alg: Option<Value>,
    jwk: Option<Value>,
    crit: Option<Value>,
}

/// The proof's claims. A member named twice fails the parse; other members are ignored.
#[derive(Deserialize)]
struct Claims {
    jti: Option<Value>,
    htm: Option<Value>,
    htu: Option<Value>,
    iat: Option<Value>,
    ath: Option<Value>,
}

/// Checks `proof` for the request `expected` describes (RFC 9449 §4.3, in the order of
/// `docs/dpop.md`), records its `jti` in `replay` once all else held, and returns the key's
/// thumbprint.
pub fn check(
    proof: &str,
    expected: &Expected<'_>,
    replay: &Replay,
) -> Result<Thumbprint, ProofError> {
    if proof.len() > MAX_PROOF_LEN {
        return Err(ProofError::Malformed("longer than 8 KiB"));
    }
    let not_jws = ProofError::Malformed("not a compact JWS");
    let (signing_input, signature_b64) = proof.rsplit_once('.').ok_or(not_jws)?;
    let (header_b64, claims_b64) = signing_input.split_once('.').ok_or(not_jws)?;
    if claims_b64.contains('.') {
        return Err(not_jws);
    }
    let header: Header = decode_json(header_b64, "the header is not a base64url JSON object")?;
    if header.crit.is_some() {
        return Err(ProofError::Malformed(
            "crit header parameters are not supported",
        ));
    }
    let typ_ok = matches!(&header.typ, Some(Value::String(t)) if t.eq_ignore_ascii_case(PROOF_TYP));
    if !typ_ok {
        return Err(ProofError::Typ);
    }
    let alg = match &header.alg {
        Some(Value::String(alg)) => alg.parse::<Alg>().map_err(|_| ProofError::Alg)?,
        _ => return Err(ProofError::Alg),
    };
    let Some(Value::Object(jwk)) = header.jwk else {
        return Err(ProofError::Malformed("the header has no jwk object"));
    };
    if PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
        return Err(ProofError::PrivateKey);
    }
    let parsed: Jwk = serde_json::from_value(Value::Object(jwk)).map_err(|_| ProofError::Key)?;
    let key = VerifyingKey::from_proof_jwk(&parsed, alg).map_err(|_| ProofError::Key)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| ProofError::Malformed("the signature is not base64url"))?;
    if !key.verifies(alg, signing_input.as_bytes(), &signature) {
        return Err(ProofError::Signature);
    }

    let claims: Claims = decode_json(claims_b64, "the claims are not a base64url JSON object")?;
    let jti = match &claims.jti {
        Some(Value::String(jti)) if !jti.is_empty() && jti.len() <= MAX_JTI_LEN => jti,
        _ => {
            return Err(ProofError::Malformed(
                "jti must be a string of 1 to 256 bytes",
            ))
        }
    };
    match &claims.htm {
        Some(Value::String(htm)) if htm == expected.method => {}
        Some(Value::String(_)) => return Err(ProofError::Method),
        _ => return Err(ProofError::Malformed("htm must be a string")),
    }
    match &claims.htu {
        Some(Value::String(htu)) if same_url(htu, expected.url) => {}
        Some(Value::String(_)) => return Err(ProofError::Url),
        _ => return Err(ProofError::Malformed("htu must be a string")),
    }
    let iat = match &claims.iat {
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or(ProofError::Malformed("iat must be a non-negative integer"))?,
        _ => return Err(ProofError::Malformed("iat must be a non-negative integer")),
    };
    let (max_age, skew) = (expected.max_age.as_secs(), expected.skew.as_secs());
    if iat.saturating_add(max_age).saturating_add(skew) < expected.now {
        return Err(ProofError::Old);
    }
    if iat > expected.now.saturating_add(skew) {
        return Err(ProofError::Future);
    }
    if let Some(token) = expected.access_token {
        let ath = match &claims.ath {
            Some(Value::String(ath)) => ath,
            _ => return Err(ProofError::Ath),
        };
        if *ath != proof_key::ath(token) {
            return Err(ProofError::Ath);
        }
    }
    let thumbprint = thumbprint(&parsed).ok_or(ProofError::Key)?;
    if expected.key.is_some_and(|key| key != thumbprint) {
        return Err(ProofError::WrongKey);
    }
    let window = max_age + 2 * skew;
    replay.record(&thumbprint, jti, expected.now, window)?;
    Ok(thumbprint)
}

/// The key's RFC 7638 thumbprint (SHA-256, base64url); `None` for a symmetric key.
pub fn thumbprint(jwk: &Jwk) -> Option<Thumbprint> {
    jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
        .ok()
}

fn decode_json<T: for<'de> Deserialize<'de>>(
    part: &str,
    what: &'static str,
) -> Result<T, ProofError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| ProofError::Malformed(what))?;
    // An object only: a derived struct would also take an array of its fields.
    if bytes.first() != Some(&b'{') {
        return Err(ProofError::Malformed(what));
    }
    serde_json::from_slice(&bytes).map_err(|_| ProofError::Malformed(what))
}

/// `htu` against the request's URL after RFC 3986 §6 normalisation: scheme and host case,
/// default ports, dot segments, percent-escapes. An `htu` with a query or fragment is refused
/// (RFC 9449 §4.2 has clients leave them out).
fn same_url(htu: &str, expected: &str) -> bool {
    let (Ok(htu), Ok(expected)) = (url::Url::parse(htu), url::Url::parse(expected)) else {
        return false;
    };
    htu.query().is_none()
        && htu.fragment().is_none()
        && htu.scheme() == expected.scheme()
        && htu.host() == expected.host()
        && htu.port_or_known_default() == expected.port_or_known_default()
        && normal_path(htu.path()) == normal_path(expected.path())
}

/// A path with escapes of unreserved characters decoded and the others' hex upper case. The
/// `url` crate hands out paths in ASCII, escapes included.
fn normal_path(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
        match escape {
            Some(b) if b.is_ascii_alphanumeric() || b"-._~".contains(&b) => {
                out.push(char::from(b));
                i += 3;
            }
            Some(b) => {
                out.push_str(&format!("%{b:02X}"));
                i += 3;
            }
            None => {
                out.push(char::from(bytes[i]));
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
