//! Gossip: replicating state between nodes without a leader, as an I/O-free
//! engine. Each node writes only its own keys; writes are pushed to peers
//! as they happen and a periodic anti-entropy exchange repairs whatever a
//! push lost (a partition, a crash), so every node ends with the same state.
//! The registry's nodes replicate their catalog with it, and the Maelstrom
//! node runs the Gossip Glomers workloads on it.
//!
//! # Layout
//!
//! - [`replica`]: the replicated state: origins, sequence numbers, floors,
//!   ranges, tombstones.
//! - [`message`]: what nodes send each other.
//! - [`node`]: one node's engine: whom to push to and when, anti-entropy,
//!   tombstone collection; time in, effects out.
//! - [`membership`]: which peers are alive: a phi-accrual failure detector.
//! - [`sim`]: many nodes in one process on virtual time, with latency,
//!   loss, partitions and crashes: the figures of `gradebook sim`.

pub mod membership;
pub mod message;
pub mod node;
pub mod replica;
pub mod sim;

pub use message::{Message, WireSize};
pub use node::{Config, Effect, Node, Push};
pub use replica::{KeyChange, NodeId, Origin, Range, Replica, Seq, Update};
