//! Compact JWS serialisation with an already parsed key.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Serialize;

use super::SigningKey;

/// The claims could not be serialised.
#[derive(Debug, thiserror::Error)]
#[error("cannot serialise JWT claims: {0}")]
pub struct SignError(#[from] serde_json::Error);

#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    typ: &'a str,
    kid: &'a str,
}

/// Signs `claims` as a compact JWS with header `{alg, typ, kid}` taken from `key`.
pub fn encode<T: Serialize>(key: &SigningKey, typ: &str, claims: &T) -> Result<String, SignError> {
    let header = serde_json::to_vec(&Header {
        alg: key.alg.as_str(),
        typ,
        kid: &key.kid,
    })?;
    let payload = serde_json::to_vec(claims)?;
    let mut token = String::with_capacity((header.len() + payload.len()) * 4 / 3 + 100);
    URL_SAFE_NO_PAD.encode_string(&header, &mut token);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
    let signature = key.sign(token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut token);
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::Alg;
    use jsonwebtoken::{decode, decode_header, DecodingKey, Validation};

    /// Every algorithm's tokens verify with an independent implementation (jsonwebtoken's
    /// decoder) against the published JWK.
    #[test]
    fn tokens_verify_against_the_published_jwk() {
        for alg in Alg::ALL {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("k.pem");
            super::super::keys::generate_file(&path, alg).unwrap();
            let key = SigningKey::from_file(&path, alg, Some("k1".into()), false).unwrap();
            let token =
                encode(&key, "at+jwt", &serde_json::json!({"sub": "s", "aud": "a"})).unwrap();
            let header = decode_header(&token).unwrap();
            assert_eq!(header.kid.as_deref(), Some("k1"));
            assert_eq!(header.typ.as_deref(), Some("at+jwt"));
            let decoding = DecodingKey::from_jwk(&key.jwk).unwrap();
            let mut validation = Validation::new(header.alg);
            validation.set_audience(&["a"]);
            validation.required_spec_claims.clear();
            let data = decode::<serde_json::Value>(&token, &decoding, &validation)
                .unwrap_or_else(|e| panic!("{alg}: {e}"));
            assert_eq!(data.claims["sub"], "s");
        }
    }
}
