//! What the operations view knows of every instance, as a state machine
//! fed with events and time (no I/O): the registry's watch (a snapshot,
//! then changes) gives the instances and their health, and each change of
//! health is kept as history; the sampler's readings of each instance's
//! counters are kept as a short series, from which rates, error ratios and
//! the p99 latency are derived.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, SystemTime};

use crate::mesh::metrics::scrape::{Counters, quantile};
use crate::model::registry::{ChangeKind, Health, Instance, WatchUpdate};
use crate::model::traffic::{PolicyRecord, TrafficPolicy};

/// Health changes kept per instance.
pub const HISTORY: usize = 20;
/// Samples kept per instance (at one every 5 s: five minutes).
pub const SAMPLES: usize = 60;
/// Instances kept at most (removed ones go first, then the oldest).
pub const MAX_INSTANCES: usize = 512;
/// How long a removed instance stays on the page, marked as removed.
pub const REMOVED_KEPT: Duration = Duration::from_secs(600);

/// The key of an instance: its service and id.
pub type InstanceKey = (String, String);

/// One change of an instance's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthChange {
    /// When it changed.
    pub at: SystemTime,
    /// What it changed to.
    pub health: Health,
}

/// One reading of an instance's counters.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// When it was read.
    pub at: SystemTime,
    /// What it read.
    pub counters: Counters,
}

/// What one interval between two samples saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// Requests a second.
    pub rate: f64,
    /// The share of requests that failed, 0 to 1 (0 without requests).
    pub error_ratio: f64,
    /// The 99th percentile latency, when there were requests.
    pub p99: Option<Duration>,
}

/// Everything known of one instance.
#[derive(Debug, Clone)]
pub struct Tracked {
    /// The registry's record, as last seen.
    pub instance: Instance,
    /// Health changes, oldest first.
    pub history: VecDeque<HealthChange>,
    /// Samples, oldest first.
    pub samples: VecDeque<Sample>,
    /// When the registry removed it, if it did.
    pub removed: Option<SystemTime>,
}

impl Tracked {
    fn new(instance: Instance) -> Self {
        let mut history = VecDeque::new();
        history.push_back(HealthChange {
            at: instance.health_since,
            health: instance.health,
        });
        Tracked {
            instance,
            history,
            samples: VecDeque::new(),
            removed: None,
        }
    }

    /// Takes the newest record, noting a change of health.
    fn update(&mut self, instance: Instance, now: SystemTime) {
        if instance.health != self.instance.health {
            let at = instance.health_since.min(now);
            self.history.push_back(HealthChange {
                at,
                health: instance.health,
            });
            while self.history.len() > HISTORY {
                self.history.pop_front();
            }
        }
        self.instance = instance;
        self.removed = None;
    }

    /// The figures of each interval between consecutive samples, oldest first.
    pub fn intervals(&self) -> Vec<Interval> {
        self.samples
            .iter()
            .zip(self.samples.iter().skip(1))
            .filter_map(|(earlier, later)| interval(earlier, later))
            .collect()
    }

    /// The figures over every sample kept (the last few minutes).
    pub fn recent(&self) -> Option<Interval> {
        interval(self.samples.front()?, self.samples.back()?)
    }
}

/// The figures between two samples.
fn interval(earlier: &Sample, later: &Sample) -> Option<Interval> {
    let seconds = later.at.duration_since(earlier.at).ok()?.as_secs_f64();
    if seconds <= 0.0 {
        return None;
    }
    let done = later.counters.since(&earlier.counters);
    Some(Interval {
        rate: done.requests / seconds,
        error_ratio: done.error_ratio(),
        p99: quantile(&done.buckets, 0.99),
    })
}

/// The operations view's state.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    instances: BTreeMap<InstanceKey, Tracked>,
    /// The traffic policies set, by service.
    policies: BTreeMap<String, PolicyRecord>,
    /// Whether a snapshot has arrived since the watch (re)opened.
    live: bool,
}

impl Fleet {
    /// Whether the view follows the registry now.
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// The watch broke: what is known stays, marked as not live.
    pub fn lost(&mut self) {
        self.live = false;
    }

