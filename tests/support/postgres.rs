//! A throwaway PostgreSQL for tests: `initdb` in a temporary directory (as
//! the `postgres` user when the tests run as root), a server on a free
//! loopback port with its socket in that directory, and a fresh database
//! per test. One server per test binary, started on first use; it is
//! stopped (`pg_ctl stop -m immediate`) and its directory removed when the
//! [`PgServer`] is dropped, or, for the shared one, by a watchdog once the
//! test process has exited.
//!
//! Without PostgreSQL installed, [`server`] returns `None` after printing a
//! skip message, or panics when `CI` is set.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::free_port;

/// How long the server may take to accept connections.
const STARTUP_PATIENCE: Duration = Duration::from_secs(60);
/// The superuser `initdb` creates.
const SUPERUSER: &str = "postgres";

/// A running throwaway PostgreSQL server.
pub struct PgServer {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

/// Where `initdb`, `pg_ctl` and `postgres` are: the newest
/// `/usr/lib/postgresql/*/bin`, or the directory of `initdb` on `PATH`.
fn binaries() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).find(|dir| {
            ["initdb", "pg_ctl", "postgres"]
                .iter()
                .all(|b| dir.join(b).exists())
        })
    })
}

/// Whether the tests run as root (`/proc/self` belongs to the process's
/// effective user).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

impl PgServer {
    /// A command running `program` from the server's binaries, as the
    /// `postgres` user when the tests run as root.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", SUPERUSER, "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Initializes and starts a server on a free port; panics with its log
    /// on failure.
    pub fn start() -> Option<PgServer> {
        Self::start_on(free_port())
    }

    /// Initializes and starts a server on `port`; panics with its log on
    /// failure.
    pub fn start_on(port: u16) -> Option<PgServer> {
        let Some(bin) = binaries() else {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb, none on \
                     PATH) and CI is set: install the Debian package `postgresql`"
                );
            }
            eprintln!(
                "SKIPPING the PostgreSQL half of this test: PostgreSQL is not installed \
                 (install the Debian package `postgresql`)"
            );
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("gradebook-pg-")
            .tempdir()
            .expect("temp dir")
            .keep();
        let as_postgres = is_root();
        let server = PgServer {
            bin,
            dir,
            port,
            as_postgres,
        };
        if as_postgres {
            let status = Command::new("chown")
                .arg("-R")
                .arg(format!("{SUPERUSER}:"))
                .arg(&server.dir)
                .status()
                .expect("chown");
            assert!(status.success(), "chown the PostgreSQL directory");
        }
        let output = server
            .command("initdb")
            .arg("-D")
            .arg(server.data())
            .args(["-A", "trust", "-U", SUPERUSER, "--no-sync", "-E", "UTF8"])
            .output()
            .expect("run initdb");
        assert!(
            output.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=200",
            server.port,
            server.dir.display()
        );
        let log = server.dir.join("postgres.log");
        let status = server
            .command("pg_ctl")
            .arg("-D")
            .arg(server.data())
            .arg("-l")
            .arg(&log)
            .args(["-o", &options, "start"])
            .stdout(Stdio::null())
            .status()
            .expect("run pg_ctl start");
        assert!(
            status.success(),
            "pg_ctl start failed: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        server.wait_accepting(&log);
        Some(server)
    }

    /// Polls `pg_isready` until the server accepts connections, with a
    /// deadline.
    fn wait_accepting(&self, log: &Path) {
        let start = Instant::now();
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return;
            }
            if start.elapsed() > STARTUP_PATIENCE {
                panic!(
                    "PostgreSQL did not accept connections within {STARTUP_PATIENCE:?}: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The URL of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a fresh, empty database; returns its URL.
    pub async fn database(&self) -> String {
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let (client, connection) =
            tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
                .await
                .expect("connect to the test PostgreSQL");
        let driver = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create a test database");
        drop(client);
        let _ = driver.await;
        self.url(&name)
    }

    /// Stops the server when the test process `pid` has exited, then removes
    /// the directory (for the shared server, which is never dropped).
    fn stop_after_exit_of(&self, pid: u32) {
        let stop = self.stop_command_line();
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop}; rm -rf '{}'",
            self.dir.display()
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }

    fn stop_command_line(&self) -> String {
        let pg_ctl = self.bin.join("pg_ctl");
        let runuser = if self.as_postgres {
            format!("runuser -u {SUPERUSER} -- ")
        } else {
            String::new()
        };
        format!(
            "{runuser}'{}' -D '{}' stop -m immediate >/dev/null 2>&1",
            pg_ctl.display(),
            self.data().display()
        )
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["stop", "-m", "immediate"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The test binary's shared server, started on first use; `None` (after a
/// skip message) when PostgreSQL is not installed outside CI.
pub fn server() -> Option<&'static PgServer> {
    static SERVER: OnceLock<Option<PgServer>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            let server = PgServer::start()?;
            server.stop_after_exit_of(std::process::id());
            Some(server)
        })
        .as_ref()
}
