//! private_key_jwt (SPEC §9, RFC 7523): clients of the file that authenticate with an assertion
//! signed by their own key, from a `jwks_file` or a `jwks_uri` served by the test; every check
//! of docs/private_key_jwt.md refused once; a `jti` spent at one instance of a fleet refused at
//! the other, on a real PostgreSQL.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::StatusCode;
use isogate::jwt::{Alg, SigningKey};
use serde_json::{json, Value};

use crate::servers::{JwksServer, Upstream};
use crate::support::*;

const ISSUER: &str = "http://isogate.test";
pub(crate) const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A client's key pair.
pub(crate) struct Key {
    pub(crate) key: SigningKey,
    _dir: tempfile::TempDir,
}

impl Key {
    pub(crate) fn new(kid: &str, alg: Alg) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        isogate::jwt::generate_key_file(&path, alg).unwrap();
        Key {
            key: SigningKey::from_file(&path, alg, Some(kid.into()), false).unwrap(),
            _dir: dir,
        }
    }

    /// `claims` signed, with the usual JWT header of an assertion.
    pub(crate) fn sign(&self, claims: &Value) -> String {
        isogate::jwt::encode(&self.key, "JWT", claims).unwrap()
    }
}

fn jwks(keys: &[&Key]) -> String {
    json!({"keys": keys.iter().map(|k| serde_json::to_value(&k.key.jwk).unwrap()).collect::<Vec<_>>()})
        .to_string()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn unique() -> String {
    let mut b = [0u8; 12];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    URL_SAFE_NO_PAD.encode(b)
}

/// The claims of a good assertion by `client_id`.
pub(crate) fn claims(client_id: &str) -> Value {
    let now = now();
    json!({"iss": client_id, "sub": client_id, "aud": ISSUER, "iat": now, "exp": now + 60,
           "jti": unique()})
}

/// The `[[clients]]` entries: `signed` with its keys in signed.jwks.json, `remote` with its
/// keys at `jwks_uri`.
fn clients(jwks_uri: &str) -> String {
    format!(
        r#"
[[clients]]
client_id = "signed"
token_endpoint_auth_method = "private_key_jwt"
jwks_file = "signed.jwks.json"
allowed_grant_types = ["client_credentials"]
allowed_scopes = ["read"]

[[clients]]
client_id = "remote"
token_endpoint_auth_method = "private_key_jwt"
jwks_uri = "{jwks_uri}"
allowed_grant_types = ["client_credentials"]
allowed_scopes = ["read"]
"#
    )
}

/// A token request authenticated by `assertion` (and `extra` parameters).
async fn with_assertion(isogate: &Isogate, assertion: &str, extra: &[(&str, &str)]) -> Reply {
    let mut form = vec![
        ("grant_type", "client_credentials"),
        ("scope", "read"),
        ("resource", "urn:products"),
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", assertion),
    ];
    form.extend_from_slice(extra);
    post_form(&isogate.issuer_url("/connect/token"), &form, None).await
}

/// RFC 6749 §5.2: 400, as no HTTP Basic credentials were tried.
fn assert_invalid_client(reply: &Reply, needle: &str, what: &str) {
    assert_eq!(
        reply.status,
        StatusCode::BAD_REQUEST,
        "{what}: {}",
        reply.text()
    );
    let body = reply.json();
    assert_eq!(body["error"], "invalid_client", "{what}");
    let description = body["error_description"].as_str().unwrap_or_default();
    assert!(
        description.contains(needle),
        "{what}: {description:?} lacks {needle:?}"
    );
}

async fn start(key: &Key, jwks_uri: &str) -> Isogate {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("signed.jwks.json"), jwks(&[key])).unwrap();
    let toml = issuer_section(ISSUER) + SEED + &clients(jwks_uri);
    Isogate::start_in(dir, &toml).await
}

