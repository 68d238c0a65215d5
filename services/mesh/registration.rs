//! Keeps this instance registered: registers at start, retrying with backoff
//! while the registry is unreachable; watches its own record, and registers
//! again on its own when the registry restarts or forgets the instance;
//! deregisters at shutdown.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::mesh::backoff::Backoff;
use crate::mesh::client::{deadline, registry_client, request};
use crate::mesh::config::REGISTRY_CALL_TIMEOUT;
use crate::mesh::registry_nodes::RegistryNodes;
use crate::mesh::shutdown::Shutdown;
use crate::model::registry::{ChangeKind, Health, Registration, WatchUpdate};
use crate::pb::registry::v1 as pb;

/// A watch of the own record that lasted this long was not a quick break.
const STABLE_WATCH: Duration = Duration::from_secs(5);

/// Where the registration of this instance stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationState {
    /// Not registered (yet, or any more): trying.
    Registering,
    /// Registered with the registry node named.
    Registered {
        /// The id of the registry node that holds the registration.
        registry_node: String,
    },
    /// Stopped: deregistered, or shut down.
    Stopped,
}

/// The handle of a running registration.
#[derive(Debug)]
pub struct RegistrationHandle {
    state: watch::Receiver<RegistrationState>,
    own_health: watch::Receiver<Option<Health>>,
    stop: Shutdown,
    task: JoinHandle<()>,
    nodes: RegistryNodes,
    instance_id: String,
}

/// Why a watch of this instance's own record ended.
enum WatchEnd {
    /// The registry no longer holds the instance.
    Forgotten,
    /// The stream broke (registry restarted, network trouble).
    Broken(String),
    /// The registry ended the stream: it is stopping (or restarting).
    Closed,
    /// Shutting down.
    Stopped,
}

impl RegistrationHandle {
    /// Starts keeping `registration` (which must carry its instance id)
    /// registered through one of the registry `nodes` at a time (the next
    /// one at once when it fails), until [`Self::deregister`] or the
    /// handle is dropped. Once `shutting_down` is cancelled (the daemon's
    /// shutdown signal), a lost registry is no longer registered with again:
    /// the registry may be stopping as well (its own instance, registered
    /// with itself, always is), and its watches end before this daemon's
    /// shutdown reaches [`Self::deregister`].
    pub fn spawn(
        nodes: RegistryNodes,
        registration: Registration,
        backoff: Backoff,
        shutting_down: &Shutdown,
    ) -> Self {
        let (tx, state) = watch::channel(RegistrationState::Registering);
        let (health_tx, own_health) = watch::channel(None);
        // Its own signal, not the daemon's: at shutdown the record is still
        // watched until the registry has seen NOT_SERVING (see
        // `wait_for_health`); `deregister` (or dropping the handle) stops it.
        let stop = Shutdown::new();
        let instance_id = registration.instance_id.clone().unwrap_or_default();
        let task = tokio::spawn(maintain(
            nodes.clone(),
            registration,
            backoff,
            Signals {
                stop: stop.clone(),
                draining: shutting_down.clone(),
            },
            tx,
            health_tx,
        ));
        RegistrationHandle {
            state,
            own_health,
            stop,
            task,
            nodes,
            instance_id,
        }
    }

    /// The current state.
    pub fn state(&self) -> RegistrationState {
        self.state.borrow().clone()
    }

    /// A receiver of state changes.
    pub fn subscribe(&self) -> watch::Receiver<RegistrationState> {
        self.state.clone()
    }

    /// Waits until registered, or `timeout` passes; returns whether registered.
    pub async fn wait_registered(&self, timeout: Duration) -> bool {
        let mut rx = self.state.clone();
        let registered = rx.wait_for(|s| matches!(s, RegistrationState::Registered { .. }));
        matches!(tokio::time::timeout(timeout, registered).await, Ok(Ok(_)))
    }

    /// Waits until the registry's record of this instance shows `health`, or
    /// `timeout` passes; returns whether it does. Shutdown uses it so that
    /// dependents see NOT_SERVING (and stop sending) before the removal.
    pub async fn wait_for_health(&self, health: Health, timeout: Duration) -> bool {
        let mut rx = self.own_health.clone();
        let seen = rx.wait_for(|h| *h == Some(health));
        matches!(tokio::time::timeout(timeout, seen).await, Ok(Ok(_)))
    }

    /// Stops re-registering and removes the instance from the registry,
    /// within the registry call deadline. Returns whether the registry
    /// confirmed the removal.
    pub async fn deregister(mut self) -> bool {
        self.stop.cancel();
        let _ = (&mut self.task).await;
        let mut client = registry_client(self.nodes.current().channel);
        let message = pb::DeregisterRequest {
            instance_id: self.instance_id.clone(),
        };
        match deadline(
            REGISTRY_CALL_TIMEOUT,
            client.deregister(request(message, REGISTRY_CALL_TIMEOUT)),
        )
        .await
        {
            Ok(_) => {
                tracing::info!(instance = %self.instance_id, "deregistered");
                true
            }
            Err(status) if status.code() == tonic::Code::Unavailable => {
                tracing::info!(instance = %self.instance_id, error = %status.message(), "the registry is not there; not deregistered (it drops instances whose health checks fail)");
                false
            }
            Err(status) => {
                tracing::warn!(instance = %self.instance_id, error = %status.message(), "deregistration failed");
                false
            }
        }
    }
}

impl Drop for RegistrationHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What ends or changes a registration's task.
struct Signals {
    /// Stop at once.
    stop: Shutdown,
    /// Shutting down: do not register again.
    draining: Shutdown,
}

