//! Client ID metadata documents (SPEC §9) against the real binary: documents served over https
//! by the test (an rcgen CA, trusted through `SSL_CERT_FILE`), a client that signs in with its
//! document's URL as `client_id`, every refusal with the reason a developer sees, the fetcher
//! that never reaches inside the network unless allowed, caching, and private_key_jwt with the
//! document's `jwks`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::StatusCode;
use serde_json::{json, Value};

use crate::interactive::{authorize_url_at, hidden, log_in_at, pkce, query, Browser, USERS};
use crate::private_key_jwt::{claims, Key, ASSERTION_TYPE};
use crate::servers::{DocumentServer, Served, TestPki};
use crate::support::*;

const ISSUER: &str = "http://isogate.test";

/// `[issuer.registration]` with documents on; `private` lets them come from 127.0.0.1.
fn registration(private: bool) -> String {
    format!(
        r#"
[issuer.registration]
allowed_scopes = ["openid", "read"]
allowed_grant_types = ["authorization_code", "refresh_token", "client_credentials"]
client_id_metadata_documents = true
allow_private_addresses = {private}
"#
    )
}

/// `isogate serve` of the seed with users and `registration`, trusting `pki`'s CA; once its
/// issuer listens.
fn serve(dir: &Path, pki: &TestPki, registration: &str) -> (Running, SocketAddr) {
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let path = dir.join("isogate.toml");
    std::fs::write(&path, issuer_section(ISSUER) + SEED + USERS + registration).unwrap();
    let mut running = Running::spawn_with_env(
        env!("CARGO_BIN_EXE_isogate"),
        &["serve", "--config", path.to_str().unwrap()],
        &[
            ("SSL_CERT_FILE", ca.to_str().unwrap()),
            ("SSL_CERT_DIR", dir.to_str().unwrap()),
        ],
    );
    let issuer = listening_addr(&running.wait_for("listening role=issuer")).unwrap();
    (running, issuer)
}

/// A public client's document at `url`, redirecting to a loopback callback.
fn public_document(url: &str) -> Value {
    json!({
        "client_id": url,
        "client_name": "Notes app",
        "redirect_uris": ["http://127.0.0.1/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_method": "none",
    })
}

/// A code redemption by `client_id` that can only fail: the client is checked first, so a
/// document that cannot be used shows its reason here.
async fn redeem_as(issuer: SocketAddr, client_id: &str) -> Reply {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", "not-a-code"),
        ("redirect_uri", "http://127.0.0.1/callback"),
        ("code_verifier", &"v".repeat(43)),
        ("client_id", client_id),
    ];
    post_form(&format!("http://{issuer}/connect/token"), &form, None).await
}

/// `invalid_client` whose description holds `needle`.
fn assert_refused(reply: &Reply, needle: &str, what: &str) {
    assert_eq!(
        reply.json()["error"],
        "invalid_client",
        "{what}: {}",
        reply.text()
    );
    let description = reply.json()["error_description"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        description.contains(needle),
        "{what}: {description:?} lacks {needle:?}"
    );
}

