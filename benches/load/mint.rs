//! Mints distinct access tokens for the load script (`benches/load/run`), one per line on
//! stdout, signed with the first signing key of the resource file's `[issuer]`: the claims a
//! `client_credentials` request with one resource indicator gets from the token endpoint
//! (`iss`, `sub`, `aud`, `client_id`, `scope`, `iat`, `nbf`, `exp`, a random `jti`), so every
//! token differs and each one is valid for the gateway of the same file.
//!
//! ```sh
//! cargo run --release --example load-mint -- --config FILE --count 1000 > tokens.txt
//! ```

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use clap::Parser;
use isogate::config::{self, MissingKeys};

#[derive(Parser)]
struct Args {
    /// The resource file whose `[issuer]` signs.
    #[arg(long)]
    config: PathBuf,
    /// How many tokens to write.
    #[arg(long)]
    count: usize,
    /// The `client_id` and `sub`.
    #[arg(long, default_value = "client")]
    client: String,
    /// The `aud`: one resource.
    #[arg(long, default_value = "urn:invoices")]
    resource: String,
    /// The `scope`.
    #[arg(long, default_value = "read")]
    scope: String,
    /// Seconds until `exp`.
    #[arg(long, default_value_t = 3600)]
    lifetime: u64,
    /// Signing threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    client_id: &'a str,
    scope: &'a str,
    iat: u64,
    nbf: u64,
    exp: u64,
    jti: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match config::load(&args.config, MissingKeys::Generate) {
        Ok(config) => config,
        Err(invalid) => {
            eprintln!("load-mint: {invalid}");
            return ExitCode::FAILURE;
        }
    };
    let Some(issuer) = &config.issuer else {
        eprintln!("load-mint: the resource file has no [issuer]");
        return ExitCode::FAILURE;
    };
    let Some(key) = issuer.keys.signer(|_| true) else {
        eprintln!("load-mint: the issuer has no signing key");
        return ExitCode::FAILURE;
    };
    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mint = || -> Result<String, String> {
        let mut jti = [0u8; 16];
        aws_lc_rs::rand::fill(&mut jti).map_err(|_| "the system RNG failed".to_owned())?;
        let claims = Claims {
            iss: &issuer.issuer,
            sub: &args.client,
            aud: &args.resource,
            client_id: &args.client,
            scope: &args.scope,
            iat,
            nbf: iat,
            exp: iat + args.lifetime,
            jti: URL_SAFE_NO_PAD.encode(jti),
        };
        isogate::jwt::encode(key, "at+jwt", &claims).map_err(|e| e.to_string())
    };
    let threads = args.threads.max(1);
    let minted: Result<Vec<Vec<String>>, String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|i| {
                let share = args.count / threads + usize::from(i < args.count % threads);
                scope.spawn(move || (0..share).map(|_| mint()).collect::<Result<Vec<_>, _>>())
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err("a signing thread panicked".into()))
            })
            .collect()
    });
    let minted = match minted {
        Ok(minted) => minted,
        Err(e) => {
            eprintln!("load-mint: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = BufWriter::new(std::io::stdout().lock());
    for token in minted.iter().flatten() {
        if writeln!(out, "{token}").is_err() {
            return ExitCode::FAILURE;
        }
    }
    if out.flush().is_err() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
