//! The live dependency view: a `Watch` on the required services keeps, for
//! each, its instances and their health, and publishes each service's
//! healthy endpoints to its [`MeshChannel`] (a `watch` channel: publishing
//! never waits for the balancer, so a dependency nobody calls never stalls
//! the view of the others). A service starts and serves before its
//! dependencies are up: their channels fill in as they appear.
//!
//! When the watch reconnects (the registry restarted), the fresh snapshot
//! may lack instances that have not re-registered yet although they still
//! answer, and instances that have re-registered are UNKNOWN until the new
//! registry has probed them. An instance that was healthy before the
//! reconnect stays healthy in the view until the registry says something
//! definite about it (SERVING, NOT_SERVING, UNREACHABLE, or removed), or
//! [`REREGISTRATION_GRACE`] passes: callers keep their endpoints. A
//! snapshot from a node that says it is still catching up with its peers
//! drops nothing at all: whatever it lacks stays as it was until the node's
//! next snapshot, sent once it has caught up.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::mesh::registry_nodes::RegistryNodes;
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::mesh::backoff::Backoff;
use crate::mesh::channel::discover::Route;
use crate::mesh::channel::metrics::ChannelMetrics;
use crate::mesh::channel::{ChannelSettings, MeshChannel};
use crate::mesh::client::registry_client;
use crate::mesh::config::REGISTRY_CALL_TIMEOUT;
use crate::mesh::shutdown::Shutdown;
use crate::mesh::tls::Tls;
use crate::model::registry::{ChangeKind, Health, Instance, WatchUpdate};
use crate::model::traffic::{PolicyRecord, TrafficPolicy};
use crate::pb::registry::v1 as pb;

/// How long an instance missing from the snapshot of a reconnected watch
/// stays in the view, waiting to re-register (the SDK re-registers within
/// its backoff, at most 2 s by default).
pub const REREGISTRATION_GRACE: Duration = Duration::from_secs(10);

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
    /// Instances kept from before a reconnect, by service and id, until
    /// they re-register or their grace ends.
    pub retained: BTreeMap<(String, String), Instant>,
    /// The traffic policies of the services that have one.
    pub policies: BTreeMap<String, TrafficPolicy>,
}

impl Dependencies {
    /// Applies one watch message received at `now`.
    pub fn apply(&mut self, update: WatchUpdate, watched: &[String], now: Instant) {
        match update {
            WatchUpdate::Snapshot {
                instances,
                catching_up,
                policies,
                ..
            } => {
                // A node still catching up may lack a policy: keep what was
                // known until its caught-up snapshot.
                if !catching_up {
                    self.policies.clear();
                }
                for record in policies {
                    self.set_policy(record.service, record.policy);
                }
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
                // Healthy instances the new registry does not know yet, or has
                // not probed yet, stay as they were until it says more.
                for (service, known) in &self.services {
                    let fresh = services.entry(service.clone()).or_default();
                    for (id, instance) in known.iter() {
                        let unknown = fresh.get(id).is_none_or(|f| f.health == Health::Unknown);
                        if catching_up && !instance.health.is_healthy() && !fresh.contains_key(id) {
                            // A node still catching up may lack it: keep it
                            // as it was until the node's caught-up snapshot.
                            fresh.insert(id.clone(), instance.clone());
                            continue;
                        }
                        if instance.health.is_healthy() && unknown {
                            fresh.insert(id.clone(), instance.clone());
                            let key = (service.clone(), id.clone());
                            let until = self
                                .retained
                                .get(&key)
                                .copied()
                                .unwrap_or(now + REREGISTRATION_GRACE);
                            self.retained.insert(key, until);
                        }
                    }
                }
                self.retained.retain(|(service, id), _| {
                    services.get(service).is_some_and(|m| m.contains_key(id))
                });
                self.services = services
                    .into_iter()
                    .map(|(k, v)| (k, Arc::new(v)))
                    .collect();
            }
            WatchUpdate::Change(change) => {
                let key = (
                    change.instance.service.clone(),
                    change.instance.instance_id.clone(),
                );
                if change.kind != ChangeKind::Removed
                    && change.instance.health == Health::Unknown
                    && self.retained.contains_key(&key)
                {
                    // Re-registered, not probed yet: still as it was.
                    return;
                }
                self.retained.remove(&key);
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
            WatchUpdate::Policy(record) => {
                let PolicyRecord {
                    service, policy, ..
                } = *record;
                self.set_policy(service, policy);
            }
        }
    }

    fn set_policy(&mut self, service: String, policy: TrafficPolicy) {
        if policy == TrafficPolicy::Equal {
            self.policies.remove(&service);
        } else {
            self.policies.insert(service, policy);
        }
    }

    /// Drops retained instances whose grace has ended by `now`; returns
    /// whether any was dropped.
    pub fn expire(&mut self, now: Instant) -> bool {
        let expired: Vec<(String, String)> = self
            .retained
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for (service, id) in &expired {
            self.retained.remove(&(service.clone(), id.clone()));
            if let Some(instances) = self.services.get_mut(service) {
                Arc::make_mut(instances).remove(id);
            }
        }
        !expired.is_empty()
    }

    /// When the next retained instance's grace ends, if any is retained.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.retained.values().min().copied()
    }