    /// Applies one message of the registry's watch at `now`.
    pub fn apply(&mut self, update: WatchUpdate, now: SystemTime) {
        match update {
            WatchUpdate::Snapshot {
                instances,
                catching_up,
                policies,
                ..
            } => {
                // A node still catching up may lack policies that exist.
                if !catching_up {
                    self.policies.clear();
                }
                for record in policies {
                    self.set_policy(record);
                }
                let present: Vec<InstanceKey> = instances.iter().map(key_of).collect();
                for instance in instances {
                    self.upsert(instance, now);
                }
                // A node still catching up may lack instances that exist.
                if !catching_up {
                    for (key, tracked) in &mut self.instances {
                        if !present.contains(key) && tracked.removed.is_none() {
                            tracked.removed = Some(now);
                        }
                    }
                }
                self.live = true;
            }
            WatchUpdate::Change(change) => match change.kind {
                ChangeKind::Removed => {
                    if let Some(tracked) = self.instances.get_mut(&key_of(&change.instance)) {
                        tracked.removed = Some(now);
                    }
                }
                _ => self.upsert(change.instance, now),
            },
            WatchUpdate::Policy(record) => self.set_policy(*record),
        }
        self.prune(now);
    }

    fn set_policy(&mut self, record: PolicyRecord) {
        if record.policy == TrafficPolicy::Equal {
            self.policies.remove(&record.service);
        } else {
            self.policies.insert(record.service.clone(), record);
        }
    }

    /// The traffic policies set (other than the default), by service.
    pub fn policies(&self) -> impl Iterator<Item = &PolicyRecord> {
        self.policies.values()
    }

    /// The traffic policy of `service`.
    pub fn policy(&self, service: &str) -> &TrafficPolicy {
        self.policies
            .get(service)
            .map_or(&TrafficPolicy::Equal, |r| &r.policy)
    }

    fn upsert(&mut self, instance: Instance, now: SystemTime) {
        match self.instances.get_mut(&key_of(&instance)) {
            Some(tracked) => tracked.update(instance, now),
            None => {
                self.instances
                    .insert(key_of(&instance), Tracked::new(instance));
            }
        }
    }

    /// Forgets instances removed long ago, and the oldest beyond the bound.
    fn prune(&mut self, now: SystemTime) {
        self.instances.retain(|_, tracked| {
            tracked
                .removed
                .is_none_or(|at| now.duration_since(at).unwrap_or_default() < REMOVED_KEPT)
        });
        while self.instances.len() > MAX_INSTANCES {
            let oldest = self
                .instances
                .iter()
                .min_by_key(|(_, t)| (t.removed.is_none(), t.instance.registered_at))
                .map(|(key, _)| key.clone());
            match oldest {
                Some(key) => self.instances.remove(&key),
                None => break,
            };
        }
    }

    /// The instances to sample now: (key, address) of those not removed.
    pub fn targets(&self) -> Vec<(InstanceKey, String)> {
        self.instances
            .iter()
            .filter(|(_, t)| t.removed.is_none())
            .map(|(key, t)| (key.clone(), t.instance.address.clone()))
            .collect()
    }

    /// Keeps a reading of the counters of `key`.
    pub fn sampled(&mut self, key: &InstanceKey, sample: Sample) {
        if let Some(tracked) = self.instances.get_mut(key) {
            tracked.samples.push_back(sample);
            while tracked.samples.len() > SAMPLES {
                tracked.samples.pop_front();
            }
        }
    }

    /// Every instance, by service and id.
    pub fn instances(&self) -> impl Iterator<Item = &Tracked> {
        self.instances.values()
    }
}

