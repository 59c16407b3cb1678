//! The metrics isogate exposes on the admin listener's `/metrics`, in the OpenMetrics text
//! format (which Prometheus scrapes natively).
//!
//! One [`Metrics`] per [`crate::Server`], never a global: tests run many servers in one
//! process. Every label value comes from the configuration (routes, clients, trusted issuers)
//! or from a fixed set of codes (reasons, OAuth errors, results), so the number of series stays
//! bounded; a request path, a token or a peer address is never a label.

mod process;

use rustc_hash::FxHashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

/// The media type of [`Metrics::encode`]'s output.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The route label of a proxy request that matched no route.
pub(crate) const NO_ROUTE: &str = "-";

/// The `client_id` label of every registered client: their number is the public's to choose.
pub(crate) const REGISTERED: &str = "registered";

/// Upper bounds (seconds) of the request duration buckets: sub-millisecond answers of the
/// gateway itself up to the 30 s default `upstream_timeout`.
const DURATION_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The metrics could not be written out.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The text encoder failed (it writes into a `String`, so this means a bug in a label).
    #[error("cannot encode the metrics: {0}")]
    Encode(#[from] std::fmt::Error),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    role: &'static str,
    route: Arc<str>,
    status: u16,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Arc<str>,
    outcome: &'static str,
}

/// The outcomes of a gateway request, the `outcome` label of its duration: the upstream
/// answered, the gateway refused, the upstream could not be reached in time, or the gateway
/// served a protected-resource metadata document.
const OUTCOMES: [&str; 4] = ["forwarded", "refused", "upstream_error", "metadata"];

