//! The portal daemon: the teachers' web app and an HTTP/JSON gateway onto
//! the grading service, found only through the SDK's dependency view. It
//! serves HTTP and its own gRPC health and reflection on one port.
//!
//! # Layout
//!
//! - [`pages`]: the server-rendered web app.
//! - [`api`]: the JSON gateway under `/api`.
//! - [`read_cache`]: students served from memory, kept fresh by `WatchGrades`.
//! - [`error`]: the one error type, gRPC status to HTTP.

pub mod api;
pub mod error;
pub mod pages;
pub mod read_cache;

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use crate::mesh::api::log::LogPage;
use crate::mesh::api::{GradingApi, LogApi, RegistryApi};
use crate::mesh::{DependencyView, Mesh, MeshConfig, MeshServer, ServeError, Shutdown};
use crate::model::log::LogFilter;
use crate::model::registry::Instance;
use crate::portal::error::PortalError;
use crate::portal::read_cache::{CachedGrading, ReadCache};

/// The portal's service name in the registry.
pub const SERVICE_NAME: &str = "portal";
/// Default deadline of every call the portal makes.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest request body the portal reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The portal's settings.
#[derive(Debug, Clone)]
pub struct PortalConfig {
    /// The portal as a member of the mesh.
    pub mesh: MeshConfig,
    /// Deadline of every call to grading, the registry and the log service.
    pub call_timeout: Duration,
    /// Serve students from the read cache (fed by `WatchGrades`).
    pub read_cache: bool,
}

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Calls to grading, students through the read cache.
    pub grading: CachedGrading,
    logs: LogApi,
    registry: RegistryApi,
    dependencies: DependencyView,
    shutdown: Shutdown,
}

impl AppState {
    /// The portal's shutdown signal (long-lived responses end with it).
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Every instance the registry knows, whatever its health.
    pub async fn registry_instances(&self) -> Result<Vec<Instance>, PortalError> {
        Ok(self.registry.list(None, true).await?)
    }

    /// The newest log records matching `filter` across every log
    /// instance, and the instances that did not answer.
    pub async fn recent_logs(
        &self,
        filter: &LogFilter,
        limit: u32,
    ) -> Result<LogPage, PortalError> {
        Ok(self.logs.query(filter, limit).await?)
    }
}

async fn healthz() -> Response {
    Json(serde_json::json!({ "status": "alive" })).into_response()
}

async fn readyz(State(app): State<AppState>) -> Response {
    let missing: Vec<&str> = [crate::grading::SERVICE_NAME, crate::log::SERVICE_NAME]
        .into_iter()
        .filter(|service| app.dependencies.healthy(service).is_empty())
        .collect();
    if missing.is_empty() {
        Json(serde_json::json!({ "ready": true })).into_response()
    } else {
        let body = serde_json::json!({ "ready": false, "unavailable": missing });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

/// The portal's whole HTTP router over `state`.
pub fn router(state: AppState) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(api::router())
        .merge(pages::router())
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Runs the portal on `listener` until `shutdown`.
pub async fn run(
    config: PortalConfig,
    listener: TcpListener,
    shutdown: Shutdown,
) -> Result<(), ServeError> {
    let mut mesh_config = config.mesh;
    for required in [crate::grading::SERVICE_NAME, crate::log::SERVICE_NAME] {
        if !mesh_config.requires.iter().any(|r| r == required) {
            mesh_config.requires.push(required.to_owned());
        }
    }
    let mesh = Mesh::start(mesh_config, &shutdown)?;
    let dependencies = mesh.dependencies();
    let grading = GradingApi::new(dependencies.clone(), config.call_timeout);
    let cache = Arc::new(ReadCache::default());
    if config.read_cache {
        tokio::spawn(read_cache::run_watch(
            grading.clone(),
            cache.clone(),
            shutdown.clone(),
        ));
    }
    let state = AppState {
        grading: CachedGrading::new(grading.clone(), cache.clone()),
        logs: LogApi::new(dependencies.clone(), config.call_timeout),
        registry: RegistryApi::new(mesh.registry_channel(), config.call_timeout),
        dependencies,
        shutdown: shutdown.clone(),
    };
    MeshServer::new(mesh)
        .with_http(router(state))
        .serve(listener)
        .await
}
