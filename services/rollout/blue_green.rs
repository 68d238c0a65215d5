//! A blue-green switch as a plain state machine: a full set of the new
//! version (green) starts beside the old one (blue), one new instance per
//! old; once every new instance is SERVING, the traffic policy switches
//! every request to the new version at once. The old set keeps running,
//! so that switching back is one step, until the operator finishes the
//! update (`--finish`: the old set is drained) or rolls it back (the
//! policy switches back and the new set stops). Within the first
//! `observe` after the switch, a new set that fails more than the allowed
//! share of requests is switched back on its own.

use std::time::{Duration, Instant};

use crate::rollout::{FailureLimit, Lifecycle};

/// How a blue-green switch judges the new set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlueGreenSettings {
    /// How long the new set may take to be SERVING.
    pub ready_timeout: Duration,
    /// How long after the switch the new set is watched.
    pub observe: Duration,
    /// How many of its first requests may fail before it is switched back.
    pub failures: FailureLimit,
}

impl Default for BlueGreenSettings {
    /// 30 s to be SERVING, 10 s and 20 requests watched, at most 5 % failed.
    fn default() -> Self {
        BlueGreenSettings {
            ready_timeout: Duration::from_secs(30),
            observe: Duration::from_secs(10),
            failures: FailureLimit::default(),
        }
    }
}

/// What happened, as the shell saw it (or the operator asked).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// What was seen of an instance.
    Lifecycle(Lifecycle),
    /// What the new set answered since the switch.
    Traffic {
        /// Requests.
        requests: u64,
        /// Of those, failed.
        failed: u64,
    },
    /// The operator finishes the update: retire the old set.
    Finish,
    /// The operator rolls the update back.
    RollBack,
}

impl From<Lifecycle> for Event {
    fn from(seen: Lifecycle) -> Self {
        Event::Lifecycle(seen)
    }
}

/// Which set the traffic policy sends every request to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The old version.
    Old,
    /// The new version.
    New,
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Start `count` instances of the new version.
    Start {
        /// How many.
        count: usize,
    },
    /// Send every request to one side.
    Switch {
        /// Which.
        to: Side,
    },
    /// Drain these instances and let them exit.
    Drain {
        /// The instances.
        instance_ids: Vec<String>,
    },
    /// The update was undone: the traffic is (or stays) on the old set;
    /// stop these new instances.
    RolledBack {
        /// Why.
        reason: String,
        /// The new instances to stop.
        stop: Vec<String>,
    },
    /// The new set serves alone.
    Done,
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// Starting the new set.
    Starting {
        since: Instant,
        started: Vec<String>,
        serving: Vec<String>,
    },
    /// Every request goes to the new set, since `since`.
    Switched {
        since: Instant,
        requests: u64,
        failed: u64,
    },
    /// Over.
    Over,
}

/// A blue-green switch. See the module documentation.
#[derive(Debug, Clone)]
pub struct BlueGreen {
    settings: BlueGreenSettings,
    old: Vec<String>,
    new: Vec<String>,
    phase: Phase,
}

impl BlueGreen {
    /// Starts a new set beside `old` (instance ids) at `now`.
    pub fn start(
        old: Vec<String>,
        settings: BlueGreenSettings,
        now: Instant,
    ) -> (Self, Vec<Effect>) {
        let count = old.len().max(1);
        let update = BlueGreen {
            settings,
            old,
            new: Vec::new(),
            phase: Phase::Starting {
                since: now,
                started: Vec::new(),
                serving: Vec::new(),
            },
        };
        (update, vec![Effect::Start { count }])
    }

    /// Whether the update is over.
    pub fn is_over(&self) -> bool {
        self.phase == Phase::Over
    }

    /// Whether every request goes to the new set now.
    pub fn is_switched(&self) -> bool {
        matches!(self.phase, Phase::Switched { .. })
    }

    fn wanted(&self) -> usize {
        self.old.len().max(1)
    }

    fn roll_back(&mut self, reason: String) -> Vec<Effect> {
        let stop = match &self.phase {
            Phase::Starting { started, .. } => started.clone(),
            Phase::Switched { .. } | Phase::Over => self.new.clone(),
        };
        let switched = self.is_switched();
        self.phase = Phase::Over;
        let mut effects = Vec::new();
        if switched {
            effects.push(Effect::Switch { to: Side::Old });
        }
        effects.push(Effect::RolledBack { reason, stop });
        effects
    }

    /// Takes in what happened at `now`.
    pub fn on_event(&mut self, event: impl Into<Event>, now: Instant) -> Vec<Effect> {
        let wanted = self.wanted();
        match (&mut self.phase, event.into()) {
            (Phase::Over, _) => Vec::new(),
            (
                Phase::Starting { started, .. },
                Event::Lifecycle(Lifecycle::Started { instance_id }),
            ) => {
                if !started.contains(&instance_id) {
                    started.push(instance_id);
                }
                Vec::new()
            }
            (
                Phase::Starting {
                    started, serving, ..
                },
                Event::Lifecycle(Lifecycle::Serving { instance_id }),
            ) => {
                if started.contains(&instance_id) && !serving.contains(&instance_id) {
                    serving.push(instance_id);
                }
                if serving.len() < wanted {
                    return Vec::new();
                }
                self.new = serving.clone();
                self.phase = Phase::Switched {
                    since: now,
                    requests: 0,
                    failed: 0,
                };
                vec![Effect::Switch { to: Side::New }]
            }
            (Phase::Starting { .. }, Event::Lifecycle(Lifecycle::StartFailed { reason })) => {
                self.roll_back(format!("a new instance did not start: {reason}"))
            }
            (
                _,
                Event::Lifecycle(Lifecycle::Unhealthy {
                    instance_id,
                    reason,
                }),
            ) => {
                let ours = match &self.phase {
                    Phase::Starting { started, .. } => started.contains(&instance_id),
                    _ => self.new.contains(&instance_id),
                };
                if !ours {
                    return Vec::new();
                }
                self.roll_back(format!(
                    "the new instance {instance_id} is unhealthy: {reason}"
                ))
            }
            (
                Phase::Switched {
                    requests, failed, ..
                },
                Event::Traffic {
                    requests: seen,
                    failed: seen_failed,
                },
            ) => {
                *requests = seen;
                *failed = seen_failed;
                self.judge(now)
            }
            (Phase::Switched { .. }, Event::Finish) => {
                self.phase = Phase::Over;
                vec![
                    Effect::Drain {
                        instance_ids: self.old.clone(),
                    },
                    Effect::Done,
                ]
            }
            (_, Event::RollBack) => self.roll_back("asked by the operator".to_owned()),
            // A finish before the switch, a late report: nothing to do.
            _ => Vec::new(),
        }
    }