/// The index in [`OUTCOMES`] of a gateway request whose log line has `reason`.
fn outcome(reason: &str) -> usize {
    match reason {
        "ok" => 0,
        "upstream_unreachable" | "upstream_timeout" => 2,
        "metadata" => 3,
        _ => 1,
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuerLabels {
    issuer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuedLabels {
    grant_type: &'static str,
    client_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    role: &'static str,
}

/// The connection series of one listener, handed to its accept loop.
#[derive(Clone, Debug, Default)]
pub struct ConnectionMetrics {
    /// Connections open now.
    pub open: Gauge,
    /// Connections closed as they arrived because `max_connections` were open.
    pub refused: Counter,
    /// Connections closed by the listener's idle or request-header timeout.
    pub timed_out: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JwksLabels {
    issuer: String,
    result: &'static str,
}

/// The `result` label of a JWKS fetch.
fn jwks_result(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "error"
    }
}

/// The series of one route, looked up once per request by the route's `path_prefix`.
struct RouteSeries {
    label: Arc<str>,
    /// By [`OUTCOMES`], each made at its first request.
    durations: [OnceLock<Histogram>; OUTCOMES.len()],
    /// This route's counters of `isogate_requests_total`, by status and reason, as the family
    /// holds them: found without hashing the four labels again.
    requests: RwLock<FxHashMap<(u16, &'static str), Counter>>,
}

impl RouteSeries {
    /// The labels of its `isogate_request_duration_seconds` for `outcome` (one of
    /// [`OUTCOMES`]): made here only, so that what is removed is what was made.
    fn duration_labels(&self, outcome: &'static str) -> RouteLabels {
        RouteLabels {
            route: self.label.clone(),
            outcome,
        }
    }

    /// The labels of its `isogate_requests_total` counter for `status` and `reason`.
    fn request_labels(&self, status: u16, reason: &'static str) -> RequestLabels {
        RequestLabels {
            role: "proxy",
            route: self.label.clone(),
            status,
            reason,
        }
    }
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// A gauge of seconds with a fraction, for times.
type Seconds = Gauge<f64, AtomicU64>;

/// Seconds since the Unix epoch, now.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Every metric of one server.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Route label and histograms by `path_prefix`, so that a request allocates nothing to find
    /// its series (routes come from the configuration: this stays small).
    routes: RwLock<FxHashMap<Box<str>, RouteSeries>>,
    issuer_durations: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    tokens_issued: Family<IssuedLabels, Counter>,
    tokens_refused: Family<ErrorLabels, Counter>,
    logins: Family<ResultLabels, Counter>,
    reloads_applied: Counter,
    reloads_rejected: Counter,
    last_reload_success: Gauge,
    last_reload_success_time: Seconds,
    generation: Gauge,
    jwks_fetches: Family<JwksLabels, Counter>,
    jwks_last_success_time: Family<IssuerLabels, Seconds>,
    cache_hits: Counter,
    cache_misses: Counter,
    connections_open: Family<RoleLabels, Gauge>,
    connections_refused: Family<RoleLabels, Counter>,
    connections_timed_out: Family<RoleLabels, Counter>,
    store_up: Gauge,
    store_round_trip: Histogram,
    revoked_tokens: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric at zero; the configuration loaded at start is generation 1.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "isogate_requests",
            "Requests answered, by listener role, route (path_prefix, \"-\" for none), HTTP status and decision reason",
            requests.clone(),
        );
        let durations = Family::new_with_constructor(duration_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "isogate_request_duration",
            "Time from a gateway request's arrival to its response head, by route and outcome (forwarded, refused, upstream_error or metadata)",
            Unit::Seconds,
            durations.clone(),
        );
        let issuer_durations =
            Family::new_with_constructor(duration_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "isogate_issuer_request_duration",
            "Time from a token service request's arrival to its response head, by endpoint (its path, \"-\" for none) and outcome (ok below status 400, refused for 4xx, failed for 5xx); _count counts the requests",
            Unit::Seconds,
            issuer_durations.clone(),
        );
        registry.register(
            "isogate_build",
            "The version of isogate running",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register_collector(Box::new(process::Process));
        let tokens_issued = Family::<IssuedLabels, Counter>::default();
        registry.register(
            "isogate_tokens_issued",
            "Access tokens issued, by grant type and client",
            tokens_issued.clone(),
        );
        let logins = Family::<ResultLabels, Counter>::default();
        registry.register(
            "isogate_logins",
            "Login attempts on the sign-in page: ok, failed, slowed (refused unchecked during the wait after repeated failures) or busy (refused unchecked: no turn for a password check)",
            logins.clone(),
        );
        let tokens_refused = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "isogate_token_requests_refused",
            "Token requests refused, by OAuth error code",
            tokens_refused.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "isogate_config_reloads",
            "Configuration reloads, by result (applied or rejected)",
            reloads.clone(),
        );
        let last_reload_success = Gauge::default();
        last_reload_success.set(1);
        registry.register(
            "isogate_config_last_reload_success",
            "Whether the last configuration reload was applied (1) or rejected (0); 1 before any reload",
            last_reload_success.clone(),
        );
        let last_reload_success_time = Seconds::default();
        last_reload_success_time.set(unix_now());
        registry.register_with_unit(
            "isogate_config_last_reload_success_timestamp",
            "When the configuration being served was loaded (at start, or by the last applied reload), since the Unix epoch",
            Unit::Seconds,
            last_reload_success_time.clone(),
        );
        let generation = Gauge::default();
        generation.set(1);
        registry.register(
            "isogate_config_generation",
            "The configuration generation being served: 1 at start, +1 per applied reload",
            generation.clone(),
        );
        let jwks_fetches = Family::<JwksLabels, Counter>::default();
        registry.register(
            "isogate_jwks_fetches",
            "JWKS fetches from trusted issuers, by issuer and result (ok or error)",
            jwks_fetches.clone(),
        );
        let jwks_last_success_time = Family::<IssuerLabels, Seconds>::default();
        registry.register_with_unit(
            "isogate_jwks_last_success_timestamp",
            "When each trusted issuer's JWKS was last fetched successfully, since the Unix epoch; absent until the first success",
            Unit::Seconds,
            jwks_last_success_time.clone(),
        );
        let cache = Family::<ResultLabels, Counter>::default();
        registry.register(
            "isogate_verified_token_cache",
            "Lookups in the gateway's verified-token cache, by result (hit or miss)",
            cache.clone(),
        );
        let connections_open = Family::<RoleLabels, Gauge>::default();
        registry.register(
            "isogate_connections",
            "Connections open now, by listener role",
            connections_open.clone(),
        );
        let connections_refused = Family::<RoleLabels, Counter>::default();
        registry.register(
            "isogate_connections_refused",
            "Connections closed as they arrived because the listener's max_connections were open, by listener role",
            connections_refused.clone(),
        );
        let connections_timed_out = Family::<RoleLabels, Counter>::default();
        registry.register(
            "isogate_connections_timed_out",
            "Connections closed by the listener's idle_timeout or request_header_timeout, by listener role",
            connections_timed_out.clone(),
        );
        let store_up = Gauge::default();
        registry.register(
            "isogate_store_up",
            "With [store]: whether PostgreSQL answered the last statement (1) or not (0); 0 until it first does",
            store_up.clone(),
        );
        let store_round_trip = duration_histogram();
        registry.register_with_unit(
            "isogate_store_round_trip",
            "With [store]: time of the once-a-second read of the revocations, a statement's round trip to PostgreSQL",
            Unit::Seconds,
            store_round_trip.clone(),
        );
        let revoked_tokens = Gauge::default();
        registry.register(
            "isogate_revoked_tokens",
            "With [store]: revoked access tokens the gateway refuses now (each until it expires)",
            revoked_tokens.clone(),
        );
        // Series with a fixed label set exist from the start, so a dashboard sees 0, not nothing.
        let result = |family: &Family<ResultLabels, Counter>, result| {
            family.get_or_create_owned(&ResultLabels { result })
        };
        Metrics {
            registry,
            requests,
            durations,
            routes: RwLock::new(FxHashMap::default()),
            issuer_durations,
            tokens_issued,
            tokens_refused,
            logins,
            reloads_applied: result(&reloads, "applied"),
            reloads_rejected: result(&reloads, "rejected"),
            last_reload_success,
            last_reload_success_time,
            generation,
            jwks_fetches,
            jwks_last_success_time,
            cache_hits: result(&cache, "hit"),
            cache_misses: result(&cache, "miss"),
            connections_open,
            connections_refused,
            connections_timed_out,
            store_up,
            store_round_trip,
            revoked_tokens,
        }
    }

    /// The connection series of the listener of `role` (`issuer`, `proxy`, `admin`).
    pub fn connections(&self, role: &'static str) -> ConnectionMetrics {
        let labels = RoleLabels { role };
        ConnectionMetrics {
            open: self.connections_open.get_or_create_owned(&labels),
            refused: self.connections_refused.get_or_create_owned(&labels),
            timed_out: self.connections_timed_out.get_or_create_owned(&labels),
        }
    }

    /// Counts one gateway request: `route` is the matched route's `path_prefix` (`None` when
    /// none matched), `reason` the reason of its log line.
    pub fn proxy_request(
        &self,
        route: Option<&str>,
        status: u16,
        reason: &'static str,
        elapsed: Duration,
    ) {
        let route = route.unwrap_or(NO_ROUTE);
        let outcome = outcome(reason);
        let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(series) = routes.get(route) {
            self.observe(series, outcome, elapsed);
            let counters = series
                .requests
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(counter) = counters.get(&(status, reason)) {
                counter.inc();
                return;
            }
            drop(counters);
            self.first_request(series, status, reason);
            return;
        }
        drop(routes);
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        let series = routes.entry(route.into()).or_insert_with(|| RouteSeries {
            label: route.into(),
            durations: Default::default(),
            requests: RwLock::default(),
        });
        self.observe(series, outcome, elapsed);
        self.first_request(series, status, reason);
    }

    /// Drops the series of every route whose `path_prefix` is not among `prefixes` (a reload
    /// removed it), so that the scrape holds the routes that exist and not every route ever
    /// served. A request still in flight on a removed route counts it again; the next reload
    /// drops it.
    pub fn keep_routes<'a>(&self, prefixes: impl IntoIterator<Item = &'a str>) {
        let keep: rustc_hash::FxHashSet<&str> = prefixes.into_iter().collect();
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        routes.retain(|prefix, series| {
            if &**prefix == NO_ROUTE || keep.contains(&**prefix) {
                return true;
            }
            for (outcome, histogram) in OUTCOMES.iter().zip(&series.durations) {
                if histogram.get().is_some() {
                    self.durations.remove(&series.duration_labels(outcome));
                }
            }
            let counters = series
                .requests
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            for &(status, reason) in counters.keys() {
                self.requests.remove(&series.request_labels(status, reason));
            }
            false
        });
    }

    /// Drops the series of the clients and trusted issuers a reload removed, as
    /// [`Metrics::keep_routes`] does for routes: a file whose clients or issuers change over
    /// many reloads would otherwise grow the scrape with every name it ever held. The series
    /// that registered clients share is kept whatever the file says.
    pub fn forget<'a>(
        &self,
        clients: impl IntoIterator<Item = &'a str>,
        issuers: impl IntoIterator<Item = &'a str>,
    ) {
        for client_id in clients.into_iter().filter(|&c| c != REGISTERED) {
            for grant in crate::resources::GrantType::ALL {
                self.tokens_issued.remove(&IssuedLabels {
                    grant_type: grant.as_str(),
                    client_id: client_id.to_owned(),
                });
            }
        }
        for issuer in issuers {
            let issuer = issuer.to_owned();
            for ok in [true, false] {
                self.jwks_fetches.remove(&JwksLabels {
                    issuer: issuer.clone(),
                    result: jwks_result(ok),
                });
            }
            self.jwks_last_success_time.remove(&IssuerLabels { issuer });
        }
    }

    /// Times one request of `series` with the outcome at index `outcome` of [`OUTCOMES`].
    fn observe(&self, series: &RouteSeries, outcome: usize, elapsed: Duration) {
        series.durations[outcome]
            .get_or_init(|| {
                self.durations
                    .get_or_create_owned(&series.duration_labels(OUTCOMES[outcome]))
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Times one token service request to `endpoint` (its path, [`NO_ROUTE`] for none) that
    /// was answered with `status`.
    pub fn issuer_request(&self, endpoint: &'static str, status: u16, elapsed: Duration) {
        let outcome = match status {
            ..400 => "ok",
            400..500 => "refused",
            _ => "failed",
        };
        self.issuer_durations
            .get_or_create(&EndpointLabels { endpoint, outcome })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts the first request of a route with this status and reason, and keeps its counter.
    fn first_request(&self, series: &RouteSeries, status: u16, reason: &'static str) {
        let counter = self
            .requests
            .get_or_create_owned(&series.request_labels(status, reason));
        counter.inc();
        series
            .requests
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((status, reason), counter);
    }

    /// Counts an access token issued to `client_id` (an authenticated, configured client).
    pub fn token_issued(&self, grant_type: &'static str, client_id: &str) {
        self.tokens_issued
            .get_or_create(&IssuedLabels {
                grant_type,
                client_id: client_id.to_owned(),
            })
            .inc();
    }

    /// Counts a token request refused with the OAuth error `error`.
    pub fn token_refused(&self, error: &'static str) {
        self.tokens_refused
            .get_or_create(&ErrorLabels { error })
            .inc();
    }

    /// The store answered (with how long the round trip took) or not.
    pub fn store(&self, answered: Option<std::time::Duration>) {
        self.store_up.set(i64::from(answered.is_some()));
        if let Some(took) = answered {
            self.store_round_trip.observe(took.as_secs_f64());
        }
    }

    /// How many revoked access tokens are held.
    pub fn revoked_tokens(&self, held: usize) {
        self.revoked_tokens
            .set(i64::try_from(held).unwrap_or(i64::MAX));
    }

    /// Counts a login attempt: `ok`, `failed`, `slowed` or `busy`.
    pub fn login(&self, result: &'static str) {
        self.logins.get_or_create(&ResultLabels { result }).inc();
    }

    /// Records an applied reload that made `generation` current.
    pub fn reload_applied(&self, generation: u64) {
        self.reloads_applied.inc();
        self.last_reload_success.set(1);
        self.last_reload_success_time.set(unix_now());
        self.generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
    }

    /// Records a rejected reload (the previous configuration keeps serving).
    pub fn reload_rejected(&self) {
        self.reloads_rejected.inc();
        self.last_reload_success.set(0);
    }

    /// Counts one JWKS fetch from the trusted issuer `issuer` (as configured).
    pub fn jwks_fetch(&self, issuer: &str, ok: bool) {
        if ok {
            self.jwks_last_success_time
                .get_or_create(&IssuerLabels {
                    issuer: issuer.to_owned(),
                })
                .set(unix_now());
        }
        self.jwks_fetches
            .get_or_create(&JwksLabels {
                issuer: issuer.to_owned(),
                result: jwks_result(ok),
            })
            .inc();
    }

    /// Counts one lookup in the verified-token cache.
    pub fn verified_cache(&self, hit: bool) {
        if hit {
            self.cache_hits.inc();
        } else {
            self.cache_misses.inc();
        }
    }

    /// Every metric in the OpenMetrics text format ([`CONTENT_TYPE`]), ending in `# EOF`.
    pub fn encode(&self) -> Result<String, Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn fixed_series_exist_at_zero_and_move() {
        let metrics = Metrics::new();
        let text = metrics.encode().unwrap();
        assert_eq!(
            sample(&text, "isogate_config_reloads_total{result=\"rejected\"}"),
            Some("0")
        );
        assert_eq!(sample(&text, "isogate_config_generation"), Some("1"));
        assert_eq!(
            sample(&text, "isogate_config_last_reload_success"),
            Some("1")
        );
        assert!(text.ends_with("# EOF\n"), "{text}");

        metrics.reload_rejected();
        metrics.reload_applied(2);
        metrics.reload_rejected();
        let text = metrics.encode().unwrap();
        assert_eq!(
            sample(&text, "isogate_config_reloads_total{result=\"rejected\"}"),
            Some("2")
        );
        assert_eq!(
            sample(&text, "isogate_config_reloads_total{result=\"applied\"}"),
            Some("1")
        );
        assert_eq!(sample(&text, "isogate_config_generation"), Some("2"));
        assert_eq!(
            sample(&text, "isogate_config_last_reload_success"),
            Some("0")
        );
    }

    #[test]
    fn proxy_requests_count_by_route_status_and_reason_and_time_by_route() {
        let metrics = Metrics::new();
        let ms = Duration::from_millis(3);
        metrics.proxy_request(Some("/invoices"), 200, "ok", ms);
        metrics.proxy_request(Some("/invoices"), 200, "ok", ms);
        metrics.proxy_request(None, 404, "no_route", ms);
        let text = metrics.encode().unwrap();
        assert_eq!(
            sample(
                &text,
                "isogate_requests_total{role=\"proxy\",route=\"/invoices\",status=\"200\",reason=\"ok\"}"
            ),
            Some("2")
        );
        assert_eq!(
            sample(
                &text,
                "isogate_requests_total{role=\"proxy\",route=\"-\",status=\"404\",reason=\"no_route\"}"
            ),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                "isogate_request_duration_seconds_count{route=\"/invoices\",outcome=\"forwarded\"}"
            ),
            Some("2")
        );
        assert_eq!(
            sample(
                &text,
                "isogate_request_duration_seconds_bucket{le=\"0.0025\",route=\"/invoices\",outcome=\"forwarded\"}"
            ),
            Some("0"),
            "3 ms is above 2.5 ms"
        );
        assert_eq!(
            sample(
                &text,
                "isogate_request_duration_seconds_bucket{le=\"0.005\",route=\"/invoices\",outcome=\"forwarded\"}"
            ),
            Some("2")
        );
        assert_eq!(
            sample(
                &text,
                "isogate_request_duration_seconds_count{route=\"-\",outcome=\"refused\"}"
            ),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                "isogate_request_duration_seconds_count{route=\"/invoices\",outcome=\"refused\"}"
            ),
            None,
            "no series for an outcome a route has not had"
        );
    }

    /// A scrape in which every family has a series.
    fn everything() -> String {
        let metrics = Metrics::new();
        let ms = Duration::from_millis(1);
        metrics.proxy_request(Some("/invoices"), 200, "ok", ms);
        metrics.issuer_request("/connect/token", 200, ms);
        metrics.token_issued("client_credentials", "client");
        metrics.token_refused("invalid_scope");
        metrics.store(Some(ms));
        metrics.revoked_tokens(1);
        metrics.login("ok");
        metrics.jwks_fetch("https://issuer.example", true);
        metrics.connections("proxy").open.inc();
        metrics.encode().unwrap()
    }

    /// The names of the metrics an expression of the dashboard reads.
    fn names_in(expr: &str) -> Vec<&str> {
        expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("isogate_") || word.starts_with("process_"))
            .collect()
    }

    #[test]
    fn the_dashboard_reads_only_series_that_exist() {
        let text = everything();
        let samples: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../docs/grafana/isogate.json")).unwrap();
        let mut read = 0;
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().unwrap();
                for name in names_in(expr) {
                    assert!(samples.contains(&name), "{name} in {expr:?}");
                    read += 1;
                }
            }
        }
        assert!(read > 20, "{read}");
    }

    #[test]
    fn the_readme_lists_every_metric() {
        let readme = include_str!("../README.md");
        let text = everything();
        for family in text.lines().filter_map(|l| l.strip_prefix("# HELP ")) {
            let family = family.split(' ').next().unwrap();
            assert!(
                ["", "_total", "_info"]
                    .iter()
                    .any(|suffix| readme.contains(&format!("`{family}{suffix}`"))),
                "{family} is not in the README"
            );
        }
    }
}
