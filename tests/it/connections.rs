//! Every listener's connection limits (SPEC §4, "Requests and connections"): a connection
//! that starts no request is closed after `request_header_timeout`, one idle between requests
//! after `idle_timeout` (HTTP/1 and HTTP/2), a body the token service reads has
//! `request_body_timeout`, and `max_connections` caps each listener on its own so that the
//! admin listener still answers when the gateway is full.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use isogate::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::servers::Upstream;
use crate::support::*;

/// The longest a test waits for the server to close a connection; every limit under test is
/// far shorter.
const PATIENCE: Duration = Duration::from_secs(5);

/// The seed with a gateway in front of `upstream` and an admin listener; `limits` (lines such
/// as `idle_timeout = "300ms"`) go into each of `[issuer]`, `[proxy]` and `[admin]`.
fn config(upstream: &str, limits: &str) -> String {
    issuer_section("http://isogate.test").replacen(
        "issuer = \"http://isogate.test\"\n",
        &format!("issuer = \"http://isogate.test\"\n{limits}\n"),
        1,
    ) + SEED
        + &format!(
            r#"
[proxy]
listen = "127.0.0.1:0"
{limits}

[[routes]]
path_prefix = "/products"
upstream = "{upstream}"
resource = "urn:products"

[admin]
listen = "127.0.0.1:0"
{limits}
"#
        )
}

/// Reads until the server closes `stream` and returns what it sent; panics when it stays open
/// for [`PATIENCE`].
async fn closed_by_server(stream: &mut TcpStream, what: &str) -> Vec<u8> {
    let mut seen = Vec::new();
    match tokio::time::timeout(PATIENCE, stream.read_to_end(&mut seen)).await {
        Ok(_) => seen,
        Err(_) => panic!("{what}: the server kept the connection open"),
    }
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

/// The HTTP/2 client preface and an empty SETTINGS frame.
fn h2_preface() -> Vec<u8> {
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    bytes
}

/// An HTTP/2 frame: 24-bit length, type, flags, stream id.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut frame = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

#[tokio::test]
async fn a_connection_that_starts_no_request_is_closed_on_every_listener() {
    let upstream = Upstream::start().await;
    let isogate = Isogate::start(&config(
        &upstream.url(),
        "request_header_timeout = \"300ms\"",
    ))
    .await;
    for role in [Role::Issuer, Role::Proxy, Role::Admin] {
        // Not a byte.
        let mut silent = connect(isogate.addr(role)).await;
        closed_by_server(&mut silent, &format!("{role}: a silent connection")).await;

        // The HTTP/2 preface and settings, and then nothing.
        let mut preface = connect(isogate.addr(role)).await;
        preface.write_all(&h2_preface()).await.unwrap();
        closed_by_server(&mut preface, &format!("{role}: an HTTP/2 preface alone")).await;

        // A header block that is never finished: HEADERS without END_HEADERS, then a
        // CONTINUATION (again without END_HEADERS) every 100 ms. Bytes keep coming, but no
        // request ever starts.
        let mut unfinished = connect(isogate.addr(role)).await;
        unfinished.write_all(&h2_preface()).await.unwrap();
        // 0x82: `:method: GET`, from the static table; END_STREAM, not END_HEADERS.
        let headers = h2_frame(0x1, 0x1, 1, &[0x82]);
        unfinished.write_all(&headers).await.unwrap();
        let trickle = async {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let continuation = h2_frame(0x9, 0x0, 1, &[0x86]);
                if unfinished.write_all(&continuation).await.is_err() {
                    return;
                }
            }
        };
        let what = format!("{role}: an HTTP/2 header block never finished");
        tokio::select! {
            () = trickle => {}
            () = tokio::time::sleep(PATIENCE) => panic!("{what}: the server kept the connection open"),
        }

        // HTTP/1: half a request head, and then nothing.
        let mut half = connect(isogate.addr(role)).await;
        half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let answer = closed_by_server(&mut half, &format!("{role}: half a request head")).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{role}: {answer}"
        );
    }
    let scrape = Scrape::of(&isogate).await;
    for role in ["issuer", "proxy", "admin"] {
        assert!(
            scrape.get("isogate_connections_timed_out_total", &[("role", role)]) >= 4.0,
            "{role}: {}",
            scrape.text
        );
    }
}

