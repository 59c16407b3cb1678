//! Interop: strict third-party clients against the built `isogate` binary.
//!
//! - openid-client 6 + jose (Node): discovery, client_credentials with a resource indicator
//!   over client_secret_basic, client_secret_post and private_key_jwt (its own RFC 7523
//!   assertion), RFC 9068 verification of the token.
//! - Authlib (Python): RFC 8414 and OpenID Connect Discovery validation of both documents.
//! - openid-client 6 and Authlib's OAuth2Session run the authorization code journey of SPEC §6
//!   (PKCE S256, two resource indicators, one narrow token per redemption and refresh),
//!   driving the login form over HTTP.
//! - headless Chromium (`ISOGATE_CHROMIUM`, default Debian's /usr/bin/chromium), driven by
//!   playwright-core, signs in on the login page and lands on a redirect URI served by the
//!   test, whose code openid-client then redeems; and, with two instances on one PostgreSQL
//!   (SPEC §7), signs in at one and gets a code at the other without signing in again.
//! - the MCP TypeScript SDK (`@modelcontextprotocol/sdk`): its client, with an OAuth provider,
//!   reaches an MCP server written with the same SDK through the gateway (SPEC §10): discovery
//!   from the 401, RFC 7591 registration, sign-in, a token for that server alone, tools listed
//!   and called, and a step-up after a `403 insufficient_scope`.
//!
//! The clients are pinned under tests/interop and installed by `scripts/setup-interop`. When
//! they are missing these tests are skipped with a notice, unless `ISOGATE_INTEROP=1`, which
//! makes that a failure (CI sets it).

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::{repo, Running, SECRET, SECRET_HASH};

/// How long one client script may run.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

fn interop_dir() -> PathBuf {
    repo().join("tests/interop")
}

/// True when every path exists. Otherwise skips (notice on stderr) or, with
/// `ISOGATE_INTEROP=1`, fails.
fn installed(what: &str, paths: &[PathBuf]) -> bool {
    let missing: Vec<String> = paths
        .iter()
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let message = format!(
        "the {what} interop client is not installed (missing {}); run scripts/setup-interop",
        missing.join(", ")
    );
    if std::env::var("ISOGATE_INTEROP").as_deref() == Ok("1") {
        panic!("{message} (ISOGATE_INTEROP=1 requires it)");
    }
    eprintln!("skipping: {message}, or set ISOGATE_INTEROP=1 to require it");
    false
}

/// The redirect URI of the example's `web` client (nothing listens there).
const EXAMPLE_REDIRECT_URI: &str = "http://127.0.0.1:5002/callback";

/// The browser: `ISOGATE_CHROMIUM`, or Debian's Chromium, which `scripts/setup-interop`
/// installs when that variable does not name a program.
fn chromium() -> PathBuf {
    std::env::var_os("ISOGATE_CHROMIUM").map_or_else(|| "/usr/bin/chromium".into(), PathBuf::from)
}

/// The browser tests' requirements, for [`installed`].
const BROWSER: &str =
    "headless Chromium (ISOGATE_CHROMIUM, default /usr/bin/chromium) with playwright-core (npm)";

/// The shipped example, config/isogate.toml, with the issuer on `port` (so that `issuer` is
/// the real, reachable address), the gateway and admin listeners on ephemeral ports, and the
/// `web` client's redirect URI replaced by `redirect_uri` when given.
fn config(port: u16, redirect_uri: Option<&str>) -> String {
    let example = std::fs::read_to_string(repo().join("config/isogate.toml")).expect("the example");
    assert!(
        example.contains(SECRET_HASH),
        "the example's client secret is \"secret\""
    );
    assert!(
        example.contains(EXAMPLE_REDIRECT_URI),
        "the example's web client redirects to {EXAMPLE_REDIRECT_URI}"
    );
    example
        .replace("127.0.0.1:5000", &format!("127.0.0.1:{port}"))
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\"")
        .replace("listen = \"127.0.0.1:9901\"", "listen = \"127.0.0.1:0\"")
        .replace(
            EXAMPLE_REDIRECT_URI,
            redirect_uri.unwrap_or(EXAMPLE_REDIRECT_URI),
        )
}

