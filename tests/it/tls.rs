//! TLS on the issuer and gateway listeners: real TLS clients (rustls, trusting the test CA)
//! over real sockets, HTTP/2 through ALPN, certificate swaps seen by new connections, and
//! broken certificate files refused on reload.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use isogate::Role;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::servers::{TestPki, Upstream};
use crate::support::*;

const TLS_LINE: &str = "tls = { cert = \"tls/cert.pem\", key = \"tls/key.pem\" }";

/// The seed with `tls` on the issuer when `issuer_tls`, and a gateway in front of `upstream`
/// with `tls` when `proxy_tls`.
fn config(upstream: &str, issuer_tls: bool, proxy_tls: bool) -> String {
    let mut issuer = issuer_section("https://isogate.test");
    if issuer_tls {
        issuer = issuer.replacen(
            "issuer = \"https://isogate.test\"\n",
            &format!("issuer = \"https://isogate.test\"\n{TLS_LINE}\n"),
            1,
        );
    }
    let proxy_tls = if proxy_tls { TLS_LINE } else { "" };
    issuer
        + SEED
        + &format!(
            "\n[proxy]\nlisten = \"127.0.0.1:0\"\n{proxy_tls}\n\n[[routes]]\npath_prefix = \"/products\"\nupstream = \"{upstream}\"\nresource = \"urn:products\"\n"
        )
}

/// Starts isogate on `toml` with `pki`'s certificate and key in `tls/`.
async fn start(toml: &str, pki: &TestPki) -> Isogate {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("tls")).expect("tls folder");
    pki.write(
        &dir.path().join("tls/cert.pem"),
        &dir.path().join("tls/key.pem"),
    );
    Isogate::start_in(dir, toml).await
}

