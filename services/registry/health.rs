//! The health state machine of one monitored instance: probe outcomes in,
//! health transitions out. No I/O and no clock: callers pass the time.

use std::time::{Duration, SystemTime};

use crate::model::registry::Health;

/// How the registry judges probe outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Consecutive timed-out checks after which an instance is unreachable.
    pub failure_threshold: u32,
    /// How long an instance may stay down (or unverified) before it is evicted.
    pub eviction_grace: Duration,
}

/// What one probe of an instance's grpc.health.v1 service found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The instance reported SERVING.
    Serving,
    /// The instance answered with anything else (NOT_SERVING, SERVICE_UNKNOWN).
    NotServing,
    /// The connection was refused, reset or closed: the process is gone.
    /// Down at once.
    Disconnected(String),
    /// A check did not answer within its deadline: the process may be hung.
    /// Down after `failure_threshold` in a row.
    TimedOut(String),
}

/// The health of one instance and what led to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthTracker {
    health: Health,
    since: SystemTime,
    consecutive_timeouts: u32,
    last_check: Option<SystemTime>,
    last_error: Option<String>,
}

impl HealthTracker {
    /// A tracker for an instance registered at `now`, not yet checked.
    pub fn new(now: SystemTime) -> Self {
        HealthTracker {
            health: Health::Unknown,
            since: now,
            consecutive_timeouts: 0,
            last_check: None,
            last_error: None,
        }
    }

    /// The tracker of an instance another registry node monitored until
    /// now: its last known health, to be confirmed by this node's probes.
    pub fn continuing(instance: &crate::model::registry::Instance) -> Self {
        HealthTracker {
            health: instance.health,
            since: instance.health_since,
            consecutive_timeouts: 0,
            last_check: instance.last_check,
            last_error: instance.last_error.clone(),
        }
    }

    /// The current health.
    pub fn health(&self) -> Health {
        self.health
    }

    /// Since when the current health has held.
    pub fn since(&self) -> SystemTime {
        self.since
    }

    /// When the last probe finished.
    pub fn last_check(&self) -> Option<SystemTime> {
        self.last_check
    }

    /// Why the last probe failed, if it did.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Takes in one probe outcome; returns the new health when it changed.
    pub fn observe(
        &mut self,
        outcome: ProbeOutcome,
        now: SystemTime,
        policy: &HealthPolicy,
    ) -> Option<Health> {
        self.last_check = Some(now);
        let next = match outcome {
            ProbeOutcome::Serving => {
                self.consecutive_timeouts = 0;
                self.last_error = None;
                Health::Serving
            }
            ProbeOutcome::NotServing => {
                self.consecutive_timeouts = 0;
                self.last_error = None;
                Health::NotServing
            }
            ProbeOutcome::Disconnected(error) => {
                self.last_error = Some(error);
                Health::Unreachable
            }
            ProbeOutcome::TimedOut(error) => {
                self.last_error = Some(error);
                self.consecutive_timeouts = self.consecutive_timeouts.saturating_add(1);
                if self.consecutive_timeouts >= policy.failure_threshold.max(1) {
                    Health::Unreachable
                } else {
                    self.health
                }
            }
        };
        if next == self.health {
            return None;
        }
        self.health = next;
        self.since = now;
        Some(next)
    }

    /// Whether the instance has been down, or never verified, for longer
    /// than the eviction grace.
    pub fn should_evict(&self, now: SystemTime, policy: &HealthPolicy) -> bool {
        !self.health.is_healthy()
            && now
                .duration_since(self.since)
                .is_ok_and(|down_for| down_for > policy.eviction_grace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: HealthPolicy = HealthPolicy {
        failure_threshold: 3,
        eviction_grace: Duration::from_secs(30),
    };

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn first_serving_check_makes_it_healthy() {
        let mut t = HealthTracker::new(at(0));
        assert_eq!(t.health(), Health::Unknown);
        assert_eq!(
            t.observe(ProbeOutcome::Serving, at(1), &POLICY),
            Some(Health::Serving)
        );
        assert_eq!(t.observe(ProbeOutcome::Serving, at(2), &POLICY), None);
        assert_eq!(t.last_check(), Some(at(2)));
        assert_eq!(t.since(), at(1));
    }

    #[test]
    fn disconnect_is_down_at_once() {
        let mut t = HealthTracker::new(at(0));
        t.observe(ProbeOutcome::Serving, at(1), &POLICY);
        let change = t.observe(ProbeOutcome::Disconnected("refused".into()), at(2), &POLICY);
        assert_eq!(change, Some(Health::Unreachable));
        assert_eq!(t.last_error(), Some("refused"));
    }

    #[test]
    fn timeouts_count_up_to_the_threshold_and_reset_on_success() {
        let mut t = HealthTracker::new(at(0));
        t.observe(ProbeOutcome::Serving, at(1), &POLICY);
        let timeout = || ProbeOutcome::TimedOut("deadline".into());
        assert_eq!(t.observe(timeout(), at(2), &POLICY), None);
        assert_eq!(t.observe(timeout(), at(3), &POLICY), None);
        assert_eq!(t.observe(ProbeOutcome::Serving, at(4), &POLICY), None);
        assert_eq!(t.observe(timeout(), at(5), &POLICY), None);
        assert_eq!(t.observe(timeout(), at(6), &POLICY), None);
        assert_eq!(
            t.observe(timeout(), at(7), &POLICY),
            Some(Health::Unreachable)
        );
        assert_eq!(
            t.observe(ProbeOutcome::Serving, at(8), &POLICY),
            Some(Health::Serving)
        );
    }

    #[test]
    fn not_serving_is_reported_as_such() {
        let mut t = HealthTracker::new(at(0));
        t.observe(ProbeOutcome::Serving, at(1), &POLICY);
        assert_eq!(
            t.observe(ProbeOutcome::NotServing, at(2), &POLICY),
            Some(Health::NotServing)
        );
    }

    #[test]
    fn eviction_after_grace_only_when_down() {
        let mut t = HealthTracker::new(at(0));
        assert!(!t.should_evict(at(30), &POLICY));
        assert!(
            t.should_evict(at(31), &POLICY),
            "never verified for longer than the grace"
        );
        t.observe(ProbeOutcome::Serving, at(31), &POLICY);
        assert!(!t.should_evict(at(1000), &POLICY));
        t.observe(
            ProbeOutcome::Disconnected("reset".into()),
            at(1000),
            &POLICY,
        );
        assert!(!t.should_evict(at(1030), &POLICY));
        assert!(t.should_evict(at(1031), &POLICY));
    }
}
