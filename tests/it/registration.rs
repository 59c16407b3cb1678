//! SPEC §9 against the real server: clients that register themselves (RFC 7591), their use at
//! every endpoint, loopback redirects on any port (RFC 8252), and each refusal.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

use crate::interactive::{
    answer_consent, authorize_url_at, log_in_at, pkce, query, Browser, USERS,
};
use crate::support::*;

/// The seed with the login users and open registration.
fn config(registration: &str) -> String {
    issuer_section("http://isogate.test") + SEED + USERS + registration
}

const OPEN: &str = r#"
[issuer.registration]
allowed_scopes = ["openid", "profile", "read"]
allowed_grant_types = ["authorization_code", "refresh_token", "client_credentials"]
"#;

/// POSTs `body` to `/connect/register` as JSON, with `bearer` as the initial access token.
async fn register_raw(isogate: &Isogate, body: String, bearer: Option<&str>) -> Reply {
    let mut req = Request::post(isogate.issuer_url("/connect/register"))
        .header("content-type", "application/json");
    if let Some(token) = bearer {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    send(req.body(Full::new(Bytes::from(body))).unwrap()).await
}

async fn register(isogate: &Isogate, metadata: Value) -> Reply {
    register_raw(isogate, metadata.to_string(), None).await
}

/// The `error` of a refusal with `status`.
fn refused(reply: &Reply, status: StatusCode) -> String {
    assert_eq!(reply.status, status, "{}", reply.text());
    reply.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_public_client_registers_and_signs_in_with_pkce_on_any_loopback_port() {
    let isogate = Isogate::start(&config(OPEN)).await;
    let discovery = get(&isogate.issuer_url("/.well-known/openid-configuration"))
        .await
        .json();
    assert_eq!(
        discovery["registration_endpoint"],
        "http://isogate.test/connect/register"
    );
    assert!(
        discovery
            .get("client_id_metadata_document_supported")
            .is_none(),
        "documents are off: {discovery}"
    );
    let reply = register(
        &isogate,
        json!({
            "redirect_uris": ["http://127.0.0.1/callback"],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "scope": "openid read",
            "client_name": "A command-line app",
            "logo_uri": "https://ignored.example/logo.png"
        }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let client = reply.json();
    let client_id = client["client_id"].as_str().unwrap().to_owned();
    assert!(
        client_id.starts_with("reg_") && client_id.len() == 26,
        "{client}"
    );
    assert!(client.get("client_secret").is_none(), "{client}");
    assert_eq!(client["token_endpoint_auth_method"], "none");
    assert_eq!(client["scope"], "openid read");
    assert_eq!(client["response_types"], json!(["code"]));
    assert_eq!(client["client_name"], "A command-line app");

    // The app listens on a port of its own: the registered loopback URI matches any port.
    let base = isogate.issuer_url("");
    let redirect = "http://127.0.0.1:49152/callback";
    let (verifier, challenge) = pkce();
    let request = [
        ("client_id", client_id.as_str()),
        ("response_type", "code"),
        ("redirect_uri", redirect),
        ("scope", "openid read offline_access"),
        ("resource", "urn:invoices"),
        ("state", "r1"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let mut browser = Browser::default();
    let page = browser.get(&authorize_url_at(&base, &request)).await;
    // A registered client always asks the user.
    let consent = log_in_at(&base, &mut browser, &page, "alice", "alice").await;
    assert_eq!(consent.status, StatusCode::OK, "{}", consent.text());
    assert!(consent.text().contains(&client_id), "{}", consent.text());
    let allowed = answer_consent(&isogate, &mut browser, &consent.text(), "allow", false).await;
    assert!(allowed.header("location").unwrap().starts_with(redirect));
    let code = query(&allowed)["code"].clone();
    let reply = post_form(
        &isogate.issuer_url("/connect/token"),
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &client_id),
            ("code", &code),
            ("redirect_uri", redirect),
            ("code_verifier", &verifier),
            ("resource", "urn:invoices"),
        ],
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let tokens = reply.json();
    let claims = verify(
        &isogate,
        tokens["access_token"].as_str().unwrap(),
        "urn:invoices",
    )
    .await;
    assert_eq!(claims["client_id"], client_id.as_str());
    assert_eq!(claims["scope"], "read offline_access");
    assert!(tokens["refresh_token"].is_string(), "{tokens}");

    // Only the port may differ; and PKCE is never optional for it.
    for (uri, pkce) in [
        ("http://127.0.0.1:49152/other", true),
        ("http://localhost:49152/callback", true),
        (redirect, false),
    ] {
        let mut asked: Vec<(&str, &str)> = request
            .iter()
            .copied()
            .filter(|(k, _)| *k != "redirect_uri" && (pkce || !k.starts_with("code_")))
            .collect();
        asked.push(("redirect_uri", uri));
        let reply = Browser::default()
            .get(&authorize_url_at(&base, &asked))
            .await;
        if pkce {
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{uri}");
            assert!(reply.text().contains("not registered"), "{}", reply.text());
        } else {
            assert_eq!(query(&reply)["error"], "invalid_request", "{uri}");
        }
    }

    // Any scope [issuer.registration] allows, also one it did not register (an MCP client
    // steps up so); never one the section does not allow.
    for (scope, allowed) in [("openid profile read", true), ("read write", false)] {
        let mut asked: Vec<(&str, &str)> = request
            .iter()
            .copied()
            .filter(|(k, _)| *k != "scope")
            .collect();
        asked.push(("scope", scope));
        let reply = Browser::default()
            .get(&authorize_url_at(&base, &asked))
            .await;
        if allowed {
            assert_eq!(
                reply.status,
                StatusCode::OK,
                "{scope}: {:?}",
                reply.header("location")
            );
            assert!(reply.text().contains("password"), "{scope}: the login page");
        } else {
            assert_eq!(query(&reply)["error"], "invalid_scope", "{scope}");
        }
    }
}

#[tokio::test]
async fn a_confidential_client_gets_a_secret_once_and_survives_a_restart() {
    let admin = "\n[admin]\nlisten = \"127.0.0.1:0\"\n";
    let isogate = Isogate::start(&config(&format!("{OPEN}{admin}"))).await;
    let reply = register(
        &isogate,
        json!({"grant_types": ["client_credentials"], "scope": "read"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let client = reply.json();
    let (id, secret) = (
        client["client_id"].as_str().unwrap().to_owned(),
        client["client_secret"].as_str().unwrap().to_owned(),
    );
    assert_eq!(client["token_endpoint_auth_method"], "client_secret_basic");
    assert_eq!(client["client_secret_expires_at"], 0);
    assert_eq!(client["response_types"], json!([]));
    let form = [
        ("grant_type", "client_credentials"),
        ("resource", "urn:products"),
    ];
    let url = isogate.issuer_url("/connect/token");
    let reply = post_form(&url, &form, Some((&id, &secret))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let wrong = post_form(&url, &form, Some((&id, "not-the-secret"))).await;
    assert_eq!(refused(&wrong, StatusCode::UNAUTHORIZED), "invalid_client");
    // Registered clients share one metrics label.
    let scrape = Scrape::of(&isogate).await;
    let labels = [
        ("grant_type", "client_credentials"),
        ("client_id", "registered"),
    ];
    assert_eq!(scrape.get("isogate_tokens_issued_total", &labels), 1.0);
    let series = scrape.series("isogate_tokens_issued_total");
    assert!(
        series.iter().all(|s| s.labels["client_id"] != id),
        "{series:?}"
    );

    let Isogate { server, dir, .. } = isogate;
    server.shutdown().await;
    let isogate = Isogate::start_existing(dir, "").await;
    let url = isogate.issuer_url("/connect/token");
    let reply = post_form(&url, &form, Some((&id, &secret))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

#[tokio::test]
async fn bad_metadata_is_refused_naming_what_is_wrong_and_nothing_is_stored() {
    let isogate = Isogate::start(&config(OPEN)).await;
    let public = |uris: Value| json!({"redirect_uris": uris, "token_endpoint_auth_method": "none", "scope": "read"});
    for (uri, says) in [
        ("http://app.example.com/cb", "loopback"),
        ("https://app.example.com/cb#frag", "fragment"),
        ("https://*.example.com/cb", "wildcard"),
        ("javascript:alert(1)", "private-use scheme"),
        ("/cb", "absolute"),
    ] {
        let reply = register(&isogate, public(json!([uri]))).await;
        assert_eq!(
            refused(&reply, StatusCode::BAD_REQUEST),
            "invalid_redirect_uri",
            "{uri}"
        );
        let description = reply.json()["error_description"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(description.contains(says), "{uri}: {description}");
    }
    let reply = register(&isogate, public(json!([]))).await;
    assert_eq!(
        refused(&reply, StatusCode::BAD_REQUEST),
        "invalid_redirect_uri"
    );
    let many: Vec<String> = (0..11).map(|i| format!("https://a.example/{i}")).collect();
    let reply = register(&isogate, public(json!(many))).await;
    assert_eq!(
        refused(&reply, StatusCode::BAD_REQUEST),
        "invalid_redirect_uri"
    );

    let cb = json!(["https://app.example.com/cb"]);
    for (metadata, says) in [
        (json!({"redirect_uris": cb, "scope": "write"}), "write"),
        (
            json!({"redirect_uris": cb, "grant_types": ["password"]}),
            "password",
        ),
        (
            json!({"redirect_uris": cb, "token_endpoint_auth_method": "client_secret_jwt"}),
            "client_secret_jwt",
        ),
        (
            json!({"grant_types": ["client_credentials"], "token_endpoint_auth_method": "none"}),
            "confidential",
        ),
        (
            json!({"redirect_uris": cb, "response_types": ["token"]}),
            "response_types",
        ),
        (
            json!({"redirect_uris": cb, "client_name": "x".repeat(201)}),
            "client_name",
        ),
        (
            json!({"redirect_uris": "https://app.example.com/cb"}),
            "metadata JSON",
        ),
    ] {
        let reply = register(&isogate, metadata.clone()).await;
        assert_eq!(
            refused(&reply, StatusCode::BAD_REQUEST),
            "invalid_client_metadata",
            "{metadata}"
        );
        let description = reply.json()["error_description"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(description.contains(says), "{metadata}: {description}");
    }
    let reply = register_raw(&isogate, "{not json".into(), None).await;
    assert_eq!(
        refused(&reply, StatusCode::BAD_REQUEST),
        "invalid_client_metadata"
    );
    let big = json!({"redirect_uris": cb, "client_name": "x".repeat(17 * 1024)}).to_string();
    let reply = register_raw(&isogate, big, None).await;
    assert_eq!(
        refused(&reply, StatusCode::BAD_REQUEST),
        "invalid_client_metadata"
    );
    let form = post_form(
        &isogate.issuer_url("/connect/register"),
        &[("a", "b")],
        None,
    )
    .await;
    assert_eq!(refused(&form, StatusCode::BAD_REQUEST), "invalid_request");
    let reply = get(&isogate.issuer_url("/connect/register")).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);

    // A client_id nobody registered, in the registered form, is just unknown.
    let reply = post_form(
        &isogate.issuer_url("/connect/token"),
        &[("grant_type", "client_credentials")],
        Some(("reg_AAAAAAAAAAAAAAAAAAAAAA", "x")),
    )
    .await;
    assert_eq!(refused(&reply, StatusCode::UNAUTHORIZED), "invalid_client");
}

#[tokio::test]
async fn an_initial_access_token_closes_registration_and_each_address_is_rate_limited() {
    let closed = format!("{OPEN}initial_access_token = \"{SECRET_HASH}\"\n");
    let isogate = Isogate::start(&config(&closed)).await;
    let metadata = json!({"grant_types": ["client_credentials"], "scope": "read"}).to_string();
    for bearer in [None, Some("wrong")] {
        let reply = register_raw(&isogate, metadata.clone(), bearer).await;
        assert_eq!(refused(&reply, StatusCode::UNAUTHORIZED), "invalid_token");
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Bearer error=\"invalid_token\"")
        );
    }
    for _ in 0..20 {
        let reply = register_raw(&isogate, metadata.clone(), Some(SECRET)).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    }
    let reply = register_raw(&isogate, metadata.clone(), Some(SECRET)).await;
    assert_eq!(
        refused(&reply, StatusCode::TOO_MANY_REQUESTS),
        "temporarily_unavailable"
    );
    assert_eq!(reply.header("retry-after"), Some("60"));
    // A minute later, the address may register again.
    isogate.clock.advance(std::time::Duration::from_secs(60));
    let reply = register_raw(&isogate, metadata, Some(SECRET)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
}

#[tokio::test]
async fn without_a_registration_section_there_is_no_registration() {
    let isogate = Isogate::start(&config("")).await;
    let reply = register(&isogate, json!({"scope": "read"})).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let discovery = get(&isogate.issuer_url("/.well-known/openid-configuration"))
        .await
        .json();
    assert!(discovery.get("registration_endpoint").is_none());
}

#[tokio::test]
async fn a_client_registered_at_one_instance_is_known_to_the_other() {
    let upstream = crate::servers::Upstream::start().await;
    let Some((a, b)) = crate::fleet::fleet_with(&upstream, OPEN).await else {
        return;
    };
    let reply = register(
        &a,
        json!({"grant_types": ["client_credentials"], "scope": "read"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let client = reply.json();
    let (id, secret) = (
        client["client_id"].as_str().unwrap(),
        client["client_secret"].as_str().unwrap(),
    );
    let reply = post_form(
        &b.issuer_url("/connect/token"),
        &[
            ("grant_type", "client_credentials"),
            ("resource", "urn:invoices"),
        ],
        Some((id, secret)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

/// A client that registers its public keys (RFC 7591 `jwks`) authenticates with private_key_jwt
/// (RFC 7523) and gets no secret; one that registers a `jwks_uri` inside the network is never
/// fetched from there (the metadata documents' fetcher, SPEC §9).
#[tokio::test]
async fn a_client_registers_its_keys_and_authenticates_with_private_key_jwt() {
    use crate::private_key_jwt::{claims, Key, ASSERTION_TYPE};
    let isogate = Isogate::start(&config(OPEN)).await;
    let key = Key::new("reg-1", isogate::jwt::Alg::ES256);
    let jwk = serde_json::to_value(&key.key.jwk).unwrap();
    let reply = register(
        &isogate,
        json!({
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [jwk]},
            "scope": "read",
        }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let client = reply.json();
    assert!(client.get("client_secret").is_none(), "{client}");
    assert_eq!(client["token_endpoint_auth_method"], "private_key_jwt");
    assert_eq!(client["jwks"]["keys"][0]["kid"], "reg-1", "{client}");
    let client_id = client["client_id"].as_str().unwrap().to_owned();

    let ask = |assertion: Option<String>| {
        let url = isogate.issuer_url("/connect/token");
        let client_id = client_id.clone();
        async move {
            let mut form = vec![
                ("grant_type", "client_credentials".to_owned()),
                ("scope", "read".to_owned()),
                ("resource", "urn:products".to_owned()),
            ];
            match assertion {
                Some(a) => {
                    form.push(("client_assertion_type", ASSERTION_TYPE.to_owned()));
                    form.push(("client_assertion", a));
                }
                None => form.push(("client_id", client_id)),
            }
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            post_form(&url, &form, None).await
        }
    };
    let assertion = key.sign(&claims(&client_id));
    let reply = ask(Some(assertion.clone())).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let (_, token) = decode_parts(reply.json()["access_token"].as_str().unwrap());
    assert_eq!(token["client_id"], client_id.as_str());
    for (reply, what) in [
        (ask(Some(assertion)).await, "the same jti"),
        (ask(None).await, "no assertion"),
        (
            ask(Some(
                Key::new("reg-1", isogate::jwt::Alg::ES256).sign(&claims(&client_id)),
            ))
            .await,
            "another key",
        ),
    ] {
        assert_eq!(
            refused(&reply, StatusCode::BAD_REQUEST),
            "invalid_client",
            "{what}"
        );
    }

    for (metadata, says) in [
        (
            json!({"grant_types": ["client_credentials"], "token_endpoint_auth_method": "private_key_jwt"}),
            "needs one of jwks and jwks_uri",
        ),
        (
            json!({"grant_types": ["client_credentials"], "token_endpoint_auth_method": "private_key_jwt",
                   "jwks": {"keys": []}}),
            "jwks holds no key",
        ),
        (
            json!({"grant_types": ["client_credentials"], "token_endpoint_auth_method": "private_key_jwt",
                   "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}}),
            "jwks",
        ),
        (
            json!({"grant_types": ["client_credentials"], "token_endpoint_auth_method": "private_key_jwt",
                   "jwks_uri": "http://keys.example/jwks"}),
            "jwks_uri must be an https URL",
        ),
        (
            json!({"redirect_uris": ["https://app.example.com/cb"], "jwks_uri": "https://keys.example/jwks"}),
            "go with token_endpoint_auth_method private_key_jwt",
        ),
    ] {
        let reply = register(&isogate, metadata.clone()).await;
        assert_eq!(
            refused(&reply, StatusCode::BAD_REQUEST),
            "invalid_client_metadata",
            "{metadata}"
        );
        let description = reply.json()["error_description"].to_string();
        assert!(description.contains(says), "{metadata}: {description}");
    }

    // A jwks_uri on this machine: refused when the client authenticates, and nothing is
    // fetched (documents are off here, so private addresses are too).
    let pki = crate::servers::TestPki::new();
    let keys = crate::servers::DocumentServer::start(&pki).await;
    keys.set(
        "/jwks",
        crate::servers::Served::json(
            &json!({"keys": [serde_json::to_value(&key.key.jwk).unwrap()]}),
        ),
    );
    let reply = register(
        &isogate,
        json!({
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks_uri": format!("https://127.0.0.1:{}/jwks", keys.addr.port()),
        }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let inside = reply.json()["client_id"].as_str().unwrap().to_owned();
    let reply = ask(Some(key.sign(&claims(&inside)))).await;
    assert_eq!(refused(&reply, StatusCode::BAD_REQUEST), "invalid_client");
    assert!(
        reply.text().contains("could not be fetched"),
        "{}",
        reply.text()
    );
    assert_eq!(
        keys.fetches("/jwks"),
        0,
        "nothing was fetched from 127.0.0.1"
    );
}
