//! A throwaway PostgreSQL for tests, on the library's
//! [`ScratchPostgres`](gradebook::cli::scratch_postgres::ScratchPostgres)
//! (fsync off: the tests do not measure durability), with a fresh database
//! per test. One server per test binary, started on first use; a watchdog
//! stops it and removes its directory once the test process has exited.
//!
//! Without PostgreSQL installed, [`server`] returns `None` after printing a
//! skip message, or panics when `CI` is set.

use std::process::{Command, Stdio};
use std::sync::OnceLock;

use gradebook::cli::scratch_postgres::{Durability, ScratchPostgres, binaries};

use super::free_port;

/// A running throwaway PostgreSQL server.
pub struct PgServer(ScratchPostgres);

impl PgServer {
    /// Initializes and starts a server on a free port.
    pub fn start() -> Option<PgServer> {
        Self::start_on(free_port())
    }

    /// Initializes and starts a server on `port`; panics with its log on
    /// failure; `None` (after a skip message) when PostgreSQL is not
    /// installed, unless `CI` is set.
    pub fn start_on(port: u16) -> Option<PgServer> {
        if binaries().is_none() {
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
        }
        match ScratchPostgres::start_on(port, Durability::Fast) {
            Ok(server) => Some(PgServer(server)),
            Err(error) => panic!("a throwaway PostgreSQL: {error:#}"),
        }
    }

    /// The URL of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        self.0.url(database)
    }

    /// Creates a fresh, empty database; returns its URL.
    pub async fn database(&self) -> String {
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        self.0
            .create_database(&name)
            .await
            .expect("create a test database")
    }

    /// Stops the server when the test process `pid` has exited, then removes
    /// the directory (for the shared server, which is never dropped).
    fn stop_after_exit_of(&self, pid: u32) {
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {}; rm -rf '{}'",
            self.0.stop_command_line(),
            self.0.dir().display()
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
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
