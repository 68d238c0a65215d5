//! One endpoint of a service: the connection to one instance, made in this
//! one place (with the channel's connector, which does the TLS), and the
//! per-endpoint layers around it: outlier ejection and the peak-EWMA load
//! the balancer compares.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::transport::Channel;
use tower::load::{CompleteOnResponse, PeakEwma};

use crate::mesh::channel::eject::{Ejecting, EjectionBudget, EjectionSettings};
use crate::mesh::channel::metrics::EndpointMetrics;
use crate::mesh::channel::outcome::{AttemptTimedOut, BoxError};
use crate::mesh::client::endpoint_of;
use crate::mesh::config::ConfigError;
use crate::mesh::tls::MeshConnector;

/// The round-trip time assumed for an endpoint before it has answered (as linkerd2-proxy).
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// How fast the peak-EWMA forgets a slow answer (as linkerd2-proxy).
pub const EWMA_DECAY: Duration = Duration::from_secs(10);

/// When the current attempt of a call gives up, as a request extension; set
/// by the attempt layer, kept by the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptDeadline(pub Instant);

/// The balancer's view of one endpoint: load-measured, ejectable, connected.
pub type BalancedEndpoint = PeakEwma<Ejecting<Connection>, CompleteOnResponse>;

/// Builds the endpoint for the instance at `address` (`host:port`),
/// dialed with `connector`, measured in `metrics`.
pub fn balanced_endpoint(
    address: &str,
    connector: MeshConnector,
    ejection: EjectionSettings,
    budget: Arc<EjectionBudget>,
    metrics: EndpointMetrics,
) -> Result<BalancedEndpoint, ConfigError> {
    let connection = Connection::lazy(address, connector)?;
    Ok(PeakEwma::new(
        Ejecting::new(connection, ejection, budget, metrics),
        DEFAULT_RTT,
        EWMA_DECAY.as_nanos() as f64,
        CompleteOnResponse::default(),
    ))
}

/// A lazily (re)connecting HTTP/2 connection to one instance, which sends
/// a buffered request body and keeps the attempt's deadline.
#[derive(Debug, Clone)]
pub struct Connection {
    channel: Channel,
}

impl Connection {
    /// A connection to `address` that connects (with `connector`) on first use.
    pub fn lazy(address: &str, connector: MeshConnector) -> Result<Self, ConfigError> {
        Ok(Connection {
            channel: endpoint_of(address)?.connect_with_connector_lazy(connector),
        })
    }
}

impl tower::Service<http::Request<Bytes>> for Connection {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        tower::Service::poll_ready(&mut self.channel, cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<Bytes>) -> Self::Future {
        let deadline = request.extensions().get::<AttemptDeadline>().copied();
        let call = tower::Service::call(
            &mut self.channel,
            request.map(|bytes| Body::new(http_body_util::Full::new(bytes))),
        );
        Box::pin(async move {
            match deadline {
                Some(AttemptDeadline(deadline)) => tokio::time::timeout_at(deadline, call)
                    .await
                    .map_err(|_| BoxError::from(AttemptTimedOut))?
                    .map_err(Into::into),
                None => call.await.map_err(Into::into),
            }
        })
    }
}