    /// The healthy instances of `service`.
    pub fn healthy(&self, service: &str) -> Vec<&Instance> {
        self.services
            .get(service)
            .map(|m| m.values().filter(|i| i.health.is_healthy()).collect())
            .unwrap_or_default()
    }

    /// What a channel to `service` routes by: its healthy instances and
    /// its traffic policy.
    pub fn route(&self, service: &str) -> Route {
        let policy = self.policies.get(service).cloned().unwrap_or_default();
        Route::new(self.healthy(service), policy)
    }
}

/// A read handle on the dependency view, cheap to clone.
#[derive(Debug, Clone)]
pub struct DependencyView {
    state: watch::Receiver<Arc<Dependencies>>,
    channels: Arc<HashMap<String, MeshChannel>>,
    tls: Tls,
}

impl DependencyView {
    /// How this process connects: for clients that dial single instances.
    pub fn tls(&self) -> &Tls {
        &self.tls
    }

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

    /// The mesh channel to `service`, balanced over its healthy instances.
    /// Fails at once when none is healthy, so callers answer UNAVAILABLE
    /// fast instead of waiting on an empty balancer.
    pub fn channel(&self, service: &str) -> Result<MeshChannel, DiscoveryError> {
        let channel = self
            .channels
            .get(service)
            .ok_or_else(|| DiscoveryError::NotRequired(service.to_owned()))?;
        if channel.route().endpoints.is_empty() {
            return Err(DiscoveryError::NoHealthyInstance(service.to_owned()));
        }
        Ok(channel.clone())
    }
}

/// The view's state and where it publishes: the view itself, and each
/// service's endpoint set. Applying an update never waits.
struct Feed {
    deps: Dependencies,
    watched: Vec<String>,
    state: watch::Sender<Arc<Dependencies>>,
    routes: HashMap<String, watch::Sender<Arc<Route>>>,
}

impl Feed {
    /// A feed for `services`, and its view with a channel per service.
    fn new(
        services: Vec<String>,
        settings: ChannelSettings,
        tls: &Tls,
        metrics: &ChannelMetrics,
    ) -> (Self, DependencyView) {
        let (state, state_rx) = watch::channel(Arc::new(Dependencies::default()));
        let mut routes = HashMap::new();
        let mut channels = HashMap::new();
        for service in &services {
            let (tx, rx) = watch::channel(Arc::new(Route::default()));
            channels.insert(
                service.clone(),
                MeshChannel::new(service, rx, settings, tls, metrics),
            );
            routes.insert(service.clone(), tx);
        }
        let feed = Feed {
            deps: Dependencies::default(),
            watched: services,
            state,
            routes,
        };
        let view = DependencyView {
            state: state_rx,
            channels: Arc::new(channels),
            tls: tls.clone(),
        };
        (feed, view)
    }

    /// Applies one watch message and publishes the result.
    fn apply(&mut self, update: WatchUpdate) {
        self.deps.apply(update, &self.watched, Instant::now());
        self.deps.live = true;
        self.publish();
    }

    /// Ends the grace of retained instances that are due.
    fn expire(&mut self) {
        if self.deps.expire(Instant::now()) {
            self.publish();
        }
    }

    /// Marks the view as not live (the watch broke), keeping what it knows.
    fn lost(&mut self) {
        self.deps.live = false;
        self.state.send_replace(Arc::new(self.deps.clone()));
    }

    fn publish(&mut self) {
        for (service, sender) in &self.routes {
            let route = self.deps.route(service);
            sender.send_if_modified(|current| {
                let changed = **current != route;
                if changed {
                    *current = Arc::new(route);
                }
                changed
            });
        }
        self.state.send_replace(Arc::new(self.deps.clone()));
    }
}