#[tokio::test]
async fn a_client_named_by_its_document_signs_in_and_redeems_its_code() {
    let pki = TestPki::new();
    let documents = DocumentServer::start(&pki).await;
    let dir = tempfile::tempdir().unwrap();
    let (_running, issuer) = serve(dir.path(), &pki, &registration(true));
    let base = format!("http://{issuer}");
    let discovery = get(&format!("{base}/.well-known/oauth-authorization-server"))
        .await
        .json();
    assert_eq!(discovery["client_id_metadata_document_supported"], true);

    let client_id = documents.url("/notes/client.json");
    documents.set(
        "/notes/client.json",
        Served::json(&public_document(&client_id)),
    );
    let (verifier, challenge) = pkce();
    let redirect = "http://127.0.0.1:53124/callback";
    let params = [
        ("client_id", client_id.as_str()),
        ("response_type", "code"),
        ("redirect_uri", redirect),
        ("scope", "openid read"),
        ("resource", "urn:products"),
        ("state", "s1"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let mut browser = Browser::default();
    let login = browser.get(&authorize_url_at(&base, &params)).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text());
    assert!(
        login.text().contains("<strong>localhost</strong>"),
        "the login page names the document's host: {}",
        login.text()
    );
    let consent = log_in_at(&base, &mut browser, &login, "alice", "alice").await;
    assert_eq!(consent.status, StatusCode::OK, "{}", consent.text());
    let html = consent.text();
    assert!(
        html.contains("<strong>localhost</strong> asks for:"),
        "the consent page shows the host: {html}"
    );
    let form = [
        ("request", hidden(&html, "request")),
        ("csrf", hidden(&html, "csrf")),
        ("decision", "allow".to_owned()),
    ];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let done = browser
        .post(&format!("{base}/connect/authorize/consent"), &form)
        .await;
    let q = query(&done);
    assert!(
        done.header("location").unwrap().starts_with(redirect),
        "{q:?}"
    );
    let code = q.get("code").unwrap_or_else(|| panic!("no code: {q:?}"));

    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect),
        ("code_verifier", &verifier),
        ("client_id", &client_id),
    ];
    let tokens = post_form(&format!("{base}/connect/token"), &form, None).await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.text());
    let (_, claims) = decode_parts(tokens.json()["access_token"].as_str().unwrap());
    assert_eq!(claims["aud"], "urn:products", "{claims}");
    assert_eq!(claims["client_id"], client_id.as_str(), "{claims}");
    assert_eq!(
        documents.fetches("/notes/client.json"),
        1,
        "a document without caching headers is kept (5 minutes)"
    );

    // `Cache-Control: no-store`: fetched for each use.
    let fresh = documents.url("/fresh/client.json");
    let mut served = Served::json(&public_document(&fresh));
    served.headers.push(("cache-control", "no-store".into()));
    documents.set("/fresh/client.json", served);
    for _ in 0..2 {
        let reply = redeem_as(issuer, &fresh).await;
        assert_eq!(reply.json()["error"], "invalid_grant", "{}", reply.text());
    }
    assert_eq!(documents.fetches("/fresh/client.json"), 2);

    // A redirect the document does not list: a page, never a redirect.
    let mut params = params;
    params[2].1 = "https://elsewhere.example/cb";
    let page = Browser::default()
        .get(&authorize_url_at(&base, &params))
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.header("location").is_none());
    assert!(
        page.text().contains("has not registered"),
        "{}",
        page.text()
    );
}

