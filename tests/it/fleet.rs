//! SPEC §7 against the real server: two isogate instances on one PostgreSQL behave as one
//! issuer, for a browser and for a client. The instances share their key files, as a fleet
//! behind a load balancer does.

use http::StatusCode;

use crate::gateway::routes;
use crate::interactive::{
    answer_consent, authorize_url_at, error_of, hidden, log_in_at, pkce, query, redeem, refresh,
    seed_request, Browser, USERS,
};
use crate::postgres;
use crate::servers::Upstream;
use crate::support::*;

/// Two instances on one fresh database, each a token service and a gateway in front of
/// `upstream`, or `None` when PostgreSQL is not there (see `postgres.rs`).
pub async fn fleet_before(upstream: &Upstream) -> Option<(Isogate, Isogate)> {
    fleet_with(upstream, "").await
}

/// Two instances on one database, with `extra` added to the file.
pub async fn fleet_with(upstream: &Upstream, extra: &str) -> Option<(Isogate, Isogate)> {
    let url = postgres::database().await?;
    let toml = format!(
        "{}{SEED}{USERS}{extra}\n[store]\nurl = \"{url}\"\n\n[proxy]\nlisten = \"127.0.0.1:0\"\n{}",
        issuer_section("http://isogate.test"),
        routes(&upstream.url())
    );
    let a = Isogate::start(&toml).await;
    // The second instance signs with the first one's keys.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    for key in ["es256.pem", "rs256.pem"] {
        std::fs::copy(
            a.path(&format!("keys/{key}")),
            dir.path().join("keys").join(key),
        )
        .unwrap();
    }
    let b = Isogate::start_in(dir, &toml).await;
    Some((a, b))
}

/// Alice, signed in at the issuer at `base` for the seed request.
struct SignedIn {
    /// The browser, with its session cookie.
    browser: Browser,
    /// The login's answer: the redirect with the code.
    done: Reply,
    /// The PKCE verifier of the request, and its challenge.
    verifier: String,
    challenge: String,
}

async fn sign_in_at(base: &str) -> SignedIn {
    let (verifier, challenge) = pkce();
    let mut browser = Browser::default();
    let page = browser
        .get(&authorize_url_at(base, &seed_request(&challenge)))
        .await;
    let done = log_in_at(base, &mut browser, &page, "alice", "alice").await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.text());
    SignedIn {
        browser,
        done,
        verifier,
        challenge,
    }
}

/// [`fleet_before`] an upstream that is not used.
pub async fn fleet() -> Option<(Isogate, Isogate)> {
    let upstream = Upstream::start().await;
    fleet_before(&upstream).await
}

#[tokio::test]
async fn signed_in_at_one_instance_a_browser_is_signed_in_at_the_other() {
    let Some((a, b)) = fleet().await else { return };
    let (base_a, base_b) = (a.issuer_url(""), b.issuer_url(""));
    let SignedIn {
        mut browser,
        done,
        verifier,
        ..
    } = sign_in_at(&base_a).await;

    // At B, with the cookie A set: a code at once, no login page.
    let (verifier_b, challenge_b) = pkce();
    let at_b = browser
        .get(&authorize_url_at(&base_b, &seed_request(&challenge_b)))
        .await;
    assert_eq!(at_b.status, StatusCode::FOUND, "{}", at_b.text());
    let code_b = query(&at_b)["code"].clone();

    // B's code redeems at A; replayed at B it is refused, and what it issued is revoked.
    let tokens = redeem(&a, &code_b, &verifier_b, Some("urn:invoices")).await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.text());
    let tokens = tokens.json();
    let replay = redeem(&b, &code_b, &verifier_b, Some("urn:invoices")).await;
    assert_eq!(error_of(&replay), "invalid_grant");
    assert!(
        replay.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("already used"),
        "{}",
        replay.text()
    );
    assert_revoked(&b, &b, &tokens).await;

    // A's own code still redeems once, at B, and its refresh token works at A.
    let code_a = query(&done)["code"].clone();
    let tokens = redeem(&b, &code_a, &verifier, Some("urn:products")).await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.text());
    let tokens = tokens.json();
    let introspected = introspect(&a, tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(
        introspected["active"], false,
        "an invoices API sees no products token"
    );
    let next = refresh(
        &a,
        tokens["refresh_token"].as_str().unwrap(),
        &[("resource", "urn:invoices")],
    )
    .await;
    assert_eq!(next.status, StatusCode::OK, "{}", next.text());
    let next = next.json();
    let introspected = introspect(&b, next["access_token"].as_str().unwrap()).await;
    assert_eq!(introspected["active"], true, "{introspected}");
}

