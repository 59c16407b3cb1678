//! `tls = { cert, key }` on a listener. The PEM files are read and turned into rustls server
//! settings during validation, so a bad certificate or key is a problem of the file (and a
//! reload to it is rejected) instead of a failure of every later handshake.

use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::*;
use crate::config::Tls;

/// ALPN protocols offered, preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Which file a failure to build the server settings is about.
enum Blame {
    Cert(String),
    Key(String),
}

impl V<'_> {
    /// Validates `tls` found at `at` (`issuer.tls`, `proxy.tls`); `None` when it is absent or
    /// has a problem.
    pub(super) fn tls(&mut self, tls: Option<S<raw::Tls>>, at: &str) -> Option<Tls> {
        let raw::Tls { cert, key } = tls?.into_inner();
        let cert_path = self.path(cert.get_ref());
        let key_path = self.path(key.get_ref());
        let chain = read_chain(&cert_path);
        let private = read_key(&key_path);
        let (chain, private) = match (chain, private) {
            (Ok(chain), Ok(private)) => (chain, private),
            (chain, private) => {
                if let Err(message) = chain {
                    self.at(&cert, format!("{at}.cert"), message);
                }
                if let Err(message) = private {
                    self.at(&key, format!("{at}.key"), message);
                }
                return None;
            }
        };
        match server_config(chain, private) {
            Ok(server) => Some(Tls {
                cert: cert_path,
                key: key_path,
                server: Arc::new(server),
            }),
            Err(Blame::Cert(message)) => {
                self.at(&cert, format!("{at}.cert"), message);
                None
            }
            Err(Blame::Key(message)) => {
                self.at(&key, format!("{at}.key"), message);
                None
            }
        }
    }
}

/// Every certificate in the PEM file at `path`, in file order.
pub(super) fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read(path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_problem(path, &e))?;
    if chain.is_empty() {
        return Err(format!(
            "{} holds no certificate (a PEM \"CERTIFICATE\" block)",
            path.display()
        ));
    }
    Ok(chain)
}

/// The first private key in the PEM file at `path`: PKCS#8, SEC1 or PKCS#1.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => format!(
            "{} holds no private key (a PEM \"PRIVATE KEY\", \"EC PRIVATE KEY\" or \"RSA PRIVATE KEY\" block)",
            path.display()
        ),
        e => pem_problem(path, &e),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// A PEM syntax error, described without quoting the file: it may hold a private key.
fn pem_problem(path: &Path, e: &pem::Error) -> String {
    let what = match e {
        pem::Error::MissingSectionEnd { .. } => "a PEM block has no END line",
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a PEM block is not valid base64",
        pem::Error::SectionTooLarge => "a PEM block is too large",
        _ => "it cannot be read as PEM",
    };
    format!("{} is not a valid PEM file: {what}", path.display())
}

/// The server settings for `chain` and `key` (aws-lc-rs, TLS 1.2 and 1.3, ALPN `h2` and
/// `http/1.1`). Fails when the key cannot be used or does not match the first certificate.
fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ServerConfig, Blame> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Blame::Key(format!("no TLS settings can be built: {e}")))?
        .with_no_client_auth();
    let mut config = builder.with_single_cert(chain, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => Blame::Key(
            "the private key does not match the certificate (the first one in `cert`)".into(),
        ),
        rustls::Error::InvalidCertificate(e) => {
            Blame::Cert(format!("the first certificate cannot be parsed: {e}"))
        }
        e => Blame::Key(format!("the private key cannot be used: {e}")),
    })?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}
