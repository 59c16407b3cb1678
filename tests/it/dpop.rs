//! SPEC §8 against the real server: DPoP-bound tokens from the token endpoint, checked at the
//! gateway with real proofs, real keys and a recording upstream.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use isogate::dpop::ProofKey;
use isogate::jwt::Alg;
use isogate::Role;
use serde_json::{json, Value};

use crate::gateway::routes;
use crate::interactive::{authorize_url_at, log_in_at, pkce, query, Browser, USERS};
use crate::servers::Upstream;
use crate::support::*;

const NATIVE_CALLBACK: &str = "http://127.0.0.1:1/native";

/// The advertised token endpoint a proof names: the issuer URL's, not the address the test
/// connects to.
const TOKEN_ENDPOINT: &str = "http://isogate.test/connect/token";

/// A client that must use DPoP, a public native client with refresh tokens, and an API that
/// takes DPoP-bound tokens only.
const DPOP: &str = r#"
[[api_resources]]
name = "urn:ledger"
scopes = ["read"]
require_dpop = true

[[clients]]
client_id = "bound"
secrets = ["sha256:K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols="]
allowed_grant_types = ["client_credentials"]
allowed_scopes = ["read"]
require_dpop = true

[[clients]]
client_id = "native"
require_secret = false
allowed_grant_types = ["authorization_code", "refresh_token"]
allowed_scopes = ["openid", "read"]
redirect_uris = ["http://127.0.0.1:1/native"]
allow_offline_access = true

[[routes]]
path_prefix = "/ledger"
upstream = "UPSTREAM"
resource = "urn:ledger"
"#;

struct Dpop {
    isogate: Isogate,
    upstream: Upstream,
}

impl Dpop {
    async fn start() -> Self {
        Self::with_proxy("").await
    }

    /// `extra` goes into the `[proxy]` section.
    async fn with_proxy(extra: &str) -> Self {
        let upstream = Upstream::start().await;
        let toml = issuer_section("http://isogate.test")
            + SEED
            + USERS
            + &DPOP.replace("UPSTREAM", &upstream.url())
            + &format!("\n[proxy]\nlisten = \"127.0.0.1:0\"\n{extra}\n")
            + &routes(&upstream.url())
            + "\n[admin]\nlisten = \"127.0.0.1:0\"\n";
        Dpop {
            isogate: Isogate::start(&toml).await,
            upstream,
        }
    }

    fn now(&self) -> u64 {
        self.isogate.clock.unix()
    }

    fn gateway(&self, path: &str) -> String {
        format!("http://{}{path}", self.isogate.addr(Role::Proxy))
    }

    /// A token request by `client` (with the test secret when `Some`) and `proof`.
    async fn token(
        &self,
        client: (&str, bool),
        form: &[(&str, &str)],
        proof: Option<&str>,
    ) -> Reply {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.isogate.issuer_url("/connect/token"))
            .header("content-type", "application/x-www-form-urlencoded");
        let mut form = form.to_vec();
        if client.1 {
            req = req.header("authorization", basic(client.0, SECRET));
        } else {
            form.push(("client_id", client.0));
        }
        if let Some(proof) = proof {
            req = req.header("dpop", proof);
        }
        send(req.body(Full::new(Bytes::from(form_body(&form)))).unwrap()).await
    }

    /// A token for `client` bound to `key`, asserting success.
    async fn bound_token(&self, client: &str, resource: &str, key: &ProofKey) -> String {
        self.bound_token_for(client, "read", resource, key).await
    }

    async fn bound_token_for(
        &self,
        client: &str,
        scope: &str,
        resource: &str,
        key: &ProofKey,
    ) -> String {
        let proof = key.proof("POST", TOKEN_ENDPOINT, None, self.now());
        let form = [
            ("grant_type", "client_credentials"),
            ("scope", scope),
            ("resource", resource),
        ];
        let reply = self.token((client, true), &form, Some(&proof)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let body = reply.json();
        assert_eq!(body["token_type"], "DPoP");
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// `GET path` at the gateway with `authorization` and `proof`.
    async fn call(&self, path: &str, authorization: &str, proof: Option<&str>) -> Reply {
        self.call_as(Method::GET, path, authorization, proof).await
    }

    async fn call_as(
        &self,
        method: Method,
        path: &str,
        authorization: &str,
        proof: Option<&str>,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(self.gateway(path))
            .header("authorization", authorization);
        if let Some(proof) = proof {
            req = req.header("dpop", proof);
        }
        send(req.body(Full::default()).unwrap()).await
    }

    /// The URL a proof names for `path` at the gateway: the origin the client addressed.
    fn htu(&self, path: &str) -> String {
        self.gateway(path)
    }
}

fn new_key() -> ProofKey {
    ProofKey::generate(Alg::ES256).unwrap()
}

/// The `DPoP` challenge of a refusal.
fn dpop_challenge(reply: &Reply) -> String {
    reply
        .headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("DPoP "))
        .unwrap_or_else(|| panic!("no DPoP challenge: {:?}", reply.headers))
}