    /// Switches back when the new set fails too much within the watch.
    fn judge(&mut self, now: Instant) -> Vec<Effect> {
        let Phase::Switched {
            since,
            requests,
            failed,
        } = &self.phase
        else {
            return Vec::new();
        };
        if now.saturating_duration_since(*since) >= self.settings.observe {
            return Vec::new();
        }
        match self
            .settings
            .failures
            .exceeded("the new version", *requests, *failed)
        {
            Some(reason) => self.roll_back(reason),
            None => Vec::new(),
        }
    }

    /// Lets time pass: the new set's start timeout.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Effect> {
        let timeout = self.settings.ready_timeout;
        match &self.phase {
            Phase::Starting { since, serving, .. }
                if now.saturating_duration_since(*since) >= timeout =>
            {
                let reason = format!(
                    "{} of {} new instances were SERVING within {timeout:?}",
                    serving.len(),
                    self.wanted()
                );
                self.roll_back(reason)
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

    /// Starts and switches a new set of two beside `a`, `b`.
    fn switched(now: Instant) -> BlueGreen {
        let (mut update, effects) =
            BlueGreen::start(ids(&["a", "b"]), BlueGreenSettings::default(), now);
        assert_eq!(effects, vec![Effect::Start { count: 2 }]);
        for id in ["a2", "b2"] {
            assert!(update.on_event(Lifecycle::started(id), now).is_empty());
        }
        assert!(update.on_event(Lifecycle::serving("a2"), now).is_empty());
        // Twice the same report counts once.
        assert!(update.on_event(Lifecycle::serving("a2"), now).is_empty());
        assert_eq!(
            update.on_event(Lifecycle::serving("b2"), now),
            vec![Effect::Switch { to: Side::New }]
        );
        assert!(update.is_switched());
        update
    }

    #[test]
    fn the_switch_waits_for_the_whole_new_set_and_finish_retires_the_old() {
        let now = Instant::now();
        let mut update = switched(now);
        let healthy = Event::Traffic {
            requests: 100,
            failed: 1,
        };
        assert!(update.on_event(healthy, now).is_empty());
        assert_eq!(
            update.on_event(Event::Finish, now),
            vec![
                Effect::Drain {
                    instance_ids: ids(&["a", "b"])
                },
                Effect::Done
            ]
        );
        assert!(update.is_over());
    }

    #[test]
    fn switching_back_is_one_step_by_hand_or_on_failure() {
        let now = Instant::now();
        let mut update = switched(now);
        assert_eq!(
            update.on_event(Event::RollBack, now),
            vec![
                Effect::Switch { to: Side::Old },
                Effect::RolledBack {
                    reason: "asked by the operator".into(),
                    stop: ids(&["a2", "b2"])
                }
            ]
        );

        let mut update = switched(now);
        let failing = Event::Traffic {
            requests: 40,
            failed: 8,
        };
        let effects = update.on_event(failing, now + Duration::from_secs(1));
        assert!(
            matches!(&effects[..], [Effect::Switch { to: Side::Old }, Effect::RolledBack { reason, .. }]
            if reason.contains("failed 8 of its first 40 requests"))
        );

        // After the watch, failures are the operator's call.
        let mut update = switched(now);
        let late = Event::Traffic {
            requests: 40,
            failed: 8,
        };
        assert!(
            update
                .on_event(late, now + Duration::from_secs(10))
                .is_empty()
        );
    }

    #[test]
    fn a_new_set_that_does_not_come_up_is_stopped_before_any_switch() {
        let now = Instant::now();
        let (mut update, _) = BlueGreen::start(ids(&["a", "b"]), BlueGreenSettings::default(), now);
        update.on_event(Lifecycle::started("a2"), now);
        update.on_event(Lifecycle::serving("a2"), now);
        assert!(update.on_tick(now + Duration::from_secs(29)).is_empty());
        assert_eq!(
            update.on_tick(now + Duration::from_secs(30)),
            vec![Effect::RolledBack {
                reason: "1 of 2 new instances were SERVING within 30s".into(),
                stop: ids(&["a2"])
            }]
        );
        // A finish before the switch does nothing.
        let (mut update, _) = BlueGreen::start(ids(&["a"]), BlueGreenSettings::default(), now);
        assert!(update.on_event(Event::Finish, now).is_empty());
        let effects = update.on_event(Lifecycle::start_failed("exec format error"), now);
        assert!(matches!(&effects[..], [Effect::RolledBack { reason, stop }]
            if reason.contains("exec format error") && stop.is_empty()));
    }
}
