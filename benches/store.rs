//! Grants per second on each store, side by side in one run (issue 14, item 7): code
//! redemptions (the look-up, then the spend) and one-time refreshes (the look-up, then the
//! rotation), each from `WORKERS` concurrent tasks, on the embedded redb file and on the
//! PostgreSQL named by `ISOGATE_BENCH_PG` (`benches/store/run` starts a private one). Prints
//! grants per second, p50 and p99 latency, and on PostgreSQL the transactions each grant took
//! (from `pg_stat_database`: every statement outside a transaction is one).
//!
//! Not a Criterion bench: what is measured is a whole store under concurrency, not a loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use isogate::config::StoreConfig;
use isogate::grants::{AccessToken, Authorization, CodeGrant, Grants, PgStore, RefreshPolicy};

const WORKERS: usize = 16;
const GRANTS: usize = 8000;
const NOW: u64 = 1_800_000_000;
const POLICY: RefreshPolicy = RefreshPolicy {
    one_time: true,
    absolute: Duration::from_secs(86_400),
    sliding: Duration::ZERO,
    reuse_grace: Duration::ZERO,
};

fn authorization() -> Authorization {
    Authorization {
        client_id: "web".into(),
        subject: "818727".into(),
        scopes: vec!["read".into(), "offline_access".into()],
        resources: vec!["urn:invoices".into(), "urn:products".into()],
        auth_time: NOW,
        jkt: None,
    }
}

fn code_grant() -> CodeGrant {
    CodeGrant {
        authorization: authorization(),
        redirect_uri: "https://app.example/cb".into(),
        code_challenge: None,
        nonce: None,
    }
}

/// A unique `jti` per access token.
fn jti(worker: usize, i: usize) -> String {
    format!("bench-{worker}-{i}-{}", std::process::id())
}

struct Row {
    store: &'static str,
    grant: &'static str,
    per_second: f64,
    p50: Duration,
    p99: Duration,
    transactions: Option<f64>,
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let mut rows = Vec::new();
        let dir = tempfile::tempdir().expect("a temporary folder");
        let redb = Grants::open(dir.path()).expect("the redb store opens");
        rows.extend(run("redb", &redb, None).await);
        match std::env::var("ISOGATE_BENCH_PG") {
            Ok(url) => {
                let config = StoreConfig {
                    pg: url.parse().expect("ISOGATE_BENCH_PG is a postgres:// URL"),
                    pool_size: WORKERS,
                    connect_timeout: Duration::from_secs(5),
                    tls_roots: None,
                    shown: url.clone(),
                };
                let store = Arc::new(PgStore::new(&config).expect("a pool"));
                store.migrate().await.expect("the store answers");
                let stats = Stats::connect(&url).await;
                rows.extend(run("postgres", &Grants::postgres(store), Some(&stats)).await);
            }
            Err(_) => eprintln!("ISOGATE_BENCH_PG is not set: PostgreSQL is not measured"),
        }
        print(&rows);
    });
}