/// A client's TLS settings: the CAs of `trusted` as roots, `alpn` offered.
fn client_config(trusted: &[&TestPki], alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for pki in trusted {
        let ca = CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).expect("CA PEM");
        roots.add(ca).expect("CA");
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TLS handshake with `addr` for the name `localhost`.
async fn handshake(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("name");
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// One open HTTPS connection, HTTP/2 when ALPN chose it, else HTTP/1.1.
struct TlsConn {
    addr: SocketAddr,
    sender: Sender,
    /// The server's certificate, as presented in the handshake.
    peer: CertificateDer<'static>,
    /// The protocol ALPN chose.
    alpn: Option<Vec<u8>>,
}

impl TlsConn {
    async fn open(addr: SocketAddr, trusted: &[&TestPki], alpn: &[&[u8]]) -> Self {
        let stream = handshake(addr, client_config(trusted, alpn))
            .await
            .expect("TLS handshake");
        let session = stream.get_ref().1;
        let peer = session.peer_certificates().expect("a certificate")[0].clone();
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        let io = TokioIo::new(stream);
        let sender = if alpn.as_deref() == Some(b"h2") {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .expect("h2 handshake");
            tokio::spawn(conn);
            Sender::H2(sender)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .expect("h1 handshake");
            tokio::spawn(conn);
            Sender::H1(sender)
        };
        TlsConn {
            addr,
            sender,
            peer,
            alpn,
        }
    }

    /// Sends `req` (whose URI is a path) on this connection.
    async fn send(&mut self, mut req: Request<Full<Bytes>>) -> Reply {
        let authority = format!("localhost:{}", self.addr.port());
        let response = match &mut self.sender {
            Sender::H1(sender) => {
                req.headers_mut()
                    .insert(http::header::HOST, authority.parse().unwrap());
                sender.send_request(req).await
            }
            Sender::H2(sender) => {
                *req.uri_mut() = format!("https://{authority}{}", req.uri()).parse().unwrap();
                sender.send_request(req).await
            }
        }
        .expect("response");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    async fn get(&mut self, path: &str, bearer: Option<&str>) -> Reply {
        let mut req = Request::get(path);
        if let Some(token) = bearer {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        self.send(req.body(Full::default()).unwrap()).await
    }
}

async fn products_token(isogate: &Isogate) -> String {
    isogate
        .token_ok(&[
            ("grant_type", "client_credentials"),
            ("resource", "urn:products"),
        ])
        .await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn the_issuer_serves_discovery_and_tokens_over_tls() {
    let pki = TestPki::new();
    let upstream = Upstream::start().await;
    let isogate = start(&config(&upstream.url(), true, false), &pki).await;
    let addr = isogate.addr(Role::Issuer);

    let mut conn = TlsConn::open(addr, &[&pki], &[b"http/1.1"]).await;
    assert_eq!(conn.peer, pki.cert_der);
    let discovery = conn.get("/.well-known/openid-configuration", None).await;
    assert_eq!(discovery.status, StatusCode::OK);
    assert_eq!(discovery.json()["issuer"], "https://isogate.test");
    assert_eq!(
        discovery.json()["token_endpoint"],
        "https://isogate.test/connect/token"
    );

    let token = conn
        .send(
            Request::post("/connect/token")
                .header("content-type", "application/x-www-form-urlencoded")
                .header("authorization", basic("client", SECRET))
                .body(Full::new(Bytes::from(form_body(&[
                    ("grant_type", "client_credentials"),
                    ("resource", "urn:products"),
                ]))))
                .unwrap(),
        )
        .await;
    assert_eq!(token.status, StatusCode::OK, "{}", token.text());
    let access_token = token.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(decode_parts(&access_token).1["aud"], "urn:products");

    // Plain HTTP gets no HTTP answer, and a client that does not trust the certificate fails
    // its handshake; neither stops the listener.
    let plain = raw(
        addr,
        b"GET /.well-known/jwks HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(!plain.starts_with("HTTP/"), "{plain:?}");
    let stranger = TestPki::new();
    assert!(handshake(addr, client_config(&[&stranger], &[]))
        .await
        .is_err());
    let mut again = TlsConn::open(addr, &[&pki], &[]).await;
    assert_eq!(
        again.get("/.well-known/jwks", None).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_gateway_over_tls_forwards_as_https_over_http1_and_http2() {
    let pki = TestPki::new();
    let upstream = Upstream::start().await;
    let isogate = start(&config(&upstream.url(), false, true), &pki).await;
    let addr = isogate.addr(Role::Proxy);
    let token = products_token(&isogate).await;

    let mut h1 = TlsConn::open(addr, &[&pki], &[b"http/1.1"]).await;
    assert_eq!(h1.alpn.as_deref(), Some(&b"http/1.1"[..]));
    let reply = h1.get("/products/1", Some(&token)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let seen = upstream.last();
    assert_eq!(seen.target, "/products/1");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");

    // The challenge points at the metadata over https.
    let denied = h1.get("/products/1", None).await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
    let challenge = denied.header("www-authenticate").unwrap();
    let metadata = format!(
        "resource_metadata=\"https://localhost:{}/.well-known/oauth-protected-resource/products\"",
        addr.port()
    );
    assert!(challenge.contains(&metadata), "{challenge}");

    // HTTP/2, chosen by ALPN.
    let mut h2 = TlsConn::open(addr, &[&pki], &[b"h2", b"http/1.1"]).await;
    assert_eq!(h2.alpn.as_deref(), Some(&b"h2"[..]));
    for i in 0..3 {
        let reply = h2.get(&format!("/products/{i}"), Some(&token)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(upstream.last().headers["x-forwarded-proto"], "https");
    }
}

#[tokio::test]
async fn a_new_connection_sees_a_swapped_certificate_and_an_open_one_keeps_working() {
    let (a, b) = (TestPki::new(), TestPki::new());
    let upstream = Upstream::start().await;
    let isogate = start(&config(&upstream.url(), true, true), &a).await;
    let token = products_token_over(&isogate, &[&a, &b]).await;
    let gate = isogate.addr(Role::Proxy);

    let mut old = TlsConn::open(gate, &[&a, &b], &[b"h2"]).await;
    assert_eq!(old.peer, a.cert_der);
    assert_eq!(
        old.get("/products", Some(&token)).await.status,
        StatusCode::OK
    );

    b.write(&isogate.path("tls/cert.pem"), &isogate.path("tls/key.pem"));
    isogate.reloaded(|s| s.applied >= 1).await;

    for role in [Role::Issuer, Role::Proxy] {
        let new = TlsConn::open(isogate.addr(role), &[&a, &b], &[]).await;
        assert_eq!(new.peer, b.cert_der, "{role} serves the new certificate");
    }
    let mut new = TlsConn::open(gate, &[&a, &b], &[b"h2"]).await;
    assert_eq!(
        new.get("/products", Some(&token)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        old.get("/products", Some(&token)).await.status,
        StatusCode::OK,
        "the connection opened before the swap still works"
    );
    assert_eq!(old.peer, a.cert_der);
}

/// A token from an issuer that listens over TLS.
async fn products_token_over(isogate: &Isogate, trusted: &[&TestPki]) -> String {
    let mut conn = TlsConn::open(isogate.addr(Role::Issuer), trusted, &[]).await;
    let reply = conn
        .send(
            Request::post("/connect/token")
                .header("content-type", "application/x-www-form-urlencoded")
                .header("authorization", basic("client", SECRET))
                .body(Full::new(Bytes::from(form_body(&[
                    ("grant_type", "client_credentials"),
                    ("resource", "urn:products"),
                ]))))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.json()["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_reload_to_a_broken_certificate_is_rejected_and_the_old_one_keeps_serving() {
    let pki = TestPki::new();
    let upstream = Upstream::start().await;
    let isogate = start(&config(&upstream.url(), false, true), &pki).await;
    let gate = isogate.addr(Role::Proxy);
    let cert = isogate.path("tls/cert.pem");

    // A certificate file that holds no certificate.
    write_atomically(&cert, &pki.key_pem());
    let status = isogate.reloaded(|s| s.rejected == 1).await;
    let error = status.last_error.unwrap();
    assert!(
        error.contains("proxy.tls.cert") && error.contains("holds no certificate"),
        "{error}"
    );
    assert!(
        !error.contains("-----"),
        "the file is never quoted: {error}"
    );
    let conn = TlsConn::open(gate, &[&pki], &[]).await;
    assert_eq!(conn.peer, pki.cert_der);

    // Another CA's certificate, with the old key: it does not match.
    let other = TestPki::new();
    write_atomically(&cert, &other.cert_pem());
    let status = isogate.reloaded(|s| s.rejected == 2).await;
    let error = status.last_error.unwrap();
    assert!(
        error.contains("proxy.tls.key") && error.contains("does not match"),
        "{error}"
    );

    // The key file gone.
    std::fs::remove_file(isogate.path("tls/key.pem")).unwrap();
    let status = isogate.reloaded(|s| s.rejected == 3).await;
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap()
            .contains("cannot read"),
        "{status:?}"
    );
    let token = products_token(&isogate).await;
    let mut conn = TlsConn::open(gate, &[&pki], &[]).await;
    assert_eq!(conn.peer, pki.cert_der);
    assert_eq!(
        conn.get("/products", Some(&token)).await.status,
        StatusCode::OK
    );
    assert_eq!(isogate.server.status().borrow().generation, 1);
}

#[tokio::test]
async fn turning_tls_on_takes_a_restart_and_the_plain_listener_keeps_serving() {
    let pki = TestPki::new();
    let upstream = Upstream::start().await;
    let isogate = start(&config(&upstream.url(), false, false), &pki).await;
    let path = isogate.path("isogate.toml");
    write_atomically(&path, &config(&upstream.url(), false, true));
    isogate.reloaded(|s| s.applied == 1).await;

    let token = products_token(&isogate).await;
    let reply = send(
        Request::get(format!("http://{}/products", isogate.addr(Role::Proxy)))
            .header("authorization", format!("Bearer {token}"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(upstream.last().headers["x-forwarded-proto"], "http");
}

#[tokio::test]
async fn turning_tls_off_takes_a_restart_and_the_tls_listener_keeps_its_certificate() {
    let pki = TestPki::new();
    let upstream = Upstream::start().await;
    let isogate = start(&config(&upstream.url(), false, true), &pki).await;
    write_atomically(
        &isogate.path("isogate.toml"),
        &config(&upstream.url(), false, false),
    );
    isogate.reloaded(|s| s.applied == 1).await;

    let token = products_token(&isogate).await;
    let mut conn = TlsConn::open(isogate.addr(Role::Proxy), &[&pki], &[]).await;
    assert_eq!(conn.peer, pki.cert_der);
    assert_eq!(
        conn.get("/products", Some(&token)).await.status,
        StatusCode::OK
    );
    assert_eq!(upstream.last().headers["x-forwarded-proto"], "https");
}

/// Writes `text` to a temporary file in the same folder, then renames it over `path`.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
