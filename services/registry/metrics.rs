//! The registry's own metrics, for `/metrics`: instances by service and
//! health (`registry_instances`), connected watchers, catalog changes by
//! kind, evictions, and how long a health probe takes to connect and get
//! its first answer. Kept up to date as changes are published, so a scrape
//! reads atomics and never waits on the catalog's lock.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;

use crate::mesh::metrics::{Metrics, latency_histogram};
use crate::model::registry::{Change, ChangeKind};

/// A service and a health, as labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceHealth {
    service: String,
    health: String,
}

/// A kind of change, as labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

/// The registry's metrics; cheap to clone (clones count together).
#[derive(Debug, Clone)]
pub struct RegistryMetrics {
    instances: Family<ServiceHealth, Gauge>,
    watchers: Gauge,
    changes: Family<Kind, Counter>,
    evictions: Counter,
    probe_seconds: Histogram,
    /// Each listed instance's labels, to move it when its health changes.
    known: std::sync::Arc<Mutex<HashMap<String, ServiceHealth>>>,
}

impl Default for RegistryMetrics {
    fn default() -> Self {
        RegistryMetrics {
            instances: Family::default(),
            watchers: Gauge::default(),
            changes: Family::default(),
            evictions: Counter::default(),
            probe_seconds: latency_histogram(),
            known: Default::default(),
        }
    }
}

impl RegistryMetrics {
    /// Registers these metrics in `metrics`.
    pub fn register(&self, metrics: &Metrics) {
        metrics.register(
            "registry_instances",
            "Instances in this node's catalog, by service and health",
            self.instances.clone(),
        );
        metrics.register(
            "registry_watchers",
            "Watch streams connected to this node",
            self.watchers.clone(),
        );
        metrics.register(
            "registry_catalog_changes",
            "Changes published to watchers, by kind",
            self.changes.clone(),
        );
        metrics.register(
            "registry_evictions",
            "Instances removed for being down longer than the eviction grace",
            self.evictions.clone(),
        );
        metrics.register_with_unit(
            "registry_probe",
            "Time for a health probe to connect and get its first answer",
            Unit::Seconds,
            self.probe_seconds.clone(),
        );
    }

    /// Accounts for a published change.
    pub fn published(&self, change: &Change) {
        self.changes
            .get_or_create(&Kind {
                kind: change.kind.as_str(),
            })
            .inc();
        let mut known = self
            .known
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let id = &change.instance.instance_id;
        if let Some(before) = known.remove(id) {
            self.instances.get_or_create(&before).dec();
        }
        if change.kind != ChangeKind::Removed {
            let labels = ServiceHealth {
                service: change.instance.service.clone(),
                health: change.instance.health.to_string(),
            };
            self.instances.get_or_create(&labels).inc();
            known.insert(id.clone(), labels);
        }
    }

    /// Accounts for `count` evictions.
    pub fn evicted(&self, count: u64) {
        self.evictions.inc_by(count);
    }

    /// Sets how many watchers are connected.
    pub fn set_watchers(&self, count: usize) {
        self.watchers.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Records how long a probe took to connect and get its first answer.
    pub fn probed(&self, elapsed: std::time::Duration) {
        self.probe_seconds.observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::registry::{Health, Instance};

    #[test]
    fn instances_move_between_healths_and_leave_when_removed() {
        let metrics = RegistryMetrics::default();
        let mut instance = Instance::for_test("grading", "grading-1", Health::Unknown);
        let count = |health: &str| {
            metrics
                .instances
                .get_or_create(&ServiceHealth {
                    service: "grading".into(),
                    health: health.into(),
                })
                .get()
        };
        metrics.published(&Change {
            kind: ChangeKind::Added,
            instance: instance.clone(),
        });
        assert_eq!(count("UNKNOWN"), 1);
        instance.health = Health::Serving;
        metrics.published(&Change {
            kind: ChangeKind::HealthChanged,
            instance: instance.clone(),
        });
        assert_eq!((count("UNKNOWN"), count("SERVING")), (0, 1));
        metrics.published(&Change {
            kind: ChangeKind::Removed,
            instance,
        });
        assert_eq!(count("SERVING"), 0);
    }
}