/// `isogate serve` on a fixed free port, so that `issuer` is the real, reachable address.
/// Dropping it kills the process (also when a test panics), then removes the folder.
struct Server {
    running: Running,
    issuer: String,
    /// Where it listens as the token service (the issuer's, unless it is a second instance).
    base: String,
    _dir: Option<tempfile::TempDir>,
}

/// A free loopback port: the OS picks it, and it is released for isogate to bind right after.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl Server {
    fn start() -> Self {
        Self::start_with_redirect_uri(None)
    }

    /// Like [`Server::start`], with the `web` client redirecting to `redirect_uri`.
    fn start_with_redirect_uri(redirect_uri: Option<&str>) -> Self {
        Self::start_with_config(|port| config(port, redirect_uri))
    }

    /// `isogate serve` on the file `config(port)` makes for the port it will listen on.
    fn start_with_config(config: impl Fn(u16) -> String) -> Self {
        Self::start_with_env(config, &[])
    }

    /// [`Server::start_with_config`] with extra environment variables.
    fn start_with_env(config: impl Fn(u16) -> String, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = Self::spawn(dir.path(), "isogate.toml", port, &config(port), env);
        server._dir = Some(dir);
        server
    }

    /// Two instances of the example on the database at `store`, in one folder (so the second
    /// signs with the keys the first made) and with one issuer, the first one's address: a
    /// fleet whose load balancer is left out.
    fn start_fleet(store: &str, redirect_uri: &str) -> (Self, Self) {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let toml = format!(
            "{}\n[store]\nurl = \"{store}\"\n",
            config(port, Some(redirect_uri))
        );
        let first = Self::spawn(dir.path(), "a.toml", port, &toml, &[]);
        let other = free_port();
        let listen = |port: u16| format!("listen = \"127.0.0.1:{port}\"");
        assert!(toml.contains(&listen(port)), "the issuer listens on {port}");
        let toml = toml.replace(&listen(port), &listen(other));
        let mut second = Self::spawn(dir.path(), "b.toml", other, &toml, &[]);
        second.issuer = first.issuer.clone();
        second._dir = Some(dir);
        (first, second)
    }

    /// `isogate serve` on `toml`, written to `dir/name`, whose token service listens on `port`.
    fn spawn(dir: &Path, name: &str, port: u16, toml: &str, env: &[(&str, &str)]) -> Self {
        let path = dir.join(name);
        std::fs::write(&path, toml).expect("write config");
        let path = path.to_str().expect("UTF-8 temp path");
        let args = ["serve", "--config", path];
        let mut running = Running::spawn_with_env(env!("CARGO_BIN_EXE_isogate"), &args, env);
        let line = running.wait_for("listening role=issuer addr=");
        let addr: SocketAddr = line
            .rsplit("addr=")
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        assert_eq!(addr.port(), port, "isogate listens where its file says");
        let base = format!("http://127.0.0.1:{port}");
        Server {
            running,
            issuer: base.clone(),
            base,
            _dir: None,
        }
    }

    /// Stops the server and returns its log (for failure messages).
    fn log(self) -> String {
        self.running.signal("TERM");
        self.running.finish().1
    }
}

/// A redirect URI that answers, so that a browser lands on a real page: serves a short HTML
/// page at `/callback` (404 elsewhere) and reports the request target of every request.
struct Callback {
    uri: String,
    seen: mpsc::Receiver<String>,
}

impl Callback {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port for the callback");
        let port = listener.local_addr().expect("its address").port();
        let (tx, seen) = mpsc::channel();
        // Lives as long as the test binary; one thread per connection, because a browser may
        // open a connection ahead of time and send nothing on it.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let tx = tx.clone();
                std::thread::spawn(move || Self::answer(stream, &tx));
            }
        });
        Callback {
            uri: format!("http://127.0.0.1:{port}/callback"),
            seen,
        }
    }

    fn answer(mut stream: std::net::TcpStream, tx: &mpsc::Sender<String>) {
        let _ = stream.set_read_timeout(Some(SCRIPT_TIMEOUT));
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let head = String::from_utf8_lossy(&head);
        let target = head.split_whitespace().nth(1).unwrap_or("").to_owned();
        let (status, body) = if target == "/callback" || target.starts_with("/callback?") {
            (
                "200 OK",
                "<!DOCTYPE html>\n<title>Callback</title>\n<h1>Signed in: the client has its code</h1>\n",
            )
        } else {
            ("404 Not Found", "not found\n")
        };
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = std::io::Write::write_all(&mut stream, response.as_bytes());
        let _ = tx.send(target);
    }

    /// The query of every request that reached `/callback` so far.
    fn arrivals(&self) -> Vec<std::collections::HashMap<String, String>> {
        self.seen
            .try_iter()
            .filter_map(|target| {
                let url = url::Url::parse(&format!("http://callback{target}")).ok()?;
                (url.path() == "/callback").then(|| {
                    url.query_pairs()
                        .map(|(k, v)| (k.into(), v.into()))
                        .collect()
                })
            })
            .collect()
    }
}

