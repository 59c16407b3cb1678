//! SPEC §6 against the real server: authorize with login and consent pages driven over HTTP,
//! codes, refresh tokens per resource, ID tokens, userinfo, introspection and revocation,
//! and grants that survive a restart.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::Value;

use crate::support::*;

pub const USERS: &str = include_str!("../fixtures/users.toml");
const WEB_CALLBACK: &str = "http://127.0.0.1:1/callback";
const SPA_CALLBACK: &str = "http://127.0.0.1:1/spa";

async fn start() -> Isogate {
    Isogate::start(&(issuer_section("http://isogate.test") + SEED + USERS)).await
}

/// A browser without redirects: keeps cookies, shows each answer.
#[derive(Default)]
pub struct Browser {
    pub cookies: HashMap<String, String>,
}

impl Browser {
    async fn send(&mut self, req: http::request::Builder, body: String) -> Reply {
        let cookie: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let req = if cookie.is_empty() {
            req
        } else {
            req.header("cookie", cookie.join("; "))
        };
        let reply = send(req.body(Full::new(Bytes::from(body))).unwrap()).await;
        for set in reply.headers.get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let (pair, _) = set.split_once(';').unwrap_or((set, ""));
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.insert(name.into(), value.into());
        }
        reply
    }

    pub async fn get(&mut self, url: &str) -> Reply {
        self.send(Request::get(url), String::new()).await
    }

    pub async fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Reply {
        let req = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header("content-type", "application/x-www-form-urlencoded");
        self.send(req, form_body(form)).await
    }
}

/// The value of hidden input `name` in a page.
pub fn hidden(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {page}"))
        + marker.len();
    page[start..].split('"').next().unwrap().to_owned()
}

/// The query parameters of a redirect.
pub fn query(reply: &Reply) -> HashMap<String, String> {
    let location = reply
        .header("location")
        .unwrap_or_else(|| panic!("no redirect ({}): {}", reply.status, reply.text()));
    url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// A PKCE verifier and its S256 challenge.
pub fn pkce() -> (String, String) {
    let verifier = URL_SAFE_NO_PAD.encode(rand_bytes());
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    (verifier, URL_SAFE_NO_PAD.encode(digest.as_ref()))
}

fn rand_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    bytes
}

fn authorize_url(isogate: &Isogate, params: &[(&str, &str)]) -> String {
    authorize_url_at(&isogate.issuer_url(""), params)
}

/// The authorize URL of the issuer listening at `base` (`http://ip:port`).
pub fn authorize_url_at(base: &str, params: &[(&str, &str)]) -> String {
    format!("{base}/connect/authorize?{}", form_body(params))
}

/// The seed's authorize request: both resources, `offline_access`, OpenID, PKCE.
pub fn seed_request(challenge: &str) -> Vec<(&str, &str)> {
    vec![
        ("client_id", "web"),
        ("response_type", "code"),
        ("redirect_uri", WEB_CALLBACK),
        ("scope", "openid profile read offline_access"),
        ("resource", "urn:invoices"),
        ("resource", "urn:products"),
        ("state", "st-1"),
        ("nonce", "n-1"),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ]
}

/// Fills in the login page `page` and returns the answer.
async fn log_in(
    isogate: &Isogate,
    browser: &mut Browser,
    page: &Reply,
    user: &str,
    password: &str,
) -> Reply {
    log_in_at(&isogate.issuer_url(""), browser, page, user, password).await
}

/// [`log_in`] at the issuer listening at `base`.
pub async fn log_in_at(
    base: &str,
    browser: &mut Browser,
    page: &Reply,
    user: &str,
    password: &str,
) -> Reply {
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    let html = page.text();
    let (request, csrf) = (hidden(&html, "request"), hidden(&html, "csrf"));
    browser
        .post(
            &format!("{base}/connect/authorize/login"),
            &[
                ("request", &request),
                ("csrf", &csrf),
                ("username", user),
                ("password", password),
            ],
        )
        .await
}

/// Answers the consent page `html` (allow or deny, remembered or not) and returns the
/// redirect.
pub async fn answer_consent(
    isogate: &Isogate,
    browser: &mut Browser,
    html: &str,
    decision: &str,
    remember: bool,
) -> Reply {
    let (request, csrf) = (hidden(html, "request"), hidden(html, "csrf"));
    let mut form = vec![
        ("request", request.as_str()),
        ("csrf", csrf.as_str()),
        ("decision", decision),
    ];
    if remember {
        form.push(("remember", "yes"));
    }
    browser
        .post(&isogate.issuer_url("/connect/authorize/consent"), &form)
        .await
}

