//! The log daemon's own metrics: what it ingests (records, spans, bytes
//! written) and how long a group commit takes to be written and fsynced,
//! for `/metrics`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;

use crate::mesh::metrics::{Metrics, latency_histogram};

/// The ingest metrics; cheap to clone (clones count together).
#[derive(Debug, Clone)]
pub struct IngestMetrics {
    /// Records stored.
    pub records: Counter,
    /// Spans stored.
    pub spans: Counter,
    /// Bytes appended to segment files.
    pub bytes: Counter,
    /// Time to write and fsync one group commit.
    pub commit_seconds: Histogram,
    /// Group commits that failed (nothing of them is stored).
    pub commit_errors: Counter,
}

impl Default for IngestMetrics {
    fn default() -> Self {
        IngestMetrics {
            records: Counter::default(),
            spans: Counter::default(),
            bytes: Counter::default(),
            commit_seconds: latency_histogram(),
            commit_errors: Counter::default(),
        }
    }
}

impl IngestMetrics {
    /// Registers these metrics in `metrics`.
    pub fn register(&self, metrics: &Metrics) {
        metrics.register(
            "log_records_ingested",
            "Log records stored durably",
            self.records.clone(),
        );
        metrics.register(
            "log_spans_ingested",
            "Spans of traces stored durably",
            self.spans.clone(),
        );
        metrics.register_with_unit(
            "log_ingested",
            "Bytes appended to segment files (records and spans)",
            Unit::Bytes,
            self.bytes.clone(),
        );
        metrics.register_with_unit(
            "log_commit",
            "Time to write and fsync one group commit",
            Unit::Seconds,
            self.commit_seconds.clone(),
        );
        metrics.register(
            "log_commit_errors",
            "Group commits that failed, storing nothing",
            self.commit_errors.clone(),
        );
    }
}
