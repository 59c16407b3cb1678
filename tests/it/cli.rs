//! The real `isogate` binary: exit codes, printed problems, the listening line, signals.

use std::path::Path;
use std::process::Command;

use http::StatusCode;

use crate::support::*;

fn isogate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_isogate"))
}

fn run(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = isogate()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn isogate");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_shipped_example_config_passes_check() {
    let mut checked = 0;
    for entry in std::fs::read_dir(repo().join("config")).expect("config/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let (code, out, err) = run(&["check", "--config", path.to_str().unwrap()], None);
            assert_eq!(code, 0, "{}: {out}{err}", path.display());
            assert!(out.contains(": ok, "), "{out}");
            checked += 1;
        }
    }
    assert!(checked >= 1);
}

#[test]
fn check_prints_every_problem_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let text = issuer_section("http://isogate.test") + SEED;
    let text = text
        .replace(
            "allowed_scopes = [\"read\", \"write\", \"transaction\"]",
            "allowed_scopes = [\"read\", \"delete\"]\ncolour = 1\nallowed_scope = []",
        )
        .replace("name = \"urn:products\"", "name = \"products\"")
        // A value of the wrong type and a missing required key hide nothing else.
        .replace(
            "require_resource_indicator = true",
            "require_resource_indicator = 1",
        )
        .replace("client_id = \"client\"", "");
    std::fs::write(&path, text).unwrap();
    let (code, out, err) = run(&["check", "--config", path.to_str().unwrap()], None);
    assert_eq!(code, 64, "{out}{err}");
    assert!(err.contains("6 problems"), "{err}");
    assert!(
        err.contains(
            "api_resources[0].require_resource_indicator: expected a boolean, found integer `1`"
        ),
        "{err}"
    );
    assert!(
        err.contains("clients[0].client_id: missing required key `client_id`"),
        "{err}"
    );
    assert!(
        err.contains("api_resources[1].name: must be an absolute URI"),
        "{err}"
    );
    assert!(err.contains("clients[0].allowed_scopes[1]: no [[identity_resources]] or [[api_scopes]] entry is named \"delete\""), "{err}");
    assert!(
        err.contains("clients[0].colour: unknown key `colour`\n"),
        "{err}"
    );
    assert!(
        err.contains(
            "clients[0].allowed_scope: unknown key `allowed_scope`; did you mean `allowed_scopes`?"
        ),
        "{err}"
    );
    // Each with file:line:column.
    let prefix = format!("{}:", path.display());
    let located = err
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix(&prefix))
        .filter(|rest| rest.split(':').take(2).all(|n| n.parse::<usize>().is_ok()))
        .count();
    assert_eq!(located, 6, "{err}");
}

#[test]
fn serve_refuses_an_invalid_file_with_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[issuer]\nlisten = 1\n").unwrap();
    let (code, _, err) = run(&["serve", "--config", path.to_str().unwrap()], None);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("bad.toml"), "{err}");
}

#[test]
fn hash_secret_reads_the_argument_or_stdin() {
    let expected = "sha256:K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols=\n";
    assert_eq!(run(&["hash-secret", "secret"], None).1, expected);
    assert_eq!(run(&["hash-secret"], Some("secret\n")).1, expected);
}

#[test]
fn hash_password_prints_an_argon2id_phc_string() {
    let (code, out, _) = run(&["hash-password"], Some("correct horse\n"));
    assert_eq!(code, 0);
    assert!(out.starts_with("$argon2id$v=19$"), "{out}");
}

#[test]
fn hash_secret_and_hash_password_refuse_an_empty_value_with_exit_1() {
    for (command, what) in [("hash-secret", "secret"), ("hash-password", "password")] {
        for (args, stdin, from) in [
            (vec![command], Some("\n"), "on stdin"),
            (vec![command], None, "on stdin"),
            (vec![command, ""], None, "as the argument"),
        ] {
            let (code, out, err) = run(&args, stdin);
            assert_eq!(code, 1, "{args:?} {stdin:?}: {out}{err}");
            assert_eq!(out, "", "nothing is printed");
            assert_eq!(
                err.trim_end(),
                format!("isogate: refusing an empty {what} (given {from})")
            );
        }
    }
}

