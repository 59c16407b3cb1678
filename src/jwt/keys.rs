//! Private signing keys: read from PKCS#8 PEM once, checked against their declared algorithm,
//! published as JWKs with an RFC 7638 thumbprint as the default `kid`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
    ECDSA_P384_SHA384_FIXED_SIGNING,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters,
    EllipticCurveKeyType, Jwk, KeyAlgorithm, OctetKeyPairParameters, OctetKeyPairType,
    PublicKeyUse, RSAKeyParameters, RSAKeyType, ThumbprintHash,
};

use super::Alg;

/// Why a key file could not be used. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not PEM at all.
    #[error("{path} is not a PEM file")]
    NotPem {
        /// The file.
        path: PathBuf,
    },
    /// The PEM block is another format than unencrypted PKCS#8.
    #[error("{path} holds a {tag:?} block, not an unencrypted PKCS#8 \"PRIVATE KEY\"{hint}")]
    NotPkcs8 {
        /// The file.
        path: PathBuf,
        /// The PEM label found.
        tag: String,
        /// How to convert it, when we know.
        hint: &'static str,
    },
    /// The key is PKCS#8 but not of the declared algorithm's type.
    #[error("{path} is not a key for {alg} (found {found})")]
    WrongType {
        /// The file.
        path: PathBuf,
        /// The declared algorithm.
        alg: Alg,
        /// What the key appears to be.
        found: &'static str,
    },
    /// An RSA key shorter than 2048 bits.
    #[error("{path}: RSA keys must have at least 2048 bits (found {bits})")]
    WeakRsa {
        /// The file.
        path: PathBuf,
        /// The modulus size.
        bits: usize,
    },
    /// A new key could not be generated or written.
    #[error("cannot create {path}: {reason}")]
    Generate {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

enum Signer {
    Ecdsa(EcdsaKeyPair),
    Rsa(RsaKeyPair, &'static dyn aws_lc_rs::signature::RsaEncoding),
    Ed25519(Ed25519KeyPair),
}

/// A parsed private key, ready to sign without further parsing.
pub struct SigningKey {
    /// The key id published in JWKS and put in every JWS header.
    pub kid: String,
    /// The one algorithm this key signs with.
    pub alg: Alg,
    /// Published in JWKS (so tokens it signed still verify) but never used to sign.
    pub retired: bool,
    /// The public half, as published.
    pub jwk: Jwk,
    signer: Signer,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("retired", &self.retired)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Reads a PKCS#8 PEM file and checks it is a key for `alg`. `kid` defaults to the
    /// RFC 7638 thumbprint of the public key.
    pub fn from_file(
        path: &Path,
        alg: Alg,
        kid: Option<String>,
        retired: bool,
    ) -> Result<Self, KeyError> {
        let text = fs::read(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        let der = pkcs8_der(path, &text)?;
        Self::from_pkcs8(path, &der, alg, kid, retired)
    }

    /// A new key for `alg`, held in memory only (a DPoP client's key, a test's). Its `kid` is
    /// its thumbprint.
    pub fn generate(alg: Alg) -> Result<Self, KeyError> {
        let path = Path::new("(generated)");
        let fail = |reason: String| KeyError::Generate {
            path: path.to_owned(),
            reason,
        };
        let text = generate_pem(alg).map_err(fail)?;
        let der = pkcs8_der(path, text.as_bytes())?;
        Self::from_pkcs8(path, &der, alg, None, false)
    }

    fn from_pkcs8(
        path: &Path,
        der: &[u8],
        alg: Alg,
        kid: Option<String>,
        retired: bool,
    ) -> Result<Self, KeyError> {
        let wrong = || KeyError::WrongType {
            path: path.to_owned(),
            alg,
            found: describe(der),
        };
        let (signer, params) = match alg {
            Alg::ES256 | Alg::ES384 => {
                let (signing, curve) = if alg == Alg::ES256 {
                    (&ECDSA_P256_SHA256_FIXED_SIGNING, EllipticCurve::P256)
                } else {
                    (&ECDSA_P384_SHA384_FIXED_SIGNING, EllipticCurve::P384)
                };
                let pair = EcdsaKeyPair::from_pkcs8(signing, der).map_err(|_| wrong())?;
                // Uncompressed SEC1 point: 0x04 || X || Y.
                let point = pair.public_key().as_ref();
                let (x, y) = point[1..].split_at((point.len() - 1) / 2);
                let params = AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
                    key_type: EllipticCurveKeyType::EC,
                    curve,
                    x: b64(x),
                    y: b64(y),
                });
                (Signer::Ecdsa(pair), params)
            }
            Alg::RS256 | Alg::PS256 => {
                let pair = RsaKeyPair::from_pkcs8(der).map_err(|_| wrong())?;
                let bits = pair.public_modulus_len() * 8;
                if bits < 2048 {
                    return Err(KeyError::WeakRsa {
                        path: path.to_owned(),
                        bits,
                    });
                }
                let public = pair.public_key();
                let params = AlgorithmParameters::RSA(RSAKeyParameters {
                    key_type: RSAKeyType::RSA,
                    n: b64(public.modulus().big_endian_without_leading_zero()),
                    e: b64(public.exponent().big_endian_without_leading_zero()),
                });
                let encoding: &'static dyn aws_lc_rs::signature::RsaEncoding = if alg == Alg::RS256
                {
                    &aws_lc_rs::signature::RSA_PKCS1_SHA256
                } else {
                    &aws_lc_rs::signature::RSA_PSS_SHA256
                };
                (Signer::Rsa(pair, encoding), params)
            }
            Alg::EdDSA => {
                let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|_| wrong())?;
                let params = AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                    key_type: OctetKeyPairType::OctetKeyPair,
                    curve: EllipticCurve::Ed25519,
                    x: b64(pair.public_key().as_ref()),
                });
                (Signer::Ed25519(pair), params)
            }
        };
        let mut jwk = Jwk {
            common: CommonParameters {
                public_key_use: Some(PublicKeyUse::Signature),
                key_algorithm: Some(key_algorithm(alg)),
                ..Default::default()
            },
            algorithm: params,
        };
        let kid = match kid {
            Some(kid) => kid,
            None => thumbprint(&jwk),
        };
        jwk.common.key_id = Some(kid.clone());
        Ok(SigningKey {
            kid,
            alg,
            retired,
            jwk,
            signer,
        })
    }

    /// Signs `message` (the JWS signing input) and returns the raw signature.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.signer {
            Signer::Ecdsa(pair) => pair
                .sign(&rng, message)
                .map(|sig| sig.as_ref().to_vec())
                .unwrap_or_else(|_| unreachable_signing_failure()),
            Signer::Rsa(pair, encoding) => {
                let mut sig = vec![0; pair.public_modulus_len()];
                pair.sign(*encoding, &rng, message, &mut sig)
                    .unwrap_or_else(|_| unreachable_signing_failure());
                sig
            }
            Signer::Ed25519(pair) => pair.sign(message).as_ref().to_vec(),
        }
    }
}

