//! The OTLP export of finished spans, bounded and counted: a span
//! processor that puts each sampled span in a bounded queue without ever
//! waiting (a full queue drops the span and counts it), and a task that
//! sends the queue in batches to the collector, each export within a
//! deadline. A collector that is down or never answers therefore never
//! slows a request: spans pile up to the bound, then are dropped, and
//! `otlp_exporter_spans_dropped_total` says how many.
//!
//! It stands in for the SDK's `BatchSpanProcessor`, which has the same
//! bound but keeps its drop count to itself. It reads the same standard
//! variables with the same defaults: `OTEL_BSP_MAX_QUEUE_SIZE` (2048),
//! `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` (512), `OTEL_BSP_SCHEDULE_DELAY`
//! (5000 ms) and `OTEL_BSP_EXPORT_TIMEOUT` (30000 ms).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter, SpanProcessor};
use tokio::sync::mpsc;

/// Spans waiting for export at most, by default.
pub const DEFAULT_MAX_QUEUE: usize = 2048;
/// Spans in one export at most, by default.
pub const DEFAULT_MAX_BATCH: usize = 512;
/// How long a batch waits to fill, by default.
pub const DEFAULT_SCHEDULE_DELAY: Duration = Duration::from_millis(5000);
/// How long one export may take, by default.
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_millis(30_000);
/// How long the end of a daemon waits for the last batch at most.
const FLUSH_WAIT: Duration = Duration::from_secs(5);

/// How spans are batched for export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportSettings {
    /// Spans waiting for export at most (at least 1).
    pub max_queue: usize,
    /// Spans in one export at most (at least 1).
    pub max_batch: usize,
    /// How long a batch waits to fill.
    pub schedule_delay: Duration,
    /// How long one export may take.
    pub export_timeout: Duration,
}

impl Default for ExportSettings {
    fn default() -> Self {
        ExportSettings {
            max_queue: DEFAULT_MAX_QUEUE,
            max_batch: DEFAULT_MAX_BATCH,
            schedule_delay: DEFAULT_SCHEDULE_DELAY,
            export_timeout: DEFAULT_EXPORT_TIMEOUT,
        }
    }
}

impl ExportSettings {
    /// The settings the `OTEL_BSP_*` variables give, as `lookup` reads
    /// them; a value that is missing, malformed or zero keeps the default.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let number = |name: &str| {
            lookup(name)
                .and_then(|value| value.trim().parse::<u64>().ok())
                .filter(|n| *n > 0)
        };
        let defaults = ExportSettings::default();
        let count = |name, default: usize| number(name).map_or(default, |n| n as usize);
        let millis = |name, default: Duration| number(name).map_or(default, Duration::from_millis);
        let max_queue = count("OTEL_BSP_MAX_QUEUE_SIZE", defaults.max_queue);
        ExportSettings {
            max_queue,
            // As the specification says, a batch is never larger than the queue.
            max_batch: count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", defaults.max_batch).min(max_queue),
            schedule_delay: millis("OTEL_BSP_SCHEDULE_DELAY", defaults.schedule_delay),
            export_timeout: millis("OTEL_BSP_EXPORT_TIMEOUT", defaults.export_timeout),
        }
    }
}

/// What became of the spans given to the export.
#[derive(Debug, Default)]
pub struct ExportStats {
    exported: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
}

impl ExportStats {
    /// Spans the collector acknowledged.
    pub fn exported(&self) -> u64 {
        self.exported.load(Ordering::Relaxed)
    }

    /// Spans dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Spans whose export failed or ran out of time.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// The counters, as (metric name, help, value).
    pub fn counters(&self) -> [(&'static str, &'static str, u64); 3] {
        [
            (
                "otlp_exporter_spans_exported",
                "Spans the OTLP collector acknowledged",
                self.exported(),
            ),
            (
                "otlp_exporter_spans_dropped",
                "Spans dropped because the OTLP export queue was full",
                self.dropped(),
            ),
            (
                "otlp_exporter_spans_failed",
                "Spans whose OTLP export failed or ran out of time",
                self.failed(),
            ),
        ]
    }
}

/// The span processor of the OTLP export. See the module documentation.
#[derive(Debug)]
pub struct OtlpExport {
    queue: Mutex<Option<mpsc::Sender<SpanData>>>,
    /// Cuts the task's wait for a batch to fill short, at shutdown.
    closing: Arc<tokio::sync::Notify>,
    finished: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    stats: Arc<ExportStats>,
}