/// A pseudo-terminal for the binary's stdin: the test types at the master side, and reads
/// there whatever the terminal would show.
struct Terminal {
    master: std::fs::File,
    slave: std::fs::File,
}

impl Terminal {
    fn open() -> Self {
        use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
        use std::os::unix::fs::OpenOptionsExt;
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("openpt");
        grantpt(&master).expect("grantpt");
        unlockpt(&master).expect("unlockpt");
        let name = ptsname(&master, Vec::new()).expect("ptsname");
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            // Never the test's controlling terminal.
            .custom_flags(rustix::fs::OFlags::NOCTTY.bits() as i32)
            .open(name.to_str().expect("UTF-8 name"))
            .expect("open the pty's slave");
        rustix::io::ioctl_fionbio(&master, true).expect("non-blocking master");
        Terminal {
            master: master.into(),
            slave,
        }
    }

    fn echoes(&self) -> bool {
        let modes = rustix::termios::tcgetattr(&self.slave).expect("tcgetattr");
        modes
            .local_modes
            .contains(rustix::termios::LocalModes::ECHO)
    }

    /// What the terminal has shown since it was last read.
    fn shown(&mut self) -> String {
        use std::io::Read;
        let mut shown = Vec::new();
        let mut buf = [0; 256];
        loop {
            match self.master.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => shown.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("reading the terminal: {e}"),
            }
        }
        String::from_utf8_lossy(&shown).into_owned()
    }

    /// Runs `args` with this terminal as stdin and stdout and stderr piped; once the prompt is
    /// on stderr and echo is off, types `line` and Enter. Returns the exit code, stdout,
    /// stderr, and whether the terminal echoed while the line was read.
    fn type_at_prompt(&mut self, args: &[&str], line: &str) -> (i32, String, String, bool) {
        use std::io::{Read, Write};
        use std::process::Stdio;
        let mut child = isogate()
            .args(args)
            .stdin(Stdio::from(self.slave.try_clone().expect("dup")))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn isogate");
        let mut stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0; 256];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let mut err = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !String::from_utf8_lossy(&err).contains("(not echoed): ") {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(bytes) => err.extend(bytes),
                Err(_) => panic!("no prompt; stderr: {}", String::from_utf8_lossy(&err)),
            }
        }
        // The prompt comes just before echo is turned off.
        while self.echoes() {
            assert!(std::time::Instant::now() < deadline, "echo stays on");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        self.master
            .write_all(format!("{line}\r").as_bytes())
            .expect("type");
        let out = child.wait_with_output().expect("wait");
        err.extend(rx.iter().flatten());
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
            !self.shown().is_empty(),
        )
    }
}

#[test]
fn hash_secret_prompts_on_a_terminal_without_echo_and_restores_it() {
    let mut terminal = Terminal::open();
    assert!(terminal.echoes(), "a new terminal echoes");
    let (code, out, err, echoed) = terminal.type_at_prompt(&["hash-secret"], "secret");
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, "sha256:K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols=\n");
    assert!(err.starts_with("secret (not echoed): "), "{err}");
    assert!(!err.contains("secret (not echoed): secret"), "{err}");
    assert!(!echoed, "the typed secret was shown");
    assert!(terminal.echoes(), "echo is back on afterwards");

    // Only Enter: refused.
    let (code, out, err, _) = terminal.type_at_prompt(&["hash-password"], "");
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(out, "");
    assert!(
        err.contains("isogate: refusing an empty password (given at the prompt)"),
        "{err}"
    );
    assert!(terminal.echoes());
}

#[test]
fn keygen_writes_a_private_pkcs8_key_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    for alg in ["ES256", "ES384", "RS256", "PS256", "EdDSA"] {
        let out = dir.path().join(format!("{alg}.pem"));
        let out_str = out.to_str().unwrap();
        let (code, printed, err) = run(&["keygen", "--alg", alg, "--out", out_str], None);
        assert_eq!(code, 0, "{err}");
        let pem = std::fs::read_to_string(&out).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{alg}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let key = isogate::jwt::SigningKey::from_file(&out, alg.parse().unwrap(), None, false)
            .expect("loads as its alg");
        assert!(
            printed.contains(&format!("kid: {} ", key.kid)),
            "{alg}: {printed}"
        );
        assert!(
            printed.ends_with(&format!(
                "\n[[issuer.signing_keys]]\nfile = \"{out_str}\"\nalg = \"{alg}\"\n"
            )),
            "{alg}: {printed}"
        );
        let (code, _, err) = run(&["keygen", "--alg", alg, "--out", out_str], None);
        assert_ne!(code, 0, "overwrote {alg}");
        assert!(
            err.contains("File exists") || err.contains("exists"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&out).unwrap(), pem);
    }
    let (code, _, _) = run(
        &[
            "keygen",
            "--alg",
            "HS256",
            "--out",
            dir.path().join("x").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 2);
}

