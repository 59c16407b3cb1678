//! Stored client and API secrets (`sha256:<base64 of SHA-256>`), checked in constant time,
//! and Argon2id password hashes for `[[users]]`.

use aws_lc_rs::digest::{digest, SHA256};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use subtle::ConstantTimeEq;

const PREFIX: &str = "sha256:";

/// The stored form of a secret: the SHA-256 of it. The secret itself is never kept.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretHash([u8; 32]);

impl std::fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretHash(..)")
    }
}

/// A stored secret that is not `sha256:` followed by the base64 of 32 bytes.
#[derive(Debug, thiserror::Error)]
#[error("not a stored secret: expected \"sha256:<base64 of 32 bytes>\" as printed by `isogate hash-secret`")]
pub struct MalformedSecret;

impl SecretHash {
    /// Hashes a plain secret.
    pub fn of(secret: &[u8]) -> Self {
        let mut out = [0; 32];
        out.copy_from_slice(digest(&SHA256, secret).as_ref());
        SecretHash(out)
    }

    /// Parses the stored form.
    pub fn parse(stored: &str) -> Result<Self, MalformedSecret> {
        let encoded = stored.strip_prefix(PREFIX).ok_or(MalformedSecret)?;
        let bytes = STANDARD.decode(encoded).map_err(|_| MalformedSecret)?;
        bytes
            .try_into()
            .map(SecretHash)
            .map_err(|_| MalformedSecret)
    }

    /// Whether `presented` hashes to this value; the comparison takes the same time wherever
    /// the hashes differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        SecretHash::of(presented).0.ct_eq(&self.0).into()
    }

    /// The stored form, as `isogate hash-secret` prints it.
    pub fn to_stored(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(self.0))
    }
}

/// Whether `presented` matches any of `stored`. Every candidate is compared so the time spent
/// does not tell which one matched.
pub fn matches_any(stored: &[SecretHash], presented: &[u8]) -> bool {
    let hash = SecretHash::of(presented);
    stored
        .iter()
        .fold(subtle::Choice::from(0), |acc, s| acc | s.0.ct_eq(&hash.0))
        .into()
}

/// Hashes a user password as an Argon2id PHC string with a random salt.
pub fn hash_password(password: &[u8]) -> Result<String, argon2::password_hash::Error> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| argon2::password_hash::Error::Crypto)?;
    let salt = SaltString::encode_b64(&salt)?;
    Ok(argon2::Argon2::default()
        .hash_password(password, &salt)?
        .to_string())
}

/// Whether `password` matches the Argon2id PHC string `phc` (constant time in the password).
/// A malformed `phc` matches nothing.
pub fn verify_password(phc: &str, password: &[u8]) -> bool {
    use argon2::password_hash::PasswordVerifier;
    argon2::PasswordHash::new(phc).is_ok_and(|hash| {
        argon2::Argon2::default()
            .verify_password(password, &hash)
            .is_ok()
    })
}

/// Checks that `phc` is an Argon2id PHC string.
pub fn check_password_hash(phc: &str) -> Result<(), String> {
    let parsed = argon2::PasswordHash::new(phc).map_err(|e| {
        format!("not a PHC password hash ({e}); make one with `isogate hash-password`")
    })?;
    if parsed.algorithm.as_str() != "argon2id" {
        return Err(format!(
            "password hashes must be argon2id, not {}",
            parsed.algorithm
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_form_round_trips_and_matches_only_the_secret() {
        let stored = SecretHash::of(b"secret").to_stored();
        // The same value IdentityServer's "secret".Sha256() gives.
        assert_eq!(
            stored,
            "sha256:K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols="
        );
        let hash = SecretHash::parse(&stored).unwrap();
        assert!(hash.matches(b"secret"));
        assert!(!hash.matches(b"secreT"));
        assert!(matches_any(&[SecretHash::of(b"a"), hash], b"secret"));
        assert!(!matches_any(&[], b"secret"));
    }

    #[test]
    fn malformed_stored_secrets_are_refused() {
        for bad in [
            "secret",
            "sha256:",
            "sha256:AAAA",
            "sha512:K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols=",
        ] {
            assert!(SecretHash::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn password_hashes_are_argon2id() {
        let phc = hash_password(b"pw").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        check_password_hash(&phc).unwrap();
        assert!(check_password_hash("plain").is_err());
    }
}
