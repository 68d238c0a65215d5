//! The registry daemon: the hub of the mesh. Services register their
//! instances here, declare what they require and watch for changes; the
//! registry monitors every instance with grpc.health.v1.
//!
//! # Layout
//!
//! - [`catalog`]: the catalog as a state machine (events in, effects out).
//! - [`access`]: who may register and deregister which instance, and set policies.
//! - [`policies`]: the traffic policies, newest record winning.
//! - [`health`]: the per-instance health state machine.
//! - [`core`]: the shell that runs the catalog and carries out its effects.
//! - [`monitor`]: the health probe task of one instance.
//! - [`watchers`]: the bounded watch fan-out.
//! - [`service`]: the `Registry` gRPC service.
//! - [`replication`]: gossip with the other registry nodes.
//! - [`peer`]: the `Peer` gRPC service other registry nodes call.
//! - [`prometheus_sd`]: Prometheus's HTTP service discovery, from the catalog.
//! - [`metrics`]: instances by health, watchers, changes, evictions, probes.

pub mod access;
pub mod catalog;
pub mod core;
pub mod health;
pub mod metrics;
pub mod monitor;
pub mod peer;
pub mod policies;
pub mod prometheus_sd;
pub mod replication;
pub mod service;
pub mod watchers;

use std::time::Duration;

use tokio::net::TcpListener;

use crate::mesh::config::{ConfigError, url_of};
use crate::mesh::{Mesh, MeshConfig, MeshServer, ServeError, Shutdown};
use crate::registry::catalog::Catalog;
use crate::registry::core::Core;
use crate::registry::health::HealthPolicy;
use crate::registry::monitor::ProbeSettings;
use crate::registry::service::RegistryService;

/// The registry's service name in its own catalog.
pub const SERVICE_NAME: &str = "registry";
/// Default time between two probes of an instance.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Default time a probe may go unanswered.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_millis(500);
/// Default number of timed-out checks in a row that make an instance unreachable.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 2;
/// Default time a down instance stays in the catalog before eviction.
pub const DEFAULT_EVICTION_GRACE: Duration = Duration::from_secs(30);
/// Default time a peer node stays down before the records it owned go.
pub const DEFAULT_PEER_DEAD_AFTER: Duration = Duration::from_secs(30);
/// Default number of events queued per watcher before it is resynced.
pub const DEFAULT_WATCH_QUEUE: usize = 1024;

/// The registry daemon's settings.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// The registry itself as a member of the mesh (it registers with itself).
    pub mesh: MeshConfig,
    /// Time between two health checks of an instance.
    pub check_interval: Duration,
    /// Deadline of one health check.
    pub check_timeout: Duration,
    /// Timed-out checks in a row after which an instance is unreachable.
    pub failure_threshold: u32,
    /// How long a down instance stays before it is evicted.
    pub eviction_grace: Duration,
    /// Events queued per watcher before it is cut off to resync.
    pub watch_queue: usize,
    /// The other registry nodes (their peer addresses; this node's own may
    /// be among them): empty for a node on its own.
    pub peers: Vec<String>,
    /// The name of the group of registry nodes.
    pub cluster: String,
    /// How long a peer stays down before the records it owned go.
    pub peer_dead_after: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            mesh: MeshConfig::new(SERVICE_NAME),
            check_interval: DEFAULT_CHECK_INTERVAL,
            check_timeout: DEFAULT_CHECK_TIMEOUT,
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            eviction_grace: DEFAULT_EVICTION_GRACE,
            watch_queue: DEFAULT_WATCH_QUEUE,
            peers: Vec::new(),
            cluster: replication::DEFAULT_CLUSTER.to_owned(),
            peer_dead_after: DEFAULT_PEER_DEAD_AFTER,
        }
    }
}

impl RegistryConfig {
    /// Checks the settings, naming the one that is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.check_interval.is_zero() {
            return Err(ConfigError::invalid(
                "--check-interval",
                "must be greater than zero",
            ));
        }
        if self.check_timeout.is_zero() || self.check_timeout > self.check_interval {
            return Err(ConfigError::invalid(
                "--check-timeout",
                format!(
                    "must be greater than zero and at most --check-interval ({:?})",
                    self.check_interval
                ),
            ));
        }
        if self.failure_threshold == 0 {
            return Err(ConfigError::invalid(
                "--failure-threshold",
                "must be at least 1",
            ));
        }
        if self.watch_queue == 0 {
            return Err(ConfigError::invalid("--watch-queue", "must be at least 1"));
        }
        Ok(())
    }
}

/// Runs the registry on `listener` until `shutdown`.
pub async fn run(
    config: RegistryConfig,
    listener: TcpListener,
    shutdown: Shutdown,
) -> Result<(), ServeError> {
    config.validate()?;
    let local = listener.local_addr().map_err(ServeError::Listener)?;
    let mut mesh_config = config.mesh.clone();
    // The registry registers with, and discovers through, itself.
    mesh_config.registry_url = url_of(&mesh_config.advertised_address(local));
    let node_id = mesh_config.instance_id.clone();
    let policy = HealthPolicy {
        failure_threshold: config.failure_threshold,
        eviction_grace: config.eviction_grace,
    };
    let probe = ProbeSettings {
        interval: config.check_interval,
        timeout: config.check_timeout,
    };
    let core = Core::new(
        Catalog::new(node_id, policy),
        config.watch_queue,
        probe,
        config.mesh.tls.clone(),
        shutdown.clone(),
    );
    let address = mesh_config.advertised_address(local);
    let peers: Vec<String> = config
        .peers
        .iter()
        .filter(|p| **p != address)
        .cloned()
        .collect();
    if !peers.is_empty() {
        core.replicate(&replication::PeerConfig {
            address,
            peers,
            cluster: config.cluster.clone(),
            dead_after: config.peer_dead_after,
        });
    }
    let evictions = tokio::spawn(evict_periodically(
        core.clone(),
        config.eviction_grace,
        shutdown.clone(),
    ));
    let mesh = Mesh::start(mesh_config, &shutdown)?;
    core.metrics().register(&mesh.metrics());
    let peer = peer::PeerService::new(core.clone(), config.cluster.clone()).into_server();
    let discovery = prometheus_sd::route(core.clone());
    let service = RegistryService::new(core, shutdown.clone()).into_server();
    let served = MeshServer::new(mesh)
        .add_service(service)
        .add_service(peer)
        .with_mesh_routes(discovery)
        .serve(listener)
        .await;
    let _ = evictions.await;
    served
}

async fn evict_periodically(core: std::sync::Arc<Core>, grace: Duration, shutdown: Shutdown) {
    let period = (grace / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut ticker = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = ticker.tick() => core.tick(),
            _ = shutdown.cancelled() => return,
        }
    }
}