/// The entry `keygen` prints, pasted as it is into a resource file, makes `serve` publish the
/// key under the kid `keygen` printed. A relative `--out` is noted as relative to the file's
/// folder.
#[tokio::test]
async fn keygen_prints_the_kid_serve_publishes_and_an_entry_to_paste() {
    let dir = tempfile::tempdir().unwrap();
    let out = isogate()
        .args(["keygen", "--alg", "ES256", "--out", "keys/2027-01.pem"])
        .current_dir(dir.path())
        .output()
        .expect("run keygen");
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{printed}");
    let kid = printed
        .split("kid: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no kid in {printed}"))
        .to_owned();
    let (_, entry) = printed
        .split_once("\n\n")
        .unwrap_or_else(|| panic!("no entry in {printed}"));
    assert_eq!(
        entry,
        "[[issuer.signing_keys]]\nfile = \"keys/2027-01.pem\"  # relative to the resource file's folder\nalg = \"ES256\"\n"
    );

    // The issuer section of the seed with its first key replaced by the pasted entry.
    let issuer = issuer_section("http://isogate.test");
    let (head, rest) = issuer.split_once("[[issuer.signing_keys]]").unwrap();
    let (_, others) = rest.split_once("\n\n").unwrap();
    let path = dir.path().join("isogate.toml");
    std::fs::write(&path, format!("{head}{entry}\n{others}{SEED}")).unwrap();
    let mut running = Running::spawn(
        env!("CARGO_BIN_EXE_isogate"),
        &["serve", "--config", path.to_str().unwrap()],
    );
    let addr = listening_addr(&running.wait_for("listening role=issuer")).unwrap();
    let jwks = get(&format!("http://{addr}/.well-known/jwks")).await.json();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|key| key["kid"].as_str())
        .collect();
    assert_eq!(kids, [kid.as_str(), "rs"], "{jwks}");
}

