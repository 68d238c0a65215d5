//! One supervised daemon: what `up` runs ([`ChildSpec`]: which binary,
//! its command line and the socket it serves on), and the task that keeps
//! it running ([`supervise`]), restarting it with backoff when it dies,
//! until it is told to stop (SIGTERM, so it drains) or to die (SIGKILL).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::cli::listen::pass_listener;
use crate::cli::up::Kind;
use crate::mesh::Shutdown;
use crate::mesh::backoff::Backoff;

/// A child that ran this long before dying starts over with the shortest backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// How long a child may take to stop after SIGTERM before SIGKILL.
const STOP_PATIENCE: Duration = Duration::from_secs(15);

/// One supervised daemon: what to run and the socket it serves on.
pub struct ChildSpec {
    /// Its name in `up`'s logs (`grading-2`), unique among the children.
    pub name: String,
    /// Which daemon.
    pub kind: Kind,
    /// The binary to run.
    pub binary: PathBuf,
    /// Its flags after the subcommand.
    pub args: Vec<String>,
    /// The socket it serves on, bound by `up` and passed down.
    pub listener: std::net::TcpListener,
    /// Where that socket listens.
    pub address: SocketAddr,
}

impl ChildSpec {
    fn spawn(&self) -> anyhow::Result<Child> {
        let mut command = Command::new(&self.binary);
        command
            .arg(self.kind.name())
            .args(&self.args)
            .stdin(Stdio::null())
            // Own process group: a terminal's Ctrl-C reaches the supervisor,
            // which then stops the children in order.
            .process_group(0)
            .kill_on_drop(true);
        pass_listener(&mut command, &self.listener);
        end_with_parent(&mut command);
        command
            .spawn()
            .with_context(|| format!("cannot start {} ({})", self.name, self.binary.display()))
    }
}

/// Makes the child end (SIGTERM, so it drains and deregisters) when `up`
/// dies, however it dies: SIGKILL and SIGHUP included (the kernel's
/// parent-death signal). A child whose parent is already gone by the time
/// it would start does not start.
fn end_with_parent(command: &mut Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: between fork and exec only async-signal-safe system calls
    // are made (prctl, getppid).
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::other("gradebook up is gone"));
            }
            Ok(())
        });
    }
}

/// Where a supervised child stands; `restarts` counts quick deaths in a
/// row, which lengthen the backoff.
enum ChildState {
    /// About to start the process.
    Starting {
        /// Quick deaths in a row so far.
        restarts: u32,
    },
    /// The process runs.
    Running {
        /// The process.
        child: Child,
        /// When it started.
        since: Instant,
        /// Quick deaths in a row before this start.
        restarts: u32,
    },
    /// Dead or failed to start; started again after `delay`.
    BackingOff {
        /// Quick deaths in a row, this one included.
        restarts: u32,
        /// How long to wait.
        delay: Duration,
    },
    /// Stopped for good.
    Stopped,
}

/// Runs `spec`'s daemon until `stop` (SIGTERM, then SIGKILL after a
/// patience, or at once at `kill`), restarting it with backoff whenever it
/// dies.
pub async fn supervise(spec: ChildSpec, stop: Shutdown, kill: Shutdown, backoff: Backoff) {
    let mut state = ChildState::Starting { restarts: 0 };
    loop {
        state = match state {
            ChildState::Starting { restarts } => match spec.spawn() {
                Ok(child) => ChildState::Running {
                    child,
                    since: Instant::now(),
                    restarts,
                },
                Err(error) => {
                    tracing::error!(daemon = %spec.name, error = %error, "cannot start");
                    ChildState::BackingOff {
                        restarts: restarts.saturating_add(1),
                        delay: backoff.delay(restarts),
                    }
                }
            },
            ChildState::Running {
                mut child,
                since,
                restarts,
            } => tokio::select! {
                status = child.wait() => {
                    let restarts = if since.elapsed() > STABLE_AFTER { 0 } else { restarts };
                    let delay = backoff.delay(restarts);
                    let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                    tracing::warn!(daemon = %spec.name, %status, restart_in = ?delay, "a daemon died; restarting it");
                    ChildState::BackingOff { restarts: restarts.saturating_add(1), delay }
                }
                _ = stop.cancelled() => {
                    terminate(&spec.name, child, &kill).await;
                    ChildState::Stopped
                }
                _ = kill.cancelled() => {
                    tracing::warn!(daemon = %spec.name, "killing it");
                    let _ = child.kill().await;
                    ChildState::Stopped
                }
            },
            ChildState::BackingOff { restarts, delay } => tokio::select! {
                _ = tokio::time::sleep(delay) => ChildState::Starting { restarts },
                _ = stop.cancelled() => ChildState::Stopped,
                _ = kill.cancelled() => ChildState::Stopped,
            },
            ChildState::Stopped => return,
        };
    }
}

/// SIGTERM, then SIGKILL if the child has not exited within
/// [`STOP_PATIENCE`] or `now` is cancelled first.
async fn terminate(name: &str, mut child: Child, now: &Shutdown) {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    tokio::select! {
        exited = tokio::time::timeout(STOP_PATIENCE, child.wait()) => match exited {
            Ok(_) => tracing::info!(daemon = %name, "stopped"),
            Err(_) => {
                tracing::warn!(daemon = %name, "did not stop within {STOP_PATIENCE:?}; killing it");
                let _ = child.kill().await;
            }
        },
        _ = now.cancelled() => {
            tracing::warn!(daemon = %name, "killing it");
            let _ = child.kill().await;
        }
    }
}
