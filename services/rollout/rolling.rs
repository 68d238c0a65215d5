//! A rolling update as a plain state machine: the instances of a service
//! are replaced one at a time. For each old instance the machine asks for a
//! new one ([`Effect::Start`]), waits until the registry sees it SERVING,
//! watches it answer real traffic for a while, then drains the old one
//! ([`Effect::Drain`]: NOT_SERVING, deregister, in-flight calls finish) and
//! goes on to the next. If a new instance does not start, does not become
//! SERVING in time, turns unhealthy, or fails more than the allowed share
//! of its first requests, the update stops and rolls back
//! ([`Effect::RollBack`]), saying why. The shell (the supervisor's rollout
//! command) carries the effects out and reports what happened as
//! [`Event`]s; time comes in with every call, so timeouts are tested
//! without a clock.

use std::time::{Duration, Instant};

use crate::rollout::{FailureLimit, Lifecycle};

/// How a rolling update judges a new instance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RollingSettings {
    /// How long a new instance may take to become SERVING.
    pub ready_timeout: Duration,
    /// How long a new instance is watched after it is SERVING.
    pub observe: Duration,
    /// How many of its first requests may fail.
    pub failures: FailureLimit,
    /// How long an old instance may take to drain and exit.
    pub drain_timeout: Duration,
}

impl Default for RollingSettings {
    /// 30 s to become SERVING, 5 s and 20 requests watched, at most 5 %
    /// failed, 30 s to drain.
    fn default() -> Self {
        RollingSettings {
            ready_timeout: Duration::from_secs(30),
            observe: Duration::from_secs(5),
            failures: FailureLimit::default(),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// What happened, as the shell saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// What was seen of an instance.
    Lifecycle(Lifecycle),
    /// The requests the instance has answered so far, and how many failed.
    Traffic {
        /// The instance.
        instance_id: String,
        /// Requests answered since it started.
        requests: u64,
        /// Of those, failed.
        failed: u64,
    },
}

impl From<Lifecycle> for Event {
    fn from(seen: Lifecycle) -> Self {
        Event::Lifecycle(seen)
    }
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Start one instance of the new version, in place of `replacing`.
    Start {
        /// The old instance it replaces.
        replacing: String,
    },
    /// Drain the old instance and let it exit.
    Drain {
        /// The instance.
        instance_id: String,
    },
    /// Kill an instance that did not drain in time.
    Kill {
        /// The instance.
        instance_id: String,
    },
    /// Stop the update and undo it: stop `stop` (the new instance being
    /// judged, if any) and put back the old instances in `restore`, which
    /// were replaced by `replaced_by`.
    RollBack {
        /// Why.
        reason: String,
        /// The new instance that was being judged, to stop.
        stop: Option<String>,
        /// Old instances already replaced, to start again, with the new
        /// instances that replaced them, to drain.
        restore: Vec<(String, String)>,
    },
    /// Every old instance was replaced.
    Done {
        /// Old instance and the new one that replaced it, in order.
        replaced: Vec<(String, String)>,
    },
}

/// Where the update is.
#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// Waiting for the new instance asked for at `since` to start.
    Starting { since: Instant },
    /// Waiting for `new` to be SERVING.
    Readying { new: String, since: Instant },
    /// Watching `new` answer traffic since `since`.
    Observing {
        new: String,
        since: Instant,
        requests: u64,
        failed: u64,
    },
    /// Waiting for the old instance to exit; `killed` once its drain ran
    /// out of time.
    Draining {
        new: String,
        since: Instant,
        killed: bool,
    },
    /// Over: done or rolled back.
    Over,
}

/// A rolling update of a service's instances. See the module documentation.
#[derive(Debug, Clone)]
pub struct RollingUpdate {
    settings: RollingSettings,
    /// Old instances not replaced yet, the current one first.
    pending: Vec<String>,
    /// Old instances replaced, with their replacements.
    replaced: Vec<(String, String)>,
    phase: Phase,
}

impl RollingUpdate {
    /// Starts replacing `old` (instance ids, in order) at `now`; the first
    /// effect asks for the first new instance. With no old instance the
    /// update is done at once.
    pub fn start(old: Vec<String>, settings: RollingSettings, now: Instant) -> (Self, Vec<Effect>) {
        let mut update = RollingUpdate {
            settings,
            pending: old,
            replaced: Vec::new(),
            phase: Phase::Over,
        };
        let effects = update.next_instance(now);
        (update, effects)
    }

