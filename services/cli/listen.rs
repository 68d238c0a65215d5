//! Listening sockets for the daemons: bound from `--listen`, or inherited
//! from a supervisor through the systemd socket-activation convention
//! (`LISTEN_FDS=1`, the socket at file descriptor 3). `gradebook up` binds
//! every daemon's socket itself (port 0 for extra instances) and hands it
//! down, so there is no window in which another process can take the port,
//! and a restarted daemon keeps its address: connections made while it
//! restarts wait in the socket's backlog instead of being refused.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

use anyhow::Context;
use tokio::net::TcpListener;

/// The variable that says how many sockets were passed (we take one).
pub const LISTEN_FDS: &str = "LISTEN_FDS";
/// The variable that names the process the sockets are for, if set.
pub const LISTEN_PID: &str = "LISTEN_PID";
/// The first passed descriptor, by the convention.
pub const FIRST_FD: RawFd = 3;

/// The socket passed by a supervisor, if any: only when `LISTEN_FDS` is 1
/// and `LISTEN_PID`, if set, names this process. (The daemons start no
/// processes of their own, so the variables are left as they are.)
fn inherited() -> anyhow::Result<Option<std::net::TcpListener>> {
    let Ok(count) = std::env::var(LISTEN_FDS) else {
        return Ok(None);
    };
    if let Ok(pid) = std::env::var(LISTEN_PID)
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return Ok(None);
    }
    if count.trim() != "1" {
        anyhow::bail!("{LISTEN_FDS}={count:?}: exactly one passed socket is supported");
    }
    // SAFETY: by the convention, descriptor 3 is ours and open; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(FIRST_FD) };
    let listener = std::net::TcpListener::from(fd);
    listener
        .local_addr()
        .context("the passed descriptor 3 is not a listening TCP socket")?;
    listener.set_nonblocking(true)?;
    Ok(Some(listener))
}

/// The daemon's listener: the one passed by a supervisor, or a new one on `listen`.
pub async fn bind(listen: SocketAddr) -> anyhow::Result<TcpListener> {
    if let Some(listener) = inherited()? {
        let listener = TcpListener::from_std(listener)?;
        tracing::debug!(address = ?listener.local_addr().ok(), "listening on the socket passed by the supervisor");
        return Ok(listener);
    }
    TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))
}

/// Makes `command` start its process with `listener` as descriptor 3 and
/// `LISTEN_FDS=1`; the listener stays open in this process too.
pub fn pass_listener(command: &mut tokio::process::Command, listener: &std::net::TcpListener) {
    let fd = listener.as_raw_fd();
    command.env(LISTEN_FDS, "1");
    // SAFETY: between fork and exec only async-signal-safe calls are made
    // (dup2, fcntl).
    unsafe {
        command.pre_exec(move || {
            if fd == FIRST_FD {
                // dup2 onto itself keeps close-on-exec: clear it instead.
                nix::fcntl::fcntl(
                    std::os::fd::BorrowedFd::borrow_raw(fd),
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
                )?;
            } else {
                // The new descriptor must stay open into the exec'd program.
                let _ = nix::unistd::dup2_raw(std::os::fd::BorrowedFd::borrow_raw(fd), FIRST_FD)?
                    .into_raw_fd();
            }
            Ok(())
        });
    }
}

/// Binds a listener for a child on `address` (port 0 for any free port).
pub fn bind_for_child(address: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    std::net::TcpListener::bind(address).with_context(|| format!("cannot listen on {address}"))
}

/// The address a listener is bound to.
pub fn address_of(listener: &std::net::TcpListener) -> anyhow::Result<SocketAddr> {
    listener
        .local_addr()
        .context("cannot read a listener's address")
}
