//! `gradebook up`: starts the whole gradebook (registry, log, grading,
//! portal) as separate child processes, in dependency order, on their
//! default ports with data under `--data-dir`; restarts a child that dies
//! (with backoff, logged); prints the portal's URL once it is ready; and on
//! Ctrl-C or SIGTERM stops them all gracefully, portal first.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::cli::health_check::wait_serving;
use crate::cli::http_get::HttpConnection;
use crate::mesh::backoff::Backoff;
use crate::mesh::config::{
    DEFAULT_GRADING_LISTEN, DEFAULT_LOG_LISTEN, DEFAULT_PORTAL_LISTEN, DEFAULT_REGISTRY_LISTEN,
};
use crate::mesh::shutdown::cancel_on_signal;
use crate::mesh::telemetry;
use crate::mesh::{Shutdown, config::url_of};

/// `gradebook up`.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Where every daemon keeps its data (`log/`, `grading/` below it).
    #[arg(long, env = "GRADEBOOK_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Create demo students and grades in an empty gradebook.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub demo_data: bool,
    /// Where the registry listens.
    #[arg(long, default_value = DEFAULT_REGISTRY_LISTEN)]
    pub registry_listen: String,
    /// Where the log service listens.
    #[arg(long, default_value = DEFAULT_LOG_LISTEN)]
    pub log_listen: String,
    /// Where the grading service listens.
    #[arg(long, default_value = DEFAULT_GRADING_LISTEN)]
    pub grading_listen: String,
    /// Where the portal listens.
    #[arg(long, default_value = DEFAULT_PORTAL_LISTEN)]
    pub portal_listen: String,
}

/// How long a daemon may take to become SERVING at start.
const START_PATIENCE: Duration = Duration::from_secs(30);
/// A child that ran this long before dying starts over with the shortest backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// How long a child may take to stop after SIGTERM before SIGKILL.
const STOP_PATIENCE: Duration = Duration::from_secs(15);

/// One supervised daemon.
struct Daemon {
    name: &'static str,
    listen: String,
    args: Vec<String>,
    child: Option<Child>,
    started: Instant,
    restarts: u32,
}

impl Daemon {
    fn spawn(&mut self) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("cannot find the gradebook binary")?;
        let child = Command::new(exe)
            .arg(self.name)
            .args(&self.args)
            .stdin(Stdio::null())
            // Own process group: a terminal's Ctrl-C reaches the supervisor,
            // which then stops the children in order.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", self.name))?;
        self.child = Some(child);
        self.started = Instant::now();
        Ok(())
    }

    async fn wait_serving(&self) -> bool {
        wait_serving(&url_of(&self.listen), START_PATIENCE).await
    }

    async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        match tokio::time::timeout(STOP_PATIENCE, child.wait()).await {
            Ok(_) => tracing::info!(daemon = self.name, "stopped"),
            Err(_) => {
                tracing::warn!(
                    daemon = self.name,
                    "did not stop within {STOP_PATIENCE:?}; killing it"
                );
                let _ = child.kill().await;
            }
        }
    }
}

fn daemons(args: &UpArgs) -> Vec<Daemon> {
    let data = |sub: &str| args.data_dir.join(sub).display().to_string();
    let registry = vec!["--registry".to_owned(), url_of(&args.registry_listen)];
    let daemon = |name, listen: &String, extra: Vec<String>| Daemon {
        name,
        listen: listen.clone(),
        args: [vec!["--listen".to_owned(), listen.clone()], extra].concat(),
        child: None,
        started: Instant::now(),
        restarts: 0,
    };
    vec![
        daemon("registry", &args.registry_listen, vec![]),
        daemon(
            "log",
            &args.log_listen,
            [registry.clone(), vec!["--data-dir".into(), data("log")]].concat(),
        ),
        daemon(
            "grading",
            &args.grading_listen,
            [
                registry.clone(),
                vec![
                    "--data-dir".into(),
                    data("grading"),
                    "--demo-data".into(),
                    args.demo_data.to_string(),
                ],
            ]
            .concat(),
        ),
        daemon("portal", &args.portal_listen, registry.clone()),
    ]
}

/// Waits until the portal answers `/readyz` with 200.
async fn portal_ready(address: &str, shutdown: &Shutdown) -> bool {
    let deadline = Instant::now() + START_PATIENCE;
    while Instant::now() < deadline && !shutdown.is_cancelled() {
        let ready = async {
            let mut connection = HttpConnection::open(address).await.ok()?;
            connection.get("/readyz").await.ok()
        };
        if let Ok(Some((200, _))) = tokio::time::timeout(Duration::from_secs(1), ready).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Runs `gradebook up` until Ctrl-C or SIGTERM.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    telemetry::init_stderr(telemetry::DEFAULT_FILTER);
    let shutdown = Shutdown::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let mut daemons = daemons(&args);
    for daemon in daemons.iter_mut() {
        if shutdown.is_cancelled() {
            break;
        }
        daemon.spawn()?;
        if !daemon.wait_serving().await {
            tracing::warn!(
                daemon = daemon.name,
                "not SERVING yet; starting the rest anyway"
            );
        }
    }
    if portal_ready(&args.portal_listen, &shutdown).await {
        println!(
            "Gradebook is ready: http://{}/students (Ctrl-C stops it)",
            args.portal_listen
        );
    }
    let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10), 0.2)?;
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    while !shutdown.is_cancelled() {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => break,
        }
        for daemon in daemons.iter_mut() {
            let exited = match daemon.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(status))) => Some(status.to_string()),
                Some(Err(error)) => Some(error.to_string()),
                Some(Ok(None)) | None => None,
            };
            let Some(status) = exited else { continue };
            if daemon.started.elapsed() > STABLE_AFTER {
                daemon.restarts = 0;
            }
            let delay = backoff.delay(daemon.restarts);
            daemon.restarts = daemon.restarts.saturating_add(1);
            tracing::warn!(daemon = daemon.name, %status, restart_in = ?delay, "a daemon died; restarting it");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => break,
            }
            if let Err(error) = daemon.spawn() {
                tracing::error!(daemon = daemon.name, error = %error, "restart failed");
            }
        }
    }
    tracing::info!("stopping the gradebook");
    for daemon in daemons.iter_mut().rev() {
        daemon.stop().await;
    }
    Ok(())
}