    /// Whether the update is over (done or rolled back).
    pub fn is_over(&self) -> bool {
        self.phase == Phase::Over
    }

    /// The old instance being replaced now, if any.
    pub fn current(&self) -> Option<&str> {
        match self.phase {
            Phase::Over => None,
            _ => self.pending.first().map(String::as_str),
        }
    }

    /// Asks for the next new instance, or finishes.
    fn next_instance(&mut self, now: Instant) -> Vec<Effect> {
        match self.pending.first() {
            Some(old) => {
                self.phase = Phase::Starting { since: now };
                vec![Effect::Start {
                    replacing: old.clone(),
                }]
            }
            None => {
                self.phase = Phase::Over;
                vec![Effect::Done {
                    replaced: self.replaced.clone(),
                }]
            }
        }
    }

    /// Stops and undoes the update: the new instance being judged is
    /// stopped, and every old instance already replaced (or draining) is
    /// put back, newest first.
    fn roll_back(&mut self, reason: String, stop: Option<String>) -> Vec<Effect> {
        let mut restore: Vec<(String, String)> = self.replaced.iter().rev().cloned().collect();
        if let (Phase::Draining { new, .. }, Some(old)) = (&self.phase, self.pending.first()) {
            restore.insert(0, (old.clone(), new.clone()));
        }
        self.phase = Phase::Over;
        vec![Effect::RollBack {
            reason,
            stop,
            restore,
        }]
    }

    /// Takes in what the shell saw at `now`. Reports that do not fit the
    /// current step (late, or about another instance) change nothing.
    pub fn on_event(&mut self, event: impl Into<Event>, now: Instant) -> Vec<Effect> {
        match event.into() {
            Event::Lifecycle(Lifecycle::Started { instance_id }) => {
                if matches!(self.phase, Phase::Starting { .. }) {
                    self.phase = Phase::Readying {
                        new: instance_id,
                        since: now,
                    };
                }
                Vec::new()
            }
            Event::Lifecycle(Lifecycle::StartFailed { reason }) => {
                if !matches!(self.phase, Phase::Starting { .. }) {
                    return Vec::new();
                }
                self.roll_back(format!("the new instance did not start: {reason}"), None)
            }
            Event::Lifecycle(Lifecycle::Serving { instance_id }) => {
                if matches!(&self.phase, Phase::Readying { new, .. } if *new == instance_id) {
                    self.phase = Phase::Observing {
                        new: instance_id,
                        since: now,
                        requests: 0,
                        failed: 0,
                    };
                }
                Vec::new()
            }
            Event::Traffic {
                instance_id,
                requests: seen,
                failed: seen_failed,
            } => {
                let Phase::Observing {
                    new,
                    requests,
                    failed,
                    ..
                } = &mut self.phase
                else {
                    return Vec::new();
                };
                if *new != instance_id {
                    return Vec::new();
                }
                *requests = seen;
                *failed = seen_failed;
                self.judge(now)
            }
            Event::Lifecycle(Lifecycle::Unhealthy {
                instance_id,
                reason,
            }) => {
                let judged = match &self.phase {
                    Phase::Readying { new, .. }
                    | Phase::Observing { new, .. }
                    | Phase::Draining { new, .. } => *new == instance_id,
                    Phase::Starting { .. } | Phase::Over => false,
                };
                if !judged {
                    return Vec::new();
                }
                self.roll_back(
                    format!("the new instance {instance_id} is unhealthy: {reason}"),
                    Some(instance_id),
                )
            }
            Event::Lifecycle(Lifecycle::Exited { instance_id }) => {
                let Phase::Draining { new, .. } = &self.phase else {
                    return Vec::new();
                };
                if self.pending.first() != Some(&instance_id) {
                    return Vec::new();
                }
                let new = new.clone();
                self.pending.remove(0);
                self.replaced.push((instance_id, new));
                self.next_instance(now)
            }
        }
    }

