//! The one way every daemon serves gRPC. [`Mesh::start`] joins the mesh
//! (dependency view, log shipping); [`MeshServer`] adds the daemon's
//! services next to grpc.health.v1 and reflection (v1 and v1alpha), then
//! serves them and registers the instance (reporting NOT_SERVING while an
//! optional readiness signal says the daemon's backend is not ready). On
//! shutdown it reports NOT_SERVING, deregisters, stops accepting, and drains
//! in-flight calls within a bounded grace period. Every connection goes
//! through the mesh's acceptor ([`crate::mesh::tls::accept`]): mutual TLS
//! unless `--insecure`, a bound on open connections, a handshake deadline,
//! and the caller's identity on every request.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::body::Body;
use tonic::codegen::http::{self, HeaderValue};
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::mesh::channel::metrics::ChannelMetrics;
use crate::mesh::config::{ConfigError, MeshConfig};
use crate::mesh::discovery::{self, DependencyView};
use crate::mesh::logship::{Destination, LocalSink};
use crate::mesh::metrics::process::ProcessCollector;
use crate::mesh::metrics::{self, Metrics, grpc_server::GrpcServerMetrics};
use crate::mesh::registration::RegistrationHandle;
use crate::mesh::registry_nodes::RegistryNodes;
use crate::mesh::shutdown::Shutdown;
use crate::mesh::telemetry;
use crate::mesh::tls::accept::{self, Accepting};
use crate::mesh::tls::key_files::KeyFiles;
use crate::mesh::tls::require::RequireIdentityLayer;
use crate::mesh::tls::{ClientAuth, Tls, TlsError};
use crate::model::registry::{HEALTH_SERVICE_METADATA, Health, Registration};

/// How long shutdown waits for the registry to see NOT_SERVING before it
/// deregisters anyway.
pub const NOT_SERVING_NOTICE: Duration = Duration::from_secs(1);

/// Why a daemon could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listener's address cannot be read.
    #[error("cannot read the listener's address: {0}")]
    Listener(#[source] std::io::Error),
    /// Reflection could not be built from the descriptor sets.
    #[error("cannot build gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The server failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The daemon's own setup failed (its local database, ...).
    #[error("cannot start: {0}")]
    Setup(String),
}

/// A daemon's membership of the mesh: its configuration, a channel to the
/// registry, and the live view of its dependencies.
#[derive(Debug)]
pub struct Mesh {
    config: MeshConfig,
    registry: RegistryNodes,
    dependencies: DependencyView,
    /// This process's metrics, served at `GET /metrics`.
    metrics: Metrics,
    shutdown: Shutdown,
    background: Vec<JoinHandle<()>>,
    /// Stops log shipping: after the server has drained, so that the
    /// shutdown's own records are shipped too.
    shipping_stop: Shutdown,
    shipping: Option<JoinHandle<()>>,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.shipping_stop.cancel();
    }
}

impl Mesh {
    /// Joins the mesh: checks the configuration, starts watching the
    /// dependencies and, when this process set up log shipping, starts
    /// shipping. Registration happens once the server serves.
    pub fn start(config: MeshConfig, shutdown: &Shutdown) -> Result<Self, ConfigError> {
        Self::start_shipping_to(config, shutdown, None)
    }

    /// [`Mesh::start`], shipping this daemon's records to `local` instead
    /// of over the network when given (the log daemon's own records go
    /// straight into its store, even those of its shutdown).
    pub fn start_shipping_to(
        config: MeshConfig,
        shutdown: &Shutdown,
        local: Option<LocalSink>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let registry = RegistryNodes::new("--registry", &config.registry_url, &config.tls)?;
        let metrics = Metrics::new();
        metrics.register_collector(ProcessCollector::new());
        let (dependencies, watch_task) = discovery::spawn(
            registry.clone(),
            config.discovered_services(),
            config.channel,
            &config.tls,
            &ChannelMetrics::register(&metrics),
            config.backoff,
            shutdown,
        );
        let mut background = vec![watch_task];
        background.extend(config.tls.keep_fresh(shutdown));
        let shipping_stop = Shutdown::new();
        let shipping = if config.ship_logs
            && let Some(shipper) = telemetry::take_shipper()
        {
            metrics.register_collector(shipper.collector());
            let destination = match local {
                Some(sink) => Destination::Local(sink),
                None => Destination::Mesh(dependencies.clone()),
            };
            Some(tokio::spawn(shipper.run(
                destination,
                config.backoff,
                shipping_stop.clone(),
            )))
        } else {
            None
        };
        Ok(Mesh {
            config,
            registry,
            dependencies,
            metrics,
            shutdown: shutdown.clone(),
            background,
            shipping_stop,
            shipping,
        })
    }

