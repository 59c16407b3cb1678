//! The gateway (SPEC §4) with a real recording upstream and real keys: what passes, what is
//! refused (and never reaches the upstream), and what the upstream receives.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use isogate::jwt::{Alg, SigningKey};
use isogate::Role;
use serde_json::{json, Value};

use crate::servers::{JwksServer, Upstream};
use crate::support::*;

pub fn routes(upstream: &str) -> String {
    format!(
        r#"
[[routes]]
path_prefix = "/invoices"
upstream = "{upstream}"
resource = "urn:invoices"
[routes.scopes]
GET = ["read", "write"]
"*" = ["write"]

[[routes]]
path_prefix = "/products"
upstream = "{upstream}"
resource = "urn:products"

[[routes]]
path_prefix = "/payments"
upstream = "{upstream}"
resource = "urn:payments"
strip_authorization = true
"#
    )
}

struct Gate {
    isogate: Isogate,
    upstream: Upstream,
}

impl Gate {
    async fn start() -> Self {
        Self::with_proxy("").await
    }

    /// `extra` goes into the `[proxy]` section (e.g. trusted issuers).
    async fn with_proxy(extra: &str) -> Self {
        let upstream = Upstream::start().await;
        let toml = issuer_section("http://isogate.test")
            + SEED
            + &format!("\n[proxy]\nlisten = \"127.0.0.1:0\"\nupstream_timeout = \"1s\"\n{extra}\n")
            + &routes(&upstream.url())
            + "\n[admin]\nlisten = \"127.0.0.1:0\"\n";
        Gate {
            isogate: Isogate::start(&toml).await,
            upstream,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.isogate.addr(Role::Proxy))
    }

