//! `gradebook registry`, `log`, `grading` and `portal`: read the settings, bind the
//! listener, set up tracing and the shutdown signal, and call the daemon's
//! `run`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::cli::{RegistryArg, TlsArgs, parse_duration, parse_version};
use crate::mesh::config::{
    DEFAULT_GRADING_LISTEN, DEFAULT_LOG_LISTEN, DEFAULT_PORTAL_LISTEN, DEFAULT_REGISTRY_LISTEN,
    DEFAULT_REGISTRY_URL, generate_instance_id,
};
use crate::mesh::shutdown::cancel_on_signal;
use crate::mesh::telemetry::{self, DEFAULT_FILTER};
use crate::mesh::tls::accept::DEFAULT_MAX_CONNECTIONS;
use crate::mesh::{MeshConfig, Shutdown};
use crate::registry::{self, RegistryConfig};

/// Settings every daemon has.
#[derive(Debug, Clone, clap::Args)]
pub struct DaemonArgs {
    /// The `host:port` other services dial; defaults to the listen address
    /// (or this host's name when listening on every interface).
    #[arg(long, env = "GRADEBOOK_ADVERTISE")]
    pub advertise: Option<String>,
    /// This instance's id; generated when absent.
    #[arg(long, env = "GRADEBOOK_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// The version this instance registers, instead of this build's: to
    /// try updates, canaries and traffic policies with one build.
    #[arg(long, env = "GRADEBOOK_REPORT_VERSION", value_parser = parse_version)]
    pub report_version: Option<String>,
    /// How long in-flight calls may drain at shutdown.
    #[arg(long, env = "GRADEBOOK_DRAIN_GRACE", value_parser = parse_duration, default_value = "10s")]
    pub drain_grace: Duration,
    /// Ship this daemon's log records to the log service.
    #[arg(long, env = "GRADEBOOK_SHIP_LOGS", default_value_t = true, action = clap::ArgAction::Set)]
    pub ship_logs: bool,
    /// What to log, as a tracing filter (`info`, `debug`, `gradebook=debug,info`).
    #[arg(long, env = "GRADEBOOK_LOG_LEVEL", default_value = DEFAULT_FILTER)]
    pub log_level: String,
    /// The most connections served at once (more wait in the listen backlog).
    #[arg(long, env = "GRADEBOOK_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// How long a request may take to arrive and be answered (up to the
    /// answer's first bytes; streams may last longer).
    #[arg(long, env = "GRADEBOOK_REQUEST_TIMEOUT", value_parser = parse_duration, default_value = "60s")]
    pub request_timeout: Duration,
    #[command(flatten)]
    pub tls: TlsArgs,
}

impl DaemonArgs {
    /// The mesh configuration of a daemon of `service`.
    pub fn mesh_config(&self, service: &str, registry_url: &str) -> MeshConfig {
        let mut config = MeshConfig::new(service);
        config.instance_id = self
            .instance_id
            .clone()
            .unwrap_or_else(|| generate_instance_id(service));
        if let Some(version) = &self.report_version {
            config.version = version.clone();
        }
        config.advertise = self.advertise.clone();
        config.registry_url = registry_url.to_owned();
        config.drain_grace = self.drain_grace;
        config.ship_logs = self.ship_logs;
        config.max_connections = self.max_connections;
        config.request_timeout = self.request_timeout;
        config
    }
}