    /// This process's metrics: a daemon registers its own in them.
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// The live view of the required services, with balanced channels.
    pub fn dependencies(&self) -> DependencyView {
        self.dependencies.clone()
    }

    /// The registry nodes (for daemons that show the catalog).
    pub fn registry_nodes(&self) -> RegistryNodes {
        self.registry.clone()
    }

    /// How this daemon's connections are secured.
    pub fn tls(&self) -> &Tls {
        &self.config.tls
    }

    /// The configuration.
    pub fn config(&self) -> &MeshConfig {
        &self.config
    }

    /// The shutdown signal.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }
}

/// Builds a daemon's gRPC server: its services plus health and reflection.
#[derive(Debug)]
pub struct MeshServer {
    mesh: Mesh,
    routes: RoutesBuilder,
    service_names: Vec<&'static str>,
    health: HealthReporter,
    http: Option<axum::Router>,
    mesh_routes: axum::Router,
    web_certificate: Option<Arc<KeyFiles>>,
    readiness: Option<tokio::sync::watch::Receiver<bool>>,
}

impl MeshServer {
    /// A server for the daemon that joined `mesh`.
    pub fn new(mesh: Mesh) -> Self {
        let (health, health_service) = tonic_health::server::health_reporter();
        let mut routes = RoutesBuilder::default();
        routes.add_service(health_service);
        MeshServer {
            mesh,
            routes,
            service_names: Vec::new(),
            health,
            http: None,
            mesh_routes: axum::Router::new(),
            web_certificate: None,
            readiness: None,
        }
    }

    /// HTTP routes for mesh callers and operators' tools (Prometheus),
    /// served beside gRPC on the same port, as `/metrics` is: the
    /// registry's service discovery. Unlike [`MeshServer::with_http`], they
    /// do not open the port to browsers.
    pub fn with_mesh_routes(mut self, routes: axum::Router) -> Self {
        self.mesh_routes = self.mesh_routes.merge(routes);
        self
    }

    /// Serves NOT_SERVING (every service, "" and the instance id) while
    /// `ready` says false, and SERVING while it says true, until shutdown:
    /// for a daemon that serves before its backend is reachable.
    pub fn with_readiness(mut self, ready: tokio::sync::watch::Receiver<bool>) -> Self {
        self.readiness = Some(ready);
        self
    }