#[test]
fn serve_help_names_sighup_rust_log_and_isogate_workers() {
    let (code, out, err) = run(&["serve", "--help"], None);
    assert_eq!(code, 0, "{err}");
    for needle in [
        "SIGHUP           reload the resource file",
        "RUST_LOG         the log filter",
        "ISOGATE_WORKERS  how many threads serve",
        "MIMALLOC_PURGE_DELAY  how long freed memory stays resident",
        "--config <FILE>",
    ] {
        assert!(out.contains(needle), "{needle:?} missing in:\n{out}");
    }
    let (code, out, _) = run(&["--help"], None);
    assert_eq!(code, 0);
    assert!(out.contains("64  an invalid resource file"), "{out}");
    // A command line clap cannot parse exits 2.
    let (code, _, err) = run(&["serve"], None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--config <FILE>"), "{err}");
}

/// Two isogates on one `data_dir`: the second stops at start with exit 1 and says so, and the
/// first keeps serving.
#[tokio::test]
async fn a_second_serve_on_the_same_data_dir_is_told_another_isogate_may_be_using_it() {
    let dir = tempfile::tempdir().unwrap();
    let (running, addr) = serve(dir.path(), &[]);
    let path = dir.path().join("isogate.toml");
    let (code, _, err) = run(&["serve", "--config", path.to_str().unwrap()], None);
    assert_eq!(code, 1, "{err}");
    let store = dir.path().join("data/grants.redb");
    assert!(
        err.contains(&format!(
            "isogate: {} is locked by another process: another isogate may be using this data_dir",
            store.display()
        )),
        "{err}"
    );
    let reply = post_form(
        &format!("http://{addr}/connect/token"),
        &[("grant_type", "client_credentials")],
        Some(("client", SECRET)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    running.signal("TERM");
    assert_eq!(running.finish().0, Some(0));
}

/// Starts `isogate serve` on a seed config in `dir` and waits for its listening line.
fn serve(dir: &Path, extra: &[&str]) -> (Running, std::net::SocketAddr) {
    serve_until(dir, extra, "listening role=issuer addr=")
}

fn serve_until(dir: &Path, extra: &[&str], needle: &str) -> (Running, std::net::SocketAddr) {
    let path = dir.join("isogate.toml");
    std::fs::write(&path, issuer_section("http://isogate.test") + SEED).unwrap();
    let mut args = vec!["serve", "--config", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let mut running = Running::spawn(env!("CARGO_BIN_EXE_isogate"), &args);
    let line = running.wait_for(needle);
    let addr = listening_addr(&line).unwrap_or_else(|| panic!("no address in {line}"));
    (running, addr)
}

/// Writes the seed plus `gateway` (a `[proxy]` section and its routes) to `dir`, starts
/// `isogate serve` on it with the extra environment `env`, and waits for the issuer's and the
/// gateway's `listening` lines. Returns the process and those two addresses.
fn serve_gateway(
    dir: &Path,
    gateway: &str,
    env: &[(&str, &str)],
) -> (Running, std::net::SocketAddr, std::net::SocketAddr) {
    let path = dir.join("isogate.toml");
    std::fs::write(
        &path,
        issuer_section("http://isogate.test") + SEED + gateway,
    )
    .unwrap();
    serve_file(&path, env)
}

/// `serve` of a written config with an issuer and a gateway, once both listen.
fn serve_file(
    path: &Path,
    env: &[(&str, &str)],
) -> (Running, std::net::SocketAddr, std::net::SocketAddr) {
    let mut running = Running::spawn_with_env(
        env!("CARGO_BIN_EXE_isogate"),
        &["serve", "--config", path.to_str().unwrap()],
        env,
    );
    let issuer = listening_addr(&running.wait_for("listening role=issuer")).unwrap();
    let proxy = listening_addr(&running.wait_for("listening role=proxy")).unwrap();
    (running, issuer, proxy)
}

/// A client_credentials token of the seed's client for `resource`.
async fn token_from(issuer: std::net::SocketAddr, resource: &str) -> String {
    let url = format!("http://{issuer}/connect/token");
    let form = [("grant_type", "client_credentials"), ("resource", resource)];
    post_form(&url, &form, Some(("client", SECRET)))
        .await
        .json()["access_token"]
        .as_str()
        .expect("an access token")
        .to_owned()
}

#[tokio::test]
async fn serve_logs_listening_issues_tokens_never_logs_them_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (mut running, addr) = serve(dir.path(), &[]);
    assert_ne!(addr.port(), 0, "the line tells the real port");
    let reply = post_form(
        &format!("http://{addr}/connect/token"),
        &[("grant_type", "client_credentials")],
        Some(("client", SECRET)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let token = reply.json()["access_token"].as_str().unwrap().to_owned();
    running.wait_for("access token issued");
    running.signal("TERM");
    let (code, log) = running.finish();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("shutting down"), "{log}");
    assert!(!log.contains(&token), "the token was logged");
    assert!(
        !log.contains(SECRET_HASH) && !log.contains("PRIVATE KEY"),
        "{log}"
    );
}

#[tokio::test]
async fn sighup_applies_a_valid_file_and_keeps_serving_on_an_invalid_one() {
    let dir = tempfile::tempdir().unwrap();
    let (mut running, addr) = serve(dir.path(), &[]);
    let url = format!("http://{addr}/connect/token");
    let form = [
        ("grant_type", "client_credentials"),
        ("resource", "urn:invoices"),
    ];
    let scope = |reply: Reply| reply.json()["scope"].as_str().unwrap().to_owned();
    assert_eq!(
        scope(post_form(&url, &form, Some(("client", SECRET))).await),
        "read write"
    );

    let path = dir.path().join("isogate.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace(
            "allowed_scopes = [\"read\", \"write\", \"transaction\"]",
            "allowed_scopes = [\"read\"]",
        ),
    )
    .unwrap();
    running.signal("HUP");
    running.wait_for("configuration reloaded");
    assert_eq!(
        scope(post_form(&url, &form, Some(("client", SECRET))).await),
        "read"
    );

    std::fs::write(&path, "this is = = not toml").unwrap();
    running.signal("HUP");
    let line = running.wait_for("configuration rejected");
    assert!(line.contains("problems=1"), "{line}");
    let line = running.wait_for("isogate.toml");
    assert!(line.contains("1:6:"), "the problem is located: {line}");
    assert_eq!(
        scope(post_form(&url, &form, Some(("client", SECRET))).await),
        "read",
        "the last good config serves"
    );
    running.signal("TERM");
    assert_eq!(running.finish().0, Some(0));
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let (mut running, addr) = serve_until(dir.path(), &["--log-format", "json"], "\"listening\"");
    let line = running.last_line_with("listening");
    let value: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(value["message"], "listening");
    assert_eq!(value["role"], "issuer");
    assert_eq!(value["addr"], addr.to_string());
    running.signal("TERM");
    assert_eq!(running.finish().0, Some(0));
}

#[tokio::test]
async fn the_gateway_logs_one_line_per_request_without_the_token() {
    let upstream = crate::servers::Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gateway = format!(
            "\n[proxy]\nlisten = \"127.0.0.1:0\"\n\n[[routes]]\npath_prefix = \"/invoices\"\nupstream = \"{}\"\nresource = \"urn:invoices\"\n",
            upstream.url()
    );
    let (mut running, issuer, proxy) = serve_gateway(dir.path(), &gateway, &[]);
    let token = token_from(issuer, "urn:invoices").await;
    let products = token_from(issuer, "urn:products").await;
    let call = |auth: Option<String>, request_id: Option<&'static str>| {
        let url = format!("http://{proxy}/invoices/7?access_token=in-the-query");
        async move {
            let mut req = http::Request::get(url);
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            if let Some(id) = request_id {
                req = req.header("x-request-id", id);
            }
            send(req.body(http_body_util::Full::default()).unwrap())
                .await
                .status
        }
    };
    assert_eq!(
        call(Some(format!("Bearer {token}")), None).await,
        StatusCode::OK
    );
    let allowed = running.wait_for(" request ");
    for field in [
        "method=GET",
        "route=/invoices",
        "resource=urn:invoices",
        "decision=allow",
        "reason=ok",
        "cause=-",
        "status=200",
        "client_id=client",
        "sub=client",
        "path=/invoices/7 ",
        "latency_us=",
    ] {
        assert!(allowed.contains(field), "{field} missing in: {allowed}");
    }
    // The id made for the request went to the upstream and into the line.
    let made = upstream.last().headers["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(made.len(), 16, "{made}");
    assert!(allowed.contains(&format!("request_id={made}")), "{allowed}");
    // One the client sent is kept; a token for another API is refused, and the line says
    // why and whose it was.
    assert_eq!(
        call(Some(format!("Bearer {products}")), Some("trace-42")).await,
        StatusCode::UNAUTHORIZED
    );
    let denied = running.wait_for(" request ");
    for field in [
        "decision=deny",
        "reason=token_audience",
        "cause=invalid_token: the token is not meant for this resource",
        "client_id=client",
        "sub=client",
        "request_id=trace-42",
    ] {
        assert!(denied.contains(field), "{field} missing in: {denied}");
    }
    assert_eq!(
        call(Some("Bearer x.y.z".into()), Some("bad id with spaces")).await,
        StatusCode::UNAUTHORIZED
    );
    let denied = running.wait_for(" request ");
    for field in [
        "decision=deny",
        "reason=token_malformed",
        "cause=invalid_token: malformed token",
        "status=401",
        "client_id=-",
        "sub=-",
    ] {
        assert!(denied.contains(field), "{field} missing in: {denied}");
    }
    assert!(!denied.contains("bad id"), "{denied}");
    running.signal("TERM");
    let (_, log) = running.finish();
    assert!(!log.contains(&token), "the token was logged");
    assert!(!log.contains("in-the-query"), "the query was logged");
}

/// An https upstream is verified against the system's roots (here `SSL_CERT_FILE`, which
/// rustls-native-certs reads): a trusted certificate passes, an unknown one is a 502.
#[tokio::test]
async fn https_upstreams_are_verified() {
    use crate::servers::{TestPki, TlsUpstream};
    let (trusted, stranger) = (TestPki::new(), TestPki::new());
    let (good, bad) = (
        TlsUpstream::start(&trusted).await,
        TlsUpstream::start(&stranger).await,
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &trusted.ca_pem).unwrap();
    let gateway = format!(
            "\n[proxy]\nlisten = \"127.0.0.1:0\"\n\n[[routes]]\npath_prefix = \"/products\"\nupstream = \"{}\"\nresource = \"urn:products\"\n\n[[routes]]\npath_prefix = \"/invoices\"\nupstream = \"{}\"\nresource = \"urn:invoices\"\n",
            good.url(),
            bad.url()
    );
    let ca = dir.path().join("ca.pem");
    let env = &[
        ("SSL_CERT_FILE", ca.to_str().unwrap()),
        ("SSL_CERT_DIR", dir.path().to_str().unwrap()),
    ];
    let (mut running, issuer, proxy) = serve_gateway(dir.path(), &gateway, env);
    let call = |path: &'static str, token: String| {
        let url = format!("http://{proxy}{path}");
        async move {
            send(
                http::Request::get(url)
                    .header("authorization", format!("Bearer {token}"))
                    .body(http_body_util::Full::default())
                    .unwrap(),
            )
            .await
        }
    };
    let reply = call("/products/1", token_from(issuer, "urn:products").await).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.text(), "tls upstream /products/1");
    let reply = call("/invoices/1", token_from(issuer, "urn:invoices").await).await;
    assert_eq!(
        reply.status,
        StatusCode::BAD_GATEWAY,
        "an untrusted certificate: {}",
        reply.text()
    );
    running.wait_for("upstream unreachable");
}

/// SIGTERM while a request is in flight: `/readyz` turns 503 while the admin listener keeps
/// answering, the request completes with 200, and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_an_in_flight_request_and_exits_0() {
    let upstream = crate::servers::Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gateway = format!(
            "\n[proxy]\nlisten = \"127.0.0.1:0\"\n\n[[routes]]\npath_prefix = \"/products\"\nupstream = \"{}\"\nresource = \"urn:products\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n",
            upstream.url()
    );
    let (mut running, issuer, proxy) = serve_gateway(dir.path(), &gateway, &[]);
    let admin = listening_addr(&running.wait_for("listening role=admin")).unwrap();
    let readyz = format!("http://{admin}/readyz");
    assert_eq!(get(&readyz).await.status, StatusCode::OK);
    let token = token_from(issuer, "urn:products").await;

    let slow = slow_request_in_flight(&upstream, proxy, token).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);

    running.signal("TERM");
    while get(&readyz).await.status != StatusCode::SERVICE_UNAVAILABLE {
        assert!(
            std::time::Instant::now() < deadline,
            "still ready after SIGTERM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!slow.is_finished(), "not ready while the request is served");
    upstream.open_slow();
    let reply = slow.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.text(), "upstream /products/slow 0");
    let (code, log) = tokio::task::spawn_blocking(move || running.finish())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("shutting down"), "{log}");
    let stopped = log
        .lines()
        .find(|l| l.contains(" stopped role=proxy"))
        .unwrap_or_else(|| panic!("no stopped line for the gateway:\n{log}"));
    // Drained is 1 or 0: the request may end before the accept loop has seen the stop.
    assert!(stopped.ends_with(" requests_cut=0"), "{stopped}");
    assert!(log.trim_end().ends_with("stopped"), "{log}");
}