/// `gradebook registry`.
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryArgs {
    /// The address to listen on.
    #[arg(long, env = "GRADEBOOK_LISTEN", default_value = DEFAULT_REGISTRY_LISTEN)]
    pub listen: SocketAddr,
    /// How often each instance is probed: an HTTP/2 PING on its health
    /// watch (or a Check call, for servers without Watch).
    #[arg(long, env = "GRADEBOOK_CHECK_INTERVAL", value_parser = parse_duration, default_value = "1s")]
    pub check_interval: Duration,
    /// How long a probe may go unanswered before it counts as failed.
    #[arg(long, env = "GRADEBOOK_CHECK_TIMEOUT", value_parser = parse_duration, default_value = "500ms")]
    pub check_timeout: Duration,
    /// Timed-out Check calls in a row after which an instance is unreachable
    /// (servers without Watch; with Watch, one unanswered PING is enough).
    #[arg(long, env = "GRADEBOOK_FAILURE_THRESHOLD", default_value_t = registry::DEFAULT_FAILURE_THRESHOLD)]
    pub failure_threshold: u32,
    /// How long a down instance stays in the catalog before it is evicted.
    #[arg(long, env = "GRADEBOOK_EVICTION_GRACE", value_parser = parse_duration, default_value = "30s")]
    pub eviction_grace: Duration,
    /// Events queued per watcher before a slow watcher is cut off to resync.
    #[arg(long, env = "GRADEBOOK_WATCH_QUEUE", default_value_t = registry::DEFAULT_WATCH_QUEUE)]
    pub watch_queue: usize,
    /// The registry nodes of the group, as `host:port` (every node may be
    /// given the same list: a node skips its own address); none: alone.
    #[arg(long, env = "GRADEBOOK_REGISTRY_PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// The group's name: a node refuses gossip from another group.
    #[arg(long, env = "GRADEBOOK_REGISTRY_CLUSTER", default_value = registry::replication::DEFAULT_CLUSTER)]
    pub cluster: String,
    /// How long a peer registry node stays down (silent past the failure
    /// detector's threshold) before the records it owned, unclaimed since,
    /// are forgotten.
    #[arg(long, env = "GRADEBOOK_PEER_DEAD_AFTER", value_parser = parse_duration, default_value = "30s")]
    pub peer_dead_after: Duration,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

/// `gradebook log`.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// The address to listen on.
    #[arg(long, env = "GRADEBOOK_LISTEN", default_value = DEFAULT_LOG_LISTEN)]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub registry: RegistryArg,
    /// Where the log store keeps its segment files.
    #[arg(long, env = "GRADEBOOK_DATA_DIR", default_value = "data/log")]
    pub data_dir: PathBuf,
    /// Delete the oldest records once the store is larger than this many bytes.
    #[arg(long, env = "GRADEBOOK_RETENTION_BYTES", default_value_t = crate::log::DEFAULT_RETENTION_BYTES)]
    pub retention_bytes: u64,
    /// Delete records older than this.
    #[arg(long, env = "GRADEBOOK_RETENTION_AGE", value_parser = parse_duration, default_value = "7days")]
    pub retention_age: Duration,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

/// `gradebook grading`.
#[derive(Debug, Clone, clap::Args)]
pub struct GradingArgs {
    /// The address to listen on.
    #[arg(long, env = "GRADEBOOK_LISTEN", default_value = DEFAULT_GRADING_LISTEN)]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub registry: RegistryArg,
    /// Where the SQLite database lives (when there is no --database-url).
    #[arg(long, env = "GRADEBOOK_DATA_DIR", default_value = "data/grading")]
    pub data_dir: PathBuf,
    /// A PostgreSQL database shared by every grading instance that uses it
    /// (`postgres://user:password@host:port/db`); absent: SQLite under
    /// --data-dir.
    #[arg(long, env = "GRADEBOOK_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Create demo students and grades when the database is empty.
    #[arg(long, env = "GRADEBOOK_DEMO_DATA", default_value_t = true, action = clap::ArgAction::Set)]
    pub demo_data: bool,
    /// For fault tests only: fail this share (0 to 1) of Grading calls
    /// with INTERNAL, as a broken release would.
    #[arg(long, hide = true, value_parser = parse_ratio, default_value_t = 0.0)]
    pub fault_error_ratio: f64,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

/// Reads a share from 0 to 1.
fn parse_ratio(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        _ => Err(format!("{text:?} is not a share from 0 to 1")),
    }
}

/// `gradebook portal`.
#[derive(Debug, Clone, clap::Args)]
pub struct PortalArgs {
    /// The address to listen on (HTTP, plus gRPC health and reflection).
    #[arg(long, env = "GRADEBOOK_LISTEN", default_value = DEFAULT_PORTAL_LISTEN)]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub registry: RegistryArg,
    /// Deadline of every call the portal makes to grading, the registry and the log service.
    #[arg(long, env = "GRADEBOOK_CALL_TIMEOUT", value_parser = parse_duration, default_value = "2s")]
    pub call_timeout: Duration,
    /// Serve students from memory, kept fresh by grading's change stream
    /// (`false`: every read goes to grading).
    #[arg(long, env = "GRADEBOOK_READ_CACHE", default_value_t = true, action = clap::ArgAction::Set)]
    pub read_cache: bool,
    /// Where the accounts database lives (shared by portals on one machine
    /// and by `gradebook users`).
    #[arg(long, env = "GRADEBOOK_DATA_DIR", default_value = "data/portal")]
    pub data_dir: PathBuf,
    /// A certificate (PEM chain, any authority) for browsers reaching the
    /// portal over HTTPS, instead of the mesh's; reloaded when the file
    /// changes. Needs --web-tls-key.
    #[arg(long, env = "GRADEBOOK_WEB_TLS_CERT", requires = "web_tls_key")]
    pub web_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --web-tls-cert.
    #[arg(long, env = "GRADEBOOK_WEB_TLS_KEY", requires = "web_tls_cert")]
    pub web_tls_key: Option<PathBuf>,
    /// How often the `/services` page's figures are read from every
    /// instance's metrics.
    #[arg(long, env = "GRADEBOOK_OPS_SAMPLE_INTERVAL", value_parser = parse_duration, default_value = "5s")]
    pub ops_sample_interval: Duration,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

async fn bind(listen: SocketAddr) -> anyhow::Result<TcpListener> {
    crate::cli::listen::bind(listen).await
}

fn shutdown_on_signal() -> Shutdown {
    let shutdown = Shutdown::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    shutdown
}

/// Runs the registry daemon until SIGTERM or SIGINT.
pub async fn registry(args: RegistryArgs) -> anyhow::Result<()> {
    // `registry::run` points the registry's own mesh membership at itself.
    let mut mesh = args
        .daemon
        .mesh_config(registry::SERVICE_NAME, DEFAULT_REGISTRY_URL);
    telemetry::init_daemon(&args.daemon.log_level, &mesh.service, &mesh.instance_id);
    mesh.tls = args.daemon.tls.load(&mesh.service)?;
    let config = RegistryConfig {
        mesh,
        check_interval: args.check_interval,
        check_timeout: args.check_timeout,
        failure_threshold: args.failure_threshold,
        eviction_grace: args.eviction_grace,
        watch_queue: args.watch_queue,
        peers: args.peers,
        cluster: args.cluster,
        peer_dead_after: args.peer_dead_after,
    };
    config.validate()?;
    let listener = bind(args.listen).await?;
    registry::run(config, listener, shutdown_on_signal()).await?;
    telemetry::flush_spans();
    Ok(())
}

/// Runs the log daemon until SIGTERM or SIGINT.
pub async fn log(args: LogArgs) -> anyhow::Result<()> {
    let mut mesh = args
        .daemon
        .mesh_config(crate::log::SERVICE_NAME, &args.registry.registry);
    telemetry::init_daemon(&args.daemon.log_level, &mesh.service, &mesh.instance_id);
    mesh.tls = args.daemon.tls.load(&mesh.service)?;
    let config = crate::log::LogConfig {
        mesh,
        data_dir: args.data_dir,
        retention: crate::log::store::Retention {
            max_bytes: args.retention_bytes,
            max_age: args.retention_age,
        },
    };
    let listener = bind(args.listen).await?;
    crate::log::run(config, listener, shutdown_on_signal()).await?;
    telemetry::flush_spans();
    Ok(())
}

/// Runs the grading daemon until SIGTERM or SIGINT.
pub async fn grading(args: GradingArgs) -> anyhow::Result<()> {
    let mut mesh = args
        .daemon
        .mesh_config(crate::grading::SERVICE_NAME, &args.registry.registry);
    telemetry::init_daemon(&args.daemon.log_level, &mesh.service, &mesh.instance_id);
    let database =
        crate::grading::DatabaseConfig::new(args.database_url.as_deref(), &args.data_dir)?;
    mesh.tls = args.daemon.tls.load(&mesh.service)?;
    let config = crate::grading::GradingConfig {
        mesh,
        database,
        demo_data: args.demo_data,
        fault_error_ratio: args.fault_error_ratio,
    };
    let listener = bind(args.listen).await?;
    crate::grading::run(config, listener, shutdown_on_signal()).await?;
    telemetry::flush_spans();
    Ok(())
}

/// Runs the portal until SIGTERM or SIGINT.
pub async fn portal(args: PortalArgs) -> anyhow::Result<()> {
    let mut mesh = args
        .daemon
        .mesh_config(crate::portal::SERVICE_NAME, &args.registry.registry);
    telemetry::init_daemon(&args.daemon.log_level, &mesh.service, &mesh.instance_id);
    mesh.tls = args.daemon.tls.load(&mesh.service)?;
    let config = crate::portal::PortalConfig {
        mesh,
        call_timeout: args.call_timeout,
        read_cache: args.read_cache,
        ops_sample_interval: args.ops_sample_interval,
        data_dir: args.data_dir,
        web_certificate: args
            .web_tls_cert
            .zip(args.web_tls_key)
            .map(|(cert, key)| crate::portal::WebCertificateFiles { cert, key }),
    };
    let listener = bind(args.listen).await?;
    crate::portal::run(config, listener, shutdown_on_signal()).await?;
    telemetry::flush_spans();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use crate::mesh::config::DEFAULT_DRAIN_GRACE;
    use clap::Parser;

    #[test]
    fn flag_defaults_are_the_named_defaults() {
        let Cli {
            command: crate::cli::Command::Registry(r),
        } = Cli::parse_from(["gradebook", "registry"])
        else {
            panic!("registry");
        };
        assert_eq!(r.check_interval, registry::DEFAULT_CHECK_INTERVAL);
        assert_eq!(r.check_timeout, registry::DEFAULT_CHECK_TIMEOUT);
        assert_eq!(r.eviction_grace, registry::DEFAULT_EVICTION_GRACE);
        assert_eq!(r.daemon.drain_grace, DEFAULT_DRAIN_GRACE);
        assert_eq!(r.listen.to_string(), DEFAULT_REGISTRY_LISTEN);
        let Cli {
            command: crate::cli::Command::Log(l),
        } = Cli::parse_from(["gradebook", "log"])
        else {
            panic!("log");
        };
        assert_eq!(l.retention_age, crate::log::DEFAULT_RETENTION_AGE);
        assert_eq!(l.listen.to_string(), DEFAULT_LOG_LISTEN);
    }
}
