//! The registry's thin async shell around the [`Catalog`] state machine:
//! one lock guards the catalog, the watchers and the monitors; every call
//! feeds the catalog an event and carries out the effects it returns
//! (publish to watchers, start or stop a health monitor) without blocking.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use tokio::sync::mpsc;

use crate::mesh::Shutdown;
use crate::mesh::Tls;
use crate::mesh::config::generate_instance_id;
use crate::mesh::tls::Caller;
use crate::model::registry::{
    CatalogRecord, ChangeKind, Instance, Registration, policy_event, snapshot_event,
};
use crate::model::traffic::{
    InvalidPolicy, PolicyRecord, TrafficPolicy, policy_key, policy_service,
};
use crate::pb::registry::v1 as pb;
use crate::registry::access::{self, Denied};
use crate::registry::catalog::{Catalog, Effect};
use crate::registry::health::ProbeOutcome;
use crate::registry::metrics::RegistryMetrics;
use crate::registry::monitor::{self, Epoch, ProbeSettings, Target};
use crate::registry::policies::Policies;
use crate::registry::replication::{PeerConfig, Replication};
use crate::registry::watchers::{WatchItem, Watchers};

/// The running monitor of one instance.
#[derive(Debug)]
struct MonitorHandle {
    epoch: Epoch,
    stop: Shutdown,
}

#[derive(Debug)]
struct State {
    catalog: Catalog,
    watchers: Watchers,
    monitors: HashMap<String, MonitorHandle>,
    /// Every service's traffic policy.
    policies: Policies,
    next_epoch: Epoch,
    /// Gossip with the other registry nodes, when there are any.
    replication: Option<Replication>,
}

impl State {
    /// Whether this node has peers and has not caught up with them yet.
    fn catching_up(&self) -> bool {
        self.replication.as_ref().is_some_and(|r| !r.caught_up())
    }

    /// The snapshot that starts a watch of `services` (all when empty).
    fn snapshot(&self, services: &[String]) -> pb::WatchEvent {
        snapshot_event(
            &self.catalog.snapshot(services),
            &self.policies.set_for(services),
            self.catalog.node_id(),
            self.catching_up(),
        )
    }

    /// Sends every watcher a fresh snapshot: the node has just caught up,
    /// and what its first snapshot lacked is now known.
    fn resend_snapshots(&mut self) {
        let State {
            catalog,
            watchers,
            policies,
            ..
        } = self;
        let catching_up = self.replication.as_ref().is_some_and(|r| !r.caught_up());
        let overflowed = watchers.resend_snapshots(|services| {
            snapshot_event(
                &catalog.snapshot(services),
                &policies.set_for(services),
                catalog.node_id(),
                catching_up,
            )
        });
        if overflowed > 0 {
            tracing::warn!(overflowed, "dropped watchers whose queue overflowed");
        }
    }
}

/// The registry's state, shared by the gRPC service, the monitors and the
/// eviction timer.
#[derive(Debug)]
pub struct Core {
    state: Mutex<State>,
    probe: ProbeSettings,
    /// How probes connect: an instance must prove its service's identity.
    tls: Tls,
    shutdown: Shutdown,
    /// What the registry reports at `/metrics`.
    metrics: RegistryMetrics,
}

impl Core {
    /// A registry core around `catalog`.
    pub fn new(
        catalog: Catalog,
        watch_queue: usize,
        probe: ProbeSettings,
        tls: Tls,
        shutdown: Shutdown,
    ) -> Arc<Self> {
        Arc::new(Core {
            state: Mutex::new(State {
                catalog,
                watchers: Watchers::new(watch_queue),
                monitors: HashMap::new(),
                policies: Policies::new(),
                next_epoch: 0,
                replication: None,
            }),
            probe,
            tls,
            shutdown,
            metrics: RegistryMetrics::default(),
        })
    }

