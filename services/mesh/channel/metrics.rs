//! The client side of the RED metrics, as the balancer sees it: per
//! endpoint (an instance of a service at an address), the attempts sent,
//! the failures by kind, the time to an answer, the peak-EWMA latency the
//! balancer compares, ejections and whether it is ejected now; per
//! channel, the retries and the retries the budget refused.
//!
//! | Metric | Labels |
//! | --- | --- |
//! | `mesh_client_requests_total` | `service`, `instance_id`, `address` |
//! | `mesh_client_failures_total` | and `outcome`: `unreachable`, `unavailable`, `broken`, `timed_out` |
//! | `mesh_client_request_duration_seconds` | `service`, `instance_id`, `address` |
//! | `mesh_client_peak_ewma_seconds` | `service`, `instance_id`, `address` |
//! | `mesh_client_ejections_total`, `mesh_client_ejected` | `service`, `instance_id`, `address` |
//! | `mesh_client_retries_total`, `mesh_client_retry_budget_exhausted_total` | `service` |
//!
//! An endpoint's series go when the balancer drops the endpoint (the
//! instance left the healthy set), so the metrics never outgrow the
//! instances there are. The latency estimate is the balancer's own rule
//! (tower's `PeakEwma`: a slower answer is taken at once, a faster one
//! decays in over [`EWMA_DECAY`]), kept here because tower's load value is
//! opaque.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;
use tokio::time::Instant;

use crate::mesh::channel::endpoint::{DEFAULT_RTT, EWMA_DECAY};
use crate::mesh::channel::outcome::Outcome;
use crate::mesh::metrics::{Metrics, latency_histogram};

/// One endpoint, as labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Endpoint {
    service: String,
    instance_id: String,
    address: String,
}

/// One endpoint and how an attempt failed, as labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Failure {
    service: String,
    instance_id: String,
    address: String,
    outcome: &'static str,
}

/// One channel, as labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Service {
    service: String,
}

/// The failed outcomes, by label.
const FAILURES: [(Outcome, &str); 4] = [
    (Outcome::Unreachable, "unreachable"),
    (Outcome::Unavailable, "unavailable"),
    (Outcome::Broken, "broken"),
    (Outcome::TimedOut, "timed_out"),
];

type FloatGauge = Gauge<f64, AtomicU64>;

/// The metric families of every mesh channel of a process. Cheap to
/// clone; [`ChannelMetrics::default`] measures without being registered
/// anywhere (for tools and tests).
#[derive(Debug, Clone)]
pub struct ChannelMetrics {
    requests: Family<Endpoint, Counter>,
    failures: Family<Failure, Counter>,
    duration: Family<Endpoint, Histogram, fn() -> Histogram>,
    peak_ewma: Family<Endpoint, FloatGauge>,
    ejections: Family<Endpoint, Counter>,
    ejected: Family<Endpoint, Gauge>,
    retries: Family<Service, Counter>,
    budget_exhausted: Family<Service, Counter>,
    /// How many endpoint values hold each endpoint's series: an instance
    /// that leaves and comes back at once may be a new endpoint before the
    /// old one's last call has ended.
    holders: Arc<Mutex<HashMap<Endpoint, usize>>>,
}

impl Default for ChannelMetrics {
    fn default() -> Self {
        ChannelMetrics {
            requests: Family::default(),
            failures: Family::default(),
            duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            peak_ewma: Family::default(),
            ejections: Family::default(),
            ejected: Family::default(),
            retries: Family::default(),
            budget_exhausted: Family::default(),
            holders: Arc::default(),
        }
    }
}

impl ChannelMetrics {
    /// Registers the channels' metrics in `metrics`.
    pub fn register(metrics: &Metrics) -> Self {
        let this = ChannelMetrics::default();
        metrics.register(
            "mesh_client_requests",
            "Attempts sent to an endpoint",
            this.requests.clone(),
        );
        metrics.register(
            "mesh_client_failures",
            "Attempts to an endpoint that failed, by how",
            this.failures.clone(),
        );
        metrics.register_with_unit(
            "mesh_client_request_duration",
            "Time from sending an attempt to its answer (or failure)",
            Unit::Seconds,
            this.duration.clone(),
        );
        metrics.register_with_unit(
            "mesh_client_peak_ewma",
            "The peak-EWMA latency the balancer compares, as of the endpoint's last answer",
            Unit::Seconds,
            this.peak_ewma.clone(),
        );
        metrics.register(
            "mesh_client_ejections",
            "Times an endpoint was ejected (its circuit opened)",
            this.ejections.clone(),
        );
        metrics.register(
            "mesh_client_ejected",
            "Whether an endpoint is ejected now (1) or taking traffic (0)",
            this.ejected.clone(),
        );
        metrics.register(
            "mesh_client_retries",
            "Attempts that were retries of a failed one",
            this.retries.clone(),
        );
        metrics.register(
            "mesh_client_retry_budget_exhausted",
            "Retries the retry budget refused",
            this.budget_exhausted.clone(),
        );
        this
    }

