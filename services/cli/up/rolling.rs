//! A rolling update carried out by `up`: the thin shell around
//! [`RollingUpdate`]. It turns what it sees into the machine's events (the
//! registry's watch of the service: a new instance SERVING or unhealthy; a
//! drained child's end; the judged instance's own `/metrics`: requests
//! answered and failed) and carries out the machine's effects with
//! [`Steps`]: start a new child (a new socket, the new binary, the old
//! one's flags with the plan's), drain an old one, kill, roll back (the old
//! instances started again from their own binary and flags, each SERVING
//! before the new one that replaced it drains).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use futures::StreamExt;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::cli::up::fleet::ChildInfo;
use crate::cli::up::rollout::{Readiness, Steps, TICK};
use crate::mesh::Shutdown;
use crate::model::registry::WatchUpdate;
use crate::model::supervisor::Outcome;
use crate::rollout::Lifecycle;
use crate::rollout::rolling::{Effect, Event, RollingUpdate};

/// How long to wait before opening the registry's watch again.
const REWATCH_DELAY: std::time::Duration = std::time::Duration::from_millis(500);

/// Runs a rolling update to its end (or `up`'s shutdown).
pub async fn run(steps: &mut Steps<'_>, shutdown: &Shutdown) {
    let rollout = steps.rollout;
    let old = rollout.fleet.running(rollout.kind);
    let mut shell = Shell {
        steps,
        originals: old.iter().map(|c| (c.name.clone(), c.clone())).collect(),
        judged: None,
        readiness: Readiness::default(),
    };
    shell.steps.say(format!(
        "replacing {} instance(s) of {} with {} ({}), one at a time",
        old.len(),
        rollout.plan.service,
        rollout.version,
        rollout.plan.binary.display()
    ));
    let Some(mut watch) = shell.steps.watch().await else {
        shell.steps.end(
            Outcome::RolledBack,
            "nothing changed: the registry cannot be watched".to_owned(),
        );
        return;
    };
    let (exits_tx, mut exits) = mpsc::channel::<String>(16);
    let names = old.iter().map(|c| c.name.clone()).collect();
    let (mut machine, effects) =
        RollingUpdate::start(names, rollout.plan.settings, std::time::Instant::now());
    let mut queue: VecDeque<Effect> = effects.into();
    let mut tick = tokio::time::interval(TICK);
    loop {
        // Carry out what is due; each effect may bring events back.
        while let Some(effect) = queue.pop_front() {
            let Some(events) = shell.apply(effect, &exits_tx).await else {
                return;
            };
            for event in events {
                queue.extend(machine.on_event(event, std::time::Instant::now()));
            }
        }
        let events: Vec<Event> = tokio::select! {
            update = watch.next() => match update {
                Some(Ok(update)) => shell.lifecycle_of(&update),
                Some(Err(_)) | None => {
                    tokio::time::sleep(REWATCH_DELAY).await;
                    if let Some(fresh) = shell.steps.watch().await {
                        watch = fresh;
                    }
                    Vec::new()
                }
            },
            Some(name) = exits.recv() => vec![Lifecycle::exited(&name).into()],
            _ = tick.tick() => {
                queue.extend(machine.on_tick(std::time::Instant::now()));
                shell.traffic().await.into_iter().collect()
            }
            _ = shutdown.cancelled() => {
                shell.steps.end(Outcome::RolledBack, "stopped: gradebook up is stopping".to_owned());
                return;
            }
        };
        for event in events {
            queue.extend(machine.on_event(event, std::time::Instant::now()));
        }
    }
}

/// The rollout's state outside the machine.
struct Shell<'s, 'a> {
    steps: &'s Steps<'a>,
    /// The old instances as they ran, by name, to put back on a rollback.
    originals: HashMap<String, ChildInfo>,
    /// The new instance being judged, and a channel to it.
    judged: Option<(String, SocketAddr, Channel)>,
    /// Which new instances have been SERVING.
    readiness: Readiness,
}

