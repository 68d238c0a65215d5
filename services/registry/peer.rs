//! The `gradebook.registry.v1.Peer` gRPC service: gossip from the other
//! registry nodes. Only a caller holding a `registry` certificate may send
//! it; a message of another protocol version or another group is refused
//! with FAILED_PRECONDITION, a malformed one with INVALID_ARGUMENT naming
//! the field, and nothing of a refused message reaches the catalog.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::mesh::tls::Caller;
use crate::model::peer::PeerMessage;
use crate::pb::registry::v1 as pb;
use crate::pb::registry::v1::peer_server::{Peer, PeerServer};
use crate::registry::core::Core;

/// The largest gossip message accepted.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// The registry's peer service.
#[derive(Debug, Clone)]
pub struct PeerService {
    core: Arc<Core>,
    cluster: String,
}

impl PeerService {
    /// A service feeding `core`, for the group `cluster`.
    pub fn new(core: Arc<Core>, cluster: String) -> Self {
        PeerService { core, cluster }
    }

    /// The tonic server for this service, with the message size limit.
    pub fn into_server(self) -> PeerServer<Self> {
        PeerServer::new(self).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn gossip(
        &self,
        request: Request<pb::GossipMessage>,
    ) -> Result<Response<pb::GossipAck>, Status> {
        match Caller::of(&request, self.core.tls()) {
            Caller::Unverified => {}
            Caller::Service(identity) if identity.service() == crate::registry::SERVICE_NAME => {}
            Caller::Service(identity) => {
                return Err(Status::permission_denied(format!(
                    "only registry nodes gossip; the caller is {identity}"
                )));
            }
            Caller::Anonymous => {
                return Err(Status::unauthenticated(
                    "a registry certificate is required",
                ));
            }
        }
        let message = PeerMessage::try_from(request.into_inner())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if message.protocol != pb::PeerProtocol::V1 as i32 {
            return Err(Status::failed_precondition(format!(
                "protocol: peer protocol {} is not this node's ({})",
                message.protocol,
                pb::PeerProtocol::V1 as i32
            )));
        }
        if message.cluster != self.cluster {
            return Err(Status::failed_precondition(format!(
                "cluster: {:?} is not this node's group {:?}",
                message.cluster, self.cluster
            )));
        }
        self.core.receive_peer(&message.from, message.message);
        Ok(Response::new(pb::GossipAck {}))
    }
}
