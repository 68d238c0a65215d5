//! Grading's own metrics: how long each store operation takes
//! (`grading_store_seconds`, by operation) and how often the database
//! fails (`grading_store_errors_total`, by operation). A store call is
//! also a step of the request's trace. Refusals that are answers (not
//! found, invalid, a conflict) are not failures of the database.

use std::future::Future;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;
use tracing::Instrument;

use crate::grading::store::StoreError;
use crate::mesh::metrics::{Metrics, latency_histogram};
use crate::mesh::trace::child_span;

/// A store operation, as labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Operation {
    operation: &'static str,
}

/// The store's metrics; cheap to clone.
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    seconds: Family<Operation, Histogram, fn() -> Histogram>,
    errors: Family<Operation, Counter>,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            seconds: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            errors: Family::default(),
        }
    }
}

/// Whether a store error is the database failing, rather than an answer.
fn is_failure(error: &StoreError) -> bool {
    matches!(
        error,
        StoreError::Unavailable(_)
            | StoreError::Database(_)
            | StoreError::Corrupt(_)
            | StoreError::Schema(_)
    )
}

impl StoreMetrics {
    /// The store's metrics, registered in `metrics`.
    pub fn register(metrics: &Metrics) -> Self {
        let this = StoreMetrics::default();
        metrics.register_with_unit(
            "grading_store",
            "Time of one store operation (a database transaction or a group commit)",
            Unit::Seconds,
            this.seconds.clone(),
        );
        metrics.register(
            "grading_store_errors",
            "Store operations the database failed (unavailable, errors, corrupt rows)",
            this.errors.clone(),
        );
        this
    }

    /// Runs the store call `call`, timed as `operation` and traced as the
    /// step `store {operation}`.
    pub async fn measure<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call
            .instrument(child_span(&format!("store {operation}")))
            .await;
        let labels = Operation { operation };
        self.seconds
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        if let Err(error) = &result
            && is_failure(error)
        {
            self.errors.get_or_create(&labels).inc();
        }
        result
    }
}
