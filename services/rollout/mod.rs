//! Updating a running mesh without anyone noticing: the steps of each
//! strategy as plain state machines, which take what the supervisor saw
//! (an instance started, SERVING, its traffic, a drained instance) and the
//! time, and return what it must do next. The supervisor's rollout command
//! is the shell that carries the effects out.
//!
//! # Layout
//!
//! - [`rolling`]: a rolling update, one instance at a time, rolled back
//!   on its own when a new instance fails.
//! - [`canary`]: a canary release, its share of the traffic raised step by
//!   step, rolled back on its own when it fails or is slower than the
//!   stable version.

pub mod canary;
pub mod rolling;
