//! The one shutdown signal. A [`Shutdown`] token is made in `main`, cancelled
//! on SIGTERM or SIGINT, and passed down to every daemon and background task,
//! which end when it is cancelled.

pub use tokio_util::sync::CancellationToken as Shutdown;

/// Waits for SIGTERM or SIGINT, then cancels `shutdown`. Returns at once if
/// the signal handlers cannot be installed (after cancelling), so that the
/// daemon never runs without a way to stop.
pub async fn cancel_on_signal(shutdown: Shutdown) {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot install signal handlers; shutting down");
            shutdown.cancel();
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received; shutting down"),
        _ = shutdown.cancelled() => return,
    }
    shutdown.cancel();
}
