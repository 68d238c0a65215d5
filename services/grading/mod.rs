//! The grading daemon: students, grades and averages, stored durably behind
//! the async [`store::GradeStore`] trait, on embedded SQLite (the default)
//! or on PostgreSQL shared by several instances.
//!
//! # Layout
//!
//! - [`config`]: which engine, from `--database-url` and `--data-dir`.
//! - [`schema`]: the versioned schema: migrations (expand and contract),
//!   their plans and checksums, backups, and `gradebook migrate`'s tool.
//! - [`store`]: the storage trait and its engines (migrations, idempotent
//!   writes, change feeds, demo data).
//! - [`service`]: the `Grading` gRPC service.
//! - [`metrics`]: store latency and database failures, for `/metrics`.
//! - [`cleanup`]: the periodic removal of expired request ids and changes.

pub mod cleanup;
pub mod config;
pub mod metrics;
pub mod schema;
pub mod service;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{OnceCell, watch};

use crate::mesh::backoff::Backoff;
use crate::mesh::{Mesh, MeshConfig, MeshServer, ServeError, Shutdown};
pub use config::{DATABASE_FILE, DatabaseConfig};
use store::{GradeStore, PostgresStore, SqliteStore, StoreError};

/// The grading service's name in the registry.
pub const SERVICE_NAME: &str = "grading";
/// The first wait before connecting to PostgreSQL again.
pub const CONNECT_RETRY_MIN: Duration = Duration::from_millis(200);
/// The longest wait between attempts to connect to PostgreSQL.
pub const CONNECT_RETRY_MAX: Duration = Duration::from_secs(5);

/// Why the grading daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum GradingError {
    /// The database could not be opened or seeded.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Serving failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// The grading daemon's settings.
#[derive(Debug, Clone)]
pub struct GradingConfig {
    /// This daemon as a member of the mesh.
    pub mesh: MeshConfig,
    /// Where the store lives.
    pub database: DatabaseConfig,
    /// Create demo students and grades in an empty database.
    pub demo_data: bool,
    /// For fault tests: the share of Grading calls failed on purpose.
    pub fault_error_ratio: f64,
}

/// Opens the store, seeds demo data if asked and the store is empty.
async fn open(
    database: &DatabaseConfig,
    demo_data: bool,
) -> Result<Arc<dyn GradeStore>, StoreError> {
    let store: Arc<dyn GradeStore> = match database {
        DatabaseConfig::Sqlite { path } => Arc::new(SqliteStore::open(path).await?),
        DatabaseConfig::Postgres { url } => Arc::new(PostgresStore::open(url).await?),
    };
    let seeded = if demo_data && store.is_empty().await? {
        store.seed_demo_data().await?
    } else {
        0
    };
    tracing::info!(database = %database.describe(), demo_students = seeded, "grading database opened");
    Ok(store)
}

/// Opens the store, retrying with backoff while the database is
/// unavailable; once open, fills `cell`, starts the cleanup and reports
/// ready. Any other failure stops the daemon (`shutdown`) and is returned.
async fn open_when_reachable(
    config: GradingConfig,
    cell: service::StoreCell,
    ready: watch::Sender<bool>,
    shutdown: Shutdown,
) -> Result<(), StoreError> {
    let backoff = Backoff::new(CONNECT_RETRY_MIN, CONNECT_RETRY_MAX, 0.2).unwrap_or_default();
    let mut attempt = 0;
    let store = loop {
        let opened = tokio::select! {
            opened = open(&config.database, config.demo_data) => opened,
            _ = shutdown.cancelled() => return Ok(()),
        };
        match opened {
            Ok(store) => break store,
            Err(StoreError::Unavailable(reason)) => {
                let delay = backoff.delay(attempt);
                attempt = attempt.saturating_add(1);
                tracing::warn!(database = %config.database.describe(), %reason, ?delay, "database unavailable; serving NOT_SERVING and retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return Ok(()),
                }
            }
            Err(error) => {
                tracing::error!(database = %config.database.describe(), %error, "cannot use the database; stopping");
                shutdown.cancel();
                return Err(error);
            }
        }
    };
    tokio::spawn(cleanup::run(
        store.clone(),
        cleanup::CLEANUP_INTERVAL,
        shutdown.clone(),
    ));
    let _ = cell.set(store);
    let _ = ready.send(true);
    Ok(())
}

/// Runs the grading daemon on `listener` until `shutdown`. With SQLite the
/// store opens before serving (a failure ends `run` at once); with
/// PostgreSQL the daemon serves NOT_SERVING until the database is reachable
/// and migrated.
pub async fn run(
    config: GradingConfig,
    listener: TcpListener,
    shutdown: Shutdown,
) -> Result<(), GradingError> {
    let cell: service::StoreCell = Arc::new(OnceCell::new());
    let (ready, readiness) = watch::channel(false);
    let opener = match &config.database {
        DatabaseConfig::Sqlite { .. } => {
            open_when_reachable(config.clone(), cell.clone(), ready, shutdown.clone()).await?;
            None
        }
        DatabaseConfig::Postgres { .. } => Some(tokio::spawn(open_when_reachable(
            config.clone(),
            cell.clone(),
            ready,
            shutdown.clone(),
        ))),
    };
    let mut mesh_config = config.mesh;
    if !mesh_config
        .requires
        .iter()
        .any(|r| r == crate::log::SERVICE_NAME)
    {
        mesh_config
            .requires
            .push(crate::log::SERVICE_NAME.to_owned());
    }
    let mesh = Mesh::start(mesh_config, &shutdown).map_err(ServeError::from)?;
    let service = service::GradingService::new(cell, shutdown.clone())
        .with_metrics(metrics::StoreMetrics::register(&mesh.metrics()))
        .failing(config.fault_error_ratio);
    MeshServer::new(mesh)
        .with_readiness(readiness)
        .add_service(service.into_server())
        .serve(listener)
        .await?;
    if let Some(opener) = opener {
        match opener.await {
            Ok(result) => result?,
            Err(e) => {
                return Err(
                    StoreError::Database(format!("opening the database failed: {e}")).into(),
                );
            }
        }
    }
    Ok(())
}