    /// The series of one endpoint, until the returned value is dropped.
    pub fn endpoint(&self, service: &str, instance_id: &str, address: &str) -> EndpointMetrics {
        let labels = Endpoint {
            service: service.to_owned(),
            instance_id: instance_id.to_owned(),
            address: address.to_owned(),
        };
        *self.holders().entry(labels.clone()).or_default() += 1;
        let failures = FAILURES.map(|(outcome, name)| {
            let failure = Failure {
                service: labels.service.clone(),
                instance_id: labels.instance_id.clone(),
                address: labels.address.clone(),
                outcome: name,
            };
            (outcome, self.failures.get_or_create_owned(&failure))
        });
        let series = EndpointMetrics {
            requests: self.requests.get_or_create_owned(&labels),
            failures,
            duration: self.duration.get_or_create_owned(&labels),
            peak_ewma: self.peak_ewma.get_or_create_owned(&labels),
            ejections: self.ejections.get_or_create_owned(&labels),
            ejected: self.ejected.get_or_create_owned(&labels),
            estimate: Mutex::new(PeakEstimate::new(DEFAULT_RTT)),
            _owner: SeriesOwner {
                families: self.clone(),
                labels,
            },
        };
        series.peak_ewma.set(DEFAULT_RTT.as_secs_f64());
        series
    }

    fn holders(&self) -> std::sync::MutexGuard<'_, HashMap<Endpoint, usize>> {
        self.holders.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The retry counters of the channel to `service`.
    pub fn retries(&self, service: &str) -> RetryMetrics {
        let labels = Service {
            service: service.to_owned(),
        };
        RetryMetrics {
            retries: self.retries.get_or_create_owned(&labels),
            budget_exhausted: self.budget_exhausted.get_or_create_owned(&labels),
        }
    }
}

/// The retry counters of one channel.
#[derive(Debug, Clone, Default)]
pub struct RetryMetrics {
    retries: Counter,
    budget_exhausted: Counter,
}

impl RetryMetrics {
    /// An attempt is retried.
    pub fn retried(&self) {
        self.retries.inc();
    }

    /// A retry was refused by the budget.
    pub fn budget_exhausted(&self) {
        self.budget_exhausted.inc();
    }
}

/// The series of one endpoint; they leave the families when this is dropped.
#[derive(Debug)]
pub struct EndpointMetrics {
    requests: Counter,
    failures: [(Outcome, Counter); 4],
    duration: Histogram,
    peak_ewma: FloatGauge,
    ejections: Counter,
    ejected: Gauge,
    estimate: Mutex<PeakEstimate>,
    /// Held for its `Drop`.
    _owner: SeriesOwner,
}

impl EndpointMetrics {
    /// An attempt is sent.
    pub fn sent(&self) {
        self.requests.inc();
    }

    /// An attempt sent `elapsed` ago ended with `outcome` at `now`.
    pub fn ended(&self, outcome: Outcome, elapsed: Duration, now: Instant) {
        self.duration.observe(elapsed.as_secs_f64());
        if let Some((_, counter)) = self.failures.iter().find(|(o, _)| *o == outcome) {
            counter.inc();
        }
        let estimate = self
            .estimate
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .update(elapsed, now);
        self.peak_ewma.set(estimate.as_secs_f64());
    }

    /// The endpoint's circuit opened (`true`) or closed again (`false`).
    pub fn set_ejected(&self, ejected: bool) {
        if ejected {
            self.ejections.inc();
        }
        self.ejected.set(i64::from(ejected));
    }
}

/// Removes one endpoint's series from the families when dropped.
#[derive(Debug)]
struct SeriesOwner {
    families: ChannelMetrics,
    labels: Endpoint,
}

