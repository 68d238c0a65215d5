//! Log shipping: a `tracing` layer that turns this daemon's events into log
//! records and queues them, and a shipper task that sends them to the log
//! service in batches, with the finished spans of traces
//! ([`crate::mesh::trace`] queues them through a [`SpanQueue`]). Request handling never waits on it: the queue is
//! bounded, a full queue drops records (counted, and reported once the log
//! service is back), and the shipper retries while the log service is away.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use std::sync::OnceLock;
use tokio::sync::mpsc;

use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::mesh::api::LogApi;
use crate::mesh::backoff::Backoff;
use crate::mesh::discovery::DependencyView;
use crate::mesh::shutdown::Shutdown;
use crate::mesh::trace::SPAN_TARGET as TRACE_SPAN_TARGET;
use crate::mesh::trace::otlp::ExportStats;
use crate::model::log::trace::Span;
use crate::model::log::{Level, LogRecord};

/// What a shipper sends in one write: records and spans.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shipment {
    /// Log records, in order.
    pub records: Vec<LogRecord>,
    /// Finished spans.
    pub spans: Vec<Span>,
}

impl Shipment {
    /// How many records and spans it holds.
    pub fn len(&self) -> usize {
        self.records.len() + self.spans.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&mut self, item: Shipped) {
        match item {
            Shipped::Record(record) => self.records.push(record),
            Shipped::Span(span) => self.spans.push(span),
        }
    }
}

impl From<Vec<LogRecord>> for Shipment {
    fn from(records: Vec<LogRecord>) -> Self {
        Shipment {
            records,
            spans: Vec::new(),
        }
    }
}

/// One queued item.
#[derive(Debug)]
enum Shipped {
    Record(LogRecord),
    Span(Span),
}

/// How many records and spans wait for shipping at most.
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
    queue: mpsc::Sender<Shipped>,
    stats: Arc<ShipperStats>,
    /// The subscriber this layer is part of, to read the ids of a trace.
    dispatch: Arc<OnceLock<WeakDispatch>>,
}

/// Queues finished spans for the shipper; a full queue drops them (counted
/// with the records).
#[derive(Debug, Clone)]
pub struct SpanQueue {
    queue: mpsc::Sender<Shipped>,
    stats: Arc<ShipperStats>,
}

impl SpanQueue {
    /// Queues `span`, or counts it dropped.
    pub fn push(&self, span: Span) {
        if self.queue.try_send(Shipped::Span(span)).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The shipper's counters as metrics, read at each scrape:
/// `log_shipper_shipped_total` and `log_shipper_dropped_total` (records and
/// spans dropped because the queue was full), and the OTLP export's
/// `otlp_exporter_spans_{exported,dropped,failed}_total` when it runs.
#[derive(Debug)]
pub struct ShipperCollector {
    stats: Arc<ShipperStats>,
    otlp: Option<Arc<ExportStats>>,
}

impl prometheus_client::collector::Collector for ShipperCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        let shipper = [
            (
                "log_shipper_shipped",
                "Log records and spans the log service acknowledged",
                self.stats.shipped.load(Ordering::Relaxed),
            ),
            (
                "log_shipper_dropped",
                "Log records and spans dropped because the shipping queue was full",
                self.stats.dropped.load(Ordering::Relaxed),
            ),
        ];
        let otlp = self.otlp.as_ref().map(|otlp| otlp.counters());
        for (name, help, value) in shipper.into_iter().chain(otlp.into_iter().flatten()) {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

/// The receiving end of the queue, to be run once a dependency view exists.
#[derive(Debug)]
pub struct LogShipper {
    queue: mpsc::Receiver<Shipped>,
    stats: Arc<ShipperStats>,
    /// The OTLP export's counters, reported with the shipper's when the
    /// spans are also exported.
    otlp: Option<Arc<ExportStats>>,
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
            dispatch: Arc::default(),
        },
        LogShipper {
            queue: rx,
            stats,
            otlp: None,
        },
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

impl ShipperLayer {
    /// The trace and span ids of the trace span an event was made in.
    fn trace_ids<S>(&self, event: &Event<'_>, ctx: &Context<'_, S>) -> Option<(String, String)>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        use opentelemetry::trace::TraceContextExt;
        let span = ctx
            .event_span(event)?
            .scope()
            .find(|span| span.metadata().target() == TRACE_SPAN_TARGET)?;
        let dispatch = self.dispatch.get()?.upgrade()?;
        let context = tracing_opentelemetry::get_otel_context(&span.id(), &dispatch)?;
        let otel = context.span();
        let ids = otel.span_context();
        ids.is_valid()
            .then(|| (ids.trace_id().to_string(), ids.span_id().to_string()))
    }
}

impl<S> Layer<S> for ShipperLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        if !meta.target().starts_with("gradebook") || meta.target().starts_with(SHIPPER_TARGET) {
            return;
        }
        let mut collected = FieldCollector::default();
        event.record(&mut collected);
        let mut fields = collected.fields;
        fields.insert("target".to_owned(), meta.target().to_owned());
        let (trace_id, span_id) = match (collected.trace_id, self.trace_ids(event, &ctx)) {
            (Some(trace_id), _) => (Some(trace_id), None),
            (None, Some((trace_id, span_id))) => (Some(trace_id), Some(span_id)),
            (None, None) => (None, None),
        };
        let record = LogRecord {
            timestamp: SystemTime::now(),
            service: self.service.clone(),
            instance: self.instance.clone(),
            level: Level::from(*meta.level()),
            message: collected.message,
            fields,
            trace_id,
            span_id,
            sequence: 0,
        };
        if self.queue.try_send(Shipped::Record(record)).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl ShipperLayer {
    /// The shipper's counters.
    pub fn stats(&self) -> Arc<ShipperStats> {
        self.stats.clone()
    }

    /// Where finished spans go to be shipped with the records.
    pub fn span_queue(&self) -> SpanQueue {
        SpanQueue {
            queue: self.queue.clone(),
            stats: self.stats.clone(),
        }
    }
}

/// Stores a batch of records without the network (the log daemon's own
/// records go straight into its store); `Err` says why not.
pub type LocalSink =
    Arc<dyn Fn(Shipment) -> futures::future::BoxFuture<'static, Result<(), String>> + Send + Sync>;

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
    async fn write(&self, batch: &Shipment) -> Result<(), String> {
        match self {
            Writer::Service(logs) => logs.write(batch).await.map_err(|error| error.to_string()),
            Writer::Local(sink) => sink(batch.clone()).await,
        }
    }
}

impl LogShipper {
    /// Its counters (and the OTLP export's), as metrics.
    pub fn collector(&self) -> ShipperCollector {
        ShipperCollector {
            stats: self.stats.clone(),
            otlp: self.otlp.clone(),
        }
    }

