//! A rolling update carried out by `up`: the thin shell around
//! [`RollingUpdate`]. It turns what it sees into the machine's events (the
//! registry's watch of the service: a new instance SERVING or unhealthy; a
//! drained child's end; the judged instance's own `/metrics`: requests
//! answered and failed) and carries out the machine's effects on the
//! [`Fleet`]: start a new child (a new socket, the new binary, the old
//! one's flags with the plan's), drain an old one, kill, roll back (the old
//! instances started again from their own binary and flags, each SERVING
//! before the new one that replaced it drains). Each step is told to the
//! caller as a [`Progress`] message and to `up`'s log.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::cli::listen::{address_of, bind_for_child};
use crate::cli::up::Kind;
use crate::cli::up::children::ChildSpec;
use crate::cli::up::fleet::{ChildInfo, Fleet};
use crate::mesh::api::{CallError, RegistryApi};
use crate::mesh::client::lazy_channel_to;
use crate::mesh::metrics::scrape::{counters, read_metrics};
use crate::mesh::{Shutdown, Tls};
use crate::model::registry::{ChangeKind, Health, Instance, WatchUpdate};
use crate::model::supervisor::{Outcome, Progress, RolloutPlan};
use crate::rollout::Lifecycle;
use crate::rollout::rolling::{Effect, Event, RollingUpdate};

/// How often time is let pass and the judged instance's traffic read.
const TICK: Duration = Duration::from_millis(500);
/// How long one read of the judged instance's `/metrics` may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long to wait before opening the registry's watch again.
const REWATCH_DELAY: Duration = Duration::from_millis(500);

/// One rollout, checked, ready to run.
#[derive(Debug)]
pub struct Rollout {
    /// What was asked.
    pub plan: RolloutPlan,
    /// The kind of daemon replaced.
    pub kind: Kind,
    /// The version the new binary says it is.
    pub version: String,
    /// The children.
    pub fleet: Arc<Fleet>,
    /// The registry, to watch the service.
    pub registry: RegistryApi,
    /// How `up` reaches the daemons (for their `/metrics`).
    pub tls: Tls,
}

/// The registry's watch of one service, opened again when it breaks.
type WatchStream = BoxStream<'static, Result<WatchUpdate, CallError>>;

impl Rollout {
    /// Runs the rollout to its end (or `up`'s shutdown), telling each step
    /// on `progress` (dropped when its reader is too slow or gone).
    pub async fn run(self, progress: mpsc::Sender<Progress>, shutdown: Shutdown) {
        let mut shell = Shell {
            rollout: &self,
            progress,
            originals: HashMap::new(),
            judged: None,
        };
        shell.go(&shutdown).await;
    }
}

/// The rollout's state outside the machine.
struct Shell<'a> {
    rollout: &'a Rollout,
    progress: mpsc::Sender<Progress>,
    /// The old instances as they ran, by name, to put back on a rollback.
    originals: HashMap<String, ChildInfo>,
    /// The new instance being judged, and a channel to it.
    judged: Option<(String, SocketAddr, tonic::transport::Channel)>,
}