/// What a client script did.
struct Outcome {
    command: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn report(&self) -> String {
        format!(
            "$ {}\nexit: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.code, self.stdout, self.stderr
        )
    }

    /// Asserts exit 0; on failure the message has the script's output and the server's log.
    fn assert_success(&self, server: Server) -> Server {
        if self.code == Some(0) {
            return server;
        }
        let log = server.log();
        panic!(
            "the client failed against isogate\n{}\n--- isogate log ---\n{log}",
            self.report()
        );
    }
}

/// Kills the child when dropped (a timed-out or panicking test leaves no process behind).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `program args` from the repository root and collects its output, failing the test
/// after [`SCRIPT_TIMEOUT`].
fn run(program: &Path, args: &[&str]) -> Outcome {
    let command = format!("{} {}", program.display(), args.join(" "));
    let child = Command::new(program)
        .args(args)
        .current_dir(repo())
        // Authlib would skip its https checks with this set; the script drops it too.
        .env_remove("AUTHLIB_INSECURE_TRANSPORT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {command}: {e}; run scripts/setup-interop (needs node and python3)")
        });
    let mut child = KillOnDrop(child);
    let (tx, rx) = mpsc::channel();
    let streams: [(usize, Box<dyn Read + Send>); 2] = [
        (0, Box::new(child.0.stdout.take().expect("stdout"))),
        (1, Box::new(child.0.stderr.take().expect("stderr"))),
    ];
    for (index, mut stream) in streams {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = stream.read_to_end(&mut bytes);
            let _ = tx.send((index, String::from_utf8_lossy(&bytes).into_owned()));
        });
    }
    drop(tx);
    // Both pipes reach end of file when the script exits.
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let mut output = [String::new(), String::new()];
    for _ in 0..2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let (index, text) = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("{command} did not finish within {SCRIPT_TIMEOUT:?}"));
        output[index] = text;
    }
    let status = child.0.wait().expect("wait for the client");
    let [stdout, stderr] = output;
    Outcome {
        command,
        code: status.code(),
        stdout,
        stderr,
    }
}

/// openid-client and jose under `dir` (see [`installed`]).
fn openid_client_installed(dir: &Path) -> bool {
    installed(
        "openid-client (npm)",
        &[
            dir.join("node_modules/openid-client/package.json"),
            dir.join("node_modules/jose/package.json"),
        ],
    )
}