    /// Adds one of the daemon's gRPC services; its health is reported under
    /// its full name.
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.service_names.push(S::NAME);
        self.routes.add_service(service);
        self
    }

    /// Also serves `router` (HTTP/1.1 and HTTP/2) on the same port: every
    /// request that is not for one of the gRPC services goes to it. The
    /// portal serves its pages and JSON API this way, next to its gRPC health
    /// and reflection.
    pub fn with_http(mut self, router: axum::Router) -> Self {
        self.http = Some(router);
        self
    }

    /// The certificate browsers get over HTTPS (any authority's: the
    /// mesh's certificate still goes to mesh clients, which ask for it by
    /// name); without one, browsers get the mesh's. Reloaded when its files
    /// change.
    pub fn with_web_certificate(mut self, certificate: Option<Arc<KeyFiles>>) -> Self {
        self.web_certificate = certificate;
        self
    }

    /// The health reporter, for a daemon that reports its own health changes.
    pub fn health(&self) -> HealthReporter {
        self.health.clone()
    }

    /// Serves on `listener` until the mesh's shutdown signal, registering the
    /// instance with the registry; then drains and deregisters. Returns once
    /// the server has stopped.
    pub async fn serve(self, listener: TcpListener) -> Result<(), ServeError> {
        let MeshServer {
            mut mesh,
            mut routes,
            service_names,
            health,
            http,
            mesh_routes,
            web_certificate,
            readiness,
        } = self;
        let local = listener.local_addr().map_err(ServeError::Listener)?;
        let address = mesh.config.advertised_address(local);

        // Reflection lists only what this daemon serves, though every
        // package's descriptors are registered.
        let reflection = || {
            let mut builder = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name("grpc.health.v1.Health")
                .with_service_name("grpc.reflection.v1.ServerReflection")
                .with_service_name("grpc.reflection.v1alpha.ServerReflection");
            for name in &service_names {
                builder = builder.with_service_name(*name);
            }
            builder
        };
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;
        routes.add_service(reflection_v1);
        routes.add_service(reflection_v1alpha);
        let mut health_names: Vec<String> = service_names.iter().map(|n| n.to_string()).collect();
        health_names.push(String::new());
        health_names.push(mesh.config.instance_id.clone());
        let follow_readiness = match readiness {
            None => {
                set_health(&health, &health_names, ServingStatus::Serving).await;
                None
            }
            Some(mut ready) => {
                let (health, names) = (health.clone(), health_names.clone());
                Some(tokio::spawn(async move {
                    loop {
                        let status = if *ready.borrow_and_update() {
                            ServingStatus::Serving
                        } else {
                            ServingStatus::NotServing
                        };
                        set_health(&health, &names, status).await;
                        if ready.changed().await.is_err() {
                            return;
                        }
                    }
                }))
            }
        };

        let browsers = http.is_some();
        let mut router = routes
            .routes()
            .into_axum_router()
            .merge(metrics::route(
                mesh.metrics.clone(),
                mesh.config.tls.is_on(),
            ))
            .merge(mesh_routes);
        if let Some(http) = http {
            router = router.fallback_service(http);
        }
        let routes = tonic::service::Routes::from(router);
        let calls = GrpcServerMetrics::register(&mesh.metrics);
        let accepting = accepting(
            &mesh.config.tls,
            browsers.then_some(web_certificate.clone()),
            local,
        )?;
        if let Some(certificate) = web_certificate {
            mesh.background
                .push(tokio::spawn(certificate.keep_fresh(mesh.shutdown.clone())));
        }
        let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
        let server = Server::builder()
            .accept_http1(true)
            .tcp_nodelay(true)
            .timeout(mesh.config.request_timeout)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .layer(crate::mesh::trace::layer::TraceRequestsLayer)
            .layer(calls.layer())
            .layer(RequireIdentityLayer {
                enabled: mesh.config.tls.is_on(),
            })
            .layer(crate::mesh::channel::deadline::PropagateLayer)
            .layer(tower::util::MapResponseLayer::new(
                normalize_bad_input as fn(http::Response<Body>) -> http::Response<Body>,
            ))
            .add_routes(routes)
            .serve_with_incoming_shutdown(
                accept::incoming(listener, accepting, mesh.config.max_connections),
                async {
                    let _ = drain_rx.await;
                },
            );
        tokio::pin!(server);
        tracing::info!(service = %mesh.config.service, instance = %mesh.config.instance_id, %local, advertised = %address, tls = mesh.config.tls.is_on(), "serving");

        let registration = RegistrationHandle::spawn(
            mesh.registry.clone(),
            Registration {
                service: mesh.config.service.clone(),
                instance_id: Some(mesh.config.instance_id.clone()),
                address,
                version: mesh.config.version.clone(),
                metadata: {
                    let mut metadata = mesh.config.metadata.clone();
                    metadata.insert(
                        HEALTH_SERVICE_METADATA.to_owned(),
                        mesh.config.instance_id.clone(),
                    );
                    metadata
                },
                requires: mesh.config.requires.clone(),
            },
            mesh.config.backoff,
            &mesh.shutdown,
        );

        tokio::select! {
            result = &mut server => {
                if let Some(task) = &follow_readiness {
                    task.abort();
                }
                mesh.shutdown.cancel();
                return result.map_err(ServeError::from);
            }
            _ = mesh.shutdown.cancelled() => {}
        }

        tracing::info!("shutting down: reporting NOT_SERVING");
        if let Some(task) = follow_readiness {
            task.abort();
            // Wait until it has stopped, so that it cannot report SERVING
            // after this.
            let _ = task.await;
        }
        set_health(&health, &health_names, ServingStatus::NotServing).await;
        // Let the registry tell dependents NOT_SERVING before the removal.
        registration
            .wait_for_health(Health::NotServing, NOT_SERVING_NOTICE)
            .await;
        registration.deregister().await;
        let _ = drain_tx.send(());
        let grace = mesh.config.drain_grace;
        let result = match tokio::time::timeout(grace, &mut server).await {
            Ok(result) => result.map_err(ServeError::from),
            Err(_) => {
                tracing::warn!(
                    ?grace,
                    "in-flight calls did not drain within the grace period; stopping anyway"
                );
                Ok(())
            }
        };
        for task in std::mem::take(&mut mesh.background) {
            let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
        }
        tracing::info!("stopped");
        mesh.shipping_stop.cancel();
        if let Some(shipping) = mesh.shipping.take() {
            let _ = tokio::time::timeout(
                crate::mesh::logship::FLUSH_TIMEOUT + Duration::from_secs(1),
                shipping,
            )
            .await;
        }
        result
    }
}

