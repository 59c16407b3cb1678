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
    /// Instead of writing tokens, time aws-lc's ES256 verification alone of one such token's
    /// signature on this thread and print the CPU µs per verification (the median of 5 batches):
    /// the floor under a verifying proxy's cold request, for the load script's cold target.
    #[arg(long)]
    time_verify: bool,
}

/// Verifications per batch of `--time-verify`.
const VERIFY_BATCH: u32 = 4_000;

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
    if args.time_verify {
        return match mint().and_then(|token| time_verify(&token)) {
            Ok(us) => {
                println!("{us:.1}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("load-mint: {e}");
                ExitCode::FAILURE
            }
        };
    }
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

/// The median µs of one ES256 signature check over `token`'s signing input, on a P-256 key of
/// its own (the cost does not depend on which key).
fn time_verify(token: &str) -> Result<f64, String> {
    use aws_lc_rs::signature::{
        EcdsaKeyPair, KeyPair, ParsedPublicKey, ECDSA_P256_SHA256_FIXED,
        ECDSA_P256_SHA256_FIXED_SIGNING,
    };
    let message = token
        .rsplit_once('.')
        .ok_or("the minted token is not a compact JWS")?
        .0
        .as_bytes();
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
        .map_err(|_| "cannot make a P-256 key")?;
    let signature = pair
        .sign(&aws_lc_rs::rand::SystemRandom::new(), message)
        .map_err(|_| "cannot sign")?;
    let key = ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, pair.public_key().as_ref())
        .map_err(|_| "the public key does not parse")?;
    let mut batches = Vec::new();
    for _ in 0..5 {
        let start = cpu_ns()?;
        for _ in 0..VERIFY_BATCH {
            key.verify_sig(std::hint::black_box(message), signature.as_ref())
                .map_err(|_| "the signature does not verify")?;
        }
        let spent = cpu_ns()?.saturating_sub(start);
        batches.push(spent as f64 / 1e3 / f64::from(VERIFY_BATCH));
    }
    batches.sort_by(f64::total_cmp);
    Ok(batches[2])
}

/// The CPU time this thread has run, in ns (the first field of Linux's schedstat): a busy
/// machine slows the clock on the wall, not this.
fn cpu_ns() -> Result<u64, String> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat")
        .map_err(|e| format!("cannot read /proc/thread-self/schedstat: {e}"))?;
    text.split_whitespace()
        .next()
        .and_then(|ns| ns.parse().ok())
        .ok_or_else(|| "unexpected /proc/thread-self/schedstat".to_owned())
}
