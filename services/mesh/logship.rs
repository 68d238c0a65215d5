//! Log shipping: a `tracing` layer that turns this daemon's events into log
//! records and queues them, and a shipper task that sends them to the log
//! service in batches. Request handling never waits on it: the queue is
//! bounded, a full queue drops records (counted, and reported once the log
//! service is back), and the shipper retries while the log service is away.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use crate::mesh::api::LogApi;
use crate::mesh::backoff::Backoff;
use crate::mesh::discovery::DependencyView;
use crate::mesh::shutdown::Shutdown;
use crate::model::log::{Level, LogRecord};

/// How many records wait for shipping at most.
pub const QUEUE_CAPACITY: usize = 10_000;
/// How many records one batch holds at most.
pub const MAX_BATCH: usize = 500;
/// How long the shipper waits to fill a batch.
pub const LINGER: Duration = Duration::from_millis(100);
/// Deadline of one batch write.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the final flush at shutdown may take.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// The shipper's own events carry this target; they go to stderr only, so
/// that shipping trouble never feeds itself.
pub const SHIPPER_TARGET: &str = "gradebook::mesh::logship";

/// Counts what the shipper did, for reporting and tests.
#[derive(Debug, Default)]
pub struct ShipperStats {
    /// Records dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Records the log service acknowledged.
    pub shipped: AtomicU64,
}

/// The `tracing` layer: queues this daemon's events as log records.
#[derive(Debug, Clone)]
pub struct ShipperLayer {
    service: String,
    instance: String,
    queue: mpsc::Sender<LogRecord>,
    stats: Arc<ShipperStats>,
}

/// The receiving end of the queue, to be run once a dependency view exists.
#[derive(Debug)]
pub struct LogShipper {
    queue: mpsc::Receiver<LogRecord>,
    stats: Arc<ShipperStats>,
}

/// Makes the layer and the shipper for records of `service`/`instance`.
pub fn log_shipping(service: &str, instance: &str) -> (ShipperLayer, LogShipper) {
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    let stats = Arc::new(ShipperStats::default());
    (
        ShipperLayer {
            service: service.to_owned(),
            instance: instance.to_owned(),
            queue: tx,
            stats: stats.clone(),
        },
        LogShipper { queue: rx, stats },
    )
}

/// Collects an event's message and fields.
#[derive(Default)]
struct FieldCollector {
    message: String,
    fields: BTreeMap<String, String>,
    trace_id: Option<String>,
}

