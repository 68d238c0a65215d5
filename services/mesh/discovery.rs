//! The live dependency view: a `Watch` on the required services keeps, for
//! each, its instances and their health; every change also becomes insert
//! and remove changes on one balanced channel per service, so callers never
//! hard-code an address. A service starts and serves before its
//! dependencies are up: their channels fill in as they appear.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tonic::transport::channel::Change as BalanceChange;
use tonic::transport::{Channel, Endpoint};

use crate::mesh::backoff::Backoff;
use crate::mesh::client::{endpoint_of, registry_client};
use crate::mesh::config::REGISTRY_CALL_TIMEOUT;
use crate::mesh::shutdown::Shutdown;
use crate::model::registry::{ChangeKind, Instance, WatchUpdate};
use crate::pb::registry::v1 as pb;

/// Why no channel to a dependency can be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// The service was not declared as required, so it is not watched.
    #[error("service {0:?} is not a declared dependency")]
    NotRequired(String),
    /// No instance of the service is healthy right now.
    #[error("no healthy instance of {0:?} is available")]
    NoHealthyInstance(String),
}

/// What is known of the required services: every instance, by service and id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dependencies {
    /// Instances by service name, then instance id, whatever their health.
    /// Each service's map is shared, so publishing a change copies one
    /// service's map, not the whole view.
    pub services: BTreeMap<String, Arc<BTreeMap<String, Instance>>>,
    /// Whether the view is fed by a live watch (false while the registry is away).
    pub live: bool,
}

impl Dependencies {
    /// Applies one watch message.
    pub fn apply(&mut self, update: WatchUpdate, watched: &[String]) {
        match update {
            WatchUpdate::Snapshot { instances, .. } => {
                let mut services: BTreeMap<String, BTreeMap<String, Instance>> = watched
                    .iter()
                    .map(|s| (s.clone(), BTreeMap::new()))
                    .collect();
                for instance in instances {
                    services
                        .entry(instance.service.clone())
                        .or_default()
                        .insert(instance.instance_id.clone(), instance);
                }
                self.services = services
                    .into_iter()
                    .map(|(k, v)| (k, Arc::new(v)))
                    .collect();
            }
            WatchUpdate::Change(change) => {
                let instances = Arc::make_mut(
                    self.services
                        .entry(change.instance.service.clone())
                        .or_default(),
                );
                if change.kind == ChangeKind::Removed {
                    instances.remove(&change.instance.instance_id);
                } else {
                    instances.insert(change.instance.instance_id.clone(), change.instance);
                }
            }
        }
    }

    /// The healthy instances of `service`.
    pub fn healthy(&self, service: &str) -> Vec<&Instance> {
        self.services
            .get(service)
            .map(|m| m.values().filter(|i| i.health.is_healthy()).collect())
            .unwrap_or_default()
    }

    /// The balancer keys (`instance_id@address`) of the healthy instances of `service`.
    fn balancer_keys(&self, service: &str) -> BTreeSet<(String, String)> {
        self.healthy(service)
            .into_iter()
            .map(|i| (i.instance_id.clone(), i.address.clone()))
            .collect()
    }
}

/// A read handle on the dependency view, cheap to clone.
#[derive(Debug, Clone)]
pub struct DependencyView {
    state: watch::Receiver<Arc<Dependencies>>,
    channels: Arc<HashMap<String, Channel>>,
}

impl DependencyView {
    /// The current view.
    pub fn current(&self) -> Arc<Dependencies> {
        self.state.borrow().clone()
    }

    /// The healthy instances of `service` now.
    pub fn healthy(&self, service: &str) -> Vec<Instance> {
        self.current()
            .healthy(service)
            .into_iter()
            .cloned()
            .collect()
    }

    /// A receiver that wakes on every change of the view.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Dependencies>> {
        self.state.clone()
    }

    /// Waits until `service` has a healthy instance or `timeout` passes;
    /// returns whether it has one.
    pub async fn wait_for_healthy(&self, service: &str, timeout: Duration) -> bool {
        let mut rx = self.state.clone();
        let ready = rx.wait_for(|deps| !deps.healthy(service).is_empty());
        matches!(tokio::time::timeout(timeout, ready).await, Ok(Ok(_)))
    }

    /// A channel balanced over the healthy instances of `service`. Fails at
    /// once when none is healthy, so callers answer UNAVAILABLE fast instead
    /// of waiting on an empty balancer.
    pub fn channel(&self, service: &str) -> Result<Channel, DiscoveryError> {
        let channel = self
            .channels
            .get(service)
            .ok_or_else(|| DiscoveryError::NotRequired(service.to_owned()))?;
        if self.current().healthy(service).is_empty() {
            return Err(DiscoveryError::NoHealthyInstance(service.to_owned()));
        }
        Ok(channel.clone())
    }
}