#[tokio::test]
async fn a_token_request_with_a_proof_gets_a_token_bound_to_its_key() {
    let dpop = Dpop::start().await;
    let key = new_key();
    let token = dpop.bound_token("client", "urn:invoices", &key).await;
    let claims = verify(&dpop.isogate, &token, "urn:invoices").await;
    assert_eq!(claims["cnf"], json!({"jkt": key.thumbprint()}));

    // Without a proof: a Bearer token without cnf, as before.
    let plain = dpop
        .token(
            ("client", true),
            &[("grant_type", "client_credentials"), ("scope", "read")],
            None,
        )
        .await
        .json();
    assert_eq!(plain["token_type"], "Bearer");
    let (_, claims) = decode_parts(plain["access_token"].as_str().unwrap());
    assert!(claims.get("cnf").is_none());

    // Introspection says how it is bound.
    let answer = post_form(
        &dpop.isogate.issuer_url("/connect/introspect"),
        &[("token", &token)],
        Some(("urn:invoices", SECRET)),
    )
    .await
    .json();
    assert_eq!(answer["active"], true);
    assert_eq!(answer["token_type"], "DPoP");
    assert_eq!(answer["cnf"]["jkt"], key.thumbprint());

    let discovery = get(&dpop
        .isogate
        .issuer_url("/.well-known/oauth-authorization-server"))
    .await
    .json();
    assert_eq!(
        discovery["dpop_signing_alg_values_supported"],
        json!(["ES256", "ES384", "RS256", "PS256", "EdDSA"])
    );
}

