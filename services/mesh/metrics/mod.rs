//! Prometheus metrics of one daemon. Each process has one [`Metrics`]
//! registry, made by [`crate::mesh::Mesh`] and passed to whatever measures
//! (no process-global state); the daemon serves it at `GET /metrics` on
//! its own port, in the OpenMetrics text format that Prometheus scrapes.
//!
//! Measuring never takes a lock: counters, gauges and histograms are
//! atomics. Only registering (at start) and encoding (a scrape) take the
//! registry's lock, so a scrape never waits on request handling.

pub mod grpc_server;
pub mod process;
mod route;
pub mod scrape;

use std::sync::{Arc, Mutex, MutexGuard};

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry, Unit};

pub use route::route;

/// The buckets of every latency histogram of the mesh: 0.5 ms to about
/// 16 s, doubling.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One process's metrics, cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // Registering and encoding leave the registry whole even if they
        // panic, so a poisoned lock is still safe to use.
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers `metric` as `name` (a counter gets `_total` appended).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.lock().register(name, help, metric);
    }

    /// Registers `metric` as `name` in `unit` (appended to the name, as
    /// `_seconds` or `_bytes`).
    pub fn register_with_unit(&self, name: &str, help: &str, unit: Unit, metric: impl Metric) {
        self.lock().register_with_unit(name, help, unit, metric);
    }

    /// Registers `collector`, asked for its figures at each scrape.
    pub fn register_collector(&self, collector: impl prometheus_client::collector::Collector) {
        self.lock().register_collector(Box::new(collector));
    }

    /// Every metric, in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.lock());
        out
    }
}
