//! Dialing peers: channels with connect timeouts and keepalives, and calls
//! with deadlines. Every network call of the SDK goes through [`deadline`].

use std::future::Future;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::mesh::config::{CONNECT_TIMEOUT, ConfigError, parse_url, url_of};
use crate::mesh::tls::Tls;
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

/// A lazily connecting channel to the instance of `service` at a URL such
/// as `http://127.0.0.1:50051` (the setting `setting`), secured by `tls`: it
/// (re)connects on use, so a peer that is down now can be up later.
pub fn lazy_channel(
    setting: &'static str,
    url: &str,
    service: &str,
    tls: &Tls,
) -> Result<Channel, ConfigError> {
    Ok(tune(parse_url(setting, url)?).connect_with_connector_lazy(tls.connector(service)))
}

/// A lazily connecting channel to the instance of `service` at `host:port`.
pub fn lazy_channel_to(address: &str, service: &str, tls: &Tls) -> Result<Channel, ConfigError> {
    Ok(endpoint_of(address)?.connect_with_connector_lazy(tls.connector(service)))
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

/// An error with its chain of causes, for messages that must say why a
/// connection failed (a refused certificate is several causes deep).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