#[tokio::test]
async fn the_token_endpoint_refuses_bad_proofs_and_a_client_that_must_send_one() {
    let dpop = Dpop::start().await;
    let key = new_key();
    let form = [("grant_type", "client_credentials"), ("scope", "read")];
    let refused = |reply: Reply, says: &str| {
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
        let body = reply.json();
        assert_eq!(body["error"], "invalid_dpop_proof");
        let description = body["error_description"].as_str().unwrap().to_owned();
        assert!(description.contains(says), "{description}");
    };
    let reply = dpop.token(("bound", true), &form, None).await;
    refused(reply, "this client must send a DPoP proof");

    let now = dpop.now();
    let endpoint = TOKEN_ENDPOINT;
    for (proof, says) in [
        (key.proof("GET", endpoint, None, now), "htm"),
        (
            key.proof("POST", "http://isogate.test/connect/authorize", None, now),
            "htu",
        ),
        (
            key.proof("POST", &format!("{endpoint}?x=1"), None, now),
            "htu",
        ),
        (key.proof("POST", endpoint, None, now - 200), "too old"),
        (key.proof("POST", endpoint, None, now + 200), "future"),
        ("not-a-proof".to_owned(), "malformed"),
    ] {
        refused(dpop.token(("bound", true), &form, Some(&proof)).await, says);
    }
    // A replayed proof, at the token endpoint too.
    let proof = key.proof("POST", endpoint, None, now);
    let reply = dpop.token(("bound", true), &form, Some(&proof)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    refused(
        dpop.token(("bound", true), &form, Some(&proof)).await,
        "already used",
    );
    let scrape = Scrape::of(&dpop.isogate).await;
    assert_eq!(
        scrape.get(
            "isogate_token_requests_refused_total",
            &[("error", "invalid_dpop_proof")]
        ),
        8.0
    );
}

#[tokio::test]
async fn the_gateway_forwards_a_bound_token_only_with_a_fresh_proof_by_its_key() {
    let dpop = Dpop::start().await;
    let key = new_key();
    let token = dpop.bound_token("client", "urn:invoices", &key).await;
    let auth = format!("DPoP {token}");
    let htu = dpop.htu("/invoices/42");
    let now = dpop.now();

    let proof = key.proof("GET", &htu, Some(&token), now);
    let reply = dpop.call("/invoices/42?page=2", &auth, Some(&proof)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(dpop.upstream.count(), 1);
    // The proof travels on with its token (an upstream may check it again) ...
    assert_eq!(
        dpop.upstream.last().headers.get("dpop").unwrap(),
        proof.as_str()
    );
    // ... and is dropped with it on a route with strip_authorization.
    let tx = dpop
        .bound_token_for("client", "transaction:7", "urn:payments", &key)
        .await;
    let tx_proof = key.proof("GET", &dpop.htu("/payments"), Some(&tx), now);
    let reply = dpop
        .call("/payments", &format!("DPoP {tx}"), Some(&tx_proof))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let forwarded = &dpop.upstream.last().headers;
    assert!(forwarded.get("authorization").is_none() && forwarded.get("dpop").is_none());

    let other = new_key();
    let wrong = |change: &dyn Fn(&mut Value)| {
        let mut claims = json!({"jti": format!("j{}", rand_id()), "htm": "GET", "htu": htu,
                                "iat": now, "ath": isogate::dpop::ath(&token)});
        change(&mut claims);
        key.sign(&key.header(), &claims)
    };
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("no proof", None, "a DPoP proof is required"),
        (
            "another key",
            Some(other.proof("GET", &htu, Some(&token), now)),
            "not made with the key",
        ),
        (
            "wrong ath",
            Some(wrong(&|c| c["ath"] = json!(isogate::dpop::ath("other")))),
            "ath",
        ),
        (
            "no ath",
            Some(wrong(&|c| {
                c.as_object_mut().unwrap().remove("ath");
            })),
            "ath",
        ),
        (
            "wrong htm",
            Some(wrong(&|c| c["htm"] = json!("POST"))),
            "htm",
        ),
        (
            "another path",
            Some(wrong(&|c| c["htu"] = json!(dpop.htu("/invoices/43")))),
            "htu",
        ),
        (
            "a query",
            Some(wrong(&|c| c["htu"] = json!(format!("{htu}?page=2")))),
            "htu",
        ),
        (
            "another host",
            Some(wrong(&|c| c["htu"] = json!("http://evil.test/invoices/42"))),
            "htu",
        ),
        (
            "old iat",
            Some(wrong(&|c| c["iat"] = json!(now - 120))),
            "too old",
        ),
        (
            "future iat",
            Some(wrong(&|c| c["iat"] = json!(now + 120))),
            "future",
        ),
        (
            "alg none",
            Some(format!(
                "{}.{}.",
                b64(&json!({"typ": "dpop+jwt", "alg": "none", "jwk": key.public_jwk()})),
                b64(&json!({"jti": "n", "htm": "GET", "htu": htu, "iat": now}))
            )),
            "alg",
        ),
        (
            "HS256",
            Some(format!(
                "{}.{}.c2ln",
                b64(
                    &json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": {"kty": "oct", "k": "c2VjcmV0"}})
                ),
                b64(&json!({"jti": "h", "htm": "GET", "htu": htu, "iat": now}))
            )),
            "alg",
        ),
        (
            "private jwk",
            Some({
                let mut header = key.header();
                header["jwk"]["d"] = json!("c2VjcmV0");
                key.sign(&header, &json!({"jti": "p", "htm": "GET", "htu": htu, "iat": now, "ath": isogate::dpop::ath(&token)}))
            }),
            "private key",
        ),
        (
            "wrong typ",
            Some({
                let mut header = key.header();
                header["typ"] = json!("JWT");
                key.sign(&header, &json!({"jti": "t", "htm": "GET", "htu": htu, "iat": now, "ath": isogate::dpop::ath(&token)}))
            }),
            "typ",
        ),
    ];
    for (case, proof, says) in cases {
        let reply = dpop.call("/invoices/42", &auth, proof.as_deref()).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{case}: {}",
            reply.text()
        );
        assert_eq!(reply.json()["error"], "invalid_dpop_proof", "{case}");
        let challenge = dpop_challenge(&reply);
        assert!(
            challenge.contains("error=\"invalid_dpop_proof\""),
            "{case}: {challenge}"
        );
        assert!(challenge.contains(says), "{case}: {challenge}");
        assert!(
            challenge.contains("algs=\"ES256 ES384 RS256 PS256 EdDSA\""),
            "{case}"
        );
    }
    // The proof that went through, once more: a replay.
    let reply = dpop.call("/invoices/42", &auth, Some(&proof)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(
        dpop_challenge(&reply).contains("already used"),
        "{:?}",
        reply.headers
    );

    // The same token as Bearer: refused, whatever proof comes with it.
    let fresh = key.proof("GET", &htu, Some(&token), now);
    let reply = dpop
        .call("/invoices/42", &format!("Bearer {token}"), Some(&fresh))
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        reply.json()["error_description"],
        "the token is DPoP-bound; send it with the DPoP scheme and a proof"
    );
    assert_eq!(
        dpop.upstream.count(),
        2,
        "nothing refused reached the upstream"
    );

    let scrape = Scrape::of(&dpop.isogate).await;
    let route = [("route", "/invoices")];
    let count = |reason: &str| {
        scrape.get(
            "isogate_requests_total",
            &[
                ("role", "proxy"),
                route[0],
                ("status", "401"),
                ("reason", reason),
            ],
        )
    };
    assert_eq!(count("dpop_proof"), 14.0);
    assert_eq!(count("dpop_replay"), 1.0);
    assert_eq!(count("token_dpop_bound"), 1.0);
}