    /// A token from the local issuer.
    async fn token(&self, scope: &str, resource: Option<&str>) -> String {
        let mut form = vec![("grant_type", "client_credentials"), ("scope", scope)];
        form.extend(resource.map(|r| ("resource", r)));
        self.isogate.token_ok(&form).await["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn call(&self, method: Method, path: &str, authorization: Option<&str>) -> Reply {
        let mut req = Request::builder().method(method).uri(self.url(path));
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        send(req.body(Full::default()).unwrap()).await
    }

    async fn get(&self, path: &str, token: &str) -> Reply {
        self.call(Method::GET, path, Some(&format!("Bearer {token}")))
            .await
    }

    /// The local ES256 signing key, to craft tokens.
    fn key(&self) -> SigningKey {
        SigningKey::from_file(
            &self.isogate.path("keys/es256.pem"),
            Alg::ES256,
            Some("es".into()),
            false,
        )
        .unwrap()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims like the local issuer's, for `aud`.
fn claims(aud: Value) -> Value {
    let now = now();
    json!({"iss": "http://isogate.test", "sub": "client", "client_id": "client", "aud": aud,
           "scope": "read write", "iat": now, "nbf": now, "exp": now + 300, "jti": now.to_string()})
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn assert_refused(reply: &Reply, status: StatusCode, error: &str) {
    assert_eq!(reply.status, status, "{}", reply.text());
    let challenge = reply.header("www-authenticate").expect("a challenge");
    assert!(
        challenge.starts_with("Bearer realm=\"isogate\""),
        "{challenge}"
    );
    assert!(
        challenge.contains(&format!("error=\"{error}\"")),
        "{challenge}"
    );
    assert!(
        challenge.contains("resource_metadata=\"http://"),
        "{challenge}"
    );
}

#[tokio::test]
async fn seed_story_at_the_gate() {
    let gate = Gate::start().await;
    let invoices = gate.token("read", Some("urn:invoices")).await;
    let reply = gate.get("/invoices/42", &invoices).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.text(), "upstream /invoices/42 0");
    assert_eq!(gate.upstream.count(), 1);

    // The same token at the products API: not its audience.
    assert_refused(
        &gate.get("/products/1", &invoices).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
    // A token obtained without `resource` (aud = products): refused at the isolated invoices.
    let plain = gate.token("read", None).await;
    assert_refused(
        &gate.get("/invoices/42", &plain).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
    assert_eq!(
        gate.upstream.count(),
        1,
        "refused requests never reach the upstream"
    );
    assert_eq!(gate.get("/products/1", &plain).await.status, StatusCode::OK);
}

#[tokio::test]
async fn no_token_gets_a_bare_challenge_pointing_at_the_metadata() {
    let gate = Gate::start().await;
    let reply = gate
        .call(Method::GET, "/invoices?access_token=abc", None)
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let host = gate.isogate.addr(Role::Proxy);
    assert_eq!(
        reply.header("www-authenticate"),
        Some(format!("Bearer realm=\"isogate\", resource_metadata=\"http://{host}/.well-known/oauth-protected-resource/invoices\"").as_str())
    );
    // Beside it, the DPoP challenge with the proof algorithms (SPEC §8).
    let challenges: Vec<_> = reply.headers.get_all("www-authenticate").iter().collect();
    assert_eq!(challenges[1], "DPoP algs=\"ES256 ES384 RS256 PS256 EdDSA\"");
    // Another scheme is no bearer token either.
    let reply = gate
        .call(Method::GET, "/invoices", Some(&basic("client", SECRET)))
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(!reply.header("www-authenticate").unwrap().contains("error="));
    assert_eq!(gate.upstream.count(), 0);

    let doc = get(&gate.url("/.well-known/oauth-protected-resource/invoices")).await;
    assert_eq!(doc.status, StatusCode::OK);
    assert_eq!(
        doc.json(),
        json!({"resource": "urn:invoices", "authorization_servers": ["http://isogate.test"],
               "scopes_supported": ["read", "write"], "bearer_methods_supported": ["header"],
               "dpop_signing_alg_values_supported": ["ES256", "ES384", "RS256", "PS256", "EdDSA"]})
    );
    assert_eq!(
        get(&gate.url("/.well-known/oauth-protected-resource/nope"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn malformed_or_duplicated_authorization_is_invalid_request() {
    let gate = Gate::start().await;
    let token = gate.token("read", Some("urn:invoices")).await;
    for bad in [
        "Bearer",
        "Bearer  two-spaces",
        "Bearer a b",
        "Bearer \"quoted\"",
    ] {
        let reply = gate.call(Method::GET, "/invoices", Some(bad)).await;
        assert_refused(&reply, StatusCode::BAD_REQUEST, "invalid_request");
    }
    let req = Request::get(gate.url("/invoices"))
        .header("authorization", format!("Bearer {token}"))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::default())
        .unwrap();
    assert_refused(&send(req).await, StatusCode::BAD_REQUEST, "invalid_request");
    // The scheme is case-insensitive.
    let reply = gate
        .call(Method::GET, "/invoices", Some(&format!("bEARER {token}")))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(gate.upstream.count(), 1);
}

#[tokio::test]
async fn a_scope_the_method_needs_is_required() {
    let gate = Gate::start().await;
    let read = gate.token("read", Some("urn:invoices")).await;
    assert_eq!(gate.get("/invoices", &read).await.status, StatusCode::OK);
    let reply = gate
        .call(Method::POST, "/invoices", Some(&format!("Bearer {read}")))
        .await;
    assert_refused(&reply, StatusCode::FORBIDDEN, "insufficient_scope");
    assert!(reply
        .header("www-authenticate")
        .unwrap()
        .contains("scope=\"write\""));
    let write = gate.token("write", Some("urn:invoices")).await;
    let reply = gate
        .call(Method::POST, "/invoices", Some(&format!("Bearer {write}")))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    // A parameterized scope counts by its name.
    let tx = gate.token("transaction:42", Some("urn:payments")).await;
    assert_eq!(gate.get("/payments/42", &tx).await.status, StatusCode::OK);
    assert_eq!(gate.upstream.count(), 3);
    // HEAD needs what GET needs (the route names no HEAD), not the "*" rule's `write`.
    let reply = gate
        .call(Method::HEAD, "/invoices", Some(&format!("Bearer {read}")))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(gate.upstream.last().method, Method::HEAD);
}

#[tokio::test]
async fn forged_and_foreign_tokens_never_reach_the_upstream() {
    let gate = Gate::start().await;
    let key = gate.key();
    let aud = json!("urn:products");
    let good = isogate::jwt::encode(&key, "at+jwt", &claims(aud.clone())).unwrap();
    assert_eq!(
        gate.get("/products", &good).await.status,
        StatusCode::OK,
        "the control token passes"
    );
    let (header, payload) = (
        good.split('.').next().unwrap(),
        good.split('.').nth(1).unwrap(),
    );

    let public_key = {
        let jwks = get(&gate.isogate.issuer_url("/.well-known/jwks"))
            .await
            .body;
        jwks.to_vec()
    };
    let hs256 = {
        let h = b64(&json!({"alg": "HS256", "typ": "at+jwt", "kid": "es"}));
        let input = format!("{h}.{payload}");
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &public_key);
        format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(aws_lc_rs::hmac::sign(&key, input.as_bytes()))
        )
    };
    let other_key = {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.pem");
        isogate::jwt::generate_key_file(&path, Alg::ES256).unwrap();
        SigningKey::from_file(&path, Alg::ES256, Some("es".into()), false).unwrap()
    };
    let unknown_kid = SigningKey::from_file(
        &gate.isogate.path("keys/es256.pem"),
        Alg::ES256,
        Some("nope".into()),
        false,
    )
    .unwrap();
    let mut untrusted = claims(aud.clone());
    untrusted["iss"] = json!("https://evil.example");
    let mut expired = claims(aud.clone());
    expired["exp"] = json!(now() - 300);
    let mut early = claims(aud.clone());
    early["nbf"] = json!(now() + 300);
    let mut float_exp = claims(aud.clone());
    float_exp["exp"] = json!(1e30);
    let mut big = claims(aud.clone());
    big["pad"] = json!("x".repeat(9000));
    // What each refusal is counted and logged as: the step of SPEC §4 and its cause.
    let signed = |c: &Value| isogate::jwt::encode(&key, "at+jwt", c).unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "alg none",
            format!(
                "{}.{payload}.",
                b64(&json!({"alg": "none", "typ": "at+jwt", "kid": "es"}))
            ),
            "token_alg",
        ),
        ("HS256 keyed with the public key", hs256, "token_alg"),
        (
            "another key under a trusted kid",
            isogate::jwt::encode(&other_key, "at+jwt", &claims(aud.clone())).unwrap(),
            "token_signature",
        ),
        (
            "unknown kid",
            isogate::jwt::encode(&unknown_kid, "at+jwt", &claims(aud.clone())).unwrap(),
            "token_kid",
        ),
        ("untrusted iss", signed(&untrusted), "token_issuer"),
        (
            "typ JWT",
            isogate::jwt::encode(&key, "JWT", &claims(aud.clone())).unwrap(),
            "token_typ",
        ),
        ("expired beyond skew", signed(&expired), "token_expired"),
        (
            "not yet valid beyond skew",
            signed(&early),
            "token_not_yet_valid",
        ),
        ("non-integer exp", signed(&float_exp), "token_malformed"),
        ("over 8 KiB", signed(&big), "token_too_large"),
        ("garbage", "not.a.jwt".into(), "token_malformed"),
        (
            "two parts",
            format!("{header}.{payload}"),
            "token_malformed",
        ),
        (
            "tampered payload",
            format!(
                "{header}.{}.{}",
                b64(&claims(json!("urn:invoices"))),
                good.split('.').nth(2).unwrap()
            ),
            "token_signature",
        ),
    ];
    let mut expected = std::collections::BTreeMap::<&str, f64>::new();
    for (what, token, reason) in cases {
        let reply = gate.get("/products", &token).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{what}: {}",
            reply.text()
        );
        assert_refused(&reply, StatusCode::UNAUTHORIZED, "invalid_token");
        let challenge = reply.header("www-authenticate").unwrap();
        assert!(!challenge.contains(payload), "{what}: the token is echoed");
        *expected.entry(reason).or_default() += 1.0;
    }
    let scrape = Scrape::of(&gate.isogate).await;
    for (reason, count) in expected {
        let labels = [
            ("role", "proxy"),
            ("route", "/products"),
            ("status", "401"),
            ("reason", reason),
        ];
        assert_eq!(
            scrape.get("isogate_requests_total", &labels),
            count,
            "{reason}"
        );
    }
    assert_eq!(
        gate.upstream.count(),
        1,
        "only the control token reached the upstream"
    );
}

#[tokio::test]
async fn expiry_within_the_clock_skew_is_accepted() {
    let gate = Gate::start().await;
    let key = gate.key();
    let mut c = claims(json!("urn:products"));
    c["exp"] = json!(now() - 10);
    c["nbf"] = json!(now() + 10);
    let token = isogate::jwt::encode(&key, "at+jwt", &c).unwrap();
    assert_eq!(gate.get("/products", &token).await.status, StatusCode::OK);
    let token =
        isogate::jwt::encode(&key, "application/at+jwt", &claims(json!(["urn:products"]))).unwrap();
    assert_eq!(
        gate.get("/products", &token).await.status,
        StatusCode::OK,
        "application/at+jwt and an aud array"
    );
}

#[tokio::test]
async fn a_multi_audience_token_is_refused_at_an_isolated_resource_only() {
    let gate = Gate::start().await;
    let token = isogate::jwt::encode(
        &gate.key(),
        "at+jwt",
        &claims(json!(["urn:invoices", "urn:products"])),
    )
    .unwrap();
    let reply = gate.get("/invoices", &token).await;
    assert_refused(&reply, StatusCode::UNAUTHORIZED, "invalid_token");
    assert!(reply.header("www-authenticate").unwrap().contains("alone"));
    assert_eq!(gate.get("/products", &token).await.status, StatusCode::OK);
    assert_eq!(gate.upstream.count(), 1);
}

#[tokio::test]
async fn path_tricks_cannot_reach_another_route() {
    let gate = Gate::start().await;
    let products = gate.token("read", Some("urn:products")).await;
    for path in [
        "/products/../invoices",
        "/products/%2e%2e/invoices",
        "/products/%2E%2E/invoices/1",
        "/products/./../invoices",
    ] {
        let reply = gate.get(path, &products).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{path} must be judged as /invoices: {}",
            reply.text()
        );
    }
    for path in [
        "/invoices%2F1",
        "/products;x=1",
        "/products%5C..%5Cinvoices",
        "/products/%00",
    ] {
        assert_eq!(
            gate.get(path, &products).await.status,
            StatusCode::BAD_REQUEST,
            "{path}"
        );
    }
    assert_eq!(
        gate.get("/invoices2", &products).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(gate.get("/", &products).await.status, StatusCode::NOT_FOUND);
    assert_eq!(gate.upstream.count(), 0);
    // Allowed requests are forwarded with the normalised path and the query as sent.
    let reply = gate
        .get("//products/a/./b/../c?q=%2F..&x=1", &products)
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(gate.upstream.last().target, "/products/a/c?q=%2F..&x=1");
    // A path that normalising leaves as it is goes on with its query untouched too.
    let reply = gate.get("/products/a?x=1&y=%2F&z", &products).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(gate.upstream.last().target, "/products/a?x=1&y=%2F&z");
}

#[tokio::test]
async fn forwarding_sets_identity_and_forwarded_headers_and_drops_hop_by_hop() {
    let gate = Gate::start().await;
    let token = gate.token("read write", Some("urn:invoices")).await;
    let req = Request::post(gate.url("/invoices/1"))
        .header("host", "api.example.com")
        .header("authorization", format!("Bearer {token}"))
        .header("x-isogate-sub", "admin")
        .header("X-Isogate-Anything", "spoofed")
        .header("connection", "x-drop-me")
        .header("x-drop-me", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic eDp5")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-kept", "yes")
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    let reply = send(req).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.header("x-upstream"), Some("yes"));
    assert_eq!(
        reply.header("x-upstream-hop"),
        None,
        "a header the upstream's Connection names is dropped"
    );
    let seen = gate.upstream.last();
    let h = |name: &str| {
        seen.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.body.as_ref(), b"hello");
    assert_eq!(h("x-isogate-sub").as_deref(), Some("client"));
    assert_eq!(h("x-isogate-client-id").as_deref(), Some("client"));
    assert_eq!(h("x-isogate-scope").as_deref(), Some("read write"));
    assert_eq!(h("x-isogate-anything"), None);
    for dropped in [
        "x-drop-me",
        "keep-alive",
        "proxy-authorization",
        "connection",
    ] {
        assert_eq!(h(dropped), None, "{dropped}");
    }
    assert_eq!(h("x-kept").as_deref(), Some("yes"));
    assert_eq!(
        h("x-forwarded-for").as_deref(),
        Some("127.0.0.1"),
        "a client-sent X-Forwarded-For is dropped, not appended to"
    );
    assert_eq!(h("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(h("x-forwarded-host").as_deref(), Some("api.example.com"));
    assert_eq!(h("host"), Some(gate.upstream.addr.to_string()));
    assert_eq!(
        h("authorization"),
        Some(format!("Bearer {token}")),
        "forwarded unchanged"
    );

    let tx = gate.token("transaction:7", Some("urn:payments")).await;
    assert_eq!(gate.get("/payments", &tx).await.status, StatusCode::OK);
    assert_eq!(
        gate.upstream.last().headers.get("authorization"),
        None,
        "strip_authorization"
    );
    // The client gets its own HTTP version back.
    let http10 = raw(
        gate.isogate.addr(Role::Proxy),
        format!("GET /invoices/1 HTTP/1.0\r\nAuthorization: Bearer {token}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(http10.starts_with("HTTP/1.0 200"), "{http10}");
}

/// Headers isogate owns, and headers that make an upstream read another path or method, never
/// reach the upstream from a client, under any spelling: CGI, WSGI and Rack servers read `_` as
/// `-` and merge the two, the spoofed value first. A route may keep a rewriting header by name.
#[tokio::test]
async fn owned_and_rewriting_headers_are_dropped_under_any_spelling() {
    let upstream = Upstream::start().await;
    let toml = issuer_section("http://isogate.test")
        + SEED
        + "\n[proxy]\nlisten = \"127.0.0.1:0\"\n"
        + &routes(&upstream.url())
        + &format!(
            "\n[[routes]]\npath_prefix = \"/legacy\"\nupstream = \"{}\"\nresource = \"urn:products\"\nkeep_headers = [\"X-HTTP-Method-Override\"]\n",
            upstream.url()
        );
    let gate = Gate {
        isogate: Isogate::start(&toml).await,
        upstream,
    };
    let token = gate.token("read write", Some("urn:products")).await;
    let spoofed = [
        "X_Isogate_Sub",
        "x_isogate_client-id",
        "X-ISOGATE-SCOPE",
        "X_Forwarded_For",
        "x-forwarded-port",
        "X_Forwarded-Host",
        "Forwarded",
        "forwarded",
        "X-Original-URL",
        "x_original_url",
        "X-Rewrite-URL",
        "X-HTTP-Method-Override",
        "X_HTTP_Method_Override",
        "X-HTTP-Method",
        "X-Method-Override",
    ];
    for path in ["/products/1", "/legacy/1"] {
        let mut req =
            Request::get(gate.url(path)).header("authorization", format!("Bearer {token}"));
        for name in spoofed {
            req = req.header(name, "spoofed");
        }
        let reply = send(req.header("x-kept", "yes").body(Full::default()).unwrap()).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let seen = gate.upstream.last();
        let spoofs: Vec<String> = seen
            .headers
            .iter()
            .filter(|(_, v)| v.as_bytes() == b"spoofed")
            .map(|(name, _)| name.to_string())
            .collect();
        let kept: &[&str] = if path == "/legacy/1" {
            &["x-http-method-override"]
        } else {
            &[]
        };
        assert_eq!(spoofs, kept, "{path}");
        let h = |name: &str| {
            seen.headers
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(h("x-isogate-sub").as_deref(), Some("client"));
        assert_eq!(h("x-isogate-scope").as_deref(), Some("read write"));
        assert_eq!(h("x-forwarded-for").as_deref(), Some("127.0.0.1"));
        assert_eq!(h("x-kept").as_deref(), Some("yes"));
    }
}

/// `x-isogate-scope` lists the token's scopes that the route's resource lists: a token that
/// reaches two APIs does not tell one of them the other's scopes.
#[tokio::test]
async fn the_scope_header_lists_only_the_routes_resource_scopes() {
    let gate = Gate::start().await;
    // No indicator: the audience is products and payments.
    let token = gate.token("read transaction:7", None).await;
    assert_eq!(gate.get("/products", &token).await.status, StatusCode::OK);
    let scope = |gate: &Gate| {
        gate.upstream
            .last()
            .headers
            .get("x-isogate-scope")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(scope(&gate).as_deref(), Some("read"));
    assert_eq!(gate.get("/payments", &token).await.status, StatusCode::OK);
    assert_eq!(scope(&gate).as_deref(), Some("transaction:7"));
}

/// hyper frames HTTP/1.1 per RFC 9112 §6.3: with both Content-Length and Transfer-Encoding the
/// chunked encoding wins, Content-Length is dropped and the connection is closed after the
/// response, so nothing after the body can be smuggled in as a second request; differing
/// Content-Length values are refused.
/// A verified token whose `sub` cannot be a header value is not forwarded with a mangled or
/// missing identity: 502 `unforwardable_claim`, on every request (the identity headers are made
/// once per token and remembered with it).
#[tokio::test]
async fn a_claim_that_cannot_be_a_header_is_502_unforwardable_claim() {
    let gate = Gate::start().await;
    // Identity headers carry visible ASCII only, and no `,`: an upstream that trims or splits
    // a header value would see another identity than the token's.
    for (claim, value) in [
        ("sub", json!("line\nbreak")),
        ("sub", json!("  admin  ")),
        ("sub", json!("admin, root")),
        ("sub", json!("\u{e4}dmin")),
        ("sub", json!("")),
        ("client_id", json!("a client")),
    ] {
        let mut bad = claims(json!("urn:products"));
        bad[claim] = value.clone();
        let token = isogate::jwt::encode(&gate.key(), "at+jwt", &bad).unwrap();
        for _ in 0..2 {
            let reply = gate.get("/products", &token).await;
            assert_eq!(
                reply.status,
                StatusCode::BAD_GATEWAY,
                "{claim} = {value}: {}",
                reply.text()
            );
            assert_eq!(reply.json()["error"], "unforwardable_claim");
        }
    }
    assert_eq!(gate.upstream.count(), 0);
    // A scope the route's resource does not list is never forwarded, so it refuses nothing.
    let mut odd = claims(json!("urn:products"));
    odd["scope"] = json!(["read", "other,admin"]);
    let token = isogate::jwt::encode(&gate.key(), "at+jwt", &odd).unwrap();
    assert_eq!(gate.get("/products", &token).await.status, StatusCode::OK);
    assert_eq!(
        gate.upstream.last().headers.get("x-isogate-scope").unwrap(),
        "read"
    );
    let good = isogate::jwt::encode(&gate.key(), "at+jwt", &claims(json!("urn:products"))).unwrap();
    assert_eq!(gate.get("/products", &good).await.status, StatusCode::OK);
}

/// A raw HTTP/1.1 upstream that answers `200 ok` to each request head, counts the connections
/// it accepts, and closes every connection after `per_connection` responses without saying so
/// (as an upstream whose keep-alive limit or idle timeout strikes between two requests).
async fn counting_upstream(per_connection: usize) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                for _ in 0..per_connection {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    buf.drain(..end);
                    let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if stream.write_all(reply).await.is_err() {
                        return;
                    }
                }
                // Closed without `Connection: close`.
            });
        }
    });
    (url, accepted)
}

/// SPEC §4: upstream connections are pooled. Sequential requests share one connection; when the
/// upstream has closed an idle one, the next request goes out on a new connection and succeeds.
#[tokio::test]
async fn upstream_connections_are_reused_and_a_closed_one_is_replaced() {
    use std::sync::atomic::Ordering;
    for (per_connection, requests, connections) in [(usize::MAX, 8, 1), (3, 9, 3)] {
        let (url, accepted) = counting_upstream(per_connection).await;
        let toml = issuer_section("http://isogate.test")
            + SEED
            + "\n[proxy]\nlisten = \"127.0.0.1:0\"\n"
            + &routes(&url);
        let isogate = Isogate::start(&toml).await;
        let gate = Gate {
            isogate,
            upstream: Upstream::start().await,
        };
        let token = gate.token("read", Some("urn:products")).await;
        // One client connection, so that one worker thread (and its pool) serves every request.
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        for i in 0..requests {
            // Room for the upstream's close to arrive before the next request.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let req = Request::get(gate.url("/products/x"))
                .header("authorization", format!("Bearer {token}"))
                .body(Full::default())
                .unwrap();
            let response = client.request(req).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "request {i}");
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap()
                .to_bytes();
            assert_eq!(body.as_ref(), b"ok");
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            connections,
            "{per_connection}"
        );
    }
}

#[tokio::test]
async fn ambiguous_framing_cannot_smuggle_and_bad_heads_are_refused() {
    let gate = Gate::start().await;
    let token = gate.token("read", Some("urn:products")).await;
    let addr = gate.isogate.addr(Role::Proxy);
    let smuggle = format!(
        "POST /products HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /products/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    );
    let response = raw(addr, smuggle.as_bytes()).await;
    assert_eq!(
        response.matches("HTTP/1.1 ").count(),
        1,
        "one response, then the connection closes: {response}"
    );
    assert_eq!(gate.upstream.count(), 1);
    let seen = gate.upstream.last();
    assert_eq!(seen.target, "/products");
    assert_eq!(seen.headers.get("content-length"), None);

    let head = |extra: &str| {
        format!("POST /products HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n{extra}\r\n")
    };
    let cases = [
        ("differing Content-Length", head("Content-Length: 5\r\nContent-Length: 6\r\n") + "hello!", "400"),
        ("huge head", head(&format!("X-Big: {}\r\n", "a".repeat(40 * 1024))), "431"),
        ("absolute-form", format!("GET http://x/products HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"), "400"),
        ("asterisk-form", "OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_owned(), "400"),
    ];
    for (what, request, status) in cases {
        let response = raw(addr, request.as_bytes()).await;
        assert!(
            response.starts_with(&format!("HTTP/1.1 {status}")),
            "{what}: {response}"
        );
    }
    assert_eq!(gate.upstream.count(), 1);
}

/// SPEC §4, "Requests and connections": `Host` as RFC 9112 §3.2 wants it, `CONNECT` and
/// `TRACE` refused, a malformed body blamed on the client, and escapes that are not UTF-8
/// refused. None of these reach the upstream.
#[tokio::test]
async fn bad_hosts_methods_bodies_and_escapes_are_the_clients_fault() {
    let gate = Gate::start().await;
    let token = gate.token("read write", Some("urn:products")).await;
    let addr = gate.isogate.addr(Role::Proxy);
    let auth = format!("Authorization: Bearer {token}\r\nConnection: close\r\n");
    let cases = [
        (
            "no Host",
            format!("GET /products HTTP/1.1\r\n{auth}\r\n"),
            "400",
            "bad_host",
        ),
        (
            "two Hosts",
            format!("GET /products HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n{auth}\r\n"),
            "400",
            "bad_host",
        ),
        (
            "an invalid Host",
            format!("GET /products HTTP/1.1\r\nHost: a b\r\n{auth}\r\n"),
            "400",
            "bad_host",
        ),
        (
            "a Host with userinfo",
            format!("GET /products HTTP/1.1\r\nHost: user@a.example\r\n{auth}\r\n"),
            "400",
            "bad_host",
        ),
        (
            "CONNECT",
            format!("CONNECT /products HTTP/1.1\r\nHost: x\r\n{auth}\r\n"),
            "405",
            "method_not_allowed",
        ),
        (
            "TRACE",
            format!("TRACE /products HTTP/1.1\r\nHost: x\r\n{auth}\r\n"),
            "405",
            "method_not_allowed",
        ),
        (
            "an overlong '.'",
            format!("GET /products/%c0%ae%c0%ae/x HTTP/1.1\r\nHost: x\r\n{auth}\r\n"),
            "400",
            "bad_path",
        ),
        (
            "a lone continuation byte",
            format!("GET /products/%80 HTTP/1.1\r\nHost: x\r\n{auth}\r\n"),
            "400",
            "bad_path",
        ),
    ];
    for (what, request, status, _) in &cases {
        let response = raw(addr, request.as_bytes()).await;
        assert!(
            response.starts_with(&format!("HTTP/1.1 {status}")),
            "{what}: {response}"
        );
    }
    // UTF-8 escapes pass, and HTTP/1.0 needs no Host.
    let fine = [
        format!("GET /products/caf%C3%A9 HTTP/1.1\r\nHost: x\r\n{auth}\r\n"),
        format!("GET /products HTTP/1.0\r\n{auth}\r\n"),
    ];
    for request in &fine {
        let response = raw(addr, request.as_bytes()).await;
        assert!(response.contains(" 200 "), "{request}: {response}");
    }
    assert_eq!(gate.upstream.count(), 2);

    // A chunked body that breaks off with a bad chunk: the client's fault, not the upstream's.
    let broken = format!(
        "POST /products HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n"
    );
    let response = raw(addr, broken.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(response.contains("invalid_request"), "{response}");

    let scrape = Scrape::of(&gate.isogate).await;
    let count = |reason: &str| -> f64 {
        scrape
            .series("isogate_requests_total")
            .iter()
            .filter(|s| s.labels.get("reason").map(String::as_str) == Some(reason))
            .map(|s| s.value)
            .sum()
    };
    assert_eq!(count("bad_host"), 4.0);
    assert_eq!(count("method_not_allowed"), 2.0);
    assert_eq!(count("bad_request_body"), 1.0);
    assert_eq!(count("upstream_unreachable"), 0.0);
}

#[tokio::test]
async fn upstream_failures_are_502_and_504() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let upstream = Upstream::start().await;
    let toml = issuer_section("http://isogate.test")
        + SEED
        + "\n[proxy]\nlisten = \"127.0.0.1:0\"\nupstream_timeout = \"1s\"\n"
        + &routes(&upstream.url()).replacen(&upstream.url(), &format!("http://{dead}"), 1);
    let isogate = Isogate::start(&toml).await;
    let gate = Gate { isogate, upstream };
    let invoices = gate.token("read", Some("urn:invoices")).await;
    assert_eq!(
        gate.get("/invoices", &invoices).await.status,
        StatusCode::BAD_GATEWAY
    );
    let products = gate.token("read", Some("urn:products")).await;
    let reply = gate.get("/products/slow", &products).await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(reply.json()["error"], "upstream_timeout");
}

#[tokio::test]
async fn large_bodies_stream_through() {
    let gate = Gate::start().await;
    let token = gate.token("write", Some("urn:products")).await;
    let body = vec![b'x'; 4 * 1024 * 1024];
    let req = Request::put(gate.url("/products/blob"))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let reply = send(req).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.text(),
        format!("upstream /products/blob {}", 4 * 1024 * 1024)
    );
}

#[tokio::test]
async fn http2_requests_pass_with_the_authority_as_host() {
    let gate = Gate::start().await;
    let token = gate.token("read", Some("urn:products")).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let req = Request::get(gate.url("/products/h2"))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::default())
        .unwrap();
    let response = client.request(req).await.expect("h2 request");
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    let seen = gate.upstream.last();
    assert_eq!(seen.target, "/products/h2");
    assert_eq!(
        seen.headers.get("x-forwarded-host").unwrap(),
        &gate.isogate.addr(Role::Proxy).to_string()
    );
}

/// A trusted issuer's key and token maker.
struct Remote {
    key: SigningKey,
    _dir: tempfile::TempDir,
}

impl Remote {
    fn new(kid: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        isogate::jwt::generate_key_file(&path, Alg::ES256).unwrap();
        Remote {
            key: SigningKey::from_file(&path, Alg::ES256, Some(kid.into()), false).unwrap(),
            _dir: dir,
        }
    }