#[tokio::test]
async fn openid_client_gets_and_jose_verifies_an_isolated_token() {
    let dir = interop_dir();
    if !openid_client_installed(&dir) {
        return;
    }
    // A private_key_jwt client (SPEC §9) whose public key is in a JWKS file; openid-client
    // signs its assertions with the private half.
    let keys = tempfile::tempdir().expect("temp dir");
    let pem = keys.path().join("signed.pem");
    isogate::jwt::generate_key_file(&pem, isogate::jwt::Alg::ES256).expect("a key");
    let key = isogate::jwt::SigningKey::from_file(
        &pem,
        isogate::jwt::Alg::ES256,
        Some("k1".into()),
        false,
    )
    .expect("the key");
    let jwks = keys.path().join("signed.jwks.json");
    let set = serde_json::json!({"keys": [serde_json::to_value(&key.jwk).expect("a JWK")]});
    std::fs::write(&jwks, set.to_string()).expect("write the JWKS");
    let signed = format!(
        "\n[[clients]]\nclient_id = \"signed\"\ntoken_endpoint_auth_method = \"private_key_jwt\"\njwks_file = \"{}\"\nallowed_grant_types = [\"client_credentials\"]\nallowed_scopes = [\"read\"]\n",
        jwks.display()
    );
    let server = Server::start_with_config(|port| config(port, None) + &signed);
    let script = dir.join("openid_client.mjs");
    let script = script.to_str().expect("UTF-8 path");
    let node = Path::new("node");
    let issuer = server.issuer.clone();
    let pem = pem.to_str().expect("UTF-8 path");
    let args = |secret: &'static str| {
        vec![
            script,
            "--issuer",
            issuer.as_str(),
            "--client-id",
            "client",
            "--client-secret",
            secret,
            "--scope",
            "read",
            "--resource",
            "urn:invoices",
            "--key-client-id",
            "signed",
            "--private-key",
            pem,
            "--kid",
            "k1",
        ]
    };

    let outcome = run(node, &args(SECRET));
    let server = outcome.assert_success(server);
    print!("{}", outcome.stdout);
    for method in [
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
    ] {
        assert!(
            outcome.stdout.contains(&format!("ok {method} ")),
            "{method} was not exercised\n{}",
            outcome.report()
        );
    }

    // The same script must notice when isogate refuses it: a wrong secret is a 401.
    let refused = run(node, &args("not-the-secret"));
    assert_eq!(refused.code, Some(1), "{}", refused.report());
    assert!(
        refused.stderr.contains("FAILED") && refused.stderr.contains("HTTP 401"),
        "{}",
        refused.report()
    );
    drop(server);
}

/// openid-client's DPoP handle (SPEC §8): a bound token from the example's issuer, checked by
/// jose, used through the gateway to a real upstream, and refused there as a Bearer token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openid_client_uses_a_dpop_bound_token_through_the_gateway() {
    let dir = interop_dir();
    if !openid_client_installed(&dir) {
        return;
    }
    let upstream = crate::servers::Upstream::start().await;
    let upstream_url = upstream.url();
    let mut server = Server::start_with_config(|port| {
        config(port, None).replace("http://127.0.0.1:9001", &upstream_url)
    });
    let proxy =
        crate::support::listening_addr(&server.running.last_line_with("listening role=proxy"))
            .expect("the gateway's address");
    let script = dir.join("openid_client_dpop.mjs");
    let gateway = format!("http://{proxy}");
    let args = [
        script.to_str().expect("UTF-8 path"),
        "--issuer",
        server.issuer.as_str(),
        "--gateway",
        gateway.as_str(),
    ];
    let outcome = run(Path::new("node"), &args);
    let server = outcome.assert_success(server);
    print!("{}", outcome.stdout);
    assert!(
        outcome.stdout.contains("ok dpop: token_type=dpop"),
        "{}",
        outcome.report()
    );
    // Exactly the one call with a proof reached the upstream, with the proof beside the token.
    assert_eq!(upstream.count(), 1);
    let forwarded = upstream.last();
    assert!(forwarded.headers["authorization"]
        .to_str()
        .unwrap()
        .starts_with("DPoP "));
    assert!(forwarded.headers.contains_key("dpop"));
    drop(server);
}

/// The virtualenv's python with Authlib, when installed (see [`installed`]).
fn authlib_python() -> Option<PathBuf> {
    let python = interop_dir().join(".venv/bin/python");
    installed("Authlib (PyPI)", std::slice::from_ref(&python)).then_some(python)
}