    /// Reports the OTLP export's counters with the shipper's.
    pub fn report_otlp(&mut self, stats: Arc<ExportStats>) {
        self.otlp = Some(stats);
    }

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
            let mut batch = Shipment::default();
            batch.push(first);
            self.take_queued(&mut batch);
            if batch.len() < MAX_BATCH {
                // The batch fills while this task sleeps: a send wakes the
                // receiver only while it waits on the queue, so a busy
                // daemon pays one wake-up a batch, not one a record.
                tokio::select! {
                    _ = tokio::time::sleep(LINGER) => {}
                    _ = shutdown.cancelled() => {}
                }
                self.take_queued(&mut batch);
            }
            let dropped = self.stats.dropped.load(Ordering::Relaxed);
            if dropped > reported_drops {
                let report = self.drop_report(dropped - reported_drops, &batch);
                batch.records.push(report);
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
        self.flush(&view, Shipment::default()).await;
    }

    /// Moves what is queued now into `batch`, up to [`MAX_BATCH`], without waiting.
    fn take_queued(&mut self, batch: &mut Shipment) {
        while batch.len() < MAX_BATCH {
            match self.queue.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
    }

    fn drop_report(&self, count: u64, batch: &Shipment) -> LogRecord {
        tracing::warn!(target: SHIPPER_TARGET, dropped = count, "log records or spans dropped: the shipping queue was full");
        let (service, instance) = match (batch.records.first(), batch.spans.first()) {
            (Some(record), _) => (record.service.clone(), record.instance.clone()),
            (None, Some(span)) => (span.service.clone(), span.instance.clone()),
            (None, None) => Default::default(),
        };
        LogRecord {
            timestamp: SystemTime::now(),
            service,
            instance,
            level: Level::Warn,
            message: format!("{count} log records or spans dropped: the shipping queue was full"),
            fields: [("dropped".to_owned(), count.to_string())].into(),
            trace_id: None,
            span_id: None,
            sequence: 0,
        }
    }

    /// Sends what is still queued, once, within [`FLUSH_TIMEOUT`].
    async fn flush(&mut self, view: &Writer, mut batch: Shipment) {
        while let Ok(item) = self.queue.try_recv() {
            batch.push(item);
        }
        if batch.is_empty() {
            return;
        }
        let shipped = tokio::time::timeout(FLUSH_TIMEOUT, ship(view, &batch)).await;
        if !matches!(shipped, Ok(Ok(()))) {
            tracing::warn!(target: SHIPPER_TARGET, records = batch.len(), "could not flush log records and spans at shutdown");
        }
    }
}

/// Writes one batch, durably, or fails.
async fn ship(writer: &Writer, batch: &Shipment) -> Result<(), String> {
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
        let Some(Shipped::Record(first)) = shipper.queue.try_recv().ok() else {
            panic!("the first event is not queued as a record");
        };
        assert_eq!(
            (first.service.as_str(), first.instance.as_str()),
            ("grading", "grading-1")
        );
        assert_eq!(first.level, Level::Info);
        assert_eq!(first.message, "grade added");
        assert_eq!(first.fields["student"], "0");
        assert_eq!(first.fields["target"], "gradebook::test");
        assert_eq!(first.trace_id.as_deref(), Some("t-1"));
        let report = shipper.drop_report(
            5,
            &Shipment {
                records: vec![first],
                spans: Vec::new(),
            },
        );
        assert_eq!(report.level, Level::Warn);
        assert_eq!(report.fields["dropped"], "5");
        assert!(report.message.starts_with("5 log records or spans dropped"));
        assert_eq!(report.service, "grading");
    }
}
