//! Micro-benches of the gateway's enforcement path (see BENCHMARKS.md): one request whose token
//! was never seen (signature verified, then cached) next to the same request when the token is
//! already in the verified-token cache, what a cache hit is made of, a token inside the clock
//! skew after its expiry, inserts into a full cache, and route choice.
//!
//! Run with `cargo bench --bench gateway`. Everything a bench needs (configs, keys, tokens,
//! headers) is built before its measured closure; no socket and no async runtime are involved.

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use aws_lc_rs::digest::{digest, SHA256};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair, ParsedPublicKey, ECDSA_P256_SHA256_FIXED,
    ECDSA_P256_SHA256_FIXED_SIGNING,
};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue, Method};
use isogate::config::{self, Config, IssuerConfig, MissingKeys, Route};
use isogate::dpop::{self, ProofKey, Replay};
use isogate::issuer::form::Form;
use isogate::jwt::cache::{self, VerifiedCache};
use isogate::jwt::verify::{self, Claims, IssuerKeys, TrustedKeys};
use isogate::jwt::Alg;
use isogate::proxy::enforce::{self, Denial};
use isogate::proxy::keys::CACHE_CAPACITY;
use isogate::proxy::route;
use tempfile::TempDir;

/// The body a client sends for a token meant for the isolated resource alone.
const TOKEN_BODY: &[u8] = b"grant_type=client_credentials&scope=read&resource=urn%3Ainvoices";

/// `client:secret`, as client_secret_basic sends it.
const BASIC_CLIENT_SECRET: &str = "Basic Y2xpZW50OnNlY3JldA==";

/// When the bench tokens are issued (seconds since the epoch); they live for an hour.
const ISSUED_AT: u64 = 1_800_000_000;

/// The gateway's clock during the benches: a minute after issuance. Enforcement takes `now` as
/// an argument, so reading the clock is not measured.
const NOW: u64 = ISSUED_AT + 60;

/// Ten seconds after the bench tokens expired: still inside the config's 30 s `clock_skew`, so
/// the gateway lets them through.
const LATE: u64 = ISSUED_AT + 3600 + 10;

/// Distinct tokens the cold benches cycle through, and the capacity of their cache: with four
/// times as many tokens as places, a token is evicted long before its turn comes round again,
/// so every request misses and every insert evicts the oldest entry, as in a full cache.
const COLD_TOKENS: usize = 1024;
const COLD_CACHE_CAPACITY: usize = COLD_TOKENS / 4;

/// The request path routed and enforced.
const PATH: &str = "/invoices/2024/INV-0042";

/// The request's `Host` header.
const HOST: &str = "127.0.0.1:8080";

/// The benches' resource file (see `common`) with the gateway in front of both APIs and a dozen
/// routes more than the example has.
fn resource_file(alg: Alg) -> String {
    common::resource_file(alg)
        + r#"
[proxy]
listen = "127.0.0.1:0"
clock_skew = "30s"

# The example's two routes.
[[routes]]
path_prefix = "/invoices"
upstream = "http://127.0.0.1:9001"
resource = "urn:invoices"
[routes.scopes]
GET = ["read", "write"]
"*" = ["write"]

[[routes]]
path_prefix = "/products"
upstream = "http://127.0.0.1:9001"
resource = "urn:products"

# A dozen more: longer prefixes that share the first segment, other hosts, a catch-all.
[[routes]]
path_prefix = "/invoices/archive"
upstream = "http://127.0.0.1:9002"
resource = "urn:invoices"

[[routes]]
path_prefix = "/invoices/2023"
upstream = "http://127.0.0.1:9002"
resource = "urn:invoices"

[[routes]]
path_prefix = "/invoices"
host = "api.example.com"
upstream = "http://127.0.0.1:9003"
resource = "urn:invoices"

[[routes]]
path_prefix = "/v2/invoices"
upstream = "http://127.0.0.1:9004"
resource = "urn:invoices"

[[routes]]
path_prefix = "/products/catalog"
upstream = "http://127.0.0.1:9005"
resource = "urn:products"

[[routes]]
path_prefix = "/customers"
upstream = "http://127.0.0.1:9006"
resource = "urn:products"

[[routes]]
path_prefix = "/orders"
upstream = "http://127.0.0.1:9007"
resource = "urn:products"

[[routes]]
path_prefix = "/payments"
upstream = "http://127.0.0.1:9008"
resource = "urn:invoices"

[[routes]]
path_prefix = "/reports"
upstream = "http://127.0.0.1:9009"
resource = "urn:invoices"

[[routes]]
path_prefix = "/admin"
host = "admin.example.com"
upstream = "http://127.0.0.1:9010"
resource = "urn:invoices"

[[routes]]
path_prefix = "/health"
upstream = "http://127.0.0.1:9011"
resource = "urn:products"

[[routes]]
path_prefix = "/"
upstream = "http://127.0.0.1:9012"
resource = "urn:products"
"#
}