/// Prometheus's own Python client parses a scrape of the example, after a token, a refusal
/// and an unreachable upstream, as strict OpenMetrics, with every family of the README's
/// table that has series by then and with the type the table gives.
#[tokio::test]
async fn prometheus_client_parses_the_metrics() {
    let Some(python) = authlib_python() else {
        return;
    };
    let mut server = Server::start();
    let proxy =
        crate::support::listening_addr(&server.running.last_line_with("listening role=proxy"))
            .expect("the gateway's address");
    let admin =
        crate::support::listening_addr(&server.running.last_line_with("listening role=admin"))
            .expect("the admin address");
    let token = crate::support::post_form(
        &format!("{}/connect/token", server.base),
        &[
            ("grant_type", "client_credentials"),
            ("resource", "urn:invoices"),
        ],
        Some(("client", SECRET)),
    )
    .await;
    assert_eq!(token.status, http::StatusCode::OK, "{}", token.text());
    let token = token.json()["access_token"]
        .as_str()
        .expect("a token")
        .to_owned();
    let refused = crate::support::get(&format!("http://{proxy}/invoices/1")).await;
    assert_eq!(refused.status, http::StatusCode::UNAUTHORIZED);
    // Nothing listens on the example's upstream port in the tests.
    let unreachable = crate::support::with_bearer(
        http::Method::GET,
        &format!("http://{proxy}/invoices/1"),
        &token,
    )
    .await;
    assert_eq!(unreachable.status, http::StatusCode::BAD_GATEWAY);

    let script = interop_dir().join("prometheus_scrape.py");
    let url = format!("http://{admin}/metrics");
    let outcome = run(
        &python,
        &[script.to_str().expect("UTF-8 path"), "--url", &url],
    );
    let server = outcome.assert_success(server);
    print!("{}", outcome.stdout);
    for family in [
        "isogate_requests counter",
        "isogate_request_duration_seconds histogram",
        "isogate_issuer_request_duration_seconds histogram",
        "isogate_tokens_issued counter",
        "isogate_config_last_reload_success_timestamp_seconds gauge",
        "isogate_verified_token_cache counter",
        "isogate_connections gauge",
        "isogate_build info",
        "process_cpu_seconds counter",
        "process_resident_memory_bytes gauge",
        "process_start_time_seconds gauge",
        "process_open_fds gauge",
    ] {
        assert!(
            outcome
                .stdout
                .lines()
                .any(|l| l.starts_with(&format!("{family} "))),
            "no {family}\n{}",
            outcome.report()
        );
    }
    drop(server);
}

#[tokio::test]
async fn authlib_validates_both_discovery_documents() {
    let Some(python) = authlib_python() else {
        return;
    };
    let server = Server::start();
    let script = interop_dir().join("authlib_metadata.py");
    let script = script.to_str().expect("UTF-8 path");

    let outcome = run(&python, &[script, "--issuer", &server.issuer]);
    let server = outcome.assert_success(server);
    print!("{}", outcome.stdout);
    for document in ["oauth-authorization-server", "openid-configuration"] {
        assert!(
            outcome
                .stdout
                .contains(&format!("/.well-known/{document}: ")),
            "{document} was not validated\n{}",
            outcome.report()
        );
    }

    // An issuer with no RS256 key is no OpenID provider: its RFC 8414 document validates,
    // Authlib's OpenID validator rejects that document, and isogate does not publish it as
    // /.well-known/openid-configuration.
    let es256_only = Server::start_with_config(|port| {
        crate::support::issuer_section(&format!("http://127.0.0.1:{port}"))
            .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{port}\""))
            .replace(
                "\n[[issuer.signing_keys]]\nfile = \"keys/rs256.pem\"\nalg = \"RS256\"\nkid = \"rs\"\ngenerate_if_missing = true\n",
                "",
            )
            + crate::support::SEED
    });
    let outcome = run(
        &python,
        &[script, "--issuer", &es256_only.issuer, "--no-openid"],
    );
    let es256_only = outcome.assert_success(es256_only);
    print!("{}", outcome.stdout);
    assert!(
        outcome.stdout.contains("OpenIDProviderMetadata rejects it")
            && outcome.stdout.contains("RS256"),
        "{}",
        outcome.report()
    );
    drop(es256_only);

    // The same script must notice a document whose issuer is not the one asked for.
    let port = server.issuer.rsplit(':').next().expect("port");
    let elsewhere = format!("http://localhost:{port}");
    let refused = run(&python, &[script, "--issuer", &elsewhere]);
    assert_eq!(refused.code, Some(1), "{}", refused.report());
    assert!(refused.stderr.contains("issuer is"), "{}", refused.report());
    drop(server);
}