/// A request still in flight when `shutdown_grace` ends is cut, and the closing lines say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_outlasting_the_shutdown_grace_is_cut_and_counted() {
    let upstream = crate::servers::Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("isogate.toml");
    let gateway = format!(
        "\n[proxy]\nlisten = \"127.0.0.1:0\"\n\n[[routes]]\npath_prefix = \"/products\"\nupstream = \"{}\"\nresource = \"urn:products\"\n",
        upstream.url()
    );
    let config = "shutdown_grace = \"1s\"\n".to_owned()
        + &issuer_section("http://isogate.test")
        + SEED
        + &gateway;
    std::fs::write(&path, config).unwrap();
    let (running, issuer, proxy) = serve_file(&path, &[]);
    let token = token_from(issuer, "urn:products").await;
    let _slow = slow_request_in_flight(&upstream, proxy, token).await;
    running.signal("TERM");
    let (code, log) = tokio::task::spawn_blocking(move || running.finish())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.lines().any(|l| l.contains("shutdown grace period")
            && l.contains("role=proxy")
            && l.contains("grace=1s connections=1 requests=1")),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.contains(" stopped role=proxy")
            && l.contains("requests_drained=0 requests_cut=1")),
        "{log}"
    );
    upstream.open_slow();
}

/// Sends `GET /products/slow` through the gateway at `proxy` and returns once the upstream
/// holds it; the upstream answers when the test calls `open_slow`.
async fn slow_request_in_flight(
    upstream: &crate::servers::Upstream,
    proxy: std::net::SocketAddr,
    token: String,
) -> tokio::task::JoinHandle<Reply> {
    let slow = tokio::spawn(async move {
        let req = http::Request::get(format!("http://{proxy}/products/slow"))
            .header("authorization", format!("Bearer {token}"))
            .body(http_body_util::Full::default())
            .unwrap();
        send(req).await
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while upstream.count() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the upstream saw nothing"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    slow
}

#[tokio::test]
async fn a_changed_listen_address_is_logged_as_needing_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut running, addr) = serve(dir.path(), &[]);
    let path = dir.path().join("isogate.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replacen("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.2:0\"", 1),
    )
    .unwrap();
    running.wait_for("takes effect only after a restart");
    running.wait_for("configuration reloaded");
    // Still answering where it listened before.
    let reply = post_form(
        &format!("http://{addr}/connect/token"),
        &[("grant_type", "client_credentials")],
        Some(("client", SECRET)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    running.signal("TERM");
    assert_eq!(running.finish().0, Some(0));
}

/// The names of the threads of process `pid` that serve connections.
fn worker_threads(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| name.starts_with("isogate-worker"))
        .collect();
    names.sort();
    names
}

