//! What every rollout strategy does the same way: a checked [`Rollout`]
//! and the [`Steps`] its shell takes on the running `up` (say what
//! happens, start a child like another, drain one, wait until the
//! registry sees one SERVING, read children's counters, set the service's
//! traffic policy). The strategies' shells ([`crate::cli::up::rolling`],
//! [`crate::cli::up::switch`]) are built from these.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::cli::listen::{address_of, bind_for_child};
use crate::cli::up::Kind;
use crate::cli::up::children::ChildSpec;
use crate::cli::up::fleet::{ChildInfo, Fleet};
use crate::cli::up::{rolling, switch};
use crate::mesh::api::{CallError, RegistryApi};
use crate::mesh::client::lazy_channel_to;
use crate::mesh::metrics::scrape::{Counters, counters, read_metrics};
use crate::mesh::{Shutdown, Tls};
use crate::model::registry::{ChangeKind, Health, WatchUpdate};
use crate::model::supervisor::{Conclusion, Outcome, Progress, RolloutPlan, Strategy};
use crate::model::traffic::TrafficPolicy;
use crate::rollout::Lifecycle;

/// How often a rollout lets time pass and reads the new instances' traffic.
pub const TICK: Duration = Duration::from_millis(500);
/// How long one read of an instance's `/metrics` may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// The registry's watch of one service.
pub type WatchStream = BoxStream<'static, Result<WatchUpdate, CallError>>;

/// The operator's conclusions of a blue-green switch, each with where to
/// tell what follows.
pub type Conclusions = mpsc::Receiver<(Conclusion, mpsc::Sender<Progress>)>;

/// One rollout, checked, ready to run.
#[derive(Debug)]
pub struct Rollout {
    /// What was asked.
    pub plan: RolloutPlan,
    /// The kind of daemon replaced.
    pub kind: Kind,
    /// The version the new binary says it is (or is told to report).
    pub version: String,
    /// The children.
    pub fleet: Arc<Fleet>,
    /// The registry: the service's watch, and its traffic policy.
    pub registry: RegistryApi,
    /// How `up` reaches the daemons (as the operators).
    pub tls: Tls,
}

impl Rollout {
    /// Runs the rollout to its end (or `up`'s shutdown), telling each step
    /// on `progress` (dropped when its reader is too slow or gone).
    pub async fn run(
        self,
        progress: mpsc::Sender<Progress>,
        conclusions: Conclusions,
        shutdown: Shutdown,
    ) {
        let mut steps = Steps {
            rollout: &self,
            progress,
        };
        match &self.plan.strategy {
            Strategy::Rolling => rolling::run(&mut steps, &shutdown).await,
            Strategy::BlueGreen => switch::blue_green(&mut steps, conclusions, &shutdown).await,
            Strategy::Canary(settings) => {
                switch::canary(&mut steps, settings.clone(), &shutdown).await
            }
        }
    }
}

/// The steps a rollout's shell takes, and where it tells them.
pub struct Steps<'a> {
    /// The rollout.
    pub rollout: &'a Rollout,
    progress: mpsc::Sender<Progress>,
}