#[tokio::test]
async fn openid_client_runs_the_code_flow_with_two_resources_and_refreshes_per_resource() {
    let dir = interop_dir();
    if !openid_client_installed(&dir) {
        return;
    }
    let server = Server::start();
    let script = dir.join("openid_client_code.mjs");
    let script = script.to_str().expect("UTF-8 path");
    let node = Path::new("node");
    let issuer = server.issuer.clone();
    let args = |password: &'static str| vec![script, "--issuer", &issuer, "--password", password];

    let outcome = run(node, &args("alice"));
    let server = outcome.assert_success(server);
    print!("{}", outcome.stdout);
    for step in [
        "ok login: 303 to http://127.0.0.1:5002/callback with code, state, iss",
        "ok authorization_code: access token alg=ES256 aud=urn:invoices ",
        "ok id_token: alg=RS256 aud=web sub=818727 ",
        "ok refresh_token: aud=urn:products ",
        "ok refresh_token with resource=urn:payments: invalid_target",
    ] {
        assert!(
            outcome.stdout.contains(step),
            "missing {step:?}\n{}",
            outcome.report()
        );
    }

    // The same script must notice when the login fails: the page comes back with its alert.
    let refused = run(node, &args("not-alice"));
    assert_eq!(refused.code, Some(1), "{}", refused.report());
    assert!(
        refused.stderr.contains("FAILED")
            && refused
                .stderr
                .contains("The username or password is incorrect."),
        "{}",
        refused.report()
    );
    drop(server);
}

#[tokio::test]
async fn authlib_runs_the_code_flow_refreshes_introspects_and_revokes() {
    let Some(python) = authlib_python() else {
        return;
    };
    let server = Server::start();
    let script = interop_dir().join("authlib_code.py");
    let script = script.to_str().expect("UTF-8 path");
    let issuer = server.issuer.clone();
    let args = |secret: &'static str| vec![script, "--issuer", &issuer, "--client-secret", secret];

    let outcome = run(&python, &args(SECRET));
    let server = outcome.assert_success(server);
    print!("{}", outcome.stdout);
    for step in [
        "ok login: 303 to http://127.0.0.1:5002/callback with code, state, iss",
        "ok fetch_token: access token alg=ES256 aud=urn:invoices ",
        "ok id_token: alg=RS256 aud=web sub=818727 ",
        "ok refresh_token: aud=urn:products ",
        "ok introspect_token as urn:products: active",
        "ok revoke_token: the refresh token no longer works (invalid_grant)",
    ] {
        assert!(
            outcome.stdout.contains(step),
            "missing {step:?}\n{}",
            outcome.report()
        );
    }

    // The same script must notice when isogate refuses the client at the token endpoint.
    let refused = run(&python, &args("not-the-secret"));
    assert_eq!(refused.code, Some(1), "{}", refused.report());
    assert!(
        refused.stderr.contains("FAILED") && refused.stderr.contains("invalid_client"),
        "{}",
        refused.report()
    );
    drop(server);
}

#[tokio::test]
async fn a_real_browser_signs_in_on_the_login_page_and_lands_on_the_redirect_with_a_code() {
    let dir = interop_dir();
    let chromium = chromium();
    if !installed(
        BROWSER,
        &[
            chromium.clone(),
            dir.join("node_modules/playwright-core/package.json"),
            dir.join("node_modules/openid-client/package.json"),
        ],
    ) {
        return;
    }
    let callback = Callback::start();
    let server = Server::start_with_redirect_uri(Some(&callback.uri));
    let script = dir.join("browser_login.mjs");
    let script = script.to_str().expect("UTF-8 path");
    let node = Path::new("node");
    let issuer = server.issuer.clone();
    let redirect_uri = callback.uri.clone();
    let args = |password: &'static str| {
        vec![
            script,
            "--issuer",
            &issuer,
            "--redirect-uri",
            &redirect_uri,
            "--chromium",
            chromium.to_str().expect("UTF-8 path"),
            "--password",
            password,
        ]
    };

    let outcome = run(node, &args("alice"));
    let server = outcome.assert_success(server);
    print!("{}", outcome.stdout);
    for step in [
        "ok login page shown",
        "ok the browser landed on ",
        "ok the code redeemed: access token aud=urn:invoices sub=818727 ",
    ] {
        assert!(
            outcome.stdout.contains(step),
            "missing {step:?}\n{}",
            outcome.report()
        );
    }
    // The browser itself arrived at the redirect URI, with the code, the state and the issuer.
    let arrivals = callback.arrivals();
    assert_eq!(arrivals.len(), 1, "requests to /callback: {arrivals:?}");
    for key in ["code", "state", "iss"] {
        assert!(arrivals[0].contains_key(key), "no {key}: {arrivals:?}");
    }
    assert_eq!(arrivals[0]["iss"], server.issuer);
    // The login page was photographed.
    let screenshot = outcome
        .stdout
        .split("screenshot: ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_else(|| panic!("no screenshot path\n{}", outcome.report()));
    let png = std::fs::read(screenshot).expect("the screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{screenshot} is no PNG"
    );

    // The same script must notice a refused login (the page shows its alert again).
    let refused = run(node, &args("not-alice"));
    assert_eq!(refused.code, Some(1), "{}", refused.report());
    assert!(
        refused.stderr.contains("FAILED")
            && refused
                .stderr
                .contains("The username or password is incorrect."),
        "{}",
        refused.report()
    );
    assert!(callback.arrivals().is_empty(), "a refused login redirected");
    // The log says who failed from where, and never with what.
    let log = server.log();
    let failed = log
        .lines()
        .find(|l| l.contains("login failed"))
        .unwrap_or_else(|| panic!("no login failed line:\n{log}"));
    assert!(
        failed.contains("client_id=web") && failed.contains("peer=127.0.0.1:"),
        "{failed}"
    );
    assert!(!log.contains("not-alice"), "the password was logged");
}