/// A validated config whose only signing key is of `alg`, the gateway's view of that key, and
/// the folder holding the key file (kept alive for as long as the config is used).
struct Setup {
    config: Config,
    trusted: TrustedKeys,
    _dir: TempDir,
}

impl Setup {
    fn new(alg: Alg) -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let config = config::parse(&resource_file(alg), dir.path(), MissingKeys::Generate)
            .unwrap_or_else(|problems| panic!("the bench config is invalid: {problems:?}"));
        let issuer = config.issuer.as_ref().expect("the config has [issuer]");
        // What the gateway builds for the local issuer (`Keys::rebuild`).
        let (keys, skipped) =
            IssuerKeys::from_jwk_set(issuer.issuer.as_str(), true, &issuer.keys.jwks());
        assert!(skipped.is_empty(), "the {alg} JWK is skipped: {skipped:?}");
        let trusted = TrustedKeys::new(vec![keys]);
        Setup {
            config,
            trusted,
            _dir: dir,
        }
    }

    fn issuer(&self) -> &IssuerConfig {
        self.config
            .issuer
            .as_ref()
            .expect("the config has [issuer]")
    }

    fn skew(&self) -> Duration {
        self.config
            .proxy
            .as_ref()
            .expect("the config has [proxy]")
            .clock_skew
    }

    /// The route a request for [`PATH`] takes.
    fn route(&self) -> &Route {
        let path = route::normalize(PATH).expect("the bench path is acceptable");
        let route = route::scan(&self.config.routes, Some(HOST), &path)
            .expect("a route for the bench path");
        assert_eq!(route.path_prefix, "/invoices");
        route
    }

    /// `count` distinct access tokens for `urn:invoices` with scope `read`, each from the token
    /// endpoint (a fresh `jti` makes every one different), as the request headers carrying them.
    fn requests(&self, count: usize) -> Vec<HeaderMap> {
        let mut basic = HeaderMap::new();
        basic.insert(AUTHORIZATION, HeaderValue::from_static(BASIC_CLIENT_SECRET));
        let form = Form::parse(TOKEN_BODY).expect("the token request body parses");
        let issued_at = UNIX_EPOCH + Duration::from_secs(ISSUED_AT);
        let grants =
            isogate::grants::Grants::open(&self.issuer().data_dir).expect("the grant store opens");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        (0..count)
            .map(|_| {
                let issued = runtime
                    .block_on(isogate::issuer::token(
                        &self.config,
                        self.issuer(),
                        &grants,
                        &basic,
                        &form,
                        &isogate::dpop::Replay::default(),
                        &isogate::issuer::Clients::default(),
                        issued_at,
                    ))
                    .unwrap_or_else(|e| panic!("the bench token is refused: {e}"));
                let bearer = format!("Bearer {}", issued.access_token);
                let mut headers = HeaderMap::new();
                headers.insert(
                    AUTHORIZATION,
                    HeaderValue::from_str(&bearer).expect("a token is a valid header value"),
                );
                headers
            })
            .collect()
    }
}

/// What the gateway does for one request once its route is chosen (`enforce::enforce`, with
/// the cache lookup of `Keys::cached` and the insert of `Keys::verify`): SPEC §4 steps 1–6, at
/// `now` (seconds since the epoch). The token's issuer is the local one, so an unknown `kid`
/// never triggers a JWKS fetch.
fn authorize(
    setup: &Setup,
    cache: &VerifiedCache,
    headers: &HeaderMap,
    route: &Route,
    method: &Method,
    now: u64,
    skew: Duration,
) -> Result<Arc<Claims>, Denial> {
    let invalid = Denial::Token;
    let (_, credential) = enforce::credential(headers)?;
    let trusted = &setup.trusted;
    let key = cache::key(credential);
    let claims = match cache.get_key(&key, now, trusted.generation()) {
        Some(claims) => claims,
        None => {
            let token = enforce::token(credential)?;
            let claims = Arc::new(verify::verify(token, trusted).map_err(invalid)?);
            cache.insert_key(key, Arc::clone(&claims), trusted.generation());
            claims
        }
    };
    verify::check_time(&claims, now, skew).map_err(invalid)?;
    let model = &setup.config.model;
    let resource = model
        .api_resource(&route.resource)
        .expect("the bench route's resource exists");
    enforce::audience(&claims, resource)?;
    enforce::scope(&claims, route, resource, model, method)?;
    Ok(claims)
}