/// An HTTP/1.1 `GET /healthz` on the admin listener, read to the end of its (empty-bodied or
/// short) response.
async fn healthz_over(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    // The answer is one small segment: read until its head and body are in.
    while !String::from_utf8_lossy(&seen).contains("\r\n\r\n") {
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed before answering");
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test]
async fn a_connection_idle_between_requests_is_closed_after_idle_timeout() {
    let upstream = Upstream::start().await;
    // A long header timeout: only the idle timeout can close these.
    let isogate = Isogate::start(&config(
        &upstream.url(),
        "idle_timeout = \"300ms\"\nrequest_header_timeout = \"30s\"",
    ))
    .await;
    let admin = isogate.addr(Role::Admin);

    // HTTP/1.1 keep-alive: answered, then closed once idle.
    let mut h1 = connect(admin).await;
    let answer = healthz_over(&mut h1).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    closed_by_server(&mut h1, "an idle HTTP/1.1 connection").await;

    // HTTP/2: answered, then the connection ends once idle.
    let stream = connect(admin).await;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let response = sender
        .send_request(
            Request::get(format!("http://{admin}/healthz"))
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await
        .expect("h2 response");
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body().collect().await.expect("body");
    tokio::time::timeout(PATIENCE, conn)
        .await
        .expect("an idle HTTP/2 connection is closed by the server")
        .unwrap()
        .ok();
}

/// An upstream that answers a chunked body in two halves, `pause` apart.
async fn pausing_upstream(pause: Duration) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !String::from_utf8_lossy(&head).contains("\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let first = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nfirst \r\n";
                if stream.write_all(first).await.is_err() {
                    return;
                }
                // The slow half of a slow response: the gateway must not count the
                // connection as idle while this body is still being sent.
                tokio::time::sleep(pause).await;
                let _ = stream.write_all(b"4\r\nhalf\r\n0\r\n\r\n").await;
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_request_in_flight_is_never_cut_by_the_idle_timeout() {
    let (upstream, task) = pausing_upstream(Duration::from_millis(1500)).await;
    let isogate = Isogate::start(&config(
        &format!("http://{upstream}"),
        "idle_timeout = \"300ms\"\nrequest_header_timeout = \"300ms\"",
    ))
    .await;
    let token = isogate
        .access_token(&[
            ("grant_type", "client_credentials"),
            ("resource", "urn:products"),
        ])
        .await;
    let reply = send(
        Request::get(format!(
            "http://{}/products/stream",
            isogate.addr(Role::Proxy)
        ))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::default())
        .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "first half", "the body arrived whole");
    task.abort();
}

#[tokio::test]
async fn each_listener_caps_its_connections_and_the_admin_listener_stays_reachable() {
    let upstream = Upstream::start().await;
    let toml = config(&upstream.url(), "request_header_timeout = \"30s\"").replacen(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n",
        "[proxy]\nlisten = \"127.0.0.1:0\"\nmax_connections = 4\n",
        1,
    );
    let isogate = Isogate::start(&toml).await;
    let proxy = isogate.addr(Role::Proxy);
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect(proxy).await);
    }
    let isogate = &isogate;
    eventually("four gateway connections are open", || async move {
        let open = Scrape::of(isogate)
            .await
            .get("isogate_connections", &[("role", "proxy")]);
        (open == 4.0).then_some(())
    })
    .await;

    // The fifth is closed as it arrives, without an answer.
    let mut fifth = connect(proxy).await;
    let _ = fifth
        .write_all(b"GET /products HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut seen = Vec::new();
    let read = tokio::time::timeout(PATIENCE, fifth.read_to_end(&mut seen)).await;
    assert!(read.is_ok(), "the fifth connection was served");
    assert!(seen.is_empty(), "{}", String::from_utf8_lossy(&seen));

    // The other listeners have their own caps.
    assert_eq!(
        get(&format!("http://{}/healthz", isogate.addr(Role::Admin)))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        get(&isogate.issuer_url("/.well-known/jwks")).await.status,
        StatusCode::OK
    );
    let scrape = Scrape::of(isogate).await;
    assert_eq!(
        scrape.get("isogate_connections_refused_total", &[("role", "proxy")]),
        1.0
    );
    assert_eq!(
        scrape.get("isogate_connections_refused_total", &[("role", "admin")]),
        0.0
    );

    // Once one closes, the gateway takes a connection again.
    drop(held.pop());
    eventually("a gateway connection closed", || async move {
        let open = Scrape::of(isogate)
            .await
            .get("isogate_connections", &[("role", "proxy")]);
        (open == 3.0).then_some(())
    })
    .await;
    let reply = get(&format!("http://{proxy}/products")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_body_the_token_service_reads_must_arrive_within_request_body_timeout() {
    let upstream = Upstream::start().await;
    let isogate = Isogate::start(&config(&upstream.url(), "").replacen(
        "issuer = \"http://isogate.test\"\n",
        "issuer = \"http://isogate.test\"\nrequest_body_timeout = \"300ms\"\n",
        1,
    ))
    .await;
    for path in [
        "/connect/token",
        "/connect/introspect",
        "/connect/revocation",
    ] {
        let mut stream = connect(isogate.addr(Role::Issuer)).await;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant_type="
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let answer = closed_by_server(&mut stream, path).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
        assert!(
            answer.contains("\"error\":\"invalid_request\""),
            "{path}: {answer}"
        );
    }
}

/// Out of descriptors, the accept loop backs off and logs about it once a second, saying how
/// many failures it kept quiet, instead of a warning every 50 ms.
#[test]
fn accept_failures_are_logged_at_a_bounded_rate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("isogate.toml");
    std::fs::write(&path, config("http://127.0.0.1:9", "")).unwrap();
    let mut running = Running::spawn(
        "prlimit",
        &[
            "--nofile=64:64",
            "--",
            env!("CARGO_BIN_EXE_isogate"),
            "serve",
            "--config",
            path.to_str().unwrap(),
        ],
    );
    let line = running.wait_for("listening role=proxy");
    let addr: SocketAddr = line
        .rsplit("addr=")
        .next()
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("no address in {line}"));
    let warned = running.last_line_with("may exceed the open-file limit");
    assert!(warned.contains("open_file_limit=64"), "{warned}");
    // More connections than descriptors: the kernel queues them, accept fails.
    let held: Vec<_> = (0..100)
        .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
        .collect();
    // The rate is the point: let a few seconds of failures pass.
    std::thread::sleep(Duration::from_millis(2500));
    running.signal("TERM");
    let (_, log) = running.finish();
    drop(held);
    let failures: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("accept failed"))
        .collect();
    assert!(!failures.is_empty(), "{log}");
    assert!(failures.len() <= 4, "{} lines:\n{log}", failures.len());
    assert!(
        failures
            .iter()
            .any(|l| l.contains("suppressed=") && !l.contains("suppressed=0")),
        "{log}"
    );
}