#[tokio::test]
async fn a_real_browser_signed_in_at_one_instance_of_a_fleet_gets_a_code_at_the_other() {
    let dir = interop_dir();
    let chromium = chromium();
    if !installed(
        BROWSER,
        &[
            chromium.clone(),
            dir.join("node_modules/playwright-core/package.json"),
            dir.join("node_modules/openid-client/package.json"),
        ],
    ) {
        return;
    }
    let Some(store) = crate::postgres::database().await else {
        return;
    };
    let callback = Callback::start();
    let (a, b) = Server::start_fleet(&store, &callback.uri);
    let script = dir.join("browser_login.mjs");
    let outcome = run(
        Path::new("node"),
        &[
            script.to_str().expect("UTF-8 path"),
            "--issuer",
            &a.issuer,
            "--redirect-uri",
            &callback.uri,
            "--chromium",
            chromium.to_str().expect("UTF-8 path"),
            "--then-at",
            &b.base,
        ],
    );
    let a = outcome.assert_success(a);
    let b = outcome.assert_success(b);
    print!("{}", outcome.stdout);
    for step in [
        "ok login page shown",
        &format!("ok at {} the signed-in browser got a code at once", b.base),
        &format!(
            "ok the code from {} redeemed: access token aud=urn:invoices sub=818727",
            b.base
        ),
    ] {
        assert!(
            outcome.stdout.contains(step),
            "missing {step:?}\n{}",
            outcome.report()
        );
    }
    // Two arrivals at the redirect URI, both naming the one issuer; the second came from B.
    let arrivals = callback.arrivals();
    assert_eq!(arrivals.len(), 2, "requests to /callback: {arrivals:?}");
    for arrival in &arrivals {
        assert_eq!(arrival["iss"], a.issuer, "{arrivals:?}");
    }
    // Alice signed in at A; B issued a code on the session A stored, with no sign-in of its own.
    let (log_a, log_b) = (a.log(), b.log());
    assert!(
        log_a
            .lines()
            .any(|l| l.contains("user signed in") && l.contains("peer=127.0.0.1:")),
        "{log_a}"
    );
    assert!(
        log_b.contains("authorization code issued") && !log_b.contains("user signed in"),
        "{log_b}"
    );
}

/// The example with an MCP server's API resource and `[routes.mcp]` route (SPEC §10), the
/// gateway on `gateway` (the resource is named by the URL the client connects to) forwarding
/// to `upstream`, and open registration (SPEC §9).
fn mcp_config(port: u16, gateway: u16, upstream: u16) -> String {
    let example = config(port, None);
    let listen = "listen = \"127.0.0.1:0\"\nclock_skew";
    assert!(example.contains(listen), "the example's [proxy] listen");
    example.replace(
        listen,
        &format!("listen = \"127.0.0.1:{gateway}\"\nclock_skew"),
    ) + &format!(
        r#"
[issuer.registration]
allowed_scopes = ["mcp", "invoices.delete"]
client_id_metadata_documents = true
# The test serves the client's metadata document on 127.0.0.1.
allow_private_addresses = true

[[api_scopes]]
name = "mcp"
display_name = "Use the invoice tools."
[[api_scopes]]
name = "invoices.delete"
display_name = "Delete invoices."

[[api_resources]]
name = "http://127.0.0.1:{gateway}/mcp"
display_name = "Invoice MCP server"
scopes = ["mcp", "invoices.delete"]
require_resource_indicator = true

[[routes]]
path_prefix = "/mcp"
upstream = "http://127.0.0.1:{upstream}"
resource = "http://127.0.0.1:{gateway}/mcp"
[routes.mcp]
"tools/call:delete_invoice" = ["invoices.delete"]
"*" = ["mcp"]
"#
    )
}