/// aws-lc only fails to sign on allocation failure or a broken RNG; neither is recoverable.
fn unreachable_signing_failure() -> ! {
    panic!("the crypto library failed to sign with a key it had accepted")
}

/// The RFC 7638 SHA-256 thumbprint of the public key, base64url.
fn thumbprint(jwk: &Jwk) -> String {
    // Only fails for key types we never build (HMAC, "other").
    jwk.thumbprint(ThumbprintHash::SHA256)
        .unwrap_or_else(|_| unreachable!("thumbprint of a supported key type"))
}

fn key_algorithm(alg: Alg) -> KeyAlgorithm {
    match alg {
        Alg::ES256 => KeyAlgorithm::ES256,
        Alg::ES384 => KeyAlgorithm::ES384,
        Alg::RS256 => KeyAlgorithm::RS256,
        Alg::PS256 => KeyAlgorithm::PS256,
        Alg::EdDSA => KeyAlgorithm::EdDSA,
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn pkcs8_der(path: &Path, text: &[u8]) -> Result<Vec<u8>, KeyError> {
    let block = pem::parse(text).map_err(|_| KeyError::NotPem {
        path: path.to_owned(),
    })?;
    if block.tag() == "PRIVATE KEY" {
        return Ok(block.into_contents());
    }
    let hint = match block.tag() {
        "EC PRIVATE KEY" | "RSA PRIVATE KEY" => {
            "; convert it with `openssl pkcs8 -topk8 -nocrypt -in OLD -out NEW`"
        }
        "ENCRYPTED PRIVATE KEY" => "; encrypted keys are not supported",
        _ => "",
    };
    Err(KeyError::NotPkcs8 {
        path: path.to_owned(),
        tag: block.tag().to_owned(),
        hint,
    })
}

/// Names what a PKCS#8 key is, for error messages.
fn describe(der: &[u8]) -> &'static str {
    if EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der).is_ok() {
        "an ECDSA P-256 key, use ES256"
    } else if EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, der).is_ok() {
        "an ECDSA P-384 key, use ES384"
    } else if RsaKeyPair::from_pkcs8(der).is_ok() {
        "an RSA key, use RS256 or PS256"
    } else if Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).is_ok() {
        "an Ed25519 key, use EdDSA"
    } else {
        "a key of a type isogate does not support"
    }
}