#[tokio::test]
async fn a_signed_assertion_authenticates_once_and_every_bad_one_is_refused() {
    let key = Key::new("k1", Alg::ES256);
    let isogate = start(&key, "http://127.0.0.1:9/unused").await;

    let discovery = get(&isogate.issuer_url("/.well-known/openid-configuration"))
        .await
        .json();
    let methods = discovery["token_endpoint_auth_methods_supported"].to_string();
    assert!(methods.contains("private_key_jwt"), "{methods}");
    assert_eq!(
        discovery["token_endpoint_auth_signing_alg_values_supported"],
        json!(["ES256", "ES384", "RS256", "PS256", "EdDSA"])
    );

    let assertion = key.sign(&claims("signed"));
    let reply = with_assertion(&isogate, &assertion, &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let token = reply.json()["access_token"].as_str().unwrap().to_owned();
    let access = verify(&isogate, &token, "urn:products").await;
    assert_eq!(access["client_id"], "signed");
    // Single use.
    let again = with_assertion(&isogate, &assertion, &[]).await;
    assert_invalid_client(&again, "used before", "the same assertion twice");
    // The token endpoint's URL is an audience too; a client_id in the body must agree.
    let mut to_endpoint = claims("signed");
    to_endpoint["aud"] = json!([format!("{ISSUER}/connect/token")]);
    let reply = with_assertion(
        &isogate,
        &key.sign(&to_endpoint),
        &[("client_id", "signed")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let reply = with_assertion(
        &isogate,
        &key.sign(&claims("signed")),
        &[("client_id", "remote")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());

    let other = Key::new("k1", Alg::ES256);
    let now = now();
    let with = |changes: Value| {
        let mut c = claims("signed");
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let unsigned = {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"k1"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims("signed").to_string());
        format!("{header}.{payload}.")
    };
    let hmac = {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","kid":"k1"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims("signed").to_string());
        format!("{header}.{payload}.c2lnbmF0dXJl")
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            key.sign(&with(json!({"exp": now - 120}))),
            "expired",
        ),
        (
            "an hour long",
            key.sign(&with(json!({"exp": now + 3600}))),
            "at most 300 seconds",
        ),
        (
            "another audience",
            key.sign(&with(json!({"aud": "https://other.example"}))),
            "aud must be",
        ),
        ("no jti", key.sign(&with(json!({"jti": null}))), "no jti"),
        (
            "not yet valid",
            key.sign(&with(json!({"nbf": now + 600}))),
            "not valid yet",
        ),
        (
            "iss of another",
            key.sign(&with(json!({"iss": "remote"}))),
            "iss must be the client_id",
        ),
        (
            "another key, same kid",
            other.sign(&claims("signed")),
            "signature",
        ),
        (
            "an unknown kid",
            Key::new("k9", Alg::ES256).sign(&claims("signed")),
            "kid",
        ),
        ("alg none", unsigned, "alg"),
        ("HS256", hmac, "alg"),
        ("not a JWT", "not-a-jwt".to_owned(), "sub names the client"),
        // The file's secret client has no keys; a name no client has.
        (
            "a secret client",
            key.sign(&claims("client")),
            "client authentication failed",
        ),
        (
            "an unknown client",
            key.sign(&claims("nobody")),
            "client authentication failed",
        ),
    ];
    for (what, assertion, needle) in &cases {
        let reply = with_assertion(&isogate, assertion, &[]).await;
        assert_invalid_client(&reply, needle, what);
    }

    // One method at a time: an assertion with a secret, or with Basic, is malformed; a
    // private_key_jwt client's secret is no credential; the type must be the jwt-bearer one.
    let fresh = key.sign(&claims("signed"));
    let reply = with_assertion(&isogate, &fresh, &[("client_secret", "secret")]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    let form = [
        ("grant_type", "client_credentials"),
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", fresh.as_str()),
    ];
    let reply = post_form(
        &isogate.issuer_url("/connect/token"),
        &form,
        Some(("client", SECRET)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", "signed"),
        ("client_secret", "secret"),
    ];
    let reply = post_form(&isogate.issuer_url("/connect/token"), &form, None).await;
    assert_invalid_client(
        &reply,
        "client authentication failed",
        "a secret for a key client",
    );
    let form = [
        ("grant_type", "client_credentials"),
        ("client_assertion_type", "urn:other"),
        ("client_assertion", fresh.as_str()),
    ];
    let reply = post_form(&isogate.issuer_url("/connect/token"), &form, None).await;
    assert_invalid_client(
        &reply,
        "client_assertion_type must be",
        "another assertion type",
    );
    // The refused fresh assertion was never spent: it still works.
    let reply = with_assertion(&isogate, &fresh, &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

#[tokio::test]
async fn jwks_uri_keys_are_fetched_kept_and_fetched_again_for_a_new_kid() {
    let (k1, k2, k3) = (
        Key::new("k1", Alg::ES256),
        Key::new("k2", Alg::RS256),
        Key::new("k3", Alg::EdDSA),
    );
    let server = JwksServer::start(jwks(&[&k1])).await;
    let isogate = start(&k1, &format!("{}/jwks", server.issuer())).await;
    for _ in 0..2 {
        let reply = with_assertion(&isogate, &k1.sign(&claims("remote")), &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }
    assert_eq!(server.fetches(), 1, "kept, not fetched per request");
    // The client adds a key: the unknown kid fetches the set again.
    server.set(Some(jwks(&[&k1, &k2])));
    let reply = with_assertion(&isogate, &k2.sign(&claims("remote")), &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(server.fetches(), 2);
    // Another unknown kid right after: not fetched again within 30 s.
    server.set(Some(jwks(&[&k1, &k2, &k3])));
    let reply = with_assertion(&isogate, &k3.sign(&claims("remote")), &[]).await;
    assert_invalid_client(&reply, "kid", "a second new kid within 30 s");
    assert_eq!(server.fetches(), 2);
    // The URI down: the kept set still serves.
    server.set(None);
    let reply = with_assertion(&isogate, &k1.sign(&claims("remote")), &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

#[tokio::test]
async fn keys_files_are_checked_when_the_file_is_loaded() {
    let key = Key::new("k1", Alg::ES256);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("signed.jwks.json"),
        r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}"#,
    )
    .unwrap();
    let toml = issuer_section(ISSUER) + SEED + &clients("ftp://nowhere");
    let path = dir.path().join("isogate.toml");
    std::fs::write(&path, &toml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_isogate"))
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    // The seed's secret client is clients[0].
    assert!(
        stderr.contains("clients[1].jwks_file: the key h is not usable: symmetric"),
        "{stderr}"
    );
    assert!(
        stderr.contains("clients[2].jwks_uri: must be an https URL"),
        "{stderr}"
    );
    assert!(stderr.contains("2 problems"), "{stderr}");
    drop(key);
}

#[tokio::test]
async fn an_assertion_spent_at_one_instance_is_refused_at_the_other() {
    let key = Key::new("k1", Alg::ES256);
    let server = JwksServer::start(jwks(&[&key])).await;
    let remote = format!(
        r#"
[[clients]]
client_id = "remote"
token_endpoint_auth_method = "private_key_jwt"
jwks_uri = "{}/jwks"
allowed_grant_types = ["client_credentials"]
allowed_scopes = ["read"]
"#,
        server.issuer()
    );
    let upstream = Upstream::start().await;
    let Some((a, b)) = crate::fleet::fleet_with(&upstream, &remote).await else {
        return;
    };
    let assertion = key.sign(&claims("remote"));
    let reply = with_assertion(&a, &assertion, &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let reply = with_assertion(&b, &assertion, &[]).await;
    assert_invalid_client(&reply, "used before", "replayed at the other instance");
    let reply = with_assertion(&b, &key.sign(&claims("remote")), &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}
