//! The process's own figures, read from `/proc/self` at each scrape (so
//! nothing runs between scrapes and nothing is locked): CPU time, memory,
//! file descriptors, threads, start time, under the names every
//! Prometheus client library uses (`process_*`), and the tokio runtime's
//! live tasks and workers (`tokio_*`). Where `/proc` is missing (not
//! Linux), the figures are left out.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// Linux's clock ticks per second (`USER_HZ`) as `/proc` counts CPU time.
const CLOCK_TICKS: f64 = 100.0;

/// Reads the process's figures at each scrape.
#[derive(Debug)]
pub struct ProcessCollector {
    runtime: Option<tokio::runtime::Handle>,
}

impl ProcessCollector {
    /// A collector of this process, and of the tokio runtime it is made on
    /// (if any).
    pub fn new() -> Self {
        ProcessCollector {
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }
}

impl Default for ProcessCollector {
    fn default() -> Self {
        Self::new()
    }
}

/// What `/proc/self` says.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcessFigures {
    /// User and system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident memory, in bytes.
    pub resident_bytes: f64,
    /// Virtual memory, in bytes.
    pub virtual_bytes: f64,
    /// Threads.
    pub threads: f64,
    /// Open file descriptors.
    pub open_fds: f64,
    /// The soft limit of open file descriptors.
    pub max_fds: f64,
    /// Since when the process runs, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

impl ProcessFigures {
    /// Reads them now; `None` without `/proc`.
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| field_after(&s, "btime"));
        // The fields after the command name, which may hold spaces.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let number = |index: usize| fields.get(index).and_then(|f| f.parse::<f64>().ok());
        // utime, stime, num_threads and starttime are fields 14, 15, 20
        // and 22 of proc(5); `fields` starts at field 3.
        let (utime, stime) = (number(11)?, number(12)?);
        let kib = |name: &str| field_after(&status, name).map(|v| v * 1024.0);
        Some(ProcessFigures {
            cpu_seconds: (utime + stime) / CLOCK_TICKS,
            resident_bytes: kib("VmRSS:").unwrap_or_default(),
            virtual_bytes: kib("VmSize:").unwrap_or_default(),
            threads: number(17).unwrap_or_default(),
            open_fds: std::fs::read_dir("/proc/self/fd").map_or(0.0, |d| d.count() as f64),
            max_fds: field_after(&limits, "Max open files").unwrap_or_default(),
            start_time_seconds: boot_time.unwrap_or_default()
                + number(19).unwrap_or_default() / CLOCK_TICKS,
        })
    }
}

/// The first number after `name` on the line that starts with it.
fn field_after(text: &str, name: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(figures) = ProcessFigures::read() {
            let cpu = ConstCounter::new(figures.cpu_seconds);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu",
                "User and system CPU time spent",
                Some(&Unit::Seconds),
                cpu.metric_type(),
            )?)?;
            let gauges = [
                (
                    "process_resident_memory",
                    "Resident memory size",
                    Some(Unit::Bytes),
                    figures.resident_bytes,
                ),
                (
                    "process_virtual_memory",
                    "Virtual memory size",
                    Some(Unit::Bytes),
                    figures.virtual_bytes,
                ),
                ("process_threads", "OS threads", None, figures.threads),
                (
                    "process_open_fds",
                    "Open file descriptors",
                    None,
                    figures.open_fds,
                ),
                (
                    "process_max_fds",
                    "The limit of open file descriptors",
                    None,
                    figures.max_fds,
                ),
                (
                    "process_start_time",
                    "Start time of the process since the Unix epoch",
                    Some(Unit::Seconds),
                    figures.start_time_seconds,
                ),
            ];
            for (name, help, unit, value) in gauges {
                let gauge = ConstGauge::new(value);
                gauge.encode(encoder.encode_descriptor(
                    name,
                    help,
                    unit.as_ref(),
                    gauge.metric_type(),
                )?)?;
            }
        }
        if let Some(runtime) = &self.runtime {
            let metrics = runtime.metrics();
            let runtime_gauges = [
                (
                    "tokio_alive_tasks",
                    "Tasks alive in the tokio runtime",
                    metrics.num_alive_tasks() as i64,
                ),
                (
                    "tokio_workers",
                    "Worker threads of the tokio runtime",
                    metrics.num_workers() as i64,
                ),
            ];
            for (name, help, value) in runtime_gauges {
                let gauge = ConstGauge::new(value);
                gauge.encode(encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    gauge.metric_type(),
                )?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_reads_as_alive() {
        let figures = ProcessFigures::read().expect("/proc on Linux");
        assert!(figures.resident_bytes > 0.0, "{figures:?}");
        assert!(figures.threads >= 1.0, "{figures:?}");
        assert!(figures.open_fds >= 1.0, "{figures:?}");
        assert!(figures.max_fds >= figures.open_fds, "{figures:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            figures.start_time_seconds > now - 3600.0 && figures.start_time_seconds <= now + 1.0,
            "started within the hour: {figures:?}"
        );
    }
}
