//! The catalog of registered instances as a plain state machine: calls take
//! an event and the current time, change the catalog and return the
//! [`Effect`]s the async shell must carry out (publish a change, start or
//! stop monitoring). No I/O, no clock, no tasks: tested exhaustively below.
//!
//! Every record carries its own [`RecordVersion`], a hybrid logical clock
//! reading stamped by this node, so that catalogs can later be merged across
//! registry nodes by gossip without a global counter.

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::model::registry::{Change, ChangeKind, Health, Instance, RecordVersion, Registration};
use crate::registry::health::{HealthPolicy, HealthTracker, ProbeOutcome};

/// What the shell must do after a catalog change.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Tell the watchers of the instance's service.
    Publish(Change),
    /// Start monitoring the instance's health at this address (replacing any
    /// monitor it had).
    Monitor {
        /// The instance.
        instance_id: String,
        /// Its service: the identity it must prove when probed.
        service: String,
        /// The address to probe.
        address: String,
        /// The grpc.health.v1 service name to ask about.
        health_service: String,
    },
    /// Stop monitoring the instance.
    StopMonitor {
        /// The instance.
        instance_id: String,
    },
}

/// One catalog record and its health state machine.
#[derive(Debug, Clone)]
struct Entry {
    instance: Instance,
    health: HealthTracker,
}

impl Entry {
    /// The record as watchers and listers see it.
    fn view(&self) -> Instance {
        let mut instance = self.instance.clone();
        instance.health = self.health.health();
        instance.health_since = self.health.since();
        instance.last_check = self.health.last_check();
        instance.last_error = self.health.last_error().map(str::to_owned);
        instance
    }
}

/// Whether `registration` asks for exactly what `instance` already has.
fn same_details(instance: &Instance, registration: &Registration) -> bool {
    instance.service == registration.service
        && instance.address == registration.address
        && instance.version == registration.version
        && instance.metadata == registration.metadata
        && instance.requires == registration.requires
}

/// The registry's catalog: every registered instance, by id.
#[derive(Debug)]
pub struct Catalog {
    node_id: String,
    policy: HealthPolicy,
    entries: HashMap<String, Entry>,
    last_counter: u64,
}

impl Catalog {
    /// An empty catalog kept by the registry node `node_id`.
    pub fn new(node_id: impl Into<String>, policy: HealthPolicy) -> Self {
        Catalog {
            node_id: node_id.into(),
            policy,
            entries: HashMap::new(),
            last_counter: 0,
        }
    }

    /// The id of the registry node that keeps this catalog.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// How many instances are registered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no instance is registered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The next version for a record whose previous version is `previous`:
    /// past the wall clock, past the previous version, past anything this
    /// node stamped before.
    fn next_version(&mut self, previous: Option<&RecordVersion>, now: SystemTime) -> RecordVersion {
        let wall = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let floor = previous.map_or(0, |v| v.counter).max(self.last_counter);
        let counter = wall.max(floor + 1);
        self.last_counter = counter;
        RecordVersion {
            counter,
            origin: self.node_id.clone(),
        }
    }

    /// Registers an instance, or updates it when its id is registered already.
    /// `generate_id` is called for a registration without an instance id.
    pub fn register(
        &mut self,
        registration: Registration,
        now: SystemTime,
        generate_id: impl FnOnce() -> String,
    ) -> (Instance, Vec<Effect>) {
        let instance_id = registration.instance_id.clone().unwrap_or_else(generate_id);
        self.register_as(registration, instance_id, now)
    }

