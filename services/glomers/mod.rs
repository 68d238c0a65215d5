//! A harness in the manner of Maelstrom (which cannot be installed here):
//! it runs real `gradebook maelstrom` processes, routes their messages with
//! a latency and drops them across partitions as Maelstrom's network and
//! partition nemesis do, drives the Gossip Glomers workloads, and checks
//! them as Maelstrom's checkers do, with its figures: msgs-per-op and
//! stable latencies (`gradebook glomers`).
//!
//! # Layout
//!
//! - [`network`]: node processes and the message routing between them.
//! - [`workload`]: setup, the request generator, the nemesis, the final
//!   reads, the report.
//! - [`checker`]: echo, unique ids and `set-full`.

pub mod checker;
pub mod network;
pub mod workload;

pub use workload::{Report, TestConfig, TestError, Workload};
