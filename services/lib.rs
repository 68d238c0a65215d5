//! Gradebook Mesh: a gRPC service mesh of independent daemons that runs a
//! teachers' gradebook.
//!
//! # Layout
//!
//! - [`pb`]: the code generated from `proto/` (never edited).
//! - [`model`]: the domain types, and their conversion from and to [`pb`], one
//!   module per protobuf package.
//! - [`mesh`]: the mesh SDK every daemon uses: configuration, the one way to
//!   serve (health, reflection, graceful shutdown), registration, discovery,
//!   balanced channels to dependencies, and log shipping.
//! - [`registry`]: the registry daemon: the catalog of instances, health
//!   monitoring and the watch fan-out.
//! - [`grading`]: the grading daemon: students, grades and averages in
//!   SQLite, or in PostgreSQL shared by several instances.
//! - [`portal`]: the teachers' web app and HTTP/JSON gateway onto grading.
//! - [`log`]: the log daemon: durable storage, queries and tails of log records.
//! - [`gossip`]: replication between nodes without a leader, as an I/O-free
//!   engine, and its simulator.
//! - [`maelstrom`]: a node for Maelstrom's Gossip Glomers workloads on the
//!   gossip engine.
//! - [`glomers`]: a Maelstrom-like harness that runs and checks those
//!   workloads against real node processes.
//! - [`rollout`]: the steps of rolling updates, blue-green switches and canary
//!   releases as plain state machines.
//! - [`cli`]: the `gradebook` command line: one subcommand per daemon and tool.

pub mod cli;
pub mod glomers;
pub mod gossip;
pub mod grading;
pub mod log;
pub mod maelstrom;
pub mod mesh;
pub mod model;
pub mod pb;
pub mod portal;
pub mod registry;
pub mod rollout;
