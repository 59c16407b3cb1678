//! Discovery and JWKS as a strict client reads them.

use http::StatusCode;
use serde_json::Value;

use crate::support::*;

#[tokio::test]
async fn both_well_known_documents_describe_the_issuer() {
    let isogate = Isogate::seed().await;
    let oidc = get(&isogate.issuer_url("/.well-known/openid-configuration")).await;
    let oauth = get(&isogate.issuer_url("/.well-known/oauth-authorization-server")).await;
    assert_eq!(oidc.status, StatusCode::OK);
    assert_eq!(oidc.header("content-type"), Some("application/json"));
    assert_eq!(oidc.json(), oauth.json());
    let doc = oidc.json();
    assert_eq!(doc["issuer"], "http://isogate.test");
    assert_eq!(doc["token_endpoint"], "http://isogate.test/connect/token");
    assert_eq!(doc["jwks_uri"], "http://isogate.test/.well-known/jwks");
    assert_eq!(doc["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(
        doc["subject_types_supported"],
        serde_json::json!(["public"])
    );
    assert_eq!(doc["id_token_signing_alg_values_supported"][0], "RS256");
    assert_eq!(
        doc["token_endpoint_auth_methods_supported"],
        serde_json::json!([
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
            "none"
        ])
    );
    assert_eq!(
        doc["grant_types_supported"],
        serde_json::json!(["authorization_code", "client_credentials", "refresh_token"])
    );
    for (key, path) in [
        ("authorization_endpoint", "/connect/authorize"),
        ("userinfo_endpoint", "/connect/userinfo"),
        ("introspection_endpoint", "/connect/introspect"),
        ("revocation_endpoint", "/connect/revocation"),
    ] {
        assert_eq!(doc[key], format!("http://isogate.test{path}"), "{key}");
    }
    let scopes = doc["scopes_supported"].as_array().unwrap();
    for s in ["read", "write", "transaction"] {
        assert!(scopes.contains(&s.into()), "{s}");
    }
}

#[tokio::test]
async fn jwks_publishes_public_keys_only() {
    let isogate = Isogate::seed().await;
    let reply = get(&isogate.issuer_url("/.well-known/jwks")).await;
    assert_eq!(
        reply.header("content-type"),
        Some("application/jwk-set+json")
    );
    let jwks = reply.json();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    for key in keys {
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            assert!(
                key.get(private).is_none(),
                "private member {private} published: {key}"
            );
        }
        assert_eq!(key["use"], "sig");
    }
    assert_eq!(
        (
            keys[0]["kty"].as_str(),
            keys[0]["crv"].as_str(),
            keys[0]["alg"].as_str()
        ),
        (Some("EC"), Some("P-256"), Some("ES256"))
    );
    assert_eq!(
        (keys[1]["kty"].as_str(), keys[1]["alg"].as_str()),
        (Some("RSA"), Some("RS256"))
    );
}

#[tokio::test]
async fn kid_defaults_to_the_rfc7638_thumbprint() {
    let toml = issuer_section("http://isogate.test")
        .replace("kid = \"es\"\n", "")
        .replace("kid = \"rs\"\n", "")
        + SEED;
    let isogate = Isogate::start(&toml).await;
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_slice(&get(&isogate.issuer_url("/.well-known/jwks")).await.body).unwrap();
    for jwk in &jwks.keys {
        let thumbprint = jwk
            .thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
            .unwrap();
        assert_eq!(jwk.common.key_id.as_deref(), Some(thumbprint.as_str()));
    }
    // Tokens name it.
    let body = isogate
        .token_ok(&[("grant_type", "client_credentials")])
        .await;
    let (header, _) = decode_parts(body["access_token"].as_str().unwrap());
    assert_eq!(
        header["kid"].as_str(),
        jwks.keys[0].common.key_id.as_deref()
    );
}

#[tokio::test]
async fn an_issuer_with_a_path_serves_below_it() {
    let isogate = Isogate::start(&(issuer_section("http://isogate.test/tenant") + SEED)).await;
    let doc = get(&isogate.issuer_url("/tenant/.well-known/openid-configuration"))
        .await
        .json();
    assert_eq!(doc["issuer"], "http://isogate.test/tenant");
    assert_eq!(
        doc["token_endpoint"],
        "http://isogate.test/tenant/connect/token"
    );
    let reply = post_form(
        &isogate.issuer_url("/tenant/connect/token"),
        &[("grant_type", "client_credentials")],
        Some(("client", SECRET)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let (_, claims) = decode_parts(reply.json()["access_token"].as_str().unwrap());
    assert_eq!(claims["iss"], "http://isogate.test/tenant");
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let isogate = Isogate::seed().await;
    assert_eq!(
        get(&isogate.issuer_url("/nope")).await.status,
        StatusCode::NOT_FOUND
    );
    let reply = post_form(&isogate.issuer_url("/.well-known/jwks"), &[], None).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.header("allow"), Some("GET, HEAD"));
    let _: Value = get(&isogate.issuer_url("/.well-known/jwks")).await.json();
}

/// An issuer without an RS256 key is no OpenID provider: its RFC 8414 document is served, the
/// OpenID one, which strict clients would reject, is not.
#[tokio::test]
async fn without_an_rs256_key_no_openid_document_is_published() {
    let es256_only = issuer_section("http://isogate.test").replace(
        "\n[[issuer.signing_keys]]\nfile = \"keys/rs256.pem\"\nalg = \"RS256\"\nkid = \"rs\"\ngenerate_if_missing = true\n",
        "",
    );
    let isogate = Isogate::start(&(es256_only + SEED)).await;
    let oidc = get(&isogate.issuer_url("/.well-known/openid-configuration")).await;
    assert_eq!(oidc.status, StatusCode::NOT_FOUND);
    assert!(oidc.text().contains("RS256"), "{}", oidc.text());
    let oauth = get(&isogate.issuer_url("/.well-known/oauth-authorization-server")).await;
    assert_eq!(oauth.status, StatusCode::OK);
    assert_eq!(oauth.json()["issuer"], "http://isogate.test");
}
