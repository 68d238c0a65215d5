//! The grading daemon: students, grades and averages, stored durably in
//! embedded SQLite (WAL, synchronous=FULL: an acknowledged write survives
//! kill -9), behind the [`store::GradeStore`] trait so that another engine
//! can be added.
//!
//! # Layout
//!
//! - [`store`]: the storage trait and its SQLite implementation
//!   (migrations, group-committed grade writes, demo data).
//! - [`service`]: the `Grading` gRPC service.

pub mod service;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::mesh::{Mesh, MeshConfig, MeshServer, ServeError, Shutdown};

/// The grading service's name in the registry.
pub const SERVICE_NAME: &str = "grading";
/// The database file's name under the data directory.
pub const DATABASE_FILE: &str = "grading.db";

/// Why the grading daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum GradingError {
    /// The database could not be opened or seeded.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// Serving failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// The grading daemon's settings.
#[derive(Debug, Clone)]
pub struct GradingConfig {
    /// This daemon as a member of the mesh.
    pub mesh: MeshConfig,
    /// Where the database lives.
    pub data_dir: PathBuf,
    /// Create demo students and grades in an empty database.
    pub demo_data: bool,
}

/// Runs the grading daemon on `listener` until `shutdown`.
pub async fn run(
    config: GradingConfig,
    listener: TcpListener,
    shutdown: Shutdown,
) -> Result<(), GradingError> {
    let path = config.data_dir.join(DATABASE_FILE);
    let demo_data = config.demo_data;
    let opened = tokio::task::spawn_blocking(move || {
        use store::GradeStore;
        let store = store::SqliteStore::open(&path)?;
        let seeded = if demo_data && store.is_empty()? {
            store.seed_demo_data()?
        } else {
            0
        };
        Ok::<_, store::StoreError>((store, seeded, path))
    })
    .await
    .map_err(|e| store::StoreError::Database(format!("opening the database failed: {e}")))?;
    let (store, seeded, path) = opened?;
    tracing::info!(database = %path.display(), demo_students = seeded, "grading database opened");
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
    let service = service::GradingService::new(Arc::new(store), shutdown.clone());
    MeshServer::new(mesh)
        .add_service(service.into_server())
        .serve(listener)
        .await?;
    Ok(())
}