    fn token(&self, issuer: &str) -> String {
        let mut c = claims(json!("urn:products"));
        c["iss"] = json!(issuer);
        c["jti"] = json!(format!("{}-{}", self.key.kid, rand_suffix()));
        isogate::jwt::encode(&self.key, "at+jwt", &c).unwrap()
    }
}

fn rand_suffix() -> u64 {
    let mut b = [0u8; 8];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    u64::from_le_bytes(b)
}

fn jwks(keys: &[&Remote]) -> String {
    serde_json::to_string(&json!({"keys": keys.iter().map(|k| serde_json::to_value(&k.key.jwk).unwrap()).collect::<Vec<_>>()})).unwrap()
}

#[tokio::test]
async fn a_trusted_issuers_rotating_jwks_is_followed_and_survives_an_outage() {
    let (k1, k2, k3) = (Remote::new("k1"), Remote::new("k2"), Remote::new("k3"));
    let idp = JwksServer::start(jwks(&[&k1])).await;
    let issuer = idp.issuer();
    let gate = Gate::with_proxy(&format!(
        "[[proxy.trusted_issuers]]\nissuer = \"{issuer}\"\n"
    ))
    .await;

    assert_eq!(
        gate.get("/products", &k1.token(&issuer)).await.status,
        StatusCode::OK,
        "discovered JWKS"
    );

    // Rotation: k2 appears; its first token triggers a refetch, no restart.
    idp.set(Some(jwks(&[&k1, &k2])));
    assert_eq!(
        gate.get("/products", &k2.token(&issuer)).await.status,
        StatusCode::OK,
        "new kid after rotation"
    );

    // The issuer goes down: the last good keys keep working, also for tokens never seen.
    idp.set(None);
    assert_eq!(
        gate.get("/products", &k1.token(&issuer)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        gate.get("/products", &k2.token(&issuer)).await.status,
        StatusCode::OK
    );

    // Unknown kids refetch at most once per 30 s.
    let before = idp.fetches();
    for _ in 0..3 {
        assert_eq!(
            gate.get("/products", &k3.token(&issuer)).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert!(
        idp.fetches() - before <= 1,
        "{} fetches",
        idp.fetches() - before
    );
    // A token naming the local issuer is still verified in-process.
    let local = gate.token("read", Some("urn:products")).await;
    assert_eq!(gate.get("/products", &local).await.status, StatusCode::OK);
}

/// A gateway alone, started while its trusted issuer is down: `/readyz` says what it waits for
/// (not an issuer with `wait_for_keys = false`), the log says no key set has arrived yet (not
/// that it keeps one), and once the issuer answers its tokens pass and the gateway is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_started_while_its_issuer_is_down_is_not_ready_until_the_first_key_set() {
    let upstream = Upstream::start().await;
    let key = Remote::new("k1");
    let idp = JwksServer::start(jwks(&[&key])).await;
    idp.set(None);
    let issuer = idp.issuer();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("isogate.toml");
    let config = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n\n\
         [[proxy.trusted_issuers]]\nissuer = \"{issuer}\"\n\n\
         [[proxy.trusted_issuers]]\nissuer = \"http://127.0.0.1:1\"\nwait_for_keys = false\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[api_scopes]]\nname = \"read\"\n\n\
         [[api_resources]]\nname = \"urn:products\"\nscopes = [\"read\"]\n\n\
         [[routes]]\npath_prefix = \"/products\"\nupstream = \"{}\"\nresource = \"urn:products\"\n",
        upstream.url()
    );
    std::fs::write(&path, config).unwrap();
    let mut running = Running::spawn(
        env!("CARGO_BIN_EXE_isogate"),
        &["serve", "--config", path.to_str().unwrap()],
    );
    let proxy = listening_addr(&running.wait_for("listening role=proxy")).unwrap();
    let admin = listening_addr(&running.wait_for("listening role=admin")).unwrap();
    let failed = running.wait_for(&format!("issuer={issuer} error="));
    assert!(
        failed.contains("no key set yet") && failed.contains("retry_in=30s"),
        "{failed}"
    );

    let ready = get(&format!("http://{admin}/readyz")).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        ready.text(),
        format!("not ready: waiting for the first key set of {issuer}\n"),
        "only the issuer that waits for keys is named"
    );

    // The issuer comes back; the first token of an unknown kid fetches its keys.
    idp.set(Some(jwks(&[&key])));
    let products = format!("http://{proxy}/products");
    let reply = with_bearer(Method::GET, &products, &key.token(&issuer)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let ready = get(&format!("http://{admin}/readyz")).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.text(), "ready\n");

    // An issuer a reload adds, down too, leaves a serving gateway ready.
    let added = std::fs::read_to_string(&path).unwrap().replacen(
        "[admin]",
        "[[proxy.trusted_issuers]]\nissuer = \"http://127.0.0.1:2\"\n\n[admin]",
        1,
    );
    write_atomically(&path, &added);
    running.wait_for("configuration reloaded");
    running.wait_for("issuer=http://127.0.0.1:2 error=");
    let ready = get(&format!("http://{admin}/readyz")).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text());