/// The bearer token of a request built by [`Setup::requests`].
fn token_of(headers: &HeaderMap) -> &str {
    enforce::bearer(headers).expect("a bearer token")
}

/// A request whose token was never seen: the cache misses, the signature is verified and the
/// claims are cached, then time, audience and scope are checked.
fn cold(c: &mut Criterion) {
    let mut group = c.benchmark_group("enforce/cold");
    for (name, alg) in [
        ("es256", Alg::ES256),
        ("rs256", Alg::RS256),
        ("eddsa", Alg::EdDSA),
    ] {
        let setup = Setup::new(alg);
        let route = setup.route();
        let skew = setup.skew();
        let requests = setup.requests(COLD_TOKENS);
        let cache = VerifiedCache::new(COLD_CACHE_CAPACITY);
        for headers in &requests {
            authorize(&setup, &cache, headers, route, &Method::GET, NOW, skew)
                .unwrap_or_else(|denial| panic!("enforce/cold/{name} is denied: {denial}"));
        }
        assert!(
            cache
                .get(token_of(&requests[0]), NOW, setup.trusted.generation())
                .is_none(),
            "enforce/cold/{name}: the first token should have been evicted"
        );
        let mut next = requests.iter().cycle();
        group.bench_function(name, |b| {
            b.iter(|| {
                let headers = next.next().expect("an endless cycle");
                authorize(
                    &setup,
                    &cache,
                    black_box(headers),
                    route,
                    &Method::GET,
                    NOW,
                    skew,
                )
            })
        });
        if alg == Alg::ES256 {
            // What aws-lc's verify alone costs for a message of the same size: the floor under
            // the bench above.
            let message = token_of(&requests[0])
                .rsplit_once('.')
                .expect("a compact JWS")
                .0;
            let rng = SystemRandom::new();
            let pair =
                EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("a P-256 key");
            let signature = pair.sign(&rng, message.as_bytes()).expect("a signature");
            let key = ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, pair.public_key().as_ref())
                .expect("the public key parses");
            group.bench_function("es256_signature_only", |b| {
                b.iter(|| key.verify_sig(black_box(message.as_bytes()), signature.as_ref()))
            });
        }
    }
    group.finish();
}

