//! Real servers the gateway talks to in tests: a recording upstream and a trusted issuer's
//! JWKS endpoint that can rotate keys and go down.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// A request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: http::Method,
    /// Path and query.
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Serves `respond` on 127.0.0.1:0 until dropped; returns the address.
async fn spawn<F, Fut>(respond: F) -> (SocketAddr, tokio::task::JoinHandle<()>)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let respond = respond.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let respond = respond.clone();
                    async move { Ok::<_, Infallible>(respond(req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, task)
}

/// An upstream API that records every request and answers `200 upstream <path>`.
/// A path ending in `/slow` answers once the test opens the gate ([`Upstream::open_slow`]).
pub struct Upstream {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    gate: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start() -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let gate = tokio::sync::watch::Sender::new(false);
        let opened = gate.subscribe();
        let (addr, task) = spawn(move |req: Request<Incoming>| {
            let log = log.clone();
            let mut opened = opened.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let target = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default();
                log.lock().unwrap().push(Recorded {
                    method: parts.method,
                    target: target.clone(),
                    headers: parts.headers,
                    body: body.clone(),
                });
                if target.ends_with("/slow") {
                    let _ = opened.wait_for(|open| *open).await;
                }
                let mut response = Response::new(Full::new(Bytes::from(format!(
                    "upstream {target} {}",
                    body.len()
                ))));
                response
                    .headers_mut()
                    .insert("connection", "x-upstream-hop".parse().unwrap());
                response
                    .headers_mut()
                    .insert("x-upstream-hop", "1".parse().unwrap());
                response
                    .headers_mut()
                    .insert("x-upstream", "yes".parse().unwrap());
                response
            }
        })
        .await;
        Upstream {
            addr,
            requests,
            gate,
            task,
        }
    }

    /// Lets every `/slow` request, waiting or to come, be answered.
    pub fn open_slow(&self) {
        self.gate.send_replace(true);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    pub fn last(&self) -> Recorded {
        self.requests
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the upstream saw a request")
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A trusted issuer's discovery and JWKS endpoints. The JWKS can be replaced or taken down
/// (503), and fetches are counted.
pub struct JwksServer {
    pub addr: SocketAddr,
    jwks: Arc<Mutex<Option<String>>>,
    fetches: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    pub async fn start(jwks: String) -> Self {
        let doc = Arc::new(Mutex::new(Some(jwks)));
        let fetches = Arc::new(Mutex::new(0));
        let (doc2, fetches2) = (doc.clone(), fetches.clone());
        let base = Arc::new(Mutex::new(String::new()));
        let base2 = base.clone();
        let (addr, task) = spawn(move |req: Request<Incoming>| {
            let (doc, fetches, base) = (doc2.clone(), fetches2.clone(), base2.clone());
            async move {
                let base = base.lock().unwrap().clone();
                match req.uri().path() {
                    "/.well-known/openid-configuration" => Response::new(Full::new(Bytes::from(
                        serde_json::json!({"issuer": base, "jwks_uri": format!("{base}/jwks")})
                            .to_string(),
                    ))),
                    "/jwks" => {
                        *fetches.lock().unwrap() += 1;
                        match doc.lock().unwrap().clone() {
                            Some(jwks) => Response::new(Full::new(Bytes::from(jwks))),
                            None => {
                                let mut r = Response::new(Full::new(Bytes::from_static(b"down")));
                                *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                                r
                            }
                        }
                    }
                    _ => {
                        let mut r = Response::new(Full::new(Bytes::new()));
                        *r.status_mut() = StatusCode::NOT_FOUND;
                        r
                    }
                }
            }
        })
        .await;
        *base.lock().unwrap() = format!("http://{addr}");
        JwksServer {
            addr,
            jwks: doc,
            fetches,
            task,
        }
    }

    /// The issuer URL (its discovery document names it).
    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, jwks: Option<String>) {
        *self.jwks.lock().unwrap() = jwks;
    }

    pub fn fetches(&self) -> usize {
        *self.fetches.lock().unwrap()
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A test certificate authority and a server certificate it signed for `localhost`.
pub struct TestPki {
    /// The CA certificate, PEM: what a client trusts.
    pub ca_pem: String,
    pub cert_der: rustls::pki_types::CertificateDer<'static>,
    pub key_der: rustls::pki_types::PrivateKeyDer<'static>,
}

impl TestPki {
    pub fn new() -> Self {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "isogate test CA");
        let ca = ca_params.self_signed(&ca_key).expect("CA cert");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().expect("server key");
        let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        let cert = params.signed_by(&key, &issuer).expect("server cert");
        TestPki {
            ca_pem: ca.pem(),
            cert_der: cert.der().clone(),
            key_der: rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        }
    }
}

/// An HTTPS upstream on 127.0.0.1:0 answering `200 tls upstream <path>`.
pub struct TlsUpstream {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TlsUpstream {
    pub async fn start(pki: &TestPki) -> Self {
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![pki.cert_der.clone()], pki.key_der.clone_key())
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = service_fn(|req: Request<Incoming>| async move {
                        let body = format!("tls upstream {}", req.uri().path());
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TlsUpstream { addr, task }
    }

    /// `https://localhost:<port>`, the name the certificate carries.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestPki {
    /// The server certificate, PEM.
    pub fn cert_pem(&self) -> String {
        pem::encode(&pem::Pem::new("CERTIFICATE", self.cert_der.to_vec()))
    }

    /// The server's private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        pem::encode(&pem::Pem::new(
            "PRIVATE KEY",
            self.key_der.secret_der().to_vec(),
        ))
    }

    /// Writes the server certificate and key to `cert` and `key`, each through a temporary
    /// file renamed over it (as certificate managers do).
    pub fn write(&self, cert: &std::path::Path, key: &std::path::Path) {
        for (path, text) in [(key, self.key_pem()), (cert, self.cert_pem())] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).expect("write");
            std::fs::rename(&tmp, path).expect("rename");
        }
    }
}
