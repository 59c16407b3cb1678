//! The `isogate` command: parse arguments, set up logging, run, map errors to exit codes.

use std::io::{IsTerminal, Read, Write};
use std::os::unix::process::CommandExt;
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

/// EX_USAGE: the configuration is invalid. (Any other failure exits 1; clap exits 2 on a
/// command line it cannot parse.)
const EXIT_INVALID: u8 = 64;

#[derive(Parser)]
#[command(
    version,
    about = "OAuth 2.0 resource isolation for any HTTP API",
    after_help = "\
Exit codes:
  0   success
  1   any other failure: an empty secret, an existing key file, a listener or a grant store
      that cannot be opened
  2   a command line that cannot be parsed
  64  an invalid resource file, or a store schema newer than this isogate"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines, coloured on a terminal.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run every role the resource file configures.
    #[command(after_help = "\
Signals:
  SIGHUP           reload the resource file and its key files (as a change to them does)
  SIGTERM, SIGINT  stop accepting, drain in-flight requests for up to shutdown_grace, exit 0

Environment:
  RUST_LOG         the log filter (default: info), e.g. RUST_LOG=isogate=debug
  ISOGATE_WORKERS  how many threads serve the token service and the gateway (default: one
                   per CPU)
  MIMALLOC_PURGE_DELAY  how long freed memory stays resident, in ms (default here: 10)