/// Authorizes `params` as alice and returns the code (asserting `state` and `iss`).
async fn code_for(isogate: &Isogate, params: &[(&str, &str)]) -> String {
    code_at(&isogate.issuer_url(""), params).await
}

/// [`code_for`] at the issuer listening at `base`.
async fn code_at(base: &str, params: &[(&str, &str)]) -> String {
    let mut browser = Browser::default();
    let page = browser.get(&authorize_url_at(base, params)).await;
    let done = log_in_at(base, &mut browser, &page, "alice", "alice").await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.text());
    let q = query(&done);
    assert!(q.contains_key("iss"), "{q:?}");
    q.get("code")
        .cloned()
        .unwrap_or_else(|| panic!("no code: {q:?}"))
}

pub async fn web_token(isogate: &Isogate, form: &[(&str, &str)]) -> Reply {
    post_form(
        &isogate.issuer_url("/connect/token"),
        form,
        Some(("web", SECRET)),
    )
    .await
}

/// Signs alice in with the seed request and redeems the code for `resource`: the token
/// response.
async fn tokens_for(isogate: &Isogate, resource: &str) -> Value {
    let (verifier, challenge) = pkce();
    let code = code_for(isogate, &seed_request(&challenge)).await;
    let reply = redeem(isogate, &code, &verifier, Some(resource)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.json()
}

/// Uses refresh token `token` as the web client, with `extra` parameters.
pub async fn refresh(isogate: &Isogate, token: &str, extra: &[(&str, &str)]) -> Reply {
    let mut form = vec![("grant_type", "refresh_token"), ("refresh_token", token)];
    form.extend_from_slice(extra);
    web_token(isogate, &form).await
}

/// Redeems `code` as the web client, with its PKCE verifier and at most one resource.
pub async fn redeem(
    isogate: &Isogate,
    code: &str,
    verifier: &str,
    resource: Option<&str>,
) -> Reply {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", WEB_CALLBACK),
        ("code_verifier", verifier),
    ];
    form.extend(resource.map(|r| ("resource", r)));
    web_token(isogate, &form).await
}

