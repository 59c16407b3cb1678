//! The harness: a real isogate on an ephemeral port, an HTTP client, token helpers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use isogate::config::{self, MissingKeys};
use isogate::{Role, Server};
use serde_json::Value;

/// The secret of every test client, stored as `SECRET_HASH`.
pub const SECRET: &str = "secret";
pub const SECRET_HASH: &str = "sha256:K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols=";

/// The seed: invoices (isolated) and products share read/write; `transaction` is
/// parameterized. The issuer section is prepended by [`Isogate::start`].
pub const SEED: &str = include_str!("../fixtures/seed.toml");

/// The `[issuer]` section used by default: an ES256 key that signs and an RS256 key.
pub fn issuer_section(issuer_url: &str) -> String {
    format!(
        r#"
[issuer]
listen = "127.0.0.1:0"
issuer = "{issuer_url}"

[[issuer.signing_keys]]
file = "keys/es256.pem"
alg = "ES256"
kid = "es"
generate_if_missing = true

[[issuer.signing_keys]]
file = "keys/rs256.pem"
alg = "RS256"
kid = "rs"
generate_if_missing = true
"#
    )
}

/// A running isogate with its config folder.
pub struct Isogate {
    pub server: Server,
    /// The config folder; removed when the test ends.
    pub dir: tempfile::TempDir,
    /// The server's clock: tests move it instead of sleeping.
    pub clock: isogate::clock::Clock,
}

impl Isogate {
    /// Starts isogate on the seed with the default issuer section.
    pub async fn seed() -> Self {
        Self::start(&(issuer_section("http://isogate.test") + SEED)).await
    }

    /// Writes `toml` to a fresh folder as `isogate.toml` and starts isogate on it.
    pub async fn start(toml: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(dir, toml).await
    }

    /// Like [`Isogate::start`] in a prepared folder (e.g. with key files in it).
    pub async fn start_in(dir: tempfile::TempDir, toml: &str) -> Self {
        std::fs::write(dir.path().join("isogate.toml"), toml).expect("write config");
        Self::start_existing(dir, toml).await
    }

    /// Starts isogate on the `isogate.toml` already in `dir` (`_toml` is its text, for the
    /// reader of the test).
    pub async fn start_existing(dir: tempfile::TempDir, _toml: &str) -> Self {
        let path = dir.path().join("isogate.toml");
        let config = config::load(&path, MissingKeys::Generate).unwrap_or_else(|e| panic!("{e}"));
        let clock = isogate::clock::Clock::adjustable();
        let server = Server::start_with(config, clock.clone())
            .await
            .expect("start");
        Isogate { server, dir, clock }
    }

    pub fn addr(&self, role: Role) -> SocketAddr {
        self.server.addr(role).expect("listener")
    }

    /// `http://<issuer addr><path>`.
    pub fn issuer_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr(Role::Issuer))
    }

    /// Waits (up to 10 s) until the published reload status satisfies `done`, and returns it.
    pub async fn reloaded(
        &self,
        done: impl Fn(&isogate::reload::Status) -> bool,
    ) -> isogate::reload::Status {
        let mut status = self.server.status();
        let waited = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            status.wait_for(|s| done(s)).await.map(|s| s.clone())
        })
        .await;
        match waited {
            Ok(Ok(s)) => s,
            _ => panic!(
                "no such reload; status: {:?}",
                *self.server.status().borrow()
            ),
        }
    }

    /// A file in the config folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// POSTs a form to the token endpoint with `client:secret` as HTTP Basic.
    pub async fn token(&self, form: &[(&str, &str)]) -> Reply {
        post_form(
            &self.issuer_url("/connect/token"),
            form,
            Some(("client", SECRET)),
        )
        .await
    }

    /// The access token of a successful token request for `form`.
    pub async fn access_token(&self, form: &[(&str, &str)]) -> String {
        self.token_ok(form).await["access_token"]
            .as_str()
            .expect("an access token")
            .to_owned()
    }

    /// The `kid`s the issuer publishes, in JWKS order.
    pub async fn kids(&self) -> Vec<String> {
        let jwks = get(&self.issuer_url("/.well-known/jwks")).await.json();
        jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| k["kid"].as_str().expect("a kid").to_owned())
            .collect()
    }

    /// A token for `form`, asserting success; returns the response JSON.
    pub async fn token_ok(&self, form: &[(&str, &str)]) -> Value {
        let reply = self.token(form).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        reply.json()
    }
}

/// A whole HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends one request over a fresh connection.
pub async fn send(req: Request<Full<Bytes>>) -> Reply {
    try_send(req).await.expect("request")
}

