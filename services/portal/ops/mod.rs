//! The live operations view behind `/services`: every instance's health
//! with its history, its version, and its request rate, error ratio and
//! p99 latency over the last minutes, kept up to date while the portal
//! runs.
//!
//! Two tasks feed one [`Fleet`] and end with the portal's shutdown: one
//! follows the registry's watch of every service (the history starts when
//! this portal does), the other reads every instance's `GET /metrics`
//! every few seconds ([`DEFAULT_SAMPLE_INTERVAL`]), over the mesh's mutual TLS as the portal,
//! each read within [`SCRAPE_TIMEOUT`] and all of them at once. Each
//! change bumps a version on a `watch` channel, which the page's
//! Server-Sent Events follow (the newest state replaces the last, so a
//! slow browser never holds anyone up).
//!
//! # Layout
//!
//! - [`fleet`]: the state machine: instances, history, samples, figures.
//! - [`page`]: the page, its live table and its inline charts.

pub mod fleet;
pub mod page;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::mesh::api::RegistryApi;
use crate::mesh::client::lazy_channel_to;
use crate::mesh::metrics::scrape::{self, read_metrics};
use crate::mesh::{Backoff, Shutdown, Tls};
use crate::portal::ops::fleet::{Fleet, InstanceKey, Sample};

/// How often every instance's counters are read, by default.
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_secs(5);
/// How long one read of `/metrics` may take.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// The view, shared by the page handlers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct OpsView {
    fleet: Arc<Mutex<Fleet>>,
    version: watch::Sender<u64>,
}

impl Default for OpsView {
    fn default() -> Self {
        OpsView {
            fleet: Arc::default(),
            version: watch::Sender::new(0),
        }
    }
}

impl OpsView {
    /// A view fed by the registry through `registry` and by reading each
    /// instance as `tls` says every `interval`, until `shutdown`.
    pub fn start(registry: RegistryApi, tls: Tls, interval: Duration, shutdown: &Shutdown) -> Self {
        let view = OpsView::default();
        tokio::spawn(follow_registry(registry, view.clone(), shutdown.clone()));
        tokio::spawn(sample(tls, interval, view.clone(), shutdown.clone()));
        view
    }

    /// The state now (held briefly: copy out what is needed).
    pub fn fleet(&self) -> MutexGuard<'_, Fleet> {
        self.fleet.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes each time the state does.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn changed(&self) {
        self.version.send_modify(|version| *version += 1);
    }
}

/// Follows the registry's watch of every service, reopening it with
/// backoff when it breaks.
async fn follow_registry(registry: RegistryApi, view: OpsView, shutdown: Shutdown) {
    let backoff = Backoff::default();
    let mut attempt = 0;
    while !shutdown.is_cancelled() {
        let opened = tokio::select! {
            opened = registry.watch(Vec::new()) => opened,
            _ = shutdown.cancelled() => return,
        };
        if let Ok(mut stream) = opened {
            loop {
                let next = tokio::select! {
                    next = stream.next() => next,
                    _ = shutdown.cancelled() => return,
                };
                let Some(Ok(update)) = next else { break };
                attempt = 0;
                view.fleet().apply(update, SystemTime::now());
                view.changed();
            }
        }
        view.fleet().lost();
        view.changed();
        let delay = backoff.delay(attempt);
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Reads every instance's counters every `interval`.
async fn sample(tls: Tls, interval: Duration, view: OpsView, shutdown: Shutdown) {
    let mut channels: HashMap<String, Channel> = HashMap::new();
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let targets = view.fleet().targets();
        channels.retain(|address, _| targets.iter().any(|(_, a)| a == address));
        let reads = targets.into_iter().filter_map(|((service, id), address)| {
            let channel = match channels.get(&address) {
                Some(channel) => channel.clone(),
                None => {
                    let channel = lazy_channel_to(&address, &service, &tls).ok()?;
                    channels.insert(address.clone(), channel.clone());
                    channel
                }
            };
            Some(async move {
                let read = tokio::time::timeout(SCRAPE_TIMEOUT, read_metrics(channel, &address));
                let key: InstanceKey = (service, id);
                (key, read.await.ok().flatten())
            })
        });
        let results = tokio::select! {
            results = futures::future::join_all(reads) => results,
            _ = shutdown.cancelled() => return,
        };
        let now = SystemTime::now();
        {
            let mut fleet = view.fleet();
            for (key, text) in results {
                if let Some(text) = text {
                    let counters = scrape::counters(&text);
                    fleet.sampled(&key, Sample { at: now, counters });
                }
            }
        }
        view.changed();
    }
}
