//! The portal daemon: the teachers' web app and an HTTP/JSON gateway onto
//! the grading service, found only through the SDK's dependency view. It
//! serves HTTP and its own gRPC health and reflection on one port.
//!
//! # Layout
//!
//! - [`auth`]: sign-in, sessions, tokens, roles, CSRF and security headers.
//! - [`accounts`]: the accounts store, password hashing, failed-login limits.
//! - [`pages`]: the server-rendered web app.
//! - [`api`]: the JSON gateway under `/api`.
//! - [`trace_api`]: traces as JSON under `/api/traces`.
//! - [`trace_pages`]: the `/traces` pages, with a waterfall of each trace.
//! - [`read_cache`]: students served from memory, kept fresh by `WatchGrades`.
//! - [`error`]: the one error type, gRPC status to HTTP.
//! - [`observe`]: each routed request's span name and RED metrics.
//! - [`ops`]: the live operations view behind `/services`.

pub mod accounts;
pub mod api;
pub mod auth;
pub mod error;
pub mod observe;
pub mod ops;
pub mod pages;
pub mod read_cache;
pub mod trace_api;
pub mod trace_pages;

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
use crate::model::log::trace::{Span, TraceId, TraceQuery, TraceSummary};
use crate::model::registry::Instance;
use crate::model::traffic::PolicyRecord;
use crate::portal::accounts::AccountStore;
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
    /// How often `/services` reads every instance's metrics.
    pub ops_sample_interval: Duration,
    /// Where the accounts database lives.
    pub data_dir: std::path::PathBuf,
    /// The certificate browsers get over HTTPS; `None`: the mesh's.
    pub web_certificate: Option<WebCertificateFiles>,
}

/// The files of a certificate for browsers (`--web-tls-cert`,
/// `--web-tls-key`).
#[derive(Debug, Clone)]
pub struct WebCertificateFiles {
    /// The certificate chain, PEM.
    pub cert: std::path::PathBuf,
    /// Its private key, PEM.
    pub key: std::path::PathBuf,
}

/// What every handler shares. Cloned for every request (by each
/// middleware with state and by each handler's extractor), so it is one
/// reference count: the clients and views inside hold several each.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares.
#[derive(Debug)]
pub struct Shared {
    /// Calls to grading, students through the read cache.
    pub grading: CachedGrading,
    logs: LogApi,
    registry: RegistryApi,
    dependencies: DependencyView,
    shutdown: Shutdown,
    /// Accounts, sessions, tokens.
    pub auth: Arc<auth::Auth>,
    /// The RED metrics of the HTTP routes.
    http_metrics: observe::HttpMetrics,
    /// The live operations view.
    ops: ops::OpsView,
}

impl AppState {
    /// The portal's state as a member of `mesh`: typed clients with
    /// `call_timeout`, the read cache (fed by a task until shutdown when
    /// `read_cache`), the operations view (sampling every
    /// `ops_sample_interval`), and the accounts.
    pub fn new(
        mesh: &Mesh,
        call_timeout: Duration,
        read_cache: bool,
        ops_sample_interval: Duration,
        accounts: Arc<AccountStore>,
    ) -> Self {
        let dependencies = mesh.dependencies();
        let shutdown = mesh.shutdown().clone();
        let grading = GradingApi::new(dependencies.clone(), call_timeout);
        let cache = Arc::new(ReadCache::default());
        if read_cache {
            tokio::spawn(read_cache::run_watch(
                grading.clone(),
                cache.clone(),
                shutdown.clone(),
            ));
        }
        AppState(Arc::new(Shared {
            grading: CachedGrading::new(grading, cache),
            logs: LogApi::new(dependencies.clone(), call_timeout),
            registry: RegistryApi::new(mesh.registry_nodes(), call_timeout),
            ops: ops::OpsView::start(
                RegistryApi::new(mesh.registry_nodes(), call_timeout),
                mesh.tls().clone(),
                ops_sample_interval,
                &shutdown,
            ),
            dependencies,
            shutdown,
            auth: auth::Auth::new(accounts),
            http_metrics: observe::HttpMetrics::register(&mesh.metrics()),
        }))
    }

    /// The portal's shutdown signal (long-lived responses end with it).
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Every instance the registry knows, whatever its health.
    pub async fn registry_instances(&self) -> Result<Vec<Instance>, PortalError> {
        Ok(self.registry.list(None, true).await?)
    }

    /// Every traffic policy set in the registry.
    pub async fn registry_policies(&self) -> Result<Vec<PolicyRecord>, PortalError> {
        Ok(self.registry.policies(None).await?)
    }

    /// Every stored span of `trace`, from every log instance.
    pub async fn trace(&self, trace: TraceId) -> Result<Vec<Span>, PortalError> {
        Ok(self.logs.trace(trace).await?)
    }

    /// The newest traces matching `query`, from every log instance.
    pub async fn recent_traces(
        &self,
        query: &TraceQuery,
    ) -> Result<Vec<TraceSummary>, PortalError> {
        Ok(self.logs.recent_traces(query).await?)
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
        .merge(trace_api::router())
        .merge(trace_pages::router())
        .merge(api::router())
        .merge(pages::router())
        .merge(auth::login::router())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ))
        .layer(axum::middleware::from_fn(error::uniform))
        .layer(axum::middleware::from_fn(|request, next| {
            error::read_bodies(MAX_BODY_BYTES, request, next)
        }))
        .layer(axum::middleware::map_response(auth::headers::add))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Outermost, so that refusals and rewritten errors count too.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe::observe_request,
        ))
        .with_state(state)
}

/// Opens the accounts database in `dir`; on an empty one, creates the
/// first admin and prints its password, once.
async fn open_accounts(dir: &std::path::Path) -> Result<Arc<AccountStore>, ServeError> {
    let dir = dir.to_owned();
    let opened = tokio::task::spawn_blocking(move || {
        let store = AccountStore::open(&dir)?;
        let first = store.bootstrap_admin()?;
        Ok::<_, accounts::AccountsError>((store, first))
    })
    .await
    .map_err(|e| ServeError::Setup(e.to_string()))?
    .map_err(|e| ServeError::Setup(e.to_string()))?;
    let (store, first) = opened;
    if let Some((name, password)) = first {
        eprintln!(
            "The portal has no accounts yet: created {name:?} (admin) with the password {password} (shown this once; change it with `gradebook users passwd {name}`)."
        );
        tracing::info!(account = %name, "created the first admin account");
    }
    Ok(Arc::new(store))
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
    let web_certificate = match (&config.web_certificate, mesh_config.tls.credentials()) {
        (None, _) => None,
        (Some(files), Some(credentials)) => Some(Arc::new(
            credentials.load_web_certificate(&files.cert, &files.key)?,
        )),
        (Some(_), None) => {
            return Err(ServeError::Setup(
                "--web-tls-cert needs TLS on: it cannot be used with --insecure".into(),
            ));
        }
    };
    let accounts = open_accounts(&config.data_dir).await?;
    let mesh = Mesh::start(mesh_config, &shutdown)?;
    let state = AppState::new(
        &mesh,
        config.call_timeout,
        config.read_cache,
        config.ops_sample_interval,
        accounts,
    );
    MeshServer::new(mesh)
        .with_http(router(state))
        .with_web_certificate(web_certificate)
        .serve(listener)
        .await
}
