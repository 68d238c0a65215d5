//! The catalog of registered instances as a plain state machine: calls take
//! an event and the current time, change the catalog and return the
//! [`Effect`]s the async shell must carry out (publish a change, start or
//! stop monitoring). No I/O, no clock, no tasks: tested exhaustively below.
//!
//! Every record carries its own [`RecordVersion`], a hybrid logical clock
//! reading stamped by this node, so that catalogs merge across registry
//! nodes without a global counter. This node *owns* (and monitors) the
//! instances registered through it; the best record other nodes hold of
//! each instance comes in through [`Catalog::apply_remote`]. What lists and
//! watchers see is the merge: per instance, the record of the highest
//! version, where a removal is a record too (so an older record held
//! elsewhere cannot come back). A newer record elsewhere supersedes this
//! node's own: it stops monitoring the instance and drops its record.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::model::registry::{
    CatalogRecord, Change, ChangeKind, Health, Instance, RecordVersion, Registration,
};
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
    /// Tell the other registry nodes this node's record of the instance
    /// (`None`: this node holds none any more).
    Replicate {
        /// The instance.
        instance_id: String,
        /// This node's record.
        record: Option<CatalogRecord>,
    },
}

/// How long this node keeps the mark that it removed an instance, so that
/// every node learns of the removal before the mark goes.
pub const REMOVAL_GRACE: Duration = Duration::from_secs(300);

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

