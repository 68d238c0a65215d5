//! A throwaway PostgreSQL from the machine's own installation (Debian's
//! `postgresql` package): `initdb` in a temporary directory (as the
//! `postgres` user when run as root, since initdb refuses root), a server
//! on a loopback port with its socket in that directory, stopped
//! (`pg_ctl stop -m immediate`) and removed when dropped. The benchmark
//! runs grading on one; the tests start theirs through it too.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long the server may take to accept connections.
const STARTUP_PATIENCE: Duration = Duration::from_secs(60);
/// The superuser `initdb` creates.
pub const SUPERUSER: &str = "postgres";

/// How the server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync on, as in production: for measuring durable writes.
    Durable,
    /// fsync off: faster, for tests that do not measure durability.
    Fast,
}

/// A running throwaway PostgreSQL server.
#[derive(Debug)]
pub struct ScratchPostgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

/// Where `initdb`, `pg_ctl` and `postgres` are: the newest
/// `/usr/lib/postgresql/*/bin`, or the directory of `initdb` on `PATH`.
pub fn binaries() -> Option<PathBuf> {
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

/// Whether this process runs as root (`/proc/self` belongs to the
/// process's effective user).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

impl ScratchPostgres {
    /// A command running `program` from the server's binaries, as the
    /// `postgres` user when running as root.
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

    /// The server's directory (data, socket, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Initializes and starts a server on `port` (a free loopback port);
    /// fails with the server's own messages. `None` for the binaries when
    /// PostgreSQL is not installed.
    pub fn start_on(port: u16, durability: Durability) -> anyhow::Result<ScratchPostgres> {
        let Some(bin) = binaries() else {
            bail!(
                "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb, none on PATH): \
                 install the Debian package `postgresql`"
            );
        };
        let dir =
            std::env::temp_dir().join(format!("gradebook-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let server = ScratchPostgres {
            bin,
            dir,
            port,
            as_postgres: is_root(),
        };
        if server.as_postgres {
            let status = Command::new("chown")
                .arg("-R")
                .arg(format!("{SUPERUSER}:"))
                .arg(&server.dir)
                .status()
                .context("chown")?;
            if !status.success() {
                bail!("cannot give {} to the postgres user", server.dir.display());
            }
        }
        let output = server
            .command("initdb")
            .arg("-D")
            .arg(server.data())
            .args(["-A", "trust", "-U", SUPERUSER, "--no-sync", "-E", "UTF8"])
            .output()
            .context("run initdb")?;
        if !output.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        let fsync = match durability {
            Durability::Durable => "on",
            Durability::Fast => "off",
        };
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync={fsync} -c max_connections=200",
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
            .context("run pg_ctl start")?;
        if !status.success() {
            bail!(
                "pg_ctl start failed: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        server.wait_accepting(&log)?;
        Ok(server)
    }

    /// Polls `pg_isready` until the server accepts connections, with a deadline.
    fn wait_accepting(&self, log: &Path) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return Ok(());
            }
            if start.elapsed() > STARTUP_PATIENCE {
                bail!(
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

    /// Creates a fresh, empty database named `name`; returns its URL.
    pub async fn create_database(&self, name: &str) -> anyhow::Result<String> {
        let (client, connection) =
            tokio_postgres::connect(&self.url(SUPERUSER), tokio_postgres::NoTls)
                .await
                .context("connect to the scratch PostgreSQL")?;
        let driver = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .context("create a database")?;
        drop(client);
        let _ = driver.await;
        Ok(self.url(name))
    }

    /// The shell command line that stops the server (for a watchdog that
    /// outlives this process).
    pub fn stop_command_line(&self) -> String {
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

impl Drop for ScratchPostgres {
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
