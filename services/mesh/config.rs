//! Configuration shared by every daemon: names of environment variables,
//! named defaults, and the validated [`MeshConfig`] that tells the SDK who
//! this instance is, where the registry is and how to shut down.
//! Settings are read in one place (the `cli` module); the daemons receive
//! plain structs, so tests pass values instead of touching the environment.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::mesh::backoff::Backoff;
use crate::mesh::channel::ChannelSettings;
use crate::mesh::tls::Tls;
use crate::mesh::tls::accept::DEFAULT_MAX_CONNECTIONS;
use crate::model::registry::{validate_address, validate_instance_id, validate_service_name};

/// Where the registry listens by default.
pub const DEFAULT_REGISTRY_LISTEN: &str = "127.0.0.1:50051";
/// Where the log service listens by default.
pub const DEFAULT_LOG_LISTEN: &str = "127.0.0.1:50052";
/// Where the grading service listens by default.
pub const DEFAULT_GRADING_LISTEN: &str = "127.0.0.1:50053";
/// Where the portal listens for HTTP by default.
pub const DEFAULT_PORTAL_LISTEN: &str = "127.0.0.1:8080";
/// The registry every daemon registers with by default.
pub const DEFAULT_REGISTRY_URL: &str = "http://127.0.0.1:50051";
/// Where the mesh's certificates are, unless told otherwise (`gradebook
/// up`'s default data directory, `data`, plus `certs`).
pub const DEFAULT_CERTS_DIR: &str = "data/certs";
/// How long in-flight calls may drain at shutdown before the server stops anyway.
pub const DEFAULT_DRAIN_GRACE: Duration = Duration::from_secs(10);
/// How long a served request may take, its body and its handler up to the
/// answer's head (a stream's life after that is not counted), by default.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Deadline of every call to the registry.
pub const REGISTRY_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Deadline for establishing a connection to any peer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The service name of the log service, which log shipping requires.
pub const LOG_SERVICE: &str = "log";
/// The version every daemon reports unless told otherwise.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A value is out of range or malformed; the message names the setting.
    #[error("invalid setting {setting}: {reason}")]
    Invalid {
        /// The setting's flag name.
        setting: &'static str,
        /// Why it is invalid.
        reason: String,
    },
}

impl ConfigError {
    /// A setting that is out of range or malformed.
    pub fn invalid(setting: &'static str, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            setting,
            reason: reason.into(),
        }
    }
}

/// Who this instance is and how it takes part in the mesh.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// The service's name, e.g. `log`.
    pub service: String,
    /// This instance's id, unique in the mesh.
    pub instance_id: String,
    /// The `host:port` peers dial; `None` derives it from the listener.
    pub advertise: Option<String>,
    /// The registry's URL, e.g. `http://127.0.0.1:50051`, or several
    /// nodes' URLs, comma-separated.
    pub registry_url: String,
    /// The software version to register.
    pub version: String,
    /// Metadata to register.
    pub metadata: BTreeMap<String, String>,
    /// The services this instance requires (discovered and watched).
    pub requires: Vec<String>,
    /// How long in-flight calls may drain at shutdown.
    pub drain_grace: Duration,
    /// Ship this daemon's log records to the log service.
    pub ship_logs: bool,
    /// How registration and watches retry while the registry is away.
    pub backoff: Backoff,
    /// How the channels to dependencies call: deadlines, retries, ejection.
    pub channel: ChannelSettings,
    /// How every connection, served or dialed, is secured.
    pub tls: Tls,
    /// The most connections the server holds open at once.
    pub max_connections: usize,
    /// How long a served request may take, its body and its handler up to
    /// the answer's head: a client that sends its request too slowly is
    /// answered CANCELLED then (a caller's shorter `grpc-timeout` wins).
    pub request_timeout: Duration,
}