/// Starts watching `services` through the registry at `registry`; the
/// returned view stays live until `shutdown`.
pub fn spawn(
    registry: Channel,
    services: Vec<String>,
    backoff: Backoff,
    shutdown: &Shutdown,
) -> (DependencyView, JoinHandle<()>) {
    let (state_tx, state_rx) = watch::channel(Arc::new(Dependencies::default()));
    let mut channels = HashMap::new();
    let mut feeders = HashMap::new();
    for service in &services {
        let (channel, feeder) = Channel::balance_channel::<(String, String)>(64);
        channels.insert(service.clone(), channel);
        feeders.insert(service.clone(), feeder);
    }
    let task = tokio::spawn(run_watch(
        registry,
        services,
        backoff,
        shutdown.clone(),
        state_tx,
        feeders,
    ));
    (
        DependencyView {
            state: state_rx,
            channels: Arc::new(channels),
        },
        task,
    )
}

type Feeder = mpsc::Sender<BalanceChange<(String, String), Endpoint>>;

async fn run_watch(
    registry: Channel,
    services: Vec<String>,
    backoff: Backoff,
    shutdown: Shutdown,
    state: watch::Sender<Arc<Dependencies>>,
    feeders: HashMap<String, Feeder>,
) {
    let mut client = registry_client(registry);
    let mut deps = Dependencies::default();
    let mut in_balancer: HashMap<String, BTreeSet<(String, String)>> = HashMap::new();
    let mut attempt = 0u32;
    if services.is_empty() {
        // Nothing to discover (an empty watch would watch everything).
        return;
    }
    while !shutdown.is_cancelled() {
        let request = pb::WatchRequest {
            services: services.clone(),
        };
        let opened = tokio::select! {
            opened = tokio::time::timeout(REGISTRY_CALL_TIMEOUT, client.watch(request)) => opened,
            _ = shutdown.cancelled() => break,
        };
        let failure = match opened {
            Ok(Ok(response)) => {
                let mut stream = response.into_inner();
                loop {
                    let next = tokio::select! {
                        next = stream.next() => next,
                        _ = shutdown.cancelled() => return,
                    };
                    let update = match next {
                        Some(Ok(event)) => WatchUpdate::try_from(event),
                        Some(Err(status)) => break status.message().to_owned(),
                        None => break "watch stream ended".to_owned(),
                    };
                    match update {
                        Ok(update) => {
                            attempt = 0;
                            deps.apply(update, &services);
                            deps.live = true;
                            sync_balancers(&deps, &feeders, &mut in_balancer).await;
                            state.send_replace(Arc::new(deps.clone()));
                        }
                        Err(error) => {
                            tracing::warn!(error = %error, "ignoring a malformed watch event")
                        }
                    }
                }
            }
            Ok(Err(status)) => status.message().to_owned(),
            Err(_) => "opening the watch timed out".to_owned(),
        };
        if deps.live {
            tracing::warn!(error = %failure, "dependency watch lost; keeping the last known view and reconnecting");
            deps.live = false;
            state.send_replace(Arc::new(deps.clone()));
        }
        let delay = backoff.delay(attempt);
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {},
            _ = shutdown.cancelled() => break,
        }
    }
}

/// Brings each service's balancer to the healthy set of the view.
async fn sync_balancers(
    deps: &Dependencies,
    feeders: &HashMap<String, Feeder>,
    in_balancer: &mut HashMap<String, BTreeSet<(String, String)>>,
) {
    for (service, feeder) in feeders {
        let desired = deps.balancer_keys(service);
        let current = in_balancer.entry(service.clone()).or_default();
        for key in current.difference(&desired) {
            let _ = feeder.send(BalanceChange::Remove(key.clone())).await;
        }
        for key in desired.difference(current) {
            match endpoint_of(&key.1) {
                Ok(endpoint) => {
                    let _ = feeder
                        .send(BalanceChange::Insert(key.clone(), endpoint))
                        .await;
                }
                Err(error) => {
                    tracing::warn!(service = %service, error = %error, "skipping an instance with an unusable address")
                }
            }
        }
        *current = desired;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::registry::{Change, Health};

    fn instance(service: &str, id: &str, health: Health) -> Instance {
        Instance::for_test(service, id, health)
    }

    #[test]
    fn snapshot_then_changes_track_healthy_instances() {
        let watched = vec!["log".to_string(), "grading".to_string()];
        let mut deps = Dependencies::default();
        deps.apply(
            WatchUpdate::Snapshot {
                instances: vec![
                    instance("log", "a", Health::Serving),
                    instance("log", "b", Health::Unknown),
                ],
                registry_node: "n".into(),
            },
            &watched,
        );
        assert_eq!(deps.healthy("log").len(), 1);
        assert!(deps.healthy("grading").is_empty());
        deps.apply(
            WatchUpdate::Change(Box::new(Change {
                kind: ChangeKind::HealthChanged,
                instance: instance("log", "b", Health::Serving),
            })),
            &watched,
        );
        assert_eq!(deps.balancer_keys("log").len(), 2);
        deps.apply(
            WatchUpdate::Change(Box::new(Change {
                kind: ChangeKind::Removed,
                instance: instance("log", "a", Health::Serving),
            })),
            &watched,
        );
        let ids: Vec<_> = deps
            .healthy("log")
            .into_iter()
            .map(|i| i.instance_id.clone())
            .collect();
        assert_eq!(ids, ["b"]);
        deps.apply(
            WatchUpdate::Snapshot {
                instances: vec![],
                registry_node: "n2".into(),
            },
            &watched,
        );
        assert!(
            deps.healthy("log").is_empty(),
            "a new snapshot replaces what was known"
        );
    }
}