/// The record the merged view of an instance shows, borrowed.
#[derive(Debug, Clone, Copy)]
enum Winner<'a> {
    /// This node's own record, with its live health.
    Own(&'a Entry),
    /// The best record of the other nodes.
    Remote(&'a Instance),
}

impl<'a> Winner<'a> {
    fn service(&self) -> &'a str {
        match self {
            Winner::Own(entry) => &entry.instance.service,
            Winner::Remote(instance) => &instance.service,
        }
    }

    fn health(&self) -> Health {
        match self {
            Winner::Own(entry) => entry.health.health(),
            Winner::Remote(instance) => instance.health,
        }
    }

    /// The record as watchers and listers see it.
    fn view(&self) -> Instance {
        match self {
            Winner::Own(entry) => entry.view(),
            Winner::Remote(instance) => (*instance).clone(),
        }
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
    /// The instances this node owns.
    entries: HashMap<String, Entry>,
    /// The instances this node removed: the removal's version, and when.
    removed: HashMap<String, (RecordVersion, SystemTime)>,
    /// The best record other nodes hold of each instance.
    remote: HashMap<String, CatalogRecord>,
    last_counter: u64,
    /// Whether other registry nodes take this node's records: without
    /// peers, no [`Effect::Replicate`] is made (nor its copy of a record).
    replicated: bool,
}

impl Catalog {
    /// An empty catalog kept by the registry node `node_id`.
    pub fn new(node_id: impl Into<String>, policy: HealthPolicy) -> Self {
        Catalog {
            node_id: node_id.into(),
            policy,
            entries: HashMap::new(),
            removed: HashMap::new(),
            remote: HashMap::new(),
            last_counter: 0,
            replicated: false,
        }
    }

    /// From now on, every change of this node's records comes with an
    /// [`Effect::Replicate`] for the other registry nodes.
    pub fn replicate_to_peers(&mut self) {
        self.replicated = true;
    }

    /// The effect that tells the peers this node's record of `instance_id`
    /// (made by `record`), when there are peers.
    fn replicate(
        &self,
        instance_id: &str,
        record: impl FnOnce() -> Option<CatalogRecord>,
    ) -> Option<Effect> {
        self.replicated.then(|| Effect::Replicate {
            instance_id: instance_id.to_owned(),
            record: record(),
        })
    }

    /// The id of the registry node that keeps this catalog.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// How many instances are registered (through any node).
    pub fn len(&self) -> usize {
        self.ids().filter(|id| self.merged(id).is_some()).count()
    }

    /// Whether no instance is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every instance id this node knows something of, each once.
    fn ids(&self) -> impl Iterator<Item = &String> {
        let remote_only = self
            .remote
            .keys()
            .filter(|id| !self.entries.contains_key(*id));
        self.entries.keys().chain(remote_only)
    }

    /// Which record the merged view of `id` shows: the one of the highest
    /// version among this node's own (or its removal mark) and the best of
    /// the other nodes'; `None` when that is a removal.
    fn winner(&self, id: &str) -> Option<Winner<'_>> {
        let own = self
            .entries
            .get(id)
            .map(|entry| &entry.instance.record_version)
            .or_else(|| self.removed.get(id).map(|(version, _)| version));
        match (own, self.remote.get(id)) {
            (Some(own), Some(remote)) if remote.version() > own => {
                remote.instance().map(Winner::Remote)
            }
            // This node's own record (a removal mark: none).
            (Some(_), _) => self.entries.get(id).map(Winner::Own),
            (None, Some(remote)) => remote.instance().map(Winner::Remote),
            (None, None) => None,
        }
    }

    /// The instance as lists and watchers see it (see [`Catalog::winner`]).
    fn merged(&self, id: &str) -> Option<Instance> {
        self.winner(id).map(|winner| winner.view())
    }

    /// The version of the newest record of `id`, whatever it says.
    fn newest_version(&self, id: &str) -> Option<RecordVersion> {
        let own = self
            .entries
            .get(id)
            .map(|e| e.instance.record_version.clone())
            .or_else(|| self.removed.get(id).map(|(v, _)| v.clone()));
        let remote = self.remote.get(id).map(|r| r.version().clone());
        own.max(remote)
    }

    /// Runs a change of the instance `id`, then publishes what it changed
    /// in the merged view (the change's own publications are replaced).
    fn changing(&mut self, id: &str, change: impl FnOnce(&mut Self) -> Vec<Effect>) -> Vec<Effect> {
        let before = self.merged(id);
        let others: Vec<Effect> = change(self)
            .into_iter()
            .filter(|e| !matches!(e, Effect::Publish(_)))
            .collect();
        let after = self.merged(id);
        let removal = self.removed.get(id).map(|(v, _)| v.clone());
        let mut effects = publications(before, after, removal);
        effects.extend(others);
        effects
    }

    /// Takes in the best record the other nodes hold of `instance_id`
    /// (`None`: they hold none).
    pub fn apply_remote(
        &mut self,
        instance_id: &str,
        best: Option<CatalogRecord>,
        _now: SystemTime,
    ) -> Vec<Effect> {
        if self.remote.get(instance_id) == best.as_ref() {
            return Vec::new();
        }
        let removal = best
            .as_ref()
            .filter(|r| r.instance().is_none())
            .map(|r| r.version().clone());
        let before = self.merged(instance_id);
        match best {
            Some(record) => {
                self.remote.insert(instance_id.to_owned(), record);
            }
            None => {
                self.remote.remove(instance_id);
            }
        }
        let mut others = Vec::new();
        let superseded = match (self.entries.get(instance_id), self.remote.get(instance_id)) {
            (Some(entry), Some(remote)) => remote.version() > &entry.instance.record_version,
            _ => false,
        };
        if superseded {
            self.entries.remove(instance_id);
            others.push(Effect::StopMonitor {
                instance_id: instance_id.to_owned(),
            });
            others.extend(self.replicate(instance_id, || None));
        }
        let after = self.merged(instance_id);
        let mut effects = publications(before, after, removal);
        effects.extend(others);
        effects
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

    /// A version for a record other than an instance's (a traffic policy)
    /// whose previous version is `previous`, from the same clock.
    pub fn stamp(&mut self, previous: Option<&RecordVersion>, now: SystemTime) -> RecordVersion {
        self.next_version(previous, now)
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
        let mut instance = None;
        let effects = self.changing(&instance_id.clone(), |catalog| {
            let (registered, effects) = catalog.register_as(registration, instance_id, now);
            instance = Some(registered);
            effects
        });
        let instance = instance.expect("the change ran");
        (instance, effects)
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
                // Known from another node (this instance fails over to this
                // node): this node's record supersedes it, and keeps its
                // health while the address stays.
                let known = self
                    .remote
                    .get(&instance_id)
                    .and_then(CatalogRecord::instance)
                    .cloned();
                let newest = self.newest_version(&instance_id);
                let version = self.next_version(newest.as_ref(), now);
                self.removed.remove(&instance_id);
                let health = match &known {
                    Some(known) if known.address == registration.address => {
                        HealthTracker::continuing(known)
                    }
                    _ => HealthTracker::new(now),
                };
                let registered_at = known.as_ref().map_or(now, |k| k.registered_at);
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
                        registered_at,
                        last_check: None,
                        health_since: now,
                        last_error: None,
                    },
                    health,
                };
                let view = entry.view();
                self.entries.insert(instance_id.clone(), entry);
                let mut effects = vec![Effect::Monitor {
                    instance_id: instance_id.clone(),
                    service: view.service.clone(),
                    address: registration.address,
                    health_service,
                }];
                effects.extend(self.replicate(&instance_id, || {
                    Some(CatalogRecord::Live(Box::new(view.clone())))
                }));
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
                effects.extend(self.replicate(&instance_id, || {
                    Some(CatalogRecord::Live(Box::new(view.clone())))
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

    /// The service `instance_id` is registered as (through any node), if
    /// it is.
    pub fn service_of(&self, instance_id: &str) -> Option<String> {
        self.merged(instance_id).map(|instance| instance.service)
    }

    /// Removes an instance, wherever it registered; returns whether it was
    /// registered.
    pub fn deregister(&mut self, instance_id: &str, now: SystemTime) -> (bool, Vec<Effect>) {
        if self.merged(instance_id).is_none() {
            return (false, Vec::new());
        }
        let effects = self.changing(instance_id, |catalog| catalog.remove(instance_id, now));
        (true, effects)
    }

    /// Removes this node's record of `instance_id` (if it has one) and
    /// marks the removal, newer than any record of it.
    fn remove(&mut self, instance_id: &str, now: SystemTime) -> Vec<Effect> {
        let newest = self.newest_version(instance_id);
        let Some(newest) = newest else {
            return Vec::new();
        };
        let owned = self.entries.remove(instance_id).is_some();
        let version = self.next_version(Some(&newest), now);
        self.removed
            .insert(instance_id.to_owned(), (version.clone(), now));
        let mut effects: Vec<Effect> = self
            .replicate(instance_id, || Some(CatalogRecord::Removed(version)))
            .into_iter()
            .collect();
        if owned {
            effects.push(Effect::StopMonitor {
                instance_id: instance_id.to_owned(),
            });
        }
        effects
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
        let mut probed = entry.health.clone();
        if probed.observe(outcome, now, &policy).is_none() {
            entry.health = probed;
            return Vec::new();
        }
        self.changing(instance_id, |catalog| {
            let previous = catalog
                .entries
                .get(instance_id)
                .map(|e| e.instance.record_version.clone());
            let version = catalog.next_version(previous.as_ref(), now);
            let Some(entry) = catalog.entries.get_mut(instance_id) else {
                return Vec::new();
            };
            entry.health = probed;
            entry.instance.record_version = version;
            let entry = &catalog.entries[instance_id];
            catalog
                .replicate(instance_id, || {
                    Some(CatalogRecord::Live(Box::new(entry.view())))
                })
                .into_iter()
                .collect()
        })
    }

    /// Evicts the instances that have been down for longer than the grace,
    /// and drops the marks of removals older than [`REMOVAL_GRACE`].
    pub fn tick(&mut self, now: SystemTime) -> Vec<Effect> {
        let expired: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.health.should_evict(now, &self.policy))
            .map(|(id, _)| id.clone())
            .collect();
        let mut effects: Vec<Effect> = expired
            .iter()
            .flat_map(|id| self.changing(id, |catalog| catalog.remove(id, now)))
            .collect();
        let old_marks: Vec<String> = self
            .removed
            .iter()
            .filter(|(_, (_, at))| now.duration_since(*at).unwrap_or_default() >= REMOVAL_GRACE)
            .map(|(id, _)| id.clone())
            .collect();
        for id in old_marks {
            self.removed.remove(&id);
            effects.extend(self.replicate(&id, || None));
        }
        effects
    }

    /// The instances of `service` (or of every service when `None`), ordered
    /// by service then id; only healthy ones unless `include_unhealthy`.
    pub fn list(&self, service: Option<&str>, include_unhealthy: bool) -> Vec<Instance> {
        let mut found: BTreeMap<(&str, &str), Winner<'_>> = BTreeMap::new();
        for id in self.ids() {
            let Some(winner) = self.winner(id) else {
                continue;
            };
            if service.is_some_and(|s| s != winner.service()) {
                continue;
            }
            if !include_unhealthy && !winner.health().is_healthy() {
                continue;
            }
            found.insert((winner.service(), id), winner);
        }
        found.into_values().map(|winner| winner.view()).collect()
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

/// What watchers must be told when the merged view of an instance goes
/// from `before` to `after` (`removal`: the version of the removal, when
/// it is one).
fn publications(
    before: Option<Instance>,
    after: Option<Instance>,
    removal: Option<RecordVersion>,
) -> Vec<Effect> {
    let publish = |kind, instance| Effect::Publish(Change { kind, instance });
    match (before, after) {
        (None, None) => Vec::new(),
        (None, Some(after)) => vec![publish(ChangeKind::Added, after)],
        (Some(mut before), None) => {
            if let Some(removal) = removal.filter(|v| *v > before.record_version) {
                before.record_version = removal;
            }
            vec![publish(ChangeKind::Removed, before)]
        }
        (Some(before), Some(after)) if before.service != after.service => vec![
            publish(ChangeKind::Removed, before),
            publish(ChangeKind::Added, after),
        ],
        (Some(before), Some(after)) => {
            let same_details = before.address == after.address
                && before.version == after.version
                && before.metadata == after.metadata
                && before.requires == after.requires;
            if !same_details {
                vec![publish(ChangeKind::Updated, after)]
            } else if before.health != after.health {
                vec![publish(ChangeKind::HealthChanged, after)]
            } else {
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                Effect::Replicate { instance_id, .. } => format!("replicate:{instance_id}"),
            })
            .filter(|kind| !kind.starts_with("replicate:"))
            .collect()
    }

    fn remote(service: &str, id: &str, health: Health, counter: u64) -> CatalogRecord {
        let mut instance = Instance::for_test(service, id, health);
        instance.record_version = RecordVersion {
            counter,
            origin: "other".into(),
        };
        CatalogRecord::Live(Box::new(instance))
    }

    #[test]
    fn records_of_other_nodes_merge_by_version_and_supersede_this_nodes() {
        let mut c = Catalog::new("n1", POLICY);
        c.replicate_to_peers();
        // Another node's record appears: watchers see it added.
        let effects = c.apply_remote("a", Some(remote("log", "a", Health::Serving, 5)), at(1));
        assert_eq!(kinds(&effects), ["ADDED:a:SERVING"]);
        assert_eq!(c.list(Some("log"), false).len(), 1);
        assert_eq!(c.service_of("a").as_deref(), Some("log"));

        // The instance fails over to this node: its record supersedes the
        // other's, keeps the health, and is not announced as new.
        let mut r = reg("log", "a", "a:1");
        r.version = String::new();
        let (mine, effects) = c.register(r, at(2), || unreachable!());
        assert_eq!(mine.health, Health::Serving);
        assert!(mine.record_version.counter > 5);
        assert!(
            kinds(&effects).iter().all(|k| k.starts_with("monitor:")),
            "{effects:?}"
        );

        // A newer record elsewhere supersedes this node's: it stops
        // monitoring and drops its record.
        let newer = mine.record_version.counter + 10;
        let effects = c.apply_remote(
            "a",
            Some(remote("log", "a", Health::NotServing, newer)),
            at(3),
        );
        assert_eq!(kinds(&effects), ["HEALTH_CHANGED:a:NOT_SERVING", "stop:a"]);
        assert!(
            effects
                .iter()
                .any(|e| matches!(e, Effect::Replicate { record: None, .. }))
        );

        // Removed elsewhere: gone here, and an older record cannot bring it
        // back.
        let removal = CatalogRecord::Removed(RecordVersion {
            counter: newer + 1,
            origin: "other".into(),
        });
        let effects = c.apply_remote("a", Some(removal), at(4));
        assert_eq!(kinds(&effects), ["REMOVED:a:NOT_SERVING"]);
        assert!(c.is_empty());

        // Removed through this node while another owns it: a removal mark
        // newer than every record.
        c.apply_remote("b", Some(remote("log", "b", Health::Serving, 7)), at(5));
        let (removed, effects) = c.deregister("b", at(6));
        assert!(removed);
        assert_eq!(kinds(&effects), ["REMOVED:b:SERVING"]);
        assert!(effects.iter().any(|e| matches!(
            e,
            Effect::Replicate {
                record: Some(CatalogRecord::Removed(_)),
                ..
            }
        )));
        assert!(
            c.apply_remote("b", Some(remote("log", "b", Health::Serving, 7)), at(7))
                .is_empty()
        );
        assert!(c.is_empty());
    }

    #[test]
    fn register_publishes_added_and_starts_monitoring() {
        let mut c = Catalog::new("n1", POLICY);
        c.replicate_to_peers();
        let (instance, effects) = c.register(reg("log", "a", "h:1"), at(1), || unreachable!());
        assert_eq!(instance.health, Health::Unknown);
        assert_eq!(kinds(&effects), ["ADDED:a:UNKNOWN", "monitor:a:h:1"]);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn missing_id_is_generated() {
        let mut c = Catalog::new("n1", POLICY);
        c.replicate_to_peers();
        let mut r = reg("log", "x", "h:1");
        r.instance_id = None;
        let (instance, _) = c.register(r, at(1), || "generated".into());
        assert_eq!(instance.instance_id, "generated");
    }

    #[test]
    fn re_registering_is_idempotent_and_updates_bump_the_version() {
        let mut c = Catalog::new("n1", POLICY);
        c.replicate_to_peers();
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
        c.replicate_to_peers();
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
        c.replicate_to_peers();
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
        c.replicate_to_peers();
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
        c.replicate_to_peers();
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
        c.replicate_to_peers();
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
        c.replicate_to_peers();
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
