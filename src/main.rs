//! The `isogate` command: parse arguments, set up logging, run, map errors to exit codes.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use isogate::config::{self, MissingKeys};
use isogate::jwt::Alg;

/// mimalloc rather than glibc's malloc: hyper and the gateway allocate and free small objects
/// for every request on every worker thread, and a token's cached claims are freed by whichever
/// worker evicts them. Under load it took 2.5 µs of CPU off a warm request and 8 µs off a cold
/// one (BENCHMARKS.md, session 4).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// EX_USAGE: the configuration is invalid.
const EXIT_INVALID: u8 = 64;

#[derive(Parser)]
#[command(version, about = "OAuth 2.0 resource isolation for any HTTP API")]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run every role the resource file configures.
    Serve {
        /// The resource file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate the resource file and print every problem.
    Check {
        /// The resource file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the stored form of a client or API secret (reads stdin without SECRET).
    HashSecret { secret: Option<String> },
    /// Print an Argon2id hash of a user password (reads stdin without PASSWORD).
    HashPassword { password: Option<String> },
    /// Write a new PKCS#8 PEM private key with mode 0600.
    Keygen {
        /// ES256, ES384, RS256, PS256 or EdDSA.
        #[arg(long)]
        alg: Alg,
        /// The file to create; an existing file is never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Serve { config } => serve(&config),
        Command::Check { config } => check(&config),
        Command::HashSecret { secret } => {
            let secret = argument_or_stdin(secret);
            println!(
                "{}",
                isogate::secret::SecretHash::of(secret.as_bytes()).to_stored()
            );
            ExitCode::SUCCESS
        }
        Command::HashPassword { password } => {
            let password = argument_or_stdin(password);
            match isogate::secret::hash_password(password.as_bytes()) {
                Ok(phc) => {
                    println!("{phc}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(format!("cannot hash the password: {e}")),
            }
        }
        Command::Keygen { alg, out } => keygen(alg, &out),
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// The argument, or stdin without its trailing newline.
fn argument_or_stdin(value: Option<String>) -> String {
    value.unwrap_or_else(|| {
        let mut input = String::new();
        let _ = std::io::stdin().read_to_string(&mut input);
        input.trim_end_matches(['\r', '\n']).to_owned()
    })
}

fn fail(message: String) -> ExitCode {
    eprintln!("isogate: {message}");
    ExitCode::FAILURE
}

fn check(path: &Path) -> ExitCode {
    match config::load(path, MissingKeys::Accept) {
        Ok(config) => {
            println!("{}: ok, {}", path.display(), config.summary());
            ExitCode::SUCCESS
        }
        Err(invalid) => {
            eprintln!("{invalid}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}

fn serve(path: &Path) -> ExitCode {
    let config = match config::load(path, MissingKeys::Generate) {
        Ok(config) => config,
        Err(invalid) => {
            invalid.log("invalid configuration; not starting");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    // Every connection and upstream connection takes a descriptor: allow as many as the hard
    // limit does (as Go's runtime and nginx's worker_rlimit_nofile do). The server checks that
    // the listeners' max_connections fit in what this leaves.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "cannot raise the open-file limit");
    }
    // Signals, reloads and the admin listener; the worker threads serve the rest.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    match runtime.block_on(isogate::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        // Another, newer isogate owns the database's schema: a configuration problem.
        Err(
            e @ isogate::RunError::Start(isogate::StartError::Store(
                isogate::grants::StoreError::SchemaTooNew { .. },
            )),
        ) => {
            tracing::error!("{e}");
            ExitCode::from(EXIT_INVALID)
        }
        Err(e) => fail(e.to_string()),
    }
}

fn keygen(alg: Alg, out: &Path) -> ExitCode {
    match isogate::jwt::generate_key_file(out, alg) {
        Ok(()) => {
            let _ = writeln!(
                std::io::stdout(),
                "wrote a new {alg} key to {}",
                out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e.to_string()),
    }
}