    fn register_as(
        &mut self,
        registration: Registration,
        instance_id: String,
        now: SystemTime,
    ) -> (Instance, Vec<Effect>) {
        // Re-registering with the same details (the SDK's refresh) changes
        // nothing and copies nothing but the answer.
        if let Some(entry) = self.entries.get(&instance_id)
            && same_details(&entry.instance, &registration)
        {
            return (entry.view(), Vec::new());
        }
        let previous = self.entries.get(&instance_id).map(|e| e.instance.clone());
        let health_service = registration.health_service();
        match previous {
            None => {
                let version = self.next_version(None, now);
                let entry = Entry {
                    instance: Instance {
                        service: registration.service,
                        instance_id: instance_id.clone(),
                        address: registration.address.clone(),
                        version: registration.version,
                        metadata: registration.metadata,
                        requires: registration.requires,
                        health: Health::Unknown,
                        record_version: version,
                        registered_at: now,
                        last_check: None,
                        health_since: now,
                        last_error: None,
                    },
                    health: HealthTracker::new(now),
                };
                let view = entry.view();
                self.entries.insert(instance_id.clone(), entry);
                let effects = vec![
                    Effect::Publish(Change {
                        kind: ChangeKind::Added,
                        instance: view.clone(),
                    }),
                    Effect::Monitor {
                        instance_id,
                        service: view.service.clone(),
                        address: registration.address,
                        health_service,
                    },
                ];
                (view, effects)
            }
            Some(old) => {
                let mut effects = Vec::new();
                if old.service != registration.service {
                    // Moving to another service: watchers of the old one see
                    // it leave, watchers of the new one see it arrive.
                    let removed = self.remove(&instance_id, now);
                    effects.extend(
                        removed
                            .into_iter()
                            .filter(|e| matches!(e, Effect::Publish(_))),
                    );
                    let (view, added) = self.register_as(registration, instance_id, now);
                    effects.extend(added);
                    return (view, effects);
                }
                let version = self.next_version(Some(&old.record_version), now);
                let old_health_service = old
                    .metadata
                    .get(crate::model::registry::HEALTH_SERVICE_METADATA)
                    .cloned()
                    .unwrap_or_default();
                let address_changed =
                    old.address != registration.address || old_health_service != health_service;
                let Some(entry) = self.entries.get_mut(&instance_id) else {
                    return (old, effects);
                };
                entry.instance.address = registration.address.clone();
                entry.instance.version = registration.version;
                entry.instance.metadata = registration.metadata;
                entry.instance.requires = registration.requires;
                entry.instance.record_version = version;
                if address_changed {
                    // A new address is a new endpoint: unverified until checked.
                    entry.health = HealthTracker::new(now);
                }
                let view = entry.view();
                effects.push(Effect::Publish(Change {
                    kind: ChangeKind::Updated,
                    instance: view.clone(),
                }));
                if address_changed {
                    effects.push(Effect::Monitor {
                        instance_id,
                        service: old.service.clone(),
                        address: registration.address,
                        health_service,
                    });
                }
                (view, effects)
            }
        }
    }

    /// The service `instance_id` is registered as, if it is.
    pub fn service_of(&self, instance_id: &str) -> Option<&str> {
        self.entries
            .get(instance_id)
            .map(|entry| entry.instance.service.as_str())
    }

    /// Removes an instance; returns whether it was registered.
    pub fn deregister(&mut self, instance_id: &str, now: SystemTime) -> (bool, Vec<Effect>) {
        let effects = self.remove(instance_id, now);
        (!effects.is_empty(), effects)
    }

    fn remove(&mut self, instance_id: &str, now: SystemTime) -> Vec<Effect> {
        let Some(entry) = self.entries.remove(instance_id) else {
            return Vec::new();
        };
        let mut view = entry.view();
        view.record_version = self.next_version(Some(&entry.instance.record_version), now);
        vec![
            Effect::Publish(Change {
                kind: ChangeKind::Removed,
                instance: view,
            }),
            Effect::StopMonitor {
                instance_id: instance_id.to_owned(),
            },
        ]
    }

    /// Takes in a health probe's outcome for an instance.
    pub fn observe(
        &mut self,
        instance_id: &str,
        outcome: ProbeOutcome,
        now: SystemTime,
    ) -> Vec<Effect> {
        let policy = self.policy;
        let Some(entry) = self.entries.get_mut(instance_id) else {
            return Vec::new();
        };
        if entry.health.observe(outcome, now, &policy).is_none() {
            return Vec::new();
        }
        let previous = entry.instance.record_version.clone();
        let version = self.next_version(Some(&previous), now);
        let Some(entry) = self.entries.get_mut(instance_id) else {
            return Vec::new();
        };
        entry.instance.record_version = version;
        vec![Effect::Publish(Change {
            kind: ChangeKind::HealthChanged,
            instance: entry.view(),
        })]
    }