#[tokio::test]
async fn documents_that_cannot_be_used_are_refused_with_the_reason() {
    let pki = TestPki::new();
    let documents = DocumentServer::start(&pki).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut running, issuer) = serve(dir.path(), &pki, &registration(true));

    let with = |path: &str, edit: &dyn Fn(&mut Value)| {
        let mut doc = public_document(&documents.url(path));
        edit(&mut doc);
        Served::json(&doc)
    };
    let status = |code: StatusCode, headers: Vec<(&'static str, String)>| Served {
        status: code,
        headers,
        body: b"{}".to_vec(),
        delay: Duration::ZERO,
    };
    let cases: Vec<(&str, Served, &str)> = vec![
        (
            "/other-id.json",
            with("/other-id.json", &|d| {
                d["client_id"] = json!("https://attacker.example/c.json")
            }),
            "is not the URL it was fetched from",
        ),
        (
            "/no-id.json",
            with("/no-id.json", &|d| {
                d.as_object_mut().unwrap().remove("client_id");
            }),
            "it has no client_id",
        ),
        (
            "/secret.json",
            with("/secret.json", &|d| d["client_secret"] = json!("s3cret")),
            "holds a client_secret",
        ),
        (
            "/basic.json",
            with("/basic.json", &|d| {
                d["token_endpoint_auth_method"] = json!("client_secret_basic")
            }),
            "use none or private_key_jwt",
        ),
        (
            "/bad-redirect.json",
            with("/bad-redirect.json", &|d| {
                d["redirect_uris"] = json!(["http://app.example.com/cb"])
            }),
            "http is allowed only to a loopback address",
        ),
        (
            "/no-redirect.json",
            with("/no-redirect.json", &|d| d["redirect_uris"] = json!([])),
            "needs at least one redirect URI",
        ),
        (
            "/public-credentials.json",
            with("/public-credentials.json", &|d| {
                d["grant_types"] = json!(["client_credentials"])
            }),
            "client_credentials needs private_key_jwt",
        ),
        (
            "/huge.json",
            with("/huge.json", &|d| {
                d["client_name"] = json!("x".repeat(70 * 1024))
            }),
            "length limit exceeded",
        ),
        (
            "/moved.json",
            status(
                StatusCode::FOUND,
                vec![("location", documents.url("/notes/client.json"))],
            ),
            "redirects are not followed",
        ),
        (
            "/gone.json",
            status(StatusCode::NOT_FOUND, vec![]),
            "status 404",
        ),
        (
            "/html.json",
            Served {
                body: b"<html>hi</html>".to_vec(),
                ..status(StatusCode::OK, vec![])
            },
            "not client metadata JSON",
        ),
    ];
    for (path, served, needle) in cases {
        documents.set(path, served);
        let reply = redeem_as(issuer, &documents.url(path)).await;
        assert_refused(&reply, needle, path);
        assert_eq!(documents.fetches(path), 1, "{path}");
    }

    // A refusal is kept for 30 s: mending the document does not make isogate fetch at once.
    documents.set(
        "/gone.json",
        Served::json(&public_document(&documents.url("/gone.json"))),
    );
    assert_refused(
        &redeem_as(issuer, &documents.url("/gone.json")).await,
        "status 404",
        "kept",
    );
    assert_eq!(documents.fetches("/gone.json"), 1);

    // Slower than 5 s: given up.
    let mut slow = Served::json(&public_document(&documents.url("/slow.json")));
    slow.delay = Duration::from_secs(8);
    documents.set("/slow.json", slow);
    let started = std::time::Instant::now();
    let reply = redeem_as(issuer, &documents.url("/slow.json")).await;
    assert_refused(&reply, "no answer within 5s", "slow");
    assert!(
        started.elapsed() < Duration::from_secs(7),
        "{:?}",
        started.elapsed()
    );

    // URLs that cannot name a document are refused before any fetch.
    let port = documents.addr.port();
    for (url, needle) in [
        (format!("https://localhost:{port}/"), "needs a path"),
        (
            format!("https://localhost:{port}/a/../c.json"),
            "normal form",
        ),
        (format!("https://localhost:{port}/c.json#x"), "fragment"),
    ] {
        assert_refused(&redeem_as(issuer, &url).await, needle, &url);
    }
    // An http client_id is no document: an unknown client.
    let plain = format!("http://localhost:{port}/notes/client.json");
    assert_refused(
        &redeem_as(issuer, &plain).await,
        "authentication failed",
        "http",
    );

    // At /connect/authorize the same refusal is a page, and the log says why.
    let url = documents.url("/other-id.json");
    let page = Browser::default()
        .get(&authorize_url_at(
            &format!("http://{issuer}"),
            &[("client_id", &url), ("response_type", "code")],
        ))
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.header("location").is_none());
    assert!(page.text().contains("metadata document"), "{}", page.text());
    let logged = running.wait_for("client metadata document refused");
    assert!(logged.contains("client_id=https://localhost:"), "{logged}");
    drop(running);
}

