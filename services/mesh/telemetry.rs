//! Sets up this process's `tracing`: records go to stderr, and, for a
//! daemon, to the log service through [`crate::mesh::logship`]. The shipper
//! is parked here until the daemon's server starts it with its dependency view.

use std::sync::Mutex;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::mesh::logship::{LogShipper, log_shipping};

static PARKED_SHIPPER: Mutex<Option<LogShipper>> = Mutex::new(None);

/// The filter used when neither `--log-level` nor `RUST_LOG` says otherwise.
pub const DEFAULT_FILTER: &str = "info,h2=warn,hyper=warn,tower=warn";

/// Sends records to stderr only (for command-line tools).
pub fn init_stderr(filter: &str) {
    let _ = tracing_subscriber::registry()
        .with(EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER)))
        .with(stderr_layer())
        .try_init();
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
pub fn init_daemon(filter: &str, service: &str, instance: &str) {
    let (layer, shipper) = log_shipping(service, instance);
    let installed = tracing_subscriber::registry()
        .with(EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER)))
        .with(stderr_layer())
        .with(layer)
        .try_init()
        .is_ok();
    if installed && let Ok(mut parked) = PARKED_SHIPPER.lock() {
        *parked = Some(shipper);
    }
}

/// Takes the parked shipper, if this process set one up.
pub fn take_shipper() -> Option<LogShipper> {
    PARKED_SHIPPER
        .lock()
        .ok()
        .and_then(|mut parked| parked.take())
}