async fn maintain(
    nodes: RegistryNodes,
    registration: Registration,
    backoff: Backoff,
    signals: Signals,
    state: watch::Sender<RegistrationState>,
    own_health: watch::Sender<Option<Health>>,
) {
    let Signals { stop, draining } = signals;
    let message = pb::RegisterRequest::from(&registration);
    let instance_id = registration.instance_id.clone().unwrap_or_default();
    let mut attempt = 0u32;
    // Watches of the own record that broke soon after they opened, in a
    // row: a registry that ends every watch at once (it is shutting down)
    // is not asked again every few milliseconds.
    let mut quick_breaks = 0u32;
    let mut last_node: Option<String> = None;
    // The registry closed the watch itself (it is stopping): not a fault,
    // so waiting for it is not reported as one.
    let mut registry_left = false;
    loop {
        let node = nodes.current();
        let mut client = registry_client(node.channel.clone());
        let registered = deadline(
            REGISTRY_CALL_TIMEOUT,
            client.register(request(message.clone(), REGISTRY_CALL_TIMEOUT)),
        )
        .await;
        match registered {
            Ok(response) => {
                let node = response.into_inner().registry_node;
                match &last_node {
                    Some(previous) if *previous != node => {
                        tracing::info!(registry_node = %node, "registered again with a restarted registry")
                    }
                    Some(_) => tracing::info!(registry_node = %node, "registered again"),
                    None => {
                        tracing::info!(registry_node = %node, service = %registration.service, instance = %instance_id, address = %registration.address, "registered")
                    }
                }
                last_node = Some(node.clone());
                registry_left = false;
                state.send_replace(RegistrationState::Registered {
                    registry_node: node,
                });
                attempt = 0;
            }
            Err(status) => {
                nodes.failed(node.index);
                attempt = attempt.saturating_add(1);
                if !nodes.all_failed(attempt) {
                    tracing::info!(registry = %node.url, error = %status.message(), "registry node unreachable; trying the next");
                    continue;
                }
                let round = attempt / nodes.len() as u32 - 1;
                if round == 0 && registry_left {
                    tracing::info!(error = %status.message(), "the registry is not back yet; retrying registration");
                } else if round == 0 {
                    tracing::warn!(error = %status.message(), code = ?status.code(), "registry unreachable; retrying registration");
                }
                let delay = backoff.delay(round);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => continue,
                    _ = stop.cancelled() => break,
                }
            }
        }
        let watched_since = tokio::time::Instant::now();
        match watch_own_record(
            &mut client,
            &registration.service,
            &instance_id,
            &stop,
            &own_health,
        )
        .await
        {
            WatchEnd::Stopped => break,
            _ if draining.is_cancelled() => {
                tracing::debug!("the registry went away while this instance shuts down");
                break;
            }
            WatchEnd::Forgotten => {
                tracing::warn!("the registry forgot this instance; registering again");
            }
            end @ (WatchEnd::Broken(_) | WatchEnd::Closed) => {
                if watched_since.elapsed() > STABLE_WATCH {
                    quick_breaks = 0;
                }
                match end {
                    WatchEnd::Broken(error) if quick_breaks == 0 => {
                        tracing::warn!(error = %error, "lost the registry; registering again")
                    }
                    WatchEnd::Closed if quick_breaks == 0 => {
                        registry_left = true;
                        tracing::info!(
                            "the registry closed the watch (it is stopping); registering again when it is back"
                        )
                    }
                    _ => tracing::debug!(quick_breaks, "lost the registry again"),
                }
                // Another node at once, if there is one; the same one (or
                // all of them again) after a while.
                nodes.failed(node.index);
                quick_breaks = quick_breaks.saturating_add(1);
                let delay = if nodes.all_failed(quick_breaks) {
                    backoff.delay(quick_breaks / nodes.len() as u32 - 1)
                } else {
                    Duration::ZERO
                };
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {},
                    _ = stop.cancelled() => break,
                }
            }
        }
        state.send_replace(RegistrationState::Registering);
    }
    state.send_replace(RegistrationState::Stopped);
}

async fn watch_own_record(
    client: &mut crate::pb::registry::v1::registry_client::RegistryClient<Channel>,
    service: &str,
    instance_id: &str,
    stop: &Shutdown,
    own_health: &watch::Sender<Option<Health>>,
) -> WatchEnd {
    let watch = pb::WatchRequest {
        services: vec![service.to_owned()],
    };
    let opened = tokio::select! {
        opened = deadline(REGISTRY_CALL_TIMEOUT, client.watch(watch)) => opened,
        _ = stop.cancelled() => return WatchEnd::Stopped,
    };
    let mut stream = match opened {
        Ok(response) => response.into_inner(),
        Err(status) => return WatchEnd::Broken(status.message().to_owned()),
    };
    loop {
        let next = tokio::select! {
            next = stream.next() => next,
            _ = stop.cancelled() => return WatchEnd::Stopped,
        };
        let event = match next {
            Some(Ok(event)) => event,
            Some(Err(status)) => return WatchEnd::Broken(status.message().to_owned()),
            None => return WatchEnd::Closed,
        };
        match WatchUpdate::try_from(event) {
            Ok(WatchUpdate::Snapshot { instances, .. }) => {
                let Some(own) = instances.iter().find(|i| i.instance_id == instance_id) else {
                    return WatchEnd::Forgotten;
                };
                own_health.send_replace(Some(own.health));
            }
            Ok(WatchUpdate::Change(change)) => {
                if change.instance.instance_id != instance_id {
                    continue;
                }
                if change.kind == ChangeKind::Removed {
                    return WatchEnd::Forgotten;
                }
                own_health.send_replace(Some(change.instance.health));
            }
            Ok(WatchUpdate::Policy(_)) => {}
            Err(error) => return WatchEnd::Broken(error.to_string()),
        }
    }
}