#[tokio::test]
async fn of_twenty_refreshes_split_over_two_instances_one_wins_and_the_family_is_revoked() {
    let Some((a, b)) = fleet().await else { return };
    let signed = sign_in_at(&a.issuer_url("")).await;
    let code = &query(&signed.done)["code"];
    let tokens = redeem(&a, code, &signed.verifier, Some("urn:invoices")).await;
    let token = tokens.json()["refresh_token"].as_str().unwrap().to_owned();
    let (a, b) = (std::sync::Arc::new(a), std::sync::Arc::new(b));
    let tries: Vec<_> = (0..20)
        .map(|i| {
            let instance = if i % 2 == 0 { a.clone() } else { b.clone() };
            let token = token.clone();
            tokio::spawn(async move {
                refresh(&instance, &token, &[("resource", "urn:invoices")]).await
            })
        })
        .collect();
    let mut won = Vec::new();
    for reply in tries {
        let reply = reply.await.unwrap();
        match reply.status {
            StatusCode::OK => won.push(reply.json()),
            _ => assert_eq!(error_of(&reply), "invalid_grant"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one refresh wins");
    // The others were reuses: the winner's tokens are revoked too.
    assert_revoked(&b, &a, &won[0]).await;
}

/// The refresh token of `tokens` is refused at `refresh_at`, its access token inactive at
/// `introspect_at`.
async fn assert_revoked(refresh_at: &Isogate, introspect_at: &Isogate, tokens: &serde_json::Value) {
    let refreshed = refresh(
        refresh_at,
        tokens["refresh_token"].as_str().unwrap(),
        &[("resource", "urn:invoices")],
    )
    .await;
    assert_eq!(error_of(&refreshed), "invalid_grant");
    let introspected = introspect(introspect_at, tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(introspected["active"], false, "{introspected}");
}

#[tokio::test]
async fn the_login_slowdown_counts_failures_at_every_instance() {
    let Some((a, b)) = fleet().await else { return };
    let (_, challenge) = pkce();
    let request = seed_request(&challenge);
    // Five wrong passwords, alternating between the instances…
    for i in 0..5 {
        let base = if i % 2 == 0 {
            a.issuer_url("")
        } else {
            b.issuer_url("")
        };
        let mut browser = Browser::default();
        let page = browser.get(&authorize_url_at(&base, &request)).await;
        let failed = log_in_at(&base, &mut browser, &page, "alice", "wrong").await;
        assert!(failed.text().contains("incorrect"), "{}", failed.text());
    }
    // …and the sixth waits, at either.
    for base in [a.issuer_url(""), b.issuer_url("")] {
        let mut browser = Browser::default();
        let page = browser.get(&authorize_url_at(&base, &request)).await;
        let slowed = log_in_at(&base, &mut browser, &page, "alice", "alice").await;
        assert!(
            slowed.text().contains("Too many failed sign-in attempts"),
            "{}",
            slowed.text()
        );
    }
}

/// Introspects `token` as the invoices API.
async fn introspect(isogate: &Isogate, token: &str) -> serde_json::Value {
    let reply = post_form(
        &isogate.issuer_url("/connect/introspect"),
        &[("token", token)],
        Some(("urn:invoices", SECRET)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.json()
}

#[tokio::test]
async fn a_token_revoked_at_one_instance_is_refused_by_the_others_gateway_within_two_seconds() {
    let upstream = Upstream::start().await;
    let Some((a, b)) = fleet_before(&upstream).await else {
        return;
    };
    let gate_b = |path: &str| format!("http://{}{path}", b.addr(isogate::Role::Proxy));
    let form = [
        ("grant_type", "client_credentials"),
        ("scope", "read"),
        ("resource", "urn:invoices"),
    ];
    let token = a.access_token(&form).await;
    // B's gateway takes it (and caches it)…
    let reply = with_bearer(http::Method::GET, &gate_b("/invoices/1"), &token).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    // …until A revokes it.
    let revoked = post_form(
        &a.issuer_url("/connect/revocation"),
        &[("token", &token)],
        Some(("client", SECRET)),
    )
    .await;
    assert_eq!(revoked.status, StatusCode::OK);
    let start = std::time::Instant::now();
    let refused = eventually("B refuses the revoked token", || async {
        let reply = with_bearer(http::Method::GET, &gate_b("/invoices/1"), &token).await;
        (reply.status == StatusCode::UNAUTHORIZED).then_some(reply)
    })
    .await;
    assert!(
        start.elapsed() < std::time::Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    let challenge = refused.header("www-authenticate").unwrap();
    assert!(challenge.contains("token revoked"), "{challenge}");
    // B's own issuer knows it too.
    let seen = introspect(&b, &token).await;
    assert_eq!(seen["active"], false, "{seen}");
}

#[tokio::test]
async fn the_store_going_away_takes_down_only_what_needs_it_and_service_returns_without_a_restart()
{
    let Some(cluster) = postgres::private_cluster() else {
        return;
    };
    let url = cluster.database().await;
    let upstream = Upstream::start().await;
    let toml = format!(
        "{}{SEED}{USERS}\n[store]\nurl = \"{url}\"\nconnect_timeout = \"1s\"\n\n\
         [proxy]\nlisten = \"127.0.0.1:0\"\n{}\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        issuer_section("http://isogate.test"),
        routes(&upstream.url())
    );
    let isogate = Isogate::start(&toml).await;
    let base = isogate.issuer_url("");
    let gate = format!("http://{}/invoices/1", isogate.addr(isogate::Role::Proxy));
    let admin = |path: &str| format!("http://{}{path}", isogate.addr(isogate::Role::Admin));
    let machine = [
        ("grant_type", "client_credentials"),
        ("scope", "read"),
        ("resource", "urn:invoices"),
    ];
    let token = isogate.access_token(&machine).await;
    let SignedIn {
        mut browser,
        done,
        verifier,
        challenge,
    } = sign_in_at(&base).await;
    let tokens = redeem(
        &isogate,
        &query(&done)["code"],
        &verifier,
        Some("urn:invoices"),
    )
    .await;
    let refresh_token = tokens.json()["refresh_token"].as_str().unwrap().to_owned();

    // Load that needs no store, all the while: machine tokens and gateway requests.
    let (stop_load, load_stopped) = tokio::sync::watch::channel(false);
    let load = {
        let (token_url, gate) = (isogate.issuer_url("/connect/token"), gate.clone());
        let mut stopped = load_stopped.clone();
        tokio::spawn(async move {
            let mut answered = 0;
            while !*stopped.borrow_and_update() {
                let minted = post_form(&token_url, &machine, Some(("client", SECRET))).await;
                assert_eq!(minted.status, StatusCode::OK, "{}", minted.text());
                let token = minted.json()["access_token"].as_str().unwrap().to_owned();
                let reply = with_bearer(http::Method::GET, &gate, &token).await;
                assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
                answered += 1;
            }
            answered
        })
    };

    cluster.stop();
    // What needs the store: 503 temporarily_unavailable, within connect_timeout.
    let start = std::time::Instant::now();
    let refused = refresh(&isogate, &refresh_token, &[("resource", "urn:invoices")]).await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refused.text()
    );
    assert_eq!(refused.json()["error"], "temporarily_unavailable");
    assert!(
        start.elapsed() < std::time::Duration::from_millis(2500),
        "{:?}",
        start.elapsed()
    );
    let page = browser
        .get(&authorize_url_at(&base, &seed_request(&challenge)))
        .await;
    assert_eq!(
        page.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        page.text()
    );
    // What does not: client_credentials, discovery, JWKS and the gateway.
    assert_eq!(isogate.token(&machine).await.status, StatusCode::OK);
    for path in ["/.well-known/openid-configuration", "/.well-known/jwks"] {
        assert_eq!(
            get(&isogate.issuer_url(path)).await.status,
            StatusCode::OK,
            "{path}"
        );
    }
    let reply = with_bearer(http::Method::GET, &gate, &token).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(get(&admin("/readyz")).await.status, StatusCode::OK);
    eventually("isogate_store_up is 0", || async {
        let metrics = get(&admin("/metrics")).await.text();
        metrics.contains("isogate_store_up 0").then_some(())
    })
    .await;
    let view = get(&admin("/config")).await.json();
    assert_eq!(view["store"]["up"], false, "{view}");
    assert!(view["store"]["last_error"].is_string(), "{view}");
    assert!(!view.to_string().contains("password"), "{view}");

    // Back: full service, without a restart of isogate.
    cluster.start_again();
    let next = eventually("a refresh works again", || async {
        let reply = refresh(&isogate, &refresh_token, &[("resource", "urn:invoices")]).await;
        (reply.status == StatusCode::OK).then_some(reply)
    })
    .await;
    assert!(next.json()["access_token"].is_string());
    eventually("isogate_store_up is 1", || async {
        let metrics = get(&admin("/metrics")).await.text();
        metrics.contains("isogate_store_up 1").then_some(())
    })
    .await;
    assert_eq!(get(&admin("/config")).await.json()["store"]["up"], true);
    // The load never saw a failure, down or up.
    stop_load.send(true).unwrap();
    let answered = load.await.unwrap();
    assert!(answered > 10, "only {answered} rounds of load");
}

#[tokio::test]
async fn serve_starts_with_the_store_down_and_migrates_when_it_comes() {
    let Some(cluster) = postgres::private_cluster() else {
        return;
    };
    let url = cluster.database().await;
    cluster.stop();
    let toml = format!(
        "{}{SEED}{USERS}\n[store]\nurl = \"{url}\"\nconnect_timeout = \"500ms\"\n",
        issuer_section("http://isogate.test")
    );
    let isogate = Isogate::start(&toml).await;
    let machine = [("grant_type", "client_credentials"), ("scope", "read")];
    assert_eq!(isogate.token(&machine).await.status, StatusCode::OK);
    let (verifier, challenge) = pkce();
    let base = isogate.issuer_url("");
    let mut browser = Browser::default();
    let page = browser
        .get(&authorize_url_at(&base, &seed_request(&challenge)))
        .await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);

    // The database comes: the schema is created on first use, and sign-in works.
    cluster.start_again();
    let page = eventually("the login page", || async {
        let mut browser = Browser::default();
        let page = browser
            .get(&authorize_url_at(&base, &seed_request(&challenge)))
            .await;
        (page.status == StatusCode::OK).then_some((browser, page))
    })
    .await;
    let (mut browser, page) = page;
    let done = log_in_at(&base, &mut browser, &page, "alice", "alice").await;
    let tokens = redeem(
        &isogate,
        &query(&done)["code"],
        &verifier,
        Some("urn:invoices"),
    )
    .await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.text());
}

#[tokio::test]
async fn kill_9_of_one_instance_under_load_loses_no_grant_it_handed_out() {
    let Some(url) = postgres::database().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "{}{SEED}{USERS}\n[store]\nurl = \"{url}\"\n",
        issuer_section("http://isogate.test")
    );
    let path = dir.path().join("isogate.toml");
    std::fs::write(&path, &toml).unwrap();
    let mut a = Running::spawn(
        env!("CARGO_BIN_EXE_isogate"),
        &["serve", "--config", path.to_str().unwrap()],
    );
    let line = a.wait_for("listening role=issuer");
    let base_a = format!("http://{}", line.rsplit("addr=").next().unwrap().trim());
    // B: in this process, with A's keys.
    let b_dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(b_dir.path().join("keys")).unwrap();
    for key in ["es256.pem", "rs256.pem"] {
        std::fs::copy(
            dir.path().join("keys").join(key),
            b_dir.path().join("keys").join(key),
        )
        .unwrap();
    }
    let b = Isogate::start_in(b_dir, &toml).await;

    // Signed in at A, four workers ask A for codes as fast as it answers…
    let SignedIn {
        browser,
        verifier,
        challenge,
        ..
    } = sign_in_at(&base_a).await;
    let cookie: Vec<String> = browser
        .cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let (cookie, url) = (
        cookie.join("; "),
        authorize_url_at(&base_a, &seed_request(&challenge)),
    );
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (cookie, url) = (cookie.clone(), url.clone());
            tokio::spawn(async move {
                let mut codes = Vec::new();
                loop {
                    let req = http::Request::get(&url)
                        .header("cookie", &cookie)
                        .body(http_body_util::Full::default())
                        .unwrap();
                    match try_send(req).await {
                        Some(reply) if reply.status == StatusCode::FOUND => {
                            codes.push(query(&reply)["code"].clone())
                        }
                        _ => return codes,
                    }
                }
            })
        })
        .collect();
    // …and A is killed among them.
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    a.signal("KILL");
    let mut codes = Vec::new();
    for worker in workers {
        codes.extend(worker.await.unwrap());
    }
    assert!(
        codes.len() >= 8,
        "only {} codes before the kill",
        codes.len()
    );
    // Every code A handed out redeems at B.
    for code in &codes {
        let reply = redeem(&b, code, &verifier, Some("urn:invoices")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }
    let (exit, _) = a.finish();
    assert_eq!(exit, None, "killed by a signal");
}

#[tokio::test]
async fn a_consent_page_shown_by_one_instance_is_answered_at_the_other_and_remembered_by_all() {
    let Some((a, b)) = fleet().await else { return };
    let (_, challenge) = pkce();
    let request = vec![
        ("client_id", "spa"),
        ("response_type", "code"),
        ("redirect_uri", "http://127.0.0.1:1/spa"),
        ("scope", "read"),
        ("resource", "urn:products"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let mut browser = Browser::default();
    let page = browser
        .get(&authorize_url_at(&a.issuer_url(""), &request))
        .await;
    // Signed in at A, which shows the consent page…
    let consent = log_in_at(&a.issuer_url(""), &mut browser, &page, "alice", "alice").await;
    let html = consent.text();
    assert!(html.contains("Allow access?"), "{html}");
    // The rows behind the page name no bearer secret: not the session id, not the page's id.
    let session = browser.cookies["isogate_session"].clone();
    let pending = hidden(&html, "request");
    let rows = rows_of(&a, &["isogate_sessions", "isogate_pending"]).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    for secret in [&session, &pending] {
        assert!(
            rows.iter().all(|row| !row.contains(secret.as_str())),
            "{rows:?}"
        );
    }
    // …answered at B.
    let allowed = answer_consent(&b, &mut browser, &html, "allow", true).await;
    assert!(query(&allowed).contains_key("code"), "{}", allowed.text());
    // Remembered for every instance: A gives a code without asking again.
    let again = browser
        .get(&authorize_url_at(&a.issuer_url(""), &request))
        .await;
    assert_eq!(again.status, StatusCode::FOUND, "{}", again.text());
    assert!(query(&again).contains_key("code"));
}

/// Every row of `tables` in the database `isogate` uses, each as its JSON text.
async fn rows_of(isogate: &Isogate, tables: &[&str]) -> Vec<String> {
    let toml = std::fs::read_to_string(isogate.path("isogate.toml")).unwrap();
    let url = toml
        .split("url = \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a [store] url");
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut rows = Vec::new();
    for table in tables {
        let query = format!("SELECT row_to_json(t)::TEXT FROM {table} t");
        for row in client.query(&query, &[]).await.unwrap() {
            rows.push(row.get(0));
        }
    }
    rows
}