impl Shell<'_, '_> {
    /// What the registry's message says of the child this rollout judges:
    /// SERVING, or unhealthy.
    fn lifecycle_of(&mut self, update: &WatchUpdate) -> Vec<Event> {
        let Some((judged, address, _)) = &self.judged else {
            return Vec::new();
        };
        self.readiness
            .lifecycle(update, judged, *address)
            .into_iter()
            .map(Event::from)
            .collect()
    }

    /// The judged instance's requests so far, from its own `/metrics`.
    async fn traffic(&self) -> Option<Event> {
        let (name, address, channel) = self.judged.as_ref()?;
        let seen = self.steps.counters(&[(*address, channel.clone())]).await?;
        Some(Event::Traffic {
            instance_id: name.clone(),
            requests: seen.requests as u64,
            failed: seen.errors as u64,
        })
    }

    /// Carries out one effect; returns the events it brought, or `None`
    /// when the rollout is over.
    async fn apply(&mut self, effect: Effect, exits: &mpsc::Sender<String>) -> Option<Vec<Event>> {
        let steps = self.steps;
        let rollout = steps.rollout;
        match effect {
            Effect::Start { replacing } => {
                let Some(old) = self.originals.get(&replacing).cloned() else {
                    return Some(vec![
                        Lifecycle::start_failed(&format!("{replacing} is not running")).into(),
                    ]);
                };
                match steps.start_new(&old) {
                    Ok(new) => {
                        steps.say(format!(
                            "started {} at {} in place of {replacing}; waiting for it to be SERVING",
                            new.name, new.address
                        ));
                        if let Some(channel) = steps.channel_to(new.address) {
                            self.judged = Some((new.name.clone(), new.address, channel));
                        }
                        Some(vec![Lifecycle::started(&new.name).into()])
                    }
                    Err(error) => Some(vec![Lifecycle::start_failed(&format!("{error:#}")).into()]),
                }
            }
            Effect::Drain { instance_id } => {
                if let Some((judged, ..)) = self.judged.take() {
                    steps.say(format!(
                        "{judged} is SERVING and answers its requests; draining {instance_id}"
                    ));
                }
                if let Some(mut ended) = steps.drain(&instance_id) {
                    let exits = exits.clone();
                    tokio::spawn(async move {
                        let _ = ended.wait_for(|ended| *ended).await;
                        let _ = exits.send(instance_id).await;
                    });
                }
                Some(Vec::new())
            }
            Effect::Kill { instance_id } => {
                steps.say(format!("{instance_id} did not drain in time; killing it"));
                rollout.fleet.kill(&instance_id);
                Some(Vec::new())
            }
            Effect::RollBack {
                reason,
                stop,
                restore,
            } => {
                self.judged = None;
                steps.say(format!("rolling back: {reason}"));
                if let Some(new) = stop {
                    steps.say(format!("stopping {new}"));
                    steps.drain(&new);
                }
                for (old, new) in restore {
                    self.put_back(&old, &new).await;
                }
                rollout.fleet.prune();
                steps.end(Outcome::RolledBack, format!("rolled back: {reason}"));
                None
            }
            Effect::Done { replaced } => {
                rollout.fleet.prune();
                steps.end(
                    Outcome::Done,
                    format!(
                        "done: {} instance(s) of {} replaced by {}",
                        replaced.len(),
                        rollout.plan.service,
                        rollout.version
                    ),
                );
                None
            }
        }
    }

    /// Puts the old instance `old` back (its own binary and flags), waits
    /// until it is SERVING, then drains `new`, which replaced it.
    async fn put_back(&self, old: &str, new: &str) {
        let Some(original) = self.originals.get(old) else {
            return;
        };
        let steps = self.steps;
        let ready_timeout = steps.rollout.plan.settings.ready_timeout;
        match steps.start_like(original, original.binary.clone(), original.args.clone()) {
            Ok(restored) => {
                steps.say(format!(
                    "started {old} again (as {}, at {}); draining {new} once it is SERVING",
                    restored.name, restored.address
                ));
                if !steps.serving(restored.address, ready_timeout).await {
                    steps.say(format!(
                        "{} was not SERVING within {ready_timeout:?}; draining {new} anyway",
                        restored.name
                    ));
                }
            }
            Err(error) => steps.say(format!("cannot start {old} again: {error:#}")),
        }
        steps.drain(new);
    }
}