/// The worker threads of `pid` once there are `count` (up to 10 s): a new thread names itself
/// when it first runs, which may be a moment after the server logged `listening`.
fn worker_threads_when(pid: u32, count: usize) -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let found = worker_threads(pid).len();
        if found == count || std::time::Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// `ISOGATE_WORKERS` sets how many threads serve the issuer and the gateway; connections are
/// handed to them in turn, and every one is served. A value that is not a positive number is
/// named in a warning, and one thread per CPU serves.
#[tokio::test]
async fn isogate_workers_sets_the_serving_threads() {
    let upstream = crate::servers::Upstream::start().await;
    let gateway = format!(
        "\n[proxy]\nlisten = \"127.0.0.1:0\"\n\n[[routes]]\npath_prefix = \"/invoices\"\nupstream = \"{}\"\nresource = \"urn:invoices\"\n",
        upstream.url()
    );
    let dir = tempfile::tempdir().unwrap();
    let (running, issuer, proxy) = serve_gateway(dir.path(), &gateway, &[("ISOGATE_WORKERS", "3")]);
    assert_eq!(worker_threads_when(running.pid(), 3), 3);
    // Each call is a connection of its own: six go round the three threads twice.
    for _ in 0..6 {
        let token = token_from(issuer, "urn:invoices").await;
        let req = http::Request::get(format!("http://{proxy}/invoices/1"))
            .header("authorization", format!("Bearer {token}"))
            .body(http_body_util::Full::default())
            .unwrap();
        let reply = send(req).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }
    assert_eq!(upstream.count(), 6);
    drop(running);

    let dir = tempfile::tempdir().unwrap();
    let (mut running, issuer, _) =
        serve_gateway(dir.path(), &gateway, &[("ISOGATE_WORKERS", "many")]);
    let line = running.last_line_with("ISOGATE_WORKERS");
    assert!(line.contains("WARN") && line.contains("many"), "{line}");
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(worker_threads_when(running.pid(), cpus), cpus);
    assert!(!token_from(issuer, "urn:invoices").await.is_empty());
}