async fn run(store: &'static str, grants: &Grants, stats: Option<&Stats>) -> Vec<Row> {
    // Codes to redeem, issued beforehand: only redemptions are timed.
    let mut codes = Vec::with_capacity(GRANTS);
    for _ in 0..GRANTS {
        let code = grants
            .issue_code(code_grant(), Duration::from_secs(3600), NOW)
            .await
            .expect("a code");
        codes.push(code);
    }
    let per_worker: Vec<Vec<String>> = (0..WORKERS)
        .map(|w| codes.iter().skip(w).step_by(WORKERS).cloned().collect())
        .collect();
    let before = stats.map(Stats::read);
    let before = match before {
        Some(f) => Some(f.await),
        None => None,
    };
    let (elapsed, mut latencies, tokens) =
        timed(per_worker, grants, |grants, w, i, code| async move {
            let grant = grants
                .code(&code, NOW)
                .await
                .expect("store")
                .expect("a code");
            let access = jti(w, i);
            let redeemed = grants
                .redeem_code(
                    &code,
                    &grant.authorization,
                    NOW,
                    AccessToken {
                        jti: &access,
                        exp: NOW + 3600,
                    },
                    Some(POLICY),
                )
                .await
                .expect("store")
                .expect("redeemed");
            redeemed.refresh_token.expect("a refresh token")
        })
        .await;
    let redeemed = row(
        store,
        "code redemption",
        elapsed,
        &mut latencies,
        stats,
        before,
    )
    .await;

    // Each refresh token is rotated once.
    let per_worker: Vec<Vec<String>> = (0..WORKERS)
        .map(|w| tokens.iter().skip(w).step_by(WORKERS).cloned().collect())
        .collect();
    let before = match stats {
        Some(stats) => Some(stats.read().await),
        None => None,
    };
    let (elapsed, mut latencies, _) = timed(per_worker, grants, |grants, w, i, token| async move {
        grants
            .usable_refresh(&token, POLICY, NOW + 1)
            .await
            .expect("store")
            .expect("usable");
        let access = jti(w, i + GRANTS);
        grants
            .use_refresh(
                &token,
                "web",
                POLICY,
                NOW + 1,
                AccessToken {
                    jti: &access,
                    exp: NOW + 3600,
                },
            )
            .await
            .expect("store")
            .expect("rotated")
            .token
    })
    .await;
    let refreshed = row(
        store,
        "refresh (one-time)",
        elapsed,
        &mut latencies,
        stats,
        before,
    )
    .await;
    vec![redeemed, refreshed]
}

/// Runs `op` on every item, one task per worker; returns the wall time, each op's latency
/// and what each op returned.
async fn timed<F, Fut>(
    items: Vec<Vec<String>>,
    grants: &Grants,
    op: F,
) -> (Duration, Vec<Duration>, Vec<String>)
where
    F: Fn(Grants, usize, usize, String) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = String> + Send,
{
    let start = Instant::now();
    let tasks: Vec<_> = items
        .into_iter()
        .enumerate()
        .map(|(w, items)| {
            let grants = grants.clone();
            tokio::spawn(async move {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    let began = Instant::now();
                    let value = op(grants.clone(), w, i, item).await;
                    out.push((began.elapsed(), value));
                }
                out
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut values = Vec::new();
    for task in tasks {
        for (latency, value) in task.await.expect("a worker") {
            latencies.push(latency);
            values.push(value);
        }
    }
    (start.elapsed(), latencies, values)
}

async fn row(
    store: &'static str,
    grant: &'static str,
    elapsed: Duration,
    latencies: &mut [Duration],
    stats: Option<&Stats>,
    before: Option<i64>,
) -> Row {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    let transactions = match (stats, before) {
        (Some(stats), Some(before)) => {
            let after = stats.read().await;
            Some((after - before) as f64 / latencies.len() as f64)
        }
        _ => None,
    };
    Row {
        store,
        grant,
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
        transactions,
    }
}

/// `pg_stat_database.xact_commit` of the bench's database.
struct Stats {
    client: tokio_postgres::Client,
}

impl Stats {
    async fn connect(url: &str) -> Self {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("a connection for the statistics");
        tokio::spawn(connection);
        Stats { client }
    }

    /// Committed transactions so far (each read adds one of its own: noise over thousands).
    async fn read(&self) -> i64 {
        // Statistics reach the shared view at most once a second.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        self.client
            .query_one(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
                &[],
            )
            .await
            .expect("pg_stat_database")
            .get(0)
    }
}

fn print(rows: &[Row]) {
    println!(
        "isogate store bench: {GRANTS} grants of each kind, {WORKERS} concurrent tasks, 2 worker threads"
    );
    println!();
    println!("| store | grant | grants/s | p50 µs | p99 µs | transactions per grant |");
    println!("|:--|:--|--:|--:|--:|--:|");
    for row in rows {
        println!(
            "| {} | {} | {:.0} | {} | {} | {} |",
            row.store,
            row.grant,
            row.per_second,
            row.p50.as_micros(),
            row.p99.as_micros(),
            row.transactions
                .map_or_else(|| "-".to_owned(), |t| format!("{t:.2}"))
        );
    }
}