#[tokio::test]
async fn an_unbound_token_is_refused_with_the_dpop_scheme_and_at_a_dpop_only_resource() {
    let dpop = Dpop::start().await;
    let bearer = dpop
        .isogate
        .access_token(&[
            ("grant_type", "client_credentials"),
            ("scope", "read"),
            ("resource", "urn:ledger"),
        ])
        .await;
    let reply = dpop
        .call("/ledger/1", &format!("Bearer {bearer}"), None)
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        reply.json()["error_description"],
        "this resource accepts only DPoP-bound tokens"
    );
    // Only the DPoP challenge: Bearer is not allowed here.
    let challenges: Vec<_> = reply.headers.get_all("www-authenticate").iter().collect();
    assert_eq!(challenges.len(), 1, "{challenges:?}");
    assert!(challenges[0]
        .to_str()
        .unwrap()
        .starts_with("DPoP realm=\"isogate\", algs="));

    let key = new_key();
    let proof = key.proof("GET", &dpop.htu("/ledger/1"), Some(&bearer), dpop.now());
    let reply = dpop
        .call("/ledger/1", &format!("DPoP {bearer}"), Some(&proof))
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        reply.json()["error_description"],
        "the token is not DPoP-bound; send it with the Bearer scheme"
    );
    assert_eq!(dpop.upstream.count(), 0);

    // A bound token gets through, and the metadata says what the resource needs.
    let token = dpop.bound_token("bound", "urn:ledger", &key).await;
    let proof = key.proof("GET", &dpop.htu("/ledger/1"), Some(&token), dpop.now());
    let reply = dpop
        .call("/ledger/1", &format!("DPoP {token}"), Some(&proof))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let doc = get(&dpop.gateway("/.well-known/oauth-protected-resource/ledger"))
        .await
        .json();
    assert_eq!(doc["dpop_bound_access_tokens_required"], true);
    let doc = get(&dpop.gateway("/.well-known/oauth-protected-resource/invoices"))
        .await
        .json();
    assert!(doc.get("dpop_bound_access_tokens_required").is_none());

    // A Bearer token at an ordinary resource still works with one more field checked.
    let token = dpop
        .isogate
        .access_token(&[
            ("grant_type", "client_credentials"),
            ("scope", "read"),
            ("resource", "urn:products"),
        ])
        .await;
    let reply = dpop
        .call("/products/1", &format!("Bearer {token}"), None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

#[tokio::test]
async fn with_public_url_the_proof_names_the_external_origin() {
    let dpop = Dpop::with_proxy("public_url = \"https://api.example.com\"").await;
    let key = new_key();
    let token = dpop.bound_token("client", "urn:invoices", &key).await;
    let auth = format!("DPoP {token}");
    let local = key.proof("GET", &dpop.htu("/invoices/7"), Some(&token), dpop.now());
    let reply = dpop.call("/invoices/7", &auth, Some(&local)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(dpop_challenge(&reply).contains("htu"));
    assert!(dpop_challenge(&reply).contains(
        "resource_metadata=\"https://api.example.com/.well-known/oauth-protected-resource/invoices\""
    ));
    let external = key.proof(
        "GET",
        "https://api.example.com/invoices/7",
        Some(&token),
        dpop.now(),
    );
    let reply = dpop.call("/invoices/7", &auth, Some(&external)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

/// Signs alice in for the native client and redeems the code for urn:invoices with `proof`.
async fn native_tokens(dpop: &Dpop, proof: Option<&str>) -> Reply {
    native_tokens_for(dpop, proof, "read offline_access", "urn:invoices", true).await
}

/// [`native_tokens`] for `scope` at `resource`, named again at redemption or not.
async fn native_tokens_for(
    dpop: &Dpop,
    proof: Option<&str>,
    scope: &str,
    resource: &str,
    name_again: bool,
) -> Reply {
    let base = dpop.isogate.issuer_url("");
    let (verifier, challenge) = pkce();
    let params = [
        ("client_id", "native"),
        ("response_type", "code"),
        ("redirect_uri", NATIVE_CALLBACK),
        ("scope", scope),
        ("resource", resource),
        ("state", "s"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let mut browser = Browser::default();
    let page = browser.get(&authorize_url_at(&base, &params)).await;
    let done = log_in_at(&base, &mut browser, &page, "alice", "alice").await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.text());
    let code = query(&done)["code"].clone();
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", NATIVE_CALLBACK),
        ("code_verifier", verifier.as_str()),
    ];
    if name_again {
        form.push(("resource", resource));
    }
    dpop.token(("native", false), &form, proof).await
}

#[tokio::test]
async fn a_public_clients_refresh_token_is_bound_to_its_key() {
    let dpop = Dpop::start().await;
    let key = new_key();
    let endpoint = TOKEN_ENDPOINT;
    let proof = key.proof("POST", endpoint, None, dpop.now());
    let tokens = native_tokens(&dpop, Some(&proof)).await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.text());
    let tokens = tokens.json();
    assert_eq!(tokens["token_type"], "DPoP");
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh.as_str()),
        ("resource", "urn:invoices"),
    ];

    // Without a proof, and with another key's: refused, and the token is not spent.
    let reply = dpop.token(("native", false), &form, None).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["error"], "invalid_dpop_proof");
    let other = ProofKey::generate(Alg::EdDSA).unwrap();
    let reply = dpop
        .token(
            ("native", false),
            &form,
            Some(&other.proof("POST", endpoint, None, dpop.now())),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.json()["error_description"],
        "the proof is not made with the key this refresh token is bound to"
    );

    // With its key: a new bound access token and a successor bound to the same key.
    let reply = dpop
        .token(
            ("native", false),
            &form,
            Some(&key.proof("POST", endpoint, None, dpop.now())),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let refreshed = reply.json();
    let (_, claims) = decode_parts(refreshed["access_token"].as_str().unwrap());
    assert_eq!(claims["cnf"]["jkt"], key.thumbprint());
    let successor = refreshed["refresh_token"].as_str().unwrap();
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", successor),
        ("resource", "urn:invoices"),
    ];
    let reply = dpop.token(("native", false), &form, None).await;
    assert_eq!(
        reply.json()["error"],
        "invalid_dpop_proof",
        "the successor is bound too"
    );

    // A public client that redeemed its code without a proof keeps an unbound refresh token.
    let unbound = native_tokens(&dpop, None).await.json();
    assert_eq!(unbound["token_type"], "Bearer");
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", unbound["refresh_token"].as_str().unwrap()),
        ("resource", "urn:invoices"),
    ];
    let reply = dpop.token(("native", false), &form, None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

#[tokio::test]
async fn userinfo_takes_a_bound_token_only_with_a_proof() {
    let dpop = Dpop::start().await;
    let key = new_key();
    let proof = key.proof("POST", TOKEN_ENDPOINT, None, dpop.now());
    let tokens = native_tokens_for(&dpop, Some(&proof), "openid read", "urn:products", false)
        .await
        .json();
    let token = tokens["access_token"].as_str().unwrap().to_owned();
    let url = dpop.isogate.issuer_url("/connect/userinfo");
    let userinfo = |authorization: String, proof: Option<String>| {
        let url = url.clone();
        async move {
            let mut req = Request::get(url).header("authorization", authorization);
            if let Some(proof) = proof {
                req = req.header("dpop", proof);
            }
            send(req.body(Full::default()).unwrap()).await
        }
    };
    let reply = userinfo(format!("Bearer {token}"), None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
    assert!(reply
        .header("www-authenticate")
        .unwrap()
        .contains("DPoP-bound"));
    let advertised = "http://isogate.test/connect/userinfo";
    let proof = key.proof("GET", advertised, Some(&token), dpop.now());
    let reply = userinfo(format!("DPoP {token}"), Some(proof.clone())).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["sub"], "818727");
    let reply = userinfo(format!("DPoP {token}"), Some(proof)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let challenges: Vec<_> = reply.headers.get_all("www-authenticate").iter().collect();
    assert!(
        challenges[1].to_str().unwrap().starts_with("DPoP algs="),
        "{challenges:?}"
    );
    assert!(challenges[1].to_str().unwrap().contains("already used"));
}

fn b64(value: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
