//! The traffic policies the registry holds, one per service, as a plain
//! state machine: the newest record wins, whether it was set through this
//! node or learnt from another. A cleared policy is a record too
//! ([`TrafficPolicy::Equal`]), so an older one held elsewhere cannot come
//! back. [`Policies::take`] says whether a record changed what this node
//! holds; the shell then tells the watchers of the service and, when it
//! came from another node, writes it again as this node's own record, so
//! that the policy outlives the node it was set through.

use std::collections::BTreeMap;

use crate::model::traffic::{PolicyRecord, TrafficPolicy};

/// Every service's newest traffic policy.
#[derive(Debug, Default)]
pub struct Policies {
    records: BTreeMap<String, PolicyRecord>,
}

impl Policies {
    /// No policy yet: every service sends to every healthy instance.
    pub fn new() -> Self {
        Policies::default()
    }

    /// Keeps `record` when it is newer than what is held of its service;
    /// returns whether it was.
    pub fn take(&mut self, record: PolicyRecord) -> bool {
        if self
            .records
            .get(&record.service)
            .is_some_and(|held| held.version >= record.version)
        {
            return false;
        }
        self.records.insert(record.service.clone(), record);
        true
    }

    /// The newest record of `service`'s policy, if one was ever set.
    pub fn get(&self, service: &str) -> Option<&PolicyRecord> {
        self.records.get(service)
    }

    /// The policies other than the default of `services` (every service
    /// when empty), by service.
    pub fn set_for(&self, services: &[String]) -> Vec<&PolicyRecord> {
        self.records
            .values()
            .filter(|r| r.policy != TrafficPolicy::Equal)
            .filter(|r| services.is_empty() || services.contains(&r.service))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::registry::RecordVersion;
    use std::time::UNIX_EPOCH;

    fn record(service: &str, policy: TrafficPolicy, counter: u64, origin: &str) -> PolicyRecord {
        PolicyRecord {
            service: service.into(),
            policy,
            version: RecordVersion {
                counter,
                origin: origin.into(),
            },
            set_at: UNIX_EPOCH,
        }
    }

    #[test]
    fn the_newest_record_wins_whatever_the_order_it_comes_in() {
        let blue = record("grading", TrafficPolicy::only("1.0.0").unwrap(), 5, "a");
        let green = record("grading", TrafficPolicy::only("2.0.0").unwrap(), 6, "b");
        let mut one = Policies::new();
        assert!(one.take(blue.clone()));
        assert!(one.take(green.clone()));
        let mut other = Policies::new();
        assert!(other.take(green.clone()));
        assert!(!other.take(blue), "an older record changes nothing");
        assert!(!other.take(green.clone()), "nor the same one again");
        assert_eq!(one.get("grading"), other.get("grading"));
        // Same counter: the origin breaks the tie, the same on every node.
        let tie = record("grading", TrafficPolicy::Equal, 6, "c");
        assert!(one.take(tie.clone()));
        assert_eq!(one.get("grading"), Some(&tie));
    }

    #[test]
    fn a_cleared_policy_is_held_but_not_listed() {
        let mut policies = Policies::new();
        policies.take(record(
            "grading",
            TrafficPolicy::only("2.0.0").unwrap(),
            1,
            "a",
        ));
        policies.take(record("log", TrafficPolicy::only("1.0.0").unwrap(), 1, "a"));
        assert_eq!(policies.set_for(&[]).len(), 2);
        assert_eq!(policies.set_for(&["log".into()]).len(), 1);
        policies.take(record("grading", TrafficPolicy::Equal, 2, "a"));
        let listed: Vec<&str> = policies
            .set_for(&[])
            .iter()
            .map(|r| r.service.as_str())
            .collect();
        assert_eq!(listed, ["log"]);
        // The clear still keeps an older policy from coming back.
        assert!(!policies.take(record(
            "grading",
            TrafficPolicy::only("2.0.0").unwrap(),
            1,
            "a"
        )));
    }
}