pub fn error_of(reply: &Reply) -> String {
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    reply.json()["error"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_seed_journey_two_resources_one_login_two_narrow_tokens() {
    let isogate = start().await;
    let (verifier, challenge) = pkce();
    let mut browser = Browser::default();
    let page = browser
        .get(&authorize_url(&isogate, &seed_request(&challenge)))
        .await;
    assert!(
        page.text().contains("<form method=\"post\""),
        "{}",
        page.text()
    );
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let done = log_in(&isogate, &mut browser, &page, "alice", "alice").await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    let session = done
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|c| c.starts_with("isogate_session="))
        .expect("a session cookie");
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Lax"),
        "{session}"
    );
    assert!(!session.contains("Secure"), "no TLS here: {session}");
    let q = query(&done);
    assert!(done.header("location").unwrap().starts_with(WEB_CALLBACK));
    assert_eq!(
        (q["state"].as_str(), q["iss"].as_str()),
        ("st-1", "http://isogate.test")
    );

    // The code, for invoices alone.
    let reply = web_token(
        &isogate,
        &[
            ("grant_type", "authorization_code"),
            ("code", &q["code"]),
            ("redirect_uri", WEB_CALLBACK),
            ("code_verifier", &verifier),
            ("resource", "urn:invoices"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let first = reply.json();
    let claims = verify(
        &isogate,
        first["access_token"].as_str().unwrap(),
        "urn:invoices",
    )
    .await;
    assert_eq!(claims["aud"], "urn:invoices");
    assert_eq!(claims["sub"], "818727");
    assert_eq!(claims["client_id"], "web");
    assert_eq!(claims["scope"], "read offline_access");
    assert_eq!(first["scope"], "read offline_access");

    // The ID token: RS256, the nonce, at_hash, the profile claims.
    let id_token = first["id_token"].as_str().expect("an id_token");
    let (header, id) = decode_parts(id_token);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(id["aud"], "web");
    assert_eq!(id["nonce"], "n-1");
    assert_eq!(id["name"], "Alice Smith");
    assert_eq!(id["email"], "alice@example.com");
    let hash = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        first["access_token"].as_str().unwrap().as_bytes(),
    );
    assert_eq!(id["at_hash"], URL_SAFE_NO_PAD.encode(&hash.as_ref()[..16]));

    // The refresh token, for products alone.
    let first_refresh = first["refresh_token"].as_str().expect("a refresh token");
    let second = refresh(&isogate, first_refresh, &[("resource", "urn:products")]).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text());
    let second = second.json();
    let claims = verify(
        &isogate,
        second["access_token"].as_str().unwrap(),
        "urn:products",
    )
    .await;
    assert_eq!(claims["aud"], "urn:products");
    assert_eq!(claims["scope"], "read offline_access");
    let rotated = second["refresh_token"]
        .as_str()
        .expect("a rotated refresh token");
    assert_ne!(rotated, first_refresh);

    // A resource the user never granted.
    let reply = refresh(&isogate, rotated, &[("resource", "urn:payments")]).await;
    assert_eq!(error_of(&reply), "invalid_target");
    // Widening the scopes is refused; narrowing is fine (and the token is still good).
    let reply = refresh(&isogate, rotated, &[("scope", "read write")]).await;
    assert_eq!(error_of(&reply), "invalid_scope");
    let narrowed = refresh(
        &isogate,
        rotated,
        &[("resource", "urn:invoices"), ("scope", "read")],
    )
    .await;
    assert_eq!(narrowed.status, StatusCode::OK, "{}", narrowed.text());
    assert_eq!(narrowed.json()["scope"], "read");
}

#[tokio::test]
async fn userinfo_answers_for_a_token_with_openid_and_not_for_an_api_token() {
    let isogate = start().await;
    let (verifier, challenge) = pkce();
    let code = code_for(&isogate, &seed_request(&challenge)).await;
    // No resource: rule 4 within the authorized resources (invoices is isolated) — products,
    // with the identity scopes kept.
    let reply = redeem(&isogate, &code, &verifier, None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let tokens = reply.json();
    let access = tokens["access_token"].as_str().unwrap();
    let (_, claims) = decode_parts(access);
    assert_eq!(claims["aud"], "urn:products");
    assert_eq!(claims["scope"], "openid profile read offline_access");

    let userinfo = |token: String| {
        let url = isogate.issuer_url("/connect/userinfo");
        async move {
            send(
                Request::get(url)
                    .header("authorization", format!("Bearer {token}"))
                    .body(Full::default())
                    .unwrap(),
            )
            .await
        }
    };
    let reply = userinfo(access.to_owned()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let info = reply.json();
    assert_eq!(info["sub"], "818727");
    assert_eq!(info["name"], "Alice Smith");
    assert_eq!(info["email"], "alice@example.com");

    // A token minted for one API carries no identity scope (SPEC §3 rule 5).
    let api = refresh(
        &isogate,
        tokens["refresh_token"].as_str().unwrap(),
        &[("resource", "urn:invoices")],
    )
    .await
    .json();
    let reply = userinfo(api["access_token"].as_str().unwrap().to_owned()).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(reply
        .header("www-authenticate")
        .unwrap()
        .contains("insufficient_scope"));
    let reply = userinfo("not-a-token".into()).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply
        .header("www-authenticate")
        .unwrap()
        .contains("invalid_token"));
}

#[tokio::test]
async fn pkce_is_required_s256_only_and_checked_at_redemption() {
    let isogate = start().await;
    let mut browser = Browser::default();
    let base = [
        ("client_id", "web"),
        ("response_type", "code"),
        ("redirect_uri", WEB_CALLBACK),
        ("scope", "read"),
        ("state", "s"),
    ];
    // No challenge at all.
    let reply = browser.get(&authorize_url(&isogate, &base)).await;
    assert_eq!(reply.status, StatusCode::FOUND);
    let q = query(&reply);
    assert_eq!(q["error"], "invalid_request");
    assert!(q["error_description"].contains("PKCE"));
    assert_eq!(
        (q["state"].as_str(), q["iss"].as_str()),
        ("s", "http://isogate.test")
    );
    // plain, never.
    let (verifier, challenge) = pkce();
    let mut plain = base.to_vec();
    plain.extend([
        ("code_challenge", verifier.as_str()),
        ("code_challenge_method", "plain"),
    ]);
    let q = query(&browser.get(&authorize_url(&isogate, &plain)).await);
    assert_eq!(q["error"], "invalid_request");
    assert!(q["error_description"].contains("plain"), "{q:?}");

    // A wrong or missing verifier at the token endpoint; the code survives both.
    let mut s256 = base.to_vec();
    s256.extend([
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ]);
    let code = code_for(&isogate, &s256).await;
    let (other, _) = pkce();
    for verifier in [Some(other.as_str()), None] {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", WEB_CALLBACK),
        ];
        form.extend(verifier.map(|v| ("code_verifier", v)));
        assert_eq!(error_of(&web_token(&isogate, &form).await), "invalid_grant");
    }
    let reply = redeem(&isogate, &code, &verifier, None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

#[tokio::test]
async fn unknown_clients_and_unregistered_redirects_get_a_page_never_a_redirect() {
    let isogate = start().await;
    let (_, challenge) = pkce();
    let mut browser = Browser::default();
    for (client, redirect) in [
        ("nobody", WEB_CALLBACK),
        ("web", "http://127.0.0.1:1/callback/evil"),
        ("web", "http://127.0.0.1:1/callback?x=1"),
        ("web", "https://attacker.example/callback"),
    ] {
        let reply = browser
            .get(&authorize_url(
                &isogate,
                &[
                    ("client_id", client),
                    ("response_type", "code"),
                    ("redirect_uri", redirect),
                    ("code_challenge", &challenge),
                    ("code_challenge_method", "S256"),
                ],
            ))
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{client} {redirect}");
        assert_eq!(reply.header("location"), None);
        assert!(reply.text().contains("role=\"alert\""));
    }
    // The code is bound to its redirect URI, even another registered one.
    let (verifier, challenge) = pkce();
    let code = code_for(&isogate, &seed_request(&challenge)).await;
    let reply = web_token(
        &isogate,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://localhost:1/other"),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(error_of(&reply), "invalid_grant");
}

#[tokio::test]
async fn scope_and_resource_errors_go_back_to_the_client() {
    let isogate = start().await;
    let (_, challenge) = pkce();
    let mut browser = Browser::default();
    for (scope, resource, error) in [
        ("read admin", "urn:products", "invalid_scope"),
        ("read", "urn:nope", "invalid_target"),
        ("read", "not a uri", "invalid_target"),
    ] {
        let reply = browser
            .get(&authorize_url(
                &isogate,
                &[
                    ("client_id", "web"),
                    ("response_type", "code"),
                    ("redirect_uri", WEB_CALLBACK),
                    ("scope", scope),
                    ("resource", resource),
                    ("code_challenge", &challenge),
                    ("code_challenge_method", "S256"),
                ],
            ))
            .await;
        assert_eq!(query(&reply)["error"], error, "{scope} {resource}");
    }
    let reply = browser
        .get(&authorize_url(
            &isogate,
            &[
                ("client_id", "web"),
                ("response_type", "token"),
                ("redirect_uri", WEB_CALLBACK),
            ],
        ))
        .await;
    assert_eq!(query(&reply)["error"], "unsupported_response_type");
}

#[tokio::test]
async fn a_replayed_code_is_refused_and_revokes_what_it_issued() {
    let isogate = start().await;
    let (verifier, challenge) = pkce();
    let code = code_for(&isogate, &seed_request(&challenge)).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", WEB_CALLBACK),
        ("code_verifier", verifier.as_str()),
        ("resource", "urn:invoices"),
    ];
    let first = web_token(&isogate, &form).await.json();
    let access = first["access_token"].as_str().unwrap();
    assert_eq!(
        introspect(&isogate, "urn:invoices", access).await["active"],
        true
    );

    assert_eq!(error_of(&web_token(&isogate, &form).await), "invalid_grant");
    // Everything the code issued is revoked: the refresh token, and the access token at
    // introspection.
    let reply = refresh(&isogate, first["refresh_token"].as_str().unwrap(), &[]).await;
    assert_eq!(error_of(&reply), "invalid_grant");
    assert_eq!(
        introspect(&isogate, "urn:invoices", access).await["active"],
        false
    );
}

#[tokio::test]
async fn reusing_a_rotated_refresh_token_revokes_the_family() {
    let isogate = start().await;
    let first = tokens_for(&isogate, "urn:products").await;
    let old = first["refresh_token"].as_str().unwrap();
    let rotated = refresh(&isogate, old, &[]).await.json();
    let new = rotated["refresh_token"].as_str().unwrap().to_owned();
    let reuse = refresh(&isogate, old, &[]).await;
    assert_eq!(error_of(&reuse), "invalid_grant");
    assert!(reuse.json()["error_description"]
        .as_str()
        .unwrap()
        .contains("already used"));
    // The thief's use also ended the legitimate client's newer token.
    assert_eq!(
        error_of(&refresh(&isogate, &new, &[]).await),
        "invalid_grant"
    );
}

#[tokio::test]
async fn a_code_issued_before_a_restart_is_redeemed_after_it() {
    let isogate = start().await;
    let (verifier, challenge) = pkce();
    let code = code_for(&isogate, &seed_request(&challenge)).await;
    let Isogate { server, dir, .. } = isogate;
    server.shutdown().await;
    let isogate = Isogate::start_existing(dir, "").await;
    let reply = redeem(&isogate, &code, &verifier, Some("urn:invoices")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert!(isogate.path("data/grants.redb").exists());
}

/// Introspects `token` as API resource `api` (secret "secret").
async fn introspect(isogate: &Isogate, api: &str, token: &str) -> Value {
    let reply = post_form(
        &isogate.issuer_url("/connect/introspect"),
        &[("token", token)],
        Some((api, SECRET)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.json()
}

#[tokio::test]
async fn introspection_holds_isolation_and_shows_only_the_callers_scopes() {
    let isogate = start().await;
    // A client_credentials token for products with read and the payments scope.
    let token = isogate
        .token_ok(&[
            ("grant_type", "client_credentials"),
            ("scope", "read transaction:42"),
        ])
        .await;
    let access = token["access_token"].as_str().unwrap();
    let (_, claims) = decode_parts(access);
    assert_eq!(
        claims["aud"],
        serde_json::json!(["urn:products", "urn:payments"])
    );

    let seen = introspect(&isogate, "urn:products", access).await;
    assert_eq!(seen["active"], true);
    assert_eq!(seen["scope"], "read");
    assert_eq!(seen["aud"], "urn:products");
    assert_eq!(seen["client_id"], "client");
    // invoices is not in aud: inactive for it.
    assert_eq!(
        introspect(&isogate, "urn:invoices", access).await,
        serde_json::json!({"active": false})
    );
    // A wrong secret is invalid_client; garbage is inactive.
    let reply = post_form(
        &isogate.issuer_url("/connect/introspect"),
        &[("token", access)],
        Some(("urn:products", "wrong")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.json()["error"], "invalid_client");
    assert_eq!(
        introspect(&isogate, "urn:products", "x.y.z").await["active"],
        false
    );
}

#[tokio::test]
async fn refresh_tokens_introspect_for_their_client_and_revocation_ends_them() {
    let isogate = start().await;
    let tokens = tokens_for(&isogate, "urn:products").await;
    let refresh_token = tokens["refresh_token"].as_str().unwrap();
    let as_client = |client: &'static str, path: &'static str, token: String| {
        let url = isogate.issuer_url(path);
        async move { post_form(&url, &[("token", &token)], Some((client, SECRET))).await }
    };
    let own = as_client("web", "/connect/introspect", refresh_token.into())
        .await
        .json();
    assert_eq!(own["active"], true);
    assert_eq!(own["token_type"], "refresh_token");
    assert_eq!(own["scope"], "openid profile read offline_access");
    let other = as_client("client", "/connect/introspect", refresh_token.into())
        .await
        .json();
    assert_eq!(other["active"], false);

    // Another client cannot revoke it; its own client can. Access tokens get 200 too.
    assert_eq!(
        as_client("client", "/connect/revocation", refresh_token.into())
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        as_client("web", "/connect/introspect", refresh_token.into())
            .await
            .json()["active"],
        true
    );
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(
        as_client("web", "/connect/revocation", access.into())
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        as_client("web", "/connect/revocation", refresh_token.into())
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        as_client("web", "/connect/introspect", refresh_token.into())
            .await
            .json()["active"],
        false
    );
    let reply = refresh(&isogate, refresh_token, &[]).await;
    assert_eq!(error_of(&reply), "invalid_grant");
}

#[tokio::test]
async fn login_failures_say_nothing_about_usernames_and_slow_down() {
    let admin = "\n[admin]\nlisten = \"127.0.0.1:0\"\n";
    let isogate =
        Isogate::start(&(issuer_section("http://isogate.test") + SEED + USERS + admin)).await;
    let (_, challenge) = pkce();
    let mut browser = Browser::default();
    let page = browser
        .get(&authorize_url(&isogate, &seed_request(&challenge)))
        .await;
    let wrong = log_in(&isogate, &mut browser, &page, "alice", "nope").await;
    let unknown = log_in(&isogate, &mut browser, &page, "mallory", "nope").await;
    for reply in [&wrong, &unknown] {
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply
            .text()
            .contains("The username or password is incorrect."));
    }
    // Five failures for alice in all; then even the right password waits.
    for _ in 0..3 {
        log_in(&isogate, &mut browser, &page, "alice", "nope").await;
    }
    let slowed = log_in(&isogate, &mut browser, &page, "alice", "alice").await;
    assert_eq!(slowed.status, StatusCode::OK);
    assert!(
        slowed.text().contains("Too many failed sign-in attempts"),
        "{}",
        slowed.text()
    );
    // The wait is one second: move the server's clock past it.
    isogate.clock.advance(std::time::Duration::from_secs(1));
    let done = log_in(&isogate, &mut browser, &page, "alice", "alice").await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.text());
    let metrics = get(&format!(
        "http://{}/metrics",
        isogate.addr(isogate::Role::Admin)
    ))
    .await
    .text();
    for line in [
        "isogate_logins_total{result=\"failed\"} 5",
        "isogate_logins_total{result=\"slowed\"} 1",
        "isogate_logins_total{result=\"ok\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

#[tokio::test]
async fn the_login_form_is_bound_to_its_browser_and_its_token() {
    let isogate = start().await;
    let (_, challenge) = pkce();
    let mut browser = Browser::default();
    let page = browser
        .get(&authorize_url(&isogate, &seed_request(&challenge)))
        .await;
    let html = page.text();
    let url = isogate.issuer_url("/connect/authorize/login");
    // A forged form from another browser (no cookie), and one with a wrong token.
    let mut attacker = Browser::default();
    let forged = [
        ("request", hidden(&html, "request")),
        ("csrf", hidden(&html, "csrf")),
        ("username", "alice".into()),
        ("password", "alice".into()),
    ];
    let forged: Vec<(&str, &str)> = forged.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        attacker.post(&url, &forged).await.status,
        StatusCode::FORBIDDEN
    );
    let mut wrong = forged.clone();
    wrong[1].1 = "wrong";
    assert_eq!(
        browser.post(&url, &wrong).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        browser.post(&url, &forged).await.status,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn consent_is_asked_remembered_and_may_be_denied() {
    let isogate = start().await;
    let (verifier, challenge) = pkce();
    let request = [
        ("client_id", "spa"),
        ("response_type", "code"),
        ("redirect_uri", SPA_CALLBACK),
        ("scope", "openid profile read"),
        ("resource", "urn:products"),
        ("state", "c"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let mut browser = Browser::default();
    let page = browser.get(&authorize_url(&isogate, &request)).await;
    let consent = log_in(&isogate, &mut browser, &page, "alice", "alice").await;
    assert_eq!(consent.status, StatusCode::OK);
    let html = consent.text();
    assert!(html.contains("Your name and email address"), "{html}");
    assert!(
        html.contains("Product API") || html.contains("urn:products"),
        "{html}"
    );
    // Deny: access_denied goes back to the client.
    let denied = answer_consent(&isogate, &mut browser, &html, "deny", false).await;
    assert_eq!(query(&denied)["error"], "access_denied");
    // Again, signed in already: straight to consent; allow and remember.
    let page = browser.get(&authorize_url(&isogate, &request)).await;
    let html = page.text();
    assert!(html.contains("Allow access?"), "{html}");
    let allowed = answer_consent(&isogate, &mut browser, &html, "allow", true).await;
    let code = query(&allowed)["code"].clone();
    // A public client redeems with its client_id alone (and PKCE).
    let reply = post_form(
        &isogate.issuer_url("/connect/token"),
        &[
            ("grant_type", "authorization_code"),
            ("client_id", "spa"),
            ("code", &code),
            ("redirect_uri", SPA_CALLBACK),
            ("code_verifier", &verifier),
        ],
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    // Remembered: the next request is answered with a code at once, and prompt=none works.
    let mut silent = request.to_vec();
    silent.push(("prompt", "none"));
    let reply = browser.get(&authorize_url(&isogate, &silent)).await;
    assert_eq!(reply.status, StatusCode::FOUND);
    assert!(query(&reply).contains_key("code"), "{:?}", query(&reply));
    // Signed out (another browser), prompt=none is login_required.
    let reply = Browser::default()
        .get(&authorize_url(&isogate, &silent))
        .await;
    assert_eq!(query(&reply)["error"], "login_required");
}

#[tokio::test]
async fn grants_survive_kill_9_of_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("isogate.toml");
    std::fs::write(&path, issuer_section("http://isogate.test") + SEED + USERS).unwrap();
    let path = path.to_str().unwrap();
    let serve = || {
        let mut running =
            Running::spawn(env!("CARGO_BIN_EXE_isogate"), &["serve", "--config", path]);
        let line = running.wait_for("listening role=issuer");
        let addr = line.rsplit("addr=").next().unwrap().trim().to_owned();
        (running, format!("http://{addr}"))
    };
    let (running, base) = serve();
    let (verifier, challenge) = pkce();
    let code = code_at(&base, &seed_request(&challenge)).await;
    // The code was handed out, so it is on disk: no graceful shutdown.
    running.signal("KILL");
    let (code_exit, _) = running.finish();
    assert_eq!(code_exit, None, "killed by a signal");
    let (running, base) = serve();
    let reply = post_form(
        &format!("{base}/connect/token"),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", WEB_CALLBACK),
            ("code_verifier", &verifier),
            ("resource", "urn:products"),
        ],
        Some(("web", SECRET)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    running.signal("TERM");
    running.finish();
}

#[tokio::test]
async fn cookies_are_secure_when_the_issuer_is_https() {
    let isogate = Isogate::start(&(issuer_section("https://id.example") + SEED + USERS)).await;
    let (_, challenge) = pkce();
    let page = Browser::default()
        .get(&authorize_url(&isogate, &seed_request(&challenge)))
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    let cookie = page.header("set-cookie").expect("the browser cookie");
    assert!(cookie.starts_with("isogate_browser="), "{cookie}");
    assert!(
        cookie.contains("; Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    assert!(page
        .text()
        .contains("action=\"https://id.example/connect/authorize/login\""));
}

#[tokio::test]
async fn consent_is_remembered_per_scope_and_api_and_another_api_asks_again() {
    let isogate = start().await;
    let (_, challenge) = pkce();
    let request = |resource: &'static str| {
        vec![
            ("client_id", "spa"),
            ("response_type", "code"),
            ("redirect_uri", SPA_CALLBACK),
            ("scope", "read"),
            ("resource", resource),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ]
    };
    let mut browser = Browser::default();
    let page = browser
        .get(&authorize_url(&isogate, &request("urn:products")))
        .await;
    let consent = log_in(&isogate, &mut browser, &page, "alice", "alice").await;
    let html = consent.text();
    assert!(html.contains("urn:products"), "{html}");
    let allowed = answer_consent(&isogate, &mut browser, &html, "allow", true).await;
    assert!(query(&allowed).contains_key("code"));

    // The same scope at the isolated invoices API was never approved: prompt=none cannot
    // get a code for it silently, and without prompt the page asks, naming that API.
    let mut silent = request("urn:invoices");
    silent.push(("prompt", "none"));
    let reply = browser.get(&authorize_url(&isogate, &silent)).await;
    assert_eq!(
        query(&reply)["error"],
        "consent_required",
        "{:?}",
        query(&reply)
    );
    let page = browser
        .get(&authorize_url(&isogate, &request("urn:invoices")))
        .await;
    let html = page.text();
    assert!(html.contains("Allow access?"), "{html}");
    assert!(
        html.contains("urn:invoices") && !html.contains("urn:products"),
        "{html}"
    );
    let allowed = answer_consent(&isogate, &mut browser, &html, "allow", true).await;
    assert!(query(&allowed).contains_key("code"));

    // Both approvals are remembered.
    for resource in ["urn:products", "urn:invoices"] {
        let mut silent = request(resource);
        silent.push(("prompt", "none"));
        let reply = browser.get(&authorize_url(&isogate, &silent)).await;
        assert!(
            query(&reply).contains_key("code"),
            "{resource}: {:?}",
            query(&reply)
        );
    }
}

/// Concurrent refreshes with one one-time refresh token (RFC 9700 §4.14.2): exactly one wins
/// and the rest are reuses that revoke the family, the winner's new token included. With
/// `refresh_token_reuse_grace`, each gets a working token of its own.
#[tokio::test]
async fn concurrent_refreshes_have_one_winner_unless_the_client_allows_a_reuse_grace() {
    for grace in [None, Some("30s")] {
        let users = match grace {
            None => USERS.to_owned(),
            Some(g) => USERS.replacen(
                "allow_offline_access = true\n",
                &format!("allow_offline_access = true\nrefresh_token_reuse_grace = \"{g}\"\n"),
                1,
            ),
        };
        let isogate =
            Isogate::start(&(issuer_section("http://isogate.test") + SEED + &users)).await;
        let tokens = tokens_for(&isogate, "urn:products").await;
        let token = tokens["refresh_token"].as_str().unwrap().to_owned();
        let isogate = std::sync::Arc::new(isogate);
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let (isogate, token) = (isogate.clone(), token.clone());
            set.spawn(async move { refresh(&isogate, &token, &[]).await });
        }
        let replies = set.join_all().await;
        let won: Vec<String> = replies
            .iter()
            .filter(|r| r.status == StatusCode::OK)
            .map(|r| r.json()["refresh_token"].as_str().unwrap().to_owned())
            .collect();
        match grace {
            None => {
                assert_eq!(won.len(), 1, "one winner");
                for reply in replies.iter().filter(|r| r.status != StatusCode::OK) {
                    assert_eq!(error_of(reply), "invalid_grant");
                }
                // The losers' reuse revoked the family: the winner's new token is dead too.
                assert_eq!(
                    error_of(&refresh(&isogate, &won[0], &[]).await),
                    "invalid_grant"
                );
            }
            Some(_) => {
                let lost: Vec<String> = replies
                    .iter()
                    .filter(|r| r.status != StatusCode::OK)
                    .map(|r| r.text())
                    .collect();
                assert_eq!(won.len(), 10, "every tab gets a token: {lost:?}");
                for new in &won {
                    let reply = refresh(&isogate, new, &[]).await;
                    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
                }
            }
        }
    }
}

/// A scope whose name holds a `:` without being parameterized (`invoices:read`, a common
/// style) is a scope of its own everywhere: its label on the consent page, the user claims it
/// releases into the access token, and the scope introspection reports.
#[tokio::test]
async fn a_colon_named_scope_is_one_scope_on_the_consent_page_in_the_token_and_at_introspection() {
    let ledger = r#"
[[api_scopes]]
name = "invoices:read"
display_name = "Read your invoices"
user_claims = ["email"]

[[api_resources]]
name = "urn:ledger"
scopes = ["invoices:read"]
secrets = ["sha256:K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols="]

[[clients]]
client_id = "ledger-app"
require_secret = false
allowed_grant_types = ["authorization_code"]
allowed_scopes = ["invoices:read"]
redirect_uris = ["http://127.0.0.1:1/ledger"]
require_consent = true
"#;
    let isogate =
        Isogate::start(&(issuer_section("http://isogate.test") + SEED + USERS + ledger)).await;
    let (verifier, challenge) = pkce();
    let request = [
        ("client_id", "ledger-app"),
        ("response_type", "code"),
        ("redirect_uri", "http://127.0.0.1:1/ledger"),
        ("scope", "invoices:read"),
        ("resource", "urn:ledger"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let mut browser = Browser::default();
    let page = browser.get(&authorize_url(&isogate, &request)).await;
    let consent = log_in(&isogate, &mut browser, &page, "alice", "alice").await;
    let html = consent.text();
    assert!(html.contains("Read your invoices"), "{html}");
    let allowed = answer_consent(&isogate, &mut browser, &html, "allow", false).await;
    let code = query(&allowed)["code"].clone();
    let reply = post_form(
        &isogate.issuer_url("/connect/token"),
        &[
            ("grant_type", "authorization_code"),
            ("client_id", "ledger-app"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:1/ledger"),
            ("code_verifier", &verifier),
            ("resource", "urn:ledger"),
        ],
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let token = reply.json()["access_token"].as_str().unwrap().to_owned();
    let claims = verify(&isogate, &token, "urn:ledger").await;
    assert_eq!(claims["scope"], "invoices:read");
    assert_eq!(
        claims["email"], "alice@example.com",
        "the scope's user claim"
    );
    let described = introspect(&isogate, "urn:ledger", &token).await;
    assert_eq!(described["active"], true);
    assert_eq!(described["scope"], "invoices:read");
}
