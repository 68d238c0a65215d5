//! `gradebook health-check [ADDR]`: asks a server's grpc.health.v1 service
//! and exits 0 only when it answers SERVING (container health checks use
//! it). Without an address it asks the daemon of its own container: the
//! one listening on `GRADEBOOK_LISTEN` (a wildcard address asked on
//! loopback), so that one image health check fits every daemon.

use std::process::ExitCode;
use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::cli::{TlsArgs, parse_duration};
use crate::mesh::Tls;
use crate::mesh::client::{deadline, error_chain, request};
use crate::mesh::config::parse_url;
use crate::mesh::tls::MeshConnector;
use crate::mesh::tls::identity::ADMIN;

/// `gradebook health-check`.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthCheckArgs {
    /// The server, as `host:port` or `http://host:port` (default: the
    /// daemon's own `GRADEBOOK_LISTEN`, on loopback when it is a wildcard).
    #[arg(env = "GRADEBOOK_LISTEN")]
    pub address: String,
    /// The service to ask about; the server as a whole when empty.
    #[arg(long, default_value = "")]
    pub service: String,
    /// How long to wait for an answer.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub timeout: Duration,
    /// The identity the server must prove (any of the mesh's when absent).
    #[arg(long, value_name = "SERVICE")]
    pub identity: Option<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// Runs `gradebook health-check`: prints the status, exits 0 when SERVING,
/// 1 otherwise.
pub async fn run(args: HealthCheckArgs) -> ExitCode {
    match check(&args).await {
        Ok(ServingStatus::Serving) => {
            println!("SERVING");
            ExitCode::SUCCESS
        }
        Ok(status) => {
            println!("{}", status.as_str_name());
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `address` with a wildcard host (`0.0.0.0`, `[::]`) asked on loopback.
fn on_loopback_if_wildcard(address: &str) -> String {
    match address.parse::<std::net::SocketAddr>() {
        Ok(socket) if socket.ip().is_unspecified() => {
            let loopback: std::net::IpAddr = if socket.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            };
            std::net::SocketAddr::new(loopback, socket.port()).to_string()
        }
        _ => address.to_owned(),
    }
}

async fn check(args: &HealthCheckArgs) -> Result<ServingStatus, String> {
    let url = if args.address.starts_with("http://") {
        args.address.clone()
    } else {
        format!("http://{}", on_loopback_if_wildcard(&args.address))
    };
    let tls = args.tls.load(ADMIN).map_err(|e| e.to_string())?;
    let connector = match &args.identity {
        Some(service) => tls.connector(service),
        None => tls.connector_to_anyone(),
    };
    check_service(&url, &args.service, connector, args.timeout).await
}

/// Polls the server at `url` until it answers SERVING; returns whether it
/// did within `patience`.
pub async fn wait_serving(url: &str, tls: &Tls, patience: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + patience;
    while tokio::time::Instant::now() < deadline {
        if status_of(url, tls, Duration::from_millis(500)).await == Ok(ServingStatus::Serving) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// The overall health of the server at `url`, within `timeout`.
pub async fn status_of(url: &str, tls: &Tls, timeout: Duration) -> Result<ServingStatus, String> {
    check_service(url, "", tls.connector_to_anyone(), timeout).await
}

async fn check_service(
    url: &str,
    service: &str,
    connector: MeshConnector,
    timeout: Duration,
) -> Result<ServingStatus, String> {
    let url = url.to_owned();
    let endpoint = parse_url("ADDR", &url).map_err(|e| e.to_string())?;
    let endpoint = endpoint.connect_timeout(timeout);
    let channel = tokio::time::timeout(timeout, endpoint.connect_with_connector(connector))
        .await
        .map_err(|_| format!("{url}: no connection within {timeout:?}"))?
        .map_err(|e| format!("{url}: cannot connect: {}", error_chain(&e)))?;
    let mut client = HealthClient::new(channel);
    let message = HealthCheckRequest {
        service: service.to_owned(),
    };
    let response = deadline(timeout, client.check(request(message, timeout)))
        .await
        .map_err(|status| format!("{url}: {:?}: {}", status.code(), status.message()))?;
    Ok(ServingStatus::try_from(response.into_inner().status).unwrap_or(ServingStatus::Unknown))
}

#[cfg(test)]
mod tests {
    use super::on_loopback_if_wildcard;

    #[test]
    fn a_wildcard_listen_address_is_asked_on_loopback() {
        assert_eq!(on_loopback_if_wildcard("0.0.0.0:50053"), "127.0.0.1:50053");
        assert_eq!(on_loopback_if_wildcard("[::]:8080"), "[::1]:8080");
        assert_eq!(on_loopback_if_wildcard("10.0.0.5:50053"), "10.0.0.5:50053");
        assert_eq!(
            on_loopback_if_wildcard("grading-1:50053"),
            "grading-1:50053"
        );
    }
}