/// The same request when its token is in the cache: no signature, only the lookup (SHA-256 of
/// the token, a mutex, a hash-map probe) and the checks every hit re-runs.
fn warm(c: &mut Criterion) {
    let setup = Setup::new(Alg::ES256);
    let route = setup.route();
    let skew = setup.skew();
    let headers = setup.requests(1).remove(0);
    let token = token_of(&headers);
    let generation = setup.trusted.generation();
    let cache = VerifiedCache::new(CACHE_CAPACITY);
    authorize(&setup, &cache, &headers, route, &Method::GET, NOW, skew)
        .unwrap_or_else(|denial| panic!("enforce/warm/es256 is denied: {denial}"));
    assert!(
        cache.get(token, NOW, generation).is_some(),
        "the token is cached"
    );

    let mut group = c.benchmark_group("enforce/warm");
    group.bench_function("es256", |b| {
        b.iter(|| {
            authorize(
                &setup,
                &cache,
                black_box(&headers),
                route,
                &Method::GET,
                NOW,
                skew,
            )
        })
    });
    // The same warm request sent with DPoP (SPEC §8): a fresh ES256 proof each time, as
    // clients send, checked against the token's key and recorded. Making the proof is the
    // client's work and is not timed.
    let key = ProofKey::generate(Alg::ES256).expect("a DPoP key");
    let jkt = key.thumbprint();
    let url = "http://127.0.0.1:8080/invoices/42";
    let replay = Replay::default();
    group.bench_function("es256_dpop", |b| {
        b.iter_batched(
            || key.proof("GET", url, Some(token), NOW),
            |proof| {
                authorize(&setup, &cache, &headers, route, &Method::GET, NOW, skew)?;
                let expected = dpop::Expected {
                    method: "GET",
                    url,
                    access_token: Some(token),
                    key: Some(&jkt),
                    now: NOW,
                    max_age: Duration::from_secs(60),
                    skew,
                };
                dpop::check(black_box(&proof), &expected, &replay).map_err(enforce::Denial::Proof)
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();

    let mut group = c.benchmark_group("cache");
    group.bench_function("get_hit", |b| {
        b.iter(|| cache.get(black_box(token), NOW, generation))
    });
    group.bench_function("sha256_only", |b| {
        b.iter(|| digest(&SHA256, black_box(token).as_bytes()))
    });
    group.finish();

    // The rest of a warm request: finding the token, and the checks every hit re-runs.
    let claims = cache
        .get(token, NOW, generation)
        .expect("the token is cached");
    let model = &setup.config.model;
    let mut group = c.benchmark_group("enforce");
    group.bench_function("bearer_only", |b| {
        b.iter(|| enforce::bearer(black_box(&headers)).map(str::len))
    });
    group.bench_function("checks_only", |b| {
        b.iter(|| {
            let claims = black_box(&claims);
            verify::check_time(claims, NOW, skew).map_err(|_| Denial::NoToken)?;
            let resource = model.api_resource(&route.resource).ok_or(Denial::NoToken)?;
            enforce::audience(claims, resource)?;
            enforce::scope(claims, route, resource, model, &Method::GET)
        })
    });
    group.finish();

    // The same token again once `exp` has passed but `clock_skew` still lets it through: the
    // cache treats it as expired (a miss, and the insert is refused), so every such request
    // verifies the signature again.
    authorize(&setup, &cache, &headers, route, &Method::GET, LATE, skew)
        .unwrap_or_else(|denial| panic!("a token inside the clock skew is denied: {denial}"));
    assert!(
        cache.get(token, LATE, generation).is_none(),
        "a token past exp is never served from the cache"
    );
    let mut group = c.benchmark_group("enforce/within_skew_after_exp");
    group.bench_function("es256", |b| {
        b.iter(|| {
            authorize(
                &setup,
                &cache,
                black_box(&headers),
                route,
                &Method::GET,
                LATE,
                skew,
            )
        })
    });
    group.finish();
}

/// An insert into a cache as full as the gateway's can be, on the first request of a new second:
/// the cache first walks every entry to drop expired ones, then evicts the oldest. Each entry has
/// its own claims allocation, as in the gateway, so the walk reads memory all over the heap. Only
/// the insert is timed; advancing the cache's clock (a `get` that misses) is not.
fn full_cache(c: &mut Criterion) {
    let claims = || {
        Arc::new(Claims {
            iss: "http://127.0.0.1:5000".into(),
            sub: Some("client".into()),
            client_id: Some("client".into()),
            aud: vec!["urn:invoices".into()],
            scope: vec!["read".into()],
            exp: ISSUED_AT + 1_000_000,
            nbf: Some(ISSUED_AT),
            jti: None,
            jkt: None,
        })
    };
    let cache = VerifiedCache::new(CACHE_CAPACITY);
    for i in 0..CACHE_CAPACITY {
        cache.insert(&format!("token-{i}"), claims(), 1);
    }
    assert_eq!(cache.len(), CACHE_CAPACITY);
    let mut group = c.benchmark_group("cache");
    let mut inserted = CACHE_CAPACITY;
    let mut now = NOW;
    let mut insert = |new_second: bool, iters: u64| {
        let mut spent = Duration::ZERO;
        for _ in 0..iters {
            if new_second {
                now += 1;
                let _ = cache.get("a token never inserted", now, 1);
            }
            let token = format!("token-{inserted}");
            inserted += 1;
            let claims = claims();
            let started = Instant::now();
            cache.insert(black_box(&token), claims, 1);
            spent += started.elapsed();
        }
        spent
    };
    group.bench_function("insert_full_new_second", |b| {
        b.iter_custom(|iters| insert(true, iters))
    });
    group.bench_function("insert_full_same_second", |b| {
        b.iter_custom(|iters| insert(false, iters))
    });
    group.finish();
    assert_eq!(cache.len(), CACHE_CAPACITY);
}

/// Route choice: normalise the path, pick the route with the `Host` header's authority (as
/// the gateway does: the index ignores its port and case without allocating).
fn routing(c: &mut Criterion) {
    let setup = Setup::new(Alg::ES256);
    let routes = &setup.config.routes;
    assert_eq!(routes.len(), 14);
    let index = route::Index::new(routes);
    let mut group = c.benchmark_group("route");
    group.bench_function("normalize_and_select", |b| {
        b.iter(|| {
            let path = route::normalize(black_box(PATH)).ok()?;
            index
                .select(routes, Some(black_box(HOST)), &path)
                .map(|r| r.path_prefix.len())
        })
    });
    group.finish();
}

criterion_group! {
    name = gateway;
    config = common::criterion();
    targets = cold, warm, full_cache, routing
}
criterion_main!(gateway);