/// How the server accepts connections: plaintext when TLS is off;
/// otherwise mutual TLS, except that a server for browsers (the portal:
/// `browsers` holds its web certificate, if any) makes client certificates
/// optional and, on loopback only, also serves plain HTTP.
fn accepting(
    tls: &Tls,
    browsers: Option<Option<Arc<KeyFiles>>>,
    local: SocketAddr,
) -> Result<Accepting, TlsError> {
    let Some(web_certificate) = browsers else {
        return Accepting::new(tls, ClientAuth::Required, false, None);
    };
    let loopback = local.ip().is_loopback();
    if let Some(credentials) = tls.credentials() {
        match &web_certificate {
            Some(certificate) => tracing::info!(
                certificate = %certificate.cert_path().display(),
                "browsers get HTTPS with the web certificate"
            ),
            None if !loopback => tracing::info!(
                "browsers get HTTPS with the mesh's certificate, valid for localhost, 127.0.0.1 and {}: \
                 trust {} in the browser (add host names with `gradebook certs issue {} --name HOST`), \
                 or give a certificate of your own with --web-tls-cert and --web-tls-key",
                credentials.identity().server_name(),
                credentials
                    .dir()
                    .join(crate::mesh::tls::authority::CA_CERT)
                    .display(),
                credentials.identity().service(),
            ),
            None => {}
        }
    }
    Accepting::new(tls, ClientAuth::Optional, loopback, web_certificate)
}

/// Reports `status` for every one of `names`.
async fn set_health(health: &HealthReporter, names: &[String], status: ServingStatus) {
    for name in names {
        health.set_service_status(name, status).await;
    }
}

/// Rewrites two statuses tonic gets wrong for bad input, so every daemon
/// answers it the same way, as the client's fault:
/// - a message over the decoding limit is OUT_OF_RANGE in tonic; gRPC
///   convention (grpc-go, grpc-java) says RESOURCE_EXHAUSTED;
/// - a request that is not valid protobuf is INTERNAL in tonic (as if the
///   server were broken); it is the caller's INVALID_ARGUMENT.
fn normalize_bad_input(mut response: http::Response<Body>) -> http::Response<Body> {
    let headers = response.headers_mut();
    let message_says = |text: &str| {
        let encoded = text.replace(' ', "%20");
        headers
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|m| m.contains(text) || m.contains(&encoded))
    };
    let rewrite = match headers.get("grpc-status").and_then(|v| v.to_str().ok()) {
        Some("11") if message_says("message length too large") => Some("8"),
        Some("13") if message_says("failed to decode Protobuf message") => Some("3"),
        _ => None,
    };
    if let Some(code) = rewrite {
        headers.insert("grpc-status", HeaderValue::from_static(code));
    }
    response
}