fn key_of(instance: &Instance) -> InstanceKey {
    (instance.service.clone(), instance.instance_id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::registry::Change;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + seconds)
    }

    fn instance(id: &str, health: Health, since: u64) -> Instance {
        let mut instance = Instance::for_test("grading", id, health);
        instance.health_since = at(since);
        instance
    }

    fn change(kind: ChangeKind, instance: Instance) -> WatchUpdate {
        WatchUpdate::Change(Box::new(Change { kind, instance }))
    }

    fn snapshot(instances: Vec<Instance>) -> WatchUpdate {
        WatchUpdate::Snapshot {
            instances,
            registry_node: "r".into(),
            catching_up: false,
            policies: vec![],
        }
    }

    #[test]
    fn health_changes_are_kept_as_history_and_removals_marked() {
        let mut fleet = Fleet::default();
        fleet.apply(snapshot(vec![instance("a", Health::Serving, 0)]), at(1));
        assert!(fleet.is_live());
        fleet.apply(
            change(
                ChangeKind::HealthChanged,
                instance("a", Health::Unreachable, 10),
            ),
            at(10),
        );
        fleet.apply(
            change(
                ChangeKind::HealthChanged,
                instance("a", Health::Serving, 25),
            ),
            at(25),
        );
        // The same health again (an update of metadata) is no change.
        fleet.apply(
            change(ChangeKind::Updated, instance("a", Health::Serving, 25)),
            at(30),
        );
        let tracked = fleet.instances().next().unwrap();
        let history: Vec<(SystemTime, Health)> =
            tracked.history.iter().map(|h| (h.at, h.health)).collect();
        assert_eq!(
            history,
            [
                (at(0), Health::Serving),
                (at(10), Health::Unreachable),
                (at(25), Health::Serving)
            ]
        );
        fleet.apply(
            change(ChangeKind::Removed, instance("a", Health::Serving, 25)),
            at(40),
        );
        assert_eq!(fleet.instances().next().unwrap().removed, Some(at(40)));
        assert!(
            fleet.targets().is_empty(),
            "a removed instance is not sampled"
        );
        fleet.apply(snapshot(vec![]), at(40) + REMOVED_KEPT);
        assert_eq!(fleet.instances().count(), 0, "forgotten after a while");
    }

    #[test]
    fn a_snapshot_from_a_node_catching_up_removes_nothing() {
        let mut fleet = Fleet::default();
        fleet.apply(snapshot(vec![instance("a", Health::Serving, 0)]), at(1));
        fleet.apply(
            WatchUpdate::Snapshot {
                instances: vec![],
                registry_node: "r2".into(),
                catching_up: true,
                policies: vec![],
            },
            at(2),
        );
        assert_eq!(fleet.instances().next().unwrap().removed, None);
    }

    #[test]
    fn rates_errors_and_p99_come_from_the_differences_of_samples() {
        let mut fleet = Fleet::default();
        fleet.apply(snapshot(vec![instance("a", Health::Serving, 0)]), at(0));
        let key = ("grading".to_owned(), "a".to_owned());
        let reading = |requests: f64, errors: f64, fast: f64| Counters {
            requests,
            errors,
            buckets: vec![(0.01, fast), (0.1, requests), (f64::INFINITY, requests)],
        };
        fleet.sampled(
            &key,
            Sample {
                at: at(0),
                counters: reading(100.0, 0.0, 100.0),
            },
        );
        // 200 requests in 10 s, 20 failed, 100 of them slower than 10 ms.
        fleet.sampled(
            &key,
            Sample {
                at: at(10),
                counters: reading(300.0, 20.0, 200.0),
            },
        );
        // A restart: counting from zero again.
        fleet.sampled(
            &key,
            Sample {
                at: at(20),
                counters: reading(50.0, 0.0, 50.0),
            },
        );
        let tracked = fleet.instances().next().unwrap();
        let intervals = tracked.intervals();
        assert_eq!(intervals.len(), 2);
        assert_eq!(intervals[0].rate, 20.0);
        assert!((intervals[0].error_ratio - 0.1).abs() < 1e-9);
        let p99 = intervals[0].p99.unwrap().as_secs_f64();
        assert!((p99 - 0.0982).abs() < 1e-6, "{p99}");
        assert_eq!(intervals[1].rate, 5.0, "after the restart");
        assert!(intervals[1].p99.unwrap() <= Duration::from_millis(10));
    }
}