    running.signal("TERM");
    let (_, log) = tokio::task::spawn_blocking(move || running.finish())
        .await
        .unwrap();
    assert!(
        !log.contains("keeping the last good key set"),
        "there was none to keep:\n{log}"
    );
}

/// Reads from `stream` until `needle` has arrived (or 10 s pass); returns what was read.
async fn read_until(stream: &mut tokio::net::TcpStream, needle: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let mut buf = [0u8; 4096];
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test]
async fn expect_100_continue_is_answered_only_for_allowed_requests() {
    use tokio::io::AsyncWriteExt;
    let gate = Gate::start().await;
    let token = gate.token("write", Some("urn:products")).await;
    let addr = gate.isogate.addr(Role::Proxy);

    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!("PUT /products/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let interim = read_until(&mut stream, "\r\n\r\n").await;
    assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim}");
    stream.write_all(b"hello").await.unwrap();
    let response = read_until(&mut stream, "upstream /products/1 5").await;
    assert!(response.contains("HTTP/1.1 200 OK"), "{response}");
    assert_eq!(
        gate.upstream.last().headers.get("expect"),
        None,
        "isogate answered it"
    );

    // Without a token the refusal comes at once, and the body is never asked for.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = "PUT /products/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let response = read_until(&mut stream, "\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 401"), "{response}");
    assert_eq!(gate.upstream.count(), 1);
}

