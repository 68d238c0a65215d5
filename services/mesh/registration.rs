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
use crate::mesh::shutdown::Shutdown;
use crate::model::registry::{ChangeKind, Registration, WatchUpdate};
use crate::pb::registry::v1 as pb;

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
    stop: Shutdown,
    task: JoinHandle<()>,
    channel: Channel,
    instance_id: String,
}

/// Why a watch of this instance's own record ended.
enum WatchEnd {
    /// The registry no longer holds the instance.
    Forgotten,
    /// The stream broke (registry restarted, network trouble).
    Broken(String),
    /// Shutting down.
    Stopped,
}

impl RegistrationHandle {
    /// Starts keeping `registration` (which must carry its instance id)
    /// registered through `channel`, until `shutdown` or [`Self::deregister`].
    pub fn spawn(
        channel: Channel,
        registration: Registration,
        backoff: Backoff,
        shutdown: &Shutdown,
    ) -> Self {
        let (tx, state) = watch::channel(RegistrationState::Registering);
        let stop = shutdown.child_token();
        let instance_id = registration.instance_id.clone().unwrap_or_default();
        let task = tokio::spawn(maintain(
            channel.clone(),
            registration,
            backoff,
            stop.clone(),
            tx,
        ));
        RegistrationHandle {
            state,
            stop,
            task,
            channel,
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

    /// Stops re-registering and removes the instance from the registry,
    /// within the registry call deadline. Returns whether the registry
    /// confirmed the removal.
    pub async fn deregister(self) -> bool {
        self.stop.cancel();
        let _ = self.task.await;
        let mut client = registry_client(self.channel);
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
            Err(status) => {
                tracing::warn!(instance = %self.instance_id, error = %status.message(), "deregistration failed");
                false
            }
        }
    }
}

async fn maintain(
    channel: Channel,
    registration: Registration,
    backoff: Backoff,
    stop: Shutdown,
    state: watch::Sender<RegistrationState>,
) {
    let mut client = registry_client(channel);
    let message = pb::RegisterRequest::from(&registration);
    let instance_id = registration.instance_id.clone().unwrap_or_default();
    let mut attempt = 0u32;
    let mut last_node: Option<String> = None;
    loop {
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
                state.send_replace(RegistrationState::Registered {
                    registry_node: node,
                });
                attempt = 0;
            }
            Err(status) => {
                if attempt == 0 {
                    tracing::warn!(error = %status.message(), code = ?status.code(), "registry unreachable; retrying registration");
                }
                let delay = backoff.delay(attempt);
                attempt = attempt.saturating_add(1);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => continue,
                    _ = stop.cancelled() => break,
                }
            }
        }
        match watch_own_record(&mut client, &registration.service, &instance_id, &stop).await {
            WatchEnd::Stopped => break,
            WatchEnd::Forgotten => {
                tracing::warn!("the registry forgot this instance; registering again");
            }
            WatchEnd::Broken(error) => {
                tracing::warn!(error = %error, "lost the registry; registering again");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.delay(0)) => {},
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
            None => return WatchEnd::Broken("watch stream ended".into()),
        };
        match WatchUpdate::try_from(event) {
            Ok(WatchUpdate::Snapshot { instances, .. }) => {
                if !instances.iter().any(|i| i.instance_id == instance_id) {
                    return WatchEnd::Forgotten;
                }
            }
            Ok(WatchUpdate::Change(change)) => {
                if change.kind == ChangeKind::Removed && change.instance.instance_id == instance_id
                {
                    return WatchEnd::Forgotten;
                }
            }
            Err(error) => return WatchEnd::Broken(error.to_string()),
        }
    }
}
