//! [`RegistryApi`]: the catalog as tools and the portal read it, in domain
//! types, each call with a deadline, through one registry node at a time:
//! a call a node cannot answer (unavailable, or out of time) is tried on
//! the next node at once, each node once.

use std::time::Duration;

use futures::stream::BoxStream;

use crate::mesh::api::{CallError, Retry, request, stream, unary};
use crate::mesh::client::registry_client;
use crate::mesh::config::{ConfigError, REGISTRY_CALL_TIMEOUT};
use crate::mesh::registry_nodes::RegistryNodes;
use crate::mesh::tls::Tls;
use crate::model::registry::{Instance, WatchUpdate};
use crate::model::traffic::{PolicyRecord, TrafficPolicy};
use crate::pb::registry::v1 as pb;

/// The registry's name in its own catalog.
pub const SERVICE: &str = "registry";

/// Calls the registry, each call within `timeout`.
#[derive(Debug, Clone)]
pub struct RegistryApi {
    nodes: RegistryNodes,
    timeout: Duration,
}

/// What `List` answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing {
    /// The instances.
    pub instances: Vec<Instance>,
    /// The node that answered has just started and has not caught up with
    /// its peers: instances registered through other nodes may be missing.
    pub catching_up: bool,
}

impl RegistryApi {
    /// Calls the registry at `urls` (one or several, comma-separated;
    /// connecting on first use, as `tls` says), each call within the
    /// registry call deadline.
    pub fn connect(urls: &str, tls: &Tls) -> Result<Self, ConfigError> {
        Ok(Self::new(
            RegistryNodes::new("--registry", urls, tls)?,
            REGISTRY_CALL_TIMEOUT,
        ))
    }

    /// Calls the registry `nodes`, each call within `timeout`.
    pub fn new(nodes: RegistryNodes, timeout: Duration) -> Self {
        RegistryApi { nodes, timeout }
    }

    /// Runs `call` on the node in use, and on the next ones while a node
    /// cannot answer: each node once.
    async fn on_some_node<T, F, Fut>(&self, mut call: F) -> Result<T, CallError>
    where
        F: FnMut(tonic::transport::Channel) -> Fut,
        Fut: std::future::Future<Output = Result<T, CallError>>,
    {
        let mut tries = 0;
        loop {
            let node = self.nodes.current();
            match call(node.channel).await {
                Err(error) if error.is_outage() && tries + 1 < self.nodes.len() => {
                    self.nodes.failed(node.index);
                    tries += 1;
                }
                Err(error) if error.is_outage() => {
                    self.nodes.failed(node.index);
                    return Err(error);
                }
                result => return result,
            }
        }
    }

    /// The instances of `service` (every service when `None`), healthy
    /// ones only unless `include_unhealthy`.
    pub async fn list(
        &self,
        service: Option<&str>,
        include_unhealthy: bool,
    ) -> Result<Vec<Instance>, CallError> {
        Ok(self.listing(service, include_unhealthy).await?.instances)
    }

    /// As [`RegistryApi::list`], with whether the node that answered is
    /// still catching up with its peers.
    pub async fn listing(
        &self,
        service: Option<&str>,
        include_unhealthy: bool,
    ) -> Result<Listing, CallError> {
        let message = pb::ListRequest {
            service: service.unwrap_or_default().to_owned(),
            include_unhealthy,
        };
        let response = self
            .on_some_node(|channel| {
                let message = message.clone();
                async move {
                    let mut client = registry_client(channel);
                    let call = client.list(request(message, self.timeout, Retry::Safe));
                    unary(SERVICE, self.timeout, call).await
                }
            })
            .await?;
        let instances = response
            .instances
            .into_iter()
            .map(Instance::try_from)
            .collect::<Result<_, _>>()
            .map_err(|e| CallError::malformed(SERVICE, e))?;
        Ok(Listing {
            instances,
            catching_up: response.catching_up,
        })
    }

    /// The traffic policies set, of `service` (every service when `None`).
    pub async fn policies(&self, service: Option<&str>) -> Result<Vec<PolicyRecord>, CallError> {
        let message = pb::ListTrafficPoliciesRequest {
            service: service.unwrap_or_default().to_owned(),
        };
        let response = self
            .on_some_node(|channel| {
                let message = message.clone();
                async move {
                    let mut client = registry_client(channel);
                    let call =
                        client.list_traffic_policies(request(message, self.timeout, Retry::Safe));
                    unary(SERVICE, self.timeout, call).await
                }
            })
            .await?;
        response
            .policies
            .into_iter()
            .enumerate()
            .map(|(i, p)| PolicyRecord::from_pb(&format!("policies[{i}]"), p))
            .collect::<Result<_, _>>()
            .map_err(|e| CallError::malformed(SERVICE, e))
    }

    /// Sets `service`'s traffic policy ([`TrafficPolicy::Equal`] clears
    /// it); returns the record the registry now holds. Setting the same
    /// policy twice does no harm, so a node that cannot answer is skipped.
    pub async fn set_policy(
        &self,
        service: &str,
        policy: &TrafficPolicy,
    ) -> Result<PolicyRecord, CallError> {
        let mut wire = pb::TrafficPolicy::from(&PolicyRecord {
            service: service.to_owned(),
            policy: policy.clone(),
            version: Default::default(),
            set_at: std::time::UNIX_EPOCH,
        });
        wire.record_version = None;
        wire.set_at = None;
        let message = pb::SetTrafficPolicyRequest { policy: Some(wire) };
        let response = self
            .on_some_node(|channel| {
                let message = message.clone();
                async move {
                    let mut client = registry_client(channel);
                    let call =
                        client.set_traffic_policy(request(message, self.timeout, Retry::Safe));
                    unary(SERVICE, self.timeout, call).await
                }
            })
            .await?;
        let policy = response
            .policy
            .ok_or_else(|| CallError::malformed(SERVICE, "policy: missing"))?;
        PolicyRecord::from_pb("policy", policy).map_err(|e| CallError::malformed(SERVICE, e))
    }

    /// A snapshot of `services` (every service when empty), then every
    /// change. Only opening the stream has a deadline.
    pub async fn watch(
        &self,
        services: Vec<String>,
    ) -> Result<BoxStream<'static, Result<WatchUpdate, CallError>>, CallError> {
        self.on_some_node(|channel| {
            let services = services.clone();
            async move {
                let mut client = registry_client(channel);
                let call = client.watch(pb::WatchRequest { services });
                stream(SERVICE, self.timeout, call, WatchUpdate::try_from).await
            }
        })
        .await
    }
}