impl Drop for SeriesOwner {
    fn drop(&mut self) {
        let families = &self.families;
        let labels = &self.labels;
        {
            let mut holders = families.holders();
            let Some(count) = holders.get_mut(labels) else {
                return;
            };
            *count -= 1;
            if *count > 0 {
                return;
            }
            holders.remove(labels);
        }
        families.requests.remove(labels);
        families.duration.remove(labels);
        families.peak_ewma.remove(labels);
        families.ejections.remove(labels);
        families.ejected.remove(labels);
        for (_, outcome) in FAILURES {
            families.failures.remove(&Failure {
                service: labels.service.clone(),
                instance_id: labels.instance_id.clone(),
                address: labels.address.clone(),
                outcome,
            });
        }
    }
}

/// A peak-EWMA latency estimate, by tower's rule: an answer slower than
/// the estimate replaces it; a faster one moves it by how long ago the
/// last answer was, relative to [`EWMA_DECAY`].
#[derive(Debug, Clone, Copy)]
struct PeakEstimate {
    estimate: Duration,
    updated: Option<Instant>,
}

impl PeakEstimate {
    fn new(initial: Duration) -> Self {
        PeakEstimate {
            estimate: initial,
            updated: None,
        }
    }

    /// Takes an answer that took `rtt` at `now`; returns the new estimate.
    fn update(&mut self, rtt: Duration, now: Instant) -> Duration {
        self.estimate = match self.updated {
            _ if rtt > self.estimate => rtt,
            None => rtt,
            Some(last) => {
                let since = now.saturating_duration_since(last).as_secs_f64();
                let decay = (-since / EWMA_DECAY.as_secs_f64()).exp();
                Duration::from_secs_f64(
                    self.estimate.as_secs_f64() * decay + rtt.as_secs_f64() * (1.0 - decay),
                )
            }
        };
        self.updated = Some(now);
        self.estimate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_endpoint_is_measured_until_it_is_dropped() {
        let metrics = Metrics::new();
        let channels = ChannelMetrics::register(&metrics);
        let endpoint = channels.endpoint("grading", "g-1", "127.0.0.1:1");
        endpoint.sent();
        endpoint.sent();
        let now = Instant::now();
        endpoint.ended(Outcome::Answered, Duration::from_millis(4), now);
        endpoint.ended(Outcome::TimedOut, Duration::from_millis(500), now);
        endpoint.set_ejected(true);
        channels.retries("grading").retried();
        channels.retries("grading").budget_exhausted();
        let text = metrics.encode();
        let labels = r#"service="grading",instance_id="g-1",address="127.0.0.1:1""#;
        for line in [
            format!("mesh_client_requests_total{{{labels}}} 2"),
            format!("mesh_client_failures_total{{{labels},outcome=\"timed_out\"}} 1"),
            format!("mesh_client_failures_total{{{labels},outcome=\"unreachable\"}} 0"),
            format!("mesh_client_request_duration_seconds_count{{{labels}}} 2"),
            format!("mesh_client_peak_ewma_seconds{{{labels}}} 0.5"),
            format!("mesh_client_ejections_total{{{labels}}} 1"),
            format!("mesh_client_ejected{{{labels}}} 1"),
            "mesh_client_retries_total{service=\"grading\"} 1".to_owned(),
            "mesh_client_retry_budget_exhausted_total{service=\"grading\"} 1".to_owned(),
        ] {
            assert!(text.contains(&line), "{line} in\n{text}");
        }
        drop(endpoint);
        let text = metrics.encode();
        assert!(
            !text.contains("g-1"),
            "the endpoint's series are gone:\n{text}"
        );
        assert!(text.contains("mesh_client_retries_total{service=\"grading\"} 1"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_estimate_takes_a_peak_at_once_and_decays_from_it() {
        let start = Instant::now();
        let mut estimate = PeakEstimate::new(DEFAULT_RTT);
        assert_eq!(
            estimate.update(Duration::from_millis(2), start),
            Duration::from_millis(2),
            "the first answer replaces the default"
        );
        assert_eq!(
            estimate.update(Duration::from_millis(400), start),
            Duration::from_millis(400),
            "a slower answer is taken at once"
        );
        let soon = estimate.update(Duration::from_millis(2), start + Duration::from_millis(100));
        assert!(soon > Duration::from_millis(390), "{soon:?}");
        let later = estimate.update(Duration::from_millis(2), start + Duration::from_secs(60));
        assert!(later < Duration::from_millis(5), "{later:?}");
    }
}