#[tokio::test]
async fn documents_are_never_fetched_from_inside_the_network_unless_allowed() {
    let pki = TestPki::new();
    let documents = DocumentServer::start(&pki).await;
    let dir = tempfile::tempdir().unwrap();
    let port = documents.addr.port();
    // A client of the file named like a document: the file's wins, and nothing is fetched.
    let named = format!("https://localhost:{port}/file-client.json");
    let file_client = format!(
        "\n[[clients]]\nclient_id = \"{named}\"\nsecrets = [\"{SECRET_HASH}\"]\n\
         allowed_grant_types = [\"client_credentials\"]\nallowed_scopes = [\"read\"]\n"
    );
    let (_running, issuer) = serve(dir.path(), &pki, &(registration(false) + &file_client));
    let form = [
        ("grant_type", "client_credentials"),
        ("resource", "urn:products"),
    ];
    let url = format!("http://{issuer}/connect/token");
    let reply = post_form(&url, &form, Some((&named, SECRET))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(documents.fetches("/file-client.json"), 0);

    documents.set(
        "/notes/client.json",
        Served::json(&public_document(&documents.url("/notes/client.json"))),
    );
    for (url, needle) in [
        (documents.url("/notes/client.json"), "a loopback address"),
        (
            format!("https://127.0.0.1:{port}/notes/client.json"),
            "127.0.0.1 is a loopback address",
        ),
        (
            format!("https://[::1]:{port}/notes/client.json"),
            "::1 is a loopback address",
        ),
        (
            "https://169.254.169.254/latest/meta-data".to_owned(),
            "169.254.169.254 is a link-local address",
        ),
        (
            "https://10.0.0.1/client.json".to_owned(),
            "10.0.0.1 is a private address",
        ),
        (
            "https://[::ffff:c0a8:1]/client.json".to_owned(),
            "::ffff:192.168.0.1 is a private address",
        ),
    ] {
        let reply = redeem_as(issuer, &url).await;
        assert_refused(&reply, needle, &url);
    }
    assert_eq!(
        documents.fetches("/notes/client.json"),
        0,
        "nothing reached the server inside the network"
    );
}

#[tokio::test]
async fn a_document_client_authenticates_with_private_key_jwt_from_its_jwks() {
    let pki = TestPki::new();
    let documents = DocumentServer::start(&pki).await;
    let dir = tempfile::tempdir().unwrap();
    let (_running, issuer) = serve(dir.path(), &pki, &registration(true));
    let key = Key::new("doc-1", isogate::jwt::Alg::ES256);
    let client_id = documents.url("/service/client.json");
    documents.set(
        "/service/client.json",
        Served::json(&json!({
            "client_id": client_id,
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [serde_json::to_value(&key.key.jwk).unwrap()]},
        })),
    );
    let assertion = key.sign(&claims(&client_id));
    let ask = |assertion: String| {
        let url = format!("http://{issuer}/connect/token");
        async move {
            let form = [
                ("grant_type", "client_credentials"),
                ("scope", "read"),
                ("resource", "urn:products"),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &assertion),
            ];
            post_form(&url, &form, None).await
        }
    };
    let reply = ask(assertion.clone()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let (_, token) = decode_parts(reply.json()["access_token"].as_str().unwrap());
    assert_eq!(token["client_id"], client_id.as_str());
    assert_eq!(token["aud"], "urn:products");
    assert_refused(&ask(assertion).await, "used before", "the same jti");
    let stranger = Key::new("doc-1", isogate::jwt::Alg::ES256);
    assert_refused(
        &ask(stranger.sign(&claims(&client_id))).await,
        "client assertion",
        "another key",
    );

    // Keys at the document's jwks_uri, fetched with the same guards.
    let remote = documents.url("/remote/client.json");
    documents.set(
        "/remote/client.json",
        Served::json(&json!({
            "client_id": remote,
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks_uri": documents.url("/remote/jwks.json"),
        })),
    );
    documents.set(
        "/remote/jwks.json",
        Served::json(&json!({"keys": [serde_json::to_value(&key.key.jwk).unwrap()]})),
    );
    let reply = ask(key.sign(&claims(&remote))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(documents.fetches("/remote/jwks.json"), 1);
}

/// A document kept while private addresses were allowed is fetched again, and refused, as soon
/// as a reload turns `allow_private_addresses` off: the cache never outlives the rule.
#[tokio::test]
async fn turning_private_addresses_off_applies_to_kept_documents_at_once() {
    let pki = TestPki::new();
    let documents = DocumentServer::start(&pki).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut running, issuer) = serve(dir.path(), &pki, &registration(true));
    let url = documents.url("/notes/client.json");
    let mut served = Served::json(&public_document(&url));
    served
        .headers
        .push(("cache-control", "max-age=3600".into()));
    documents.set("/notes/client.json", served);
    let reply = redeem_as(issuer, &url).await;
    assert_eq!(reply.json()["error"], "invalid_grant", "{}", reply.text());
    let path = dir.path().join("isogate.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let closed = text.replace(
        "allow_private_addresses = true",
        "allow_private_addresses = false",
    );
    assert_ne!(text, closed);
    write_atomically(&path, &closed);
    running.wait_for("configuration reloaded");
    assert_refused(
        &redeem_as(issuer, &url).await,
        "a loopback address",
        "after the reload",
    );
    assert_eq!(documents.fetches("/notes/client.json"), 1);
}