    /// The registry's metrics, to register in the daemon's.
    pub fn metrics(&self) -> &RegistryMetrics {
        &self.metrics
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the catalog half
        // changed (every change is applied before effects run), so a
        // poisoned lock is still safe to use.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The id of this registry node.
    pub fn node_id(&self) -> String {
        self.lock().catalog.node_id().to_owned()
    }

    /// Registers (or updates) an instance.
    pub fn register(
        self: &Arc<Self>,
        registration: Registration,
        caller: &Caller,
    ) -> Result<Instance, Denied> {
        let mut state = self.lock();
        let instance_id = registration.instance_id.as_deref();
        let owner = instance_id.and_then(|id| state.catalog.service_of(id));
        access::may_register(caller, &registration.service, instance_id, owner.as_deref())?;
        let service = registration.service.clone();
        let (instance, effects) = state.catalog.register(registration, SystemTime::now(), || {
            generate_instance_id(&service)
        });
        self.execute(&mut state, effects);
        Ok(instance)
    }

    /// Removes an instance if `caller` may; returns whether it was registered.
    pub fn deregister(
        self: &Arc<Self>,
        instance_id: &str,
        caller: &Caller,
    ) -> Result<bool, Denied> {
        let mut state = self.lock();
        let owner = state.catalog.service_of(instance_id);
        access::may_deregister(caller, instance_id, owner.as_deref())?;
        let (removed, effects) = state.catalog.deregister(instance_id, SystemTime::now());
        self.execute(&mut state, effects);
        Ok(removed)
    }

    /// Sets `service`'s traffic policy if `caller` may and every version it
    /// names is run by a registered instance of the service; returns the
    /// record as held now.
    pub fn set_policy(
        self: &Arc<Self>,
        service: &str,
        policy: TrafficPolicy,
        caller: &Caller,
    ) -> Result<PolicyRecord, PolicyRefused> {
        access::may_route(caller, service)?;
        let mut state = self.lock();
        let instances = state.catalog.list(Some(service), true);
        let running = instances.iter().map(|i| i.version.as_str()).collect();
        policy.check_known(service, &running)?;
        let now = SystemTime::now();
        let previous = state.policies.get(service).map(|r| r.version.clone());
        let record = PolicyRecord {
            service: service.to_owned(),
            policy,
            version: state.catalog.stamp(previous.as_ref(), now),
            set_at: now,
        };
        tracing::info!(%service, policy = %record.policy, "traffic policy set");
        self.take_policy(&mut state, record.clone());
        Ok(record)
    }

    /// The traffic policies set (other than the default), of `service` or
    /// of every service.
    pub fn policies(&self, service: Option<&str>) -> Vec<PolicyRecord> {
        let services: Vec<String> = service.map(str::to_owned).into_iter().collect();
        let state = self.lock();
        state
            .policies
            .set_for(&services)
            .into_iter()
            .cloned()
            .collect()
    }

    /// Keeps `record` when it is the newest of its service's policy: tells
    /// the watchers, and writes it as this node's own record for the peers.
    fn take_policy(self: &Arc<Self>, state: &mut State, record: PolicyRecord) {
        if !state.policies.take(record.clone()) {
            return;
        }
        let overflowed = state
            .watchers
            .publish_event(&record.service, policy_event(&record));
        if overflowed > 0 {
            tracing::warn!(overflowed, "dropped watchers whose queue overflowed");
        }
        if let Some(replication) = state.replication.as_mut() {
            let key = policy_key(&record.service);
            let effects = replication.write(&key, Some(CatalogRecord::Policy(Box::new(record))));
            self.gossip_effects(state, effects);
        }
    }

    /// How requests are secured (callers are read against it).
    pub fn tls(&self) -> &Tls {
        &self.tls
    }

    /// Lists instances (see [`Catalog::list`]), and whether this node is
    /// still catching up with its peers (so some may be missing).
    pub fn list(&self, service: Option<&str>, include_unhealthy: bool) -> (Vec<Instance>, bool) {
        let state = self.lock();
        (
            state.catalog.list(service, include_unhealthy),
            state.catching_up(),
        )
    }

    /// Adds a watcher of `services`; its stream starts with a snapshot taken
    /// under the same lock as every publication, so nothing falls between.
    pub fn watch(&self, services: &[String]) -> mpsc::Receiver<WatchItem> {
        let mut state = self.lock();
        let snapshot = state.snapshot(services);
        let stream = state.watchers.add(services, snapshot);
        self.metrics.set_watchers(state.watchers.len());
        stream
    }

    /// How many watchers are connected.
    pub fn watcher_count(&self) -> usize {
        self.lock().watchers.len()
    }

    /// Takes in a probe outcome from the monitor of `epoch`.
    pub fn observe(self: &Arc<Self>, instance_id: &str, epoch: Epoch, outcome: ProbeOutcome) {
        let mut state = self.lock();
        if state
            .monitors
            .get(instance_id)
            .is_none_or(|m| m.epoch != epoch)
        {
            return;
        }
        let effects = state
            .catalog
            .observe(instance_id, outcome, SystemTime::now());
        self.execute(&mut state, effects);
    }

    /// Evicts instances down for longer than the grace.
    pub fn tick(self: &Arc<Self>) {
        let mut state = self.lock();
        let effects = state.catalog.tick(SystemTime::now());
        let evicted = effects
            .iter()
            .filter(|e| matches!(e, Effect::Publish(c) if c.kind == ChangeKind::Removed))
            .count();
        self.metrics.evicted(evicted as u64);
        self.execute(&mut state, effects);
    }

    /// Joins a group of registry nodes: replicates the catalog with the
    /// peers by gossip from now on, until shutdown.
    pub fn replicate(self: &Arc<Self>, config: &PeerConfig) {
        let replication = Replication::start(config, &self.tls, &self.shutdown);
        {
            let mut state = self.lock();
            state.catalog.replicate_to_peers();
            state.replication = Some(replication);
        }
        let core = self.clone();
        tokio::spawn(async move {
            loop {
                let wait = core.gossip_tick();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = core.shutdown.cancelled() => return,
                }
            }
        });
    }

