//! The mesh SDK: what every daemon of the mesh uses to take part in it.
//!
//! # Layout
//!
//! - [`config`]: named defaults and the validated [`MeshConfig`].
//! - [`shutdown`]: the one shutdown signal and the SIGTERM/SIGINT handler.
//! - [`server`]: the one way to serve: health, reflection, registration,
//!   graceful drain ([`Mesh`], [`MeshServer`]).
//! - [`registration`]: keeping this instance registered.
//! - [`registry_nodes`]: the registry nodes, one in use at a time.
//! - [`discovery`]: the live view of dependencies, feeding a channel per dependency.
//! - [`api`]: typed clients of grading, log and the registry.
//! - [`channel`]: the mesh channel: balancer, retries, deadlines, ejection.
//! - [`logship`]: shipping this daemon's `tracing` records to the log service.
//! - [`metrics`]: the process's Prometheus metrics, served at `GET /metrics`,
//!   and reading another daemon's.
//! - [`trace`]: distributed tracing (W3C Trace Context) on both sides of every call.
//! - [`call_end`]: when a served or made gRPC call ends, and with which status.
//! - [`telemetry`]: setting up `tracing` for a daemon or a tool.
//! - [`client`]: dialing peers with timeouts and calling with deadlines.
//! - [`tls`]: mutual TLS: the local authority, identities, both sides of a connection.
//! - [`backoff`]: validated exponential backoff.
//!
//! # Example
//!
//! A daemon that requires the `grading` service, serves the health service
//! only, and stops when `shutdown` is cancelled:
//!
//! ```no_run
//! use gradebook::mesh::{Mesh, MeshConfig, MeshServer, Shutdown};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let shutdown = Shutdown::new();
//! let mut config = MeshConfig::new("report");
//! config.requires = vec!["grading".into()];
//! let mesh = Mesh::start(config, &shutdown)?;
//! let dependencies = mesh.dependencies();
//! // Later, in a handler: a channel balanced over the healthy grading instances.
//! let _ = dependencies.channel("grading");
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! MeshServer::new(mesh).serve(listener).await?;
//! # Ok(()) }
//! ```

pub mod api;
pub mod backoff;
pub mod call_end;
pub mod channel;
pub mod client;
pub mod config;
pub mod discovery;
pub mod logship;
pub mod metrics;
pub mod registration;
pub mod registry_nodes;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod trace;

pub use backoff::Backoff;
pub use channel::{ChannelSettings, MeshChannel};
pub use config::MeshConfig;
pub use discovery::{DependencyView, DiscoveryError};
pub use server::{Mesh, MeshServer, ServeError};
pub use shutdown::Shutdown;
pub use tls::Tls;
