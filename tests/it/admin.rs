//! The admin listener: probes, the metrics a scrape shows after real traffic and reloads, the
//! `/config` view, and readiness while a shutdown drains in-flight requests.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use isogate::Role;

use crate::servers::Upstream;
use crate::support::*;

/// The seed with a gateway (invoices and products) in front of `upstream` and an admin
/// listener.
fn config(upstream: &str, client_scopes: &str) -> String {
    issuer_section("http://isogate.test")
        + &SEED.replace(
            "allowed_scopes = [\"read\", \"write\", \"transaction\"]",
            &format!("allowed_scopes = {client_scopes}"),
        )
        + &format!(
            r#"
[proxy]
listen = "127.0.0.1:0"

[[routes]]
path_prefix = "/invoices"
upstream = "{upstream}"
resource = "urn:invoices"

[[routes]]
path_prefix = "/products"
upstream = "{upstream}"
resource = "urn:products"

[admin]
listen = "127.0.0.1:0"
"#
        )
}

/// `toml` (of [`config`]) with the gateway trusting each of `issuers` as well.
fn trusting(toml: &str, issuers: &[String]) -> String {
    let proxy = "[proxy]\nlisten = \"127.0.0.1:0\"\n";
    assert!(toml.contains(proxy));
    let trusted: String = issuers
        .iter()
        .map(|i| format!("[[proxy.trusted_issuers]]\nissuer = \"{i}\"\n"))
        .collect();
    toml.replace(proxy, &format!("{proxy}{trusted}"))
}

async fn start(upstream: &Upstream) -> Isogate {
    Isogate::start(&config(&upstream.url(), "[\"read\", \"write\"]")).await
}

fn admin_url(isogate: &Isogate, path: &str) -> String {
    format!("http://{}{path}", isogate.addr(Role::Admin))
}

fn proxy_url(isogate: &Isogate, path: &str) -> String {
    format!("http://{}{path}", isogate.addr(Role::Proxy))
}

async fn call(url: &str, token: Option<&str>) -> Reply {
    let mut req = Request::get(url);
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    send(req.body(Full::default()).unwrap()).await
}

