//! The token endpoint (SPEC §3) over real HTTP: what a client developer sees.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::json;

use crate::support::*;

fn assert_error(reply: &Reply, status: StatusCode, error: &str) {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert_eq!(reply.json()["error"], error, "{}", reply.text());
    assert!(reply.json()["error_description"].is_string());
    assert_eq!(reply.header("cache-control"), Some("no-store"));
}

#[tokio::test]
async fn seed_token_for_invoices_names_invoices_alone() {
    let isogate = Isogate::seed().await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(isogate.path("keys/es256.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "generated keys are private");
    }
    let reply = isogate
        .token(&[
            ("grant_type", "client_credentials"),
            ("scope", "read"),
            ("resource", "urn:invoices"),
        ])
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.header("pragma"), Some("no-cache"));
    let body = reply.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], "read");
    let token = body["access_token"].as_str().unwrap();

    let (header, _) = decode_parts(token);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["kid"], "es");

    let claims = verify(&isogate, token, "urn:invoices").await;
    assert_eq!(claims["aud"], "urn:invoices", "one audience is a string");
    assert_eq!(claims["iss"], "http://isogate.test");
    assert_eq!(claims["sub"], "client", "no user: sub is the client");
    assert_eq!(claims["client_id"], "client");
    assert_eq!(claims["scope"], "read");
    assert_eq!(claims["iat"], claims["nbf"]);
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        3600
    );
    assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 22));
}

#[tokio::test]
async fn without_indicator_the_isolated_resource_drops_out_of_aud() {
    let isogate = Isogate::seed().await;
    let body = isogate
        .token_ok(&[
            ("grant_type", "client_credentials"),
            ("scope", "read write"),
        ])
        .await;
    assert_eq!(body["scope"], "read write");
    let claims = verify(
        &isogate,
        body["access_token"].as_str().unwrap(),
        "urn:products",
    )
    .await;
    assert_eq!(claims["aud"], "urn:products");
    assert_eq!(claims["scope"], "read write");
}

#[tokio::test]
async fn shared_scope_without_isolation_names_both_resources_as_an_array() {
    let toml = issuer_section("http://isogate.test")
        + &SEED.replace("require_resource_indicator = true", "");
    let isogate = Isogate::start(&toml).await;
    let body = isogate
        .token_ok(&[("grant_type", "client_credentials"), ("scope", "read")])
        .await;
    let (_, claims) = decode_parts(body["access_token"].as_str().unwrap());
    assert_eq!(claims["aud"], json!(["urn:invoices", "urn:products"]));
}

#[tokio::test]
async fn indicator_cuts_scopes_down_and_the_response_says_so() {
    let isogate = Isogate::seed().await;
    let body = isogate
        .token_ok(&[
            ("grant_type", "client_credentials"),
            ("scope", "read transaction:42"),
            ("resource", "urn:payments"),
        ])
        .await;
    assert_eq!(body["scope"], "transaction:42");
    let claims = verify(
        &isogate,
        body["access_token"].as_str().unwrap(),
        "urn:payments",
    )
    .await;
    assert_eq!(claims["scope"], "transaction:42");
    assert_eq!(claims["transaction_id"], "42", "parameter_claim");
}

#[tokio::test]
async fn no_scope_means_every_allowed_non_parameterized_scope() {
    let isogate = Isogate::seed().await;
    let body = isogate
        .token_ok(&[
            ("grant_type", "client_credentials"),
            ("resource", "urn:invoices"),
        ])
        .await;
    assert_eq!(body["scope"], "read write");
}

#[tokio::test]
async fn scope_only_of_isolated_resource_without_indicator_is_invalid_target() {
    let toml = issuer_section("http://isogate.test")
        + &SEED.replace(
            "name = \"urn:products\"",
            "name = \"urn:products\"\nrequire_resource_indicator = true",
        );
    let isogate = Isogate::start(&toml).await;
    let reply = isogate
        .token(&[("grant_type", "client_credentials"), ("scope", "read")])
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_target");
    assert!(
        reply.text().contains("resource indicator is required"),
        "{}",
        reply.text()
    );
}

#[tokio::test]
async fn resource_indicator_errors_are_invalid_target() {
    let isogate = Isogate::seed().await;
    let long = format!("urn:{}", "x".repeat(600));
    let cases: &[&[(&str, &str)]] = &[
        &[("resource", "urn:invoices"), ("resource", "urn:products")],
        &[("resource", "urn:unknown")],
        &[("resource", "invoices")],
        &[("resource", "urn:invoices#frag")],
        &[("resource", &long)],
        &[("resource", "urn:payments")],
    ];
    for extra in cases {
        let mut form = vec![("grant_type", "client_credentials"), ("scope", "read")];
        form.extend_from_slice(extra);
        assert_error(
            &isogate.token(&form).await,
            StatusCode::BAD_REQUEST,
            "invalid_target",
        );
    }
}

#[tokio::test]
async fn scope_errors_are_invalid_scope() {
    let isogate = Isogate::seed().await;
    for scope in [
        "delete",
        "transaction",
        "transaction:",
        "openid",
        "read offline_access",
    ] {
        let reply = isogate
            .token(&[("grant_type", "client_credentials"), ("scope", scope)])
            .await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_scope");
    }
}

