//! The log daemon.
pub mod service;
pub mod store;