#[tokio::test]
async fn the_mcp_sdk_registers_signs_in_calls_tools_and_steps_up_through_the_gateway() {
    let Some(log) = mcp_sdk_run(None, &[]).await else {
        return;
    };
    assert!(log.contains("client registered"), "{log}");
}

/// The same journey with a client ID metadata document (SPEC §9): the SDK's client uses the
/// URL of a document the test serves over https (an rcgen CA that isogate trusts through
/// `SSL_CERT_FILE`) as its client_id, and registers nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mcp_sdk_signs_in_with_a_client_id_metadata_document() {
    use crate::servers::{DocumentServer, Served, TestPki};
    let pki = TestPki::new();
    let documents = DocumentServer::start(&pki).await;
    let url = documents.url("/mcp-client/client.json");
    documents.set(
        "/mcp-client/client.json",
        Served::json(&serde_json::json!({
            "client_id": url,
            "client_name": "isogate MCP interop",
            "redirect_uris": ["http://127.0.0.1/callback"],
            "grant_types": ["authorization_code"],
            "token_endpoint_auth_method": "none",
        })),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).expect("write the CA");
    let env = [
        ("SSL_CERT_FILE", ca.to_str().expect("UTF-8 path")),
        ("SSL_CERT_DIR", dir.path().to_str().expect("UTF-8 path")),
    ];
    let Some(log) = mcp_sdk_run(Some(&url), &env).await else {
        return;
    };
    assert!(!log.contains("client registered"), "{log}");
    assert!(
        documents.fetches("/mcp-client/client.json") >= 1,
        "isogate fetched the document"
    );
}

/// Runs tests/interop/mcp_sdk.mjs against isogate serving [`mcp_config`] (with `env`), the
/// client registering by RFC 7591 or, with `document`, using that client ID metadata document;
/// checks isogate's side of the step-up and returns its log (`None`: the SDK is not installed).
async fn mcp_sdk_run(document: Option<&str>, env: &[(&str, &str)]) -> Option<String> {
    let dir = interop_dir();
    let sdk = dir.join("node_modules/@modelcontextprotocol/sdk/package.json");
    if !installed(
        "MCP TypeScript SDK (npm)",
        &[sdk, dir.join("node_modules/zod/package.json")],
    ) {
        return None;
    }
    let (gateway, upstream) = (free_port(), free_port());
    let server = Server::start_with_env(|port| mcp_config(port, gateway, upstream), env);
    let script = dir.join("mcp_sdk.mjs");
    let mcp_url = format!("http://127.0.0.1:{gateway}/mcp");
    let upstream = upstream.to_string();
    let mut args = vec![
        script.to_str().expect("UTF-8 path").to_owned(),
        "--mcp-url".into(),
        mcp_url,
        "--upstream-port".into(),
        upstream,
    ];
    if let Some(url) = document {
        args.extend(["--client-metadata-url".into(), url.to_owned()]);
    }
    // Blocking, off the runtime that may be serving the client's document.
    let outcome = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(Path::new("node"), &args)
    })
    .await
    .expect("the SDK run");
    let server = outcome.assert_success(server);
    print!("{}", outcome.stdout);
    let expected = match document {
        None => "ok: registered reg_".to_owned(),
        Some(url) => format!("ok: metadata document {url},"),
    };
    assert!(outcome.stdout.contains(&expected), "{}", outcome.report());
    // isogate's side: the step-up was its 403, and every call went through the MCP route.
    let log = server.log();
    let refused = log
        .lines()
        .filter(|l| l.contains("route=/mcp") && l.contains("reason=insufficient_scope"))
        .count();
    assert_eq!(refused, 1, "one step-up challenge in:\n{log}");
    assert!(
        log.lines().any(|l| l.contains("route=/mcp")
            && l.contains("decision=allow")
            && l.contains("sub=818727")),
        "{log}"
    );
    Some(log)
}