async fn token_for(isogate: &Isogate, resource: &str) -> String {
    isogate
        .token_ok(&[("grant_type", "client_credentials"), ("resource", resource)])
        .await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn probes_answer_and_other_paths_are_404_or_405() {
    let upstream = Upstream::start().await;
    let isogate = start(&upstream).await;
    let healthz = get(&admin_url(&isogate, "/healthz")).await;
    assert_eq!(healthz.status, StatusCode::OK);
    assert_eq!(healthz.text(), "ok\n");
    let readyz = get(&admin_url(&isogate, "/readyz")).await;
    assert_eq!(readyz.status, StatusCode::OK, "ready once start returns");
    assert_eq!(readyz.header("cache-control"), Some("no-store"));

    assert_eq!(
        get(&admin_url(&isogate, "/nothing")).await.status,
        StatusCode::NOT_FOUND
    );
    let post = send(
        Request::post(admin_url(&isogate, "/metrics"))
            .body(Full::new(Bytes::from_static(b"x")))
            .unwrap(),
    )
    .await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    let head = send(
        Request::builder()
            .method(Method::HEAD)
            .uri(admin_url(&isogate, "/readyz"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
}

#[tokio::test]
async fn a_scrape_counts_tokens_gateway_decisions_and_cache_lookups() {
    let upstream = Upstream::start().await;
    let isogate = start(&upstream).await;
    let invoices = token_for(&isogate, "urn:invoices").await;
    let refused = isogate
        .token(&[("grant_type", "client_credentials"), ("scope", "delete")])
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);

    let at = |path: &str| proxy_url(&isogate, path);
    assert_eq!(
        call(&at("/invoices/1"), Some(&invoices)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        call(&at("/invoices/2?x=1"), Some(&invoices)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        call(&at("/invoices/3"), None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&at("/products/1"), Some(&invoices)).await.status,
        StatusCode::UNAUTHORIZED,
        "an invoices token at products"
    );
    assert_eq!(
        call(&at("/products/2"), Some("not a token")).await.status,
        StatusCode::BAD_REQUEST,
        "a malformed bearer token"
    );
    assert_eq!(
        call(&at("/nowhere/secret-path"), Some(&invoices))
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    let scrape = Scrape::of(&isogate).await;
    let requests = |route, status, reason| {
        scrape.get(
            "isogate_requests_total",
            &[
                ("role", "proxy"),
                ("route", route),
                ("status", status),
                ("reason", reason),
            ],
        )
    };
    assert_eq!(requests("/invoices", "200", "ok"), 2.0);
    assert_eq!(requests("/invoices", "401", "no_token"), 1.0);
    assert_eq!(requests("/products", "401", "token_audience"), 1.0);
    assert_eq!(requests("/products", "400", "invalid_request"), 1.0);
    assert_eq!(requests("-", "404", "no_route"), 1.0);
    assert_eq!(
        scrape.series("isogate_requests_total").len(),
        5,
        "one series per route, status and reason"
    );
    // Durations by route and outcome: refusals apart from the upstream's answers.
    let timed = |route, outcome| {
        scrape.value(
            "isogate_request_duration_seconds_count",
            &[("route", route), ("outcome", outcome)],
        )
    };
    assert_eq!(timed("/invoices", "forwarded"), Some(2.0));
    assert_eq!(timed("/invoices", "refused"), Some(1.0));
    assert_eq!(timed("/products", "refused"), Some(2.0));
    assert_eq!(timed("/products", "forwarded"), None);
    assert_eq!(timed("-", "refused"), Some(1.0));
    assert_eq!(
        scrape.get(
            "isogate_request_duration_seconds_bucket",
            &[
                ("route", "/invoices"),
                ("outcome", "forwarded"),
                ("le", "+Inf")
            ]
        ),
        2.0
    );
    // The token service's requests, timed by endpoint and outcome.
    let issued = |outcome| {
        scrape.value(
            "isogate_issuer_request_duration_seconds_count",
            &[("endpoint", "/connect/token"), ("outcome", outcome)],
        )
    };
    assert_eq!(issued("ok"), Some(1.0));
    assert_eq!(issued("refused"), Some(1.0));
    assert_eq!(issued("failed"), None);
    // The standard process series and the build.
    assert_eq!(
        scrape.get(
            "isogate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert!(scrape.get("process_resident_memory_bytes", &[]) > 1_000_000.0);
    assert!(scrape.get("process_cpu_seconds_total", &[]) > 0.0);
    assert!(scrape.get("process_open_fds", &[]) >= 3.0);
    assert!(scrape.get("process_max_fds", &[]) >= scrape.get("process_open_fds", &[]));
    assert!(scrape.get("process_threads", &[]) >= 1.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = scrape.get("process_start_time_seconds", &[]);
    assert!(
        started <= now + 1.0 && started > now - 86_400.0,
        "{started} {now}"
    );
    let loaded = scrape.get("isogate_config_last_reload_success_timestamp_seconds", &[]);
    assert!(
        (now - 120.0..=now + 1.0).contains(&loaded),
        "the first load counts as the last good one: {loaded} {now}"
    );
    assert_eq!(
        scrape.get(
            "isogate_tokens_issued_total",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "client")
            ]
        ),
        1.0
    );
    assert_eq!(
        scrape.get(
            "isogate_token_requests_refused_total",
            &[("error", "invalid_scope")]
        ),
        1.0
    );
    // The first use of the token verifies its signature; the next two find it in the cache.
    // The request without a token never looks; the malformed one looks before its token is
    // checked, and misses.
    assert_eq!(
        scrape.get("isogate_verified_token_cache_total", &[("result", "miss")]),
        2.0
    );
    assert_eq!(
        scrape.get("isogate_verified_token_cache_total", &[("result", "hit")]),
        2.0
    );
    assert_eq!(
        scrape.series("isogate_jwks_fetches_total").len(),
        0,
        "no trusted issuer, no fetch"
    );
    assert_eq!(scrape.get("isogate_config_generation", &[]), 1.0);
    assert_eq!(scrape.get("isogate_config_last_reload_success", &[]), 1.0);
    // (A family without series, like the JWKS fetches here, is left out of a scrape.)
    for name in [
        "isogate_requests",
        "isogate_request_duration_seconds",
        "isogate_tokens_issued",
        "isogate_token_requests_refused",
        "isogate_config_reloads",
        "isogate_config_last_reload_success",
        "isogate_config_generation",
        "isogate_verified_token_cache",
        "isogate_issuer_request_duration_seconds",
        "isogate_config_last_reload_success_timestamp_seconds",
        "isogate_build",
        "process_cpu_seconds",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_start_time_seconds",
        "process_open_fds",
        "process_max_fds",
        "process_threads",
    ] {
        scrape.help(name);
    }
    assert!(!scrape.text.contains(&invoices), "a token in the metrics");
    assert!(
        !scrape.text.contains("secret-path"),
        "a path in the metrics"
    );
    assert!(
        !scrape.text.contains("127.0.0.1"),
        "an address in the metrics"
    );
}

#[tokio::test]
async fn jwks_fetches_are_counted_by_issuer_and_result() {
    use crate::servers::JwksServer;
    let jwks = JwksServer::start(r#"{"keys":[]}"#.to_owned()).await;
    let down = JwksServer::start(String::new()).await;
    down.set(None);
    let upstream = Upstream::start().await;
    let toml = trusting(
        &config(&upstream.url(), "[\"read\", \"write\"]"),
        &[jwks.issuer(), down.issuer()],
    );
    let isogate = Isogate::start(&toml).await;
    // Each issuer is fetched once in the background at start.
    let isogate = &isogate;
    let scrape = eventually("both first fetches are counted", || async move {
        let scrape = Scrape::of(isogate).await;
        (scrape.series("isogate_jwks_fetches_total").len() == 2).then_some(scrape)
    })
    .await;
    assert!(scrape
        .help("isogate_jwks_fetches")
        .starts_with("JWKS fetches"));
    let issuer = jwks.issuer();
    let down_issuer = down.issuer();
    assert_eq!(
        scrape.get(
            "isogate_jwks_fetches_total",
            &[("issuer", issuer.as_str()), ("result", "ok")]
        ),
        1.0
    );
    assert_eq!(
        scrape.get(
            "isogate_jwks_fetches_total",
            &[("issuer", down_issuer.as_str()), ("result", "error")]
        ),
        1.0
    );
    // Freshness to alert on: when each issuer's keys last arrived; none yet for the one down.
    let fetched = scrape.get(
        "isogate_jwks_last_success_timestamp_seconds",
        &[("issuer", issuer.as_str())],
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - 120.0..=now + 1.0).contains(&fetched),
        "{fetched} {now}"
    );
    assert_eq!(
        scrape.value(
            "isogate_jwks_last_success_timestamp_seconds",
            &[("issuer", down_issuer.as_str())]
        ),
        None
    );
}

#[tokio::test]
async fn reloads_show_in_the_metrics_and_the_config_view_without_secrets() {
    let upstream = Upstream::start().await;
    let isogate = start(&upstream).await;
    let path = isogate.path("isogate.toml");
    let first = isogate.server.status().borrow().clone();
    const LOADED: &str = "isogate_config_last_reload_success_timestamp_seconds";
    let loaded = Scrape::of(&isogate).await.get(LOADED, &[]);

    let view = get(&admin_url(&isogate, "/config")).await;
    assert_eq!(view.status, StatusCode::OK);
    assert_eq!(view.header("content-type"), Some("application/json"));
    let view = view.json();
    let keys: Vec<&str> = view
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "applied",
            "file",
            "generation",
            "hash",
            "last_error",
            "loaded_at",
            "rejected"
        ]
    );
    assert_eq!(view["generation"], 1);
    assert_eq!(view["hash"], first.hash.as_str());
    assert_eq!(view["file"], path.display().to_string());
    assert_eq!(view["last_error"], serde_json::Value::Null);
    let loaded_at = view["loaded_at"].as_str().unwrap();
    humantime::parse_rfc3339(loaded_at).unwrap_or_else(|e| panic!("{loaded_at}: {e}"));

    // A client secret hash written as a string instead of a list: the error names the place
    // but must not show the value.
    let broken = config(&upstream.url(), "[\"read\"]").replace(
        &format!("secrets = [\"{SECRET_HASH}\"]"),
        &format!("secrets = \"{SECRET_HASH}\""),
    );
    assert_ne!(broken, config(&upstream.url(), "[\"read\"]"));
    write_atomically(&path, &broken);
    isogate.reloaded(|s| s.rejected == 1).await;

    let scrape = Scrape::of(&isogate).await;
    let reloads = |result| scrape.get("isogate_config_reloads_total", &[("result", result)]);
    assert_eq!(reloads("rejected"), 1.0);
    assert_eq!(reloads("applied"), 0.0);
    assert_eq!(scrape.get("isogate_config_last_reload_success", &[]), 0.0);
    assert_eq!(scrape.get("isogate_config_generation", &[]), 1.0);
    assert_eq!(
        scrape.get(LOADED, &[]),
        loaded,
        "a rejected file is not a good load"
    );

    let reply = get(&admin_url(&isogate, "/config")).await;
    let view = reply.json();
    assert_eq!(view["generation"], 1);
    assert_eq!(view["rejected"], 1);
    assert_eq!(view["hash"], first.hash.as_str(), "the served file's hash");
    let error = view["last_error"].as_str().unwrap();
    assert!(error.contains("3 problems"), "each misplaced hash: {error}");
    for place in [
        "api_resources[0].secrets",
        "api_resources[1].secrets",
        "clients[0].secrets",
    ] {
        assert!(
            error.contains(&format!("{place}: expected a sequence, found a string")),
            "{error}"
        );
    }
    let body = reply.text();
    for secret in [SECRET_HASH, "sha256:", "PRIVATE KEY", "-----BEGIN"] {
        assert!(!body.contains(secret), "{secret} in /config: {body}");
    }

    write_atomically(&path, &config(&upstream.url(), "[\"read\"]"));
    let applied = isogate.reloaded(|s| s.applied == 1).await;
    let scrape = Scrape::of(&isogate).await;
    let reloads = |result| scrape.get("isogate_config_reloads_total", &[("result", result)]);
    assert_eq!(reloads("rejected"), 1.0);
    assert_eq!(reloads("applied"), 1.0);
    assert_eq!(scrape.get("isogate_config_last_reload_success", &[]), 1.0);
    assert_eq!(scrape.get("isogate_config_generation", &[]), 2.0);
    assert!(
        scrape.get(LOADED, &[]) > loaded,
        "the applied reload's time"
    );

    let view = get(&admin_url(&isogate, "/config")).await.json();
    assert_eq!(view["generation"], 2);
    assert_eq!(view["applied"], 1);
    assert_eq!(view["last_error"], serde_json::Value::Null);
    assert_eq!(view["hash"], applied.hash.as_str());
    assert_ne!(applied.hash, first.hash);
}

/// The values of label `key` in the samples of `name`, sorted.
fn labels_of(scrape: &Scrape, name: &str, key: &str) -> Vec<String> {
    let mut values: Vec<String> = scrape
        .series(name)
        .iter()
        .filter_map(|sample| sample.labels.get(key).cloned())
        .collect();
    values.sort();
    values
}

/// A reload that removes a route removes that route's series from the scrape; the routes that
/// stay keep counting from where they were.
#[tokio::test]
async fn a_route_removed_by_a_reload_leaves_the_scrape() {
    let upstream = Upstream::start().await;
    let isogate = start(&upstream).await;
    let invoices = token_for(&isogate, "urn:invoices").await;
    let products = token_for(&isogate, "urn:products").await;
    let at = |path: &str| proxy_url(&isogate, path);
    assert_eq!(
        call(&at("/invoices/1"), Some(&invoices)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        call(&at("/products/1"), Some(&products)).await.status,
        StatusCode::OK
    );
    let routes_in = |scrape: &Scrape, name: &str| labels_of(scrape, name, "route");
    let before = Scrape::of(&isogate).await;
    assert_eq!(
        routes_in(&before, "isogate_requests_total"),
        ["/invoices", "/products"]
    );

    let without_products = config(&upstream.url(), "[\"read\", \"write\"]").replace(
        &format!(
            "[[routes]]\npath_prefix = \"/products\"\nupstream = \"{}\"\nresource = \"urn:products\"\n",
            upstream.url()
        ),
        "",
    );
    assert!(!without_products.contains("\"/products\""));
    write_atomically(&isogate.path("isogate.toml"), &without_products);
    isogate.reloaded(|s| s.applied == 1).await;
    assert_eq!(
        call(&at("/invoices/2"), Some(&invoices)).await.status,
        StatusCode::OK
    );

    let after = Scrape::of(&isogate).await;
    assert_eq!(routes_in(&after, "isogate_requests_total"), ["/invoices"]);
    assert_eq!(
        routes_in(&after, "isogate_request_duration_seconds_count"),
        ["/invoices"]
    );
    assert_eq!(
        after.get(
            "isogate_requests_total",
            &[
                ("role", "proxy"),
                ("route", "/invoices"),
                ("status", "200"),
                ("reason", "ok"),
            ],
        ),
        2.0
    );
}

/// A reload that removes a client and a trusted issuer removes their series from the scrape,
/// as it does a route's; the client that stays keeps its count.
#[tokio::test]
async fn a_client_and_an_issuer_removed_by_a_reload_leave_the_scrape() {
    use crate::servers::JwksServer;
    let jwks = JwksServer::start(r#"{"keys":[]}"#.to_owned()).await;
    let upstream = Upstream::start().await;
    let base = config(&upstream.url(), "[\"read\", \"write\"]");
    let other = format!(
        "\n[[clients]]\nclient_id = \"other\"\nsecrets = [\"{SECRET_HASH}\"]\nallowed_grant_types = [\"client_credentials\"]\nallowed_scopes = [\"read\"]\n"
    );
    let full = trusting(&base, &[jwks.issuer()]) + &other;
    assert!(full.contains("trusted_issuers") && full.contains("\"other\""));
    let isogate = Isogate::start(&full).await;
    token_for(&isogate, "urn:products").await;
    let form = [
        ("grant_type", "client_credentials"),
        ("resource", "urn:products"),
    ];
    let reply = post_form(
        &isogate.issuer_url("/connect/token"),
        &form,
        Some(("other", SECRET)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let issuer = jwks.issuer();
    let isogate = &isogate;
    let before = eventually("the first fetch is counted", || async move {
        let scrape = Scrape::of(isogate).await;
        (!scrape
            .series("isogate_jwks_last_success_timestamp_seconds")
            .is_empty())
        .then_some(scrape)
    })
    .await;
    assert_eq!(
        labels_of(&before, "isogate_tokens_issued_total", "client_id"),
        ["client", "other"]
    );
    assert_eq!(
        labels_of(&before, "isogate_jwks_fetches_total", "issuer"),
        [issuer.as_str()]
    );

    // The file as it was, without the second client and the trusted issuer.
    write_atomically(&isogate.path("isogate.toml"), &base);
    isogate.reloaded(|s| s.applied == 1).await;

    let after = Scrape::of(isogate).await;
    assert_eq!(
        labels_of(&after, "isogate_tokens_issued_total", "client_id"),
        ["client"]
    );
    let client = [
        ("grant_type", "client_credentials"),
        ("client_id", "client"),
    ];
    assert_eq!(after.get("isogate_tokens_issued_total", &client), 1.0);
    for name in [
        "isogate_jwks_fetches_total",
        "isogate_jwks_last_success_timestamp_seconds",
    ] {
        assert_eq!(
            labels_of(&after, name, "issuer"),
            Vec::<String>::new(),
            "{name}"
        );
    }
}

async fn refuses_connections(addr: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_err()
}

#[tokio::test]
async fn shutdown_turns_not_ready_stops_accepting_and_drains_in_flight_requests() {
    let upstream = Upstream::start().await;
    let isogate = start(&upstream).await;
    let products = token_for(&isogate, "urn:products").await;
    let (proxy, admin) = (isogate.addr(Role::Proxy), isogate.addr(Role::Admin));
    let readyz = format!("http://{admin}/readyz");
    assert_eq!(get(&readyz).await.status, StatusCode::OK);

    // The upstream answers `/slow` when the test opens its gate.
    let slow = tokio::spawn(async move {
        call(&format!("http://{proxy}/products/slow"), Some(&products)).await
    });
    let up = &upstream;
    eventually("the slow request reached the upstream", || async move {
        (up.count() == 1).then_some(())
    })
    .await;

    let Isogate { server, dir, .. } = isogate;
    let shutdown = tokio::spawn(server.shutdown());
    let readyz = &readyz;
    eventually("/readyz says 503", || async move {
        (get(readyz).await.status == StatusCode::SERVICE_UNAVAILABLE).then_some(())
    })
    .await;
    assert!(
        !slow.is_finished(),
        "not ready while the request is still being served"
    );
    assert_eq!(
        get(&format!("http://{admin}/healthz")).await.status,
        StatusCode::OK,
        "alive while draining"
    );
    eventually("the gateway stops accepting", || async move {
        refuses_connections(proxy).await.then_some(())
    })
    .await;
    assert!(!slow.is_finished(), "the drain waits for the request");

    upstream.open_slow();
    let reply = slow.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.text(), "upstream /products/slow 0");
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .expect("shutdown returns once drained")
        .unwrap();
    assert!(
        refuses_connections(admin).await,
        "the admin listener closes last"
    );
    drop(dir);
}

/// A token past `exp` but within `clock_skew` is still accepted, and still served from the
/// verified-token cache rather than verified again on every request.
#[tokio::test]
async fn a_token_within_the_skew_after_exp_stays_cached() {
    let upstream = Upstream::start().await;
    let isogate = start(&upstream).await;
    let key = isogate::jwt::SigningKey::from_file(
        &isogate.path("keys/es256.pem"),
        isogate::jwt::Alg::ES256,
        Some("es".into()),
        false,
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({"iss": "http://isogate.test", "sub": "client", "client_id": "client",
        "aud": "urn:products", "scope": "read", "iat": now - 100, "nbf": now - 100, "exp": now - 10, "jti": "late"});
    let token = isogate::jwt::encode(&key, "at+jwt", &claims).unwrap();
    let before = Scrape::of(&isogate).await;
    let hits = |s: &Scrape| {
        s.value("isogate_verified_token_cache_total", &[("result", "hit")])
            .unwrap_or(0.0)
    };
    for _ in 0..3 {
        assert_eq!(
            call(&proxy_url(&isogate, "/products"), Some(&token))
                .await
                .status,
            StatusCode::OK
        );
    }
    let after = Scrape::of(&isogate).await;
    assert_eq!(
        hits(&after) - hits(&before),
        2.0,
        "the 2nd and 3rd requests hit the cache"
    );
}
