//! Dialing peers: channels with connect timeouts and keepalives, and calls
//! with deadlines. Every network call of the SDK goes through [`deadline`].

use std::future::Future;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::mesh::config::{CONNECT_TIMEOUT, ConfigError, parse_url, url_of};
use crate::pb::registry::v1::registry_client::RegistryClient;

/// The largest message the SDK's clients accept.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Adds the mesh's connection settings to an endpoint: connect timeout,
/// HTTP/2 keepalive so that a dead peer is noticed on an idle connection.
pub fn tune(endpoint: Endpoint) -> Endpoint {
    endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true)
}

/// The endpoint of a peer at `host:port`.
pub fn endpoint_of(address: &str) -> Result<Endpoint, ConfigError> {
    Ok(tune(parse_url("address", &url_of(address))?))
}

/// A lazily connecting channel to a URL such as `http://127.0.0.1:50051`:
/// it (re)connects on use, so a peer that is down now can be up later.
pub fn lazy_channel(setting: &'static str, url: &str) -> Result<Channel, ConfigError> {
    Ok(tune(parse_url(setting, url)?).connect_lazy())
}

/// A registry client on `channel`, accepting large snapshots.
pub fn registry_client(channel: Channel) -> RegistryClient<Channel> {
    RegistryClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES)
}

/// Builds a request that carries `timeout` as its gRPC deadline.
pub fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// Runs a call with a deadline: DEADLINE_EXCEEDED when it runs out, even if
/// the peer never answers (the grpc-timeout header alone relies on the peer).
pub async fn deadline<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result,
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "no answer within {timeout:?}"
        ))),
    }
}
