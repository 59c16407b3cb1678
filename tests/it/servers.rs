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
    spawn_on(None, respond).await
}

/// [`spawn`], over TLS when `tls` is given.
async fn spawn_on<F, Fut>(
    tls: Option<tokio_rustls::TlsAcceptor>,
    respond: F,
) -> (SocketAddr, tokio::task::JoinHandle<()>)
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
            let (respond, tls) = (respond.clone(), tls.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let respond = respond.clone();
                    async move { Ok::<_, Infallible>(respond(req).await) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = match tls {
                    None => {
                        builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                    }
                    Some(tls) => {
                        let Ok(stream) = tls.accept(stream).await else {
                            return;
                        };
                        builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                    }
                };
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
        let (addr, task) = spawn_on(Some(pki.acceptor()), |req: Request<Incoming>| async move {
            let body = format!("tls upstream {}", req.uri().path());
            Response::new(Full::new(Bytes::from(body)))
        })
        .await;
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
    /// A TLS acceptor with the server certificate.
    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![self.cert_der.clone()], self.key_der.clone_key())
            .expect("server config");
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }

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

/// What a [`DocumentServer`] answers at one path.
#[derive(Clone)]
pub struct Served {
    pub status: StatusCode,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    /// How long it waits before answering.
    pub delay: std::time::Duration,
}

impl Served {
    /// `200` with `body` as JSON.
    pub fn json(body: &serde_json::Value) -> Self {
        Served {
            status: StatusCode::OK,
            headers: vec![("content-type", "application/json".into())],
            body: body.to_string().into_bytes(),
            delay: std::time::Duration::ZERO,
        }
    }
}

/// An HTTPS server on 127.0.0.1:0 (certificate for `localhost`) that answers what the test set
/// per path (404 elsewhere) and counts the requests per path: where clients publish their
/// metadata documents.
pub struct DocumentServer {
    pub addr: SocketAddr,
    served: Arc<Mutex<std::collections::HashMap<String, Served>>>,
    fetches: Arc<Mutex<std::collections::HashMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl DocumentServer {
    pub async fn start(pki: &TestPki) -> Self {
        let served: Arc<Mutex<std::collections::HashMap<String, Served>>> = Arc::default();
        let fetches: Arc<Mutex<std::collections::HashMap<String, usize>>> = Arc::default();
        let (served2, fetches2) = (served.clone(), fetches.clone());
        let (addr, task) = spawn_on(Some(pki.acceptor()), move |req: Request<Incoming>| {
            let path = req.uri().path().to_owned();
            *fetches2.lock().unwrap().entry(path.clone()).or_default() += 1;
            let answer = served2.lock().unwrap().get(&path).cloned();
            async move {
                let Some(answer) = answer else {
                    let mut r = Response::new(Full::new(Bytes::new()));
                    *r.status_mut() = StatusCode::NOT_FOUND;
                    return r;
                };
                tokio::time::sleep(answer.delay).await;
                let mut r = Response::new(Full::new(Bytes::from(answer.body)));
                *r.status_mut() = answer.status;
                for (name, value) in answer.headers {
                    r.headers_mut().insert(name, value.parse().unwrap());
                }
                r
            }
        })
        .await;
        DocumentServer {
            addr,
            served,
            fetches,
            task,
        }
    }

    /// `https://localhost:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    pub fn set(&self, path: &str, served: Served) {
        self.served.lock().unwrap().insert(path.to_owned(), served);
    }

    /// How many requests reached `path`.
    pub fn fetches(&self, path: &str) -> usize {
        self.fetches.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

impl Drop for DocumentServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