    /// Evicts the instances that have been down for longer than the grace.
    pub fn tick(&mut self, now: SystemTime) -> Vec<Effect> {
        let expired: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.health.should_evict(now, &self.policy))
            .map(|(id, _)| id.clone())
            .collect();
        expired.iter().flat_map(|id| self.remove(id, now)).collect()
    }

    /// The instances of `service` (or of every service when `None`), ordered
    /// by service then id; only healthy ones unless `include_unhealthy`.
    pub fn list(&self, service: Option<&str>, include_unhealthy: bool) -> Vec<Instance> {
        let mut found: BTreeMap<(&str, &str), Instance> = BTreeMap::new();
        for (id, entry) in &self.entries {
            if service.is_some_and(|s| s != entry.instance.service) {
                continue;
            }
            if !include_unhealthy && !entry.health.health().is_healthy() {
                continue;
            }
            found.insert((&entry.instance.service, id), entry.view());
        }
        found.into_values().collect()
    }

    /// Every instance of the given services (all services when empty),
    /// whatever its health: what a new watcher starts from.
    pub fn snapshot(&self, services: &[String]) -> Vec<Instance> {
        if services.is_empty() {
            return self.list(None, true);
        }
        let mut out = Vec::new();
        for service in services {
            out.extend(self.list(Some(service), true));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const POLICY: HealthPolicy = HealthPolicy {
        failure_threshold: 2,
        eviction_grace: Duration::from_secs(10),
    };

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn reg(service: &str, id: &str, address: &str) -> Registration {
        Registration {
            service: service.into(),
            instance_id: Some(id.into()),
            address: address.into(),
            version: "1".into(),
            metadata: BTreeMap::new(),
            requires: vec![],
        }
    }

    fn kinds(effects: &[Effect]) -> Vec<String> {
        effects
            .iter()
            .map(|e| match e {
                Effect::Publish(c) => format!(
                    "{}:{}:{}",
                    c.kind.as_str(),
                    c.instance.instance_id,
                    c.instance.health
                ),
                Effect::Monitor {
                    instance_id,
                    address,
                    ..
                } => format!("monitor:{instance_id}:{address}"),
                Effect::StopMonitor { instance_id } => format!("stop:{instance_id}"),
            })
            .collect()
    }

    #[test]
    fn register_publishes_added_and_starts_monitoring() {
        let mut c = Catalog::new("n1", POLICY);
        let (instance, effects) = c.register(reg("log", "a", "h:1"), at(1), || unreachable!());
        assert_eq!(instance.health, Health::Unknown);
        assert_eq!(kinds(&effects), ["ADDED:a:UNKNOWN", "monitor:a:h:1"]);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn missing_id_is_generated() {
        let mut c = Catalog::new("n1", POLICY);
        let mut r = reg("log", "x", "h:1");
        r.instance_id = None;
        let (instance, _) = c.register(r, at(1), || "generated".into());
        assert_eq!(instance.instance_id, "generated");
    }

    #[test]
    fn re_registering_is_idempotent_and_updates_bump_the_version() {
        let mut c = Catalog::new("n1", POLICY);
        let (first, _) = c.register(reg("log", "a", "h:1"), at(1), || unreachable!());
        let (same, effects) = c.register(reg("log", "a", "h:1"), at(2), || unreachable!());
        assert!(effects.is_empty());
        assert_eq!(same.record_version, first.record_version);
        let mut changed = reg("log", "a", "h:1");
        changed.version = "2".into();
        let (updated, effects) = c.register(changed, at(3), || unreachable!());
        assert_eq!(kinds(&effects), ["UPDATED:a:UNKNOWN"]);
        assert!(updated.record_version > first.record_version);
        let (moved, effects) = c.register(reg("log", "a", "h:2"), at(4), || unreachable!());
        assert_eq!(kinds(&effects), ["UPDATED:a:UNKNOWN", "monitor:a:h:2"]);
        assert_eq!(moved.address, "h:2");
    }

    #[test]
    fn changing_service_removes_then_adds() {
        let mut c = Catalog::new("n1", POLICY);
        c.register(reg("log", "a", "h:1"), at(1), || unreachable!());
        let (_, effects) = c.register(reg("grading", "a", "h:1"), at(2), || unreachable!());
        assert_eq!(
            kinds(&effects),
            ["REMOVED:a:UNKNOWN", "ADDED:a:UNKNOWN", "monitor:a:h:1"]
        );
        assert_eq!(c.list(Some("grading"), true).len(), 1);
        assert!(c.list(Some("log"), true).is_empty());
    }

    #[test]
    fn deregister_removes_and_stops_monitoring() {
        let mut c = Catalog::new("n1", POLICY);
        c.register(reg("log", "a", "h:1"), at(1), || unreachable!());
        let (removed, effects) = c.deregister("a", at(2));
        assert!(removed);
        assert_eq!(kinds(&effects), ["REMOVED:a:UNKNOWN", "stop:a"]);
        let (removed, effects) = c.deregister("a", at(3));
        assert!(!removed);
        assert!(effects.is_empty());
    }

    #[test]
    fn health_changes_are_published_once_and_listing_filters_unhealthy() {
        let mut c = Catalog::new("n1", POLICY);
        c.register(reg("log", "a", "h:1"), at(1), || unreachable!());
        c.register(reg("log", "b", "h:2"), at(1), || unreachable!());
        assert!(c.list(Some("log"), false).is_empty());
        assert_eq!(
            kinds(&c.observe("a", ProbeOutcome::Serving, at(2))),
            ["HEALTH_CHANGED:a:SERVING"]
        );
        assert!(c.observe("a", ProbeOutcome::Serving, at(3)).is_empty());
        let healthy: Vec<_> = c
            .list(Some("log"), false)
            .into_iter()
            .map(|i| i.instance_id)
            .collect();
        assert_eq!(healthy, ["a"]);
        assert_eq!(c.list(Some("log"), true).len(), 2);
        let down = c.observe("a", ProbeOutcome::Disconnected("refused".into()), at(4));
        assert_eq!(kinds(&down), ["HEALTH_CHANGED:a:UNREACHABLE"]);
        let Effect::Publish(change) = &down[0] else {
            panic!()
        };
        assert_eq!(change.instance.last_error.as_deref(), Some("refused"));
        assert!(
            c.observe("unknown", ProbeOutcome::Serving, at(4))
                .is_empty()
        );
    }

    #[test]
    fn instances_down_past_the_grace_are_evicted() {
        let mut c = Catalog::new("n1", POLICY);
        c.register(reg("log", "a", "h:1"), at(0), || unreachable!());
        c.observe("a", ProbeOutcome::Serving, at(1));
        c.observe("a", ProbeOutcome::Disconnected("reset".into()), at(2));
        assert!(c.tick(at(12)).is_empty());
        assert_eq!(kinds(&c.tick(at(13))), ["REMOVED:a:UNREACHABLE", "stop:a"]);
        assert!(c.is_empty());
    }

    #[test]
    fn versions_increase_per_record_even_when_the_clock_stands_still_or_steps_back() {
        let mut c = Catalog::new("n1", POLICY);
        let (a1, _) = c.register(reg("log", "a", "h:1"), at(5), || unreachable!());
        let (b1, _) = c.register(reg("log", "b", "h:1"), at(5), || unreachable!());
        assert!(b1.record_version.counter > a1.record_version.counter);
        let mut r = reg("log", "a", "h:1");
        r.version = "2".into();
        let (a2, _) = c.register(r, at(1), || unreachable!());
        assert!(a2.record_version > a1.record_version);
        assert_eq!(a2.record_version.origin, "n1");
    }

    #[test]
    fn snapshot_covers_requested_services_whatever_their_health() {
        let mut c = Catalog::new("n1", POLICY);
        c.register(reg("log", "a", "h:1"), at(0), || unreachable!());
        c.register(reg("grading", "b", "h:2"), at(0), || unreachable!());
        c.register(reg("portal", "c", "h:3"), at(0), || unreachable!());
        let ids = |v: Vec<Instance>| v.into_iter().map(|i| i.instance_id).collect::<Vec<_>>();
        assert_eq!(
            ids(c.snapshot(&["log".into(), "portal".into()])),
            ["a", "c"]
        );
        assert_eq!(ids(c.snapshot(&[])), ["b", "a", "c"]);
    }
}
