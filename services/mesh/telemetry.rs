//! Sets up this process's `tracing`: records go to stderr, and, for a
//! daemon, to the log service through [`crate::mesh::logship`], and the
//! spans of [`crate::mesh::trace`] become OpenTelemetry spans. The shipper
//! is parked here until the daemon's server starts it with its dependency
//! view; the tracer provider until the daemon ends and flushes it.

use std::sync::Mutex;

use opentelemetry::trace::TracerProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::mesh::logship::{LogShipper, log_shipping};
use crate::mesh::trace::{SPAN_TARGET, export};

static PARKED_SHIPPER: Mutex<Option<LogShipper>> = Mutex::new(None);
static PARKED_PROVIDER: Mutex<Option<SdkTracerProvider>> = Mutex::new(None);

/// The filter used when neither `--log-level` nor `RUST_LOG` says otherwise.
pub const DEFAULT_FILTER: &str = "info,h2=warn,hyper=warn,tower=warn";

/// Sends records to stderr only (for command-line tools).
pub fn init_stderr(filter: &str) {
    let _ = tracing_subscriber::registry()
        .with(EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER)))
        .with(stderr_layer())
        .try_init();
}

/// The filter of a daemon: `filter`, with the spans of traces always on
/// (whatever the log level, traces are sampled by their own rules).
fn daemon_filter(filter: &str) -> EnvFilter {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    match format!("{SPAN_TARGET}=info").parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
}

/// The environment variable that sends records to stdout instead of
/// stderr (containers log to stdout).
pub const LOG_TO_STDOUT_ENV: &str = "GRADEBOOK_LOG_TO_STDOUT";

/// Human-readable records on stderr (or stdout when
/// `GRADEBOOK_LOG_TO_STDOUT=true`), coloured only on a terminal.
fn stderr_layer<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use std::io::IsTerminal;
    let to_stdout = std::env::var(LOG_TO_STDOUT_ENV).is_ok_and(|v| v == "true" || v == "1");
    let writer =
        tracing_subscriber::fmt::writer::BoxMakeWriter::new(move || -> Box<dyn std::io::Write> {
            if to_stdout {
                Box::new(std::io::stdout())
            } else {
                Box::new(std::io::stderr())
            }
        });
    let terminal = if to_stdout {
        std::io::stdout().is_terminal()
    } else {
        std::io::stderr().is_terminal()
    };
    tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(terminal)
}

/// Sends records to stderr and queues them for the log service, as
/// `service`/`instance`. Does nothing if tracing is set up already.
/// Must be called inside a tokio runtime (the OTLP export needs one).
pub fn init_daemon(filter: &str, service: &str, instance: &str) {
    let (layer, mut shipper) = log_shipping(service, instance);
    let (provider, otlp) = export::provider(layer.span_queue(), service, instance);
    if let Some(otlp) = otlp {
        shipper.report_otlp(otlp);
    }
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("gradebook"))
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_level(false)
        .with_tracked_inactivity(false)
        // Parents come from `tracing`'s spans; nothing reads OpenTelemetry's
        // own current context, so entering a span need not set it.
        .with_context_activation(false)
        .with_filter(filter_fn(|meta| meta.target() == SPAN_TARGET));
    // The spans of traces carry protocol fields that would only clutter
    // the terminal's lines; the log records get their ids instead.
    let stderr = stderr_layer().with_filter(filter_fn(|meta| meta.target() != SPAN_TARGET));
    let installed = tracing_subscriber::registry()
        .with(daemon_filter(filter))
        .with(stderr)
        .with(layer)
        .with(spans)
        .try_init()
        .is_ok();
    if installed {
        if let Ok(mut parked) = PARKED_SHIPPER.lock() {
            *parked = Some(shipper);
        }
        if let Ok(mut parked) = PARKED_PROVIDER.lock() {
            *parked = Some(provider);
        }
    }
}

/// Sends the spans still batched for an OTLP collector, at a daemon's end.
pub fn flush_spans() {
    let provider = PARKED_PROVIDER
        .lock()
        .ok()
        .and_then(|mut parked| parked.take());
    if let Some(provider) = provider
        && let Err(error) = provider.shutdown()
    {
        tracing::debug!(error = %error, "flushing spans at the end");
    }
}

/// Takes the parked shipper, if this process set one up.
pub fn take_shipper() -> Option<LogShipper> {
    PARKED_SHIPPER
        .lock()
        .ok()
        .and_then(|mut parked| parked.take())
}
