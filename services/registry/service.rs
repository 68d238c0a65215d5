//! The `gradebook.registry.v1.Registry` gRPC service: validates requests,
//! answers with precise status codes, and hands the work to [`Core`].

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use futures::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::mesh::Shutdown;
use crate::mesh::tls::Caller;
use crate::model::registry::{Registration, validate_instance_id, validate_service_name};
use crate::model::traffic::policy_from_pb;
use crate::pb::registry::v1 as pb;
use crate::pb::registry::v1::registry_server::{Registry, RegistryServer};
use crate::registry::core::{Core, PolicyRefused};
use crate::registry::watchers::WatchItem;

/// The largest request the registry accepts.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Most services one watch may name.
pub const MAX_WATCHED_SERVICES: usize = 256;

/// The registry's gRPC service.
#[derive(Debug, Clone)]
pub struct RegistryService {
    core: Arc<Core>,
    shutdown: Shutdown,
}

impl RegistryService {
    /// A service over `core`; watch streams end at `shutdown`.
    pub fn new(core: Arc<Core>, shutdown: Shutdown) -> Self {
        RegistryService { core, shutdown }
    }

    /// The tonic server for this service, with the request size limit.
    pub fn into_server(self) -> RegistryServer<Self> {
        RegistryServer::new(self).max_decoding_message_size(MAX_REQUEST_BYTES)
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = WatchItem> + Send>>;

#[tonic::async_trait]
impl Registry for RegistryService {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let caller = Caller::of(&request, self.core.tls());
        let registration = Registration::try_from(request.into_inner())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let instance = self
            .core
            .register(registration, &caller)
            .map_err(|denied| Status::permission_denied(denied.to_string()))?;
        Ok(Response::new(pb::RegisterResponse {
            instance: Some(pb::Instance::from(&instance)),
            registry_node: self.core.node_id(),
        }))
    }

    async fn deregister(
        &self,
        request: Request<pb::DeregisterRequest>,
    ) -> Result<Response<pb::DeregisterResponse>, Status> {
        let caller = Caller::of(&request, self.core.tls());
        let instance_id = request.into_inner().instance_id;
        validate_instance_id("instance_id", &instance_id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let removed = self
            .core
            .deregister(&instance_id, &caller)
            .map_err(|denied| Status::permission_denied(denied.to_string()))?;
        Ok(Response::new(pb::DeregisterResponse { removed }))
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let request = request.into_inner();
        let service = (!request.service.is_empty()).then_some(request.service.as_str());
        if let Some(service) = service {
            validate_service_name("service", service)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        let (instances, catching_up) = self.core.list(service, request.include_unhealthy);
        Ok(Response::new(pb::ListResponse {
            instances: instances.iter().map(pb::Instance::from).collect(),
            catching_up,
        }))
    }

    async fn set_traffic_policy(
        &self,
        request: Request<pb::SetTrafficPolicyRequest>,
    ) -> Result<Response<pb::SetTrafficPolicyResponse>, Status> {
        let caller = Caller::of(&request, self.core.tls());
        let policy = request
            .into_inner()
            .policy
            .ok_or_else(|| Status::invalid_argument("policy: missing"))?;
        let (service, policy) = policy_from_pb("policy", &policy)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let record = self
            .core
            .set_policy(&service, policy, &caller)
            .map_err(|refused| match refused {
                PolicyRefused::Denied(denied) => Status::permission_denied(denied.to_string()),
                PolicyRefused::Invalid(invalid) => {
                    Status::failed_precondition(format!("policy: {invalid}"))
                }
            })?;
        Ok(Response::new(pb::SetTrafficPolicyResponse {
            policy: Some(pb::TrafficPolicy::from(&record)),
            registry_node: self.core.node_id(),
        }))
    }

    async fn list_traffic_policies(
        &self,
        request: Request<pb::ListTrafficPoliciesRequest>,
    ) -> Result<Response<pb::ListTrafficPoliciesResponse>, Status> {
        let service = request.into_inner().service;
        let service = (!service.is_empty()).then_some(service.as_str());
        if let Some(service) = service {
            validate_service_name("service", service)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        let policies = self.core.policies(service);
        Ok(Response::new(pb::ListTrafficPoliciesResponse {
            policies: policies.iter().map(pb::TrafficPolicy::from).collect(),
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let mut services = request.into_inner().services;
        if services.len() > MAX_WATCHED_SERVICES {
            return Err(Status::invalid_argument(format!(
                "services: {} names is over the limit of {MAX_WATCHED_SERVICES}",
                services.len()
            )));
        }
        for (i, service) in services.iter().enumerate() {
            validate_service_name(&format!("services[{i}]"), service)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        services.sort();
        services.dedup();
        let events = ReceiverStream::new(self.core.watch(&services))
            .take_until(self.shutdown.clone().cancelled_owned());
        Ok(Response::new(Box::pin(events)))
    }
}