Exits 64 on an invalid resource file or a store schema newer than this isogate, 1 when a
listener or the grant store cannot be opened.")]
    Serve {
        /// The resource file (TOML); relative paths in it are relative to its folder.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate the resource file and print every problem; exits 64 if there is one.
    Check {
        /// The resource file (TOML); key files it names need not exist yet.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Print the stored form of a client or API secret, for `secrets = [...]`.
    HashSecret {
        /// The secret. Without it: typed at a prompt without echo when stdin is a terminal,
        /// else read from stdin without its trailing newline. An empty secret is refused.
        secret: Option<String>,
    },
    /// Print an Argon2id hash of a user password, for `[[users]] password`.
    HashPassword {
        /// The password. Without it: typed at a prompt without echo when stdin is a terminal,
        /// else read from stdin without its trailing newline. An empty password is refused.
        password: Option<String>,
    },
    /// Write a new PKCS#8 PEM private key with mode 0600, and print its kid and the
    /// `[[issuer.signing_keys]]` entry that uses it.
    Keygen {
        /// The key's algorithm: ES256, ES384, RS256, PS256 or EdDSA.
        #[arg(long)]
        alg: Alg,
        /// The file to create; an existing file is never overwritten.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Print a DPoP proof (RFC 9449) for one request, signed with a client's key (as made by
    /// `keygen`): for trying DPoP with curl. The key's thumbprint is the kid `keygen` printed.
    DpopProof {
        /// The client's PKCS#8 PEM private key.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The key's algorithm: ES256, ES384, RS256, PS256 or EdDSA.
        #[arg(long)]
        alg: Alg,
        /// The request's method (`htm`).
        #[arg(long, default_value = "GET")]
        method: String,
        /// The request's URL without query (`htu`), e.g. http://127.0.0.1:5000/connect/token.
        #[arg(long)]
        url: String,
        /// The access token the request carries, for `ath` (at an API; not at the token
        /// endpoint).
        #[arg(long, value_name = "TOKEN")]
        access_token: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Serve { config } => {
            purge_soon();
            serve(&config)
        }
        Command::Check { config } => check(&config),
        Command::HashSecret { secret } => match input("secret", secret) {
            Ok(secret) => {
                let stored = isogate::secret::SecretHash::of(secret.as_bytes()).to_stored();
                print_out(&format!("{stored}\n"))
            }
            Err(message) => fail(message),
        },
        Command::HashPassword { password } => {
            let hashed = input("password", password).and_then(|password| {
                isogate::secret::hash_password(password.as_bytes())
                    .map_err(|e| format!("cannot hash the password: {e}"))
            });
            match hashed {
                Ok(phc) => print_out(&format!("{phc}\n")),
                Err(message) => fail(message),
            }
        }
        Command::Keygen { alg, out } => keygen(alg, &out),
        Command::DpopProof {
            key,
            alg,
            method,
            url,
            access_token,
        } => match isogate::dpop::ProofKey::from_file(&key, alg) {
            Ok(key) => {
                let now = isogate::jwt::numeric_date(std::time::SystemTime::now());
                let proof = key.proof(&method, &url, access_token.as_deref(), now);
                print_out(&format!("{proof}\n"))
            }
            Err(e) => fail(e.to_string()),
        },
    }
}

/// mimalloc's setting for how long memory freed to it stays resident before it is given back
/// to the operating system (1 s by default). mimalloc reads it from the environment when it
/// starts, before `main`.
const PURGE_DELAY: &str = "MIMALLOC_PURGE_DELAY";

/// The delay `serve` runs with, in ms. mimalloc purges what is freed only when a later free
/// finds the delay passed, and an idle gateway frees almost nothing after a load: with 10,000
/// entries 53 MiB stayed resident with the 1 s default (and `memory::release_after_load`), 27
/// MiB with 10 ms. At 0 every page that empties under load is given back and faulted in again
/// when it is next used: 0.27 page faults per warm gateway request against 0.055 at 10 ms
/// (BENCHMARKS.md, "Session 7").
const SERVE_PURGE_DELAY: &str = "10";

/// Starts `serve` again in this process with [`PURGE_DELAY`] at [`SERVE_PURGE_DELAY`], unless
/// it is set. The process keeps its id, arguments and descriptors; if it cannot be started
/// again it goes on as it is.
fn purge_soon() {
    if std::env::var_os(PURGE_DELAY).is_some() {
        return;
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            tracing::warn!(error = %e, "cannot find this program to set {PURGE_DELAY}={SERVE_PURGE_DELAY}; memory a load frees is given back later");
            return;
        }
    };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    // Returns only when it failed.
    let e = command
        .args(args)
        .env(PURGE_DELAY, SERVE_PURGE_DELAY)
        .exec();
    tracing::warn!(error = %e, "cannot start again with {PURGE_DELAY}={SERVE_PURGE_DELAY}; memory a load frees is given back later");
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

/// The value to hash: the argument; without one, typed at a prompt without echo when stdin is
/// a terminal, else stdin without its trailing newline. An empty value is refused: its hash
/// would let anyone in with nothing.
fn input(what: &str, argument: Option<String>) -> Result<String, String> {
    let (value, from) = match argument {
        Some(value) => (value, "as the argument"),
        None if std::io::stdin().is_terminal() => (prompt(what)?, "at the prompt"),
        None => {
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .map_err(|e| format!("cannot read the {what} from stdin: {e}"))?;
            let value = input.trim_end_matches(['\r', '\n']).to_owned();
            (value, "on stdin")
        }
    };
    if value.is_empty() {
        return Err(format!("refusing an empty {what} (given {from})"));
    }
    Ok(value)
}

/// Asks for `what` on stderr and reads it from the terminal on stdin, with echo off until the
/// line ends. It reads stdin's own terminal (rather than /dev/tty, the controlling one): that
/// is the terminal `input` found.
fn prompt(what: &str) -> Result<String, String> {
    let config = rpassword::ConfigBuilder::new()
        .input_file_path("/dev/stdin")
        .output_writer(std::io::stderr())
        .build();
    rpassword::prompt_password_with_config(format!("{what} (not echoed): "), config)
        .map_err(|e| format!("cannot read the {what} from the terminal: {e}"))
}

/// Writes `text` to stdout; a closed stdout is a failure, so that nothing is taken as written
/// that was not.
fn print_out(text: &str) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(format!("cannot write to stdout: {e}")),
    }
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
        .thread_keep_alive(isogate::BLOCKING_KEEP_ALIVE)
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
    if let Err(e) = isogate::jwt::generate_key_file(out, alg) {
        return fail(e.to_string());
    }
    // Loaded as `serve` loads it, so the kid printed is the one it will publish.
    match isogate::jwt::SigningKey::from_file(out, alg, None, false) {
        Ok(key) => print_out(&keygen_report(&key, out)),
        Err(e) => fail(e.to_string()),
    }
}

/// What `keygen` prints: the key's kid, and the entry that makes the resource file use it.
fn keygen_report(key: &isogate::jwt::SigningKey, out: &Path) -> String {
    let file = toml::Value::String(out.display().to_string());
    let relative = if out.is_relative() {
        "  # relative to the resource file's folder"
    } else {
        ""
    };
    format!(
        "wrote a new {alg} key to {path}\n\
         kid: {kid} (its RFC 7638 thumbprint: serve publishes it unless the entry names a kid)\n\
         \n\
         [[issuer.signing_keys]]\n\
         file = {file}{relative}\n\
         alg = \"{alg}\"\n",
        alg = key.alg,
        path = out.display(),
        kid = key.kid,
    )
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// `--help` explains every subcommand and every argument of each.
    #[test]
    fn every_subcommand_and_argument_has_help() {
        let mut cli = Cli::command();
        cli.build();
        let mut missing = Vec::new();
        for command in std::iter::once(&cli).chain(cli.get_subcommands()) {
            if command.get_about().is_none() {
                missing.push(command.get_name().to_owned());
            }
            for arg in command.get_arguments() {
                if arg.get_help().is_none() {
                    missing.push(format!("{} {}", command.get_name(), arg.get_id()));
                }
            }
        }
        assert!(missing.is_empty(), "no help for {missing:?}");
    }
}
