//! The login page under attack (SPEC §6): attempts are counted before their password is
//! checked, so parallel guesses cannot race the slowdown, and password checks run a bounded
//! number at a time, so a flood of logins from many addresses keeps the process's memory
//! bounded.

use std::net::{IpAddr, Ipv4Addr};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::interactive::{hidden, pkce, seed_request, Browser, USERS};
use crate::support::*;

/// A login page shown in a browser: what a POST of its form needs.
struct LoginForm {
    url: String,
    cookie: String,
    request: String,
    csrf: String,
}

impl LoginForm {
    async fn open(issuer: &str) -> Self {
        let (_, challenge) = pkce();
        let mut browser = Browser::default();
        let page = browser
            .get(&format!(
                "{issuer}/connect/authorize?{}",
                form_body(&seed_request(&challenge))
            ))
            .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text());
        let html = page.text();
        LoginForm {
            url: format!("{issuer}/connect/authorize/login"),
            cookie: browser
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; "),
            request: hidden(&html, "request"),
            csrf: hidden(&html, "csrf"),
        }
    }

    /// POSTs the form with `username` and `password` from the loopback address `from`.
    async fn submit(&self, from: Ipv4Addr, username: &str, password: &str) -> Reply {
        let mut connector = HttpConnector::new();
        connector.set_local_address(Some(IpAddr::V4(from)));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let body = form_body(&[
            ("request", &self.request),
            ("csrf", &self.csrf),
            ("username", username),
            ("password", password),
        ]);
        let req = Request::builder()
            .method(Method::POST)
            .uri(&self.url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", &self.cookie)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = client.request(req).await.expect("login POST");
        let (parts, body) = response.into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.expect("body").to_bytes(),
        }
    }
}

#[tokio::test]
async fn parallel_guesses_are_all_counted_before_any_password_is_checked() {
    let admin = "\n[admin]\nlisten = \"127.0.0.1:0\"\n";
    let isogate =
        Isogate::start(&(issuer_section("http://isogate.test") + SEED + USERS + admin)).await;
    let form = LoginForm::open(&isogate.issuer_url("")).await;
    let guesses = (0..32).map(|i| (Ipv4Addr::LOCALHOST, "alice".into(), format!("guess-{i}")));
    let replies = submit_all(form, guesses).await;
    let slowed = replies
        .iter()
        .filter(|r| r.text().contains("Too many failed sign-in attempts"))
        .count();
    let wrong = replies
        .iter()
        .filter(|r| r.text().contains("The username or password is incorrect."))
        .count();
    assert_eq!((wrong, slowed), (5, 27), "checked and slowed");
    let scrape = Scrape::of(&isogate).await;
    assert_eq!(
        scrape.get("isogate_logins_total", &[("result", "failed")]),
        5.0
    );
    assert_eq!(
        scrape.get("isogate_logins_total", &[("result", "slowed")]),
        27.0
    );
}

/// Submits `form` once per `(address, username, password)`, all at once, and returns the
/// answers.
async fn submit_all(
    form: LoginForm,
    attempts: impl IntoIterator<Item = (Ipv4Addr, String, String)>,
) -> Vec<Reply> {
    let form = std::sync::Arc::new(form);
    let mut set = tokio::task::JoinSet::new();
    for (from, username, password) in attempts {
        let form = form.clone();
        set.spawn(async move { form.submit(from, &username, &password).await });
    }
    set.join_all().await
}

/// The peak resident memory of process `pid`, in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("a number");
    kib / 1024
}

#[tokio::test]
async fn a_flood_of_logins_from_many_addresses_keeps_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("isogate.toml");
    std::fs::write(&path, issuer_section("http://isogate.test") + SEED + USERS).unwrap();
    let mut running = Running::spawn(
        env!("CARGO_BIN_EXE_isogate"),
        &["serve", "--config", path.to_str().unwrap()],
    );
    let line = running.wait_for("listening role=issuer");
    let addr = line.rsplit("addr=").next().unwrap().trim().to_owned();
    let form = LoginForm::open(&format!("http://{addr}")).await;
    let before = peak_rss_mib(running.pid());
    // 48 addresses, 48 usernames: the slowdown holds none of them back, so every attempt
    // wants an Argon2 check (about 19 MiB each).
    let floods = (0..48u8).map(|i| {
        (
            Ipv4Addr::new(127, 0, 0, 2 + i),
            format!("user-{i}"),
            "guess".into(),
        )
    });
    let replies = submit_all(form, floods).await;
    for reply in &replies {
        let text = reply.text();
        let refused = reply.status == StatusCode::OK
            && text.contains("The username or password is incorrect.");
        let busy = reply.status == StatusCode::SERVICE_UNAVAILABLE
            && text.contains("Too many sign-ins are being checked right now");
        assert!(refused || busy, "{} {text}", reply.status);
    }
    let cpus = std::thread::available_parallelism().map_or(1, usize::from) as u64;
    let peak = peak_rss_mib(running.pid());
    // A check at a time per CPU, with room for the allocator's caches (seen here: 78 MiB
    // above the start with 2 CPUs); 48 at once took 940 MiB.
    let bound = before + 48 + cpus * 32;
    assert!(
        peak <= bound,
        "peak RSS {peak} MiB (before the flood {before} MiB, bound {bound} MiB)"
    );
}