    /// Judges the instance being observed: rolled back once it has failed
    /// more of its first requests than its [`FailureLimit`] allows; its old
    /// instance drained once it has answered that many and been watched
    /// for `observe`.
    fn judge(&mut self, now: Instant) -> Vec<Effect> {
        let settings = self.settings;
        let Phase::Observing {
            new,
            since,
            requests,
            failed,
        } = &self.phase
        else {
            return Vec::new();
        };
        let what = format!("the new instance {new}");
        if let Some(reason) = settings.failures.exceeded(&what, *requests, *failed) {
            let new = new.clone();
            return self.roll_back(reason, Some(new));
        }
        if *requests < settings.failures.min_requests {
            return Vec::new();
        }
        if now.saturating_duration_since(*since) < settings.observe {
            return Vec::new();
        }
        let Some(old) = self.pending.first().cloned() else {
            return Vec::new();
        };
        self.phase = Phase::Draining {
            new: new.clone(),
            since: now,
            killed: false,
        };
        vec![Effect::Drain { instance_id: old }]
    }

    /// Lets time pass: timeouts, and the end of a watch with enough
    /// traffic. Call it at least every second while the update runs.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Effect> {
        let settings = self.settings;
        let waited = |since: &Instant| now.saturating_duration_since(*since);
        match &mut self.phase {
            Phase::Starting { since } if waited(since) >= settings.ready_timeout => self.roll_back(
                format!(
                    "the new instance did not start within {:?}",
                    settings.ready_timeout
                ),
                None,
            ),
            Phase::Readying { new, since } if waited(since) >= settings.ready_timeout => {
                let new = new.clone();
                self.roll_back(
                    format!(
                        "the new instance {new} was not SERVING within {:?}",
                        settings.ready_timeout
                    ),
                    Some(new),
                )
            }
            Phase::Observing { .. } => self.judge(now),
            Phase::Draining { since, killed, .. }
                if !*killed && waited(since) >= settings.drain_timeout =>
            {
                // Its calls had the whole drain timeout; the shell reports
                // `Drained` when the killed process is gone.
                *killed = true;
                self.pending
                    .first()
                    .map(|old| {
                        vec![Effect::Kill {
                            instance_id: old.clone(),
                        }]
                    })
                    .unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn settings() -> RollingSettings {
        RollingSettings {
            ready_timeout: Duration::from_secs(10),
            observe: Duration::from_secs(2),
            failures: FailureLimit {
                min_requests: 10,
                max_error_ratio: 0.05,
            },
            drain_timeout: Duration::from_secs(5),
        }
    }

    /// Walks one healthy step: started, SERVING, traffic, drained.
    fn healthy_step(
        update: &mut RollingUpdate,
        old: &str,
        new: &str,
        now: &mut Instant,
    ) -> Vec<Effect> {
        assert!(update.on_event(Lifecycle::started(new), *now).is_empty());
        assert!(update.on_event(Lifecycle::serving(new), *now).is_empty());
        let traffic = Event::Traffic {
            instance_id: new.into(),
            requests: 50,
            failed: 1,
        };
        // Enough requests, but not watched long enough yet.
        assert!(update.on_event(traffic, *now).is_empty());
        *now += Duration::from_secs(2);
        assert_eq!(
            update.on_tick(*now),
            vec![Effect::Drain {
                instance_id: old.into()
            }]
        );
        update.on_event(Lifecycle::exited(old), *now)
    }

    #[test]
    fn instances_are_replaced_one_at_a_time_then_done() {
        let mut now = Instant::now();
        let (mut update, effects) = RollingUpdate::start(ids(&["a", "b"]), settings(), now);
        assert_eq!(
            effects,
            vec![Effect::Start {
                replacing: "a".into()
            }]
        );
        assert_eq!(update.current(), Some("a"));
        let next = healthy_step(&mut update, "a", "a2", &mut now);
        assert_eq!(
            next,
            vec![Effect::Start {
                replacing: "b".into()
            }]
        );
        let done = healthy_step(&mut update, "b", "b2", &mut now);
        assert_eq!(
            done,
            vec![Effect::Done {
                replaced: vec![("a".into(), "a2".into()), ("b".into(), "b2".into())]
            }]
        );
        assert!(update.is_over());
        let (empty, effects) = RollingUpdate::start(Vec::new(), settings(), now);
        assert!(empty.is_over());
        assert_eq!(effects, vec![Effect::Done { replaced: vec![] }]);
    }

    #[test]
    fn a_failing_new_instance_rolls_back_what_was_replaced() {
        let mut now = Instant::now();
        let (mut update, _) = RollingUpdate::start(ids(&["a", "b"]), settings(), now);
        healthy_step(&mut update, "a", "a2", &mut now);
        update.on_event(Lifecycle::started("b2"), now);
        update.on_event(Lifecycle::serving("b2"), now);
        let effects = update.on_event(
            Event::Traffic {
                instance_id: "b2".into(),
                requests: 20,
                failed: 4,
            },
            now,
        );
        assert_eq!(
            effects,
            vec![Effect::RollBack {
                reason: "the new instance b2 failed 4 of its first 20 requests (20.0 %, over the 5.0 % allowed)".into(),
                stop: Some("b2".into()),
                restore: vec![("a".into(), "a2".into())],
            }]
        );
        assert!(update.is_over());
        // Nothing happens after the end.
        assert!(update.on_tick(now + Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn timeouts_and_bad_health_roll_back_and_say_why() {
        let now = Instant::now();
        let (mut update, _) = RollingUpdate::start(ids(&["a"]), settings(), now);
        let effects = update.on_event(Lifecycle::start_failed("no such file"), now);
        assert!(
            matches!(&effects[..], [Effect::RollBack { reason, stop: None, .. }] if reason.contains("no such file"))
        );

        let (mut update, _) = RollingUpdate::start(ids(&["a"]), settings(), now);
        update.on_event(Lifecycle::started("a2"), now);
        assert!(update.on_tick(now + Duration::from_secs(9)).is_empty());
        let effects = update.on_tick(now + Duration::from_secs(10));
        assert!(
            matches!(&effects[..], [Effect::RollBack { reason, stop: Some(stop), .. }]
            if reason.contains("was not SERVING within 10s") && stop == "a2")
        );

        let (mut update, _) = RollingUpdate::start(ids(&["a"]), settings(), now);
        update.on_event(Lifecycle::started("a2"), now);
        update.on_event(Lifecycle::serving("a2"), now);
        // Another instance's trouble is not this update's.
        let other = Lifecycle::unhealthy("x", "down");
        assert!(update.on_event(other, now).is_empty());
        let effects = update.on_event(Lifecycle::unhealthy("a2", "NOT_SERVING"), now);
        assert!(
            matches!(&effects[..], [Effect::RollBack { reason, .. }] if reason.contains("a2 is unhealthy: NOT_SERVING"))
        );
    }

    #[test]
    fn a_new_instance_failing_while_the_old_drains_puts_the_old_back() {
        let mut now = Instant::now();
        let (mut update, _) = RollingUpdate::start(ids(&["a", "b"]), settings(), now);
        healthy_step(&mut update, "a", "a2", &mut now);
        update.on_event(Lifecycle::started("b2"), now);
        update.on_event(Lifecycle::serving("b2"), now);
        now += Duration::from_secs(2);
        let traffic = Event::Traffic {
            instance_id: "b2".into(),
            requests: 10,
            failed: 0,
        };
        assert_eq!(
            update.on_event(traffic, now),
            vec![Effect::Drain {
                instance_id: "b".into()
            }]
        );
        let effects = update.on_event(Lifecycle::unhealthy("b2", "exited"), now);
        assert!(
            matches!(&effects[..], [Effect::RollBack { restore, stop: Some(stop), .. }]
            if stop == "b2"
                && *restore == vec![("b".to_string(), "b2".to_string()), ("a".to_string(), "a2".to_string())])
        );
    }

    #[test]
    fn too_little_traffic_waits_and_a_slow_drain_is_killed() {
        let mut now = Instant::now();
        let (mut update, _) = RollingUpdate::start(ids(&["a"]), settings(), now);
        update.on_event(Lifecycle::started("a2"), now);
        update.on_event(Lifecycle::serving("a2"), now);
        now += Duration::from_secs(3);
        let few = Event::Traffic {
            instance_id: "a2".into(),
            requests: 3,
            failed: 3,
        };
        // Three failures of three requests: not judged below ten requests.
        assert!(update.on_event(few, now).is_empty());
        let enough = Event::Traffic {
            instance_id: "a2".into(),
            requests: 10,
            failed: 0,
        };
        assert_eq!(
            update.on_event(enough, now),
            vec![Effect::Drain {
                instance_id: "a".into()
            }]
        );
        assert!(update.on_tick(now + Duration::from_secs(4)).is_empty());
        now += Duration::from_secs(5);
        assert_eq!(
            update.on_tick(now),
            vec![Effect::Kill {
                instance_id: "a".into()
            }]
        );
        let done = update.on_event(Lifecycle::exited("a"), now);
        assert_eq!(
            done,
            vec![Effect::Done {
                replaced: vec![("a".into(), "a2".into())]
            }]
        );
    }
}
