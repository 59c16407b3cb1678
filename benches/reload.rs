//! Hot-reload latency: the time from writing the resource file (an atomic rename, as editors
//! and Kubernetes do) to the new configuration being served, over 100 reloads. Prints p50, p99
//! and the maximum; it measures and asserts nothing.
//!
//!     cargo bench --bench reload

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use isogate::config::{self, MissingKeys};
use isogate::jwt::Alg;
use isogate::Server;

const RELOADS: usize = 100;

/// The benches' resource file (see `common`) with the client allowed `scopes`.
fn resource_file(scopes: &str) -> String {
    common::resource_file(Alg::ES256).replace(
        "allowed_scopes = [\"read\", \"write\"]",
        &format!("allowed_scopes = {scopes}"),
    )
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    // `cargo test --benches` runs bench targets with `--test`; a smoke run is enough there.
    let reloads = if std::env::args().any(|a| a == "--test") {
        3
    } else {
        RELOADS
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("isogate.toml");
        let variants = [
            resource_file(r#"["read", "write"]"#),
            resource_file(r#"["read"]"#),
        ];
        std::fs::write(&path, &variants[0]).expect("write");
        let config = config::load(&path, MissingKeys::Generate).expect("valid");
        let server = Server::start(config).await.expect("start");
        let mut status = server.status();
        let mut times = Vec::with_capacity(reloads);
        for i in 1..=reloads {
            let written = Instant::now();
            write_atomically(&path, &variants[i % 2]);
            tokio::time::timeout(
                Duration::from_secs(10),
                status.wait_for(|s| s.applied == i as u64),
            )
            .await
            .expect("reload within 10 s")
            .expect("server running");
            times.push(written.elapsed());
        }
        times.sort();
        println!(
            "reload latency over {reloads} reloads: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            percentile(&times, 50.0).as_secs_f64() * 1e3,
            percentile(&times, 99.0).as_secs_f64() * 1e3,
            times.last().expect("some").as_secs_f64() * 1e3,
        );
        server.shutdown().await;
    });
}