/// [`send`], with `None` when the connection fails (a server that was killed).
pub async fn try_send(req: Request<Full<Bytes>>) -> Option<Reply> {
    let client = Client::builder(TokioExecutor::new()).build_http();
    let response = client.request(req).await.ok()?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.ok()?.to_bytes();
    Some(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

pub async fn get(url: &str) -> Reply {
    send(Request::get(url).body(Full::default()).unwrap()).await
}

/// `method url` with `Authorization: Bearer <token>` and no body.
pub async fn with_bearer(method: Method, url: &str, token: &str) -> Reply {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {token}"))
        .body(Full::default())
        .unwrap();
    send(req).await
}

/// A form-urlencoded body.
pub fn form_body(form: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish()
}

/// RFC 6749 §2.3.1 Basic credentials (both halves form-urlencoded).
pub fn basic(id: &str, secret: &str) -> String {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", enc(id), enc(secret)))
    )
}

pub async fn post_form(
    url: &str,
    form: &[(&str, &str)],
    credentials: Option<(&str, &str)>,
) -> Reply {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(url)
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some((id, secret)) = credentials {
        req = req.header("authorization", basic(id, secret));
    }
    send(req.body(Full::new(Bytes::from(form_body(form)))).unwrap()).await
}

/// The decoded header and claims of a compact JWS (no verification).
pub fn decode_parts(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut next = || {
        let part = parts.next().expect("three parts");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("json")
    };
    (next(), next())
}

/// Verifies `token` with the key named by its `kid` in the issuer's published JWKS, using
/// jsonwebtoken (an implementation independent of isogate's signer), and returns the claims.
pub async fn verify(isogate: &Isogate, token: &str, audience: &str) -> Value {
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_slice(&get(&isogate.issuer_url("/.well-known/jwks")).await.body)
            .expect("jwks");
    let header = jsonwebtoken::decode_header(token).expect("header");
    let jwk = jwks
        .find(header.kid.as_deref().expect("kid"))
        .expect("kid in JWKS");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).expect("key");
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .unwrap_or_else(|e| panic!("token does not verify: {e}"))
        .claims
}

/// Writes `request` as is on a new TCP connection and returns everything the server sends
/// until it closes (send `Connection: close`).
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // The server may answer and close before reading everything; a failed write is fine.
    let _ = stream.write_all(request).await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).into_owned()
}

/// Writes `text` the way editors do: to a temporary file in the same folder, then renamed.
pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// The repository's root (for config/ and the binary).
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The address in a `listening` line, text or JSON.
pub fn listening_addr(line: &str) -> Option<std::net::SocketAddr> {
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(line) {
        return value["addr"].as_str()?.parse().ok();
    }
    line.rsplit("addr=")
        .next()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A child process whose stderr lines are collected as they come.
pub struct Running {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    pub fn spawn(program: &str, args: &[&str]) -> Self {
        Self::spawn_with_env(program, args, &[])
    }

    /// Like [`Running::spawn`] with extra environment variables.
    pub fn spawn_with_env(program: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (up to 30 s) for a stderr line containing `needle` and returns it.
    pub fn wait_for(&mut self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line containing {needle:?}; the log so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// The newest line seen so far that contains `needle`, waiting for one if none.
    pub fn last_line_with(&mut self, needle: &str) -> String {
        match self.seen.iter().rev().find(|l| l.contains(needle)) {
            Some(line) => line.clone(),
            None => self.wait_for(needle),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `HUP`, …).
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits (up to 30 s) for the process to exit; returns its code and the whole log.
    pub fn finish(mut self) -> (Option<i32>, String) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let code = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status.code();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "did not exit:\n{}",
                self.seen.join("\n")
            );
            // Drain the log while waiting; the reader thread ends when the process does.
            if let Ok(line) = self
                .lines
                .recv_timeout(std::time::Duration::from_millis(50))
            {
                self.seen.push(line);
            }
        };
        self.seen.extend(self.lines.try_iter());
        (code, std::mem::take(&mut self.seen).join("\n"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One sample of a scrape: metric name, labels, value.
#[derive(Debug)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed `/metrics` answer.
pub struct Scrape {
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Scrape {
    pub async fn of(isogate: &Isogate) -> Self {
        let reply = get(&format!("http://{}/metrics", isogate.addr(Role::Admin))).await;
        assert_eq!(reply.status, StatusCode::OK);
        let content_type = reply.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/openmetrics-text; version=1.0.0"),
            "{content_type}"
        );
        let text = reply.text();
        assert!(text.ends_with("# EOF\n"), "{text}");
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .map(|line| parse_sample(line).unwrap_or_else(|| panic!("not a sample: {line}")))
            .collect();
        Scrape { text, samples }
    }

    /// The value of the series `name` with exactly the labels `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut found = self
            .samples
            .iter()
            .filter(|s| s.name == name && s.labels == wanted);
        let value = found.next().map(|s| s.value);
        assert!(found.next().is_none(), "{name} {labels:?} is repeated");
        value
    }

    /// Like [`Scrape::value`], panicking with the whole scrape when the series is absent.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels)
            .unwrap_or_else(|| panic!("no series {name} {labels:?} in:\n{}", self.text))
    }

    /// The HELP text of the metric `name`.
    pub fn help(&self, name: &str) -> &str {
        let prefix = format!("# HELP {name} ");
        self.text
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{name} has no HELP:\n{}", self.text))
    }

    /// Every series of `name`.
    pub fn series(&self, name: &str) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.name == name).collect()
    }
}

/// `name{k="v",...} value` or `name value` (OpenMetrics text; label values escape `\`, `"`
/// and newline).
fn parse_sample(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return None,
    };
    let mut labels = BTreeMap::new();
    let mut rest = rest;
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = inner.find("=\"")?;
            let key = inner[..eq].to_owned();
            let mut value = String::new();
            let mut chars = inner[eq + 2..].char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    '"' => break eq + 2 + i + 1,
                    c => value.push(c),
                }
            };
            labels.insert(key, value);
            inner = &inner[end..];
            inner = inner.strip_prefix(',').unwrap_or(inner);
        }
    }
    let value = rest.trim().split(' ').next()?.parse().ok()?;
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Polls `check` (every 20 ms, up to 10 s) until it gives a value.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