#[tokio::test]
async fn client_secret_post_authenticates_too() {
    let isogate = Isogate::seed().await;
    let reply = post_form(
        &isogate.issuer_url("/connect/token"),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "client"),
            ("client_secret", SECRET),
            ("scope", "write"),
        ],
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

#[tokio::test]
async fn basic_credentials_are_form_urlencoded_per_rfc6749() {
    let secret = "p@ss word:+%é";
    let hash = isogate::secret::SecretHash::of(secret.as_bytes()).to_stored();
    let toml = issuer_section("http://isogate.test")
        + &SEED
            .replace("client_id = \"client\"", "client_id = \"my client:1\"")
            .replace(SECRET_HASH, &hash);
    let isogate = Isogate::start(&toml).await;
    let url = isogate.issuer_url("/connect/token");
    let form = [("grant_type", "client_credentials")];
    assert_eq!(
        post_form(&url, &form, Some(("my client:1", secret)))
            .await
            .status,
        StatusCode::OK
    );
    let reply = post_form(&url, &form, Some(("my client:1", "p@ss word:+%e"))).await;
    assert_error(&reply, StatusCode::UNAUTHORIZED, "invalid_client");
}

#[tokio::test]
async fn failed_client_authentication_is_invalid_client() {
    let isogate = Isogate::seed().await;
    let url = isogate.issuer_url("/connect/token");
    let form = [("grant_type", "client_credentials")];
    // Basic: 401 with a Basic challenge.
    for (id, secret) in [("client", "wrong"), ("nobody", SECRET)] {
        let reply = post_form(&url, &form, Some((id, secret))).await;
        assert_error(&reply, StatusCode::UNAUTHORIZED, "invalid_client");
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Basic realm=\"isogate\"")
        );
    }
    // In the body: 400, no challenge.
    let reply = post_form(
        &url,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "client"),
            ("client_secret", "wrong"),
        ],
        None,
    )
    .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_client");
    assert_eq!(reply.header("www-authenticate"), None);
    // No credentials at all; a confidential client by id alone.
    assert_error(
        &post_form(&url, &form, None).await,
        StatusCode::BAD_REQUEST,
        "invalid_client",
    );
    let reply = post_form(
        &url,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "client"),
        ],
        None,
    )
    .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_client");
}

#[tokio::test]
async fn grant_type_errors() {
    let toml = issuer_section("http://isogate.test")
        + SEED
        + r#"
[[clients]]
client_id = "web"
secrets = ["sha256:K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols="]
allowed_grant_types = ["authorization_code"]
redirect_uris = ["https://app.example.com/cb"]
allowed_scopes = ["read"]
"#;
    let isogate = Isogate::start(&toml).await;
    let url = isogate.issuer_url("/connect/token");
    assert_error(
        &isogate.token(&[("scope", "read")]).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    assert_error(
        &isogate.token(&[("grant_type", "password")]).await,
        StatusCode::BAD_REQUEST,
        "unsupported_grant_type",
    );
    let reply = post_form(
        &url,
        &[("grant_type", "client_credentials")],
        Some(("web", SECRET)),
    )
    .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "unauthorized_client");
}

#[tokio::test]
async fn malformed_requests_are_invalid_request_and_lose_nothing() {
    let isogate = Isogate::seed().await;
    let url = isogate.issuer_url("/connect/token");
    // A repeated single-value parameter.
    let reply = isogate
        .token(&[
            ("grant_type", "client_credentials"),
            ("scope", "read"),
            ("scope", "write"),
        ])
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request");
    // Not a form.
    let req = Request::post(&url)
        .header("content-type", "application/json")
        .header("authorization", basic("client", SECRET))
        .body(Full::new(Bytes::from(
            r#"{"grant_type":"client_credentials"}"#,
        )))
        .unwrap();
    assert_error(&send(req).await, StatusCode::BAD_REQUEST, "invalid_request");
    // Two Authorization headers.
    let req = Request::post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", basic("client", SECRET))
        .header("authorization", basic("client", SECRET))
        .body(Full::new(Bytes::from("grant_type=client_credentials")))
        .unwrap();
    assert_error(&send(req).await, StatusCode::BAD_REQUEST, "invalid_request");
    // Basic and client_secret together.
    let reply = isogate
        .token(&[
            ("grant_type", "client_credentials"),
            ("client_secret", SECRET),
        ])
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request");
    // Bytes that are not UTF-8 nor sensible form encoding.
    let req = Request::post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", basic("client", SECRET))
        .body(Full::new(Bytes::from_static(
            b"\xff\xfe=%%%&&==\x00grant_type",
        )))
        .unwrap();
    assert_error(&send(req).await, StatusCode::BAD_REQUEST, "invalid_request");
    // Malformed Basic credentials.
    let req = Request::post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", "Basic !!!notbase64")
        .body(Full::new(Bytes::from("grant_type=client_credentials")))
        .unwrap();
    assert_error(&send(req).await, StatusCode::UNAUTHORIZED, "invalid_client");
    // The server still issues tokens afterwards.
    isogate
        .token_ok(&[("grant_type", "client_credentials")])
        .await;
}

