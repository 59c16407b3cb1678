//! How the request paths scale with the resource file (see BENCHMARKS.md, "Scale"): one file
//! with N API resources, N clients and N routes, for N = 10, 1,000 and 10,000, and the last of
//! each exercised. Route choice through the index next to the plain scan of every route, the
//! SPEC §3 rules with and without a resource indicator, the whole token endpoint, and the load
//! of the file itself (parse and validation, in pieces above 32 KiB).
//!
//! Run with `cargo bench --bench scale`. Each file is generated and validated before its
//! measured closures.

mod common;

use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};
use isogate::config::{self, Config, MissingKeys};
use isogate::issuer::form::Form;
use isogate::proxy::route;
use isogate::resources::{self, GrantType, TokenRequest};
use tempfile::TempDir;

/// The sizes measured.
const SIZES: [usize; 3] = [10, 1_000, 10_000];

/// A fixed clock: issuance takes `now` as an argument.
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// The validated file of size `n` and the folder of its key.
struct Setup {
    n: usize,
    config: Config,
    _dir: TempDir,
}

impl Setup {
    fn new(n: usize) -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let config = config::parse(&common::scale_file(n), dir.path(), MissingKeys::Generate)
            .unwrap_or_else(|problems| panic!("the scale file is invalid: {problems:?}"));
        Setup {
            n,
            config,
            _dir: dir,
        }
    }

    /// The last entry's number.
    fn last(&self) -> usize {
        self.n - 1
    }
}

fn routing(c: &mut Criterion) {
    let mut group = c.benchmark_group("scale_route");
    for n in SIZES {
        let setup = Setup::new(n);
        let routes = &setup.config.routes;
        let index = route::Index::new(routes);
        let path = format!("/api-{}/items/1", setup.last());
        let want = format!("/api-{}", setup.last());
        let chosen = index.select(routes, Some("api.example.com"), &path);
        assert_eq!(chosen.map(|r| r.path_prefix.as_str()), Some(want.as_str()));
        group.bench_with_input(BenchmarkId::new("index", n), &path, |b, path| {
            b.iter(|| index.select(routes, Some(black_box("api.example.com")), black_box(path)))
        });
        group.bench_with_input(BenchmarkId::new("scan", n), &path, |b, path| {
            b.iter(|| route::scan(routes, Some(black_box("api.example.com")), black_box(path)))
        });
    }
    group.finish();
}

fn rules(c: &mut Criterion) {
    let mut group = c.benchmark_group("scale_rules");
    for n in SIZES {
        let setup = Setup::new(n);
        let last = setup.last();
        let model = &setup.config.model;
        let client = &setup.config.clients[&format!("client-{last}")];
        let scope = format!("scope-{last}");
        let resource = format!("urn:api-{last}");
        let with = [resource.as_str()];
        for (name, resources) in [("resource", &with[..]), ("no_resource", &[][..])] {
            let request = TokenRequest {
                grant: GrantType::ClientCredentials,
                scope: Some(&scope),
                resources,
            };
            let granted = resources::grant(model, client, &request)
                .unwrap_or_else(|refusal| panic!("scale_rules/{name}/{n}: {refusal}"));
            assert_eq!(granted.aud, [resource.as_str()], "scale_rules/{name}/{n}");
            group.bench_with_input(BenchmarkId::new(name, n), &request, |b, request| {
                b.iter(|| resources::grant(black_box(model), black_box(client), black_box(request)))
            });
        }
    }
    group.finish();
}

fn token(c: &mut Criterion) {
    let mut group = c.benchmark_group("scale_token");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    for n in SIZES {
        let setup = Setup::new(n);
        let last = setup.last();
        let issuer = setup.config.issuer.as_ref().expect("[issuer]");
        let grants = isogate::grants::Grants::open(&issuer.data_dir).expect("the grant store");
        let credentials =
            base64::engine::general_purpose::STANDARD.encode(format!("client-{last}:secret"));
        let mut headers = HeaderMap::new();
        let basic = HeaderValue::from_str(&format!("Basic {credentials}")).expect("a header");
        headers.insert(AUTHORIZATION, basic);
        let body =
            format!("grant_type=client_credentials&scope=scope-{last}&resource=urn%3Aapi-{last}");
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
                now(),
            ))
        };
        let issued = issue(body.as_bytes()).unwrap_or_else(|e| panic!("scale_token/{n}: {e}"));
        assert!(issued.access_token.starts_with("ey"));
        group.bench_with_input(BenchmarkId::from_parameter(n), &body, |b, body| {
            b.iter(|| issue(black_box(body.as_bytes())))
        });
    }
    group.finish();
}

/// `config::parse` of the whole file, as `check` and a reload run it (the key is not read).
/// With the system allocator, which keeps what a load freed for the next one: the server's
/// reload, which gives it back at once, also pays for faulting it in again.
fn load(c: &mut Criterion) {
    let mut group = c.benchmark_group("scale_load");
    // A load of 10,000 entries takes about 100 ms: fewer samples than the other groups.
    group.sample_size(10);
    let dir = tempfile::tempdir().expect("a temporary folder");
    for n in SIZES {
        let text = common::scale_file(n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &text, |b, text| {
            b.iter(|| {
                config::parse(black_box(text), dir.path(), MissingKeys::Accept)
                    .unwrap_or_else(|problems| panic!("the scale file is invalid: {problems:?}"))
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = scale;
    config = common::criterion();
    targets = routing, rules, token, load
}
criterion_main!(scale);
