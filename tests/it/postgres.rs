//! A private PostgreSQL for the tests: one cluster per test run, in a temporary folder, on a
//! free loopback port, as an unprivileged user (PostgreSQL refuses to run as root: under root
//! the cluster runs as the `postgres` user, through `setpriv`). A watchdog stops it and
//! removes its folder when the test process ends. Each test gets a database of its own.
//!
//! Without PostgreSQL installed the store tests are skipped with a notice, unless
//! `ISOGATE_POSTGRES=1` (as `scripts/test` and CI set) makes them required.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A running cluster.
pub struct Cluster {
    /// Its loopback port.
    pub port: u16,
    /// Its data folder.
    pub data: PathBuf,
    /// Runs a PostgreSQL program as the cluster's user.
    as_owner: Vec<String>,
    bin: PathBuf,
}

static CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();

/// The cluster, started on first use; `None` when PostgreSQL is not installed and not
/// required.
pub fn cluster() -> Option<&'static Cluster> {
    CLUSTER
        .get_or_init(|| {
            let required = std::env::var("ISOGATE_POSTGRES").is_ok_and(|v| v == "1");
            match find_bin() {
                Some(bin) => Some(start(&bin)),
                None if required => panic!(
                    "ISOGATE_POSTGRES=1 but PostgreSQL's initdb was not found: install Debian's \
                     postgresql package (scripts/setup-interop does) or set ISOGATE_PG_BIN"
                ),
                None => {
                    eprintln!(
                        "notice: PostgreSQL is not installed: the store tests on PostgreSQL \
                         are skipped (set ISOGATE_POSTGRES=1 to require them)"
                    );
                    None
                }
            }
        })
        .as_ref()
}

/// A new, empty database on the shared cluster: its URL (trust authentication, no password).
pub async fn database() -> Option<String> {
    Some(cluster()?.database().await)
}

/// A cluster of its own, for a test that stops and starts it; `None` as for [`cluster`].
pub fn private_cluster() -> Option<Cluster> {
    cluster()?;
    Some(start(&find_bin()?))
}

impl Cluster {
    /// A new, empty database on this cluster: its URL.
    pub async fn database(&self) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "isogate_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let (client, connection) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres",
                self.port
            ),
            tokio_postgres::NoTls,
        )
        .await
        .expect("connect to the test cluster");
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create a test database");
        self.url(&name)
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Stops the server (fast shutdown: connections are closed).
    pub fn stop(&self) {
        self.pg_ctl(&["-m", "fast", "-w", "stop"]);
    }

    /// Starts it again, on the same port.
    pub fn start_again(&self) {
        let log = self.data.with_file_name("log");
        self.pg_ctl(&["-l", &log.display().to_string(), "-w", "start"]);
        wait_ready(self.port);
    }

    /// Runs `pg_ctl` with `args` on the cluster.
    fn pg_ctl(&self, args: &[&str]) {
        let mut command = self.command("pg_ctl");
        command.arg("-D").arg(&self.data).args(args);
        let status = command.stdout(Stdio::null()).status().expect("run pg_ctl");
        assert!(status.success(), "pg_ctl {args:?} failed");
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match self.as_owner.split_first() {
            Some((first, rest)) => {
                let mut command = Command::new(first);
                command.args(rest).arg(path);
                command
            }
            None => Command::new(path),
        }
    }
}

/// PostgreSQL's programs: `ISOGATE_PG_BIN`, the newest of Debian's, or those on the PATH.
fn find_bin() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("ISOGATE_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    debian.sort_by_key(|p| {
        p.parent()
            .and_then(Path::file_name)
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
    });
    if let Some(bin) = debian.pop() {
        return Some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .find(|dir| dir.join("initdb").exists() && dir.join("postgres").exists())
}

fn start(bin: &Path) -> Cluster {
    static STARTED: AtomicUsize = AtomicUsize::new(0);
    let root = is_root();
    let base = std::env::temp_dir().join(format!(
        "isogate-pg-{}-{}",
        std::process::id(),
        STARTED.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).expect("create the cluster's folder");
    let data = base.join("data");
    let as_owner: Vec<String> = if root {
        // The folder must belong to the user PostgreSQL runs as.
        let owner = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&base)
            .status()
            .expect("run chown");
        assert!(owner.success(), "chown postgres {} failed", base.display());
        [
            "setpriv",
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
        ]
        .map(String::from)
        .to_vec()
    } else {
        Vec::new()
    };
    let mut cluster = Cluster {
        port: 0,
        data: data.clone(),
        as_owner,
        bin: bin.to_owned(),
    };
    let init = cluster
        .command("initdb")
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run initdb");
    assert!(
        init.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    cluster.port = port;
    // Settings for a throwaway cluster: fast, never durable.
    let settings = format!(
        "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
         fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 300\n",
        base.display()
    );
    let conf = data.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).expect("read postgresql.conf");
    text.push_str(&settings);
    std::fs::write(&conf, text).expect("write postgresql.conf");
    // pg_ctl starts it in the background; the watchdog stops it (and removes the folder)
    // once this process is gone.
    cluster.pg_ctl(&["-l", &base.join("log").display().to_string(), "-w", "start"]);
    let stop = format!(
        "{} {} -D {} -m immediate stop",
        cluster.as_owner.join(" "),
        bin.join("pg_ctl").display(),
        data.display()
    );
    // Never waited for: it outlives this process by design.
    #[allow(clippy::zombie_processes)]
    let _watchdog = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "while kill -0 {} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {}",
            std::process::id(),
            base.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the cluster's watchdog");
    wait_ready(port);
    cluster
}

fn wait_ready(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "PostgreSQL did not start on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}