/// `serve` runs with mimalloc's `MIMALLOC_PURGE_DELAY` at 10 ms, so that memory a load frees is
/// given back soon: it starts itself again with it, in the same process (the id it was started
/// with, its arguments, its stderr). A value the operator set is kept.
#[test]
fn serve_gives_freed_memory_back_soon_unless_told_otherwise() {
    let purge_delay = |pid: u32| {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        environ
            .split(|b| *b == 0)
            .find_map(|var| var.strip_prefix(b"MIMALLOC_PURGE_DELAY="))
            .map(|value| String::from_utf8_lossy(value).into_owned())
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("isogate.toml");
    std::fs::write(&path, issuer_section("http://isogate.test") + SEED).unwrap();
    let args = ["serve", "--config", path.to_str().unwrap()];
    for (set, expected) in [(None, "10"), (Some("250"), "250")] {
        let env: Vec<(&str, &str)> = set
            .map(|v| ("MIMALLOC_PURGE_DELAY", v))
            .into_iter()
            .collect();
        let mut running = Running::spawn_with_env(env!("CARGO_BIN_EXE_isogate"), &args, &env);
        running.wait_for("listening role=issuer addr=");
        assert_eq!(purge_delay(running.pid()).as_deref(), Some(expected));
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", running.pid())).unwrap();
        let cmdline: Vec<&[u8]> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .collect();
        let expected_args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        assert_eq!(cmdline[1..], expected_args[..]);
        running.signal("TERM");
        assert_eq!(running.finish().0, Some(0));
    }
}

#[tokio::test]
async fn token_service_lines_name_the_client_and_the_peer_and_lists_are_plain_strings() {
    let dir = tempfile::tempdir().unwrap();
    let (mut running, addr) = serve_until(dir.path(), &["--log-format", "json"], "\"listening\"");
    let url = format!("http://{addr}/connect/token");
    let form = [
        ("grant_type", "client_credentials"),
        ("resource", "urn:invoices"),
    ];
    let issued = post_form(&url, &form, Some(("client", SECRET))).await;
    assert_eq!(issued.status, StatusCode::OK, "{}", issued.text());
    let line: serde_json::Value =
        serde_json::from_str(&running.wait_for("access token issued")).unwrap();
    assert_eq!(line["aud"], "urn:invoices", "{line}");

    let refused = post_form(&url, &form, Some(("client", "not-the-secret"))).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let line: serde_json::Value =
        serde_json::from_str(&running.wait_for("token request refused")).unwrap();
    let fields = &line;
    assert_eq!(fields["error"], "invalid_client", "{line}");
    assert_eq!(fields["client_id"], "client", "{line}");
    assert!(
        fields["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{line}"
    );
    // A client id that names no client is not written out: it is the caller's text.
    let stranger = post_form(&url, &form, Some(("forged\nline", "x"))).await;
    assert_eq!(stranger.status, StatusCode::UNAUTHORIZED);
    let line: serde_json::Value =
        serde_json::from_str(&running.wait_for("token request refused")).unwrap();
    assert_eq!(line["client_id"], "-", "{line}");
    running.signal("TERM");
    let (_, log) = running.finish();
    assert!(!log.contains("not-the-secret"), "a secret was logged");
}

/// `dpop-proof` signs a proof with a key `keygen` made, for the method, URL and token given:
/// it passes isogate's own check, names the kid `keygen` printed as its thumbprint, and a key
/// file that is missing is an error.
#[test]
fn dpop_proof_makes_a_proof_with_a_keygen_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("client.pem");
    let out = out.to_str().unwrap();
    let (code, printed, _) = run(&["keygen", "--alg", "ES256", "--out", out], None);
    assert_eq!(code, 0);
    let kid = printed
        .lines()
        .find_map(|l| l.strip_prefix("kid: "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    let url = "http://127.0.0.1:8080/invoices/42";
    let args = [
        "dpop-proof",
        "--key",
        out,
        "--alg",
        "ES256",
        "--method",
        "GET",
        "--url",
        url,
        "--access-token",
        "tok",
    ];
    let (code, proof, err) = run(&args, None);
    assert_eq!(code, 0, "{err}");
    let expected = isogate::dpop::Expected {
        method: "GET",
        url,
        access_token: Some("tok"),
        key: Some(&kid),
        now: isogate::jwt::numeric_date(std::time::SystemTime::now()),
        max_age: std::time::Duration::from_secs(60),
        skew: std::time::Duration::from_secs(5),
    };
    let replay = isogate::dpop::Replay::default();
    assert_eq!(
        isogate::dpop::check(proof.trim(), &expected, &replay),
        Ok(kid)
    );

    let (code, _, err) = run(
        &[
            "dpop-proof",
            "--key",
            "nope.pem",
            "--alg",
            "ES256",
            "--url",
            url,
        ],
        None,
    );
    assert_eq!(code, 1);
    assert!(err.contains("nope.pem"), "{err}");
}