impl OtlpExport {
    /// Starts exporting through `exporter` on a task of its own, which
    /// ends once the processor is shut down and the queue is sent. Must be
    /// called inside a tokio runtime.
    pub fn start<E>(exporter: E, settings: ExportSettings) -> Self
    where
        E: SpanExporter + 'static,
    {
        let (queue, spans) = mpsc::channel(settings.max_queue.max(1));
        let (finished_tx, finished) = std::sync::mpsc::sync_channel(1);
        let stats = Arc::new(ExportStats::default());
        let task_stats = stats.clone();
        let closing = Arc::new(tokio::sync::Notify::new());
        let task_closing = closing.clone();
        tokio::spawn(async move {
            send_batches(exporter, spans, settings, &task_stats, &task_closing).await;
            let _ = finished_tx.send(());
        });
        OtlpExport {
            queue: Mutex::new(Some(queue)),
            closing,
            finished: Mutex::new(Some(finished)),
            stats,
        }
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<ExportStats> {
        self.stats.clone()
    }
}

/// Sends what arrives on `spans` in batches until the queue is closed and empty.
async fn send_batches<E: SpanExporter>(
    exporter: E,
    mut spans: mpsc::Receiver<SpanData>,
    settings: ExportSettings,
    stats: &ExportStats,
    closing: &tokio::sync::Notify,
) {
    let max_batch = settings.max_batch.max(1);
    let take_queued = |spans: &mut mpsc::Receiver<SpanData>, batch: &mut Vec<SpanData>| {
        while batch.len() < max_batch {
            match spans.try_recv() {
                Ok(span) => batch.push(span),
                Err(_) => break,
            }
        }
    };
    while let Some(first) = spans.recv().await {
        let mut batch = vec![first];
        take_queued(&mut spans, &mut batch);
        if batch.len() < max_batch && !spans.is_closed() {
            // The batch fills while the task sleeps (no wake-up per span).
            tokio::select! {
                _ = tokio::time::sleep(settings.schedule_delay) => {}
                _ = closing.notified() => {}
            }
            take_queued(&mut spans, &mut batch);
        }
        let count = batch.len() as u64;
        match tokio::time::timeout(settings.export_timeout, exporter.export(batch)).await {
            Ok(Ok(())) => stats.exported.fetch_add(count, Ordering::Relaxed),
            Ok(Err(_)) | Err(_) => stats.failed.fetch_add(count, Ordering::Relaxed),
        };
    }
    let _ = exporter.shutdown();
}

impl SpanProcessor for OtlpExport {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        let queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let sent = queue
            .as_ref()
            .is_some_and(|queue| queue.try_send(span).is_ok());
        if !sent {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    /// Closes the queue and waits, within `timeout` (5 s at most), for the
    /// task to send what is left.
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // A permit, in case the task is not waiting yet.
        self.closing.notify_one();
        let Some(finished) = self
            .finished
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return Err(OTelSdkError::AlreadyShutdown);
        };
        let wait = || finished.recv_timeout(timeout.min(FLUSH_WAIT));
        // On a worker of a multi-threaded runtime, let its other tasks (the
        // export among them) move elsewhere while this one waits; a
        // single-threaded runtime cannot wait for its own task at all.
        let waited = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
            Ok(_) => return Ok(()),
            Err(_) => wait(),
        };
        waited.map_err(|_| OTelSdkError::Timeout(timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn the_standard_variables_set_the_batching_and_bad_values_keep_the_defaults() {
        let env = HashMap::from([
            ("OTEL_BSP_MAX_QUEUE_SIZE", "8"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512"),
            ("OTEL_BSP_SCHEDULE_DELAY", "250"),
            ("OTEL_BSP_EXPORT_TIMEOUT", "soon"),
        ]);
        let settings =
            ExportSettings::from_lookup(|name| env.get(name).map(|value| value.to_string()));
        assert_eq!(
            settings,
            ExportSettings {
                max_queue: 8,
                max_batch: 8,
                schedule_delay: Duration::from_millis(250),
                export_timeout: DEFAULT_EXPORT_TIMEOUT,
            }
        );
        assert_eq!(
            ExportSettings::from_lookup(|_| Some("0".into())),
            ExportSettings::default()
        );
    }
}
