//! Updating a running mesh without anyone noticing: the steps of each
//! strategy as plain state machines, which take what the supervisor saw
//! (an instance started, SERVING, its traffic, a drained instance) and the
//! time, and return what it must do next. The shell that carries the
//! effects out, the supervisor's rollout command, is not written yet: these
//! machines are its tested core.
//!
//! # Layout
//!
//! - [`rolling`]: a rolling update, one instance at a time, rolled back
//!   on its own when a new instance fails.
//! - [`blue_green`]: a blue-green switch: a whole new set beside the old,
//!   every request switched at once, the old set kept until finished.
//! - [`canary`]: a canary release, its share of the traffic raised step by
//!   step, rolled back on its own when it fails or is slower than the
//!   stable version.

pub mod blue_green;
pub mod canary;
pub mod rolling;

/// How many of a new version's first requests may fail.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FailureLimit {
    /// How many requests it must have answered before it is judged.
    pub min_requests: u64,
    /// The share of failed requests above which it is rolled back.
    pub max_error_ratio: f64,
}

impl Default for FailureLimit {
    /// At least 20 requests, at most 5 % of them failed.
    fn default() -> Self {
        FailureLimit {
            min_requests: 20,
            max_error_ratio: 0.05,
        }
    }
}

impl FailureLimit {
    /// Why `failed` of `requests` condemn `what` (for example "the new
    /// instance grading-4"), if they do; never before `min_requests`.
    pub fn exceeded(&self, what: &str, requests: u64, failed: u64) -> Option<String> {
        if requests < self.min_requests {
            return None;
        }
        let ratio = failed as f64 / requests as f64;
        (ratio > self.max_error_ratio).then(|| {
            format!(
                "{what} failed {failed} of its first {requests} requests ({:.1} %, over the {:.1} % allowed)",
                ratio * 100.0,
                self.max_error_ratio * 100.0
            )
        })
    }
}

/// What the supervisor saw of an instance, whatever the strategy.
#[derive(Debug, Clone, PartialEq)]
pub enum Lifecycle {
    /// A new instance asked for runs, as `instance_id`.
    Started {
        /// Its instance id.
        instance_id: String,
    },
    /// A new instance could not be started.
    StartFailed {
        /// Why.
        reason: String,
    },
    /// The registry sees the instance SERVING.
    Serving {
        /// The instance.
        instance_id: String,
    },
    /// The registry sees the instance unhealthy, or its process exited
    /// unasked.
    Unhealthy {
        /// The instance.
        instance_id: String,
        /// What was seen.
        reason: String,
    },
    /// An instance asked to drain (or killed) has exited.
    Exited {
        /// The instance.
        instance_id: String,
    },
}

impl Lifecycle {
    /// [`Lifecycle::Started`].
    pub fn started(instance_id: &str) -> Self {
        Lifecycle::Started {
            instance_id: instance_id.to_owned(),
        }
    }

    /// [`Lifecycle::StartFailed`].
    pub fn start_failed(reason: &str) -> Self {
        Lifecycle::StartFailed {
            reason: reason.to_owned(),
        }
    }

    /// [`Lifecycle::Serving`].
    pub fn serving(instance_id: &str) -> Self {
        Lifecycle::Serving {
            instance_id: instance_id.to_owned(),
        }
    }

    /// [`Lifecycle::Unhealthy`].
    pub fn unhealthy(instance_id: &str, reason: &str) -> Self {
        Lifecycle::Unhealthy {
            instance_id: instance_id.to_owned(),
            reason: reason.to_owned(),
        }
    }

    /// [`Lifecycle::Exited`].
    pub fn exited(instance_id: &str) -> Self {
        Lifecycle::Exited {
            instance_id: instance_id.to_owned(),
        }
    }
}