impl MeshConfig {
    /// A configuration with defaults for the service `service`: a fresh
    /// instance id, the default registry, log shipping on, TLS off (the
    /// command line turns it on).
    pub fn new(service: impl Into<String>) -> Self {
        let service = service.into();
        MeshConfig {
            instance_id: generate_instance_id(&service),
            service,
            advertise: None,
            registry_url: DEFAULT_REGISTRY_URL.to_owned(),
            version: VERSION.to_owned(),
            metadata: BTreeMap::new(),
            requires: Vec::new(),
            drain_grace: DEFAULT_DRAIN_GRACE,
            ship_logs: true,
            backoff: Backoff::default(),
            channel: ChannelSettings::default(),
            tls: Tls::Off,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// Checks every field, naming the one that is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_service_name("service", &self.service)
            .map_err(|e| ConfigError::invalid("service", e.to_string()))?;
        validate_instance_id("instance_id", &self.instance_id)
            .map_err(|e| ConfigError::invalid("--instance-id", e.to_string()))?;
        if let Some(advertise) = &self.advertise {
            validate_address("advertise", advertise)
                .map_err(|e| ConfigError::invalid("--advertise", e.to_string()))?;
        }
        for (i, name) in self.requires.iter().enumerate() {
            validate_service_name(&format!("requires[{i}]"), name)
                .map_err(|e| ConfigError::invalid("requires", e.to_string()))?;
        }
        crate::mesh::registry_nodes::RegistryNodes::parse("--registry", &self.registry_url)?;
        Ok(())
    }

    /// The services to discover: the required ones, plus the log service
    /// when shipping logs (the log service ships to itself, through the
    /// registry like everyone else).
    pub fn discovered_services(&self) -> Vec<String> {
        let mut services = self.requires.clone();
        if self.ship_logs {
            services.push(LOG_SERVICE.to_owned());
        }
        services.sort();
        services.dedup();
        services
    }

    /// The address to register: `--advertise`, or else the listener's
    /// address (with the host name when it listens on every interface).
    pub fn advertised_address(&self, local: SocketAddr) -> String {
        if let Some(advertise) = &self.advertise {
            return advertise.clone();
        }
        if local.ip().is_unspecified() {
            return format!("{}:{}", host_name(), local.port());
        }
        local.to_string()
    }
}

/// A new instance id: the service name and a time-ordered UUID.
pub fn generate_instance_id(service: &str) -> String {
    format!("{service}-{}", uuid::Uuid::now_v7().simple())
}

/// This machine's host name (a container's name inside Docker).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Checks that `url` is an `http://host:port` URL a channel can dial.
pub fn parse_url(
    setting: &'static str,
    url: &str,
) -> Result<tonic::transport::Endpoint, ConfigError> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(ConfigError::invalid(
            setting,
            format!("{url:?} must start with http://"),
        ));
    };
    validate_address(setting, rest.trim_end_matches('/'))
        .map_err(|e| ConfigError::invalid(setting, e.to_string()))?;
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|e| ConfigError::invalid(setting, format!("{url:?}: {e}")))
}

/// Turns a `host:port` into the URL a channel dials.
pub fn url_of(address: &str) -> String {
    format!("http://{address}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let config = MeshConfig::new("grading");
        config.validate().unwrap();
        assert!(config.instance_id.starts_with("grading-"));
        assert_eq!(config.discovered_services(), ["log"]);
    }

    #[test]
    fn bad_settings_are_named() {
        let mut config = MeshConfig::new("log");
        config.registry_url = "127.0.0.1:50051".into();
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("--registry") && err.contains("http://"),
            "{err}"
        );
        let mut config = MeshConfig::new("log");
        config.advertise = Some("nope".into());
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("--advertise")
        );
    }

    #[test]
    fn shipping_logs_discovers_the_log_service() {
        let mut config = MeshConfig::new("log");
        config.requires = vec!["registry".into()];
        assert_eq!(config.discovered_services(), ["log", "registry"]);
        config.ship_logs = false;
        assert_eq!(config.discovered_services(), ["registry"]);
    }

    #[test]
    fn advertised_address_comes_from_the_listener_by_default() {
        let config = MeshConfig::new("log");
        let local: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(config.advertised_address(local), "127.0.0.1:4000");
        let any: SocketAddr = "0.0.0.0:4000".parse().unwrap();
        assert!(config.advertised_address(any).ends_with(":4000"));
    }
}
