//! The domain types of the mesh, apart from their wire form. Each module
//! holds the types of one protobuf package and their conversions from and to
//! [`crate::pb`]; nothing else in the crate converts protobuf messages.
//!
//! # Layout
//!
//! - [`registry`]: instances, health, record versions and catalog changes.
//! - [`peer`]: gossip messages between registry nodes (the `Peer` service
//!   of the registry package).
//! - [`traffic`]: traffic policies, how callers split requests between a
//!   service's versions (the routing part of the registry package).
//! - [`supervisor`]: rollouts as `gradebook up`'s control socket takes them.
//! - [`log`]: log records, levels and filters.
//! - [`page_token`]: opaque page tokens for every paged listing.

pub mod grading;
pub mod log;
pub mod page_token;
pub mod peer;
pub mod registry;
pub mod supervisor;
pub mod time;
pub mod traffic;

/// A request field that failed validation; the message names the field, for
/// example `address: must not be empty` or `score: 101 is out of range`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidField {
    /// The field's name as in the proto, e.g. `address` or `requires[2]`.
    pub field: String,
    /// Why it is invalid.
    pub reason: String,
}

impl InvalidField {
    /// An error about `field`, for `reason`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
