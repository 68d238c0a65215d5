//! The log daemon: central, durable, queryable logging for every service.
//! Records arrive in batches over `Write`, are appended to segment files
//! under the data directory and fsynced before they are acknowledged, and
//! can be queried or tailed with filters. Retention by size and age.
//!
//! # Layout
//!
//! - [`store`]: the durable, append-only segment stores (records; spans in
//!   `spans/` under the data directory, with the same retention).
//! - [`service`]: the `LogService` gRPC service (group-committing writer,
//!   queries, tails).
//! - [`metrics`]: what is ingested and how long commits take, for `/metrics`.

pub mod metrics;
pub mod service;
pub mod store;

use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::mesh::{Mesh, MeshConfig, MeshServer, ServeError, Shutdown};

/// The log service's name in the registry.
pub const SERVICE_NAME: &str = crate::mesh::config::LOG_SERVICE;
/// Default size above which the oldest records are deleted.
pub const DEFAULT_RETENTION_BYTES: u64 = 256 * 1024 * 1024;
/// Default age above which records are deleted.
pub const DEFAULT_RETENTION_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// The directory, under the data directory, of the span store.
pub const SPANS_DIR: &str = "spans";
/// How often retention is enforced.
pub const RETENTION_INTERVAL: Duration = Duration::from_secs(60);

/// Why the log daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// Serving failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// The log daemon's settings.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// This daemon as a member of the mesh.
    pub mesh: MeshConfig,
    /// Where segment files live.
    pub data_dir: PathBuf,
    /// How much to keep.
    pub retention: store::Retention,
}

/// Runs the log daemon on `listener` until `shutdown`.
pub async fn run(
    config: LogConfig,
    listener: TcpListener,
    shutdown: Shutdown,
) -> Result<(), LogError> {
    let data_dir = config.data_dir.clone();
    let retention = config.retention;
    let (store, spans) = tokio::task::spawn_blocking(move || {
        let store = store::LogStore::open(&data_dir, retention)?;
        let spans = store::SpanStore::open(&data_dir.join(SPANS_DIR), retention)?;
        Ok::<_, store::StoreError>((store, spans))
    })
    .await
    .map_err(|e| store::StoreError::Io {
        operation: "opening",
        path: config.data_dir.clone(),
        source: std::io::Error::other(e.to_string()),
    })??;
    tracing::info!(records = store.len(), spans = spans.len(), bytes = store.disk_bytes() + spans.disk_bytes(), dir = %config.data_dir.display(), "log store opened");
    let server =
        service::LogServer::new(store, spans, shutdown.clone()).with_tls(config.mesh.tls.clone());
    let background = server.spawn_background(RETENTION_INTERVAL);
    // Its own records go straight into its store, not over the network.
    let mesh = Mesh::start_shipping_to(config.mesh, &shutdown, Some(server.local_sink()))
        .map_err(ServeError::from)?;
    server.metrics().register(&mesh.metrics());
    let served = MeshServer::new(mesh)
        .add_service(server.into_service())
        .serve(listener)
        .await;
    let _ = background.await;
    Ok(served?)
}