impl Shell<'_> {
    /// Tells the caller (and the log) one step.
    fn say(&self, message: String) {
        tracing::info!(service = %self.rollout.plan.service, "rollout: {message}");
        let _ = self.progress.try_send(Progress {
            message,
            outcome: None,
        });
    }

    /// Tells the end.
    fn end(&self, outcome: Outcome, message: String) {
        tracing::info!(service = %self.rollout.plan.service, ?outcome, "rollout: {message}");
        let _ = self.progress.try_send(Progress {
            message,
            outcome: Some(outcome),
        });
    }

    async fn watch(&self) -> Option<WatchStream> {
        let service = self.rollout.plan.service.clone();
        match self.rollout.registry.watch(vec![service]).await {
            Ok(stream) => Some(stream),
            Err(error) => {
                tracing::warn!(%error, "rollout: cannot watch the registry; trying again");
                None
            }
        }
    }

    async fn go(&mut self, shutdown: &Shutdown) {
        let rollout = self.rollout;
        let old = rollout.fleet.running(rollout.kind);
        self.originals = old.iter().map(|c| (c.name.clone(), c.clone())).collect();
        self.say(format!(
            "replacing {} instance(s) of {} with {} ({}), one at a time",
            old.len(),
            rollout.plan.service,
            rollout.version,
            rollout.plan.binary.display()
        ));
        let Some(mut watch) = self.watch().await else {
            self.end(
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
                let events = match self.apply(effect, &exits_tx).await {
                    Applied::Events(events) => events,
                    Applied::Over => return,
                };
                for event in events {
                    queue.extend(machine.on_event(event, std::time::Instant::now()));
                }
            }
            let events: Vec<Event> = tokio::select! {
                update = watch.next() => match update {
                    Some(Ok(update)) => self.lifecycle_of(update),
                    Some(Err(_)) | None => {
                        tokio::time::sleep(REWATCH_DELAY).await;
                        if let Some(fresh) = self.watch().await {
                            watch = fresh;
                        }
                        Vec::new()
                    }
                },
                Some(name) = exits.recv() => vec![Lifecycle::exited(&name).into()],
                _ = tick.tick() => {
                    queue.extend(machine.on_tick(std::time::Instant::now()));
                    self.traffic().await.into_iter().collect()
                }
                _ = shutdown.cancelled() => {
                    self.end(Outcome::RolledBack, "stopped: gradebook up is stopping".to_owned());
                    return;
                }
            };
            for event in events {
                queue.extend(machine.on_event(event, std::time::Instant::now()));
            }
        }
    }

    /// What the registry's message says of the children this rollout
    /// judges: SERVING, or unhealthy.
    fn lifecycle_of(&self, update: WatchUpdate) -> Vec<Event> {
        let seen: Vec<(Instance, bool)> = match update {
            WatchUpdate::Snapshot { instances, .. } => {
                instances.into_iter().map(|i| (i, false)).collect()
            }
            WatchUpdate::Change(change) => {
                vec![(change.instance, change.kind == ChangeKind::Removed)]
            }
            WatchUpdate::Policy(_) => Vec::new(),
        };
        let Some((judged, address, _)) = &self.judged else {
            return Vec::new();
        };
        seen.into_iter()
            .filter(|(instance, _)| instance.address == address.to_string())
            .filter_map(|(instance, removed)| match (removed, instance.health) {
                (true, _) => Some(Lifecycle::unhealthy(judged, "deregistered").into()),
                (false, Health::Serving) => Some(Lifecycle::serving(judged).into()),
                (false, Health::NotServing | Health::Unreachable) => {
                    Some(Lifecycle::unhealthy(judged, instance.health.as_str()).into())
                }
                (false, Health::Unknown) => None,
            })
            .collect()
    }

    /// The judged instance's requests so far, from its own `/metrics`.
    async fn traffic(&self) -> Option<Event> {
        let (name, address, channel) = self.judged.as_ref()?;
        let address = address.to_string();
        let read = read_metrics(channel.clone(), &address);
        let text = tokio::time::timeout(SCRAPE_TIMEOUT, read).await.ok()??;
        let seen = counters(&text);
        Some(Event::Traffic {
            instance_id: name.clone(),
            requests: seen.requests as u64,
            failed: seen.errors as u64,
        })
    }

    /// Carries out one effect; returns the events it brought, or that the
    /// rollout is over.
    async fn apply(&mut self, effect: Effect, exits: &mpsc::Sender<String>) -> Applied {
        let rollout = self.rollout;
        match effect {
            Effect::Start { replacing } => {
                let Some(old) = self.originals.get(&replacing).cloned() else {
                    return Applied::Events(vec![
                        Lifecycle::start_failed(&format!("{replacing} is not running")).into(),
                    ]);
                };
                let args = with_flags(&old.args, &rollout.plan.args);
                match self.start_like(&old, rollout.plan.binary.clone(), args) {
                    Ok(new) => {
                        self.say(format!(
                            "started {} at {} in place of {replacing}; waiting for it to be SERVING",
                            new.name, new.address
                        ));
                        let channel = lazy_channel_to(
                            &new.address.to_string(),
                            rollout.kind.name(),
                            &rollout.tls,
                        );
                        match channel {
                            Ok(channel) => {
                                self.judged = Some((new.name.clone(), new.address, channel))
                            }
                            Err(error) => {
                                tracing::warn!(%error, "cannot read the new instance's metrics")
                            }
                        }
                        Applied::Events(vec![Lifecycle::started(&new.name).into()])
                    }
                    Err(error) => {
                        Applied::Events(vec![Lifecycle::start_failed(&format!("{error:#}")).into()])
                    }
                }
            }
            Effect::Drain { instance_id } => {
                if let Some(judged) = self.judged.take() {
                    self.say(format!(
                        "{} is SERVING and answers its requests; draining {instance_id}",
                        judged.0
                    ));
                }
                self.drain(&instance_id, Some(exits));
                Applied::Events(Vec::new())
            }
            Effect::Kill { instance_id } => {
                self.say(format!("{instance_id} did not drain in time; killing it"));
                rollout.fleet.kill(&instance_id);
                Applied::Events(Vec::new())
            }
            Effect::RollBack {
                reason,
                stop,
                restore,
            } => {
                self.judged = None;
                self.say(format!("rolling back: {reason}"));
                if let Some(new) = stop {
                    self.say(format!("stopping {new}"));
                    self.drain(&new, None);
                }
                for (old, new) in restore {
                    self.put_back(&old, &new).await;
                }
                rollout.fleet.prune();
                self.end(Outcome::RolledBack, format!("rolled back: {reason}"));
                Applied::Over
            }
            Effect::Done { replaced } => {
                rollout.fleet.prune();
                self.end(
                    Outcome::Done,
                    format!(
                        "done: {} instance(s) of {} replaced by {}",
                        replaced.len(),
                        rollout.plan.service,
                        rollout.version
                    ),
                );
                Applied::Over
            }
        }
    }

    /// Starts a child like `old` (its host, flags `args`, a new port)
    /// running `binary`.
    fn start_like(
        &self,
        old: &ChildInfo,
        binary: std::path::PathBuf,
        args: Vec<String>,
    ) -> anyhow::Result<ChildInfo> {
        let listener = bind_for_child(SocketAddr::new(old.address.ip(), 0))?;
        let address = address_of(&listener)?;
        let name = self.rollout.fleet.fresh_name(old.kind);
        let spec = ChildSpec {
            name: name.clone(),
            kind: old.kind,
            binary,
            args: with_flags(&args, &[("--listen".to_owned(), address.to_string())]),
            listener,
            address,
        };
        self.rollout.fleet.start(spec);
        self.rollout
            .fleet
            .get(&name)
            .ok_or_else(|| anyhow::anyhow!("{name} ended at once"))
    }

    /// Drains the child `name`; tells `exits` once it has ended.
    fn drain(&self, name: &str, exits: Option<&mpsc::Sender<String>>) {
        let Some(mut ended) = self.rollout.fleet.drain(name) else {
            return;
        };
        let (name, exits) = (name.to_owned(), exits.cloned());
        tokio::spawn(async move {
            let _ = ended.wait_for(|ended| *ended).await;
            if let Some(exits) = exits {
                let _ = exits.send(name).await;
            }
        });
    }

    /// Puts the old instance `old` back (its own binary and flags), waits
    /// until it is SERVING, then drains `new`, which replaced it.
    async fn put_back(&self, old: &str, new: &str) {
        let Some(original) = self.originals.get(old) else {
            return;
        };
        let ready_timeout = self.rollout.plan.settings.ready_timeout;
        match self.start_like(original, original.binary.clone(), original.args.clone()) {
            Ok(restored) => {
                self.say(format!(
                    "started {} again (as {}, at {}); draining {new} once it is SERVING",
                    old, restored.name, restored.address
                ));
                if !self.serving(restored.address, ready_timeout).await {
                    self.say(format!(
                        "{} was not SERVING within {ready_timeout:?}; draining {new} anyway",
                        restored.name
                    ));
                }
            }
            Err(error) => self.say(format!("cannot start {old} again: {error:#}")),
        }
        self.drain(new, None);
    }

    /// Waits until the registry lists the instance at `address` SERVING.
    async fn serving(&self, address: SocketAddr, patience: Duration) -> bool {
        let address = address.to_string();
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            let listed = self
                .rollout
                .registry
                .list(Some(&self.rollout.plan.service), true)
                .await;
            if let Ok(instances) = listed
                && instances
                    .iter()
                    .any(|i| i.address == address && i.health == Health::Serving)
            {
                return true;
            }
            tokio::time::sleep(TICK).await;
        }
        false
    }
}

/// What carrying out an effect came to.
enum Applied {
    /// Events for the machine.
    Events(Vec<Event>),
    /// The rollout is over.
    Over,
}

/// `args` with each of `flags` set: replacing the value of a flag already
/// there, appended otherwise.
pub fn with_flags(args: &[String], flags: &[(String, String)]) -> Vec<String> {
    let mut args = args.to_vec();
    for (flag, value) in flags {
        match args.iter().position(|a| a == flag) {
            Some(at) if at + 1 < args.len() => args[at + 1] = value.clone(),
            _ => args.extend([flag.clone(), value.clone()]),
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_replace_their_old_values_or_are_added() {
        let args: Vec<String> = ["--listen", "a:1", "--data-dir", "d"]
            .map(String::from)
            .to_vec();
        let flags = [
            ("--listen".to_owned(), "a:2".to_owned()),
            ("--report-version".to_owned(), "2.0.0".to_owned()),
        ];
        assert_eq!(
            with_flags(&args, &flags),
            [
                "--listen",
                "a:2",
                "--data-dir",
                "d",
                "--report-version",
                "2.0.0"
            ]
        );
    }
}