impl Steps<'_> {
    /// Tells the caller (and the log) one step.
    pub fn say(&self, message: String) {
        tracing::info!(service = %self.rollout.plan.service, "rollout: {message}");
        let _ = self.progress.try_send(Progress {
            message,
            outcome: None,
        });
    }

    /// Tells how the rollout (or this part of it) ended.
    pub fn end(&self, outcome: Outcome, message: String) {
        tracing::info!(service = %self.rollout.plan.service, ?outcome, "rollout: {message}");
        let _ = self.progress.try_send(Progress {
            message,
            outcome: Some(outcome),
        });
    }

    /// From now on, tells the steps to `progress` (a new caller).
    pub fn tell(&mut self, progress: mpsc::Sender<Progress>) {
        self.progress = progress;
    }

    /// The registry's watch of the service, if it can be opened.
    pub async fn watch(&self) -> Option<WatchStream> {
        let service = self.rollout.plan.service.clone();
        match self.rollout.registry.watch(vec![service]).await {
            Ok(stream) => Some(stream),
            Err(error) => {
                tracing::warn!(%error, "rollout: cannot watch the registry");
                None
            }
        }
    }

    /// Starts a child like `old` (its host, flags `args`, a new port)
    /// running `binary`.
    pub fn start_like(
        &self,
        old: &ChildInfo,
        binary: PathBuf,
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

    /// Starts a child of the new version like `old`: the new binary, the
    /// old one's flags with the plan's.
    pub fn start_new(&self, old: &ChildInfo) -> anyhow::Result<ChildInfo> {
        let plan = &self.rollout.plan;
        self.start_like(old, plan.binary.clone(), with_flags(&old.args, &plan.args))
    }

    /// Drains the child `name`; returns what becomes true once it has ended.
    pub fn drain(&self, name: &str) -> Option<tokio::sync::watch::Receiver<bool>> {
        self.rollout.fleet.drain(name)
    }

    /// Drains the children `names` and waits until every one has ended.
    pub async fn drain_all(&self, names: &[String]) {
        let ends: Vec<_> = names.iter().filter_map(|name| self.drain(name)).collect();
        for mut ended in ends {
            let _ = ended.wait_for(|ended| *ended).await;
        }
        self.rollout.fleet.prune();
    }

    /// Waits until the registry lists the instance at `address` SERVING,
    /// within `patience`.
    pub async fn serving(&self, address: SocketAddr, patience: Duration) -> bool {
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

    /// The version the children `old` run, as the registry lists them;
    /// refused when they run several, or the registry does not answer.
    pub async fn version_of(&self, old: &[ChildInfo]) -> Result<String, String> {
        let listed = self
            .rollout
            .registry
            .list(Some(&self.rollout.plan.service), true)
            .await
            .map_err(|e| format!("the registry does not answer: {e}"))?;
        let addresses: Vec<String> = old.iter().map(|c| c.address.to_string()).collect();
        let mut versions: Vec<&str> = listed
            .iter()
            .filter(|i| addresses.contains(&i.address))
            .map(|i| i.version.as_str())
            .collect();
        versions.sort();
        versions.dedup();
        match versions.as_slice() {
            [version] => Ok((*version).to_owned()),
            [] => Err("the registry lists none of its instances".to_owned()),
            several => Err(format!(
                "its instances run several versions ({}): finish that update first",
                several.join(", ")
            )),
        }
    }

    /// A channel to the child at `address` (for its `/metrics`).
    pub fn channel_to(&self, address: SocketAddr) -> Option<Channel> {
        lazy_channel_to(
            &address.to_string(),
            self.rollout.kind.name(),
            &self.rollout.tls,
        )
        .ok()
    }

    /// The counters of the instances `children`, added up; `None` when
    /// one of them cannot be read.
    pub async fn counters(&self, children: &[(SocketAddr, Channel)]) -> Option<Counters> {
        let mut total = Counters::default();
        for (address, channel) in children {
            let address = address.to_string();
            let read = read_metrics(channel.clone(), &address);
            let text = tokio::time::timeout(SCRAPE_TIMEOUT, read).await.ok()??;
            total.add(&counters(&text));
        }
        Some(total)
    }

    /// Sets the service's traffic policy; says so when it cannot.
    pub async fn route(&self, policy: TrafficPolicy) -> bool {
        let service = &self.rollout.plan.service;
        match self.rollout.registry.set_policy(service, &policy).await {
            Ok(record) => {
                self.say(format!("traffic of {service}: {}", record.policy));
                true
            }
            Err(error) => {
                self.say(format!(
                    "cannot set the traffic policy of {service}: {error}"
                ));
                false
            }
        }
    }
}

/// Which new children have been SERVING: before that, NOT_SERVING or
/// UNREACHABLE only means not ready yet (a grading instance serves
/// NOT_SERVING until its database is open), which the ready timeout
/// judges; after it, they mean unhealthy.
#[derive(Debug, Default)]
pub struct Readiness {
    serving: HashSet<String>,
}

impl Readiness {
    /// What `update` says of the child `name` at `address`.
    pub fn lifecycle(
        &mut self,
        update: &WatchUpdate,
        name: &str,
        address: SocketAddr,
    ) -> Vec<Lifecycle> {
        let address = address.to_string();
        let seen: Vec<(Health, bool)> = match update {
            WatchUpdate::Snapshot { instances, .. } => instances
                .iter()
                .filter(|i| i.address == address)
                .map(|i| (i.health, false))
                .collect(),
            WatchUpdate::Change(change) if change.instance.address == address => {
                vec![(change.instance.health, change.kind == ChangeKind::Removed)]
            }
            WatchUpdate::Change(_) | WatchUpdate::Policy(_) => Vec::new(),
        };
        let mut events = Vec::new();
        for (health, removed) in seen {
            let was_serving = self.serving.contains(name);
            match (removed, health) {
                (true, _) => events.push(Lifecycle::unhealthy(name, "deregistered")),
                (false, Health::Serving) => {
                    self.serving.insert(name.to_owned());
                    events.push(Lifecycle::serving(name));
                }
                (false, Health::NotServing | Health::Unreachable) if was_serving => {
                    events.push(Lifecycle::unhealthy(name, health.as_str()));
                }
                (false, _) => {}
            }
        }
        events
    }
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
    fn not_serving_before_a_first_serving_is_not_ready_yet_after_it_unhealthy() {
        use crate::model::registry::{Change, Instance};
        let address: SocketAddr = "127.0.0.1:7".parse().unwrap();
        let seen = |health| {
            let mut instance = Instance::for_test("grading", "g", health);
            instance.address = address.to_string();
            WatchUpdate::Change(Box::new(Change {
                kind: ChangeKind::HealthChanged,
                instance,
            }))
        };
        let mut readiness = Readiness::default();
        assert!(
            readiness
                .lifecycle(&seen(Health::NotServing), "g", address)
                .is_empty()
        );
        assert_eq!(
            readiness.lifecycle(&seen(Health::Serving), "g", address),
            [Lifecycle::serving("g")]
        );
        assert_eq!(
            readiness.lifecycle(&seen(Health::Unreachable), "g", address),
            [Lifecycle::unhealthy("g", "UNREACHABLE")]
        );
        let elsewhere: SocketAddr = "127.0.0.1:8".parse().unwrap();
        assert!(
            readiness
                .lifecycle(&seen(Health::Serving), "h", elsewhere)
                .is_empty()
        );
    }

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