    /// Takes in a gossip message from the peer `from`.
    pub fn receive_peer(
        self: &Arc<Self>,
        from: &str,
        message: crate::gossip::Message<crate::model::registry::CatalogRecord>,
    ) {
        let mut state = self.lock();
        let Some(replication) = state.replication.as_mut() else {
            return;
        };
        let was_catching_up = !replication.caught_up();
        let effects = replication.receive(from, message);
        self.gossip_effects(&mut state, effects);
        if was_catching_up && !state.catching_up() {
            state.resend_snapshots();
        }
    }

    /// Runs the gossip engine's due work; returns how long until it is due
    /// again (at most a second).
    fn gossip_tick(self: &Arc<Self>) -> std::time::Duration {
        let mut state = self.lock();
        let Some(replication) = state.replication.as_mut() else {
            return std::time::Duration::from_secs(1);
        };
        let was_catching_up = !replication.caught_up();
        let effects = replication.tick();
        let wait = replication.until_due();
        self.gossip_effects(&mut state, effects);
        if was_catching_up && !state.catching_up() {
            state.resend_snapshots();
        }
        wait.clamp(
            std::time::Duration::from_millis(1),
            std::time::Duration::from_secs(1),
        )
    }

    /// Carries out the gossip engine's effects: messages to the peers, and
    /// the other nodes' records that changed into the catalog.
    fn gossip_effects(
        self: &Arc<Self>,
        state: &mut State,
        effects: Vec<crate::gossip::Effect<crate::model::registry::CatalogRecord>>,
    ) {
        let Some(replication) = state.replication.as_ref() else {
            return;
        };
        let mut changed = Vec::new();
        for effect in effects {
            match effect {
                crate::gossip::Effect::Send { to, message } => replication.send(&to, message),
                crate::gossip::Effect::Changed(change) => {
                    if change.origin != *replication.origin() {
                        changed.push(change.key);
                    }
                }
            }
        }
        for instance_id in changed {
            let best = state
                .replication
                .as_ref()
                .and_then(|r| r.best_remote(&instance_id));
            if policy_service(&instance_id).is_some() {
                if let Some(CatalogRecord::Policy(record)) = best {
                    self.take_policy(state, *record);
                }
                continue;
            }
            let effects = state
                .catalog
                .apply_remote(&instance_id, best, SystemTime::now());
            self.execute(state, effects);
        }
    }

    fn execute(self: &Arc<Self>, state: &mut State, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Replicate {
                    instance_id,
                    record,
                } => {
                    if let Some(replication) = state.replication.as_mut() {
                        let effects = replication.write(&instance_id, record);
                        self.gossip_effects(state, effects);
                    }
                }
                Effect::Publish(change) => {
                    tracing::info!(
                        change = change.kind.as_str(),
                        service = %change.instance.service,
                        instance = %change.instance.instance_id,
                        health = %change.instance.health,
                        "catalog changed"
                    );
                    self.metrics.published(&change);
                    let overflowed = state.watchers.publish(&change);
                    if overflowed > 0 {
                        tracing::warn!(overflowed, "dropped watchers whose queue overflowed");
                    }
                    self.metrics.set_watchers(state.watchers.len());
                }
                Effect::Monitor {
                    instance_id,
                    service,
                    address,
                    health_service,
                } => {
                    if let Some(old) = state.monitors.remove(&instance_id) {
                        old.stop.cancel();
                    }
                    state.next_epoch += 1;
                    let epoch = state.next_epoch;
                    let stop = self.shutdown.child_token();
                    let connector = self.tls.connector(&service);
                    tokio::spawn(monitor::monitor(
                        self.clone(),
                        instance_id.clone(),
                        Target {
                            address,
                            connector,
                            health_service,
                        },
                        epoch,
                        self.probe,
                        stop.clone(),
                    ));
                    state
                        .monitors
                        .insert(instance_id, MonitorHandle { epoch, stop });
                }
                Effect::StopMonitor { instance_id } => {
                    if let Some(old) = state.monitors.remove(&instance_id) {
                        old.stop.cancel();
                    }
                }
            }
        }
    }
}

/// Why a traffic policy was not set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyRefused {
    /// The caller may not (PERMISSION_DENIED).
    #[error(transparent)]
    Denied(#[from] Denied),
    /// The policy names a version no instance runs (FAILED_PRECONDITION).
    #[error(transparent)]
    Invalid(#[from] InvalidPolicy),
}