/// Generates a new private key for `alg` as PKCS#8 PEM text.
pub fn generate_pem(alg: Alg) -> Result<String, String> {
    let failed = |_| format!("the crypto library could not generate a {alg} key");
    let der: Vec<u8> = match alg {
        Alg::ES256 => EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .and_then(|k| k.to_pkcs8v1())
            .map_err(failed)?
            .as_ref()
            .to_vec(),
        Alg::ES384 => EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING)
            .and_then(|k| k.to_pkcs8v1())
            .map_err(failed)?
            .as_ref()
            .to_vec(),
        Alg::RS256 | Alg::PS256 => aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048)
            .and_then(|k| AsDer::<aws_lc_rs::encoding::Pkcs8V1Der<'_>>::as_der(&k))
            .map_err(failed)?
            .as_ref()
            .to_vec(),
        Alg::EdDSA => Ed25519KeyPair::generate()
            .and_then(|k| k.to_pkcs8v1())
            .map_err(failed)?
            .as_ref()
            .to_vec(),
    };
    Ok(pem::encode(&pem::Pem::new("PRIVATE KEY", der)))
}

/// Writes a new key for `alg` to `path` with mode 0600, creating parent folders (0700).
/// Fails if the file exists: a key is never overwritten.
pub fn generate_file(path: &Path, alg: Alg) -> Result<(), KeyError> {
    let fail = |reason: String| KeyError::Generate {
        path: path.to_owned(),
        reason,
    };
    let text = generate_pem(alg).map_err(fail)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        let mut dirs = fs::DirBuilder::new();
        dirs.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut dirs, 0o700);
        dirs.create(parent).map_err(|e| fail(e.to_string()))?;
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| fail(e.to_string()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| fail(e.to_string()))
}

/// The keys of one configuration: all published, the non-retired ones used to sign in file order.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<SigningKey>,
}

impl KeySet {
    /// Wraps keys in the order of the file.
    pub fn new(keys: Vec<SigningKey>) -> Self {
        KeySet { keys }
    }

    /// Every key, retired ones included.
    pub fn all(&self) -> &[SigningKey] {
        &self.keys
    }

    /// The first non-retired key whose algorithm `accept` allows.
    pub fn signer(&self, accept: impl Fn(Alg) -> bool) -> Option<&SigningKey> {
        self.keys.iter().find(|k| !k.retired && accept(k.alg))
    }

    /// The JWKS document.
    pub fn jwks(&self) -> jsonwebtoken::jwk::JwkSet {
        jsonwebtoken::jwk::JwkSet {
            keys: self.keys.iter().map(|k| k.jwk.clone()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(alg: Alg) -> SigningKey {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        generate_file(&path, alg).unwrap();
        SigningKey::from_file(&path, alg, None, false).unwrap()
    }

    #[test]
    fn every_alg_generates_loads_and_gets_a_thumbprint_kid() {
        for alg in Alg::ALL {
            let key = load(alg);
            assert_eq!(key.kid.len(), 43, "{alg}: base64url of 32 bytes");
            assert!(!key.sign(b"x").is_empty());
        }
    }

    #[test]
    fn rfc7638_example_thumbprint() {
        // RFC 7638 §3.1.
        let jwk = Jwk {
            common: CommonParameters::default(),
            algorithm: AlgorithmParameters::RSA(RSAKeyParameters {
                key_type: RSAKeyType::RSA,
                n: "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw".into(),
                e: "AQAB".into(),
            }),
        };
        assert_eq!(
            thumbprint(&jwk),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn a_key_of_another_type_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        generate_file(&path, Alg::ES256).unwrap();
        let err = SigningKey::from_file(&path, Alg::RS256, None, false).unwrap_err();
        assert!(err.to_string().contains("P-256"), "{err}");
    }

    #[test]
    fn sec1_pem_is_refused_with_a_conversion_hint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        fs::write(
            &path,
            pem::encode(&pem::Pem::new("EC PRIVATE KEY", vec![1, 2, 3])),
        )
        .unwrap();
        let err = SigningKey::from_file(&path, Alg::ES256, None, false).unwrap_err();
        assert!(err.to_string().contains("openssl pkcs8 -topk8"), "{err}");
    }

    #[test]
    fn generated_files_are_private_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/k.pem");
        generate_file(&path, Alg::EdDSA).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(generate_file(&path, Alg::EdDSA).is_err());
    }
}
