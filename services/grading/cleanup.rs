//! The periodic cleanup of the store: request ids past their retention
//! (and, with PostgreSQL, old outbox rows), until the shutdown signal.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::grading::store::GradeStore;
use crate::mesh::Shutdown;

/// How often the cleanup runs.
pub const CLEANUP_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// Prunes `store` every `interval` until `shutdown`.
pub async fn run(store: Arc<dyn GradeStore>, interval: Duration, shutdown: Shutdown) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        match store.prune(SystemTime::now()).await {
            Ok(0) => {}
            Ok(rows) => tracing::debug!(rows, "pruned old request ids and changes"),
            Err(error) => tracing::warn!(%error, "pruning the store failed; will retry"),
        }
    }
}