/// Starts watching `services` through the registry at `registry`, with
/// channels that connect as `tls` says and are measured in `metrics`; the
/// returned view stays live until `shutdown`.
pub fn spawn(
    registry: RegistryNodes,
    services: Vec<String>,
    settings: ChannelSettings,
    tls: &Tls,
    metrics: &ChannelMetrics,
    backoff: Backoff,
    shutdown: &Shutdown,
) -> (DependencyView, JoinHandle<()>) {
    let (feed, view) = Feed::new(services, settings, tls, metrics);
    let task = tokio::spawn(run_watch(registry, feed, backoff, shutdown.clone()));
    (view, task)
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn run_watch(registry: RegistryNodes, mut feed: Feed, backoff: Backoff, shutdown: Shutdown) {
    let mut attempt = 0u32;
    if feed.watched.is_empty() {
        // Nothing to discover (an empty watch would watch everything).
        return;
    }
    while !shutdown.is_cancelled() {
        let node = registry.current();
        let mut client = registry_client(node.channel.clone());
        let request = pb::WatchRequest {
            services: feed.watched.clone(),
        };
        let opened = tokio::select! {
            opened = tokio::time::timeout(REGISTRY_CALL_TIMEOUT, client.watch(request)) => opened,
            _ = shutdown.cancelled() => break,
        };
        // Why the watch ended: an error, or `None` when the registry closed it.
        let failure = match opened {
            Ok(Ok(response)) => {
                let mut stream = response.into_inner();
                loop {
                    let next = tokio::select! {
                        next = stream.next() => next,
                        _ = sleep_until(feed.deps.next_expiry()) => {
                            feed.expire();
                            continue;
                        }
                        _ = shutdown.cancelled() => return,
                    };
                    let update = match next {
                        Some(Ok(event)) => WatchUpdate::try_from(event),
                        Some(Err(status)) => break Some(status.message().to_owned()),
                        None => break None,
                    };
                    match update {
                        Ok(update) => {
                            attempt = 0;
                            feed.apply(update);
                        }
                        Err(error) => {
                            tracing::warn!(error = %error, "ignoring a malformed watch event")
                        }
                    }
                }
            }
            Ok(Err(status)) => Some(status.message().to_owned()),
            Err(_) => Some("opening the watch timed out".to_owned()),
        };
        if feed.deps.live {
            match failure {
                Some(error) => {
                    tracing::warn!(%error, "dependency watch lost; keeping the last known view and reconnecting")
                }
                None => tracing::info!(
                    "the registry closed the dependency watch (it is stopping); keeping the last known view and reconnecting"
                ),
            }
            feed.lost();
        }
        // The next registry node at once; after a round of them all, a
        // while.
        registry.failed(node.index);
        attempt = attempt.saturating_add(1);
        let delay = if registry.all_failed(attempt) {
            backoff.delay(attempt / registry.len() as u32 - 1)
        } else {
            Duration::ZERO
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {},
            _ = shutdown.cancelled() => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::registry::Change;

    fn instance(service: &str, id: &str, health: Health) -> Instance {
        Instance::for_test(service, id, health)
    }

    fn snapshot(instances: Vec<Instance>) -> WatchUpdate {
        WatchUpdate::Snapshot {
            instances,
            registry_node: "n".into(),
            catching_up: false,
            policies: vec![],
        }
    }

    /// Endpoints of the test instances' (empty) version.
    fn endpoints(
        entries: &[(&str, &str)],
    ) -> std::collections::BTreeMap<String, crate::mesh::channel::discover::Endpoint> {
        entries
            .iter()
            .map(|(id, address)| {
                let endpoint = crate::mesh::channel::discover::Endpoint {
                    address: (*address).to_owned(),
                    version: String::new(),
                };
                ((*id).to_owned(), endpoint)
            })
            .collect()
    }

    fn policy(service: &str, policy: TrafficPolicy) -> PolicyRecord {
        PolicyRecord {
            service: service.into(),
            policy,
            version: Default::default(),
            set_at: std::time::UNIX_EPOCH,
        }
    }

    #[test]
    fn policies_follow_the_watch_and_a_node_catching_up_drops_none() {
        let watched = vec!["grading".to_string()];
        let now = Instant::now();
        let mut deps = Dependencies::default();
        let switched = TrafficPolicy::only("2.0.0").unwrap();
        deps.apply(
            WatchUpdate::Snapshot {
                instances: vec![instance("grading", "g", Health::Serving)],
                registry_node: "n".into(),
                catching_up: false,
                policies: vec![policy("grading", switched.clone())],
            },
            &watched,
            now,
        );
        assert_eq!(deps.route("grading").policy, switched);
        deps.apply(
            catching_up_snapshot(vec![instance("grading", "g", Health::Serving)]),
            &watched,
            now,
        );
        assert_eq!(deps.route("grading").policy, switched, "kept");
        deps.apply(
            WatchUpdate::Policy(Box::new(policy("grading", TrafficPolicy::Equal))),
            &watched,
            now,
        );
        assert_eq!(deps.route("grading").policy, TrafficPolicy::Equal);
        deps.apply(
            WatchUpdate::Policy(Box::new(policy("grading", switched.clone()))),
            &watched,
            now,
        );
        deps.apply(
            snapshot(vec![instance("grading", "g", Health::Serving)]),
            &watched,
            now,
        );
        assert_eq!(
            deps.route("grading").policy,
            TrafficPolicy::Equal,
            "a caught-up snapshot without the policy clears it"
        );
    }

    fn catching_up_snapshot(instances: Vec<Instance>) -> WatchUpdate {
        WatchUpdate::Snapshot {
            instances,
            registry_node: "n".into(),
            catching_up: true,
            policies: vec![],
        }
    }

    #[test]
    fn a_snapshot_from_a_node_catching_up_drops_nothing_until_it_has_caught_up() {
        let watched = vec!["grading".to_string()];
        let now = Instant::now();
        let mut deps = Dependencies::default();
        deps.apply(
            snapshot(vec![
                instance("grading", "up", Health::Serving),
                instance("grading", "down", Health::NotServing),
                instance("grading", "gone", Health::Serving),
            ]),
            &watched,
            now,
        );
        // A node that has just started knows only one of them so far.
        deps.apply(
            catching_up_snapshot(vec![instance("grading", "up", Health::Serving)]),
            &watched,
            now,
        );
        let known: Vec<&String> = deps.services["grading"].keys().collect();
        assert_eq!(known, ["down", "gone", "up"], "nothing dropped");
        assert_eq!(ids(&deps, "grading"), ["gone", "up"]);
        // Caught up: "down" was removed meanwhile, "gone" is not known
        // either but was healthy, so it waits out its grace.
        deps.apply(
            snapshot(vec![instance("grading", "up", Health::Serving)]),
            &watched,
            now,
        );
        let known: Vec<&String> = deps.services["grading"].keys().collect();
        assert_eq!(known, ["gone", "up"]);
        assert!(
            deps.retained
                .contains_key(&("grading".to_owned(), "gone".to_owned()))
        );
    }

    fn change(kind: ChangeKind, instance: Instance) -> WatchUpdate {
        WatchUpdate::Change(Box::new(Change { kind, instance }))
    }

    fn ids(deps: &Dependencies, service: &str) -> Vec<String> {
        deps.healthy(service)
            .into_iter()
            .map(|i| i.instance_id.clone())
            .collect()
    }

    #[test]
    fn snapshot_then_changes_track_healthy_instances() {
        let watched = vec!["log".to_string(), "grading".to_string()];
        let now = Instant::now();
        let mut deps = Dependencies::default();
        deps.apply(
            snapshot(vec![
                instance("log", "a", Health::Serving),
                instance("log", "b", Health::Unknown),
            ]),
            &watched,
            now,
        );
        assert_eq!(ids(&deps, "log"), ["a"]);
        assert!(deps.healthy("grading").is_empty());
        deps.apply(
            change(
                ChangeKind::HealthChanged,
                instance("log", "b", Health::Serving),
            ),
            &watched,
            now,
        );
        assert_eq!(deps.route("log").endpoints.len(), 2);
        deps.apply(
            change(ChangeKind::Removed, instance("log", "a", Health::Serving)),
            &watched,
            now,
        );
        assert_eq!(ids(&deps, "log"), ["b"]);
        assert_eq!(deps.route("log").endpoints, endpoints(&[("b", "b:1")]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reconnected_snapshot_keeps_instances_that_have_not_re_registered_yet() {
        let watched = vec!["grading".to_string()];
        let mut deps = Dependencies::default();
        deps.apply(
            snapshot(vec![
                instance("grading", "a", Health::Serving),
                instance("grading", "b", Health::Serving),
                instance("grading", "down", Health::Unreachable),
            ]),
            &watched,
            Instant::now(),
        );
        // The registry restarted: its first snapshot knows only "a".
        deps.apply(
            snapshot(vec![instance("grading", "a", Health::Serving)]),
            &watched,
            Instant::now(),
        );
        assert_eq!(ids(&deps, "grading"), ["a", "b"], "b still answers");
        assert_eq!(
            deps.next_expiry(),
            Some(Instant::now() + REREGISTRATION_GRACE)
        );
        // A second reconnect does not extend the grace.
        tokio::time::advance(Duration::from_secs(1)).await;
        deps.apply(
            snapshot(vec![instance("grading", "a", Health::Serving)]),
            &watched,
            Instant::now(),
        );
        assert_eq!(
            deps.next_expiry(),
            Some(Instant::now() + REREGISTRATION_GRACE - Duration::from_secs(1))
        );
        tokio::time::advance(REREGISTRATION_GRACE).await;
        assert!(deps.expire(Instant::now()));
        assert_eq!(ids(&deps, "grading"), ["a"], "b never came back");

        // Re-registered but not probed yet (UNKNOWN): still healthy, until
        // the new registry says SERVING or otherwise.
        deps.apply(
            change(ChangeKind::Added, instance("grading", "b", Health::Serving)),
            &watched,
            Instant::now(),
        );
        deps.apply(
            snapshot(vec![
                instance("grading", "a", Health::Unknown),
                instance("grading", "b", Health::Serving),
            ]),
            &watched,
            Instant::now(),
        );
        assert_eq!(ids(&deps, "grading"), ["a", "b"], "a is not probed yet");
        deps.apply(
            change(
                ChangeKind::Updated,
                instance("grading", "a", Health::Unknown),
            ),
            &watched,
            Instant::now(),
        );
        assert_eq!(ids(&deps, "grading"), ["a", "b"]);
        deps.apply(
            change(
                ChangeKind::HealthChanged,
                instance("grading", "a", Health::Unreachable),
            ),
            &watched,
            Instant::now(),
        );
        assert_eq!(
            ids(&deps, "grading"),
            ["b"],
            "a definite answer is believed"
        );
        deps.apply(
            change(
                ChangeKind::HealthChanged,
                instance("grading", "a", Health::Serving),
            ),
            &watched,
            Instant::now(),
        );

        // One that re-registers in time is no longer retained.
        deps.apply(
            change(ChangeKind::Added, instance("grading", "b", Health::Serving)),
            &watched,
            Instant::now(),
        );
        deps.apply(snapshot(vec![]), &watched, Instant::now());
        deps.apply(
            change(ChangeKind::Added, instance("grading", "a", Health::Serving)),
            &watched,
            Instant::now(),
        );
        assert_eq!(deps.retained.len(), 1, "only b still waits");
        // A removal is believed at once.
        deps.apply(
            change(
                ChangeKind::Removed,
                instance("grading", "b", Health::Serving),
            ),
            &watched,
            Instant::now(),
        );
        assert_eq!(ids(&deps, "grading"), ["a"]);
        assert!(deps.retained.is_empty());
        assert!(!deps.expire(Instant::now() + REREGISTRATION_GRACE));
    }

    /// The old feed awaited a 64-slot queue that the balancer drained only
    /// when a request came: changes to a dependency nobody called stalled
    /// the whole view. Publishing now never waits: under paused time any
    /// wait would let the timeout fire.
    #[tokio::test(start_paused = true)]
    async fn a_thousand_changes_to_an_idle_dependency_never_stall_the_others() {
        let (mut feed, view) = Feed::new(
            vec!["idle".to_string(), "busy".to_string()],
            ChannelSettings::default(),
            &Tls::Off,
            &ChannelMetrics::default(),
        );
        let apply_all = async {
            for i in 0..1_000 {
                let kind = if i % 2 == 0 {
                    ChangeKind::Added
                } else {
                    ChangeKind::Removed
                };
                feed.apply(change(
                    kind,
                    instance("idle", &format!("idle-{}", i / 2), Health::Serving),
                ));
                tokio::task::yield_now().await;
            }
            feed.apply(change(
                ChangeKind::Added,
                instance("busy", "busy-1", Health::Serving),
            ));
        };
        tokio::time::timeout(Duration::from_millis(1), apply_all)
            .await
            .expect("applying changes never waits");
        let busy = view.channel("busy").expect("busy has an instance");
        assert_eq!(busy.route().endpoints, endpoints(&[("busy-1", "busy-1:1")]));
        assert!(
            view.channel("idle").is_err(),
            "every idle instance was removed"
        );
        assert!(view.current().live);
    }
}
