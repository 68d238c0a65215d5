//! The domain types of the mesh, apart from their wire form. Each module
//! holds the types of one protobuf package and their conversions from and to
//! [`crate::pb`]; nothing else in the crate converts protobuf messages.
//!
//! # Layout
//!
//! - [`registry`]: instances, health, record versions and catalog changes.
//! - [`log`]: log records, levels and filters.

pub mod grading;
pub mod log;
pub mod registry;
