//! Health probes: one task per registered instance dials its advertised
//! address and follows grpc.health.v1. A `Watch` stream reports status
//! changes the moment they happen and breaks at once when the process dies
//! (connection reset or refused). A hung process is caught by HTTP/2
//! keepalive on the same connection: a PING every interval that must be
//! answered within the timeout, or the connection (and so the watch) is
//! torn down. That costs a frame, not an RPC, per instance and interval.
//! Against a server without `Watch`, a `Check` with a deadline every
//! interval does the job, and `failure_threshold` timeouts in a row make
//! the instance unreachable. Outcomes go to the catalog's health state
//! machine.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::mesh::Shutdown;
use crate::mesh::client::{endpoint_of, error_chain};
use crate::mesh::tls::MeshConnector;
use crate::registry::core::Core;
use crate::registry::health::ProbeOutcome;

/// How instances are probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSettings {
    /// Time between two checks.
    pub interval: Duration,
    /// Deadline of one check (and of connecting).
    pub timeout: Duration,
}

/// Which monitor of an instance a report comes from: a re-registration
/// with a new address starts a new monitor, and the old one's last reports
/// must not count.
pub type Epoch = u64;

fn outcome_of(response: &HealthCheckResponse) -> ProbeOutcome {
    if response.status == ServingStatus::Serving as i32 {
        ProbeOutcome::Serving
    } else {
        ProbeOutcome::NotServing
    }
}

/// Whether a failed call means the connection is gone (rather than slow).
fn is_disconnect(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal
    )
}

/// What a monitor probes: where, how to connect (the connector checks the
/// instance's identity), and which health service to ask about.
#[derive(Debug, Clone)]
pub struct Target {
    /// The instance's `host:port`.
    pub address: String,
    /// Connects as the registry, accepting only the instance's service.
    pub connector: MeshConnector,
    /// The grpc.health.v1 service name to ask about.
    pub health_service: String,
}

/// Probes `target` for `instance_id` until `stop`, reporting to `core`.
pub async fn monitor(
    core: Arc<Core>,
    instance_id: String,
    target: Target,
    epoch: Epoch,
    settings: ProbeSettings,
    stop: Shutdown,
) {
    let report = |outcome| core.observe(&instance_id, epoch, outcome);
    let Target {
        address,
        connector,
        health_service,
    } = target;
    let endpoint = match endpoint_of(&address) {
        Ok(endpoint) => endpoint
            .connect_timeout(settings.timeout)
            .http2_keep_alive_interval(settings.interval)
            .keep_alive_timeout(settings.timeout)
            .keep_alive_while_idle(true),
        Err(error) => {
            report(ProbeOutcome::Disconnected(error.to_string()));
            return;
        }
    };
    let request = || HealthCheckRequest {
        service: health_service.clone(),
    };
    let pause = || async {
        tokio::select! {
            _ = tokio::time::sleep(settings.interval) => false,
            _ = stop.cancelled() => true,
        }
    };
    loop {
        let started = std::time::Instant::now();
        let connected = tokio::select! {
            connected = endpoint.connect_with_connector(connector.clone()) => connected,
            _ = stop.cancelled() => return,
        };
        let channel = match connected {
            Ok(channel) => channel,
            Err(error) => {
                let message = format!("cannot connect to {address}: {}", error_chain(&error));
                if message.contains("timed out") {
                    report(ProbeOutcome::TimedOut(message));
                } else {
                    report(ProbeOutcome::Disconnected(message));
                }
                if pause().await {
                    return;
                }
                continue;
            }
        };
        let mut client = HealthClient::new(channel);
        let opened = tokio::select! {
            opened = tokio::time::timeout(settings.timeout, client.watch(request())) => opened,
            _ = stop.cancelled() => return,
        };
        core.metrics().probed(started.elapsed());
        // Without Watch (another gRPC stack), checks alone do the work.
        let mut stream = match opened {
            Ok(Ok(response)) => Some(response.into_inner()),
            Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => None,
            // The server there does not know this instance: another process
            // took over the address.
            Ok(Err(status)) if status.code() == tonic::Code::NotFound => {
                report(ProbeOutcome::NotServing);
                if pause().await {
                    return;
                }
                continue;
            }
            Ok(Err(status)) => {
                report(ProbeOutcome::Disconnected(status.message().to_owned()));
                if pause().await {
                    return;
                }
                continue;
            }
            Err(_) => {
                report(ProbeOutcome::TimedOut(format!(
                    "health watch not opened within {:?}",
                    settings.timeout
                )));
                if pause().await {
                    return;
                }
                continue;
            }
        };
        let mut ticker = tokio::time::interval_at(
            tokio::time::Instant::now() + settings.interval,
            settings.interval,
        );
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let checks_needed = stream.is_none();
        loop {
            let watched = async {
                match stream.as_mut() {
                    Some(stream) => stream.message().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                message = watched => match message {
                    Ok(Some(response)) => report(outcome_of(&response)),
                    Ok(None) => {
                        report(ProbeOutcome::Disconnected("health watch ended".into()));
                        break;
                    }
                    Err(status) => {
                        report(ProbeOutcome::Disconnected(format!("health watch broke: {}", status.message())));
                        break;
                    }
                },
                _ = ticker.tick(), if checks_needed => {
                    let checked = tokio::select! {
                        checked = tokio::time::timeout(settings.timeout, client.check(request())) => checked,
                        _ = stop.cancelled() => return,
                    };
                    match checked {
                        Ok(Ok(response)) => report(outcome_of(response.get_ref())),
                        Ok(Err(status)) if is_disconnect(&status) => {
                            report(ProbeOutcome::Disconnected(format!("health check failed: {}", status.message())));
                            break;
                        }
                        Ok(Err(_)) => report(ProbeOutcome::NotServing),
                        Err(_) => report(ProbeOutcome::TimedOut(format!("health check not answered within {:?}", settings.timeout))),
                    }
                }
                _ = stop.cancelled() => return,
            }
        }
        if pause().await {
            return;
        }
    }
}
