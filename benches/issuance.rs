//! Micro-benches of token issuance (see BENCHMARKS.md): the SPEC §3 rules alone, the whole token
//! endpoint without the socket, and JWS signing with keys parsed once (isogate) next to
//! jsonwebtoken, which parses the PKCS#8 key again inside every `encode`.
//!
//! Run with `cargo bench --bench issuance`. Everything a bench needs (configs, keys, request
//! bodies, claims) is built before its measured closure.

mod common;

use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, Criterion};
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};
use isogate::config::{self, Config, IssuerConfig, MissingKeys};
use isogate::issuer::form::Form;
use isogate::jwt::{self, Alg, SigningKey};
use isogate::resources::{self, GrantType, TokenRequest};
use serde::Serialize;
use tempfile::TempDir;

/// The body a client sends for an isolated resource.
const TOKEN_BODY: &[u8] = b"grant_type=client_credentials&scope=read&resource=urn%3Ainvoices";

/// `client:secret`, as client_secret_basic sends it.
const BASIC_CLIENT_SECRET: &str = "Basic Y2xpZW50OnNlY3JldA==";

/// A fixed clock: issuance takes `now` as an argument, so reading the clock is not measured.
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// A validated config whose only signing key is of `alg`, and the folder holding its key (kept
/// alive for as long as the config is used).
struct Setup {
    config: Config,
    dir: TempDir,
    alg: Alg,
}

impl Setup {
    fn new(alg: Alg) -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let config = config::parse(
            &common::resource_file(alg),
            dir.path(),
            MissingKeys::Generate,
        )
        .unwrap_or_else(|problems| panic!("the bench config is invalid: {problems:?}"));
        Setup { config, dir, alg }
    }

    fn issuer(&self) -> &IssuerConfig {
        self.config
            .issuer
            .as_ref()
            .expect("the config has [issuer]")
    }

    fn key(&self) -> &SigningKey {
        &self.issuer().keys.all()[0]
    }

    /// The PKCS#8 PEM text of the signing key, as isogate read it.
    fn pem(&self) -> Vec<u8> {
        let path = self.dir.path().join(format!("keys/{}.pem", self.alg));
        std::fs::read(&path).expect("the generated key file")
    }
}

/// The claims of a client_credentials access token for urn:invoices (RFC 9068).
#[derive(Serialize)]
struct Claims {
    iss: &'static str,
    sub: &'static str,
    aud: &'static str,
    client_id: &'static str,
    scope: &'static str,
    iat: u64,
    nbf: u64,
    exp: u64,
    jti: &'static str,
}

const CLAIMS: Claims = Claims {
    iss: "http://127.0.0.1:5000",
    sub: "client",
    aud: "urn:invoices",
    client_id: "client",
    scope: "read",
    iat: 1_800_000_000,
    nbf: 1_800_000_000,
    exp: 1_800_003_600,
    jti: "q8Yk3lJ8n1bVx0r2sWc4Zg",
};

/// SPEC §3 alone: the pure `aud`/`scope` computation.
fn rules(c: &mut Criterion) {
    let setup = Setup::new(Alg::ES256);
    let model = &setup.config.model;
    let client = &setup.config.clients["client"];
    let cases: [(&str, Option<&str>, &[&str]); 3] = [
        ("scope_read", Some("read"), &[]),
        (
            "scope_read_resource_invoices",
            Some("read"),
            &["urn:invoices"],
        ),
        ("no_scope", None, &[]),
    ];
    let mut group = c.benchmark_group("rules");
    for (name, scope, resources) in cases {
        let request = TokenRequest {
            grant: GrantType::ClientCredentials,
            scope,
            resources,
        };
        resources::grant(model, client, &request)
            .unwrap_or_else(|refusal| panic!("rules/{name} is refused: {refusal}"));
        group.bench_function(name, |b| {
            b.iter(|| resources::grant(black_box(model), black_box(client), black_box(&request)))
        });
    }
    group.finish();
}

/// The token endpoint without the socket: parse the form, authenticate the client (SHA-256 and
/// a constant-time compare), apply the rules, sign.
fn token(c: &mut Criterion) {
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, HeaderValue::from_static(BASIC_CLIENT_SECRET));
    let now = now();
    let mut group = c.benchmark_group("token");
    for (name, alg) in [
        ("es256", Alg::ES256),
        ("rs256", Alg::RS256),
        ("eddsa", Alg::EdDSA),
    ] {
        let setup = Setup::new(alg);
        let issuer = setup.issuer();
        let grants =
            isogate::grants::Grants::open(&issuer.data_dir).expect("the grant store opens");
        // client_credentials never waits for the store: the future is ready when first
        // polled, and a current-thread runtime's block_on adds well under 1 % here.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let issue = |body: &[u8]| {
            let form = Form::parse(body)?;
            runtime.block_on(isogate::issuer::token(
                &setup.config,
                issuer,
                &grants,
                &headers,
                &form,
                &isogate::dpop::Replay::default(),
                &isogate::issuer::Clients::default(),
                now,
            ))
        };
        let issued = issue(TOKEN_BODY).unwrap_or_else(|e| panic!("token/{name} is refused: {e}"));
        assert!(issued.access_token.starts_with("ey"), "token/{name}");
        group.bench_function(name, |b| b.iter(|| issue(black_box(TOKEN_BODY))));
    }
    group.finish();
}

/// `jwt::encode` with a key parsed once, next to `jsonwebtoken::encode` with an `EncodingKey`
/// built once from the same PEM (it keeps the DER and parses it on every call).
fn sign(c: &mut Criterion) {
    type FromPem = fn(&[u8]) -> jsonwebtoken::errors::Result<jsonwebtoken::EncodingKey>;
    let cases: [(&str, Alg, jsonwebtoken::Algorithm, FromPem); 3] = [
        (
            "es256",
            Alg::ES256,
            jsonwebtoken::Algorithm::ES256,
            jsonwebtoken::EncodingKey::from_ec_pem,
        ),
        (
            "rs256",
            Alg::RS256,
            jsonwebtoken::Algorithm::RS256,
            jsonwebtoken::EncodingKey::from_rsa_pem,
        ),
        (
            "eddsa",
            Alg::EdDSA,
            jsonwebtoken::Algorithm::EdDSA,
            jsonwebtoken::EncodingKey::from_ed_pem,
        ),
    ];
    let mut group = c.benchmark_group("sign");
    for (name, alg, jwt_alg, from_pem) in cases {
        let setup = Setup::new(alg);
        let key = setup.key();
        let encoding_key = from_pem(&setup.pem())
            .unwrap_or_else(|e| panic!("jsonwebtoken refuses the {name} key: {e}"));
        let header = jsonwebtoken::Header {
            typ: Some("at+jwt".into()),
            kid: Some(key.kid.clone()),
            ..jsonwebtoken::Header::new(jwt_alg)
        };
        jsonwebtoken::encode(&header, &CLAIMS, &encoding_key)
            .unwrap_or_else(|e| panic!("jsonwebtoken cannot sign with the {name} key: {e}"));

        group.bench_function(format!("{name}/isogate"), |b| {
            b.iter(|| jwt::encode(black_box(key), "at+jwt", black_box(&CLAIMS)))
        });
        group.bench_function(format!("{name}/jsonwebtoken"), |b| {
            b.iter(|| {
                jsonwebtoken::encode(
                    black_box(&header),
                    black_box(&CLAIMS),
                    black_box(&encoding_key),
                )
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = issuance;
    config = common::criterion();
    targets = rules, token, sign
}
criterion_main!(issuance);