/// `Trailer` is on SPEC §4's hop-by-hop list, so trailer fields end at the gateway; the chunked
/// body itself arrives intact.
#[tokio::test]
async fn chunked_requests_with_trailers_arrive_intact() {
    let gate = Gate::start().await;
    let token = gate.token("write", Some("urn:products")).await;
    let request = format!(
        "POST /products/t HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: abc\r\n\r\n"
    );
    let response = raw(gate.isogate.addr(Role::Proxy), request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let seen = gate.upstream.last();
    assert_eq!(seen.body.as_ref(), b"hello world");
    assert_eq!(seen.headers.get("trailer"), None);
}

/// A trusted issuer whose JWKS holds two keys of one type under one `kid` (a rotation that
/// reused it): tokens signed by either pass.
#[tokio::test]
async fn two_remote_keys_under_one_kid_both_verify() {
    let (old, new) = (Remote::new("same"), Remote::new("same"));
    let idp = JwksServer::start(jwks(&[&old, &new])).await;
    let issuer = idp.issuer();
    let gate = Gate::with_proxy(&format!(
        "[[proxy.trusted_issuers]]\nissuer = \"{issuer}\"\n"
    ))
    .await;
    for remote in [&old, &new] {
        assert_eq!(
            gate.get("/products", &remote.token(&issuer)).await.status,
            StatusCode::OK
        );
    }
    let stranger = Remote::new("same");
    assert_eq!(
        gate.get("/products", &stranger.token(&issuer)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// `POST /connect/revocation` of `token` as `client`.
async fn revoke(gate: &Gate, token: &str, client: &str) -> Reply {
    post_form(
        &gate.isogate.issuer_url("/connect/revocation"),
        &[("token", token)],
        Some((client, SECRET)),
    )
    .await
}

#[tokio::test]
async fn a_revoked_access_token_is_refused_at_once_cached_or_not() {
    let gate = Gate::start().await;
    let used = gate.token("read", Some("urn:invoices")).await;
    assert_eq!(gate.get("/invoices/1", &used).await.status, StatusCode::OK);
    let fresh = gate.token("read", Some("urn:invoices")).await;
    let kept = gate.token("read", Some("urn:invoices")).await;
    for token in [&used, &fresh] {
        assert_eq!(revoke(&gate, token, "client").await.status, StatusCode::OK);
    }
    // Cached (used before) or not, each is refused from the revocation on.
    for token in [&used, &fresh] {
        let reply = gate.get("/invoices/1", token).await;
        assert_refused(&reply, StatusCode::UNAUTHORIZED, "invalid_token");
        let challenge = reply.header("www-authenticate").unwrap();
        assert!(
            challenge.contains("error_description=\"token revoked\""),
            "{challenge}"
        );
    }
    assert_eq!(gate.get("/invoices/1", &kept).await.status, StatusCode::OK);
    assert_eq!(gate.upstream.count(), 2, "revoked tokens never reach it");
    let scrape = Scrape::of(&gate.isogate).await;
    let labels = [
        ("role", "proxy"),
        ("route", "/invoices"),
        ("status", "401"),
        ("reason", "token_revoked"),
    ];
    assert_eq!(scrape.get("isogate_requests_total", &labels), 2.0);
}

#[tokio::test]
async fn only_the_client_a_token_was_issued_to_revokes_it_and_a_restart_keeps_it_revoked() {
    let extra = include_str!("../fixtures/users.toml");
    let upstream = Upstream::start().await;
    let toml = issuer_section("http://isogate.test")
        + SEED
        + extra
        + "\n[proxy]\nlisten = \"127.0.0.1:0\"\n"
        + &routes(&upstream.url());
    let isogate = Isogate::start(&toml).await;
    let gate = Gate { isogate, upstream };
    let token = gate.token("read", Some("urn:invoices")).await;
    // Another client's revocation is answered 200 and changes nothing (RFC 7009 §2.1).
    assert_eq!(revoke(&gate, &token, "web").await.status, StatusCode::OK);
    assert_eq!(gate.get("/invoices/1", &token).await.status, StatusCode::OK);
    // A token that is not one of ours is answered 200 too.
    assert_eq!(
        revoke(&gate, "x.y.z", "client").await.status,
        StatusCode::OK
    );
    assert_eq!(revoke(&gate, &token, "client").await.status, StatusCode::OK);
    assert_eq!(
        gate.get("/invoices/1", &token).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Restarted on the same folder (the same grant store), it is still refused.
    let Gate { isogate, upstream } = gate;
    let Isogate { server, dir, .. } = isogate;
    server.shutdown().await;
    let isogate = Isogate::start_existing(dir, &toml).await;
    let gate = Gate { isogate, upstream };
    let reply = gate.get("/invoices/1", &token).await;
    assert_refused(&reply, StatusCode::UNAUTHORIZED, "invalid_token");
}