impl Visit for FieldCollector {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_owned(),
            "trace_id" => self.trace_id = Some(value.to_owned()),
            name => {
                self.fields.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

impl<S: Subscriber> Layer<S> for ShipperLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if !meta.target().starts_with("gradebook") || meta.target().starts_with(SHIPPER_TARGET) {
            return;
        }
        let mut collected = FieldCollector::default();
        event.record(&mut collected);
        let mut fields = collected.fields;
        fields.insert("target".to_owned(), meta.target().to_owned());
        let record = LogRecord {
            timestamp: SystemTime::now(),
            service: self.service.clone(),
            instance: self.instance.clone(),
            level: Level::from(*meta.level()),
            message: collected.message,
            fields,
            trace_id: collected.trace_id,
            sequence: 0,
        };
        if self.queue.try_send(record).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl ShipperLayer {
    /// The shipper's counters.
    pub fn stats(&self) -> Arc<ShipperStats> {
        self.stats.clone()
    }
}

/// Stores a batch of records without the network (the log daemon's own
/// records go straight into its store); `Err` says why not.
pub type LocalSink = Arc<
    dyn Fn(Vec<LogRecord>) -> futures::future::BoxFuture<'static, Result<(), String>> + Send + Sync,
>;

/// Where a shipper sends its records.
#[derive(Clone)]
pub enum Destination {
    /// The log service, found through the dependency view.
    Mesh(DependencyView),
    /// A sink in this process (the log daemon itself).
    Local(LocalSink),
}

/// A destination, ready to write.
enum Writer {
    Service(LogApi),
    Local(LocalSink),
}

impl Writer {
    async fn write(&self, batch: &[LogRecord]) -> Result<(), String> {
        match self {
            Writer::Service(logs) => logs.write(batch).await.map_err(|error| error.to_string()),
            Writer::Local(sink) => sink(batch.to_vec()).await,
        }
    }
}

impl LogShipper {
    /// Ships queued records to `destination` until `shutdown`, then flushes
    /// what is left within [`FLUSH_TIMEOUT`].
    pub async fn run(mut self, destination: Destination, backoff: Backoff, shutdown: Shutdown) {
        let view = match destination {
            Destination::Mesh(view) => Writer::Service(LogApi::new(view, WRITE_TIMEOUT)),
            Destination::Local(sink) => Writer::Local(sink),
        };
        let mut reported_drops = 0u64;
        while let Some(first) = tokio::select! {
            first = self.queue.recv() => first,
            _ = shutdown.cancelled() => None,
        } {
            let mut batch = vec![first];
            let linger = tokio::time::sleep(LINGER);
            tokio::pin!(linger);
            while batch.len() < MAX_BATCH {
                tokio::select! {
                    next = self.queue.recv() => match next {
                        Some(record) => batch.push(record),
                        None => break,
                    },
                    _ = &mut linger => break,
                    _ = shutdown.cancelled() => break,
                }
            }
            let dropped = self.stats.dropped.load(Ordering::Relaxed);
            if dropped > reported_drops {
                batch.push(self.drop_report(dropped - reported_drops, &batch[0]));
                reported_drops = dropped;
            }
            let mut attempt = 0;
            loop {
                match ship(&view, &batch).await {
                    Ok(()) => {
                        self.stats
                            .shipped
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
                        break;
                    }
                    Err(error) => {
                        if attempt == 0 {
                            tracing::debug!(target: SHIPPER_TARGET, error = %error, "log service unavailable; retrying");
                        }
                        let delay = backoff.delay(attempt.min(6));
                        attempt += 1;
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {},
                            _ = shutdown.cancelled() => {
                                self.flush(&view, batch).await;
                                return;
                            }
                        }
                    }
                }
            }
        }
        self.flush(&view, Vec::new()).await;
    }

    fn drop_report(&self, count: u64, template: &LogRecord) -> LogRecord {
        tracing::warn!(target: SHIPPER_TARGET, dropped = count, "log records dropped: the shipping queue was full");
        LogRecord {
            timestamp: SystemTime::now(),
            service: template.service.clone(),
            instance: template.instance.clone(),
            level: Level::Warn,
            message: format!("{count} log records dropped: the shipping queue was full"),
            fields: [("dropped".to_owned(), count.to_string())].into(),
            trace_id: None,
            sequence: 0,
        }
    }

    /// Sends what is still queued, once, within [`FLUSH_TIMEOUT`].
    async fn flush(&mut self, view: &Writer, mut batch: Vec<LogRecord>) {
        while let Ok(record) = self.queue.try_recv() {
            batch.push(record);
        }
        if batch.is_empty() {
            return;
        }
        let shipped = tokio::time::timeout(FLUSH_TIMEOUT, ship(view, &batch)).await;
        if !matches!(shipped, Ok(Ok(()))) {
            tracing::warn!(target: SHIPPER_TARGET, records = batch.len(), "could not flush log records at shutdown");
        }
    }
}

/// Writes one batch, durably, or fails.
async fn ship(writer: &Writer, batch: &[LogRecord]) -> Result<(), String> {
    writer.write(batch).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn events_become_records_and_a_full_queue_counts_drops() {
        let (layer, mut shipper) = log_shipping("grading", "grading-1");
        let stats = layer.stats();
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..QUEUE_CAPACITY + 5 {
                tracing::info!(target: "gradebook::test", student = i, trace_id = "t-1", "grade added");
            }
            // Not shipped: other crates' events and the shipper's own.
            tracing::warn!(target: "hyper::proto", "ignored");
            tracing::warn!(target: SHIPPER_TARGET, "ignored too");
        });
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 5);
        let first = shipper.queue.try_recv().unwrap();
        assert_eq!(
            (first.service.as_str(), first.instance.as_str()),
            ("grading", "grading-1")
        );
        assert_eq!(first.level, Level::Info);
        assert_eq!(first.message, "grade added");
        assert_eq!(first.fields["student"], "0");
        assert_eq!(first.fields["target"], "gradebook::test");
        assert_eq!(first.trace_id.as_deref(), Some("t-1"));
        let report = shipper.drop_report(5, &first);
        assert_eq!(report.level, Level::Warn);
        assert_eq!(report.fields["dropped"], "5");
        assert!(report.message.starts_with("5 log records dropped"));
    }
}