#[tokio::test]
async fn a_body_over_64_kib_is_413() {
    let isogate = Isogate::seed().await;
    let padding = "x".repeat(70 * 1024);
    let reply = isogate
        .token(&[("grant_type", "client_credentials"), ("pad", &padding)])
        .await;
    assert_error(&reply, StatusCode::PAYLOAD_TOO_LARGE, "invalid_request");
    // Also when sent chunked, without a Content-Length.
    let chunk = "x".repeat(8 * 1024);
    let mut request = format!(
        "POST /connect/token HTTP/1.1\r\nHost: isogate.test\r\nContent-Type: application/x-www-form-urlencoded\r\nAuthorization: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        basic("client", SECRET)
    );
    for _ in 0..9 {
        request.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    request.push_str("0\r\n\r\n");
    let response = raw(isogate.addr(isogate::Role::Issuer), request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
}

#[tokio::test]
async fn the_token_endpoint_answers_only_post() {
    let isogate = Isogate::seed().await;
    let reply = get(&isogate.issuer_url("/connect/token")).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.header("allow"), Some("POST"));
    let req = Request::builder()
        .method(Method::PUT)
        .uri(isogate.issuer_url("/connect/token"))
        .body(Full::default())
        .unwrap();
    assert_eq!(send(req).await.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn allowed_signing_algs_pick_the_signing_key() {
    let toml = issuer_section("http://isogate.test")
        + &SEED.replace(
            "name = \"urn:products\"",
            "name = \"urn:products\"\nallowed_signing_algs = [\"RS256\"]",
        );
    let isogate = Isogate::start(&toml).await;
    let body = isogate
        .token_ok(&[
            ("grant_type", "client_credentials"),
            ("scope", "read"),
            ("resource", "urn:products"),
        ])
        .await;
    let token = body["access_token"].as_str().unwrap();
    let (header, _) = decode_parts(token);
    assert_eq!(
        (header["alg"].as_str(), header["kid"].as_str()),
        (Some("RS256"), Some("rs"))
    );
    verify(&isogate, token, "urn:products").await;
    // Invoices accepts any alg: the first key signs.
    let body = isogate
        .token_ok(&[
            ("grant_type", "client_credentials"),
            ("scope", "read"),
            ("resource", "urn:invoices"),
        ])
        .await;
    assert_eq!(
        decode_parts(body["access_token"].as_str().unwrap()).0["alg"],
        "ES256"
    );
}

#[tokio::test]
async fn a_retired_key_is_published_but_never_signs() {
    let toml = (issuer_section("http://isogate.test") + SEED).replacen(
        "kid = \"es\"\ngenerate_if_missing = true",
        "kid = \"es\"\ngenerate_if_missing = true\nretired = true",
        1,
    );
    let isogate = Isogate::start(&toml).await;
    let jwks = get(&isogate.issuer_url("/.well-known/jwks")).await.json();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, ["es", "rs"]);
    for _ in 0..3 {
        let body = isogate
            .token_ok(&[
                ("grant_type", "client_credentials"),
                ("resource", "urn:invoices"),
            ])
            .await;
        assert_eq!(
            decode_parts(body["access_token"].as_str().unwrap()).0["kid"],
            "rs"
        );
    }
}

#[tokio::test]
async fn static_audience_and_client_lifetime() {
    let toml = (issuer_section("http://isogate.test") + SEED)
        .replace(
            "issuer = \"http://isogate.test\"",
            "issuer = \"http://isogate.test\"\nemit_static_audience = true",
        )
        .replace(
            "allowed_grant_types = [\"client_credentials\"]",
            "allowed_grant_types = [\"client_credentials\"]\naccess_token_lifetime = \"5m\"",
        );
    let isogate = Isogate::start(&toml).await;
    let body = isogate
        .token_ok(&[("grant_type", "client_credentials"), ("scope", "read")])
        .await;
    assert_eq!(body["expires_in"], 300);
    let (_, claims) = decode_parts(body["access_token"].as_str().unwrap());
    assert_eq!(
        claims["aud"],
        json!(["urn:products", "http://isogate.test/resources"])
    );
    let body = isogate
        .token_ok(&[
            ("grant_type", "client_credentials"),
            ("scope", "read"),
            ("resource", "urn:products"),
        ])
        .await;
    let (_, claims) = decode_parts(body["access_token"].as_str().unwrap());
    assert_eq!(
        claims["aud"], "urn:products",
        "no static audience with an indicator"
    );
}

#[tokio::test]
async fn every_token_has_its_own_jti() {
    let isogate = Isogate::seed().await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..5 {
        let body = isogate
            .token_ok(&[("grant_type", "client_credentials")])
            .await;
        let (_, claims) = decode_parts(body["access_token"].as_str().unwrap());
        assert!(seen.insert(claims["jti"].as_str().unwrap().to_owned()));
    }
}
