//! [`RegistryApi`]: the catalog as tools and the portal read it, in domain
//! types, each call with a deadline. It holds one channel to the registry
//! today; when the registry becomes several nodes, it is the one place that
//! learns to try the next.

use std::time::Duration;

use futures::stream::BoxStream;
use tonic::transport::Channel;

use crate::mesh::api::{CallError, Retry, request, stream, unary};
use crate::mesh::client::{lazy_channel, registry_client};
use crate::mesh::config::{ConfigError, REGISTRY_CALL_TIMEOUT};
use crate::mesh::tls::Tls;
use crate::model::registry::{Instance, WatchUpdate};
use crate::pb::registry::v1 as pb;

/// The registry's name in its own catalog.
pub const SERVICE: &str = "registry";

/// Calls the registry, each call within `timeout`.
#[derive(Debug, Clone)]
pub struct RegistryApi {
    channel: Channel,
    timeout: Duration,
}

impl RegistryApi {
    /// Calls the registry at `url` (connecting on first use, as `tls`
    /// says), each call within the registry call deadline.
    pub fn connect(url: &str, tls: &Tls) -> Result<Self, ConfigError> {
        Ok(Self::new(
            lazy_channel("--registry", url, SERVICE, tls)?,
            REGISTRY_CALL_TIMEOUT,
        ))
    }

    /// Calls the registry over `channel`, each call within `timeout`.
    pub fn new(channel: Channel, timeout: Duration) -> Self {
        RegistryApi { channel, timeout }
    }

    /// The instances of `service` (every service when `None`), healthy
    /// ones only unless `include_unhealthy`.
    pub async fn list(
        &self,
        service: Option<&str>,
        include_unhealthy: bool,
    ) -> Result<Vec<Instance>, CallError> {
        let mut client = registry_client(self.channel.clone());
        let message = pb::ListRequest {
            service: service.unwrap_or_default().to_owned(),
            include_unhealthy,
        };
        let call = client.list(request(message, self.timeout, Retry::Safe));
        unary(SERVICE, self.timeout, call)
            .await?
            .instances
            .into_iter()
            .map(Instance::try_from)
            .collect::<Result<_, _>>()
            .map_err(|e| CallError::malformed(SERVICE, e))
    }

    /// A snapshot of `services` (every service when empty), then every
    /// change. Only opening the stream has a deadline.
    pub async fn watch(
        &self,
        services: Vec<String>,
    ) -> Result<BoxStream<'static, Result<WatchUpdate, CallError>>, CallError> {
        let mut client = registry_client(self.channel.clone());
        let call = client.watch(pb::WatchRequest { services });
        stream(SERVICE, self.timeout, call, WatchUpdate::try_from).await
    }
}
